"""faultlib.py -- private PostgreSQL clusters, inserters and fast readers
for suite_replication.py.

The replication suite stops, crashes and reconfigures PostgreSQL, so it
never uses the cluster test.sh started: each Cluster here is a throwaway
one of its own, made by tests/pg.sh, which the suite may restart with
`pg_ctl -m immediate` at will.

Ports: REPL_PORTS="A-B" confines every cluster and every pgcdc the suite
starts to that range (handy when several people share one machine);
without it free ephemeral ports are used.  Data directories go under
TMPDIR like everything else tempfile makes.
"""
import atexit
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import Pgcdc, http_get

HERE = os.path.dirname(os.path.abspath(__file__))
PG_SH = os.path.join(HERE, "pg.sh")
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
if not os.path.exists(os.path.join(PG_BIN, "pg_ctl")):
    try:
        PG_BIN = subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        pass

# Everything started here, stopped at exit whatever happened.
_started = []


def _cleanup():
    while _started:
        thing = _started.pop()
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_cleanup)


def _on_term(sig, frame):
    raise SystemExit(128 + sig)


signal.signal(signal.SIGTERM, _on_term)


def track(thing):
    _started.append(thing)
    return thing


def untrack(thing):
    if thing in _started:
        _started.remove(thing)


# ---- ports -----------------------------------------------------------------

class Ports:
    """Hands out ports from REPL_PORTS round-robin (so a port just left in
    TIME_WAIT is not reused at once), or free ephemeral ones."""

    def __init__(self, spec):
        self.range = None
        if spec:
            lo, _, hi = spec.partition("-")
            self.range = list(range(int(lo), int(hi or lo) + 1))
        self.next = 0
        self.busy = set()

    def _bindable(self, port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def take(self):
        if not self.range:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            return port
        for _ in range(len(self.range)):
            port = self.range[self.next % len(self.range)]
            self.next += 1
            if port not in self.busy and self._bindable(port):
                self.busy.add(port)
                return port
        raise RuntimeError("no free port left in REPL_PORTS=%s" % os.environ.get("REPL_PORTS"))

    def give(self, port):
        self.busy.discard(port)


ports = Ports(os.environ.get("REPL_PORTS", ""))


# ---- clusters ----------------------------------------------------------------

def as_owner(argv):
    """The cluster's files belong to postgres when we are root (pg.sh)."""
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


class Cluster:
    """A private PostgreSQL cluster.

    conf: extra postgresql.conf lines (later lines win over pg.sh's);
    hba: pg_hba.conf lines put before pg.sh's trust lines."""

    def __init__(self, conf=(), hba=()):
        self.port = ports.take()
        self.tmp = tempfile.mkdtemp(prefix="pgcdc-repl-")
        os.chmod(self.tmp, 0o755)
        env = dict(os.environ, TMPDIR=self.tmp)
        p = subprocess.run(["bash", "-c", '. "$1"; pg_start "$2" >&2 && echo "$PG_BASE"',
                            "pg-start", PG_SH, str(self.port)], env=env, capture_output=True, text=True)
        self.base = p.stdout.strip()
        if p.returncode != 0 or not self.base:
            shutil.rmtree(self.tmp, ignore_errors=True)
            ports.give(self.port)
            raise RuntimeError("pg_start failed: %s" % p.stderr[-2000:])
        self.data = os.path.join(self.base, "data")
        track(self)
        if conf or hba:
            if conf:
                self._append(os.path.join(self.data, "postgresql.conf"), "\n".join(conf) + "\n")
            if hba:
                path = os.path.join(self.data, "pg_hba.conf")
                with open(path) as f:
                    old = f.read()
                self._write(path, "\n".join(hba) + "\n" + old)
            self.restart()

    @staticmethod
    def _append(path, text):
        with open(path, "a") as f:
            f.write(text)

    @staticmethod
    def _write(path, text):
        with open(path, "w") as f:
            f.write(text)

    def conninfo(self, db="postgres", user="postgres"):
        return "host=%s port=%d user=%s dbname=%s" % (self.base, self.port, user, db)

    def sql(self, q, db="postgres", user="postgres", check=True, timeout=120):
        p = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.base,
                            "-p", str(self.port), "-U", user, "-d", db, "-c", q],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("psql failed: %s" % p.stderr.strip()[-1000:])
        return p.stdout.strip()

    def pg_ctl(self, *args, check=True):
        p = subprocess.run(as_owner([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data] + list(args)),
                           capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError("pg_ctl %s failed: %s %s" % (" ".join(args), p.stdout, p.stderr))
        return p

    def stop_immediate(self):
        self.pg_ctl("-m", "immediate", "-w", "-t", "30", "stop")

    def start(self):
        self.pg_ctl("-l", os.path.join(self.base, "server.log"), "-w", "-t", "60", "start")

    def restart(self):
        self.pg_ctl("-l", os.path.join(self.base, "server.log"), "-m", "fast", "-w", "-t", "60",
                    "restart")

    def slot(self, name, db="postgres"):
        """The pg_replication_slots row of a slot as a dict, or None."""
        out = self.sql("SELECT row_to_json(s) FROM pg_replication_slots s WHERE slot_name = '%s'"
                       % name, db=db)
        return json.loads(out) if out else None

    def drop_slot(self, name):
        self.sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE slot_name = '%s'" % name, check=False)

    def close(self):
        untrack(self)
        if os.path.isdir(self.base):
            subprocess.run(["bash", "-c", '. "$1"; pg_stop "$2"', "pg-stop", PG_SH, self.base],
                           capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        ports.give(self.port)


class Standby(Cluster):
    """A streaming physical standby of primary (pg_basebackup -R), in
    recovery until promote()."""

    def __init__(self, primary):  # noqa: D107 - Cluster's own set-up is not wanted
        self.port = ports.take()
        self.tmp = tempfile.mkdtemp(prefix="pgcdc-standby-")
        os.chmod(self.tmp, 0o755)
        self.base = os.path.join(self.tmp, "pg")
        os.mkdir(self.base)
        os.chmod(self.base, 0o755)
        if os.getuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.data = os.path.join(self.base, "data")
        track(self)
        p = subprocess.run(as_owner([os.path.join(PG_BIN, "pg_basebackup"), "-h", primary.base,
                                     "-p", str(primary.port), "-U", "postgres", "-D", self.data,
                                     "-R", "-X", "stream", "-c", "fast"]),
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("pg_basebackup failed: %s" % p.stderr[-2000:])
        conf = os.path.join(self.data, "postgresql.conf")
        self._append(conf, "port = %d\nunix_socket_directories = '%s'\nhot_standby = on\n"
                     % (self.port, self.base))
        self.start()

    def promote(self):
        self.pg_ctl("-w", "-t", "60", "promote")


# ---- pgcdc -------------------------------------------------------------------

class Server(Pgcdc):
    """A pgcdc against a private cluster, on a port of ours, cleaned up at
    exit.  postgres / server: config keys merged over the defaults."""

    def __init__(self, cluster, slot, postgres=None, server=None, db="postgres", args=()):
        port = ports.take()
        extra = {"postgres": {"conninfo": cluster.conninfo(db), "status_interval": "1",
                              "reconnect_max": "2"},
                 "server": {"listen": "127.0.0.1:%d" % port}}
        extra["postgres"].update(postgres or {})
        extra["server"].update(server or {})
        super().__init__(extra=extra, slot=slot, args=args)
        self.port = port
        track(self)

    def kill(self):
        """SIGKILL, and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc and not self.logf.closed:
            self.logf.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def health(self):
        st, body = http_get(self.port, "/health")
        try:
            return st, json.loads(body)
        except ValueError:
            return st, {"raw": body}

    def metric(self, name):
        st, body = http_get(self.port, "/metrics")
        for line in body.split("\n"):
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError("metric %s not in /metrics" % name)

    def vm(self, key):
        """A /proc/<pid>/status value in KiB (VmHWM, VmRSS)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise AssertionError("%s missing from /proc status" % key)

    def tail(self, n=1500):
        return self.logtext()[-n:]

    def wait_log(self, pattern, timeout=10):
        """Waits for a log line matching the regex; returns it."""
        rx = re.compile(pattern, re.I)
        deadline = time.time() + timeout
        while True:
            for line in self.logtext().split("\n"):
                if rx.search(line):
                    return line
            if time.time() > deadline:
                return None
            time.sleep(0.1)

    def wait_health(self, streaming, timeout=15):
        """Waits until /health does (or does not) say streaming; returns the
        last (status, body)."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.health()
                if (last[1].get("replication") == "streaming") == streaming:
                    return last
            except OSError as e:
                last = (None, {"error": str(e)})
            time.sleep(0.05)
        raise AssertionError("health never %s streaming (last %s); log: %s"
                             % ("became" if streaming else "stopped", last, self.tail()))

    def close(self):
        untrack(self)
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        ports.give(self.port)


# ---- inserting numbered rows -------------------------------------------------

class Inserter(threading.Thread):
    """Inserts 1, 2, 3, ... into table(id), one transaction each, through
    one psql session, for as long as it runs.  When PostgreSQL goes away
    it keeps trying to reconnect; a number whose insert got no answer is
    skipped (it may or may not have committed: the table says)."""

    def __init__(self, cluster, table, pause=0.003, db="postgres", first=1):
        super().__init__(daemon=True)
        self.cluster, self.table, self.pause, self.db = cluster, table, pause, db
        self.n = first
        self.acked = []
        self.failures = 0
        self.halt = threading.Event()
        self.proc = None
        track(self)

    def _open(self):
        c = self.cluster
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-At", "-h", c.base, "-p", str(c.port),
                                      "-U", "postgres", "-d", self.db],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def _drop(self):
        if self.proc:
            try:
                self.proc.kill()
                self.proc.wait()
            except OSError:
                pass
        self.proc = None

    def run(self):
        while not self.halt.is_set():
            if self.proc is None:
                self._open()
            n = self.n
            self.n += 1
            # psql reading a pipe does not exit when the server goes away, it
            # just prints nothing: the \echo says the statement is over
            lines = []
            try:
                self.proc.stdin.write("INSERT INTO %s VALUES (%d) RETURNING id;\n\\echo .\n"
                                      % (self.table, n))
                self.proc.stdin.flush()
                while True:
                    line = self.proc.stdout.readline()
                    if not line or line == ".\n":
                        break
                    lines.append(line.strip())
            except (OSError, ValueError):
                pass
            if lines == [str(n)]:
                self.acked.append(n)
                if self.pause:
                    time.sleep(self.pause)
            else:
                self.failures += 1
                self._drop()
                time.sleep(0.1)
        self._drop()

    def last(self):
        return self.acked[-1] if self.acked else 0

    def wait_count(self, count, timeout=20):
        deadline = time.time() + timeout
        while len(self.acked) < count:
            if time.time() > deadline:
                raise AssertionError("only %d inserts acknowledged" % len(self.acked))
            time.sleep(0.02)

    def close(self):
        untrack(self)
        self.halt.set()
        if self.is_alive():
            self.join(15)
        self._drop()


# ---- a fast raw WebSocket reader ---------------------------------------------

class FastReader(threading.Thread):
    """Reads a pgcdc stream on a plain socket as fast as Python can: frames
    are parsed by hand and each payload is given to on_frame(bytes), which
    must be quick.  Pings are answered; a close frame ends it (close_code)."""

    def __init__(self, port, path, on_frame):
        super().__init__(daemon=True)
        self.port, self.path, self.on_frame = port, path, on_frame
        self.close_code = None
        self.error = None
        self.frames = 0
        self.done = threading.Event()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = self.sock.recv(4096)
            if not b:
                raise AssertionError("closed during the handshake: %r" % head[:200])
            head += b
        head, _, self.rest = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError("upgrade refused: %r" % head[:200])
        self.sock.settimeout(None)
        track(self)

    def _pong(self, payload):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)

    def run(self):
        buf = bytearray(self.rest)
        off = 0
        on_frame = self.on_frame
        try:
            while True:
                # parse every complete frame in buf
                while True:
                    avail = len(buf) - off
                    if avail < 2:
                        break
                    b0, b1 = buf[off], buf[off + 1]
                    ln = b1 & 0x7F
                    hl = 2
                    if ln == 126:
                        if avail < 4:
                            break
                        ln = (buf[off + 2] << 8) | buf[off + 3]
                        hl = 4
                    elif ln == 127:
                        if avail < 10:
                            break
                        ln = int.from_bytes(buf[off + 2:off + 10], "big")
                        hl = 10
                    if avail < hl + ln:
                        break
                    payload = bytes(buf[off + hl:off + hl + ln])
                    off += hl + ln
                    op = b0 & 0x0F
                    if op == 1:
                        self.frames += 1
                        on_frame(payload)
                    elif op == 9:
                        self._pong(payload)
                    elif op == 8:
                        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        return
                if off > (1 << 20):
                    del buf[:off]
                    off = 0
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    self.close_code = self.close_code or 1006
                    return
                buf += chunk
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.done.set()

    def close(self):
        untrack(self)
        try:
            self.sock.close()
        except OSError:
            pass
