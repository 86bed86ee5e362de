/// The answer to one rate-limit check.
public struct RateDecision: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Whether the request passes (and, if its cost is positive, was counted against every limit).
    public var allowed: Bool
    /// The capacity of the binding limit: `burst` for GCRA, `rate` for the sliding window.
    public var limit: Int
    /// How many more unit-cost requests the binding limit would allow right now.
    public var remaining: Int
    /// Time until the binding limit is fully replenished (zero when it already is).
    public var resetAfter: Span
    /// Zero when allowed; otherwise the time after which this same request would be allowed if
    /// nothing else happened meanwhile (rounded up to the nanosecond), or `nil` when it can never
    /// pass because its cost exceeds a limit's capacity (or is negative).
    public var retryAfter: Span?
    /// Index into the policy's `limits` of the limit the numbers describe: for an allowed request
    /// the limit with the fewest remaining (ties: longest `resetAfter`, then lowest index); for a
    /// refusal the refusing limit with the longest `retryAfter` (`nil` counts as longest; ties:
    /// lowest index).
    public var bindingLimit: Int

    /// Creates a decision.
    @inlinable
    public init(allowed: Bool, limit: Int, remaining: Int, resetAfter: Span, retryAfter: Span?, bindingLimit: Int) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.resetAfter = resetAfter
        self.retryAfter = retryAfter
        self.bindingLimit = bindingLimit
    }

    public var description: String {
        let retry = retryAfter.map { "\($0)" } ?? "never"
        return "\(allowed ? "allowed" : "refused") limit=\(limit) remaining=\(remaining) "
            + "resetAfter=\(resetAfter) retryAfter=\(retry) binding=\(bindingLimit)"
    }
}
