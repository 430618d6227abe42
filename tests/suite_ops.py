"""suite_ops.py -- end-to-end tests of pgcdc's operational surface.

docs/protocol.md's Command line (exit status, logging), HTTP (/health,
/ping, HEAD) and Metrics sections.  Every test compares what pgcdc
reports with what actually happened: the clients really connected, the
rows really inserted, the frames and bytes the clients really received,
the clients really dropped (unmasked frame, no pongs, not reading), the
walsender really terminated, and the slot's confirmed_flush_lsn as
PostgreSQL itself shows it in pg_replication_slots.

Run by test.sh with /usr/bin/python3 (PGHOST/PGPORT/PGUSER name the
database, PGCDC the binary).  Arguments, if any, select the tests whose
name contains one of them.
"""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

import wsraw  # noqa: E402
from harness import (PGCDC, Pgcdc, expect_silence, free_port, http_get,  # noqa: E402
                     recv_text, run_selected, sql, wait_until)
from harness import lsn_int, raw_client  # noqa: E402

LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
LEVEL_RE = re.compile(r"\b(error|warn|warning|info|debug|fatal|notice)\b", re.I)


# ---- helpers ---------------------------------------------------------------

def http(port, path, method="GET", timeout=5):
    """(status, headers dict with lower-case names, body text)."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode("utf-8", "replace")


def health(port):
    st, hdr, body = http(port, "/health")
    try:
        doc = json.loads(body)
    except ValueError:
        raise AssertionError("/health body is not JSON: %r" % body[:200]) from None
    return st, hdr, doc


def parse_metrics(text):
    """Checks the Prometheus text exposition format strictly and returns
    {sample name with sorted labels: float value} and {family: type}.
    A sample without labels is keyed by its bare name; one with labels as
    name{k="v",...}."""
    samples, types, helps, seen_fam = {}, {}, {}, []
    assert text.endswith("\n"), "/metrics does not end with a newline"
    sample_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)( -?\d+)?$')
    label_re = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')
    for i, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] == "TYPE":
                assert len(parts) == 4, "line %d: bad TYPE line %r" % (i, line)
                name, typ = parts[2], parts[3].strip()
                assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), \
                    "line %d: unknown type %r" % (i, line)
                assert name not in types, "line %d: second TYPE for %s" % (i, name)
                assert name not in seen_fam, "line %d: TYPE of %s after its samples" % (i, name)
                types[name] = typ
            elif len(parts) >= 2 and parts[1] == "HELP":
                assert len(parts) >= 3, "line %d: bad HELP line %r" % (i, line)
                assert parts[2] not in helps, "line %d: second HELP for %s" % (i, parts[2])
                helps[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        m = sample_re.match(line)
        assert m, "line %d is not 'name{labels} value': %r" % (i, line)
        name, labels, value = m.group(1), m.group(3), m.group(4)
        try:
            v = float(value)
        except ValueError:
            raise AssertionError("line %d: value %r is not a number" % (i, value)) from None
        fam = name
        if fam not in types:
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[:-len(suffix)] in types:
                    fam = name[:-len(suffix)]
        if fam in seen_fam:
            assert seen_fam[-1] == fam, "line %d: samples of %s are not contiguous" % (i, fam)
        else:
            seen_fam.append(fam)
        key = name
        if labels is not None:
            pairs, rest = [], labels
            while rest.strip():
                lm = label_re.match(rest)
                assert lm, "line %d: bad labels %r" % (i, labels)
                pairs.append((lm.group(1), lm.group(2)))
                rest = rest[lm.end():]
            key = name + "{" + ",".join('%s="%s"' % p for p in sorted(pairs)) + "}"
        assert key not in samples, "line %d: sample %s repeated" % (i, key)
        samples[key] = v
    for fam in seen_fam:
        assert fam in types, "%s has samples but no # TYPE line" % fam
        assert fam in helps, "%s has samples but no # HELP line" % fam
    for fam in list(types) + list(helps):
        assert fam in seen_fam, "# HELP/# TYPE for %s without samples" % fam
    return samples, types


def metrics(port):
    st, hdr, body = http(port, "/metrics")
    assert st == 200, "/metrics answered %d" % st
    return parse_metrics(body)[0]


def metric(port, name):
    m = metrics(port)
    assert name in m, "/metrics lacks %s" % name
    return m[name]


DROP_SLOW = 'pgcdc_clients_dropped_total{reason="slow"}'
DROP_PROTO = 'pgcdc_clients_dropped_total{reason="protocol"}'
DROP_TIMEOUT = 'pgcdc_clients_dropped_total{reason="timeout"}'


async def await_until(fn, timeout, what, step=0.05):
    """wait_until that lets the event loop run (websockets clients keep
    answering pings meanwhile)."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (
                timeout, what() if callable(what) else what))
        await asyncio.sleep(step)


def metric_reaches(port, name, want, timeout, exact=True):
    """Waits until metric name >= want; then (exact) checks that it stays
    exactly want for a moment."""
    box = {}

    def reached():
        box["v"] = metric(port, name)
        return box["v"] >= want
    try:
        wait_until(reached, timeout, "%s >= %s" % (name, want))
    except AssertionError:
        raise AssertionError("%s is %s, expected %s" % (name, box.get("v"), want)) from None
    if exact:
        time.sleep(0.4)
        v = metric(port, name)
        assert v == want, "%s is %s, expected exactly %s" % (name, v, want)


def make_table(name):
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, v text)" % (name, name))


async def ws_connect(pc, query, headers=None):
    return await websockets.connect(pc.url("/ws?query=" + query), max_size=None, max_queue=None,
                                    ping_interval=None, open_timeout=10,
                                    extra_headers=headers or {})


async def ws_close(ws):
    try:
        await asyncio.wait_for(ws.close(), 5)
    except Exception:  # noqa: BLE001 - the server may be gone already
        pass


recv_n = recv_text


def head_request(port, path, timeout=2.0):
    """Sends HEAD; returns (status line, headers dict, bytes after the head),
    reading until the server closes or timeout passes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("HEAD %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode())
    data = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            s.settimeout(max(0.01, deadline - time.time()))
            b = s.recv(65536)
            if not b:
                break
            data += b
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, "no complete response head: %r" % data[:300]
    lines = head.decode("latin-1").split("\r\n")
    hdr = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdr[k.strip().lower()] = v.strip()
    return lines[0], hdr, rest


def run_flags(pc, flags, wait_streaming=True, timeout=20):
    """Starts pc's pgcdc with these flags instead of the harness's -v."""
    pc.logf = open(pc.log, "ab")
    pc.proc = subprocess.Popen([PGCDC, "-c", pc.config] + list(flags),
                               stdout=pc.logf, stderr=subprocess.STDOUT)

    def ready():
        if pc.proc.poll() is not None:
            raise AssertionError("pgcdc exited with %s: %s" % (pc.proc.returncode, pc.logtext()[-1500:]))
        try:
            if wait_streaming:
                st, body = http_get(pc.port, "/health")
                return st == 200 and json.loads(body).get("replication") == "streaming"
            return http_get(pc.port, "/ping")[0] == 200
        except (OSError, ValueError):
            return False
    wait_until(ready, timeout, "pgcdc to be ready")
    return pc


def log_lines(pc):
    return [x for x in pc.logtext().split("\n") if x.strip()]


def version():
    out = subprocess.run([PGCDC, "-V"], capture_output=True, text=True, timeout=10)
    m = re.match(r"^pgcdc (\d+\.\d+\.\d+)\s*$", out.stdout)
    assert out.returncode == 0 and m, "-V: rc %d, stdout %r" % (out.returncode, out.stdout)
    return m.group(1)


def run_cli(args, timeout=10):
    """Runs pgcdc to completion; (rc, stdout, stderr); a hang fails."""
    p = subprocess.Popen([PGCDC] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("pgcdc %s did not exit within %ds; stderr: %s" % (
            " ".join(args), timeout, err[-500:])) from None
    return p.returncode, out, err


def slot_confirmed(slot):
    v = sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'" % slot)
    assert v, "no slot %s in pg_replication_slots" % slot
    return lsn_int(v)


# ---- /health -------------------------------------------------------------

def t_health_ok():
    with Pgcdc() as pc:
        st, hdr, doc = health(pc.port)
        assert st == 200, "/health answered %d %r" % (st, doc)
        ctype = hdr.get("content-type", "")
        assert ctype.split(";")[0].strip() == "application/json", "Content-Type %r" % ctype
        assert doc.get("status") == "ok", doc
        assert doc.get("replication") == "streaming", doc
        assert doc.get("clients") == 0 and type(doc.get("clients")) is int, doc
        assert isinstance(doc.get("lsn"), str) and LSN_RE.match(doc["lsn"]), "lsn %r" % doc.get("lsn")


def stream_of(sysid, db, tables, opts):
    """The stream value docs/protocol.md defines, computed here apart from
    pgcdc: SHA-1 of the canonical text, first 8 bytes in hex."""
    import hashlib
    text = "pgcdc stream 1\n%d:%s\n%d:%s\n" % (len(sysid), sysid, len(db), db)
    for t in tables:
        text += "t%d:%s\n" % (len(t), t)
    for name, val in opts:
        text += "o%d:%s=%d:%s\n" % (len(name), name, len(val), val)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def t_health_stream():
    sysid = sql("SELECT system_identifier FROM pg_control_system()")
    db = sql("SELECT current_database()")
    a = Pgcdc()
    b = Pgcdc({"postgres": {"tables": "*.*", "temporary_slot": "false",
                            "wal2json_options": " include-timestamp = on "}})
    c = Pgcdc({"postgres": {"wal2json_options": ""}})
    d = Pgcdc({"postgres": {"tables": "public.x, public.a ,public.x"}})
    try:
        got = {}
        for name, pc in (("a", a), ("b", b), ("c", c), ("d", d)):
            pc.start()
            got[name] = health(pc.port)[2].get("stream")
        want = stream_of(sysid, db, ["*.*"], [("include-timestamp", "1")])
        assert got["a"] == want, "default settings: stream %r, expected %r (system %s, database %s)" % (
            got["a"], want, sysid, db)
        assert got["b"] == got["a"], "the same stream spelled differently: %r vs %r" % (got["b"], got["a"])
        assert got["c"] == stream_of(sysid, db, ["*.*"], []), "no options: %r" % got["c"]
        assert got["d"] == stream_of(sysid, db, ["public.a", "public.x"], [("include-timestamp", "1")]), \
            "tables public.x, public.a: %r" % got["d"]
        assert len({got["a"], got["c"], got["d"]}) == 3, "different streams share a value: %r" % got
    finally:
        for pc in (a, b, c, d):
            pc.stop()
        sql("SELECT pg_drop_replication_slot('%s')" % b.slot, check=False)


async def t_health_clients():
    make_table("ops_hc")
    with Pgcdc() as pc:
        wss = [await ws_connect(pc, "insert:ops_hc") for _ in range(3)]
        # a TCP connection that never upgrades is not a WebSocket client
        idle = socket.create_connection(("127.0.0.1", pc.port))
        try:
            def count(n):
                def f():
                    st, _, doc = health(pc.port)
                    return doc.get("clients") == n and metric(pc.port, "pgcdc_clients") == n
                return f
            st, _, doc = health(pc.port)
            assert doc.get("clients") == 3, "3 clients connected, /health says %r" % doc
            assert metric(pc.port, "pgcdc_clients") == 3, "3 clients connected, pgcdc_clients %s" % \
                metric(pc.port, "pgcdc_clients")
            await ws_close(wss[0])
            await await_until(count(2), 3, lambda: "clients = 2 after one closed (now %r, pgcdc_clients %s)" % (
                health(pc.port)[2], metric(pc.port, "pgcdc_clients")))
            # and abruptly: a TCP reset without a close frame
            wss[1].transport.abort()
            await await_until(count(1), 3, "clients = 1 after one vanished")
            await ws_close(wss[2])
            await await_until(count(0), 3, "clients = 0")
        finally:
            idle.close()
            for ws in wss:
                await ws_close(ws)


async def t_health_lsn_advances():
    make_table("ops_lsn")
    with Pgcdc() as pc:
        ws = await ws_connect(pc, "insert:ops_lsn")
        before = lsn_int(health(pc.port)[2]["lsn"])
        sql("INSERT INTO ops_lsn SELECT g, 'x' FROM generate_series(1, 100) g")
        frames = [json.loads(x) for x in await recv_n(ws, 100)]
        commit = lsn_int(frames[-1]["pos"].split(":")[0])
        assert commit > before, "the insert's commit %X is not after /health's lsn %X" % (commit, before)
        box = {}

        def moved():
            d = health(pc.port)[2]
            box["d"] = d
            assert LSN_RE.match(d["lsn"]), "lsn %r" % d["lsn"]
            return lsn_int(d["lsn"]) >= commit
        await await_until(moved, 3, lambda: "/health lsn (was %X) to reach the insert's commit %X (last %r)" % (
            before, commit, box.get("d")))
        end = lsn_int(sql("SELECT pg_current_wal_lsn()"))
        assert lsn_int(box["d"]["lsn"]) <= end, "/health lsn %s beyond the server's WAL end %X" % (
            box["d"]["lsn"], end)
        await ws_close(ws)


def t_health_degraded():
    port = free_port()
    ci = "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2" % port
    pc = Pgcdc({"postgres": {"conninfo": ci}})
    try:
        pc.start(wait_streaming=False)
        t0 = time.time()
        while True:
            st, hdr, doc = health(pc.port)
            assert st == 503, "/health with no database answered %d %r" % (st, doc)
            assert hdr.get("content-type", "").split(";")[0].strip() == "application/json", hdr
            assert doc.get("status") == "degraded", doc
            assert doc.get("replication") in ("connecting", "down"), doc
            assert doc.get("clients") == 0, doc
            assert "lsn" in doc, doc
            st, body = http_get(pc.port, "/ping")
            assert (st, body.strip()) == (200, "pong"), "/ping while degraded: %d %r" % (st, body)
            m = metrics(pc.port)
            assert m.get("pgcdc_replication_connected") == 0, "pgcdc_replication_connected %s" % \
                m.get("pgcdc_replication_connected")
            line, hdr, rest = head_request(pc.port, "/health", timeout=1)
            assert " 503 " in line + " ", "HEAD /health while degraded: %r" % line
            assert rest == b"", "HEAD /health sent a body: %r" % rest[:100]
            # over a few reconnect attempts
            if time.time() - t0 > 2.5:
                break
            time.sleep(0.3)
        assert pc.proc.poll() is None, "pgcdc exited: %s" % pc.logtext()[-800:]
    finally:
        pc.stop()


# ---- /metrics --------------------------------------------------------------

def t_metrics_format():
    with Pgcdc() as pc:
        st, hdr, body = http(pc.port, "/metrics")
        assert st == 200, st
        ctype = hdr.get("content-type", "")
        assert ctype.split(";")[0].strip() == "text/plain", "Content-Type %r" % ctype
        samples, types = parse_metrics(body)
        want = {"pgcdc_clients": "gauge", "pgcdc_changes_total": "counter",
                "pgcdc_frames_sent_total": "counter", "pgcdc_bytes_sent_total": "counter",
                "pgcdc_clients_dropped_total": "counter", "pgcdc_replication_connected": "gauge",
                "pgcdc_replication_reconnects_total": "counter", "pgcdc_confirmed_lsn_bytes": "gauge",
                "pgcdc_replication_lag_bytes": "gauge"}
        for name, typ in want.items():
            assert types.get(name) == typ, "# TYPE %s is %r, expected %s" % (name, types.get(name), typ)
        for key in ("pgcdc_clients", "pgcdc_changes_total", "pgcdc_frames_sent_total",
                    "pgcdc_bytes_sent_total", DROP_SLOW, DROP_PROTO, DROP_TIMEOUT,
                    "pgcdc_replication_connected", "pgcdc_replication_reconnects_total",
                    "pgcdc_confirmed_lsn_bytes", "pgcdc_replication_lag_bytes"):
            assert key in samples, "/metrics lacks the sample %s" % key
        for key, v in samples.items():
            name = key.split("{")[0]
            if types.get(name) == "counter":
                assert v >= 0 and v == int(v), "counter %s = %s" % (key, v)
        assert samples["pgcdc_replication_connected"] == 1, "streaming, yet pgcdc_replication_connected %s" % \
            samples["pgcdc_replication_connected"]
        assert samples["pgcdc_clients"] == 0
        assert samples["pgcdc_replication_reconnects_total"] == 0
        for key in (DROP_SLOW, DROP_PROTO, DROP_TIMEOUT):
            assert samples[key] == 0, "%s = %s on a fresh server" % (key, samples[key])
        # the confirmed position is a real one: the slot's, in bytes
        assert samples["pgcdc_confirmed_lsn_bytes"] > 0
        assert samples["pgcdc_confirmed_lsn_bytes"] <= lsn_int(sql("SELECT pg_current_wal_lsn()"))


async def t_changes_total():
    make_table("ops_chg")
    make_table("ops_chg_other")
    with Pgcdc() as pc:
        base = metric(pc.port, "pgcdc_changes_total")
        # nobody subscribed: 40 rows in one transaction, 10 in ten
        sql("INSERT INTO ops_chg SELECT g, 'x' FROM generate_series(1, 40) g")
        sql(";".join("INSERT INTO ops_chg VALUES (%d, 'y')" % i for i in range(41, 51)))
        metric_reaches(pc.port, "pgcdc_changes_total", base + 50, 5)
        # a subscriber to the table; updates and deletes count too
        ws = await ws_connect(pc, "*:ops_chg")
        sql("UPDATE ops_chg SET v = 'z' WHERE id <= 20")
        sql("DELETE FROM ops_chg WHERE id > 45")
        got = await recv_n(ws, 25)
        assert len(got) == 25
        metric_reaches(pc.port, "pgcdc_changes_total", base + 75, 5)
        # a table nobody subscribes to while someone subscribes to another
        sql("INSERT INTO ops_chg_other SELECT g, 'x' FROM generate_series(1, 30) g")
        metric_reaches(pc.port, "pgcdc_changes_total", base + 105, 5)
        await expect_silence(ws)
        await ws_close(ws)


async def t_frames_and_bytes():
    make_table("ops_fr")
    make_table("ops_fr_other")
    n = 20
    with Pgcdc() as pc:
        subs = [await ws_connect(pc, "insert:ops_fr") for _ in range(3)]
        filt = await ws_connect(pc, "insert:ops_fr:id.lte.10")
        other = await ws_connect(pc, "insert:ops_fr_other")
        m0 = metrics(pc.port)
        sql("INSERT INTO ops_fr SELECT g, repeat('p', g * 7) FROM generate_series(1, %d) g" % n)
        got = [await recv_n(ws, n) for ws in subs]
        got.append(await recv_n(filt, 10))
        await expect_silence(filt, 0.3)
        await expect_silence(other, 0.1)
        want = 3 * n + 10
        metric_reaches(pc.port, "pgcdc_frames_sent_total", m0["pgcdc_frames_sent_total"] + want, 5)
        payload = sum(len(p.encode("utf-8")) for g in got for p in g)
        sent = metric(pc.port, "pgcdc_bytes_sent_total") - m0["pgcdc_bytes_sent_total"]
        assert sent >= payload, "pgcdc_bytes_sent_total grew by %d, the clients received %d payload bytes" % (
            sent, payload)
        # each frame has at least a 2-byte header: the counter counts the wire
        assert sent >= payload + 2 * want, "pgcdc_bytes_sent_total grew by %d < payload %d + headers %d" % (
            sent, payload, 2 * want)
        for ws in subs + [filt, other]:
            await ws_close(ws)


def t_dropped_protocol():
    make_table("ops_proto")
    with Pgcdc() as pc:
        base = metrics(pc.port)
        c = raw_client(pc, "insert:ops_proto")
        try:
            wait_until(lambda: metric(pc.port, "pgcdc_clients") == 1, 3, "the raw client to count")
            c.send_frame(wsraw.OP_TEXT, b"hello", mask=False)
            code, _ = c.read_close(5)
            assert code == 1002, "an unmasked frame got close %s" % code
            assert c.wait_tcp_close(5), "TCP still open after the close"
        finally:
            c.close()
        metric_reaches(pc.port, DROP_PROTO, base[DROP_PROTO] + 1, 3)
        m = metrics(pc.port)
        assert m[DROP_SLOW] == base[DROP_SLOW] and m[DROP_TIMEOUT] == base[DROP_TIMEOUT], \
            "other drop reasons moved: %s" % m
        assert m["pgcdc_clients"] == 0, m["pgcdc_clients"]
        # a client that closes normally is not a drop
        c = raw_client(pc, "insert:ops_proto")
        c.send_close(1000)
        c.read_close(5)
        c.close()
        time.sleep(0.3)
        assert metric(pc.port, DROP_PROTO) == base[DROP_PROTO] + 1


async def t_dropped_timeout():
    make_table("ops_to")
    with Pgcdc({"server": {"ping_interval": "1"}}) as pc:
        base = metrics(pc.port)
        good = await ws_connect(pc, "insert:ops_to")     # answers pings by itself
        c = raw_client(pc, "insert:ops_to")               # never reads, never pongs
        t0 = time.time()
        try:
            await asyncio.sleep(1.5)
            assert metric(pc.port, DROP_TIMEOUT) == base[DROP_TIMEOUT], "dropped after 1.5 s already"
            await await_until(lambda: metric(pc.port, DROP_TIMEOUT) >= base[DROP_TIMEOUT] + 1, 8,
                              "the silent client to be dropped (timeout)")
            took = time.time() - t0
            assert 2.0 <= took <= 6.0, "silent client dropped after %.1f s with ping_interval 1" % took
            assert c.wait_tcp_close(3), "the dropped client's TCP is still open"
            await asyncio.sleep(1.5)
            m = metrics(pc.port)
            assert m[DROP_TIMEOUT] == base[DROP_TIMEOUT] + 1, "%s = %s" % (DROP_TIMEOUT, m[DROP_TIMEOUT])
            assert m["pgcdc_clients"] == 1, "pgcdc_clients %s: the answering client should remain" % \
                m["pgcdc_clients"]
            assert m[DROP_PROTO] == base[DROP_PROTO] and m[DROP_SLOW] == base[DROP_SLOW], m
            sql("INSERT INTO ops_to VALUES (1, 'alive')")
            got = await recv_n(good, 1, 5)
            assert '"alive"' in got[0], got[0]
        finally:
            c.close()
            await ws_close(good)


async def t_dropped_slow():
    make_table("ops_slow")
    rows = 3000
    with Pgcdc({"server": {"max_queue": "65536"}}) as pc:
        base = metrics(pc.port)
        good = await ws_connect(pc, "insert:ops_slow")
        c = raw_client(pc, "insert:ops_slow", rcvbuf=4096)   # never reads
        try:
            # ~6 MB of frames, far beyond the kernel buffers and max_queue
            sql("INSERT INTO ops_slow SELECT g, repeat(md5(g::text), 64) FROM generate_series(1, %d) g" % rows)
            got = await recv_n(good, rows, 60)
            assert len(got) == rows
            await await_until(lambda: metric(pc.port, DROP_SLOW) >= base[DROP_SLOW] + 1, 10,
                              "the non-reading client to be dropped (slow)")
            await asyncio.sleep(0.3)
            m = metrics(pc.port)
            assert m[DROP_SLOW] == base[DROP_SLOW] + 1, "%s = %s" % (DROP_SLOW, m[DROP_SLOW])
            assert m[DROP_PROTO] == base[DROP_PROTO] and m[DROP_TIMEOUT] == base[DROP_TIMEOUT], m
            # the bound itself: what pgcdc had queued when it gave up (the
            # kernel's socket buffers hold more, so the client cannot tell)
            queued = [int(x) for x in re.findall(r"dropped as a slow consumer \((\d+) bytes queued\)",
                                                 pc.logtext())]
            assert len(queued) == 1, "log lines about the slow consumer: %s" % queued
            assert 0 < queued[0] <= 65536, \
                "dropped with %d bytes queued, max_queue is 65536" % queued[0]
            # dropped is no longer connected: it leaves the gauge (and
            # max_clients) at once, not when its socket finally goes
            t0 = time.time()
            try:
                await await_until(lambda: metric(pc.port, "pgcdc_clients") == 1, 5, "")
            except AssertionError:
                raise AssertionError("pgcdc_clients still %s (/health clients %s) 5 s after the slow "
                                     "client was counted in %s" % (
                                         metric(pc.port, "pgcdc_clients"), health(pc.port)[2].get("clients"),
                                         DROP_SLOW)) from None
            assert time.time() - t0 < 5
        finally:
            c.close()
            await ws_close(good)


async def t_reconnects():
    make_table("ops_rc")
    with Pgcdc() as pc:
        ws = await ws_connect(pc, "insert:ops_rc")
        m = metrics(pc.port)
        assert m["pgcdc_replication_connected"] == 1
        base = m["pgcdc_replication_reconnects_total"]
        pid = sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'" % pc.slot)
        assert pid, "slot %s has no active walsender" % pc.slot
        assert sql("SELECT pg_terminate_backend(%s)" % pid) == "t"
        await await_until(lambda: metric(pc.port, "pgcdc_replication_reconnects_total") >= base + 1, 10,
                          "pgcdc_replication_reconnects_total to grow after the walsender was terminated")

        def streaming():
            st, _, doc = health(pc.port)
            return st == 200 and doc.get("replication") == "streaming" and \
                metric(pc.port, "pgcdc_replication_connected") == 1
        await await_until(streaming, 10, "streaming again")
        new_pid = sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'" % pc.slot)
        assert new_pid and new_pid != pid, "walsender pid %r after reconnect (was %s)" % (new_pid, pid)
        assert metric(pc.port, "pgcdc_replication_reconnects_total") == base + 1
        sql("INSERT INTO ops_rc VALUES (1, 'after')")
        got = await recv_n(ws, 1, 10)
        assert '"after"' in got[0], got[0]
        assert metric(pc.port, "pgcdc_clients") == 1, "the client did not stay connected"
        await ws_close(ws)


async def t_confirmed_lsn():
    make_table("ops_conf")
    with Pgcdc() as pc:       # the harness sets status_interval = 1
        ws = await ws_connect(pc, "insert:ops_conf")
        c0 = metric(pc.port, "pgcdc_confirmed_lsn_bytes")
        sql("INSERT INTO ops_conf SELECT g, 'x' FROM generate_series(1, 50) g")
        frames = [json.loads(x) for x in await recv_n(ws, 50)]
        commit = lsn_int(frames[-1]["pos"].split(":")[0])
        t0 = time.time()
        await await_until(lambda: metric(pc.port, "pgcdc_confirmed_lsn_bytes") >= commit, 3.5,
                          "pgcdc_confirmed_lsn_bytes (was %d) to reach the commit %X" % (c0, commit))
        assert metric(pc.port, "pgcdc_confirmed_lsn_bytes") > c0
        took = time.time() - t0
        # equals the slot's confirmed_flush_lsn, within a status interval
        box = {}

        def same():
            a = metric(pc.port, "pgcdc_confirmed_lsn_bytes")
            s = slot_confirmed(pc.slot)
            b = metric(pc.port, "pgcdc_confirmed_lsn_bytes")
            box["v"] = (a, s, b)
            return a == s == b
        try:
            await await_until(same, 3, "")
        except AssertionError:
            a, s, b = box["v"]
            raise AssertionError("pgcdc_confirmed_lsn_bytes %d/%d, slot confirmed_flush_lsn %d (%X/%X)" % (
                a, b, s, s >> 32, s & 0xFFFFFFFF)) from None
        assert box["v"][1] >= commit, "slot confirmed %X < commit %X" % (box["v"][1], commit)
        assert took < 3.5
        await ws_close(ws)


async def t_lag():
    make_table("ops_lag")
    with Pgcdc() as pc:
        ws = await ws_connect(pc, "insert:ops_lag")
        seen = []
        # a burst: lag is sampled while it is processed
        sql("INSERT INTO ops_lag SELECT g, repeat('l', 300) FROM generate_series(1, 5000) g")
        for _ in range(5):
            v = metric(pc.port, "pgcdc_replication_lag_bytes")
            seen.append(v)
            assert v >= 0 and v == int(v), "pgcdc_replication_lag_bytes %r" % v
            await asyncio.sleep(0.05)
        await recv_n(ws, 5000, 30)
        box = {}

        def small():
            box["v"] = metric(pc.port, "pgcdc_replication_lag_bytes")
            assert box["v"] >= 0, "negative lag %s" % box["v"]
            return box["v"] <= 65536
        try:
            await await_until(small, 6, "")
        except AssertionError:
            raise AssertionError("idle, yet pgcdc_replication_lag_bytes stays %s (samples during the "
                                 "burst %s)" % (box.get("v"), seen)) from None
        await ws_close(ws)


# ---- HEAD --------------------------------------------------------------------

def t_head():
    with Pgcdc() as pc:
        for path, ctype in (("/ping", "text/plain"), ("/health", "application/json")):
            line, hdr, rest = head_request(pc.port, path)
            assert line.startswith("HTTP/1.1 200"), "HEAD %s: %r" % (path, line)
            assert hdr.get("content-type", "").split(";")[0].strip() == ctype, \
                "HEAD %s Content-Type %r" % (path, hdr.get("content-type"))
            assert rest == b"", "HEAD %s sent a body: %r" % (path, rest[:100])
            if "content-length" in hdr:
                get_body = http(pc.port, path)[2].encode()
                if path == "/ping":
                    assert int(hdr["content-length"]) == len(get_body), \
                        "HEAD /ping Content-Length %s, GET body %d bytes" % (hdr["content-length"], len(get_body))
        # and the server is still fine
        st, body = http_get(pc.port, "/ping")
        assert (st, body.strip()) == (200, "pong"), "GET /ping after the HEADs: %d %r" % (st, body)


def t_head_refusals():
    """HEAD never carries a body, whatever the status: a refusal keeps its
    status line and Content-Length (of the body GET would get) and sends
    nothing after the head.  A HEAD on /ws gets what a GET without an
    upgrade gets, 426 (a HEAD is never an upgrade)."""
    with Pgcdc() as pc:
        for path, status in (("/ping", 200), ("/nosuch", 404), ("/ws", 426),
                             ("/ws?query=insert:orders", 426)):
            line, hdr, rest = head_request(pc.port, path)
            assert line.startswith("HTTP/1.1 %d " % status), "HEAD %s: %r" % (path, line)
            assert rest == b"", "HEAD %s (%d) sent a body: %r" % (path, status, rest[:100])
            assert int(hdr.get("content-length", "0")) > 0, \
                "HEAD %s: Content-Length %r, expected the length a GET would get" % (path, hdr.get("content-length"))
        st, _ = http_get(pc.port, "/ws")
        assert st == 426, "GET /ws: %d" % st
        # the GET answers to the same paths do carry their bodies
        st, body = http_get(pc.port, "/nosuch")
        assert st == 404 and body, "GET /nosuch: %d %r" % (st, body)


# ---- logging -----------------------------------------------------------------

def t_log_startup():
    ver = version()
    server_version = sql("SHOW server_version").split()[0]
    with Pgcdc() as pc:
        lines = log_lines(pc)
        text = "\n".join(lines)
        assert any(ver in x for x in lines), "no startup line with the version %s:\n%s" % (ver, text)
        addr = "127.0.0.1:%d" % pc.port
        assert any(addr in x for x in lines), "no startup line with the listen address %s:\n%s" % (addr, text)
        assert any(pc.slot in x for x in lines), "no startup line with the slot %s:\n%s" % (pc.slot, text)
        assert any(server_version in x for x in lines), \
            "no line with the PostgreSQL server version %s:\n%s" % (server_version, text)
        for x in lines:
            assert LEVEL_RE.search(x), "log line without a level: %r" % x


async def t_log_connection_events():
    make_table("ops_log_a")
    make_table("ops_log_b")
    with Pgcdc({"server": {"trusted_proxies": "127.0.0.1"}}) as pc:
        a = await ws_connect(pc, "insert:ops_log_a", {"X-Forwarded-For": "203.0.113.71"})
        b = await ws_connect(pc, "insert:ops_log_b", {"X-Forwarded-For": "203.0.113.82"})
        await asyncio.sleep(0.2)
        await ws_close(a)
        b.transport.abort()
        await await_until(lambda: metric(pc.port, "pgcdc_clients") == 0, 3, "both clients gone")
        await asyncio.sleep(0.2)
        lines = log_lines(pc)
        text = "\n".join(lines)
        clients = (("203.0.113.71", "ops_log_a"), ("203.0.113.82", "ops_log_b"))
        for (ip, table), (other_ip, _) in zip(clients, reversed(clients)):
            mine = [x for x in lines if ip in x]
            sub = [x for x in mine if table in x]
            assert sub, "no line naming client %s with its subscription %s:\n%s" % (ip, table, text)
            after = mine[mine.index(sub[0]) + 1:]
            assert after, "no line naming client %s after it went away:\n%s" % (ip, text)
            non_debug = [x for x in mine if not re.search(r"\bdebug\b", x, re.I)]
            assert 2 <= len(non_debug) <= 3, "%d lines above debug name client %s (expected one per event):\n%s" % (
                len(non_debug), ip, "\n".join(mine))
            assert not [x for x in lines if other_ip in x and table in x], \
                "a line of client %s names the subscription of client %s" % (other_ip, ip)


async def t_log_no_line_per_change():
    make_table("ops_log_n")
    with Pgcdc() as pc:        # the harness runs it with -v
        ws = await ws_connect(pc, "insert:ops_log_n")
        await asyncio.sleep(0.3)
        before = len(log_lines(pc))
        sql("INSERT INTO ops_log_n SELECT g, 'x' FROM generate_series(1, 4000) g")
        sql(";".join("INSERT INTO ops_log_n VALUES (%d, 'y')" % i for i in range(4001, 5001)))
        await recv_n(ws, 5000, 60)
        await asyncio.sleep(0.3)
        lines = log_lines(pc)
        grew = len(lines) - before
        assert grew < 20, "the log grew by %d lines while 5,000 rows streamed (-v); some:\n%s" % (
            grew, "\n".join(lines[before:before + 8]))
        await ws_close(ws)


async def one_client_session(pc, table):
    ws = await ws_connect(pc, "insert:" + table)
    sql("INSERT INTO %s VALUES (1, 'q')" % table)
    await recv_n(ws, 1, 10)
    await ws_close(ws)
    await asyncio.sleep(0.2)


async def t_log_levels():
    make_table("ops_lvl")
    levels = {}
    for flags in (["-q"], [], ["-v"]):
        pc = Pgcdc()
        try:
            run_flags(pc, flags)
            sql("TRUNCATE ops_lvl")
            await one_client_session(pc, "ops_lvl")
            assert pc.stop(signal.SIGTERM) == 0, "exit status after SIGTERM"
        finally:
            pc.stop()
        lines = log_lines(pc)
        levels[" ".join(flags) or "default"] = lines
    q, d, v = levels["-q"], levels["default"], levels["-v"]
    info = re.compile(r"\binfo\b", re.I)
    debug = re.compile(r"\bdebug\b", re.I)
    assert not [x for x in q if info.search(x) or debug.search(x)], "-q logged info/debug lines:\n%s" % "\n".join(q)
    assert [x for x in d if info.search(x)], "the default level logged no info line:\n%s" % "\n".join(d)
    assert not [x for x in d if debug.search(x)], "the default level logged debug lines:\n%s" % "\n".join(d)
    assert len(q) < len(d), "-q logged %d lines, the default %d" % (len(q), len(d))
    assert [x for x in v if debug.search(x)], "-v logged no debug line:\n%s" % "\n".join(v)
    assert len(v) > len(d), "-v logged %d lines, the default %d" % (len(v), len(d))


# ---- exit status -------------------------------------------------------------

def t_exit_signals():
    make_table("ops_sig")
    for sig in (signal.SIGINT, signal.SIGTERM):
        pc = Pgcdc()
        try:
            pc.start()
            c = raw_client(pc, "insert:ops_sig")
            wait_until(lambda: metric(pc.port, "pgcdc_clients") == 1, 3, "the client to count")
            pc.proc.send_signal(sig)
            code, _ = c.read_close(5)
            assert code == 1001, "%s: the client got close %s, expected 1001" % (sig.name, code)
            c.close()
            try:
                rc = pc.proc.wait(10)
            except subprocess.TimeoutExpired:
                raise AssertionError("%s: pgcdc did not exit within 10 s" % sig.name) from None
            assert rc == 0, "%s: exit status %d; log: %s" % (sig.name, rc, pc.logtext()[-600:])
            wait_until(lambda: sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'"
                                   % pc.slot) == "0", 5, "the temporary slot to go")
        finally:
            pc.stop()


def t_exit_missing_config():
    path = "/nonexistent-dir-%d/pgcdc-missing.config" % os.getpid()
    rc, out, err = run_cli(["-c", path])
    assert rc == 1, "-c %s: exit status %d, expected 1; stderr %r" % (path, rc, err)
    assert path in err or "pgcdc-missing.config" in err, "the message does not name the file: %r" % err


def t_exit_config_error():
    pc = Pgcdc({"server": {"no_such_key": "1"}})
    rc, out, err = run_cli(["-c", pc.config])
    assert rc == 1, "unknown key: exit status %d, expected 1; stderr %r" % (rc, err)
    assert "pgcdc.config" in err and "no_such_key" in err, "message does not name file and key: %r" % err
    line = [i for i, x in enumerate(open(pc.config).read().split("\n"), 1) if "no_such_key" in x][0]
    assert re.search(r"\b%d\b" % line, err), "message does not name line %d: %r" % (line, err)
    rc, out, err = run_cli(["-t", "-c", Pgcdc().config])
    assert rc == 0 and "configuration ok" in out, "-t on a good file: rc %d %r %r" % (rc, out, err)


def t_exit_usage():
    rc, out, err = run_cli(["--no-such-option"])
    assert rc == 1, "unknown option: exit status %d, expected 1" % rc
    assert "usage" in err.lower() and "-c" in err, "no usage on stderr: %r" % err
    assert "usage" not in out.lower(), "usage went to stdout: %r" % out
    rc, out, err = run_cli(["-Z"])
    assert rc == 1 and "usage" in err.lower(), "-Z: rc %d, stderr %r" % (rc, err)
    rc, out, err = run_cli(["-h"])
    assert rc == 0, "-h: exit status %d" % rc
    assert "usage" in out.lower() and "-c" in out, "-h: no usage on stdout: %r" % out
    assert err.strip() == "", "-h wrote to stderr: %r" % err
    rc, out, err = run_cli(["-V"])
    assert rc == 0 and re.match(r"^pgcdc \d+\.\d+\.\d+\n$", out), "-V: rc %d, %r" % (rc, out)


def t_exit_listen_in_use():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        pc = Pgcdc({"server": {"listen": "127.0.0.1:%d" % port}})
        rc, out, err = run_cli(["-c", pc.config], timeout=15)
        assert rc == 2, "listen address in use: exit status %d, expected 2; stderr %r" % (rc, err)
        assert str(port) in err and "in use" in err.lower(), \
            "the message does not say the address %d is in use: %r" % (port, err)
    finally:
        s.close()


TESTS = [
    ("ops: /health 200 json, streaming, clients 0, lsn X/X", t_health_ok),
    ("ops: /health stream: equal for the same database and settings however spelled, else different",
     t_health_stream),
    ("ops: /health and pgcdc_clients count connected WebSocket clients", t_health_clients),
    ("ops: /health lsn advances after inserts", t_health_lsn_advances),
    ("ops: /health 503 degraded while the database is unreachable, /ping 200", t_health_degraded),
    ("ops: /metrics Prometheus text format and the required metrics", t_metrics_format),
    ("ops: pgcdc_changes_total grows by exactly the changes made", t_changes_total),
    ("ops: pgcdc_frames_sent_total and pgcdc_bytes_sent_total match what clients received", t_frames_and_bytes),
    ("ops: dropped{reason=protocol} after an unmasked frame", t_dropped_protocol),
    ("ops: dropped{reason=timeout} for a client that never pongs", t_dropped_timeout),
    ("ops: dropped{reason=slow} for a client that stops reading", t_dropped_slow),
    ("ops: replication_reconnects_total after the walsender is terminated", t_reconnects),
    ("ops: pgcdc_confirmed_lsn_bytes advances and equals the slot's confirmed_flush_lsn", t_confirmed_lsn),
    ("ops: pgcdc_replication_lag_bytes non-negative, small when idle", t_lag),
    ("ops: HEAD /ping and HEAD /health send headers only", t_head),
    ("ops: HEAD answered 200, 404 or 426 carries no body", t_head_refusals),
    ("ops: startup log names version, listen address, slot, server version", t_log_startup),
    ("ops: one log line per connection event, naming the client", t_log_connection_events),
    ("ops: no log line per change", t_log_no_line_per_change),
    ("ops: -q logs no info lines, -v adds debug lines", t_log_levels),
    ("ops: SIGINT and SIGTERM exit 0 after close 1001", t_exit_signals),
    ("ops: -c with a missing file exits 1 naming it", t_exit_missing_config),
    ("ops: a configuration error exits 1 naming file, line and key", t_exit_config_error),
    ("ops: unknown option exits 1 with usage on stderr; -h, -V exit 0", t_exit_usage),
    ("ops: listen address in use exits 2 with a clear message", t_exit_listen_in_use),
]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    main()
