import CoordinatorCore
import Foundation
import Testing

@Suite("Cluster breaker sharing")
struct ClusterBreakerSharingTests {
    let config = clusterBreakerConfig()

    func trip(from: BreakerState = .closed, to: BreakerState = .open, _ reason: TransitionReason = .failureRate) -> BreakerTransition {
        BreakerTransition(from: from, to: to, reason: reason, at: .zero, failureRate: 60, slowCallRate: 0)
    }

    func record(_ state: BreakerState, version: UInt64, openings: Int = 0, until: Int64? = nil) -> SharedBreakerState {
        SharedBreakerState(
            state: state, version: version, openUntilRedisMs: until, reason: .failureRate, originNode: "x",
            changedAtRedisMs: 0, consecutiveOpenings: openings)
    }

    @Test("parse and format the sharing policies")
    func parsing() throws {
        for (text, value) in [("local", BreakerSharing.local), ("any", .any), ("aggregate", .aggregate), ("quorum(2)", .quorum(2)), ("quorum(1000)", .quorum(1000)), ("quorum(1)", .quorum(1))] {
            #expect(try BreakerSharing.parse(text) == value)
            #expect(value.description == text)
            #expect(BreakerSharing(text) == value)
        }
        for bad in ["", "Any", " any", "quorum", "quorum()", "quorum(0)", "quorum(1001)", "quorum(-1)", "quorum(+2)", "quorum(2", "quorum( 2)", "quorum(99999999999999999999)", "quorum(2)x", "all"] {
            #expect(BreakerSharing(bad) == nil, "\(bad)")
            #expect(throws: ValidationError.self) { try BreakerSharing.parse(bad, key: "breakers.p.sharing") }
        }
        do {
            _ = try BreakerSharing.parse("quorum(0)", key: "breakers.p.sharing")
        } catch {
            #expect(error.key == "breakers.p.sharing")
            #expect(error.reason.contains("quorum(n)"))
        }
        #expect(BreakerSharing.default == .any)
        let json = try JSONEncoder().encode(["s": BreakerSharing.quorum(3)])
        #expect(String(decoding: json, as: UTF8.self) == #"{"s":"quorum(3)"}"#)
        #expect(try JSONDecoder().decode([String: BreakerSharing].self, from: json) == ["s": .quorum(3)])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([BreakerSharing].self, from: Data(#"["quorum(0)"]"#.utf8)) }
    }

    @Test("cluster backoff follows the configuration")
    func backoff() {
        let plain = clusterBreakerConfig(openWaitMs: 1_000)
        #expect((1...5).map { plain.openWaitMs(forOpening: $0) } == [1_000, 1_000, 1_000, 1_000, 1_000])
        let doubling = clusterBreakerConfig(openWaitMs: 1_000, openWaitMultiplier: 2, maxOpenWaitMs: 5_000)
        #expect((0...6).map { doubling.openWaitMs(forOpening: $0) } == [1_000, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000])
        let uncapped = clusterBreakerConfig(openWaitMs: 1_000, openWaitMultiplier: 10)
        #expect(uncapped.openWaitMs(forOpening: 1_000) == BreakerConfig.maximumDurationMs)
    }

    @Test("records: newer versions win; open-until maps onto the local clock; payload round-trips")
    func records() {
        let r5 = record(.open, version: 5, until: 10_000)
        #expect(r5.isNewer(than: nil))
        #expect(r5.isNewer(than: record(.closed, version: 4)))
        #expect(!r5.isNewer(than: record(.closed, version: 5)))
        #expect(!r5.isNewer(than: record(.closed, version: 6)))
        #expect(r5.localOpenUntil(redisNowMs: 9_000, now: .milliseconds(500)) == .milliseconds(1_500))
        #expect(r5.localOpenUntil(redisNowMs: 12_000, now: .milliseconds(5_000)) == .milliseconds(3_000))
        #expect(record(.closed, version: 1).localOpenUntil(redisNowMs: 0, now: .zero) == nil)
        #expect(r5.isClusterOpen && record(.forcedOpen, version: 1).isClusterOpen && !record(.disabled, version: 1).isClusterOpen)

        for value in [r5, record(.halfOpen, version: .max, openings: 3), SharedBreakerState(state: .forcedOpen, version: 1, openUntilRedisMs: nil, reason: .forced, originNode: "node-7", changedAtRedisMs: -1)] {
            let payload = value.encodePayload(breaker: "payments")
            let decoded = SharedBreakerState.decodePayload(payload)
            #expect(decoded?.breaker == "payments" && decoded?.state == value)
            for length in 0..<payload.count { #expect(SharedBreakerState.decodePayload(Array(payload[0..<length])) == nil) }
            #expect(SharedBreakerState.decodePayload(payload + [0]) == nil)
        }
    }

    @Test("the compare-and-set script semantics")
    func compareAndSet() {
        let proposal = SharedBreakerProposal(expectedVersion: 0, state: .open, reason: .failureRate, originNode: "a", openWaitMs: 1_000, consecutiveOpenings: 1)
        guard case .written(let written) = proposal.apply(to: nil, redisNowMs: 50_000) else { Issue.record("not written"); return }
        #expect(written == SharedBreakerState(state: .open, version: 1, openUntilRedisMs: 51_000, reason: .failureRate, originNode: "a", changedAtRedisMs: 50_000, consecutiveOpenings: 1))
        #expect(proposal.apply(to: written, redisNowMs: 50_001) == .conflict(current: written))
        let close = SharedBreakerProposal(expectedVersion: 1, state: .closed, reason: .probesSucceeded, originNode: "b", consecutiveOpenings: 4)
        guard case .written(let closed) = close.apply(to: written, redisNowMs: 52_000) else { Issue.record("not written"); return }
        #expect(closed.version == 2 && closed.openUntilRedisMs == nil && closed.consecutiveOpenings == 0)
        let forced = SharedBreakerProposal(expectedVersion: nil, state: .forcedOpen, reason: .forced, originNode: "c")
        guard case .written(let f) = forced.apply(to: closed, redisNowMs: 53_000) else { Issue.record("not written"); return }
        #expect(f.version == 3 && f.state == .forcedOpen)
    }

    @Test("any: a trip proposes to open the cluster, once per base version")
    func anyPolicy() {
        var node = SharedBreakerCoordinator(nodeID: "a", sharing: .any)
        let actions = node.localTransition(trip(), config: config, atRedisMs: 1_000)
        #expect(actions == [.propose(SharedBreakerProposal(expectedVersion: 0, state: .open, reason: .failureRate, originNode: "a", openWaitMs: 1_000, consecutiveOpenings: 1))])
        #expect(node.pendingBase == 0)
        #expect(node.localTransition(trip(.slowCallRate), config: config, atRedisMs: 1_001) == [])
        node.proposalFailed()
        #expect(node.localTransition(trip(), config: config, atRedisMs: 1_002).count == 1)
        // The script's answer comes back: adopt (the local breaker is already open: a no-op there).
        let written = record(.open, version: 1, openings: 1, until: 2_000)
        #expect(node.receive(written) == [.adopt(written)])
        #expect(node.pendingBase == nil && node.epoch == 1 && node.isClusterOpen)
        #expect(node.receive(written) == [])
        #expect(node.receive(record(.closed, version: 0)) == [])
        // While the cluster is open, further local trips propose nothing.
        #expect(node.localTransition(trip(), config: config, atRedisMs: 1_500) == [])
    }

    @Test("echoes never go back to the cluster; local sharing does nothing")
    func noEcho() {
        var node = SharedBreakerCoordinator(nodeID: "a", sharing: .any)
        for reason in [TransitionReason.remote, .reconfigured, .openWaitElapsed] {
            #expect(node.localTransition(trip(reason), config: config, atRedisMs: 0) == [])
        }
        var local = SharedBreakerCoordinator(nodeID: "a", sharing: .local)
        #expect(local.localTransition(trip(), config: config, atRedisMs: 0) == [])
        #expect(local.localTransition(trip(to: .forcedOpen, .forced), config: config, atRedisMs: 0) == [])
        #expect(local.receive(record(.open, version: 3)) == [])
        #expect(local.receiveVote(nodeID: "b", atRedisMs: 0, config: config) == [])
    }

    @Test("operator commands apply cluster-wide, unconditionally, and block automatic proposals")
    func operatorCommands() {
        for sharing in [BreakerSharing.any, .quorum(3), .aggregate] {
            var node = SharedBreakerCoordinator(nodeID: "a", sharing: sharing)
            _ = node.receive(record(.closed, version: 7))
            let actions = node.localTransition(trip(to: .forcedOpen, .forced), config: config, atRedisMs: 0)
            #expect(actions == [.propose(SharedBreakerProposal(expectedVersion: nil, state: .forcedOpen, reason: .forced, originNode: "a"))])
            _ = node.receive(record(.disabled, version: 8))
            #expect(node.localTransition(trip(), config: config, atRedisMs: 0).allSatisfy { if case .propose = $0 { false } else { true } })
            #expect(node.evaluateAggregate(config: config, atRedisMs: 0).1 == [])
        }
        var node = SharedBreakerCoordinator(nodeID: "a", sharing: .any)
        let forcedOpenCmd = node.localTransition(trip(from: .closed, to: .open, .forced), config: config, atRedisMs: 0)
        #expect(forcedOpenCmd == [.propose(SharedBreakerProposal(expectedVersion: nil, state: .open, reason: .forced, originNode: "a", openWaitMs: 1_000, consecutiveOpenings: 1))])
    }

    @Test("quorum(n): votes from n distinct nodes within the window open the cluster")
    func quorum() {
        var a = SharedBreakerCoordinator(nodeID: "a", sharing: .quorum(3), voteWindowMs: 10_000)
        #expect(a.localTransition(trip(), config: config, atRedisMs: 1_000) == [.castVote(nodeID: "a")])
        // The same node voting again still counts once.
        #expect(a.localTransition(trip(), config: config, atRedisMs: 2_000) == [.castVote(nodeID: "a")])
        #expect(a.receiveVote(nodeID: "a", atRedisMs: 2_100, config: config) == [])
        #expect(a.receiveVote(nodeID: "b", atRedisMs: 3_000, config: config) == [])
        #expect(a.votes.voters(atRedisMs: 3_000) == ["a", "b"])
        // b's vote expires before c's arrives: no quorum.
        #expect(a.receiveVote(nodeID: "c", atRedisMs: 13_000, config: config) == [])
        #expect(a.votes.voters(atRedisMs: 13_000) == ["c"])
        #expect(a.receiveVote(nodeID: "b", atRedisMs: 13_500, config: config) == [])
        let actions = a.localTransition(trip(), config: config, atRedisMs: 14_000)
        #expect(actions == [.castVote(nodeID: "a"), .propose(SharedBreakerProposal(expectedVersion: 0, state: .open, reason: .failureRate, originNode: "a", openWaitMs: 1_000, consecutiveOpenings: 1))])
        // The cluster opens: votes are cleared.
        _ = a.receive(record(.open, version: 1, openings: 1, until: 15_000))
        #expect(a.votes.votes.isEmpty)
        #expect(a.receiveVote(nodeID: "d", atRedisMs: 14_100, config: config) == [])
        var pruned = QuorumVotes(windowMs: 100)
        pruned.cast(nodeID: "x", atRedisMs: 0)
        pruned.cast(nodeID: "y", atRedisMs: 50)
        pruned.prune(atRedisMs: 100)
        #expect(pruned.votes == ["y": 50])
        #expect(pruned.isReached(1, atRedisMs: 149) && !pruned.isReached(1, atRedisMs: 150))
    }

    @Test("a single sick node stays alone under quorum(2)")
    func singleSickNode() {
        var sick = SharedBreakerCoordinator(nodeID: "sick", sharing: .quorum(2))
        var healthy = SharedBreakerCoordinator(nodeID: "ok", sharing: .quorum(2))
        for t in stride(from: Int64(0), to: 100_000, by: 5_000) {
            let actions = sick.localTransition(trip(), config: config, atRedisMs: t)
            #expect(actions == [.castVote(nodeID: "sick")])
            #expect(healthy.receiveVote(nodeID: "sick", atRedisMs: t, config: config) == [])
        }
        #expect(!sick.isClusterOpen && !healthy.isClusterOpen)
    }

    @Test("aggregate: cluster-wide rates from fresh counters of the current epoch")
    func aggregate() {
        var a = SharedBreakerCoordinator(nodeID: "a", sharing: .aggregate, counterStaleAfterMs: 3_000)
        #expect(a.localTransition(trip(), config: config, atRedisMs: 0) == [.flushCounters])
        // 3 nodes: a 8/10 failed, b 0/10, c 1/10 → 9/30 = 30 % < 50 %.
        a.receiveCounters(nodeID: "a", counters: WindowCounters(calls: 10, failed: 8, slow: 0), epoch: 0, atRedisMs: 1_000)
        a.receiveCounters(nodeID: "b", counters: WindowCounters(calls: 10, failed: 0, slow: 0), epoch: 0, atRedisMs: 1_000)
        a.receiveCounters(nodeID: "c", counters: WindowCounters(calls: 10, failed: 1, slow: 0), epoch: 0, atRedisMs: 1_000)
        #expect(a.evaluateAggregate(config: config, atRedisMs: 1_100).0 == .healthy(failureRate: 30, slowCallRate: 0))
        #expect(a.tally.contributors(epoch: 0, atRedisMs: 1_100) == ["a", "b", "c"])
        // b's newer counters: 9 failed → 18/30 = 60 %: trip.
        a.receiveCounters(nodeID: "b", counters: WindowCounters(calls: 10, failed: 9, slow: 0), epoch: 0, atRedisMs: 1_200)
        // An older publication of b does not replace the newer one.
        a.receiveCounters(nodeID: "b", counters: WindowCounters(calls: 10, failed: 0, slow: 0), epoch: 0, atRedisMs: 1_150)
        let (verdict, actions) = a.evaluateAggregate(config: config, atRedisMs: 1_300)
        #expect(verdict == .trip(reason: .failureRate, failureRate: 60, slowCallRate: 0))
        #expect(actions == [.propose(SharedBreakerProposal(expectedVersion: 0, state: .open, reason: .failureRate, originNode: "a", openWaitMs: 1_000, consecutiveOpenings: 1))])
        #expect(a.evaluateAggregate(config: config, atRedisMs: 1_300).1 == [])  // pending
        // Stale: at 4 000, a/c (published at 1 000) dropped out; b alone 9/10 still trips.
        #expect(a.tally.totals(epoch: 0, atRedisMs: 4_000) == WindowCounters(calls: 10, failed: 9, slow: 0))
        #expect(a.tally.totals(epoch: 0, atRedisMs: 4_200) == .zero)
        // Counters of another epoch never count.
        _ = a.receive(record(.closed, version: 2))
        a.receiveCounters(nodeID: "c", counters: WindowCounters(calls: 10, failed: 10, slow: 0), epoch: 1, atRedisMs: 5_000)
        #expect(a.evaluateAggregate(config: config, atRedisMs: 5_000).0 == .notEnoughCalls(calls: 0, minimum: 10))
        a.receiveCounters(nodeID: "c", counters: WindowCounters(calls: 10, failed: 0, slow: 10), epoch: 2, atRedisMs: 5_000)
        #expect(a.evaluateAggregate(config: config, atRedisMs: 5_000).0 == .trip(reason: .slowCallRate, failureRate: 0, slowCallRate: 100))
        // Another policy ignores counters.
        var b = SharedBreakerCoordinator(nodeID: "b", sharing: .any)
        b.receiveCounters(nodeID: "c", counters: WindowCounters(calls: 10, failed: 10, slow: 0), epoch: 0, atRedisMs: 0)
        #expect(b.tally.entries.isEmpty)
        var tally = ClusterWindowTally(staleAfterMs: 10)
        tally.update(nodeID: "x", counters: WindowCounters(calls: 1, failed: 1, slow: 1), epoch: 0, atRedisMs: 0)
        tally.prune(atRedisMs: 10)
        #expect(tally.entries.isEmpty)
    }

    @Test("the aggregate minimum follows the breaker's rule")
    func aggregateMinimum() {
        let timeConfig = BreakerConfig(window: .time(seconds: 10), minimumCalls: 20)
        #expect(ClusterWindowTally.verdict(WindowCounters(calls: 19, failed: 19, slow: 0), config: timeConfig) == .notEnoughCalls(calls: 19, minimum: 20))
        #expect(ClusterWindowTally.verdict(WindowCounters(calls: 20, failed: 10, slow: 0), config: timeConfig) == .trip(reason: .failureRate, failureRate: 50, slowCallRate: 0))
        let countConfig = BreakerConfig(window: .count(5), minimumCalls: 100)
        #expect(ClusterWindowTally.verdict(WindowCounters(calls: 5, failed: 2, slow: 0), config: countConfig) == .healthy(failureRate: 40, slowCallRate: 0))
        #expect(ClusterWindowTally.verdict(.zero, config: countConfig) == .notEnoughCalls(calls: 0, minimum: 5))
    }

    @Test("half-open verdicts go to the cluster only when the cluster is open")
    func halfOpenVerdicts() {
        var node = SharedBreakerCoordinator(nodeID: "a", sharing: .quorum(2))
        // A local-only episode: closes locally.
        #expect(node.localTransition(trip(from: .halfOpen, to: .closed, .probesSucceeded), config: config, atRedisMs: 0) == [])
        _ = node.receive(record(.open, version: 4, openings: 2, until: 1_000))
        let reopened = node.localTransition(trip(from: .halfOpen, to: .open, .probesFailed), config: clusterBreakerConfig(openWaitMultiplier: 2), atRedisMs: 1_500)
        #expect(reopened == [.propose(SharedBreakerProposal(expectedVersion: 4, state: .open, reason: .probesFailed, originNode: "a", openWaitMs: 4_000, consecutiveOpenings: 3))])
        node.proposalFailed()
        let closed = node.localTransition(trip(from: .halfOpen, to: .closed, .probesSucceeded), config: config, atRedisMs: 1_500)
        #expect(closed == [.propose(SharedBreakerProposal(expectedVersion: 4, state: .closed, reason: .probesSucceeded, originNode: "a"))])
        node.proposalFailed()
        #expect(node.probeRoundCompleted(ProbeRoundTally(recorded: 2, failed: 0, slow: 0), config: config) == [])
        #expect(node.probeRoundCompleted(ProbeRoundTally(recorded: 3, failed: 2, slow: 0), config: config).first == .propose(SharedBreakerProposal(expectedVersion: 4, state: .open, reason: .probesFailed, originNode: "a", openWaitMs: 1_000, consecutiveOpenings: 3)))
        node.proposalFailed()
        #expect(node.probeRoundCompleted(ProbeRoundTally(recorded: 3, failed: 1, slow: 0), config: config).first == .propose(SharedBreakerProposal(expectedVersion: 4, state: .closed, reason: .probesSucceeded, originNode: "a")))
        node.setSharing(.local)
        #expect(node.probeRoundCompleted(ProbeRoundTally(recorded: 3), config: config) == [])
    }

    @Test("probe leases: exactly the permitted number cluster-wide per round")
    func probeLeases() {
        let leases = [
            ProbeLease(slot: 0, holder: "a", round: 4, expiresAtRedisMs: 2_000),
            ProbeLease(slot: 1, holder: "b", round: 4, expiresAtRedisMs: 500, completed: true),
            ProbeLease(slot: 2, holder: "c", round: 4, expiresAtRedisMs: 1_000),  // lapses at 1 000
            ProbeLease(slot: 2, holder: "c", round: 3, expiresAtRedisMs: 9_000),  // another round
            ProbeLease(slot: 7, holder: "d", round: 4, expiresAtRedisMs: 9_000),  // out of range
        ]
        #expect(ProbeLeasing.freeSlots(permitted: 3, leases: leases, round: 4, atRedisMs: 999) == [])
        #expect(ProbeLeasing.remaining(permitted: 3, leases: leases, round: 4, atRedisMs: 999) == 0)
        #expect(ProbeLeasing.freeSlots(permitted: 3, leases: leases, round: 4, atRedisMs: 1_000) == [2])
        #expect(ProbeLeasing.freeSlots(permitted: 3, leases: leases, round: 4, atRedisMs: 2_000) == [0, 2])
        #expect(ProbeLeasing.remaining(permitted: 5, leases: leases, round: 4, atRedisMs: 0) == 2)
        #expect(ProbeLeasing.remaining(permitted: 0, leases: [], round: 4, atRedisMs: 0) == 0)
        #expect(ProbeLeasing.remaining(permitted: 3, leases: leases, round: 5, atRedisMs: 0) == 3)
        #expect(ProbeRoundTally(recorded: 1).verdict(config: config) == .pending(remaining: 2))
        #expect(ProbeRoundTally(recorded: 3, failed: 1, slow: 0).verdict(config: config) == .close(failureRate: 100.0 / 3, slowCallRate: 0))
        #expect(ProbeRoundTally(recorded: 3, failed: 0, slow: 3).verdict(config: config) == .reopen(failureRate: 0, slowCallRate: 100))
    }

    /// Five nodes with real breakers, an in-memory "Redis" running the CAS script semantics, a bus that
    /// delivers every published record, and lease-coordinated probes.
    @Test("any: one node's trip opens all five; exactly the permitted probes run; the verdict closes all")
    func fiveNodeSimulation() {
        let config = clusterBreakerConfig(openWaitMs: 1_000, halfOpenPermittedCalls: 3)
        let ids = ["n1", "n2", "n3", "n4", "n5"]
        var breakers = ids.map { _ in CircuitBreaker(config: config, now: .zero) }
        var coordinators = ids.map { SharedBreakerCoordinator(nodeID: $0, sharing: .any) }
        var redis: SharedBreakerState?
        var leases: [ProbeLease] = []
        var roundTally = ProbeRoundTally()
        let redisOffset: Int64 = 1_000_000  // Redis clock = local clock + offset on every node

        func handle(_ actions: [SharedBreakerAction], node: Int, nowMs: Int64) {
            for action in actions {
                switch action {
                case .propose(let proposal):
                    switch proposal.apply(to: redis, redisNowMs: nowMs + redisOffset) {
                    case .written(let record):
                        redis = record
                        for index in ids.indices { handle(coordinators[index].receive(record), node: index, nowMs: nowMs) }
                    case .conflict(let current):
                        if let current { handle(coordinators[node].receive(current), node: node, nowMs: nowMs) }
                    }
                case .adopt(let record):
                    let until = record.localOpenUntil(redisNowMs: nowMs + redisOffset, now: .milliseconds(nowMs))
                    if let transition = breakers[node].adopt(state: record.state, openUntil: until, now: .milliseconds(nowMs)) {
                        handle(coordinators[node].localTransition(transition, config: config, atRedisMs: nowMs + redisOffset), node: node, nowMs: nowMs)
                    }
                case .castVote, .flushCounters:
                    Issue.record("unexpected \(action)")
                }
            }
        }

        // n3 sees 10 failures and trips.
        for _ in 0..<10 {
            let permit = breakers[2].acquire(now: .milliseconds(10)).permit!
            if let transition = breakers[2].record(.failure, duration: .milliseconds(1), permit: permit, now: .milliseconds(10)) {
                handle(coordinators[2].localTransition(transition, config: config, atRedisMs: 10 + redisOffset), node: 2, nowMs: 10)
            }
        }
        #expect(redis?.version == 1 && redis?.state == .open && redis?.openUntilRedisMs == 1_010 + redisOffset)
        for index in ids.indices {
            #expect(breakers[index].state == .open, "\(ids[index])")
            #expect(breakers[index].openUntil == .milliseconds(1_010))
        }

        // After the wait every node tries two calls; a probe needs a cluster lease (SET NX PX).
        var running: [(node: Int, permit: BreakerPermit, lease: Int)] = []
        var rejected = 0
        for attempt in 0..<2 {
            for index in ids.indices {
                let now: Int64 = 1_100 + Int64(attempt)
                guard let permit = breakers[index].acquire(now: .milliseconds(now)).permit else { rejected += 1; continue }
                #expect(permit.state == .halfOpen)
                let free = ProbeLeasing.freeSlots(
                    permitted: config.halfOpenPermittedCalls, leases: leases, round: redis!.version, atRedisMs: now + redisOffset)
                guard let slot = free.first else {
                    // No lease: hand the local probe permit back and reject the call.
                    _ = breakers[index].record(.ignored, duration: .zero, permit: permit, now: .milliseconds(now))
                    rejected += 1
                    continue
                }
                leases.append(ProbeLease(slot: slot, holder: ids[index], round: redis!.version, expiresAtRedisMs: now + redisOffset + 60_000))
                running.append((index, permit, leases.count - 1))
            }
        }
        #expect(running.map(\.node) == [0, 1, 2])
        #expect(rejected == 7)
        // The probes succeed: each lease completes and the cluster tally counts it; the last one decides.
        for probe in running {
            let now: Int64 = 1_200
            leases[probe.lease].completed = true
            roundTally.recorded += 1
            if let transition = breakers[probe.node].record(.success, duration: .milliseconds(1), permit: probe.permit, now: .milliseconds(now)) {
                handle(coordinators[probe.node].localTransition(transition, config: config, atRedisMs: now + redisOffset), node: probe.node, nowMs: now)
            }
            handle(coordinators[probe.node].probeRoundCompleted(roundTally, config: config), node: probe.node, nowMs: now)
        }
        #expect(redis?.state == .closed && redis?.version == 2 && redis?.reason == .probesSucceeded)
        for index in ids.indices { #expect(breakers[index].state == .closed, "\(ids[index])") }
    }
}
