#!/usr/bin/env bash
# demo.sh -- run pgcdc against a throwaway local PostgreSQL, nothing to set up.
#
# Installs what is missing (Debian: PostgreSQL 15, wal2json, libpq), builds
# pgcdc, starts a private PostgreSQL cluster in a temporary directory, creates
# a table "orders" with a little traffic, starts pgcdc on 127.0.0.1:8080 (or
# PORT) and prints the URLs to open.  Ctrl-C stops and removes everything.
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PORT=${PORT:-8080}

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
[ -f /usr/lib/postgresql/15/lib/wal2json.so ] || need+=(postgresql-15-wal2json)
[ -f /usr/include/postgresql/libpq-fe.h ] || need+=(libpq-dev)
{ command -v cc && command -v make; } >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    echo "demo: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null ||
        { echo "demo: could not install ${need[*]}" >&2; exit 1; }
fi
make -s pgcdc || exit 1

. tests/pg.sh
pg_start || { echo "demo: PostgreSQL did not start" >&2; exit 1; }
DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-demo.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    pg_stop
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

psql -X -q -v ON_ERROR_STOP=1 <<'SQL' || exit 1
CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL,
                     status text NOT NULL DEFAULT 'new', total numeric(10,2) NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE orders REPLICA IDENTITY FULL;
SQL

cat >"$DIR/pgcdc.config" <<CONF
[postgres]
conninfo = host=$PGHOST port=$PGPORT user=postgres dbname=postgres
slot = pgcdc_demo
[server]
listen = 127.0.0.1:$PORT
CONF
./pgcdc -c "$DIR/pgcdc.config" &
PIDS+=($!)

for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null && break
    sleep 0.2
done

# A trickle of orders: new ones, some paid, some cancelled.
(
    names=(ada grace linus margaret dennis barbara ken radia)
    i=0
    while sleep 1; do
        n=${names[$((RANDOM % ${#names[@]}))]}
        psql -X -q -c "INSERT INTO orders (customer, total) VALUES ('$n', $((RANDOM % 500)).$((RANDOM % 100)));
                       UPDATE orders SET status = 'paid' WHERE id = (SELECT max(id) - 1 FROM orders) AND status = 'new';" \
            >/dev/null 2>&1
        i=$((i + 1))
        [ $((i % 7)) = 0 ] && psql -X -q -c "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders)" >/dev/null 2>&1
    done
) &
PIDS+=($!)

cat <<MSG

  pgcdc is streaming a throwaway database (a new order every second).

  Live viewer:   http://127.0.0.1:$PORT/   (the orders table, kept equal to the database)
  Over SSE:      http://127.0.0.1:$PORT/?table=orders&transport=sse
  WebSocket:     ws://127.0.0.1:$PORT/ws?query=*:orders
  Paid only:     ws://127.0.0.1:$PORT/ws?query=update:orders:status.eq.paid
  Health:        http://127.0.0.1:$PORT/health     Metrics: http://127.0.0.1:$PORT/metrics
  SQL:           psql "host=$PGHOST port=$PGPORT user=postgres"

  Ctrl-C stops pgcdc and removes the database.
MSG
wait "${PIDS[0]}"
