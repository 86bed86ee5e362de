import CoordinatorCore
import Foundation
import Logging
import PostgresClient
import RedisClient

/// The PostgreSQL store's node features: the change feed (LISTEN/NOTIFY), the shared audit spool
/// (a Redis stream) beside the local one, and the second level of the token cache (Redis).
extension CoordinatorNode {
    /// How long the shared-spool drain lock lives without renewal: a node that dies while draining
    /// hands the spool over after at most this long.
    static let spoolDrainLockTTLMs: Int64 = 5_000

    // MARK: Change feed

    /// Starts following the primary's change feed.
    func startChangeFeed(router: ReplicatedPostgres) {
        let feed = PostgresChangeFeed(router: router, connectTimeout: .milliseconds(configuration.postgresDeadlineMilliseconds))
        changeFeed = feed
        changeFeedTask = Task {
            await feed.run { [weak self] event in await self?.handleChange(event) }
        }
    }

    /// Applies one change-feed event. Runs in feed order.
    func handleChange(_ event: PostgresChangeFeed.Event) async {
        guard !shuttingDown else { return }
        switch event {
        case .subscribed(let host):
            changeFeedStatus = BackendStatus(
                role: "changeFeed", kind: "postgresql", status: "ok", detail: "LISTEN \(PostgresMigrations.changeChannel) on \(host)",
                sinceMilliseconds: clock.wallMilliseconds())
            changeFeedSubscriptions += 1
            metrics.changeFeed(listening: true)
            if changeFeedSubscriptions > 1 {
                // Notifications sent while the feed was down are lost: reload what memory holds, and
                // distrust the Redis token level until it is flushed (a token changed with SQL meanwhile).
                metrics.changeFeedResubscribed()
                logger.notice("change feed LISTENing again; reloading policies, breakers and token caches", metadata: ["host": "\(host)"])
                dropTokenCaches()
                if storeIsShared, cluster != nil {
                    sharedTokenLevelStale = true
                    await flushSharedTokenLevel()
                }
            }
            pendingReloads = Set(DocumentKind.allCases)
            await reloadPendingDocuments()
        case .change(let change):
            metrics.changeFeedNotification()
            changeFeedNotifications += 1
            switch change {
            case .document(let kind, _):
                pendingReloads.insert(kind)
                await reloadPendingDocuments()
            case .tokenRevoked(let id, let hex):
                evictToken(id: id)
                pendingTokenInvalidations[hex] = (id, true)
                await applyTokenInvalidations()
            case .tokenChanged(let id, let hex):
                evictToken(id: id)
                pendingTokenInvalidations[hex] = (id, false)
                await applyTokenInvalidations()
            case .tokenCreated(let hex):
                if let hash = Secrets.unhex(hex) { _ = unknownSecrets.removeValue(forKey: hash) }
            }
        case .malformed(let payload):
            metrics.changeFeedMalformed()
            changeFeedMalformed += 1
            logger.warning("ignoring a malformed change notification", metadata: ["payload": "\(payload.prefix(200))"])
        case .lost(let reason):
            if changeFeedStatus.status == "ok" {
                logger.warning("change feed lost; reconnecting to the primary", metadata: ["reason": "\(reason)"])
                changeFeedStatus.sinceMilliseconds = clock.wallMilliseconds()
            }
            changeFeedStatus.status = "degraded"
            changeFeedStatus.detail = reason
            metrics.changeFeed(listening: false)
        }
    }

    /// Drops every cached token verification (valid and unknown), so the next check reads again.
    func dropTokenCaches() {
        revocationEpoch &+= 1
        tokenCache.removeAll { _, _ in true }
        unknownSecrets.removeAll { _, _ in true }
    }

    /// Reloads the document kinds marked stale, applying changed ones in memory (the store already
    /// has them). A failed read leaves the kind marked, so the PostgreSQL ticker retries it.
    func reloadPendingDocuments() async {
        // One reload at a time; a kind marked again while it is read is read again afterwards, so the
        // last read always follows the last announcement (an older read is never applied last).
        guard !reloadingDocuments else { return }
        reloadingDocuments = true
        defer { reloadingDocuments = false }
        while let kind = DocumentKind.allCases.first(where: { pendingReloads.contains($0) }), !shuttingDown {
            pendingReloads.remove(kind)
            let documents: [StoredDocument]
            do {
                documents = try await store.documents(kind: kind)
            } catch {
                pendingReloads.insert(kind)
                logger.warning("could not reload changed documents; retrying", metadata: ["kind": "\(kind.rawValue)", "error": "\(error)"])
                return
            }
            let decoder = JSONDecoder()
            for document in documents where ResourceName.isValid(document.name) {
                do {
                    switch kind {
                    case .limitPolicy:
                        let policy = try decoder.decode(LimitPolicy.self, from: Data(document.json.utf8))
                        if let problem = policy.validate().first { throw CoordinatorError(.invalidPolicy, "\(problem.key): \(problem.reason)") }
                        guard policies[document.name] != policy else { continue }
                        try await applyPolicyLocally(name: document.name, policy: policy, json: document.json, persist: false)
                        await mirrorToCluster(kind: SharedKind.policies, name: document.name, json: document.json)
                    case .breakerConfig:
                        let config = try decoder.decode(BreakerConfig.self, from: Data(document.json.utf8))
                        if let problem = config.validate().first { throw CoordinatorError(.invalidBreakerConfig, "\(problem.key): \(problem.reason)") }
                        guard breakerConfigs[document.name] != config else { continue }
                        try await applyBreakerConfigLocally(name: document.name, config: config, json: document.json, persist: false)
                        await mirrorToCluster(kind: SharedKind.breakers, name: document.name, json: document.json)
                    }
                    logger.notice("applied a change from the store", metadata: ["kind": "\(kind.rawValue)", "name": "\(document.name)"])
                } catch {
                    logger.error("ignoring an invalid document changed in the store", metadata: [
                        "kind": "\(kind.rawValue)", "name": "\(document.name)", "error": "\(error)"])
                }
            }
        }
    }

    /// A change made in the database (by a node or an operator) becomes the cluster's copy in Redis
    /// too, so the Redis reconciliation does not undo it.
    private func mirrorToCluster(kind: String, name: String, json: String) async {
        guard let cluster, !sharedHealth.isDegraded else { return }
        do {
            try await cluster.putSharedDocument(kind: kind, name: name, json: json)
        } catch {
            logger.warning("could not mirror a store change to the cluster's copy", metadata: ["name": "\(name)", "error": "\(error)"])
        }
    }

    /// The change feed so far: how often it LISTENed (more than once: it reconnected, e.g. after a
    /// failover), the changes it applied, the malformed payloads it ignored, and the host it LISTENs on.
    public func changeFeedStatistics() -> (subscriptions: Int, notifications: Int, malformed: Int, listeningOn: String?) {
        (changeFeedSubscriptions, changeFeedNotifications, changeFeedMalformed,
         changeFeedStatus.status == "ok" ? changeFeed?.listeningOn?.description : nil)
    }

    // MARK: Token cache, second level

    /// The MAC the cluster secret gives `text` in `context` (cached token records and spooled audit
    /// events in Redis are signed like bus messages, so write access to Redis cannot mint a token or
    /// inject an audit event).
    func redisMAC(_ context: String, _ text: String) -> String? {
        busAuthenticator.map { Secrets.hex($0.mac(Array((context + "\u{0}" + text).utf8))) }
    }

    /// Whether `mac` is the MAC of `text` in `context`.
    func verifyRedisMAC(_ context: String, _ text: String, mac: String) -> Bool {
        guard let authenticator = busAuthenticator, let bytes = Secrets.unhex(mac) else { return false }
        return authenticator.verify(Array((context + "\u{0}" + text).utf8), mac: bytes)
    }

    /// The token whose secret hashes to `hash`, from the cluster's cache in Redis (PostgreSQL store
    /// in cluster mode, while Redis answers), else from the store — which then fills the Redis level.
    func lookUpToken(hash: [UInt8]) async throws -> TokenRecord? {
        let sharedLevel = storeIsShared && !sharedHealth.isDegraded && !sharedTokenLevelStale && pendingTokenInvalidations.isEmpty
            ? cluster : nil
        let hex = Secrets.hex(hash)
        if let sharedLevel {
            do {
                if let cached = try await sharedLevel.cachedToken(secretHashHex: hex) {
                    if verifyRedisMAC("tokcache:" + hex, cached.json, mac: cached.mac),
                        let token = try? JSONDecoder().decode(TokenRecord.self, from: Data(cached.json.utf8)),
                        Secrets.constantTimeEqual(token.secretHash, hash) {
                        tokenLookups.shared += 1
                        metrics.tokenLookup(level: "shared")
                        return token
                    }
                    metrics.busMessage(rejected: "token_cache_entry")
                    logger.warning("ignoring a token cache entry in Redis that is not signed by this cluster", metadata: ["key": "\(sharedLevel.keys.tokenCache(hex))"])
                }
            } catch {
                logger.debug("token cache in Redis unavailable; reading the store", metadata: ["error": "\(error)"])
            }
        }
        tokenLookups.store += 1
        metrics.tokenLookup(level: "store")
        var found = try await storeCall { try await $0.token(secretHash: hash) }
        if found == nil, cluster != nil, !storeIsShared {
            found = await sharedToken(hash: hash)
        }
        guard let sharedLevel, var token = found, token.revokedAt == nil else { return found }
        let now = clock.wallMilliseconds()
        let ttl = min(configuration.tokenCacheSharedTTLMilliseconds, token.expiresAt.map { $0 - now } ?? .max)
        guard ttl > 0, let json = try? Self.encode(token), let mac = redisMAC("tokcache:" + hex, json) else { return token }
        do {
            if try await !sharedLevel.cacheToken(secretHashHex: hex, id: token.id, json: json, mac: mac, ttlMs: ttl) {
                // The cluster's revocation set has it but the database does not: a revocation that
                // stopped half-way (Redis is written first). Finish it.
                token.revokedAt = now
                _ = try? await store.revokeToken(id: token.id, at: now)
                evictToken(id: token.id)
                logger.notice("finished a half-done revocation", metadata: ["token": "\(token.id)"])
            }
        } catch {
            logger.debug("could not fill the token cache in Redis", metadata: ["error": "\(error)"])
        }
        return token
    }

    /// Applies token changes announced by the database to the Redis level (every node does it; it is
    /// idempotent): a revoked or deleted token joins the revocation set and loses its entry; an edited
    /// one loses its entry. While some are pending (Redis unreachable), lookups skip the Redis level.
    func applyTokenInvalidations() async {
        guard storeIsShared, let cluster else {
            pendingTokenInvalidations = [:]
            return
        }
        for (hex, change) in pendingTokenInvalidations {
            do {
                if change.revoked {
                    try await cluster.revokeToken(id: change.id, secretHashHex: hex)
                    appliedRevocations.insert(change.id)
                } else {
                    try await cluster.forgetCachedToken(secretHashHex: hex)
                }
                pendingTokenInvalidations[hex] = nil
            } catch {
                logger.warning("could not clear a changed token from the Redis cache; retrying", metadata: ["token": "\(change.id)", "error": "\(error)"])
                return
            }
        }
    }

    /// Drops the whole Redis token level (the change feed may have missed changes); until it
    /// succeeds, lookups skip it.
    func flushSharedTokenLevel() async {
        guard let cluster, sharedTokenLevelStale else { return }
        do {
            let dropped = try await cluster.flushTokenCache()
            sharedTokenLevelStale = false
            logger.notice("flushed the token cache in Redis", metadata: ["entries": "\(dropped)"])
        } catch {
            logger.warning("could not flush the token cache in Redis; lookups skip it meanwhile", metadata: ["error": "\(error)"])
        }
    }

    /// How token lookups that missed the local cache were served (for tests and `/v1/cluster`).
    public func tokenLookupCounts() -> (shared: Int, store: Int) {
        (tokenLookups.shared, tokenLookups.store)
    }

    // MARK: Shared audit spool

    /// Spools `input` while the store is unreachable: in the cluster's Redis stream when Redis
    /// answers and this node's local spool is empty, else in the local SQLite spool (which then
    /// drains only after this node's events in the stream, so its events stay in order).
    func spoolAudit(_ input: AuditEventInput, spool: AuditSpool) async throws -> AuditAppendResult {
        if let cluster, !sharedHealth.isDegraded, auditSpoolDepth == 0, let json = try? Self.encode(input),
            let mac = redisMAC("audit", json) {
            do {
                let outcome = try await cluster.spoolAudit(
                    eventID: input.id, digest: PostgresStore.contentDigest(input), json: json, mac: mac)
                switch outcome {
                case .conflict:
                    throw CoordinatorError(.auditIDConflict, "audit event \(input.id) is already buffered with different content")
                case .duplicate:
                    metrics.auditAppended(duplicate: true)
                    return AuditAppendResult(seq: 0, duplicate: true, sameContent: true, buffered: true)
                case .appended:
                    if ownSharedSpoolEntries == 0 { logger.warning("store unreachable: buffering audit events in the cluster's spool (Redis stream)") }
                    ownSharedSpoolEntries += 1
                    sharedSpoolDepth += 1
                    metrics.auditSpoolDepth(shared: sharedSpoolDepth)
                    metrics.auditAppended(duplicate: false)
                    return AuditAppendResult(seq: 0, duplicate: false, sameContent: true, buffered: true)
                }
            } catch let error as RedisError {
                logger.warning("the cluster's audit spool is unreachable; buffering locally", metadata: ["error": "\(error)"])
            }
        }
        return try await spoolLocally(input, spool: spool)
    }

    /// Moves events from the cluster's spool into the store, oldest first, while this node holds the
    /// drain lock (renewed at least every second, a fifth of its TTL; when it is lost the drain stops): first
    /// entries another drainer read but never acknowledged (it died), then new ones. Idempotent by
    /// event id; an entry that is not a signed audit event, or that the store refuses for good, goes
    /// to the dead-letter stream.
    /// Spooled events written to the store per statement (one commit) while draining.
    static let spoolDrainChunk = 64

    func drainSharedAuditSpool() async {
        guard let cluster, auditSpool != nil, !shuttingDown, !drainingSharedSpool, !sharedHealth.isDegraded else { return }
        drainingSharedSpool = true
        defer { drainingSharedSpool = false }
        do {
            (sharedSpoolDepth, ownSharedSpoolEntries) = try await cluster.auditSpoolLength()
            metrics.auditSpoolDepth(shared: sharedSpoolDepth)
            guard sharedSpoolDepth > 0 else { return }
            guard try await cluster.acquireSpoolDrainLock(ttlMs: Self.spoolDrainLockTTLMs) else { return }
        } catch {
            return
        }
        var drained = 0
        defer {
            if drained > 0 {
                logger.notice("cluster audit spool drained into the store", metadata: ["events": "\(drained)", "left": "\(sharedSpoolDepth)"])
            }
        }
        let decoder = JSONDecoder()
        var lockRenewedAt = clock.monotonicNow()
        while !shuttingDown {
            let entries: [ClusterLink.SpoolEntry]
            do {
                entries = try await cluster.nextSpoolEntries(count: 128)
            } catch {
                logger.warning("could not read the cluster's audit spool", metadata: ["error": "\(error)"])
                return
            }
            if entries.isEmpty {
                await cluster.releaseSpoolDrainLock()
                if let (total, mine) = try? await cluster.auditSpoolLength() { (sharedSpoolDepth, ownSharedSpoolEntries) = (total, mine) }
                metrics.auditSpoolDepth(shared: sharedSpoolDepth)
                return
            }
            // Entries go to the store in chunks (one commit each, in stream order); an entry that is
            // not a signed audit event of this cluster goes to the dead-letter stream on the way.
            var next = 0
            while next < entries.count {
                do {
                    // Still the drainer? The lock is renewed at least every second (a fifth of its TTL), so
                    // a drainer that stalled past the TTL stops here before touching another entry.
                    guard !shuttingDown, try await renewSpoolDrainLock(&lockRenewedAt, cluster: cluster) else { return }
                    var chunk: [(entry: ClusterLink.SpoolEntry, event: AuditEventInput)] = []
                    while next < entries.count, chunk.count < Self.spoolDrainChunk {
                        let entry = entries[next]
                        next += 1
                        guard let json = entry.eventJSON, let mac = entry.mac, verifyRedisMAC("audit", json, mac: mac),
                            let event = try? decoder.decode(AuditEventInput.self, from: Data(json.utf8)),
                            event.id == entry.eventID, ResourceName.isValid(event.nodeID),
                            (try? JSONSerialization.jsonObject(with: Data(event.detailJSON.utf8))) is [String: Any]
                        else {
                            try await deadLetter(entry, reason: "not a signed audit event of this cluster", cluster: cluster)
                            continue
                        }
                        chunk.append((entry, event))
                    }
                    guard !chunk.isEmpty else { continue }
                    var results: [AuditAppendResult?]
                    do {
                        results = try await store.appendAudit(batch: chunk.map(\.event))
                    } catch let error as StoreError where error.code == .unavailable || error.code == .closed {
                        // The store failed again: the entries stay pending, claimed first next time.
                        return
                    } catch is StoreError {
                        // Refused for good somewhere in the chunk (nothing of it was stored: one statement):
                        // one by one, to set the refused ones aside.
                        results = []
                        for item in chunk {
                            guard try await renewSpoolDrainLock(&lockRenewedAt, cluster: cluster) else { return }
                            do {
                                results.append(try await store.appendAudit(item.event))
                            } catch let error as StoreError where error.code != .unavailable && error.code != .closed {
                                try await deadLetter(item.entry, reason: "refused by the store: \(error)", cluster: cluster)
                                results.append(nil)
                            } catch {
                                return
                            }
                        }
                    } catch {
                        return
                    }
                    for (item, result) in zip(chunk, results) {
                        guard let result else { continue }
                        guard try await renewSpoolDrainLock(&lockRenewedAt, cluster: cluster) else { return }
                        noteSpoolConflict(item.event, result)
                        try await cluster.acknowledgeSpoolEntry(item.entry)
                        drained += 1
                        sharedSpoolDepth = max(0, sharedSpoolDepth - 1)
                        if item.entry.node == nodeID { ownSharedSpoolEntries = max(0, ownSharedSpoolEntries - 1) }
                    }
                } catch {
                    logger.warning("the cluster's audit spool became unreachable while draining", metadata: ["error": "\(error)"])
                    return
                }
            }
            metrics.auditSpoolDepth(shared: sharedSpoolDepth)
        }
    }

    /// Renews the spool's drain lock when a second has passed since `renewedAt`; false when this node
    /// no longer holds it (a drainer that stalled past the TTL stops before touching another entry).
    private func renewSpoolDrainLock(_ renewedAt: inout Instant, cluster: ClusterLink) async throws -> Bool {
        guard clock.monotonicNow() - renewedAt >= .seconds(1) else { return true }
        guard try await cluster.acquireSpoolDrainLock(ttlMs: Self.spoolDrainLockTTLMs) else { return false }
        renewedAt = clock.monotonicNow()
        return true
    }

    /// Moves a spool entry to the dead-letter stream (kept for an operator) and counts it.
    private func deadLetter(_ entry: ClusterLink.SpoolEntry, reason: String, cluster: ClusterLink) async throws {
        try await cluster.deadLetterSpoolEntry(entry, reason: reason)
        metrics.auditSpoolDeadLetter()
        sharedSpoolDepth = max(0, sharedSpoolDepth - 1)
        logger.error("an entry of the cluster's audit spool was moved to the dead-letter stream", metadata: [
            "entry": "\(entry.streamID)", "reason": "\(reason)", "stream": "\(cluster.keys.auditSpoolDeadLetters)"])
    }

    /// Audit events waiting in the cluster's spool, as last seen by this node.
    public var sharedBufferedAuditEvents: Int { sharedSpoolDepth }

    /// One round of the PostgreSQL store's background work (every 200 ms): drain the cluster's spool,
    /// then the local one (which holds this node's later events), and retry what the change feed
    /// could not finish.
    func postgresTick() async {
        await drainSharedAuditSpool()
        await drainAuditSpool()
        if !pendingReloads.isEmpty { await reloadPendingDocuments() }
        if !pendingTokenInvalidations.isEmpty { await applyTokenInvalidations() }
        if sharedTokenLevelStale { await flushSharedTokenLevel() }
        if storeStatus.status != "ok", postgres?.snapshot().primary != nil {
            // A primary is known again: confirm with one cheap read, so the store's status (GET
            // /v1/cluster) recovers without waiting for traffic.
            _ = try? await storeCall { try await $0.setting(SettingKey.nodeID) }
        }
    }
}
