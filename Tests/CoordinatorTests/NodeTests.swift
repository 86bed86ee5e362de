import Coordinator
import CoordinatorCore
import Foundation
import Logging
import Synchronization
import Testing

final class TestClock: NodeClock {
    private let state = Mutex<(mono: Int64, wall: Int64)>((5_000_000_000_000, 1_760_000_000_000))
    func monotonicNow() -> Instant { Instant(nanoseconds: state.withLock { $0.mono }) }
    func wallMilliseconds() -> Int64 { state.withLock { $0.wall } }
    func advance(milliseconds: Int64) {
        state.withLock {
            $0.mono += milliseconds * 1_000_000
            $0.wall += milliseconds
        }
    }
}

func temporaryDirectory() -> String {
    NSTemporaryDirectory() + "coordinator-node-\(UUID().uuidString)"
}

func startNode(directory: String, clock: TestClock = TestClock(), configure: (inout NodeConfiguration) -> Void = { _ in }) async throws -> (CoordinatorNode, String?) {
    var configuration = NodeConfiguration()
    configuration.dataDirectory = directory
    configuration.sqliteSynchronous = .normal
    configure(&configuration)
    var logger = Logger(label: "test")
    logger.logLevel = .error
    return try await CoordinatorNode.start(configuration: configuration, clock: clock, logger: logger)
}

@Suite("Node")
struct NodeTests {
    @Test("1 000 concurrent checks on one key allow exactly the limit")
    func concurrentChecks() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (node, _) = try await startNode(directory: directory)
        _ = try await node.putPolicy(name: "hot", policy: LimitPolicy(algorithm: .gcra, limits: [LimitSpec(rate: 100, periodMs: 60_000, burst: 250)]))
        let allowed = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<1000 {
                group.addTask { try await node.checkLimit(policy: "hot", key: "shared-key", cost: 1).decision.allowed }
            }
            var count = 0
            for try await result in group where result { count += 1 }
            return count
        }
        #expect(allowed == 250)
        await node.shutdown()
    }

    @Test("the admin token is generated once, stored hashed, and checked in constant time")
    func adminToken() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (node, generated) = try await startNode(directory: directory)
        let token = try #require(generated)
        #expect(await node.isAdmin(token: token))
        #expect(!(await node.isAdmin(token: token + "x")))
        let nodeID = node.nodeID
        await node.shutdown()

        let (again, generatedAgain) = try await startNode(directory: directory)
        #expect(generatedAgain == nil)
        #expect(await again.isAdmin(token: token))
        #expect(again.nodeID == nodeID)
        await again.shutdown()

        let database = try String(decoding: Data(contentsOf: URL(fileURLWithPath: directory + "/coordinator.sqlite")), as: UTF8.self)
        #expect(!database.contains(token))
    }

    @Test("policies, breaker configs and operator states survive a restart; stored policies win over the config file")
    func persistence() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (node, _) = try await startNode(directory: directory)
        _ = try await node.putPolicy(name: "default", policy: LimitPolicy(algorithm: .gcra, limits: [LimitSpec(rate: 3, periodMs: 1000, burst: 3)]))
        var config = BreakerConfig.default
        config.minimumCalls = 5
        _ = try await node.configureBreaker(name: "db", config: config)
        _ = try await node.setBreakerState(name: "db", state: .forcedOpen)
        await node.shutdown()

        let (restarted, _) = try await startNode(directory: directory)
        #expect(await restarted.limitPolicies()["default"]?.limits.first?.rate == 3)
        let status = try #require(await restarted.breakerStatus("db"))
        #expect(status.snapshot.state == .forcedOpen)
        #expect(status.snapshot.config.minimumCalls == 5)
        #expect(try await restarted.acquire(breaker: "db").permitted == false)
        let audit = try await restarted.auditEvents(after: 0, limit: 100).map(\.event.action)
        #expect(audit.contains("policy.put") && audit.contains("breaker.configure") && audit.contains("breaker.state"))
        await restarted.shutdown()
    }

    @Test("an unrecorded permit expires as a failure; a half-open probe that is never recorded does not wedge the breaker")
    func permitExpiry() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let (node, _) = try await startNode(directory: directory, clock: clock)
        var config = BreakerConfig.default
        config.window = .init(type: .count, size: 2)
        config.minimumCalls = 2
        config.openWaitMs = 1000
        config.halfOpenPermittedCalls = 1
        config.permitTimeoutMs = 500
        _ = try await node.configureBreaker(name: "b", config: config)
        _ = try await node.acquire(breaker: "b")
        _ = try await node.acquire(breaker: "b")
        clock.advance(milliseconds: 600)
        await node.maintain()
        #expect(await node.breakerStatus("b")?.snapshot.state == .open)
        clock.advance(milliseconds: 1000)
        let probe = try await node.acquire(breaker: "b")
        #expect(probe.permitted && probe.state == .halfOpen)
        #expect(try await node.acquire(breaker: "b").permitted == false)
        clock.advance(milliseconds: 600)
        await node.maintain()
        // The lost probe counted as a failure: open again, and after the wait a new probe may run.
        #expect(await node.breakerStatus("b")?.snapshot.state == .open)
        clock.advance(milliseconds: 1000)
        #expect(try await node.acquire(breaker: "b").permitted)
        do {
            _ = try await node.record(breaker: "b", permitID: probe.permitID!, outcome: .success, durationMilliseconds: 1)
            Issue.record("an expired permit must not be recordable")
        } catch {
            #expect(error.code == .permitAlreadyRecorded)
        }
        await node.shutdown()
    }

    @Test("revocation clears the cache at once; unknown secrets are cached negatively but a new token is found")
    func tokenCache() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (node, _) = try await startNode(directory: directory)
        let created = try await node.createToken(subject: "s", policy: nil, ttlSeconds: nil)
        #expect(try await node.verifyToken(created.secret) == .valid(created.token))
        _ = try await node.revokeToken(id: created.token.id)
        #expect(try await node.verifyToken(created.secret) == .invalid(.revoked))
        await node.shutdown()
        do {
            _ = try await node.verifyToken(created.secret)
            Issue.record("calls after shutdown must fail")
        } catch let error as CoordinatorError {
            #expect(error.code == .shuttingDown)
        }
    }

    @Test("a default policy that nothing defines is refused at start")
    func missingDefaultPolicy() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            _ = try await startNode(directory: directory) { $0.defaultPolicyName = "ghost" }
            Issue.record("expected a start failure")
        } catch let error as CoordinatorError {
            #expect(error.code == .unknownPolicy)
            #expect(error.message.contains("ghost"))
        }
    }

    @Test("unreadable or invalid stored documents are ignored with an error log, never crash the node")
    func corruptStoredDocuments() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await SQLiteStore.open(path: directory + "/coordinator.sqlite", synchronous: .normal)
        try await store.putDocument(kind: .limitPolicy, name: "default", json: #"{"limits":[{"rate":0,"periodMs":1000}]}"#, updatedAt: 1)
        try await store.putDocument(kind: .limitPolicy, name: "broken", json: "not json", updatedAt: 1)
        try await store.putDocument(kind: .breakerConfig, name: "db", json: #"{"failureRateThreshold":500}"#, updatedAt: 1)
        try await store.close()

        let (node, _) = try await startNode(directory: directory)
        let policies = await node.limitPolicies()
        #expect(policies["default"] == LimitPolicy.pilotDefault)
        #expect(policies["broken"] == nil)
        #expect(await node.breakerStatus("db") == nil)
        #expect(try await node.checkLimit(policy: "default", key: "k", cost: 1).decision.allowed)
        await node.shutdown()
    }

    @Test("a breaker created by acquire and then forced open comes back forced open")
    func forcedStateOfImplicitBreaker() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (node, _) = try await startNode(directory: directory)
        #expect(try await node.acquire(breaker: "implicit").permitted)
        _ = try await node.setBreakerState(name: "implicit", state: .forcedOpen)
        await node.shutdown()
        let (restarted, _) = try await startNode(directory: directory)
        #expect(await restarted.breakerStatus("implicit")?.snapshot.state == .forcedOpen)
        await restarted.shutdown()
    }

    @Test("a start that fails does not swallow the generated admin token")
    func adminTokenNotLostOnFailedStart() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        await #expect(throws: CoordinatorError.self) {
            _ = try await startNode(directory: directory) { $0.defaultPolicyName = "ghost" }
        }
        let (node, generated) = try await startNode(directory: directory)
        #expect(generated != nil)
        await node.shutdown()
    }

    @Test("draining fails readiness but keeps serving; bad library input is refused")
    func drainingAndLibraryInput() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (node, _) = try await startNode(directory: directory)
        #expect(await node.readiness().ready)
        await node.beginDraining()
        #expect(await node.readiness().ready == false)
        #expect(try await node.checkLimit(policy: "default", key: "k", cost: 1).decision.allowed)
        await #expect(throws: CoordinatorError.self) {
            _ = try await node.appendAudit(id: "e", actor: "a", action: "b", resource: "c", outcome: "d", detailJSON: "not json")
        }
        // A NUL character no store can take is refused up front (never spooled to block a drain).
        let nul = await #expect(throws: CoordinatorError.self) {
            _ = try await node.appendAudit(id: "e", actor: "a\u{0}b", action: "b", resource: "c", outcome: "d", detailJSON: "{}")
        }
        #expect(nul?.code == .invalidRequest)
        await node.shutdown()

        await #expect(throws: CoordinatorError.self) {
            _ = try await startNode(directory: temporaryDirectory()) { $0.tokenCacheCapacity = 0 }
        }
    }

    @Test("limiter keys and outstanding permits are bounded; full limiters reclaim idle keys")
    func bounds() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let (node, _) = try await startNode(directory: directory, clock: clock) {
            $0.maxLimiterKeys = 2
            $0.maxOutstandingPermits = 2
        }
        _ = try await node.putPolicy(name: "p", policy: LimitPolicy(limits: [LimitSpec(rate: 10, periodMs: 1000, burst: 10)]))
        #expect(try await node.checkLimit(policy: "p", key: "a", cost: 1).decision.allowed)
        #expect(try await node.checkLimit(policy: "p", key: "b", cost: 1).decision.allowed)
        #expect(try await node.checkLimit(policy: "p", key: "a", cost: 1).decision.allowed)
        do {
            _ = try await node.checkLimit(policy: "p", key: "c", cost: 1)
            Issue.record("a third key must be refused while two keys hold state")
        } catch {
            #expect(error.code == .limiterFull)
        }
        clock.advance(milliseconds: 2000)
        #expect(try await node.checkLimit(policy: "p", key: "c", cost: 1).decision.allowed)

        #expect(try await node.acquire(breaker: "x").permitted)
        #expect(try await node.acquire(breaker: "x").permitted)
        do {
            _ = try await node.acquire(breaker: "x")
            Issue.record("a third outstanding permit must be refused")
        } catch {
            #expect(error.code == .permitLimitReached)
        }
        await node.shutdown()
    }

    @Test("at the breaker cap, idle unconfigured breakers are evicted; configured ones never")
    func breakerEviction() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let (node, _) = try await startNode(directory: directory, clock: clock) { $0.maxBreakers = 2 }
        _ = try await node.configureBreaker(name: "configured", config: .default)
        let permit = try await node.acquire(breaker: "random-1")
        _ = try await node.record(breaker: "random-1", permitID: permit.permitID!, outcome: .success, durationMilliseconds: 1)
        await #expect(throws: CoordinatorError.self) { _ = try await node.acquire(breaker: "random-2") }
        clock.advance(milliseconds: 61_000)
        #expect(try await node.acquire(breaker: "random-2").permitted)
        #expect(await node.breakerStatus("random-1") == nil)
        #expect(await node.breakerStatus("configured") != nil)
        // random-2 holds a permit: not evictable, so a third name is refused even when idle.
        clock.advance(milliseconds: 61_000)
        await #expect(throws: CoordinatorError.self) { _ = try await node.acquire(breaker: "random-3") }
        await node.shutdown()
    }
}
