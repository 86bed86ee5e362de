/// What the ``ReplayGuard`` says about an authenticated message.
public enum ReplayVerdict: Sendable, Equatable, Hashable {
    /// New: process it. `missed` counts the sequence numbers skipped since the sender's previous highest
    /// (0 normally; more means messages were lost and the receiver may want to reconcile at once).
    case accepted(missed: UInt64)
    /// Already seen, or more than ``ReplayGuard/windowSize`` behind the sender's highest sequence.
    case replayed
    /// Its Redis time is more than `maxAge` behind the newest Redis time seen.
    case stale
}

/// Drops replayed and stale bus messages, in bounded memory.
///
/// Per sender — (node id, incarnation) — it keeps the highest sequence seen and a 64-wide bitmap of
/// the sequences just below it (IPsec-style anti-replay window). Independently, a message whose Redis
/// time is more than `maxAge` behind the newest Redis time the receiver knows is `stale`; this is what
/// stops a recording of an old incarnation (one no longer tracked) from being replayed.
///
/// Memory: senders not heard from for more than `maxAge` are forgotten by ``sweep()`` (their messages
/// would be stale anyway). At most `maximumSenders` are tracked; when a new sender arrives at the cap,
/// idle senders are swept, then the least recently heard one is evicted and the guard remembers the
/// newest Redis time of any evicted sender (``evictionFloorMs``): a message from an *untracked* sender
/// at or before that time is rejected as stale, so eviction never reopens a replay window.
///
/// `newestRedisMs` advances with every accepted message and with ``observe(redisTimeMs:)`` (the node
/// should feed it the Redis `TIME` it learns from heartbeats). Only authenticated messages should be
/// checked, so a forger cannot push it forward.
public struct ReplayGuard: Sendable {
    /// How many sequences below the highest are remembered.
    public static let windowSize: UInt64 = 64

    /// Messages older than this, in Redis milliseconds, behind the newest Redis time are stale.
    public let maxAgeMs: Int64
    /// The most senders tracked at once.
    public let maximumSenders: Int
    /// The newest Redis time seen (Int64.min before any).
    public private(set) var newestRedisMs: Int64
    /// Untracked senders' messages at or before this Redis time are stale (Int64.min until an eviction).
    public private(set) var evictionFloorMs: Int64

    struct SenderKey: Hashable, Sendable {
        var nodeID: String
        var incarnation: UInt64
    }

    struct SenderState: Sendable {
        var highest: UInt64
        /// Bit i set: sequence `highest - i` was seen.
        var bitmap: UInt64
        var lastHeardRedisMs: Int64
    }

    var senders: [SenderKey: SenderState]

    /// Creates a guard. `maxAgeMs` defaults to 30 s; `maximumSenders` to 4096.
    public init(maxAgeMs: Int64 = 30_000, maximumSenders: Int = 4096) {
        precondition(maxAgeMs > 0 && maximumSenders > 0)
        self.maxAgeMs = maxAgeMs
        self.maximumSenders = maximumSenders
        self.newestRedisMs = Int64.min
        self.evictionFloorMs = Int64.min
        self.senders = [:]
    }

    /// How many senders are tracked.
    public var trackedSenders: Int { senders.count }

    /// Whether (node, incarnation) is tracked.
    public func isTracking(nodeID: String, incarnation: UInt64) -> Bool {
        senders[SenderKey(nodeID: nodeID, incarnation: incarnation)] != nil
    }

    /// Advances the newest Redis time known (never moves it back).
    public mutating func observe(redisTimeMs: Int64) {
        if redisTimeMs > newestRedisMs { newestRedisMs = redisTimeMs }
    }

    /// Whether a message stamped `redisTimeMs` is stale now.
    public func isStale(redisTimeMs: Int64) -> Bool {
        newestRedisMs != Int64.min && redisTimeMs < newestRedisMs &- maxAgeMs
    }

    /// Checks an authenticated message and, when accepted, records it.
    public mutating func check(nodeID: String, incarnation: UInt64, sequence: UInt64, redisTimeMs: Int64) -> ReplayVerdict {
        if isStale(redisTimeMs: redisTimeMs) { return .stale }
        let key = SenderKey(nodeID: nodeID, incarnation: incarnation)
        guard var state = senders[key] else {
            if redisTimeMs <= evictionFloorMs { return .stale }
            if senders.count >= maximumSenders { makeRoom() }
            senders[key] = SenderState(highest: sequence, bitmap: 1, lastHeardRedisMs: redisTimeMs)
            observe(redisTimeMs: redisTimeMs)
            return .accepted(missed: 0)
        }
        var missed: UInt64 = 0
        if sequence > state.highest {
            let shift = sequence - state.highest
            missed = shift - 1
            state.bitmap = shift >= Self.windowSize ? 1 : (state.bitmap << shift) | 1
            state.highest = sequence
        } else {
            let behind = state.highest - sequence
            guard behind < Self.windowSize else { return .replayed }
            let bit: UInt64 = 1 << behind
            guard state.bitmap & bit == 0 else { return .replayed }
            state.bitmap |= bit
        }
        if redisTimeMs > state.lastHeardRedisMs { state.lastHeardRedisMs = redisTimeMs }
        senders[key] = state
        observe(redisTimeMs: redisTimeMs)
        return .accepted(missed: missed)
    }

    /// Forgets senders last heard more than `maxAge` before the newest Redis time; returns how many.
    @discardableResult
    public mutating func sweep() -> Int {
        guard newestRedisMs != Int64.min else { return 0 }
        let before = senders.count
        let cutoff = newestRedisMs &- maxAgeMs
        senders = senders.filter { $0.value.lastHeardRedisMs >= cutoff }
        return before - senders.count
    }

    mutating func makeRoom() {
        sweep()
        while senders.count >= maximumSenders {
            guard let oldest = senders.min(by: { $0.value.lastHeardRedisMs < $1.value.lastHeardRedisMs }) else { return }
            evictionFloorMs = max(evictionFloorMs, oldest.value.lastHeardRedisMs)
            senders.removeValue(forKey: oldest.key)
        }
    }
}
