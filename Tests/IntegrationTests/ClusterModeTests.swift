import Coordinator
import CoordinatorCore
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Cluster mode against real Redis: several nodes in one process and as separate processes.
@Suite("Cluster mode (real Redis)", .serialized)
struct ClusterModeTests {
    @Test("two nodes share one limit exactly and see each other as members")
    func sharedLimit() async throws {
        let url = try TestEnvironment.redisURL
        let cluster = TestEnvironment.uniqueName("c")
        let policy = LimitPolicy(limits: [LimitSpec(rate: 5, periodMs: 60_000, burst: 5)])
        let a = try await ClusterTestSupport.node(redisURL: url, cluster: cluster, nodeID: "node-a", heartbeatMs: 1_000, policies: ["shared": policy])
        let b = try await ClusterTestSupport.node(redisURL: url, cluster: cluster, nodeID: "node-b", heartbeatMs: 1_000, policies: ["shared": policy])
        await a.heartbeatOnce()
        await b.heartbeatOnce()

        var allowed = 0
        for node in [a, b, a, b, a, b, a, b] where try await node.checkLimit(policy: "shared", key: "user-1", cost: 1).decision.allowed {
            allowed += 1
        }
        #expect(allowed == 5)
        // Refused keys are remembered: the next refusal is local, with the same retry-after horizon.
        let refused = try await a.checkLimit(policy: "shared", key: "user-1", cost: 1).decision
        #expect(!refused.allowed && (refused.retryAfter ?? .zero) > .seconds(1))

        let info = await a.clusterInfo()
        #expect(info.mode == "cluster")
        #expect(Set(info.members.map(\.nodeID)) == ["node-a", "node-b"])
        #expect(info.degraded.isEmpty)

        await b.shutdown()
        await a.heartbeatOnce()
        #expect(await a.clusterInfo().members.map(\.nodeID) == ["node-a"], "a node that shut down leaves at once")
        await a.shutdown()
    }

    @Test("Redis lost: limits fall to a fair local share within one deadline, and come back when Redis does")
    func redisLossAndRecovery() async throws {
        let redis = try RestartableRedis.start()
        defer { redis.stop() }
        let cluster = TestEnvironment.uniqueName("c")
        let policy = LimitPolicy(limits: [LimitSpec(rate: 10, periodMs: 3_600_000, burst: 10)])
        let a = try await ClusterTestSupport.node(redisURL: redis.url, cluster: cluster, nodeID: "node-a", heartbeatMs: 1_000, policies: ["p": policy])
        let b = try await ClusterTestSupport.node(redisURL: redis.url, cluster: cluster, nodeID: "node-b", heartbeatMs: 1_000, policies: ["p": policy])
        await a.heartbeatOnce()
        await b.heartbeatOnce()
        await a.heartbeatOnce()
        #expect(try await a.checkLimit(policy: "p", key: "warm", cost: 1).decision.allowed)

        redis.stop()
        let started = ContinuousClock.now
        _ = try await a.checkLimit(policy: "p", key: "k", cost: 1)
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(1), "the first call after the loss took \(elapsed)")

        let degraded = await a.clusterInfo().degraded
        #expect(degraded.first?.feature == "limits")
        #expect(degraded.first?.mode == "localShare")
        #expect(degraded.first?.shareDivisor == 2)
        // 10 shared among 2 live members: node a enforces 5 alone (one was used by the call above).
        var allowed = 1
        for _ in 0..<10 where try await a.checkLimit(policy: "p", key: "k", cost: 1).decision.allowed {
            allowed += 1
        }
        #expect(allowed == 5)
        #expect(await a.readiness().ready, "degraded still serves")

        try redis.restart()
        var recovered = false
        for _ in 0..<50 where !recovered {
            await a.heartbeatOnce()
            recovered = await a.clusterInfo().degraded.isEmpty
            if !recovered { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(recovered)
        #expect(try await a.checkLimit(policy: "p", key: "fresh", cost: 1).decision.remaining == 9, "shared again: the full limit")
        await a.shutdown()
        await b.shutdown()
    }

    @Test("nodes as separate processes share limits and list each other")
    func separateProcesses() async throws {
        let url = try TestEnvironment.redisURL
        let cluster = TestEnvironment.uniqueName("c")
        var servers: [ServerChild] = []
        defer { for server in servers { server.stop() } }
        for index in 0..<2 {
            servers.append(try ServerChild.start(arguments: [
                "--redis-url", url, "--cluster-name", cluster, "--cluster-secret", ClusterTestSupport.secret, "--node-id", "proc-\(index)",
            ], environment: [
                "COORDINATOR_LIMITS_POLICIES": #"{"shared":{"limits":[{"rate":4,"periodMs":60000,"burst":4}]}}"#,
                "COORDINATOR_REDIS_DEADLINE_MS": "2000",
            ]))
        }
        var statuses: [Int] = []
        for index in 0..<8 {
            let (status, _) = try await httpPOST(servers[index % 2].baseURL + "/v1/limits/shared/check", body: #"{"key":"k"}"#)
            statuses.append(status)
        }
        #expect(statuses.filter { $0 == 200 }.count == 4, "\(statuses)")
        #expect(statuses.filter { $0 == 429 }.count == 4)

        var members: [String] = []
        for _ in 0..<40 {
            let (_, body) = try await httpGET(servers[0].baseURL + "/v1/cluster")
            members = ["proc-0", "proc-1"].filter { body.contains("\"nodeId\":\"\($0)\"") }
            if members.count == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(members.count == 2)
    }

    @Test("approximate mode: local decisions synced every interval keep the cluster within limit + overshoot bound")
    func approximateMode() async throws {
        let url = try TestEnvironment.redisURL
        let cluster = TestEnvironment.uniqueName("c")
        let policy = LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 100, periodMs: 60_000)], mode: .approximate, syncIntervalMs: 20)
        let a = try await ClusterTestSupport.node(redisURL: url, cluster: cluster, nodeID: "a", heartbeatMs: 1_000, policies: ["fast": policy])
        let b = try await ClusterTestSupport.node(redisURL: url, cluster: cluster, nodeID: "b", heartbeatMs: 1_000, policies: ["fast": policy])
        let services = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in [a, b] { group.addTask { try await ClusterService(node: node).run() } }
                try await group.waitForAll()
            }
        }
        defer { services.cancel() }
        func drain(_ node: CoordinatorNode, _ count: Int) async throws -> Int {
            var allowed = 0
            for _ in 0..<count where try await node.checkLimit(policy: "fast", key: "k", cost: 1).decision.allowed { allowed += 1 }
            return allowed
        }
        var total = try await drain(a, 70)
        #expect(total == 70)
        // After a sync, b sees a's 70 and allows only the remaining ~30.
        try await Task.sleep(for: .milliseconds(300))
        total += try await drain(b, 70)
        try await Task.sleep(for: .milliseconds(300))
        total += try await drain(a, 20)
        let bound = ApproximateLimitSync.overshootBound(nodes: 2, limit: policy.limits[0], syncIntervalMs: 20)
        #expect(total >= 95 && total <= 100 + bound, "admitted \(total), limit 100, bound \(bound)")
        services.cancel()
        await a.shutdown()
        await b.shutdown()
    }
}

/// A redis-server of the test's own, to stop and restart without disturbing other tests.
final class RestartableRedis: @unchecked Sendable {
    // @unchecked Sendable: used from one test task at a time.
    let port: Int
    let directory: String
    private var process: Process?

    var url: String { "redis://127.0.0.1:\(port)/0" }

    private init(port: Int, directory: String) {
        self.port = port
        self.directory = directory
    }

    static func start() throws -> RestartableRedis {
        let directory = NSTemporaryDirectory() + "private-redis-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let redis = RestartableRedis(port: try TestEnvironment.closedLoopbackPort(), directory: directory)
        try redis.restart()
        return redis
    }

    func restart() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        // Wait until it accepts connections (bounded).
        for _ in 0..<100 {
            // Our process must be the listener: a foreign one could have taken the port meanwhile.
            guard process.isRunning else { break }
            if Self.canConnect(port: port) { return }
            usleep(20_000)
        }
        throw ClusterTestFailure("private redis-server on port \(port) did not start")
    }

    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

struct ClusterTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
