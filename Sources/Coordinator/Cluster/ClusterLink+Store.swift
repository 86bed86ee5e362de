import RedisClient

/// What Redis does for the PostgreSQL store in cluster mode: the second level of the token cache,
/// and the shared audit spool (a stream drained through a consumer group).
extension ClusterLink {
    static let tokenCacheGetScript = RedisScript(ClusterScripts.tokenCacheGet)
    static let tokenCacheFillScript = RedisScript(ClusterScripts.tokenCacheFill)
    static let tokenRevokeScript = RedisScript(ClusterScripts.tokenRevoke)
    static let auditSpoolAppendScript = RedisScript(ClusterScripts.auditSpoolAppend)
    static let auditSpoolAckScript = RedisScript(ClusterScripts.auditSpoolAck)
    static let lockAcquireScript = RedisScript(ClusterScripts.lockAcquire)
    static let lockReleaseScript = RedisScript(ClusterScripts.lockRelease)
    /// The consumer group every node drains the shared audit spool through.
    public static let auditSpoolGroup = "drainers"

    // MARK: Token cache, second level

    /// The cached record (JSON) of the token whose secret hashes to `secretHashHex` and its MAC,
    /// unless absent or revoked.
    public func cachedToken(secretHashHex: String) async throws(RedisError) -> (json: String, mac: String)? {
        let reply = try await redis.evalSHA(
            Self.tokenCacheGetScript, keys: [keys.tokenCache(secretHashHex), keys.revokedTokens], arguments: [],
            deadline: deadline)
        guard let items = reply.array, items.count == 2, let json = items[0].string, let mac = items[1].string else { return nil }
        return (json, mac)
    }

    /// Caches a token record (with its MAC) for `ttlMs`; returns false (and caches nothing) when the
    /// token id is in the cluster's revocation set.
    public func cacheToken(secretHashHex: String, id: String, json: String, mac: String, ttlMs: Int64) async throws(RedisError) -> Bool {
        try await redis.evalSHA(
            Self.tokenCacheFillScript, keys: [keys.tokenCache(secretHashHex), keys.revokedTokens],
            arguments: [id, json, String(max(1, ttlMs)), mac], deadline: deadline
        ).integer == 1
    }

    /// Drops the cached record of one token (it changed in the database).
    public func forgetCachedToken(secretHashHex: String) async throws(RedisError) {
        _ = try await redis.send(["DEL", keys.tokenCache(secretHashHex)], deadline: deadline * 10)
    }

    /// Drops every cached token record of the cluster (changes may have been missed); `SCAN` in
    /// batches, so Redis is never blocked. Returns how many entries were dropped.
    @discardableResult
    public func flushTokenCache() async throws(RedisError) -> Int {
        var cursor = "0"
        var dropped = 0
        repeat {
            let reply = try await redis.send(
                ["SCAN", cursor, "MATCH", keys.tokenCache("*"), "COUNT", "1000"], deadline: deadline * 10)
            guard let items = reply.array, items.count == 2, let next = items[0].string else {
                throw RedisError(code: .protocolError, message: "unexpected SCAN reply \(reply)")
            }
            let found = (items[1].array ?? []).compactMap(\.string)
            if !found.isEmpty {
                dropped += Int(try await redis.send(["UNLINK"] + found, deadline: deadline * 10).integer ?? 0)
            }
            cursor = next
        } while cursor != "0"
        return dropped
    }

    /// Adds the token to the revocation set and drops its cache entry, in one step.
    public func revokeToken(id: String, secretHashHex: String) async throws(RedisError) {
        _ = try await redis.evalSHA(
            Self.tokenRevokeScript, keys: [keys.tokenCache(secretHashHex), keys.revokedTokens], arguments: [id],
            deadline: deadline * 10)
    }

    // MARK: Shared audit spool

    /// What appending to the shared spool did.
    public enum SpoolAppend: Sendable, Equatable {
        case appended
        /// The id is already spooled with the same content (nothing written).
        case duplicate
        /// The id is already spooled with other content (nothing written).
        case conflict
    }

    /// One entry read from the shared spool.
    public struct SpoolEntry: Sendable, Equatable {
        /// The stream entry id (`ms-seq`).
        public var streamID: String
        /// The `id` field (the audit event id), if present.
        public var eventID: String?
        /// The `event` field (JSON), if present.
        public var eventJSON: String?
        /// The `mac` field (HMAC of the JSON with the cluster secret, hex), if present.
        public var mac: String?
        /// The `node` field (the node that spooled it), if present.
        public var node: String?
        /// Every field, as read (for the dead-letter stream).
        public var fields: [String]

        /// An entry as read from the stream.
        public init(streamID: String, eventID: String? = nil, eventJSON: String? = nil, mac: String? = nil, node: String? = nil, fields: [String]) {
            self.streamID = streamID
            self.eventID = eventID
            self.eventJSON = eventJSON
            self.mac = mac
            self.node = node
            self.fields = fields
        }
    }

    /// Appends an event (as JSON, with its MAC) to the shared spool, idempotent by `eventID` with
    /// `digest` as its content, and counts it as this node's.
    public func spoolAudit(eventID: String, digest: String, json: String, mac: String) async throws(RedisError) -> SpoolAppend {
        let reply = try await redis.evalSHA(
            Self.auditSpoolAppendScript, keys: [keys.auditSpool, keys.auditSpoolIDs, keys.auditSpoolByNode],
            arguments: [eventID, digest, json, mac, nodeID], deadline: deadline * 10)
        switch reply.integer {
        case 0: return .appended
        case 1: return .duplicate
        case 2: return .conflict
        default: throw RedisError(code: .protocolError, message: "unexpected spool append reply \(reply)")
        }
    }

    /// Entries in the shared spool (drained entries are deleted, so this is what waits), and how many
    /// of them this node spooled.
    public func auditSpoolLength() async throws(RedisError) -> (total: Int, mine: Int) {
        let total = try await redis.send(["XLEN", keys.auditSpool], deadline: deadline * 10).integer ?? 0
        let mine = try await redis.send(["HGET", keys.auditSpoolByNode, nodeID], deadline: deadline * 10).string.flatMap { Int($0) } ?? 0
        return (Int(total), max(0, mine))
    }

    /// Takes (or renews) the drain lock for `ttlMs`; returns whether this node holds it.
    public func acquireSpoolDrainLock(ttlMs: Int64) async throws(RedisError) -> Bool {
        try await redis.evalSHA(
            Self.lockAcquireScript, keys: [keys.auditSpoolLock], arguments: [nodeID, String(ttlMs)], deadline: deadline * 10
        ).integer == 1
    }

    /// Releases the drain lock if this node holds it.
    public func releaseSpoolDrainLock() async {
        _ = try? await redis.evalSHA(Self.lockReleaseScript, keys: [keys.auditSpoolLock], arguments: [nodeID], deadline: deadline * 10)
    }

    /// The next entries to drain, oldest first: first every entry some consumer read but never
    /// acknowledged (a node that died mid-drain; claimed for this node), then new ones.
    public func nextSpoolEntries(count: Int) async throws(RedisError) -> [SpoolEntry] {
        try await ensureSpoolGroup()
        let claimed = try await redis.send(
            ["XAUTOCLAIM", keys.auditSpool, Self.auditSpoolGroup, nodeID, "0", "0-0", "COUNT", String(count)],
            deadline: deadline * 10)
        let pending = Self.entries(claimed.array.flatMap { $0.count > 1 ? $0[1] : nil })
        if !pending.isEmpty { return pending }
        let fresh = try await redis.send(
            ["XREADGROUP", "GROUP", Self.auditSpoolGroup, nodeID, "COUNT", String(count), "STREAMS", keys.auditSpool, ">"],
            deadline: deadline * 10)
        // [[stream, [[id, [f, v, …]], …]]] or nil.
        return Self.entries(fresh.array?.first?.array.flatMap { $0.count > 1 ? $0[1] : nil })
    }

    /// Acknowledges and deletes a drained entry and forgets its event id.
    public func acknowledgeSpoolEntry(_ entry: SpoolEntry) async throws(RedisError) {
        _ = try await redis.evalSHA(
            Self.auditSpoolAckScript, keys: [keys.auditSpool, keys.auditSpoolIDs, keys.auditSpoolByNode],
            arguments: [Self.auditSpoolGroup, entry.streamID, entry.eventID ?? "", entry.node ?? ""], deadline: deadline * 10)
    }

    /// Moves an undecodable entry to the dead-letter stream (kept for an operator), then acknowledges it.
    public func deadLetterSpoolEntry(_ entry: SpoolEntry, reason: String) async throws(RedisError) {
        var command = ["XADD", keys.auditSpoolDeadLetters, "*", "source-id", entry.streamID, "reason", reason]
        var fields = entry.fields
        if fields.count % 2 == 1 { fields.append("") }
        command += fields.isEmpty ? ["fields", ""] : fields
        _ = try await redis.send(command, deadline: deadline * 10)
        try await acknowledgeSpoolEntry(entry)
    }

    /// Creates the consumer group (and the stream) if missing.
    func ensureSpoolGroup() async throws(RedisError) {
        do {
            _ = try await redis.send(["XGROUP", "CREATE", keys.auditSpool, Self.auditSpoolGroup, "0", "MKSTREAM"], deadline: deadline * 10)
        } catch where error.code == .server && error.message.hasPrefix("BUSYGROUP") {
            // Exists already.
        }
    }

    /// Decodes `[[id, [field, value, …]], …]`; entries whose data is gone (nil) are skipped.
    static func entries(_ reply: RedisReply?) -> [SpoolEntry] {
        guard let items = reply?.array else { return [] }
        return items.compactMap { item -> SpoolEntry? in
            guard let pair = item.array, pair.count == 2, let id = pair[0].string, let raw = pair[1].array else { return nil }
            let fields = raw.map { $0.string ?? "" }
            var entry = SpoolEntry(streamID: id, fields: fields)
            var index = 0
            while index + 1 < fields.count {
                switch fields[index] {
                case "id": entry.eventID = fields[index + 1]
                case "event": entry.eventJSON = fields[index + 1]
                case "mac": entry.mac = fields[index + 1]
                case "node": entry.node = fields[index + 1]
                default: break
                }
                index += 2
            }
            return entry
        }
    }
}
