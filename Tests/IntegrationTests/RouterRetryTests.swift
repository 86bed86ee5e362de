import Coordinator
import CoordinatorCore
import Foundation
import Logging
import PostgresClient
import Testing

/// A read on a pooled connection the server terminated while it sat idle (a restart, an
/// administrator's pg_terminate_backend) is run again on a fresh connection: reads are idempotent.
@Suite("Router: reads survive connections the server dropped while idle")
struct RouterRetryTests {
    @Test("every idle pooled connection terminated by the server: the next read still succeeds, once retried")
    func readRetriesOnAFreshConnection() async throws {
        let database = try await ScratchDatabase.create("retry")
        defer { Task { await database.drop() } }
        var logger = Logger(label: "router-retry")
        logger.logLevel = .critical
        var settings = ReplicatedPostgres.Settings()
        settings.probeInterval = .milliseconds(100)
        let router = try ReplicatedPostgres(url: database.url, settings: settings, logger: logger)
        let prober = Task { await router.run() }
        defer { prober.cancel(); Task { await router.close() } }
        #expect(await router.waitForPrimary(timeout: .seconds(10)))

        // Fill the pool with a few idle connections.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    _ = try await router.read(.primary) { try await $0.query("SELECT pg_sleep(0.05)") }
                }
            }
            try await group.waitForAll()
        }
        // The server drops every one of them.
        let admin = try await PostgresConnection.connect(conninfo: try TestEnvironment.postgresPrimaryURL)
        let terminated = try await admin.query(
            "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND query NOT ILIKE '%pg_is_in_recovery%'",
            [database.name])
        await admin.close()
        #expect((Int(terminated.first?.first??.description ?? "0") ?? 0) >= 1, "\(terminated)")
        try await Task.sleep(for: .milliseconds(100))

        let rows = try await router.read(.primary) { try await $0.query("SELECT 42::text") }
        #expect(rows == [["42"]])
    }
}
