"""suite_sse.py -- Server-Sent Events (GET /sse) and the browser client
web/pgcdc.js (GET /pgcdc.js, and run in Node), as docs/protocol.md
describes them.

The SSE tests speak raw HTTP over a socket and check the exact bytes:
response headers, the `retry:` line, `id:`/`data:` framing, `: ping`
comments, CORS headers, every error status before the stream,
Last-Event-ID, the slow-consumer drop and the `event: close` at shutdown.
The pgcdc.js tests run tests/pgcdc_node.mjs with Node (>= 20, with
--experimental-websocket) over both transports.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Pgcdc, http_get, pos_key, raw_http, run_selected, sql,  # noqa: E402
                     wait_until)
from harness import metric  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NODE = shutil.which("node")
DRIVER = os.path.join(HERE, "pgcdc_node.mjs")
# status_interval for the tests that restart pgcdc and resume: an idle
# database lets pgcdc confirm the server's WAL end after status_interval
# (docs/protocol.md, Replication), which after a restart turns the last
# position seen into a 410.  These tests restart within seconds of their
# last change, well inside this.
IDLE = "15"


def enc(s):
    return urllib.parse.quote(s, safe="-_.!~*'()")


def make_table(name, cols="id int PRIMARY KEY, v text"):
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (%s)" % (name, name, cols))


# ---- pgcdc.js in Node --------------------------------------------------------

class NodeClient:
    """tests/pgcdc_node.mjs running subscribe() or live(); its events (parsed
    JSON lines) are collected in self.events."""

    def __init__(self, mode, url, opts):
        assert NODE, "node is not installed"
        self.events = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen([NODE, "--experimental-websocket", "--no-warnings", DRIVER, mode, url,
                                   json.dumps(opts)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.err = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.p.stderr), daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"junk": line}
            with self.lock:
                self.events.append(ev)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def statuses(self):
        return [e for e in self.snapshot() if "status" in e]

    def changes(self):
        return [e["change"] for e in self.snapshot() if "change" in e]

    def wait(self, pred, timeout, what):
        return wait_until(lambda: pred(self.snapshot()), timeout,
                          lambda: "%s; events: %s; stderr: %s" % (
                              what, json.dumps(self.snapshot()[-6:])[:1500], "".join(self.err)[-500:]))

    def wait_status(self, status, timeout=20, after=0):
        def pred(evs):
            st = [e for e in evs if "status" in e][after:]
            return next((e for e in st if e["status"] == status), None)
        return self.wait(pred, timeout, "status %s" % status)

    def dump(self, timeout=10):
        n = len([e for e in self.snapshot() if "dump" in e])
        self.p.stdin.write("dump\n")
        self.p.stdin.flush()
        return self.wait(lambda evs: [e for e in evs if "dump" in e][n:] and [e for e in evs if "dump" in e][n],
                         timeout, "a dump")["dump"]

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("close\n")
                self.p.stdin.flush()
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def base(pc):
    return "http://127.0.0.1:%d/" % pc.port


def ids_of(changes, table):
    return [next(c["value"] for c in m["columns"] if c["name"] == "id")
            for m in changes if m.get("action") == "I" and m.get("table") == table]


# ---- GET /pgcdc.js -----------------------------------------------------------

def t_js_served():
    with open(os.path.join(ROOT, "web", "pgcdc.js"), "rb") as f:
        want = f.read()
    with Pgcdc() as pc:
        data = raw_http(pc.port, b"GET /pgcdc.js HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 200 OK", lines[0]
        h = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        assert h.get("content-type") == "text/javascript; charset=utf-8", h
        assert "max-age=" in h.get("cache-control", ""), h
        assert h.get("etag", "").startswith('"') and h["etag"].endswith('"'), h
        assert int(h.get("content-length", -1)) == len(want) and body == want, "body differs from web/pgcdc.js"
        # revalidation: the same tag -> 304 without a body; another -> 200
        etag = h["etag"].encode()
        data = raw_http(pc.port, b"GET /pgcdc.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"nope\", " + etag +
                        b"\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 304 Not Modified\r\n"), data[:100]
        assert data.endswith(b"\r\n\r\n") and b"ETag: " + etag in data, data
        data = raw_http(pc.port, b"GET /pgcdc.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"nope\"\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(want[-200:]), data[:100]
        data = raw_http(pc.port, b"HEAD /pgcdc.js HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n"), data[-100:]
        assert b"Content-Length: %d\r\n" % len(want) in data, data
    with Pgcdc({"server": {"demo_page": "false"}}) as pc:
        st, _ = http_get(pc.port, "/pgcdc.js")
        assert st == 404, "demo_page = false: /pgcdc.js answered %d" % st


# ---- subscribe() in Node -----------------------------------------------------

def js_refusals(transport):
    make_table("sse_js_ref")
    with Pgcdc({"server": {"token": "sixteen-bytes-token!"},
                "postgres": {"tables": "public.sse_js_ref, public.nosuch"}}) as pc:
        cases = [
            ({"query": "bogus:sse_js_ref"}, 400, "type"),
            ({"query": "*:nosuch"}, 400, "nosuch"),
            ({"query": "*:sse_js_other"}, 403, "sse_js_other"),
            ({"query": "*:sse_js_ref", "filter": "v.zz.1"}, 400, "zz"),
            ({"query": "*:sse_js_ref", "token": "wrong-token-wrong-token"}, 401, "token"),
            ({"query": "*:sse_js_ref", "token": None}, 401, "token"),
        ]
        # a URL that is not pgcdc's (404) or not a URL at all
        for url, code, word in ((base(pc) + "nothing/here/", 404, "not found"), ("http://[::1", 0, "bad URL")):
            with NodeClient("subscribe", url, {"query": "*:sse_js_ref", "transport": transport}) as nc:
                info = nc.wait_status("closed")["info"]
                assert info.get("code") == code and word in info.get("reason", ""), "%s: %s" % (url, info)
                nc.close()
                st = [x["status"] for x in nc.statuses()]
                assert st.count("connecting") == 1 and "reconnecting" not in st, "%s: retried: %s" % (url, st)
        for opts, code, word in cases:
            o = dict(opts, transport=transport)
            if "token" not in o:
                o["token"] = "sixteen-bytes-token!"
            if o["token"] is None:
                del o["token"]
            with NodeClient("subscribe", base(pc), o) as nc:
                e = nc.wait_status("closed")
                info = e["info"]
                assert info.get("code") in (code, 4000 + code), "%s: closed with %s" % (opts, info)
                assert word in info.get("reason", ""), "%s: reason %r does not say %r" % (opts, info, word)
                nc.close()
                st = [x["status"] for x in nc.statuses()]
                assert st.count("connecting") == 1 and "reconnecting" not in st, "%s: retried: %s" % (opts, st)


def t_js_refusals_ws():
    js_refusals("ws")


def t_js_refusals_sse():
    js_refusals("sse")


def js_resume_across_restart(transport):
    """subscribe() keeps receiving across a restart of pgcdc (persistent
    slot, same port): every row exactly once, in order."""
    t = "sse_js_restart_" + transport
    make_table(t)
    slot = "sse_js_%s_%d" % (transport, os.getpid())
    pc = Pgcdc({"postgres": {"temporary_slot": "false", "status_interval": IDLE}}, slot=slot)
    pc.start()
    try:
        with NodeClient("subscribe", base(pc), {"query": "insert:" + t, "transport": transport,
                                                 "minDelay": 100, "maxDelay": 400}) as nc:
            nc.wait_status("live")
            n_rows = lambda k: lambda evs: len(ids_of([e["change"] for e in evs if "change" in e], t)) >= k  # noqa
            for i in range(1, 6):
                sql("INSERT INTO %s VALUES (%d, 'a')" % (t, i))
            nc.wait(n_rows(5), 20, "rows 1..5")
            pc.stop()
            nc.wait_status("reconnecting")
            for i in range(6, 11):   # made while pgcdc is down
                sql("INSERT INTO %s VALUES (%d, 'b')" % (t, i))
            pc.start()
            for i in range(11, 16):
                sql("INSERT INTO %s VALUES (%d, 'c')" % (t, i))
            nc.wait(n_rows(15), 30, "rows 1..15")
            got = ids_of(nc.changes(), t)
            assert got == list(range(1, 16)), "rows: %s" % got
            pos = [pos_key(m["pos"]) for m in nc.changes()]
            assert pos == sorted(pos) and len(set(pos)) == len(pos), "positions not increasing"
    finally:
        pc.stop()
        sql("SELECT pg_drop_replication_slot('%s')" % slot, check=False)


def t_js_restart_ws():
    js_resume_across_restart("ws")


def t_js_restart_sse():
    js_resume_across_restart("sse")


# ---- raw SSE ---------------------------------------------------------------------

class SSE:
    """A raw HTTP client of GET /sse: self.status, self.headers (lower-case
    names, in order), self.head (bytes), then the body bytes as they come."""

    def __init__(self, port, path, headers=(), rcvbuf=None, method="GET", timeout=10):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method, path, port)
        req += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
        self.s.sendall(req.encode())
        self.buf = b""
        self.eof = False
        self.read_until(lambda: b"\r\n\r\n" in self.buf, timeout, "the response head")
        self.head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = self.head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split(" ")[1])
        self.headers = [(k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])]
        self.pos = 0   # body bytes consumed by next_event

    def header(self, name):
        v = [b for a, b in self.headers if a == name]
        assert len(v) <= 1, "header %s %d times" % (name, len(v))
        return v[0] if v else None

    def read_some(self, timeout):
        self.s.settimeout(timeout)
        try:
            b = self.s.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def read_until(self, pred, timeout, what):
        deadline = time.time() + timeout
        while not pred():
            left = deadline - time.time()
            if left <= 0 or self.eof:
                raise AssertionError("%s: waiting for %s; got %r" % (
                    "connection closed" if self.eof else "timed out", what, self.buf[-300:]))
            self.read_some(min(left, 1))

    def read_to_eof(self, timeout=15):
        self.read_until(lambda: self.eof, timeout, "the end of the stream")

    def next_event(self, timeout=15):
        """The next block up to a blank line, as raw bytes (without it)."""
        self.read_until(lambda: b"\n\n" in self.buf[self.pos:], timeout, "an event")
        end = self.buf.index(b"\n\n", self.pos)
        ev = self.buf[self.pos:end]
        self.pos = end + 2
        return ev

    def next_data(self, timeout=15):
        """The next event that is not a comment: (id or None, parsed data)."""
        while True:
            ev = self.next_event(timeout)
            if ev.startswith(b":") or ev == b"retry: 1000":
                continue
            fields = [ln.split(b": ", 1) for ln in ev.split(b"\n")]
            d = dict((f[0], f[1]) for f in fields if len(f) == 2)
            assert b"data" in d, "event without data: %r" % ev
            return (d[b"id"].decode() if b"id" in d else None), json.loads(d[b"data"]), ev

    def close(self):
        self.s.close()


def sse_path(query, filters=(), since=None, extra=""):
    p = "/sse?query=" + enc(query) + "".join("&filter=" + enc(f) for f in filters)
    if since is not None:
        p += "&since=" + enc(since)
    return p + extra


def check_stream_head(c):
    assert c.status_line == "HTTP/1.1 200 OK", c.status_line
    assert c.header("content-type") == "text/event-stream", c.headers
    assert c.header("cache-control") == "no-cache", c.headers
    assert c.header("x-accel-buffering") == "no", c.headers
    assert c.header("content-length") is None and c.header("transfer-encoding") is None, c.headers


def rows_inserted(t, lo, hi):
    sql("INSERT INTO %s SELECT g, 'r' || g FROM generate_series(%d, %d) g" % (t, lo, hi))


def t_sse_stream_bytes():
    """Exact bytes: headers, retry first, then id/data/blank per change, the
    data byte for byte the WebSocket frame's payload."""
    import asyncio
    import websockets
    t = "sse_bytes"
    make_table(t)
    with Pgcdc() as pc:
        c = SSE(pc.port, sse_path("insert,update:" + t))
        check_stream_head(c)
        c.read_until(lambda: len(c.buf) >= 13, 10, "retry")
        assert c.buf.startswith(b"retry: 1000\n\n"), c.buf[:40]
        c.pos = 13

        async def ws_frames():
            ws = await websockets.connect(pc.url("/ws?query=" + enc("insert,update:" + t)), ping_interval=None)
            sql("INSERT INTO %s VALUES (1, 'one'); UPDATE %s SET v = 'line\nbreak' WHERE id = 1" % (t, t))
            out = [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)]
            await ws.close()
            return out
        frames = asyncio.run(ws_frames())
        for f in frames:
            pos = json.loads(f)["pos"]
            ev = c.next_event()
            assert ev == ("id: %s\ndata: %s" % (pos, f)).encode(), "event %r, frame %r" % (ev, f)
        c.close()
        # HEAD: the same head, no body
        data = raw_http(pc.port, ("HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n" % sse_path("insert:" + t)).encode())
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in data, data
        assert data.endswith(b"\r\n\r\n"), data


def t_sse_ping():
    t = "sse_ping"
    make_table(t)
    with Pgcdc({"server": {"ping_interval": "1"}}) as pc:
        c = SSE(pc.port, sse_path("*:" + t))
        assert c.next_event() == b"retry: 1000"
        assert c.next_event(10) == b": ping"
        assert c.next_event(10) == b": ping"
        # the stream stays open: a change still arrives after the pings
        rows_inserted(t, 1, 1)
        pid, d, _ = c.next_data()
        assert d["action"] == "I" and pid == d["pos"], d
        c.close()


def body_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body.decode("utf-8", "replace")


def expect_refusal(port, path, status, word, headers=(), method="GET"):
    req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (
        method, path, port, "".join("%s: %s\r\n" % h for h in headers))
    data = raw_http(port, req.encode())
    head, body = body_of(data)
    line = head.split("\r\n")[0]
    assert line.startswith("HTTP/1.1 %d " % status), "%s %s: %r (want %d)" % (method, path, line, status)
    assert "text/plain" in head and "text/event-stream" not in head, head
    assert body.endswith("\n") and body.count("\n") == 1 and word.lower() in body.lower(), \
        "%s: body %r should say %r" % (path, body, word)
    return head


def t_sse_errors():
    """Every refusal before the stream, in the check order of /ws."""
    import grant_mint
    t = "sse_err"
    make_table(t)
    tok = "sixteen-bytes-token!"
    with Pgcdc({"server": {"token": tok, "allowed_origins": "https://ok.example"},
                "postgres": {"tables": "public.sse_err, public.sse_nosuch"}}) as pc:
        q = "&token=" + tok
        p = pc.port
        expect_refusal(p, "/ssex?query=*:" + t + q, 404, "not found")
        expect_refusal(p, sse_path("*:" + t) + q, 405, "method", method="POST")
        expect_refusal(p, sse_path("*:" + t), 401, "token")
        expect_refusal(p, sse_path("*:" + t) + "&token=wrong-token-wrong", 401, "token")
        expect_refusal(p, sse_path("*:" + t) + q, 403, "origin", headers=[("Origin", "https://evil.example")])
        expect_refusal(p, "/sse" + "?" + q[1:], 400, "query")
        expect_refusal(p, sse_path("bogus:" + t) + q, 400, "bogus")
        expect_refusal(p, sse_path("*:" + t, ["v.zz.1"]) + q, 400, "zz")
        expect_refusal(p, sse_path("*:" + t, since="nonsense") + q, 400, "since")
        expect_refusal(p, sse_path("*:" + t) + q, 400, "last-event-id", headers=[("Last-Event-ID", "0/0:x")])
        expect_refusal(p, sse_path("*:" + t) + q, 400, "last-event-id",
                       headers=[("Last-Event-ID", "0/1:0"), ("Last-Event-ID", "0/1:0")])
        # a malformed Last-Event-ID is a syntax error: after credentials and Origin
        expect_refusal(p, sse_path("*:" + t), 401, "token", headers=[("Last-Event-ID", "x")])
        expect_refusal(p, sse_path("*:sse_other") + q, 403, "sse_other")
        expect_refusal(p, sse_path("*:sse_nosuch") + q, 400, "sse_nosuch")
        # check order: credentials before Origin before syntax before the allow-list
        expect_refusal(p, sse_path("bogus:sse_other"), 401, "token", headers=[("Origin", "https://evil.example")])
        expect_refusal(p, sse_path("bogus:sse_other") + q, 403, "origin", headers=[("Origin", "https://evil.example")])
        expect_refusal(p, sse_path("bogus:sse_other") + q, 400, "bogus")
        # an allowed foreign Origin can read the refusal (CORS on errors too)
        head = expect_refusal(p, sse_path("bogus:" + t) + q, 400, "bogus", headers=[("Origin", "https://ok.example")])
        assert "Access-Control-Allow-Origin: https://ok.example\r\n" in head, head
    with Pgcdc() as pc:
        # a temporary slot: nothing before this start can be served
        expect_refusal(pc.port, sse_path("insert:" + t, since="0/1:0"), 410, "older")
        expect_refusal(pc.port, sse_path("insert:" + t), 410, "older", headers=[("Last-Event-ID", "0/1:0")])
    with Pgcdc({"server": {"max_clients": "1"}}) as pc:
        c = SSE(pc.port, sse_path("insert:" + t))
        check_stream_head(c)
        expect_refusal(pc.port, sse_path("insert:" + t), 503, "too many")
        c.close()
    with Pgcdc({"server": {"grant_secret": "sixteen-bytes-secret"}}) as pc:
        expect_refusal(pc.port, sse_path("insert:" + t), 401, "grant")
        g = grant_mint.mint("sixteen-bytes-secret", "insert:" + t)
        expect_refusal(pc.port, sse_path("insert,delete:" + t) + "&grant=" + g, 403, "grant")
        c = SSE(pc.port, sse_path("insert:" + t) + "&grant=" + g)
        check_stream_head(c)
        c.close()


def t_sse_cors():
    t = "sse_cors"
    make_table(t)
    with Pgcdc({"server": {"allowed_origins": "https://app.example, https://b.example"}}) as pc:
        own = "http://127.0.0.1:%d" % pc.port
        for origin, want in (("https://app.example", "https://app.example"), ("https://b.example", "https://b.example"),
                             (own, None), (None, None)):
            c = SSE(pc.port, sse_path("*:" + t), headers=[("Origin", origin)] if origin else [])
            check_stream_head(c)
            assert c.header("access-control-allow-origin") == want, (origin, c.headers)
            assert c.header("vary") == ("Origin" if want else None), (origin, c.headers)
            c.close()


def t_sse_last_event_id():
    """Last-Event-ID resumes exactly after that position, and wins over a
    since parameter."""
    t = "sse_leid"
    make_table(t)
    with Pgcdc() as pc:
        c = SSE(pc.port, sse_path("insert:" + t))
        rows_inserted(t, 1, 3)
        ids = [c.next_data()[0] for _ in range(3)]
        c.close()
        rows_inserted(t, 4, 5)
        # header: after row 2; parameter: after row 3 (ignored)
        c = SSE(pc.port, sse_path("insert:" + t, since=ids[2]), headers=[("Last-Event-ID", ids[1])])
        check_stream_head(c)
        got = [c.next_data()[1]["columns"][0]["value"] for _ in range(3)]
        assert got == [3, 4, 5], got
        c.close()


def t_sse_slow_consumer():
    """A client that never reads is dropped at max_queue; its stream ends
    with event: close after what was already on its way; others go on."""
    t = "sse_slow"
    make_table(t)
    with Pgcdc({"server": {"max_queue": "65536"}}) as pc:
        slow = SSE(pc.port, sse_path("insert:" + t), rcvbuf=4096)
        fast = SSE(pc.port, sse_path("insert:" + t))
        wait_until(lambda: metric(pc.port, 'pgcdc_clients_by_transport{transport="sse"}') == 2, 10, "2 sse clients")
        # 12 MB: more than the kernel's socket buffers and max_queue together
        for k in range(12):
            sql("INSERT INTO %s SELECT g, repeat(md5(g::text), 1000) FROM generate_series(%d, %d) g" % (
                t, k * 25 + 1, k * 25 + 25))
            for _ in range(25):
                fast.next_data()
        wait_until(lambda: metric(pc.port, 'pgcdc_clients_dropped_total{reason="slow"}') >= 1, 20,
                   "the slow client dropped")
        slow.read_to_eof(30)
        assert slow.buf.endswith(b"\n\nevent: close\ndata: slow consumer\n\n"), slow.buf[-200:]
        assert metric(pc.port, 'pgcdc_clients_by_transport{transport="sse"}') == 1
        rows_inserted(t, 5000, 5000)
        assert fast.next_data()[1]["columns"][0]["value"] == 5000
        fast.close()


def t_sse_shutdown():
    t = "sse_bye"
    make_table(t)
    pc = Pgcdc().start()
    try:
        c = SSE(pc.port, sse_path("insert:" + t))
        rows_inserted(t, 1, 1)
        c.next_data()
        assert pc.stop() == 0
        c.read_to_eof(15)
        assert c.buf[c.pos:] == b"event: close\ndata: server shutting down\n\n", c.buf[c.pos:]
    finally:
        pc.stop()


def t_sse_grant_expiry():
    """A grant that expires ends the stream with event: close."""
    import grant_mint
    t = "sse_gexp"
    make_table(t)
    with Pgcdc({"server": {"grant_secret": "sixteen-bytes-secret"}}) as pc:
        g = grant_mint.mint("sixteen-bytes-secret", "insert:" + t, ttl=8)
        c = SSE(pc.port, sse_path("insert:" + t) + "&grant=" + g)
        check_stream_head(c)
        rows_inserted(t, 1, 1)
        assert c.next_data()[1]["columns"][0]["value"] == 1
        c.read_to_eof(20)
        assert c.buf[c.pos:] == b"event: close\ndata: grant expired\n\n", c.buf[c.pos:]


def t_sse_metrics():
    t = "sse_metrics"
    make_table(t)
    import asyncio
    import websockets
    with Pgcdc() as pc:
        c1 = SSE(pc.port, sse_path("*:" + t))
        c2 = SSE(pc.port, sse_path("*:" + t))

        async def go():
            ws = await websockets.connect(pc.url("/ws?query=*:" + t), ping_interval=None)
            wait_until(lambda: metric(pc.port, "pgcdc_clients") == 3, 10, "3 clients")
            st, body = http_get(pc.port, "/metrics")
            assert 'pgcdc_clients_by_transport{transport="ws"} 1\n' in body, body
            assert 'pgcdc_clients_by_transport{transport="sse"} 2\n' in body, body
            await ws.close()
        asyncio.run(go())
        c1.close()
        c2.close()
        wait_until(lambda: metric(pc.port, 'pgcdc_clients_by_transport{transport="sse"}') == 0, 10, "0 sse")


def t_sse_snapshot():
    t = "sse_snap"
    make_table(t)
    rows_inserted(t, 1, 3)
    with Pgcdc() as pc:
        c = SSE(pc.port, sse_path("*:" + t) + "&snapshot=1")
        check_stream_head(c)
        assert c.next_event() == b"retry: 1000"
        evs = [c.next_event() for _ in range(4)]
        for ev in evs[:3]:
            assert ev.startswith(b"data: {\"action\":\"S\"") and b"\nid:" not in ev, ev
        assert evs[3].startswith(b"id: ") and b'"action":"E","rows":3,"key":["id"]' in evs[3], evs[3]
        eid = evs[3].split(b"\n")[0][4:].decode()
        c.close()
        rows_inserted(t, 4, 4)
        # the EventSource comes back with the E marker's id: no second snapshot
        c = SSE(pc.port, sse_path("*:" + t) + "&snapshot=1", headers=[("Last-Event-ID", eid)])
        check_stream_head(c)
        pid, d, _ = c.next_data()
        assert d["action"] == "I" and d["columns"][0]["value"] == 4 and pid == d["pos"], d
        c.close()


def t_sse_curl():
    """curl -N shows the events as they come."""
    t = "sse_curl"
    make_table(t)
    with Pgcdc() as pc:
        p = subprocess.Popen(["curl", "-sS", "-N", "--max-time", "20", "http://127.0.0.1:%d%s" % (
            pc.port, sse_path("insert:" + t))], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        chunks = []
        threading.Thread(target=lambda: chunks.extend(iter(lambda: p.stdout.read1(65536), b"")), daemon=True).start()
        try:
            def got(want):
                nonlocal out
                out = b"".join(chunks)
                return want in out
            out = b""
            wait_until(lambda: got(b"retry: 1000\n\n"), 10, "curl to show retry")
            rows_inserted(t, 7, 7)
            wait_until(lambda: got(b'"value":"r7"}]}\n\n'), 10, lambda: "the row in %r" % out)
            assert out.startswith(b"retry: 1000\n\nid: ") and b"\ndata: {\"pos\":" in out, out
        finally:
            p.kill()
            p.wait()


def readme_example(name):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    mark = "<!-- example: %s -->\n```js\n" % name
    assert mark in text, "README has no %s example" % name
    start = text.index(mark) + len(mark)
    return text[start:text.index("```", start)]


def run_readme_example(name, table, pc, workdir):
    code = readme_example(name).replace("http://127.0.0.1:8080/", base(pc)).replace('"orders"', '"%s"' % table) \
        .replace(":orders", ":" + table)
    shutil.copy(os.path.join(ROOT, "web", "pgcdc.js"), os.path.join(workdir, "pgcdc.js"))
    path = os.path.join(workdir, name + ".mjs")
    with open(path, "w") as f:
        f.write(code)
    return subprocess.Popen([NODE, "--experimental-websocket", "--no-warnings", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def t_readme_examples():
    """README's pgcdc.js examples run as printed (address and table
    substituted) and print the changes."""
    import tempfile
    t = "sse_readme"
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, status text, total int)" % (t, t))
    work = tempfile.mkdtemp(prefix="pgcdc-readme-js-")
    procs = []
    try:
        with Pgcdc() as pc:
            for name in ("subscribe", "live"):
                procs.append(run_readme_example(name, t, pc, work))
            wait_until(lambda: metric(pc.port, "pgcdc_clients") == 2, 20, "both examples connected")
            sql("INSERT INTO %s VALUES (1, 'paid', 50), (2, 'new', 5); UPDATE %s SET total = 60 WHERE id = 1"
                % (t, t))
            outs = []
            for p in procs:
                lines = []
                threading.Thread(target=lambda p=p, lines=lines: lines.extend(p.stdout), daemon=True).start()
                outs.append(lines)
            for lines, k in zip(outs, (2, 3)):
                wait_until(lambda lines=lines, k=k: len(lines) >= k, 20, lambda: "output %r" % outs)
            outs = [[x.rstrip("\n") for x in lines] for lines in outs]
            sub, lv = outs
            assert sub[0].split(" ")[1] == "I" and '"value":1' in sub[0] and sub[1].split(" ")[1] == "U", sub
            assert sub[0].split(" ")[0] < sub[1].split(" ")[0] or len(sub[0]) != len(sub[1]), sub
            assert lv == ["snapshot null 0 paid orders", "I 1 1 paid orders", "U 1 1 paid orders"], lv
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


class Gate:
    """A TCP forwarder to PostgreSQL that lets ordinary connections through
    but refuses replication connections until opened, so a pgcdc can be kept
    from learning where its slot resumes while it can still ask the catalog.
    (conninfo must say sslmode=disable gssencmode=disable, so the first
    packet is the startup message.)"""

    def __init__(self):
        self.target = ("127.0.0.1", int(os.environ.get("PGPORT", "5432")))
        self.repl_ok = False
        self.socks = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.lsock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(a,), daemon=True).start()

    def _conn(self, a):
        self.socks.append(a)
        try:
            first = b""
            while len(first) < 4 or len(first) < int.from_bytes(first[:4], "big"):
                d = a.recv(65536)
                if not d:
                    a.close()
                    return
                first += d
            if b"replication\x00" in first and not self.repl_ok:
                a.close()
                return
            b = socket.create_connection(self.target)
            self.socks.append(b)
            b.sendall(first)
        except OSError:
            a.close()
            return
        threading.Thread(target=self._pump, args=(b, a), daemon=True).start()
        self._pump(a, b)

    @staticmethod
    def _pump(x, y):
        try:
            while True:
                d = x.recv(65536)
                if not d:
                    break
                y.sendall(d)
        except OSError:
            pass
        for z in (x, y):
            try:
                z.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()
        for z in self.socks:
            z.close()


def t_sse_held_until_servable():
    """After a restart, before replication says where the slot resumes, /ws
    answers 503 to a since, but /sse holds the stream open (pings) and then
    serves it: the rows made while pgcdc was down, then new ones, once each.
    A held position that turns out too old ends with event: close."""
    t = "sse_hold"
    make_table(t)
    slot = "sse_hold_%d" % os.getpid()
    pc = Pgcdc({"postgres": {"temporary_slot": "false", "status_interval": IDLE}}, slot=slot).start()
    gate = Gate()
    pc2 = None
    try:
        c = SSE(pc.port, sse_path("insert:" + t))
        rows_inserted(t, 1, 3)
        last = [c.next_data()[0] for _ in range(3)][-1]
        c.close()
        pc.stop()
        rows_inserted(t, 4, 5)
        # the same slot, through a gate that is still closed
        pc2 = Pgcdc({"postgres": {"temporary_slot": "false", "reconnect_max": "1", "status_interval": IDLE,
                                  "conninfo": "host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable "
                                              "gssencmode=disable" % (
                                      gate.port, os.environ.get("PGUSER", "postgres"),
                                      os.environ.get("PGDATABASE", "postgres"))},
                     "server": {"ping_interval": "1"}}, slot=slot).start(wait_streaming=False)
        data = raw_http(pc2.port, ("GET /ws?query=insert:%s&since=%s HTTP/1.1\r\nHost: x\r\n"
                                   "Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                                   % (t, enc(last))).encode())
        assert data.startswith(b"HTTP/1.1 503 "), "/ws with since before replication: %r" % data[:200]
        held = SSE(pc2.port, sse_path("insert:" + t), headers=[("Last-Event-ID", last)])
        check_stream_head(held)
        old = SSE(pc2.port, sse_path("insert:" + t, since="0/1:0"))
        check_stream_head(old)
        assert held.next_event() == b"retry: 1000" and held.next_event(10) == b": ping"
        gate.repl_ok = True
        got = [held.next_data(30)[1]["columns"][0]["value"] for _ in range(2)]
        rows_inserted(t, 6, 6)
        got.append(held.next_data()[1]["columns"][0]["value"])
        assert got == [4, 5, 6], got
        old.read_to_eof(15)
        assert old.buf.endswith(b"event: close\ndata: position older than the history this server keeps (410): "
                                b"reload your data\n\n"), old.buf[-200:]
        held.close()
    finally:
        if pc2:
            pc2.stop()
        pc.stop()
        gate.close()
        sql("SELECT pg_drop_replication_slot('%s')" % slot, check=False)


# ---- live() in Node ------------------------------------------------------------

def burst(t, phase):
    p = subprocess.run(["sh", os.path.join(HERE, "live_burst.sh"), t, phase], capture_output=True, text=True)
    assert p.returncode == 0, "live_burst.sh %s: %s" % (phase, p.stderr.strip()[-500:])


def table_rows(t):
    out = sql("SELECT coalesce(json_agg(json_build_object('id', id, 'v', v, 'n', n, 'big', big) ORDER BY id), "
              "'[]') FROM %s" % t)
    return json.loads(out)


def wait_equal(nc, t, what, timeout=40):
    """Polls the client's map until it equals the table."""
    last = {}

    def same():
        want = table_rows(t)
        d = nc.dump()
        got = sorted((r for _, r in d["rows"]), key=lambda r: r.get("id"))
        keys = sorted(k for k, _ in d["rows"])
        last["why"] = "map %d rows, table %d; first difference: %s" % (len(got), len(want), next(
            ((a, b) for a, b in zip(got, want) if a != b), "lengths"))
        return got == want and keys == [r["id"] for r in want] and d["key"] == ["id"]
    wait_until(same, timeout, lambda: "%s: %s" % (what, str(last.get("why"))[:600]), step=0.3)


def pgcdc_on_port(port, extra, slot=None):
    """A Pgcdc listening on port (that of one that was stopped)."""
    pc = Pgcdc(extra, slot=slot)
    with open(pc.config) as f:
        cfg = f.read()
    with open(pc.config, "w") as f:
        f.write(cfg.replace("127.0.0.1:%d" % pc.port, "127.0.0.1:%d" % port))
    pc.port = port
    return pc


def js_live(transport):
    """live() equals the table after a burst of concurrent changes (updates
    leaving a TOASTed column out, key changes, deletes), across a restart of
    pgcdc (resumed with since, no new snapshot), across a 410 (a fresh
    snapshot) and after a truncate."""
    t = "sse_live_" + transport
    burst(t, "setup")
    slot = "sse_live_%s_%d" % (transport, os.getpid())
    pc = Pgcdc({"postgres": {"temporary_slot": "false", "status_interval": IDLE}}, slot=slot).start()
    port = pc.port
    try:
        with NodeClient("live", base(pc), {"table": t, "transport": transport,
                                            "minDelay": 100, "maxDelay": 400}) as nc:
            nc.wait_status("live")
            wait_equal(nc, t, "after the snapshot")
            burst(t, "burst")
            wait_equal(nc, t, "after the burst")
            # restart (persistent slot): resumed with since, no new snapshot
            n_status = len(nc.statuses())
            pc.stop()
            nc.wait_status("reconnecting", after=n_status)
            sql("UPDATE %s SET n = n + 100 WHERE id > 40; UPDATE %s SET id = 2 WHERE id = 1" % (t, t))
            pc.start()
            nc.wait_status("live", after=n_status)
            wait_equal(nc, t, "after the restart")
            later = [e["status"] for e in nc.statuses()[n_status:]]
            assert "snapshot" not in later, "a new snapshot after a resumable restart: %s" % later
            # a pgcdc with a temporary slot cannot serve the old position: 410
            n_status = len(nc.statuses())
            pc.stop()
            sql("DELETE FROM %s WHERE id > 50" % t)
            pc = pgcdc_on_port(port, {}).start()
            nc.wait_status("snapshot", after=n_status)
            wait_equal(nc, t, "after the 410 and a fresh snapshot")
            burst(t, "truncate")
            wait_equal(nc, t, "after the truncate")
    finally:
        pc.stop()
        sql("SELECT pg_drop_replication_slot('%s')" % slot, check=False)


def t_js_live_ws():
    js_live("ws")


def t_js_live_sse():
    js_live("sse")


TESTS = [
    ("sse: exact bytes (headers, retry, id/data per change, same JSON as /ws), HEAD", t_sse_stream_bytes),
    ("sse: : ping comments every ping_interval", t_sse_ping),
    ("sse: every refusal before the stream, in the /ws check order", t_sse_errors),
    ("sse: CORS headers for allowed foreign origins only", t_sse_cors),
    ("sse: Last-Event-ID resumes exactly and wins over since", t_sse_last_event_id),
    ("sse: a client that never reads is dropped at max_queue after event: close", t_sse_slow_consumer),
    ("sse: shutdown ends the stream with event: close", t_sse_shutdown),
    ("sse: an expiring grant ends the stream with event: close", t_sse_grant_expiry),
    ("sse: metrics count clients by transport", t_sse_metrics),
    ("sse: a since that cannot be served yet is held open with pings, then served", t_sse_held_until_servable),
    ("sse: snapshot=1: S rows without id, the E marker with one; Last-Event-ID resumes instead", t_sse_snapshot),
    ("sse: curl -N shows the events", t_sse_curl),
    ("README's pgcdc.js examples run in Node as printed", t_readme_examples),
    ("GET /pgcdc.js: the module, cacheable, 304 on its ETag, 404 without demo_page", t_js_served),
    ("pgcdc.js subscribe() over WebSocket reports 400/401/403/404 and bad URLs with the reason, no retry",
     t_js_refusals_ws),
    ("pgcdc.js subscribe() over SSE (fetch) reports 400/401/403/404 and bad URLs with the reason, no retry",
     t_js_refusals_sse),
    ("pgcdc.js subscribe() over WebSocket resumes across a pgcdc restart, every row once",
     t_js_restart_ws),
    ("pgcdc.js subscribe() over SSE (fetch) resumes across a pgcdc restart, every row once",
     t_js_restart_sse),
    ("pgcdc.js live() over WebSocket in Node equals the table (burst, TOAST, key change, restart, 410, truncate)",
     t_js_live_ws),
    ("pgcdc.js live() over SSE in Node equals the table (burst, TOAST, key change, restart, 410, truncate)",
     t_js_live_sse),
]

if __name__ == "__main__":
    run_selected(TESTS)
