import ConnectionThreads
import Synchronization

/// One `NOTIFY` received by a `PostgresListener`.
public struct PostgresNotification: Sendable, Hashable {
    /// The channel name, exactly as notified.
    public let channel: String
    /// The payload ("" when none).
    public let payload: String
    /// The backend pid of the notifying session.
    public let pid: Int32

    /// A notification.
    public init(channel: String, payload: String, pid: Int32) {
        self.channel = channel
        self.payload = payload
        self.pid = pid
    }
}

/// LISTENs on channels over a dedicated connection and thread and delivers
/// notifications as an `AsyncThrowingStream`.
///
/// The connection thread waits on the socket with `poll()` in short slices
/// (50 ms), consumes input and hands over `PQnotifies`; `listen`/`unlisten`
/// run between slices. When the connection breaks, `notifications` finishes
/// by throwing the `PostgresError` (usually `.connectionLost`, with SQLSTATE
/// 57P01 when an administrator terminated the session). Reconnecting — and
/// re-LISTENing, and catching up on what was missed meanwhile — is the
/// caller's job. `close()` (or dropping the listener, or ending the
/// iteration) finishes the stream without error.
public final class PostgresListener: Sendable {
    /// Every notification, in arrival order. Iterate it from one task.
    /// Finishes with a thrown `PostgresError` when the connection breaks or
    /// the consumer falls `bufferLimit` notifications behind
    /// (`.listenerOverflow`); finishes normally after `close()`.
    public let notifications: AsyncThrowingStream<PostgresNotification, any Error>
    /// The listener's own connection (for `serverStatus`; do not run
    /// statements on it).
    public let connection: PostgresConnection
    private let sink: NotificationSink

    private init(connection: PostgresConnection, bufferLimit: Int) {
        let (stream, continuation) = AsyncThrowingStream<PostgresNotification, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(max(1, bufferLimit)))
        self.notifications = stream
        self.connection = connection
        self.sink = NotificationSink(continuation: continuation)
        let sink = self.sink
        continuation.onTermination = { _ in sink.stop() }
    }

    deinit {
        sink.stop()
    }

    /// Connects, LISTENs on `channels`, and starts delivering.
    public static func connect(
        conninfo: String, channels: [String] = [], connectTimeout: Duration = .seconds(5), bufferLimit: Int = 10_000
    ) async throws(PostgresError) -> PostgresListener {
        let connection = try await PostgresConnection.connect(conninfo: conninfo, connectTimeout: connectTimeout)
        let deadline = ContinuousClock.now + connectTimeout
        do throws(PostgresError) {
            for channel in channels {
                _ = try await connection.execute("LISTEN " + quoteIdentifier(channel), deadline: deadline)
            }
        } catch {
            await connection.close()
            throw error
        }
        let listener = PostgresListener(connection: connection, bufferLimit: bufferLimit)
        connection.pumpNotifications(into: listener.sink)
        return listener
    }

    /// `LISTEN "channel"` (the exact, case-sensitive name, as `pg_notify` uses).
    public func listen(_ channel: String, deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) {
        _ = try await connection.execute("LISTEN " + Self.quoteIdentifier(channel), deadline: deadline)
    }

    /// `UNLISTEN "channel"`.
    public func unlisten(_ channel: String, deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) {
        _ = try await connection.execute("UNLISTEN " + Self.quoteIdentifier(channel), deadline: deadline)
    }

    /// Stops listening, closes the connection and finishes `notifications`
    /// (without error, unless it already finished with one). Idempotent.
    public func close() async {
        sink.stop()
        await connection.close()
        sink.finish(nil)
    }

    /// A double-quoted SQL identifier.
    static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingAll("\"", with: "\"\"") + "\""
    }
}

/// Where the connection thread delivers notifications.
final class NotificationSink: Sendable {
    private let continuation: AsyncThrowingStream<PostgresNotification, any Error>.Continuation
    private let stopped = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)

    init(continuation: AsyncThrowingStream<PostgresNotification, any Error>.Continuation) {
        self.continuation = continuation
    }

    var isStopped: Bool { stopped.load(ordering: .acquiring) }

    func stop() { stopped.store(true, ordering: .releasing) }

    /// False when the buffer overflowed (the notification was dropped).
    func yield(_ notification: PostgresNotification) -> Bool {
        switch continuation.yield(notification) {
        case .dropped: return false
        default: return true
        }
    }

    /// Finishes the stream once (later calls do nothing).
    func finish(_ error: PostgresError?) {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if let error {
            continuation.finish(throwing: error)
        } else {
            continuation.finish()
        }
    }
}

extension PostgresConnection {
    /// Keeps one job in the connection's queue that waits up to one poll
    /// slice for notifications, delivers them, and re-queues itself, so other
    /// calls (LISTEN, UNLISTEN, close) run between slices.
    func pumpNotifications(into sink: NotificationSink) {
        let queued = executor.submit { [self] in
            if sink.isStopped {
                closeSoon()
                sink.finish(nil)
                return
            }
            if let error = unusableError() {
                sink.finish(error.code == .connectionClosed ? nil : error)
                return
            }
            do throws(PostgresError) {
                let received = try handle.notifications(waitingUpTo: LibPQConnection.pollSlice)
                refreshSnapshot()
                for notification in received where !sink.yield(notification) {
                    let overflow = PostgresError(
                        code: .listenerOverflow, message: "the consumer fell too far behind; notifications were lost")
                    markBroken(overflow)
                    handle.close()
                    sink.finish(overflow)
                    return
                }
            } catch {
                markBroken(error)
                handle.close()
                sink.finish(error)
                return
            }
            pumpNotifications(into: sink)
        }
        if !queued { sink.finish(nil) } // closed
    }
}

private extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for character in self {
            if character == target { out += replacement } else { out.append(character) }
        }
        return out
    }
}
