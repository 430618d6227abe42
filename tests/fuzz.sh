#!/usr/bin/env bash
# tests/fuzz.sh -- the fuzz stage of test.sh.
#
# For each target (ws, json, query, http, request: the whole /ws request path
# before the catalog, jwt, jwks):
#   1. builds tests/fuzz/fuzz_<target>.c with clang and libFuzzer (plus ASan
#      and UBSan) into build/fuzz/, and runs it for FUZZ_SECONDS (default 20)
#      on a scratch copy of tests/fuzz/corpus/<target>/, so the repository
#      is never written to;
#   2. builds the same target with gcc, ASan and UBSan around
#      tests/fuzz/replay.c instead of libFuzzer, and replays the committed
#      corpus through it.
# Prints one "ok - ..." or "not ok - ...: why" line per step (test.sh counts
# them) and always exits 0.  Without clang or libFuzzer the fuzzing runs are
# skipped with a note; the replays still run.  A crashing input is kept in
# build/fuzz/ and named in the failure line.
#
# Knobs: FUZZ_SECONDS=N (per target; 0 skips the runs), FUZZ_TARGETS="ws json"
# (a subset).

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 0
ROOT=$PWD
SECS=${FUZZ_SECONDS:-20}
case $SECS in ''|*[!0-9]*) SECS=20 ;; esac
TARGETS=${FUZZ_TARGETS:-ws json query http request jwt jwks sse}
OUT=$ROOT/build/fuzz

mkdir -p "$OUT" || { echo "not ok - fuzz: cannot create $OUT"; exit 0; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-fuzz.XXXXXX") || { echo "not ok - fuzz: no temp dir"; exit 0; }
trap 'rm -rf "$TMP"' EXIT

# The builds (flags, and the units each target links) are the Makefile's:
# build/fuzz/fuzz_TARGET (clang, libFuzzer) and build/fuzz/replay_TARGET
# (gcc, around tests/fuzz/replay.c).
known() {
    [ -f "$ROOT/tests/fuzz/fuzz_$1.c" ] && make -s -n "build/fuzz/fuzz_$1" >/dev/null 2>&1
}

# Is there a clang that can link a libFuzzer target?
HAVE_FUZZER=0
if ! command -v clang >/dev/null 2>&1; then
    echo "# skip: clang not found, so no fuzzing runs (install clang and libclang-rt-dev)"
else
    printf '%s\n' '#include <stdint.h>' '#include <stddef.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$TMP/probe.c"
    if clang -fsanitize=fuzzer,address,undefined "$TMP/probe.c" -o "$TMP/probe" \
            >"$TMP/probe.log" 2>&1; then
        HAVE_FUZZER=1
    else
        echo "# skip: clang cannot link libFuzzer (libclang-rt-dev missing?), so no fuzzing runs"
    fi
fi

# excerpt LOG: the lines of a sanitizer report worth showing.
excerpt() {
    grep -E 'ERROR|SUMMARY|runtime error|check failed|#[0-9]+ .* in [^ ]+ /' "$1" | grep -v 'fuzzer::' |
        head -n 12 | sed 's/^/  /'
}

# fuzz TARGET: build with libFuzzer and run for SECS on a copy of the corpus.
fuzz() {
    local t=$1 bin log corpus runs crash
    bin=$OUT/fuzz_$t log=$TMP/fuzz_$t.log corpus=$TMP/corpus_$t
    # shellcheck disable=SC2046
    if ! make -s -B "build/fuzz/fuzz_$t" >"$log" 2>&1; then
        tail -n 20 "$log"
        echo "not ok - fuzz $t: clang build failed"
        return
    fi
    mkdir -p "$corpus"
    cp -R "$ROOT/tests/fuzz/corpus/$t/." "$corpus/" 2>/dev/null
    rm -f "$OUT/crash-$t"
    "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -exact_artifact_path="$OUT/crash-$t" \
        "$corpus" >"$log" 2>&1 </dev/null
    local rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    if [ "$rc" = 0 ]; then
        echo "ok - fuzz $t (${runs:-?} runs, no crash)"
        return
    fi
    crash=$OUT/crash-$t
    excerpt "$log"
    if [ -f "$crash" ]; then
        echo "not ok - fuzz $t: crash after ${runs:-?} runs, input kept in build/fuzz/crash-$t (replay: $bin $crash)"
    else
        echo "not ok - fuzz $t: libFuzzer exited with status $rc"
    fi
}

# replay TARGET: gcc + sanitizers around replay.c, over the committed corpus.
replay() {
    local t=$1 bin log
    bin=$OUT/replay_$t log=$TMP/replay_$t.log
    # shellcheck disable=SC2046
    if ! make -s -B "build/fuzz/replay_$t" >"$log" 2>&1; then
        tail -n 20 "$log"
        echo "not ok - replay $t corpus: gcc build failed"
        return
    fi
    # the subshell keeps bash's "Aborted" notice out of the output
    if ( "$bin" "$ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1 </dev/null; exit $? ) 2>/dev/null; then
        echo "ok - replay $t corpus ($(sed -n 's/^replayed \([0-9]*\) inputs/\1/p' "$log") inputs)"
    else
        excerpt "$log"
        echo "not ok - replay $t corpus: crashed (run $bin tests/fuzz/corpus/$t)"
    fi
}

for t in $TARGETS; do
    if ! known "$t"; then
        echo "not ok - fuzz $t: no tests/fuzz/fuzz_$t.c"
        continue
    fi
    if [ ! -d "$ROOT/tests/fuzz/corpus/$t" ]; then
        echo "not ok - fuzz $t: no corpus in tests/fuzz/corpus/$t"
        continue
    fi
    if [ "$HAVE_FUZZER" = 1 ] && [ "$SECS" -gt 0 ]; then
        fuzz "$t"
    fi
    if command -v gcc >/dev/null 2>&1; then
        replay "$t"
    else
        echo "# skip: gcc not found, no replay of the $t corpus"
    fi
done
exit 0
