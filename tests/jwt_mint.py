"""jwt_mint.py -- mints a JWT for pgcdc with PyJWT (Debian: python3-jwt; RS256 also
needs python3-cryptography).

usage: python3 jwt_mint.py HS256 SECRET      CLAIMS_JSON [TTL]
       python3 jwt_mint.py RS256 PRIVATE.pem CLAIMS_JSON [TTL] [KID]
exp is set to now + TTL seconds (default 3600) unless CLAIMS_JSON has one.
"""
import json, sys, time
import jwt


def mint(alg, key, claims, ttl=3600, kid=None):
    claims = dict(claims)
    claims.setdefault("exp", int(time.time()) + ttl)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


if __name__ == "__main__":
    alg, key, claims = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 3600
    if alg == "RS256":
        key = open(key).read()
    print(mint(alg, key, claims, ttl, sys.argv[5] if len(sys.argv) > 5 else None))
