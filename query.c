/* query.c -- the subscription language: query strings, percent-decoding,
 * the types:table:filter grammar, decimal numbers, positions, the tables
 * allow-list, and matching a wal2json change against a subscription.
 *
 * Pure functions over (pointer, length): no I/O, no globals.  params_parse
 * and spec_parse allocate their result in one block; the matcher works in
 * storage the caller gives it.  The grammar is described in
 * docs/protocol.md, Subscriptions.
 */
#include "pgcdc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- words and lists ---- */

/* Case-insensitive comparison of a byte range with a NUL-terminated word. */
int ieq(const char *s, size_t n, const char *word)
{
    size_t i;
    for (i = 0; i < n && word[i]; i++)
        if (tolower((unsigned char)s[i]) != tolower((unsigned char)word[i]))
            return 0;
    return i == n && word[i] == 0;
}

const char *trim(const char *s, size_t *n)
{
    while (*n && (*s == ' ' || *s == '\t')) {
        s++;
        (*n)--;
    }
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\t' || s[*n - 1] == '\r'))
        (*n)--;
    return s;
}

void list_begin(list_iter *it, const char *s, size_t n, int escapes)
{
    it->p = s;
    it->n = n;
    it->escapes = (uint8_t)(escapes != 0);
    it->last = 0;
}

int list_next(list_iter *it, slice *elem)
{
    size_t i = 0;
    if (it->last)
        return 0;
    while (i < it->n && it->p[i] != ',') {
        if (it->escapes && it->p[i] == '\\' && i + 1 < it->n)
            i++;
        i++;
    }
    elem->n = i;
    elem->p = trim(it->p, &elem->n);
    if (i == it->n) {
        it->last = 1;
    } else {
        it->p += i + 1;
        it->n -= i + 1;
    }
    return 1;
}

int word_list_parse(const char *s, word_list *out)
{
    list_iter it;
    slice e;
    size_t room = 1;
    out->n = 0;
    for (const char *p = s ? s : ""; *p; p++)
        room += *p == ',';
    out->v = malloc(room * sizeof *out->v);
    if (!out->v)
        return -1;
    list_begin(&it, s ? s : "", s ? strlen(s) : 0, 0);
    while (list_next(&it, &e))
        if (e.n)
            out->v[out->n++] = e;
    return 0;
}

int word_list_has(const word_list *l, const char *s, size_t n)
{
    for (unsigned i = 0; l && i < l->n; i++)
        if (l->v[i].n == n && !memcmp(l->v[i].p, s, n))
            return 1;
    return 0;
}

int pg_bool(const char *s, size_t n)
{
    static const struct { const char *word; size_t min; int v; } w[] = {
        { "true", 1, 1 }, { "false", 1, 0 }, { "yes", 1, 1 }, { "no", 1, 0 },
        { "on", 2, 1 }, { "off", 2, 0 }, { "1", 1, 1 }, { "0", 1, 0 },
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        size_t k = 0;
        if (n < w[i].min || n > strlen(w[i].word))
            continue;
        while (k < n && tolower((unsigned char)s[k]) == w[i].word[k])
            k++;
        if (k == n)
            return w[i].v;
    }
    return -1;
}

int has_token(const char *s, size_t n, const char *word)
{
    list_iter it;
    slice e;
    list_begin(&it, s, n, 0);
    while (list_next(&it, &e))
        if (ieq(e.p, e.n, word))
            return 1;
    return 0;
}


/* ---- percent-decoding and the query string ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (room for n+1), '+' meaning a space.
 * Returns the length, or -1 on a bad escape or a NUL byte. */
static long pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int h, l;
            if (i + 2 >= n)
                return -1;
            h = hexval((unsigned char)s[i + 1]);
            l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = h * 16 + l;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == 0)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return (long)o;
}

void params_free(ws_params *p)
{
    free(p->filters);
    free(p->buf);
    memset(p, 0, sizeof *p);
}

int params_parse(const char *qs, size_t n, ws_params *out, char *err, size_t errlen)
{
    size_t cnt = 1, o = 0;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++)
        cnt += qs[i] == '&';
    out->buf = malloc(n + 2 * cnt + 1);
    out->filters = malloc(cnt * sizeof *out->filters);
    if (!out->buf || !out->filters) {
        snprintf(err, errlen, "out of memory");
        params_free(out);
        return -1;
    }
    while (n) {
        size_t k = 0;
        while (k < n && qs[k] != '&')
            k++;
        if (k) {
            const char *eq = memchr(qs, '=', k);
            size_t nl = eq ? (size_t)(eq - qs) : k;
            const char *v = eq ? eq + 1 : qs + k;
            size_t vl = eq ? k - nl - 1 : 0;
            char *name = out->buf + o;
            long dn = pct_decode(qs, nl, name);
            if (dn < 0)
                goto bad;
            o += (size_t)dn + 1;
            char *val = out->buf + o;
            long dv = pct_decode(v, vl, val);
            if (dv < 0)
                goto bad;
            o += (size_t)dv + 1;
            char **slot = NULL;
            if (!strcmp(name, "query")) slot = &out->query;
            else if (!strcmp(name, "token")) slot = &out->token;
            else if (!strcmp(name, "since")) slot = &out->since;
            else if (!strcmp(name, "grant")) slot = &out->grant;
            else if (!strcmp(name, "columns")) slot = &out->columns;
            else if (!strcmp(name, "snapshot")) slot = &out->snapshot;
            else if (!strcmp(name, "filter")) out->filters[out->nfilters++] = val;
            /* other parameters (cache busters and the like) are ignored */
            if (slot) {
                if (*slot) {
                    snprintf(err, errlen, "parameter \"%s\" given more than once", name);
                    params_free(out);
                    return -1;
                }
                *slot = val;
            }
        }
        if (k == n)
            break;
        qs += k + 1;
        n -= k + 1;
    }
    return 0;
bad:
    snprintf(err, errlen, "malformed percent-encoding in the query string");
    params_free(out);
    return -1;
}

/* ---- numbers ---- */

int num_parse(const char *s, size_t n, int lax, decnum *d)
{
    size_t i = 0;
    memset(d, 0, sizeof *d);
    if (i < n && (s[i] == '-' || (lax && s[i] == '+')))
        d->neg = s[i++] == '-';
    size_t is = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    size_t ilen = i - is;
    if (!lax && (ilen == 0 || (ilen > 1 && s[is] == '0')))
        return -1;
    d->ip = s + is;
    d->in = ilen;
    while (d->in && *d->ip == '0') {
        d->ip++;
        d->in--;
    }
    if (i < n && s[i] == '.') {
        i++;
        size_t fs = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        d->fp = s + fs;
        d->fn = i - fs;
        if (d->fn == 0 && (!lax || ilen == 0))
            return -1;
    } else {
        d->fp = s + i;
    }
    if (ilen == 0 && d->fn == 0)
        return -1;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0;
        long e = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        if (i == n || s[i] < '0' || s[i] > '9')
            return -1;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (e < 1000000000L)
                e = e * 10 + (s[i] - '0');
            i++;
        }
        d->exp = eneg ? -e : e;
    }
    if (i != n)
        return -1;
    /* trailing zeros of the fraction do not change the value */
    while (d->fn && d->fp[d->fn - 1] == '0')
        d->fn--;
    return 0;
}

/* Digit k (0 = most significant) of the significant digits, '0' past the end. */
static char num_digit(const decnum *d, size_t skip, size_t k)
{
    k += skip;
    if (k < d->in)
        return d->ip[k];
    k -= d->in;
    return k < d->fn ? d->fp[k] : '0';
}

/* Significant digits: count, leading fraction zeros to skip, and the decimal
 * exponent of the first significant digit.  Returns 0 for zero. */
static size_t num_sig(const decnum *d, size_t *skip, long *top)
{
    size_t lead = 0;
    if (d->in) {
        *skip = 0;
        *top = (long)d->in - 1 + d->exp;
        return d->in + d->fn;
    }
    while (lead < d->fn && d->fp[lead] == '0')
        lead++;
    if (lead == d->fn)
        return 0;
    *skip = lead;
    *top = -(long)lead - 1 + d->exp;
    return d->fn - lead;
}

int num_cmp(const decnum *a, const decnum *b)
{
    size_t askip = 0, bskip = 0;
    long atop = 0, btop = 0;
    size_t an = num_sig(a, &askip, &atop), bn = num_sig(b, &bskip, &btop);
    int asign = an ? (a->neg ? -1 : 1) : 0;
    int bsign = bn ? (b->neg ? -1 : 1) : 0;
    if (asign != bsign)
        return asign < bsign ? -1 : 1;
    if (!asign)
        return 0;
    int mag;
    if (atop != btop) {
        mag = atop < btop ? -1 : 1;
    } else {
        size_t m = an > bn ? an : bn;
        mag = 0;
        for (size_t k = 0; k < m && !mag; k++) {
            char x = num_digit(a, askip, k), y = num_digit(b, bskip, k);
            if (x != y)
                mag = x < y ? -1 : 1;
        }
    }
    return asign < 0 ? -mag : mag;
}

/* ---- positions and the tables allow-list ---- */

int pos_parse(const char *s, size_t n, uint64_t *lsn, uint32_t *idx)
{
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon || lsn_parse(s, (size_t)(colon - s), lsn))
        return -1;
    size_t dn = n - (size_t)(colon - s) - 1;
    uint64_t v = 0;
    if (dn == 0 || dn > 10)
        return -1;
    for (size_t i = 0; i < dn; i++) {
        char c = colon[1 + i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (v > UINT32_MAX)
        return -1;
    *idx = (uint32_t)v;
    return 0;
}

/* One part of an add-tables element, with backslash escapes: matches name? */
static int w2j_part_match(const char *p, size_t n, const char *name)
{
    if (n == 1 && p[0] == '*')
        return 1;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n)
            c = p[++i];
        if (name[j] != c)
            return 0;
        j++;
    }
    return name[j] == 0;
}

size_t table_pat_of(slice e, table_pat *out)
{
    size_t i, dots = 0, dot = 0;
    for (i = 0; i < e.n; i++) {
        if (e.p[i] == '\\' && i + 1 < e.n) {
            i++;
            continue;
        }
        if (e.p[i] == '.' && !dots++)
            dot = i;
    }
    if (!dots) {
        /* an unqualified name means public, as in SQL */
        out->schema = (slice){ "public", 6 };
        out->table = e;
    } else {
        out->schema = (slice){ e.p, dot };
        out->table = (slice){ e.p + dot + 1, e.n - dot - 1 };
    }
    return dots;
}

int table_pat_match(const table_pat *t, const char *schema, const char *tbl)
{
    return t->table.n && w2j_part_match(t->schema.p, t->schema.n, schema) &&
           w2j_part_match(t->table.p, t->table.n, tbl);
}

int tables_allow(const char *list, const char *schema, const char *tbl)
{
    list_iter it;
    slice e;
    table_pat t;
    if (!list)
        return 1;
    list_begin(&it, list, strlen(list), 1);
    while (list_next(&it, &e)) {
        table_pat_of(e, &t);
        if (table_pat_match(&t, schema, tbl))
            return 1;
    }
    return 0;
}

/* ---- parsing a subscription ---- */

/* A bump allocator over the spec's single block. */
typedef struct arena {
    char *p;
    size_t used, cap;
} arena;

static void *arena_get(arena *a, size_t n)
{
    size_t at = (a->used + 7) & ~(size_t)7;
    if (at + n > a->cap)
        return NULL;   /* cannot happen: the block is sized for the worst case */
    a->used = at + n;
    return a->p + at;
}

static char *arena_str(arena *a, const char *s, size_t n)
{
    char *d = arena_get(a, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* Reads a name that may be double-quoted ("" inside quotes is a quote),
 * ending at stop or at the end.  Returns the bytes consumed or -1. */
static long read_name(const char *s, size_t n, char stop, char *out, size_t *outn)
{
    size_t i = 0, o = 0;
    if (n && s[0] == '"') {
        for (i = 1; i < n; i++) {
            if (s[i] == '"') {
                if (i + 1 < n && s[i + 1] == '"') {
                    out[o++] = '"';
                    i++;
                    continue;
                }
                i++;
                if (i < n && s[i] != stop)
                    return -1;
                *outn = o;
                return (long)i;
            }
            out[o++] = s[i];
        }
        return -1;   /* no closing quote */
    }
    while (i < n && s[i] != stop)
        out[o++] = s[i++];
    *outn = o;
    return (long)i;
}

static int parse_types(const char *s, size_t n, uint8_t *types)
{
    list_iter it;
    slice e;
    *types = 0;
    if (n == 0)
        return -1;
    list_begin(&it, s, n, 0);
    while (list_next(&it, &e)) {
        if (ieq(e.p, e.n, "*")) *types |= SUB_ALL;
        else if (ieq(e.p, e.n, "insert")) *types |= SUB_INSERT;
        else if (ieq(e.p, e.n, "update")) *types |= SUB_UPDATE;
        else if (ieq(e.p, e.n, "delete")) *types |= SUB_DELETE;
        else if (ieq(e.p, e.n, "truncate")) *types |= SUB_TRUNCATE;
        else return -1;
    }
    return 0;
}

/* Splits an in-list into values; elements may be double-quoted with \" and
 * \\ escapes.  Returns the count, or -1. */
static int parse_in_list(arena *a, const char *s, size_t n, fval *vals, unsigned max)
{
    unsigned cnt = 0;
    if (n >= 1 && s[0] == '(') {
        if (n < 2 || s[n - 1] != ')')
            return -1;   /* "(a,b" */
        s++;
        n -= 2;
    }
    if (n == 0)
        return -1;
    /* every element's bytes plus its NUL fit in n + max bytes */
    char *pool = arena_get(a, n + max + 1);
    size_t used = 0, i = 0;
    if (!pool)
        return -1;
    for (;;) {
        char *buf = pool + used;
        size_t o = 0;
        if (cnt == max)
            return -1;
        if (i < n && s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\'))
                    i++;
                buf[o++] = s[i];
            }
            if (i == n)
                return -1;   /* unterminated quote */
            i++;
            if (i < n && s[i] != ',')
                return -1;
        } else {
            while (i < n && s[i] != ',')
                buf[o++] = s[i++];
        }
        buf[o] = 0;
        used += o + 1;
        vals[cnt].s = buf;
        vals[cnt].n = o;
        vals[cnt].isnum = num_parse(buf, o, 1, &vals[cnt].num) == 0;
        cnt++;
        if (i == n)
            return (int)cnt;
        i++;   /* the comma */
    }
}

static int parse_filter(arena *a, const char *s, char *err, size_t errlen, filter *f)
{
    size_t n = strlen(s), cn = 0;
    char *col = arena_get(a, n + 1);
    long used = col ? read_name(s, n, '.', col, &cn) : -1;
    memset(f, 0, sizeof *f);
    f->text = arena_str(a, s, n);
    if (!col || !f->text) {
        snprintf(err, errlen, "query too long");
        return -1;
    }
    if (used < 0 || (size_t)used >= n || cn == 0) {
        snprintf(err, errlen, "bad filter \"%s\": expected column.operator.value", s);
        return -1;
    }
    col[cn] = 0;
    f->col = col;
    f->col_len = cn;
    const char *op = s + used + 1;
    const char *dot = strchr(op, '.');
    if (!dot) {
        snprintf(err, errlen, "bad filter \"%s\": expected column.operator.value", s);
        return -1;
    }
    size_t on = (size_t)(dot - op);
    const char *val = dot + 1;
    size_t vn = strlen(val);
    static const char *ops[] = { "eq", "neq", "lt", "lte", "gt", "gte", "in", "is" };
    unsigned k;
    for (k = 0; k < 8; k++)
        if (strlen(ops[k]) == on && !memcmp(op, ops[k], on))
            break;
    if (k == 8) {
        snprintf(err, errlen, "unknown operator \"%.*s\" in filter \"%s\" (expected eq, neq, lt, lte, gt, gte, in or is)",
                 (int)on, op, s);
        return -1;
    }
    f->op = (uint8_t)k;
    if (k == OP_IS) {
        if (!strcmp(val, "null")) f->is = IS_NULL;
        else if (!strcmp(val, "true")) f->is = IS_TRUE;
        else if (!strcmp(val, "false")) f->is = IS_FALSE;
        else {
            snprintf(err, errlen, "bad filter \"%s\": is takes null, true or false", s);
            return -1;
        }
        return 0;
    }
    if (k == OP_IN) {
        unsigned max = (unsigned)vn + 1;
        f->vals = arena_get(a, max * sizeof(fval));
        int cnt = f->vals ? parse_in_list(a, val, vn, f->vals, max) : -1;
        if (cnt < 0) {
            snprintf(err, errlen, "bad filter \"%s\": in takes (a,b,...) with optional \"quoted\" elements", s);
            return -1;
        }
        f->nvals = (unsigned)cnt;
        return 0;
    }
    f->vals = arena_get(a, sizeof(fval));
    char *vs = arena_str(a, val, vn);
    if (!f->vals || !vs) {
        snprintf(err, errlen, "query too long");
        return -1;
    }
    f->nvals = 1;
    f->vals[0].s = vs;
    f->vals[0].n = vn;
    f->vals[0].isnum = num_parse(f->vals[0].s, vn, 1, &f->vals[0].num) == 0;
    return 0;
}

/* Writes the canonical key of sp into out (snprintf-like: returns the full
 * length; out may be NULL when cap is 0).  Parts are length-prefixed, so no
 * two different specs can share a key. */
static int fval_bytes_cmp(const void *a, const void *b)
{
    const fval *x = *(const fval *const *)a, *y = *(const fval *const *)b;
    int r = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return r ? r : (x->n > y->n) - (x->n < y->n);
}

static int fval_num_cmp(const void *a, const void *b)
{
    return num_cmp(&(*(const fval *const *)a)->num, &(*(const fval *const *)b)->num);
}

/* The in-lists' values sorted for a binary search: all by bytes, the
 * numeric ones by value.  Returns 0, or -1 when the arena is short. */
static int sort_in_lists(arena *a, spec *sp)
{
    for (unsigned i = 0; i < sp->nfilters; i++) {
        filter *f = &sp->filters[i];
        if (f->op != OP_IN)
            continue;
        f->by_bytes = arena_get(a, f->nvals * sizeof *f->by_bytes);
        f->by_num = arena_get(a, f->nvals * sizeof *f->by_num);
        if (!f->by_bytes || !f->by_num)
            return -1;
        f->nnum = 0;
        for (unsigned k = 0; k < f->nvals; k++) {
            f->by_bytes[k] = &f->vals[k];
            if (f->vals[k].isnum)
                f->by_num[f->nnum++] = &f->vals[k];
        }
        qsort(f->by_bytes, f->nvals, sizeof *f->by_bytes, fval_bytes_cmp);
        qsort(f->by_num, f->nnum, sizeof *f->by_num, fval_num_cmp);
    }
    return 0;
}

static size_t key_write(const spec *sp, char *out, size_t cap)
{
    size_t n = 0;
    int w = snprintf(out, cap, "%u|%zu:%s|%zu:%s", sp->types, strlen(sp->schema), sp->schema,
                     strlen(sp->table), sp->table);
    n += w > 0 ? (size_t)w : 0;
    for (unsigned i = 0; i < sp->nfilters; i++) {
        const char *t = sp->filters[i].text;
        /* a rule's filter is marked, so no client text can stand for it */
        w = snprintf(out ? out + (n < cap ? n : cap) : NULL, n < cap ? cap - n : 0,
                     "|%s%zu:%s", sp->filters[i].from_rule ? "R" : "", strlen(t), t);
        n += w > 0 ? (size_t)w : 0;
    }
    for (unsigned i = 0; i < sp->ncols; i++) {
        w = snprintf(out ? out + (n < cap ? n : cap) : NULL, n < cap ? cap - n : 0,
                     "|C%zu:%s", strlen(sp->cols[i]), sp->cols[i]);
        n += w > 0 ? (size_t)w : 0;
    }
    return n;
}

#define MAX_COLUMNS 1600   /* PostgreSQL's limit on a table's columns */

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Parses a columns= list ("a,b", names may be double-quoted) into sorted,
 * distinct names in the arena.  Returns the count, or -1. */
static int parse_columns(arena *a, const char *s, char ***out)
{
    size_t n = strlen(s), i = 0;
    unsigned cnt = 0, max = 1;
    for (size_t k = 0; k < n; k++)
        max += s[k] == ',';
    char **names = arena_get(a, max * sizeof *names);
    if (!names || n == 0)
        return -1;
    for (;;) {
        char *buf = arena_get(a, n - i + 1);
        size_t bn = 0;
        long used = buf ? read_name(s + i, n - i, ',', buf, &bn) : -1;
        if (used < 0 || bn == 0 || memchr(buf, 0, bn) || cnt == MAX_COLUMNS)
            return -1;
        buf[bn] = 0;
        names[cnt++] = buf;
        i += (size_t)used;
        if (i == n)
            break;
        i++;   /* the comma */
        if (i == n)
            return -1;   /* a trailing comma: an empty name */
    }
    qsort(names, cnt, sizeof *names, str_cmp);
    unsigned o = 0;
    for (unsigned k = 0; k < cnt; k++)
        if (o == 0 || strcmp(names[o - 1], names[k]))
            names[o++] = names[k];
    *out = names;
    return (int)o;
}

int spec_has_col(const spec *sp, const char *name, size_t n)
{
    return sp->ncols == 0 || names_has(sp->cols, sp->ncols, name, n);
}

/* The values of a claim, put into a copy of the rule's filter f: never
 * parsed, only numbers recognised as numbers as any value is.  The text
 * (for the key) is the rule's text then each value in hex. */
static int rule_filter(arena *a, filter *f, const rule_value *v, unsigned nv)
{
    size_t tl = strlen(f->text) + 2;
    for (unsigned i = 0; i < nv; i++)
        tl += 2 * v[i].n + 1;
    char *text = arena_get(a, tl);
    fval *vals = arena_get(a, (nv ? nv : 1) * sizeof *vals);
    if (!text || !vals)
        return -1;
    static const char hex[] = "0123456789abcdef";
    size_t o = (size_t)snprintf(text, tl, "%s=", f->text);
    for (unsigned i = 0; i < nv; i++) {
        char *vs = arena_str(a, v[i].s, v[i].n);
        if (!vs)
            return -1;
        vals[i].s = vs;
        vals[i].n = v[i].n;
        vals[i].isnum = num_parse(vs, v[i].n, 1, &vals[i].num) == 0;
        for (size_t k = 0; k < v[i].n; k++) {
            text[o++] = hex[(unsigned char)v[i].s[k] >> 4];
            text[o++] = hex[(unsigned char)v[i].s[k] & 15];
        }
        if (i + 1 < nv)
            text[o++] = ',';
    }
    text[o] = 0;
    f->text = text;
    f->vals = vals;
    f->nvals = nv;
    return 0;
}

spec *spec_build(const char *query, char *const *filters, unsigned nfilters,
                 const char *columns, const rule *r, const rule_value *const *vals,
                 const unsigned *nvals, int *status, char *err, size_t errlen)
{
    size_t total = strlen(query) + 1 + (columns ? strlen(columns) + 1 : 0);
    for (unsigned i = 0; i < nfilters; i++)
        total += strlen(filters[i]) + 1;
    unsigned nf = nfilters + 1, ncols_max = columns ? 1 : 0;
    if (columns)
        for (const char *c = columns; *c; c++)
            ncols_max += *c == ',';
    size_t extra = 0;
    if (r) {
        nf += r->sp->nfilters;
        ncols_max += r->sp->ncols;
        for (unsigned i = 0; i < r->sp->ncols; i++)
            extra += strlen(r->sp->cols[i]) + 16;
        for (unsigned i = 0; i < r->sp->nfilters; i++) {
            size_t t = strlen(r->sp->filters[i].text) + 1;
            extra += 8 * t + 64 + sizeof(filter) + (t + 1) * sizeof(fval);
            if (r->paths[i])
                for (unsigned k = 0; k < nvals[i]; k++)
                    extra += 3 * vals[i][k].n + sizeof(fval) + 32;
        }
    }
    /* worst case: names twice, each filter's text, column and values
     * (about 4 times its length), the key (twice the text), the columns
     * (names, pointers, and their share of the key) */
    /* ... and each in-list's values sorted twice (pointers) */
    size_t cap = sizeof(spec) + nf * sizeof(filter) + (total + nf) * sizeof(fval) +
                 8 * total + 64 * nf + 512 + 2 * extra + ncols_max * (sizeof(char *) + 32) +
                 2 * (total + nf + extra) * sizeof(fval *);
    arena a = { malloc(cap), 0, cap };
    *status = 400;
    if (!a.p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    spec *sp = arena_get(&a, sizeof *sp);
    memset(sp, 0, sizeof *sp);
    sp->filters = arena_get(&a, nf * sizeof(filter));

    const char *c1 = strchr(query, ':');
    if (!*query) {
        snprintf(err, errlen, "empty query: expected types:table[:filter]");
        goto fail;
    }
    if (!c1) {
        snprintf(err, errlen, "bad query \"%s\": expected types:table[:filter]", query);
        goto fail;
    }
    if (parse_types(query, (size_t)(c1 - query), &sp->types)) {
        snprintf(err, errlen, "bad change types \"%.*s\": expected a comma list of insert, update, delete, truncate, or *",
                 (int)(c1 - query), query);
        goto fail;
    }
    const char *tstart = c1 + 1;
    const char *c2 = strchr(tstart, ':');
    size_t tn = c2 ? (size_t)(c2 - tstart) : strlen(tstart);
    char *p1 = arena_get(&a, tn + 1), *p2 = arena_get(&a, tn + 1);
    size_t n1 = 0, n2 = 0;
    if (!sp->filters || !p1 || !p2) {
        snprintf(err, errlen, "query too long");
        goto fail;
    }
    long u1 = read_name(tstart, tn, '.', p1, &n1);
    if (u1 < 0 || n1 == 0) {
        snprintf(err, errlen, "bad table name \"%.*s\"", (int)tn, tstart);
        goto fail;
    }
    p1[n1] = 0;
    if ((size_t)u1 < tn) {
        long u2 = read_name(tstart + u1 + 1, tn - (size_t)u1 - 1, 0, p2, &n2);
        if (u2 < 0 || n2 == 0 || (size_t)u1 + 1 + (size_t)u2 != tn) {
            snprintf(err, errlen, "bad table name \"%.*s\"", (int)tn, tstart);
            goto fail;
        }
        p2[n2] = 0;
        sp->schema = p1;
        sp->table = p2;
    } else {
        sp->schema = arena_str(&a, "public", 6);
        sp->table = p1;
    }
    if (nfilters + (c2 != NULL) > SPEC_MAX_FILTERS) {
        snprintf(err, errlen, "too many filters: %u (at most %d per subscription)", nfilters + (c2 != NULL),
                 SPEC_MAX_FILTERS);
        goto fail;
    }
    if (c2) {
        if (parse_filter(&a, c2 + 1, err, errlen, &sp->filters[sp->nfilters]))
            goto fail;
        sp->nfilters++;
    }
    for (unsigned i = 0; i < nfilters; i++) {
        if (parse_filter(&a, filters[i], err, errlen, &sp->filters[sp->nfilters]))
            goto fail;
        sp->nfilters++;
    }
    size_t nin = 0;
    for (unsigned i = 0; i < sp->nfilters; i++)
        if (sp->filters[i].op == OP_IN)
            nin += sp->filters[i].nvals;
    if (nin > SPEC_MAX_IN) {
        snprintf(err, errlen, "too many values in in-lists: %zu (at most %d per subscription)", nin, SPEC_MAX_IN);
        goto fail;
    }
    if (columns) {
        int k = parse_columns(&a, columns, &sp->cols);
        if (k < 0) {
            snprintf(err, errlen, "bad columns \"%.200s\": expected a comma list of column names", columns);
            goto fail;
        }
        sp->ncols = (unsigned)k;
    }
    if (r) {
        /* the rule's grammar was checked at start-up; its text is parsed
         * again here, the claims' values are only copied in */
        for (unsigned i = 0; i < r->sp->nfilters; i++) {
            filter *f = &sp->filters[sp->nfilters];
            if (parse_filter(&a, r->sp->filters[i].text, err, errlen, f))
                goto fail;
            if (r->paths[i] && rule_filter(&a, f, vals[i], nvals[i])) {
                snprintf(err, errlen, "query too long");
                goto fail;
            }
            f->from_rule = 1;
            sp->nfilters++;
        }
        if (r->sp->ncols && sp->ncols) {
            for (unsigned i = 0; i < sp->ncols; i++)
                if (!names_has(r->sp->cols, r->sp->ncols, sp->cols[i], strlen(sp->cols[i]))) {
                    *status = 403;
                    snprintf(err, errlen, "column \"%.100s\" is not among the columns the rule allows",
                             sp->cols[i]);
                    goto fail;
                }
        } else if (r->sp->ncols) {
            sp->cols = arena_get(&a, r->sp->ncols * sizeof *sp->cols);
            if (!sp->cols) {
                snprintf(err, errlen, "query too long");
                goto fail;
            }
            for (unsigned i = 0; i < r->sp->ncols; i++)
                sp->cols[i] = arena_str(&a, r->sp->cols[i], strlen(r->sp->cols[i]));
            sp->ncols = r->sp->ncols;
        }
    }
    if (sort_in_lists(&a, sp)) {
        snprintf(err, errlen, "query too long");
        goto fail;
    }
    /* canonical key: length-prefixed parts, so no two specs can collide */
    size_t kn = key_write(sp, NULL, 0);
    sp->key = arena_get(&a, kn + 1);
    if (sp->key)
        key_write(sp, sp->key, kn + 1);
    if (!sp->key) {
        snprintf(err, errlen, "query too long");
        goto fail;
    }
    return sp;
fail:
    free(a.p);
    return NULL;
}

spec *spec_parse(const char *query, char *const *filters, unsigned nfilters,
                 char *err, size_t errlen)
{
    int status;
    return spec_build(query, filters, nfilters, NULL, NULL, NULL, NULL, &status, err, errlen);
}

/* ---- [rules] ---- */

/* Is s[0..n) "{a.b_c}": a dotted path of [A-Za-z0-9_-] words in braces? */
static int placeholder(const char *s, size_t n)
{
    if (n < 3 || s[0] != '{' || s[n - 1] != '}')
        return 0;
    int word = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (!word)
                return 0;
            word = 0;
        } else if (isalnum(c) || c == '_' || c == '-') {
            word = 1;
        } else {
            return 0;
        }
    }
    return word;
}

void rule_free(rule *r)
{
    if (r->sp && r->paths)
        for (unsigned i = 0; i < r->sp->nfilters; i++)
            free(r->paths[i]);
    free(r->paths);
    free(r->sp);
    free(r->schema);
    free(r->table);
    memset(r, 0, sizeof *r);
}

int rule_parse(const char *key, const char *value, rule *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t kn = strlen(key);
    if (strcmp(key, "*") != 0) {
        char *p1 = malloc(kn + 1), *p2 = malloc(kn + 1);
        size_t n1 = 0, n2 = 0;
        long u1 = p1 ? read_name(key, kn, '.', p1, &n1) : -1, u2 = 0;
        if (u1 >= 0 && (size_t)u1 < kn && p2)
            u2 = read_name(key + u1 + 1, kn - (size_t)u1 - 1, 0, p2, &n2);
        if (!p1 || !p2 || u1 < 0 || n1 == 0 ||
            ((size_t)u1 < kn && (u2 < 0 || n2 == 0 || (size_t)u1 + 1 + (size_t)u2 != kn))) {
            free(p1);
            free(p2);
            snprintf(err, errlen, "bad table \"%.100s\": expected schema.table, \"quoted\".\"names\" or *", key);
            return -1;
        }
        p1[n1] = 0;
        p2[n2] = 0;
        if ((size_t)u1 < kn) {
            out->schema = p1;
            out->table = p2;
        } else {
            free(p2);
            out->schema = malloc(7);
            if (out->schema)
                memcpy(out->schema, "public", 7);
            out->table = p1;
        }
    }

    /* filters&filters[;columns=list] or allow[;columns=list] */
    size_t vn = strlen(value);
    const char *semi = memchr(value, ';', vn);
    size_t fn = semi ? (size_t)(semi - value) : vn;
    const char *cols = NULL;
    if (semi) {
        if (strncmp(semi + 1, "columns=", 8) != 0) {
            snprintf(err, errlen, "after ';' a rule takes only columns=a,b,...");
            goto fail;
        }
        cols = semi + 9;
    }
    if (fn == 0) {
        snprintf(err, errlen, "empty rule: write filters joined by '&', or allow");
        goto fail;
    }
    size_t parts = 1;
    for (size_t i = 0; i < fn; i++)
        parts += value[i] == '&';
    char *fbuf = malloc(fn + 1);
    char **fl = malloc(parts * sizeof *fl);
    unsigned nf = 0;
    if (!fbuf || !fl) {
        free(fbuf);
        free(fl);
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(fbuf, value, fn);
    fbuf[fn] = 0;
    if (strcmp(fbuf, "allow") != 0) {
        for (char *p = fbuf;;) {
            char *amp = strchr(p, '&');
            if (amp)
                *amp = 0;
            fl[nf++] = p;
            if (!amp)
                break;
            p = amp + 1;
        }
    }
    int st;
    out->sp = spec_build("*:rule", fl, nf, cols, NULL, NULL, NULL, &st, err, errlen);
    free(fl);
    if (!out->sp) {
        free(fbuf);
        goto fail;
    }
    out->paths = calloc(out->sp->nfilters + 1, sizeof *out->paths);
    if (!out->paths) {
        free(fbuf);
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (unsigned i = 0; i < out->sp->nfilters; i++) {
        const filter *f = &out->sp->filters[i];
        int braces = 0;
        for (unsigned k = 0; k < f->nvals; k++)
            braces |= memchr(f->vals[k].s, '{', f->vals[k].n) || memchr(f->vals[k].s, '}', f->vals[k].n);
        if (!braces)
            continue;
        if (f->nvals != 1 || !placeholder(f->vals[0].s, f->vals[0].n)) {
            snprintf(err, errlen, "unknown placeholder syntax in \"%.200s\": a value is a whole "
                     "{claim.path} or has no braces", f->text);
            free(fbuf);
            goto fail;
        }
        out->paths[i] = malloc(f->vals[0].n - 1);
        if (!out->paths[i]) {
            free(fbuf);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(out->paths[i], f->vals[0].s + 1, f->vals[0].n - 2);
        out->paths[i][f->vals[0].n - 2] = 0;
    }
    free(fbuf);
    return 0;
fail:
    rule_free(out);
    return -1;
}

const rule *rule_find(const rule *rules, unsigned n, const char *schema, const char *table)
{
    const rule *any = NULL;
    for (unsigned i = 0; i < n; i++) {
        if (!rules[i].table)
            any = &rules[i];
        else if (!strcmp(rules[i].schema, schema) && !strcmp(rules[i].table, table))
            return &rules[i];
    }
    return any;
}

/* ---- matching a change ---- */

/* Index of the column named as f's, among n from first, or -1. */
static long find_col(const w2j_record *r, unsigned first, unsigned n, const filter *f)
{
    for (unsigned i = first; i < first + n; i++)
        if (json_str_eq(r->cols[i].name, f->col, f->col_len))
            return (long)i;
    return -1;
}

void match_begin(match_ctx *m, const w2j_record *r, char *buf, size_t cap,
                 col_cache *cols, unsigned ncap)
{
    m->r = r;
    m->buf = buf;
    m->cap = cap;
    m->used = 0;
    m->cols = cols;
    if (++m->gen == 0) {   /* after 2^32 changes: start the marks afresh */
        memset(cols, 0, ncap * sizeof *cols);
        m->gen = 1;
    }
}

/* Column i's value, unescaped or parsed as a number the first time any
 * filter of this change asks for it. */
static const col_cache *col_value(match_ctx *m, unsigned i)
{
    col_cache *cc = &m->cols[i];
    const w2j_col *c = &m->r->cols[i];
    if (cc->gen == m->gen)
        return cc;
    cc->gen = m->gen;
    cc->isnum = 0;
    cc->bad = 0;
    cc->v = c->value;
    if (c->vtype == JSON_NUMBER) {
        cc->isnum = num_parse(c->value.p, c->value.n, 0, &cc->num) == 0;
    } else if (c->vtype == JSON_STRING && memchr(c->value.p, '\\', c->value.n)) {
        long un = json_unescape(c->value.p, c->value.n, m->buf + m->used, m->cap - m->used);
        if (un < 0) {
            cc->bad = 1;   /* cannot happen for what the tokenizer accepted */
        } else {
            cc->v = (slice){ m->buf + m->used, (size_t)un };
            m->used += (size_t)un;
        }
    }
    return cc;
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    return r ? r : (an > bn) - (an < bn);
}

/* Compares a column's value with a filter value: <0, 0, >0. */
static int value_cmp(const col_cache *cc, uint8_t vtype, const fval *v)
{
    if (cc->bad)
        return 1;
    if (vtype == JSON_NUMBER && v->isnum && cc->isnum)
        return num_cmp(&cc->num, &v->num);
    return bytes_cmp(cc->v.p, cc->v.n, v->s, v->n);
}

/* Is the value in the in-list?  A binary search of the values sorted by
 * bytes, or of the numeric ones by value for a number column (whose text,
 * a JSON number, can only equal a value that reads as a number too). */
static int in_list(const filter *f, const col_cache *cc, uint8_t vtype)
{
    const fval *const *v = f->by_bytes;
    size_t lo = 0, hi = f->nvals;
    int num = !cc->bad && vtype == JSON_NUMBER && cc->isnum;
    if (cc->bad)
        return 0;
    if (num) {
        v = f->by_num;
        hi = f->nnum;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = num ? num_cmp(&cc->num, &v[mid]->num) : bytes_cmp(cc->v.p, cc->v.n, v[mid]->s, v[mid]->n);
        if (!r)
            return 1;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

static int filter_eval(const filter *f, match_ctx *m, long col)
{
    if (col < 0)
        return 0;
    uint8_t vtype = m->r->cols[col].vtype;
    if (f->op == OP_IS)
        return (f->is == IS_NULL && vtype == JSON_NULL) ||
               (f->is == IS_TRUE && vtype == JSON_TRUE) ||
               (f->is == IS_FALSE && vtype == JSON_FALSE);
    if (vtype == JSON_NULL || vtype == JSON_NONE)
        return 0;
    const col_cache *cc = col_value(m, (unsigned)col);
    if (f->op == OP_IN)
        return in_list(f, cc, vtype);
    int r = value_cmp(cc, vtype, &f->vals[0]);
    switch (f->op) {
    case OP_EQ: return r == 0;
    case OP_NEQ: return r != 0;
    case OP_LT: return r < 0;
    case OP_LTE: return r <= 0;
    case OP_GT: return r > 0;
    default: return r >= 0;
    }
}

uint8_t action_bit(char a)
{
    switch (a) {
    case 'I': return SUB_INSERT;
    case 'U': return SUB_UPDATE;
    case 'D': return SUB_DELETE;
    case 'T': return SUB_TRUNCATE;
    default: return 0;
    }
}

int spec_match(const spec *s, match_ctx *m)
{
    const w2j_record *r = m->r;
    uint8_t bit = action_bit(r->action);
    if (!(s->types & bit))
        return 0;
    if (bit == SUB_TRUNCATE)
        return 1;
    for (unsigned i = 0; i < s->nfilters; i++) {
        const filter *f = &s->filters[i];
        long c = -1;
        if (bit != SUB_DELETE)
            c = find_col(r, 0, r->ncols, f);
        if (c < 0 && bit != SUB_INSERT)   /* update: unchanged TOAST; delete: old key */
            c = find_col(r, r->ncols, r->nident, f);
        if (!filter_eval(f, m, c))
            return 0;
    }
    return 1;
}

