import SQLiteClient

/// The ``CoordinatorStore`` over one SQLite file (pilot mode).
///
/// One ``SQLiteConnection`` — a dedicated thread — does all the work, so no call blocks Swift's
/// cooperative pool. The file is in WAL mode with `synchronous=FULL` by default: a method that
/// returns has fsynced its write. Concurrent ``appendAudit(_:)`` calls are group-committed: every
/// append waiting when the connection gets to them (up to `maxAuditBatch`) is written in one
/// transaction with one fsync, and each caller resumes after that `COMMIT`.
public final class SQLiteStore: CoordinatorStore {
    /// When SQLite waits for the disk (`PRAGMA synchronous`).
    public enum Synchronous: Sendable {
        /// fsync on every commit: acknowledged writes survive power loss. The default.
        case full
        /// No fsync on commit in WAL mode: survives a process crash, may lose the last commits on
        /// power loss.
        case normal
    }

    /// The schema version this build creates and understands.
    public static let schemaVersion: Int64 = 1

    static let migrations: [SQLiteMigration] = [
        SQLiteMigration(
            version: 1,
            sql: """
                CREATE TABLE tokens (
                    id TEXT NOT NULL PRIMARY KEY,
                    secret_hash BLOB NOT NULL UNIQUE,
                    subject TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER
                ) STRICT;
                CREATE TABLE documents (
                    kind TEXT NOT NULL,
                    name TEXT NOT NULL,
                    json TEXT NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (kind, name)
                ) STRICT, WITHOUT ROWID;
                CREATE TABLE settings (
                    key TEXT NOT NULL PRIMARY KEY,
                    value TEXT NOT NULL
                ) STRICT, WITHOUT ROWID;
                CREATE TABLE audit_events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL UNIQUE,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    resource TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    recorded_at INTEGER NOT NULL,
                    node_id TEXT NOT NULL
                ) STRICT;
                """)
    ]

    /// The database file.
    public let path: String
    private let connection: SQLiteConnection
    private let audit: SQLiteBatcher<AuditEventInput, AuditAppendResult>

    private init(path: String, connection: SQLiteConnection, maxAuditBatch: Int) {
        self.path = path
        self.connection = connection
        self.audit = SQLiteBatcher(connection: connection, maxBatchSize: maxAuditBatch) { db, events in
            try events.map { try Self.append($0, db) }
        }
    }

    /// Opens (creating if needed, with its parent directory) the store at `path` and migrates its
    /// schema.
    ///
    /// Fails with `StoreError.unusable` if the file is not an SQLite database, is corrupt, or has a
    /// schema version newer than ``schemaVersion``; with `.backend` for other failures.
    ///
    /// - Parameters:
    ///   - synchronous: Durability of commits; `.full` by default.
    ///   - maxAuditBatch: The most audit events committed in one transaction.
    public static func open(path: String, synchronous: Synchronous = .full, maxAuditBatch: Int = 512) async throws
        -> SQLiteStore
    {
        let configuration = SQLiteConnection.Configuration(
            synchronous: synchronous == .full ? .full : .normal, createParentDirectory: true)
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(path: path, configuration: configuration)
        } catch {
            throw storeError(error)
        }
        do {
            let migrations = Self.migrations
            try await connection.withConnection { db in
                _ = try SQLiteMigrator.migrate(db, migrations)
            }
        } catch {
            await connection.close()
            throw storeError(error)
        }
        return SQLiteStore(path: path, connection: connection, maxAuditBatch: maxAuditBatch)
    }

    /// How many audit transactions have committed (each one fsync, holding one or more events).
    public var auditCommitCount: Int { audit.committedBatchCount }

    // MARK: Tokens

    private static let tokenColumns = "id, secret_hash, subject, policy, created_at, expires_at, revoked_at"

    public func insertToken(_ token: TokenRecord) async throws {
        try await run { db in
            try db.run(
                "INSERT INTO tokens(\(Self.tokenColumns)) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    .text(token.id), .blob(token.secretHash), .text(token.subject), .text(token.policy),
                    .integer(token.createdAt), token.expiresAt.sqliteValue, token.revokedAt.sqliteValue,
                ])
        }
    }

    public func token(secretHash: [UInt8]) async throws -> TokenRecord? {
        try await run { db in
            try db.queryFirst("SELECT \(Self.tokenColumns) FROM tokens WHERE secret_hash = ?", [.blob(secretHash)])
                .map(Self.token(from:))
        }
    }

    public func token(id: String) async throws -> TokenRecord? {
        try await run { db in
            try db.queryFirst("SELECT \(Self.tokenColumns) FROM tokens WHERE id = ?", [.text(id)])
                .map(Self.token(from:))
        }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await run { db in
            try db.query("SELECT \(Self.tokenColumns) FROM tokens ORDER BY created_at, rowid").map(Self.token(from:))
        }
    }

    public func revokeToken(id: String, at: Int64) async throws -> TokenRecord? {
        try await run { db in
            try db.transaction { db in
                try db.run(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [.integer(at), .text(id)])
                return try db.queryFirst("SELECT \(Self.tokenColumns) FROM tokens WHERE id = ?", [.text(id)])
                    .map(Self.token(from:))
            }
        }
    }

    private static func token(from row: SQLiteRow) throws(SQLiteError) -> TokenRecord {
        TokenRecord(
            id: try row.get(0), secretHash: try row.get(1), subject: try row.get(2), policy: try row.get(3),
            createdAt: try row.get(4), expiresAt: try row.get(5), revokedAt: try row.get(6))
    }

    // MARK: Documents

    public func putDocument(kind: DocumentKind, name: String, json: String, updatedAt: Int64) async throws {
        try await run { db in
            try db.run(
                """
                INSERT INTO documents(kind, name, json, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT(kind, name) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at
                """, [.text(kind.rawValue), .text(name), .text(json), .integer(updatedAt)])
        }
    }

    public func documents(kind: DocumentKind) async throws -> [StoredDocument] {
        try await run { db in
            try db.query(
                "SELECT name, json, updated_at FROM documents WHERE kind = ? ORDER BY name", [.text(kind.rawValue)]
            )
                .map { row throws(SQLiteError) in
                    StoredDocument(name: try row.get(0), json: try row.get(1), updatedAt: try row.get(2))
                }
        }
    }

    public func deleteDocument(kind: DocumentKind, name: String) async throws -> Bool {
        try await run { db in
            try db.run("DELETE FROM documents WHERE kind = ? AND name = ?", [.text(kind.rawValue), .text(name)]) > 0
        }
    }

    // MARK: Settings

    public func setting(_ key: String) async throws -> String? {
        try await run { db in
            try db.queryFirst("SELECT value FROM settings WHERE key = ?", [.text(key)])?.get(0)
        }
    }

    public func setSetting(_ key: String, value: String) async throws {
        try await run { db in
            try db.run(
                "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [.text(key), .text(value)])
        }
    }

    // MARK: Audit

    public func appendAudit(_ event: AuditEventInput) async throws -> AuditAppendResult {
        do {
            return try await audit.submit(event)
        } catch {
            throw Self.storeError(error)
        }
    }

    public func auditEvents(after: Int64, limit: Int) async throws -> [AuditEvent] {
        guard limit > 0 else {
            try await run { _ in }  // still fails with `.closed` after close
            return []
        }
        return try await run { db in
            try db.query(
                """
                SELECT seq, event_id, actor, action, resource, outcome, detail, recorded_at, node_id
                FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?
                """, [.integer(after), .integer(Int64(limit))]
            ).map { row throws(SQLiteError) in
                AuditEvent(
                    seq: try row.get(0),
                    event: AuditEventInput(
                        id: try row.get(1), actor: try row.get(2), action: try row.get(3), resource: try row.get(4),
                        outcome: try row.get(5), detailJSON: try row.get(6), recordedAt: try row.get(7),
                        nodeID: try row.get(8)))
            }
        }
    }

    /// Writes one event of a batch (inside the batch's transaction, on the connection's thread).
    private static func append(_ event: AuditEventInput, _ db: SQLiteDatabaseHandle) throws -> AuditAppendResult {
        let inserted = try db.run(
            """
            INSERT INTO audit_events(event_id, actor, action, resource, outcome, detail, recorded_at, node_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING
            """,
            [
                .text(event.id), .text(event.actor), .text(event.action), .text(event.resource), .text(event.outcome),
                .text(event.detailJSON), .integer(event.recordedAt), .text(event.nodeID),
            ])
        if inserted == 1 {
            return AuditAppendResult(seq: db.lastInsertRowID, duplicate: false, sameContent: true)
        }
        guard
            let row = try db.queryFirst(
                "SELECT seq, actor, action, resource, outcome, detail FROM audit_events WHERE event_id = ?",
                [.text(event.id)])
        else {
            throw StoreError(.backend, "audit event \(event.id) was neither inserted nor found")
        }
        let same =
            try row.get(1) == event.actor && row.get(2) == event.action && row.get(3) == event.resource
            && row.get(4) == event.outcome && row.get(5) == event.detailJSON
        return AuditAppendResult(seq: try row.get(0), duplicate: true, sameContent: same)
    }

    // MARK: Lifecycle

    public func close() async throws {
        await connection.close()
    }

    // MARK: Plumbing

    /// Runs `body` on the connection's thread, mapping failures to `StoreError`.
    @discardableResult
    private func run<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabaseHandle) throws -> T) async throws -> T {
        do {
            return try await connection.withConnection(body)
        } catch {
            throw Self.storeError(error)
        }
    }

    /// The one mapping from client errors to `StoreError`.
    static func storeError(_ error: any Error) -> StoreError {
        if let error = error as? StoreError { return error }
        guard let error = error as? SQLiteError else { return StoreError(.backend, "\(error)") }
        switch error.code {
        case .uniqueViolation: return StoreError(.conflict, error.message)
        case .closed: return StoreError(.closed, "the store is closed")
        case .notADatabase, .corrupt, .schemaTooNew, .cannotOpen: return StoreError(.unusable, error.message)
        default: return StoreError(.backend, "\(error.message) (sqlite code \(error.extendedResultCode))")
        }
    }
}
