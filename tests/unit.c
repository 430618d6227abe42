/* unit.c -- runs every unit test file; built with ASan and UBSan. */
#include "t.h"

int t_fail, t_passed, t_failed;

void t_report(const char *name)
{
    if (t_fail) { t_failed++; printf("not ok - %s (%d checks failed)\n", name, t_fail); }
    else { t_passed++; printf("ok - %s\n", name); }
    fflush(stdout);
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
    return t_failed != 0;
}
