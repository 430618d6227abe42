#!/usr/bin/env bash
# mutants.sh -- measures whether the tests catch plausible bugs.
#
# The table at the end of this file lists small source mutations: each an
# exact search-and-replace on one file (a find text that must occur exactly
# once, so the table cannot silently rot when the code changes) and the
# narrowest test command that must fail when the bug is planted.  For each
# mutant, a scratch copy of the tree (never the tree itself) gets the
# mutation, pgcdc is rebuilt and the command runs, twice, to show the
# verdict is deterministic:
#   caught   the command failed both times
#   FLAKY    it failed only once
#   MISSED   it passed both times (the tests cannot see this bug)
# Before the mutants, every distinct command runs once on the unmutated
# copy and must pass with at least one "ok -" line, or the table is wrong.
# The last line is "score: C/N caught"; the exit status is 0 only when every
# mutant was caught both times and the table is sound.
#
# Usage: tests/mutants.sh [NAME-SUBSTRING...]   (make mutants runs them all)
# Environment: MUTANT_RUNS (default 2), MUTANT_TIMEOUT (seconds per test
# run, default 600; a timeout counts as a failure of the run, shown as such),
# MUTANT_KEEP=1 keeps the scratch directory, MUTANT_LIST=1 only lists,
# MUTANT_CHECK=1 only checks that every mutant still applies (seconds).
#
# Table syntax (the here-document at the end):
#   === <name>                 starts a mutant
#   file: <path>               file to mutate (relative to the tree)
#   test: <shell command>      run in the scratch tree; must exit non-zero
#   why: <text>                (optional) a known survivor's written reason;
#                              a MISSED mutant with a why is reported, not failed
#   --- find                   the lines up to the next marker: text to find
#   +++ replace                the lines up to the next marker: its replacement
# Several find/replace pairs may follow one another.  A block is taken
# verbatim (indentation included) up to the first empty line, which ends it,
# so a find text may be part of a line when it is a single line (and holds
# no empty line).  Lines starting with "#" outside blocks are comments.
# Test commands see PGCDC, PGHOST, PGPORT, PGUSER, PGDATABASE, PYTHON
# (/usr/bin/python3) and TMPDIR, as test.sh's suites do; tests/unit is
# rebuilt by a command that needs it ("make -s tests/unit && UNIT_ONLY=...").

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
if [ -z "${MUTANTS_COPY:-}" ]; then
    # run from a copy: the table may be edited, or the tree rebased, meanwhile
    copy=$(mktemp "${TMPDIR:-/tmp}/pgcdc-mutants-sh.XXXXXX") || exit 2
    cp "$ROOT/tests/mutants.sh" "$copy"
    MUTANTS_COPY=$copy MUTANTS_ROOT=$ROOT exec bash "$copy" "$@"
fi
ROOT=${MUTANTS_ROOT:-$ROOT}
cd "$ROOT" || exit 2
SELF=$MUTANTS_COPY
RUNS=${MUTANT_RUNS:-2}
LIMIT=${MUTANT_TIMEOUT:-600}
PYTHON=/usr/bin/python3
export PYTHON PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-mutants.XXXXXX") || exit 2
chmod 755 "$WORK"
TREE=$WORK/tree
ORIG=$WORK/orig

# shellcheck source=tests/pg.sh
. "$ROOT/tests/pg.sh"

cleanup() {
    pg_stop
    rm -f "$SELF"
    if [ -n "${MUTANT_KEEP:-}" ]; then
        echo "# scratch kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the table -------------------------------------------------------------

# mutate.py list | apply N DIR | names: parses the table of this file.
cat >"$WORK/mutate.py" <<'EOF'
import json, sys

def parse(path):
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    start = lines.index(": <<'__TABLE__'") + 1
    lines = lines[:lines.index("__TABLE__")]
    muts, cur, block, buf = [], None, None, []

    def end_block():
        nonlocal block, buf
        if block is not None:
            body = "\n".join(buf)
            if block == "find":
                cur["pairs"].append([body, None])
            else:
                if not cur["pairs"] or cur["pairs"][-1][1] is not None:
                    sys.exit("table: '+++ replace' without its '--- find' in %r" % cur["name"])
                cur["pairs"][-1][1] = body
        block, buf = None, []

    for ln, line in enumerate(lines[start:], start + 1):
        if line.startswith("=== "):
            end_block()
            cur = {"name": line[4:].strip(), "file": None, "test": None, "why": "",
                   "pairs": [], "line": ln}
            muts.append(cur)
        elif line in ("--- find", "+++ replace"):
            if cur is None:
                sys.exit("table line %d: block outside a mutant" % ln)
            end_block()
            block = "find" if line == "--- find" else "replace"
        elif block is not None and line:
            buf.append(line)
        elif block is not None:
            end_block()
        elif line.startswith("#") or not line.strip():
            continue
        elif cur is not None and ":" in line:
            k, v = line.split(":", 1)
            if k not in ("file", "test", "why"):
                sys.exit("table line %d: unknown key %r" % (ln, k))
            cur[k] = v.strip()
        else:
            sys.exit("table line %d: cannot parse %r" % (ln, line))
    end_block()
    names = set()
    for m in muts:
        # blank lines that separate table entries are not part of a block
        for p in m["pairs"]:
            p[0] = p[0].rstrip("\n")
            p[1] = (p[1] or "").rstrip("\n")
        if not m["file"] or not m["test"] or not m["pairs"]:
            sys.exit("table: mutant %r (line %d) needs file, test and a find/replace" % (m["name"], m["line"]))
        if any(p[1] is None or p[0] == p[1] or not p[0] for p in m["pairs"]):
            sys.exit("table: mutant %r has an empty or unchanged find/replace" % m["name"])
        if m["name"] in names:
            sys.exit("table: mutant name %r twice" % m["name"])
        names.add(m["name"])
    return muts

cmd, table = sys.argv[1], sys.argv[2]
muts = parse(table)
if cmd == "list":
    for i, m in enumerate(muts):
        print("%d\t%s\t%s\t%s" % (i, m["name"], m["file"], m["test"]))
elif cmd == "why":
    print(muts[int(sys.argv[3])]["why"])
elif cmd == "apply":
    m = muts[int(sys.argv[3])]
    path = sys.argv[4] + "/" + m["file"]
    src = open(path, encoding="utf-8").read()
    for find, repl in m["pairs"]:
        n = src.count(find)
        if n != 1:
            print("find text occurs %d times in %s (must be exactly once):\n%s" % (n, m["file"], find))
            sys.exit(1)
        src = src.replace(find, repl)
    open(path, "w", encoding="utf-8").write(src)
EOF

table() {
    local what=$1
    shift
    "$PYTHON" "$WORK/mutate.py" "$what" "$SELF" "$@"
}

LISTING=$(table list) || exit 2
if [ -n "${MUTANT_LIST:-}" ]; then
    printf '%s\n' "$LISTING" | cut -f2,3,4
    exit 0
fi
if [ -n "${MUTANT_CHECK:-}" ]; then
    # only whether every find text is still in the tree, exactly once
    rc=0
    while IFS=$'\t' read -r idx name file cmd; do
        mkdir -p "$WORK/chk/$(dirname "$file")"
        cp "$ROOT/$file" "$WORK/chk/$file"
        if out=$(table apply "$idx" "$WORK/chk"); then
            echo "applies  $name"
        else
            echo "ERROR    $name: $out"
            rc=1
        fi
    done <<<"$LISTING"
    exit $rc
fi

# ---- scratch tree, database ------------------------------------------------

mkdir -p "$TREE" "$WORK/tmp" "$WORK/logs"
chmod 755 "$WORK/tmp"
# the tree as it is now, committed or not, without build products
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
    tar -C "$ROOT" --null -T - -cf - 2>/dev/null | tar -C "$TREE" -xf -
cp -a "$TREE" "$ORIG"
export TMPDIR=$WORK/tmp
export PGCDC=$TREE/pgcdc
# a mutant may well draw a warning; it must build all the same (the tests,
# not the compiler, are being measured)
export MAKEFLAGS="WARN=-w"

build() {
    make -s -C "$TREE" pgcdc >"$WORK/logs/build" 2>&1
}

if ! build; then
    cat "$WORK/logs/build"
    echo "error: the unmutated tree does not build"
    exit 2
fi
if ! pg_start 2>"$WORK/logs/pg"; then
    cat "$WORK/logs/pg"
    echo "error: no PostgreSQL"
    exit 2
fi
# pg_start exports PGHOST PGPORT PGUSER PGDATABASE for the test commands

# run_test LOG CMD: the test command in the scratch tree; returns its status
# (124 for a timeout).
run_test() {
    (cd "$TREE" && timeout -k 10 "$LIMIT" bash -c "$2") >"$1" 2>&1 </dev/null
}

# ---- selection, baseline ---------------------------------------------------

SEL=()
while IFS=$'\t' read -r idx name file cmd; do
    if [ $# -gt 0 ]; then
        want=0
        for a in "$@"; do
            [[ "$name" == *"$a"* ]] && want=1
        done
        [ "$want" = 1 ] || continue
    fi
    SEL+=("$idx")
done <<<"$LISTING"
if [ ${#SEL[@]} = 0 ]; then
    echo "error: no mutant matches: $*"
    exit 2
fi

field() { printf '%s\n' "$LISTING" | awk -F'\t' -v i="$1" -v f="$2" '$1 == i { print $f }'; }

bad_table=0
declare -A BASE
echo "# baseline: each test command on the unmutated tree"
for idx in "${SEL[@]}"; do
    cmd=$(field "$idx" 4)
    [ -n "${BASE[$cmd]:-}" ] && continue
    log=$WORK/logs/base-$idx
    t0=$(date +%s)
    run_test "$log" "$cmd"
    rc=$?
    if [ "$rc" = 0 ] && grep -q '^ok - ' "$log" && ! grep -q '^not ok - ' "$log"; then
        BASE[$cmd]=ok
        echo "# baseline ok ($(($(date +%s) - t0)) s): $cmd"
    else
        BASE[$cmd]=bad
        bad_table=1
        echo "error: baseline fails (status $rc) for: $cmd"
        grep -E '^(not )?ok - ' "$log" | head -n 20
        tail -n 20 "$log"
    fi
done

# ---- the mutants -------------------------------------------------------------

caught=0 total=0 known=0
SUMMARY=()
for idx in "${SEL[@]}"; do
    name=$(field "$idx" 2)
    file=$(field "$idx" 3)
    cmd=$(field "$idx" 4)
    total=$((total + 1))
    cp "$ORIG/$file" "$TREE/$file"
    if ! out=$(table apply "$idx" "$TREE"); then
        echo "error: $name: $out"
        SUMMARY+=("ERROR    $name (cannot be applied)")
        bad_table=1
        continue
    fi
    if ! build; then
        echo "error: $name: does not build"
        tail -n 20 "$WORK/logs/build"
        SUMMARY+=("ERROR    $name (does not build)")
        bad_table=1
        cp "$ORIG/$file" "$TREE/$file"
        continue
    fi
    fails=0 how=""
    t0=$(date +%s)
    for run in $(seq 1 "$RUNS"); do
        log=$WORK/logs/m$idx-$run
        run_test "$log" "$cmd"
        rc=$?
        if [ "$rc" != 0 ]; then
            fails=$((fails + 1))
            if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
                how="timed out after $LIMIT s"
            elif [ -z "$how" ]; then
                how=$(grep -m1 '^not ok - ' "$log" | cut -c1-160)
                [ -n "$how" ] || how="exit status $rc: $(tail -n 1 "$log" | cut -c1-120)"
            fi
        fi
    done
    cp "$ORIG/$file" "$TREE/$file"
    secs=$(($(date +%s) - t0))
    if [ "$fails" = "$RUNS" ]; then
        caught=$((caught + 1))
        verdict="caught  "
    elif [ "$fails" = 0 ]; then
        verdict="MISSED  "
        why=$(table why "$idx")
        if [ -n "$why" ]; then
            known=$((known + 1))
            verdict="survives"
            how="known: $why"
        fi
    else
        verdict="FLAKY   "
    fi
    line="$verdict $name ($fails/$RUNS runs failed, ${secs} s)"
    echo "$line"
    [ -n "$how" ] && echo "#   $how"
    SUMMARY+=("$line")
done

echo "# ---- summary"
printf '%s\n' "${SUMMARY[@]}"
echo "score: $caught/$total caught$([ "$known" = 0 ] || echo " ($known known survivors, each with a written reason)")"
[ "$bad_table" = 0 ] && [ "$caught" = "$total" ]
exit

# ---- the table (read by mutate.py, never executed) ---------------------------
: <<'__TABLE__'
# Each mutant plants one plausible bug in a security- or data-critical check.
# Keep the test commands narrow: the whole table runs twice per mutant.

=== slow consumer: 1 MiB of slack over max_queue
file: pgcdc.c
test: $PYTHON tests/suite_ops.py 'dropped{reason=slow}'
--- find
    if (f->change && c->qn && c->qbytes + f->len > S.cfg.max_queue) {
+++ replace
    if (f->change && c->qn && c->qbytes + f->len > S.cfg.max_queue + 1048576) {

=== slot confirmed inside a transaction (idle rule without its guards)
file: pgcdc.c
test: REPL_ONLY=10 $PYTHON tests/suite_replication.py
--- find
    if (!S.repl.in_txn && S.repl.wal_end > pos &&
        S.now - S.repl.last_txn_ms >= (int64_t)S.cfg.status_interval * 1000)
        pos = S.repl.wal_end;
+++ replace
    if (S.repl.wal_end > pos)
        pos = S.repl.wal_end;

=== slot confirmed past the commit it handed out (SIGKILL resume judged)
file: pgcdc.c
test: REPL_ONLY=2 $PYTHON tests/suite_replication.py
--- find
    if (!S.repl.in_txn && S.repl.wal_end > pos &&
        S.now - S.repl.last_txn_ms >= (int64_t)S.cfg.status_interval * 1000)
        pos = S.repl.wal_end;
+++ replace
    if (S.repl.wal_end > pos)
        pos = S.repl.wal_end;

=== grant MAC compared on 19 of 20 bytes
file: grant.c
test: $PYTHON tests/suite_grants.py 'each byte'
--- find
    if (!mac_equal(mac, want, 20)) {
+++ replace
    if (!mac_equal(mac, want, 19)) {

=== resume seam: a client ahead of the restarted stream gets its since change again
file: pgcdc.c
test: $PYTHON tests/suite_resume.py 'nothing twice'
--- find
    if (pos_cmp(f->lsn, f->idx, c->since_lsn, c->since_idx) <= 0)
        return 1;
+++ replace
    if (pos_cmp(f->lsn, f->idx, c->since_lsn, c->since_idx) < 0)
        return 1;

# The history's own seam (hist_after: the first frame after since) is
# guarded twice: seen_already drops a replayed frame at or before since as
# well, so a mutant of hist_after alone cannot be seen from outside.

=== resume: 410 decided on the commit LSN alone
file: pgcdc.c
test: $PYTHON tests/suite_resume.py '410'
--- find
        if (!hold && pos_cmp(slsn, sidx, S.hist.floor_lsn, S.hist.floor_idx) < 0) {
+++ replace
        if (!hold && slsn < S.hist.floor_lsn) {

=== reconnect: the last change sent is sent again
file: pgcdc.c
test: REPL_ONLY=1 $PYTHON tests/suite_replication.py
--- find
    if (S.hist.have_last && pos_cmp(S.repl.cur_commit, idx, S.hist.last_lsn, S.hist.last_idx) <= 0)
+++ replace
    if (S.hist.have_last && pos_cmp(S.repl.cur_commit, idx, S.hist.last_lsn, S.hist.last_idx) < 0)

=== token compared on the shorter length (a prefix passes)
file: pgcdc.c
test: $PYTHON tests/suite_access.py 'token via'
--- find
    unsigned char d = (unsigned char)(an != bn);
+++ replace
    unsigned char d = 0;

=== Origin matched as a prefix of an allowed one (word lists compared on a prefix)
file: query.c
test: $PYTHON tests/suite_access.py 'allowed_origins'
--- find
        if (l->v[i].n == n && !memcmp(l->v[i].p, s, n))
+++ replace
        if (l->v[i].n <= n && !memcmp(l->v[i].p, s, l->v[i].n))

=== Origin default: the server's own origin matched as a prefix
file: http.c
test: $PYTHON tests/suite_access.py 'look-alike'
--- find
    if (o.n - k != host.n)
        return 0;
+++ replace
    if (o.n - k < host.n)
        return 0;

=== Origin default: any origin allowed when none is listed
file: http.c
test: $PYTHON tests/suite_harden.py 'default Origin policy'
--- find
        return 1;
    return -1;
}
+++ replace
        return 1;
    return allowed && allowed->n ? -1 : 1;
}

=== UTF-8: surrogates (ED A0..BF) accepted
file: ws.c
test: make -s tests/unit && UNIT_ONLY='utf8|UTF-8' ./tests/unit
--- find
    case U8_ED: hi = 0x9F; next = U8_TAIL1; break;
+++ replace
    case U8_ED: hi = 0xBF; next = U8_TAIL1; break;

=== masking: unmasked client frames accepted
file: ws.c
test: make -s tests/unit && UNIT_ONLY='unmasked' ./tests/unit
--- find
        if (!(p->hdr[1] & 0x80)) {
            *code = WS_CLOSE_PROTOCOL;      /* client frames must be masked */
+++ replace
        if (0) {
            *code = WS_CLOSE_PROTOCOL;      /* client frames must be masked */

=== close codes: 1015 (reserved) accepted from a client
file: ws.c
test: make -s tests/unit && UNIT_ONLY='ws close codes|bad close payloads' ./tests/unit
--- find
           (code >= 1007 && code <= 1014) ||
+++ replace
           (code >= 1007 && code <= 1015) ||

# ---- snapshots: which changes a snapshot already holds (snapshot.c)

=== snapshot: xid at xmax taken as visible (off by one)
file: snapshot.c
test: make -s tests/unit && UNIT_ONLY='snapshot: visibility' ./tests/unit
--- find
    if (x >= xmax)
        return 0;
+++ replace
    if (x > xmax)
        return 0;

=== snapshot: 32-bit xid given the snapshot's epoch without wrap-around
file: snapshot.c
test: make -s tests/unit && UNIT_ONLY='snapshot: 32-bit xids|snapshot: visibility' ./tests/unit
--- find
    return (uint64_t)((int64_t)near + d);
+++ replace
    return (near & ~(uint64_t)0xFFFFFFFF) | xid;

=== snapshot: the in-progress list skipped
file: snapshot.c
test: make -s tests/unit && UNIT_ONLY='snapshot: visibility' ./tests/unit
--- find
    size_t lo = 0, hi = nxip;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (xip[mid] == x)
+++ replace
    size_t lo = 0, hi = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (xip[mid] == x)

# ---- JWT verification (jwt.c)

=== jwt: an unknown alg verified as HS256
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt algorithm refusals' ./tests/unit
--- find
        return fail(err, errlen, JWT_EALG, "token algorithm is not HS256 or RS256");
+++ replace
        t->alg = JWT_HS256;

=== jwt: exp not checked
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt exp' ./tests/unit
--- find
    if (now >= t->exp)
+++ replace
    if (0 && now >= t->exp)

=== jwt: HS256 signature compared on its first 16 bytes
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt' ./tests/unit
--- find
        if (t->siglen != 32 || !ct_equal(mac, t->sig, 32))
+++ replace
        if (t->siglen != 32 || !ct_equal(mac, t->sig, 16))

=== jwt: RS256 padding compared without the hash
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt' ./tests/unit
--- find
    return ct_equal(em, want, k->k);
+++ replace
    return ct_equal(em, want, k->k - 32);

=== jwt: kid ignored (the first key used)
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt' ./tests/unit
--- find
    if (t->has_kid) {
        for (unsigned i = 0; i < ks->n; i++)
+++ replace
    if (t->has_kid && ks->n) {
        return &ks->keys[0];
        for (unsigned i = 0; i < ks->n; i++)

=== ping flood: pongs queued without bound for a client that never reads
file: pgcdc.c
test: $PYTHON tests/conformance.py robust
--- find
            if (c->qbytes > S.cfg.max_queue) {   /* pings, never reading pongs */
+++ replace
            if (0) {   /* pings, never reading pongs */

=== rules: a claim's in-list values joined and parsed again as a list
file: query.c
test: $PYTHON tests/suite_jwt.py 'placeholder injection'
--- find
    size_t tl = strlen(f->text) + 2;
    for (unsigned i = 0; i < nv; i++)
        tl += 2 * v[i].n + 1;
+++ replace
    if (f->op == OP_IN && nv) {
        size_t jl = 0, o = 0;
        for (unsigned i = 0; i < nv; i++)
            jl += v[i].n + 1;
        char *j = arena_get(a, jl + 1);
        fval *pv = arena_get(a, (jl + 1) * sizeof *pv);
        if (j && pv) {
            for (unsigned i = 0; i < nv; i++) {
                if (i)
                    j[o++] = ',';
                memcpy(j + o, v[i].s, v[i].n);
                o += v[i].n;
            }
            j[o] = 0;
            int k = parse_in_list(a, j, o, pv, (unsigned)(jl + 1));
            if (k > 0) {
                f->text = j;
                f->vals = pv;
                f->nvals = (unsigned)k;
                return 0;
            }
        }
    }
    size_t tl = strlen(f->text) + 2;
    for (unsigned i = 0; i < nv; i++)
        tl += 2 * v[i].n + 1;

=== jwt: a connection outlives its token's exp
file: pgcdc.c
test: $PYTHON tests/suite_jwt.py 'token expiry'
--- find
    c->token_exp = S.tok->exp;
+++ replace
    c->token_exp = 0;

=== rules: a rule of another table in the same schema applied
file: query.c
test: $PYTHON tests/suite_jwt.py 'rules'
--- find
        else if (!strcmp(rules[i].schema, schema) && !strcmp(rules[i].table, table))
+++ replace
        else if (!strcmp(rules[i].schema, schema))

=== jwt: HS256 signature compared on 31 of 32 bytes
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt' ./tests/unit
--- find
        if (t->siglen != 32 || !ct_equal(mac, t->sig, 32))
+++ replace
        if (t->siglen != 32 || !ct_equal(mac, t->sig, 31))

=== jwt: RS256 signature compared without its last byte
file: jwt.c
test: make -s tests/unit && UNIT_ONLY='jwt' ./tests/unit
--- find
    return ct_equal(em, want, k->k);
+++ replace
    return ct_equal(em, want, k->k - 1);

# ---- Server-Sent Events

=== SSE: Last-Event-ID ignored
file: pgcdc.c
test: $PYTHON tests/suite_sse.py 'Last-Event-ID'
--- find
        pd->prm.since = pd->leid;
+++ replace
        (void)pd->leid;

=== SSE: a since parameter wins over Last-Event-ID
file: pgcdc.c
test: $PYTHON tests/suite_sse.py 'Last-Event-ID'
--- find
        pd->prm.since = pd->leid;
+++ replace
        if (!pd->prm.since)
            pd->prm.since = pd->leid;

=== SSE: a held position served once replication starts, even if older than the history
file: pgcdc.c
test: $PYTHON tests/suite_sse.py 'held open'
--- find
            if (pos_cmp(c->since_lsn, c->since_idx, S.hist.floor_lsn, S.hist.floor_idx) < 0) {
                log_info("client %llu %s: held position is older than the history", (unsigned long long)c->id,
+++ replace
            if (0) {
                log_info("client %llu %s: held position is older than the history", (unsigned long long)c->id,

# ---- subscription limits (query.c)

=== in-list cap: 1,001 values accepted (off by one)
file: query.c
test: make -s tests/unit && UNIT_ONLY='1000 in-list values|long in-lists' ./tests/unit
--- find
    if (nin > SPEC_MAX_IN) {
+++ replace
    if (nin > SPEC_MAX_IN + 1) {

=== in-list cap: counted per filter, not per subscription
file: query.c
test: make -s tests/unit && UNIT_ONLY='1000 in-list values|long in-lists' ./tests/unit
--- find
            nin += sp->filters[i].nvals;
+++ replace
            nin = sp->filters[i].nvals > nin ? sp->filters[i].nvals : nin;

=== filter cap: the query's own filter not counted (17 in all accepted)
file: query.c
test: make -s tests/unit && UNIT_ONLY='at most 16 filters' ./tests/unit
--- find
    if (nfilters + (c2 != NULL) > SPEC_MAX_FILTERS) {
+++ replace
    if (nfilters > SPEC_MAX_FILTERS) {

# ---- the snapshot seam end to end (pgcdc.c): which changes follow the rows

=== snapshot seam: the first transaction after the snapshot (xid = xmax) taken as seen
file: pgcdc.c
test: $PYTHON tests/suite_snapshot.py 'not yet visible'
--- find
    return xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip);
+++ replace
    return xid_visible(f->xid, v->xmin, v->xmax + 1, v->xip, v->nxip);

=== snapshot seam: transactions in progress at the snapshot taken as seen
file: pgcdc.c
test: $PYTHON tests/suite_snapshot.py 'not yet visible'
--- find
    return xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip);
+++ replace
    return xid_visible(f->xid, v->xmin, v->xmax, v->xip, 0);

=== snapshot seam: the history before the snapshot not searched for transactions it does not see
file: pgcdc.c
test: $PYTHON tests/suite_snapshot.py 'not yet visible'
--- find
    for (uint64_t seq = j->p0; seq-- > S.hist.first_seq; ) {
        frame *f = hist_at(seq);
        if (f->lsn >= v->wal || !xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip))
+++ replace
    for (uint64_t seq = j->p0; 0 && seq-- > S.hist.first_seq; ) {
        frame *f = hist_at(seq);
        if (f->lsn >= v->wal || !xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip))

=== snapshot seam: before the snapshot, only its in-progress list searched (not xids at or above xmax)
file: pgcdc.c
test: $PYTHON tests/suite_snapshot.py 'not yet visible'
--- find
        if (f->lsn >= v->wal || !xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip))
            j->scan = seq;
+++ replace
        if (v->nxip && !xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip) &&
            xid_widen(f->xid, v->xmax) < v->xmax)
            j->scan = seq;

=== coalescing: a transaction still arriving held until its commit
file: pgcdc.c
test: $PYTHON tests/suite_pipeline.py 'volume'
--- find
    if (!S.repl.in_txn || S.repl.turn_commit || c->state != C_WS || c->replaying || c->snap ||
        c->qbytes >= (COALESCE_BYTES < S.cfg.max_queue / 8 ? COALESCE_BYTES : S.cfg.max_queue / 8)) {
+++ replace
    if (!S.repl.in_txn || S.repl.turn_commit || c->state != C_WS || c->replaying || c->snap) {
--- find
    if (S.now - c->wait_ms < COALESCE_MS)
        return 1;
+++ replace
    return 1;

# Not a row: snap_hides() treating a change exactly at the snapshot's WAL
# position as one the snapshot has is equivalent: a transaction the snapshot
# sees committed has its commit record before that position, so
# xid_visible() decides the same.

__TABLE__
