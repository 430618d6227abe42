"""suite_harden.py -- safe defaults and what an attacker or an auditor would
try (docs/protocol.md: command line, configuration, HTTP, WebSocket):
secrets kept out of logs, log injection, minimum secret lengths, the
same-origin default, admin_listen, HEAD without a body, connections that
never finish a request, authorization before the catalog, and refusals a
browser can read (close 4000 + status)."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (PGCDC, Pgcdc, conninfo, http_get, raw_http, run_selected,  # noqa: E402
                     sql, wait_until)
from grant_mint import mint  # noqa: E402

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TOKEN = "a-token-of-24-bytes-long"
SECRET = "a grant secret of 32 bytes......"


def upgrade(port, path, headers=(), host=None, timeout=5, after101=0.5):
    """A WebSocket upgrade by hand.  Returns (status, head, body, close)
    where close is (code, reason) of the first frame after a 101 when it is
    a close frame, else None."""
    host = host or "127.0.0.1:%d" % port
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, KEY))
    for h in headers:
        req += h + "\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall((req + "\r\n").encode("latin-1"))
    data = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            b = s.recv(65536)
            if not b:
                break
            data += b
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            if head.startswith(b"HTTP/1.1 101"):
                if len(rest) >= 2 and len(rest) >= 2 + (rest[1] & 0x7f):
                    break
                deadline = min(deadline, time.time() + after101)
                s.settimeout(max(0.01, deadline - time.time()))
            else:
                cl = [int(x.split(b":")[1]) for x in head.split(b"\r\n")
                      if x.lower().startswith(b"content-length:")]
                if cl and len(rest) >= cl[0]:
                    break
    except socket.timeout:
        pass
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
    close = None
    if status == 101 and len(rest) >= 2 and rest[0] == 0x88:
        n = rest[1] & 0x7f
        payload = rest[2:2 + n]
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        close = (code, payload[2:].decode("utf-8", "replace"))
    return status, head.decode("latin-1"), (rest.decode("utf-8", "replace") if status != 101 else ""), close


def expect_http(port, path, status, headers=(), body_has=None, host=None):
    st, head, body, close = upgrade(port, path, headers, host)
    assert st == status, "%s %s: got %d %s, expected %d: %s" % (path, headers, st, close, status, body.strip())
    if status != 101:
        assert "text/plain" in head and body.strip() and "\n" not in body.strip(), (head, body)
        if body_has:
            assert body_has in body.lower(), "body %r lacks %r" % (body, body_has)
    return body


def expect_close(port, path, code, headers=(), reason_has=None, host=None):
    st, head, body, close = upgrade(port, path, headers, host, after101=5)
    assert st == 101, "%s %s: got %d %r, expected 101 then close %d" % (path, headers, st, body.strip(), code)
    assert close is not None, "%s: 101 but no close frame followed" % path
    assert close[0] == code, "%s: close %r, expected %d" % (path, close, code)
    assert close[1] and "\n" not in close[1], close
    if reason_has:
        assert reason_has in close[1].lower(), "reason %r lacks %r" % (close[1], reason_has)
    return close[1]


def metric(port, name):
    st, body = http_get(port, "/metrics")
    assert st == 200, st
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def write_config(text):
    d = tempfile.mkdtemp(prefix="pgcdc-harden-")
    path = os.path.join(d, "pgcdc.config")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_t(text):
    path = write_config(text)
    p = subprocess.run([PGCDC, "-t", "-c", path], capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout + p.stderr, path


def setup_table(name):
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, name text)" % (name, name))


# ---- secrets and logs -------------------------------------------------------

def t_conninfo_not_echoed():
    """A malformed conninfo is a configuration error (file:line, key) that
    never shows the value, at -t too; libpq's complaints about option values
    at connect time do not show them either."""
    rc, out, path = run_t("[postgres]\n# comment\nconninfo = user=postgres Hunter2Secret\n")
    assert rc == 1, "-t accepted a malformed conninfo: %r" % out
    assert "%s:3:" % path in out and "conninfo" in out, out
    assert "Hunter2Secret" not in out and "configuration ok" not in out, out
    rc, out, path = run_t("[postgres]\nconninfo = host=x password='Hunter2Secret\n")
    assert rc == 1 and "Hunter2Secret" not in out, out
    # the server refuses it the same way before starting
    p = subprocess.run([PGCDC, "-c", path], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "Hunter2Secret" not in p.stdout + p.stderr, p.stderr
    # valid ones still pass
    for ok in ("host=/tmp port=5432 user=u password='a b' dbname=d",
               "postgresql://u:pw@localhost:5432/db?sslmode=disable", "mydb"):
        rc, out, _ = run_t("[postgres]\nconninfo = %s\n" % ok)
        assert rc == 0 and "configuration ok" in out, (ok, out)
    # syntactically fine, but libpq rejects a value when connecting
    pc = Pgcdc({"postgres": {"conninfo": conninfo() + " sslmode=Hunter2Secret"}})
    pc.start(wait_streaming=False)
    try:
        wait_until(lambda: "replication" in pc.logtext() and "conninfo" in pc.logtext(), 15,
                   lambda: "a replication error in the log: " + pc.logtext()[-500:])
        assert "Hunter2Secret" not in pc.logtext(), pc.logtext()[-800:]
    finally:
        pc.stop()


def t_log_escapes():
    """Values from clients reach the log with control bytes escaped."""
    setup_table("hz_log")
    with Pgcdc() as p:
        expect_http(p.port, "/ws?query=insert:hz_log:name.eq.x%1b%5b2J%0dforged%0aline", 101)
        expect_http(p.port, "/ws?query=insert:hz_log%1b%5b31m", 400)
        expect_http(p.port, "/nosuch%1b%5b2J", 404)
        wait_until(lambda: "x\\x1b[2J\\rforged\\nline" in p.logtext(), 10,
                   lambda: "the escaped query in the log: " + p.logtext()[-600:])
        wait_until(lambda: "hz_log\\x1b[31m" in p.logtext(), 10, "the refused query, escaped")
        raw = open(p.log, "rb").read()
        bad = [b for b in raw if (b < 0x20 and b != 0x0a) or b == 0x7f]
        assert not bad, "raw control bytes in the log: %r" % sorted(set(bad))
        for line in raw.split(b"\n"):
            assert not line.startswith(b"forged"), "a client forged a log line"


def t_secret_minimum():
    """token and grant_secret shorter than 16 bytes are configuration errors."""
    base = "[postgres]\nconninfo = dbname=x\n[server]\n"
    for key in ("token", "grant_secret"):
        rc, out, path = run_t(base + "%s = %s\n" % (key, "x" * 15))
        assert rc == 1 and "%s:4:" % path in out and key in out and "16" in out, out
        assert "x" * 15 not in out, out
        rc, out, _ = run_t(base + "%s = %s\n" % (key, "x" * 16))
        assert rc == 0, out


# ---- Origin, admin_listen, HEAD ----------------------------------------------

def t_origin_default():
    """By default only the server's own origin (and no Origin) is allowed."""
    setup_table("hz_orig")
    q = "/ws?query=*:hz_orig"
    with Pgcdc() as p:
        own = "127.0.0.1:%d" % p.port
        expect_http(p.port, q, 101)                                   # not a browser
        expect_http(p.port, q, 101, ["Origin: http://" + own])         # the built-in page
        expect_http(p.port, q, 101, ["Origin: https://" + own])
        expect_http(p.port, q, 101, ["Origin: http://LocalHost:%d" % p.port], host="localhost:%d" % p.port)
        expect_http(p.port, q, 403, ["Origin: https://evil.example"], "origin")
        expect_http(p.port, q, 403, ["Origin: http://localhost:%d" % p.port], "origin")
        expect_http(p.port, q, 403, ["Origin: http://127.0.0.1:%d" % (p.port + 1)], "origin")
        expect_http(p.port, q, 403, ["Origin: null"], "origin")
        expect_http(p.port, q, 403, ["Origin: http://" + own, "Origin: http://" + own], "origin")
        assert metric(p.port, 'pgcdc_auth_failures_total{reason="origin"}') >= 5
    with Pgcdc({"server": {"allowed_origins": "https://app.example"}}) as p:
        expect_http(p.port, q, 101, ["Origin: https://app.example"])
        expect_http(p.port, q, 101, ["Origin: http://127.0.0.1:%d" % p.port])
        expect_http(p.port, q, 403, ["Origin: https://evil.example"], "origin")
    with Pgcdc({"server": {"allowed_origins": "*"}}) as p:
        expect_http(p.port, q, 101, ["Origin: https://evil.example"])


def t_admin_listen():
    """With admin_listen, /health and /metrics answer only there."""
    from harness import free_port
    aport = free_port()
    # Pgcdc.start polls /health on the public port, which is now 404: start by hand
    pc = Pgcdc({"server": {"admin_listen": "127.0.0.1:%d" % aport}})
    pc.start(wait_streaming=False)
    try:
        assert http_get(pc.port, "/ping")[0] == 200
        assert http_get(pc.port, "/health")[0] == 404
        assert http_get(pc.port, "/metrics")[0] == 404
        wait_until(lambda: http_get(aport, "/health")[0] == 200, 20, "/health on admin_listen")
        st, body = http_get(aport, "/metrics")
        assert st == 200 and "pgcdc_clients" in body, st
        st, _, _, _ = upgrade(aport, "/ws?query=*:hz_orig")
        assert st == 404, "admin_listen serves /ws: %d" % st
    finally:
        pc.stop()


def head_request(port, path):
    data = raw_http(port, ("HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode(), timeout=3)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no complete answer to HEAD %s: %r" % (path, data[:100])
    return int(head.split(b" ")[1]), head, body


def get_status(port, path):
    data = raw_http(port, ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode(), timeout=3)
    return int(data.split(b" ")[1])


def t_head_no_body():
    """HEAD is answered like GET (same status) and never carries a body,
    whatever the status; on /ws that is GET's 426, since a HEAD cannot be
    an upgrade."""
    with Pgcdc() as p:
        for path, status in (("/nosuch", 404), ("/ws?query=*:x", 426), ("/ping", 200),
                             ("/health", 200), ("/metrics", 200), ("/", 200)):
            st, head, body = head_request(p.port, path)
            assert st == status, "HEAD %s: %d, expected %d" % (path, st, status)
            gst = get_status(p.port, path)
            assert gst == st, "HEAD %s: %d, GET: %d" % (path, st, gst)
            assert body == b"", "HEAD %s (%d) carried a body: %r" % (path, st, body[:80])
            assert b"Content-Length: " in head, head


# ---- connections that never finish a request -------------------------------

def idle(addr, port):
    s = socket.socket()
    s.bind((addr, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /ws?query=*:x HTTP/1.1\r\nHost: x\r\n")   # never finished
    return s


def closed_by_server(s):
    s.setblocking(False)
    try:
        return s.recv(4096) == b"" or True
    except BlockingIOError:
        return False
    except OSError:
        return True


def t_unfinished_requests():
    """Idle connections that never finish a request cannot keep WebSocket
    clients out: they are limited apart from the clients and per peer, the
    oldest shed first, and established clients keep being served."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    setup_table("hz_idle")
    with Pgcdc({"server": {"max_clients": "4"}}) as p:
        st, _, _, _ = upgrade(p.port, "/ws?query=*:hz_idle")
        assert st == 101
        est = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        est.sendall(("GET /ws?query=insert:hz_idle HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     % KEY).encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += est.recv(4096)
        assert got.startswith(b"HTTP/1.1 101"), got[:40]
        socks = []
        # 1,100 idle connections from 40 addresses (27-28 each)
        for i in range(1100):
            socks.append(idle("127.0.0.%d" % (2 + i % 40), p.port))
        # a new client is served
        st, _, body, _ = upgrade(p.port, "/ws?query=*:hz_idle", timeout=10)
        assert st == 101, "new WebSocket client got %d: %s" % (st, body.strip())
        assert http_get(p.port, "/ping", timeout=10)[0] == 200
        # the oldest idle connections were shed, the newest are still open
        # (checked before their 10 s request timeout could close them)
        wait_until(lambda: closed_by_server(socks[0]), 8, "the oldest idle connection to be shed")
        assert not closed_by_server(socks[-1]), "the newest idle connection was closed"
        wait_until(lambda: "shed" in p.logtext(), 5, "a log line about shedding")
        for s in socks:
            s.close()
        # the established one still receives changes
        sql("INSERT INTO hz_idle VALUES (1, 'after the flood')")
        est.settimeout(30)
        buf = b""
        while b"after the flood" not in buf:
            b = est.recv(65536)
            assert b, "established client was disconnected"
            buf += b
        # one peer address alone is limited well below the global limit
        early = idle("127.0.0.60", p.port)
        mine = [idle("127.0.0.61", p.port) for _ in range(100)]
        wait_until(lambda: closed_by_server(mine[0]), 8, "one peer's oldest idle connection to be shed")
        assert not closed_by_server(mine[-1])
        assert not closed_by_server(early), "another peer's connection was shed"
        for s in mine + [early, est]:
            s.close()
        assert p.proc.poll() is None, "pgcdc died"


# ---- authorization before the catalog ----------------------------------------

def catalog_backends(app):
    return int(sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                   "AND backend_type = 'client backend'" % app))


def t_no_probe_without_grant():
    """With grant_secret, an unauthorized client gets the same 401 for a table
    that exists, one that does not and a catalog table, and pgcdc asks the
    database nothing for it; an authorized one learns that a table is
    missing, and repeated look-ups of a missing table are cached."""
    setup_table("hz_probe")
    sql("DROP TABLE IF EXISTS hz_nope")
    app = "hzprobe%d" % os.getpid()
    pc = Pgcdc({"server": {"grant_secret": SECRET},
                "postgres": {"conninfo": conninfo() + " application_name=" + app}})
    with pc as p:
        bad, missing = set(), set()
        for q in ("insert:hz_nope", "insert:hz_probe", "insert:pg_catalog.pg_class",
                  "insert:nosuchschema.t"):
            bad.add(expect_http(p.port, "/ws?query=%s&grant=garbage" % q, 401))
            missing.add(expect_http(p.port, "/ws?query=%s" % q, 401))
        assert len(bad) == 1 and len(missing) == 1, (bad, missing)
        g = mint(SECRET, "insert:hz_probe")
        expect_http(p.port, "/ws?query=insert:hz_nope&grant=" + g, 403, body_has="grant")
        time.sleep(0.3)
        assert catalog_backends(app) == 0, "the catalog was asked on behalf of unauthorized clients"
        assert metric(p.port, 'pgcdc_auth_failures_total{reason="grant"}') >= 9
        gn = mint(SECRET, "insert:hz_nope")
        for _ in range(6):
            expect_http(p.port, "/ws?query=insert:hz_nope&grant=" + gn, 400, body_has="exist")
        expect_http(p.port, "/ws?query=insert:hz_probe&grant=" + g, 101)
        lookups = p.logtext().count("catalog: looking up public.hz_nope")
        assert 1 <= lookups < 6, "missing table looked up %d times for 6 requests" % lookups


# ---- refusals a browser can read ---------------------------------------------

def t_browser_refusals():
    """A valid upgrade with an allowed Origin that fails a later check gets
    101 then close 4000 + status with the reason; without Origin the plain
    status; a disallowed Origin is a plain 403."""
    setup_table("hz_br")
    sql("DROP TABLE IF EXISTS hz_br_missing")
    cfg = {"server": {"token": TOKEN, "max_clients": "1"}, "postgres": {"tables": "public.hz_br, public.hz_br_missing"}}
    with Pgcdc(cfg) as p:
        own = ["Origin: http://127.0.0.1:%d" % p.port]
        auth = ["Authorization: Bearer " + TOKEN]
        ok = "/ws?query=*:hz_br"
        cases = [  # path, headers, status, reason fragment
            ("/ws?query=bogus", auth, 400, "query"),
            (ok, [], 401, "token"),
            (ok + "&token=wrongwrongwrong", [], 401, "invalid"),
            ("/ws?query=*:other_table", auth, 403, "tables"),
            ("/ws?query=*:hz_br_missing", auth, 400, "exist"),
            (ok + "&since=0/1:0", auth, 410, "reload"),
            (ok + "&since=garbage", auth, 400, "since"),
        ]
        before = metric(p.port, 'pgcdc_auth_failures_total{reason="token"}')
        for path, hdrs, status, frag in cases:
            expect_http(p.port, path, status, hdrs, frag)
            expect_close(p.port, path, 4000 + status, hdrs + own, frag)
        after = metric(p.port, 'pgcdc_auth_failures_total{reason="token"}')
        assert after - before == 4, "token failures counted %d, expected 4" % (after - before)
        # capacity: one client holds the only place
        holder = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        holder.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n"
                        % (ok, KEY, TOKEN)).encode())
        assert holder.recv(4096).startswith(b"HTTP/1.1 101")
        expect_http(p.port, ok, 503, auth, "clients")
        expect_close(p.port, ok, 4503, auth + own, "clients")
        holder.close()
        # a disallowed Origin is never upgraded, whatever else is wrong
        expect_http(p.port, ok, 403, auth + ["Origin: https://evil.example"], "origin")
        expect_http(p.port, "/ws?query=bogus", 403, auth + ["Origin: https://evil.example"], "origin")
        # handshake errors stay HTTP
        st, _, _, _ = upgrade(p.port, ok, auth + own + ["Sec-WebSocket-Version: 8"])
        assert st in (400, 426), st
        log = p.logtext()
        assert "refused with 410" in log and "4410" in log, log[-1500:]


TESTS = [
    ("harden: a malformed conninfo is refused at load, never echoed (-t too)", t_conninfo_not_echoed),
    ("harden: control bytes from clients are escaped in the log", t_log_escapes),
    ("harden: token and grant_secret need at least 16 bytes", t_secret_minimum),
    ("harden: default Origin policy is same-origin only", t_origin_default),
    ("harden: admin_listen takes /health and /metrics off listen", t_admin_listen),
    ("harden: HEAD is answered like GET and never carries a body", t_head_no_body),
    ("harden: unfinished requests are limited apart from clients and per peer", t_unfinished_requests),
    ("harden: authorization is decided before the catalog is asked", t_no_probe_without_grant),
    ("harden: browsers read refusals as close 4000 + status", t_browser_refusals),
]


if __name__ == "__main__":
    run_selected(TESTS)
