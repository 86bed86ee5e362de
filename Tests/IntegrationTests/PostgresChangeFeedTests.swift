import Coordinator
import CoordinatorCore
import Foundation
import Logging
import PostgresClient
import RedisClient
import Testing

/// The PostgreSQL store's cluster features against real servers: the change feed (LISTEN/NOTIFY,
/// with and without Redis, across a failover), the two-level token cache (local LRU → Redis →
/// PostgreSQL) and the shared audit spool (a Redis stream drained through a consumer group).
@Suite("PostgreSQL change feed, token cache levels and the shared audit spool", .serialized)
struct PostgresChangeFeedTests {
    static let admin = "change-feed-admin-token"

    /// A node over `postgresURL`, in cluster mode when `redisURL` is given.
    static func node(
        postgresURL: String, redisURL: String? = nil, cluster: String = "feed", nodeID: String, deadlineMs: Int64 = 1_000
    ) async throws -> CoordinatorNode {
        var configuration = NodeConfiguration()
        configuration.dataDirectory = NSTemporaryDirectory() + "coordinator-feed-\(UUID().uuidString)"
        configuration.postgresURL = postgresURL
        configuration.postgresDeadlineMilliseconds = deadlineMs
        configuration.postgresProbeIntervalMilliseconds = 200
        configuration.adminToken = admin
        configuration.nodeID = nodeID
        if let redisURL {
            configuration.redisURL = redisURL
            configuration.clusterName = cluster
            configuration.clusterSecret = ClusterTestSupport.secret
            configuration.redisDeadlineMilliseconds = 2_000
            configuration.heartbeatIntervalMilliseconds = 200
        }
        var logger = Logger(label: "feed-test")
        logger.logLevel = .critical
        return try await CoordinatorNode.start(configuration: configuration, logger: logger).node
    }

    static func listening(_ node: CoordinatorNode) async throws -> Bool {
        try await ClusterTestSupport.eventually(10) { await node.changeFeedStatistics().listeningOn != nil }
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    static func redis() async throws -> RedisConnection {
        try await RedisConnection.connect(url: try TestEnvironment.redisURL)
    }

    // MARK: Change feed

    @Test("without Redis, NOTIFY carries policy, breaker and token changes to every node — also changes made with SQL")
    func changeFeedWithoutRedis() async throws {
        let database = try await ScratchDatabase.create("feed")
        defer { Task { await database.drop() } }
        let a = try await Self.node(postgresURL: database.url, nodeID: "node-a")
        let b = try await Self.node(postgresURL: database.url, nodeID: "node-b")
        defer { Task { await a.shutdown(); await b.shutdown() } }
        #expect(try await Self.listening(a))
        #expect(try await Self.listening(b))

        // A policy and a breaker configuration changed through node a reach node b.
        let gold = LimitPolicy(limits: [LimitSpec(rate: 7, periodMs: 1_000, burst: 3)])
        _ = try await a.putPolicy(name: "gold", policy: gold)
        #expect(try await ClusterTestSupport.eventually(3) { await b.limitPolicies()["gold"] == gold })
        var config = BreakerConfig.default
        config.failureRateThreshold = 33
        _ = try await a.configureBreaker(name: "payments", config: config)
        #expect(try await ClusterTestSupport.eventually(3) { await b.breakerConfiguration("payments") == config })

        // An operator's change made with SQL reaches both nodes.
        let platinum = LimitPolicy(limits: [LimitSpec(rate: 99, periodMs: 1_000, burst: 9)])
        let json = String(decoding: try JSONEncoder().encode(platinum), as: UTF8.self)
        let sql = try await database.connect()
        _ = try await sql.query("UPDATE documents SET json = $1 WHERE kind = 'limit_policy' AND name = 'gold'", [json])
        #expect(try await ClusterTestSupport.eventually(3) { await a.limitPolicies()["gold"] == platinum })
        #expect(try await ClusterTestSupport.eventually(3) { await b.limitPolicies()["gold"] == platinum })

        // A token verified (and cached) on b is refused there as soon as a revokes it: without the
        // feed, b's cache would accept it for tokenCache.ttlMs (30 s).
        let created = try await a.createToken(subject: "svc", policy: nil, ttlSeconds: nil)
        #expect(try await b.verifyToken(created.secret) == .valid(created.token))
        _ = try await a.revokeToken(id: created.token.id)
        #expect(try await ClusterTestSupport.eventually(3) {
            if case .invalid(.revoked) = try await b.verifyToken(created.secret) { return true }
            return false
        })

        // Malformed payloads and invalid documents are counted and ignored; nothing changes.
        _ = try await sql.query("SELECT pg_notify('coordinator_changes', 'garbage'), pg_notify('coordinator_changes', 'document:limit_policy:')")
        _ = try await sql.query("UPDATE documents SET json = '{\"limits\": []}' WHERE kind = 'limit_policy' AND name = 'gold'")
        #expect(try await ClusterTestSupport.eventually(3) { await b.changeFeedStatistics().malformed == 2 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(await b.limitPolicies()["gold"] == platinum)
        await sql.close()
    }

    @Test("after kill -9 of the primary and a promotion, the change feed LISTENs on the new primary and reloads")
    func changeFeedFollowsFailover() async throws {
        try await PostgresRoutingTests.withServers(replicas: 1) { pg in
            let replica = pg.replicas[0]
            let node = try await Self.node(postgresURL: pg.multiHostURL(), nodeID: "node-f", deadlineMs: 500)
            defer { Task { await node.shutdown() } }
            #expect(try await Self.listening(node))
            #expect(await node.changeFeedStatistics().listeningOn == "127.0.0.1:\(pg.primary.port)")
            _ = try await node.putPolicy(name: "silver", policy: LimitPolicy(limits: [LimitSpec(rate: 5, periodMs: 1_000)]))
            try await pg.waitForReplay(replica)

            try await pg.kill9(pg.primary)
            try await pg.promote(replica)
            #expect(try await ClusterTestSupport.eventually(10) {
                await node.changeFeedStatistics().listeningOn == "127.0.0.1:\(replica.port)"
            })
            #expect(await node.changeFeedStatistics().subscriptions >= 2)

            let changed = LimitPolicy(limits: [LimitSpec(rate: 55, periodMs: 1_000)])
            let json = String(decoding: try JSONEncoder().encode(changed), as: UTF8.self)
            _ = try await pg.psql(replica, "UPDATE documents SET json = '\(json)' WHERE kind = 'limit_policy' AND name = 'silver'")
            #expect(try await ClusterTestSupport.eventually(5) { await node.limitPolicies()["silver"] == changed })
        }
    }

    // MARK: Token cache levels

    @Test("tokens: local LRU → Redis → PostgreSQL; a fresh node reads Redis, not the database; a revocation clears both levels everywhere")
    func twoLevelTokenCache() async throws {
        let database = try await ScratchDatabase.create("tokcache")
        defer { Task { await database.drop() } }
        let cluster = TestEnvironment.uniqueName("tokcache")
        let redisURL = try TestEnvironment.redisURL
        let a = try await Self.node(postgresURL: database.url, redisURL: redisURL, cluster: cluster, nodeID: "node-a")
        let b = try await Self.node(postgresURL: database.url, redisURL: redisURL, cluster: cluster, nodeID: "node-b")
        let services = ClusterTestSupport.runServices([a, b])
        defer { services.cancel() }
        let redis = try await Self.redis()
        defer { Task { await redis.close(); await a.shutdown(); await b.shutdown() } }

        let created = try await a.createToken(subject: "svc", policy: nil, ttlSeconds: 3_600)
        let cacheKey = "coord:\(cluster):tokcache:\(Self.hex(created.token.secretHash))"
        // First lookup on b: not in Redis yet → PostgreSQL, which fills Redis (with a TTL).
        #expect(try await b.verifyToken(created.secret) == .valid(created.token))
        #expect(await b.tokenLookupCounts().shared == 0)
        #expect(await b.tokenLookupCounts().store == 1)
        #expect(try await redis.send(["EXISTS", cacheKey]).integer == 1)
        let ttl = try await redis.send(["PTTL", cacheKey]).integer ?? -1
        #expect(ttl > 0 && ttl <= 300_000, "PTTL \(ttl)")
        // Again on b: its local LRU answers (no lookup at all).
        #expect(try await b.verifyToken(created.secret) == .valid(created.token))
        #expect(await b.tokenLookupCounts().shared == 0)
        #expect(await b.tokenLookupCounts().store == 1)

        // A node that just started (cold local cache) is served by Redis: no database read.
        let c = try await Self.node(postgresURL: database.url, redisURL: redisURL, cluster: cluster, nodeID: "node-c")
        let servicesC = ClusterTestSupport.runServices([c])
        defer { servicesC.cancel(); Task { await c.shutdown() } }
        #expect(try await c.verifyToken(created.secret) == .valid(created.token))
        #expect(await c.tokenLookupCounts().shared == 1)
        #expect(await c.tokenLookupCounts().store == 0)

        // Revocation on a: the Redis entry is gone at once, and b and c (which cached it locally)
        // refuse it within the bus / NOTIFY propagation.
        _ = try await a.revokeToken(id: created.token.id)
        #expect(try await redis.send(["EXISTS", cacheKey]).integer == 0)
        for node in [b, c] {
            #expect(try await ClusterTestSupport.eventually(3) {
                if case .invalid(.revoked) = try await node.verifyToken(created.secret) { return true }
                return false
            })
        }
        // A revoked token is never cached in Redis again.
        #expect(try await redis.send(["EXISTS", cacheKey]).integer == 0)

        // A revocation that stopped after its Redis step (the node died before the database update)
        // is finished by the next lookup: refused, and revoked in the database.
        let second = try await a.createToken(subject: "svc2", policy: nil, ttlSeconds: nil)
        _ = try await redis.send(["SADD", "coord:\(cluster):revoked", second.token.id])
        let d = try await Self.node(postgresURL: database.url, redisURL: redisURL, cluster: cluster, nodeID: "node-d")
        defer { Task { await d.shutdown() } }
        #expect(try await d.verifyToken(second.secret) == .invalid(.revoked))
        let sql = try await database.connect()
        let revokedAt = try await sql.query("SELECT revoked_at IS NOT NULL FROM tokens WHERE id = $1", [second.token.id])
        #expect(revokedAt == [["t"]])
        await sql.close()

        // A garbled or forged Redis entry is not trusted (entries are signed with the cluster secret):
        // the store answers. Write access to Redis cannot mint a token.
        let third = try await a.createToken(subject: "svc3", policy: nil, ttlSeconds: nil)
        let thirdKey = "coord:\(cluster):tokcache:\(Self.hex(third.token.secretHash))"
        _ = try await redis.send(["HSET", thirdKey, "id", third.token.id, "record", "{garbage", "mac", "00"])
        let before = await d.tokenLookupCounts().store
        #expect(try await d.verifyToken(third.secret) == .valid(third.token))
        #expect(await d.tokenLookupCounts().store == before + 1)
        // An intruder with write access to Redis picks a secret and plants a record for its hash.
        let intruderSecret = Secrets.newTokenSecret()
        var forged = third.token
        forged.id = "tok_forgedforgedforgedforged0"
        forged.secretHash = Secrets.sha256(intruderSecret)
        let forgedKey = "coord:\(cluster):tokcache:\(Self.hex(forged.secretHash))"
        let forgedJSON = String(decoding: try JSONEncoder().encode(forged), as: UTF8.self)
        _ = try await redis.send(["HSET", forgedKey, "id", forged.id, "record", forgedJSON, "mac", String(repeating: "0", count: 64)])
        let e = try await Self.node(postgresURL: database.url, redisURL: redisURL, cluster: cluster, nodeID: "node-e")
        defer { Task { await e.shutdown() } }
        #expect(try await e.verifyToken(intruderSecret) == .invalid(.unknown))
        #expect(await e.tokenLookupCounts().shared == 0)

        // A revocation or an edit made with SQL (not through a node) clears the Redis level too.
        let fourth = try await a.createToken(subject: "svc4", policy: nil, ttlSeconds: nil)
        let fourthKey = "coord:\(cluster):tokcache:\(Self.hex(fourth.token.secretHash))"
        #expect(try await e.verifyToken(fourth.secret) == .valid(fourth.token))
        #expect(try await redis.send(["EXISTS", fourthKey]).integer == 1)
        let sql2 = try await database.connect()
        var heard: [Int] = []
        for node in [a, b, c, d, e] { heard.append(await node.changeFeedStatistics().notifications) }
        _ = try await sql2.query("UPDATE tokens SET expires_at = 4102444800000 WHERE id = $1", [fourth.token.id])
        #expect(try await ClusterTestSupport.eventually(3) { try await redis.send(["EXISTS", fourthKey]).integer == 0 })
        // Once every node has handled the change (each drops the entry once), e's next check reads the
        // database and refills Redis.
        for (index, node) in [a, b, c, d, e].enumerated() {
            #expect(try await ClusterTestSupport.eventually(3) { await node.changeFeedStatistics().notifications > heard[index] })
        }
        try await Task.sleep(for: .milliseconds(100))
        var edited = fourth.token
        edited.expiresAt = 4_102_444_800_000
        #expect(try await e.verifyToken(fourth.secret) == .valid(edited), "the edit is seen, not the cached record")
        #expect(try await redis.send(["EXISTS", fourthKey]).integer == 1)
        _ = try await sql2.query("UPDATE tokens SET revoked_at = 1 WHERE id = $1", [fourth.token.id])
        await sql2.close()
        #expect(try await ClusterTestSupport.eventually(3) { try await redis.send(["EXISTS", fourthKey]).integer == 0 })
        let f = try await Self.node(postgresURL: database.url, redisURL: redisURL, cluster: cluster, nodeID: "node-f")
        defer { Task { await f.shutdown() } }
        #expect(try await f.verifyToken(fourth.secret) == .invalid(.revoked))
        for node in [a, b, c, d, e] {
            #expect(try await ClusterTestSupport.eventually(3) {
                if case .invalid(.revoked) = try await node.verifyToken(fourth.secret) { return true }
                return false
            })
        }
    }

    // MARK: Shared audit spool

    @Test("PostgreSQL down with Redis up: audit events go to the cluster's stream; a node killed mid-drain strands nothing; drained in order, exactly once")
    func sharedAuditSpool() async throws {
        try await PostgresRoutingTests.withServers(replicas: 0) { pg in
            let cluster = TestEnvironment.uniqueName("spool")
            let redisURL = try TestEnvironment.redisURL
            let url = pg.multiHostURL()
            // Node a is a separate process, so it can really die (kill -9).
            let environment = [
                "COORDINATOR_ADMIN_TOKEN": Self.admin, "COORDINATOR_CLUSTER_SECRET": ClusterTestSupport.secret,
                "COORDINATOR_POSTGRES_DEADLINE_MS": "500", "COORDINATOR_POSTGRES_PROBE_INTERVAL_MS": "200",
            ]
            let a = try await PostgresRoutingTests.launch(
                ["--postgres-url", url, "--redis-url", redisURL, "--cluster-name", cluster, "--node-id", "node-a"], environment: environment)
            defer { Thread.detachNewThread { a.stop() } }
            let b = try await Self.node(postgresURL: url, redisURL: redisURL, cluster: cluster, nodeID: "node-b", deadlineMs: 500)
            let services = ClusterTestSupport.runServices([b])
            let redis = try await Self.redis()
            defer { services.cancel(); Task { await redis.close(); await b.shutdown() } }
            let stream = "coord:\(cluster):audit-spool"

            // Node a holds the drain lock (as if it had taken it first); it renews it with its own TTL.
            _ = try await redis.send(["SET", "coord:\(cluster):audit-spool:lock", "node-a", "PX", "60000"])
            try await pg.stop(pg.primary, mode: "immediate")
            var fromA: [String] = []
            for index in 1...20 {
                let id = "50000000-0000-4000-8000-\(String(format: "%012d", index))"
                let (status, body) = try await httpPOST(
                    a.baseURL + "/v1/audit", body: #"{"id":"\#(id)","actor":"svc","action":"write","resource":"r","outcome":"ok"}"#)
                #expect(status == 202 && body.contains(#""buffered":true"#), "\(status) \(body)")
                fromA.append(id)
            }
            var fromB: [String] = []
            for index in 1...10 {
                let id = "60000000-0000-4000-8000-\(String(format: "%012d", index))"
                let result = try await b.appendAudit(id: id, actor: "svc", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
                #expect(result.buffered && !result.duplicate)
                fromB.append(id)
            }
            // Buffered in Redis, not in either node's local spool; a replay is a duplicate, other content a conflict.
            #expect(try await redis.send(["XLEN", stream]).integer == 30)
            #expect(await b.bufferedAuditEvents == 0)
            #expect(try await b.appendAudit(id: fromA[0], actor: "svc", action: "write", resource: "r", outcome: "ok", detailJSON: "{}").duplicate)
            await #expect(throws: CoordinatorError.self) {
                _ = try await b.appendAudit(id: fromA[1], actor: "other", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
            }
            // An entry no node can decode, and a well-formed event not signed with the cluster secret
            // (written to Redis by something else): both dead-lettered, never stored.
            _ = try await redis.send(["XADD", stream, "*", "id", "bogus", "event", "{not json"])
            let forged = #"{"action":"write","actor":"intruder","detailJSON":"{}","id":"66666666-0000-4000-8000-000000000000","nodeID":"node-a","outcome":"ok","recordedAt":1,"resource":"r"}"#
            _ = try await redis.send(["XADD", stream, "*", "id", "66666666-0000-4000-8000-000000000000", "event", forged, "mac", String(repeating: "0", count: 64), "node", "node-a"])

            // Node a tries to drain (PostgreSQL is down), holds entries read but unacknowledged, and
            // dies; b must claim them once the lock a held expires.
            #expect(try await ClusterTestSupport.eventually(5) {
                // NOGROUP until a drainer created the group.
                let pending = (try? await redis.send(["XPENDING", stream, "drainers", "-", "+", "100", "node-a"]))?.array ?? []
                return !pending.isEmpty
            })
            a.kill9()
            try await pg.start(pg.primary)
            #expect(try await ClusterTestSupport.eventually(30) { try await redis.send(["XLEN", stream]).integer == 0 })

            let stored = try await PostgresRoutingTests.allAuditIDs(b)
            #expect(Set(stored) == Set(fromA + fromB), "\(stored)")
            #expect(stored.count == 30, "every event exactly once: \(stored.count)")
            #expect(stored.filter { $0.hasPrefix("5") } == fromA, "a's events in the order acknowledged")
            #expect(stored.filter { $0.hasPrefix("6") } == fromB, "b's events in the order acknowledged")
            #expect(try await redis.send(["XLEN", "coord:\(cluster):audit-spool:dead"]).integer == 2)
            #expect(try await redis.send(["HLEN", "coord:\(cluster):audit-spool:by-node"]).integer == 0)
            #expect(try await redis.send(["HLEN", "coord:\(cluster):audit-spool:ids"]).integer == 0)
            // Appends go straight to the store again.
            let after = try await b.appendAudit(
                id: "60000000-0000-4000-8000-999999999999", actor: "svc", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
            #expect(!after.buffered && after.seq > 0)
        }
    }

    @Test("PostgreSQL and Redis both down: events go to the local spool; all drain exactly once when both return")
    func spoolFallsBackToLocalWhenRedisIsDownToo() async throws {
        try await PostgresRoutingTests.withServers(replicas: 0) { pg in
            let redisDirectory = NSTemporaryDirectory() + "coordinator-redis-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: redisDirectory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: redisDirectory) }
            var redisServer = try PrivateRedis(dataDirectory: redisDirectory)
            try await redisServer.waitUntilReady()
            let port = redisServer.port
            let node = try await Self.node(
                postgresURL: pg.multiHostURL(), redisURL: redisServer.url, cluster: "fallback", nodeID: "node-l", deadlineMs: 500)
            let services = ClusterTestSupport.runServices([node])
            defer { services.cancel(); Task { await node.shutdown() } }
            func append(_ id: String) async throws -> AuditAppendResult {
                try await node.appendAudit(id: id, actor: "svc", action: "write", resource: "r", outcome: "ok", detailJSON: "{}")
            }

            try await pg.stop(pg.primary, mode: "immediate")
            var ids: [String] = []
            for index in 1...5 {
                ids.append("70000000-0000-4000-8000-\(String(format: "%012d", index))")
                #expect(try await append(ids.last!).buffered)
            }
            #expect(await node.sharedBufferedAuditEvents == 5)
            redisServer.stop()
            for index in 6...10 {
                ids.append("70000000-0000-4000-8000-\(String(format: "%012d", index))")
                #expect(try await append(ids.last!).buffered)
            }
            #expect(await node.bufferedAuditEvents >= 5, "the local spool took what Redis could not")

            redisServer = try PrivateRedis(port: port, dataDirectory: redisDirectory)
            defer { redisServer.stop() }
            try await redisServer.waitUntilReady()
            try await pg.start(pg.primary)
            #expect(try await ClusterTestSupport.eventually(30) {
                let local = await node.bufferedAuditEvents
                let shared = await node.sharedBufferedAuditEvents
                return local == 0 && shared == 0
            })
            let stored = try await PostgresRoutingTests.allAuditIDs(node)
            #expect(stored.sorted() == ids, "every event exactly once: \(stored)")
        }
    }
}
