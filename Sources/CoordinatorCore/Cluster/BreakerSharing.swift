/// How a breaker shares its state with the other nodes of a cluster.
///
/// Text form (configuration, API): `local`, `any`, `quorum(n)` with 1 ≤ n ≤ ``maximumQuorum``,
/// `aggregate`. Codable as that string.
public enum BreakerSharing: Sendable, Hashable, CustomStringConvertible, LosslessStringConvertible, Codable {
    /// No sharing: the breaker is this node's alone.
    case local
    /// One node's trip opens the breaker on every node (the default).
    case any
    /// The cluster opens only when this many distinct nodes tripped within the vote window; a node that
    /// trips alone stays open alone.
    case quorum(Int)
    /// Nodes publish their window counters; the cluster opens on the cluster-wide failure and slow-call
    /// rates. A node whose own rates trip stays open alone until the cluster decides.
    case aggregate

    /// The default policy: `any`.
    public static let `default` = BreakerSharing.any
    /// The largest quorum accepted.
    public static let maximumQuorum = 1_000

    public var description: String {
        switch self {
        case .local: "local"
        case .any: "any"
        case .quorum(let n): "quorum(\(n))"
        case .aggregate: "aggregate"
        }
    }

    /// Parses the text form; nil when invalid (see ``parse(_:key:)`` for the reason).
    public init?(_ description: String) {
        guard let value = try? Self.parse(description) else { return nil }
        self = value
    }

    /// Parses the text form exactly (lowercase, no spaces), or throws a ``ValidationError`` for `key`.
    public static func parse(_ text: String, key: String = "sharing") throws(ValidationError) -> BreakerSharing {
        switch text {
        case "local": return .local
        case "any": return .any
        case "aggregate": return .aggregate
        default: break
        }
        let expected = "must be \"local\", \"any\", \"quorum(n)\" with n between 1 and \(maximumQuorum), or \"aggregate\""
        guard text.hasPrefix("quorum("), text.hasSuffix(")"), text.utf8.count > 8 else {
            throw ValidationError(key: key, reason: "\(expected), got \"\(text)\"")
        }
        let digits = text.dropFirst(7).dropLast()
        guard digits.utf8.count <= 4, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(digits),
            n >= 1, n <= maximumQuorum
        else {
            throw ValidationError(key: key, reason: "\(expected), got \"\(text)\"")
        }
        return .quorum(n)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            self = try Self.parse(text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.reason)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension BreakerConfig {
    /// The open wait of the `opening`-th consecutive opening (1-based) under this configuration's
    /// backoff: `openWaitMs × openWaitMultiplier^(opening−1)`, capped by `maxOpenWaitMs` (or
    /// ``maximumDurationMs``). Used for cluster-wide openings so every node waits the same.
    public func openWaitMs(forOpening opening: Int) -> Int64 {
        let cap = min(maxOpenWaitMs ?? Self.maximumDurationMs, Self.maximumDurationMs)
        var wait = Double(max(0, openWaitMs))
        let multiplier = openWaitMultiplier.isFinite && openWaitMultiplier > 1 ? openWaitMultiplier : 1
        if opening > 1 && multiplier > 1 {
            for _ in 1..<opening {
                wait *= multiplier
                if wait >= Double(cap) { return cap }
            }
        }
        return min(Int64(wait), cap)
    }
}
