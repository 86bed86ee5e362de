import CoordinatorCore

/// SplitMix64: a tiny seeded generator, so randomized tests replay identically everywhere.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `value` milliseconds after the origin.
func atMs(_ value: Int64) -> Instant { .milliseconds(value) }

/// `value` nanoseconds after the origin.
func atNs(_ value: Int64) -> Instant { Instant(nanoseconds: value) }

/// A decision spelled out, spans in nanoseconds (`retry: nil` = never).
func decisionNs(
    _ allowed: Bool, limit: Int, remaining: Int, resetNs: Int64, retryNs: Int64?, binding: Int = 0
) -> RateDecision {
    RateDecision(
        allowed: allowed, limit: limit, remaining: remaining, resetAfter: Span(nanoseconds: resetNs),
        retryAfter: retryNs.map { Span(nanoseconds: $0) }, bindingLimit: binding)
}

/// An allowed decision; spans in milliseconds.
func allowedMs(limit: Int, remaining: Int, resetMs: Int64, binding: Int = 0) -> RateDecision {
    decisionNs(true, limit: limit, remaining: remaining, resetNs: resetMs * 1_000_000, retryNs: 0, binding: binding)
}

/// A refused decision; spans in milliseconds (`retryMs: nil` = never).
func refusedMs(limit: Int, remaining: Int, resetMs: Int64, retryMs: Int64?, binding: Int = 0) -> RateDecision {
    decisionNs(
        false, limit: limit, remaining: remaining, resetNs: resetMs * 1_000_000, retryNs: retryMs.map { $0 * 1_000_000 },
        binding: binding)
}

/// Checks, on copies, that a refused request with `retryAfter` r passes at now + r and not at
/// now + r − 1 ns. Returns a description of what failed, or nil.
func retryExactnessProblem(_ limiter: RateLimiter, key: String, cost: Int, now: Instant, decision: RateDecision) -> String? {
    guard !decision.allowed, let retry = decision.retryAfter else { return nil }
    if retry.nanoseconds <= 0 { return "refused with retryAfter \(retry)" }
    var early = limiter
    let before = early.check(key: key, cost: cost, now: now + Span(nanoseconds: retry.nanoseconds - 1))
    if before.allowed { return "allowed 1 ns before retryAfter \(retry) (\(decision))" }
    var onTime = limiter
    let at = onTime.check(key: key, cost: cost, now: now + retry)
    if !at.allowed { return "refused at retryAfter \(retry): \(at)" }
    return nil
}
