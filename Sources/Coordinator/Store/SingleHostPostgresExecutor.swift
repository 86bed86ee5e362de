import PostgresClient
import Synchronization

/// The trivial ``PostgresExecutor``: a small pool of connections to one server, used for reads and
/// writes alike.
///
/// Every requirement is met by the one server, so `read` ignores its ``ReadRequirement``. `write`
/// runs its body, then reads `pg_current_wal_insert_lsn()` on the same connection: the body's commit
/// records were inserted before that position, so the value returned (and reported to
/// `RequestConsistency.lsnSink`) is at least each of their end LSNs. (Not `pg_current_wal_lsn()`:
/// that is the *write* position, which lags the commit record under `synchronous_commit = off`, so a
/// replica could reach it without having replayed the commit.)
///
/// Connections are opened on demand up to `maxConnections`; callers beyond that wait for one to be
/// returned (a waiting caller is not woken by task cancellation). A connection is dropped from the
/// pool after it broke; after a body failed the pool sends `ROLLBACK` so that no connection goes back
/// in the middle of a transaction.
public final class SingleHostPostgresExecutor: PostgresExecutor {
    /// What the pool tells a caller waiting for a connection.
    private enum Grant: Sendable {
        /// Use this idle connection.
        case use(PostgresConnection)
        /// A slot was reserved: open a new connection.
        case open
    }

    private struct State {
        var idle: [PostgresConnection] = []
        /// Connections open or being opened (idle + in use + reserved).
        var count = 0
        var waiters: [CheckedContinuation<Grant, any Error>] = []
        var closed = false
    }

    /// The conninfo every connection is opened with.
    public let conninfo: String
    /// The most connections open at once.
    public let maxConnections: Int
    private let connectTimeout: Duration
    private let state = Mutex(State())

    /// A pool of up to `maxConnections` connections to `conninfo` (`key=value …` or a
    /// `postgresql://` URI). Nothing is opened until the first call.
    public init(conninfo: String, maxConnections: Int = 4, connectTimeout: Duration = .seconds(5)) {
        self.conninfo = conninfo
        self.maxConnections = max(1, maxConnections)
        self.connectTimeout = connectTimeout
    }

    /// Runs `body` on a pooled connection, then reads `pg_current_wal_insert_lsn()` there, reports
    /// it to `RequestConsistency.lsnSink` and returns it.
    ///
    /// Throws what `body` throws, or a `PostgresError` (`.connectionClosed` after ``close()``).
    public func write<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> (value: T, commitLSN: UInt64) {
        try await withConnection { connection in
            let value = try await body(connection)
            let rows = try await connection.boundedQuery("SELECT pg_current_wal_insert_lsn()::text")
            guard let text = rows.first?.first ?? nil, let lsn = LSNText.parse(text) else {
                throw PostgresError(
                    code: .unexpectedResult, message: "pg_current_wal_insert_lsn() returned \(String(describing: rows))")
            }
            RequestConsistency.lsnSink?.record(lsn)
            return (value, lsn)
        }
    }

    /// Runs `body` on a pooled connection; the one server satisfies every `requirement`.
    public func read<T: Sendable>(
        _ requirement: ReadRequirement, _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await withConnection(body)
    }

    /// Closes idle connections now and the others when they are returned; calls waiting for a
    /// connection and later calls fail with `PostgresError.Code.connectionClosed`. Idempotent.
    public func close() async {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            let idle = state.idle
            let waiters = state.waiters
            state.count -= idle.count
            state.idle = []
            state.waiters = []
            return (idle, waiters)
        }
        for waiter in waiters { waiter.resume(throwing: Self.closedError()) }
        for connection in idle { await connection.close() }
    }

    /// How many connections are open or being opened (for tests and metrics).
    public var openConnectionCount: Int { state.withLock { $0.count } }

    // MARK: Pool

    private func withConnection<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await acquire()
        let value: T
        do {
            value = try await body(connection)
        } catch {
            await recycle(connection, after: error)
            throw error
        }
        await release(connection, healthy: true)
        return value
    }

    private func acquire() async throws -> PostgresConnection {
        let grant = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Grant, any Error>) in
            let immediate: Result<Grant, any Error>? = state.withLock { state in
                if state.closed { return .failure(Self.closedError()) }
                if let connection = state.idle.popLast() { return .success(.use(connection)) }
                if state.count < maxConnections {
                    state.count += 1
                    return .success(.open)
                }
                state.waiters.append(continuation)
                return nil
            }
            if let immediate { continuation.resume(with: immediate) }
        }
        switch grant {
        case .use(let connection):
            return connection
        case .open:
            let connection: PostgresConnection
            do {
                connection = try await PostgresConnection.connect(conninfo: conninfo, connectTimeout: connectTimeout)
            } catch {
                // Give the slot back; a waiter (if any) gets to try its own connect.
                await release(nil, healthy: false)
                throw error
            }
            if state.withLock({ $0.closed }) {
                await release(connection, healthy: false)
                throw Self.closedError()
            }
            return connection
        }
    }

    /// After `body` failed: a connection that broke is dropped; any other gets a `ROLLBACK` (a no-op
    /// outside a transaction) and is dropped only if that fails too.
    private func recycle(_ connection: PostgresConnection, after error: any Error) async {
        if let error = error as? PostgresError, error.code == .connectionLost || error.code == .connectionClosed {
            await release(connection, healthy: false)
            return
        }
        do {
            _ = try await connection.boundedQuery("ROLLBACK")
            await release(connection, healthy: true)
        } catch {
            await release(connection, healthy: false)
        }
    }

    /// Returns `connection` to the pool (or drops it, freeing its slot, when `healthy` is false or
    /// it is `nil`).
    private func release(_ connection: PostgresConnection?, healthy: Bool) async {
        enum Outcome {
            case kept
            case drop(PostgresConnection?)
            case handOver(CheckedContinuation<Grant, any Error>, Grant, drop: PostgresConnection?)
        }
        let outcome: Outcome = state.withLock { state in
            if let connection, healthy, !state.closed {
                if !state.waiters.isEmpty {
                    return .handOver(state.waiters.removeFirst(), .use(connection), drop: nil)
                }
                state.idle.append(connection)
                return .kept
            }
            // The slot is free again: a waiter may open a new connection in it.
            if !state.closed, !state.waiters.isEmpty {
                return .handOver(state.waiters.removeFirst(), .open, drop: connection)
            }
            state.count -= 1
            return .drop(connection)
        }
        switch outcome {
        case .kept:
            break
        case .drop(let connection):
            await connection?.close()
        case .handOver(let waiter, let grant, let connection):
            waiter.resume(returning: grant)
            await connection?.close()
        }
    }

    @Sendable
    private static func closedError() -> PostgresError {
        PostgresError(code: .connectionClosed, message: "the PostgreSQL executor is closed")
    }
}
