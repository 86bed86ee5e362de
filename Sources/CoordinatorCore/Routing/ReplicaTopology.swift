/// Replica-aware routing over the servers of a multi-host PostgreSQL URL: which server is the primary,
/// which replicas may serve which reads, which servers to probe and when. Pure; the node's shell (an
/// actor) runs the probes, keeps the timer and opens the connections.
///
/// **Driving it.** The shell calls ``tick(now:)`` at start and whenever a ``TopologyAction/scheduleTick(at:)``
/// falls due, runs every ``TopologyAction/probe(_:)`` it is given (concurrently, each with a timeout
/// shorter than ``TopologyConfiguration/probeTimeout``) and reports each outcome with
/// ``probeSucceeded(_:observation:at:)`` or ``probeFailed(_:error:at:jitter:)``. Connections report
/// `in_hot_standby` changes with ``hotStandbyChanged(_:inHotStandby:at:)`` and failed writes with
/// ``writeFailed(_:_:at:jitter:)``. Every input answers the actions to take.
///
/// **Roles.** A probe that sees `pg_is_in_recovery() = false` makes a server a primary claimant, `true` a
/// replica. A failed probe (or a write that lost its connection) quarantines the server — no traffic —
/// until a probe succeeds; while a primary is known, a quarantined server is probed again after an
/// exponential backoff (``TopologyConfiguration/quarantineBase`` doubling to
/// ``TopologyConfiguration/quarantineMax``, minus jitter).
///
/// **Failover.** When the primary is lost (failed probe, lost write connection, a write refused as
/// read-only, `in_hot_standby = on`), every server is probed at once and then every
/// ``TopologyConfiguration/failoverProbeInterval`` (quarantine backoff ignored) until a primary is seen;
/// meanwhile writes fail with ``RoutingError/Code/noPrimary`` (retryable). A connection that reports
/// `in_hot_standby = off` for a replica marks it a primary candidate and probes every server at once.
///
/// **Split brain.** When several reachable servers claim to be primary, the one on the highest timeline
/// wins; on equal timelines, the one most streaming replicas receive from (`pg_stat_wal_receiver`);
/// failing that, the incumbent primary. Every other claimant is fenced (no traffic, not even reads) and
/// a ``TopologyAlert/splitBrain(claimants:primary:at:)`` alert is raised until at most one claims. If no
/// winner can be chosen, every claimant is fenced and writes fail with ``RoutingError/Code/splitBrain``.
///
/// **Lag.** Bytes: the primary's last observed `pg_current_wal_lsn()` minus the replica's replay LSN.
/// Milliseconds: 0 when the replica has received and replayed everything up to that position (an idle
/// primary causes no lag); otherwise the smaller of two upper bounds — the server's clock minus its last
/// replayed commit's timestamp, and the time since the replica was last seen caught up — so the lag of
/// a replica that stopped replaying or receiving grows with the time since the primary moved on. Lag is
/// evaluated at the newer of the replica's and the primary's last observations; observations older than
/// ``TopologyConfiguration/staleAfter`` make a replica ineligible for reads. A replica on an older
/// timeline than the primary's is never eligible (it may have diverged).
///
/// **Reads.** Among eligible replicas the one with the fewest outstanding requests wins (ties: URL
/// order); with none, the primary; with no primary either, a ``RoutingError``.
public struct ReplicaTopology: Sendable {
    /// The timing.
    public let configuration: TopologyConfiguration
    /// The servers, in URL order.
    public let hosts: [HostID]

    struct HostState: Sendable {
        var observation: HostObservation?
        var observedAt: Instant?
        var lastReportAt: Instant?
        var consecutiveFailures = 0
        var lastError: String?
        var quarantinedUntil: Instant?
        var invalidated = false
        var fenced = false
        var primaryCandidate = false
        var outstanding = 0
        /// nil: due now.
        var nextProbeAt: Instant?
        var probeInFlightSince: Instant?
        var probeAgain = false
        var lastCaughtUpAt: Instant?
        var reportedRole: HostRole = .unknown
    }

    var states: [HostState]
    let indexByHost: [HostID: Int]
    /// The primary writes go to, if one is known.
    public private(set) var primary: HostID?
    /// When the current failover started (nil when a primary is known or none was lost yet).
    public private(set) var failoverSince: Instant?
    /// The raised split-brain alert: every claimant and the one chosen (nil when at most one claims).
    public private(set) var splitBrain: SplitBrain?
    /// Counters for metrics.
    public private(set) var counters = TopologyCounters()
    /// The primary's newest known WAL position (kept while no primary is known).
    public private(set) var lastPrimaryLSN: LSN?
    var lastPrimaryObservedAt: Instant?
    var lastPrimaryTimeline: UInt32?
    var scheduledTick: Instant?

    /// A topology over `hosts` (URL order; duplicates are ignored), every server unknown and due for a probe.
    public init(hosts: [HostID], configuration: TopologyConfiguration = .default) {
        var unique: [HostID] = []
        var index: [HostID: Int] = [:]
        for host in hosts where index[host] == nil {
            index[host] = unique.count
            unique.append(host)
        }
        self.hosts = unique
        self.indexByHost = index
        self.configuration = configuration
        self.states = Array(repeating: HostState(), count: unique.count)
    }

    /// Whether a split-brain alert is raised.
    public var isSplitBrain: Bool { splitBrain != nil }

    /// The role of `host` (``HostRole/unknown`` for a server not in the URL).
    public func role(of host: HostID) -> HostRole {
        indexByHost[host].map { role(at: $0) } ?? .unknown
    }

    /// Requests outstanding on `host`.
    public func outstandingRequests(on host: HostID) -> Int {
        indexByHost[host].map { states[$0].outstanding } ?? 0
    }

    // MARK: Inputs

    /// The timer fired (or the shell starts): answers the probes due at `now` and the next wake-up.
    public mutating func tick(now: Instant) -> [TopologyAction] {
        collect(now: now)
    }

    /// A probe of `host` answered `observation` at `at`.
    public mutating func probeSucceeded(_ host: HostID, observation: HostObservation, at: Instant) -> [TopologyAction] {
        guard let i = indexByHost[host] else { return [] }
        states[i].probeInFlightSince = nil
        if let seen = states[i].observedAt, seen > at {  // an answer older than the one kept
            scheduleAfterReport(i, at: at, failed: false)
            return collect(now: at)
        }
        counters.probesSucceeded &+= 1
        var state = states[i]
        state.observation = observation
        state.observedAt = at
        state.lastReportAt = at
        state.consecutiveFailures = 0
        state.lastError = nil
        state.quarantinedUntil = nil
        state.invalidated = false
        if !state.probeAgain || !observation.inRecovery { state.primaryCandidate = false }
        states[i] = state
        if observation.inRecovery { noteCaughtUp(replica: i) }

        var actions: [TopologyAction] = []
        let probedAll = resolve(at: at, cause: .discovered, into: &actions)
        if !probedAll { scheduleAfterReport(i, at: at, failed: false) }
        return actions + collect(now: at)
    }

    /// A probe of `host` failed at `at` (`error` is kept for the snapshot). `jitter` in [0, 1) picks how
    /// much of ``TopologyConfiguration/jitterFraction`` comes off the backoff; nil derives a fixed value
    /// from the server and the failure count (deterministic, yet different per server).
    public mutating func probeFailed(_ host: HostID, error: String, at: Instant, jitter: Double? = nil) -> [TopologyAction] {
        guard let i = indexByHost[host] else { return [] }
        states[i].probeInFlightSince = nil
        counters.probesFailed &+= 1
        return recordFailure(i, error: error, at: at, jitter: jitter, cause: .probeFailed)
    }

    /// A connection to `host` reported the `in_hot_standby` parameter. `false` for a replica means it was
    /// promoted: it becomes a primary candidate and every server is probed at once. `true` for the
    /// primary means it was demoted: the primary is lost (failover).
    public mutating func hotStandbyChanged(_ host: HostID, inHotStandby: Bool, at: Instant) -> [TopologyAction] {
        guard let i = indexByHost[host] else { return [] }
        var actions: [TopologyAction] = []
        if inHotStandby {
            guard primary == host else { return [] }
            states[i].invalidated = true
            if !resolve(at: at, cause: .hotStandbyOn, into: &actions) { probeAll(at: at) }
        } else {
            guard primary != host else { return [] }
            states[i].primaryCandidate = true
            probeAll(at: at)
        }
        return actions + collect(now: at)
    }

    /// A write on `host` failed. A lost connection quarantines the server like a failed probe; a
    /// read-only refusal from the primary invalidates it. Either starts a failover when `host` was the
    /// primary.
    public mutating func writeFailed(_ host: HostID, _ failure: WriteFailure, at: Instant, jitter: Double? = nil) -> [TopologyAction] {
        guard let i = indexByHost[host] else { return [] }
        counters.writeFailures &+= 1
        switch failure {
        case .connectionLost:
            return recordFailure(i, error: "write: connection lost", at: at, jitter: jitter, cause: .writeConnectionLost)
        case .readOnly:
            guard primary == host else { return [] }
            states[i].invalidated = true
            var actions: [TopologyAction] = []
            if !resolve(at: at, cause: .writeReadOnly, into: &actions) { probeAll(at: at) }
            return actions + collect(now: at)
        }
    }

    /// A request was sent to `host` (after ``route(_:now:)``).
    public mutating func requestStarted(_ host: HostID) {
        guard let i = indexByHost[host] else { return }
        states[i].outstanding &+= 1
    }

    /// A request on `host` finished (however it ended).
    public mutating func requestFinished(_ host: HostID) {
        guard let i = indexByHost[host] else { return }
        states[i].outstanding = max(0, states[i].outstanding - 1)
    }

    // MARK: Routing

    /// Where to send `request` at `now`. Writes and `read(.primary)` go to the primary; other reads to the
    /// least-loaded eligible replica, else the primary. Throws ``RoutingError`` (retryable) when no server
    /// can take it. Counts the decision; call ``requestStarted(_:)`` when the request is sent.
    public mutating func route(_ request: RouteRequest, now: Instant) throws(RoutingError) -> RouteDecision {
        switch request {
        case .write:
            let host = try primaryOrThrow()
            counters.writesRouted &+= 1
            return RouteDecision(host: host, role: .primary, reason: .write)
        case .read(.primary):
            let host = try primaryOrThrow()
            counters.readsToPrimary &+= 1
            return RouteDecision(host: host, role: .primary, reason: .primaryRequested)
        case .read(let consistency):
            if let i = bestReplica(for: consistency, now: now) {
                counters.readsToReplica &+= 1
                return RouteDecision(host: hosts[i], role: .replica, reason: .replica)
            }
            let host = try primaryOrThrow()
            counters.readFallbacks &+= 1
            return RouteDecision(host: host, role: .primary, reason: .fallbackToPrimary)
        }
    }

    /// The replicas that could serve a read of `consistency` at `now`, in URL order (no counting).
    public func eligibleReplicas(for consistency: ReadConsistency, now: Instant) -> [HostID] {
        hosts.indices.filter { isEligible($0, for: consistency, now: now) }.map { hosts[$0] }
    }

    mutating func primaryOrThrow() throws(RoutingError) -> HostID {
        if let primary { return primary }
        counters.routingErrors &+= 1
        if let splitBrain {
            throw RoutingError(
                .splitBrain,
                "several servers claim to be primary and none could be chosen: "
                    + splitBrain.claimants.map(\.description).joined(separator: ", "),
                retryAfter: configuration.failoverProbeInterval)
        }
        let message = failoverSince != nil ? "the primary was lost; failover in progress" : "no primary is known"
        throw RoutingError(.noPrimary, message, retryAfter: configuration.failoverProbeInterval)
    }

    func bestReplica(for consistency: ReadConsistency, now: Instant) -> Int? {
        var best: Int?
        for i in hosts.indices where isEligible(i, for: consistency, now: now) {
            if best == nil || states[i].outstanding < states[best!].outstanding { best = i }
        }
        return best
    }

    func isEligible(_ i: Int, for consistency: ReadConsistency, now: Instant) -> Bool {
        guard role(at: i) == .replica, let observation = states[i].observation, let seen = states[i].observedAt,
            now - seen <= configuration.staleAfter, let replay = observation.replayLSN
        else { return false }
        // Once the primary's timeline is known, a replica must be seen receiving it: one on an older
        // timeline, or whose WAL receiver is not streaming (timeline unknown — e.g. diverged after a
        // failover and waiting), may hold commits the primary does not have, whatever its LSN says.
        if let primaryTimeline = lastPrimaryTimeline {
            guard let replicaTimeline = observation.timeline, replicaTimeline >= primaryTimeline else { return false }
        }
        switch consistency {
        case .primary:
            return false
        case .readYourWrites(let lsn):
            return replay >= lsn
        case .fresh(let maxBytes, let maxSeconds):
            let lag = lag(at: i)
            if let maxBytes {
                guard let bytes = lag.bytes, bytes <= maxBytes else { return false }
            }
            if let maxSeconds {
                guard let ms = lag.ms, Double(ms) <= maxSeconds * 1_000 else { return false }
            }
            return true
        }
    }

    // MARK: Lag

    /// Replication lag of `host` at its last observation: bytes behind the primary's last known position
    /// and milliseconds (see the type's documentation); nil parts are unknown. Nil for a non-replica.
    public func lag(of host: HostID) -> (bytes: UInt64?, ms: Int64?)? {
        guard let i = indexByHost[host], states[i].observation?.inRecovery == true else { return nil }
        return lag(at: i)
    }

    func lag(at i: Int) -> (bytes: UInt64?, ms: Int64?) {
        guard let observation = states[i].observation, observation.inRecovery, let replay = observation.replayLSN else {
            return (nil, nil)
        }
        let received = observation.receiveLSN ?? replay
        if let reference = lastPrimaryLSN, replay >= reference, received <= replay {
            return (0, 0)
        }
        let bytes = lastPrimaryLSN.map { $0.bytes(after: replay) }
        guard let seen = states[i].observedAt else { return (bytes, nil) }
        // Evaluated at the newest evidence: the replica's observation or the primary's, if later.
        let evaluatedAt = max(seen, lastPrimaryObservedAt ?? seen)
        var ms: Int64?
        if let replayed = observation.lastReplayTimestampMs {
            ms = max(0, observation.serverNowMs &- replayed) &+ (evaluatedAt - seen).nanoseconds / 1_000_000
        }
        if let caughtUp = states[i].lastCaughtUpAt {
            let since = max(0, (evaluatedAt - caughtUp).nanoseconds / 1_000_000)
            ms = min(ms ?? since, since)
        }
        return (bytes, ms)
    }

    /// Records that replica `i` had, at its observation, everything the primary had at the primary's last
    /// observation (the earlier of the two instants is when it was certainly caught up).
    mutating func noteCaughtUp(replica i: Int) {
        guard let reference = lastPrimaryLSN, let observation = states[i].observation, observation.inRecovery,
            let replay = observation.replayLSN, replay >= reference, let seen = states[i].observedAt
        else { return }
        var when = seen
        if let primary, let p = indexByHost[primary], let primarySeen = states[p].observedAt, primarySeen < when {
            when = primarySeen
        }
        if let previous = states[i].lastCaughtUpAt, previous >= when { return }
        states[i].lastCaughtUpAt = when
    }

    // MARK: Roles

    func role(at i: Int) -> HostRole {
        let state = states[i]
        if state.consecutiveFailures > 0 { return .quarantined }
        if state.fenced { return .fenced }
        guard let observation = state.observation, !state.invalidated else { return .unknown }
        if observation.inRecovery { return .replica }
        return primary == hosts[i] ? .primary : .unknown
    }

    func isClaimant(_ i: Int) -> Bool {
        let state = states[i]
        return state.consecutiveFailures == 0 && !state.invalidated && state.observation?.inRecovery == false
    }

    func isUsableReplica(_ i: Int) -> Bool {
        let state = states[i]
        return state.consecutiveFailures == 0 && !state.invalidated && state.observation?.inRecovery == true
    }

    /// Picks the primary among claimants (see the type's documentation); nil when none can be chosen.
    func chooseWinner(_ claimants: [Int]) -> Int? {
        if claimants.count <= 1 { return claimants.first }
        var candidates = claimants
        let timelines = claimants.compactMap { states[$0].observation?.timeline }
        if timelines.count == claimants.count, let highest = timelines.max() {
            candidates = claimants.filter { states[$0].observation?.timeline == highest }
            if candidates.count == 1 { return candidates[0] }
        }
        var votes = [Int](repeating: 0, count: candidates.count)
        for r in hosts.indices where isUsableReplica(r) {
            guard let receiver = states[r].observation?.walReceiver, receiver.isStreaming,
                let upstream = receiver.upstream, let c = candidates.firstIndex(where: { hosts[$0] == upstream })
            else { continue }
            votes[c] += 1
        }
        if let most = votes.max(), most > 0, votes.filter({ $0 == most }).count == 1 {
            return candidates[votes.firstIndex(of: most)!]
        }
        if let primary, let incumbent = indexByHost[primary], candidates.contains(incumbent) { return incumbent }
        return nil
    }

    /// Recomputes the primary, fencing and roles after an input; appends the events. Returns whether a
    /// failover started (every server was made due).
    mutating func resolve(at now: Instant, cause: RoleChangeReason, into actions: inout [TopologyAction]) -> Bool {
        let claimants = hosts.indices.filter { isClaimant($0) }
        let winner = chooseWinner(claimants)
        for i in hosts.indices {
            states[i].fenced = claimants.count > 1 && claimants.contains(i) && i != winner
        }
        let previous = primary
        primary = winner.map { hosts[$0] }
        if let winner, let observation = states[winner].observation {
            if let lsn = observation.currentLSN {
                lastPrimaryLSN = lsn
                lastPrimaryObservedAt = states[winner].observedAt
                for r in hosts.indices where r != winner { noteCaughtUp(replica: r) }
            }
            if let timeline = observation.timeline { lastPrimaryTimeline = timeline }
        }

        // Split-brain alert.
        if claimants.count > 1 {
            let current = SplitBrain(claimants: claimants.map { hosts[$0] }, primary: primary)
            if splitBrain == nil { counters.splitBrains &+= 1 }
            if splitBrain != current {
                splitBrain = current
                actions.append(.alert(.splitBrain(claimants: current.claimants, primary: current.primary, at: now)))
            }
        } else if splitBrain != nil {
            splitBrain = nil
            actions.append(.alert(.splitBrainResolved(at: now)))
        }

        // Role changes.
        var previousPrimaryReason = cause
        for i in hosts.indices {
            let old = states[i].reportedRole
            let new = role(at: i)
            guard old != new else { continue }
            let reason = Self.reason(from: old, to: new, cause: cause)
            if hosts[i] == previous { previousPrimaryReason = reason }
            states[i].reportedRole = new
            counters.roleChanges &+= 1
            actions.append(.roleChanged(RoleChange(host: hosts[i], from: old, to: new, reason: reason, at: now)))
        }

        // Failover.
        if let previous, primary == nil {
            failoverSince = now
            counters.failoversStarted &+= 1
            actions.append(.failover(.started(previous: previous, reason: previousPrimaryReason, at: now)))
            probeAll(at: now)
            return true
        }
        if let primary, let since = failoverSince {
            failoverSince = nil
            counters.failoversCompleted &+= 1
            actions.append(.failover(.completed(primary: primary, after: now - since, at: now)))
        }
        return false
    }

    static func reason(from old: HostRole, to new: HostRole, cause: RoleChangeReason) -> RoleChangeReason {
        switch (old, new) {
        case (_, .fenced): .splitBrainLost
        case (_, .quarantined): cause
        case (.fenced, _): .splitBrainCleared
        case (.quarantined, _): .recovered
        case (_, .unknown): cause
        case (.replica, .primary): .promoted
        case (.primary, .replica): .demoted
        default: .discovered
        }
    }

    // MARK: Probe scheduling

    mutating func recordFailure(_ i: Int, error: String, at: Instant, jitter: Double?, cause: RoleChangeReason) -> [TopologyAction] {
        states[i].consecutiveFailures &+= 1
        states[i].lastError = error
        states[i].lastReportAt = at
        let failures = states[i].consecutiveFailures
        let backoff = quarantineBackoff(failures: failures, jitter: jitter ?? Self.defaultJitter(hosts[i], failures))
        states[i].quarantinedUntil = at + backoff
        var actions: [TopologyAction] = []
        let probedAll = resolve(at: at, cause: cause, into: &actions)
        if !probedAll, states[i].probeInFlightSince == nil {
            scheduleAfterReport(i, at: at, failed: true)
        }
        return actions + collect(now: at)
    }

    /// Sets the next probe of `i` after a report at `at`.
    mutating func scheduleAfterReport(_ i: Int, at: Instant, failed: Bool) {
        if states[i].probeAgain {
            states[i].probeAgain = false
            states[i].nextProbeAt = at
            return
        }
        let searching = primary == nil
        let interval = searching ? configuration.failoverProbeInterval : configuration.probeInterval
        if failed, let until = states[i].quarantinedUntil {
            states[i].nextProbeAt = searching ? min(until, at + interval) : until
        } else {
            states[i].nextProbeAt = at + interval
        }
    }

    /// The quarantine backoff after `failures` consecutive failures: base × 2^(failures−1) capped at the
    /// maximum, minus `jitter` (clamped to [0, 1]) × ``TopologyConfiguration/jitterFraction`` of it.
    public func quarantineBackoff(failures: Int, jitter: Double) -> Span {
        var backoff = configuration.quarantineBase.nanoseconds
        let cap = max(configuration.quarantineMax.nanoseconds, backoff)
        var step = 1
        while step < failures, backoff < cap {
            backoff = backoff > cap / 2 ? cap : backoff * 2
            step += 1
        }
        backoff = min(backoff, cap)
        let share = min(max(jitter, 0), 1) * min(max(configuration.jitterFraction, 0), 1)
        return Span(nanoseconds: backoff - Int64(Double(backoff) * share))
    }

    /// A fixed value in [0, 1) from the server and the failure count (FNV-1a), so servers that fail
    /// together spread their retries without a random source.
    static func defaultJitter(_ host: HostID, _ failures: Int) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in host.description.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        hash = (hash ^ UInt64(truncatingIfNeeded: failures)) &* 0x0000_0100_0000_01B3
        hash ^= hash >> 33
        return Double(hash >> 11) / Double(UInt64(1) << 53)
    }

    /// Makes every server due at `now`; servers with a probe in flight are probed again when it reports.
    mutating func probeAll(at now: Instant) {
        for i in hosts.indices {
            if states[i].probeInFlightSince != nil {
                states[i].probeAgain = true
            } else {
                states[i].nextProbeAt = now
            }
        }
    }

    /// The probes due at `now` (marked in flight) and, when it changed, the next wake-up.
    mutating func collect(now: Instant) -> [TopologyAction] {
        var due: [HostID] = []
        var next: Instant?
        for i in hosts.indices {
            if let since = states[i].probeInFlightSince {
                let expiry = since + configuration.probeTimeout
                if expiry > now {
                    next = min(next ?? expiry, expiry)
                    continue
                }
            }
            if let at = states[i].nextProbeAt, at > now {
                next = min(next ?? at, at)
                continue
            }
            due.append(hosts[i])
            states[i].probeInFlightSince = now
            states[i].nextProbeAt = nil
            let expiry = now + configuration.probeTimeout
            next = min(next ?? expiry, expiry)
        }
        var actions: [TopologyAction] = due.isEmpty ? [] : [.probe(due)]
        if let next, next != scheduledTick {
            scheduledTick = next
            actions.append(.scheduleTick(at: next))
        }
        return actions
    }

    // MARK: Snapshot

    /// Every server's status at `now`, the primary, failover and split-brain state, and the counters.
    public func snapshot(now: Instant) -> TopologySnapshot {
        let statuses = hosts.indices.map { i -> HostStatus in
            let state = states[i]
            let observation = state.invalidated ? nil : state.observation
            let isReplica = observation?.inRecovery == true
            let lag: (bytes: UInt64?, ms: Int64?) = isReplica ? lag(at: i) : (nil, nil)
            let observedRole: HostRole = observation.map { $0.inRecovery ? .replica : .primary } ?? .unknown
            return HostStatus(
                id: hosts[i], role: role(at: i), observedRole: observedRole, timeline: state.observation?.timeline,
                lagBytes: lag.bytes, replayBacklogBytes: isReplica ? observation?.replayBacklogBytes : nil, lagMs: lag.ms,
                replayPaused: observation?.replayPaused ?? false, walReceiverStatus: observation?.walReceiver?.status,
                quarantinedUntil: state.consecutiveFailures > 0 ? state.quarantinedUntil : nil, fenced: state.fenced,
                primaryCandidate: state.primaryCandidate,
                lastProbeAgeMs: state.lastReportAt.map { max(0, (now - $0).nanoseconds / 1_000_000) },
                lastSuccessAgeMs: state.observedAt.map { max(0, (now - $0).nanoseconds / 1_000_000) },
                consecutiveFailures: state.consecutiveFailures, lastError: state.lastError,
                outstandingRequests: state.outstanding)
        }
        return TopologySnapshot(
            hosts: statuses, primary: primary, failoverSince: failoverSince, splitBrain: splitBrain != nil, counters: counters)
    }
}
