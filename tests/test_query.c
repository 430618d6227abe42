/* test_query.c -- unit tests of query.c, the subscription language
 * (docs/protocol.md, Subscriptions): query-string parameters, subscription specs and their
 * canonical keys, decimal number comparison, matching specs against real
 * wal2json records, change positions and the tables allow-list.
 *
 * Every case is a table row carrying its own __LINE__, so a failure names
 * the row that failed, not the loop that ran it.  Inputs handed to the
 * length-taking parsers are exact-size heap copies, so ASan catches a read
 * one past the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pgcdc.h"
#include "t.h"

void test_query(void);

#define FAIL_AT(line, ...) do { t_fail++; \
    fprintf(stderr, "  %s:%d: ", __FILE__, (line)); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } while (0)

#define S(x) ((x) ? (x) : "(null)")

static char *dup_exact(const char *s, size_t n)
{
    char *d = malloc(n ? n : 1);
    if (!d)
        abort();
    if (n)
        memcpy(d, s, n);
    return d;
}

static int same_str(const char *got, const char *want)
{
    if (!got || !want)
        return got == want;
    return strcmp(got, want) == 0;
}

/* ==== params_parse ====================================================== */

typedef struct pcase {
    int line;
    const char *qs;
    int rc;
    const char *query, *token, *since, *grant;
    unsigned nf;
    const char *f[3];
    const char *errsub;     /* on failure, the message must contain this */
} pcase;

#define P(...) { __LINE__, __VA_ARGS__ }

static const pcase pcases[] = {
    P("query=insert:orders", 0, "insert:orders", NULL, NULL, NULL, 0, {0}, NULL),
    P("", 0, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("&&query=q&&", 0, "q", NULL, NULL, NULL, 0, {0}, NULL),
    P("query", 0, "", NULL, NULL, NULL, 0, {0}, NULL),
    P("query=", 0, "", NULL, NULL, NULL, 0, {0}, NULL),
    P("query=a=b", 0, "a=b", NULL, NULL, NULL, 0, {0}, NULL),
    /* '+' is a space, %2B a plus */
    P("query=a+b%2Bc%2bd", 0, "a b+c+d", NULL, NULL, NULL, 0, {0}, NULL),
    P("query=100%25", 0, "100%", NULL, NULL, NULL, 0, {0}, NULL),
    /* fully escaped forms (encoders that escape more than needed) */
    P("query=insert%3Apublic%2Eorders%3Astatus%2Ein%2E%28%22a%2Cb%22%2Cc%29",
      0, "insert:public.orders:status.in.(\"a,b\",c)", NULL, NULL, NULL, 0, {0}, NULL),
    /* encodeURIComponent leaves . ( ) * alone */
    P("query=*%3Aorders%3Aname.in.(%22x%22%2C%22y%2Cz%22)",
      0, "*:orders:name.in.(\"x\",\"y,z\")", NULL, NULL, NULL, 0, {0}, NULL),
    P("query=insert%3At%3Aname.eq.caf%C3%A9", 0, "insert:t:name.eq.caf\xc3\xa9",
      NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%3a%2e%2c", 0, ":.,", NULL, NULL, NULL, 0, {0}, NULL),
    P("%71uery=x", 0, "x", NULL, NULL, NULL, 0, {0}, NULL),
    P("query=q&filter=a.eq.1&filter=b.neq.2", 0, "q", NULL, NULL, NULL, 2,
      {"a.eq.1", "b.neq.2"}, NULL),
    P("filter=a.eq.1&query=q&filter=b.in.(1%2C2)&filter=c.is.null", 0, "q",
      NULL, NULL, NULL, 3, {"a.eq.1", "b.in.(1,2)", "c.is.null"}, NULL),
    P("filter=", 0, NULL, NULL, NULL, NULL, 1, {""}, NULL),
    P("token=s3cr%2Bt&since=0%2F16B2500%3A0&grant=ab.cd&query=q", 0, "q",
      "s3cr+t", "0/16B2500:0", "ab.cd", 0, {0}, NULL),
    /* unknown parameters (cache busters, typos) are ignored */
    P("_=12345&query=q&foo&=bar&QUERY=x&queryx=y", 0, "q", NULL, NULL, NULL, 0, {0}, NULL),
    /* duplicates of single-valued parameters */
    P("query=a&query=b", -1, NULL, NULL, NULL, NULL, 0, {0}, "query"),
    P("query=a&%71uery=b", -1, NULL, NULL, NULL, NULL, 0, {0}, "query"),
    P("token=a&query=q&token=a", -1, NULL, NULL, NULL, NULL, 0, {0}, "token"),
    P("since=0/1:0&since=0/1:0", -1, NULL, NULL, NULL, NULL, 0, {0}, "since"),
    P("grant=x&grant=y", -1, NULL, NULL, NULL, NULL, 0, {0}, "grant"),
    /* bad escapes */
    P("query=%", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%4", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%zz", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%4g", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%g4", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=a%", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=a%2", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%%41", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=q&filter=%", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("qu%ry=q", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    /* a NUL byte would cut the C strings short */
    P("query=a%00b", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("query=%00", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("token=%00", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
    P("%00=x", -1, NULL, NULL, NULL, NULL, 0, {0}, NULL),
};

static void params_cases(void)
{
    for (size_t i = 0; i < sizeof pcases / sizeof pcases[0]; i++) {
        const pcase *c = &pcases[i];
        size_t n = strlen(c->qs);
        char *qs = dup_exact(c->qs, n);
        char err[256] = "";
        ws_params p;
        int rc = params_parse(qs, n, &p, err, sizeof err);
        if (rc != c->rc) {
            FAIL_AT(c->line, "params_parse(\"%s\") = %d, expected %d (%s)", c->qs, rc, c->rc, err);
        } else if (rc != 0) {
            if (!err[0])
                FAIL_AT(c->line, "params_parse(\"%s\"): empty error message", c->qs);
            if (c->errsub && !strstr(err, c->errsub))
                FAIL_AT(c->line, "error \"%s\" does not mention \"%s\"", err, c->errsub);
        } else {
            if (!same_str(p.query, c->query) || !same_str(p.token, c->token) ||
                !same_str(p.since, c->since) || !same_str(p.grant, c->grant))
                FAIL_AT(c->line, "\"%s\": query \"%s\" token \"%s\" since \"%s\" grant \"%s\", "
                        "expected \"%s\" \"%s\" \"%s\" \"%s\"", c->qs, S(p.query), S(p.token),
                        S(p.since), S(p.grant), S(c->query), S(c->token), S(c->since), S(c->grant));
            if (p.nfilters != c->nf)
                FAIL_AT(c->line, "\"%s\": %u filters, expected %u", c->qs, p.nfilters, c->nf);
            for (unsigned k = 0; k < p.nfilters && k < c->nf; k++)
                if (!same_str(p.filters[k], c->f[k]))
                    FAIL_AT(c->line, "\"%s\": filter %u is \"%s\", expected \"%s\"",
                            c->qs, k, S(p.filters[k]), c->f[k]);
            params_free(&p);
        }
        free(qs);
    }
}

/* The length given, not a NUL, ends the query string. */
static void params_length(void)
{
    const char *qs = "query=abc&token=t";
    char err[128];
    ws_params p;
    CHECK_EQ(params_parse(qs, 9, &p, err, sizeof err), 0);
    CHECK(same_str(p.query, "abc"));
    CHECK(p.token == NULL);
    params_free(&p);
    CHECK_EQ(params_parse(qs, 0, &p, err, sizeof err), 0);
    CHECK(p.query == NULL);
    params_free(&p);
    /* "%41" cut after "%4" is a bad escape, not "A" */
    CHECK_EQ(params_parse("query=%41", 8, &p, err, sizeof err), -1);
}

/* ==== spec_parse ======================================================== */

typedef struct scase {
    int line;
    const char *q;
    const char *f[3];
    unsigned nf;
    int ok;
    uint8_t types;
    const char *schema, *table;
    unsigned nfilters;
    const char *errsub;
} scase;

#define SP(...) { __LINE__, __VA_ARGS__ }

static const scase scases[] = {
    /* types */
    SP("insert:orders", {0}, 0, 1, SUB_INSERT, "public", "orders", 0, NULL),
    SP("update:orders", {0}, 0, 1, SUB_UPDATE, "public", "orders", 0, NULL),
    SP("delete:orders", {0}, 0, 1, SUB_DELETE, "public", "orders", 0, NULL),
    SP("truncate:orders", {0}, 0, 1, SUB_TRUNCATE, "public", "orders", 0, NULL),
    SP("*:orders", {0}, 0, 1, SUB_ALL, "public", "orders", 0, NULL),
    SP("insert,delete:orders", {0}, 0, 1, SUB_INSERT | SUB_DELETE, "public", "orders", 0, NULL),
    SP("update,insert,update:orders", {0}, 0, 1, SUB_INSERT | SUB_UPDATE, "public", "orders", 0, NULL),
    SP("truncate,*:orders", {0}, 0, 1, SUB_ALL, "public", "orders", 0, NULL),
    SP("insert,bogus:orders", {0}, 0, 0, 0, NULL, NULL, 0, "bogus"),
    SP("inserts:orders", {0}, 0, 0, 0, NULL, NULL, 0, "inserts"),
    SP("insert,:orders", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP(",insert:orders", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP(":orders", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("orders", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    /* table names */
    SP("insert:sales.orders", {0}, 0, 1, SUB_INSERT, "sales", "orders", 0, NULL),
    SP("insert:a.b.c", {0}, 0, 1, SUB_INSERT, "a", "b.c", 0, NULL),
    SP("insert:Orders", {0}, 0, 1, SUB_INSERT, "public", "Orders", 0, NULL),
    SP("insert:\"Orders\"", {0}, 0, 1, SUB_INSERT, "public", "Orders", 0, NULL),
    SP("insert:\"my.schema\".\"t\"", {0}, 0, 1, SUB_INSERT, "my.schema", "t", 0, NULL),
    SP("insert:\"my.schema\".t", {0}, 0, 1, SUB_INSERT, "my.schema", "t", 0, NULL),
    SP("insert:s.\"t.x\"", {0}, 0, 1, SUB_INSERT, "s", "t.x", 0, NULL),
    SP("insert:\"t.x\"", {0}, 0, 1, SUB_INSERT, "public", "t.x", 0, NULL),
    SP("insert:\"a\"\"b\"", {0}, 0, 1, SUB_INSERT, "public", "a\"b", 0, NULL),
    SP("insert:\"s\"\"\".\"\"\"t\"", {0}, 0, 1, SUB_INSERT, "s\"", "\"t", 0, NULL),
    SP("insert:\"a:b\"", {0}, 0, 0, 0, NULL, NULL, 0, NULL),   /* ':' ends the table */
    SP("insert:\"unterminated", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:s.\"unterminated", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:\"a\"x", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:s.\"t\"x", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:.t", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:s.", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:\"\".t", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:s.\"\"", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:\"\"", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert::id.eq.1", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    /* filters */
    SP("*:orders:status.eq.a:b.c", {0}, 0, 1, SUB_ALL, "public", "orders", 1, NULL),
    SP("*:s.t:id.eq.1", {"b.gt.2", "c.is.null"}, 2, 1, SUB_ALL, "s", "t", 3, NULL),
    SP("*:t", {"b.gt.2"}, 1, 1, SUB_ALL, "public", "t", 1, NULL),
    SP("insert:t:", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:t:id", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:t:id.eq", {0}, 0, 0, 0, NULL, NULL, 0, NULL),
    SP("insert:t:id.like.1", {0}, 0, 0, 0, NULL, NULL, 0, "like"),
    SP("insert:t:id.eq.1", {"ok.eq.1", "bad.op.1"}, 2, 0, 0, NULL, NULL, 0, "op"),
    SP("insert:t", {"nodots"}, 1, 0, 0, NULL, NULL, 0, "nodots"),
    SP("insert:t", {""}, 1, 0, 0, NULL, NULL, 0, NULL),
};

static void spec_cases(void)
{
    for (size_t i = 0; i < sizeof scases / sizeof scases[0]; i++) {
        const scase *c = &scases[i];
        char err[512] = "";
        spec *sp = spec_parse(c->q, (char *const *)c->f, c->nf, err, sizeof err);
        if (!c->ok) {
            if (sp) {
                FAIL_AT(c->line, "spec_parse(\"%s\") accepted, expected an error", c->q);
                free(sp);
            } else if (!err[0]) {
                FAIL_AT(c->line, "spec_parse(\"%s\"): empty error message", c->q);
            } else if (c->errsub && !strstr(err, c->errsub)) {
                FAIL_AT(c->line, "spec_parse(\"%s\"): error \"%s\" does not mention \"%s\"",
                        c->q, err, c->errsub);
            }
            continue;
        }
        if (!sp) {
            FAIL_AT(c->line, "spec_parse(\"%s\") failed: %s", c->q, err);
            continue;
        }
        if (sp->types != c->types)
            FAIL_AT(c->line, "\"%s\": types %u, expected %u", c->q, sp->types, c->types);
        if (!same_str(sp->schema, c->schema) || !same_str(sp->table, c->table))
            FAIL_AT(c->line, "\"%s\": table \"%s\".\"%s\", expected \"%s\".\"%s\"", c->q,
                    S(sp->schema), S(sp->table), c->schema, c->table);
        if (sp->nfilters != c->nfilters)
            FAIL_AT(c->line, "\"%s\": %u filters, expected %u", c->q, sp->nfilters, c->nfilters);
        if (!sp->key || !sp->key[0])
            FAIL_AT(c->line, "\"%s\": no canonical key", c->q);
        free(sp);
    }
}

/* One filter, given as an extra filter= and again inside the query. */
typedef struct fcase {
    int line;
    const char *text;
    int ok;
    uint8_t op, is;
    const char *col;
    unsigned nvals;
    const char *vals[4];
    int isnum;              /* of the first value */
} fcase;

#define F(...) { __LINE__, __VA_ARGS__ }

static const fcase fcases[] = {
    F("status.eq.paid", 1, OP_EQ, 0, "status", 1, {"paid"}, 0),
    F("status.eq.a:b.c", 1, OP_EQ, 0, "status", 1, {"a:b.c"}, 0),
    F("status.eq.", 1, OP_EQ, 0, "status", 1, {""}, 0),
    F("status.neq.x y", 1, OP_NEQ, 0, "status", 1, {"x y"}, 0),
    F("price.eq.1.5", 1, OP_EQ, 0, "price", 1, {"1.5"}, 1),
    F("qty.lt.10", 1, OP_LT, 0, "qty", 1, {"10"}, 1),
    F("qty.lte.-1e3", 1, OP_LTE, 0, "qty", 1, {"-1e3"}, 1),
    F("qty.gt.9.5", 1, OP_GT, 0, "qty", 1, {"9.5"}, 1),
    F("qty.gte..5", 1, OP_GTE, 0, "qty", 1, {".5"}, 1),
    F("qty.eq.+1", 1, OP_EQ, 0, "qty", 1, {"+1"}, 1),
    F("qty.eq.1,5", 1, OP_EQ, 0, "qty", 1, {"1,5"}, 0),
    F("name.eq.(a,b)", 1, OP_EQ, 0, "name", 1, {"(a,b)"}, 0),
    F("\"my.col\".eq.1", 1, OP_EQ, 0, "my.col", 1, {"1"}, 1),
    F("\"we\"\"ird\".eq.x", 1, OP_EQ, 0, "we\"ird", 1, {"x"}, 0),
    F("a.is.null", 1, OP_IS, IS_NULL, "a", 0, {0}, 0),
    F("a.is.true", 1, OP_IS, IS_TRUE, "a", 0, {0}, 0),
    F("a.is.false", 1, OP_IS, IS_FALSE, "a", 0, {0}, 0),
    F("a.is.maybe", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.is.", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.is.null.x", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.is.1", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.in.(x,y,z)", 1, OP_IN, 0, "a", 3, {"x", "y", "z"}, 0),
    F("a.in.x,y,z", 1, OP_IN, 0, "a", 3, {"x", "y", "z"}, 0),
    F("a.in.x", 1, OP_IN, 0, "a", 1, {"x"}, 0),
    F("a.in.(x)", 1, OP_IN, 0, "a", 1, {"x"}, 0),
    F("a.in.(1,2.5,-3)", 1, OP_IN, 0, "a", 3, {"1", "2.5", "-3"}, 1),
    F("a.in.(\"x,y\",z)", 1, OP_IN, 0, "a", 2, {"x,y", "z"}, 0),
    F("a.in.\"x,y\",\"\"", 1, OP_IN, 0, "a", 2, {"x,y", ""}, 0),
    F("a.in.(\"q\\\"d\",\"b\\\\s\")", 1, OP_IN, 0, "a", 2, {"q\"d", "b\\s"}, 0),
    F("a.in.(\"a.b:c\",\")\")", 1, OP_IN, 0, "a", 2, {"a.b:c", ")"}, 0),
    F("a.in.()", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.in.", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.in.(\"open)", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.in.(x,\"open)", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.in.(\"a\"b)", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.like.x", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.eqq.x", 0, 0, 0, NULL, 0, {0}, 0),
    F("a..x", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.eq", 0, 0, 0, NULL, 0, {0}, 0),
    F("a.", 0, 0, 0, NULL, 0, {0}, 0),
    F("a", 0, 0, 0, NULL, 0, {0}, 0),
    F(".eq.x", 0, 0, 0, NULL, 0, {0}, 0),
    F("\"\".eq.x", 0, 0, 0, NULL, 0, {0}, 0),
    F("\"col.eq.x", 0, 0, 0, NULL, 0, {0}, 0),
};

static void check_filter(const fcase *c, const filter *f, const char *how)
{
    if (f->op != c->op || (c->op == OP_IS && f->is != c->is)) {
        FAIL_AT(c->line, "%s \"%s\": op %u/%u, expected %u/%u", how, c->text,
                f->op, f->is, c->op, c->is);
        return;
    }
    if (!same_str(f->col, c->col) || f->col_len != strlen(c->col))
        FAIL_AT(c->line, "%s \"%s\": column \"%s\", expected \"%s\"", how, c->text,
                S(f->col), c->col);
    if (!same_str(f->text, c->text))
        FAIL_AT(c->line, "%s \"%s\": text \"%s\"", how, c->text, S(f->text));
    if (c->op == OP_IS)
        return;
    if (f->nvals != c->nvals) {
        FAIL_AT(c->line, "%s \"%s\": %u values, expected %u", how, c->text, f->nvals, c->nvals);
        return;
    }
    for (unsigned k = 0; k < f->nvals; k++)
        if (f->vals[k].n != strlen(c->vals[k]) || !same_str(f->vals[k].s, c->vals[k]))
            FAIL_AT(c->line, "%s \"%s\": value %u \"%s\", expected \"%s\"", how, c->text,
                    k, S(f->vals[k].s), c->vals[k]);
    if (!f->vals[0].isnum != !c->isnum)
        FAIL_AT(c->line, "%s \"%s\": isnum %d, expected %d", how, c->text,
                f->vals[0].isnum, c->isnum);
}

static void filter_cases(void)
{
    for (size_t i = 0; i < sizeof fcases / sizeof fcases[0]; i++) {
        const fcase *c = &fcases[i];
        char err[512] = "", q[256];
        char *fl[1] = { (char *)c->text };
        spec *a = spec_parse("*:t", fl, 1, err, sizeof err);
        snprintf(q, sizeof q, "*:t:%s", c->text);
        spec *b = spec_parse(q, NULL, 0, err, sizeof err);
        if (!c->ok) {
            if (a || b)
                FAIL_AT(c->line, "filter \"%s\" accepted (%s), expected an error",
                        c->text, a ? "filter=" : "in query");
            else if (!err[0])
                FAIL_AT(c->line, "filter \"%s\": empty error message", c->text);
        } else if (!a || !b) {
            FAIL_AT(c->line, "filter \"%s\" refused: %s", c->text, err);
        } else {
            if (a->nfilters != 1 || b->nfilters != 1)
                FAIL_AT(c->line, "filter \"%s\": %u/%u filters", c->text, a->nfilters, b->nfilters);
            else {
                check_filter(c, &a->filters[0], "filter=");
                check_filter(c, &b->filters[0], "query");
            }
            if (!same_str(a->key, b->key))
                FAIL_AT(c->line, "filter \"%s\": keys differ", c->text);
        }
        free(a);
        free(b);
    }
}

/* The bad operator is named in the message. */
static void spec_messages(void)
{
    char err[512] = "";
    char *fl[1] = { (char *)"price.between.1" };
    spec *sp = spec_parse("insert:orders", fl, 1, err, sizeof err);
    CHECK(sp == NULL);
    CHECK(strstr(err, "between") != NULL);
    free(sp);
    err[0] = 0;
    sp = spec_parse("upsert:orders", NULL, 0, err, sizeof err);
    CHECK(sp == NULL);
    CHECK(strstr(err, "upsert") != NULL);
    free(sp);
    /* a small error buffer is never overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    sp = spec_parse("nope:orders", NULL, 0, small, 4);
    CHECK(sp == NULL);
    CHECK(memchr(small, 0, 4) != NULL);
    CHECK(small[4] == 'x');
    free(sp);
}

/* A long in-list is a legitimate subscription. */
static void spec_long_in(void)
{
    static char f[8192];
    size_t o = 0;
    o += (size_t)snprintf(f + o, sizeof f - o, "id.in.(");
    for (int i = 1; i <= 200; i++)
        o += (size_t)snprintf(f + o, sizeof f - o, "%s%d", i > 1 ? "," : "", i);
    snprintf(f + o, sizeof f - o, ")");
    char err[512] = "";
    char *fl[1] = { f };
    spec *sp = spec_parse("*:t", fl, 1, err, sizeof err);
    CHECK(sp != NULL);
    if (!sp)
        fprintf(stderr, "  %s:%d: 200-element in-list refused: %.60s...\n", __FILE__, __LINE__, err);
    if (sp) {
        CHECK_EQ(sp->filters[0].nvals, 200);
        CHECK(same_str(sp->filters[0].vals[199].s, "200"));
    }
    free(sp);

    /* many short elements, as many as the list is long: 1000 is the most
     * a subscription may hold, and the refusal of 1001 says so */
    o = 0;
    o += (size_t)snprintf(f + o, sizeof f - o, "id.in.");
    for (int i = 0; i < 999; i++)
        f[o++] = ',';
    f[o] = 0;
    sp = spec_parse("*:t", fl, 1, err, sizeof err);
    CHECK(sp != NULL);
    if (sp)
        CHECK_EQ(sp->filters[0].nvals, 1000);
    free(sp);
    f[o++] = ',';
    f[o] = 0;
    sp = spec_parse("*:t", fl, 1, err, sizeof err);
    CHECK(sp == NULL);
    CHECK(strstr(err, "too many values in in-lists: 1001 (at most 1000") != NULL);
    free(sp);
}

/* At most 16 filters a client writes, counting the query's own. */
static void spec_filter_cap(void)
{
    char *fl[17];
    char err[512] = "";
    for (int i = 0; i < 17; i++)
        fl[i] = "a.eq.1";
    spec *sp = spec_parse("*:t:a.eq.1", fl, 15, err, sizeof err);
    CHECK(sp != NULL);
    if (sp)
        CHECK_EQ(sp->nfilters, 16);
    free(sp);
    sp = spec_parse("*:t:a.eq.1", fl, 16, err, sizeof err);
    CHECK(sp == NULL);
    CHECK(strstr(err, "too many filters: 17 (at most 16") != NULL);
    free(sp);
    sp = spec_parse("*:t", fl, 17, err, sizeof err);
    CHECK(sp == NULL);
    /* two in-lists share the 1000 */
    static char f1[2100], f2[2100];
    size_t o1 = (size_t)snprintf(f1, sizeof f1, "a.in."), o2 = (size_t)snprintf(f2, sizeof f2, "b.in.");
    for (int i = 0; i < 499; i++) {
        f1[o1++] = ',';
        f2[o2++] = ',';
    }
    f1[o1] = f2[o2] = 0;
    char *two[2] = { f1, f2 };
    sp = spec_parse("*:t", two, 2, err, sizeof err);
    CHECK(sp != NULL);
    free(sp);
    f2[o2++] = ',';
    f2[o2] = 0;
    sp = spec_parse("*:t", two, 2, err, sizeof err);
    CHECK(sp == NULL);
    free(sp);
}

/* An in-list of 1000 values decides by a binary search: the same answers
 * as comparing each value, for strings, numbers written differently, and
 * escaped column values. */
static void in_list_search(void)
{
    static char f[16384];
    char err[512] = "";
    size_t o = (size_t)snprintf(f, sizeof f, "v.in.(");
    for (int i = 999; i >= 0; i--)
        o += (size_t)snprintf(f + o, sizeof f - o, "%s%d", i == 999 ? "" : ",", i * 7);
    snprintf(f + o, sizeof f - o, ")");
    char *fl[1] = { f };
    spec *sp = spec_parse("*:t", fl, 1, err, sizeof err);
    CHECK(sp != NULL);
    if (!sp)
        return;
    static const struct { const char *rec; int want; } rs[] = {
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"int\",\"value\":6993}]}", 1 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"int\",\"value\":6993.0e0}]}", 1 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"int\",\"value\":0}]}", 1 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"int\",\"value\":6994}]}", 0 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"text\",\"value\":\"14\"}]}", 1 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"text\",\"value\":\"\\u0031\\u0034\"}]}", 1 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"text\",\"value\":\"14.0\"}]}", 0 },
        { "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":[{\"name\":\"v\",\"type\":\"text\",\"value\":\"15\"}]}", 0 },
    };
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        json_tok toks[64];
        w2j_col cols[8];
        w2j_record r;
        static col_cache cc[8];
        static match_ctx m;
        char buf[256];
        size_t n = strlen(rs[i].rec);
        CHECK_EQ(w2j_parse(rs[i].rec, n, toks, 64, cols, 8, &r), JSON_OK);
        match_begin(&m, &r, buf, sizeof buf, cc, 8);
        int got = spec_match(sp, &m);
        if (got != rs[i].want)
            fprintf(stderr, "  %s:%d: record %zu: got %d, expected %d\n", __FILE__, __LINE__, i, got, rs[i].want);
        CHECK_EQ(got, rs[i].want);
    }
    free(sp);
}

/* The query of case k of spec_in_then_more: an in-list of empty elements. */
static void in_case(int k, char *q, size_t qcap, char *f, size_t fcap)
{
    int commas = k / 12 + 1, v = k % 12;
    size_t o = (size_t)snprintf(q, qcap, "*:t:a.in.");
    for (int i = 0; i < commas && o + 1 < qcap; i++)
        q[o++] = ',';
    q[o] = 0;
    snprintf(f, fcap, "b.eq.%.*s", v, "xxxxxxxxxxxxxxxx");
}

/* Filters after an in-list with many elements must still get their room.
 * The cases run in a child process, so that a crash fails this test instead
 * of ending the whole run; the child reports each case before it runs it. */
static void spec_in_then_more(void)
{
    enum { NCASES = 120 * 12 };
    static char q[256];
    char f[64];
    int fd[2];

    fflush(stdout);
    fflush(stderr);
    if (pipe(fd) != 0)
        return;
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        char err[256];
        close(fd[0]);
        if (!freopen("/dev/null", "w", stderr))
            _exit(3);
        for (int k = 0; k < NCASES; k++) {
            char *fl[1] = { f };
            in_case(k, q, sizeof q, f, sizeof f);
            if (write(fd[1], &k, sizeof k) != (ssize_t)sizeof k)
                _exit(3);
            free(spec_parse(q, fl, 1, err, sizeof err));
        }
        _exit(0);
    }
    close(fd[1]);
    int k, last = -1, st = 0;
    while (read(fd[0], &k, sizeof k) == (ssize_t)sizeof k)
        last = k;
    close(fd[0]);
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        in_case(last, q, sizeof q, f, sizeof f);
        FAIL_AT(__LINE__, "spec_parse(\"%s\", filter \"%s\") crashed", q, f);
    }
}

typedef struct kcase {
    int line;
    const char *q1, *f1;
    const char *q2, *f2;
    int same;
} kcase;

static const kcase kcases[] = {
    { __LINE__, "insert:orders", NULL, "insert:orders", NULL, 1 },
    { __LINE__, "insert:orders", NULL, "insert:public.orders", NULL, 1 },
    { __LINE__, "insert:orders", NULL, "insert:\"orders\"", NULL, 1 },
    { __LINE__, "insert,update:orders", NULL, "update,insert:orders", NULL, 1 },
    { __LINE__, "*:orders", NULL, "insert,update,delete,truncate:orders", NULL, 1 },
    { __LINE__, "*:orders:id.eq.1", NULL, "*:orders", "id.eq.1", 1 },
    { __LINE__, "*:orders:id.eq.1", "s.eq.x", "*:orders:id.eq.1", "s.eq.x", 1 },
    { __LINE__, "insert:orders", NULL, "update:orders", NULL, 0 },
    { __LINE__, "insert:orders", NULL, "insert:order", NULL, 0 },
    { __LINE__, "insert:orders", NULL, "insert:Orders", NULL, 0 },
    { __LINE__, "insert:orders", NULL, "insert:sales.orders", NULL, 0 },
    { __LINE__, "insert:\"a.b\".c", NULL, "insert:a.\"b.c\"", NULL, 0 },
    { __LINE__, "insert:\"a|4\".b", NULL, "insert:a.\"4|b\"", NULL, 0 },
    { __LINE__, "*:orders:id.eq.1", NULL, "*:orders:id.eq.2", NULL, 0 },
    { __LINE__, "*:orders:id.eq.1", NULL, "*:orders", NULL, 0 },
    { __LINE__, "*:orders:id.eq.1", NULL, "*:orders:id.neq.1", NULL, 0 },
    { __LINE__, "*:orders:id.eq.1", "b.eq.2", "*:orders:id.eq.1|b.eq.2", NULL, 0 },
    { __LINE__, "*:orders:a.eq.1", NULL, "*:orders:a.eq.1", "a.eq.1", 0 },
};

static void key_cases(void)
{
    for (size_t i = 0; i < sizeof kcases / sizeof kcases[0]; i++) {
        const kcase *c = &kcases[i];
        char err[512] = "";
        char *f1[1] = { (char *)c->f1 }, *f2[1] = { (char *)c->f2 };
        spec *a = spec_parse(c->q1, f1, c->f1 != NULL, err, sizeof err);
        spec *b = spec_parse(c->q2, f2, c->f2 != NULL, err, sizeof err);
        if (!a || !b)
            FAIL_AT(c->line, "spec_parse failed: %s", err);
        else if ((strcmp(a->key, b->key) == 0) != c->same)
            FAIL_AT(c->line, "keys \"%s\" and \"%s\" should %s", a->key, b->key,
                    c->same ? "be equal" : "differ");
        free(a);
        free(b);
    }
}

/* ==== numbers =========================================================== */

typedef struct ncase {
    int line;
    const char *s;
    int strict_ok, lax_ok;
} ncase;

static const ncase ncases[] = {
    { __LINE__, "0", 1, 1 },
    { __LINE__, "-0", 1, 1 },
    { __LINE__, "1", 1, 1 },
    { __LINE__, "-12", 1, 1 },
    { __LINE__, "1.5", 1, 1 },
    { __LINE__, "0.001", 1, 1 },
    { __LINE__, "1e3", 1, 1 },
    { __LINE__, "1E+3", 1, 1 },
    { __LINE__, "1e-3", 1, 1 },
    { __LINE__, "-12.5e2", 1, 1 },
    { __LINE__, "9007199254740993", 1, 1 },
    { __LINE__, "1e+300", 1, 1 },
    { __LINE__, "+1", 0, 1 },
    { __LINE__, ".5", 0, 1 },
    { __LINE__, "-.5", 0, 1 },
    { __LINE__, "5.", 0, 1 },
    { __LINE__, "01", 0, 1 },
    { __LINE__, "", 0, 0 },
    { __LINE__, "-", 0, 0 },
    { __LINE__, "+", 0, 0 },
    { __LINE__, ".", 0, 0 },
    { __LINE__, "-.", 0, 0 },
    { __LINE__, "+-1", 0, 0 },
    { __LINE__, "--1", 0, 0 },
    { __LINE__, "1e", 0, 0 },
    { __LINE__, "1e+", 0, 0 },
    { __LINE__, "1e-", 0, 0 },
    { __LINE__, "e5", 0, 0 },
    { __LINE__, "1.2.3", 0, 0 },
    { __LINE__, "1..2", 0, 0 },
    { __LINE__, " 1", 0, 0 },
    { __LINE__, "1 ", 0, 0 },
    { __LINE__, "0x10", 0, 0 },
    { __LINE__, "1,5", 0, 0 },
    { __LINE__, "1_000", 0, 0 },
    { __LINE__, "abc", 0, 0 },
    { __LINE__, "inf", 0, 0 },
    { __LINE__, "NaN", 0, 0 },
    { __LINE__, "Infinity", 0, 0 },
    { __LINE__, "1e3.5", 0, 0 },
    { __LINE__, "1f", 0, 0 },
};

static void num_parse_cases(void)
{
    for (size_t i = 0; i < sizeof ncases / sizeof ncases[0]; i++) {
        const ncase *c = &ncases[i];
        size_t n = strlen(c->s);
        char *s = dup_exact(c->s, n);
        decnum d;
        int st = num_parse(s, n, 0, &d) == 0, lx = num_parse(s, n, 1, &d) == 0;
        if (st != c->strict_ok)
            FAIL_AT(c->line, "num_parse(\"%s\", strict) %s", c->s, st ? "accepted" : "refused");
        if (lx != c->lax_ok)
            FAIL_AT(c->line, "num_parse(\"%s\", lax) %s", c->s, lx ? "accepted" : "refused");
        free(s);
    }
}

typedef struct ccase {
    int line;
    const char *a, *b;
    int want;               /* sign of num_cmp(a, b) */
} ccase;

static const ccase ccases[] = {
    { __LINE__, "1.5", "1.50", 0 },
    { __LINE__, "1.50", "1.5", 0 },
    { __LINE__, "10", "9.5", 1 },
    { __LINE__, "9", "10", -1 },
    { __LINE__, "-0", "0", 0 },
    { __LINE__, "-0.0", "0e10", 0 },
    { __LINE__, "0", "0.0000", 0 },
    { __LINE__, "1e3", "1000", 0 },
    { __LINE__, "1E+3", "1000.000", 0 },
    { __LINE__, "0.001", "1e-3", 0 },
    { __LINE__, "100e-2", "1", 0 },
    { __LINE__, "12e-1", "1.2", 0 },
    { __LINE__, "0.5e1", "5", 0 },
    { __LINE__, "1.0e1", "10", 0 },
    { __LINE__, "9007199254740993", "9007199254740992", 1 },
    { __LINE__, "9007199254740992", "9007199254740993", -1 },
    { __LINE__, "123456789012345678901234567890", "123456789012345678901234567891", -1 },
    { __LINE__, "123456789012345678901234567890", "1.23456789012345678901234567890e29", 0 },
    { __LINE__, "-5", "-3", -1 },
    { __LINE__, "-3", "-5", 1 },
    { __LINE__, "-1.5", "1", -1 },
    { __LINE__, "-10", "-9.99", -1 },
    { __LINE__, "-0.001", "0", -1 },
    { __LINE__, "0.1", "0.09", 1 },
    { __LINE__, "0.1", "0.10000000000000000001", -1 },
    { __LINE__, "1e-400", "0", 1 },
    { __LINE__, "-1e-400", "0", -1 },
    { __LINE__, "1e300", "1e299", 1 },
    { __LINE__, "1e-300", "1e-299", -1 },
    { __LINE__, "1e1000000000", "1e999999999", 1 },
    { __LINE__, "99", "100", -1 },
    { __LINE__, "0.99", "1", -1 },
    { __LINE__, "1", "0.99", 1 },
    /* lax forms on the right */
    { __LINE__, "1", "+1", 0 },
    { __LINE__, "0.5", ".5", 0 },
    { __LINE__, "5", "5.", 0 },
    { __LINE__, "-0.5", "-.5", 0 },
    { __LINE__, "7", "007", 0 },
};

static void num_cmp_cases(void)
{
    for (size_t i = 0; i < sizeof ccases / sizeof ccases[0]; i++) {
        const ccase *c = &ccases[i];
        size_t an = strlen(c->a), bn = strlen(c->b);
        char *a = dup_exact(c->a, an), *b = dup_exact(c->b, bn);
        decnum x, y;
        if (num_parse(a, an, 1, &x) || num_parse(b, bn, 1, &y)) {
            FAIL_AT(c->line, "num_parse refused \"%s\" or \"%s\"", c->a, c->b);
        } else {
            int r = num_cmp(&x, &y), rr = num_cmp(&y, &x);
            int sr = (r > 0) - (r < 0), srr = (rr > 0) - (rr < 0);
            if (sr != c->want)
                FAIL_AT(c->line, "num_cmp(%s, %s) = %d, expected %d", c->a, c->b, sr, c->want);
            if (srr != -c->want)
                FAIL_AT(c->line, "num_cmp(%s, %s) = %d, expected %d", c->b, c->a, srr, -c->want);
            if (num_cmp(&x, &x) != 0)
                FAIL_AT(c->line, "num_cmp(%s, %s) != 0", c->a, c->a);
        }
        free(a);
        free(b);
    }
}

/* ==== spec_match ======================================================== */

/* Real wal2json format-version 2 records (as pgcdc receives them). */
static const char *const rec_text[] = {
    /* 0: insert */
    ("{\"action\":\"I\",\"timestamp\":\"2026-01-01 12:00:00.1+00\",\"lsn\":\"0/16B2468\","
    "\"schema\":\"public\",\"table\":\"orders\",\"columns\":["
    "{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
    "{\"name\":\"status\",\"type\":\"text\",\"value\":\"paid\"},"
    "{\"name\":\"price\",\"type\":\"numeric\",\"value\":1.50},"
    "{\"name\":\"qty\",\"type\":\"integer\",\"value\":10},"
    "{\"name\":\"note\",\"type\":\"text\",\"value\":null},"
    "{\"name\":\"flag\",\"type\":\"boolean\",\"value\":true},"
    "{\"name\":\"off\",\"type\":\"boolean\",\"value\":false},"
    "{\"name\":\"sflag\",\"type\":\"text\",\"value\":\"true\"},"
    "{\"name\":\"q\",\"type\":\"text\",\"value\":\"a\\\"b\"},"
    "{\"name\":\"e\",\"type\":\"text\",\"value\":\"caf\\u00e9\"},"
    "{\"name\":\"r\",\"type\":\"text\",\"value\":\"caf\xc3\xa9\"},"
    "{\"name\":\"big\",\"type\":\"bigint\",\"value\":9007199254740993},"
    "{\"name\":\"neg\",\"type\":\"integer\",\"value\":-5},"
    "{\"name\":\"snum\",\"type\":\"text\",\"value\":\"10\"},"
    "{\"name\":\"f\",\"type\":\"double precision\",\"value\":1e+300},"
    "{\"name\":\"we\\\"ird\",\"type\":\"integer\",\"value\":7},"
    "{\"name\":\"empty\",\"type\":\"text\",\"value\":\"\"}"
    "]}"),
    /* 1: update; "doc" unchanged (TOAST) so only in identity (REPLICA
     * IDENTITY FULL gives the whole old row there) */
    ("{\"action\":\"U\",\"lsn\":\"0/16B2500\",\"schema\":\"public\",\"table\":\"orders\","
    "\"columns\":["
    "{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
    "{\"name\":\"status\",\"type\":\"text\",\"value\":\"shipped\"},"
    "{\"name\":\"qty\",\"type\":\"integer\",\"value\":null}],"
    "\"identity\":["
    "{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
    "{\"name\":\"status\",\"type\":\"text\",\"value\":\"paid\"},"
    "{\"name\":\"qty\",\"type\":\"integer\",\"value\":3},"
    "{\"name\":\"doc\",\"type\":\"text\",\"value\":\"old\"}]}"),
    /* 2: delete (identity = old key); the "columns" here is not something
     * wal2json sends, it shows that a delete never looks there */
    ("{\"action\":\"D\",\"lsn\":\"0/16B2600\",\"schema\":\"public\",\"table\":\"orders\","
    "\"columns\":[{\"name\":\"status\",\"type\":\"text\",\"value\":\"x\"}],"
    "\"identity\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":7}]}"),
    /* 3: truncate */
    ("{\"action\":\"T\",\"lsn\":\"0/16B2700\",\"schema\":\"public\",\"table\":\"orders\"}"),
    /* 4: insert carrying an "identity" it must not look at */
    ("{\"action\":\"I\",\"schema\":\"public\",\"table\":\"orders\","
    "\"columns\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":2}],"
    "\"identity\":[{\"name\":\"status\",\"type\":\"text\",\"value\":\"paid\"}]}"),
    /* 5: update without identity (default REPLICA IDENTITY, key unchanged) */
    ("{\"action\":\"U\",\"schema\":\"public\",\"table\":\"orders\","
    "\"columns\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":5}]}"),
};

#define NREC (sizeof rec_text / sizeof rec_text[0])
#define NCOLS 32

typedef struct rec {
    w2j_record r;
    w2j_col cols[NCOLS];
    int ok;
} rec;

static rec recs[NREC];

static void parse_records(void)
{
    static json_tok toks[512];
    for (size_t i = 0; i < NREC; i++) {
        int rc = w2j_parse(rec_text[i], strlen(rec_text[i]), toks, 512,
                           recs[i].cols, NCOLS, &recs[i].r);
        recs[i].ok = rc == JSON_OK;
        if (!recs[i].ok)
            fprintf(stderr, "  %s:%d: record %zu: w2j_parse = %d\n", __FILE__, __LINE__, i, rc);
        CHECK(recs[i].ok);
    }
    CHECK_EQ(recs[0].r.ncols, 17);
    CHECK_EQ(recs[1].r.nident, 4);
}

typedef struct mcase {
    int line;
    unsigned rec;
    const char *q;
    const char *f;          /* an extra filter, or NULL */
    int want;
} mcase;

#define M(...) { __LINE__, __VA_ARGS__ }

static const mcase mcases[] = {
    /* types */
    M(0, "insert:orders", NULL, 1),
    M(0, "*:orders", NULL, 1),
    M(0, "update:orders", NULL, 0),
    M(0, "update,delete,truncate:orders", NULL, 0),
    M(1, "update:orders", NULL, 1),
    M(1, "insert,delete:orders", NULL, 0),
    M(2, "delete:orders", NULL, 1),
    M(2, "insert,update,truncate:orders", NULL, 0),
    M(3, "truncate:orders", NULL, 1),
    M(3, "insert,update,delete:orders", NULL, 0),
    /* truncate: filters do not apply */
    M(3, "truncate:orders:id.eq.1", NULL, 1),
    M(3, "*:orders:nosuch.eq.1", "id.is.null", 1),
    M(3, "insert:orders:id.eq.1", NULL, 0),
    /* eq / neq, numbers */
    M(0, "insert:orders:id.eq.1", NULL, 1),
    M(0, "insert:orders:id.eq.2", NULL, 0),
    M(0, "insert:orders:id.neq.2", NULL, 1),
    M(0, "insert:orders:id.neq.1", NULL, 0),
    M(0, "insert:orders:id.eq.1.0", NULL, 1),
    M(0, "insert:orders:id.eq.+1", NULL, 1),
    M(0, "insert:orders:price.eq.1.5", NULL, 1),
    M(0, "insert:orders:price.eq.1.50", NULL, 1),
    M(0, "insert:orders:price.eq.1.500", NULL, 1),
    M(0, "insert:orders:price.neq.1.5", NULL, 0),
    M(0, "insert:orders:price.gt.1.49", NULL, 1),
    M(0, "insert:orders:price.lt.1.5", NULL, 0),
    M(0, "insert:orders:price.lte.1.5", NULL, 1),
    M(0, "insert:orders:price.gte.1.5", NULL, 1),
    M(0, "insert:orders:price.lt.1.51", NULL, 1),
    M(0, "insert:orders:qty.gt.9.5", NULL, 1),
    M(0, "insert:orders:qty.gt.9", NULL, 1),          /* "10" < "9" as bytes */
    M(0, "insert:orders:qty.lt.9", NULL, 0),
    M(0, "insert:orders:qty.gt.10", NULL, 0),
    M(0, "insert:orders:qty.gte.10", NULL, 1),
    M(0, "insert:orders:qty.lt.100", NULL, 1),
    M(0, "insert:orders:qty.lte.9.99", NULL, 0),
    M(0, "insert:orders:qty.eq.1e1", NULL, 1),
    M(0, "insert:orders:qty.eq.10.", NULL, 1),
    M(0, "insert:orders:qty.in.(1,10,100)", NULL, 1),
    M(0, "insert:orders:qty.in.(1,2)", NULL, 0),
    M(0, "insert:orders:qty.in.10.0,11", NULL, 1),
    M(0, "insert:orders:big.gt.9007199254740992", NULL, 1),
    M(0, "insert:orders:big.eq.9007199254740993", NULL, 1),
    M(0, "insert:orders:big.eq.9007199254740992", NULL, 0),
    M(0, "insert:orders:big.lt.9007199254740994", NULL, 1),
    M(0, "insert:orders:neg.lt.0", NULL, 1),
    M(0, "insert:orders:neg.gt.-6", NULL, 1),
    M(0, "insert:orders:neg.lt.-5", NULL, 0),
    M(0, "insert:orders:neg.eq.-5.0", NULL, 1),
    M(0, "insert:orders:f.gt.1e299", NULL, 1),
    M(0, "insert:orders:f.eq.1e300", NULL, 1),
    /* a number column against a non-number value compares the text */
    M(0, "insert:orders:qty.eq.ten", NULL, 0),
    M(0, "insert:orders:qty.neq.ten", NULL, 1),
    /* strings compare as bytes, even when they look like numbers */
    M(0, "insert:orders:snum.eq.10", NULL, 1),
    M(0, "insert:orders:snum.eq.10.0", NULL, 0),
    M(0, "insert:orders:snum.gt.9", NULL, 0),
    M(0, "insert:orders:snum.lt.9", NULL, 1),
    M(0, "insert:orders:status.eq.paid", NULL, 1),
    M(0, "insert:orders:status.eq.Paid", NULL, 0),
    M(0, "insert:orders:status.eq.pai", NULL, 0),
    M(0, "insert:orders:status.eq.paidx", NULL, 0),
    M(0, "insert:orders:status.neq.paid", NULL, 0),
    M(0, "insert:orders:status.neq.new", NULL, 1),
    M(0, "insert:orders:status.lt.pb", NULL, 1),
    M(0, "insert:orders:status.lt.paidx", NULL, 1),
    M(0, "insert:orders:status.lt.paid", NULL, 0),
    M(0, "insert:orders:status.lte.paid", NULL, 1),
    M(0, "insert:orders:status.gt.pa", NULL, 1),
    M(0, "insert:orders:status.gt.paid", NULL, 0),
    M(0, "insert:orders:status.gte.paid", NULL, 1),
    M(0, "insert:orders:status.in.(new,paid)", NULL, 1),
    M(0, "insert:orders:status.in.(\"paid\")", NULL, 1),
    M(0, "insert:orders:status.in.new,shipped", NULL, 0),
    M(0, "insert:orders:empty.eq.", NULL, 1),
    M(0, "insert:orders:empty.is.null", NULL, 0),
    M(0, "insert:orders:status.eq.", NULL, 0),
    /* escaped JSON strings are compared unescaped */
    M(0, "insert:orders:q.eq.a\"b", NULL, 1),
    M(0, "insert:orders:q.eq.a\\\"b", NULL, 0),
    M(0, "insert:orders:q.in.(\"a\\\"b\",x)", NULL, 1),
    M(0, "insert:orders:q.gt.a", NULL, 1),
    M(0, "insert:orders:e.eq.caf\xc3\xa9", NULL, 1),
    M(0, "insert:orders:e.eq.caf\\u00e9", NULL, 0),
    M(0, "insert:orders:e.eq.cafe", NULL, 0),
    M(0, "insert:orders:r.eq.caf\xc3\xa9", NULL, 1),
    M(0, "insert:orders:\"we\"\"ird\".eq.7", NULL, 1),
    M(0, "insert:orders:\"id\".eq.1", NULL, 1),
    /* NULL only matches is.null */
    M(0, "insert:orders:note.is.null", NULL, 1),
    M(0, "insert:orders:note.eq.null", NULL, 0),
    M(0, "insert:orders:note.neq.x", NULL, 0),
    M(0, "insert:orders:note.in.(null,x)", NULL, 0),
    M(0, "insert:orders:note.lt.zzz", NULL, 0),
    M(0, "insert:orders:note.gt.", NULL, 0),
    M(0, "insert:orders:note.gte.0", NULL, 0),
    M(0, "insert:orders:note.is.true", NULL, 0),
    M(0, "insert:orders:note.is.false", NULL, 0),
    M(0, "insert:orders:status.is.null", NULL, 0),
    /* booleans */
    M(0, "insert:orders:flag.is.true", NULL, 1),
    M(0, "insert:orders:flag.is.false", NULL, 0),
    M(0, "insert:orders:flag.is.null", NULL, 0),
    M(0, "insert:orders:off.is.false", NULL, 1),
    M(0, "insert:orders:off.is.true", NULL, 0),
    M(0, "insert:orders:sflag.is.true", NULL, 0),
    M(0, "insert:orders:sflag.eq.true", NULL, 1),
    M(0, "insert:orders:id.is.true", NULL, 0),
    /* a column that is not there never matches, whatever the operator */
    M(0, "insert:orders:missing.eq.x", NULL, 0),
    M(0, "insert:orders:missing.neq.x", NULL, 0),
    M(0, "insert:orders:missing.is.null", NULL, 0),
    M(0, "insert:orders:missing.in.(x,y)", NULL, 0),
    M(0, "insert:orders:missing.lt.0", NULL, 0),
    M(0, "insert:orders:ID.eq.1", NULL, 0),
    /* extra filters are AND-ed */
    M(0, "insert:orders:id.eq.1", "status.eq.paid", 1),
    M(0, "insert:orders:id.eq.1", "status.eq.new", 0),
    M(0, "insert:orders:id.eq.2", "status.eq.paid", 0),
    M(0, "insert:orders:id.eq.1", "missing.neq.x", 0),
    /* insert looks at columns only */
    M(4, "insert:orders:id.eq.2", NULL, 1),
    M(4, "insert:orders:status.eq.paid", NULL, 0),
    /* update: columns first, identity for what columns lack */
    M(1, "update:orders:status.eq.shipped", NULL, 1),
    M(1, "update:orders:status.eq.paid", NULL, 0),
    M(1, "update:orders:doc.eq.old", NULL, 1),
    M(1, "update:orders:doc.neq.old", NULL, 0),
    M(1, "update:orders:id.eq.1", "doc.eq.old", 1),
    M(1, "update:orders:qty.is.null", NULL, 1),       /* new NULL wins over old 3 */
    M(1, "update:orders:qty.eq.3", NULL, 0),
    M(1, "update:orders:missing.eq.x", NULL, 0),
    M(5, "update:orders:id.eq.5", NULL, 1),
    M(5, "update:orders:other.eq.5", NULL, 0),
    /* delete looks at identity only */
    M(2, "delete:orders:id.eq.7", NULL, 1),
    M(2, "delete:orders:id.gt.6.5", NULL, 1),
    M(2, "delete:orders:id.eq.8", NULL, 0),
    M(2, "delete:orders:status.eq.x", NULL, 0),
    M(2, "*:orders:id.in.(1,7)", NULL, 1),
};

static void match_cases(void)
{
    for (size_t i = 0; i < sizeof mcases / sizeof mcases[0]; i++) {
        const mcase *c = &mcases[i];
        char err[512] = "";
        char *fl[1] = { (char *)c->f };
        if (c->rec >= NREC || !recs[c->rec].ok) {
            FAIL_AT(c->line, "record %u unavailable", c->rec);
            continue;
        }
        spec *sp = spec_parse(c->q, fl, c->f != NULL, err, sizeof err);
        if (!sp) {
            FAIL_AT(c->line, "spec_parse(\"%s\") failed: %s", c->q, err);
            continue;
        }
        size_t cap = strlen(rec_text[c->rec]) + 1;
        char *scratch = malloc(cap);
        static col_cache cc[NCOLS];
        static match_ctx m;
        match_begin(&m, &recs[c->rec].r, scratch, cap, cc, NCOLS);
        int got = spec_match(sp, &m);
        if (spec_match(sp, &m) != got)   /* the cached values answer the same */
            FAIL_AT(c->line, "record %u, \"%s\": a second spec_match differs", c->rec, c->q);
        free(scratch);
        if (!got != !c->want)
            FAIL_AT(c->line, "record %u, \"%s\"%s%s: %s, expected %s", c->rec, c->q,
                    c->f ? " & " : "", c->f ? c->f : "", got ? "match" : "no match",
                    c->want ? "match" : "no match");
        free(sp);
    }
}

/* ==== pos_parse ========================================================= */

typedef struct poscase {
    int line;
    const char *s;
    int rc;
    uint64_t lsn;
    uint32_t idx;
} poscase;

static const poscase poscases[] = {
    { __LINE__, "0/16B2500:0", 0, 0x16B2500, 0 },
    { __LINE__, "0/16b2500:3", 0, 0x16B2500, 3 },
    { __LINE__, "1/0:12", 0, (uint64_t)1 << 32, 12 },
    { __LINE__, "FFFFFFFF/FFFFFFFF:4294967295", 0, UINT64_MAX, 4294967295u },
    { __LINE__, "12AB/34CD:100000", 0, (uint64_t)0x12AB << 32 | 0x34CD, 100000 },
    { __LINE__, "0/16B2500:4294967296", -1, 0, 0 },
    { __LINE__, "0/16B2500:99999999999", -1, 0, 0 },
    { __LINE__, "0/16B2500:18446744073709551617", -1, 0, 0 },
    { __LINE__, "0/16B2500", -1, 0, 0 },
    { __LINE__, "0/16B2500:", -1, 0, 0 },
    { __LINE__, ":0", -1, 0, 0 },
    { __LINE__, "", -1, 0, 0 },
    { __LINE__, "0-16B2500:0", -1, 0, 0 },
    { __LINE__, "G/0:0", -1, 0, 0 },
    { __LINE__, "/0:0", -1, 0, 0 },
    { __LINE__, "0/:0", -1, 0, 0 },
    { __LINE__, "0/0/0:0", -1, 0, 0 },
    { __LINE__, "1FFFFFFFF/0:0", -1, 0, 0 },
    { __LINE__, "0/16B2500:1a", -1, 0, 0 },
    { __LINE__, "0/16B2500:-1", -1, 0, 0 },
    { __LINE__, "0/16B2500:+1", -1, 0, 0 },
    { __LINE__, "0/16B2500: 1", -1, 0, 0 },
    { __LINE__, "0/16B2500:1 ", -1, 0, 0 },
    { __LINE__, " 0/16B2500:1", -1, 0, 0 },
    { __LINE__, "0/16B2500:0:0", -1, 0, 0 },
};

static void pos_cases(void)
{
    for (size_t i = 0; i < sizeof poscases / sizeof poscases[0]; i++) {
        const poscase *c = &poscases[i];
        size_t n = strlen(c->s);
        char *s = dup_exact(c->s, n);
        uint64_t lsn = 0;
        uint32_t idx = 0;
        int rc = pos_parse(s, n, &lsn, &idx);
        if (rc != c->rc)
            FAIL_AT(c->line, "pos_parse(\"%s\") = %d, expected %d", c->s, rc, c->rc);
        else if (rc == 0 && (lsn != c->lsn || idx != c->idx))
            FAIL_AT(c->line, "pos_parse(\"%s\") = %llX:%u", c->s,
                    (unsigned long long)lsn, idx);
        free(s);
    }
}

/* ==== tables_allow ====================================================== */

typedef struct tcase {
    int line;
    const char *list, *schema, *table;
    int want;
} tcase;

static const tcase tcases[] = {
    { __LINE__, NULL, "public", "orders", 1 },
    { __LINE__, NULL, "any", "thing", 1 },
    { __LINE__, "public.orders", "public", "orders", 1 },
    { __LINE__, "public.orders", "public", "order", 0 },
    { __LINE__, "public.orders", "public", "orders2", 0 },
    { __LINE__, "public.orders", "public", "Orders", 0 },
    { __LINE__, "public.orders", "sales", "orders", 0 },
    { __LINE__, "public.*", "public", "anything", 1 },
    { __LINE__, "public.*", "sales", "anything", 0 },
    { __LINE__, "*.items", "sales", "items", 1 },
    { __LINE__, "*.items", "public", "items", 1 },
    { __LINE__, "*.items", "sales", "item", 0 },
    { __LINE__, "*.*", "x", "y", 1 },
    { __LINE__, "public.orders, public.*, *.items", "public", "orders", 1 },
    { __LINE__, "public.orders, public.*, *.items", "public", "other", 1 },
    { __LINE__, "public.orders, public.*, *.items", "sales", "items", 1 },
    { __LINE__, "public.orders, public.*, *.items", "sales", "orders", 0 },
    { __LINE__, "sales.a,sales.b", "sales", "b", 1 },
    { __LINE__, "sales.a,sales.b", "sales", "c", 0 },
    { __LINE__, "  public.orders  ,\tsales.t  ", "public", "orders", 1 },
    { __LINE__, "  public.orders  ,\tsales.t  ", "sales", "t", 1 },
    { __LINE__, "  public.orders  ,\tsales.t  ", "sales", "t  ", 0 },
    { __LINE__, "public.orders,,", "public", "orders", 1 },
    /* backslash escapes the special characters */
    { __LINE__, "my\\.schema.t", "my.schema", "t", 1 },
    { __LINE__, "my\\.schema.t", "my", "schema.t", 0 },
    { __LINE__, "public.a\\,b", "public", "a,b", 1 },
    { __LINE__, "public.a\\,b", "public", "a", 0 },
    { __LINE__, "public.a\\*", "public", "a*", 1 },
    { __LINE__, "public.a\\*", "public", "ab", 0 },
    { __LINE__, "public.\\*", "public", "*", 1 },
    { __LINE__, "public.\\*", "public", "x", 0 },
    { __LINE__, "public.a\\ b", "public", "a b", 1 },
    { __LINE__, "public.a\\\\b", "public", "a\\b", 1 },
    { __LINE__, "s.a*", "s", "ab", 0 },
    /* unqualified: the public schema */
    { __LINE__, "orders", "public", "orders", 1 },
    { __LINE__, "orders", "sales", "orders", 0 },
};

static void tables_cases(void)
{
    for (size_t i = 0; i < sizeof tcases / sizeof tcases[0]; i++) {
        const tcase *c = &tcases[i];
        int got = tables_allow(c->list, c->schema, c->table);
        if (!got != !c->want)
            FAIL_AT(c->line, "tables_allow(\"%s\", %s.%s) = %d, expected %d", S(c->list),
                    c->schema, c->table, got, c->want);
    }
}

/* ==== list_iter ========================================================= */

/* Each row: a list, whether backslash escapes, and its elements joined by
 * '|' as the iterator returns them. */
static const struct lcase {
    int line;
    const char *list;
    int escapes;
    const char *want;
} lcases[] = {
    { __LINE__, "", 0, "" },
    { __LINE__, "a", 0, "a" },
    { __LINE__, "a,b", 0, "a|b" },
    { __LINE__, " a ,\tb\t, c\r", 0, "a|b|c" },
    { __LINE__, "a,", 0, "a|" },
    { __LINE__, ",a", 0, "|a" },
    { __LINE__, "a,,b", 0, "a||b" },
    { __LINE__, " , ", 0, "|" },
    { __LINE__, "a\\,b", 0, "a\\|b" },
    { __LINE__, "a\\,b", 1, "a\\,b" },
    { __LINE__, "a\\\\,b", 1, "a\\\\|b" },
    { __LINE__, "a\\", 1, "a\\" },
    { __LINE__, "x.y\\,z,w", 1, "x.y\\,z|w" },
};

static void list_cases(void)
{
    for (size_t i = 0; i < sizeof lcases / sizeof lcases[0]; i++) {
        const struct lcase *c = &lcases[i];
        size_t n = strlen(c->list);
        char *copy = malloc(n ? n : 1), got[128];
        size_t o = 0;
        list_iter it;
        slice e;
        memcpy(copy, c->list, n);   /* exact size: ASan sees a read past it */
        list_begin(&it, copy, n, c->escapes);
        for (int k = 0; list_next(&it, &e); k++) {
            if (o + e.n + 2 >= sizeof got)
                break;
            if (k)
                got[o++] = '|';
            memcpy(got + o, e.p, e.n);
            o += e.n;
            if (k > 20)
                break;
        }
        got[o] = 0;
        if (strcmp(got, c->want))
            FAIL_AT(c->line, "list \"%s\" (escapes %d): got \"%s\", expected \"%s\"", c->list, c->escapes,
                    got, c->want);
        if (list_next(&it, &e))
            FAIL_AT(c->line, "list \"%s\": an element after the end", c->list);
        free(copy);
    }
    CHECK(has_token("Upgrade", 7, "upgrade"));
    CHECK(has_token("keep-alive, Upgrade", 19, "upgrade"));
    CHECK(!has_token("keep-alive, Upgraded", 20, "upgrade"));
    CHECK(!has_token("", 0, "upgrade"));
    /* PostgreSQL's booleans: prefixes, any case; "o" alone is neither */
    CHECK_EQ(pg_bool("T", 1), 1);
    CHECK_EQ(pg_bool("yes", 3), 1);
    CHECK_EQ(pg_bool("On", 2), 1);
    CHECK_EQ(pg_bool("1", 1), 1);
    CHECK_EQ(pg_bool("Fals", 4), 0);
    CHECK_EQ(pg_bool("of", 2), 0);
    CHECK_EQ(pg_bool("0", 1), 0);
    CHECK_EQ(pg_bool("o", 1), -1);
    CHECK_EQ(pg_bool("truex", 5), -1);
    CHECK_EQ(pg_bool("2", 1), -1);
    CHECK_EQ(pg_bool("", 0), -1);
}

/* table_pat_of splits at the first unescaped dot and counts the dots. */
static void table_pat_cases(void)
{
    table_pat t;
    CHECK_EQ(table_pat_of((slice){ "s.t", 3 }, &t), 1);
    CHECK(t.schema.n == 1 && t.schema.p[0] == 's' && t.table.n == 1 && t.table.p[0] == 't');
    CHECK_EQ(table_pat_of((slice){ "my\\.s.t", 7 }, &t), 1);
    CHECK(t.schema.n == 5 && t.table.n == 1);   /* my\.s, still escaped */
    CHECK(table_pat_match(&t, "my.s", "t") && !table_pat_match(&t, "my", "s.t"));
    CHECK_EQ(table_pat_of((slice){ "a.b.c", 5 }, &t), 2);
    CHECK_EQ(table_pat_of((slice){ "orders", 6 }, &t), 0);
    CHECK(table_pat_match(&t, "public", "orders") && !table_pat_match(&t, "sales", "orders"));
    CHECK_EQ(table_pat_of((slice){ "", 0 }, &t), 0);
    CHECK(!table_pat_match(&t, "public", ""));
}

/* ==== runner ============================================================ */

void test_query(void)
{
    TEST("query: params_parse cases") params_cases();
    TEST("query: params_parse honours the length") params_length();
    TEST("query: spec_parse types and tables") spec_cases();
    TEST("query: spec_parse filters and operators") filter_cases();
    TEST("query: spec_parse error messages") spec_messages();
    TEST("query: spec_parse long in-lists") spec_long_in();
    TEST("query: at most 16 filters and 1000 in-list values") spec_filter_cap();
    TEST("query: in-lists by binary search") in_list_search();
    TEST("query: spec_parse survives in-lists followed by filters") spec_in_then_more();
    TEST("query: canonical keys") key_cases();
    TEST("query: num_parse strict and lax") num_parse_cases();
    TEST("query: num_cmp") num_cmp_cases();
    TEST("query: wal2json test records parse") parse_records();
    TEST("query: spec_match") match_cases();
    TEST("query: pos_parse") pos_cases();
    TEST("query: tables_allow") tables_cases();
    TEST("query: list_iter, has_token and pg_bool") list_cases();
    TEST("query: table_pat_of and table_pat_match") table_pat_cases();
}
