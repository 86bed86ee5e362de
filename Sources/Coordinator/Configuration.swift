import CoordinatorCore
import Foundation

/// Everything a node needs to start. Built by `ConfigurationLoader` from defaults, an optional JSON
/// file, `COORDINATOR_…` environment variables and command-line flags (in that order of precedence,
/// later wins), or directly by library users.
public struct NodeConfiguration: Sendable, Equatable {
    /// Address the HTTP server binds.
    public var host: String = "127.0.0.1"
    /// Port the HTTP server binds (0 picks a free one).
    public var port: Int = 8080
    /// Largest accepted request body in bytes; larger bodies get 413.
    public var maxBodyBytes: Int = 65_536
    /// Directory for the SQLite database and other node files.
    public var dataDirectory: String = "./coordinator-data"
    /// Stable node id; generated and persisted in the data directory when `nil`.
    public var nodeID: String?
    /// Admin bearer token; when `nil` one is generated on first start, printed once and stored hashed.
    public var adminToken: String?
    /// SQLite durability: `full` fsyncs every commit (survives power loss), `normal` survives process crashes.
    public var sqliteSynchronous: SQLiteSynchronous = .full
    /// Policy that tokens created without one use.
    public var defaultPolicyName: String = "default"
    /// Policies created at start when the store has none of that name.
    public var policies: [String: LimitPolicy] = ["default": .pilotDefault]
    /// Breaker configuration for breakers created on first use.
    public var defaultBreakerConfig: BreakerConfig = .default
    /// The most breakers a node keeps; acquiring an unknown name beyond it fails with 409.
    public var maxBreakers: Int = 10_000
    /// The most permits outstanding (acquired, not yet recorded or expired) on a node; beyond it
    /// acquire answers 503, so clients that never record cannot exhaust memory.
    public var maxOutstandingPermits: Int = 100_000
    /// The most keys one policy's limiter holds; a new key beyond it (after sweeping keys back at
    /// their initial state) answers 503, so unbounded key spaces cannot exhaust memory.
    public var maxLimiterKeys: Int = 1_000_000
    /// Capacity of the token-validation cache (valid tokens).
    public var tokenCacheCapacity: Int = 10_000
    /// How long a validated token stays cached, in milliseconds.
    public var tokenCacheTTLMilliseconds: Int64 = 30_000
    /// How long a validated token stays in the cluster's second-level cache (Redis; PostgreSQL store in
    /// cluster mode), in milliseconds, capped by the token's expiry.
    public var tokenCacheSharedTTLMilliseconds: Int64 = 300_000
    /// Capacity of the cache of unknown secrets (bounded separately so a flood of bad tokens cannot evict good ones).
    public var negativeCacheCapacity: Int = 10_000
    /// How long an unknown secret stays cached, in milliseconds.
    public var negativeCacheTTLMilliseconds: Int64 = 5_000
    /// How often timers run (permit expiry, half-open timeouts, limiter sweep), in milliseconds.
    public var maintenanceIntervalMilliseconds: Int64 = 1_000
    /// Log level: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String = "info"

    // MARK: Cluster mode (on when `redisURL` is set)

    /// `redis://[user:password@]host:port/db`; `nil` keeps the node in pilot mode.
    public var redisURL: String?
    /// Name of the cluster: nodes with the same Redis and name share state; others never mix.
    public var clusterName: String = "coordinator"
    /// Shared secret that signs bus messages (HMAC-SHA256); required in cluster mode.
    public var clusterSecret: String?
    /// What limits do while Redis is unreachable.
    public var onSharedStateLoss: SharedStateLossMode = .localShare
    /// Deadline of a hot-path Redis call, in milliseconds.
    public var redisDeadlineMilliseconds: Int64 = 50
    /// How breakers are shared in cluster mode: `any` (one node's trip opens the breaker everywhere) or
    /// `local` (no sharing).
    public var breakerSharing: BreakerSharing = .any
    /// Heartbeat period, in milliseconds; a member silent for 3 periods leaves the live set.
    public var heartbeatIntervalMilliseconds: Int64 = 1_000

    /// Whether the node runs in cluster mode.
    public var isClusterMode: Bool { redisURL != nil }

    // MARK: PostgreSQL store (on when `postgresURL` is set)

    /// A libpq URL or key=value string naming one or several hosts
    /// (`postgresql://user@h1:5432,h2:5433/db`), in any order: roles are discovered, not configured.
    /// `nil` keeps the SQLite store.
    public var postgresURL: String?
    /// How often every host is probed (role, LSNs, lag), in milliseconds.
    public var postgresProbeIntervalMilliseconds: Int64 = 500
    /// Most connections per host.
    public var postgresMaxConnectionsPerHost: Int = 10
    /// Server-side `statement_timeout` of every connection, in milliseconds.
    public var postgresStatementTimeoutMilliseconds: Int64 = 5_000
    /// Client-side deadline of one store call (waiting for a connection included), in milliseconds.
    public var postgresDeadlineMilliseconds: Int64 = 2_000
    /// Reads that may go to a replica need it within this many bytes of WAL of the primary.
    public var postgresMaxLagBytes: Int64 = 16 * 1_024 * 1_024
    /// … and within this many milliseconds of replay lag.
    public var postgresMaxLagMilliseconds: Int64 = 1_000

    public init() {}

    /// Rules a configuration built in code (not through `ConfigurationLoader`) can still break.
    public func problems() -> [String] {
        var problems: [String] = []
        if !(0...65_535).contains(port) { problems.append("port must be between 0 and 65535") }
        if maxBodyBytes < 1_024 { problems.append("maxBodyBytes must be at least 1024") }
        if maxBreakers < 1 { problems.append("maxBreakers must be at least 1") }
        if maxOutstandingPermits < 1 { problems.append("maxOutstandingPermits must be at least 1") }
        if maxLimiterKeys < 1 { problems.append("maxLimiterKeys must be at least 1") }
        if tokenCacheCapacity < 1 { problems.append("tokenCacheCapacity must be at least 1") }
        if negativeCacheCapacity < 1 { problems.append("negativeCacheCapacity must be at least 1") }
        if tokenCacheTTLMilliseconds < 1 || negativeCacheTTLMilliseconds < 1 { problems.append("cache TTLs must be at least 1 ms") }
        if maintenanceIntervalMilliseconds < 10 { problems.append("maintenanceIntervalMilliseconds must be at least 10") }
        if let nodeID, !ResourceName.isValid(nodeID) { problems.append("nodeID must match [A-Za-z0-9._:-]{1,128}") }
        if redisURL != nil, (clusterSecret?.utf8.count ?? 0) < 16 { problems.append("cluster mode needs clusterSecret of at least 16 characters") }
        if !ResourceName.isValid(clusterName) { problems.append("clusterName must match [A-Za-z0-9._:-]{1,128}") }
        if redisDeadlineMilliseconds < 1 { problems.append("redisDeadlineMilliseconds must be at least 1") }
        if heartbeatIntervalMilliseconds < 100 { problems.append("heartbeatIntervalMilliseconds must be at least 100") }
        if postgresProbeIntervalMilliseconds < 50 { problems.append("postgresProbeIntervalMilliseconds must be at least 50") }
        if postgresMaxConnectionsPerHost < 1 { problems.append("postgresMaxConnectionsPerHost must be at least 1") }
        if postgresDeadlineMilliseconds < 10 { problems.append("postgresDeadlineMilliseconds must be at least 10") }
        if postgresStatementTimeoutMilliseconds < 0 { problems.append("postgresStatementTimeoutMilliseconds must not be negative") }
        if postgresMaxLagBytes < 0 || postgresMaxLagMilliseconds < 0 { problems.append("postgres lag bounds must not be negative") }
        for (name, policy) in policies.sorted(by: { $0.key < $1.key }) {
            if !ResourceName.isValid(name) { problems.append("policy name \(name) must match [A-Za-z0-9._:-]{1,128}") }
            if let problem = policy.validate().first { problems.append("policies.\(name).\(problem.key): \(problem.reason)") }
        }
        if let problem = defaultBreakerConfig.validate().first { problems.append("defaultBreakerConfig.\(problem.key): \(problem.reason)") }
        return problems
    }

    /// Path of the SQLite database inside the data directory.
    public var databasePath: String { (dataDirectory as NSString).appendingPathComponent("coordinator.sqlite") }
}

/// SQLite's `synchronous` setting as the node exposes it.
public enum SQLiteSynchronous: String, Sendable, CaseIterable {
    case full
    case normal
}

/// A configuration problem: names the key (dotted path), where it came from and why it is refused.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The dotted key path, e.g. `server.port`.
    public var key: String
    /// Why the value is refused.
    public var reason: String
    /// Where the value came from: a file path, an environment variable or a flag.
    public var source: String

    public init(key: String, reason: String, source: String) {
        self.key = key
        self.reason = reason
        self.source = source
    }

    public var description: String { "invalid configuration: \(key) (from \(source)): \(reason)" }
}

/// One configuration key: its dotted path, its type, and the environment variable that overrides it.
public struct ConfigurationKey: Sendable {
    /// The type of value a key takes.
    public enum Kind: Sendable {
        case string
        case integer(ClosedRange<Int64>)
        case choice([String])
        /// A JSON object, decoded by the key's owner. In the environment it is given as JSON text.
        case object
    }

    public var path: String
    public var kind: Kind
    public var help: String

    /// `server.maxBodyBytes` → `COORDINATOR_SERVER_MAX_BODY_BYTES`.
    public var environmentVariable: String {
        var name = "COORDINATOR_"
        for character in path {
            if character == "." {
                name.append("_")
            } else if character.isUppercase {
                name.append("_")
                name.append(character)
            } else {
                name.append(contentsOf: character.uppercased())
            }
        }
        return name
    }
}

/// Builds a `NodeConfiguration` from defaults, a JSON file, the environment and flags, refusing any
/// unknown key, wrong type or out-of-range value with an error that names the key.
public enum ConfigurationLoader {
    /// Every key the configuration file and the environment accept.
    public static let keys: [ConfigurationKey] = [
        .init(path: "server.host", kind: .string, help: "Address the HTTP server binds."),
        .init(path: "server.port", kind: .integer(0...65_535), help: "Port the HTTP server binds (0 = any free port)."),
        .init(path: "server.maxBodyBytes", kind: .integer(1_024...16_777_216), help: "Largest request body; larger gets 413."),
        .init(path: "dataDir", kind: .string, help: "Directory for the SQLite database and node files."),
        .init(path: "nodeId", kind: .string, help: "Stable node id; generated and persisted when absent."),
        .init(path: "adminToken", kind: .string, help: "Admin bearer token; generated, printed once and stored hashed when absent."),
        .init(path: "sqlite.synchronous", kind: .choice(SQLiteSynchronous.allCases.map(\.rawValue)), help: "full (fsync per commit) or normal."),
        .init(path: "limits.defaultPolicy", kind: .string, help: "Policy for tokens created without one."),
        .init(path: "limits.policies", kind: .object, help: "Policies created at start when the store lacks them (name → policy)."),
        .init(path: "breakers.default", kind: .object, help: "Configuration of breakers created on first use."),
        .init(path: "breakers.maxBreakers", kind: .integer(1...1_000_000), help: "Most breakers a node keeps."),
        .init(path: "breakers.maxOutstandingPermits", kind: .integer(1...100_000_000), help: "Most permits outstanding on a node."),
        .init(path: "limits.maxKeys", kind: .integer(1...100_000_000), help: "Most keys one policy's limiter holds."),
        .init(path: "tokenCache.capacity", kind: .integer(1...10_000_000), help: "Cached valid tokens."),
        .init(path: "tokenCache.ttlMs", kind: .integer(1...86_400_000), help: "How long a valid token stays cached."),
        .init(path: "tokenCache.sharedTtlMs", kind: .integer(1...86_400_000), help: "How long a valid token stays in the cluster's Redis cache (PostgreSQL store)."),
        .init(path: "tokenCache.negativeCapacity", kind: .integer(1...10_000_000), help: "Cached unknown secrets."),
        .init(path: "tokenCache.negativeTtlMs", kind: .integer(1...3_600_000), help: "How long an unknown secret stays cached."),
        .init(path: "maintenanceIntervalMs", kind: .integer(10...60_000), help: "Timer period: permit expiry, half-open timeouts, limiter sweep."),
        .init(path: "log.level", kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]), help: "Log level."),
        .init(path: "redisUrl", kind: .string, help: "Redis URL; turns cluster mode on."),
        .init(path: "clusterName", kind: .string, help: "Cluster name (nodes with the same Redis and name share state)."),
        .init(path: "clusterSecret", kind: .string, help: "Secret that signs bus messages; required in cluster mode."),
        .init(path: "onSharedStateLoss", kind: .choice(SharedStateLossMode.allCases.map(\.rawValue)), help: "Limits while Redis is unreachable."),
        .init(path: "redisDeadlineMs", kind: .integer(1...10_000), help: "Deadline of a hot-path Redis call."),
        .init(path: "heartbeatIntervalMs", kind: .integer(100...60_000), help: "Membership heartbeat period."),
        .init(path: "breakers.sharing", kind: .string, help: "Breaker sharing in cluster mode: any, local, quorum(n) or aggregate."),
        .init(path: "postgresUrl", kind: .string, help: "PostgreSQL URL (one or several hosts); turns the PostgreSQL store on."),
        .init(path: "postgres.probeIntervalMs", kind: .integer(50...60_000), help: "How often every PostgreSQL host is probed."),
        .init(path: "postgres.maxConnectionsPerHost", kind: .integer(1...1_000), help: "Most connections per PostgreSQL host."),
        .init(path: "postgres.statementTimeoutMs", kind: .integer(0...3_600_000), help: "Server-side statement_timeout (0: none)."),
        .init(path: "postgres.deadlineMs", kind: .integer(10...600_000), help: "Client-side deadline of one store call."),
        .init(path: "postgres.maxLagBytes", kind: .integer(0...(1 << 40)), help: "Replica reads need the replica within this WAL distance."),
        .init(path: "postgres.maxLagMs", kind: .integer(0...3_600_000), help: "Replica reads need the replica within this replay lag."),
    ]

    /// Command-line overrides, applied last.
    public struct Flags: Sendable {
        public var host: String?
        public var port: Int?
        public var dataDirectory: String?
        public var redisURL: String?
        public var clusterName: String?
        public var clusterSecret: String?
        public var nodeID: String?
        public var postgresURL: String?
        public init(
            host: String? = nil, port: Int? = nil, dataDirectory: String? = nil, redisURL: String? = nil,
            clusterName: String? = nil, clusterSecret: String? = nil, nodeID: String? = nil, postgresURL: String? = nil
        ) {
            self.postgresURL = postgresURL
            self.host = host
            self.port = port
            self.dataDirectory = dataDirectory
            self.redisURL = redisURL
            self.clusterName = clusterName
            self.clusterSecret = clusterSecret
            self.nodeID = nodeID
        }
    }

    /// Loads the configuration.
    /// - Parameters:
    ///   - file: path of a JSON configuration file, or `nil` for none.
    ///   - environment: the process environment (only `COORDINATOR_…` variables are read).
    ///   - flags: command-line overrides.
    public static func load(
        file: String?, environment: [String: String], flags: Flags = Flags()
    ) throws(ConfigurationError) -> NodeConfiguration {
        var values: [String: (value: Any, source: String)] = [:]

        if let file {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: file))
            } catch {
                throw ConfigurationError(key: "(file)", reason: "cannot read: \(error.localizedDescription)", source: file)
            }
            let root: Any
            do {
                root = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            } catch {
                throw ConfigurationError(key: "(file)", reason: "not valid JSON: \(describe(error))", source: file)
            }
            guard let object = root as? [String: Any] else {
                throw ConfigurationError(key: "(file)", reason: "the top level must be a JSON object", source: file)
            }
            try flatten(object, prefix: "", source: file, into: &values)
        }

        for key in keys {
            guard let text = environment[key.environmentVariable] else { continue }
            let source = "environment \(key.environmentVariable)"
            values[key.path] = (try parseEnvironmentValue(text, for: key, source: source), source)
        }

        if let host = flags.host { values["server.host"] = (host, "flag --host") }
        if let port = flags.port { values["server.port"] = (port, "flag --port") }
        if let dir = flags.dataDirectory { values["dataDir"] = (dir, "flag --data-dir") }
        if let url = flags.redisURL { values["redisUrl"] = (url, "flag --redis-url") }
        if let name = flags.clusterName { values["clusterName"] = (name, "flag --cluster-name") }
        if let secret = flags.clusterSecret { values["clusterSecret"] = (secret, "flag --cluster-secret") }
        if let node = flags.nodeID { values["nodeId"] = (node, "flag --node-id") }
        if let url = flags.postgresURL { values["postgresUrl"] = (url, "flag --postgres-url") }

        var configuration = NodeConfiguration()
        for key in keys {
            guard let (value, source) = values[key.path] else { continue }
            try apply(value, key: key, source: source, to: &configuration)
        }
        try validate(configuration)
        return configuration
    }

    private static let keysByPath: [String: ConfigurationKey] = Dictionary(uniqueKeysWithValues: keys.map { ($0.path, $0) })

    private static func flatten(
        _ object: [String: Any], prefix: String, source: String, into values: inout [String: (value: Any, source: String)]
    ) throws(ConfigurationError) {
        for (name, value) in object {
            let path = prefix.isEmpty ? name : "\(prefix).\(name)"
            if let key = keysByPath[path] {
                if case .object = key.kind {
                    values[path] = (value, source)
                } else if value is [String: Any] || value is [Any] {
                    throw ConfigurationError(key: path, reason: "expected a \(describe(key.kind)), got a JSON \(value is [Any] ? "array" : "object")", source: source)
                } else {
                    values[path] = (value, source)
                }
            } else if let nested = value as? [String: Any], keys.contains(where: { $0.path.hasPrefix(path + ".") }) {
                try flatten(nested, prefix: path, source: source, into: &values)
            } else {
                let known = keys.map(\.path).joined(separator: ", ")
                throw ConfigurationError(key: path, reason: "unknown key (known keys: \(known))", source: source)
            }
        }
    }

    private static func parseEnvironmentValue(_ text: String, for key: ConfigurationKey, source: String) throws(ConfigurationError) -> Any {
        switch key.kind {
        case .string, .choice:
            return text
        case .integer:
            guard let number = Int64(text.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigurationError(key: key.path, reason: "expected an integer, got \"\(text)\"", source: source)
            }
            return number
        case .object:
            do {
                return try JSONSerialization.jsonObject(with: Data(text.utf8))
            } catch {
                throw ConfigurationError(key: key.path, reason: "expected a JSON object: \(describe(error))", source: source)
            }
        }
    }

    private static func apply(_ value: Any, key: ConfigurationKey, source: String, to configuration: inout NodeConfiguration) throws(ConfigurationError) {
        switch key.kind {
        case .string:
            guard let text = value as? String else {
                throw ConfigurationError(key: key.path, reason: "expected a string", source: source)
            }
            guard !text.isEmpty else { throw ConfigurationError(key: key.path, reason: "must not be empty", source: source) }
            switch key.path {
            case "server.host": configuration.host = text
            case "dataDir": configuration.dataDirectory = text
            case "nodeId":
                guard ResourceName.isValid(text) else {
                    throw ConfigurationError(key: key.path, reason: "must match [A-Za-z0-9._:-]{1,128}", source: source)
                }
                configuration.nodeID = text
            case "adminToken":
                guard text.utf8.count >= 16 else {
                    throw ConfigurationError(key: key.path, reason: "must be at least 16 characters", source: source)
                }
                configuration.adminToken = text
            case "redisUrl":
                guard text.hasPrefix("redis://") else {
                    throw ConfigurationError(key: key.path, reason: "must look like redis://[user:password@]host:port/db", source: source)
                }
                configuration.redisURL = text
            case "postgresUrl":
                guard text.hasPrefix("postgresql://") || text.hasPrefix("postgres://") || text.contains("=") else {
                    throw ConfigurationError(
                        key: key.path, reason: "must be a libpq URL (postgresql://user@host:port[,host:port…]/db) or key=value string",
                        source: source)
                }
                configuration.postgresURL = text
            case "clusterName":
                guard ResourceName.isValid(text) else {
                    throw ConfigurationError(key: key.path, reason: "must match [A-Za-z0-9._:-]{1,128}", source: source)
                }
                configuration.clusterName = text
            case "clusterSecret":
                guard text.utf8.count >= 16 else {
                    throw ConfigurationError(key: key.path, reason: "must be at least 16 characters", source: source)
                }
                configuration.clusterSecret = text
            case "breakers.sharing":
                let sharing: BreakerSharing
                do {
                    sharing = try BreakerSharing.parse(text, key: key.path)
                } catch {
                    throw ConfigurationError(key: key.path, reason: error.reason, source: source)
                }
                configuration.breakerSharing = sharing
            case "limits.defaultPolicy":
                guard ResourceName.isValid(text) else {
                    throw ConfigurationError(key: key.path, reason: "must match [A-Za-z0-9._:-]{1,128}", source: source)
                }
                configuration.defaultPolicyName = text
            default: break
            }
        case .integer(let range):
            guard let number = Self.exactInteger(value) else {
                throw ConfigurationError(key: key.path, reason: "expected an integer", source: source)
            }
            guard range.contains(number) else {
                throw ConfigurationError(key: key.path, reason: "must be between \(range.lowerBound) and \(range.upperBound), got \(number)", source: source)
            }
            switch key.path {
            case "server.port": configuration.port = Int(number)
            case "server.maxBodyBytes": configuration.maxBodyBytes = Int(number)
            case "breakers.maxBreakers": configuration.maxBreakers = Int(number)
            case "breakers.maxOutstandingPermits": configuration.maxOutstandingPermits = Int(number)
            case "limits.maxKeys": configuration.maxLimiterKeys = Int(number)
            case "tokenCache.capacity": configuration.tokenCacheCapacity = Int(number)
            case "tokenCache.ttlMs": configuration.tokenCacheTTLMilliseconds = number
            case "tokenCache.sharedTtlMs": configuration.tokenCacheSharedTTLMilliseconds = number
            case "tokenCache.negativeCapacity": configuration.negativeCacheCapacity = Int(number)
            case "tokenCache.negativeTtlMs": configuration.negativeCacheTTLMilliseconds = number
            case "maintenanceIntervalMs": configuration.maintenanceIntervalMilliseconds = number
            case "redisDeadlineMs": configuration.redisDeadlineMilliseconds = number
            case "heartbeatIntervalMs": configuration.heartbeatIntervalMilliseconds = number
            case "postgres.probeIntervalMs": configuration.postgresProbeIntervalMilliseconds = number
            case "postgres.maxConnectionsPerHost": configuration.postgresMaxConnectionsPerHost = Int(number)
            case "postgres.statementTimeoutMs": configuration.postgresStatementTimeoutMilliseconds = number
            case "postgres.deadlineMs": configuration.postgresDeadlineMilliseconds = number
            case "postgres.maxLagBytes": configuration.postgresMaxLagBytes = number
            case "postgres.maxLagMs": configuration.postgresMaxLagMilliseconds = number
            default: break
            }
        case .choice(let choices):
            guard let text = value as? String, choices.contains(text) else {
                throw ConfigurationError(key: key.path, reason: "must be one of \(choices.joined(separator: ", "))", source: source)
            }
            switch key.path {
            case "sqlite.synchronous": configuration.sqliteSynchronous = SQLiteSynchronous(rawValue: text)!
            case "log.level": configuration.logLevel = text
            case "onSharedStateLoss": configuration.onSharedStateLoss = SharedStateLossMode(rawValue: text)!

            default: break
            }
        case .object:
            guard let object = value as? [String: Any] else {
                throw ConfigurationError(key: key.path, reason: "expected a JSON object", source: source)
            }
            let data: Data
            do {
                data = try JSONSerialization.data(withJSONObject: object)
            } catch {
                throw ConfigurationError(key: key.path, reason: describe(error), source: source)
            }
            switch key.path {
            case "limits.policies":
                var policies: [String: LimitPolicy] = [:]
                for (name, body) in object {
                    guard ResourceName.isValid(name) else {
                        throw ConfigurationError(key: "\(key.path).\(name)", reason: "policy names must match [A-Za-z0-9._:-]{1,128}", source: source)
                    }
                    let policy: LimitPolicy = try decodeObject(body, key: "\(key.path).\(name)", source: source)
                    if let problem = policy.validate().first {
                        throw ConfigurationError(key: "\(key.path).\(name).\(problem.key)", reason: problem.reason, source: source)
                    }
                    policies[name] = policy
                }
                // The built-in `default` policy stays unless the file defines its own.
                configuration.policies = ["default": LimitPolicy.pilotDefault].merging(policies) { $1 }
            case "breakers.default":
                let config: BreakerConfig = try decodeJSON(data, key: key.path, source: source)
                if let problem = config.validate().first {
                    throw ConfigurationError(key: "\(key.path).\(problem.key)", reason: problem.reason, source: source)
                }
                configuration.defaultBreakerConfig = config
            default: break
            }
        }
    }

    /// The value as an exact integer: JSON booleans and fractional numbers are refused.
    static func exactInteger(_ value: Any) -> Int64? {
        if let integer = value as? Int64, type(of: value) == Int64.self { return integer }
        guard let number = value as? NSNumber, !(value is String) else { return nil }
        let kind = String(cString: number.objCType)
        if kind == "c" || kind == "B" || type(of: value) == Bool.self { return nil }
        if number === NSNumber(value: true) || number === NSNumber(value: false) { return nil }
        let double = number.doubleValue
        guard double.rounded() == double else { return nil }
        return Int64(exactly: double)
    }

    private static func validate(_ configuration: NodeConfiguration) throws(ConfigurationError) {
        if configuration.redisURL != nil, configuration.clusterSecret == nil {
            throw ConfigurationError(
                key: "clusterSecret", reason: "cluster mode (redisUrl is set) needs a shared secret of at least 16 characters to sign bus messages",
                source: "COORDINATOR_CLUSTER_SECRET or --cluster-secret")
        }
        if configuration.policies[configuration.defaultPolicyName] == nil, configuration.defaultPolicyName != "default" {
            // A default policy that the config does not define must already be in the store; the node
            // checks that at start. Nothing to refuse here.
        }
    }

    private static func decodeObject<T: Decodable>(_ value: Any, key: String, source: String) throws(ConfigurationError) -> T {
        guard JSONSerialization.isValidJSONObject(value) else {
            throw ConfigurationError(key: key, reason: "expected a JSON object", source: source)
        }
        let data: Data
        do {
            data = try JSONSerialization.data(withJSONObject: value)
        } catch {
            throw ConfigurationError(key: key, reason: describe(error), source: source)
        }
        return try decodeJSON(data, key: key, source: source)
    }

    private static func decodeJSON<T: Decodable>(_ data: Data, key: String, source: String) throws(ConfigurationError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            let (path, reason) = JSONProblem.describe(error)
            throw ConfigurationError(key: path.isEmpty ? key : "\(key).\(path)", reason: reason, source: source)
        }
    }

    private static func describe(_ kind: ConfigurationKey.Kind) -> String {
        switch kind {
        case .string: "string"
        case .integer: "integer"
        case .choice(let choices): "one of \(choices.joined(separator: ", "))"
        case .object: "JSON object"
        }
    }

    private static func describe(_ error: any Error) -> String {
        let nsError = error as NSError
        return (nsError.userInfo[NSDebugDescriptionErrorKey] as? String) ?? nsError.localizedDescription
    }
}


/// Turns a `DecodingError` into a dotted key path and a sentence, for configuration and HTTP bodies.
public enum JSONProblem {
    /// The key path (`limits[0].rate`) and reason of a decoding failure.
    public static func describe(_ error: any Error) -> (path: String, reason: String) {
        guard let decodingError = error as? DecodingError else {
            return ("", String(describing: error))
        }
        switch decodingError {
        case .typeMismatch(let type, let context):
            return (path(context.codingPath), "expected \(typeName(type))")
        case .valueNotFound(let type, let context):
            return (path(context.codingPath), "expected \(typeName(type)), got null")
        case .keyNotFound(let key, let context):
            return (path(context.codingPath + [key]), "is required")
        case .dataCorrupted(let context):
            let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return (path(context.codingPath), underlying.map { "not valid JSON: \($0)" } ?? context.debugDescription)
        @unknown default:
            return ("", String(describing: decodingError))
        }
    }

    static func path(_ codingPath: [any CodingKey]) -> String {
        var result = ""
        for key in codingPath {
            if let index = key.intValue {
                result += "[\(index)]"
            } else {
                result += result.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return result
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is Int32.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "a boolean"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "a \(name)"
        }
    }
}
