/* test_base64.c -- base64 and base64url against RFC 4648, plus the strict
 * decoders' rejections and the output-capacity contract. */
#include <stdint.h>

#include "t.h"
#include "pgcdc.h"

void test_base64(void);

struct vec {
    const char *raw, *std, *url;
};

/* RFC 4648 section 10, and the same without padding for base64url. */
static const struct vec rfc4648[] = {
    { "", "", "" },
    { "f", "Zg==", "Zg" },
    { "fo", "Zm8=", "Zm8" },
    { "foo", "Zm9v", "Zm9v" },
    { "foob", "Zm9vYg==", "Zm9vYg" },
    { "fooba", "Zm9vYmE=", "Zm9vYmE" },
    { "foobar", "Zm9vYmFy", "Zm9vYmFy" },
    /* where the alphabets differ */
    { "\xfb\xff", "+/8=", "-_8" },
    { "\xff\xff\xff", "////", "____" },
    { "\xfb\xef\xbe", "++++", "----" },
    { "\x00\x00", "AAA=", "AAA" },
};

static int dec_fails(long (*dec)(const char *, size_t, uint8_t *, size_t),
                     const char *s)
{
    uint8_t out[64];
    return dec(s, strlen(s), out, sizeof out) == -1;
}

void test_base64(void)
{
    const size_t nvec = sizeof rfc4648 / sizeof rfc4648[0];

    TEST("base64 RFC 4648 vectors, both ways") {
        for (size_t i = 0; i < nvec; i++) {
            const struct vec *v = &rfc4648[i];
            size_t rl = strlen(v->raw);
            char enc[32];
            uint8_t dec[32];
            long n;
            if (i == nvec - 1)
                rl = 2;             /* raw contains NULs */
            n = b64_encode((const uint8_t *)v->raw, rl, enc, sizeof enc);
            CHECK_MEM(enc, n < 0 ? 0 : n, v->std);
            CHECK_EQ(n, (long)B64_ENCLEN(rl));
            n = b64_decode(v->std, strlen(v->std), dec, sizeof dec);
            CHECK_EQ(n, (long)rl);
            CHECK(n >= 0 && memcmp(dec, v->raw, rl) == 0);
        }
    }

    TEST("base64url vectors, both ways") {
        for (size_t i = 0; i < nvec; i++) {
            const struct vec *v = &rfc4648[i];
            size_t rl = i == nvec - 1 ? 2 : strlen(v->raw);
            char enc[32];
            uint8_t dec[32];
            long n;
            n = b64url_encode((const uint8_t *)v->raw, rl, enc, sizeof enc);
            CHECK_MEM(enc, n < 0 ? 0 : n, v->url);
            CHECK_EQ(n, (long)B64URL_ENCLEN(rl));
            n = b64url_decode(v->url, strlen(v->url), dec, sizeof dec);
            CHECK_EQ(n, (long)rl);
            CHECK(n >= 0 && memcmp(dec, v->raw, rl) == 0);
        }
    }

    TEST("base64 round trip of every length and byte") {
        uint8_t raw[70], back[70];
        char enc[100];
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (uint8_t)(i * 37 + 200);
        for (size_t n = 0; n <= sizeof raw; n++) {
            long e = b64_encode(raw, n, enc, sizeof enc);
            CHECK(e >= 0 && b64_decode(enc, (size_t)e, back, sizeof back) == (long)n);
            CHECK(memcmp(raw, back, n) == 0);
            e = b64url_encode(raw, n, enc, sizeof enc);
            CHECK(e >= 0 && b64url_decode(enc, (size_t)e, back, sizeof back) == (long)n);
            CHECK(memcmp(raw, back, n) == 0);
        }
    }

    TEST("base64 standard rejections") {
        CHECK(dec_fails(b64_decode, "Zg"));          /* unpadded */
        CHECK(dec_fails(b64_decode, "Zg="));         /* wrong length */
        CHECK(dec_fails(b64_decode, "Zm9vY"));
        CHECK(dec_fails(b64_decode, "Zg==="));
        CHECK(dec_fails(b64_decode, "Zg==Zg=="));    /* padding inside */
        CHECK(dec_fails(b64_decode, "Z=g="));
        CHECK(dec_fails(b64_decode, "===="));
        CHECK(dec_fails(b64_decode, "A==="));
        CHECK(dec_fails(b64_decode, "=AAA"));
        CHECK(dec_fails(b64_decode, "Zh=="));        /* non-zero leftover bits */
        CHECK(dec_fails(b64_decode, "Zm9="));
        CHECK(dec_fails(b64_decode, "Zm9v "));       /* whitespace */
        CHECK(dec_fails(b64_decode, " Zm9"));
        CHECK(dec_fails(b64_decode, "Zm\n9v"));
        CHECK(dec_fails(b64_decode, "Zm9-"));        /* url alphabet */
        CHECK(dec_fails(b64_decode, "Zm9_"));
        CHECK(dec_fails(b64_decode, "Zm9*"));
        CHECK(dec_fails(b64_decode, "Zm\x80v"));
        CHECK(b64_decode("Zm\0v", 4, (uint8_t[8]){0}, 8) == -1);
    }

    TEST("base64url rejections") {
        CHECK(dec_fails(b64url_decode, "Zg=="));     /* padding */
        CHECK(dec_fails(b64url_decode, "Zg="));
        CHECK(dec_fails(b64url_decode, "Zm8="));
        CHECK(dec_fails(b64url_decode, "+/8"));      /* standard alphabet */
        CHECK(dec_fails(b64url_decode, "ab+c"));
        CHECK(dec_fails(b64url_decode, "ab/c"));
        CHECK(dec_fails(b64url_decode, "Zm9v "));    /* whitespace */
        CHECK(dec_fails(b64url_decode, "Zm\t9v"));
        CHECK(dec_fails(b64url_decode, "Zm.9"));     /* stray bytes */
        CHECK(dec_fails(b64url_decode, "Zm9\xff"));
        CHECK(dec_fails(b64url_decode, "Z"));        /* n % 4 == 1 */
        CHECK(dec_fails(b64url_decode, "Zm9vY"));
        CHECK(dec_fails(b64url_decode, "Zh"));       /* leftover bits */
        CHECK(dec_fails(b64url_decode, "Zm9"));
        CHECK(dec_fails(b64url_decode, "-_9"));
        CHECK(b64url_decode("Zm\0v", 4, (uint8_t[8]){0}, 8) == -1);
    }

    TEST("base64 capacity: needed - 1 fails, needed succeeds") {
        const uint8_t raw[] = "foobar!";
        char enc[16];
        uint8_t dec[16];
        for (size_t n = 0; n <= 7; n++) {
            size_t need = B64_ENCLEN(n);
            if (need > 0)
                CHECK_EQ(b64_encode(raw, n, enc, need - 1), -1);
            CHECK_EQ(b64_encode(raw, n, enc, need), (long)need);
            CHECK_EQ(b64_decode(enc, need, dec, n), (long)n);
            if (n > 0)
                CHECK_EQ(b64_decode(enc, need, dec, n - 1), -1);

            need = B64URL_ENCLEN(n);
            if (need > 0)
                CHECK_EQ(b64url_encode(raw, n, enc, need - 1), -1);
            CHECK_EQ(b64url_encode(raw, n, enc, need), (long)need);
            CHECK_EQ(b64url_decode(enc, need, dec, n), (long)n);
            if (n > 0)
                CHECK_EQ(b64url_decode(enc, need, dec, n - 1), -1);
        }
        /* nothing to write needs no room */
        CHECK_EQ(b64_encode(raw, 0, NULL, 0), 0);
        CHECK_EQ(b64_decode("", 0, NULL, 0), 0);
        CHECK_EQ(b64url_decode("", 0, NULL, 0), 0);
    }
}
