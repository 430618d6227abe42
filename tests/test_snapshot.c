/* test_snapshot.c -- rendering as wal2json does, pg_current_snapshot()
 * parsing, xid visibility across epochs, and the filter pushdown. */
#include <stdlib.h>

#include "pgcdc.h"
#include "t.h"

void test_snapshot(void);

static char out[4096];

/* Renders with fn and checks the bytes, and that a buffer one byte short
 * reports the same length without writing past it. */
#define CHECK_RENDER(call_cap, want) do { \
    size_t t_need = (call_cap(sizeof out)); \
    CHECK_MEM(out, t_need, want); \
    memset(out, '#', sizeof out); \
    size_t t_short = (call_cap(t_need - 1)); \
    CHECK_EQ(t_short, t_need); \
    CHECK(out[t_need - 1] == '#'); \
} while (0)

static const char *esc_in;
static size_t esc_n;
static size_t do_esc(size_t cap) { return pg_json_escape(out, cap, esc_in, esc_n); }

static int v_class, v_flags, v_null;
static const char *v_text;
static size_t do_val(size_t cap)
{
    return snap_render_value(out, cap, v_class, v_flags, v_text, strlen(v_text), v_null);
}

static void val(int cls, int flags, const char *text, int isnull, const char *want)
{
    v_class = cls;
    v_flags = flags;
    v_text = text;
    v_null = isnull;
    CHECK_RENDER(do_val, want);
}

static void escape_case(const char *in, size_t n, const char *want)
{
    esc_in = in;
    esc_n = n;
    CHECK_RENDER(do_esc, want);
}

static void test_escape(void)
{
    TEST("snapshot: strings escaped as PostgreSQL's escape_json does") {
        escape_case("plain", 5, "\"plain\"");
        escape_case("", 0, "\"\"");
        escape_case("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
        escape_case("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"");
        /* other control bytes as \u00xx in lower case; DEL and / untouched */
        escape_case("\x01\x1f\x7f/", 4, "\"\\u0001\\u001f\x7f/\"");
        /* UTF-8 (two, three and four bytes) is copied, never \u-escaped */
        escape_case("caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80", 14,
                    "\"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80\"");
    }
}

static void test_values(void)
{
    TEST("snapshot: values rendered by type class as wal2json does") {
        val(VAL_NUMBER, W2J_TYPES, "42", 0, "42");
        val(VAL_NUMBER, W2J_TYPES, "-1.50", 0, "-1.50");
        val(VAL_NUMBER, W2J_TYPES, "1e+20", 0, "1e+20");
        val(VAL_NUMBER, W2J_TYPES, "NaN", 0, "null");
        val(VAL_NUMBER, W2J_TYPES, "Infinity", 0, "null");
        val(VAL_NUMBER, W2J_TYPES, "-Infinity", 0, "null");
        val(VAL_NUMBER, W2J_TYPES | W2J_NUM_AS_STRING, "NaN", 0, "\"NaN\"");
        val(VAL_NUMBER, W2J_NUM_AS_STRING, "12.5", 0, "\"12.5\"");
        val(VAL_BOOL, 0, "t", 0, "true");
        val(VAL_BOOL, 0, "f", 0, "false");
        val(VAL_BYTEA, 0, "\\x00ff10", 0, "\"00ff10\"");
        val(VAL_BYTEA, 0, "\\x", 0, "\"\"");
        val(VAL_TEXT, 0, "{1,2}", 0, "\"{1,2}\"");
        val(VAL_TEXT, 0, "{\"a\": 1}", 0, "\"{\\\"a\\\": 1}\"");
        val(VAL_TEXT, 0, "", 1, "null");
        val(VAL_NUMBER, 0, "", 1, "null");
        val(VAL_BOOL, 0, "", 1, "null");
        CHECK_EQ(snap_value_class(20), VAL_NUMBER);
        CHECK_EQ(snap_value_class(21), VAL_NUMBER);
        CHECK_EQ(snap_value_class(23), VAL_NUMBER);
        CHECK_EQ(snap_value_class(26), VAL_NUMBER);
        CHECK_EQ(snap_value_class(700), VAL_NUMBER);
        CHECK_EQ(snap_value_class(701), VAL_NUMBER);
        CHECK_EQ(snap_value_class(1700), VAL_NUMBER);
        CHECK_EQ(snap_value_class(16), VAL_BOOL);
        CHECK_EQ(snap_value_class(17), VAL_BYTEA);
        CHECK_EQ(snap_value_class(25), VAL_TEXT);
        CHECK_EQ(snap_value_class(790), VAL_TEXT);     /* money: a string */
        CHECK_EQ(snap_value_class(1231), VAL_TEXT);    /* numeric[]: a string */
    }
}

static const snap_col *h_col;
static int h_flags;
static size_t do_head(size_t cap) { return snap_col_head(out, cap, h_col, h_flags); }
static size_t do_tail(size_t cap) { return snap_col_tail(out, cap, h_col, h_flags); }

static void test_columns(void)
{
    TEST("snapshot: a column's members as wal2json writes them, per option") {
        snap_col c = { "id", "integer", 23, 1, 1, 1, "nextval('t_id_seq'::regclass)" };
        h_col = &c;
        h_flags = W2J_TYPES;
        CHECK_RENDER(do_head, "{\"name\":\"id\",\"type\":\"integer\",\"value\":");
        CHECK_RENDER(do_tail, "}");
        h_flags = 0;
        CHECK_RENDER(do_head, "{\"name\":\"id\",\"value\":");
        h_flags = W2J_TYPES | W2J_TYPE_OIDS | W2J_NOT_NULL | W2J_POSITIONS | W2J_DEFAULTS;
        CHECK_RENDER(do_head, "{\"name\":\"id\",\"type\":\"integer\",\"typeoid\":23,\"value\":");
        CHECK_RENDER(do_tail, ",\"optional\":false,\"position\":1,"
                     "\"default\":\"nextval('t_id_seq'::regclass)\"}");
        snap_col d = { "na\"me", "\"Mood\"", 3000000000u, 7, 0, 1, NULL };
        h_col = &d;
        /* a quoted type name is written as it is; a type oid as %d does */
        CHECK_RENDER(do_head, "{\"name\":\"na\\\"me\",\"type\":\"Mood\",\"typeoid\":-1294967296,"
                     "\"value\":");
        CHECK_RENDER(do_tail, ",\"optional\":true,\"position\":7,\"default\":null}");
        snap_col e = { "m", "\"Mood\"[]", 16385, 2, 0, 1, NULL };
        h_col = &e;
        h_flags = W2J_TYPES;
        CHECK_RENDER(do_head, "{\"name\":\"m\",\"type\":\"\\\"Mood\\\"[]\",\"value\":");
        snap_col f = { "v", "character varying(20)", 1043, 3, 0, 1, NULL };
        h_col = &f;
        CHECK_RENDER(do_head, "{\"name\":\"v\",\"type\":\"character varying(20)\",\"value\":");
    }
    TEST("snapshot: rendering flags from wal2json_options") {
        CHECK_EQ(w2j_render_flags(""), W2J_TYPES);
        CHECK_EQ(w2j_render_flags(NULL), W2J_TYPES);
        CHECK_EQ(w2j_render_flags("include-timestamp=1"), W2J_TYPES);
        CHECK_EQ(w2j_render_flags("include-types=0"), 0);
        CHECK_EQ(w2j_render_flags("include-types = off , include-type-oids= TRUE"), W2J_TYPE_OIDS);
        CHECK_EQ(w2j_render_flags("include-not-null=y,include-domain-data-type=on"),
                 W2J_TYPES | W2J_NOT_NULL | W2J_DOMAIN_BASE);
        CHECK_EQ(w2j_render_flags("include-column-positions=1,include-default=t,"
                                  "numeric-data-types-as-string=yes"),
                 W2J_TYPES | W2J_POSITIONS | W2J_DEFAULTS | W2J_NUM_AS_STRING);
        /* "o" is neither on nor off; "of" is off; later settings win */
        CHECK_EQ(w2j_render_flags("include-type-oids=o"), W2J_TYPES);
        CHECK_EQ(w2j_render_flags("include-type-oids=1,include-type-oids=of"), W2J_TYPES);
        /* include-typmod does nothing in format-version 2 */
        CHECK_EQ(w2j_render_flags("include-typmod=0"), W2J_TYPES);
    }
}

static void test_pgsnap(void)
{
    TEST("snapshot: pg_current_snapshot() text parsed, malformed refused") {
        uint64_t xmin, xmax, xip[4];
        const char *s = "100:105:104,101";
        CHECK_EQ(pgsnap_parse(s, strlen(s), &xmin, &xmax, xip, 4), 2);
        CHECK_EQ(xmin, 100);
        CHECK_EQ(xmax, 105);
        CHECK_EQ(xip[0], 101);
        CHECK_EQ(xip[1], 104);
        s = "4294967296:4294967300:";
        CHECK_EQ(pgsnap_parse(s, strlen(s), &xmin, &xmax, xip, 4), 0);
        CHECK(xmin == 4294967296ull && xmax == 4294967300ull);
        s = "9000000000000000000:9000000000000000001:9000000000000000000";
        CHECK_EQ(pgsnap_parse(s, strlen(s), &xmin, &xmax, xip, 4), 1);
        CHECK(xip[0] == 9000000000000000000ull);
        static const char *const bad[] = {
            "", "1", "1:2", "1:2:x", "2:1:", "1:5:0", "1:5:5", "1:5:2,", "1:5:,2",
            "1:5:2,,3", "a:5:", "1:5:2;3", "99999999999999999999999:1:", "1:5:2,3,4,4,4",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            if (pgsnap_parse(bad[i], strlen(bad[i]), &xmin, &xmax, xip, 4) != -1) {
                t_fail++;
                fprintf(stderr, "  pgsnap_parse accepted \"%s\"\n", bad[i]);
            }
        }
        /* the length given is honoured: no NUL needed */
        CHECK_EQ(pgsnap_parse("3:9:4,5xyz", 5, &xmin, &xmax, xip, 4), 1);
        CHECK_EQ(pgsnap_parse("3:9:4,5xyz", 7, &xmin, &xmax, xip, 4), 2);
    }
}

static void test_visibility(void)
{
    TEST("snapshot: 32-bit xids widened to the nearest 64-bit id across epochs") {
        const uint64_t E = 1ull << 32;
        CHECK(xid_widen(742, 800) == 742);
        CHECK(xid_widen(900, 800) == 900);
        /* xmax just past an epoch boundary: an xid near 2^32 is the
         * previous epoch's, a small one this epoch's */
        CHECK(xid_widen(4294967290u, 5 * E + 3) == 5 * E - 6);
        CHECK(xid_widen(10, 5 * E + 3) == 5 * E + 10);
        /* xmax just before the boundary: a small xid is the next epoch's */
        CHECK(xid_widen(2, 5 * E - 3) == 5 * E + 2);
        CHECK(xid_widen(4294967000u, 5 * E - 3) == 5 * E - 296);
        /* half the xid space either way */
        CHECK(xid_widen(0x80000000u + 100, 100 + E) == 100 + E + 0x80000000ull - (1ull << 32));
        CHECK(xid_widen(99 + 0x80000000u, 100 + E) == E + 99 + 0x80000000ull);
        /* before the first epoch began: oldest possible */
        CHECK(xid_widen(4294967000u, 1000) == 0);
    }
    TEST("snapshot: visibility below xmin, in xip, at and above xmax, at an epoch boundary") {
        const uint64_t E = 1ull << 32;
        /* snapshot 2^32*5 - 3 : 2^32*5 + 4 : {2^32*5 - 1, 2^32*5 + 1} */
        uint64_t xmin = 5 * E - 3, xmax = 5 * E + 4;
        uint64_t xip[2] = { 5 * E - 1, 5 * E + 1 };
        CHECK(xid_visible(4294967290u, xmin, xmax, xip, 2));       /* below xmin */
        CHECK(xid_visible(4294967293u, xmin, xmax, xip, 2));       /* = xmin, committed */
        CHECK(xid_visible(4294967294u, xmin, xmax, xip, 2));       /* between, not in xip */
        CHECK(!xid_visible(4294967295u, xmin, xmax, xip, 2));      /* in xip, old epoch */
        CHECK(xid_visible(0, xmin, xmax, xip, 2));                 /* 5E + 0 */
        CHECK(!xid_visible(1, xmin, xmax, xip, 2));                /* in xip, new epoch */
        CHECK(xid_visible(3, xmin, xmax, xip, 2));
        CHECK(!xid_visible(4, xmin, xmax, xip, 2));                /* = xmax */
        CHECK(!xid_visible(5000, xmin, xmax, xip, 2));             /* started later */
        CHECK(xid_visible(1000, 2000, 3000, NULL, 0));
        CHECK(xid_visible(2999, 2000, 3000, NULL, 0));
        CHECK(!xid_visible(3000, 2000, 3000, NULL, 0));
        /* a transaction that started after a snapshot taken just before the
         * wrap: its small xid lies above xmax, not far below xmin */
        CHECK(!xid_visible(7, 5 * E - 10, 5 * E - 8, NULL, 0));
    }
}

/* Builds the query for a subscription and checks SQL and parameters. */
static void query_case(const char *q, const char *const *filters, unsigned nf,
                       const snap_col *cols, unsigned ncols, int flags,
                       const char *want_sql, const char *const *want_params, unsigned want_np)
{
    char err[256];
    spec *sp = spec_parse(q, (char *const *)filters, nf, err, sizeof err);
    if (!sp) {
        t_fail++;
        fprintf(stderr, "  spec_parse(%s): %s\n", q, err);
        return;
    }
    unsigned np = 99;
    size_t need = snap_query(NULL, 0, "c", sp, cols, ncols, flags, &np, NULL);
    char *b = malloc(need);
    memset(b, '#', need);
    /* one byte short: the same length, nothing written past the room */
    if (need > 1) {
        CHECK_EQ(snap_query(b, need - 1, "c", sp, cols, ncols, flags, &np, NULL), need);
        CHECK(b[need - 1] == '#');
    }
    CHECK_EQ(snap_query(b, need, "c", sp, cols, ncols, flags, &np, NULL), need);
    CHECK_EQ(np, want_np);
    if (strcmp(b, want_sql)) {
        t_fail++;
        fprintf(stderr, "  query %s:\n   got  %s\n   want %s\n", q, b, want_sql);
    }
    const char *p = b + strlen(b) + 1;
    for (unsigned i = 0; i < want_np && i < np; i++) {
        if (strcmp(p, want_params[i])) {
            t_fail++;
            fprintf(stderr, "  query %s: $%u is \"%s\", want \"%s\"\n", q, i + 1, p, want_params[i]);
        }
        p += strlen(p) + 1;
    }
    CHECK_EQ((size_t)(p - b), need);
    free(b);
    free(sp);
}

static void test_pushdown(void)
{
    static const snap_col cols[] = {
        { "id", "integer", 23, 1, 1, 1, NULL },
        { "price", "numeric(10,2)", 1700, 2, 0, 1, NULL },
        { "status", "text", 25, 3, 0, 1, NULL },
        { "ok", "boolean", 16, 4, 0, 1, NULL },
        { "f", "double precision", 701, 5, 0, 1, NULL },
        { "ci", "text", 25, 6, 0, 0, NULL },
        { "at", "timestamp with time zone", 1184, 7, 0, 1, NULL },
        { "we\"ird", "bigint", 20, 8, 0, 1, NULL },
    };
    const unsigned n = sizeof cols / sizeof cols[0];
    const char *sel = "DECLARE \"c\" NO SCROLL CURSOR FOR SELECT \"id\",\"price\",\"status\",\"ok\","
                      "\"f\",\"ci\",\"at\",\"we\"\"ird\" FROM ONLY \"public\".\"t\"";
    char want[1024];
    TEST("snapshot: filters pushed into SQL with pgcdc's meaning, values as parameters") {
        query_case("*:t", NULL, 0, cols, n, W2J_TYPES, sel, NULL, 0);
        /* integers as int8 (the column's index is usable), fractions as numeric */
        snprintf(want, sizeof want, "%s WHERE \"id\" = $1::int8", sel);
        query_case("*:t:id.eq.5", NULL, 0, cols, n, W2J_TYPES, want, (const char *[]){ "5" }, 1);
        snprintf(want, sizeof want, "%s WHERE \"id\" < $1::numeric", sel);
        query_case("*:t:id.lt.5.5", NULL, 0, cols, n, W2J_TYPES, want, (const char *[]){ "5.5" }, 1);
        snprintf(want, sizeof want, "%s WHERE \"price\" >= $1::numeric AND \"status\" = $2::text", sel);
        query_case("insert:t:price.gte.1.5", (const char *[]){ "status.eq.open" }, 1, cols, n,
                   W2J_TYPES, want, (const char *[]){ "1.5", "open" }, 2);
        /* orderings on text compare bytes: COLLATE "C" */
        snprintf(want, sizeof want, "%s WHERE (\"status\" COLLATE \"C\") > $1::text", sel);
        query_case("*:t:status.gt.m", NULL, 0, cols, n, W2J_TYPES, want, (const char *[]){ "m" }, 1);
        /* a nondeterministic collation: equality by bytes too */
        snprintf(want, sizeof want, "%s WHERE (\"ci\" COLLATE \"C\") = $1::text", sel);
        query_case("*:t:ci.eq.A", NULL, 0, cols, n, W2J_TYPES, want, (const char *[]){ "A" }, 1);
        /* in: = ANY of an array parameter, elements quoted */
        snprintf(want, sizeof want, "%s WHERE \"status\" = ANY($1::text[])", sel);
        query_case("*:t:status.in.(a,\"b,c\",\"q\\\"\\\\\")", NULL, 0, cols, n, W2J_TYPES, want,
                   (const char *[]){ "{\"a\",\"b,c\",\"q\\\"\\\\\"}" }, 1);
        snprintf(want, sizeof want, "%s WHERE \"id\" = ANY($1::int8[])", sel);
        query_case("*:t:id.in.1,2,3", NULL, 0, cols, n, W2J_TYPES, want,
                   (const char *[]){ "{\"1\",\"2\",\"3\"}" }, 1);
        snprintf(want, sizeof want, "%s WHERE \"id\" = ANY($1::numeric[])", sel);
        query_case("*:t:id.in.1,2.5", NULL, 0, cols, n, W2J_TYPES, want,
                   (const char *[]){ "{\"1\",\"2.5\"}" }, 1);
        /* is */
        snprintf(want, sizeof want, "%s WHERE \"status\" IS NULL AND \"ok\" IS TRUE AND \"id\" IS NULL", sel);
        query_case("*:t:status.is.null", (const char *[]){ "ok.is.true", "id.is.null" }, 2, cols, n,
                   W2J_TYPES, want, NULL, 0);
        snprintf(want, sizeof want, "%s WHERE \"ok\" IS FALSE AND false", sel);
        query_case("*:t:ok.is.false", (const char *[]){ "status.is.true" }, 1, cols, n, W2J_TYPES,
                   want, NULL, 0);
        /* a column the table lacks never matches */
        snprintf(want, sizeof want, "%s WHERE false", sel);
        query_case("*:t:nosuch.eq.1", NULL, 0, cols, n, W2J_TYPES, want, NULL, 0);
        snprintf(want, sizeof want, "%s WHERE \"id\" <> $1::int8", sel);
        query_case("*:t:id.neq.-7", NULL, 0, cols, n, W2J_TYPES, want, (const char *[]){ "-7" }, 1);
    }
    TEST("snapshot: filters SQL cannot say the same way are left to pgcdc") {
        /* floats (their text is not their value), a non-number against a
         * number, timestamps (compared as text), NaN-able is.null, a huge
         * exponent: nothing pushed, parameters numbered without gaps */
        snprintf(want, sizeof want, "%s WHERE \"status\" = $1::text", sel);
        query_case("*:t:f.eq.0.1", (const char *[]){ "id.eq.abc", "at.gt.2026", "price.is.null",
                   "f.is.null", "price.eq.1e99999", "status.eq.x" }, 6, cols, n, W2J_TYPES, want,
                   (const char *[]){ "x" }, 1);
        /* numbers as strings: numeric columns compare as text in pgcdc */
        query_case("*:t:id.eq.5", NULL, 0, cols, n, W2J_TYPES | W2J_NUM_AS_STRING, sel, NULL, 0);
        snprintf(want, sizeof want, "%s WHERE \"price\" IS NULL", sel);
        query_case("*:t:price.is.null", NULL, 0, cols, n, W2J_NUM_AS_STRING, want, NULL, 0);
    }
}

void test_snapshot(void)
{
    test_escape();
    test_values();
    test_columns();
    test_pgsnap();
    test_visibility();
    test_pushdown();
}
