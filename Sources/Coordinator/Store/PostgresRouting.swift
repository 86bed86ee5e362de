import PostgresClient
import Synchronization

/// What a read needs from a PostgreSQL replication set.
public enum ReadRequirement: Sendable, Equatable {
    /// Read from the primary.
    case primary
    /// Any replica behind the primary by at most `maxLagBytes` of WAL and `maxLagSeconds`, else the primary.
    case fresh(maxLagBytes: UInt64, maxLagSeconds: Double)
    /// Any replica that has replayed at least `minimumLSN` (a write's commit LSN), else the primary.
    case readYourWrites(minimumLSN: UInt64)
}

/// How the PostgreSQL store reaches the servers: the node's topology-aware router implements it, and
/// `SingleHostPostgresExecutor` is the trivial one-host version.
public protocol PostgresExecutor: Sendable {
    /// Runs `body` on a connection to the current primary. When `body` returns, the executor reads the
    /// session's WAL position (`pg_current_wal_lsn()`), reports it to `RequestConsistency.lsnSink`
    /// (if any) and returns it with the body's result.
    func write<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> (value: T, commitLSN: UInt64)

    /// Runs `body` on a connection chosen for `requirement`.
    func read<T: Sendable>(
        _ requirement: ReadRequirement, _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T

    /// Closes every connection.
    func close() async
}

/// Per-request consistency, carried in task-locals so the store contract stays unchanged: the HTTP
/// layer binds `readRequirement` from the `Coordinator-LSN` request header and an `LSNSink` whose
/// value becomes the `Coordinator-LSN` response header.
public enum RequestConsistency {
    /// What reads made by this task need; `nil` means the store's default.
    @TaskLocal public static var readRequirement: ReadRequirement?
    /// Collects the highest commit LSN of the writes made by this task.
    @TaskLocal public static var lsnSink: LSNSink?
}

/// Collects the highest commit LSN reported by the writes of one request.
public final class LSNSink: Sendable {
    private let highest = Mutex<UInt64?>(nil)

    public init() {}

    /// Records `lsn` if it is higher than what was seen.
    public func record(_ lsn: UInt64) {
        highest.withLock { value in
            if value.map({ lsn > $0 }) ?? true { value = lsn }
        }
    }

    /// The highest LSN recorded, or `nil` if no write reported one.
    public var value: UInt64? { highest.withLock { $0 } }
}

/// PostgreSQL's textual LSN form (`16/B374D848`) to and from its 64-bit value.
public enum LSNText {
    /// Parses `X/Y` (hexadecimal halves); `nil` when malformed.
    public static func parse(_ text: some StringProtocol) -> UInt64? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        return high << 32 | low
    }

    /// Formats as PostgreSQL does (`16/B374D848`).
    public static func format(_ lsn: UInt64) -> String {
        String(lsn >> 32, radix: 16, uppercase: true) + "/" + String(lsn & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }
}

/// The deadline of the executor call a store body runs in: pass it to every statement
/// (`connection.query(sql, params, deadline: PostgresCallContext.deadline)`), so a hung server cannot
/// hold the caller past it.
public enum PostgresCallContext {
    /// The current call's deadline, or `nil` outside an executor call.
    @TaskLocal public static var deadline: ContinuousClock.Instant?
}

extension PostgresConnection {
    /// `query` bounded by the deadline of the executor call it runs in (`PostgresCallContext.deadline`).
    public func boundedQuery(_ sql: String, _ params: [String?] = []) async throws(PostgresError) -> [[String?]] {
        try await query(sql, params, deadline: PostgresCallContext.deadline)
    }
}
