/// Every failure of `PostgresClient`. `code` is stable and meant to be
/// matched on; for `.server` errors `sqlState` holds the SQLSTATE (e.g.
/// "42601" syntax error, "23505" unique violation, "40001" serialization).
///
/// Use the classification helpers (`isConnectionLost`, `isRetryable`,
/// `isUniqueViolation`, …) rather than comparing SQLSTATEs by hand.
public struct PostgresError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, machine-readable error category.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The stable identifier, e.g. `"connection_failed"`.
        public let rawValue: String
        /// Wraps a raw identifier.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The raw identifier.
        public var description: String { rawValue }

        /// Could not connect (bad conninfo, refused, auth failed, server
        /// rejected the session, e.g. `target_session_attrs`).
        public static let connectionFailed = Code(rawValue: "connection_failed")
        /// Same as `connectionFailed`.
        public static let connectFailed = connectionFailed
        /// The server reported an error for the statement; see `sqlState`.
        public static let server = Code(rawValue: "server")
        /// The connection broke while running a statement, or was already
        /// broken (after an earlier loss, timeout or cancellation). Discard it.
        public static let connectionLost = Code(rawValue: "connection_lost")
        /// The connection was closed by `close()`.
        public static let connectionClosed = Code(rawValue: "connection_closed")
        /// Same as `connectionClosed`.
        public static let closed = connectionClosed
        /// A parameter or statement can't be sent (e.g. contains a NUL byte).
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        /// Unexpected libpq result (e.g. COPY, which this client doesn't do).
        public static let unexpectedResult = Code(rawValue: "unexpected_result")
        /// Same as `unexpectedResult`: the server or libpq answered something
        /// this client cannot handle.
        public static let `protocol` = unexpectedResult
        /// The caller's deadline passed (connect, statement or transaction).
        /// After a statement timeout the connection is broken: a cancel
        /// request was sent and the connection must be discarded.
        public static let timeout = Code(rawValue: "timeout")
        /// The calling task was cancelled; as after a timeout, the connection
        /// is broken.
        public static let cancelled = Code(rawValue: "cancelled")
        /// A value could not be decoded into the requested Swift type.
        public static let decoding = Code(rawValue: "decoding")
        /// A connection string or URL is malformed.
        public static let invalidURL = Code(rawValue: "invalid_url")
        /// The connection broke (or timed out) while `COMMIT` was in flight:
        /// the transaction may or may not have committed. Never retried
        /// blindly — check (e.g. by an idempotency key) before writing again.
        public static let commitOutcomeUnknown = Code(rawValue: "commit_outcome_unknown")
        /// No pooled connection became available before the caller's deadline.
        public static let poolExhausted = Code(rawValue: "pool_exhausted")
        /// The pool was closed.
        public static let poolClosed = Code(rawValue: "pool_closed")
        /// A listener's consumer fell so far behind that its buffer
        /// overflowed; notifications were lost and the listener stopped.
        public static let listenerOverflow = Code(rawValue: "listener_overflow")
    }

    /// The stable category.
    public let code: Code
    /// Five-character SQLSTATE, when the server sent one.
    public let sqlState: String?
    /// Primary message, without the "ERROR:" prefix when from the server.
    public let message: String
    /// The server's DETAIL, if any.
    public let detail: String?
    /// The server's HINT, if any.
    public let hint: String?
    /// Non-localized severity from the server (`ERROR`, `FATAL`, `PANIC`).
    public let severity: String?
    /// The constraint the error is about (e.g. for a unique violation).
    public let constraint: String?

    /// Creates an error; every field but `code` and `message` is optional.
    public init(
        code: Code, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil,
        severity: String? = nil, constraint: String? = nil
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.severity = severity
        self.constraint = constraint
    }

    /// A one-line rendering with code, SQLSTATE, message, detail and hint.
    public var description: String {
        var s = "PostgresError(\(code)"
        if let sqlState { s += ", \(sqlState)" }
        s += "): \(message)"
        if let detail { s += " DETAIL: \(detail)" }
        if let hint { s += " HINT: \(hint)" }
        return s
    }

    // MARK: - classification

    /// The SQLSTATE class (its first two characters), e.g. "08".
    public var sqlStateClass: String? { sqlState.map { String($0.prefix(2)) } }

    /// The connection is gone (or unusable): it broke under a statement, the
    /// server ended the session (SQLSTATE class 08, 57P01/57P02/57P03), or it
    /// was abandoned after a timeout or cancellation. Discard the connection.
    public var isConnectionLost: Bool {
        switch code {
        case .connectionLost, .commitOutcomeUnknown: return true
        default: break
        }
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08") || Self.serverGoingAway.contains(sqlState)
    }

    /// Whether the work may be retried, typically on a fresh connection and
    /// possibly another host: could not connect; connection lost (class 08 —
    /// inside a transaction nothing was committed; an auto-commit statement
    /// may have run, so retry only idempotent ones); serialization failure
    /// (40001); deadlock (40P01); server shutting down or starting
    /// (57P01/57P02/57P03); a write reached a standby (25006). Never true for
    /// `.commitOutcomeUnknown`, `.timeout`, or other server errors.
    public var isRetryable: Bool {
        switch code {
        case .connectionFailed, .connectionLost: return true
        case .commitOutcomeUnknown, .timeout, .cancelled, .poolClosed, .invalidArgument, .invalidURL, .decoding:
            return false
        default: break
        }
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08") || Self.retryableStates.contains(sqlState)
    }

    /// SQLSTATE 23505 unique_violation.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    /// SQLSTATE 25006 read_only_sql_transaction: a write reached a standby
    /// (or a read-only transaction). The host is not (or no longer) the primary.
    public var isReadOnlyTransaction: Bool { sqlState == "25006" }

    /// SQLSTATE 40001 serialization_failure or 40P01 deadlock_detected.
    public var isSerializationFailure: Bool { sqlState == "40001" || sqlState == "40P01" }

    /// SQLSTATE 57014 query_canceled (e.g. `statement_timeout`).
    public var isQueryCanceled: Bool { sqlState == "57014" }

    private static let serverGoingAway: Set<String> = ["57P01", "57P02", "57P03"]
    private static let retryableStates: Set<String> = ["40001", "40P01", "57P01", "57P02", "57P03", "25006"]
}
