/// Timing of ``ReplicaTopology``: probe rates, quarantine backoff and staleness.
public struct TopologyConfiguration: Sendable, Equatable {
    /// How often every server is probed while a primary is known (default 500 ms).
    public var probeInterval: Span
    /// How often every server is probed while no primary is known (failover; default 100 ms).
    public var failoverProbeInterval: Span
    /// A replica whose newest observation is older than this is not used for reads (default: 3 probe
    /// intervals).
    public var staleAfter: Span
    /// The first quarantine backoff after a failed probe (default 250 ms); it doubles with every further
    /// consecutive failure up to ``quarantineMax``.
    public var quarantineBase: Span
    /// The longest quarantine backoff (default 5 s).
    public var quarantineMax: Span
    /// The share of a backoff that jitter may take off, in [0, 1] (default 0.2: a backoff `b` becomes a
    /// wait in (0.8 b, b]).
    public var jitterFraction: Double
    /// A probe that has not reported back after this long is issued again (default 2 s). The shell should
    /// time its probes out earlier and report a failure.
    public var probeTimeout: Span

    /// Creates a configuration; `staleAfter` defaults to 3 × `probeInterval`.
    public init(
        probeInterval: Span = .milliseconds(500), failoverProbeInterval: Span = .milliseconds(100),
        staleAfter: Span? = nil, quarantineBase: Span = .milliseconds(250), quarantineMax: Span = .seconds(5),
        jitterFraction: Double = 0.2, probeTimeout: Span = .seconds(2)
    ) {
        self.probeInterval = probeInterval
        self.failoverProbeInterval = failoverProbeInterval
        self.staleAfter = staleAfter ?? Span(nanoseconds: probeInterval.nanoseconds &* 3)
        self.quarantineBase = quarantineBase
        self.quarantineMax = quarantineMax
        self.jitterFraction = jitterFraction
        self.probeTimeout = probeTimeout
    }

    /// The defaults.
    public static let `default` = TopologyConfiguration()

    /// The rules this configuration breaks (empty when valid), keys under `prefix` (e.g. `postgres.routing`).
    public func validate(prefix: String = "routing") -> [ValidationError] {
        var errors: [ValidationError] = []
        func positive(_ span: Span, _ key: String) {
            if span.nanoseconds <= 0 { errors.append(ValidationError(key: "\(prefix).\(key)", reason: "must be positive")) }
        }
        positive(probeInterval, "probeIntervalMs")
        positive(failoverProbeInterval, "failoverProbeIntervalMs")
        positive(staleAfter, "staleAfterMs")
        positive(quarantineBase, "quarantineBaseMs")
        positive(probeTimeout, "probeTimeoutMs")
        if quarantineMax < quarantineBase {
            errors.append(ValidationError(key: "\(prefix).quarantineMaxMs", reason: "must be at least quarantineBaseMs"))
        }
        if !(0...1).contains(jitterFraction) {
            errors.append(ValidationError(key: "\(prefix).jitterFraction", reason: "must be in [0, 1]"))
        }
        return errors
    }
}

/// The role a server plays for routing. Raw values are the wire names.
public enum HostRole: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Not (or no longer) known: never probed successfully, or its last observation was invalidated.
    case unknown
    /// The one server writes go to.
    case primary
    /// A standby that may serve reads within bounds.
    case replica
    /// Its probes (or a write) failed: no traffic until a probe succeeds.
    case quarantined
    /// It claims to be a primary but lost a split-brain decision: no traffic at all.
    case fenced

    public var description: String { rawValue }
}

/// How fresh a read must be.
public enum ReadConsistency: Sendable, Equatable, Hashable {
    /// A replica whose lag is within both bounds (nil: unbounded), else the primary. Lag in bytes is the
    /// primary's current LSN minus the replica's replay LSN; lag in seconds see ``ReplicaTopology``.
    case fresh(maxLagBytes: UInt64?, maxLagSeconds: Double?)
    /// A replica that has replayed at least `lsn` (the LSN a client's write committed at), else the primary.
    case readYourWrites(LSN)
    /// The primary.
    case primary
}

/// What a caller wants to do.
public enum RouteRequest: Sendable, Equatable, Hashable {
    /// A write (or a read that must see every committed write): the primary.
    case write
    /// A read of the given consistency.
    case read(ReadConsistency)
}

/// Why a request went where it went. Raw values are the wire names.
public enum RouteReason: String, Sendable, Hashable, CaseIterable {
    /// A write, to the primary.
    case write
    /// A read that asked for the primary.
    case primaryRequested = "primary_requested"
    /// A read served by a replica within its bounds.
    case replica
    /// A read that no replica could serve within its bounds, sent to the primary.
    case fallbackToPrimary = "fallback_to_primary"
}

/// Where to send one request.
public struct RouteDecision: Sendable, Equatable, Hashable {
    /// The server.
    public var host: HostID
    /// Its role (``HostRole/primary`` or ``HostRole/replica``).
    public var role: HostRole
    /// Why.
    public var reason: RouteReason

    /// Creates a decision.
    public init(host: HostID, role: HostRole, reason: RouteReason) {
        self.host = host
        self.role = role
        self.reason = reason
    }
}

/// A request that cannot be routed now, with a stable code.
public struct RoutingError: Error, Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Stable, machine-readable codes.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// No primary is known (failover in progress, or every server is down). Retryable.
        case noPrimary = "no-primary"
        /// Several servers claim to be primary and none could be chosen; all of them are fenced. Retryable.
        case splitBrain = "split-brain"
    }

    /// The stable code.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// A hint for when to retry (the failover probe interval).
    public var retryAfter: Span

    /// Creates an error.
    public init(_ code: Code, _ message: String, retryAfter: Span) {
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    /// Whether retrying later may succeed (true for every current code).
    public var isRetryable: Bool { true }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// How a write on a connection to a server failed, as reported by the shell.
public enum WriteFailure: String, Sendable, Hashable, CaseIterable {
    /// The connection broke (or could not be made): the server may be down.
    case connectionLost = "connection_lost"
    /// The server refused the write as read-only (SQLSTATE 25006): it is no longer a primary.
    case readOnly = "read_only"
}

/// Why a server's role changed. Raw values are the wire names (log fields, metric labels).
public enum RoleChangeReason: String, Sendable, Hashable, CaseIterable {
    /// The first successful probe classified it.
    case discovered
    /// A probe saw a former replica (or a fenced or unknown server) accepting writes.
    case promoted
    /// A probe saw a former primary in recovery.
    case demoted
    /// Its probes failed.
    case probeFailed = "probe_failed"
    /// A write on it lost the connection.
    case writeConnectionLost = "write_connection_lost"
    /// A write on it was refused as read-only.
    case writeReadOnly = "write_read_only"
    /// A connection reported `in_hot_standby = on` for a server believed primary.
    case hotStandbyOn = "hot_standby_on"
    /// A probe succeeded again after failures.
    case recovered
    /// It lost a split-brain decision.
    case splitBrainLost = "split_brain_lost"
    /// It no longer takes part in a split brain (or won it).
    case splitBrainCleared = "split_brain_cleared"
}

/// A server's role changed.
public struct RoleChange: Sendable, Equatable, Hashable {
    /// The server.
    public var host: HostID
    /// The role left.
    public var from: HostRole
    /// The role entered.
    public var to: HostRole
    /// Why.
    public var reason: RoleChangeReason
    /// When.
    public var at: Instant

    /// Creates a change.
    public init(host: HostID, from: HostRole, to: HostRole, reason: RoleChangeReason, at: Instant) {
        self.host = host
        self.from = from
        self.to = to
        self.reason = reason
        self.at = at
    }
}

/// Something an operator must hear about.
public enum TopologyAlert: Sendable, Equatable, Hashable {
    /// Several servers claim to be primary. `primary` is the one chosen (nil: none could be, all fenced);
    /// every other claimant is fenced. Raised again when the set of claimants or the choice changes.
    case splitBrain(claimants: [HostID], primary: HostID?, at: Instant)
    /// At most one server claims to be primary again.
    case splitBrainResolved(at: Instant)
}

/// Several servers claim to be primary.
public struct SplitBrain: Sendable, Equatable, Hashable {
    /// Every reachable server that claims to be primary, in URL order.
    public var claimants: [HostID]
    /// The one chosen as primary (nil: none could be; all are fenced).
    public var primary: HostID?

    /// Creates the state.
    public init(claimants: [HostID], primary: HostID?) {
        self.claimants = claimants
        self.primary = primary
    }
}

/// Failover progress, for logs and metrics.
public enum FailoverEvent: Sendable, Equatable, Hashable {
    /// The primary `previous` was lost (`reason`); every server is probed at the failover rate.
    case started(previous: HostID, reason: RoleChangeReason, at: Instant)
    /// `primary` became the primary `after` the failover started.
    case completed(primary: HostID, after: Span, at: Instant)
}

/// What the shell must do after an input of ``ReplicaTopology``.
public enum TopologyAction: Sendable, Equatable, Hashable {
    /// Probe these servers now (concurrently) and report each outcome with
    /// ``ReplicaTopology/probeSucceeded(_:observation:at:)`` or ``ReplicaTopology/probeFailed(_:error:at:jitter:)``.
    case probe([HostID])
    /// Call ``ReplicaTopology/tick(now:)`` at this instant (replaces any earlier wake-up).
    case scheduleTick(at: Instant)
    /// A server's role changed.
    case roleChanged(RoleChange)
    /// Failover started or completed.
    case failover(FailoverEvent)
    /// Raise or clear an alert.
    case alert(TopologyAlert)
}

/// Monotonic counters for metrics.
public struct TopologyCounters: Sendable, Equatable, Hashable {
    /// Probes that succeeded.
    public var probesSucceeded: UInt64 = 0
    /// Probes that failed.
    public var probesFailed: UInt64 = 0
    /// Writes reported failed (``WriteFailure``).
    public var writeFailures: UInt64 = 0
    /// Role changes.
    public var roleChanges: UInt64 = 0
    /// Failovers started (a known primary was lost).
    public var failoversStarted: UInt64 = 0
    /// Failovers completed (a primary found again).
    public var failoversCompleted: UInt64 = 0
    /// Split brains detected (each episode once).
    public var splitBrains: UInt64 = 0
    /// Writes routed (to the primary).
    public var writesRouted: UInt64 = 0
    /// Reads routed to a replica.
    public var readsToReplica: UInt64 = 0
    /// Reads routed to the primary because they asked for it.
    public var readsToPrimary: UInt64 = 0
    /// Reads routed to the primary because no replica was within bounds.
    public var readFallbacks: UInt64 = 0
    /// Requests refused with a ``RoutingError``.
    public var routingErrors: UInt64 = 0

    /// All zero.
    public init() {}
}

/// One server as `GET /v1/cluster` shows it.
public struct HostStatus: Sendable, Equatable, Hashable {
    /// The server.
    public var id: HostID
    /// Its role for routing.
    public var role: HostRole
    /// What its last successful probe said it is (primary / replica), even while quarantined or fenced.
    public var observedRole: HostRole
    /// Its timeline, if known.
    public var timeline: UInt32?
    /// Replication lag in bytes (replicas; nil when unknown).
    public var lagBytes: UInt64?
    /// Received but not replayed bytes (replicas).
    public var replayBacklogBytes: UInt64?
    /// Replication lag in milliseconds (replicas; nil when unknown).
    public var lagMs: Int64?
    /// Whether replay is paused.
    public var replayPaused: Bool
    /// The WAL receiver status (replicas).
    public var walReceiverStatus: String?
    /// When the quarantine backoff ends (the next regular probe), while quarantined.
    public var quarantinedUntil: Instant?
    /// Whether it is fenced (split brain lost).
    public var fenced: Bool
    /// Whether a connection reported it left hot standby and no probe has confirmed the promotion yet.
    public var primaryCandidate: Bool
    /// Milliseconds since its last probe reported (success or failure); nil if never.
    public var lastProbeAgeMs: Int64?
    /// Milliseconds since its last successful probe; nil if never.
    public var lastSuccessAgeMs: Int64?
    /// Probe failures since the last success.
    public var consecutiveFailures: Int
    /// The last probe error, while failing.
    public var lastError: String?
    /// Requests started on it and not finished.
    public var outstandingRequests: Int

    /// Creates a status.
    public init(
        id: HostID, role: HostRole, observedRole: HostRole, timeline: UInt32?, lagBytes: UInt64?,
        replayBacklogBytes: UInt64?, lagMs: Int64?, replayPaused: Bool, walReceiverStatus: String?,
        quarantinedUntil: Instant?, fenced: Bool, primaryCandidate: Bool, lastProbeAgeMs: Int64?,
        lastSuccessAgeMs: Int64?, consecutiveFailures: Int, lastError: String?, outstandingRequests: Int
    ) {
        self.id = id
        self.role = role
        self.observedRole = observedRole
        self.timeline = timeline
        self.lagBytes = lagBytes
        self.replayBacklogBytes = replayBacklogBytes
        self.lagMs = lagMs
        self.replayPaused = replayPaused
        self.walReceiverStatus = walReceiverStatus
        self.quarantinedUntil = quarantinedUntil
        self.fenced = fenced
        self.primaryCandidate = primaryCandidate
        self.lastProbeAgeMs = lastProbeAgeMs
        self.lastSuccessAgeMs = lastSuccessAgeMs
        self.consecutiveFailures = consecutiveFailures
        self.lastError = lastError
        self.outstandingRequests = outstandingRequests
    }
}

/// The topology at an instant, for `GET /v1/cluster`.
public struct TopologySnapshot: Sendable, Equatable, Hashable {
    /// Every server, in URL order.
    public var hosts: [HostStatus]
    /// The primary, if one is known.
    public var primary: HostID?
    /// When the current failover started (nil when a primary is known or none was ever lost).
    public var failoverSince: Instant?
    /// Whether a split-brain alert is raised.
    public var splitBrain: Bool
    /// The counters.
    public var counters: TopologyCounters

    /// Creates a snapshot.
    public init(hosts: [HostStatus], primary: HostID?, failoverSince: Instant?, splitBrain: Bool, counters: TopologyCounters) {
        self.hosts = hosts
        self.primary = primary
        self.failoverSince = failoverSince
        self.splitBrain = splitBrain
        self.counters = counters
    }
}
