import PostgresClient
import Testing

@Suite("PostgreSQL primary + streaming replica (real servers)")
struct PostgresIntegrationTests {
    @Test func primaryIsNotInRecovery() async throws {
        let primary = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        #expect(try await primary.query("SELECT pg_is_in_recovery()", []) == [["f"]])
        await primary.close()
    }

    @Test func replicaIsInRecovery() async throws {
        let replica = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresReplicaURL)
        #expect(try await replica.query("SELECT pg_is_in_recovery()", []) == [["t"]])
        await replica.close()
    }

    @Test func multiHostURLReachesPrimaryForWrites() async throws {
        let url = try TestEnvironment.postgresURL + "?target_session_attrs=read-write"
        let connection = try await PostgresConnection.connect(conninfo: url)
        #expect(try await connection.query("SELECT pg_is_in_recovery()", []) == [["f"]])
        await connection.close()
    }

    @Test func rowInsertedOnPrimaryBecomesVisibleOnReplica() async throws {
        let primary = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        let replica = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresReplicaURL)
        let table = TestEnvironment.uniqueName("repl")
        _ = try await primary.query("CREATE TABLE \(table) (id int PRIMARY KEY, note text)", [])
        _ = try await primary.query("INSERT INTO \(table) VALUES ($1, $2)", ["1", "from primary"])

        // Wait for replication (bounded), not a fixed sleep.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        var rows: [[String?]] = []
        var lastError: PostgresError?
        while clock.now < deadline {
            do {
                rows = try await replica.query("SELECT id, note FROM \(table)", [])
                if !rows.isEmpty { break }
            } catch {
                lastError = error // 42P01 until the CREATE TABLE has replayed
                guard error.sqlState == "42P01" else { throw error }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(rows == [["1", "from primary"]], "replica did not catch up in 30 s (last error: \(String(describing: lastError)))")

        // The replica is read-only.
        let readOnly = await #expect(throws: PostgresError.self) {
            try await replica.query("INSERT INTO \(table) VALUES (2, 'x')", [])
        }
        #expect(readOnly?.sqlState == "25006")

        _ = try await primary.query("DROP TABLE \(table)", [])
        await primary.close()
        await replica.close()
    }

    @Test func syntaxErrorCarriesSQLState() async throws {
        let primary = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        let error = await #expect(throws: PostgresError.self) {
            try await primary.query("SELEC 1", [])
        }
        #expect(error?.code == .server)
        #expect(error?.sqlState == "42601")
        #expect(error?.message.contains("syntax error") == true)
        // The connection stays usable after a statement error.
        #expect(try await primary.query("SELECT 1", []) == [["1"]])
        await primary.close()
    }

    @Test func boundParametersRoundTripUnchanged() async throws {
        let primary = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        let tricky = "O'Reilly'); DROP TABLE users; -- \"q\" \\ $1 é"
        #expect(try await primary.query("SELECT $1::text, $2::text IS NULL", [tricky, nil]) == [[tricky, "t"]])
        let table = TestEnvironment.uniqueName("params")
        _ = try await primary.query("CREATE TABLE \(table) (v text)", [])
        _ = try await primary.query("INSERT INTO \(table) VALUES ($1), ($2)", [tricky, nil])
        #expect(try await primary.query("SELECT v FROM \(table) ORDER BY v NULLS LAST", []) == [[tricky], [nil]])
        _ = try await primary.query("DROP TABLE \(table)", [])
        await primary.close()
    }

    @Test func connectionRefusedIsTypedError() async throws {
        let port = try TestEnvironment.closedLoopbackPort()
        let error = await #expect(throws: PostgresError.self) {
            try await PostgresConnection.connect(conninfo: "postgresql://postgres@127.0.0.1:\(port)/postgres", connectTimeout: .seconds(2))
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("refused") == true)
    }

    @Test func closedConnectionThrows() async throws {
        let primary = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        await primary.close()
        await primary.close()
        let error = await #expect(throws: PostgresError.self) { try await primary.query("SELECT 1", []) }
        #expect(error?.code == .connectionClosed)
    }

    @Test func terminatedBackendIsTypedError() async throws {
        let victim = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        let admin = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        let pid = try #require(try await victim.query("SELECT pg_backend_pid()", []).first?.first ?? nil)
        #expect(try await admin.query("SELECT pg_terminate_backend($1::int)", [pid]) == [["t"]])
        let error = await #expect(throws: PostgresError.self) { try await victim.query("SELECT 1", []) }
        // With the server's FATAL 57P01 when libpq got to read it.
        #expect(error?.code == .connectionLost, "\(String(describing: error))")
        #expect(error?.sqlState == nil || error?.sqlState == "57P01")
        let again = await #expect(throws: PostgresError.self) { try await victim.query("SELECT 1", []) }
        #expect(again?.code == .connectionLost)
        await victim.close()
        await admin.close()
    }
}
