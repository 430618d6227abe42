#!/usr/bin/env bash
# proxy.sh -- end-to-end check of the reverse-proxy path: a wss:// client
# goes through nginx (TLS), configured from dist/nginx.conf, to a pgcdc this
# script starts, and receives a row inserted with psql.  HAProxy
# (dist/haproxy.cfg) and Caddy (dist/Caddyfile) get the same check when
# they are installed.
#
# Each client connects from its own loopback address (127.0.0.7, .8, .9)
# and sends a forged "X-Forwarded-For: 203.0.113.7".  The proxies replace
# that header with the address they saw, and pgcdc (trusted_proxies =
# 127.0.0.1) must log the client's real address, never the forged one.  A
# direct connection from an untrusted peer checks that its X-Forwarded-For
# is not believed.
#
# Needs the database named by PGHOST, PGPORT, PGUSER (PGDATABASE), the
# binary in PGCDC (default ./pgcdc), /usr/bin/python3 with websockets, and
# nginx and openssl (installed with apt-get when missing and root).
# Prints "ok - ..." / "not ok - ...: why" lines; stops all it started.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGCDC=${PGCDC:-$ROOT/pgcdc}
PY=/usr/bin/python3
export PGHOST=${PGHOST:-/tmp} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export PGDATABASE=${PGDATABASE:-postgres}
FORGED=203.0.113.7

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1: $2"; }
note() { echo "# $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-proxy.XXXXXX") || exit 2
chmod 755 "$WORK"
PIDS=()
TABLE="proxy_t_$$"

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    psql -X -q -c "DROP TABLE IF EXISTS $TABLE" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

finish() {
    echo "proxy.sh: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT.
wait_port() {
    "$PY" - "$1" "$2" <<'EOF'
import socket, sys, time
port, end = int(sys.argv[1]), time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# ---- prerequisites ---------------------------------------------------------

if ! command -v nginx >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && [ -z "${TEST_NO_INSTALL:-}" ]; then
        note "installing nginx openssl"
        { apt-get update -q &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
              nginx openssl; } >"$WORK/apt.log" 2>&1 || tail -n 20 "$WORK/apt.log"
    fi
fi
if ! command -v nginx >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    not_ok "proxy: nginx and openssl available" "not installed and cannot install"
    finish
fi
if [ ! -x "$PGCDC" ]; then
    not_ok "proxy: pgcdc binary" "$PGCDC not found (make pgcdc)"
    finish
fi
if ! psql -X -q -v ON_ERROR_STOP=1 \
        -c "CREATE TABLE $TABLE (id int PRIMARY KEY, note text)" >"$WORK/psql.log" 2>&1; then
    not_ok "proxy: database reachable" "$(head -n 3 "$WORK/psql.log")"
    finish
fi

# A certificate for 127.0.0.1 and localhost, trusted by the client alone.
if ! openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >"$WORK/openssl.log" 2>&1; then
    not_ok "proxy: self-signed certificate" "$(tail -n 3 "$WORK/openssl.log")"
    finish
fi
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/both.pem"

# ---- pgcdc -----------------------------------------------------------------

PPORT=$(free_port)
cat >"$WORK/pgcdc.config" <<EOF
[postgres]
conninfo = host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE
slot = proxy_$$
status_interval = 1
reconnect_max = 2
[server]
listen = 127.0.0.1:$PPORT
trusted_proxies = 127.0.0.1
EOF
"$PGCDC" -c "$WORK/pgcdc.config" -v >"$WORK/pgcdc.log" 2>&1 &
PIDS+=($!)
if ! "$PY" - "$PPORT" <<'EOF'
import json, sys, time, urllib.request
end = time.time() + 20
while time.time() < end:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/health" % sys.argv[1], timeout=2) as r:
            if json.load(r).get("replication") == "streaming":
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
then
    not_ok "proxy: pgcdc streaming" "$(tail -n 5 "$WORK/pgcdc.log" | tr '\n' ' ')"
    finish
fi

# ---- the client ------------------------------------------------------------

# client.py URL SOURCE_ADDR ID: connects (TLS trusting only our certificate)
# from SOURCE_ADDR with a forged X-Forwarded-For, inserts row ID, and waits
# for its frame.  Prints why on failure.
cat >"$WORK/client.py" <<'EOF'
import asyncio, inspect, json, os, ssl, subprocess, sys
import websockets

url, src, rid = sys.argv[1], sys.argv[2], int(sys.argv[3])
table, forged, cafile = os.environ["TABLE"], os.environ["FORGED"], os.environ["CAFILE"]

async def main():
    ctx = None
    if url.startswith("wss:"):
        ctx = ssl.create_default_context(cafile=cafile)
    hdrs = {"X-Forwarded-For": forged}
    kw = dict(ssl=ctx, local_addr=(src, 0), open_timeout=10)
    # websockets 14 renamed extra_headers (Debian 12 ships 10.4).
    params = inspect.signature(websockets.connect.__init__).parameters
    kw["additional_headers" if "additional_headers" in params else "extra_headers"] = hdrs
    async with websockets.connect(url, **kw) as ws:
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                            "INSERT INTO %s VALUES (%d, 'via %s')" % (table, rid, src)],
                           capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError("psql: " + p.stderr.strip())
        # Rows inserted for earlier clients may still be in flight.
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            cols = {c["name"]: c["value"] for c in msg.get("columns", [])}
            if msg.get("action") != "I" or msg.get("table") != table or not msg.get("pos"):
                raise RuntimeError("unexpected frame: %s" % json.dumps(msg)[:300])
            if cols.get("id") == rid:
                break

try:
    asyncio.run(asyncio.wait_for(main(), 20))
except Exception as e:
    print("%s: %s" % (type(e).__name__, e))
    sys.exit(1)
EOF
export TABLE FORGED CAFILE=$WORK/cert.pem

# check_path NAME URL SOURCE_ADDR ID
check_path() {
    local name=$1 url=$2 src=$3 id=$4 why
    if why=$("$PY" "$WORK/client.py" "$url?query=insert:$TABLE" "$src" "$id" 2>&1); then
        ok "wss through $name delivers changes"
    else
        not_ok "wss through $name delivers changes" "$(echo "$why" | tail -n 1)"
        return
    fi
    # pgcdc may log the connection when it ends; give it a moment.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        grep -q "$src" "$WORK/pgcdc.log" && break
        sleep 0.2
    done
    if grep -q "$src" "$WORK/pgcdc.log"; then
        ok "pgcdc logs the client address $name forwarded ($src)"
    else
        not_ok "pgcdc logs the client address $name forwarded ($src)" \
            "not in the log: $(tail -n 3 "$WORK/pgcdc.log" | tr '\n' ' ')"
    fi
}

# ---- nginx -----------------------------------------------------------------

run_nginx() {
    local port hport dir=$WORK/nginx
    port=$(free_port)
    hport=$(free_port)
    mkdir -p "$dir"
    # The shipped file, with only addresses and paths changed.
    sed -e "s|server 127.0.0.1:8080;|server 127.0.0.1:$PPORT;|" \
        -e "s|listen 443 ssl http2;|listen 127.0.0.1:$port ssl http2;|" \
        -e "s|listen 80;|listen 127.0.0.1:$hport;|" \
        -e '/listen \[::\]/d' \
        -e "s|/etc/ssl/certs/pgcdc.pem|$WORK/cert.pem|" \
        -e "s|/etc/ssl/private/pgcdc.key|$WORK/key.pem|" \
        -e "s|/var/log/nginx/|$dir/|" \
        "$ROOT/dist/nginx.conf" >"$dir/pgcdc.conf"
    if [ "$(grep -c -e "127.0.0.1:$PPORT;" -e "127.0.0.1:$port ssl http2;" -e "$WORK/cert.pem" \
            "$dir/pgcdc.conf")" != 3 ]; then
        not_ok "nginx: dist/nginx.conf adapted" "its listen/upstream/certificate lines changed shape"
        return
    fi
    cat >"$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log info;
worker_processes 1;
events { worker_connections 256; }
http {
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/pgcdc.conf;
}
EOF
    if ! nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/t.log" 2>&1; then
        not_ok "nginx: configuration valid" "$(tail -n 3 "$dir/t.log" "$dir/error.log" | tr '\n' ' ')"
        return
    fi
    nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/nginx.out" 2>&1 &
    PIDS+=($!)
    if ! wait_port "$port" 10; then
        not_ok "nginx: started" "$(tail -n 3 "$dir/nginx.out" "$dir/error.log" | tr '\n' ' ')"
        return
    fi
    check_path nginx "wss://127.0.0.1:$port/ws" 127.0.0.7 1
    check_sse_http2 "$port"
    # Plain requests take the keepalive upstream path; /metrics is
    # refused to anyone but the loopback (here it is the loopback).
    if "$PY" - "$port" "$WORK/cert.pem" <<'EOF'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
for path, want in (("/ping", b"pong"), ("/metrics", b"pgcdc_clients")):
    with urllib.request.urlopen("https://127.0.0.1:%s%s" % (sys.argv[1], path),
                                context=ctx, timeout=5) as r:
        body = r.read()
        if r.status != 200 or want not in body:
            sys.exit("%s: %s %r" % (path, r.status, body[:80]))
EOF
    then
        ok "https /ping and /metrics through nginx"
    else
        not_ok "https /ping and /metrics through nginx" "see above"
    fi
    # The port-80 server only redirects (README says so): a plain ws://
    # upgrade there gets 301 to https://, never a stream.
    if why=$("$PY" - "$hport" 2>&1 <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /ws?query=*:t HTTP/1.1\r\nHost: cdc.example.com\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    b = s.recv(4096)
    if not b:
        break
    data += b
head = data.split(b"\r\n\r\n")[0].decode("latin-1")
if not head.startswith("HTTP/1.1 301") or "\r\nLocation: https://cdc.example.com/ws?query=*:t" not in head:
    sys.exit(head[:300].replace("\r\n", " | "))
EOF
    ); then
        ok "plain ws:// to nginx's port-80 server gets 301 to https://"
    else
        not_ok "plain ws:// to nginx's port-80 server gets 301 to https://" "$why"
    fi
}

# check_sse_http2 PORT: three SSE streams through nginx over one HTTP/2
# connection (curl --http2 --parallel), each receiving the rows inserted
# while they are open, framed as events.
check_sse_http2() {
    local port=$1 base d=$WORK/sse i n conns ok=1
    mkdir -p "$d"
    base="https://127.0.0.1:$port/sse?query=insert:$TABLE"
    curl -sS --no-progress-meter -N --http2 --parallel --cacert "$WORK/cert.pem" --max-time 8 \
        -w '%{http_version} %{response_code} %{num_connects} %{content_type}\n' \
        -o "$d/1" "$base&filter=id.gte.100" -o "$d/2" "$base&filter=id.gte.100" \
        -o "$d/3" "$base&filter=id.gte.200" >"$d/w" 2>"$d/err" &
    local cpid=$!
    # the streams are open once each has its retry line
    for _ in $(seq 100); do
        [ "$(cat "$d"/[123] 2>/dev/null | grep -c '^retry: 1000$')" = 3 ] && break
        sleep 0.1
    done
    psql -X -q -c "INSERT INTO $TABLE VALUES (150, 'sse'), (250, 'sse')" >/dev/null 2>&1
    for _ in $(seq 100); do
        [ "$(cat "$d"/[123] 2>/dev/null | grep -c '^data: .*"value":250')" = 3 ] && break
        sleep 0.1
    done
    # each transfer ends at --max-time, and curl then writes its -w line
    wait "$cpid" 2>/dev/null
    n=$(grep -c '^2 200 ' "$d/w")
    conns=$(awk '{s += $3} END {print s + 0}' "$d/w")
    if [ "$n" != 3 ] || [ "$conns" != 1 ] || [ "$(grep -c 'text/event-stream' "$d/w")" != 3 ]; then
        ok=0
        not_ok "sse through nginx: three HTTP/2 streams on one connection" \
            "curl reported: $(tr '\n' '|' <"$d/w") $(head -c 300 "$d/err")"
    fi
    for i in 1 2; do
        grep -q '^data: .*"value":150' "$d/$i" && grep -q '^data: .*"value":250' "$d/$i" || ok=0
    done
    grep -q '"value":150' "$d/3" && ok=0
    grep -q '^data: .*"value":250' "$d/3" || ok=0
    grep -q '^id: [0-9A-F]*/[0-9A-F]*:0$' "$d/1" || ok=0
    if [ "$ok" = 1 ]; then
        ok "sse through nginx: three HTTP/2 streams on one connection, each with its rows"
    elif [ "$n" = 3 ]; then
        not_ok "sse through nginx: each stream gets its rows" \
            "stream 1: $(tr '\n' '|' <"$d/1" | head -c 300) stream 3: $(tr '\n' '|' <"$d/3" | head -c 300)"
    fi
}

# ---- HAProxy (when installed) ----------------------------------------------

run_haproxy() {
    local port hport dir=$WORK/haproxy
    if ! command -v haproxy >/dev/null 2>&1; then
        note "skip: haproxy not installed"
        return
    fi
    port=$(free_port)
    hport=$(free_port)
    mkdir -p "$dir"
    sed -e "s|server pgcdc1 127.0.0.1:8080|server pgcdc1 127.0.0.1:$PPORT|" \
        -e '/server pgcdc[23] /d' \
        -e "s|bind :443 |bind 127.0.0.1:$port |" \
        -e "s|bind :80$|bind 127.0.0.1:$hport|" \
        -e '/bind :::/d' \
        -e "s|/etc/haproxy/certs/pgcdc.pem|$WORK/both.pem|" \
        -e "s|log /dev/log local0|log stderr format raw local0|" \
        -e "s|maxconn 20000|maxconn 500|" \
        "$ROOT/dist/haproxy.cfg" >"$dir/haproxy.cfg"
    if ! haproxy -c -q -f "$dir/haproxy.cfg" >"$dir/c.log" 2>&1; then
        not_ok "haproxy: configuration valid" "$(tail -n 3 "$dir/c.log" | tr '\n' ' ')"
        return
    fi
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    PIDS+=($!)
    if ! wait_port "$port" 10; then
        not_ok "haproxy: started" "$(tail -n 3 "$dir/haproxy.log" | tr '\n' ' ')"
        return
    fi
    check_path haproxy "wss://127.0.0.1:$port/ws" 127.0.0.8 2
}

# ---- Caddy (when installed) ------------------------------------------------

run_caddy() {
    local port hport dir=$WORK/caddy
    if ! command -v caddy >/dev/null 2>&1; then
        note "skip: caddy not installed"
        return
    fi
    port=$(free_port)
    hport=$(free_port)
    mkdir -p "$dir"
    # No certificate authority here: the site gets our certificate, and
    # Caddy's own state stays in the temp directory.
    {
        printf '{\n\tadmin off\n\thttp_port %s\n\thttps_port %s\n\tstorage file_system %s\n}\n\n' \
            "$hport" "$port" "$dir/data"
        sed -e "s|^cdc.example.com {|https://127.0.0.1:$port {|" \
            -e "s|# tls /etc/ssl/certs/pgcdc.pem /etc/ssl/private/pgcdc.key|tls $WORK/cert.pem $WORK/key.pem|" \
            -e "s|/var/log/caddy/|$dir/|" \
            -e "s|reverse_proxy 127.0.0.1:8080|reverse_proxy 127.0.0.1:$PPORT|" \
            "$ROOT/dist/Caddyfile"
    } >"$dir/Caddyfile"
    HOME=$dir XDG_DATA_HOME=$dir XDG_CONFIG_HOME=$dir \
        caddy run --adapter caddyfile --config "$dir/Caddyfile" >"$dir/caddy.log" 2>&1 &
    PIDS+=($!)
    if ! wait_port "$port" 10; then
        not_ok "caddy: started" "$(tail -n 3 "$dir/caddy.log" | tr '\n' ' ')"
        return
    fi
    check_path caddy "wss://127.0.0.1:$port/ws" 127.0.0.9 3
}

run_nginx
run_haproxy
run_caddy

# The proxies replace the client's header, so the forged address never
# even reaches pgcdc.
if grep -q "$FORGED" "$WORK/pgcdc.log"; then
    not_ok "a forged X-Forwarded-For does not pass the proxies" \
        "$(grep "$FORGED" "$WORK/pgcdc.log" | head -n 2 | tr '\n' ' ')"
else
    ok "a forged X-Forwarded-For does not pass the proxies"
fi

# A peer that is not a trusted proxy cannot choose the logged address.
if why=$(FORGED=198.51.100.9 "$PY" "$WORK/client.py" \
        "ws://127.0.0.1:$PPORT/ws?query=insert:$TABLE" 127.0.0.5 4 2>&1); then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        grep -q "127.0.0.5" "$WORK/pgcdc.log" && break
        sleep 0.2
    done
    if grep -q "198.51.100.9" "$WORK/pgcdc.log"; then
        not_ok "a direct client from an untrusted peer is logged by its own address" \
            "its X-Forwarded-For was believed: $(grep 198.51.100.9 "$WORK/pgcdc.log" | head -n 1)"
    elif grep -q "127.0.0.5" "$WORK/pgcdc.log"; then
        ok "a direct client from an untrusted peer is logged by its own address"
    else
        not_ok "a direct client from an untrusted peer is logged by its own address" \
            "127.0.0.5 not in the log"
    fi
else
    not_ok "a direct client receives changes" "$(echo "$why" | tail -n 1)"
fi

if [ "$failed" != 0 ]; then
    note "pgcdc log (last lines):"
    tail -n 15 "$WORK/pgcdc.log" | sed 's/^/#   /'
fi
finish
