import Coordinator
import CoordinatorCore
import RedisClient
import Testing

/// The cluster-mode Lua scripts against a real Redis: atomicity, Redis-time semantics, and the
/// same decisions as the local cores.
@Suite("Cluster scripts (real Redis)")
struct ClusterScriptTests {
    let keys = ClusterKeys(cluster: TestEnvironment.uniqueName("c"))

    func connect() async throws -> RedisConnection {
        try await RedisConnection.connect(url: try TestEnvironment.redisURL, commandTimeout: .seconds(5))
    }

    /// `ARGV` for `ClusterScripts.gcra`: cost, then T and burst·T in µs per limit.
    func gcraArguments(_ policy: LimitPolicy, cost: Int) -> [String] {
        var arguments = [String(cost)]
        for spec in policy.limits {
            let interval = Double(spec.periodMs) * 1000 / Double(spec.rate)
            arguments.append(String(interval))
            arguments.append(String(interval * Double(spec.burst)))
        }
        return arguments
    }

    func gcra(_ redis: RedisConnection, policy: LimitPolicy, name: String, key: String, cost: Int) async throws -> [Int64] {
        let limitKeys = policy.limits.indices.map { keys.limit(policy: name, key: key, index: $0) }
        let reply = try await redis.send(["EVAL", ClusterScripts.gcra, String(limitKeys.count)] + limitKeys + gcraArguments(policy, cost: cost))
        let values = reply.array?.compactMap(\.integer)
        return try #require(values)
    }

    @Test("GCRA: burst 5 at 5/min passes 5, refuses the 6th with ≈12 s, and a cost above the burst never passes")
    func gcraBurst() async throws {
        let redis = try await connect()
        let policy = LimitPolicy(limits: [LimitSpec(rate: 5, periodMs: 60_000, burst: 5)])
        let name = TestEnvironment.uniqueName("p")
        for expected in [4, 3, 2, 1, 0] {
            let result = try await gcra(redis, policy: policy, name: name, key: "k", cost: 1)
            #expect(result[0] == 1)
            #expect(result[2] == Int64(expected))
        }
        let refused = try await gcra(redis, policy: policy, name: name, key: "k", cost: 1)
        #expect(refused[0] == 0)
        #expect(refused[4] > 10_000_000 && refused[4] <= 12_000_000, "retry after \(refused[4]) µs")
        let never = try await gcra(redis, policy: policy, name: name, key: "other", cost: 6)
        #expect(never[0] == 0 && never[4] == -1)
        await redis.close()
    }

    @Test("GCRA script decides like the local core, all-or-nothing across limits")
    func gcraMatchesCore() async throws {
        let redis = try await connect()
        let policy = LimitPolicy(limits: [LimitSpec(rate: 5, periodMs: 60_000, burst: 5), LimitSpec(rate: 8, periodMs: 3_600_000, burst: 8)])
        var core = RateLimiter(policy: policy)
        let name = TestEnvironment.uniqueName("p2")
        let costs = [1, 2, 1, 3, 1, 1, 0, 2, 1, 1, 1, 4, 1]
        for (step, cost) in costs.enumerated() {
            let local = core.check(key: "k", cost: cost, now: .zero)
            let shared = try await gcra(redis, policy: policy, name: name, key: "k", cost: cost)
            #expect((shared[0] == 1) == local.allowed, "step \(step) cost \(cost)")
            #expect(shared[2] == Int64(local.remaining), "step \(step) remaining")
            #expect(shared[1] == Int64(local.bindingLimit), "step \(step) binding")
        }
        await redis.close()
    }

    @Test("GCRA: 400 concurrent decisions on one key from 8 connections allow exactly the burst")
    func gcraConcurrent() async throws {
        let policy = LimitPolicy(limits: [LimitSpec(rate: 50, periodMs: 3_600_000, burst: 50)])
        let name = TestEnvironment.uniqueName("hot")
        var connections: [RedisConnection] = []
        for _ in 0..<8 { connections.append(try await connect()) }
        let allowed = try await withThrowingTaskGroup(of: Int.self) { group in
            for connection in connections {
                group.addTask {
                    var count = 0
                    for _ in 0..<50 where try await gcra(connection, policy: policy, name: name, key: "k", cost: 1)[0] == 1 {
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(allowed == 50)
        for connection in connections { await connection.close() }
    }

    @Test("sliding window: rate 5 per minute, retry-after bounded by the window, impossible cost is -1")
    func slidingWindow() async throws {
        let redis = try await connect()
        let key = keys.limit(policy: "sw", key: "k", index: 0)
        func check(_ cost: Int) async throws -> [Int64] {
            let reply = try await redis.send(["EVAL", ClusterScripts.slidingWindow, "1", key, String(cost), "5", "60000000"])
            let values = reply.array?.compactMap(\.integer)
            return try #require(values)
        }
        for expected in [4, 3, 2, 1, 0] {
            let result = try await check(1)
            #expect(result[0] == 1 && result[2] == Int64(expected))
        }
        let refused = try await check(1)
        #expect(refused[0] == 0)
        #expect(refused[4] > 0 && refused[4] <= 120_000_000)
        #expect(try await check(6)[4] == -1)
        await redis.close()
    }

    @Test("breaker transition is a compare-and-set on the version, timed by Redis")
    func breakerCompareAndSet() async throws {
        let redis = try await connect()
        let key = keys.breakerState("payments")
        func transition(expected: Int, to state: String, waitMs: Int) async throws -> RedisReply {
            try await redis.send(["EVAL", ClusterScripts.breakerTransition, "1", key, String(expected), state, String(waitMs), "failure_rate", "node-a", keys.busChannel, "signed-message"])
        }
        let first = try await requireValue(try await transition(expected: 0, to: "open", waitMs: 5000).array)
        #expect(first[0] == .integer(1) && first[1] == .integer(1) && first[2] == .bulkString("open"))
        let openUntil = try #require(first[3].integer)
        let now = try #require(first[5].integer)
        #expect(openUntil == now + 5000)

        let stale = try await requireValue(try await transition(expected: 0, to: "closed", waitMs: 0).array)
        #expect(stale[0] == .integer(0) && stale[1] == .integer(1) && stale[2] == .bulkString("open"))

        // Half-open before openUntil (Redis time) is refused, whatever the caller's clock says.
        let early = try await requireValue(try await transition(expected: 1, to: "half_open", waitMs: 0).array)
        #expect(early[0] == .integer(0) && early[2] == .bulkString("open"))
        let reopened = try await requireValue(try await transition(expected: 1, to: "open", waitMs: 1).array)
        #expect(reopened[0] == .integer(1) && reopened[1] == .integer(2))
        try await Task.sleep(for: .milliseconds(5))
        let second = try await requireValue(try await transition(expected: 2, to: "half_open", waitMs: 0).array)
        #expect(second[0] == .integer(1) && second[1] == .integer(3))

        let snapshot = try await requireValue(try await redis.send(["EVAL", ClusterScripts.breakerSnapshot, "1", key]).array)
        #expect(snapshot[0] == .integer(3) && snapshot[1] == .bulkString("half_open"))
        let empty = try await requireValue(try await redis.send(["EVAL", ClusterScripts.breakerSnapshot, "1", keys.breakerState("never")]).array)
        #expect(empty[0] == .integer(0) && empty[1] == .bulkString("closed"))
        await redis.close()
    }

    @Test("quorum votes count distinct nodes within the window")
    func tripVotes() async throws {
        let redis = try await connect()
        let key = keys.breakerVotes("db")
        func vote(_ node: String, windowMs: Int = 10_000) async throws -> Int64 {
            try await requireValue(try await redis.send(["EVAL", ClusterScripts.tripVote, "1", key, node, String(windowMs)]).array?.first?.integer)
        }
        #expect(try await vote("a") == 1)
        #expect(try await vote("a") == 1)
        #expect(try await vote("b") == 2)
        #expect(try await vote("c") == 3)
        await redis.close()
    }

    @Test("half-open probe rounds: exactly n slots cluster-wide, returned slots reusable, one reporter completes the round")
    func probeRounds() async throws {
        let redis = try await connect()
        let round = keys.breakerProbeRound("api", round: 7)
        func acquire() async throws -> Int64 {
            try await requireValue(try await redis.send(["EVAL", ClusterScripts.probeAcquire, "1", round, "2", "10000"]).integer)
        }
        #expect(try await acquire() == 1)
        #expect(try await acquire() == 2)
        #expect(try await acquire() == 0)
        #expect(try await redis.send(["EVAL", ClusterScripts.probeReturn, "1", round]) == .integer(1))
        #expect(try await acquire() == 2)
        func report(failed: Bool) async throws -> [Int64] {
            let reply = try await redis.send(["EVAL", ClusterScripts.probeReport, "1", round, failed ? "1" : "0", "0", "10000"])
            let values = reply.array?.compactMap(\.integer)
            return try #require(values)
        }
        #expect(try await report(failed: false) == [1, 0, 0])
        #expect(try await report(failed: true) == [2, 1, 0])
        #expect(try await redis.send(["EVAL", ClusterScripts.probeReturn, "1", round]) == .integer(0), "a completed slot cannot be returned")
        await redis.close()
    }

    @Test("heartbeats: live members with Redis time; silent ones drop out of the window")
    func heartbeats() async throws {
        let redis = try await connect()
        func beat(_ node: String, windowMs: Int) async throws -> [RedisReply] {
            try await requireValue(try await redis.send(["EVAL", ClusterScripts.heartbeat, "1", keys.members, node, String(windowMs)]).array)
        }
        _ = try await beat("node-a", windowMs: 60_000)
        let both = try await beat("node-b", windowMs: 60_000)
        #expect(both.count == 5)
        #expect(both.contains(.bulkString("node-a")) && both.contains(.bulkString("node-b")))
        // node-a falls silent; with a 5 ms window it drops out while node-b, beating now, stays.
        try await Task.sleep(for: .milliseconds(20))
        let alone = try await beat("node-b", windowMs: 5)
        #expect(!alone.contains(.bulkString("node-a")))
        #expect(alone.contains(.bulkString("node-b")))
        await redis.close()
    }
}

/// Awaits `value` and fails the test when it is `nil`.
func requireValue<T>(_ value: @autoclosure () async throws -> T?, sourceLocation: SourceLocation = #_sourceLocation) async throws -> T {
    let result = try await value()
    return try #require(result, sourceLocation: sourceLocation)
}
