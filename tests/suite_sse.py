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
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Pgcdc, http_get, pos_key, raw_http, run_selected, sql,  # noqa: E402
                     wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NODE = shutil.which("node")
DRIVER = os.path.join(HERE, "pgcdc_node.mjs")


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
    pc = Pgcdc({"postgres": {"temporary_slot": "false"}}, slot=slot)
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


TESTS = [
    ("GET /pgcdc.js: the module, cacheable, 304 on its ETag, 404 without demo_page", t_js_served),
    ("pgcdc.js subscribe() over WebSocket resumes across a pgcdc restart, every row once",
     t_js_restart_ws),
]

if __name__ == "__main__":
    run_selected(TESTS)
