import Coordinator
import Foundation
import SQLiteClient
import Testing

/// Opens a store at `directory/sub/coordinator.sqlite` (the parent directories do not exist yet).
private func openStore(_ directory: String, maxAuditBatch: Int = 512) async throws -> SQLiteStore {
    try await SQLiteStore.open(path: directory + "/sub/coordinator.sqlite", maxAuditBatch: maxAuditBatch)
}

private func event(_ id: String, actor: String = "admin", detail: String = "{}", at: Int64 = 5) -> AuditEventInput {
    AuditEventInput(
        id: id, actor: actor, action: "token.create", resource: "tok_1", outcome: "success", detailJSON: detail,
        recordedAt: at, nodeID: "node-a")
}

/// Expects `body` to throw `StoreError` with `code`, and returns it.
@discardableResult
private func expectStoreError(
    _ code: StoreError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> StoreError? {
    do {
        try await body()
        Issue.record("expected StoreError \(code), got success", sourceLocation: sourceLocation)
    } catch let error as StoreError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected StoreError \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// SQLite-only behaviour. The observable contract shared with PostgreSQL (tokens, documents,
/// settings, audit idempotency and order, reopen, close) is in IntegrationTests/StoreContractTests.
@Suite("SQLiteStore")
struct SQLiteStoreTests {
    @Test func thousandConcurrentAppendsAreGroupCommitted() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            let count = 1_000
            let results = try await withThrowingTaskGroup(of: (String, AuditAppendResult).self) { group in
                for n in 0..<count {
                    group.addTask { ("e\(n)", try await store.appendAudit(event("e\(n)"))) }
                }
                return try await group.reduce(into: [String: AuditAppendResult]()) { $0[$1.0] = $1.1 }
            }
            #expect(results.count == count)
            #expect(Set(results.values.map(\.seq)).count == count)
            #expect(results.values.allSatisfy { !$0.duplicate })

            let stored = try await store.auditEvents(after: 0, limit: count + 10)
            #expect(stored.count == count)
            #expect(Set(stored.map(\.event.id)).count == count)
            #expect(stored.allSatisfy { results[$0.event.id]?.seq == $0.seq })
            let commits = store.auditCommitCount
            #expect(commits >= 2)  // at most 512 events per transaction
            #expect(commits < count, "group commit should batch concurrent appends (\(commits) commits)")
            try await store.close()
        }
    }

    @Test func auditSeqIsNeverReused() async throws {
        try await withSQLiteTestDirectory { dir in
            var store = try await openStore(dir)
            _ = try await store.appendAudit(event("a"))
            let b = try await store.appendAudit(event("b"))
            let path = store.path
            try await store.close()

            // Remove the newest row behind the store's back; AUTOINCREMENT must not hand its seq out again.
            let raw = try await SQLiteConnection.open(path: path)
            try await raw.withConnection { try $0.run("DELETE FROM audit_events WHERE event_id = 'b'") }
            await raw.close()

            store = try await openStore(dir)
            #expect(try await store.appendAudit(event("c")).seq > b.seq)
            try await store.close()
        }
    }

    @Test func walModeIsOn() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            // The journal mode is persistent in the file: a second connection that does not ask for
            // WAL itself sees it.
            let observer = try await SQLiteConnection.open(
                path: store.path, configuration: .init(flags: [.readOnly], writeAheadLog: false))
            let mode = try await observer.withConnection { try $0.queryFirst("PRAGMA journal_mode")?.get(0, as: String.self) }
            #expect(mode == "wal")
            await observer.close()
            try await store.close()
        }
    }

    @Test func newerSchemaIsRefused() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            let path = store.path
            try await store.close()

            let raw = try await SQLiteConnection.open(path: path)
            try await raw.withConnection {
                try $0.run("INSERT INTO schema_migrations(version, applied_at) VALUES (?, 0)", [.integer(SQLiteStore.schemaVersion + 1)])
            }
            await raw.close()

            let error = await expectStoreError(.unusable) { _ = try await openStore(dir) }
            #expect(error?.message.contains("newer") == true)
        }
    }

    @Test func garbageFileIsRefused() async throws {
        try await withSQLiteTestDirectory { dir in
            try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
            let text = String(repeating: "this is not a database\n", count: 400)
            try text.write(toFile: dir + "/sub/coordinator.sqlite", atomically: true, encoding: .utf8)
            let error = await expectStoreError(.unusable) { _ = try await openStore(dir) }
            #expect(error?.message.contains("not a database") == true, "\(String(describing: error))")
        }
    }

    /// 10 000 events from 64 concurrent writers; prints the throughput and the number of commits.
    @Test func auditThroughput() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            let writers = 64
            let perWriter = 10_000 / writers + 1
            let clock = ContinuousClock()
            let start = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<writers {
                    group.addTask {
                        for n in 0..<perWriter { _ = try await store.appendAudit(event("w\(w)-\(n)")) }
                    }
                }
                try await group.waitForAll()
            }
            let elapsed = clock.now - start
            let total = writers * perWriter
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let commits = store.auditCommitCount
            print(
                "audit throughput: \(total) events, \(writers) writers, synchronous=FULL: "
                    + "\(Int(Double(total) / seconds)) events/s, \(commits) commits "
                    + "(\(total / max(commits, 1)) events/commit) in \(elapsed)"
            )
            #expect(try await store.auditEvents(after: 0, limit: total + 1).count == total)
            #expect(commits < total)
            try await store.close()
        }
    }
}
