import Foundation
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
