import Foundation
import SQLiteClient

/// Audit events acknowledged while the PostgreSQL store was unreachable: a local SQLite file
/// (WAL, `synchronous = FULL`, so an acknowledged event survives `kill -9` and power loss) in the
/// node's data directory, drained in order into the store when it is back. Idempotent by event id,
/// like the store: an id spooled twice is stored once.
final class AuditSpool: Sendable {
    /// One spooled event and its position (spool order = acknowledgement order).
    struct Entry: Sendable, Equatable {
        var position: Int64
        var event: AuditEventInput
    }

    /// What `append` did.
    struct Appended: Sendable, Equatable {
        /// The id was already spooled.
        var duplicate: Bool
        /// For a duplicate: whether the spooled event has the same content.
        var sameContent: Bool
    }

    private let connection: SQLiteConnection

    private init(connection: SQLiteConnection) {
        self.connection = connection
    }

    static let migrations = [
        SQLiteMigration(version: 1, sql: """
            CREATE TABLE spool (
                position INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                actor TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL,
                detail TEXT NOT NULL, recorded_at INTEGER NOT NULL, node_id TEXT NOT NULL
            );
            """),
        // Events the store refused for good (not for being unreachable): kept for an operator.
        SQLiteMigration(version: 2, sql: """
            CREATE TABLE dead_letters (
                position INTEGER PRIMARY KEY, id TEXT NOT NULL,
                actor TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL,
                detail TEXT NOT NULL, recorded_at INTEGER NOT NULL, node_id TEXT NOT NULL,
                reason TEXT NOT NULL
            );
            """),
    ]

    /// Opens (creating) the spool at `path`.
    static func open(path: String) async throws -> AuditSpool {
        let connection = try await SQLiteConnection.open(path: path)
        do {
            _ = try await connection.withConnection { db in try SQLiteMigrator.migrate(db, migrations) }
        } catch {
            await connection.close()
            throw StoreError(.unusable, "audit spool \(path): \(error)")
        }
        return AuditSpool(connection: connection)
    }

    /// Spools `event` durably (returns once it is on disk).
    func append(_ event: AuditEventInput) async throws -> Appended {
        try await connection.withConnection { db in
            try db.transaction { db in
                if let row = try db.queryFirst(
                    "SELECT actor, action, resource, outcome, detail FROM spool WHERE id = ?", [.text(event.id)])
                {
                    let same = try row.get(0, as: String.self) == event.actor && row.get(1, as: String.self) == event.action
                        && row.get(2, as: String.self) == event.resource && row.get(3, as: String.self) == event.outcome
                        && row.get(4, as: String.self) == event.detailJSON
                    return Appended(duplicate: true, sameContent: same)
                }
                _ = try db.run(
                    "INSERT INTO spool (id, actor, action, resource, outcome, detail, recorded_at, node_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [.text(event.id), .text(event.actor), .text(event.action), .text(event.resource), .text(event.outcome),
                     .text(event.detailJSON), .integer(event.recordedAt), .text(event.nodeID)])
                return Appended(duplicate: false, sameContent: true)
            }
        }
    }

    /// The oldest `limit` entries, in spool order.
    func oldest(limit: Int) async throws -> [Entry] {
        try await connection.withConnection { db in
            try db.query(
                "SELECT position, id, actor, action, resource, outcome, detail, recorded_at, node_id FROM spool ORDER BY position LIMIT ?",
                [.integer(Int64(limit))]
            ).map { row throws(SQLiteError) in
                Entry(position: try row.get(0), event: AuditEventInput(
                    id: try row.get(1), actor: try row.get(2), action: try row.get(3), resource: try row.get(4),
                    outcome: try row.get(5), detailJSON: try row.get(6), recordedAt: try row.get(7), nodeID: try row.get(8)))
            }
        }
    }

    /// Removes every entry up to and including `position` (they are in the store now), in one
    /// transaction: one sync for a whole drained batch. Returns how many were removed.
    @discardableResult
    func removeThrough(position: Int64) async throws -> Int {
        try await connection.withConnection { db in
            try db.run("DELETE FROM spool WHERE position <= ?", [.integer(position)])
        }
    }

    /// Moves the entry at `position` to the dead-letter table (the store refused it for good), in one
    /// transaction: it stops blocking the spool and is kept for an operator.
    func moveToDeadLetters(position: Int64, reason: String) async throws {
        try await connection.withConnection { db in
            try db.transaction { db in
                _ = try db.run(
                    """
                    INSERT INTO dead_letters (position, id, actor, action, resource, outcome, detail, recorded_at, node_id, reason)
                    SELECT position, id, actor, action, resource, outcome, detail, recorded_at, node_id, ? FROM spool WHERE position = ?
                    """, [.text(reason), .integer(position)])
                _ = try db.run("DELETE FROM spool WHERE position = ?", [.integer(position)])
            }
        }
    }

    /// How many events wait.
    func count() async throws -> Int {
        try await connection.withConnection { db in
            try db.queryFirst("SELECT count(*) FROM spool")?.get(0, as: Int64.self)
        }.map { Int($0) } ?? 0
    }

    /// Closes the file.
    func close() async {
        await connection.close()
    }
}
