/* test_project.c -- w2j_project (json.c): the columns= projection of a
 * wal2json record, checked on the bytes; the columns= list and [rules]
 * entries (query.c): parsing, placeholders put in as values, keys. */
#include <stdlib.h>

#include "t.h"
#include "pgcdc.h"

void test_project(void);

static json_tok toks[256];

static int proj_is(const char *rec, char *const *names, unsigned n, const char *want)
{
    char out[1024];
    long l = w2j_project(rec, strlen(rec), names, n, toks, 256, out, sizeof out);
    if (l < 0 || (size_t)l != strlen(want) || memcmp(out, want, (size_t)l) != 0) {
        fprintf(stderr, "  got %.*s\n  want %s\n", l < 0 ? 0 : (int)l, out, want);
        return 0;
    }
    return 1;
}

void test_project(void)
{
    static const char upd[] =
        "{\"pos\":\"0/1:0\",\"action\":\"U\",\"schema\":\"public\",\"table\":\"t\","
        "\"columns\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
        "{\"name\":\"a\",\"type\":\"text\",\"value\":\"x]\"},"
        "{\"name\":\"b\",\"type\":\"text\",\"value\":null}],"
        "\"identity\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
        "{\"name\":\"b\",\"type\":\"text\",\"value\":\"{\\\"name\\\":1}\"}]}";

    TEST("w2j_project keeps the named columns in columns and identity") {
        char *const ab[] = { "a", "b" }, *const id[] = { "id" }, *const none[] = { "zz" };
        CHECK(proj_is(upd, ab, 2,
            "{\"pos\":\"0/1:0\",\"action\":\"U\",\"schema\":\"public\",\"table\":\"t\","
            "\"columns\":[{\"name\":\"a\",\"type\":\"text\",\"value\":\"x]\"},"
            "{\"name\":\"b\",\"type\":\"text\",\"value\":null}],"
            "\"identity\":[{\"name\":\"b\",\"type\":\"text\",\"value\":\"{\\\"name\\\":1}\"}]}"));
        CHECK(proj_is(upd, id, 1,
            "{\"pos\":\"0/1:0\",\"action\":\"U\",\"schema\":\"public\",\"table\":\"t\","
            "\"columns\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1}],"
            "\"identity\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1}]}"));
        CHECK(proj_is(upd, none, 1,
            "{\"pos\":\"0/1:0\",\"action\":\"U\",\"schema\":\"public\",\"table\":\"t\","
            "\"columns\":[],\"identity\":[]}"));
        /* escaped names compare unescaped; other members are untouched */
        char *const e[] = { "\xc3\xa9" };
        CHECK(proj_is("{\"action\":\"I\",\"columns\":[{\"name\":\"\\u00e9\",\"value\":2},"
                      "{\"name\":\"x\",\"value\":3}],\"other\":[{\"name\":\"x\"}]}", e, 1,
                      "{\"action\":\"I\",\"columns\":[{\"name\":\"\\u00e9\",\"value\":2}],"
                      "\"other\":[{\"name\":\"x\"}]}"));
        /* a truncate has no columns: unchanged */
        CHECK(proj_is("{\"action\":\"T\",\"schema\":\"s\",\"table\":\"t\"}", ab, 2,
                      "{\"action\":\"T\",\"schema\":\"s\",\"table\":\"t\"}"));
        char out[8];
        CHECK(w2j_project(upd, strlen(upd), ab, 2, toks, 256, out, sizeof out) < 0);
        CHECK(w2j_project("[1]", 3, ab, 2, toks, 256, out, sizeof out) < 0);
    }

    TEST("columns= lists: sorted, distinct, quoted names, errors") {
        int st;
        char err[256];
        spec *sp = spec_build("*:t", NULL, 0, "b,a,\"c,d\",a", NULL, NULL, NULL, &st, err, sizeof err);
        CHECK(sp != NULL);
        if (sp) {
            CHECK_EQ(sp->ncols, 3);
            CHECK(!strcmp(sp->cols[0], "a") && !strcmp(sp->cols[1], "b") && !strcmp(sp->cols[2], "c,d"));
            CHECK(spec_has_col(sp, "c,d", 3) && !spec_has_col(sp, "c", 1));
            spec *sp2 = spec_parse("*:t", NULL, 0, err, sizeof err);
            CHECK(sp2 && spec_has_col(sp2, "zz", 2) && strcmp(sp->key, sp2->key) != 0);
            free(sp2);
            free(sp);
        }
        static const char *const bad[] = { "", ",", "a,", ",a", "a,,b", "\"a", "\"\"" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            sp = spec_build("*:t", NULL, 0, bad[i], NULL, NULL, NULL, &st, err, sizeof err);
            CHECK(sp == NULL && st == 400 && strstr(err, "columns"));
            free(sp);
        }
    }

    TEST("rules: parsing, placeholders and their errors") {
        rule r;
        char err[256];
        CHECK_EQ(rule_parse("public.orders", "customer_id.eq.{sub}&archived.is.false", &r, err, sizeof err), 0);
        CHECK(r.table && !strcmp(r.schema, "public") && !strcmp(r.table, "orders"));
        CHECK_EQ(r.sp->nfilters, 2);
        CHECK(r.paths[0] && !strcmp(r.paths[0], "sub") && !r.paths[1]);
        rule_free(&r);
        CHECK_EQ(rule_parse("\"My S\".\"T.x\"", "id.in.{app.rooms};columns=id,name", &r, err, sizeof err), 0);
        CHECK(!strcmp(r.schema, "My S") && !strcmp(r.table, "T.x") && !strcmp(r.paths[0], "app.rooms"));
        CHECK_EQ(r.sp->ncols, 2);
        rule_free(&r);
        CHECK_EQ(rule_parse("*", "allow", &r, err, sizeof err), 0);
        CHECK(!r.table && r.sp->nfilters == 0);
        rule_free(&r);
        CHECK_EQ(rule_parse("orders", "allow", &r, err, sizeof err), 0);
        CHECK(!strcmp(r.schema, "public") && !strcmp(r.table, "orders"));
        rule_free(&r);
        static const char *const bad[][3] = {
            { "t", "id.eq.{sub", "placeholder" }, { "t", "id.eq.x{sub}", "placeholder" },
            { "t", "id.eq.{}", "placeholder" }, { "t", "id.eq.{a..b}", "placeholder" },
            { "t", "id.in.(1,{sub})", "placeholder" }, { "t", "id.eq.{a b}", "placeholder" },
            { "t", "id.is.{sub}", "is takes" }, { "t", "bad", "bad filter" },
            { "t", "id.eq.1&", "bad filter" }, { "t", "", "empty" }, { "t", "allow;rows=1", "columns" },
            { "t", "allow;columns=", "columns" }, { "\"t", "allow", "bad table" },
            { ".t", "allow", "bad table" }, { "s.", "allow", "bad table" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            err[0] = 0;
            int rc = rule_parse(bad[i][0], bad[i][1], &r, err, sizeof err);
            CHECK(rc == -1 && strstr(err, bad[i][2]) != NULL);
            if (rc != -1 || !strstr(err, bad[i][2]))
                fprintf(stderr, "  rule %s = %s: %d %s\n", bad[i][0], bad[i][1], rc, err);
        }
        rule rs[3];
        CHECK_EQ(rule_parse("public.a", "allow", &rs[0], err, sizeof err), 0);
        CHECK_EQ(rule_parse("*", "allow", &rs[1], err, sizeof err), 0);
        CHECK_EQ(rule_parse("s.b", "allow", &rs[2], err, sizeof err), 0);
        CHECK(rule_find(rs, 3, "public", "a") == &rs[0]);
        CHECK(rule_find(rs, 3, "s", "b") == &rs[2]);
        CHECK(rule_find(rs, 3, "public", "b") == &rs[1]);
        CHECK(rule_find(rs, 1, "public", "b") == NULL);
        for (int i = 0; i < 3; i++)
            rule_free(&rs[i]);
    }

    TEST("rules: claims are values, never grammar; keys keep users apart") {
        rule r;
        char err[256];
        int st;
        CHECK_EQ(rule_parse("t", "cid.eq.{sub}&id.in.{rooms};columns=id,name", &r, err, sizeof err), 0);
        rule_value sub1[] = { { "1,2)", 4 } }, rooms[] = { { "3)", 2 }, { "4", 1 } };
        const rule_value *vals[] = { sub1, rooms };
        unsigned nv[] = { 1, 2 };
        spec *a = spec_build("*:t", NULL, 0, NULL, &r, vals, nv, &st, err, sizeof err);
        CHECK(a != NULL);
        if (a) {
            CHECK_EQ(a->nfilters, 2);
            CHECK(a->filters[0].op == OP_EQ && a->filters[0].nvals == 1 &&
                  a->filters[0].vals[0].n == 4 && !memcmp(a->filters[0].vals[0].s, "1,2)", 4));
            CHECK(a->filters[1].op == OP_IN && a->filters[1].nvals == 2 &&
                  !strcmp(a->filters[1].vals[0].s, "3)") && a->filters[1].vals[1].isnum);
            CHECK(a->filters[0].from_rule && a->ncols == 2);
        }
        /* another sub: another key; a client filter spelling the rule's
         * text is not the rule's filter */
        rule_value sub2[] = { { "x&filter=", 9 } };
        vals[0] = sub2;
        spec *b = spec_build("*:t", NULL, 0, "name", &r, vals, nv, &st, err, sizeof err);
        CHECK(b != NULL);
        if (a && b) {
            CHECK(strcmp(a->key, b->key) != 0);
            CHECK(b->filters[0].vals[0].n == 9 && !memcmp(b->filters[0].vals[0].s, "x&filter=", 9));
            CHECK_EQ(b->ncols, 1);
            char *fl[2] = { a->filters[0].text, a->filters[1].text };
            spec *c = spec_build("*:t", fl, 2, "id,name", NULL, NULL, NULL, &st, err, sizeof err);
            CHECK(c && strcmp(c->key, a->key) != 0);
            free(c);
        }
        free(a);
        free(b);
        /* columns beyond the rule's */
        vals[0] = sub1;
        spec *d = spec_build("*:t", NULL, 0, "id,email", &r, vals, nv, &st, err, sizeof err);
        CHECK(d == NULL && st == 403 && strstr(err, "email"));
        free(d);
        /* an empty array: an in that matches nothing */
        unsigned nv0[] = { 1, 0 };
        spec *e = spec_build("*:t", NULL, 0, NULL, &r, vals, nv0, &st, err, sizeof err);
        CHECK(e && e->filters[1].nvals == 0);
        free(e);
        rule_free(&r);
    }
}
