/* unit.c -- runs every unit test file; built with ASan and UBSan. */
#include <stdlib.h>

#include "t.h"

int t_fail, t_passed, t_failed;

int t_selected(const char *name)
{
    const char *only = getenv("UNIT_ONLY");
    if (!only || !*only)
        return 1;
    for (const char *s = only; ; ) {
        size_t n = strcspn(s, "|");
        for (const char *p = name; n && *p; p++)
            if (!strncmp(p, s, n))
                return 1;
        if (!s[n])
            return 0;
        s += n + 1;
    }
}

void t_report(const char *name)
{
    if (t_fail) { t_failed++; printf("not ok - %s (%d checks failed)\n", name, t_fail); }
    else { t_passed++; printf("ok - %s\n", name); }
    fflush(stdout);
}

int t_hex_is(const char *what, const uint8_t *d, size_t n, const char *want, int prefix)
{
    static const char digits[] = "0123456789abcdef";
    char h[129];
    if (2 * n >= sizeof h)
        return 0;
    for (size_t i = 0; i < n; i++) {
        h[2 * i] = digits[d[i] >> 4];
        h[2 * i + 1] = digits[d[i] & 15];
    }
    h[2 * n] = '\0';
    if ((prefix ? strncmp(h, want, strlen(want)) : strcmp(h, want)) != 0) {
        fprintf(stderr, "  %s got %s want %s\n", what, h, want);
        return 0;
    }
    return 1;
}

void test_sha1(void);
void test_base64(void);
void test_ws(void);
void test_json(void);
void test_query(void);
void test_stream(void);
void test_sha256(void);
void test_jwt(void);
void test_snapshot(void);
void test_project(void);
void test_http(void);
void test_grant(void);
void test_sse(void);

int main(void)
{
    test_sha1();
    test_base64();
    test_ws();
    test_json();
    test_query();
    test_stream();
    test_sha256();
    test_jwt();
    test_snapshot();
    test_project();
    test_http();
    test_grant();
    test_sse();
    printf("unit: %d passed, %d failed\n", t_passed, t_failed);
    if (!t_passed && !t_failed) {
        printf("not ok - UNIT_ONLY=%s selects no test\n", getenv("UNIT_ONLY"));
        return 1;
    }
    return t_failed != 0;
}
