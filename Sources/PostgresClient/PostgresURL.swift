/// One host of a (possibly multi-host) PostgreSQL connection string, with a
/// single-host conninfo that keeps every other option.
public struct PostgresHostTarget: Sendable, Hashable, CustomStringConvertible {
    /// The host name, IP address or Unix socket directory as written (the
    /// `hostaddr` when no host name was given).
    public let host: String
    /// The numeric address to connect to, when `hostaddr` was given.
    public let hostaddr: String?
    /// The port (5432 unless given).
    public let port: Int
    /// A `key='value'` conninfo naming only this host; may contain the password.
    public let conninfo: String

    /// Creates a target; `conninfo` should name exactly this host.
    public init(host: String, hostaddr: String? = nil, port: Int, conninfo: String) {
        self.host = host
        self.hostaddr = hostaddr
        self.port = port
        self.conninfo = conninfo
    }

    /// `host:port` (`[v6addr]:port` for IPv6 literals): a stable key for
    /// this server.
    public var id: String { Self.makeID(host: host, port: port) }

    /// The id only (the conninfo may hold a password).
    public var description: String { id }

    static func makeID(host: String, port: Int) -> String {
        host.contains(":") && !host.hasPrefix("/") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// Splits libpq connection strings into one conninfo per host.
public enum PostgresURL {
    /// Parses a `postgresql://` URI or a `key=value` conninfo (with libpq's
    /// own parser, `PQconninfoParse`) that may name several hosts, e.g.
    /// `postgresql://user:pw@h1:5432,h2:5433,h3/db?sslmode=require`, and
    /// returns one target per host, in order. Every other option (sslmode,
    /// application_name, target_session_attrs, …) is kept in each target's
    /// conninfo. Ports pair with hosts as libpq pairs them: one port applies
    /// to every host, otherwise there must be one per host (an empty entry
    /// means 5432). `hostaddr` lists must match the host list.
    ///
    /// Throws `.invalidURL` for malformed input (libpq's message), an
    /// invalid port, mismatched host/port/hostaddr lists, an empty host entry,
    /// or a string that names no host at all.
    public static func parse(_ string: String) throws(PostgresError) -> [PostgresHostTarget] {
        try split(options: LibPQConninfo.parse(string))
    }

    /// The splitting itself, over already-parsed options.
    static func split(options: [(keyword: String, value: String)]) throws(PostgresError) -> [PostgresHostTarget] {
        func list(_ keyword: String) -> [String]? {
            guard let value = options.first(where: { $0.keyword == keyword })?.value, !value.isEmpty else { return nil }
            return value.split(separator: ",", omittingEmptySubsequences: false).map { String($0) }
        }
        let hosts = list("host")
        let addresses = list("hostaddr")
        let ports = list("port")
        if let hosts, let addresses, hosts.count != addresses.count {
            throw PostgresError(code: .invalidURL, message: "\(hosts.count) host names but \(addresses.count) hostaddr values")
        }
        guard let count = hosts?.count ?? addresses?.count else {
            throw PostgresError(code: .invalidURL, message: "the connection string names no host")
        }
        var portNumbers: [Int] = []
        for text in ports ?? [""] {
            let trimmed = text.trimmingSpaces()
            if trimmed.isEmpty {
                portNumbers.append(5432)
            } else if let port = Int(trimmed), (1...65535).contains(port) {
                portNumbers.append(port)
            } else {
                throw PostgresError(code: .invalidURL, message: "invalid port \"\(text)\" (expected 1-65535)")
            }
        }
        if portNumbers.count == 1 && count > 1 {
            portNumbers = Array(repeating: portNumbers[0], count: count)
        }
        guard portNumbers.count == count else {
            throw PostgresError(code: .invalidURL, message: "\(portNumbers.count) ports for \(count) hosts")
        }
        let others = options.filter { !["host", "hostaddr", "port"].contains($0.keyword) }
        var targets: [PostgresHostTarget] = []
        for i in 0..<count {
            let host = hosts?[i].trimmingSpaces() ?? ""
            let address = addresses?[i].trimmingSpaces() ?? ""
            guard !host.isEmpty || !address.isEmpty else {
                throw PostgresError(code: .invalidURL, message: "host entry \(i + 1) is empty")
            }
            var pairs: [(String, String)] = []
            if !host.isEmpty { pairs.append(("host", host)) }
            if !address.isEmpty { pairs.append(("hostaddr", address)) }
            pairs.append(("port", String(portNumbers[i])))
            pairs += others.map { ($0.keyword, $0.value) }
            let conninfo = pairs.map { "\($0.0)=\(quote($0.1))" }.joined(separator: " ")
            targets.append(PostgresHostTarget(
                host: host.isEmpty ? address : host, hostaddr: address.isEmpty ? nil : address,
                port: portNumbers[i], conninfo: conninfo))
        }
        return targets
    }

    /// A conninfo value: single-quoted, with `\` and `'` escaped.
    static func quote(_ value: String) -> String {
        var out = "'"
        for character in value {
            if character == "\\" || character == "'" { out.append("\\") }
            out.append(character)
        }
        return out + "'"
    }
}

private extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
