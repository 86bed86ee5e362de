import CoordinatorCore
import Testing

@Suite("Breaker: closed state and sliding windows")
struct BreakerClosedTests {
    @Test func newBreakerIsClosedAndEmpty() {
        let breaker = CircuitBreaker(config: .default, now: .milliseconds(7))
        let snapshot = breaker.snapshot(now: .milliseconds(8))
        #expect(
            snapshot
                == BreakerSnapshot(
                    state: .closed, failureRate: -1, slowCallRate: -1, numberOfCalls: 0, failedCalls: 0, slowCalls: 0,
                    successfulCalls: 0, notPermittedCalls: 0, staleOutcomes: 0, halfOpenInFlight: 0,
                    halfOpenRemaining: 0, openUntil: nil, consecutiveOpenings: 0, generation: 0,
                    stateSince: .milliseconds(7), thresholdExceeded: false, lastTransition: nil, config: .default))
        #expect(breaker.state == .closed)
        #expect(breaker.generation == 0)
        #expect(breaker.openUntil == nil)
    }

    @Test func closedGrantsPermitsOfTheCurrentGeneration() {
        var breaker = CircuitBreaker(config: .default, now: .zero)
        let acquisition = breaker.acquire(now: .zero)
        #expect(acquisition == BreakerAcquisition(permit: BreakerPermit(generation: 0, state: .closed)))
        #expect(acquisition.isPermitted)
        #expect(acquisition.retryAfter == nil)
        #expect(acquisition.transition == nil)
    }

    @Test func fiftyPercentFailuresTrip() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        breaker.testCalls(5, .success, at: .milliseconds(10))
        breaker.testCalls(4, .failure, at: .milliseconds(20))
        let transition = breaker.testCall(.failure, at: .milliseconds(30))
        #expect(
            transition
                == BreakerTransition(
                    from: .closed, to: .open, reason: .failureRate, at: .milliseconds(30), failureRate: 50, slowCallRate: 0))
        #expect(breaker.state == .open)
        #expect(breaker.generation == 1)
        #expect(breaker.openUntil == .milliseconds(1030))
        let snapshot = breaker.snapshot(now: .milliseconds(30))
        #expect(snapshot.lastTransition == transition)
        #expect(snapshot.openUntil == .milliseconds(1030))
        #expect(snapshot.consecutiveOpenings == 1)
        #expect(snapshot.stateSince == .milliseconds(30))
        // The window that tripped stays visible while open.
        #expect(snapshot.numberOfCalls == 10)
        #expect(snapshot.failedCalls == 5)
        #expect(snapshot.successfulCalls == 5)
        #expect(snapshot.failureRate == 50)
    }

    @Test func fortyPercentFailuresDoNotTrip() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        breaker.testCalls(6, .success, at: .zero)
        breaker.testCalls(4, .failure, at: .zero)
        #expect(breaker.state == .closed)
        let snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.failureRate == 40)
        #expect(snapshot.slowCallRate == 0)
        #expect(snapshot.numberOfCalls == 10)
        #expect(snapshot.failedCalls == 4)
        #expect(snapshot.successfulCalls == 6)
        #expect(snapshot.thresholdExceeded == false)
    }

    @Test func belowMinimumCallsNeverTrips() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(20), minimumCalls: 10), now: .zero)
        breaker.testCalls(9, .failure, at: .zero)
        let snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.state == .closed)
        #expect(snapshot.failureRate == -1)
        #expect(snapshot.slowCallRate == -1)
        #expect(snapshot.numberOfCalls == 9)
        #expect(snapshot.failedCalls == 9)
        let transition = breaker.testCall(.failure, at: .zero)
        #expect(transition?.reason == .failureRate)
        #expect(transition?.failureRate == 100)
    }

    @Test func countWindowMinimumIsCappedByWindowSize() {
        // resilience4j: min(minimumCalls, slidingWindowSize) for count windows.
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(5), minimumCalls: 100), now: .zero)
        breaker.testCalls(4, .failure, at: .zero)
        #expect(breaker.snapshot(now: .zero).failureRate == -1)
        #expect(breaker.testCall(.failure, at: .zero)?.reason == .failureRate)
    }

    @Test func slowCallsTripBySlowCallRate() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(slowCallRateThreshold: 50, slowCallDurationMs: 100), now: .zero)
        breaker.testCalls(5, .success, at: .zero, duration: .milliseconds(100))  // exactly the threshold: not slow
        #expect(breaker.snapshot(now: .zero).slowCalls == 0)
        breaker.testCalls(4, .success, at: .zero, duration: Span(nanoseconds: 100_000_001))
        let transition = breaker.testCall(.success, at: .milliseconds(5), duration: .seconds(3))
        #expect(
            transition
                == BreakerTransition(
                    from: .closed, to: .open, reason: .slowCallRate, at: .milliseconds(5), failureRate: 0, slowCallRate: 50))
        let snapshot = breaker.snapshot(now: .milliseconds(5))
        #expect(snapshot.slowCalls == 5)
        #expect(snapshot.successfulCalls == 10)
    }

    @Test func slowFailureCountsAsFailedAndSlow() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(), now: .zero)
        breaker.testCall(.failure, at: .zero, duration: .milliseconds(101))
        breaker.testCall(.success, at: .zero, duration: .milliseconds(101))
        breaker.testCall(.failure, at: .zero, duration: .milliseconds(1))
        let snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.numberOfCalls == 3)
        #expect(snapshot.failedCalls == 2)
        #expect(snapshot.slowCalls == 2)
        #expect(snapshot.successfulCalls == 1)
    }

    @Test func failureRateReasonWinsWhenBothCross() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .count(2), minimumCalls: 2, slowCallRateThreshold: 50), now: .zero)
        breaker.testCall(.failure, at: .zero, duration: .seconds(1))
        let transition = breaker.testCall(.success, at: .zero, duration: .seconds(1))
        #expect(transition?.reason == .failureRate)
        #expect(transition?.failureRate == 50)
        #expect(transition?.slowCallRate == 100)
    }

    @Test func ignoredOutcomesCountNothing() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(2), minimumCalls: 2), now: .zero)
        breaker.testCalls(10, .ignored, at: .zero)
        breaker.testCall(.failure, at: .zero)
        let snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.state == .closed)
        #expect(snapshot.numberOfCalls == 1)
    }

    @Test func countWindowSlides() {
        var breaker = CircuitBreaker(config: smallBreakerConfig(window: .count(4), minimumCalls: 4), now: .zero)
        breaker.testCall(.failure, at: .zero)
        breaker.testCalls(3, .success, at: .zero)
        #expect(breaker.snapshot(now: .zero).failureRate == 25)
        breaker.testCall(.success, at: .zero)  // the failure drops out
        var snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.numberOfCalls == 4)
        #expect(snapshot.failedCalls == 0)
        #expect(snapshot.failureRate == 0)
        breaker.testCall(.failure, at: .zero)  // 1 of 4: without sliding it would be 2 of 6
        snapshot = breaker.snapshot(now: .zero)
        #expect(snapshot.failedCalls == 1)
        #expect(snapshot.failureRate == 25)
        let transition = breaker.testCall(.failure, at: .zero)
        #expect(transition?.failureRate == 50)
    }

    @Test func countWindowSlidesOverManyLaps() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .count(3), minimumCalls: 3, failureRateThreshold: 100), now: .zero)
        for lap in 0..<10 {
            breaker.testCall(.failure, at: .milliseconds(Int64(lap)), duration: .seconds(1))
            breaker.testCall(.success, at: .milliseconds(Int64(lap)))
            breaker.testCall(.success, at: .milliseconds(Int64(lap)))
            let snapshot = breaker.snapshot(now: .zero)
            #expect(snapshot.numberOfCalls == 3)
            #expect(snapshot.failedCalls == 1)
            #expect(snapshot.slowCalls == 1)
        }
        #expect(breaker.state == .closed)
    }

    @Test func timeWindowDropsOutcomesOlderThanItsSize() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 10), minimumCalls: 4), now: .zero)
        breaker.testCall(.failure, at: .milliseconds(0))
        breaker.testCall(.success, at: .milliseconds(3_000))
        breaker.testCall(.success, at: .milliseconds(5_000))
        #expect(breaker.snapshot(now: .milliseconds(9_999)).numberOfCalls == 3)
        #expect(breaker.snapshot(now: .milliseconds(9_999)).failedCalls == 1)
        // Second 10: second 0's bucket has left the window.
        #expect(breaker.snapshot(now: .milliseconds(10_000)).numberOfCalls == 2)
        #expect(breaker.snapshot(now: .milliseconds(10_000)).failedCalls == 0)
        // With the old failure still counted this would be 2 of 4 = 50 % and trip.
        #expect(breaker.testCall(.failure, at: .milliseconds(10_000)) == nil)
        var snapshot = breaker.snapshot(now: .milliseconds(10_000))
        #expect(snapshot.numberOfCalls == 3)
        #expect(snapshot.failedCalls == 1)
        #expect(snapshot.failureRate == -1)
        let transition = breaker.testCall(.failure, at: .milliseconds(10_500))
        #expect(transition?.failureRate == 50)
        #expect(transition?.reason == .failureRate)
        snapshot = breaker.snapshot(now: .milliseconds(10_500))
        #expect(snapshot.numberOfCalls == 4)
    }

    @Test func timeWindowSnapshotDropsBucketsWithoutMutating() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 3), minimumCalls: 100), now: .zero)
        breaker.testCalls(1, .failure, at: .milliseconds(0))
        breaker.testCalls(2, .success, at: .milliseconds(1_500))
        breaker.testCalls(4, .success, at: .milliseconds(2_999))
        #expect(breaker.snapshot(now: .milliseconds(2_999)).numberOfCalls == 7)
        #expect(breaker.snapshot(now: .milliseconds(3_000)).numberOfCalls == 6)
        #expect(breaker.snapshot(now: .milliseconds(3_000)).failedCalls == 0)
        #expect(breaker.snapshot(now: .milliseconds(4_000)).numberOfCalls == 4)
        #expect(breaker.snapshot(now: .milliseconds(5_999)).numberOfCalls == 0)
        #expect(breaker.snapshot(now: .milliseconds(60_000)).numberOfCalls == 0)
        // Snapshots changed nothing: an earlier view is still complete.
        #expect(breaker.snapshot(now: .milliseconds(2_000)).numberOfCalls == 7)
    }

    @Test func timeWindowGapLongerThanTheWindowResets() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 5), minimumCalls: 3), now: .zero)
        breaker.testCalls(3, .success, at: .milliseconds(4_000))
        breaker.testCalls(1, .failure, at: .milliseconds(4_000))
        #expect(breaker.snapshot(now: .milliseconds(4_000)).numberOfCalls == 4)
        #expect(breaker.testCall(.failure, at: .milliseconds(100_000)) == nil)
        let snapshot = breaker.snapshot(now: .milliseconds(100_000))
        #expect(snapshot.numberOfCalls == 1)
        #expect(snapshot.failedCalls == 1)
        #expect(snapshot.failureRate == -1)
    }

    @Test func timeWindowEvictsSecondBySecond() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 4), minimumCalls: 1000), now: .zero)
        for second in 0..<20 {
            breaker.testCalls(second % 3 + 1, .success, at: .milliseconds(Int64(second) * 1000 + 999))
            // Calls of seconds second-3...second.
            let expected = (max(0, second - 3)...second).reduce(0) { $0 + $1 % 3 + 1 }
            #expect(breaker.snapshot(now: .milliseconds(Int64(second) * 1000 + 999)).numberOfCalls == expected)
        }
    }

    @Test func timeWindowClockSteppingBackLandsInTheLatestSecond() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 2), minimumCalls: 1000), now: .zero)
        breaker.testCall(.success, at: .milliseconds(5_000))
        breaker.testCall(.failure, at: .milliseconds(1_000))  // earlier than the latest second
        #expect(breaker.snapshot(now: .milliseconds(5_000)).numberOfCalls == 2)
        #expect(breaker.snapshot(now: .milliseconds(6_000)).numberOfCalls == 2)
        #expect(breaker.snapshot(now: .milliseconds(7_000)).numberOfCalls == 0)
    }

    @Test func timeWindowWorksBeforeTheOrigin() {
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 2), minimumCalls: 1000), now: .milliseconds(-5_000))
        breaker.testCall(.success, at: .milliseconds(-1_500))  // second -2
        breaker.testCall(.success, at: .milliseconds(-500))  // second -1
        #expect(breaker.snapshot(now: .milliseconds(-1)).numberOfCalls == 2)
        #expect(breaker.snapshot(now: .milliseconds(0)).numberOfCalls == 1)
        #expect(breaker.snapshot(now: .milliseconds(1_000)).numberOfCalls == 0)
    }

    @Test func timeWindowUsesMinimumCallsUncapped() {
        // Time windows use minimumCalls as is (no cap by the size in seconds).
        var breaker = CircuitBreaker(
            config: smallBreakerConfig(window: .time(seconds: 2), minimumCalls: 5), now: .zero)
        breaker.testCalls(4, .failure, at: .zero)
        #expect(breaker.snapshot(now: .zero).failureRate == -1)
        #expect(breaker.testCall(.failure, at: .zero)?.reason == .failureRate)
    }
}
