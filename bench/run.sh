#!/bin/bash
# bench/run.sh -- pgcdc's performance scenarios, each beside the reference:
# pg_recvlogical decoding the same workload with the same wal2json options
# into a pipe (read by "wsload --pipe", which timestamps every line).
#
#   bench/run.sh [throughput|fanout|latency|memory|backpressure|all]...
#   bench/run.sh [refcheck|single|kernel|instances|capacity]...
#
# all runs the first five.  The others: refcheck times the reference with
# the workload committing under synchronous_commit off and on; single is the 200,000-row transaction to
# one client against pg_recvlogical only; kernel compares pgcdc's fan-out
# to 100 clients with bench/fanout_ref.c (writev of ready-made frames);
# instances measures each walsender's CPU with 1, 2 and 4 pgcdc instances
# at a fixed change rate; capacity finds how many clients one instance
# serves with p99 latency under 10 ms.
#
# It starts its own throwaway PostgreSQL (tests/pg.sh, with more memory),
# builds pgcdc and wsload (make), runs
# the scenarios and prints one table at the end.  Everything it starts is
# stopped on exit.  Each step is bounded in time; "all" takes a few minutes.
#
# Environment: PGBIN (PostgreSQL binaries), PGCDC (use this binary instead of
# building ./pgcdc), BENCH_PGPORT (5453), BENCH_WSPORT (first pgcdc port,
# 18500), BENCH_KEEP=1 keeps the temp directory (logs, raw wsload output),
# BENCH_REPEAT (3), BENCH_BIG
# (200000 rows for refcheck, single, kernel), BENCH_INST_RATE (1000) and
# BENCH_INST_SECS (10) for instances, BENCH_CAP_RATE (200) and
# BENCH_CAP_CLIENTS ("250 500 1000 2000 4000 8000") for capacity.
#
# Definitions (t0 = clock_timestamp() just before the workload's COMMIT, or
# before its first transaction when it is many; all clocks are this host's):
#   changes/s      changes / (last frame at the last client - t0)
#   fan-out rate   frames delivered to all clients / (last frame - t0)
#   latency        per frame: receive time - the row's ts column, which the
#                  inserting statement set to clock_timestamp() (so it
#                  includes the commit itself)
#   RSS/conn       (VmRSS with N idle clients - VmRSS with none) / N
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${BENCH_PGPORT:-5453}
WSPORT=${BENCH_WSPORT:-18500}
NEXT_PORT=0

SCENARIOS=()
for a in "${@:-all}"; do
    case $a in
    all) SCENARIOS+=(throughput fanout latency memory backpressure) ;;
    throughput|fanout|latency|memory|backpressure|refcheck|single|kernel|instances|capacity)
        SCENARIOS+=("$a") ;;
    *) echo "usage: $0 [throughput|fanout|latency|memory|backpressure|refcheck|single|kernel|instances|capacity|all]..." >&2
       exit 2 ;;
    esac
done

DIR=$(mktemp -d /tmp/bench-XXXXXX)
STARTED=()          # pids to stop on exit
PG_UP=0
ROWS=()             # result table: scenario|metric|pgcdc|reference|ratio
NOTES=()

log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
    local p
    for p in "${STARTED[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    sleep 0.5
    for p in "${STARTED[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
    if [ "$PG_UP" = 1 ]; then
        pg_stop
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---- building ------------------------------------------------------------

WSLOAD=$ROOT/build/wsload
make -C "$ROOT" -s build/wsload >&2 || { log "wsload does not build"; exit 1; }
if [ -z "${PGCDC:-}" ]; then
    make -C "$ROOT" -s pgcdc >&2 || { log "pgcdc does not build"; exit 1; }
    PGCDC=$ROOT/pgcdc
fi

# ---- PostgreSQL ------------------------------------------------------------

# tests/pg.sh's cluster (logical decoding, fsync off), with more memory
cat >"$DIR/pg_extra.conf" <<EOF
max_connections = 50
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_sender_timeout = 120s
EOF
# shellcheck source=../tests/pg.sh
. "$ROOT/tests/pg.sh"
PG_BIN=$PGBIN PG_EXTRA_CONF=$DIR/pg_extra.conf pg_start "$PGPORT" || { log "PostgreSQL does not start"; exit 1; }
PG_UP=1
SOCK=$PGHOST

psqlq() {
    timeout 300 "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PGPORT" \
        -U postgres -d postgres "$@"
}
psqlq -c "CREATE TABLE bench_t (id bigserial PRIMARY KEY, ts bigint NOT NULL, payload text NOT NULL)" \
    || exit 1

# ---- small helpers ---------------------------------------------------------

# Value of key in the last line of file starting with word.
kv() { grep "^$2 " "$1" 2>/dev/null | tail -1 | tr ' ' '\n' | sed -n "s/^$3=//p"; }
num() { case $1 in *[0-9]*) case $1 in *[!0-9.-]*) return 1 ;; esac ;; *) return 1 ;; esac; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }
# $1 microseconds (maybe empty) as milliseconds
ms() { if num "$1"; then calc "$1 / 1000" 2; else echo "-"; fi; }
ratio() {
    set -- "${1%!}" "${2%!}"
    if ! num "$1" || ! num "$2"; then echo "-"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}
median() { printf '%s\n' "$@" | grep '[0-9]' | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'; }
row() { ROWS+=("$1|$2|$3|$4|${5:-$(ratio "$3" "$4")}"); }
note() { NOTES+=("$*"); log "note: $*"; }

# Waits up to $2 seconds for pid $1 to exit; then SIGTERM (wsload prints its
# results on SIGTERM) and, 5 s later, SIGKILL.
wait_pid() {
    local pid=$1 end=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        end=$((SECONDS + 5))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

wait_file() {
    local end=$((SECONDS + $2))
    while [ ! -s "$1" ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
    [ -s "$1" ]
}

http() { curl -s -m 3 "http://127.0.0.1:$PORT$1" 2>/dev/null; }
TCK=$(getconf CLK_TCK)
CPU=()              # CPU seconds used per run, printed after the table
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
sys_ticks() { awk '{ print $15 }' "/proc/$1/stat" 2>/dev/null; }   # kernel part
cpu_s() { local t; t=$(cpu_ticks "$1"); if num "$t"; then calc "$t / $TCK" 2; else echo "n/a (exited)"; fi; }
vm() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }   # kB

# ---- pgcdc -----------------------------------------------------------------

PGCDC_PID=
PORT=
PGCDC_DEAD=0
# start_pgcdc NAME [extra "[server]" lines...]
start_pgcdc() {
    local name=$1 cfg=$DIR/pgcdc-$1.config
    shift
    PORT=$((WSPORT + NEXT_PORT))
    NEXT_PORT=$((NEXT_PORT + 1))
    {
        echo "[postgres]"
        echo "conninfo = host=$SOCK port=$PGPORT user=postgres dbname=postgres"
        echo "slot = bench_$name"
        echo "[server]"
        echo "listen = 127.0.0.1:$PORT"
        echo "max_clients = 20000"
        # wsload opens hundreds of connections at once from 127.0.0.1; an
        # untrusted address may hold only 64 unfinished requests
        echo "trusted_proxies = 127.0.0.1"
        local l
        for l in "$@"; do echo "$l"; done
    } >"$cfg"
    (ulimit -n "$(ulimit -Hn)"; exec "$PGCDC" -c "$cfg") >"$DIR/pgcdc-$name.log" 2>&1 &
    PGCDC_PID=$!
    STARTED+=("$PGCDC_PID")
    PGCDC_DEAD=1
    local end=$((SECONDS + 30))
    while [ $SECONDS -lt $end ]; do
        if ! kill -0 "$PGCDC_PID" 2>/dev/null; then
            log "pgcdc exited at start:"; tail -5 "$DIR/pgcdc-$name.log" >&2
            return 1
        fi
        if http /health | grep -q '"replication":"streaming"'; then
            PGCDC_DEAD=0
            return 0
        fi
        sleep 0.1
    done
    log "pgcdc did not report streaming within 30 s"; tail -5 "$DIR/pgcdc-$name.log" >&2
    return 1
}

stop_pgcdc() {
    local name=$1
    [ "$PGCDC_DEAD" = 1 ] && return
    http /metrics >"$DIR/metrics-$name.txt"
    local slow
    slow=$(sed -n 's/^pgcdc_clients_dropped_total{reason="\([a-z]*\)"} \([0-9]*\).*/\1=\2/p' \
        "$DIR/metrics-$name.txt" | tr '\n' ' ')
    [ -n "$slow" ] && log "pgcdc $name: clients dropped: $slow"
    kill -TERM "$PGCDC_PID" 2>/dev/null
    wait_pid "$PGCDC_PID" 15
    local rc=$?
    [ "$rc" != 0 ] && note "pgcdc ($name) exited with status $rc after SIGTERM (expected 0)"
    grep -iE 'error|fatal|warn' "$DIR/pgcdc-$name.log" | head -5 | while read -r l; do
        log "pgcdc $name log: $l"
    done
    PGCDC_PID=
}

# ---- workloads: each prints t0 (epoch microseconds) -------------------------

NOW_US="(extract(epoch from clock_timestamp()) * 1e6)::bigint"

# Every workload commits with synchronous_commit on.  Logical decoding sends
# only flushed WAL: with it off, a COMMIT's record waits for the WAL writer
# (wal_writer_delay, 200 ms), so the time from the commit to the last change
# carried a random 0 to 200 ms that was not decoding at all -- a quarter of
# the 200,000-row transaction's time when it decodes in 0.8 s, and the reason
# pg_recvlogical read slower here than timed on its own.  The test cluster
# runs with fsync off, so a synchronous commit costs one write().
SYNC="-c synchronous_commit=on"

# One transaction of $1 rows; t0 just before COMMIT.
wl_bigtx() {
    PGOPTIONS="$SYNC" psqlq <<EOF
BEGIN;
INSERT INTO bench_t (ts, payload)
    SELECT $NOW_US, 'row ' || g FROM generate_series(1, $1) g;
SELECT $NOW_US;
COMMIT;
EOF
}

# $1 one-row transactions, committed back to back inside one procedure
# call (each COMMIT in a DO block ends a real transaction); t0 before the
# first.
wl_smalltx() {
    PGOPTIONS="$SYNC" psqlq <<EOF
SELECT $NOW_US;
DO \$\$ BEGIN
    FOR i IN 1..$1 LOOP
        INSERT INTO bench_t (ts, payload) VALUES ($NOW_US, 'row ' || i);
        COMMIT;
    END LOOP;
END \$\$;
EOF
}

# $1 rows in transactions of $2 rows; t0 before the first.
wl_batches() {
    PGOPTIONS="$SYNC" psqlq <<EOF
SELECT $NOW_US;
DO \$\$ BEGIN
    FOR b IN 1..($1 / $2) LOOP
        INSERT INTO bench_t (ts, payload)
            SELECT $NOW_US, 'row ' || g FROM generate_series(1, $2) g;
        COMMIT;
    END LOOP;
END \$\$;
EOF
}

# pgbench at $1 one-row transactions/s for $2 s, synchronous_commit on; t0 is
# its start; stdout is t0 only, pgbench's report goes to $DIR/pgbench.log.
wl_rate() {
    echo "INSERT INTO bench_t (ts, payload) VALUES ($NOW_US, 'latency');" >"$DIR/rate.sql"
    psqlq -c "SELECT $NOW_US"
    PGOPTIONS="-c synchronous_commit=on" timeout $(($2 + 30)) "$PGBIN/pgbench" -n \
        -h "$SOCK" -p "$PGPORT" -U postgres -c 4 -j 2 -R "$1" -T "$2" \
        -f "$DIR/rate.sql" postgres >"$DIR/pgbench-$RUN_NAME.log" 2>&1
}

# Runs workload "$@" (bounded), leaving t0 in T0.
T0=
RUN_NAME=
workload() {
    psqlq -c "CHECKPOINT" >/dev/null
    T0=$("$@" | tail -1)
    case $T0 in ''|*[!0-9]*) log "workload $1 failed"; T0=; return 1 ;; esac
}

# ---- runs ------------------------------------------------------------------

# ws_run NAME WORKLOAD-ARGS... -- WSLOAD-ARGS...: connects wsload to the running
# pgcdc, waits for its upgrades, runs the workload, waits for wsload (bounded
# by its -t/--max), output in $DIR/ws-NAME.out.
ws_run() {
    local name=$1 wl=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do wl+=("$1"); shift; done
    shift
    local out=$DIR/ws-$name.out
    T0=
    RUN_NAME=ws-$name
    [ "$PGCDC_DEAD" = 1 ] && return
    "$WSLOAD" -u "ws://127.0.0.1:$PORT/ws?query=insert:bench_t" --ready-file "$out.ready" \
        --max 400 "$@" >"$out" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    if ! wait_file "$out.ready" 120; then
        log "wsload $name: connections not ready in 120 s"
    fi
    log "$name: $(grep '^connected' "$out")"
    local c0 s0; c0=$(cpu_ticks "$PGCDC_PID"); c0=${c0:-0}; s0=$(sys_ticks "$PGCDC_PID"); s0=${s0:-0}
    workload "${wl[@]}"
    wait_pid "$pid" 420
    local c1 s1; c1=$(cpu_ticks "$PGCDC_PID"); c1=${c1:-0}; s1=$(sys_ticks "$PGCDC_PID"); s1=${s1:-0}
    log "$name: $(grep '^result' "$out" | cut -c1-200)"
    CPU+=("$name: pgcdc $(calc "($c1 - $c0) / $TCK" 2) s (kernel $(calc "($s1 - $s0) / $TCK" 2) s), wsload $(kv "$out" result cpu_s) s, $(kv "$out" result frames) frames, $(calc "0$(kv "$out" result bytes) / 1048576" 0) MiB")
}


# ref_run NAME WORKLOAD-ARGS... -- WSLOAD-ARGS...: the same through
# pg_recvlogical into "wsload --pipe"; output in $DIR/ref-NAME.out.
ref_run() {
    local name=$1 wl=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do wl+=("$1"); shift; done
    shift
    local out=$DIR/ref-$name.out fifo=$DIR/ref-$name.fifo slot=bench_ref_$name
    RUN_NAME=ref-$name
    mkfifo "$fifo"
    "$WSLOAD" --pipe --max 400 "$@" <"$fifo" >"$out" 2>&1 &
    local wpid=$!
    STARTED+=("$wpid")
    "$PGBIN/pg_recvlogical" -h "$SOCK" -p "$PGPORT" -U postgres -d postgres \
        --slot "$slot" --create-slot --start -P wal2json \
        -o format-version=2 -o include-lsn=1 -o include-transaction=1 -o include-xids=1 \
        -o include-timestamp=1 -f - >"$fifo" 2>"$DIR/ref-$name.err" &
    local rpid=$!
    STARTED+=("$rpid")
    local end=$((SECONDS + 30))
    until [ "$(psqlq -c "SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'")" = t ]; do
        if [ $SECONDS -ge $end ] || ! kill -0 "$rpid" 2>/dev/null; then
            log "pg_recvlogical did not start:"; cat "$DIR/ref-$name.err" >&2
            break
        fi
        sleep 0.1
    done
    workload "${wl[@]}"
    wait_pid "$wpid" 420
    CPU+=("ref-$name: pg_recvlogical $(cpu_s "$rpid") s, wsload --pipe $(kv "$out" result cpu_s) s, $(kv "$out" result frames) lines, $(calc "0$(kv "$out" result bytes) / 1048576" 0) MiB")
    kill -INT "$rpid" 2>/dev/null
    wait_pid "$rpid" 10
    end=$((SECONDS + 10))
    while [ "$(psqlq -c "SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'")" = t ] \
        && [ $SECONDS -lt $end ]; do sleep 0.1; done
    psqlq -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null 2>&1
    log "ref $name: $(grep '^result' "$out" | cut -c1-200)"
}

# Microseconds from t0 to a run's $2 (first_us or last_us) in output file
# $1; nothing when there is no t0 or the run got no frame.
us_after_t0() {
    local t
    t=$(kv "$1" result "$2")
    if num "$t" && [ "$t" != 0 ] && [ -n "$T0" ]; then echo $((t - T0)); fi
}

# changes/s of a run: $1 output file, $2 changes expected per connection.
# Marks the value with "!" when a connection got fewer.
rate_of() {
    local f=$1 n=$2 d mn
    d=$(us_after_t0 "$f" last_us)
    mn=$(kv "$f" result min)
    if [ -z "$d" ]; then echo "-"; return; fi
    local v
    v=$(calc "$n / ($d / 1e6)" 0)
    if [ "${mn:-0}" -lt "$n" ]; then
        note "$(basename "$f"): a connection got only ${mn:-0} of $n changes"
        v="$v!"
    fi
    echo "$v"
}

# Milliseconds from t0 to the first frame.
first_ms() {
    local d
    d=$(us_after_t0 "$1" first_us)
    if [ -n "$d" ]; then calc "$d / 1000" 1; else echo "-"; fi
}

# Seconds from t0 to the last frame.
secs_of() {
    local d
    d=$(us_after_t0 "$1" last_us)
    if [ -n "$d" ]; then calc "$d / 1e6" 3; else echo "-"; fi
}

# ---- scenarios ---------------------------------------------------------------

# The machine is shared (other jobs come and go), so every timed scenario
# runs BENCH_REPEAT times (default 3), pgcdc and the reference alternating,
# and the table shows the medians; the notes list every run.
REPEAT=${BENCH_REPEAT:-3}

scenario_throughput() {
    local big=200000 small=20000 i c w n
    local -A got=()
    for i in $(seq 1 "$REPEAT"); do
        ref_run "tp_big_$i" wl_bigtx $big -- -n $big -t 60
        got[ref_big]+="$(rate_of "$DIR/ref-tp_big_$i.out" $big) "
        ref_run "tp_small_$i" wl_smalltx $small -- -n $small -t 60
        got[ref_small]+="$(rate_of "$DIR/ref-tp_small_$i.out" $small) "
        start_pgcdc "throughput_$i" "max_queue = 1073741824" || note "throughput: pgcdc did not start"
        for c in 1 100; do
            for w in big small; do
                if [ $w = big ]; then n=$big; else n=$small; fi
                ws_run "tp_${w}_${c}_$i" "wl_${w}tx" $n -- -c $c -n $n -t 60
                got[${w}_$c]+="$(rate_of "$DIR/ws-tp_${w}_${c}_$i.out" $n) "
            done
        done
        stop_pgcdc "throughput_$i"
    done
    for c in 1 100; do
        # shellcheck disable=SC2086
        row throughput "$big-row tx -> $c client(s), changes/s" \
            "$(median ${got[big_$c]})" "$(median ${got[ref_big]})"
        # shellcheck disable=SC2086
        row throughput "$small 1-row tx -> $c client(s), changes/s" \
            "$(median ${got[small_$c]})" "$(median ${got[ref_small]})"
    done
    note "throughput changes/s per run: ${big}-row tx: 1 client ${got[big_1]}; 100 clients ${got[big_100]}; reference ${got[ref_big]}"
    note "throughput changes/s per run: ${small} 1-row tx: 1 client ${got[small_1]}; 100 clients ${got[small_100]}; reference ${got[ref_small]}"
}

scenario_fanout() {
    local n=20000 c=1000 i f total last
    local fps=() secs=() rfps=() rsecs=() frames=()
    for i in $(seq 1 "$REPEAT"); do
        ref_run "fanout_$i" wl_bigtx $n -- -n $n -t 60
        rfps+=("$(rate_of "$DIR/ref-fanout_$i.out" $n)")
        rsecs+=("$(secs_of "$DIR/ref-fanout_$i.out")")
        start_pgcdc "fanout_$i" "max_queue = 1073741824" || note "fanout: pgcdc did not start"
        ws_run "fanout_$i" wl_bigtx $n -- -c $c -n $n -t 60
        f="$DIR/ws-fanout_$i.out"
        total=$(kv "$f" result frames)
        last=$(kv "$f" result last_us)
        frames+=("${total:-0}")
        if num "$last" && [ "$last" != 0 ] && [ -n "$T0" ]; then
            fps+=("$(calc "$total / (($last - $T0) / 1e6)" 0)")
        else
            fps+=(-)
        fi
        secs+=("$(secs_of "$f")")
        [ "$(kv "$f" result min)" != "$n" ] && note "fanout run $i: min frames per client $(kv "$f" result min) of $n; $(grep '^connected' "$f")"
        stop_pgcdc "fanout_$i"
    done
    row fanout "$n-row tx -> $c clients, frames/s (all clients; ref: changes/s)" \
        "$(median "${fps[@]}")" "$(median "${rfps[@]}")"
    row fanout "$n-row tx -> $c clients, s from commit to last frame" \
        "$(median "${secs[@]}")" "$(median "${rsecs[@]}")"
    note "fanout per run: frames/s ${fps[*]} (frames ${frames[*]}); s to last frame ${secs[*]}; reference changes/s ${rfps[*]}, s ${rsecs[*]}"
}

scenario_latency() {
    local rate=1000 dur=10 i k c
    for i in $(seq 1 "$REPEAT"); do
        ref_run "latency_$i" wl_rate $rate $dur -- --latency -t 4 --trace "$DIR/trace-ref-latency_$i.txt"
        start_pgcdc "latency_$i" || note "latency: pgcdc did not start"
        for c in 1 100; do
            ws_run "latency_${c}_$i" wl_rate $rate $dur -- -c $c --latency -t 4 \
                --trace "$DIR/trace-latency_${c}_$i.txt"
        done
        stop_pgcdc "latency_$i"
    done
    for c in 1 100; do
        for k in p50 p99 max; do
            local mine=() ref=()
            for i in $(seq 1 "$REPEAT"); do
                mine+=("$(kv "$DIR/ws-latency_${c}_$i.out" latency "${k}_us")")
                ref+=("$(kv "$DIR/ref-latency_$i.out" latency "${k}_us")")
            done
            row latency "$rate tx/s for ${dur}s -> $c client(s), $k ms" \
                "$(ms "$(median "${mine[@]}")")" "$(ms "$(median "${ref[@]}")")"
            note "latency $c client(s) $k us per run: pgcdc ${mine[*]}; pg_recvlogical ${ref[*]}"
        done
    done
    local f="$DIR/ws-latency_100_1.out"
    note "latency: pgcdc measured on every frame of every connection ($(kv "$f" latency samples) frames for 100 clients in run 1); transactions per run: $(cat "$DIR"/pgbench-ws-latency_100_*.log 2>/dev/null | sed -n 's/.*actually processed: //p' | tr '\n' ' ')"
}

scenario_memory() {
    local n=10000
    if ! start_pgcdc memory "history = 0"; then
        note "memory: pgcdc did not start"
        row memory "RSS per idle connection, bytes" "-" "-" "-"
        return
    fi
    sleep 1
    local rss0 rss1 hwm
    rss0=$(vm "$PGCDC_PID" VmRSS)
    local out=$DIR/ws-memory.out
    "$WSLOAD" -u "ws://127.0.0.1:$PORT/ws?query=insert:bench_t" -c $n --idle 60 \
        --ready-file "$out.ready" --max 200 >"$out" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    wait_file "$out.ready" 120 || log "memory: clients not ready in 120 s"
    log "memory: $(grep '^connected' "$out")"
    sleep 2
    local clients
    clients=$(http /health | sed -n 's/.*"clients":\([0-9]*\).*/\1/p')
    rss1=$(vm "$PGCDC_PID" VmRSS)
    hwm=$(vm "$PGCDC_PID" VmHWM)
    kill -TERM "$pid" 2>/dev/null
    wait_pid "$pid" 20
    local ok
    ok=$(kv "$out" connected ok)
    stop_pgcdc memory
    if [ -n "$rss0" ] && [ -n "$rss1" ] && [ "${ok:-0}" -gt 0 ]; then
        row memory "RSS per idle connection, bytes ($ok clients)" \
            "$(calc "($rss1 - $rss0) * 1024 / $ok" 0)" "-" "-"
        row memory "VmRSS kB: idle with 0 / with $ok clients" "$rss0 / $rss1" "-" "-"
    else
        row memory "RSS per idle connection, bytes" "-" "-" "-"
    fi
    [ "${ok:-0}" != $n ] && note "memory: only ${ok:-0} of $n clients connected: $(grep '^connected' "$out")"
    note "memory: /health reported clients=$clients at the measurement; VmHWM ${hwm} kB"
}

# Wakes the stalled client (pid $1) $3 seconds after pgcdc counts a
# slow-consumer drop (0: at once, while pgcdc still waits to write the close
# frame); leaves the time of the drop in file $2.
wake_on_drop() {
    local end=$((SECONDS + 120))
    while [ $SECONDS -lt $end ] && kill -0 "$1" 2>/dev/null; do
        if http /metrics | grep -q '^pgcdc_clients_dropped_total{reason="slow"} [1-9]'; then
            date +%s.%N >"$2"
            sleep "$3"
            kill -USR1 "$1"
            return
        fi
        sleep 0.1
    done
}

# Runs "without" and "with" a stalled client, alternating.  In the first
# "with" run the stalled client reads again as soon as pgcdc drops it; in
# later ones 8 s after the drop (a consumer stuck for longer than pgcdc's
# close timeout).
scenario_backpressure() {
    local rows=200000 batch=1000 c=100 reps=$REPEAT i with
    local without=() withs=() hwm0=() hwm1=() code_prompt='' code_late=''
    for i in $(seq 1 "$reps"); do
        for with in 0 1; do
            local name=bp_${with}_$i spid='' wpid='' sout=$DIR/ws-bp_${with}_$i-slow.out
            start_pgcdc "$name" || note "backpressure: pgcdc did not start"
            if [ $with = 1 ] && [ "$PGCDC_DEAD" = 0 ]; then
                "$WSLOAD" -u "ws://127.0.0.1:$PORT/ws?query=insert:bench_t" -c 1 \
                    --stop-reading-after 10 --stall 300 -t 20 --max 400 \
                    --ready-file "$sout.ready" >"$sout" 2>&1 &
                spid=$!
                STARTED+=("$spid")
                wait_file "$sout.ready" 30 || log "backpressure: stalled client not ready"
                wake_on_drop "$spid" "$DIR/$name.dropped" "$([ "$i" = 1 ] && echo 0 || echo 8)" &
                wpid=$!
                STARTED+=("$wpid")
            fi
            ws_run "$name" wl_batches $rows $batch -- -c $c -n $rows -t 30
            local r h
            r=$(rate_of "$DIR/ws-$name.out" $rows)
            h=$(vm "$PGCDC_PID" VmHWM)
            if [ $with = 0 ]; then
                without+=("$r"); hwm0+=("$h")
            else
                withs+=("$r"); hwm1+=("$h")
            fi
            if [ -n "$spid" ]; then
                wait_pid "$wpid" 30
                kill -USR1 "$spid" 2>/dev/null
                wait_pid "$spid" 60
                log "stalled client ($name): $(grep '^slow' "$sout")"
                local code; code=$(kv "$sout" slow close_code)
                if [ "$i" = 1 ]; then code_prompt=$code; else code_late=$code; fi
                note "backpressure $name: stalled client: $(grep '^slow' "$sout"); $([ -s "$DIR/$name.dropped" ] && echo "woken $([ "$i" = 1 ] && echo 0 || echo 8) s after /metrics showed the drop" || echo "no drop seen in /metrics")"
            fi
            stop_pgcdc "$name"
        done
    done
    row backpressure "$c clients' changes/s, median: with 1 stalled client (ref: without)" \
        "$(median "${withs[@]}")" "$(median "${without[@]}")"
    row backpressure "pgcdc VmHWM kB, median: with stalled client (ref: without)" \
        "$(median "${hwm1[@]}")" "$(median "${hwm0[@]}")"
    row backpressure "close code, stalled client reads again at the drop" "${code_prompt:--}" "1013 expected" "-"
    [ "$reps" -gt 1 ] && row backpressure "close code, stalled client reads again 8 s after the drop" \
        "${code_late:--}" "-" "-"
    note "backpressure changes/s per run: without ${without[*]}; with ${withs[*]}; close code -1 = TCP closed without a close frame"
}

# The reference itself: pg_recvlogical on the 200,000-row transaction, the
# workload committing with synchronous_commit off and then on, and the time
# from the commit to the first change.  Decoding sends only flushed WAL:
# with it off the commit record waits for the WAL writer (wal_writer_delay,
# 200 ms) before anything is decoded, and that wait is not decoding.
scenario_refcheck() {
    local big=${BENCH_BIG:-200000} i sc
    local -A got=() first=()
    for i in $(seq 1 "$REPEAT"); do
        for sc in off on; do
            SYNC="-c synchronous_commit=$sc" ref_run "rc_${sc}_$i" wl_bigtx $big -- -n $big -t 60
            got[$sc]+="$(rate_of "$DIR/ref-rc_${sc}_$i.out" $big) "
            first[$sc]+="$(first_ms "$DIR/ref-rc_${sc}_$i.out") "
        done
    done
    # shellcheck disable=SC2086
    row refcheck "$big-row tx, pg_recvlogical changes/s: synchronous_commit off (ref: on)" \
        "$(median ${got[off]})" "$(median ${got[on]})"
    # shellcheck disable=SC2086
    row refcheck "ms from the commit to the first change: off (ref: on)" \
        "$(median ${first[off]})" "$(median ${first[on]})"
    note "refcheck changes/s per run: synchronous_commit off ${got[off]}; on ${got[on]}"
    note "refcheck ms from the commit to the first change per run: off ${first[off]}; on ${first[on]}"
}

# One client against pg_recvlogical on the 200,000-row transaction only,
# alternating, each run on a fresh pgcdc (use BENCH_REPEAT=7 or more).
scenario_single() {
    local big=${BENCH_BIG:-200000} i
    local -A got=()
    for i in $(seq 1 "$REPEAT"); do
        ref_run "single_$i" wl_bigtx $big -- -n $big -t 60
        got[ref]+="$(rate_of "$DIR/ref-single_$i.out" $big) "
        start_pgcdc "single_$i" "max_queue = 1073741824" || note "single: pgcdc did not start"
        ws_run "single_$i" wl_bigtx $big -- -c 1 -n $big -t 60
        got[pgcdc]+="$(rate_of "$DIR/ws-single_$i.out" $big) "
        stop_pgcdc "single_$i"
    done
    # shellcheck disable=SC2086
    row single "$big-row tx -> 1 client, changes/s (median of $REPEAT)" \
        "$(median ${got[pgcdc]})" "$(median ${got[ref]})"
    note "single changes/s per run: pgcdc ${got[pgcdc]}; pg_recvlogical ${got[ref]}"
}

# Fan-out against the kernel's own limit: bench/fanout_ref.c writes the same
# kind of ready-made frames to 100 sockets with writev (no database), and
# pgcdc delivers the 200,000-row transaction to 100 clients; both read by
# wsload, frames/s from the first byte sent (fanout_ref) or the commit
# (pgcdc) to the last frame at the last client.
scenario_kernel() {
    local n=${BENCH_BIG:-200000} c=100 i out ref fps=() rfps=() rcpu=() pcpu=()
    local ptot=() rtot=() wcpu=()
    local FREF=$DIR/fanout_ref
    ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -pedantic -Werror \
        -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -O2 \
        -o "$FREF" "$ROOT/bench/fanout_ref.c" || { note "fanout_ref does not build"; return; }
    for i in $(seq 1 "$REPEAT"); do
        local fport=$((WSPORT + 900 + i))
        ref=$DIR/fref-$i.out
        "$FREF" -p "$fport" -c $c -n $n --ready-file "$ref.ready" >"$ref" 2>&1 &
        local fpid=$!
        STARTED+=("$fpid")
        wait_file "$ref.ready" 60 || log "fanout_ref not listening"
        out=$DIR/ws-fref-$i.out
        "$WSLOAD" -u "ws://127.0.0.1:$fport/ws" -c $c -n $n -t 30 --max 300 >"$out" 2>&1
        wait_pid "$fpid" 30
        local t0 last tot
        t0=$(sed -n 's/^t0_us=//p' "$ref")
        last=$(kv "$out" result last_us)
        tot=$(kv "$out" result frames)
        if num "$t0" && num "$last" && [ "$last" != 0 ]; then
            rfps+=("$(calc "$tot / (($last - $t0) / 1e6)" 0)")
        else
            rfps+=(-)
        fi
        rcpu+=("$(grep '^sent' "$ref" | tr ' ' '\n' | sed -n 's/^cpu_\(user\|sys\)_s=//p' | paste -sd/)")
        rtot+=("$(echo "${rcpu[-1]}" | awk -F/ 'NF == 2 { printf "%.2f", $1 + $2 }')")
        [ "$(kv "$out" result min)" != "$n" ] && note "kernel run $i: fanout_ref clients got min $(kv "$out" result min) of $n"
        start_pgcdc "kernel_$i" "max_queue = 1073741824" || note "kernel: pgcdc did not start"
        local c0 s0 c1 s1 wpid w0 w1
        # the walsender decoding for this pgcdc, on the same two cores
        wpid=$(psqlq -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'bench_kernel_$i'")
        c0=$(cpu_ticks "$PGCDC_PID"); s0=$(sys_ticks "$PGCDC_PID"); w0=$(cpu_ticks "$wpid")
        ws_run "kernel_$i" wl_bigtx $n -- -c $c -n $n -t 60
        c1=$(cpu_ticks "$PGCDC_PID"); s1=$(sys_ticks "$PGCDC_PID"); w1=$(cpu_ticks "$wpid")
        ptot+=("$(calc "(${c1:-0} - ${c0:-0}) / $TCK" 2)")
        if num "$w0" && num "$w1"; then wcpu+=("$(calc "($w1 - $w0) / $TCK" 2)"); else wcpu+=(-); fi
        out=$DIR/ws-kernel_$i.out
        last=$(kv "$out" result last_us)
        tot=$(kv "$out" result frames)
        if num "$last" && [ "$last" != 0 ] && [ -n "$T0" ]; then
            fps+=("$(calc "$tot / (($last - $T0) / 1e6)" 0)")
        else
            fps+=(-)
        fi
        pcpu+=("$(calc "(${c1:-0} - ${s1:-0} - ${c0:-0} + ${s0:-0}) / $TCK" 2)/$(calc "(${s1:-0} - ${s0:-0}) / $TCK" 2)")
        stop_pgcdc "kernel_$i"
    done
    row kernel "$n frames -> $c clients, frames/s: pgcdc (ref: writev sender)" \
        "$(median "${fps[@]}")" "$(median "${rfps[@]}")"
    row kernel "CPU s (user + sys) for those frames, lower is better: pgcdc (ref: writev sender)" \
        "$(median "${ptot[@]}")" "$(median "${rtot[@]}")"
    row kernel "CPU s of the walsender decoding for pgcdc on the same cores" "$(median "${wcpu[@]}")" "-" "-"
    note "kernel frames/s per run: pgcdc ${fps[*]}; fanout_ref ${rfps[*]}"
    note "kernel CPU s user/sys per run: pgcdc ${pcpu[*]}; fanout_ref ${rcpu[*]}; walsender (user + sys) ${wcpu[*]}"
}

# What each extra instance costs PostgreSQL: N = 1, 2, 4 pgcdc instances
# (each its own temporary slot and one client) while pgbench inserts one row
# per transaction at a fixed rate; CPU of each instance's walsender (from
# /proc/<pid>/stat, utime + stime) over the run.
scenario_instances() {
    local rate=${BENCH_INST_RATE:-1000} dur=${BENCH_INST_SECS:-10} n k
    for n in 1 2 4; do
        local pids=() ports=() wpids=() wals=() w0=() p0=() per=() pper=() wsout=()
        for k in $(seq 1 $n); do
            start_pgcdc "inst_${n}_$k" || note "instances: pgcdc $k of $n did not start"
            pids+=("$PGCDC_PID")
            ports+=("$PORT")
        done
        for k in $(seq 0 $((n - 1))); do
            local wp o
            wp=$(psqlq -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'bench_inst_${n}_$((k + 1))'")
            wals+=("$wp")
            o=$DIR/ws-inst_${n}_$k.out
            wsout+=("$o")
            "$WSLOAD" -u "ws://127.0.0.1:${ports[$k]}/ws?query=insert:bench_t" -c 1 -t 4 --max 120 \
                --ready-file "$o.ready" >"$o" 2>&1 &
            wpids+=("$!")
            STARTED+=("$!")
            wait_file "$o.ready" 30 || log "instances: client $k not ready"
        done
        sleep 1
        for k in $(seq 0 $((n - 1))); do
            w0+=("$(cpu_ticks "${wals[$k]}")")
            p0+=("$(cpu_ticks "${pids[$k]}")")
        done
        RUN_NAME=inst_$n
        local t0s
        t0s=$(date +%s.%N)
        workload wl_rate "$rate" "$dur"
        local secs
        secs=$(calc "$(date +%s.%N) - $t0s" 2)
        for k in $(seq 0 $((n - 1))); do
            local w1 p1
            w1=$(cpu_ticks "${wals[$k]}")
            p1=$(cpu_ticks "${pids[$k]}")
            per+=("$(calc "100 * (${w1:-0} - ${w0[$k]:-0}) / $TCK / $secs" 1)")
            pper+=("$(calc "100 * (${p1:-0} - ${p0[$k]:-0}) / $TCK / $secs" 1)")
        done
        for k in $(seq 0 $((n - 1))); do
            wait_pid "${wpids[$k]}" 30
        done
        local total ptotal got
        total=$(printf '%s\n' "${per[@]}" | awk '{ s += $1 } END { printf "%.1f", s }')
        ptotal=$(printf '%s\n' "${pper[@]}" | awk '{ s += $1 } END { printf "%.1f", s }')
        got=$(for o in "${wsout[@]}"; do kv "$o" result frames; done | tr '\n' ' ')
        row instances "$n instance(s) at $rate changes/s: walsender CPU % each (ref: all)" \
            "$(printf '%s\n' "${per[@]}" | paste -sd/)" "$total" "-"
        note "instances $n: walsender CPU % ${per[*]} (pids ${wals[*]}), pgcdc CPU % ${pper[*]} (total $ptotal), frames per client: $got, over ${secs}s; $(sed -n 's/.*actually processed: //p' "$DIR/pgbench-inst_$n.log") transactions"
        for k in $(seq 0 $((n - 1))); do
            PGCDC_PID=${pids[$k]}
            PORT=${ports[$k]}
            PGCDC_DEAD=0
            stop_pgcdc "inst_${n}_$((k + 1))"
        done
    done
}

# Clients one instance serves with p99 latency under 10 ms: --latency on
# every connection at BENCH_CAP_RATE (200) changes/s for 8 s, for growing
# client counts, until p99 reaches 10 ms.
scenario_capacity() {
    local rate=${BENCH_CAP_RATE:-200} c best=0 seen=()
    start_pgcdc capacity || { note "capacity: pgcdc did not start"; return; }
    for c in ${BENCH_CAP_CLIENTS:-250 500 1000 2000 4000 8000}; do
        ws_run "cap_$c" wl_rate "$rate" 8 -- -c "$c" --latency -t 4 -r 2000
        local p99 p50 got
        p99=$(kv "$DIR/ws-cap_$c.out" latency p99_us)
        p50=$(kv "$DIR/ws-cap_$c.out" latency p50_us)
        got=$(kv "$DIR/ws-cap_$c.out" connected ok)
        seen+=("$c:p50=$(ms "$p50"),p99=$(ms "$p99")ms(ok=$got)")
        if num "$p99" && [ "${p99%.*}" -lt 10000 ] && [ "${got:-0}" = "$c" ]; then
            best=$c
        else
            break
        fi
    done
    stop_pgcdc capacity
    row capacity "clients at p99 < 10 ms, $rate changes/s (largest tried)" "$best" "-" "-"
    note "capacity per client count: ${seen[*]}"
}

log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') in $DIR, pgcdc $("$PGCDC" -V 2>&1)"
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
TIMES=()            # wall time per scenario
for s in "${SCENARIOS[@]}"; do
    t=$SECONDS
    log "=== $s"
    "scenario_$s"
    TIMES+=("$s $((SECONDS - t)) s")
    log "=== $s took $((SECONDS - t)) s"
done

# ---- the table -------------------------------------------------------------

echo
{
    echo "scenario|metric|pgcdc|pg_recvlogical|ratio"
    printf '%s\n' "${ROWS[@]}"
} | column -t -s '|'
echo
echo "reference = pg_recvlogical (wal2json format-version 2, same options) into a pipe,"
echo "lines timestamped by wsload --pipe; for memory/backpressure the reference column"
echo "is as the metric says.  '!' marks a run where a client missed changes."
for n in "${NOTES[@]}"; do echo "note: $n"; done
for n in "${CPU[@]}"; do echo "cpu: $n"; done
echo "run: $0 ${*:-all} (BENCH_REPEAT=$REPEAT), started $STARTED_AT"
for n in "${TIMES[@]}"; do echo "wall time: $n"; done
