import ConnectionThreads
import Synchronization

/// Where the session stands with respect to transactions (`PQtransactionStatus`).
public enum PostgresTransactionStatus: String, Sendable, Equatable {
    /// Not in a transaction.
    case idle
    /// A statement is running.
    case active
    /// Inside a transaction block.
    case inTransaction
    /// Inside a failed transaction block (only ROLLBACK is accepted).
    case failedTransaction
    /// The connection is broken or closed.
    case unknown
}

/// What a connection knows about its server, refreshed after every call.
public struct PostgresServerStatus: Sendable, Equatable {
    /// The host actually connected to (`PQhost`; a socket directory for
    /// Unix-domain connections).
    public var host: String
    /// The port actually connected to (`PQport`).
    public var port: Int
    /// `PQserverVersion`, e.g. 150018 for 15.18.
    public var serverVersion: Int
    /// The server's `server_version` text, e.g. `15.18 (Debian 15.18-1)`.
    public var serverVersionText: String
    /// The backend process id serving this session.
    public var backendPID: Int32
    /// The server's `in_hot_standby` (PostgreSQL 14+): true on a standby,
    /// false on a primary; nil on older servers. Servers report changes (a
    /// promotion) with the next statement's answer, so a router sees a
    /// promotion on the next call on any of its connections.
    public var inHotStandby: Bool?
    /// The server's `default_transaction_read_only` (PostgreSQL 14+ reports it).
    public var defaultTransactionReadOnly: Bool?
    /// The session's transaction state after the last call.
    public var transactionStatus: PostgresTransactionStatus

    /// `host:port` (IPv6 hosts in brackets).
    public var id: String { PostgresHostTarget.makeID(host: host, port: port) }
}

/// One libpq connection, driven from async code.
///
/// All libpq calls run on a dedicated thread owned by this connection; the
/// calling task is suspended (not blocked) meanwhile. Statements run in the
/// order they were called.
///
/// Deadlines: `execute`, `query(_:_:deadline:)`, `withTransaction` and
/// `notify` take an optional deadline. A caller is never held past it, even
/// when the server hangs and the connection thread is stuck: the call throws
/// `.timeout` at the deadline, a cancel request (`PQcancel`) is sent from a
/// separate thread, and the connection becomes broken (`isBroken`; later calls
/// throw `.connectionLost`), so a pool discards it. The same happens when the
/// calling task is cancelled (`.cancelled`) — also when the call was still
/// waiting behind another one, which is then abandoned too. A deadline that
/// has already passed when the call is made throws `.timeout` at once and
/// leaves the connection usable.
///
/// The original `query(_:_:)` keeps its behaviour: no deadline, and task
/// cancellation does not interrupt it.
public final class PostgresConnection: Sendable {
    let executor: BlockingExecutor
    let handle: LibPQConnection
    private let shared: Mutex<Shared>

    private struct Shared {
        var health = Health.ok
        var cancelSent = false
        var snapshot: SessionSnapshot
    }

    enum Health {
        case ok
        case broken(PostgresError)
        case closed
    }

    /// The host actually connected to (`PQhost`).
    public var host: String { handle.identity.host }
    /// The port actually connected to (`PQport`).
    public var port: Int { handle.identity.port }
    /// The backend process id serving this session.
    public var backendPID: Int32 { handle.identity.backendPID }
    /// `PQserverVersion`, e.g. 150018.
    public var serverVersion: Int { handle.identity.serverVersion }

    private init(executor: BlockingExecutor, handle: LibPQConnection) {
        self.executor = executor
        self.handle = handle
        self.shared = Mutex(Shared(snapshot: handle.snapshot()))
    }

    deinit {
        // PQfinish on the connection's own thread, after any queued statements.
        let handle = self.handle
        executor.submit { handle.close() }
        executor.shutdown()
    }

    // MARK: - connect

    /// Connects. `conninfo`: `key=value ...` or a `postgresql://` URI,
    /// multi-host allowed (add `target_session_attrs=read-write` to reach the
    /// primary; libpq tries the hosts in turn, all within `connectTimeout`).
    /// Use `PostgresURL.parse` to get one conninfo per host.
    ///
    /// `connectTimeout` bounds the whole connect (a hung server included);
    /// when it passes the call throws `.connectionFailed` ("timed out").
    /// `statementTimeout` sets the session's `statement_timeout` (server side:
    /// a statement running longer fails with SQLSTATE 57014). If the calling
    /// task is cancelled the connect is abandoned (`.cancelled`).
    public static func connect(
        conninfo: String, connectTimeout: Duration = .seconds(5), statementTimeout: Duration? = nil
    ) async throws(PostgresError) -> PostgresConnection {
        let executor = BlockingExecutor(name: "postgres")
        let deadline = ContinuousClock.now + connectTimeout
        let stop = StopFlag()
        let outcome = await race(
            executor: executor, deadline: deadline, honourCancellation: true,
            timeoutError: PostgresError(code: .connectionFailed, message: "connect timed out after \(connectTimeout)"),
            job: { (gate: CallGate<LibPQConnection>) in
                guard gate.start() else { return }
                let outcome: CallOutcome<LibPQConnection>
                do throws(PostgresError) {
                    outcome = .success(try LibPQConnection.connect(
                        conninfo: conninfo, deadline: deadline, statementTimeout: statementTimeout,
                        shouldStop: { stop.isSet }))
                } catch {
                    outcome = .failure(error)
                }
                // When the caller already gave up, the dropped connection is
                // finished right here, on its own thread.
                gate.resolve(outcome)
            },
            onAbandon: { _, _ in stop.set() })
        switch outcome {
        case .success(let handle):
            return PostgresConnection(executor: executor, handle: handle)
        case .failure(let error):
            executor.shutdown()
            throw error
        }
    }

    /// Connects to one host of a parsed URL (see `PostgresURL.parse`).
    public static func connect(
        target: PostgresHostTarget, connectTimeout: Duration = .seconds(5), statementTimeout: Duration? = nil
    ) async throws(PostgresError) -> PostgresConnection {
        try await connect(conninfo: target.conninfo, connectTimeout: connectTimeout, statementTimeout: statementTimeout)
    }

    // MARK: - statements

    /// Runs one statement with bound text parameters (`$1`, `$2`, ...; nil is
    /// SQL NULL) and returns its rows in text format (nil for NULL). Statements
    /// without a result set return `[]`. No deadline; task cancellation does
    /// not interrupt it.
    public func query(_ sql: String, _ params: [String?] = []) async throws(PostgresError) -> [[String?]] {
        try await textQuery(sql, params, deadline: nil, honourCancellation: false)
    }

    /// `query(_:_:)` with a deadline (see the type's documentation); also
    /// honours task cancellation.
    public func query(_ sql: String, _ params: [String?] = [], deadline: ContinuousClock.Instant?) async throws(PostgresError) -> [[String?]] {
        try await textQuery(sql, params, deadline: deadline, honourCancellation: true)
    }

    private func textQuery(_ sql: String, _ params: [String?], deadline: ContinuousClock.Instant?, honourCancellation: Bool) async throws(PostgresError) -> [[String?]] {
        let values = params.map { $0.map { PostgresValue.text($0) } ?? .null }
        return try await perform(deadline: deadline, honourCancellation: honourCancellation) { handle, stop throws(PostgresError) in
            try handle.run(.parameters(sql, values), deadline: deadline, shouldStop: stop).rows.textRows
        }
    }

    /// Runs one statement with typed, bound parameters (`$1`, `$2`, …; `nil`
    /// is SQL NULL) and returns its rows with column names and types.
    ///
    /// ```swift
    /// let rows = try await connection.execute("SELECT id, created FROM t WHERE name = $1", [name])
    /// for row in rows { let id = try row.decode(Int64.self, column: "id") }
    /// ```
    /// Throws `.server` (see `sqlState`), `.timeout` / `.cancelled` (the
    /// connection is then broken), `.connectionLost`, `.connectionClosed`, or
    /// `.invalidArgument`.
    public func execute(
        _ sql: String, _ bindings: [(any PostgresEncodable)?] = [], deadline: ContinuousClock.Instant? = nil
    ) async throws(PostgresError) -> PostgresRows {
        let values = bindings.map { $0?.postgresValue ?? .null }
        return try await perform(deadline: deadline, honourCancellation: true) { handle, stop throws(PostgresError) in
            try handle.run(.parameters(sql, values), deadline: deadline, shouldStop: stop).rows
        }
    }

    /// Runs `sql` with the simple query protocol: no parameters, but several
    /// `;`-separated statements are allowed (e.g. migrations). Returns the
    /// last statement's rows.
    public func executeScript(_ sql: String, deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) -> PostgresRows {
        try await perform(deadline: deadline, honourCancellation: true) { handle, stop throws(PostgresError) in
            try handle.run(.simple(sql), deadline: deadline, shouldStop: stop).rows
        }
    }

    /// `SELECT pg_notify($1, $2)`: notifies `channel` (exact, case-sensitive
    /// name) with `payload`, delivered when the current transaction commits.
    public func notify(channel: String, payload: String = "", deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) {
        _ = try await execute("SELECT pg_notify($1, $2)", [channel, payload], deadline: deadline)
    }

    // MARK: - status

    /// Host, port, version, pid and the session state seen after the last call.
    public var serverStatus: PostgresServerStatus {
        let snapshot = shared.withLock { $0.snapshot }
        let identity = handle.identity
        return PostgresServerStatus(
            host: identity.host, port: identity.port, serverVersion: identity.serverVersion,
            serverVersionText: identity.serverVersionText, backendPID: identity.backendPID,
            inHotStandby: snapshot.inHotStandby, defaultTransactionReadOnly: snapshot.defaultTransactionReadOnly,
            transactionStatus: snapshot.transactionStatus)
    }

    /// The server's `in_hot_standby` as of the last call (nil before
    /// PostgreSQL 14).
    public var inHotStandby: Bool? { shared.withLock { $0.snapshot.inHotStandby } }

    /// True once the connection can no longer be used: it broke, a call on it
    /// timed out or was cancelled, or it was closed. Discard it.
    public var isBroken: Bool {
        shared.withLock { state in
            if case .ok = state.health { return false }
            return true
        }
    }

    // MARK: - close

    /// Closes the connection. Statements already queued run first; later ones
    /// throw `.connectionClosed`. Idempotent.
    public func close() async {
        let handle = self.handle
        _ = try? await executor.run(ifShutDown: Self.closedError) { [self] () throws(PostgresError) in
            markClosed()
            handle.close()
        }
        executor.shutdown()
    }

    /// Closes without waiting: a statement in flight is abandoned (its caller
    /// gets `.connectionClosed`), queued ones fail, the socket is closed on
    /// the connection thread.
    func closeSoon() {
        markClosed()
        let handle = self.handle
        executor.submit { handle.close() }
        executor.shutdown()
    }

    func markClosed() {
        shared.withLock { $0.health = .closed }
    }

    /// Marks the connection broken by `error` (first reason wins).
    func markBroken(_ error: PostgresError) {
        shared.withLock { state in
            if case .ok = state.health { state.health = .broken(error) }
        }
    }

    @Sendable
    static func closedError() -> PostgresError {
        PostgresError(code: .connectionClosed, message: "connection closed")
    }

    /// The error a new call fails with, or nil when the connection is usable.
    func unusableError() -> PostgresError? {
        switch shared.withLock({ $0.health }) {
        case .ok: return nil
        case .closed: return Self.closedError()
        case .broken(let reason):
            return PostgresError(
                code: .connectionLost, sqlState: reason.sqlState,
                message: "connection is broken (\(reason.code): \(reason.message)); use a new one")
        }
    }

    /// Refreshes the status snapshot from the connection thread.
    func refreshSnapshot() {
        let snapshot = handle.snapshot()
        shared.withLock { $0.snapshot = snapshot }
    }

    // MARK: - the one path for calls

    /// Runs `body` on the connection thread, racing `deadline` and (if asked)
    /// task cancellation. See the type's documentation for what a timeout does.
    func perform<T: Sendable>(
        deadline: ContinuousClock.Instant?, honourCancellation: Bool,
        _ body: @escaping @Sendable (LibPQConnection, () -> Bool) throws(PostgresError) -> T
    ) async throws(PostgresError) -> T {
        if let error = unusableError() { throw error }
        if let deadline, deadline <= .now {
            throw PostgresError(code: .timeout, message: "deadline passed before the statement was sent")
        }
        let handle = self.handle
        let outcome = await Self.race(
            executor: executor, deadline: deadline, honourCancellation: honourCancellation,
            timeoutError: PostgresError(code: .timeout, message: "deadline passed; the statement was cancelled and the connection abandoned"),
            job: { [self] (gate: CallGate<T>) in
                guard gate.start() else { return } // timed out or cancelled while queued
                let outcome: CallOutcome<T>
                if let error = unusableError() {
                    outcome = .failure(error)
                } else {
                    do throws(PostgresError) {
                        outcome = .success(try body(handle, { [self] in unusableError() != nil }))
                    } catch {
                        // Stopped because the connection broke or closed meanwhile: say why.
                        outcome = .failure(error.code == .connectionClosed ? unusableError() ?? error : error)
                    }
                }
                afterCall(outcome)
                gate.resolve(outcome)
            },
            onAbandon: { [self] _, error in
                // Also when the call was still queued: the connection is slow
                // or stuck, and a simple rule (any timeout breaks it) is
                // easier to rely on than a race between queue and deadline.
                abandon(error)
            })
        return try outcome.get()
    }

    /// On the connection thread after each call: refresh the snapshot; after a
    /// timeout, cancellation or loss, mark broken, cancel server-side work
    /// and close the socket.
    private func afterCall<T>(_ outcome: CallOutcome<T>) {
        let snapshot = handle.snapshot()
        var failure: PostgresError?
        if case .failure(let error) = outcome { failure = error }
        let (fire, close) = shared.withLock { state -> (Bool, Bool) in
            state.snapshot = snapshot
            if let failure, failure.code == .timeout || failure.code == .cancelled || failure.code == .connectionLost {
                if case .ok = state.health { state.health = .broken(failure) }
            } else if snapshot.isBad, case .ok = state.health {
                state.health = .broken(failure ?? PostgresError(code: .connectionLost, message: "connection lost"))
            }
            guard case .ok = state.health else {
                var fire = false
                if let failure, failure.code == .timeout || failure.code == .cancelled, !state.cancelSent {
                    state.cancelSent = true
                    fire = true
                }
                return (fire, true)
            }
            return (false, false)
        }
        if fire { handle.cancelHandle?.fire() }
        if close { handle.close() }
    }

    /// A call was given up (deadline or task cancellation): break the
    /// connection and cancel whatever statement runs; the connection thread
    /// notices within one poll slice (or when libpq returns) and closes the
    /// socket.
    private func abandon(_ error: PostgresError) {
        let fire = shared.withLock { state -> Bool in
            if case .ok = state.health { state.health = .broken(error) }
            guard !state.cancelSent else { return false }
            state.cancelSent = true
            return true
        }
        if fire { handle.cancelHandle?.fire() }
        // Close the socket once the connection thread is free (at once when idle).
        let handle = self.handle
        executor.submit { handle.close() }
    }

    /// Submits `job` to `executor` and suspends until the gate is resolved:
    /// by the job, by the deadline timer (`timeoutError`) or by task
    /// cancellation (`.cancelled`), whichever comes first. `onAbandon` runs
    /// when the timer or the cancellation won, with the phase the job was in,
    /// before the caller resumes.
    static func race<T: Sendable>(
        executor: BlockingExecutor,
        deadline: ContinuousClock.Instant?,
        honourCancellation: Bool,
        timeoutError: PostgresError,
        job: @escaping @Sendable (CallGate<T>) -> Void,
        onAbandon: @escaping @Sendable (CallGate<T>.Phase, PostgresError) -> Void
    ) async -> CallOutcome<T> {
        let gate = CallGate<T>()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<CallOutcome<T>, Never>) in
                gate.install(continuation)
                guard executor.submit({ job(gate) }) else {
                    gate.resolve(.failure(closedError()))
                    return
                }
                if let deadline {
                    // Fired by the scheduler's own thread: on time even when
                    // the cooperative pool is saturated.
                    let ticket = DeadlineTicket {
                        gate.resolve(.failure(timeoutError)) { onAbandon($0, timeoutError) }
                    }
                    gate.setTicket(ticket)
                    DeadlineScheduler.shared.schedule(ticket, at: deadline)
                }
            }
        } onCancel: {
            guard honourCancellation else { return }
            let error = PostgresError(code: .cancelled, message: "the calling task was cancelled")
            gate.resolve(.failure(error)) { onAbandon($0, error) }
        }
    }
}

/// A flag one thread sets and another polls.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { flag.load(ordering: .acquiring) }

    func set() { flag.store(true, ordering: .releasing) }
}
