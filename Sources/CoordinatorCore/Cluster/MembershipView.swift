/// A change of the live member set, reported by ``MembershipView/reconcile(atRedisMs:)``.
public enum MembershipEvent: Sendable, Equatable, Hashable {
    /// Why a member left the live set.
    public enum LeaveReason: String, Sendable, Equatable, Hashable {
        /// It announced its leave (graceful shutdown).
        case announced
        /// Its heartbeats stopped for longer than the liveness window.
        case expired
        /// It came back with another incarnation (a restart); a `joined` event follows.
        case restarted
    }

    /// A node entered the live set.
    case joined(nodeID: String, incarnation: UInt64)
    /// A node left the live set.
    case left(nodeID: String, incarnation: UInt64, reason: LeaveReason)
}

/// One member as seen at an instant, for `GET /v1/cluster`.
public struct MemberStatus: Sendable, Equatable, Hashable {
    /// The node id.
    public var nodeID: String
    /// Its current incarnation.
    public var incarnation: UInt64
    /// Redis time of its newest heartbeat.
    public var lastHeartbeatRedisMs: Int64
    /// Milliseconds since that heartbeat (never negative).
    public var heartbeatAgeMs: Int64
    /// Whether it is live (heartbeat age below the liveness window, no leave announced since).
    public var isLive: Bool

    /// Creates a status.
    public init(nodeID: String, incarnation: UInt64, lastHeartbeatRedisMs: Int64, heartbeatAgeMs: Int64, isLive: Bool) {
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.lastHeartbeatRedisMs = lastHeartbeatRedisMs
        self.heartbeatAgeMs = heartbeatAgeMs
        self.isLive = isLive
    }
}

/// The cluster's members as this node knows them, from heartbeats stamped with Redis time.
///
/// A member is live at Redis time `t` when its newest heartbeat `h` satisfies `t - h < livenessWindowMs`
/// and no leave was announced after it. Heartbeats may arrive out of order: only the newest counts. A
/// leave announced at `l` hides the member until a heartbeat newer than `l`, or one from another
/// incarnation, arrives (so a delayed heartbeat cannot resurrect a node that left); a leave from an
/// older incarnation than the member's current one is ignored.
///
/// **Last known membership.** When shared state (Redis) is lost, heartbeats stop arriving and every peer
/// would soon look dead, so each node would enforce the *whole* limit. ``freeze(atRedisMs:)`` records
/// the live count at the moment of loss; until ``unfreeze()``, ``shareDivisor(atRedisMs:)`` returns
/// that count and ``reconcile(atRedisMs:)`` reports nothing.
public struct MembershipView: Sendable {
    /// Heartbeat age, in milliseconds, at which a member stops being live (default 3 000).
    public let livenessWindowMs: Int64

    struct Member: Sendable {
        var incarnation: UInt64
        var lastHeartbeatRedisMs: Int64
        /// Redis time of an announced leave not yet superseded by a newer heartbeat.
        var leftAtRedisMs: Int64?
    }

    var members: [String: Member]
    /// What the last `reconcile` reported as live: node id → incarnation.
    var reported: [String: UInt64]
    /// The live count frozen at the loss of shared state.
    var frozenCount: Int?

    /// Creates an empty view.
    public init(livenessWindowMs: Int64 = 3_000) {
        precondition(livenessWindowMs > 0)
        self.livenessWindowMs = livenessWindowMs
        self.members = [:]
        self.reported = [:]
        self.frozenCount = nil
    }

    // MARK: Events in

    /// Records a heartbeat of `nodeID` (incarnation `incarnation`) stamped `redisTimeMs`.
    public mutating func heartbeat(nodeID: String, redisTimeMs: Int64, incarnation: UInt64) {
        guard var member = members[nodeID] else {
            members[nodeID] = Member(incarnation: incarnation, lastHeartbeatRedisMs: redisTimeMs, leftAtRedisMs: nil)
            return
        }
        if member.incarnation != incarnation {
            // A restart (or a late heartbeat of the previous process): the newer heartbeat wins.
            guard redisTimeMs >= member.lastHeartbeatRedisMs || member.leftAtRedisMs != nil else { return }
            member = Member(incarnation: incarnation, lastHeartbeatRedisMs: redisTimeMs, leftAtRedisMs: nil)
        } else {
            member.lastHeartbeatRedisMs = max(member.lastHeartbeatRedisMs, redisTimeMs)
            if let left = member.leftAtRedisMs, redisTimeMs > left { member.leftAtRedisMs = nil }
        }
        members[nodeID] = member
    }

    /// Records an announced leave. `incarnation` nil applies to whatever incarnation is current.
    public mutating func leave(nodeID: String, incarnation: UInt64? = nil, redisTimeMs: Int64) {
        guard var member = members[nodeID] else { return }
        if let incarnation, incarnation != member.incarnation { return }
        guard redisTimeMs >= member.lastHeartbeatRedisMs else { return }
        member.leftAtRedisMs = max(member.leftAtRedisMs ?? Int64.min, redisTimeMs)
        members[nodeID] = member
    }

    /// Forgets members neither live nor heard from for `retainMs` (default 10 × the liveness window)
    /// at `redisMs`, so the view stays bounded; returns how many. Reported-live members are kept.
    @discardableResult
    public mutating func prune(atRedisMs redisMs: Int64, retainMs: Int64? = nil) -> Int {
        let retain = retainMs ?? livenessWindowMs &* 10
        let before = members.count
        members = members.filter { id, member in
            reported[id] != nil || redisMs &- member.lastHeartbeatRedisMs < retain
        }
        return before - members.count
    }

    // MARK: Reading

    func isLive(_ member: Member, at redisMs: Int64) -> Bool {
        member.leftAtRedisMs == nil && redisMs &- member.lastHeartbeatRedisMs < livenessWindowMs
    }

    /// The live node ids at Redis time `redisMs`, sorted.
    public func live(atRedisMs redisMs: Int64) -> [String] {
        members.filter { isLive($0.value, at: redisMs) }.keys.sorted()
    }

    /// How many members are live at `redisMs`.
    public func liveCount(atRedisMs redisMs: Int64) -> Int {
        members.values.reduce(0) { $0 + (isLive($1, at: redisMs) ? 1 : 0) }
    }

    /// Milliseconds since `nodeID`'s newest heartbeat (nil if unknown; never negative).
    public func heartbeatAge(of nodeID: String, atRedisMs redisMs: Int64) -> Int64? {
        members[nodeID].map { max(0, redisMs &- $0.lastHeartbeatRedisMs) }
    }

    /// Every known member, sorted by node id.
    public func statuses(atRedisMs redisMs: Int64) -> [MemberStatus] {
        members.keys.sorted().map { id in
            let member = members[id]!
            return MemberStatus(
                nodeID: id, incarnation: member.incarnation, lastHeartbeatRedisMs: member.lastHeartbeatRedisMs,
                heartbeatAgeMs: max(0, redisMs &- member.lastHeartbeatRedisMs), isLive: isLive(member, at: redisMs))
        }
    }

    // MARK: Change detection

    /// The changes of the live set since the previous call, in a stable order (leaves, then joins, each
    /// sorted by node id). Nothing while frozen.
    public mutating func reconcile(atRedisMs redisMs: Int64) -> [MembershipEvent] {
        guard frozenCount == nil else { return [] }
        var current: [String: UInt64] = [:]
        for (id, member) in members where isLive(member, at: redisMs) { current[id] = member.incarnation }
        var leaves: [MembershipEvent] = []
        var joins: [MembershipEvent] = []
        for (id, incarnation) in reported.sorted(by: { $0.key < $1.key }) {
            if let now = current[id] {
                if now != incarnation {
                    leaves.append(.left(nodeID: id, incarnation: incarnation, reason: .restarted))
                    joins.append(.joined(nodeID: id, incarnation: now))
                }
            } else {
                let announced = members[id].map { $0.incarnation == incarnation && $0.leftAtRedisMs != nil } ?? false
                leaves.append(.left(nodeID: id, incarnation: incarnation, reason: announced ? .announced : .expired))
            }
        }
        for (id, incarnation) in current.sorted(by: { $0.key < $1.key }) where reported[id] == nil {
            joins.append(.joined(nodeID: id, incarnation: incarnation))
        }
        reported = current
        return leaves + joins
    }

    // MARK: Last known membership

    /// Whether the member count is frozen (shared state lost).
    public var isFrozen: Bool { frozenCount != nil }

    /// Freezes the member count at the live count at `redisMs` (at least 1: this node). Does nothing
    /// when already frozen, so the count of the *first* moment of loss is kept.
    public mutating func freeze(atRedisMs redisMs: Int64) {
        guard frozenCount == nil else { return }
        frozenCount = max(1, liveCount(atRedisMs: redisMs))
    }

    /// Ends the freeze: counts are live again (the next `reconcile` reports what changed meanwhile).
    public mutating func unfreeze() { frozenCount = nil }

    /// The number of members a shared limit is divided by: the frozen count while frozen, otherwise the
    /// live count at `redisMs` (at least 1).
    public func shareDivisor(atRedisMs redisMs: Int64) -> Int {
        frozenCount ?? max(1, liveCount(atRedisMs: redisMs))
    }

    /// ⌈limit / max(1, liveMembers)⌉: the part of a cluster-wide limit one node enforces alone.
    /// A non-positive limit gives 0.
    public static func localShare(of limit: Int, liveMembers: Int) -> Int {
        guard limit > 0 else { return 0 }
        let divisor = max(1, liveMembers)
        return (limit - 1) / divisor + 1
    }
}
