/// What the node keeps durably: tokens, limit policies, breaker configurations, settings and the
/// audit log. SQLite implements it in pilot mode; PostgreSQL will implement the same contract.
///
/// Every method is safe to call from any task. Implementations never block Swift's cooperative
/// thread pool: blocking work runs on threads the store owns. A method that returns has made its
/// write durable (an acknowledged write survives `kill -9` of the process).
public protocol CoordinatorStore: Sendable {
    // MARK: Tokens

    /// Stores a new token. Fails with `StoreError.conflict` if the id or the secret hash exists.
    func insertToken(_ token: TokenRecord) async throws
    /// The token whose secret hashes to `secretHash`, revoked or not, or `nil`.
    func token(secretHash: [UInt8]) async throws -> TokenRecord?
    /// The token with `id`, or `nil`.
    func token(id: String) async throws -> TokenRecord?
    /// Every token, oldest first.
    func tokens() async throws -> [TokenRecord]
    /// Marks the token revoked at `at` (milliseconds since 1970) unless it already is (the first
    /// revocation time is kept). Returns the token as stored afterwards, or `nil` if unknown.
    func revokeToken(id: String, at: Int64) async throws -> TokenRecord?

    // MARK: Named JSON documents (limit policies, breaker configurations)

    /// Inserts or replaces the document `name` of `kind`.
    func putDocument(kind: DocumentKind, name: String, json: String, updatedAt: Int64) async throws
    /// Every document of `kind`, ordered by name.
    func documents(kind: DocumentKind) async throws -> [StoredDocument]
    /// Deletes the document; returns whether it existed.
    func deleteDocument(kind: DocumentKind, name: String) async throws -> Bool

    // MARK: Settings (admin token hash, node id, …)

    /// The value stored under `key`, or `nil`.
    func setting(_ key: String) async throws -> String?
    /// Stores `value` under `key`, replacing what was there.
    func setSetting(_ key: String, value: String) async throws

    // MARK: Audit log

    /// Appends `event`, idempotent by `event.id`: a second append of the same id stores nothing and
    /// reports the first one's sequence number. Concurrent appends are committed in groups.
    func appendAudit(_ event: AuditEventInput) async throws -> AuditAppendResult
    /// Appends `events` in this order (each idempotent by id, as `appendAudit(_:)`), committed together
    /// where the store can. On an error some may already be stored. The default appends one by one.
    func appendAudit(batch events: [AuditEventInput]) async throws -> [AuditAppendResult]
    /// Up to `limit` events whose sequence number is greater than `after`, in sequence order.
    func auditEvents(after: Int64, limit: Int) async throws -> [AuditEvent]

    /// Flushes and closes. Calls after `close` fail with `StoreError.closed`.
    func close() async throws
}

extension CoordinatorStore {
    /// One by one, in order.
    public func appendAudit(batch events: [AuditEventInput]) async throws -> [AuditAppendResult] {
        var results: [AuditAppendResult] = []
        results.reserveCapacity(events.count)
        for event in events { results.append(try await appendAudit(event)) }
        return results
    }
}

/// The kinds of named JSON document the store keeps.
public enum DocumentKind: String, Sendable, CaseIterable {
    /// A rate-limit policy (`LimitPolicy` as JSON).
    case limitPolicy = "limit_policy"
    /// A circuit-breaker configuration (`BreakerConfig` as JSON).
    case breakerConfig = "breaker_config"
}

/// A named JSON document as stored.
public struct StoredDocument: Sendable, Equatable {
    public var name: String
    public var json: String
    /// Milliseconds since 1970.
    public var updatedAt: Int64

    public init(name: String, json: String, updatedAt: Int64) {
        self.name = name
        self.json = json
        self.updatedAt = updatedAt
    }
}

/// A bearer token as stored: never the secret, only its SHA-256.
public struct TokenRecord: Sendable, Equatable, Codable {
    /// Public identifier (`tok_` + 22 base64url characters); safe to log and list.
    public var id: String
    /// SHA-256 of the secret (32 bytes).
    public var secretHash: [UInt8]
    /// Who the token was issued to.
    public var subject: String
    /// The limit policy that applies to requests carrying this token.
    public var policy: String
    /// Milliseconds since 1970.
    public var createdAt: Int64
    /// Milliseconds since 1970; `nil` means it never expires.
    public var expiresAt: Int64?
    /// Milliseconds since 1970; `nil` while the token is valid.
    public var revokedAt: Int64?

    public init(
        id: String, secretHash: [UInt8], subject: String, policy: String, createdAt: Int64,
        expiresAt: Int64?, revokedAt: Int64?
    ) {
        self.id = id
        self.secretHash = secretHash
        self.subject = subject
        self.policy = policy
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }
}

/// An audit event as submitted.
public struct AuditEventInput: Sendable, Equatable, Codable {
    /// Client-chosen unique id (a UUID); the idempotency key.
    public var id: String
    public var actor: String
    public var action: String
    public var resource: String
    public var outcome: String
    /// A JSON object, as compact text.
    public var detailJSON: String
    /// Milliseconds since 1970, set by the node that accepted the event.
    public var recordedAt: Int64
    /// The node that accepted it.
    public var nodeID: String

    public init(
        id: String, actor: String, action: String, resource: String, outcome: String, detailJSON: String,
        recordedAt: Int64, nodeID: String
    ) {
        self.id = id
        self.actor = actor
        self.action = action
        self.resource = resource
        self.outcome = outcome
        self.detailJSON = detailJSON
        self.recordedAt = recordedAt
        self.nodeID = nodeID
    }
}

/// An audit event as stored, with its position in the log.
public struct AuditEvent: Sendable, Equatable {
    /// Position in the log: strictly increasing in commit order, never reused.
    public var seq: Int64
    public var event: AuditEventInput

    public init(seq: Int64, event: AuditEventInput) {
        self.seq = seq
        self.event = event
    }
}

/// What an audit append did.
public struct AuditAppendResult: Sendable, Equatable {
    /// The event's position in the log.
    public var seq: Int64
    /// `true` when an event with this id was already stored (nothing new was written).
    public var duplicate: Bool
    /// For a duplicate: whether the stored event has the same actor, action, resource, outcome and
    /// detail as the one submitted. A client that reuses an id for different content gets a conflict.
    public var sameContent: Bool
    /// `true` when the store was unreachable and the event was spooled locally (durably) instead; it
    /// reaches the store, in order, when the store is back, and has no `seq` until then (0).
    public var buffered: Bool

    public init(seq: Int64, duplicate: Bool, sameContent: Bool, buffered: Bool = false) {
        self.seq = seq
        self.duplicate = duplicate
        self.sameContent = sameContent
        self.buffered = buffered
    }
}

/// A store failure with a stable code.
public struct StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable machine-readable codes.
    public enum Code: String, Sendable {
        /// A unique constraint was violated.
        case conflict
        /// The store was closed.
        case closed
        /// The database file is corrupt, unreadable or of a newer schema version.
        case unusable
        /// Any other backend failure (I/O error, disk full, busy past the timeout).
        case backend
        /// The backend cannot be reached right now (connection refused or lost, primary demoted);
        /// the operation may be retried. Idempotent writes (audit appends by id) are safe to retry.
        case unavailable
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "store \(code.rawValue): \(message)" }
}
