import CoordinatorCore
import Testing

@Suite("Routing: quarantine and probe scheduling")
struct RoutingQuarantineTests {
    @Test("backoff doubles from 250 ms to a 5 s cap; jitter takes up to its fraction off")
    func backoff() {
        let topology = ReplicaTopology(hosts: [hostA])
        let waits = (1...8).map { topology.quarantineBackoff(failures: $0, jitter: 0) }
        #expect(waits == [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000].map { Span.milliseconds($0) })
        #expect(topology.quarantineBackoff(failures: 10_000, jitter: 0) == .seconds(5))
        #expect(topology.quarantineBackoff(failures: 1, jitter: 1) == .milliseconds(200))
        #expect(topology.quarantineBackoff(failures: 1, jitter: 0.5) == .milliseconds(225))
        #expect(topology.quarantineBackoff(failures: 1, jitter: -3) == .milliseconds(250))
        #expect(topology.quarantineBackoff(failures: 9, jitter: 7) == .seconds(4))
        let noJitter = ReplicaTopology(hosts: [hostA], configuration: TopologyConfiguration(jitterFraction: 0))
        #expect(noJitter.quarantineBackoff(failures: 1, jitter: 1) == .milliseconds(250))
    }

    @Test("default jitter is deterministic, within bounds, and differs between servers")
    func defaultJitter() {
        func until(_ host: HostID) -> Instant? {
            var topology = ReplicaTopology(hosts: [hostA, hostB, hostC])
            _ = topology.tick(now: at(0))
            _ = topology.probeFailed(host, error: "timeout", at: at(1_000))
            return topology.snapshot(now: at(1_000)).hosts.first { $0.id == host }?.quarantinedUntil
        }
        let instants = [hostA, hostB, hostC].map(until)
        #expect(instants == [hostA, hostB, hostC].map(until))
        for instant in instants {
            let wait = instant.map { $0 - at(1_000) } ?? .zero
            #expect(wait > .milliseconds(200) && wait <= .milliseconds(250), "\(wait)")
        }
        #expect(Set(instants).count > 1)
    }

    @Test("a failing replica is quarantined with backoff, gets no reads, and returns on success")
    func quarantineAndRecovery() throws {
        var topology = steadyTopology()
        #expect(topology.tick(now: at(510)).probes == [hostA, hostB, hostC])
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000, nowMs: 515), at: at(515))
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, nowMs: 515), at: at(515))
        let failed = topology.probeFailed(hostB, error: "timeout after 400 ms", at: at(520), jitter: 0)
        #expect(failed.roleChanges == [RoleChange(host: hostB, from: .replica, to: .quarantined, reason: .probeFailed, at: at(520))])
        #expect(failed.failoverEvents.isEmpty)
        #expect(failed.scheduledTick == at(770))  // 520 + 250: before A and C (1 015)
        #expect(topology.role(of: hostB) == .quarantined)
        topology.requestStarted(hostC)
        topology.requestStarted(hostC)
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(600)).host == hostC)
        #expect(topology.eligibleReplicas(for: .readYourWrites(.zero), now: at(600)) == [hostC])
        let status = topology.snapshot(now: at(600)).hosts[1]
        #expect(status.role == .quarantined)
        #expect(status.observedRole == .replica)
        #expect(status.quarantinedUntil == at(770))
        #expect(status.consecutiveFailures == 1)
        #expect(status.lastError == "timeout after 400 ms")
        #expect(status.lastProbeAgeMs == 80)
        #expect(status.lastSuccessAgeMs == 590)

        #expect(topology.tick(now: at(769)).isEmpty)
        #expect(topology.tick(now: at(770)).probes == [hostB])
        let again = topology.probeFailed(hostB, error: "timeout", at: at(775), jitter: 0)
        #expect(again.roleChanges.isEmpty)
        #expect(again.scheduledTick == nil)  // still 1 015 (A and C); B is due at 1 275
        #expect(topology.snapshot(now: at(775)).hosts[1].quarantinedUntil == at(1_275))
        #expect(topology.tick(now: at(1_015)).probes == [hostA, hostC])
        #expect(topology.tick(now: at(1_275)).probes == [hostB])
        let back = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000, nowMs: 1_280), at: at(1_280))
        #expect(back.roleChanges == [RoleChange(host: hostB, from: .quarantined, to: .replica, reason: .recovered, at: at(1_280))])
        let status2 = topology.snapshot(now: at(1_280)).hosts[1]
        #expect(status2.quarantinedUntil == nil)
        #expect(status2.consecutiveFailures == 0)
        #expect(status2.lastError == nil)
        #expect(topology.counters.probesFailed == 2)
    }

    @Test("a probe in flight is not issued again until the probe timeout")
    func inFlight() {
        var topology = steadyTopology()
        let tick = topology.tick(now: at(510))
        #expect(tick.probes == [hostA, hostB, hostC])
        #expect(tick.scheduledTick == at(2_510))
        #expect(topology.tick(now: at(2_509)).isEmpty)
        let reissued = topology.tick(now: at(2_510))
        #expect(reissued.probes == [hostA, hostB, hostC])
        #expect(reissued.scheduledTick == at(4_510))
    }

    @Test("a lost connection on a replica quarantines it without a failover")
    func replicaWriteConnectionLost() throws {
        var topology = steadyTopology()
        let actions = topology.writeFailed(hostB, .connectionLost, at: at(100), jitter: 0)
        #expect(actions.roleChanges == [RoleChange(host: hostB, from: .replica, to: .quarantined, reason: .writeConnectionLost, at: at(100))])
        #expect(actions.failoverEvents.isEmpty)
        #expect(actions.scheduledTick == at(350))
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(100)).host == hostC)
        // A read-only refusal from a server that is not the primary changes nothing.
        #expect(topology.writeFailed(hostC, .readOnly, at: at(110)).isEmpty)
        #expect(topology.counters.writeFailures == 2)
    }
}
