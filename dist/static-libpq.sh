#!/bin/sh
# static-libpq.sh -- builds the static libpq that `make static` links into a
# fully static pgcdc, and caches it under build/libpq-static/.
#
# Debian's own libpq.a cannot be linked statically: it was configured with
# GSSAPI and LDAP, whose static archives Debian does not ship.  So libpq is
# rebuilt from PostgreSQL's source with only OpenSSL (TLS to the server
# still works), and without GSSAPI, LDAP, readline, ICU and zlib.  Only the
# client library and the two helper archives it needs are built:
#
#   build/libpq-static/include/  libpq-fe.h, libpq-events.h, postgres_ext.h,
#                                pg_config_ext.h
#   build/libpq-static/lib/      libpq.a, libpgcommon_shlib.a,
#                                libpgport_shlib.a
#
# Where the source comes from, first match wins:
#   PG_SRC=/path        an unpacked PostgreSQL source tree, or a .tar.gz /
#                       .tar.bz2 release tarball
#   build/libpq-src/    a tree unpacked by an earlier run
#   apt-get source      Debian's source package (postgresql-<major of
#                       pg_config>, else postgresql-15), with deb-src
#                       enabled first when it is missing and we are root
#
# Environment: BUILD (default <repo>/build), PG_SRC, PG_SRC_PKG (a Debian
# source package name), PGCDC_NO_APT=1 (never run apt-get; fail instead),
# JOBS (parallel make, default 2), CC (the compiler for libpq).
#
# Running it again once the archives exist does nothing; `make clean` (or
# removing build/libpq-static) forces a rebuild.
set -eu

say() { printf 'static-libpq: %s\n' "$*" >&2; }
die() { printf 'static-libpq: error: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
OUT=$BUILD/libpq-static
SRCDIR=$BUILD/libpq-src
JOBS=${JOBS:-2}

cached() {
    for f in lib/libpq.a lib/libpgcommon_shlib.a lib/libpgport_shlib.a \
             include/libpq-fe.h include/postgres_ext.h include/pg_config_ext.h
    do
        [ -f "$OUT/$f" ] || return 1
    done
}

if cached; then
    exit 0
fi

am_root() { [ "$(id -u)" = 0 ]; }

can_apt() {
    [ "${PGCDC_NO_APT:-}" != 1 ] && am_root && command -v apt-get >/dev/null 2>&1
}

apt_install() {
    can_apt || die "missing build tools ($*); install them (Debian: apt-get install $*) and run again"
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 ||
        die "apt-get install $* failed"
}

# ---- build tools -----------------------------------------------------------

need=
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
command -v perl >/dev/null 2>&1 || need="$need perl"
[ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
if [ -n "$need" ]; then
    # shellcheck disable=SC2086  # word splitting of the list is wanted
    apt_install $need
fi
# The static OpenSSL archives come with libssl-dev on Debian; elsewhere they
# may live in another package or not exist at all.
for a in libssl.a libcrypto.a; do
    if ! "${CC:-cc}" -print-file-name="$a" | grep -q /; then
        die "$a not found by ${CC:-cc}; a static OpenSSL is needed (Debian: libssl-dev)"
    fi
done

# ---- source ----------------------------------------------------------------

# Prints the directory of an unpacked PostgreSQL tree below $1, if any.
find_tree() {
    for d in "$1"/postgresql-*/; do
        if [ -f "$d/configure" ] && [ -d "$d/src/interfaces/libpq" ]; then
            printf '%s\n' "${d%/}"
            return 0
        fi
    done
    return 1
}

# Adds deb-src entries mirroring the existing deb ones, in a file of its own
# so the system's files stay untouched (remove it to undo).
enable_deb_src() {
    can_apt || die "no deb-src entries in the apt sources; add them (same URIs and suites as the deb ones) and run 'apt-get update', or set PG_SRC to a PostgreSQL source tree or tarball"
    written=
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        case $f in */pgcdc-deb-src.sources) continue ;; esac
        grep -qi '^Types:.*deb-src' "$f" && continue
        grep -qi '^Types:.*deb' "$f" || continue
        # deb822 stanzas: every "Types: deb" becomes "Types: deb-src".
        sed 's/^\([Tt]ypes:\).*/\1 deb-src/' "$f" >> "$BUILD/deb-src.sources.tmp"
        printf '\n' >> "$BUILD/deb-src.sources.tmp"
        written=1
    done
    if [ -n "$written" ]; then
        mv "$BUILD/deb-src.sources.tmp" /etc/apt/sources.list.d/pgcdc-deb-src.sources
        say "added deb-src entries: /etc/apt/sources.list.d/pgcdc-deb-src.sources"
    fi
    if [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list &&
       ! grep -q '^deb-src ' /etc/apt/sources.list; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list \
            > /etc/apt/sources.list.d/pgcdc-deb-src.list
        say "added deb-src entries: /etc/apt/sources.list.d/pgcdc-deb-src.list"
        written=1
    fi
    [ -n "$written" ] || die "could not find deb entries to mirror as deb-src; set PG_SRC instead"
    apt-get update -q >&2 || die "apt-get update failed"
}

has_src() { apt-cache showsrc "$1" 2>/dev/null | grep -q '^Package:'; }

fetch_debian_source() {
    if [ "${PGCDC_NO_APT:-}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "no PostgreSQL source: set PG_SRC to a source tree or release tarball"
    fi
    command -v dpkg-source >/dev/null 2>&1 || apt_install dpkg-dev
    pkgs=${PG_SRC_PKG:-}
    if [ -z "$pkgs" ]; then
        major=$(pg_config --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p')
        pkgs="${major:+postgresql-$major }postgresql-15"
    fi
    pkg=
    for p in $pkgs; do has_src "$p" && { pkg=$p; break; }; done
    if [ -z "$pkg" ]; then
        if ! grep -rqsi 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            enable_deb_src
        elif can_apt; then
            apt-get update -q >&2 || die "apt-get update failed"
        fi
        for p in $pkgs; do has_src "$p" && { pkg=$p; break; }; done
    fi
    [ -n "$pkg" ] || die "apt knows no source package among: $pkgs (set PG_SRC_PKG or PG_SRC)"
    # Try every version apt knows, newest first: a mirror may list a
    # version in its index yet not serve its files (seen with security
    # mirrors), and any recent libpq does for pgcdc.
    versions=$(apt-cache showsrc "$pkg" | sed -n 's/^Version: //p' | sort -u -r -V)
    got=
    for v in $versions; do
        say "fetching Debian source package $pkg=$v"
        rm -rf "$SRCDIR.tmp"
        mkdir -p "$SRCDIR.tmp"
        if (cd "$SRCDIR.tmp" && apt-get source -q "$pkg=$v" >&2); then
            got=1
            break
        fi
        say "apt-get source $pkg=$v failed; trying an older version"
    done
    [ -n "$got" ] || die "apt-get source $pkg failed for every version ($versions)"
    # Keep only the unpacked tree; the .dsc and tarballs are not needed again.
    find "$SRCDIR.tmp" -maxdepth 1 -type f -delete
    rm -rf "$SRCDIR"
    mv "$SRCDIR.tmp" "$SRCDIR"
}

mkdir -p "$BUILD"
if [ -n "${PG_SRC:-}" ]; then
    if [ -d "$PG_SRC" ]; then
        TREE=$(cd "$PG_SRC" && pwd)
        [ -f "$TREE/configure" ] || die "PG_SRC=$PG_SRC has no configure script"
    elif [ -f "$PG_SRC" ]; then
        TREE=$(find_tree "$SRCDIR" || true)
        if [ -z "$TREE" ]; then
            say "unpacking $PG_SRC"
            rm -rf "$SRCDIR"
            mkdir -p "$SRCDIR"
            tar -xf "$PG_SRC" -C "$SRCDIR" || die "cannot unpack $PG_SRC"
            TREE=$(find_tree "$SRCDIR") || die "$PG_SRC holds no PostgreSQL source tree"
        fi
    else
        die "PG_SRC=$PG_SRC does not exist"
    fi
else
    TREE=$(find_tree "$SRCDIR" || true)
    if [ -z "$TREE" ]; then
        fetch_debian_source
        TREE=$(find_tree "$SRCDIR") || die "apt-get source left no PostgreSQL tree in $SRCDIR"
    fi
fi
say "source: $TREE"

# ---- configure and build ---------------------------------------------------

# Out-of-tree (VPATH) build, so a shared or read-only PG_SRC stays clean.
OBJ=$BUILD/libpq-obj
if [ ! -f "$OBJ/config.status" ] || [ "$(cat "$OBJ/.tree" 2>/dev/null)" != "$TREE" ]; then
    rm -rf "$OBJ"
    mkdir -p "$OBJ"
    say "configuring (log: $OBJ/configure.log)"
    # sysconfdir matches Debian's libpq, so pg_service.conf is found in the
    # same place.  bison and flex are not needed: release sources ship the
    # generated files, and libpq has no grammar of its own.
    (cd "$OBJ" && "$TREE/configure" --prefix="$OUT" \
        --sysconfdir=/etc/postgresql-common \
        --with-openssl --without-gssapi --without-ldap --without-readline \
        --without-icu --without-zlib --without-lz4 --without-zstd \
        --without-libxml --without-libxslt --without-llvm --without-systemd \
        --without-pam --without-selinux --disable-nls \
        > configure.log 2>&1) ||
        { tail -n 20 "$OBJ/configure.log" >&2; die "configure failed (see $OBJ/configure.log)"; }
    printf '%s\n' "$TREE" > "$OBJ/.tree"
fi

say "building libpq (log: $OBJ/make.log)"
# Flags of a calling make (-B, -n, its jobserver) are not meant for this one.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
# libpq's Makefile builds src/port and src/common (and the generated
# headers they need) as prerequisites.
make -C "$OBJ/src/interfaces/libpq" -j"$JOBS" all-static-lib > "$OBJ/make.log" 2>&1 ||
    { tail -n 30 "$OBJ/make.log" >&2; die "make failed (see $OBJ/make.log)"; }

# ---- install into the cache ------------------------------------------------

rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp/lib" "$OUT.tmp/include"
cp "$OBJ/src/interfaces/libpq/libpq.a" "$OBJ/src/common/libpgcommon_shlib.a" \
   "$OBJ/src/port/libpgport_shlib.a" "$OUT.tmp/lib/"
cp "$TREE/src/interfaces/libpq/libpq-fe.h" "$TREE/src/interfaces/libpq/libpq-events.h" \
   "$TREE/src/include/postgres_ext.h" "$OBJ/src/include/pg_config_ext.h" \
   "$OUT.tmp/include/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
cached || die "internal: archives missing after the build"
say "done: $OUT"
