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
    /// One decoded reply on a subscribed connection.
    enum PubSubFrame: Sendable, Equatable {
        case message(channel: String, payload: [UInt8])
        case subscribed(channel: String)
        case pong
        case other(RedisReply)
    }


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

    /// Read and write timeout for every later blocking read/write (SO_RCVTIMEO/SO_SNDTIMEO).
    func setCommandTimeout(_ timeout: Duration) throws(RedisError) {
        let context = try usableContext()
        if redisSetTimeout(context, makeTimeval(timeout)) != REDIS_OK {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
    }

    /// Sends one command and blocks for its reply (bounded by the timeout).
    /// A top-level error reply is thrown as `.server`.
    func command(_ args: [String]) throws(RedisError) -> RedisReply {
        try append(args)
        let converted = try nextReply()
        if case .error(let message) = converted {
            throw RedisError(code: .server, message: message)
        }
        return converted
    }

    /// Appends one command to the output buffer (no I/O): the pipelining half
    /// of `command`. Binary-safe argv with explicit lengths.
    func append(_ args: [String]) throws(RedisError) {
        guard !args.isEmpty else {
            throw RedisError(code: .invalidArgument, message: "empty command")
        }
        let context = try usableContext()
        // One contiguous buffer for every argument, pointers into it.
        var bytes: [UInt8] = []
        var lengths: [Int] = []
        lengths.reserveCapacity(args.count)
        for arg in args {
            let before = bytes.count
            bytes.append(contentsOf: arg.utf8)
            lengths.append(bytes.count - before)
        }
        if bytes.isEmpty { bytes.append(0) } // a valid base address even for all-empty args
        let status = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                var argv: [UnsafePointer<CChar>?] = []
                argv.reserveCapacity(args.count)
                var offset = 0
                for length in lengths {
                    argv.append(chars.baseAddress! + offset)
                    offset += length
                }
                return argv.withUnsafeMutableBufferPointer { argvBuffer in
                    lengths.withUnsafeBufferPointer { lengthBuffer in
                        redisAppendCommandArgv(context, Int32(args.count), argvBuffer.baseAddress, lengthBuffer.baseAddress)
                    }
                }
            }
        }
        if status != REDIS_OK {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
    }

    /// Flushes the output buffer if needed, then blocks for the next reply
    /// (bounded by the socket timeout). Error replies are returned as
    /// `.error`, not thrown: they don't break the connection.
    func nextReply() throws(RedisError) -> RedisReply {
        let context = try usableContext()
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Writes the whole output buffer (bounded by the send timeout).
    func flush() throws(RedisError) {
        let context = try usableContext()
        var done: Int32 = 0
        repeat {
            if redisBufferWrite(context, &done) != REDIS_OK {
                throw fail(Self.error(from: context, connecting: false, target: nil))
            }
        } while done == 0
    }

    /// Waits at most `timeout` for the next complete reply, decoded as a
    /// pub/sub frame; nil when none is complete yet (the context stays
    /// usable, unlike after a socket timeout).
    func pollPubSubFrame(timeout: Duration) throws(RedisError) -> PubSubFrame? {
        let context = try usableContext()
        if let frame = try bufferedFrame(context) { return frame }
        var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
        let (seconds, attoseconds) = max(timeout, .zero).components
        let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        let ready = poll(&descriptor, 1, milliseconds)
        if ready < 0 {
            if errno == EINTR { return nil }
            throw fail(RedisError(code: .io, message: "poll failed: errno \(errno)"))
        }
        if ready == 0 { return nil }
        if redisBufferRead(context) != REDIS_OK {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
        return try bufferedFrame(context)
    }

    private func bufferedFrame(_ context: UnsafeMutablePointer<redisContext>) throws(RedisError) -> PubSubFrame? {
        var raw: UnsafeMutableRawPointer?
        if redisGetReplyFromReader(context, &raw) != REDIS_OK {
            throw fail(Self.error(from: context, connecting: false, target: nil))
        }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.pubSubFrame(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// `message`/`pmessage` payloads keep their exact bytes (`str` + `len`).
    private static func pubSubFrame(_ reply: UnsafeMutablePointer<redisReply>) -> PubSubFrame {
        let type = reply.pointee.type
        guard type == REDIS_REPLY_ARRAY || type == replyPush, let element = reply.pointee.element,
              reply.pointee.elements >= 1, let first = element[0],
              first.pointee.type == REDIS_REPLY_STRING || first.pointee.type == REDIS_REPLY_STATUS
        else {
            return .other(convert(reply))
        }
        let count = Int(reply.pointee.elements)
        switch string(first).lowercased() {
        case "message" where count == 3:
            guard let channel = element[1], let payload = element[2] else { break }
            return .message(channel: string(channel), payload: bytes(payload))
        case "pmessage" where count == 4:
            guard let channel = element[2], let payload = element[3] else { break }
            return .message(channel: string(channel), payload: bytes(payload))
        case "subscribe" where count == 3:
            guard let channel = element[1] else { break }
            return .subscribed(channel: string(channel))
        case "pong":
            return .pong
        default:
            break
        }
        return .other(convert(reply))
    }

    private static func bytes(_ reply: UnsafeMutablePointer<redisReply>) -> [UInt8] {
        guard let str = reply.pointee.str else { return [] }
        return Array(UnsafeRawBufferPointer(start: str, count: Int(reply.pointee.len)))
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
