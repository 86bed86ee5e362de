import Coordinator
import CoordinatorCore
import Foundation
import Logging
import RedisClient
import Testing

/// The signed bus and the cluster's shared configuration, against real Redis.
@Suite("Cluster bus and shared configuration (real Redis)", .serialized)
struct ClusterBusTests {

    @Test("a policy or breaker config set on one node reaches the others, and nodes started later")
    func configurationPropagates() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let a = try await ClusterTestSupport.node(cluster: cluster, nodeID: "a")
        let b = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b")
        let services = ClusterTestSupport.runServices([a, b])
        defer { services.cancel() }

        let policy = LimitPolicy(limits: [LimitSpec(rate: 7, periodMs: 1000, burst: 7)])
        _ = try await a.putPolicy(name: "shared-p", policy: policy)
        #expect(try await ClusterTestSupport.eventually { await b.limitPolicies()["shared-p"] == policy })
        var config = BreakerConfig.default
        config.minimumCalls = 9
        _ = try await b.configureBreaker(name: "shared-b", config: config)
        #expect(try await ClusterTestSupport.eventually { await a.breakerStatus("shared-b")?.snapshot.config.minimumCalls == 9 })

        let c = try await ClusterTestSupport.node(cluster: cluster, nodeID: "c")
        #expect(await c.limitPolicies()["shared-p"] == policy, "a node started later reconciles at start")
        #expect(await c.breakerStatus("shared-b")?.snapshot.config.minimumCalls == 9)
        services.cancel()
        for node in [a, b, c] { await node.shutdown() }
    }

    @Test("a token created on one node verifies on another; a revocation reaches every node's cache")
    func tokensAcrossNodes() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let a = try await ClusterTestSupport.node(cluster: cluster, nodeID: "a")
        let b = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b")
        let services = ClusterTestSupport.runServices([a, b])
        defer { services.cancel() }

        let created = try await a.createToken(subject: "svc", policy: nil, ttlSeconds: 3600)
        #expect(try await b.verifyToken(created.secret) == .valid(created.token), "b finds a's token in the cluster index")
        #expect(try await b.verifyToken(created.secret) == .valid(created.token), "now cached on b")
        _ = try await a.revokeToken(id: created.token.id)
        #expect(try await ClusterTestSupport.eventually { try await b.verifyToken(created.secret) == .invalid(.revoked) })
        #expect(try await b.tokens().contains { $0.id == created.token.id && $0.revokedAt != nil })
        services.cancel()
        for node in [a, b] { await node.shutdown() }
    }

    @Test("a verification racing a revocation's store write does not re-cache the revoked token")
    func revocationRacingAVerification() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let gate = RevocationGate()
        let a = try await ClusterTestSupport.node(cluster: cluster, nodeID: "a")
        let b = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b", wrapStore: { GatedRevocationStore(base: $0, gate: gate) })
        let services = ClusterTestSupport.runServices([a, b])
        defer { services.cancel() }

        let created = try await a.createToken(subject: "svc", policy: nil, ttlSeconds: 3600)
        #expect(try await b.verifyToken(created.secret) == .valid(created.token))
        await gate.close()
        _ = try await a.revokeToken(id: created.token.id)
        // b heard the revocation, evicted its cache entry and is now writing it to its store (held).
        #expect(try await ClusterTestSupport.eventually { await gate.waiting > 0 })
        // A verification in that window reads the store before the write: valid, and cached.
        #expect(try await b.verifyToken(created.secret) == .valid(created.token))
        await gate.open()
        #expect(try await ClusterTestSupport.eventually { try await b.verifyToken(created.secret) == .invalid(.revoked) },
                "the entry cached during the write is dropped once the store has the revocation")
        services.cancel()
        for node in [a, b] { await node.shutdown() }
    }

    @Test("malformed, forged, foreign-cluster and replayed messages are dropped, counted, and change nothing")
    func rogueMessages() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let b = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b")
        let service = Task { try await ClusterService(node: b).run() }
        defer { service.cancel() }
        let keys = ClusterKeys(cluster: cluster)
        let redis = try await RedisConnection.connect(url: try TestEnvironment.redisURL)
        // Wait until b's subscriber is in place.
        #expect(try await ClusterTestSupport.eventually { (try await redis.send(["PUBSUB", "NUMSUB", keys.busChannel]).array?.last?.integer ?? 0) >= 1 })

        let before = await b.limitPolicies()
        func frame(cluster: String, secret: String, sequence: UInt64, policyName: String) -> String {
            var sender = BusSender(clusterName: cluster, nodeID: "intruder", incarnation: 99)
            var envelope = sender.envelope(kind: .policyChanged, payload: [], redisTimeMs: Int64(Date().timeIntervalSince1970 * 1000))
            var writer = ByteWriter()
            writer.writeShortString(policyName)
            writer.writeLengthPrefixed(Array(#"{"limits":[{"rate":1,"periodMs":1000}]}"#.utf8))
            envelope.payload = writer.bytes
            envelope.sequence = sequence
            return Secrets.base64(envelope.encode(authenticator: HMACBusAuthenticator(secret: secret)))
        }
        _ = try await redis.send(["PUBLISH", keys.busChannel, "%%% not base64 %%%"])
        _ = try await redis.send(["PUBLISH", keys.busChannel, Secrets.base64([0xC0, 0xB5, 1, 2, 3])])
        _ = try await redis.send(["PUBLISH", keys.busChannel, frame(cluster: cluster, secret: "wrong-secret-0123456789", sequence: 1, policyName: "forged")])
        _ = try await redis.send(["PUBLISH", keys.busChannel, frame(cluster: "other-cluster", secret: ClusterTestSupport.secret, sequence: 1, policyName: "foreign")])
        let genuine = frame(cluster: cluster, secret: ClusterTestSupport.secret, sequence: 7, policyName: "genuine")
        _ = try await redis.send(["PUBLISH", keys.busChannel, genuine])
        _ = try await redis.send(["PUBLISH", keys.busChannel, genuine])

        let counted = try await ClusterTestSupport.eventually {
            let rejected = await b.busStatistics().rejected
            return (rejected["malformed"] ?? 0) >= 2 && (rejected["bad_signature"] ?? 0) >= 1
                && (rejected["foreign_cluster"] ?? 0) >= 1 && (rejected["replayed"] ?? 0) >= 1
        }
        let statistics = await b.busStatistics()
        #expect(counted, "\(statistics)")
        let after = await b.limitPolicies()
        #expect(after["forged"] == nil && after["foreign"] == nil, "rejected messages change nothing")
        #expect(after["genuine"] != nil, "a correctly signed message is applied once")
        #expect(Set(after.keys).subtracting(before.keys) == ["genuine"])
        await redis.close()
        service.cancel()
        await b.shutdown()
    }
}

/// Holds `revokeToken` calls while closed.
private actor RevocationGate {
    private var closed = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    var waiting: Int { waiters.count }

    func close() { closed = true }
    func open() {
        closed = false
        for waiter in waiters { waiter.resume() }
        waiters = []
    }
    func pass() async {
        guard closed else { return }
        await withCheckedContinuation { waiters.append($0) }
    }
}

/// A real store whose token revocations wait at a gate; everything else goes straight through.
private struct GatedRevocationStore: CoordinatorStore {
    let base: any CoordinatorStore
    let gate: RevocationGate

    func revokeToken(id: String, at: Int64) async throws -> TokenRecord? {
        await gate.pass()
        return try await base.revokeToken(id: id, at: at)
    }
    func insertToken(_ token: TokenRecord) async throws { try await base.insertToken(token) }
    func token(secretHash: [UInt8]) async throws -> TokenRecord? { try await base.token(secretHash: secretHash) }
    func token(id: String) async throws -> TokenRecord? { try await base.token(id: id) }
    func tokens() async throws -> [TokenRecord] { try await base.tokens() }
    func putDocument(kind: DocumentKind, name: String, json: String, updatedAt: Int64) async throws {
        try await base.putDocument(kind: kind, name: name, json: json, updatedAt: updatedAt)
    }
    func documents(kind: DocumentKind) async throws -> [StoredDocument] { try await base.documents(kind: kind) }
    func deleteDocument(kind: DocumentKind, name: String) async throws -> Bool { try await base.deleteDocument(kind: kind, name: name) }
    func setting(_ key: String) async throws -> String? { try await base.setting(key) }
    func setSetting(_ key: String, value: String) async throws { try await base.setSetting(key, value: value) }
    func appendAudit(_ event: AuditEventInput) async throws -> AuditAppendResult { try await base.appendAudit(event) }
    func auditEvents(after: Int64, limit: Int) async throws -> [AuditEvent] { try await base.auditEvents(after: after, limit: limit) }
    func close() async throws { try await base.close() }
}
