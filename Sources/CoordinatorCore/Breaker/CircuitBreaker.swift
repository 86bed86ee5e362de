/// A circuit breaker with resilience4j's semantics, as a pure value: it never reads a clock (every
/// mutating call takes `now`), never allocates on the hot path (`acquire` + `record` while closed) and
/// knows nothing of threads — the owner serialises access.
///
/// Rules worth knowing:
/// - **Slow** means `duration > slowCallDuration` (strictly greater, as resilience4j). A failure that is
///   also slow counts as failed *and* slow; a slow success counts as successful and slow.
/// - **Trip** (closed): after an outcome is recorded, once the window holds at least the effective
///   minimum of calls (`min(minimumCalls, size)` for a count window, `minimumCalls` for a time window),
///   failure rate ≥ threshold opens with reason `failure_rate`, else slow-call rate ≥ threshold opens
///   with `slow_call_rate`. Rates are `100 × count / calls`.
/// - **Generations**: every state change, and every window reset by `reconfigure`, starts a new
///   generation. An outcome whose permit is from an older generation is *stale*: it is counted in
///   `staleOutcomes` and changes nothing — so stragglers from before a trip never pollute the next
///   closed window and only real probes decide half-open. (Disabled records nothing, stale or not.)
/// - **Open**: rejects with `retryAfter = openUntil − now`. The first `acquire` at or after `openUntil`
///   moves to half-open (`open_wait_elapsed`) and is itself the first probe; there is no automatic
///   transition otherwise. The k-th opening since the last close waits
///   `openWaitMs × openWaitMultiplier^(k−1)`, capped by `maxOpenWaitMs` (or by 7 days when unset).
/// - **Half-open**: admits `halfOpenPermittedCalls` probes (an `ignored` outcome hands its permit back),
///   then rejects with `retryAfter` nil. When every probe is recorded, a rate ≥ its threshold opens
///   (`probes_failed`, with backoff), otherwise the breaker closes (`probes_succeeded`, fresh window,
///   backoff reset). `minimumCalls` plays no part here: the verdict waits for all probes. With
///   `maxHalfOpenWaitMs` > 0, half-open that long without a verdict opens (`half_open_timeout`), noticed
///   by `acquire`, `record` or `tick`. Lost permits are the owner's business: after `permitTimeoutMs` it
///   should record them as `ignored`, which frees the probe slot.
/// - **Operator states**: `forced_open` rejects everything (`retryAfter` nil) and records nothing;
///   `disabled` admits everything and records nothing; `metrics_only` admits and records everything,
///   computes rates (`snapshot.thresholdExceeded`) but never changes state.
/// - `notPermittedCalls` and `staleOutcomes` are monotonic over the breaker's life (Prometheus counters);
///   window counts follow the active window.
/// - An invalid configuration (see ``BreakerConfig/validate()``) never traps: sizes are clamped to ≥ 1.
public struct CircuitBreaker: Sendable {
    // MARK: Stored state (internal; `@usableFromInline` for the inlinable hot path)

    @usableFromInline var _config: BreakerConfig
    @usableFromInline var _state: BreakerState
    @usableFromInline var _generation: UInt64
    @usableFromInline var window: BreakerOutcomeWindow

    // Derived from the configuration once, so the hot path reads plain integers.
    @usableFromInline var slowCallThresholdNs: Int64
    @usableFromInline var effectiveMinimumCalls: Int
    @usableFromInline var failureRateThreshold: Double
    @usableFromInline var slowCallRateThreshold: Double
    @usableFromInline var halfOpenPermitted: Int

    // Open state and backoff.
    @usableFromInline var _openUntil: Instant
    @usableFromInline var openings: Int
    @usableFromInline var lastOpenWaitNs: Int64

    // Half-open probes.
    @usableFromInline var probesInFlight: Int
    @usableFromInline var probesRecorded: Int
    @usableFromInline var probesFailed: Int
    @usableFromInline var probesSlow: Int

    @usableFromInline var _stateSince: Instant
    @usableFromInline var _notPermittedCalls: UInt64
    @usableFromInline var _staleOutcomes: UInt64
    @usableFromInline var _lastTransition: BreakerTransition?

    // MARK: Creation

    /// A closed breaker with an empty window.
    public init(config: BreakerConfig, now: Instant) {
        _config = config
        _state = .closed
        _generation = 0
        window = BreakerOutcomeWindow(config.window, now: now)
        slowCallThresholdNs = 0
        effectiveMinimumCalls = 1
        failureRateThreshold = 50
        slowCallRateThreshold = 100
        halfOpenPermitted = 1
        _openUntil = now
        openings = 0
        lastOpenWaitNs = 0
        probesInFlight = 0
        probesRecorded = 0
        probesFailed = 0
        probesSlow = 0
        _stateSince = now
        _notPermittedCalls = 0
        _staleOutcomes = 0
        _lastTransition = nil
        deriveSettings()
    }

    mutating func deriveSettings() {
        let c = _config
        slowCallThresholdNs = Span.milliseconds(c.slowCallDurationMs).nanoseconds
        let minimum = max(1, c.minimumCalls)
        effectiveMinimumCalls = c.window.type == .count ? min(minimum, window.size) : minimum
        failureRateThreshold = c.failureRateThreshold
        slowCallRateThreshold = c.slowCallRateThreshold
        halfOpenPermitted = max(1, c.halfOpenPermittedCalls)
    }

    // MARK: Reading

    /// The current state.
    public var state: BreakerState { _state }
    /// The current generation (see ``BreakerPermit``).
    public var generation: UInt64 { _generation }
    /// The configuration in force.
    public var config: BreakerConfig { _config }
    /// When the open wait ends, while open.
    public var openUntil: Instant? { _state == .open ? _openUntil : nil }

    // MARK: Hot path

    /// Asks to make a call. May move open → half_open (the wait elapsed) or half_open → open (the
    /// half-open limit passed); the acquisition reports it.
    @inlinable
    public mutating func acquire(now: Instant) -> BreakerAcquisition {
        switch _state {
        case .closed, .metricsOnly, .disabled:
            return BreakerAcquisition(permit: BreakerPermit(generation: _generation, state: _state))
        case .open, .halfOpen, .forcedOpen:
            return acquireGuarded(now: now)
        }
    }

    /// Reports the outcome of a call made under `permit`, which took `duration`. Returns the state
    /// change it caused, if any.
    @inlinable
    public mutating func record(
        _ outcome: CallOutcome, duration: Span, permit: BreakerPermit, now: Instant
    ) -> BreakerTransition? {
        if _state == .closed && permit.generation == _generation {
            return recordClosed(outcome, duration: duration, now: now)
        }
        return recordOther(outcome, duration: duration, permit: permit, now: now)
    }

    @inlinable
    mutating func recordClosed(_ outcome: CallOutcome, duration: Span, now: Instant) -> BreakerTransition? {
        if outcome == .ignored { return nil }
        window.record(failed: outcome == .failure, slow: duration.nanoseconds > slowCallThresholdNs, now: now)
        let calls = window.calls
        guard calls >= effectiveMinimumCalls else { return nil }
        let total = Double(calls)
        let failureRate = Double(window.failed) * 100 / total
        let slowCallRate = Double(window.slow) * 100 / total
        guard failureRate >= failureRateThreshold || slowCallRate >= slowCallRateThreshold else { return nil }
        return trip(failureRate: failureRate, slowCallRate: slowCallRate, now: now)
    }

    // MARK: Cold paths

    @usableFromInline
    mutating func trip(failureRate: Double, slowCallRate: Double, now: Instant) -> BreakerTransition {
        let reason: TransitionReason = failureRate >= failureRateThreshold ? .failureRate : .slowCallRate
        return enter(.open, reason: reason, now: now, failureRate: failureRate, slowCallRate: slowCallRate)
    }

    @usableFromInline
    mutating func acquireGuarded(now: Instant) -> BreakerAcquisition {
        switch _state {
        case .closed, .metricsOnly, .disabled:
            return BreakerAcquisition(permit: BreakerPermit(generation: _generation, state: _state))
        case .forcedOpen:
            _notPermittedCalls &+= 1
            return BreakerAcquisition(permit: nil)
        case .open:
            if now >= _openUntil {
                let transition = enter(.halfOpen, reason: .openWaitElapsed, now: now)
                return admitProbe(transition: transition)
            }
            _notPermittedCalls &+= 1
            return BreakerAcquisition(permit: nil, retryAfter: _openUntil - now)
        case .halfOpen:
            if let transition = checkHalfOpenTimeout(now: now) {
                _notPermittedCalls &+= 1
                return BreakerAcquisition(permit: nil, retryAfter: _openUntil - now, transition: transition)
            }
            return admitProbe(transition: nil)
        }
    }

    mutating func admitProbe(transition: BreakerTransition?) -> BreakerAcquisition {
        if probesInFlight + probesRecorded < halfOpenPermitted {
            probesInFlight += 1
            return BreakerAcquisition(
                permit: BreakerPermit(generation: _generation, state: .halfOpen), transition: transition)
        }
        _notPermittedCalls &+= 1
        return BreakerAcquisition(permit: nil, transition: transition)
    }

    @usableFromInline
    mutating func recordOther(
        _ outcome: CallOutcome, duration: Span, permit: BreakerPermit, now: Instant
    ) -> BreakerTransition? {
        if _state == .disabled { return nil }
        let timeout = _state == .halfOpen ? checkHalfOpenTimeout(now: now) : nil
        guard permit.generation == _generation else {
            _staleOutcomes &+= 1
            return timeout
        }
        let isSlow = duration.nanoseconds > slowCallThresholdNs
        switch _state {
        case .closed:
            return recordClosed(outcome, duration: duration, now: now)
        case .metricsOnly:
            if outcome != .ignored { window.record(failed: outcome == .failure, slow: isSlow, now: now) }
            return nil
        case .halfOpen:
            guard probesInFlight > 0 else {
                // More outcomes than permits granted in this generation: a duplicate.
                _staleOutcomes &+= 1
                return nil
            }
            probesInFlight -= 1
            if outcome == .ignored { return nil }
            probesRecorded += 1
            if outcome == .failure { probesFailed += 1 }
            if isSlow { probesSlow += 1 }
            guard probesRecorded >= halfOpenPermitted else { return nil }
            let total = Double(probesRecorded)
            let failureRate = Double(probesFailed) * 100 / total
            let slowCallRate = Double(probesSlow) * 100 / total
            if failureRate >= failureRateThreshold || slowCallRate >= slowCallRateThreshold {
                return enter(.open, reason: .probesFailed, now: now, failureRate: failureRate, slowCallRate: slowCallRate)
            }
            return enter(.closed, reason: .probesSucceeded, now: now, failureRate: failureRate, slowCallRate: slowCallRate)
        case .open, .forcedOpen, .disabled:
            // No permit is ever granted in these states, so a current-generation permit cannot exist.
            _staleOutcomes &+= 1
            return nil
        }
    }

    mutating func checkHalfOpenTimeout(now: Instant) -> BreakerTransition? {
        let limit = _config.maxHalfOpenWaitMs
        guard _state == .halfOpen, limit > 0, now - _stateSince >= Span.milliseconds(limit) else { return nil }
        return enter(.open, reason: .halfOpenTimeout, now: now)
    }

    /// Periodic housekeeping: opens a half-open breaker that has waited `maxHalfOpenWaitMs` without a
    /// verdict. Does nothing else (open → half_open stays lazy, in `acquire`).
    public mutating func tick(now: Instant) -> BreakerTransition? {
        checkHalfOpenTimeout(now: now)
    }

    /// The wait of the next opening, advancing the backoff.
    mutating func nextOpenWait() -> Span {
        let ceiling = Span.milliseconds(BreakerConfig.maximumDurationMs).nanoseconds
        var cap = ceiling
        if let maxWait = _config.maxOpenWaitMs { cap = min(max(Span.milliseconds(maxWait).nanoseconds, 0), ceiling) }
        let base = max(Span.milliseconds(_config.openWaitMs).nanoseconds, 0)
        openings += 1
        var wait: Int64
        if openings == 1 || lastOpenWaitNs <= 0 {
            wait = base
        } else {
            let multiplier = _config.openWaitMultiplier
            let next = Double(lastOpenWaitNs) * (multiplier.isFinite && multiplier > 1 ? multiplier : 1)
            wait = next >= Double(cap) ? cap : Int64(next)
        }
        wait = min(wait, cap)
        lastOpenWaitNs = wait
        return Span(nanoseconds: wait)
    }

    /// Enters `state`: starts a new generation, resets what the state starts afresh, records the
    /// transition.
    @discardableResult
    mutating func enter(
        _ state: BreakerState, reason: TransitionReason, now: Instant,
        failureRate: Double? = nil, slowCallRate: Double? = nil, openUntil: Instant? = nil
    ) -> BreakerTransition {
        let from = _state
        _state = state
        _generation &+= 1
        _stateSince = now
        probesInFlight = 0
        probesRecorded = 0
        probesFailed = 0
        probesSlow = 0
        switch state {
        case .closed:
            window.reset(now: now)
            openings = 0
            lastOpenWaitNs = 0
        case .open:
            // The window that tripped stays visible in snapshots until the breaker closes.
            let wait = nextOpenWait()
            _openUntil = openUntil ?? (now + wait)
        case .halfOpen:
            break
        case .forcedOpen, .disabled, .metricsOnly:
            window.reset(now: now)
        }
        let transition = BreakerTransition(
            from: from, to: state, reason: reason, at: now, failureRate: failureRate, slowCallRate: slowCallRate)
        _lastTransition = transition
        return transition
    }

    // MARK: Control

    /// An operator's order. Any target is allowed (reason `forced`): `closed` starts a fresh window and
    /// resets the backoff; `open` opens with the next backoff wait; `half_open` starts a fresh round of
    /// probes; `forced_open`, `disabled` and `metrics_only` start with an empty window. Nil when the
    /// breaker is already in `state` (nothing changes then).
    public mutating func transition(to state: BreakerState, now: Instant) -> BreakerTransition? {
        guard state != _state else { return nil }
        return enter(state, reason: .forced, now: now)
    }

    /// Replaces the configuration and starts fresh windows (and a new generation, so outstanding permits
    /// become stale). `forced_open`, `disabled` and `metrics_only` are kept; `open` and `half_open` go to
    /// `closed` (reason `reconfigured`); `closed` stays closed (nil returned). Leaving any state for, or
    /// staying in, closed resets the backoff.
    public mutating func reconfigure(_ config: BreakerConfig, now: Instant) -> BreakerTransition? {
        _config = config
        window = BreakerOutcomeWindow(config.window, now: now)
        deriveSettings()
        switch _state {
        case .forcedOpen, .disabled, .metricsOnly:
            _generation &+= 1
            return nil
        case .closed:
            _generation &+= 1
            openings = 0
            lastOpenWaitNs = 0
            return nil
        case .open, .halfOpen:
            return enter(.closed, reason: .reconfigured, now: now)
        }
    }

    /// Applies a state decided elsewhere (another node; reason `remote`), clearing the window the new
    /// state starts afresh as `transition(to:now:)` does. For `open`, `openUntil` sets the end of the
    /// wait (nil: the local backoff decides); the local backoff advances either way. When the breaker is
    /// already in `state`, only an `open` breaker's `openUntil` is updated and nil is returned.
    public mutating func adopt(state: BreakerState, openUntil: Instant?, now: Instant) -> BreakerTransition? {
        guard state != _state else {
            if state == .open, let openUntil { _openUntil = openUntil }
            return nil
        }
        return enter(state, reason: .remote, now: now, openUntil: state == .open ? openUntil : nil)
    }

    // MARK: Snapshot

    /// The breaker as of `now` (a time window drops the seconds that have left it by then).
    public func snapshot(now: Instant) -> BreakerSnapshot {
        var calls: Int
        var failed: Int
        var slow: Int
        let minimum: Int
        if _state == .halfOpen {
            (calls, failed, slow) = (probesRecorded, probesFailed, probesSlow)
            minimum = halfOpenPermitted
        } else {
            (calls, failed, slow) = window.totals(at: now)
            minimum = effectiveMinimumCalls
        }
        let hasRates = calls > 0 && calls >= minimum
        let failureRate = hasRates ? Double(failed) * 100 / Double(calls) : -1
        let slowCallRate = hasRates ? Double(slow) * 100 / Double(calls) : -1
        let exceeded = hasRates && (failureRate >= failureRateThreshold || slowCallRate >= slowCallRateThreshold)
        let halfOpen = _state == .halfOpen
        return BreakerSnapshot(
            state: _state,
            failureRate: failureRate,
            slowCallRate: slowCallRate,
            numberOfCalls: calls,
            failedCalls: failed,
            slowCalls: slow,
            successfulCalls: calls - failed,
            notPermittedCalls: _notPermittedCalls,
            staleOutcomes: _staleOutcomes,
            halfOpenInFlight: halfOpen ? probesInFlight : 0,
            halfOpenRemaining: halfOpen ? max(0, halfOpenPermitted - probesInFlight - probesRecorded) : 0,
            openUntil: openUntil,
            consecutiveOpenings: openings,
            generation: _generation,
            stateSince: _stateSince,
            thresholdExceeded: exceeded,
            lastTransition: _lastTransition,
            config: _config
        )
    }
}
