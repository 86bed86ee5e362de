import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The private PostgreSQL fixture itself: fast checks that the operations other suites rely on work.
@Suite("Private PostgreSQL fixture")
struct PrivatePostgresTests {
    @Test("primary + 2 synchronous replicas: replicate, pause/resume replay, promote, follow, shut down twice")
    func replicationLifecycle() async throws {
        let pg = try await PrivatePostgres.start(replicas: 2, synchronous: true)
        defer { Thread.detachNewThread { pg.shutdown() } }  // not on the cooperative pool
        let primary = pg.primary
        let replica = pg.replicas[0]
        let other = pg.replicas[1]
        #expect(pg.servers == [primary, replica, other])
        #expect(Set(pg.servers.map(\.port)).count == 3)
        #expect(try await pg.psql(primary, "SHOW synchronous_standby_names") == "ANY 1 (replica1, replica2)")
        #expect(try await pg.psql(primary, "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY 1) FROM pg_stat_replication")
            == "replica1:quorum,replica2:quorum")
        #expect(try await pg.psql(primary, "SELECT pg_is_in_recovery()") == "f")
        #expect(try await pg.psql(replica, "SELECT pg_is_in_recovery()") == "t")
        #expect(try await pg.psql(primary, "SELECT string_agg(slot_name || ':' || active, ',' ORDER BY 1) FROM pg_replication_slots")
            == "replica1:true,replica2:true")
        #expect(try await pg.psql(replica, "SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver") == "127.0.0.1:\(primary.port)")
        #expect(try await pg.psql(primary, "SHOW data_checksums") == "on")
        #expect(try await pg.psql(replica, "SHOW unix_socket_directories") == pg.socketDirectory)
        #expect(pg.url(of: replica) == "postgresql://postgres@127.0.0.1:\(replica.port)/postgres")
        #expect(pg.conninfo(of: primary) == "host=127.0.0.1 port=\(primary.port) user=postgres dbname=postgres")
        #expect(pg.multiHostURL() == "postgresql://postgres@127.0.0.1:\(primary.port),127.0.0.1:\(replica.port),127.0.0.1:\(other.port)/postgres")
        var generator = SystemRandomNumberGenerator()
        #expect(pg.shuffledMultiHostURL(using: &generator).split(separator: ",").count == 3)
        #expect(pg.multiHostURL([replica, primary], query: "target_session_attrs=read-write")
            == "postgresql://postgres@127.0.0.1:\(replica.port),127.0.0.1:\(primary.port)/postgres?target_session_attrs=read-write")

        // A write on the primary shows up on the replica.
        try await pg.psql(primary, "CREATE TABLE smoke (id int PRIMARY KEY, note text); INSERT INTO smoke VALUES (1, 'hello')")
        try await pg.waitForReplay(replica)
        #expect(try await pg.psql(replica, "SELECT note FROM smoke") == "hello")

        // Paused replay: WAL arrives, rows do not.
        try await pg.pauseReplay(replica)
        try await pg.psql(primary, "INSERT INTO smoke VALUES (2, 'later')")
        let target = try await pg.currentLSN(primary)
        try await pg.eventually("WAL to be received") {
            try await pg.psql(replica, "SELECT pg_last_wal_receive_lsn() >= '\(target)'::pg_lsn") == "t"
        }
        #expect(try await pg.psql(replica, "SELECT count(*) FROM smoke") == "1")
        #expect(try await pg.psql(replica, "SELECT pg_get_wal_replay_pause_state()") == "paused")
        try await pg.resumeReplay(replica)
        try await pg.waitForReplay(replica, lsn: target)
        #expect(try await pg.psql(replica, "SELECT count(*) FROM smoke") == "2")

        // Promotion: a second primary on timeline 2; the other replica follows it.
        try await pg.waitForReplay(other)
        try await pg.promote(replica)
        #expect(try await pg.psql(replica, "SELECT pg_is_in_recovery()") == "f")
        #expect(try await pg.psql(replica, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002")
        #expect(try await pg.psql(primary, "SELECT pg_is_in_recovery()") == "f")  // two primaries now
        try await pg.follow(other, upstream: replica)
        try await pg.psql(replica, "INSERT INTO smoke VALUES (3, 'on the promoted one')")
        try await pg.waitForReplay(other, from: replica)
        #expect(try await pg.psql(other, "SELECT note FROM smoke WHERE id = 3") == "on the promoted one")
        #expect(try await pg.psql(other, "SELECT received_tli FROM pg_stat_wal_receiver") == "2")

        let pids = pg.servers.compactMap { pg.postmasterPID($0) }
        #expect(pids.count == 3)
        let invalid = await #expect(throws: PrivatePostgres.Failure.self) { try await pg.psql(primary, "SELEC 1") }
        #expect(invalid?.description.contains("syntax error") == true)

        await pg.shutdownAndWait()
        pg.shutdown()
        #expect(!FileManager.default.fileExists(atPath: pg.root))
        #expect(pids.allSatisfy { kill($0, 0) != 0 || (try? String(contentsOfFile: "/proc/\($0)/stat", encoding: .utf8))?.contains(") Z") == true })
    }

    @Test("freeze and thaw, kill -9, stop and start again")
    func processControl() async throws {
        let pg = try await PrivatePostgres.start(replicas: 0)
        defer { Thread.detachNewThread { pg.shutdown() } }  // not on the cooperative pool
        let server = pg.primary
        try await pg.psql(server, "CREATE TABLE survivors (id int); INSERT INTO survivors VALUES (1)")

        try pg.freeze(server)
        await #expect(throws: PrivatePostgres.Failure.self) { try await pg.psql(server, "SELECT 1", timeout: .milliseconds(700)) }
        pg.thaw(server)
        #expect(await pg.isAnswering(server))

        let pid = try #require(pg.postmasterPID(server))
        try await pg.kill9(server)
        #expect(pg.postmasterPID(server) == nil)
        #expect(await !pg.isAnswering(server))
        try await pg.start(server)
        #expect(pg.postmasterPID(server) != pid)
        #expect(try await pg.psql(server, "SELECT count(*) FROM survivors") == "1")

        try await pg.stop(server)
        #expect(pg.postmasterPID(server) == nil)
        try await pg.start(server)
        #expect(await pg.isAnswering(server))

        // Frozen at shutdown: still stopped and removed.
        try pg.freeze(server)
        pg.shutdown()
        #expect(!FileManager.default.fileExists(atPath: pg.root))
    }

    @Test("a fixture that is never shut down is stopped when released")
    func leakedFixture() async throws {
        var pg: PrivatePostgres? = try await PrivatePostgres.start(replicas: 0)
        let root = try #require(pg?.root)
        let pid = try #require(pg.flatMap { $0.postmasterPID($0.primary) })
        pg = nil
        #expect(!FileManager.default.fileExists(atPath: root))
        #expect(kill(pid, 0) != 0 || (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.contains(") Z") == true)
    }
}
