"""suite_cost.py -- a hostile subscriber cannot make pgcdc's work per change
or per resume grow beyond the change or the table's history.

- A subscription with an `in` list of 1,000 values, matched against changes
  carrying a ~100 KB string value full of escapes: each value is unescaped
  once per change (not once per list element) and the list is searched, not
  scanned, so pgcdc's CPU time for the changes stays small and /ping is
  answered meanwhile.
- Many clients resuming from the oldest position with a filter that never
  matches: a replay looks only at its table's frames, matches them without
  tokenizing them again, and is spread over loop turns, so pgcdc's CPU time
  stays small and /ping is answered meanwhile.

CPU time is pgcdc's own (utime + stime from /proc/<pid>/stat), so the checks
do not depend on how busy the machine is; the /ping bounds are generous for
the same reason.  The subscription limits themselves (16 filters, 1,000 in
values, 400 beyond, saying which) are checked here too.

Run by test.sh with /usr/bin/python3 (PGHOST/PGPORT/PGUSER name the
database, PGCDC the binary).  Arguments, if any, select the tests whose
name contains one of them.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wsraw  # noqa: E402
from harness import Pgcdc, http_get, run_selected, sql, wait_until, ws_path  # noqa: E402
from harness import metric  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Pinger:
    """Times GET /ping every 20 ms in a thread while it is open."""

    def __init__(self, port):
        self.port, self.lat, self.stop = port, [], threading.Event()
        self.th = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                st, _ = http_get(self.port, "/ping", timeout=20)
            except OSError:
                st = None
            self.lat.append((time.monotonic() - t0, st))
            time.sleep(0.02)

    def __enter__(self):
        self.th.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.th.join(30)

    def check(self, what, bound=0.25):
        bad = [st for _, st in self.lat if st != 200]
        assert not bad, "/ping failed while %s: %r" % (what, bad[:5])
        assert self.lat, "no /ping answered while %s" % what
        worst = max(d for d, _ in self.lat)
        assert worst < bound, "/ping took up to %.3f s while %s (%d probes)" % (worst, what, len(self.lat))


def upgrade(pc, path):
    c = wsraw.WsRaw("127.0.0.1", pc.port, 20.0)
    resp = c.handshake(path)
    return c, resp


def t_limits():
    """17 filters, or 1,001 in values over the lists, are refused with 400
    saying which; 16 and 1,000 are accepted."""
    sql("DROP TABLE IF EXISTS cst_l; CREATE TABLE cst_l (a int, b int)")
    with Pgcdc() as pc:
        c, resp = upgrade(pc, ws_path("insert:cst_l:a.eq.1", ["b.eq.%d" % i for i in range(15)]))
        assert resp.status == 101, "16 filters: %r" % resp
        c.close()
        c, resp = upgrade(pc, ws_path("insert:cst_l:a.eq.1", ["b.eq.%d" % i for i in range(16)]))
        assert resp.status == 400 and b"too many filters: 17 (at most 16" in resp.body, \
            "17 filters: %r %r" % (resp, resp.body[:200])
        c.close()
        vals = ",".join(str(i) for i in range(1000))
        c, resp = upgrade(pc, ws_path("insert:cst_l:a.in.(%s)" % vals))
        assert resp.status == 101, "1000 in values: %r" % resp
        c.close()
        vals = ",".join(str(i) for i in range(999))
        c, resp = upgrade(pc, ws_path("insert:cst_l:a.in.(%s)" % vals, ["b.in.(1,2)"]))
        assert resp.status == 400 and b"too many values in in-lists: 1001 (at most 1000" in resp.body, \
            "1001 in values over two lists: %r %r" % (resp, resp.body[:200])
        c.close()


def t_hostile_in_list():
    """Four subscriptions, each an in-list of 1,000 values, and three rows
    whose text column holds ~100 KB with a quote every 8 bytes."""
    sql("DROP TABLE IF EXISTS cst_h; CREATE TABLE cst_h (id int, body text)")
    rows, subs = 3, 4
    with Pgcdc() as pc:
        clients = []
        for s in range(subs):
            vals = ",".join("%s%d" % ("abcd"[s], i) for i in range(1000))
            c, resp = upgrade(pc, ws_path("insert:cst_h:body.in.(%s)" % vals))
            assert resp.status == 101, "hostile subscriber: %r %r" % (resp, resp.body[:200])
            clients.append(c)
        watcher, resp = upgrade(pc, ws_path("insert:cst_h"))
        assert resp.status == 101
        changes0 = metric(pc.port, "pgcdc_changes_total")
        with Pinger(pc.port) as p:
            time.sleep(0.2)
            cpu0 = cpu_seconds(pc.proc.pid)
            sql("INSERT INTO cst_h SELECT g, repeat('abcdefg\"', 12800) FROM generate_series(1, %d) g" % rows)
            wait_until(lambda: metric(pc.port, "pgcdc_changes_total") >= changes0 + rows, 60,
                       "pgcdc to take the %d changes" % rows)
            for _ in range(rows):
                f = watcher.next_frame(30, answer_pings=True)
                assert f.opcode == 1 and len(f.payload) > 100000, "the watcher got %r" % f
            cpu = cpu_seconds(pc.proc.pid) - cpu0
            time.sleep(0.2)
        # before: every value of every list unescaped the 100 KB again,
        # 4 x 3 x 1000 times (over 1 GB of work); now 3 unescapes
        print("# %d changes of 100 KB, %d in-lists of 1000: %.2f s of pgcdc CPU, /ping at worst %.3f s" % (
            rows, subs, cpu, max(d for d, _ in p.lat)), flush=True)
        assert cpu < 0.5, "pgcdc spent %.2f s of CPU on %d changes of 100 KB with %d in-lists of 1000" % (
            cpu, rows, subs)
        p.check("in-lists of 1000 values met 100 KB values")
        for c in clients:
            c.close()
        watcher.close()


def t_replay_never_matching():
    """40,000 small changes of one table in the history; 40 clients resume
    from the oldest with a filter none of them matches."""
    sql("DROP TABLE IF EXISTS cst_r; CREATE TABLE cst_r (i int, t text)")
    sql("DROP TABLE IF EXISTS cst_o; CREATE TABLE cst_o (i int)")
    rows, clients_n = 40000, 40
    with Pgcdc({"server": {"history": "67108864", "max_clients": "1000"}}) as pc:
        first, resp = upgrade(pc, ws_path("insert:cst_r"))
        assert resp.status == 101
        sql("INSERT INTO cst_r VALUES (0, 'x')")
        import json
        since = json.loads(first.next_frame(10, answer_pings=True).payload)["pos"]
        first.close()
        sql("INSERT INTO cst_r SELECT g, 'row ' || g FROM generate_series(1, %d) g" % rows)
        sql("INSERT INTO cst_o SELECT g FROM generate_series(1, %d) g" % rows)
        wait_until(lambda: metric(pc.port, "pgcdc_changes_total") >= 2 * rows + 1, 60,
                   "pgcdc to take the changes")
        resumes0 = metric(pc.port, "pgcdc_resumes_total")
        req = wsraw.build_request(ws_path("insert:cst_r:i.eq.-1", since=since), wsraw.upgrade_headers())
        cs = []
        with Pinger(pc.port) as p:
            time.sleep(0.2)
            cpu0 = cpu_seconds(pc.proc.pid)
            for _ in range(clients_n):
                c = wsraw.WsRaw("127.0.0.1", pc.port, 30.0)
                c.send(req)
                cs.append(c)
            for c in cs:
                resp = c.read_http(30)
                assert resp.status == 101, "a resuming client was answered %r" % resp
            wait_until(lambda: metric(pc.port, "pgcdc_resumes_total") >= resumes0 + clients_n, 30,
                       "the resumes to be counted")
            # caught up: a matching change now reaches every one of them live
            sql("INSERT INTO cst_r VALUES (-1, 'match')")
            for c in cs:
                f = c.next_frame(60, answer_pings=True)
                assert f.opcode == 1 and b'"match"' in f.payload, "a resumed client got %r" % f
            cpu = cpu_seconds(pc.proc.pid) - cpu0
        # before: each replay tokenized all 80,000 frames again (3.2 million
        # parses); now each looks at its table's 40,000 through their index
        print("# %d replays of %d frames: %.2f s of pgcdc CPU, /ping at worst %.3f s" % (
            clients_n, rows, cpu, max(d for d, _ in p.lat)), flush=True)
        assert cpu < 1.5, "pgcdc spent %.2f s of CPU on %d replays of %d frames" % (cpu, clients_n, rows)
        p.check("%d clients replayed %d frames" % (clients_n, rows))
        for c in cs:
            c.close()


TESTS = [
    ("cost: 16 filters and 1000 in values per subscription, 400 beyond", t_limits),
    ("cost: in-lists of 1000 values against 100 KB values cost little CPU, /ping answers", t_hostile_in_list),
    ("cost: 40 replays with a filter that never matches cost little CPU, /ping answers",
     t_replay_never_matching),
]


if __name__ == "__main__":
    run_selected(TESTS)
