import CoordinatorCore
import Testing

@Suite("Cluster approximate limits, refusal cache, shared-state health")
struct ClusterLimiterSyncTests {
    let policy = LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 10, periodMs: 1_000)])

    @Test("local decisions count as unsynced; a sync pushes them and adopts the cluster total")
    func syncCycle() {
        var sync = ApproximateLimitSync(policy: policy)
        for _ in 0..<4 { #expect(sync.check(key: "k", atRedisMs: 10_100).allowed) }
        #expect(sync.unsynced(key: "k") == 4)
        let items = sync.beginSync(atRedisMs: 10_150)
        #expect(items == [LimitSyncItem(key: "k", limitIndex: 0, window: 10, amount: 4)])
        // Nothing new: the next sync (before the answer) sends nothing.
        #expect(sync.beginSync(atRedisMs: 10_160) == [])
        // Redis: other nodes consumed 5, so the window's total is 9.
        sync.completeSync(items[0], clusterTotal: 9, previousTotal: 0)
        #expect(sync.unsynced(key: "k") == 0)
        let decision = sync.check(key: "k", atRedisMs: 10_200)
        #expect(decision.allowed && decision.remaining == 0)
        let refused = sync.check(key: "k", atRedisMs: 10_300)
        #expect(!refused.allowed && refused.retryAfter != nil && refused.limit == 10)
        // A cost that can never pass.
        #expect(sync.check(key: "k", cost: 11, atRedisMs: 10_300).retryAfter == nil)
        // Cost 0 on a fresh key consumes nothing.
        #expect(sync.check(key: "fresh", cost: 0, atRedisMs: 10_300).remaining == 10)
        #expect(sync.unsynced(key: "fresh") == 0)
    }

    @Test("a failed sync resends its amount; late answers for rolled windows land in the previous window")
    func failuresAndRolls() {
        var sync = ApproximateLimitSync(policy: policy)
        for _ in 0..<3 { _ = sync.check(key: "k", atRedisMs: 500) }
        let first = sync.beginSync(atRedisMs: 600)
        sync.failSync(first[0])
        _ = sync.check(key: "k", atRedisMs: 700)
        let second = sync.beginSync(atRedisMs: 800)
        #expect(second == [LimitSyncItem(key: "k", limitIndex: 0, window: 0, amount: 4)])
        // The window rolls before the answer: the answer applies to the previous window.
        _ = sync.check(key: "k", atRedisMs: 1_000)
        sync.completeSync(second[0], clusterTotal: 8)
        // At 1 000 + 500: previous 8 × 0.5 + current 1 → 5, so 5 more fit.
        var allowed = 0
        while sync.check(key: "k", atRedisMs: 1_500).allowed { allowed += 1 }
        #expect(allowed == 5)
        // Unsent consumption of the previous window is still sent (to the previous window's key).
        let third = sync.beginSync(atRedisMs: 2_100)
        #expect(third.contains(LimitSyncItem(key: "k", limitIndex: 0, window: 1, amount: 6)))
        // Answers for windows the view has passed entirely are ignored.
        sync.completeSync(LimitSyncItem(key: "k", limitIndex: 0, window: -5, amount: 1), clusterTotal: 1_000)
        sync.completeSync(LimitSyncItem(key: "missing", limitIndex: 0, window: 2, amount: 1), clusterTotal: 1_000)
        sync.failSync(LimitSyncItem(key: "missing", limitIndex: 0, window: 2, amount: 1))
    }

    @Test("multi-limit policies decide all or nothing")
    func multiLimit() {
        let two = LimitPolicy(algorithm: .gcra, limits: [LimitSpec(rate: 5, periodMs: 1_000, burst: 9), LimitSpec(rate: 7, periodMs: 10_000)])
        var sync = ApproximateLimitSync(policy: two)
        var allowed = 0
        for _ in 0..<10 where sync.check(key: "k", atRedisMs: 0).allowed { allowed += 1 }
        #expect(allowed == 5)  // rate 5 per second (burst unused)
        let refusedByFirst = sync.check(key: "k", atRedisMs: 500)
        #expect(!refusedByFirst.allowed && refusedByFirst.bindingLimit == 0)
        // Two windows later the per-second limit is free but the 7-per-10-s limit has 2 left.
        #expect(sync.check(key: "k", atRedisMs: 2_000).allowed)
        #expect(sync.check(key: "k", atRedisMs: 2_000).allowed)
        let refused = sync.check(key: "k", atRedisMs: 2_000)
        #expect(!refused.allowed && refused.bindingLimit == 1 && refused.limit == 7)
        #expect(sync.unsynced(key: "k", limitIndex: 1) == 7)
        let items = sync.beginSync(atRedisMs: 2_100)
        #expect(Set(items.map(\.limitIndex)) == [0, 1])
    }

    @Test("the overshoot bound, computed and measured with five simulated nodes")
    func overshoot() {
        let limit = LimitSpec(rate: 1_000, periodMs: 1_000)
        #expect(ApproximateLimitSync.overshootBound(nodes: 5, limit: limit, syncIntervalMs: 50) == 250)
        #expect(ApproximateLimitSync.overshootBound(nodes: 3, limit: LimitSpec(rate: 10, periodMs: 1_000), syncIntervalMs: 50) == 2)
        #expect(ApproximateLimitSync.overshootBound(nodes: 0, limit: limit, syncIntervalMs: 50) == 0)

        // Five nodes, each offered 1 000 req/s of one key (5× the limit cluster-wide), syncing every
        // 50 ms against one shared counter per window. Admissions per fixed window stay within
        // limit + bound.
        let policy = LimitPolicy(algorithm: .slidingWindow, limits: [limit])
        var nodes = (0..<5).map { _ in ApproximateLimitSync(policy: policy) }
        var redis: [Int64: Int64] = [:]
        var admittedPerWindow: [Int64: Int] = [:]
        for ms in Int64(0)..<5_000 {
            for index in nodes.indices where nodes[index].check(key: "k", atRedisMs: ms, nodes: 5).allowed {
                admittedPerWindow[ms / 1_000, default: 0] += 1
            }
            if ms % 50 == 49 {
                for index in nodes.indices {
                    for item in nodes[index].beginSync(atRedisMs: ms) {
                        redis[item.window, default: 0] += item.amount
                        nodes[index].completeSync(item, clusterTotal: redis[item.window]!, previousTotal: redis[item.window - 1] ?? 0)
                    }
                }
            }
        }
        let bound = 1_000 + ApproximateLimitSync.overshootBound(nodes: 5, limit: limit, syncIntervalMs: 50)
        for (window, admitted) in admittedPerWindow {
            #expect(admitted <= bound, "window \(window): \(admitted)")
            #expect(admitted >= 500, "window \(window): \(admitted)")  // the limit is actually used
        }
    }

    @Test("between syncs a node admits only its share of the cluster's remaining capacity")
    func fairShareBurst() {
        let limit = LimitSpec(rate: 1_000, periodMs: 10_000)
        let policy = LimitPolicy(algorithm: .slidingWindow, limits: [limit], mode: .approximate, syncIntervalMs: 50)
        var nodes = (0..<5).map { _ in ApproximateLimitSync(policy: policy) }
        var redis: [Int64: Int64] = [:]
        func sync(_ index: Int, at ms: Int64) {
            for item in nodes[index].beginSync(atRedisMs: ms) {
                redis[item.window, default: 0] += item.amount
                nodes[index].completeSync(item, clusterTotal: redis[item.window]!, previousTotal: redis[item.window - 1] ?? 0)
            }
        }
        // A burst on every node of a fresh key before any sync: each takes ⌈1000 / 5⌉, not the whole limit.
        var admitted = 0
        for index in nodes.indices {
            for _ in 0..<2_000 where nodes[index].check(key: "k", atRedisMs: 100, nodes: 5).allowed { admitted += 1 }
        }
        #expect(admitted == 1_000)
        let refused = nodes[0].check(key: "k", atRedisMs: 100, nodes: 5)
        #expect(!refused.allowed && refused.remaining == 0 && refused.retryAfter == .milliseconds(50))
        // After the syncs (the first nodes to sync saw the others' pushes only on the second round)
        // every node sees the window full: nothing more until the window rolls.
        for index in nodes.indices { sync(index, at: 150) }
        for index in nodes.indices { _ = nodes[index].check(key: "k", cost: 0, atRedisMs: 160, nodes: 5) }
        for index in nodes.indices { sync(index, at: 170) }
        for index in nodes.indices { #expect(!nodes[index].check(key: "k", atRedisMs: 200, nodes: 5).allowed) }
        #expect(redis[0] == 1_000)

        // Partial use: two nodes busy, three idle. The busy ones get a share each interval and the
        // cluster never exceeds the limit, while the limit is still reached.
        var fresh = (0..<5).map { _ in ApproximateLimitSync(policy: policy) }
        var counts: [Int64: Int64] = [:]
        var total = 0
        for ms in stride(from: Int64(20_000), to: 22_000, by: 1) {
            for index in 0..<2 where fresh[index].check(key: "j", atRedisMs: ms, nodes: 5).allowed { total += 1 }
            if ms % 50 == 49 {
                for index in 0..<5 {
                    for item in fresh[index].beginSync(atRedisMs: ms) {
                        counts[item.window, default: 0] += item.amount
                        fresh[index].completeSync(item, clusterTotal: counts[item.window]!, previousTotal: counts[item.window - 1] ?? 0)
                    }
                }
            }
        }
        // Shares are rounded up: at most one extra per node.
        #expect(total <= 1_000 + 5 && total >= 990, "admitted \(total)")
        // A single live node keeps the whole remaining capacity.
        var single = ApproximateLimitSync(policy: policy)
        var alone = 0
        for _ in 0..<1_500 where single.check(key: "k", atRedisMs: 0, nodes: 1).allowed { alone += 1 }
        #expect(alone == 1_000)
    }

    @Test("sweep and the key bound")
    func bounded() {
        var sync = ApproximateLimitSync(policy: policy, maximumKeys: 2)
        _ = sync.check(key: "a", atRedisMs: 0)
        _ = sync.check(key: "b", atRedisMs: 0)
        _ = sync.check(key: "c", atRedisMs: 0)
        #expect(sync.keyCount == 2)
        for item in sync.beginSync(atRedisMs: 100) { sync.completeSync(item, clusterTotal: 1) }
        #expect(sync.sweep(atRedisMs: 1_500) == 0)  // still counts in the sliding window
        #expect(sync.sweep(atRedisMs: 2_000) == 2)
        #expect(sync.keyCount == 0)
    }

    @Test("the refusal cache refuses locally until the retry-after, bounded")
    func refusalCache() {
        var cache = LocalRefusalCache(capacity: 2)
        let refusal = RateDecision(allowed: false, limit: 10, remaining: 0, resetAfter: .milliseconds(900), retryAfter: .milliseconds(300), bindingLimit: 0)
        cache.remember(key: "k", decision: refusal, now: .milliseconds(1_000))
        let cached = cache.refusal(key: "k", now: .milliseconds(1_100))
        #expect(cached == RateDecision(allowed: false, limit: 10, remaining: 0, resetAfter: .milliseconds(800), retryAfter: .milliseconds(200), bindingLimit: 0))
        #expect(cache.refusal(key: "k", now: .milliseconds(1_300)) == nil)
        // Allowed decisions, never-passing ones and zero retries are not cached.
        cache.remember(key: "a", decision: RateDecision(allowed: true, limit: 1, remaining: 0, resetAfter: .zero, retryAfter: .zero, bindingLimit: 0), now: .zero)
        cache.remember(key: "b", decision: RateDecision(allowed: false, limit: 1, remaining: 0, resetAfter: .zero, retryAfter: nil, bindingLimit: 0), now: .zero)
        cache.remember(key: "c", decision: RateDecision(allowed: false, limit: 1, remaining: 0, resetAfter: .zero, retryAfter: .zero, bindingLimit: 0), now: .zero)
        #expect(cache.count == 0)
        for key in ["x", "y", "z"] { cache.remember(key: key, decision: refusal, now: .zero) }
        #expect(cache.count == 2)
        #expect(cache.refusal(key: "x", now: .zero) == nil)
        #expect(cache.refusal(key: "z", now: .milliseconds(299))?.retryAfter == .milliseconds(1))
        cache.forget(key: "z")
        #expect(cache.refusal(key: "z", now: .zero) == nil)
        #expect(cache.removeExpired(now: .milliseconds(300)) == 1)
        cache.remember(key: "q", decision: refusal, now: .zero)
        cache.removeAll()
        #expect(cache.count == 0)
    }

    @Test("loss modes parse and decide")
    func lossModes() throws {
        #expect(try SharedStateLossMode.parse("localShare") == .localShare)
        #expect(try SharedStateLossMode.parse("allow") == .allow)
        #expect(try SharedStateLossMode.parse("deny") == .deny)
        #expect(SharedStateLossMode.default == .localShare)
        for bad in ["", "local_share", "Allow", "none"] {
            #expect(throws: ValidationError.self) { try SharedStateLossMode.parse(bad, key: "limits.p.onSharedStateLoss") }
        }
        #expect(SharedStateLossMode.localShare.limiterDecision(shareDivisor: 4) == .enforceLocalShare(members: 4))
        #expect(SharedStateLossMode.localShare.limiterDecision(shareDivisor: 0) == .enforceLocalShare(members: 1))
        #expect(SharedStateLossMode.allow.limiterDecision(shareDivisor: 4) == .allow)
        #expect(SharedStateLossMode.deny.limiterDecision(shareDivisor: 4) == .deny)
        let gcra = LimitPolicy(algorithm: .gcra, limits: [LimitSpec(rate: 10, periodMs: 1_000, burst: 20)])
        #expect(DegradedLimitDecision.allowedDecision(policy: gcra) == RateDecision(allowed: true, limit: 20, remaining: 20, resetAfter: .zero, retryAfter: .zero, bindingLimit: 0))
        #expect(DegradedLimitDecision.deniedDecision(policy: policy, retryAfter: .seconds(1)) == RateDecision(allowed: false, limit: 10, remaining: 0, resetAfter: .seconds(1), retryAfter: .seconds(1), bindingLimit: 0))
    }

    @Test("local share of a policy: ceil(rate / n), ceil(burst / n), always valid")
    func localSharePolicy() {
        let p = LimitPolicy.pilotDefault
        let share = p.localShare(members: 3)
        #expect(share.limits.map(\.rate) == p.limits.map { ($0.rate + 2) / 3 })
        #expect(share.limits.map(\.burst) == p.limits.map { ($0.burst + 2) / 3 })
        #expect(p.localShare(members: 1) == p && p.localShare(members: 0) == p)
        // Rounding that would break the burst-tolerance rule falls back to burst = rate.
        let edge = LimitPolicy(algorithm: .gcra, limits: [LimitSpec(rate: 1, periodMs: LimitPolicy.maximumPeriodMs, burst: 10)])
        #expect(edge.validate().isEmpty)
        let edgeShare = edge.localShare(members: 2)
        #expect(edgeShare.validate().isEmpty)
        let sliding = LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 10, periodMs: 1_000)])
        #expect(sliding.localShare(members: 4).limits == [LimitSpec(rate: 3, periodMs: 1_000)])
        #expect(sliding.localShare(members: 4).validate().isEmpty)
    }

    @Test("health: thresholds, since, recovery")
    func health() {
        var health = SharedStateHealth()
        #expect(health.recordSuccess(now: .zero) == nil)
        #expect(health.recordFailure("timeout after 50 ms", now: .milliseconds(100)) == .degraded(reason: "timeout after 50 ms", at: .milliseconds(100)))
        #expect(health.status == .degraded(since: .milliseconds(100), reason: "timeout after 50 ms"))
        #expect(health.recordFailure("connection refused", now: .milliseconds(200)) == nil)
        #expect(health.degradedSince == .milliseconds(100))
        #expect(health.recordSuccess(now: .milliseconds(1_100)) == .recovered(at: .milliseconds(1_100), duration: .milliseconds(1_000)))
        #expect(!health.isDegraded && health.degradations == 1)

        var strict = SharedStateHealth(failureThreshold: 3, recoveryThreshold: 2)
        #expect(strict.recordFailure("a", now: .zero) == nil)
        #expect(strict.recordFailure("b", now: .zero) == nil)
        #expect(strict.recordSuccess(now: .zero) == nil)  // resets the failure count
        #expect(strict.recordFailure("c", now: .milliseconds(1)) == nil)
        #expect(strict.recordFailure("d", now: .milliseconds(2)) == nil)
        #expect(strict.recordFailure("e", now: .milliseconds(3)) == .degraded(reason: "e", at: .milliseconds(3)))
        #expect(strict.recordSuccess(now: .milliseconds(4)) == nil)
        #expect(strict.recordFailure("f", now: .milliseconds(5)) == nil)
        #expect(strict.recordSuccess(now: .milliseconds(6)) == nil)
        #expect(strict.recordSuccess(now: .milliseconds(7)) == .recovered(at: .milliseconds(7), duration: .milliseconds(4)))
        #expect(strict.consecutiveSuccesses == 2 && strict.consecutiveFailures == 0)
    }
}
