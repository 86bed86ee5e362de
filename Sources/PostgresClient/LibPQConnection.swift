import ConnectionThreads
import CLibPQ

/// Owns one `PGconn*`. Every libpq call in this package is in this file, and
/// every libpq failure becomes a `PostgresError` here.
///
/// `@unchecked Sendable`: instances are only used from inside jobs of the
/// connection's `BlockingExecutor`, which runs them one at a time on a single
/// thread, so the `PGconn` is never touched concurrently (libpq requires that).
final class LibPQConnection: @unchecked Sendable {
    private var connection: OpaquePointer?

    private init(connection: OpaquePointer) {
        self.connection = connection
    }

    deinit {
        if let connection { PQfinish(connection) }
    }

    /// Blocking connect. `conninfo` may be a `key=value` string or a
    /// `postgresql://` URI (multi-host included); `connectTimeoutSeconds`
    /// overrides any connect_timeout in it.
    static func connect(conninfo: String, connectTimeoutSeconds: Int) throws(PostgresError) -> LibPQConnection {
        // Later keywords override what the expanded `dbname` conninfo says.
        let keywords = ["dbname", "connect_timeout"]
        let values = [conninfo, String(max(connectTimeoutSeconds, 2))] // libpq treats 1 as 2
        let raw = withCStrings(keywords) { k in
            withCStrings(values) { v in
                PQconnectdbParams(k, v, 1)
            }
        }
        guard let raw else {
            throw PostgresError(code: .connectionFailed, message: "libpq could not allocate a connection")
        }
        guard PQstatus(raw) == CONNECTION_OK else {
            let message = Self.connectionMessage(raw)
            PQfinish(raw)
            throw PostgresError(code: .connectionFailed, message: message)
        }
        // Server notices (e.g. "table does not exist, skipping") would
        // otherwise be printed on stderr by libpq's default processor.
        PQsetNoticeProcessor(raw, { _, _ in }, nil)
        return LibPQConnection(connection: raw)
    }

    /// `PQexecParams` with text-format parameters and results. Parameters are
    /// bound, never interpolated into `sql`.
    func query(_ sql: String, _ params: [String?]) throws(PostgresError) -> [[String?]] {
        guard let connection else {
            throw PostgresError(code: .connectionClosed, message: "connection closed")
        }
        if sql.utf8.contains(0) || params.contains(where: { $0?.utf8.contains(0) ?? false }) {
            throw PostgresError(code: .invalidArgument, message: "SQL text and parameters cannot contain NUL bytes")
        }
        let result = withOptionalCStrings(params) { values in
            PQexecParams(connection, sql, Int32(params.count), nil, values, nil, nil, 0)
        }
        guard let result else {
            throw PostgresError(code: PQstatus(connection) == CONNECTION_BAD ? .connectionLost : .unexpectedResult,
                                message: Self.connectionMessage(connection))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return []
        case PGRES_TUPLES_OK:
            let rows = Int(PQntuples(result))
            let columns = Int(PQnfields(result))
            return (0..<rows).map { row in
                (0..<columns).map { column -> String? in
                    let r = Int32(row), c = Int32(column)
                    if PQgetisnull(result, r, c) != 0 { return nil }
                    let length = Int(PQgetlength(result, r, c))
                    return PQgetvalue(result, r, c).map {
                        String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self)
                    } ?? ""
                }
            }
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            throw Self.resultError(result, connection: connection)
        default:
            let status = String(cString: PQresStatus(PQresultStatus(result)))
            throw PostgresError(code: .unexpectedResult, message: "unexpected result status \(status)")
        }
    }

    func close() {
        if let connection { PQfinish(connection) }
        connection = nil
    }

    // MARK: - errors

    private static func connectionMessage(_ connection: OpaquePointer) -> String {
        let text = PQerrorMessage(connection).map { String(cString: $0) } ?? "unknown libpq error"
        return text.trimmingTrailingWhitespace()
    }

    private static func field(_ result: OpaquePointer, _ code: UInt8) -> String? {
        PQresultErrorField(result, Int32(code)).map { String(cString: $0) }
    }

    /// The one place where a failed `PGresult` becomes a `PostgresError`.
    private static func resultError(_ result: OpaquePointer, connection: OpaquePointer) -> PostgresError {
        let sqlState = field(result, UInt8(ascii: "C")) // PG_DIAG_SQLSTATE
        let primary = field(result, UInt8(ascii: "M"))  // PG_DIAG_MESSAGE_PRIMARY
        let detail = field(result, UInt8(ascii: "D"))   // PG_DIAG_MESSAGE_DETAIL
        let hint = field(result, UInt8(ascii: "H"))     // PG_DIAG_MESSAGE_HINT
        let lost = PQstatus(connection) == CONNECTION_BAD
        let message = primary
            ?? PQresultErrorMessage(result).map { String(cString: $0).trimmingTrailingWhitespace() }
            ?? "unknown error"
        return PostgresError(
            code: lost ? .connectionLost : .server, // a FATAL (e.g. 57P01) also kills the session
            sqlState: sqlState, message: message, detail: detail, hint: hint)
    }
}

private extension String {
    func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// Calls `body` with a C array of NUL-terminated copies of `strings`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    withOptionalCStrings(strings) { body($0!) }
}

private func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { string in
        string.map { s in
            let utf8 = Array(s.utf8CString)
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
            p.initialize(from: utf8, count: utf8.count)
            return p
        }
    }
    defer { copies.forEach { $0?.deallocate() } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
