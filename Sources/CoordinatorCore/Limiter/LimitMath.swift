// The per-limit arithmetic of both algorithms. Everything is exact integer math.
//
// GCRA keeps, per key and limit, the theoretical arrival time (TAT) in *ticks*: nanoseconds × rate.
// In ticks the emission interval T = period / rate is exactly `period` (in ns), so no rounding ever
// accumulates however the rate divides the period. Ticks need 128 bits (ns since origin × 1e9).
//
// The sliding window keeps the index of the current fixed window (aligned to multiples of the
// period since the clock's origin) and the counts of that window and the one before it, packed in
// the same 128-bit slot. Its estimate prev × (period − elapsed) / period + curr is compared after
// multiplying through by `period`, so it is exact too.

/// One limit of a policy, with everything the hot path needs precomputed.
@usableFromInline
struct CompiledLimit: Sendable, Equatable {
    /// `true` for GCRA, `false` for the sliding window.
    @usableFromInline let isGCRA: Bool
    /// Requests per period.
    @usableFromInline let rate: Int64
    /// The period in nanoseconds.
    @usableFromInline let period: Int64
    /// GCRA burst.
    @usableFromInline let burst: Int64
    /// What a decision reports as `limit`: burst (GCRA) or rate (sliding window).
    @usableFromInline let capacity: Int64
    /// GCRA tolerance burst × T, in ticks: burst × period.
    @usableFromInline let tolerance: Int128

    @usableFromInline
    init(_ spec: LimitSpec, algorithm: LimitAlgorithm) {
        isGCRA = algorithm == .gcra
        rate = Int64(spec.rate)
        period = Int64(spec.periodMs) * 1_000_000
        burst = Int64(isGCRA ? spec.burst : spec.rate)
        capacity = isGCRA ? burst : rate
        tolerance = Int128(burst) * Int128(period)
    }
}

/// The state of a key under one limit. `fresh` (Int128.min) is a key never seen: for GCRA a TAT
/// before any instant, for the sliding window window index Int64.min with zero counts.
@usableFromInline
enum LimiterSlot {
    @usableFromInline static let fresh = Int128.min

    @inlinable static func window(_ slot: Int128) -> Int64 { Int64(truncatingIfNeeded: slot >> 64) }
    @inlinable static func current(_ slot: Int128) -> Int64 { Int64(UInt64(truncatingIfNeeded: slot) & 0xFFFF_FFFF) }
    @inlinable static func previous(_ slot: Int128) -> Int64 { Int64(UInt64(truncatingIfNeeded: slot) >> 32) }

    @inlinable
    static func pack(window: Int64, current: Int64, previous: Int64) -> Int128 {
        let low = UInt64(UInt32(truncatingIfNeeded: current)) | (UInt64(UInt32(truncatingIfNeeded: previous)) << 32)
        return (Int128(window) << 64) | Int128(low)
    }
}

/// What one limit says about one request.
@usableFromInline
struct LimitOutcome {
    @usableFromInline var allowed: Bool
    /// The slot to store if every limit allows.
    @usableFromInline var newSlot: Int128
    @usableFromInline var remaining: Int64
    /// Nanoseconds.
    @usableFromInline var resetAfter: Int64
    /// Nanoseconds; 0 when allowed; -1 when never.
    @usableFromInline var retryAfter: Int64

    @inlinable
    init(allowed: Bool, newSlot: Int128, remaining: Int64, resetAfter: Int64, retryAfter: Int64) {
        self.allowed = allowed
        self.newSlot = newSlot
        self.remaining = remaining
        self.resetAfter = resetAfter
        self.retryAfter = retryAfter
    }

    /// `retryAfter` as an ordering key: never is longest.
    @inlinable var retryKey: Int64 { retryAfter < 0 ? Int64.max : retryAfter }
}

/// x / d rounded down, for x ≥ 0 and d > 0; fast when x fits in 64 bits.
@inlinable
func nonNegativeQuotient(_ x: Int128, _ d: Int64) -> Int128 {
    if x <= Int128(Int64.max) { return Int128(Int64(truncatingIfNeeded: x) / d) }
    return x / Int128(d)
}

/// x / d rounded up, for x ≥ 0 and d > 0.
@inlinable
func nonNegativeCeilingQuotient(_ x: Int128, _ d: Int64) -> Int128 {
    if x <= 0 { return 0 }
    return nonNegativeQuotient(x - 1, d) + 1
}

/// x / d rounded toward negative infinity, d > 0.
@inlinable
func floorQuotient(_ x: Int64, _ d: Int64) -> Int64 {
    let q = x / d
    return (x % d != 0 && x < 0) ? q - 1 : q
}

/// x / d rounded toward negative infinity, d > 0.
@inlinable
func floorQuotient(_ x: Int128, _ d: Int128) -> Int128 {
    let q = x / d
    return (x % d != 0 && x < 0) ? q - 1 : q
}

/// Clamps to Int64 (only reachable with policies that fail validation).
@inlinable
func saturatingInt64(_ x: Int128) -> Int64 {
    x > Int128(Int64.max) ? Int64.max : (x < Int128(Int64.min) ? Int64.min : Int64(truncatingIfNeeded: x))
}

extension CompiledLimit {
    /// Evaluates a request of `cost` against `slot` at `now` without changing anything.
    @inlinable
    func evaluate(_ slot: Int128, cost: Int, now: Instant) -> LimitOutcome {
        isGCRA ? evaluateGCRA(slot, cost: cost, now: now) : evaluateSlidingWindow(slot, cost: cost, now: now)
    }

    @inlinable
    func evaluateGCRA(_ tat: Int128, cost: Int, now: Instant) -> LimitOutcome {
        let nowTicks = Int128(now.nanoseconds) * Int128(rate)
        let base = tat > nowTicks ? tat : nowTicks
        let used = base - nowTicks  // ticks of tolerance already used, ≥ 0
        if cost < 0 || Int64(cost) > burst {
            return LimitOutcome(
                allowed: false, newSlot: tat, remaining: gcraRemaining(used),
                resetAfter: saturatingInt64(nonNegativeCeilingQuotient(used, rate)), retryAfter: -1)
        }
        let after = used + Int128(cost) * Int128(period)
        if after <= tolerance {
            return LimitOutcome(
                allowed: true, newSlot: base + Int128(cost) * Int128(period),
                remaining: gcraRemaining(after),
                resetAfter: saturatingInt64(nonNegativeCeilingQuotient(after, rate)), retryAfter: 0)
        }
        return LimitOutcome(
            allowed: false, newSlot: tat, remaining: gcraRemaining(used),
            resetAfter: saturatingInt64(nonNegativeCeilingQuotient(used, rate)),
            retryAfter: saturatingInt64(nonNegativeCeilingQuotient(after - tolerance, rate)))
    }

    /// floor((tolerance − used) / T), never negative.
    @inlinable
    func gcraRemaining(_ used: Int128) -> Int64 {
        let left = tolerance - used
        if left <= 0 { return 0 }
        return Int64(truncatingIfNeeded: nonNegativeQuotient(left, period))
    }

    @inlinable
    func evaluateSlidingWindow(_ slot: Int128, cost: Int, now: Instant) -> LimitOutcome {
        let index = floorQuotient(now.nanoseconds, period)
        let elapsed = now.nanoseconds &- index &* period  // 0 ..< period
        let window = LimiterSlot.window(slot)
        var current: Int64 = 0
        var previous: Int64 = 0
        if window == index {
            current = LimiterSlot.current(slot)
            previous = LimiterSlot.previous(slot)
        } else if window == index &- 1 {
            previous = LimiterSlot.current(slot)
        }
        // The previous window's weight × period.
        let weighted = Int128(previous) * Int128(period &- elapsed)
        if cost < 0 || Int64(cost) > rate {
            return slidingOutcome(
                allowed: false, slot: slot, current: current, previous: previous, weighted: weighted,
                elapsed: elapsed, retryAfter: -1)
        }
        let counted = current + Int64(cost)
        let capacityTimesPeriod = Int128(rate) * Int128(period)
        if weighted + Int128(counted) * Int128(period) <= capacityTimesPeriod {
            return slidingOutcome(
                allowed: true, slot: LimiterSlot.pack(window: index, current: counted, previous: previous),
                current: counted, previous: previous, weighted: weighted, elapsed: elapsed, retryAfter: 0)
        }
        // Smallest wait after which it passes. Within this window (elapsed e' ≥ elapsed) it needs
        // previous × (period − e') ≤ (rate − current − cost) × period.
        var retry: Int64 = -1
        let spare = rate - current - Int64(cost)
        if spare >= 0 && previous > 0 {
            let allowance = floorQuotient(Int128(spare) * Int128(period), Int128(previous))
            let needed = Int128(period) - allowance  // first elapsed at which it passes, > elapsed
            if needed < Int128(period) { retry = Int64(truncatingIfNeeded: needed) - elapsed }
        }
        if retry < 0 {
            // In the next window the current count becomes the previous one and decays:
            // current × (period − e') ≤ (rate − cost) × period. e' = period means the window after.
            var needed: Int64 = 0
            if current > 0 {
                let allowance = floorQuotient(Int128(rate - Int64(cost)) * Int128(period), Int128(current))
                needed = allowance >= Int128(period) ? 0 : period - Int64(truncatingIfNeeded: allowance)
            }
            retry = (period - elapsed) + needed
        }
        return slidingOutcome(
            allowed: false, slot: slot, current: current, previous: previous, weighted: weighted,
            elapsed: elapsed, retryAfter: retry)
    }

    @inlinable
    func slidingOutcome(
        allowed: Bool, slot: Int128, current: Int64, previous: Int64, weighted: Int128, elapsed: Int64,
        retryAfter: Int64
    ) -> LimitOutcome {
        // remaining = floor(rate − estimate) = rate − current − ceil(weighted / period).
        let remaining = rate - current - Int64(truncatingIfNeeded: nonNegativeCeilingQuotient(weighted, period))
        let resetAfter: Int64
        if current > 0 {
            resetAfter = 2 * period - elapsed
        } else if previous > 0 {
            resetAfter = period - elapsed
        } else {
            resetAfter = 0
        }
        return LimitOutcome(
            allowed: allowed, newSlot: slot, remaining: max(0, remaining), resetAfter: resetAfter,
            retryAfter: retryAfter)
    }

    /// Whether `slot` behaves exactly like a fresh key at `now` (and at any later instant).
    @inlinable
    func isFresh(_ slot: Int128, now: Instant) -> Bool {
        if slot == LimiterSlot.fresh { return true }
        if isGCRA { return slot <= Int128(now.nanoseconds) * Int128(rate) }
        let index = floorQuotient(now.nanoseconds, period)
        let window = LimiterSlot.window(slot)
        if window == index {
            return LimiterSlot.current(slot) == 0 && LimiterSlot.previous(slot) == 0
        }
        if window == index &- 1 { return LimiterSlot.current(slot) == 0 }
        return window < index
    }

    /// `slot`, kept under this limit, carried over to `replacement` (same algorithm): GCRA keeps
    /// the TAT as an instant (debt measured in time); the sliding window keeps its counts if the
    /// period is unchanged and starts fresh otherwise.
    @usableFromInline
    func carry(_ slot: Int128, to replacement: CompiledLimit) -> Int128 {
        if slot == LimiterSlot.fresh { return slot }
        if isGCRA {
            if rate == replacement.rate { return slot }
            let nanoseconds = floorQuotient(slot, Int128(rate))
            return nanoseconds * Int128(replacement.rate)
        }
        return period == replacement.period ? slot : LimiterSlot.fresh
    }
}
