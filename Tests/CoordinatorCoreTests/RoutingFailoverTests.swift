import CoordinatorCore
import Testing

@Suite("Routing: failover")
struct RoutingFailoverTests {
    @Test("primary fails → every server probed at once and every 100 ms → replica promoted → writes go there")
    func failoverSequence() throws {
        var primaryUp = true
        var promoted = false
        var driver = RoutingDriver(topology: ReplicaTopology(hosts: [hostA, hostB, hostC]), now: at(0)) { host, now in
            let ms = now.milliseconds
            switch host {
            case hostA:
                return primaryUp ? primaryObservation(0x1000, nowMs: ms) : nil
            case hostB:
                return promoted ? primaryObservation(0x1100, nowMs: ms, timeline: 2)
                    : replicaObservation(replay: 0x1000, nowMs: ms)
            default:
                return replicaObservation(replay: 0x1000, nowMs: ms, timeline: promoted ? 2 : 1, upstream: promoted ? hostB : hostA)
            }
        }
        driver.run(until: at(2_000))
        #expect(driver.probes(of: hostA, from: at(0), to: at(2_000)) == [at(0), at(501), at(1_002), at(1_503)])
        #expect(try driver.topology.route(.write, now: at(2_000)).host == hostA)

        primaryUp = false
        driver.run(until: at(2_300))
        #expect(driver.events.failoverEvents == [.started(previous: hostA, reason: .probeFailed, at: at(2_005))])
        #expect(driver.events.roleChanges.last == RoleChange(host: hostA, from: .primary, to: .quarantined, reason: .probeFailed, at: at(2_005)))
        // Every server at once when the failure is seen (B and C again: their probes predate it)...
        #expect(driver.probeLog.filter { $0.at == at(2_005) }.map(\.host) == [hostA, hostB, hostC])
        // ...then every 100 ms (+1 ms answer latency), the dead primary included despite its backoff.
        #expect(driver.probes(of: hostC, from: at(2_005), to: at(2_300)) == [at(2_005), at(2_106), at(2_207)])
        #expect(driver.probes(of: hostA, from: at(2_005), to: at(2_300)) == [at(2_005), at(2_106), at(2_207)])
        #expect(driver.topology.failoverSince == at(2_005))
        let error = #expect(throws: RoutingError.self) { try driver.topology.route(.write, now: at(2_300)) }
        #expect(error?.code == .noPrimary)
        #expect(error?.message == "the primary was lost; failover in progress")
        // Reads keep going to replicas meanwhile.
        #expect(try driver.topology.route(.read(.readYourWrites(lsn(0x1000))), now: at(2_300)).host == hostB)

        promoted = true
        driver.run(until: at(3_000))
        #expect(driver.events.failoverEvents == [
            .started(previous: hostA, reason: .probeFailed, at: at(2_005)),
            .completed(primary: hostB, after: .milliseconds(304), at: at(2_309)),
        ])
        #expect(driver.events.roleChanges.last == RoleChange(host: hostB, from: .replica, to: .primary, reason: .promoted, at: at(2_309)))
        #expect(try driver.topology.route(.write, now: at(2_400)) == RouteDecision(host: hostB, role: .primary, reason: .write))
        #expect(try driver.topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(2_400)).host == hostC)
        // Back to the regular interval; the dead server on its quarantine backoff.
        #expect(driver.probes(of: hostC, from: at(2_310), to: at(3_000)) == [at(2_809)])
        #expect(driver.probes(of: hostA, from: at(2_310), to: at(3_000)) == [at(2_409)])
        let snapshot = driver.topology.snapshot(now: at(3_000))
        #expect(snapshot.primary == hostB)
        #expect(snapshot.failoverSince == nil)
        #expect(snapshot.hosts[0].role == .quarantined)
        #expect(snapshot.hosts[0].consecutiveFailures == 6)
        #expect(snapshot.hosts[0].quarantinedUntil == at(7_410))
        #expect(snapshot.counters.failoversStarted == 1)
        #expect(snapshot.counters.failoversCompleted == 1)
    }

    @Test("a lost write connection on the primary starts a failover; a blip ends it at the next probe")
    func writeConnectionLost() throws {
        var topology = steadyTopology()
        let lost = topology.writeFailed(hostA, .connectionLost, at: at(100), jitter: 0)
        #expect(lost.roleChanges == [RoleChange(host: hostA, from: .primary, to: .quarantined, reason: .writeConnectionLost, at: at(100))])
        #expect(lost.failoverEvents == [.started(previous: hostA, reason: .writeConnectionLost, at: at(100))])
        #expect(lost.probes == [hostA, hostB, hostC])
        #expect(throws: RoutingError.self) { try topology.route(.write, now: at(100)) }
        let back = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000, nowMs: 101), at: at(101))
        #expect(back.roleChanges == [RoleChange(host: hostA, from: .quarantined, to: .primary, reason: .recovered, at: at(101))])
        #expect(back.failoverEvents == [.completed(primary: hostA, after: .milliseconds(1), at: at(101))])
        #expect(try topology.route(.write, now: at(101)).host == hostA)
    }

    @Test("a write refused as read-only demotes the primary: failover until the promoted one is seen")
    func writeReadOnly() throws {
        var topology = steadyTopology()
        let refused = topology.writeFailed(hostA, .readOnly, at: at(100))
        #expect(refused.roleChanges == [RoleChange(host: hostA, from: .primary, to: .unknown, reason: .writeReadOnly, at: at(100))])
        #expect(refused.failoverEvents == [.started(previous: hostA, reason: .writeReadOnly, at: at(100))])
        #expect(refused.probes == [hostA, hostB, hostC])
        #expect(topology.snapshot(now: at(100)).hosts[0].observedRole == .unknown)
        let a = topology.probeSucceeded(hostA, observation: replicaObservation(replay: 0x1000, timeline: 2, upstream: hostB), at: at(101))
        #expect(a.roleChanges == [RoleChange(host: hostA, from: .unknown, to: .replica, reason: .discovered, at: at(101))])
        let b = topology.probeSucceeded(hostB, observation: primaryObservation(0x1000, timeline: 2), at: at(102))
        #expect(b.roleChanges == [RoleChange(host: hostB, from: .replica, to: .primary, reason: .promoted, at: at(102))])
        #expect(b.failoverEvents == [.completed(primary: hostB, after: .milliseconds(2), at: at(102))])
        #expect(try topology.route(.write, now: at(102)).host == hostB)
    }

    @Test("in_hot_standby = off on a replica: a primary candidate, every server probed at once")
    func hotStandbyOff() throws {
        var topology = steadyTopology()
        let actions = topology.hotStandbyChanged(hostB, inHotStandby: false, at: at(100))
        #expect(actions.probes == [hostA, hostB, hostC])
        #expect(actions.roleChanges.isEmpty)
        #expect(topology.snapshot(now: at(100)).hosts[1].primaryCandidate)
        #expect(try topology.route(.write, now: at(100)).host == hostA)  // until a probe confirms
        let b = topology.probeSucceeded(hostB, observation: primaryObservation(0x1000, timeline: 2), at: at(101))
        #expect(b.roleChanges.map(\.host) == [hostA, hostB])
        #expect(b.roleChanges.map(\.reason) == [.splitBrainLost, .promoted])
        #expect(b.alerts == [.splitBrain(claimants: [hostA, hostB], primary: hostB, at: at(101))])
        #expect(!topology.snapshot(now: at(101)).hosts[1].primaryCandidate)
        #expect(try topology.route(.write, now: at(101)).host == hostB)
        // The old primary dies: one claimant left.
        let a = topology.probeFailed(hostA, error: "refused", at: at(102), jitter: 0)
        #expect(a.roleChanges == [RoleChange(host: hostA, from: .fenced, to: .quarantined, reason: .probeFailed, at: at(102))])
        #expect(a.alerts == [.splitBrainResolved(at: at(102))])
        #expect(a.failoverEvents.isEmpty)
        #expect(!topology.isSplitBrain)
    }

    @Test("in_hot_standby = off while probes are in flight: they are repeated as soon as they report")
    func hotStandbyOffInFlight() {
        var topology = steadyTopology()
        #expect(topology.tick(now: at(510)).probes == [hostA, hostB, hostC])
        #expect(topology.hotStandbyChanged(hostB, inHotStandby: false, at: at(512)).isEmpty)
        // This answer was read before the promotion: B is probed again at once.
        let stale = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000), at: at(515))
        #expect(stale.probes == [hostB])
        #expect(topology.snapshot(now: at(515)).hosts[1].primaryCandidate)
        #expect(topology.probeSucceeded(hostA, observation: primaryObservation(0x1000), at: at(516)).probes == [hostA])
        let confirmed = topology.probeSucceeded(hostB, observation: primaryObservation(0x1000, timeline: 2), at: at(517))
        #expect(topology.primary == hostB)
        #expect(confirmed.alerts == [.splitBrain(claimants: [hostA, hostB], primary: hostB, at: at(517))])
    }

    @Test("in_hot_standby = on for the primary loses it; other reports change nothing")
    func hotStandbyOn() {
        var topology = steadyTopology()
        #expect(topology.hotStandbyChanged(hostB, inHotStandby: true, at: at(50)).isEmpty)
        #expect(topology.hotStandbyChanged(hostA, inHotStandby: false, at: at(50)).isEmpty)
        let demoted = topology.hotStandbyChanged(hostA, inHotStandby: true, at: at(100))
        #expect(demoted.roleChanges == [RoleChange(host: hostA, from: .primary, to: .unknown, reason: .hotStandbyOn, at: at(100))])
        #expect(demoted.failoverEvents == [.started(previous: hostA, reason: .hotStandbyOn, at: at(100))])
        #expect(demoted.probes == [hostA, hostB, hostC])
        #expect(topology.primary == nil)
        #expect(topology.failoverSince == at(100))
    }
}
