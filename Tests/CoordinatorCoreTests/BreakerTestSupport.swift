import CoordinatorCore
import Testing

extension CircuitBreaker {
    /// Acquires at `now` and records `outcome` at the same instant; flags a rejection as a test issue.
    @discardableResult
    mutating func testCall(
        _ outcome: CallOutcome, at now: Instant, duration: Span = .milliseconds(1),
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> BreakerTransition? {
        let acquisition = acquire(now: now)
        guard let permit = acquisition.permit else {
            Issue.record("call rejected at \(now) in state \(state)", sourceLocation: sourceLocation)
            return nil
        }
        return record(outcome, duration: duration, permit: permit, now: now)
    }

    /// Records `count` calls of `outcome` at `now`, expecting none of them to change the state.
    mutating func testCalls(
        _ count: Int, _ outcome: CallOutcome, at now: Instant, duration: Span = .milliseconds(1),
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for _ in 0..<count {
            let transition = testCall(outcome, at: now, duration: duration, sourceLocation: sourceLocation)
            #expect(transition == nil, sourceLocation: sourceLocation)
        }
    }
}

/// A small count-window configuration for state-machine tests: window 10, minimum 10, 50 % failures,
/// 1 s open wait, 3 probes.
func smallBreakerConfig(
    window: BreakerConfig.Window = .count(10),
    minimumCalls: Int = 10,
    failureRateThreshold: Double = 50,
    slowCallRateThreshold: Double = 100,
    slowCallDurationMs: Int64 = 100,
    openWaitMs: Int64 = 1000,
    halfOpenPermittedCalls: Int = 3,
    openWaitMultiplier: Double = 1,
    maxOpenWaitMs: Int64? = nil,
    maxHalfOpenWaitMs: Int64 = 0
) -> BreakerConfig {
    BreakerConfig(
        window: window, minimumCalls: minimumCalls, failureRateThreshold: failureRateThreshold,
        slowCallRateThreshold: slowCallRateThreshold, slowCallDurationMs: slowCallDurationMs,
        openWaitMs: openWaitMs, halfOpenPermittedCalls: halfOpenPermittedCalls,
        openWaitMultiplier: openWaitMultiplier, maxOpenWaitMs: maxOpenWaitMs,
        maxHalfOpenWaitMs: maxHalfOpenWaitMs)
}

/// A breaker built from `config` at `start` and tripped there by `failures` failures (window-size
/// calls by default), so it is open until `start + openWaitMs`.
func trippedBreaker(_ config: BreakerConfig, at start: Instant = .zero) -> CircuitBreaker {
    var breaker = CircuitBreaker(config: config, now: start)
    var transition: BreakerTransition?
    var calls = 0
    while transition == nil && calls < 100_000 {
        transition = breaker.testCall(.failure, at: start)
        calls += 1
    }
    #expect(breaker.state == .open)
    return breaker
}
