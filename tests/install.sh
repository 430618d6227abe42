#!/usr/bin/env bash
# install.sh -- `make install` with PREFIX and DESTDIR puts the binary, the
# documentation and the systemd unit where they belong, and the unit points
# at the installed binary.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 0
D=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-install.XXXXXX")
trap 'rm -rf "$D"' EXIT
ok() { echo "ok - install: $1"; }
no() { echo "not ok - install: $1: $2"; }

if ! make -s install PREFIX=/usr DESTDIR="$D" >"$D/log" 2>&1; then
    no "make install PREFIX=/usr DESTDIR=..." "$(tail -3 "$D/log" | tr '\n' ' ')"
    exit 0
fi
if [ -x "$D/usr/bin/pgcdc" ] && "$D/usr/bin/pgcdc" -V | grep -q '^pgcdc [0-9]'; then
    ok "binary installed in \$DESTDIR\$PREFIX/bin and runs"
else
    no "binary" "missing or does not run: $D/usr/bin/pgcdc"
fi
unit=$D/usr/lib/systemd/system/pgcdc.service
if [ -f "$unit" ] && grep -q '^ExecStart=/usr/bin/pgcdc ' "$unit"; then
    ok "systemd unit installed, ExecStart uses \$PREFIX"
else
    no "systemd unit" "missing, or ExecStart does not name /usr/bin/pgcdc"
fi
missing=""
for h in NoNewPrivileges=yes ProtectSystem=strict ProtectHome= PrivateTmp=yes RestrictAddressFamilies= \
         CapabilityBoundingSet= SystemCallFilter= LimitNOFILE= Restart=on-failure; do
    grep -q "^$h" "$unit" 2>/dev/null || missing="$missing $h"
done
if [ -z "$missing" ]; then ok "unit has the hardening options"; else no "unit hardening" "missing:$missing"; fi
if [ -f "$D/usr/share/doc/pgcdc/pgcdc.example.config" ] && [ -f "$D/usr/share/doc/pgcdc/README.md" ] &&
   [ -f "$D/usr/share/doc/pgcdc/docs/protocol.md" ]; then
    ok "example configuration, README and docs/protocol.md installed under share/doc/pgcdc, as README links them"
else
    no "docs" "pgcdc.example.config, README.md or docs/protocol.md missing under share/doc/pgcdc"
fi
if "$D/usr/bin/pgcdc" -t -c "$D/usr/share/doc/pgcdc/pgcdc.example.config" | grep -q 'configuration ok'; then
    ok "the installed example configuration validates"
else
    no "example configuration" "pgcdc -t rejects it"
fi
exit 0
