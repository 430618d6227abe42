/* test_sha256.c -- SHA-256 against FIPS 180-4's examples, HMAC-SHA256
 * against the seven test cases of RFC 4231 section 4. */
#include <stdint.h>

#include "t.h"
#include "pgcdc.h"

void test_sha256(void);

static int sha256_is(const void *data, size_t len, const char *want)
{
    uint8_t d[32];
    sha256(data, len, d);
    return t_hex_is("sha256", d, 32, want, 0);
}

/* Compares the first strlen(want)/2 bytes of the MAC (case 5 truncates). */
static int hmac_is(const void *key, size_t klen, const void *msg, size_t mlen,
                   const char *want)
{
    uint8_t d[32];
    hmac_sha256(key, klen, msg, mlen, d);
    return t_hex_is("hmac-sha256", d, 32, want, 1);
}

void test_sha256(void)
{
    TEST("sha256 FIPS 180-4 examples") {
        static const char m2[] =
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        static const char m3[] =
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
            "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
        CHECK(sha256_is("abc", 3,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        CHECK(sha256_is(m2, sizeof m2 - 1,
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
        CHECK(sha256_is(m3, sizeof m3 - 1,
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
        CHECK(sha256_is("", 0,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        CHECK(sha256_is(NULL, 0,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }

    TEST("sha256 one million 'a' in uneven chunks") {
        static uint8_t a[1000];
        static const size_t steps[] = { 1, 63, 64, 65, 7, 127, 128, 0, 333, 999 };
        sha256_ctx c;
        uint8_t d[32];
        size_t done = 0, k = 0;

        memset(a, 'a', sizeof a);
        sha256_init(&c);
        while (done < 1000000) {
            size_t n = steps[k++ % (sizeof steps / sizeof steps[0])];
            if (n > 1000000 - done)
                n = 1000000 - done;
            sha256_update(&c, a, n);
            done += n;
        }
        sha256_final(&c, d);
        CHECK(t_hex_is("sha256", d, 32,
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", 0));
    }

    TEST("sha256 lengths 55, 56, 63, 64 and byte-at-a-time feeding") {
        uint8_t buf[130], d1[32], d2[32];
        sha256_ctx c;
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)(i * 7 + 1);
        for (size_t n = 0; n <= sizeof buf; n++) {
            sha256(buf, n, d1);
            sha256_init(&c);
            for (size_t i = 0; i < n; i++)
                sha256_update(&c, buf + i, 1);
            sha256_final(&c, d2);
            CHECK(memcmp(d1, d2, 32) == 0);
        }
        /* 55: padding and length fit one block; 56: they just do not;
         * 63 and 64: a block of their own. */
        memset(buf, 'a', 64);
        CHECK(sha256_is(buf, 55,
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"));
        CHECK(sha256_is(buf, 56,
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"));
        CHECK(sha256_is(buf, 63,
            "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"));
        CHECK(sha256_is(buf, 64,
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"));
    }

    TEST("hmac-sha256 RFC 4231 cases 1-7") {
        uint8_t key[131], data[50];

        memset(key, 0x0b, 20);
        CHECK(hmac_is(key, 20, "Hi There", 8,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
        CHECK(hmac_is("Jefe", 4, "what do ya want for nothing?", 28,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
        memset(key, 0xaa, 20);
        memset(data, 0xdd, 50);
        CHECK(hmac_is(key, 20, data, 50,
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"));
        for (int i = 0; i < 25; i++)
            key[i] = (uint8_t)(i + 1);
        memset(data, 0xcd, 50);
        CHECK(hmac_is(key, 25, data, 50,
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"));
        /* 5: the RFC gives the MAC truncated to 128 bits */
        memset(key, 0x0c, 20);
        CHECK(hmac_is(key, 20, "Test With Truncation", 20,
            "a3b6167473100ee06e0c796c2955552b"));
        /* 6 and 7: a 131-byte key is hashed first */
        memset(key, 0xaa, 131);
        CHECK(hmac_is(key, 131,
            "Test Using Larger Than Block-Size Key - Hash Key First", 54,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
        static const char m7[] =
            "This is a test using a larger than block-size key and a larger "
            "than block-size data. The key needs to be hashed before being "
            "used by the HMAC algorithm.";
        CHECK(hmac_is(key, 131, m7, sizeof m7 - 1,
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"));
    }

    TEST("hmac-sha256 key of exactly 64 bytes is not hashed") {
        uint8_t key[65], d1[32], d2[32], hk[32];
        memset(key, 0x5a, sizeof key);
        hmac_sha256(key, 64, "m", 1, d1);
        sha256(key, 64, hk);
        hmac_sha256(hk, 32, "m", 1, d2);
        CHECK(memcmp(d1, d2, 32) != 0);
        hmac_sha256(key, 65, "m", 1, d1);
        sha256(key, 65, hk);
        hmac_sha256(hk, 32, "m", 1, d2);
        CHECK(memcmp(d1, d2, 32) == 0);
    }
}
