/// How a policy's limits count requests.
public enum LimitAlgorithm: String, Codable, Equatable, Hashable, Sendable, CaseIterable {
    /// The generic cell rate algorithm: a token bucket kept as one "theoretical arrival time" per limit.
    /// Exact, allows `burst` requests at once, then one every `period / rate`.
    case gcra
    /// Cloudflare's sliding window counter: the previous fixed window's count, weighted by how much
    /// of it still overlaps the sliding window, plus the current window's count.
    case slidingWindow = "sliding_window"
}

/// One limit of a policy: at most `rate` requests per `periodMs` milliseconds, with up to `burst`
/// at once (GCRA only; for the sliding window the capacity is `rate`).
public struct LimitSpec: Codable, Equatable, Hashable, Sendable {
    /// Requests allowed per period, 1...1 000 000 000.
    public var rate: Int
    /// The period in milliseconds, 1...366 days.
    public var periodMs: Int
    /// How many requests may pass at once (GCRA). Defaults to `rate`. Must equal `rate` for the
    /// sliding window (which has no burst notion).
    public var burst: Int

    /// Creates a limit; `burst` defaults to `rate`.
    public init(rate: Int, periodMs: Int, burst: Int? = nil) {
        self.rate = rate
        self.periodMs = periodMs
        self.burst = burst ?? rate
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: PolicyCodingKey.self)
        try container.rejectUnknownKeys(allowed: ["rate", "periodMs", "burst"])
        let rate = try container.decode(Int.self, forKey: PolicyCodingKey("rate"))
        let periodMs = try container.decode(Int.self, forKey: PolicyCodingKey("periodMs"))
        let burst = try container.decodeIfPresent(Int.self, forKey: PolicyCodingKey("burst"))
        self.init(rate: rate, periodMs: periodMs, burst: burst)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: PolicyCodingKey.self)
        try container.encode(rate, forKey: PolicyCodingKey("rate"))
        try container.encode(periodMs, forKey: PolicyCodingKey("periodMs"))
        try container.encode(burst, forKey: PolicyCodingKey("burst"))
    }
}

/// A rate-limit policy: an algorithm and 1...16 limits, every one of which must allow a request.
///
/// JSON: `{"algorithm":"gcra","limits":[{"rate":10,"periodMs":1000,"burst":5}]}`. `algorithm`
/// defaults to `"gcra"`, `burst` to `rate`. Decoding is strict: an unknown key is an error
/// (`DecodingError.dataCorrupted` whose coding path ends at the unknown key). Decoding checks
/// shapes only; call `validate()` for the value rules.
/// How a policy's limits are shared in cluster mode.
public enum LimitMode: String, Codable, Equatable, Hashable, Sendable, CaseIterable {
    /// One Redis script per decision: the limit holds exactly, cluster-wide.
    case exact
    /// Local decisions, consumption synced every `syncIntervalMs`: much faster, may overshoot by
    /// about nodes × rate × syncInterval / period per window.
    case approximate
}

public struct LimitPolicy: Codable, Equatable, Hashable, Sendable {
    /// How the limits count.
    public var algorithm: LimitAlgorithm
    /// The limits; a request passes only if every one allows it.
    public var limits: [LimitSpec]
    /// In cluster mode: `exact` decides every request in Redis; `approximate` decides locally and
    /// syncs consumption every `syncIntervalMs`. Ignored in pilot mode.
    public var mode: LimitMode = .exact
    /// Approximate mode's sync period, in milliseconds.
    public var syncIntervalMs: Int = 50

    /// The most limits a policy may hold.
    public static let maximumLimits = 16
    /// The largest `rate` and `burst`.
    public static let maximumRate = 1_000_000_000
    /// The longest period, in milliseconds: 366 days.
    public static let maximumPeriodMs = 366 * 86_400_000
    /// The longest burst tolerance (`burst × periodMs / rate`), in milliseconds: 3660 days. Keeps
    /// every reported span well inside `Int64` nanoseconds.
    public static let maximumToleranceMs = 3660 * 86_400_000

    /// Creates a policy.
    public init(algorithm: LimitAlgorithm = .gcra, limits: [LimitSpec], mode: LimitMode = .exact, syncIntervalMs: Int = 50) {
        self.algorithm = algorithm
        self.limits = limits
        self.mode = mode
        self.syncIntervalMs = syncIntervalMs
    }

    /// The pilot's default: 10 per second with bursts of 20, and 10 000 per day (GCRA).
    public static let pilotDefault = LimitPolicy(
        algorithm: .gcra,
        limits: [
            LimitSpec(rate: 10, periodMs: 1_000, burst: 20),
            LimitSpec(rate: 10_000, periodMs: 86_400_000),
        ]
    )

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: PolicyCodingKey.self)
        try container.rejectUnknownKeys(allowed: ["algorithm", "limits", "mode", "syncIntervalMs"])
        algorithm =
            try container.decodeIfPresent(LimitAlgorithm.self, forKey: PolicyCodingKey("algorithm")) ?? .gcra
        limits = try container.decode([LimitSpec].self, forKey: PolicyCodingKey("limits"))
        mode = try container.decodeIfPresent(LimitMode.self, forKey: PolicyCodingKey("mode")) ?? .exact
        syncIntervalMs = try container.decodeIfPresent(Int.self, forKey: PolicyCodingKey("syncIntervalMs")) ?? 50
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: PolicyCodingKey.self)
        try container.encode(algorithm, forKey: PolicyCodingKey("algorithm"))
        try container.encode(limits, forKey: PolicyCodingKey("limits"))
        if mode != .exact || syncIntervalMs != 50 {
            try container.encode(mode, forKey: PolicyCodingKey("mode"))
            try container.encode(syncIntervalMs, forKey: PolicyCodingKey("syncIntervalMs"))
        }
    }

    /// Every rule the policy breaks (empty when valid), keyed by dotted path relative to the
    /// policy (`limits`, `limits[0].rate`, ...); prefix them with the policy's own path.
    public func validate() -> [ValidationError] {
        var errors: [ValidationError] = []
        if !(1...10_000).contains(syncIntervalMs) {
            errors.append(ValidationError(key: "syncIntervalMs", reason: "must be 1...10000, is \(syncIntervalMs)"))
        }
        if limits.isEmpty || limits.count > Self.maximumLimits {
            errors.append(
                ValidationError(key: "limits", reason: "must hold 1 to \(Self.maximumLimits) limits, has \(limits.count)"))
        }
        for (index, limit) in limits.enumerated() {
            let path = "limits[\(index)]"
            var rateOK = true
            var periodOK = true
            var burstOK = true
            if !(1...Self.maximumRate).contains(limit.rate) {
                rateOK = false
                errors.append(
                    ValidationError(key: "\(path).rate", reason: "must be 1...\(Self.maximumRate), is \(limit.rate)"))
            }
            if !(1...Self.maximumPeriodMs).contains(limit.periodMs) {
                periodOK = false
                errors.append(
                    ValidationError(
                        key: "\(path).periodMs",
                        reason: "must be 1...\(Self.maximumPeriodMs) (366 days), is \(limit.periodMs)"))
            }
            switch algorithm {
            case .gcra:
                if !(1...Self.maximumRate).contains(limit.burst) {
                    burstOK = false
                    errors.append(
                        ValidationError(
                            key: "\(path).burst", reason: "must be 1...\(Self.maximumRate), is \(limit.burst)"))
                }
                if rateOK && periodOK {
                    // Emission interval periodMs × 1e6 / rate nanoseconds must be at least 1 ns.
                    if limit.periodMs * 1_000_000 < limit.rate {
                        errors.append(
                            ValidationError(
                                key: "\(path).rate",
                                reason: "emission interval (periodMs × 1 000 000 / rate) is below 1 ns"))
                    }
                    // Tolerance burst × periodMs / rate, compared without division or overflow.
                    if burstOK {
                        let tolerance = limit.burst.multipliedFullWidth(by: limit.periodMs)
                        let bound = Self.maximumToleranceMs.multipliedFullWidth(by: limit.rate)
                        if (tolerance.high, tolerance.low) > (bound.high, bound.low) {
                            errors.append(
                                ValidationError(
                                    key: "\(path).burst",
                                    reason: "burst × periodMs / rate must not exceed 3660 days"))
                        }
                    }
                }
            case .slidingWindow:
                if limit.burst != limit.rate {
                    errors.append(ValidationError(key: "\(path).burst", reason: "burst applies to gcra only"))
                }
            }
        }
        return errors
    }
}

/// Rate-limit keys: the caller-chosen identity being limited (a user id, an API key hash, ...).
public enum RateLimitKey {
    /// The longest key accepted, in UTF-8 bytes.
    public static let maximumLength = 256

    /// Whether `key` is 1...256 UTF-8 bytes with no control character (U+0000–U+001F, U+007F–U+009F).
    public static func isValid(_ key: some StringProtocol) -> Bool {
        let count = key.utf8.count
        guard count >= 1, count <= maximumLength else { return false }
        for scalar in key.unicodeScalars {
            let value = scalar.value
            if value < 0x20 || (0x7F...0x9F).contains(value) { return false }
        }
        return true
    }
}

/// Helpers that turn decoding failures into the dotted key paths `ValidationError` uses.
public enum DecodingDiagnostics {
    /// `limits[0].burst`-style path for a coding path.
    public static func dottedPath(_ codingPath: [any CodingKey]) -> String {
        var result = ""
        for key in codingPath {
            if let index = key.intValue, key.stringValue.hasPrefix("Index ") || key.stringValue == String(index) {
                result += "[\(index)]"
            } else {
                if !result.isEmpty { result += "." }
                result += key.stringValue
            }
        }
        return result
    }

    /// A `ValidationError` naming the key a `DecodingError` is about, with `prefix` (for example
    /// `limits.default`) in front of the path.
    public static func validationError(_ error: DecodingError, prefix: String = "") -> ValidationError {
        let path: [any CodingKey]
        let reason: String
        switch error {
        case .dataCorrupted(let context):
            path = context.codingPath
            reason = context.debugDescription
        case .keyNotFound(let key, let context):
            path = context.codingPath + [key]
            reason = "is required"
        case .typeMismatch(let type, let context):
            path = context.codingPath
            reason = "expected \(type): \(context.debugDescription)"
        case .valueNotFound(let type, let context):
            path = context.codingPath
            reason = "expected \(type), found null"
        @unknown default:
            path = []
            reason = "\(error)"
        }
        let dotted = dottedPath(path)
        let key: String
        if prefix.isEmpty {
            key = dotted
        } else if dotted.isEmpty {
            key = prefix
        } else {
            key = dotted.hasPrefix("[") ? prefix + dotted : prefix + "." + dotted
        }
        return ValidationError(key: key, reason: reason)
    }
}

/// A coding key for any string, so strict decoders can see every key the input holds.
@usableFromInline
struct PolicyCodingKey: CodingKey {
    @usableFromInline var stringValue: String
    @usableFromInline var intValue: Int? { nil }

    @usableFromInline init(_ string: String) { stringValue = string }
    @usableFromInline init?(stringValue: String) { self.stringValue = stringValue }
    @usableFromInline init?(intValue: Int) { nil }
}

extension KeyedDecodingContainer where Key == PolicyCodingKey {
    /// Throws `DecodingError.dataCorrupted` at the first (alphabetically) unknown key, naming all.
    func rejectUnknownKeys(allowed: Set<String>) throws {
        let unknown = allKeys.filter { !allowed.contains($0.stringValue) }.sorted { $0.stringValue < $1.stringValue }
        guard let first = unknown.first else { return }
        let names = unknown.map { "\"\($0.stringValue)\"" }.joined(separator: ", ")
        let expected = allowed.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        throw DecodingError.dataCorrupted(
            DecodingError.Context(
                codingPath: codingPath + [first],
                debugDescription: "unknown key\(unknown.count == 1 ? "" : "s") \(names); expected \(expected)"))
    }
}
