/* base64.c -- base64 (RFC 4648 section 4) and base64url (section 5).
 *
 * The standard form, always padded, carries the WebSocket handshake keys;
 * the unpadded url form carries signed grants in query strings.  Both
 * decoders are strict: one input has exactly one accepted spelling (no
 * whitespace, no missing or extra padding, no non-zero leftover bits), so a
 * signed token cannot be re-spelled and still verify.
 */
#include "pgcdc.h"

static const char std_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of one alphabet character, -1 for anything else.  c62 and c63 are
 * the two characters where the alphabets differ. */
static int b64_val(unsigned char c, char c62, char c63)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)c62)
        return 62;
    if (c == (unsigned char)c63)
        return 63;
    return -1;
}

/* Encodes n bytes; a final partial group gets '=' padding only if pad. */
static long encode(const uint8_t *in, size_t n, char *out, size_t cap,
                   const char *alpha, int pad)
{
    size_t need = pad ? B64_ENCLEN(n) : B64URL_ENCLEN(n);
    size_t o = 0, i = 0;

    if (n > ((size_t)-1 - 2) / 4 || need > cap)
        return -1;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    return (long)o;
}

/* Decodes n characters (no padding among them) of which a trailing partial
 * group of 2 or 3 characters yields 1 or 2 bytes.  The caller has checked
 * n % 4 != 1 and that out has room. */
static long decode(const char *in, size_t n, uint8_t *out, char c62, char c63)
{
    size_t o = 0, i = 0;
    uint32_t v = 0;
    int bits = 0;

    for (; i < n; i++) {
        int d = b64_val((unsigned char)in[i], c62, c63);
        if (d < 0)
            return -1;
        v = (v << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(v >> bits);
            v &= (1u << bits) - 1;
        }
    }
    /* Leftover bits (2 or 4) must be zero for the spelling to be canonical. */
    if (v != 0)
        return -1;
    return (long)o;
}

long b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    return encode(in, n, out, cap, std_alpha, 1);
}

long b64url_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    return encode(in, n, out, cap, url_alpha, 0);
}

long b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    size_t pad = 0, need;

    if (n % 4 != 0)
        return -1;
    if (n >= 4 && in[n - 1] == '=') {
        pad = 1;
        if (in[n - 2] == '=')
            pad = 2;
    }
    /* Any '=' left in the body is rejected by decode() as a stray byte. */
    need = n / 4 * 3 - pad;
    if (need > cap)
        return -1;
    return decode(in, n - pad, out, '+', '/');
}

long b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);

    if (n % 4 == 1 || need > cap)
        return -1;
    return decode(in, n, out, '-', '_');
}
