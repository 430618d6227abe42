/* fuzz_ws.c -- libFuzzer target for ws.c (and the base64 it relies on).
 *
 * Input: the first 4 bytes pick the chunk sizes (cycled) in which the rest
 * is fed to ws_parse; the rest is a stream of client frames.  Besides
 * memory safety it checks the decoder's contract: it never consumes more
 * than it is given, it consumes everything when it reports nothing, and the
 * events do not depend on how the input is chunked.  The same bytes go to
 * ws_accept_key, the UTF-8 validator (whole against byte by byte) and the
 * strict base64 decoders (whatever they accept must re-encode to itself).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENTS 4096

typedef struct outcome {
    int ev[MAX_EVENTS];
    unsigned code[MAX_EVENTS];
    uint8_t ctl_len[MAX_EVENTS];
    size_t n;
} outcome;

static outcome whole, chunked;

static void require(int cond)
{
    if (!cond)
        abort();
}

/* Runs the decoder over a private copy of in[0..n) in chunks of sizes[]. */
static void run(const uint8_t *in, size_t n, const size_t sizes[4],
                outcome *o)
{
    uint8_t *buf = malloc(n ? n : 1);
    ws_parser p;
    size_t off = 0, k = 0;

    require(buf != NULL);
    if (n)
        memcpy(buf, in, n);
    ws_parser_init(&p);
    o->n = 0;
    while (off < n && o->n < MAX_EVENTS) {
        size_t chunk = sizes[k++ & 3], pos = 0;
        if (chunk > n - off)
            chunk = n - off;
        while (pos < chunk && o->n < MAX_EVENTS) {
            size_t used = (size_t)-1;
            unsigned code = 0;
            int ev = ws_parse(&p, buf + off + pos, chunk - pos, &used, &code);
            require(used <= chunk - pos);
            pos += used;
            if (ev == WS_EV_NONE) {
                require(pos == chunk);
                break;
            }
            require(used > 0);
            require(ev > WS_EV_NONE && ev <= WS_EV_ERROR);
            require(p.ctl_len <= 125);
            if (ev == WS_EV_ERROR)
                require(code == 1002 || code == 1007 || code == 1009);
            if (ev == WS_EV_CLOSE) {
                require(code == 1005 || ws_close_code_valid(code));
                require(code != 1005 || p.ctl_len == 0);
                require(p.ctl_len < 2 ||
                        ws_utf8_step(0, p.ctl + 2, p.ctl_len - 2u) == 0);
            }
            o->ev[o->n] = ev;
            o->code[o->n] = ev == WS_EV_CLOSE || ev == WS_EV_ERROR ? code : 0;
            o->ctl_len[o->n] = ev == WS_EV_MESSAGE || ev == WS_EV_ERROR ? 0 : p.ctl_len;
            o->n++;
            if (ev == WS_EV_ERROR)
                goto done;
        }
        off += chunk;
    }
done:
    free(buf);
}

static void check_utf8(const uint8_t *s, size_t n)
{
    uint32_t all = ws_utf8_step(0, s, n), one = 0;
    for (size_t i = 0; i < n; i++)
        one = ws_utf8_step(one, s + i, 1);
    require(all == one);
}

/* Whatever a strict decoder accepts must be the canonical spelling. */
static void check_base64(const uint8_t *s, size_t n)
{
    uint8_t raw[96];
    char enc[132];
    long r;

    if (n > 128)
        n = 128;
    r = b64_decode((const char *)s, n, raw, sizeof raw);
    if (r >= 0) {
        require(b64_encode(raw, (size_t)r, enc, sizeof enc) == (long)n);
        require(memcmp(enc, s, n) == 0);
    }
    r = b64url_decode((const char *)s, n, raw, sizeof raw);
    if (r >= 0) {
        require(b64url_encode(raw, (size_t)r, enc, sizeof enc) == (long)n);
        require(memcmp(enc, s, n) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t all_at_once[4] = { SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX };
    size_t sizes[4];
    char accept[WS_ACCEPT_LEN + 1];

    if (size >= 24 && ws_accept_key((const char *)data, 24, accept) == 0)
        require(strlen(accept) == WS_ACCEPT_LEN);
    (void)ws_accept_key((const char *)data, size, accept);
    check_utf8(data, size);
    check_base64(data, size);

    if (size < 4)
        return 0;
    /* Small chunks mostly, a large one now and then. */
    for (int i = 0; i < 4; i++)
        sizes[i] = data[i] & 0x80 ? (size_t)(data[i] & 0x7f) * 512 + 1
                                  : (size_t)(data[i] & 0x0f) + 1;
    data += 4;
    size -= 4;
    run(data, size, all_at_once, &whole);
    run(data, size, sizes, &chunked);
    require(whole.n == chunked.n);
    for (size_t i = 0; i < whole.n; i++) {
        require(whole.ev[i] == chunked.ev[i]);
        require(whole.code[i] == chunked.code[i]);
        require(whole.ctl_len[i] == chunked.ctl_len[i]);
    }
    return 0;
}
