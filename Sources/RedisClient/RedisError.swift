/// Every failure of `RedisClient`. `code` is stable and meant to be matched on;
/// `message` is for humans and logs.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The URL could not be parsed (no server was contacted).
        public static let invalidURL = Code(rawValue: "invalid_url")
        /// An argument can't be sent (e.g. an empty command).
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        /// TCP connect failed (refused, unreachable, DNS).
        public static let connectionFailed = Code(rawValue: "connection_failed")
        /// Connect or command timed out, or the caller's deadline passed
        /// before the reply came (a late reply is discarded).
        public static let timeout = Code(rawValue: "timeout")
        /// Not connected right now (`RedisClient` is waiting to reconnect):
        /// failed fast without contacting the server.
        public static let unavailable = Code(rawValue: "unavailable")
        /// The calling task was cancelled before the reply came.
        public static let cancelled = Code(rawValue: "cancelled")
        /// Read/write failed or the server closed the connection.
        public static let io = Code(rawValue: "io")
        /// The server sent something hiredis could not parse.
        public static let protocolError = Code(rawValue: "protocol")
        /// AUTH was rejected.
        public static let authenticationFailed = Code(rawValue: "authentication_failed")
        /// The server answered the command with an error reply (`-ERR ...`).
        public static let server = Code(rawValue: "server")
        /// The connection was closed by `close()` or broken by an earlier error.
        public static let connectionClosed = Code(rawValue: "connection_closed")
        /// Out of memory or another hiredis failure.
        public static let other = Code(rawValue: "other")
    }

    /// What went wrong, for matching.
    public let code: Code
    /// Details for humans and logs.
    public let message: String

    /// An error with a code and a message.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// For `.server` errors: the first word of the reply, e.g. "ERR",
    /// "WRONGTYPE", "NOSCRIPT", "NOAUTH".
    public var serverErrorPrefix: String? {
        guard code == .server || code == .authenticationFailed else { return nil }
        return message.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public var description: String { "RedisError(\(code)): \(message)" }
}
