import CoordinatorCore
import Metrics

/// The node's metrics, through swift-metrics (exported as Prometheus text by the HTTP layer).
/// Metric handles are created once per label set and cached, so the hot path does no registry lookups.
final class NodeMetrics: @unchecked Sendable {
    // @unchecked Sendable: the caches below are only touched from the owning `CoordinatorNode`
    // actor's executor; the metric handles themselves are thread-safe.
    /// Counters by label set, created on first use.
    private var counters: [String: Counter] = [:]
    private var limiterDecisions: [LimiterDecisionKey: Counter] = [:]
    private var breakerStates: [String: [BreakerState: Gauge]] = [:]
    private let cacheHits = Counter(label: "coordinator_token_cache_hits_total")
    private let cacheMisses = Counter(label: "coordinator_token_cache_misses_total")
    private let cacheEntries = Gauge(label: "coordinator_token_cache_entries")
    private let auditNew = Counter(label: "coordinator_audit_events_total", dimensions: [("result", "stored")])
    private let auditDuplicate = Counter(label: "coordinator_audit_events_total", dimensions: [("result", "duplicate")])
    private let limiterKeyGauge = Gauge(label: "coordinator_limiter_keys")
    private let limiterSwept = Counter(label: "coordinator_limiter_keys_swept_total")
    private let sharedDegraded = Gauge(label: "coordinator_shared_state_degraded", dimensions: [("feature", "limits")])
    private let liveMemberGauge = Gauge(label: "coordinator_cluster_live_members")

    func sharedStateDegraded(_ degraded: Bool) {
        sharedDegraded.record(degraded ? 1 : 0)
        if degraded { increment("coordinator_shared_state_degradations_total", []) }
    }

    func busMessage(accepted kind: String) {
        increment("coordinator_bus_messages_total", [("kind", kind)])
    }

    func busMessage(rejected reason: String) {
        increment("coordinator_bus_messages_rejected_total", [("reason", reason)])
    }

    func liveMembers(_ count: Int) {
        liveMemberGauge.record(count)
    }

    /// Increments the counter `label` with `dimensions`, creating and caching its handle once.
    private func increment(_ label: String, _ dimensions: [(String, String)]) {
        var key = label
        for (name, value) in dimensions {
            key += "\u{0}" + name + "=" + value
        }
        if let counter = counters[key] {
            counter.increment()
        } else {
            let counter = Counter(label: label, dimensions: dimensions)
            counters[key] = counter
            counter.increment()
        }
    }

    /// The hottest counter: cached by a two-string key, so a decision allocates nothing.
    func limiterDecision(policy: String, result: String) {
        let key = LimiterDecisionKey(policy: policy, result: result)
        if let counter = limiterDecisions[key] {
            counter.increment()
        } else {
            let counter = Counter(label: "coordinator_limiter_decisions_total", dimensions: [("policy", policy), ("result", result)])
            limiterDecisions[key] = counter
            counter.increment()
        }
    }

    private struct LimiterDecisionKey: Hashable {
        var policy: String
        var result: String
    }

    func breakerCall(_ name: String, result: String) {
        increment("coordinator_breaker_calls_total", [("breaker", name), ("result", result)])
    }

    func breakerOutcome(_ name: String, outcome: CallOutcome) {
        increment("coordinator_breaker_outcomes_total", [("breaker", name), ("outcome", outcome.rawValue)])
    }

    func permitExpired(_ name: String) {
        increment("coordinator_breaker_permits_expired_total", [("breaker", name)])
    }

    /// One gauge per state, 1 for the current state and 0 for the others.
    func breakerState(_ name: String, state current: BreakerState) {
        var gauges = breakerStates[name] ?? [:]
        for state in [BreakerState.closed, .open, .halfOpen, .forcedOpen, .disabled, .metricsOnly] {
            let gauge = gauges[state] ?? Gauge(label: "coordinator_breaker_state", dimensions: [("breaker", name), ("state", state.rawValue)])
            gauges[state] = gauge
            gauge.record(state == current ? 1 : 0)
        }
        breakerStates[name] = gauges
    }

    /// Drops the per-state gauges of a breaker that no longer exists.
    func forgetBreaker(_ name: String) {
        for gauge in (breakerStates.removeValue(forKey: name) ?? [:]).values { gauge.destroy() }
    }

    func breakerTransition(_ name: String, _ transition: BreakerTransition) {
        increment(
            "coordinator_breaker_transitions_total",
            [("breaker", name), ("from", transition.from.rawValue), ("to", transition.to.rawValue), ("reason", transition.reason.rawValue)]
        )
        breakerState(name, state: transition.to)
    }

    func tokenVerification(_ result: String) {
        increment("coordinator_token_verifications_total", [("result", result)])
    }

    func admit(_ result: String) {
        increment("coordinator_admit_total", [("result", result)])
    }

    func cacheLookup(hit: Bool) {
        (hit ? cacheHits : cacheMisses).increment()
    }

    func cacheSize(_ entries: Int) {
        cacheEntries.record(entries)
    }

    private let auditSpoolGauge = Gauge(label: "coordinator_audit_spool_depth", dimensions: [("spool", "local")])
    private let sharedAuditSpoolGauge = Gauge(label: "coordinator_audit_spool_depth", dimensions: [("spool", "shared")])
    private let auditSpoolDeadLetters = Counter(label: "coordinator_audit_spool_dead_letters_total")
    private let changeFeedListening = Gauge(label: "coordinator_postgres_change_feed_listening")
    private let changeFeedResubscriptions = Counter(label: "coordinator_postgres_change_feed_resubscriptions_total")
    private let changeFeedNotifications = Counter(label: "coordinator_postgres_change_notifications_total", dimensions: [("result", "applied")])
    private let changeFeedMalformedNotifications = Counter(label: "coordinator_postgres_change_notifications_total", dimensions: [("result", "malformed")])
    private let tokenLookupsShared = Counter(label: "coordinator_token_lookups_total", dimensions: [("level", "shared")])
    private let tokenLookupsStore = Counter(label: "coordinator_token_lookups_total", dimensions: [("level", "store")])

    /// Whether the change feed LISTENs on the primary now.
    func changeFeed(listening: Bool) { changeFeedListening.record(listening ? 1 : 0) }
    func changeFeedResubscribed() { changeFeedResubscriptions.increment() }
    func changeFeedNotification() { changeFeedNotifications.increment() }
    func changeFeedMalformed() { changeFeedMalformedNotifications.increment() }
    /// A token lookup that missed the local cache, by the level that answered (`shared`: Redis, `store`).
    func tokenLookup(level: String) { (level == "shared" ? tokenLookupsShared : tokenLookupsStore).increment() }
    func auditSpoolDeadLetter() { auditSpoolDeadLetters.increment() }
    func auditSpoolDepth(shared depth: Int) { sharedAuditSpoolGauge.record(depth) }
    private let auditSpoolConflicts = Counter(label: "coordinator_audit_spool_conflicts_total")

    /// Audit events waiting in the local spool (PostgreSQL unreachable).
    func auditSpoolDepth(local depth: Int) { auditSpoolGauge.record(depth) }

    /// A spooled event whose id was stored with other content meanwhile (the spooled copy is dropped).
    func auditSpoolConflict() { auditSpoolConflicts.increment() }

    func auditAppended(duplicate: Bool) {
        (duplicate ? auditDuplicate : auditNew).increment()
    }

    func limiterKeys(_ count: Int, swept: Int) {
        limiterKeyGauge.record(count)
        if swept > 0 { limiterSwept.increment(by: swept) }
    }
}
