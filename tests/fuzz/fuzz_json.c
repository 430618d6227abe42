/* fuzz_json.c -- libFuzzer target for json.c.
 *
 * The input, in a heap buffer of exactly its size, is tokenized whole and
 * again one byte at a time; both must give the same result and the same
 * tokens (abort otherwise).  w2j_parse must agree with the tokenizer, give
 * exactly what w2j_parse_tokens gives (its one-pass reader is only a faster
 * way to the same record), and keep its slices inside the input; every
 * string token that json_unescape accepts must compare equal to its
 * unescaped form with json_str_eq.  w2j_project's output must be no longer
 * than the input and parse again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

#define NTOK 512
#define NCOL 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_tok whole[NTOK], step[NTOK];

static int same_toks(int n)
{
    for (int i = 0; i < n; i++)
        if (whole[i].type != step[i].type || whole[i].start != step[i].start ||
            whole[i].end != step[i].end || whole[i].size != step[i].size ||
            whole[i].parent != step[i].parent)
            return 0;
    return 1;
}

static int inside(slice s, const char *buf, size_t size)
{
    return s.p >= buf && s.n <= size && (size_t)(s.p - buf) <= size - s.n;
}

/* Errors are sticky and a complete value only accepts more whitespace, so
 * the last call's result is the answer.  Small inputs see an exact-size copy
 * of every prefix, so a read past len is caught; larger ones reuse the
 * buffer to stay linear. */
static int bytewise(const char *buf, size_t size)
{
    json_parser p;
    int rc = JSON_PARTIAL;
    json_init(&p);
    for (size_t len = 1; len <= size; len++) {
        if (size <= 512) {
            char *b = malloc(len);
            if (!b)
                abort();
            memcpy(b, buf, len);
            rc = json_parse(&p, b, len, step, NTOK);
            free(b);
        } else {
            rc = json_parse(&p, buf, len, step, NTOK);
        }
    }
    if (size == 0)
        rc = json_parse(&p, buf, 0, step, NTOK);
    return rc;
}

static void check_strings(const char *buf, int n)
{
    for (int i = 0; i < n; i++) {
        if (whole[i].type != JSON_STRING)
            continue;
        slice s = { buf + whole[i].start, whole[i].end - whole[i].start };
        char *out = malloc(s.n ? s.n : 1);
        if (!out)
            abort();
        long k = json_unescape(s.p, s.n, out, s.n);
        if (k > (long)s.n)
            abort();
        if (k >= 0 && !json_str_eq(s, out, (size_t)k))
            abort();
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    if (size)
        memcpy(buf, data, size);

    json_parser p;
    json_init(&p);
    int nw = json_parse(&p, buf, size, whole, NTOK);
    int ns = bytewise(buf, size);
    if (nw != ns || (nw > 0 && !same_toks(nw)))
        abort();
    if (nw > 0)
        check_strings(buf, nw);
    if (nw > 0) {
        /* a projection is no longer than the input and still one JSON value */
        static char *const keep[] = { "a", "id", "name" };
        char *out = malloc(size ? size : 1);
        if (!out)
            abort();
        long pl = w2j_project(buf, size, keep, 3, step, NTOK, out, size);
        if (pl > (long)size)
            abort();
        if (pl >= 0) {
            json_parser q;
            json_init(&q);
            if (json_parse(&q, out, (size_t)pl, step, NTOK) <= 0)
                abort();
        }
        free(out);
    }

    w2j_col cols[NCOL], tcols[NCOL];
    w2j_record r, tr;
    int rc = w2j_parse(buf, size, step, NTOK, cols, NCOL, &r);
    /* the one-pass reader must give exactly what the tokenizer path gives */
    if (w2j_parse_tokens(buf, size, step, NTOK, tcols, NCOL, &tr) != rc)
        abort();
    if (rc == JSON_OK) {
        if (r.action != tr.action || r.has_xid != tr.has_xid || r.xid != tr.xid ||
            r.lsn.p != tr.lsn.p || r.lsn.n != tr.lsn.n || r.nextlsn.p != tr.nextlsn.p ||
            r.nextlsn.n != tr.nextlsn.n || r.schema.p != tr.schema.p || r.schema.n != tr.schema.n ||
            r.table.p != tr.table.p || r.table.n != tr.table.n || r.ncols != tr.ncols ||
            r.nident != tr.nident)
            abort();
        for (unsigned i = 0; i < r.ncols + r.nident; i++)
            if (cols[i].name.p != tcols[i].name.p || cols[i].name.n != tcols[i].name.n ||
                cols[i].type.p != tcols[i].type.p || cols[i].type.n != tcols[i].type.n ||
                cols[i].value.p != tcols[i].value.p || cols[i].value.n != tcols[i].value.n ||
                cols[i].vtype != tcols[i].vtype)
                abort();
    }
    if (nw < 0 ? rc != nw : (rc != JSON_OK && rc != JSON_INVALID && rc != JSON_NOMEM))
        abort();
    if (rc == JSON_OK) {
        if (r.ncols + r.nident > NCOL)
            abort();
        if (!inside(r.lsn, buf, size) || !inside(r.nextlsn, buf, size) ||
            !inside(r.schema, buf, size) || !inside(r.table, buf, size))
            abort();
        for (unsigned i = 0; i < r.ncols + r.nident; i++)
            if (!inside(cols[i].name, buf, size) ||
                !inside(cols[i].type, buf, size) ||
                !inside(cols[i].value, buf, size) || cols[i].vtype > JSON_NULL)
                abort();
        uint64_t lsn;
        (void)lsn_parse(r.lsn.p, r.lsn.n, &lsn);
    }
    free(buf);
    return 0;
}
