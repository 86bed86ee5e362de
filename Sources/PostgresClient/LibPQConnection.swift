import CLibPQ
import ConnectionThreads
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One statement's result, still in libpq's text format.
struct RawResult: Sendable {
    var columns: [PostgresColumn]
    var cells: [[UInt8]?]
    var commandTag: String
    var affectedRows: Int?

    static let empty = RawResult(columns: [], cells: [], commandTag: "", affectedRows: nil)

    var rows: PostgresRows {
        PostgresRows(columns: columns, cells: cells, commandTag: commandTag, affectedRows: affectedRows)
    }
}

/// What the connection thread learns about the session after each call.
struct SessionSnapshot: Sendable {
    var inHotStandby: Bool?
    var defaultTransactionReadOnly: Bool?
    var transactionStatus: PostgresTransactionStatus
    var isBad: Bool
}

/// Owns one `PGconn*`. Every libpq call that touches a connection is in this
/// file, and every libpq failure becomes a `PostgresError` here.
///
/// The connection is in non-blocking mode: statements are sent with
/// `PQsendQueryParams` and their results awaited with `poll()` in short
/// slices, so a call gives up at its deadline (or when `shouldStop` says so)
/// even when the server hangs.
///
/// `@unchecked Sendable`: instances are only used from inside jobs of the
/// connection's `BlockingExecutor`, which runs them one at a time on a single
/// thread, so the `PGconn` is never touched concurrently (libpq requires that).
/// The only members read from other threads are immutable `let`s.
final class LibPQConnection: @unchecked Sendable {
    private var connection: OpaquePointer?
    /// Set when a call was abandoned mid-flight: the protocol state is unknown.
    private var poisoned: PostgresError?
    /// The last FATAL/PANIC notice the server sent outside a statement.
    private let notices = NoticeBox()

    /// Sends cancel requests; usable from any thread.
    let cancelHandle: CancelHandle?
    /// Host, port, version and pid, read once after connecting.
    let identity: SessionIdentity

    /// How long one `poll()` waits before re-checking the deadline and `shouldStop`.
    static let pollSlice: Duration = .milliseconds(50)

    private init(connection: OpaquePointer, cancelHandle: CancelHandle?, identity: SessionIdentity) {
        self.connection = connection
        self.cancelHandle = cancelHandle
        self.identity = identity
    }

    deinit {
        if let connection { PQfinish(connection) }
    }

    // MARK: - connect

    /// Connects without blocking past `deadline` (`PQconnectStartParams` +
    /// `PQconnectPoll`). `conninfo` may be a `key=value` string or a
    /// `postgresql://` URI (multi-host included: libpq tries the hosts in
    /// turn, all within the one deadline). Then sets `DateStyle` to ISO if the
    /// server uses another one (decoding relies on it) and `statement_timeout`
    /// when asked.
    static func connect(
        conninfo: String, deadline: ContinuousClock.Instant, statementTimeout: Duration?,
        shouldStop: () -> Bool
    ) throws(PostgresError) -> LibPQConnection {
        guard !conninfo.utf8.contains(0) else {
            throw PostgresError(code: .invalidArgument, message: "the connection string cannot contain NUL bytes")
        }
        let raw = withCStrings(["dbname"]) { k in
            withCStrings([conninfo]) { v in PQconnectStartParams(k, v, 1) }
        }
        guard let raw else {
            throw PostgresError(code: .connectionFailed, message: "libpq could not allocate a connection")
        }
        var handed = false
        defer { if !handed { PQfinish(raw) } }
        guard PQstatus(raw) != CONNECTION_BAD else {
            throw PostgresError(code: .connectionFailed, message: connectionMessage(raw))
        }
        var state = PGRES_POLLING_WRITING
        while state != PGRES_POLLING_OK {
            switch state {
            case PGRES_POLLING_FAILED:
                throw PostgresError(code: .connectionFailed, message: connectionMessage(raw))
            case PGRES_POLLING_READING, PGRES_POLLING_WRITING:
                let events = Int16(state == PGRES_POLLING_READING ? POLLIN : POLLOUT)
                switch waitForSocket(raw, events: events, deadline: deadline, shouldStop: shouldStop) {
                case .ready: break
                case .timedOut:
                    throw PostgresError(code: .connectionFailed, message: "connect timed out (deadline passed)\(describeTarget(raw))")
                case .stopped:
                    throw PostgresError(code: .connectionClosed, message: "connect abandoned")
                }
            default:
                break // PGRES_POLLING_ACTIVE (unused by libpq): poll again
            }
            state = PQconnectPoll(raw)
        }
        guard PQsetnonblocking(raw, 1) == 0 else {
            throw PostgresError(code: .connectionFailed, message: "could not switch to non-blocking mode: \(connectionMessage(raw))")
        }
        let cancel = PQgetCancel(raw).map(CancelHandle.init)
        let identity = SessionIdentity(
            host: PQhost(raw).map { String(cString: $0) } ?? "",
            port: PQport(raw).flatMap { Int(String(cString: $0)) } ?? 5432,
            serverVersion: Int(PQserverVersion(raw)),
            serverVersionText: PQparameterStatus(raw, "server_version").map { String(cString: $0) } ?? "",
            backendPID: PQbackendPID(raw))
        let connection = LibPQConnection(connection: raw, cancelHandle: cancel, identity: identity)
        handed = true
        // Server notices would otherwise be printed on stderr; FATAL ones are
        // kept to explain a connection that then drops.
        PQsetNoticeReceiver(raw, noticeReceiver, Unmanaged.passUnretained(connection.notices).toOpaque())

        var setup: [String] = []
        let dateStyle = PQparameterStatus(raw, "DateStyle").map { String(cString: $0) } ?? ""
        if !dateStyle.hasPrefix("ISO") { setup.append("SET DateStyle TO ISO") }
        if let statementTimeout {
            setup.append("SET statement_timeout TO \(max(0, milliseconds(rounding: statementTimeout)))")
        }
        if !setup.isEmpty {
            _ = try connection.run(.simple(setup.joined(separator: "; ")), deadline: deadline, shouldStop: shouldStop)
        }
        return connection
    }

    // MARK: - statements

    enum Statement {
        /// Extended protocol, one statement, bound parameters.
        case parameters(String, [PostgresValue])
        /// Simple protocol, no parameters, may hold several statements.
        case simple(String)
    }

    /// Sends the statement and waits for its result until `deadline`.
    /// `.timeout` (or `.connectionClosed` when stopped) leaves the connection
    /// unusable: the caller must cancel and close it.
    func run(_ statement: Statement, deadline: ContinuousClock.Instant?, shouldStop: () -> Bool) throws(PostgresError) -> RawResult {
        let connection = try usableConnection()
        try send(statement, on: connection)
        do throws(PostgresError) {
            try flush(connection, deadline: deadline, shouldStop: shouldStop)
            return try collectResults(connection, deadline: deadline, shouldStop: shouldStop)
        } catch {
            if error.code == .timeout || error.code == .connectionClosed || error.code == .cancelled { poisoned = error }
            throw error
        }
    }

    private func usableConnection() throws(PostgresError) -> OpaquePointer {
        if let poisoned {
            throw PostgresError(code: .connectionLost, message: "connection unusable after an earlier \(poisoned.code): \(poisoned.message)")
        }
        guard let connection else {
            throw PostgresError(code: .connectionClosed, message: "connection closed")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            throw lostError(connection)
        }
        return connection
    }

    private func send(_ statement: Statement, on connection: OpaquePointer) throws(PostgresError) {
        let sent: Int32
        switch statement {
        case .simple(let sql):
            guard !sql.utf8.contains(0) else {
                throw PostgresError(code: .invalidArgument, message: "SQL text cannot contain NUL bytes")
            }
            sent = PQsendQuery(connection, sql)
        case .parameters(let sql, let params):
            guard !sql.utf8.contains(0) else {
                throw PostgresError(code: .invalidArgument, message: "SQL text cannot contain NUL bytes")
            }
            guard params.count <= 65535 else {
                throw PostgresError(code: .invalidArgument, message: "at most 65535 parameters can be bound (got \(params.count))")
            }
            for (i, p) in params.enumerated() where p.format == .text && (p.bytes?.contains(0) ?? false) {
                throw PostgresError(code: .invalidArgument, message: "parameter $\(i + 1) contains a NUL byte (bind binary data as [UInt8])")
            }
            sent = withParameterArrays(params) { types, values, lengths, formats in
                PQsendQueryParams(connection, sql, Int32(params.count), types, values, lengths, formats, 0)
            }
        }
        guard sent == 1 else {
            if PQstatus(connection) == CONNECTION_BAD { throw lostError(connection) }
            throw PostgresError(code: .unexpectedResult, message: Self.connectionMessage(connection))
        }
    }

    private func flush(_ connection: OpaquePointer, deadline: ContinuousClock.Instant?, shouldStop: () -> Bool) throws(PostgresError) {
        while true {
            let status = PQflush(connection)
            if status == 0 { return }
            if status < 0 { throw lostError(connection) }
            try wait(connection, events: Int16(POLLIN | POLLOUT), deadline: deadline, shouldStop: shouldStop)
            // Input must be consumed while flushing, or a server that is
            // itself blocked writing to us could deadlock.
            if PQconsumeInput(connection) == 0 { throw lostError(connection) }
        }
    }

    private func collectResults(_ connection: OpaquePointer, deadline: ContinuousClock.Instant?, shouldStop: () -> Bool) throws(PostgresError) -> RawResult {
        var outcome = RawResult.empty
        var failure: PostgresError?
        while true {
            while PQisBusy(connection) == 1 {
                try wait(connection, events: Int16(POLLIN), deadline: deadline, shouldStop: shouldStop)
                if PQconsumeInput(connection) == 0 { throw lostError(connection) }
            }
            guard let result = PQgetResult(connection) else { break }
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY, PGRES_TUPLES_OK:
                if failure == nil { outcome = Self.rawResult(result) }
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
                if failure == nil { failure = resultError(result, connection: connection) }
            case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
                // Leaving COPY mode needs a protocol dance this client does
                // not do: the connection cannot be reused.
                let error = PostgresError(code: .unexpectedResult, message: "COPY is not supported by this client")
                poisoned = error
                throw error
            default:
                let status = String(cString: PQresStatus(PQresultStatus(result)))
                if failure == nil { failure = PostgresError(code: .unexpectedResult, message: "unexpected result status \(status)") }
            }
        }
        if let failure { throw failure }
        return outcome
    }

    private static func rawResult(_ result: OpaquePointer) -> RawResult {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [PostgresColumn] = []
        columns.reserveCapacity(columnCount)
        for c in 0..<columnCount {
            let name = PQfname(result, Int32(c)).map { String(cString: $0) } ?? ""
            columns.append(PostgresColumn(name: name, type: PostgresType(rawValue: PQftype(result, Int32(c))), index: c))
        }
        var cells: [[UInt8]?] = []
        cells.reserveCapacity(rowCount * columnCount)
        for r in 0..<Int32(rowCount) {
            for c in 0..<Int32(columnCount) {
                if PQgetisnull(result, r, c) != 0 {
                    cells.append(nil)
                    continue
                }
                let length = Int(PQgetlength(result, r, c))
                if let value = PQgetvalue(result, r, c), length > 0 {
                    cells.append(Array(UnsafeRawBufferPointer(start: value, count: length)))
                } else {
                    cells.append([])
                }
            }
        }
        let tag = PQcmdStatus(result).map { String(cString: $0) } ?? ""
        let tuples = PQcmdTuples(result).map { String(cString: $0) } ?? ""
        return RawResult(columns: columns, cells: cells, commandTag: tag, affectedRows: Int(tuples))
    }

    // MARK: - notifications

    /// Returns the notifications libpq has already read; if there are none,
    /// waits up to `timeout` for input first. Throws `.connectionLost` when
    /// the connection broke.
    func notifications(waitingUpTo timeout: Duration) throws(PostgresError) -> [PostgresNotification] {
        let connection = try usableConnection()
        var pending = drainNotifications(connection)
        if !pending.isEmpty { return pending }
        let fd = PQsocket(connection)
        guard fd >= 0 else { throw lostError(connection) }
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, Int32(Self.milliseconds(rounding: timeout)))
        if ready > 0 {
            if PQconsumeInput(connection) == 0 { throw lostError(connection) }
            pending = drainNotifications(connection)
        }
        return pending
    }

    private func drainNotifications(_ connection: OpaquePointer) -> [PostgresNotification] {
        var out: [PostgresNotification] = []
        while let notify = PQnotifies(connection) {
            let n = notify.pointee
            out.append(PostgresNotification(
                channel: n.relname.map { String(cString: $0) } ?? "",
                payload: n.extra.map { String(cString: $0) } ?? "",
                pid: n.be_pid))
            PQfreemem(notify)
        }
        return out
    }

    // MARK: - status

    /// The session state libpq has tracked so far (no I/O).
    func snapshot() -> SessionSnapshot {
        guard let connection else {
            return SessionSnapshot(inHotStandby: nil, defaultTransactionReadOnly: nil, transactionStatus: .unknown, isBad: true)
        }
        func onOff(_ name: String) -> Bool? {
            switch PQparameterStatus(connection, name).map({ String(cString: $0) }) {
            case "on": return true
            case "off": return false
            default: return nil
            }
        }
        let transaction: PostgresTransactionStatus
        switch PQtransactionStatus(connection) {
        case PQTRANS_IDLE: transaction = .idle
        case PQTRANS_ACTIVE: transaction = .active
        case PQTRANS_INTRANS: transaction = .inTransaction
        case PQTRANS_INERROR: transaction = .failedTransaction
        default: transaction = .unknown
        }
        return SessionSnapshot(
            inHotStandby: onOff("in_hot_standby"),
            defaultTransactionReadOnly: onOff("default_transaction_read_only"),
            transactionStatus: poisoned == nil ? transaction : .unknown,
            isBad: poisoned != nil || PQstatus(connection) == CONNECTION_BAD)
    }

    /// `PQfinish`. Idempotent.
    func close() {
        if let connection { PQfinish(connection) }
        connection = nil
    }

    // MARK: - waiting

    enum WaitOutcome {
        case ready, timedOut, stopped
    }

    private func wait(_ connection: OpaquePointer, events: Int16, deadline: ContinuousClock.Instant?, shouldStop: () -> Bool) throws(PostgresError) {
        switch Self.waitForSocket(connection, events: events, deadline: deadline, shouldStop: shouldStop) {
        case .ready: return
        case .timedOut: throw PostgresError(code: .timeout, message: "deadline passed while waiting for the server")
        case .stopped: throw PostgresError(code: .connectionClosed, message: "call abandoned")
        }
    }

    /// `poll()` on the connection's socket in slices of `pollSlice`,
    /// re-checking `deadline` and `shouldStop` between slices.
    private static func waitForSocket(_ connection: OpaquePointer, events: Int16, deadline: ContinuousClock.Instant?, shouldStop: () -> Bool) -> WaitOutcome {
        while true {
            if shouldStop() { return .stopped }
            var sliceMs = Self.milliseconds(rounding: pollSlice)
            if let deadline {
                let remaining = deadline - .now
                if remaining <= .zero { return .timedOut }
                sliceMs = min(sliceMs, max(1, milliseconds(rounding: remaining)))
            }
            let fd = PQsocket(connection)
            guard fd >= 0 else { return .ready } // let libpq report the broken socket
            var descriptor = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&descriptor, 1, Int32(sliceMs))
            if ready > 0 { return .ready }
            if ready < 0 && errno != EINTR { return .ready } // let libpq report it
        }
    }

    /// Whole milliseconds, rounded up (a positive duration never becomes 0).
    static func milliseconds(rounding duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        let rest = attoseconds % 1_000_000_000_000_000
        let total = ms + (rest > 0 ? 1 : 0)
        return Int(clamping: total)
    }

    // MARK: - errors

    private static func connectionMessage(_ connection: OpaquePointer) -> String {
        let text = PQerrorMessage(connection).map { String(cString: $0) } ?? ""
        let trimmed = text.trimmingTrailingWhitespace()
        return trimmed.isEmpty ? "unknown libpq error" : trimmed
    }

    private static func describeTarget(_ connection: OpaquePointer) -> String {
        guard let host = PQhost(connection).map({ String(cString: $0) }), !host.isEmpty else { return "" }
        let port = PQport(connection).map { String(cString: $0) } ?? ""
        return " connecting to \(host):\(port)"
    }

    /// The connection broke: libpq's message, plus the server's FATAL notice
    /// (e.g. 57P01 terminating connection) when one arrived first.
    private func lostError(_ connection: OpaquePointer) -> PostgresError {
        let message = Self.connectionMessage(connection)
        if let fatal = notices.lastFatal {
            return PostgresError(code: .connectionLost, sqlState: fatal.sqlState, message: fatal.message + " (" + message + ")",
                                 severity: fatal.severity)
        }
        return PostgresError(code: .connectionLost, message: message)
    }

    private static func field(_ result: OpaquePointer, _ code: UInt8) -> String? {
        PQresultErrorField(result, Int32(code)).map { String(cString: $0) }
    }

    /// The one place where a failed `PGresult` becomes a `PostgresError`.
    private func resultError(_ result: OpaquePointer, connection: OpaquePointer) -> PostgresError {
        let sqlState = Self.field(result, UInt8(ascii: "C")) // PG_DIAG_SQLSTATE
        let primary = Self.field(result, UInt8(ascii: "M"))  // PG_DIAG_MESSAGE_PRIMARY
        let detail = Self.field(result, UInt8(ascii: "D"))   // PG_DIAG_MESSAGE_DETAIL
        let hint = Self.field(result, UInt8(ascii: "H"))     // PG_DIAG_MESSAGE_HINT
        let severity = Self.field(result, UInt8(ascii: "V")) // PG_DIAG_SEVERITY_NONLOCALIZED
        let constraint = Self.field(result, UInt8(ascii: "n")) // PG_DIAG_CONSTRAINT_NAME
        let lost = PQstatus(connection) == CONNECTION_BAD
        let message = primary
            ?? PQresultErrorMessage(result).map { String(cString: $0).trimmingTrailingWhitespace() }
            ?? "unknown error"
        return PostgresError(
            code: lost ? .connectionLost : .server, // a FATAL (e.g. 57P01) also kills the session
            sqlState: sqlState, message: message, detail: detail, hint: hint, severity: severity,
            constraint: constraint)
    }

    // MARK: - notices

    /// Receives libpq notices (on the connection thread, inside libpq calls).
    final class NoticeBox {
        struct Fatal {
            let sqlState: String?
            let message: String
            let severity: String
        }

        var lastFatal: Fatal?
    }

    private static let noticeReceiver: PQnoticeReceiver = { argument, result in
        guard let argument, let result else { return }
        let box = Unmanaged<NoticeBox>.fromOpaque(argument).takeUnretainedValue()
        let severity = PQresultErrorField(result, Int32(UInt8(ascii: "V"))).map { String(cString: $0) } ?? ""
        guard severity == "FATAL" || severity == "PANIC" else { return }
        box.lastFatal = NoticeBox.Fatal(
            sqlState: PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) },
            message: PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? "server ended the session",
            severity: severity)
    }
}

/// Facts about a session fixed at connect time.
struct SessionIdentity: Sendable {
    var host: String
    var port: Int
    var serverVersion: Int
    var serverVersionText: String
    var backendPID: Int32
}

/// Owns one `PGcancel*` (from `PQgetCancel`), which stays valid after the
/// connection is finished.
///
/// `@unchecked Sendable`: the `PGcancel` is never mutated after creation,
/// `PQcancel` is documented as thread-safe, and `PQfreeCancel` runs only in
/// `deinit`, when no thread can be using it.
final class CancelHandle: @unchecked Sendable {
    private let cancel: OpaquePointer

    init(_ cancel: OpaquePointer) {
        self.cancel = cancel
    }

    deinit {
        PQfreeCancel(cancel)
    }

    /// Asks the server to cancel the running statement. Blocks until the
    /// server has taken the request (forever if it is hung), so it runs on
    /// its own thread; at most `maxInFlight` such threads exist at a time
    /// (further requests are dropped — the connection is discarded anyway).
    func fire() {
        guard Self.inFlight.add(1, ordering: .relaxed).newValue <= Self.maxInFlight else {
            Self.inFlight.subtract(1, ordering: .relaxed)
            return
        }
        startDedicatedThread(name: "postgres-cancel") { [self] in
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(cancel, &buffer, Int32(buffer.count))
            Self.inFlight.subtract(1, ordering: .relaxed)
        }
    }

    static let maxInFlight = 64
    private static let inFlight = Atomic<Int>(0)
}

/// libpq's connection-string parser, for `PostgresURL`.
enum LibPQConninfo {
    /// Every option `PQconninfoParse` recognised with a value, in libpq's order.
    static func parse(_ conninfo: String) throws(PostgresError) -> [(keyword: String, value: String)] {
        guard !conninfo.utf8.contains(0) else {
            throw PostgresError(code: .invalidURL, message: "the connection string cannot contain NUL bytes")
        }
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &errorMessage) else {
            let message = errorMessage.map { String(cString: $0).trimmingTrailingWhitespace() } ?? "out of memory"
            if let errorMessage { PQfreemem(errorMessage) }
            throw PostgresError(code: .invalidURL, message: "invalid connection string: \(message)")
        }
        defer { PQconninfoFree(options) }
        var out: [(keyword: String, value: String)] = []
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                out.append((String(cString: keyword), String(cString: value)))
            }
            option += 1
        }
        return out
    }
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// Calls `body` with a C array of NUL-terminated copies of `strings`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>] = strings.map { strdup($0)! }
    defer { copies.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Calls `body` with the four parallel arrays `PQsendQueryParams` takes.
/// Text values get a terminating NUL; binary ones are passed with their length.
private func withParameterArrays<R>(
    _ params: [PostgresValue],
    _ body: (UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R
) -> R {
    if params.isEmpty { return body(nil, nil, nil, nil) }
    let types: [Oid] = params.map { Oid($0.type.rawValue) }
    let lengths: [Int32] = params.map { Int32(clamping: $0.bytes?.count ?? 0) }
    let formats: [Int32] = params.map { $0.format.rawValue }
    let copies: [UnsafeMutablePointer<CChar>?] = params.map { value in
        value.bytes.map { bytes in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            bytes.withUnsafeBufferPointer { source in
                source.withMemoryRebound(to: CChar.self) { chars in
                    if let base = chars.baseAddress { p.initialize(from: base, count: bytes.count) }
                }
            }
            (p + bytes.count).initialize(to: 0)
            return p
        }
    }
    defer { copies.forEach { $0?.deallocate() } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
    return types.withUnsafeBufferPointer { t in
        pointers.withUnsafeBufferPointer { v in
            lengths.withUnsafeBufferPointer { l in
                formats.withUnsafeBufferPointer { f in
                    body(t.baseAddress, v.baseAddress, l.baseAddress, f.baseAddress)
                }
            }
        }
    }
}
