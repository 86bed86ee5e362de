import Foundation

/// A result column: its name and type OID.
public struct PostgresColumn: Sendable, Hashable {
    /// The column's name (`?column?` for unnamed expressions).
    public let name: String
    /// The column's type OID.
    public let type: PostgresType
    /// Zero-based position in the row.
    public let index: Int

    /// A column description.
    public init(name: String, type: PostgresType, index: Int) {
        self.name = name
        self.type = type
        self.index = index
    }
}

/// One field of one row, in the server's text format, with the column it
/// belongs to. What `PostgresDecodable` types decode from.
public struct PostgresCell: Sendable, Hashable {
    /// The column.
    public let column: PostgresColumn
    /// The text-format bytes; `nil` is SQL NULL.
    public let bytes: [UInt8]?

    /// A cell (useful to test decoders).
    public init(column: PostgresColumn, bytes: [UInt8]?) {
        self.column = column
        self.bytes = bytes
    }

    /// A cell of type `type` holding `text` (nil: NULL), named `name`.
    public init(type: PostgresType, text: String?, name: String = "value") {
        self.init(column: PostgresColumn(name: name, type: type, index: 0), bytes: text.map { Array($0.utf8) })
    }

    /// Whether the field is SQL NULL.
    public var isNull: Bool { bytes == nil }

    /// The field's text (nil for NULL).
    public var text: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    /// The bytes, or a `.decoding` error naming `T` when the field is NULL.
    public func requireBytes<T>(for type: T.Type) throws(PostgresError) -> [UInt8] {
        guard let bytes else {
            throw PostgresError(code: .decoding, message: "column \"\(column.name)\" (\(column.type)) is NULL; decode \(T.self)? to allow NULL")
        }
        return bytes
    }

    /// The non-NULL text, or a `.decoding` error naming `T`.
    public func requireText<T>(for type: T.Type) throws(PostgresError) -> String {
        String(decoding: try requireBytes(for: type), as: UTF8.self)
    }

    /// A `.decoding` error for this cell: "column "x" (int4): cannot decode T from '…': reason".
    public func decodingError<T>(_ type: T.Type, _ reason: String) -> PostgresError {
        var shown = text ?? "NULL"
        if shown.count > 64 { shown = String(shown.prefix(64)) + "…" }
        return PostgresError(
            code: .decoding,
            message: "column \"\(column.name)\" (\(column.type)): cannot decode \(T.self) from '\(shown)': \(reason)")
    }

    /// Throws unless the column's type is one of `types`.
    public func requireType<T>(_ types: Set<PostgresType>, for type: T.Type) throws(PostgresError) {
        guard types.contains(column.type) else {
            let expected = types.map(\.description).sorted().joined(separator: ", ")
            throw decodingError(T.self, "column type must be one of \(expected)")
        }
    }
}

/// A Swift type that can be read from a result field. Decoding is strict
/// about column types (e.g. `Int` reads `int2/int4/int8/oid`, not `text`),
/// except `String`, which reads any type's text form. A NULL field decodes
/// only into an `Optional`.
public protocol PostgresDecodable: Sendable {
    /// Decodes the cell or throws a `.decoding` error.
    static func decode(from cell: PostgresCell) throws(PostgresError) -> Self
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    /// `nil` for NULL, else the wrapped type's decoding.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Wrapped? {
        guard cell.bytes != nil else { return nil }
        return try Wrapped.decode(from: cell)
    }
}

extension String: PostgresDecodable {
    /// The text form of any type (e.g. `pg_lsn`, `numeric`, `interval`).
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> String {
        try cell.requireText(for: String.self)
    }
}

private let integerTypes: Set<PostgresType> = [.int2, .int4, .int8, .oid, .numeric]

private func decodeInteger<T: FixedWidthInteger>(_ cell: PostgresCell, as type: T.Type) throws(PostgresError) -> T {
    try cell.requireType(integerTypes, for: T.self)
    let text = try cell.requireText(for: T.self)
    guard let value = T(text) else {
        throw cell.decodingError(T.self, Int64(text) == nil ? "not an integer" : "out of range")
    }
    return value
}

extension Int: PostgresDecodable {
    /// From `int2`, `int4`, `int8`, `oid` (or an integral `numeric`).
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int { try decodeInteger(cell, as: Int.self) }
}

extension Int64: PostgresDecodable {
    /// From `int2`, `int4`, `int8`, `oid` (or an integral `numeric`).
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int64 { try decodeInteger(cell, as: Int64.self) }
}

extension Int32: PostgresDecodable {
    /// From `int2`, `int4`, `int8`, `oid` (or an integral `numeric`), if in range.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int32 { try decodeInteger(cell, as: Int32.self) }
}

extension Int16: PostgresDecodable {
    /// From `int2`, `int4`, `int8`, `oid` (or an integral `numeric`), if in range.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int16 { try decodeInteger(cell, as: Int16.self) }
}

extension UInt64: PostgresDecodable {
    /// From `int2`, `int4`, `int8`, `oid` or integral `numeric`, if not negative.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> UInt64 { try decodeInteger(cell, as: UInt64.self) }
}

extension Bool: PostgresDecodable {
    /// From `bool` (`t` / `f`).
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Bool {
        try cell.requireType([.bool], for: Bool.self)
        switch try cell.requireText(for: Bool.self) {
        case "t", "true": return true
        case "f", "false": return false
        default: throw cell.decodingError(Bool.self, "expected t or f")
        }
    }
}

extension Double: PostgresDecodable {
    /// From `float4`, `float8`, `numeric` and the integer types.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Double {
        try cell.requireType([.float4, .float8, .numeric, .int2, .int4, .int8, .oid], for: Double.self)
        let text = try cell.requireText(for: Double.self)
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default:
            guard let value = Double(text) else { throw cell.decodingError(Double.self, "not a number") }
            return value
        }
    }
}

extension Array: PostgresDecodable where Element == UInt8 {
    /// From `bytea` (hex or escape output format).
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> [UInt8] {
        try cell.requireType([.bytea], for: [UInt8].self)
        let bytes = try cell.requireBytes(for: [UInt8].self)
        do throws(PostgresByteaText.ParseError) {
            return try PostgresByteaText.parse(bytes)
        } catch {
            throw cell.decodingError([UInt8].self, "malformed bytea text (expected \\x followed by hex digit pairs)")
        }
    }
}

extension UUID: PostgresDecodable {
    /// From `uuid` or a textual column holding a UUID.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> UUID {
        guard cell.column.type == .uuid || cell.column.type.isTextual else {
            throw cell.decodingError(UUID.self, "column type must be uuid or text")
        }
        guard let uuid = UUID(uuidString: try cell.requireText(for: UUID.self)) else {
            throw cell.decodingError(UUID.self, "not a UUID")
        }
        return uuid
    }
}

extension PostgresJSON: PostgresDecodable {
    /// From `json`, `jsonb` or a textual column.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> PostgresJSON {
        guard cell.column.type == .json || cell.column.type == .jsonb || cell.column.type.isTextual else {
            throw cell.decodingError(PostgresJSON.self, "column type must be json, jsonb or text")
        }
        return PostgresJSON(try cell.requireText(for: PostgresJSON.self))
    }
}

extension PostgresLSN: PostgresDecodable {
    /// From `pg_lsn` or a textual column (`16/B374D848`).
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> PostgresLSN {
        guard cell.column.type == .pgLSN || cell.column.type.isTextual else {
            throw cell.decodingError(PostgresLSN.self, "column type must be pg_lsn or text")
        }
        guard let lsn = PostgresLSN(try cell.requireText(for: PostgresLSN.self)) else {
            throw cell.decodingError(PostgresLSN.self, "expected XXXXXXXX/XXXXXXXX")
        }
        return lsn
    }
}

extension PostgresTimestamp: PostgresDecodable {
    /// From `timestamptz`, `timestamp` (read as UTC) or `date` (midnight UTC),
    /// in the ISO DateStyle. `infinity` cannot be represented and throws.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> PostgresTimestamp {
        try cell.requireType([.timestamptz, .timestamp, .date], for: PostgresTimestamp.self)
        let text = try cell.requireText(for: PostgresTimestamp.self)
        do throws(PostgresTimestampText.ParseError) {
            return PostgresTimestamp(microsecondsSince1970: try PostgresTimestampText.parse(text))
        } catch .infinite {
            throw cell.decodingError(PostgresTimestamp.self, "infinite timestamps cannot be represented")
        } catch {
            throw cell.decodingError(PostgresTimestamp.self, "expected ISO format YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM]")
        }
    }
}

extension Date: PostgresDecodable {
    /// As `PostgresTimestamp`, converted to a `Date`.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Date {
        do throws(PostgresError) {
            return try PostgresTimestamp.decode(from: cell).date
        } catch {
            throw PostgresError(code: .decoding, message: error.message.replacingOccurrences(of: "PostgresTimestamp", with: "Date"))
        }
    }
}

/// The rows of one statement's result, with column names and types.
///
/// A random-access collection of `PostgresRow`. Values stay in the server's
/// text format until decoded.
public struct PostgresRows: Sendable, RandomAccessCollection {
    final class Storage: Sendable {
        let columns: [PostgresColumn]
        let cells: [[UInt8]?] // row-major
        let lookup: [String: Int] // first column of each name

        init(columns: [PostgresColumn], cells: [[UInt8]?]) {
            self.columns = columns
            self.cells = cells
            var lookup: [String: Int] = [:]
            for column in columns where lookup[column.name] == nil { lookup[column.name] = column.index }
            self.lookup = lookup
        }
    }

    let storage: Storage
    /// The result columns (empty for statements without a result set).
    public var columns: [PostgresColumn] { storage.columns }
    /// The command tag, e.g. `SELECT 3`, `INSERT 0 1`, `COMMIT`.
    public let commandTag: String
    /// Rows affected by INSERT/UPDATE/DELETE/MERGE/SELECT/…, when the tag has a count.
    public let affectedRows: Int?
    /// Number of rows.
    public let count: Int

    /// Builds rows from text cells (row-major, `columns.count` per row).
    public init(columns: [PostgresColumn], cells: [[UInt8]?], commandTag: String = "", affectedRows: Int? = nil) {
        precondition(columns.isEmpty ? cells.isEmpty : cells.count % columns.count == 0, "cells must fill whole rows")
        self.storage = Storage(columns: columns, cells: cells)
        self.commandTag = commandTag
        self.affectedRows = affectedRows
        self.count = columns.isEmpty ? 0 : cells.count / columns.count
    }

    /// 0.
    public var startIndex: Int { 0 }
    /// `count`.
    public var endIndex: Int { count }

    /// The row at `position`.
    public subscript(position: Int) -> PostgresRow {
        precondition(position >= 0 && position < count, "row index out of range")
        return PostgresRow(storage: storage, row: position)
    }

    /// Decodes the first column of the first row (e.g. `SELECT count(*) …`);
    /// a `.decoding` error when there is no row or no column.
    public func scalar<T: PostgresDecodable>(_ type: T.Type = T.self) throws(PostgresError) -> T {
        guard let first else { throw PostgresError(code: .decoding, message: "expected a row, the result is empty") }
        return try first.decode(T.self, at: 0)
    }

    /// All rows as text (nil for NULL), like `PostgresConnection.query`.
    public var textRows: [[String?]] {
        map { row in (0..<columns.count).map { row.cell(at: $0).text } }
    }
}

/// One row of a `PostgresRows`.
public struct PostgresRow: Sendable {
    let storage: PostgresRows.Storage
    let row: Int

    /// The result's columns.
    public var columns: [PostgresColumn] { storage.columns }

    /// The cell in column `index` (zero-based; traps when out of range).
    public func cell(at index: Int) -> PostgresCell {
        let columns = storage.columns
        precondition(index >= 0 && index < columns.count, "column index out of range")
        return PostgresCell(column: columns[index], bytes: storage.cells[row * columns.count + index])
    }

    /// The cell of the first column named `name`, if any.
    public subscript(column name: String) -> PostgresCell? {
        storage.lookup[name].map { cell(at: $0) }
    }

    /// Decodes the first column named `column`; `.decoding` error when there
    /// is no such column or the value does not fit `type`.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, column: String) throws(PostgresError) -> T {
        guard let index = storage.lookup[column] else {
            let names = storage.columns.map(\.name).joined(separator: ", ")
            throw PostgresError(code: .decoding, message: "no column \"\(column)\" (columns: \(names))")
        }
        return try T.decode(from: cell(at: index))
    }

    /// Decodes column `index` (zero-based); `.decoding` error when out of
    /// range or the value does not fit `type`.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, at index: Int) throws(PostgresError) -> T {
        guard index >= 0 && index < storage.columns.count else {
            throw PostgresError(code: .decoding, message: "no column at index \(index) (the row has \(storage.columns.count))")
        }
        return try T.decode(from: cell(at: index))
    }
}
