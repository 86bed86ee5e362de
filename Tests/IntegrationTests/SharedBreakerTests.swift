import Coordinator
import CoordinatorCore
import Foundation
import Logging
import RedisClient
import Testing

/// Shared breakers against real Redis.
@Suite("Shared breakers (real Redis)", .serialized)
struct SharedBreakerTests {
    @Test("one node's trip opens the breaker on every node; an operator close closes it everywhere; a restarted node comes up open")
    func tripPropagates() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let directoryB = NSTemporaryDirectory() + "coordinator-sb-b-\(UUID().uuidString)"
        let a = try await ClusterTestSupport.node(cluster: cluster, nodeID: "a")
        let b = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b", directory: directoryB)
        let services = ClusterTestSupport.runServices([a, b])
        defer { services.cancel() }

        var config = BreakerConfig.default
        config.window = .init(type: .count, size: 4)
        config.minimumCalls = 4
        config.openWaitMs = 60_000
        _ = try await a.configureBreaker(name: "payments", config: config)
        #expect(try await ClusterTestSupport.eventually { await b.breakerStatus("payments")?.snapshot.config.minimumCalls == 4 })

        for outcome in [CallOutcome.success, .success, .failure, .failure] {
            let permit = try await a.acquire(breaker: "payments")
            _ = try await a.record(breaker: "payments", permitID: permit.permitID!, outcome: outcome, durationMilliseconds: 1)
        }
        #expect(await a.breakerStatus("payments")?.snapshot.state == .open)
        let started = ContinuousClock.now
        #expect(try await ClusterTestSupport.eventually { await b.breakerStatus("payments")?.snapshot.state == .open })
        let propagation = ContinuousClock.now - started
        #expect(propagation < .seconds(2), "trip reached b after \(propagation)")
        let refused = try await b.acquire(breaker: "payments")
        #expect(!refused.permitted)
        #expect((refused.retryAfter ?? .zero) > .seconds(50), "b waits the cluster's open wait, not its own")

        // A node restarted while the breaker is open comes up open.
        services.cancel()
        await b.shutdown()
        let b2 = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b", directory: directoryB)
        #expect(await b2.breakerStatus("payments")?.snapshot.state == .open)

        // An operator command on any node applies to the whole cluster.
        let services2 = ClusterTestSupport.runServices([a, b2])
        defer { services2.cancel() }
        _ = try await b2.setBreakerState(name: "payments", state: .closed)
        #expect(try await ClusterTestSupport.eventually { await a.breakerStatus("payments")?.snapshot.state == .closed })
        #expect(try await a.acquire(breaker: "payments").permitted)
        services2.cancel()
        await a.shutdown()
        await b2.shutdown()
    }

    @Test("half-open: exactly the configured number of probes run cluster-wide, and their verdict closes every node")
    func probesAcrossNodes() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        var nodes: [CoordinatorNode] = []
        for id in ["a", "b", "c"] { nodes.append(try await ClusterTestSupport.node(cluster: cluster, nodeID: id)) }
        let services = ClusterTestSupport.runServices(nodes)
        defer { services.cancel() }
        var config = BreakerConfig.default
        config.window = .init(type: .count, size: 4)
        config.minimumCalls = 4
        config.openWaitMs = 300
        config.halfOpenPermittedCalls = 3
        _ = try await nodes[0].configureBreaker(name: "upstream", config: config)
        for node in nodes.dropFirst() {
            #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("upstream")?.snapshot.config.halfOpenPermittedCalls == 3 })
        }
        for outcome in [CallOutcome.failure, .failure, .failure, .success] {
            let permit = try await nodes[0].acquire(breaker: "upstream")
            _ = try await nodes[0].record(breaker: "upstream", permitID: permit.permitID!, outcome: outcome, durationMilliseconds: 1)
        }
        for node in nodes {
            #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("upstream")?.snapshot.state == .open })
        }
        try await Task.sleep(for: .milliseconds(400))  // the cluster's open wait (Redis time) passes

        var probes: [(CoordinatorNode, String)] = []
        for attempt in 0..<15 {
            let node = nodes[attempt % 3]
            let result = try await node.acquire(breaker: "upstream")
            if result.permitted { probes.append((node, result.permitID!)) }
        }
        #expect(probes.count == 3, "probes granted cluster-wide: \(probes.count)")
        for (node, permit) in probes {
            _ = try await node.record(breaker: "upstream", permitID: permit, outcome: .success, durationMilliseconds: 1)
        }
        for node in nodes {
            #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("upstream")?.snapshot.state == .closed })
        }
        services.cancel()
        for node in nodes { await node.shutdown() }
    }

    @Test("quorum(2): a single sick node opens alone; a second node's trip opens the cluster")
    func quorum() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        var nodes: [CoordinatorNode] = []
        for id in ["a", "b", "c"] { nodes.append(try await ClusterTestSupport.node(cluster: cluster, nodeID: id, sharing: .quorum(2))) }
        let services = ClusterTestSupport.runServices(nodes)
        defer { services.cancel() }
        var config = BreakerConfig.default
        config.window = .init(type: .count, size: 4)
        config.minimumCalls = 4
        _ = try await nodes[0].configureBreaker(name: "db", config: config)
        for node in nodes.dropFirst() {
            #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("db")?.snapshot.config.minimumCalls == 4 })
        }
        func trip(_ node: CoordinatorNode) async throws {
            for outcome in [CallOutcome.failure, .failure, .failure, .failure] {
                let permit = try await node.acquire(breaker: "db")
                _ = try await node.record(breaker: "db", permitID: permit.permitID!, outcome: outcome, durationMilliseconds: 1)
            }
        }
        try await trip(nodes[0])
        #expect(await nodes[0].breakerStatus("db")?.snapshot.state == .open)
        // Give a wrong implementation time to spread the trip; the other nodes must stay closed.
        try await Task.sleep(for: .milliseconds(500))
        #expect(await nodes[1].breakerStatus("db")?.snapshot.state == .closed)
        #expect(await nodes[2].breakerStatus("db")?.snapshot.state == .closed)
        #expect(try await nodes[2].acquire(breaker: "db").permitted)

        try await trip(nodes[1])
        #expect(try await ClusterTestSupport.eventually { await nodes[2].breakerStatus("db")?.snapshot.state == .open }, "two distinct nodes tripped: the cluster opens")
        services.cancel()
        for node in nodes { await node.shutdown() }
    }

    @Test("a transition whose bus message was lost reaches every node at the next reconciliation")
    func lostMessageHeals() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let node = try await ClusterTestSupport.node(cluster: cluster, nodeID: "a")
        let services = ClusterTestSupport.runServices([node])
        defer { services.cancel() }
        _ = try await node.acquire(breaker: "search")
        // Another node's transition whose announcement never arrives: the record is written in Redis,
        // the message published is garbage (and dropped).
        let redis = try await RedisConnection.connect(url: try TestEnvironment.redisURL)
        let keys = ClusterKeys(cluster: cluster)
        let reply = try await redis.send([
            "EVAL", ClusterScripts.breakerTransition, "1", keys.breakerState("search"),
            "0", "open", "60000", "failure_rate", "node-z", keys.busChannel, "lost", "1",
        ])
        #expect(reply.array?.first == .integer(1))
        let started = ContinuousClock.now
        #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("search")?.snapshot.state == .open })
        #expect(ContinuousClock.now - started < .seconds(2), "healed within the reconciliation interval (200 ms here)")
        await redis.close()
        services.cancel()
        await node.shutdown()
    }

    @Test("aggregate: no node trips alone, the cluster-wide failure rate opens every node")
    func aggregate() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        var nodes: [CoordinatorNode] = []
        for id in ["a", "b", "c"] { nodes.append(try await ClusterTestSupport.node(cluster: cluster, nodeID: id, sharing: .aggregate)) }
        let services = ClusterTestSupport.runServices(nodes)
        defer { services.cancel() }
        var config = BreakerConfig.default
        config.window = .init(type: .count, size: 10)
        config.minimumCalls = 6
        _ = try await nodes[0].configureBreaker(name: "agg", config: config)
        for node in nodes.dropFirst() {
            #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("agg")?.snapshot.config.minimumCalls == 6 })
        }
        // Two nodes: 4 calls cluster-wide, below the minimum of 6 — nothing opens.
        for node in nodes.prefix(2) {
            for outcome in [CallOutcome.failure, .success] {
                let permit = try await node.acquire(breaker: "agg")
                _ = try await node.record(breaker: "agg", permitID: permit.permitID!, outcome: outcome, durationMilliseconds: 1)
            }
        }
        try await Task.sleep(for: .milliseconds(400))
        for node in nodes { #expect(await node.breakerStatus("agg")?.snapshot.state == .closed) }
        // The third node's calls make 6 cluster-wide at 50 % failures: every node opens.
        for outcome in [CallOutcome.failure, .success] {
            let permit = try await nodes[2].acquire(breaker: "agg")
            _ = try await nodes[2].record(breaker: "agg", permitID: permit.permitID!, outcome: outcome, durationMilliseconds: 1)
        }
        for node in nodes {
            #expect(try await ClusterTestSupport.eventually { await node.breakerStatus("agg")?.snapshot.state == .open })
        }
        services.cancel()
        for node in nodes { await node.shutdown() }
    }

    @Test("sharing is per breaker: a breaker configured local trips alone while the node default is any")
    func perBreakerSharing() async throws {
        let cluster = TestEnvironment.uniqueName("c")
        let a = try await ClusterTestSupport.node(cluster: cluster, nodeID: "a")
        let b = try await ClusterTestSupport.node(cluster: cluster, nodeID: "b")
        let services = ClusterTestSupport.runServices([a, b])
        defer { services.cancel() }
        var config = BreakerConfig.default
        config.window = .init(type: .count, size: 2)
        config.minimumCalls = 2
        config.sharing = .local
        _ = try await a.configureBreaker(name: "own", config: config)
        #expect(try await ClusterTestSupport.eventually { await b.breakerStatus("own")?.snapshot.config.sharing == .local })
        #expect(await b.breakerStatus("own")?.sharing == "local")
        for _ in 0..<2 {
            let permit = try await a.acquire(breaker: "own")
            _ = try await a.record(breaker: "own", permitID: permit.permitID!, outcome: .failure, durationMilliseconds: 1)
        }
        #expect(await a.breakerStatus("own")?.snapshot.state == .open)
        try await Task.sleep(for: .milliseconds(400))
        #expect(await b.breakerStatus("own")?.snapshot.state == .closed)
        services.cancel()
        await a.shutdown()
        await b.shutdown()
    }
}
