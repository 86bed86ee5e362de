import CoordinatorCore

let hostA = HostID(host: "10.0.0.1", port: 5432)
let hostB = HostID(host: "10.0.0.2", port: 5432)
let hostC = HostID(host: "10.0.0.3", port: 5432)

/// Server wall-clock origin for observations (ms since the Unix epoch).
let wall: Int64 = 1_700_000_000_000

func at(_ ms: Int64) -> Instant { .milliseconds(ms) }
func lsn(_ value: UInt64) -> LSN { LSN(value) }

func primaryObservation(_ position: UInt64, nowMs: Int64 = 0, timeline: UInt32 = 1) -> HostObservation {
    .primary(currentLSN: LSN(position), serverNowMs: wall + nowMs, timeline: timeline)
}

func replicaObservation(
    replay: UInt64, receive: UInt64? = nil, lastReplayMs: Int64? = nil, nowMs: Int64 = 0, timeline: UInt32? = 1,
    upstream: HostID? = hostA, status: String? = "streaming", paused: Bool = false
) -> HostObservation {
    .replica(
        replayLSN: LSN(replay), receiveLSN: receive.map(LSN.init), lastReplayTimestampMs: lastReplayMs.map { wall + $0 },
        serverNowMs: wall + nowMs, timeline: timeline, upstream: upstream, receiverStatus: status, replayPaused: paused)
}

extension Array where Element == TopologyAction {
    var probes: [HostID] {
        flatMap { action -> [HostID] in
            if case .probe(let hosts) = action { return hosts }
            return []
        }
    }
    var roleChanges: [RoleChange] {
        compactMap { action in
            if case .roleChanged(let change) = action { return change }
            return nil
        }
    }
    var failoverEvents: [FailoverEvent] {
        compactMap { action in
            if case .failover(let event) = action { return event }
            return nil
        }
    }
    var alerts: [TopologyAlert] {
        compactMap { action in
            if case .alert(let alert) = action { return alert }
            return nil
        }
    }
    var scheduledTick: Instant? {
        compactMap { action -> Instant? in
            if case .scheduleTick(let at) = action { return at }
            return nil
        }.last
    }
}

/// A topology over A (primary at 0x1000), B and C (replicas caught up at 0x1000, streaming from A), all
/// probed once at t=10 ms; next probes due at 510 ms.
func steadyTopology(configuration: TopologyConfiguration = .default) -> ReplicaTopology {
    var topology = ReplicaTopology(hosts: [hostA, hostB, hostC], configuration: configuration)
    _ = topology.tick(now: at(0))
    _ = topology.probeSucceeded(hostA, observation: primaryObservation(0x1000, nowMs: 10), at: at(10))
    _ = topology.probeSucceeded(hostB, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 10), at: at(10))
    _ = topology.probeSucceeded(hostC, observation: replicaObservation(replay: 0x1000, lastReplayMs: 5, nowMs: 10), at: at(10))
    return topology
}

/// Runs a topology against a scripted set of servers: every probe is answered 1 ms after it is issued
/// (nil from `respond` = the probe fails), ticks fire when scheduled. Deterministic, no clock.
struct RoutingDriver {
    var topology: ReplicaTopology
    var now: Instant
    var wake: Instant?
    var pending: [HostID] = []
    /// Every probe issued, with its instant.
    var probeLog: [(at: Instant, host: HostID)] = []
    /// Every non-probe, non-tick action, in order.
    var events: [TopologyAction] = []
    var respond: (HostID, Instant) -> HostObservation?

    init(topology: ReplicaTopology, now: Instant, respond: @escaping (HostID, Instant) -> HostObservation?) {
        self.topology = topology
        self.now = now
        self.respond = respond
        apply(self.topology.tick(now: now))
    }

    mutating func apply(_ actions: [TopologyAction]) {
        for action in actions {
            switch action {
            case .probe(let hosts):
                pending += hosts
                probeLog += hosts.map { (at: now, host: $0) }
            case .scheduleTick(let instant):
                wake = instant
            default:
                events.append(action)
            }
        }
    }

    /// Answers probes and fires ticks until `end`.
    mutating func run(until end: Instant) {
        while true {
            if !pending.isEmpty, now + .milliseconds(1) <= end {
                now = now + .milliseconds(1)
                let batch = pending
                pending = []
                for host in batch {
                    if let observation = respond(host, now) {
                        apply(topology.probeSucceeded(host, observation: observation, at: now))
                    } else {
                        apply(topology.probeFailed(host, error: "connection refused", at: now, jitter: 0))
                    }
                }
                continue
            }
            guard let wake, wake <= end else { break }
            now = max(now, wake)
            self.wake = nil
            apply(topology.tick(now: now))
        }
        now = max(now, end)
    }

    func probes(of host: HostID, from start: Instant, to end: Instant) -> [Instant] {
        probeLog.filter { $0.host == host && $0.at >= start && $0.at < end }.map(\.at)
    }
}
