// The hot paths of CoordinatorCore, measured with package-benchmark (wall clock, throughput,
// mallocs, instructions), next to a baseline measured in the same run: one hashed keyed update of
// a `Dictionary<String, Int64>` over the same 1000 keys, the floor cost of any per-key limiter.
//
// Run from the repository root with `make bench`, or here with
//   swift package --disable-sandbox benchmark
// and `python3 ratios.py` on an export for the ratio table (see README, "Benchmarks").

import Benchmark
import CoordinatorCore

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        timeUnits: .nanoseconds,
        warmupIterations: 3,
        scalingFactor: .mega,
        maxDuration: .seconds(3),
        maxIterations: 40
    )

    // MARK: Breaker: acquire + record while closed (every call a success, never slow).

    for (label, window) in [("count window", BreakerConfig.Window.count(100)), ("time window", .time(seconds: 60))] {
        var breaker = CircuitBreaker(config: BreakerConfig(window: window), now: .zero)
        var clock: Int64 = 0
        Benchmark("Breaker.acquire+record (closed, \(label))") { benchmark in
            for _ in benchmark.scaledIterations {
                clock &+= 1_000  // 1 µs per call: a time window rolls a bucket every million calls
                let now = Instant(nanoseconds: clock)
                let acquisition = breaker.acquire(now: now)
                let transition = breaker.record(
                    .success, duration: Span(nanoseconds: 5_000_000), permit: acquisition.permit!, now: now)
                blackHole(transition)
            }
            precondition(breaker.state == .closed)
        }
    }

    // MARK: GCRA decisions (every request allowed, so each one also writes the key's state)

    let keys = (0..<1000).map { "tenant-7:user-\(String(100_000 + $0))" }  // 20 bytes: a heap string, as real keys
    let huge = LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1_000_000_000)

    do {
        var limiter = RateLimiter(policy: LimitPolicy(algorithm: .gcra, limits: [huge]))
        var clock: Int64 = 0
        let key = keys[0]
        Benchmark("GCRA.check (1 key)") { benchmark in
            for _ in benchmark.scaledIterations {
                clock &+= 100
                let decision = limiter.check(key: key, cost: 1, now: Instant(nanoseconds: clock))
                blackHole(decision)
            }
        }
    }

    do {
        let day = LimitSpec(rate: 1_000_000_000, periodMs: 86_400_000, burst: 1_000_000_000)
        var limiter = RateLimiter(policy: LimitPolicy(algorithm: .gcra, limits: [huge, day]))
        var clock: Int64 = 0
        for key in keys { _ = limiter.check(key: key, cost: 1, now: .zero) }  // every key present
        Benchmark("GCRA.check (1000 keys, 2 limits)") { benchmark in
            var index = 0
            for _ in benchmark.scaledIterations {
                clock &+= 100
                let decision = limiter.check(key: keys[index], cost: 1, now: Instant(nanoseconds: clock))
                blackHole(decision)
                index = index == 999 ? 0 : index + 1
            }
        }
    }

    // MARK: Baseline

    do {
        var counters: [String: Int64] = [:]
        for key in keys { counters[key] = 0 }
        Benchmark("Baseline.Dictionary<String,Int64> update (1000 keys)") { benchmark in
            var index = 0
            for _ in benchmark.scaledIterations {
                counters[keys[index], default: 0] &+= 1
                index = index == 999 ? 0 : index + 1
            }
            blackHole(counters.count)
        }
    }
}
