/* snapshot.c -- the pure parts of a table snapshot (docs/protocol.md,
 * Snapshots).
 *
 * A snapshot sends the rows a table holds as wal2json would have written an
 * insert of each, then the changes the snapshot does not contain.  This unit
 * holds what that needs without any I/O:
 *
 * - rendering, as wal2json's format-version 2 writes a column
 *   ({"name":..,"type":..,"typeoid":..,"value":..,"optional":..,
 *   "position":..,"default":..}): the value from PostgreSQL's text output,
 *   classified by the column's type oid exactly as wal2json's
 *   pg_decode_write_value does (int2/4/8, oid, float4/8 and numeric bare,
 *   NaN and infinities as null; bool as true/false; bytea as its hex digits
 *   without "\x"; everything else, domains over those types included, as a
 *   JSON string), and strings escaped as PostgreSQL's escape_json escapes
 *   them (\b \f \n \r \t \" \\ and \u00XX for other bytes below 0x20,
 *   nothing else);
 * - pg_current_snapshot() text ("xmin:xmax:xip,...", 64-bit transaction ids)
 *   and the visibility of a transaction whose 32-bit xid wal2json reported;
 * - the SQL of the snapshot query, with the subscription's filters pushed
 *   into its WHERE clause wherever SQL has the same meaning (values always
 *   as parameters).
 *
 * Output functions follow snprintf: they write at most cap bytes and return
 * the length the whole output needs, so a caller can size its buffer.
 */
#include <stdio.h>
#include <string.h>

#include "pgcdc.h"

/* ---- bounded output ---- */

typedef struct obuf {
    char *p;
    size_t cap, n;   /* n counts every byte, also those past cap */
} obuf;

static void put(obuf *o, const char *s, size_t n)
{
    if (o->n < o->cap) {
        size_t k = o->cap - o->n < n ? o->cap - o->n : n;
        memcpy(o->p + o->n, s, k);
    }
    o->n += n;
}

static void puts_(obuf *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putc_(obuf *o, char c)
{
    put(o, &c, 1);
}

static void put_int(obuf *o, long long v)
{
    char b[24];
    int n = snprintf(b, sizeof b, "%lld", v);
    put(o, b, (size_t)n);
}

/* ---- wal2json's rendering ---- */

int w2j_render_flags(const char *options)
{
    static const struct { const char *name; int flag; } opt[] = {
        { "include-types", W2J_TYPES }, { "include-type-oids", W2J_TYPE_OIDS },
        { "include-domain-data-type", W2J_DOMAIN_BASE }, { "include-not-null", W2J_NOT_NULL },
        { "include-column-positions", W2J_POSITIONS }, { "include-default", W2J_DEFAULTS },
        { "numeric-data-types-as-string", W2J_NUM_AS_STRING },
    };
    int flags = W2J_TYPES;
    list_iter it;
    slice e;
    if (!options)
        return flags;
    list_begin(&it, options, strlen(options), 0);
    while (list_next(&it, &e)) {
        const char *eq = memchr(e.p, '=', e.n);
        if (!eq)
            continue;
        size_t nn = (size_t)(eq - e.p), vn = e.n - nn - 1;
        const char *name = trim(e.p, &nn), *val = trim(eq + 1, &vn);
        for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
            if (strlen(opt[i].name) != nn || strncmp(opt[i].name, name, nn))
                continue;
            int b = pg_bool(val, vn);
            if (b == 1)
                flags |= opt[i].flag;
            else if (b == 0)
                flags &= ~opt[i].flag;
        }
    }
    return flags;
}

int snap_value_class(uint32_t typoid)
{
    switch (typoid) {
    case 20: case 21: case 23: case 26:     /* int8 int2 int4 oid */
    case 700: case 701: case 1700:          /* float4 float8 numeric */
        return VAL_NUMBER;
    case 16:
        return VAL_BOOL;
    case 17:
        return VAL_BYTEA;
    default:
        return VAL_TEXT;
    }
}

static void esc(obuf *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;   /* bytes copied as they are, pending */
    putc_(o, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        char u[6];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        put(o, s + i - run, run);
        run = 0;
        switch (c) {
        case '\b': rep = "\\b"; break;
        case '\f': rep = "\\f"; break;
        case '\n': rep = "\\n"; break;
        case '\r': rep = "\\r"; break;
        case '\t': rep = "\\t"; break;
        case '"': rep = "\\\""; break;
        case '\\': rep = "\\\\"; break;
        default:
            memcpy(u, "\\u00", 4);
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            put(o, u, 6);
            continue;
        }
        puts_(o, rep);
    }
    put(o, s + n - run, run);
    putc_(o, '"');
}

size_t pg_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    obuf o = { out, cap, 0 };
    esc(&o, s, n);
    return o.n;
}

/* Case-insensitive "s starts with word". */
static int prefix_ci(const char *s, size_t n, const char *word)
{
    size_t k = strlen(word);
    if (n < k)
        return 0;
    for (size_t i = 0; i < k; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != word[i])
            return 0;
    }
    return 1;
}

size_t snap_render_value(char *out, size_t cap, int vclass, int flags,
                         const char *v, size_t n, int isnull)
{
    obuf o = { out, cap, 0 };
    if (isnull) {
        puts_(&o, "null");
        return o.n;
    }
    switch (vclass) {
    case VAL_NUMBER: {
        int special = prefix_ci(v, n, "nan") || prefix_ci(v, n, "infinity") ||
                      prefix_ci(v, n, "-infinity");
        size_t plain = 0;
        while (plain < n && strchr("0123456789+-eE.", v[plain]) && v[plain])
            plain++;
        if (flags & W2J_NUM_AS_STRING)
            esc(&o, v, n);
        else if (special)
            puts_(&o, "null");
        else if (plain == n)
            put(&o, v, n);
        else                      /* wal2json refuses; not reached for these types */
            esc(&o, v, n);
        break;
    }
    case VAL_BOOL:
        puts_(&o, n == 1 && v[0] == 't' ? "true" : "false");
        break;
    case VAL_BYTEA:                 /* "\x0a0b": the digits after \x */
        if (n >= 2)
            esc(&o, v + 2, n - 2);
        else
            esc(&o, v, n);          /* not reached with bytea_output = hex */
        break;
    default:
        esc(&o, v, n);
        break;
    }
    return o.n;
}

size_t snap_col_head(char *out, size_t cap, const snap_col *c, int flags)
{
    obuf o = { out, cap, 0 };
    puts_(&o, "{\"name\":");
    esc(&o, c->name, strlen(c->name));
    if (flags & W2J_TYPES) {
        /* format_type quotes names that need it; wal2json writes such a
         * name as it is (its quotes are the JSON string's), unless it is an
         * array type, whose brackets follow the closing quote */
        size_t tn = strlen(c->type);
        puts_(&o, ",\"type\":");
        if (tn && c->type[0] == '"' && c->type[tn - 1] != ']')
            put(&o, c->type, tn);
        else
            esc(&o, c->type, tn);
    }
    if (flags & W2J_TYPE_OIDS) {
        puts_(&o, ",\"typeoid\":");
        put_int(&o, (int32_t)c->typoid);   /* written with %d */
    }
    puts_(&o, ",\"value\":");
    return o.n;
}

size_t snap_col_tail(char *out, size_t cap, const snap_col *c, int flags)
{
    obuf o = { out, cap, 0 };
    if (flags & W2J_NOT_NULL)
        puts_(&o, c->notnull ? ",\"optional\":false" : ",\"optional\":true");
    if (flags & W2J_POSITIONS) {
        puts_(&o, ",\"position\":");
        put_int(&o, c->attnum);
    }
    if (flags & W2J_DEFAULTS) {
        if (c->defexpr) {           /* written between quotes, unescaped */
            puts_(&o, ",\"default\":\"");
            puts_(&o, c->defexpr);
            putc_(&o, '"');
        } else {
            puts_(&o, ",\"default\":null");
        }
    }
    putc_(&o, '}');
    return o.n;
}

/* ---- pg_current_snapshot() and visibility ---- */

static int read_u64(const char *s, size_t n, size_t *i, uint64_t *v)
{
    size_t start = *i;
    uint64_t x = 0;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        if (x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(s[*i] - '0');
        (*i)++;
    }
    if (*i == start || *i - start > 20)
        return -1;
    *v = x;
    return 0;
}

long pgsnap_parse(const char *s, size_t n, uint64_t *xmin, uint64_t *xmax,
                  uint64_t *xip, size_t cap)
{
    size_t i = 0, k = 0;
    if (read_u64(s, n, &i, xmin) || i >= n || s[i++] != ':' ||
        read_u64(s, n, &i, xmax) || i >= n || s[i++] != ':')
        return -1;
    if (*xmin > *xmax)
        return -1;
    while (i < n) {
        uint64_t x;
        if (read_u64(s, n, &i, &x) || x < *xmin || x >= *xmax)
            return -1;
        if (k == cap)
            return -1;
        /* kept sorted (PostgreSQL writes them sorted; do not rely on it) */
        size_t j = k++;
        while (j > 0 && xip[j - 1] > x) {
            xip[j] = xip[j - 1];
            j--;
        }
        xip[j] = x;
        if (i < n && s[i++] != ',')
            return -1;
        if (i == n && s[n - 1] == ',')
            return -1;
    }
    return (long)k;
}

uint64_t xid_widen(uint32_t xid, uint64_t near)
{
    /* the signed 32-bit distance from near's low half picks the epoch:
     * the same, the previous or the next one */
    int32_t d = (int32_t)(xid - (uint32_t)near);
    if (d < 0 && (uint64_t)(-(int64_t)d) > near)
        return 0;   /* before transaction ids began: as old as can be */
    return (uint64_t)((int64_t)near + d);
}

int xid_visible(uint32_t xid, uint64_t xmin, uint64_t xmax, const uint64_t *xip, size_t nxip)
{
    uint64_t x = xid_widen(xid, xmax);
    if (x < xmin)
        return 1;
    if (x >= xmax)
        return 0;
    size_t lo = 0, hi = nxip;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (xip[mid] == x)
            return 0;
        if (xip[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 1;
}

/* ---- the snapshot query ---- */

size_t sql_ident(char *out, size_t cap, const char *name)
{
    obuf o = { out, cap, 0 };
    putc_(&o, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            putc_(&o, '"');
        putc_(&o, *p);
    }
    putc_(&o, '"');
    return o.n;
}

static void ident(obuf *o, const char *name)
{
    size_t need = sql_ident(NULL, 0, name);
    if (o->n + need <= o->cap)
        sql_ident(o->p + o->n, need, name);
    o->n += need;
}

/* A plain integer that int8 takes: an optional sign and 1 to 18 digits. */
static int int8_literal(const char *s)
{
    size_t i = (*s == '-' || *s == '+') ? 1 : 0, d = 0;
    while (s[i] >= '0' && s[i] <= '9') {
        i++;
        d++;
    }
    return s[i] == 0 && d >= 1 && d <= 18;
}

/* numeric takes any decimal number pgcdc parses, short of an absurd
 * exponent (numeric_in refuses those). */
static int numeric_ok(const fval *v)
{
    return v->isnum && v->n <= 1000 && v->num.exp <= 1000 && v->num.exp >= -1000;
}

static int is_int_type(uint32_t t) { return t == 20 || t == 21 || t == 23; }
static int is_text_type(uint32_t t) { return t == 25 || t == 1043; }

/* Parameters are written NUL-terminated into the params region. */
typedef struct pctx {
    obuf *sql;
    obuf prm;
    unsigned n;
} pctx;

static void param_ref(pctx *p, const char *cast)
{
    char b[32];
    int k = snprintf(b, sizeof b, "$%u%s", ++p->n, cast);
    put(p->sql, b, (size_t)k);
}

static void param_text(pctx *p, const char *s, size_t n)
{
    put(&p->prm, s, n);
    putc_(&p->prm, 0);
}

/* An array literal of the values, each element double-quoted. */
static void param_array(pctx *p, const filter *f)
{
    putc_(&p->prm, '{');
    for (unsigned i = 0; i < f->nvals; i++) {
        if (i)
            putc_(&p->prm, ',');
        putc_(&p->prm, '"');
        for (size_t k = 0; k < f->vals[i].n; k++) {
            char c = f->vals[i].s[k];
            if (c == '"' || c == '\\')
                putc_(&p->prm, '\\');
            putc_(&p->prm, c);
        }
        putc_(&p->prm, '"');
    }
    putc_(&p->prm, '}');
    putc_(&p->prm, 0);
}

static const char *op_sql(int op)
{
    switch (op) {
    case OP_EQ: return " = ";
    case OP_NEQ: return " <> ";
    case OP_LT: return " < ";
    case OP_LTE: return " <= ";
    case OP_GT: return " > ";
    default: return " >= ";
    }
}

/* Writes one filter's condition, or nothing (returns 0) when SQL cannot
 * say the same thing.  The condition may match more rows than the filter
 * (NaN compares in SQL, never in pgcdc): pgcdc checks every row anyway;
 * it never matches fewer. */
static int push_filter(pctx *p, const filter *f, const snap_col *cols, unsigned ncols, int flags)
{
    const snap_col *c = NULL;
    for (unsigned i = 0; i < ncols; i++)
        if (!strcmp(cols[i].name, f->col))
            c = &cols[i];
    obuf *o = p->sql;
    if (!c) {                        /* pgcdc never matches a missing column */
        puts_(o, "false");
        return 1;
    }
    int numeric = snap_value_class(c->typoid) == VAL_NUMBER && !(flags & W2J_NUM_AS_STRING);
    if (f->op == OP_IS) {
        if (f->is != IS_NULL) {      /* JSON true/false: bool columns only */
            if (c->typoid != 16) {
                puts_(o, "false");
                return 1;
            }
            ident(o, c->name);
            puts_(o, f->is == IS_TRUE ? " IS TRUE" : " IS FALSE");
            return 1;
        }
        /* JSON null is also NaN and the infinities of float and numeric */
        if (numeric && !is_int_type(c->typoid))
            return 0;
        ident(o, c->name);
        puts_(o, " IS NULL");
        return 1;
    }
    if (numeric) {
        if (!is_int_type(c->typoid) && c->typoid != 1700)
            return 0;                /* floats: their text is not their value */
        int all_int = 1;
        for (unsigned i = 0; i < f->nvals; i++) {
            if (!numeric_ok(&f->vals[i]))
                return 0;            /* compared as text by pgcdc */
            all_int &= int8_literal(f->vals[i].s);
        }
        const char *t = is_int_type(c->typoid) && all_int ? "int8" : "numeric";
        ident(o, c->name);
        if (f->op == OP_IN) {
            puts_(o, " = ANY(");
            param_ref(p, t[0] == 'i' ? "::int8[]" : "::numeric[]");
            putc_(o, ')');
            param_array(p, f);
        } else {
            puts_(o, op_sql(f->op));
            param_ref(p, t[0] == 'i' ? "::int8" : "::numeric");
            param_text(p, f->vals[0].s, f->vals[0].n);
        }
        return 1;
    }
    if (!is_text_type(c->typoid))
        return 0;
    /* bytewise: equality under a deterministic collation is byte equality
     * (and can use the column's index); orderings need COLLATE "C" */
    int plain = c->deterministic && (f->op == OP_EQ || f->op == OP_NEQ || f->op == OP_IN);
    if (!plain)
        putc_(o, '(');
    ident(o, c->name);
    if (!plain)
        puts_(o, " COLLATE \"C\")");
    if (f->op == OP_IN) {
        puts_(o, " = ANY(");
        param_ref(p, "::text[]");
        putc_(o, ')');
        param_array(p, f);
    } else {
        puts_(o, op_sql(f->op));
        param_ref(p, "::text");
        param_text(p, f->vals[0].s, f->vals[0].n);
    }
    return 1;
}

size_t snap_query(char *out, size_t cap, const char *cursor, const spec *sp,
                  const snap_col *cols, unsigned ncols, int flags, unsigned *nparams,
                  size_t *pushed)
{
    /* the SQL goes first, its parameters after it: build the SQL into out
     * and the parameters into a second pass's position */
    obuf sql = { out, cap, 0 };
    pctx p = { &sql, { NULL, 0, 0 }, 0 };
    size_t npushed = 0;
    puts_(&sql, "DECLARE ");
    ident(&sql, cursor);
    puts_(&sql, " NO SCROLL CURSOR FOR SELECT ");
    for (unsigned i = 0; i < ncols; i++) {
        if (i)
            putc_(&sql, ',');
        ident(&sql, cols[i].name);
    }
    if (!ncols)
        puts_(&sql, "NULL");
    puts_(&sql, " FROM ONLY ");
    ident(&sql, sp->schema);
    putc_(&sql, '.');
    ident(&sql, sp->table);
    for (unsigned i = 0; i < sp->nfilters; i++) {
        size_t mark = sql.n;
        unsigned pmark = p.n;
        puts_(&sql, npushed ? " AND " : " WHERE ");
        if (push_filter(&p, &sp->filters[i], cols, ncols, flags)) {
            npushed++;
        } else {
            sql.n = mark;            /* nothing written past mark survives */
            p.n = pmark;
        }
    }
    putc_(&sql, 0);
    /* parameters: a second walk, now writing them after the SQL */
    size_t sql_len = sql.n;
    pctx q = { &(obuf){ NULL, 0, 0 }, { sql_len <= cap ? out + sql_len : NULL,
               sql_len <= cap ? cap - sql_len : 0, 0 }, 0 };
    for (unsigned i = 0; i < sp->nfilters; i++) {
        unsigned before = q.n;
        q.sql->n = 0;
        if (!push_filter(&q, &sp->filters[i], cols, ncols, flags))
            q.n = before;
    }
    *nparams = p.n;
    if (pushed)
        *pushed = npushed;
    return sql_len + q.prm.n;
}
