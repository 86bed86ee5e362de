import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A private PostgreSQL 15 primary with streaming replicas, for tests that disrupt servers (promote, kill,
/// freeze, pause replay, two primaries): the shared `cluster/testenv` servers must stay healthy for the
/// tests running in parallel.
///
/// ```swift
/// let pg = try await PrivatePostgres.start(replicas: 1)
/// defer { pg.shutdown() }  // or `await pg.shutdownAndWait()`
/// _ = try await pg.psql(pg.primary, "CREATE TABLE t (id int)")
/// try await pg.waitForReplay(pg.replicas[0])
/// try await pg.promote(pg.replicas[0])
/// ```
///
/// Everything lives in one temporary directory (`coordinator-pg-*`, owned by `postgres` when running as
/// root; PostgreSQL binaries run through `runuser -u postgres --` then): a data directory and a log per
/// server and a unix-socket directory outside the data directories. Servers listen on 127.0.0.1 on free
/// ports, with `-A trust` for user `postgres`. Binaries come from `TESTENV_PG_BIN` (default
/// `/usr/lib/postgresql/15/bin`); a missing binary FAILS the test.
///
/// Leaks: a fixture that is never shut down is stopped by `deinit`, by an `atexit` hook when the test
/// process ends normally, and otherwise by the next ``start(replicas:synchronous:settings:)`` of any
/// test process (it removes `coordinator-pg-*` directories whose owning process is gone, after killing
/// the servers that still run from them). Servers are only ever signalled by the pid in their own
/// `postmaster.pid`, after checking that its command line names their data directory.
final class PrivatePostgres: Sendable {
    /// One server of the fixture.
    struct Server: Sendable, Hashable, CustomStringConvertible {
        /// 0 for the server started as primary, 1… for replicas.
        let index: Int
        /// `primary`, `replica1`, … (its `cluster_name`, hence its `application_name` on the primary).
        let name: String
        /// Its TCP port on 127.0.0.1.
        let port: Int
        /// Its data directory.
        let dataDirectory: String
        /// Its log file.
        let logFile: String

        var description: String { "\(name) (127.0.0.1:\(port))" }
    }

    /// How a fixture operation failed.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The temporary directory holding everything.
    let root: String
    /// The unix-socket directory (`host=` this for socket connections).
    let socketDirectory: String
    /// The server started as primary (it may be demoted, stopped or fenced by the test later).
    let primary: Server
    /// The servers started as streaming replicas of ``primary``.
    let replicas: [Server]
    /// Whether the primary was started with `synchronous_standby_names = 'ANY 1 (…)'`.
    let synchronous: Bool

    /// Every server: the primary first.
    var servers: [Server] { [primary] + replicas }

    private struct State {
        var frozen: Set<Int> = []
        var shutDown = false
    }
    private let state = Mutex(State())

    private init(root: String, primary: Server, replicas: [Server], synchronous: Bool) {
        self.root = root
        self.socketDirectory = root + "/sock"
        self.primary = primary
        self.replicas = replicas
        self.synchronous = synchronous
    }

    deinit { shutdown() }

    // MARK: Starting

    /// Starts a primary and `replicas` streaming replicas (each with its own physical replication slot)
    /// and waits until every replica streams. `synchronous` sets `synchronous_standby_names =
    /// 'ANY 1 (replica1, …)'` on the primary (only there: a promoted replica does not inherit it).
    /// `settings` are added to every server's `postgresql.conf` as `key = value`, the value written as given
    /// (quote strings yourself: `["wal_sender_timeout": "1s", "application_name": "'x'"]`).
    static func start(replicas: Int = 1, synchronous: Bool = false, settings: [String: String] = [:]) async throws -> PrivatePostgres {
        precondition(replicas >= 0)
        try Tools.check()
        Registry.removeOrphans()
        let root = try Tools.makeRoot()
        Registry.adopt(root)
        do {
            return try await build(root: root, replicaCount: replicas, synchronous: synchronous, settings: settings)
        } catch {
            Registry.unregister(root)
            Registry.destroy(root: root)
            throw error
        }
    }

    private static func build(root: String, replicaCount: Int, synchronous: Bool, settings: [String: String]) async throws -> PrivatePostgres {
        let socketDirectory = root + "/sock"
        let primaryData = root + "/primary"
        var initdb = try await Tools.runPG(
            "initdb", ["-D", primaryData, "--data-checksums", "-A", "trust", "-U", "postgres", "--no-sync",
                       "--encoding=UTF8", "--locale=C.UTF-8"], in: root)
        if initdb.status != 0, initdb.stderr.contains("locale") {
            initdb = try await Tools.runPG(
                "initdb", ["-D", primaryData, "--data-checksums", "-A", "trust", "-U", "postgres", "--no-sync",
                           "--encoding=UTF8", "--locale=C"], in: root)
        }
        try initdb.check("initdb")
        var conf = """

            # --- PrivatePostgres (Tests/IntegrationTests) ---
            listen_addresses = '127.0.0.1'
            unix_socket_directories = '\(socketDirectory)'
            wal_level = replica
            hot_standby = on
            max_wal_senders = 10
            max_replication_slots = 10
            wal_sender_timeout = 2s
            wal_receiver_timeout = 2s
            wal_receiver_status_interval = 1s
            wal_retrieve_retry_interval = 1s
            wal_keep_size = 64MB
            hot_standby_feedback = on
            fsync = off
            max_connections = 40
            shared_buffers = 16MB
            logging_collector = off
            log_min_messages = warning
            log_line_prefix = '%m [%p] %q%a '

            """
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) { conf += "\(key) = \(value)\n" }
        try Tools.append(conf, to: primaryData + "/postgresql.conf")

        let primary = try await startNew(index: 0, name: "primary", dataDirectory: primaryData, root: root)
        var replicas: [Server] = []
        for index in stride(from: 1, through: replicaCount, by: 1) {
            let name = "replica\(index)"
            let data = root + "/" + name
            // The short wal_sender_timeout (2 s, for fast failover detection) can cut a base backup's WAL
            // stream on a loaded machine: retry (fresh directory, the slot dropped) up to 3 times.
            var attempt = 0
            while true {
                attempt += 1
                let result = try await Tools.runPG(
                    "pg_basebackup", ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", data, "-R",
                                      "-X", "stream", "-c", "fast", "-C", "-S", name, "--no-sync"], in: root)
                if attempt >= 3 { try result.check("pg_basebackup for \(name)"); break }
                if (try? result.check("pg_basebackup for \(name)")) != nil { break }
                try? FileManager.default.removeItem(atPath: data)
                _ = try? await Tools.runPG(
                    "psql", ["-X", "-q", "-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-d", "postgres",
                             "-c", "SELECT pg_drop_replication_slot('\(name)') FROM pg_replication_slots WHERE slot_name = '\(name)'"],
                    in: root)
            }
            replicas.append(try await startNew(index: index, name: name, dataDirectory: data, root: root))
        }
        let fixture = PrivatePostgres(root: root, primary: primary, replicas: replicas, synchronous: synchronous)
        for replica in replicas { try await fixture.waitForStreaming(replica) }
        if synchronous, !replicas.isEmpty {
            let names = replicas.map(\.name).joined(separator: ", ")
            _ = try await fixture.psql(primary, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (\(names))'")
            _ = try await fixture.psql(primary, "SELECT pg_reload_conf()")
            try await fixture.eventually("\(primary) to see a synchronous standby") {
                try await fixture.psql(primary, "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')") != "0"
            }
        }
        Registry.register(fixture)
        return fixture
    }

    /// Starts a fresh data directory on a free port (retrying another port when the one picked was taken).
    private static func startNew(index: Int, name: String, dataDirectory: String, root: String) async throws -> Server {
        var lastError = ""
        for _ in 0..<5 {
            let port = try TestEnvironment.closedLoopbackPort()
            let server = Server(index: index, name: name, port: port, dataDirectory: dataDirectory, logFile: root + "/\(name).log")
            let result = try await Tools.pgCtlStart(server, root: root)
            if result.status == 0 { return server }
            lastError = result.stderr + Tools.tail(server.logFile)
            guard lastError.contains("could not bind") || lastError.contains("Address already in use")
                || lastError.contains("could not create lock file")
            else { break }
        }
        throw Failure(description: "could not start \(name) in \(dataDirectory): \(lastError)")
    }

    // MARK: Addresses

    /// `postgresql://postgres@127.0.0.1:PORT/postgres`.
    func url(of server: Server) -> String { "postgresql://postgres@127.0.0.1:\(server.port)/postgres" }

    /// `host=127.0.0.1 port=PORT user=postgres dbname=postgres`.
    func conninfo(of server: Server) -> String { "host=127.0.0.1 port=\(server.port) user=postgres dbname=postgres" }

    /// A multi-host URL over `servers` in that order (default: every server, primary first), with an
    /// optional query (e.g. `target_session_attrs=read-write`).
    func multiHostURL(_ servers: [Server]? = nil, query: String? = nil) -> String {
        let hosts = (servers ?? self.servers).map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        return "postgresql://postgres@\(hosts)/postgres" + (query.map { "?" + $0 } ?? "")
    }

    /// A multi-host URL over every server in an order drawn from `generator`.
    func shuffledMultiHostURL(using generator: inout some RandomNumberGenerator, query: String? = nil) -> String {
        multiHostURL(servers.shuffled(using: &generator), query: query)
    }

    // MARK: SQL

    /// Runs `sql` with `psql -X -At -v ON_ERROR_STOP=1` on `server` and answers its output, trimmed
    /// (rows on lines, columns separated by `|`). Throws with psql's message on an error.
    @discardableResult
    func psql(_ server: Server, _ sql: String, timeout: Duration = .seconds(30)) async throws -> String {
        let result = try await Tools.run(
            Tools.binary("psql"),
            ["-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(server.port), "-U", "postgres",
             "-d", "postgres", "-c", sql],
            asPostgres: false, in: root, timeout: timeout)
        guard result.status == 0 else {
            throw Failure(description: "psql on \(server) failed (\(result.status)): \(result.stderr) [\(sql)]")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether `server` answers `SELECT 1` now.
    func isAnswering(_ server: Server) async -> Bool {
        (try? await psql(server, "SELECT 1", timeout: .seconds(5))) == "1"
    }

    /// `pg_current_wal_lsn()` of `server` (a primary), as text.
    func currentLSN(_ server: Server) async throws -> String {
        try await psql(server, "SELECT pg_current_wal_lsn()")
    }

    /// Waits until `replica` streams from its upstream (`pg_stat_wal_receiver.status = 'streaming'`).
    func waitForStreaming(_ replica: Server, timeout: Duration = .seconds(30)) async throws {
        try await eventually("\(replica) to stream", timeout: timeout) {
            try await psql(replica, "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')") == "streaming"
        }
    }

    /// Waits until `replica` has replayed `lsn` (default: the primary's current WAL position now).
    func waitForReplay(_ replica: Server, lsn: String? = nil, from source: Server? = nil, timeout: Duration = .seconds(30)) async throws {
        var target = lsn ?? ""
        if lsn == nil { target = try await currentLSN(source ?? primary) }
        try await eventually("\(replica) to replay \(target)", timeout: timeout) {
            try await psql(replica, "SELECT pg_last_wal_replay_lsn() >= '\(target)'::pg_lsn") == "t"
        }
    }

    /// Polls `condition` every 50 ms until it holds; throws after `timeout`. Errors inside count as "not yet".
    func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var lastError: (any Error)?
        while clock.now < deadline {
            do {
                if try await condition() { return }
                lastError = nil
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Failure(description: "timed out after \(timeout) waiting for \(what)" + (lastError.map { " (last error: \($0))" } ?? ""))
    }

    // MARK: Replication control

    /// Promotes `replica` (`pg_ctl promote -w`): it leaves recovery on a new timeline.
    func promote(_ replica: Server) async throws {
        try await Tools.runPG("pg_ctl", ["promote", "-w", "-t", "30", "-D", replica.dataDirectory], in: root).check("promote \(replica)")
    }

    /// Points `replica` at `upstream` (e.g. a promoted replica): creates its slot there if missing, sets
    /// `primary_conninfo` (`ALTER SYSTEM`, reload) and waits until it streams from `upstream`. It follows a
    /// new timeline only if it has not received WAL beyond the promotion point (else it needs `pg_rewind`).
    func follow(_ replica: Server, upstream: Server, timeout: Duration = .seconds(30)) async throws {
        try await psql(
            upstream,
            "SELECT pg_create_physical_replication_slot('\(replica.name)') WHERE NOT EXISTS "
                + "(SELECT 1 FROM pg_replication_slots WHERE slot_name = '\(replica.name)')")
        try await psql(
            replica,
            "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=\(upstream.port) user=postgres application_name=\(replica.name)'")
        try await psql(replica, "ALTER SYSTEM SET primary_slot_name = '\(replica.name)'")
        try await psql(replica, "SELECT pg_reload_conf()")
        try await eventually("\(replica) to stream from \(upstream)", timeout: timeout) {
            try await psql(replica, "SELECT coalesce((SELECT status || ':' || sender_port FROM pg_stat_wal_receiver), '')")
                == "streaming:\(upstream.port)"
        }
    }

    /// `pg_wal_replay_pause()` on `replica` (replay stops at the next record; WAL is still received).
    func pauseReplay(_ replica: Server) async throws {
        try await psql(replica, "SELECT pg_wal_replay_pause()")
    }

    /// `pg_wal_replay_resume()` on `replica`.
    func resumeReplay(_ replica: Server) async throws {
        try await psql(replica, "SELECT pg_wal_replay_resume()")
    }

    // MARK: Process control

    /// The postmaster's pid (first line of `postmaster.pid`), if it is running.
    func postmasterPID(_ server: Server) -> pid_t? {
        Tools.livePostmaster(dataDirectory: server.dataDirectory)
    }

    /// SIGKILL to the postmaster and then to all its children, as a crash of the host would; waits until
    /// they are gone. `start(_:)` brings the server back (with crash recovery).
    func kill9(_ server: Server) async throws {
        guard let pid = postmasterPID(server) else { throw Failure(description: "\(server) is not running") }
        let children = Tools.children(of: pid)
        kill(pid, SIGKILL)
        for child in children { kill(child, SIGKILL) }
        for child in children { kill(child, SIGCONT) }
        _ = state.withLock { $0.frozen.remove(server.index) }
        try await eventually("\(server) to die") { ([pid] + children).allSatisfy { !Tools.isAlive($0) } }
        // A dead postmaster may stay a zombie until its new parent (init) reaps it; PostgreSQL would take
        // that pid for a running server and refuse to start. Wait for the reaping, or drop the stale lock.
        do {
            try await eventually("\(server)'s postmaster to be reaped", timeout: .seconds(5)) { kill(pid, 0) != 0 }
        } catch {
            Tools.removeStaleLock(dataDirectory: server.dataDirectory)
        }
    }

    /// Stops `server` (`pg_ctl stop -m fast -w`); thaws it first if frozen.
    func stop(_ server: Server, mode: String = "fast") async throws {
        if state.withLock({ $0.frozen.contains(server.index) }) { thaw(server) }
        try await Tools.runPG("pg_ctl", ["stop", "-D", server.dataDirectory, "-m", mode, "-w", "-t", "30"], in: root)
            .check("stop \(server)")
    }

    /// Starts a stopped (or killed) `server` again on its port and waits until it accepts connections.
    func start(_ server: Server) async throws {
        Tools.removeStaleLock(dataDirectory: server.dataDirectory)
        let result = try await Tools.pgCtlStart(server, root: root)
        guard result.status == 0 else {
            throw Failure(description: "could not start \(server): \(result.stderr)\(Tools.tail(server.logFile))")
        }
    }

    /// SIGSTOP to the postmaster and every child: the server hangs (connections stay open, nothing answers).
    func freeze(_ server: Server) throws {
        guard let pid = postmasterPID(server) else { throw Failure(description: "\(server) is not running") }
        kill(pid, SIGSTOP)
        for child in Tools.children(of: pid) { kill(child, SIGSTOP) }
        state.withLock { _ = $0.frozen.insert(server.index) }
    }

    /// SIGCONT to the postmaster and every child.
    func thaw(_ server: Server) {
        state.withLock { _ = $0.frozen.remove(server.index) }
        guard let pid = postmasterPID(server) else { return }
        for child in Tools.children(of: pid) { kill(child, SIGCONT) }
        kill(pid, SIGCONT)
    }

    // MARK: Shutdown

    /// Stops every server (`pg_ctl stop -m immediate`, SIGKILL as a last resort) and removes the
    /// directory. Synchronous, quick, and safe to call more than once.
    func shutdown() {
        let first = state.withLock { state -> Bool in
            defer { state.shutDown = true }
            return !state.shutDown
        }
        guard first else { return }
        Registry.unregister(root)
        Registry.destroy(root: root)
    }

    /// ``shutdown()`` off the cooperative thread pool.
    func shutdownAndWait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                self.shutdown()
                continuation.resume()
            }
        }
    }

    /// The last lines of `server`'s log (for failure messages).
    func logTail(_ server: Server, lines: Int = 30) -> String { Tools.tail(server.logFile, lines: lines) }
}

// MARK: - Leak handling

/// Live fixtures of this process, killed at exit; and the removal of other processes' leftovers.
private enum Registry {
    static let live = Mutex<Set<String>>([])
    static let hook: Void = { atexit { Registry.destroyAllLive() } }()

    static func adopt(_ root: String) {
        _ = hook
        live.withLock { _ = $0.insert(root) }
    }

    static func register(_ fixture: PrivatePostgres) { adopt(fixture.root) }

    static func unregister(_ root: String) { live.withLock { _ = $0.remove(root) } }

    static func destroyAllLive() {
        let roots = live.withLock { roots -> Set<String> in
            defer { roots.removeAll() }
            return roots
        }
        for root in roots { destroy(root: root, gentle: false) }
    }

    /// Stops every server under `root` and removes it. `gentle`: `pg_ctl stop -m immediate` first (removes
    /// shared memory cleanly); otherwise SIGKILL only.
    static func destroy(root: String, gentle: Bool = true) {
        guard FileManager.default.fileExists(atPath: root + "/" + Tools.marker) else { return }
        let dataDirectories = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .map { root + "/" + $0 }
            .filter { FileManager.default.fileExists(atPath: $0 + "/PG_VERSION") }
        for data in dataDirectories {
            guard let pid = Tools.livePostmaster(dataDirectory: data) else { continue }
            let children = Tools.children(of: pid)
            kill(pid, SIGCONT)
            for child in children { kill(child, SIGCONT) }
            if gentle {
                _ = try? Tools.runBlocking(Tools.binary("pg_ctl"), ["stop", "-D", data, "-m", "immediate", "-w", "-t", "10"],
                                           asPostgres: true, in: root)
            }
            if Tools.isAlive(pid) { kill(pid, SIGKILL) }
            for child in children where Tools.isAlive(child) { kill(child, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Removes `coordinator-pg-*` directories whose owning process is gone (a crashed or killed test run).
    static func removeOrphans() {
        let tmp = Tools.temporaryDirectory
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
        for entry in entries where entry.hasPrefix("coordinator-pg-") {
            let root = tmp + "/" + entry
            guard let owner = try? String(contentsOfFile: root + "/" + Tools.marker, encoding: .utf8),
                let pid = pid_t(owner.trimmingCharacters(in: .whitespacesAndNewlines))
            else { continue }
            if pid == getpid() || Tools.isAlive(pid) { continue }
            destroy(root: root, gentle: false)
        }
    }
}

// MARK: - Processes

private enum Tools {
    static let marker = "owner.pid"
    static let temporaryDirectory = "/tmp"
    static let binDirectory = ProcessInfo.processInfo.environment["TESTENV_PG_BIN"] ?? "/usr/lib/postgresql/15/bin"
    static let isRoot = geteuid() == 0

    static func binary(_ name: String) -> String { binDirectory + "/" + name }

    static func check() throws {
        for name in ["initdb", "pg_ctl", "pg_basebackup", "psql"] where !FileManager.default.isExecutableFile(atPath: binary(name)) {
            throw PrivatePostgres.Failure(description: "\(binary(name)) not found (run cluster/testenv check-packages)")
        }
        if isRoot, getpwnam("postgres") == nil {
            throw PrivatePostgres.Failure(description: "running as root but there is no 'postgres' user")
        }
    }

    /// A fresh `coordinator-pg-*` directory (0755, owned by `postgres` when root) with the owner marker
    /// and the socket directory.
    static func makeRoot() throws -> String {
        let root = temporaryDirectory + "/coordinator-pg-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: root + "/sock", withIntermediateDirectories: true)
        try "\(getpid())\n".write(toFile: root + "/" + marker, atomically: true, encoding: .utf8)
        chmod(root, 0o755)
        if isRoot, let user = getpwnam("postgres") {
            for path in [root, root + "/sock"] { chown(path, user.pointee.pw_uid, user.pointee.pw_gid) }
        }
        return root
    }

    static func append(_ text: String, to path: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw PrivatePostgres.Failure(description: "cannot open \(path)")
        }
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
    }

    static func tail(_ path: String, lines: Int = 20) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
        return "\n--- \(path) ---\n" + text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    // MARK: pids

    static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        // A zombie (exited, not yet reaped by its parent) is not running.
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
    }

    /// The pid in `postmaster.pid` when that process is alive and its command line names `dataDirectory`.
    static func livePostmaster(dataDirectory: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first.trimmingCharacters(in: .whitespaces)),
            isAlive(pid),
            let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
        else { return nil }
        let command = String(decoding: cmdline.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        return command.contains(dataDirectory) ? pid : nil
    }

    /// Removes `postmaster.pid` when the pid in it is a zombie (dead, not yet reaped by init): PostgreSQL
    /// itself handles a lock of a pid that is gone, not of one that still answers `kill(pid, 0)`.
    static func removeStaleLock(dataDirectory: String) {
        let lock = dataDirectory + "/postmaster.pid"
        guard let text = try? String(contentsOfFile: lock, encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first.trimmingCharacters(in: .whitespaces)),
            kill(pid, 0) == 0, !isAlive(pid)
        else { return }
        try? FileManager.default.removeItem(atPath: lock)
    }

    /// Processes whose parent is `pid` (a postmaster's backends and auxiliary processes).
    static func children(of pid: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let child = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, pid_t(fields[1]) == pid else { return nil }
            return child
        }
    }

    // MARK: running commands

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String

        @discardableResult
        func check(_ what: String) throws -> Result {
            guard status == 0 else {
                throw PrivatePostgres.Failure(description: "\(what) failed (exit \(status)): \(stderr)\(stdout)")
            }
            return self
        }
    }

    static func pgCtlStart(_ server: PrivatePostgres.Server, root: String) async throws -> Result {
        let options = "-c port=\(server.port) -c cluster_name=\(server.name)"
        return try await runPG(
            "pg_ctl", ["start", "-D", server.dataDirectory, "-l", server.logFile, "-w", "-t", "60", "-o", options], in: root)
    }

    /// Runs a PostgreSQL binary (as `postgres` when root).
    static func runPG(_ name: String, _ arguments: [String], in directory: String) async throws -> Result {
        try await run(binary(name), arguments, asPostgres: true, in: directory, timeout: .seconds(90))
    }

    /// Output goes to files in `directory` (read after exit, removed with the fixture), so a chatty child can
    /// never block on a full pipe.
    static func outputPaths(in directory: String) -> (String, String) {
        let base = directory + "/.cmd-" + UUID().uuidString
        return (base + ".out", base + ".err")
    }

    static func collect(_ status: Int32, _ out: String, _ err: String) -> Result {
        defer {
            try? FileManager.default.removeItem(atPath: out)
            try? FileManager.default.removeItem(atPath: err)
        }
        return Result(
            status: status, stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    /// Whether a child was reaped (shared by its waiting thread and its watchdog).
    final class ReapFlag: Sendable {
        let done = Mutex(false)
    }

    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32

    /// Starts a command with `posix_spawn`: stdin from /dev/null, stdout/stderr to files, every other
    /// descriptor closed, default signal mask and dispositions, in `directory`.
    ///
    /// Not `Foundation.Process`: on Linux it notices a child's exit through a socket the child inherits,
    /// and `pg_ctl start` leaves a daemon (the postmaster) holding it, so the exit is never seen.
    static func spawn(_ executable: String, _ arguments: [String], asPostgres: Bool, in directory: String, out: String, err: String) throws -> pid_t {
        var argv = [executable] + arguments
        var path = executable
        if asPostgres, isRoot {
            path = "/usr/sbin/runuser"
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
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
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
        guard rc == 0 else {
            throw PrivatePostgres.Failure(description: "cannot run \(path): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    /// Waits for `pid` (blocking) and answers its exit code (128 + n when killed by signal n).
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Runs a command without blocking a cooperative thread: a dedicated thread waits for it. After
    /// `timeout` it is sent SIGKILL.
    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool, in directory: String, timeout: Duration) async throws -> Result {
        let (out, err) = outputPaths(in: directory)
        let pid = try spawn(executable, arguments, asPostgres: asPostgres, in: directory, out: out, err: err)
        let reaped = ReapFlag()
        let watchdog = Task {
            try? await Task.sleep(for: timeout)
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
        return collect(status, out, err)
    }

    /// Runs a command and blocks until it exits (for `deinit` / `atexit` cleanup only).
    static func runBlocking(_ executable: String, _ arguments: [String], asPostgres: Bool, in directory: String) throws -> Result {
        let (out, err) = outputPaths(in: directory)
        let pid = try spawn(executable, arguments, asPostgres: asPostgres, in: directory, out: out, err: err)
        return collect(reap(pid), out, err)
    }
}
