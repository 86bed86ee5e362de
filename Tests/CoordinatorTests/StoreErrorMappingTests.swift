@testable import Coordinator
import PostgresClient
import Testing

/// How PostgreSQL errors become store errors: what is retried later (audit appends spool) and what is
/// the caller's error (or a dead letter for a spooled event).
@Suite("PostgreSQL error → store error")
struct StoreErrorMappingTests {
    /// SQLSTATE → the store error code it must map to.
    static let serverStates: [(String, StoreError.Code)] = [
        // Connection trouble, standby, shutdown, cancel.
        ("08006", .unavailable), ("57P01", .unavailable), ("25006", .unavailable), ("57014", .unavailable),
        // Refusals a retry gets past.
        ("40001", .unavailable), ("40P01", .unavailable), ("55P03", .unavailable),
        ("53100", .unavailable), ("53200", .unavailable), ("53300", .unavailable), ("58030", .unavailable),
        // Refused for good.
        ("22P02", .backend), ("22021", .backend), ("23502", .backend), ("23514", .backend), ("42P01", .backend),
        ("23505", .conflict),
    ]

    @Test func everySQLStateMapsAsDocumented() {
        for (state, expected) in Self.serverStates {
            let mapped = PostgresStore.storeError(PostgresError(code: .server, sqlState: state, message: "m"))
            #expect(mapped.code == expected, "SQLSTATE \(state)")
        }
    }

    @Test func lostConnectionsAndDeadlinesAreUnavailable() {
        for code in [PostgresError.Code.connectionFailed, .connectionLost, .timeout, .commitOutcomeUnknown] {
            #expect(PostgresStore.storeError(PostgresError(code: code, message: "x")).code == .unavailable)
        }
    }
}
