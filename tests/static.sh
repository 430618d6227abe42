#!/usr/bin/env bash
# static.sh -- end-to-end check of `make static`: the fully static pgcdc,
# linked against a libpq rebuilt from PostgreSQL's source with OpenSSL
# (dist/static-libpq.sh), must be static and must stream over TLS.
#
# The source tree (git ls-files, plus web/demo.h) is copied to a scratch
# directory and built there, so the caller's ./pgcdc is never replaced.  The
# static libpq is cached in the caller's build/ (as `make static` itself
# does), so only the first run pays for fetching and compiling PostgreSQL's
# source; later runs link in seconds.
#
# The binary is then run against a private cluster (tests/pg.sh) with TLS
# turned on, using sslmode=require, and the script checks that /health says
# streaming, that the server sees its walsender's connection as TLS, that a
# WebSocket client receives an inserted row, and that SIGTERM ends it with
# status 0.
#
# Prints "ok - static: ..." / "not ok - static: ...: why" lines, a "# " note
# with the binary's size, and "# skip: static: <reason>" when PostgreSQL's
# source cannot be had here (no deb-src mirror reachable, TEST_NO_INSTALL
# without a cache).  Always exits 0; stops and removes everything it started.
#
# Environment (all optional):
#   STATIC_PGPORT=N            TCP port of the private cluster (default: free)
#   STATIC_BUILD_TIMEOUT=s     limit for `make static` (default 720, so the
#                              whole script stays under 15 minutes)
#   STATIC_CACHE=0             build the static libpq in the scratch copy
#                              instead of the caller's build/ (a cold build)
#   TEST_NO_INSTALL=1          passed on as PGCDC_NO_APT=1 (no apt-get)
#   PG_SRC, PG_SRC_PKG, JOBS   passed through to dist/static-libpq.sh
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PY=/usr/bin/python3
BUILD_TIMEOUT=${STATIC_BUILD_TIMEOUT:-720}
START=$(date +%s)

ok() { echo "ok - static: $1"; }
not_ok() { echo "not ok - static: $1: $2"; }
note() { echo "# $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-static.XXXXXX") || {
    not_ok "scratch directory" "mktemp failed in ${TMPDIR:-/tmp}"
    exit 0
}
chmod 755 "$WORK"
SRC=$WORK/src
PG_DIR=""           # base directory of the private cluster (inside WORK)
PGCDC_PID=""
BUILD_PID=""

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if [ -n "$BUILD_PID" ]; then
        kill -TERM -- "-$BUILD_PID" 2>/dev/null || kill "$BUILD_PID" 2>/dev/null
        wait "$BUILD_PID" 2>/dev/null
    fi
    if [ -n "$PGCDC_PID" ]; then
        kill "$PGCDC_PID" 2>/dev/null
        wait "$PGCDC_PID" 2>/dev/null
    fi
    # A signal during pg_start comes before PG_DIR is set, so every cluster
    # directory inside WORK is stopped.  A subshell each time, so pg.sh's
    # globals never leak into this script.
    for d in "$WORK"/pgcdc-pg.*; do
        [ -d "$d" ] || continue
        # shellcheck source=tests/pg.sh
        (. "$ROOT/tests/pg.sh" && pg_stop "$d")
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

finish() {
    note "static: took $(($(date +%s) - START))s"
    exit 0
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# last_lines FILE N: the last N lines of FILE on one line.
last_lines() {
    tail -n "$2" "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//'
}

# ---- copy the tree ---------------------------------------------------------

mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked files plus new ones not yet committed; files deleted in the
    # working tree but still in the index are left out.
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            [ -f "$f" ] && printf '%s\0' "$f"
        done | xargs -0 -r cp --parents -p -t "$SRC") 2>"$WORK/copy.log"
else
    # A release tarball: everything but build products.
    (cd "$ROOT" && tar -cf - --exclude=./build --exclude=./pgcdc --exclude=./.git \
        --exclude=./tests/node_modules --exclude=./tests/unit . | tar -xf - -C "$SRC") \
        2>"$WORK/copy.log"
fi
if [ -f "$ROOT/web/demo.h" ]; then
    mkdir -p "$SRC/web"
    cp -p "$ROOT/web/demo.h" "$SRC/web/demo.h"
fi
if [ ! -f "$SRC/Makefile" ] || [ ! -f "$SRC/dist/static-libpq.sh" ]; then
    not_ok "source tree copied" "no Makefile or dist/static-libpq.sh in the copy: $(last_lines "$WORK/copy.log" 3)"
    finish
fi
rm -f "$SRC/pgcdc"

# ---- build -----------------------------------------------------------------

have_cache() {
    local f
    for f in lib/libpq.a lib/libpgcommon_shlib.a lib/libpgport_shlib.a \
             include/libpq-fe.h include/postgres_ext.h include/pg_config_ext.h; do
        [ -f "$1/$f" ] || return 1
    done
}

rm -rf "$SRC/build"
if [ "${STATIC_CACHE:-1}" = 0 ]; then
    note "static: building libpq from source in the scratch copy (STATIC_CACHE=0)"
elif have_cache "$ROOT/build/libpq-static"; then
    mkdir -p "$SRC/build"
    ln -s "$ROOT/build/libpq-static" "$SRC/build/libpq-static"
    note "static: using the cached libpq in build/libpq-static"
elif mkdir -p "$ROOT/build" 2>/dev/null && [ -w "$ROOT/build" ]; then
    # The copy's build/ is the caller's, so the libpq built now is there
    # for the next run; BUILD keeps the paths static-libpq.sh records
    # independent of this scratch directory.
    ln -s "$ROOT/build" "$SRC/build"
    export BUILD=$ROOT/build
    note "static: no cached libpq yet; building it into build/ (one-off)"
else
    note "static: $ROOT/build not writable; building libpq in the scratch copy"
fi
if [ -n "${TEST_NO_INSTALL:-}" ]; then
    export PGCDC_NO_APT=1
fi

# In the background, so a signal to this script still runs the cleanup.
timeout -k 10 "$BUILD_TIMEOUT" make --no-print-directory -C "$SRC" static </dev/null >"$WORK/build.log" 2>&1 &
BUILD_PID=$!
wait "$BUILD_PID"
rc=$?
BUILD_PID=""
BIN=$SRC/pgcdc

if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    not_ok "make static" "timed out after ${BUILD_TIMEOUT}s: $(last_lines "$WORK/build.log" 3)"
    finish
fi
if [ "$rc" != 0 ] || [ ! -x "$BIN" ]; then
    why=$(grep '^static-libpq: error:' "$WORK/build.log" | tail -n 1 | sed 's/^static-libpq: error: //')
    # Getting PostgreSQL's source depends on the machine (a reachable
    # Debian source mirror, permission to use apt), not on the project.
    case $why in
        *"apt-get source"*|*"apt-get update failed"*|*"no deb-src entries"*| \
        *"apt knows no source package"*|*"no PostgreSQL source"*| \
        *"could not find deb entries"*)
            note "skip: static: cannot get PostgreSQL's source here: $why"
            finish
            ;;
    esac
    tail -n 20 "$WORK/build.log" | sed 's/^/# /'
    [ -n "$why" ] || why=$(grep -m 1 -E 'error:|Error [0-9]' "$WORK/build.log")
    not_ok "make static" "exit status $rc: ${why:-$(last_lines "$WORK/build.log" 2)}"
    finish
fi
ok "make static builds in a copy of the tree ($(($(date +%s) - START))s)"

size=$(stat -c %s "$BIN")
stripped=""
if command -v strip >/dev/null 2>&1 && strip -o "$WORK/pgcdc.stripped" "$BIN" 2>/dev/null; then
    stripped=", $(stat -c %s "$WORK/pgcdc.stripped") bytes stripped"
fi
note "static: binary size $size bytes ($((size / 1024)) KiB)$stripped"

ldd_out=$(ldd "$BIN" 2>&1)
file_out=$(file -b "$BIN" 2>/dev/null)
if [[ $ldd_out == *"not a dynamic executable"* ]] || [[ $ldd_out == *"statically linked"* ]] ||
   [[ $file_out == *"statically linked"* ]]; then
    ok "binary is statically linked"
else
    not_ok "binary is statically linked" "ldd: $(echo "$ldd_out" | head -n 3 | tr '\n' ' ')"
fi

ver=$("$BIN" -V 2>&1)
if [[ $ver == "pgcdc "* ]]; then
    ok "static binary runs ($ver)"
else
    not_ok "static binary runs" "pgcdc -V said: $ver"
fi

# ---- a cluster with TLS ----------------------------------------------------

if ! command -v openssl >/dev/null 2>&1; then
    not_ok "TLS cluster" "openssl is not installed"
    finish
fi
PORT=${STATIC_PGPORT:-$(free_port)}
# pg.sh sets PG_BASE and PG* variables, so it runs in a subshell and only
# the base directory comes back.  The cluster lives inside WORK, so nothing
# of it outlives the cleanup.
# shellcheck source=tests/pg.sh
PG_DIR=$( { . "$ROOT/tests/pg.sh" && TMPDIR=$WORK pg_start "$PORT" >&2 &&
            printf '%s' "$PG_BASE"; } 2>"$WORK/pg.log")
if [ -z "$PG_DIR" ] || [ ! -d "$PG_DIR/data" ]; then
    not_ok "TLS cluster" "pg_start on port $PORT failed: $(last_lines "$WORK/pg.log" 3)"
    finish
fi
DATA=$PG_DIR/data

# as_owner CMD...: runs CMD as the cluster's owner (postgres when root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
pg_bindir() {
    # shellcheck source=tests/pg.sh
    (. "$ROOT/tests/pg.sh" && pg__bindir)
}

if ! openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$DATA/server.key" -out "$DATA/server.crt" >"$WORK/openssl.log" 2>&1; then
    not_ok "TLS cluster" "openssl req failed: $(last_lines "$WORK/openssl.log" 2)"
    finish
fi
chmod 600 "$DATA/server.key"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$DATA/server.key" "$DATA/server.crt"
fi
printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" \
    >>"$DATA/postgresql.conf"
if ! as_owner "$(pg_bindir)/pg_ctl" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 \
        restart >"$WORK/restart.log" 2>&1; then
    not_ok "TLS cluster" "restart with ssl = on failed: $(last_lines "$PG_DIR/server.log" 3)"
    finish
fi

# Everything below talks to the private cluster only.
# shellcheck disable=SC2031  # pg.sh's own exports stayed in its subshell
export PGHOST=$PG_DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGSERVICE PGSSLMODE PGOPTIONS

# psql_val SQL: one value, or empty with the error in $WORK/psql.err.
psql_val() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1" 2>"$WORK/psql.err"
}

if [ "$(psql_val 'SHOW ssl')" = on ]; then
    ok "cluster on port $PORT has ssl = on"
else
    not_ok "cluster on port $PORT has ssl = on" "SHOW ssl: $(last_lines "$WORK/psql.err" 2)"
    finish
fi
export TABLE=static_t
if ! psql_val "CREATE TABLE $TABLE (id int PRIMARY KEY, note text)" >/dev/null; then
    not_ok "test table" "$(last_lines "$WORK/psql.err" 2)"
    finish
fi

# ---- the static pgcdc over TLS ---------------------------------------------

HPORT=$(free_port)
cat >"$WORK/pgcdc.config" <<EOF
[postgres]
conninfo = host=127.0.0.1 port=$PORT user=postgres dbname=postgres sslmode=require
slot = static_$$
status_interval = 1
reconnect_max = 2
[server]
listen = 127.0.0.1:$HPORT
EOF
"$BIN" -c "$WORK/pgcdc.config" -v >"$WORK/pgcdc.log" 2>&1 &
PGCDC_PID=$!

if why=$("$PY" - "$HPORT" <<'EOF'
import json, sys, time, urllib.request, urllib.error
end = time.time() + 30
last = "no answer"
while time.time() < end:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/health" % sys.argv[1], timeout=2) as r:
            body = json.load(r)
            if body.get("replication") == "streaming":
                sys.exit(0)
            last = json.dumps(body)
    except urllib.error.HTTPError as e:
        last = "HTTP %d %s" % (e.code, e.read()[:200].decode("utf-8", "replace"))
    except Exception as e:
        last = "%s: %s" % (type(e).__name__, e)
    time.sleep(0.1)
print(last)
sys.exit(1)
EOF
); then
    ok "/health says streaming (sslmode=require)"
else
    not_ok "/health says streaming (sslmode=require)" \
        "$why; pgcdc log: $(last_lines "$WORK/pgcdc.log" 4)"
    finish
fi

# The walsender's row in pg_stat_ssl says whether the connection is TLS.
tls=$(psql_val "SELECT coalesce(bool_and(ssl)::text, 'no walsender') || ' ' ||
                       coalesce(max(version), '')
                FROM pg_stat_ssl JOIN pg_stat_replication USING (pid)")
case $tls in
    "true "*) ok "walsender connection uses TLS (${tls#true })" ;;
    *) not_ok "walsender connection uses TLS" "pg_stat_ssl: ${tls:-$(last_lines "$WORK/psql.err" 2)}" ;;
esac

# The client subscribes, inserts a row with psql, and waits for its frame.
if why=$("$PY" - "ws://127.0.0.1:$HPORT/ws?query=insert:$TABLE" 2>&1 <<'EOF'
import asyncio, json, os, subprocess, sys
import websockets

url, table = sys.argv[1], os.environ["TABLE"]

async def main():
    async with websockets.connect(url, open_timeout=10) as ws:
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                            "INSERT INTO %s VALUES (42, 'static over tls')" % table],
                           capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError("psql: " + p.stderr.strip())
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        cols = {c["name"]: c["value"] for c in msg.get("columns", [])}
        if (msg.get("action") != "I" or msg.get("table") != table
                or not msg.get("pos") or cols.get("id") != 42
                or cols.get("note") != "static over tls"):
            raise RuntimeError("unexpected frame: %s" % json.dumps(msg)[:300])

try:
    asyncio.run(asyncio.wait_for(main(), 20))
except Exception as e:
    print("%s: %s" % (type(e).__name__, e))
    sys.exit(1)
EOF
); then
    ok "WebSocket client receives an inserted row"
else
    not_ok "WebSocket client receives an inserted row" \
        "$(echo "$why" | tail -n 1); pgcdc log: $(last_lines "$WORK/pgcdc.log" 3)"
fi

# A graceful stop ends the TLS replication stream cleanly.
kill -TERM "$PGCDC_PID" 2>/dev/null
for _ in $(seq 1 100); do
    kill -0 "$PGCDC_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$PGCDC_PID" 2>/dev/null; then
    not_ok "exits 0 on SIGTERM" "still running 10 s after SIGTERM"
else
    wait "$PGCDC_PID"
    rc=$?
    PGCDC_PID=""
    if [ "$rc" = 0 ]; then
        ok "exits 0 on SIGTERM"
    else
        not_ok "exits 0 on SIGTERM" "status $rc: $(last_lines "$WORK/pgcdc.log" 3)"
    fi
fi
finish
