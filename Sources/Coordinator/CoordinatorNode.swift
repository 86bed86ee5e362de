import CoordinatorCore
import Foundation
import Logging
import PostgresClient
import RedisClient

/// One coordinator node: interprets the pure cores' decisions and owns the backends.
///
/// Every operation of the HTTP API is a method here, so a Swift program can embed a node
/// (`import Coordinator`) and call it directly. State that decisions depend on (limiter and breaker
/// cores, outstanding permits, caches) lives in this actor; durable state lives in the store.
public actor CoordinatorNode {
    /// This node's stable id.
    public nonisolated let nodeID: String
    /// The configuration the node was started with.
    public nonisolated let configuration: NodeConfiguration

    let store: any CoordinatorStore
    let clock: any NodeClock
    let logger: Logger
    let metrics: NodeMetrics
    let startedAt: Int64

    private var adminTokenHash: [UInt8]
    var policies: [String: LimitPolicy] = [:]
    private var limiters: [String: RateLimiter] = [:]
    var breakerConfigs: [String: BreakerConfig] = [:]
    private var breakers: [String: CircuitBreaker] = [:]
    private var permits: [String: OutstandingPermit] = [:]
    private var outstandingByBreaker: [String: Int] = [:]
    private var lastFullSweep: [String: Instant] = [:]
    /// Last acquire or record per breaker, to find idle breakers to evict when the cap is reached.
    private var lastActivity: [String: Instant] = [:]
    /// How long a breaker created on first use must be idle before it may be evicted at the cap.
    static let breakerIdleEviction = Span.seconds(60)
    private var recordedPermits: LRUCache<String, String>
    var tokenCache: LRUCache<[UInt8], TokenRecord>
    var unknownSecrets: LRUCache<[UInt8], Bool>
    var shuttingDown = false
    private var draining = false

    // Cluster mode (nil link: pilot mode).
    /// The link to the cluster's Redis, when a Redis URL is configured.
    public nonisolated let cluster: ClusterLink?
    private var membership: MembershipView
    var sharedHealth = SharedStateHealth()
    private var sharedDegradedSinceWall: Int64?
    private var sharedDegradedReason = ""
    /// Local-share limiters used while Redis is lost, built from the shared policies.
    private var degradedLimiters: [String: RateLimiter] = [:]
    /// Keys known to be over their shared limit, refused locally until their retry-after.
    private var refusals: [String: LocalRefusalCache] = [:]
    private var lastRedisNowMs: Int64 = 0
    /// Bumped on every degradation, so a reply to a call sent before it cannot end degraded mode.
    private var sharedEpoch: UInt64 = 0
    private var lastSharedRecovery: Instant?
    private var leaving = false
    private var busSender: BusSender
    private var busInbox: BusInbox
    let busAuthenticator: HMACBusAuthenticator?
    private var busAccepted: [String: Int] = [:]
    private var busRejected: [String: Int] = [:]
    /// Approximate-mode limiter state per policy (cluster mode).
    private var approximate: [String: ApproximateLimitSync] = [:]
    private var lastApproximateSync: [String: Instant] = [:]
    /// Keys whose approximate view was read from the cluster within the last sync interval.
    private var approximateFresh: [String: LRUCache<String, Bool>] = [:]
    /// The cluster side of each shared breaker (cluster mode).
    private var sharedBreakers: [String: SharedBreakerCoordinator] = [:]
    /// Proposals that failed (Redis unreachable), retried by the reconciliation.
    private var unsharedProposals: [String: SharedBreakerProposal] = [:]
    /// The last Redis time heard and when (monotonic), to estimate Redis's clock between heartbeats.
    private var redisSampleAt: Instant?
    /// Revocations already applied from the cluster's set.
    var appliedRevocations: Set<String> = []
    private var heardFromRedis = false
    /// Member count persisted at the last membership change: the share divisor when Redis is
    /// unreachable before this process ever heard from it.
    private var lastKnownMembers = 1
    /// Bumped by every revocation, so a verification that read the store before a revocation
    /// finished does not put the stale record back into the cache.
    var revocationEpoch: UInt64 = 0
    var storeStatus: BackendStatus
    /// Whether a reconciliation runs, and whether one more was asked for meanwhile.
    private var reconciling = false
    private var reconcileAgain = false
    /// The PostgreSQL router (PostgreSQL store only) and its probe loop.
    var postgres: ReplicatedPostgres?
    private var postgresProber: Task<Void, Never>?
    private var lastPartitionMaintenance: Instant?
    /// The local audit spool (PostgreSQL store only) and how many events wait in it.
    var auditSpool: AuditSpool?
    var auditSpoolDepth = 0
    private var drainingSpool = false
    private var spoolDrainer: Task<Void, Never>?
    private let storeDetail: String
    /// Whether every node shares the store (PostgreSQL): then tokens and documents need no copy in
    /// Redis, and a peer's change is already stored.
    let storeIsShared: Bool
    /// The PostgreSQL change feed (LISTEN/NOTIFY) and its state.
    var changeFeed: PostgresChangeFeed?
    var changeFeedTask: Task<Void, Never>?
    var changeFeedStatus = BackendStatus(role: "changeFeed", kind: "postgresql", status: "degraded", detail: "connecting", sinceMilliseconds: 0)
    var changeFeedSubscriptions = 0
    var changeFeedNotifications = 0
    var changeFeedMalformed = 0
    /// Document kinds to reload from the store (a change was announced, or the feed resubscribed).
    var pendingReloads: Set<DocumentKind> = []
    /// Token lookups that missed the local cache, by the level that answered.
    var tokenLookups: (shared: Int, store: Int) = (0, 0)
    /// Audit events waiting in the cluster's spool (Redis stream), as last seen.
    var sharedSpoolDepth = 0
    /// How many of those this node spooled: while any wait, its new events queue behind them.
    var ownSharedSpoolEntries = 0
    var drainingSharedSpool = false
    /// Bumped by every local spool append, so a drain that found the spool empty knows whether an
    /// append raced with it.
    var localSpoolAppends: UInt64 = 0
    var reloadingDocuments = false
    /// Token changes from the change feed not yet applied to the Redis level (secret hash hex → id,
    /// revoked); the Redis level is skipped while any are pending.
    var pendingTokenInvalidations: [String: (id: String, revoked: Bool)] = [:]
    /// The Redis token level may hold tokens changed while the feed was down; skipped until flushed.
    var sharedTokenLevelStale = false

    struct OutstandingPermit: Sendable {
        var breaker: String
        var permit: BreakerPermit
        var acquiredAt: Instant
        var expiresAt: Instant
        /// The cluster half-open round this permit holds a probe slot of (cluster mode).
        var probeRound: UInt64? = nil
    }

    /// Setting keys in the store.
    enum SettingKey {
        static let nodeID = "node_id"
        static let adminTokenSHA256 = "admin_token_sha256"
        static let lastKnownMembers = "cluster_last_known_members"
        static func breakerState(_ name: String) -> String { "breaker_state:\(name)" }
    }

    /// Opens the store in the configured data directory and starts a node.
    /// - Returns: the node and, when an admin token was generated on this first start, its value
    ///   (the caller prints it once; it is stored only as a hash).
    public static func start(
        configuration: NodeConfiguration, clock: any NodeClock = SystemClock(), logger: Logger
    ) async throws -> (node: CoordinatorNode, generatedAdminToken: String?) {
        if let url = configuration.postgresURL {
            return try await startWithPostgres(url: url, configuration: configuration, clock: clock, logger: logger)
        }
        let store: SQLiteStore
        do {
            try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
            store = try await SQLiteStore.open(
                path: configuration.databasePath,
                synchronous: configuration.sqliteSynchronous == .full ? .full : .normal
            )
        } catch {
            throw CoordinatorError(.storeUnavailable, "cannot open the SQLite store at \(configuration.databasePath): \(error)")
        }
        do {
            return try await start(configuration: configuration, store: store, storeKind: "sqlite", storeDetail: configuration.databasePath, clock: clock, logger: logger)
        } catch {
            try? await store.close()
            throw error
        }
    }

    /// PostgreSQL store: the router probes every host of `url`, waits (bounded) for a primary, opens
    /// the store (migrating under an advisory lock) and starts the node over it. The node id lives in
    /// the data directory (the database is shared by every node).
    private static func startWithPostgres(
        url: String, configuration: NodeConfiguration, clock: any NodeClock, logger: Logger
    ) async throws -> (node: CoordinatorNode, generatedAdminToken: String?) {
        if let problem = configuration.problems().first {
            throw CoordinatorError(.invalidRequest, "invalid configuration: \(problem)")
        }
        var settings = ReplicatedPostgres.Settings()
        settings.probeInterval = .milliseconds(configuration.postgresProbeIntervalMilliseconds)
        settings.maxConnectionsPerHost = configuration.postgresMaxConnectionsPerHost
        settings.statementTimeout = configuration.postgresStatementTimeoutMilliseconds > 0
            ? .milliseconds(configuration.postgresStatementTimeoutMilliseconds) : nil
        settings.deadline = .milliseconds(configuration.postgresDeadlineMilliseconds)
        let router: ReplicatedPostgres
        do {
            router = try ReplicatedPostgres(url: url, settings: settings, clock: clock, logger: logger)
        } catch {
            throw CoordinatorError(.invalidRequest, "invalid configuration: \(error)")
        }
        let prober = Task { await router.run() }
        let nodeID: String
        let store: PostgresStore
        do {
            try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
            nodeID = try configuration.nodeID ?? persistentNodeID(directory: configuration.dataDirectory)
            guard await router.waitForPrimary(timeout: .seconds(15)) else {
                let hosts = router.snapshot().hosts.map { "\($0.id): \($0.role.rawValue)\($0.lastError.map { " (\($0))" } ?? "")" }
                throw CoordinatorError(.storeUnavailable, "no PostgreSQL primary among \(hosts.joined(separator: ", ")) within 15 s")
            }
            var options = PostgresStore.Options()
            options.listReads = .fresh(
                maxLagBytes: UInt64(configuration.postgresMaxLagBytes),
                maxLagSeconds: Double(configuration.postgresMaxLagMilliseconds) / 1_000)
            store = try await PostgresStore.open(executor: router, options: options, now: clock.wallMilliseconds())
        } catch {
            prober.cancel()
            await router.close()
            if error is CoordinatorError { throw error }
            throw CoordinatorError(.storeUnavailable, "cannot open the PostgreSQL store: \(error)")
        }
        var withID = configuration
        withID.nodeID = nodeID
        let spool: AuditSpool
        let spooled: Int
        do {
            spool = try await AuditSpool.open(path: (configuration.dataDirectory as NSString).appendingPathComponent("audit-spool.sqlite"))
            spooled = try await spool.count()
        } catch {
            try? await store.close()
            prober.cancel()
            await router.close()
            throw CoordinatorError(.storeUnavailable, "cannot open the local audit spool: \(error)")
        }
        do {
            let started = try await start(
                configuration: withID, store: store, storeKind: "postgresql",
                storeDetail: router.targets.map(\.id).joined(separator: ","), clock: clock, logger: logger)
            await started.node.attach(postgres: router, prober: prober, spool: spool, spooled: spooled)
            return started
        } catch {
            try? await store.close()
            prober.cancel()
            await router.close()
            await spool.close()
            throw error
        }
    }

    /// The node id kept in `directory/node-id` (generated on first start).
    static func persistentNodeID(directory: String) throws -> String {
        let path = (directory as NSString).appendingPathComponent("node-id")
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard ResourceName.isValid(id) else { throw CoordinatorError(.invalidRequest, "\(path) holds an invalid node id") }
            return id
        }
        let id = Secrets.newNodeID()
        try Data((id + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        return id
    }

    private func attach(postgres router: ReplicatedPostgres, prober: Task<Void, Never>, spool: AuditSpool, spooled: Int) {
        postgres = router
        postgresProber = prober
        auditSpool = spool
        auditSpoolDepth = spooled
        metrics.auditSpoolDepth(local: spooled)
        spoolDrainer = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                guard let self else { return }
                await self.postgresTick()
            }
        }
        startChangeFeed(router: router)
    }

    /// Starts a node over an already open store.
    public static func start(
        configuration: NodeConfiguration, store: any CoordinatorStore, storeKind: String, storeDetail: String,
        clock: any NodeClock = SystemClock(), logger: Logger
    ) async throws -> (node: CoordinatorNode, generatedAdminToken: String?) {
        if let problem = configuration.problems().first {
            throw CoordinatorError(.invalidRequest, "invalid configuration: \(problem)")
        }
        // Node id: configured, else persisted, else generated and persisted.
        let nodeID: String
        if let configured = configuration.nodeID {
            nodeID = configured
        } else if let stored = try await store.setting(SettingKey.nodeID) {
            nodeID = stored
        } else {
            nodeID = Secrets.newNodeID()
            try await store.setSetting(SettingKey.nodeID, value: nodeID)
        }

        // Admin token: configured (hashed in memory), else stored hash, else generated once.
        var generated: String?
        let adminHash: [UInt8]
        if let token = configuration.adminToken {
            adminHash = Secrets.sha256(token)
        } else if let storedHex = try await store.setting(SettingKey.adminTokenSHA256), let stored = Secrets.unhex(storedHex), stored.count == 32 {
            adminHash = stored
        } else {
            let token = Secrets.newAdminToken()
            adminHash = Secrets.sha256(token)
            generated = token
        }

        var link: ClusterLink?
        if let url = configuration.redisURL {
            do {
                link = try ClusterLink(
                    url: url, cluster: configuration.clusterName, nodeID: nodeID,
                    deadline: .milliseconds(configuration.redisDeadlineMilliseconds))
            } catch {
                throw CoordinatorError(.invalidRequest, "invalid configuration: redisUrl: \(error)")
            }
        }
        let node = CoordinatorNode(
            nodeID: nodeID, configuration: configuration, store: store, clock: clock, logger: logger,
            adminTokenHash: adminHash,
            storeStatus: BackendStatus(role: "store", kind: storeKind, status: "ok", detail: storeDetail, sinceMilliseconds: clock.wallMilliseconds()),
            cluster: link
        )
        try await node.loadState()
        if link != nil {
            await node.loadLastKnownMembers()
            await node.heartbeatOnce()
            await node.reconcileSharedState()
            await node.announceMembership(joined: true)
        }
        if generated != nil {
            // Stored only once the node is sure to start, so the printed token is never lost.
            try await store.setSetting(SettingKey.adminTokenSHA256, value: Secrets.hex(adminHash))
        }
        return (node, generated)
    }

    init(
        nodeID: String, configuration: NodeConfiguration, store: any CoordinatorStore, clock: any NodeClock,
        logger: Logger, adminTokenHash: [UInt8], storeStatus: BackendStatus, cluster: ClusterLink? = nil
    ) {
        self.cluster = cluster
        self.membership = MembershipView(livenessWindowMs: 3 * configuration.heartbeatIntervalMilliseconds)
        self.busSender = BusSender(clusterName: configuration.clusterName, nodeID: nodeID, incarnation: UInt64.random(in: 1...UInt64.max))
        self.busInbox = BusInbox(clusterName: configuration.clusterName)
        self.busAuthenticator = configuration.clusterSecret.map { HMACBusAuthenticator(secret: $0) }
        self.nodeID = nodeID
        self.configuration = configuration
        self.store = store
        self.clock = clock
        var logger = logger
        logger[metadataKey: "node"] = "\(nodeID)"
        self.logger = logger
        self.metrics = NodeMetrics()
        self.startedAt = clock.wallMilliseconds()
        self.adminTokenHash = adminTokenHash
        self.recordedPermits = LRUCache(capacity: 100_000)
        self.tokenCache = LRUCache(capacity: configuration.tokenCacheCapacity)
        self.unknownSecrets = LRUCache(capacity: configuration.negativeCacheCapacity)
        self.storeStatus = storeStatus
        self.storeDetail = storeStatus.detail
        self.storeIsShared = store is PostgresStore
    }

    private func loadState() async throws {
        let decoder = JSONDecoder()
        let now = clock.wallMilliseconds()
        var stored: [String: LimitPolicy] = [:]
        for document in try await store.documents(kind: .limitPolicy) {
            do {
                let policy = try decoder.decode(LimitPolicy.self, from: Data(document.json.utf8))
                if let problem = policy.validate().first {
                    logger.error("ignoring invalid stored policy", metadata: ["policy": "\(document.name)", "problem": "\(problem)"])
                    continue
                }
                stored[document.name] = policy
            } catch {
                logger.error("ignoring unreadable stored policy", metadata: ["policy": "\(document.name)", "error": "\(error)"])
            }
        }
        // Configured policies are created when the store lacks them; stored ones (changed through
        // the API) win, so an operator's change survives a restart.
        for (name, policy) in configuration.policies.sorted(by: { $0.key < $1.key }) where stored[name] == nil {
            try await store.putDocument(kind: .limitPolicy, name: name, json: try Self.encode(policy), updatedAt: now)
            stored[name] = policy
        }
        if stored[configuration.defaultPolicyName] == nil {
            throw CoordinatorError(.unknownPolicy, "limits.defaultPolicy names \"\(configuration.defaultPolicyName)\", which neither limits.policies nor the store defines")
        }
        for (name, policy) in stored {
            policies[name] = policy
            limiters[name] = RateLimiter(policy: policy)
        }

        for document in try await store.documents(kind: .breakerConfig) {
            do {
                let config = try decoder.decode(BreakerConfig.self, from: Data(document.json.utf8))
                if let problem = config.validate().first {
                    logger.error("ignoring invalid stored breaker config", metadata: ["breaker": "\(document.name)", "problem": "\(problem)"])
                    continue
                }
                breakerConfigs[document.name] = config
            } catch {
                logger.error("ignoring unreadable stored breaker config", metadata: ["breaker": "\(document.name)", "error": "\(error)"])
            }
        }
        let monotonic = clock.monotonicNow()
        for (name, config) in breakerConfigs {
            var breaker = CircuitBreaker(config: config, now: monotonic)
            if let stateText = try await store.setting(SettingKey.breakerState(name)), let state = BreakerState(rawValue: stateText), state != .closed {
                _ = breaker.transition(to: state, now: monotonic)
            }
            breakers[name] = breaker
            metrics.breakerState(name, state: breaker.snapshot(now: monotonic).state)
        }
    }

    // MARK: Admin

    /// Whether `token` is the admin token (constant-time comparison of SHA-256 digests).
    public func isAdmin(token: String) -> Bool {
        Secrets.constantTimeEqual(Secrets.sha256(token), adminTokenHash)
    }

    // MARK: Rate limits

    /// Checks and consumes `cost` from `key` under `policy`, all-or-nothing across its limits.
    public func checkLimit(policy name: String, key: String, cost: Int) async throws(CoordinatorError) -> LimitCheckResult {
        try ensureRunning()
        guard ResourceName.isValid(name) else { throw CoordinatorError(.invalidName, "policy names must match [A-Za-z0-9._:-]{1,128}") }
        guard RateLimitKey.isValid(key) else {
            throw CoordinatorError(.invalidKey, "keys must be 1 to \(RateLimitKey.maximumLength) bytes of UTF-8 without control characters")
        }
        guard cost >= 0, cost <= 1_000_000_000 else { throw CoordinatorError(.invalidRequest, "cost must be between 0 and 1000000000") }
        guard limiters[name] != nil, let policy = policies[name] else {
            throw CoordinatorError(.unknownPolicy, "no policy named \"\(name)\"")
        }
        let now = clock.monotonicNow()
        if let cluster {
            let decision = await sharedDecision(cluster, policyName: name, policy: policy, key: key, cost: cost, now: now)
            return try finish(policyName: name, policy: policy, cost: cost, decision: decision)
        }
        if limiters[name]!.keyCount >= configuration.maxLimiterKeys, !limiters[name]!.hasState(forKey: key) {
            // Full: reclaim keys back at their initial state (at most once a second), then refuse.
            if now - (lastFullSweep[name] ?? .zero) >= .seconds(1) {
                lastFullSweep[name] = now
                _ = limiters[name]!.sweep(now: now)
            }
            if limiters[name]!.keyCount >= configuration.maxLimiterKeys {
                metrics.limiterDecision(policy: name, result: "full")
                throw CoordinatorError(.limiterFull, "policy \"\(name)\" already tracks \(configuration.maxLimiterKeys) keys (limits.maxKeys); new keys are refused until some return to their initial state")
            }
        }
        let decision = limiters[name]!.check(key: key, cost: cost, now: now)
        return try finish(policyName: name, policy: policy, cost: cost, decision: decision)
    }

    private func finish(policyName name: String, policy: LimitPolicy, cost: Int, decision: RateDecision) throws(CoordinatorError) -> LimitCheckResult {
        if !decision.allowed && decision.retryAfter == nil {
            metrics.limiterDecision(policy: name, result: "impossible")
            throw CoordinatorError(.costExceedsCapacity, "cost \(cost) exceeds the capacity \(decision.limit) of policy \"\(name)\"; it can never be allowed")
        }
        metrics.limiterDecision(policy: name, result: decision.allowed ? "allowed" : "denied")
        return LimitCheckResult(policy: name, decision: decision, algorithm: policy.algorithm, limits: policy.limits)
    }

    /// Every policy by name.
    public func limitPolicies() -> [String: LimitPolicy] { policies }

    /// Creates or replaces a policy, persists it, and applies it at once. Keys keep their state when
    /// the new policy has the same shape (see `RateLimiter.replacePolicy`).
    public func putPolicy(name: String, policy: LimitPolicy, actor: String = "admin") async throws -> LimitPolicy {
        try ensureRunning()
        guard ResourceName.isValid(name) else { throw CoordinatorError(.invalidName, "policy names must match [A-Za-z0-9._:-]{1,128}") }
        if let problem = policy.validate().first {
            throw CoordinatorError(.invalidPolicy, "\(problem.key): \(problem.reason)")
        }
        let json = try Self.encode(policy)
        if let cluster {
            // The cluster's copy is the truth every node reconciles to: write it first.
            do {
                try await cluster.putSharedDocument(kind: SharedKind.policies, name: name, json: json)
            } catch {
                throw CoordinatorError(.storeUnavailable, "the cluster's configuration (Redis) is unreachable; policy not changed: \(error)")
            }
        }
        try await applyPolicyLocally(name: name, policy: policy, json: json)
        await publish(.policyChanged, Self.documentPayload(name: name, json: json))
        await auditInternal(action: "policy.put", resource: "policy:\(name)", actor: actor, detail: ["algorithm": policy.algorithm.rawValue, "limits": "\(policy.limits.count)"])
        return policy
    }

    /// Stores (unless `persist` is false: the store already has it) and applies a policy on this node.
    func applyPolicyLocally(name: String, policy: LimitPolicy, json: String, persist: Bool = true) async throws {
        if persist {
            try await storeCall { try await $0.putDocument(kind: .limitPolicy, name: name, json: json, updatedAt: self.clock.wallMilliseconds()) }
        }
        policies[name] = policy
        degradedLimiters[name] = nil
        refusals[name] = nil
        approximate[name] = nil
        approximateFresh[name] = nil
        if limiters[name] != nil {
            limiters[name]!.replacePolicy(policy)
        } else {
            limiters[name] = RateLimiter(policy: policy)
        }
    }

    // MARK: Shared limits (cluster mode)

    /// The refusal cache's key: a refusal is remembered per key and cost.
    private static func refusalKey(_ key: String, cost: Int) -> String { key + "\u{0}" + String(cost) }

    /// One decision in cluster mode: a key known to be over its limit is refused locally; otherwise
    /// one script in Redis decides, bounded by the Redis deadline. When Redis fails the node goes
    /// degraded at once and decides this call (and the following ones) by `onSharedStateLoss`.
    private func sharedDecision(_ cluster: ClusterLink, policyName: String, policy: LimitPolicy, key: String, cost: Int, now: Instant) async -> RateDecision {
        if sharedHealth.isDegraded {
            return degradedDecision(policyName: policyName, policy: policy, key: key, cost: cost, now: now)
        }
        // A refusal is remembered per cost: a request of the same cost cannot pass before its retry-after.
        if cost > 0, refusals[policyName] != nil, let refused = refusals[policyName]?.refusal(key: Self.refusalKey(key, cost: cost), now: now) {
            metrics.limiterDecision(policy: policyName, result: "refused_locally")
            return refused
        }
        if policy.mode == .approximate {
            // Local decision against the last synced cluster view; no Redis call on the hot path.
            if approximate[policyName]?.limits != policy.limits {
                approximate[policyName] = ApproximateLimitSync(policy: policy, maximumKeys: configuration.maxLimiterKeys)
            }
            let monotonic = clock.monotonicNow()
            if approximateFresh[policyName]?.value(forKey: key, now: monotonic) == nil {
                // The view of this key is older than the sync interval (or absent): read the cluster's
                // counts before deciding, so a key other nodes consumed meanwhile is not treated as
                // fresh. One round trip per key and interval; every other decision is local.
                approximateFresh[policyName, default: LRUCache(capacity: min(configuration.maxLimiterKeys, 1_000_000))]
                    .set(true, forKey: key, expiresAt: monotonic + .milliseconds(Int64(policy.syncIntervalMs)))
                let redisNow = redisNowEstimate()
                if !approximate[policyName]!.hasState(forKey: key) {
                    _ = approximate[policyName]!.check(key: key, cost: 0, atRedisMs: redisNow)
                }
                for item in approximate[policyName]!.readItems(forKey: key, atRedisMs: redisNow) {
                    do {
                        let totals = try await cluster.syncApproximate(policy: policyName, item: item, periodMs: policy.limits[item.limitIndex].periodMs)
                        approximate[policyName]?.completeSync(item, clusterTotal: totals.total, previousTotal: totals.previous)
                    } catch {
                        if ClusterLink.isLossOfRedis(error), !leaving {
                            noteSharedFailure(error)
                            return degradedDecision(policyName: policyName, policy: policy, key: key, cost: cost, now: clock.monotonicNow())
                        }
                    }
                }
            }
            guard approximate[policyName] != nil else {
                return degradedDecision(policyName: policyName, policy: policy, key: key, cost: cost, now: clock.monotonicNow())
            }
            return approximate[policyName]!.check(key: key, cost: cost, atRedisMs: redisNowEstimate(), nodes: max(1, lastKnownMembers))
        }
        let epoch = sharedEpoch
        do {
            let decision = try await cluster.check(policyName: policyName, policy: policy, key: key, cost: cost)
            if epoch == sharedEpoch { noteSharedSuccess() }
            if !decision.allowed, decision.retryAfter != nil, cost > 0, policies[policyName] == policy {
                refusals[policyName, default: LocalRefusalCache(capacity: 100_000)].remember(key: Self.refusalKey(key, cost: cost), decision: decision, now: clock.monotonicNow())
            }
            return decision
        } catch {
            if ClusterLink.isLossOfRedis(error), !leaving {
                noteSharedFailure(error)
            } else {
                logger.warning("shared limit call failed; deciding this call locally", metadata: ["error": "\(error)"])
            }
            return degradedDecision(policyName: policyName, policy: policy, key: key, cost: cost, now: clock.monotonicNow())
        }
    }

    private func degradedDecision(policyName: String, policy: LimitPolicy, key: String, cost: Int, now: Instant) -> RateDecision {
        switch configuration.onSharedStateLoss.limiterDecision(shareDivisor: shareDivisor()) {
        case .enforceLocalShare(let members):
            if degradedLimiters[policyName] == nil {
                degradedLimiters[policyName] = RateLimiter(policy: policy.localShare(members: members))
            }
            if degradedLimiters[policyName]!.keyCount >= configuration.maxLimiterKeys, !degradedLimiters[policyName]!.hasState(forKey: key) {
                _ = degradedLimiters[policyName]!.sweep(now: now)
                if degradedLimiters[policyName]!.keyCount >= configuration.maxLimiterKeys {
                    metrics.limiterDecision(policy: policyName, result: "full")
                    return DegradedLimitDecision.deniedDecision(policy: policy, retryAfter: .seconds(1))
                }
            }
            metrics.limiterDecision(policy: policyName, result: "local_share")
            return degradedLimiters[policyName]!.check(key: key, cost: cost, now: now)
        case .allow:
            return DegradedLimitDecision.allowedDecision(policy: policy)
        case .deny:
            return DegradedLimitDecision.deniedDecision(policy: policy, retryAfter: .milliseconds(configuration.heartbeatIntervalMilliseconds))
        }
    }

    /// The member count limits are divided by while degraded: the live count frozen at the moment
    /// of loss, or — if this process never heard from Redis — the count persisted last time.
    private func shareDivisor() -> Int {
        heardFromRedis ? membership.shareDivisor(atRedisMs: lastRedisNowMs) : max(1, lastKnownMembers)
    }

    private func noteSharedSuccess() {
        if case .recovered(let at, let duration) = sharedHealth.recordSuccess(now: clock.monotonicNow()) {
            membership.unfreeze()
            // Local-share state is kept: if Redis flaps, the next outage continues from it instead of
            // handing every node a fresh local burst (it is dropped once shared mode has held a while).
            lastSharedRecovery = at
            sharedDegradedSinceWall = nil
            metrics.sharedStateDegraded(false)
            logger.notice("shared state recovered: limits are cluster-wide again", metadata: ["degradedForMs": "\(duration.nanoseconds / 1_000_000)"])
            // Rejoin now rather than at the next heartbeat: peers see this node again, and it catches
            // up on what the bus said meanwhile (breakers, policies, revocations).
            Task { [weak self] in
                await self?.heartbeatOnce()
                await self?.reconcileSharedState()
            }
        }
    }

    private func noteSharedFailure(_ error: any Error) {
        let now = clock.monotonicNow()
        if case .degraded(let reason, _) = sharedHealth.recordFailure("\(error)", now: now) {
            sharedEpoch &+= 1
            if heardFromRedis { membership.freeze(atRedisMs: lastRedisNowMs) }
            if let recovered = lastSharedRecovery, now - recovered < .seconds(10) {
                // Flapping: keep counting against the same local share.
            } else {
                degradedLimiters = [:]
            }
            refusals = [:]
            sharedDegradedSinceWall = clock.wallMilliseconds()
            sharedDegradedReason = reason
            metrics.sharedStateDegraded(true)
            logger.warning(
                "shared state lost: limits run in degraded local mode",
                metadata: ["reason": "\(reason)", "mode": "\(configuration.onSharedStateLoss.rawValue)", "shareDivisor": "\(shareDivisor())"]
            )
        }
    }

    /// One membership heartbeat (the `ClusterService` calls it every `heartbeatIntervalMs`): records
    /// this node, learns the live set with Redis's time, and notices loss and recovery of Redis.
    public func heartbeatOnce() async {
        guard let cluster, !shuttingDown, !leaving else { return }
        let epoch = sharedEpoch
        // While degraded, recovery is judged by the hot-path deadline, so a Redis too slow for the hot
        // path does not flap the node back to shared mode every heartbeat.
        let deadline: Duration? = sharedHealth.isDegraded ? .milliseconds(configuration.redisDeadlineMilliseconds) : nil
        do {
            let (now, members) = try await cluster.heartbeat(livenessWindowMs: membership.livenessWindowMs, announce: !draining, deadline: deadline)
            guard !leaving else { return }
            applyHeartbeat(nowMs: now, members: members)
            if epoch == sharedEpoch { noteSharedSuccess() }
        } catch {
            if ClusterLink.isLossOfRedis(error), !leaving { noteSharedFailure(error) }
        }
    }

    private func applyHeartbeat(nowMs: Int64, members: [(String, Int64)]) {
        lastRedisNowMs = max(lastRedisNowMs, nowMs)
        redisSampleAt = clock.monotonicNow()
        heardFromRedis = true
        busInbox.replayGuard.observe(redisTimeMs: nowMs)
        _ = busInbox.replayGuard.sweep()
        let present = Set(members.map(\.0))
        for (node, seen) in members {
            membership.heartbeat(nodeID: node, redisTimeMs: seen, incarnation: 0)
        }
        for node in membership.live(atRedisMs: nowMs) where !present.contains(node) {
            membership.leave(nodeID: node, redisTimeMs: nowMs)
        }
        let events = membership.reconcile(atRedisMs: nowMs)
        for event in events {
            logger.notice("membership change", metadata: ["event": "\(event)"])
        }
        let live = membership.liveCount(atRedisMs: nowMs)
        metrics.liveMembers(live)
        if !events.isEmpty, live != lastKnownMembers {
            lastKnownMembers = live
            let store = self.store
            Task { try? await store.setSetting(SettingKey.lastKnownMembers, value: String(live)) }
        }
    }

    func loadLastKnownMembers() async {
        if let text = try? await store.setting(SettingKey.lastKnownMembers), let count = Int(text), count > 0 {
            lastKnownMembers = count
        }
    }

    /// Leaves the live set at once and closes the Redis link (graceful shutdown).
    public func leaveCluster() async {
        guard let cluster, !leaving else { return }
        await announceMembership(joined: false)
        leaving = true
        await cluster.leave()
        await cluster.close()
    }

    /// Announces this node's join or leave on the bus, so peers update their live set at once
    /// instead of at their next heartbeat.
    func announceMembership(joined: Bool) async {
        await publish(joined ? .memberJoined : .memberLeft, Self.namePayload(nodeID))
    }

    // MARK: Bus (cluster mode)

    /// Names of the shared document hashes in Redis.
    enum SharedKind {
        static let policies = "policies"
        static let breakers = "breakers"
        static let tokens = "tokens"
        static let tokenHashes = "token-hashes"
    }

    static func documentPayload(name: String, json: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeShortString(name)
        writer.writeLengthPrefixed(Array(json.utf8))
        return writer.bytes
    }

    static func namePayload(_ name: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeShortString(name)
        return writer.bytes
    }

    /// Signs and publishes a bus message. A lost message is healed by the periodic reconciliation.
    private func publish(_ kind: BusMessageKind, _ payload: [UInt8]) async {
        guard let cluster, let authenticator = busAuthenticator else { return }
        let envelope = busSender.envelope(kind: kind, payload: payload, redisTimeMs: max(lastRedisNowMs, 1))
        do {
            try await cluster.publish(envelope.encode(authenticator: authenticator))
        } catch {
            logger.warning("bus publish failed; peers catch up at the next reconciliation", metadata: ["kind": "\(kind)", "error": "\(error)"])
        }
    }

    /// Handles one frame from the bus: malformed, forged, foreign-cluster, replayed and stale frames
    /// are dropped and counted by reason; they never change state.
    public func receiveBusMessage(_ text: [UInt8]) async {
        guard let authenticator = busAuthenticator, !shuttingDown else { return }
        guard let frame = Secrets.unbase64(text) else {
            noteBusRejection("malformed")
            return
        }
        switch busInbox.receive(frame, authenticator: authenticator) {
        case .rejected(let reason):
            noteBusRejection(reason.label)
        case .accepted(let envelope):
            guard envelope.nodeID != nodeID else { return }
            busAccepted[envelope.kind.description, default: 0] += 1
            metrics.busMessage(accepted: envelope.kind.description)
            await apply(envelope)
        }
    }

    private func noteBusRejection(_ reason: String) {
        busRejected[reason, default: 0] += 1
        metrics.busMessage(rejected: reason)
    }

    /// Bus messages handled so far: accepted by kind, rejected by reason.
    public func busStatistics() -> (accepted: [String: Int], rejected: [String: Int]) {
        (busAccepted, busRejected)
    }

    private func apply(_ envelope: BusEnvelope) async {
        var reader = ByteReader(envelope.payload)
        do {
            switch envelope.kind {
            case .policyChanged:
                guard let name = reader.readShortString(), let raw = reader.readLengthPrefixed(maximumLength: 1 << 20),
                    let json = String(validating: raw, as: UTF8.self), ResourceName.isValid(name)
                else { return noteBusRejection("bad_payload") }
                let policy = try JSONDecoder().decode(LimitPolicy.self, from: Data(raw))
                guard policy.validate().isEmpty else { return noteBusRejection("bad_payload") }
                if policies[name] != policy { try await applyPolicyLocally(name: name, policy: policy, json: json, persist: !storeIsShared) }
            case .breakerConfigChanged:
                guard let name = reader.readShortString(), let raw = reader.readLengthPrefixed(maximumLength: 1 << 20),
                    let json = String(validating: raw, as: UTF8.self), ResourceName.isValid(name)
                else { return noteBusRejection("bad_payload") }
                let config = try JSONDecoder().decode(BreakerConfig.self, from: Data(raw))
                guard config.validate().isEmpty else { return noteBusRejection("bad_payload") }
                if breakerConfigs[name] != config { try await applyBreakerConfigLocally(name: name, config: config, json: json, persist: !storeIsShared) }
            case .tokenRevoked:
                guard let id = reader.readShortString() else { return noteBusRejection("bad_payload") }
                await applyRevocation(id)
            case .memberJoined:
                // Learn the new member (and its Redis time) now rather than at the next heartbeat.
                await heartbeatOnce()
            case .memberLeft:
                membership.leave(nodeID: envelope.nodeID, redisTimeMs: max(lastRedisNowMs, envelope.redisTimeMs))
                for event in membership.reconcile(atRedisMs: max(lastRedisNowMs, envelope.redisTimeMs)) {
                    logger.notice("membership change", metadata: ["event": "\(event)"])
                }
            case .breakerState:
                guard let (name, record) = SharedBreakerState.decodePayload(envelope.payload), ResourceName.isValid(name) else {
                    return noteBusRejection("bad_payload")
                }
                await receiveSharedBreaker(name, record)
            default:
                break  // Kinds for shared breakers are handled once breaker sharing is wired in.
            }
        } catch {
            logger.warning("could not apply a bus message", metadata: ["kind": "\(envelope.kind)", "error": "\(error)"])
        }
    }

    private func applyRevocation(_ id: String) async {
        evictToken(id: id)
        // A shared store has it from the revoking node (a revocation that stopped between Redis and
        // the store is finished by the next lookup of the token).
        guard !storeIsShared else {
            appliedRevocations.insert(id)
            return
        }
        do {
            _ = try await store.revokeToken(id: id, at: clock.wallMilliseconds())
            // Applied only once the store has it: a failed write is retried at the next reconciliation.
            appliedRevocations.insert(id)
        } catch {
            logger.error("could not record a revocation in the local store; retrying at the next reconciliation",
                         metadata: ["token": "\(id)", "error": "\(error)"])
        }
        // A verification that read the store (not yet revoked) while the write was suspended may have
        // cached the token again: evict once more now that the store has it (or could not take it).
        evictToken(id: id)
    }

    /// Brings this node in line with the cluster's shared state in Redis: policies and breaker
    /// configurations (the cluster's copy wins; local ones the cluster lacks are seeded), and
    /// revocations. Runs at start, after every (re)subscribe and periodically, so a lost bus message
    /// heals within one interval.
    public func reconcileSharedState() async {
        // One at a time: a request made while one runs makes it run once more afterwards (it may have
        // read Redis before the change that prompted the request).
        guard !reconciling else {
            reconcileAgain = true
            return
        }
        reconciling = true
        defer { reconciling = false }
        repeat {
            reconcileAgain = false
            await reconcileOnce()
        } while reconcileAgain && !shuttingDown
    }

    private func reconcileOnce() async {
        guard let cluster, !shuttingDown, !leaving else { return }
        let decoder = JSONDecoder()
        do {
            let remotePolicies = try await cluster.sharedDocuments(kind: SharedKind.policies)
            let remoteBreakers = try await cluster.sharedDocuments(kind: SharedKind.breakers)
            if storeIsShared {
                // The database is the truth (a change made there must not be undone from Redis's copy).
                try await reconcileWithSharedStore(.limitPolicy, remote: remotePolicies, sharedKind: SharedKind.policies, cluster: cluster)
                try await reconcileWithSharedStore(.breakerConfig, remote: remoteBreakers, sharedKind: SharedKind.breakers, cluster: cluster)
                for id in try await cluster.revocations() where !appliedRevocations.contains(id) {
                    await applyRevocation(id)
                }
                for name in breakers.keys.sorted() where sharing(of: name) != .local {
                    let (record, now) = try await cluster.breakerSnapshot(name)
                    noteRedisTime(now)
                    if let record { await receiveSharedBreaker(name, record) }
                }
                await retryUnsharedProposals()
                return
            }
            for (name, policy) in policies where remotePolicies[name] == nil {
                _ = try await cluster.seedSharedDocument(kind: SharedKind.policies, name: name, json: try Self.encode(policy))
            }
            for (name, json) in remotePolicies where ResourceName.isValid(name) {
                guard let policy = try? decoder.decode(LimitPolicy.self, from: Data(json.utf8)), policy.validate().isEmpty else { continue }
                if policies[name] != policy { try await applyPolicyLocally(name: name, policy: policy, json: json) }
            }
            for (name, config) in breakerConfigs where remoteBreakers[name] == nil {
                _ = try await cluster.seedSharedDocument(kind: SharedKind.breakers, name: name, json: try Self.encode(config))
            }
            for (name, json) in remoteBreakers where ResourceName.isValid(name) {
                guard let config = try? decoder.decode(BreakerConfig.self, from: Data(json.utf8)), config.validate().isEmpty else { continue }
                if breakerConfigs[name] != config { try await applyBreakerConfigLocally(name: name, config: config, json: json) }
            }
            for id in try await cluster.revocations() where !appliedRevocations.contains(id) {
                await applyRevocation(id)
            }
            do {
                for name in breakers.keys.sorted() where sharing(of: name) != .local {
                    let (record, now) = try await cluster.breakerSnapshot(name)
                    noteRedisTime(now)
                    if let record { await receiveSharedBreaker(name, record) }
                }
                await retryUnsharedProposals()
            }
        } catch {
            logger.warning("reconciliation with the cluster failed; retrying next interval", metadata: ["error": "\(error)"])
        }
    }

    /// Shared store: writes the database's copy of every document of `kind` to Redis where Redis's
    /// differs, and reloads the kind when memory differs from the database.
    private func reconcileWithSharedStore(
        _ kind: DocumentKind, remote: [String: String], sharedKind: String, cluster: ClusterLink
    ) async throws {
        let decoder = JSONDecoder()
        for document in try await store.documents(kind: kind) where ResourceName.isValid(document.name) {
            if remote[document.name] != document.json {
                try await cluster.putSharedDocument(kind: sharedKind, name: document.name, json: document.json)
            }
            let differs: Bool
            switch kind {
            case .limitPolicy: differs = (try? decoder.decode(LimitPolicy.self, from: Data(document.json.utf8))) != policies[document.name]
            case .breakerConfig: differs = (try? decoder.decode(BreakerConfig.self, from: Data(document.json.utf8))) != breakerConfigs[document.name]
            }
            if differs { pendingReloads.insert(kind) }
        }
        if pendingReloads.contains(kind) { await reloadPendingDocuments() }
    }

    // MARK: Shared breakers (cluster mode)

    /// How breaker `name` is shared: its own config's `sharing`, else the node's `breakers.sharing`.
    private func sharing(of name: String) -> BreakerSharing {
        (breakers[name]?.config.sharing ?? breakerConfigs[name]?.sharing) ?? configuration.breakerSharing
    }

    /// Redis's clock now, estimated from the last heartbeat plus the monotonic time since.
    private func redisNowEstimate() -> Int64 {
        guard let at = redisSampleAt else { return lastRedisNowMs }
        return lastRedisNowMs + (clock.monotonicNow() - at).nanoseconds / 1_000_000
    }

    private func noteRedisTime(_ nowMs: Int64) {
        if nowMs > redisNowEstimate() {
            lastRedisNowMs = nowMs
            redisSampleAt = clock.monotonicNow()
        }
    }

    /// A cluster record of breaker `name` (bus, snapshot or script answer).
    private func receiveSharedBreaker(_ name: String, _ record: SharedBreakerState) async {
        guard sharing(of: name) != .local else { return }
        if breakers[name] == nil {
            guard breakers.count < configuration.maxBreakers else { return }
            breakers[name] = CircuitBreaker(config: breakerConfigs[name] ?? configuration.defaultBreakerConfig, now: clock.monotonicNow())
            metrics.breakerState(name, state: .closed)
        }
        var coordinator = sharedBreakers[name] ?? SharedBreakerCoordinator(nodeID: nodeID, sharing: sharing(of: name))
        let actions = coordinator.receive(record)
        sharedBreakers[name] = coordinator
        await perform(actions, breaker: name)
    }

    /// Carries out what a breaker's cluster side decided.
    private func perform(_ actions: [SharedBreakerAction], breaker name: String) async {
        for action in actions {
            switch action {
            case .adopt(let record):
                let now = clock.monotonicNow()
                let openUntil = record.localOpenUntil(redisNowMs: redisNowEstimate(), now: now)
                if let transition = breakers[name]?.adopt(state: record.state, openUntil: openUntil, now: now) {
                    metrics.breakerTransition(name, transition)
                    logger.notice(
                        "breaker follows the cluster",
                        metadata: ["breaker": "\(name)", "to": "\(record.state.rawValue)", "origin": "\(record.originNode)", "version": "\(record.version)"])
                }
            case .propose(let proposal):
                await propose(proposal, breaker: name)
            case .castVote:
                await castTripVote(breaker: name)
            case .flushCounters:
                await flushAggregateCounters(breaker: name)
            }
        }
    }

    /// `quorum(n)`: records this node's trip vote in Redis; the vote that makes n distinct nodes within
    /// the window opens the breaker cluster-wide. Until then a sick node stays open alone.
    private func castTripVote(breaker name: String) async {
        guard let cluster, case .quorum(let quorum) = sharing(of: name), let config = breakers[name]?.config else { return }
        do {
            let voters = try await cluster.voteTrip(name, windowMs: Self.quorumVoteWindowMs)
            guard voters >= quorum, !(sharedBreakers[name]?.isClusterOpen ?? false) else { return }
            let openings = sharedBreakers[name]?.known?.consecutiveOpenings ?? 0
            await propose(
                SharedBreakerProposal(
                    expectedVersion: sharedBreakers[name]?.epoch ?? 0, state: .open, reason: .failureRate, originNode: nodeID,
                    openWaitMs: config.openWaitMs(forOpening: openings + 1), consecutiveOpenings: openings + 1),
                breaker: name)
        } catch {
            logger.warning("could not cast a trip vote", metadata: ["breaker": "\(name)", "error": "\(error)"])
        }
    }

    /// Approximate mode: pushes every policy's local consumption to Redis and reads the cluster's
    /// totals, each policy at most every `syncIntervalMs`. The `ClusterService` calls it often.
    public func syncApproximateLimits() async {
        guard let cluster, !leaving, !sharedHealth.isDegraded else { return }
        let now = clock.monotonicNow()
        for (name, policy) in policies where policy.mode == .approximate && approximate[name] != nil {
            if let last = lastApproximateSync[name], now - last < .milliseconds(Int64(policy.syncIntervalMs)) { continue }
            lastApproximateSync[name] = now
            let items = approximate[name]!.beginSync(atRedisMs: redisNowEstimate())
            guard !items.isEmpty else { continue }
            // The child tasks carry only an index and plain values back (no typed-throws `Result` in
            // the task group's element type: that shape corrupted memory on Swift 6.3.1).
            let outcomes = await withTaskGroup(of: ApproximateSyncOutcome.self) { group in
                for (index, item) in items.enumerated() {
                    let periodMs = policy.limits[item.limitIndex].periodMs
                    group.addTask {
                        do {
                            let totals = try await cluster.syncApproximate(policy: name, item: item, periodMs: periodMs)
                            return ApproximateSyncOutcome(index: index, total: totals.total, previous: totals.previous, error: nil)
                        } catch {
                            return ApproximateSyncOutcome(index: index, total: 0, previous: 0, error: error)
                        }
                    }
                }
                var collected: [ApproximateSyncOutcome] = []
                collected.reserveCapacity(items.count)
                for await outcome in group { collected.append(outcome) }
                return collected
            }
            for outcome in outcomes {
                let item = items[outcome.index]
                if let error = outcome.error {
                    approximate[name]?.failSync(item)
                    if let redisError = error as? RedisError, ClusterLink.isLossOfRedis(redisError), !leaving {
                        noteSharedFailure(redisError)
                    }
                } else {
                    approximate[name]?.completeSync(item, clusterTotal: outcome.total, previousTotal: outcome.previous)
                }
            }
        }
    }

    /// `aggregate`: publishes this node's window counters of every closed breaker and decides on the
    /// cluster-wide failure and slow-call rates. The `ClusterService` runs it every 100 ms.
    public func flushAggregateCounters() async {
        guard cluster != nil, !leaving else { return }
        for name in breakers.keys.sorted() where breakers[name]?.state == .closed && sharing(of: name) == .aggregate {
            await flushAggregateCounters(breaker: name)
        }
    }

    private func flushAggregateCounters(breaker name: String) async {
        guard let cluster, sharing(of: name) == .aggregate, let breaker = breakers[name] else { return }
        let config = breaker.config
        let snapshot = breaker.snapshot(now: clock.monotonicNow())
        let counters = breaker.state == .closed ? WindowCounters(snapshot) : .zero
        var coordinator = sharedBreakers[name] ?? SharedBreakerCoordinator(nodeID: nodeID, sharing: sharing(of: name))
        do {
            let (now, nodes) = try await cluster.flushCounters(name, counters: counters, epoch: coordinator.epoch, staleAfterMs: Self.aggregateStaleAfterMs)
            noteRedisTime(now)
            coordinator = sharedBreakers[name] ?? coordinator
            for entry in nodes {
                coordinator.receiveCounters(nodeID: entry.node, counters: entry.counters, epoch: entry.epoch, atRedisMs: entry.atMs)
            }
            let (_, actions) = coordinator.evaluateAggregate(config: config, atRedisMs: now)
            sharedBreakers[name] = coordinator
            await perform(actions, breaker: name)
        } catch {
            logger.debug("could not flush aggregate counters", metadata: ["breaker": "\(name)", "error": "\(error)"])
        }
    }

    /// Counters older than this (Redis time) no longer count in `aggregate` decisions.
    static let aggregateStaleAfterMs: Int64 = 3_000

    /// How long a quorum trip vote counts (Redis time).
    static let quorumVoteWindowMs: Int64 = 60_000

    /// Reports a cluster probe's outcome; the reporter that completes the round proposes its verdict
    /// (closed, or open again with the cluster's backoff) for every node. An ignored probe gives its
    /// slot back instead.
    private func reportProbe(_ name: String, round: UInt64, outcome: CallOutcome, duration: Span) async {
        guard let cluster, let config = breakers[name]?.config ?? breakerConfigs[name] else { return }
        do {
            if outcome == .ignored {
                try await cluster.returnProbe(name, round: round)
                return
            }
            let slow = duration > config.slowCallDuration
            let (done, failed, slowCount) = try await cluster.reportProbe(
                name, round: round, failed: outcome == .failure, slow: slow, ttlMs: 2 * config.permitTimeoutMs)
            guard done == config.halfOpenPermittedCalls else { return }
            let total = Double(done)
            let reopen = Double(failed) * 100 / total >= config.failureRateThreshold
                || Double(slowCount) * 100 / total >= config.slowCallRateThreshold
            let openings = (sharedBreakers[name]?.known?.consecutiveOpenings ?? 0)
            let proposal = SharedBreakerProposal(
                expectedVersion: round, state: reopen ? .open : .closed, reason: reopen ? .probesFailed : .probesSucceeded,
                originNode: nodeID, openWaitMs: reopen ? config.openWaitMs(forOpening: openings + 1) : nil,
                consecutiveOpenings: reopen ? openings + 1 : 0)
            await propose(proposal, breaker: name)
        } catch {
            logger.warning("could not report a probe to the cluster", metadata: ["breaker": "\(name)", "error": "\(error)"])
        }
    }

    /// Transitions this node could not share (Redis was unreachable — e.g. a trip during an outage):
    /// proposed again once Redis answers, if the local breaker is still in that state, against the
    /// cluster's current version. The cluster then follows (or, if it moved on, this node adopts its
    /// record): either way the nodes agree again.
    private func retryUnsharedProposals() async {
        let now = clock.monotonicNow()
        for (name, proposal) in unsharedProposals.sorted(by: { $0.key < $1.key }) {
            unsharedProposals[name] = nil
            guard sharing(of: name) != .local, breakers[name]?.snapshot(now: now).state == proposal.state else { continue }
            var retry = proposal
            if retry.expectedVersion != nil { retry.expectedVersion = sharedBreakers[name]?.epoch ?? 0 }
            logger.notice("sharing a breaker transition made while Redis was unreachable", metadata: [
                "breaker": "\(name)", "state": "\(proposal.state.rawValue)"])
            await propose(retry, breaker: name)
        }
    }

    /// Runs the compare-and-set script; its answer (written or current record) goes back to the
    /// breaker's cluster side, which adopts a newer record.
    private func propose(_ proposal: SharedBreakerProposal, breaker name: String) async {
        guard let cluster, let authenticator = busAuthenticator else { return }
        let estimate = redisNowEstimate()
        let announced = SharedBreakerState(
            state: proposal.state, version: (proposal.expectedVersion ?? sharedBreakers[name]?.epoch ?? 0) + 1,
            openUntilRedisMs: proposal.openWaitMs.map { estimate + $0 }, reason: proposal.reason, originNode: nodeID,
            changedAtRedisMs: estimate, consecutiveOpenings: proposal.consecutiveOpenings)
        let frame = busSender.envelope(kind: .breakerState, payload: announced.encodePayload(breaker: name), redisTimeMs: max(estimate, 1))
            .encode(authenticator: authenticator)
        do {
            let (_, record, now) = try await cluster.transitionBreaker(name, proposal: proposal, frame: frame)
            noteRedisTime(now)
            unsharedProposals[name] = nil
            var coordinator = sharedBreakers[name] ?? SharedBreakerCoordinator(nodeID: nodeID, sharing: sharing(of: name))
            let actions = coordinator.receive(record)
            sharedBreakers[name] = coordinator
            await perform(actions, breaker: name)
        } catch {
            sharedBreakers[name]?.proposalFailed()
            unsharedProposals[name] = proposal
            logger.warning("could not share a breaker transition; the next reconciliation retries", metadata: ["breaker": "\(name)", "error": "\(error)"])
        }
    }

    // MARK: Breakers

    /// Asks breaker `name` for permission to call. Unknown names are created from the default config.
    public func acquire(breaker name: String) async throws(CoordinatorError) -> BreakerAcquireResult {
        try ensureRunning()
        try ensureBreakerExists(name)
        guard permits.count < configuration.maxOutstandingPermits else {
            throw CoordinatorError(.permitLimitReached, "this node already has \(permits.count) outstanding permits (breakers.maxOutstandingPermits); record outcomes or let permits expire")
        }
        let now = clock.monotonicNow()
        lastActivity[name] = now
        let acquisition = breakers[name]!.acquire(now: now)
        if let transition = acquisition.transition { noteTransition(name, transition) }
        guard let permit = acquisition.permit else {
            metrics.breakerCall(name, result: "rejected")
            return BreakerAcquireResult(breaker: name, permitted: false, permitID: nil, state: breakers[name]!.state, retryAfter: acquisition.retryAfter)
        }
        // Cluster mode: a half-open probe also needs one of the cluster's probe slots, so exactly
        // `halfOpenPermittedCalls` probes run cluster-wide.
        var probeRound: UInt64?
        if permit.state == .halfOpen, let cluster, sharing(of: name) != .local,
            let record = sharedBreakers[name]?.known, record.state == .open {
            let config = breakers[name]!.config
            do {
                if try await cluster.acquireProbe(name, round: record.version, permitted: config.halfOpenPermittedCalls, ttlMs: 2 * config.permitTimeoutMs) {
                    probeRound = record.version
                } else {
                    _ = breakers[name]?.record(.ignored, duration: .zero, permit: permit, now: clock.monotonicNow())
                    metrics.breakerCall(name, result: "rejected")
                    return BreakerAcquireResult(breaker: name, permitted: false, permitID: nil, state: breakers[name]?.state ?? .halfOpen, retryAfter: nil)
                }
            } catch {
                // Redis unreachable: probe locally rather than never (degraded, like limits).
                logger.warning("probe slot unavailable from the cluster; probing locally", metadata: ["breaker": "\(name)", "error": "\(error)"])
            }
        }
        let id = Secrets.newPermitID()
        let timeout = Span.milliseconds(breakers[name]?.config.permitTimeoutMs ?? 60_000)
        permits[id] = OutstandingPermit(breaker: name, permit: permit, acquiredAt: now, expiresAt: now + timeout, probeRound: probeRound)
        outstandingByBreaker[name, default: 0] += 1
        metrics.breakerCall(name, result: "permitted")
        return BreakerAcquireResult(breaker: name, permitted: true, permitID: id, state: breakers[name]?.state ?? .halfOpen, retryAfter: nil)
    }

    /// Records the outcome of a permitted call. A permit is single-use: recording it twice, or
    /// recording an unknown or expired permit, fails with 409.
    public func record(
        breaker name: String, permitID: String, outcome: CallOutcome, durationMilliseconds: Int64
    ) async throws(CoordinatorError) -> BreakerStatus {
        try ensureRunning()
        guard ResourceName.isValid(name) else { throw CoordinatorError(.invalidName, "breaker names must match [A-Za-z0-9._:-]{1,128}") }
        guard durationMilliseconds >= 0, durationMilliseconds <= 86_400_000 * 7 else {
            throw CoordinatorError(.invalidRequest, "durationMs must be between 0 and 604800000")
        }
        guard let outstanding = permits[permitID] else {
            if let breaker = recordedPermits.value(forKey: permitID, now: clock.monotonicNow()), breaker == name {
                throw CoordinatorError(.permitAlreadyRecorded, "permit \(permitID) was already recorded or has expired")
            }
            throw CoordinatorError(.unknownPermit, "no outstanding permit \(permitID) for breaker \"\(name)\"")
        }
        guard outstanding.breaker == name else {
            throw CoordinatorError(.unknownPermit, "permit \(permitID) belongs to another breaker")
        }
        takePermit(permitID)
        let now = clock.monotonicNow()
        lastActivity[name] = now
        recordedPermits.set(name, forKey: permitID, expiresAt: now + .seconds(3600))
        if breakers[name] != nil {
            if let transition = breakers[name]!.record(outcome, duration: .milliseconds(durationMilliseconds), permit: outstanding.permit, now: now) {
                noteTransition(name, transition)
            }
            metrics.breakerOutcome(name, outcome: outcome)
        }
        if let round = outstanding.probeRound {
            await reportProbe(name, round: round, outcome: outcome, duration: .milliseconds(durationMilliseconds))
        }
        return status(of: name, now: clock.monotonicNow())!
    }

    /// Every breaker's status, ordered by name.
    /// The configuration of breaker `name`, if it has one of its own.
    public func breakerConfiguration(_ name: String) -> BreakerConfig? { breakerConfigs[name] }

    public func breakerStatuses() -> [BreakerStatus] {
        let now = clock.monotonicNow()
        return breakers.keys.sorted().compactMap { status(of: $0, now: now) }
    }

    /// One breaker's status, or `nil` if no breaker has that name.
    public func breakerStatus(_ name: String) -> BreakerStatus? {
        status(of: name, now: clock.monotonicNow())
    }

    /// Replaces breaker `name`'s configuration (creating the breaker), persists it and applies it.
    public func configureBreaker(name: String, config: BreakerConfig, actor: String = "admin") async throws -> BreakerStatus {
        try ensureRunning()
        guard ResourceName.isValid(name) else { throw CoordinatorError(.invalidName, "breaker names must match [A-Za-z0-9._:-]{1,128}") }
        if let problem = config.validate().first {
            throw CoordinatorError(.invalidBreakerConfig, "\(problem.key): \(problem.reason)")
        }
        if breakers[name] == nil, breakers.count >= configuration.maxBreakers {
            throw CoordinatorError(.breakerLimitReached, "this node already has \(breakers.count) breakers (breakers.maxBreakers)")
        }
        let json = try Self.encode(config)
        if let cluster {
            do {
                try await cluster.putSharedDocument(kind: SharedKind.breakers, name: name, json: json)
            } catch {
                throw CoordinatorError(.storeUnavailable, "the cluster's configuration (Redis) is unreachable; breaker not changed: \(error)")
            }
        }
        try await applyBreakerConfigLocally(name: name, config: config, json: json)
        await publish(.breakerConfigChanged, Self.documentPayload(name: name, json: json))
        await auditInternal(action: "breaker.configure", resource: "breaker:\(name)", actor: actor, detail: [:])
        return status(of: name, now: clock.monotonicNow())!
    }

    /// Stores (unless `persist` is false: the store already has it) and applies a breaker configuration on this node.
    func applyBreakerConfigLocally(name: String, config: BreakerConfig, json: String, persist: Bool = true) async throws {
        if persist {
            try await storeCall { try await $0.putDocument(kind: .breakerConfig, name: name, json: json, updatedAt: self.clock.wallMilliseconds()) }
        }
        let now = clock.monotonicNow()
        breakerConfigs[name] = config
        if sharedBreakers[name] != nil, sharedBreakers[name]!.sharing != sharing(of: name) || config.sharing != nil {
            sharedBreakers[name]!.setSharing(config.sharing ?? configuration.breakerSharing)
        }
        if breakers[name] == nil {
            breakers[name] = CircuitBreaker(config: config, now: now)
            metrics.breakerState(name, state: .closed)
        } else if let transition = breakers[name]!.reconfigure(config, now: now) {
            noteTransition(name, transition)
        }
    }

    /// Moves breaker `name` to `state` by operator command; persisted, so a restart keeps
    /// forced-open, disabled and metrics-only breakers as they were.
    public func setBreakerState(name: String, state: BreakerState, actor: String = "admin") async throws -> BreakerStatus {
        try ensureRunning()
        try ensureBreakerExists(name)
        if breakerConfigs[name] == nil {
            // A breaker created by its first acquire has no stored config yet; store the one it runs
            // with, so a restart brings it back (and its forced state with it).
            let config = breakers[name]!.config
            try await storeCall { try await $0.putDocument(kind: .breakerConfig, name: name, json: try Self.encode(config), updatedAt: self.clock.wallMilliseconds()) }
            breakerConfigs[name] = config
        }
        try await storeCall { try await $0.setSetting(SettingKey.breakerState(name), value: state.rawValue) }
        let now = clock.monotonicNow()
        if let transition = breakers[name]!.transition(to: state, now: now) {
            noteTransition(name, transition)
        }
        await auditInternal(action: "breaker.state", resource: "breaker:\(name)", actor: actor, detail: ["state": state.rawValue])
        return status(of: name, now: now)!
    }

    private func ensureBreakerExists(_ name: String) throws(CoordinatorError) {
        guard ResourceName.isValid(name) else { throw CoordinatorError(.invalidName, "breaker names must match [A-Za-z0-9._:-]{1,128}") }
        guard breakers[name] == nil else { return }
        if breakers.count >= configuration.maxBreakers { evictIdleBreaker() }
        guard breakers.count < configuration.maxBreakers else {
            throw CoordinatorError(.breakerLimitReached, "this node already has \(breakers.count) breakers (breakers.maxBreakers); configure \"\(name)\" explicitly after removing others, or raise the limit")
        }
        breakers[name] = CircuitBreaker(config: breakerConfigs[name] ?? configuration.defaultBreakerConfig, now: clock.monotonicNow())
        metrics.breakerState(name, state: .closed)
    }

    /// At the cap, forgets the longest-idle breaker that nobody configured: created on first use,
    /// closed, no permits out, no operator state, idle for at least `breakerIdleEviction`. Such a
    /// breaker is indistinguishable from a new one, so forgetting it loses nothing — and a flood of
    /// random names cannot lock legitimate new breakers out for good.
    private func evictIdleBreaker() {
        let now = clock.monotonicNow()
        var candidate: (name: String, last: Instant)?
        for (name, breaker) in breakers
        where breakerConfigs[name] == nil && breaker.state == .closed && (outstandingByBreaker[name] ?? 0) == 0 {
            let last = lastActivity[name] ?? .zero
            guard now - last >= Self.breakerIdleEviction else { continue }
            if candidate == nil || last < candidate!.last { candidate = (name, last) }
        }
        guard let victim = candidate?.name else { return }
        breakers[victim] = nil
        lastActivity[victim] = nil
        metrics.forgetBreaker(victim)
        logger.debug("evicted idle breaker", metadata: ["breaker": "\(victim)"])
    }

    private func status(of name: String, now: Instant) -> BreakerStatus? {
        guard let breaker = breakers[name] else { return nil }
        let sharing = cluster != nil ? self.sharing(of: name).description : "local"
        return BreakerStatus(name: name, snapshot: breaker.snapshot(now: now), outstandingPermits: outstandingByBreaker[name] ?? 0, sharing: sharing)
    }

    private func noteTransition(_ name: String, _ transition: BreakerTransition) {
        metrics.breakerTransition(name, transition)
        if cluster != nil, sharing(of: name) != .local, let config = breakers[name]?.config {
            var coordinator = sharedBreakers[name] ?? SharedBreakerCoordinator(nodeID: nodeID, sharing: sharing(of: name))
            let actions = coordinator.localTransition(transition, config: config, atRedisMs: redisNowEstimate())
            sharedBreakers[name] = coordinator
            if !actions.isEmpty {
                Task { await self.perform(actions, breaker: name) }
            }
        }
        logger.notice(
            "breaker transition",
            metadata: [
                "breaker": "\(name)", "from": "\(transition.from.rawValue)", "to": "\(transition.to.rawValue)",
                "reason": "\(transition.reason.rawValue)",
                "failureRate": "\(transition.failureRate.map { "\($0)" } ?? "-")",
                "slowCallRate": "\(transition.slowCallRate.map { "\($0)" } ?? "-")",
            ]
        )
    }

    // MARK: Tokens

    /// Creates a token for `subject` under `policy` (the default policy when `nil`), valid for
    /// `ttlSeconds` (forever when `nil`). The secret is returned once and only its hash is stored.
    public func createToken(subject: String, policy: String?, ttlSeconds: Int64?, actor: String = "admin") async throws -> CreatedToken {
        try ensureRunning()
        guard ResourceName.isValid(subject) else { throw CoordinatorError(.invalidName, "subject must match [A-Za-z0-9._:-]{1,128}") }
        let policyName = policy ?? configuration.defaultPolicyName
        guard ResourceName.isValid(policyName) else { throw CoordinatorError(.invalidName, "policy names must match [A-Za-z0-9._:-]{1,128}") }
        guard policies[policyName] != nil else { throw CoordinatorError(.unknownPolicy, "no policy named \"\(policyName)\"") }
        if let ttlSeconds, ttlSeconds < 1 || ttlSeconds > 10 * 365 * 86_400 {
            throw CoordinatorError(.invalidRequest, "ttlSeconds must be between 1 and 315360000")
        }
        let secret = Secrets.newTokenSecret()
        let hash = Secrets.sha256(secret)
        let now = clock.wallMilliseconds()
        let record = TokenRecord(
            id: Secrets.newTokenID(), secretHash: hash, subject: subject, policy: policyName, createdAt: now,
            expiresAt: ttlSeconds.map { now + $0 * 1000 }, revokedAt: nil
        )
        if let cluster, !storeIsShared {
            // Shared first: any node can then verify the token (Redis is the cluster's token index;
            // with PostgreSQL the store itself is shared).
            do {
                try await cluster.putSharedDocument(kind: SharedKind.tokens, name: record.id, json: try Self.encode(record))
                try await cluster.putSharedDocument(kind: SharedKind.tokenHashes, name: Secrets.hex(hash), json: record.id)
            } catch {
                throw CoordinatorError(.storeUnavailable, "the cluster's token index (Redis) is unreachable; token not created: \(error)")
            }
        }
        try await storeCall { try await $0.insertToken(record) }
        _ = unknownSecrets.removeValue(forKey: hash)
        await auditInternal(action: "token.create", resource: "token:\(record.id)", actor: actor, detail: ["subject": subject, "policy": policyName])
        return CreatedToken(token: record, secret: secret)
    }

    /// Every token (never secrets), oldest first.
    public func tokens() async throws -> [TokenRecord] {
        try ensureRunning()
        var local = try await storeCall { try await $0.tokens() }
        if let cluster, !storeIsShared, let shared = try? await cluster.sharedDocuments(kind: SharedKind.tokens) {
            // The cluster's index is the truth for tokens created on other nodes.
            let decoder = JSONDecoder()
            var byID = Dictionary(local.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
            for json in shared.values {
                if let token = try? decoder.decode(TokenRecord.self, from: Data(json.utf8)) { byID[token.id] = token }
            }
            local = byID.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        }
        return local
    }

    /// Revokes token `id`; the first revocation time is kept. Clears it from the cache at once.
    public func revokeToken(id: String, actor: String = "admin") async throws -> TokenRecord {
        try ensureRunning()
        if storeIsShared { return try await revokeSharedStoreToken(id: id, actor: actor) }
        let now = clock.wallMilliseconds()
        var shared: TokenRecord?
        if let cluster {
            do {
                if let json = try await cluster.sharedDocument(kind: SharedKind.tokens, name: id),
                    var token = try? JSONDecoder().decode(TokenRecord.self, from: Data(json.utf8)) {
                    if token.revokedAt == nil {
                        token.revokedAt = now
                        try await cluster.putSharedDocument(kind: SharedKind.tokens, name: id, json: try Self.encode(token))
                    }
                    try await cluster.addRevocation(id)
                    shared = token
                }
            } catch let error as RedisError {
                throw CoordinatorError(.storeUnavailable, "the cluster's token index (Redis) is unreachable; token not revoked: \(error)")
            }
        }
        if let shared, try await storeCall({ try await $0.token(id: id) }) == nil {
            try? await storeCall { try await $0.insertToken(shared) }
        }
        guard let record = try await storeCall({ try await $0.revokeToken(id: id, at: now) }) ?? shared else {
            throw CoordinatorError(.unknownToken, "no token with id \"\(id)\"")
        }
        appliedRevocations.insert(id)
        evictToken(id: id)
        if shared != nil { await publish(.tokenRevoked, Self.namePayload(id)) }
        await auditInternal(action: "token.revoke", resource: "token:\(id)", actor: actor, detail: [:])
        return record
    }

    /// Revokes a token of the shared (PostgreSQL) store: first in Redis when configured (revocation
    /// set + second-level cache entry, one step: no node can re-cache it from then on), then in the
    /// store, whose trigger NOTIFYs every node; peers also hear it on the bus.
    private func revokeSharedStoreToken(id: String, actor: String) async throws -> TokenRecord {
        guard let existing = try await storeCall({ try await $0.token(id: id) }) else {
            throw CoordinatorError(.unknownToken, "no token with id \"\(id)\"")
        }
        if let cluster {
            do {
                try await cluster.revokeToken(id: id, secretHashHex: Secrets.hex(existing.secretHash))
            } catch {
                throw CoordinatorError(.storeUnavailable, "the cluster's token cache (Redis) is unreachable; token not revoked: \(error)")
            }
        }
        guard let record = try await storeCall({ try await $0.revokeToken(id: id, at: self.clock.wallMilliseconds()) }) else {
            throw CoordinatorError(.unknownToken, "no token with id \"\(id)\"")
        }
        appliedRevocations.insert(id)
        evictToken(id: id)
        if cluster != nil { await publish(.tokenRevoked, Self.namePayload(id)) }
        await auditInternal(action: "token.revoke", resource: "token:\(id)", actor: actor, detail: [:])
        return record
    }

    /// Verifies a token secret: cache first, then the store. Unknown secrets are cached briefly in
    /// a separately bounded cache so a flood of bad tokens neither reaches the store nor evicts good ones.
    public func verifyToken(_ secret: String) async throws -> TokenVerification {
        try ensureRunning()
        guard Secrets.looksLikeTokenSecret(secret) else {
            metrics.tokenVerification("unknown")
            return .invalid(.unknown)
        }
        let hash = Secrets.sha256(secret)
        let monotonic = clock.monotonicNow()
        let record: TokenRecord
        if let cached = tokenCache.value(forKey: hash, now: monotonic) {
            metrics.cacheLookup(hit: true)
            record = cached
        } else if unknownSecrets.value(forKey: hash, now: monotonic) != nil {
            metrics.cacheLookup(hit: true)
            metrics.tokenVerification("unknown")
            return .invalid(.unknown)
        } else {
            metrics.cacheLookup(hit: false)
            let epoch = revocationEpoch
            guard let stored = try await lookUpToken(hash: hash) else {
                unknownSecrets.set(true, forKey: hash, expiresAt: monotonic + .milliseconds(configuration.negativeCacheTTLMilliseconds))
                metrics.tokenVerification("unknown")
                return .invalid(.unknown)
            }
            record = stored
            if stored.revokedAt == nil, epoch == revocationEpoch {
                tokenCache.set(stored, forKey: hash, expiresAt: clock.monotonicNow() + .milliseconds(configuration.tokenCacheTTLMilliseconds))
            }
        }
        if record.revokedAt != nil {
            metrics.tokenVerification("revoked")
            return .invalid(.revoked)
        }
        if let expiresAt = record.expiresAt, expiresAt <= clock.wallMilliseconds() {
            metrics.tokenVerification("expired")
            return .invalid(.expired)
        }
        metrics.tokenVerification("valid")
        return .valid(record)
    }

    /// Drops every cached verification of token `id`, and keeps a verification that read the store
    /// before now from re-caching it.
    func evictToken(id: String) {
        revocationEpoch &+= 1
        tokenCache.removeAll { _, cached in cached.id == id }
    }

    /// A token created on another node: looked up in the cluster's index and copied to the local
    /// store, so later checks are local.
    func sharedToken(hash: [UInt8]) async -> TokenRecord? {
        guard let cluster else { return nil }
        do {
            guard let id = try await cluster.sharedDocument(kind: SharedKind.tokenHashes, name: Secrets.hex(hash)),
                let json = try await cluster.sharedDocument(kind: SharedKind.tokens, name: id),
                let token = try? JSONDecoder().decode(TokenRecord.self, from: Data(json.utf8)),
                Secrets.constantTimeEqual(token.secretHash, hash)
            else { return nil }
            if (try? await store.token(id: id)) == nil { try? await store.insertToken(token) }
            return token
        } catch {
            logger.warning("cluster token index unreachable; verifying from the local store only", metadata: ["error": "\(error)"])
            return nil
        }
    }

    // MARK: Admit

    /// Verifies the token, acquires the breaker (if named) and checks the token's rate limit, in
    /// one call. A request refused by the rate limit gives its breaker permit back, and a request
    /// refused by the breaker consumes no rate-limit budget.
    public func admit(token secret: String, cost: Int, breaker: String?) async throws -> AdmitResult {
        try ensureRunning()
        guard cost >= 0, cost <= 1_000_000_000 else { throw CoordinatorError(.invalidRequest, "cost must be between 0 and 1000000000") }
        if let breaker, !ResourceName.isValid(breaker) {
            throw CoordinatorError(.invalidName, "breaker names must match [A-Za-z0-9._:-]{1,128}")
        }
        let token: TokenRecord
        switch try await verifyToken(secret) {
        case .valid(let record):
            token = record
        case .invalid(let reason):
            metrics.admit("token")
            return AdmitResult(allowed: false, refusedBy: .token, tokenRefusal: reason)
        }
        // No suspension point from here on: the breaker permit and the limiter decision are one step.
        var acquisition: BreakerAcquireResult?
        if let breaker {
            let acquired = try await acquire(breaker: breaker)
            if !acquired.permitted {
                metrics.admit("breaker")
                return AdmitResult(allowed: false, refusedBy: .breaker, token: token, breaker: acquired)
            }
            acquisition = acquired
        }
        let limit: LimitCheckResult
        do {
            limit = try await checkLimit(policy: token.policy, key: token.id, cost: cost)
        } catch {
            if let permitID = acquisition?.permitID, let breaker { releasePermit(breaker: breaker, permitID: permitID) }
            throw error
        }
        if !limit.decision.allowed {
            if let permitID = acquisition?.permitID, let breaker { releasePermit(breaker: breaker, permitID: permitID) }
            metrics.admit("rate_limit")
            return AdmitResult(allowed: false, refusedBy: .rateLimit, token: token, limit: limit, breaker: nil)
        }
        metrics.admit("allowed")
        return AdmitResult(allowed: true, token: token, limit: limit, breaker: acquisition)
    }

    /// Removes an outstanding permit and keeps the per-breaker count in step.
    @discardableResult
    private func takePermit(_ id: String) -> OutstandingPermit? {
        guard let outstanding = permits.removeValue(forKey: id) else { return nil }
        let remaining = (outstandingByBreaker[outstanding.breaker] ?? 1) - 1
        outstandingByBreaker[outstanding.breaker] = remaining > 0 ? remaining : nil
        return outstanding
    }

    /// Gives an unused permit back: recorded as `ignored`, which returns a half-open probe slot.
    private func releasePermit(breaker name: String, permitID: String) {
        guard let outstanding = takePermit(permitID) else { return }
        if let transition = breakers[name]?.record(.ignored, duration: .zero, permit: outstanding.permit, now: clock.monotonicNow()) {
            noteTransition(name, transition)
        }
    }

    // MARK: Audit

    /// Appends an audit event, idempotent by id. Reusing an id for different content is a conflict.
    /// `detailJSON` is a JSON object as compact text; the node stamps the time and its id.
    public func appendAudit(
        id: String, actor: String, action: String, resource: String, outcome: String, detailJSON: String
    ) async throws -> AuditAppendResult {
        try ensureRunning()
        guard (try? JSONSerialization.jsonObject(with: Data(detailJSON.utf8))) is [String: Any] else {
            throw CoordinatorError(.invalidRequest, "detail must be a JSON object")
        }
        // No store takes a NUL character in text (PostgreSQL refuses it); refused here, before any spool.
        for field in [id, actor, action, resource, outcome, detailJSON] where field.utf8.contains(0) {
            throw CoordinatorError(.invalidRequest, "audit fields must not contain NUL characters")
        }
        let input = AuditEventInput(
            id: id, actor: actor, action: action, resource: resource, outcome: outcome, detailJSON: detailJSON,
            recordedAt: clock.wallMilliseconds(), nodeID: nodeID
        )
        let result: AuditAppendResult
        if let spool = auditSpool {
            if auditSpoolDepth > 0 || ownSharedSpoolEntries > 0 {
                // This node's earlier events wait in a spool: this one goes behind them, so the store
                // gets them in order.
                return try await spoolAudit(input, spool: spool)
            }
            do {
                result = try await store.appendAudit(input)
                if storeStatus.status != "ok" { markStoreRecovered() }
            } catch let error as StoreError where error.code == .unavailable {
                // Unreachable (not refused): buffer it. Any other refusal is the caller's answer.
                markStore(failed: error)
                return try await spoolAudit(input, spool: spool)
            } catch let error as StoreError {
                throw storeFailure(error)
            }
        } else {
            result = try await storeCall { try await $0.appendAudit(input) }
        }
        if result.duplicate && !result.sameContent {
            throw CoordinatorError(.auditIDConflict, "audit event \(id) already exists with different content (seq \(result.seq))")
        }
        metrics.auditAppended(duplicate: result.duplicate)
        return result
    }

    /// Spools `input` durably in the local SQLite spool (PostgreSQL store only).
    func spoolLocally(_ input: AuditEventInput, spool: AuditSpool) async throws -> AuditAppendResult {
        let appended: AuditSpool.Appended
        do {
            appended = try await spool.append(input)
        } catch {
            logger.error("could not spool an audit event", metadata: ["error": "\(error)"])
            throw CoordinatorError(.storeUnavailable, "the store is unreachable and the local audit spool failed: \(error)")
        }
        if appended.duplicate && !appended.sameContent {
            throw CoordinatorError(.auditIDConflict, "audit event \(input.id) is already buffered with different content")
        }
        if !appended.duplicate {
            localSpoolAppends &+= 1
            if auditSpoolDepth == 0 { logger.warning("store unreachable: buffering audit events in the local spool") }
            auditSpoolDepth += 1
            metrics.auditSpoolDepth(local: auditSpoolDepth)
        }
        metrics.auditAppended(duplicate: appended.duplicate)
        return AuditAppendResult(seq: 0, duplicate: appended.duplicate, sameContent: true, buffered: true)
    }

    /// Moves spooled audit events into the store, oldest first, until the spool is empty or the store
    /// fails again. Idempotent by id: an event stored before a crash is not stored twice. The
    /// PostgreSQL service calls it every 200 ms.
    public func drainAuditSpool() async {
        guard let spool = auditSpool, auditSpoolDepth > 0, !shuttingDown, !drainingSpool else { return }
        // This node's events in the cluster's stream were acknowledged before these: they go first.
        guard ownSharedSpoolEntries == 0 else { return }
        drainingSpool = true
        defer { drainingSpool = false }
        var drained = 0
        while !shuttingDown {
            let appendsBefore = localSpoolAppends
            let batch: [AuditSpool.Entry]
            do {
                batch = try await spool.oldest(limit: 256)
            } catch {
                logger.error("could not read the audit spool", metadata: ["error": "\(error)"])
                return
            }
            if batch.isEmpty {
                // Empty, unless an append raced with the read: then look again.
                if appendsBefore == localSpoolAppends {
                    auditSpoolDepth = 0
                    break
                }
                continue
            }
            // Stored entries leave the spool together at the end of the batch (one sync, not one per
            // event). A crash before that re-appends them at the next drain: appends are idempotent by id.
            var storedThrough: Int64?
            var stored = 0
            var failed = false
            var chunkStart = 0
            chunks: while chunkStart < batch.count {
                let chunk = batch[chunkStart..<min(batch.count, chunkStart + Self.spoolDrainChunk)]
                chunkStart = chunk.endIndex
                var results: [AuditAppendResult?]
                do {
                    results = try await store.appendAudit(batch: chunk.map(\.event))
                } catch let error as StoreError where error.code != .unavailable && error.code != .closed {
                    // Refused for good somewhere in the chunk: one by one, to set the refused ones aside.
                    results = []
                    for entry in chunk {
                        do {
                            results.append(try await store.appendAudit(entry.event))
                        } catch let error as StoreError where error.code != .unavailable && error.code != .closed {
                            do {
                                if let position = storedThrough {
                                    try await removeDrained(spool: spool, through: position, count: stored)
                                    drained += stored
                                    storedThrough = nil
                                    stored = 0
                                }
                                try await spool.moveToDeadLetters(position: entry.position, reason: "\(error)")
                            } catch {
                                failed = true
                                break chunks
                            }
                            auditSpoolDepth = max(0, auditSpoolDepth - 1)
                            metrics.auditSpoolDeadLetter()
                            logger.error("the store refused a spooled audit event; moved to the spool's dead_letters table",
                                         metadata: ["id": "\(entry.event.id)", "error": "\(error)"])
                            results.append(nil)
                        } catch {
                            failed = true
                            break chunks
                        }
                    }
                } catch {
                    failed = true
                    break
                }
                for (entry, result) in zip(chunk, results) {
                    guard let result else { continue }
                    noteSpoolConflict(entry.event, result)
                    storedThrough = entry.position
                    stored += 1
                }
            }
            if let position = storedThrough {
                do {
                    try await removeDrained(spool: spool, through: position, count: stored)
                    drained += stored
                } catch {
                    logger.error("could not remove drained events from the audit spool; they are re-appended (idempotently) next time",
                                 metadata: ["error": "\(error)"])
                    failed = true
                }
            }
            if failed {
                metrics.auditSpoolDepth(local: auditSpoolDepth)
                if drained > 0 { logger.notice("audit spool partly drained", metadata: ["events": "\(drained)", "left": "\(auditSpoolDepth)"]) }
                return
            }
        }
        metrics.auditSpoolDepth(local: auditSpoolDepth)
        if drained > 0 { logger.notice("audit spool drained into the store", metadata: ["events": "\(drained)", "left": "\(auditSpoolDepth)"]) }
    }

    /// A spooled event whose id the store already has with other content: the spooled copy is dropped.
    func noteSpoolConflict(_ event: AuditEventInput, _ result: AuditAppendResult) {
        guard result.duplicate && !result.sameContent else { return }
        logger.error("a spooled audit event's id is stored with different content; the spooled copy is dropped",
                     metadata: ["id": "\(event.id)", "seq": "\(result.seq)"])
        metrics.auditSpoolConflict()
    }

    /// Removes the spool's entries through `position`, `count` of them, all in the store now.
    private func removeDrained(spool: AuditSpool, through position: Int64, count: Int) async throws {
        try await spool.removeThrough(position: position)
        auditSpoolDepth = max(0, auditSpoolDepth - count)
    }

    /// Audit events waiting in this node's local spool.
    public var bufferedAuditEvents: Int { auditSpoolDepth }

    /// Up to `limit` audit events after sequence number `after`.
    public func auditEvents(after: Int64, limit: Int) async throws -> [AuditEvent] {
        try ensureRunning()
        guard after >= 0 else { throw CoordinatorError(.invalidRequest, "after must be ≥ 0") }
        guard (1...1000).contains(limit) else { throw CoordinatorError(.invalidRequest, "limit must be between 1 and 1000") }
        return try await storeCall { try await $0.auditEvents(after: after, limit: limit) }
    }

    private func auditInternal(action: String, resource: String, actor: String, detail: [String: String]) async {
        let detailJSON = (try? String(decoding: JSONSerialization.data(withJSONObject: detail, options: [.sortedKeys]), as: UTF8.self)) ?? "{}"
        do {
            // Through the spools like any event: kept while the store is unreachable, and in order.
            _ = try await appendAudit(
                id: UUID().uuidString.lowercased(), actor: actor, action: action, resource: resource, outcome: "success",
                detailJSON: detailJSON)
        } catch {
            logger.error("could not audit an admin action", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }

    // MARK: Cluster, health, lifecycle

    /// What `/v1/cluster` reports.
    public func clusterInfo() -> ClusterInfo {
        let tokenCacheStatus = BackendStatus(
            role: "tokenCache", kind: "memory", status: "ok", detail: "LRU \(tokenCache.count)/\(configuration.tokenCacheCapacity)", sinceMilliseconds: startedAt)
        var storeBackends = [storeStatus]
        if auditSpool != nil {
            storeBackends.append(BackendStatus(
                role: "auditSpool", kind: "sqlite", status: auditSpoolDepth == 0 ? "ok" : "degraded",
                detail: "\(auditSpoolDepth) audit events buffered locally", sinceMilliseconds: startedAt))
            if cluster != nil {
                storeBackends.append(BackendStatus(
                    role: "sharedAuditSpool", kind: "redis", status: sharedSpoolDepth == 0 ? "ok" : "degraded",
                    detail: "\(sharedSpoolDepth) audit events buffered in the cluster's stream", sinceMilliseconds: startedAt))
            }
            storeBackends.append(changeFeedStatus)
        }
        guard let cluster else {
            return ClusterInfo(
                nodeID: nodeID, mode: "pilot", version: CoordinatorVersion.string, startedAtMilliseconds: startedAt,
                backends: storeBackends + [
                    BackendStatus(role: "sharedState", kind: "memory", status: "ok", detail: "single node: limiter and breaker state in this process", sinceMilliseconds: startedAt),
                    tokenCacheStatus,
                ],
                members: [ClusterMember(nodeID: nodeID, isSelf: true, heartbeatAgeMilliseconds: 0)],
                degraded: [],
                postgres: postgres?.snapshot()
            )
        }
        let shared: BackendStatus
        var degraded: [DegradedFeature] = []
        if let since = sharedDegradedSinceWall {
            shared = BackendStatus(role: "sharedState", kind: "redis", status: "degraded", detail: sharedDegradedReason, sinceMilliseconds: since)
            degraded.append(DegradedFeature(
                feature: "limits", mode: configuration.onSharedStateLoss.rawValue, sinceMilliseconds: since,
                reason: sharedDegradedReason, shareDivisor: shareDivisor()))
            degraded.append(DegradedFeature(
                feature: "breakers", mode: "local", sinceMilliseconds: since, reason: sharedDegradedReason, shareDivisor: 1))
        } else {
            shared = BackendStatus(
                role: "sharedState", kind: "redis", status: "ok", detail: "cluster \(cluster.keys.cluster): limits decided in Redis",
                sinceMilliseconds: startedAt)
        }
        // Judged at the estimated Redis time now, not at the last heartbeat: a member that stopped
        // leaves the list within the liveness window of its last heartbeat. (While Redis is lost, the
        // view stays as it was last heard.)
        let judgedAt = sharedHealth.isDegraded ? lastRedisNowMs : redisNowEstimate()
        var members = membership.statuses(atRedisMs: judgedAt).filter(\.isLive).map {
            ClusterMember(nodeID: $0.nodeID, isSelf: $0.nodeID == nodeID, heartbeatAgeMilliseconds: $0.heartbeatAgeMs)
        }
        if !members.contains(where: \.isSelf) {
            members.insert(ClusterMember(nodeID: nodeID, isSelf: true, heartbeatAgeMilliseconds: nil), at: 0)
        }
        return ClusterInfo(
            nodeID: nodeID, mode: "cluster", version: CoordinatorVersion.string, startedAtMilliseconds: startedAt,
            backends: storeBackends + [shared, tokenCacheStatus], members: members, degraded: degraded,
            postgres: postgres?.snapshot()
        )
    }

    /// Whether the node should receive traffic: not shutting down, and the store answers.
    public func readiness() async -> (ready: Bool, checks: [String: String]) {
        if shuttingDown || draining { return (false, ["node": "draining: shutting down"]) }
        var checks: [String: String] = [:]
        if auditSpool != nil {
            checks["auditSpool"] = auditSpoolDepth == 0 ? "empty" : "\(auditSpoolDepth) events buffered (store unreachable), draining"
            if cluster != nil {
                checks["sharedAuditSpool"] = sharedSpoolDepth == 0 ? "empty" : "\(sharedSpoolDepth) events buffered in the cluster's stream, draining"
            }
            checks["changeFeed"] = changeFeedStatus.status == "ok" ? changeFeedStatus.detail : "reconnecting: \(changeFeedStatus.detail)"
        }
        if let postgres {
            let topology = postgres.snapshot()
            checks["postgres"] = topology.splitBrain
                ? "split brain: \(topology.primary.map { "writing to \($0), others fenced" } ?? "no primary chosen")"
                : topology.primary.map { "primary \($0)" } ?? "no primary (failover in progress)"
        }
        if cluster != nil {
            // Degraded shared state still serves (local share), so it does not fail readiness.
            checks["sharedState"] = sharedDegradedSinceWall.map { "degraded since \($0): \(sharedDegradedReason)" } ?? "ok"
        }
        do {
            _ = try await store.setting(SettingKey.nodeID)
            if storeStatus.status != "ok" { markStoreRecovered() }
            checks["store"] = "ok"
            return (true, checks)
        } catch {
            markStore(failed: error)
            checks["store"] = "\(error)"
            return (false, checks)
        }
    }

    /// Runs timers: expires unrecorded permits (as failures of `permitTimeoutMs`), lets breakers
    /// apply time-based transitions, and drops limiter keys that are back to their initial state.
    public func maintain() {
        let now = clock.monotonicNow()
        var expired: [(String, OutstandingPermit)] = []
        for (id, permit) in permits where permit.expiresAt <= now { expired.append((id, permit)) }
        for (id, outstanding) in expired {
            takePermit(id)
            recordedPermits.set(outstanding.breaker, forKey: id, expiresAt: now + .seconds(3600))
            metrics.permitExpired(outstanding.breaker)
            let duration = outstanding.expiresAt - outstanding.acquiredAt
            if let transition = breakers[outstanding.breaker]?.record(.failure, duration: duration, permit: outstanding.permit, now: now) {
                noteTransition(outstanding.breaker, transition)
            }
            if let round = outstanding.probeRound {
                let name = outstanding.breaker
                Task { await self.reportProbe(name, round: round, outcome: .failure, duration: duration) }
            }
        }
        for name in breakers.keys {
            if let transition = breakers[name]!.tick(now: now) { noteTransition(name, transition) }
        }
        var swept = 0
        for name in limiters.keys { swept += limiters[name]!.sweep(now: now) }
        for name in degradedLimiters.keys { swept += degradedLimiters[name]!.sweep(now: now) }
        if !sharedHealth.isDegraded, let recovered = lastSharedRecovery, now - recovered >= .seconds(10) {
            degradedLimiters = [:]
            lastSharedRecovery = nil
        }
        metrics.limiterKeys(limiters.values.reduce(0) { $0 + $1.keyCount }, swept: swept)
        metrics.cacheSize(tokenCache.count)
        if let postgresStore = store as? PostgresStore, lastPartitionMaintenance.map({ now - $0 >= .seconds(3_600) }) ?? true {
            // Audit partitions for this month and the next ones exist before they are needed.
            lastPartitionMaintenance = now
            let wall = clock.wallMilliseconds()
            let logger = logger
            Task {
                do {
                    let created = try await postgresStore.maintainPartitions(now: wall)
                    if !created.isEmpty { logger.notice("audit partitions created", metadata: ["partitions": "\(created)"]) }
                } catch {
                    logger.warning("could not create audit partitions ahead of time", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Marks the node as draining: `/readyz` answers 503 so load balancers stop sending traffic,
    /// while requests already routed here are still served until `shutdown()`.
    public func beginDraining() {
        if !draining {
            draining = true
            logger.notice("draining")
        }
    }

    /// Stops accepting work (new calls fail with 503 `shutting-down`) and closes the store after
    /// in-flight writes finished.
    public func shutdown() async {
        guard !shuttingDown else { return }
        shuttingDown = true
        // Another node drains the cluster's audit spool from now on (entries this node read but did
        // not acknowledge are claimed by it).
        if auditSpool != nil, let cluster {
            // The drain stops at its next entry (it checks `shuttingDown`); wait for it (bounded), so
            // no two nodes drain at once.
            let until = ContinuousClock.now + .seconds(2)
            while drainingSharedSpool, ContinuousClock.now < until { try? await Task.sleep(for: .milliseconds(10)) }
            await cluster.releaseSpoolDrainLock()
        }
        await leaveCluster()
        do {
            try await store.close()
        } catch {
            logger.error("closing the store failed", metadata: ["error": "\(error)"])
        }
        spoolDrainer?.cancel()
        changeFeedTask?.cancel()
        await changeFeed?.close()
        postgresProber?.cancel()
        await postgres?.close()
        await auditSpool?.close()
        logger.info("node stopped")
    }

    private func ensureRunning() throws(CoordinatorError) {
        if shuttingDown { throw CoordinatorError(.shuttingDown, "the node is shutting down") }
    }

    func storeCall<T: Sendable>(_ body: (any CoordinatorStore) async throws -> T) async throws -> T {
        do {
            let value = try await body(store)
            if storeStatus.status != "ok" { markStoreRecovered() }
            return value
        } catch let error as StoreError {
            throw storeFailure(error)
        }
    }

    /// The API error for a store failure; a backend failure also marks the store as failing.
    func storeFailure(_ error: StoreError) -> CoordinatorError {
        switch error.code {
        case .conflict: return CoordinatorError(.invalidRequest, error.message)
        case .closed: return CoordinatorError(.shuttingDown, "the store is closed")
        case .unusable, .backend, .unavailable:
            markStore(failed: error)
            return CoordinatorError(.storeUnavailable, error.message)
        }
    }

    func markStore(failed error: any Error) {
        if storeStatus.status == "ok" {
            storeStatus.status = "down"
            storeStatus.sinceMilliseconds = clock.wallMilliseconds()
            logger.error("store failing", metadata: ["error": "\(error)"])
        }
        storeStatus.detail = "\(error)"
    }

    func markStoreRecovered() {
        storeStatus.status = "ok"
        storeStatus.sinceMilliseconds = clock.wallMilliseconds()
        storeStatus.detail = storeDetail
        logger.notice("store recovered")
    }

    static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}

/// What one approximate-mode sync call returned, by position in the batch.
private struct ApproximateSyncOutcome: Sendable {
    var index: Int
    var total: Int64
    var previous: Int64
    var error: (any Error)?
}
