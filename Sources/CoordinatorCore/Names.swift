/// Validation of the names that appear in URLs and bodies: policies, breakers, token subjects.
public enum ResourceName {
    /// The longest name accepted, in bytes.
    public static let maximumLength = 128

    /// Whether `name` matches `[A-Za-z0-9._:-]{1,128}`.
    public static func isValid(_ name: some StringProtocol) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maximumLength else { return false }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return true
    }
}

/// A rule that a configuration value broke: names the key (a dotted path such as
/// `limits.default.limits[0].rate`) and says why, so a user can fix it without reading code.
public struct ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The dotted path of the offending key.
    public var key: String
    /// Why the value is refused.
    public var reason: String

    /// Creates an error for `key` with `reason`.
    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    public var description: String { "\(key): \(reason)" }
}
