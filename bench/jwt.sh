#!/bin/bash
# bench/jwt.sh -- what JWT access costs per connection.
#
#   bench/jwt.sh
#
# 1. Verification alone (bench/jwtverify.c, -O2, pgcdc's jwt.c): 1000
#    distinct tokens each for HS256 and for RS256 with 2048-, 3072- and
#    4096-bit keys (minted by PyJWT), each verified in a loop for about a
#    second; prints microseconds per verification.  RS256-2048 must stay
#    under 1000 us: the script exits 1 otherwise.
# 2. Connections per second: a throwaway PostgreSQL (tests/pg.sh) and pgcdc
#    with jwt_secret, jwt_keys and a "* = allow" rule, and a second pgcdc
#    without authentication; a Python client opens N connections one after
#    another (upgrade, read the 101, close): without a token, then each with
#    a new HS256 token, then each with a new RS256-2048 token.  The client is
#    the same in every row, so the differences between rows are pgcdc's
#    verification cost.
#
# Environment: BENCH_N (connections per row, default 2000), PGCDC (use this
# binary instead of building ./pgcdc).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${BENCH_N:-2000}
DIR=$(mktemp -d /tmp/bench-jwt-XXXXXX)
PGCDC_PID=""
PGDIR=""
cleanup() {
    # shellcheck disable=SC2086
    [ -n "$PGCDC_PID" ] && kill $PGCDC_PID 2>/dev/null && wait $PGCDC_PID 2>/dev/null
    [ -n "$PGDIR" ] && bash "$ROOT/tests/pg.sh" stop "$PGDIR" >/dev/null 2>&1
    rm -rf "$DIR"
}
trap cleanup EXIT

PY=/usr/bin/python3
SECRET="bench-secret-bench-secret-bench-secret"
if [ -z "${PGCDC:-}" ]; then
    make -C "$ROOT" -s pgcdc || exit 2
    PGCDC=$ROOT/pgcdc
fi
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I"$ROOT" -o "$DIR/jwtverify" \
    "$ROOT/bench/jwtverify.c" "$ROOT/jwt.c" "$ROOT/sha256.c" "$ROOT/sha1.c" "$ROOT/json.c" "$ROOT/base64.c" || exit 2

echo "minting tokens (PyJWT) ..." >&2
$PY - "$DIR" "$SECRET" "$N" <<'PYEOF' || exit 2
import base64, json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
d, secret, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def b64u(i):
    return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
exp = int(time.time()) + 3600
keys = []
for bits in (2048, 3072, 4096):
    k = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pub = k.public_key().public_numbers()
    keys.append({"kty": "RSA", "kid": "k%d" % bits, "n": b64u(pub.n), "e": b64u(pub.e)})
    count = n if bits == 2048 else 1000
    with open("%s/rs256-%d.txt" % (d, bits), "w") as f:
        for i in range(count):
            f.write(jwt.encode({"sub": "user-%d" % i, "exp": exp}, k, algorithm="RS256",
                               headers={"kid": "k%d" % bits}) + "\n")
with open(d + "/keys.json", "w") as f:
    json.dump({"keys": keys}, f)
with open(d + "/hs256.txt", "w") as f:
    for i in range(n):
        f.write(jwt.encode({"sub": "user-%d" % i, "exp": exp}, secret, algorithm="HS256") + "\n")
PYEOF

echo
echo "== verification cost (bench/jwtverify.c, one core) =="
OUT=$("$DIR/jwtverify" "$DIR/keys.json" "$SECRET" "$DIR/hs256.txt" "$DIR/rs256-2048.txt" \
      "$DIR/rs256-3072.txt" "$DIR/rs256-4096.txt") || { echo "$OUT"; exit 1; }
echo "$OUT"
RS=$(echo "$OUT" | awk '/rs256-2048/ {print $4}')

echo
echo "== connections per second (sequential upgrades, a new token each) =="
eval "$(bash "$ROOT/tests/pg.sh" start)" || exit 2
PGDIR=$PGHOST   # tests/pg.sh: the socket directory is the cluster's base
psql -X -q -h "$PGHOST" -p "$PGPORT" -U postgres -c "CREATE TABLE IF NOT EXISTS bench_jwt (id int)" || exit 2
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$DIR/pgcdc.config" <<CFG
[postgres]
conninfo = host=$PGHOST port=$PGPORT user=postgres dbname=postgres
slot = bench_jwt
[server]
listen = 127.0.0.1:$PORT
jwt_secret = $SECRET
jwt_keys = $DIR/keys.json
max_clients = 100000
[rules]
* = allow
CFG
PORT2=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s/^slot = .*/slot = bench_jwt_plain/" -e "s/^listen = .*/listen = 127.0.0.1:$PORT2/" \
    -e "/^jwt_/d" -e "/^\[rules\]/,\$d" "$DIR/pgcdc.config" > "$DIR/plain.config"
"$PGCDC" -q -c "$DIR/pgcdc.config" 2>"$DIR/pgcdc.log" &
PGCDC_PID=$!
"$PGCDC" -q -c "$DIR/plain.config" 2>"$DIR/plain.log" &
PGCDC_PID="$PGCDC_PID $!"
$PY - "$PORT" "$DIR" "$N" "$PORT2" <<'PYEOF'
import socket, sys, time, urllib.request
port, d, n, port2 = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for p in (port, port2):
    for _ in range(200):
        try:
            if b"streaming" in urllib.request.urlopen("http://127.0.0.1:%d/health" % p, timeout=1).read():
                break
        except Exception:
            pass
        time.sleep(0.1)
def run(tokens, port=port):
    t0 = time.perf_counter()
    for tok in tokens:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(("GET /ws?query=insert:bench_jwt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s\r\n" % (("Authorization: Bearer %s\r\n" % tok) if tok else "")).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
        if not data.startswith(b"HTTP/1.1 101"):
            raise SystemExit("not upgraded: %r" % data[:200])
        s.close()
    return len(tokens) / (time.perf_counter() - t0)
hs = open(d + "/hs256.txt").read().split()
rs = open(d + "/rs256-2048.txt").read().split()
print("%-28s %8.0f connections/s" % ("no authentication", run([None] * n, port2)))
print("%-28s %8.0f connections/s" % ("HS256, a new token each", run(hs[:n])))
print("%-28s %8.0f connections/s" % ("RS256-2048, a new token each", run(rs[:n])))
PYEOF
awk -v us="$RS" 'BEGIN { if (us + 0 >= 1000) { print "FAIL: RS256-2048 verification takes " us " us (limit 1000)"; exit 1 } else print "RS256-2048: " us " us per verification, under the 1 ms limit" }'
