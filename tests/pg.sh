#!/usr/bin/env bash
# pg.sh -- a throwaway PostgreSQL 15 cluster for pgcdc's end-to-end tests.
#
# Sourced by test.sh (functions pg_start / pg_stop), or run by hand:
#   tests/pg.sh start [PORT]   starts one, prints the export lines to eval
#   tests/pg.sh stop DIR       stops the one whose base directory is DIR
#
# The cluster lives in a fresh mktemp directory under ${TMPDIR:-/tmp}: trust
# authentication, its unix socket in that directory, TCP on 127.0.0.1 only,
# wal_level=logical and room for many replication connections, since every
# pgcdc a suite starts holds one.  As root it runs as user postgres (initdb
# and postgres refuse root); otherwise as the calling user.  Either way the
# superuser is named postgres, so PGUSER=postgres works in both cases.
#
# Extra configuration (both optional):
#   PG_EXTRA_CONF=FILE  lines written into postgresql.conf before this
#                       script's own settings (which win where both set one);
#                       test.sh passes README's postgresql.conf block here
#   PG_BARE=1           only where the cluster lives (addresses, port,
#                       socket) and fsync off: no replication settings, so
#                       PG_EXTRA_CONF alone must make logical decoding work

PG_BIN=${PG_BIN:-}
PG_BASE=""

pg__bindir() {
    if [ -n "$PG_BIN" ]; then echo "$PG_BIN"; return; fi
    if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        echo /usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; then
        pg_config --bindir
    else
        dirname "$(command -v postgres)"
    fi
}

# Runs a command as the cluster's owner.
pg__as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg__free_port() {
    /usr/bin/python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

# pg_start [PORT]: starts the cluster; sets PG_BASE and exports PGHOST,
# PGPORT, PGUSER, PGDATABASE.  Returns non-zero (with the server log on
# stderr) when it cannot.
pg_start() {
    local port=${1:-${TEST_PGPORT:-}} bin plugin_libs=""
    bin=$(pg__bindir)
    [ -n "$port" ] || port=$(pg__free_port)
    PG_BASE=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-pg.XXXXXX") || return 1
    chmod 755 "$PG_BASE"
    mkdir -p "$PG_BASE/data"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$PG_BASE" || return 1
    fi
    if ! pg__as_owner "$bin/initdb" -D "$PG_BASE/data" -U postgres --auth=trust \
            -E UTF8 --locale=C.UTF-8 >"$PG_BASE/initdb.log" 2>&1 &&
       ! pg__as_owner "$bin/initdb" -D "$PG_BASE/data" -U postgres --auth=trust \
            -E UTF8 --locale=C >"$PG_BASE/initdb.log" 2>&1; then
        cat "$PG_BASE/initdb.log" >&2
        return 1
    fi
    # output_plugin_libraries exists only in some builds; naming it in one
    # that lacks it stops the server from starting.
    if "$bin/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then
        plugin_libs="output_plugin_libraries = 'wal2json'"
    fi
    if [ -n "${PG_EXTRA_CONF:-}" ]; then
        { echo "# from $PG_EXTRA_CONF"; cat "$PG_EXTRA_CONF"; echo; } \
            >>"$PG_BASE/data/postgresql.conf" || return 1
    fi
    cat >>"$PG_BASE/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_BASE'
fsync = off
full_page_writes = off
log_min_messages = warning
EOF
    if [ -z "${PG_BARE:-}" ]; then
        cat >>"$PG_BASE/data/postgresql.conf" <<EOF
wal_level = logical
max_wal_senders = 50
max_replication_slots = 50
max_connections = 200
synchronous_commit = on
$plugin_libs
EOF
    fi
    if ! pg__as_owner "$bin/pg_ctl" -D "$PG_BASE/data" -l "$PG_BASE/server.log" \
            -w -t 60 start >/dev/null; then
        cat "$PG_BASE/server.log" >&2
        return 1
    fi
    export PGHOST=$PG_BASE PGPORT=$port PGUSER=postgres PGDATABASE=postgres
    return 0
}

# pg_stop [DIR]: stops the cluster and removes its directory.
pg_stop() {
    local base=${1:-$PG_BASE} bin
    [ -n "$base" ] && [ -d "$base" ] || return 0
    bin=$(pg__bindir)
    if [ -f "$base/data/postmaster.pid" ]; then
        pg__as_owner "$bin/pg_ctl" -D "$base/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    rm -rf "$base"
    [ "$base" = "$PG_BASE" ] && PG_BASE=""
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        start)
            pg_start "${2:-}" || exit 1
            echo "export PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER PGDATABASE=$PGDATABASE"
            echo "# stop with: $0 stop $PG_BASE"
            ;;
        stop) pg_stop "${2:?usage: $0 stop DIR}" ;;
        *) echo "usage: $0 start [PORT] | stop DIR" >&2; exit 2 ;;
    esac
fi
