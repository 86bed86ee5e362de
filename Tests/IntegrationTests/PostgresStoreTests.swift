import Coordinator
import Foundation
import PostgresClient
import Synchronization
import Testing

/// Milliseconds since 1970 of `year-month-day` 00:00 UTC, computed by Foundation (an oracle
/// independent of `AuditMonth`).
private func utcMilliseconds(_ year: Int, _ month: Int, _ day: Int = 1) -> Int64 {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    let date = calendar.date(from: DateComponents(year: year, month: month, day: day))!
    return Int64((date.timeIntervalSince1970 * 1000).rounded())
}

private func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Runs `body` with a fresh database, dropped afterwards.
private func withDatabase(_ prefix: String, _ body: (ScratchDatabase) async throws -> Void) async throws {
    let database = try await ScratchDatabase.create(prefix)
    do {
        try await body(database)
    } catch {
        await database.drop()
        throw error
    }
    await database.drop()
}

private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

private struct TestFailure: Error, CustomStringConvertible {
    let description: String
}

@Suite("PostgresStore (real PostgreSQL)")
struct PostgresStoreTests {
    // MARK: Migrations

    @Test func concurrentOpensMigrateExactlyOnce() async throws {
        try await withDatabase("migrate") { database in
            let applied = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for _ in 0..<5 {
                    group.addTask {
                        let store = try await PostgresStore.open(conninfo: database.url)
                        let applied = store.appliedMigrations
                        try await store.close()
                        return applied
                    }
                }
                return try await group.reduce(into: [[Int64]]()) { $0.append($1) }
            }
            #expect(applied.count == 5)
            #expect(applied.filter { !$0.isEmpty } == [Array(1...PostgresStore.schemaVersion)], "\(applied)")
            let connection = try await database.connect()
            #expect(try await connection.query("SELECT version::text FROM schema_migrations ORDER BY version") == [["1"], ["2"]])
            // The partitions were created once too, by whichever open got the lock first.
            let partitions = try await connection.query(
                "SELECT count(*)::text FROM pg_inherits WHERE inhparent = 'audit_events'::regclass")
            #expect(partitions == [["3"]])
            await connection.close()
        }
    }

    @Test func newerSchemaIsRefused() async throws {
        try await withDatabase("newer") { database in
            let store = try await PostgresStore.open(conninfo: database.url)
            try await store.setSetting("k", value: "v")
            try await store.close()

            let connection = try await database.connect()
            _ = try await connection.query(
                "INSERT INTO schema_migrations(version, applied_at) VALUES ($1, 0)", [String(PostgresStore.schemaVersion + 1)])
            await connection.close()

            let error = await expectStoreError(.unusable) { _ = try await PostgresStore.open(conninfo: database.url) }
            #expect(error?.message.contains("newer") == true, "\(String(describing: error))")
        }
    }

    @Test func unreachableServerIsUnavailable() async throws {
        let port = try TestEnvironment.closedLoopbackPort()
        await expectStoreError(.unavailable) {
            _ = try await PostgresStore.open(conninfo: "postgresql://postgres@127.0.0.1:\(port)/postgres")
        }
    }

    @Test func lostConnectionIsUnavailableAndThePoolRecovers() async throws {
        try await withDatabase("lost") { database in
            let store = try await PostgresStore.open(conninfo: database.url, maxConnections: 1)
            try await store.setSetting("k", value: "v")

            let admin = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
            let killed = try await admin.query(
                """
                SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                WHERE datname = $1 AND pid <> pg_backend_pid()
                """, [database.name])
            await admin.close()
            #expect(killed == [["t"]])

            // The pooled connection is dead: this call fails, retryably.
            await expectStoreError(.unavailable) { _ = try await store.setting("k") }
            // It was dropped from the pool: the next call gets a new one.
            #expect(try await store.setting("k") == "v")
            #expect(try await store.appendAudit(auditEvent("after-loss")).duplicate == false)
            try await store.close()
        }
    }

    // MARK: Partitions

    @Test func auditMonthMatchesTheCalendar() {
        for year in [1899, 1900, 1969, 1970, 1999, 2000, 2024, 2100] {
            for month in 1...12 {
                let m = AuditMonth(year: Int64(year), month: Int64(month))
                let start = utcMilliseconds(year, month)
                #expect(m.startMilliseconds == start, "\(m)")
                #expect(AuditMonth(containing: start) == m)
                #expect(AuditMonth(containing: start - 1) == m.advanced(by: -1))
                #expect(AuditMonth(containing: utcMilliseconds(year, month, 28) + 86_399_999) == m)
            }
        }
        #expect(AuditMonth(year: 2031, month: 13) == AuditMonth(year: 2032, month: 1))
        #expect(AuditMonth(year: 2031, month: 0) == AuditMonth(year: 2030, month: 12))
        #expect(AuditMonth(year: 2031, month: 11).advanced(by: 14) == AuditMonth(year: 2033, month: 1))
        #expect(AuditMonth(year: 2031, month: 2).partitionName == "audit_events_p2031_02")
        #expect(AuditMonth(containing: .max).advanced(by: 1).startMilliseconds == nil)
    }

    @Test func partitionsAreCreatedAheadOfTime() async throws {
        try await withDatabase("ahead") { database in
            let now = utcMilliseconds(2031, 11, 15)
            let store = try await PostgresStore.open(
                executor: SingleHostPostgresExecutor(conninfo: database.url), now: now)
            #expect(
                try await store.auditPartitions() == [
                    "audit_events_p2031_11", "audit_events_p2031_12", "audit_events_p2032_01",
                ])
            // Idempotent; a month later, one more month.
            #expect(try await store.maintainPartitions(now: now) == [])
            #expect(
                try await store.maintainPartitions(now: utcMilliseconds(2031, 12, 31)) == ["audit_events_p2032_02"])

            let connection = try await database.connect()
            let bound = try await connection.query(
                "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'audit_events_p2031_12'")
            #expect(
                bound == [["FOR VALUES FROM ('\(utcMilliseconds(2031, 12))') TO ('\(utcMilliseconds(2032, 1))')"]])
            // Nothing landed anywhere but in the right month.
            let at = utcMilliseconds(2032, 1) - 1
            _ = try await store.appendAudit(auditEvent("last-ms-of-december", at: at))
            #expect(
                try await connection.query("SELECT event_id FROM audit_events_p2031_12") == [["last-ms-of-december"]])
            await connection.close()
            try await store.close()
        }
    }

    @Test func appendToAMonthWithoutPartitionCreatesIt() async throws {
        try await withDatabase("ondemand") { database in
            let store = try await PostgresStore.open(conninfo: database.url)
            let before = Set(try await store.auditPartitions())
            // One far in the future, one before 1970, and a burst over five more months at once (one batch).
            let future = try await store.appendAudit(auditEvent("future", at: utcMilliseconds(2040, 6, 15)))
            let past = try await store.appendAudit(auditEvent("past", at: -1))
            let burst = try await withThrowingTaskGroup(of: AppendedEvent.self) { group in
                for n in 0..<40 {
                    let at = utcMilliseconds(2050, 1 + n % 5, 2)
                    group.addTask { AppendedEvent(id: "b\(n)", result: try await store.appendAudit(auditEvent("b\(n)", at: at))) }
                }
                return try await group.reduce(into: [AppendedEvent]()) { $0.append($1) }
            }
            #expect(burst.count == 40 && burst.allSatisfy { !$0.result.duplicate })
            let created = Set(try await store.auditPartitions()).subtracting(before)
            #expect(
                created == [
                    "audit_events_p2040_06", "audit_events_p1969_12", "audit_events_p2050_01", "audit_events_p2050_02",
                    "audit_events_p2050_03", "audit_events_p2050_04", "audit_events_p2050_05",
                ])
            let stored = try await store.auditEvents(after: 0, limit: 100)
            #expect(stored.count == 42)
            #expect(stored.first?.seq == future.seq && stored.dropFirst().first?.seq == past.seq)
            try await store.close()
        }
    }

    /// Why the store has no DEFAULT partition: PostgreSQL refuses to detach concurrently beside one.
    @Test func detachConcurrentlyIsRefusedBesideADefaultPartition() async throws {
        try await withDatabase("default") { database in
            let connection = try await database.connect()
            _ = try await connection.query("CREATE TABLE t (r bigint NOT NULL) PARTITION BY RANGE (r)")
            _ = try await connection.query("CREATE TABLE t_default PARTITION OF t DEFAULT")
            _ = try await connection.query("CREATE TABLE t_1 PARTITION OF t FOR VALUES FROM (0) TO (10)")
            let error = await #expect(throws: PostgresError.self) {
                try await connection.query("ALTER TABLE t DETACH PARTITION t_1 CONCURRENTLY")
            }
            #expect(error?.message.contains("default partition") == true, "\(String(describing: error))")
            await connection.close()
        }
    }

    @Test func detachRunsWhileAppendsGoOn() async throws {
        try await withDatabase("detach") { database in
            let store = try await PostgresStore.open(conninfo: database.url, maxConnections: 4)
            let oldMonth = AuditMonth(year: 2020, month: 3)
            let oldAt = utcMilliseconds(2020, 3, 10)
            let old = try await store.appendAudit(auditEvent("old-1", at: oldAt))
            #expect(try await store.auditPartitions().contains(oldMonth.partitionName))

            // A reader transaction that used audit_events: the detach's second phase waits for it.
            let reader = try await database.connect()
            _ = try await reader.query("BEGIN")
            _ = try await reader.query("SELECT count(*) FROM audit_events")
            // Whatever happens below, the reader ends after 3 s, so a blocking detach fails the test
            // instead of hanging it.
            let releaser = Task {
                try await Task.sleep(for: .seconds(3))
                _ = try await reader.query("COMMIT")
            }
            let detach = Task { try await store.detachPartition(month: oldMonth) }

            // Wait until the detach is pending (first phase committed).
            let observer = try await database.connect()
            let clock = ContinuousClock()
            var pending = false
            let pendingDeadline = clock.now + .seconds(2)
            while clock.now < pendingDeadline {
                let rows = try await observer.query(
                    """
                    SELECT i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE c.relname = $1
                    """, [oldMonth.partitionName])
                if rows == [["t"]] {
                    pending = true
                    break
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(pending, "the detach never became pending")

            // While it waits: appends and reads go on.
            let now = SystemClock().wallMilliseconds()
            var appended = 0
            let windowEnd = clock.now + .milliseconds(800)
            while clock.now < windowEnd {
                _ = try await store.appendAudit(auditEvent("live-\(appended)", at: now))
                appended += 1
                if appended % 10 == 0 { _ = try await store.auditEvents(after: 0, limit: 5) }
            }
            let stillPending = try await observer.query(
                "SELECT count(*)::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname = $1",
                [oldMonth.partitionName])
            #expect(appended >= 10, "only \(appended) appends while the detach was waiting")
            #expect(stillPending == [["1"]], "the detach finished before the reader ended")

            try await releaser.value
            let archive = try await detach.value
            #expect(archive == "audit_archive_2020_03")
            #expect(try await !store.auditPartitions().contains(oldMonth.partitionName))
            #expect(try await observer.query("SELECT event_id FROM audit_archive_2020_03") == [["old-1"]])
            await observer.close()
            await reader.close()

            // The detached event left the log, its id did not.
            let log = try await store.auditEvents(after: 0, limit: 10_000)
            #expect(log.count == appended && !log.contains { $0.event.id == "old-1" })
            #expect(
                try await store.appendAudit(auditEvent("old-1", at: oldAt))
                    == AuditAppendResult(seq: old.seq, duplicate: true, sameContent: true))
            // A late event for that month gets a new partition.
            let late = try await store.appendAudit(auditEvent("old-2", at: oldAt))
            #expect(!late.duplicate)
            #expect(try await store.auditPartitions().contains(oldMonth.partitionName))
            #expect(try await store.detachPartition(month: AuditMonth(year: 2019, month: 1)) == nil)
            try await store.close()
        }
    }

    // MARK: Audit ordering and throughput

    @Test func pagingReaderNeverSkipsUnderConcurrentWriters() async throws {
        try await withDatabase("noskip") { database in
            // Three "nodes" with small batches, so many transactions interleave.
            var stores: [PostgresStore] = []
            for _ in 0..<3 {
                stores.append(
                    try await PostgresStore.open(
                        executor: SingleHostPostgresExecutor(conninfo: database.url, maxConnections: 4),
                        options: .init(maxAuditBatch: 4)))
            }
            let nodes = stores
            let done = Flag()
            let perWriter = 60
            let writersPerNode = 8
            async let seen = Self.pageUntilDone(nodes[0], done)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (n, store) in nodes.enumerated() {
                    for w in 0..<writersPerNode {
                        group.addTask {
                            for i in 0..<perWriter { _ = try await store.appendAudit(auditEvent("n\(n)-w\(w)-\(i)")) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            done.set()
            let collected = try await seen
            let all = try await nodes[1].auditEvents(after: 0, limit: 100_000).map(\.seq)
            #expect(all.count == 3 * writersPerNode * perWriter)
            #expect(collected == all, "the paging reader saw \(collected.count) of \(all.count) events")
            for store in nodes { try await store.close() }
        }
    }

    /// Pages through the log 37 events at a time until `done` is set and a page comes back empty.
    private static func pageUntilDone(_ store: PostgresStore, _ done: Flag) async throws -> [Int64] {
        var collected: [Int64] = []
        var cursor: Int64 = 0
        while true {
            let finished = done.isSet
            let page = try await store.auditEvents(after: cursor, limit: 37)
            collected += page.map(\.seq)
            if let last = page.last {
                cursor = last.seq
            } else if finished {
                return collected
            } else {
                try await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    /// Prints audit append throughput: one sequential writer, 64 concurrent writers on one store, and
    /// 3 stores (nodes) × 32 writers.
    @Test func auditThroughput() async throws {
        try await withDatabase("throughput") { database in
            let store = try await PostgresStore.open(conninfo: database.url)
            let clock = ContinuousClock()

            // Baselines: one round trip (a read) and one autocommit write + LSN read.
            var start = clock.now
            for _ in 0..<200 { _ = try await store.setting("k") }
            print("postgres baseline: \(Int(200 / seconds(clock.now - start))) reads/s sequential")
            start = clock.now
            for n in 0..<200 { try await store.setSetting("k", value: "\(n)") }
            print("postgres baseline: \(Int(200 / seconds(clock.now - start))) setting writes/s sequential")

            let sequential = 500
            start = clock.now
            for n in 0..<sequential { _ = try await store.appendAudit(auditEvent("s\(n)")) }
            var elapsed = seconds(clock.now - start)
            print("postgres audit throughput, 1 writer: \(Int(Double(sequential) / elapsed)) events/s (\(sequential) events in \(elapsed) s)")

            let writers = 64
            let perWriter = 10_000 / writers + 1
            let commitsBefore = store.auditCommitCount
            start = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<writers {
                    group.addTask { for n in 0..<perWriter { _ = try await store.appendAudit(auditEvent("c\(w)-\(n)")) } }
                }
                try await group.waitForAll()
            }
            elapsed = seconds(clock.now - start)
            let total = writers * perWriter
            let commits = store.auditCommitCount - commitsBefore
            print(
                "postgres audit throughput, \(writers) writers on 1 store: \(Int(Double(total) / elapsed)) events/s, "
                    + "\(commits) commits (\(total / max(commits, 1)) events/commit) in \(elapsed) s")

            var nodes: [PostgresStore] = [store]
            for _ in 0..<2 { nodes.append(try await PostgresStore.open(conninfo: database.url)) }
            let perNodeWriters = 32
            start = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, node) in nodes.enumerated() {
                    for w in 0..<perNodeWriters {
                        group.addTask {
                            for n in 0..<perWriter { _ = try await node.appendAudit(auditEvent("m\(i)-\(w)-\(n)")) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            elapsed = seconds(clock.now - start)
            let multi = nodes.count * perNodeWriters * perWriter
            print(
                "postgres audit throughput, 3 stores x \(perNodeWriters) writers: \(Int(Double(multi) / elapsed)) events/s in \(elapsed) s"
            )
            #expect(try await store.auditEvents(after: 0, limit: 100_000).count == sequential + total + multi)
            for node in nodes { try await node.close() }
        }
    }

    // MARK: Executor and LSNs

    @Test func writeReturnsItsCommitLSNAndReadYourWritesSeesIt() async throws {
        try await withDatabase("lsn") { database in
            let observer = try await database.connect()
            _ = try await observer.query("CREATE TABLE notes (id int PRIMARY KEY, note text)")
            let executor = SingleHostPostgresExecutor(conninfo: database.url)

            let before = LSNText.parse(try await observer.query("SELECT pg_current_wal_lsn()::text")[0][0]!)!
            let sink = LSNSink()
            let written = try await RequestConsistency.$lsnSink.withValue(sink) {
                try await executor.write { connection in
                    _ = try await connection.query("INSERT INTO notes VALUES (1, $1)", ["hello"])
                    return "ok"
                }
            }
            #expect(written.value == "ok")
            #expect(written.commitLSN > before, "\(LSNText.format(written.commitLSN)) vs \(LSNText.format(before))")
            #expect(sink.value == written.commitLSN)
            let after = LSNText.parse(try await observer.query("SELECT pg_current_wal_insert_lsn()::text")[0][0]!)!
            #expect(written.commitLSN <= after)

            let rows = try await executor.read(.readYourWrites(minimumLSN: written.commitLSN)) { connection in
                try await connection.query("SELECT note FROM notes WHERE id = 1")
            }
            #expect(rows == [["hello"]])

            // What the LSN is for: a replica that has replayed up to it sees the write, even under
            // synchronous_commit = off (where the WAL *write* position can lag the commit record).
            let replica = try await Self.connectToReplica(database)
            for id in 2...11 {
                let write = try await executor.write { connection in
                    _ = try await connection.query("INSERT INTO notes VALUES ($1, 'x')", [String(id)])
                }
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(10)
                while clock.now < deadline {
                    let replayed = try await replica.query("SELECT pg_last_wal_replay_lsn()::text")[0][0].flatMap { LSNText.parse($0) }
                    if let replayed, replayed >= write.commitLSN { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
                let seen = try await replica.query("SELECT count(*)::text FROM notes WHERE id = $1", [String(id)])
                #expect(seen == [["1"]], "replica at or past \(LSNText.format(write.commitLSN)) lacks row \(id)")
            }
            await replica.close()
            await executor.close()
            await observer.close()
        }
    }

    /// Connects to `database` on the replica, waiting (up to 10 s) until its creation has replayed.
    private static func connectToReplica(_ database: ScratchDatabase) async throws -> PostgresConnection {
        let url = try ScratchDatabase.url(try TestEnvironment.postgresReplicaURL, database: database.name)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while clock.now < deadline {
            if let connection = try? await PostgresConnection.connect(conninfo: url) { return connection }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await PostgresConnection.connect(conninfo: url)
    }

    @Test func storeWritesReportTheirLSNToTheRequestSink() async throws {
        try await withDatabase("sink") { database in
            let store = try await PostgresStore.open(conninfo: database.url)
            let observer = try await database.connect()
            let before = LSNText.parse(try await observer.query("SELECT pg_current_wal_lsn()::text")[0][0]!)!

            let settingSink = LSNSink()
            try await RequestConsistency.$lsnSink.withValue(settingSink) {
                try await store.setSetting("k", value: "v")
            }
            let auditSink = LSNSink()
            _ = try await RequestConsistency.$lsnSink.withValue(auditSink) {
                try await store.appendAudit(auditEvent("e1"))
            }
            let readSink = LSNSink()
            let value = try await RequestConsistency.$lsnSink.withValue(readSink) {
                try await RequestConsistency.$readRequirement.withValue(.readYourWrites(minimumLSN: settingSink.value ?? 0)) {
                    try await store.setting("k")
                }
            }
            #expect(value == "v")
            #expect(settingSink.value.map { $0 > before } == true)
            #expect(auditSink.value.map { $0 > settingSink.value! } == true)
            #expect(readSink.value == nil, "a read reported an LSN")
            await observer.close()
            try await store.close()
        }
    }

    @Test func executorPoolIsBoundedAndRollsBackFailedBodies() async throws {
        try await withDatabase("pool") { database in
            let executor = SingleHostPostgresExecutor(conninfo: database.url, maxConnections: 3)
            let pids = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        try await executor.read(.primary) { connection in
                            try await connection.query("SELECT pg_backend_pid()::text, pg_sleep(0.05)")[0][0]!
                        }
                    }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(pids.count <= 3 && pids.count >= 2, "\(pids)")
            #expect(executor.openConnectionCount <= 3)

            // A body that fails mid-transaction: the connection is rolled back before reuse.
            let single = SingleHostPostgresExecutor(conninfo: database.url, maxConnections: 1)
            _ = try await single.write { connection in try await connection.query("CREATE TABLE t (id int)") }
            await #expect(throws: TestFailure.self) {
                _ = try await single.write { connection in
                    _ = try await connection.query("BEGIN")
                    _ = try await connection.query("INSERT INTO t VALUES (1)")
                    throw TestFailure(description: "body failed")
                }
            }
            let count = try await single.read(.primary) { connection in
                try await connection.query("SELECT count(*)::text FROM t")
            }
            #expect(count == [["0"]])

            await executor.close()
            await single.close()
            let closed = await #expect(throws: PostgresError.self) {
                try await executor.read(.primary) { connection in try await connection.query("SELECT 1") }
            }
            #expect(closed?.code == .connectionClosed)
        }
    }
}
