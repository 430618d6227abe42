"""suite_grants.py -- end-to-end tests of signed grants (docs/protocol.md, Grants).

Grants are minted here with Python's hmac and by the three minting snippets
the README shows (tests/grant_mint.sh, .py, .js, run as programs); pgcdc
must accept exactly what a grant allows: a request may narrow it (fewer
types, more filters) but never widen it (403), and a grant that is forged,
tampered with, expired or missing is refused (401).  A connection is closed
with 1008 when its grant expires, and without grant_secret the grant
parameter means nothing.
"""
import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

from harness import Pgcdc, finish, report, run_test, selected, sql, ws_upgrade  # noqa: E402
from harness import recv_until as harness_recv_until  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "s3cret: grants & more"


# ---- helpers ---------------------------------------------------------------

def enc(s):
    return urllib.parse.quote(s, safe="")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(secret, payload):
    return b64url(payload.encode()) + "." + b64url(
        hmac.new(secret.encode(), payload.encode(), hashlib.sha1).digest())


def payload_of(query, filters=(), exp=None):
    p = "exp=%d&query=%s" % (exp if exp is not None else time.time() + 3600, enc(query))
    for f in filters:
        p += "&filter=" + enc(f)
    return p


def mint(query, filters=(), exp=None, secret=SECRET):
    return sign(secret, payload_of(query, filters, exp))


def ws_path(query, filters=(), grant=None):
    path = "/ws?query=" + enc(query)
    for f in filters:
        path += "&filter=" + enc(f)
    if grant is not None:
        path += "&grant=" + grant
    return path


async def connect(pc, path):
    return await websockets.connect(pc.url(path), max_size=None, max_queue=None,
                                    ping_interval=None, open_timeout=10)


def cols(frame):
    return {c["name"]: c.get("value") for c in frame.get("columns", [])}


async def recv_until(ws, pred, timeout=20):
    return await harness_recv_until(ws, pred, timeout,
                                    lambda out: str([cols(f) for f in out][-5:]))


async def close(ws):
    try:
        await asyncio.wait_for(ws.close(), 5)
    except Exception:  # noqa: BLE001 - the server may have closed already
        pass


def make_tables():
    sql("DROP TABLE IF EXISTS g_orders, g_other; "
        "CREATE TABLE g_orders (id serial PRIMARY KEY, user_id int, amount int, note text); "
        "CREATE TABLE g_other (id serial PRIMARY KEY, user_id int)")


def insert_orders(rows):
    """rows: (user_id, amount) pairs, one transaction each; then a marker
    row of user 1 with amount -1 so a client knows it has seen them all."""
    sql(" ".join("BEGIN; INSERT INTO g_orders (user_id, amount) VALUES (%d, %d); COMMIT;" % r
                 for r in list(rows) + [(1, -1)]))


async def receive_batch(ws):
    """Frames up to the marker row; returns [(user_id, amount)] before it."""
    got = await recv_until(ws, lambda f: cols(f).get("amount") == -1)
    return [(cols(f)["user_id"], cols(f)["amount"]) for f in got[:-1]]


ROWS = [(1, 5), (2, 7), (1, 20), (2, 30), (3, 1), (1, 50)]


def assert_status(pc, path, want, words=(), what=""):
    st, body = ws_upgrade(pc.port, path)
    assert st == want, "%s: expected %d, got %d %s" % (what or path, want, st, body.strip())
    assert body.strip(), "%s: %d without a body" % (what or path, st)
    low = body.lower()
    assert all(w in low for w in words), "%s: body %r does not mention %s" % (what or path, body, words)
    return body


# ---- tests -------------------------------------------------------------------

async def t_valid_grant_only_its_rows(pc):
    g = mint("insert:g_orders", ["user_id.eq.1"])
    # the filter may come in the query or as a filter= parameter
    for path in (ws_path("insert:g_orders", ["user_id.eq.1"], g),
                 ws_path("insert:g_orders:user_id.eq.1", (), g)):
        ws = await connect(pc, path)
        insert_orders(ROWS)
        got = await receive_batch(ws)
        assert got == [(1, 5), (1, 20), (1, 50)], got
        await close(ws)


async def t_grant_in_query_form(pc):
    # a grant whose query carries the filter after its second ':'
    g = mint("insert:g_orders:user_id.eq.1")
    ws = await connect(pc, ws_path("insert:g_orders", ["user_id.eq.1"], g))
    insert_orders(ROWS)
    assert await receive_batch(ws) == [(1, 5), (1, 20), (1, 50)]
    await close(ws)


def t_widened_403(pc):
    g = mint("insert:g_orders", ["user_id.eq.1"])
    for path, what, word in (
            (ws_path("insert:g_other", ["user_id.eq.1"], g), "another table", "table"),
            (ws_path("insert:public.g_other", ["user_id.eq.1"], g), "another table, schema-qualified", "table"),
            (ws_path("insert,update:g_orders", ["user_id.eq.1"], g), "update added", "type"),
            (ws_path("*:g_orders", ["user_id.eq.1"], g), "all types", "type"),
            (ws_path("insert:g_orders", (), g), "filter dropped", "filter"),
            (ws_path("insert:g_orders", ["user_id.eq.2"], g), "filter changed", "filter"),
            (ws_path("insert:g_orders", ["user_id.in.1,2"], g), "filter widened", "filter"),
            (ws_path("insert:g_orders", ["amount.gt.0"], g), "filter replaced", "filter")):
        assert_status(pc, path, 403, ("grant", word), what)
    # several filters in the grant: dropping any one of them is refused
    g2 = mint("insert,update:g_orders", ["user_id.eq.1", "amount.gt.10"])
    assert_status(pc, ws_path("insert:g_orders", ["user_id.eq.1"], g2), 403, what="second filter dropped")
    assert_status(pc, ws_path("insert:g_orders", ["amount.gt.10"], g2), 403, what="first filter dropped")
    st, body = ws_upgrade(pc.port, ws_path("update:g_orders", ["amount.gt.10", "user_id.eq.1"], g2))
    assert st == 101, "fewer types, the grant's filters in another order: %d %s" % (st, body)


async def t_narrower_accepted(pc):
    g = mint("insert,update:g_orders", ["user_id.eq.1"])
    # an extra filter and fewer types: accepted, narrower stream
    ws = await connect(pc, ws_path("insert:g_orders", ["user_id.eq.1", "amount.gt.10"], g))
    insert_orders(ROWS)
    got = await recv_until(ws, lambda f: cols(f).get("amount") == 50)
    assert [(cols(f)["user_id"], cols(f)["amount"]) for f in got] == [(1, 20), (1, 50)], got
    await close(ws)
    # the grant's schema-qualified form of the same table is the same table
    st, body = ws_upgrade(pc.port, ws_path("insert:public.g_orders", ["user_id.eq.1"], g))
    assert st == 101, "public.g_orders for a grant on g_orders: %d %s" % (st, body)


def t_bad_grants_401(pc):
    good_payload = payload_of("insert:g_orders", ["user_id.eq.1"])
    good = sign(SECRET, good_payload)
    p64, mac64 = good.split(".")
    # the payload of user 2 under user 1's MAC
    other64 = b64url(payload_of("insert:g_orders", ["user_id.eq.2"]).encode())
    cases = [
        (ws_path("insert:g_orders", ["user_id.eq.2"], other64 + "." + mac64), "tampered payload", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], sign("another secret", good_payload)),
         "another secret", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], mint("insert:g_orders", ["user_id.eq.1"],
                                                            exp=int(time.time()) - 5)),
         "expired", ("expired",)),
        (ws_path("insert:g_orders", ["user_id.eq.1"], "garbage"), "garbage", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], "a.b.c"), "garbage with dots", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], p64), "payload without MAC", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], p64 + "."), "empty MAC", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], "." + mac64), "empty payload", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], p64 + "=." + mac64), "padding", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], ""), "empty grant", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"]), "missing grant", ("grant",)),
        # signed but not a grant
        (ws_path("insert:g_orders", ["user_id.eq.1"], sign(SECRET, "query=insert%3Ag_orders")),
         "no exp", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"], sign(SECRET, "exp=%d" % (time.time() + 60))),
         "no query", ()),
        (ws_path("insert:g_orders", ["user_id.eq.1"],
                 sign(SECRET, "exp=soon&query=insert%3Ag_orders&filter=user_id.eq.1")), "exp not a number", ()),
    ]
    for path, what, words in cases:
        assert_status(pc, path, 401, ("grant",) + words, what)
    # the untampered one is fine
    st, body = ws_upgrade(pc.port, ws_path("insert:g_orders", ["user_id.eq.1"], good))
    assert st == 101, "the valid grant: %d %s" % (st, body)


def t_tampered_mac_401(pc):
    """One bit flipped in each of the MAC's 20 bytes in turn (a different bit
    each time), with a fixed exp, so that a MAC compared on fewer bytes is
    caught every time, whatever the clock."""
    payload = payload_of("insert:g_orders", ["user_id.eq.1"], exp=4102444800)   # 2100-01-01
    good = sign(SECRET, payload)
    p64, mac64 = good.split(".")
    mac = base64.urlsafe_b64decode(mac64 + "=" * (-len(mac64) % 4))
    assert len(mac) == 20, mac
    st, body = ws_upgrade(pc.port, ws_path("insert:g_orders", ["user_id.eq.1"], good))
    assert st == 101, "the untampered grant (exp 2100): %d %s" % (st, body)
    for i in range(20):
        bad = bytearray(mac)
        bad[i] ^= 1 << (i % 8)
        assert_status(pc, ws_path("insert:g_orders", ["user_id.eq.1"], p64 + "." + b64url(bytes(bad))),
                      401, ("grant",), "MAC byte %d, bit %d flipped" % (i, i % 8))


async def t_expiry_while_connected(pc):
    exp = int(time.time()) + 3
    ws = await connect(pc, ws_path("insert:g_orders", ["user_id.eq.1"],
                                   mint("insert:g_orders", ["user_id.eq.1"], exp=exp)))
    insert_orders([(1, 3)])
    assert await receive_batch(ws) == [(1, 3)]
    try:
        while True:
            await asyncio.wait_for(ws.recv(), exp + 5 - time.time())
    except websockets.ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        raise AssertionError("still open %.1f s after the grant expired" % (time.time() - exp))
    t = time.time()
    assert ws.close_code == 1008, "closed with %s %r" % (ws.close_code, ws.close_reason)
    assert exp - 0.05 <= t <= exp + 1.5, "closed %.2f s after exp" % (t - exp)
    if os.environ.get("GRANTS_VERBOSE"):
        print("# closed %.3f s after exp" % (t - exp))
    assert "expire" in (ws.close_reason or "").lower(), "close reason %r" % ws.close_reason


def run_snippet(cmd, query, filters=()):
    p = subprocess.run(cmd + [SECRET, query] + list(filters), capture_output=True, text=True,
                       timeout=20, cwd=HERE)
    assert p.returncode == 0, "%s failed: %s" % (cmd, p.stderr.strip())
    lines = p.stdout.strip().split("\n")
    assert len(lines) == 1 and "." in lines[0], "%s printed %r" % (cmd, p.stdout)
    return lines[0]


SNIPPETS = [
    ("shell", ["bash", os.path.join(HERE, "grant_mint.sh")], "openssl"),
    ("python", ["/usr/bin/python3", os.path.join(HERE, "grant_mint.py")], None),
    ("javascript", ["node", os.path.join(HERE, "grant_mint.js")], "node"),
]


async def snippet_test(pc, cmd):
    # characters that need percent-encoding in the payload, in the filter value
    sql("DELETE FROM g_orders WHERE note IS NOT NULL")
    g = run_snippet(cmd, "insert:g_orders", ["user_id.eq.1", 'note.in.("a b",ü:x&y=1%)'])
    path = ws_path("insert:g_orders", ["user_id.eq.1", 'note.in.("a b",ü:x&y=1%)'], g)
    ws = await connect(pc, path)
    sql("INSERT INTO g_orders (user_id, amount, note) VALUES (1, 1, 'a b'), (2, 2, 'a b'), "
        "(1, 3, 'c'), (1, 4, 'ü:x&y=1%')")
    got = await recv_until(ws, lambda f: cols(f)["amount"] == 4)
    assert [cols(f)["amount"] for f in got] == [1, 4], [cols(f) for f in got]
    await close(ws)
    # and it is bound to what it names
    assert_status(pc, ws_path("insert:g_orders", ["user_id.eq.1"], g), 403, what="snippet grant, filter dropped")
    g2 = run_snippet(cmd, "insert:g_orders:user_id.eq.1")
    ws = await connect(pc, ws_path("insert:g_orders:user_id.eq.1", (), g2))
    insert_orders(ROWS)
    assert await receive_batch(ws) == [(1, 5), (1, 20), (1, 50)]
    await close(ws)


async def t_no_secret(pc):
    for g in (None, "garbage", "", mint("insert:g_other")):
        ws = await connect(pc, ws_path("insert:g_orders", ["user_id.eq.2"], g))
        insert_orders(ROWS)
        got = await recv_until(ws, lambda f: cols(f)["amount"] == 30)
        assert [cols(f)["amount"] for f in got] == [7, 30], [cols(f) for f in got]
        await close(ws)
    assert ws_upgrade(pc.port, ws_path("insert:nope_no_table", (), "garbage"))[0] == 400


def main():
    make_tables()
    pc = Pgcdc({"server": {"grant_secret": SECRET}})
    try:
        pc.start()
        for name, fn in (
                ("grants: a valid grant receives only its rows", t_valid_grant_only_its_rows),
                ("grants: a grant with its filter inside the query", t_grant_in_query_form),
                ("grants: widening table, types or filters -> 403", t_widened_403),
                ("grants: an extra filter or fewer types is accepted, narrower stream", t_narrower_accepted),
                ("grants: forged, tampered, expired, garbage or missing -> 401", t_bad_grants_401),
                ("grants: a MAC with any one bit flipped -> 401 (tampered, each byte)", t_tampered_mac_401),
                ("grants: a connection is closed with 1008 when its grant expires", t_expiry_while_connected)):
            if selected(name):
                run_test(name, fn, pc)
        for label, cmd, tool in SNIPPETS:
            name = "grants: the %s minting snippet's grant is accepted" % label
            if not selected(name):
                continue
            if tool and not shutil.which(tool):
                report(name, False, "%s is not installed" % tool)
                continue
            run_test(name, snippet_test, pc, cmd)
    except Exception as e:  # noqa: BLE001
        report("grants: pgcdc with grant_secret", False, "%s: %s" % (type(e).__name__, e))
    finally:
        pc.stop()

    name = "grants: without grant_secret the grant parameter is ignored"
    if selected(name):
        pc = Pgcdc()
        try:
            pc.start()
            run_test(name, t_no_secret, pc)
        except Exception as e:  # noqa: BLE001
            report(name, False, "%s: %s" % (type(e).__name__, e))
        finally:
            pc.stop()
    finish()


if __name__ == "__main__":
    main()
