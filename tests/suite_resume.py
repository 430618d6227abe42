"""suite_resume.py -- end-to-end tests of resuming with since= (docs/protocol.md, Resume).

A writer inserts numbered rows continuously (one row per transaction, and
now and then a few rows in one transaction) while clients read part of the
stream, go away and come back with the last position they saw; they must
receive exactly the rows they missed, then the live ones, in order, with no
duplicate and no gap.  Also: resuming with a filter, resuming across a
SIGKILL and restart of pgcdc with a persistent slot, the 410 and 400
answers, history = 0, the memory bound of the history and its metrics.
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

from harness import (PGCDC, PGDATABASE, PGHOST, PGPORT, PGUSER, Pgcdc, collect,  # noqa: E402
                     pos_key, run_selected, sql, ws_path, ws_upgrade)
from harness import recv_until as harness_recv_until  # noqa: E402
from harness import lsn_int, metrics, rss_kib  # noqa: E402



# ---- helpers ---------------------------------------------------------------

async def connect(pc, query, since=None, filters=()):
    return await websockets.connect(pc.url(ws_path(query, filters, since)),
                                    max_size=None, max_queue=None,
                                    ping_interval=None, open_timeout=10)


def num(frame):
    for c in frame.get("columns", []):
        if c["name"] == "n":
            return c["value"]
    raise AssertionError("frame without column n: %s" % json.dumps(frame)[:200])


def make_table(name):
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id serial PRIMARY KEY, n int NOT NULL, "
        "k int NOT NULL, pad text)" % (name, name))


class Writer:
    """Inserts rows n = 1, 2, 3 ... into a table from one psql session, in
    commit order: mostly one row per transaction, every seventh time three
    rows in one transaction.  k = n % 3."""

    def __init__(self, table, pause=0.004):
        self.table = table
        self.pause = pause
        self.n = 0
        self.stopping = False
        self.error = None
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PGHOST, "-p", PGPORT,
             "-U", PGUSER, "-d", PGDATABASE, "-f", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _row(self):
        self.n += 1
        return "INSERT INTO %s (n, k, pad) VALUES (%d, %d, 'row %d');" % (
            self.table, self.n, self.n % 3, self.n)

    def _run(self):
        i = 0
        try:
            while not self.stopping:
                i += 1
                if i % 7 == 0:
                    stmt = "BEGIN; %s %s %s COMMIT;\n" % (self._row(), self._row(), self._row())
                else:
                    stmt = self._row() + "\n"
                self.proc.stdin.write(stmt)
                self.proc.stdin.flush()
                time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        """Stops inserting; returns once every row is committed."""
        self.stopping = True
        self.thread.join()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        err = self.proc.stderr.read()
        rc = self.proc.wait()
        if self.error or rc != 0:
            raise AssertionError("writer failed (rc %s): %s %s" % (rc, self.error, err.strip()))
        got = sql("SELECT count(*), coalesce(max(n), 0) FROM %s" % self.table).split("|")
        assert int(got[0]) == self.n and int(got[1]) == self.n, \
            "table holds %s rows, max %s; the writer wrote %d" % (got[0], got[1], self.n)
        return self.n

    def kill(self):
        if self.proc.poll() is None:
            self.stopping = True
            self.proc.kill()
            self.proc.wait()


async def recv_until(ws, pred, timeout=30, what="frames"):
    """Receives frames until pred(frame) holds for one; returns them all."""
    return await harness_recv_until(ws, pred, timeout, lambda out: "waiting for %s (last n %s)" % (
        what, num(out[-1]) if out else None))


async def wait_n(w, n, timeout=20):
    """Waits until the writer has issued row n."""
    deadline = time.time() + timeout
    while w.n < n:
        assert time.time() < deadline, "the writer is stuck at %d" % w.n
        await asyncio.sleep(0.02)


def check_run(frames, first_n, step=1, after=None):
    """frames must carry n = first_n, first_n + step, ... with positions
    strictly growing (and after the position `after`)."""
    prev = pos_key(after) if after else None
    for i, f in enumerate(frames):
        want = first_n + i * step
        assert num(f) == want, "frame %d of %d: n %s, expected %d (n of the frames: %s)" % (
            i, len(frames), num(f), want, [num(x) for x in frames[max(0, i - 3):i + 4]])
        k = pos_key(f["pos"])
        assert prev is None or k > prev, "pos %s does not follow the previous one" % f["pos"]
        prev = k


def body_says_gone(body):
    b = body.lower()
    return b.strip() and any(w in b for w in ("histor", "older", "gone", "reload", "restart"))


async def close(ws):
    try:
        await asyncio.wait_for(ws.close(), 5)
    except Exception:  # noqa: BLE001 - the server may have gone already
        pass


# ---- tests -------------------------------------------------------------------

async def t_resume_under_load():
    make_table("r_load")
    with Pgcdc() as pc:
        w = Writer("r_load").start()
        try:
            ws = await connect(pc, "insert:r_load")
            frames = await collect(ws, 40)
            check_run(frames, num(frames[0]))
            last = frames[-1]
            await close(ws)
            for rnd in range(4):
                # away while more rows are committed
                away_from = w.n
                await wait_n(w, away_from + 60 + rnd * 40)
                ws = await connect(pc, "insert:r_load", since=last["pos"])
                target = w.n + 40
                got = await recv_until(ws, lambda f: num(f) >= target,
                                       what="n %d in round %d since %s (n %d)" % (target, rnd, last["pos"], num(last)))
                await close(ws)
                assert len(got) > 60, "round %d: only %d frames" % (rnd, len(got))
                check_run(got, num(last) + 1, after=last["pos"])
                last = got[-1]
            n = w.stop()
            ws = await connect(pc, "insert:r_load", since=last["pos"])
            if num(last) < n:
                got = await recv_until(ws, lambda f: num(f) >= n,
                                       what="n %d (last row) since %s" % (n, last["pos"]))
                check_run(got, num(last) + 1, after=last["pos"])
                assert num(got[-1]) == n
            await expect_none(ws)
            await close(ws)
        finally:
            w.kill()


async def expect_none(ws, seconds=0.5):
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected frame: %s" % msg[:200])


async def t_resume_with_filter():
    make_table("r_filter")
    with Pgcdc() as pc:
        w = Writer("r_filter").start()
        try:
            ws = await connect(pc, "insert:r_filter:k.eq.0")
            frames = await collect(ws, 15)
            check_run(frames, num(frames[0]), step=3)
            last = frames[-1]
            await close(ws)
            for rnd in range(3):
                await wait_n(w, w.n + 60)
                filters = ["n.gt.0"] if rnd == 1 else []   # an extra AND-ed filter changes nothing
                ws = await connect(pc, "insert:r_filter:k.eq.0", since=last["pos"], filters=filters)
                target = w.n + 30
                got = await recv_until(ws, lambda f: num(f) >= target, what="n %d" % target)
                await close(ws)
                assert all(num(f) % 3 == 0 for f in got), "a row with k != 0 arrived"
                check_run(got, num(last) + 3, step=3, after=last["pos"])
                last = got[-1]
            n = w.stop()
            # a different filter from an earlier position: only its rows after it
            mid = got[-10]
            ws = await connect(pc, "insert:r_filter", since=mid["pos"], filters=["k.eq.1"])
            want = [m for m in range(num(mid) + 1, n + 1) if m % 3 == 1]
            got = await recv_until(ws, lambda f: num(f) == want[-1], what="n %d" % want[-1])
            assert [num(f) for f in got] == want, "k = 1 rows after the position: got %s, expected %s" % (
                [num(f) for f in got][:20], want[:20])
            await expect_none(ws)
            await close(ws)
        finally:
            w.kill()


async def restart_persistent(eager):
    """A client reading under load; pgcdc is SIGKILLed and restarted with
    its persistent slot while the inserts go on; the client comes back with
    its last position.  eager: it comes back as soon as the new pgcdc
    accepts connections, before the backlog is decoded again."""
    tab = "r_restart_%d" % eager
    make_table(tab)
    # eager: the slot's confirmed position stays far behind (status_interval
    # 10 s), so the new pgcdc has a long backlog to decode again while the
    # client is already back
    pg = {"temporary_slot": "false"}
    if eager:
        pg["status_interval"] = "10"
    pc = Pgcdc({"postgres": pg})
    w = None
    try:
        pc.start()
        w = Writer(tab).start()
        ws = await connect(pc, "insert:" + tab)
        seen = await collect(ws, 150)
        pc.proc.send_signal(signal.SIGKILL)
        pc.proc.wait()
        pc.logf.close()
        # everything the old process wrote is still in the socket
        try:
            while True:
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        except websockets.ConnectionClosed:
            pass
        check_run(seen, num(seen[0]))
        last = seen[-1]
        await wait_n(w, w.n + 100)      # committed while pgcdc is down
        if eager:
            pc.logf = open(pc.log, "ab")
            pc.proc = subprocess.Popen([PGCDC, "-c", pc.config, "-v"],
                                       stdout=pc.logf, stderr=subprocess.STDOUT)
        else:
            pc.start(timeout=30)
        deadline = time.time() + 20
        while True:
            try:
                ws = await connect(pc, "insert:" + tab, since=last["pos"])
                break
            except OSError:
                # not listening yet
                assert time.time() < deadline and pc.proc.poll() is None, pc.logtext()[-1500:]
                await asyncio.sleep(0.002)
            except websockets.InvalidStatusCode as e:
                if e.status_code == 503 and time.time() < deadline:   # not streaming yet
                    await asyncio.sleep(0.05)
                    continue
                raise AssertionError("resume after the restart answered %d; log: %s" % (
                    e.status_code, pc.logtext()[-1500:]))
        await wait_n(w, w.n + 100)      # and live ones
        n = w.stop()
        got = await recv_until(ws, lambda f: num(f) >= n, timeout=60, what="n %d" % n)
        check_run(got, num(last) + 1, after=last["pos"])
        await expect_none(ws)
        await close(ws)
        rows = [int(x) for x in sql("SELECT n FROM %s WHERE n >= %d ORDER BY id" % (tab, num(seen[0]))).split()]
        assert [num(f) for f in seen + got] == rows, "received rows differ from the table's"
    finally:
        if w:
            w.kill()
        pc.stop()
        for _ in range(50):
            if sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'" % pc.slot) == "0":
                break
            if sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   "WHERE slot_name = '%s' AND NOT active" % pc.slot, check=False) == "":
                time.sleep(0.1)


async def t_restart_persistent():
    await restart_persistent(False)


async def t_restart_persistent_eager():
    await restart_persistent(True)


async def t_ahead_of_the_restarted_stream():
    """A client back on a restarted pgcdc before that one has decoded again
    the transaction holding its position (its last change of a 200,000-row
    transaction: the server decodes it whole before sending any of it) gets
    nothing at or before its position, then exactly what follows."""
    tab = "r_ahead"
    make_table(tab)
    rows = 200000
    # status_interval 10: the slot stays before the big transaction, which
    # the restarted pgcdc must therefore decode again
    pc = Pgcdc({"postgres": {"temporary_slot": "false", "status_interval": "10"}})
    try:
        pc.start()
        query = "insert:%s:n.eq.%d" % (tab, rows)
        ws = await connect(pc, query)
        sql("INSERT INTO %s (n, k) SELECT g, 0 FROM generate_series(1, %d) g" % (tab, rows))
        last = (await recv_until(ws, lambda f: True, timeout=60))[-1]
        assert num(last) == rows, last
        pc.proc.send_signal(signal.SIGKILL)
        pc.proc.wait()
        pc.logf.close()
        await close(ws)
        pc.logf = open(pc.log, "ab")
        pc.proc = subprocess.Popen([PGCDC, "-c", pc.config, "-v"], stdout=pc.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                ws = await connect(pc, query, since=last["pos"])
                break
            except OSError:
                assert time.time() < deadline and pc.proc.poll() is None, pc.logtext()[-1500:]
                await asyncio.sleep(0.002)
            except websockets.InvalidStatusCode as e:
                if e.status_code == 503 and time.time() < deadline:   # slot not read yet
                    await asyncio.sleep(0.002)
                    continue
                raise AssertionError("resume after the restart answered %d; log: %s" % (
                    e.status_code, pc.logtext()[-1500:]))
        # the client is back; the old transaction is being decoded again
        sql("INSERT INTO %s (n, k) VALUES (%d, 1)" % (tab, rows))
        got = await recv_until(ws, lambda f: True, timeout=60)
        assert got[0]["pos"] != last["pos"] and {c["name"]: c["value"] for c in got[0]["columns"]}["k"] == 1, (
            "after since=%s the first change was %s (n %s)" % (last["pos"], got[0]["pos"], num(got[0])))
        await expect_none(ws)
        await close(ws)
    finally:
        pc.stop()
        sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = '%s' AND NOT active" % pc.slot, check=False)


async def rows_with_pos(pc, table, count, start):
    """Inserts count rows (one transaction each) and returns their frames."""
    ws = await connect(pc, "insert:" + table)
    sql(" ".join("BEGIN; INSERT INTO %s (n, k, pad) VALUES (%d, 0, repeat('x', 200)); COMMIT;" %
                 (table, start + i) for i in range(count)))
    got = await recv_until(ws, lambda f: num(f) == start + count - 1)
    await close(ws)
    return got


async def t_gone_small_history():
    make_table("r_small")
    with Pgcdc({"server": {"history": "4096"}}) as pc:
        first = await rows_with_pos(pc, "r_small", 3, 1)
        st, body = ws_upgrade(pc.port, ws_path("insert:r_small", since=first[0]["pos"]))
        assert st == 101, "a position still in the history answered %d %s" % (st, body)
        later = await rows_with_pos(pc, "r_small", 60, 100)
        for f in (first[0], first[-1], later[0]):
            st, body = ws_upgrade(pc.port, ws_path("insert:r_small", since=f["pos"]))
            assert st == 410, "since=%s (out of a 4096-byte history) answered %d %s" % (f["pos"], st, body)
            assert body_says_gone(body), "410 body does not say why: %r" % body
        m = metrics(pc.port)
        assert m["pgcdc_history_bytes"] <= 4096, "history holds %s bytes" % m["pgcdc_history_bytes"]
        assert 0 < m["pgcdc_history_frames"] < 60
        # the newest ones are still served, with exactly what follows them
        mid = later[-5]
        ws = await connect(pc, "insert:r_small", since=mid["pos"])
        got = await recv_until(ws, lambda f: num(f) == 159)
        assert [num(f) for f in got] == [156, 157, 158, 159], [num(f) for f in got]
        await close(ws)


async def t_gone_inside_a_transaction():
    """The history's oldest change may be in the middle of a transaction:
    a position earlier in that same transaction (same commit LSN, smaller
    index) has lost changes too, so it is 410; a later one of it is served
    with exactly what follows."""
    make_table("r_intx")
    with Pgcdc({"server": {"history": "4096"}}) as pc:
        ws = await connect(pc, "insert:r_intx")
        sql("INSERT INTO r_intx (n, k, pad) SELECT g, 0, repeat('x', 200) FROM generate_series(1, 60) g")
        got = await recv_until(ws, lambda f: num(f) == 60)
        await close(ws)
        lsns = {f["pos"].split(":")[0] for f in got}
        assert len(got) == 60 and len(lsns) == 1, "60 rows of one transaction: %d frames, %s" % (
            len(got), sorted(lsns))
        kept = metrics(pc.port)["pgcdc_history_frames"]
        assert 2 <= kept < 50, "the history keeps %s of the transaction's 60 changes" % kept
        for f in (got[0], got[59 - int(kept) - 1]):
            st, body = ws_upgrade(pc.port, ws_path("insert:r_intx", since=f["pos"]))
            assert st == 410, "since=%s (earlier in a transaction whose start was evicted) answered %d %s" % (
                f["pos"], st, body)
            assert body_says_gone(body), "410 body does not say why: %r" % body
        mid = got[-3]
        ws = await connect(pc, "insert:r_intx", since=mid["pos"])
        tail = await recv_until(ws, lambda f: num(f) == 60)
        assert [num(f) for f in tail] == [59, 60], [num(f) for f in tail]
        await close(ws)


async def t_gone_after_temporary_restart():
    make_table("r_temp")
    pc = Pgcdc()
    try:
        pc.start()
        before = await rows_with_pos(pc, "r_temp", 2, 1)
        assert pc.stop() == 0
        pc.start()
        for f in before:
            st, body = ws_upgrade(pc.port, ws_path("insert:r_temp", since=f["pos"]))
            assert st == 410, "since=%s from before a restart (temporary slot) answered %d %s" % (
                f["pos"], st, body)
            assert body_says_gone(body), "410 body does not say why: %r" % body
        after = await rows_with_pos(pc, "r_temp", 2, 10)
        ws = await connect(pc, "insert:r_temp", since=after[0]["pos"])
        got = await recv_until(ws, lambda f: True)
        assert num(got[0]) == 11
        await close(ws)
    finally:
        pc.stop()


def t_bad_positions():
    make_table("r_bad")
    with Pgcdc() as pc:
        for bad in ("abc", "0/0", "1/2:x", ":5", "0/1:99999999999", "", "0/1:", "G/1:0", "0/1:-1",
                    "0/1:0:0", "1/:0", "/1:0", "0/1 :0", "0/100000000:0"):
            st, body = ws_upgrade(pc.port, ws_path("insert:r_bad", since=bad))
            assert st == 400, "since=%r answered %d %s" % (bad, st, body)
            assert body.strip(), "400 for since=%r has no body" % bad
        # well-formed ones, in lower case too
        for good in ("0/1:0", "ffffffff/ffffffff:4294967295", "1a/2b:3"):
            st, body = ws_upgrade(pc.port, ws_path("insert:r_bad", since=good))
            assert st in (101, 410), "since=%r answered %d %s" % (good, st, body)


async def t_future_position():
    """A position beyond everything decoded (a client of another pgcdc, a
    clock of its own): refused, or served without any change at or before it."""
    make_table("r_future")
    with Pgcdc() as pc:
        got = await rows_with_pos(pc, "r_future", 2, 1)
        lsn = lsn_int(got[-1]["pos"].split(":")[0]) + 0x1000000
        future = "%X/%X:0" % (lsn >> 32, lsn & 0xFFFFFFFF)
        st, body = ws_upgrade(pc.port, ws_path("insert:r_future", since=future))
        if st != 101:
            assert 400 <= st < 500 and body.strip(), "since=%s answered %d %r" % (future, st, body)
            return
        ws = await connect(pc, "insert:r_future", since=future)
        sql("INSERT INTO r_future (n, k) VALUES (3, 0)")
        try:
            msg = await asyncio.wait_for(ws.recv(), 1.5)
        except asyncio.TimeoutError:
            return
        finally:
            await close(ws)
        raise AssertionError("since=%s (after every change so far) was accepted and then got %s" %
                             (future, msg[:120]))


async def t_history_disabled():
    make_table("r_off")
    with Pgcdc({"server": {"history": "0"}}) as pc:
        got = await rows_with_pos(pc, "r_off", 3, 1)
        for p in ("0/1:0", got[0]["pos"], got[1]["pos"]):
            st, body = ws_upgrade(pc.port, ws_path("insert:r_off", since=p))
            assert st == 410, "history = 0, since=%s answered %d %s" % (p, st, body)
            assert body_says_gone(body), "410 body does not say why: %r" % body
        m = metrics(pc.port)
        assert m["pgcdc_history_bytes"] == 0 and m["pgcdc_history_frames"] == 0, m


async def t_memory_bounded():
    make_table("r_mem")
    limit = 1048576
    with Pgcdc({"server": {"history": str(limit)}}) as pc:
        ws = await connect(pc, "insert:r_mem")

        def fill(lo, hi):
            sql("INSERT INTO r_mem (n, k, pad) SELECT g, 0, repeat(md5(g::text), 60) "
                "FROM generate_series(%d, %d) g" % (lo, hi))

        async def drain(upto):
            count = 0
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 30))
                count += 1
                if num(f) == upto:
                    return count

        # warm up: the history full once, then the baseline
        fill(1, 1000)
        await drain(1000)
        base = rss_kib(pc.proc.pid)
        peak = base
        total = 0
        lo = 1001
        for _ in range(10):           # 10 x 1000 rows of ~2 KB: ~20 MB of frames
            fill(lo, lo + 999)
            total += await drain(lo + 999)
            lo += 1000
            peak = max(peak, rss_kib(pc.proc.pid))
            h = metrics(pc.port)["pgcdc_history_bytes"]
            assert h <= limit, "pgcdc_history_bytes %d > %d" % (h, limit)
        assert total == 10000, total
        m = metrics(pc.port)
        assert 0 < m["pgcdc_history_bytes"] <= limit, m["pgcdc_history_bytes"]
        assert m["pgcdc_history_frames"] < 1000, m["pgcdc_history_frames"]
        grew = peak - base
        assert grew <= 16 * 1024, "VmRSS grew from %d kB to %d kB" % (base, peak)
        await close(ws)


async def t_metrics():
    make_table("r_met")
    with Pgcdc({"server": {"history": "65536"}}) as pc:
        m = metrics(pc.port)
        for k in ("pgcdc_history_bytes", "pgcdc_history_frames", "pgcdc_history_oldest_lsn_bytes",
                  "pgcdc_resumes_total"):
            assert k in m, "/metrics lacks %s" % k
        assert m["pgcdc_resumes_total"] == 0
        got = await rows_with_pos(pc, "r_met", 5, 1)
        m = metrics(pc.port)
        assert m["pgcdc_history_frames"] == 5, m["pgcdc_history_frames"]
        assert m["pgcdc_history_bytes"] > 0
        assert m["pgcdc_history_oldest_lsn_bytes"] == lsn_int(got[0]["pos"].split(":")[0]), (
            m["pgcdc_history_oldest_lsn_bytes"], got[0]["pos"])
        for i in range(3):
            ws = await connect(pc, "insert:r_met", since=got[i]["pos"])
            rest = await recv_until(ws, lambda f: num(f) == 5)
            assert [num(f) for f in rest] == list(range(i + 2, 6))
            await close(ws)
        ws = await connect(pc, "insert:r_met")      # not a resume
        await close(ws)
        ws_upgrade(pc.port, ws_path("insert:r_met", since="abc"))    # refused: not a resume
        assert metrics(pc.port)["pgcdc_resumes_total"] == 3
        # after eviction, the oldest kept position moves on
        more = await rows_with_pos(pc, "r_met", 200, 100)
        m = metrics(pc.port)
        oldest = m["pgcdc_history_oldest_lsn_bytes"]
        assert lsn_int(got[-1]["pos"].split(":")[0]) < oldest <= lsn_int(more[-1]["pos"].split(":")[0]), oldest
        assert m["pgcdc_history_bytes"] <= 65536


TESTS = [
    ("resume: reconnect with since gets the missed rows then live ones, under load", t_resume_under_load),
    ("resume: with a filter, only matching rows after the position", t_resume_with_filter),
    ("resume: across SIGKILL and restart with a persistent slot", t_restart_persistent),
    ("resume: across a restart, reconnecting before replication streams", t_restart_persistent_eager),
    ("resume: back before the restarted stream reaches its position: nothing twice",
     t_ahead_of_the_restarted_stream),
    ("resume: 410 for a position out of a small history", t_gone_small_history),
    ("resume: 410 for a position inside a transaction whose start left the history",
     t_gone_inside_a_transaction),
    ("resume: 410 for a position from before a restart (temporary slot)", t_gone_after_temporary_restart),
    ("resume: 400 for malformed positions", t_bad_positions),
    ("resume: a position beyond the stream never gets earlier changes", t_future_position),
    ("resume: history = 0 refuses earlier positions with 410", t_history_disabled),
    ("resume: memory stays within the configured history", t_memory_bounded),
    ("resume: history and resume metrics", t_metrics),
]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    main()
