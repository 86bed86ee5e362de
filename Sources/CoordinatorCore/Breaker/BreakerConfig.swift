/// The configuration of one ``CircuitBreaker``, with resilience4j's semantics and defaults.
///
/// JSON shape (every key optional; a missing key takes the value from ``default``; an unknown key is
/// a decoding error that names it):
///
/// ```json
/// {"window":{"type":"count","size":100},"minimumCalls":100,"failureRateThreshold":50,
///  "slowCallRateThreshold":100,"slowCallDurationMs":60000,"openWaitMs":60000,
///  "halfOpenPermittedCalls":10,"openWaitMultiplier":1,"maxOpenWaitMs":120000,
///  "maxHalfOpenWaitMs":0,"permitTimeoutMs":60000}
/// ```
///
/// Decoding does not validate values; call ``validate()``.
public struct BreakerConfig: Codable, Equatable, Sendable {
    /// How the sliding window counts.
    public enum WindowType: String, Codable, Sendable, CaseIterable {
        /// The last `size` calls.
        case count
        /// The calls of the last `size` seconds, in one-second buckets.
        case time
    }

    /// The sliding window of the closed (and metrics-only) state.
    public struct Window: Codable, Equatable, Sendable {
        /// Count- or time-based.
        public var type: WindowType
        /// Calls (count window) or seconds (time window).
        public var size: Int

        public init(type: WindowType, size: Int) {
            self.type = type
            self.size = size
        }

        /// A window over the last `size` calls.
        public static func count(_ size: Int) -> Window { Window(type: .count, size: size) }
        /// A window over the last `seconds` seconds.
        public static func time(seconds: Int) -> Window { Window(type: .time, size: seconds) }

        /// resilience4j's default: the last 100 calls.
        public static let `default` = Window(type: .count, size: 100)

        enum CodingKeys: String, CodingKey, CaseIterable {
            case type, size
        }

        public init(from decoder: any Decoder) throws {
            try BreakerStrictKeys.check(decoder, CodingKeys.self)
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let d = Window.default
            if let raw = try container.decodeIfPresent(String.self, forKey: .type) {
                guard let type = WindowType(rawValue: raw) else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .type, in: container,
                        debugDescription: "\(BreakerStrictKeys.path(decoder.codingPath, "type")) must be \"count\" or \"time\", not \"\(raw)\"")
                }
                self.type = type
            } else {
                self.type = d.type
            }
            self.size = try container.decodeIfPresent(Int.self, forKey: .size) ?? d.size
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(type, forKey: .type)
            try container.encode(size, forKey: .size)
        }
    }

    /// The sliding window used while closed (and in metrics-only). Default: count, 100.
    public var window: Window
    /// Calls needed in the window before rates are computed (default 100). For a count window the
    /// effective minimum is `min(minimumCalls, window.size)`, as in resilience4j.
    public var minimumCalls: Int
    /// Failure-rate percentage, in (0, 100], at or above which the breaker opens (default 50).
    public var failureRateThreshold: Double
    /// Slow-call-rate percentage, in (0, 100], at or above which the breaker opens (default 100).
    public var slowCallRateThreshold: Double
    /// A call whose duration is strictly greater than this many milliseconds is slow (default 60000).
    public var slowCallDurationMs: Int64
    /// How long the breaker stays open on its first opening since it was last closed (default 60000).
    public var openWaitMs: Int64
    /// Probes admitted in half-open; the verdict falls when all of them are recorded (default 10).
    public var halfOpenPermittedCalls: Int
    /// Backoff factor: the k-th consecutive opening waits `openWaitMs × openWaitMultiplier^(k−1)`
    /// (default 1, no backoff).
    public var openWaitMultiplier: Double
    /// Cap on the backed-off open wait; nil means no cap other than ``maximumDurationMs`` (default nil).
    public var maxOpenWaitMs: Int64?
    /// How long half-open may last without a verdict before it opens again; 0 waits for the probes
    /// indefinitely (default 0).
    public var maxHalfOpenWaitMs: Int64
    /// How long a granted permit stays valid without an outcome; enforced by the node, which reports an
    /// expired permit as `ignored` (default 60000).
    public var permitTimeoutMs: Int64
    /// How this breaker is shared in cluster mode (`local`, `any`, `quorum(n)`, `aggregate`); `nil`
    /// uses the node's `breakers.sharing`. Ignored in pilot mode.
    public var sharing: BreakerSharing?

    public init(
        window: Window = .default,
        minimumCalls: Int = 100,
        failureRateThreshold: Double = 50,
        slowCallRateThreshold: Double = 100,
        slowCallDurationMs: Int64 = 60_000,
        openWaitMs: Int64 = 60_000,
        halfOpenPermittedCalls: Int = 10,
        openWaitMultiplier: Double = 1,
        maxOpenWaitMs: Int64? = nil,
        maxHalfOpenWaitMs: Int64 = 0,
        permitTimeoutMs: Int64 = 60_000,
        sharing: BreakerSharing? = nil
    ) {
        self.sharing = sharing
        self.window = window
        self.minimumCalls = minimumCalls
        self.failureRateThreshold = failureRateThreshold
        self.slowCallRateThreshold = slowCallRateThreshold
        self.slowCallDurationMs = slowCallDurationMs
        self.openWaitMs = openWaitMs
        self.halfOpenPermittedCalls = halfOpenPermittedCalls
        self.openWaitMultiplier = openWaitMultiplier
        self.maxOpenWaitMs = maxOpenWaitMs
        self.maxHalfOpenWaitMs = maxHalfOpenWaitMs
        self.permitTimeoutMs = permitTimeoutMs
    }

    /// resilience4j's defaults: count window of 100, 100 minimum calls, 50 % failures, 100 % slow calls
    /// over 60 s, 60 s open, 10 half-open probes; no backoff, no half-open limit, 60 s permit timeout.
    public static let `default` = BreakerConfig()

    /// The longest duration any `…Ms` key accepts: 7 days. Also the ceiling of an uncapped backoff.
    public static let maximumDurationMs: Int64 = 7 * 24 * 3600 * 1000
    /// The largest count window and the largest number of half-open probes.
    public static let maximumCountWindow = 10_000
    /// The largest time window, in seconds.
    public static let maximumTimeWindowSeconds = 3600
    /// The largest `minimumCalls`.
    public static let maximumMinimumCalls = 1_000_000

    /// `slowCallDurationMs` as a span.
    public var slowCallDuration: Span { .milliseconds(slowCallDurationMs) }
    /// `openWaitMs` as a span.
    public var openWait: Span { .milliseconds(openWaitMs) }
    /// `maxOpenWaitMs` as a span.
    public var maxOpenWait: Span? { maxOpenWaitMs.map { .milliseconds($0) } }
    /// `maxHalfOpenWaitMs` as a span (zero: no limit).
    public var maxHalfOpenWait: Span { .milliseconds(maxHalfOpenWaitMs) }
    /// `permitTimeoutMs` as a span.
    public var permitTimeout: Span { .milliseconds(permitTimeoutMs) }

    // MARK: Validation

    /// Every rule the configuration breaks, with dotted key paths such as `window.size`. Empty when valid.
    public func validate() -> [ValidationError] { validate(keyPrefix: "") }

    /// As ``validate()``, with every key path prefixed by `keyPrefix` and a dot (when not empty), for a
    /// configuration nested in a larger document (e.g. `breakers.payments`).
    public func validate(keyPrefix: String) -> [ValidationError] {
        var errors: [ValidationError] = []
        func fail(_ key: String, _ reason: String) {
            errors.append(ValidationError(key: keyPrefix.isEmpty ? key : keyPrefix + "." + key, reason: reason))
        }
        let maxMs = Self.maximumDurationMs
        func checkDuration(_ key: String, _ value: Int64) {
            if value < 1 || value > maxMs {
                fail(key, "must be between 1 and \(maxMs) milliseconds (7 days), got \(value)")
            }
        }
        func checkPercentage(_ key: String, _ value: Double) {
            if !(value > 0 && value <= 100) {
                fail(key, "must be a percentage greater than 0 and at most 100, got \(value)")
            }
        }

        switch window.type {
        case .count:
            if window.size < 1 || window.size > Self.maximumCountWindow {
                fail("window.size", "must be between 1 and \(Self.maximumCountWindow) calls for a count window, got \(window.size)")
            }
        case .time:
            if window.size < 1 || window.size > Self.maximumTimeWindowSeconds {
                fail("window.size", "must be between 1 and \(Self.maximumTimeWindowSeconds) seconds for a time window, got \(window.size)")
            }
        }
        if minimumCalls < 1 || minimumCalls > Self.maximumMinimumCalls {
            fail("minimumCalls", "must be between 1 and \(Self.maximumMinimumCalls), got \(minimumCalls)")
        }
        checkPercentage("failureRateThreshold", failureRateThreshold)
        checkPercentage("slowCallRateThreshold", slowCallRateThreshold)
        checkDuration("slowCallDurationMs", slowCallDurationMs)
        checkDuration("openWaitMs", openWaitMs)
        if halfOpenPermittedCalls < 1 || halfOpenPermittedCalls > Self.maximumCountWindow {
            fail("halfOpenPermittedCalls", "must be between 1 and \(Self.maximumCountWindow), got \(halfOpenPermittedCalls)")
        }
        if !(openWaitMultiplier >= 1 && openWaitMultiplier.isFinite) {
            fail("openWaitMultiplier", "must be a finite number of at least 1 (1 = no backoff), got \(openWaitMultiplier)")
        }
        if let cap = maxOpenWaitMs {
            if cap > maxMs {
                fail("maxOpenWaitMs", "must be at most \(maxMs) milliseconds (7 days), got \(cap)")
            } else if cap < openWaitMs {
                fail("maxOpenWaitMs", "must be at least openWaitMs (\(openWaitMs)), got \(cap)")
            }
        }
        if maxHalfOpenWaitMs < 0 || maxHalfOpenWaitMs > maxMs {
            fail("maxHalfOpenWaitMs", "must be between 0 (no limit) and \(maxMs) milliseconds (7 days), got \(maxHalfOpenWaitMs)")
        }
        checkDuration("permitTimeoutMs", permitTimeoutMs)
        return errors
    }

    // MARK: Coding

    enum CodingKeys: String, CodingKey, CaseIterable {
        case window, minimumCalls, failureRateThreshold, slowCallRateThreshold, slowCallDurationMs
        case openWaitMs, halfOpenPermittedCalls, openWaitMultiplier, maxOpenWaitMs, maxHalfOpenWaitMs
        case permitTimeoutMs, sharing
    }

    public init(from decoder: any Decoder) throws {
        try BreakerStrictKeys.check(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = BreakerConfig.default
        window = try c.decodeIfPresent(Window.self, forKey: .window) ?? d.window
        minimumCalls = try c.decodeIfPresent(Int.self, forKey: .minimumCalls) ?? d.minimumCalls
        failureRateThreshold = try c.decodeIfPresent(Double.self, forKey: .failureRateThreshold) ?? d.failureRateThreshold
        slowCallRateThreshold = try c.decodeIfPresent(Double.self, forKey: .slowCallRateThreshold) ?? d.slowCallRateThreshold
        slowCallDurationMs = try c.decodeIfPresent(Int64.self, forKey: .slowCallDurationMs) ?? d.slowCallDurationMs
        openWaitMs = try c.decodeIfPresent(Int64.self, forKey: .openWaitMs) ?? d.openWaitMs
        halfOpenPermittedCalls = try c.decodeIfPresent(Int.self, forKey: .halfOpenPermittedCalls) ?? d.halfOpenPermittedCalls
        openWaitMultiplier = try c.decodeIfPresent(Double.self, forKey: .openWaitMultiplier) ?? d.openWaitMultiplier
        maxOpenWaitMs = try c.decodeIfPresent(Int64.self, forKey: .maxOpenWaitMs) ?? d.maxOpenWaitMs
        maxHalfOpenWaitMs = try c.decodeIfPresent(Int64.self, forKey: .maxHalfOpenWaitMs) ?? d.maxHalfOpenWaitMs
        permitTimeoutMs = try c.decodeIfPresent(Int64.self, forKey: .permitTimeoutMs) ?? d.permitTimeoutMs
        sharing = try c.decodeIfPresent(BreakerSharing.self, forKey: .sharing)
    }

    /// Encodes every key; `maxOpenWaitMs` only when set.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(window, forKey: .window)
        try c.encode(minimumCalls, forKey: .minimumCalls)
        try c.encode(failureRateThreshold, forKey: .failureRateThreshold)
        try c.encode(slowCallRateThreshold, forKey: .slowCallRateThreshold)
        try c.encode(slowCallDurationMs, forKey: .slowCallDurationMs)
        try c.encode(openWaitMs, forKey: .openWaitMs)
        try c.encode(halfOpenPermittedCalls, forKey: .halfOpenPermittedCalls)
        try c.encode(openWaitMultiplier, forKey: .openWaitMultiplier)
        try c.encodeIfPresent(maxOpenWaitMs, forKey: .maxOpenWaitMs)
        try c.encode(maxHalfOpenWaitMs, forKey: .maxHalfOpenWaitMs)
        try c.encode(permitTimeoutMs, forKey: .permitTimeoutMs)
        try c.encodeIfPresent(sharing, forKey: .sharing)
    }
}

/// Rejection of unknown keys in a keyed JSON object.
enum BreakerStrictKeys {
    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int?
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) {
            self.stringValue = String(intValue)
            self.intValue = intValue
        }
    }

    /// The dotted path of `key` under `codingPath`, e.g. `window.kind`.
    static func path(_ codingPath: [any CodingKey], _ key: String) -> String {
        var parts = codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        parts.append(key)
        var result = ""
        for part in parts {
            if !result.isEmpty && !part.hasPrefix("[") { result += "." }
            result += part
        }
        return result
    }

    /// Throws `DecodingError.dataCorrupted` naming every key of the object being decoded that `Known`
    /// does not list (sorted; the coding path points at the first).
    static func check<Known: CodingKey & CaseIterable>(_ decoder: any Decoder, _: Known.Type) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        let unknown = container.allKeys.filter { Known(stringValue: $0.stringValue) == nil }
            .map(\.stringValue).sorted()
        guard let first = unknown.first else { return }
        let names = unknown.map { "\"\(path(decoder.codingPath, $0))\"" }.joined(separator: ", ")
        let allowed = Known.allCases.map(\.stringValue).joined(separator: ", ")
        throw DecodingError.dataCorrupted(
            DecodingError.Context(
                codingPath: decoder.codingPath + [AnyKey(stringValue: first)],
                debugDescription: "unknown key\(unknown.count > 1 ? "s" : "") \(names) (allowed: \(allowed))"))
    }
}
