"""suite_access.py -- access control: token, allowed_origins, check order,
and where pgcdc listens (docs/protocol.md, Configuration and HTTP)."""
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websockets  # noqa: E402

from harness import Pgcdc, collect, http_get, raw_http, run_selected, sql  # noqa: E402

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TOKEN = "s3cret a&b, 16 bytes+"   # a space and an & need percent-encoding
TOKEN_Q = "s3cret%20a%26b%2C%2016%20bytes%2B"


def upgrade(port, path, headers=(), host="x"):
    """Sends a WebSocket upgrade; returns (status, headers text, body)."""
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, KEY))
    for h in headers:
        req += h + "\r\n"
    data = raw_http(port, (req + "\r\n").encode(), timeout=3)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head.decode("latin-1"), body.decode("utf-8", "replace")


def expect(port, path, status, headers=(), body_has=None, host="x"):
    st, head, body = upgrade(port, path, headers, host)
    assert st == status, "%s %s: got %d, expected %d: %s" % (path, headers, st, status, body.strip())
    if status != 101:
        assert body.strip() and "\n" not in body.strip(), "body must be one line: %r" % body
        assert "text/plain" in head, head
        if body_has:
            assert body_has in body.lower(), "body %r lacks %r" % (body, body_has)
    return head


def setup_table(name):
    sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY)" % (name, name))


def t_token():
    setup_table("acc_t")
    with Pgcdc({"server": {"token": TOKEN}}) as p:
        head = expect(p.port, "/ws?query=*:acc_t", 401, body_has="token")
        assert "WWW-Authenticate: Bearer" in head, head
        expect(p.port, "/ws?query=*:acc_t", 401, ["Authorization: Bearer wrong"], "invalid")
        expect(p.port, "/ws?query=*:acc_t", 401, ["Authorization: Bearer " + TOKEN[:-1]], "invalid")
        expect(p.port, "/ws?query=*:acc_t", 401, ["Authorization: Bearer " + TOKEN + "x"], "invalid")
        expect(p.port, "/ws?query=*:acc_t&token=wrong", 401, body_has="invalid")
        expect(p.port, "/ws?query=*:acc_t&token=s3cret%20a&b", 401)   # & not encoded: "s3cret a"
        expect(p.port, "/ws?query=*:acc_t", 101, ["Authorization: Bearer " + TOKEN])
        expect(p.port, "/ws?query=*:acc_t", 101, ["authorization: bearer " + TOKEN])
        expect(p.port, "/ws?query=*:acc_t&token=" + TOKEN_Q, 101)
        # the plain endpoints need no token
        assert http_get(p.port, "/ping")[0] == 200
        assert http_get(p.port, "/health")[0] == 200

        async def receive():
            hdrs = {"Authorization": "Bearer " + TOKEN}
            # Debian 12's websockets (10.x) names it extra_headers
            async with websockets.connect(p.url("/ws?query=insert:acc_t"), extra_headers=hdrs) as ws:
                sql("INSERT INTO acc_t VALUES (1)")
                got = await collect(ws, 1, 10)
                assert got[0]["columns"][0]["value"] == 1, got
        asyncio.run(receive())


def t_origins():
    setup_table("acc_o")
    allowed = "https://app.example.com, https://admin.example.com"
    with Pgcdc({"server": {"allowed_origins": allowed}}) as p:
        expect(p.port, "/ws?query=*:acc_o", 101, ["Origin: https://app.example.com"])
        expect(p.port, "/ws?query=*:acc_o", 101, ["Origin: https://admin.example.com"])
        expect(p.port, "/ws?query=*:acc_o", 101)   # no Origin: not a browser
        expect(p.port, "/ws?query=*:acc_o", 403, ["Origin: https://evil.example.com"], "origin")
        expect(p.port, "/ws?query=*:acc_o", 403, ["Origin: https://app.example.com/"], "origin")
        expect(p.port, "/ws?query=*:acc_o", 403, ["Origin: http://app.example.com"], "origin")
        expect(p.port, "/ws?query=*:acc_o", 403, ["Origin: null"], "origin")
    with Pgcdc({"server": {"allowed_origins": "*"}}) as p:
        expect(p.port, "/ws?query=*:acc_o", 101, ["Origin: https://anything.example"])


def t_origin_lookalikes():
    """The default (no allowed_origins) allows the server's own origin only:
    its Host exactly, never a longer or shorter name that starts the same."""
    setup_table("acc_own")
    with Pgcdc() as p:
        own = "127.0.0.1:%d" % p.port
        q = "/ws?query=*:acc_own"
        expect(p.port, q, 101, ["Origin: http://" + own], host=own)
        for bad in (own + ".evil.example", own + "0", own[:-1], "evil.example/" + own,
                    own + "@evil.example"):
            expect(p.port, q, 403, ["Origin: http://" + bad], "origin", host=own)
        expect(p.port, q, 403, ["Origin: http://" + own], "origin", host=own + "0")


def t_check_order():
    """path 404, method 405, upgrade 426, token 401, Origin 403, query 400,
    tables 403, table existence 400: the first failure answers."""
    setup_table("acc_ord")
    cfg = {"server": {"token": "tok-of-16-bytes-or-more", "allowed_origins": "https://ok.example"},
           "postgres": {"tables": "public.acc_ord"}}
    bad_origin = "Origin: https://bad.example"
    with Pgcdc(cfg) as p:
        st, _, _ = upgrade(p.port, "/nope?query=bad", [bad_origin])
        assert st == 404, st
        data = raw_http(p.port, b"POST /ws?query=bad HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 405"), data[:40]
        data = raw_http(p.port, b"GET /ws?query=bad HTTP/1.1\r\nHost: x\r\n" + bad_origin.encode() + b"\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 426"), data[:40]
        expect(p.port, "/ws?query=bad", 401, [bad_origin])
        expect(p.port, "/ws?query=bad", 403, [bad_origin, "Authorization: Bearer tok-of-16-bytes-or-more"], "origin")
        # (with an allowed Origin these refusals are close codes after a 101:
        # suite_harden.py checks that form)
        ok = ["Authorization: Bearer tok-of-16-bytes-or-more"]
        expect(p.port, "/ws?query=bad", 400, ok)
        expect(p.port, "/ws?query=*:other_table", 403, ok)          # not allowed, existing or not
        sql("DROP TABLE IF EXISTS acc_missing")
        with Pgcdc({"server": {"token": "tok-of-16-bytes-or-more"}}) as p2:
            expect(p2.port, "/ws?query=*:acc_missing", 400, ["Authorization: Bearer tok-of-16-bytes-or-more"], "exist")
        expect(p.port, "/ws?query=*:acc_ord", 101, ok + ["Origin: https://ok.example"])


def t_listen_dual_stack():
    from harness import free_port
    port = free_port()
    p = Pgcdc({"server": {"listen": ":%d" % port}})
    p.port = port
    with p:
        assert http_get(port, "/ping")[0] == 200
        try:
            s = socket.create_connection(("::1", port), timeout=2)
        except OSError as e:
            if e.errno in (97, 99, 101):   # no IPv6 on this host
                print("# note: no IPv6 on this host; only IPv4 was checked")
                return
            raise
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:40]


TESTS = [
    ("access: token via Authorization: Bearer or ?token=, else 401", t_token),
    ("access: allowed_origins exact match, no Origin allowed, else 403", t_origins),
    ("access: by default a look-alike of the server's own origin is 403", t_origin_lookalikes),
    ("access: checks answer in the order docs/protocol.md gives", t_check_order),
    ("access: listen = :port serves IPv4 and IPv6", t_listen_dual_stack),
]


if __name__ == "__main__":
    run_selected(TESTS)
