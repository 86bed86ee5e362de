import Foundation
import PostgresClient
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// PostgresClient v2 against the testenv primary and replica: typed values,
/// transactions, errors, deadlines, pools, LISTEN/NOTIFY. The hung-server
/// test runs its own private PostgreSQL (it SIGSTOPs it).
@Suite("PostgresClient v2 (real servers)")
struct PostgresClientIntegrationTests {
    private func primary(statementTimeout: Duration? = nil) async throws -> PostgresConnection {
        try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL, statementTimeout: statementTimeout)
    }

    // MARK: typed values

    @Test func typedValuesRoundTripIncludingNULL() async throws {
        let connection = try await primary()
        defer { Task { await connection.close() } }
        let table = TestEnvironment.uniqueName("typed")
        _ = try await connection.execute("""
            CREATE TABLE \(table) (id int8 PRIMARY KEY, small int2, n int4, flag bool, name text, vc varchar(20),
              data bytea, at timestamptz, u uuid, doc jsonb, lsn pg_lsn)
            """)
        let allBytes = (0...255).map { UInt8($0) } + [0, 0]
        let at = PostgresTimestamp(microsecondsSince1970: 1_714_979_289_123_456)
        let uuid = UUID()
        let name = "O'Reilly'); DROP TABLE x; -- \"q\" \\ $1 é 🐘"
        let insert = try await connection.execute(
            "INSERT INTO \(table) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11), ($12, NULL, NULL, NULL, NULL, NULL, $13, $14, $15, $16, NULL)",
            [1, Int16(-7), Int32(123_456), true, name, "v", allBytes, at, uuid, PostgresJSON(#"{"b": [1, 2], "a": null}"#),
             PostgresLSN(0x16_B374_D848),
             2, nil, nil, nil, nil])
        #expect(insert.commandTag == "INSERT 0 2")
        #expect(insert.affectedRows == 2)

        let rows = try await connection.execute("SELECT * FROM \(table) ORDER BY id")
        #expect(rows.columns.map(\.name) == ["id", "small", "n", "flag", "name", "vc", "data", "at", "u", "doc", "lsn"])
        #expect(rows.columns.map(\.type) == [.int8, .int2, .int4, .bool, .text, .varchar, .bytea, .timestamptz, .uuid, .jsonb, .pgLSN])
        #expect(rows.count == 2)
        let full = rows[0]
        #expect(try full.decode(Int64.self, column: "id") == 1)
        #expect(try full.decode(Int16.self, column: "small") == -7)
        #expect(try full.decode(Int.self, column: "n") == 123_456)
        #expect(try full.decode(Bool.self, column: "flag"))
        #expect(try full.decode(String.self, column: "name") == name)
        #expect(try full.decode(String.self, column: "vc") == "v")
        #expect(try full.decode([UInt8].self, column: "data") == allBytes)
        #expect(try full.decode(String.self, column: "data").hasPrefix(#"\x000102"#)) // hex output format
        #expect(try full.decode(PostgresTimestamp.self, column: "at") == at)
        #expect(try full.decode(UUID.self, column: "u") == uuid)
        #expect(try full.decode(PostgresJSON.self, column: "doc").text == #"{"a": null, "b": [1, 2]}"#) // jsonb normalises
        #expect(try full.decode(PostgresLSN.self, column: "lsn") == PostgresLSN(0x16_B374_D848))
        #expect(try full.decode(String.self, column: "lsn") == "16/B374D848")

        let sparse = rows[1]
        #expect(try sparse.decode(Int16?.self, column: "small") == nil)
        #expect(try sparse.decode(Bool?.self, column: "flag") == nil)
        #expect(try sparse.decode([UInt8]?.self, column: "data") == nil)
        #expect(try sparse.decode(Date?.self, column: "at") == nil)
        #expect(try sparse.decode(UUID?.self, column: "u") == nil)
        let nullError = #expect(throws: PostgresError.self) { try sparse.decode(Int.self, column: "n") }
        #expect(nullError?.code == .decoding)
        let typeError = #expect(throws: PostgresError.self) { try full.decode(Int.self, column: "name") }
        #expect(typeError?.code == .decoding)

        // Parameters are typed on the wire: $1 comes back as what was bound.
        let echo = try await connection.execute("SELECT $1 AS i, $2 AS b, $3 AS u, $4 AS t, $5 AS j, $6 AS x",
                                                [Int64.max, false, uuid, at, PostgresJSON("[]"), [UInt8]()])
        #expect(echo.columns.map(\.type) == [.int8, .bool, .uuid, .timestamptz, .jsonb, .bytea])
        #expect(try echo[0].decode(Int64.self, column: "i") == .max)
        #expect(try echo[0].decode([UInt8].self, column: "x") == [])

        let lsn = try await connection.execute("SELECT pg_current_wal_lsn() AS lsn").scalar(PostgresLSN.self)
        #expect(lsn.value > 0)

        let nul = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT $1::text", ["a\u{0}b"]) }
        #expect(nul?.code == .invalidArgument)
        #expect(try await connection.execute("SELECT 1").scalar(Int.self) == 1, "the connection stays usable")
        _ = try await connection.execute("DROP TABLE \(table)")
    }

    @Test func timestamptzDecodesInAnySessionTimeZone() async throws {
        let connection = try await primary()
        defer { Task { await connection.close() } }
        let at = Date(timeIntervalSince1970: 1_714_979_289.25)
        for zone in ["UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam", "Pacific/Chatham"] {
            _ = try await connection.execute("SELECT set_config('TimeZone', $1, false)", [zone])
            let row = try await connection.execute("SELECT $1::timestamptz AS at", [at])[0]
            #expect(try row.decode(Date.self, column: "at") == at, "\(zone)")
            // Historic local-mean-time offsets have seconds (e.g. +00:19:32).
            let old = try await connection.execute("""
                SELECT ts, (extract(epoch FROM ts) * 1000000)::int8 AS micros
                FROM (SELECT '1890-06-01 12:00:00'::timestamp AT TIME ZONE current_setting('TimeZone') AS ts) s
                """)[0]
            let shown = try old.decode(String.self, column: "ts")
            #expect(try old.decode(PostgresTimestamp.self, column: "ts").microsecondsSince1970
                    == old.decode(Int64.self, column: "micros"), "\(zone): \(shown)")
        }
        // DateStyle is forced to ISO at connect time when the server uses another.
        let style = try await connection.execute("SHOW DateStyle").scalar(String.self)
        #expect(style.hasPrefix("ISO"))
    }

    // MARK: errors

    @Test func uniqueViolationCarriesSQLStateAndConstraint() async throws {
        let connection = try await primary()
        defer { Task { await connection.close() } }
        let table = TestEnvironment.uniqueName("uniq")
        _ = try await connection.execute("CREATE TABLE \(table) (id int PRIMARY KEY)")
        _ = try await connection.execute("INSERT INTO \(table) VALUES ($1)", [1])
        let error = await #expect(throws: PostgresError.self) {
            try await connection.execute("INSERT INTO \(table) VALUES ($1)", [1])
        }
        #expect(error?.code == .server)
        #expect(error?.sqlState == "23505")
        #expect(error?.isUniqueViolation == true)
        #expect(error?.isRetryable == false)
        #expect(error?.constraint == "\(table)_pkey")
        #expect(error?.severity == "ERROR")
        #expect(error?.detail?.contains("already exists") == true)
        #expect(!connection.isBroken)
        _ = try await connection.execute("DROP TABLE \(table)")
    }

    @Test func writeOnReplicaIsReadOnlyAndRetryable() async throws {
        let replica = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresReplicaURL)
        defer { Task { await replica.close() } }
        let error = await #expect(throws: PostgresError.self) {
            try await replica.execute("CREATE TABLE \(TestEnvironment.uniqueName("ro")) (i int)")
        }
        #expect(error?.sqlState == "25006")
        #expect(error?.isReadOnlyTransaction == true)
        #expect(error?.isRetryable == true)
        #expect(error?.isConnectionLost == false)
        #expect(!replica.isBroken)
    }

    // MARK: server status

    @Test func serverStatusReportsStandbyVersionPidAndAddress() async throws {
        let replicaURL = try TestEnvironment.postgresReplicaURL
        let primaryURL = try TestEnvironment.postgresPrimaryURL
        let replica = try await PostgresConnection.connect(conninfo: replicaURL)
        let primary = try await PostgresConnection.connect(conninfo: primaryURL)
        defer { Task { await replica.close(); await primary.close() } }
        #expect(replica.inHotStandby == true)
        #expect(primary.inHotStandby == false)
        _ = try await primary.execute("SELECT 1")
        #expect(primary.serverStatus.inHotStandby == false, "still known after a call")

        let status = primary.serverStatus
        let target = try #require(try PostgresURL.parse(primaryURL).first)
        #expect(status.host == target.host)
        #expect(status.port == target.port)
        #expect(status.id == target.id)
        #expect(status.serverVersion >= 140000)
        #expect(!status.serverVersionText.isEmpty)
        #expect(status.transactionStatus == .idle)
        #expect(status.backendPID == primary.backendPID)
        #expect(try await primary.execute("SELECT pg_backend_pid()").scalar(Int32.self) == primary.backendPID)

        // Multi-host URL with target_session_attrs reaches the primary.
        let multi = try await PostgresConnection.connect(
            conninfo: try TestEnvironment.postgresURL + "?target_session_attrs=read-write")
        #expect(multi.inHotStandby == false)
        #expect(multi.serverStatus.id == target.id)
        await multi.close()

        // Each parsed target connects to its own host.
        let targets = try PostgresURL.parse(try TestEnvironment.postgresURL)
        #expect(targets.count == 2)
        var standbyFlags: [Bool?] = []
        for target in targets {
            let c = try await PostgresConnection.connect(target: target)
            #expect(c.serverStatus.id == target.id)
            standbyFlags.append(c.inHotStandby)
            await c.close()
        }
        #expect(Set(standbyFlags) == [true, false])
    }

    // MARK: transactions

    @Test func transactionCommitsAndRollsBack() async throws {
        let connection = try await primary()
        defer { Task { await connection.close() } }
        let table = TestEnvironment.uniqueName("tx")
        _ = try await connection.execute("CREATE TABLE \(table) (id int PRIMARY KEY)")

        let inside = try await connection.withTransaction(isolation: .serializable, deadline: .now + .seconds(10)) { tx in
            _ = try await tx.execute("INSERT INTO \(table) VALUES ($1)", [1])
            return try await tx.execute("SELECT current_setting('transaction_isolation')").scalar(String.self)
        }
        #expect(inside == "serializable")
        #expect(connection.serverStatus.transactionStatus == .idle)

        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await connection.withTransaction { tx in
                _ = try await tx.execute("INSERT INTO \(table) VALUES ($1)", [2])
                #expect(tx.connection.serverStatus.transactionStatus == .inTransaction)
                throw Boom()
            }
        }
        #expect(connection.serverStatus.transactionStatus == .idle)

        // A statement error inside the body rolls back too (the server error is rethrown).
        let duplicate = await #expect(throws: PostgresError.self) {
            try await connection.withTransaction { tx in
                _ = try await tx.execute("INSERT INTO \(table) VALUES ($1)", [3])
                _ = try await tx.execute("INSERT INTO \(table) VALUES ($1)", [1])
            }
        }
        #expect(duplicate?.isUniqueViolation == true)

        // A caught error leaves the transaction failed: COMMIT rolls back and says so.
        let swallowed = await #expect(throws: PostgresError.self) {
            try await connection.withTransaction { tx in
                _ = try await tx.execute("INSERT INTO \(table) VALUES ($1)", [4])
                _ = try? await tx.execute("SELECT 1/0")
            }
        }
        #expect(swallowed?.sqlState == "25P02")

        let readOnly = await #expect(throws: PostgresError.self) {
            try await connection.withTransaction(readOnly: true) { tx in
                _ = try await tx.execute("INSERT INTO \(table) VALUES ($1)", [5])
            }
        }
        #expect(readOnly?.sqlState == "25006")

        let ids = try await connection.execute("SELECT id FROM \(table) ORDER BY id").map { try $0.decode(Int.self, at: 0) }
        #expect(ids == [1])
        #expect(!connection.isBroken)
        _ = try await connection.execute("DROP TABLE \(table)")
    }

    // MARK: timeouts

    @Test func statementTimeoutIsSetAtConnect() async throws {
        let connection = try await primary(statementTimeout: .milliseconds(150))
        defer { Task { await connection.close() } }
        #expect(try await connection.execute("SHOW statement_timeout").scalar(String.self) == "150ms")
        let error = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT pg_sleep(3)") }
        #expect(error?.code == .server)
        #expect(error?.sqlState == "57014")
        #expect(error?.isQueryCanceled == true)
        #expect(!connection.isBroken)
        #expect(try await connection.execute("SELECT 2").scalar(Int.self) == 2)
    }

    @Test func deadlineCancelsTheStatementAndBreaksTheConnection() async throws {
        let connection = try await primary()
        let observer = try await primary()
        defer { Task { await connection.close(); await observer.close() } }
        let pid = connection.backendPID
        let clock = ContinuousClock()
        let started = clock.now
        let error = await #expect(throws: PostgresError.self) {
            try await connection.execute("SELECT pg_sleep(30)", deadline: .now + .milliseconds(200))
        }
        let elapsed = clock.now - started
        #expect(error?.code == .timeout)
        // Latency is checked tightly in the hung-server test; here (other suites
        // share the CPU) only that the caller did not wait for pg_sleep.
        #expect(elapsed >= .milliseconds(195) && elapsed < .seconds(3), "\(elapsed)")
        #expect(connection.isBroken)
        let after = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT 1") }
        #expect(after?.code == .connectionLost)
        // The cancel request reached the server: the backend stops sleeping (and exits, as the socket closed).
        let stopped = try await eventually(seconds: 5) {
            try await observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", [Int(pid)]).scalar(Int.self) == 0
        }
        #expect(stopped, "backend \(pid) still running pg_sleep")

        // A deadline already past fails at once without breaking anything.
        let healthy = try await primary()
        let early = await #expect(throws: PostgresError.self) { try await healthy.execute("SELECT 1", deadline: .now - .seconds(1)) }
        #expect(early?.code == .timeout)
        #expect(!healthy.isBroken)
        #expect(try await healthy.query("SELECT 1", [], deadline: .now + .seconds(5)) == [["1"]])
        await healthy.close()
    }

    @Test func taskCancellationAbandonsTheStatement() async throws {
        let connection = try await primary()
        let observer = try await primary()
        defer { Task { await connection.close(); await observer.close() } }
        let pid = connection.backendPID
        let task = Task { try await connection.execute("SELECT pg_sleep(30)") }
        let running = try await eventually(seconds: 10) {
            try await observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", [pid]).scalar(Int.self) == 1
        }
        #expect(running)
        task.cancel()
        let clock = ContinuousClock()
        let started = clock.now
        let result = await task.result
        #expect(clock.now - started < .seconds(3))
        #expect((result.error as? PostgresError)?.code == .cancelled, "\(result)")
        #expect(connection.isBroken)
    }

    // MARK: pool

    @Test func poolHonoursMaxConnectionsAndWaiterDeadline() async throws {
        let pool = try PostgresPool(conninfo: try TestEnvironment.postgresPrimaryURL, maxConnections: 2)
        let a = try await pool.lease()
        let b = try await pool.lease()
        #expect(pool.stats == PostgresPoolStats(open: 2, idle: 0, inUse: 2, connecting: 0, waiting: 0, maxConnections: 2))
        #expect(a.backendPID != b.backendPID)

        let clock = ContinuousClock()
        let started = clock.now
        let exhausted = await #expect(throws: PostgresError.self) { try await pool.lease(deadline: .now + .milliseconds(200)) }
        let waited = clock.now - started
        #expect(exhausted?.code == .poolExhausted)
        #expect(waited >= .milliseconds(195) && waited < .seconds(3), "\(waited)")
        #expect(pool.stats.waiting == 0)

        // Waiters are served first come, first served, with the returned connection.
        let first = Task { try await pool.lease(deadline: .now + .seconds(10)) }
        #expect(try await eventually { pool.stats.waiting == 1 })
        let second = Task { try await pool.lease(deadline: .now + .seconds(10)) }
        #expect(try await eventually { pool.stats.waiting == 2 })
        pool.release(a)
        let gotFirst = try await first.value
        #expect(gotFirst === a)
        #expect(pool.stats.waiting == 1)
        pool.release(b)
        let gotSecond = try await second.value
        #expect(gotSecond === b)

        // A connection broken by a timeout is discarded, not reused.
        _ = try? await gotFirst.execute("SELECT pg_sleep(10)", deadline: .now + .milliseconds(100))
        #expect(gotFirst.isBroken)
        pool.release(gotFirst)
        #expect(pool.stats.open == 1)
        pool.release(gotSecond)
        #expect(pool.stats == PostgresPoolStats(open: 1, idle: 1, inUse: 0, connecting: 0, waiting: 0, maxConnections: 2))
        #expect(pool.lastInHotStandby == false)

        // Releasing twice, or a foreign connection, changes nothing.
        pool.release(gotSecond)
        let foreign = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        pool.release(foreign)
        #expect(pool.stats.idle == 1)
        #expect(!foreign.isBroken)
        await foreign.close()
        await pool.close()
    }

    @Test func poolUnderHeavyConcurrencyNeverExceedsMax() async throws {
        let pool = try PostgresPool(conninfo: try TestEnvironment.postgresPrimaryURL, maxConnections: 3,
                                    statementTimeout: .milliseconds(500))
        let gauge = Box((current: 0, peak: 0))
        let pids = Box(Set<Int32>())
        try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<60 {
                group.addTask {
                    try await pool.withConnection(deadline: .now + .seconds(20)) { connection in
                        gauge.withLock { $0.current += 1; $0.peak = max($0.peak, $0.current) }
                        defer { gauge.withLock { $0.current -= 1 } }
                        pids.withLock { _ = $0.insert(connection.backendPID) }
                        return try await connection.execute("SELECT $1::int + 0 FROM pg_sleep(0.005)", [i]).scalar(Int.self)
                    }
                }
            }
            var sum = 0
            for try await value in group { sum += value }
            #expect(sum == (0..<60).reduce(0, +))
        }
        #expect(gauge.withLock { $0.peak } <= 3)
        #expect(pids.withLock { $0.count } <= 3)
        let stats = pool.stats
        #expect(stats.inUse == 0 && stats.waiting == 0 && stats.open <= 3, "\(stats)")

        // Statement timeout from the pool configuration.
        let error = await #expect(throws: PostgresError.self) {
            try await pool.withConnection { try await $0.execute("SELECT pg_sleep(30)") }
        }
        #expect(error?.sqlState == "57014")
        await pool.close()
    }

    @Test func poolClosesIdleConnectionsAndDrainsOnClose() async throws {
        let pool = try PostgresPool(conninfo: try TestEnvironment.postgresPrimaryURL, maxConnections: 1,
                                    idleTimeout: .milliseconds(300))
        let first = try await pool.lease()
        pool.release(first)
        #expect(pool.stats.idle == 1)
        #expect(try await eventually(seconds: 5) { pool.stats.open == 0 })
        try await Task.sleep(for: .milliseconds(50))
        #expect(first.isBroken, "closed after idleTimeout")

        // A connection left inside a transaction is not reused.
        let inTransaction = try await pool.lease()
        _ = try await inTransaction.execute("BEGIN")
        pool.release(inTransaction)
        #expect(pool.stats.open == 0)

        let held = try await pool.lease()
        let waiter = Task { try await pool.lease(deadline: .now + .seconds(10)) }
        #expect(try await eventually { pool.stats.waiting == 1 })
        await pool.close(deadline: .now + .milliseconds(50))
        let waiterResult = await waiter.result
        #expect((waiterResult.error as? PostgresError)?.code == .poolClosed)
        #expect(!held.isBroken, "in-use connections are closed only when returned")
        pool.release(held)
        #expect(held.isBroken)
        let after = await #expect(throws: PostgresError.self) { try await pool.lease() }
        #expect(after?.code == .poolClosed)
    }

    @Test func poolTransactionAndConnectFailure() async throws {
        let pool = try PostgresPool(conninfo: try TestEnvironment.postgresPrimaryURL, maxConnections: 2)
        let table = TestEnvironment.uniqueName("pooltx")
        try await pool.withConnection { _ = try await $0.execute("CREATE TABLE \(table) (id int)") }
        try await pool.withTransaction(deadline: .now + .seconds(10)) { tx in
            _ = try await tx.execute("INSERT INTO \(table) VALUES (1)")
        }
        let count = try await pool.withConnection { try await $0.execute("SELECT count(*) FROM \(table)").scalar(Int.self) }
        #expect(count == 1)
        try await pool.withConnection { _ = try await $0.execute("DROP TABLE \(table)") }
        await pool.close()

        let port = try TestEnvironment.closedLoopbackPort()
        let dead = try PostgresPool(conninfo: "postgresql://postgres@127.0.0.1:\(port)/postgres", maxConnections: 1)
        let error = await #expect(throws: PostgresError.self) { try await dead.lease(deadline: .now + .seconds(2)) }
        #expect(error?.code == .connectionFailed)
        #expect(error?.isRetryable == true)
        #expect(dead.stats.open == 0)
        await dead.close()
    }

    // MARK: LISTEN / NOTIFY

    @Test func listenNotifyDelivery() async throws {
        let channel = "Ch_" + TestEnvironment.uniqueName("n") // mixed case: quoting must be exact
        let other = TestEnvironment.uniqueName("other")
        let listener = try await PostgresListener.connect(conninfo: try TestEnvironment.postgresPrimaryURL, channels: [channel])
        let collector = NotificationCollector(listener.notifications)
        let notifier = try await primary()
        defer { Task { await notifier.close() } }

        try await notifier.notify(channel: channel, payload: "hello 'world' é")
        #expect(try await eventually { collector.received.count == 1 })
        #expect(collector.received.first == PostgresNotification(channel: channel, payload: "hello 'world' é", pid: notifier.backendPID))

        // Inside a transaction: delivered on commit only.
        try await notifier.withTransaction { tx in
            try await tx.notify(channel: channel, payload: "in-tx")
            try await Task.sleep(for: .milliseconds(150))
            #expect(collector.received.count == 1, "not before COMMIT")
        }
        #expect(try await eventually { collector.received.count == 2 })

        // Channels added later, and removed.
        try await listener.listen(other)
        try await notifier.notify(channel: other, payload: "2")
        #expect(try await eventually { collector.received.last?.channel == other })
        try await listener.unlisten(other)
        try await notifier.notify(channel: other, payload: "ignored")
        try await notifier.notify(channel: channel, payload: "last")
        #expect(try await eventually { collector.received.last?.payload == "last" })
        #expect(!collector.received.contains { $0.payload == "ignored" })

        await listener.close()
        #expect(try await eventually { collector.finished })
        #expect(collector.failure == nil)
    }

    @Test func listenerStreamFailsWhenTheConnectionBreaks() async throws {
        let channel = TestEnvironment.uniqueName("brk")
        let listener = try await PostgresListener.connect(conninfo: try TestEnvironment.postgresPrimaryURL, channels: [channel])
        let collector = NotificationCollector(listener.notifications)
        let admin = try await primary()
        defer { Task { await admin.close() } }
        #expect(try await admin.execute("SELECT pg_terminate_backend($1)", [listener.connection.backendPID]).scalar(Bool.self))
        #expect(try await eventually(seconds: 5) { collector.finished })
        let failure = try #require(collector.failure as? PostgresError)
        #expect(failure.code == .connectionLost)
        #expect(failure.isConnectionLost)
        #expect(failure.sqlState == "57P01", "\(failure)") // the FATAL notice the server sent before closing
        #expect(listener.connection.isBroken)
        await listener.close()
    }

    // MARK: hung server

    @Test func hungServerNeverHoldsTheCallerPastItsDeadline() async throws {
        let server = try await HungPostgresServer.start()
        defer { server.destroy() }
        let connection = try await PostgresConnection.connect(conninfo: server.url)
        let transactional = try await PostgresConnection.connect(conninfo: server.url)
        _ = try await connection.execute("CREATE TABLE hung (i int)")
        let clock = ContinuousClock()

        server.pause()
        // A plain 200 ms sleep alongside shows how late this process's tasks
        // wake up right now (other suites share the CPU); the query must not
        // be held noticeably longer than that.
        async let sleeper: Duration = {
            let start = ContinuousClock.now
            try? await Task.sleep(for: .milliseconds(200))
            return ContinuousClock.now - start
        }()
        var started = clock.now
        let timeout = await #expect(throws: PostgresError.self) {
            try await connection.execute("SELECT 1", deadline: .now + .milliseconds(200))
        }
        var elapsed = clock.now - started
        let baseline = await sleeper
        #expect(timeout?.code == .timeout)
        #expect(elapsed >= .milliseconds(195))
        #expect(elapsed < max(.milliseconds(250), baseline + .milliseconds(50)), "took \(elapsed); a 200 ms sleep took \(baseline)")
        #expect(connection.isBroken)
        started = clock.now
        let broken = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT 1") }
        #expect(broken?.code == .connectionLost)
        #expect(clock.now - started < .milliseconds(100))

        // Connecting to the hung server honours the connect timeout.
        started = clock.now
        let connect = await #expect(throws: PostgresError.self) {
            try await PostgresConnection.connect(conninfo: server.url, connectTimeout: .milliseconds(300))
        }
        elapsed = clock.now - started
        #expect(connect?.code == .connectionFailed)
        #expect(elapsed < max(.milliseconds(400), baseline + .milliseconds(200)), "connect took \(elapsed)")
        server.resume()

        // COMMIT lost in a hang: the outcome is unknown, not "lost".
        let commit = await #expect(throws: PostgresError.self) {
            try await transactional.withTransaction(deadline: .now + .seconds(1)) { tx in
                _ = try await tx.execute("INSERT INTO hung VALUES (1)")
                server.pause()
            }
        }
        #expect(commit?.code == .commitOutcomeUnknown, "\(String(describing: commit))")
        #expect(commit?.isRetryable == false)
        #expect(transactional.isBroken)
        server.resume()

        // The server is fine afterwards.
        let fresh = try await PostgresConnection.connect(conninfo: server.url)
        #expect(try await fresh.execute("SELECT count(*) FROM hung").scalar(Int.self) <= 1)
        await fresh.close()
    }
}

// MARK: - helpers

private func eventually(seconds: Double = 5, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

private extension Result {
    var error: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

/// A value behind a lock, shareable between tasks.
private final class Box<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

/// Drains a listener's stream in the background.
private final class NotificationCollector: Sendable {
    private struct State {
        var received: [PostgresNotification] = []
        var finished = false
        var failure: (any Error)?
    }

    private let state = Mutex(State())

    init(_ stream: AsyncThrowingStream<PostgresNotification, any Error>) {
        Task { [self] in
            do {
                for try await notification in stream { self.state.withLock { $0.received.append(notification) } }
                self.state.withLock { $0.finished = true }
            } catch {
                self.state.withLock { $0.finished = true; $0.failure = error }
            }
        }
    }

    var received: [PostgresNotification] { state.withLock { $0.received } }
    var finished: Bool { state.withLock { $0.finished } }
    var failure: (any Error)? { state.withLock { $0.failure } }
}

/// A private PostgreSQL server (initdb into a temp dir, own port, Unix
/// socket directory outside the data directory) that tests may SIGSTOP.
/// Runs the PostgreSQL binaries as `postgres` when we are root.
private final class HungPostgresServer: Sendable {
    let root: String
    let port: Int
    let postmasterPID: pid_t
    var url: String { "postgresql://postgres@127.0.0.1:\(port)/postgres" }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private static var binaries: String {
        ProcessInfo.processInfo.environment["TESTENV_PG_BIN"] ?? "/usr/lib/postgresql/15/bin"
    }

    private init(root: String, port: Int, postmasterPID: pid_t) {
        self.root = root
        self.port = port
        self.postmasterPID = postmasterPID
    }

    /// Starts the server from a dedicated thread (initdb and `pg_ctl start`
    /// take seconds; the cooperative pool must not wait on them).
    static func start() async throws -> HungPostgresServer {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try startBlocking() }) }.start()
        }
    }

    private static func startBlocking() throws -> HungPostgresServer {
        let root = NSTemporaryDirectory() + "hung-pg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: root + "/sock", withIntermediateDirectories: true)
        if geteuid() == 0 {
            guard let user = getpwnam("postgres") else { throw Failure(description: "no postgres user") }
            for path in [root, root + "/sock"] { chown(path, user.pointee.pw_uid, user.pointee.pw_gid) }
        }
        let port = try TestEnvironment.closedLoopbackPort()
        do {
            try runPostgresTool(["initdb", "-D", root + "/data", "-A", "trust", "-U", "postgres", "--no-sync",
                                 "--encoding=UTF8", "--locale=C.UTF-8"])
            try runPostgresTool(["pg_ctl", "-D", root + "/data", "-l", root + "/log", "-w", "-t", "30", "-o",
                                 "-c port=\(port) -c listen_addresses=127.0.0.1 -c unix_socket_directories=\(root)/sock -c fsync=off",
                                 "start"])
            let pidFile = try String(contentsOfFile: root + "/data/postmaster.pid", encoding: .utf8)
            guard let pid = pidFile.split(separator: "\n").first.flatMap({ pid_t($0) }) else {
                throw Failure(description: "cannot read postmaster.pid")
            }
            return HungPostgresServer(root: root, port: port, postmasterPID: pid)
        } catch {
            try? runPostgresTool(["pg_ctl", "-D", root + "/data", "-m", "immediate", "-w", "stop"])
            try? FileManager.default.removeItem(atPath: root)
            throw error
        }
    }

    /// Runs a PostgreSQL tool (as `postgres` when root) with posix_spawn and
    /// waitpid: Foundation's `Process` did not notice `runuser` exiting
    /// after `pg_ctl start` here. Output goes to a file, not a pipe, which
    /// the server left running would inherit.
    private static func runPostgresTool(_ arguments: [String]) throws {
        let tool = binaries + "/" + arguments[0]
        let argv = geteuid() == 0
            ? ["/usr/sbin/runuser", "-u", "postgres", "--", tool] + arguments.dropFirst()
            : [tool] + arguments.dropFirst()
        let outputPath = NSTemporaryDirectory() + "hung-pg-tool-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: outputPath) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, environ)
        guard spawned == 0 else { throw Failure(description: "cannot run \(argv[0]): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            throw Failure(description: "\(arguments[0]) failed (status \(status)): \(text)")
        }
    }

    /// The postmaster's children (backends, checkpointer, …), from /proc.
    private func children() -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == postmasterPID ? pid : nil
        }
    }

    /// SIGSTOP the postmaster, then every child.
    func pause() {
        kill(postmasterPID, SIGSTOP)
        for child in children() { kill(child, SIGSTOP) }
    }

    /// SIGCONT every child, then the postmaster.
    func resume() {
        for child in children() { kill(child, SIGCONT) }
        kill(postmasterPID, SIGCONT)
    }

    /// Resume, stop immediately, remove the directory.
    func destroy() {
        resume()
        try? Self.runPostgresTool(["pg_ctl", "-D", root + "/data", "-m", "immediate", "-w", "-t", "30", "stop"])
        try? FileManager.default.removeItem(atPath: root)
    }
}
