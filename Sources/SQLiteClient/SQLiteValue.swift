/// A value bound to a statement parameter or read from a result column.
public enum SQLiteValue: Sendable, Equatable, Hashable {
    /// `NULL`.
    case null
    /// A 64-bit signed integer.
    case integer(Int64)
    /// A 64-bit IEEE floating-point number.
    case real(Double)
    /// UTF-8 text.
    case text(String)
    /// Raw bytes.
    case blob([UInt8])
}

extension SQLiteValue: ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral {
    /// Creates ``integer(_:)``.
    public init(integerLiteral value: Int64) { self = .integer(value) }
    /// Creates ``real(_:)``.
    public init(floatLiteral value: Double) { self = .real(value) }
    /// Creates ``text(_:)``.
    public init(stringLiteral value: String) { self = .text(value) }
}

/// A Swift type that converts to and from an ``SQLiteValue``.
public protocol SQLiteValueConvertible: Sendable {
    /// The value to bind.
    var sqliteValue: SQLiteValue { get }
    /// Decodes a column value; throws ``SQLiteError/Code/typeMismatch`` if it has another type.
    init(sqliteValue: SQLiteValue) throws(SQLiteError)
}

extension Int64: SQLiteValueConvertible {
    /// ``SQLiteValue/integer(_:)``.
    public var sqliteValue: SQLiteValue { .integer(self) }
    /// Accepts ``SQLiteValue/integer(_:)`` only.
    public init(sqliteValue: SQLiteValue) throws(SQLiteError) {
        guard case .integer(let v) = sqliteValue else { throw .typeMismatch("expected INTEGER, got \(sqliteValue)") }
        self = v
    }
}

extension Int: SQLiteValueConvertible {
    /// ``SQLiteValue/integer(_:)``.
    public var sqliteValue: SQLiteValue { .integer(Int64(self)) }
    /// Accepts ``SQLiteValue/integer(_:)`` only.
    public init(sqliteValue: SQLiteValue) throws(SQLiteError) {
        guard case .integer(let v) = sqliteValue, let i = Int(exactly: v) else {
            throw .typeMismatch("expected INTEGER, got \(sqliteValue)")
        }
        self = i
    }
}

extension Double: SQLiteValueConvertible {
    /// ``SQLiteValue/real(_:)``.
    public var sqliteValue: SQLiteValue { .real(self) }
    /// Accepts ``SQLiteValue/real(_:)`` and ``SQLiteValue/integer(_:)``.
    public init(sqliteValue: SQLiteValue) throws(SQLiteError) {
        switch sqliteValue {
        case .real(let v): self = v
        case .integer(let v): self = Double(v)
        default: throw .typeMismatch("expected REAL, got \(sqliteValue)")
        }
    }
}

extension String: SQLiteValueConvertible {
    /// ``SQLiteValue/text(_:)``.
    public var sqliteValue: SQLiteValue { .text(self) }
    /// Accepts ``SQLiteValue/text(_:)`` only.
    public init(sqliteValue: SQLiteValue) throws(SQLiteError) {
        guard case .text(let v) = sqliteValue else { throw .typeMismatch("expected TEXT, got \(sqliteValue)") }
        self = v
    }
}

extension Array: SQLiteValueConvertible where Element == UInt8 {
    /// ``SQLiteValue/blob(_:)``.
    public var sqliteValue: SQLiteValue { .blob(self) }
    /// Accepts ``SQLiteValue/blob(_:)`` only.
    public init(sqliteValue: SQLiteValue) throws(SQLiteError) {
        guard case .blob(let v) = sqliteValue else { throw .typeMismatch("expected BLOB, got \(sqliteValue)") }
        self = v
    }
}

extension Optional: SQLiteValueConvertible where Wrapped: SQLiteValueConvertible {
    /// ``SQLiteValue/null`` for `nil`, the wrapped value's otherwise.
    public var sqliteValue: SQLiteValue { self?.sqliteValue ?? .null }
    /// `nil` for ``SQLiteValue/null``, the wrapped type's decoding otherwise.
    public init(sqliteValue: SQLiteValue) throws(SQLiteError) {
        if case .null = sqliteValue {
            self = nil
        } else {
            self = try Wrapped(sqliteValue: sqliteValue)
        }
    }
}

/// One result row: the column values in select order.
public struct SQLiteRow: Sendable, Equatable {
    /// The column values, in the order of the `SELECT` list.
    public var values: [SQLiteValue]

    /// Creates a row from its values.
    public init(values: [SQLiteValue]) {
        self.values = values
    }

    /// Decodes column `index` as `T`; throws ``SQLiteError/Code/typeMismatch`` on a type mismatch or
    /// ``SQLiteError/Code/misuse`` for an index out of range.
    public func get<T: SQLiteValueConvertible>(_ index: Int, as type: T.Type = T.self) throws(SQLiteError) -> T {
        guard values.indices.contains(index) else {
            throw .misuse("column \(index) out of range (row has \(values.count) columns)")
        }
        do {
            return try T(sqliteValue: values[index])
        } catch {
            throw SQLiteError.typeMismatch("column \(index): \(error.message)")
        }
    }
}
