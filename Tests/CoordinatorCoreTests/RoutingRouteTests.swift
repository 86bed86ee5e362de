import CoordinatorCore
import Testing

@Suite("Routing: route decisions")
struct RoutingRouteTests {
    /// Steady topology, then a round at 510: A at 0x3000; B replayed 0x2000 (112 ms behind); C at 0x1000.
    func busy() -> ReplicaTopology {
        var topology = steadyTopology()
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x3000, nowMs: 510), at: at(510))
        _ = topology.probeSucceeded(
            hostB, observation: replicaObservation(replay: 0x2000, receive: 0x2800, lastReplayMs: 400, nowMs: 512), at: at(512))
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 512), at: at(512))
        return topology
    }

    @Test("writes and primary reads go to the primary")
    func writes() throws {
        var topology = busy()
        #expect(try topology.route(.write, now: at(600)) == RouteDecision(host: hostA, role: .primary, reason: .write))
        #expect(try topology.route(.read(.primary), now: at(600)) == RouteDecision(host: hostA, role: .primary, reason: .primaryRequested))
        #expect(topology.counters.writesRouted == 1)
        #expect(topology.counters.readsToPrimary == 1)
    }

    @Test("fresh reads: a replica within both bounds, else the primary")
    func fresh() throws {
        var topology = busy()
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x1000, maxLagSeconds: 0.112)), now: at(600)).host == hostB)
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x1000, maxLagSeconds: 0.111)), now: at(600)).host == hostA)
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0xFFF, maxLagSeconds: nil)), now: at(600))
            == RouteDecision(host: hostA, role: .primary, reason: .fallbackToPrimary))
        // C is within these bounds too; B and C tie on outstanding requests: URL order picks B.
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x2000, maxLagSeconds: 1)), now: at(600)).host == hostB)
        #expect(topology.eligibleReplicas(for: .fresh(maxLagBytes: 0x2000, maxLagSeconds: 1), now: at(600)) == [hostB, hostC])
        #expect(topology.eligibleReplicas(for: .fresh(maxLagBytes: nil, maxLagSeconds: 0.2), now: at(600)) == [hostB])
        #expect(topology.eligibleReplicas(for: .primary, now: at(600)).isEmpty)
        #expect(topology.counters.readsToReplica == 2)
        #expect(topology.counters.readFallbacks == 2)
    }

    @Test("read-your-writes: a replica that replayed the LSN, else the primary")
    func readYourWrites() throws {
        var topology = busy()
        #expect(try topology.route(.read(.readYourWrites(lsn(0x2000))), now: at(600)).host == hostB)  // equal is enough
        #expect(try topology.route(.read(.readYourWrites(lsn(0x2001))), now: at(600))
            == RouteDecision(host: hostA, role: .primary, reason: .fallbackToPrimary))
        #expect(try topology.route(.read(.readYourWrites(lsn(0x1000))), now: at(600)).host == hostB)
        topology.requestStarted(hostB)
        #expect(try topology.route(.read(.readYourWrites(lsn(0x1000))), now: at(600)).host == hostC)
        // Beyond the primary itself (e.g. an LSN from another timeline): still the primary.
        #expect(try topology.route(.read(.readYourWrites(lsn(0xFFFF))), now: at(600)).host == hostA)
        #expect(topology.eligibleReplicas(for: .readYourWrites(.zero), now: at(600)) == [hostB, hostC])
    }

    @Test("least outstanding requests wins; ties keep URL order; counts never go negative")
    func leastOutstanding() throws {
        var topology = steadyTopology()
        let anyReplica = RouteRequest.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil))
        #expect(try topology.route(anyReplica, now: at(20)).host == hostB)
        topology.requestStarted(hostB)
        #expect(try topology.route(anyReplica, now: at(20)).host == hostC)
        topology.requestStarted(hostC)
        topology.requestStarted(hostC)
        #expect(try topology.route(anyReplica, now: at(20)).host == hostB)
        topology.requestStarted(hostB)
        #expect(topology.outstandingRequests(on: hostB) == 2)
        #expect(try topology.route(anyReplica, now: at(20)).host == hostB)  // 2 vs 2: URL order
        topology.requestFinished(hostC)
        #expect(try topology.route(anyReplica, now: at(20)).host == hostC)
        for _ in 0..<5 { topology.requestFinished(hostC) }
        #expect(topology.outstandingRequests(on: hostC) == 0)
        // The primary's own load does not matter for replica choice.
        topology.requestStarted(hostA)
        #expect(topology.outstandingRequests(on: hostA) == 1)
        #expect(try topology.route(anyReplica, now: at(20)).host == hostC)
        #expect(topology.snapshot(now: at(20)).hosts.map(\.outstandingRequests) == [1, 2, 0])
    }

    @Test("observations older than the staleness bound are not used for reads")
    func staleness() throws {
        var topology = steadyTopology()  // observed at 10; staleAfter = 1 500 ms
        let anyReplica = RouteRequest.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil))
        #expect(try topology.route(anyReplica, now: at(1_510)).host == hostB)
        #expect(try topology.route(anyReplica, now: at(1_511)) == RouteDecision(host: hostA, role: .primary, reason: .fallbackToPrimary))
        #expect(try topology.route(.read(.readYourWrites(.zero)), now: at(1_511)).host == hostA)
        // The primary still takes writes: its failure is noticed by probes, not by age.
        #expect(try topology.route(.write, now: at(9_000)).host == hostA)
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, nowMs: 1_600), at: at(1_600))
        #expect(try topology.route(anyReplica, now: at(1_700)).host == hostC)

        var custom = steadyTopology(configuration: TopologyConfiguration(staleAfter: .milliseconds(100)))
        #expect(try custom.route(anyReplica, now: at(110)).host == hostB)
        #expect(try custom.route(anyReplica, now: at(111)).host == hostA)
    }

    @Test("a replica on an older timeline than the primary is not eligible")
    func olderTimeline() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB, hostC])
        _ = topology.tick(now: at(0))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000, timeline: 2), at: at(10))
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000, timeline: 1), at: at(10))
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, timeline: 2), at: at(10))
        #expect(topology.eligibleReplicas(for: .readYourWrites(.zero), now: at(20)) == [hostC])
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(20)).host == hostC)
        #expect(topology.snapshot(now: at(20)).hosts.map(\.timeline) == [2, 1, 2])

        // A replica whose WAL receiver is not streaming (timeline unknown — e.g. diverged after a
        // failover and waiting) is not eligible either, whatever its LSN says.
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x2000, timeline: nil), at: at(30))
        #expect(topology.eligibleReplicas(for: .readYourWrites(.zero), now: at(40)).isEmpty)
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(40)).host == hostA)
    }

    @Test("no primary: reads still use replicas, writes and primary reads fail with no-primary")
    func noPrimary() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB])
        _ = topology.tick(now: at(0))
        let before = #expect(throws: RoutingError.self) { try topology.route(.write, now: at(5)) }
        #expect(before?.code == .noPrimary)
        #expect(before?.isRetryable == true)
        #expect(before?.retryAfter == .milliseconds(100))
        #expect(before?.message == "no primary is known")
        #expect(before?.description == "no-primary: no primary is known")
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x10), at: at(10))
        #expect(try topology.route(.read(.readYourWrites(lsn(0x10))), now: at(20)).host == hostB)
        let read = #expect(throws: RoutingError.self) { try topology.route(.read(.readYourWrites(lsn(0x11))), now: at(20)) }
        #expect(read?.code == .noPrimary)
        #expect(throws: RoutingError.self) { try topology.route(.read(.primary), now: at(20)) }
        #expect(topology.counters.routingErrors == 3)
        #expect(topology.counters.readsToReplica == 1)
    }
}
