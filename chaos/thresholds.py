"""Every threshold, goal and timing of chaos/run, in one place.

Goals (the numbers an invariant is judged against) come first, then the timings that shape each
scenario (how long the load runs, when the fault is injected). A scenario never hard-codes a number
that decides PASS or FAIL: it reads it from here, and the JSON report repeats these values.

Test-only override: CHAOS_THRESHOLD_<NAME>=<value> in the environment replaces the constant NAME
(same type), e.g. CHAOS_THRESHOLD_FAILOVER_WRITES_GOAL_MS=1 to see pg-failover's write check fail.
Every override in effect is printed at start and recorded in the report.
"""

# --- node configuration the goals are derived from (README "Configuration" defaults) ---------------
REDIS_DEADLINE_MS = 50             # redisDeadlineMs default: a hot-path Redis call never waits longer
HEARTBEAT_INTERVAL_MS = 1000       # heartbeatIntervalMs default

# --- breaker-storm -----------------------------------------------------------------------------------
STORM_PROPAGATION_GOAL_MS = 1000   # p99 over nodes × trips: first node seen open → this node seen open
STORM_POLL_INTERVAL_MS = 20        # GET /v1/breakers/NAME on every node, this often
STORM_HALF_OPEN_PROBES = 3         # halfOpenPermittedCalls configured; exactly this many probes per round
STORM_OPEN_WAIT_MS = 1500          # openWaitMs configured
STORM_CLOSE_SLACK_MS = 2000        # upstream healed → every node closed within openWaitMs + this
STORM_CYCLES = 3                   # fail → all open → heal → all closed, this many times per run
STORM_HEALTHY_BEFORE_MS = 1500     # healthy traffic before each failure
STORM_OPEN_TIMEOUT_MS = 1000       # heal the upstream after this even if not every node is open yet
                                   #   (< STORM_OPEN_WAIT_MS: healed before the first half-open round)
STORM_LOAD_RATE = 60               # req/s of each load process (sick node / healthy nodes)

# --- redis-down --------------------------------------------------------------------------------------
REDIS_DOWN_OUTAGE_MS = 10000       # Redis stopped this long
REDIS_DOWN_SWITCH_SLACK_MS = 50    # degraded.sinceMs ≤ (Redis stopped answering) + REDIS_DEADLINE_MS + this
                                   #   (a node notices at its next Redis call; measured from a 2 ms PING loop)
REDIS_DOWN_ADMIT_FACTOR = 1.10     # admitted while Redis is down ≤ this × (burst + rate × outage / period)
REDIS_DOWN_POLICY_RATE = 90        # the probed policy: GCRA 90 per 10 s, burst 1 (smooth), one key
REDIS_DOWN_POLICY_PERIOD_MS = 10000
REDIS_DOWN_POLICY_BURST = 1
REDIS_DOWN_PROBE_RATE = 60         # req/s on that key, over all nodes (saturates every local share)
REDIS_DOWN_RECOVERY_GOAL_MS = 3000 # start-redis ready → degraded empty and breaker agreement on every node
REDIS_DOWN_AGREE_OPEN_WAIT_MS = 20000  # openWaitMs of the breaker tripped on one node during the outage

# --- partition ---------------------------------------------------------------------------------------
PARTITION_MS = 8000                # node-1 (in its own network namespace) cut off Redis and PostgreSQL this long
PARTITION_SWITCH_SLACK_MS = 100    # node-1 degraded.sinceMs ≤ cut + REDIS_DEADLINE_MS + this
                                   #   (DROP: a call waits out its deadline; an idle connection notices later)
PARTITION_LEAVE_GOAL_MS = 3000     # cut → node-1 gone from its peers' GET /v1/cluster members
PARTITION_REJOIN_GOAL_MS = 3000    # heal → node-1 shared again, a member everywhere, every backend ok, breakers agree
PARTITION_ADMIT_SLACK = 0.10       # admitted during the cut ≤ (1 + 1/N + this) × (burst + rate × cut / period):
                                   #   the peers keep the shared limit, node-1 adds at most its 1/N local share
PARTITION_AGREE_OPEN_WAIT_MS = 20000  # openWaitMs of the breaker the peers trip while node-1 is cut off

# --- pg-failover -------------------------------------------------------------------------------------
FAILOVER_WRITES_GOAL_MS = 2000     # promote done → first 201 audit acknowledgement
FAILOVER_KILL_TO_PROMOTE_MS = 1000 # operator reaction time between kill -9 and promote
FAILOVER_LOAD_RATE = 200
SPOOL_DRAIN_TIMEOUT_MS = 30000     # after the load: wait this long at most for every spool to be empty

# --- node-crash --------------------------------------------------------------------------------------
CRASH_LEAVE_GOAL_MS = 3000         # kill -9 → gone from GET /v1/cluster members on every live node
CRASH_POLICY_RATE = 100            # exact-mode policy: GCRA 100 per 60 s, burst 40, 4 keys
CRASH_POLICY_PERIOD_MS = 60000
CRASH_POLICY_BURST = 40
CRASH_KEYS = 4

# --- redis-hang --------------------------------------------------------------------------------------
HANG_PAUSE_MS = 5000
HANG_LATENCY_SLACK_MS = 50         # no request waits longer than REDIS_DEADLINE_MS + this while Redis hangs
HANG_PROBE_INTERVAL_MS = 5         # pause between two requests of one latency prober (one per node)

# --- replica-lag -------------------------------------------------------------------------------------
LAG_PAUSE_MS = 6000                # replay paused this long on pg-1
LAG_STALE_ALLOWED = 0              # read-your-writes reads that miss their own write
LAG_REUSE_TIMEOUT_MS = 8000        # after resume, the replica must serve reads again within this

# --- pg-down-spool -----------------------------------------------------------------------------------
PGDOWN_OUTAGE_MS = 10000           # every PostgreSQL server stopped this long

# --- rogue-bus ---------------------------------------------------------------------------------------
ROGUE_MESSAGES = 10000             # malformed + forged + foreign-cluster + replayed, in equal parts

# --- rolling-restart ---------------------------------------------------------------------------------
ROLLING_FAILED_ALLOWED = 0         # failed requests to nodes that were up

# --- slow-network ------------------------------------------------------------------------------------
SLOW_LATENCY_MS = 50               # added by the fault proxy each way between nodes and Redis / PostgreSQL
SLOW_JITTER_MS = 10                # ± this
SLOW_DURATION_MS = 8000            # the slow network lasts this long
SLOW_REDIS_DEADLINE_MS = 250       # redisDeadlineMs configured for the run (a 100 ms round trip fits)
SLOW_LATENCY_SLACK_MS = 50         # no limit check or admit waits longer than SLOW_REDIS_DEADLINE_MS + this
SLOW_POLICY_RATE = 100             # exact policy: GCRA 100 per 60 s, burst 40, 4 keys
SLOW_POLICY_PERIOD_MS = 60000
SLOW_POLICY_BURST = 40
SLOW_KEYS = 4

# --- sick-node ---------------------------------------------------------------------------------------
SICK_QUORUM = 2                    # breaker sharing quorum(2): one sick node must not open the others
SICK_OBSERVE_MS = 4000             # after node-1 trips, nodes 2 and 3 are watched this long (every 20 ms)

# --- clock-skew --------------------------------------------------------------------------------------
SKEW_FAKETIME = "+2h"              # phase 1: node-1's wall clock runs this far ahead (libfaketime; monotonic untouched)
SKEW_RATE_FAKETIME = "+0 x10"      # phase 2: node-1's wall clock runs 10× fast
SKEW_RATE_SAMPLE_MS = 2000         # node-1's clock rate is read from its Date header over this long
SKEW_OPEN_WAIT_MS = 1500           # openWaitMs of the breaker node-1 trips
SKEW_OPEN_SLACK_MS = 1500          # every node lets a probe through within openWaitMs + this of the trip
SKEW_EARLY_SLACK_MS = 100          # … and none before openWaitMs − this (the trip is stamped when its 503 is seen)
SKEW_PROPAGATION_GOAL_MS = 1000    # node-1's trip seen open on every node within this
SKEW_POLICY_RATE = 100             # exact policy: GCRA 100 per 60 s, burst 40, 4 keys (traffic through all nodes)
SKEW_POLICY_PERIOD_MS = 60000
SKEW_POLICY_BURST = 40
SKEW_KEYS = 4

# --- pg-freeze ---------------------------------------------------------------------------------------
FREEZE_MS = 5000                   # the primary's process tree frozen this long
FREEZE_PG_DEADLINE_MS = 500        # postgres.deadlineMs configured for the run
FREEZE_LATENCY_SLACK_MS = 150      # no audit append waits longer than FREEZE_PG_DEADLINE_MS + this

# --- common ------------------------------------------------------------------------------------------
BACKGROUND_LOAD_RATE = 150         # req/s of the mixed background load of scenarios that have one
MEMBERS_RETURN_TIMEOUT_MS = 15000  # a restarted node is seen by every node within this (setup waits)


def _load_overrides():
    import os
    applied = {}
    for key, text in os.environ.items():
        if not key.startswith("CHAOS_THRESHOLD_"):
            continue
        name = key[len("CHAOS_THRESHOLD_"):]
        if name not in globals() or name.startswith("_") or not name.isupper():
            raise SystemExit(f"chaos/run: {key}: no threshold named {name} in chaos/thresholds.py")
        current = globals()[name]
        try:
            value = type(current)(text)
        except ValueError:
            raise SystemExit(f"chaos/run: {key}={text!r} is not a {type(current).__name__}")
        globals()[name] = value
        applied[name] = value
    return applied


OVERRIDES = _load_overrides()


def snapshot():
    """Every constant, for the report."""
    return {k: v for k, v in globals().items() if k.isupper() and k != "OVERRIDES" and isinstance(v, (int, float))}
