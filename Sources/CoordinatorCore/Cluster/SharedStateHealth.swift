/// What a node does with rate limits while the shared state (Redis) is unreachable.
public enum SharedStateLossMode: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// Each node enforces ⌈limit / members⌉ locally, members counted from the last known membership
    /// (the default).
    case localShare
    /// Every request passes.
    case allow
    /// Every request is refused.
    case deny

    /// `localShare`.
    public static let `default` = SharedStateLossMode.localShare

    public var description: String { rawValue }

    /// Parses `localShare`, `allow` or `deny` (exactly), or throws a ``ValidationError`` for `key`.
    public static func parse(_ text: String, key: String = "onSharedStateLoss") throws(ValidationError) -> SharedStateLossMode {
        guard let mode = SharedStateLossMode(rawValue: text) else {
            throw ValidationError(key: key, reason: "must be \"localShare\", \"allow\" or \"deny\", got \"\(text)\"")
        }
        return mode
    }

    /// How a limiter call is decided while degraded, given the member count to divide limits by
    /// (``MembershipView/shareDivisor(atRedisMs:)``).
    public func limiterDecision(shareDivisor: Int) -> DegradedLimitDecision {
        switch self {
        case .localShare: .enforceLocalShare(members: max(1, shareDivisor))
        case .allow: .allow
        case .deny: .deny
        }
    }
}

/// How a rate-limit call is decided while shared state is lost.
public enum DegradedLimitDecision: Sendable, Equatable, Hashable {
    /// Check a local limiter whose policy is ``LimitPolicy/localShare(members:)`` of the shared one.
    case enforceLocalShare(members: Int)
    /// Allow without counting: ``allowedDecision(policy:)``.
    case allow
    /// Refuse: ``deniedDecision(policy:retryAfter:)``.
    case deny

    /// The answer for `allow`: allowed, the first limit's capacity remaining.
    public static func allowedDecision(policy: LimitPolicy) -> RateDecision {
        let capacity = capacity(policy)
        return RateDecision(allowed: true, limit: capacity, remaining: capacity, resetAfter: .zero, retryAfter: .zero, bindingLimit: 0)
    }

    /// The answer for `deny`: refused, nothing remaining, retry after `retryAfter` (the node's
    /// reconnect interval is a good value).
    public static func deniedDecision(policy: LimitPolicy, retryAfter: Span) -> RateDecision {
        RateDecision(
            allowed: false, limit: capacity(policy), remaining: 0, resetAfter: retryAfter, retryAfter: retryAfter,
            bindingLimit: 0)
    }

    static func capacity(_ policy: LimitPolicy) -> Int {
        guard let first = policy.limits.first else { return 0 }
        return policy.algorithm == .gcra ? first.burst : first.rate
    }
}

extension LimitPolicy {
    /// This policy with every limit's rate and burst divided by `members`, rounded up
    /// (⌈rate / n⌉, ⌈burst / n⌉; periods unchanged): the share one node enforces alone. If rounding
    /// would break a validation rule (the GCRA burst tolerance), that limit's burst becomes its rate.
    /// `members` ≤ 1 returns the policy unchanged.
    public func localShare(members: Int) -> LimitPolicy {
        guard members > 1 else { return self }
        var scaled = self
        scaled.limits = limits.map { limit in
            LimitSpec(
                rate: MembershipView.localShare(of: limit.rate, liveMembers: members), periodMs: limit.periodMs,
                burst: MembershipView.localShare(of: limit.burst, liveMembers: members))
        }
        if scaled.validate().isEmpty { return scaled }
        for index in scaled.limits.indices { scaled.limits[index].burst = scaled.limits[index].rate }
        return scaled.validate().isEmpty ? scaled : self
    }
}

/// Whether the shared state is usable, as seen from the outcomes of the node's Redis calls.
public enum SharedStateStatus: Sendable, Equatable, Hashable {
    /// Shared mode.
    case ok
    /// Degraded local mode since `since`, because of `reason` (the failure that crossed the threshold).
    case degraded(since: Instant, reason: String)
}

/// A change of ``SharedStateStatus``, to log and export.
public enum SharedStateHealthChange: Sendable, Equatable, Hashable {
    /// ok → degraded.
    case degraded(reason: String, at: Instant)
    /// degraded → ok after `duration`.
    case recovered(at: Instant, duration: Span)
}

/// ok / degraded transitions from the outcomes of shared-state calls.
///
/// `failureThreshold` consecutive failures degrade (default 1, so a Redis stop is noticed by the first
/// call that misses its deadline); `recoveryThreshold` consecutive successes recover (default 1).
/// A success resets the failure count and a failure the success count.
public struct SharedStateHealth: Sendable, Equatable {
    /// Consecutive failures that degrade.
    public let failureThreshold: Int
    /// Consecutive successes that recover.
    public let recoveryThreshold: Int
    /// The current status.
    public private(set) var status: SharedStateStatus
    /// Failures since the last success.
    public private(set) var consecutiveFailures: Int
    /// Successes since the last failure.
    public private(set) var consecutiveSuccesses: Int
    /// Times the state degraded (monotonic).
    public private(set) var degradations: UInt64

    /// Starts `ok`.
    public init(failureThreshold: Int = 1, recoveryThreshold: Int = 1) {
        precondition(failureThreshold >= 1 && recoveryThreshold >= 1)
        self.failureThreshold = failureThreshold
        self.recoveryThreshold = recoveryThreshold
        self.status = .ok
        self.consecutiveFailures = 0
        self.consecutiveSuccesses = 0
        self.degradations = 0
    }

    /// Whether degraded.
    public var isDegraded: Bool { status != .ok }

    /// Since when degraded (nil when ok).
    public var degradedSince: Instant? {
        if case .degraded(let since, _) = status { return since }
        return nil
    }

    /// A shared-state call succeeded at `now`.
    public mutating func recordSuccess(now: Instant) -> SharedStateHealthChange? {
        consecutiveFailures = 0
        consecutiveSuccesses &+= 1
        guard case .degraded(let since, _) = status, consecutiveSuccesses >= recoveryThreshold else { return nil }
        status = .ok
        return .recovered(at: now, duration: now - since)
    }

    /// A shared-state call failed at `now` because of `reason` (e.g. "timeout after 50 ms").
    public mutating func recordFailure(_ reason: String, now: Instant) -> SharedStateHealthChange? {
        consecutiveSuccesses = 0
        consecutiveFailures &+= 1
        guard status == .ok, consecutiveFailures >= failureThreshold else { return nil }
        status = .degraded(since: now, reason: reason)
        degradations &+= 1
        return .degraded(reason: reason, at: now)
    }
}
