#!/usr/bin/env bash
# grant_mint.sh -- mints a pgcdc grant (docs/protocol.md, Grants) with openssl.
# usage: grant_mint.sh SECRET QUERY [FILTER...]   (valid for GRANT_TTL s, default 3600)
set -eu
secret=$1; shift
enc() {  # percent-encodes every byte but A-Z a-z 0-9 - _ . ~
    local LC_ALL=C s=$1 i c
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in [A-Za-z0-9._~-]) printf '%s' "$c" ;; *) printf '%%%02X' "'$c" ;; esac
    done
}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
payload="exp=$(( $(date +%s) + ${GRANT_TTL:-3600} ))&query=$(enc "$1")"
shift
for f in "$@"; do payload="$payload&filter=$(enc "$f")"; done
mac=$(printf '%s' "$payload" | openssl dgst -sha1 -hmac "$secret" -binary | b64url)
echo "$(printf '%s' "$payload" | b64url).$mac"
