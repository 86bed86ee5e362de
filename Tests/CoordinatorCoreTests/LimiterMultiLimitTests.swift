import CoordinatorCore
import Testing

@Suite("Rate limiter: several limits, all or nothing")
struct LimiterMultiLimitTests {
    @Test func aRefusalByOneLimitConsumesNoneOfTheOthers() {
        // Limit 0: 10/s burst 5 (T = 100 ms). Limit 1: 6/day burst 6 (T = 4 h).
        let day: Int64 = 86_400_000
        var limiter = RateLimiter(
            policy: LimitPolicy(limits: [
                LimitSpec(rate: 10, periodMs: 1_000, burst: 5), LimitSpec(rate: 6, periodMs: Int(day)),
            ]))
        for index in 1...5 {
            // Limit 0 has fewer remaining (5 − index vs 6 − index).
            #expect(
                limiter.check(key: "k", cost: 1, now: atMs(0))
                    == allowedMs(limit: 5, remaining: 5 - index, resetMs: Int64(index) * 100, binding: 0))
        }
        // Refused by the per-second limit; the daily one would allow and must not be consumed.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 5, remaining: 0, resetMs: 500, retryMs: 100, binding: 0))
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 5, remaining: 0, resetMs: 500, retryMs: 100, binding: 0))
        // 6th request: both limits end with 0 remaining; the daily one replenishes later.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(100))
                == allowedMs(limit: 6, remaining: 0, resetMs: day - 100, binding: 1))
        // Refused by the daily limit; the per-second one would allow and must not be consumed.
        let fourHours = day / 6
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(200))
                == refusedMs(limit: 6, remaining: 0, resetMs: day - 200, retryMs: fourHours - 200, binding: 1))
        // Per-second limit: TAT still 600 ms, so at 300 ms it has 2 left.
        #expect(
            limiter.check(key: "k", cost: 0, now: atMs(300))
                == allowedMs(limit: 6, remaining: 0, resetMs: day - 300, binding: 1))
        var perSecondOnly = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: 10, periodMs: 1_000, burst: 5)]))
        _ = perSecondOnly.check(key: "k", cost: 5, now: atMs(0))
        _ = perSecondOnly.check(key: "k", cost: 1, now: atMs(100))
        #expect(perSecondOnly.check(key: "k", cost: 0, now: atMs(300)).remaining == 2)
        // Once the daily limit lets one through, the per-second limit has fully recovered.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(fourHours))
                == allowedMs(limit: 6, remaining: 0, resetMs: day, binding: 1))
    }

    @Test func bothRefuseTheLongestRetryBinds() {
        var limiter = RateLimiter(
            policy: LimitPolicy(limits: [
                LimitSpec(rate: 10, periodMs: 1_000, burst: 1), LimitSpec(rate: 2, periodMs: 60_000, burst: 1),
            ]))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(0)) == allowedMs(limit: 1, remaining: 0, resetMs: 30_000, binding: 1))
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 1, remaining: 0, resetMs: 30_000, retryMs: 30_000, binding: 1))
        // Cost 2 exceeds both bursts: never, and the first such limit binds.
        #expect(
            limiter.check(key: "k", cost: 2, now: atMs(0))
                == refusedMs(limit: 1, remaining: 0, resetMs: 100, retryMs: nil, binding: 0))
        // Limit 0 alone refuses.
        var other = RateLimiter(
            policy: LimitPolicy(limits: [
                LimitSpec(rate: 10, periodMs: 1_000, burst: 1), LimitSpec(rate: 100, periodMs: 60_000, burst: 10),
            ]))
        _ = other.check(key: "k", cost: 1, now: atMs(0))
        #expect(
            other.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 1, remaining: 0, resetMs: 100, retryMs: 100, binding: 0))
        // Never (cost 5 > burst 1 of limit 0) beats a finite retry of limit 1.
        #expect(other.check(key: "k", cost: 5, now: atMs(0)).bindingLimit == 0)
        #expect(other.check(key: "k", cost: 11, now: atMs(0)).bindingLimit == 0)
    }

    @Test func equalRemainingPrefersTheLongerReset() {
        var limiter = RateLimiter(
            policy: LimitPolicy(limits: [
                LimitSpec(rate: 1, periodMs: 60_000, burst: 3), LimitSpec(rate: 3, periodMs: 1_000, burst: 3),
            ]))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(0)) == allowedMs(limit: 3, remaining: 2, resetMs: 60_000, binding: 0))
        var swapped = RateLimiter(
            policy: LimitPolicy(limits: [
                LimitSpec(rate: 3, periodMs: 1_000, burst: 3), LimitSpec(rate: 1, periodMs: 60_000, burst: 3),
            ]))
        #expect(swapped.check(key: "k", cost: 1, now: atMs(0)) == allowedMs(limit: 3, remaining: 2, resetMs: 60_000, binding: 1))
    }

    @Test func pilotDefaultTenPerSecondBurstTwentyAndTenThousandPerDay() {
        var limiter = RateLimiter(policy: .pilotDefault)
        for index in 1...20 {
            let decision = limiter.check(key: "user", cost: 1, now: atMs(0))
            #expect(decision == allowedMs(limit: 20, remaining: 20 - index, resetMs: Int64(index) * 100, binding: 0))
        }
        #expect(
            limiter.check(key: "user", cost: 1, now: atMs(0))
                == refusedMs(limit: 20, remaining: 0, resetMs: 2_000, retryMs: 100, binding: 0))
        // Then one every 100 ms passes, until the daily limit (T = 8.64 s, tolerance 1 day) binds:
        // the k-th request (at (k − 20) × 100 ms) passes iff k × 8.64 s − (k − 20) × 0.1 s ≤ 1 day,
        // i.e. k ≤ 10 116.
        var passes = 20
        var now: Int64 = 0
        var last = RateDecision(allowed: true, limit: 0, remaining: 0, resetAfter: .zero, retryAfter: .zero, bindingLimit: 0)
        while true {
            now += 100
            last = limiter.check(key: "user", cost: 1, now: atMs(now))
            guard last.allowed else { break }
            passes += 1
        }
        #expect(passes == 10_116)
        #expect(now == 1_009_700)
        // 10 117 × 8.64 s − 1 009.7 s − 86 400 s = 1.18 s.
        #expect(last.bindingLimit == 1)
        #expect(last.limit == 10_000)
        #expect(last.remaining == 0)
        #expect(last.retryAfter == .milliseconds(1_180))
        #expect(last.resetAfter == .milliseconds(10_116 * 8_640 - 1_009_700))
        // Refusals by the daily limit consume nothing; it binds again for the next pass.
        #expect(!limiter.check(key: "user", cost: 1, now: atMs(now + 1_179)).allowed)
        let allowed = limiter.check(key: "user", cost: 1, now: atMs(now + 1_180))
        #expect(allowed.allowed && allowed.bindingLimit == 1 && allowed.remaining == 0)
    }

    @Test func slidingWindowLimitsAreAllOrNothingToo() {
        var limiter = RateLimiter(
            policy: LimitPolicy(
                algorithm: .slidingWindow,
                limits: [LimitSpec(rate: 5, periodMs: 1_000), LimitSpec(rate: 8, periodMs: 60_000)]))
        _ = limiter.check(key: "k", cost: 5, now: atMs(0))
        // Per-second full (retry in window 1 at e ≥ 0.2 s); per-minute has 3 left and keeps them.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 5, remaining: 0, resetMs: 2_000, retryMs: 1_200, binding: 0))
        #expect(
            limiter.check(key: "k", cost: 3, now: atMs(2_000))
                == allowedMs(limit: 8, remaining: 0, resetMs: 118_000, binding: 1))
        // Per-minute refuses until, in the next minute, 8 × (1 − e) ≤ 7: e ≥ 7.5 s.
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(3_000))
                == refusedMs(limit: 8, remaining: 0, resetMs: 117_000, retryMs: 57_000 + 7_500, binding: 1))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(3_000)).remaining == 0)
    }

    @Test func manyLimitsUseOverflowStorage() {
        // Five limits of 10/s (T = 100 ms) with bursts 10, 8, 6, 4, 2: slots 2...4 live outside
        // the inline pair, and the strictest limit is the last.
        let specs = (0..<5).map { LimitSpec(rate: 10, periodMs: 1_000, burst: 10 - 2 * $0) }
        var limiter = RateLimiter(policy: LimitPolicy(limits: specs))
        #expect(limiter.check(key: "k", cost: 2, now: atMs(0)) == allowedMs(limit: 2, remaining: 0, resetMs: 200, binding: 4))
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(0))
                == refusedMs(limit: 2, remaining: 0, resetMs: 200, retryMs: 100, binding: 4))
        // Limit 3 refuses (retry 100 ms) and limit 4 can never allow cost 3: never binds.
        #expect(
            limiter.check(key: "k", cost: 3, now: atMs(0))
                == refusedMs(limit: 2, remaining: 0, resetMs: 200, retryMs: nil, binding: 4))
        // Cost 2 at 100 ms: only limit 4 refuses (TAT 200 ms + 200 ms − 100 ms > 200 ms tolerance).
        #expect(
            limiter.check(key: "k", cost: 2, now: atMs(100))
                == refusedMs(limit: 2, remaining: 1, resetMs: 100, retryMs: 100, binding: 4))
        #expect(limiter.check(key: "k", cost: 2, now: atMs(200)) == allowedMs(limit: 2, remaining: 0, resetMs: 200, binding: 4))
        // Cost 5 exceeds the bursts of limits 3 and 4: never; limit 3 (lowest index) binds and
        // shows its committed state (TAT 400 ms at 200 ms: 2 remaining).
        #expect(
            limiter.check(key: "k", cost: 5, now: atMs(200))
                == refusedMs(limit: 4, remaining: 2, resetMs: 200, retryMs: nil, binding: 3))
        // Limit 2 (burst 6, in overflow storage too) after 4 units: 4 remaining at 200 ms.
        #expect(
            limiter.check(key: "k", cost: 7, now: atMs(200))
                == refusedMs(limit: 6, remaining: 4, resetMs: 200, retryMs: nil, binding: 2))
    }

    @Test func matchesIndependentLimitersFedOnlyTheAdmittedRequests() {
        var random = SplitMix64(seed: 0xA11_0F_1)
        for round in 0..<60 {
            let algorithm: LimitAlgorithm = round % 2 == 0 ? .gcra : .slidingWindow
            let specs = (0..<Int.random(in: 2...5, using: &random)).map { _ -> LimitSpec in
                let rate = Int.random(in: 1...20, using: &random)
                return LimitSpec(
                    rate: rate, periodMs: Int.random(in: 1...4_000, using: &random),
                    burst: algorithm == .gcra ? Int.random(in: 1...10, using: &random) : rate)
            }
            var limiter = RateLimiter(policy: LimitPolicy(algorithm: algorithm, limits: specs))
            var singles = specs.map { RateLimiter(policy: LimitPolicy(algorithm: algorithm, limits: [$0])) }
            var now: Int64 = 0
            for _ in 0..<300 {
                now += Int64.random(in: 0...400_000_000, using: &random)
                let cost = Int.random(in: 0...4, using: &random)
                let snapshot = limiter
                let decision = limiter.check(key: "k", cost: cost, now: atNs(now))
                var trial = singles
                let parts = trial.indices.map { trial[$0].check(key: "k", cost: cost, now: atNs(now)) }
                let allAllowed = parts.allSatisfy(\.allowed)
                if allAllowed { singles = trial }
                let binding: Int
                if allAllowed {
                    binding = parts.indices.min { a, b in
                        (parts[a].remaining, -parts[a].resetAfter.nanoseconds, a)
                            < (parts[b].remaining, -parts[b].resetAfter.nanoseconds, b)
                    }!
                } else {
                    let refusing = parts.indices.filter { !parts[$0].allowed }
                    binding = refusing.min { a, b in
                        let ra = parts[a].retryAfter?.nanoseconds ?? .max
                        let rb = parts[b].retryAfter?.nanoseconds ?? .max
                        return (-ra, a) < (-rb, b)
                    }!
                }
                var reference = parts[binding]
                reference.bindingLimit = binding
                #expect(decision == reference, "\(algorithm) \(specs) cost \(cost) at \(now)")
                if let problem = retryExactnessProblem(snapshot, key: "k", cost: cost, now: atNs(now), decision: decision) {
                    Issue.record("\(algorithm) \(specs): \(problem)")
                }
            }
        }
    }

    @Test func sweepNeedsEveryLimitFresh() {
        var limiter = RateLimiter(policy: .pilotDefault)
        _ = limiter.check(key: "k", cost: 1, now: atMs(0))
        // Per-second limit is fresh after 100 ms, the daily one after 8.64 s.
        #expect(limiter.sweep(now: atMs(100)) == 0)
        #expect(limiter.sweep(now: atMs(8_639)) == 0)
        #expect(limiter.sweep(now: atMs(8_640)) == 1)
        #expect(limiter.keyCount == 0)
    }

    @Test func replacePolicyKeepsStateWhenTheShapeMatches() {
        var limiter = RateLimiter(policy: LimitPolicy(limits: [LimitSpec(rate: 10, periodMs: 1_000, burst: 5)]))
        _ = limiter.check(key: "k", cost: 5, now: atMs(0))  // TAT = 500 ms
        // Same shape, new rate: the TAT (an instant) carries over; T = 50 ms, tolerance 500 ms.
        limiter.replacePolicy(LimitPolicy(limits: [LimitSpec(rate: 20, periodMs: 1_000, burst: 10)]))
        #expect(limiter.policy.limits[0].rate == 20)
        #expect(limiter.keyCount == 1)
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 10, remaining: 0, resetMs: 500))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(100)) == allowedMs(limit: 10, remaining: 2, resetMs: 400))
        // Same rate, smaller burst: debt beyond the new tolerance just means waiting longer.
        limiter.replacePolicy(LimitPolicy(limits: [LimitSpec(rate: 20, periodMs: 1_000, burst: 2)]))
        #expect(
            limiter.check(key: "k", cost: 1, now: atMs(100))
                == refusedMs(limit: 2, remaining: 0, resetMs: 400, retryMs: 350))
        // A different number of limits resets every key.
        limiter.replacePolicy(.pilotDefault)
        #expect(limiter.keyCount == 0)
        _ = limiter.check(key: "k", cost: 1, now: atMs(0))
        // A different algorithm resets too.
        limiter.replacePolicy(
            LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 10, periodMs: 1_000), LimitSpec(rate: 5, periodMs: 60_000)]))
        #expect(limiter.keyCount == 0)
    }

    @Test func replacePolicyResetsOnlySlidingLimitsWhosePeriodChanged() {
        var limiter = RateLimiter(
            policy: LimitPolicy(
                algorithm: .slidingWindow, limits: [LimitSpec(rate: 10, periodMs: 1_000), LimitSpec(rate: 10, periodMs: 60_000)]))
        _ = limiter.check(key: "k", cost: 4, now: atMs(0))
        limiter.replacePolicy(
            LimitPolicy(
                algorithm: .slidingWindow, limits: [LimitSpec(rate: 5, periodMs: 1_000), LimitSpec(rate: 10, periodMs: 30_000)]))
        // Limit 0 kept 4 of its new 5; limit 1 started fresh.
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 5, remaining: 1, resetMs: 2_000, binding: 0))
        #expect(limiter.check(key: "k", cost: 1, now: atMs(0)) == allowedMs(limit: 5, remaining: 0, resetMs: 2_000, binding: 0))
        #expect(limiter.check(key: "k", cost: 0, now: atMs(0)) == allowedMs(limit: 5, remaining: 0, resetMs: 2_000, binding: 0))
    }
}
