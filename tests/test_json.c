/* test_json.c -- tests of json.c: the resumable tokenizer (whole and byte at
 * a time, every truncation, malformed input), wal2json record extraction,
 * unescaping, escaped comparison and LSN parsing.
 *
 * Every input is copied into a heap buffer of exactly its length, so the
 * sanitizer catches any read past len.  The records in real_records[] were
 * produced by wal2json (format-version 2, include-lsn, include-transaction,
 * include-timestamp) from PostgreSQL 15.
 */
#include <stdint.h>
#include <stdlib.h>

#include "pgcdc.h"
#include "t.h"

#define NTOK 1024

void test_json(void);

static const char *const real_records[] = {
    /* B */
    "{\"action\":\"B\",\"timestamp\":\"2026-11-24 00:28:58.321999+00\",\""
    "lsn\":\"0/15263A8\",\"nextlsn\":\"0/15269E0\"}",
    /* C */
    "{\"action\":\"C\",\"timestamp\":\"2026-11-24 00:28:58.321999+00\",\""
    "lsn\":\"0/15263A8\",\"nextlsn\":\"0/15269E0\"}",
    /* I */
    "{\"action\":\"I\",\"timestamp\":\"2026-11-24 00:28:58.325312+00\",\""
    "lsn\":\"0/152FCE0\",\"schema\":\"public\",\"table\":\"t\",\"columns"
    "\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1},{\"name\":\"s"
    "\",\"type\":\"text\",\"value\":\"a\\\"b\\\\\\\\c\\n\303\251\\u0001\\"
    "t\360\237\230\200/<\"},{\"name\":\"n\",\"type\":\"numeric\",\"value"
    "\":1.50},{\"name\":\"b\",\"type\":\"boolean\",\"value\":true},{\"nam"
    "e\":\"j\",\"type\":\"jsonb\",\"value\":\"{\\\"a\\\": 1}\"},{\"name\""
    ":\"f\",\"type\":\"double precision\",\"value\":1e+300},{\"name\":\"w"
    "e\\\"ird col\",\"type\":\"text\",\"value\":\"w\"},{\"name\":\"a\",\""
    "type\":\"integer[]\",\"value\":\"{1,2}\"},{\"name\":\"bt\",\"type\":"
    "\"bytea\",\"value\":\"00ff\"},{\"name\":\"ts\",\"type\":\"timestamp "
    "with time zone\",\"value\":null}]}",
    /* U */
    "{\"action\":\"U\",\"timestamp\":\"2026-11-24 00:28:58.326134+00\",\""
    "lsn\":\"0/152FE58\",\"schema\":\"public\",\"table\":\"t\",\"columns"
    "\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1},{\"name\":\"s"
    "\",\"type\":\"text\",\"value\":\"z\"},{\"name\":\"n\",\"type\":\"num"
    "eric\",\"value\":1.50},{\"name\":\"b\",\"type\":\"boolean\",\"value"
    "\":true},{\"name\":\"j\",\"type\":\"jsonb\",\"value\":\"{\\\"a\\\": "
    "1}\"},{\"name\":\"f\",\"type\":\"double precision\",\"value\":1e+300"
    "},{\"name\":\"we\\\"ird col\",\"type\":\"text\",\"value\":\"w\"},{\""
    "name\":\"a\",\"type\":\"integer[]\",\"value\":\"{1,2}\"},{\"name\":"
    "\"bt\",\"type\":\"bytea\",\"value\":\"00ff\"},{\"name\":\"ts\",\"typ"
    "e\":\"timestamp with time zone\",\"value\":null}],\"identity\":[{\"n"
    "ame\":\"id\",\"type\":\"integer\",\"value\":1}]}",
    /* I */
    "{\"action\":\"I\",\"timestamp\":\"2026-11-24 00:28:58.326493+00\",\""
    "lsn\":\"0/152FF28\",\"schema\":\"public\",\"table\":\"t\",\"columns"
    "\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":2},{\"name\":\"s"
    "\",\"type\":\"text\",\"value\":null},{\"name\":\"n\",\"type\":\"nume"
    "ric\",\"value\":null},{\"name\":\"b\",\"type\":\"boolean\",\"value\""
    ":null},{\"name\":\"j\",\"type\":\"jsonb\",\"value\":null},{\"name\":"
    "\"f\",\"type\":\"double precision\",\"value\":null},{\"name\":\"we\\"
    "\"ird col\",\"type\":\"text\",\"value\":null},{\"name\":\"a\",\"type"
    "\":\"integer[]\",\"value\":null},{\"name\":\"bt\",\"type\":\"bytea\""
    ",\"value\":null},{\"name\":\"ts\",\"type\":\"timestamp with time zon"
    "e\",\"value\":null}]}",
    /* I */
    "{\"action\":\"I\",\"timestamp\":\"2026-11-24 00:28:58.326493+00\",\""
    "lsn\":\"0/152FFB8\",\"schema\":\"public\",\"table\":\"t\",\"columns"
    "\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":3},{\"name\":\"s"
    "\",\"type\":\"text\",\"value\":\"\"},{\"name\":\"n\",\"type\":\"nume"
    "ric\",\"value\":null},{\"name\":\"b\",\"type\":\"boolean\",\"value\""
    ":null},{\"name\":\"j\",\"type\":\"jsonb\",\"value\":null},{\"name\":"
    "\"f\",\"type\":\"double precision\",\"value\":null},{\"name\":\"we\\"
    "\"ird col\",\"type\":\"text\",\"value\":null},{\"name\":\"a\",\"type"
    "\":\"integer[]\",\"value\":null},{\"name\":\"bt\",\"type\":\"bytea\""
    ",\"value\":null},{\"name\":\"ts\",\"type\":\"timestamp with time zon"
    "e\",\"value\":null}]}",
    /* I */
    "{\"action\":\"I\",\"timestamp\":\"2026-11-24 00:28:58.327039+00\",\""
    "lsn\":\"0/1530090\",\"schema\":\"my.s\",\"table\":\"T x\",\"columns"
    "\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1}]}",
    /* I */
    "{\"action\":\"I\",\"timestamp\":\"2026-11-24 00:28:58.327463+00\",\""
    "lsn\":\"0/15301A0\",\"schema\":\"public\",\"table\":\"q\\\"t\",\"col"
    "umns\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":5}]}",
    /* D */
    "{\"action\":\"D\",\"timestamp\":\"2026-11-24 00:28:58.327789+00\",\""
    "lsn\":\"0/1530210\",\"schema\":\"public\",\"table\":\"t\",\"identity"
    "\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1}]}",
    /* T */
    "{\"action\":\"T\",\"timestamp\":\"2026-11-24 00:28:58.329031+00\",\""
    "lsn\":\"0/1530DD8\",\"schema\":\"public\",\"table\":\"t\"}",
    /* M */
    "{\"action\":\"M\",\"timestamp\":\"2026-11-24 00:28:58.329866+00\",\""
    "lsn\":\"0/1530FB8\",\"transactional\":true,\"prefix\":\"p\",\"conten"
    "t\":\"hello\"}",
};
#define NREAL (sizeof real_records / sizeof real_records[0])

/* Hand-written shapes wal2json can also produce, or that the reader must
 * cope with: escapes, surrogate pairs, raw UTF-8, no "type" (include-types=0),
 * whitespace between tokens, unknown keys. */
static const char *const other_records[] = {
    "{\"action\":\"I\",\"lsn\":\"0/1\",\"schema\":\"s\",\"table\":\"t\","
    "\"columns\":[{\"name\":\"u\",\"type\":\"text\",\"value\":"
    "\"\\u00e9\\ud83d\\ude00\\u20AC\\/\\b\\f\\n\\r\\t\"}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
    "\"columns\":[{\"name\":\"id\",\"value\":1},{\"name\":\"x\",\"value\":null}]}",
    " {\n \"action\" : \"D\" ,\t\"schema\":\"sch\\\"ema\",\"table\":\"t\\\\x\",\r\n"
    " \"identity\" : [ { \"name\" : \"id\" , \"value\" : -0.5e-3 } ] } \n",
    "{\"action\":\"U\",\"xid\":12345,\"origin\":\"o\",\"schema\":\"s\","
    "\"table\":\"t\",\"pk\":[{\"name\":\"id\",\"type\":\"integer\"}],"
    "\"columns\":[{\"name\":\"id\",\"type\":\"integer\",\"typeoid\":23,"
    "\"optional\":false,\"value\":2}],"
    "\"identity\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
    "[{\"name\":\"o\",\"value\":{\"a\":[1,2,{}],\"b\":[]}},"
    "{\"name\":\"raw\",\"value\":\"\303\251\360\237\230\200\377\"}]}",
};
#define NOTHER (sizeof other_records / sizeof other_records[0])

static char *dup_exact(const char *s, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (!b)
        abort();
    if (n)
        memcpy(b, s, n);
    return b;
}

static int toks_eq(const json_tok *a, const json_tok *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i].type != b[i].type || a[i].start != b[i].start ||
            a[i].end != b[i].end || a[i].size != b[i].size ||
            a[i].parent != b[i].parent)
            return 0;
    return 1;
}

/* Parses s in one call from an exact-size copy. */
static int parse_whole(const char *s, size_t n, json_tok *toks, unsigned ntoks)
{
    json_parser p;
    json_init(&p);
    char *b = dup_exact(s, n);
    int rc = json_parse(&p, b, n, toks, ntoks);
    free(b);
    return rc;
}

/* Feeds s one byte more per call; each call sees an exact-size copy of the
 * prefix, so reading past len is caught.  Returns the final result and
 * counts in *odd the calls that broke the rule: JSON_PARTIAL while the
 * prefix is shorter than done_at, the final result from there on. */
static int parse_bytewise(const char *s, size_t n, size_t done_at,
                          json_tok *toks, unsigned ntoks, int *odd)
{
    json_parser p;
    int rc = JSON_PARTIAL, first_done = 0;
    json_init(&p);
    *odd = 0;
    for (size_t len = 1; len <= n; len++) {
        char *b = dup_exact(s, len);
        rc = json_parse(&p, b, len, toks, ntoks);
        free(b);
        if (len < done_at && rc != JSON_PARTIAL)
            (*odd)++;
        if (len == done_at)
            first_done = rc;
        if (len > done_at && rc != first_done)
            (*odd)++;
        if (rc == JSON_INVALID || rc == JSON_NOMEM)
            break;
    }
    return rc;
}

/* Where the value ends: trailing whitespace does not count. */
static size_t value_end(const char *s, size_t n)
{
    while (n > 0 && strchr(" \t\r\n", s[n - 1]))
        n--;
    return n;
}

/* Whole, byte-at-a-time and every truncation must agree. */
static void check_record_shapes(const char *s)
{
    static json_tok whole[NTOK], step[NTOK];
    size_t n = strlen(s), done_at = value_end(s, n);
    int early;

    int nw = parse_whole(s, n, whole, NTOK);
    CHECK(nw > 0);
    int ns = parse_bytewise(s, n, done_at, step, NTOK, &early);
    CHECK_EQ(ns, nw);
    CHECK_EQ(early, 0);
    if (nw > 0 && ns == nw)
        CHECK(toks_eq(whole, step, nw));

    /* Growing the very same buffer, 7 bytes at a time. */
    char *b = dup_exact(s, n);
    json_parser p;
    json_init(&p);
    int rc = JSON_PARTIAL;
    for (size_t len = 0; len < n && rc == JSON_PARTIAL;) {
        len = len + 7 < n ? len + 7 : n;
        rc = json_parse(&p, b, len, step, NTOK);
    }
    CHECK_EQ(rc, nw);
    if (nw > 0 && rc == nw)
        CHECK(toks_eq(whole, step, nw));
    free(b);

    /* Every truncation, parsed afresh, is partial, never complete. */
    int bad = 0;
    w2j_col cols[64];
    w2j_record r;
    for (size_t len = 0; len < done_at; len++) {
        char *pb = dup_exact(s, len);
        if (parse_whole(pb, len, step, NTOK) != JSON_PARTIAL)
            bad++;
        if (w2j_parse(pb, len, step, NTOK, cols, 64, &r) != JSON_PARTIAL)
            bad++;
        free(pb);
    }
    CHECK_EQ(bad, 0);

    /* Exactly enough tokens works; one fewer is JSON_NOMEM. */
    if (nw > 0) {
        CHECK_EQ(parse_whole(s, n, step, (unsigned)nw), nw);
        CHECK_EQ(parse_whole(s, n, step, (unsigned)nw - 1), JSON_NOMEM);
    }
}

static int parse_str(const char *s)
{
    static json_tok toks[NTOK];
    return parse_whole(s, strlen(s), toks, NTOK);
}

/* A malformed input is JSON_INVALID whole and byte at a time. */
static int invalid_everywhere(const char *s)
{
    static json_tok toks[NTOK];
    size_t n = strlen(s);
    int odd;
    return parse_whole(s, n, toks, NTOK) == JSON_INVALID &&
           parse_bytewise(s, n, n, toks, NTOK, &odd) == JSON_INVALID;
}

static void test_tokens(void)
{
    TEST("json: records from wal2json, whole, byte at a time, truncated") {
        for (size_t i = 0; i < NREAL; i++)
            check_record_shapes(real_records[i]);
    }
    TEST("json: hand-written records, whole, byte at a time, truncated") {
        for (size_t i = 0; i < NOTHER; i++)
            check_record_shapes(other_records[i]);
    }
    TEST("json: token offsets, sizes and parents") {
        const char *s = "{\"a\":[1,\"x\\\"\",{\"b\":null}],\"c\":-1.5e+3,\"d\":true}";
        json_tok t[32];
        int n = parse_whole(s, strlen(s), t, 32);
        CHECK_EQ(n, 12);
        static const struct { uint8_t type; const char *text; uint32_t size;
                              int32_t parent; } want[] = {
            { JSON_OBJECT, NULL, 3, -1 }, { JSON_STRING, "a", 0, 0 },
            { JSON_ARRAY, NULL, 3, 0 }, { JSON_NUMBER, "1", 0, 2 },
            { JSON_STRING, "x\\\"", 0, 2 }, { JSON_OBJECT, "{\"b\":null}", 1, 2 },
            { JSON_STRING, "b", 0, 5 }, { JSON_NULL, "null", 0, 5 },
            { JSON_STRING, "c", 0, 0 }, { JSON_NUMBER, "-1.5e+3", 0, 0 },
            { JSON_STRING, "d", 0, 0 }, { JSON_TRUE, "true", 0, 0 },
        };
        for (int i = 0; i < 12 && i < n; i++) {
            CHECK_EQ(t[i].type, want[i].type);
            CHECK_EQ(t[i].size, want[i].size);
            CHECK_EQ(t[i].parent, want[i].parent);
            if (want[i].text)
                CHECK_MEM(s + t[i].start, t[i].end - t[i].start, want[i].text);
        }
        CHECK_EQ(t[0].start, 0);
        CHECK_EQ(t[0].end, strlen(s));
        CHECK_MEM(s + t[2].start, t[2].end - t[2].start,
                  "[1,\"x\\\"\",{\"b\":null}]");
    }
    TEST("json: numbers are checked and kept as text") {
        static const char *const good[] = {
            "0", "-0", "1", "-1", "10", "1.5", "1.50", "0.0", "1e5", "1E+5",
            "1e-5", "-0.5e10", "0e0", "123456789012345678901234567890", "1e+300"
        };
        static const char *const bad[] = {
            "01", "-01", "00", "1.", ".5", "-", "1e", "1e+", "+1", "1.e5",
            "0x10", "1ee5", "--1", "1.5.", "Infinity", "NaN", "- 1", "1e5.0",
            "-.5", "1.5e", "1E-", "0.", "-a"
        };
        char buf[64];
        json_tok t[8];
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
            int n = snprintf(buf, sizeof buf, "[%s]", good[i]);
            int rc = parse_whole(buf, (size_t)n, t, 8);
            CHECK_EQ(rc, 2);
            if (rc == 2) {
                CHECK_EQ(t[1].type, JSON_NUMBER);
                CHECK_MEM(buf + t[1].start, t[1].end - t[1].start, good[i]);
            }
            n = snprintf(buf, sizeof buf, "{\"v\":%s}", good[i]);
            CHECK_EQ(parse_whole(buf, (size_t)n, t, 8), 3);
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(buf, sizeof buf, "[%s]", bad[i]);
            if (!invalid_everywhere(buf)) {
                t_fail++;
                fprintf(stderr, "  number %s not rejected\n", bad[i]);
            }
        }
        /* A bare number may go on until something follows it. */
        CHECK_EQ(parse_str("12"), JSON_PARTIAL);
        CHECK_EQ(parse_str("12 "), 1);
        CHECK_EQ(parse_str("{\"a\":12"), JSON_PARTIAL);
    }
    TEST("json: strings, escapes and control characters") {
        CHECK_EQ(parse_str("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"]"), 2);
        CHECK_EQ(parse_str("[\"\"]"), 2);
        CHECK_EQ(parse_str("[\"\177 \303\251 \377\376 \300\200\"]"), 2);
        /* A lone surrogate is grammatical; json_unescape refuses it. */
        CHECK_EQ(parse_str("[\"\\ud800\"]"), 2);
        static const char *const bad[] = {
            "[\"\\x\"]", "[\"\\u12G4\"]", "[\"\\u12\"]", "[\"\\'\"]",
            "[\"\\U0041\"]", "[\"a\001b\"]", "[\"\037\"]",
            "[\"tab\there\"]", "[\"new\nline\"]", "[\"\\u\"]", "[\"\\ \"]",
            "['x']", "{'a':1}", "{\"a\001\":1}", "{\"\\q\":1}"
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            if (!invalid_everywhere(bad[i])) {
                t_fail++;
                fprintf(stderr, "  string #%zu not rejected\n", i);
            }
        /* A NUL byte inside a string is a control character too. */
        static const char nul[] = { '[', '"', 'a', 0, '"', ']' };
        json_tok t[4];
        CHECK_EQ(parse_whole(nul, sizeof nul, t, 4), JSON_INVALID);
    }
    TEST("json: structure errors, trailing bytes, literals") {
        static const char *const bad[] = {
            "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "[,1]", "{,}",
            "{1:2}", "{\"a\" 1}", "[1 2]", "{\"a\":1]", "[1}", "}", "]", ",",
            ":", "{\"a\":1}}", "{\"a\":1} x", "{\"a\":1}{}", "{\"a\":1},",
            "trux", "nul1", "True", "falsy", "[tru]", "{\"a\"::1}", "{:1}",
            "[\"a\":1]", "{\"a\",1}", "{\"a\":1 \"b\":2}", "x", "\"a\"x",
            "{} []", "[][]", "[1]]", "{\"a\":nulL}", "[-]"
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            if (!invalid_everywhere(bad[i])) {
                t_fail++;
                fprintf(stderr, "  \"%s\" not rejected\n", bad[i]);
            }
        CHECK_EQ(parse_str(" \t\r\n{\"a\":1} \n\t\r "), 3);
        CHECK_EQ(parse_str("{}"), 1);
        CHECK_EQ(parse_str("[]"), 1);
        CHECK_EQ(parse_str("[true,false,null]"), 4);
        CHECK_EQ(parse_str("\"s\""), 1);
        CHECK_EQ(parse_str("null"), 1);
        CHECK_EQ(parse_str(""), JSON_PARTIAL);
        CHECK_EQ(parse_str("   "), JSON_PARTIAL);
        CHECK_EQ(parse_str("tru"), JSON_PARTIAL);
        CHECK_EQ(parse_str("[fals"), JSON_PARTIAL);
        CHECK_EQ(parse_str("[\"\\\"]"), JSON_PARTIAL);
        CHECK_EQ(parse_str("{\"a\":\"x"), JSON_PARTIAL);
        CHECK_EQ(parse_str("{\"a\":\"x\\"), JSON_PARTIAL);
        CHECK_EQ(parse_str("{\"a\":\"\\u00"), JSON_PARTIAL);
        CHECK_EQ(parse_str("{\"a\":-"), JSON_PARTIAL);
        CHECK_EQ(parse_str("{\"a\":1.5e"), JSON_PARTIAL);
        static const char nul[] = { '{', '}', 0 };
        json_tok t[4];
        CHECK_EQ(parse_whole(nul, sizeof nul, t, 4), JSON_INVALID);
    }
    TEST("json: nesting deeper than 64 is refused") {
        char buf[300];
        json_tok t[200];
        for (int depth = 63; depth <= 66; depth++) {
            int n = 0;
            for (int i = 0; i < depth - 1; i++)
                buf[n++] = '[';
            memcpy(buf + n, "{\"k\":1}", 7);
            n += 7;
            for (int i = 0; i < depth - 1; i++)
                buf[n++] = ']';
            int rc = parse_whole(buf, (size_t)n, t, 200);
            if (depth <= 64)
                CHECK_EQ(rc, depth + 2);
            else
                CHECK_EQ(rc, JSON_INVALID);
        }
        char deep[10000];
        memset(deep, '[', sizeof deep);
        CHECK_EQ(parse_whole(deep, sizeof deep, t, 200), JSON_INVALID);
    }
    TEST("json: out of tokens, retry with more room, sticky errors") {
        const char *s = real_records[2];
        size_t n = strlen(s);
        static json_tok whole[NTOK], t[NTOK];
        int nw = parse_whole(s, n, whole, NTOK);
        CHECK(nw > 10);
        char *b = dup_exact(s, n);
        json_parser p;
        json_init(&p);
        CHECK_EQ(json_parse(&p, b, n, t, 5), JSON_NOMEM);
        CHECK_EQ(json_parse(&p, b, n, t, 5), JSON_NOMEM);
        CHECK_EQ(json_parse(&p, b, n, t, NTOK), nw);
        CHECK(toks_eq(whole, t, nw));
        CHECK_EQ(p.done, 1);
        /* Done: more whitespace is fine, anything else is not. */
        free(b);
        CHECK_EQ(json_parse(&p, "{}", 0, t, NTOK), JSON_INVALID);
        CHECK_EQ(parse_whole(s, n, t, 0), JSON_NOMEM);

        json_init(&p);
        CHECK_EQ(json_parse(&p, "[1,}", 4, t, NTOK), JSON_INVALID);
        CHECK_EQ(json_parse(&p, "[1,}", 4, t, NTOK), JSON_INVALID);
        CHECK_EQ(json_parse(&p, "[1,2]", 5, t, NTOK), JSON_INVALID);

        json_init(&p);
        CHECK_EQ(json_parse(&p, "[1] ", 3, t, NTOK), 2);
        CHECK_EQ(json_parse(&p, "[1] ", 4, t, NTOK), 2);
        CHECK_EQ(json_parse(&p, "[1] x", 5, t, NTOK), JSON_INVALID);
    }
    TEST("json: inputs of 4 GiB and more are refused without reading") {
        if ((uint64_t)SIZE_MAX > UINT32_MAX) {
            json_parser p;
            json_tok t[4];
            json_init(&p);
            char *b = dup_exact("{", 1);
            size_t huge = (size_t)((uint64_t)UINT32_MAX + 1);
            CHECK_EQ(json_parse(&p, b, huge, t, 4), JSON_INVALID);
            w2j_col c[1];
            w2j_record r;
            CHECK_EQ(w2j_parse(b, huge, t, 4, c, 1, &r), JSON_INVALID);
            free(b);
        }
    }
}

/* Runs w2j_parse on an exact-size copy of s; the slices in *r then point
 * into *keep, which the caller frees. */
static int w2j_str(const char *s, w2j_col *cols, unsigned ncap, w2j_record *r,
                   char **keep)
{
    static json_tok toks[NTOK];
    size_t n = strlen(s);
    *keep = dup_exact(s, n);
    return w2j_parse(*keep, n, toks, NTOK, cols, ncap, r);
}

static int w2j_rc(const char *s, unsigned ntoks, unsigned ncap)
{
    static json_tok toks[NTOK];
    w2j_col cols[16];
    w2j_record r;
    size_t n = strlen(s);
    char *b = dup_exact(s, n);
    int rc = w2j_parse(b, n, toks, ntoks, cols, ncap, &r);
    free(b);
    return rc;
}

#define CHECK_SL(sl, text) CHECK_MEM((sl).p, (sl).n, text)

static void check_col(const w2j_col *c, const char *name, const char *type,
                      const char *value, int vtype)
{
    CHECK_SL(c->name, name);
    CHECK_SL(c->type, type);
    CHECK_SL(c->value, value);
    CHECK_EQ(c->vtype, vtype);
}

static void test_records(void)
{
    w2j_col cols[16];
    w2j_record r;
    char *b;

    TEST("w2j: begin, commit, message") {
        CHECK_EQ(w2j_str(real_records[0], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'B');
        CHECK_SL(r.lsn, "0/15263A8");
        CHECK_SL(r.nextlsn, "0/15269E0");
        CHECK_EQ(r.schema.n, 0);
        CHECK_EQ(r.table.n, 0);
        CHECK_EQ(r.ncols, 0);
        CHECK_EQ(r.nident, 0);
        free(b);
        CHECK_EQ(w2j_str(real_records[1], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'C');
        CHECK_SL(r.lsn, "0/15263A8");
        free(b);
        CHECK_EQ(w2j_str(real_records[10], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'M');
        CHECK_SL(r.lsn, "0/1530FB8");
        CHECK_EQ(r.nextlsn.n, 0);
        CHECK_EQ(r.ncols + r.nident, 0);
        free(b);
    }
    TEST("w2j: insert with every kind of value") {
        CHECK_EQ(w2j_str(real_records[2], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'I');
        CHECK_SL(r.lsn, "0/152FCE0");
        CHECK_SL(r.schema, "public");
        CHECK_SL(r.table, "t");
        CHECK_EQ(r.ncols, 10);
        CHECK_EQ(r.nident, 0);
        CHECK(r.cols == cols);
        check_col(&cols[0], "id", "integer", "1", JSON_NUMBER);
        check_col(&cols[1], "s", "text",
                  "a\\\"b\\\\\\\\c\\n\303\251\\u0001\\t\360\237\230\200/<",
                  JSON_STRING);
        char out[64];
        long n = json_unescape(cols[1].value.p, cols[1].value.n, out, sizeof out);
        CHECK_MEM(out, n, "a\"b\\\\c\n\303\251\001\t\360\237\230\200/<");
        check_col(&cols[2], "n", "numeric", "1.50", JSON_NUMBER);
        check_col(&cols[3], "b", "boolean", "true", JSON_TRUE);
        check_col(&cols[4], "j", "jsonb", "{\\\"a\\\": 1}", JSON_STRING);
        check_col(&cols[5], "f", "double precision", "1e+300", JSON_NUMBER);
        check_col(&cols[6], "we\\\"ird col", "text", "w", JSON_STRING);
        CHECK(json_str_eq(cols[6].name, "we\"ird col", 10));
        check_col(&cols[7], "a", "integer[]", "{1,2}", JSON_STRING);
        check_col(&cols[8], "bt", "bytea", "00ff", JSON_STRING);
        check_col(&cols[9], "ts", "timestamp with time zone", "null", JSON_NULL);
        free(b);

        CHECK_EQ(w2j_str(real_records[4], cols, 16, &r, &b), JSON_OK);
        check_col(&cols[0], "id", "integer", "2", JSON_NUMBER);
        check_col(&cols[1], "s", "text", "null", JSON_NULL);
        free(b);
        CHECK_EQ(w2j_str(real_records[5], cols, 16, &r, &b), JSON_OK);
        check_col(&cols[1], "s", "text", "", JSON_STRING);
        free(b);
    }
    TEST("w2j: update, delete, truncate") {
        CHECK_EQ(w2j_str(real_records[3], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'U');
        CHECK_EQ(r.ncols, 10);
        CHECK_EQ(r.nident, 1);
        check_col(&cols[1], "s", "text", "z", JSON_STRING);
        check_col(&cols[10], "id", "integer", "1", JSON_NUMBER);
        /* The columns and the identity together must fit. */
        free(b);
        CHECK_EQ(w2j_str(real_records[3], cols, 10, &r, &b), JSON_NOMEM);
        free(b);
        CHECK_EQ(w2j_str(real_records[3], cols, 11, &r, &b), JSON_OK);
        free(b);
        CHECK_EQ(w2j_str(real_records[3], cols, 9, &r, &b), JSON_NOMEM);
        free(b);

        CHECK_EQ(w2j_str(real_records[8], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'D');
        CHECK_SL(r.lsn, "0/1530210");
        CHECK_EQ(r.ncols, 0);
        CHECK_EQ(r.nident, 1);
        check_col(&cols[0], "id", "integer", "1", JSON_NUMBER);
        free(b);
        CHECK_EQ(w2j_str(real_records[8], cols, 0, &r, &b), JSON_NOMEM);
        free(b);

        CHECK_EQ(w2j_str(real_records[9], cols, 0, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'T');
        CHECK_SL(r.schema, "public");
        CHECK_SL(r.table, "t");
        CHECK_EQ(r.ncols + r.nident, 0);
        free(b);
    }
    TEST("w2j: schema and table names with dots, spaces, quotes") {
        CHECK_EQ(w2j_str(real_records[6], cols, 16, &r, &b), JSON_OK);
        CHECK_SL(r.schema, "my.s");
        CHECK_SL(r.table, "T x");
        free(b);
        CHECK_EQ(w2j_str(real_records[7], cols, 16, &r, &b), JSON_OK);
        CHECK_SL(r.table, "q\\\"t");
        CHECK(json_str_eq(r.table, "q\"t", 3));
        free(b);
        CHECK_EQ(w2j_str(other_records[2], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'D');
        CHECK(json_str_eq(r.schema, "sch\"ema", 7));
        CHECK(json_str_eq(r.table, "t\\x", 3));
        CHECK_EQ(r.nident, 1);
        check_col(&cols[0], "id", "", "-0.5e-3", JSON_NUMBER);
        free(b);
    }
    TEST("w2j: escapes, no types, unknown keys, nested values") {
        CHECK_EQ(w2j_str(other_records[0], cols, 16, &r, &b), JSON_OK);
        char out[64];
        long n = json_unescape(cols[0].value.p, cols[0].value.n, out, sizeof out);
        CHECK_MEM(out, n, "\303\251\360\237\230\200\342\202\254/\b\f\n\r\t");
        free(b);
        CHECK_EQ(w2j_str(other_records[1], cols, 16, &r, &b), JSON_OK);
        check_col(&cols[0], "id", "", "1", JSON_NUMBER);
        check_col(&cols[1], "x", "", "null", JSON_NULL);
        free(b);
        CHECK_EQ(w2j_str(other_records[3], cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'U');
        CHECK_EQ(r.ncols, 1);
        CHECK_EQ(r.nident, 1);
        check_col(&cols[0], "id", "integer", "2", JSON_NUMBER);
        check_col(&cols[1], "id", "integer", "1", JSON_NUMBER);
        free(b);
        CHECK_EQ(w2j_str(other_records[4], cols, 0, &r, &b), JSON_OK);
        CHECK_EQ(r.ncols, 0);
        free(b);
        CHECK_EQ(w2j_str(other_records[5], cols, 16, &r, &b), JSON_OK);
        check_col(&cols[0], "o", "", "{\"a\":[1,2,{}],\"b\":[]}", JSON_OBJECT);
        check_col(&cols[1], "raw", "", "\303\251\360\237\230\200\377", JSON_STRING);
        free(b);
        /* A missing value; identity written before columns; escaped keys. */
        CHECK_EQ(w2j_str("{\"identity\":[{\"name\":\"k\",\"value\":[]}],"
                         "\"\\u0061ction\":\"\\u0055\",\"schema\":\"s\","
                         "\"table\":\"t\",\"columns\":[{\"name\":\"c\"}],"
                         "\"lsn\":\"0/A\"}", cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'U');
        CHECK_EQ(r.ncols, 1);
        CHECK_EQ(r.nident, 1);
        check_col(&cols[0], "c", "", "", JSON_NONE);
        check_col(&cols[1], "k", "", "[]", JSON_ARRAY);
        CHECK_SL(r.lsn, "0/A");
        free(b);
        /* Unknown actions are the caller's business. */
        CHECK_EQ(w2j_str("{\"action\":\"X\"}", cols, 16, &r, &b), JSON_OK);
        CHECK_EQ(r.action, 'X');
        free(b);
    }
    TEST("w2j: malformed records") {
        static const char *const bad[] = {
            "[]", "\"action\"", "{}",
            "{\"timestamp\":\"x\"}",
            "{\"action\":1}", "{\"action\":null}", "{\"action\":[\"I\"]}",
            "{\"action\":\"\"}", "{\"action\":\"IU\"}", "{\"action\":\"\303\251\"}",
            "{\"action\":\"\\ud83d\\ude00\"}", "{\"action\":\"\\uZZZZ\"}",
            "{\"action\":\"I\",\"table\":\"t\",\"columns\":[]}",
            "{\"action\":\"U\",\"schema\":\"s\",\"columns\":[]}",
            "{\"action\":\"D\"}", "{\"action\":\"T\",\"schema\":\"s\"}",
            "{\"action\":\"T\",\"schema\":1,\"table\":\"t\"}",
            "{\"action\":\"T\",\"schema\":\"s\",\"table\":null}",
            "{\"action\":\"B\",\"lsn\":1}", "{\"action\":\"C\",\"nextlsn\":null}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":{}}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":null}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[1]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[[]]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[{\"value\":1}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[{\"name\":1,\"value\":1}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[{\"name\":\"a\",\"type\":23,\"value\":1}]}",
            "{\"action\":\"D\",\"schema\":\"s\",\"table\":\"t\","
            "\"identity\":[{\"name\":\"a\"},2]}",
            "{\"action\":\"D\",\"schema\":\"s\",\"table\":\"t\",\"identity\":\"x\"}",
            /* Duplicate recognised keys are refused. */
            "{\"action\":\"I\",\"action\":\"D\",\"schema\":\"s\",\"table\":\"t\"}",
            "{\"action\":\"T\",\"schema\":\"s\",\"table\":\"t\",\"table\":\"u\"}",
            "{\"action\":\"T\",\"schema\":\"s\",\"table\":\"t\",\"\\u0074able\":\"u\"}",
            "{\"action\":\"B\",\"lsn\":\"0/1\",\"lsn\":\"0/2\"}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[],\"columns\":[]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[{\"name\":\"a\",\"name\":\"b\"}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[{\"name\":\"a\",\"value\":1,\"value\":2}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\","
            "\"columns\":[{\"name\":\"a\",\"type\":\"x\",\"type\":\"y\"}]}",
            /* Tokenizer errors surface unchanged. */
            "{\"action\":\"B\"} x", "{\"action\":\"B\",}", "{\"action\":\"B\"}}",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            int rc = w2j_rc(bad[i], NTOK, 16);
            if (rc != JSON_INVALID) {
                t_fail++;
                fprintf(stderr, "  w2j bad #%zu gave %d\n", i, rc);
            }
        }
        /* Duplicates of keys pgcdc does not read are left alone. */
        CHECK_EQ(w2j_rc("{\"action\":\"B\",\"origin\":1,\"origin\":2}", NTOK, 16), JSON_OK);
        CHECK_EQ(w2j_rc("{\"action\":\"B\"", NTOK, 16), JSON_PARTIAL);
        /* "xid" (include-xids) is read: a 32-bit unsigned decimal, once. */
        CHECK_EQ(w2j_rc("{\"action\":\"B\",\"xid\":1,\"xid\":2}", NTOK, 16), JSON_INVALID);
        CHECK_EQ(w2j_rc("{\"action\":\"B\",\"xid\":4294967296}", NTOK, 16), JSON_INVALID);
        CHECK_EQ(w2j_rc("{\"action\":\"B\",\"xid\":-1}", NTOK, 16), JSON_INVALID);
        CHECK_EQ(w2j_rc("{\"action\":\"B\",\"xid\":1.5}", NTOK, 16), JSON_INVALID);
        CHECK_EQ(w2j_rc("{\"action\":\"B\",\"xid\":\"7\"}", NTOK, 16), JSON_INVALID);
        {
            static json_tok tk[16];
            static w2j_col cl[4];
            w2j_record xr;
            const char *xb = "{\"action\":\"B\",\"xid\":4294967295,\"lsn\":\"0/1\"}";
            CHECK_EQ(w2j_parse(xb, strlen(xb), tk, 16, cl, 4, &xr), JSON_OK);
            CHECK_EQ(xr.has_xid, 1);
            CHECK_EQ(xr.xid, 4294967295u);
            xb = "{\"action\":\"I\",\"xid\":742,\"schema\":\"s\",\"table\":\"t\"}";
            CHECK_EQ(w2j_parse(xb, strlen(xb), tk, 16, cl, 4, &xr), JSON_OK);
            CHECK_EQ(xr.xid, 742);
            xb = "{\"action\":\"C\"}";
            CHECK_EQ(w2j_parse(xb, strlen(xb), tk, 16, cl, 4, &xr), JSON_OK);
            CHECK_EQ(xr.has_xid, 0);
        }
        CHECK_EQ(w2j_rc("", NTOK, 16), JSON_PARTIAL);
        CHECK_EQ(w2j_rc(real_records[2], 10, 16), JSON_NOMEM);
        CHECK_EQ(w2j_rc(real_records[2], NTOK, 9), JSON_NOMEM);
        CHECK_EQ(w2j_rc(real_records[2], NTOK, 10), JSON_OK);
        CHECK_EQ(w2j_rc("{\"action\":\"B\"}", 2, 0), JSON_NOMEM);
        CHECK_EQ(w2j_rc("{\"action\":\"B\"}", 3, 0), JSON_OK);
    }
}

static void test_escapes(void)
{
    TEST("json_unescape: escapes, surrogate pairs, capacity") {
        static const struct { const char *in, *out; size_t outlen; } ok[] = {
            { "", "", 0 },
            { "plain", "plain", 5 },
            { "\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t", 8 },
            { "\\u0041\\u00e9\\u00E9", "A\303\251\303\251", 5 },
            { "\\u20ac", "\342\202\254", 3 },
            { "\\uFFFF", "\357\277\277", 3 },
            { "\\ud83d\\ude00", "\360\237\230\200", 4 },
            { "\\uD83D\\uDE00x", "\360\237\230\200x", 5 },
            { "\\udbff\\udfff", "\364\217\277\277", 4 },
            { "\\ud800\\udc00", "\360\220\200\200", 4 },
            { "\\u0000", "", 1 },
            { "a\\u007fb", "a\177b", 3 },
            { "\303\251 raw", "\303\251 raw", 6 },
        };
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
            size_t n = strlen(ok[i].in);
            char *in = dup_exact(ok[i].in, n);
            char *out = malloc(ok[i].outlen + 1);
            long got = json_unescape(in, n, out, ok[i].outlen);
            CHECK_EQ(got, (long)ok[i].outlen);
            if (got == (long)ok[i].outlen)
                CHECK(memcmp(out, ok[i].out, ok[i].outlen) == 0);
            if (ok[i].outlen > 0)
                CHECK_EQ(json_unescape(in, n, out, ok[i].outlen - 1), -1);
            free(out);
            free(in);
        }
        static const char *const bad[] = {
            "\\", "a\\", "\\x", "\\u", "\\u12", "\\u12G4", "\\'", "\\U0041",
            "\\ud83d", "\\ud83dx", "\\ud83d\\", "\\ud83d\\u", "\\ud83d\\ude0",
            "\\ud83d\\u0041", "\\ud83d\\ud83d", "\\ude00", "\\udfff\\ud83d",
            "\\ud83d\\n", "ok\\ud800"
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            size_t n = strlen(bad[i]);
            char *in = dup_exact(bad[i], n);
            char out[32];
            if (json_unescape(in, n, out, sizeof out) != -1) {
                t_fail++;
                fprintf(stderr, "  unescape bad #%zu accepted\n", i);
            }
            free(in);
        }
    }
    TEST("json_str_eq: compares through escapes") {
        static const struct { const char *esc, *raw; size_t rawlen; int eq; } c[] = {
            { "", "", 0, 1 }, { "name", "name", 4, 1 }, { "name", "nam", 3, 0 },
            { "nam", "name", 4, 0 }, { "name", "namE", 4, 0 },
            { "we\\\"ird col", "we\"ird col", 10, 1 },
            { "we\\\"ird col", "we\\\"ird col", 11, 0 },
            { "\\u00e9", "\303\251", 2, 1 }, { "\\u00e9", "\303", 1, 0 },
            { "\\u00e9x", "\303\251", 2, 0 },
            { "\\ud83d\\ude00", "\360\237\230\200", 4, 1 },
            { "\\ud83d", "\355\240\275", 3, 0 }, { "\\q", "q", 1, 0 },
            { "\\", "\\", 1, 0 }, { "a\\/b", "a/b", 3, 1 },
            { "\\u0000", "", 1, 1 }, { "t\\u0061ble", "table", 5, 1 },
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            size_t n = strlen(c[i].esc);
            char *e = dup_exact(c[i].esc, n);
            char *raw = dup_exact(c[i].raw, c[i].rawlen);
            slice s = { e, n };
            if (json_str_eq(s, raw, c[i].rawlen) != c[i].eq) {
                t_fail++;
                fprintf(stderr, "  str_eq #%zu wrong\n", i);
            }
            free(raw);
            free(e);
        }
    }
    TEST("lsn_parse: X/X with 1 to 8 hex digits a side") {
        static const struct { const char *s; uint64_t v; } ok[] = {
            { "0/0", 0 }, { "0/152B510", 0x152B510 }, { "1/0", 1ull << 32 },
            { "FFFFFFFF/FFFFFFFF", UINT64_MAX }, { "abcdef01/0", 0xabcdef01ull << 32 },
            { "AbC/dEf", 0xabcull << 32 | 0xdef }, { "00000001/00000002", 1ull << 32 | 2 },
        };
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
            size_t n = strlen(ok[i].s);
            char *s = dup_exact(ok[i].s, n);
            uint64_t v = 7;
            CHECK_EQ(lsn_parse(s, n, &v), 0);
            CHECK(v == ok[i].v);
            free(s);
        }
        static const char *const bad[] = {
            "", "/", "0/", "/0", "0", "123456789/0", "0/123456789",
            "000000000/1", "0/1x", "0/1 ", " 0/1", "0//1", "0/1/2", "g/0",
            "-1/0", "+1/0", "0x1/0", "0/-1", "0 /1", "0/\0001"
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            size_t n = strlen(bad[i]);
            char *s = dup_exact(bad[i], n);
            uint64_t v = 0;
            if (lsn_parse(s, n, &v) != -1) {
                t_fail++;
                fprintf(stderr, "  lsn \"%s\" accepted\n", bad[i]);
            }
            free(s);
        }
        uint64_t v;
        CHECK_EQ(lsn_parse("0/1\0", 4, &v), -1);
        CHECK_EQ(lsn_parse("12/34 trailing", 5, &v), 0);
        CHECK(v == (0x12ull << 32 | 0x34));
    }
}


/* ==== w2j_parse's one-pass reader against the tokenizer path ============= */

/* More shapes for the comparison: each sends the one-pass reader down a
 * path it must either get exactly right or leave to the tokenizer. */
static const char *const odd_records[] = {
    "{\"\\u0061ction\":\"I\",\"schema\":\"s\",\"table\":\"t\"}",
    "{\"action\":\"\\u0049\",\"schema\":\"s\",\"table\":\"t\"}",
    "{\"action\":\"I\",\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\"}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"identity\":[{\"name\":\"a\"}],"
    "\"columns\":[{\"name\":\"b\"}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"n\\u0061me\":\"b\"}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"name\":\"b\"}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"type\":\"int\"}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":1}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[1]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":{}}",
    "{\"action\":\"I\",\"schema\":1,\"table\":\"t\"}",
    "{\"action\":\"I\",\"table\":\"t\"}",
    "{\"action\":\"M\",\"prefix\":\"p\",\"content\":\"c\"}",
    "{\"action\":\"IU\",\"schema\":\"s\",\"table\":\"t\"}",
    "{\"action\":\"\",\"schema\":\"s\",\"table\":\"t\"}",
    "{\"action\":\"\\u0000\"}",
    "{\"action\":\"B\",\"xid\":4294967295}",
    "{\"action\":\"B\",\"xid\":4294967296}",
    "{\"action\":\"B\",\"xid\":-1}",
    "{\"action\":\"B\",\"xid\":1.0}",
    "{\"action\":\"B\",\"xid\":01}",
    "{\"action\":\"B\",\"xid\":\"7\"}",
    "{\"action\":\"B\",\"xid\":12345678901}",
    "{\"action\":\"B\",\"lsn\":\"0/1\"} x",
    "{\"action\":\"B\",\"lsn\":\"0/1\"}{}",
    "[{\"action\":\"B\"}]",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":"
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":"
    "{\"\\u0041\":[true,false,null,-0,0.5,1E5,2e-1,3e+2,\"\\\"\"]}}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":tru}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":1,}]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\"},]}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"x\":\"\\x\"}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"x\":\"\\u12G4\"}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"x\":\"a\tb\"}",
    "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"x\":\"0123456789abcdef\\\"0123456789abcdef\"}",
    "{}",
    "{\"action\":\"C\"}   \n",
};
#define NODD (sizeof odd_records / sizeof odd_records[0])

static int same_slice(slice a, slice b)
{
    return a.p == b.p && a.n == b.n;
}

static int same_record(const w2j_record *a, const w2j_record *b)
{
    if (a->action != b->action || a->has_xid != b->has_xid || a->xid != b->xid ||
        !same_slice(a->lsn, b->lsn) || !same_slice(a->nextlsn, b->nextlsn) ||
        !same_slice(a->schema, b->schema) || !same_slice(a->table, b->table) ||
        a->ncols != b->ncols || a->nident != b->nident)
        return 0;
    for (unsigned i = 0; i < a->ncols + a->nident; i++)
        if (!same_slice(a->cols[i].name, b->cols[i].name) || !same_slice(a->cols[i].type, b->cols[i].type) ||
            !same_slice(a->cols[i].value, b->cols[i].value) || a->cols[i].vtype != b->cols[i].vtype)
            return 0;
    return 1;
}

/* Both readers on an exact-size copy of (s, n); 1 when they agree. */
static int readers_agree(const char *s, size_t n, unsigned ntoks, unsigned ncap, int *rc_out)
{
    static json_tok toks[NTOK];
    w2j_col ca[16], cb[16];
    w2j_record ra, rb;
    char *b = dup_exact(s, n);
    int a = w2j_parse(b, n, toks, ntoks, ca, ncap, &ra);
    int c = w2j_parse_tokens(b, n, toks, ntoks, cb, ncap, &rb);
    int same = a == c && (a != JSON_OK || same_record(&ra, &rb));
    /* a record said to be valid UTF-8 is, as the WebSocket layer judges it */
    if (a == JSON_OK && ra.utf8 && ws_utf8_step(0, (const uint8_t *)b, n) != 0)
        same = 0;
    free(b);
    *rc_out = a;
    return same;
}

static void test_fast_reader(void)
{
    TEST("w2j: the one-pass reader agrees with the tokenizer on every record, prefix and mutation") {
        static const unsigned char subst[] = {
            '"', '\\', '{', '}', '[', ']', ',', ':', ' ', '\n', '0', '9', '-', '.', 'e', 'a', 'u',
            't', 'n', 0x01, 0x1f, 0x7f, 0x80, 0xff
        };
        const char *all[NREAL + NOTHER + NODD];
        size_t nall = 0, oks = 0, cases = 0;
        for (size_t i = 0; i < NREAL; i++) all[nall++] = real_records[i];
        for (size_t i = 0; i < NOTHER; i++) all[nall++] = other_records[i];
        for (size_t i = 0; i < NODD; i++) all[nall++] = odd_records[i];
        for (size_t i = 0; i < nall; i++) {
            size_t n = strlen(all[i]);
            char *m = malloc(n + 1);
            int rc;
            for (unsigned lim = 0; lim < 4; lim++) {
                /* token and column limits: ample, then tight */
                unsigned ntoks = lim & 1 ? 20 : NTOK, ncap = lim & 2 ? 2 : 16;
                for (size_t len = 0; len <= n; len++, cases++)
                    if (!readers_agree(all[i], len, ntoks, ncap, &rc)) {
                        t_fail++;
                        fprintf(stderr, "  %s:%d: record %zu, prefix %zu, limits %u/%u: the readers differ\n",
                                __FILE__, __LINE__, i, len, ntoks, ncap);
                    } else if (rc == JSON_OK) {
                        oks++;
                    }
            }
            for (size_t pos = 0; pos < n; pos++)
                for (size_t k = 0; k < sizeof subst; k++, cases++) {
                    memcpy(m, all[i], n);
                    m[pos] = (char)subst[k];
                    if (!readers_agree(m, n, NTOK, 16, &rc)) {
                        t_fail++;
                        fprintf(stderr, "  %s:%d: record %zu, byte %zu set to 0x%02x: the readers differ\n",
                                __FILE__, __LINE__, i, pos, subst[k]);
                    } else if (rc == JSON_OK) {
                        oks++;
                    }
                }
            free(m);
        }
        /* the comparison means something only if many inputs are accepted */
        CHECK(oks > 1000);
        CHECK(cases > 50000);
    }
    TEST("w2j: wal2json's own records take the one pass (the tokens stay untouched)") {
        static json_tok toks[NTOK];
        for (size_t i = 0; i < NREAL; i++) {
            w2j_col cols[16];
            w2j_record r;
            size_t n = strlen(real_records[i]);
            char *b = dup_exact(real_records[i], n);
            memset(toks, 0xa5, sizeof toks);
            CHECK_EQ(w2j_parse(b, n, toks, NTOK, cols, 16, &r), JSON_OK);
            CHECK(toks[0].start == 0xa5a5a5a5u && toks[1].end == 0xa5a5a5a5u);
            CHECK_EQ(r.utf8, 1);
            free(b);
        }
    }
    TEST("w2j: a string that is not UTF-8 is parsed, and not called UTF-8") {
        static const char *const bad[] = {
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":\"\377\"}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":\"\300\257\"}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":\"\355\240\200\"}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":\"\364\220\200\200\"}]}",
            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"value\":\"\303\"}]}",
            "{\"action\":\"I\",\"schema\":\"s\xe9\",\"table\":\"t\"}",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            w2j_col cols[4];
            w2j_record r;
            char *b;
            CHECK_EQ(w2j_str(bad[i], cols, 4, &r, &b), JSON_OK);
            CHECK_EQ(r.utf8, 0);
            free(b);
        }
    }
}

void test_json(void)
{
    test_tokens();
    test_records();
    test_fast_reader();
    test_escapes();
}
