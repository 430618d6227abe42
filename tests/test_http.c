/* test_http.c -- the request-head scan and the Origin policy (http.c). */
#include <stdlib.h>

#include "pgcdc.h"
#include "t.h"

/* http_origin_check with allowed_origins given as its text. */
static int origin_check_str(const http_req *r, const char *allowed)
{
    word_list w = { 0 };
    int rc;
    if (word_list_parse(allowed, &w))
        abort();
    rc = http_origin_check(r, allowed ? &w : NULL);
    free(w.v);
    return rc;
}

void test_http(void);

static http_req parsed(const char *head)
{
    http_req r;
    CHECK_EQ(http_parse(head, strlen(head), &r), 1);
    return r;
}

void test_http(void)
{
    TEST("http: head end found when fed one byte at a time, each byte looked at once") {
        static const char *heads[] = {
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\n\r\n",
        };
        for (size_t h = 0; h < 3; h++) {
            const char *s = heads[h];
            size_t n = strlen(s), scanned = 0, end = 0, k;
            for (k = 1; k <= n && !end; k++) {
                end = http_head_end(s, k, &scanned);
                if (!end)
                    CHECK_EQ(scanned, k);
            }
            CHECK_EQ(end, n);
            CHECK_EQ(k - 1, n);
        }
    }
    TEST("http: the scan starts where the last one stopped (no rescan of old bytes)") {
        /* an empty line at offset 14 that a rescan from 0 would find */
        const char buf[] = "GET / HTTP/1.1\n\nX: y\r\nZ: w\r\n\r\n";
        size_t scanned = 20;
        CHECK_EQ(http_head_end(buf, 24, &scanned), 0);
        CHECK_EQ(scanned, 24);
        CHECK_EQ(http_head_end(buf, sizeof buf - 1, &scanned), sizeof buf - 1);
        scanned = 0;
        CHECK_EQ(http_head_end(buf, sizeof buf - 1, &scanned), 16);
    }
    TEST("http: an 8 KiB head fed in 1-byte pieces costs linear work") {
        size_t n = 8192, scanned = 0, looked = 0;
        char *b = malloc(n);
        CHECK(b != NULL);
        if (b) {
            memset(b, 'a', n);
            memcpy(b, "GET / HTTP/1.1\r\nX: ", 19);
            memcpy(b + n - 4, "\r\n\r\n", 4);
            for (size_t k = 1; k <= n; k++) {
                size_t before = scanned;
                size_t end = http_head_end(b, k, &scanned);
                looked += k - (before > 2 ? before - 2 : 0);
                if (end) {
                    CHECK_EQ(end, n);
                    break;
                }
            }
            CHECK(looked <= 3 * n);
            free(b);
        }
    }
    TEST("http: Origin policy (same origin by Host, listed, *, none, refused)") {
        http_req r = parsed("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), 0);
        r = parsed("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:8080\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), 1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: Cdc.Example.com\r\nOrigin: https://cdc.example.COM\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), 1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: cdc.example.com\r\nOrigin: https://cdc.example.com:8443\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), -1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: http://localhost:8080\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), -1);
        CHECK_EQ(origin_check_str(&r, "https://a.example, http://localhost:8080"), 1);
        CHECK_EQ(origin_check_str(&r, "https://a.example"), -1);
        CHECK_EQ(origin_check_str(&r, "*"), 1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), -1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: ftp://x\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), -1);
        r = parsed("GET /ws HTTP/1.1\r\nOrigin: http://x\r\n\r\n");   /* no Host */
        CHECK_EQ(origin_check_str(&r, NULL), -1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: x\r\nHost: x\r\nOrigin: http://x\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, NULL), -1);
        r = parsed("GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\nOrigin: http://x\r\n\r\n");
        CHECK_EQ(origin_check_str(&r, "*"), -1);
    }
}
