import CoordinatorCore

/// The outcome of a rate-limit check.
public struct LimitCheckResult: Sendable, Equatable {
    /// The policy that was applied.
    public var policy: String
    /// The limiter's decision.
    public var decision: RateDecision
    /// The policy's algorithm and limits, for `RateLimit-Policy` headers.
    public var algorithm: LimitAlgorithm
    public var limits: [LimitSpec]
}

/// The answer to a breaker acquire.
public struct BreakerAcquireResult: Sendable, Equatable {
    public var breaker: String
    /// Whether the call may proceed.
    public var permitted: Bool
    /// The permit to pass to `record`, when permitted.
    public var permitID: String?
    /// The breaker's state after the acquire.
    public var state: BreakerState
    /// When refused: how long until the breaker lets a probe through (`nil` when unknown, e.g. forced open).
    public var retryAfter: Span?
}

/// A breaker as reported by the API.
public struct BreakerStatus: Sendable, Equatable {
    public var name: String
    public var snapshot: BreakerSnapshot
    /// Outstanding permits not yet recorded.
    public var outstandingPermits: Int
    /// How state is shared with other nodes; always `local` in pilot mode.
    public var sharing: String
}

/// Why a token was refused.
public enum TokenRefusal: String, Sendable, Equatable, Codable {
    case unknown
    case revoked
    case expired
}

/// The outcome of a token verification.
public enum TokenVerification: Sendable, Equatable {
    case valid(TokenRecord)
    case invalid(TokenRefusal)
}

/// A token as created: the secret is shown once here and never again.
public struct CreatedToken: Sendable, Equatable {
    public var token: TokenRecord
    public var secret: String
}

/// Which gate refused an admit.
public enum AdmitGate: String, Sendable, Equatable {
    case token
    case rateLimit = "rate_limit"
    case breaker
}

/// The outcome of `admit`: the one call a gateway makes per request.
public struct AdmitResult: Sendable, Equatable {
    /// `true` when every gate let the request through.
    public var allowed: Bool
    /// The gate that refused, when refused.
    public var refusedBy: AdmitGate?
    /// Why the token was refused, when it was.
    public var tokenRefusal: TokenRefusal?
    /// The verified token (without secret), when valid.
    public var token: TokenRecord?
    /// The rate-limit check, when it ran.
    public var limit: LimitCheckResult?
    /// The breaker acquire, when a breaker was named and the request got that far.
    public var breaker: BreakerAcquireResult?
}

/// What `/v1/cluster` reports.
public struct ClusterInfo: Sendable, Equatable {
    public var nodeID: String
    public var mode: String
    public var version: String
    public var startedAtMilliseconds: Int64
    public var backends: [BackendStatus]
    /// Live members (this node included), with the age of their last heartbeat.
    public var members: [ClusterMember]
    /// Shared features running in degraded local mode.
    public var degraded: [DegradedFeature]
    /// The PostgreSQL hosts as this node's router sees them (`nil` with the SQLite store).
    public var postgres: TopologySnapshot? = nil
}

/// A live member of the cluster.
public struct ClusterMember: Sendable, Equatable {
    public var nodeID: String
    public var isSelf: Bool
    /// Age of the last heartbeat by Redis's clock; `nil` when not yet heard.
    public var heartbeatAgeMilliseconds: Int64?
}

/// A shared feature that runs in degraded local mode.
public struct DegradedFeature: Sendable, Equatable {
    /// `limits`.
    public var feature: String
    /// `localShare`, `allow` or `deny`.
    public var mode: String
    public var sinceMilliseconds: Int64
    public var reason: String
    /// The member count limits are divided by.
    public var shareDivisor: Int
}

/// One backend the node depends on, and whether it works.
public struct BackendStatus: Sendable, Equatable {
    /// What the backend does: `store`, `sharedState`, …
    public var role: String
    /// What implements it: `sqlite`, `memory`, …
    public var kind: String
    /// `ok`, `degraded` or `down`.
    public var status: String
    /// Details (path, error) for humans.
    public var detail: String
    /// Since when the status holds, milliseconds since 1970.
    public var sinceMilliseconds: Int64
}

/// The running version of the coordinator.
public enum CoordinatorVersion {
    public static let string = "0.1.0"
}
