/* test_sha1.c -- SHA-1 against FIPS 180-1, HMAC-SHA1 against RFC 2202. */
#include <stdint.h>

#include "t.h"
#include "pgcdc.h"

void test_sha1(void);

static int sha1_is(const void *data, size_t len, const char *want)
{
    uint8_t d[20];
    sha1(data, len, d);
    return t_hex_is("sha1", d, 20, want, 0);
}

static int hmac_is(const void *key, size_t klen, const void *msg, size_t mlen,
                   const char *want)
{
    uint8_t d[20];
    hmac_sha1(key, klen, msg, mlen, d);
    return t_hex_is("hmac", d, 20, want, 0);
}

void test_sha1(void)
{
    TEST("sha1 FIPS 180-1 vectors") {
        static const char m2[] =
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        CHECK(sha1_is("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d"));
        CHECK(sha1_is(m2, sizeof m2 - 1,
                      "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
        CHECK(sha1_is("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
        CHECK(sha1_is(NULL, 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
        CHECK(sha1_is("The quick brown fox jumps over the lazy dog", 43,
                      "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"));
    }

    TEST("sha1 one million 'a' in uneven chunks") {
        static uint8_t a[1000];
        static const size_t steps[] = { 1, 63, 64, 65, 7, 127, 128, 0, 333, 999 };
        sha1_ctx c;
        uint8_t d[20];
        size_t done = 0, k = 0;

        memset(a, 'a', sizeof a);
        sha1_init(&c);
        while (done < 1000000) {
            size_t n = steps[k++ % (sizeof steps / sizeof steps[0])];
            if (n > 1000000 - done)
                n = 1000000 - done;
            sha1_update(&c, a, n);
            done += n;
        }
        sha1_final(&c, d);
        CHECK(t_hex_is("sha1", d, 20, "34aa973cd4c4daa4f61eeb2bdbad27316534016f", 0));
    }

    TEST("sha1 lengths around the padding boundary") {
        /* 55, 56 and 64 bytes: the length field fits, just fails to fit,
         * and a full block with padding in a block of its own. */
        uint8_t buf[130], d1[20], d2[20];
        sha1_ctx c;
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)(i * 7 + 1);
        for (size_t n = 0; n <= sizeof buf; n++) {
            sha1(buf, n, d1);
            sha1_init(&c);
            for (size_t i = 0; i < n; i++)
                sha1_update(&c, buf + i, 1);
            sha1_final(&c, d2);
            CHECK(memcmp(d1, d2, 20) == 0);
        }
        memset(buf, 'a', 64);
        CHECK(sha1_is(buf, 55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"));
        CHECK(sha1_is(buf, 56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"));
        CHECK(sha1_is(buf, 64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"));
    }

    TEST("hmac-sha1 RFC 2202") {
        uint8_t key[80], data[50];

        /* 1 */
        memset(key, 0x0b, 20);
        CHECK(hmac_is(key, 20, "Hi There", 8,
                      "b617318655057264e28bc0b6fb378c8ef146be00"));
        /* 2 */
        CHECK(hmac_is("Jefe", 4, "what do ya want for nothing?", 28,
                      "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
        /* 3 */
        memset(key, 0xaa, 20);
        memset(data, 0xdd, 50);
        CHECK(hmac_is(key, 20, data, 50,
                      "125d7342b9ac11cd91a39af48aa17b4f63f175d3"));
        /* 4 */
        for (int i = 0; i < 25; i++)
            key[i] = (uint8_t)(i + 1);
        memset(data, 0xcd, 50);
        CHECK(hmac_is(key, 25, data, 50,
                      "4c9007f4026250c6bc8414f9bf50c86c2d7235da"));
        /* 5 (the RFC's digest is of the whole MAC, not the 96-bit cut) */
        memset(key, 0x0c, 20);
        CHECK(hmac_is(key, 20, "Test With Truncation", 20,
                      "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"));
        /* 6: an 80-byte key is hashed first */
        memset(key, 0xaa, 80);
        CHECK(hmac_is(key, 80,
                      "Test Using Larger Than Block-Size Key - Hash Key First", 54,
                      "aa4ae5e15272d00e95705637ce8a3b55ed402112"));
        /* 7 */
        CHECK(hmac_is(key, 80,
                      "Test Using Larger Than Block-Size Key and Larger "
                      "Than One Block-Size Data", 73,
                      "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"));
    }

    TEST("hmac-sha1 key of exactly 64 bytes is not hashed") {
        uint8_t key[65], d1[20], d2[20], hk[20];
        memset(key, 0x5a, sizeof key);
        hmac_sha1(key, 64, "m", 1, d1);
        sha1(key, 64, hk);
        hmac_sha1(hk, 20, "m", 1, d2);
        CHECK(memcmp(d1, d2, 20) != 0);
        /* ... while a 65-byte key equals the HMAC under its hash */
        hmac_sha1(key, 65, "m", 1, d1);
        sha1(key, 65, hk);
        hmac_sha1(hk, 20, "m", 1, d2);
        CHECK(memcmp(d1, d2, 20) == 0);
        /* empty key and message */
        CHECK(hmac_is("", 0, "", 0, "fbdb1d1b18aa6c08324b7d64b71fb76370690e1d"));
    }
}
