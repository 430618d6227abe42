"""suite_scaleout.py -- several pgcdc instances behind HAProxy, one killed.

docs/protocol.md (resume): positions belong to the database, so instances
that read the same database with the same settings give every change the
same "pos", and a client whose instance dies resumes on another with
nothing missed.  This suite runs that deployment for real:

- three pgcdc instances, each with its own persistent slot and the default
  history, behind HAProxy configured from dist/haproxy.cfg (its ports
  substituted; TLS binds and the https redirect left out, the balancing,
  health checks on /health and redispatch kept as shipped);
- their /health "stream" values are equal;
- WebSocket clients (and SSE clients, when the server has /sse) connect
  through HAProxy while rows are inserted one transaction at a time;
- one instance that holds clients is killed with SIGKILL;
- every client of that instance reconnects through HAProxy with its last
  position (since=, or Last-Event-ID for SSE), lands on a surviving
  instance, and every client ends with every change exactly once, in
  order, with strictly growing positions.

Needs haproxy (Debian package, installed by test.sh).  Run by test.sh with
/usr/bin/python3 (PGHOST/PGPORT/PGUSER name the database, PGCDC the
binary).  Arguments, if any, select the tests whose name contains one.
"""
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

from harness import (PGDATABASE, PGHOST, PGPORT, PGUSER, Pgcdc, free_port,  # noqa: E402
                     http_get, pos_key, run_selected, sql, wait_until)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 400              # rows inserted, one transaction each
KILL_AT = 120           # the kill happens once every client has this many
WS_CLIENTS = 9
SSE_CLIENTS = 3


def health(port):
    st, body = http_get(port, "/health")
    return st, json.loads(body)


def haproxy_config(front, ports, workdir):
    """dist/haproxy.cfg with the test's ports: plain HTTP on front, the three
    servers on ports, logs to stderr; everything else as shipped."""
    with open(os.path.join(ROOT, "dist", "haproxy.cfg")) as f:
        text = f.read()
    out = []
    for line in text.split("\n"):
        s = line.strip()
        if s.startswith("bind "):
            if s == "bind :80":
                line = line.replace("bind :80", "bind 127.0.0.1:%d" % front)
            else:
                continue            # TLS and IPv6 binds: not here
        elif s.startswith("http-request redirect scheme https"):
            continue
        elif s.startswith("ssl-default-bind-options"):
            continue
        elif s.startswith("log /dev/log"):
            line = line.replace("log /dev/log local0", "log stderr format raw local0")
        elif s.startswith("maxconn "):
            line = re.sub(r"maxconn \d+", "maxconn 500", line)
        else:
            m = re.match(r"\s*server pgcdc(\d) 127\.0\.0\.1:(\d+)", line)
            if m:
                line = line.replace("127.0.0.1:%s" % m.group(2), "127.0.0.1:%d" % ports[int(m.group(1)) - 1])
        out.append(line)
    cfg = "\n".join(out)
    for must in ("balance leastconn", "uri /health", "option redispatch"):
        assert must in cfg, "dist/haproxy.cfg lost %r" % must
    assert cfg.count("server pgcdc") == 3 and all(("127.0.0.1:%d" % p) in cfg for p in ports), \
        "dist/haproxy.cfg does not list three servers pgcdc1..3 at 127.0.0.1:8080..8082"
    path = os.path.join(workdir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    return path


class Client:
    """One subscriber that keeps itself connected through the balancer,
    resuming from the last position it saw."""

    def __init__(self, name, transport, front, table, release):
        self.name, self.transport, self.front, self.table = name, transport, front, table
        self.release = release   # set when the client may hang up
        self.ids, self.positions = [], []
        self.connects = 0        # successful connections
        self.refused = []        # why attempts failed (kept for the report)
        self.connected = asyncio.Event()
        self.done = False

    @property
    def last(self):
        return self.positions[-1] if self.positions else None

    def take(self, text):
        doc = json.loads(text)
        self.positions.append(doc["pos"])
        self.ids.append(doc["columns"][0]["value"])

    async def run(self, deadline):
        while not self.done and time.time() < deadline:
            try:
                if self.transport == "ws":
                    await self.run_ws()
                else:
                    await self.run_sse()
            except (OSError, asyncio.IncompleteReadError, websockets.exceptions.WebSocketException,
                    ConnectionError) as e:
                self.refused.append("%s: %s" % (type(e).__name__, e))
            if not self.done:
                await asyncio.sleep(0.2)

    async def run_ws(self):
        path = "/ws?query=insert:%s" % self.table
        if self.last:
            path += "&since=" + urllib.parse.quote(self.last)
        async with websockets.connect("ws://127.0.0.1:%d%s" % (self.front, path), open_timeout=10,
                                      max_size=None, ping_interval=None) as ws:
            self.connects += 1
            self.connected.set()
            async for msg in ws:
                self.take(msg)
                if len(self.ids) >= ROWS:
                    self.done = True
                    await self.release.wait()
                    return

    async def run_sse(self):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.front)
        try:
            head = "GET /sse?query=insert:%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n" % self.table
            if self.last:
                head += "Last-Event-ID: %s\r\n" % self.last
            writer.write((head + "\r\n").encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            if b" 200 " not in status:
                raise ConnectionError("status %r" % status.strip())
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            self.connects += 1
            self.connected.set()
            data, ident = [], None
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("stream ended")
                line = line.rstrip(b"\r\n").decode()
                if line == "":
                    if data:
                        self.take("\n".join(data))
                        if ident is not None:
                            assert ident == self.last, "event id %r, pos %r" % (ident, self.last)
                        if len(self.ids) >= ROWS:
                            self.done = True
                            await self.release.wait()
                            return
                    data, ident = [], None
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line.startswith("id:"):
                    ident = line[3:].lstrip(" ")
                elif line.startswith("event: close"):
                    raise ConnectionError("closed by the server")
        finally:
            writer.close()

    def problems(self):
        """Every change exactly once, in order, positions strictly growing."""
        if self.ids != list(range(1, ROWS + 1)):
            missing = sorted(set(range(1, ROWS + 1)) - set(self.ids))
            dup = len(self.ids) - len(set(self.ids))
            return "%s: %d changes, %d missing (first %s), %d twice, in order: %s" % (
                self.name, len(self.ids), len(missing), missing[:5], dup, self.ids == sorted(self.ids))
        keys = [pos_key(p) for p in self.positions]
        if any(a >= b for a, b in zip(keys, keys[1:])):
            return "%s: positions do not grow strictly" % self.name
        return None


def sse_count(port):
    """SSE clients an instance holds, from its /metrics."""
    st, body = http_get(port, "/metrics")
    m = re.search(r'^pgcdc_clients_by_transport\{transport="sse"\} (\d+)$', body, re.M)
    return int(m.group(1)) if m else 0


def sse_available(port, table):
    """Does this build serve /sse (200 to a valid request)?"""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(("GET /sse?query=insert:%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % table).encode())
        status = s.recv(64).split(b"\r\n")[0]
    finally:
        s.close()
    return status.startswith(b"HTTP/1.1 200")


async def scenario(front, instances, table, transports):
    clients = []
    release = asyncio.Event()
    for t, n in transports:
        clients += [Client("%s%d" % (t, i), t, front, table, release) for i in range(n)]
    deadline = time.time() + 90
    tasks = []
    # One at a time, so leastconn spreads them over the three instances.
    for c in clients:
        tasks.append(asyncio.ensure_future(c.run(deadline)))
        await asyncio.wait_for(c.connected.wait(), 15)
        await asyncio.sleep(0.05)
    counts = [await asyncio.to_thread(lambda p=pc.port: health(p)[1]["clients"]) for pc in instances]
    assert sum(counts) == len(clients) and min(counts) >= 1, \
        "%d clients through HAProxy spread as %r over the instances" % (len(clients), counts)

    # Steady load: one row per transaction, a few milliseconds apart.
    load = await asyncio.create_subprocess_exec(
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PGHOST, "-p", PGPORT, "-U", PGUSER,
        "-d", PGDATABASE, "-c",
        "DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO %s (v) VALUES (i); COMMIT; "
        "PERFORM pg_sleep(0.005); END LOOP; END $$" % (ROWS, table),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    while min(len(c.ids) for c in clients) < KILL_AT:
        assert time.time() < deadline, "clients stuck before the kill: %r" % [len(c.ids) for c in clients]
        await asyncio.sleep(0.02)
    # the victim holds the most clients, and SSE ones when there are any
    sse_on = [await asyncio.to_thread(sse_count, pc.port) for pc in instances]
    victim = max(range(3), key=lambda i: (sse_on[i] > 0, counts[i]))
    on_victim = counts[victim]
    instances[victim].stop(sig=9)
    killed_at = min(len(c.ids) for c in clients)

    _, err = await load.communicate()
    assert load.returncode == 0, "the insert load failed: %s" % err.decode()[-300:]
    while not all(c.done for c in clients):
        assert time.time() < deadline, "clients did not get every change: %s" % ", ".join(
            "%s %d (%d connections)" % (c.name, len(c.ids), c.connects) for c in clients)
        await asyncio.sleep(0.05)
    # Still connected: where are they now?
    survivors = [pc for i, pc in enumerate(instances) if i != victim]
    now = [(await asyncio.to_thread(health, pc.port))[1]["clients"] for pc in survivors]
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 15)

    bad = [p for p in (c.problems() for c in clients) if p]
    assert not bad, "; ".join(bad[:4])
    moved = [c for c in clients if c.connects > 1]
    if any(t == "sse" for t, _ in transports):
        assert any(c.transport == "sse" for c in moved), "no SSE client was on the killed instance"
    assert len(moved) == on_victim, "%d clients reconnected, the killed instance held %d (%s)" % (
        len(moved), on_victim, ", ".join("%s: %d connections" % (c.name, c.connects) for c in clients))
    assert sum(now) == len(clients), "after the kill the survivors hold %r of %d clients" % (now, len(clients))
    resumes = 0
    for pc in survivors:
        st, body = http_get(pc.port, "/metrics")
        m = re.search(r"^pgcdc_resumes_total (\d+)$", body, re.M)
        resumes += int(m.group(1)) if m else 0
    assert resumes >= on_victim, "survivors counted %d resumes, %d clients moved" % (resumes, on_victim)
    return "killed pgcdc%d holding %d of %d clients (%s) after %d changes; all %d changes arrived once, in order" % (
        victim + 1, on_victim, len(clients), ", ".join(c.name for c in moved), killed_at, ROWS)


def t_scaleout():
    if not shutil.which("haproxy"):
        raise AssertionError("haproxy is not installed (test.sh installs the Debian package)")
    table = "scale_t_%d" % os.getpid()
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id serial PRIMARY KEY, v int)" % (table, table))
    work = tempfile.mkdtemp(prefix="pgcdc-scale-")
    # as dist/haproxy.cfg says: HAProxy's address is a trusted proxy
    instances = [Pgcdc({"postgres": {"temporary_slot": "false"},
                        "server": {"trusted_proxies": "127.0.0.1"}}) for _ in range(3)]
    hap = None
    try:
        for pc in instances:
            pc.start()
        streams = [health(pc.port)[1].get("stream") for pc in instances]
        assert all(isinstance(s, str) and re.fullmatch(r"[0-9a-f]{16}", s) for s in streams), \
            "/health stream values %r" % streams
        assert len(set(streams)) == 1, "the three instances' /health stream values differ: %r" % streams
        front = free_port()
        cfg = haproxy_config(front, [pc.port for pc in instances], work)
        hlog = open(os.path.join(work, "haproxy.log"), "wb")
        hap = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=hlog, stderr=subprocess.STDOUT)

        def all_up():
            try:
                return http_get(front, "/health", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(all_up, 15, "HAProxy to answer /health")
        transports = [("ws", WS_CLIENTS)]
        if sse_available(instances[0].port, table):
            transports.append(("sse", SSE_CLIENTS))
        else:
            print("# no /sse on this build: WebSocket clients only", flush=True)
        summary = asyncio.run(scenario(front, instances, table, transports))
        print("# " + summary, flush=True)
    finally:
        if hap:
            hap.terminate()
            hap.wait(10)
        for pc in instances:
            pc.stop()
        for pc in instances:
            def dropped(slot=pc.slot):
                sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = '%s' AND NOT active" % slot, check=False)
                return sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'" % slot) == "0"
            try:
                wait_until(dropped, 15, "slot %s to be dropped" % pc.slot, step=0.2)
            except AssertionError as e:
                print("# %s" % e, flush=True)
        sql("DROP TABLE IF EXISTS %s" % table, check=False)
        shutil.rmtree(work, ignore_errors=True)


TESTS = [
    ("scaleout: 3 instances behind HAProxy (dist/haproxy.cfg), one killed under load: "
     "every client resumes on another, every change once, in order; equal /health stream", t_scaleout),
]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    main()
