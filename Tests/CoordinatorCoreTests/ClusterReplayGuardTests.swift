import CoordinatorCore
import Testing

@Suite("Cluster replay guard")
struct ClusterReplayGuardTests {
    @Test("in-order, duplicate, out-of-order within the window, too old, gaps")
    func sequences() {
        var guard_ = ReplayGuard()
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 1_000) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 2, redisTimeMs: 1_000) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 2, redisTimeMs: 1_000) == .replayed)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 1_000) == .replayed)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 6, redisTimeMs: 1_001) == .accepted(missed: 3))
        // 3, 4, 5 arrive late, once each.
        for late in [4, 3, 5] as [UInt64] {
            #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: late, redisTimeMs: 1_000) == .accepted(missed: 0))
            #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: late, redisTimeMs: 1_000) == .replayed)
        }
        // Exactly 63 behind is still in the window; 64 behind is not.
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 70, redisTimeMs: 1_002) == .accepted(missed: 63))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 7, redisTimeMs: 1_002) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 6, redisTimeMs: 1_002) == .replayed)
        // A jump of more than the window clears the bitmap.
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1_000, redisTimeMs: 1_003) == .accepted(missed: 929))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 999, redisTimeMs: 1_003) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1_000, redisTimeMs: 1_003) == .replayed)
        // Another incarnation, and another node, have their own sequences.
        #expect(guard_.check(nodeID: "a", incarnation: 2, sequence: 1, redisTimeMs: 1_003) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "b", incarnation: 1, sequence: 1, redisTimeMs: 1_003) == .accepted(missed: 0))
        #expect(guard_.trackedSenders == 3)
    }

    @Test("an exhaustive permutation check against a set of seen sequences")
    func modelCheck() {
        var random = SplitMix64(seed: 42)
        var guard_ = ReplayGuard()
        var seen: Set<UInt64> = []
        var highest: UInt64 = 0
        for _ in 0..<20_000 {
            let sequence = UInt64.random(in: 1...3_000, using: &random) / 3 + (highest > 100 ? highest - 100 : 0)
            let verdict = guard_.check(nodeID: "n", incarnation: 9, sequence: sequence, redisTimeMs: 5)
            let expectAccepted = !seen.contains(sequence) && (seen.isEmpty || sequence + 64 > highest)
            if expectAccepted {
                guard case .accepted = verdict else { Issue.record("\(sequence) refused, highest \(highest)"); return }
                seen.insert(sequence)
                highest = max(highest, sequence)
            } else {
                #expect(verdict == .replayed, "\(sequence) highest \(highest)")
            }
        }
    }

    @Test("stale relative to the newest Redis time, at the exact boundary")
    func staleness() {
        var guard_ = ReplayGuard(maxAgeMs: 30_000)
        #expect(!guard_.isStale(redisTimeMs: .min))
        guard_.observe(redisTimeMs: 100_000)
        guard_.observe(redisTimeMs: 50_000)  // never moves back
        #expect(guard_.newestRedisMs == 100_000)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 69_999) == .stale)
        #expect(guard_.trackedSenders == 0)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 70_000) == .accepted(missed: 0))
        // An accepted message advances the newest time.
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 2, redisTimeMs: 120_000) == .accepted(missed: 0))
        #expect(guard_.newestRedisMs == 120_000)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 3, redisTimeMs: 80_000) == .stale)
    }

    @Test("an old incarnation's recorded traffic is stale once forgotten")
    func oldIncarnationReplay() {
        var guard_ = ReplayGuard(maxAgeMs: 30_000)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 10_000) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "a", incarnation: 2, sequence: 1, redisTimeMs: 45_000) == .accepted(missed: 0))
        #expect(guard_.sweep() == 1)
        #expect(!guard_.isTracking(nodeID: "a", incarnation: 1))
        #expect(guard_.isTracking(nodeID: "a", incarnation: 2))
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 10_000) == .stale)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 2, redisTimeMs: 10_001) == .stale)
    }

    @Test("the sender cap evicts the least recently heard and keeps its replays out")
    func cap() {
        var guard_ = ReplayGuard(maxAgeMs: 30_000, maximumSenders: 2)
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 1_000) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "b", incarnation: 1, sequence: 1, redisTimeMs: 2_000) == .accepted(missed: 0))
        #expect(guard_.check(nodeID: "c", incarnation: 1, sequence: 1, redisTimeMs: 3_000) == .accepted(missed: 0))
        #expect(guard_.trackedSenders == 2)
        #expect(!guard_.isTracking(nodeID: "a", incarnation: 1))
        #expect(guard_.evictionFloorMs == 1_000)
        // a's recorded message is not accepted again although a is no longer tracked.
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 1, redisTimeMs: 1_000) == .stale)
        // a speaking later is a fresh sender again (and evicts b).
        #expect(guard_.check(nodeID: "a", incarnation: 1, sequence: 2, redisTimeMs: 3_500) == .accepted(missed: 0))
        #expect(guard_.evictionFloorMs == 2_000)
        #expect(guard_.trackedSenders == 2)
        // Idle senders are swept before anyone is evicted.
        guard_.observe(redisTimeMs: 33_400)
        #expect(guard_.check(nodeID: "d", incarnation: 1, sequence: 1, redisTimeMs: 33_400) == .accepted(missed: 0))
        #expect(guard_.isTracking(nodeID: "a", incarnation: 1))
        #expect(!guard_.isTracking(nodeID: "c", incarnation: 1))
        #expect(guard_.evictionFloorMs == 2_000)
    }
}

@Suite("Cluster membership view")
struct ClusterMembershipTests {
    @Test("liveness window boundary and heartbeat age")
    func liveness() {
        var view = MembershipView()
        view.heartbeat(nodeID: "b", redisTimeMs: 10_000, incarnation: 1)
        view.heartbeat(nodeID: "a", redisTimeMs: 10_500, incarnation: 1)
        view.heartbeat(nodeID: "a", redisTimeMs: 10_200, incarnation: 1)  // late, older: ignored
        #expect(view.live(atRedisMs: 12_999) == ["a", "b"])
        #expect(view.live(atRedisMs: 13_000) == ["a"])
        #expect(view.live(atRedisMs: 13_500) == [])
        #expect(view.heartbeatAge(of: "a", atRedisMs: 11_000) == 500)
        #expect(view.heartbeatAge(of: "a", atRedisMs: 9_000) == 0)
        #expect(view.heartbeatAge(of: "zz", atRedisMs: 9_000) == nil)
        #expect(view.liveCount(atRedisMs: 12_000) == 2)
        #expect(
            view.statuses(atRedisMs: 13_000) == [
                MemberStatus(nodeID: "a", incarnation: 1, lastHeartbeatRedisMs: 10_500, heartbeatAgeMs: 2_500, isLive: true),
                MemberStatus(nodeID: "b", incarnation: 1, lastHeartbeatRedisMs: 10_000, heartbeatAgeMs: 3_000, isLive: false),
            ])
    }

    @Test("reconcile reports joins, expiries, announced leaves and restarts once each")
    func reconcile() {
        var view = MembershipView(livenessWindowMs: 3_000)
        #expect(view.reconcile(atRedisMs: 0) == [])
        view.heartbeat(nodeID: "b", redisTimeMs: 0, incarnation: 1)
        view.heartbeat(nodeID: "a", redisTimeMs: 0, incarnation: 1)
        view.heartbeat(nodeID: "c", redisTimeMs: 0, incarnation: 1)
        #expect(
            view.reconcile(atRedisMs: 100) == [
                .joined(nodeID: "a", incarnation: 1), .joined(nodeID: "b", incarnation: 1), .joined(nodeID: "c", incarnation: 1),
            ])
        #expect(view.reconcile(atRedisMs: 200) == [])
        view.heartbeat(nodeID: "a", redisTimeMs: 2_000, incarnation: 1)
        view.heartbeat(nodeID: "b", redisTimeMs: 2_000, incarnation: 2)  // restarted
        view.leave(nodeID: "a", redisTimeMs: 2_500)
        #expect(
            view.reconcile(atRedisMs: 3_000) == [
                .left(nodeID: "a", incarnation: 1, reason: .announced), .left(nodeID: "b", incarnation: 1, reason: .restarted),
                .left(nodeID: "c", incarnation: 1, reason: .expired), .joined(nodeID: "b", incarnation: 2),
            ])
        #expect(view.reconcile(atRedisMs: 3_100) == [])
        // A delayed heartbeat older than the leave does not resurrect a; a newer one does.
        view.heartbeat(nodeID: "a", redisTimeMs: 2_400, incarnation: 1)
        #expect(view.live(atRedisMs: 3_200) == ["b"])
        view.heartbeat(nodeID: "a", redisTimeMs: 3_200, incarnation: 1)
        #expect(view.reconcile(atRedisMs: 3_300) == [.joined(nodeID: "a", incarnation: 1)])
    }

    @Test("leaves of another incarnation or older than the last heartbeat are ignored; unknown nodes too")
    func leaveRules() {
        var view = MembershipView()
        view.leave(nodeID: "ghost", redisTimeMs: 5)
        view.heartbeat(nodeID: "a", redisTimeMs: 1_000, incarnation: 2)
        view.leave(nodeID: "a", incarnation: 1, redisTimeMs: 1_500)
        view.leave(nodeID: "a", redisTimeMs: 900)
        #expect(view.live(atRedisMs: 1_600) == ["a"])
        view.leave(nodeID: "a", incarnation: 2, redisTimeMs: 1_500)
        #expect(view.live(atRedisMs: 1_600) == [])
        // A restart after a leave is live at once.
        view.heartbeat(nodeID: "a", redisTimeMs: 1_200, incarnation: 3)
        #expect(view.live(atRedisMs: 1_600) == ["a"])
        // A late heartbeat of a previous incarnation does not replace the current one.
        view.heartbeat(nodeID: "a", redisTimeMs: 1_100, incarnation: 2)
        #expect(view.statuses(atRedisMs: 1_600).first?.incarnation == 3)
    }

    @Test("local share is ceil(limit / max(1, live))")
    func localShare() {
        let cases: [(Int, Int, Int)] = [(10, 3, 4), (9, 3, 3), (10, 0, 10), (10, -2, 10), (1, 5, 1), (0, 3, 0), (-4, 2, 0), (100, 1, 100), (7, 7, 1), (8, 7, 2)]
        for (limit, live, share) in cases {
            #expect(MembershipView.localShare(of: limit, liveMembers: live) == share, "\(limit)/\(live)")
        }
    }

    @Test("last known membership: the count freezes at the moment of loss")
    func frozen() {
        var view = MembershipView()
        for id in ["a", "b", "c", "d"] { view.heartbeat(nodeID: id, redisTimeMs: 0, incarnation: 1) }
        _ = view.reconcile(atRedisMs: 0)
        #expect(view.shareDivisor(atRedisMs: 1_000) == 4)
        view.freeze(atRedisMs: 1_000)
        view.freeze(atRedisMs: 60_000)  // already frozen: keeps 4
        #expect(view.isFrozen)
        #expect(view.shareDivisor(atRedisMs: 60_000) == 4)
        #expect(view.live(atRedisMs: 60_000) == [])
        #expect(view.reconcile(atRedisMs: 60_000) == [])
        view.unfreeze()
        #expect(view.shareDivisor(atRedisMs: 60_000) == 1)
        #expect(view.reconcile(atRedisMs: 60_000).count == 4)
        var empty = MembershipView()
        empty.freeze(atRedisMs: 0)
        #expect(empty.shareDivisor(atRedisMs: 0) == 1)
    }

    @Test("prune keeps the view bounded")
    func prune() {
        var view = MembershipView(livenessWindowMs: 1_000)
        view.heartbeat(nodeID: "a", redisTimeMs: 0, incarnation: 1)
        view.heartbeat(nodeID: "b", redisTimeMs: 0, incarnation: 1)
        _ = view.reconcile(atRedisMs: 0)
        view.heartbeat(nodeID: "b", redisTimeMs: 9_500, incarnation: 1)
        #expect(view.prune(atRedisMs: 10_000) == 0)  // a is still reported live until reconciled
        _ = view.reconcile(atRedisMs: 10_000)
        #expect(view.prune(atRedisMs: 10_000) == 1)
        #expect(view.statuses(atRedisMs: 10_000).map(\.nodeID) == ["b"])
    }
}
