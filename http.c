/* http.c -- the HTTP/1.x request-head parser.
 *
 * Pure: it reads (buf, len), never writes it, never reads past it, and
 * returns slices into it.  Which requests pgcdc answers, and how, is in
 * pgcdc.c's HTTP section and docs/protocol.md, Routes.
 */
#include "pgcdc.h"

#include <ctype.h>
#include <string.h>

int http_parse(const char *b, size_t n, http_req *r)
{
    const char *end = NULL;
    size_t i;
    memset(r, 0, sizeof *r);
    for (i = 0; i + 1 < n; i++) {
        if (b[i] == '\n' && b[i + 1] == '\n') { end = b + i + 2; break; }
        if (b[i] == '\n' && b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n') { end = b + i + 3; break; }
    }
    if (!end)
        return 0;
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
        }
        p = eol + 1;
    }
    return 1;
}
