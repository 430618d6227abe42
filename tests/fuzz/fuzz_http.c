/* fuzz_http.c -- libFuzzer target for the request-head parser (http.c).
 *
 * The input, in a heap buffer of exactly its size, is parsed
 * whole and then at every shorter length (sampled for large inputs), each
 * prefix in its own exact-size buffer so that a read past the end is
 * caught.  Contract checked:
 *   - the answer is 1 (complete), 0 (need more) or -1 (malformed);
 *   - the head ends at the first empty line: a prefix shorter than the
 *     whole input's head gives 0, a longer one the same answer, the same
 *     head length and the same fields;
 *   - every slice lies inside the head; the method is upper-case letters,
 *     the target starts with '/' and has no control byte or space, the
 *     version is HTTP/1.0 or HTTP/1.1, path plus '?' plus query is the
 *     target;
 *   - an accepted head has RFC 9110 token characters in every header name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ALL_PREFIXES 2048   /* inputs up to this size: every prefix */

/* A broken contract aborts, naming the check. */
#define fz_require(c) do { if (!(c)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
    abort(); } } while (0)

static int fz_inside(slice s, const char *b, size_t n)
{
    if (s.n == 0)
        return 1;
    return s.p >= b && s.n <= n && (size_t)(s.p - b) <= n - s.n;
}

static int fz_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Header names of an accepted head, walked independently of the parser. */
static void fz_check_names(const char *b, size_t head)
{
    const char *p = memchr(b, '\n', head), *stop = b + head;
    fz_require(p != NULL);
    for (p++; p < stop;) {
        const char *eol = memchr(p, '\n', (size_t)(stop - p));
        fz_require(eol != NULL);
        size_t ln = (size_t)(eol - p);
        if (ln && p[ln - 1] == '\r')
            ln--;
        if (ln == 0)
            break;
        const char *colon = memchr(p, ':', ln);
        fz_require(colon != NULL && colon > p);
        for (const char *c = p; c < colon; c++)
            fz_require(fz_tchar((unsigned char)*c));
        p = eol + 1;
    }
}

static void fz_check_req(const http_req *r, const char *b, size_t n)
{
    const slice all[] = { r->method, r->target, r->version, r->path, r->query,
                          r->key, r->wsver, r->origin, r->auth, r->xff };
    fz_require(r->head_len >= 2 && r->head_len <= n);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fz_require(fz_inside(all[i], b, r->head_len));
    fz_require(r->method.n > 0);
    for (size_t i = 0; i < r->method.n; i++)
        fz_require(r->method.p[i] >= 'A' && r->method.p[i] <= 'Z');
    fz_require(r->target.n > 0 && r->target.p[0] == '/');
    for (size_t i = 0; i < r->target.n; i++)
        fz_require((unsigned char)r->target.p[i] > ' ' && r->target.p[i] != 0x7f);
    fz_require(r->version.n == 8 && (!memcmp(r->version.p, "HTTP/1.1", 8) ||
                                     !memcmp(r->version.p, "HTTP/1.0", 8)));
    fz_require(r->path.p == r->target.p && r->path.n <= r->target.n);
    if (r->path.n < r->target.n) {
        fz_require(r->target.p[r->path.n] == '?');
        fz_require(r->query.p == r->target.p + r->path.n + 1);
        fz_require(r->query.n == r->target.n - r->path.n - 1);
    } else {
        fz_require(r->query.n == 0);
    }
    fz_require(memchr(r->path.p, '?', r->path.n) == NULL);
    fz_require(!r->upgrade_ws || r->upgrade_any);
    fz_check_names(b, r->head_len);
}

/* Same answer and same fields, as offsets from each buffer's start. */
static int fz_off(slice s, const char *b)
{
    return s.n ? (int)(s.p - b) : -1;
}

static void fz_same(const http_req *a, const char *ab, const http_req *b, const char *bb)
{
    const slice sa[] = { a->method, a->target, a->version, a->path, a->query,
                         a->key, a->wsver, a->origin, a->auth, a->xff };
    const slice sb[] = { b->method, b->target, b->version, b->path, b->query,
                         b->key, b->wsver, b->origin, b->auth, b->xff };
    fz_require(a->head_len == b->head_len);
    for (size_t i = 0; i < sizeof sa / sizeof sa[0]; i++)
        fz_require(sa[i].n == sb[i].n && fz_off(sa[i], ab) == fz_off(sb[i], bb));
    fz_require(a->upgrade_ws == b->upgrade_ws && a->upgrade_any == b->upgrade_any &&
               a->conn_upgrade == b->conn_upgrade && a->nkey == b->nkey &&
               a->nver == b->nver && a->norigin == b->norigin);
}

static void fz_prefix(const char *whole, size_t len, int wrc, const http_req *wr)
{
    char *b = malloc(len ? len : 1);
    http_req r;
    fz_require(b != NULL);
    if (len)
        memcpy(b, whole, len);
    int rc = http_parse(b, len, &r);
    if (wrc == 0 || len < wr->head_len) {
        fz_require(rc == 0);
    } else {
        fz_require(rc == wrc);
        fz_same(wr, whole, &r, b);
    }
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *b = malloc(size ? size : 1);
    http_req r;
    fz_require(b != NULL);
    if (size)
        memcpy(b, data, size);
    int rc = http_parse(b, size, &r);
    fz_require(rc >= -1 && rc <= 1);
    if (rc != 0)
        fz_require(r.head_len >= 2 && r.head_len <= size);
    if (rc == 1)
        fz_check_req(&r, b, size);

    if (size <= ALL_PREFIXES) {
        for (size_t len = 0; len < size; len++)
            fz_prefix(b, len, rc, &r);
    } else {
        /* around the end of the head, and 64 spread lengths */
        size_t h = rc ? r.head_len : size;
        for (size_t d = 0; d < 3; d++)
            if (h >= d + 1 && h - d - 1 < size)
                fz_prefix(b, h - d - 1, rc, &r);
        if (h < size)
            fz_prefix(b, h, rc, &r);
        for (size_t k = 0; k < 64; k++)
            fz_prefix(b, size / 64 * k, rc, &r);
    }
    free(b);
    return 0;
}
