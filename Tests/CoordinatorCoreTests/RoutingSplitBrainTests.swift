import CoordinatorCore
import Testing

@Suite("Routing: split brain")
struct RoutingSplitBrainTests {
    @Test("the higher timeline wins; the other is fenced, gets no traffic, and is released when it rejoins")
    func byTimeline() throws {
        var topology = steadyTopology()  // A primary on timeline 1
        let claim = topology.probeSucceeded(hostB, observation: primaryObservation(0x1200, timeline: 2), at: at(100))
        #expect(claim.alerts == [.splitBrain(claimants: [hostA, hostB], primary: hostB, at: at(100))])
        #expect(claim.roleChanges == [
            RoleChange(host: hostA, from: .primary, to: .fenced, reason: .splitBrainLost, at: at(100)),
            RoleChange(host: hostB, from: .replica, to: .primary, reason: .promoted, at: at(100)),
        ])
        #expect(claim.failoverEvents.isEmpty)
        #expect(topology.splitBrain == SplitBrain(claimants: [hostA, hostB], primary: hostB))
        #expect(try topology.route(.write, now: at(100)).host == hostB)
        #expect(try topology.route(.read(.primary), now: at(100)).host == hostB)
        // The fenced server gets nothing, whatever the read asks for.
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1200, timeline: 2, upstream: hostB), at: at(101))
        for consistency in [ReadConsistency.fresh(maxLagBytes: nil, maxLagSeconds: nil), .readYourWrites(.zero)] {
            #expect(topology.eligibleReplicas(for: consistency, now: at(110)) == [hostC])
            #expect(try topology.route(.read(consistency), now: at(110)).host == hostC)
        }
        let status = topology.snapshot(now: at(110)).hosts[0]
        #expect(status.role == .fenced)
        #expect(status.fenced)
        #expect(status.observedRole == .primary)
        #expect(topology.snapshot(now: at(110)).splitBrain)
        // Still claiming at the next probe: no new alert.
        #expect(topology.probeSucceeded(hostA, observation: primaryObservation(0x1000), at: at(150)).alerts.isEmpty)

        // Rewound and restarted as a standby of B.
        let rejoined = topology.probeSucceeded(
            hostA, observation: replicaObservation(replay: 0x1200, timeline: 2, upstream: hostB), at: at(200))
        #expect(rejoined.alerts == [.splitBrainResolved(at: at(200))])
        #expect(rejoined.roleChanges == [RoleChange(host: hostA, from: .fenced, to: .replica, reason: .splitBrainCleared, at: at(200))])
        #expect(!topology.snapshot(now: at(200)).hosts[0].fenced)
        #expect(topology.counters.splitBrains == 1)
    }

    @Test("on equal timelines the server the replicas stream from wins; the choice follows them")
    func bySender() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB, hostC])
        _ = topology.tick(now: at(0))
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, timeline: 3, upstream: hostB), at: at(10))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000, timeline: 3), at: at(10))
        #expect(topology.primary == hostA)
        let b = topology.probeSucceeded(hostB, observation: primaryObservation(0x1000, timeline: 3), at: at(10))
        #expect(b.alerts == [.splitBrain(claimants: [hostA, hostB], primary: hostB, at: at(10))])
        #expect(topology.role(of: hostA) == .fenced)
        #expect(try topology.route(.write, now: at(10)).host == hostB)

        let moved = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, timeline: 3, upstream: hostA), at: at(20))
        #expect(moved.alerts == [.splitBrain(claimants: [hostA, hostB], primary: hostA, at: at(20))])
        #expect(topology.role(of: hostB) == .fenced)
        #expect(topology.role(of: hostA) == .primary)

        // A receiver that is not streaming casts no vote: the incumbent (A) stays.
        let waiting = topology.probeSucceeded(
            hostC, observation: replicaObservation(replay: 0x1000, timeline: 3, upstream: hostB, status: "waiting"), at: at(30))
        #expect(waiting.alerts.isEmpty)
        #expect(topology.primary == hostA)
        #expect(topology.counters.splitBrains == 1)
    }

    @Test("equal timelines and no votes: the incumbent keeps the primary role")
    func incumbent() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB])
        _ = topology.tick(now: at(0))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000, timeline: 1), at: at(10))
        let b = topology.probeSucceeded(hostB, observation: primaryObservation(0x1000, timeline: 1), at: at(20))
        #expect(b.alerts == [.splitBrain(claimants: [hostA, hostB], primary: hostA, at: at(20))])
        #expect(b.roleChanges == [RoleChange(host: hostB, from: .unknown, to: .fenced, reason: .splitBrainLost, at: at(20))])
        #expect(try topology.route(.write, now: at(20)).host == hostA)

        // Unknown timelines skip the timeline rule.
        var unknown = ReplicaTopology(hosts: [hostA, hostB])
        _ = unknown.tick(now: at(0))
        _ = unknown.probeSucceeded(hostB, observation: HostObservation(inRecovery: false, serverNowMs: wall), at: at(10))
        _ = unknown.probeSucceeded(hostA, observation: primaryObservation(0x1000, timeline: 9), at: at(20))
        #expect(unknown.primary == hostB)
        #expect(unknown.role(of: hostA) == .fenced)
    }

    @Test("no winner: every claimant fenced, writes fail with split-brain until one is left")
    func undecidable() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB, hostC])
        _ = topology.tick(now: at(0))
        for host in [hostA, hostB, hostC] {
            _ = topology.probeSucceeded(host, observation: primaryObservation(0x1000, timeline: 2), at: at(10))
        }
        #expect(topology.primary == hostA)  // the first one seen, then the incumbent
        #expect(topology.splitBrain == SplitBrain(claimants: [hostA, hostB, hostC], primary: hostA))
        let lost = topology.probeFailed(hostA, error: "refused", at: at(20), jitter: 0)
        #expect(lost.alerts == [.splitBrain(claimants: [hostB, hostC], primary: nil, at: at(20))])
        #expect(lost.failoverEvents == [.started(previous: hostA, reason: .probeFailed, at: at(20))])
        #expect(topology.role(of: hostB) == .fenced)
        #expect(topology.role(of: hostC) == .fenced)
        let error = #expect(throws: RoutingError.self) { try topology.route(.write, now: at(20)) }
        #expect(error?.code == .splitBrain)
        #expect(error?.description == "split-brain: several servers claim to be primary and none could be chosen: 10.0.0.2:5432, 10.0.0.3:5432")
        #expect(throws: RoutingError.self) { try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(20)) }

        let resolved = topology.probeFailed(hostC, error: "refused", at: at(30), jitter: 0)
        #expect(resolved.alerts == [.splitBrainResolved(at: at(30))])
        #expect(resolved.failoverEvents == [.completed(primary: hostB, after: .milliseconds(10), at: at(30))])
        #expect(resolved.roleChanges.map(\.reason) == [.splitBrainCleared, .probeFailed])
        #expect(try topology.route(.write, now: at(30)).host == hostB)
        #expect(topology.counters.splitBrains == 1)
    }
}
