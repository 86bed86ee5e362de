/// The state of a ``CircuitBreaker``. Raw values are the wire names.
public enum BreakerState: String, Codable, Sendable, CaseIterable {
    /// Calls flow; outcomes fill the sliding window, which trips the breaker when a rate crosses its threshold.
    case closed
    /// Calls are rejected until the open wait elapses; the next `acquire` after that moves to half-open.
    case open
    /// A fixed number of probe calls is admitted; their outcomes decide between closed and open.
    case halfOpen = "half_open"
    /// Set by an operator: every call is rejected, nothing is recorded, the state never changes by itself.
    case forcedOpen = "forced_open"
    /// Set by an operator: every call is admitted, nothing is recorded, the state never changes by itself.
    case disabled
    /// Set by an operator: every call is admitted and recorded, rates are computed, the state never changes.
    case metricsOnly = "metrics_only"
}

/// How a call that held a permit ended.
public enum CallOutcome: String, Codable, Sendable, CaseIterable {
    /// The call succeeded (it may still count as slow).
    case success
    /// The call failed (it may also count as slow).
    case failure
    /// The call neither succeeded nor failed in the breaker's eyes (e.g. a client error, a cancellation):
    /// nothing is counted; in half-open the probe permit is handed back so another probe may run.
    case ignored
}

/// Why a breaker changed state. Raw values are the wire names.
public enum TransitionReason: String, Codable, Sendable, CaseIterable {
    /// closed → open: the failure rate reached its threshold.
    case failureRate = "failure_rate"
    /// closed → open: the slow-call rate reached its threshold (and the failure rate did not).
    case slowCallRate = "slow_call_rate"
    /// open → half_open: the open wait elapsed (observed lazily by `acquire`).
    case openWaitElapsed = "open_wait_elapsed"
    /// half_open → closed: every probe is in and both rates are below their thresholds.
    case probesSucceeded = "probes_succeeded"
    /// half_open → open: every probe is in and a rate reached its threshold.
    case probesFailed = "probes_failed"
    /// half_open → open: `maxHalfOpenWaitMs` passed without a verdict.
    case halfOpenTimeout = "half_open_timeout"
    /// An operator asked for the state (`transition(to:now:)`).
    case forced
    /// The configuration was replaced (`reconfigure(_:now:)`).
    case reconfigured
    /// The state was decided elsewhere, e.g. by another node (`adopt(state:openUntil:now:)`).
    case remote
}

/// A change of state, reported by the call that caused it.
public struct BreakerTransition: Sendable, Equatable {
    /// The state left.
    public var from: BreakerState
    /// The state entered.
    public var to: BreakerState
    /// Why.
    public var reason: TransitionReason
    /// When.
    public var at: Instant
    /// The failure rate (percent) that decided the transition, for rate-driven reasons; otherwise nil.
    public var failureRate: Double?
    /// The slow-call rate (percent) that decided the transition, for rate-driven reasons; otherwise nil.
    public var slowCallRate: Double?

    @inlinable
    public init(
        from: BreakerState, to: BreakerState, reason: TransitionReason, at: Instant,
        failureRate: Double? = nil, slowCallRate: Double? = nil
    ) {
        self.from = from
        self.to = to
        self.reason = reason
        self.at = at
        self.failureRate = failureRate
        self.slowCallRate = slowCallRate
    }
}

/// The right to make one call, to be handed back to `record` with the call's outcome.
///
/// A permit remembers the breaker generation it was granted in. Every state change (and every window
/// reset by `reconfigure`) starts a new generation; an outcome carrying an older generation is *stale*
/// and changes nothing.
public struct BreakerPermit: Sendable, Hashable {
    /// The breaker generation the permit was granted in.
    public var generation: UInt64
    /// The state the permit was granted in (`closed`, `half_open`, `disabled` or `metrics_only`).
    public var state: BreakerState

    @inlinable
    public init(generation: UInt64, state: BreakerState) {
        self.generation = generation
        self.state = state
    }
}

/// The answer to `acquire`.
public struct BreakerAcquisition: Sendable, Equatable {
    /// The permit to hand back to `record`, or nil when the call is rejected.
    public var permit: BreakerPermit?
    /// For a rejection by an open breaker: the time until the open wait ends. Nil when unknown
    /// (forced open; half-open with every probe already out) and for granted calls.
    public var retryAfter: Span?
    /// The state change this acquisition caused (open → half_open, or half_open → open on timeout).
    public var transition: BreakerTransition?

    @inlinable
    public init(permit: BreakerPermit?, retryAfter: Span? = nil, transition: BreakerTransition? = nil) {
        self.permit = permit
        self.retryAfter = retryAfter
        self.transition = transition
    }

    /// Whether the call may proceed.
    @inlinable public var isPermitted: Bool { permit != nil }
}

/// A read-only view of a breaker at an instant.
public struct BreakerSnapshot: Sendable, Equatable {
    /// The current state.
    public var state: BreakerState
    /// Failed calls as a percentage of the calls in the active window, or -1 while fewer calls than the
    /// minimum are in (the probe count in half-open; resilience4j convention).
    public var failureRate: Double
    /// Slow calls as a percentage of the calls in the active window, or -1 as for `failureRate`.
    public var slowCallRate: Double
    /// Calls in the active window: the sliding window, or the recorded probes in half-open. While open
    /// it still shows the window that tripped the breaker; forced_open and disabled show an empty window.
    public var numberOfCalls: Int
    /// Failed calls in the active window (slow or not).
    public var failedCalls: Int
    /// Slow calls in the active window (failed or not).
    public var slowCalls: Int
    /// Calls that did not fail, slow ones included (`numberOfCalls - failedCalls`).
    public var successfulCalls: Int
    /// Rejected acquisitions since the breaker was created (monotonic).
    public var notPermittedCalls: UInt64
    /// Outcomes ignored because their permit came from an older generation (monotonic).
    public var staleOutcomes: UInt64
    /// Half-open probes granted and not yet recorded (0 outside half-open).
    public var halfOpenInFlight: Int
    /// Half-open probes that may still be granted (0 outside half-open).
    public var halfOpenRemaining: Int
    /// When the open wait ends (only in `open`).
    public var openUntil: Instant?
    /// Openings since the breaker was last closed (drives the open-wait backoff).
    public var consecutiveOpenings: Int
    /// The current generation (see ``BreakerPermit``).
    public var generation: UInt64
    /// When the current state was entered (or the breaker created).
    public var stateSince: Instant
    /// Whether a rate is available and at or above its threshold. The useful signal in `metrics_only`,
    /// where crossing a threshold changes nothing.
    public var thresholdExceeded: Bool
    /// The last state change, if any.
    public var lastTransition: BreakerTransition?
    /// The configuration in force.
    public var config: BreakerConfig

    public init(
        state: BreakerState, failureRate: Double, slowCallRate: Double, numberOfCalls: Int, failedCalls: Int,
        slowCalls: Int, successfulCalls: Int, notPermittedCalls: UInt64, staleOutcomes: UInt64,
        halfOpenInFlight: Int, halfOpenRemaining: Int, openUntil: Instant?, consecutiveOpenings: Int,
        generation: UInt64, stateSince: Instant, thresholdExceeded: Bool, lastTransition: BreakerTransition?,
        config: BreakerConfig
    ) {
        self.state = state
        self.failureRate = failureRate
        self.slowCallRate = slowCallRate
        self.numberOfCalls = numberOfCalls
        self.failedCalls = failedCalls
        self.slowCalls = slowCalls
        self.successfulCalls = successfulCalls
        self.notPermittedCalls = notPermittedCalls
        self.staleOutcomes = staleOutcomes
        self.halfOpenInFlight = halfOpenInFlight
        self.halfOpenRemaining = halfOpenRemaining
        self.openUntil = openUntil
        self.consecutiveOpenings = consecutiveOpenings
        self.generation = generation
        self.stateSince = stateSince
        self.thresholdExceeded = thresholdExceeded
        self.lastTransition = lastTransition
        self.config = config
    }
}
