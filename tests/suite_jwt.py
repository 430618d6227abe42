"""suite_jwt.py -- end-to-end tests of JWT access, [rules] and columns=
(docs/protocol.md: JWT, Rules, Columns).

Tokens come from real libraries, not from pgcdc's code: PyJWT (Debian
python3-jwt, with python3-cryptography for RS256) and Node's jsonwebtoken
(tests/package.json), through the two minting snippets README shows
(tests/jwt_mint.py and tests/jwt_mint.js, run as programs).  Refused tokens
(tampered, expired, not yet valid, wrong issuer or audience, alg none, an
HS256 token "signed" with the RSA public key, unknown kid, hostile sizes)
must get 401 with a reason and never the token in the body or the log.
Rules: each user sees only the rows its claims allow, a client's filters
narrow them, placeholders are values and never grammar, `;columns=` hides
columns from the bytes sent.  Key rotation by rewriting the JWKS file and
SIGHUP keeps connected clients.  columns= projection is checked on the
bytes, for live changes, identity and history replays.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jwt as pyjwt  # noqa: E402
import websockets  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from harness import (PGCDC, Pgcdc, finish, http_get, recv_until, selected,  # noqa: E402
                     run_test, sql, wait_until, ws_upgrade)

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "an HS256 secret of at least 32 bytes!"
ISS = "https://issuer.test"
AUD = "pgcdc"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TMP = tempfile.mkdtemp(prefix="pgcdc-jwt-")

RULES = {
    "public.j_orders": "customer_id.eq.{sub}",
    "public.j_rooms": "id.in.{rooms}",
    "public.j_tasks": "tenant_id.eq.{app.tenant}&archived.is.false",
    "public.j_users": "id.eq.{sub};columns=id,name",
}


# ---- keys and tokens ---------------------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def new_rsa(bits=2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(key):
    path = os.path.join(TMP, "k%d.pem" % id(key))
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return path


def jwk(key, kid):
    n = key.public_key().public_numbers()
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
            "e": b64url(n.e.to_bytes(3, "big"))}


def write_jwks(path, keys):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"keys": keys}, f)
    os.replace(tmp, path)


def claims_of(sub="u1", **extra):
    c = {"sub": sub, "iss": ISS, "aud": AUD}
    c.update(extra)
    return c


def mint_by(program, script, alg, key, claims, ttl, kid):
    """The token the minting program tests/<script> prints."""
    args = [program, os.path.join(HERE, script), alg,
            pem(key) if alg == "RS256" else key, json.dumps(claims), str(ttl)]
    if kid:
        args.append(kid)
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def mint_py(alg, key, claims, ttl=3600, kid=None):
    """Through README's PyJWT snippet (tests/jwt_mint.py)."""
    return mint_by("/usr/bin/python3", "jwt_mint.py", alg, key, claims, ttl, kid)


def node_ready():
    if os.path.isdir(os.path.join(HERE, "node_modules", "jsonwebtoken")):
        return True
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--silent"],
                   cwd=HERE, capture_output=True)
    return os.path.isdir(os.path.join(HERE, "node_modules", "jsonwebtoken"))


def mint_js(alg, key, claims, ttl=3600, kid=None):
    """Through README's jsonwebtoken snippet (tests/jwt_mint.js)."""
    return mint_by("node", "jwt_mint.js", alg, key, claims, ttl, kid)


def hs(claims, ttl=3600, secret=SECRET, headers=None):
    c = dict(claims)
    c.setdefault("exp", int(time.time()) + ttl)
    return pyjwt.encode(c, secret, algorithm="HS256", headers=headers)


def signed_text(header, claims, key=SECRET.encode()):
    """HS256 over header and claims given as JSON text, byte for byte."""
    si = b64url(header.encode()) + "." + b64url(claims.encode())
    return si + "." + b64url(hmac.new(key, si.encode(), hashlib.sha256).digest())


def raw_token(header, claims, key):
    """A token assembled by hand (for what libraries refuse to produce)."""
    si = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return si + "." + b64url(hmac.new(key, si.encode(), hashlib.sha256).digest())


# ---- HTTP helpers ------------------------------------------------------------

def enc(s):
    return urllib.parse.quote(s, safe="")


def path_of(query, filters=(), token=None, columns=None, since=None):
    p = "/ws?query=" + enc(query)
    for f in filters:
        p += "&filter=" + enc(f)
    if columns is not None:
        p += "&columns=" + enc(columns)
    if since is not None:
        p += "&since=" + enc(since)
    if token is not None:
        p += "&token=" + enc(token)
    return p


def upgrade(port, path, headers=()):
    return ws_upgrade(port, path, headers, timeout=5)


def expect(pc, path, want, words=(), headers=(), what=""):
    st, body = upgrade(pc.port, path, headers)
    assert st == want, "%s: expected %d, got %d %s" % (what or path[:80], want, st, body.strip())
    low = body.lower()
    assert all(w in low for w in words), "%s: body %r lacks %s" % (what or path[:80], body, words)
    return body


async def connect(pc, path, headers=None):
    return await websockets.connect(pc.url(path), max_size=None, ping_interval=None,
                                    open_timeout=10, extra_headers=headers)


async def close(ws):
    try:
        await asyncio.wait_for(ws.close(), 5)
    except Exception:  # noqa: BLE001 - may be closed already
        pass


def cols(frame, member="columns"):
    return {c["name"]: c.get("value") for c in frame.get(member, [])}


def metric(pc, name):
    st, body = http_get(pc.port, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def marker(ws, table, key, val, timeout=20):
    """Frames (parsed) up to the one whose column key equals val."""
    return await recv_until(ws, lambda f: cols(f).get(key) == val, timeout)


# ---- fixtures ----------------------------------------------------------------

def make_tables():
    sql("DROP TABLE IF EXISTS j_orders, j_rooms, j_tasks, j_users, j_other, j_proj; "
        "CREATE TABLE j_orders (id serial PRIMARY KEY, customer_id text, amount int, note text); "
        "CREATE TABLE j_rooms (id int PRIMARY KEY, title text); "
        "CREATE TABLE j_tasks (id serial PRIMARY KEY, tenant_id int, archived bool, title text); "
        "CREATE TABLE j_users (id text PRIMARY KEY, name text, email text); "
        "CREATE TABLE j_other (id serial PRIMARY KEY, v text); "
        "CREATE TABLE j_proj (id int PRIMARY KEY, a text, b text, c int); "
        "ALTER TABLE j_proj REPLICA IDENTITY FULL")


KEY_A = new_rsa()
KEY_B = new_rsa()
JWKS = os.path.join(TMP, "jwks.json")


def server(extra_server=None, rules=None):
    write_jwks(JWKS, [jwk(KEY_A, "a")])
    srv = {"jwt_secret": SECRET, "jwt_keys": JWKS, "jwt_issuer": ISS, "jwt_audience": AUD}
    srv.update(extra_server or {})
    return Pgcdc({"server": srv, "rules": rules if rules is not None else RULES})


# ---- tests: tokens -----------------------------------------------------------

async def t_real_library_tokens_accepted(pc):
    toks = [("PyJWT HS256", mint_py("HS256", SECRET, claims_of())),
            ("PyJWT RS256", mint_py("RS256", KEY_A, claims_of(), kid="a"))]
    if node_ready():
        toks += [("jsonwebtoken HS256", mint_js("HS256", SECRET, claims_of())),
                 ("jsonwebtoken RS256", mint_js("RS256", KEY_A, claims_of(), kid="a"))]
    else:
        raise AssertionError("npm install of jsonwebtoken failed (tests/package.json)")
    for what, tok in toks:
        # ?token= and Authorization: Bearer both work
        ws = await connect(pc, path_of("insert:j_orders", token=tok))
        ws2 = await connect(pc, path_of("insert:j_orders"), {"Authorization": "Bearer " + tok})
        sql("INSERT INTO j_orders (customer_id, amount) VALUES ('u2', 1), ('u1', 2)")
        for w in (ws, ws2):
            got = await marker(w, "j_orders", "amount", 2)
            assert [cols(f)["customer_id"] for f in got] == ["u1"], (what, got)
            await close(w)


def t_refused_tokens_401(pc):
    now = int(time.time())
    pub_pem = KEY_A.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    good = hs(claims_of())
    h, p, s = good.split(".")
    other = b64url(json.dumps(dict(claims_of("u2"), exp=now + 3600)).encode())
    cases = [
        ("tampered claims", h + "." + other + "." + s, ("signature",)),
        ("tampered signature", h + "." + p + "." + s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],
         ("signature",)),
        ("wrong secret", hs(claims_of(), secret=SECRET + "x"), ("signature",)),
        ("expired", hs(claims_of(), ttl=-10), ("expired",)),
        ("not yet valid", hs(claims_of(nbf=now + 3600)), ("not yet valid",)),
        ("no exp", pyjwt.encode(claims_of(), SECRET, algorithm="HS256"), ("exp",)),
        ("wrong issuer", hs(claims_of(iss="https://evil.test")), ("issuer",)),
        ("wrong audience", hs(claims_of(aud=["x", "y"])), ("audience",)),
        ("alg none", b64url(b'{"alg":"none","typ":"JWT"}') + "." + p + ".", ("none",)),
        ("HS256 signed with the RSA public key",
         raw_token({"alg": "HS256", "typ": "JWT"}, dict(claims_of(), exp=now + 3600), pub_pem),
         ("signature",)),
        ("HS256 signed with the JWKS text",
         raw_token({"alg": "HS256"}, dict(claims_of(), exp=now + 3600), open(JWKS, "rb").read()),
         ("signature",)),
        ("unknown kid", mint_py("RS256", KEY_B, claims_of(), kid="zz"), ("kid",)),
        ("right kid, wrong key", mint_py("RS256", KEY_B, claims_of(), kid="a"), ("signature",)),
        ("HS512", pyjwt.encode(dict(claims_of(), exp=now + 60), SECRET + SECRET, algorithm="HS512"),
         ("algorithm",)),
        ("garbage", "not-a-jwt", ("token",)),
        ("non-canonical base64url", h + "." + p + "." + s[:-1] + B64[B64.index(s[-1]) | 1],
         ("base64url",)),
        ("duplicate claim", signed_text('{"alg":"HS256"}', '{"sub":"u2","exp":%d,"iss":"%s","aud":"%s","sub":"u1"}'
                                         % (now + 60, ISS, AUD)), ("duplicate",)),
    ]
    before = metric(pc, 'pgcdc_auth_failures_total{reason="jwt"}')
    for what, tok, words in cases:
        body = expect(pc, path_of("insert:j_orders", token=tok), 401, words, what=what)
        assert tok[:30] not in body, "%s: the body repeats the token" % what
        expect(pc, path_of("insert:j_orders"), 401, words, ("Authorization: Bearer " + tok,), what=what)
    expect(pc, path_of("insert:j_orders"), 401, ("token",), what="no token at all")
    after = metric(pc, 'pgcdc_auth_failures_total{reason="jwt"}')
    assert after - before >= 2 * len(cases) + 1, (before, after)
    log = pc.logtext()
    for what, tok, words in cases:
        assert len(tok) < 20 or tok not in log, "%s: the log holds the token" % what


def t_hostile_tokens_bounded(pc):
    now = int(time.time())
    # 100 KB: over the request-head limit (431) or refused as too long; never accepted
    big = "a" * 100000 + "." + "b" * 10 + "." + "c"
    st, _ = upgrade(pc.port, path_of("insert:j_orders", token=big))
    assert st in (401, 431), st
    st, _ = upgrade(pc.port, path_of("insert:j_orders"), ("Authorization: Bearer " + big,))
    assert st in (401, 431), st
    # 10,000 claims
    many = {"c%d" % i: i for i in range(10000)}
    many.update(claims_of(exp=now + 60))
    tok = pyjwt.encode(many, SECRET, algorithm="HS256")
    st, body = upgrade(pc.port, "/ws?query=insert:j_orders", ("Authorization: Bearer " + tok,))
    assert st in (401, 431), (st, body)
    # 300 claims fit the request but are too many
    many = {"c%d" % i: i for i in range(300)}
    many.update(claims_of(exp=now + 60))
    expect(pc, path_of("insert:j_orders", token=pyjwt.encode(many, SECRET, algorithm="HS256")),
           401, ("too many",), what="300 claims")
    # nesting
    deep = 1
    for _ in range(40):
        deep = [deep]
    expect(pc, path_of("insert:j_orders", token=hs(claims_of(d=deep))), 401, ("nested",),
           what="deeply nested claims")
    t0 = time.time()
    for _ in range(20):
        upgrade(pc.port, path_of("insert:j_orders", token=hs(claims_of(d=deep))))
    assert time.time() - t0 < 10, "hostile tokens are slow to refuse"
    assert http_get(pc.port, "/ping")[0] == 200


async def t_expiry_closes_1008(pc):
    exp = int(time.time()) + 3
    tok = hs(claims_of(exp=exp))
    ws = await connect(pc, path_of("insert:j_orders", token=tok))
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as e:
        closed = time.time()
        code, reason = e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else None
    assert code == 1008 and reason == "token expired", (code, reason)
    assert exp <= closed + 0.05 and closed - exp < 1.0, "closed %.2f s after exp" % (closed - exp)


async def t_key_rotation_sighup(pc):
    tok_a = mint_py("RS256", KEY_A, claims_of(), kid="a")
    ws = await connect(pc, path_of("insert:j_orders", token=tok_a))
    write_jwks(JWKS, [jwk(KEY_B, "b")])
    pc.proc.send_signal(signal.SIGHUP)
    tok_b = mint_py("RS256", KEY_B, claims_of(), kid="b")
    wait_until(lambda: upgrade(pc.port, path_of("insert:j_orders", token=tok_b))[0] == 101, 10,
               "the new key after SIGHUP")
    expect(pc, path_of("insert:j_orders", token=tok_a), 401, ("kid",), what="old key after rotation")
    # the connected client was kept and still receives
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('u1', 77)")
    got = await marker(ws, "j_orders", "amount", 77)
    assert got, got
    # a broken file keeps the keys and says why
    with open(JWKS, "w") as f:
        f.write('{"keys":[{"kty":"RSA","n":"AA","e":"AQAB"}]}')
    pc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "zero" in pc.logtext(), 10, "a log line about the bad key file")
    expect(pc, path_of("insert:j_orders", token=tok_b), 101, what="key kept after a bad file")
    await close(ws)


# ---- tests: Server-Sent Events ---------------------------------------------------

class SSE:
    """A raw /sse stream: status, then events as (event-type, data) pairs."""

    def __init__(self, port, path, headers=()):
        import socket
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (path, port)
        for h in headers:
            req += h + "\r\n"
        self.s.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            b = self.s.recv(65536)
            if not b:
                break
            self.buf += b
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
        self.head = head.decode("latin-1")

    def event(self, timeout=20):
        """The next event with data, as (type or None, data text); None at EOF."""
        deadline = time.time() + timeout
        while True:
            while b"\n\n" in self.buf:
                ev, _, self.buf = self.buf.partition(b"\n\n")
                fields = dict(ln.split(b": ", 1) for ln in ev.split(b"\n") if b": " in ln and not ln.startswith(b":"))
                if b"data" in fields:
                    t = fields.get(b"event")
                    return (t.decode() if t else None), fields[b"data"].decode()
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("no SSE event within %d s" % timeout)
            self.s.settimeout(left)
            b = self.s.recv(65536)
            if not b:
                return None
            self.buf += b

    def close(self):
        self.s.close()


def sse_path(query, token=None, extra=""):
    return "/sse?query=" + enc(query) + ("&token=" + enc(token) if token else "") + extra


def t_sse_jwt(pc):
    c = SSE(pc.port, sse_path("insert:j_orders"))
    assert c.status == 401, c.head
    c.close()
    c = SSE(pc.port, sse_path("insert:j_other", hs(claims_of())))
    assert c.status == 403, c.head
    c.close()
    exp = int(time.time()) + 4
    c = SSE(pc.port, sse_path("insert:j_orders", hs(claims_of("u5", exp=exp)), "&columns=amount"))
    c2 = SSE(pc.port, "/sse?query=insert:j_orders", ("Authorization: Bearer " + hs(claims_of("u6")),))
    assert c.status == 200 and c2.status == 200, (c.head, c2.head)
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('u6', 60), ('u5', 50), ('u6', 61)")
    t, data = c.event()
    assert t is None and json.loads(data)["columns"] == [{"name": "amount", "type": "integer", "value": 50}], data
    got = [json.loads(c2.event()[1]) for _ in range(2)]
    assert [cols(f)["amount"] for f in got] == [60, 61], got
    # at exp: event: close saying why, then the end of the stream
    ev = c.event(timeout=15)
    assert ev is not None and ev[0] == "close" and "token expired" in ev[1], ev
    assert time.time() - exp < 1.5, "closed %.2f s after exp" % (time.time() - exp)
    c.close()
    c2.close()


# ---- tests: rules --------------------------------------------------------------

async def t_rules_two_users(pc):
    w1 = await connect(pc, path_of("*:j_orders", token=hs(claims_of("u1"))))
    w2 = await connect(pc, path_of("*:j_orders", token=hs(claims_of("u2"))))
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('u1', 10), ('u2', 20), ('u3', 30), "
        "('u1', 11), ('u2', 21); INSERT INTO j_orders (customer_id, amount) VALUES ('u1', 99), ('u2', 99)")
    g1 = await marker(w1, "j_orders", "amount", 99)
    g2 = await marker(w2, "j_orders", "amount", 99)
    assert [(cols(f)["customer_id"], cols(f)["amount"]) for f in g1] == [("u1", 10), ("u1", 11), ("u1", 99)], g1
    assert [(cols(f)["customer_id"], cols(f)["amount"]) for f in g2] == [("u2", 20), ("u2", 21), ("u2", 99)], g2
    # client filter intersection
    w3 = await connect(pc, path_of("insert:j_orders", ["amount.gt.50"], token=hs(claims_of("u1"))))
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('u1', 5), ('u2', 500), ('u1', 55), ('u1', 999)")
    g3 = await marker(w3, "j_orders", "amount", 999)
    assert [cols(f)["amount"] for f in g3] == [55, 999], g3
    for w in (w1, w2, w3):
        await close(w)
    assert "sub=u1" in pc.logtext(), "sub not logged"
    # a sub with control bytes is logged escaped: no terminal escapes, no forged line
    w4 = await connect(pc, path_of("insert:j_orders", token=hs(claims_of("evil\x1b[2J\nfake line"))))
    await close(w4)
    log = wait_until(lambda: "sub=evil" in pc.logtext() and pc.logtext(), 10, "the sub in the log")
    assert "sub=evil\\x1b[2J\\nfake line" in log, [ln for ln in log.splitlines() if "sub=evil" in ln]
    assert "\x1b" not in log and "\nfake line" not in log


async def t_rules_in_and_nested(pc):
    w = await connect(pc, path_of("insert:j_rooms", token=hs(claims_of(rooms=[1, "3"]))))
    sql("INSERT INTO j_rooms VALUES (1,'a'),(2,'b'),(3,'c'),(4,'d')")
    got = await marker(w, "j_rooms", "id", 3)
    assert [cols(f)["id"] for f in got] == [1, 3], got
    await close(w)
    w = await connect(pc, path_of("insert:j_tasks", token=hs(claims_of(app={"tenant": 7}))))
    sql("INSERT INTO j_tasks (tenant_id, archived, title) VALUES (7, true, 'x'), (8, false, 'y'), "
        "(7, false, 'mine')")
    got = await marker(w, "j_tasks", "title", "mine")
    assert [cols(f)["title"] for f in got] == ["mine"], got
    await close(w)


def t_rules_refusals_403(pc):
    before = metric(pc, 'pgcdc_auth_failures_total{reason="rule"}')
    cases = [
        (path_of("insert:j_other", token=hs(claims_of())), ("no rule for table",), "table without rule"),
        (path_of("insert:j_rooms", token=hs(claims_of())), ("rooms",), "missing claim"),
        (path_of("insert:j_rooms", token=hs(claims_of(rooms="1,2"))), ("rooms",), "in needs an array"),
        (path_of("insert:j_rooms", token=hs(claims_of(rooms=[1, [2]]))), ("rooms",), "nested array"),
        (path_of("insert:j_orders", token=hs(claims_of(sub={"a": 1}))), ("sub",), "object for eq"),
        (path_of("insert:j_orders", token=hs(dict(claims_of(), sub=None))), ("sub",), "null for eq"),
        (path_of("insert:j_tasks", token=hs(claims_of(app=7))), ("app.tenant",), "path into a number"),
        (path_of("insert:j_users", token=hs(claims_of()), columns="id,email"), ("columns",),
         "columns beyond the rule"),
    ]
    for path, words, what in cases:
        expect(pc, path, 403, words, what=what)
    after = metric(pc, 'pgcdc_auth_failures_total{reason="rule"}')
    assert after - before >= len(cases), (before, after)
    # authorization before the catalog: an unknown table with no rule is 403, not 400
    expect(pc, path_of("insert:j_nonexistent", token=hs(claims_of())), 403, ("no rule",))


async def t_rules_injection(pc):
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('1', 1), ('2', 2)")
    subs = ["1,2)", "x&filter=", "u1&filter=amount.gt.0", "1)", "(1,2)", "*", "u1%26x",
            "\"u1\"", "u1\\", "{sub}"]
    socks = []
    for s in subs:
        socks.append((s, await connect(pc, path_of("*:j_orders", token=hs(claims_of(s))))))
    # an in-list claim whose elements hold commas: one value each, never
    # split again (14 is the marker that the subscription works)
    wr = await connect(pc, path_of("insert:j_rooms", token=hs(claims_of(rooms=["11,12", "13)", 14]))))
    # also a claim that is a filter in disguise for in
    rows = ", ".join("('%s', %d)" % (s.replace("'", "''"), 1000 + i) for i, s in enumerate(subs))
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('1', 5), ('2', 6), ('u1', 7), ('x', 8), "
        + rows)
    sql("INSERT INTO j_rooms VALUES (11, 'eleven'), (12, 'twelve'), (13, 'thirteen'), (14, 'fourteen')")
    for i, (s, w) in enumerate(socks):
        got = await marker(w, "j_orders", "amount", 1000 + i)
        assert [cols(f)["customer_id"] for f in got] == [s], (s, got)
        await close(w)
    got = await marker(wr, "j_rooms", "id", 14)
    assert [cols(f)["id"] for f in got] == [14], "rooms [\"11,12\", \"13)\", 14] received %s" % [
        cols(f)["id"] for f in got]
    try:
        msg = await asyncio.wait_for(wr.recv(), 0.5)
        raise AssertionError("rooms [\"11,12\", \"13)\", 14] received %s" % msg[:100])
    except asyncio.TimeoutError:
        pass
    await close(wr)


async def t_rule_columns_hide_bytes(pc):
    tok = hs(claims_of("u9"))
    w = await connect(pc, path_of("*:j_users", token=tok))
    w2 = await connect(pc, path_of("*:j_users", token=tok, columns="name"))
    sql("INSERT INTO j_users VALUES ('u9', 'Nine', 'secret-mail@example.com'), "
        "('u8', 'Eight', 'other@example.com'); UPDATE j_users SET email = 'x@y' WHERE id = 'u9'")
    raw = [await asyncio.wait_for(w.recv(), 20) for _ in range(2)]
    assert all("email" not in m and "@" not in m for m in raw), raw
    assert [json.loads(m)["action"] for m in raw] == ["I", "U"], raw
    assert [c["name"] for c in json.loads(raw[0])["columns"]] == ["id", "name"], raw[0]
    raw2 = await asyncio.wait_for(w2.recv(), 20)
    assert [c["name"] for c in json.loads(raw2)["columns"]] == ["name"], raw2
    await close(w)
    await close(w2)


async def t_rules_snapshot(pc):
    """Rules and ;columns= apply to snapshot rows as to changes."""
    sql("DELETE FROM j_orders; DELETE FROM j_users; "
        "INSERT INTO j_orders (customer_id, amount) VALUES ('s1', 1), ('s2', 2), ('s1', 3), ('s3', 4); "
        "INSERT INTO j_users VALUES ('s1', 'One', 'one@example.com'), ('s2', 'Two', 'two@example.com')")

    async def snapshot(path):
        ws = await connect(pc, path + "&snapshot=1")
        rows = []
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if m["action"] == "E":
                return ws, rows, m
            assert m["action"] == "S", m
            rows.append(m)

    w1, r1, e1 = await snapshot(path_of("*:j_orders", token=hs(claims_of("s1"))))
    w2, r2, e2 = await snapshot(path_of("*:j_orders", ["amount.gt.1"], token=hs(claims_of("s2"))))
    assert sorted(cols(r)["amount"] for r in r1) == [1, 3] and e1["rows"] == 2, (r1, e1)
    assert [cols(r)["amount"] for r in r2] == [2] and e2["rows"] == 1, (r2, e2)
    w3, r3, _ = await snapshot(path_of("*:j_users", token=hs(claims_of("s2"))))
    assert [[c["name"] for c in r["columns"]] for r in r3] == [["id", "name"]], r3
    assert cols(r3[0]) == {"id": "s2", "name": "Two"}, r3
    # then the changes, filtered the same way
    sql("INSERT INTO j_orders (customer_id, amount) VALUES ('s2', 20), ('s1', 10)")
    got = await marker(w1, "j_orders", "amount", 10)
    assert [cols(f)["customer_id"] for f in got] == ["s1"], got
    for w in (w1, w2, w3):
        await close(w)


# ---- tests: columns= projection (no authentication needed) --------------------

def strip_cols(text, keep):
    """The expected projected bytes: the wal2json text with the column
    objects of other names cut out of "columns" and "identity"."""
    def cut(m):
        objs = re.findall(r'\{"name":"[^"]*","type":"[^"]*","value":(?:"[^"]*"|[^,}]*)\}', m.group(2))
        kept = [o for o in objs if re.match(r'\{"name":"([^"]*)"', o).group(1) in keep]
        return m.group(1) + ",".join(kept) + "]"
    return re.sub(r'("(?:columns|identity)":\[)(.*?)\]', cut, text)


async def t_columns_projection_bytes(plain):
    full = await connect(plain, path_of("*:j_proj"))
    ca = await connect(plain, path_of("*:j_proj", columns="c,a"))
    ca2 = await connect(plain, path_of("*:j_proj", columns="a,c"))
    cb = await connect(plain, path_of("*:j_proj", ["c.gt.5"], columns="b"))
    sql("INSERT INTO j_proj VALUES (1, 'a1', 'b1', 1), (2, 'a2', 'b2', 9); "
        "UPDATE j_proj SET a = 'a2x' WHERE id = 2; DELETE FROM j_proj WHERE id = 1")
    fr = [await asyncio.wait_for(full.recv(), 20) for _ in range(4)]
    pa = [await asyncio.wait_for(ca.recv(), 20) for _ in range(4)]
    pa2 = [await asyncio.wait_for(ca2.recv(), 20) for _ in range(4)]
    for f, p, p2 in zip(fr, pa, pa2):
        assert p == strip_cols(f, {"a", "c"}), (f, p)
        assert p2 == p, "same projection, other order: %s / %s" % (p, p2)
    assert '"identity":[{"name":"a","type":"text","value":"a2"},{"name":"c","type":"integer","value":9}]' in pa[2], pa[2]
    # filters see the whole row: c.gt.5 on rows projected to b
    pb = [await asyncio.wait_for(cb.recv(), 20) for _ in range(2)]
    assert [json.loads(m)["action"] for m in pb] == ["I", "U"], pb
    assert pb[0] == strip_cols(fr[1], {"b"}), pb[0]
    # history replay is projected too
    pos = json.loads(fr[0])["pos"]
    rp = await connect(plain, path_of("*:j_proj", columns="c,a", since=pos))
    got = [await asyncio.wait_for(rp.recv(), 20) for _ in range(3)]
    assert got == pa[1:], (got, pa[1:])
    for w in (full, ca, ca2, cb, rp):
        await close(w)
    expect(plain, path_of("*:j_proj", columns="a,nope"), 400, ("nope",), what="unknown column")
    expect(plain, path_of("*:j_proj", columns=""), 400, ("columns",), what="empty columns")
    expect(plain, path_of("*:j_proj", columns="a,,b"), 400, ("columns",), what="empty name")


# ---- tests: configuration ----------------------------------------------------

def config_error(sections, *words):
    d = tempfile.mkdtemp(prefix="pgcdc-jwtcfg-", dir=TMP)
    path = os.path.join(d, "pgcdc.config")
    with open(path, "w") as f:
        f.write("[postgres]\nconninfo = host=/tmp\n")
        for sec, lines in sections:
            f.write("[%s]\n" % sec)
            for line in lines:
                f.write(line + "\n")
    p = subprocess.run([PGCDC, "-t", "-c", path], capture_output=True, text=True, timeout=20)
    out = p.stdout + p.stderr
    assert p.returncode == 1, "exit %d for %s: %s" % (p.returncode, sections, out)
    low = out.lower()
    assert path in out and all(w.lower() in low for w in words), "%s: %s" % (words, out)
    return out


def t_config_errors():
    big = os.path.join(TMP, "big.json")
    with open(big, "w") as f:
        json.dump({"keys": [{"kty": "RSA", "e": "AQAB", "n": b64url(b"\xff" * 2047 + b"\x01")}]}, f)
    zero = os.path.join(TMP, "zero.json")
    with open(zero, "w") as f:
        json.dump({"keys": [{"kty": "RSA", "e": "AQAB", "n": "AA"}]}, f)
    ok = "jwt_secret = " + SECRET
    out = config_error([("server", ["jwt_keys = " + big])], "4096", "jwt_keys")
    assert ":4:" in out, out
    config_error([("server", ["jwt_keys = " + zero])], "zero")
    config_error([("server", ["jwt_keys = " + os.path.join(TMP, "missing.json")])], "jwt_keys")
    config_error([("server", ["jwt_secret = 0123456789abcdef0123456789abcde"])], "32")
    config_error([("server", [ok, "token = 0123456789abcdef0123"])], "token")
    config_error([("server", [ok, "grant_secret = 0123456789abcdef0123"])], "grant_secret")
    for rule, word in (("public.t = id.eq.{sub", "placeholder"),
                       ("public.t = id.eq.{}", "placeholder"),
                       ("public.t = id.eq.x{sub}", "placeholder"),
                       ("public.t = id.is.{sub}", "is takes"),
                       ("public.t = bad", "filter"),
                       ("public.t = id.eq.1;columns=", "columns"),
                       ("public.t = id.eq.1;rows=1", "columns"),
                       ('"public.t = allow', "table"),
                       ("public.t = ", "rule")):
        out = config_error([("server", [ok]), ("rules", [rule])], word)
        assert re.search(r":6\b", out), "no line number for %r: %s" % (rule, out)
    config_error([("rules", ["public.t = allow"])], "rules", "jwt")
    config_error([("server", [ok]), ("rules", ["public.t = allow", "public.t = allow"])], "duplicate")


# ---- README ------------------------------------------------------------------

def t_readme_snippets():
    """README's minting snippets are the code of tests/jwt_mint.py and .js
    (which the tests above run), paragraph by paragraph."""
    with open(os.path.join(os.path.dirname(HERE), "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Login tokens")
    section = text[start:text.index("\n## ", start + 5)]
    files = {"python": "jwt_mint.py", "js": "jwt_mint.js"}
    seen = set()
    for lang, code in re.findall(r"^```(\w+)\n(.*?)^```", section, re.S | re.M):
        if lang not in files:
            continue
        with open(os.path.join(HERE, files[lang]), encoding="utf-8") as f:
            src = f.read()
        for chunk in re.split(r"\n\s*\n", code.strip("\n")):
            assert chunk in src, "README's %s snippet is not in tests/%s:\n%s" % (lang, files[lang], chunk)
        seen.add(lang)
    assert seen == set(files), "snippets found for %s only" % sorted(seen)
    assert re.search(r"^\[rules\]$", section, re.M), "no [rules] example"


# ---- main --------------------------------------------------------------------

def main():
    make_tables()
    tests = [
        ("real library tokens accepted (PyJWT, jsonwebtoken; Bearer and ?token=)", t_real_library_tokens_accepted),
        ("refused tokens: 401 with the reason, never the token", t_refused_tokens_401),
        ("hostile tokens refused with bounded cost", t_hostile_tokens_bounded),
        ("rules: two users see only their rows; client filters intersect", t_rules_two_users),
        ("rules: in.{array} and nested claim paths", t_rules_in_and_nested),
        ("rules: 403 for no rule, missing or mistyped claims, columns beyond the rule", t_rules_refusals_403),
        ("rules: placeholder injection gets nothing extra", t_rules_injection),
        ("rules: ;columns= hides a column from the bytes", t_rule_columns_hide_bytes),
        ("rules: snapshot rows filtered and projected by the rule", t_rules_snapshot),
        ("token expiry closes with 1008 within a second of exp", t_expiry_closes_1008),
        ("key rotation: rewrite the JWKS file, SIGHUP, clients stay", t_key_rotation_sighup),
        ("SSE: JWT by ?token= or Bearer, rules, columns=, event: close at exp", t_sse_jwt),
    ]
    pc = server()
    pc.start()
    try:
        for name, fn in tests:
            if selected(name):
                run_test(name, fn, pc)
    finally:
        pc.stop()
    if selected("columns= projection"):
        plain = Pgcdc()
        plain.start()
        try:
            run_test("columns= projection: bytes, identity, filters on hidden columns, replay", t_columns_projection_bytes, plain)
        finally:
            plain.stop()
    if selected("README"):
        run_test("README: the minting snippets are tests/jwt_mint.py and .js", t_readme_snippets)
    if selected("configuration errors"):
        run_test("configuration errors: key files, secrets, exclusivity, [rules] with file:line", t_config_errors)
    shutil.rmtree(TMP, ignore_errors=True)
    finish()


main()
