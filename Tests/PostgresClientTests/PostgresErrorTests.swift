import PostgresClient
import Testing

@Suite("PostgresError classification (no server)")
struct PostgresErrorTests {
    private func server(_ sqlState: String) -> PostgresError {
        PostgresError(code: .server, sqlState: sqlState, message: "m")
    }

    @Test(arguments: ["08000", "08003", "08006", "08001", "08P01", "40001", "40P01", "57P01", "57P02", "57P03", "25006"])
    func retryableSQLStates(sqlState: String) {
        #expect(server(sqlState).isRetryable)
    }

    @Test(arguments: ["23505", "42601", "42P01", "57014", "22P02", "25P02", "53300", "XX000"])
    func nonRetryableSQLStates(sqlState: String) {
        #expect(!server(sqlState).isRetryable)
    }

    @Test func retryabilityByCode() {
        #expect(PostgresError(code: .connectionFailed, message: "refused").isRetryable)
        #expect(PostgresError(code: .connectionLost, message: "eof").isRetryable)
        #expect(!PostgresError(code: .commitOutcomeUnknown, sqlState: "08006", message: "?").isRetryable)
        #expect(!PostgresError(code: .timeout, message: "late").isRetryable)
        #expect(!PostgresError(code: .cancelled, message: "c").isRetryable)
        #expect(!PostgresError(code: .poolExhausted, message: "busy").isRetryable)
        #expect(!PostgresError(code: .decoding, message: "bad").isRetryable)
        #expect(!PostgresError(code: .invalidURL, message: "bad").isRetryable)
    }

    @Test func connectionLost() {
        #expect(PostgresError(code: .connectionLost, message: "eof").isConnectionLost)
        #expect(PostgresError(code: .commitOutcomeUnknown, message: "?").isConnectionLost)
        #expect(server("08006").isConnectionLost)
        #expect(server("57P01").isConnectionLost)
        #expect(!server("40001").isConnectionLost)
        #expect(!server("25006").isConnectionLost)
        #expect(!PostgresError(code: .timeout, message: "late").isConnectionLost)
    }

    @Test func specificStates() {
        #expect(server("23505").isUniqueViolation)
        #expect(!server("23503").isUniqueViolation)
        #expect(server("25006").isReadOnlyTransaction)
        #expect(server("40001").isSerializationFailure)
        #expect(server("40P01").isSerializationFailure)
        #expect(server("57014").isQueryCanceled)
        #expect(server("23505").sqlStateClass == "23")
        #expect(PostgresError(code: .timeout, message: "x").sqlStateClass == nil)
    }

    @Test func aliasesAndDescription() {
        #expect(PostgresError.Code.connectFailed == .connectionFailed)
        #expect(PostgresError.Code.closed == .connectionClosed)
        #expect(PostgresError.Code.protocol == .unexpectedResult)
        let error = PostgresError(code: .server, sqlState: "23505", message: "duplicate key", detail: "Key (id)=(1) already exists.",
                                  hint: "h", severity: "ERROR", constraint: "t_pkey")
        #expect(error.description == "PostgresError(server, 23505): duplicate key DETAIL: Key (id)=(1) already exists. HINT: h")
        #expect(error.constraint == "t_pkey")
        #expect(error.severity == "ERROR")
    }
}
