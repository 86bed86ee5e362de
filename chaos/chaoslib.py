"""Infrastructure of chaos/run: a cluster from cluster/up, fault verbs, `coordinator load` in the
background, HTTP pollers, PostgreSQL and Redis helpers, checks and reports. Python 3 stdlib only.

Times are wall-clock milliseconds since the epoch everywhere (time.time()), the same clock as the
nodes' `atMs`/`sinceMs` fields, the load's `atMs` and cluster/fault's UTC stamps (one machine).
"""

import datetime
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLUSTER_SCRIPTS = REPO / "cluster"
PG_BIN = os.environ.get("CLUSTER_PG_BIN", "/usr/lib/postgresql/15/bin")


def now_ms():
    return time.time() * 1000.0


def sleep_ms(ms):
    if ms > 0:
        time.sleep(ms / 1000.0)


def parse_stamp(text):
    """'2026-11-27T03:57:05.834Z' → epoch ms."""
    moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() * 1000.0


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, int(-(-p * len(ordered) // 100)))  # ceil(p/100 · n)
    return ordered[min(rank, len(ordered)) - 1]


def fmt_ms(value):
    if value is None:
        return "n/a"
    return f"{value:.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def fmt_s(value_ms):
    return "n/a" if value_ms is None else f"{value_ms / 1000:.1f} s"


class ScenarioError(Exception):
    """The scenario could not run to the point of judging (set-up failed, a fault verb failed…): FAIL."""


class ScenarioSkip(Exception):
    """The machine forbids the mechanism the scenario needs: SKIP with this reason."""


class Interrupted(BaseException):
    """SIGINT/SIGTERM while running."""


# --- HTTP ------------------------------------------------------------------------------------------


class Reply:
    __slots__ = ("status", "headers", "text", "elapsed_ms", "_json")

    def __init__(self, status, headers, text, elapsed_ms):
        self.status = status
        self.headers = headers
        self.text = text
        self.elapsed_ms = elapsed_ms
        self._json = False

    @property
    def json(self):
        if self._json is False:
            try:
                self._json = json.loads(self.text) if self.text else None
            except ValueError:
                self._json = None
        return self._json

    def __repr__(self):
        return f"Reply({self.status}, {self.text[:200]!r})"


class Http:
    """One keep-alive HTTP/1.1 connection to a base URL. Not thread-safe: one per thread.

    Transport failures answer status 0 with the error text; `retry` retries once on a fresh
    connection when the kept-alive one turned out to be closed (never for a fresh connection)."""

    def __init__(self, base, timeout=3.0):
        parsed = urllib.parse.urlsplit(base)
        self.base = base.rstrip("/")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def call(self, method, path, body=None, headers=None, timeout=None, retry=True):
        data = None
        hdrs = {"Connection": "keep-alive"}
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
            elif timeout is not None:
                self.conn.timeout = timeout
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(timeout)
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                response = self.conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                elapsed = (time.perf_counter() - started) * 1000.0
                reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text, elapsed)
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return reply
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                elapsed = (time.perf_counter() - started) * 1000.0
                self.close()
                if retry and not fresh and attempt == 0:
                    continue
                return Reply(0, {}, f"{type(error).__name__}: {error}", elapsed)
            except (OSError, http.client.HTTPException) as error:
                elapsed = (time.perf_counter() - started) * 1000.0
                self.close()
                return Reply(0, {}, f"{type(error).__name__}: {error}", elapsed)
        raise AssertionError("unreachable")


def http_once(base, method, path, body=None, headers=None, timeout=3.0):
    client = Http(base, timeout)
    try:
        return client.call(method, path, body, headers, retry=False)
    finally:
        client.close()


# --- processes -------------------------------------------------------------------------------------


class Children:
    """Processes this runner started (by pid, in their own sessions), stopped on exit."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs = []

    def popen(self, args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(args, **kwargs)
        with self.lock:
            self.procs.append(proc)
        return proc

    def stop(self, proc, grace=5.0):
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait(5)

    def stop_all(self):
        with self.lock:
            procs = list(self.procs)
            self.procs = []
        for proc in procs:
            self.stop(proc)


CHILDREN = Children()


def run_command(args, log_path=None, timeout=180, env=None, input_bytes=None):
    """Runs a command in its own session; returns (rc, stdout text, stderr text). Both streams are
    appended to log_path when given. Killed (by pid) after timeout."""
    proc = CHILDREN.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL, env=env)
    try:
        out, err = proc.communicate(input=input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired:
        CHILDREN.stop(proc)
        out, err = proc.communicate()
        err = (err or b"") + f"\n[chaos/run: killed after {timeout} s]\n".encode()
        rc = 124
    else:
        rc = proc.returncode
    with CHILDREN.lock:
        if proc in CHILDREN.procs:
            CHILDREN.procs.remove(proc)
    out_text = (out or b"").decode("utf-8", "replace")
    err_text = (err or b"").decode("utf-8", "replace")
    if log_path:
        with open(log_path, "a") as handle:
            handle.write(f"$ {' '.join(str(a) for a in args)}   (exit {rc})\n")
            if out_text:
                handle.write(out_text if out_text.endswith("\n") else out_text + "\n")
            if err_text:
                handle.write(err_text if err_text.endswith("\n") else err_text + "\n")
    return rc, out_text, err_text


# --- one scenario run --------------------------------------------------------------------------------


class Check:
    def __init__(self, key, ok, text, measured=None, goal=None, detail=None):
        self.key = key
        self.ok = bool(ok)
        self.text = text
        self.measured = measured
        self.goal = goal
        self.detail = detail

    def as_dict(self):
        return {"check": self.key, "ok": self.ok, "text": self.text, "measured": self.measured,
                "goal": self.goal, "detail": self.detail}


class Run:
    """The record of one scenario run: events, checks, numbers, artifacts."""

    def __init__(self, scenario, iteration, work_dir, binary, verbose=False, breaks=()):
        self.scenario = scenario
        self.iteration = iteration
        self.work = Path(work_dir)
        self.binary = binary
        self.verbose = verbose
        self.breaks = set(breaks)
        self.events = []
        self.checks = []
        self.infos = []
        self.numbers = {}
        self.status = None
        self.error = None
        self.skip_reason = None
        self.started_ms = now_ms()
        self.seconds = None
        self.cluster = None
        self.loads = []
        self.lock = threading.Lock()
        self.log_path = self.work / "run.log"
        self.kept = None  # where this run's artifacts were kept (failed runs)

    def event(self, text, at_ms=None):
        at = now_ms() if at_ms is None else at_ms
        with self.lock:
            self.events.append((at, text))
        line = f"{datetime.datetime.fromtimestamp(at / 1000, datetime.timezone.utc).strftime('%H:%M:%S.%f')[:-3]} {text}"
        with open(self.log_path, "a") as handle:
            handle.write(line + "\n")
        if self.verbose:
            print(f"  [{self.scenario}] {line}", flush=True)

    def check(self, key, ok, text, measured=None, goal=None, detail=None):
        self.checks.append(Check(key, ok, text, measured, goal, detail))
        self.event(("ok   " if ok else "FAIL ") + f"{key}: {text}" + (f" — {detail}" if detail and not ok else ""))
        return ok

    def info(self, key, text):
        """A measured fact shown in the result line that is not a guarantee of this scenario (never fails)."""
        self.infos.append((key, text))
        self.event(f"info {key}: {text}")

    def broken(self, name):
        """Whether the test-only deliberate break `name` (CHAOS_BREAK) is in effect."""
        return name in self.breaks

    def artifact(self, name):
        return self.work / name

    def line(self):
        fragments = [("" if c.ok else "[FAIL] ") + c.text for c in self.checks] + [f"(info) {t}" for _, t in self.infos]
        if self.error:
            fragments.append(f"[ERROR] {self.error}")
        if self.status == "SKIP":
            fragments = [self.skip_reason or "skipped"]
        label = self.scenario if self.iteration is None else f"{self.scenario}#{self.iteration}"
        return f"{self.status} {label}  " + " · ".join(fragments)

    def as_dict(self):
        return {
            "scenario": self.scenario, "iteration": self.iteration, "status": self.status,
            "seconds": self.seconds, "line": self.line(), "error": self.error, "skipReason": self.skip_reason,
            "checks": [c.as_dict() for c in self.checks], "info": dict(self.infos), "numbers": self.numbers,
            "events": [{"atMs": int(at), "text": text} for at, text in self.events],
            "breaks": sorted(self.breaks), "artifacts": self.kept,
        }


# --- the cluster ---------------------------------------------------------------------------------


class Cluster:
    """A cluster started by cluster/up in its own directory."""

    def __init__(self, run, directory, binary, node_config=None, nodes=3, replicas=2, proxy=False):
        self.run = run
        self.proxy = proxy
        self.dir = Path(directory)
        self.binary = binary
        self.node_config = node_config
        self.nodes = nodes
        self.replicas = replicas
        self.info = None
        self.up_proc = None

    # lifecycle
    def up(self, timeout=240):
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("COORDINATOR_"):
                del env[key]
        if self.node_config:
            env["CLUSTER_NODE_CONFIG"] = json.dumps(self.node_config)
        args = [str(CLUSTER_SCRIPTS / "up"), "--nodes", str(self.nodes), "--replicas", str(self.replicas),
                "--dir", str(self.dir), "--bin", self.binary] + (["--proxy"] if self.proxy else [])
        started = now_ms()
        self.run.event("cluster/up " + (f"CLUSTER_NODE_CONFIG={json.dumps(self.node_config)}" if self.node_config else ""))
        rc, out, err = run_command(args, self.run.artifact("cluster.log"), timeout=timeout, env=env)
        if rc != 0:
            tail = "\n".join((out + err).strip().splitlines()[-15:])
            raise ScenarioError(f"cluster/up failed (exit {rc}): {tail}")
        self.info = json.loads((self.dir / "cluster.json").read_text())
        self.run.numbers["clusterUpSeconds"] = round((now_ms() - started) / 1000, 1)
        self.run.event(f"cluster up in {(now_ms() - started) / 1000:.1f} s: " +
                       " ".join(n["url"] for n in self.info["nodes"]))

    def down(self, keep_logs_in=None):
        if not self.dir.exists():
            return
        args = [str(CLUSTER_SCRIPTS / "down"), "--dir", str(self.dir)]
        if keep_logs_in:
            args.append("--keep-logs")
        rc, out, err = run_command(args, self.run.artifact("cluster.log"), timeout=180)
        self.run.event(f"cluster/down exit {rc}")
        if keep_logs_in and (self.dir / "logs").exists():
            target = Path(keep_logs_in)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copytree(self.dir / "logs", target / "logs", dirs_exist_ok=True)
            rc2, _, _ = run_command([str(CLUSTER_SCRIPTS / "down"), "--dir", str(self.dir)],
                                    self.run.artifact("cluster.log"), timeout=60)
        if self.dir.exists() and not any(self.dir.iterdir()):
            self.dir.rmdir()

    def reload(self):
        self.info = json.loads((self.dir / "cluster.json").read_text())

    # facts
    @property
    def admin(self):
        return self.info["adminToken"]

    @property
    def auth(self):
        return {"Authorization": f"Bearer {self.admin}"}

    @property
    def name(self):
        return self.info["name"]

    @property
    def secret(self):
        return self.info["clusterSecret"]

    @property
    def redis_port(self):
        return self.info["redis"]["port"]

    def url(self, i):
        """Node i, 1-based."""
        return self.info["nodes"][i - 1]["url"]

    def urls(self, indices=None):
        indices = indices or range(1, self.nodes + 1)
        return [self.url(i) for i in indices]

    def node_pid(self, i):
        self.reload()
        return self.info["nodes"][i - 1]["pid"]

    def pg_port(self, s):
        return self.info["postgres"][s]["port"]

    def call(self, i, method, path, body=None, admin=False, headers=None, timeout=3.0):
        hdrs = dict(headers or {})
        if admin:
            hdrs.update(self.auth)
        return http_once(self.url(i), method, path, body, hdrs, timeout)

    def require(self, i, method, path, body=None, admin=False, ok=(200,), headers=None):
        reply = self.call(i, method, path, body, admin, headers)
        if reply.status not in ok:
            raise ScenarioError(f"{method} {path} on node-{i}: {reply.status} {reply.text[:300]}")
        return reply

    def cluster_view(self, i, timeout=2.0):
        reply = self.call(i, "GET", "/v1/cluster", admin=True, timeout=timeout)
        return reply.json if reply.status == 200 else None

    # faults
    def fault(self, verb, arg=None, check=True, timeout=120):
        arguments = [] if arg is None else [str(a) for a in arg] if isinstance(arg, (list, tuple)) else [str(arg)]
        args = [str(CLUSTER_SCRIPTS / "fault"), verb] + arguments + ["--dir", str(self.dir)]
        rc, out, err = run_command(args, self.run.artifact("cluster.log"), timeout=timeout)
        stamps = self._stamped_events(out, "fault")
        if rc != 0:
            self.run.event(f"fault {verb} {arg or ''} exit {rc}: {err.strip()[-300:]}")
            if check:
                raise ScenarioError(f"cluster/fault {verb} {arg or ''} failed (exit {rc}): {err.strip()[-300:]}")
        return stamps

    def pgctl(self, verb):
        """chaos/pgctl VERB: stop or start every PostgreSQL server (recorded data directories)."""
        args = [str(HERE / "pgctl"), verb, "--dir", str(self.dir)]
        rc, out, err = run_command(args, self.run.artifact("cluster.log"), timeout=120)
        stamps = self._stamped_events(out, "pgctl")
        if rc != 0:
            raise ScenarioError(f"chaos/pgctl {verb} failed (exit {rc}): {err.strip()[-300:]}")
        return stamps

    def _stamped_events(self, output, source):
        """The `TIMESTAMP what` lines of a fault script's output, recorded in the run's timeline."""
        stamps = []
        for line in output.splitlines():
            match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$", line)
            if match:
                at = parse_stamp(match.group(1))
                stamps.append((at, match.group(2)))
                self.run.event(f"{source}: " + match.group(2), at)
        return stamps

    # PostgreSQL, directly (postgres superuser over TCP, trust auth as cluster/up configures)
    def psql(self, server, sql, db="coordinator", check=True):
        env = dict(os.environ, PGCONNECT_TIMEOUT="2")
        args = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(self.pg_port(server)),
                "-U", "postgres", "-d", db, "-c", sql]
        rc, out, err = run_command(args, None, timeout=20, env=env)
        if rc != 0 and check:
            raise ScenarioError(f"psql on pg-{server} failed: {err.strip()[-300:]}")
        return out.strip() if rc == 0 else None

    # waits
    def wait_until(self, predicate, timeout_ms, interval_ms=50, what="condition"):
        deadline = now_ms() + timeout_ms
        while True:
            value = predicate()
            if value:
                return value
            if now_ms() > deadline:
                return None
            sleep_ms(interval_ms)

    def spools_empty(self, nodes=None):
        for i in nodes or range(1, self.nodes + 1):
            view = self.cluster_view(i)
            if not view:
                return False
            for backend in view.get("backends", []):
                if backend.get("role") in ("auditSpool", "sharedAuditSpool") and backend.get("status") != "ok":
                    return False
        return True

    def audit_log(self, node=1, headers=None):
        """Every stored audit event, in seq order, read in pages of 1000 through node `node`."""
        events, after = [], 0
        client = Http(self.url(node), timeout=10)
        try:
            while True:
                hdrs = dict(self.auth)
                hdrs.update(headers or {})
                reply = client.call("GET", f"/v1/audit?after={after}&limit=1000", headers=hdrs)
                if reply.status != 200 or not isinstance(reply.json, dict):
                    raise ScenarioError(f"GET /v1/audit?after={after} on node-{node}: {reply.status} {reply.text[:200]}")
                page = reply.json.get("events", [])
                if not page:
                    return events
                events.extend(page)
                after = reply.json.get("next", page[-1]["seq"])
        finally:
            client.close()

    def metrics(self, i):
        reply = self.call(i, "GET", "/metrics")
        if reply.status != 200:
            return None
        return parse_prometheus(reply.text)


def parse_prometheus(text):
    """{(name, frozenset(labels.items())): value}"""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not match:
            continue
        labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        try:
            values[(match.group(1), frozenset(labels.items()))] = float(match.group(4))
        except ValueError:
            pass
    return values


def metric_sum(values, name, **labels):
    total = 0.0
    for (metric, label_set), value in (values or {}).items():
        if metric != name:
            continue
        as_dict = dict(label_set)
        if all(as_dict.get(k) == v for k, v in labels.items()):
            total += value
    return total


def metric_by(values, name, label):
    out = {}
    for (metric, label_set), value in (values or {}).items():
        if metric == name:
            key = dict(label_set).get(label)
            out[key] = out.get(key, 0.0) + value
    return out


# --- coordinator load in the background ----------------------------------------------------------


class Load:
    """`coordinator load` in the background, writing its acknowledgements to JSON."""

    def __init__(self, run, cluster, label, nodes=None, duration=10.0, rate=100, connections=8,
                 mix="admit=30,limits=20,breakers=20,tokens=15,audit=15", extra=None, failure_file=None):
        self.run = run
        self.cluster = cluster
        self.label = label
        self.nodes = list(nodes or range(1, cluster.nodes + 1))
        self.duration = duration
        self.rate = rate
        self.connections = connections
        self.mix = mix
        self.extra = list(extra or [])
        self.failure_file = failure_file
        self.output = run.artifact(f"acks-{label}.json")
        self.log = run.artifact(f"load-{label}.log")
        self.proc = None
        self.acks = []
        self.summary = {}
        self.rc = None
        run.loads.append(self)

    def start(self):
        args = [self.run.binary, "load", "--nodes", ",".join(self.cluster.urls(self.nodes)),
                "--admin-token", self.cluster.admin, "--duration", str(self.duration),
                "--rate", str(self.rate), "--connections", str(self.connections), "--mix", self.mix,
                "--output", str(self.output), "--progress-ms", "0", "--allow-errors"] + self.extra
        if self.failure_file:
            args += ["--failure-rate-file", str(self.failure_file)]
        stdbuf = shutil.which("stdbuf")
        if stdbuf:  # line-buffered stdout, so the start line shows when the clock starts
            args = [stdbuf, "-oL"] + args
        env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
        handle = open(self.log, "w")
        self.proc = CHILDREN.popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
        handle.close()
        self.started_ms = now_ms()
        self.run.event(f"load {self.label}: started (pid {self.proc.pid}) through node(s) "
                       f"{','.join(map(str, self.nodes))}: {self.duration} s at {self.rate} req/s, mix {self.mix} "
                       + " ".join(self.extra))
        return self

    def wait_started(self, timeout=30.0):
        """Until the load printed its start line (its clock starts right after)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                text = self.log.read_text()
            except OSError:
                text = ""
            if "coordinator load:" in text:
                self.clock_ms = now_ms()
                self.run.event(f"load {self.label}: running")
                return self
            if self.proc.poll() is not None:
                raise ScenarioError(f"load {self.label} exited ({self.proc.returncode}) before starting: {text.strip()[-400:]}")
            time.sleep(0.05)
        raise ScenarioError(f"load {self.label} did not start within {timeout:.0f} s: {self.log.read_text()[-400:]}")

    def finish(self, extra_timeout=30.0):
        """Waits for the load to end; reads its acknowledgements."""
        remaining = max(5.0, self.started_ms / 1000 + self.duration + extra_timeout - time.time())
        try:
            self.rc = self.proc.wait(remaining)
        except subprocess.TimeoutExpired:
            CHILDREN.stop(self.proc)
            raise ScenarioError(f"load {self.label} did not finish in time")
        if not self.output.exists():
            raise ScenarioError(f"load {self.label} wrote no acknowledgements (exit {self.rc}): {self.log.read_text()[-400:]}")
        document = json.loads(self.output.read_text())
        self.acks = document.get("acks", [])
        self.summary = document.get("summary", {})
        self.run.event(f"load {self.label}: exit {self.rc}, {len(self.acks)} requests, "
                       f"unexpected {self.summary.get('unexpected')}")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            CHILDREN.stop(self.proc)

    def unexpected(self, nodes=None, ops=None):
        """Unexpected answers, optionally only those of node indices (1-based) / operations."""
        wanted = None if nodes is None else {self.nodes.index(n) for n in nodes if n in self.nodes}
        return [a for a in self.acks if a.get("class") == "unexpected"
                and (wanted is None or a.get("node") in wanted) and (ops is None or a.get("op") in ops)]

    def node_of(self, ack):
        return self.nodes[ack["node"]]


def describe_unexpected(acks, limit=3):
    counts = {}
    for ack in acks:
        key = f"{ack.get('op')} {ack.get('status')}"
        counts[key] = counts.get(key, 0) + 1
    text = ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items()))
    samples = "; ".join(f"{a.get('op')} {a.get('status')} {str(a.get('error', ''))[:120]}" for a in acks[:limit])
    return f"{text} (e.g. {samples})" if acks else "none"


# --- pollers -------------------------------------------------------------------------------------


class Poller(threading.Thread):
    """GETs one path on one node every interval over a keep-alive connection; keeps (t_ms, status, json)."""

    def __init__(self, base, path, interval_ms, headers=None, timeout=1.0, label=""):
        super().__init__(daemon=True)
        self.client = Http(base, timeout)
        self.path = path
        self.interval_ms = interval_ms
        self.headers = headers
        self.samples = []
        self.halt = threading.Event()
        self.label = label

    def run(self):
        while not self.halt.is_set():
            started = now_ms()
            reply = self.client.call("GET", self.path, headers=self.headers)
            self.samples.append((now_ms(), reply.status, reply.json if reply.status else None))
            rest = self.interval_ms - (now_ms() - started)
            if rest > 0:
                self.halt.wait(rest / 1000.0)
        self.client.close()

    def stop(self):
        self.halt.set()
        self.join(5)


# --- Redis (RESP over a socket) ----------------------------------------------------------------------


def resp_command(*parts):
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


class RespReader:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buffer) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected RESP: {line[:50]!r}")


def redis_capture(port, channel, seconds, during=None):
    """SUBSCRIBE to channel for `seconds`; returns the payloads (bytes). `during()` runs once subscribed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    reader = RespReader(sock)
    sock.sendall(resp_command("SUBSCRIBE", channel))
    reader.read()  # subscribe confirmation
    if during:
        during()
    payloads = []
    deadline = time.time() + seconds
    sock.settimeout(0.2)
    while time.time() < deadline:
        try:
            message = reader.read()
        except socket.timeout:
            continue
        if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
            payloads.append(message[2])
    sock.close()
    return payloads


# --- reports -------------------------------------------------------------------------------------


def write_reports(report_dir, runs, meta):
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    passed = sum(1 for r in runs if r.status == "PASS")
    failed = sum(1 for r in runs if r.status == "FAIL")
    skipped = sum(1 for r in runs if r.status == "SKIP")
    document = dict(meta)
    document.update({"passed": passed, "failed": failed, "skipped": skipped, "runs": [r.as_dict() for r in runs]})
    (report_dir / "chaos-report.json").write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    lines = [f"# Chaos report — {meta.get('startedAt')}", "",
             f"Binary `{meta.get('binary')}` · {passed} passed, {failed} failed"
             + (f", {skipped} skipped" if skipped else "")
             + (f" · deliberate breaks (CHAOS_BREAK): {', '.join(meta.get('breaks'))}" if meta.get("breaks") else "")
             + (f" · threshold overrides: {meta.get('overrides')}" if meta.get("overrides") else ""), "",
             "| result | scenario | run | seconds | summary |", "|---|---|---|---|---|"]
    for r in runs:
        summary = r.line().split("  ", 1)[1] if "  " in r.line() else ""
        lines.append(f"| {r.status} | {r.scenario} | {r.iteration or 1} | {r.seconds or 0:.0f} | {summary.replace('|', '/')} |")
    for r in runs:
        lines += ["", f"## {r.status} {r.scenario}" + (f" (run {r.iteration})" if r.iteration else ""), ""]
        if r.error:
            lines += [f"Error: `{r.error}`", ""]
        if r.skip_reason:
            lines += [f"Skipped: {r.skip_reason}", ""]
        if r.checks:
            lines += ["| check | result | measured | goal |", "|---|---|---|---|"]
            for c in r.checks:
                lines.append(f"| {c.key} | {'ok' if c.ok else '**FAIL**'} | {c.text.replace('|', '/')}"
                             + (f" — {str(c.detail).replace('|', '/')}" if c.detail and not c.ok else "")
                             + f" | {'' if c.goal is None else c.goal} |")
        if r.infos:
            lines += [""] + [f"- info, {k}: {t}" for k, t in r.infos]
        if r.numbers:
            lines += ["", "Numbers: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in r.numbers.items())]
        if r.kept:
            lines += ["", f"Artifacts (logs, acknowledgements): `{r.kept}`"]
    (report_dir / "chaos-report.md").write_text("\n".join(lines) + "\n")
    return report_dir / "chaos-report.json", report_dir / "chaos-report.md"


class RedisPinger(threading.Thread):
    """PINGs Redis every interval over one connection: `gone_ms` is when it stopped answering (the
    connection closed or a PING went unanswered for `timeout_ms`), `last_ok_ms` the last answer before."""

    def __init__(self, port, interval_ms=2, timeout_ms=200):
        super().__init__(daemon=True)
        self.port = port
        self.interval_ms = interval_ms
        self.timeout_ms = timeout_ms
        self.last_ok_ms = None
        self.gone_ms = None
        self.halt = threading.Event()

    def run(self):
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.settimeout(self.timeout_ms / 1000)
            reader = RespReader(sock)
            while not self.halt.is_set():
                sock.sendall(resp_command("PING"))
                reader.read()
                self.last_ok_ms = now_ms()
                self.halt.wait(self.interval_ms / 1000)
        except Exception:  # noqa: BLE001 — any failure means Redis stopped answering
            if not self.halt.is_set():
                self.gone_ms = now_ms()

    def stop(self):
        self.halt.set()
        self.join(2)
