import CSQLite3
import Dispatch
import Foundation
import Synchronization

/// An SQLite connection confined to a dedicated thread.
///
/// Every SQLite call — opening, statements, transactions, closing — runs on one thread that the
/// connection owns, never on Swift's cooperative thread pool. Async callers submit closures with
/// ``withConnection(_:)``; the thread runs them one at a time, in submission order, and resumes the
/// caller through a checked continuation. Because the `sqlite3*` pointer is only ever touched by
/// that thread, it is opened with `SQLITE_OPEN_NOMUTEX` and ``SQLiteDatabaseHandle`` needs no lock
/// and is not `Sendable`.
public final class SQLiteConnection: Sendable {
    /// How a connection is opened and configured.
    public struct Configuration: Sendable {
        /// `PRAGMA synchronous`: when SQLite waits for the disk.
        public enum Synchronous: String, Sendable {
            /// Every commit is fsynced before it returns: an acknowledged write survives power loss.
            case full = "FULL"
            /// In WAL mode, commits are not fsynced (checkpoints are): survives a process crash, but
            /// the last commits can be lost on power loss.
            case normal = "NORMAL"
        }

        /// `sqlite3_open_v2` flags.
        public struct OpenFlags: OptionSet, Sendable {
            /// The raw `SQLITE_OPEN_*` bits.
            public var rawValue: Int32
            /// Creates flags from raw `SQLITE_OPEN_*` bits.
            public init(rawValue: Int32) { self.rawValue = rawValue }
            /// `SQLITE_OPEN_READONLY`.
            public static let readOnly = OpenFlags(rawValue: SQLITE_OPEN_READONLY)
            /// `SQLITE_OPEN_READWRITE`.
            public static let readWrite = OpenFlags(rawValue: SQLITE_OPEN_READWRITE)
            /// `SQLITE_OPEN_CREATE`: create the file if it does not exist.
            public static let create = OpenFlags(rawValue: SQLITE_OPEN_CREATE)
        }

        /// Open flags; `SQLITE_OPEN_NOMUTEX` is always added (the connection is thread-confined).
        public var flags: OpenFlags
        /// `PRAGMA synchronous`; `FULL` by default.
        public var synchronous: Synchronous
        /// Switch to `journal_mode=WAL` (required to succeed for file databases).
        public var writeAheadLog: Bool
        /// `PRAGMA foreign_keys`.
        public var foreignKeys: Bool
        /// `sqlite3_busy_timeout`: how long a statement waits for another connection's lock.
        public var busyTimeoutMilliseconds: Int32
        /// Create the database file's parent directory (and its parents) if missing, on the
        /// connection's thread before opening.
        public var createParentDirectory: Bool

        /// Creates a configuration; the defaults suit a durable single-writer store.
        public init(
            flags: OpenFlags = [.readWrite, .create], synchronous: Synchronous = .full, writeAheadLog: Bool = true,
            foreignKeys: Bool = true, busyTimeoutMilliseconds: Int32 = 5_000, createParentDirectory: Bool = false
        ) {
            self.createParentDirectory = createParentDirectory
            self.flags = flags
            self.synchronous = synchronous
            self.writeAheadLog = writeAheadLog
            self.foreignKeys = foreignKeys
            self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        }
    }

    /// The path the connection was opened with.
    public let path: String
    private let worker: ConnectionThread

    private init(path: String, worker: ConnectionThread) {
        self.path = path
        self.worker = worker
    }

    deinit {
        // Lets the thread exit (closing the handle) if the owner never called `close()`.
        worker.requestClose {}
    }

    /// Opens (and configures) the database at `path` on a new dedicated thread.
    ///
    /// Fails with a ``SQLiteError``: ``SQLiteError/Code/cannotOpen`` for a missing directory,
    /// ``SQLiteError/Code/notADatabase`` for a file that is not an SQLite database, and so on.
    public static func open(path: String, configuration: Configuration = Configuration()) async throws
        -> SQLiteConnection
    {
        let worker = ConnectionThread()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                Thread.current.threadDictionary[connectionThreadKey] = true
                // Best effort: swift-corelibs-foundation does not always apply a name set before `start()`.
                Thread.current.name = "sqlite"
                worker.run(path: path, configuration: configuration) { continuation.resume(with: $0) }
            }
            thread.name = "sqlite"
            thread.start()
        }
        return SQLiteConnection(path: path, worker: worker)
    }

    /// Whether the caller runs on the dedicated thread of some `SQLiteConnection` (for assertions).
    public static var isConnectionThread: Bool {
        Thread.current.threadDictionary[connectionThreadKey] as? Bool ?? false
    }

    /// Runs `body` on the connection's thread and returns its result.
    ///
    /// Closures run one at a time in submission order, so `body` has the connection to itself;
    /// it may block (it is not on the cooperative pool) but must not keep the handle.
    /// Fails with ``SQLiteError/closed`` once the connection is closed.
    @discardableResult
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabaseHandle) throws -> T)
        async throws -> T
    {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = worker.enqueue { handle in
                continuation.resume(with: Result { try body(handle) })
            }
            if !accepted { continuation.resume(throwing: SQLiteError.closed) }
        }
    }

    /// Submits `job` to run on the connection's thread without waiting. Returns `false` (and never
    /// runs `job`) if the connection is closed or closing.
    func enqueue(_ job: @escaping @Sendable (SQLiteDatabaseHandle) -> Void) -> Bool {
        worker.enqueue(job)
    }

    /// Whether ``close()`` has been called.
    public var isClosed: Bool { worker.isClosing }

    /// Runs the work already submitted, then closes the database and stops the thread; returns once
    /// the database is closed. Idempotent; every later call to the connection fails with
    /// ``SQLiteError/closed``.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            worker.requestClose { continuation.resume() }
        }
    }
}

/// Marks a connection's thread in its `threadDictionary`.
private let connectionThreadKey = "SQLiteClient.SQLiteConnection.thread"

/// The job queue and run loop of a connection's dedicated thread.
private final class ConnectionThread: Sendable {
    typealias Job = @Sendable (SQLiteDatabaseHandle) -> Void

    private enum Item: Sendable {
        case job(Job)
        case close
    }

    private struct State {
        var items: [Item] = []
        /// False once a close is requested (or opening failed): nothing more is queued.
        var accepting = true
        /// The handle is closed and the thread has stopped.
        var finished = false
        /// Called once `finished` becomes true.
        var closeWaiters: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())
    /// Signalled once per submitted item; the thread waits on it when idle.
    private let wakeUp = DispatchSemaphore(value: 0)

    var isClosing: Bool { state.withLock { !$0.accepting } }

    func enqueue(_ job: @escaping Job) -> Bool {
        let accepted = state.withLock { state in
            guard state.accepting else { return false }
            state.items.append(.job(job))
            return true
        }
        if accepted { wakeUp.signal() }
        return accepted
    }

    /// Queues the close after everything already submitted (once); calls `done` when the handle is
    /// closed, at once if it already is.
    func requestClose(_ done: @escaping @Sendable () -> Void) {
        enum Outcome { case queued, waiting, finished }
        let outcome = state.withLock { state -> Outcome in
            if state.finished { return .finished }
            state.closeWaiters.append(done)
            guard state.accepting else { return .waiting }
            state.accepting = false
            state.items.append(.close)
            return .queued
        }
        switch outcome {
        case .queued: wakeUp.signal()
        case .waiting: break
        case .finished: done()
        }
    }

    private func finish() {
        let waiters = state.withLock { state in
            state.accepting = false
            state.finished = true
            let waiters = state.closeWaiters
            state.closeWaiters.removeAll()
            return waiters
        }
        for waiter in waiters { waiter() }
    }

    /// The thread's body: open, report, then run items until the close item.
    func run(
        path: String, configuration: SQLiteConnection.Configuration,
        opened: (Result<Void, SQLiteError>) -> Void
    ) {
        let handle: SQLiteDatabaseHandle
        do throws(SQLiteError) {
            if configuration.createParentDirectory { try Self.createParentDirectory(of: path) }
            handle = try SQLiteDatabaseHandle(path: path, flags: configuration.flags.rawValue | SQLITE_OPEN_NOMUTEX)
            try Self.configure(handle, configuration)
        } catch {
            finish()
            opened(.failure(error))
            return
        }
        opened(.success(()))

        while true {
            wakeUp.wait()
            let items = state.withLock { state in
                let items = state.items
                state.items.removeAll(keepingCapacity: true)
                return items
            }
            for item in items {
                switch item {
                case .job(let job):
                    job(handle)
                case .close:
                    // Nothing can be queued after the close item (`accepting` is false).
                    handle.close()
                    finish()
                    return
                }
            }
        }
    }

    private static func configure(
        _ handle: SQLiteDatabaseHandle, _ configuration: SQLiteConnection.Configuration
    ) throws(SQLiteError) {
        // Pragmas take no bound parameters; only typed configuration values (an integer and fixed
        // keywords) are written into them.
        do throws(SQLiteError) {
            try handle.execute("PRAGMA busy_timeout = \(configuration.busyTimeoutMilliseconds)")
            if configuration.writeAheadLog {
                let row = try handle.queryFirst("PRAGMA journal_mode = WAL")
                let mode: String? = try row?.get(0)
                let inMemory = isInMemory(handle.path)
                if mode?.lowercased() != "wal" && !inMemory {
                    throw SQLiteError(
                        .other, extendedResultCode: SQLITE_ERROR,
                        message: "cannot switch \(handle.path) to WAL journal mode (got \(mode ?? "nothing"))")
                }
            }
            try handle.execute("PRAGMA synchronous = \(configuration.synchronous.rawValue)")
            try handle.execute("PRAGMA foreign_keys = \(configuration.foreignKeys ? "ON" : "OFF")")
        } catch {
            handle.close()
            throw error
        }
    }

    private static func createParentDirectory(of path: String) throws(SQLiteError) {
        guard !isInMemory(path), !path.hasPrefix("file:") else { return }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
        } catch {
            throw SQLiteError(
                .cannotOpen, extendedResultCode: SQLITE_CANTOPEN,
                message: "cannot create directory \(parent.path): \(error.localizedDescription)")
        }
    }

    private static func isInMemory(_ path: String) -> Bool {
        path.isEmpty || path == ":memory:" || path.contains("mode=memory")
    }
}
