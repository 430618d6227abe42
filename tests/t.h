/* t.h -- the unit tests' tiny harness.
 *
 * CHECK(cond) records a failure with file:line and goes on; each TEST() is
 * one named test that prints "ok - name" or "not ok - name" (the lines
 * test.sh counts).  Every test file defines void test_<unit>(void) and the
 * runner in unit.c calls them.
 */
#ifndef T_H
#define T_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern int t_fail;          /* failures inside the current TEST */
extern int t_passed, t_failed;

#define CHECK(c) do { if (!(c)) { t_fail++; \
    fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); } } while (0)
#define CHECK_EQ(a, b) do { long long t_a = (long long)(a), t_b = (long long)(b); \
    if (t_a != t_b) { t_fail++; fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", \
    __FILE__, __LINE__, #a, t_a, t_b); } } while (0)
#define CHECK_MEM(p, n, s) do { size_t t_n = (size_t)(n); const char *t_s = (s); \
    if (t_n != strlen(t_s) || memcmp((p), t_s, t_n) != 0) { t_fail++; \
    fprintf(stderr, "  %s:%d: %s is \"%.*s\", expected \"%s\"\n", __FILE__, __LINE__, \
    #p, (int)t_n, (const char *)(p), t_s); } } while (0)

/* TEST("name") { ... } runs the block once and reports it; with UNIT_ONLY
 * set (substrings separated by '|'), only the tests whose names contain one
 * of them run. */
#define TEST(name) for (int t_once = (t_fail = 0, t_selected(name)); t_once; \
    t_once = 0, t_report(name))

int t_selected(const char *name);
void t_report(const char *name);

/* Is d[0..n) in lowercase hex equal to want (only its first strlen(want)
 * digits when prefix is set: a truncated MAC)?  Says what differs, under
 * the label what, when not. */
int t_hex_is(const char *what, const uint8_t *d, size_t n, const char *want, int prefix);

#endif
