/* grant.c -- verification of signed grants (docs/protocol.md,
 * Grants).
 *
 * A grant is base64url(payload) "." base64url(HMAC-SHA1(secret, payload)),
 * payload = "exp=<unix seconds>&query=<q>[&filter=<f>]..." percent-encoded as
 * a subscription's query string is.  It admits a request when the MAC
 * matches (compared in constant time), exp is in the future, the request's
 * change types are a subset of the grant's, its table is the grant's, and
 * every filter of the grant is among the request's.
 *
 * Pure: no I/O, no clock (the caller passes the time), nothing kept.
 */
#include "pgcdc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRANT_PAYLOAD_MAX 4096

static int mac_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

/* The value of exp= in a payload (a query string), as a number. */
static int payload_exp(const char *p, int64_t *exp)
{
    for (const char *s = p; s; ) {
        if (!strncmp(s, "exp=", 4)) {
            char *end;
            const char *v = s + 4;
            if (*v < '0' || *v > '9')
                return -1;
            errno = 0;
            long long e = strtoll(v, &end, 10);
            if (errno || (*end && *end != '&'))
                return -1;
            *exp = e;
            return 0;
        }
        s = strchr(s, '&');
        if (s)
            s++;
    }
    return -1;
}

int grant_verify(const char *secret, size_t slen, const char *grant, const spec *sp,
                 int64_t now, int64_t *exp, char *err, size_t errlen)
{
    char perr[256];
    if (!grant || !*grant) {
        snprintf(err, errlen, "missing grant: this server needs a signed grant (&grant=)");
        return 401;
    }
    const char *dot = strchr(grant, '.');
    uint8_t payload[GRANT_PAYLOAD_MAX], mac[32], want[20];
    long plen = dot ? b64url_decode(grant, (size_t)(dot - grant), payload, sizeof payload - 1) : -1;
    long mlen = dot ? b64url_decode(dot + 1, strlen(dot + 1), mac, sizeof mac) : -1;
    if (plen < 0 || mlen != 20) {
        snprintf(err, errlen, "malformed grant: expected base64url(payload).base64url(mac)");
        return 401;
    }
    hmac_sha1(secret, slen, payload, (size_t)plen, want);
    if (!mac_equal(mac, want, 20)) {
        snprintf(err, errlen, "invalid grant signature");
        return 401;
    }
    payload[plen] = 0;
    if (memchr(payload, 0, (size_t)plen)) {
        snprintf(err, errlen, "malformed grant payload");
        return 401;
    }
    ws_params gp;
    if (params_parse((const char *)payload, (size_t)plen, &gp, perr, sizeof perr)) {
        snprintf(err, errlen, "malformed grant payload: %s", perr);
        return 401;
    }
    if (payload_exp((const char *)payload, exp) || !gp.query) {
        params_free(&gp);
        snprintf(err, errlen, "malformed grant payload: needs exp and query");
        return 401;
    }
    if (*exp <= now) {
        params_free(&gp);
        snprintf(err, errlen, "grant expired");
        return 401;
    }
    spec *gs = spec_parse(gp.query, gp.filters, gp.nfilters, perr, sizeof perr);
    params_free(&gp);
    if (!gs) {
        snprintf(err, errlen, "malformed grant query: %s", perr);
        return 401;
    }
    const char *why = NULL;
    if ((sp->types & ~gs->types) != 0)
        why = "change types";
    else if (strcmp(sp->schema, gs->schema) || strcmp(sp->table, gs->table))
        why = "table";
    for (unsigned i = 0; !why && i < gs->nfilters; i++) {
        unsigned j;
        for (j = 0; j < sp->nfilters; j++)
            if (!strcmp(gs->filters[i].text, sp->filters[j].text))
                break;
        if (j == sp->nfilters)
            why = "filters (every filter of the grant must be in the request)";
    }
    free(gs);
    if (why) {
        snprintf(err, errlen, "the request asks for more than the grant allows: %s", why);
        return 403;
    }
    return 0;
}
