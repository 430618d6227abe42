"""suite_snapshot.py -- end-to-end tests of snapshot=1 (docs/protocol.md,
Snapshots): the table's matching rows as S messages, the E marker, then
exactly the changes the snapshot did not contain.

- rendering: S rows' "columns" are byte for byte the "columns" of wal2json's
  own insert records of the same rows, for a table of every common type,
  with pgcdc's default wal2json options and with the options that change
  rendering;
- the seam under load: writers insert, update (bumping a version) and
  delete while 20 clients take snapshots one after another; each client's
  rows plus its changes equal the final table, and no change is for a row
  version its snapshot already had;
- memory: a long snapshot to a reader that stops reading keeps pgcdc's RSS
  bounded while another client stays live, and then completes;
- max_snapshots queue order, snapshot_timeout (1013), a disconnect or a
  timeout cancels the query and leaves no transaction open, the 403 for a
  table pgcdc's role cannot read, the 400 cases, the filter pushed into the
  query (pg_stat_user_tables), and "snapshot overtaken" (1013).
"""
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

from harness import (PGDATABASE, PGHOST, PGPORT, PGUSER, Pgcdc,  # noqa: E402
                     run_selected, sql, wait_until, ws_path, ws_upgrade)
from harness import metrics, rss_kib  # noqa: E402

BIG_ROWS = 300000


# ---- helpers ---------------------------------------------------------------

def snap_path(query, filters=(), extra=""):
    return ws_path(query, filters) + "&snapshot=1" + extra


def connect(pc, path, **kw):
    """websockets.connect: await it, or use it with async with."""
    kw.setdefault("max_queue", None)
    return websockets.connect(pc.url(path), max_size=None, ping_interval=None,
                                    open_timeout=10, **kw)


async def read_snapshot(ws, timeout=60):
    """Reads S messages until the E marker: (raw S texts, E object)."""
    rows = []
    deadline = time.time() + timeout
    while True:
        m = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.time()))
        if m.startswith('{"action":"S"'):
            rows.append(m)
            continue
        obj = json.loads(m)
        assert obj.get("action") == "E", "expected S or E, got %s" % m[:300]
        return rows, obj


def columns_raw(text):
    """The raw bytes of a record's "columns" array (I records and S
    messages both end with it)."""
    i = text.index(',"columns":[')
    assert text.endswith("]}"), text[-50:]
    return text[i + len(',"columns":'):-1]


def open_snapshot_txns():
    """pgcdc's snapshot connections inside a transaction (should be none
    once their snapshots ended)."""
    return int(sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcdc snapshot' "
                   "AND (xact_start IS NOT NULL OR state <> 'idle')"))


async def t_commit_not_yet_visible():
    """Transactions whose commits are in the WAL, and decoded, but not yet
    visible (they wait for a synchronous standby that never answers) when a
    snapshot is taken: the rows lack them, so they must come as changes
    after the E marker although they were decoded before the snapshot
    began.  Alone, such a transaction is at the snapshot's xmax; once a
    later one has ended, it is in the snapshot's in-progress list."""
    sql("DROP TABLE IF EXISTS sn_sync; CREATE TABLE sn_sync (id int PRIMARY KEY, v text); "
        "INSERT INTO sn_sync VALUES (1, 'before')")
    pc = Pgcdc()
    waiters = []
    try:
        pc.start()
        async with connect(pc, ws_path("insert:sn_sync")) as live:
            sql("ALTER SYSTEM SET synchronous_standby_names = 'pgcdc_no_such_standby'")
            sql("SELECT pg_reload_conf()")
            wait_until(lambda: sql("SHOW synchronous_standby_names") == "pgcdc_no_such_standby", 10,
                       "synchronous_standby_names to apply")
            for case, (wait_id, later_id) in enumerate(((2, None), (4, 5))):
                waiters.append(subprocess.Popen(
                    ["psql", "-X", "-q", "-h", PGHOST, "-p", PGPORT, "-U", PGUSER, "-d", PGDATABASE,
                     "-c", "INSERT INTO sn_sync VALUES (%d, 'waiting')" % wait_id],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                got = json.loads(await asyncio.wait_for(live.recv(), 20))
                assert got["columns"][0]["value"] == wait_id, got
                if later_id:
                    # a later transaction that ends (synchronous_commit local)
                    sql("SET synchronous_commit = local; INSERT INTO sn_sync VALUES (%d, 'later')" % later_id)
                    got = json.loads(await asyncio.wait_for(live.recv(), 20))
                    assert got["columns"][0]["value"] == later_id, got
                visible = sorted(int(x) for x in sql("SELECT id FROM sn_sync").split())
                assert wait_id not in visible, "the waiting insert is visible already"
                async with connect(pc, snap_path("insert:sn_sync")) as ws:
                    rows, end = await read_snapshot(ws)
                    ids = sorted(json.loads(r)["columns"][0]["value"] for r in rows)
                    assert ids == visible, "snapshot rows %s, the table shows %s" % (ids, visible)
                    sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
                    try:
                        after = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    except asyncio.TimeoutError:
                        raise AssertionError("case %d: the row of the transaction the snapshot did not see "
                                             "never came (E at %s)" % (case + 1, end.get("pos"))) from None
                    assert after["action"] == "I" and after["columns"][0]["value"] == wait_id, after
                    try:
                        extra = await asyncio.wait_for(ws.recv(), 0.3)
                        raise AssertionError("case %d: then also %s" % (case + 1, extra[:200]))
                    except asyncio.TimeoutError:
                        pass
    finally:
        sql("ALTER SYSTEM RESET synchronous_standby_names", check=False)
        sql("SELECT pg_reload_conf()", check=False)
        for w in waiters:
            w.kill()
            w.wait()
        pc.stop()


class Locker:
    """A session holding an ACCESS EXCLUSIVE lock on a table, so that a
    snapshot's LOCK TABLE waits until release()."""

    def __init__(self, table):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PGHOST, "-p", PGPORT,
                                   "-U", PGUSER, "-d", PGDATABASE],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.p.stdin.write("BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(0);\n" % table)
        self.p.stdin.flush()
        wait_until(lambda: sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                               "WHERE c.relname = '%s' AND l.mode = 'AccessExclusiveLock' AND l.granted"
                               % table) == "1", 10, "the lock on %s" % table)

    def release(self):
        if self.p.poll() is None:
            self.p.stdin.write("COMMIT;\n")
            self.p.stdin.close()
            self.p.wait(10)


def waiting_for_lock():
    return int(sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcdc snapshot' "
                   "AND wait_event_type = 'Lock'"))


# ---- rendering ---------------------------------------------------------------

TYPES_DDL = """
DROP TABLE IF EXISTS sn_types;
DROP TYPE IF EXISTS sn_mood, "Sn Mood", sn_pair;
DROP DOMAIN IF EXISTS sn_posint, sn_code;
CREATE TYPE sn_mood AS ENUM ('ok', 'meh');
CREATE TYPE "Sn Mood" AS ENUM ('a b', 'c"d');
CREATE TYPE sn_pair AS (a int, b text);
CREATE DOMAIN sn_posint AS int CHECK (VALUE > 0);
CREATE DOMAIN sn_code AS varchar(8);
CREATE TABLE sn_types (
  id int PRIMARY KEY, gone int,
  i2 int2, i8 int8, n numeric, n2 numeric(10,2), f4 float4, f8 float8, b bool,
  t text, vc varchar(10), ch char(5), by bytea, j json, jb jsonb, ia int[], ta text[],
  u uuid, d date, tm time, ts timestamp, tz timestamptz, iv interval, ip inet,
  dom sn_posint, dom2 sn_code, en sn_mood, qen "Sn Mood", qena "Sn Mood"[], comp sn_pair,
  big text, o oid, m money, nn int NOT NULL DEFAULT 7, ser bigserial
);
ALTER TABLE sn_types DROP COLUMN gone;
ALTER TABLE sn_types ALTER COLUMN big SET STORAGE EXTERNAL;
"""

TYPES_ROWS = r"""
INSERT INTO sn_types (id, i2, i8, n, n2, f4, f8, b, t, vc, ch, by, j, jb, ia, ta, u, d, tm, ts, tz, iv, ip,
                      dom, dom2, en, qen, qena, comp, big, o, m) VALUES
 (1, -32768, 9223372036854775807, 1500.25, 12.5, 1.5, 0.1, true,
  E'tab\there "q" \\ back \b\f\n\r \x01\x1f\x7f / caf\u00e9 \u2603 \U0001F600', 'short', 'ab',
  '\x00ff10', '{"a": [1, null], "b": "\u00e9"}', '{"a": [1, null], "b": "x"}', '{1,2,3}',
  '{"a b","c\"d",NULL}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-01-02', '12:34:56.789',
  '2026-01-02 03:04:05.678', '2026-01-02 03:04:05+02', '1 year 2 mons 3 days 04:05:06', '192.168.0.1/24',
  5, 'abc', 'meh', 'c"d', '{"a b","c\"d"}', '(1,"x y")',
  (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3000) g), 12345, 12.34),
 (2, NULL, NULL, 'NaN', NULL, 'Infinity', '-Infinity', false, '', NULL, NULL, '\x', '[]', '{}', '{}',
  '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'ok', 'a b', '{}', '(,)', NULL, NULL, NULL),
 (3, 0, -1, 'Infinity', -0.5, 'NaN', 1e-300, NULL, 'plain', NULL, NULL, NULL, 'null', 'null', NULL, NULL,
  NULL, 'infinity', NULL, '-infinity', 'infinity', '-1 days', '::1', NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL),
 (4, NULL, NULL, '-Infinity', NULL, '-Infinity', 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""

OPTIONS = ("include-type-oids=1,include-not-null=1,include-domain-data-type=1,"
           "include-column-positions=1,include-default=1")


def peek_inserts(slot, options, consume):
    fn = "pg_logical_slot_get_changes" if consume else "pg_logical_slot_peek_changes"
    opts = "'format-version', '2'"
    for kv in options.split(","):
        k, _, v = kv.partition("=")
        opts += ", '%s', '%s'" % (k.strip(), v.strip())
    out = sql("SELECT data FROM %s('%s', NULL, NULL, %s)" % (fn, slot, opts))
    recs = {}
    for line in out.split("\n"):
        if line.startswith('{"action":"I"') and '"table":"sn_types"' in line:
            recs[json.loads(line)["columns"][0]["value"]] = line
    return recs


def t_render():
    sql(TYPES_DDL)
    slot = "sn_peek_%d" % os.getpid()
    sql("SELECT pg_create_logical_replication_slot('%s', 'wal2json')" % slot)
    try:
        sql(TYPES_ROWS)
        want_default = peek_inserts(slot, "include-timestamp=1", False)
        want_opts = peek_inserts(slot, OPTIONS, True)
        assert len(want_default) == 4 and len(want_opts) == 4, "wal2json gave %d/%d records" % (
            len(want_default), len(want_opts))
        big = sql("SELECT pg_column_size(big) < length(big) OR true FROM sn_types WHERE id = 1")
        assert big == "t"
        for options, want in ((None, want_default), (OPTIONS, want_opts)):
            extra = {"postgres": {"wal2json_options": "include-timestamp=1," + options}} if options else None
            with Pgcdc(extra) as pc:
                async def go():
                    async with connect(pc, snap_path("insert:sn_types")) as ws:
                        return await read_snapshot(ws)
                rows, end = asyncio.run(go())
            assert end["rows"] == 4 and len(rows) == 4, end
            assert end["key"] == ["id"], end
            got = {json.loads(r)["columns"][0]["value"]: r for r in rows}
            for k in sorted(want):
                g, w = columns_raw(got[k]), columns_raw(want[k])
                if g != w:
                    i = next((n for n in range(min(len(g), len(w))) if g[n] != w[n]), min(len(g), len(w)))
                    raise AssertionError("row %s (options %s) differs at byte %d:\n got  ...%s\n want ...%s"
                                         % (k, options, i, g[max(0, i - 80):i + 80], w[max(0, i - 80):i + 80]))
            assert got[1].startswith('{"action":"S","schema":"public","table":"sn_types","columns":[')
    finally:
        sql("SELECT pg_drop_replication_slot('%s')" % slot, check=False)


# ---- the seam under load ---------------------------------------------------

class Writers:
    """Several psql sessions inserting, updating (bumping v from a sequence)
    and deleting rows of sn_seam as fast as they can."""

    def __init__(self, n=3, keys=150):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i, keys), daemon=True) for i in range(n)]

    def run(self, seed, keys):
        rnd = random.Random(seed)
        p = subprocess.Popen(["psql", "-X", "-q", "-h", PGHOST, "-p", PGPORT, "-U", PGUSER, "-d", PGDATABASE],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             text=True)
        ins = "INSERT INTO sn_seam VALUES (%d, nextval('sn_ver'), 'p') ON CONFLICT (id) DO UPDATE SET v = nextval('sn_ver');"
        upd = "UPDATE sn_seam SET v = nextval('sn_ver') WHERE id = %d;"
        dele = "DELETE FROM sn_seam WHERE id = %d;"
        while not self.stop.is_set():
            lines = []
            for _ in range(10):
                r = rnd.random()
                k = rnd.randint(1, keys)
                if r < 0.4:
                    lines.append(ins % k)
                elif r < 0.75:
                    lines.append(upd % k)
                elif r < 0.9:
                    lines.append(dele % k)
                else:
                    lines.append("BEGIN; %s %s %s COMMIT;" % (upd % k, dele % rnd.randint(1, keys),
                                                              ins % rnd.randint(1, keys)))
            p.stdin.write("\n".join(lines) + "\n")
            p.stdin.flush()
            time.sleep(0.01)
        p.stdin.close()
        p.wait(30)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def vals(cols):
    return {c["name"]: c["value"] for c in cols}


def t_seam():
    sql("DROP TABLE IF EXISTS sn_seam; DROP SEQUENCE IF EXISTS sn_ver; CREATE SEQUENCE sn_ver; "
        "CREATE TABLE sn_seam (id int PRIMARY KEY, v bigint NOT NULL, p text); "
        "ALTER TABLE sn_seam REPLICA IDENTITY FULL; "
        "INSERT INTO sn_seam SELECT g, nextval('sn_ver'), 'p' FROM generate_series(1, 100) g")
    with Pgcdc({"server": {"max_snapshots": "2"}}) as pc:
        async def client(i, started, results):
            ws = await connect(pc, snap_path("*:sn_seam"))
            rows, end = await read_snapshot(ws)
            started.set()
            changes = []
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 60))
                changes.append(f)
                if f["action"] == "I" and vals(f["columns"])["id"] == -1:
                    break
            await ws.close()
            results[i] = (rows, end, changes)

        async def go():
            results = {}
            tasks = []
            with Writers():
                await asyncio.sleep(0.3)
                for i in range(20):
                    started = asyncio.Event()
                    tasks.append(asyncio.create_task(client(i, started, results)))
                    await asyncio.wait_for(started.wait(), 60)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
            await asyncio.to_thread(sql, "INSERT INTO sn_seam VALUES (-1, nextval('sn_ver'), 'end')")
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            return results

        results = asyncio.run(go())
    final = {int(k): int(v) for k, v in (line.split("|") for line in sql("SELECT id, v FROM sn_seam").split("\n"))}
    total_changes = 0
    for i, (rows, end, changes) in sorted(results.items()):
        state = {}
        for r in rows:
            v = vals(json.loads(r)["columns"])
            state[v["id"]] = v["v"]
        assert end["rows"] == len(rows) and end["key"] == ["id"], end
        seen = dict(state)   # per id, the newest version this client knows
        for f in changes:
            act = f["action"]
            if act in "IU":
                v = vals(f["columns"])
                k = v["id"]
                assert v["v"] > seen.get(k, 0), "client %d: %s of id %d version %d, already had %d" % (
                    i, act, k, v["v"], seen.get(k, 0))
                seen[k] = v["v"]
                if act == "I":
                    assert k not in state, "client %d: insert of id %d it already has" % (i, k)
                else:
                    old = vals(f["identity"])
                    assert state.get(old["id"]) == old["v"], "client %d: update of %s, has %s" % (
                        i, old, state.get(old["id"]))
                    del state[old["id"]]
                state[k] = v["v"]
            elif act == "D":
                old = vals(f["identity"])
                assert state.get(old["id"]) == old["v"], "client %d: delete of %s, has %s" % (
                    i, old, state.get(old["id"]))
                del state[old["id"]]
        total_changes += len(changes)
        assert state == final, "client %d: state differs from the table: %d vs %d rows, first diff %s" % (
            i, len(state), len(final), sorted(set(state.items()) ^ set(final.items()))[:5])
    print("# 20 clients, %d changes after their snapshots in all" % total_changes)


# ---- memory, liveness, queueing -----------------------------------------------

def make_big():
    if sql("SELECT count(*) FROM pg_class WHERE relname = 'sn_big'") == "1" and \
            sql("SELECT count(*) FROM sn_big") == str(BIG_ROWS):
        return
    sql("DROP TABLE IF EXISTS sn_big; CREATE TABLE sn_big (id int PRIMARY KEY, k int, pad text); "
        "INSERT INTO sn_big SELECT g, g %% 1000, repeat(md5(g::text), 3) FROM generate_series(1, %d) g; "
        "ANALYZE sn_big" % BIG_ROWS)


def t_long_snapshot_bounded():
    make_big()
    sql("DROP TABLE IF EXISTS sn_live; CREATE TABLE sn_live (id int, at timestamptz DEFAULT clock_timestamp())")
    with Pgcdc({"server": {"max_queue": "1048576"}}) as pc:
        base = rss_kib(pc.proc.pid)

        async def go():
            live = await connect(pc, ws_path("insert:sn_live"))
            slow = await connect(pc, snap_path("*:sn_big"), max_queue=1)
            # the slow reader reads nothing: pgcdc fills its queue and stops
            await asyncio.sleep(2)
            m = metrics(pc.port)
            assert m["pgcdc_snapshots_active"] == 1, m
            paused_rows = m["pgcdc_snapshot_rows_total"]
            assert paused_rows < BIG_ROWS / 2, "rows sent to a reader that reads nothing: %d" % paused_rows
            await asyncio.sleep(1)
            assert metrics(pc.port)["pgcdc_snapshot_rows_total"] == paused_rows, "the snapshot did not pause"
            rss_paused = rss_kib(pc.proc.pid)
            # another client is live meanwhile
            for i in range(5):
                t0 = time.time()
                await asyncio.to_thread(sql, "INSERT INTO sn_live (id) VALUES (%d)" % i)
                f = json.loads(await asyncio.wait_for(live.recv(), 5))
                assert vals(f["columns"])["id"] == i, f
                assert time.time() - t0 < 2, "live change took %.2fs" % (time.time() - t0)
            # then read it all
            n = 0
            while True:
                msg = await asyncio.wait_for(slow.recv(), 60)
                if msg.startswith('{"action":"S"'):
                    n += 1
                    continue
                end = json.loads(msg)
                break
            await slow.close()
            await live.close()
            return rss_paused, n, end

        rss_paused, n, end = asyncio.run(go())
        peak = rss_kib(pc.proc.pid, "VmHWM")
    assert n == BIG_ROWS and end["rows"] == BIG_ROWS, (n, end)
    print("# RSS: %d KiB at start, %d KiB while paused, peak %d KiB; %d rows" % (base, rss_paused, peak, n))
    # the rows are ~60 MB as JSON; pgcdc holds a bounded part of them
    assert rss_paused - base < 24 * 1024, "RSS grew by %d KiB while paused" % (rss_paused - base)
    assert peak - base < 32 * 1024, "peak RSS %d KiB over a start of %d KiB" % (peak, base)


def t_queue_order():
    sql("DROP TABLE IF EXISTS sn_q; CREATE TABLE sn_q (id int PRIMARY KEY); INSERT INTO sn_q VALUES (1), (2)")
    # (a slot is created only once no transaction with an xid runs: the
    # lock comes after pgcdc is streaming)
    with Pgcdc({"server": {"max_snapshots": "1"}}) as pc:
        lock = Locker("sn_q")
        try:
            async def go():
                stamps = {}

                async def client(name):
                    ws = await connect(pc, snap_path("*:sn_q"))
                    first = await asyncio.wait_for(ws.recv(), 30)
                    stamps[name + ".first"] = time.monotonic()
                    rows, end = await read_snapshot(ws) if first.startswith('{"action":"S"') else ([], None)
                    stamps[name + ".end"] = time.monotonic()
                    await ws.close()
                    return 1 + len(rows)
                tasks = []
                for i, name in enumerate("ABC"):
                    tasks.append(asyncio.create_task(client(name)))
                    # the next client comes only once this one has its
                    # place (running or queued), so arrival order is known
                    want = i + 1
                    await asyncio.to_thread(
                        wait_until, lambda: sum(metrics(pc.port).get(k, 0) for k in
                                                ("pgcdc_snapshots_active", "pgcdc_snapshots_waiting")) == want,
                        10, "%d snapshots running or waiting" % want)
                m = metrics(pc.port)
                assert m["pgcdc_snapshots_active"] == 1 and m["pgcdc_snapshots_waiting"] == 2, m
                lock.release()
                counts = await asyncio.wait_for(asyncio.gather(*tasks), 60)
                return stamps, counts
            stamps, counts = asyncio.run(go())
        finally:
            lock.release()
        # one at a time, in the order they came (client ids grow with it)
        sent = [int(x) for x in re.findall(r"client (\d+) \S+: snapshot of public\.sn_q sent", pc.logtext())]
    assert counts == [2, 2, 2], counts
    assert len(sent) == 3 and sent == sorted(sent), "snapshots sent in the order %s" % sent


def t_timeout():
    sql("DROP TABLE IF EXISTS sn_to; CREATE TABLE sn_to (id int PRIMARY KEY); INSERT INTO sn_to VALUES (1)")
    with Pgcdc({"server": {"snapshot_timeout": "1"}}) as pc:
        lock = Locker("sn_to")
        try:
            async def go():
                ws = await connect(pc, snap_path("*:sn_to"))
                try:
                    m = await asyncio.wait_for(ws.recv(), 10)
                    raise AssertionError("a message before the timeout: %s" % m[:200])
                except websockets.ConnectionClosed:
                    pass
                return ws.close_code, ws.close_reason
            code, reason = asyncio.run(go())
            assert code == 1013 and "timeout" in reason, (code, reason)
            assert metrics(pc.port)['pgcdc_snapshot_failures_total{reason="timeout"}'] == 1
            # the waiting LOCK was cancelled and rolled back, the lock still held
            wait_until(lambda: open_snapshot_txns() == 0, 10, "no open snapshot transaction")
        finally:
            lock.release()


def t_disconnect_cancels():
    make_big()
    sql("DROP TABLE IF EXISTS sn_dc; CREATE TABLE sn_dc (id int PRIMARY KEY); INSERT INTO sn_dc VALUES (1)")
    with Pgcdc() as pc:
        lock = Locker("sn_dc")
        try:
            async def waiting_then_gone():
                ws = await connect(pc, snap_path("*:sn_dc"))
                await asyncio.to_thread(wait_until, lambda: waiting_for_lock() == 1, 10, "the LOCK waiting")
                ws.transport.abort()   # gone without a close frame
            asyncio.run(waiting_then_gone())
            wait_until(lambda: open_snapshot_txns() == 0, 10, "the waiting query cancelled")

            async def one_row_then_gone():
                ws = await connect(pc, snap_path("*:sn_big"), max_queue=1)
                m = await asyncio.wait_for(ws.recv(), 20)
                assert m.startswith('{"action":"S"'), m[:100]
                await ws.close()
            asyncio.run(one_row_then_gone())
            wait_until(lambda: open_snapshot_txns() == 0, 10, "no transaction left after one row")
            assert metrics(pc.port)["pgcdc_snapshots_active"] == 0
        finally:
            lock.release()


# ---- refusals -------------------------------------------------------------------

def t_permission():
    sql("DROP TABLE IF EXISTS sn_ok, sn_secret; CREATE TABLE sn_ok (id int PRIMARY KEY); "
        "CREATE TABLE sn_secret (id int PRIMARY KEY); INSERT INTO sn_ok VALUES (1); "
        "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sn_limited') THEN "
        "CREATE ROLE sn_limited LOGIN REPLICATION; END IF; END$$; "
        "GRANT USAGE ON SCHEMA public TO sn_limited; GRANT SELECT ON sn_ok TO sn_limited")
    conn = "host=%s port=%s user=sn_limited dbname=%s" % (PGHOST, PGPORT, PGDATABASE)
    with Pgcdc({"postgres": {"conninfo": conn}}) as pc:
        st, body = ws_upgrade(pc.port, snap_path("*:sn_secret"))
        assert st == 403 and "SELECT" in body, (st, body)
        st, _ = ws_upgrade(pc.port, ws_path("*:sn_secret"))
        assert st == 101, "without a snapshot the table streams: %d" % st

        async def go():
            async with connect(pc, snap_path("*:sn_ok")) as ws:
                return await read_snapshot(ws)
        rows, end = asyncio.run(go())
        assert end["rows"] == 1, end


def t_bad_requests():
    sql("DROP TABLE IF EXISTS sn_bad; CREATE TABLE sn_bad (id int)")
    with Pgcdc() as pc:
        st, body = ws_upgrade(pc.port, snap_path("*:sn_bad", extra="&since=0/0:0"))
        assert st == 400 and "since" in body, (st, body)
        st, body = ws_upgrade(pc.port, ws_path("*:sn_bad") + "&snapshot=yes")
        assert st == 400 and "snapshot" in body, (st, body)
        st, body = ws_upgrade(pc.port, ws_path("*:sn_bad") + "&snapshot=0")
        assert st == 400 and "snapshot" in body, (st, body)

        async def go():   # a table without a key: "key" is null
            async with connect(pc, snap_path("*:sn_bad")) as ws:
                return await read_snapshot(ws)
        rows, end = asyncio.run(go())
        assert end["rows"] == 0 and end["key"] is None and rows == [], end
    with Pgcdc({"server": {"history": "0"}}) as pc:
        st, body = ws_upgrade(pc.port, snap_path("*:sn_bad"))
        assert st == 400 and "history" in body, (st, body)


def t_columns():
    sql("DROP TABLE IF EXISTS sn_cols; CREATE TABLE sn_cols (id int PRIMARY KEY, name text, price numeric); "
        "INSERT INTO sn_cols VALUES (1, 'a', 1), (2, 'b', 2.5), (3, 'c', 9)")
    with Pgcdc() as pc:
        async def go():
            async with connect(pc, snap_path("*:sn_cols:price.gt.2") + "&columns=name,id") as ws:
                return await read_snapshot(ws)
        rows, end = asyncio.run(go())
    assert end["rows"] == 2, end
    got = [json.loads(r)["columns"] for r in rows]
    assert [[c["name"] for c in cols] for cols in got] == [["id", "name"], ["id", "name"]], got
    assert sorted(vals(cols)["id"] for cols in got) == [2, 3], got


def t_query_failure():
    """A query that fails closes with 1011 and the server's message: the
    role lost its SELECT privilege after pgcdc checked it (cached 5 s)."""
    sql("DROP TABLE IF EXISTS sn_rev; CREATE TABLE sn_rev (id int PRIMARY KEY); INSERT INTO sn_rev VALUES (1); "
        "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sn_limited') THEN "
        "CREATE ROLE sn_limited LOGIN REPLICATION; END IF; END$$; "
        "GRANT USAGE ON SCHEMA public TO sn_limited; GRANT SELECT ON sn_rev TO sn_limited")
    conn = "host=%s port=%s user=sn_limited dbname=%s" % (PGHOST, PGPORT, PGDATABASE)
    with Pgcdc({"postgres": {"conninfo": conn}}) as pc:
        async def go():
            async with connect(pc, snap_path("*:sn_rev")) as ws:
                rows, end = await read_snapshot(ws)
                assert end["rows"] == 1, end
            await asyncio.to_thread(sql, "REVOKE SELECT ON sn_rev FROM sn_limited")
            ws = await connect(pc, snap_path("*:sn_rev"))
            try:
                m = await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError("a message from a failed query: %s" % m[:200])
            except websockets.ConnectionClosed:
                return ws.close_code, ws.close_reason
        code, reason = asyncio.run(go())
        assert code == 1011 and reason.startswith("snapshot failed: ") and "permission denied" in reason, \
            (code, reason)
        assert metrics(pc.port)['pgcdc_snapshot_failures_total{reason="query"}'] == 1
        wait_until(lambda: open_snapshot_txns() == 0, 10, "no open snapshot transaction")


def sse_read(port, path, until, headers=""):
    """Raw GET of an SSE stream: the bytes up to the first event that holds
    until (complete), or to the end of the answer."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (path, port, headers)).encode())
    data = b""
    while until not in data or not data.endswith(b"\n\n"):
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def t_sse():
    """The same messages as Server-Sent Events: S rows without an id, the E
    marker with its pos as id, then changes; EventSource's reconnect with
    Last-Event-ID resumes without a second snapshot."""
    sql("DROP TABLE IF EXISTS sn_sse; CREATE TABLE sn_sse (id int PRIMARY KEY); INSERT INTO sn_sse VALUES (1)")
    path = snap_path("*:sn_sse").replace("/ws?", "/sse?", 1)
    with Pgcdc() as pc:
        data = sse_read(pc.port, path, b'"action":"E"')
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head[:200]
        events = [e for e in body.decode().split("\n\n") if e]
        assert events[0] == "retry: 1000", events
        assert events[1].startswith('data: {"action":"S"') and "id:" not in events[1], events[1]
        e = json.loads(events[2].split("data: ", 1)[1])
        assert e["action"] == "E" and events[2].startswith("id: %s\n" % e["pos"]), events[2]
        sql("INSERT INTO sn_sse VALUES (2)")
        data = sse_read(pc.port, path, b'"action":"I"', "Last-Event-ID: %s\r\n" % e["pos"])
        assert data.startswith(b"HTTP/1.1 200") and b'"action":"S"' not in data, data[:300]
        assert b'"action":"I"' in data and b'"value":2}' in data, data[-300:]


# ---- pushdown and overtaking ----------------------------------------------------

def table_stats():
    line = sql("SELECT seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'sn_big'")
    return tuple(int(x) for x in line.split("|"))


def t_pushdown():
    make_big()
    with Pgcdc() as pc:
        def snap(query, filters=()):
            async def go():
                async with connect(pc, snap_path(query, filters)) as ws:
                    return await read_snapshot(ws)
            return asyncio.run(go())
        seq0, idx0 = table_stats()
        rows, end = snap("*:sn_big:id.eq.5")
        assert end["rows"] == 1 and '"value":5}' in rows[0], end
        # statistics reach pg_stat_user_tables when the session is idle a while
        seq1, idx1 = wait_until(lambda: (lambda s: s if s[1] > idx0 else None)(table_stats()), 20,
                                "the index scan in the statistics")
        assert seq1 - seq0 < BIG_ROWS, "id.eq.5 read %d rows sequentially" % (seq1 - seq0)
        rows, end = snap("*:sn_big:id.in.7,9,11", ["pad.neq.x"])
        assert end["rows"] == 3, end
        # a filter on an unindexed column reads the table: the statistic is live
        rows, end = snap("*:sn_big:k.eq.7")
        assert end["rows"] == BIG_ROWS // 1000, end
        seq2, _ = wait_until(lambda: (lambda s: s if s[0] > seq1 else None)(table_stats()), 20,
                             "the sequential scan in the statistics")
        print("# id.eq.5 read %d rows sequentially; k.eq.7 read %d" % (seq1 - seq0, seq2 - seq1))


def t_overtaken():
    make_big()
    sql("DROP TABLE IF EXISTS sn_churn; CREATE TABLE sn_churn (id serial, pad text)")
    with Pgcdc({"server": {"history": "65536", "max_queue": "65536"}}) as pc:
        async def go():
            ws = await connect(pc, snap_path("*:sn_big"), max_queue=1)
            await asyncio.wait_for(ws.recv(), 20)   # it runs, then stalls
            for _ in range(4):
                await asyncio.to_thread(sql, "INSERT INTO sn_churn (pad) SELECT repeat('x', 200) "
                                        "FROM generate_series(1, 500)")
            n = 0
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
                    n += 1
            except websockets.ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason, n
        code, reason, n = asyncio.run(go())
        assert code == 1013 and reason == "snapshot overtaken", (code, reason)
        assert n < BIG_ROWS, "the snapshot completed: %d messages" % n
        assert metrics(pc.port)['pgcdc_snapshot_failures_total{reason="overtaken"}'] == 1
        wait_until(lambda: open_snapshot_txns() == 0, 10, "no open snapshot transaction")


def main():
    run_selected([
        ("snapshot: S rows are wal2json's insert columns byte for byte, every common type", t_render),
        ("snapshot: 400 for since, bad values and history = 0; key null without one", t_bad_requests),
        ("snapshot: 403 when pgcdc's role cannot SELECT the table", t_permission),
        ("snapshot: columns= projects S rows, the filter sees the whole row", t_columns),
        ("snapshot: a failing query closes with 1011 and the server's message", t_query_failure),
        ("snapshot: over /sse, S events without id, E with its pos, then changes", t_sse),
        ("snapshot: the seam under load, 20 clients: rows plus changes equal the table", t_seam),
        ("snapshot: a commit decoded before the snapshot but not yet visible to it comes after E",
         t_commit_not_yet_visible),
        ("snapshot: a slow reader pauses its snapshot, RSS bounded, others live", t_long_snapshot_bounded),
        ("snapshot: max_snapshots runs one at a time, in arrival order", t_queue_order),
        ("snapshot: snapshot_timeout closes with 1013 and cancels the query", t_timeout),
        ("snapshot: a client leaving cancels the query, no transaction left open", t_disconnect_cancels),
        ("snapshot: filters pushed into the query use the index", t_pushdown),
        ("snapshot: history overtaking a snapshot closes it with 1013", t_overtaken),
    ])


if __name__ == "__main__":
    main()
