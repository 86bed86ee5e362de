/// A transaction isolation level.
public enum PostgresIsolationLevel: String, Sendable, Equatable, CaseIterable {
    /// `READ COMMITTED` (PostgreSQL's default).
    case readCommitted = "READ COMMITTED"
    /// `REPEATABLE READ` (snapshot isolation; may fail with 40001).
    case repeatableRead = "REPEATABLE READ"
    /// `SERIALIZABLE` (may fail with 40001; retry the whole transaction).
    case serializable = "SERIALIZABLE"
}

/// The connection inside `withTransaction`'s body. Statements run with the
/// earlier of their own deadline and the transaction's.
public struct PostgresTransaction: Sendable {
    /// The connection running the transaction.
    public let connection: PostgresConnection
    /// The transaction's deadline, applied to every statement run through
    /// this value (nil: none).
    public let deadline: ContinuousClock.Instant?

    /// As `PostgresConnection.execute`, bounded by the transaction's deadline too.
    public func execute(
        _ sql: String, _ bindings: [(any PostgresEncodable)?] = [], deadline: ContinuousClock.Instant? = nil
    ) async throws(PostgresError) -> PostgresRows {
        try await connection.execute(sql, bindings, deadline: earliest(deadline, self.deadline))
    }

    /// As `PostgresConnection.query(_:_:deadline:)`, bounded by the transaction's deadline too.
    public func query(_ sql: String, _ params: [String?] = [], deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) -> [[String?]] {
        try await connection.query(sql, params, deadline: earliest(deadline, self.deadline))
    }

    /// `pg_notify`, delivered when the transaction commits.
    public func notify(channel: String, payload: String = "", deadline: ContinuousClock.Instant? = nil) async throws(PostgresError) {
        try await connection.notify(channel: channel, payload: payload, deadline: earliest(deadline, self.deadline))
    }
}

func earliest(_ a: ContinuousClock.Instant?, _ b: ContinuousClock.Instant?) -> ContinuousClock.Instant? {
    switch (a, b) {
    case (nil, nil): return nil
    case (let x?, nil), (nil, let x?): return x
    case (let x?, let y?): return min(x, y)
    }
}

extension PostgresConnection {
    /// Runs `body` inside `BEGIN` … `COMMIT`; `ROLLBACK` when `body` throws
    /// (the error is rethrown).
    ///
    /// - `deadline` bounds BEGIN, COMMIT and every statement run through the
    ///   `PostgresTransaction` (time spent elsewhere in `body` counts too).
    /// - When the connection breaks or the deadline passes while COMMIT is in
    ///   flight, the outcome is unknown (the commit may have landed): throws
    ///   `.commitOutcomeUnknown`, never `.connectionLost`.
    /// - When the server answers COMMIT with a rollback (the transaction had
    ///   failed, e.g. `body` caught a statement error and went on), throws
    ///   `.server` with SQLSTATE 25P02.
    /// - A serialization failure at COMMIT (40001) is thrown as is: the
    ///   transaction was rolled back and `isRetryable` is true.
    /// - If ROLLBACK itself fails the connection is marked broken.
    public func withTransaction<T: Sendable>(
        isolation: PostgresIsolationLevel? = nil,
        readOnly: Bool = false,
        deadline: ContinuousClock.Instant? = nil,
        actorIsolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresTransaction) async throws -> T
    ) async throws -> T {
        var begin = "BEGIN"
        if let isolation { begin += " ISOLATION LEVEL " + isolation.rawValue }
        if readOnly { begin += " READ ONLY" }
        _ = try await execute(begin, deadline: deadline)
        let transaction = PostgresTransaction(connection: self, deadline: deadline)
        let value: T
        do {
            value = try await body(transaction)
        } catch {
            await rollbackAfterFailure(deadline: deadline)
            throw error
        }
        let commit: PostgresRows
        do throws(PostgresError) {
            commit = try await execute("COMMIT", deadline: deadline)
        } catch {
            switch error.code {
            case .connectionLost, .timeout, .cancelled:
                throw PostgresError(
                    code: .commitOutcomeUnknown, sqlState: error.sqlState,
                    message: "COMMIT outcome unknown (\(error.code): \(error.message)); the transaction may have committed",
                    severity: error.severity)
            default:
                throw error
            }
        }
        if commit.commandTag == "ROLLBACK" {
            throw PostgresError(
                code: .server, sqlState: "25P02",
                message: "COMMIT rolled back: the transaction had failed (an error inside it was caught and ignored)")
        }
        return value
    }

    private func rollbackAfterFailure(deadline: ContinuousClock.Instant?) async {
        guard !isBroken else { return }
        // Give ROLLBACK a moment even when the caller's deadline has passed;
        // if it cannot complete the session must not be reused.
        let rollbackDeadline = max(deadline ?? .now + .seconds(5), .now + .milliseconds(500))
        do throws(PostgresError) {
            _ = try await execute("ROLLBACK", deadline: rollbackDeadline)
        } catch {
            markBroken(PostgresError(code: .connectionLost, message: "ROLLBACK failed: \(error.message)"))
            closeSoon()
        }
    }
}
