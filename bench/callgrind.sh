#!/bin/bash
# bench/callgrind.sh -- pgcdc's cost per change in instructions, counted by
# valgrind's callgrind rather than timed, so the figure is the same on a busy
# machine and can be compared between two builds.
#
#   bench/callgrind.sh                      1 client, 20000 rows
#   CG_CLIENTS=100 CG_ROWS=5000 bench/callgrind.sh
#
# It starts its own throwaway PostgreSQL (tests/pg.sh, under /tmp/cg-*),
# builds pgcdc (make) and bench/wsload, runs pgcdc under callgrind with the
# default history, connects CG_CLIENTS wsload clients subscribed to
# insert:cg_t, zeroes the counters (callgrind_control -z), inserts CG_ROWS
# rows in one transaction, waits until every client has every row, dumps the
# counters (callgrind_control -d) and stops pgcdc with SIGTERM.  So the
# window holds the decoding, fan-out and writing of the workload and
# nothing of start-up, the upgrades or shutdown.  Instructions in the
# kernel are not counted; libpq's and libc's are.
#
# Output, plain lines: the measured window's instructions (Ir), Ir per
# change, Ir per frame (changes x clients), the commands used, and the
# functions with the highest self cost (callgrind_annotate --inclusive=no).
#
# pgcdc's config differs from the defaults only where a timer or a limit
# could change what the window holds: ping_interval = 0 (no pings to
# count), max_queue = 1 GiB (no client dropped while valgrind is slow),
# max_clients = CG_CLIENTS + 100, and trusted_proxies = 127.0.0.1 (the
# clients all connect at once from there; an untrusted address may hold
# only 64 unfinished requests).
#
# Environment: CG_CLIENTS (1), CG_ROWS (20000), CG_TOP (12 functions),
# CG_PGPORT (5493), CG_MAX (seconds for the whole run, 280), PGCDC (measure
# this binary instead of building ./pgcdc), CG_KEEP=1 keeps the temp
# directory (callgrind files, logs).  Everything it starts is stopped on exit.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CG_CLIENTS:-1}
ROWS=${CG_ROWS:-20000}
TOP=${CG_TOP:-12}
PGPORT_WANT=${CG_PGPORT:-5493}
DEADLINE=$((SECONDS + ${CG_MAX:-280}))
TABLE=cg_t

for v in "$CLIENTS" "$ROWS" "$TOP"; do
    case $v in ''|*[!0-9]*|0) echo "CG_CLIENTS, CG_ROWS and CG_TOP must be positive integers" >&2; exit 2 ;; esac
done
for t in valgrind callgrind_control callgrind_annotate curl; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/cg-XXXXXX) || exit 1
chmod 755 "$DIR"       # the cluster below it runs as user postgres
PGCDC_PID=
WS_PID=

log() { echo "[$(date +%T)] $*" >&2; }

# Seconds left of the run's budget, at most $1.
budget() {
    local left=$((DEADLINE - SECONDS))
    [ "$left" -gt "$1" ] && left=$1
    [ "$left" -lt 1 ] && left=1
    echo "$left"
}

# Waits for pid $1 to exit for at most $2 seconds; returns 1 if it has not.
wait_gone() {
    local end=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
    return 0
}

stop_pid() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    wait_gone "$1" 10 || kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

cleanup() {
    stop_pid "$WS_PID"
    stop_pid "$PGCDC_PID"
    pg_stop
    if [ "${CG_KEEP:-0}" = 1 ]; then
        echo "kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# shellcheck disable=SC1091
. "$ROOT/tests/pg.sh"

# ---- building ------------------------------------------------------------

WSLOAD=$DIR/wsload
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -pedantic \
    -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -O2 \
    -o "$WSLOAD" "$ROOT/bench/wsload.c" || { log "wsload does not build"; exit 1; }
if [ -z "${PGCDC:-}" ]; then
    make -C "$ROOT" -s pgcdc >&2 || { log "pgcdc does not build"; exit 1; }
    PGCDC=$ROOT/pgcdc
fi

# ---- PostgreSQL ------------------------------------------------------------

TMPDIR=$DIR pg_start "$PGPORT_WANT" || { log "PostgreSQL did not start"; exit 1; }
psqlq() {
    timeout "$(budget 120)" "$(pg__bindir)/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"
}
psqlq -c "CREATE TABLE $TABLE (id bigserial PRIMARY KEY, ts bigint NOT NULL, payload text NOT NULL)" \
    || exit 1

# ---- pgcdc under callgrind ---------------------------------------------------

PORT=$(pg__free_port)
CFG=$DIR/pgcdc.config
cat >"$CFG" <<EOF
[postgres]
conninfo = host=$PGHOST port=$PGPORT user=postgres dbname=postgres
slot = cg_bench
[server]
listen = 127.0.0.1:$PORT
max_clients = $((CLIENTS + 100))
trusted_proxies = 127.0.0.1
max_queue = 1073741824
ping_interval = 0
EOF
OUT=$DIR/callgrind.out
VG=(valgrind --tool=callgrind --callgrind-out-file="$OUT" "$PGCDC" -c "$CFG")
(ulimit -n "$(ulimit -Hn)"; exec "${VG[@]}") >"$DIR/pgcdc.log" 2>&1 &
PGCDC_PID=$!

http() { curl -s -m 5 "http://127.0.0.1:$PORT$1" 2>/dev/null; }

end=$((SECONDS + $(budget 60)))
until http /health | grep -q '"replication":"streaming"'; do
    if ! kill -0 "$PGCDC_PID" 2>/dev/null || [ $SECONDS -ge $end ]; then
        log "pgcdc did not report streaming:"; tail -5 "$DIR/pgcdc.log" >&2
        exit 1
    fi
    sleep 0.5
done
log "pgcdc streaming under callgrind (pid $PGCDC_PID, port $PORT)"

# ---- clients ---------------------------------------------------------------

WS=("$WSLOAD" -u "ws://127.0.0.1:$PORT/ws?query=insert:$TABLE" -c "$CLIENTS" -n "$ROWS"
    -t 60 --max "$(budget 240)" --ready-file "$DIR/ws.ready")
"${WS[@]}" >"$DIR/ws.out" 2>&1 &
WS_PID=$!
end=$((SECONDS + $(budget 60)))
while [ ! -s "$DIR/ws.ready" ]; do
    if ! kill -0 "$WS_PID" 2>/dev/null || [ $SECONDS -ge $end ]; then
        log "wsload clients not ready:"; cat "$DIR/ws.out" >&2
        exit 1
    fi
    sleep 0.2
done
# Until pgcdc itself counts every client, some upgrade may still be in
# flight; the health request's own connection must be closed, too, before
# the counters are zeroed, hence the pause.
end=$((SECONDS + $(budget 30)))
until http /health | grep -q "\"clients\":${CLIENTS}[,}]"; do
    if [ $SECONDS -ge $end ]; then
        log "pgcdc does not count $CLIENTS clients: $(http /health)"; exit 1
    fi
    sleep 0.5
done
sleep 1
log "$(grep '^connected' "$DIR/ws.out")"

# ---- the measured window -----------------------------------------------------

callgrind_control -z "$PGCDC_PID" >"$DIR/zero.log" 2>&1 || { cat "$DIR/zero.log" >&2; exit 1; }
t0=$(date +%s.%N)
PGOPTIONS="-c synchronous_commit=on" psqlq <<EOF || exit 1
BEGIN;
INSERT INTO $TABLE (ts, payload)
    SELECT (extract(epoch from clock_timestamp()) * 1e6)::bigint, 'row ' || g
    FROM generate_series(1, $ROWS) g;
COMMIT;
EOF
wait_gone "$WS_PID" "$(budget 240)" || log "wsload still running at the time limit"
wait "$WS_PID" 2>/dev/null
WS_PID=
window=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
callgrind_control -d "$PGCDC_PID" >"$DIR/dump.log" 2>&1 || { cat "$DIR/dump.log" >&2; exit 1; }

kill -TERM "$PGCDC_PID" 2>/dev/null
wait_gone "$PGCDC_PID" "$(budget 60)" || log "pgcdc did not exit within 60 s of SIGTERM"
stop_pid "$PGCDC_PID"
PGCDC_PID=

result=$(grep '^result' "$DIR/ws.out")
min=$(echo "$result" | tr ' ' '\n' | sed -n 's/^min=//p')
frames=$(echo "$result" | tr ' ' '\n' | sed -n 's/^frames=//p')
if [ "${min:-0}" != "$ROWS" ]; then
    log "a client got ${min:-0} of $ROWS changes: $result"
    exit 1
fi

# callgrind names the first dump FILE.1 (FILE itself is the dump at exit).
DUMP=$OUT.1
[ -s "$DUMP" ] || { log "no callgrind dump"; ls -l "$DIR" >&2; exit 1; }
ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$DUMP" | head -1)
[ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$DUMP" | head -1)
[ -n "$ir" ] || { log "no total in $DUMP"; exit 1; }

per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a / b }'; }
echo "pgcdc $("$PGCDC" -V 2>&1 | head -1), valgrind $(valgrind --version | sed 's/^valgrind-//')"
echo "workload: $ROWS-row INSERT transaction -> $CLIENTS client(s) subscribed to insert:$TABLE"
echo "instructions (Ir) in window: $ir"
echo "Ir per change: $(per "$ir" "$ROWS")"
echo "Ir per frame: $(per "$ir" "$((ROWS * CLIENTS))") ($frames frames delivered)"
echo "window: $window s wall under callgrind; whole run $SECONDS s"
echo "pgcdc: ${VG[*]}"
echo "clients: ${WS[*]}"
echo "top $TOP functions by self cost (Ir, % of window, function, file):"
# A call already in progress when the counters were zeroed (main, the poll
# loop) is dumped with "calls=0", which callgrind_annotate takes for self
# cost; a count of 1 makes it the call cost it is.  Inlined parts of one
# function, listed once per source file, are summed.
sed 's/^calls=0 /calls=1 /' "$DUMP" >"$DUMP.annotate"
callgrind_annotate --inclusive=no --threshold=100 --auto=no "$DUMP.annotate" 2>/dev/null |
    sed -n '/file:function/,/^$/p' |
    awk -v total="$ir" '
        match($0, /^ *[0-9,]+ \( *[0-9.]+%\)  /) {
            ir = substr($0, 1, RLENGTH); sub(/ \(.*/, "", ir); gsub(/[ ,]/, "", ir)
            rest = substr($0, RLENGTH + 1)
            sub(/ \[[^]]*\]$/, "", rest)            # the object file
            fn = rest; sub(/^[^:]*:/, "", fn)
            file = rest; sub(/:.*/, "", file); sub(/.*\//, "", file)
            if (!(fn in cost)) first[fn] = file
            cost[fn] += ir
        }
        END {
            for (fn in cost)
                printf "%.0f\t%.2f%%\t%s\t%s\n", cost[fn], 100 * cost[fn] / total, fn, first[fn]
        }' |
    sort -t "$(printf '\t')" -k1,1nr | head -n "$TOP" |
    awk -F '\t' '{ printf "  %12.0f %7s  %s  %s\n", $1, $2, $3, $4 }'
