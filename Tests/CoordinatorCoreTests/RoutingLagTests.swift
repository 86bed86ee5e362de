import CoordinatorCore
import Testing

@Suite("Routing: roles and lag")
struct RoutingLagTests {
    @Test("the first tick probes every server; probes classify primary and replicas")
    func classification() {
        var topology = ReplicaTopology(hosts: [hostA, hostB, hostC, hostA])
        #expect(topology.hosts == [hostA, hostB, hostC])
        let first = topology.tick(now: at(0))
        #expect(first.probes == [hostA, hostB, hostC])
        #expect(first.scheduledTick == at(2_000))  // the probe timeout: nothing else is due
        #expect(topology.tick(now: at(1)).isEmpty)  // in flight: not probed twice

        let a = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000), at: at(10))
        #expect(a.roleChanges == [RoleChange(host: hostA, from: .unknown, to: .primary, reason: .discovered, at: at(10))])
        #expect(a.scheduledTick == at(510))
        let b = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000), at: at(10))
        #expect(b.roleChanges == [RoleChange(host: hostB, from: .unknown, to: .replica, reason: .discovered, at: at(10))])
        #expect(b.scheduledTick == nil)  // unchanged: still 510
        #expect(topology.primary == hostA)
        #expect(topology.role(of: hostA) == .primary)
        #expect(topology.role(of: hostB) == .replica)
        #expect(topology.role(of: hostC) == .unknown)
        #expect(topology.failoverSince == nil)
        #expect(topology.counters.probesSucceeded == 2)
        #expect(topology.counters.roleChanges == 2)
    }

    @Test("servers not in the URL are ignored")
    func unknownHosts() {
        var topology = steadyTopology()
        let stranger = HostID(host: "elsewhere", port: 1)
        #expect(topology.probeSucceeded(stranger, observation: primaryObservation(9), at: at(20)).isEmpty)
        #expect(topology.probeFailed(stranger, error: "x", at: at(20)).isEmpty)
        #expect(topology.hotStandbyChanged(stranger, inHotStandby: false, at: at(20)).isEmpty)
        #expect(topology.writeFailed(stranger, .connectionLost, at: at(20)).isEmpty)
        topology.requestStarted(stranger)
        topology.requestFinished(stranger)
        #expect(topology.role(of: stranger) == .unknown)
        #expect(topology.outstandingRequests(on: stranger) == 0)
        #expect(topology.lag(of: stranger) == nil)
        #expect(topology.primary == hostA)
    }

    @Test("an idle primary causes no lag, however old the last replayed commit")
    func idlePrimary() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB])
        _ = topology.tick(now: at(0))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x5000, nowMs: 10), at: at(10))
        // Last commit 10 minutes ago: the classic `now - pg_last_xact_replay_timestamp()` would say 600 s.
        _ = topology.probeSucceeded(
            hostB, observation: replicaObservation(replay: 0x5000, receive: 0x5000, lastReplayMs: -600_000, nowMs: 10),
            at: at(10))
        #expect(topology.lag(of: hostB)?.bytes == 0)
        #expect(topology.lag(of: hostB)?.ms == 0)
        #expect(topology.lag(of: hostA) == nil)  // not a replica
        let decision = try topology.route(.read(.fresh(maxLagBytes: 0, maxLagSeconds: 0)), now: at(20))
        #expect(decision == RouteDecision(host: hostB, role: .replica, reason: .replica))
    }

    @Test("a busy primary: bytes from LSNs, time the tighter of server clock and time since caught up")
    func busyPrimary() {
        var topology = steadyTopology()  // everyone caught up at t=10
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x3000, nowMs: 510), at: at(510))
        // B replayed a commit stamped 400 (server clock): 112 ms behind by the server's clock.
        _ = topology.probeSucceeded(
            hostB, observation: replicaObservation(replay: 0x2000, receive: 0x2800, lastReplayMs: 400, nowMs: 512), at: at(512))
        // C replays nothing new: its last commit is old (507 ms by server clock), last caught up at 10 (502 ms).
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 512), at: at(512))
        #expect(topology.lag(of: hostB)?.bytes == 0x1000)
        #expect(topology.lag(of: hostB)?.ms == 112)
        #expect(topology.lag(of: hostC)?.bytes == 0x2000)
        #expect(topology.lag(of: hostC)?.ms == 502)
        let b = topology.snapshot(now: at(600)).hosts[1]
        #expect(b.replayBacklogBytes == 0x800)
        #expect(b.lagBytes == 0x1000)
        #expect(b.lagMs == 112)
    }

    @Test("received but not replayed WAL is lag even at the primary's position")
    func receivedNotReplayed() {
        var topology = steadyTopology()
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x2000, nowMs: 510), at: at(510))
        _ = topology.probeSucceeded(
            hostB, observation: replicaObservation(replay: 0x2000, receive: 0x2400, lastReplayMs: 500, nowMs: 512), at: at(512))
        // Replay reached the primary's last known position but more WAL is waiting: not reported as 0,
        // yet it had at 512 everything the primary had at 510 (tighter than the server clock's 12 ms).
        #expect(topology.lag(of: hostB)?.bytes == 0)
        #expect(topology.lag(of: hostB)?.ms == 2)
    }

    @Test("caught up is dated by the earlier of the primary's and the replica's observations")
    func caughtUpDating() {
        var topology = ReplicaTopology(hosts: [hostA, hostB])
        _ = topology.tick(now: at(0))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x4000), at: at(1_000))
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x4000), at: at(1_200))
        #expect(topology.lag(of: hostB)?.ms == 0)
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x5000), at: at(1_500))
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x4000), at: at(1_700))
        #expect(topology.lag(of: hostB)?.bytes == 0x1000)
        #expect(topology.lag(of: hostB)?.ms == 700)  // since 1 000, not 1 200
        // A primary observed after the replica that it has not passed: caught up at the replica's instant.
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x5000), at: at(1_800))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x5000), at: at(1_900))
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x6000), at: at(2_000))
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x5000), at: at(2_300))
        #expect(topology.lag(of: hostB)?.ms == 500)  // since 1 800
    }

    @Test("a paused replica stays usable within bounds while its lag grows with time since the primary moved")
    func pausedReplica() throws {
        var topology = steadyTopology()
        var ms: [Int64?] = []
        for (round, t) in [510, 1_010, 1_510].enumerated() {
            let time = Int64(t)
            _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000 + UInt64(round + 1) * 0x100, nowMs: time), at: at(time))
            _ = topology.probeSucceeded(
                hostB, observation: replicaObservation(replay: 0x1000, receive: 0x1000, lastReplayMs: 5, nowMs: time, paused: true),
                at: at(time))
            _ = topology.probeSucceeded(
                hostC, observation: replicaObservation(replay: 0x1000 + UInt64(round + 1) * 0x100, lastReplayMs: time - 1, nowMs: time),
                at: at(time))
            ms.append(topology.lag(of: hostB)?.ms)
            if round == 0 {
                // 500 ms behind: within a 1 s bound, so B (listed first) serves the read.
                #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: 1)), now: at(time)).host == hostB)
            }
        }
        #expect(ms == [500, 1_000, 1_500])
        #expect(topology.lag(of: hostB)?.bytes == 0x300)
        #expect(topology.snapshot(now: at(1_510)).hosts[1].replayPaused)
        // Now beyond 1 s: C (caught up) serves it.
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: 1)), now: at(1_510)).host == hostC)

        // With an idle primary, a paused replica that has everything is not behind.
        var idle = steadyTopology()
        _ = idle.probeSucceeded(hostA, observation: primaryObservation(0x1000, nowMs: 5_000), at: at(5_000))
        _ = idle.probeSucceeded(
            hostB, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 5_000, paused: true), at: at(5_000))
        #expect(idle.lag(of: hostB)?.ms == 0)
    }

    @Test("a replica whose receiver is not streaming lags by time since the primary moved on")
    func receiverDown() throws {
        var topology = steadyTopology()
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1800, nowMs: 510), at: at(510))
        _ = topology.probeSucceeded(
            hostB, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 510, status: "waiting"), at: at(510))
        _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 510, status: nil), at: at(510))
        #expect(topology.lag(of: hostB)?.ms == 500)
        #expect(topology.snapshot(now: at(510)).hosts[1].walReceiverStatus == "waiting")
        #expect(topology.snapshot(now: at(510)).hosts[2].walReceiverStatus == nil)
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x800, maxLagSeconds: 0.5)), now: at(510)).host == hostB)
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x7FF, maxLagSeconds: 0.5)), now: at(510)).reason == .fallbackToPrimary)
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: 0.499)), now: at(510)).reason == .fallbackToPrimary)
    }

    @Test("unknown lag is never within a bound on it")
    func unknownLag() throws {
        var topology = ReplicaTopology(hosts: [hostA, hostB])
        _ = topology.tick(now: at(0))
        // B was never seen caught up and replayed no commit yet: lag in time unknown.
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000), at: at(10))
        #expect(topology.lag(of: hostB)?.bytes == nil)  // no primary ever seen
        #expect(topology.lag(of: hostB)?.ms == nil)
        #expect(throws: RoutingError.self) { try topology.route(.read(.fresh(maxLagBytes: 1 << 40, maxLagSeconds: nil)), now: at(20)) }
        #expect(try topology.route(.read(.fresh(maxLagBytes: nil, maxLagSeconds: nil)), now: at(20)).host == hostB)
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x2000), at: at(30))
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000), at: at(30))
        #expect(topology.lag(of: hostB)?.bytes == 0x1000)
        #expect(topology.lag(of: hostB)?.ms == nil)
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x1000, maxLagSeconds: nil)), now: at(40)).host == hostB)
        #expect(try topology.route(.read(.fresh(maxLagBytes: 0x1000, maxLagSeconds: 60)), now: at(40)).host == hostA)
    }

    @Test("a replica clock behind the primary's never gives negative lag; older answers are ignored")
    func skewAndReordering() {
        var topology = steadyTopology()
        _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x2000, nowMs: 510), at: at(510))
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1800, lastReplayMs: 900, nowMs: 510), at: at(510))
        #expect(topology.lag(of: hostB)?.ms == 0)
        // An answer from before the kept one changes nothing.
        _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x100, nowMs: 400), at: at(400))
        #expect(topology.lag(of: hostB)?.bytes == 0x800)
    }
}
