import CoordinatorCore
import Logging
import Metrics
import PostgresClient
import Synchronization

/// The topology-aware `PostgresExecutor`: one connection pool per host of a multi-host URL, a probe of
/// every host every `probeInterval` (role, LSNs, timeline, WAL receiver, replay pause) on a dedicated
/// connection, and `ReplicaTopology` (the pure core) deciding where each call goes:
///
/// - writes go to the primary; when none is known (failover in progress, split brain without a
///   winner) they fail at once with a retryable `StoreError.unavailable`;
/// - reads go to a replica fit for their `ReadRequirement` (least outstanding requests), else the
///   primary; a replica that fails a read is reported and the read is retried once on the primary
///   (reads are idempotent);
/// - a write that loses its connection, or that the server refuses as read-only (a demoted primary),
///   starts a failover: every host is probed every 100 ms until a promoted replica is seen. The
///   write itself fails with a retryable error and is never retried here (it may have committed);
/// - after every call the connection's `in_hot_standby` parameter is compared with the host's role,
///   so a promotion or demotion is noticed without waiting for the next probe;
/// - two hosts claiming to be primary: the core picks one (higher timeline, then the one the replicas
///   stream from) and fences the other (no traffic); `coordinator_postgres_split_brain` is 1 meanwhile.
///
/// Every call is bounded by `deadline` (waiting for a connection included); a hung server cannot hold
/// a caller past it (the client cancels the statement and discards the connection).
public final class ReplicatedPostgres: PostgresExecutor, Sendable {
    /// Settings of the router.
    public struct Settings: Sendable, Equatable {
        /// Probe period while a primary is known.
        public var probeInterval: Span = .milliseconds(500)
        /// Most connections per host.
        public var maxConnectionsPerHost: Int = 10
        /// Server-side `statement_timeout` (nil: the server's default).
        public var statementTimeout: Duration? = .seconds(5)
        /// Bound on one call, waiting for a connection included.
        public var deadline: Duration = .seconds(2)
        /// Reads that carry no requirement of their own.
        public var defaultRead: ReadRequirement = .primary

        public init() {}
    }

    /// The hosts, in URL order.
    public let targets: [PostgresHostTarget]
    let settings: Settings
    let hostIDs: [HostID]
    let pools: [HostID: PostgresPool]
    let state: Mutex<RouterState>
    let probeConnections: Mutex<[HostID: PostgresConnection]>
    let clock: any NodeClock
    let logger: Logger
    let splitBrainGauge = Gauge(label: "coordinator_postgres_split_brain")
    let failovers = Counter(label: "coordinator_postgres_failovers_total")

    struct RouterState {
        var topology: ReplicaTopology
        var nextTick: Instant?
        var probing: Set<HostID> = []
        var closed = false
    }

    /// Parses `url` (one or several hosts) and creates the pools; no connection is opened until `run`
    /// probes or a call needs one. Throws `StoreError.unusable` for a malformed URL.
    public init(url: String, settings: Settings = Settings(), clock: any NodeClock = SystemClock(), logger: Logger) throws {
        let targets: [PostgresHostTarget]
        do {
            targets = try PostgresURL.parse(url)
        } catch {
            throw StoreError(.unusable, "postgresUrl: \(error.message)")
        }
        guard !targets.isEmpty else { throw StoreError(.unusable, "postgresUrl names no host") }
        self.targets = targets
        self.settings = settings
        self.clock = clock
        self.logger = logger
        let ids = targets.map { HostID(host: $0.host, port: $0.port) }
        self.hostIDs = ids
        var pools: [HostID: PostgresPool] = [:]
        for (id, target) in zip(ids, targets) {
            pools[id] = PostgresPool(configuration: PostgresPoolConfiguration(
                target: target, maxConnections: settings.maxConnectionsPerHost, idleTimeout: .seconds(60),
                connectTimeout: settings.deadline, statementTimeout: settings.statementTimeout))
        }
        self.pools = pools
        let configuration = TopologyConfiguration(
            probeInterval: settings.probeInterval, probeTimeout: Self.probeTimeout(settings))
        self.state = Mutex(RouterState(topology: ReplicaTopology(hosts: ids, configuration: configuration)))
        self.probeConnections = Mutex([:])
    }

    static func probeTimeout(_ settings: Settings) -> Span {
        let deadline = Span(nanoseconds: Int64(settings.deadline.components.seconds) * 1_000_000_000
            + settings.deadline.components.attoseconds / 1_000_000_000)
        return min(deadline, .seconds(1))
    }

    // MARK: Probing

    /// Probes until cancelled or closed. Run it as a long-lived task (the node's PostgreSQL service).
    public func run() async {
        perform(state.withLock { $0.topology.tick(now: clock.monotonicNow()) })
        while !Task.isCancelled {
            let (due, closed) = state.withLock { ($0.nextTick, $0.closed) }
            if closed { return }
            let now = clock.monotonicNow()
            let wait = min(max(due.map { $0 - now } ?? .milliseconds(20), .milliseconds(1)), .milliseconds(20))
            try? await Task.sleep(for: .nanoseconds(wait.nanoseconds))
            let now2 = clock.monotonicNow()
            let actions = state.withLock { state -> [TopologyAction] in
                guard let due = state.nextTick, due <= now2 else { return [] }
                state.nextTick = nil
                return state.topology.tick(now: now2)
            }
            perform(actions)
        }
    }

    /// Waits until a primary is known, at most `timeout`; returns whether one is.
    public func waitForPrimary(timeout: Duration) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if state.withLock({ $0.topology.primary }) != nil { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return state.withLock { $0.topology.primary } != nil
    }

    func perform(_ actions: [TopologyAction]) {
        for action in actions {
            switch action {
            case .probe(let hosts):
                for host in hosts {
                    let start = state.withLock { state -> Bool in
                        guard !state.closed, !state.probing.contains(host) else { return false }
                        state.probing.insert(host)
                        return true
                    }
                    if start { Task { await self.probe(host) } }
                }
            case .scheduleTick(let at):
                state.withLock { $0.nextTick = at }
            case .roleChanged(let change):
                logger.notice("postgres host role changed", metadata: [
                    "host": "\(change.host)", "from": "\(change.from.rawValue)", "to": "\(change.to.rawValue)",
                    "reason": "\(change.reason.rawValue)",
                ])
            case .failover(.started(let previous, let reason, _)):
                failovers.increment()
                logger.warning("postgres primary lost: failover started", metadata: ["previous": "\(previous)", "reason": "\(reason.rawValue)"])
            case .failover(.completed(let primary, let after, _)):
                logger.notice("postgres failover completed", metadata: ["primary": "\(primary)", "afterMs": "\(after.nanoseconds / 1_000_000)"])
            case .alert(.splitBrain(let claimants, let primary, _)):
                splitBrainGauge.record(1)
                logger.critical("postgres split brain: several hosts accept writes; the others are fenced", metadata: [
                    "claimants": "\(claimants.map(\.description).joined(separator: ","))", "chosen": "\(primary.map(\.description) ?? "none")",
                ])
            case .alert(.splitBrainResolved):
                splitBrainGauge.record(0)
                logger.notice("postgres split brain resolved")
            }
        }
    }

    /// One round trip per probe, on the host's dedicated probe connection (never a pooled one, so a
    /// busy pool cannot delay failure detection).
    static let probeQuery = """
        SELECT pg_is_in_recovery(),
               CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn() END::text,
               pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
               (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::int8,
               (extract(epoch FROM clock_timestamp()) * 1000)::int8,
               CASE WHEN NOT pg_is_in_recovery()
                    THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8
                    ELSE (SELECT received_tli FROM pg_stat_wal_receiver) END,
               (SELECT status FROM pg_stat_wal_receiver), (SELECT sender_host FROM pg_stat_wal_receiver),
               (SELECT sender_port FROM pg_stat_wal_receiver),
               CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END
        """

    func probe(_ host: HostID) async {
        let timeout = Self.probeTimeout(settings)
        let deadline = ContinuousClock.now + .nanoseconds(timeout.nanoseconds)
        var outcome: Result<HostObservation, PostgresError>
        do throws(PostgresError) {
            let connection: PostgresConnection
            if let open = probeConnections.withLock({ $0[host] }), !open.isBroken {
                connection = open
            } else {
                let target = targets[hostIDs.firstIndex(of: host)!]
                connection = try await PostgresConnection.connect(
                    target: target, connectTimeout: .nanoseconds(timeout.nanoseconds), statementTimeout: .nanoseconds(timeout.nanoseconds))
                let replaced = probeConnections.withLock { $0.updateValue(connection, forKey: host) }
                if let replaced { await replaced.close() }
            }
            let rows = try await connection.query(Self.probeQuery, [], deadline: deadline)
            outcome = .success(try Self.observation(rows))
        } catch {
            outcome = .failure(error)
            if let broken = probeConnections.withLock({ $0.removeValue(forKey: host) }) { await broken.close() }
        }
        if state.withLock({ $0.closed }), let late = probeConnections.withLock({ $0.removeValue(forKey: host) }) {
            // Closed while this probe ran: its connection must not outlive the router.
            await late.close()
        }
        let now = clock.monotonicNow()
        let actions = state.withLock { state -> [TopologyAction] in
            state.probing.remove(host)
            guard !state.closed else { return [] }
            switch outcome {
            case .success(let observation): return state.topology.probeSucceeded(host, observation: observation, at: now)
            case .failure(let error): return state.topology.probeFailed(host, error: error.description, at: now)
            }
        }
        perform(actions)
    }

    static func observation(_ rows: [[String?]]) throws(PostgresError) -> HostObservation {
        guard let row = rows.first, row.count == 11, let recovery = row[0], let nowText = row[5], let serverNow = Int64(nowText) else {
            throw PostgresError(code: .unexpectedResult, message: "unexpected probe answer: \(rows)")
        }
        func lsn(_ text: String?) throws(PostgresError) -> LSN? {
            guard let text else { return nil }
            do { return try LSN(text) } catch { throw PostgresError(code: .unexpectedResult, message: "probe: \(error)") }
        }
        let inRecovery = recovery == "t"
        let receiver = row[7].map { WalReceiverInfo(status: $0, senderHost: row[8], senderPort: row[9].flatMap { Int($0) }) }
        return HostObservation(
            inRecovery: inRecovery, currentLSN: try lsn(row[1]), receiveLSN: try lsn(row[2]), replayLSN: try lsn(row[3]),
            lastReplayTimestampMs: row[4].flatMap { Int64($0) }, serverNowMs: serverNow,
            timeline: row[6].flatMap { UInt32($0) }, walReceiver: receiver, replayPaused: row[10] == "t")
    }

    // MARK: PostgresExecutor

    public func write<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> (value: T, commitLSN: UInt64) {
        let deadline = PostgresCallContext.deadline ?? ContinuousClock.now + settings.deadline
        let host = try route(.write)
        defer { state.withLock { $0.topology.requestFinished(host) } }
        do {
            let result = try await pools[host]!.withConnection(deadline: deadline) { connection in
                let value = try await PostgresCallContext.$deadline.withValue(deadline) { try await body(connection) }
                let rows = try await connection.query("SELECT pg_current_wal_insert_lsn()::text", [], deadline: deadline)
                self.observe(connection, host: host, expectPrimary: true)
                guard let text = rows.first?.first ?? nil, let lsn = LSNText.parse(text) else {
                    throw PostgresError(code: .unexpectedResult, message: "pg_current_wal_insert_lsn() answered \(rows)")
                }
                return (value: value, commitLSN: lsn)
            }
            RequestConsistency.lsnSink?.record(result.commitLSN)
            return result
        } catch let error as PostgresError {
            if error.isReadOnlyTransaction {
                report(host, .readOnly)
            } else if error.isConnectionLost || error.code == .timeout || error.code == .connectionFailed {
                report(host, .connectionLost)
            }
            throw error
        }
    }

    public func read<T: Sendable>(
        _ requirement: ReadRequirement, _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let deadline = PostgresCallContext.deadline ?? ContinuousClock.now + settings.deadline
        let consistency: ReadConsistency
        switch requirement {
        case .primary: consistency = .primary
        case .fresh(let bytes, let seconds): consistency = .fresh(maxLagBytes: bytes, maxLagSeconds: seconds)
        case .readYourWrites(let lsn): consistency = .readYourWrites(LSN(lsn))
        }
        let host = try route(.read(consistency))
        let isPrimary = state.withLock { $0.topology.primary == host }
        do {
            defer { state.withLock { $0.topology.requestFinished(host) } }
            return try await pools[host]!.withConnection(deadline: deadline) { connection in
                let value = try await PostgresCallContext.$deadline.withValue(deadline) { try await body(connection) }
                self.observe(connection, host: host, expectPrimary: isPrimary)
                return value
            }
        } catch let error as PostgresError where isPrimary && error.isConnectionLost && error.code != .commitOutcomeUnknown
                    && ContinuousClock.now < deadline {
            // A pooled connection the server dropped while it was idle (a restart, an administrator's
            // pg_terminate_backend): reads are idempotent, so the read runs once more, on a new
            // connection (the other idle ones are likely dead as well).
            pools[host]!.discardIdle()
            let again = try route(.read(.primary))
            defer { state.withLock { $0.topology.requestFinished(again) } }
            return try await pools[again]!.withConnection(deadline: deadline) { connection in
                try await PostgresCallContext.$deadline.withValue(deadline) { try await body(connection) }
            }
        } catch let error as PostgresError where !isPrimary && (error.isConnectionLost || error.code == .connectionFailed || error.code == .timeout) {
            // The replica failed: report it and read from the primary once.
            report(host, .connectionLost)
            let primary = try route(.read(.primary))
            defer { state.withLock { $0.topology.requestFinished(primary) } }
            return try await pools[primary]!.withConnection(deadline: deadline) { connection in
                try await PostgresCallContext.$deadline.withValue(deadline) { try await body(connection) }
            }
        }
    }

    public func close() async {
        state.withLock { $0.closed = true }
        for pool in pools.values { await pool.close(deadline: .now + .seconds(2)) }
        let probes = probeConnections.withLock { connections -> [PostgresConnection] in
            defer { connections.removeAll() }
            return Array(connections.values)
        }
        for connection in probes { await connection.close() }
    }

    // MARK: Helpers

    /// Routes `request`, counting it as started on the chosen host.
    func route(_ request: RouteRequest) throws -> HostID {
        let now = clock.monotonicNow()
        return try state.withLock { state throws(StoreError) -> HostID in
            guard !state.closed else { throw StoreError(.closed, "the PostgreSQL store is closed") }
            do throws(RoutingError) {
                let decision = try state.topology.route(request, now: now)
                state.topology.requestStarted(decision.host)
                return decision.host
            } catch {
                throw StoreError(.unavailable, "PostgreSQL: \(error.message)")
            }
        }
    }

    func report(_ host: HostID, _ failure: WriteFailure) {
        let now = clock.monotonicNow()
        perform(state.withLock { $0.topology.writeFailed(host, failure, at: now) })
    }

    /// Compares the connection's `in_hot_standby` with the role the call assumed.
    func observe(_ connection: PostgresConnection, host: HostID, expectPrimary: Bool) {
        guard let standby = connection.inHotStandby, standby == expectPrimary else { return }
        let now = clock.monotonicNow()
        perform(state.withLock { $0.topology.hotStandbyChanged(host, inHotStandby: standby, at: now) })
    }

    /// The topology for `GET /v1/cluster`.
    public func snapshot() -> TopologySnapshot {
        let now = clock.monotonicNow()
        return state.withLock { $0.topology.snapshot(now: now) }
    }

    /// The primary, if known.
    public var primary: HostID? { state.withLock { $0.topology.primary } }

    /// The primary and the single-host target to connect to it (for a dedicated connection such as
    /// the change feed's LISTEN), if a primary is known.
    public func primaryTarget() -> (host: HostID, target: PostgresHostTarget)? {
        guard let primary, let index = hostIDs.firstIndex(of: primary) else { return nil }
        return (primary, targets[index])
    }
}
