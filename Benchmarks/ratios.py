#!/usr/bin/env python3
"""Reads the text output of `swift package benchmark` (stdin or a file) and prints, per benchmark,
p50 ns/op, p50 throughput, the largest malloc count per operation, the ratio to the baseline
measured in the same run, and the goal. Exits 1 if a goal is missed or a benchmark is missing."""
import re
import sys

BASELINE = "Baseline.Dictionary<String,Int64> update (1000 keys)"
GOALS = {  # name: (kind, bound)
    "Breaker.acquire+record (closed, count window)": ("ns", 150),
    "Breaker.acquire+record (closed, time window)": ("ns", 150),
    "GCRA.check (1 key)": ("mops", 5),
    "GCRA.check (1000 keys, 2 limits)": ("mops", 5),
}
SCALE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}

text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
text = re.sub(r"\x1b\[[0-9;]*m", "", text)
results, current = {}, None
for line in text.splitlines():
    stripped = line.strip()
    if stripped in GOALS or stripped == BASELINE:
        current = stripped
        results[current] = {}
        continue
    if current is None or not stripped.startswith("│"):
        continue
    cells = [c.strip() for c in stripped.strip("│").split("│")]
    if len(cells) < 8:
        continue
    metric, values = cells[0], cells[1:8]  # p0 p25 p50 p75 p90 p99 p100
    if metric.startswith("Time (wall clock)"):
        unit = re.search(r"\((ns|us|μs|ms|s)\)", metric).group(1)
        factor = {"ns": 1, "us": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9}[unit]
        results[current]["ns"] = float(values[2]) * factor
    elif metric.startswith("Throughput"):
        m = re.search(r"\(# / s\)(?: \((\w)\))?", metric)
        results[current]["ops"] = float(values[2]) * SCALE[(m.group(1) or "") if m else ""]
    elif metric.startswith("Malloc (total)"):
        results[current]["mallocs"] = max(int(v) for v in values)
    elif metric.startswith("Instructions"):
        m = re.search(r"\(# \)?\((\w)\)", metric)
        results[current]["instructions"] = values[2]

missing = [n for n in list(GOALS) + [BASELINE] if "ns" not in results.get(n, {})]
if missing:
    print("ratios.py: no wall-clock result for: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)

base = results[BASELINE]["ns"]
print()
print(f"{'benchmark':<54} {'p50 ns/op':>9} {'M ops/s':>8} {'mallocs':>8} {'× baseline':>10}  goal")
failed = False
for name in list(GOALS) + [BASELINE]:
    r = results[name]
    ns = r["ns"]
    mops = 1e3 / ns
    mallocs = r.get("mallocs", "n/a")
    goal, verdict = "floor (hashed keyed update)", ""
    if name in GOALS:
        kind, bound = GOALS[name]
        if kind == "ns":
            ok = ns <= bound and mallocs == 0
            goal = f"≤ {bound} ns, 0 allocations"
        else:
            ok = mops >= bound and mallocs == 0
            goal = f"≥ {bound} M/s on one core"
        verdict = "  met" if ok else "  MISSED"
        failed |= not ok
    print(f"{name:<54} {ns:>9.0f} {mops:>8.1f} {mallocs!s:>8} {ns / base:>10.2f}  {goal}{verdict}")
sys.exit(1 if failed else 0)
