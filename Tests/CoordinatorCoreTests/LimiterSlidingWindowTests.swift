import CoordinatorCore
import Testing

@Suite("Rate limiter: sliding window counter")
struct LimiterSlidingWindowTests {
    /// 10 per second; windows are [n s, (n+1) s).
    static let tenPerSecond = LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 10, periodMs: 1_000)])

    @Test func fillsTheWindowThenWaitsForThePreviousWeightToDecay() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        for index in 1...10 {
            #expect(
                limiter.check(key: "k", cost: 1, now: atMs(0))
                    == allowedMs(limit: 10, remaining: 10 - index, resetMs: 2_000))
        }
        // Next window: estimate = 10 × (1 − e) + 0 must be ≤ 9, so e ≥ 0.1 s: at 1.1 s.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 10, remaining: 0, resetMs: 2_000, retryMs: 1_100))
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(600))
                == refusedMs(limit: 10, remaining: 0, resetMs: 1_400, retryMs: 500))
        #expect(
            limiter.check(key: "k", cost: 1, now: atNs(1_099_999_999))
                == decisionNs(false, limit: 10, remaining: 0, resetNs: 900_000_001, retryNs: 1))
        // At 1.1 s: previous 10 weighted 0.9 → 9; one more fits.
        #expect(limiter.check(key: "k", cost: 1, now: atMs(1_100)) == allowedMs(limit: 10, remaining: 0, resetMs: 1_900))
        // Refused again: needs 10 × (1 − e) + 1 + 1 ≤ 10 → e ≥ 0.2 s.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(1_100))
                == refusedMs(limit: 10, remaining: 0, resetMs: 1_900, retryMs: 100))
    }

    @Test func estimatesAcrossTheBoundary() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        _ = limiter.check(key: "k", cost: 10, now: atMs(900))
        // Halfway into the next window the previous 10 count as 5.
        #expect(limiter.check(key: "k", cost: 0, now: atMs(1_500)) == allowedMs(limit: 10, remaining: 5, resetMs: 500))
        for index in 1...5 {
            #expect(
                limiter.check(key: "k", cost: 1, now: atMs(1_500))
                    == allowedMs(limit: 10, remaining: 5 - index, resetMs: 1_500))
        }
        // 10 × (1 − e) + 5 + 1 ≤ 10 → e ≥ 0.6 s.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(1_500))
                == refusedMs(limit: 10, remaining: 0, resetMs: 1_500, retryMs: 100))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(1_600)) == allowedMs(limit: 10, remaining: 0, resetMs: 1_400))
        // Remaining rounds the estimate up: 10 × 0.35 = 3.5 → 3.5 + 6 = 9.5 → 0 left.
        #expect(limiter.check(key: "k", cost: 0, now: atMs(1_650)) == allowedMs(limit: 10, remaining: 0, resetMs: 1_350))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(1_700)) == allowedMs(limit: 10, remaining: 1, resetMs: 1_300))
        // Window 2: previous = 6 (window 1), current = 0.
        #expect(limiter.check(key: "k", cost: 0, now: atMs(2_000)) == allowedMs(limit: 10, remaining: 4, resetMs: 1_000))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(2_500)) == allowedMs(limit: 10, remaining: 7, resetMs: 500))
        // Window 3: both windows of counts have expired.
        #expect(limiter.check(key: "k", cost: 0, now: atMs(3_000)) == allowedMs(limit: 10, remaining: 10, resetMs: 0))
    }

    @Test func retryFallsInTheNextWindowWhenTheCurrentOneCannotFit() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        _ = limiter.check(key: "k", cost: 10, now: atMs(900))
        // Rest of window 0 (100 ms), then 10 × (1 − e) ≤ 9 → e ≥ 100 ms.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(900))
                == refusedMs(limit: 10, remaining: 0, resetMs: 1_100, retryMs: 200))
        // Cost 4: 10 × (1 − e) ≤ 6 → e ≥ 0.4 s.
        #expect(
            limiter.check(key: "k", cost: 4, now: atMs(900))
                == refusedMs(limit: 10, remaining: 0, resetMs: 1_100, retryMs: 500))
        #expect(limiter.check(key: "k", cost: 4, now: atMs(1_400)).allowed)
    }

    @Test func costEqualToRateWaitsForBothWindowsToEmpty() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        _ = limiter.check(key: "k", cost: 1, now: atMs(0))
        #expect(
            limiter.check(key: "k", cost: 10, now: atMs(0))
                == refusedMs(limit: 10, remaining: 9, resetMs: 2_000, retryMs: 2_000))
        #expect(!limiter.check(key: "k", cost: 10, now: atNs(1_999_999_999)).allowed)
        #expect(limiter.check(key: "k", cost: 10, now: atMs(2_000)) == allowedMs(limit: 10, remaining: 0, resetMs: 2_000))
    }

    @Test func costAboveRateOrNegativeCanNeverPass() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        #expect(limiter.check(key: "k", cost: 11, now: atMs(0)) == refusedMs(limit: 10, remaining: 10, resetMs: 0, retryMs: nil))
        #expect(limiter.check(key: "k", cost: -3, now: atMs(0)) == refusedMs(limit: 10, remaining: 10, resetMs: 0, retryMs: nil))
        #expect(limiter.keyCount == 0)
    }

    @Test func inexactWeightsUseExactArithmetic() {
        // 3 per second. 3 at 0; at 1 s + 1/3 s the estimate is 3 × 2/3 = 2 exactly: one fits.
        var limiter = RateLimiter(policy: LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 3, periodMs: 1_000)]))
        _ = limiter.check(key: "k", cost: 3, now: atMs(0))
        // Needs 3 × (1 − e) ≤ 2 → e ≥ 1/3 s → 333 333 334 ns after the window starts (rounded up).
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(1_000))
                == decisionNs(false, limit: 3, remaining: 0, resetNs: 1_000_000_000, retryNs: 333_333_334))
        #expect(!limiter.check(key: "k", cost: 1, now: atNs(1_333_333_333)).allowed)
        #expect(
            limiter.check(key: "k", cost: 1, now: atNs(1_333_333_334))
                == decisionNs(true, limit: 3, remaining: 0, resetNs: 1_666_666_666, retryNs: 0))
    }

    @Test func sweepRemovesKeysOnceBothWindowsAreEmpty() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        _ = limiter.check(key: "a", cost: 1, now: atMs(500))
        _ = limiter.check(key: "b", cost: 1, now: atMs(1_200))
        #expect(limiter.sweep(now: atMs(1_999)) == 0)
        #expect(limiter.sweep(now: atMs(2_000)) == 1)  // a: window 0 no longer counts
        #expect(limiter.keyCount == 1)
        #expect(limiter.sweep(now: atMs(2_999)) == 0)
        #expect(limiter.sweep(now: atMs(3_000)) == 1)  // b
        #expect(limiter.keyCount == 0)
    }

    @Test func negativeInstantsUseFloorAlignedWindows() {
        var limiter = RateLimiter(policy: Self.tenPerSecond)
        // -0.5 s lies in window [-1 s, 0).
        _ = limiter.check(key: "k", cost: 10, now: atMs(-500))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(-1)).retryAfter == .milliseconds(101))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(500)) == allowedMs(limit: 10, remaining: 5, resetMs: 500))
    }

    @Test func retryAfterIsExactAndEstimatesMatchAReferenceModel() {
        var random = SplitMix64(seed: 0x5EED_0001)
        for _ in 0..<200 {
            let rate = Int.random(in: 1...30, using: &random)
            let periodMs = Int.random(in: 1...3_000, using: &random)
            let period = Int64(periodMs) * 1_000_000
            var limiter = RateLimiter(
                policy: LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: rate, periodMs: periodMs)]))
            var model = SlidingWindowModel(rate: rate, period: period)
            var now = Int64.random(in: 0...10_000_000_000, using: &random)
            for _ in 0..<200 {
                now += Int64.random(in: 0...(period / Int64(rate) * 2), using: &random)
                let cost = Int.random(in: 0...(rate + 1), using: &random)
                let snapshot = limiter
                let decision = limiter.check(key: "k", cost: cost, now: atNs(now))
                let reference = model.check(cost: cost, now: now)
                #expect(decision.allowed == reference.allowed && decision.remaining == reference.remaining,
                        "rate \(rate)/\(periodMs)ms cost \(cost) at \(now): \(decision) vs \(reference)")
                #expect(decision.resetAfter == reference.resetAfter)
                #expect((decision.retryAfter == nil) == (cost > rate))
                if let problem = retryExactnessProblem(snapshot, key: "k", cost: cost, now: atNs(now), decision: decision) {
                    Issue.record("rate \(rate)/\(periodMs)ms: \(problem)")
                }
            }
        }
    }
}

/// Counts per fixed window kept in full; estimate compared as exact fractions.
struct SlidingWindowModel {
    let rate: Int64
    let period: Int64
    var counts: [Int64: Int64] = [:]

    init(rate: Int, period: Int64) {
        self.rate = Int64(rate)
        self.period = period
    }

    mutating func check(cost: Int, now: Int64) -> RateDecision {
        let window = now >= 0 ? now / period : -((-now - 1) / period) - 1
        let elapsed = now - window * period
        let current = counts[window, default: 0]
        let previous = counts[window - 1, default: 0]
        // rate − estimate = (rate·P − previous·(P − e) − current·P) / P, estimate as a fraction.
        func remaining(_ current: Int64) -> Int {
            let numerator = Int128(rate) * Int128(period) - Int128(previous) * Int128(period - elapsed)
                - Int128(current) * Int128(period)
            if numerator <= 0 { return 0 }
            return Int(numerator / Int128(period))
        }
        func reset(_ current: Int64) -> Span {
            current > 0 ? Span(nanoseconds: 2 * period - elapsed) : previous > 0 ? Span(nanoseconds: period - elapsed) : .zero
        }
        let fits =
            Int128(previous) * Int128(period - elapsed) + Int128(current + Int64(cost)) * Int128(period)
            <= Int128(rate) * Int128(period)
        if cost <= rate && fits {
            counts[window] = current + Int64(cost)
            return RateDecision(
                allowed: true, limit: Int(rate), remaining: remaining(current + Int64(cost)),
                resetAfter: reset(current + Int64(cost)), retryAfter: .zero, bindingLimit: 0)
        }
        return RateDecision(
            allowed: false, limit: Int(rate), remaining: remaining(current), resetAfter: reset(current),
            retryAfter: nil, bindingLimit: 0)
    }
}
