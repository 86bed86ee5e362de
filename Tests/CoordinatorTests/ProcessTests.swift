import Coordinator
import Foundation
import Synchronization
import Testing

@Suite("Processes", .serialized)
struct ProcessTests {
    @Test("acknowledged audit writes survive kill -9 of the node")
    func killNineDurability() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = ServerProcess(dataDirectory: directory)
        try server.start(extraEnvironment: ["COORDINATOR_ADMIN_TOKEN": "durability-admin-token"])
        let base = server.baseURL

        let acknowledged = LockedBox<[String]>([])
        let stop = LockedBox<Bool>(false)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var index = 0
                    while !stop.withLock({ $0 }) {
                        index += 1
                        let id = "w\(worker)-\(index)"
                        let body = "{\"id\":\"\(id)\",\"actor\":\"test\",\"action\":\"write\",\"resource\":\"r\",\"outcome\":\"ok\",\"detail\":{\"n\":\(index)}}"
                        do {
                            let (status, _) = try await httpRequest("POST", base + "/v1/audit", body: body, timeout: 5)
                            if status == 201 { acknowledged.withLock { $0.append(id) } }
                        } catch {
                            return  // the server is gone
                        }
                    }
                }
            }
            group.addTask {
                // Kill while writes are in flight, once a good number were acknowledged.
                let deadline = Date().addingTimeInterval(30)
                while acknowledged.withLock({ $0.count }) < 300, Date() < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                server.kill9()
                stop.withLock { $0 = true }
            }
            try await group.waitForAll()
        }
        let acked = acknowledged.withLock { $0 }
        #expect(acked.count >= 300)

        let store = try await SQLiteStore.open(path: directory + "/coordinator.sqlite")
        var stored = Set<String>()
        var after: Int64 = 0
        while true {
            let page = try await store.auditEvents(after: after, limit: 1000)
            guard let last = page.last else { break }
            for event in page { stored.insert(event.event.id) }
            after = last.seq
        }
        try await store.close()
        let lost = acked.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "acknowledged but lost after kill -9: \(lost.prefix(10))")
    }

    @Test("SIGTERM drains and exits 0; the data is intact on restart")
    func gracefulShutdown() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = ServerProcess(dataDirectory: directory)
        try server.start()
        #expect(server.firstOutput.contains("Admin token (shown once, stored hashed): adm_"))
        let (status, _) = try await httpRequest("POST", server.baseURL + "/v1/audit", body: #"{"id":"e-1","actor":"a","action":"b","resource":"c","outcome":"d"}"#)
        #expect(status == 201)
        server.process.terminate()
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0)
        #expect(server.process.terminationReason == .exit)

        let again = ServerProcess(dataDirectory: directory)
        try again.start()
        #expect(!again.firstOutput.contains("Admin token"))
        let (replay, body) = try await httpRequest("POST", again.baseURL + "/v1/audit", body: #"{"id":"e-1","actor":"a","action":"b","resource":"c","outcome":"d"}"#)
        #expect(replay == 200 && body.contains("\"duplicate\":true"))
        again.terminate()
    }

    @Test("bad configuration and flags exit non-zero with a message naming the problem")
    func badInput() throws {
        let path = NSTemporaryDirectory() + "bad-\(UUID().uuidString).json"
        try #"{"server":{"port":"eighty"}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let badFile = try runCoordinator(["serve", "--config", path])
        #expect(badFile.status != 0)
        #expect(badFile.stderr.contains("server.port"), "\(badFile.stderr)")

        let badEnvironment = try runCoordinator(["serve"], environment: ["COORDINATOR_SQLITE_SYNCHRONOUS": "sometimes"])
        #expect(badEnvironment.status != 0)
        #expect(badEnvironment.stderr.contains("COORDINATOR_SQLITE_SYNCHRONOUS"), "\(badEnvironment.stderr)")

        let badPort = try runCoordinator(["serve", "--port", "99999"])
        #expect(badPort.status != 0)
        #expect(badPort.stderr.contains("--port"), "\(badPort.stderr)")

        let noSecret = try runCoordinator(["serve", "--redis-url", "redis://127.0.0.1:1/0"])
        #expect(noSecret.status != 0)
        #expect(noSecret.stderr.contains("clusterSecret"), "\(noSecret.stderr)")

        let unknownFlag = try runCoordinator(["serve", "--prot", "1"])
        #expect(unknownFlag.status != 0)

        let missingSubject = try runCoordinator(["token", "create"])
        #expect(missingSubject.status != 0)
        #expect(missingSubject.stderr.contains("--subject"), "\(missingSubject.stderr)")

        // coordinator load and coordinator proxy refuse bad flags before doing anything.
        for (arguments, needle) in [
            (["load", "--nodes", "not-a-url"], "--nodes"),
            (["load", "--nodes", "http://127.0.0.1:1", "--mix", "admit=x"], "--mix"),
            (["load", "--nodes", "http://127.0.0.1:1", "--failure-schedule", "5:2"], "--failure-schedule"),
            (["load", "--nodes", "http://127.0.0.1:1", "--connections", "0"], "--connections"),
            (["proxy"], "--route"),
            (["proxy", "--route", "redis=127.0.0.1:1"], "--route"),
            (["proxy", "--route", "a=127.0.0.1:0=127.0.0.1:1", "--route", "a=127.0.0.1:0=127.0.0.1:2"], "twice"),
            (["proxy", "--route", "a=127.0.0.1:0=127.0.0.1:1", "--control", "nowhere"], "--control"),
        ] {
            let refused = try runCoordinator(arguments)
            #expect(refused.status != 0, "\(arguments)")
            #expect(refused.stderr.contains(needle), "\(arguments): \(refused.stderr)")
        }
        // Setup needs the admin token, and a node that does not answer is named.
        let noAdmin = try runCoordinator(["load", "--nodes", "http://127.0.0.1:1", "--duration", "1"])
        #expect(noAdmin.status != 0 && noAdmin.stderr.contains("admin token"), "\(noAdmin.stderr)")
        let deadNode = try runCoordinator(["load", "--nodes", "http://127.0.0.1:1", "--duration", "1", "--admin-token", "x"])
        #expect(deadNode.status != 0 && deadNode.stderr.contains("127.0.0.1:1"), "\(deadNode.stderr)")

        let version = try runCoordinator(["version"])
        #expect(version.status == 0 && version.stdout.contains(CoordinatorVersion.string))
    }

    @Test("token create, list and revoke from the command line")
    func tokenCommands() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let created = try runCoordinator(["token", "create", "--subject", "agent-7", "--ttl-seconds", "3600", "--data-dir", directory])
        #expect(created.status == 0, "\(created.stderr)")
        let id = try #require(created.stdout.split(separator: "\n").first { $0.hasPrefix("id:") }?.split(separator: " ").last.map(String.init))
        #expect(created.stdout.contains("secret:  ic_"))
        let list = try runCoordinator(["token", "list", "--data-dir", directory])
        #expect(list.stdout.contains(id) && list.stdout.contains("active") && !list.stdout.contains("ic_"))
        let revoke = try runCoordinator(["token", "revoke", id, "--data-dir", directory])
        #expect(revoke.status == 0 && revoke.stdout.contains("revoked \(id)"))
        #expect(try runCoordinator(["token", "list", "--data-dir", directory]).stdout.contains("revoked"))
        let unknown = try runCoordinator(["token", "revoke", "tok_nope", "--data-dir", directory])
        #expect(unknown.status != 0 && unknown.stderr.contains("tok_nope"))
        let badPolicy = try runCoordinator(["token", "create", "--subject", "x", "--policy", "ghost", "--data-dir", directory])
        #expect(badPolicy.status != 0 && badPolicy.stderr.contains("ghost"))
    }

    @Test("README's curl walk-through runs against a real node")
    func readmeWalkthrough() async throws {
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        guard let start = readme.range(of: "<!-- walkthrough:start -->"), let end = readme.range(of: "<!-- walkthrough:end -->") else {
            Issue.record("README has no walk-through markers")
            return
        }
        var script = "set -euo pipefail\n"
        var inBlock = false
        for line in readme[start.upperBound..<end.lowerBound].split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```sh") { inBlock = true; continue }
            if line.hasPrefix("```") { inBlock = false; continue }
            if inBlock { script += line + "\n" }
        }
        #expect(script.contains("curl"))

        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = ServerProcess(dataDirectory: directory)
        try server.start(extraEnvironment: ["COORDINATOR_ADMIN_TOKEN": "walkthrough-admin-token"])
        defer { server.terminate() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        var env = ProcessInfo.processInfo.environment
        env["BASE"] = server.baseURL
        env["ADMIN"] = "walkthrough-admin-token"
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "walk-through failed:\n\(output)")
    }
}

/// A value behind a lock, shareable between tasks.
final class LockedBox<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<T: Sendable>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&$0) } }
}
