/// Appends big-endian fields to a byte array. For bus frames and their payloads.
public struct ByteWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    /// An empty writer with room for `capacity` bytes.
    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends one byte.
    public mutating func write(_ value: UInt8) { bytes.append(value) }
    /// Appends 2 bytes, big-endian.
    public mutating func write(_ value: UInt16) { appendBigEndian(UInt64(value), count: 2) }
    /// Appends 4 bytes, big-endian.
    public mutating func write(_ value: UInt32) { appendBigEndian(UInt64(value), count: 4) }
    /// Appends 8 bytes, big-endian.
    public mutating func write(_ value: UInt64) { appendBigEndian(value, count: 8) }
    /// Appends 8 bytes, big-endian two's complement.
    public mutating func write(_ value: Int64) { appendBigEndian(UInt64(bitPattern: value), count: 8) }
    /// Appends raw bytes (no length prefix).
    public mutating func write(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }

    /// Appends a one-byte length then the UTF-8 of `string`. Precondition: at most 255 bytes.
    public mutating func writeShortString(_ string: String) {
        let utf8 = Array(string.utf8)
        precondition(utf8.count <= 255, "short string longer than 255 bytes")
        write(UInt8(utf8.count))
        write(utf8)
    }

    /// Appends a four-byte length then `raw`. Precondition: fits in `UInt32`.
    public mutating func writeLengthPrefixed(_ raw: [UInt8]) {
        precondition(raw.count <= Int(UInt32.max), "byte string too long")
        write(UInt32(raw.count))
        write(raw)
    }

    mutating func appendBigEndian(_ value: UInt64, count: Int) {
        var shift = (count - 1) * 8
        while shift >= 0 {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
            shift -= 8
        }
    }
}

/// Reads big-endian fields from a byte array. Every read returns nil (and consumes nothing) when the
/// input ends first, so a parser can never read out of bounds whatever it is given.
public struct ByteReader: Sendable {
    /// The input.
    public let bytes: [UInt8]
    /// The index of the next unread byte.
    public private(set) var offset: Int

    /// A reader at the start of `bytes`.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
    }

    /// Bytes left to read.
    public var remaining: Int { bytes.count - offset }
    /// Whether every byte was read.
    public var isAtEnd: Bool { offset >= bytes.count }

    /// One byte.
    public mutating func readUInt8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// Two bytes, big-endian.
    public mutating func readUInt16() -> UInt16? { readBigEndian(2).map { UInt16(truncatingIfNeeded: $0) } }
    /// Four bytes, big-endian.
    public mutating func readUInt32() -> UInt32? { readBigEndian(4).map { UInt32(truncatingIfNeeded: $0) } }
    /// Eight bytes, big-endian.
    public mutating func readUInt64() -> UInt64? { readBigEndian(8) }
    /// Eight bytes, big-endian two's complement.
    public mutating func readInt64() -> Int64? { readBigEndian(8).map { Int64(bitPattern: $0) } }

    /// The next `count` bytes; nil if `count` is negative or more than remain.
    public mutating func readBytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, count <= remaining else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// A one-byte length then that many bytes of UTF-8; nil when truncated or not UTF-8.
    public mutating func readShortString() -> String? {
        let start = offset
        guard let length = readUInt8(), let raw = readBytes(Int(length)),
            let string = String(validating: raw, as: UTF8.self)
        else {
            offset = start
            return nil
        }
        return string
    }

    /// A four-byte length then that many bytes, if the length is at most `maximumLength`.
    public mutating func readLengthPrefixed(maximumLength: Int) -> [UInt8]? {
        let start = offset
        guard let length = readUInt32(), UInt64(length) <= UInt64(max(0, maximumLength)),
            let raw = readBytes(Int(length))
        else {
            offset = start
            return nil
        }
        return raw
    }

    mutating func readBigEndian(_ count: Int) -> UInt64? {
        guard remaining >= count else { return nil }
        var value: UInt64 = 0
        for index in offset..<(offset + count) { value = value << 8 | UInt64(bytes[index]) }
        offset += count
        return value
    }
}
