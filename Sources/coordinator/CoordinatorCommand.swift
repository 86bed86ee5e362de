import ArgumentParser
import Coordinator
import CoordinatorHTTP
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

@main
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Shared circuit breakers, rate limits and token checks for multi-replica services.",
        subcommands: [Serve.self, TokenCommand.self, Bench.self, Load.self, ProxyCommand.self, Version.self],
        defaultSubcommand: Serve.self
    )
}

/// Options every command that opens the node's data shares.
struct NodeOptions: ParsableArguments {
    @Option(name: .long, help: "JSON configuration file (see README, \"Configuration\").")
    var config: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (default ./coordinator-data).")
    var dataDir: String?

    @Option(name: .customLong("redis-url"), help: "Redis URL (redis://[user:password@]host:port/db): turns cluster mode on.")
    var redisURL: String?

    @Option(name: .customLong("cluster-name"), help: "Cluster name (default coordinator).")
    var clusterName: String?

    @Option(name: .customLong("cluster-secret"), help: "Secret that signs bus messages (or COORDINATOR_CLUSTER_SECRET).")
    var clusterSecret: String?

    @Option(name: .customLong("node-id"), help: "Stable node id (default: generated and kept in the data directory).")
    var nodeID: String?

    @Option(name: .customLong("postgres-url"), help: "PostgreSQL URL, one or several hosts (postgresql://user@h1:5432,h2:5433/db): turns the PostgreSQL store on.")
    var postgresURL: String?

    func load(host: String? = nil, port: Int? = nil) throws -> NodeConfiguration {
        try ConfigurationLoader.load(
            file: config, environment: ProcessInfo.processInfo.environment,
            flags: .init(
                host: host, port: port, dataDirectory: dataDir, redisURL: redisURL, clusterName: clusterName,
                clusterSecret: clusterSecret, nodeID: nodeID, postgresURL: postgresURL)
        )
    }
}

func makeLogger(level: String) -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = Logger.Level(rawValue: level) ?? .info
        return handler
    }
    return Logger(label: "coordinator")
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a node (pilot mode: SQLite and in-memory state).")

    @OptionGroup var node: NodeOptions

    @Option(name: .long, help: "Address to bind (default 127.0.0.1).")
    var host: String?

    @Option(name: .long, help: "Port to bind (default 8080; 0 picks a free port).")
    var port: Int?

    func validate() throws {
        if let port, !(0...65_535).contains(port) { throw ValidationError("--port must be between 0 and 65535") }
        if let host, host.isEmpty { throw ValidationError("--host must not be empty") }
    }

    func run() async throws {
        // A peer that closes a socket must make a write fail with EPIPE, never kill the node
        // silently: the C clients' threads already block SIGPIPE; this covers every other thread.
        signal(SIGPIPE, SIG_IGN)
        let configuration = try node.load(host: host, port: port)
        let logger = makeLogger(level: configuration.logLevel)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        let started = try await CoordinatorNode.start(configuration: configuration, logger: logger)
        if let token = started.generatedAdminToken {
            writeStandardOutput("Admin token (shown once, stored hashed): \(token)\n")
        }
        let api = CoordinatorAPI(node: started.node, registry: registry)
        let app = Application(
            router: api.makeRouter(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "coordinator"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                writeStandardOutput("coordinator \(CoordinatorVersion.string) node \(started.node.nodeID) listening on http://\(configuration.host):\(port)\n")
            },
            logger: logger
        )
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: NodeService(node: started.node))]
        if started.node.cluster != nil {
            services.append(.init(service: ClusterService(node: started.node)))
        }
        services.append(.init(service: app))
        services.append(.init(service: NodeDrainService(node: started.node)))
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            logger.critical("node stopped by an error", metadata: ["error": "\(error)"])
            throw error
        }
        logger.notice("node stopped")
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Manage tokens in a node's data directory.",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    static func withNode<T>(_ options: NodeOptions, _ body: (CoordinatorNode) async throws -> T) async throws -> T {
        let configuration = try options.load()
        var logger = Logger(label: "coordinator")
        logger.logLevel = .warning
        let started = try await CoordinatorNode.start(configuration: configuration, logger: logger)
        if let token = started.generatedAdminToken {
            FileHandle.standardError.write(Data("Admin token (shown once, stored hashed): \(token)\n".utf8))
        }
        do {
            let result = try await body(started.node)
            await started.node.shutdown()
            return result
        } catch {
            await started.node.shutdown()
            throw error
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token and print its secret (shown once).")
        @OptionGroup var node: NodeOptions
        @Option(help: "Who the token is for.") var subject: String
        @Option(help: "Limit policy (default: limits.defaultPolicy).") var policy: String?
        @Option(name: .customLong("ttl-seconds"), help: "Lifetime in seconds (default: never expires).") var ttlSeconds: Int64?

        func run() async throws {
            let created = try await TokenCommand.withNode(node) { try await $0.createToken(subject: subject, policy: policy, ttlSeconds: ttlSeconds, actor: "cli") }
            print("id:      \(created.token.id)")
            print("secret:  \(created.secret)")
            print("subject: \(created.token.subject)")
            print("policy:  \(created.token.policy)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never secrets).")
        @OptionGroup var node: NodeOptions

        func run() async throws {
            let tokens = try await TokenCommand.withNode(node) { try await $0.tokens() }
            print("ID                          SUBJECT              POLICY       STATUS")
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            for token in tokens {
                let status = token.revokedAt != nil ? "revoked" : (token.expiresAt.map { $0 <= now } ?? false) ? "expired" : "active"
                print("\(token.id.padding(toLength: 28, withPad: " ", startingAt: 0)) \(token.subject.padding(toLength: 20, withPad: " ", startingAt: 0)) \(token.policy.padding(toLength: 12, withPad: " ", startingAt: 0)) \(status)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token. A running node honours it within tokenCache.ttlMs; DELETE /v1/tokens/{id} on the node is immediate."
        )
        @OptionGroup var node: NodeOptions
        @Argument(help: "Token id (tok_…).") var id: String

        func run() async throws {
            let token = try await TokenCommand.withNode(node) { try await $0.revokeToken(id: id, actor: "cli") }
            print("revoked \(token.id)")
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() {
        print("coordinator \(CoordinatorVersion.string)")
    }
}

/// Writes straight to standard output (unbuffered), so a supervisor reading the pipe sees the line at once.
func writeStandardOutput(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}
