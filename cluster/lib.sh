# shellcheck shell=bash
# lib.sh — helpers shared by cluster/testenv, cluster/up, cluster/status, cluster/down and
# cluster/fault. Sourced, never run. The caller sets PROG (prefix of messages), DIR (the environment's
# directory, once known) and may preset PG_BIN, REDIS_SERVER, REDIS_CLI and TIMEOUT.
#
# Conventions: every server listens on 127.0.0.1 only; processes are only ever signalled by a pid
# recorded under DIR and checked against its command line (pid_matches), never by name; PostgreSQL
# binaries run as `postgres` when we are root (as_pg).

: "${PG_BIN:=/usr/lib/postgresql/15/bin}"
: "${REDIS_SERVER:=redis-server}"
: "${REDIS_CLI:=redis-cli}"
: "${TIMEOUT:=30}" # seconds, per wait
: "${PROG:=cluster}"

die() { echo "$PROG: $*" >&2; exit 1; }
# usage: the script's leading comment block (after the shebang) on stderr; exit 2.
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; exit 2; }
log() { echo "$PROG: $*" >&2; }

# --- processes, ports, time ---------------------------------------------------

# Run a PostgreSQL binary: as `postgres` when we are root (PostgreSQL refuses
# to run as root), as the caller otherwise.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

abspath() {
    local d=$1
    mkdir -p -- "$d"
    (cd -- "$d" && pwd -P)
}

port_in_use() {
    ss -ltnH 2>/dev/null | awk '{print $4}' | grep -Eq "[:.]$1\$"
}

# pick_port sets PORT (not echoed: TAKEN_PORTS must survive, no subshell).
declare -a TAKEN_PORTS=()
PORT=""
# A free port outside the kernel's ephemeral range (ip_local_port_range), so no outgoing connection
# takes it between the pick and the bind.
pick_port() {
    local p i low=32768 high=60999 first last
    read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    if (( low - 10000 >= 2000 )); then first=10000 last=$(( low - 1 )); else first=$(( high + 1 )) last=65535; fi
    (( last - first >= 1000 )) || { first=20000 last=60000; }
    for i in $(seq 1 200); do
        p=$(( first + (RANDOM * 32768 + RANDOM) % (last - first + 1) ))
        [[ " ${TAKEN_PORTS[*]-} " == *" $p "* ]] && continue
        port_in_use "$p" && continue
        TAKEN_PORTS+=("$p")
        PORT=$p
        return 0
    done
    die "could not find a free port in $first-$last"
}

# record KEY VALUE into DIR/state, sourced later (last value wins); also sets KEY here.
record() {
    printf '%s=%q\n' "$1" "$2" >>"$DIR/state"
    printf -v "$1" '%s' "$2"
}

# The value of the variable named $1 ("" if unset): `var PG_${i}_PORT`.
var() { local v=$1; printf '%s' "${!v:-}"; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }
elapsed_ms() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%d", (b-a)*1000}'; }
stamp() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# Is PID alive and does its command line contain NEEDLE? (guards pid reuse)
pid_matches() {
    local pid=$1 needle=$2
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    [[ $(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null) != Z ]] || return 1
    tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$needle"
}

wait_pid_gone() { # PID [SECONDS]
    local pid=$1 i
    for i in $(seq 1 $(( ${2:-$TIMEOUT} * 10 ))); do
        [[ -e /proc/$pid ]] || return 0
        # A zombie child of ours doesn't count as running.
        [[ $(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
    return 1
}

# --- failure of `up` ----------------------------------------------------------

# The caller sets KEEP_VAR (name of the env variable that keeps a failed environment), DOWN_HINT
# and defines teardown_partial; then: trap on_up_failure EXIT.
COMPONENT=""
COMPONENT_LOG=""
on_up_failure() {
    local rc=$?
    trap - ERR EXIT
    if [[ $rc -ne 0 ]]; then
        log "up FAILED (exit $rc) while starting: ${COMPONENT:-setup}"
        if [[ -n $COMPONENT_LOG && -f $COMPONENT_LOG ]]; then
            echo "----- tail of $COMPONENT_LOG -----" >&2
            tail -n 40 "$COMPONENT_LOG" >&2 || true
            echo "-----" >&2
        fi
        if [[ ${!KEEP_VAR:-0} == 1 ]]; then
            log "kept $DIR ($KEEP_VAR=1); run: $DOWN_HINT"
        elif [[ -n ${DIR:-} && -f $DIR/$MARKER ]]; then
            log "tearing down partial environment"
            teardown_partial || true
        fi
    fi
    exit "$rc"
}

# --- redis --------------------------------------------------------------------

# start_redis [PORT]: redis-server on 127.0.0.1:PORT (default: a free port, picked again if another
# process takes it first) with "${REDIS_ARGS[@]}", files in DIR/redis, log DIR/logs/redis.log;
# records and sets REDIS_PORT and REDIS_PID.
declare -a REDIS_ARGS=()
start_redis() {
    local fixed=${1:-}
    COMPONENT=redis
    COMPONENT_LOG=$DIR/logs/redis.log
    command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found"
    mkdir -p "$DIR/redis"
    local attempt port pid i
    for attempt in 1 2 3 4 5; do
        if [[ -n $fixed ]]; then port=$fixed; else pick_port; port=$PORT; fi
        rm -f "$DIR/redis/redis.pid"
        record REDIS_PORT "$port"
        "$REDIS_SERVER" --daemonize yes --pidfile "$DIR/redis/redis.pid" \
            --bind 127.0.0.1 --port "$port" --dir "$DIR/redis" \
            --logfile "$COMPONENT_LOG" --protected-mode yes "${REDIS_ARGS[@]}" >/dev/null
        for i in $(seq 1 $(( TIMEOUT * 20 ))); do
            pid=$(cat "$DIR/redis/redis.pid" 2>/dev/null || true)
            if [[ -n $pid ]]; then
                [[ $pid == "${REDIS_PID:-}" ]] || record REDIS_PID "$pid"
                if redis_ping "$port"; then
                    return 0
                fi
                # daemonized child died (e.g. port raced away): retry.
                [[ -e /proc/$pid ]] || break
            fi
            # Port taken between pick and bind: redis logs this and exits.
            grep -q "Failed listening on port $port " "$COMPONENT_LOG" 2>/dev/null && break
            sleep 0.05
        done
        if [[ -n $fixed ]] || ! grep -q "Failed listening on port $port " "$COMPONENT_LOG" 2>/dev/null; then
            return 1 # not a port race: a real failure
        fi
        log "redis did not start on port $port (attempt $attempt), retrying"
    done
    return 1
}

redis_ping() { # PORT (bounded: a SIGSTOPped redis must not hang us)
    timeout 2 "$REDIS_CLI" -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG
}

# Is the recorded redis (PID) ours and alive: a redis-server listening on PORT?
redis_is_ours() { # PORT PID
    local port=${1:-} pid=${2:-}
    [[ -n $pid ]] || return 1
    pid_matches "$pid" "redis-server" || return 1
    [[ -z $port ]] || pid_matches "$pid" ":$port"
}

stop_redis() { # PORT PID
    local port=${1:-} pid=${2:-}
    [[ -n $pid ]] || pid=$(cat "$DIR/redis/redis.pid" 2>/dev/null || true)
    redis_is_ours "$port" "$pid" || return 0
    kill -CONT "$pid" 2>/dev/null || true # a paused redis would never handle SIGTERM
    kill -TERM "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" || { kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" || true; }
}

# --- postgres -----------------------------------------------------------------

# pg_setup_root LOGS: sets PGDIR, where PostgreSQL's files go: DIR, unless user postgres can't reach
# DIR (root with a DIR under e.g. /root) or the socket path would pass the ~107-byte unix socket limit;
# then a fresh /tmp dir recorded as PG_ROOT (with MARKER, removed by down). Creates and records
# PG_SOCK=PGDIR/pg-sock (the unix socket directory, outside every data directory: a base backup
# would copy a lock file found there) and PG_LOGS=PGDIR/LOGS, both writable by postgres.
pg_setup_root() {
    [[ -x $PG_BIN/initdb ]] || die "$PG_BIN/initdb not found (PostgreSQL 15 server binaries)"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
        chmod 0755 "$DIR" # e.g. from `mktemp -d` (0700): postgres must traverse it
    fi
    PGDIR=$DIR
    local probe="$DIR/pg-sock/.s.PGSQL.65535.lock" why=""
    if (( ${#probe} > 100 )); then
        why="too long a path for unix sockets"
    elif [[ $EUID -eq 0 ]] && ! runuser -u postgres -- test -x "$DIR"; then
        why="not reachable by user postgres"
    fi
    if [[ -n $why ]]; then
        PGDIR=$(mktemp -d /tmp/coordinator-pg.XXXXXX)
        chmod 0755 "$PGDIR"
        touch "$PGDIR/$MARKER"
        record PG_ROOT "$PGDIR"
        log "DIR is $why: PostgreSQL files go to $PGDIR (removed by down)"
    fi
    record PG_SOCK "$PGDIR/pg-sock"
    record PG_LOGS "$PGDIR/$1"
    mkdir -p "$PG_SOCK" "$PG_LOGS"
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$PG_SOCK" "$PG_LOGS"
        runuser -u postgres -- test -w "$PG_SOCK" \
            || die "user 'postgres' cannot write $PG_SOCK"
    fi
}

pg_make_datadir() { # DATADIR...
    if [[ $EUID -eq 0 ]]; then
        install -d -o postgres -g postgres -m 700 "$@"
    else
        install -d -m 700 "$@"
    fi
}

pg_initdb() { # DATADIR LOG
    as_pg "$PG_BIN/initdb" -D "$1" --data-checksums -A trust -U postgres \
        --no-sync --encoding=UTF8 --locale=C.UTF-8 >"$2" 2>&1
}

# Server-specific settings go on the command line (-o "-c …"): pg_basebackup and pg_rewind copy the
# configuration files from their source.
pg_ctl_start() { # DATADIR LOG PORT NAME [EXTRA_OPTIONS]
    as_pg touch "$2" # postgres owns the log; we append pg_ctl's stderr to it too
    as_pg "$PG_BIN/pg_ctl" -D "$1" -l "$2" -w -t "$TIMEOUT" \
        -o "-c port=$3 -c cluster_name=$4 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_SOCK ${5:-}" \
        start >/dev/null 2>>"$2"
}

pg_port_conflict() { # LOG
    grep -q 'could not bind\|Address already in use\|could not create lock file' "$1" 2>/dev/null
}

# pg_start_free_port KEY DATADIR LOG NAME [EXTRA_OPTIONS]: start on a free port (picked again if another
# process takes it first), wait until it accepts connections; records KEY_PORT and KEY_PID.
pg_start_free_port() {
    local key=$1 data=$2 logfile=$3 name=$4 extra=${5:-} attempt
    for attempt in 1 2 3 4 5; do
        pick_port
        record "${key}_PORT" "$PORT"
        if pg_ctl_start "$data" "$logfile" "$PORT" "$name" "$extra"; then
            record "${key}_PID" "$(head -n1 "$data/postmaster.pid")"
            wait_pg_ready "$PORT"
            return 0
        fi
        pg_port_conflict "$logfile" || return 1
        log "postgres $name could not bind port $PORT (attempt $attempt), retrying"
    done
    return 1
}

wait_pg_ready() { # PORT
    local i
    for i in $(seq 1 $(( TIMEOUT * 10 ))); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres && return 0
        sleep 0.1
    done
    log "postgres on port $1 not ready after ${TIMEOUT}s"
    return 1
}

# The connection string replicas use to reach the server on PORT: TCP keepalives and a short connect
# timeout, so a replica notices a lost primary and reconnects within about a second.
pg_conninfo() { # PORT
    echo "host=127.0.0.1 port=$1 user=postgres connect_timeout=2 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2"
}

# pg_base_backup DATADIR PRIMARY_PORT SLOT LOG: a standby's data directory (standby.signal and
# primary_conninfo written by -R), with a new physical replication slot SLOT on the primary.
pg_base_backup() {
    as_pg "$PG_BIN/pg_basebackup" -d "$(pg_conninfo "$2")" -D "$1" -R -X stream -c fast \
        -C -S "$3" --no-sync >"$4" 2>&1
}

psql_at() { # PORT SQL: one value per line, unaligned; bounded connect
    PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

# wait_streaming PRIMARY_PORT NAME...: until every NAME (application_name) streams from the primary.
wait_streaming() {
    local port=$1 i states want
    shift
    local list; list=$(printf "'%s'," "$@"); list=${list%,}
    for i in $(seq 1 $(( TIMEOUT * 10 ))); do
        states=$(psql_at "$port" "SELECT application_name || '=' || state FROM pg_stat_replication WHERE application_name IN ($list) ORDER BY 1" 2>/dev/null || true)
        want=$(printf '%s=streaming\n' "$@" | sort)
        [[ $(sort <<<"$states") == "$want" ]] && return 0
        sleep 0.1
    done
    log "not streaming after ${TIMEOUT}s: $* (pg_stat_replication: '${states//$'\n'/ }')"
    return 1
}

stop_pg() { # DATADIR RECORDED_PID
    local data=$1 pid=${2:-}
    if [[ -f $data/postmaster.pid ]]; then
        local live; live=$(head -n1 "$data/postmaster.pid" 2>/dev/null || true)
        [[ -n $live ]] && pid=$live
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t "$TIMEOUT" stop >/dev/null 2>&1 || true
    fi
    if [[ -n $pid ]] && pid_matches "$pid" "$data"; then
        log "postgres $pid ($data) still running after pg_ctl stop; sending SIGQUIT"
        kill -QUIT "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" || { kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" || true; }
    fi
}

# --- cluster state (cluster/up, status, down, fault) ---------------------------

CLUSTER_MARKER=.coordinator-cluster
# Redis of a cluster: append-only file (a restarted Redis keeps the shared state), no RDB snapshots.
# shellcheck disable=SC2034 # used by up and fault
CLUSTER_REDIS_ARGS=(--appendonly yes --save '')

# load_state DIR: sets DIR (absolute) and sources DIR/state. Dies unless DIR holds a cluster.
load_state() {
    [[ -d $1 && -f $1/$CLUSTER_MARKER ]] || die "no cluster in $1 (run: cluster/up --dir $1)"
    DIR=$(cd -- "$1" && pwd -P)
    # shellcheck disable=SC1091
    [[ -f $DIR/state ]] && . "$DIR/state"
    : "${NODES:=0}" "${REPLICAS:=0}"
}

node_data() { echo "$DIR/nodes/$1/data"; }
node_log() { echo "$DIR/logs/node-$1.log"; }
# A node moved into its own network namespace (cluster/fault netns-node) listens on its end of the
# veth pair; every other node on loopback.
node_addr() { local a; a=$(var "NODE_$1_ADDR"); echo "${a:-127.0.0.1}"; }
node_url() { echo "http://$(node_addr "$1"):$(var "NODE_$1_PORT")"; }

# Is node I's recorded process alive (and still the node of this DIR)?
node_running() { pid_matches "$(var "NODE_$1_PID")" "$(node_data "$1")"; }

# PostgreSQL server I: 0 is the original primary, 1..REPLICAS the original replicas.
pg_name() { echo "pg-$1"; }
pg_log() { echo "$PG_LOGS/pg-$1.log"; }
# The address nodes use for server $1 (the fault proxy's, when `up --proxy` started one).
pg_host() { echo "${2:-127.0.0.1}:$(var "PG_$1_${PROXY_CONTROL_PORT:+PROXY_}PORT")"; } # I [ADDRESS]
# Its own settings: name (= application_name as a standby) and slot, on the command line.
pg_extra() { echo "-c primary_slot_name=pg_$1"; }
# The cgroup (v1 freezer) that `cluster/fault freeze S` puts server S's process tree in.
FREEZER_ROOT=${CLUSTER_FREEZER_ROOT:-/sys/fs/cgroup/freezer}
freezer_dir() { echo "$FREEZER_ROOT/coordinator-$CLUSTER_NAME-pg-$1"; }

# Thaws server S if frozen, moves its processes back to the root cgroup and removes the cgroup.
thaw_server() { # S
    local dir p; dir=$(freezer_dir "$1")
    [[ -d $dir ]] || return 1
    echo THAWED >"$dir/freezer.state"
    # Move the postmaster first, then whatever it forked meanwhile; repeat until the cgroup is empty.
    local attempt
    local procs
    for (( attempt = 0; attempt < 50; attempt++ )); do
        procs=$(cat "$dir/cgroup.procs" 2>/dev/null || true) # (cgroupfs files have size 0: read them)
        [[ -n $procs ]] || break
        for p in $procs; do echo "$p" >"$FREEZER_ROOT/cgroup.procs" 2>/dev/null || true; done
        sleep 0.02
    done
    rmdir "$dir" 2>/dev/null || log "warning: could not remove $dir"
}

pg_live_pid() { # I: the running postmaster's pid, or nothing
    local data; data=$(var "PG_$1_DATA")
    local pid; pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null || true)
    pid_matches "$pid" "$data" && echo "$pid"
}

postgres_url() { # [ADDRESS]: the servers' address as the node sees it (default 127.0.0.1)
    local hosts="" i
    for (( i = 0; i <= REPLICAS; i++ )); do hosts+="${hosts:+,}$(pg_host "$i" "${1:-}")"; done
    echo "postgresql://postgres@$hosts/coordinator"
}
redis_url() { echo "redis://${1:-127.0.0.1}:${PROXY_REDIS_PORT:-$REDIS_PORT}/0"; } # [ADDRESS]
# The TCP ports the nodes connect to: Redis and every PostgreSQL server (the proxy's, with --proxy).
server_ports() {
    local ports=${PROXY_REDIS_PORT:-$REDIS_PORT} i
    for (( i = 0; i <= REPLICAS; i++ )); do ports+=",$(var "PG_${i}_${PROXY_CONTROL_PORT:+PROXY_}PORT")"; done
    echo "$ports"
}

# cluster/faketime-fix.c as $DIR/faketime-fix.so (preloaded ahead of libfaketime: monotonic waits
# stay real). Built once per cluster directory, with cc, else the Swift toolchain's clang.
faketime_fix_build() {
    local out=$DIR/faketime-fix.so compiler
    [[ -s $out ]] && return 0
    compiler=$(command -v cc || command -v gcc || command -v clang || true)
    [[ -n $compiler ]] || { log "no C compiler (cc, gcc or clang) to build $HERE/faketime-fix.c"; return 1; }
    "$compiler" -O2 -shared -fPIC -o "$out.tmp" "$HERE/faketime-fix.c" -ldl >>"$DIR/logs/faketime-fix.log" 2>&1 \
        || { log "could not build $HERE/faketime-fix.c (see $DIR/logs/faketime-fix.log)"; return 1; }
    mv -f "$out.tmp" "$out"
}

# node_start I: start node I in the background (same command line every time), record its pid.
# COORDINATOR_* variables of the caller's environment are cleared: they would override the node's
# config file (e.g. the admin token), differently from one shell to the next.
node_start() {
    local i=$1 logfile v clear=() fake=() netns=() spec wrapper child candidate binary n gateway; logfile=$(node_log "$i")
    for v in $(compgen -e); do [[ $v != COORDINATOR_* ]] || clear+=(-u "$v"); done
    spec=$(var "NODE_${i}_FAKETIME")
    # Wall clock only: machines' clocks skew, their monotonic clocks do not (and a faked monotonic
    # clock makes the kernel's absolute-deadline waits hang).
    if [[ -n $spec ]]; then
        faketime_fix_build || return 1
        fake=(FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD="$DIR/faketime-fix.so" faketime -f "$spec")
    fi
    # In its own network namespace, the node reaches the servers at the host end of its veth pair.
    gateway=$(var "NODE_${i}_GATEWAY")
    [[ -z $(var "NODE_${i}_NETNS") ]] || netns=(ip netns exec "$(var "NODE_${i}_NETNS")")
    echo "=== $(stamp) $PROG: starting node-$i on $(node_addr "$i"):$(var "NODE_${i}_PORT")${spec:+ under faketime '$spec'}${gateway:+ in network namespace $(var "NODE_${i}_NETNS")}" >>"$logfile"
    env "${clear[@]}" "${fake[@]}" "${netns[@]}" "$BIN" serve --host "$(node_addr "$i")" --port "$(var "NODE_${i}_PORT")" --data-dir "$(node_data "$i")" \
        --node-id "node-$i" --redis-url "$(redis_url "$gateway")" --cluster-name "$CLUSTER_NAME" \
        --cluster-secret "$CLUSTER_SECRET" --postgres-url "$(postgres_url "$gateway")" \
        --config "$DIR/nodes/$i/config.json" </dev/null >>"$logfile" 2>&1 &
    if [[ -z $spec ]]; then
        record "NODE_${i}_PID" "$!"
        return
    fi
    # `faketime` runs the node as its child and does not pass signals on: record the node's own pid —
    # the child that is running the node's binary (faketime may start other short-lived children first).
    wrapper=$! binary=$(readlink -f -- "$BIN")
    child=""
    for (( n = 0; n < 250; n++ )); do
        for candidate in $(pgrep -P "$wrapper" || true); do
            [[ $(readlink -- "/proc/$candidate/exe" 2>/dev/null) == "$binary" ]] && { child=$candidate; break; }
        done
        [[ -z $child ]] || break
        sleep 0.02
    done
    [[ -n $child ]] || log "node-$i: no child of faketime (pid $wrapper) runs $binary after 5 s; recording faketime's pid"
    record "NODE_${i}_PID" "${child:-$wrapper}"
}

# exit_status_of PID: sets EXIT_STATUS to " with status N" / " on signal NAME" for a child of this
# shell that ended (and reaps it), to nothing for anything else. Not in a subshell: only the parent
# can wait.
exit_status_of() {
    local rc=0
    EXIT_STATUS=""
    [[ -n ${1:-} ]] || return 0
    wait "$1" 2>/dev/null || rc=$?
    if (( rc == 127 )); then return 0  # not a child of this shell
    elif (( rc > 128 && rc < 128 + 65 )); then EXIT_STATUS=" on signal SIG$(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 )))"
    else EXIT_STATUS=" with status $rc"; fi
}

# node_wait_ready I [SECONDS]: until GET /readyz answers 200; fails at once if the process exits.
node_wait_ready() {
    local i=$1 url; url="$(node_url "$i")/readyz"
    for _ in $(seq 1 $(( ${2:-$TIMEOUT} * 10 ))); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) == 200 ]] && return 0
        if ! node_running "$i"; then
            exit_status_of "$(var "NODE_${i}_PID")"
            log "node-$i (pid $(var "NODE_${i}_PID")) exited$EXIT_STATUS"
            return 1
        fi
        sleep 0.1
    done
    log "node-$i not ready after ${2:-$TIMEOUT}s ($url)"
    return 1
}

# node_stop I [SECONDS]: SIGTERM (the node drains), SIGKILL after SECONDS. Quiet if not running.
node_signal() { node_running "$1" && kill "-$2" "$(var "NODE_$1_PID")" 2>/dev/null || true; }
node_wait_stopped() { # I SECONDS
    local pid; pid=$(var "NODE_$1_PID")
    node_running "$1" || return 0
    wait_pid_gone "$pid" "$2" && return 0
    log "node-$1 (pid $pid) still running ${2}s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 5 || true
}

# The role of server I per pg_is_in_recovery(): primary, replica or down.
pg_role() {
    local r; r=$(psql_at "$(var "PG_$1_PORT")" "SELECT pg_is_in_recovery()" 2>/dev/null || true)
    case $r in t) echo replica ;; f) echo primary ;; *) echo down ;; esac
}

# Server index of HOST:PORT, or nothing.
pg_index_of() {
    local i
    for (( i = 0; i <= REPLICAS; i++ )); do [[ $(pg_host "$i") == "$1" ]] && { echo "$i"; return 0; }; done
    return 1
}

# GET /v1/cluster of node I (empty when it does not answer within 2 s).
node_cluster_json() {
    curl -fsS --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN" "$(node_url "$1")/v1/cluster" 2>/dev/null || true
}

# current_primary: sets PRIMARY to the index of the server that is primary now, and PRIMARY_WHY.
# pg_is_in_recovery() on every recorded server; if several claim the role (split brain), the one the
# nodes' /v1/cluster agree on. Fails if there is none (or no agreement).
# shellcheck disable=SC2034 # PRIMARY and PRIMARY_WHY are the results
current_primary() {
    local i claims=() seen
    PRIMARY=""
    for (( i = 0; i <= REPLICAS; i++ )); do [[ $(pg_role "$i") == primary ]] && claims+=("$i"); done
    if [[ ${#claims[@]} -eq 1 ]]; then
        PRIMARY=${claims[0]}
        PRIMARY_WHY="the only server with pg_is_in_recovery() = false"
        return 0
    fi
    [[ ${#claims[@]} -gt 0 ]] || return 1
    seen=$(for (( i = 1; i <= NODES; i++ )); do node_cluster_json "$i" | jq -r '.postgres.primary // empty' 2>/dev/null; done | sort -u)
    if [[ -n $seen && $(wc -l <<<"$seen") -eq 1 ]] && PRIMARY=$(pg_index_of "$seen"); then
        PRIMARY_WHY="split brain (servers ${claims[*]} accept writes): the primary the nodes route to"
        return 0
    fi
    PRIMARY=""
    return 1
}

# DIR/cluster.json: endpoints, pids and paths for tools (jq); rewritten when a pid changes. Mode 0600:
# it holds the admin token and the cluster secret.
# --- network namespaces (cluster/fault netns-node, partition-node, heal-node) ---------------------
#
# A node moved into its own namespace gets a veth pair: NODE_I_GATEWAY (host end) and NODE_I_ADDR
# (its end) in a free 10.254.x.y/30. The servers stay on loopback: on the host end, packets to the
# gateway's server ports are DNATed to 127.0.0.1 and SNATed to 127.0.0.1 (route_localnet on that
# interface only), so Redis and PostgreSQL see a loopback client. Every rule carries the comment
# netns_tag; nothing else on the host is touched.

# Unique per cluster directory and node (two clusters may share a name).
netns_id() { printf '%s' "$DIR/$1" | sha256sum | cut -c1-9; }
netns_tag() { echo "coordinator-$CLUSTER_NAME-$(netns_id "$1")-node-$1"; }
netns_veth() { echo "cv$(netns_id "$1")"; } # + h (host) / n (node): ≤ 15 chars

netns_require() {
    command -v ip >/dev/null || die "network namespaces need iproute2 (apt-get install iproute2)"
    command -v iptables >/dev/null || die "network namespaces need iptables (apt-get install iptables)"
    [[ $(id -u) == 0 ]] || die "network namespaces need root"
}

# A /30 of 10.254.0.0/16 with no address or route on this host: sets NETNS_NET (its first address).
netns_pick_subnet() {
    local a b n addresses
    addresses=$(ip -o -4 addr show)
    for (( n = 0; n < 200; n++ )); do
        a=$(( RANDOM % 256 )) b=$(( RANDOM % 64 * 4 ))
        [[ $addresses =~ \ 10\.254\.$a\.($b|$(( b + 1 ))|$(( b + 2 ))|$(( b + 3 )))/ ]] && continue
        [[ -z $(ip -4 route show match "10.254.$a.$(( b + 1 ))" | grep -v '^default' || true) ]] || continue
        NETNS_NET="10.254.$a.$b"
        return 0
    done
    die "no free /30 in 10.254.0.0/16"
}

# netns_create I: the namespace, the veth pair, the NAT to loopback; records NODE_I_NETNS/ADDR/GATEWAY.
netns_create() {
    local i=$1 ns veth tag prefix gateway address
    netns_require
    ns=$(netns_tag "$i") veth=$(netns_veth "$i") tag=$(netns_tag "$i")
    netns_delete "$i"
    netns_pick_subnet
    prefix=${NETNS_NET%.*} gateway="$prefix.$(( ${NETNS_NET##*.} + 1 ))" address="$prefix.$(( ${NETNS_NET##*.} + 2 ))"
    # Recorded first: `down` removes whatever part of it exists, even after a failure half-way.
    record "NODE_${i}_NETNS" "$ns"
    ip netns add "$ns" || die "ip netns add $ns failed (network namespaces not available here?)"
    ip link add "${veth}h" type veth peer name "${veth}n" netns "$ns" || die "cannot create the veth pair ${veth}h/${veth}n"
    ip addr add "$gateway/30" dev "${veth}h"
    ip link set "${veth}h" up
    ip -n "$ns" addr add "$address/30" dev "${veth}n"
    ip -n "$ns" link set "${veth}n" up
    ip -n "$ns" link set lo up
    sysctl -qw "net.ipv4.conf.${veth}h.route_localnet=1" || die "cannot set route_localnet on ${veth}h"
    iptables -w -t nat -A PREROUTING -i "${veth}h" -d "$gateway" -p tcp -m multiport --dports "$(server_ports)" \
        -m comment --comment "$tag" -j DNAT --to-destination 127.0.0.1 || die "iptables DNAT failed (is the nat table available?)"
    iptables -w -t nat -A INPUT -i "${veth}h" -s "$address" -p tcp -m comment --comment "$tag" -j SNAT --to-source 127.0.0.1 \
        || die "iptables SNAT failed"
    record "NODE_${i}_GATEWAY" "$gateway"
    record "NODE_${i}_ADDR" "$address"
}

# netns_delete I: removes node I's namespace (its veth pair goes with it) and its NAT rules. Idempotent.
netns_delete() {
    local i=$1 tag rule chain parts
    tag=$(netns_tag "$i")
    if command -v iptables >/dev/null; then
        for chain in PREROUTING INPUT; do
            while rule=$(iptables -w -t nat -S "$chain" 2>/dev/null | grep -F -- "--comment $tag " | head -n1) && [[ -n $rule ]]; do
                read -ra parts <<<"${rule/#-A /-D }"
                iptables -w -t nat "${parts[@]}" || break
            done
        done
    fi
    [[ ! -e /run/netns/$tag ]] || ip netns delete "$tag" || true
    ip link delete "$(netns_veth "$i")h" >/dev/null 2>&1 || true
}

# netns_cut I / netns_heal I: DROP (both ways) between node I's namespace and the servers' ports,
# with iptables inside the namespace; heal flushes the namespace's own filter table.
netns_cut() {
    local ns gateway; ns=$(var "NODE_$1_NETNS") gateway=$(var "NODE_$1_GATEWAY")
    ip netns exec "$ns" iptables -w -A OUTPUT -d "$gateway" -p tcp -m multiport --dports "$(server_ports)" -j DROP
    ip netns exec "$ns" iptables -w -A INPUT -s "$gateway" -p tcp -m multiport --sports "$(server_ports)" -j DROP
}
netns_heal() { ip netns exec "$(var "NODE_$1_NETNS")" iptables -w -F; }

write_cluster_json() {
    local i
    {
        for (( i = 1; i <= NODES; i++ )); do
            jq -nc --arg id "node-$i" --arg url "$(node_url "$i")" --arg port "$(var "NODE_${i}_PORT")" \
                --arg pid "$(var "NODE_${i}_PID")" --arg data "$(node_data "$i")" --arg log "$(node_log "$i")" \
                --arg config "$DIR/nodes/$i/config.json" \
                '{kind: "node", id: $id, url: $url, port: ($port | tonumber), pid: ($pid | tonumber? // null),
                  dataDir: $data, config: $config, log: $log}'
        done
        for (( i = 0; i <= REPLICAS; i++ )); do
            jq -nc --argjson index "$i" --arg name "$(pg_name "$i")" --arg host "$(pg_host "$i")" \
                --arg port "$(var "PG_${i}_PORT")" --arg pid "$(var "PG_${i}_PID")" \
                --arg data "$(var "PG_${i}_DATA")" --arg log "$(pg_log "$i")" \
                '{kind: "postgres", index: $index, name: $name, host: $host, port: ($port | tonumber),
                  pid: ($pid | tonumber? // null), dataDir: $data, log: $log}'
        done
        jq -nc --arg url "$(redis_url)" --arg port "$REDIS_PORT" --arg pid "${REDIS_PID:-}" \
            --arg log "$DIR/logs/redis.log" \
            '{kind: "redis", url: $url, port: ($port | tonumber), pid: ($pid | tonumber? // null), log: $log}'
    } | (umask 077 && jq -s --arg name "$CLUSTER_NAME" --arg dir "$DIR" --arg token "$ADMIN_TOKEN" \
        --arg secret "$CLUSTER_SECRET" --arg pg "$(postgres_url)" --arg bin "$BIN" \
        '{name: $name, dir: $dir, binary: $bin, adminToken: $token, clusterSecret: $secret, postgresUrl: $pg,
          nodes: [.[] | select(.kind == "node") | del(.kind)],
          postgres: [.[] | select(.kind == "postgres") | del(.kind)],
          redis: (.[] | select(.kind == "redis") | del(.kind))}' >"$DIR/cluster.json.tmp")
    mv -f "$DIR/cluster.json.tmp" "$DIR/cluster.json"
}
