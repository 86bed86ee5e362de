@testable import Coordinator
import PostgresClient
import Testing

/// How PostgreSQL errors become store errors: what is retried later (audit appends spool) and what is
/// the caller's error (or a dead letter for a spooled event).
@Suite("PostgreSQL error → store error")
struct StoreErrorMappingTests {
    private func server(_ sqlState: String) -> PostgresError {
        PostgresError(code: .server, sqlState: sqlState, message: "m")
    }

    @Test(arguments: ["08006", "57P01", "25006", "57014", "40001", "40P01", "55P03", "53100", "53200", "53300", "58030"])
    func transientStatesAreUnavailable(sqlState: String) {
        #expect(PostgresStore.storeError(server(sqlState)).code == .unavailable)
    }

    @Test(arguments: ["22P02", "22021", "23502", "23514", "42P01"])
    func refusalsForGoodAreBackendErrors(sqlState: String) {
        #expect(PostgresStore.storeError(server(sqlState)).code == .backend)
    }

    @Test func uniqueViolationIsAConflict() {
        #expect(PostgresStore.storeError(server("23505")).code == .conflict)
    }

    @Test func lostConnectionsAndDeadlinesAreUnavailable() {
        for code in [PostgresError.Code.connectionFailed, .connectionLost, .timeout, .commitOutcomeUnknown] {
            #expect(PostgresStore.storeError(PostgresError(code: code, message: "x")).code == .unavailable)
        }
    }
}
