// The cluster bus frame. Big-endian throughout:
//
//   offset  size  field
//   0       2     magic 0xC0 0xB5
//   2       1     schema version (1)
//   3       1     message kind (BusMessageKind raw value)
//   4       1     cluster name length c (1...255)
//   5       c     cluster name (UTF-8)
//   5+c     1     node id length n (1...128, a ResourceName)
//   6+c     n     node id (ASCII)
//   ..      8     sender incarnation (UInt64)
//   ..      8     sequence (UInt64)
//   ..      8     sender's Redis-clock time in ms (Int64)
//   ..      4     payload length p (UInt32, ≤ maximumPayloadLength)
//   ..      p     payload
//   ..      32    MAC over every byte before it
//
// The frame's length must be exactly what its length fields say: trailing bytes are malformed.

/// Computes and checks the message authentication code of bus frames.
///
/// The node implements it with HMAC-SHA256 keyed by the cluster secret (swift-crypto); the core only
/// needs these two operations. `mac` must return exactly ``BusEnvelope/macLength`` bytes; `verify` must
/// compare in constant time.
public protocol MessageAuthenticator: Sendable {
    /// The MAC of `bytes` (``BusEnvelope/macLength`` bytes).
    func mac(_ bytes: [UInt8]) -> [UInt8]
    /// Whether `mac` is the MAC of `bytes`.
    func verify(_ bytes: [UInt8], mac: [UInt8]) -> Bool
}

/// What a bus message is about. Raw values are the wire codes; unknown codes are malformed.
public enum BusMessageKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// A shared breaker's authoritative record changed (payload: the record).
    case breakerState = 1
    /// A node's breaker tripped (policy `any`: a proposal to open everywhere).
    case breakerTrip = 2
    /// A node's window counters of a breaker (policy `aggregate`).
    case breakerCounters = 3
    /// A node's trip vote (policy `quorum(n)`).
    case breakerVote = 4
    /// A rate-limit policy was created, replaced or deleted.
    case policyChanged = 5
    /// A breaker's configuration was replaced.
    case breakerConfigChanged = 6
    /// A token was revoked.
    case tokenRevoked = 7
    /// A node joined the cluster.
    case memberJoined = 8
    /// A node left the cluster (graceful shutdown).
    case memberLeft = 9
    /// A node's heartbeat.
    case memberHeartbeat = 10
    /// Approximate-mode limiter consumption.
    case limiterSync = 11
    /// A half-open probe's outcome.
    case probeResult = 12
    /// An operator command on a breaker (force-open, disable, close…).
    case breakerCommand = 13

    /// The snake_case name, for logs and metric labels.
    public var description: String {
        switch self {
        case .breakerState: "breaker_state"
        case .breakerTrip: "breaker_trip"
        case .breakerCounters: "breaker_counters"
        case .breakerVote: "breaker_vote"
        case .policyChanged: "policy_changed"
        case .breakerConfigChanged: "breaker_config_changed"
        case .tokenRevoked: "token_revoked"
        case .memberJoined: "member_joined"
        case .memberLeft: "member_left"
        case .memberHeartbeat: "member_heartbeat"
        case .limiterSync: "limiter_sync"
        case .probeResult: "probe_result"
        case .breakerCommand: "breaker_command"
        }
    }
}

/// Why a frame is structurally unusable.
public enum BusMalformation: String, Sendable, Equatable, Hashable, CaseIterable {
    /// The frame ends before a field it announces.
    case truncated
    /// The first two bytes are not the bus magic.
    case badMagic = "bad_magic"
    /// A length field is out of its bounds (empty or too long a name, payload over the maximum).
    case lengthOutOfBounds = "length_out_of_bounds"
    /// Bytes follow the MAC.
    case trailingBytes = "trailing_bytes"
    /// The message kind code is unknown to this version.
    case unknownKind = "unknown_kind"
    /// The node id is not a valid resource name, or the cluster name is not UTF-8.
    case invalidName = "invalid_name"
}

/// Why a received frame was dropped. Never changes any state but the drop counters.
public enum BusRejection: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The frame could not be parsed.
    case malformed(BusMalformation)
    /// The frame's schema version is not one this node reads.
    case unsupportedVersion(UInt8)
    /// The frame names another cluster.
    case foreignCluster
    /// The MAC does not match (forged, corrupted, or another secret).
    case badSignature
    /// The sender's sequence was already seen, or is too far behind to be told apart from a replay.
    case replayed
    /// The frame's Redis time is older than the replay guard's `maxAge` behind the newest Redis time seen.
    case stale

    /// The reason as a metric label: `malformed`, `unsupported_version`, `foreign_cluster`,
    /// `bad_signature`, `replayed`, `stale`.
    public var label: String {
        switch self {
        case .malformed: "malformed"
        case .unsupportedVersion: "unsupported_version"
        case .foreignCluster: "foreign_cluster"
        case .badSignature: "bad_signature"
        case .replayed: "replayed"
        case .stale: "stale"
        }
    }

    public var description: String {
        switch self {
        case .malformed(let detail): "malformed(\(detail.rawValue))"
        case .unsupportedVersion(let version): "unsupported_version(\(version))"
        default: label
        }
    }
}

/// The outcome of decoding (and optionally replay-checking) a frame.
public enum BusDecodeResult: Sendable, Equatable {
    /// The frame is genuine (and, through ``BusInbox``, new).
    case accepted(BusEnvelope)
    /// The frame was dropped.
    case rejected(BusRejection)

    /// The envelope when accepted.
    public var envelope: BusEnvelope? {
        if case .accepted(let envelope) = self { return envelope }
        return nil
    }

    /// The rejection when rejected.
    public var rejection: BusRejection? {
        if case .rejected(let rejection) = self { return rejection }
        return nil
    }
}

/// One cluster bus message: who sent it, when (Redis clock), its place in the sender's sequence, and
/// an opaque payload whose meaning depends on ``kind``.
public struct BusEnvelope: Sendable, Equatable, Hashable {
    /// The cluster the message belongs to (1...255 UTF-8 bytes).
    public var clusterName: String
    /// The sending node's id (a ``ResourceName``).
    public var nodeID: String
    /// Random per sender process start, so a restarted node's sequence numbers never collide.
    public var incarnation: UInt64
    /// Per (node, incarnation), increasing by one per message.
    public var sequence: UInt64
    /// The sender's estimate of the Redis clock when it sent the message, in milliseconds.
    public var redisTimeMs: Int64
    /// What the message is about.
    public var kind: BusMessageKind
    /// The kind-specific body.
    public var payload: [UInt8]

    /// The schema version this code writes and reads.
    public static let schemaVersion: UInt8 = 1
    /// The two bytes every frame starts with.
    public static let magic: (UInt8, UInt8) = (0xC0, 0xB5)
    /// The MAC length (HMAC-SHA256).
    public static let macLength = 32
    /// The largest payload accepted by default: 1 MiB.
    public static let defaultMaximumPayloadLength = 1 << 20
    /// The longest cluster name, in UTF-8 bytes.
    public static let maximumClusterNameLength = 255
    /// Bytes of a frame besides the names and the payload.
    public static let fixedOverhead = 2 + 1 + 1 + 1 + 1 + 8 + 8 + 8 + 4 + macLength

    /// Creates an envelope.
    public init(
        clusterName: String, nodeID: String, incarnation: UInt64, sequence: UInt64, redisTimeMs: Int64,
        kind: BusMessageKind, payload: [UInt8] = []
    ) {
        self.clusterName = clusterName
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.sequence = sequence
        self.redisTimeMs = redisTimeMs
        self.kind = kind
        self.payload = payload
    }

    /// Whether a cluster name can be carried: 1...255 UTF-8 bytes.
    public static func isValidClusterName(_ name: String) -> Bool {
        let count = name.utf8.count
        return count >= 1 && count <= maximumClusterNameLength
    }

    /// The frame: header, payload, then `authenticator`'s MAC of everything before it.
    ///
    /// Preconditions (programming errors, not input errors): the cluster name is valid
    /// (``isValidClusterName(_:)``), the node id is a valid ``ResourceName``, the payload fits in
    /// `UInt32`, and the authenticator returns ``macLength`` bytes.
    public func encode(authenticator: some MessageAuthenticator) -> [UInt8] {
        precondition(Self.isValidClusterName(clusterName), "invalid cluster name")
        precondition(ResourceName.isValid(nodeID), "invalid node id")
        precondition(payload.count <= Int(UInt32.max), "payload too large")
        var writer = ByteWriter(capacity: Self.fixedOverhead + clusterName.utf8.count + nodeID.utf8.count + payload.count)
        writer.write(Self.magic.0)
        writer.write(Self.magic.1)
        writer.write(Self.schemaVersion)
        writer.write(kind.rawValue)
        writer.writeShortString(clusterName)
        writer.writeShortString(nodeID)
        writer.write(incarnation)
        writer.write(sequence)
        writer.write(redisTimeMs)
        writer.write(UInt32(payload.count))
        writer.write(payload)
        let mac = authenticator.mac(writer.bytes)
        precondition(mac.count == Self.macLength, "authenticator returned \(mac.count) bytes, expected \(Self.macLength)")
        writer.write(mac)
        return writer.bytes
    }

    /// Parses and authenticates `frame`, checking in this order: length and magic (`malformed`), schema
    /// version (`unsupportedVersion`), every length field and the kind (`malformed`), the cluster name
    /// (`foreignCluster`), the MAC (`badSignature`). Never traps and never reads past the input,
    /// whatever the bytes. Replays are not detected here; see ``BusInbox``.
    public static func decode(
        _ frame: [UInt8], expectedCluster: String, authenticator: some MessageAuthenticator,
        maximumPayloadLength: Int = defaultMaximumPayloadLength
    ) -> BusDecodeResult {
        var reader = ByteReader(frame)
        guard let m0 = reader.readUInt8(), let m1 = reader.readUInt8() else { return .rejected(.malformed(.truncated)) }
        guard m0 == magic.0, m1 == magic.1 else { return .rejected(.malformed(.badMagic)) }
        guard let version = reader.readUInt8() else { return .rejected(.malformed(.truncated)) }
        guard version == schemaVersion else { return .rejected(.unsupportedVersion(version)) }
        guard let kindCode = reader.readUInt8() else { return .rejected(.malformed(.truncated)) }

        guard let clusterLength = reader.readUInt8() else { return .rejected(.malformed(.truncated)) }
        guard clusterLength >= 1 else { return .rejected(.malformed(.lengthOutOfBounds)) }
        guard let clusterBytes = reader.readBytes(Int(clusterLength)) else { return .rejected(.malformed(.truncated)) }
        guard let nodeLength = reader.readUInt8() else { return .rejected(.malformed(.truncated)) }
        guard nodeLength >= 1, Int(nodeLength) <= ResourceName.maximumLength else {
            return .rejected(.malformed(.lengthOutOfBounds))
        }
        guard let nodeBytes = reader.readBytes(Int(nodeLength)) else { return .rejected(.malformed(.truncated)) }
        guard let incarnation = reader.readUInt64(), let sequence = reader.readUInt64(),
            let redisTimeMs = reader.readInt64(), let payloadLength = reader.readUInt32()
        else { return .rejected(.malformed(.truncated)) }
        guard UInt64(payloadLength) <= UInt64(max(0, maximumPayloadLength)) else {
            return .rejected(.malformed(.lengthOutOfBounds))
        }
        guard let payload = reader.readBytes(Int(payloadLength)) else { return .rejected(.malformed(.truncated)) }
        let signedLength = reader.offset
        guard let mac = reader.readBytes(macLength) else { return .rejected(.malformed(.truncated)) }
        guard reader.isAtEnd else { return .rejected(.malformed(.trailingBytes)) }
        guard let kind = BusMessageKind(rawValue: kindCode) else { return .rejected(.malformed(.unknownKind)) }

        guard let clusterName = String(validating: clusterBytes, as: UTF8.self) else {
            return .rejected(.malformed(.invalidName))
        }
        guard clusterName == expectedCluster else { return .rejected(.foreignCluster) }
        let nodeID = String(decoding: nodeBytes, as: UTF8.self)
        guard nodeBytes.allSatisfy({ $0 < 0x80 }), ResourceName.isValid(nodeID) else {
            return .rejected(.malformed(.invalidName))
        }
        guard authenticator.verify(Array(frame[0..<signedLength]), mac: mac) else { return .rejected(.badSignature) }
        return .accepted(
            BusEnvelope(
                clusterName: clusterName, nodeID: nodeID, incarnation: incarnation, sequence: sequence,
                redisTimeMs: redisTimeMs, kind: kind, payload: payload))
    }
}

/// Numbers a node's outgoing messages: one per process start (``incarnation``), sequence from 1.
public struct BusSender: Sendable {
    /// The cluster name written in every envelope.
    public let clusterName: String
    /// This node's id.
    public let nodeID: String
    /// This process's incarnation (random, chosen by the caller at start).
    public let incarnation: UInt64
    /// The sequence number of the last envelope made (0 before the first).
    public private(set) var lastSequence: UInt64

    /// Creates a sender. `incarnation` should be random per process start.
    public init(clusterName: String, nodeID: String, incarnation: UInt64) {
        self.clusterName = clusterName
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.lastSequence = 0
    }

    /// The next envelope, stamped with `redisTimeMs` (the node's estimate of the Redis clock).
    public mutating func envelope(kind: BusMessageKind, payload: [UInt8] = [], redisTimeMs: Int64) -> BusEnvelope {
        lastSequence &+= 1
        return BusEnvelope(
            clusterName: clusterName, nodeID: nodeID, incarnation: incarnation, sequence: lastSequence,
            redisTimeMs: redisTimeMs, kind: kind, payload: payload)
    }
}

/// The receiving side of the bus: decode, authenticate, then drop replays and stale frames.
///
/// Only authenticated frames reach the ``ReplayGuard``, so forged frames never change its state.
public struct BusInbox: Sendable {
    /// The cluster this node belongs to.
    public let clusterName: String
    /// The largest payload accepted.
    public let maximumPayloadLength: Int
    /// The replay and staleness state.
    public var replayGuard: ReplayGuard

    /// Creates an inbox for `clusterName`.
    public init(
        clusterName: String, replayGuard: ReplayGuard = ReplayGuard(),
        maximumPayloadLength: Int = BusEnvelope.defaultMaximumPayloadLength
    ) {
        self.clusterName = clusterName
        self.replayGuard = replayGuard
        self.maximumPayloadLength = maximumPayloadLength
    }

    /// Decodes `frame` (see ``BusEnvelope/decode(_:expectedCluster:authenticator:maximumPayloadLength:)``),
    /// then asks the replay guard: `replayed` and `stale` frames are rejected. An accepted frame is
    /// recorded as seen.
    public mutating func receive(_ frame: [UInt8], authenticator: some MessageAuthenticator) -> BusDecodeResult {
        let decoded = BusEnvelope.decode(
            frame, expectedCluster: clusterName, authenticator: authenticator,
            maximumPayloadLength: maximumPayloadLength)
        guard case .accepted(let envelope) = decoded else { return decoded }
        switch replayGuard.check(
            nodeID: envelope.nodeID, incarnation: envelope.incarnation, sequence: envelope.sequence,
            redisTimeMs: envelope.redisTimeMs)
        {
        case .accepted: return decoded
        case .replayed: return .rejected(.replayed)
        case .stale: return .rejected(.stale)
        }
    }
}
