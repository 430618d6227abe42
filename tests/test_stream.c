/* test_stream.c -- unit tests of stream_id() (stream.c), the /health
 * "stream" value of docs/protocol.md: instances whose positions are
 * interchangeable must show the same value, whatever the spelling of their
 * settings, and any difference in what wal2json is asked for must show.
 *
 * Each row names two configurations and whether they are the same stream;
 * a failure names the row's line.  One known answer pins the value itself,
 * so a change to the hashing (which would make instances of two versions
 * look like different streams) cannot pass unnoticed.
 */
#include <stdlib.h>

#include "pgcdc.h"
#include "t.h"

void test_stream(void);

typedef struct side {
    const char *sysid, *db, *tables, *opts;
} side;

static const struct {
    int line;
    side a, b;
    int same;
} cases[] = {
    /* identity of the database */
    { __LINE__, { "7312", "app", NULL, NULL }, { "7312", "app", NULL, NULL }, 1 },
    { __LINE__, { "7312", "app", NULL, NULL }, { "7313", "app", NULL, NULL }, 0 },
    { __LINE__, { "7312", "app", NULL, NULL }, { "7312", "App", NULL, NULL }, 0 },
    { __LINE__, { "12", "3", NULL, NULL }, { "1", "23", NULL, NULL }, 0 },
    /* tables: a set; all tables however written */
    { __LINE__, { "1", "d", "public.a,public.b", NULL }, { "1", "d", " public.b , public.a,public.a", NULL }, 1 },
    { __LINE__, { "1", "d", "public.a", NULL }, { "1", "d", "public.b", NULL }, 0 },
    { __LINE__, { "1", "d", "public.a", NULL }, { "1", "d", "public.a,public.b", NULL }, 0 },
    { __LINE__, { "1", "d", NULL, NULL }, { "1", "d", "*.*", NULL }, 1 },
    { __LINE__, { "1", "d", NULL, NULL }, { "1", "d", "public.a, *.*", NULL }, 1 },
    { __LINE__, { "1", "d", NULL, NULL }, { "1", "d", "public.*", NULL }, 0 },
    { __LINE__, { "1", "d", "public.a\\,b", NULL }, { "1", "d", "public.a,b", NULL }, 0 },
    { __LINE__, { "1", "d", "public.a\\,b,x.y", NULL }, { "1", "d", "x.y , public.a\\,b", NULL }, 1 },
    /* options: order, spacing, boolean spellings, defaults, last wins */
    { __LINE__, { "1", "d", NULL, "include-timestamp=1" }, { "1", "d", NULL, " include-timestamp = on " }, 1 },
    { __LINE__, { "1", "d", NULL, "include-timestamp=1" }, { "1", "d", NULL, "include-timestamp=TRUE" }, 1 },
    { __LINE__, { "1", "d", NULL, "include-timestamp=1" }, { "1", "d", NULL, "include-timestamp=y" }, 1 },
    { __LINE__, { "1", "d", NULL, "include-timestamp=1" }, { "1", "d", NULL, "" }, 0 },
    { __LINE__, { "1", "d", NULL, "include-timestamp=1" }, { "1", "d", NULL, "include-timestamp=o" }, 0 },
    { __LINE__, { "1", "d", NULL, NULL }, { "1", "d", NULL, "" }, 1 },
    { __LINE__, { "1", "d", NULL, "" }, { "1", "d", NULL, "include-timestamp=off,include-types=1" }, 1 },
    { __LINE__, { "1", "d", NULL, "include-pk=1,include-timestamp=1" },
      { "1", "d", NULL, "include-timestamp=yes, include-pk=true" }, 1 },
    { __LINE__, { "1", "d", NULL, "include-pk=1,include-pk=0" }, { "1", "d", NULL, "" }, 1 },
    { __LINE__, { "1", "d", NULL, "include-pk=0,include-pk=1" }, { "1", "d", NULL, "include-pk=1" }, 1 },
    { __LINE__, { "1", "d", NULL, "include-types=0" }, { "1", "d", NULL, "" }, 0 },
    { __LINE__, { "1", "d", NULL, "actions=insert" }, { "1", "d", NULL, "actions=delete" }, 0 },
    { __LINE__, { "1", "d", NULL, "filter-msg-prefixes=on" }, { "1", "d", NULL, "filter-msg-prefixes=true" }, 0 },
    /* tables and options never stand for each other */
    { __LINE__, { "1", "d", "a.b", "" }, { "1", "d", NULL, "a.b" }, 0 },
};

static int is_hex16(const char *s)
{
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[16] == 0;
}

void test_stream(void)
{
    TEST("stream_id: equal exactly for the same stream") {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char a[17], b[17];
            stream_id(cases[i].a.sysid, cases[i].a.db, cases[i].a.tables, cases[i].a.opts, a);
            stream_id(cases[i].b.sysid, cases[i].b.db, cases[i].b.tables, cases[i].b.opts, b);
            if (!is_hex16(a) || !is_hex16(b)) {
                t_fail++;
                fprintf(stderr, "  %s:%d: not 16 hex digits: \"%s\" \"%s\"\n", __FILE__, cases[i].line, a, b);
            } else if ((strcmp(a, b) == 0) != cases[i].same) {
                t_fail++;
                fprintf(stderr, "  %s:%d: %s and %s, expected %s\n", __FILE__, cases[i].line, a, b,
                        cases[i].same ? "equal" : "different");
            }
        }
    }
    TEST("stream_id: known answer (stable across versions and instances)") {
        /* SHA-1 of the canonical text "pgcdc stream 1\n19:7312345678901234567\n
         * 8:postgres\nt3:*.*\no17:include-timestamp=1:1\n", computed apart
         * (python3 hashlib), first 8 bytes */
        char a[17];
        stream_id("7312345678901234567", "postgres", NULL, "include-timestamp=1", a);
        CHECK_MEM(a, strlen(a), "69cf566f4d8473b9");
    }
}
