/// One PostgreSQL server of a multi-host URL, named `host:port` (`[v6-address]:port` for IPv6).
///
/// Hosts are compared by their exact text: the shell should name a server the same way in the URL and
/// when it reads `pg_stat_wal_receiver.sender_host`, or split-brain resolution by sender cannot match
/// them (it then falls back to the incumbent, see ``ReplicaTopology``).
public struct HostID: Hashable, Sendable, CustomStringConvertible {
    /// The host name or address, without brackets.
    public var host: String
    /// The TCP port.
    public var port: Int

    /// The server at `host`:`port`.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6-address]:port`; nil when there is no port or it is not in 1...65535.
    public init?(_ text: some StringProtocol) {
        let text = String(text)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65_535).contains(port)
        else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { return nil }
        self.init(host: String(host), port: port)
    }

    /// `host:port`, with brackets around an IPv6 address.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What `pg_stat_wal_receiver` says about a replica's WAL receiver.
public struct WalReceiverInfo: Sendable, Equatable, Hashable {
    /// `status`: `streaming`, `starting`, `waiting`, `restarting`, `stopping` (nil when the view is empty:
    /// no receiver process runs).
    public var status: String?
    /// `sender_host`: the upstream server it streams (or tries to stream) from.
    public var senderHost: String?
    /// `sender_port`.
    public var senderPort: Int?

    /// Creates the receiver's state.
    public init(status: String?, senderHost: String? = nil, senderPort: Int? = nil) {
        self.status = status
        self.senderHost = senderHost
        self.senderPort = senderPort
    }

    /// Whether WAL is streaming (`status == "streaming"`).
    public var isStreaming: Bool { status == "streaming" }

    /// The upstream server, when both host and port are known.
    public var upstream: HostID? {
        guard let senderHost, let senderPort else { return nil }
        return HostID(host: senderHost, port: senderPort)
    }
}

/// What one successful probe of one server saw.
///
/// A probe the shell can run in one round trip (PostgreSQL 15; every value may be NULL → nil):
///
/// ```sql
/// SELECT pg_is_in_recovery(),
///        CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn() END,
///        pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(),
///        (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::int8,
///        (extract(epoch FROM clock_timestamp()) * 1000)::int8,
///        CASE WHEN NOT pg_is_in_recovery()
///             THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8
///             ELSE (SELECT received_tli FROM pg_stat_wal_receiver) END,
///        (SELECT status FROM pg_stat_wal_receiver), (SELECT sender_host FROM pg_stat_wal_receiver),
///        (SELECT sender_port FROM pg_stat_wal_receiver),
///        CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END
/// ```
public struct HostObservation: Sendable, Equatable, Hashable {
    /// `pg_is_in_recovery()`: true for a standby (replica), false for a server that accepts writes.
    public var inRecovery: Bool
    /// `pg_current_wal_lsn()` (primary only; nil on a standby).
    public var currentLSN: LSN?
    /// `pg_last_wal_receive_lsn()` (standby): WAL received and flushed.
    public var receiveLSN: LSN?
    /// `pg_last_wal_replay_lsn()` (standby): WAL replayed, i.e. visible to queries.
    public var replayLSN: LSN?
    /// `pg_last_xact_replay_timestamp()` in milliseconds since the Unix epoch (stamped by the primary
    /// that committed the transaction); nil before the first replayed commit.
    public var lastReplayTimestampMs: Int64?
    /// The server's `clock_timestamp()` in milliseconds since the Unix epoch, read by the same probe:
    /// replay lag in seconds is measured on the server's clock, never the node's.
    public var serverNowMs: Int64
    /// The timeline: for a primary the one it writes, for a standby the one it receives
    /// (`pg_stat_wal_receiver.received_tli`); nil when unknown.
    public var timeline: UInt32?
    /// The WAL receiver (standby only; nil when the view is empty or on a primary).
    public var walReceiver: WalReceiverInfo?
    /// Whether replay is paused or a pause was requested (`pg_get_wal_replay_pause_state()`).
    public var replayPaused: Bool

    /// Creates an observation.
    public init(
        inRecovery: Bool, currentLSN: LSN? = nil, receiveLSN: LSN? = nil, replayLSN: LSN? = nil,
        lastReplayTimestampMs: Int64? = nil, serverNowMs: Int64, timeline: UInt32? = nil,
        walReceiver: WalReceiverInfo? = nil, replayPaused: Bool = false
    ) {
        self.inRecovery = inRecovery
        self.currentLSN = currentLSN
        self.receiveLSN = receiveLSN
        self.replayLSN = replayLSN
        self.lastReplayTimestampMs = lastReplayTimestampMs
        self.serverNowMs = serverNowMs
        self.timeline = timeline
        self.walReceiver = walReceiver
        self.replayPaused = replayPaused
    }

    /// A primary writing at `currentLSN` on `timeline`.
    public static func primary(currentLSN: LSN, serverNowMs: Int64, timeline: UInt32? = nil) -> HostObservation {
        HostObservation(inRecovery: false, currentLSN: currentLSN, serverNowMs: serverNowMs, timeline: timeline)
    }

    /// A standby that received up to `receiveLSN` (default: `replayLSN`) and replayed up to `replayLSN`.
    public static func replica(
        replayLSN: LSN, receiveLSN: LSN? = nil, lastReplayTimestampMs: Int64? = nil, serverNowMs: Int64,
        timeline: UInt32? = nil, upstream: HostID? = nil, receiverStatus: String? = "streaming", replayPaused: Bool = false
    ) -> HostObservation {
        HostObservation(
            inRecovery: true, receiveLSN: receiveLSN ?? replayLSN, replayLSN: replayLSN,
            lastReplayTimestampMs: lastReplayTimestampMs, serverNowMs: serverNowMs, timeline: timeline,
            walReceiver: WalReceiverInfo(status: receiverStatus, senderHost: upstream?.host, senderPort: upstream?.port),
            replayPaused: replayPaused)
    }

    /// Bytes received but not yet replayed (`receive − replay`; 0 when either is unknown).
    public var replayBacklogBytes: UInt64 {
        guard let receiveLSN, let replayLSN else { return 0 }
        return receiveLSN.bytes(after: replayLSN)
    }

    /// The furthest position this server has: the current LSN of a primary, the replay LSN of a standby.
    public var position: LSN? { inRecovery ? replayLSN : currentLSN }
}
