"""The chaos scenarios. Each one runs on a fresh cluster (made and removed by chaos/run), drives load,
injects its fault, measures, and records its checks with run.check(); thresholds come from
thresholds.py only. A scenario raises ScenarioError when it cannot get to judging (→ FAIL) and
ScenarioSkip when the machine forbids its mechanism (→ SKIP).
"""

import base64
import email.utils
import hashlib
import hmac
import json
import os
import random
import shutil
import threading
import time
import uuid

import thresholds as T
from chaoslib import (
    Http, Load, Poller, RedisPinger, ScenarioError, ScenarioSkip, describe_unexpected, fmt_ms, fmt_s, metric_by, metric_sum,
    now_ms, percentile, redis_capture, resp_command, run_command, sleep_ms,
)

SCENARIOS = {}


def scenario(name, summary, node_config=None, proxy=False):
    """Registers a scenario. node_config(run) → dict merged into every node's config (or None);
    proxy: start the cluster with `cluster/up --proxy` (the fault proxy between nodes and servers)."""
    def register(function):
        SCENARIOS[name] = {"name": name, "summary": summary, "body": function, "node_config": node_config, "proxy": proxy}
        return function
    return register


# --- shared helpers ------------------------------------------------------------------------------

OPEN_POLICY = {"algorithm": "gcra", "limits": [{"rate": 1000000, "periodMs": 1000, "burst": 1000000}]}


def put_policy(cluster, name, policy):
    cluster.require(1, "PUT", f"/v1/limits/{name}", policy, admin=True)

    def everywhere():
        for i in range(1, cluster.nodes + 1):
            reply = cluster.call(i, "GET", "/v1/limits")
            if reply.status != 200 or name not in [p.get("name") for p in reply.json.get("policies", [])]:
                return False
        return True
    if not cluster.wait_until(everywhere, 10000, 100):
        raise ScenarioError(f"policy {name} did not reach every node within 10 s")


def put_breaker(cluster, name, config):
    cluster.require(1, "PUT", f"/v1/breakers/{name}/config", config, admin=True)

    def everywhere():
        for i in range(1, cluster.nodes + 1):
            reply = cluster.call(i, "GET", f"/v1/breakers/{name}")
            if reply.status != 200:
                return False
            got = reply.json.get("config", {})
            if any(got.get(k) != v for k, v in config.items() if k != "window"):
                return False
        return True
    if not cluster.wait_until(everywhere, 10000, 100):
        raise ScenarioError(f"breaker {name}'s configuration did not reach every node within 10 s")


def start_loads(*loads):
    for load in loads:
        load.start()
    for load in loads:
        load.wait_started()


def finish_loads(*loads):
    for load in loads:
        load.finish()


def stamp_of(stamps, needle):
    for at, text in stamps:
        if needle in text:
            return at
    raise ScenarioError(f"no fault output line containing {needle!r}: {[t for _, t in stamps]}")


def check_unexpected(run, loads, nodes=None, label="unexpected answers"):
    bad = [a for load in loads for a in load.unexpected(nodes)]
    total = sum(len(load.acks) for load in loads)
    run.numbers["requests"] = total
    return run.check("no-unexpected", not bad, f"{label} {len(bad)} of {total}", len(bad), 0,
                     describe_unexpected(bad))


def check_exact_limit(run, acks, burst, rate, period_ms, note="", key="exact-limit"):
    """Cluster-wide admissions per key ≤ burst + rate × run time / period (GCRA in exact mode)."""
    span_ms = max(a["atMs"] for a in acks) - min(a["atMs"] for a in acks) if acks else 0
    seconds = span_ms / 1000 + 1.0  # + 1 s: a decision precedes its acknowledgement
    allowance = burst + rate * seconds * 1000 / period_ms
    per_key = {}
    for ack in acks:
        if ack.get("allowed"):
            per_key[ack["subject"]] = per_key.get(ack["subject"], 0) + 1
    most = max(per_key.values()) if per_key else 0
    run.numbers.update({f"{key}:admittedPerKey": per_key, f"{key}:allowancePerKey": round(allowance, 1)}
                       if key != "exact-limit" else {"admittedPerKey": per_key, "allowancePerKey": round(allowance, 1)})
    run.check(key, bool(per_key) and most <= allowance,
              f"admitted per key max {most} (limit {allowance:.0f} = burst {burst} + {rate}/"
              f"{period_ms // 1000} s over {seconds:.0f} s{note})", most, round(allowance, 1))


def audit_exactly_once(run, cluster, acks, read_node=1, what="acknowledged audit events"):
    """Every acknowledged (200/201/202) audit id stored exactly once; returns the stored events."""
    acked = {a["subject"] for a in acks if a.get("op") == "audit" and a.get("status") in (200, 201, 202)}
    events = cluster.audit_log(read_node)
    counts = {}
    for event in events:
        counts[event["id"]] = counts.get(event["id"], 0) + 1
    missing = acked - set(counts)
    duplicated = {k: v for k, v in counts.items() if v > 1}
    run.numbers["auditAcknowledged"] = len(acked)
    run.numbers["auditStored"] = len(events)
    run.check("audit-stored", not missing, f"{what} lost {len(missing)} of {len(acked)}", len(missing), 0,
              f"e.g. {sorted(missing)[:3]}" if missing else None)
    run.check("audit-once", not duplicated, f"stored twice {len(duplicated)}", len(duplicated), 0,
              f"e.g. {list(duplicated.items())[:3]}" if duplicated else None)
    return events


def most_advanced_standby(run, cluster):
    """The standby (1..R) that has received the most WAL, per pg_last_wal_receive_lsn()."""
    best, best_lsn = 1, -1
    for server in range(1, len(cluster.info["postgres"])):
        out = cluster.psql(server, "SELECT pg_wal_lsn_diff(coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), "
                                   "'0/0')::bigint", db="postgres", check=False)
        lsn = int(out) if out and out.isdigit() else -1
        run.event(f"pg-{server} received WAL up to byte {lsn}")
        if lsn > best_lsn:
            best, best_lsn = server, lsn
    return best


def wait_spools(run, cluster):
    started = now_ms()
    ok = cluster.wait_until(lambda: cluster.spools_empty(), T.SPOOL_DRAIN_TIMEOUT_MS, 200)
    waited = now_ms() - started
    run.numbers["spoolDrainWaitMs"] = round(waited)
    run.check("spools-drained", bool(ok), f"spools empty after {fmt_s(waited)}" if ok else
              f"spools not empty after {fmt_s(waited)}", round(waited), T.SPOOL_DRAIN_TIMEOUT_MS)
    return ok


# --- 1. breaker-storm ----------------------------------------------------------------------------

STORM_BREAKER = "chaos-storm"
NOT_CLOSED = ("open", "half_open", "forced_open")


@scenario("breaker-storm",
          "the upstream behind node-1 fails: every node's breaker opens (sharing any) within the propagation goal; "
          "exactly halfOpenPermittedCalls probes run cluster-wide in half-open; after the upstream heals every node closes")
def breaker_storm(run, cluster):
    local_everywhere = run.broken("breaker-local-all")
    sharing = "local" if (run.broken("breaker-sharing") or local_everywhere) else "any"
    config = {"window": {"type": "count", "size": 20}, "minimumCalls": 10, "failureRateThreshold": 50,
              "openWaitMs": T.STORM_OPEN_WAIT_MS, "halfOpenPermittedCalls": T.STORM_HALF_OPEN_PROBES,
              "permitTimeoutMs": 5000, "sharing": sharing}
    if T.STORM_OPEN_TIMEOUT_MS >= T.STORM_OPEN_WAIT_MS:
        raise ScenarioError("thresholds: STORM_OPEN_TIMEOUT_MS must be below STORM_OPEN_WAIT_MS (one half-open round per cycle)")
    put_breaker(cluster, STORM_BREAKER, config)
    put_policy(cluster, "chaos-open", OPEN_POLICY)
    run.event(f"breaker {STORM_BREAKER}: sharing {sharing}, halfOpenPermittedCalls {T.STORM_HALF_OPEN_PROBES}")

    failure_file = run.artifact("failure-rate")
    failure_file.write_text("0\n")
    cycle_s = (T.STORM_HEALTHY_BEFORE_MS + T.STORM_OPEN_WAIT_MS + 1200) / 1000  # typical: trip ~0.3 s, close ~0.1 s
    duration = round(T.STORM_CYCLES * cycle_s + 2.5, 1)
    common = ["--breaker", STORM_BREAKER, "--policy", "chaos-open", "--keep-config", "--upstream-latency-ms", "2",
              "--tokens", "2"]
    # The sick upstream is seen through node-1 only; nodes 2 and 3 see a healthy one, so they open only
    # if node-1's trip is shared. (CHAOS_BREAK=breaker-local-all: every node sees the sick upstream.)
    sick_nodes = [1, 2, 3] if local_everywhere else [1]
    loads = [Load(run, cluster, "sick", sick_nodes, duration, T.STORM_LOAD_RATE, 4, "breakers=70,admit=30",
                  common, failure_file=failure_file)]
    if not local_everywhere:
        loads.append(Load(run, cluster, "healthy", [2, 3], duration, T.STORM_LOAD_RATE, 4, "breakers=70,admit=30", common))
    pollers = [Poller(cluster.url(i), f"/v1/breakers/{STORM_BREAKER}", T.STORM_POLL_INTERVAL_MS, label=f"node-{i}")
               for i in range(1, cluster.nodes + 1)]
    start_loads(*loads)
    for poller in pollers:
        poller.start()

    def latest(poller):
        for t, status, body in reversed(poller.samples):
            if status == 200 and body:
                return t, body.get("state")
        return None, None

    cycles = []
    deadline = loads[0].started_ms + duration * 1000 - 500
    try:
        for c in range(1, T.STORM_CYCLES + 1):
            sleep_ms(T.STORM_HEALTHY_BEFORE_MS)
            states = [latest(p)[1] for p in pollers]
            t_fail = now_ms()
            failure_file.write_text("1\n")
            run.event(f"cycle {c}: upstream behind node(s) {sick_nodes} fails (rate 1); states before: {states}")
            opened = cluster.wait_until(
                lambda: all(any(t >= t_fail and s == 200 and b and b.get("state") in NOT_CLOSED for t, s, b in p.samples)
                            for p in pollers), T.STORM_OPEN_TIMEOUT_MS, 10)
            t_heal = now_ms()
            failure_file.write_text("0\n")
            run.event(f"cycle {c}: " + ("every node open" if opened else "NOT every node open") + "; upstream heals (rate 0)")
            closed = cluster.wait_until(
                lambda: all(latest(p)[0] and latest(p)[0] > t_heal and latest(p)[1] == "closed" for p in pollers),
                T.STORM_OPEN_WAIT_MS + T.STORM_CLOSE_SLACK_MS + 3000, 10)
            t_closed = now_ms()
            run.event(f"cycle {c}: " + ("every node closed" if closed else "NOT every node closed"))
            cycles.append({"fail": t_fail, "heal": t_heal, "closedSeen": t_closed})
            if c < T.STORM_CYCLES and now_ms() + cycle_s * 1000 > deadline:
                run.event(f"stopping after {c} cycles: the load ends soon")
                break
    finally:
        for poller in pollers:
            poller.stop()
    finish_loads(*loads)
    acks = [a for load in loads for a in load.acks]

    delays, precise, reasons, probes, closes, never = [], [], [], [], [], []
    for index, cycle in enumerate(cycles):
        end = cycles[index + 1]["fail"] if index + 1 < len(cycles) else float("inf")
        first_open, transition_at, close_at = {}, {}, {}
        for i, poller in enumerate(pollers, start=1):
            for t, status, body in poller.samples:
                if t < cycle["fail"] or t >= end or status != 200 or not body:
                    continue
                state = body.get("state")
                if i not in first_open and state in NOT_CLOSED:
                    first_open[i] = t
                    last = body.get("lastTransition") or {}
                    if last.get("to") == "open" and last.get("atMs", 0) >= cycle["fail"] - 50:
                        transition_at[i] = last["atMs"]
                        reasons.append(f"node-{i}:{last.get('reason')}")
                elif i in first_open and i not in close_at and state == "closed" and t > cycle["heal"]:
                    close_at[i] = t
        if not first_open:
            never.append(f"cycle {index + 1}: no node opened")
            continue
        first = min(first_open.values())
        for i in range(1, cluster.nodes + 1):
            if i in first_open:
                delays.append(first_open[i] - first)
            else:
                never.append(f"cycle {index + 1}: node-{i} never open")
        if transition_at:
            earliest = min(transition_at.values())
            precise += [v - earliest for v in transition_at.values()]
        if all(i in close_at for i in first_open):  # every node that opened closed again
            closes.append(max(close_at[i] for i in first_open) - cycle["heal"])
        else:
            closes.append(None)
        probes.append(sum(1 for a in acks if a.get("op") in ("breakers", "admit") and a.get("allowed")
                          and a.get("breakerState") == "half_open" and cycle["fail"] <= a.get("atMs", 0) < end))

    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    opened_everywhere = not never
    run.numbers.update({"cycles": len(cycles), "propagationDelaysMs": [round(d) for d in delays],
                        "transitionDelaysMs": [round(d) for d in precise], "openReasons": reasons,
                        "probesPerCycle": probes, "closedAfterHealMs": [None if c is None else round(c) for c in closes],
                        "sharing": sharing})
    ok = bool(delays) and not never and p99 is not None and p99 <= T.STORM_PROPAGATION_GOAL_MS
    missed = {}
    for text in never:
        who = text.split(": ", 1)[1].replace(" never open", "")
        missed[who] = missed.get(who, 0) + 1
    where = "on all nodes" if opened_everywhere else \
        f"on {len(delays)} of {len(cycles) * cluster.nodes} node×cycle (never: {', '.join(f'{k} ×{v}' for k, v in missed.items())})"
    run.check("propagation", ok,
              f"open {where} p50 {fmt_ms(p50)} p99 {fmt_ms(p99)} (goal {T.STORM_PROPAGATION_GOAL_MS} ms"
              + (f"; node transitions p99 {fmt_ms(percentile(precise, 99))}" if precise else "") + ")",
              None if p99 is None else round(p99), T.STORM_PROPAGATION_GOAL_MS)
    run.check("half-open-probes", bool(probes) and all(p == T.STORM_HALF_OPEN_PROBES for p in probes),
              f"probes in half-open {','.join(map(str, probes)) or 'none'} (configured {T.STORM_HALF_OPEN_PROBES})",
              probes, T.STORM_HALF_OPEN_PROBES)
    goal = T.STORM_OPEN_WAIT_MS + T.STORM_CLOSE_SLACK_MS
    worst = None if (not closes or None in closes) else max(closes)
    run.check("closed-after-heal", worst is not None and worst <= goal,
              f"closed after heal {fmt_s(worst) if worst is not None else 'never (some node stayed open)'} (goal {fmt_s(goal)})",
              None if worst is None else round(worst), goal)
    check_unexpected(run, loads)


# --- 2. redis-down -------------------------------------------------------------------------------

def _redis_down_config(run):
    # Deliberate break: nodes allow everything while Redis is lost instead of enforcing their share.
    return {"onSharedStateLoss": "allow"} if run.broken("redis-allow") else None


@scenario("redis-down",
          "Redis stopped 10 s under load: limits switch to the local share within one deadline; admitted ≤ 1.1 × the "
          "limit while it is down; no failed requests; shared mode and breaker agreement back ≤ 3 s after restart",
          node_config=_redis_down_config)
def redis_down(run, cluster):
    policy = {"algorithm": "gcra", "limits": [{"rate": T.REDIS_DOWN_POLICY_RATE, "periodMs": T.REDIS_DOWN_POLICY_PERIOD_MS,
                                               "burst": T.REDIS_DOWN_POLICY_BURST}]}
    put_policy(cluster, "chaos-rl", policy)
    agree = "chaos-agree"
    put_breaker(cluster, agree, {"window": {"type": "count", "size": 10}, "minimumCalls": 5, "failureRateThreshold": 50,
                                 "openWaitMs": T.REDIS_DOWN_AGREE_OPEN_WAIT_MS, "halfOpenPermittedCalls": 1,
                                 "permitTimeoutMs": 60000, "sharing": "any"})
    duration = round((2000 + T.REDIS_DOWN_OUTAGE_MS + 1500 + T.REDIS_DOWN_RECOVERY_GOAL_MS + 2000) / 1000, 1)
    background = Load(run, cluster, "mixed", None, duration, T.BACKGROUND_LOAD_RATE, 8)
    probe = Load(run, cluster, "limit", None, duration, T.REDIS_DOWN_PROBE_RATE, 6, "limits=1",
                 ["--policy", "chaos-rl", "--keys", "1", "--keep-config", "--tokens", "1"])
    views = [Poller(cluster.url(i), "/v1/cluster", 50, headers=cluster.auth, label=f"node-{i}") for i in range(1, cluster.nodes + 1)]
    breakers = [Poller(cluster.url(i), f"/v1/breakers/{agree}", 50, label=f"node-{i}") for i in range(1, cluster.nodes + 1)]
    start_loads(background, probe)
    for poller in views + breakers:
        poller.start()
    try:
        sleep_ms(2000)
        pinger = RedisPinger(cluster.redis_port)
        pinger.start()
        sleep_ms(100)
        stopped = cluster.fault("stop-redis")
        t_stop = stamp_of(stopped, "SIGTERM")
        pinger.join(5)
        # Redis saves its append-only file before closing its sockets: the switch is judged from the
        # moment it stopped answering, which is when the nodes can notice.
        t_gone = pinger.gone_ms or stamp_of(stopped, "exited after")
        run.event(f"redis stopped answering {t_gone - t_stop:.0f} ms after SIGTERM (last PONG {((pinger.last_ok_ms or t_gone) - t_stop):.0f} ms)")
        # While Redis is down, node-1's breaker trips on its own (breakers are local meanwhile): the
        # nodes disagree until shared state is back.
        client = Http(cluster.url(1))
        tripped = None
        for _ in range(8):
            reply = client.call("POST", f"/v1/breakers/{agree}/acquire")
            if reply.status == 200:
                client.call("POST", f"/v1/breakers/{agree}/record",
                            {"permit": reply.json["permit"], "outcome": "failure", "durationMs": 1})
        reply = client.call("GET", f"/v1/breakers/{agree}")
        tripped = reply.json.get("state") if reply.status == 200 else None
        client.close()
        run.event(f"node-1's {agree} during the outage: {tripped} (nodes 2, 3: closed)")
        sleep_ms(t_stop + T.REDIS_DOWN_OUTAGE_MS - now_ms())
        started = cluster.fault("start-redis")
        t_ready = stamp_of(started, "ready after")

        def recovered():
            shared = all(p.samples and p.samples[-1][0] > t_ready and p.samples[-1][1] == 200
                         and not (p.samples[-1][2] or {}).get("degraded") for p in views)
            return shared
        t_shared = cluster.wait_until(recovered, T.REDIS_DOWN_RECOVERY_GOAL_MS + 5000, 20) and now_ms()

        def agreeing():
            states = [p.samples[-1][2].get("state") if p.samples and p.samples[-1][1] == 200 and p.samples[-1][0] > t_ready
                      else None for p in breakers]
            return None not in states and len(set(states)) == 1 and states[0]
        agreed_state = cluster.wait_until(agreeing, T.REDIS_DOWN_RECOVERY_GOAL_MS + 5000, 20)
        t_agree = now_ms() if agreed_state else None
        states_at_end = {f"node-{i}": (p.samples[-1][2] or {}).get("state") if p.samples else None
                         for i, p in enumerate(breakers, start=1)}
        run.event(f"{agree} states {now_ms() - t_ready:.0f} ms after Redis is back: {states_at_end}")
        run.numbers["agreeBreakerStatesAtEnd"] = states_at_end
    finally:
        for poller in views + breakers:
            poller.stop()
    finish_loads(background, probe)

    # Switch: each node's degraded.sinceMs against the moment Redis stopped answering.
    switch, modes, missing = {}, set(), []
    for i, poller in enumerate(views, start=1):
        for t, status, body in poller.samples:
            if t >= t_stop and status == 200 and body and body.get("degraded"):
                limits = [d for d in body["degraded"] if d.get("feature") == "limits"]
                if limits:
                    switch[i] = limits[0]["sinceMs"] - t_gone
                    modes.add(f"{limits[0].get('mode')}/{limits[0].get('shareDivisor')}")
                    break
        else:
            missing.append(f"node-{i}")
    goal = T.REDIS_DEADLINE_MS + T.REDIS_DOWN_SWITCH_SLACK_MS
    worst = max(switch.values()) if switch else None
    expected_mode = f"localShare/{cluster.nodes}"
    run.numbers.update({"switchMsByNode": {f"node-{k}": round(v) for k, v in switch.items()}, "degradedModes": sorted(modes),
                        "redisGoneAfterSigtermMs": round(t_gone - t_stop)})
    run.check("switch", not missing and worst is not None and worst <= goal and modes == {expected_mode},
              f"local share on all nodes {fmt_ms(worst)} after Redis went away (goal {goal} ms = deadline "
              f"{T.REDIS_DEADLINE_MS} + {T.REDIS_DOWN_SWITCH_SLACK_MS}; mode {','.join(sorted(modes)) or 'none'})",
              None if worst is None else round(worst), goal,
              (f"never degraded: {missing}; " if missing else "") + f"modes {sorted(modes)} (want {expected_mode})")

    # Admitted on the probed key while Redis was down.
    window_ms = t_ready - t_stop
    admitted = sum(1 for a in probe.acks if a.get("op") == "limits" and a.get("allowed") and t_stop <= a.get("atMs", 0) <= t_ready)
    offered = sum(1 for a in probe.acks if a.get("op") == "limits" and t_stop <= a.get("atMs", 0) <= t_ready)
    allowance = T.REDIS_DOWN_POLICY_BURST + T.REDIS_DOWN_POLICY_RATE * window_ms / T.REDIS_DOWN_POLICY_PERIOD_MS
    bound = T.REDIS_DOWN_ADMIT_FACTOR * allowance
    run.numbers.update({"outageMs": round(window_ms), "admittedDuringOutage": admitted, "offeredDuringOutage": offered,
                        "policyAllowanceDuringOutage": round(allowance, 1)})
    run.check("admitted", admitted <= bound and offered > 2 * allowance,
              f"admitted while down {admitted} of {offered} (limit {allowance:.0f} in {fmt_s(window_ms)}, "
              f"≤ {T.REDIS_DOWN_ADMIT_FACTOR:g}× = {bound:.0f})", admitted, round(bound, 1),
              None if offered > 2 * allowance else "the key was not saturated: offered too little to judge")
    check_unexpected(run, [background, probe], label="failed requests")
    recovery = None if not t_shared else t_shared - t_ready
    agreement = None if not t_agree else t_agree - t_ready
    run.numbers.update({"sharedBackMs": None if recovery is None else round(recovery),
                        "breakersAgreeMs": None if agreement is None else round(agreement),
                        "node1BreakerDuringOutage": tripped, "agreedState": agreed_state or None})
    goal = T.REDIS_DOWN_RECOVERY_GOAL_MS
    run.check("shared-back", recovery is not None and recovery <= goal,
              f"shared mode back after {fmt_s(recovery) if recovery is not None else 'never'} (goal {fmt_s(goal)})",
              None if recovery is None else round(recovery), goal)
    run.check("breakers-agree", agreement is not None and agreement <= goal,
              f"breakers agree ({agreed_state or '?'}) after {fmt_s(agreement) if agreement is not None else 'never'}"
              f" (node-1 was {tripped} alone)", None if agreement is None else round(agreement), goal)


# --- 3. pg-failover ------------------------------------------------------------------------------

@scenario("pg-failover",
          "kill -9 of the PostgreSQL primary under audit load, then promote the standby with the most WAL: writes succeed ≤ 2 s after the "
          "promotion; every acknowledged audit event is in the new primary exactly once")
def pg_failover(run, cluster):
    duration = 14.0
    load = Load(run, cluster, "audit", None, duration, T.FAILOVER_LOAD_RATE, 16,
                "audit=60,limits=10,tokens=10,admit=10,breakers=10")
    views = [Poller(cluster.url(i), "/v1/cluster", 50, headers=cluster.auth, label=f"node-{i}") for i in range(1, cluster.nodes + 1)]
    start_loads(load)
    for poller in views:
        poller.start()
    sleep_ms(2000)
    if run.broken("pg-promote-stale"):
        # Deliberate break: pg-1 stops receiving WAL, so commits are acknowledged by pg-2 alone; promoting
        # pg-1 then loses them (cluster/fault promote warns about exactly this).
        cluster.psql(1, "ALTER SYSTEM SET primary_conninfo = ''", db="postgres")
        cluster.psql(1, "SELECT pg_reload_conf()", db="postgres")
        run.event("CHAOS_BREAK=pg-promote-stale: pg-1 no longer receives WAL")
        sleep_ms(1500)
    killed = cluster.fault("kill-primary")
    t_kill = stamp_of(killed, "SIGKILL")
    sleep_ms(t_kill + T.FAILOVER_KILL_TO_PROMOTE_MS - now_ms())
    # A careful operator promotes the standby that received the most WAL (with ANY 1 synchronous
    # replication only one may have acknowledged the last commits); the break promotes pg-1 regardless.
    target = 1 if run.broken("pg-promote-stale") else most_advanced_standby(run, cluster)
    try:
        promoted = cluster.fault("promote", target)
        t_promoted = stamp_of(promoted, "done after")
        finish_loads(load)
    finally:
        for poller in views:
            poller.stop()
    new_primary = cluster.info["postgres"][target]["host"]
    routed, depth = [], 0
    for poller in views:
        seen = [t for t, st, b in poller.samples if t >= t_kill and st == 200 and b and (b.get("postgres") or {}).get("primary") == new_primary]
        routed.append(min(seen) - t_promoted if seen else None)
        for t, st, b in poller.samples:
            for backend in (b or {}).get("backends", []) if st == 200 else []:
                if backend.get("role") == "sharedAuditSpool":
                    digits = "".join(ch for ch in backend.get("detail", "").split(" ")[0] if ch.isdigit())
                    depth = max(depth, int(digits or 0))
    run.numbers.update({"routerOnNewPrimaryMsByNode": [None if r is None else round(r) for r in routed], "maxSharedSpoolDepth": depth})

    audits = sorted((a for a in load.acks if a.get("op") == "audit"), key=lambda a: a.get("atMs", 0))
    first = next((a for a in audits if a.get("status") == 201 and a.get("atMs", 0) >= t_promoted), None)
    resumed = None if first is None else first["atMs"] - t_promoted
    buffered = sum(1 for a in audits if a.get("status") == 202)
    run.numbers.update({"killToPromoteMs": round(t_promoted - t_kill), "writesResumedMs": None if resumed is None else round(resumed),
                        "audit201": sum(1 for a in audits if a.get("status") == 201), "audit202": buffered})
    run.check("writes-resume", resumed is not None and resumed <= T.FAILOVER_WRITES_GOAL_MS,
              f"writes back {fmt_ms(resumed) if resumed is not None else 'never'} after promotion "
              f"(goal {T.FAILOVER_WRITES_GOAL_MS} ms; {buffered} appends buffered meanwhile)",
              None if resumed is None else round(resumed), T.FAILOVER_WRITES_GOAL_MS)
    if None not in routed:
        latest = max(routed)
        when = f"{latest:.0f} ms after pg_ctl promote returned" if latest >= 0 else "before pg_ctl promote returned"
        run.info("router", f"every node routes to pg-1 {when}; shared spool peaked at {depth} events")
    wait_spools(run, cluster)
    audit_exactly_once(run, cluster, load.acks, read_node=2)
    check_unexpected(run, [load], label="failed requests")


# --- 4. node-crash -------------------------------------------------------------------------------

def _node_crash_config(run):
    # Deliberate break: heartbeats every 5 s, so a dead node stays a member for 15 s.
    return {"heartbeatIntervalMs": 5000} if run.broken("crash-slow-heartbeat") else None


@scenario("node-crash",
          "kill -9 of node-1 under load: requests to the live nodes never fail; node-1 leaves their membership "
          "within 3 s; the cluster-wide admitted count per key stays within the (exact) limit",
          node_config=_node_crash_config)
def node_crash(run, cluster):
    policy = {"algorithm": "gcra", "limits": [{"rate": T.CRASH_POLICY_RATE, "periodMs": T.CRASH_POLICY_PERIOD_MS,
                                               "burst": T.CRASH_POLICY_BURST}]}
    put_policy(cluster, "chaos-exact", policy)
    duration = 12.0
    # `coordinator load` hangs for good once a node it targets dies (see the report), so the loads go
    # through the survivors; node-1's own traffic on the same keys comes from a small client here.
    background = Load(run, cluster, "mixed", [2, 3], duration, T.BACKGROUND_LOAD_RATE, 8)
    limit = Load(run, cluster, "limit", [2, 3], duration, 60, 6, "limits=1",
                 ["--policy", "chaos-exact", "--keys", str(T.CRASH_KEYS), "--keep-config", "--tokens", "1"])
    victim_acks = []
    halt = threading.Event()

    def victim_traffic():
        client = Http(cluster.url(1), timeout=2)
        n = 0
        while not halt.is_set():
            n += 1
            key = f"key-{n % T.CRASH_KEYS}"
            reply = client.call("POST", "/v1/limits/chaos-exact/check", {"key": key, "cost": 1}, retry=False)
            victim_acks.append({"op": "limits", "subject": key, "status": reply.status, "allowed": reply.status == 200, "atMs": now_ms()})
            halt.wait(0.05)
        client.close()

    views = [Poller(cluster.url(i), "/v1/cluster", 50, headers=cluster.auth, label=f"node-{i}") for i in (2, 3)]
    start_loads(background, limit)
    victim = threading.Thread(target=victim_traffic, daemon=True)
    victim.start()
    for poller in views:
        poller.start()
    try:
        sleep_ms(3000)
        t_kill = stamp_of(cluster.fault("kill-node", 1), "SIGKILL")
        cluster.wait_until(lambda: all(any(t > t_kill and s == 200 and "node-1" not in [m.get("nodeId") for m in b.get("members", [])]
                                           for t, s, b in p.samples) for p in views), T.CRASH_LEAVE_GOAL_MS + 5000, 50)
    finally:
        halt.set()
        victim.join(5)
        for poller in views:
            poller.stop()
    finish_loads(background, limit)

    check_unexpected(run, [background, limit], label="failed requests to live nodes")
    run.numbers["node1ChecksBeforeKill"] = sum(1 for a in victim_acks if a["status"] in (200, 429))
    leave = {}
    for node, poller in zip((2, 3), views):
        for t, status, body in poller.samples:
            if t > t_kill and status == 200 and "node-1" not in [m.get("nodeId") for m in body.get("members", [])]:
                leave[node] = t - t_kill
                break
    worst = max(leave.values()) if len(leave) == 2 else None
    run.numbers["leaveMsByNode"] = {f"node-{k}": round(v) for k, v in leave.items()}
    run.check("membership", worst is not None and worst <= T.CRASH_LEAVE_GOAL_MS,
              f"left membership after {fmt_s(worst) if worst is not None else 'never'} (goal {fmt_s(T.CRASH_LEAVE_GOAL_MS)})",
              None if worst is None else round(worst), T.CRASH_LEAVE_GOAL_MS)
    check_exact_limit(run, [a for a in limit.acks if a.get("op") == "limits"] + victim_acks, T.CRASH_POLICY_BURST, T.CRASH_POLICY_RATE, T.CRASH_POLICY_PERIOD_MS)


# --- 5. redis-hang -------------------------------------------------------------------------------

class LatencyProber(threading.Thread):
    """Sequential requests to one node (limits check, then admit), each timed."""

    def __init__(self, url, node, secret, policy):
        super().__init__(daemon=True)
        self.client = Http(url, timeout=5)
        self.node = node
        self.secret = secret
        self.policy = policy
        self.samples = []  # (start_ms, latency_ms, status, op)
        self.halt = threading.Event()

    def run(self):
        n = 0
        while not self.halt.is_set():
            n += 1
            if n % 2:
                op, path, body = "limits", f"/v1/limits/{self.policy}/check", {"key": f"hang-{self.node}-{n % 64}"}
            else:
                op, path, body = "admit", "/v1/admit", {"token": self.secret, "cost": 1}
            started = now_ms()
            reply = self.client.call("POST", path, body, retry=False)
            self.samples.append((started, reply.elapsed_ms, reply.status, op))
            self.halt.wait(T.HANG_PROBE_INTERVAL_MS / 1000)
        self.client.close()


def _redis_hang_config(run):
    # Deliberate break: a Redis deadline longer than the hang (callers wait it out).
    return {"redisDeadlineMs": 10000} if run.broken("hang-no-deadline") else None


@scenario("redis-hang",
          "Redis frozen (SIGSTOP) 5 s under load: no request waits longer than the Redis deadline + 50 ms",
          node_config=_redis_hang_config)
def redis_hang(run, cluster):
    put_policy(cluster, "chaos-hang", OPEN_POLICY)
    token = cluster.require(1, "POST", "/v1/tokens", {"subject": "chaos-hang", "policy": "chaos-hang"}, admin=True, ok=(201,))
    secret = token.json["secret"]
    for i in range(1, cluster.nodes + 1):
        if not cluster.wait_until(lambda: cluster.call(i, "POST", "/v1/tokens/verify", {"token": secret}).status == 200, 10000, 100):
            raise ScenarioError(f"node-{i} does not accept the prober's token")
    duration = round((2000 + T.HANG_PAUSE_MS + 4000) / 1000 + 1, 1)
    background = Load(run, cluster, "mixed", None, duration, 100, 8)
    probers = [LatencyProber(cluster.url(i), i, secret, "chaos-hang") for i in range(1, cluster.nodes + 1)]
    views = [Poller(cluster.url(i), "/v1/cluster", 100, headers=cluster.auth) for i in range(1, cluster.nodes + 1)]
    start_loads(background)
    for thread in probers + views:
        thread.start()
    try:
        sleep_ms(2000)
        t_pause = stamp_of(cluster.fault("pause-redis"), "SIGSTOP")
        sleep_ms(t_pause + T.HANG_PAUSE_MS - now_ms())
        t_resume = stamp_of(cluster.fault("resume-redis"), "SIGCONT")
        sleep_ms(3000)
    finally:
        for thread in probers:
            thread.halt.set()
        for thread in probers:
            thread.join(10)
        for poller in views:
            poller.stop()
    finish_loads(background)

    samples = [s for p in probers for s in p.samples]
    before = [lat for start, lat, status, op in samples if start < t_pause - 100]
    during = [(start, lat, status, op) for start, lat, status, op in samples
              if t_pause - 100 <= start + lat and start <= t_resume + 2000]
    latencies = [lat for _, lat, _, _ in during]
    worst = max(latencies) if latencies else None
    goal = T.REDIS_DEADLINE_MS + T.HANG_LATENCY_SLACK_MS
    slow = sorted((s for s in during if s[1] > goal), key=lambda s: -s[1])
    run.numbers.update({
        "requestsDuringHang": len(during), "latencyDuringHangMs": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": worst},
        "latencyBeforeHangMs": {"p50": percentile(before, 50), "p99": percentile(before, 99), "max": max(before) if before else None},
        "slowRequests": [{"startMs": round(s[0]), "latencyMs": round(s[1], 1), "op": s[3]} for s in slow[:10]],
    })
    run.check("latency", worst is not None and worst <= goal,
              f"slowest request while Redis hung {fmt_ms(worst)} of {len(during)} (goal {goal} ms = deadline "
              f"{T.REDIS_DEADLINE_MS} + {T.HANG_LATENCY_SLACK_MS}; p99 {fmt_ms(percentile(latencies, 99))}, "
              f"before the hang p99 {fmt_ms(percentile(before, 99))})", None if worst is None else round(worst, 1), goal,
              f"{len(slow)} over the goal, e.g. " + ", ".join(f"{s[3]} {s[1]:.0f} ms at +{s[0] - t_pause:.0f} ms" for s in slow[:4]) if slow else None)
    errors = [s for s in during if s[2] not in (200, 429)]
    run.check("prober-errors", not errors, f"prober errors {len(errors)}", len(errors), 0,
              ", ".join(f"{s[3]} {s[2]}" for s in errors[:5]) or None)
    degraded = [any(t_pause <= t <= t_resume and s == 200 and b and b.get("degraded") for t, s, b in p.samples) for p in views]
    run.check("degraded", all(degraded), f"degraded during the hang on {sum(degraded)}/{len(degraded)} nodes",
              sum(degraded), len(degraded))
    check_unexpected(run, [background], label="failed requests")


# --- 6. replica-lag ------------------------------------------------------------------------------

def _replica_lag_config(run):
    # Deliberate break: the paused replica stays eligible for list reads, and reads drop the LSN.
    return {"postgres": {"maxLagMs": 600000, "maxLagBytes": 1 << 40}} if run.broken("replica-lag-no-lsn") else None


@scenario("replica-lag",
          "replay paused on pg-1 for 6 s: read-your-writes reads (write via node-1, read via node-2 with "
          "Coordinator-LSN) are never stale; pg-1 serves reads again after resume",
          node_config=_replica_lag_config)
def replica_lag(run, cluster):
    if not shutil.which(os.path.join(os.environ.get("CLUSTER_PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")):
        raise ScenarioSkip("psql not found (needed to read pg-1's scan counters)")
    no_lsn = run.broken("replica-lag-no-lsn")
    scans_sql = ("SELECT coalesce(sum(coalesce(seq_scan,0) + coalesce(idx_scan,0)), 0) FROM pg_stat_user_tables "
                 "WHERE relname LIKE 'audit%'")

    def scans():
        value = cluster.psql(1, scans_sql, check=False)
        return int(value) if value and value.isdigit() else None

    duration = round((3000 + T.LAG_PAUSE_MS + 4000) / 1000, 1)  # the reuse wait may outlast it
    background = Load(run, cluster, "mixed", None, duration, 100, 8, "audit=40,limits=20,tokens=20,admit=10,breakers=10")
    phase = {"name": "before"}
    results = []  # (t, phase, stale, lsn)
    halt = threading.Event()

    def ryw():
        writer, reader = Http(cluster.url(1)), Http(cluster.url(2))
        n = 0
        while not halt.is_set():
            n += 1
            event_id = f"ryw-{uuid.uuid4()}"
            reply = writer.call("POST", "/v1/audit", {"id": event_id, "actor": "chaos", "action": "ryw", "resource": "r", "outcome": "ok"})
            lsn = reply.headers.get("coordinator-lsn")
            if reply.status != 201 or not lsn or "seq" not in (reply.json or {}):
                results.append((now_ms(), phase["name"], None, lsn))
                continue
            if n % 5 == 0:
                time.sleep(0.06)  # let a replica catch up, so replicas serve some of these reads
            headers = dict(cluster.auth)
            if not no_lsn:
                headers["Coordinator-LSN"] = lsn
            read = reader.call("GET", f"/v1/audit?after={reply.json['seq'] - 1}&limit=1", headers=headers)
            events = (read.json or {}).get("events", []) if read.status == 200 else None
            stale = None if events is None else not (events and events[0].get("id") == event_id)
            results.append((now_ms(), phase["name"], stale, lsn))
        writer.close()
        reader.close()

    def lister():
        client = Http(cluster.url(3))
        while not halt.is_set():
            client.call("GET", "/v1/audit?after=0&limit=5", headers=cluster.auth)
            halt.wait(0.02)
        client.close()

    threads = [threading.Thread(target=ryw, daemon=True), threading.Thread(target=lister, daemon=True)]
    view = Poller(cluster.url(2), "/v1/cluster", 200, headers=cluster.auth)
    start_loads(background)
    for thread in threads:
        thread.start()
    view.start()
    counters = {}
    try:
        counters["start"] = scans()
        sleep_ms(3000)
        counters["beforePause"] = scans()
        phase["name"] = "paused"
        t_pause = stamp_of(cluster.fault("pause-replay", 1), "pause-replay")
        sleep_ms(1500)
        counters["paused+1.5s"] = scans()
        sleep_ms(t_pause + T.LAG_PAUSE_MS - now_ms())
        counters["beforeResume"] = scans()
        t_resume = stamp_of(cluster.fault("resume-replay", 1), "resume-replay")
        phase["name"] = "after"
        base = scans()
        counters["atResume"] = base
        reused = cluster.wait_until(lambda: (scans() or 0) > (base or 0) + 5, T.LAG_REUSE_TIMEOUT_MS, 250)
        reuse_ms = now_ms() - t_resume if reused else None
        counters["reused"] = scans()
        sleep_ms(1000)
    finally:
        halt.set()
        for thread in threads:
            thread.join(10)
        view.stop()
    finish_loads(background)

    by_phase = {}
    for _, name, stale, _ in results:
        entry = by_phase.setdefault(name, {"reads": 0, "stale": 0, "unjudged": 0})
        if stale is None:
            entry["unjudged"] += 1
        else:
            entry["reads"] += 1
            entry["stale"] += int(stale)
    stale_total = sum(e["stale"] for e in by_phase.values())
    reads_total = sum(e["reads"] for e in by_phase.values())
    paused_seen = any(s == 200 and b and any(h.get("replayPaused") for h in b.get("postgres", {}).get("hosts", []))
                      for _, s, b in view.samples)
    run.numbers.update({"readsByPhase": by_phase, "pg1ScanCounters": counters, "replayPausedSeenByNode2": paused_seen,
                        "replicaReusedAfterMs": None if reuse_ms is None else round(reuse_ms)})
    paused = by_phase.get("paused", {})
    run.check("read-your-writes", stale_total <= T.LAG_STALE_ALLOWED and paused.get("reads", 0) > 0,
              f"stale reads {stale_total} of {reads_total} ({paused.get('reads', 0)} while pg-1 paused)",
              stale_total, T.LAG_STALE_ALLOWED)
    run.check("fault-took", paused_seen, f"pg-1 seen paused by node-2: {'yes' if paused_seen else 'no'}")
    used_before = (counters.get("beforePause") or 0) > (counters.get("start") or 0)
    run.check("replica-reused", reuse_ms is not None and used_before,
              f"pg-1 serves reads again {fmt_s(reuse_ms) if reuse_ms is not None else 'never'} after resume "
              f"(scans {counters.get('start')}→{counters.get('beforePause')} before, "
              f"{counters.get('paused+1.5s')}→{counters.get('beforeResume')} paused, →{counters.get('reused')} after)",
              None if reuse_ms is None else round(reuse_ms), T.LAG_REUSE_TIMEOUT_MS)
    check_unexpected(run, [background], label="failed requests")


# --- 7. pg-down-spool ----------------------------------------------------------------------------

@scenario("pg-down-spool",
          "every PostgreSQL server stopped 10 s under audit load: appends keep being acknowledged (202 buffered); "
          "after the restart every event is stored exactly once, each node's in order")
def pg_down_spool(run, cluster):
    duration = round((2000 + T.PGDOWN_OUTAGE_MS + 8000) / 1000, 1)
    background = Load(run, cluster, "mixed", None, duration, T.BACKGROUND_LOAD_RATE, 8,
                      "audit=50,tokens=15,limits=15,admit=10,breakers=10")
    tag = uuid.uuid4().hex[:8]
    written = {i: [] for i in range(1, cluster.nodes + 1)}  # node → [(n, id, status, atMs)]
    halt = threading.Event()

    def writer(i):
        client = Http(cluster.url(i), timeout=10)
        n = 0
        while not halt.is_set():
            n += 1
            event_id = f"ord-{tag}-{i}-{n:06d}"
            reply = client.call("POST", "/v1/audit", {"id": event_id, "actor": "chaos", "action": "ordered",
                                                       "resource": f"node-{i}", "outcome": "ok", "detail": {"n": n}})
            written[i].append((n, event_id, reply.status, now_ms()))
            halt.wait(0.02)
        client.close()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(1, cluster.nodes + 1)]
    start_loads(background)
    for thread in threads:
        thread.start()
    try:
        sleep_ms(2000)
        t_stop = stamp_of(cluster.pgctl("stop-all"), "every server stopped")
        sleep_ms(t_stop + T.PGDOWN_OUTAGE_MS - now_ms())
        restarted = cluster.pgctl("start-all")
        t_start = stamp_of(restarted, "every server accepts connections")
        t_restart = stamp_of(restarted, "start-all: starting")
        sleep_ms(4000)
    finally:
        halt.set()
        for thread in threads:
            thread.join(15)
    finish_loads(background)

    own = [{"op": "audit", "subject": event_id, "status": status, "atMs": at, "class": "ok" if status in (200, 201, 202) else "unexpected"}
           for i in written for _, event_id, status, at in written[i]]
    audit_acks = [a for a in background.acks if a.get("op") == "audit"] + own
    # Down from "every server stopped" until start-all begins (the primary accepts again some 150 ms
    # later, and a node whose spool has drained by then rightly answers 201 before the last replica is up).
    during = [a for a in audit_acks if t_stop <= a.get("atMs", 0) <= t_restart]
    refused = [a for a in audit_acks if a.get("status") not in (200, 201, 202)]
    buffered = sum(1 for a in during if a.get("status") == 202)
    run.numbers.update({"auditDuringOutage": len(during), "bufferedDuringOutage": buffered, "outageMs": round(t_restart - t_stop),
                        "restartToAllAcceptingMs": round(t_start - t_restart)})
    run.check("acknowledged", not refused and buffered > 0 and buffered == len(during),
              f"audit appends while PostgreSQL was down: {buffered} of {len(during)} buffered (202), {len(refused)} refused",
              len(refused), 0, describe_unexpected(refused) if refused else None)
    wait_spools(run, cluster)
    events = audit_exactly_once(run, cluster, audit_acks, read_node=1)
    seq_of = {e["id"]: e["seq"] for e in events}
    disorder = []
    for i, entries in written.items():
        seqs = [seq_of[event_id] for _, event_id, status, _ in entries if status in (200, 201, 202) and event_id in seq_of]
        for a, b in zip(seqs, seqs[1:]):
            if b <= a:
                disorder.append(f"node-{i}: seq {b} after {a}")
    ordered_total = sum(len(v) for v in written.values())
    run.check("order", not disorder, f"out of order {len(disorder)} (per node, {ordered_total} sequential appends)",
              len(disorder), 0, "; ".join(disorder[:5]) or None)
    # Other operations are not this scenario's guarantee (a token lookup that misses the caches needs
    # the database), but what failed is worth seeing.
    others = background.unexpected(ops=("admit", "limits", "breakers", "tokens"))
    run.numbers["otherFailures"] = [{"op": a.get("op"), "status": a.get("status"), "atMs": a.get("atMs"),
                                     "error": str(a.get("error", ""))[:300]} for a in others[:10]]
    if others:
        after_restart = sum(1 for a in others if a.get("atMs", 0) > t_restart)
        run.info("other-failures", f"non-audit requests failed {len(others)} ({after_restart} after the restart began): "
                 + describe_unexpected(others, 1))


# --- 8. rogue-bus --------------------------------------------------------------------------------

KIND_POLICY, KIND_BREAKER_CONFIG, KIND_TOKEN_REVOKED, KIND_MEMBER_LEFT = 5, 6, 7, 9


def bus_frame(cluster_name, node_id, incarnation, sequence, redis_ms, kind, payload, secret, version=1):
    c, n = cluster_name.encode(), node_id.encode()
    body = (bytes([0xC0, 0xB5, version, kind, len(c)]) + c + bytes([len(n)]) + n
            + incarnation.to_bytes(8, "big") + sequence.to_bytes(8, "big") + int(redis_ms).to_bytes(8, "big", signed=True)
            + len(payload).to_bytes(4, "big") + payload)
    return body + hmac.new(secret.encode(), body, hashlib.sha256).digest()


def named_json(name, document):
    raw = json.dumps(document).encode()
    return bytes([len(name)]) + name.encode() + len(raw).to_bytes(4, "big") + raw


def rogue_payloads(rng, name, genuine):
    """(kind, payload) pairs of messages that would change state if accepted."""
    pick = rng.randrange(4)
    if pick == 0:
        return KIND_POLICY, named_json(f"rogue-{rng.randrange(10**6)}", {"limits": [{"rate": 1, "periodMs": 1000}]})
    if pick == 1:
        return KIND_POLICY, named_json("chaos-genuine", {"limits": [{"rate": 1, "periodMs": 1000}]})
    if pick == 2:
        return KIND_BREAKER_CONFIG, named_json("chaos-genuine", {"minimumCalls": 1, "failureRateThreshold": 1})
    return KIND_MEMBER_LEFT, b""


def node_state(cluster, i):
    limits = cluster.call(i, "GET", "/v1/limits")
    breakers = cluster.call(i, "GET", "/v1/breakers")
    view = cluster.cluster_view(i)
    tokens = cluster.call(i, "GET", "/v1/tokens", admin=True)
    return {
        "policies": sorted(json.dumps(p, sort_keys=True) for p in (limits.json or {}).get("policies", [])),
        "breakers": sorted(json.dumps({"name": b.get("name"), "state": b.get("state"), "config": b.get("config")}, sort_keys=True)
                           for b in (breakers.json or {}).get("breakers", [])),
        "members": sorted(m.get("nodeId") for m in (view or {}).get("members", [])),
        "tokens": sorted(f"{t.get('id')}:{t.get('status')}" for t in (tokens.json or {}).get("tokens", [])),
    }


@scenario("rogue-bus",
          "10 000 malformed, forged, foreign-cluster and replayed messages published on the bus channel: no node "
          "crashes or changes state; every one is rejected and counted")
def rogue_bus(run, cluster):
    redis_cli = shutil.which("redis-cli")
    if not redis_cli:
        raise ScenarioSkip("redis-cli not found")
    channel = f"coord:{cluster.name}:bus"
    background = Load(run, cluster, "mixed", None, 14.0, 100, 8, "admit=30,limits=30,breakers=20,tokens=20")
    start_loads(background)
    # Genuine frames to replay: what the nodes publish, plus a configuration change made now.
    genuine = redis_capture(cluster.redis_port, channel, 2.5, during=lambda: (
        put_policy(cluster, "chaos-genuine", {"algorithm": "gcra", "limits": [{"rate": 50, "periodMs": 1000}]}),
        cluster.require(2, "PUT", "/v1/breakers/chaos-genuine/config", {"minimumCalls": 50, "sharing": "any"}, admin=True)))
    if not genuine:
        raise ScenarioError(f"captured no genuine message on {channel}")
    sleep_ms(500)
    pids = {i: cluster.node_pid(i) for i in range(1, cluster.nodes + 1)}
    before = {i: node_state(cluster, i) for i in range(1, cluster.nodes + 1)}
    metrics_before = {i: cluster.metrics(i) for i in range(1, cluster.nodes + 1)}

    rng = random.Random()
    quarter = T.ROGUE_MESSAGES // 4
    now = int(time.time() * 1000)
    messages, kinds = [], {"malformed": 0, "unsupported_version": 0, "forged": 0, "foreign": 0, "replayed": 0}
    for k in range(quarter):  # malformed
        variant = k % 8
        if variant == 0:
            messages.append(f"%%% not base64 {k} %%%".encode())
        elif variant == 1:
            messages.append(base64.b64encode(os.urandom(rng.randrange(1, 200))))
        elif variant == 2:
            frame = base64.b64decode(rng.choice(genuine))
            messages.append(base64.b64encode(frame[:rng.randrange(0, len(frame))]))
        elif variant == 3:
            messages.append(base64.b64encode(base64.b64decode(rng.choice(genuine)) + os.urandom(rng.randrange(1, 9))))
        elif variant == 4:
            messages.append(base64.b64encode(bus_frame(cluster.name, "node-2", 7, k + 1, now, 200, b"", cluster.secret)))
        elif variant == 5:
            frame = bytearray(bus_frame(cluster.name, "node-2", 7, k + 1, now, KIND_POLICY, b"x", cluster.secret))
            frame[4] = 0  # cluster name length 0
            messages.append(base64.b64encode(bytes(frame)))
        elif variant == 6:
            messages.append(b"")
        else:
            kind, payload = rogue_payloads(rng, cluster.name, genuine)
            messages.append(base64.b64encode(bus_frame(cluster.name, "node-2", 7, k + 1, now, kind, payload, cluster.secret, version=9)))
            kinds["unsupported_version"] += 1
            continue
        kinds["malformed"] += 1
    for k in range(quarter):  # forged: the right cluster, a wrong key
        kind, payload = rogue_payloads(rng, cluster.name, genuine)
        sender = rng.choice(["node-1", "node-2", "node-3", "intruder"])
        messages.append(base64.b64encode(bus_frame(cluster.name, sender, rng.getrandbits(63), k + 1, now, kind, payload,
                                                   "wrong-secret-" + os.urandom(8).hex())))
        kinds["forged"] += 1
    for k in range(quarter):  # another cluster's messages, even signed with this cluster's key
        kind, payload = rogue_payloads(rng, cluster.name, genuine)
        messages.append(base64.b64encode(bus_frame("rogue-" + cluster.name, "node-2", 11, k + 1, now, kind, payload,
                                                   cluster.secret if k % 2 else "other-cluster-secret-0123")))
        kinds["foreign"] += 1
    for k in range(T.ROGUE_MESSAGES - 3 * quarter):  # replays of genuine frames
        messages.append(genuine[k % len(genuine)])
        kinds["replayed"] += 1
    rng.shuffle(messages)
    if run.broken("rogue-insider"):
        # Deliberate break: one message signed with the real cluster secret (an insider): it is accepted.
        messages.append(base64.b64encode(bus_frame(cluster.name, "intruder", rng.getrandbits(63), 1, now + 1000, KIND_POLICY,
                                                   named_json("rogue-insider", {"limits": [{"rate": 1, "periodMs": 1000}]}),
                                                   cluster.secret)))
        run.event("CHAOS_BREAK=rogue-insider: one message signed with the cluster secret added")
    commands = b"".join(resp_command("PUBLISH", channel, m) for m in messages)
    t_publish = now_ms()
    rc, out, err = run_command([redis_cli, "-h", "127.0.0.1", "-p", str(cluster.redis_port), "--pipe"],
                               run.artifact("redis-cli.log"), timeout=60, input_bytes=commands)
    run.event(f"published {len(messages)} messages with redis-cli --pipe in {now_ms() - t_publish:.0f} ms: {out.strip()[-120:]}")
    if rc != 0 or "errors: 0" not in out:
        raise ScenarioError(f"redis-cli --pipe failed (exit {rc}): {(out + err).strip()[-300:]}")

    def counted():
        for i in range(1, cluster.nodes + 1):
            values = cluster.metrics(i)
            if values is None or metric_sum(values, "coordinator_bus_messages_rejected_total") - \
                    metric_sum(metrics_before[i], "coordinator_bus_messages_rejected_total") < T.ROGUE_MESSAGES:
                return False
        return True
    cluster.wait_until(counted, 10000, 250)
    sleep_ms(1000)
    finish_loads(background)

    alive = {i: (cluster.node_pid(i) == pids[i] and cluster.call(i, "GET", "/healthz").status == 200) for i in pids}
    run.check("no-crash", all(alive.values()), f"nodes alive {sum(alive.values())}/{len(alive)} (same pids)",
              sum(alive.values()), len(alive))
    after = {i: node_state(cluster, i) for i in range(1, cluster.nodes + 1)}
    changed = []
    for i in before:
        for key in before[i]:
            if before[i][key] != after[i][key]:
                added = sorted(set(after[i][key]) - set(before[i][key]))
                removed = sorted(set(before[i][key]) - set(after[i][key]))
                changed.append(f"node-{i} {key}: +{[a[:80] for a in added[:2]]} -{[r[:80] for r in removed[:2]]}")
    run.check("no-state-change", not changed, f"state changes {len(changed)}", len(changed), 0, "; ".join(changed[:4]) or None)
    deltas, reasons = {}, {}
    for i in range(1, cluster.nodes + 1):
        now_values = cluster.metrics(i)
        deltas[i] = round(metric_sum(now_values, "coordinator_bus_messages_rejected_total")
                          - metric_sum(metrics_before[i], "coordinator_bus_messages_rejected_total"))
        b, a = metric_by(metrics_before[i], "coordinator_bus_messages_rejected_total", "reason"), \
            metric_by(now_values, "coordinator_bus_messages_rejected_total", "reason")
        reasons[f"node-{i}"] = {k: round(a.get(k, 0) - b.get(k, 0)) for k in a if round(a.get(k, 0) - b.get(k, 0))}
    run.numbers.update({"sent": kinds, "rejectedByNode": {f"node-{k}": v for k, v in deltas.items()}, "rejectedByReason": reasons})
    least = min(deltas.values())
    run.check("rejections-counted", least >= T.ROGUE_MESSAGES,
              f"rejected and counted {least} of {T.ROGUE_MESSAGES} on every node ({reasons.get('node-1')})",
              least, T.ROGUE_MESSAGES)
    check_unexpected(run, [background], label="failed requests")


# --- 9. rolling-restart ----------------------------------------------------------------------------

@scenario("rolling-restart",
          "SIGTERM and restart each node in turn, with the load on the other nodes: zero failed requests")
def rolling_restart(run, cluster):
    loads, restarts = [], []
    for i in range(1, cluster.nodes + 1):
        others = [j for j in range(1, cluster.nodes + 1) if j != i]
        load = Load(run, cluster, f"while-node-{i}-restarts", others, 9.0, T.BACKGROUND_LOAD_RATE, 8)
        loads.append(load)
        start_loads(load)
        sleep_ms(1500)
        stopped = cluster.fault("stop-node", i)
        t_stop = stamp_of(stopped, "SIGTERM")
        started = cluster.fault("start-node", i)
        t_ready = stamp_of(started, "ready after")
        cluster.reload()

        def everyone_sees_all():
            for j in range(1, cluster.nodes + 1):
                view = cluster.cluster_view(j)
                if not view or len(view.get("members", [])) != cluster.nodes:
                    return False
            return True
        seen = cluster.wait_until(everyone_sees_all, T.MEMBERS_RETURN_TIMEOUT_MS, 100)
        restarts.append({"node": i, "downMs": round(t_ready - t_stop), "membersBackMs": round(now_ms() - t_ready) if seen else None})
        run.event(f"node-{i} restarted: down {t_ready - t_stop:.0f} ms, " + ("every node sees all members" if seen else "members NOT back"))
        load.finish()
    failed = [a for load in loads for a in load.unexpected()]
    total = sum(len(load.acks) for load in loads)
    run.numbers.update({"restarts": restarts, "requests": total})
    run.check("no-failed-requests", len(failed) <= T.ROLLING_FAILED_ALLOWED,
              f"failed requests {len(failed)} of {total} across {len(restarts)} restarts", len(failed), T.ROLLING_FAILED_ALLOWED,
              describe_unexpected(failed))
    back = [r for r in restarts if r["membersBackMs"] is not None]
    run.check("members-back", len(back) == len(restarts),
              f"restart (stop + start) max {fmt_s(max(r['downMs'] for r in restarts))}, all members back after each: "
              f"{'yes' if len(back) == len(restarts) else 'no'}")


# --- 12. slow-network ----------------------------------------------------------------------------

def _slow_network_config(run):
    # Deliberate breaks: a deadline that does not bound (the network is made slower than the goal),
    # or one every call misses with admission allowed meanwhile (the limit is not held).
    if run.broken("slow-no-deadline"):
        return {"redisDeadlineMs": 5000}
    if run.broken("slow-allow"):
        return {"redisDeadlineMs": 20, "onSharedStateLoss": "allow"}
    return {"redisDeadlineMs": T.SLOW_REDIS_DEADLINE_MS}


@scenario("slow-network",
          "50 ms (± 10) added each way between every node and Redis / PostgreSQL by the fault proxy: the exact "
          "limits still hold cluster-wide and every caller is bounded by the Redis deadline",
          node_config=_slow_network_config, proxy=True)
def slow_network(run, cluster):
    policy = {"algorithm": "gcra", "limits": [{"rate": T.SLOW_POLICY_RATE, "periodMs": T.SLOW_POLICY_PERIOD_MS,
                                               "burst": T.SLOW_POLICY_BURST}]}
    put_policy(cluster, "chaos-slow", policy)
    put_policy(cluster, "chaos-slow-open", OPEN_POLICY)
    token = cluster.require(1, "POST", "/v1/tokens", {"subject": "chaos-slow", "policy": "chaos-slow-open"}, admin=True, ok=(201,))
    secret = token.json["secret"]
    for i in range(1, cluster.nodes + 1):
        if not cluster.wait_until(lambda: cluster.call(i, "POST", "/v1/tokens/verify", {"token": secret}).status == 200, 10000, 100):
            raise ScenarioError(f"node-{i} does not accept the prober's token")
    duration = round((2000 + T.SLOW_DURATION_MS + 3000) / 1000, 1)
    limit = Load(run, cluster, "limit", None, duration, 60, 6, "limits=1",
                 ["--policy", "chaos-slow", "--keys", str(T.SLOW_KEYS), "--keep-config", "--tokens", "1"])
    probers = [LatencyProber(cluster.url(i), i, secret, "chaos-slow-open") for i in range(1, cluster.nodes + 1)]
    start_loads(limit)
    for thread in probers:
        thread.start()
    try:
        sleep_ms(2000)
        latency = 4 * T.SLOW_LATENCY_MS if run.broken("slow-no-deadline") else T.SLOW_LATENCY_MS
        t_slow = stamp_of(cluster.fault("slow-network", [latency, T.SLOW_JITTER_MS]), "slow-network")
        sleep_ms(t_slow + T.SLOW_DURATION_MS - now_ms())
        t_heal = stamp_of(cluster.fault("heal-network"), "heal-network")
        sleep_ms(2000)
    finally:
        for thread in probers:
            thread.halt.set()
        for thread in probers:
            thread.join(10)
    finish_loads(limit)

    samples = [s for p in probers for s in p.samples]
    during = [s for s in samples if t_slow <= s[0] and s[0] + s[1] <= t_heal]
    latencies = [s[1] for s in during]
    worst = max(latencies) if latencies else None
    goal = T.SLOW_REDIS_DEADLINE_MS + T.SLOW_LATENCY_SLACK_MS
    run.numbers.update({"requestsWhileSlow": len(during),
                        "latencyWhileSlowMs": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": worst}})
    run.check("latency", worst is not None and worst <= goal and percentile(latencies, 50) >= 2 * T.SLOW_LATENCY_MS - 2 * T.SLOW_JITTER_MS,
              f"while slow: p50 {fmt_ms(percentile(latencies, 50))} (the proxy adds ≥ {2 * (T.SLOW_LATENCY_MS - T.SLOW_JITTER_MS)} ms), "
              f"slowest {fmt_ms(worst)} of {len(during)} (goal {goal} ms = deadline {T.SLOW_REDIS_DEADLINE_MS} + {T.SLOW_LATENCY_SLACK_MS})",
              None if worst is None else round(worst, 1), goal)
    errors = [s for s in during if s[2] not in (200, 429)]
    run.check("prober-errors", not errors, f"prober errors {len(errors)}", len(errors), 0,
              ", ".join(f"{s[3]} {s[2]}" for s in errors[:5]) or None)
    check_exact_limit(run, [a for a in limit.acks if a.get("op") == "limits"], T.SLOW_POLICY_BURST, T.SLOW_POLICY_RATE, T.SLOW_POLICY_PERIOD_MS)
    check_unexpected(run, [limit], label="failed limit checks")


# --- 14. pg-freeze -------------------------------------------------------------------------------

class AuditProber(threading.Thread):
    """Sequential audit appends to one node, each timed."""

    def __init__(self, url, node):
        super().__init__(daemon=True)
        self.client = Http(url, timeout=10)
        self.node = node
        self.samples = []  # (start_ms, latency_ms, status, id)
        self.halt = threading.Event()

    def run(self):
        n = 0
        while not self.halt.is_set():
            n += 1
            event_id = str(uuid.uuid4())
            started = now_ms()
            reply = self.client.call("POST", "/v1/audit", {"id": event_id, "actor": f"prober-{self.node}", "action": "write",
                                                            "resource": "chaos", "outcome": "ok"}, retry=False)
            self.samples.append((started, reply.elapsed_ms, reply.status, event_id))
            self.halt.wait(0.01)
        self.client.close()


def _pg_freeze_config(run):
    # Deliberate break: a PostgreSQL deadline longer than the freeze (callers wait it out).
    return {"postgres": {"deadlineMs": 30000 if run.broken("freeze-no-deadline") else T.FREEZE_PG_DEADLINE_MS}}


@scenario("pg-freeze",
          "the primary's whole process tree frozen 5 s with the cgroup freezer (a hang, not a crash), then thawed: no "
          "audit append waits past the PostgreSQL deadline; no acknowledged event is lost or stored twice; nothing "
          "is promoted", node_config=_pg_freeze_config)
def pg_freeze(run, cluster):
    if not os.access("/sys/fs/cgroup/freezer/cgroup.procs", os.W_OK):
        raise ScenarioSkip("the cgroup freezer is not available here (/sys/fs/cgroup/freezer is missing or read-only)")
    primary_host = cluster.info["postgres"][0]["host"]
    duration = round((2000 + T.FREEZE_MS + 3000) / 1000, 1)
    background = Load(run, cluster, "mixed", None, duration, T.BACKGROUND_LOAD_RATE, 8)
    probers = [AuditProber(cluster.url(i), i) for i in range(1, cluster.nodes + 1)]
    start_loads(background)
    for thread in probers:
        thread.start()
    try:
        sleep_ms(2000)
        t_freeze = stamp_of(cluster.fault("freeze", 0), "frozen")
        sleep_ms(t_freeze + T.FREEZE_MS - now_ms())
        t_thaw = stamp_of(cluster.fault("thaw", 0), "thaw")
        sleep_ms(3000)
    finally:
        for thread in probers:
            thread.halt.set()
        for thread in probers:
            thread.join(15)
    finish_loads(background)

    samples = [s for p in probers for s in p.samples]
    during = [s for s in samples if t_freeze - 100 <= s[0] + s[1] and s[0] <= t_thaw]
    latencies = [s[1] for s in during]
    worst = max(latencies) if latencies else None
    goal = T.FREEZE_PG_DEADLINE_MS + T.FREEZE_LATENCY_SLACK_MS
    buffered = sum(1 for s in during if s[2] == 202)
    run.numbers.update({"appendsWhileFrozen": len(during), "bufferedWhileFrozen": buffered,
                        "latencyWhileFrozenMs": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": worst}})
    run.check("deadline", worst is not None and worst <= goal,
              f"slowest audit append while frozen {fmt_ms(worst)} of {len(during)} (goal {goal} ms = postgres.deadlineMs "
              f"{T.FREEZE_PG_DEADLINE_MS} + {T.FREEZE_LATENCY_SLACK_MS}; {buffered} answered 202 buffered)",
              None if worst is None else round(worst, 1), goal)
    errors = [s for s in samples if s[2] not in (200, 201, 202)]
    run.check("appends-acknowledged", not errors, f"audit appends refused {len(errors)}", len(errors), 0,
              ", ".join(str(s[2]) for s in errors[:5]) or None)
    wait_spools(run, cluster)
    prober_acks = [{"op": "audit", "subject": s[3], "status": s[2]} for s in samples]
    audit_exactly_once(run, cluster, background.acks + prober_acks)
    views = [cluster.cluster_view(i) for i in range(1, cluster.nodes + 1)]
    primaries = {(v or {}).get("postgres", {}).get("primary") for v in views}
    timelines = {h.get("timeline") for v in views for h in (v or {}).get("postgres", {}).get("hosts", []) if h.get("role") == "primary"}
    run.check("no-promotion", primaries == {primary_host} and timelines <= {1},
              f"primary after the thaw {'/'.join(sorted(str(p) for p in primaries))} on timeline {'/'.join(str(t) for t in sorted(timelines, key=str))} "
              f"(expected {primary_host}, timeline 1: the router promotes nothing)", sorted(str(p) for p in primaries), primary_host)


# --- 13. clock-skew ------------------------------------------------------------------------------

SKEW_BREAKER = "chaos-skew"


@scenario("clock-skew",
          "node-1 restarted under libfaketime, first with its wall clock 2 h ahead, then running 10× fast: each time it "
          "rejoins; the exact limits hold cluster-wide; a breaker it trips opens everywhere and lets probes through "
          "after openWaitMs on every node — every shared decision uses Redis time")
def clock_skew(run, cluster):
    if not shutil.which("faketime"):
        raise ScenarioSkip("faketime is not installed (apt-get install faketime)")
    for phase, spec in enumerate((T.SKEW_FAKETIME, T.SKEW_RATE_FAKETIME), start=1):
        if not _clock_skew_phase(run, cluster, phase, spec):
            return


def _node_clock_ms(cluster, i):
    """Node i's wall clock per its HTTP Date header (1 s resolution), and the real time it was read."""
    reply = cluster.call(i, "GET", "/healthz")
    date = reply.headers.get("date") if reply.status and reply.headers else None
    if not date:
        return None, now_ms()
    return email.utils.parsedate_to_datetime(date).timestamp() * 1000, now_ms()


def _clock_skew_phase(run, cluster, phase, spec):
    tag = f"[{spec}] "
    cluster.fault("stop-node", 1)
    cluster.fault("start-node", [1, "--faketime", spec])
    if not cluster.wait_until(lambda: all(len((cluster.cluster_view(i) or {}).get("members", [])) == cluster.nodes
                                          for i in range(1, cluster.nodes + 1)), 15000, 100):
        run.check(f"membership-{phase}", False, f"{tag}the skewed node-1 and its peers do not all see 3 members within 15 s",
                  None, cluster.nodes)
        return False
    # How node-1's wall clock runs: its offset now, and its rate over SKEW_RATE_SAMPLE_MS.
    first, real_first = _node_clock_ms(cluster, 1)
    sleep_ms(T.SKEW_RATE_SAMPLE_MS)
    second, real_second = _node_clock_ms(cluster, 1)
    ahead = None if first is None else first - real_first
    rate = None if first is None or second is None else (second - first) / (real_second - real_first)
    run.numbers[f"node1Clock{phase}"] = {"spec": spec, "aheadMs": None if ahead is None else round(ahead),
                                         "rate": None if rate is None else round(rate, 1)}
    run.check(f"membership-{phase}", True, f"{tag}node-1 ({fmt_s(ahead) if ahead is not None else '?'} ahead, running "
              f"{rate:.1f}× by its Date header) rejoined: every node sees {cluster.nodes} members" if rate is not None else
              f"{tag}node-1 rejoined: every node sees {cluster.nodes} members", cluster.nodes, cluster.nodes)

    name = f"chaos-skew-{phase}"
    breaker = f"{SKEW_BREAKER}-{phase}"
    policy = {"algorithm": "gcra", "limits": [{"rate": T.SKEW_POLICY_RATE, "periodMs": T.SKEW_POLICY_PERIOD_MS,
                                               "burst": T.SKEW_POLICY_BURST}]}
    put_policy(cluster, name, policy)
    # Deliberate break: a breaker each node times on its own (never shared) cannot follow node-1's trip.
    sharing = "local" if run.broken("skew-local-breaker") else "any"
    put_breaker(cluster, breaker, {"window": {"type": "count", "size": 10}, "minimumCalls": 5,
                                   "failureRateThreshold": 50, "openWaitMs": T.SKEW_OPEN_WAIT_MS,
                                   "halfOpenPermittedCalls": 1, "sharing": sharing})
    limit = Load(run, cluster, f"limit-{phase}", None, 10.0, 60, 6, "limits=1",
                 ["--policy", name, "--keys", str(T.SKEW_KEYS), "--keep-config", "--tokens", "1"])
    start_loads(limit)
    try:
        sleep_ms(1000)
        # node-1 (skewed) sees its upstream fail and trips the shared breaker.
        client = Http(cluster.url(1), timeout=5)
        t_trip = None
        for _ in range(20):
            reply = client.call("POST", f"/v1/breakers/{breaker}/acquire", retry=False)
            if reply.status != 200:
                t_trip = now_ms()
                break
            client.call("POST", f"/v1/breakers/{breaker}/record",
                        {"permit": reply.json["permit"], "outcome": "failure", "durationMs": 1}, retry=False)
        client.close()
        if t_trip is None:
            run.check(f"trip-{phase}", False, f"{tag}node-1's breaker did not open after 20 failures", None, None)
            finish_loads(limit)
            return False
        # Every node open quickly; then every node lets a probe through after openWaitMs (Redis time),
        # not 2 h and not a tenth of it.
        opened = {}
        probe = {}
        deadline = t_trip + T.SKEW_OPEN_WAIT_MS + T.SKEW_OPEN_SLACK_MS + 2000
        while now_ms() < deadline and len(probe) < cluster.nodes:
            for i in range(1, cluster.nodes + 1):
                if i not in opened:
                    state = (cluster.call(i, "GET", f"/v1/breakers/{breaker}").json or {}).get("state")
                    if state in ("open", "half_open"):
                        opened[i] = now_ms() - t_trip
                elif i not in probe:
                    reply = cluster.call(i, "POST", f"/v1/breakers/{breaker}/acquire")
                    if reply.status == 200:
                        probe[i] = now_ms() - t_trip
                        cluster.call(i, "POST", f"/v1/breakers/{breaker}/record",
                                     {"permit": reply.json["permit"], "outcome": "ignored", "durationMs": 1})
            sleep_ms(20)
    finally:
        finish_loads(limit)
    slowest_open = max(opened.values()) if len(opened) == cluster.nodes else None
    run.numbers[f"breaker{phase}"] = {"openedMsByNode": {f"node-{k}": round(v) for k, v in opened.items()},
                                      "probeMsByNode": {f"node-{k}": round(v) for k, v in probe.items()}}
    run.check(f"propagation-{phase}", slowest_open is not None and slowest_open <= T.SKEW_PROPAGATION_GOAL_MS,
              f"{tag}node-1's trip open on {len(opened)}/{cluster.nodes} nodes, slowest {fmt_ms(slowest_open)} "
              f"(goal {T.SKEW_PROPAGATION_GOAL_MS} ms)", None if slowest_open is None else round(slowest_open),
              T.SKEW_PROPAGATION_GOAL_MS)
    # A probe is tried on every node from the moment it is seen open: one let through before
    # openWaitMs would be a clock running fast; none by openWaitMs + slack a clock running slow.
    probes = list(probe.values())
    earliest, latest = (min(probes), max(probes)) if len(probes) == cluster.nodes else (None, None)
    goal = T.SKEW_OPEN_WAIT_MS + T.SKEW_OPEN_SLACK_MS
    floor = T.SKEW_OPEN_WAIT_MS - T.SKEW_EARLY_SLACK_MS
    run.check(f"open-wait-{phase}", earliest is not None and floor <= earliest and latest <= goal,
              f"{tag}a probe let through on {len(probe)}/{cluster.nodes} nodes, {fmt_ms(earliest)}–{fmt_ms(latest)} after the "
              f"trip (goal {floor}–{goal} ms: openWaitMs {T.SKEW_OPEN_WAIT_MS} − {T.SKEW_EARLY_SLACK_MS} to + {T.SKEW_OPEN_SLACK_MS})",
              None if latest is None else [round(earliest), round(latest)], [floor, goal])
    limit_acks = [a for a in limit.acks if a.get("op") == "limits"]
    check_exact_limit(run, limit_acks, T.SKEW_POLICY_BURST, T.SKEW_POLICY_RATE, T.SKEW_POLICY_PERIOD_MS,
                      f", node-1 included [{spec}]", key=f"exact-limit-{phase}")
    bad = limit.unexpected()
    run.check(f"no-unexpected-{phase}", not bad, f"{tag}failed limit checks {len(bad)} of {len(limit.acks)}", len(bad), 0,
              describe_unexpected(bad))
    return not bad


# --- 11. partition -------------------------------------------------------------------------------

PARTITION_BREAKER = "chaos-part"


@scenario("partition",
          "node-1 moved into its own network namespace (veth pair; the servers reached by NAT to loopback), then cut "
          "off Redis and PostgreSQL with iptables DROP for 8 s under load: it degrades alone (local share, local "
          "breakers, audit spooled) and keeps answering; its peers stay shared and never fail; the cluster admits at "
          "most its limit plus node-1's 1/N share; after the rule is removed it rejoins within 3 s and loses no event",
          node_config=_redis_down_config)
def partition(run, cluster):
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        raise ScenarioSkip("network namespaces and iptables need root, iproute2 and iptables (apt-get install iptables)")
    probe_ns = f"coordinator-chaos-probe-{os.getpid()}"
    rc, _, err = run_command(["ip", "netns", "add", probe_ns], None, timeout=20)
    if rc != 0:
        raise ScenarioSkip(f"this machine forbids network namespaces (ip netns add: {err.strip()[-200:]})")
    run_command(["ip", "netns", "delete", probe_ns], None, timeout=20)
    moved = cluster.fault("netns-node", 1)
    cluster.reload()
    run.event(f"node-1 now at {cluster.url(1)} ({[t for _, t in moved if 'namespace' in t][0]})")
    if not cluster.wait_until(lambda: all(len((cluster.cluster_view(i) or {}).get("members", [])) == cluster.nodes
                                          for i in range(1, cluster.nodes + 1)), 15000, 100):
        raise ScenarioError("node-1 in its namespace and its peers do not all see 3 members within 15 s")

    n = cluster.nodes
    policy = {"algorithm": "gcra", "limits": [{"rate": T.REDIS_DOWN_POLICY_RATE, "periodMs": T.REDIS_DOWN_POLICY_PERIOD_MS,
                                               "burst": T.REDIS_DOWN_POLICY_BURST}]}
    put_policy(cluster, "chaos-part", policy)
    put_breaker(cluster, PARTITION_BREAKER, {"window": {"type": "count", "size": 10}, "minimumCalls": 5,
                                             "failureRateThreshold": 50, "openWaitMs": T.PARTITION_AGREE_OPEN_WAIT_MS,
                                             "halfOpenPermittedCalls": 1, "permitTimeoutMs": 60000, "sharing": "any"})
    duration = round((2000 + T.PARTITION_MS + T.PARTITION_REJOIN_GOAL_MS + 3000) / 1000, 1)
    background = Load(run, cluster, "mixed", None, duration, T.BACKGROUND_LOAD_RATE, 8)
    probe = Load(run, cluster, "limit", None, duration, T.REDIS_DOWN_PROBE_RATE, 6, "limits=1",
                 ["--policy", "chaos-part", "--keys", "1", "--keep-config", "--tokens", "1"])
    views = [Poller(cluster.url(i), "/v1/cluster", 50, headers=cluster.auth, label=f"node-{i}") for i in range(1, n + 1)]
    breakers = [Poller(cluster.url(i), f"/v1/breakers/{PARTITION_BREAKER}", 50, label=f"node-{i}") for i in range(1, n + 1)]
    start_loads(background, probe)
    for poller in views + breakers:
        poller.start()
    t_heal = None
    try:
        sleep_ms(2000)
        t_cut = stamp_of(cluster.fault("partition-node", 1), "DROP")
        # While node-1 is cut off, its peers' breaker trips (shared between them only).
        client = Http(cluster.url(2))
        for _ in range(8):
            reply = client.call("POST", f"/v1/breakers/{PARTITION_BREAKER}/acquire")
            if reply.status == 200:
                client.call("POST", f"/v1/breakers/{PARTITION_BREAKER}/record",
                            {"permit": reply.json["permit"], "outcome": "failure", "durationMs": 1})
        client.close()
        sleep_ms(t_cut + T.PARTITION_MS - now_ms())
        t_heal = stamp_of(cluster.fault("heal-node", 1), "heal-node")

        def last(poller):
            return poller.samples[-1] if poller.samples and poller.samples[-1][0] > t_heal and poller.samples[-1][1] == 200 else None

        def rejoined():
            latest = [last(p) for p in views]
            if None in latest:
                return False
            node1 = latest[0][2] or {}
            return (not node1.get("degraded")
                    and all(b.get("status") == "ok" for b in node1.get("backends", []))
                    and all("node-1" in [m.get("nodeId") for m in (sample[2] or {}).get("members", [])] for sample in latest))
        t_rejoined = cluster.wait_until(rejoined, T.PARTITION_REJOIN_GOAL_MS + 5000, 20) and now_ms()

        def agreeing():
            states = [(last(p)[2] or {}).get("state") if last(p) else None for p in breakers]
            return None not in states and len(set(states)) == 1 and states[0]
        agreed_state = cluster.wait_until(agreeing, T.PARTITION_REJOIN_GOAL_MS + 5000, 20)
        t_agree = now_ms() if agreed_state else None
    finally:
        for poller in views + breakers:
            poller.stop()
    finish_loads(background, probe)

    # node-1 degrades alone, within one deadline of the cut.
    switch = None
    for t, status, body in views[0].samples:
        if t >= t_cut and status == 200 and body and body.get("degraded"):
            limits = [d for d in body["degraded"] if d.get("feature") == "limits"]
            if limits:
                switch = (limits[0]["sinceMs"] - t_cut, f"{limits[0].get('mode')}/{limits[0].get('shareDivisor')}")
                break
    goal = T.REDIS_DEADLINE_MS + T.PARTITION_SWITCH_SLACK_MS
    run.numbers.update({"node1SwitchMs": None if switch is None else round(switch[0]), "node1Mode": switch and switch[1]})
    run.check("switch", switch is not None and switch[0] <= goal and switch[1] == f"localShare/{n}",
              f"node-1 in local share {fmt_ms(switch and switch[0])} after the cut (goal {goal} ms; mode "
              f"{switch[1] if switch else 'never'})", None if switch is None else round(switch[0]), goal)
    peers_degraded = [(i, t) for i, p in enumerate(views[1:], start=2) for t, st, b in p.samples if st == 200 and (b or {}).get("degraded")]
    left = {}
    for i, poller in enumerate(views[1:], start=2):
        for t, st, b in poller.samples:
            if t > t_cut and st == 200 and "node-1" not in [m.get("nodeId") for m in (b or {}).get("members", [])]:
                left[i] = t - t_cut
                break
    slowest_leave = max(left.values()) if len(left) == n - 1 else None
    run.numbers.update({"peersDegradedSamples": len(peers_degraded), "node1LeftPeersMs": {f"node-{k}": round(v) for k, v in left.items()}})
    run.check("peers-shared", not peers_degraded and slowest_leave is not None and slowest_leave <= T.PARTITION_LEAVE_GOAL_MS,
              f"peers never degraded ({len(peers_degraded)} degraded samples); node-1 left their membership after "
              f"{fmt_ms(slowest_leave)} (goal {T.PARTITION_LEAVE_GOAL_MS} ms)",
              None if slowest_leave is None else round(slowest_leave), T.PARTITION_LEAVE_GOAL_MS,
              f"degraded samples e.g. {peers_degraded[:3]}" if peers_degraded else None)

    # Admissions on the probed key during the cut: the peers' shared limit plus node-1's local share.
    window_ms = t_heal - t_cut
    in_cut = [a for a in probe.acks if a.get("op") == "limits" and t_cut <= a.get("atMs", 0) <= t_heal]
    admitted = sum(1 for a in in_cut if a.get("allowed"))
    by_node1 = sum(1 for a in in_cut if a.get("allowed") and probe.node_of(a) == 1)
    allowance = T.REDIS_DOWN_POLICY_BURST + T.REDIS_DOWN_POLICY_RATE * window_ms / T.REDIS_DOWN_POLICY_PERIOD_MS
    bound = (1 + 1 / n + T.PARTITION_ADMIT_SLACK) * allowance
    run.numbers.update({"cutMs": round(window_ms), "admittedDuringCut": admitted, "admittedByNode1DuringCut": by_node1,
                        "offeredDuringCut": len(in_cut), "policyAllowanceDuringCut": round(allowance, 1)})
    run.check("admitted", admitted <= bound and len(in_cut) > 2 * allowance,
              f"admitted during the cut {admitted} of {len(in_cut)}, {by_node1} by node-1 (limit {allowance:.0f} in "
              f"{fmt_s(window_ms)}; ≤ (1 + 1/{n} + {T.PARTITION_ADMIT_SLACK:g}) × = {bound:.0f})", admitted, round(bound, 1),
              None if len(in_cut) > 2 * allowance else "the key was not saturated: offered too little to judge")

    check_unexpected(run, [background, probe], label="failed requests (node-1 included)")
    rejoin = None if not t_rejoined else t_rejoined - t_heal
    agreement = None if not t_agree else t_agree - t_heal
    run.numbers.update({"rejoinedMs": None if rejoin is None else round(rejoin),
                        "breakersAgreeMs": None if agreement is None else round(agreement), "agreedState": agreed_state or None})
    goal = T.PARTITION_REJOIN_GOAL_MS
    run.check("rejoined", rejoin is not None and rejoin <= goal,
              f"node-1 shared again, every backend ok, a member on every node {fmt_s(rejoin) if rejoin is not None else 'never'}"
              f" after the heal (goal {fmt_s(goal)})", None if rejoin is None else round(rejoin), goal)
    run.check("breakers-agree", agreement is not None and agreement <= goal and agreed_state == "open",
              f"breakers agree ({agreed_state or '?'}; the peers tripped it during the cut) after "
              f"{fmt_s(agreement) if agreement is not None else 'never'} (goal {fmt_s(goal)})",
              None if agreement is None else round(agreement), goal)
    wait_spools(run, cluster)
    audit_exactly_once(run, cluster, background.acks, read_node=2)


# --- 5. sick-node --------------------------------------------------------------------------------

SICK_BREAKER = "chaos-sick"


@scenario("sick-node",
          "only node-1 sees its upstream fail, with breaker sharing quorum(2): node-1 opens, nodes 2 and 3 stay "
          "closed (one sick node does not cut the healthy ones off)")
def sick_node(run, cluster):
    sharing = "any" if run.broken("sick-any") else f"quorum({T.SICK_QUORUM})"
    put_breaker(cluster, SICK_BREAKER, {"window": {"type": "count", "size": 10}, "minimumCalls": 5,
                                        "failureRateThreshold": 50, "openWaitMs": 30000,
                                        "halfOpenPermittedCalls": 1, "sharing": sharing})
    background = Load(run, cluster, "mixed", [2, 3], 8.0, 60, 4)
    start_loads(background)
    healthy = [Http(cluster.url(i), timeout=5) for i in (2, 3)]
    sick = Http(cluster.url(1), timeout=5)
    try:
        # Healthy traffic everywhere first, so every node has the breaker and a window of successes.
        for client in [sick] + healthy:
            for _ in range(5):
                reply = client.call("POST", f"/v1/breakers/{SICK_BREAKER}/acquire", retry=False)
                if reply.status == 200:
                    client.call("POST", f"/v1/breakers/{SICK_BREAKER}/record",
                                {"permit": reply.json["permit"], "outcome": "success", "durationMs": 1}, retry=False)
        t_trip = None
        for _ in range(20):
            reply = sick.call("POST", f"/v1/breakers/{SICK_BREAKER}/acquire", retry=False)
            if reply.status != 200:
                t_trip = now_ms()
                break
            sick.call("POST", f"/v1/breakers/{SICK_BREAKER}/record",
                      {"permit": reply.json["permit"], "outcome": "failure", "durationMs": 1}, retry=False)
        states = {2: set(), 3: set()}
        refused = {2: 0, 3: 0}
        until = now_ms() + T.SICK_OBSERVE_MS
        while t_trip is not None and now_ms() < until:
            for node, client in zip((2, 3), healthy):
                states[node].add((client.call("GET", f"/v1/breakers/{SICK_BREAKER}").json or {}).get("state"))
                reply = client.call("POST", f"/v1/breakers/{SICK_BREAKER}/acquire", retry=False)
                if reply.status == 200:
                    client.call("POST", f"/v1/breakers/{SICK_BREAKER}/record",
                                {"permit": reply.json["permit"], "outcome": "success", "durationMs": 1}, retry=False)
                else:
                    refused[node] += 1
            sleep_ms(20)
    finally:
        for client in healthy + [sick]:
            client.close()
        finish_loads(background)
    run.check("sick-open", t_trip is not None, "node-1 opened on its own failures" if t_trip else
              "node-1 did not open after 20 failures", t_trip is not None, True)
    stayed = all(states[n] == {"closed"} for n in (2, 3)) and not any(refused.values())
    run.numbers.update({"statesSeen": {f"node-{n}": sorted(str(s) for s in states[n]) for n in (2, 3)},
                        "refusedOnHealthy": {f"node-{n}": refused[n] for n in (2, 3)}})
    run.check("healthy-closed", t_trip is not None and stayed,
              f"nodes 2 and 3 (sharing {sharing}) stayed closed for {fmt_s(T.SICK_OBSERVE_MS)}: states seen "
              + ", ".join(f"node-{n} {'/'.join(sorted(str(s) for s in states[n]))}" for n in (2, 3))
              + f", calls refused {refused[2] + refused[3]}", refused[2] + refused[3], 0)
    check_unexpected(run, [background], label="failed requests")

