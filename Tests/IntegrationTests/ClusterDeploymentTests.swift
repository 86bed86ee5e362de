import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The short version of the `cluster/` promise: `cluster/up` brings 3 nodes, a primary with 2
/// streaming replicas and Redis up, `cluster/status` sees them healthy, `coordinator load` pushes
/// mixed load through every node with no unexpected answer and no acknowledged audit event lost, a
/// fault verb works, and `cluster/down` leaves no process and no directory behind.
@Suite("cluster/ scripts and coordinator load (a real 3-node deployment)", .serialized)
struct ClusterDeploymentTests {
    struct CommandResult: Sendable {
        var status: Int32
        var output: String
    }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// Runs a command (stdout and stderr together) on a thread of its own, killed after `timeout`.
    /// `posix_spawn` + `waitpid` rather than `Process`: the scripts leave daemons behind, and the child
    /// must start with a clean signal mask (a thread of the test process may block SIGTERM).
    static func run(_ arguments: [String], timeout: Double = 180) async throws -> CommandResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try spawnAndWait(arguments, timeout: timeout) })
            }
        }
    }

    static func spawnAndWait(_ arguments: [String], timeout: Double) throws -> CommandResult {
        let output = NSTemporaryDirectory() + "coordinator-cmd-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: output) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw ClusterTestFailure("cannot run \(arguments[0]): errno \(spawned)") }
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(timeout)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                break
            }
            usleep(20_000)
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0
        return CommandResult(status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output: text)
    }

    /// Processes whose command line mentions `path`.
    static func processes(mentioning path: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid -> String? in
            guard Int(pid) != nil, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let line = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return line.contains(path) ? "\(pid): \(line)" : nil
        }
    }

    @Test("cluster/up → status → coordinator load through every node → fault → cluster/down, nothing left behind")
    func upLoadDown() async throws {
        let directory = NSTemporaryDirectory() + "coordinator-deploy-\(UUID().uuidString.prefix(8))"
        let binary = ServerChild.binary()
        let up = try await Self.run([Self.repository + "/cluster/up", "--nodes", "3", "--replicas", "2", "--dir", directory, "--bin", binary])
        var downDone = false
        defer {
            if !downDone { Thread.detachNewThread { _ = try? Self.spawnAndWait([Self.repository + "/cluster/down", "--dir", directory], timeout: 120) } }
        }
        try #require(up.status == 0, "cluster/up failed:\n\(up.output)")

        let status = try await Self.run([Self.repository + "/cluster/status", "--dir", directory])
        #expect(status.status == 0, "cluster/status:\n\(status.output)")
        #expect(status.output.contains("primary") && status.output.contains("replica"), "\(status.output)")

        let described = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/cluster.json"))) as? [String: Any]
        let nodes = try #require(described?["nodes"] as? [[String: Any]]).compactMap { $0["url"] as? String }
        let admin = try #require(described?["adminToken"] as? String)
        #expect(nodes.count == 3)

        // Mixed load through every node; the upstream fails for a while (the shared breaker opens and
        // recovers). Zero unexpected answers, or the command exits 1.
        let acks = directory + "-acks.json"
        defer { try? FileManager.default.removeItem(atPath: acks) }
        let load = try await Self.run([
            binary, "load", "--nodes", nodes.joined(separator: ","), "--admin-token", admin, "--duration", "8",
            "--connections", "12", "--failure-schedule", "2:0.9,5:0", "--output", acks, "--progress-ms", "0",
        ])
        #expect(load.status == 0, "coordinator load:\n\(load.output)")
        let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: acks))) as? [String: Any]
        let entries = try #require(document?["acks"] as? [[String: Any]])
        #expect(entries.count > 100, "only \(entries.count) requests in 8 s")
        #expect(Set(entries.compactMap { $0["node"] as? Int }) == [0, 1, 2], "load reached every node")
        let acknowledgedAudit = Set(entries.filter { $0["op"] as? String == "audit" && ($0["status"] as? Int).map { [200, 201, 202].contains($0) } == true }
            .compactMap { $0["subject"] as? String })
        #expect(!acknowledgedAudit.isEmpty)
        #expect(entries.contains { $0["op"] as? String == "breakers" && $0["status"] as? Int == 503 }, "the breaker opened while the upstream failed")

        // Loss check: every acknowledged audit event is in the store (read through another node).
        var stored = Set<String>()
        var after = 0
        while true {
            var request = URLRequest(url: URL(string: nodes[1] + "/v1/audit?after=\(after)&limit=1000")!)
            request.setValue("Bearer \(admin)", forHTTPHeaderField: "Authorization")
            let (data, _) = try await URLSession.shared.data(for: request)
            let page = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            let events = page?["events"] as? [[String: Any]] ?? []
            if events.isEmpty { break }
            for event in events { if let id = event["id"] as? String { stored.insert(id) } }
            after = (page?["next"] as? Int) ?? after
        }
        #expect(acknowledgedAudit.subtracting(stored).isEmpty, "lost: \(acknowledgedAudit.subtracting(stored).count)")

        // A fault verb: kill a node; status reports it down; start it again.
        let killed = try await Self.run([Self.repository + "/cluster/fault", "kill-node", "2", "--dir", directory])
        #expect(killed.status == 0, "\(killed.output)")
        #expect(killed.output.contains("kill-node"))
        let degraded = try await Self.run([Self.repository + "/cluster/status", "--dir", directory])
        #expect(degraded.status != 0, "status must fail while a node is down:\n\(degraded.output)")
        let started = try await Self.run([Self.repository + "/cluster/fault", "start-node", "2", "--dir", directory])
        #expect(started.status == 0, "\(started.output)")

        // Network namespace verbs: refused before the node has its namespace, or for a node that
        // does not exist; then node-3 moves into its own namespace, is cut off and healed.
        let early = try await Self.run([Self.repository + "/cluster/fault", "partition-node", "3", "--dir", directory])
        #expect(early.status != 0 && early.output.contains("not in its own network namespace"), "\(early.output)")
        let unknown = try await Self.run([Self.repository + "/cluster/fault", "netns-node", "9", "--dir", directory])
        #expect(unknown.status != 0 && unknown.output.contains("node must be 1..3"), "\(unknown.output)")
        let moved = try await Self.run([Self.repository + "/cluster/fault", "netns-node", "3", "--dir", directory])
        #expect(moved.status == 0 && moved.output.contains("ready after"), "\(moved.output)")
        let movedInfo = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/cluster.json"))) as? [String: Any]
        let node3 = try #require((movedInfo?["nodes"] as? [[String: Any]])?.last?["url"] as? String)
        #expect(node3.hasPrefix("http://10.254."), "node-3 listens in its namespace: \(node3)")
        let cut = try await Self.run([Self.repository + "/cluster/fault", "partition-node", "3", "--dir", directory])
        #expect(cut.status == 0 && cut.output.contains("DROP"), "\(cut.output)")
        var sawDegraded = false
        for _ in 0..<50 where !sawDegraded {
            let view = try await Self.run([Self.repository + "/cluster/status", "--dir", directory, "--json"])
            let report = try? JSONSerialization.jsonObject(with: Data(view.output.utf8)) as? [String: Any]
            let degraded = ((report?["nodes"] as? [[String: Any]])?.last?["degraded"] as? [Any]) ?? []
            sawDegraded = !degraded.isEmpty
            if !sawDegraded { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(sawDegraded, "node-3 cut off Redis and PostgreSQL runs degraded")
        let healed = try await Self.run([Self.repository + "/cluster/fault", "heal-node", "3", "--dir", directory])
        #expect(healed.status == 0, "\(healed.output)")
        let clusterName = try #require(movedInfo?["name"] as? String)

        let down = try await Self.run([Self.repository + "/cluster/down", "--dir", directory])
        downDone = true
        #expect(down.status == 0, "\(down.output)")
        #expect(!FileManager.default.fileExists(atPath: directory))
        #expect(Self.processes(mentioning: directory).isEmpty, "\(Self.processes(mentioning: directory))")
        let again = try await Self.run([Self.repository + "/cluster/down", "--dir", directory])
        #expect(again.status == 0, "down is idempotent: \(again.output)")
        let namespaces = try await Self.run(["/usr/sbin/ip", "netns", "list"])
        #expect(!namespaces.output.contains("coordinator-\(clusterName)-"), "namespace left behind: \(namespaces.output)")
        let rules = try await Self.run(["/usr/sbin/iptables", "-w", "-t", "nat", "-S"])
        #expect(rules.status == 0 && !rules.output.contains("coordinator-\(clusterName)-"), "NAT rules left behind: \(rules.output)")
    }
}
