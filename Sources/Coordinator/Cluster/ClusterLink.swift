import CoordinatorCore
import RedisClient

/// The node's connection to the cluster's Redis: runs the shared-decision scripts with deadlines.
/// Knows Redis keys and scripts, not policy: the node actor decides what to do with the answers.
public final class ClusterLink: Sendable {
    public let keys: ClusterKeys
    public let nodeID: String
    public let deadline: Duration
    let redis: RedisClient

    static let gcraScript = RedisScript(ClusterScripts.gcra)
    static let slidingWindowScript = RedisScript(ClusterScripts.slidingWindow)
    static let heartbeatScript = RedisScript(ClusterScripts.heartbeat)
    static let breakerTransitionScript = RedisScript(ClusterScripts.breakerTransition)
    static let breakerSnapshotScript = RedisScript(ClusterScripts.breakerSnapshot)
    static let probeAcquireScript = RedisScript(ClusterScripts.probeAcquire)
    static let tripVoteScript = RedisScript(ClusterScripts.tripVote)
    static let aggregateFlushScript = RedisScript(ClusterScripts.aggregateFlush)
    static let approximateSyncScript = RedisScript(ClusterScripts.approximateSync)

    /// Pushes one approximate-mode sync item; returns the window's cluster total after it and the
    /// previous window's total.
    public func syncApproximate(policy: String, item: LimitSyncItem, periodMs: Int) async throws(RedisError) -> (total: Int64, previous: Int64) {
        let reply = try await redis.evalSHA(
            Self.approximateSyncScript,
            keys: [
                keys.approximateCounter(policy: policy, key: item.key, index: item.limitIndex, window: item.window),
                keys.approximateCounter(policy: policy, key: item.key, index: item.limitIndex, window: item.window - 1),
            ],
            arguments: [String(item.amount), String(2 * periodMs + 1_000)], deadline: deadline)
        guard let values = reply.array?.compactMap(\.integer), values.count == 2 else {
            throw RedisError(code: .protocolError, message: "unexpected sync reply \(reply)")
        }
        return (values[0], values[1])
    }

    /// Publishes this node's window counters of breaker `name` (epoch = the cluster record version
    /// they were counted under) and returns every node's fresh counters with Redis's time.
    public func flushCounters(
        _ name: String, counters: WindowCounters, epoch: UInt64, staleAfterMs: Int64
    ) async throws(RedisError) -> (nowMs: Int64, nodes: [(node: String, counters: WindowCounters, epoch: UInt64, atMs: Int64)]) {
        let encoded = "\(counters.calls),\(counters.failed),\(counters.slow),\(epoch)"
        let reply = try await redis.evalSHA(
            Self.aggregateFlushScript, keys: [keys.breakerCounters(name)], arguments: [nodeID, encoded, String(staleAfterMs)],
            deadline: deadline * 10)
        guard let items = reply.array, let now = items.first?.integer else {
            throw RedisError(code: .protocolError, message: "unexpected counters reply \(reply)")
        }
        var nodes: [(node: String, counters: WindowCounters, epoch: UInt64, atMs: Int64)] = []
        var index = 1
        while index + 1 < items.count {
            if let node = items[index].string, let fields = items[index + 1].string?.split(separator: ",").compactMap({ Int64($0) }),
                fields.count == 5 {
                nodes.append((node, WindowCounters(calls: Int(fields[0]), failed: Int(fields[1]), slow: Int(fields[2])), UInt64(max(0, fields[3])), fields[4]))
            }
            index += 2
        }
        return (now, nodes)
    }

    /// Records this node's trip vote for breaker `name`; returns how many distinct nodes voted within
    /// `windowMs` (Redis time).
    public func voteTrip(_ name: String, windowMs: Int64) async throws(RedisError) -> Int {
        let reply = try await redis.evalSHA(
            Self.tripVoteScript, keys: [keys.breakerVotes(name)], arguments: [nodeID, String(windowMs)], deadline: deadline * 10)
        guard let count = reply.array?.first?.integer else {
            throw RedisError(code: .protocolError, message: "unexpected trip vote reply \(reply)")
        }
        return Int(count)
    }
    static let probeReturnScript = RedisScript(ClusterScripts.probeReturn)
    static let probeReportScript = RedisScript(ClusterScripts.probeReport)

    /// Takes a probe slot of round `round`; `false` when the cluster's probes are all taken.
    public func acquireProbe(_ name: String, round: UInt64, permitted: Int, ttlMs: Int64) async throws(RedisError) -> Bool {
        let reply = try await redis.evalSHA(
            Self.probeAcquireScript, keys: [keys.breakerProbeRound(name, round: round)],
            arguments: [String(permitted), String(ttlMs)], deadline: deadline)
        return (reply.integer ?? 0) > 0
    }

    /// Gives a probe slot back.
    public func returnProbe(_ name: String, round: UInt64) async throws(RedisError) {
        _ = try await redis.evalSHA(Self.probeReturnScript, keys: [keys.breakerProbeRound(name, round: round)], arguments: [], deadline: deadline)
    }

    /// Reports a probe outcome; returns the round's `(done, failed, slow)` counts after it.
    public func reportProbe(_ name: String, round: UInt64, failed: Bool, slow: Bool, ttlMs: Int64) async throws(RedisError) -> (done: Int, failed: Int, slow: Int) {
        let reply = try await redis.evalSHA(
            Self.probeReportScript, keys: [keys.breakerProbeRound(name, round: round)],
            arguments: [failed ? "1" : "0", slow ? "1" : "0", String(ttlMs)], deadline: deadline * 10)
        guard let values = reply.array?.compactMap(\.integer), values.count == 3 else {
            throw RedisError(code: .protocolError, message: "unexpected probe report reply \(reply)")
        }
        return (Int(values[0]), Int(values[1]), Int(values[2]))
    }

    /// Connects (in the background) to `url`; every hot-path call is bounded by `deadline`.
    public init(url: String, cluster: String, nodeID: String, deadline: Duration) throws {
        var configuration = try RedisConfiguration(url: url)
        // Each hot-path call carries its own deadline; the socket timeout is longer, so one slow reply
        // does not tear down the connection under every other call in flight.
        configuration.commandTimeout = max(.seconds(1), deadline * 10)
        configuration.clientName = "coordinator-\(nodeID)"
        self.redis = RedisClient(configuration: configuration)
        self.keys = ClusterKeys(cluster: cluster)
        self.nodeID = nodeID
        self.deadline = deadline
    }

    /// One exact, cluster-wide decision over every limit of `policy`, timed by Redis.
    public func check(policyName: String, policy: LimitPolicy, key: String, cost: Int) async throws(RedisError) -> RateDecision {
        let limitKeys = policy.limits.indices.map { keys.limit(policy: policyName, key: key, index: $0) }
        var arguments = [String(cost)]
        arguments.reserveCapacity(1 + 2 * policy.limits.count)
        let script: RedisScript
        switch policy.algorithm {
        case .gcra:
            script = Self.gcraScript
            for spec in policy.limits {
                let interval = Double(spec.periodMs) * 1000 / Double(spec.rate)
                arguments.append(String(interval))
                arguments.append(String(interval * Double(spec.burst)))
            }
        case .slidingWindow:
            script = Self.slidingWindowScript
            for spec in policy.limits {
                arguments.append(String(spec.rate))
                arguments.append(String(Int64(spec.periodMs) * 1000))
            }
        }
        let reply = try await redis.evalSHA(script, keys: limitKeys, arguments: arguments, deadline: deadline)
        guard let values = reply.array?.compactMap(\.integer), values.count == 6 else {
            throw RedisError(code: .protocolError, message: "unexpected limiter script reply \(reply)")
        }
        let binding = Int(values[1])
        guard policy.limits.indices.contains(binding) else {
            throw RedisError(code: .protocolError, message: "limiter script named limit \(binding) of \(policy.limits.count)")
        }
        let spec = policy.limits[binding]
        let capacity = policy.algorithm == .gcra ? spec.burst : spec.rate
        return RateDecision(
            allowed: values[0] == 1, limit: capacity, remaining: Int(values[2]),
            resetAfter: Span(nanoseconds: max(0, values[3]) * 1000),
            retryAfter: values[4] < 0 ? nil : Span(nanoseconds: values[4] * 1000),
            bindingLimit: binding
        )
    }

    /// Records this node's heartbeat (empty `nodeID` only reads) and returns Redis's time and the
    /// members heard from within `livenessWindowMs`.
    public func heartbeat(
        livenessWindowMs: Int64, announce: Bool = true, deadline heartbeatDeadline: Duration? = nil
    ) async throws(RedisError) -> (nowMs: Int64, members: [(String, Int64)]) {
        let reply = try await redis.evalSHA(
            Self.heartbeatScript, keys: [keys.members], arguments: [announce ? nodeID : "", String(livenessWindowMs)],
            deadline: heartbeatDeadline ?? deadline * 10
        )
        guard let items = reply.array, let now = items.first?.integer else {
            throw RedisError(code: .protocolError, message: "unexpected heartbeat reply \(reply)")
        }
        var members: [(String, Int64)] = []
        var index = 1
        while index + 1 < items.count {
            if let name = items[index].string, let score = items[index + 1].string.flatMap({ Double($0) }) {
                members.append((name, Int64(score)))
            }
            index += 2
        }
        return (now, members)
    }

    // MARK: Bus and shared configuration

    /// Publishes a signed bus frame (base64, so any byte survives the text protocol).
    public func publish(_ frame: [UInt8]) async throws(RedisError) {
        _ = try await redis.send(["PUBLISH", keys.busChannel, Secrets.base64(frame)], deadline: deadline * 10)
    }

    /// A dedicated subscriber connection to the same Redis.
    public func makeSubscriber() -> RedisSubscriber {
        RedisSubscriber(configuration: redis.configuration)
    }

    /// Writes a shared configuration document (`kind`: policies or breakers) to the cluster's hash.
    public func putSharedDocument(kind: String, name: String, json: String) async throws(RedisError) {
        _ = try await redis.send(["HSET", keys.sharedDocuments(kind), name, json], deadline: deadline * 10)
    }

    /// Seeds a document only if the cluster has none of that name; returns whether it was written.
    public func seedSharedDocument(kind: String, name: String, json: String) async throws(RedisError) -> Bool {
        try await redis.send(["HSETNX", keys.sharedDocuments(kind), name, json], deadline: deadline * 10).integer == 1
    }

    /// One shared document of `kind`, or `nil`.
    public func sharedDocument(kind: String, name: String) async throws(RedisError) -> String? {
        try await redis.send(["HGET", keys.sharedDocuments(kind), name], deadline: deadline * 10).string
    }

    /// Every shared configuration document of `kind`, by name.
    public func sharedDocuments(kind: String) async throws(RedisError) -> [String: String] {
        let reply = try await redis.send(["HGETALL", keys.sharedDocuments(kind)], deadline: deadline * 10)
        var documents: [String: String] = [:]
        let items = reply.array ?? []
        var index = 0
        while index + 1 < items.count {
            if let name = items[index].string, let json = items[index + 1].string { documents[name] = json }
            index += 2
        }
        return documents
    }

    /// Adds a token id to the cluster's revocation set.
    public func addRevocation(_ tokenID: String) async throws(RedisError) {
        _ = try await redis.send(["SADD", keys.revokedTokens, tokenID], deadline: deadline * 10)
    }

    /// Every revoked token id of the cluster.
    public func revocations() async throws(RedisError) -> [String] {
        (try await redis.send(["SMEMBERS", keys.revokedTokens], deadline: deadline * 10).array ?? []).compactMap(\.string)
    }

    // MARK: Shared breakers

    /// Runs the compare-and-set transition of breaker `name`; publishes `frame` when it applies.
    /// Returns whether it applied, the record now in Redis, and Redis's time.
    public func transitionBreaker(
        _ name: String, proposal: SharedBreakerProposal, frame: [UInt8]
    ) async throws(RedisError) -> (applied: Bool, record: SharedBreakerState, nowMs: Int64) {
        let reply = try await redis.evalSHA(
            Self.breakerTransitionScript, keys: [keys.breakerState(name)],
            arguments: [
                proposal.expectedVersion.map { String($0) } ?? "-1", proposal.state.rawValue, String(proposal.openWaitMs ?? 0),
                proposal.reason.rawValue, proposal.originNode, keys.busChannel, Secrets.base64(frame),
                String(proposal.consecutiveOpenings),
            ],
            deadline: deadline * 10
        )
        guard let items = reply.array, items.count >= 9, let applied = items[0].integer, let record = Self.record(items[1...]),
            let now = items[5].integer
        else { throw RedisError(code: .protocolError, message: "unexpected breaker transition reply \(reply)") }
        return (applied == 1, record, now)
    }

    /// The record of breaker `name` in Redis (`nil` when the cluster never changed it) and Redis's time.
    public func breakerSnapshot(_ name: String) async throws(RedisError) -> (record: SharedBreakerState?, nowMs: Int64) {
        let reply = try await redis.evalSHA(Self.breakerSnapshotScript, keys: [keys.breakerState(name)], arguments: [], deadline: deadline * 10)
        guard let items = reply.array, items.count >= 8, let version = items[0].integer, let now = items[4].integer else {
            throw RedisError(code: .protocolError, message: "unexpected breaker snapshot reply \(reply)")
        }
        guard version > 0 else { return (nil, now) }
        return (Self.record(items[...]), now)
    }

    /// `{version, state, openUntil, since, now, reason, origin, openings}` → record.
    static func record(_ items: ArraySlice<RedisReply>) -> SharedBreakerState? {
        let values = Array(items)
        guard values.count >= 8, let version = values[0].integer, let stateText = values[1].string,
            let state = BreakerState(rawValue: stateText), let openUntil = values[2].integer, let since = values[3].integer
        else { return nil }
        return SharedBreakerState(
            state: state, version: UInt64(max(0, version)), openUntilRedisMs: openUntil > 0 ? openUntil : nil,
            reason: values[5].string.flatMap(TransitionReason.init(rawValue:)) ?? .remote,
            originNode: values[6].string ?? "", changedAtRedisMs: since,
            consecutiveOpenings: Int(values[7].integer ?? 0)
        )
    }

    /// Whether `error` means Redis is unreachable or too slow (as opposed to a refused command or a
    /// cancelled caller), i.e. whether shared state should be considered lost.
    public static func isLossOfRedis(_ error: RedisError) -> Bool {
        [.timeout, .unavailable, .io, .connectionFailed, .connectionClosed].contains(error.code)
    }

    /// Leaves the live set at once (graceful shutdown).
    public func leave() async {
        _ = try? await redis.send(["ZREM", keys.members, nodeID], deadline: deadline * 10)
    }

    /// Whether the connection is up, for reporting.
    public var isConnected: Bool {
        if case .connected = redis.status { return true }
        return false
    }

    public func close() async {
        await redis.close()
    }
}
