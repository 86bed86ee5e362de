import ConnectionThreads
import Synchronization

/// Where a `RedisClient` stands with its server.
public enum RedisClientStatus: Sendable, Equatable {
    /// A connect attempt (TCP + handshake) is in progress; calls are queued
    /// and wait up to their deadline.
    case connecting
    /// Commands are flowing.
    case connected
    /// The last connection broke or the last attempt failed; the client is
    /// waiting out its backoff and calls fail fast with `.unavailable`.
    /// `since` is when the client was last connected (or created).
    case disconnected(since: ContinuousClock.Instant, lastError: RedisError)
    /// `close()` was called.
    case closed
}

/// Running totals since the client was created.
public struct RedisClientCounters: Sendable, Equatable {
    /// Calls accepted for sending (queued for the connection).
    public var commands = 0
    /// Calls whose deadline passed before their reply came.
    public var timeouts = 0
    /// Calls failed fast with `.unavailable` while disconnected.
    public var rejected = 0
    /// Connections that broke (I/O error, read timeout, server closed).
    public var connectionFailures = 0
    /// Failed connect attempts.
    public var connectFailures = 0
    /// Successful connects after the first one.
    public var reconnects = 0

    /// All zero.
    public init() {}
}

/// One pipelined command connection shared by many concurrent callers.
///
/// A dedicated thread owns the hiredis connection: it takes every queued
/// command at once, appends them all, then reads their replies in order, so N
/// concurrent callers cost about one round trip. No caller waits longer than
/// its deadline (default `commandTimeout`), even when Redis hangs: a timer
/// thread fails the call and the late reply is discarded. A broken or timed
/// out connection is replaced in the background with exponential backoff;
/// meanwhile calls fail fast with `.unavailable`. Initialising never blocks:
/// the first connect runs in the background, and calls made while it is in
/// progress wait for it (up to their deadline).
public final class RedisClient: Sendable {
    /// As given to `init`.
    public let configuration: RedisConfiguration
    private let core: ClientCore

    /// Starts connecting in the background and returns at once.
    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
        self.core = ClientCore(configuration: configuration)
        core.start()
    }

    /// Parses the URL (see `RedisConfiguration(url:)`) with default timeouts.
    public convenience init(url: String) throws(RedisError) {
        self.init(configuration: try RedisConfiguration(url: url))
    }

    deinit {
        core.beginClose()
    }

    /// Sends one command, e.g. `["SET", "k", "v"]`, and returns its reply.
    ///
    /// Throws within `deadline` (default `configuration.commandTimeout`):
    /// `.timeout` when the reply is late, `.unavailable` while disconnected,
    /// `.server` for an error reply (the connection stays up), `.cancelled`
    /// when the task is cancelled, `.connectionClosed` after `close()`, or the
    /// I/O error that broke the connection under this command.
    public func send(_ args: [String], deadline: Duration? = nil) async throws(RedisError) -> RedisReply {
        let until = ContinuousClock.now + (deadline ?? configuration.commandTimeout)
        return try await core.execute(args, until: until)
    }

    /// Runs `script` with `EVALSHA`; when Redis doesn't know it (`NOSCRIPT`,
    /// e.g. after a restart or `SCRIPT FLUSH`), loads it with `SCRIPT LOAD`
    /// and retries once. The deadline covers all of it.
    public func evalSHA(
        _ script: RedisScript,
        keys: [String],
        arguments: [String],
        deadline: Duration? = nil
    ) async throws(RedisError) -> RedisReply {
        let until = ContinuousClock.now + (deadline ?? configuration.commandTimeout)
        let command = ["EVALSHA", script.sha1, String(keys.count)] + keys + arguments
        do {
            return try await core.execute(command, until: until)
        } catch where error.serverErrorPrefix == "NOSCRIPT" {
            let loaded = try await core.execute(["SCRIPT", "LOAD", script.source], until: until)
            guard loaded.string == script.sha1 else {
                throw RedisError(code: .protocolError, message: "SCRIPT LOAD returned \(loaded), expected \(script.sha1)")
            }
            return try await core.execute(command, until: until)
        }
    }

    /// The connection state, for health reporting (degraded mode).
    public var status: RedisClientStatus { core.status }

    /// Running totals.
    public var counters: RedisClientCounters { core.counters }

    /// Fails queued calls with `.connectionClosed`, lets commands already
    /// sent get their replies, closes the socket and waits for the
    /// connection thread to finish. Idempotent; later calls throw
    /// `.connectionClosed`.
    public func close() async {
        core.beginClose()
        await core.waitUntilStopped()
    }
}

// MARK: - Request

/// One caller's command: completed exactly once by the reply, its deadline,
/// cancellation or a connection failure, whichever comes first.
final class PendingRequest: Sendable {
    typealias Outcome = Result<RedisReply, RedisError>

    let args: [String]
    let deadline: ContinuousClock.Instant

    private struct State {
        var continuation: CheckedContinuation<Outcome, Never>?
        var early: Outcome?
        var completed = false
    }

    private let state = Mutex(State())

    init(args: [String], deadline: ContinuousClock.Instant) {
        self.args = args
        self.deadline = deadline
    }

    var isCompleted: Bool { state.withLock { $0.completed } }

    /// Resumes at once when the request was completed before this.
    func attach(_ continuation: CheckedContinuation<Outcome, Never>) {
        let early: Outcome? = state.withLock { state in
            if state.completed { return state.early }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    /// Returns false (and does nothing) when already completed.
    @discardableResult
    func complete(_ outcome: Outcome) -> Bool {
        let (won, continuation) = state.withLock { state -> (Bool, CheckedContinuation<Outcome, Never>?) in
            guard !state.completed else { return (false, nil) }
            state.completed = true
            let continuation = state.continuation
            state.continuation = nil
            if continuation == nil { state.early = outcome }
            return (true, continuation)
        }
        continuation?.resume(returning: outcome)
        return won
    }
}

// MARK: - Core

/// The state shared by the `RedisClient` facade, its connection thread and
/// its deadline thread. The threads hold the core, never the facade, so the
/// facade's `deinit` can stop them.
///
/// `@unchecked Sendable`: every mutable field is guarded by `condition`,
/// except `context`-related locals that live on the connection thread only.
final class ClientCore: @unchecked Sendable {
    let configuration: RedisConfiguration
    private let condition = MonotonicCondition()
    private let deadlines: DeadlineTimer

    // Guarded by `condition`.
    private var phase: RedisClientStatus = .connecting
    private var lastConnected = ContinuousClock.now
    private var queue: [PendingRequest] = []
    private var threadIdle = false
    private var closing = false
    private var stopped = false
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []
    private var totals = RedisClientCounters()

    /// Replies read per batch at most, so one huge burst can't starve later callers' deadlines.
    private static let maxBatch = 4096

    init(configuration: RedisConfiguration) {
        self.configuration = configuration
        self.deadlines = DeadlineTimer(name: "redis deadlines \(configuration.host):\(configuration.port)")
    }

    func start() {
        startDedicatedThread(name: "redis \(configuration.host):\(configuration.port)") { [self] in
            run()
        }
        deadlines.start { [self] request in
            let timedOut = request.complete(.failure(RedisError(
                code: .timeout, message: "no reply within the deadline (\(request.args.first ?? ""))")))
            if timedOut { condition.withLock { totals.timeouts += 1 } }
        }
    }

    var status: RedisClientStatus { condition.withLock { phase } }
    var counters: RedisClientCounters { condition.withLock { totals } }

    func execute(_ args: [String], until deadline: ContinuousClock.Instant) async throws(RedisError) -> RedisReply {
        guard !args.isEmpty else {
            throw RedisError(code: .invalidArgument, message: "empty command")
        }
        let request = PendingRequest(args: args, deadline: deadline)
        let outcome = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                request.attach(continuation)
                if let refusal = submit(request) {
                    request.complete(.failure(refusal))
                } else {
                    deadlines.schedule(request)
                }
            }
        } onCancel: {
            request.complete(.failure(RedisError(code: .cancelled, message: "task cancelled")))
        }
        let reply = try outcome.get()
        if case .error(let message) = reply {
            throw RedisError(code: .server, message: message)
        }
        return reply
    }

    /// Queues `request`, or says why not.
    private func submit(_ request: PendingRequest) -> RedisError? {
        condition.lock()
        defer { condition.unlock() }
        if closing {
            return RedisError(code: .connectionClosed, message: "client closed")
        }
        if case .disconnected(_, let lastError) = phase {
            totals.rejected += 1
            return RedisError(code: .unavailable, message: "not connected to Redis (reconnecting): \(lastError.message)")
        }
        queue.append(request)
        totals.commands += 1
        if threadIdle { condition.signal() }
        return nil
    }

    func beginClose() {
        let abandoned: [PendingRequest] = condition.withLock {
            closing = true
            if case .closed = phase {} else { phase = .closed }
            let queued = queue
            queue = []
            condition.broadcast()
            return queued
        }
        let error = RedisError(code: .connectionClosed, message: "client closed")
        for request in abandoned { request.complete(.failure(error)) }
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = condition.withLock {
                if stopped { return true }
                stopWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: connection thread

    private func run() {
        var context: HiredisContext?
        var readTimeout = configuration.commandTimeout
        var failedAttempts = 0
        var everConnected = false
        while true {
            if context == nil {
                let proceed = condition.withLock { () -> Bool in
                    if closing { return false }
                    phase = .connecting
                    return true
                }
                guard proceed else { break }
                do {
                    let fresh = try HiredisContext.open(configuration, selectDatabase: true)
                    try fresh.setCommandTimeout(configuration.commandTimeout)
                    readTimeout = configuration.commandTimeout
                    context = fresh
                    failedAttempts = 0
                    condition.withLock {
                        if !closing { phase = .connected }
                        if everConnected { totals.reconnects += 1 }
                    }
                    everConnected = true
                } catch {
                    let failed = condition.withLock { () -> [PendingRequest] in
                        totals.connectFailures += 1
                        if !closing { phase = .disconnected(since: lastConnected, lastError: error) }
                        let queued = queue
                        queue = []
                        return queued
                    }
                    let refusal = RedisError(code: .unavailable, message: "could not connect to Redis: \(error.message)")
                    for request in failed { request.complete(.failure(refusal)) }
                    sleep(configuration.reconnectBackoff.delay(attempt: failedAttempts))
                    failedAttempts += 1
                    continue
                }
            }
            guard let connection = context else { continue }

            // Take everything queued (up to maxBatch).
            condition.lock()
            while queue.isEmpty && !closing {
                threadIdle = true
                condition.wait()
                threadIdle = false
            }
            if closing {
                condition.unlock()
                break
            }
            let batch: [PendingRequest]
            if queue.count <= Self.maxBatch {
                batch = queue
                queue.removeAll(keepingCapacity: true)
            } else {
                batch = Array(queue.prefix(Self.maxBatch))
                queue.removeFirst(Self.maxBatch)
            }
            condition.unlock()

            if let error = process(batch, on: connection, readTimeout: &readTimeout) {
                connection.close()
                context = nil
                condition.withLock {
                    totals.connectionFailures += 1
                    lastConnected = .now
                    if !closing { phase = .disconnected(since: lastConnected, lastError: error) }
                }
            }
        }
        context?.close()
        deadlines.shutdown()
        let waiters = condition.withLock { () -> [CheckedContinuation<Void, Never>] in
            stopped = true
            phase = .closed
            let waiters = stopWaiters
            stopWaiters = []
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Pipelines `batch`: appends every live command, then reads the replies
    /// in order. Returns the error that broke the connection, if any (the
    /// requests without a reply are failed with it).
    private func process(_ batch: [PendingRequest], on connection: HiredisContext, readTimeout: inout Duration) -> RedisError? {
        // A caller that already gave up is not sent at all.
        let live = batch.filter { !$0.isCompleted }
        guard !live.isEmpty else { return nil }
        // The socket timeout must cover the longest deadline in the batch;
        // it only moves off `commandTimeout` for callers with longer deadlines.
        let now = ContinuousClock.now
        let longest = live.reduce(now) { max($0, $1.deadline) } - now
        let wanted = max(configuration.commandTimeout, longest)
        do {
            if wanted > readTimeout || (readTimeout > configuration.commandTimeout && wanted < readTimeout) {
                try connection.setCommandTimeout(wanted)
                readTimeout = wanted
            }
            for request in live { try connection.append(request.args) }
        } catch {
            for request in live { request.complete(.failure(error)) }
            return error
        }
        for (index, request) in live.enumerated() {
            do {
                request.complete(.success(try connection.nextReply()))
            } catch {
                for unanswered in live[index...] { unanswered.complete(.failure(error)) }
                return error
            }
        }
        return nil
    }

    /// Backoff sleep, cut short by `close()`.
    private func sleep(_ delay: Duration) {
        let until = ContinuousClock.now + delay
        condition.lock()
        defer { condition.unlock() }
        while !closing {
            let left = until - .now
            if left <= .zero { break }
            condition.wait(timeout: left)
        }
    }
}

extension HiredisContext {
    /// Connects and runs the handshake, all within `connectTimeout`: AUTH,
    /// SELECT (when asked and not 0), CLIENT SETNAME, and a PING, because a
    /// hung (e.g. SIGSTOPped) server still completes TCP connects.
    static func open(_ configuration: RedisConfiguration, selectDatabase: Bool) throws(RedisError) -> HiredisContext {
        let context = try HiredisContext.connect(
            host: configuration.host, port: configuration.port, timeout: configuration.connectTimeout)
        do throws(RedisError) {
            try context.setCommandTimeout(configuration.connectTimeout)
            if let password = configuration.password {
                let auth = configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                do throws(RedisError) {
                    _ = try context.command(auth)
                } catch where error.code == .server {
                    throw RedisError(code: .authenticationFailed, message: error.message)
                }
            }
            if selectDatabase && configuration.database != 0 {
                _ = try context.command(["SELECT", String(configuration.database)])
            }
            if let name = configuration.clientName {
                _ = try context.command(["CLIENT", "SETNAME", name])
            }
            _ = try context.command(["PING"])
            return context
        } catch {
            context.close()
            throw error
        }
    }
}
