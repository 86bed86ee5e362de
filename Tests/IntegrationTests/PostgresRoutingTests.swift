import Coordinator
import CoordinatorCore
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Synchronization
import Testing

/// A node over a private primary + replica: discovery, read-your-writes, replay pause, failover,
/// two primaries and a frozen primary. Each test has its own servers (they are disrupted).
@Suite("PostgreSQL routing through a node (private primary + replica)", .serialized)
struct PostgresRoutingTests {
    static func node(_ pg: PrivatePostgres, url: String, deadlineMs: Int64 = 1_000) async throws -> CoordinatorNode {
        var configuration = NodeConfiguration()
        configuration.dataDirectory = NSTemporaryDirectory() + "coordinator-pg-\(UUID().uuidString)"
        configuration.postgresURL = url
        configuration.postgresDeadlineMilliseconds = deadlineMs
        configuration.postgresProbeIntervalMilliseconds = 200
        configuration.adminToken = "postgres-routing-admin-token"
        var logger = Logger(label: "pg-routing-test")
        logger.logLevel = .critical
        return try await CoordinatorNode.start(configuration: configuration, logger: logger).node
    }

    /// A private primary + replicas for `body`, stopped afterwards off the cooperative pool (a blocked
    /// pool thread would stall every other test of the process).
    static func withServers(replicas: Int, synchronous: Bool = false, _ body: (PrivatePostgres) async throws -> Void) async throws {
        let pg = try await PrivatePostgres.start(replicas: replicas, synchronous: synchronous)
        do {
            try await body(pg)
        } catch {
            await pg.shutdownAndWait()
            throw error
        }
        await pg.shutdownAndWait()
    }

    /// `ServerChild.start` (which reads the child's output with blocking calls) on a thread of its own.
    static func launch(_ arguments: [String], environment: [String: String]) async throws -> ServerChild {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try ServerChild.start(arguments: arguments, environment: environment) })
            }
        }
    }

    static func host(_ server: PrivatePostgres.Server) -> HostID { HostID(host: "127.0.0.1", port: server.port) }

    /// Appends one audit event and returns its commit LSN (what the HTTP layer returns as `Coordinator-LSN`).
    static func audit(_ node: CoordinatorNode, id: String) async throws -> UInt64? {
        let sink = LSNSink()
        _ = try await RequestConsistency.$lsnSink.withValue(sink) {
            try await node.appendAudit(id: id, actor: "test", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
        }
        return sink.value
    }

    static func allAuditIDs(_ node: CoordinatorNode) async throws -> [String] {
        var ids: [String] = []
        var after: Int64 = 0
        while true {
            let page = try await RequestConsistency.$readRequirement.withValue(.primary) {
                try await node.auditEvents(after: after, limit: 1_000)
            }
            guard let last = page.last else { return ids }
            ids += page.map(\.event.id)
            after = last.seq
        }
    }

    @Test("roles are discovered (replica listed first), writes return their LSN, read-your-writes never reads a paused replica")
    func discoveryAndReadYourWrites() async throws {
        try await Self.withServers(replicas: 1) { pg in
            let replica = pg.replicas[0]
            let node = try await Self.node(pg, url: pg.multiHostURL([replica, pg.primary]))
            defer { Task { await node.shutdown() } }

            let info = await node.clusterInfo()
            #expect(info.postgres?.primary == Self.host(pg.primary))
            #expect(info.backends.contains { $0.role == "store" && $0.kind == "postgresql" })
            #expect(try await ClusterTestSupport.eventually(5) {
                await node.clusterInfo().postgres?.hosts.first { $0.id == Self.host(replica) }?.role == .replica
            })

            // Replay paused: every read-your-writes read after a write is served by the primary (0 stale).
            try await pg.pauseReplay(replica)
            var stale = 0
            for index in 0..<40 {
                let id = "00000000-0000-4000-8000-\(String(format: "%012d", index))"
                let lsn = try #require(try await Self.audit(node, id: id))
                let events = try await RequestConsistency.$readRequirement.withValue(.readYourWrites(minimumLSN: lsn)) {
                    try await node.auditEvents(after: 0, limit: 1_000)
                }
                if !events.contains(where: { $0.event.id == id }) { stale += 1 }
            }
            #expect(stale == 0)
            let paused = try #require(await node.clusterInfo().postgres)
            #expect(paused.counters.readsToReplica == 0)
            #expect(try await ClusterTestSupport.eventually(5) {
                await node.clusterInfo().postgres?.hosts.first { $0.id == Self.host(replica) }?.replayPaused == true
            })

            // Resumed: once caught up, the replica serves read-your-writes reads again, still never stale.
            try await pg.resumeReplay(replica)
            let last = try #require(try await Self.audit(node, id: "00000000-0000-4000-8000-999999999999"))
            try await pg.waitForReplay(replica)
            #expect(try await ClusterTestSupport.eventually(5) {
                let before = await node.clusterInfo().postgres?.counters.readsToReplica ?? 0
                let events = try await RequestConsistency.$readRequirement.withValue(.readYourWrites(minimumLSN: last)) {
                    try await node.auditEvents(after: 0, limit: 1_000)
                }
                guard events.contains(where: { $0.event.id == "00000000-0000-4000-8000-999999999999" }) else {
                    Issue.record("a read-your-writes read missed its write")
                    return true
                }
                return (await node.clusterInfo().postgres?.counters.readsToReplica ?? 0) > before
            })
        }
    }

    @Test("kill -9 of the primary, then promotion: audit appends are buffered meanwhile, stored directly again within 2 s, nothing acknowledged is lost")
    func failover() async throws {
        try await Self.withServers(replicas: 1, synchronous: true) { pg in
            let replica = pg.replicas[0]
            let node = try await Self.node(pg, url: pg.multiHostURL())
            defer { Task { await node.shutdown() } }

            let acknowledged = Mutex<[String]>([])
            let failures = Mutex<[String: Int]>([:])
            let lastSuccess = Mutex<ContinuousClock.Instant?>(nil)
            let writer = Task {
                var index = 0
                while !Task.isCancelled {
                    index += 1
                    let id = UUID().uuidString.lowercased()
                    do {
                        let result = try await node.appendAudit(id: id, actor: "test", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
                        acknowledged.withLock { $0.append(id) }
                        if result.buffered {
                            failures.withLock { $0["buffered", default: 0] += 1 }
                        } else {
                            lastSuccess.withLock { $0 = .now }
                        }
                    } catch let error as CoordinatorError {
                        failures.withLock { $0[error.code.rawValue, default: 0] += 1 }
                    } catch {
                        failures.withLock { $0["other: \(error)", default: 0] += 1 }
                    }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            try await pg.kill9(pg.primary)
            try await Task.sleep(for: .milliseconds(500))
            try await pg.promote(replica)
            let promoted = ContinuousClock.now
            // Writes that are not spooled (token creation) tell when the store takes writes again; audit
            // appends keep going to the spool until it has drained, to stay in order.
            var firstWrite: ContinuousClock.Instant?
            var attempt = 0
            while firstWrite == nil, ContinuousClock.now - promoted < .seconds(10) {
                attempt += 1
                if (try? await node.createToken(subject: "failover\(attempt)", policy: nil, ttlSeconds: nil)) != nil {
                    firstWrite = .now
                } else {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let recovered = try await ClusterTestSupport.eventually(10) {
                lastSuccess.withLock { $0.map { $0 > promoted } ?? false }
            }
            writer.cancel()
            _ = await writer.value
            #expect(recovered && firstWrite != nil)
            let recoveryTime = (firstWrite ?? promoted) - promoted
            #expect(recoveryTime <= .seconds(2), "writes succeeded again \(recoveryTime) after the promotion")
            // While there was no primary, audit appends were spooled (acknowledged as buffered), nothing failed.
            let failed = failures.withLock { $0 }
            #expect(failed.keys.allSatisfy { $0 == "buffered" }, "\(failed)")
            #expect(try await ClusterTestSupport.eventually(10) { await node.bufferedAuditEvents == 0 })
            #expect(await node.clusterInfo().postgres?.primary == Self.host(replica))

            // Every acknowledged event is on the new primary, exactly once.
            let stored = try await Self.allAuditIDs(node)
            let ids = acknowledged.withLock { $0 }
            #expect(ids.count > 5)
            print("failover: writes succeeded again \(recoveryTime) after pg_ctl promote returned; \(ids.count) acknowledged, failures \(failed)")
            #expect(Set(stored).count == stored.count)
            #expect(Set(ids).isSubset(of: Set(stored)), "\(Set(ids).subtracting(stored).count) acknowledged events missing")
        }
    }

    @Test("two primaries: the one on the higher timeline takes the writes, the other is fenced and the alert raised")
    func twoPrimaries() async throws {
        try await Self.withServers(replicas: 1) { pg in
            let replica = pg.replicas[0]
            let node = try await Self.node(pg, url: pg.multiHostURL())
            defer { Task { await node.shutdown() } }
            _ = try await Self.audit(node, id: "10000000-0000-4000-8000-000000000001")

            // The replica is promoted while the old primary keeps running: both accept writes.
            try await pg.promote(replica)
            #expect(try await ClusterTestSupport.eventually(5) {
                guard let topology = await node.clusterInfo().postgres else { return false }
                return topology.primary == Self.host(replica) && topology.splitBrain
                    && topology.hosts.first { $0.id == Self.host(pg.primary) }?.fenced == true
            })
            _ = try await Self.audit(node, id: "10000000-0000-4000-8000-000000000002")
            let onReplica = try await pg.psql(replica, "SELECT count(*) FROM audit_ids WHERE event_id = '10000000-0000-4000-8000-000000000002'")
            let onOld = try await pg.psql(pg.primary, "SELECT count(*) FROM audit_ids WHERE event_id = '10000000-0000-4000-8000-000000000002'")
            #expect(onReplica == "1" && onOld == "0")
            // The fenced server gets no reads either.
            let fencedHost = await node.clusterInfo().postgres?.hosts.first { $0.id == Self.host(pg.primary) }
            #expect(fencedHost?.outstandingRequests == 0)
        }
    }

    @Test("a frozen primary (SIGSTOP): no call waits past its deadline, and the node recovers on thaw")
    func frozenPrimary() async throws {
        try await Self.withServers(replicas: 1) { pg in
            let node = try await Self.node(pg, url: pg.multiHostURL(), deadlineMs: 500)
            defer { Task { await node.shutdown() } }
            _ = try await Self.audit(node, id: "20000000-0000-4000-8000-000000000001")

            try pg.freeze(pg.primary)
            var worst: Duration = .zero
            for index in 0..<5 {
                let start = ContinuousClock.now
                // The store call gives up at its deadline and the event is spooled (acknowledged as buffered);
                // a token creation (no spool) fails with 503 within the deadline as well.
                let result = try await node.appendAudit(
                    id: "20000000-0000-4000-8000-00000000010\(index)", actor: "test", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
                #expect(result.buffered)
                await #expect(throws: CoordinatorError.self) {
                    _ = try await node.createToken(subject: "frozen\(index)", policy: nil, ttlSeconds: nil)
                }
                worst = max(worst, ContinuousClock.now - start)
            }
            pg.thaw(pg.primary)
            // The deadline plus scheduling slack on a loaded 2-core test machine.
            #expect(worst <= .milliseconds(1_500), "two calls took \(worst) with a 500 ms deadline each")
            // Nothing was promoted by the router itself; after the thaw writes succeed again.
            #expect(try await ClusterTestSupport.eventually(10) {
                guard await node.bufferedAuditEvents == 0 else { return false }
                return (try? await node.createToken(subject: "thawed", policy: nil, ttlSeconds: nil)) != nil
            })
            #expect(await node.clusterInfo().postgres?.primary == Self.host(pg.primary))
            let replicaRole = try await pg.psql(pg.replicas[0], "SELECT pg_is_in_recovery()")
            #expect(replicaRole == "t")
        }
    }

    @Test("every PostgreSQL server down: audit events are spooled and acknowledged as buffered, then stored in order, exactly once")
    func auditSpoolWhilePostgresIsDown() async throws {
        try await Self.withServers(replicas: 1) { pg in
            let node = try await Self.node(pg, url: pg.multiHostURL(), deadlineMs: 500)
            defer { Task { await node.shutdown() } }
            func append(_ id: String) async throws -> AuditAppendResult {
                try await node.appendAudit(id: id, actor: "svc", action: "write", resource: "r", outcome: "ok", detailJSON: #"{"n":1}"#)
            }
            let before = try await append("40000000-0000-4000-8000-000000000000")
            #expect(!before.buffered && before.seq > 0)

            try await pg.stop(pg.replicas[0], mode: "immediate")
            try await pg.stop(pg.primary, mode: "immediate")
            var ids: [String] = []
            for index in 1...30 {
                let id = "40000000-0000-4000-8000-\(String(format: "%012d", index))"
                let result = try await append(id)
                #expect(result.buffered && !result.duplicate)
                ids.append(id)
            }
            // A replay of a buffered id is a duplicate; the same id with other content is refused.
            #expect(try await append(ids[0]).duplicate)
            await #expect(throws: CoordinatorError.self) {
                _ = try await node.appendAudit(id: ids[1], actor: "other", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
            }
            #expect(await node.bufferedAuditEvents == 30)
            let ready = await node.readiness()
            #expect(ready.checks["auditSpool"]?.contains("30 events buffered") == true)

            try await pg.start(pg.primary)
            try await pg.start(pg.replicas[0])
            #expect(try await ClusterTestSupport.eventually(20) { await node.bufferedAuditEvents == 0 })
            let stored = try await Self.allAuditIDs(node)
            #expect(stored == ["40000000-0000-4000-8000-000000000000"] + ids, "\(stored)")
            // New events go straight to the store again.
            let after = try await append("40000000-0000-4000-8000-999999999999")
            #expect(!after.buffered && after.seq > 0)
        }
    }

    @Test("HTTP, two node processes: a write's Coordinator-LSN sent to the other node reads the write, with the replica paused")
    func coordinatorLSNAcrossProcesses() async throws {
        try await Self.withServers(replicas: 1) { pg in
            let replica = pg.replicas[0]
            let admin = "postgres-routing-admin-token"
            let environment = ["COORDINATOR_ADMIN_TOKEN": admin, "COORDINATOR_POSTGRES_PROBE_INTERVAL_MS": "100"]
            let a = try await Self.launch(["--postgres-url", pg.multiHostURL([pg.primary, replica])], environment: environment)
            defer { Thread.detachNewThread { a.stop() } }
            let b = try await Self.launch(["--postgres-url", pg.multiHostURL([replica, pg.primary])], environment: environment)
            defer { Thread.detachNewThread { b.stop() } }

            func send(_ url: String, method: String, body: String? = nil, headers: [String: String] = [:]) async throws -> (Int, String, HTTPURLResponse?) {
                var request = URLRequest(url: URL(string: url)!)
                request.httpMethod = method
                if let body {
                    request.httpBody = Data(body.utf8)
                    request.setValue("application/json", forHTTPHeaderField: "Content-Type")
                }
                for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
                request.timeoutInterval = 10
                let (data, response) = try await URLSession.shared.data(for: request)
                let http = response as? HTTPURLResponse
                return (http?.statusCode ?? 0, String(decoding: data, as: UTF8.self), http)
            }

            try await pg.pauseReplay(replica)
            var stale = 0
            for index in 0..<20 {
                let id = "30000000-0000-4000-8000-\(String(format: "%012d", index))"
                let (status, _, response) = try await send(
                    a.baseURL + "/v1/audit", method: "POST",
                    body: #"{"id":"\#(id)","actor":"svc","action":"write","resource":"r","outcome":"ok"}"#)
                #expect(status == 201 || status == 200)
                let lsn = try #require(response?.value(forHTTPHeaderField: "Coordinator-LSN"))
                #expect(LSNText.parse(lsn) != nil)
                let (listed, body, _) = try await send(
                    b.baseURL + "/v1/audit?after=0&limit=1000", method: "GET",
                    headers: ["Authorization": "Bearer \(admin)", "Coordinator-LSN": lsn])
                #expect(listed == 200)
                if !body.contains(id) { stale += 1 }
            }
            #expect(stale == 0)
            let (bad, problem, _) = try await send(b.baseURL + "/v1/audit", method: "GET", headers: ["Authorization": "Bearer \(admin)", "Coordinator-LSN": "nonsense"])
            #expect(bad == 400 && problem.contains("invalid-lsn"))
            let (_, cluster, _) = try await send(b.baseURL + "/v1/cluster", method: "GET")
            #expect(cluster.contains(#""postgres":{"primary":"127.0.0.1:\#(pg.primary.port)""#), "\(cluster)")
            try await pg.resumeReplay(replica)
        }
    }
}
