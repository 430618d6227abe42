"""harness.py -- shared helpers for pgcdc's end-to-end suites.

Each suite is a script run by test.sh with /usr/bin/python3.  The database
is the throwaway cluster test.sh started; its address comes from PGHOST,
PGPORT and PGUSER, the binary from PGCDC (default ./pgcdc).  Every test
reports one line, "ok - name" or "not ok - name: why", which test.sh counts.
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

PGCDC = os.environ.get("PGCDC", os.path.abspath("./pgcdc"))
PGHOST = os.environ.get("PGHOST", "/tmp")
PGPORT = os.environ.get("PGPORT", "5432")
PGUSER = os.environ.get("PGUSER", "postgres")
PGDATABASE = os.environ.get("PGDATABASE", "postgres")

passed = 0
failed = 0


def report(name, ok, why=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok - %s" % name, flush=True)
    else:
        failed += 1
        print("not ok - %s: %s" % (name, why), flush=True)


def selected(name):
    """Is the test called name to run?  Every suite selects the same way: all
    tests, or those whose name contains one of the command-line arguments."""
    return len(sys.argv) < 2 or any(a in name for a in sys.argv[1:])


def run_test(name, fn, *args):
    """Runs fn (sync or async) when selected; an exception or AssertionError
    fails it."""
    if not selected(name):
        return
    try:
        r = fn(*args)
        if asyncio.iscoroutine(r):
            asyncio.run(asyncio.wait_for(r, 120))
        report(name, True)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        report(name, False, "%s: %s" % (type(e).__name__, e))


def run_selected(tests):
    """Runs (name, fn) pairs: all, or those whose name contains one of the
    command-line arguments; then finish()."""
    for name, fn in tests:
        run_test(name, fn)
    finish()


def finish():
    print("%s: %d passed, %d failed" % (os.path.basename(sys.argv[0]), passed, failed), flush=True)
    sys.exit(1 if failed else 0)


def conninfo(db=PGDATABASE):
    return "host=%s port=%s user=%s dbname=%s" % (PGHOST, PGPORT, PGUSER, db)


def sql(q, db=PGDATABASE, check=True):
    """Runs SQL with psql; returns stdout (tuples only, unaligned)."""
    p = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                        "-h", PGHOST, "-p", PGPORT, "-U", PGUSER, "-d", db, "-c", q],
                       capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError("psql failed: %s" % p.stderr.strip())
    return p.stdout.strip()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Pgcdc:
    """A pgcdc process with its own config file and port.

    extra: dict of section -> {key: value} merged over the defaults."""

    def __init__(self, extra=None, slot=None, args=()):
        self.port = free_port()
        self.slot = slot or ("t%d_%d" % (os.getpid(), self.port))
        cfg = {
            "postgres": {"conninfo": conninfo(), "slot": self.slot,
                         "status_interval": "1", "reconnect_max": "2"},
            "server": {"listen": "127.0.0.1:%d" % self.port},
        }
        for sec, kv in (extra or {}).items():
            cfg.setdefault(sec, {}).update(kv)
        self.dir = tempfile.mkdtemp(prefix="pgcdc-test-")
        self.config = os.path.join(self.dir, "pgcdc.config")
        with open(self.config, "w") as f:
            for sec, kv in cfg.items():
                f.write("[%s]\n" % sec)
                for k, v in kv.items():
                    if v is not None:
                        f.write("%s = %s\n" % (k, v))
        self.log = os.path.join(self.dir, "pgcdc.log")
        self.args = list(args)
        self.proc = None

    def start(self, wait_streaming=True, timeout=20):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([PGCDC, "-c", self.config, "-v"] + self.args,
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("pgcdc exited with %s: %s" % (self.proc.returncode, self.logtext()[-2000:]))
            try:
                if not wait_streaming:
                    if http_get(self.port, "/ping")[0] == 200:
                        return self
                else:
                    st, body = http_get(self.port, "/health")
                    if st == 200 and json.loads(body).get("replication") == "streaming":
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("pgcdc did not become ready: %s" % self.logtext()[-2000:])

    def stop(self, sig=15, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        return self.proc.returncode if self.proc else None

    def logtext(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def url(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


def http_get(port, path, headers=None, timeout=5):
    """Returns (status, body) without raising on HTTP errors."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def raw_http(port, request_bytes, timeout=5):
    """Sends raw bytes, returns everything the server sent until it closed
    or timeout passed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request_bytes)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            if b"\r\n\r\n" in data and not data.startswith(b"HTTP/1.1 101"):
                # error responses carry Content-Length; read the body
                head, _, body = data.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(body) >= int(line.split(b":")[1]):
                            s.close()
                            return data
    except socket.timeout:
        pass
    s.close()
    return data


def ws_upgrade(port, path, headers=(), timeout=3):
    """(status, body) of the answer to a WebSocket upgrade request for path
    (body empty on 101); headers are extra "Name: value" lines."""
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n" % (path, port))
    for h in headers:
        req += h + "\r\n"
    data = raw_http(port, (req + "\r\n").encode(), timeout=timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    assert len(parts) >= 2 and parts[1].isdigit(), "no HTTP answer: %r" % data[:200]
    status = int(parts[1])
    return status, (b"" if status == 101 else body).decode("utf-8", "replace")


async def recv_text(ws, n, timeout=30):
    """Receives n frames from a websockets connection, as text."""
    out = []
    deadline = time.time() + timeout
    while len(out) < n:
        left = deadline - time.time()
        if left <= 0:
            raise AssertionError("got %d of %d frames" % (len(out), n))
        out.append(await asyncio.wait_for(ws.recv(), left))
    return out


async def recv_until(ws, pred, timeout=30, describe=None):
    """Receives frames (parsed JSON) until pred(frame) holds for one; returns
    them all, that one last.  On timeout the message ends with
    describe(frames so far) when given."""
    out = []
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0:
            raise AssertionError("timed out after %d frames%s" % (
                len(out), ": " + describe(out) if describe else ""))
        try:
            f = json.loads(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            continue
        out.append(f)
        if pred(f):
            return out


async def collect(ws, n, timeout=30):
    """Receives n frames (parsed JSON) from a websockets connection."""
    return [json.loads(m) for m in await recv_text(ws, n, timeout)]


async def expect_silence(ws, seconds=0.5):
    """Asserts that no frame arrives within seconds."""
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected frame: %s" % msg[:200])


def wait_until(fn, timeout, what, step=0.05):
    """Polls fn() until it returns a true value (returned); fails after
    timeout saying what was awaited (what may be a callable)."""
    deadline = time.time() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.time() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (
                timeout, what() if callable(what) else what))
        time.sleep(step)


def ws_path(query, filters=(), since=None):
    """/ws?query=...&filter=...&since=..., each value encoded as a browser's
    encodeURIComponent does."""
    enc = lambda s: urllib.parse.quote(s, safe="-_.!~*'()")  # noqa: E731
    path = "/ws?query=" + enc(query)
    for f in filters:
        path += "&filter=" + enc(f)
    if since is not None:
        path += "&since=" + enc(since)
    return path


def pos_key(pos):
    """'X/Y:n' -> sortable tuple."""
    lsn, n = pos.rsplit(":", 1)
    hi, lo = lsn.split("/")
    return ((int(hi, 16) << 32) | int(lo, 16), int(n))


# ---- helpers the suites share ----------------------------------------------

def lsn_int(lsn):
    """'X/Y' -> the LSN as an integer."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def metrics(port):
    """/metrics as {sample name (labels included, as printed): float value}."""
    st, body = http_get(port, "/metrics")
    assert st == 200, "/metrics answered %d" % st
    out = {}
    for line in body.split("\n"):
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def metric(port, name):
    """One sample of /metrics (it must be there)."""
    m = metrics(port)
    assert name in m, "/metrics lacks %s" % name
    return m[name]


def rss_kib(pid, field="VmRSS"):
    """A process's resident size (or another /proc/PID/status field), KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


def raw_client(pc, query, timeout=5.0, rcvbuf=None):
    """A raw WebSocket client (tests/wsraw.py) past its handshake, 101 checked."""
    import wsraw
    c = wsraw.WsRaw("127.0.0.1", pc.port, timeout, rcvbuf)
    resp = c.handshake("/ws?query=" + query)
    assert resp.status == 101, "upgrade answered %r" % resp
    return c
