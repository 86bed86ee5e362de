import Coordinator
import Foundation
import SQLiteClient
import Testing

/// Opens a store at `directory/sub/coordinator.sqlite` (the parent directories do not exist yet).
private func openStore(_ directory: String, maxAuditBatch: Int = 512) async throws -> SQLiteStore {
    try await SQLiteStore.open(path: directory + "/sub/coordinator.sqlite", maxAuditBatch: maxAuditBatch)
}

private func token(_ n: Int, createdAt: Int64 = 1_000, expiresAt: Int64? = nil) -> TokenRecord {
    TokenRecord(
        id: "tok_\(n)", secretHash: Array(repeating: UInt8(n % 256), count: 32), subject: "subject \(n)",
        policy: "default", createdAt: createdAt, expiresAt: expiresAt, revokedAt: nil)
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

@Suite("SQLiteStore")
struct SQLiteStoreTests {
    @Test func tokensInsertLookupAndList() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            let late = token(1, createdAt: 3_000, expiresAt: 9_000)
            let early = token(2, createdAt: 1_000)
            let middle = token(3, createdAt: 2_000)
            for t in [late, early, middle] { try await store.insertToken(t) }

            #expect(try await store.token(id: "tok_1") == late)
            #expect(try await store.token(secretHash: early.secretHash) == early)
            #expect(try await store.token(id: "tok_unknown") == nil)
            #expect(try await store.token(secretHash: Array(repeating: 9, count: 32)) == nil)
            #expect(try await store.tokens() == [early, middle, late])
            try await store.close()
        }
    }

    @Test func duplicateTokenIdOrHashConflicts() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            try await store.insertToken(token(1))
            var sameID = token(2)
            sameID.id = "tok_1"
            await expectStoreError(.conflict) { try await store.insertToken(sameID) }
            var sameHash = token(3)
            sameHash.secretHash = token(1).secretHash
            await expectStoreError(.conflict) { try await store.insertToken(sameHash) }
            #expect(try await store.tokens() == [token(1)])
            try await store.close()
        }
    }

    @Test func revokeKeepsTheFirstRevocation() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            try await store.insertToken(token(1))
            let first = try await store.revokeToken(id: "tok_1", at: 10)
            #expect(first?.revokedAt == 10)
            let second = try await store.revokeToken(id: "tok_1", at: 20)
            #expect(second?.revokedAt == 10)
            #expect(try await store.token(id: "tok_1")?.revokedAt == 10)
            #expect(try await store.token(secretHash: token(1).secretHash)?.revokedAt == 10)
            #expect(try await store.revokeToken(id: "tok_unknown", at: 30) == nil)
            try await store.close()
        }
    }

    @Test func documentsPerKind() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            try await store.putDocument(kind: .limitPolicy, name: "b", json: #"{"rate":2}"#, updatedAt: 1)
            try await store.putDocument(kind: .limitPolicy, name: "a", json: #"{"rate":1}"#, updatedAt: 2)
            try await store.putDocument(kind: .breakerConfig, name: "a", json: #"{"threshold":5}"#, updatedAt: 3)
            #expect(
                try await store.documents(kind: .limitPolicy) == [
                    StoredDocument(name: "a", json: #"{"rate":1}"#, updatedAt: 2),
                    StoredDocument(name: "b", json: #"{"rate":2}"#, updatedAt: 1),
                ])
            // Replace.
            try await store.putDocument(kind: .limitPolicy, name: "b", json: #"{"rate":20}"#, updatedAt: 4)
            #expect(
                try await store.documents(kind: .limitPolicy).last
                    == StoredDocument(name: "b", json: #"{"rate":20}"#, updatedAt: 4))
            #expect(
                try await store.documents(kind: .breakerConfig) == [
                    StoredDocument(name: "a", json: #"{"threshold":5}"#, updatedAt: 3)
                ])
            // Delete only touches its kind.
            #expect(try await store.deleteDocument(kind: .limitPolicy, name: "a"))
            #expect(try await !store.deleteDocument(kind: .limitPolicy, name: "a"))
            #expect(try await !store.deleteDocument(kind: .limitPolicy, name: "missing"))
            #expect(try await store.documents(kind: .limitPolicy).map(\.name) == ["b"])
            #expect(try await store.documents(kind: .breakerConfig).map(\.name) == ["a"])
            try await store.close()
        }
    }

    @Test func settings() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            #expect(try await store.setting("node_id") == nil)
            try await store.setSetting("node_id", value: "node-a")
            try await store.setSetting("admin_token_hash", value: "")
            #expect(try await store.setting("node_id") == "node-a")
            #expect(try await store.setting("admin_token_hash") == "")
            try await store.setSetting("node_id", value: "node-b")
            #expect(try await store.setting("node_id") == "node-b")
            try await store.close()
        }
    }

    @Test func auditAppendIsIdempotentByID() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            let first = try await store.appendAudit(event("e1"))
            #expect(first == AuditAppendResult(seq: first.seq, duplicate: false, sameContent: true))
            let second = try await store.appendAudit(event("e2"))
            #expect(second.seq > first.seq && !second.duplicate)

            // Same id, same content (recordedAt and node may differ: a retry through another node).
            var retry = event("e1", at: 99)
            retry.nodeID = "node-b"
            #expect(try await store.appendAudit(retry) == AuditAppendResult(seq: first.seq, duplicate: true, sameContent: true))
            // Same id, different content.
            #expect(
                try await store.appendAudit(event("e1", detail: #"{"x":1}"#))
                    == AuditAppendResult(seq: first.seq, duplicate: true, sameContent: false))
            #expect(
                try await store.appendAudit(event("e1", actor: "mallory"))
                    == AuditAppendResult(seq: first.seq, duplicate: true, sameContent: false))

            let stored = try await store.auditEvents(after: 0, limit: 10)
            #expect(stored == [AuditEvent(seq: first.seq, event: event("e1")), AuditEvent(seq: second.seq, event: event("e2"))])
            try await store.close()
        }
    }

    @Test func concurrentDuplicatesReportTheFirstSeq() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            let results = try await withThrowingTaskGroup(of: AuditAppendResult.self) { group in
                for _ in 0..<50 { group.addTask { try await store.appendAudit(event("same")) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { !$0.duplicate }.count == 1)
            #expect(Set(results.map(\.seq)).count == 1)
            #expect(results.allSatisfy { $0.sameContent })
            #expect(try await store.auditEvents(after: 0, limit: 100).count == 1)
            try await store.close()
        }
    }

    @Test func auditPaginationAndStrictlyIncreasingSeq() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            var seqs: [Int64] = []
            for n in 0..<25 { seqs.append(try await store.appendAudit(event("e\(n)")).seq) }
            #expect(zip(seqs, seqs.dropFirst()).allSatisfy { $0 < $1 })

            var pages: [[AuditEvent]] = []
            var after: Int64 = 0
            while true {
                let page = try await store.auditEvents(after: after, limit: 10)
                if page.isEmpty { break }
                pages.append(page)
                after = page.last!.seq
            }
            #expect(pages.map(\.count) == [10, 10, 5])
            #expect(pages.flatMap { $0.map(\.seq) } == seqs)
            #expect(pages.flatMap { $0.map(\.event.id) } == (0..<25).map { "e\($0)" })
            #expect(try await store.auditEvents(after: seqs[3], limit: 2).map(\.seq) == [seqs[4], seqs[5]])
            #expect(try await store.auditEvents(after: seqs.last!, limit: 10).isEmpty)
            #expect(try await store.auditEvents(after: 0, limit: 0).isEmpty)
            try await store.close()
        }
    }

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

    @Test func reopeningKeepsEverything() async throws {
        try await withSQLiteTestDirectory { dir in
            var store = try await openStore(dir)
            try await store.insertToken(token(1))
            _ = try await store.revokeToken(id: "tok_1", at: 7)
            try await store.putDocument(kind: .limitPolicy, name: "p", json: "{}", updatedAt: 1)
            try await store.setSetting("k", value: "v")
            let a = try await store.appendAudit(event("a"))
            try await store.close()

            store = try await openStore(dir)
            #expect(try await store.token(id: "tok_1")?.revokedAt == 7)
            #expect(try await store.documents(kind: .limitPolicy).map(\.name) == ["p"])
            #expect(try await store.setting("k") == "v")
            #expect(try await store.auditEvents(after: 0, limit: 10) == [AuditEvent(seq: a.seq, event: event("a"))])
            #expect(try await store.appendAudit(event("a")).duplicate)
            let b = try await store.appendAudit(event("b"))
            #expect(b.seq > a.seq)
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

    @Test func callsAfterCloseFailWithClosed() async throws {
        try await withSQLiteTestDirectory { dir in
            let store = try await openStore(dir)
            try await store.close()
            try await store.close()  // idempotent
            await expectStoreError(.closed) { try await store.insertToken(token(1)) }
            await expectStoreError(.closed) { _ = try await store.token(id: "tok_1") }
            await expectStoreError(.closed) { _ = try await store.token(secretHash: [1]) }
            await expectStoreError(.closed) { _ = try await store.tokens() }
            await expectStoreError(.closed) { _ = try await store.revokeToken(id: "tok_1", at: 1) }
            await expectStoreError(.closed) { try await store.putDocument(kind: .limitPolicy, name: "n", json: "{}", updatedAt: 1) }
            await expectStoreError(.closed) { _ = try await store.documents(kind: .limitPolicy) }
            await expectStoreError(.closed) { _ = try await store.deleteDocument(kind: .limitPolicy, name: "n") }
            await expectStoreError(.closed) { _ = try await store.setting("k") }
            await expectStoreError(.closed) { try await store.setSetting("k", value: "v") }
            await expectStoreError(.closed) { _ = try await store.appendAudit(event("e")) }
            await expectStoreError(.closed) { _ = try await store.auditEvents(after: 0, limit: 10) }
            await expectStoreError(.closed) { _ = try await store.auditEvents(after: 0, limit: 0) }
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
