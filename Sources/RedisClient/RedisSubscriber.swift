import ConnectionThreads
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a `RedisSubscriber` stream delivers.
public enum RedisSubscriberEvent: Sendable, Equatable {
    /// Every channel is subscribed, after the first connect and after every
    /// reconnect: messages published while disconnected are lost, so this is
    /// the moment to reload a snapshot.
    case subscribed
    /// A published message; the payload is exactly the bytes published.
    case message(channel: String, payload: [UInt8])
    /// The connection broke (or the first connect failed); the subscriber
    /// retries with backoff and emits `.subscribed` when back. Emitted once
    /// per outage, not per failed attempt.
    case disconnected(RedisError)
}

/// Dedicated pub/sub connections (never shared with commands).
///
/// Each `events(channels:)` stream owns one connection on its own thread,
/// reconnects with the configured backoff and resubscribes. A hung server is
/// noticed by PINGing after `healthCheckInterval` of silence (Redis answers
/// a PING in subscribed mode with a `pong` array): no reply within twice
/// that drops the connection.
public final class RedisSubscriber: Sendable {
    /// As given to `init`.
    public let configuration: RedisConfiguration
    private let registry = Mutex(Registry())

    private struct Registry {
        var closed = false
        var workers: [SubscriptionWorker] = []
    }

    /// Connects nothing until `events(channels:)` is called.
    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
    }

    deinit {
        for worker in registry.withLock({ $0.workers }) { worker.stop() }
    }

    /// Subscribes to `channels` on a new connection and streams events until
    /// `close()` or until the consumer stops iterating. The buffer is
    /// unbounded: consume promptly. With no channels (or after `close()`),
    /// the stream ends at once (after a `.disconnected` explaining why).
    public func events(channels: [String]) -> AsyncStream<RedisSubscriberEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: RedisSubscriberEvent.self)
        guard !channels.isEmpty else {
            continuation.yield(.disconnected(RedisError(code: .invalidArgument, message: "no channels to subscribe to")))
            continuation.finish()
            return stream
        }
        let worker = SubscriptionWorker(configuration: configuration, channels: channels, continuation: continuation)
        let accepted = registry.withLock { registry -> Bool in
            guard !registry.closed else { return false }
            registry.workers.removeAll { $0.hasStopped }
            registry.workers.append(worker)
            return true
        }
        guard accepted else {
            continuation.yield(.disconnected(RedisError(code: .connectionClosed, message: "subscriber closed")))
            continuation.finish()
            return stream
        }
        continuation.onTermination = { _ in worker.stop() }
        worker.start()
        return stream
    }

    /// Ends every stream and waits for the connections to close. Idempotent.
    public func close() async {
        let workers = registry.withLock { registry in
            registry.closed = true
            let workers = registry.workers
            registry.workers = []
            return workers
        }
        for worker in workers { worker.stop() }
        for worker in workers { await worker.waitUntilStopped() }
    }
}

/// One subscribed connection and its thread.
final class SubscriptionWorker: Sendable {
    private let configuration: RedisConfiguration
    private let channels: [String]
    private let continuation: AsyncStream<RedisSubscriberEvent>.Continuation
    private let state = Mutex(State())

    private struct State {
        var stopping = false
        var stopped = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    /// Longest single wait, so `stop()` is noticed quickly.
    private static let slice = Duration.milliseconds(50)

    init(configuration: RedisConfiguration, channels: [String], continuation: AsyncStream<RedisSubscriberEvent>.Continuation) {
        self.configuration = configuration
        self.channels = channels
        self.continuation = continuation
    }

    var hasStopped: Bool { state.withLock { $0.stopped } }
    private var stopping: Bool { state.withLock { $0.stopping } }

    func start() {
        startDedicatedThread(name: "redis subscriber \(configuration.host):\(configuration.port)") { [self] in
            run()
        }
    }

    func stop() {
        state.withLock { $0.stopping = true }
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.stopped { return true }
                state.waiters.append(waiter)
                return false
            }
            if done { waiter.resume() }
        }
    }

    private func run() {
        var failedAttempts = 0
        var reportedOutage = false
        while !stopping {
            var context: HiredisContext?
            do throws(RedisError) {
                let connection = try HiredisContext.open(configuration, selectDatabase: false)
                context = connection
                try subscribe(on: connection)
                failedAttempts = 0
                reportedOutage = false
                try listen(on: connection)
            } catch {
                context?.close()
                context = nil
                if stopping { break }
                if !reportedOutage {
                    continuation.yield(.disconnected(error))
                    reportedOutage = true
                }
                pause(configuration.reconnectBackoff.delay(attempt: failedAttempts))
                failedAttempts += 1
            }
            context?.close()
        }
        continuation.finish()
        let waiters = state.withLock { state in
            state.stopped = true
            let waiters = state.waiters
            state.waiters = []
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// SUBSCRIBE and wait (within `connectTimeout`) for every confirmation;
    /// then emits `.subscribed` followed by any message that raced it.
    private func subscribe(on connection: HiredisContext) throws(RedisError) {
        try connection.append(["SUBSCRIBE"] + channels)
        try connection.flush()
        var pending = Set(channels)
        var early: [RedisSubscriberEvent] = []
        let deadline = ContinuousClock.now + configuration.connectTimeout
        while !pending.isEmpty {
            if stopping { return }
            let left = deadline - .now
            if left <= .zero {
                throw RedisError(code: .timeout, message: "SUBSCRIBE not confirmed within \(configuration.connectTimeout)")
            }
            switch try connection.pollPubSubFrame(timeout: min(left, Self.slice)) {
            case .subscribed(let channel)?: pending.remove(channel)
            case .message(let channel, let payload)?: early.append(.message(channel: channel, payload: payload))
            case .other(.error(let message))?: throw RedisError(code: .server, message: message)
            case .pong?, .other?, nil: break
            }
        }
        continuation.yield(.subscribed)
        for event in early { continuation.yield(event) }
    }

    /// Delivers messages until the connection fails, the health check
    /// fails, or `stop()`.
    private func listen(on connection: HiredisContext) throws(RedisError) {
        let interval = configuration.healthCheckInterval
        var lastHeard = ContinuousClock.now
        var pingSent: ContinuousClock.Instant?
        while !stopping {
            let frame = try connection.pollPubSubFrame(timeout: Self.slice)
            let now = ContinuousClock.now
            if let frame {
                lastHeard = now
                switch frame {
                case .message(let channel, let payload):
                    continuation.yield(.message(channel: channel, payload: payload))
                case .pong:
                    pingSent = nil
                case .other(.error(let message)):
                    throw RedisError(code: .server, message: message)
                case .subscribed, .other:
                    break
                }
                continue
            }
            if let sent = pingSent {
                if now - sent >= interval * 2 && now - lastHeard >= interval * 2 {
                    throw RedisError(code: .timeout, message: "no reply to PING within \(interval * 2): server hung")
                }
            } else if now - lastHeard >= interval {
                try connection.append(["PING"])
                try connection.flush()
                pingSent = now
            }
        }
    }

    /// Backoff sleep in short slices, cut short by `stop()`.
    private func pause(_ delay: Duration) {
        let until = ContinuousClock.now + delay
        while !stopping {
            let left = until - .now
            if left <= .zero { return }
            let step = min(left, Self.slice)
            let (seconds, attoseconds) = step.components
            var request = timespec(tv_sec: numericCast(seconds), tv_nsec: numericCast(attoseconds / 1_000_000_000))
            nanosleep(&request, nil)
        }
    }
}
