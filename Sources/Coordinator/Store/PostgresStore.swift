import Crypto
import PostgresClient
import Synchronization

/// The ``CoordinatorStore`` over PostgreSQL (production), reached through a ``PostgresExecutor``:
/// the node's topology-aware router, or a ``SingleHostPostgresExecutor``.
///
/// **Writes** all go through `executor.write` (the primary); each reports its commit LSN to
/// `RequestConsistency.lsnSink`. **Reads** go through `executor.read` with
/// `RequestConsistency.readRequirement` when the request set one, else a default per method:
///
/// | reads | default | with a request requirement |
/// |---|---|---|
/// | `token(secretHash:)`, `token(id:)` | `.primary` | only `.readYourWrites` is honoured (`.fresh` still reads the primary: a lagging replica could miss a revocation) |
/// | `setting(_:)`, `documents(kind:)` | `.primary` (read at start, where a stale copy would stick) | honoured |
/// | `tokens()`, `auditEvents(after:limit:)` | ``Options/listReads`` (`.fresh` by default) | honoured |
///
/// **Schema**: times are `BIGINT` milliseconds since 1970, byte strings `BYTEA` (sent and read as
/// hexadecimal text), and every value is a bound parameter. Versioned migrations run at ``open(executor:options:now:)``
/// under an advisory lock, so concurrent nodes migrate once.
///
/// **Audit log**: `audit_events` is range-partitioned by month of `recorded_at`
/// (`audit_events_pYYYY_MM`); the current month and the next ``Options/partitionMonthsAhead`` are
/// created at open and by ``maintainPartitions(now:)``, and an append whose month has no partition
/// creates it and retries, so a write never fails for a missing partition. (There is deliberately
/// no DEFAULT partition: PostgreSQL refuses `DETACH PARTITION … CONCURRENTLY` while one exists.)
/// Idempotency by event id is kept in `audit_ids`, written in the same transaction, so it holds
/// across partitions, including detached ones. Concurrent appends on one store are group-committed
/// (up to ``Options/maxAuditBatch`` events per transaction), and every append transaction takes a
/// transaction-level advisory lock before drawing sequence numbers, so **seq order is commit order
/// across all nodes**: a reader paging with `auditEvents(after:)` never skips an event that commits
/// late, on the primary or on a replica (which replays commits in the same order). Seqs are unique
/// and increasing; a failed transaction leaves gaps.
public final class PostgresStore: CoordinatorStore {
    /// How the store behaves.
    public struct Options: Sendable {
        /// The default read requirement of list reads (`tokens()`, `auditEvents`).
        public var listReads: ReadRequirement
        /// The most audit events committed in one transaction.
        public var maxAuditBatch: Int
        /// How many months after the current one get their audit partition ahead of time.
        public var partitionMonthsAhead: Int
        /// Whether ``close()`` closes the executor too.
        public var closesExecutor: Bool

        /// - Parameters:
        ///   - listReads: Default requirement of list reads; replicas at most 1 MiB / 1 s behind.
        ///   - maxAuditBatch: The most audit events per transaction (at least 1).
        ///   - partitionMonthsAhead: Months created ahead of the current one (at least 0).
        ///   - closesExecutor: Whether ``close()`` closes the executor.
        public init(
            listReads: ReadRequirement = .fresh(maxLagBytes: 1 << 20, maxLagSeconds: 1), maxAuditBatch: Int = 512,
            partitionMonthsAhead: Int = 2, closesExecutor: Bool = true
        ) {
            self.listReads = listReads
            self.maxAuditBatch = max(1, maxAuditBatch)
            self.partitionMonthsAhead = max(0, partitionMonthsAhead)
            self.closesExecutor = closesExecutor
        }
    }

    /// The schema version this build creates and understands.
    public static var schemaVersion: Int64 { PostgresMigrations.latestVersion }

    /// How the store reaches PostgreSQL.
    public let executor: any PostgresExecutor
    /// The options the store was opened with.
    public let options: Options
    /// The migration versions this store's ``open(executor:options:now:)`` applied (empty when
    /// the database was already current, e.g. another node migrated it).
    public let appliedMigrations: [Int64]

    private let closed = Atomic<Bool>(false)
    private let audit = Mutex(AuditQueue())
    private let nextAuditGroup = Mutex<UInt64>(0)

    private init(executor: any PostgresExecutor, options: Options, appliedMigrations: [Int64]) {
        self.executor = executor
        self.options = options
        self.appliedMigrations = appliedMigrations
    }

    /// Opens the store over `executor`: migrates the schema (under an advisory lock: concurrent
    /// opens migrate once) and creates the audit partitions of the month of `now` and the next
    /// ``Options/partitionMonthsAhead``.
    ///
    /// Fails with `StoreError.unusable` if the database's schema version is newer than
    /// ``schemaVersion``, `.unavailable` if PostgreSQL cannot be reached, `.backend` otherwise. On
    /// failure the executor is closed if ``Options/closesExecutor``.
    ///
    /// - Parameter now: Milliseconds since 1970; the system clock when `nil`.
    public static func open(executor: any PostgresExecutor, options: Options = Options(), now: Int64? = nil)
        async throws -> PostgresStore
    {
        let store: PostgresStore
        do {
            // Migrations may wait for another node's (advisory lock): a longer bound than a request's.
            let applied = try await PostgresCallContext.$deadline.withValue(.now + .seconds(120)) {
                try await executor.write { connection in
                    try await PostgresMigrations.migrate(connection, PostgresMigrations.all)
                }.value
            }
            store = PostgresStore(executor: executor, options: options, appliedMigrations: applied)
        } catch {
            if options.closesExecutor { await executor.close() }
            throw storeError(error)
        }
        do {
            _ = try await store.maintainPartitions(now: now ?? SystemClock().wallMilliseconds())
        } catch {
            try? await store.close()
            throw storeError(error)
        }
        return store
    }

    /// Opens the store over a ``SingleHostPostgresExecutor`` to `conninfo` (which it closes on
    /// ``close()``).
    public static func open(conninfo: String, maxConnections: Int = 4, options: Options = Options()) async throws
        -> PostgresStore
    {
        var options = options
        options.closesExecutor = true
        return try await open(
            executor: SingleHostPostgresExecutor(conninfo: conninfo, maxConnections: maxConnections), options: options)
    }

    /// How many audit transactions have committed (each holding one or more events).
    public var auditCommitCount: Int { audit.withLock { $0.commits } }

    // MARK: Tokens

    /// Integers are read as text; ORDER BY must then name table columns (`tokens.created_at`), not
    /// these output columns of the same name.
    private static let tokenColumns =
        "id, encode(secret_hash, 'hex'), subject, policy, created_at::text, expires_at::text, revoked_at::text"

    public func insertToken(_ token: TokenRecord) async throws {
        try await write { connection in
            _ = try await connection.boundedQuery(
                """
                INSERT INTO tokens(id, secret_hash, subject, policy, created_at, expires_at, revoked_at)
                VALUES ($1, $2::bytea, $3, $4, $5::bigint, $6::bigint, $7::bigint)
                """,
                [
                    token.id, Self.hexBytea(token.secretHash), token.subject, token.policy, String(token.createdAt),
                    token.expiresAt.map { String($0) }, token.revokedAt.map { String($0) },
                ])
        }
    }

    public func token(secretHash: [UInt8]) async throws -> TokenRecord? {
        try await read(tokenLookupRequirement()) { connection in
            try await connection.boundedQuery(
                "SELECT \(Self.tokenColumns) FROM tokens WHERE secret_hash = $1::bytea", [Self.hexBytea(secretHash)]
            ).first.map(Self.token(from:))
        }
    }

    public func token(id: String) async throws -> TokenRecord? {
        try await read(tokenLookupRequirement()) { connection in
            try await connection.boundedQuery("SELECT \(Self.tokenColumns) FROM tokens WHERE id = $1", [id])
                .first.map(Self.token(from:))
        }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await read(RequestConsistency.readRequirement ?? options.listReads) { connection in
            try await connection.boundedQuery("SELECT \(Self.tokenColumns) FROM tokens ORDER BY tokens.created_at, tokens.inserted")
                .map(Self.token(from:))
        }
    }

    public func revokeToken(id: String, at: Int64) async throws -> TokenRecord? {
        // One statement: the row lock makes a concurrent revocation wait, and COALESCE is evaluated on
        // the row as it is then, so the first revocation time is kept.
        try await write { connection in
            try await connection.boundedQuery(
                """
                UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2::bigint) WHERE id = $1
                RETURNING \(Self.tokenColumns)
                """, [id, String(at)]
            ).first.map(Self.token(from:))
        }
    }

    /// Token lookups read the primary unless the request asks for read-your-writes.
    private func tokenLookupRequirement() -> ReadRequirement {
        if let requirement = RequestConsistency.readRequirement, case .readYourWrites = requirement { return requirement }
        return .primary
    }

    private static func token(from row: [String?]) throws -> TokenRecord {
        TokenRecord(
            id: try text(row, 0), secretHash: try bytes(hex: text(row, 1)), subject: try text(row, 2),
            policy: try text(row, 3), createdAt: try int(row, 4), expiresAt: try optionalInt(row, 5),
            revokedAt: try optionalInt(row, 6))
    }

    // MARK: Documents

    public func putDocument(kind: DocumentKind, name: String, json: String, updatedAt: Int64) async throws {
        try await write { connection in
            _ = try await connection.boundedQuery(
                """
                INSERT INTO documents(kind, name, json, updated_at) VALUES ($1, $2, $3, $4::bigint)
                ON CONFLICT (kind, name) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at
                """, [kind.rawValue, name, json, String(updatedAt)])
        }
    }

    public func documents(kind: DocumentKind) async throws -> [StoredDocument] {
        try await read(RequestConsistency.readRequirement ?? .primary) { connection in
            try await connection.boundedQuery(
                "SELECT name, json, updated_at::text FROM documents WHERE kind = $1 ORDER BY name", [kind.rawValue]
            ).map { row in
                StoredDocument(name: try Self.text(row, 0), json: try Self.text(row, 1), updatedAt: try Self.int(row, 2))
            }
        }
    }

    public func deleteDocument(kind: DocumentKind, name: String) async throws -> Bool {
        try await write { connection in
            try await !connection.boundedQuery(
                "DELETE FROM documents WHERE kind = $1 AND name = $2 RETURNING 1", [kind.rawValue, name]
            ).isEmpty
        }
    }

    // MARK: Settings

    public func setting(_ key: String) async throws -> String? {
        try await read(RequestConsistency.readRequirement ?? .primary) { connection in
            try await connection.boundedQuery("SELECT value FROM settings WHERE key = $1", [key]).first.map { try Self.text($0, 0) }
        }
    }

    public func setSetting(_ key: String, value: String) async throws {
        try await write { connection in
            _ = try await connection.boundedQuery(
                "INSERT INTO settings(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value])
        }
    }

    // MARK: Audit

    public func appendAudit(_ event: AuditEventInput) async throws -> AuditAppendResult {
        try checkOpen()
        let outcome = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<AuditOutcome, any Error>) in
            if !enqueueAudit([PendingAppend(event: event, complete: { continuation.resume(with: $0) })]) {
                continuation.resume(throwing: StoreError(.closed, "the store is closed"))
            }
        }
        RequestConsistency.lsnSink?.record(outcome.commitLSN)
        return outcome.result
    }

    /// Appends `events` in this order, queued together and written in one statement (one commit:
    /// all of them or none), with nothing from other callers in between.
    public func appendAudit(batch events: [AuditEventInput]) async throws -> [AuditAppendResult] {
        try checkOpen()
        guard !events.isEmpty else { return [] }
        let outcome = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<(results: [AuditAppendResult], commitLSN: UInt64), any Error>) in
            let collector = AuditBatchCollector(count: events.count, continuation: continuation)
            let group = nextAuditGroup.withLock { value -> UInt64 in
                value &+= 1
                return value
            }
            let pending = events.enumerated().map { index, event in
                PendingAppend(event: event, group: group, complete: { collector.complete(index, $0) })
            }
            if !enqueueAudit(pending) {
                continuation.resume(throwing: StoreError(.closed, "the store is closed"))
            }
        }
        RequestConsistency.lsnSink?.record(outcome.commitLSN)
        return outcome.results
    }

    public func auditEvents(after: Int64, limit: Int) async throws -> [AuditEvent] {
        try checkOpen()
        guard limit > 0 else { return [] }
        return try await read(RequestConsistency.readRequirement ?? options.listReads) { connection in
            try await connection.boundedQuery(
                """
                SELECT seq::text, event_id, actor, action, resource, outcome, detail, recorded_at::text, node_id
                FROM audit_events WHERE audit_events.seq > $1::bigint ORDER BY audit_events.seq LIMIT $2::bigint
                """, [String(after), String(limit)]
            ).map { row in
                AuditEvent(
                    seq: try Self.int(row, 0),
                    event: AuditEventInput(
                        id: try Self.text(row, 1), actor: try Self.text(row, 2), action: try Self.text(row, 3),
                        resource: try Self.text(row, 4), outcome: try Self.text(row, 5),
                        detailJSON: try Self.text(row, 6), recordedAt: try Self.int(row, 7),
                        nodeID: try Self.text(row, 8)))
            }
        }
    }

    /// Queues `pending` together, in order, and starts the drain unless one runs; false once closed.
    private func enqueueAudit(_ pending: [PendingAppend]) -> Bool {
        let action: AuditSubmit = audit.withLock { queue in
            if queue.closed { return .refuse }
            queue.pending.append(contentsOf: pending)
            if queue.draining { return .queued }
            queue.draining = true
            return .startDrain
        }
        switch action {
        case .refuse: return false
        case .queued: return true
        case .startDrain:
            Task.detached { await self.drainAudit() }
            return true
        }
    }

    /// Takes batches off the queue and writes them until it is empty (one drain at a time per store).
    private func drainAudit() async {
        let maxBatch = options.maxAuditBatch
        while true {
            let next: AuditDrainStep = audit.withLock { queue in
                if queue.pending.isEmpty {
                    queue.draining = false
                    defer { queue.idleWaiters = [] }
                    return .idle(queue.idleWaiters)
                }
                var count = min(queue.pending.count, maxBatch)
                // A batch call's group is never split between statements (all of it commits or none).
                if count < queue.pending.count, queue.pending[count].group != 0,
                    queue.pending[count - 1].group == queue.pending[count].group {
                    let group = queue.pending[count].group
                    let start = queue.pending.firstIndex { $0.group == group } ?? 0
                    if start > 0 {
                        count = start
                    } else {
                        count = queue.pending.firstIndex { $0.group != group } ?? queue.pending.count
                    }
                }
                defer { queue.pending.removeFirst(count) }
                return .batch(Array(queue.pending.prefix(count)))
            }
            switch next {
            case .idle(let waiters):
                for waiter in waiters { waiter.resume() }
                return
            case .batch(let batch):
                do {
                    let written = try await writeAuditBatch(batch.map(\.event))
                    audit.withLock { $0.commits += 1 }
                    for (pending, result) in zip(batch, written.results) {
                        pending.complete(.success(AuditOutcome(result: result, commitLSN: written.commitLSN)))
                    }
                } catch {
                    let failure = mapError(error)
                    for pending in batch { pending.complete(.failure(failure)) }
                }
            }
        }
    }

    /// Writes `events` in one statement (`audit_append`, which takes the audit-append lock). An id
    /// seen earlier in the batch repeats that occurrence's outcome as a duplicate. A month without a
    /// partition gets one, then the batch is retried once.
    private func writeAuditBatch(_ events: [AuditEventInput]) async throws -> AuditBatchResult {
        // Position in `unique` of each id, and the index in `events` of its first occurrence.
        var position: [String: Int] = [:]
        var firstOccurrence: [String: Int] = [:]
        var unique: [AuditEventInput] = []
        for (index, event) in events.enumerated() where position[event.id] == nil {
            position[event.id] = unique.count
            firstOccurrence[event.id] = index
            unique.append(event)
        }
        let digests = events.map(Self.contentDigest)
        let uniqueDigests = unique.map(Self.contentDigest)
        let parameters: [String?] = [
            Self.arrayLiteral(unique.map(\.id)), Self.arrayLiteral(unique.map(\.actor)),
            Self.arrayLiteral(unique.map(\.action)), Self.arrayLiteral(unique.map(\.resource)),
            Self.arrayLiteral(unique.map(\.outcome)), Self.arrayLiteral(unique.map(\.detailJSON)),
            Self.arrayLiteral(unique.map { String($0.recordedAt) }), Self.arrayLiteral(unique.map(\.nodeID)),
            Self.arrayLiteral(uniqueDigests.map { "\\x" + $0 }),
        ]
        var attempt = 0
        while true {
            attempt += 1
            let written: (value: [[String?]], commitLSN: UInt64)
            do {
                written = try await executor.write { connection in
                    try await connection.boundedQuery(
                        """
                        SELECT r_ord::text, r_seq::text, r_existed, r_digest
                        FROM audit_append($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                          $7::bigint[], $8::text[], $9::bytea[])
                        """, parameters)
                }
            } catch let error as PostgresError where error.sqlState == "23514" && attempt == 1 {
                // "no partition of relation audit_events found for row": create the months, retry.
                let months = Set(unique.map { AuditMonth(containing: $0.recordedAt) })
                _ = try await ensurePartitions(months.sorted())
                continue
            }
            // Per unique event: seq, whether it existed, and the stored content digest.
            var stored = [StoredAuditID?](repeating: nil, count: unique.count)
            for row in written.value {
                let ordinal = try Self.int(row, 0)
                guard ordinal >= 1, ordinal <= Int64(unique.count) else {
                    throw StoreError(.backend, "audit append returned ordinal \(ordinal) for \(unique.count) events")
                }
                stored[Int(ordinal - 1)] = StoredAuditID(
                    seq: try Self.int(row, 1), existed: try Self.text(row, 2) == "t", digest: try Self.text(row, 3))
            }
            var results: [AuditAppendResult] = []
            results.reserveCapacity(events.count)
            for (index, event) in events.enumerated() {
                guard let outcome = stored[position[event.id]!] else {
                    throw StoreError(.backend, "audit event \(event.id) was neither inserted nor found")
                }
                results.append(
                    AuditAppendResult(
                        seq: outcome.seq, duplicate: outcome.existed || firstOccurrence[event.id] != index,
                        sameContent: digests[index] == outcome.digest))
            }
            return AuditBatchResult(results: results, commitLSN: written.commitLSN)
        }
    }

    /// SHA-256 (hex) of the content `sameContent` compares: actor, action, resource, outcome and
    /// detail, each length-prefixed.
    static func contentDigest(_ event: AuditEventInput) -> String {
        var hasher = SHA256()
        for field in [event.actor, event.action, event.resource, event.outcome, event.detailJSON] {
            let bytes = Array(field.utf8)
            withUnsafeBytes(of: UInt64(bytes.count).bigEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: bytes)
        }
        return hex(Array(hasher.finalize()))
    }

    // MARK: Partitions

    /// Creates the audit partitions of the month of `now` (milliseconds since 1970) and the next
    /// ``Options/partitionMonthsAhead`` months that do not exist yet; returns the names created.
    /// Call it periodically (e.g. hourly); concurrent calls from several nodes are serialized.
    ///
    /// A partition is created as a plain table with a CHECK constraint matching its bounds and then
    /// attached, which takes only a SHARE UPDATE EXCLUSIVE lock on `audit_events`: appends go on.
    @discardableResult
    public func maintainPartitions(now: Int64) async throws -> [String] {
        let first = AuditMonth(containing: now)
        return try await ensurePartitions((0...options.partitionMonthsAhead).map { first.advanced(by: $0) })
    }

    /// The partitions attached to `audit_events`, by name (`audit_events_pYYYY_MM`), in order.
    public func auditPartitions() async throws -> [String] {
        try await read(.primary) { connection in
            try await Self.attachedPartitions(connection).sorted()
        }
    }

    /// Detaches the partition of `month` with `DETACH PARTITION … CONCURRENTLY` (appends and reads of
    /// other months go on meanwhile) and renames it `audit_archive_YYYY_MM` (with a suffix if that
    /// name is taken), to be dumped or dropped by the operator. Returns the archive table's name, or
    /// `nil` when the month has no attached partition.
    ///
    /// A detach that was interrupted (the partition is left "detach pending", invisible to new
    /// queries, and appends for its month fail until then) is completed by calling this again.
    ///
    /// The events leave the log (`auditEvents` no longer returns them) but their ids stay known: a
    /// replay of one is still reported as a duplicate with its original seq. An event recorded later
    /// for that month gets a new partition. Detach only months that no longer receive events.
    @discardableResult
    public func detachPartition(month: AuditMonth) async throws -> String? {
        let name = month.partitionName
        let state = try await write { connection in
            try await connection.boundedQuery(
                """
                SELECT i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'audit_events'::regclass AND c.relname = $1
                """, [name])
        }
        guard let pending = state.first else { return nil }
        // CONCURRENTLY cannot run in a transaction block: a statement of its own. A detach that was
        // interrupted (still pending) is completed with FINALIZE.
        let mode = pending == ["t"] ? "FINALIZE" : "CONCURRENTLY"
        // CONCURRENTLY waits for every transaction that uses the table: bounded by minutes, not by a
        // request's deadline.
        try await PostgresCallContext.$deadline.withValue(.now + .seconds(600)) {
            try await write { connection in
                _ = try await connection.boundedQuery("ALTER TABLE audit_events DETACH PARTITION \(Self.quoted(name)) \(mode)")
            }
        }
        return try await write { connection in
            try await connection.inTransaction {
                try await Self.lockPartitions(connection)
                return try await Self.archive(name, month: month, connection)
            }
        }
    }

    private func ensurePartitions(_ months: [AuditMonth]) async throws -> [String] {
        try await write { connection in
            try await connection.inTransaction {
                try await Self.lockPartitions(connection)
                let attached = try await Self.attachedPartitions(connection)
                var created: [String] = []
                for month in months where !attached.contains(month.partitionName) {
                    let name = month.partitionName
                    if try await connection.boundedQuery("SELECT to_regclass($1) IS NOT NULL", [name]) == [["t"]] {
                        // A detached leftover of that month: archive it under another name.
                        _ = try await Self.archive(name, month: month, connection)
                    }
                    let bounds = month.bounds
                    var checks: [String] = []
                    if let lower = bounds.lower { checks.append("recorded_at >= \(lower)") }
                    if let upper = bounds.upper { checks.append("recorded_at < \(upper)") }
                    _ = try await connection.boundedQuery(
                        "CREATE TABLE \(Self.quoted(name)) (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)")
                    if !checks.isEmpty {
                        // Lets ATTACH skip its validation scan.
                        _ = try await connection.boundedQuery(
                            "ALTER TABLE \(Self.quoted(name)) ADD CONSTRAINT \(Self.quoted(name + "_range")) CHECK (\(checks.joined(separator: " AND ")))"
                        )
                    }
                    _ = try await connection.boundedQuery(
                        "ALTER TABLE audit_events ATTACH PARTITION \(Self.quoted(name)) FOR VALUES FROM (\(bounds.lower.map { String($0) } ?? "MINVALUE")) TO (\(bounds.upper.map { String($0) } ?? "MAXVALUE"))"
                    )
                    created.append(name)
                }
                return created
            }
        }
    }

    private static func lockPartitions(_ connection: PostgresConnection) async throws {
        _ = try await connection.boundedQuery(
            "SELECT pg_advisory_xact_lock($1, $2)",
            [String(PostgresMigrations.LockKey.classID), String(PostgresMigrations.LockKey.partitions)])
    }

    private static func attachedPartitions(_ connection: PostgresConnection) async throws -> Set<String> {
        Set(
            try await connection.boundedQuery(
                """
                SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'audit_events'::regclass
                """
            ).map { try text($0, 0) })
    }

    /// Renames the (detached) table `name` to the first free `audit_archive_…` name; returns it.
    private static func archive(_ name: String, month: AuditMonth, _ connection: PostgresConnection) async throws
        -> String
    {
        let base = "audit_archive_" + month.suffix
        var candidate = base
        var n = 1
        while try await connection.boundedQuery("SELECT to_regclass($1) IS NOT NULL", [candidate]) == [["t"]] {
            n += 1
            candidate = base + "_\(n)"
        }
        _ = try await connection.boundedQuery("ALTER TABLE \(quoted(name)) RENAME TO \(quoted(candidate))")
        return candidate
    }

    // MARK: Lifecycle

    /// Refuses new calls, waits for queued audit appends to commit, then closes the executor (if
    /// ``Options/closesExecutor``). Idempotent.
    public func close() async throws {
        let first = !closed.exchange(true, ordering: .acquiringAndReleasing)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = audit.withLock { queue in
                queue.closed = true
                if !queue.draining { return true }
                queue.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
        if first, options.closesExecutor { await executor.close() }
    }

    // MARK: Plumbing

    private func checkOpen() throws {
        if closed.load(ordering: .acquiring) { throw StoreError(.closed, "the store is closed") }
    }

    @discardableResult
    private func write<T: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try checkOpen()
        do {
            return try await executor.write(body).value
        } catch {
            throw mapError(error)
        }
    }

    private func read<T: Sendable>(
        _ requirement: ReadRequirement, _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        try checkOpen()
        do {
            return try await executor.read(requirement, body)
        } catch {
            throw mapError(error)
        }
    }

    private func mapError(_ error: any Error) -> StoreError {
        if closed.load(ordering: .acquiring), let error = error as? PostgresError, error.code == .connectionClosed {
            return StoreError(.closed, "the store is closed")
        }
        return Self.storeError(error)
    }

    /// The one mapping from client errors to `StoreError`: unique violation → `.conflict`; a lost,
    /// refused or read-only (demoted primary) connection → `.unavailable` (retry, possibly elsewhere);
    /// anything else → `.backend` with the SQLSTATE.
    static func storeError(_ error: any Error) -> StoreError {
        if let error = error as? StoreError { return error }
        guard let error = error as? PostgresError else { return StoreError(.backend, "\(error)") }
        switch error.code {
        case .connectionFailed, .connectionLost, .connectionClosed, .timeout, .poolExhausted, .commitOutcomeUnknown:
            // Unreachable, hung past the deadline, or the outcome of the commit is unknown: retry
            // (audit appends, idempotent by id, are spooled).
            return StoreError(.unavailable, "PostgreSQL unavailable: \(error.message)")
        case .server:
            let state = error.sqlState ?? ""
            if state == "23505" { return StoreError(.conflict, error.message) }
            // Connection trouble, a read-only (standby) server, a shutdown, a cancel — and transient
            // refusals that a later retry gets past: serialization failure, deadlock, lock timeout,
            // insufficient resources (disk full, out of memory, too many connections), system errors.
            if state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("58")
                || ["25006", "57P01", "57P02", "57P03", "57014", "40001", "40P01", "55P03"].contains(state) {
                return StoreError(.unavailable, "PostgreSQL unavailable: \(error.message) (SQLSTATE \(state))")
            }
            return StoreError(.backend, "\(error.message) (SQLSTATE \(state))")
        default:
            return StoreError(.backend, error.description)
        }
    }

    // MARK: Text encoding

    static func text(_ row: [String?], _ column: Int) throws -> String {
        guard column < row.count, let value = row[column] else {
            throw StoreError(.backend, "unexpected NULL or missing column \(column) in \(row)")
        }
        return value
    }

    static func int(_ row: [String?], _ column: Int) throws -> Int64 {
        guard let value = Int64(try text(row, column)) else {
            throw StoreError(.backend, "column \(column) is not an integer in \(row)")
        }
        return value
    }

    static func optionalInt(_ row: [String?], _ column: Int) throws -> Int64? {
        guard column < row.count, row[column] != nil else { return nil }
        return try int(row, column)
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    static func hex(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `\x…`: bytea's hexadecimal input form.
    static func hexBytea(_ bytes: [UInt8]) -> String { "\\x" + hex(bytes) }

    static func bytes(hex text: String) throws -> [UInt8] {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { throw StoreError(.backend, "odd-length hex \(text)") }
        func value(_ c: UInt8) throws -> UInt8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: throw StoreError(.backend, "invalid hex \(text)")
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            out.append(try value(digits[index]) << 4 | value(digits[index + 1]))
            index += 2
        }
        return out
    }

    /// A PostgreSQL array literal of `elements`, each quoted (`"` and `\` escaped), for a bound
    /// `$n::text[]` (or `bigint[]`, `bytea[]`) parameter.
    public static func arrayLiteral(_ elements: [String]) -> String {
        var out = "{"
        for (index, element) in elements.enumerated() {
            if index > 0 { out += "," }
            out += "\""
            for character in element.unicodeScalars {
                if character == "\"" || character == "\\" { out += "\\" }
                out.unicodeScalars.append(character)
            }
            out += "\""
        }
        return out + "}"
    }

    /// A double-quoted SQL identifier (the names here are generated: `[a-z0-9_]`).
    static func quoted(_ identifier: String) -> String {
        var out = "\""
        for character in identifier.unicodeScalars {
            if character == "\"" { out += "\"" }
            out.unicodeScalars.append(character)
        }
        return out + "\""
    }
}

/// A calendar month (UTC): the unit of the audit table's partitions.
public struct AuditMonth: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The proleptic Gregorian year.
    public let year: Int64
    /// 1 to 12.
    public let month: Int64

    /// The month `year`-`month`; `month` outside 1…12 carries into the year.
    public init(year: Int64, month: Int64) {
        let zeroBased = month - 1
        let carry = zeroBased >= 0 ? zeroBased / 12 : (zeroBased - 11) / 12
        self.year = year + carry
        self.month = zeroBased - carry * 12 + 1
    }

    /// The month containing `milliseconds` since 1970 (UTC).
    public init(containing milliseconds: Int64) {
        let day = milliseconds >= 0 ? milliseconds / 86_400_000 : (milliseconds - 86_399_999) / 86_400_000
        let civil = Self.civil(fromDays: day)
        self.init(year: civil.year, month: civil.month)
    }

    /// The month `count` months after this one (before it when negative).
    public func advanced(by count: Int) -> AuditMonth {
        AuditMonth(year: year, month: month + Int64(count))
    }

    /// Milliseconds since 1970 of the first instant of the month, or `nil` if out of `Int64`'s range.
    public var startMilliseconds: Int64? {
        let days = Self.days(fromCivil: year, month, 1)
        let (value, overflow) = days.multipliedReportingOverflow(by: 86_400_000)
        return overflow ? nil : value
    }

    /// The partition's bounds: `[lower, upper)`; `nil` means unbounded (`MINVALUE` / `MAXVALUE`).
    var bounds: (lower: Int64?, upper: Int64?) { (startMilliseconds, advanced(by: 1).startMilliseconds) }

    /// `YYYY_MM` (`m` before the year when negative).
    var suffix: String {
        let digits = String(year.magnitude)
        let padded = String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        return (year < 0 ? "m" : "") + padded + "_" + (month < 10 ? "0" : "") + String(month)
    }

    /// `audit_events_pYYYY_MM`.
    public var partitionName: String { "audit_events_p" + suffix }

    /// `YYYY-MM`.
    public var description: String { "\(year)-\(month < 10 ? "0" : "")\(month)" }

    public static func < (lhs: AuditMonth, rhs: AuditMonth) -> Bool {
        (lhs.year, lhs.month) < (rhs.year, rhs.month)
    }

    // Howard Hinnant's civil-date algorithms (proleptic Gregorian, day 0 = 1970-01-01).
    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int64) -> (year: Int64, month: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month)
    }
}

// MARK: - Audit queue

private struct PendingAppend: Sendable {
    var event: AuditEventInput
    /// Appends queued by one `appendAudit(batch:)` share a group (> 0) and are written in one statement.
    var group: UInt64 = 0
    /// Called once with the event's outcome (a single append's continuation, or a batch's collector).
    var complete: @Sendable (Result<AuditOutcome, any Error>) -> Void
}

/// Gathers the outcomes of one `appendAudit(batch:)` and resumes its caller once all are in.
private final class AuditBatchCollector: Sendable {
    private struct State {
        var results: [AuditAppendResult?]
        var remaining: Int
        var lastLSN: UInt64 = 0
        var failure: (any Error)?
    }
    private let state: Mutex<State>
    private let continuation: CheckedContinuation<(results: [AuditAppendResult], commitLSN: UInt64), any Error>

    init(count: Int, continuation: CheckedContinuation<(results: [AuditAppendResult], commitLSN: UInt64), any Error>) {
        state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count))
        self.continuation = continuation
    }

    func complete(_ index: Int, _ outcome: Result<AuditOutcome, any Error>) {
        let finished: Result<(results: [AuditAppendResult], commitLSN: UInt64), any Error>? = state.withLock { state in
            switch outcome {
            case .success(let value):
                state.results[index] = value.result
                state.lastLSN = max(state.lastLSN, value.commitLSN)
            case .failure(let error):
                if state.failure == nil { state.failure = error }
            }
            state.remaining -= 1
            guard state.remaining == 0 else { return nil }
            if let failure = state.failure { return .failure(failure) }
            return .success((state.results.map { $0! }, state.lastLSN))
        }
        if let finished { continuation.resume(with: finished) }
    }
}

private struct AuditOutcome: Sendable {
    var result: AuditAppendResult
    var commitLSN: UInt64
}

private struct StoredAuditID {
    var seq: Int64
    var existed: Bool
    var digest: String
}

private struct AuditBatchResult: Sendable {
    var results: [AuditAppendResult]
    var commitLSN: UInt64
}

private struct AuditQueue {
    var pending: [PendingAppend] = []
    var draining = false
    var closed = false
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
    var commits = 0
}

private enum AuditSubmit {
    case refuse
    case queued
    case startDrain
}

private enum AuditDrainStep {
    case idle([CheckedContinuation<Void, Never>])
    case batch([PendingAppend])
}
