/* http.c -- the HTTP/1.x request-head parser.
 *
 * Pure: it reads (buf, len), never writes it, never reads past it, and
 * returns slices into it.  Which requests pgcdc answers, and how, is in
 * pgcdc.c's HTTP section and docs/protocol.md, Routes.
 */
#include "pgcdc.h"

#include <ctype.h>
#include <string.h>

size_t http_head_end(const char *b, size_t n, size_t *scanned)
{
    /* no empty line ends before *scanned, so one that does starts at most
     * two bytes before it ("\n\r" then "\n") */
    size_t i = *scanned > 2 ? *scanned - 2 : 0;
    for (; i + 1 < n; i++) {
        if (b[i] != '\n')
            continue;
        if (b[i + 1] == '\n')
            return i + 2;
        if (b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n')
            return i + 3;
    }
    if (n > *scanned)
        *scanned = n;
    return 0;
}

int http_parse(const char *b, size_t n, http_req *r)
{
    size_t i, scanned = 0, head = http_head_end(b, n, &scanned);
    memset(r, 0, sizeof *r);
    if (!head)
        return 0;
    const char *end = b + head;
    r->head_len = (size_t)(end - b);
    const char *p = b, *stop = end;
    /* request line */
    const char *eol = memchr(p, '\n', (size_t)(stop - p));
    size_t ln = (size_t)(eol - p);
    if (ln && p[ln - 1] == '\r')
        ln--;
    const char *sp1 = memchr(p, ' ', ln);
    if (!sp1 || sp1 == p)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', ln - (size_t)(sp1 + 1 - p));
    if (!sp2 || sp2 == sp1 + 1)
        return -1;
    r->method = (slice){ p, (size_t)(sp1 - p) };
    r->target = (slice){ sp1 + 1, (size_t)(sp2 - sp1 - 1) };
    r->version = (slice){ sp2 + 1, ln - (size_t)(sp2 + 1 - p) };
    for (i = 0; i < r->method.n; i++)
        if (!isupper((unsigned char)r->method.p[i]))
            return -1;
    if (r->version.n != 8 || memcmp(r->version.p, "HTTP/1.", 7) ||
        (r->version.p[7] != '0' && r->version.p[7] != '1'))
        return -1;
    if (r->target.p[0] != '/')
        return -1;
    for (i = 0; i < r->target.n; i++)
        if ((unsigned char)r->target.p[i] <= ' ' || r->target.p[i] == 0x7f)
            return -1;
    const char *q = memchr(r->target.p, '?', r->target.n);
    r->path = (slice){ r->target.p, q ? (size_t)(q - r->target.p) : r->target.n };
    r->query = q ? (slice){ q + 1, r->target.n - r->path.n - 1 } : (slice){ "", 0 };
    /* header lines */
    p = eol + 1;
    while (p < stop) {
        eol = memchr(p, '\n', (size_t)(stop - p));
        ln = (size_t)(eol - p);
        if (ln && p[ln - 1] == '\r')
            ln--;
        if (ln == 0)
            break;
        if (*p == ' ' || *p == '\t')
            return -1;   /* obsolete line folding */
        const char *colon = memchr(p, ':', ln);
        if (!colon || colon == p)
            return -1;
        size_t nn = (size_t)(colon - p);
        for (i = 0; i < nn; i++)
            if (!(isalnum((unsigned char)p[i]) || (p[i] && strchr("!#$%&'*+-.^_`|~", p[i]))))
                return -1;
        size_t vn = ln - nn - 1;
        const char *v = trim(colon + 1, &vn);
        if (ieq(p, nn, "upgrade")) {
            r->upgrade_any = 1;
            if (has_token(v, vn, "websocket"))
                r->upgrade_ws = 1;
        } else if (ieq(p, nn, "connection")) {
            if (has_token(v, vn, "upgrade"))
                r->conn_upgrade = 1;
        } else if (ieq(p, nn, "sec-websocket-key")) {
            r->key = (slice){ v, vn };
            r->nkey++;
        } else if (ieq(p, nn, "sec-websocket-version")) {
            r->wsver = (slice){ v, vn };
            r->nver++;
        } else if (ieq(p, nn, "origin")) {
            r->origin = (slice){ v, vn };
            r->norigin++;
        } else if (ieq(p, nn, "authorization")) {
            r->auth = (slice){ v, vn };
        } else if (ieq(p, nn, "x-forwarded-for")) {
            r->xff = (slice){ v, vn };
        } else if (ieq(p, nn, "host")) {
            r->host = (slice){ v, vn };
            r->nhost++;
        } else if (ieq(p, nn, "if-none-match")) {
            r->inm = (slice){ v, vn };
        } else if (ieq(p, nn, "last-event-id")) {
            r->leid = (slice){ v, vn };
            r->nleid++;
        }
        p = eol + 1;
    }
    return 1;
}

/* Is Origin the server's own: an http(s) origin whose scheme-less
 * host[:port] equals the Host header (case-insensitively)? */
static int same_origin(slice o, slice host)
{
    size_t k;
    if (o.n > 7 && ieq(o.p, 7, "http://"))
        k = 7;
    else if (o.n > 8 && ieq(o.p, 8, "https://"))
        k = 8;
    else
        return 0;
    if (o.n - k != host.n)
        return 0;
    for (size_t i = 0; i < host.n; i++)
        if (tolower((unsigned char)o.p[k + i]) != tolower((unsigned char)host.p[i]))
            return 0;
    return 1;
}

int http_origin_check(const http_req *r, const word_list *allowed)
{
    if (r->norigin == 0)
        return 0;
    if (r->norigin > 1)
        return -1;
    if (r->nhost == 1 && same_origin(r->origin, r->host))
        return 1;
    if (word_list_has(allowed, "*", 1) || word_list_has(allowed, r->origin.p, r->origin.n))
        return 1;
    return -1;
}
