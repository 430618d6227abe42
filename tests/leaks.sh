#!/usr/bin/env bash
# leaks.sh -- runs the pipeline and conformance suites against a pgcdc built
# with AddressSanitizer and LeakSanitizer, and fails when any run of it
# reports a leak or a memory error.  Every pgcdc the suites start is stopped
# with SIGTERM, so each one exits through main() and LeakSanitizer checks it.
# Needs the cluster test.sh started (PGHOST, PGPORT, PGUSER).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 0
OUT=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-leaks.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
BIN=$PWD/build/pgcdc-asan
if ! make -s asan >"$OUT/build.log" 2>&1; then
    echo "not ok - leaks: ASan build failed: $(head -c 300 "$OUT/build.log")"
    exit 0
fi
export ASAN_OPTIONS="detect_leaks=1:log_path=$OUT/asan:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$OUT/ubsan"
for suite in tests/suite_pipeline.py tests/conformance.py; do
    name=$(basename "$suite" .py)
    if PGCDC=$BIN timeout 900 /usr/bin/python3 "$suite" >"$OUT/$name.out" 2>&1; then
        echo "ok - leaks: $name suite passes under ASan/LSan"
    else
        echo "not ok - leaks: $name suite under ASan/LSan: $(grep '^not ok' "$OUT/$name.out" | head -3 | tr '\n' ' ')"
    fi
done
reports=$(ls "$OUT"/asan.* "$OUT"/ubsan.* 2>/dev/null)
if [ -z "$reports" ]; then
    echo "ok - leaks: no leak or memory error reported by any pgcdc run"
else
    echo "not ok - leaks: sanitizer reports: $(head -c 600 $reports | tr '\n' ' ')"
fi
exit 0
