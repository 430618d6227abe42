"""grant_mint.py -- mints a pgcdc grant (docs/protocol.md, Grants), standard library only.

usage: python3 grant_mint.py SECRET QUERY [FILTER...]   (valid for GRANT_TTL s, default 3600)
"""
import base64, hmac, os, sys, time
from urllib.parse import quote


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(secret, query, filters=(), ttl=3600):
    payload = "exp=%d&query=%s" % (time.time() + ttl, quote(query, safe=""))
    payload += "".join("&filter=" + quote(f, safe="") for f in filters)
    mac = hmac.new(secret.encode(), payload.encode(), "sha1").digest()
    return b64url(payload.encode()) + "." + b64url(mac)


if __name__ == "__main__":
    print(mint(sys.argv[1], sys.argv[2], sys.argv[3:], int(os.environ.get("GRANT_TTL", "3600"))))
