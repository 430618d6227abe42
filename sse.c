/* sse.c -- Server-Sent Events framing (docs/protocol.md, Server-Sent Events).
 *
 * An event is "id: <pos>\n" (when the message carries a pos), then the
 * message as "data: " lines, then an empty line.  pgcdc's messages are
 * one-line JSON, but wal2json may be told to pretty-print, so every line
 * break of the payload starts another data line: a client joins them with
 * "\n" and gets the payload back byte for byte.  No allocation, no I/O.
 */
#include "pgcdc.h"

#include <string.h>

/* The pos a message starts with ({"pos":"X/X:n",...}), or an empty slice. */
static slice msg_pos(const char *p, size_t n)
{
    static const char pfx[] = "{\"pos\":\"";
    size_t k = sizeof pfx - 1;
    if (n <= k || memcmp(p, pfx, k))
        return (slice){ p, 0 };
    for (size_t i = k; i < n && i < k + 40; i++) {
        if (p[i] == '"')
            return (slice){ p + k, i - k };
        if (p[i] == '\\' || (unsigned char)p[i] < 0x20)
            break;
    }
    return (slice){ p, 0 };
}

size_t sse_event_len(const char *payload, size_t n)
{
    slice id = msg_pos(payload, n);
    size_t len = (id.n ? 4 + id.n + 1 : 0) + 6 + n + 2;
    for (size_t i = 0; i < n; i++) {
        if (payload[i] == '\r' && i + 1 < n && payload[i + 1] == '\n')
            len--;      /* \r\n is written as \n */
        else if (payload[i] == '\n' || payload[i] == '\r')
            len += 6;   /* "data: " of the next line */
    }
    return len;
}

size_t sse_event(char *out, const char *payload, size_t n)
{
    slice id = msg_pos(payload, n);
    char *o = out;
    if (id.n) {
        memcpy(o, "id: ", 4);
        memcpy(o + 4, id.p, id.n);
        o += 4 + id.n;
        *o++ = '\n';
    }
    memcpy(o, "data: ", 6);
    o += 6;
    for (size_t i = 0; i < n; i++) {
        char ch = payload[i];
        if (ch == '\r' && i + 1 < n && payload[i + 1] == '\n')
            continue;   /* \r\n: one break, written as \n below */
        if (ch == '\n' || ch == '\r') {
            memcpy(o, "\ndata: ", 7);
            o += 7;
        } else {
            *o++ = ch;
        }
    }
    *o++ = '\n';
    *o++ = '\n';
    return (size_t)(o - out);
}

size_t sse_close_event(char out[SSE_CLOSE_MAX], const char *reason)
{
    char *o = out;
    memcpy(o, "event: close\ndata: ", 19);
    o += 19;
    for (size_t i = 0; reason && reason[i] && i < 200; i++)
        *o++ = reason[i] == '\n' || reason[i] == '\r' ? ' ' : reason[i];
    *o++ = '\n';
    *o++ = '\n';
    return (size_t)(o - out);
}
