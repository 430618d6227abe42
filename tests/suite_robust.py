"""suite_robust.py -- end-to-end regression tests for pgcdc's robustness.

Each test drives pgcdc into a corner where a server that looks right in
ordinary use can go wrong, and checks what the clients and the operator
actually see:

- a client vanishing in the same loop turn in which a change is fanned out
  must not cost the other clients that change or any later one;
- a client flooding pings while never reading the pongs is dropped as a
  slow consumer before pgcdc's memory grows with the pongs queued for it;
- a replication server that goes silent (the walsender stopped, TCP still
  open) is noticed: /health says degraded, and streaming resumes once the
  server is back;
- clients replaying a large history with a filter that matches nothing do
  not freeze the event loop for the others (/ping stays fast);
- a wal2json record that is not valid UTF-8 (an SQL_ASCII database) never
  reaches a client as a text frame; it is skipped and counted.

The slow test (silent replication server, about 60-70 s) runs last.

Run by test.sh with /usr/bin/python3 (PGHOST/PGPORT/PGUSER name the
database, PGCDC the binary).  It must be allowed to signal the database's
processes (root, or the cluster's owner): it stops and resumes the
walsender.  Arguments, if any, select the tests whose name contains one
of them.
"""
import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

import wsraw  # noqa: E402
from harness import Pgcdc, conninfo, http_get, run_selected, sql, wait_until  # noqa: E402
from harness import metric, metrics, raw_client, rss_kib  # noqa: E402

DROP_SLOW = 'pgcdc_clients_dropped_total{reason="slow"}'


# ---- helpers ---------------------------------------------------------------

def next_text(c, timeout):
    """The next text frame's payload (bytes); server pings are answered."""
    deadline = time.monotonic() + timeout
    while True:
        f = c.next_frame(max(0.0, deadline - time.monotonic()), answer_pings=True)
        if f.opcode == wsraw.OP_TEXT:
            return f.payload
        if f.opcode == wsraw.OP_CLOSE:
            raise AssertionError("close frame instead of a change: %r" % f)


def pos_of(payload):
    return json.loads(payload)["pos"]


def row_id(payload):
    """The "id" column's value of a change frame."""
    for col in json.loads(payload).get("columns", []):
        if col.get("name") == "id":
            return col.get("value")
    return None


# ---- 1. a client closing during a fan-out --------------------------------

def t_close_during_fanout():
    """Five clients; pgcdc is stopped while a row is inserted and client #3
    vanishes, so that on resuming pgcdc reads the change and the EOF in one
    loop turn.  Everyone else gets that row and the next one."""
    sql("DROP TABLE IF EXISTS rb_dirty; CREATE TABLE rb_dirty (id int PRIMARY KEY)")
    pc = Pgcdc()
    pc.start()
    clients = []
    stopped = False
    try:
        for _ in range(5):
            clients.append(raw_client(pc, "insert:rb_dirty"))
        wait_until(lambda: metric(pc.port, "pgcdc_clients") == 5, 5, "5 clients to be counted")
        os.kill(pc.proc.pid, signal.SIGSTOP)
        stopped = True
        sql("INSERT INTO rb_dirty VALUES (1)")
        time.sleep(1.0)     # the walsender has written the change by now
        clients[2].sock.close()
        time.sleep(0.2)
        os.kill(pc.proc.pid, signal.SIGCONT)
        stopped = False
        missing = []
        for want in (1, 2):
            if want == 2:
                sql("INSERT INTO rb_dirty VALUES (2)")
            for i, c in enumerate(clients):
                if i == 2:
                    continue
                try:
                    got = row_id(next_text(c, 4))
                    if got != want:
                        missing.append("client #%d: row %s instead of %d" % (i + 1, got, want))
                except (wsraw.Timeout, wsraw.PeerClosed, AssertionError) as e:
                    missing.append("client #%d: no row %d (%s)" % (i + 1, want, e))
        assert not missing, "; ".join(missing)
    finally:
        if stopped:
            os.kill(pc.proc.pid, signal.SIGCONT)
        for c in clients:
            c.close()
        pc.stop()


# ---- 2. pings flooded, pongs never read ----------------------------------

def t_ping_flood_memory():
    """Two million empty pings written as fast as the socket takes them,
    never reading: the client is dropped as slow (close 1013 or TCP gone)
    and pgcdc's resident memory stays within baseline + 64 MiB."""
    pings = 2000000
    per_chunk = 10000
    limit_kib = 64 * 1024
    sql("DROP TABLE IF EXISTS rb_pong; CREATE TABLE rb_pong (id int PRIMARY KEY)")
    pc = Pgcdc()
    pc.start()
    c = None
    try:
        slow0 = metric(pc.port, DROP_SLOW)
        c = raw_client(pc, "insert:rb_pong", rcvbuf=4096)
        base = rss_kib(pc.proc.pid)
        peak = base
        chunk = wsraw.build_frame(wsraw.OP_PING, b"", key=b"\x01\x02\x03\x04") * per_chunk
        # a small send buffer keeps the flood close to what pgcdc has read,
        # so that the memory samples follow it (and a leaking server is
        # caught before it takes much)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        c.sock.settimeout(3.0)
        sent = 0
        stopped_by = "all sent"
        while sent < pings:
            try:
                c.sock.sendall(chunk)
            except socket.timeout:
                stopped_by = "server stopped reading"
                break
            except OSError as e:
                stopped_by = "send failed: %s" % e
                break
            sent += per_chunk
            peak = max(peak, rss_kib(pc.proc.pid))
            if peak - base > limit_kib:
                stopped_by = "memory limit"
                break
        time.sleep(0.3)
        peak = max(peak, rss_kib(pc.proc.pid))
        assert peak - base <= limit_kib, \
            "VmRSS grew from %d KiB to %d KiB after %d pings (limit +%d KiB)" % (base, peak, sent, limit_kib)
        # what the client got: pongs, then (if dropped) close 1013 or TCP end
        dropped = None
        deadline = time.monotonic() + 8
        while dropped is None and time.monotonic() < deadline:
            try:
                f = c.read_frame(max(0.05, deadline - time.monotonic()))
            except wsraw.PeerClosed:
                dropped = "TCP closed"
                break
            except wsraw.Timeout:
                break
            if f.opcode == wsraw.OP_CLOSE:
                code = int.from_bytes(f.payload[:2], "big") if len(f.payload) >= 2 else None
                assert code == 1013, "close code %s, expected 1013 (slow consumer)" % code
                dropped = "close 1013"
        assert dropped, "not dropped after %d pings (%s); VmRSS %d -> %d KiB" % (sent, stopped_by, base, peak)
        wait_until(lambda: metric(pc.port, DROP_SLOW) >= slow0 + 1, 5,
                   lambda: "%s to increment (still %s)" % (DROP_SLOW, metric(pc.port, DROP_SLOW)))
    finally:
        if c:
            c.close()
        pc.stop()


# ---- 3. replaying clients do not freeze the loop --------------------------

def t_replay_keeps_loop_responsive():
    """A history full of small rows; ten clients replay all of it
    with a filter that matches nothing while /ping is timed every 20 ms."""
    # 130001 frames (each with its "xid" member, under 512 bytes with the
    # frame's own header) fit 96 MiB of pool blocks without evicting any:
    # short names keep each change that small
    rows = 130000
    txns = 4
    sql("DROP TABLE IF EXISTS rbr; CREATE TABLE rbr (i int PRIMARY KEY)")
    pc = Pgcdc({"server": {"history": "100663296"}})
    pc.start()
    clients = []
    try:
        first = raw_client(pc, "insert:rbr")
        sql("INSERT INTO rbr VALUES (0)")
        since = pos_of(next_text(first, 10))
        first.close()
        wait_until(lambda: metric(pc.port, "pgcdc_clients") == 0, 5, "the first client to go")
        frames0 = metric(pc.port, "pgcdc_history_frames")
        per = rows // txns
        for t in range(txns):
            sql("INSERT INTO rbr SELECT g FROM generate_series(%d, %d) g" % (1 + t * per, (t + 1) * per))
        wait_until(lambda: metric(pc.port, "pgcdc_changes_total") >= rows + 1, 60,
                   lambda: "pgcdc to decode %d changes (at %s)" % (rows + 1, metric(pc.port, "pgcdc_changes_total")))
        m = metrics(pc.port)
        assert m["pgcdc_history_frames"] == frames0 + rows, \
            "history holds %s frames, expected %d (%s bytes): the rows do not fit" % (
                m["pgcdc_history_frames"], frames0 + rows, m["pgcdc_history_bytes"])
        resumes0 = m.get("pgcdc_resumes_total", 0)

        lat = []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    st, _ = http_get(pc.port, "/ping", timeout=20)
                except OSError:
                    st = None
                lat.append((time.monotonic() - t0, st))
                time.sleep(0.02)
        th = threading.Thread(target=probe)
        th.start()
        try:
            time.sleep(0.1)
            req = wsraw.build_request("/ws?query=insert:rbr:i.eq.-1&since=" + since,
                                      wsraw.upgrade_headers())
            for _ in range(10):
                c = wsraw.WsRaw("127.0.0.1", pc.port, 20.0)
                c.send(req)
                clients.append(c)
            time.sleep(3.0)
        finally:
            stop.set()
            th.join(30)
        for c in clients:
            resp = c.read_http(10)
            assert resp.status == 101, "a replaying client was answered %r" % resp
        wait_until(lambda: metric(pc.port, "pgcdc_resumes_total") >= resumes0 + 10, 10,
                   "10 resumes to be counted")
        bad = [st for _, st in lat if st != 200]
        assert not bad, "/ping failed during the replay: %r" % bad[:5]
        worst = max(d for d, _ in lat)
        assert len(lat) >= 5, "only %d /ping probes in 3 s (worst %.3f s)" % (len(lat), worst)
        assert worst < 0.25, "/ping took up to %.3f s while 10 clients replayed %d rows (%d probes)" % (
            worst, rows, len(lat))
    finally:
        for c in clients:
            c.close()
        pc.stop()


# ---- 4. invalid UTF-8 from an SQL_ASCII database --------------------------

def t_invalid_utf8_skipped():
    db = "rb_ascii_%d" % os.getpid()
    sql('DROP DATABASE IF EXISTS "%s"' % db)
    sql("CREATE DATABASE \"%s\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" % db)
    pc = None
    c = None
    try:
        sql("CREATE TABLE rb_enc (id int PRIMARY KEY, t text)", db=db)
        pc = Pgcdc({"postgres": {"conninfo": conninfo(db)}})
        pc.start()
        skipped0 = metric(pc.port, "pgcdc_records_skipped_total")
        c = raw_client(pc, "insert:rb_enc")
        sql("INSERT INTO rb_enc VALUES (1, E'caf\\351')", db=db)
        sql("INSERT INTO rb_enc VALUES (2, 'ok')", db=db)
        payload = next_text(c, 10)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError("text frame is not valid UTF-8 (%s): %r" % (e, payload[:200])) from None
        assert '"ok"' in text and "caf" not in text, "first frame is not the valid row: %s" % text[:300]
        try:
            extra = next_text(c, 0.7)
            raise AssertionError("a further frame arrived: %r" % extra[:200])
        except wsraw.Timeout:
            pass
        wait_until(lambda: metric(pc.port, "pgcdc_records_skipped_total") >= skipped0 + 1, 3,
                   lambda: "pgcdc_records_skipped_total to increment (still %s)" %
                   metric(pc.port, "pgcdc_records_skipped_total"))
    finally:
        if c:
            c.close()
        if pc:
            pc.stop()
        sql('DROP DATABASE IF EXISTS "%s"' % db, check=False)


# ---- 5. a replication server that goes silent ------------------------------

async def t_silent_walsender():
    """The walsender is stopped (SIGSTOP): its TCP connection stays open but
    nothing comes.  pgcdc must say degraded within max(3 x status_interval,
    60) s, and stream again once the walsender is resumed (it then finds
    its connection gone and exits, freeing the slot)."""
    sql("DROP TABLE IF EXISTS rb_stall; CREATE TABLE rb_stall (id int PRIMARY KEY)")
    pc = Pgcdc({"postgres": {"status_interval": "1"}})
    pc.start()
    pid = None
    ws = None
    try:
        ws = await websockets.connect(pc.url("/ws?query=insert:rb_stall"), max_size=None,
                                      open_timeout=10, ping_interval=None)
        sql("INSERT INTO rb_stall VALUES (1)")
        got = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert got["action"] == "I", got
        pid = int(sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'" % pc.slot))
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        state = None
        while time.monotonic() - t0 < 68:
            st, body = http_get(pc.port, "/health")
            if st == 503:
                state = json.loads(body)
                break
            await asyncio.sleep(0.5)
        took = time.monotonic() - t0
        assert state is not None, "/health still 200 %.0f s after the walsender went silent" % took
        assert state.get("status") == "degraded", "503 body %r" % state
        os.kill(pid, signal.SIGCONT)
        sql("SELECT pg_terminate_backend(%d)" % pid, check=False)
        pid = None
        t1 = time.monotonic()
        while True:
            st, body = http_get(pc.port, "/health")
            if st == 200:
                break
            assert time.monotonic() - t1 < 20, "/health not back to 200 within 20 s: %s" % body
            await asyncio.sleep(0.2)
        sql("INSERT INTO rb_stall VALUES (2)")
        got = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert row_id(json.dumps(got)) == 2, "expected row 2, got %r" % got
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if ws:
            try:
                await asyncio.wait_for(ws.close(), 3)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        pc.stop()


TESTS = [
    ("robust: a client closing during a fan-out costs the others nothing", t_close_during_fanout),
    ("robust: a ping flood never read is dropped as slow, memory bounded", t_ping_flood_memory),
    ("robust: replaying clients do not freeze the event loop", t_replay_keeps_loop_responsive),
    ("robust: invalid UTF-8 from an SQL_ASCII database never reaches a client", t_invalid_utf8_skipped),
    ("robust: a silent replication server means degraded, then streaming again", t_silent_walsender),
]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    main()
