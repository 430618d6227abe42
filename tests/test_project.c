/* test_project.c -- w2j_project (json.c): the columns= projection of a
 * wal2json record, checked on the bytes. */
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
}
