import Foundation

/// A PostgreSQL type OID (`pg_type.oid`), as reported for result columns and
/// sent with bound parameters.
public struct PostgresType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The OID.
    public let rawValue: UInt32
    /// Wraps an OID.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// OID 0: let the server infer the parameter's type from the statement.
    public static let unspecified = PostgresType(rawValue: 0)
    /// `bool`
    public static let bool = PostgresType(rawValue: 16)
    /// `bytea`
    public static let bytea = PostgresType(rawValue: 17)
    /// `name`
    public static let name = PostgresType(rawValue: 19)
    /// `int8` / `bigint`
    public static let int8 = PostgresType(rawValue: 20)
    /// `int2` / `smallint`
    public static let int2 = PostgresType(rawValue: 21)
    /// `int4` / `integer`
    public static let int4 = PostgresType(rawValue: 23)
    /// `text`
    public static let text = PostgresType(rawValue: 25)
    /// `oid`
    public static let oid = PostgresType(rawValue: 26)
    /// `json`
    public static let json = PostgresType(rawValue: 114)
    /// `float4` / `real`
    public static let float4 = PostgresType(rawValue: 700)
    /// `float8` / `double precision`
    public static let float8 = PostgresType(rawValue: 701)
    /// `unknown` (e.g. an untyped literal in a select list)
    public static let unknown = PostgresType(rawValue: 705)
    /// `bpchar` / `char(n)`
    public static let bpchar = PostgresType(rawValue: 1042)
    /// `varchar`
    public static let varchar = PostgresType(rawValue: 1043)
    /// `date`
    public static let date = PostgresType(rawValue: 1082)
    /// `timestamp` (without time zone)
    public static let timestamp = PostgresType(rawValue: 1114)
    /// `timestamptz`
    public static let timestamptz = PostgresType(rawValue: 1184)
    /// `numeric`
    public static let numeric = PostgresType(rawValue: 1700)
    /// `uuid`
    public static let uuid = PostgresType(rawValue: 2950)
    /// `pg_lsn`
    public static let pgLSN = PostgresType(rawValue: 3220)
    /// `jsonb`
    public static let jsonb = PostgresType(rawValue: 3802)

    /// The type's SQL name for the OIDs above, else the number.
    public var description: String {
        Self.names[rawValue] ?? "oid \(rawValue)"
    }

    /// Types whose text form is the value itself (`text`, `varchar`, …).
    public var isTextual: Bool {
        self == .text || self == .varchar || self == .bpchar || self == .name || self == .unknown
    }

    /// The integer types `int2`, `int4`, `int8`, `oid`.
    public var isInteger: Bool {
        self == .int2 || self == .int4 || self == .int8 || self == .oid
    }

    private static let names: [UInt32: String] = [
        0: "unspecified", 16: "bool", 17: "bytea", 19: "name", 20: "int8", 21: "int2", 23: "int4", 25: "text",
        26: "oid", 114: "json", 700: "float4", 701: "float8", 705: "unknown", 1042: "bpchar", 1043: "varchar",
        1082: "date", 1114: "timestamp", 1184: "timestamptz", 1700: "numeric", 2950: "uuid", 3220: "pg_lsn",
        3802: "jsonb",
    ]
}

/// How a value travels on the wire.
public enum PostgresFormat: Int32, Sendable, Hashable {
    /// The type's text representation (what psql shows).
    case text = 0
    /// The type's binary representation (used here for `bytea` parameters only).
    case binary = 1
}

/// One bound parameter, already encoded: a type OID, a wire format and the
/// bytes (`nil` is SQL NULL). Build one with the static helpers or get one
/// from any `PostgresEncodable` value.
public struct PostgresValue: Sendable, Hashable, PostgresEncodable, CustomStringConvertible {
    /// The parameter's type; `.unspecified` lets the server infer it.
    public var type: PostgresType
    /// How `bytes` are to be read by the server.
    public var format: PostgresFormat
    /// The encoded value; `nil` is SQL NULL.
    public var bytes: [UInt8]?

    /// A value with an explicit type, format and bytes.
    public init(type: PostgresType, format: PostgresFormat = .text, bytes: [UInt8]?) {
        self.type = type
        self.format = format
        self.bytes = bytes
    }

    /// SQL NULL (of unspecified type).
    public static let null = PostgresValue(type: .unspecified, bytes: nil)

    /// A text-format value; `type` defaults to `.unspecified` (server infers).
    public static func text(_ string: String, type: PostgresType = .unspecified) -> PostgresValue {
        PostgresValue(type: type, bytes: Array(string.utf8))
    }

    /// Whether this is SQL NULL.
    public var isNull: Bool { bytes == nil }

    /// Itself.
    public var postgresValue: PostgresValue { self }

    /// The text form (or the byte count for binary values), for logs.
    public var description: String {
        guard let bytes else { return "NULL" }
        switch format {
        case .text: return "'\(String(decoding: bytes, as: UTF8.self))'::\(type)"
        case .binary: return "<\(bytes.count) bytes>::\(type)"
        }
    }
}

/// A Swift value that can be bound as a statement parameter. Parameters are
/// always sent separately from the SQL text (`$1`, `$2`, …), never
/// interpolated into it.
///
/// Conforming: `String`, `Int`, `Int64`, `Int32`, `Int16`, `Bool`, `Double`,
/// `[UInt8]` (bytea), `Date` and `PostgresTimestamp` (timestamptz), `UUID`,
/// `PostgresJSON` (jsonb), `PostgresLSN`, `PostgresValue`. Pass `nil` for NULL.
public protocol PostgresEncodable: Sendable {
    /// The encoded parameter.
    var postgresValue: PostgresValue { get }
}

extension String: PostgresEncodable {
    /// Text of unspecified type, so the server infers the column's type (a
    /// string can be bound to `text`, `varchar`, `jsonb`, `inet`, enums, …).
    public var postgresValue: PostgresValue { .text(self) }
}

extension Substring: PostgresEncodable {
    /// As `String`.
    public var postgresValue: PostgresValue { .text(String(self)) }
}

extension Int: PostgresEncodable {
    /// `int8`.
    public var postgresValue: PostgresValue { .text(String(self), type: .int8) }
}

extension Int64: PostgresEncodable {
    /// `int8`.
    public var postgresValue: PostgresValue { .text(String(self), type: .int8) }
}

extension Int32: PostgresEncodable {
    /// `int4`.
    public var postgresValue: PostgresValue { .text(String(self), type: .int4) }
}

extension Int16: PostgresEncodable {
    /// `int2`.
    public var postgresValue: PostgresValue { .text(String(self), type: .int2) }
}

extension Bool: PostgresEncodable {
    /// `bool` (`t` / `f`).
    public var postgresValue: PostgresValue { .text(self ? "t" : "f", type: .bool) }
}

extension Double: PostgresEncodable {
    /// `float8`; NaN and ±infinity map to PostgreSQL's `NaN` / `±Infinity`.
    public var postgresValue: PostgresValue {
        let text: String
        if isNaN {
            text = "NaN"
        } else if isInfinite {
            text = self > 0 ? "Infinity" : "-Infinity"
        } else {
            text = "\(self)" // shortest representation that round-trips
        }
        return .text(text, type: .float8)
    }
}

extension Array: PostgresEncodable where Element == UInt8 {
    /// `bytea`, sent in binary format (no hex doubling).
    public var postgresValue: PostgresValue { PostgresValue(type: .bytea, format: .binary, bytes: self) }
}

extension UUID: PostgresEncodable {
    /// `uuid`.
    public var postgresValue: PostgresValue { .text(uuidString.lowercased(), type: .uuid) }
}

extension Date: PostgresEncodable {
    /// `timestamptz`, to the microsecond (rounded), in UTC.
    public var postgresValue: PostgresValue { PostgresTimestamp(self).postgresValue }
}

/// A point in time with PostgreSQL's precision: whole microseconds since
/// 1970-01-01 00:00:00 UTC. Binds as `timestamptz`; decodes from
/// `timestamptz`, `timestamp` (read as UTC) and `date` (midnight UTC).
public struct PostgresTimestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Microseconds since the Unix epoch (negative before 1970).
    public var microsecondsSince1970: Int64

    /// From microseconds since 1970.
    public init(microsecondsSince1970: Int64) {
        self.microsecondsSince1970 = microsecondsSince1970
    }

    /// From milliseconds since 1970.
    public init(millisecondsSince1970: Int64) {
        self.microsecondsSince1970 = millisecondsSince1970 * 1000
    }

    /// From a `Date`, rounded to the microsecond.
    public init(_ date: Date) {
        self.microsecondsSince1970 = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
    }

    /// Milliseconds since 1970, rounded down (towards the past).
    public var millisecondsSince1970: Int64 {
        PostgresTimestampText.floorDivide(microsecondsSince1970, 1000)
    }

    /// As a `Date`.
    public var date: Date { Date(timeIntervalSince1970: Double(microsecondsSince1970) / 1_000_000) }

    /// Orders by time.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.microsecondsSince1970 < rhs.microsecondsSince1970 }

    /// ISO form in UTC, as sent to the server (`2024-05-06 07:08:09.123456+00`).
    public var description: String { PostgresTimestampText.format(microsecondsSince1970: microsecondsSince1970) }
}

extension PostgresTimestamp: PostgresEncodable {
    /// `timestamptz` text in UTC.
    public var postgresValue: PostgresValue { .text(description, type: .timestamptz) }
}

/// JSON text. Binds as `jsonb`; decodes from `json`, `jsonb` and text
/// columns. Use `init(encoding:)` / `decode(_:)` for `Codable` values.
public struct PostgresJSON: Sendable, Hashable, CustomStringConvertible {
    /// The JSON document, as text.
    public var text: String

    /// Wraps JSON text (not validated here; the server validates it).
    public init(_ text: String) { self.text = text }

    /// Encodes `value` with `JSONEncoder` (sorted keys, so equal values give
    /// equal text).
    public init<T: Encodable>(encoding value: T) throws(PostgresError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            self.text = String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            throw PostgresError(code: .invalidArgument, message: "could not encode \(T.self) as JSON: \(error)")
        }
    }

    /// Decodes the document with `JSONDecoder`.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws(PostgresError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            throw PostgresError(code: .decoding, message: "could not decode JSON as \(T.self): \(error)")
        }
    }

    /// The JSON text.
    public var description: String { text }
}

extension PostgresJSON: PostgresEncodable {
    /// `jsonb`.
    public var postgresValue: PostgresValue { .text(text, type: .jsonb) }
}

/// A WAL position (`pg_lsn`), e.g. `16/B374D848`, as a 64-bit number so
/// positions can be compared. Decodes from `pg_lsn` and text columns.
public struct PostgresLSN: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The position as a 64-bit byte offset.
    public var value: UInt64

    /// From a 64-bit position.
    public init(_ value: UInt64) { self.value = value }

    /// Parses PostgreSQL's `XXXXXXXX/XXXXXXXX` text form; nil if malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        self.value = high << 32 | low
    }

    /// Orders by position.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.value < rhs.value }

    /// PostgreSQL's text form (`16/B374D848`).
    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }
}

extension PostgresLSN: PostgresEncodable {
    /// `pg_lsn`.
    public var postgresValue: PostgresValue { .text(description, type: .pgLSN) }
}
