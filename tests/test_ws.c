/* test_ws.c -- ws.c against RFC 6455: the handshake key, frame encoding,
 * close codes, UTF-8 validation and the client-frame decoder.  Every
 * decoder case is fed whole and in chunks of 1, 2, 3 and 5 bytes and must
 * give the same events. */
#include <stdint.h>

#include "t.h"
#include "pgcdc.h"

void test_ws(void);

/* ---- building client frames ------------------------------------------ */

typedef struct fbuf {
    uint8_t b[140000];
    size_t n;
} fbuf;

static fbuf fb;
static const uint8_t mkey[4] = { 0x37, 0xfa, 0x21, 0x3d };

/* Header with length form: 0 = shortest, 2 = 16-bit, 8 = 64-bit. */
static void put_hdr(fbuf *f, uint8_t b0, uint64_t len, int masked, int form)
{
    uint8_t m = masked ? 0x80 : 0;

    if (form == 0)
        form = len <= 125 ? 1 : len <= 0xFFFF ? 2 : 8;
    f->b[f->n++] = b0;
    if (form == 1) {
        f->b[f->n++] = (uint8_t)(m | len);
    } else if (form == 2) {
        f->b[f->n++] = m | 126;
        f->b[f->n++] = (uint8_t)(len >> 8);
        f->b[f->n++] = (uint8_t)len;
    } else {
        f->b[f->n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            f->b[f->n++] = (uint8_t)(len >> (8 * i));
    }
    if (masked) {
        memcpy(f->b + f->n, mkey, 4);
        f->n += 4;
    }
}

/* A masked frame with its payload. */
static void put_frame(fbuf *f, uint8_t b0, const void *pl, size_t n)
{
    const uint8_t *s = pl;
    put_hdr(f, b0, n, 1, 0);
    for (size_t i = 0; i < n; i++)
        f->b[f->n++] = s[i] ^ mkey[i & 3];
}

/* A masked frame of n filler bytes ('a', valid UTF-8). */
static void put_fill(fbuf *f, uint8_t b0, size_t n)
{
    put_hdr(f, b0, n, 1, 0);
    for (size_t i = 0; i < n; i++)
        f->b[f->n++] = 'a' ^ mkey[i & 3];
}

static void put_close(fbuf *f, unsigned code, const char *reason, size_t rlen)
{
    uint8_t pl[125];
    pl[0] = (uint8_t)(code >> 8);
    pl[1] = (uint8_t)code;
    memcpy(pl + 2, reason, rlen);
    put_frame(f, 0x88, pl, 2 + rlen);
}

static fbuf *fresh(void)
{
    fb.n = 0;
    return &fb;
}

/* ---- running the decoder ---------------------------------------------- */

static uint8_t work[sizeof fb.b];
static char evs[512];
static uint8_t last_ctl[125];
static size_t last_ctl_len;

/* Feeds in[0..n) in chunks of step bytes (0: all at once), continuing after
 * each event as a caller would, and returns the events as text: M (message),
 * P (ping), O (pong), C<code> (close), E<code> (error). */
static const char *events(const uint8_t *in, size_t n, size_t step)
{
    ws_parser p;
    size_t off = 0, o = 0;

    memcpy(work, in, n);
    ws_parser_init(&p);
    evs[0] = '\0';
    while (off < n) {
        size_t chunk = step && step < n - off ? step : n - off, pos = 0;
        while (pos < chunk) {
            size_t used = (size_t)-1;
            unsigned code = 0;
            int ev = ws_parse(&p, work + off + pos, chunk - pos, &used, &code);
            CHECK(used <= chunk - pos);
            if (used > chunk - pos)
                return "used too much";
            if (ev == WS_EV_NONE) {
                CHECK(used == chunk - pos);
                break;
            }
            CHECK(used > 0);
            pos += used;
            if (ev == WS_EV_PING || ev == WS_EV_PONG || ev == WS_EV_CLOSE) {
                last_ctl_len = p.ctl_len;
                memcpy(last_ctl, p.ctl, p.ctl_len);
            }
            o += (size_t)snprintf(evs + o, sizeof evs - o, "%s%s", o ? " " : "",
                ev == WS_EV_MESSAGE ? "M" : ev == WS_EV_PING ? "P" :
                ev == WS_EV_PONG ? "O" : ev == WS_EV_CLOSE ? "C" :
                ev == WS_EV_ERROR ? "E" : "?");
            if (ev == WS_EV_CLOSE || ev == WS_EV_ERROR)
                o += (size_t)snprintf(evs + o, sizeof evs - o, "%u", code);
            if (ev == WS_EV_ERROR || o >= sizeof evs - 16)
                return evs;
            if (used == 0)
                return "no progress";
        }
        off += chunk;
    }
    return evs;
}

/* Same events whatever the chunking? */
static int ev_is(const fbuf *f, const char *want)
{
    static const size_t steps[] = { 0, 1, 2, 3, 5 };
    int ok = 1;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const char *got = events(f->b, f->n, steps[i]);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "  step %zu: events \"%s\", expected \"%s\"\n",
                    steps[i], got, want);
            ok = 0;
        }
    }
    return ok;
}

/* ---- UTF-8 table ------------------------------------------------------ */

static const char *const utf8_valid[] = {
    "A", "\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xe1\x80\x80",
    "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80",
    "\xf1\x80\x80\x80", "\xf3\xbf\xbf\xbf", "\xf4\x8f\xbf\xbf",
    "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",     /* kosme */
    "a\xe2\x82\xac" "b\xf0\x9f\x98\x80" "c",
};

/* Invalid sequences, with the index of the first byte that makes them so:
 * the validator must fail exactly there, not before and not after. */
static const struct { const char *s; size_t bad; } utf8_invalid[] = {
    { "\xc0\xaf", 0 },             /* overlong '/' */
    { "\xc1\xbf", 0 },
    { "\xe0\x80\xaf", 1 },         /* overlong, 3 bytes */
    { "\xe0\x9f\xbf", 1 },
    { "\xed\xa0\x80", 1 },         /* surrogate U+D800 */
    { "\xed\xbf\xbf", 1 },         /* surrogate U+DFFF */
    { "\xf0\x8f\xbf\xbf", 1 },     /* overlong, 4 bytes */
    { "\xf4\x90\x80\x80", 1 },     /* U+110000 */
    { "\xf5\x80\x80\x80", 0 },
    { "\xf8\x88\x80\x80\x80", 0 },
    { "\x80", 0 }, { "\xbf", 0 },     /* stray continuation */
    { "\xfe", 0 }, { "\xff", 0 },
    { "\xc2\x41", 1 },              /* lead without continuation */
    { "\xe1\x80\x41", 2 },
    { "\xf0\x90\x80\x41", 3 },
    { "\xe2\x82\xac\xac", 3 },     /* one continuation too many */
    { "ok\x80", 2 },
};

/* Valid prefixes that a message must not end with. */
static const char *const utf8_truncated[] = {
    "\xc2", "\xe1\x80", "\xe0\xa0", "\xf0\x90\x80", "\xf4\x8f", "ok\xe2\x82",
};

void test_ws(void)
{
    TEST("ws accept key") {
        char out[WS_ACCEPT_LEN + 1];
        memset(out, 'x', sizeof out);
        CHECK_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
        CHECK_MEM(out, strlen(out), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        CHECK_EQ(out[WS_ACCEPT_LEN], '\0');
        /* 16 zero bytes */
        CHECK_EQ(ws_accept_key("AAAAAAAAAAAAAAAAAAAAAA==", 24, out), 0);
        CHECK_EQ(strlen(out), WS_ACCEPT_LEN);
    }

    TEST("ws accept key rejects bad keys") {
        char out[WS_ACCEPT_LEN + 1];
        CHECK_EQ(ws_accept_key("", 0, out), -1);
        CHECK_EQ(ws_accept_key("not base64 at all!!!!!!!", 24, out), -1);
        CHECK_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", 22, out), -1);
        CHECK_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 23, out), -1);
        CHECK_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25jZR==", 24, out), -1);
        CHECK_EQ(ws_accept_key(" dGhlIHNhbXBsZSBub25jZQ=", 24, out), -1);
        CHECK_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==\0", 25, out), -1);
        /* 15 bytes, 17 bytes, 18 bytes */
        CHECK_EQ(ws_accept_key("AAAAAAAAAAAAAAAAAAAA", 20, out), -1);
        CHECK_EQ(ws_accept_key("AAAAAAAAAAAAAAAAAAAAAAA=", 24, out), -1);
        CHECK_EQ(ws_accept_key("AAAAAAAAAAAAAAAAAAAAAAAA", 24, out), -1);
        CHECK_EQ(ws_accept_key("AAAAAAAAAAAAAAAAAAAAAAAAAAA=", 28, out), -1);
        /* url alphabet is not the standard one */
        CHECK_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25j-_==", 24, out), -1);
    }

    TEST("ws frame header lengths") {
        uint8_t h[10];
        CHECK_EQ(ws_frame_header(h, WS_OP_TEXT, 0), 2);
        CHECK(h[0] == 0x81 && h[1] == 0x00);
        CHECK_EQ(ws_frame_header(h, WS_OP_TEXT, 125), 2);
        CHECK(h[0] == 0x81 && h[1] == 125);
        CHECK_EQ(ws_frame_header(h, WS_OP_TEXT, 126), 4);
        CHECK(memcmp(h, "\x81\x7e\x00\x7e", 4) == 0);
        CHECK_EQ(ws_frame_header(h, WS_OP_BINARY, 65535), 4);
        CHECK(memcmp(h, "\x82\x7e\xff\xff", 4) == 0);
        CHECK_EQ(ws_frame_header(h, WS_OP_TEXT, 65536), 10);
        CHECK(memcmp(h, "\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10) == 0);
        CHECK_EQ(ws_frame_header(h, WS_OP_TEXT, 0x0102030405060708ull), 10);
        CHECK(memcmp(h, "\x81\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10) == 0);
        CHECK_EQ(ws_frame_header(h, WS_OP_PING, 5), 2);
        CHECK(h[0] == 0x89 && h[1] == 5);
        CHECK_EQ(ws_frame_header(h, WS_OP_PONG, 0), 2);
        CHECK(h[0] == 0x8a && h[1] == 0);
    }

    TEST("ws close frame") {
        uint8_t f[129];
        char longr[200];
        CHECK_EQ(ws_close_frame(f, 0, "ignored"), 2);
        CHECK(f[0] == 0x88 && f[1] == 0);
        CHECK_EQ(ws_close_frame(f, 1000, NULL), 4);
        CHECK(memcmp(f, "\x88\x02\x03\xe8", 4) == 0);
        CHECK_EQ(ws_close_frame(f, 1013, "slow consumer"), 17);
        CHECK(memcmp(f, "\x88\x0f\x03\xf5slow consumer", 17) == 0);
        memset(longr, 'r', sizeof longr - 1);
        longr[sizeof longr - 1] = '\0';
        CHECK_EQ(ws_close_frame(f, 1001, longr), 127);
        CHECK(f[1] == 125 && f[126] == 'r');
        /* exactly 123 fits whole */
        longr[123] = '\0';
        CHECK_EQ(ws_close_frame(f, 1001, longr), 127);
        longr[123] = 'r';
        /* truncation never splits a code point: "\xe2\x82\xac" at 122 */
        memcpy(longr + 122, "\xe2\x82\xac", 3);
        CHECK_EQ(ws_close_frame(f, 1008, longr), 4 + 122);
        CHECK_EQ(f[1], 124);
        CHECK_EQ(ws_utf8_step(0, f + 4, 122), 0);
        /* and the frames it writes are valid to its own decoder */
        {
            fbuf *b = fresh();
            size_t n = ws_close_frame(f, 1008, longr);
            put_frame(b, f[0], f + 2, n - 2);
            CHECK(ev_is(b, "C1008"));
        }
    }

    TEST("ws close codes") {
        static const unsigned ok[] = { 1000, 1001, 1002, 1003, 1007, 1008,
            1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999 };
        static const unsigned bad[] = { 0, 1, 999, 1004, 1005, 1006, 1015,
            1016, 1100, 2000, 2999, 5000, 65535, 100000 };
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
            CHECK(ws_close_code_valid(ok[i]));
            fbuf *b = fresh();
            char want[16];
            put_close(b, ok[i], "", 0);
            snprintf(want, sizeof want, "C%u", ok[i]);
            CHECK(ev_is(b, want));
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            CHECK(!ws_close_code_valid(bad[i]));
            if (bad[i] > 65535)
                continue;
            fbuf *b = fresh();
            put_close(b, bad[i], "", 0);
            CHECK(ev_is(b, "E1002"));
        }
    }

    TEST("ws RFC 6455 5.7 examples") {
        static const uint8_t masked[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                          0x7f, 0x9f, 0x4d, 0x51, 0x58 };
        static const uint8_t unmasked[] = { 0x81, 0x05, 'H', 'e', 'l', 'l', 'o' };
        fbuf *b = fresh();
        ws_parser p;
        size_t used;
        unsigned code;

        memcpy(b->b, masked, sizeof masked);
        b->n = sizeof masked;
        CHECK(ev_is(b, "M"));
        /* unmasked in place */
        CHECK(memcmp(work + 6, "Hello", 5) == 0);
        ws_parser_init(&p);
        memcpy(work, masked, sizeof masked);
        CHECK_EQ(ws_parse(&p, work, sizeof masked, &used, &code), WS_EV_MESSAGE);
        CHECK_EQ(used, sizeof masked);

        /* the server must refuse an unmasked client frame */
        b = fresh();
        memcpy(b->b, unmasked, sizeof unmasked);
        b->n = sizeof unmasked;
        CHECK(ev_is(b, "E1002"));

        /* fragmented "Hel" + "lo" */
        b = fresh();
        put_frame(b, 0x01, "Hel", 3);
        put_frame(b, 0x80, "lo", 2);
        CHECK(ev_is(b, "M"));

        /* ping "Hello", and the pong answering it */
        b = fresh();
        put_frame(b, 0x89, "Hello", 5);
        CHECK(ev_is(b, "P"));
        CHECK_MEM(last_ctl, last_ctl_len, "Hello");
        b = fresh();
        put_frame(b, 0x8a, "Hello", 5);
        CHECK(ev_is(b, "O"));
        CHECK_MEM(last_ctl, last_ctl_len, "Hello");

        /* 256 bytes (16-bit length) and 64 KiB (64-bit length) binary */
        b = fresh();
        put_fill(b, 0x82, 256);
        CHECK_EQ(b->b[1], 0xfe);
        put_fill(b, 0x82, 65536);
        CHECK(ev_is(b, "M M"));
    }

    TEST("ws decoder event sequencing and consumption") {
        fbuf *b = fresh();
        ws_parser p;
        size_t used, first;
        unsigned code;

        put_frame(b, 0x81, "Hello", 5);
        first = b->n;
        put_frame(b, 0x89, "", 0);
        put_frame(b, 0x81, "", 0);
        put_frame(b, 0x8a, "x", 1);
        put_frame(b, 0x02, "ab", 2);        /* fragmented binary ... */
        put_frame(b, 0x89, "mid", 3);       /* ... with a ping inside ... */
        put_frame(b, 0x8a, "", 0);          /* ... and a pong ... */
        put_frame(b, 0x00, "cd", 2);
        put_frame(b, 0x00, "", 0);
        put_frame(b, 0x80, "ef", 2);        /* ... ends here */
        put_close(b, 1000, "bye", 3);
        CHECK(ev_is(b, "M P M O P O M C1000"));
        CHECK_MEM(last_ctl + 2, last_ctl_len - 2, "bye");

        /* the first call stops right after the first frame */
        memcpy(work, b->b, b->n);
        ws_parser_init(&p);
        CHECK_EQ(ws_parse(&p, work, b->n, &used, &code), WS_EV_MESSAGE);
        CHECK_EQ(used, first);
        CHECK_EQ(ws_parse(&p, work + first, b->n - first, &used, &code), WS_EV_PING);
        CHECK_EQ(used, 6);
        CHECK_EQ(ws_parse(&p, work, 0, &used, &code), WS_EV_NONE);
        CHECK_EQ(used, 0);

        /* empty close: 1005 */
        b = fresh();
        put_frame(b, 0x88, "", 0);
        CHECK(ev_is(b, "C1005"));
        CHECK_EQ(last_ctl_len, 0);

        /* largest control payload */
        b = fresh();
        put_fill(b, 0x89, 125);
        CHECK(ev_is(b, "P"));
        CHECK_EQ(last_ctl_len, 125);

        /* a non-minimal length encoding is tolerated */
        b = fresh();
        put_hdr(b, 0x81, 2, 1, 8);
        b->b[b->n++] = 'h' ^ mkey[0];
        b->b[b->n++] = 'i' ^ mkey[1];
        put_hdr(b, 0x82, 0, 1, 2);
        CHECK(ev_is(b, "M M"));

        /* a close reason in UTF-8 */
        b = fresh();
        put_close(b, 4001, "\xc3\xa9t\xc3\xa9", 5);
        CHECK(ev_is(b, "C4001"));
        CHECK_MEM(last_ctl + 2, last_ctl_len - 2, "\xc3\xa9t\xc3\xa9");
    }

    TEST("ws decoder: unmasked, RSV, reserved opcodes -> 1002") {
        fbuf *b = fresh();
        put_hdr(b, 0x81, 5, 0, 0);
        memcpy(b->b + b->n, "Hello", 5);
        b->n += 5;
        CHECK(ev_is(b, "E1002"));
        b = fresh();                        /* refused at the header */
        put_hdr(b, 0x82, 3, 0, 0);
        CHECK(ev_is(b, "E1002"));
        b = fresh();
        put_hdr(b, 0x89, 0, 0, 0);
        CHECK(ev_is(b, "E1002"));
        b = fresh();                        /* after a good frame */
        put_frame(b, 0x81, "ok", 2);
        put_hdr(b, 0x81, 0, 0, 0);
        CHECK(ev_is(b, "M E1002"));

        for (unsigned rsv = 0x10; rsv <= 0x70; rsv += 0x10) {
            b = fresh();
            put_frame(b, (uint8_t)(0x81 | rsv), "x", 1);
            CHECK(ev_is(b, "E1002"));
            b = fresh();
            put_frame(b, (uint8_t)(0x89 | rsv), "", 0);
            CHECK(ev_is(b, "E1002"));
        }
        for (unsigned op = 0; op < 16; op++) {
            if (op <= 2 || (op >= 8 && op <= 10))
                continue;
            b = fresh();
            put_frame(b, (uint8_t)(0x80 | op), "x", 1);
            CHECK(ev_is(b, "E1002"));
            b = fresh();
            put_frame(b, (uint8_t)op, "x", 1);
            CHECK(ev_is(b, "E1002"));
            b = fresh();                    /* a reserved opcode mid-message */
            put_frame(b, 0x01, "a", 1);
            put_frame(b, (uint8_t)(0x80 | op), "x", 1);
            CHECK(ev_is(b, "E1002"));
        }
    }

    TEST("ws decoder: bad control frames -> 1002") {
        static const uint8_t ctl_ops[] = { 0x8, 0x9, 0xa };
        for (size_t i = 0; i < 3; i++) {
            fbuf *b = fresh();              /* fragmented control */
            put_frame(b, ctl_ops[i], "", 0);
            CHECK(ev_is(b, "E1002"));
            b = fresh();                    /* 126 bytes */
            put_fill(b, (uint8_t)(0x80 | ctl_ops[i]), 126);
            CHECK(ev_is(b, "E1002"));
            b = fresh();                    /* 64-bit form, refused at once */
            put_hdr(b, (uint8_t)(0x80 | ctl_ops[i]), 1000000, 1, 8);
            CHECK(ev_is(b, "E1002"));
            b = fresh();                    /* small length in the 16-bit form */
            put_hdr(b, (uint8_t)(0x80 | ctl_ops[i]), 5, 1, 2);
            CHECK(ev_is(b, "E1002"));
        }
    }

    TEST("ws decoder: continuation order -> 1002") {
        fbuf *b = fresh();
        put_frame(b, 0x80, "x", 1);         /* continuation, no message */
        CHECK(ev_is(b, "E1002"));
        b = fresh();
        put_frame(b, 0x00, "x", 1);
        CHECK(ev_is(b, "E1002"));
        b = fresh();                        /* after a finished message */
        put_frame(b, 0x81, "a", 1);
        put_frame(b, 0x80, "b", 1);
        CHECK(ev_is(b, "M E1002"));
        b = fresh();                        /* new text inside a message */
        put_frame(b, 0x01, "a", 1);
        put_frame(b, 0x81, "b", 1);
        CHECK(ev_is(b, "E1002"));
        b = fresh();                        /* new binary inside a message */
        put_frame(b, 0x01, "a", 1);
        put_frame(b, 0x89, "", 0);
        put_frame(b, 0x82, "b", 1);
        CHECK(ev_is(b, "P E1002"));
        b = fresh();                        /* unfinished new frame too */
        put_frame(b, 0x02, "a", 1);
        put_frame(b, 0x02, "b", 1);
        CHECK(ev_is(b, "E1002"));
    }

    TEST("ws decoder: 64-bit length with top bit set -> 1002") {
        fbuf *b = fresh();
        put_hdr(b, 0x82, 0x8000000000000000ull, 1, 8);
        CHECK(ev_is(b, "E1002"));
        b = fresh();
        put_hdr(b, 0x82, 0xffffffffffffffffull, 1, 8);
        CHECK(ev_is(b, "E1002"));
        b = fresh();                        /* even before the mask key */
        put_hdr(b, 0x81, 0x8000000000000001ull, 1, 8);
        b->n -= 4;
        CHECK(ev_is(b, "E1002"));
    }

    TEST("ws decoder: message over 64 KiB -> 1009 at the header") {
        fbuf *b = fresh();
        put_fill(b, 0x82, WS_MAX_MESSAGE);
        put_fill(b, 0x81, WS_MAX_MESSAGE);
        CHECK(ev_is(b, "M M"));
        b = fresh();                        /* header alone is enough */
        put_hdr(b, 0x82, WS_MAX_MESSAGE + 1, 1, 0);
        CHECK(ev_is(b, "E1009"));
        b = fresh();
        put_hdr(b, 0x81, WS_MAX_MESSAGE + 1, 1, 0);
        b->n -= 4;                          /* not even the mask key */
        CHECK(ev_is(b, "E1009"));
        b = fresh();
        put_hdr(b, 0x82, 0x7fffffffffffffffull, 1, 8);
        CHECK(ev_is(b, "E1009"));
        b = fresh();                        /* fragments add up */
        put_fill(b, 0x01, 40000);
        put_frame(b, 0x89, "p", 1);
        put_fill(b, 0x00, WS_MAX_MESSAGE - 40000);
        put_hdr(b, 0x80, 1, 1, 0);
        CHECK(ev_is(b, "P E1009"));
        b = fresh();                        /* ... and reset per message */
        put_fill(b, 0x02, 40000);
        put_fill(b, 0x80, 20000);
        put_fill(b, 0x02, 40000);
        put_fill(b, 0x80, 20000);
        CHECK(ev_is(b, "M M"));
        b = fresh();                        /* huge non-final fragment */
        put_fill(b, 0x02, 100);
        put_hdr(b, 0x00, 0xffffffffull, 1, 8);
        CHECK(ev_is(b, "E1009"));
    }

    TEST("ws decoder: bad close payloads") {
        fbuf *b = fresh();
        put_frame(b, 0x88, "\x03", 1);      /* 1-byte payload */
        CHECK(ev_is(b, "E1002"));
        b = fresh();                        /* even after a 2-byte ping */
        put_frame(b, 0x89, "\x03\xe8", 2);
        put_frame(b, 0x88, "\x03", 1);
        CHECK(ev_is(b, "P E1002"));
        b = fresh();
        put_close(b, 1004, "x", 1);
        CHECK(ev_is(b, "E1002"));
        b = fresh();
        put_close(b, 1000, "\xc0\xaf", 2);   /* reason not UTF-8 */
        CHECK(ev_is(b, "E1007"));
        b = fresh();
        put_close(b, 1000, "ab\xe2\x82", 4); /* reason cut mid code point */
        CHECK(ev_is(b, "E1007"));
        b = fresh();
        put_close(b, 1000, "\xed\xa0\x80", 3);
        CHECK(ev_is(b, "E1007"));
        b = fresh();                         /* mid-message close is fine */
        put_frame(b, 0x01, "\xe2\x82", 2);
        put_close(b, 1001, "", 0);
        CHECK(ev_is(b, "C1001"));
    }

    TEST("ws utf8 step") {
        uint32_t s;
        for (size_t i = 0; i < sizeof utf8_valid / sizeof utf8_valid[0]; i++) {
            const uint8_t *v = (const uint8_t *)utf8_valid[i];
            size_t n = strlen(utf8_valid[i]);
            CHECK_EQ(ws_utf8_step(0, v, n), 0);
            /* one byte at a time: inside a sequence until its last byte */
            s = 0;
            for (size_t k = 0; k < n; k++) {
                s = ws_utf8_step(s, v + k, 1);
                CHECK(s != 1);
            }
            CHECK_EQ(s, 0);
        }
        for (size_t i = 0; i < sizeof utf8_invalid / sizeof utf8_invalid[0]; i++) {
            const uint8_t *v = (const uint8_t *)utf8_invalid[i].s;
            size_t n = strlen(utf8_invalid[i].s), bad = utf8_invalid[i].bad;
            CHECK_EQ(ws_utf8_step(0, v, n), 1);
            /* fails at the bad byte, not before */
            s = ws_utf8_step(0, v, bad);
            CHECK(s != 1);
            CHECK_EQ(ws_utf8_step(s, v + bad, 1), 1);
        }
        for (size_t i = 0; i < sizeof utf8_truncated / sizeof utf8_truncated[0]; i++) {
            s = ws_utf8_step(0, (const uint8_t *)utf8_truncated[i],
                             strlen(utf8_truncated[i]));
            CHECK(s != 0 && s != 1);
        }
        /* rejection is final */
        CHECK_EQ(ws_utf8_step(1, (const uint8_t *)"abc", 3), 1);
        CHECK_EQ(ws_utf8_step(0, (const uint8_t *)"\xc0\xaf" "abc", 5), 1);
        CHECK_EQ(ws_utf8_step(0, NULL, 0), 0);
        /* every code point from U+0000 to U+10FFFF, surrogates excluded */
        {
            uint8_t e[4];
            int bad = 0;
            for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
                size_t n;
                if (cp < 0x80) {
                    e[0] = (uint8_t)cp; n = 1;
                } else if (cp < 0x800) {
                    e[0] = (uint8_t)(0xC0 | cp >> 6);
                    e[1] = (uint8_t)(0x80 | (cp & 0x3F)); n = 2;
                } else if (cp < 0x10000) {
                    e[0] = (uint8_t)(0xE0 | cp >> 12);
                    e[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                    e[2] = (uint8_t)(0x80 | (cp & 0x3F)); n = 3;
                } else {
                    e[0] = (uint8_t)(0xF0 | cp >> 18);
                    e[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                    e[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                    e[3] = (uint8_t)(0x80 | (cp & 0x3F)); n = 4;
                }
                int surrogate = cp >= 0xD800 && cp <= 0xDFFF;
                if ((ws_utf8_step(0, e, n) == 0) == surrogate)
                    bad++;
            }
            CHECK_EQ(bad, 0);
        }
    }

    TEST("ws decoder: UTF-8 in text messages") {
        for (size_t i = 0; i < sizeof utf8_valid / sizeof utf8_valid[0]; i++) {
            const char *v = utf8_valid[i];
            size_t n = strlen(v);
            fbuf *b = fresh();
            put_frame(b, 0x81, v, n);
            CHECK(ev_is(b, "M"));
            /* split across two fragments at every point, with and
             * without a ping in between */
            for (size_t k = 0; k <= n; k++) {
                b = fresh();
                put_frame(b, 0x01, v, k);
                put_frame(b, 0x80, v + k, n - k);
                CHECK(ev_is(b, "M"));
                b = fresh();
                put_frame(b, 0x01, v, k);
                put_frame(b, 0x89, "", 0);
                put_frame(b, 0x80, v + k, n - k);
                CHECK(ev_is(b, "P M"));
            }
            /* binary messages are not UTF-8 checked */
            b = fresh();
            put_frame(b, 0x82, "\xff\xc0\xaf", 3);
            CHECK(ev_is(b, "M"));
        }
        for (size_t i = 0; i < sizeof utf8_invalid / sizeof utf8_invalid[0]; i++) {
            const char *v = utf8_invalid[i].s;
            size_t n = strlen(v), bad = utf8_invalid[i].bad;
            fbuf *b = fresh();
            put_frame(b, 0x81, v, n);
            CHECK(ev_is(b, "E1007"));
            /* fails fast: in a non-final fragment ending at the bad byte,
             * with nothing after */
            b = fresh();
            put_frame(b, 0x01, v, bad + 1);
            CHECK(ev_is(b, "E1007"));
            b = fresh();                    /* but not a byte earlier */
            put_frame(b, 0x01, v, bad);
            CHECK(ev_is(b, ""));
            /* ... or mid-frame, before the rest of the payload */
            b = fresh();
            put_hdr(b, 0x81, n + 50, 1, 0);
            for (size_t k = 0; k <= bad; k++)
                b->b[b->n++] = (uint8_t)v[k] ^ mkey[k & 3];
            CHECK(ev_is(b, "E1007"));
            /* ... split across fragments too */
            b = fresh();
            put_frame(b, 0x01, v, bad);
            put_frame(b, 0x00, v + bad, n - bad);
            CHECK(ev_is(b, "E1007"));
        }
        for (size_t i = 0; i < sizeof utf8_truncated / sizeof utf8_truncated[0]; i++) {
            const char *v = utf8_truncated[i];
            size_t n = strlen(v);
            fbuf *b = fresh();
            put_frame(b, 0x81, v, n);
            CHECK(ev_is(b, "E1007"));
            b = fresh();                    /* fine until the message ends */
            put_frame(b, 0x01, v, n);
            CHECK(ev_is(b, ""));
            put_frame(b, 0x89, "", 0);
            CHECK(ev_is(b, "P"));
            put_frame(b, 0x80, "", 0);
            CHECK(ev_is(b, "P E1007"));
        }
    }
}
