"""suite_pipeline.py -- end-to-end tests of the change pipeline.

Drives a real pgcdc against the throwaway PostgreSQL test.sh started, with
real WebSocket clients, and asserts what the clients received: frames equal
to wal2json's own output with "pos" first, every filter operator, types and
table names, update/delete under both replica identities, the HTTP refusals
of docs/protocol.md (HTTP, Subscriptions), ordering across many transactions, one huge
transaction, graceful shutdown and the command line.

Each test uses its own table, so tests are independent; groups of tests
share one pgcdc to keep the run short.
"""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

from harness import (PGCDC, Pgcdc, collect, expect_silence, finish,  # noqa: E402
                     http_get, pos_key, raw_http, recv_text, report, run_test, sql)
from harness import lsn_int, metric  # noqa: E402

POS_RE = re.compile(r'^\{"pos":"([0-9A-F]+/[0-9A-F]+):([0-9]+)",')
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# ---- helpers ---------------------------------------------------------------

def enc(s):
    """What a browser's encodeURIComponent gives."""
    return urllib.parse.quote(s, safe="-_.!~*'()")


def ws_path(query, filters=(), raw=False):
    """The /ws request target for a query and extra filter= parameters."""
    e = (lambda s: s) if raw else enc
    path = "/ws?query=" + e(query)
    for f in filters:
        path += "&filter=" + e(f)
    return path


def connect(pc, query, filters=(), raw=False):
    """Both "await connect(...)" and "async with connect(...)" work."""
    return websockets.connect(pc.url(ws_path(query, filters, raw)),
                                    max_size=None, max_queue=None,
                                    ping_interval=None, open_timeout=10)


recv_raw = recv_text


def split_frame(text):
    """Returns (commit lsn, n, wal2json text, parsed object) of a frame."""
    m = POS_RE.match(text)
    assert m, "frame does not start with a pos member: %r" % text[:120]
    rest = "{" + text[m.end():]
    obj = json.loads(rest)
    assert isinstance(obj, dict), "not an object: %r" % rest[:120]
    assert "pos" not in obj, "pos appears twice"
    full = json.loads(text)
    assert full["pos"] == "%s:%s" % (m.group(1), m.group(2))
    return m.group(1), int(m.group(2)), rest, obj


def values(obj, key="columns"):
    return {c["name"]: c.get("value") for c in obj.get(key, [])}


def ids(frames, key="columns"):
    return [values(f, key)["id"] for f in frames]


def tx(*stmts):
    """One explicit transaction per statement, in a single psql call (psql
    -c runs a multi-statement string as ONE transaction otherwise)."""
    return " ".join("BEGIN; %s; COMMIT;" % s.rstrip("; ") for s in stmts)


class Peek:
    """A wal2json slot of the test's own, decoding with the options pgcdc
    uses by default, to compare frames with wal2json's own bytes."""

    def __init__(self, name):
        self.name = name
        sql("SELECT pg_create_logical_replication_slot('%s', 'wal2json')" % name)

    def frames(self, schema, table):
        """The frames pgcdc should send for changes to schema.table so far."""
        rows = sql("SELECT data FROM pg_logical_slot_get_changes('%s', NULL, NULL, "
                   "'format-version', '2', 'include-lsn', '1', "
                   "'include-transaction', '1', 'include-xids', '1', 'include-timestamp', '1')" % self.name)
        out = []
        commit, n = None, 0
        for line in rows.split("\n"):
            if not line:
                continue
            obj = json.loads(line)
            act = obj["action"]
            if act == "B":
                commit, n = obj["lsn"], 0
            elif act in "IUDT":
                if obj["schema"] == schema and obj["table"] == table:
                    out.append('{"pos":"%s:%d",%s' % (commit, n, line[1:]))
                n += 1
        return out

    def drop(self):
        sql("SELECT pg_drop_replication_slot('%s')" % self.name, check=False)


def parse_http(data):
    """(status, {lower header: value}, body) of a raw HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0] == "HTTP/1.1", "bad status line %r" % lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers, body.decode("utf-8", "replace")


def request(port, path, method="GET", upgrade=True, extra=""):
    req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method, path, port)
    if upgrade:
        req += ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % WS_KEY)
    req += extra + "\r\n"
    return parse_http(raw_http(port, req.encode(), timeout=5))


def check_error(port, path, status, method="GET", upgrade=True):
    """Asserts an error answer: the status and a one-line text/plain body."""
    st, headers, body = request(port, path, method, upgrade)
    assert st == status, "%s %s: status %d, expected %d (body %r)" % (
        method, path, st, status, body[:200])
    ctype = headers.get("content-type", "")
    assert ctype.startswith("text/plain"), "content-type %r" % ctype
    text = body.rstrip("\r\n")
    assert text.strip(), "empty body"
    assert "\n" not in text, "body is not one line: %r" % body[:200]
    return headers, text


def group(pc_factory, tests):
    """Runs tests (name, fn) against one pgcdc; a failed start fails them all."""
    pc = pc_factory()
    try:
        pc.start()
    except Exception as e:  # noqa: BLE001
        for name, _ in tests:
            report(name, False, "pgcdc did not start: %s" % e)
        pc.stop()
        return
    try:
        for name, fn in tests:
            run_test(name, fn, pc)
    finally:
        rc = pc.stop()
        if rc not in (0, None):
            report("pgcdc of the group exits 0 on SIGTERM", False,
                   "exit %s: %s" % (rc, pc.logtext()[-1500:]))


# ---- delivery --------------------------------------------------------------

async def t_bytes(pc):
    """Frames are wal2json's records byte for byte with pos first; B, C
    and M are never sent; n counts only I/U/D/T."""
    sql("CREATE TABLE pl_bytes (id int PRIMARY KEY, name text, price numeric, "
        "tags text[], doc jsonb, at timestamptz, uni text)")
    peek = Peek("integ_peek_%d" % os.getpid())
    try:
        async with connect(pc, "*:pl_bytes") as ws:
            sql(tx("INSERT INTO pl_bytes VALUES (1, 'one', 1.50, '{a,b}', "
                   "'{\"k\": [1, null]}', '2026-01-01 12:00+00', 'caf\u00e9 \"q\" \\ \u2603')",
                   "SELECT pg_logical_emit_message(true, 'pfx', 'in tx'); "
                   "INSERT INTO pl_bytes VALUES (2, NULL, NULL, NULL, NULL, NULL, NULL)",
                   "UPDATE pl_bytes SET name = 'uno' WHERE id = 1",
                   "DELETE FROM pl_bytes WHERE id = 2",
                   "SELECT pg_logical_emit_message(false, 'pfx', 'outside')",
                   "SELECT pg_logical_emit_message(true, 'pfx', 'alone')",
                   "TRUNCATE pl_bytes"))
            want = peek.frames("public", "pl_bytes")
            assert len(want) == 5, "peek gave %d records" % len(want)
            got = await recv_raw(ws, len(want))
            await expect_silence(ws, 0.5)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, "frame %d:\n got  %s\n want %s" % (i, g[:400], w[:400])
        acts = [split_frame(g)[3]["action"] for g in got]
        assert acts == ["I", "I", "U", "D", "T"], acts
        # the second insert follows an M record in its transaction
        assert split_frame(got[1])[1] == 0
    finally:
        peek.drop()


async def t_shapes(pc):
    """The members of each action as wal2json gives them."""
    sql("CREATE TABLE pl_shape (id int PRIMARY KEY, name text)")
    async with connect(pc, "*:pl_shape") as ws:
        sql(tx("INSERT INTO pl_shape VALUES (1, 'a')",
               "UPDATE pl_shape SET name = 'b' WHERE id = 1",
               "DELETE FROM pl_shape WHERE id = 1",
               "TRUNCATE pl_shape"))
        got = await recv_raw(ws, 4)
    frames = [split_frame(g) for g in got]
    for lsn, n, _, obj in frames:
        assert obj["schema"] == "public" and obj["table"] == "pl_shape", obj
        assert n == 0
        assert lsn_int(lsn) >= lsn_int(obj["lsn"]), "pos LSN before the change's lsn"
        assert "timestamp" in obj
    i, u, d, t = (f[3] for f in frames)
    assert i["action"] == "I" and values(i) == {"id": 1, "name": "a"}, i
    assert "identity" not in i
    assert u["action"] == "U" and values(u) == {"id": 1, "name": "b"}, u
    assert d["action"] == "D" and values(d, "identity") == {"id": 1}, d
    assert "columns" not in d
    assert t["action"] == "T" and "columns" not in t and "identity" not in t, t
    keys = [pos_key(json.loads(g)["pos"]) for g in got]
    assert keys == sorted(set(keys)), "pos not strictly increasing"


async def t_messages_only(pc):
    """Transactions with only logical messages, or other tables, send nothing."""
    sql("CREATE TABLE pl_msg (id int)")
    sql("CREATE TABLE pl_msg_other (id int)")
    async with connect(pc, "*:pl_msg") as ws:
        sql(tx("SELECT pg_logical_emit_message(true, 'x', 'y')",
               "SELECT pg_logical_emit_message(false, 'x', 'z')",
               "INSERT INTO pl_msg_other VALUES (1)",
               "BEGIN; COMMIT"))
        await expect_silence(ws, 1.0)
        sql("INSERT INTO pl_msg VALUES (7)")
        (f,) = await collect(ws, 1)
        assert f["action"] == "I" and values(f) == {"id": 7}, f


# ---- filters ---------------------------------------------------------------

OPS_ROWS = """
INSERT INTO pl_ops VALUES
 (1, 1.50, 10, 'apple', true, 'a:b.c'),
 (2, 2, 9, 'Banana', false, 'x,y'),
 (3, NULL, NULL, NULL, NULL, NULL),
 (4, 10, 100, 'banana', true, 'hello world'),
 (5, 0.5, -1, 'b', false, '"q"'),
 (6, 3, 3, 'z', NULL, 'true')
"""

# (label, query, extra filters, raw (not percent-encoded), expected ids)
FILTER_CASES = [
    ("eq numeric 1.5 matches 1.50", "insert:pl_ops:price.eq.1.5", [], False, [1]),
    ("neq numeric, NULL never", "insert:pl_ops:price.neq.1.5", [], False, [2, 4, 5, 6]),
    ("lt numeric", "insert:pl_ops:price.lt.2", [], False, [1, 5]),
    ("lte numeric", "insert:pl_ops:price.lte.2", [], False, [1, 2, 5]),
    ("gt numeric", "insert:pl_ops:price.gt.2.5", [], False, [4, 6]),
    ("gte numeric", "insert:pl_ops:price.gte.3", [], False, [4, 6]),
    ("gt 9.5 matches integer 10", "insert:pl_ops:qty.gt.9.5", [], False, [1, 4]),
    ("gt 9 is numeric, not byte-wise", "insert:pl_ops:qty.gt.9", [], False, [1, 4]),
    ("lt negative", "insert:pl_ops:qty.lt.0", [], False, [5]),
    ("eq 10.0 matches 10", "insert:pl_ops:qty.eq.10.0", [], False, [1]),
    ("lt non-number value compares bytes", "insert:pl_ops:qty.lt.a", [], False, [1, 2, 4, 5, 6]),
    ("in numeric", "insert:pl_ops:price.in.(1.5,3)", [], False, [1, 6]),
    ("in integers", "insert:pl_ops:qty.in.(9,100)", [], False, [2, 4]),
    ("eq text case-sensitive", "insert:pl_ops:name.eq.banana", [], False, [4]),
    ("neq text, NULL never", "insert:pl_ops:name.neq.apple", [], False, [2, 4, 5, 6]),
    ("lt text byte-wise", "insert:pl_ops:name.lt.apple", [], False, [2]),
    ("lte text byte-wise", "insert:pl_ops:name.lte.b", [], False, [1, 2, 5]),
    ("gt text byte-wise", "insert:pl_ops:name.gt.b", [], False, [4, 6]),
    ("gte text byte-wise", "insert:pl_ops:name.gte.banana", [], False, [4, 6]),
    ("in parenthesised", "insert:pl_ops:name.in.(apple,b)", [], False, [1, 5]),
    ("in bare list", "insert:pl_ops:name.in.apple,Banana", [], False, [1, 2]),
    ("in never matches NULL", "insert:pl_ops:name.in.(null,apple)", [], False, [1]),
    ("in quoted element with comma", 'insert:pl_ops:note.in.("x,y",zzz)', [], False, [2]),
    ("in quoted element with escaped quotes", 'insert:pl_ops:note.in.("\\"q\\"")', [], False, [5]),
    ("in quoted elements with ':' '.' and space",
     'insert:pl_ops:note.in.("a:b.c","hello world")', [], False, [1, 4]),
    ("eq value with ':' and '.'", "insert:pl_ops:note.eq.a:b.c", [], False, [1]),
    ("eq value with ':' and '.' unencoded", "insert:pl_ops:note.eq.a:b.c", [], True, [1]),
    ("eq with '+' for space", "insert:pl_ops:note.eq.hello+world", [], True, [4]),
    ("eq with %20 for space", "insert:pl_ops:note.eq.hello%20world", [], True, [4]),
    ("eq with encodeURIComponent space", "insert:pl_ops:note.eq.hello world", [], False, [4]),
    ("eq string 'true'", "insert:pl_ops:note.eq.true", [], False, [6]),
    ("is.true only booleans", "insert:pl_ops:note.is.true", [], False, []),
    ("is.true", "insert:pl_ops:flag.is.true", [], False, [1, 4]),
    ("is.false", "insert:pl_ops:flag.is.false", [], False, [2, 5]),
    ("is.null boolean", "insert:pl_ops:flag.is.null", [], False, [3, 6]),
    ("is.null text", "insert:pl_ops:name.is.null", [], False, [3]),
    ("is.null numeric", "insert:pl_ops:price.is.null", [], False, [3]),
    ("eq never matches NULL", "insert:pl_ops:name.eq.null", [], False, []),
    ("lt never matches NULL", "insert:pl_ops:price.lt.100", [], False, [1, 2, 4, 5, 6]),
    ("absent column never matches", "insert:pl_ops:nosuch.eq.1", [], False, []),
    ("absent column is not null", "insert:pl_ops:nosuch.is.null", [], False, []),
    ("filter= AND-ed", "insert:pl_ops:qty.gt.0", ["flag.is.true"], False, [1, 4]),
    ("filter= AND-ed, none match", "insert:pl_ops:qty.eq.9", ["name.eq.apple"], False, []),
    ("only filter= params", "insert:pl_ops", ["name.eq.z"], False, [6]),
    ("three filters", "insert:pl_ops:qty.gt.0", ["price.lt.5", "flag.is.false"], False, [2]),
    ("filter= with ':' raw", "insert:pl_ops", ["note.eq.a:b.c"], True, [1]),
]


def t_filters(pc):
    sql("CREATE TABLE pl_ops (id int PRIMARY KEY, price numeric, qty int, "
        "name text, flag boolean, note text)")
    results = {}

    async def one(ws, want):
        got = await collect(ws, len(want), timeout=15) if want else []
        await expect_silence(ws, 0.7)
        return ids(got)

    async def run():
        socks = []
        try:
            for label, q, fl, raw, want in FILTER_CASES:
                try:
                    socks.append(await connect(pc, q, fl, raw))
                except Exception as e:  # noqa: BLE001
                    socks.append(e)
            sql(OPS_ROWS)
            todo = [(i, s) for i, s in enumerate(socks) if not isinstance(s, Exception)]
            outs = await asyncio.gather(*(one(s, FILTER_CASES[i][4]) for i, s in todo),
                                        return_exceptions=True)
            for (i, _), o in zip(todo, outs):
                results[i] = o
            for i, s in enumerate(socks):
                if isinstance(s, Exception):
                    results[i] = s
        finally:
            for s in socks:
                if not isinstance(s, Exception):
                    await s.close()

    try:
        asyncio.run(asyncio.wait_for(run(), 90))
    except Exception as e:  # noqa: BLE001
        for i in range(len(FILTER_CASES)):
            results.setdefault(i, e)
    for i, (label, q, fl, raw, want) in enumerate(FILTER_CASES):
        r = results.get(i)
        target = ws_path(q, fl, raw)
        name = "filter: %s (%s)" % (label, target)
        if isinstance(r, Exception):
            report(name, False, "%s: %s" % (type(r).__name__, r))
        else:
            report(name, r == want, "got ids %s, expected %s" % (r, want))


async def t_identity_default(pc):
    """REPLICA IDENTITY DEFAULT: update filters see the new row, delete
    filters only the key."""
    sql("CREATE TABLE pl_rid_def (id int PRIMARY KEY, status text, amount int)")
    sql("INSERT INTO pl_rid_def VALUES (1, 'new', 10), (2, 'paid', 20), (3, 'new', 30)")
    ws_upd = await connect(pc, "update:pl_rid_def:status.eq.paid")
    ws_upd_old = await connect(pc, "update:pl_rid_def:status.eq.new")
    ws_del_key = await connect(pc, "delete:pl_rid_def:id.eq.2")
    ws_del_col = await connect(pc, "delete:pl_rid_def:status.eq.paid")
    try:
        sql(tx("UPDATE pl_rid_def SET status = 'paid' WHERE id = 1",
               "UPDATE pl_rid_def SET amount = 21 WHERE id = 2",
               "DELETE FROM pl_rid_def WHERE id = 2",
               "DELETE FROM pl_rid_def WHERE id = 3"))
        got = await collect(ws_upd, 2)
        assert ids(got) == [1, 2], got
        assert all(f["action"] == "U" for f in got)
        # row 1 went from new to paid: the new row is what counts
        await expect_silence(ws_upd_old, 0.5)
        (d,) = await collect(ws_del_key, 1)
        assert d["action"] == "D" and values(d, "identity") == {"id": 2}, d
        await expect_silence(ws_del_key, 0.3)
        # the delete carries only the key, so a filter on status never matches
        await expect_silence(ws_del_col, 0.5)
    finally:
        for w in (ws_upd, ws_upd_old, ws_del_key, ws_del_col):
            await w.close()


async def t_identity_full(pc):
    """REPLICA IDENTITY FULL: delete filters see the whole old row."""
    sql("CREATE TABLE pl_rid_full (id int PRIMARY KEY, status text, amount int)")
    sql("ALTER TABLE pl_rid_full REPLICA IDENTITY FULL")
    sql("INSERT INTO pl_rid_full VALUES (1, 'new', 10), (2, 'paid', 20), (3, 'paid', 30)")
    ws_del = await connect(pc, "delete:pl_rid_full:status.eq.paid")
    ws_amt = await connect(pc, "delete:pl_rid_full:amount.gt.25")
    ws_upd = await connect(pc, "update:pl_rid_full:status.eq.new")
    try:
        sql(tx("UPDATE pl_rid_full SET status = 'old' WHERE id = 1",
               "DELETE FROM pl_rid_full WHERE id = 1",
               "DELETE FROM pl_rid_full WHERE id = 2",
               "DELETE FROM pl_rid_full WHERE id = 3"))
        got = await collect(ws_del, 2)
        assert ids(got, "identity") == [2, 3], got
        assert values(got[0], "identity") == {"id": 2, "status": "paid", "amount": 20}
        await expect_silence(ws_del, 0.3)
        got = await collect(ws_amt, 1)
        assert ids(got, "identity") == [3], got
        # the update's new row says 'old'; the old row's 'new' does not count
        await expect_silence(ws_upd, 0.5)
    finally:
        for w in (ws_del, ws_amt, ws_upd):
            await w.close()


async def t_identity_toast(pc):
    """An unchanged TOASTed column is absent from an update's columns: the
    filter uses the one in identity (REPLICA IDENTITY FULL)."""
    sql("CREATE TABLE pl_toast (id int PRIMARY KEY, big text, tag text)")
    sql("ALTER TABLE pl_toast REPLICA IDENTITY FULL")
    sql("ALTER TABLE pl_toast ALTER big SET STORAGE EXTERNAL")
    sql("INSERT INTO pl_toast VALUES (1, repeat('x', 20000), 'a')")
    ws_gt = await connect(pc, "update:pl_toast:big.gt.x")
    ws_lt = await connect(pc, "update:pl_toast:big.lt.x")
    ws_null = await connect(pc, "update:pl_toast:big.is.null")
    try:
        sql("UPDATE pl_toast SET tag = 'b' WHERE id = 1")
        (f,) = await collect(ws_gt, 1)
        assert "big" not in values(f), "big unexpectedly in columns"
        assert values(f)["tag"] == "b"
        assert values(f, "identity")["big"] == "x" * 20000
        await expect_silence(ws_lt, 0.5)
        await expect_silence(ws_null, 0.2)
    finally:
        for w in (ws_gt, ws_lt, ws_null):
            await w.close()


# ---- types and names -------------------------------------------------------

async def t_types(pc):
    sql("CREATE TABLE pl_types (id int PRIMARY KEY, v int)")
    subs = [("*:pl_types", "IUDT"),
            ("insert,delete:pl_types", "ID"),
            ("delete,insert:pl_types", "ID"),
            ("update:pl_types", "U"),
            ("truncate:pl_types", "T"),
            ("truncate:pl_types:id.eq.999", "T"),
            ("insert,update,delete,truncate:pl_types", "IUDT"),
            ("insert,update:pl_types:v.eq.5", "IU")]
    socks = [await connect(pc, q) for q, _ in subs]
    try:
        sql(tx("INSERT INTO pl_types VALUES (1, 5)",
               "UPDATE pl_types SET id = 1 WHERE id = 1",
               "DELETE FROM pl_types WHERE id = 1",
               "TRUNCATE pl_types"))
        for (q, want), ws in zip(subs, socks):
            got = await collect(ws, len(want), timeout=10)
            await expect_silence(ws, 0.4)
            acts = "".join(f["action"] for f in got)
            assert acts == want, "%s got %s, expected %s" % (q, acts, want)
    finally:
        for w in socks:
            await w.close()


async def t_names(pc):
    """Schema-qualified, quoted and case-sensitive table names."""
    sql('CREATE SCHEMA "my.schema"')
    sql('CREATE TABLE "my.schema"."t" (id int)')
    sql("CREATE SCHEMA pl_sch")
    sql("CREATE TABLE pl_sch.pl_items (id int)")
    sql("CREATE TABLE public.pl_items (id int)")
    sql('CREATE TABLE pl_sch."a.b" (id int)')
    sql('CREATE TABLE "PlOrders" (id int)')
    sql("CREATE TABLE plorders (id int)")
    subs = [('insert:"my.schema"."t"', ("my.schema", "t", 1)),
            ("insert:pl_sch.pl_items", ("pl_sch", "pl_items", 2)),
            ('insert:"pl_sch"."pl_items"', ("pl_sch", "pl_items", 2)),
            ("insert:pl_items", ("public", "pl_items", 3)),
            ("insert:public.pl_items", ("public", "pl_items", 3)),
            ('insert:pl_sch."a.b"', ("pl_sch", "a.b", 4)),
            ("insert:PlOrders", ("public", "PlOrders", 5)),
            ("insert:plorders", ("public", "plorders", 6))]
    socks = []
    try:
        for q, _ in subs:
            socks.append(await connect(pc, q))
        sql(tx('INSERT INTO "my.schema"."t" VALUES (1)',
               "INSERT INTO pl_sch.pl_items VALUES (2)",
               "INSERT INTO public.pl_items VALUES (3)",
               'INSERT INTO pl_sch."a.b" VALUES (4)',
               'INSERT INTO "PlOrders" VALUES (5)',
               "INSERT INTO plorders VALUES (6)"))
        for (q, (schema, table, id_)), ws in zip(subs, socks):
            (f,) = await collect(ws, 1, timeout=10)
            assert (f["schema"], f["table"], values(f)["id"]) == (schema, table, id_), \
                "%s got %s.%s id %s" % (q, f["schema"], f["table"], values(f)["id"])
            await expect_silence(ws, 0.3)
    finally:
        for w in socks:
            await w.close()


def t_name_not_folded(pc):
    """Names are catalog names, not SQL-folded: PLORDERS is not plorders."""
    sql("CREATE TABLE IF NOT EXISTS plorders (id int)")
    check_error(pc.port, ws_path("insert:PLORDERS"), 400)
    check_error(pc.port, ws_path('insert:"pl_sch.pl_items"'), 400)


async def t_late_table(pc):
    """A table created after pgcdc started (and after other traffic)."""
    sql("CREATE TABLE pl_late (id int)")
    async with connect(pc, "insert:pl_late") as ws:
        sql("INSERT INTO pl_late VALUES (42)")
        (f,) = await collect(ws, 1)
        assert values(f) == {"id": 42}, f
    sql("DROP TABLE pl_late")
    sql("CREATE TABLE pl_late (id int, extra text)")
    async with connect(pc, "insert:pl_late:extra.eq.x") as ws:
        sql("INSERT INTO pl_late VALUES (43, 'x'), (44, 'y')")
        (f,) = await collect(ws, 1)
        assert values(f) == {"id": 43, "extra": "x"}, f
        await expect_silence(ws, 0.3)


async def t_two_clients(pc):
    sql("CREATE TABLE pl_two_a (id int)")
    sql("CREATE TABLE pl_two_b (id int)")
    a = await connect(pc, "insert:pl_two_a")
    b = await connect(pc, "*:pl_two_b:id.gt.10")
    try:
        sql(tx("INSERT INTO pl_two_a VALUES (1); INSERT INTO pl_two_b VALUES (11); "
               "INSERT INTO pl_two_b VALUES (5); INSERT INTO pl_two_a VALUES (2)",
               "INSERT INTO pl_two_b VALUES (12)",
               "INSERT INTO pl_two_a VALUES (3)"))
        fa = await collect(a, 3)
        fb = await collect(b, 2)
        assert [(f["table"], values(f)["id"]) for f in fa] == \
            [("pl_two_a", 1), ("pl_two_a", 2), ("pl_two_a", 3)], fa
        assert [(f["table"], values(f)["id"]) for f in fb] == \
            [("pl_two_b", 11), ("pl_two_b", 12)], fb
        # the first transaction's frames keep their index in it
        assert [f["pos"].rsplit(":", 1)[1] for f in fa[:2]] == ["0", "3"]
        assert fb[0]["pos"].rsplit(":", 1)[1] == "1"
        await expect_silence(a, 0.5)
        await expect_silence(b, 0.1)
    finally:
        await a.close()
        await b.close()


# ---- HTTP refusals ---------------------------------------------------------

BAD_400 = [("/ws", "missing query"),
           ("/ws?filter=id.eq.1", "missing query"),
           ("/ws?query=", "empty query"),
           (ws_path("insert"), "no table"),
           (ws_path("insert:"), "empty table"),
           (ws_path("inserts:pl_err"), "unknown type"),
           (ws_path(":pl_err"), "no type"),
           (ws_path("insert,upsert:pl_err"), "unknown type in a list"),
           (ws_path("insert:pl_err:id.like.1"), "unknown operator"),
           (ws_path("insert:pl_err:id"), "filter without operator"),
           (ws_path("insert:pl_err:id.eq"), "filter without value"),
           (ws_path("insert:pl_err:name.is.maybe"), "is with another value"),
           (ws_path('insert:pl_err:name.in.("abc)'), "unterminated quote in in"),
           (ws_path('insert:pl_err:name.in.("a"b)'), "text after a quoted element"),
           (ws_path("insert:pl_err", ["bogus"]), "bad filter= parameter"),
           (ws_path("insert:pl_nosuch_table"), "unknown table"),
           (ws_path("insert:pl_nosuch_schema.pl_err"), "unknown schema")]


def http_400_tests():
    def case(path):
        def t(pc):
            sql("CREATE TABLE IF NOT EXISTS pl_err (id int, name text)")
            check_error(pc.port, path, 400)
        return t
    return [("http: 400 with a one-line text/plain body: %s (%s)" % (why, path), case(path))
            for path, why in BAD_400]


def t_http_404_405_426(pc):
    check_error(pc.port, "/nope", 404, upgrade=False)
    check_error(pc.port, "/nope", 404)
    check_error(pc.port, "/wsx?query=insert:pl_err", 404)
    check_error(pc.port, "/nope", 404, method="POST", upgrade=False)
    check_error(pc.port, ws_path("insert:pl_err"), 405, method="POST")
    check_error(pc.port, "/ping", 405, method="POST", upgrade=False)
    check_error(pc.port, "/ws", 405, method="DELETE", upgrade=False)
    headers, _ = check_error(pc.port, ws_path("insert:pl_err"), 426, upgrade=False)
    assert headers.get("upgrade", "").lower() == "websocket", headers
    headers, _ = check_error(pc.port, "/ws", 426, upgrade=False)
    assert headers.get("upgrade", "").lower() == "websocket", headers


def t_ping(pc):
    st, headers, body = request(pc.port, "/ping", upgrade=False)
    assert st == 200, st
    assert headers.get("content-type", "").startswith("text/plain"), headers
    assert body.strip() == "pong", body
    st, body = http_get(pc.port, "/ping")
    assert (st, body.strip()) == (200, "pong")


def allowed_factory():
    return Pgcdc(extra={"postgres": {"tables": "public.pl_allowed, pl_allow_s.*"}})


def t_http_403(pc):
    sql("CREATE TABLE IF NOT EXISTS pl_err (id int, name text)")
    check_error(pc.port, ws_path("insert:pl_err"), 403)
    check_error(pc.port, ws_path("insert:pl_never_created"), 403)
    check_error(pc.port, ws_path("*:public.pl_err:id.eq.1"), 403)
    # query syntax is checked before the allow-list
    check_error(pc.port, ws_path("insert:pl_err:id.like.1"), 400)
    # allowed, but does not exist
    check_error(pc.port, ws_path("insert:pl_allow_s.pl_nope"), 400)


async def t_allowed_streams(pc):
    sql("CREATE TABLE pl_allowed (id int)")
    sql("CREATE SCHEMA pl_allow_s")
    sql("CREATE TABLE pl_allow_s.anything (id int)")
    sql("CREATE TABLE IF NOT EXISTS pl_err (id int, name text)")
    a = await connect(pc, "insert:pl_allowed")
    b = await connect(pc, "insert:pl_allow_s.anything")
    try:
        sql(tx("INSERT INTO pl_err VALUES (1)", "INSERT INTO pl_allowed VALUES (2)",
               "INSERT INTO pl_allow_s.anything VALUES (3)"))
        (fa,) = await collect(a, 1)
        (fb,) = await collect(b, 1)
        assert values(fa)["id"] == 2 and values(fb)["id"] == 3
        await expect_silence(a, 0.3)
    finally:
        await a.close()
        await b.close()


# ---- order and volume ------------------------------------------------------

async def t_order(pc):
    sql("CREATE TABLE pl_order (seq int)")
    async with connect(pc, "insert:pl_order") as ws:
        sql(tx(*["INSERT INTO pl_order SELECT g FROM generate_series(%d, %d) g"
                 % (t * 100, t * 100 + 99) for t in range(10)]))
        got = await recv_raw(ws, 1000, timeout=60)
        await expect_silence(ws, 0.5)
    lsns = []
    prev = None
    for i, text in enumerate(got):
        lsn, n, _, obj = split_frame(text)
        assert values(obj)["seq"] == i, "frame %d has seq %s" % (i, values(obj)["seq"])
        assert n == i % 100, "frame %d has n %d" % (i, n)
        k = pos_key("%s:%d" % (lsn, n))
        assert prev is None or k > prev, "pos not increasing at %d" % i
        prev = k
        if n == 0:
            lsns.append(lsn)
        else:
            assert lsn == lsns[-1], "LSN changed inside a transaction at %d" % i
    assert len(set(lsns)) == 10, lsns


async def t_big_transaction(pc):
    total = 100000
    sql("CREATE TABLE pl_big (seq int, pad text)")
    async with connect(pc, "insert:pl_big") as ws:
        before = metric(pc.port, "pgcdc_changes_total")
        t0 = time.time()
        ins = asyncio.get_running_loop().run_in_executor(
            None, sql, "INSERT INTO pl_big SELECT g, 'row ' || g "
            "FROM generate_series(0, %d) g" % (total - 1))
        got = await recv_raw(ws, 1, timeout=60)
        decoded = metric(pc.port, "pgcdc_changes_total") - before
        await ins
        got += await recv_raw(ws, total - 1, timeout=110)
        elapsed = time.time() - t0
        await expect_silence(ws, 0.5)
    # docs/protocol.md, Order: never held whole; coalesced writes wait for
    # 256 KiB or 5 ms at most, so the first change comes long before the
    # last is decoded
    assert decoded < total, \
        "the first frame came only after all %d changes were decoded" % total
    first = None
    for i, text in enumerate(got):
        m = POS_RE.match(text)
        assert m, "frame %d has no pos" % i
        if first is None:
            first = m.group(1)
        assert m.group(1) == first and int(m.group(2)) == i, \
            "frame %d has pos %s:%s" % (i, m.group(1), m.group(2))
        if i % 997 == 0 or i == total - 1:
            obj = json.loads(text)
            assert values(obj) == {"seq": i, "pad": "row %d" % i}, obj
    print("# %d frames in %.1fs; %d changes decoded when the first came"
          % (total, elapsed, decoded), flush=True)
    # logs are per event, never per change (even at -v)
    lines = pc.logtext().count("\n")
    assert lines < 1000, "%d log lines after %d changes" % (lines, total)


# ---- shutdown and command line ---------------------------------------------

def slot_exists(name):
    return sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'" % name) != "0"


def shutdown_test(sig):
    async def body():
        pc = Pgcdc().start()
        try:
            sql("CREATE TABLE IF NOT EXISTS pl_shutdown (id int)")
            async with connect(pc, "*:pl_shutdown") as ws:
                assert slot_exists(pc.slot), "slot %s not there while running" % pc.slot
                pc.proc.send_signal(sig)
                try:
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    raise AssertionError("got a frame instead of a close: %r" % msg[:100])
                except websockets.exceptions.ConnectionClosed as e:
                    code = e.rcvd.code if e.rcvd else None
                    assert code == 1001, "close code %s (%s)" % (code, e)
            for _ in range(100):
                if pc.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            rc = pc.proc.poll()
            assert rc == 0, "exit status %s: %s" % (rc, pc.logtext()[-1000:])
            for _ in range(50):
                if not slot_exists(pc.slot):
                    break
                await asyncio.sleep(0.1)
            assert not slot_exists(pc.slot), "temporary slot %s still exists" % pc.slot
        finally:
            pc.stop()
    return body


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)


def run_pgcdc(*args):
    return subprocess.run([PGCDC] + list(args), capture_output=True, text=True, timeout=15)


def t_version(_pc=None):
    p = run_pgcdc("-V")
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 0, "exit %d" % p.returncode
    assert re.fullmatch(r"pgcdc \d+\.\d+\.\d+", out), "printed %r" % out


def t_check_ok(_pc=None):
    pc = Pgcdc()
    p = run_pgcdc("-c", pc.config, "-t")
    out = p.stdout + p.stderr
    assert p.returncode == 0, "exit %d: %s" % (p.returncode, out)
    assert "configuration ok" in out, "printed %r" % out


def config_error(body, bad_line, key):
    """A config whose line bad_line is wrong: exit 1, naming file, line, key."""
    pc = Pgcdc()
    with open(pc.config) as f:
        good = f.read()
    text = body(good) if callable(body) else body.replace("@GOOD@", good)
    assert text.split("\n")[bad_line - 1].strip(), "test bug: line %d is blank" % bad_line
    write_config(pc.config, text)
    p = run_pgcdc("-c", pc.config, "-t")
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 1, "exit %d: %s" % (p.returncode, out)
    assert "configuration ok" not in out
    assert os.path.basename(pc.config) in out, "file not named: %r" % out
    assert re.search(r"(?<!\d)%d(?!\d)" % bad_line, out), "line %d not named: %r" % (bad_line, out)
    assert key in out, "key %s not named: %r" % (key, out)


def t_config_unknown_key(_pc=None):
    # the harness writes [postgres] with 4 keys and [server] with 1: 7 lines
    config_error("@GOOD@# a comment\nbogus_key = 1\n", 9, "bogus_key")


def t_config_bad_value(_pc=None):
    config_error("@GOOD@max_clients = many\n", 8, "max_clients")


def t_config_duplicate(_pc=None):
    config_error("@GOOD@\nlisten = 127.0.0.1:1\n", 9, "listen")


def t_config_unknown_section(_pc=None):
    config_error("@GOOD@[nosuchsection]\n", 8, "nosuchsection")


def t_config_reserved_option(_pc=None):
    config_error(lambda good: good.replace(
        "[postgres]\n", "[postgres]\nwal2json_options = format-version=1\n", 1),
        2, "wal2json_options")


def t_config_reserved_xids(_pc=None):
    config_error(lambda good: good.replace(
        "[postgres]\n", "[postgres]\nwal2json_options = include-timestamp=1, Include-Xids=0\n", 1),
        2, "include-xids")


def t_config_missing_file(_pc=None):
    p = run_pgcdc("-c", "/nonexistent/pgcdc.config", "-t")
    out = p.stdout + p.stderr
    assert p.returncode == 1, "exit %d: %s" % (p.returncode, out)
    assert "/nonexistent/pgcdc.config" in out, out


# ---- main ------------------------------------------------------------------

RESET = """
DROP SCHEMA IF EXISTS pl_sch, "my.schema", pl_allow_s CASCADE;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'r'
             AND (c.relname LIKE 'pl\\_%' OR c.relname IN ('PlOrders', 'plorders'))
  LOOP EXECUTE format('DROP TABLE %I', r.relname); END LOOP;
END $$;
"""


def main():
    if not os.access(PGCDC, os.X_OK):
        report("pgcdc binary present", False, "%s is not executable" % PGCDC)
        finish()
    # the suite's own tables, left by an earlier run against the same database
    sql(RESET)

    for name, fn in [("cli: -V prints pgcdc X.Y.Z", t_version),
                     ("cli: -t prints configuration ok", t_check_ok),
                     ("cli: unknown key names file, line and key", t_config_unknown_key),
                     ("cli: bad value names file, line and key", t_config_bad_value),
                     ("cli: duplicate key names file, line and key", t_config_duplicate),
                     ("cli: unknown section names file, line and section",
                      t_config_unknown_section),
                     ("cli: a reserved wal2json option is a configuration error",
                      t_config_reserved_option),
                     ("cli: include-xids is pgcdc's own: naming it is a configuration error",
                      t_config_reserved_xids),
                     ("cli: missing config file exits 1", t_config_missing_file)]:
        run_test(name, fn)

    group(Pgcdc, [
        ("delivery: frames are wal2json's bytes with pos first; B/C/M never sent", t_bytes),
        ("delivery: insert/update/delete/truncate shapes", t_shapes),
        ("delivery: messages and other tables send nothing", t_messages_only),
    ])
    pc = Pgcdc()
    try:
        pc.start()
        t_filters(pc)
    except Exception as e:  # noqa: BLE001
        report("filters", False, "pgcdc did not start: %s" % e)
    finally:
        pc.stop()
    group(Pgcdc, [
        ("identity: DEFAULT update/delete filters", t_identity_default),
        ("identity: FULL delete sees the whole old row", t_identity_full),
        ("identity: unchanged TOAST column filtered from identity", t_identity_toast),
        ("types: '*' and comma lists", t_types),
        ("names: schema-qualified, quoted and case-sensitive", t_names),
        ("names: not SQL-folded, quotes keep dots", t_name_not_folded),
        ("names: table created after start-up", t_late_table),
        ("clients: two clients get exactly theirs", t_two_clients),
    ] + http_400_tests() + [
        ("http: 404, 405 and 426", t_http_404_405_426),
        ("http: /ping answers pong", t_ping),
        ("order: 1,000 changes in 10 transactions", t_order),
    ])
    # pgcdc can produce faster than a Python client parses frames; the
    # test is about completeness and order, not about slow consumers, so
    # this instance may queue the whole transaction (about 25 MB).
    group(lambda: Pgcdc(extra={"server": {"max_queue": str(256 << 20)}}), [
        ("volume: 100,000-row transaction complete and in order", t_big_transaction),
    ])
    group(allowed_factory, [
        ("http: 403 outside the tables allow-list", t_http_403),
        ("tables: allowed tables stream", t_allowed_streams),
    ])
    run_test("shutdown: SIGTERM closes clients with 1001, exits 0, drops the slot",
             shutdown_test(signal.SIGTERM))
    run_test("shutdown: SIGINT closes clients with 1001, exits 0, drops the slot",
             shutdown_test(signal.SIGINT))
    finish()


if __name__ == "__main__":
    main()
