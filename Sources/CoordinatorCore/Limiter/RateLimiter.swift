/// The rate limiter of one policy: per-key state for every limit of the policy, in memory.
///
/// A value type with no locking: the owner (an actor, a mutex-protected box, one shard per
/// core...) serialises access. It never reads a clock; every call takes `now`, which should be
/// monotonic (non-decreasing) for a given limiter. If `now` goes backwards nothing breaks: GCRA
/// treats the key as more in debt, the sliding window treats a request in an older window as
/// belonging to a fresh window.
///
/// Keys are not validated here (use `RateLimitKey.isValid` at the edge). A key is only stored
/// once a positive-cost request for it passes, so refused requests and cost-0 queries for unknown
/// keys allocate nothing; `sweep(now:)` drops keys that have become equivalent to fresh ones.
public struct RateLimiter: Sendable {
    /// The policy in force.
    public private(set) var policy: LimitPolicy
    @usableFromInline var limits: ContiguousArray<CompiledLimit>
    @usableFromInline var entries: [String: Entry]

    /// Per-key state: one 128-bit slot per limit; the first two inline, more in an array.
    @usableFromInline
    struct Entry: Sendable {
        @usableFromInline var slot0: Int128
        @usableFromInline var slot1: Int128
        @usableFromInline var more: ContiguousArray<Int128>

        @inlinable
        init(limitCount: Int) {
            slot0 = LimiterSlot.fresh
            slot1 = LimiterSlot.fresh
            more = limitCount > 2 ? ContiguousArray(repeating: LimiterSlot.fresh, count: limitCount - 2) : []
        }

        @inlinable
        subscript(index: Int) -> Int128 {
            get {
                switch index {
                case 0: return slot0
                case 1: return slot1
                default: return more[index - 2]
                }
            }
            set {
                switch index {
                case 0: slot0 = newValue
                case 1: slot1 = newValue
                default: more[index - 2] = newValue
                }
            }
        }
    }

    /// Creates a limiter for `policy`, which must be valid (`policy.validate()` empty).
    public init(policy: LimitPolicy) {
        precondition(policy.validate().isEmpty, "invalid rate-limit policy: \(policy.validate())")
        self.policy = policy
        self.limits = ContiguousArray(policy.limits.map { CompiledLimit($0, algorithm: policy.algorithm) })
        self.entries = [:]
    }

    /// How many keys hold state.
    public var keyCount: Int { entries.count }

    /// Whether `key` holds state (a check on it would not add a key).
    public func hasState(forKey key: String) -> Bool { entries[key] != nil }

    /// Checks a request of `cost` units by `key` at `now`, all or nothing: every limit is
    /// evaluated, and only if all allow is the cost counted against every one of them; otherwise
    /// nothing changes. Cost 0 is a query that consumes nothing. A negative cost is refused with
    /// `retryAfter == nil` and changes nothing.
    @inlinable
    public mutating func check(key: String, cost: Int = 1, now: Instant) -> RateDecision {
        if let index = entries.index(forKey: key) {
            return Self.apply(limits, to: &entries.values[index], cost: cost, now: now)
        }
        var entry = Entry(limitCount: limits.count)
        let decision = Self.apply(limits, to: &entry, cost: cost, now: now)
        if decision.allowed && cost > 0 { entries[key] = entry }
        return decision
    }

    @inlinable
    static func apply(
        _ limits: ContiguousArray<CompiledLimit>, to entry: inout Entry, cost: Int, now: Instant
    ) -> RateDecision {
        let first = limits[0].evaluate(entry.slot0, cost: cost, now: now)
        if limits.count == 1 {
            if first.allowed && cost > 0 { entry.slot0 = first.newSlot }
            return decision(first, allowed: first.allowed, index: 0, limits: limits)
        }
        var best = first
        var bestIndex = 0
        var allAllowed = first.allowed
        var second = LimiterSlot.fresh
        for index in 1..<limits.count {
            let outcome = limits[index].evaluate(entry[index], cost: cost, now: now)
            if index == 1 { second = outcome.newSlot }
            if outcome.allowed {
                if allAllowed
                    && (outcome.remaining < best.remaining
                        || (outcome.remaining == best.remaining && outcome.resetAfter > best.resetAfter))
                {
                    best = outcome
                    bestIndex = index
                }
            } else if allAllowed {
                allAllowed = false
                best = outcome
                bestIndex = index
            } else if outcome.retryKey > best.retryKey {
                best = outcome
                bestIndex = index
            }
        }
        if allAllowed && cost > 0 {
            entry.slot0 = first.newSlot
            entry.slot1 = second
            var index = 2
            while index < limits.count {
                entry.more[index - 2] = limits[index].evaluate(entry.more[index - 2], cost: cost, now: now).newSlot
                index += 1
            }
        }
        return decision(best, allowed: allAllowed, index: bestIndex, limits: limits)
    }

    @inlinable
    static func decision(
        _ outcome: LimitOutcome, allowed: Bool, index: Int, limits: ContiguousArray<CompiledLimit>
    ) -> RateDecision {
        RateDecision(
            allowed: allowed,
            limit: Int(limits[index].capacity),
            remaining: Int(outcome.remaining),
            resetAfter: Span(nanoseconds: outcome.resetAfter),
            retryAfter: allowed ? .zero : (outcome.retryAfter < 0 ? nil : Span(nanoseconds: outcome.retryAfter)),
            bindingLimit: index)
    }

    /// Removes every key whose state is equivalent to a fresh key's at `now` (GCRA: TAT ≤ now
    /// for every limit; sliding window: both windows empty or expired) and returns how many.
    /// O(keys); call it periodically.
    public mutating func sweep(now: Instant) -> Int {
        let before = entries.count
        let limits = self.limits
        entries = entries.filter { _, entry in
            for index in limits.indices where !limits[index].isFresh(entry[index], now: now) { return true }
            return false
        }
        return before - entries.count
    }

    /// Forgets `key`'s state, as if it had never been seen.
    public mutating func reset(key: String) {
        entries.removeValue(forKey: key)
    }

    /// Forgets every key.
    public mutating func resetAll() {
        entries.removeAll()
    }

    /// Switches to `policy` (which must be valid). Keys keep their state when the algorithm and
    /// the number of limits are unchanged, limit by limit in order: a GCRA limit keeps each key's
    /// TAT as an instant (its debt in time, so a higher rate frees it sooner in requests); a
    /// sliding-window limit keeps its counts if its period is unchanged and starts fresh
    /// otherwise. A different algorithm or number of limits resets every key.
    public mutating func replacePolicy(_ policy: LimitPolicy) {
        precondition(policy.validate().isEmpty, "invalid rate-limit policy: \(policy.validate())")
        let replacement = ContiguousArray(policy.limits.map { CompiledLimit($0, algorithm: policy.algorithm) })
        let old = limits
        self.policy = policy
        limits = replacement
        guard old.count == replacement.count, old.first?.isGCRA == replacement.first?.isGCRA else {
            entries.removeAll()
            return
        }
        let changed = old.indices.contains { index in
            let before = old[index]
            let after = replacement[index]
            return before.isGCRA ? before.rate != after.rate : before.period != after.period
        }
        guard changed else { return }
        entries = entries.mapValues { entry in
            var entry = entry
            for index in old.indices { entry[index] = old[index].carry(entry[index], to: replacement[index]) }
            return entry
        }
    }
}
