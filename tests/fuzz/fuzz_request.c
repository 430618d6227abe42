/* fuzz_request.c -- libFuzzer target for the whole path of a /ws request
 * before the catalog is asked: the request head (http.c), the Origin policy
 * (http_origin_check), the query string and the subscription (query.c),
 * the since position, the tables allow-list and grant authorization
 * (grant.c), chained as pgcdc.c chains them.
 *
 * Input: byte 0 picks the allowed_origins setting (none, "*", a list) and
 * whether a grant is required; the rest is fed as the request head.  A
 * grant written "<base64url payload>.!" is signed by the target itself
 * with the test secret, so the checks behind the MAC are reached too.
 * Contract checked:
 *   - every function answers within its documented set (origin -1/0/1, 0
 *     exactly when there is no Origin header; grant 0/401/403);
 *   - every refusal reason is a NUL-terminated line that fits its buffer;
 *   - an accepted grant expires after "now", names the request's table and
 *     allows the request's change types;
 *   - a signed grant naming exactly the request's own query is accepted
 *     unless it is already expired.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fz_require(c) do { if (!(c)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
    abort(); } } while (0)

static const char SECRET[] = "fuzzing secret, 32 bytes long...";
static const int64_t NOW = 1700000000;

static void fz_line(const char *err, size_t cap)
{
    size_t n = strnlen(err, cap);
    fz_require(n < cap);
}

/* "<payload>.!" -> "<payload>.<its MAC>" (a fresh string), else NULL. */
static char *fz_sign(const char *g)
{
    size_t n = strlen(g);
    if (n < 3 || g[n - 1] != '!' || g[n - 2] != '.')
        return NULL;
    uint8_t payload[4096], mac[20];
    long pl = b64url_decode(g, n - 2, payload, sizeof payload);
    if (pl < 0)
        return NULL;
    hmac_sha1(SECRET, sizeof SECRET - 1, payload, (size_t)pl, mac);
    char *out = malloc(n + 32);
    fz_require(out != NULL);
    memcpy(out, g, n - 1);
    long ml = b64url_encode(mac, 20, out + n - 1, 32);
    fz_require(ml == 27);
    out[n - 1 + (size_t)ml] = 0;
    return out;
}

static void fz_authorize(const ws_params *prm, const spec *sp, int need_grant)
{
    char err[512];
    int64_t exp = 0;
    if (!need_grant)
        return;
    char *signed_grant = prm->grant ? fz_sign(prm->grant) : NULL;
    const char *g = signed_grant ? signed_grant : prm->grant;
    int st = grant_verify(SECRET, sizeof SECRET - 1, g, sp, NOW, &exp, err, sizeof err);
    fz_require(st == 0 || st == 401 || st == 403);
    if (st) {
        fz_line(err, sizeof err);
        fz_require(err[0] != 0);
    } else {
        fz_require(exp > NOW);
    }
    free(signed_grant);

    /* a grant for exactly this query and these filters is accepted */
    char payload[2048];
    int pn = snprintf(payload, sizeof payload, "exp=%lld&query=", (long long)(NOW + 60));
    size_t o = (size_t)pn;
    static const char hex[] = "0123456789ABCDEF";
    for (const char *q = prm->query; *q && o + 4 < sizeof payload; q++) {
        unsigned char ch = (unsigned char)*q;
        payload[o++] = '%';
        payload[o++] = hex[ch >> 4];
        payload[o++] = hex[ch & 15];
    }
    for (unsigned i = 0; i < prm->nfilters && o + 8 < sizeof payload; i++) {
        memcpy(payload + o, "&filter=", 8);
        o += 8;
        for (const char *q = prm->filters[i]; *q && o + 4 < sizeof payload; q++) {
            unsigned char ch = (unsigned char)*q;
            payload[o++] = '%';
            payload[o++] = hex[ch >> 4];
            payload[o++] = hex[ch & 15];
        }
    }
    if (o + 4 >= sizeof payload)
        return;   /* too long to mint here */
    uint8_t mac[20];
    char tok[4096];
    hmac_sha1(SECRET, sizeof SECRET - 1, payload, o, mac);
    long a = b64url_encode((const uint8_t *)payload, o, tok, sizeof tok);
    fz_require(a > 0 && (size_t)a + 30 < sizeof tok);
    tok[a] = '.';
    long b = b64url_encode(mac, 20, tok + a + 1, sizeof tok - (size_t)a - 1);
    tok[a + 1 + b] = 0;
    st = grant_verify(SECRET, sizeof SECRET - 1, tok, sp, NOW, &exp, err, sizeof err);
    fz_require(st == 0 && exp == NOW + 60);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const origins[] = { NULL, "*", "https://a.example, http://x:1" };
    if (size < 1)
        return 0;
    int mode = data[0];
    const char *allowed = origins[mode % 3];
    int need_grant = (mode / 3) % 2;
    size_t n = size - 1;
    char *b = malloc(n ? n : 1);
    fz_require(b != NULL);
    if (n)
        memcpy(b, data + 1, n);

    /* the head arrives in two pieces; only new bytes are scanned */
    size_t scanned = 0, half = n / 2;
    size_t end = http_head_end(b, half, &scanned);
    if (!end)
        end = http_head_end(b, n, &scanned);
    size_t check = 0;
    fz_require(end == http_head_end(b, n, &check));

    http_req r;
    int rc = end ? http_parse(b, end, &r) : 0;
    fz_require(rc >= -1 && rc <= 1);
    if (rc == 1) {
        fz_require(r.head_len == end);
        int o = origin_check_str(&r, allowed);
        fz_require(o >= -1 && o <= 1);
        fz_require((o == 0) == (r.norigin == 0));
        if (allowed && allowed[0] == '*' && r.norigin == 1)
            fz_require(o == 1);

        ws_params prm;
        char err[512];
        if (params_parse(r.query.p, r.query.n, &prm, err, sizeof err) == 0) {
            if (prm.query) {
                spec *sp = spec_parse(prm.query, prm.filters, prm.nfilters, err, sizeof err);
                if (sp) {
                    uint64_t lsn;
                    uint32_t idx;
                    if (prm.since)
                        (void)pos_parse(prm.since, strlen(prm.since), &lsn, &idx);
                    (void)tables_allow("public.*, app.orders", sp->schema, sp->table);
                    fz_authorize(&prm, sp, need_grant);
                    free(sp);
                } else {
                    fz_line(err, sizeof err);
                }
            }
            params_free(&prm);
        } else {
            fz_line(err, sizeof err);
        }
    }
    free(b);
    return 0;
}
