/// The authoritative, cluster-wide record of one shared breaker, as kept in Redis.
///
/// Every write increments ``version``; nodes apply a record only if its version is newer than the one
/// they hold (``isNewer(than:)``). Times are on the Redis clock.
public struct SharedBreakerState: Sendable, Equatable, Hashable {
    /// The cluster-wide state.
    public var state: BreakerState
    /// Increases by one with every write.
    public var version: UInt64
    /// End of the open wait (Redis ms) when `state` is `open`; otherwise nil.
    public var openUntilRedisMs: Int64?
    /// Why the state was entered.
    public var reason: TransitionReason
    /// The node whose proposal wrote the record.
    public var originNode: String
    /// When the record was written (Redis ms).
    public var changedAtRedisMs: Int64
    /// Cluster-wide openings since the last close (drives the shared backoff); 0 when closed.
    public var consecutiveOpenings: Int

    /// Creates a record.
    public init(
        state: BreakerState, version: UInt64, openUntilRedisMs: Int64?, reason: TransitionReason,
        originNode: String, changedAtRedisMs: Int64, consecutiveOpenings: Int = 0
    ) {
        self.state = state
        self.version = version
        self.openUntilRedisMs = openUntilRedisMs
        self.reason = reason
        self.originNode = originNode
        self.changedAtRedisMs = changedAtRedisMs
        self.consecutiveOpenings = consecutiveOpenings
    }

    /// Whether this record should replace `other` (strictly newer version; anything beats nil).
    public func isNewer(than other: SharedBreakerState?) -> Bool {
        guard let other else { return true }
        return version > other.version
    }

    /// ``openUntilRedisMs`` on the node's monotonic clock: `now + (openUntil − redisNow)`, where
    /// `redisNowMs` is the node's estimate of the Redis clock at `now`. Nil unless open.
    public func localOpenUntil(redisNowMs: Int64, now: Instant) -> Instant? {
        guard state == .open, let until = openUntilRedisMs else { return nil }
        return now + .milliseconds(until &- redisNowMs)
    }

    /// Whether the cluster holds the breaker open (`open`, `half_open` or `forced_open`).
    public var isClusterOpen: Bool { state == .open || state == .halfOpen || state == .forcedOpen }

    // MARK: Payload

    /// The record as a bus payload (`breakerState`), prefixed by the breaker name.
    public func encodePayload(breaker: String) -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + breaker.utf8.count + originNode.utf8.count)
        writer.writeShortString(breaker)
        writer.writeShortString(state.rawValue)
        writer.write(version)
        writer.write(openUntilRedisMs == nil ? UInt8(0) : UInt8(1))
        writer.write(openUntilRedisMs ?? 0)
        writer.writeShortString(reason.rawValue)
        writer.writeShortString(originNode)
        writer.write(changedAtRedisMs)
        writer.write(UInt32(clamping: max(0, consecutiveOpenings)))
        return writer.bytes
    }

    /// Decodes ``encodePayload(breaker:)``: the breaker name and the record, or nil if malformed.
    public static func decodePayload(_ bytes: [UInt8]) -> (breaker: String, state: SharedBreakerState)? {
        var reader = ByteReader(bytes)
        guard let breaker = reader.readShortString(), ResourceName.isValid(breaker),
            let stateName = reader.readShortString(), let state = BreakerState(rawValue: stateName),
            let version = reader.readUInt64(), let hasUntil = reader.readUInt8(), hasUntil <= 1,
            let until = reader.readInt64(),
            let reasonName = reader.readShortString(), let reason = TransitionReason(rawValue: reasonName),
            let origin = reader.readShortString(), ResourceName.isValid(origin),
            let changedAt = reader.readInt64(), let openings = reader.readUInt32(), reader.isAtEnd
        else { return nil }
        return (
            breaker,
            SharedBreakerState(
                state: state, version: version, openUntilRedisMs: hasUntil == 1 ? until : nil, reason: reason,
                originNode: origin, changedAtRedisMs: changedAt, consecutiveOpenings: Int(openings))
        )
    }
}

/// A state change a node asks the cluster to make: the input of the compare-and-set transition script.
public struct SharedBreakerProposal: Sendable, Equatable, Hashable {
    /// The version the proposal is based on: the script writes only if Redis still holds it (0: no
    /// record yet). Nil for operator commands, which apply whatever the current version.
    public var expectedVersion: UInt64?
    /// The state to enter.
    public var state: BreakerState
    /// Why.
    public var reason: TransitionReason
    /// The proposing node.
    public var originNode: String
    /// For `open`: how long to stay open, from the script's Redis `TIME`.
    public var openWaitMs: Int64?
    /// The record's ``SharedBreakerState/consecutiveOpenings`` once written.
    public var consecutiveOpenings: Int

    /// Creates a proposal.
    public init(
        expectedVersion: UInt64?, state: BreakerState, reason: TransitionReason, originNode: String,
        openWaitMs: Int64? = nil, consecutiveOpenings: Int = 0
    ) {
        self.expectedVersion = expectedVersion
        self.state = state
        self.reason = reason
        self.originNode = originNode
        self.openWaitMs = openWaitMs
        self.consecutiveOpenings = consecutiveOpenings
    }

    /// The outcome of the compare-and-set.
    public enum Outcome: Sendable, Equatable, Hashable {
        /// The record was written (and should be published).
        case written(SharedBreakerState)
        /// Redis holds another version: the proposal is dropped; apply `current` instead.
        case conflict(current: SharedBreakerState?)
    }

    /// The transition script's semantics, for reference and tests: if `current`'s version (0 when
    /// nil) equals ``expectedVersion`` (or that is nil), write `version + 1` stamped with the Redis
    /// time `redisNowMs`; `openUntil = redisNowMs + openWaitMs` when opening.
    public func apply(to current: SharedBreakerState?, redisNowMs: Int64) -> Outcome {
        let currentVersion = current?.version ?? 0
        if let expectedVersion, expectedVersion != currentVersion { return .conflict(current: current) }
        let until: Int64? = state == .open ? redisNowMs &+ max(0, openWaitMs ?? 0) : nil
        return .written(
            SharedBreakerState(
                state: state, version: currentVersion &+ 1, openUntilRedisMs: until, reason: reason,
                originNode: originNode, changedAtRedisMs: redisNowMs,
                consecutiveOpenings: state == .closed ? 0 : consecutiveOpenings))
    }
}
