"""conformance.py -- WebSocket and HTTP protocol conformance of pgcdc.

Checks docs/protocol.md's HTTP and WebSocket sections (RFC 6455) case by case with
a raw client (wsraw.py) that can send any bytes, in the manner of the
Autobahn test suite's case families that apply to a server which only
receives control frames: handshake, framing, ping/pong, reserved bits and
opcodes, fragmentation, UTF-8, close, masking, message size, HTTP limits.
Every case asserts the exact outcome (close code, pong payload, HTTP status
and headers) and that TCP is closed where it must be.

Besides the main instance, three more are started: ping_interval = 1
(server pings, dropping silent clients), max_clients = 2 (capacity and
slow-loris), and one each for shutdown (1001) and slow consumers (1013).

Run by test.sh with /usr/bin/python3 (PGHOST/PGPORT/PGUSER name the
database, PGCDC the binary).  Arguments, if any, select families: handshake
framing ping reserved fragmentation utf8 close masking size robust http
server.  CONF_TARGET=host:port runs the frame-level families against a
server that is already running (no database needed) instead of starting
pgcdc.
"""
import json
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import rss_kib  # noqa: E402
import wsraw  # noqa: E402
from wsraw import (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING,  # noqa: E402
                   OP_PONG, RSV1, RSV2, RSV3, PeerClosed, Timeout)

HOST = "127.0.0.1"
TABLE = "conf_t"
WS_PATH = "/ws?query=*:%s" % TABLE
MAX_MESSAGE = 64 * 1024


class Target:
    """Where the cases connect; port of the instance under test."""

    def __init__(self, port):
        self.port = port
        self.pid = None            # of the pgcdc under test, when known


T = Target(0)


# ==== helpers ================================================================

def connect(port=None, timeout=5.0, rcvbuf=None):
    return wsraw.WsRaw(HOST, port or T.port, timeout, rcvbuf)


def describe(f):
    if f.opcode == OP_CLOSE and len(f.payload) >= 2:
        return "close %d %r" % (struct.unpack("!H", f.payload[:2])[0], f.payload[2:60])
    return repr(f)


def check_101(resp, key):
    """A valid RFC 6455 server handshake for key, choosing nothing."""
    assert resp.status == 101, "expected 101, got %r" % resp
    assert resp.raw.startswith(b"HTTP/1.1 101 "), "status line %r" % resp.raw[:40]
    up = resp.get("Upgrade")
    assert up is not None and up.lower() == "websocket", "Upgrade header: %r" % up
    conn = resp.get("Connection") or ""
    assert "upgrade" in [t.strip().lower() for t in conn.split(",")], "Connection header: %r" % conn
    acc = resp.get("Sec-WebSocket-Accept")
    assert acc == wsraw.accept_for(key), "Sec-WebSocket-Accept %r, expected %r" % (acc, wsraw.accept_for(key))
    assert resp.get("Sec-WebSocket-Protocol") is None, "a subprotocol was chosen: %r" % resp
    assert resp.get("Sec-WebSocket-Extensions") is None, "an extension was accepted: %r" % resp
    assert len(resp.all("Sec-WebSocket-Accept")) == 1, "Sec-WebSocket-Accept repeated"


def open_ws(port=None, path=WS_PATH, extra_headers=(), extra=b"", chunk=None, delay=0.0, rcvbuf=None):
    """A connection upgraded to WebSocket, handshake checked."""
    ws = connect(port, rcvbuf=rcvbuf)
    key = wsraw.new_key()
    resp = ws.handshake(path, wsraw.upgrade_headers(key=key, extra=extra_headers),
                        extra=extra, chunk=chunk, delay=delay)
    check_101(resp, key)
    return ws


def expect_pong(ws, payload, timeout=5.0):
    try:
        f = ws.next_frame(timeout)
    except PeerClosed as e:
        raise AssertionError("connection closed (%s) while waiting for pong %r" % (e, payload[:20])) from None
    except Timeout:
        raise AssertionError("no pong for ping %r within %.0f s" % (payload[:20], timeout)) from None
    assert f.opcode == OP_PONG, "expected pong, got %s" % describe(f)
    wsraw.check_server_frame(f)
    assert f.payload == payload, "pong payload %r, expected %r" % (f.payload[:40], payload[:40])


def alive(ws):
    """The connection is open and in a sane state: a ping gets its pong."""
    payload = os.urandom(8)
    ws.send_frame(OP_PING, payload)
    expect_pong(ws, payload)


def expect_close(ws, codes, reply=True, tcp_timeout=5.0, timeout=5.0):
    """Waits for the server's close frame; its code must be in codes (None
    stands for an empty payload).  Then, as a well-behaved peer, answers
    with a close (unless reply is False) and requires the server to end
    TCP.  Returns the code."""
    try:
        code, reason = ws.read_close(timeout)
    except PeerClosed as e:
        raise AssertionError("TCP ended (%s) without a close frame; expected %s" % (e, sorted(codes, key=str))) from None
    except Timeout:
        raise AssertionError("no close frame within %.0f s; expected %s" % (timeout, sorted(codes, key=str))) from None
    assert code in codes, "close code %s (reason %r), expected %s" % (code, reason[:60], sorted(codes, key=str))
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError("server close reason is not UTF-8: %r" % reason) from None
    if reply:
        ws.send_close(code if code is not None else None)
    assert ws.wait_tcp_close(tcp_timeout), "TCP still open %.0f s after the close" % tcp_timeout
    assert ws.late == b"", "bytes after the close frame: %r" % ws.late[:80]
    return code


def expect_fail(ws, code):
    expect_close(ws, {code})


def ws_case(body):
    """A case on a fresh upgraded connection on the main instance."""
    def run():
        ws = open_ws()
        try:
            body(ws)
        finally:
            ws.close()
    return run


def send_expect_fail(frames, code):
    """Sends frames (bytes, concatenated in one write) and expects close code."""
    def body(ws):
        ws.send(b"".join(frames))
        expect_fail(ws, code)
    return ws_case(body)


def send_expect_alive(frames, chunk=None):
    def body(ws):
        ws.send(b"".join(frames), chunk=chunk, delay=0.0005 if chunk else 0.0)
        alive(ws)
    return ws_case(body)


F = wsraw.build_frame


def http_case(request, statuses, headers=None, close=False, body_check=True):
    """Sends raw request bytes; the status must be in statuses, the named
    headers must be present with those values (case-insensitive compare),
    and, when close is set, the server must then end TCP."""
    def run():
        c = connect()
        try:
            c.send(request)
            resp = c.read_http()
            check_http(resp, statuses, headers, body_check)
            if close:
                assert c.wait_tcp_close(5), "TCP still open after %d" % resp.status
        finally:
            c.close()
    return run


def check_http(resp, statuses, headers=None, body_check=True):
    assert resp.status in statuses, "status %d, expected %s: %r" % (resp.status, sorted(statuses), resp.raw[:300])
    for name, value in (headers or {}).items():
        got = resp.get(name)
        assert got is not None and got.lower() == value.lower(), \
            "header %s: %r, expected %r" % (name, got, value)
    if body_check and resp.status >= 400:
        ctype = (resp.get("Content-Type") or "").lower()
        assert ctype.startswith("text/plain"), "error Content-Type %r" % ctype
        text = resp.body.decode("utf-8", "replace").rstrip("\r\n")
        assert text and "\n" not in text, "error body is not one line: %r" % resp.body[:200]


def upgrade_request(path=WS_PATH, headers=None, drop=(), replace=None, extra=(),
                    method="GET", version="HTTP/1.1"):
    """An upgrade request with headers dropped (by lower-case name) or
    replaced ({lower-case name: value}); extra pairs appended."""
    hs = headers if headers is not None else wsraw.upgrade_headers()
    out = []
    for k, v in hs:
        lk = k.lower()
        if lk in drop:
            continue
        if replace and lk in replace:
            v = replace[lk]
        out.append((k, v))
    return wsraw.build_request(path, out + list(extra), method, version)


# ==== handshake ==============================================================

def hs_valid():
    ws = open_ws()
    try:
        alive(ws)
    finally:
        ws.close()


def hs_offers_ignored():
    ws = open_ws(extra_headers=[
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")])
    try:
        alive(ws)
    finally:
        ws.close()


def hs_headers(headers, extra_frames=b""):
    """A request with exactly these headers must upgrade."""
    def run():
        ws = connect()
        try:
            key = None
            for k, v in headers:
                if k.lower() == "sec-websocket-key":
                    key = v.strip()
            resp = ws.handshake(WS_PATH, headers, extra=extra_frames)
            check_101(resp, key)
            alive(ws)
        finally:
            ws.close()
    return run


def odd_case_headers():
    key = wsraw.new_key()
    return [("hOsT", "127.0.0.1"), ("uPgRaDe", "WebSocket"), ("cOnNeCtIoN", "uPgRaDe"),
            ("sec-websocket-key", key), ("SEC-WEBSOCKET-VERSION", "13")]


def hs_byte_by_byte():
    ws = open_ws(chunk=1, delay=0.002)
    try:
        alive(ws)
    finally:
        ws.close()


def hs_pipelined_ping():
    payload = b"pipelined"
    ws = connect()
    try:
        key = wsraw.new_key()
        resp = ws.handshake(WS_PATH, wsraw.upgrade_headers(key=key),
                            extra=F(OP_PING, payload))
        check_101(resp, key)
        expect_pong(ws, payload)
    finally:
        ws.close()


def hs_pipelined_text_and_ping():
    ws = connect()
    try:
        key = wsraw.new_key()
        resp = ws.handshake(WS_PATH, wsraw.upgrade_headers(key=key),
                            extra=F(OP_TEXT, "hello") + F(OP_PING, b"p2"))
        check_101(resp, key)
        expect_pong(ws, b"p2")
    finally:
        ws.close()


def hs_pipelined_then(extra, codes, reply=True):
    def run():
        ws = connect()
        try:
            key = wsraw.new_key()
            resp = ws.handshake(WS_PATH, wsraw.upgrade_headers(key=key), extra=extra)
            check_101(resp, key)
            expect_close(ws, codes, reply=reply)
        finally:
            ws.close()
    return run


def hs_large_ok():
    # well under the 8 KiB limit, with many header lines
    pad = [("X-Pad-%d" % i, "v" * 60) for i in range(90)]
    ws = connect()
    try:
        key = wsraw.new_key()
        resp = ws.handshake(WS_PATH, wsraw.upgrade_headers(key=key, extra=pad))
        assert len(resp.raw) > 0
        check_101(resp, key)
        alive(ws)
    finally:
        ws.close()


def hs_too_large_unfinished():
    """Over 8 KiB of headers without the blank line: 431 at once, not
    after the 10 s request timeout."""
    c = connect()
    try:
        req = upgrade_request(extra=[("X-Pad", "a" * 9000)])
        c.send(req[:-2])         # no final CRLF: the head never ends
        t0 = time.monotonic()
        try:
            resp = c.read_http(timeout=5)
        except Timeout:
            raise AssertionError("no answer within 5 s to an unfinished 9 KiB head") from None
        check_http(resp, {431})
        assert time.monotonic() - t0 < 5
        assert c.wait_tcp_close(5), "TCP still open after 431"
    finally:
        c.close()


def handshake_cases():
    key15 = wsraw.new_key(15)
    key17 = wsraw.new_key(17)
    up426 = {426, 400}
    cases = [
        ("handshake: valid upgrade gives 101 with the right accept", hs_valid),
        ("handshake: offered subprotocol and permessage-deflate are not chosen", hs_offers_ignored),
        ("handshake: header names and values in odd case", hs_headers(odd_case_headers())),
        ("handshake: Connection: keep-alive, Upgrade", hs_headers(
            [(k, "keep-alive, Upgrade" if k == "Connection" else v) for k, v in wsraw.upgrade_headers()])),
        ("handshake: Connection: Upgrade,keep-alive without spaces", hs_headers(
            [(k, "upgrade,keep-alive" if k == "Connection" else v) for k, v in wsraw.upgrade_headers()])),
        ("handshake: extra whitespace around header values", hs_headers(
            [(k, "  %s  " % v) for k, v in wsraw.upgrade_headers()])),
        ("handshake: headers in reverse order, with unrelated headers",
         hs_headers(list(reversed(wsraw.upgrade_headers(extra=[("User-Agent", "conformance"), ("Accept", "*/*")]))))),
        ("handshake: request sent byte by byte", hs_byte_by_byte),
        ("handshake: ping in the same write as the request is answered", hs_pipelined_ping),
        ("handshake: text and ping in the same write as the request", hs_pipelined_text_and_ping),
        ("handshake: unmasked frame in the same write as the request: 101 then 1002",
         hs_pipelined_then(F(OP_TEXT, "clear", mask=False), {1002})),
        ("handshake: close in the same write as the request: 101 then the echo",
         hs_pipelined_then(F(OP_CLOSE, wsraw.close_payload(1000)), {1000}, reply=False)),
        ("handshake: 7 KiB of headers is accepted", hs_large_ok),
        ("handshake: plain GET /ws gives 426 with Upgrade: websocket",
         http_case(wsraw.build_request(WS_PATH, [("Host", HOST)]), {426}, {"Upgrade": "websocket"})),
        ("handshake: missing Upgrade header gives 426 with Upgrade: websocket",
         http_case(upgrade_request(drop=("upgrade",)), {426}, {"Upgrade": "websocket"})),
        ("handshake: Upgrade: h2c gives 426/400",
         http_case(upgrade_request(replace={"upgrade": "h2c"}), up426)),
        ("handshake: missing Connection header gives 426/400",
         http_case(upgrade_request(drop=("connection",)), up426)),
        ("handshake: Connection: keep-alive only gives 426/400",
         http_case(upgrade_request(replace={"connection": "keep-alive"}), up426)),
        ("handshake: missing Sec-WebSocket-Key gives 400/426",
         http_case(upgrade_request(drop=("sec-websocket-key",)), up426)),
        ("handshake: Sec-WebSocket-Key not base64 gives 400",
         http_case(upgrade_request(replace={"sec-websocket-key": "not base64 at all!!!!!!"}), {400})),
        ("handshake: Sec-WebSocket-Key decoding to 15 bytes gives 400",
         http_case(upgrade_request(replace={"sec-websocket-key": key15}), {400})),
        ("handshake: Sec-WebSocket-Key decoding to 17 bytes gives 400",
         http_case(upgrade_request(replace={"sec-websocket-key": key17}), {400})),
        ("handshake: Sec-WebSocket-Key with padding inside gives 400",
         http_case(upgrade_request(replace={"sec-websocket-key": "dGhlIHNh=XBsZSBub25jZQ=="}), {400})),
        ("handshake: empty Sec-WebSocket-Key gives 400",
         http_case(upgrade_request(replace={"sec-websocket-key": ""}), {400, 426})),
        ("handshake: Sec-WebSocket-Version 8 gives 426 with Sec-WebSocket-Version: 13",
         http_case(upgrade_request(replace={"sec-websocket-version": "8"}), {426},
                   {"Sec-WebSocket-Version": "13"})),
        ("handshake: Sec-WebSocket-Version 14 gives 426 with Sec-WebSocket-Version: 13",
         http_case(upgrade_request(replace={"sec-websocket-version": "14"}), {426},
                   {"Sec-WebSocket-Version": "13"})),
        ("handshake: missing Sec-WebSocket-Version gives 426 (with version 13) or 400",
         hs_missing_version),
        ("handshake: HTTP/1.0 upgrade is refused (400/505)",
         http_case(upgrade_request(version="HTTP/1.0"), {400, 505})),
        ("handshake: garbage request line gives 400",
         http_case(b"\x01\x02garbage\x7f\r\n\r\n", {400})),
        ("handshake: request line without version gives 400",
         http_case(b"GET /ws\r\nHost: x\r\n\r\n", {400})),
        ("handshake: header line without colon gives 400",
         http_case(b"GET /ping HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", {400})),
        ("handshake: over 8 KiB of headers gives 431 and close",
         http_case(upgrade_request(extra=[("X-Pad-%d" % i, "b" * 100) for i in range(90)]), {431}, close=True)),
        ("handshake: over 8 KiB of headers gives 431 before the request ends", hs_too_large_unfinished),
        ("handshake: POST /ws gives 405",
         http_case(upgrade_request(method="POST"), {405})),
        ("handshake: upgrade on an unknown path gives 404",
         http_case(upgrade_request(path="/nope"), {404})),
        ("handshake: paths are case-sensitive (upgrade on /WS gives 404)",
         http_case(upgrade_request(path="/WS?query=*:%s" % TABLE), {404})),
        ("handshake: upgrade on /ws/ gives 404",
         http_case(upgrade_request(path="/ws/?query=*:%s" % TABLE), {404})),
        ("handshake: path checked before method (POST /nope gives 404)",
         http_case(upgrade_request(path="/nope", method="POST"), {404})),
        ("handshake: upgrade without query gives 400",
         http_case(upgrade_request(path="/ws"), {400})),
        ("handshake: GET /ping gives 200 pong", http_ping_case),
    ]
    return cases


def hs_missing_version():
    c = connect()
    try:
        c.send(upgrade_request(drop=("sec-websocket-version",)))
        resp = c.read_http()
        check_http(resp, {426, 400})
        if resp.status == 426:
            v = resp.get("Sec-WebSocket-Version")
            assert v == "13", "426 without Sec-WebSocket-Version: 13 (%r)" % v
    finally:
        c.close()


def http_ping_case():
    c = connect()
    try:
        c.send(wsraw.build_request("/ping", [("Host", HOST)]))
        resp = c.read_http()
        assert resp.status == 200 and resp.body.rstrip(b"\r\n") == b"pong", "got %r" % resp.raw[:200]
        assert (resp.get("Content-Type") or "").lower().startswith("text/plain"), resp.raw[:200]
    finally:
        c.close()


# ==== framing ================================================================

def framing_cases():
    cases = []
    for op, name in ((OP_TEXT, "text"), (OP_BINARY, "binary")):
        for n in (0, 1, 125, 126, 127, 128, 65535, 65536):
            payload = b"*" * n if op == OP_TEXT else bytes(i & 0xFF for i in range(n))
            cases.append(("framing: %s message of %d bytes" % (name, n),
                          send_expect_alive([F(op, payload)])))
        for n, form in ((0, 16), (5, 16), (125, 16), (5, 64), (200, 64), (65535, 64)):
            payload = b"x" * n
            cases.append(("framing: %s of %d bytes with a non-minimal %d-bit length" % (name, n, form),
                          send_expect_alive([F(op, payload, length_form=form)])))
    cases += [
        ("framing: text of 200 bytes sent in 1-byte writes",
         send_expect_alive([F(OP_TEXT, b"y" * 200)], chunk=1)),
        ("framing: binary of 130 bytes sent in 1-byte writes",
         send_expect_alive([F(OP_BINARY, bytes(range(130)))], chunk=1)),
        ("framing: 64-bit length form sent in 1-byte writes",
         send_expect_alive([F(OP_TEXT, b"z" * 300, length_form=64)], chunk=1)),
        ("framing: 50 small messages in one write",
         send_expect_alive([F(OP_TEXT, "m%d" % i) for i in range(50)])),
        ("framing: zero mask key is accepted",
         send_expect_alive([F(OP_TEXT, "zero key", key=b"\0\0\0\0")])),
        ("framing: 64-bit length with the top bit set gives 1002/1009", ws_case(
            lambda ws: (ws.send(struct.pack("!BBQ", 0x81, 0xFF, 1 << 63) + os.urandom(4)),
                        expect_close(ws, {1002, 1009})))),
    ]
    return cases


# ==== ping / pong ============================================================

def ten_pings(ws):
    payloads = [("ping-%d" % i).encode() for i in range(10)]
    ws.send(b"".join(F(OP_PING, p) for p in payloads))
    for p in payloads:
        expect_pong(ws, p)


def ping_chopped(ws):
    ws.send(F(OP_PING, b"chopped ping"), chunk=1, delay=0.002)
    expect_pong(ws, b"chopped ping")


def pong_ignored(ws):
    ws.send(F(OP_PONG, b"unsolicited") + F(OP_PONG, b"") + F(OP_PONG, b"p" * 125))
    alive(ws)


def ping_cases():
    every = bytes(range(125))
    return [
        ("ping: empty ping gets an empty pong", ws_case(
            lambda ws: (ws.send(F(OP_PING, b"")), expect_pong(ws, b"")))),
        ("ping: 125-byte ping gets the same 125 bytes back", ws_case(
            lambda ws: (ws.send(F(OP_PING, every)), expect_pong(ws, every)))),
        ("ping: binary payload with NUL and high bytes echoed", ws_case(
            lambda ws: (ws.send(F(OP_PING, b"\0\xff\x80\x00abc")), expect_pong(ws, b"\0\xff\x80\x00abc")))),
        ("ping: 126-byte ping gives 1002", send_expect_fail([F(OP_PING, b"q" * 126)], 1002)),
        ("ping: ping declaring 65536 bytes gives 1002",
         send_expect_fail([F(OP_PING, b"q" * 65536)], 1002)),
        ("ping: 10 pings in a row get 10 pongs in order", ws_case(ten_pings)),
        ("ping: unsolicited pongs are ignored", ws_case(pong_ignored)),
        ("ping: 126-byte pong gives 1002", send_expect_fail([F(OP_PONG, b"q" * 126)], 1002)),
        ("ping: ping sent in 1-byte writes", ws_case(ping_chopped)),
        ("ping: ping between text messages in one write", ws_case(
            lambda ws: (ws.send(F(OP_TEXT, "a") + F(OP_PING, b"mid") + F(OP_TEXT, "b")),
                        expect_pong(ws, b"mid"), alive(ws)))),
    ]


def server_pings(port):
    ws = open_ws(port)
    try:
        t0 = time.monotonic()
        times = []
        while time.monotonic() - t0 < 4.5:
            try:
                f = ws.read_frame(0.2)
            except Timeout:
                continue
            assert f.opcode == OP_PING, "unexpected frame %s" % describe(f)
            wsraw.check_server_frame(f)
            times.append(time.monotonic())
            ws.send_frame(OP_PONG, f.payload)
        assert len(times) >= 3, "%d server pings in 4.5 s with ping_interval=1" % len(times)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(0.5 <= g <= 2.0 for g in gaps), "ping gaps %s" % ["%.2f" % g for g in gaps]
    finally:
        ws.close()


def answering_stays(port):
    ws = open_ws(port)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.5:
            try:
                f = ws.next_frame(0.2, answer_pings=True)
                raise AssertionError("unexpected frame %s" % describe(f))
            except Timeout:
                pass
            except PeerClosed:
                raise AssertionError("dropped after %.1f s although it answered %d pings"
                                     % (time.monotonic() - t0, len(ws.server_pings))) from None
        assert len(ws.server_pings) >= 4, "only %d pings in 6.5 s" % len(ws.server_pings)
        alive(ws)
    finally:
        ws.close()


def silent_dropped(port):
    ws = open_ws(port)
    try:
        t0 = time.monotonic()
        frames = []
        while True:
            try:
                frames.append(ws.read_frame(max(0.0, 8.0 - (time.monotonic() - t0))))
            except PeerClosed:
                break
            except Timeout:
                raise AssertionError("silent client still connected after 8 s (frames: %s)"
                                     % [describe(f) for f in frames]) from None
        dt = time.monotonic() - t0
        assert 2.0 <= dt <= 6.0, "silent client dropped after %.1f s, expected about 3 (frames %s)" % (
            dt, [describe(f) for f in frames])
        for f in frames:
            wsraw.check_server_frame(f)
            assert f.opcode in (OP_PING, OP_CLOSE), "unexpected frame %s" % describe(f)
    finally:
        ws.close()


def data_only_client_stays(port):
    """A client that sends messages (and pings) but never a pong is not
    silent; it must not be dropped as a dead peer."""
    ws = open_ws(port)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.5:
            ws.send_frame(OP_TEXT, "still here")
            time.sleep(0.3)
            try:
                while True:
                    ws.next_frame(0.01)
            except Timeout:
                pass
            except PeerClosed:
                raise AssertionError("dropped after %.1f s although it kept sending"
                                     % (time.monotonic() - t0)) from None
        alive(ws)
    finally:
        ws.close()


# ==== reserved bits and opcodes ==============================================

def reserved_cases():
    cases = []
    for bit, name in ((RSV1, "RSV1"), (RSV2, "RSV2"), (RSV3, "RSV3")):
        cases.append(("rsv: %s on text gives 1002" % name,
                      send_expect_fail([F(OP_TEXT, "rsv", rsv=bit)], 1002)))
        cases.append(("rsv: %s on ping gives 1002" % name,
                      send_expect_fail([F(OP_PING, b"rsv", rsv=bit)], 1002)))
    cases += [
        ("rsv: all RSV bits on binary give 1002",
         send_expect_fail([F(OP_BINARY, b"\0\1", rsv=7)], 1002)),
        ("rsv: RSV1 on close gives 1002",
         send_expect_fail([F(OP_CLOSE, wsraw.close_payload(1000), rsv=RSV1)], 1002)),
        ("rsv: RSV2 on a continuation gives 1002",
         send_expect_fail([F(OP_TEXT, "a", fin=False), F(OP_CONT, "b", rsv=RSV2)], 1002)),
        ("rsv: RSV1 on an empty text after a valid one gives 1002",
         send_expect_fail([F(OP_TEXT, "ok"), F(OP_TEXT, "", rsv=RSV1)], 1002)),
    ]
    for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
        cases.append(("opcode: reserved opcode %d gives 1002" % op,
                      send_expect_fail([F(op, b"")], 1002)))
    cases += [
        ("opcode: reserved opcode 3 with payload after a valid text gives 1002",
         send_expect_fail([F(OP_TEXT, "ok"), F(3, b"reserved")], 1002)),
        ("opcode: reserved control opcode 11 with payload gives 1002",
         send_expect_fail([F(11, b"reserved")], 1002)),
    ]
    return cases


# ==== fragmentation ==========================================================

def frag_ping_between(ws):
    ws.send(F(OP_TEXT, "frag", fin=False))
    ws.send(F(OP_PING, b"between"))
    expect_pong(ws, b"between")
    ws.send(F(OP_CONT, "ment", fin=False) + F(OP_PONG, b"pong too") + F(OP_CONT, "ed"))
    alive(ws)


def frag_many_pings_chopped(ws):
    data = F(OP_TEXT, "a", fin=False)
    for i in range(5):
        data += F(OP_PING, b"p%d" % i) + F(OP_CONT, "b", fin=False)
    data += F(OP_CONT, "c")
    ws.send(data, chunk=1, delay=0.0005)
    for i in range(5):
        expect_pong(ws, b"p%d" % i)
    alive(ws)


def fragment(op, payload, sizes):
    """Frames carrying payload split into the given sizes (the rest last)."""
    frames, pos = [], 0
    parts = []
    for s in sizes:
        parts.append(payload[pos:pos + s])
        pos += s
    parts.append(payload[pos:])
    for i, p in enumerate(parts):
        frames.append(F(op if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1)))
    return frames


def fragmentation_cases():
    return [
        ("fragmentation: text in 2 fragments", send_expect_alive(fragment(OP_TEXT, b"hello world", [5]))),
        ("fragmentation: text in 100 one-byte fragments",
         send_expect_alive(fragment(OP_TEXT, b"f" * 100, [1] * 99))),
        ("fragmentation: binary in 3 fragments",
         send_expect_alive(fragment(OP_BINARY, bytes(range(256)), [100, 100]))),
        ("fragmentation: empty first, middle and last fragments",
         send_expect_alive([F(OP_TEXT, b"", fin=False), F(OP_CONT, b"x", fin=False),
                            F(OP_CONT, b"", fin=False), F(OP_CONT, b"")])),
        ("fragmentation: fragments with 16-bit lengths",
         send_expect_alive(fragment(OP_TEXT, b"L" * 1000, [300, 300]))),
        ("fragmentation: fragmented message sent in 1-byte writes",
         send_expect_alive(fragment(OP_TEXT, b"abcdefghij" * 3, [7, 7, 7]), chunk=1)),
        ("fragmentation: ping between fragments is answered, message ok", ws_case(frag_ping_between)),
        ("fragmentation: pings between fragments in 1-byte writes", ws_case(frag_many_pings_chopped)),
        ("fragmentation: two fragmented messages back to back",
         send_expect_alive(fragment(OP_TEXT, b"first", [2]) + fragment(OP_BINARY, b"second", [3]))),
        ("fragmentation: fragmented ping (FIN=0) gives 1002",
         send_expect_fail([F(OP_PING, b"a", fin=False), F(OP_CONT, b"b")], 1002)),
        ("fragmentation: fragmented pong (FIN=0) gives 1002",
         send_expect_fail([F(OP_PONG, b"a", fin=False), F(OP_CONT, b"b")], 1002)),
        ("fragmentation: fragmented close gives 1002",
         send_expect_fail([F(OP_CLOSE, wsraw.close_payload(1000), fin=False), F(OP_CONT, b"")], 1002)),
        ("fragmentation: fragmented ping inside a fragmented text gives 1002",
         send_expect_fail([F(OP_TEXT, b"a", fin=False), F(OP_PING, b"p", fin=False)], 1002)),
        ("fragmentation: continuation without start gives 1002",
         send_expect_fail([F(OP_CONT, b"orphan")], 1002)),
        ("fragmentation: non-final continuation without start gives 1002",
         send_expect_fail([F(OP_CONT, b"orphan", fin=False), F(OP_CONT, b"x")], 1002)),
        ("fragmentation: continuation after a complete message gives 1002",
         send_expect_fail([F(OP_TEXT, b"done"), F(OP_CONT, b"more")], 1002)),
        ("fragmentation: new text while a text is in progress gives 1002",
         send_expect_fail([F(OP_TEXT, b"a", fin=False), F(OP_TEXT, b"b")], 1002)),
        ("fragmentation: new binary while a text is in progress gives 1002",
         send_expect_fail([F(OP_TEXT, b"a", fin=False), F(OP_BINARY, b"b", fin=False)], 1002)),
        ("fragmentation: new text after a continuation in progress gives 1002",
         send_expect_fail([F(OP_BINARY, b"a", fin=False), F(OP_CONT, b"b", fin=False),
                           F(OP_TEXT, b"c")], 1002)),
    ]


# ==== UTF-8 ==================================================================

VALID_UTF8 = [
    ("2-byte", "κόσμε".encode()),
    ("3-byte", "€ 中文 ☃".encode()),
    ("4-byte", "𝄞 😀 𐍈".encode()),
    ("boundaries", b"\x00\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
                   b"\xef\xbf\xbd\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"),
]

INVALID_UTF8 = [
    ("overlong 2-byte C0 80", b"\xc0\x80"),
    ("overlong 2-byte C1 BF", b"\xc1\xbf"),
    ("overlong 3-byte E0 80 AF", b"\xe0\x80\xaf"),
    ("overlong 3-byte E0 9F BF", b"\xe0\x9f\xbf"),
    ("overlong 4-byte F0 80 80 AF", b"\xf0\x80\x80\xaf"),
    ("overlong 4-byte F0 8F BF BF", b"\xf0\x8f\xbf\xbf"),
    ("5-byte form F8 88 80 80 80", b"\xf8\x88\x80\x80\x80"),
    ("6-byte form FC 84 80 80 80 80", b"\xfc\x84\x80\x80\x80\x80"),
    ("high surrogate ED A0 80", b"\xed\xa0\x80"),
    ("low surrogate ED BF BF", b"\xed\xbf\xbf"),
    ("surrogate pair ED A0 BD ED B2 A9", b"\xed\xa0\xbd\xed\xb2\xa9"),
    ("above U+10FFFF F4 90 80 80", b"\xf4\x90\x80\x80"),
    ("F5 lead byte", b"\xf5\x80\x80\x80"),
    ("F7 BF BF BF", b"\xf7\xbf\xbf\xbf"),
    ("stray continuation 80", b"\x80"),
    ("stray continuation BF after ASCII", b"abc\xbf"),
    ("continuation run 80 81 82", b"\x80\x81\x82"),
    ("byte FE", b"\xfe"),
    ("byte FF", b"\xff"),
    ("FE FE FF FF", b"\xfe\xfe\xff\xff"),
    ("truncated 2-byte at end CE", "κόσμ".encode() + b"\xce"),
    ("truncated 3-byte at end E2 82", b"price \xe2\x82"),
    ("truncated 4-byte at end F0 9F 98", b"smile \xf0\x9f\x98"),
    ("lead byte followed by ASCII CE 41", b"\xceA"),
    ("3-byte lead cut by ASCII E2 82 41", b"\xe2\x82A"),
    ("valid text then an invalid byte", "κόσμε".encode() + b"\xed\xa0\x80" + b"edited"),
]


def utf8_splits(data):
    """Every 2-fragment split, then one fragment per byte, on one connection."""
    def body(ws):
        frames = [F(OP_TEXT, data)]
        for i in range(1, len(data)):
            frames += [F(OP_TEXT, data[:i], fin=False), F(OP_CONT, data[i:])]
        frames += fragment(OP_TEXT, data, [1] * (len(data) - 1))
        ws.send(b"".join(frames))
        alive(ws)
    return ws_case(body)


def utf8_fail_fast(first, rest, single_frame=False):
    """The invalid bytes are in what is sent first; the close must arrive
    before the rest of the message (or of the frame) is sent."""
    def body(ws):
        if single_frame:
            whole = F(OP_TEXT, first + rest, key=b"\x11\x22\x33\x44")
            cut = len(whole) - len(rest)
            ws.send(whole[:cut])
        else:
            ws.send(F(OP_TEXT, first, fin=False))
        code, reason = None, b""
        try:
            code, reason = ws.read_close(3)
        except Timeout:
            raise AssertionError("no close within 3 s while the message is unfinished "
                                 "(invalid UTF-8 not failed fast)") from None
        except PeerClosed as e:
            raise AssertionError("TCP ended (%s) without a close frame" % e) from None
        assert code == 1007, "close code %s %r, expected 1007" % (code, reason)
        ws.send_close(1007)
        assert ws.wait_tcp_close(5), "TCP still open after the close"
    return ws_case(body)


def utf8_cases():
    cases = []
    for name, data in VALID_UTF8:
        cases.append(("utf8: valid %s text split at every byte boundary" % name, utf8_splits(data)))
    for name, data in INVALID_UTF8:
        cases.append(("utf8: %s gives 1007" % name, send_expect_fail([F(OP_TEXT, data)], 1007)))
    cases += [
        ("utf8: sequence split across fragments then invalid gives 1007",
         send_expect_fail([F(OP_TEXT, b"ab\xe2", fin=False), F(OP_CONT, b"\x82A")], 1007)),
        ("utf8: sequence truncated by the final empty fragment gives 1007",
         send_expect_fail([F(OP_TEXT, b"ab\xce", fin=False), F(OP_CONT, b"")], 1007)),
        ("utf8: invalid byte in a middle continuation gives 1007",
         send_expect_fail([F(OP_TEXT, b"ok", fin=False), F(OP_CONT, b"\xff", fin=False),
                           F(OP_CONT, b"end")], 1007)),
        ("utf8: invalid bytes in a binary message are fine",
         send_expect_alive([F(OP_BINARY, b"\xff\xfe\xc0\x80\xed\xa0\x80")])),
        ("utf8: fail fast on FF in a non-final fragment",
         utf8_fail_fast(b"abc\xff", b"def")),
        ("utf8: fail fast on F4 90 (above U+10FFFF) in a non-final fragment",
         utf8_fail_fast("κόσμε".encode() + b"\xf4\x90", b"\x80\x80edited")),
        ("utf8: fail fast on ED A0 (surrogate) in a non-final fragment",
         utf8_fail_fast(b"x\xed\xa0", b"\x80")),
        ("utf8: fail fast on C0 in a non-final fragment",
         utf8_fail_fast(b"\xc0", b"\x80")),
        ("utf8: fail fast inside one frame whose payload is unfinished",
         utf8_fail_fast("κόσμε".encode() + b"\xf4\x90", b"\x80\x80" + b"e" * 40, single_frame=True)),
    ]
    return cases


# ==== close ==================================================================

def close_echo(code, reason=b"", expect=None, chunk=None):
    def body(ws):
        ws.send(F(OP_CLOSE, wsraw.close_payload(code, reason)), chunk=chunk,
                delay=0.001 if chunk else 0)
        # the server, having echoed, must end TCP by itself: no reply here
        expect_close(ws, expect or {code}, reply=False)
    return ws_case(body)


def close_then_data(ws):
    ws.send(F(OP_CLOSE, wsraw.close_payload(1000, "bye")) + F(OP_TEXT, "after close")
            + F(OP_PING, b"after close") + F(OP_CONT, b"garbage"))
    code, _ = ws.read_close(5)
    assert code == 1000, "close code %s, expected 1000" % code
    ws.send(F(OP_PING, b"later") + b"\xff" * 10)
    assert ws.wait_tcp_close(5), "TCP still open after the close"
    assert ws.late == b"", "frames after the close: %r" % ws.late[:80]


def ping_then_close(ws):
    """RFC 6455 5.5.2: a ping received before the close is answered; the
    pong goes out before the close echo."""
    ws.send(F(OP_PING, b"before close") + F(OP_CLOSE, wsraw.close_payload(1000)))
    expect_pong(ws, b"before close")
    expect_close(ws, {1000}, reply=False)


def close_mid_fragment(ws):
    ws.send(F(OP_TEXT, "unfinished", fin=False) + F(OP_CLOSE, wsraw.close_payload(1000)))
    expect_close(ws, {1000}, reply=False)


def fail_closes_tcp_unanswered(ws):
    """After a protocol error the server fails the connection (RFC 6455
    7.1.7): it must end TCP itself, not wait for the peer's close."""
    ws.send(F(OP_TEXT, "unmasked", mask=False))
    expect_close(ws, {1002}, reply=False, tcp_timeout=3)


def close_cases():
    cases = [
        ("close: empty close is answered (empty or 1000) and TCP closed",
         close_echo(None, expect={None, 1000})),
        ("close: 1-byte close payload gives 1002",
         send_expect_fail([F(OP_CLOSE, b"\x03")], 1002)),
        ("close: 1000 with a 123-byte reason is echoed",
         close_echo(1000, b"r" * 123)),
        ("close: 1000 with a 124-byte reason (126-byte payload) gives 1002",
         send_expect_fail([F(OP_CLOSE, wsraw.close_payload(1000, b"r" * 124))], 1002)),
        ("close: reason with valid multi-byte UTF-8 is accepted",
         close_echo(1000, "κόσμε 😀".encode())),
        ("close: reason with invalid UTF-8 gives 1007",
         send_expect_fail([F(OP_CLOSE, wsraw.close_payload(1000, b"bad \xff reason"))], 1007)),
        ("close: reason with a surrogate gives 1007",
         send_expect_fail([F(OP_CLOSE, wsraw.close_payload(1001, b"\xed\xa0\x80"))], 1007)),
        ("close: close sent in 1-byte writes is echoed",
         close_echo(1000, b"slow", chunk=1)),
        ("close: data after the close is ignored and TCP closed", ws_case(close_then_data)),
        ("close: close in the middle of a fragmented message is echoed", ws_case(close_mid_fragment)),
        ("close: ping then close in one write: pong, then the echo", ws_case(ping_then_close)),
        ("close: after a protocol error TCP is closed without waiting for the client",
         ws_case(fail_closes_tcp_unanswered)),
    ]
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        cases.append(("close: code %d is echoed" % code, close_echo(code)))
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        cases.append(("close: invalid code %d gives 1002" % code,
                      send_expect_fail([F(OP_CLOSE, wsraw.close_payload(code))], 1002)))
    return cases


# ==== masking and size =======================================================

def masking_cases():
    return [
        ("masking: unmasked text gives 1002",
         send_expect_fail([F(OP_TEXT, "clear", mask=False)], 1002)),
        ("masking: unmasked empty binary gives 1002",
         send_expect_fail([F(OP_BINARY, b"", mask=False)], 1002)),
        ("masking: unmasked ping gives 1002",
         send_expect_fail([F(OP_PING, b"clear", mask=False)], 1002)),
        ("masking: unmasked close gives 1002",
         send_expect_fail([F(OP_CLOSE, wsraw.close_payload(1000), mask=False)], 1002)),
        ("masking: unmasked continuation gives 1002",
         send_expect_fail([F(OP_TEXT, "a", fin=False), F(OP_CONT, "b", mask=False)], 1002)),
    ]


def size_cases():
    over = MAX_MESSAGE + 1
    huge_header = struct.pack("!BBQ", 0x81, 0xFF, 1 << 30) + os.urandom(4)
    return [
        ("size: text of exactly 64 KiB in fragments is accepted",
         send_expect_alive(fragment(OP_TEXT, b"k" * MAX_MESSAGE, [30000, 30000]))),
        ("size: text of 64 KiB + 1 in one frame gives 1009",
         send_expect_fail([F(OP_TEXT, b"k" * over)], 1009)),
        ("size: binary of 64 KiB + 1 in one frame gives 1009",
         send_expect_fail([F(OP_BINARY, b"\0" * over)], 1009)),
        ("size: text of 2 x 40000 bytes in fragments gives 1009",
         send_expect_fail(fragment(OP_TEXT, b"k" * 80000, [40000]), 1009)),
        ("size: 17 fragments of 4 KiB give 1009",
         send_expect_fail(fragment(OP_BINARY, b"b" * (17 * 4096), [4096] * 16), 1009)),
        ("size: a frame declaring 1 GiB gives 1009 before its payload", ws_case(
            lambda ws: (ws.send(huge_header), expect_close(ws, {1009})))),
    ]


# ==== robustness =============================================================

def reset(c):
    """Ends the connection with a TCP reset instead of a FIN."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def ping_endpoint_ok():
    st, body = harness.http_get(T.port, "/ping")
    assert st == 200 and body.rstrip("\r\n") == "pong", "/ping after: %s %r" % (st, body)


def robust_reset_mid_frame():
    ws = open_ws()
    ws.send(F(OP_TEXT, b"x" * 1000)[:500])
    time.sleep(0.1)
    reset(ws)
    ping_endpoint_ok()


def robust_reset_mid_request():
    c = connect()
    c.send(upgrade_request()[:40])
    time.sleep(0.1)
    reset(c)
    ping_endpoint_ok()


def robust_reset_pending_pongs():
    ws = open_ws()
    ws.send(b"".join(F(OP_PING, b"p" * 125) for _ in range(3000)))
    time.sleep(0.2)
    reset(ws)
    ping_endpoint_ok()


def robust_half_close():
    ws = open_ws()
    ws.send(F(OP_PING, b"half"))
    ws.sock.shutdown(socket.SHUT_WR)
    assert ws.wait_tcp_close(5), "TCP still open 5 s after the client's FIN"
    ws.close()
    ping_endpoint_ok()


def robust_ping_flood():
    """5000 pings written while the pongs are read: every pong, in order,
    whatever the buffering on either side."""
    ws = open_ws()
    try:
        payloads = [struct.pack("!I", i) + b"f" * 121 for i in range(5000)]
        data = b"".join(F(OP_PING, p) for p in payloads)
        out = ws.sock.dup()          # its own timeout, so reads here do not disturb it
        out.settimeout(30)
        err = []

        def push():
            try:
                out.sendall(data)
            except OSError as e:
                err.append(e)
        th = threading.Thread(target=push, daemon=True)
        th.start()
        for p in payloads:
            expect_pong(ws, p, timeout=10)
        th.join(10)
        out.close()
        assert not err, "sending failed: %r" % err
        alive(ws)
    finally:
        ws.close()


def robust_ping_flood_unread():
    """A client that floods pings and never reads: pgcdc drops it as a slow
    consumer (close 1013, or TCP ended) once the pongs it cannot deliver pass
    max_queue, so its memory stays bounded (docs/protocol.md, Replication:
    max_queue per client plus a constant).  The drop is seen from the client, so the case can fail
    against any target; when the target's pid is known (not CONF_TARGET),
    its resident memory is checked too."""
    pid = T.pid
    before = rss_kib(pid) if pid else None
    ws = open_ws()
    sent = [0]
    try:
        ping = F(OP_PING, b"m" * 125, key=b"\1\2\3\4")
        chunk = ping * 2000
        out = ws.sock.dup()
        out.settimeout(2)
        t0 = time.monotonic()

        def push():
            try:
                while sent[0] < 60 * 1024 * 1024 and time.monotonic() - t0 < 15:
                    out.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass            # blocked (the server stopped reading) or dropped
        th = threading.Thread(target=push, daemon=True)
        th.start()
        th.join(20)
        out.close()
        time.sleep(0.5)
        if pid:
            grown = rss_kib(pid) - before
            assert grown < 24 * 1024, "server RSS grew by %d KiB after %d MB of unread pings" % (
                grown, sent[0] >> 20)
        # now read: the pongs that did fit in the buffers, then the drop
        pongs, dropped = 0, None
        deadline = time.monotonic() + 15
        while dropped is None:
            left = deadline - time.monotonic()
            assert left > 0, "not dropped after %d MB of unread pings (%d pongs read since)" % (
                sent[0] >> 20, pongs)
            try:
                f = ws.read_frame(left)
            except PeerClosed:
                dropped = "TCP ended"
                break
            except Timeout:
                continue
            if f.opcode == OP_PONG:
                pongs += 1
            elif f.opcode == OP_CLOSE:
                code = struct.unpack("!H", f.payload[:2])[0] if len(f.payload) >= 2 else None
                assert code == 1013, "dropped with close %s %r, expected 1013" % (code, f.payload[2:60])
                dropped = "close 1013"
            else:
                assert f.opcode == OP_PING, "unexpected %s" % describe(f)
    finally:
        reset(ws)


def robust_many_clients():
    conns = []
    try:
        for _ in range(100):
            conns.append(open_ws())
        for i, ws in enumerate(conns):
            ws.send(F(OP_PING, b"c%d" % i))
        for i, ws in enumerate(conns):
            expect_pong(ws, b"c%d" % i)
        for ws in conns:
            ws.send_close(1000)
        for ws in conns:
            expect_close(ws, {1000}, reply=False)
    finally:
        for ws in conns:
            ws.close()


def utf8_random_fragments():
    text = ("κόσμε €中文 𝄞😀 abc " * 2000).encode()[:60000]
    while True:            # end on a character boundary
        try:
            text.decode()
            break
        except UnicodeDecodeError:
            text = text[:-1]
    rnd = random.Random(6455)
    sizes, left = [], len(text)
    while left > 0:
        n = min(left, rnd.randint(1, 3000))
        sizes.append(n)
        left -= n
    frames = fragment(OP_TEXT, text, sizes[:-1])
    return send_expect_alive(frames)


def robust_cases():
    many_empty = ([F(OP_TEXT, b"", fin=False)] + [F(OP_CONT, b"", fin=False)] * 9998
                  + [F(OP_CONT, b"")])
    return [
        ("robust: 10000 empty fragments make one valid message", send_expect_alive(many_empty)),
        ("robust: 60000 bytes of multi-byte text in random fragments", utf8_random_fragments()),
        ("robust: 5000 pings answered in order while still sending", robust_ping_flood),
        ("robust: 100 clients at once, each pinged and closed", robust_many_clients),
        ("robust: memory stays bounded under a ping flood that never reads", robust_ping_flood_unread),
        ("robust: client reset in the middle of a frame", robust_reset_mid_frame),
        ("robust: client reset in the middle of the request", robust_reset_mid_request),
        ("robust: client reset with 3000 pongs pending", robust_reset_pending_pongs),
        ("robust: client half-close (FIN) makes the server close TCP", robust_half_close),
    ]


# ==== HTTP limits ============================================================

class Watcher(threading.Thread):
    """Holds an incomplete request open in the background and records when
    the server closed it (and what it said)."""

    def __init__(self, port, first, trickle=b"", every=0.5, limit=20.0):
        super().__init__(daemon=True)
        self.port, self.first, self.trickle = port, first, trickle
        self.every, self.limit = every, limit
        self.closed_after = None
        self.got = b""
        self.error = None
        self.c = connect(port)
        self.t0 = time.monotonic()

    def run(self):
        try:
            c = self.c
            if self.first:
                c.send(self.first)
            i = 0
            while time.monotonic() - self.t0 < self.limit:
                if self.trickle and i < len(self.trickle):
                    c.send(self.trickle[i:i + 1])
                    i += 1
                try:
                    c._fill(time.monotonic() + self.every)
                except Timeout:
                    continue
                except PeerClosed:
                    self.closed_after = time.monotonic() - self.t0
                    self.got = c.buf
                    return
        except Exception as e:  # noqa: BLE001 - reported by the case
            self.error = e
        finally:
            self.c.close()

    def verdict(self, lo=9.0, hi=13.0):
        if self.error:
            raise AssertionError("watcher failed: %r" % self.error)
        if self.closed_after is None:
            raise AssertionError("still open after %.0f s" % self.limit)
        assert not self.got.startswith(b"HTTP/1.1 101"), "incomplete request was upgraded"
        assert lo <= self.closed_after <= hi, "closed after %.1f s, expected about 10 (got %r)" % (
            self.closed_after, self.got[:100])


def start_watchers(port):
    partial = b"GET " + WS_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    w = {
        "http: a request incomplete for 10 s is closed":
            Watcher(port, partial),
        "http: a connection that sends nothing is closed after 10 s":
            Watcher(port, b""),
        "http: a slow-loris trickling bytes is closed after 10 s":
            Watcher(port, partial, trickle=b"X-Slow: " + b"s" * 200, every=0.4),
    }
    for t in w.values():
        t.start()
    return w


def capacity(port):
    """max_clients = 2: slow-loris connections hold no slot; a third
    upgrade gets 503; a freed slot is usable again."""
    loris = []
    clients = []
    try:
        for _ in range(4):
            c = connect(port)
            c.send(b"GET " + WS_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: web")
            loris.append(c)
        time.sleep(0.3)
        for _ in range(2):
            clients.append(open_ws(port))
        c = connect(port)
        try:
            resp = c.handshake(WS_PATH)
            check_http(resp, {503})
        finally:
            c.close()
        c = connect(port)
        try:
            c.send(wsraw.build_request("/ping", [("Host", HOST)]))
            resp = c.read_http()
            assert resp.status == 200 and resp.body.rstrip(b"\r\n") == b"pong", "/ping at capacity: %r" % resp.raw[:200]
        finally:
            c.close()
        for ws in clients:
            alive(ws)
        clients[0].send_close(1000)
        expect_close(clients[0], {1000}, reply=False)
        clients[0].close()
        deadline = time.monotonic() + 3
        while True:
            c = connect(port)
            key = wsraw.new_key()
            resp = c.handshake(WS_PATH, wsraw.upgrade_headers(key=key))
            if resp.status == 101:
                check_101(resp, key)
                clients[0] = c
                break
            c.close()
            assert time.monotonic() < deadline, "no slot freed 3 s after a client left: %d" % resp.status
            time.sleep(0.2)
        alive(clients[0])
    finally:
        for c in loris + clients:
            c.close()


# ==== shutdown and slow consumers (own instances) ===========================

def shutdown_closes_1001():
    """SIGTERM: every client gets close 1001, whether it answers the close,
    stays silent, or is in the middle of a message; then exit status 0."""
    inst = harness.Pgcdc()
    try:
        inst.start()
        a, b, c = open_ws(inst.port), open_ws(inst.port), open_ws(inst.port)
        c.send(F(OP_TEXT, "unfinished", fin=False))
        for ws in (a, b, c):
            alive(ws)
        inst.proc.send_signal(15)
        expect_close(a, {1001})
        expect_close(c, {1001})
        code, _ = b.read_close(5)
        assert code == 1001, "silent client got close %s" % code
        assert b.wait_tcp_close(10), "TCP to the silent client still open"
        rc = inst.proc.wait(15)
        assert rc == 0, "exit status %s after SIGTERM" % rc
    finally:
        inst.stop()


def slow_consumer():
    """max_queue = 64 KiB: a client that does not read while 10 MB of
    changes flow is closed with 1013 "slow consumer"; a reading client
    gets every change meanwhile."""
    table = "conf_slow"
    harness.sql("CREATE TABLE IF NOT EXISTS %s (id int PRIMARY KEY, v text)" % table)
    harness.sql("TRUNCATE %s" % table)
    inst = harness.Pgcdc({"server": {"max_queue": "65536"}})
    path = "/ws?query=insert:%s" % table
    try:
        inst.start()
        slow = open_ws(inst.port, path=path, rcvbuf=4096)
        fast = open_ws(inst.port, path=path)
        n = 1000
        harness.sql("INSERT INTO %s SELECT g, repeat('x', 10000) FROM generate_series(1, %d) g" % (table, n))
        t0 = time.monotonic()
        result = {}

        def drain_slow():
            time.sleep(1.0)
            frames = 0
            try:
                while True:
                    f = slow.next_frame(15, answer_pings=True)
                    if f.opcode == OP_CLOSE:
                        break
                    assert f.opcode == OP_TEXT, "slow client got %s" % describe(f)
                    frames += 1
                code = struct.unpack("!H", f.payload[:2])[0] if len(f.payload) >= 2 else None
                result["close"] = (code, f.payload[2:], frames)
                slow.send_close(code)
                result["tcp"] = slow.wait_tcp_close(5)
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = e
        th = threading.Thread(target=drain_slow, daemon=True)
        th.start()
        got = 0
        while got < n:
            f = fast.next_frame(max(0.1, 20 - (time.monotonic() - t0)), answer_pings=True)
            assert f.opcode == OP_TEXT, "reading client got %s after %d changes" % (describe(f), got)
            got += 1
        dt = time.monotonic() - t0
        th.join(25)
        assert "error" not in result, "slow client: %r" % result.get("error")
        assert "close" in result, "slow client was never closed"
        code, reason, frames = result["close"]
        assert code == 1013, "slow client closed with %s %r after %d frames" % (code, reason, frames)
        assert reason == b"slow consumer", "reason %r" % reason
        assert frames < n, "slow client got all %d changes: it was never slow" % n
        assert result.get("tcp"), "TCP to the slow client still open"
        assert dt < 15, "the reading client took %.1f s for %d changes" % (dt, n)
        alive(fast)
    finally:
        inst.stop()
        harness.sql("TRUNCATE %s" % table, check=False)


# ==== running ================================================================

FAMILIES = [
    ("handshake", handshake_cases),
    ("framing", framing_cases),
    ("ping", ping_cases),
    ("reserved", reserved_cases),
    ("fragmentation", fragmentation_cases),
    ("utf8", utf8_cases),
    ("close", close_cases),
    ("masking", masking_cases),
    ("size", size_cases),
    ("robust", robust_cases),
]

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:", "SUMMARY:", "Segmentation fault", "core dumped",
                   "stack-buffer", "heap-buffer")


def server_healthy(inst):
    st, body = harness.http_get(inst.port, "/ping")
    assert st == 200 and body.rstrip("\r\n") == "pong", "/ping: %s %r" % (st, body)
    assert inst.proc.poll() is None, "pgcdc exited with %s" % inst.proc.returncode


def no_clients_left(inst):
    """Every connection the cases made is gone: the client count is 0."""
    deadline = time.monotonic() + 5
    while True:
        st, body = harness.http_get(inst.port, "/health")
        n = json.loads(body).get("clients")
        if n == 0:
            return
        assert time.monotonic() < deadline, "/health still reports %r clients" % n
        time.sleep(0.2)


def log_clean(inst):
    text = inst.logtext()
    bad = [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKS)]
    assert not bad, "log: %s" % bad[:5]


def run_families(selected):
    for fam, make in FAMILIES:
        if selected and fam not in selected:
            continue
        for name, fn in make():
            harness.run_test(name, fn)


def main():
    selected = set(sys.argv[1:])
    target = os.environ.get("CONF_TARGET")
    if target:
        T.port = int(target.rsplit(":", 1)[1])
        run_families(selected)
        harness.finish()
    harness.sql("CREATE TABLE IF NOT EXISTS %s (id int PRIMARY KEY, v text)" % TABLE)
    insts = []
    try:
        main_inst = harness.Pgcdc()
        insts.append(main_inst)
        main_inst.start()
        T.port = main_inst.port
        T.pid = main_inst.proc.pid
        watchers = start_watchers(T.port) if not selected or "http" in selected else {}
        run_families(selected)
        for name, w in watchers.items():
            w.join(25)
            harness.run_test(name, w.verdict)
        harness.run_test("server: alive after all cases (GET /ping)", server_healthy, main_inst)
        harness.run_test("server: no client left after all cases (/health clients 0)",
                         no_clients_left, main_inst)

        if not selected or "ping" in selected:
            pi = harness.Pgcdc({"server": {"ping_interval": "1"}})
            insts.append(pi)
            pi.start()
            fns = [("ping: server pings every ping_interval (1 s)", server_pings),
                   ("ping: a silent client is dropped after about 3 intervals", silent_dropped),
                   ("ping: a client answering pings stays connected", answering_stays),
                   ("ping: a client sending messages but no pongs stays connected", data_only_client_stays)]
            threads = []
            results = {}
            for name, fn in fns:   # the cases take seconds each: run them side by side
                def work(name=name, fn=fn):
                    try:
                        fn(pi.port)
                        results[name] = None
                    except Exception as e:  # noqa: BLE001 - reported below
                        results[name] = e
                th = threading.Thread(target=work, daemon=True)
                th.start()
                threads.append(th)
            for th in threads:
                th.join(30)
            for name, _ in fns:
                e = results.get(name, AssertionError("did not finish"))
                harness.report(name, e is None, "" if e is None else "%s: %s" % (type(e).__name__, e))
            harness.run_test("server: ping instance alive", server_healthy, pi)

        if not selected or "http" in selected:
            cap = harness.Pgcdc({"server": {"max_clients": "2"}})
            insts.append(cap)
            cap.start()
            harness.run_test("http: max_clients=2, slow-loris holds no slot, third upgrade gets 503",
                             capacity, cap.port)
            harness.run_test("server: capacity instance alive", server_healthy, cap)
            harness.run_test("server: capacity instance has no client left", no_clients_left, cap)

        if not selected or "server" in selected:
            harness.run_test("close: shutdown sends 1001 to every client, exit 0", shutdown_closes_1001)
            harness.run_test("close: a client not reading is closed with 1013, others not delayed",
                             slow_consumer)
    finally:
        for inst in insts:
            inst.stop()
    for inst in insts:
        harness.run_test("server: no sanitizer or crash output in log (port %d)" % inst.port, log_clean, inst)
    harness.finish()


if __name__ == "__main__":
    main()
