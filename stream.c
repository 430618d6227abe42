/* stream.c -- the identity of a change stream, the "stream" member of
 * /health (docs/protocol.md, Resume): two instances show the same value
 * exactly when positions from one are positions in the other.
 *
 * Pure: a SHA-1 over a normalized text of the settings; no I/O.
 */
#include "pgcdc.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Hashes prefix and, when s is not NULL, "<n>:", s[0..n) and end (unless
 * end is 0). */
static void put(sha1_ctx *c, const char *prefix, size_t n, const char *s, char end)
{
    char num[24];
    size_t k = sizeof num, v = n;
    sha1_update(c, prefix, strlen(prefix));
    if (!s)
        return;
    num[--k] = ':';
    do {
        num[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sha1_update(c, num + k, sizeof num - k);
    sha1_update(c, s, n);
    if (end)
        sha1_update(c, &end, 1);
}

/* wal2json's boolean options and their defaults: a value equal to the
 * default is the same stream as leaving the option out. */
static const struct {
    const char *name;
    char dflt;
} w2j_bools[] = {
    { "include-xids", 0 }, { "include-timestamp", 0 }, { "include-schemas", 1 },
    { "include-types", 1 }, { "include-typmod", 1 }, { "include-type-oids", 0 },
    { "include-domain-data-type", 0 }, { "include-column-positions", 0 },
    { "include-origin", 0 }, { "include-not-null", 0 }, { "include-default", 0 },
    { "include-pk", 0 }, { "numeric-data-types-as-string", 0 }, { "pretty-print", 0 },
    { "write-in-chunks", 0 }, { "include-lsn", 0 }, { "include-transaction", 1 },
};

static int slice_cmp(const void *a, const void *b)
{
    const slice *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Splits s at its commas (not at "\\," when escapes) into trimmed slices;
 * out has room for one more than the commas in s.  Returns the count. */
static size_t split_commas(const char *s, int escapes, slice *out)
{
    list_iter it;
    size_t k = 0;
    list_begin(&it, s, strlen(s), escapes);
    while (list_next(&it, &out[k]))
        k++;
    return k;
}

int stream_id(const char *sysid, const char *dbname, const char *tables,
              const char *options, char out[17])
{
    sha1_ctx b;
    size_t cap = 2;
    for (const char *p = tables ? tables : ""; *p; p++)
        cap += *p == ',';
    for (const char *p = options ? options : ""; *p; p++)
        cap += *p == ',';
    slice *v = malloc(cap * sizeof *v);
    slice *o = malloc(cap * 2 * sizeof *o);
    if (!v || !o) {
        free(v);
        free(o);
        return -1;
    }

    sha1_init(&b);
    put(&b, "pgcdc stream 1\n", 0, NULL, 0);
    put(&b, "", strlen(sysid), sysid, '\n');
    put(&b, "", strlen(dbname), dbname, '\n');

    /* tables: a set (order and repeats do not matter to wal2json), and
     * "*.*" is the same as no list at all */
    size_t n = split_commas(tables ? tables : "*.*", 1, v);
    qsort(v, n, sizeof *v, slice_cmp);
    for (size_t i = 0; i < n; i++)
        if (v[i].n == 3 && !memcmp(v[i].p, "*.*", 3)) {
            v[0] = v[i];
            n = 1;
        }
    for (size_t i = 0; i < n; i++)
        if (v[i].n && (i == 0 || slice_cmp(&v[i], &v[i - 1])))
            put(&b, "t", v[i].n, v[i].p, '\n');

    /* options: the last of a name wins, as in wal2json; booleans in one
     * spelling, defaults left out, sorted by name */
    n = options && *options ? split_commas(options, 0, v) : 0;
    size_t no = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = memchr(v[i].p, '=', v[i].n);
        if (!eq)
            continue;
        size_t nn = (size_t)(eq - v[i].p), vn = v[i].n - nn - 1;
        const char *name = trim(v[i].p, &nn), *val = trim(eq + 1, &vn);
        int later = 0;
        for (size_t j = i + 1; j < n && !later; j++) {
            size_t jn = v[j].n;
            const char *jeq = memchr(v[j].p, '=', jn);
            jn = jeq ? (size_t)(jeq - v[j].p) : 0;
            const char *jname = trim(v[j].p, &jn);
            later = jeq && jn == nn && !memcmp(jname, name, nn);
        }
        if (later)
            continue;
        for (size_t j = 0; j < sizeof w2j_bools / sizeof w2j_bools[0]; j++) {
            int bv = pg_bool(val, vn);
            if (strlen(w2j_bools[j].name) == nn && !memcmp(w2j_bools[j].name, name, nn) && bv >= 0) {
                if (bv == w2j_bools[j].dflt)
                    name = NULL;
                val = bv ? "1" : "0";
                vn = 1;
                break;
            }
        }
        if (!name)
            continue;
        o[no].p = name;
        o[no++].n = nn;
        o[no].p = val;
        o[no++].n = vn;
    }
    /* sort the (name, value) pairs by name: names are unique now */
    for (size_t i = 2; i < no; i += 2)
        for (size_t j = i; j >= 2 && slice_cmp(&o[j - 2], &o[j]) > 0; j -= 2) {
            slice t0 = o[j - 2], t1 = o[j - 1];
            o[j - 2] = o[j];
            o[j - 1] = o[j + 1];
            o[j] = t0;
            o[j + 1] = t1;
        }
    for (size_t i = 0; i < no; i += 2) {
        put(&b, "o", o[i].n, o[i].p, '=');
        put(&b, "", o[i + 1].n, o[i + 1].p, '\n');
    }

    uint8_t h[20];
    sha1_final(&b, h);
    for (int i = 0; i < 8; i++) {
        out[2 * i] = "0123456789abcdef"[h[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[h[i] & 15];
    }
    out[16] = 0;
    free(o);
    free(v);
    return 0;
}
