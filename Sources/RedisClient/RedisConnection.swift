import ConnectionThreads
/// One blocking hiredis connection, driven from async code.
///
/// All hiredis calls run on a dedicated thread owned by this connection; the
/// calling task is suspended (not blocked) meanwhile. Commands are sent in the
/// order `send` was called. Every command is bounded by `commandTimeout`;
/// after a timeout or I/O error the connection is unusable (`.connectionClosed`)
/// and must be replaced. Task cancellation does not interrupt a command in
/// flight: the timeout does.
public final class RedisConnection: Sendable {
    public let configuration: RedisConfiguration
    private let executor: BlockingExecutor
    private let context: HiredisContext

    private init(configuration: RedisConfiguration, executor: BlockingExecutor, context: HiredisContext) {
        self.configuration = configuration
        self.executor = executor
        self.context = context
    }

    deinit {
        // Free the context on its own thread, after any queued commands.
        let context = self.context
        executor.submit { context.close() }
        executor.shutdown()
    }

    /// Connects to `redis://[[user]:password@]host[:port][/db]`, then sends
    /// AUTH and SELECT as the URL asks.
    public static func connect(
        url: String,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5)
    ) async throws(RedisError) -> RedisConnection {
        try await connect(
            configuration: RedisConfiguration(url: url),
            connectTimeout: connectTimeout,
            commandTimeout: commandTimeout
        )
    }

    public static func connect(
        configuration: RedisConfiguration,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5)
    ) async throws(RedisError) -> RedisConnection {
        let executor = BlockingExecutor(name: "redis \(configuration.host):\(configuration.port)")
        do throws(RedisError) {
            let context = try await executor.run(ifShutDown: closedError) { () throws(RedisError) -> HiredisContext in
                let context = try HiredisContext.connect(
                    host: configuration.host, port: configuration.port, timeout: connectTimeout)
                try context.setCommandTimeout(commandTimeout)
                if let password = configuration.password {
                    let auth = configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                    do throws(RedisError) {
                        _ = try context.command(auth)
                    } catch where error.code == .server {
                        throw RedisError(code: .authenticationFailed, message: error.message)
                    }
                }
                if configuration.database != 0 {
                    _ = try context.command(["SELECT", String(configuration.database)])
                }
                return context
            }
            return RedisConnection(configuration: configuration, executor: executor, context: context)
        } catch {
            executor.shutdown()
            throw error
        }
    }

    /// Sends one command, e.g. `["SET", "k", "v"]`, and returns its reply.
    /// An error reply from the server is thrown as `RedisError(code: .server)`.
    public func send(_ args: [String]) async throws(RedisError) -> RedisReply {
        let context = self.context
        return try await executor.run(ifShutDown: Self.closedError) { () throws(RedisError) -> RedisReply in
            try context.command(args)
        }
    }

    public func send(_ args: String...) async throws(RedisError) -> RedisReply {
        try await send(args)
    }

    /// Closes the socket. Commands already queued run first; later ones throw
    /// `.connectionClosed`. Idempotent.
    public func close() async {
        let context = self.context
        _ = try? await executor.run(ifShutDown: Self.closedError) { () throws(RedisError) in
            context.close()
        }
        executor.shutdown()
    }

    @Sendable
    private static func closedError() -> RedisError {
        RedisError(code: .connectionClosed, message: "connection closed")
    }
}
