"""wsraw.py -- a raw-socket WebSocket client for pgcdc's conformance suite.

It does the HTTP upgrade by hand with whatever request line and headers the
caller wants, then sends any frame at all: any FIN/RSV bits, any opcode, any
payload, the length in 7-, 16- or 64-bit form (also non-minimal, or a length
that lies about the payload), masked with a chosen key or unmasked, and the
bytes may be written one at a time with a delay in between.  It reads the
server's frames strictly: server frames must be unmasked and use the
shortest length encoding (RFC 6455 5.1, 5.2), anything else raises
ProtocolViolation.  A TCP close (FIN or reset) is reported as PeerClosed.

Standard library only; run with /usr/bin/python3.
"""
import base64
import errno
import hashlib
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

RSV1, RSV2, RSV3 = 0x4, 0x2, 0x1     # as the 3-bit field rsv


class ProtocolViolation(Exception):
    """The server sent something RFC 6455 forbids a server to send."""


class PeerClosed(Exception):
    """The TCP connection ended (FIN or reset) before what we waited for."""


class Timeout(Exception):
    """Nothing (or not enough) arrived in time."""


def accept_for(key):
    """The Sec-WebSocket-Accept value a server must answer for key (str)."""
    digest = hashlib.sha1(key.encode("latin-1") + GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key(nbytes=16):
    return base64.b64encode(os.urandom(nbytes)).decode("ascii")


def build_request(path="/", headers=(), method="GET", version="HTTP/1.1"):
    """Request bytes from a list of (name, value) pairs, sent as given."""
    lines = ["%s %s %s" % (method, path, version)]
    for name, value in headers:
        lines.append("%s: %s" % (name, value))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_headers(host="127.0.0.1", key=None, version="13", extra=()):
    """The usual upgrade headers, plus extra pairs appended at the end."""
    return [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key or new_key()),
            ("Sec-WebSocket-Version", version)] + list(extra)


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=None,
                length_form=None, length=None):
    """One frame's bytes.

    rsv: the 3-bit RSV field (RSV1 = 4).  mask: False sends the payload in
    clear with the MASK bit unset.  key: 4 mask bytes (random by default).
    length_form: None for the shortest form, or 7, 16, 64 to force one
    (the 7-bit form of a long payload is an error of the caller).
    length: a declared length different from len(payload)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    form = length_form
    if form is None:
        form = 7 if n <= 125 else (16 if n <= 0xFFFF else 64)
    if form == 7:
        if n > 125:
            raise ValueError("7-bit length form holds at most 125")
        head = struct.pack("!BB", b0, mbit | n)
    elif form == 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    elif form == 64:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    else:
        raise ValueError("length_form must be 7, 16 or 64")
    if not mask:
        return head + payload
    if key is None:
        key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(data, key):
    """XOR with the 4-byte key (RFC 6455 5.3); fast for large payloads."""
    if not data:
        return b""
    n = len(data)
    reps = (key * (n // 4 + 1))[:n]
    x = int.from_bytes(data, "big") ^ int.from_bytes(reps, "big")
    return x.to_bytes(n, "big")


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


class HttpResponse:
    def __init__(self, status, reason, headers, body, raw):
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (name, value), order kept
        self.body = body
        self.raw = raw

    def get(self, name):
        """First value of a header (case-insensitive name) or None."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def __repr__(self):
        return "HTTP %d %r" % (self.status, self.raw[:300])


class Frame:
    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    def __iter__(self):
        return iter((self.fin, self.rsv, self.opcode, self.payload))

    def __repr__(self):
        return "Frame(fin=%d rsv=%d op=%d len=%d %r)" % (
            self.fin, self.rsv, self.opcode, len(self.payload), self.payload[:40])


class WsRaw:
    """One client connection.  All waits are bounded by timeouts."""

    def __init__(self, host, port, timeout=5.0, rcvbuf=None):
        self.host, self.port = host, port
        self.timeout = timeout
        if rcvbuf:
            # set before connecting so that the window starts small
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False            # FIN or reset seen
        self.reset = False          # ... it was a reset
        self.send_error = None      # first error a send hit, if any
        self.server_pings = []      # payloads of pings skipped by next_frame

    # ---- sending ------------------------------------------------------

    def send(self, data, chunk=None, delay=0.0):
        """Writes data, all at once or in chunk-byte pieces with delay
        seconds between them.  A write error (the server already closed)
        is recorded in send_error and returned as False, not raised: the
        caller usually wants to read the close frame that came before."""
        try:
            if not chunk:
                self.sock.sendall(data)
            else:
                for i in range(0, len(data), chunk):
                    self.sock.sendall(data[i:i + chunk])
                    if delay:
                        time.sleep(delay)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as e:
            if self.send_error is None:
                self.send_error = e
            return False

    def send_frame(self, opcode, payload=b"", chunk=None, delay=0.0, **kw):
        return self.send(build_frame(opcode, payload, **kw), chunk, delay)

    def send_close(self, code=None, reason=b"", **kw):
        return self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    # ---- receiving ----------------------------------------------------

    def _fill(self, deadline):
        """Reads more bytes into buf; raises PeerClosed or Timeout."""
        if self.eof:
            raise PeerClosed("reset by peer" if self.reset else "closed by peer")
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("timed out") from None
        except ConnectionResetError:
            self.eof = self.reset = True
            raise PeerClosed("reset by peer") from None
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                self.eof = self.reset = True
                raise PeerClosed("reset by peer") from None
            raise
        if not data:
            self.eof = True
            raise PeerClosed("closed by peer")
        self.buf += data

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)

    def _take(self, n):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_http(self, timeout=None):
        """Reads one HTTP response head, and its body when Content-Length
        says so (or, for a non-101 without it, until close).  Bytes after
        it stay in buf for the frame reader."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n\r\n" not in self.buf:
            try:
                self._fill(deadline)
            except PeerClosed:
                raise PeerClosed("closed before a full response head; got %r" % self.buf[:200]) from None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolViolation("bad status line %r" % lines[0])
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolViolation("bad header line %r" % line)
            headers.append((name.strip(), value.strip()))
        resp = HttpResponse(status, parts[2] if len(parts) > 2 else "", headers, b"", head + b"\r\n\r\n")
        if status == 101:
            return resp
        clen = resp.get("Content-Length")
        if clen is not None:
            self._need(int(clen), deadline)
            resp.body = self._take(int(clen))
        else:
            try:
                while True:
                    self._fill(deadline)
            except (PeerClosed, Timeout):
                pass
            resp.body, self.buf = self.buf, b""
        resp.raw += resp.body
        return resp

    def handshake(self, path="/ws", headers=None, method="GET", version="HTTP/1.1",
                  extra=b"", chunk=None, delay=0.0, timeout=None):
        """Sends an upgrade request (extra bytes appended in the same write)
        and returns the HttpResponse.  headers default to upgrade_headers();
        the key used is kept in self.key."""
        if headers is None:
            headers = upgrade_headers()
        self.key = None
        for k, v in headers:
            if k.lower() == "sec-websocket-key":
                self.key = v
        self.send(build_request(path, headers, method, version) + extra, chunk, delay)
        return self.read_http(timeout)

    def read_frame(self, timeout=None):
        """Reads one server frame as Frame(fin, rsv, opcode, payload)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise ProtocolViolation("server frame is masked: %r" % self.buf[:14])
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            hl = 4
            self._need(hl, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            if n <= 125:
                raise ProtocolViolation("server used a 16-bit length for %d bytes" % n)
        elif n == 127:
            hl = 10
            self._need(hl, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            if n <= 0xFFFF:
                raise ProtocolViolation("server used a 64-bit length for %d bytes" % n)
        self._need(hl + n, deadline)
        self._take(hl)
        payload = self._take(n)
        return Frame((b0 >> 7) & 1, (b0 >> 4) & 7, b0 & 0xF, payload)

    def next_frame(self, timeout=None, answer_pings=False):
        """Like read_frame, but server pings are skipped (their payloads
        are kept in server_pings), answered with a pong when asked."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f.opcode != OP_PING:
                return f
            self.server_pings.append(f.payload)
            if answer_pings:
                self.send_frame(OP_PONG, f.payload)

    def read_close(self, timeout=None):
        """Waits for a close frame, failing on any other frame (server pings
        aside).  Returns (code, reason bytes); code None for an empty close
        payload.  Raises PeerClosed if TCP ends first."""
        f = self.next_frame(timeout)
        if f.opcode != OP_CLOSE:
            raise ProtocolViolation("expected a close frame, got %r" % f)
        check_server_frame(f)
        if len(f.payload) == 0:
            return None, b""
        if len(f.payload) == 1:
            raise ProtocolViolation("server close payload of 1 byte")
        return struct.unpack("!H", f.payload[:2])[0], f.payload[2:]

    def wait_tcp_close(self, timeout=None):
        """True once the server ends TCP (FIN or reset) within timeout.  Any
        bytes arriving meanwhile are discarded (kept in self.late)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self.late = b""
        while True:
            try:
                self._fill(deadline)
            except PeerClosed:
                self.late += self.buf
                self.buf = b""
                return True
            except Timeout:
                return False
            self.late += self.buf
            self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def check_server_frame(f):
    """Structural rules for any server frame (RFC 6455 5.2, 5.5)."""
    if f.rsv:
        raise ProtocolViolation("server frame has RSV bits %d" % f.rsv)
    if f.opcode >= 8 and (not f.fin or len(f.payload) > 125):
        raise ProtocolViolation("bad server control frame %r" % f)
