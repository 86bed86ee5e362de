import ConnectionThreads
import CHiredis

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns one `redisContext*`. Every hiredis call in this package is in this
/// file, and every C error becomes a `RedisError` in `error(from:)`.
///
/// `@unchecked Sendable`: instances are only ever used from inside jobs of the
/// connection's `BlockingExecutor`, which runs them one at a time on a single
/// thread, so the context and `brokenBy` are never accessed concurrently.
final class HiredisContext: @unchecked Sendable {
    private var context: UnsafeMutablePointer<redisContext>?
    /// Set once the context has failed; hiredis contexts can't recover.
    private var brokenBy: RedisError?

    private init(context: UnsafeMutablePointer<redisContext>) {
        self.context = context
    }

    deinit {
        if let context { redisFree(context) }
    }

    /// Blocking connect with a timeout.
    static func connect(host: String, port: Int, timeout: Duration) throws(RedisError) -> HiredisContext {
        guard let raw = redisConnectWithTimeout(host, Int32(port), makeTimeval(timeout)) else {
            throw RedisError(code: .other, message: "hiredis could not allocate a context")
        }
        if raw.pointee.err != 0 {
            let error = error(from: raw, connecting: true, target: "\(host):\(port)")
            redisFree(raw)
            throw error
        }
        return HiredisContext(context: raw)
    }

    /// Read and write timeout for every later command (SO_RCVTIMEO/SO_SNDTIMEO).
    func setCommandTimeout(_ timeout: Duration) throws(RedisError) {
        let context = try usableContext()
        if redisSetTimeout(context, makeTimeval(timeout)) != REDIS_OK {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
    }

    /// Sends one command and blocks for its reply (bounded by the timeout).
    /// A top-level error reply is thrown as `.server`.
    func command(_ args: [String]) throws(RedisError) -> RedisReply {
        guard !args.isEmpty else {
            throw RedisError(code: .invalidArgument, message: "empty command")
        }
        let context = try usableContext()
        // Binary-safe argv: explicit lengths, so no NUL termination is needed.
        let buffers = args.map { Array($0.utf8) }
        var lengths = buffers.map { $0.count }
        let storage = buffers.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBufferPointer { src in
                src.withMemoryRebound(to: CChar.self) { p.update(from: $0.baseAddress!, count: bytes.count) }
            }
            return p
        }
        defer { storage.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = storage.map { UnsafePointer($0) }

        let raw = argv.withUnsafeMutableBufferPointer { argvBuffer in
            lengths.withUnsafeMutableBufferPointer { lengthBuffer in
                redisCommandArgv(context, Int32(args.count), argvBuffer.baseAddress, lengthBuffer.baseAddress)
            }
        }
        guard let raw else {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        let converted = Self.convert(reply)
        if case .error(let message) = converted {
            throw RedisError(code: .server, message: message)
        }
        return converted
    }

    func close() {
        if let context { redisFree(context) }
        context = nil
        brokenBy = RedisError(code: .connectionClosed, message: "connection closed")
    }

    // MARK: - private

    private func usableContext() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        if let brokenBy { throw brokenBy.code == .connectionClosed ? brokenBy : RedisError(code: .connectionClosed, message: "connection unusable after earlier error: \(brokenBy.message)") }
        guard let context else { throw RedisError(code: .connectionClosed, message: "connection closed") }
        return context
    }

    private func fail(_ error: RedisError) -> RedisError {
        brokenBy = error
        return error
    }

    /// The one place where hiredis's `err`/`errstr` become a `RedisError`.
    private static func error(from context: UnsafeMutablePointer<redisContext>, connecting: Bool, target: String?) -> RedisError {
        let savedErrno = errno
        let err = context.pointee.err
        let text = withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let prefix = target.map { "\($0): " } ?? ""
        let timedOut = savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || savedErrno == ETIMEDOUT
            || text.contains("timed out") || text.contains("temporarily unavailable")
        switch err {
        case REDIS_ERR_IO where timedOut:
            return RedisError(code: .timeout, message: prefix + (connecting ? "connect timed out" : "command timed out") + " (\(text))")
        case REDIS_ERR_IO where connecting, REDIS_ERR_OTHER where connecting:
            return RedisError(code: .connectionFailed, message: prefix + text)
        case REDIS_ERR_IO, REDIS_ERR_EOF:
            return RedisError(code: .io, message: prefix + text)
        case REDIS_ERR_PROTOCOL:
            return RedisError(code: .protocolError, message: prefix + text)
        default:
            return RedisError(code: .other, message: prefix + "hiredis error \(err): \(text)")
        }
    }

    private static func string(_ reply: UnsafeMutablePointer<redisReply>) -> String {
        guard let str = reply.pointee.str else { return "" }
        let bytes = UnsafeRawBufferPointer(start: str, count: Int(reply.pointee.len))
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func elements(_ reply: UnsafeMutablePointer<redisReply>) -> [RedisReply] {
        guard let element = reply.pointee.element else { return [] }
        return (0..<Int(reply.pointee.elements)).map { i in
            element[i].map(convert) ?? .null
        }
    }

    // RESP3 type numbers from hiredis >= 1.0 (absent from 0.14's headers).
    private static let replyDouble: Int32 = 7, replyBool: Int32 = 8, replyMap: Int32 = 9, replySet: Int32 = 10
    private static let replyAttr: Int32 = 11, replyPush: Int32 = 12, replyBigNum: Int32 = 13, replyVerbatim: Int32 = 14

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        switch reply.pointee.type {
        case REDIS_REPLY_STATUS: return .status(string(reply))
        case REDIS_REPLY_ERROR: return .error(string(reply))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.pointee.integer))
        case REDIS_REPLY_STRING, replyVerbatim: return .bulkString(string(reply))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY: return .array(elements(reply))
        // hiredis 1.x also keeps the textual form of doubles in `str`.
        case replyDouble: return .double(Double(string(reply)) ?? .nan)
        case replyBool: return .boolean(reply.pointee.integer != 0)
        case replyBigNum: return .bigNumber(string(reply))
        case replyMap, replyAttr: return .map(elements(reply))
        case replySet: return .set(elements(reply))
        case replyPush: return .push(elements(reply))
        default: return .error("unsupported hiredis reply type \(reply.pointee.type)")
        }
    }
}

/// A zero timeval means "no timeout" to the kernel, so clamp to at least 1 ms.
private func makeTimeval(_ d: Duration) -> timeval {
    let (seconds, attoseconds) = max(d, .milliseconds(1)).components
    return timeval(tv_sec: numericCast(seconds), tv_usec: numericCast(attoseconds / 1_000_000_000_000))
}
