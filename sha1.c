/* sha1.c -- SHA-1 (FIPS 180-1) and HMAC-SHA1 (RFC 2104).
 *
 * SHA-1 is needed for the WebSocket handshake (RFC 6455 section 1.3) and,
 * under HMAC, for signed subscription grants.  It is not used for anything
 * that relies on collision resistance.
 *
 * Tested (tests/test_sha1.c) with the FIPS 180-1 appendix vectors:
 *   "abc"          -> a9993e36 4706816a ba3e2571 7850c26c 9cd0d89d
 *   "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq" (448 bits)
 *                  -> 84983e44 1c3bd26e baae4aa1 f95129e5 e54670f1
 *   one million 'a' (fed in uneven chunks)
 *                  -> 34aa973c d4c4daa4 f61eeb2b dbad2731 6534016f
 * plus the empty message (da39a3ee 5e6b4b0d 3255bfef 95601890 afd80709)
 * and the seven HMAC-SHA1 cases of RFC 2202.
 */
#include <string.h>

#include "pgcdc.h"

static uint32_t rol(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* One 512-bit block.  The message schedule is kept as a rolling 16-word
 * window rather than the full 80 words of the standard's description. */
static void sha1_block(uint32_t h[5], const uint8_t *blk)
{
    uint32_t w[16];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

    for (int i = 0; i < 16; i++)
        w[i] = load_be32(blk + 4 * i);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k, t;
        if (i >= 16) {
            t = w[(i + 13) & 15] ^ w[(i + 8) & 15] ^ w[(i + 2) & 15] ^ w[i & 15];
            w[i & 15] = rol(t, 1);
        }
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999u;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        t = rol(a, 5) + f + e + k + w[i & 15];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void sha1_init(sha1_ctx *c)
{
    c->h[0] = 0x67452301u;
    c->h[1] = 0xEFCDAB89u;
    c->h[2] = 0x98BADCFEu;
    c->h[3] = 0x10325476u;
    c->h[4] = 0xC3D2E1F0u;
    c->md.len = 0;
    c->md.used = 0;
}

void md64_update(md64 *m, uint32_t *h, md64_block_fn *block,
                 const void *data, size_t len)
{
    const uint8_t *p = data;

    if (len == 0)
        return;     /* data may then be NULL, which memcpy must not see */
    m->len += len;
    if (m->used) {
        size_t take = 64 - m->used;
        if (take > len)
            take = len;
        memcpy(m->buf + m->used, p, take);
        m->used += take;
        p += take;
        len -= take;
        if (m->used < 64)
            return;
        block(h, m->buf);
        m->used = 0;
    }
    /* Whole blocks straight from the caller's memory, no copy. */
    for (; len >= 64; p += 64, len -= 64)
        block(h, p);
    if (len) {
        memcpy(m->buf, p, len);
        m->used = len;
    }
}

void md64_final(md64 *m, uint32_t *h, md64_block_fn *block)
{
    uint64_t bits = m->len * 8;

    m->buf[m->used++] = 0x80;
    if (m->used > 56) {
        memset(m->buf + m->used, 0, 64 - m->used);
        block(h, m->buf);
        m->used = 0;
    }
    memset(m->buf + m->used, 0, 56 - m->used);
    store_be32(m->buf + 56, (uint32_t)(bits >> 32));
    store_be32(m->buf + 60, (uint32_t)bits);
    block(h, m->buf);
}

void sha1_update(sha1_ctx *c, const void *data, size_t len)
{
    md64_update(&c->md, c->h, sha1_block, data, len);
}

void sha1_final(sha1_ctx *c, uint8_t out[20])
{
    md64_final(&c->md, c->h, sha1_block);
    for (int i = 0; i < 5; i++)
        store_be32(out + 4 * i, c->h[i]);
    /* Leave no message-derived state behind (HMAC keys pass through here). */
    memset(c, 0, sizeof *c);
}

void sha1(const void *data, size_t len, uint8_t out[20])
{
    sha1_ctx c;

    sha1_init(&c);
    sha1_update(&c, data, len);
    sha1_final(&c, out);
}

void hmac_sha1(const void *key, size_t klen, const void *msg, size_t mlen,
               uint8_t out[20])
{
    uint8_t k[64], pad[64], inner[20];
    sha1_ctx c;

    /* RFC 2104: a key longer than the block size is replaced by its hash;
     * shorter keys are zero-padded to the block size. */
    memset(k, 0, sizeof k);
    if (klen > sizeof k)
        sha1(key, klen, k);
    else if (klen)
        memcpy(k, key, klen);

    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    sha1_init(&c);
    sha1_update(&c, pad, sizeof pad);
    sha1_update(&c, msg, mlen);
    sha1_final(&c, inner);

    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    sha1_init(&c);
    sha1_update(&c, pad, sizeof pad);
    sha1_update(&c, inner, sizeof inner);
    sha1_final(&c, out);

    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
}
