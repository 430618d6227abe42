/* test_sse.c -- Server-Sent Events framing: id from the message's pos, one
 * data line per payload line, the close event. */
#include <stdlib.h>

#include "t.h"
#include "pgcdc.h"

void test_sse(void);

/* Frames payload and checks the length promise and the exact bytes. */
static int frames_as(const char *payload, const char *want)
{
    size_t n = strlen(payload), len = sse_event_len(payload, n);
    char *out = malloc(len + 1);
    size_t w = sse_event(out, payload, n);
    int ok = w == len && w == strlen(want) && !memcmp(out, want, w);
    if (!ok)
        fprintf(stderr, "  framed %zu (promised %zu): \"%.*s\"\n", w, len, (int)w, out);
    free(out);
    return ok;
}

void test_sse(void)
{
    TEST("sse: a change is id: <pos>, data: <json>, blank line") {
        CHECK(frames_as("{\"pos\":\"0/16B2500:0\",\"action\":\"I\"}",
                        "id: 0/16B2500:0\ndata: {\"pos\":\"0/16B2500:0\",\"action\":\"I\"}\n\n"));
        CHECK(frames_as("{\"pos\":\"1A/FF:12\",\"action\":\"E\",\"rows\":0,\"key\":null}",
                        "id: 1A/FF:12\ndata: {\"pos\":\"1A/FF:12\",\"action\":\"E\",\"rows\":0,\"key\":null}\n\n"));
    }
    TEST("sse: a message without a leading pos (snapshot rows) has no id") {
        CHECK(frames_as("{\"action\":\"S\",\"schema\":\"public\"}", "data: {\"action\":\"S\",\"schema\":\"public\"}\n\n"));
        CHECK(frames_as("{\"action\":\"I\",\"pos\":\"0/1:0\"}", "data: {\"action\":\"I\",\"pos\":\"0/1:0\"}\n\n"));
        CHECK(frames_as("{\"pos\":\"0/1:0", "data: {\"pos\":\"0/1:0\n\n"));          /* unterminated */
        CHECK(frames_as("{\"pos\":\"a\\\"b\",", "data: {\"pos\":\"a\\\"b\",\n\n"));  /* escape */
        CHECK(frames_as("", "data: \n\n"));
    }
    TEST("sse: every line of a pretty-printed payload is a data line") {
        CHECK(frames_as("{\"pos\":\"0/1:0\",\n  \"a\": 1\n}",
                        "id: 0/1:0\ndata: {\"pos\":\"0/1:0\",\ndata:   \"a\": 1\ndata: }\n\n"));
        CHECK(frames_as("{\r\n\"a\":1\r}\n", "data: {\ndata: \"a\":1\ndata: }\ndata: \n\n"));
    }
    TEST("sse: close event, reason on one line and bounded") {
        char out[SSE_CLOSE_MAX];
        size_t n = sse_close_event(out, "slow consumer");
        CHECK_MEM(out, n, "event: close\ndata: slow consumer\n\n");
        n = sse_close_event(out, "a\nb\rc");
        CHECK_MEM(out, n, "event: close\ndata: a b c\n\n");
        n = sse_close_event(out, NULL);
        CHECK_MEM(out, n, "event: close\ndata: \n\n");
        char longr[400];
        memset(longr, 'x', sizeof longr - 1);
        longr[sizeof longr - 1] = 0;
        n = sse_close_event(out, longr);
        CHECK(n <= SSE_CLOSE_MAX);
        CHECK_EQ(n, 19 + 200 + 2);
    }
}
