/// A PostgreSQL write-ahead-log position (`pg_lsn`): a 64-bit byte offset into the WAL stream, written
/// as two hexadecimal halves, `16/B374D848`.
///
/// Positions compare as plain integers, and the difference of two positions is a distance in bytes
/// (what `pg_wal_lsn_diff` answers). `0/0` is PostgreSQL's invalid position (`InvalidXLogRecPtr`).
public struct LSN: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// The byte offset.
    public var value: UInt64

    /// The position at byte offset `value`.
    @inlinable public init(_ value: UInt64) { self.value = value }

    /// Parses PostgreSQL's text form: 1 to 8 hexadecimal digits, `/`, 1 to 8 hexadecimal digits (either
    /// case, nothing else — no spaces, no sign), exactly as `pg_lsn_in` accepts it.
    public init(_ text: some StringProtocol) throws(LSNFormatError) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var digits = 0
        var sawSlash = false
        for byte in text.utf8 {
            if byte == UInt8(ascii: "/") {
                guard !sawSlash, digits > 0 else { throw LSNFormatError(text: String(text)) }
                sawSlash = true
                digits = 0
                continue
            }
            let nibble: UInt64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = UInt64(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = UInt64(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = UInt64(byte - UInt8(ascii: "A") + 10)
            default: throw LSNFormatError(text: String(text))
            }
            digits += 1
            guard digits <= 8 else { throw LSNFormatError(text: String(text)) }
            if sawSlash { low = low << 4 | nibble } else { high = high << 4 | nibble }
        }
        guard sawSlash, digits > 0 else { throw LSNFormatError(text: String(text)) }
        self.value = high << 32 | low
    }

    /// `0/0`, PostgreSQL's invalid position; below every real one.
    public static let zero = LSN(0)

    /// The text form PostgreSQL prints: upper-case hexadecimal halves without leading zeros (`16/B374D848`).
    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    @inlinable public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.value < rhs.value }

    /// Bytes from `other` up to this position; 0 when `other` is at or past it (never negative).
    @inlinable public func bytes(after other: LSN) -> UInt64 {
        value > other.value ? value - other.value : 0
    }

    /// The signed distance `self − other` in bytes (`pg_wal_lsn_diff(self, other)`), saturated to `Int64`.
    @inlinable public func distance(from other: LSN) -> Int64 {
        if value >= other.value {
            let d = value - other.value
            return d > UInt64(Int64.max) ? .max : Int64(d)
        }
        let d = other.value - value
        return d > UInt64(Int64.max) ? .min : -Int64(d)
    }
}

/// Text that is not a `pg_lsn`. Stable code: `invalid-lsn`.
public struct LSNFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable, machine-readable code.
    public static let code = "invalid-lsn"
    /// The stable code (always ``code``).
    public var code: String { Self.code }
    /// The refused text.
    public var text: String

    /// An error for `text`.
    public init(text: String) { self.text = text }

    public var description: String {
        "\(Self.code): \"\(text)\" is not a WAL position (expected 1-8 hex digits, '/', 1-8 hex digits, e.g. 16/B374D848)"
    }
}
