import CoordinatorCore
import Testing

@Suite("Rate limiter: GCRA")
struct LimiterGCRATests {
    /// 10 per second, burst 5: T = 100 ms, tolerance 500 ms.
    static let tenPerSecondBurstFive = LimitPolicy(limits: [LimitSpec(rate: 10, periodMs: 1_000, burst: 5)])

    @Test func burstThenExactRetry() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        for index in 1...5 {
            #expect(
                limiter.check(key: "k", cost: 1, now: atMs(0))
                    == allowedMs(limit: 5, remaining: 5 - index, resetMs: Int64(index) * 100))
        }
        #expect(limiter.check(key: "k", cost: 1, now: atMs(0)) == refusedMs(limit: 5, remaining: 0, resetMs: 500, retryMs: 100))
        // 1 ns early is still refused, and says so exactly.
        #expect(
            limiter.check(key: "k", cost: 1, now: atNs(99_999_999))
                == decisionNs(false, limit: 5, remaining: 0, resetNs: 400_000_001, retryNs: 1))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(100)) == allowedMs(limit: 5, remaining: 0, resetMs: 500))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(100)) == refusedMs(limit: 5, remaining: 0, resetMs: 500, retryMs: 100))
    }

    @Test func refusalsDoNotConsume() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        for _ in 1...5 { _ = limiter.check(key: "k", cost: 1, now: atMs(0)) }
        for _ in 1...100 { #expect(!limiter.check(key: "k", cost: 1, now: atMs(50)).allowed) }
        #expect(limiter.check(key: "k", cost: 1, now: atMs(100)).allowed)
    }

    @Test func steadyRateAtEmissionInterval() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        for step in Int64(0)..<1_000 {
            #expect(limiter.check(key: "k", cost: 1, now: atMs(step * 100)) == allowedMs(limit: 5, remaining: 4, resetMs: 100))
        }
    }

    @Test func twiceTheRateGetsBurstPlusRate() {
        // One request every 50 ms for 10 s: 5 (burst) + 10/s × 10 s passes, the rest refused.
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        var passed = 0
        for step in Int64(0)...200 where limiter.check(key: "k", cost: 1, now: atMs(step * 50)).allowed { passed += 1 }
        // TAT after n passes from a standing start at 0 is n × 100 ms; a request at t passes iff
        // TAT + 100 − t ≤ 500, i.e. n ≤ 4 + t/100. At t = 10 000 ms: n ≤ 104 → 105 passes in all.
        #expect(passed == 105)
    }

    @Test func costGreaterThanOne() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        #expect(limiter.check(key: "k", cost: 3, now: atMs(0)) == allowedMs(limit: 5, remaining: 2, resetMs: 300))
        #expect(limiter.check(key: "k", cost: 3, now: atMs(0)) == refusedMs(limit: 5, remaining: 2, resetMs: 300, retryMs: 100))
        #expect(limiter.check(key: "k", cost: 2, now: atMs(0)) == allowedMs(limit: 5, remaining: 0, resetMs: 500))
        #expect(limiter.check(key: "k", cost: 5, now: atMs(0)) == refusedMs(limit: 5, remaining: 0, resetMs: 500, retryMs: 500))
        #expect(limiter.check(key: "k", cost: 5, now: atMs(500)) == allowedMs(limit: 5, remaining: 0, resetMs: 500))
    }

    @Test func costZeroIsAQuery() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 5, remaining: 5, resetMs: 0))
        #expect(limiter.keyCount == 0)
        _ = limiter.check(key: "k", cost: 2, now: atMs(0))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 5, remaining: 3, resetMs: 200))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 5, remaining: 3, resetMs: 200))
        _ = limiter.check(key: "k", cost: 3, now: atMs(0))
        // Exhausted: a query still "passes" (consumes nothing) and reports zero remaining.
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 5, remaining: 0, resetMs: 500))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(150)) == allowedMs(limit: 5, remaining: 1, resetMs: 350))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(150)) == allowedMs(limit: 5, remaining: 0, resetMs: 450))
    }

    @Test func costAboveBurstCanNeverPass() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        #expect(limiter.check(key: "k", cost: 6, now: atMs(0)) == refusedMs(limit: 5, remaining: 5, resetMs: 0, retryMs: nil))
        #expect(limiter.keyCount == 0)
        _ = limiter.check(key: "k", cost: 1, now: atMs(0))
        #expect(limiter.check(key: "k", cost: 6, now: atMs(0)) == refusedMs(limit: 5, remaining: 4, resetMs: 100, retryMs: nil))
        #expect(limiter.check(key: "k", cost: Int.max, now: atMs(0)).retryAfter == nil)
        #expect(limiter.check(key: "k", cost: -1, now: atMs(0)) == refusedMs(limit: 5, remaining: 4, resetMs: 100, retryMs: nil))
        #expect(limiter.check(key: "k", cost: 4, now: atMs(0)).allowed)
    }

    @Test func recoveryOverTime() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        _ = limiter.check(key: "k", cost: 5, now: atMs(0))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(250)) == allowedMs(limit: 5, remaining: 2, resetMs: 250))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(499)) == allowedMs(limit: 5, remaining: 4, resetMs: 1))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(500)) == allowedMs(limit: 5, remaining: 5, resetMs: 0))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(10_000)) == allowedMs(limit: 5, remaining: 5, resetMs: 0))
        // Idle time never banks more than the burst.
        #expect(limiter.check(key: "k", cost: 5, now: atMs(10_000)).allowed)
        #expect(!limiter.check(key: "k", cost: 1, now: atMs(10_000)).allowed)
    }

    @Test func keysAreIndependent() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        _ = limiter.check(key: "a", cost: 5, now: atMs(0))
        #expect(!limiter.check(key: "a", cost: 1, now: atMs(0)).allowed)
        #expect(limiter.check(key: "b", cost: 1, now: atMs(0)) == allowedMs(limit: 5, remaining: 4, resetMs: 100))
        #expect(limiter.keyCount == 2)
        limiter.reset(key: "a")
        #expect(limiter.keyCount == 1)
        #expect(limiter.check(key: "a", cost: 1, now: atMs(0)) == allowedMs(limit: 5, remaining: 4, resetMs: 100))
    }

    @Test func emissionIntervalThatDoesNotDivideThePeriodDoesNotDrift() {
        // 3 per second: T = 333 333 333⅓ ns, kept exactly.
        var limiter = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: 3, periodMs: 1_000, burst: 1)]))
        #expect(limiter.check(key: "k", cost: 1, now: atNs(0)).allowed)
        #expect(limiter.check(key: "k", cost: 1, now: atNs(0)).retryAfter == Span(nanoseconds: 333_333_334))
        #expect(limiter.check(key: "k", cost: 1, now: atNs(333_333_333)).retryAfter == Span(nanoseconds: 1))
        // With burst 1 a request that arrives late (retryAfter is rounded up to the nanosecond)
        // loses the lateness, as GCRA should; with burst 2 the slack absorbs it, so retrying at
        // each retryAfter the (3n+2)-th request passes at exactly n seconds.
        limiter = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: 3, periodMs: 1_000, burst: 2)]))
        #expect(limiter.check(key: "k", cost: 2, now: atNs(0)).allowed)
        var now = atNs(0)
        var passes = 2
        var attempts = 0
        while passes < 3_002 && attempts < 10_000 {
            attempts += 1
            let decision = limiter.check(key: "k", cost: 1, now: now)
            if decision.allowed {
                passes += 1
            } else {
                guard let retry = decision.retryAfter, retry > .zero else {
                    Issue.record("refused without a positive retryAfter: \(decision)")
                    return
                }
                now = now + retry
            }
        }
        #expect(passes == 3_002)
        #expect(now == atMs(1_000_000))
    }

    @Test func oneNanosecondEmissionInterval() {
        var limiter = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1)]))
        #expect(limiter.check(key: "k", cost: 1, now: atNs(10)) == decisionNs(true, limit: 1, remaining: 0, resetNs: 1, retryNs: 0))
        #expect(limiter.check(key: "k", cost: 1, now: atNs(10)) == decisionNs(false, limit: 1, remaining: 0, resetNs: 1, retryNs: 1))
        #expect(limiter.check(key: "k", cost: 1, now: atNs(11)).allowed)
    }

    @Test func extremeValuesDoNotOverflow() {
        // Wall-clock scale instants, the largest rate and burst, the longest period.
        let now = Instant(nanoseconds: 1_750_000_000_000_000_000)
        var fast = RateLimiter(
            policy: LimitPolicy(limits: [LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1_000_000_000)]))
        #expect(
            fast.check(key: "k", cost: 1_000_000_000, now: now)
                == decisionNs(true, limit: 1_000_000_000, remaining: 0, resetNs: 1_000_000_000, retryNs: 0))
        #expect(
            fast.check(key: "k", cost: 1, now: now)
                == decisionNs(false, limit: 1_000_000_000, remaining: 0, resetNs: 1_000_000_000, retryNs: 1))
        let year: Int64 = 366 * 86_400_000
        var slow = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: 1, periodMs: Int(year), burst: 10)]))
        #expect(
            slow.check(key: "k", cost: 10, now: now)
                == decisionNs(true, limit: 10, remaining: 0, resetNs: 10 * year * 1_000_000, retryNs: 0))
        #expect(slow.check(key: "k", cost: 10, now: now).retryAfter == Span(nanoseconds: 10 * year * 1_000_000))
        var dense = RateLimiter(
            policy: LimitPolicy(limits: [LimitSpec(rate: 1_000_000_000, periodMs: Int(year), burst: 1_000_000_000)]))
        #expect(dense.check(key: "k", cost: 999_999_999, now: now).remaining == 1)
        #expect(dense.check(key: "k", cost: 2, now: now).retryAfter == Span(nanoseconds: year * 1_000_000 / 1_000_000_000))
    }

    @Test func timeGoingBackwardsIsSafe() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        _ = limiter.check(key: "k", cost: 5, now: atMs(1_000))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(900)) == refusedMs(limit: 5, remaining: 0, resetMs: 600, retryMs: 200))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(-5_000)).retryAfter == .milliseconds(6_100))
    }

    @Test func sweepRemovesOnlyReplenishedKeys() {
        var limiter = RateLimiter(policy: Self.tenPerSecondBurstFive)
        _ = limiter.check(key: "a", cost: 5, now: atMs(0))
        _ = limiter.check(key: "b", cost: 1, now: atMs(0))
        _ = limiter.check(key: "c", cost: 1, now: atMs(300))
        #expect(limiter.keyCount == 3)
        #expect(limiter.sweep(now: atMs(99)) == 0)
        #expect(limiter.sweep(now: atMs(100)) == 1)  // b
        #expect(limiter.sweep(now: atMs(399)) == 0)
        #expect(limiter.sweep(now: atMs(400)) == 1)  // c
        #expect(limiter.keyCount == 1)
        #expect(limiter.check(key: "a", cost: 0, now: atMs(499)) == allowedMs(limit: 5, remaining: 4, resetMs: 1))
        #expect(limiter.sweep(now: atMs(500)) == 1)  // a
        #expect(limiter.keyCount == 0)
        // A swept key behaves like a fresh one.
        #expect(limiter.check(key: "a", cost: 5, now: atMs(500)) == allowedMs(limit: 5, remaining: 0, resetMs: 500))
    }

    @Test func matchesATokenBucketReferenceModel() {
        var random = SplitMix64(seed: 0xC0FF_EE00)
        for _ in 0..<200 {
            let rate = Int.random(in: 1...50, using: &random)
            let periodMs = Int.random(in: 1...5_000, using: &random)
            let burst = Int.random(in: 1...20, using: &random)
            var limiter = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: rate, periodMs: periodMs, burst: burst)]))
            var model = TokenBucketModel(rate: rate, periodNs: Int64(periodMs) * 1_000_000, burst: burst)
            var now = Int64.random(in: -1_000_000_000...1_000_000_000, using: &random)
            let interval = Int64(periodMs) * 1_000_000 / Int64(rate)
            for _ in 0..<200 {
                now += Int64.random(in: 0...(2 * interval), using: &random)
                let cost = Int.random(in: 0...(burst + 1), using: &random)
                let snapshot = limiter
                let decision = limiter.check(key: "k", cost: cost, now: atNs(now))
                let reference = model.check(cost: cost, now: now)
                #expect(decision == reference, "rate \(rate)/\(periodMs)ms burst \(burst) cost \(cost) at \(now)")
                if let problem = retryExactnessProblem(snapshot, key: "k", cost: cost, now: atNs(now), decision: decision) {
                    Issue.record("\(problem)")
                }
            }
        }
    }
}

/// A token bucket in exact arithmetic (tokens × period), independent of GCRA's formulation.
struct TokenBucketModel {
    let rate: Int128
    let period: Int128
    let burst: Int128
    var scaledTokens: Int128
    var last: Int64?

    init(rate: Int, periodNs: Int64, burst: Int) {
        self.rate = Int128(rate)
        self.period = Int128(periodNs)
        self.burst = Int128(burst)
        scaledTokens = Int128(burst) * Int128(periodNs)
    }

    static func ceilDiv(_ x: Int128, _ d: Int128) -> Int64 { x <= 0 ? 0 : Int64((x + d - 1) / d) }

    mutating func check(cost: Int, now: Int64) -> RateDecision {
        if let last { scaledTokens = min(burst * period, scaledTokens + Int128(now - last) * rate) }
        last = now
        let full = burst * period
        let need = Int128(cost) * period
        if cost > Int(burst) {
            return decisionNs(
                false, limit: Int(burst), remaining: Int(scaledTokens / period),
                resetNs: Self.ceilDiv(full - scaledTokens, rate), retryNs: nil)
        }
        if scaledTokens >= need {
            scaledTokens -= need
            return decisionNs(
                true, limit: Int(burst), remaining: Int(scaledTokens / period),
                resetNs: Self.ceilDiv(full - scaledTokens, rate), retryNs: 0)
        }
        return decisionNs(
            false, limit: Int(burst), remaining: Int(scaledTokens / period),
            resetNs: Self.ceilDiv(full - scaledTokens, rate), retryNs: Self.ceilDiv(need - scaledTokens, rate))
    }
}
