import ArgumentParser
import Coordinator
import CoordinatorCore
import Foundation
import Logging
import Metrics
import PostgresClient
import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - bench postgres

/// `coordinator bench postgres`: the PostgreSQL store behind the node's replica router
/// (`ReplicatedPostgres`) against the same statements on direct libpq pools, failover time after a
/// `kill -9` of the primary, and read-your-writes while a replica's replay is paused. Each part runs on
/// a private PostgreSQL 15 primary + one streaming replica (see README, "Benchmarks").
struct BenchPostgres: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres",
        abstract: "PostgreSQL store through the replica router vs direct libpq pools, failover time, read-your-writes (private primary + replica on 127.0.0.1)."
    )

    @Option(help: "Seconds of load per side (each side gets a warm-up of up to 2 s first).")
    var seconds: Int = 10
    @Option(help: "Concurrent callers on each side; the direct pools and the router get this many connections per server.")
    var concurrency: Int = 16
    @Option(help: "Throughput rounds; each runs every side once (direct, router, store writes; direct, store reads). The best round of each side is compared.")
    var rounds: Int = 3
    @Option(help: "Failovers measured, each on a fresh primary + replica.")
    var failovers: Int = 3
    @Option(help: "Write-then-read iterations in each read-your-writes phase (streaming, replay paused, resumed).")
    var ryw: Int = 500

    /// Routed throughput must reach this share of direct throughput.
    static let goalRatio = 0.9
    /// Writes must succeed again this soon after `pg_ctl promote -w` returns.
    static let goalFailover: Duration = .seconds(2)
    /// Tokens seeded for the read side.
    static let tokenCount = 1_000
    /// Rows per audit page read.
    static let pageSize = 10
    /// The list-read requirement of the read side (the store's default `listReads`).
    static let freshRead = ReadRequirement.fresh(maxLagBytes: 1 << 20, maxLagSeconds: 1)
    /// Probe interval of the router in the read-your-writes part (the smallest `postgres.probeIntervalMs`).
    static let rywProbeInterval: Int64 = 50

    func validate() throws {
        guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be between 1 and 600") }
        guard (1...256).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 256") }
        guard (1...20).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 20") }
        guard (0...100).contains(failovers) else { throw ValidationError("--failovers must be between 0 and 100") }
        guard (0...100_000).contains(ryw) else { throw ValidationError("--ryw must be between 0 and 100000") }
    }

    func run() async throws {
        if let missing = PGBenchTools.missingBinary() {
            FileHandle.standardError.write(Data(
                "error: \(missing) not found (set COORDINATOR_BENCH_PG_BIN to PostgreSQL's bin directory, or apt-get install postgresql-15)\n".utf8))
            throw ExitCode(2)
        }
        if PGBenchTools.isRoot, getpwnam("postgres") == nil {
            throw BenchError("running as root but there is no 'postgres' user to run PostgreSQL as")
        }
        var logger = Logger(label: "coordinator-bench")
        logger.logLevel = .error
        // As `serve` does, so the router's gauges and counters do their real work.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()))
        PGBenchRegistry.removeOrphans()
        PGBenchRegistry.trapSignals()

        let callers = concurrency
        print("coordinator bench postgres: PostgreSQL \(await PGBenchTools.version()) primary + 1 streaming replica per part, 127.0.0.1,"
            + " as user postgres; fsync off, synchronous_commit on, synchronous_standby_names 'ANY 1 (replica1)' on the primary")

        // (1) Throughput.
        print("")
        print("(1) throughput: \(callers) callers per side, \(rounds) round(s) of \(seconds) s per side after a warm-up of \(min(2, seconds)) s;"
            + " router: probeIntervalMs 500, deadline 2 s, \(callers) connections per host; direct: one PostgresPool of \(callers) per server")
        let throughput = try await PGBenchPair.with(maxConnections: 4 * callers + 20) { pair in
            try await measureThroughput(pair, logger: logger)
        }

        // (2) Failover.
        var failoverResults: [FailoverResult] = []
        if failovers > 0 {
            print("")
            print("(2) failover: one writer appending audit events through the router (probeIntervalMs 500, deadline 2 s);"
                + " kill -9 of the primary, 500 ms later `pg_ctl promote -w` of the replica; a fresh pair each time")
            for round in 1...failovers {
                let result = try await PGBenchPair.with(maxConnections: 40) { pair in
                    try await Self.measureFailover(pair, round: round, logger: logger)
                }
                failoverResults.append(result)
                print(result.line(round: round))
            }
        }

        // (3) Read-your-writes.
        var rywResult: RYWResult?
        if ryw > 0 {
            print("")
            print("(3) read-your-writes: \(ryw) iterations per phase of appendAudit (commit LSN from an LSNSink) then"
                + " auditEvents with .readYourWrites(minimumLSN:); router probeIntervalMs \(Self.rywProbeInterval);"
                + " every 5th read waits 60 ms after its write (so the replica can qualify), the others read at once")
            rywResult = try await PGBenchPair.with(maxConnections: 40) { pair in
                try await Self.measureReadYourWrites(pair, iterations: ryw, logger: logger)
            }
        }

        // Summary.
        print("")
        print("summary")
        print(throughput.routerWriteVerdict)
        print(throughput.writeVerdict)
        print(throughput.readVerdict)
        if !failoverResults.isEmpty {
            let worst = failoverResults.map(\.recovery).max() ?? .zero
            let each = failoverResults.map { Self.ms($0.recovery) }.joined(separator: ", ")
            print("failover: writes succeeded again \(each) after promote returned; max \(Self.ms(worst))"
                + " (goal ≤ \(Self.ms(Self.goalFailover))): \(worst <= Self.goalFailover ? "goal met" : "GOAL MISSED")")
        }
        if let rywResult {
            let stale = rywResult.phases.map(\.stale).reduce(0, +)
            let reads = rywResult.phases.map(\.iterations).reduce(0, +)
            print("read-your-writes: \(stale) stale of \(reads) reads (goal 0): \(stale == 0 ? "goal met" : "GOAL MISSED");"
                + " replica served \(rywResult.phases.map { "\($0.replicaReads) \($0.name)" }.joined(separator: ", "))")
        }
    }

    // MARK: (1) throughput

    struct ThroughputResult {
        var routerWriteVerdict: String
        var writeVerdict: String
        var readVerdict: String
    }

    struct LoadResult {
        var operations: Int
        var seconds: Double
        var cpuPerOperation: Double
        var rate: Double { seconds > 0 ? Double(operations) / seconds : 0 }
    }

    /// One round of the five sides.
    struct ThroughputRound {
        var directWrites: LoadResult
        var routerWrites: LoadResult
        var storeWrites: LoadResult
        var storeTransactions: Int
        var directReads: LoadResult
        var storeReads: LoadResult
        var readsToPrimary: UInt64
        var readsToReplica: UInt64
        var readFallbacks: UInt64
    }

    func measureThroughput(_ pair: PGBenchPair, logger: Logger) async throws -> ThroughputResult {
        let callers = concurrency
        var settings = ReplicatedPostgres.Settings()
        settings.maxConnectionsPerHost = callers
        let routed = try await RoutedStore.open(pair, settings: settings, logger: logger)
        let direct = DirectPools(pair, connections: callers, statementTimeout: settings.statementTimeout)
        do {
            let now = Int64(Date().timeIntervalSince1970 * 1_000)
            // Tokens for the read side, through the store.
            var hashes: [[UInt8]] = []
            var generator = SystemRandomNumberGenerator()
            for index in 0..<Self.tokenCount {
                let hash = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
                hashes.append(hash)
                try await routed.store.insertToken(TokenRecord(
                    id: "bench-token-\(index)", secretHash: hash, subject: "bench-subject-\(index)", policy: "default",
                    createdAt: now, expiresAt: nil, revokedAt: nil))
            }
            var results: [ThroughputRound] = []
            for round in 1...rounds {
                results.append(try await throughputRound(round, pair: pair, routed: routed, direct: direct, tokens: hashes, now: now))
            }
            await direct.close()
            await routed.close()
            return report(results)
        } catch {
            await direct.close()
            await routed.close()
            throw error
        }
    }

    /// Writes (direct, router only, store), then reads (direct, store); each side warmed up first.
    func throughputRound(
        _ round: Int, pair: PGBenchPair, routed: RoutedStore, direct: DirectPools, tokens: [[UInt8]], now: Int64
    ) async throws -> ThroughputRound {
        let callers = concurrency
        let duration = Duration.seconds(seconds)
        let warmup = Duration.seconds(min(2, seconds))
        let store = routed.store
        let router = routed.router
        typealias Operation = @Sendable (_ caller: Int, _ iteration: Int, _ warmingUp: Bool) async throws -> Void
        func warm(_ operation: @escaping Operation) async throws {
            _ = try await Self.load(callers: callers, duration: warmup) { caller, n in try await operation(caller, n, true) }
        }
        func measure(_ operation: @escaping Operation) async throws -> LoadResult {
            try await Self.load(callers: callers, duration: duration) { caller, n in try await operation(caller, n, false) }
        }
        func measured(_ operation: @escaping Operation) async throws -> LoadResult {
            try await warm(operation)
            return try await measure(operation)
        }
        @Sendable func id(_ side: String, _ caller: Int, _ n: Int, _ warm: Bool) -> String {
            "bench-\(round)-\(side)\(warm ? "w" : "")-\(caller)-\(n)"
        }

        // Writes: one event per audit_append statement on a direct pool; the same statement through
        // router.write (routing, the router's pools, the commit-LSN query); store.appendAudit (which
        // group-commits concurrent appends into one audit_append).
        let directWrites = try await measured { caller, n, warm in
            try await direct.append(AuditFixture.event(id: id("d", caller, n, warm), at: now))
        }
        let routerWrites = try await measured { caller, n, warm in
            let parameters = DirectPools.appendParameters(AuditFixture.event(id: id("x", caller, n, warm), at: now))
            let rows = try await router.write { connection in
                try await connection.boundedQuery(DirectPools.appendSQL, parameters)
            }.value
            try DirectPools.checkAppend(rows)
        }
        let storeWrite: Operation = { caller, n, warm in
            let result = try await store.appendAudit(AuditFixture.event(id: id("s", caller, n, warm), at: now))
            guard !result.duplicate else { throw BenchError("a fresh audit event was reported as a duplicate: \(result)") }
        }
        try await warm(storeWrite)
        let commitsBefore = store.auditCommitCount
        let storeWrites = try await measure(storeWrite)
        let transactions = store.auditCommitCount - commitsBefore

        // Reads: alternately a token lookup (the primary) and an audit page (`.fresh`: the replica).
        try await pair.waitForReplicaCatchUp()
        let maxSeqText = try await pair.sql(pair.primary, "SELECT COALESCE(max(seq), 0)::text FROM audit_events")
        guard let maxSeq = Int64(maxSeqText.first?.first.flatMap { $0 } ?? ""), maxSeq > 2_000 else {
            throw BenchError("too few audit events for the read side: \(maxSeqText)")
        }
        let pageRange: Range<Int64> = 0..<(maxSeq - 1_000)
        let pageSize = Self.pageSize
        let directReads = try await measured { _, n, _ in
            if n % 2 == 0 {
                guard try await direct.token(tokens.randomElement()!) else { throw BenchError("direct token lookup found nothing") }
            } else {
                let rows = try await direct.auditPage(after: Int64.random(in: pageRange), limit: pageSize)
                guard rows == pageSize else { throw BenchError("direct audit page returned \(rows) rows") }
            }
        }
        let storeRead: Operation = { _, n, _ in
            if n % 2 == 0 {
                guard try await store.token(secretHash: tokens.randomElement()!) != nil else { throw BenchError("store.token found nothing") }
            } else {
                let page = try await RequestConsistency.$readRequirement.withValue(Self.freshRead) {
                    try await store.auditEvents(after: Int64.random(in: pageRange), limit: pageSize)
                }
                guard page.count == pageSize else { throw BenchError("store.auditEvents returned \(page.count) events") }
            }
        }
        try await warm(storeRead)
        let countersBefore = router.snapshot().counters
        let storeReads = try await measure(storeRead)
        let counters = router.snapshot().counters
        let result = ThroughputRound(
            directWrites: directWrites, routerWrites: routerWrites, storeWrites: storeWrites, storeTransactions: transactions,
            directReads: directReads, storeReads: storeReads,
            readsToPrimary: counters.readsToPrimary - countersBefore.readsToPrimary,
            readsToReplica: counters.readsToReplica - countersBefore.readsToReplica,
            readFallbacks: counters.readFallbacks - countersBefore.readFallbacks)
        printRound(round, result)
        return result
    }

    func printRound(_ round: Int, _ r: ThroughputRound) {
        func row(_ name: String, _ load: LoadResult, _ note: String) -> String {
            "round \(round): \(name)".padding(toLength: 80, withPad: " ", startingAt: 0)
                + String(format: "%10.0f %9.1f", load.rate, load.cpuPerOperation * 1e6) + "  " + note
        }
        func pct(_ a: LoadResult, _ b: LoadResult) -> String { String(format: "%.1f %%", b.rate > 0 ? a.rate / b.rate * 100 : 0) }
        if round == 1 { print("side".padding(toLength: 80, withPad: " ", startingAt: 0) + "decisions/s  client µs CPU/op") }
        print(row("direct writes: audit_append(1 event), primary pool", r.directWrites,
                  "\(r.directWrites.operations) events, 1 per transaction"))
        print(row("router writes: same statement via ReplicatedPostgres.write", r.routerWrites,
                  "\(r.routerWrites.operations) events, 1 per transaction (+ commit-LSN query); \(pct(r.routerWrites, r.directWrites)) of direct"))
        print(row("store writes: PostgresStore.appendAudit via the router", r.storeWrites,
                  "\(r.storeWrites.operations) events in \(r.storeTransactions) transactions"
                  + String(format: " (%.1f per transaction: group commit); ", Double(r.storeWrites.operations) / Double(max(1, r.storeTransactions)))
                  + "\(pct(r.storeWrites, r.directWrites)) of direct"))
        print(row("direct reads: token SELECT (primary) / audit page (replica)", r.directReads,
                  "\(r.directReads.operations) reads, half each"))
        print(row("store reads: token(secretHash:) / auditEvents under .fresh", r.storeReads,
                  "\(r.storeReads.operations) reads: \(r.readsToPrimary) to the primary, \(r.readsToReplica) to the replica, "
                  + "\(r.readFallbacks) fallbacks; \(pct(r.storeReads, r.directReads)) of direct"))
    }

    /// Best round of each side, ratios and verdicts.
    func report(_ results: [ThroughputRound]) -> ThroughputResult {
        func best(_ side: (ThroughputRound) -> LoadResult) -> Double { results.map { side($0).rate }.max() ?? 0 }
        let directWrites = best(\.directWrites)
        let routerWrites = best(\.routerWrites)
        let storeWrites = best(\.storeWrites)
        let directReads = best(\.directReads)
        let storeReads = best(\.storeReads)
        func verdict(_ what: String, _ value: Double, _ baseline: Double, _ extra: String) -> String {
            let ratio = baseline > 0 ? value / baseline : 0
            return String(format: "ratio %@: %.1f %% (%.0f vs %.0f decisions/s; goal ≥ %.0f %%): %@", what, ratio * 100, value, baseline,
                          Self.goalRatio * 100, ratio >= Self.goalRatio ? "goal met" : "GOAL MISSED") + extra
        }
        let bestOf = results.count > 1 ? " (best of \(results.count) rounds per side)" : ""
        let routerLine = verdict("router writes/direct writes, same statement", routerWrites, directWrites, bestOf)
        let writeLine = verdict("store writes/direct writes", storeWrites, directWrites, bestOf)
        let readLine = verdict("store reads/direct reads", storeReads, directReads, bestOf)
        print(routerLine)
        print(writeLine)
        print(readLine)
        return ThroughputResult(routerWriteVerdict: routerLine, writeVerdict: writeLine, readVerdict: readLine)
    }

    /// `callers` tasks running `operation(caller, iteration)` back to back until `duration` has passed;
    /// any error fails the run. Returns the operations, the elapsed seconds and this process's CPU per
    /// operation.
    static func load(
        callers: Int, duration: Duration, _ operation: @escaping @Sendable (Int, Int) async throws -> Void
    ) async throws -> LoadResult {
        let clock = ContinuousClock()
        let cpuBefore = cpuSeconds(children: false)
        let start = clock.now
        let end = start + duration
        let operations = try await withThrowingTaskGroup(of: Int.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var count = 0
                    while clock.now < end {
                        try await operation(caller, count)
                        count += 1
                    }
                    return count
                }
            }
            var total = 0
            for try await count in group { total += count }
            return total
        }
        let elapsed = seconds(clock.now - start)
        let cpu = cpuSeconds(children: false) - cpuBefore
        return LoadResult(operations: operations, seconds: elapsed, cpuPerOperation: operations > 0 ? cpu / Double(operations) : 0)
    }

    // MARK: (2) failover

    struct FailoverResult {
        /// From `pg_ctl promote -w` returning to the completion of the first write that succeeded after the kill.
        var recovery: Duration
        var promoteTook: Duration
        var killToRecovery: Duration
        var acknowledged: Int
        var lost: Int
        var failures: [String: Int]
        /// Router probes that failed between the kill and the first success (the dead primary's included).
        var probeFailures: UInt64

        func line(round: Int) -> String {
            let failed = failures.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            return "failover \(round): first write succeeded \(BenchPostgres.ms(recovery)) after `pg_ctl promote -w` returned"
                + " (promote took \(BenchPostgres.ms(promoteTook)); \(BenchPostgres.ms(killToRecovery)) after the kill);"
                + " failed writes meanwhile: \(failed.isEmpty ? "none" : failed); failed router probes: \(probeFailures);"
                + " \(acknowledged) acknowledged, \(lost) lost"
        }
    }

    /// What the failover writer saw.
    final class WriterLog: Sendable {
        struct State {
            var acknowledged: [String] = []
            var failures: [String: Int] = [:]
            /// The first success of a write that started after `startedAfter`.
            var firstSuccess: ContinuousClock.Instant?
            var startedAfter: ContinuousClock.Instant?
            /// Set to stop the writer.
            var stop = false
        }
        let state = Mutex(State())
    }

    static func measureFailover(_ pair: PGBenchPair, round: Int, logger: Logger) async throws -> FailoverResult {
        let routed = try await RoutedStore.open(pair, settings: ReplicatedPostgres.Settings(), logger: logger)
        let log = WriterLog()
        let store = routed.store
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        let writer = Task {
            var index = 0
            while !log.state.withLock({ $0.stop }) {
                index += 1
                let id = "bench-failover-\(round)-\(index)"
                let started = ContinuousClock.now
                do {
                    _ = try await store.appendAudit(AuditFixture.event(id: id, at: now))
                    let finished = ContinuousClock.now
                    log.state.withLock { state in
                        state.acknowledged.append(id)
                        if let after = state.startedAfter, started > after, state.firstSuccess == nil { state.firstSuccess = finished }
                    }
                } catch {
                    let code = (error as? StoreError).map { "store \($0.code.rawValue)" } ?? "other: \(error)"
                    log.state.withLock { $0.failures[code, default: 0] += 1 }
                    try? await Task.sleep(for: .milliseconds(1))
                }
            }
        }
        do {
            try await Task.sleep(for: .seconds(1))
            guard log.state.withLock({ $0.acknowledged.count }) > 10 else {
                throw BenchError("the writer acknowledged \(log.state.withLock { $0.acknowledged.count }) events in 1 s before the kill")
            }
            let probesBefore = routed.router.snapshot().counters.probesFailed
            let killStart = ContinuousClock.now
            try await pair.kill9(pair.primary)
            log.state.withLock { $0.startedAfter = .now }
            try await Task.sleep(for: .milliseconds(500))
            let promoteStart = ContinuousClock.now
            try await pair.promote(pair.replica)
            let promoted = ContinuousClock.now
            let deadline = promoted + .seconds(30)
            var firstSuccess: ContinuousClock.Instant?
            while ContinuousClock.now < deadline {
                firstSuccess = log.state.withLock { $0.firstSuccess }
                if firstSuccess != nil { break }
                try await Task.sleep(for: .milliseconds(1))
            }
            let probeFailures = routed.router.snapshot().counters.probesFailed - probesBefore
            log.state.withLock { $0.stop = true }
            await writer.value
            guard let firstSuccess else { throw BenchError("no write succeeded within 30 s of the promotion") }
            let (acknowledged, failures) = log.state.withLock { ($0.acknowledged, $0.failures) }
            // Durability check: every acknowledged event is on the promoted replica.
            let found = try await pair.sql(
                pair.replica, "SELECT count(*)::text FROM audit_ids WHERE event_id = ANY($1::text[])",
                [PGBenchTools.arrayLiteral(acknowledged)])
            let present = Int(found.first?.first.flatMap { $0 } ?? "") ?? 0
            await routed.close()
            return FailoverResult(
                recovery: firstSuccess - promoted, promoteTook: promoted - promoteStart, killToRecovery: firstSuccess - killStart,
                acknowledged: acknowledged.count, lost: acknowledged.count - present, failures: failures,
                probeFailures: probeFailures)
        } catch {
            log.state.withLock { $0.stop = true }
            await writer.value
            await routed.close()
            throw error
        }
    }

    // MARK: (3) read-your-writes

    struct RYWPhase {
        var name: String
        var iterations: Int
        var stale: Int
        var replicaReads: UInt64
        var primaryReads: UInt64
    }

    struct RYWResult {
        var phases: [RYWPhase]
    }

    static func measureReadYourWrites(_ pair: PGBenchPair, iterations: Int, logger: Logger) async throws -> RYWResult {
        var settings = ReplicatedPostgres.Settings()
        settings.probeInterval = .milliseconds(rywProbeInterval)
        let routed = try await RoutedStore.open(pair, settings: settings, logger: logger)
        let store = routed.store
        let router = routed.router
        let replicaID = HostID(host: "127.0.0.1", port: pair.replica.port)
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        func replicaStatus() -> HostStatus? { router.snapshot().hosts.first { $0.id == replicaID } }
        func waitFor(_ what: String, _ condition: () -> Bool) async throws {
            let end = ContinuousClock.now + .seconds(30)
            while !condition() {
                guard ContinuousClock.now < end else { throw BenchError("timed out after 30 s waiting for \(what)") }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        func phase(_ name: String) async throws -> RYWPhase {
            let before = router.snapshot().counters
            var stale = 0
            for index in 0..<iterations {
                let id = "bench-ryw-\(name)-\(index)"
                let sink = LSNSink()
                let written = try await RequestConsistency.$lsnSink.withValue(sink) {
                    try await store.appendAudit(AuditFixture.event(id: id, at: now))
                }
                guard let lsn = sink.value else { throw BenchError("appendAudit reported no commit LSN") }
                if index % 5 == 4 { try await Task.sleep(for: .milliseconds(60)) }
                let page = try await RequestConsistency.$readRequirement.withValue(.readYourWrites(minimumLSN: lsn)) {
                    try await store.auditEvents(after: written.seq - 1, limit: 1)
                }
                if page.first?.event.id != id { stale += 1 }
            }
            let after = router.snapshot().counters
            return RYWPhase(
                name: name, iterations: iterations, stale: stale, replicaReads: after.readsToReplica - before.readsToReplica,
                primaryReads: (after.readsToPrimary - before.readsToPrimary) + (after.readFallbacks - before.readFallbacks))
        }
        do {
            try await waitFor("the router to see the replica") { replicaStatus()?.role == .replica }
            var phases: [RYWPhase] = []
            phases.append(try await phase("before the pause"))
            _ = try await pair.sql(pair.replica, "SELECT pg_wal_replay_pause()")
            try await waitFor("the router to see the replay paused") { replicaStatus()?.replayPaused == true }
            phases.append(try await phase("while paused"))
            _ = try await pair.sql(pair.replica, "SELECT pg_wal_replay_resume()")
            try await waitFor("the router to see the replay resumed") { replicaStatus()?.replayPaused == false }
            try await pair.waitForReplicaCatchUp()
            try await Task.sleep(for: .milliseconds(3 * rywProbeInterval))
            phases.append(try await phase("after resume"))
            await routed.close()

            print("phase".padding(toLength: 20, withPad: " ", startingAt: 0) + "  reads  stale  served by replica  served by primary")
            for p in phases {
                print(p.name.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + String(format: "%7ld %6ld %18llu %18llu", p.iterations, p.stale, p.replicaReads, p.primaryReads))
            }
            let stale = phases.map(\.stale).reduce(0, +)
            print("stale reads: \(stale) of \(phases.map(\.iterations).reduce(0, +)) (goal 0): \(stale == 0 ? "goal met" : "GOAL MISSED")")
            if phases[1].replicaReads > 0 {
                print("note: the replica served \(phases[1].replicaReads) read-your-writes reads while its replay was paused")
            }
            return RYWResult(phases: phases)
        } catch {
            await routed.close()
            throw error
        }
    }

    // MARK: Helpers

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    /// `12.3 ms` (negative when the router saw the promotion before `pg_ctl` returned).
    static func ms(_ d: Duration) -> String { String(format: "%.1f ms", seconds(d) * 1_000) }
}

// MARK: - Routed store and direct pools

/// The real store opened through the router, as `serve` opens it (migrations included).
struct RoutedStore: Sendable {
    let router: ReplicatedPostgres
    let prober: Task<Void, Never>
    let store: PostgresStore

    static func open(_ pair: PGBenchPair, settings: ReplicatedPostgres.Settings, logger: Logger) async throws -> RoutedStore {
        let router = try ReplicatedPostgres(url: pair.multiHostURL, settings: settings, logger: logger)
        let prober = Task { await router.run() }
        guard await router.waitForPrimary(timeout: .seconds(15)) else {
            prober.cancel()
            await router.close()
            throw BenchError("the router found no primary among \(router.targets.map(\.id).joined(separator: ", ")) within 15 s")
        }
        do {
            // `open` closes the router when it fails.
            let store = try await PostgresStore.open(executor: router)
            return RoutedStore(router: router, prober: prober, store: store)
        } catch {
            prober.cancel()
            throw error
        }
    }

    /// Closes the store and with it the router.
    func close() async {
        try? await store.close()
        prober.cancel()
        await prober.value
    }
}

/// One `PostgresPool` per server, running the store's own statements.
struct DirectPools: Sendable {
    let primary: PostgresPool
    let replica: PostgresPool

    /// The store's audit append (`PostgresStore.writeAuditBatch`), verbatim.
    static let appendSQL = """
        SELECT r_ord::text, r_seq::text, r_existed, r_digest
        FROM audit_append($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                          $7::bigint[], $8::text[], $9::bytea[])
        """
    /// The store's `token(secretHash:)`, verbatim.
    static let tokenSQL =
        "SELECT id, encode(secret_hash, 'hex'), subject, policy, created_at::text, expires_at::text, revoked_at::text FROM tokens WHERE secret_hash = $1::bytea"
    /// The store's `auditEvents(after:limit:)`, verbatim.
    static let pageSQL = """
        SELECT seq::text, event_id, actor, action, resource, outcome, detail, recorded_at::text, node_id
        FROM audit_events WHERE audit_events.seq > $1::bigint ORDER BY audit_events.seq LIMIT $2::bigint
        """

    init(_ pair: PGBenchPair, connections: Int, statementTimeout: Duration?) {
        func pool(_ server: PGBenchPair.Server) -> PostgresPool {
            PostgresPool(configuration: PostgresPoolConfiguration(
                target: PostgresHostTarget(host: "127.0.0.1", port: server.port, conninfo: server.conninfo),
                maxConnections: connections, idleTimeout: .seconds(60), connectTimeout: .seconds(2),
                statementTimeout: statementTimeout))
        }
        primary = pool(pair.primary)
        replica = pool(pair.replica)
    }

    /// The store's parameters for a batch of one event (digest: ``AuditFixture/digest``).
    static func appendParameters(_ event: AuditEventInput) -> [String?] {
        [
            PGBenchTools.arrayLiteral([event.id]), PGBenchTools.arrayLiteral([event.actor]),
            PGBenchTools.arrayLiteral([event.action]), PGBenchTools.arrayLiteral([event.resource]),
            PGBenchTools.arrayLiteral([event.outcome]), PGBenchTools.arrayLiteral([event.detailJSON]),
            PGBenchTools.arrayLiteral([String(event.recordedAt)]), PGBenchTools.arrayLiteral([event.nodeID]),
            PGBenchTools.arrayLiteral([AuditFixture.digest]),
        ]
    }

    /// `audit_append` of one fresh event answers one row, not existing.
    static func checkAppend(_ rows: [[String?]]) throws {
        guard rows.count == 1, rows[0].count == 4, rows[0][2] == "f" else {
            throw BenchError("audit_append answered \(rows) for a fresh event")
        }
    }

    /// One event, one `audit_append` statement, on the primary (a 2 s deadline, as the router's).
    func append(_ event: AuditEventInput) async throws {
        let deadline = ContinuousClock.now + .seconds(2)
        let parameters = Self.appendParameters(event)
        let rows = try await primary.withConnection(deadline: deadline) { connection in
            try await connection.query(Self.appendSQL, parameters, deadline: deadline)
        }
        try Self.checkAppend(rows)
    }

    /// The token lookup on the primary; whether a row came back.
    func token(_ hash: [UInt8]) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(2)
        let rows = try await primary.withConnection(deadline: deadline) { connection in
            try await connection.query(Self.tokenSQL, ["\\x" + PGBenchTools.hex(hash)], deadline: deadline)
        }
        return rows.count == 1 && rows[0].count == 7
    }

    /// One audit page on the replica; the number of rows.
    func auditPage(after: Int64, limit: Int) async throws -> Int {
        let deadline = ContinuousClock.now + .seconds(2)
        let rows = try await replica.withConnection(deadline: deadline) { connection in
            try await connection.query(Self.pageSQL, [String(after), String(limit)], deadline: deadline)
        }
        return rows.count
    }

    func close() async {
        await primary.close(deadline: .now + .seconds(2))
        await replica.close(deadline: .now + .seconds(2))
    }
}

/// The audit event both sides write (only the id changes).
enum AuditFixture {
    /// A SHA-256-sized content digest (hex, bytea input form) for the direct side; the store computes
    /// its own.
    static let digest = "\\x" + String(repeating: "ab", count: 32)

    static func event(id: String, at recordedAt: Int64) -> AuditEventInput {
        AuditEventInput(
            id: id, actor: "bench-actor", action: "token.verify", resource: "tokens/bench", outcome: "ok",
            detailJSON: #"{"bench":true}"#, recordedAt: recordedAt, nodeID: "bench-node")
    }
}

// MARK: - A private primary + replica

/// A private PostgreSQL primary and one streaming replica (physical slot `replica1`, synchronous
/// `ANY 1 (replica1)` on the primary) in a fresh `/tmp/coordinator-bench-pg-*` directory: data
/// directories, logs, and the unix-socket directory outside them. Servers listen on 127.0.0.1 on free
/// ports, `-A trust` for user `postgres`; binaries run as `postgres` when this process is root.
/// ``destroy()`` (also run on error, on SIGINT/SIGTERM and at exit) stops them (`pg_ctl stop -m
/// immediate`, then SIGKILL) and removes the directory.
final class PGBenchPair: Sendable {
    /// One server.
    struct Server: Sendable {
        let name: String
        let port: Int
        let dataDirectory: String
        let logFile: String
        var conninfo: String { "host=127.0.0.1 port=\(port) user=postgres dbname=postgres" }
    }

    let root: String
    let primary: Server
    let replica: Server
    private let destroyed = Atomic<Bool>(false)

    /// `postgresql://postgres@primary,replica/postgres`.
    var multiHostURL: String { "postgresql://postgres@127.0.0.1:\(primary.port),127.0.0.1:\(replica.port)/postgres" }

    private init(root: String, primary: Server, replica: Server) {
        self.root = root
        self.primary = primary
        self.replica = replica
    }

    /// Starts a pair, runs `body`, destroys the pair (also when `body` throws).
    static func with<T>(maxConnections: Int, _ body: (PGBenchPair) async throws -> T) async throws -> T {
        let pair = try await start(maxConnections: maxConnections)
        do {
            let result = try await body(pair)
            await pair.destroy()
            return result
        } catch {
            await pair.destroy()
            throw error
        }
    }

    static func start(maxConnections: Int) async throws -> PGBenchPair {
        let root = try PGBenchRegistry.makeRoot()
        do {
            let primaryData = root + "/primary"
            try await PGBenchTools.runPG(
                "initdb", ["-D", primaryData, "-A", "trust", "-U", "postgres", "--no-sync", "--encoding=UTF8", "--locale=C"], in: root
            ).check("initdb")
            let conf = """

                # --- coordinator bench postgres ---
                listen_addresses = '127.0.0.1'
                unix_socket_directories = '\(root)/sock'
                wal_level = replica
                hot_standby = on
                max_wal_senders = 10
                max_replication_slots = 10
                wal_sender_timeout = 2s
                wal_receiver_timeout = 2s
                wal_receiver_status_interval = 1s
                wal_retrieve_retry_interval = 1s
                wal_keep_size = 256MB
                hot_standby_feedback = on
                fsync = off
                synchronous_commit = on
                max_connections = \(maxConnections)
                shared_buffers = 128MB
                logging_collector = off
                log_min_messages = warning

                """
            guard let handle = FileHandle(forWritingAtPath: primaryData + "/postgresql.conf") else {
                throw BenchError("cannot open \(primaryData)/postgresql.conf")
            }
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(conf.utf8))
            try handle.close()
            // Synchronous replication on the primary only (a promoted replica must not wait for a standby).
            let primary = try await startServer(
                name: "primary", dataDirectory: primaryData, root: root,
                extra: "-c synchronous_standby_names='ANY 1 (replica1)'")
            let replicaData = root + "/replica1"
            try await PGBenchTools.runPG(
                "pg_basebackup", ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", replicaData, "-R",
                                  "-X", "stream", "-c", "fast", "-C", "-S", "replica1", "--no-sync"], in: root
            ).check("pg_basebackup")
            let replica = try await startServer(name: "replica1", dataDirectory: replicaData, root: root, extra: "")
            let pair = PGBenchPair(root: root, primary: primary, replica: replica)
            let end = ContinuousClock.now + .seconds(30)
            while true {
                let rows = try? await pair.sql(
                    primary, "SELECT count(*)::text FROM pg_stat_replication WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')")
                if rows == [["1"]] { break }
                guard ContinuousClock.now < end else { throw BenchError("the replica did not stream synchronously within 30 s") }
                try await Task.sleep(for: .milliseconds(50))
            }
            return pair
        } catch {
            await PGBenchRegistry.destroyOffPool(root)
            throw error
        }
    }

    /// `pg_ctl start` on a free port (another port when the one picked was taken meanwhile).
    private static func startServer(name: String, dataDirectory: String, root: String, extra: String) async throws -> Server {
        var lastError = ""
        for _ in 0..<5 {
            let server = Server(name: name, port: try freeLoopbackPort(), dataDirectory: dataDirectory, logFile: root + "/\(name).log")
            let options = "-c port=\(server.port) -c cluster_name=\(name) \(extra)"
            let result = try await PGBenchTools.runPG(
                "pg_ctl", ["start", "-D", dataDirectory, "-l", server.logFile, "-w", "-t", "60", "-o", options], in: root)
            if result.status == 0 { return server }
            let log = (try? String(contentsOfFile: server.logFile, encoding: .utf8)) ?? ""
            lastError = result.output + String(log.suffix(2_000))
            guard lastError.contains("could not bind") || lastError.contains("Address already in use")
                || lastError.contains("could not create lock file")
            else { break }
        }
        throw BenchError("could not start \(name) in \(dataDirectory): \(lastError)")
    }

    /// Runs one statement on `server` over a fresh connection (10 s bound) and returns its rows.
    @discardableResult
    func sql(_ server: Server, _ statement: String, _ parameters: [String?] = []) async throws -> [[String?]] {
        let connection = try await PostgresConnection.connect(conninfo: server.conninfo, connectTimeout: .seconds(5))
        do {
            let rows = try await connection.query(statement, parameters, deadline: .now + .seconds(10))
            await connection.close()
            return rows
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Waits until the replica has replayed the primary's current WAL position.
    func waitForReplicaCatchUp() async throws {
        let lsn = try await sql(primary, "SELECT pg_current_wal_lsn()::text").first?.first.flatMap { $0 } ?? ""
        let end = ContinuousClock.now + .seconds(30)
        while try await sql(replica, "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", [lsn]) != [["true"]] {
            guard ContinuousClock.now < end else { throw BenchError("the replica did not replay \(lsn) within 30 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGKILL to the postmaster and all its processes; waits until they are gone.
    func kill9(_ server: Server) async throws {
        guard let pid = PGBenchTools.livePostmaster(dataDirectory: server.dataDirectory) else {
            throw BenchError("\(server.name) is not running")
        }
        let children = PGBenchTools.children(of: pid)
        kill(pid, SIGKILL)
        for child in children { kill(child, SIGKILL) }
        let end = ContinuousClock.now + .seconds(10)
        while ([pid] + children).contains(where: PGBenchTools.isAlive) {
            guard ContinuousClock.now < end else { throw BenchError("\(server.name) survived SIGKILL for 10 s") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// `pg_ctl promote -w`.
    func promote(_ server: Server) async throws {
        try await PGBenchTools.runPG("pg_ctl", ["promote", "-w", "-t", "30", "-D", server.dataDirectory], in: root)
            .check("pg_ctl promote")
    }

    /// Stops both servers and removes the directory (idempotent; off the cooperative pool).
    func destroy() async {
        guard !destroyed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await PGBenchRegistry.destroyOffPool(root)
    }
}

// MARK: - Leak handling

/// The write end of the signal pipe (set once, before the handlers are installed; read by them).
nonisolated(unsafe) private var pgBenchSignalPipe: Int32 = -1

/// The bench's live directories: destroyed on SIGINT/SIGTERM and at exit; leftovers of a bench that
/// was SIGKILLed are removed by the next run.
enum PGBenchRegistry {
    static let prefix = "coordinator-bench-pg-"
    static let marker = "owner.pid"
    static let live = Mutex<Set<String>>([])
    /// Held while a directory is destroyed.
    static let destroying = Mutex(0)
    private static let hook: Void = { atexit { PGBenchRegistry.destroyAllLive() } }()

    /// A fresh directory (0755, owned by `postgres` when root) with the owner marker and the socket
    /// directory; registered as live.
    static func makeRoot() throws -> String {
        _ = hook
        let root = "/tmp/" + prefix + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: root + "/sock", withIntermediateDirectories: true)
        try "\(getpid())\n".write(toFile: root + "/" + marker, atomically: true, encoding: .utf8)
        chmod(root, 0o755)
        if PGBenchTools.isRoot, let user = getpwnam("postgres") {
            for path in [root, root + "/sock"] { chown(path, user.pointee.pw_uid, user.pointee.pw_gid) }
        }
        live.withLock { _ = $0.insert(root) }
        return root
    }

    /// On SIGINT or SIGTERM: destroy every live directory, then exit with 128 + the signal. A handler
    /// writes the signal number to a pipe (async-signal-safe); a thread of its own reads it and cleans
    /// up. (Not a Dispatch signal source: on Linux it let SIGTERM kill this multi-threaded process.)
    static func trapSignals() {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return }
        pgBenchSignalPipe = fds[1]
        let handler: @convention(c) (Int32) -> Void = { signal in
            var byte = UInt8(truncatingIfNeeded: signal)
            _ = write(pgBenchSignalPipe, &byte, 1)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        let readEnd = fds[0]
        Thread.detachNewThread {
            var byte: UInt8 = 0
            while read(readEnd, &byte, 1) < 0, errno == EINTR {}
            FileHandle.standardError.write(Data("signal \(byte): stopping the PostgreSQL servers\n".utf8))
            destroyAllLive()
            fflush(nil)
            // `_exit`: the main flow may be inside `exit` already (its error path); never run it twice.
            _exit(128 + Int32(byte))
        }
    }

    /// Destroys every live directory; waits for a destruction in progress on another thread.
    static func destroyAllLive() {
        for root in live.withLock({ $0 }) { destroy(root: root) }
    }

    /// ``destroy(root:)`` on a thread of its own.
    static func destroyOffPool(_ root: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                destroy(root: root)
                continuation.resume()
            }
        }
    }

    /// Stops every server under `root` (`pg_ctl stop -m immediate`, then SIGKILL to the postmaster and
    /// its children) and removes it. Blocking.
    static func destroy(root: String) {
        // One destruction at a time: a signal's cleanup and the main flow's (or `exit`'s) never race, and
        // the second finds the directory gone.
        destroying.withLock { _ in
            defer { live.withLock { _ = $0.remove(root) } }
            guard FileManager.default.fileExists(atPath: root + "/" + marker) else { return }
            let dataDirectories = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
                .map { root + "/" + $0 }
                .filter { FileManager.default.fileExists(atPath: $0 + "/PG_VERSION") }
            for data in dataDirectories {
                guard let pid = PGBenchTools.livePostmaster(dataDirectory: data) else { continue }
                let children = PGBenchTools.children(of: pid)
                _ = try? PGBenchTools.runBlocking(
                    PGBenchTools.binary("pg_ctl"), ["stop", "-D", data, "-m", "immediate", "-w", "-t", "10"], asPostgres: true, in: root)
                if PGBenchTools.isAlive(pid) { kill(pid, SIGKILL) }
                for child in children where PGBenchTools.isAlive(child) { kill(child, SIGKILL) }
            }
            try? FileManager.default.removeItem(atPath: root)
        }
    }

    /// Removes `coordinator-bench-pg-*` directories whose owning process is gone.
    static func removeOrphans() {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [] where entry.hasPrefix(prefix) {
            let root = "/tmp/" + entry
            guard let owner = try? String(contentsOfFile: root + "/" + marker, encoding: .utf8),
                let pid = pid_t(owner.trimmingCharacters(in: .whitespacesAndNewlines)), pid != getpid(), !PGBenchTools.isAlive(pid)
            else { continue }
            destroy(root: root)
        }
    }
}

// MARK: - Processes

/// PostgreSQL binaries, run with `posix_spawn` (never `Foundation.Process`: `pg_ctl start` leaves the
/// postmaster holding whatever descriptors it inherited, so a pipe would never close).
enum PGBenchTools {
    static let binDirectory = ProcessInfo.processInfo.environment["COORDINATOR_BENCH_PG_BIN"] ?? "/usr/lib/postgresql/15/bin"
    static let isRoot = geteuid() == 0

    static func binary(_ name: String) -> String { binDirectory + "/" + name }

    /// The first required binary that is missing.
    static func missingBinary() -> String? {
        ["initdb", "pg_ctl", "pg_basebackup", "postgres"].map(binary).first { !FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// `postgres --version`'s number, or "?".
    static func version() async -> String {
        guard let result = try? await runPG("postgres", ["--version"], in: "/tmp") else { return "?" }
        // postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)
        let words = result.output.split(separator: " ")
        return words.count > 2 ? String(words[2]).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A PostgreSQL array literal, elements quoted as the store quotes them.
    static func arrayLiteral(_ elements: [String]) -> String { PostgresStore.arrayLiteral(elements) }

    // MARK: pids

    /// Alive and not a zombie.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
            return true
        }
        return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
    }

    /// The pid in `postmaster.pid` when it is alive and its command line names `dataDirectory`.
    static func livePostmaster(dataDirectory: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first.trimmingCharacters(in: .whitespaces)),
            isAlive(pid), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
        else { return nil }
        let command = String(decoding: cmdline.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        return command.contains(dataDirectory) ? pid : nil
    }

    /// Processes whose parent is `pid`.
    static func children(of pid: pid_t) -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> pid_t? in
            guard let child = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == pid ? child : nil
        }
    }

    // MARK: running commands

    struct Result {
        var status: Int32
        var output: String

        @discardableResult
        func check(_ what: String) throws -> Result {
            guard status == 0 else { throw BenchError("\(what) failed (exit \(status)): \(output)") }
            return self
        }
    }

    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32

    /// `posix_spawn`: stdin /dev/null, stdout and stderr to `output`, every other descriptor closed,
    /// default signal mask and dispositions, in `directory`; as `postgres` (runuser) when root.
    static func spawn(_ executable: String, _ arguments: [String], asPostgres: Bool, in directory: String, output: String) throws -> pid_t {
        var argv = [executable] + arguments
        var path = executable
        if asPostgres, isRoot {
            path = FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") ? "/usr/sbin/runuser" : "/sbin/runuser"
            argv = [path, "-u", "postgres", "--", executable] + arguments
        }
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        environment["LC_ALL"] = "C.UTF-8"
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in cArgv { free(pointer) }
            for pointer in cEnv { free(pointer) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let library = dlopen(nil, RTLD_NOW)
        if let symbol = dlsym(library, "posix_spawn_file_actions_addchdir_np") {
            _ = unsafeBitCast(symbol, to: AddChdir.self)(&actions, directory)
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        if let symbol = dlsym(library, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3)
        } else {
            let open = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int32($0) }
            for fd in open where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, cArgv, cEnv)
        guard rc == 0 else { throw BenchError("cannot run \(path): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Waits for `pid` (blocking); its exit code, 128 + n when killed by signal n.
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    static func outputPath(in directory: String) -> String { directory + "/.cmd-" + UUID().uuidString + ".out" }

    static func collect(_ status: Int32, _ output: String) -> Result {
        defer { try? FileManager.default.removeItem(atPath: output) }
        return Result(status: status, output: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    /// Whether a child was reaped (shared by its waiting thread and its watchdog).
    final class ReapFlag: Sendable {
        let done = Mutex(false)
    }

    /// Runs a PostgreSQL binary (as `postgres` when root), waited for on a thread of its own; SIGKILL
    /// after 90 s.
    static func runPG(_ name: String, _ arguments: [String], in directory: String) async throws -> Result {
        let output = outputPath(in: directory)
        let pid = try spawn(binary(name), arguments, asPostgres: true, in: directory, output: output)
        let reaped = ReapFlag()
        let watchdog = Task {
            try? await Task.sleep(for: .seconds(90))
            reaped.done.withLock { done in if !done, !Task.isCancelled { kill(pid, SIGKILL) } }
        }
        let status: Int32 = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                // Wait for the exit without reaping, then reap under the lock: the watchdog never
                // signals a pid that was reaped (and may have been reused).
                var info = siginfo_t()
                while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0, errno == EINTR {}
                let status = reaped.done.withLock { done -> Int32 in
                    done = true
                    return reap(pid)
                }
                continuation.resume(returning: status)
            }
        }
        watchdog.cancel()
        return collect(status, output)
    }

    /// Runs a command and blocks until it exits (cleanup and `--version` only).
    static func runBlocking(_ executable: String, _ arguments: [String], asPostgres: Bool, in directory: String) throws -> Result {
        let output = outputPath(in: directory)
        let pid = try spawn(executable, arguments, asPostgres: asPostgres, in: directory, output: output)
        return collect(reap(pid), output)
    }
}
