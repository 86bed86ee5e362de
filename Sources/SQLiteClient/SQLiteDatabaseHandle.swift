import CSQLite3

/// `SQLITE_TRANSIENT`: SQLite copies bound text and blobs before `sqlite3_bind_*` returns.
/// (The C macro is a cast of -1 to a function pointer, which Swift does not import.)
private let transientDestructor = unsafeBitCast(-1 as Int, to: sqlite3_destructor_type.self)

/// The one owner of an `sqlite3*` connection pointer, with its prepared-statement cache.
///
/// A handle is confined to the thread of the ``SQLiteConnection`` that opened it: it is created,
/// used and closed there, and it is deliberately not `Sendable`. Code receives it only as the
/// argument of a closure that ``SQLiteConnection`` runs on that thread, and must not keep it
/// beyond the closure.
///
/// Values are always bound as parameters (`?`), never interpolated into SQL.
public final class SQLiteDatabaseHandle {
    private var db: OpaquePointer?
    /// Prepared statements keyed by their SQL text, reset after each use.
    private var statementCache: [String: OpaquePointer] = [:]
    /// Beyond this many cached statements the cache is emptied (our SQL is a small fixed set).
    private let statementCacheLimit = 128

    /// The path the handle was opened with.
    public let path: String

    /// Opens `path` with `flags`. Throws a ``SQLiteError``; no handle exists on failure.
    init(path: String, flags: Int32) throws(SQLiteError) {
        self.path = path
        var pointer: OpaquePointer?
        let rc = sqlite3_open_v2(path, &pointer, flags, nil)
        guard rc == SQLITE_OK, let pointer else {
            let message = pointer.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            let extended = pointer.map { sqlite3_extended_errcode($0) } ?? rc
            sqlite3_close_v2(pointer)
            throw SQLiteError(resultCode: extended, message: "cannot open \(path): \(message)")
        }
        db = pointer
        sqlite3_extended_result_codes(pointer, 1)
    }

    deinit {
        close()
    }

    /// Whether ``close()`` has run.
    public var isClosed: Bool { db == nil }

    /// Finalizes every cached statement and closes the connection. Idempotent.
    public func close() {
        for statement in statementCache.values {
            sqlite3_finalize(statement)
        }
        statementCache.removeAll()
        if let db {
            sqlite3_close_v2(db)
            self.db = nil
        }
    }

    // MARK: Errors

    private func open() throws(SQLiteError) -> OpaquePointer {
        guard let db else { throw SQLiteError.closed }
        return db
    }

    /// The error SQLite reports for the last failed call on this connection.
    private func lastError(_ rc: Int32, _ context: String? = nil) -> SQLiteError {
        guard let db else { return .closed }
        var extended = sqlite3_extended_errcode(db)
        if extended & 0xFF != rc & 0xFF { extended = rc }
        var message = String(cString: sqlite3_errmsg(db))
        if let context { message = "\(context): \(message)" }
        return SQLiteError(resultCode: extended, message: message)
    }

    // MARK: Executing

    /// Runs one or more `;`-separated statements that take no parameters (DDL, pragmas).
    public func execute(_ sql: String) throws(SQLiteError) {
        let db = try open()
        var errorMessage: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &errorMessage)
        if rc != SQLITE_OK {
            let message = errorMessage.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(errorMessage)
            var extended = sqlite3_extended_errcode(db)
            if extended & 0xFF != rc & 0xFF { extended = rc }
            throw SQLiteError(resultCode: extended, message: message)
        }
    }

    /// Runs a statement with `bindings` and returns the number of rows it changed.
    @discardableResult
    public func run(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteError) -> Int {
        let db = try open()
        try withStatement(sql, bindings) { statement throws(SQLiteError) in
            while true {
                let rc = sqlite3_step(statement)
                if rc == SQLITE_DONE { break }
                if rc != SQLITE_ROW { throw lastError(rc) }
            }
        }
        return Int(sqlite3_changes(db))
    }

    /// Runs a statement with `bindings` and returns every result row.
    public func query(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteError) -> [SQLiteRow] {
        try withStatement(sql, bindings) { statement throws(SQLiteError) in
            var rows: [SQLiteRow] = []
            let columns = sqlite3_column_count(statement)
            while true {
                let rc = sqlite3_step(statement)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else { throw lastError(rc) }
                var values: [SQLiteValue] = []
                values.reserveCapacity(Int(columns))
                for column in 0..<columns {
                    values.append(Self.columnValue(statement, column))
                }
                rows.append(SQLiteRow(values: values))
            }
            return rows
        }
    }

    /// Runs a statement and returns its first row, or `nil` if it returned none.
    public func queryFirst(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteError) -> SQLiteRow? {
        try query(sql, bindings).first
    }

    /// The rowid of the most recent successful `INSERT` on this connection.
    public var lastInsertRowID: Int64 {
        db.map { sqlite3_last_insert_rowid($0) } ?? 0
    }

    /// Whether a transaction is open.
    public var isInTransaction: Bool {
        db.map { sqlite3_get_autocommit($0) == 0 } ?? false
    }

    /// Runs `body` inside `BEGIN IMMEDIATE` … `COMMIT`; rolls back if `body` or the commit throws.
    ///
    /// The write lock is taken up front, so the transaction cannot fail half-way with `SQLITE_BUSY`
    /// when it first writes. Nested transactions are refused with ``SQLiteError/Code/misuse``.
    @discardableResult
    public func transaction<T>(_ body: (SQLiteDatabaseHandle) throws -> T) throws -> T {
        guard !isInTransaction else { throw SQLiteError.misuse("a transaction is already open") }
        try run("BEGIN IMMEDIATE")
        do {
            let result = try body(self)
            try run("COMMIT")
            return result
        } catch {
            if isInTransaction {
                _ = try? run("ROLLBACK")
            }
            throw error
        }
    }

    // MARK: Statements

    private func withStatement<T>(
        _ sql: String, _ bindings: [SQLiteValue], _ body: (OpaquePointer) throws(SQLiteError) -> T
    ) throws(SQLiteError) -> T {
        let statement = try prepared(sql)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        try bind(bindings, to: statement)
        return try body(statement)
    }

    private func prepared(_ sql: String) throws(SQLiteError) -> OpaquePointer {
        if let cached = statementCache[sql] { return cached }
        let db = try open()
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else {
            throw lastError(rc, "cannot prepare statement")
        }
        if statementCache.count >= statementCacheLimit {
            for old in statementCache.values { sqlite3_finalize(old) }
            statementCache.removeAll()
        }
        statementCache[sql] = statement
        return statement
    }

    private func bind(_ bindings: [SQLiteValue], to statement: OpaquePointer) throws(SQLiteError) {
        let expected = Int(sqlite3_bind_parameter_count(statement))
        guard expected == bindings.count else {
            throw SQLiteError.misuse("statement takes \(expected) parameters, \(bindings.count) given")
        }
        for (offset, value) in bindings.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null:
                rc = sqlite3_bind_null(statement, index)
            case .integer(let v):
                rc = sqlite3_bind_int64(statement, index, v)
            case .real(let v):
                rc = sqlite3_bind_double(statement, index, v)
            case .text(let v):
                // The String bridges to a NUL-terminated UTF-8 buffer (never nil, so "" binds '' not
                // NULL); the explicit byte count keeps interior NULs.
                rc = sqlite3_bind_text64(
                    statement, index, v, UInt64(v.utf8.count), transientDestructor, UInt8(SQLITE_UTF8))
            case .blob(let v):
                if v.isEmpty {
                    rc = sqlite3_bind_zeroblob(statement, index, 0)
                } else {
                    rc = v.withUnsafeBytes { bytes in
                        sqlite3_bind_blob64(
                            statement, index, bytes.baseAddress, UInt64(bytes.count), transientDestructor)
                    }
                }
            }
            if rc != SQLITE_OK { throw lastError(rc, "cannot bind parameter \(index)") }
        }
    }

    private static func columnValue(_ statement: OpaquePointer, _ column: Int32) -> SQLiteValue {
        switch sqlite3_column_type(statement, column) {
        case SQLITE_INTEGER:
            return .integer(sqlite3_column_int64(statement, column))
        case SQLITE_FLOAT:
            return .real(sqlite3_column_double(statement, column))
        case SQLITE_TEXT:
            guard let text = sqlite3_column_text(statement, column) else { return .text("") }
            let count = Int(sqlite3_column_bytes(statement, column))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(statement, column))
            guard count > 0, let bytes = sqlite3_column_blob(statement, column) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: count)))
        default:
            return .null
        }
    }
}
