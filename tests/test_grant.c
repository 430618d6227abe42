/* test_grant.c -- signed grant verification (grant.c).  The grants were
 * minted with Python's hmac module (tests/grant_mint.py's recipe) under
 * SECRET with exp = 2000000000. */
#include <stdlib.h>

#include "pgcdc.h"
#include "t.h"

void test_grant(void);

static const char SECRET[] = "a grant secret of 32 bytes......";
/* exp=2000000000&query=insert%2Cupdate%3Aorders&filter=user_id.eq.42 */
static const char G_ORDERS[] = "ZXhwPTIwMDAwMDAwMDAmcXVlcnk9aW5zZXJ0JTJDdXBkYXRlJTNBb3JkZXJzJmZpbHRlcj11c2VyX2lkLmVxLjQy"
                               ".yG-vFXLif81aGN_h4s45T0jCedg";
/* exp=2000000000&query=%2A%3Ashop.items */
static const char G_ITEMS[] = "ZXhwPTIwMDAwMDAwMDAmcXVlcnk9JTJBJTNBc2hvcC5pdGVtcw.ASEdNvEFUToAdc4IXtFEniGXZA0";

static int verify(const char *grant, const char *query, const char *flt, int64_t now, char *err)
{
    char perr[256];
    char *f[1] = { (char *)flt };
    spec *sp = spec_parse(query, f, flt ? 1 : 0, perr, sizeof perr);
    int64_t exp = 0;
    if (!sp)
        return -1;
    int st = grant_verify(SECRET, sizeof SECRET - 1, grant, sp, now, &exp, err, 256);
    if (st == 0 && exp != 2000000000)
        st = -2;
    free(sp);
    return st;
}

void test_grant(void)
{
    char err[256];
    const int64_t now = 1700000000;
    TEST("grant: a grant admits what it names, and narrower requests") {
        CHECK_EQ(verify(G_ORDERS, "insert,update:orders", "user_id.eq.42", now, err), 0);
        CHECK_EQ(verify(G_ORDERS, "insert:public.orders:status.eq.paid", "user_id.eq.42", now, err), 0);
        CHECK_EQ(verify(G_ITEMS, "delete:shop.items", NULL, now, err), 0);
    }
    TEST("grant: asking for more than granted is 403 saying what") {
        CHECK_EQ(verify(G_ORDERS, "*:orders", "user_id.eq.42", now, err), 403);
        CHECK(strstr(err, "change types") != NULL);
        CHECK_EQ(verify(G_ORDERS, "insert:orders", NULL, now, err), 403);
        CHECK(strstr(err, "filters") != NULL);
        CHECK_EQ(verify(G_ORDERS, "insert:orders", "user_id.eq.43", now, err), 403);
        CHECK_EQ(verify(G_ORDERS, "insert:other", "user_id.eq.42", now, err), 403);
        CHECK(strstr(err, "table") != NULL);
        CHECK_EQ(verify(G_ITEMS, "insert:items", NULL, now, err), 403);   /* public.items */
    }
    TEST("grant: missing, malformed, forged or expired grants are 401") {
        CHECK_EQ(verify(NULL, "insert:orders", NULL, now, err), 401);
        CHECK(strstr(err, "missing") != NULL);
        CHECK_EQ(verify("", "insert:orders", NULL, now, err), 401);
        CHECK_EQ(verify("garbage", "insert:orders", NULL, now, err), 401);
        CHECK(strstr(err, "malformed") != NULL);
        char forged[sizeof G_ITEMS];
        memcpy(forged, G_ITEMS, sizeof G_ITEMS);
        forged[sizeof G_ITEMS - 2] = forged[sizeof G_ITEMS - 2] == 'A' ? 'B' : 'A';
        CHECK_EQ(verify(forged, "*:shop.items", NULL, now, err), 401);
        CHECK(strstr(err, "signature") != NULL);
        /* the payload of one grant with the MAC of another */
        char swapped[256];
        const char *dot = strchr(G_ITEMS, '.');
        snprintf(swapped, sizeof swapped, "%.*s%s", (int)(strchr(G_ORDERS, '.') - G_ORDERS), G_ORDERS, dot);
        CHECK_EQ(verify(swapped, "insert:orders", "user_id.eq.42", now, err), 401);
        CHECK_EQ(verify(G_ITEMS, "*:shop.items", NULL, 2000000000, err), 401);
        CHECK(strstr(err, "expired") != NULL);
        CHECK_EQ(verify(G_ITEMS, "*:shop.items", NULL, 1999999999, err), 0);
        /* the right MAC under another secret */
        char perr[64];
        spec *sp = spec_parse("*:shop.items", NULL, 0, perr, sizeof perr);
        int64_t exp;
        CHECK(sp != NULL);
        if (sp) {
            CHECK_EQ(grant_verify("another secret, 16+ bytes", 25, G_ITEMS, sp, now, &exp, err, sizeof err), 401);
            free(sp);
        }
    }
}
