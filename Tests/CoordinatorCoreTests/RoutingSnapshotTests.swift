import CoordinatorCore
import Testing

@Suite("Routing: snapshot and counters")
struct RoutingSnapshotTests {
    @Test("a snapshot shows every server in URL order with role, lag, ages and failures")
    func snapshot() throws {
        var topology = steadyTopology()
        _ = topology.tick(now: at(510))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x3000, nowMs: 510, timeline: 1), at: at(510))
        _ = topology.probeSucceeded(
            hostB,
            observation: replicaObservation(replay: 0x2000, receive: 0x2800, lastReplayMs: 400, nowMs: 512, paused: true),
            at: at(512))
        _ = topology.probeFailed(hostC, error: "timeout", at: at(520), jitter: 0)
        topology.requestStarted(hostB)
        _ = try topology.route(.write, now: at(600))
        _ = try topology.route(.read(.readYourWrites(lsn(0x2000))), now: at(600))
        _ = try topology.route(.read(.readYourWrites(lsn(0x2001))), now: at(600))

        let snapshot = topology.snapshot(now: at(700))
        #expect(snapshot.primary == hostA)
        #expect(snapshot.failoverSince == nil)
        #expect(!snapshot.splitBrain)
        #expect(snapshot.hosts.map(\.id) == [hostA, hostB, hostC])
        #expect(snapshot.hosts[0] == HostStatus(
            id: hostA, role: .primary, observedRole: .primary, timeline: 1, lagBytes: nil, replayBacklogBytes: nil,
            lagMs: nil, replayPaused: false, walReceiverStatus: nil, quarantinedUntil: nil, fenced: false,
            primaryCandidate: false, lastProbeAgeMs: 190, lastSuccessAgeMs: 190, consecutiveFailures: 0, lastError: nil,
            outstandingRequests: 0))
        #expect(snapshot.hosts[1] == HostStatus(
            id: hostB, role: .replica, observedRole: .replica, timeline: 1, lagBytes: 0x1000, replayBacklogBytes: 0x800,
            lagMs: 112, replayPaused: true, walReceiverStatus: "streaming", quarantinedUntil: nil, fenced: false,
            primaryCandidate: false, lastProbeAgeMs: 188, lastSuccessAgeMs: 188, consecutiveFailures: 0, lastError: nil,
            outstandingRequests: 1))
        #expect(snapshot.hosts[2] == HostStatus(
            id: hostC, role: .quarantined, observedRole: .replica, timeline: 1, lagBytes: 0x2000, replayBacklogBytes: 0,
            lagMs: 500, replayPaused: false, walReceiverStatus: "streaming", quarantinedUntil: at(770), fenced: false,
            primaryCandidate: false, lastProbeAgeMs: 180, lastSuccessAgeMs: 690, consecutiveFailures: 1, lastError: "timeout",
            outstandingRequests: 0))

        var expected = TopologyCounters()
        expected.probesSucceeded = 5
        expected.probesFailed = 1
        expected.roleChanges = 4
        expected.writesRouted = 1
        expected.readsToReplica = 1
        expected.readFallbacks = 1
        #expect(snapshot.counters == expected)
    }

    @Test("raw values are the wire names")
    func wireNames() {
        #expect(HostRole.allCases.map(\.rawValue) == ["unknown", "primary", "replica", "quarantined", "fenced"])
        #expect(RouteReason.allCases.map(\.rawValue) == ["write", "primary_requested", "replica", "fallback_to_primary"])
        #expect(RoutingError.Code.allCases.map(\.rawValue) == ["no-primary", "split-brain"])
        #expect(WriteFailure.allCases.map(\.rawValue) == ["connection_lost", "read_only"])
        #expect(RoleChangeReason.promoted.rawValue == "promoted")
        #expect(RoleChangeReason.splitBrainLost.rawValue == "split_brain_lost")
        #expect(HostRole.fenced.description == "fenced")
    }
}
