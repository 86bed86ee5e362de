/// Where and how to connect, parsed from `redis://[[user]:password@]host[:port][/db]`.
///
/// Percent-escapes are decoded in user and password. IPv6 hosts go in brackets
/// (`redis://[::1]:6379`). TLS (`rediss://`), unix sockets and query options
/// are rejected with `.invalidURL` rather than silently ignored.
///
/// The timeouts and the backoff are not part of the URL; set them on the
/// parsed value.
public struct RedisConfiguration: Sendable, Equatable, CustomStringConvertible {
    /// Host name or IP address (IPv6 without brackets).
    public var host: String
    /// TCP port.
    public var port: Int
    /// `SELECT`ed after connecting (ignored by `RedisSubscriber`: pub/sub is database-independent).
    public var database: Int
    /// ACL user for `AUTH user password`; nil for `AUTH password` (or no AUTH).
    public var username: String?
    /// Sent with `AUTH` when set.
    public var password: String?
    /// The hot-path deadline: how long a `RedisClient.send` waits when the
    /// caller gives no deadline. Default 50 ms.
    public var commandTimeout: Duration
    /// Bounds the TCP connect plus the handshake (AUTH, SELECT, CLIENT SETNAME, PING). Default 200 ms.
    public var connectTimeout: Duration
    /// Delay between reconnect attempts.
    public var reconnectBackoff: RedisBackoff
    /// `CLIENT SETNAME` after connecting (visible in `CLIENT LIST`); nil sends none.
    /// Redis rejects names with spaces.
    public var clientName: String?
    /// `RedisSubscriber` sends a PING after this much silence and drops the
    /// connection when no reply comes within twice this; so a hung server is
    /// noticed within about three times this. Default 500 ms.
    public var healthCheckInterval: Duration

    /// The port Redis listens on unless told otherwise.
    public static let defaultPort = 6379

    /// A configuration with the default timeouts and backoff.
    public init(
        host: String,
        port: Int = defaultPort,
        database: Int = 0,
        username: String? = nil,
        password: String? = nil,
        commandTimeout: Duration = .milliseconds(50),
        connectTimeout: Duration = .milliseconds(200),
        reconnectBackoff: RedisBackoff = RedisBackoff(),
        clientName: String? = nil,
        healthCheckInterval: Duration = .milliseconds(500)
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.commandTimeout = commandTimeout
        self.connectTimeout = connectTimeout
        self.reconnectBackoff = reconnectBackoff
        self.clientName = clientName
        self.healthCheckInterval = healthCheckInterval
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`; timeouts and backoff get their defaults.
    public init(url: String) throws(RedisError) {
        func bad(_ why: String) -> RedisError {
            RedisError(code: .invalidURL, message: "invalid Redis URL '\(Self.redact(url))': \(why)")
        }
        guard let schemeEnd = url.firstRange(of: "://") else {
            throw bad("expected redis://[user:password@]host:port/db")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "redis" else {
            throw bad(scheme == "rediss" ? "TLS (rediss://) is not supported" : "scheme must be redis://, not \(scheme)://")
        }
        var rest = url[schemeEnd.upperBound...]
        if rest.contains("?") || rest.contains("#") {
            throw bad("query parameters and fragments are not supported")
        }
        // authority / path
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        } else {
            path = ""
        }
        // userinfo
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let user: Substring
            if let colon = userinfo.firstIndex(of: ":") {
                user = userinfo[..<colon]
                guard let p = Self.percentDecode(userinfo[userinfo.index(after: colon)...]) else { throw bad("bad percent-escape in password") }
                password = p
            } else {
                user = userinfo
            }
            guard let u = Self.percentDecode(user) else { throw bad("bad percent-escape in user name") }
            username = u.isEmpty ? nil : u
            if username != nil && password == nil {
                throw bad("a user name needs a password (redis://user:password@host)")
            }
        }
        // host[:port]
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad("unterminated [ in IPv6 host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("unexpected '\(after)' after IPv6 host") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            if portText!.contains(":") { throw bad("IPv6 hosts must be written in brackets") }
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw bad("missing host") }
        var port = Self.defaultPort
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw bad("port must be a number in 1...65535, got '\(portText)'")
            }
            port = p
        }
        var database = 0
        if !path.isEmpty {
            guard let db = Int(path), db >= 0 else {
                throw bad("database must be a non-negative integer, got '\(path)'")
            }
            database = db
        }
        self.init(host: String(host), port: port, database: database, username: username, password: password)
    }

    /// The URL without the password.
    public var description: String {
        let auth = password == nil ? "" : "\(username ?? ""):***@"
        let h = host.contains(":") ? "[\(host)]" : host
        return "redis://\(auth)\(h):\(port)/\(database)"
    }

    static func redact(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://"),
              let at = url[schemeEnd.upperBound...].lastIndex(of: "@") else { return url }
        return url[..<schemeEnd.upperBound] + "***" + url[at...]
    }

    static func percentDecode(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(),
                      let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// Exponential backoff with full jitter: before reconnect attempt `n`
/// (0-based, counting consecutive failures) the client sleeps a uniformly
/// random time in `0...min(maximum, minimum * 2^n)`, at least 1 ms.
public struct RedisBackoff: Sendable, Equatable {
    /// The cap of the first delay. Default 50 ms.
    public var minimum: Duration
    /// The cap of every delay. Default 1 s: a node back from a partition is shared again within
    /// about a second, and N nodes reconnecting cost Redis N cheap connects per second.
    public var maximum: Duration

    /// A backoff between `minimum` and `maximum`.
    public init(minimum: Duration = .milliseconds(50), maximum: Duration = .seconds(1)) {
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
    }

    /// The delay before attempt `attempt` after `attempt` consecutive failures.
    public func delay(attempt: Int) -> Duration {
        let cap = ceiling(attempt: attempt)
        let capNanos = max(Int64(1_000_000), nanoseconds(cap))
        return .nanoseconds(Int64.random(in: 1_000_000...capNanos))
    }

    /// The upper bound of `delay(attempt:)`.
    public func ceiling(attempt: Int) -> Duration {
        var cap = minimum
        var n = 0
        while n < attempt && cap < maximum {
            cap *= 2
            n += 1
        }
        return min(cap, maximum)
    }

    private func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
