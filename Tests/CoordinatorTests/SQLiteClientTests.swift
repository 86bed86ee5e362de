import Dispatch
import Foundation
import SQLiteClient
import Testing

@discardableResult
/// Runs `body` with a fresh, unique directory path (not yet created) that is removed afterwards.
func withSQLiteTestDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("coordinator-sqlite-tests-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory.path)
}

/// Opens a connection on `directory/name`, creating the directory.
private func openConnection(
    _ directory: String, _ name: String = "test.sqlite",
    _ configuration: SQLiteConnection.Configuration = .init(createParentDirectory: true)
) async throws -> SQLiteConnection {
    try await SQLiteConnection.open(path: directory + "/" + name, configuration: configuration)
}

/// Expects `body` to throw a `SQLiteError` with `code`, and returns it.
@discardableResult
private func expectSQLiteError(
    _ code: SQLiteError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> SQLiteError? {
    do {
        try await body()
        Issue.record("expected SQLiteError \(code), got success", sourceLocation: sourceLocation)
    } catch let error as SQLiteError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected SQLiteError \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite("SQLiteClient")
struct SQLiteClientTests {
    @Test func defaultPragmas() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            let pragmas = try await connection.withConnection { db in
                try [
                    "PRAGMA journal_mode", "PRAGMA synchronous", "PRAGMA foreign_keys", "PRAGMA busy_timeout",
                ].map { try db.queryFirst($0)?.values.first }
            }
            #expect(pragmas == [.text("wal"), .integer(2), .integer(1), .integer(5_000)])
            await connection.close()
        }
    }

    @Test func synchronousNormalIsConfigurable() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(
                dir, "n.sqlite", .init(synchronous: .normal, createParentDirectory: true))
            let synchronous = try await connection.withConnection { db in
                try db.queryFirst("PRAGMA synchronous")?.get(0, as: Int64.self)
            }
            #expect(synchronous == 1)
            await connection.close()
        }
    }

    @Test func runsOnOneDedicatedThread() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            #expect(!SQLiteConnection.isConnectionThread)
            let threads = try await withThrowingTaskGroup(of: (Bool, ObjectIdentifier).self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await connection.withConnection { _ in
                            (SQLiteConnection.isConnectionThread, ObjectIdentifier(Thread.current))
                        }
                    }
                }
                return try await group.reduce(into: [(Bool, ObjectIdentifier)]()) { $0.append($1) }
            }
            #expect(threads.allSatisfy { $0.0 })
            #expect(Set(threads.map(\.1)).count == 1)
            await connection.close()
        }
    }

    @Test func bindsAndDecodesEveryType() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            let values: [SQLiteValue] = [
                .integer(Int64.max), .integer(Int64.min), .real(3.25), .text(""), .text("héllo ☃"),
                .text("a\u{0}b"), .text("'); DROP TABLE t; --"), .blob([]), .blob([0, 1, 255]), .null,
            ]
            let read = try await connection.withConnection { db in
                try db.execute("CREATE TABLE t (v ANY)")
                for value in values { try db.run("INSERT INTO t(v) VALUES (?)", [value]) }
                return try db.query("SELECT v FROM t ORDER BY rowid").map { $0.values[0] }
            }
            #expect(read == values)

            let row = SQLiteRow(values: [.integer(7), .text("x"), .null, .blob([1]), .real(1.5)])
            #expect(try row.get(0, as: Int64.self) == 7)
            #expect(try row.get(0, as: Int.self) == 7)
            #expect(try row.get(0, as: Double.self) == 7)
            #expect(try row.get(1, as: String.self) == "x")
            #expect(try row.get(2, as: String?.self) == nil)
            #expect(try row.get(1, as: String?.self) == "x")
            #expect(try row.get(3, as: [UInt8].self) == [1])
            #expect(try row.get(4, as: Double.self) == 1.5)
            let mismatch = #expect(throws: SQLiteError.self) { try row.get(1, as: Int64.self) }
            #expect(mismatch?.code == .typeMismatch)
            #expect(throws: SQLiteError.self) { try row.get(2, as: String.self) }
            #expect(throws: SQLiteError.self) { try row.get(9, as: String.self) }
            await connection.close()
        }
    }

    @Test func wrongParameterCountIsMisuse() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            await expectSQLiteError(.misuse) {
                try await connection.withConnection { db in
                    try db.execute("CREATE TABLE t (v INTEGER)")
                    try db.run("INSERT INTO t(v) VALUES (?)", [1, 2])
                }
            }
            await connection.close()
        }
    }

    @Test func constraintErrorsAreTyped() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            try await connection.withConnection { db in
                try db.execute(
                    """
                    CREATE TABLE p (id TEXT PRIMARY KEY, u TEXT UNIQUE, n TEXT NOT NULL);
                    CREATE TABLE c (pid TEXT REFERENCES p(id));
                    INSERT INTO p VALUES ('a', 'x', 'n');
                    """)
            }
            let primaryKey = await expectSQLiteError(.uniqueViolation) {
                _ = try await connection.withConnection { try $0.run("INSERT INTO p VALUES ('a', 'y', 'n')") }
            }
            #expect(primaryKey?.extendedResultCode == 1555)  // SQLITE_CONSTRAINT_PRIMARYKEY
            let unique = await expectSQLiteError(.uniqueViolation) {
                _ = try await connection.withConnection { try $0.run("INSERT INTO p VALUES ('b', 'x', 'n')") }
            }
            #expect(unique?.extendedResultCode == 2067)  // SQLITE_CONSTRAINT_UNIQUE
            #expect(unique?.message.contains("UNIQUE constraint failed") == true)
            await expectSQLiteError(.constraint) {
                _ = try await connection.withConnection { try $0.run("INSERT INTO p VALUES ('c', 'z', NULL)") }
            }
            let foreignKey = await expectSQLiteError(.constraint) {
                _ = try await connection.withConnection { try $0.run("INSERT INTO c VALUES ('nope')") }
            }
            #expect(foreignKey?.extendedResultCode == 787)  // SQLITE_CONSTRAINT_FOREIGNKEY
            await expectSQLiteError(.other) {
                _ = try await connection.withConnection { try $0.run("SELEKT 1") }
            }
            await connection.close()
        }
    }

    @Test func transactionsCommitAndRollBack() async throws {
        struct Boom: Error {}
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            let count = try await connection.withConnection { db in
                try db.execute("CREATE TABLE t (v INTEGER)")
                try db.transaction { try $0.run("INSERT INTO t VALUES (1)") }
                do {
                    try db.transaction { db in
                        try db.run("INSERT INTO t VALUES (2)")
                        throw Boom()
                    }
                } catch is Boom {}
                #expect(!db.isInTransaction)
                #expect(throws: SQLiteError.self) {
                    try db.transaction { db in try db.transaction { _ in } }
                }
                #expect(!db.isInTransaction)
                return try db.query("SELECT v FROM t").count
            }
            #expect(count == 1)
            await connection.close()
        }
    }

    @Test func callsAfterCloseFail() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            #expect(!connection.isClosed)
            async let first: Void = connection.close()
            async let second: Void = connection.close()  // idempotent; also waits for the close
            _ = await (first, second)
            #expect(connection.isClosed)
            await connection.close()
            #expect(connection.isClosed)
            await expectSQLiteError(.closed) { try await connection.withConnection { _ in } }
        }
    }

    @Test func workSubmittedBeforeCloseStillRuns() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            try await connection.withConnection { try $0.execute("CREATE TABLE t (v INTEGER)") }
            async let inserted: Int = connection.withConnection { try $0.run("INSERT INTO t VALUES (1)") }
            let result = try await inserted
            await connection.close()
            #expect(result == 1)
        }
    }

    @Test func garbageFileIsNotADatabase() async throws {
        try await withSQLiteTestDirectory { dir in
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let path = dir + "/garbage.sqlite"
            try Data(repeating: 0x41, count: 8_192).write(to: URL(fileURLWithPath: path))
            let error = await expectSQLiteError(.notADatabase) {
                _ = try await SQLiteConnection.open(path: path)
            }
            #expect(error?.extendedResultCode == 26)  // SQLITE_NOTADB
        }
    }

    @Test func missingDirectoryCannotOpen() async throws {
        try await withSQLiteTestDirectory { dir in
            await expectSQLiteError(.cannotOpen) {
                _ = try await SQLiteConnection.open(path: dir + "/missing/db.sqlite")
            }
        }
    }

    @Test func migrationsApplyInOrderOnce() async throws {
        let migrations = [
            SQLiteMigration(version: 1, sql: "CREATE TABLE a (x INTEGER)"),
            SQLiteMigration(version: 2, sql: "ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z INTEGER)"),
        ]
        try await withSQLiteTestDirectory { dir in
            var connection = try await openConnection(dir)
            let first = try await connection.withConnection { db in
                let v1 = try SQLiteMigrator.migrate(db, Array(migrations.prefix(1)))
                let v2 = try SQLiteMigrator.migrate(db, migrations)
                return [v1, v2, try SQLiteMigrator.migrate(db, migrations)]
            }
            #expect(first == [[1], [2], []])
            await connection.close()

            connection = try await openConnection(dir)
            let (version, rows) = try await connection.withConnection { db in
                (
                    try SQLiteMigrator.currentVersion(db),
                    try db.query("SELECT version, applied_at > 0 FROM schema_migrations ORDER BY version")
                )
            }
            #expect(version == 2)
            #expect(rows == [SQLiteRow(values: [1, 1]), SQLiteRow(values: [2, 1])])

            // A build that only knows version 1 refuses the database and changes nothing.
            await expectSQLiteError(.schemaTooNew) {
                try await connection.withConnection { _ = try SQLiteMigrator.migrate($0, Array(migrations.prefix(1))) }
            }
            await expectSQLiteError(.misuse) {
                try await connection.withConnection { _ = try SQLiteMigrator.migrate($0, migrations.reversed()) }
            }
            await connection.close()
        }
    }

    @Test func failingMigrationRollsBack() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            let migrations = [
                SQLiteMigration(version: 1, sql: "CREATE TABLE a (x INTEGER)"),
                SQLiteMigration(version: 2, sql: "CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1)"),
            ]
            await expectSQLiteError(.other) {
                try await connection.withConnection { _ = try SQLiteMigrator.migrate($0, migrations) }
            }
            let (version, tables) = try await connection.withConnection { db in
                (
                    try SQLiteMigrator.currentVersion(db),
                    try db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('a', 'b')")
                        .map { try $0.get(0, as: String.self) }
                )
            }
            #expect(version == 1)
            #expect(tables == ["a"])
            await connection.close()
        }
    }

    /// Blocks the connection's thread until `gate` is signalled; returns once it is blocked.
    private func block(_ connection: SQLiteConnection, until gate: DispatchSemaphore) async {
        await withCheckedContinuation { (started: CheckedContinuation<Void, Never>) in
            Task {
                try await connection.withConnection { _ in
                    started.resume()
                    gate.wait()
                }
            }
        }
    }

    @Test func batcherGroupsWaitingSubmissionsIntoBoundedTransactions() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            try await connection.withConnection { try $0.execute("CREATE TABLE t (v INTEGER NOT NULL)") }
            let batcher = SQLiteBatcher<Int64, Int64>(connection: connection, maxBatchSize: 4) { db, values in
                #expect(db.isInTransaction)
                return try values.map { value in
                    try db.run("INSERT INTO t(v) VALUES (?)", [.integer(value)])
                    return db.lastInsertRowID
                }
            }
            let gate = DispatchSemaphore(value: 0)
            await block(connection, until: gate)
            let rowids = try await withThrowingTaskGroup(of: Int64.self) { group in
                for value in 0..<10 as Range<Int64> {
                    group.addTask { try await batcher.submit(value) }
                }
                while batcher.pendingCount < 10 { await Task.yield() }
                gate.signal()
                var rowids: [Int64] = []
                for try await rowid in group { rowids.append(rowid) }
                return rowids
            }
            #expect(Set(rowids).count == 10)
            #expect(batcher.committedBatchCount == 3)  // 4 + 4 + 2
            #expect(batcher.committedItemCount == 10)
            let stored = try await connection.withConnection { try $0.query("SELECT COUNT(*) FROM t")[0].get(0, as: Int.self) }
            #expect(stored == 10)
            await connection.close()
        }
    }

    @Test func failedBatchRollsBackAndFailsEverySubmitter() async throws {
        try await withSQLiteTestDirectory { dir in
            let connection = try await openConnection(dir)
            try await connection.withConnection { try $0.execute("CREATE TABLE t (v INTEGER NOT NULL)") }
            let batcher = SQLiteBatcher<Int64?, Int64>(connection: connection) { db, values in
                try values.map { value in
                    try db.run("INSERT INTO t(v) VALUES (?)", [value.sqliteValue])
                    return db.lastInsertRowID
                }
            }
            let gate = DispatchSemaphore(value: 0)
            await block(connection, until: gate)
            let failures = await withTaskGroup(of: SQLiteError.Code?.self) { group in
                for value in [1, nil, 3] as [Int64?] {
                    group.addTask {
                        do {
                            _ = try await batcher.submit(value)
                            return nil
                        } catch {
                            return (error as? SQLiteError)?.code
                        }
                    }
                }
                while batcher.pendingCount < 3 { await Task.yield() }
                gate.signal()
                var failures: [SQLiteError.Code?] = []
                for await code in group { failures.append(code) }
                return failures
            }
            #expect(failures == [.constraint, .constraint, .constraint])
            #expect(batcher.committedBatchCount == 0)
            let stored = try await connection.withConnection { try $0.query("SELECT COUNT(*) FROM t")[0].get(0, as: Int.self) }
            #expect(stored == 0)
            await connection.close()
            await expectSQLiteError(.closed) { _ = try await batcher.submit(1) }
        }
    }
}
