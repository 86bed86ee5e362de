/// One reply from the server. RESP2 types are what hiredis 0.14 (Debian 12)
/// produces; the RESP3 cases are decoded when a newer hiredis delivers them.
///
/// Strings are decoded as UTF-8 (invalid bytes become U+FFFD): this client is
/// for text payloads, as `send` takes `[String]`.
public indirect enum RedisReply: Sendable, Equatable {
    case status(String)
    /// An error reply nested inside an array (e.g. in an EXEC result). A
    /// top-level error reply is thrown as `RedisError(code: .server)` instead.
    case error(String)
    case integer(Int64)
    case bulkString(String)
    case null
    case array([RedisReply])
    case double(Double)
    case boolean(Bool)
    case bigNumber(String)
    case map([RedisReply]) // key, value, key, value...
    case set([RedisReply])
    case push([RedisReply])

    /// The text of a status, bulk string, or big number; nil otherwise.
    public var string: String? {
        switch self {
        case .status(let s), .bulkString(let s), .bigNumber(let s): s
        default: nil
        }
    }

    public var integer: Int64? {
        if case .integer(let i) = self { return i }
        return nil
    }

    public var array: [RedisReply]? {
        switch self {
        case .array(let a), .set(let a), .push(let a): a
        default: nil
        }
    }

    public var isNull: Bool { self == .null }
}
