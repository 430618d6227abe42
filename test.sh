#!/usr/bin/env bash
# test.sh -- pgcdc's one test command (CI runs it through .ci/run).
#
# Installs missing Debian packages, builds with gcc and clang (warnings are
# errors), runs the unit tests, starts a throwaway PostgreSQL 15 cluster with
# wal2json and runs every end-to-end suite (tests/suite_*.py) plus the
# optional stages listed below.  Every test prints one line "ok - name" or
# "not ok - name: why"; the last line of the output is "N passed, N failed"
# and the exit status is 0 only when nothing failed and something passed.
#
# Environment knobs (all optional):
#   TEST_STAGES="build unit ..."  run only these stages (names below)
#   TEST_SUITES=pattern           run only tests/suite_<pattern>*.py
#   TEST_PGPORT=N                 PostgreSQL TCP port (default: a free one)
#   SUITE_TIMEOUT=seconds         per-suite time limit (default 900)
#   TEST_NO_INSTALL=1             never call apt-get
#
# Adding a stage: write a stage_<name> function and append <name> to STAGES.
# Adding a Debian package: append it to DEPS.  An optional script only needs
# an entry in OPTIONAL.

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2
ROOT=$PWD

# Debian packages the tests need.
DEPS=(postgresql-15 postgresql-15-wal2json libpq-dev python3-websockets
      build-essential clang libclang-rt-14-dev valgrind nginx openssl curl
      chromium haproxy python3-jwt python3-cryptography)
# Node.js and npm (node, npm) are checked by command in stage_deps, not by
# package: a machine may carry its own Node.js build with npm inside, which
# Debian's npm package conflicts with.

# Stages in the order they run.
STAGES=(deps build clang unit postgres suites optional)

# Optional scripts, "path|timeout seconds"; a missing one is skipped with a
# note.  .py runs with /usr/bin/python3, anything else with bash.  They run
# after the suites with the same environment (PGCDC, PGHOST, PGPORT, ...).
OPTIONAL=(
    "tests/conformance.py|900"
    "tests/fuzz.sh|900"
    "tests/leaks.sh|1500"
    "tests/proxy.sh|300"
    "tests/browser.sh|300"
    "tests/static.sh|900"
    "tests/install.sh|120"
    "tests/readme.py|300"
)

SUITE_TIMEOUT=${SUITE_TIMEOUT:-900}
PYTHON=/usr/bin/python3
export PGCDC=$ROOT/pgcdc
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-test.XXXXXX") || exit 2
LOG=$WORK/output
: >"$LOG"
BUILT=""        # 1: ./pgcdc was built by this run, 0: its build failed
PG_UP=0

# shellcheck source=tests/pg.sh
. "$ROOT/tests/pg.sh"

cleanup() {
    pg_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- reporting -----------------------------------------------------------

say() { printf '%s\n' "$*" | tee -a "$LOG"; }
ok() { say "ok - $1"; }
not_ok() { say "not ok - $1: $2"; }
note() { say "# $*"; }

# run_logged CMD...: runs CMD, its output shown and counted; returns its status.
run_logged() {
    "$@" 2>&1 </dev/null | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}

# run_quiet FILE CMD...: runs CMD with its output kept in FILE (shown only
# on failure by the caller); returns its status.
run_quiet() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 </dev/null
}

# run_script NAME TIMEOUT CMD...: a stage script whose "ok -" lines count.
# A non-zero exit that reported no failure of its own, or a timeout, counts
# as one failure.
run_script() {
    local name=$1 limit=$2 rc before after
    shift 2
    before=$(grep -c '^not ok - ' "$LOG")
    note "---- $name (limit ${limit}s)"
    # timeout puts the script in its own process group and signals the whole
    # group, so servers a suite started die with it.
    run_logged timeout -k 10 "$limit" "$@"
    rc=$?
    after=$(grep -c '^not ok - ' "$LOG")
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        not_ok "$name" "timed out after ${limit}s"
    elif [ "$rc" != 0 ] && [ "$after" = "$before" ]; then
        not_ok "$name" "exited with status $rc"
    fi
}

# ---- stages --------------------------------------------------------------

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

stage_deps() {
    local missing=() p sudo=()
    if ! command -v dpkg-query >/dev/null 2>&1; then
        note "not a Debian system: skipping package checks"
        return
    fi
    for p in "${DEPS[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ ${#missing[@]} = 0 ]; then
        note "all packages present"
        return
    fi
    if [ -n "${TEST_NO_INSTALL:-}" ]; then
        not_ok "packages installed" "missing ${missing[*]} (TEST_NO_INSTALL set)"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            not_ok "packages installed" "missing ${missing[*]} and not root"
            return
        fi
    fi
    note "installing ${missing[*]}"
    if run_quiet "$WORK/apt.log" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get update -q &&
       run_quiet "$WORK/apt2.log" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        ok "packages installed (${missing[*]})"
    else
        tail -n 30 "$WORK"/apt*.log
        not_ok "packages installed" "apt-get failed for ${missing[*]}"
    fi
}

# gcc_or_clang_build NAME DIR CC TARGETS...: a -B build in DIR; it must
# succeed without a single warning.
compiler_build() {
    local name=$1 dir=$2 cc=$3 out
    shift 3
    out=$WORK/build-$cc.log
    if ! command -v "$cc" >/dev/null 2>&1; then
        not_ok "$name" "$cc not found"
        return 1
    fi
    if run_quiet "$out" make -C "$dir" -B CC="$cc" "$@"; then
        if grep -qi 'warning:' "$out"; then
            grep -i -A3 'warning:' "$out" | head -n 40
            not_ok "$name" "warnings"
            return 1
        fi
        ok "$name"
        return 0
    fi
    tail -n 40 "$out"
    not_ok "$name" "build failed"
    return 1
}

stage_build() {
    BUILT=0
    if compiler_build "build: gcc, warning-free" "$ROOT" gcc pgcdc; then
        BUILT=1
    fi
}

stage_clang() {
    local copy=$WORK/clang-tree
    mkdir -p "$copy"
    # A copy, so the gcc binary under test is left alone.
    tar -C "$ROOT" --exclude=.git --exclude=./pgcdc --exclude=./tests/unit -cf - . |
        tar -C "$copy" -xf -
    compiler_build "build: clang, warning-free" "$copy" clang pgcdc || return
    compiler_build "build: clang unit tests with sanitizers" "$copy" clang tests/unit || return
    if run_quiet "$WORK/clang-unit.log" timeout 300 "$copy/tests/unit"; then
        ok "unit tests pass under clang"
    else
        sed 's/^/  clang: /' "$WORK/clang-unit.log" | grep -v '^  clang: ok - ' | tail -n 40
        not_ok "unit tests pass under clang" "see above"
    fi
}

stage_unit() {
    local out=$WORK/unit-build.log
    if ! run_quiet "$out" make -C "$ROOT" CC=gcc tests/unit; then
        tail -n 40 "$out"
        not_ok "build: unit tests" "build failed"
        return
    fi
    ok "build: unit tests"
    (cd "$ROOT" && run_script "unit tests" 300 ./tests/unit)
}

stage_postgres() {
    local out=$WORK/pg.log slot conf=$WORK/readme-postgresql.conf
    # The cluster starts with README's postgresql.conf block as written
    # (tests/readme.py checks that block alone as well).
    if ! "$PYTHON" "$ROOT/tests/readme.py" --pgconf >"$conf" 2>"$out"; then
        cat "$out"
        not_ok "postgres: README's postgresql.conf block" "not found"
        : >"$conf"
    fi
    if PG_EXTRA_CONF=$conf pg_start 2>"$out"; then
        PG_UP=1
        ok "postgres: throwaway cluster on port $PGPORT"
    else
        cat "$out"
        not_ok "postgres: throwaway cluster" "did not start"
        return
    fi
    slot="pgcdc_test_probe_$$"
    if psql -X -q -At -v ON_ERROR_STOP=1 \
            -c "SELECT pg_create_logical_replication_slot('$slot', 'wal2json', true)" \
            >"$out" 2>&1; then
        ok "postgres: wal2json loads"
    else
        cat "$out"
        not_ok "postgres: wal2json loads" "cannot create a wal2json slot"
    fi
}

# Scratch files of suites and optional stages (the harness's config
# directories, private clusters a suite makes with tests/pg.sh, ...) go
# under WORK, removed at exit.  The postgres user must be able to pass
# through it to reach such a cluster.
suite_env() {
    mkdir -p "$WORK/tmp"
    chmod 755 "$WORK" "$WORK/tmp"
    export TMPDIR=$WORK/tmp
}

stage_suites() {
    local f n=0
    suite_env
    if [ "$PG_UP" != 1 ]; then
        not_ok "end-to-end suites" "no PostgreSQL"
        return
    fi
    # Without the build stage (TEST_STAGES) an existing binary is used.
    if [ "$BUILT" = 0 ] || [ ! -x "$PGCDC" ]; then
        not_ok "end-to-end suites" "pgcdc did not build"
        return
    fi
    for f in "$ROOT/tests/suite_${TEST_SUITES:-}"*.py; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        run_script "$(basename "$f")" "$SUITE_TIMEOUT" "$PYTHON" "$f"
    done
    [ "$n" -gt 0 ] || note "no suites matched tests/suite_${TEST_SUITES:-}*.py"
}

stage_optional() {
    local entry path limit
    suite_env
    for entry in "${OPTIONAL[@]}"; do
        path=${entry%%|*}
        limit=${entry##*|}
        if [ ! -f "$ROOT/$path" ]; then
            note "skip: $path not present"
            continue
        fi
        case "$path" in
            *.py) run_script "$path" "$limit" "$PYTHON" "$ROOT/$path" ;;
            *) run_script "$path" "$limit" bash "$ROOT/$path" ;;
        esac
    done
}

# ---- main ----------------------------------------------------------------

START=$(date +%s)
for stage in "${STAGES[@]}"; do
    if [ -n "${TEST_STAGES:-}" ] && ! [[ " $TEST_STAGES " == *" $stage "* ]]; then
        continue
    fi
    note "==== $stage"
    "stage_$stage"
done

passed=$(grep -c '^ok - ' "$LOG")
failed=$(grep -c '^not ok - ' "$LOG")
note "took $(($(date +%s) - START))s"
if [ "$failed" -gt 0 ]; then
    echo "# failures:"
    grep '^not ok - ' "$LOG"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
