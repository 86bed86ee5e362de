/// Something the node must do for a shared breaker.
public enum SharedBreakerAction: Sendable, Equatable, Hashable {
    /// Run the compare-and-set transition script with this proposal; it publishes the written record.
    /// Feed the script's answer (written or current record) back through
    /// ``SharedBreakerCoordinator/receive(_:)``; on an error call ``SharedBreakerCoordinator/proposalFailed()``.
    case propose(SharedBreakerProposal)
    /// `quorum(n)`: record this node's trip vote (Redis time from the script) and publish it.
    case castVote(nodeID: String)
    /// `aggregate`: publish this node's window counters now rather than at the next flush.
    case flushCounters
    /// Apply the record to the local breaker: `adopt(state:openUntil:now:)` with
    /// ``SharedBreakerState/localOpenUntil(redisNowMs:now:)``.
    case adopt(SharedBreakerState)
}

/// The cluster side of one shared breaker on one node: turns local transitions, remote records, votes
/// and counters into ``SharedBreakerAction``s. Pure; the node owns the I/O.
///
/// Rules:
/// - Transitions the local breaker made because of the cluster (`remote`) or a configuration change
///   (`reconfigured`, which every node applies itself) are never sent back.
/// - Operator commands (`forced`) apply cluster-wide under every policy but `local`, unconditionally
///   (no expected version), so an operator is never outvoted by a race.
/// - closed → open on rates: `any` proposes to open the cluster; `quorum(n)` casts a vote (and
///   proposes once n distinct nodes voted within the window); `aggregate` flushes its counters (the
///   cluster opens from ``evaluateAggregate(config:atRedisMs:)``). Under `quorum`/`aggregate` the
///   local breaker stays open alone until the cluster decides.
/// - open → half_open is never proposed: it follows from the record's `openUntilRedisMs`; probes are
///   coordinated with ``ProbeLeasing`` (round = the open record's version).
/// - half_open → closed/open proposes the verdict when the cluster is open; a local-only episode
///   (quorum/aggregate) closes locally.
/// - Cluster openings wait ``BreakerConfig/openWaitMs(forOpening:)`` of the cluster-wide opening
///   count, so every node backs off alike.
/// - At most one conditional proposal per base version is outstanding.
public struct SharedBreakerCoordinator: Sendable {
    /// This node's id.
    public let nodeID: String
    /// The sharing policy.
    public private(set) var sharing: BreakerSharing
    /// The newest cluster record known.
    public private(set) var known: SharedBreakerState?
    /// Trip votes (`quorum`).
    public private(set) var votes: QuorumVotes
    /// Nodes' window counters (`aggregate`).
    public private(set) var tally: ClusterWindowTally
    /// The base version of the outstanding conditional proposal, if any.
    public private(set) var pendingBase: UInt64?

    /// Creates the coordinator of one breaker. Votes count for `voteWindowMs` (default 60 s); counters
    /// for `counterStaleAfterMs` (default 3 s).
    public init(nodeID: String, sharing: BreakerSharing, voteWindowMs: Int64 = 60_000, counterStaleAfterMs: Int64 = 3_000) {
        self.nodeID = nodeID
        self.sharing = sharing
        self.known = nil
        self.votes = QuorumVotes(windowMs: voteWindowMs)
        self.tally = ClusterWindowTally(staleAfterMs: counterStaleAfterMs)
        self.pendingBase = nil
    }

    /// The version of the known record (0 when none): the epoch counters are counted under.
    public var epoch: UInt64 { known?.version ?? 0 }

    /// Whether the cluster holds the breaker open.
    public var isClusterOpen: Bool { known?.isClusterOpen ?? false }

    /// Changes the policy; votes and counters start afresh.
    public mutating func setSharing(_ sharing: BreakerSharing) {
        self.sharing = sharing
        votes.clear()
        tally.clear()
    }

    // MARK: Local events

    /// The local breaker changed state (`transition`). `config` is its configuration; `redisNowMs`
    /// the node's estimate of the Redis clock.
    public mutating func localTransition(
        _ transition: BreakerTransition, config: BreakerConfig, atRedisMs redisNowMs: Int64
    ) -> [SharedBreakerAction] {
        if sharing == .local { return [] }
        switch transition.reason {
        case .remote, .reconfigured, .openWaitElapsed:
            return []
        case .forced:
            return [.propose(proposal(to: transition.to, reason: .forced, config: config, conditional: false))]
        case .failureRate, .slowCallRate:
            guard transition.from == .closed, transition.to == .open, !isClusterOpen else { return [] }
            switch sharing {
            case .local: return []
            case .any:
                return conditionalProposal(to: .open, reason: transition.reason, config: config)
            case .quorum(let n):
                votes.cast(nodeID: nodeID, atRedisMs: redisNowMs)
                var actions: [SharedBreakerAction] = [.castVote(nodeID: nodeID)]
                if votes.isReached(n, atRedisMs: redisNowMs) {
                    actions += conditionalProposal(to: .open, reason: transition.reason, config: config)
                }
                return actions
            case .aggregate:
                return [.flushCounters]
            }
        case .probesSucceeded, .probesFailed, .halfOpenTimeout:
            guard isClusterOpen, transition.to == .closed || transition.to == .open else { return [] }
            return conditionalProposal(to: transition.to, reason: transition.reason, config: config)
        }
    }

    /// A half-open round's cluster-wide tally is in (see ``ProbeRoundTally``): proposes its verdict.
    public mutating func probeRoundCompleted(_ tally: ProbeRoundTally, config: BreakerConfig) -> [SharedBreakerAction] {
        guard sharing != .local, isClusterOpen, known?.state != .forcedOpen else { return [] }
        switch tally.verdict(config: config) {
        case .pending: return []
        case .close: return conditionalProposal(to: .closed, reason: .probesSucceeded, config: config)
        case .reopen: return conditionalProposal(to: .open, reason: .probesFailed, config: config)
        }
    }

    // MARK: Remote events

    /// A record from the bus, a snapshot load or the transition script's answer. Newer versions are
    /// kept and returned as `.adopt`; older or equal ones change nothing. A new version clears votes
    /// and counters (they were counted under the old state).
    public mutating func receive(_ record: SharedBreakerState) -> [SharedBreakerAction] {
        if let pendingBase, record.version > pendingBase { self.pendingBase = nil }
        guard record.isNewer(than: known) else { return [] }
        known = record
        votes.clear()
        tally.clear()
        return sharing == .local ? [] : [.adopt(record)]
    }

    /// The outstanding proposal failed (Redis error or timeout): another may be made.
    public mutating func proposalFailed() { pendingBase = nil }

    /// Another node's trip vote (`quorum`). Proposes to open once the quorum is reached.
    public mutating func receiveVote(nodeID voter: String, atRedisMs redisMs: Int64, config: BreakerConfig) -> [SharedBreakerAction] {
        guard case .quorum(let n) = sharing, !isClusterOpen else { return [] }
        votes.cast(nodeID: voter, atRedisMs: redisMs)
        guard votes.isReached(n, atRedisMs: redisMs) else { return [] }
        return conditionalProposal(to: .open, reason: .failureRate, config: config)
    }

    /// A node's window counters (`aggregate`; this node's own included).
    public mutating func receiveCounters(nodeID sender: String, counters: WindowCounters, epoch: UInt64, atRedisMs redisMs: Int64) {
        guard sharing == .aggregate else { return }
        tally.update(nodeID: sender, counters: counters, epoch: epoch, atRedisMs: redisMs)
    }

    /// `aggregate`: the cluster verdict now, and a proposal to open when it trips (cluster closed only).
    public mutating func evaluateAggregate(config: BreakerConfig, atRedisMs redisMs: Int64) -> (AggregateVerdict, [SharedBreakerAction]) {
        let verdict = ClusterWindowTally.verdict(tally.totals(epoch: epoch, atRedisMs: redisMs), config: config)
        guard sharing == .aggregate, !isClusterOpen, known?.state != .disabled, known?.state != .metricsOnly,
            case .trip(let reason, _, _) = verdict
        else { return (verdict, []) }
        return (verdict, conditionalProposal(to: .open, reason: reason, config: config))
    }

    // MARK: Proposals

    mutating func conditionalProposal(to state: BreakerState, reason: TransitionReason, config: BreakerConfig) -> [SharedBreakerAction] {
        if let known, known.state == .forcedOpen || known.state == .disabled || known.state == .metricsOnly {
            return []  // an operator's state is changed only by an operator
        }
        guard pendingBase != epoch else { return [] }
        pendingBase = epoch
        return [.propose(proposal(to: state, reason: reason, config: config, conditional: true))]
    }

    func proposal(to state: BreakerState, reason: TransitionReason, config: BreakerConfig, conditional: Bool) -> SharedBreakerProposal {
        var openings = 0
        var wait: Int64?
        if state == .open {
            let previous = known.map { $0.state == .closed ? 0 : $0.consecutiveOpenings } ?? 0
            openings = previous + 1
            wait = config.openWaitMs(forOpening: openings)
        } else if state != .closed {
            openings = known?.consecutiveOpenings ?? 0
        }
        return SharedBreakerProposal(
            expectedVersion: conditional ? epoch : nil, state: state, reason: reason, originNode: nodeID,
            openWaitMs: wait, consecutiveOpenings: openings)
    }
}
