import Coordinator
import Foundation
import PostgresClient
import Testing

// MARK: - Support shared with PostgresStoreTests

/// A fresh PostgreSQL database on the test primary (`COORDINATOR_TEST_POSTGRES_PRIMARY_URL`), so
/// tests running in parallel never share tables, sequences or advisory locks.
struct ScratchDatabase: Sendable {
    let name: String
    /// The primary's URL with the database replaced.
    let url: String

    static func create(_ prefix: String = "store") async throws -> ScratchDatabase {
        let primary = try TestEnvironment.postgresPrimaryURL
        let name = TestEnvironment.uniqueName(prefix)
        let admin = try await PostgresConnection.connect(conninfo: primary)
        do {
            _ = try await admin.query("CREATE DATABASE \"\(name)\" STRATEGY FILE_COPY")
        } catch {
            await admin.close()
            throw error
        }
        await admin.close()
        return ScratchDatabase(name: name, url: try Self.url(primary, database: name))
    }

    /// Drops the database, disconnecting whoever is still connected.
    func drop() async {
        guard let primary = try? TestEnvironment.postgresPrimaryURL,
            let admin = try? await PostgresConnection.connect(conninfo: primary)
        else { return }
        _ = try? await admin.query("DROP DATABASE IF EXISTS \"\(name)\" WITH (FORCE)")
        await admin.close()
    }

    /// A new connection to the database.
    func connect() async throws -> PostgresConnection {
        try await PostgresConnection.connect(conninfo: url)
    }

    /// `postgresql://user@host:port/db?query` with `db` replaced by `database`.
    static func url(_ url: String, database: String) throws -> String {
        guard let scheme = url.range(of: "://") else {
            throw TestEnvironment.Missing(name: "a postgresql:// URL (got \(url))")
        }
        let afterScheme = url[scheme.upperBound...]
        let query = afterScheme.firstIndex(of: "?").map { String(afterScheme[$0...]) } ?? ""
        let beforeQuery = afterScheme.prefix { $0 != "?" }
        let authority = beforeQuery.prefix { $0 != "/" }
        return url[..<scheme.upperBound] + authority + "/" + database + query
    }
}

/// Expects `body` to throw `StoreError` with `code`, and returns it.
@discardableResult
func expectStoreError(
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

func storeToken(_ n: Int, createdAt: Int64 = 1_000, expiresAt: Int64? = nil) -> TokenRecord {
    TokenRecord(
        id: "tok_\(n)", secretHash: Array(repeating: UInt8(n % 256), count: 32), subject: "subject \(n)",
        policy: "default", createdAt: createdAt, expiresAt: expiresAt, revokedAt: nil)
}

/// An audit event recorded now-ish (2025-06-15) unless `at` says otherwise.
func auditEvent(_ id: String, actor: String = "admin", detail: String = "{}", at: Int64 = 1_749_945_600_000)
    -> AuditEventInput
{
    AuditEventInput(
        id: id, actor: actor, action: "token.create", resource: "tok_1", outcome: "success", detailJSON: detail,
        recordedAt: at, nodeID: "node-a")
}

// MARK: - The contract

/// The stores the contract runs against.
enum StoreBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }
}

/// One empty store location per test: a temporary directory (SQLite) or a fresh database (PostgreSQL).
struct StoreHarness: Sendable {
    let backend: StoreBackend
    /// The SQLite file, or the PostgreSQL URL.
    let location: String

    /// Opens a store at the location (again, for reopen tests).
    func open() async throws -> any CoordinatorStore {
        switch backend {
        case .sqlite: return try await SQLiteStore.open(path: location)
        case .postgres: return try await PostgresStore.open(conninfo: location)
        }
    }

    static func with(_ backend: StoreBackend, _ body: (StoreHarness) async throws -> Void) async throws {
        switch backend {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("coordinator-store-contract-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            try await body(StoreHarness(backend: backend, location: directory.path + "/sub/coordinator.sqlite"))
        case .postgres:
            let database = try await ScratchDatabase.create("contract")
            do {
                try await body(StoreHarness(backend: backend, location: database.url))
            } catch {
                await database.drop()
                throw error
            }
            await database.drop()
        }
    }
}

/// The observable behaviour every `CoordinatorStore` shares, run against SQLite and PostgreSQL.
@Suite("Store contract (SQLite and PostgreSQL)")
struct StoreContractTests {
    @Test(arguments: StoreBackend.allCases)
    func tokensInsertLookupAndList(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            // 999 < 2_000 < 10_000 numerically, not as text.
            let late = storeToken(1, createdAt: 10_000, expiresAt: 90_000)
            let early = storeToken(2, createdAt: 999)
            let middle = storeToken(3, createdAt: 2_000)
            // Same creation time: insertion order breaks the tie.
            let tieFirst = storeToken(5, createdAt: 2_000)
            let tieSecond = storeToken(4, createdAt: 2_000)
            for t in [late, early, middle, tieFirst, tieSecond] { try await store.insertToken(t) }

            #expect(try await store.token(id: "tok_1") == late)
            #expect(try await store.token(secretHash: early.secretHash) == early)
            #expect(try await store.token(id: "tok_unknown") == nil)
            #expect(try await store.token(secretHash: Array(repeating: 9, count: 32)) == nil)
            #expect(try await store.tokens() == [early, middle, tieFirst, tieSecond, late])

            // Every byte value of a hash round-trips.
            var allBytes = storeToken(6)
            allBytes.secretHash = (0...255).map { UInt8($0) }
            try await store.insertToken(allBytes)
            #expect(try await store.token(secretHash: allBytes.secretHash) == allBytes)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func duplicateTokenIdOrHashConflicts(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            try await store.insertToken(storeToken(1))
            var sameID = storeToken(2)
            sameID.id = "tok_1"
            await expectStoreError(.conflict) { try await store.insertToken(sameID) }
            var sameHash = storeToken(3)
            sameHash.secretHash = storeToken(1).secretHash
            await expectStoreError(.conflict) { try await store.insertToken(sameHash) }
            #expect(try await store.tokens() == [storeToken(1)])
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func revokeKeepsTheFirstRevocation(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            try await store.insertToken(storeToken(1))
            let first = try await store.revokeToken(id: "tok_1", at: 10)
            #expect(first?.revokedAt == 10)
            let second = try await store.revokeToken(id: "tok_1", at: 20)
            #expect(second?.revokedAt == 10)
            #expect(try await store.token(id: "tok_1")?.revokedAt == 10)
            #expect(try await store.token(secretHash: storeToken(1).secretHash)?.revokedAt == 10)
            #expect(try await store.revokeToken(id: "tok_unknown", at: 30) == nil)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func concurrentRevocationsAgreeOnOneTime(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            try await store.insertToken(storeToken(1))
            let times = try await withThrowingTaskGroup(of: Int64?.self) { group in
                for n in 1...20 { group.addTask { try await store.revokeToken(id: "tok_1", at: Int64(n))?.revokedAt } }
                return try await group.reduce(into: [Int64?]()) { $0.append($1) }
            }
            let stored = try await store.token(id: "tok_1")?.revokedAt
            #expect(stored != nil && (1...20).contains(stored!))
            #expect(times.allSatisfy { $0 == stored }, "\(times)")
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func documentsPerKind(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
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

    @Test(arguments: StoreBackend.allCases)
    func documentNamesAreOrderedByteWise(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            let names = ["b", "B", "_x", "a-1", "a", "A", "é", "z", "10", "9"]
            for name in names { try await store.putDocument(kind: .limitPolicy, name: name, json: "{}", updatedAt: 1) }
            let expected = names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            #expect(try await store.documents(kind: .limitPolicy).map(\.name) == expected)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func settings(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
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

    @Test(arguments: StoreBackend.allCases)
    func batchAppendKeepsOrderAndIsIdempotent(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            let before = try await store.appendAudit(auditEvent("b0"))
            // 150 events in one call while other tasks append single events: the batch's events are
            // stored in its order (others may come before or after, never in between on PostgreSQL).
            let ids = (1...150).map { "b\($0)" }
            async let others: [AuditAppendResult] = withThrowingTaskGroup(of: AuditAppendResult.self) { group in
                for n in 0..<20 { group.addTask { try await store.appendAudit(auditEvent("other-\(n)")) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let results = try await store.appendAudit(batch: ids.map { auditEvent($0) })
            _ = try await others
            #expect(results.count == ids.count && results.allSatisfy { !$0.duplicate && $0.sameContent })
            #expect(zip(results, results.dropFirst()).allSatisfy { $0.seq < $1.seq }, "seqs follow the batch's order")
            #expect(results.first!.seq > before.seq)
            let stored = try await store.auditEvents(after: before.seq, limit: 1000).map(\.event.id).filter { $0.hasPrefix("b") }
            #expect(stored == ids, "stored in the batch's order")
            if backend == .postgres {
                let span = try await store.auditEvents(after: results.first!.seq - 1, limit: 1000)
                    .filter { $0.seq <= results.last!.seq }.map(\.event.id)
                #expect(span == ids, "queued together: no other append in between")
            }

            // Again, with a duplicate inside and one changed: nothing stored twice.
            var again = [auditEvent("b1"), auditEvent("b151"), auditEvent("b151"), auditEvent("b2", actor: "mallory")]
            again[0].nodeID = "node-b"
            let repeated = try await store.appendAudit(batch: again)
            #expect(repeated[0] == AuditAppendResult(seq: results[0].seq, duplicate: true, sameContent: true))
            #expect(!repeated[1].duplicate && repeated[2] == AuditAppendResult(seq: repeated[1].seq, duplicate: true, sameContent: true))
            #expect(repeated[3] == AuditAppendResult(seq: results[1].seq, duplicate: true, sameContent: false))
            #expect(try await store.appendAudit(batch: []) == [])
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func auditAppendIsIdempotentByID(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            let first = try await store.appendAudit(auditEvent("e1"))
            #expect(first == AuditAppendResult(seq: first.seq, duplicate: false, sameContent: true))
            let second = try await store.appendAudit(auditEvent("e2"))
            #expect(second.seq > first.seq && !second.duplicate)

            // Same id, same content (recordedAt and node may differ: a retry through another node).
            var retry = auditEvent("e1", at: 1_749_945_600_099)
            retry.nodeID = "node-b"
            #expect(
                try await store.appendAudit(retry) == AuditAppendResult(seq: first.seq, duplicate: true, sameContent: true))
            // Same id, different content.
            #expect(
                try await store.appendAudit(auditEvent("e1", detail: #"{"x":1}"#))
                    == AuditAppendResult(seq: first.seq, duplicate: true, sameContent: false))
            #expect(
                try await store.appendAudit(auditEvent("e1", actor: "mallory"))
                    == AuditAppendResult(seq: first.seq, duplicate: true, sameContent: false))
            // Fields are compared one by one, not as a concatenation.
            var shifted = auditEvent("e1", actor: "admintoken.create")
            shifted.action = ""
            #expect(try await store.appendAudit(shifted).sameContent == false)

            let stored = try await store.auditEvents(after: 0, limit: 10)
            #expect(
                stored == [
                    AuditEvent(seq: first.seq, event: auditEvent("e1")), AuditEvent(seq: second.seq, event: auditEvent("e2")),
                ])
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func concurrentDuplicatesReportTheFirstSeq(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            let results = try await withThrowingTaskGroup(of: AuditAppendResult.self) { group in
                for n in 0..<50 {
                    // Every fifth submission has different content under the same id.
                    let event = n % 5 == 4 ? auditEvent("same", detail: #"{"n":\#(n)}"#) : auditEvent("same")
                    group.addTask { try await store.appendAudit(event) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { !$0.duplicate }.count == 1)
            #expect(Set(results.map(\.seq)).count == 1)
            let stored = try await store.auditEvents(after: 0, limit: 100)
            #expect(stored.count == 1)
            // Exactly the submissions whose content matches what was stored are `sameContent`.
            let storedDetail = stored.first?.event.detailJSON
            let expectedSame = (0..<50).filter { n in (n % 5 == 4 ? #"{"n":\#(n)}"# : "{}") == storedDetail }.count
            #expect(results.filter(\.sameContent).count == expectedSame)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func auditPaginationAndStrictlyIncreasingSeq(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            var seqs: [Int64] = []
            for n in 0..<25 { seqs.append(try await store.appendAudit(auditEvent("e\(n)")).seq) }
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

    @Test(arguments: StoreBackend.allCases)
    func auditOrderIsBySeqAcrossRecordingTimes(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            // Recorded in different months, out of time order: the log is in append order.
            let times: [Int64] = [1_749_945_600_000, 1_700_000_000_000, 1_760_000_000_000, 1_749_945_600_001]
            var seqs: [Int64] = []
            for (n, at) in times.enumerated() { seqs.append(try await store.appendAudit(auditEvent("t\(n)", at: at)).seq) }
            let stored = try await store.auditEvents(after: 0, limit: 10)
            #expect(stored.map(\.seq) == seqs)
            #expect(stored.map(\.event.recordedAt) == times)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func concurrentAppendsAreAllStoredWithUniqueSeqs(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            let count = 1_000
            let results = try await withThrowingTaskGroup(of: AppendedEvent.self) { group in
                for n in 0..<count {
                    group.addTask { AppendedEvent(id: "e\(n)", result: try await store.appendAudit(auditEvent("e\(n)"))) }
                }
                return try await group.reduce(into: [String: AuditAppendResult]()) { $0[$1.id] = $1.result }
            }
            #expect(results.count == count)
            #expect(Set(results.values.map(\.seq)).count == count)
            #expect(results.values.allSatisfy { !$0.duplicate && $0.sameContent })

            let stored = try await store.auditEvents(after: 0, limit: count + 10)
            #expect(stored.count == count)
            #expect(zip(stored, stored.dropFirst()).allSatisfy { $0.seq < $1.seq })
            #expect(stored.allSatisfy { results[$0.event.id]?.seq == $0.seq })
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func awkwardTextRoundTrips(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            let awkward = [
                "", "NULL", "null", #"quote " and backslash \ "#, #"{"a":[1,2,{"b":"c,d"}]}"#, "comma, brace } {",
                "tab\tnewline\nreturn\r", "ünïcødé ✓ 🧪", "\\x00ff", "'single'", "$1", "  spaces  ",
            ]
            var seqs: [Int64] = []
            for (n, text) in awkward.enumerated() {
                let event = AuditEventInput(
                    id: "id \(text) \(n)", actor: text, action: text, resource: text, outcome: text, detailJSON: text,
                    recordedAt: 1_749_945_600_000, nodeID: text)
                seqs.append(try await store.appendAudit(event).seq)
                #expect(try await store.appendAudit(event) == AuditAppendResult(seq: seqs[n], duplicate: true, sameContent: true))
                try await store.putDocument(kind: .breakerConfig, name: "doc \(n) \(text)", json: text, updatedAt: 1)
                try await store.setSetting("key \(n) \(text)", value: text)
                #expect(try await store.setting("key \(n) \(text)") == text)
            }
            let stored = try await store.auditEvents(after: 0, limit: 100)
            #expect(stored.map(\.event.actor) == awkward)
            #expect(stored.map(\.event.detailJSON) == awkward)
            #expect(stored.map(\.event.nodeID) == awkward)
            #expect(stored.map(\.event.id) == awkward.enumerated().map { "id \($1) \($0)" })
            #expect(Set(try await store.documents(kind: .breakerConfig).map(\.json)) == Set(awkward))

            var token = storeToken(1)
            token.subject = awkward[3]
            token.policy = awkward[7]
            try await store.insertToken(token)
            #expect(try await store.token(id: token.id) == token)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func reopeningKeepsEverything(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            var store = try await harness.open()
            try await store.insertToken(storeToken(1))
            _ = try await store.revokeToken(id: "tok_1", at: 7)
            try await store.putDocument(kind: .limitPolicy, name: "p", json: "{}", updatedAt: 1)
            try await store.setSetting("k", value: "v")
            let a = try await store.appendAudit(auditEvent("a"))
            try await store.close()

            store = try await harness.open()
            #expect(try await store.token(id: "tok_1")?.revokedAt == 7)
            #expect(try await store.documents(kind: .limitPolicy).map(\.name) == ["p"])
            #expect(try await store.setting("k") == "v")
            #expect(try await store.auditEvents(after: 0, limit: 10) == [AuditEvent(seq: a.seq, event: auditEvent("a"))])
            #expect(try await store.appendAudit(auditEvent("a")).duplicate)
            let b = try await store.appendAudit(auditEvent("b"))
            #expect(b.seq > a.seq)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func callsAfterCloseFailWithClosed(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            try await store.close()
            try await store.close()  // idempotent
            await expectStoreError(.closed) { try await store.insertToken(storeToken(1)) }
            await expectStoreError(.closed) { _ = try await store.token(id: "tok_1") }
            await expectStoreError(.closed) { _ = try await store.token(secretHash: [1]) }
            await expectStoreError(.closed) { _ = try await store.tokens() }
            await expectStoreError(.closed) { _ = try await store.revokeToken(id: "tok_1", at: 1) }
            await expectStoreError(.closed) {
                try await store.putDocument(kind: .limitPolicy, name: "n", json: "{}", updatedAt: 1)
            }
            await expectStoreError(.closed) { _ = try await store.documents(kind: .limitPolicy) }
            await expectStoreError(.closed) { _ = try await store.deleteDocument(kind: .limitPolicy, name: "n") }
            await expectStoreError(.closed) { _ = try await store.setting("k") }
            await expectStoreError(.closed) { try await store.setSetting("k", value: "v") }
            await expectStoreError(.closed) { _ = try await store.appendAudit(auditEvent("e")) }
            await expectStoreError(.closed) { _ = try await store.auditEvents(after: 0, limit: 10) }
            await expectStoreError(.closed) { _ = try await store.auditEvents(after: 0, limit: 0) }
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func closeFlushesQueuedAppends(_ backend: StoreBackend) async throws {
        try await StoreHarness.with(backend) { harness in
            let store = try await harness.open()
            // Appends racing with close either commit (and are then found after reopening) or fail
            // with `.closed`; none is lost after being acknowledged.
            let acknowledged = try await withThrowingTaskGroup(of: String?.self) { group in
                for n in 0..<200 {
                    group.addTask {
                        do {
                            _ = try await store.appendAudit(auditEvent("c\(n)"))
                            return "c\(n)"
                        } catch let error as StoreError where error.code == .closed {
                            return nil
                        }
                    }
                }
                group.addTask {
                    try await store.close()
                    return nil
                }
                return try await group.reduce(into: Set<String>()) { if let id = $1 { $0.insert(id) } }
            }
            let reopened = try await harness.open()
            let stored = Set(try await reopened.auditEvents(after: 0, limit: 1_000).map(\.event.id))
            #expect(acknowledged.isSubset(of: stored), "lost: \(acknowledged.subtracting(stored).sorted())")
            try await reopened.close()
        }
    }
}

/// An append's id and result (a plain struct: task groups return it).
struct AppendedEvent: Sendable {
    var id: String
    var result: AuditAppendResult
}
