import Foundation
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Addresses of the throwaway servers started by `cluster/testenv up DIR`
/// (`make test` sources DIR/env before running the tests).
///
/// A missing variable FAILS the calling test — integration tests are never
/// skipped silently.
enum TestEnvironment {
    struct Missing: Error, CustomStringConvertible {
        let name: String
        var description: String {
            "\(name) is not set. Integration tests need real Redis/PostgreSQL servers: run `make test` "
                + "(or `cluster/testenv up DIR && . DIR/env` before `swift test`)."
        }
    }

    static func require(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw Missing(name: name)
        }
        return value
    }

    /// `redis://127.0.0.1:PORT/0`
    static var redisURL: String { get throws { try require("COORDINATOR_TEST_REDIS_URL") } }
    /// `postgresql://postgres@127.0.0.1:PORT/postgres` (read-write)
    static var postgresPrimaryURL: String { get throws { try require("COORDINATOR_TEST_POSTGRES_PRIMARY_URL") } }
    /// Hot standby streaming from the primary (read-only).
    static var postgresReplicaURL: String { get throws { try require("COORDINATOR_TEST_POSTGRES_REPLICA_URL") } }
    /// Multi-host `postgresql://postgres@primary,replica/postgres`.
    static var postgresURL: String { get throws { try require("COORDINATOR_TEST_POSTGRES_URL") } }

    /// A short unique name for keys and tables, so tests can run in parallel.
    static func uniqueName(_ prefix: String) -> String {
        prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
    }

    /// A loopback TCP port with nothing listening: bound, then closed again.
    static func closedLoopbackPort() throws -> Int {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard ok else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A private `redis-server` child process for tests that disrupt the server
/// (SIGSTOP, kills): the shared test server must stay healthy for the tests
/// running in parallel. Uses `redis-server` from PATH (or
/// `TESTENV_REDIS_SERVER`), as `cluster/testenv` does; a missing binary FAILS
/// the test.
/// `@unchecked Sendable`: `Process` is only started in `init` and signalled afterwards.
final class PrivateRedis: @unchecked Sendable {
    let process: Process
    let port: Int
    var url: String { "redis://127.0.0.1:\(port)/0" }
    var pid: pid_t { process.processIdentifier }

    struct StartFailed: Error, CustomStringConvertible {
        let description: String
    }

    /// A server on `port` (a free one when nil). With `dataDirectory`, it persists every write to an
    /// append-only file there (`appendfsync always`), so a server started again on the same port and
    /// directory after a kill has everything acknowledged before it.
    init(port: Int? = nil, dataDirectory: String? = nil) throws {
        let binary = ProcessInfo.processInfo.environment["TESTENV_REDIS_SERVER"] ?? "redis-server"
        let path: String
        if binary.contains("/") {
            path = binary
        } else {
            let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            guard let found = dirs.map({ "\($0)/\(binary)" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                throw StartFailed(description: "\(binary) not found in PATH (run cluster/testenv check-packages)")
            }
            path = found
        }
        self.port = try port ?? TestEnvironment.closedLoopbackPort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        let persistence = dataDirectory.map { ["--appendonly", "yes", "--appendfsync", "always", "--dir", $0] }
            ?? ["--appendonly", "no", "--dir", NSTemporaryDirectory()]
        process.arguments = ["--port", String(self.port), "--bind", "127.0.0.1", "--save", "",
                             "--daemonize", "no", "--loglevel", "warning"] + persistence
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// Waits until the server answers PING (up to 10 s).
    func waitUntilReady() async throws {
        let clock = ContinuousClock()
        let until = clock.now + .seconds(10)
        while clock.now < until {
            if let connection = try? await RedisConnection.connect(url: url, connectTimeout: .milliseconds(200)) {
                let pong = try? await connection.send(["PING"])
                await connection.close()
                if pong == .status("PONG") { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw StartFailed(description: "private redis-server on port \(port) did not answer PING within 10 s")
    }

    func pause() { kill(pid, SIGSTOP) }
    func resume() { kill(pid, SIGCONT) }

    /// SIGKILL and wait. Not SIGTERM: the child inherits the signal mask of
    /// the spawning (dispatch worker) thread, where SIGTERM is blocked.
    func stop() {
        guard process.isRunning else { return }
        kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }
}
