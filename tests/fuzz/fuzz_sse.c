/* fuzz_sse.c -- libFuzzer target for sse.c.
 *
 * The input is a message payload.  Besides memory safety it checks the
 * framing's contract: sse_event writes exactly sse_event_len bytes; the
 * event ends with an empty line and has no other; an "id: " line comes
 * first exactly when the payload starts with {"pos":"<no quote, escape or
 * control byte>", holding that pos; and the data lines, joined with "\n",
 * give back the payload with its \r\n and lone \r turned into \n (what an
 * EventSource hands the page).  The close event stays one line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t len = sse_event_len(p, size);
    char *out = malloc(len + 1);
    size_t w = sse_event(out, p, size);
    require(w == len);
    require(w >= 8 && out[w - 1] == '\n' && out[w - 2] == '\n');
    for (size_t i = 0; i + 2 < w; i++)
        require(!(out[i] == '\n' && out[i + 1] == '\n'));
    /* the id line */
    const char *o = out, *end = out + w - 1;   /* end: the final empty line */
    static const char pfx[] = "{\"pos\":\"";
    size_t idn = 0;
    if (size > 8 && !memcmp(p, pfx, 8)) {
        size_t i = 8;
        while (i < size && i < 48 && p[i] != '"' && p[i] != '\\' && (unsigned char)p[i] >= 0x20)
            i++;
        if (i < size && i < 48 && p[i] == '"')
            idn = i - 8;
    }
    if (idn) {
        require(w > 4 + idn && !memcmp(o, "id: ", 4) && !memcmp(o + 4, p + 8, idn) && o[4 + idn] == '\n');
        o += 5 + idn;
    }
    /* data lines back to the payload, line breaks as \n */
    char *back = malloc(size + 1), *b = back;
    for (int first = 1; o < end; first = 0) {
        const char *nl = memchr(o, '\n', (size_t)(end - o));
        require(nl && (size_t)(nl - o) >= 6 && !memcmp(o, "data: ", 6));
        if (!first)
            *b++ = '\n';
        memcpy(b, o + 6, (size_t)(nl - o - 6));
        b += nl - o - 6;
        o = nl + 1;
    }
    size_t k = 0;
    for (size_t i = 0; i < size; i++) {
        char ch = p[i];
        if (ch == '\r' && i + 1 < size && p[i + 1] == '\n')
            continue;
        require(k < (size_t)(b - back) && back[k++] == (ch == '\r' ? '\n' : ch));
    }
    require(k == (size_t)(b - back));
    free(back);
    free(out);
    /* the close event: one data line whatever the reason */
    char reason[256], ev[SSE_CLOSE_MAX];
    size_t rn = size < sizeof reason - 1 ? size : sizeof reason - 1;
    memcpy(reason, data, rn);
    reason[rn] = 0;
    size_t cn = sse_close_event(ev, reason);
    require(cn <= SSE_CLOSE_MAX && cn >= 21 && !memcmp(ev, "event: close\ndata: ", 19));
    require(memchr(ev + 19, '\n', cn - 19) == ev + cn - 2 && ev[cn - 1] == '\n');
    return 0;
}
