#!/bin/bash
# bench/snapshot.sh -- rows per second of snapshot=1, beside its reference.
#
#   bench/snapshot.sh            (ROWS=1000000 RUNS=5 by default)
#
# Starts a throwaway PostgreSQL (tests/pg.sh), fills a table with ROWS rows
# (int primary key, text, numeric(10,2), timestamptz, bool), builds pgcdc and
# bench/wsload, then, RUNS times each, in turns:
#   copy     psql -c "COPY (SELECT * FROM t) TO STDOUT" > /dev/null: the rows
#            as PostgreSQL's text format, through one connection
#   pgcdc    one WebSocket client with snapshot=1 that reads every S message
#            and the E marker (wsload), from connect to the last frame
#   pgcdc10  ten such clients at once (max_snapshots = 10): rows delivered to
#            all of them per second
# Times are wall-clock from starting the client to its exit.  Prints the
# median and the spread (min..max) of each and the ratio pgcdc / copy.
# Everything it starts is stopped on exit.  BENCH_KEEP=1 keeps the directory.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-5}
DIR=$(mktemp -d /tmp/bench-snap-XXXXXX)
chmod 755 "$DIR"
PGCDC_PID=""

# shellcheck source=tests/pg.sh
. "$ROOT/tests/pg.sh"

cleanup() {
    [ -n "$PGCDC_PID" ] && kill "$PGCDC_PID" 2>/dev/null && wait "$PGCDC_PID" 2>/dev/null
    pg_stop
    [ -n "${BENCH_KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT

log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

TMPDIR=$DIR pg_start >"$DIR/pg.log" 2>&1 || { cat "$DIR/pg.log"; exit 1; }
psqlq() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

log "building pgcdc and wsload"
make -C "$ROOT" -s pgcdc >/dev/null || exit 1
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -o "$DIR/wsload" "$ROOT/bench/wsload.c" || exit 1

log "filling bench_snap with $ROWS rows"
psqlq -c "CREATE TABLE bench_snap (id int PRIMARY KEY, name text, price numeric(10,2),
          at timestamptz, flag bool)" \
      -c "INSERT INTO bench_snap SELECT g, 'name ' || g, g % 10000 / 100.0,
          '2026-01-01'::timestamptz + g * interval '1 second', g % 2 = 0
          FROM generate_series(1, $ROWS) g" \
      -c "VACUUM ANALYZE bench_snap" || exit 1

PORT=$(pg__free_port)
cat >"$DIR/pgcdc.config" <<EOF
[postgres]
conninfo = host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE
slot = bench_snap
[server]
listen = 127.0.0.1:$PORT
max_snapshots = 10
snapshot_timeout = 600
EOF
"$ROOT/pgcdc" -c "$DIR/pgcdc.config" -q 2>"$DIR/pgcdc.log" &
PGCDC_PID=$!
for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$PORT/health" 2>/dev/null | grep -q '"streaming"' && break
    sleep 0.1
done

URL="ws://127.0.0.1:$PORT/ws?query=*:bench_snap&snapshot=1"
copy_run() {
    local t0 t1
    t0=$(now)
    psql -X -q -c "COPY (SELECT * FROM bench_snap) TO STDOUT" >/dev/null || return 1
    t1=$(now)
    echo "$t0 $t1" | awk -v n="$ROWS" '{ printf "%.0f\n", n / ($2 - $1) }'
}
pgcdc_run() {
    local c=$1 t0 t1 out
    t0=$(now)
    out=$("$DIR/wsload" -u "$URL" -c "$c" -n $((ROWS + 1)) -t 300 --max 600) || true
    t1=$(now)
    echo "$out" >>"$DIR/wsload.out"
    local complete
    complete=$(echo "$out" | sed -n 's/.* complete=\([0-9]*\).*/\1/p')
    [ "$complete" = "$c" ] || { echo "incomplete: $out" >&2; return 1; }
    echo "$t0 $t1" | awk -v n="$ROWS" -v c="$c" '{ printf "%.0f\n", n * c / ($2 - $1) }'
}

COPY=() ONE=() TEN=()
for r in $(seq "$RUNS"); do
    log "run $r of $RUNS"
    COPY+=("$(copy_run)") || exit 1
    ONE+=("$(pgcdc_run 1)") || exit 1
    TEN+=("$(pgcdc_run 10)") || exit 1
done

# median min max of the arguments
stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.0f %.0f %.0f\n", m, v[1], v[NR] }'; }
read -r cm cl ch <<<"$(stats "${COPY[@]}")"
read -r om ol oh <<<"$(stats "${ONE[@]}")"
read -r tm tl th <<<"$(stats "${TEN[@]}")"
echo
echo "snapshot of $ROWS rows, $RUNS runs each (median, min..max rows/s; wall clock, this host)"
printf '%-34s %12s  %s\n' "COPY (SELECT *) TO STDOUT, psql" "$cm" "$cl..$ch"
printf '%-34s %12s  %s   %.2fx COPY\n' "pgcdc snapshot=1, 1 client" "$om" "$ol..$oh" \
    "$(echo "$om $cm" | awk '{ print $1 / $2 }')"
printf '%-34s %12s  %s   (rows delivered to all 10 clients per second)\n' "pgcdc snapshot=1, 10 clients" \
    "$tm" "$tl..$th"
echo "pgcdc RSS after the runs: $(awk '/VmHWM/ { print $2 " KiB peak" }' /proc/$PGCDC_PID/status)"
