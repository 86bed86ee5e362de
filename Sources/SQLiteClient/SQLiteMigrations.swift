import CSQLite3

/// One versioned schema change.
public struct SQLiteMigration: Sendable {
    /// The schema version this migration produces; versions start at 1 and strictly increase.
    public var version: Int64
    /// The statements to run (`;`-separated, no parameters).
    public var sql: String

    /// Creates a migration to `version`.
    public init(version: Int64, sql: String) {
        self.version = version
        self.sql = sql
    }
}

/// Applies versioned migrations recorded in `schema_migrations(version INTEGER PRIMARY KEY, applied_at)`.
public enum SQLiteMigrator {
    /// The highest version recorded in `schema_migrations` (0 for a new database).
    public static func currentVersion(_ db: SQLiteDatabaseHandle) throws(SQLiteError) -> Int64 {
        try createTable(db)
        return try db.queryFirst("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")?.get(0) ?? 0
    }

    /// Applies every migration newer than the database's version, in order, each in its own
    /// `BEGIN IMMEDIATE` transaction, and returns the versions applied.
    ///
    /// Fails with ``SQLiteError/Code/schemaTooNew`` (changing nothing) if the database's version is
    /// newer than the last migration given, and with ``SQLiteError/Code/misuse`` if the versions are
    /// not positive and strictly increasing.
    @discardableResult
    public static func migrate(_ db: SQLiteDatabaseHandle, _ migrations: [SQLiteMigration]) throws -> [Int64] {
        var previous: Int64 = 0
        for migration in migrations {
            guard migration.version > previous else {
                throw SQLiteError.misuse("migration versions must be positive and strictly increasing")
            }
            previous = migration.version
        }
        let known = previous
        let current = try currentVersion(db)
        guard current <= known else {
            throw SQLiteError(
                .schemaTooNew, extendedResultCode: SQLITE_ERROR,
                message: "database schema version \(current) is newer than this build supports (\(known))")
        }
        var applied: [Int64] = []
        for migration in migrations where migration.version > current {
            let didApply = try db.transaction { db in
                // Re-checked under the write lock, in case another process migrated meanwhile.
                let exists = try db.queryFirst(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", [.integer(migration.version)])
                guard exists == nil else { return false }
                try db.execute(migration.sql)
                try db.run(
                    """
                    INSERT INTO schema_migrations(version, applied_at)
                    VALUES (?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
                    """, [.integer(migration.version)])
                return true
            }
            if didApply { applied.append(migration.version) }
        }
        return applied
    }

    private static func createTable(_ db: SQLiteDatabaseHandle) throws(SQLiteError) {
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at INTEGER NOT NULL -- milliseconds since 1970
            )
            """)
    }
}
