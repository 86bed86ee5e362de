import ConnectionThreads
/// One blocking libpq connection, driven from async code.
///
/// All libpq calls run on a dedicated thread owned by this connection; the
/// calling task is suspended (not blocked) meanwhile. Statements run in the
/// order `query` was called. libpq has no client-side statement timeout: bound
/// server-side work with `statement_timeout` (e.g. `options=-c statement_timeout=5s`
/// in the conninfo). Task cancellation does not interrupt a statement in flight.
public final class PostgresConnection: Sendable {
    private let executor: BlockingExecutor
    private let connection: LibPQConnection

    private init(executor: BlockingExecutor, connection: LibPQConnection) {
        self.executor = executor
        self.connection = connection
    }

    deinit {
        // PQfinish on the connection's own thread, after any queued statements.
        let connection = self.connection
        executor.submit { connection.close() }
        executor.shutdown()
    }

    /// `conninfo`: `key=value ...` or a `postgresql://` URI, multi-host
    /// allowed (add `target_session_attrs=read-write` to reach the primary).
    public static func connect(conninfo: String, connectTimeout: Duration = .seconds(5)) async throws(PostgresError) -> PostgresConnection {
        let executor = BlockingExecutor(name: "postgres")
        let seconds = Int(connectTimeout.components.seconds) + (connectTimeout.components.attoseconds > 0 ? 1 : 0)
        do throws(PostgresError) {
            let connection = try await executor.run(ifShutDown: closedError) { () throws(PostgresError) -> LibPQConnection in
                try LibPQConnection.connect(conninfo: conninfo, connectTimeoutSeconds: seconds)
            }
            return PostgresConnection(executor: executor, connection: connection)
        } catch {
            executor.shutdown()
            throw error
        }
    }

    /// Runs one statement with bound text parameters (`$1`, `$2`, ...; nil is
    /// SQL NULL) and returns its rows in text format (nil for NULL). Statements
    /// without a result set return `[]`.
    public func query(_ sql: String, _ params: [String?] = []) async throws(PostgresError) -> [[String?]] {
        let connection = self.connection
        return try await executor.run(ifShutDown: Self.closedError) { () throws(PostgresError) -> [[String?]] in
            try connection.query(sql, params)
        }
    }

    /// Closes the connection. Statements already queued run first; later ones
    /// throw `.connectionClosed`. Idempotent.
    public func close() async {
        let connection = self.connection
        _ = try? await executor.run(ifShutDown: Self.closedError) { () throws(PostgresError) in
            connection.close()
        }
        executor.shutdown()
    }

    @Sendable
    private static func closedError() -> PostgresError {
        PostgresError(code: .connectionClosed, message: "connection closed")
    }
}
