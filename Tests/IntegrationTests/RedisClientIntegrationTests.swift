import Foundation
import RedisClient
import Synchronization
import Testing

/// `RedisClient` / `RedisSubscriber` against real servers: the shared test
/// server for everything that leaves it healthy, a private `redis-server`
/// for SIGSTOP (other suites run in parallel against the shared one).
@Suite("RedisClient (real server)")
struct RedisClientIntegrationTests {
    private func configuration(_ url: String? = nil, commandTimeout: Duration = .milliseconds(50)) throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: url ?? TestEnvironment.redisURL)
        configuration.commandTimeout = commandTimeout
        return configuration
    }

    /// Polls until `body` succeeds or `within` passes; returns the time it took.
    @discardableResult
    private func eventually(within: Duration, _ body: () async -> Bool) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        while clock.now - start < within {
            if await body() { return clock.now - start }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not met within \(within)")
        return clock.now - start
    }

    @Test func concurrentCallersGetTheirOwnReplies() async throws {
        let client = RedisClient(configuration: try configuration(commandTimeout: .seconds(5)))
        let key = TestEnvironment.uniqueName("incr")
        let results = try await withThrowingTaskGroup(of: (String, RedisReply, RedisReply).self) { group in
            for i in 0..<1000 {
                group.addTask {
                    let token = "caller-\(i)-" + TestEnvironment.uniqueName("t")
                    async let echo = client.send(["ECHO", token])
                    async let incr = client.send(["INCR", key])
                    return (token, try await echo, try await incr)
                }
            }
            var all: [(String, RedisReply, RedisReply)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 1000)
        for (token, echo, _) in results where echo != .bulkString(token) {
            Issue.record("caller sent ECHO \(token), got \(echo)")
        }
        let counts = results.compactMap { $0.2.integer }.sorted()
        #expect(counts == Array(1...1000).map(Int64.init), "every INCR got a distinct value")
        #expect(try await client.send(["GET", key]) == .bulkString("1000"))
        _ = try await client.send(["DEL", key])
        #expect(client.status == .connected)
        await client.close()
    }

    @Test func pipeliningBeatsSequential() async throws {
        let client = RedisClient(configuration: try configuration(commandTimeout: .seconds(5)))
        let clock = ContinuousClock()
        _ = try await client.send(["PING"])

        let sequentialCount = 2000
        var start = clock.now
        for _ in 0..<sequentialCount { _ = try await client.send(["PING"]) }
        let sequential = Double(sequentialCount) / (clock.now - start).seconds

        let total = 10_000, tasks = 64
        start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    for _ in stride(from: t, to: total, by: tasks) {
                        let reply = try await client.send(["PING"])
                        guard reply == .status("PONG") else { throw RedisError(code: .other, message: "\(reply)") }
                    }
                }
            }
            try await group.waitForAll()
        }
        let pipelined = Double(total) / (clock.now - start).seconds
        print("RedisClient PING: sequential \(Int(sequential)) ops/s, \(tasks) concurrent tasks \(Int(pipelined)) ops/s (x\(String(format: "%.1f", pipelined / sequential)))")
        #expect(pipelined > sequential * 1.5)
        let counters = client.counters
        #expect(counters.commands >= total + sequentialCount)
        #expect(counters.timeouts == 0)
        await client.close()
    }

    @Test func serverErrorKeepsConnectionAndEmptyCommandIsRejected() async throws {
        let client = RedisClient(configuration: try configuration(commandTimeout: .seconds(2)))
        let key = TestEnvironment.uniqueName("str")
        _ = try await client.send(["SET", key, "x", "PX", "60000"])
        let error = await #expect(throws: RedisError.self) { try await client.send(["INCR", key]) }
        #expect(error?.code == .server)
        #expect(try await client.send(["PING"]) == .status("PONG"))
        let empty = await #expect(throws: RedisError.self) { try await client.send([]) }
        #expect(empty?.code == .invalidArgument)
        #expect(client.counters.reconnects == 0)
        await client.close()
    }

    @Test func evalSHAReloadsAfterScriptFlush() async throws {
        // A private server: SCRIPT FLUSH on the shared one would disturb suites running in parallel.
        let server = try PrivateRedis()
        defer { server.stop() }
        try await server.waitUntilReady()
        let client = RedisClient(configuration: try configuration(server.url, commandTimeout: .seconds(2)))
        let script = RedisScript("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
        let key = TestEnvironment.uniqueName("script")
        // The locally computed SHA-1 is what Redis computes.
        let loaded = try await client.send(["SCRIPT", "LOAD", script.source])
        #expect(loaded == .bulkString(script.sha1))
        _ = try await client.send(["SCRIPT", "FLUSH"])
        #expect(try await client.send(["SCRIPT", "EXISTS", script.sha1]) == .array([.integer(0)]))
        let first = try await client.evalSHA(script, keys: [key], arguments: ["a"])
        #expect(first == .array([.bulkString(key), .bulkString("a"), .integer(1)]))
        #expect(try await client.send(["SCRIPT", "EXISTS", script.sha1]) == .array([.integer(1)]))
        let second = try await client.evalSHA(script, keys: [key], arguments: ["b"])
        #expect(second == .array([.bulkString(key), .bulkString("b"), .integer(2)]))
        // A script error is a typed server error, not a NOSCRIPT loop.
        let broken = RedisScript("return redis.call('NOPE')")
        let error = await #expect(throws: RedisError.self) { try await client.evalSHA(broken, keys: [], arguments: []) }
        #expect(error?.code == .server)
        _ = try await client.send(["DEL", key])
        await client.close()
    }

    @Test func reconnectsAfterClientKill() async throws {
        let client = RedisClient(configuration: try configuration(commandTimeout: .seconds(1)))
        let admin = try await RedisConnection.connect(url: try TestEnvironment.redisURL)
        guard case .integer(let id) = try await client.send(["CLIENT", "ID"]) else {
            Issue.record("CLIENT ID did not return an integer")
            return
        }
        #expect(try await admin.send(["CLIENT", "KILL", "ID", String(id)]) == .integer(1))
        // The next call sees the broken connection (or already the new one); then it recovers.
        _ = try? await client.send(["PING"])
        let took = try await eventually(within: .seconds(3)) {
            (try? await client.send(["PING"])) == .status("PONG")
        }
        print("RedisClient: recovered \(took) after CLIENT KILL")
        guard case .integer(let newID) = try await client.send(["CLIENT", "ID"]) else {
            Issue.record("CLIENT ID did not return an integer")
            return
        }
        #expect(newID != id)
        #expect(client.counters.reconnects >= 1)
        #expect(client.counters.connectionFailures >= 1)
        #expect(client.status == .connected)
        await admin.close()
        await client.close()
    }

    @Test func unreachableServerFailsFastAndReportsDisconnected() async throws {
        let port = try TestEnvironment.closedLoopbackPort()
        let client = RedisClient(configuration: try configuration("redis://127.0.0.1:\(port)/0"))
        let clock = ContinuousClock()
        try await eventually(within: .seconds(5)) {
            // A call also drives the connect loop; under load a poll may land between attempts.
            _ = try? await client.send(["PING"])
            if case .disconnected = client.status { return true }
            return false
        }
        guard case .disconnected(_, let lastError) = client.status else { return }
        #expect(lastError.code == .connectionFailed)
        for _ in 0..<20 {
            let start = clock.now
            let error = await #expect(throws: RedisError.self) { try await client.send(["PING"]) }
            #expect(error?.code == .unavailable || error?.code == .timeout)
            #expect(clock.now - start < .milliseconds(100))
        }
        #expect(client.counters.rejected > 0)
        await client.close()
        #expect(client.status == .closed)
        let closed = await #expect(throws: RedisError.self) { try await client.send(["PING"]) }
        #expect(closed?.code == .connectionClosed)
    }

    @Test func closeFailsLaterCallsAndIsIdempotent() async throws {
        let client = RedisClient(configuration: try configuration(commandTimeout: .seconds(1)))
        #expect(try await client.send(["PING"]) == .status("PONG"))
        await client.close()
        await client.close()
        let error = await #expect(throws: RedisError.self) { try await client.send(["PING"]) }
        #expect(error?.code == .connectionClosed)
    }

    @Test func deadlineHonouredWhileRedisIsStopped() async throws {
        let server = try PrivateRedis()
        defer { server.stop() }
        try await server.waitUntilReady()
        let client = RedisClient(configuration: try configuration(server.url))
        #expect(try await client.send(["PING"], deadline: .seconds(2)) == .status("PONG"))

        let clock = ContinuousClock()
        server.pause()
        var resumed = false
        defer { if !resumed { server.resume() } }

        // ~1.2 s of traffic against the stopped server: sequential calls plus
        // concurrent bursts, with the default (50 ms) and a longer deadline.
        let overshoot = Mutex<Duration>(.zero)
        let calls = Mutex(0)
        let codes = Mutex<[String: Int]>([:])
        let measure: @Sendable (Duration?) async -> Void = { deadline in
            let start = clock.now
            do {
                let reply = try await client.send(["PING"], deadline: deadline)
                Issue.record("got \(reply) from a stopped server")
            } catch let error as RedisError {
                codes.withLock { $0[error.code.rawValue, default: 0] += 1 }
            } catch {
                Issue.record("untyped error \(error)")
            }
            let late = clock.now - start - (deadline ?? .milliseconds(50))
            overshoot.withLock { $0 = max($0, late) }
            calls.withLock { $0 += 1 }
        }
        let stopUntil = clock.now + .milliseconds(1200)
        var round = 0
        while clock.now < stopUntil {
            round += 1
            let longDeadline = round % 4 == 0
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<16 {
                    group.addTask { await measure(i == 0 && longDeadline ? .milliseconds(200) : nil) }
                }
            }
            await measure(nil)
            try await Task.sleep(for: .milliseconds(2))
        }
        let worst = overshoot.withLock { $0 }
        print("RedisClient under SIGSTOP: \(calls.withLock { $0 }) calls, all failed, worst overshoot past deadline \(worst), codes \(codes.withLock { $0 })")
        // The client's own lateness is ≤ 1 ms (timer granularity); the rest is the scheduler of a
        // loaded 2-core machine running other suites in parallel. Without deadlines a call would
        // wait the whole 1.2 s stop, so this bound still catches any call that is not cut off.
        #expect(worst < .milliseconds(250))
        if case .connected = client.status { Issue.record("status still connected while the server is stopped") }

        server.resume()
        resumed = true
        let took = try await eventually(within: .seconds(4)) {
            (try? await client.send(["PING"])) == .status("PONG")
        }
        print("RedisClient: recovered \(took) after SIGCONT; counters \(client.counters)")
        #expect(took < .seconds(3))
        #expect(client.counters.timeouts > 0)
        await client.close()
    }
}

@Suite("RedisSubscriber (real server)")
struct RedisSubscriberIntegrationTests {
    static func isSubscribed(_ event: RedisSubscriberEvent) -> Bool { event == .subscribed }
    static func isDisconnected(_ event: RedisSubscriberEvent) -> Bool {
        if case .disconnected = event { return true }
        return false
    }

    @Test func receivesBinaryMessages() async throws {
        let url = try TestEnvironment.redisURL
        let subscriber = RedisSubscriber(configuration: try RedisConfiguration(url: url))
        let channel = TestEnvironment.uniqueName("chan")
        let other = TestEnvironment.uniqueName("other")
        let log = SubscriberEventLog(subscriber.events(channels: [channel, other]))
        #expect(try await log.wait(within: .seconds(3), Self.isSubscribed))

        let publisher = RedisClient(configuration: try RedisConfiguration(url: url))
        let payload = "a\u{0}b\r\n\u{1}é"
        #expect(try await publisher.send(["PUBLISH", channel, payload], deadline: .seconds(1)) == .integer(1))
        #expect(try await publisher.send(["PUBLISH", other, ""], deadline: .seconds(1)) == .integer(1))
        #expect(try await log.wait(for: 2, within: .seconds(3)) { if case .message = $0 { true } else { false } })
        let messages = log.all.filter { if case .message = $0 { true } else { false } }
        #expect(messages == [
            .message(channel: channel, payload: Array(payload.utf8)),
            .message(channel: other, payload: []),
        ])
        #expect(Array(payload.utf8).contains(0))
        await subscriber.close()
        await publisher.close()
        log.cancel()
    }

    @Test func resubscribesAfterConnectionIsKilled() async throws {
        let url = try TestEnvironment.redisURL
        var configuration = try RedisConfiguration(url: url)
        let name = TestEnvironment.uniqueName("sub")
        configuration.clientName = name
        let subscriber = RedisSubscriber(configuration: configuration)
        let channel = TestEnvironment.uniqueName("chan")
        let log = SubscriberEventLog(subscriber.events(channels: [channel]))
        #expect(try await log.wait(within: .seconds(3), Self.isSubscribed))

        let admin = try await RedisConnection.connect(url: url)
        // Kill only this test's subscriber connection (other tests share the server).
        guard case .bulkString(let list) = try await admin.send(["CLIENT", "LIST", "TYPE", "pubsub"]),
              let line = list.split(separator: "\n").first(where: { $0.contains("name=\(name) ") }),
              let idField = line.split(separator: " ").first(where: { $0.hasPrefix("id=") }) else {
            Issue.record("subscriber \(name) not in CLIENT LIST TYPE pubsub")
            return
        }
        #expect(try await admin.send(["CLIENT", "KILL", "ID", String(idField.dropFirst(3))]) == .integer(1))
        #expect(try await log.wait(within: .seconds(3), Self.isDisconnected))
        #expect(try await log.wait(for: 2, within: .seconds(5), Self.isSubscribed))

        #expect(try await admin.send(["PUBLISH", channel, "after"]) == .integer(1))
        #expect(try await log.wait(within: .seconds(3)) { $0 == .message(channel: channel, payload: Array("after".utf8)) })
        await subscriber.close()
        await admin.close()
        log.cancel()
    }

    @Test func detectsHungServerAndRecovers() async throws {
        let server = try PrivateRedis()
        defer { server.stop() }
        try await server.waitUntilReady()
        let subscriber = RedisSubscriber(configuration: try RedisConfiguration(url: server.url))
        let channel = TestEnvironment.uniqueName("chan")
        let log = SubscriberEventLog(subscriber.events(channels: [channel]))
        #expect(try await log.wait(within: .seconds(3), Self.isSubscribed))

        let clock = ContinuousClock()
        server.pause()
        var resumed = false
        defer { if !resumed { server.resume() } }
        let start = clock.now
        #expect(try await log.wait(within: .seconds(3), Self.isDisconnected))
        let detected = clock.now - start
        print("RedisSubscriber: hung server detected after \(detected)")
        #expect(detected < .milliseconds(2500))

        server.resume()
        resumed = true
        #expect(try await log.wait(for: 2, within: .seconds(5), Self.isSubscribed))
        let publisher = RedisClient(configuration: try RedisConfiguration(url: server.url))
        #expect(try await publisher.send(["PUBLISH", channel, "back"], deadline: .seconds(1)) == .integer(1))
        #expect(try await log.wait(within: .seconds(3)) { $0 == .message(channel: channel, payload: Array("back".utf8)) })
        await publisher.close()
        await subscriber.close()
        log.cancel()
    }

    @Test func closeEndsTheStream() async throws {
        let subscriber = RedisSubscriber(configuration: try RedisConfiguration(url: try TestEnvironment.redisURL))
        let stream = subscriber.events(channels: [TestEnvironment.uniqueName("chan")])
        var iterator = stream.makeAsyncIterator()
        #expect(await iterator.next() == .subscribed)
        await subscriber.close()
        #expect(await iterator.next() == nil)
        let after = subscriber.events(channels: ["x"])
        var afterIterator = after.makeAsyncIterator()
        if case .disconnected(let error)? = await afterIterator.next() {
            #expect(error.code == .connectionClosed)
        } else {
            Issue.record("expected .disconnected after close")
        }
        #expect(await afterIterator.next() == nil)
    }
}

/// Collects a stream's events in the background.
final class SubscriberEventLog: Sendable {
    private let events = Mutex<[RedisSubscriberEvent]>([])
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(_ stream: AsyncStream<RedisSubscriberEvent>) {
        let consumer = Task { [self] in
            for await event in stream { append(event) }
        }
        task.withLock { $0 = consumer }
    }

    private func append(_ event: RedisSubscriberEvent) { events.withLock { $0.append(event) } }

    var all: [RedisSubscriberEvent] { events.withLock { $0 } }

    func count(_ match: (RedisSubscriberEvent) -> Bool) -> Int { all.filter(match).count }

    /// Waits until `match` holds for at least `count` events.
    func wait(for count: Int = 1, within: Duration, _ match: (RedisSubscriberEvent) -> Bool) async throws -> Bool {
        let clock = ContinuousClock()
        let until = clock.now + within
        while clock.now < until {
            if self.count(match) >= count { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return self.count(match) >= count
    }

    func cancel() { task.withLock { $0?.cancel() } }
}


extension Duration {
    fileprivate var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
