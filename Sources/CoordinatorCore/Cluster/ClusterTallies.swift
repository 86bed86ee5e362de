// MARK: Quorum votes

/// Trip votes of the `quorum(n)` policy: the Redis time of each node's latest vote. A vote counts
/// while `redisNow − votedAt < windowMs`; only distinct nodes count.
public struct QuorumVotes: Sendable, Equatable {
    /// How long a vote counts, in Redis milliseconds.
    public let windowMs: Int64
    /// Node id → Redis time of its latest vote.
    public private(set) var votes: [String: Int64]

    /// No votes.
    public init(windowMs: Int64) {
        precondition(windowMs > 0)
        self.windowMs = windowMs
        self.votes = [:]
    }

    /// Records `nodeID`'s vote at `redisMs` (a later vote of the same node replaces an earlier one).
    public mutating func cast(nodeID: String, atRedisMs redisMs: Int64) {
        votes[nodeID] = max(votes[nodeID] ?? Int64.min, redisMs)
    }

    /// The nodes whose vote still counts at `redisMs`, sorted.
    public func voters(atRedisMs redisMs: Int64) -> [String] {
        votes.filter { redisMs &- $0.value < windowMs }.keys.sorted()
    }

    /// Whether at least `quorum` distinct nodes voted within the window.
    public func isReached(_ quorum: Int, atRedisMs redisMs: Int64) -> Bool {
        voters(atRedisMs: redisMs).count >= quorum
    }

    /// Drops expired votes.
    public mutating func prune(atRedisMs redisMs: Int64) {
        votes = votes.filter { redisMs &- $0.value < windowMs }
    }

    /// Drops every vote (the cluster changed state).
    public mutating func clear() { votes.removeAll() }
}

// MARK: Aggregate counters

/// A breaker window's counts, as one node publishes them for the `aggregate` policy.
public struct WindowCounters: Sendable, Equatable, Hashable {
    /// Calls in the window.
    public var calls: Int
    /// Failed calls.
    public var failed: Int
    /// Slow calls.
    public var slow: Int

    /// Creates counters.
    public init(calls: Int, failed: Int, slow: Int) {
        self.calls = calls
        self.failed = failed
        self.slow = slow
    }

    /// The counters of a breaker snapshot (meaningful while closed).
    public init(_ snapshot: BreakerSnapshot) {
        self.init(calls: snapshot.numberOfCalls, failed: snapshot.failedCalls, slow: snapshot.slowCalls)
    }

    /// Nothing counted.
    public static let zero = WindowCounters(calls: 0, failed: 0, slow: 0)
}

/// What the cluster-wide counters say.
public enum AggregateVerdict: Sendable, Equatable, Hashable {
    /// Fewer calls than the minimum across the cluster: no rates.
    case notEnoughCalls(calls: Int, minimum: Int)
    /// Rates below both thresholds.
    case healthy(failureRate: Double, slowCallRate: Double)
    /// A rate at or above its threshold: the cluster should open.
    case trip(reason: TransitionReason, failureRate: Double, slowCallRate: Double)
}

/// The latest window counters of every node, for the `aggregate` policy.
///
/// Each entry carries the Redis time it was published at and the cluster record version (``epoch``) it
/// was counted under: counters older than `staleAfterMs`, or of another epoch (counted before the
/// cluster last changed state), drop out of the totals.
public struct ClusterWindowTally: Sendable, Equatable {
    /// One node's latest counters.
    public struct Entry: Sendable, Equatable, Hashable {
        /// The counts.
        public var counters: WindowCounters
        /// The shared record version they were counted under.
        public var epoch: UInt64
        /// When they were published (Redis ms).
        public var atRedisMs: Int64
    }

    /// Counters older than this (Redis ms) no longer count (default 3 000: a node that stopped
    /// publishing drops out like a dead member).
    public let staleAfterMs: Int64
    /// Node id → latest entry.
    public private(set) var entries: [String: Entry]

    /// An empty tally.
    public init(staleAfterMs: Int64 = 3_000) {
        precondition(staleAfterMs > 0)
        self.staleAfterMs = staleAfterMs
        self.entries = [:]
    }

    /// Records `nodeID`'s counters, unless an entry published later is already held.
    public mutating func update(nodeID: String, counters: WindowCounters, epoch: UInt64, atRedisMs redisMs: Int64) {
        if let existing = entries[nodeID], existing.atRedisMs > redisMs { return }
        entries[nodeID] = Entry(counters: counters, epoch: epoch, atRedisMs: redisMs)
    }

    /// The sum over fresh entries of `epoch` at `redisMs`.
    public func totals(epoch: UInt64, atRedisMs redisMs: Int64) -> WindowCounters {
        var total = WindowCounters.zero
        for entry in entries.values where entry.epoch == epoch && redisMs &- entry.atRedisMs < staleAfterMs {
            total.calls &+= max(0, entry.counters.calls)
            total.failed &+= max(0, entry.counters.failed)
            total.slow &+= max(0, entry.counters.slow)
        }
        return total
    }

    /// The nodes counted in ``totals(epoch:atRedisMs:)``, sorted.
    public func contributors(epoch: UInt64, atRedisMs redisMs: Int64) -> [String] {
        entries.filter { $0.value.epoch == epoch && redisMs &- $0.value.atRedisMs < staleAfterMs }.keys.sorted()
    }

    /// Drops stale entries.
    public mutating func prune(atRedisMs redisMs: Int64) {
        entries = entries.filter { redisMs &- $0.value.atRedisMs < staleAfterMs }
    }

    /// Drops every entry.
    public mutating func clear() { entries.removeAll() }

    /// The cluster verdict of `totals` under `config`'s thresholds. The minimum is `minimumCalls`,
    /// capped by the window size for a count window (as a single breaker does).
    public static func verdict(_ totals: WindowCounters, config: BreakerConfig) -> AggregateVerdict {
        let minimum = max(1, config.window.type == .count ? min(config.minimumCalls, config.window.size) : config.minimumCalls)
        guard totals.calls >= minimum, totals.calls > 0 else {
            return .notEnoughCalls(calls: totals.calls, minimum: minimum)
        }
        let failureRate = Double(totals.failed) * 100 / Double(totals.calls)
        let slowCallRate = Double(totals.slow) * 100 / Double(totals.calls)
        if failureRate >= config.failureRateThreshold {
            return .trip(reason: .failureRate, failureRate: failureRate, slowCallRate: slowCallRate)
        }
        if slowCallRate >= config.slowCallRateThreshold {
            return .trip(reason: .slowCallRate, failureRate: failureRate, slowCallRate: slowCallRate)
        }
        return .healthy(failureRate: failureRate, slowCallRate: slowCallRate)
    }
}

// MARK: Half-open probe leases

/// One probe lease of a half-open round: `SET lease:{breaker}:{round}:{slot} NX PX`.
///
/// A lease is held while its probe runs (until `expiresAtRedisMs`, the permit timeout); when the
/// probe's outcome is recorded the lease is marked `completed` (and kept for the round), so a slot is
/// used at most once per round. A lease that expires uncompleted (its node died) frees its slot.
public struct ProbeLease: Sendable, Equatable, Hashable {
    /// The slot, 0 ..< halfOpenPermittedCalls.
    public var slot: Int
    /// The node running the probe.
    public var holder: String
    /// The round: the version of the shared `open` record the half-open follows.
    public var round: UInt64
    /// When an uncompleted lease lapses (Redis ms).
    public var expiresAtRedisMs: Int64
    /// Whether the probe's outcome was recorded.
    public var completed: Bool

    /// Creates a lease.
    public init(slot: Int, holder: String, round: UInt64, expiresAtRedisMs: Int64, completed: Bool = false) {
        self.slot = slot
        self.holder = holder
        self.round = round
        self.expiresAtRedisMs = expiresAtRedisMs
        self.completed = completed
    }
}

/// The cluster-wide probe budget of a half-open round, from its leases.
public enum ProbeLeasing {
    /// The slots of `round` in `0..<permitted` that are free at `redisMs` (no completed lease and no
    /// unexpired one), ascending. Leases of other rounds and out-of-range slots are ignored.
    public static func freeSlots(permitted: Int, leases: [ProbeLease], round: UInt64, atRedisMs redisMs: Int64) -> [Int] {
        guard permitted > 0 else { return [] }
        var taken = [Bool](repeating: false, count: permitted)
        for lease in leases where lease.round == round && lease.slot >= 0 && lease.slot < permitted {
            if lease.completed || redisMs < lease.expiresAtRedisMs { taken[lease.slot] = true }
        }
        return taken.indices.filter { !taken[$0] }
    }

    /// How many more probes may start cluster-wide in `round` at `redisMs`.
    public static func remaining(permitted: Int, leases: [ProbeLease], round: UInt64, atRedisMs redisMs: Int64) -> Int {
        freeSlots(permitted: permitted, leases: leases, round: round, atRedisMs: redisMs).count
    }
}

/// The recorded probe outcomes of a half-open round, cluster-wide.
public struct ProbeRoundTally: Sendable, Equatable, Hashable {
    /// Probes whose outcome was recorded (ignored outcomes excluded).
    public var recorded: Int
    /// Failed ones.
    public var failed: Int
    /// Slow ones.
    public var slow: Int

    /// Creates a tally.
    public init(recorded: Int = 0, failed: Int = 0, slow: Int = 0) {
        self.recorded = recorded
        self.failed = failed
        self.slow = slow
    }

    /// The round's verdict: pending until `halfOpenPermittedCalls` outcomes are in; then reopen if a
    /// rate reaches its threshold, else close (the same rule as a single breaker's half-open).
    public func verdict(config: BreakerConfig) -> ProbeVerdict {
        let permitted = max(1, config.halfOpenPermittedCalls)
        guard recorded >= permitted else { return .pending(remaining: permitted - max(0, recorded)) }
        let failureRate = Double(failed) * 100 / Double(recorded)
        let slowCallRate = Double(slow) * 100 / Double(recorded)
        if failureRate >= config.failureRateThreshold || slowCallRate >= config.slowCallRateThreshold {
            return .reopen(failureRate: failureRate, slowCallRate: slowCallRate)
        }
        return .close(failureRate: failureRate, slowCallRate: slowCallRate)
    }
}

/// What a half-open round decided.
public enum ProbeVerdict: Sendable, Equatable, Hashable {
    /// Outcomes still missing.
    case pending(remaining: Int)
    /// Every probe is in and the rates are below their thresholds.
    case close(failureRate: Double, slowCallRate: Double)
    /// Every probe is in and a rate reached its threshold.
    case reopen(failureRate: Double, slowCallRate: Double)
}
