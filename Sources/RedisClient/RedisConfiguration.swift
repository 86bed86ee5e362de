/// Where and how to connect, parsed from `redis://[[user]:password@]host[:port][/db]`.
///
/// Percent-escapes are decoded in user and password. IPv6 hosts go in brackets
/// (`redis://[::1]:6379`). TLS (`rediss://`), unix sockets and query options
/// are rejected with `.invalidURL` rather than silently ignored.
public struct RedisConfiguration: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: Int
    public var username: String?
    public var password: String?

    public static let defaultPort = 6379

    public init(host: String, port: Int = defaultPort, database: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
    }

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

    /// Without the password.
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
