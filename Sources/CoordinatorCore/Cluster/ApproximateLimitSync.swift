/// One counter to push to (and read back from) Redis in an approximate-mode sync:
/// `INCRBY {policy}:{key}:{limitIndex}:{window} amount` (with a TTL of two periods), returning the
/// cluster total of that window, and `GET` of the window before it.
public struct LimitSyncItem: Sendable, Equatable, Hashable {
    /// The rate-limit key.
    public var key: String
    /// Index into the policy's limits.
    public var limitIndex: Int
    /// The fixed window index: ⌊redisMs / periodMs⌋ (windows aligned on the Redis epoch).
    public var window: Int64
    /// This node's consumption not yet counted in Redis (may be 0: a read of the cluster's count).
    public var amount: Int64

    /// Creates an item.
    public init(key: String, limitIndex: Int, window: Int64, amount: Int64) {
        self.key = key
        self.limitIndex = limitIndex
        self.window = window
        self.amount = amount
    }
}

/// Approximate-mode rate limiting: decisions are local, against this node's view of the cluster's
/// counts, and every `syncInterval` the node pushes its consumption and reads the cluster's totals.
///
/// Each limit is a sliding window counter (Cloudflare's estimate, the same arithmetic as the local
/// `sliding_window` algorithm) over fixed windows aligned on the Redis clock; GCRA policies are
/// approximated by their `rate` per `periodMs` (burst is not used). Per key and limit the view is:
/// the cluster totals of the current and previous windows as of the last sync, plus this node's
/// consumption since (pending, or sent and not yet acknowledged).
///
/// **Fair share between syncs.** Between two syncs a node does not see the other nodes' consumption,
/// so it admits at most its share of what the cluster had left at its last sync: with `nodes` live
/// members and `R` remaining in its view, at most ⌈R / nodes⌉ requests (cost units) that Redis has not
/// acknowledged yet. A burst on every node at once therefore consumes about the remaining capacity,
/// not `nodes ×` it; a request beyond the share is refused with a retry-after of one sync interval
/// (the share is renewed by the next sync).
///
/// **Overshoot bound.** Views are up to one sync interval old, and the share is rounded up, so the
/// cluster can admit more than the limit by at most ``overshootBound(nodes:limit:syncIntervalMs:)`` =
/// ⌈nodes × rate × syncInterval / period⌉ per window (the consumption the others could add during one
/// interval at the full rate), plus `nodes` for the rounding; `coordinator bench approximate` measures it.
/// A burst on a fresh key can exceed it once: the first node to sync after the burst sees only its own
/// share counted and takes a share of the stale remainder (2 nodes: measured 1.25 × the limit, i.e. the
/// remainder's share ¼ limit). Leasing capacity from Redis atomically would close that gap at the cost
/// of capacity idling in unused leases; it is not done.
public struct ApproximateLimitSync: Sendable {
    /// The policy's limits.
    public let limits: [LimitSpec]
    /// The most keys held.
    public let maximumKeys: Int
    /// Nanoseconds between syncs: the retry-after of a request refused for exceeding the node's share.
    let syncIntervalNanoseconds: Int64
    let compiled: [CompiledLimit]

    struct Counter: Sendable, Equatable {
        var window: Int64 = Int64.min
        var clusterCurrent: Int64 = 0
        var clusterPrevious: Int64 = 0
        /// This node's consumption not acknowledged by Redis, per window.
        var unsyncedCurrent: Int64 = 0
        var unsyncedPrevious: Int64 = 0
        /// The part of the unsynced consumption already sent.
        var inFlightCurrent: Int64 = 0
        var inFlightPrevious: Int64 = 0
        /// Checked since the last sync began (so the next sync refreshes its view).
        var touched = false

        mutating func roll(to index: Int64) {
            if index == window { return }
            if window != Int64.min && index == window &+ 1 {
                clusterPrevious = clusterCurrent
                unsyncedPrevious = unsyncedCurrent
                inFlightPrevious = inFlightCurrent
            } else {
                clusterPrevious = 0
                unsyncedPrevious = 0
                inFlightPrevious = 0
            }
            clusterCurrent = 0
            unsyncedCurrent = 0
            inFlightCurrent = 0
            window = index
        }

        var isIdle: Bool { unsyncedCurrent == 0 && unsyncedPrevious == 0 }
    }

    var entries: [String: [Counter]]

    /// Creates the sync state of a policy (which must be valid).
    public init(policy: LimitPolicy, maximumKeys: Int = 100_000) {
        precondition(policy.validate().isEmpty, "invalid rate-limit policy")
        precondition(maximumKeys > 0)
        self.limits = policy.limits
        self.maximumKeys = maximumKeys
        self.syncIntervalNanoseconds = Int64(max(1, policy.syncIntervalMs)) * 1_000_000
        self.compiled = policy.limits.map {
            CompiledLimit(LimitSpec(rate: $0.rate, periodMs: $0.periodMs, burst: $0.rate), algorithm: .slidingWindow)
        }
        self.entries = [:]
    }

    /// How many keys hold state.
    public var keyCount: Int { entries.count }

    /// ⌈nodes × rate × syncIntervalMs / periodMs⌉: the steady-state overshoot per window (see the type's
    /// documentation).
    public static func overshootBound(nodes: Int, limit: LimitSpec, syncIntervalMs: Int64) -> Int {
        guard nodes > 0, syncIntervalMs > 0, limit.periodMs > 0, limit.rate > 0 else { return 0 }
        let numerator = Int128(nodes) * Int128(limit.rate) * Int128(syncIntervalMs)
        let period = Int128(limit.periodMs)
        return Int(clamping: Int64(clamping: (numerator + period - 1) / period))
    }

    func windowIndex(_ limit: Int, redisMs: Int64) -> Int64 {
        floorQuotient(redisMs, Int64(limits[limit].periodMs))
    }

    /// Whether `key` has a local view (a first request of a key should read the cluster's counts first).
    public func hasState(forKey key: String) -> Bool { entries[key] != nil }

    /// The items that read `key`'s current cluster counts without adding anything (amount 0).
    public func readItems(forKey key: String, atRedisMs redisMs: Int64) -> [LimitSyncItem] {
        limits.indices.map { LimitSyncItem(key: key, limitIndex: $0, window: windowIndex($0, redisMs: redisMs), amount: 0) }
    }

    /// Decides a request of `cost` by `key` at Redis time `redisMs` against the local view, and counts
    /// it as pending when every limit allows (all or nothing, like ``RateLimiter``). `nodes` is the
    /// number of live cluster members: this node admits at most ⌈remaining / nodes⌉ between syncs.
    public mutating func check(key: String, cost: Int = 1, atRedisMs redisMs: Int64, nodes: Int = 1) -> RateDecision {
        var counters = entries[key] ?? Array(repeating: Counter(), count: limits.count)
        let now = Instant.milliseconds(redisMs)
        var best: LimitOutcome?
        var bestIndex = 0
        var allAllowed = true
        for index in counters.indices {
            counters[index].roll(to: windowIndex(index, redisMs: redisMs))
            let c = counters[index]
            let current = max(0, c.clusterCurrent &+ c.unsyncedCurrent)
            let previous = max(0, c.clusterPrevious &+ c.unsyncedPrevious)
            let slot = LimiterSlot.pack(
                window: c.window, current: min(current, Int64(UInt32.max)), previous: min(previous, Int64(UInt32.max)))
            var outcome = compiled[index].evaluate(slot, cost: cost, now: now)
            if current > Int64(UInt32.max) || previous > Int64(UInt32.max) { outcome.remaining = 0 }
            if outcome.allowed, nodes > 1, cost > 0 {
                // This node's share of what the cluster had left when it last heard from Redis.
                let clusterSlot = LimiterSlot.pack(
                    window: c.window, current: min(max(0, c.clusterCurrent), Int64(UInt32.max)),
                    previous: min(max(0, c.clusterPrevious), Int64(UInt32.max)))
                let clusterRemaining = max(0, compiled[index].evaluate(clusterSlot, cost: 0, now: now).remaining)
                let share = (clusterRemaining + Int64(nodes) - 1) / Int64(nodes)
                if max(0, c.unsyncedCurrent) + Int64(cost) > share {
                    outcome.allowed = false
                    outcome.remaining = 0
                    outcome.retryAfter = syncIntervalNanoseconds
                }
            }
            if let chosen = best {
                if outcome.allowed {
                    if allAllowed && (outcome.remaining < chosen.remaining
                        || (outcome.remaining == chosen.remaining && outcome.resetAfter > chosen.resetAfter))
                    {
                        best = outcome
                        bestIndex = index
                    }
                } else if allAllowed {
                    allAllowed = false
                    best = outcome
                    bestIndex = index
                } else if outcome.retryKey > chosen.retryKey {
                    best = outcome
                    bestIndex = index
                }
            } else {
                best = outcome
                allAllowed = outcome.allowed
            }
            counters[index].touched = true
        }
        if allAllowed && cost > 0 {
            for index in counters.indices { counters[index].unsyncedCurrent &+= Int64(cost) }
        }
        store(key, counters, redisMs: redisMs)
        let outcome = best!
        return RateDecision(
            allowed: allAllowed, limit: Int(compiled[bestIndex].capacity), remaining: Int(outcome.remaining),
            resetAfter: Span(nanoseconds: outcome.resetAfter),
            retryAfter: allAllowed ? .zero : (outcome.retryAfter < 0 ? nil : Span(nanoseconds: outcome.retryAfter)),
            bindingLimit: bestIndex)
    }

    mutating func store(_ key: String, _ counters: [Counter], redisMs: Int64) {
        if entries[key] == nil && entries.count >= maximumKeys {
            sweep(atRedisMs: redisMs)
            if entries.count >= maximumKeys {
                // Evict an idle key if any, else any key (its unsynced consumption is lost: documented).
                let victim = entries.first(where: { $0.value.allSatisfy(\.isIdle) })?.key ?? entries.keys.first
                if let victim { entries.removeValue(forKey: victim) }
            }
        }
        entries[key] = counters
    }

    /// Starts a sync at `redisMs`: every key-limit with unsent consumption, or checked since the last
    /// sync, yields an item; its amount is marked in flight. Send them all (pipelined), then call
    /// ``completeSync(_:clusterTotal:previousTotal:)`` per item, or ``failSync(_:)`` on error (the
    /// amounts are sent again next time).
    public mutating func beginSync(atRedisMs redisMs: Int64) -> [LimitSyncItem] {
        var items: [LimitSyncItem] = []
        for key in entries.keys.sorted() {
            var counters = entries[key]!
            for index in counters.indices {
                counters[index].roll(to: windowIndex(index, redisMs: redisMs))
                var c = counters[index]
                let previousAmount = c.unsyncedPrevious - c.inFlightPrevious
                if previousAmount > 0 {
                    items.append(LimitSyncItem(key: key, limitIndex: index, window: c.window &- 1, amount: previousAmount))
                    c.inFlightPrevious += previousAmount
                }
                let currentAmount = c.unsyncedCurrent - c.inFlightCurrent
                if currentAmount > 0 || c.touched {
                    items.append(LimitSyncItem(key: key, limitIndex: index, window: c.window, amount: max(0, currentAmount)))
                    c.inFlightCurrent += max(0, currentAmount)
                }
                c.touched = false
                counters[index] = c
            }
            entries[key] = counters
        }
        return items
    }

    /// Redis answered `item`: `clusterTotal` is the window's total after the increment (this node's
    /// amount included) and `previousTotal`, when read, the previous window's total. The local view
    /// moves to those totals and the amount leaves the unsynced consumption. Answers for windows the
    /// view has moved past are ignored.
    public mutating func completeSync(_ item: LimitSyncItem, clusterTotal: Int64, previousTotal: Int64? = nil) {
        guard var counters = entries[item.key], counters.indices.contains(item.limitIndex) else { return }
        var c = counters[item.limitIndex]
        if item.window == c.window {
            c.clusterCurrent = max(c.clusterCurrent, clusterTotal)
            c.unsyncedCurrent = max(0, c.unsyncedCurrent - item.amount)
            c.inFlightCurrent = max(0, c.inFlightCurrent - item.amount)
            if let previousTotal { c.clusterPrevious = max(c.clusterPrevious, previousTotal) }
        } else if item.window == c.window &- 1 {
            c.clusterPrevious = max(c.clusterPrevious, clusterTotal)
            c.unsyncedPrevious = max(0, c.unsyncedPrevious - item.amount)
            c.inFlightPrevious = max(0, c.inFlightPrevious - item.amount)
        } else {
            return
        }
        counters[item.limitIndex] = c
        entries[item.key] = counters
    }

    /// Redis did not answer `item`: its amount is pending again.
    public mutating func failSync(_ item: LimitSyncItem) {
        guard var counters = entries[item.key], counters.indices.contains(item.limitIndex) else { return }
        if item.window == counters[item.limitIndex].window {
            counters[item.limitIndex].inFlightCurrent = max(0, counters[item.limitIndex].inFlightCurrent - item.amount)
        } else if item.window == counters[item.limitIndex].window &- 1 {
            counters[item.limitIndex].inFlightPrevious = max(0, counters[item.limitIndex].inFlightPrevious - item.amount)
        }
        entries[item.key] = counters
    }

    /// This node's consumption of `key` under limit `limitIndex` not yet acknowledged, current window.
    public func unsynced(key: String, limitIndex: Int = 0) -> Int64 {
        entries[key].map { $0[limitIndex].unsyncedCurrent } ?? 0
    }

    /// Removes keys whose windows have all ended and that hold no unsynced consumption; returns how many.
    @discardableResult
    public mutating func sweep(atRedisMs redisMs: Int64) -> Int {
        let before = entries.count
        entries = entries.filter { _, counters in
            for index in counters.indices {
                let c = counters[index]
                if !c.isIdle { return true }
                let current = windowIndex(index, redisMs: redisMs)
                if c.window >= current &- 1 && (c.clusterCurrent > 0 || (c.window == current && c.clusterPrevious > 0)) {
                    return true
                }
            }
            return false
        }
        return before - entries.count
    }
}

/// Keys known to be over their limit, refused locally until their retry-after passes, without asking
/// Redis. Bounded (least recently used eviction); times on the node's monotonic clock.
///
/// Consult it only for positive-cost requests; cost-0 queries should see the real state.
public struct LocalRefusalCache: Sendable {
    struct Refusal: Sendable {
        var decision: RateDecision
        var until: Instant
    }

    var cache: LRUCache<String, Refusal>

    /// A cache of at most `capacity` keys.
    public init(capacity: Int = 100_000) {
        cache = LRUCache(capacity: capacity)
    }

    /// How many keys are held (expired ones included until looked up or removed).
    public var count: Int { cache.count }

    /// Remembers a refusal of `key` at `now` until `now + retryAfter`, if it has a positive, finite
    /// retry-after (a request that can never pass, `retryAfter == nil`, is about its cost, not the key,
    /// and is not cached).
    public mutating func remember(key: String, decision: RateDecision, now: Instant) {
        guard !decision.allowed, let retry = decision.retryAfter, retry > .zero else { return }
        let until = now + retry
        cache.set(Refusal(decision: decision, until: until), forKey: key, expiresAt: until)
    }

    /// The cached refusal of `key` at `now`, its retry-after counted down (and reset-after at least
    /// that), remaining 0; nil when none is live.
    public mutating func refusal(key: String, now: Instant) -> RateDecision? {
        guard let refusal = cache.value(forKey: key, now: now) else { return nil }
        var decision = refusal.decision
        let left = refusal.until - now
        let elapsed = (refusal.decision.retryAfter ?? left) - left
        decision.retryAfter = left
        decision.resetAfter = max(left, refusal.decision.resetAfter - elapsed)
        decision.remaining = 0
        return decision
    }

    /// Forgets `key` (e.g. its policy changed or it was reset).
    public mutating func forget(key: String) { _ = cache.removeValue(forKey: key) }

    /// Forgets every key.
    public mutating func removeAll() { cache.removeAll() }

    /// Drops expired entries; returns how many.
    @discardableResult
    public mutating func removeExpired(now: Instant) -> Int { cache.removeExpired(now: now) }
}
