import CoordinatorCore
import Testing

@Suite("Breaker: stale permits, operator states, reconfigure, adopt")
struct BreakerControlTests {
    // MARK: Stale permits

    @Test func preTripStragglersAreStale() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(4), minimumCalls: 4), now: .zero)
        let stragglers = (0..<3).map { _ in breaker.acquire(now: .zero).permit! }
        breaker.testCalls(3, .failure, at: .zero)
        #expect(breaker.testCall(.failure, at: .zero)?.to == .open)
        for permit in stragglers {
            #expect(breaker.record(.failure, duration: .zero, permit: permit, now: .milliseconds(10)) == nil)
        }
        var snapshot = breaker.snapshot(now: .milliseconds(10))
        #expect(snapshot.staleOutcomes == 3)
        #expect(snapshot.numberOfCalls == 4)
        // Through half-open back to closed: the stragglers still change nothing.
        let probes = (0..<3).map { _ in breaker.acquire(now: .milliseconds(1000)).permit! }
        for probe in probes {
            _ = breaker.record(.success, duration: .zero, permit: probe, now: .milliseconds(1000))
        }
        #expect(breaker.state == .closed)
        for permit in stragglers {
            #expect(breaker.record(.failure, duration: .zero, permit: permit, now: .milliseconds(1001)) == nil)
        }
        snapshot = breaker.snapshot(now: .milliseconds(1001))
        #expect(snapshot.staleOutcomes == 6)
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.state == .closed)
    }

    @Test func probesFromAnEarlierRoundAreStale() {
        var breaker = trippedBreaker(smallBreakerConfig(openWaitMs: 1000, halfOpenPermittedCalls: 2))
        let old = breaker.acquire(now: .milliseconds(1000)).permit!
        let other = breaker.acquire(now: .milliseconds(1000)).permit!
        _ = breaker.record(.failure, duration: .zero, permit: other, now: .milliseconds(1000))
        #expect(breaker.state == .halfOpen)
        // An operator starts a new round; the outstanding probe belongs to the old one.
        #expect(breaker.transition(to: .open, now: .milliseconds(1100))?.reason == .forced)
        #expect(breaker.transition(to: .halfOpen, now: .milliseconds(1200))?.reason == .forced)
        #expect(breaker.record(.failure, duration: .zero, permit: old, now: .milliseconds(1300)) == nil)
        let snapshot = breaker.snapshot(now: .milliseconds(1300))
        #expect(snapshot.staleOutcomes == 1)
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.halfOpenRemaining == 2)
    }

    @Test func duplicateProbeOutcomeIsStale() {
        var breaker = trippedBreaker(smallBreakerConfig(halfOpenPermittedCalls: 2))
        let permit = breaker.acquire(now: .milliseconds(1000)).permit!
        _ = breaker.record(.failure, duration: .zero, permit: permit, now: .milliseconds(1000))
        _ = breaker.record(.failure, duration: .zero, permit: permit, now: .milliseconds(1000))
        let snapshot = breaker.snapshot(now: .milliseconds(1000))
        #expect(snapshot.state == .halfOpen)
        #expect(snapshot.numberOfCalls == 1)
        #expect(snapshot.staleOutcomes == 1)
    }

    // MARK: Operator states

    @Test func forcedOpenRejectsEverythingForever() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        let permit = breaker.acquire(now: .zero).permit!
        breaker.testCalls(3, .success, at: .zero)
        let transition = breaker.transition(to: .forcedOpen, now: .milliseconds(5))
        #expect(transition == BreakerTransition(from: .closed, to: .forcedOpen, reason: .forced, at: .milliseconds(5)))
        #expect(breaker.transition(to: .forcedOpen, now: .milliseconds(6)) == nil)
        for ms in [Int64(5), 10_000, 10_000_000] {
            #expect(breaker.acquire(now: .milliseconds(ms)) == BreakerAcquisition(permit: nil, retryAfter: nil, transition: nil))
            #expect(breaker.tick(now: .milliseconds(ms)) == nil)
        }
        #expect(breaker.record(.failure, duration: .zero, permit: permit, now: .milliseconds(7)) == nil)
        var snapshot = breaker.snapshot(now: .milliseconds(7))
        #expect(snapshot.state == .forcedOpen)
        #expect(snapshot.notPermittedCalls == 3)
        #expect(snapshot.staleOutcomes == 1)
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.openUntil == nil)

        let close = breaker.transition(to: .closed, now: .milliseconds(8))
        #expect(close == BreakerTransition(from: .forcedOpen, to: .closed, reason: .forced, at: .milliseconds(8)))
        #expect(breaker.acquire(now: .milliseconds(8)).permit == BreakerPermit(generation: 2, state: .closed))
        snapshot = breaker.snapshot(now: .milliseconds(8))
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.notPermittedCalls == 3)  // monotonic
    }

    @Test func disabledAdmitsEverythingAndRecordsNothing() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(2), minimumCalls: 1), now: .zero)
        let closedPermit = breaker.acquire(now: .zero).permit!
        #expect(breaker.transition(to: .disabled, now: .zero)?.to == .disabled)
        for _ in 0..<50 {
            let permit = breaker.acquire(now: .zero).permit
            #expect(permit == BreakerPermit(generation: 1, state: .disabled))
            #expect(breaker.record(.failure, duration: .seconds(100), permit: permit!, now: .zero) == nil)
        }
        #expect(breaker.record(.failure, duration: .zero, permit: closedPermit, now: .zero) == nil)
        var snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.state == .disabled)
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.failureRate == -1)
        #expect(snapshot.staleOutcomes == 0)
        #expect(snapshot.notPermittedCalls == 0)

        #expect(breaker.transition(to: .closed, now: .milliseconds(1))?.from == .disabled)
        #expect(breaker.testCall(.failure, at: .milliseconds(1))?.reason == .failureRate)
        snapshot = breaker.snapshot(now: .milliseconds(1))
        #expect(snapshot.state == .open)
    }

    @Test func metricsOnlyMeasuresButNeverTrips() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(4), minimumCalls: 4), now: .zero)
        breaker.testCalls(3, .failure, at: .zero)
        #expect(breaker.transition(to: .metricsOnly, now: .zero)?.to == .metricsOnly)
        #expect(breaker.snapshot(now: .zero).numberOfCalls == 0)  // fresh window
        for _ in 0..<3 {
            let permit = breaker.acquire(now: .zero).permit
            #expect(permit == BreakerPermit(generation: 1, state: .metricsOnly))
            #expect(breaker.record(.failure, duration: .seconds(1), permit: permit!, now: .zero) == nil)
        }
        var snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.failureRate == -1)
        #expect(snapshot.thresholdExceeded == false)
        breaker.testCalls(1, .success, at: .zero)
        breaker.testCalls(1, .ignored, at: .zero)
        breaker.testCalls(20, .failure, at: .zero)
        snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.state == .metricsOnly)
        #expect(snapshot.numberOfCalls == 4)
        #expect(snapshot.failedCalls == 4)
        #expect(snapshot.failureRate == 100)
        #expect(snapshot.thresholdExceeded)
        #expect(snapshot.notPermittedCalls == 0)
        #expect(breaker.tick(now: .milliseconds(100_000)) == nil)

        #expect(breaker.transition(to: .closed, now: .milliseconds(1))?.to == .closed)
        snapshot = breaker.snapshot(now: .milliseconds(1))
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.thresholdExceeded == false)
    }

    @Test func operatorOpenUsesTheBackoffWait() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(openWaitMs: 1000, openWaitMultiplier: 3, maxOpenWaitMs: 60_000), now: .zero)
        #expect(breaker.transition(to: .open, now: .milliseconds(100)) == BreakerTransition(from: .closed, to: .open, reason: .forced, at: .milliseconds(100)))
        #expect(breaker.openUntil == .milliseconds(1100))
        #expect(breaker.transition(to: .open, now: .milliseconds(200)) == nil)
        #expect(breaker.openUntil == .milliseconds(1100))
        #expect(breaker.transition(to: .halfOpen, now: .milliseconds(300))?.to == .halfOpen)
        #expect(breaker.snapshot(now: .milliseconds(300)).halfOpenRemaining == 3)
        #expect(breaker.transition(to: .open, now: .milliseconds(400)) != nil)
        #expect(breaker.openUntil == .milliseconds(3400))  // second opening: 3 s
        #expect(breaker.transition(to: .closed, now: .milliseconds(500)) != nil)
        #expect(breaker.transition(to: .open, now: .milliseconds(600)) != nil)
        #expect(breaker.openUntil == .milliseconds(1600))  // closing reset the backoff
    }

    @Test func everyTransitionBumpsTheGeneration() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        let targets: [BreakerState] = [.open, .halfOpen, .forcedOpen, .disabled, .metricsOnly, .closed, .halfOpen, .closed]
        for (index, target) in targets.enumerated() {
            #expect(breaker.transition(to: target, now: .zero) != nil)
            #expect(breaker.generation == UInt64(index + 1))
            #expect(breaker.snapshot(now: .zero).lastTransition?.to == target)
        }
    }

    // MARK: Reconfigure

    @Test func reconfigureWhileClosedResetsTheWindowQuietly() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        let permit = breaker.acquire(now: .zero).permit!
        breaker.testCalls(4, .failure, at: .zero)
        let config = smallBreakerConfig(window: .count(2), minimumCalls: 2)
        #expect(breaker.reconfigure(config, now: .milliseconds(1)) == nil)
        #expect(breaker.state == .closed)
        #expect(breaker.config == config)
        #expect(breaker.generation == 1)
        var snapshot = breaker.snapshot(now: .milliseconds(1))
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.config == config)
        // The permit from before is stale; the new window size applies.
        #expect(breaker.record(.failure, duration: .zero, permit: permit, now: .milliseconds(1)) == nil)
        breaker.testCall(.failure, at: .milliseconds(2))
        #expect(breaker.testCall(.success, at: .milliseconds(2))?.failureRate == 50)
        snapshot = breaker.snapshot(now: .milliseconds(2))
        #expect(snapshot.staleOutcomes == 1)
    }

    @Test func reconfigureClosesOpenAndHalfOpen() {
        var breaker = trippedBreaker(smallBreakerConfig(openWaitMultiplier: 2))
        let transition = breaker.reconfigure(smallBreakerConfig(window: .time(seconds: 5)), now: .milliseconds(50))
        #expect(transition == BreakerTransition(from: .open, to: .closed, reason: .reconfigured, at: .milliseconds(50)))
        #expect(breaker.snapshot(now: .milliseconds(50)).consecutiveOpenings == 0)

        var halfOpen = trippedBreaker(smallBreakerConfig())
        _ = halfOpen.acquire(now: .milliseconds(1000))
        #expect(halfOpen.reconfigure(smallBreakerConfig(), now: .milliseconds(1001))?.from == .halfOpen)
        #expect(halfOpen.state == .closed)
    }

    @Test func reconfigureKeepsOperatorStates() {
        for state in [BreakerState.forcedOpen, .disabled, .metricsOnly] {
            var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
            _ = breaker.transition(to: state, now: .zero)
            if state == .metricsOnly { breaker.testCalls(3, .failure, at: .zero) }
            let generation = breaker.generation
            #expect(breaker.reconfigure(.default, now: .milliseconds(1)) == nil)
            #expect(breaker.state == state)
            #expect(breaker.generation == generation + 1)
            #expect(breaker.snapshot(now: .milliseconds(1)).numberOfCalls == 0)
            #expect(breaker.config == .default)
        }
    }

    // MARK: Adopt

    @Test func adoptOpenWithAGivenEnd() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        breaker.testCalls(3, .failure, at: .zero)
        let transition = breaker.adopt(state: .open, openUntil: .milliseconds(9000), now: .milliseconds(100))
        #expect(transition == BreakerTransition(from: .closed, to: .open, reason: .remote, at: .milliseconds(100)))
        #expect(breaker.openUntil == .milliseconds(9000))
        #expect(breaker.acquire(now: .milliseconds(8000)).retryAfter == .milliseconds(1000))
        // Same state: only the end moves.
        #expect(breaker.adopt(state: .open, openUntil: .milliseconds(12_000), now: .milliseconds(8000)) == nil)
        #expect(breaker.openUntil == .milliseconds(12_000))
        #expect(breaker.adopt(state: .open, openUntil: nil, now: .milliseconds(8000)) == nil)
        #expect(breaker.openUntil == .milliseconds(12_000))
        #expect(breaker.acquire(now: .milliseconds(12_000)).transition?.reason == .openWaitElapsed)
    }

    @Test func adoptOpenWithoutAnEndUsesTheBackoff() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(openWaitMs: 700), now: .zero)
        #expect(breaker.adopt(state: .open, openUntil: nil, now: .milliseconds(100))?.reason == .remote)
        #expect(breaker.openUntil == .milliseconds(800))
    }

    @Test func adoptClosedAndHalfOpen() {
        var breaker = trippedBreaker(smallBreakerConfig(openWaitMultiplier: 2))
        let stale = breaker.acquire(now: .milliseconds(1000)).permit!  // a probe of the local half-open
        #expect(breaker.adopt(state: .closed, openUntil: nil, now: .milliseconds(1100))?.from == .halfOpen)
        var snapshot = breaker.snapshot(now: .milliseconds(1100))
        #expect(snapshot.state == .closed)
        #expect(snapshot.numberOfCalls == 0)
        #expect(snapshot.consecutiveOpenings == 0)
        #expect(breaker.record(.failure, duration: .zero, permit: stale, now: .milliseconds(1100)) == nil)
        #expect(breaker.snapshot(now: .milliseconds(1100)).staleOutcomes == 1)
        #expect(breaker.adopt(state: .closed, openUntil: nil, now: .milliseconds(1200)) == nil)

        #expect(breaker.adopt(state: .halfOpen, openUntil: .milliseconds(99_999), now: .milliseconds(1300))?.to == .halfOpen)
        #expect(breaker.openUntil == nil)
        snapshot = breaker.snapshot(now: .milliseconds(1300))
        #expect(snapshot.halfOpenRemaining == 3)
        #expect(snapshot.lastTransition == BreakerTransition(from: .closed, to: .halfOpen, reason: .remote, at: .milliseconds(1300)))
    }

    @Test func adoptOperatorStates() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        for state in [BreakerState.forcedOpen, .disabled, .metricsOnly, .closed] {
            #expect(breaker.adopt(state: state, openUntil: nil, now: .zero)?.reason == .remote)
            #expect(breaker.state == state)
        }
    }

    // MARK: Codable enums

    @Test func wireNames() {
        #expect(BreakerState.allCases.map(\.rawValue) == ["closed", "open", "half_open", "forced_open", "disabled", "metrics_only"])
        #expect(CallOutcome.allCases.map(\.rawValue) == ["success", "failure", "ignored"])
        #expect(
            TransitionReason.allCases.map(\.rawValue) == [
                "failure_rate", "slow_call_rate", "open_wait_elapsed", "probes_succeeded", "probes_failed",
                "half_open_timeout", "forced", "reconfigured", "remote",
            ])
        #expect(BreakerConfig.WindowType.allCases.map(\.rawValue) == ["count", "time"])
    }
}
