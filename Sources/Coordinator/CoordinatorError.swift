/// A failure the node reports to its callers, with a stable `code` and the HTTP status that the
/// HTTP adapter answers with. The Swift API throws the same errors, so library users and HTTP
/// clients see one vocabulary.
public struct CoordinatorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable, machine-readable error codes (also the last part of the problem `type`).
    public enum Code: String, Sendable, CaseIterable {
        case invalidRequest = "invalid-request"
        case invalidName = "invalid-name"
        case invalidKey = "invalid-key"
        case invalidPolicy = "invalid-policy"
        case invalidBreakerConfig = "invalid-breaker-config"
        case unknownPolicy = "unknown-policy"
        case unknownBreaker = "unknown-breaker"
        case unknownToken = "unknown-token"
        case unknownPermit = "unknown-permit"
        case permitAlreadyRecorded = "permit-already-recorded"
        case breakerLimitReached = "breaker-limit-reached"
        case permitLimitReached = "permit-limit-reached"
        case limiterFull = "limiter-full"
        case costExceedsCapacity = "cost-exceeds-capacity"
        case auditIDConflict = "audit-id-conflict"
        case unauthorized = "unauthorized"
        case tokenInvalid = "token-invalid"
        case rateLimited = "rate-limited"
        case breakerOpen = "breaker-open"
        case notFound = "not-found"
        case methodNotAllowed = "method-not-allowed"
        case bodyTooLarge = "body-too-large"
        case unsupportedMediaType = "unsupported-media-type"
        case storeUnavailable = "store-unavailable"
        case shuttingDown = "shutting-down"
        case internalError = "internal-error"
    }

    /// The stable code.
    public var code: Code
    /// A human-readable explanation of this occurrence.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The HTTP status that goes with the code.
    public var httpStatus: Int {
        switch code {
        case .invalidRequest, .invalidName, .invalidKey, .invalidPolicy, .invalidBreakerConfig: 400
        case .unauthorized, .tokenInvalid: 401
        case .unknownPolicy, .unknownBreaker, .unknownToken, .notFound: 404
        case .methodNotAllowed: 405
        case .unknownPermit, .permitAlreadyRecorded, .breakerLimitReached, .auditIDConflict: 409
        case .bodyTooLarge: 413
        case .unsupportedMediaType: 415
        case .costExceedsCapacity: 422
        case .rateLimited: 429
        case .internalError: 500
        case .breakerOpen, .storeUnavailable, .shuttingDown, .permitLimitReached, .limiterFull: 503
        }
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
