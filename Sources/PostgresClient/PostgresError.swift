/// Every failure of `PostgresClient`. `code` is stable and meant to be
/// matched on; for `.server` errors `sqlState` holds the SQLSTATE (e.g.
/// "42601" syntax error, "23505" unique violation, "40001" serialization).
public struct PostgresError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// Could not connect (bad conninfo, refused, auth failed, timeout).
        public static let connectionFailed = Code(rawValue: "connection_failed")
        /// The server reported an error for the statement; see `sqlState`.
        public static let server = Code(rawValue: "server")
        /// The connection broke while running a statement.
        public static let connectionLost = Code(rawValue: "connection_lost")
        /// The connection was closed by `close()`.
        public static let connectionClosed = Code(rawValue: "connection_closed")
        /// A parameter or statement can't be sent (e.g. contains a NUL byte).
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        /// Unexpected libpq result (e.g. COPY, which this client doesn't do).
        public static let unexpectedResult = Code(rawValue: "unexpected_result")
    }

    public let code: Code
    /// Five-character SQLSTATE, when the server sent one.
    public let sqlState: String?
    /// Primary message, without the "ERROR:" prefix when from the server.
    public let message: String
    public let detail: String?
    public let hint: String?

    public init(code: Code, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public var description: String {
        var s = "PostgresError(\(code)"
        if let sqlState { s += ", \(sqlState)" }
        s += "): \(message)"
        if let detail { s += " DETAIL: \(detail)" }
        if let hint { s += " HINT: \(hint)" }
        return s
    }
}
