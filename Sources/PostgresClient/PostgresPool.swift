import Synchronization

/// Settings of a `PostgresPool`.
public struct PostgresPoolConfiguration: Sendable {
    /// The one server the pool connects to.
    public var target: PostgresHostTarget
    /// Most connections open at once (idle + in use + being opened).
    public var maxConnections: Int
    /// An idle connection unused this long is closed.
    public var idleTimeout: Duration
    /// Bound on each connect (also bounded by the lease deadline).
    public var connectTimeout: Duration
    /// `statement_timeout` set on every new connection (nil: server default).
    public var statementTimeout: Duration?

    /// Settings for `target`.
    public init(
        target: PostgresHostTarget, maxConnections: Int = 10, idleTimeout: Duration = .seconds(60),
        connectTimeout: Duration = .seconds(5), statementTimeout: Duration? = nil
    ) {
        self.target = target
        self.maxConnections = max(1, maxConnections)
        self.idleTimeout = idleTimeout
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
    }

    /// Settings for the single host named by `conninfo` (a URI or
    /// `key=value` string); `.invalidURL` if it is malformed or names
    /// several hosts.
    public init(
        conninfo: String, maxConnections: Int = 10, idleTimeout: Duration = .seconds(60),
        connectTimeout: Duration = .seconds(5), statementTimeout: Duration? = nil
    ) throws(PostgresError) {
        let targets = try PostgresURL.parse(conninfo)
        guard targets.count == 1 else {
            throw PostgresError(code: .invalidURL, message: "a pool serves one host; the connection string names \(targets.count)")
        }
        self.init(target: targets[0], maxConnections: maxConnections, idleTimeout: idleTimeout,
                  connectTimeout: connectTimeout, statementTimeout: statementTimeout)
    }
}

/// A pool's counters at one instant.
public struct PostgresPoolStats: Sendable, Equatable {
    /// Connections open or being opened (`idle + inUse + connecting`).
    public var open: Int
    /// Open connections waiting to be leased.
    public var idle: Int
    /// Connections leased to callers.
    public var inUse: Int
    /// Connects in progress.
    public var connecting: Int
    /// Callers waiting for a connection.
    public var waiting: Int
    /// The configured maximum.
    public var maxConnections: Int

    /// Counters (e.g. to compare against `PostgresPool.stats`).
    public init(open: Int, idle: Int, inUse: Int, connecting: Int, waiting: Int, maxConnections: Int) {
        self.open = open
        self.idle = idle
        self.inUse = inUse
        self.connecting = connecting
        self.waiting = waiting
        self.maxConnections = maxConnections
    }
}

/// A pool of connections to ONE PostgreSQL server.
///
/// - At most `maxConnections` are open; a lease first takes an idle one,
///   else opens one, else waits. Waiters are served first come, first served;
///   a waiter still waiting at its deadline gets `.poolExhausted`.
/// - A returned connection that is broken (lost, timed out, cancelled) or
///   still inside a transaction is closed, not reused.
/// - Idle connections are closed after `idleTimeout`.
/// - `close()` fails waiters with `.poolClosed`, closes idle connections, and
///   closes leased ones as they come back.
/// - `lastInHotStandby` is the `in_hot_standby` last reported by any of its
///   connections, so a router notices a promotion (or demotion) on the next
///   call through the pool.
public final class PostgresPool: Sendable {
    /// As given.
    public let configuration: PostgresPoolConfiguration
    private let state: Mutex<State>
    private let reaper: Mutex<Task<Void, Never>?> = Mutex(nil)

    private struct IdleEntry {
        let connection: PostgresConnection
        let since: ContinuousClock.Instant
    }

    private enum Grant: Sendable {
        case connection(PostgresConnection)
        /// A slot was reserved (`connecting` counts it): open a connection.
        case slot
        case failure(PostgresError)
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Grant, Never>
        var ticket: DeadlineTicket?
    }

    private struct State {
        var idle: [IdleEntry] = [] // most recently returned last
        var leased: Set<ObjectIdentifier> = []
        var connecting = 0
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        var closed = false
        var lastInHotStandby: Bool?
    }

    /// A pool for `configuration.target`. Connections open lazily.
    public init(configuration: PostgresPoolConfiguration) {
        self.configuration = configuration
        self.state = Mutex(State())
        startReaper()
    }

    /// A pool for the single host named by `conninfo`.
    public convenience init(
        conninfo: String, maxConnections: Int = 10, idleTimeout: Duration = .seconds(60),
        connectTimeout: Duration = .seconds(5), statementTimeout: Duration? = nil
    ) throws(PostgresError) {
        self.init(configuration: try PostgresPoolConfiguration(
            conninfo: conninfo, maxConnections: maxConnections, idleTimeout: idleTimeout,
            connectTimeout: connectTimeout, statementTimeout: statementTimeout))
    }

    deinit {
        reaper.withLock { $0?.cancel() }
        let idle = state.withLock { state in
            state.closed = true
            return state.idle
        }
        idle.forEach { $0.connection.closeSoon() }
    }

    // MARK: - public API

    /// Closes every idle connection (leased ones are untouched): after one turned out dead, the
    /// others — opened to the same server before it restarted — most likely are too.
    public func discardIdle() {
        let idle = state.withLock { state -> [IdleEntry] in
            let idle = state.idle
            state.idle = []
            return idle
        }
        idle.forEach { $0.connection.closeSoon() }
    }

    /// The current counters.
    public var stats: PostgresPoolStats {
        state.withLock { state in
            PostgresPoolStats(
                open: state.idle.count + state.leased.count + state.connecting, idle: state.idle.count,
                inUse: state.leased.count, connecting: state.connecting, waiting: state.waiters.count,
                maxConnections: configuration.maxConnections)
        }
    }

    /// The `in_hot_standby` most recently reported by a connection of this
    /// pool (nil until one reported it, or before PostgreSQL 14).
    public var lastInHotStandby: Bool? { state.withLock { $0.lastInHotStandby } }

    /// Leases a connection; give it back with `release`. Waits (FIFO) when
    /// `maxConnections` are open, until `deadline` (nil: until one is free or
    /// the pool closes). Throws `.poolExhausted` at the deadline, a connect
    /// error (`.connectionFailed`, …) when a new connection could not be
    /// opened, `.poolClosed`, or `.cancelled`.
    public func lease(deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) -> PostgresConnection {
        switch takeOrReserve() {
        case .connection(let connection): return connection
        case .failure(let error): throw error
        case .slot: return try await open(deadline: deadline)
        case nil: break
        }
        switch await wait(deadline: deadline) {
        case .connection(let connection): return connection
        case .failure(let error): throw error
        case .slot: return try await open(deadline: deadline)
        }
    }

    /// Gives a leased connection back. A broken one, or one left inside a
    /// transaction, is closed; otherwise it goes to the first waiter or to the
    /// idle list. Connections not leased from this pool are ignored.
    public func release(_ connection: PostgresConnection) {
        let status = connection.serverStatus
        let reusable = !connection.isBroken && status.transactionStatus == .idle
        let action = state.withLock { state -> ReleaseAction in
            guard state.leased.remove(ObjectIdentifier(connection)) != nil else { return .ignore }
            if let standby = status.inHotStandby { state.lastInHotStandby = standby }
            if state.closed { return .close }
            if state.waiters.isEmpty {
                guard reusable else { return .close }
                state.idle.append(IdleEntry(connection: connection, since: .now))
                return .keep
            }
            let waiter = state.waiters.removeFirst()
            if reusable {
                state.leased.insert(ObjectIdentifier(connection))
                return .handOff(waiter, .connection(connection), closeReturned: false)
            }
            state.connecting += 1
            return .handOff(waiter, .slot, closeReturned: true)
        }
        switch action {
        case .ignore, .keep:
            break
        case .close:
            connection.closeSoon()
        case .handOff(let waiter, let grant, let closeReturned):
            if closeReturned { connection.closeSoon() }
            waiter.ticket?.settle()
            waiter.continuation.resume(returning: grant)
        }
    }

    private enum ReleaseAction {
        case ignore, keep, close
        case handOff(Waiter, Grant, closeReturned: Bool)
    }

    /// Leases a connection, runs `body`, and gives the connection back (also
    /// when `body` throws). `deadline` bounds only the wait for a connection;
    /// pass deadlines to the statements as well.
    public func withConnection<T: Sendable>(
        deadline: ContinuousClock.Instant? = nil,
        actorIsolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await lease(deadline: deadline)
        defer { release(connection) }
        return try await body(connection)
    }

    /// Leases a connection and runs `body` in a transaction on it (see
    /// `PostgresConnection.withTransaction`); `deadline` bounds the lease too.
    public func withTransaction<T: Sendable>(
        isolation: PostgresIsolationLevel? = nil,
        readOnly: Bool = false,
        deadline: ContinuousClock.Instant? = nil,
        actorIsolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresTransaction) async throws -> T
    ) async throws -> T {
        let connection = try await lease(deadline: deadline)
        defer { release(connection) }
        return try await connection.withTransaction(isolation: isolation, readOnly: readOnly, deadline: deadline, body)
    }

    /// Closes the pool: waiters fail with `.poolClosed`, idle connections
    /// close now, leased ones close when released. Then waits until every
    /// leased connection came back, at most until `deadline` (nil: no limit).
    public func close(deadline: ContinuousClock.Instant? = nil) async {
        reaper.withLock { $0?.cancel() }
        let (idle, waiters) = state.withLock { state -> ([IdleEntry], [Waiter]) in
            state.closed = true
            let taken = (state.idle, state.waiters)
            state.idle = []
            state.waiters = []
            return taken
        }
        let error = PostgresError(code: .poolClosed, message: "the pool was closed")
        for waiter in waiters {
            waiter.ticket?.settle()
            waiter.continuation.resume(returning: .failure(error))
        }
        for entry in idle { await entry.connection.close() }
        while state.withLock({ !$0.leased.isEmpty || $0.connecting > 0 }) {
            if let deadline, deadline <= .now { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    // MARK: - internals

    /// Under the lock: an idle connection, a reserved slot, a failure, or nil
    /// (the caller must wait).
    private func takeOrReserve() -> Grant? {
        var expired: [PostgresConnection] = []
        let grant = state.withLock { state -> Grant? in
            if state.closed { return .failure(PostgresError(code: .poolClosed, message: "the pool is closed")) }
            let now = ContinuousClock.now
            while let entry = state.idle.popLast() {
                if entry.connection.isBroken || now - entry.since >= configuration.idleTimeout {
                    expired.append(entry.connection)
                    continue
                }
                state.leased.insert(ObjectIdentifier(entry.connection))
                return .connection(entry.connection)
            }
            // Waiters first: a newcomer takes a free slot only when nobody waits.
            if state.waiters.isEmpty && state.leased.count + state.connecting < configuration.maxConnections {
                state.connecting += 1
                return .slot
            }
            return nil
        }
        expired.forEach { $0.closeSoon() }
        return grant
    }

    /// Opens a connection into a reserved slot.
    private func open(deadline: ContinuousClock.Instant?) async throws(PostgresError) -> PostgresConnection {
        var timeout = configuration.connectTimeout
        if let deadline { timeout = min(timeout, max(.zero, deadline - .now)) }
        let connection: PostgresConnection
        do throws(PostgresError) {
            connection = try await PostgresConnection.connect(
                conninfo: configuration.target.conninfo, connectTimeout: timeout,
                statementTimeout: configuration.statementTimeout)
        } catch {
            slotFreed()
            throw error
        }
        let standby = connection.inHotStandby
        let closed = state.withLock { state -> Bool in
            state.connecting -= 1
            if let standby { state.lastInHotStandby = standby }
            guard !state.closed else { return true }
            state.leased.insert(ObjectIdentifier(connection))
            return false
        }
        if closed {
            await connection.close()
            throw PostgresError(code: .poolClosed, message: "the pool was closed")
        }
        return connection
    }

    /// A reserved slot was not used (connect failed): pass it to the first
    /// waiter, if any.
    private func slotFreed() {
        let waiter = state.withLock { state -> Waiter? in
            state.connecting -= 1
            guard !state.closed, !state.waiters.isEmpty else { return nil }
            state.connecting += 1
            return state.waiters.removeFirst()
        }
        if let waiter {
            waiter.ticket?.settle()
            waiter.continuation.resume(returning: .slot)
        }
    }

    private func wait(deadline: ContinuousClock.Instant?) async -> Grant {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Grant, Never>) in
                let immediate = state.withLock { state -> Grant? in
                    // Re-check under the lock: things may have changed since takeOrReserve.
                    if state.closed { return .failure(PostgresError(code: .poolClosed, message: "the pool is closed")) }
                    if state.waiters.isEmpty, let entry = state.idle.popLast() {
                        state.leased.insert(ObjectIdentifier(entry.connection))
                        return .connection(entry.connection)
                    }
                    if state.waiters.isEmpty && state.leased.count + state.connecting < configuration.maxConnections {
                        state.connecting += 1
                        return .slot
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation, ticket: nil))
                    return nil
                }
                if let immediate {
                    continuation.resume(returning: immediate)
                    return
                }
                if let deadline {
                    let ticket = DeadlineTicket { [weak self] in
                        self?.expireWaiter(id, error: PostgresError(
                            code: .poolExhausted,
                            message: "no connection became available before the deadline"))
                    }
                    let stillWaiting = state.withLock { state -> Bool in
                        guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return false }
                        state.waiters[index].ticket = ticket
                        return true
                    }
                    if stillWaiting {
                        DeadlineScheduler.shared.schedule(ticket, at: deadline)
                    } else {
                        ticket.settle()
                    }
                }
                if Task.isCancelled { expireWaiter(id, error: Self.cancelledError) }
            }
        } onCancel: {
            expireWaiter(id, error: Self.cancelledError)
        }
    }

    private static let cancelledError = PostgresError(code: .cancelled, message: "the calling task was cancelled")

    private func expireWaiter(_ id: UInt64, error: PostgresError) {
        let waiter = state.withLock { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        guard let waiter else { return }
        waiter.ticket?.settle()
        waiter.continuation.resume(returning: .failure(error))
    }

    private func startReaper() {
        let period = min(max(configuration.idleTimeout / 2, .milliseconds(50)), .seconds(5))
        let task = Task { [weak self] in
            while true {
                do { try await Task.sleep(for: period) } catch { return }
                guard let self else { return }
                self.closeExpiredIdle()
            }
        }
        reaper.withLock { $0 = task }
    }

    private func closeExpiredIdle() {
        let now = ContinuousClock.now
        let expired = state.withLock { state -> [PostgresConnection] in
            var out: [PostgresConnection] = []
            state.idle.removeAll { entry in
                let stale = entry.connection.isBroken || now - entry.since >= configuration.idleTimeout
                if stale { out.append(entry.connection) }
                return stale
            }
            return out
        }
        expired.forEach { $0.closeSoon() }
    }
}
