/* jwt.c -- JSON Web Token verification for JWT access (docs/protocol.md,
 * JWT and Rules).
 *
 * Speaks this subset of the JOSE family:
 *   - RFC 7519 / RFC 7515 compact serialization: three base64url parts
 *     (RFC 4648 section 5, unpadded, one spelling only: base64.c refuses
 *     padding, stray bytes and non-zero leftover bits);
 *   - header: "alg" HS256 or RS256 (anything else, "none" included, is
 *     refused), optional "kid" and "typ" strings, no "crit"; "jwk", "jku",
 *     "x5u" and friends are ignored: keys come only from the configuration;
 *   - HS256: HMAC-SHA256 (sha256.c) compared in constant time;
 *   - RS256: RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2.2) with a 2048..4096-bit
 *     modulus, Montgomery exponentiation by the public exponent, and a
 *     byte-for-byte comparison of the whole expected encoded block (never a
 *     parse of the decrypted one);
 *   - claims: "exp" required, "nbf", "iss", "aud" (string or array) when
 *     configured; any claim reachable by a dotted path.
 * JSON goes through json.c's strict tokenizer; on top of it every object is
 * checked for duplicate member names (after unescaping), so the claims
 * pgcdc reads are the claims any other reader would read.  Sizes are
 * bounded (token, decoded JSON, token count, nesting), so a hostile token
 * costs a bounded amount of work before it is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

/* ==== small helpers ====================================================== */

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (errlen) {
        size_t n = strlen(msg);
        if (n >= errlen)
            n = errlen - 1;
        memcpy(err, msg, n);
        err[n] = '\0';
    }
}

static int fail(char *err, size_t errlen, int code, const char *msg)
{
    set_err(err, errlen, msg);
    return code;
}

/* Equal in time that depends only on n. */
static int ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

/* Index of the first token after toks[i] and all it contains.  Tokens are
 * in document order, so it is the first one starting at or past its end: a
 * binary search. */
static int tok_next(const json_tok *toks, int ntok, int i)
{
    if (toks[i].type != JSON_OBJECT && toks[i].type != JSON_ARRAY)
        return i + 1;
    int lo = i + 1, hi = ntok;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (toks[mid].start < toks[i].end)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static slice tok_slice(const char *buf, const json_tok *t)
{
    slice s = { buf + t->start, t->end - t->start };
    return s;
}

/* Does the escaped JSON string at toks[i] equal the raw bytes s[0..n)? */
static int tok_is(const char *buf, const json_tok *t, const char *s, size_t n)
{
    return t->type == JSON_STRING && json_str_eq(tok_slice(buf, t), s, n);
}

/* Unescapes the string token t into out (cap bytes).  Returns the length or
 * -1 when it does not fit or is malformed. */
static long tok_unescape(const char *buf, const json_tok *t, char *out, size_t cap)
{
    return json_unescape(buf + t->start, t->end - t->start, out, cap);
}

/* Two member names, compared after unescaping. */
static int names_equal(const char *buf, const json_tok *a, const json_tok *b)
{
    slice sa = tok_slice(buf, a), sb = tok_slice(buf, b);
    if (!memchr(sa.p, '\\', sa.n))
        return json_str_eq(sb, sa.p, sa.n);
    if (!memchr(sb.p, '\\', sb.n))
        return json_str_eq(sa, sb.p, sb.n);
    char x[JWT_MAX_NAME], y[JWT_MAX_NAME];
    long nx = tok_unescape(buf, a, x, sizeof x);
    long ny = tok_unescape(buf, b, y, sizeof y);
    return nx >= 0 && nx == ny && memcmp(x, y, (size_t)nx) == 0;
}

/* Tokenizes buf as one JSON value and checks the limits: at most ntoks
 * tokens, containers at most max_depth deep, member names at most
 * JWT_MAX_NAME bytes once unescaped and never repeated in one object.
 * Returns the token count, or -1 with the reason in err. */
static int json_strict(const char *buf, size_t len, json_tok *toks,
                       unsigned ntoks, int max_depth, const char *what,
                       char *err, size_t errlen)
{
    json_parser p;
    json_init(&p);
    int n = json_parse(&p, buf, len, toks, ntoks);
    char msg[96];
    if (n == JSON_NOMEM) {
        snprintf(msg, sizeof msg, "%s has too many members", what);
        return fail(err, errlen, -1, msg);
    }
    if (n <= 0) {
        snprintf(msg, sizeof msg, "%s is not valid JSON", what);
        return fail(err, errlen, -1, msg);
    }
    for (int i = 0; i < n; i++) {
        int d = 0;
        for (int32_t u = toks[i].parent; u >= 0; u = toks[u].parent)
            d++;
        if (d > max_depth) {
            snprintf(msg, sizeof msg, "%s is nested too deeply", what);
            return fail(err, errlen, -1, msg);
        }
        if (toks[i].type != JSON_OBJECT)
            continue;
        if (toks[i].size > JWT_MAX_TOKENS) {
            snprintf(msg, sizeof msg, "%s has an object with too many members", what);
            return fail(err, errlen, -1, msg);
        }
        /* The keys of object i, in order. */
        int keys[JWT_MAX_TOKENS];
        unsigned nk = 0;
        for (int k = i + 1, m = 0; m < (int)toks[i].size; m++) {
            char tmp[JWT_MAX_NAME];
            if (tok_unescape(buf, &toks[k], tmp, sizeof tmp) < 0) {
                snprintf(msg, sizeof msg, "%s has a member name that is too long", what);
                return fail(err, errlen, -1, msg);
            }
            for (unsigned j = 0; j < nk; j++)
                if (names_equal(buf, &toks[keys[j]], &toks[k])) {
                    snprintf(msg, sizeof msg, "%s has a duplicate member name", what);
                    return fail(err, errlen, -1, msg);
                }
            keys[nk++] = k;
            k = tok_next(toks, n, k + 1);
        }
    }
    return n;
}

/* The value token of member name in the object at toks[obj], or -1. */
static int member(const char *buf, const json_tok *toks, int ntok, int obj,
                  const char *name, size_t nlen)
{
    if (obj < 0 || toks[obj].type != JSON_OBJECT)
        return -1;
    int k = obj + 1;
    for (uint32_t m = 0; m < toks[obj].size; m++) {
        if (tok_is(buf, &toks[k], name, nlen))
            return k + 1;
        k = tok_next(toks, ntok, k + 1);
    }
    return -1;
}

/* A JSON number (as the tokenizer accepted it) as whole seconds, rounded
 * down and saturated to the int64 range.  Returns 0 or -1. */
static int numeric_date(const char *buf, const json_tok *t, int64_t *out)
{
    if (t->type != JSON_NUMBER)
        return -1;
    char tmp[64];
    size_t n = t->end - t->start;
    if (n >= sizeof tmp)
        return -1;
    memcpy(tmp, buf + t->start, n);
    tmp[n] = '\0';
    double d = strtod(tmp, NULL);
    if (d != d)
        return -1;
    if (d >= 9.2e18)
        *out = INT64_MAX;
    else if (d <= -9.2e18)
        *out = INT64_MIN;
    else {
        int64_t v = (int64_t)d;
        if ((double)v > d)
            v--;
        *out = v;
    }
    return 0;
}

/* ==== RSA ================================================================ */

/* Big numbers are arrays of 32-bit limbs, least significant first. */

/* a >= b over len limbs? */
static int bn_ge(const uint32_t *a, const uint32_t *b, unsigned len)
{
    for (unsigned i = len; i-- > 0;)
        if (a[i] != b[i])
            return a[i] > b[i];
    return 1;
}

/* a -= b over len limbs; returns the borrow. */
static uint32_t bn_sub(uint32_t *a, const uint32_t *b, unsigned len)
{
    uint64_t borrow = 0;
    for (unsigned i = 0; i < len; i++) {
        uint64_t d = (uint64_t)a[i] - b[i] - borrow;
        a[i] = (uint32_t)d;
        borrow = (d >> 32) & 1;
    }
    return (uint32_t)borrow;
}

/* Big-endian bytes into limbs (len limbs, zero-filled above the bytes). */
static void bn_from_bytes(uint32_t *a, unsigned len, const uint8_t *b, size_t n)
{
    memset(a, 0, len * sizeof *a);
    for (size_t i = 0; i < n; i++) {
        size_t bit = (n - 1 - i) * 8;
        a[bit / 32] |= (uint32_t)b[i] << (bit % 32);
    }
}

static void bn_to_bytes(const uint32_t *a, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t bit = (n - 1 - i) * 8;
        b[i] = (uint8_t)(a[bit / 32] >> (bit % 32));
    }
}

/* Montgomery product out = a * b * R^-1 mod n (CIOS), for a, b < n.
 * out may alias a or b. */
static void mont_mul(uint32_t *out, const uint32_t *a, const uint32_t *b,
                     const rsa_key *k)
{
    unsigned L = k->limbs;
    uint32_t t[RSA_LIMBS + 2];
    memset(t, 0, (L + 2) * sizeof *t);
    for (unsigned i = 0; i < L; i++) {
        uint64_t c = 0;
        for (unsigned j = 0; j < L; j++) {
            c += (uint64_t)t[j] + (uint64_t)a[j] * b[i];
            t[j] = (uint32_t)c;
            c >>= 32;
        }
        c += t[L];
        t[L] = (uint32_t)c;
        t[L + 1] = (uint32_t)(c >> 32);

        uint32_t m = t[0] * k->n0inv;
        c = (uint64_t)t[0] + (uint64_t)m * k->n[0];
        c >>= 32;
        for (unsigned j = 1; j < L; j++) {
            c += (uint64_t)t[j] + (uint64_t)m * k->n[j];
            t[j - 1] = (uint32_t)c;
            c >>= 32;
        }
        c += t[L];
        t[L - 1] = (uint32_t)c;
        t[L] = t[L + 1] + (uint32_t)(c >> 32);
    }
    /* t < 2n: one conditional subtraction reduces it. */
    if (t[L] || bn_ge(t, k->n, L))
        bn_sub(t, k->n, L);
    memcpy(out, t, L * sizeof *t);
}

int rsa_key_init(rsa_key *k, const uint8_t *n, size_t nlen,
                 const uint8_t *e, size_t elen, char *err, size_t errlen)
{
    char msg[96];

    memset(k, 0, sizeof *k);
    if (nlen == 0 || (nlen == 1 && n[0] == 0))
        return fail(err, errlen, -1, "modulus is zero");
    if (n[0] == 0)
        return fail(err, errlen, -1, "modulus has leading zero bytes");
    if (nlen > RSA_MAX_BITS / 8) {
        snprintf(msg, sizeof msg, "modulus of %zu bytes is larger than %d bits",
                 nlen, RSA_MAX_BITS);
        return fail(err, errlen, -1, msg);
    }
    unsigned bits = (unsigned)nlen * 8;
    for (uint8_t top = n[0]; !(top & 0x80); top <<= 1)
        bits--;
    if (bits < RSA_MIN_BITS) {
        snprintf(msg, sizeof msg, "modulus of %u bits is smaller than %d bits",
                 bits, RSA_MIN_BITS);
        return fail(err, errlen, -1, msg);
    }
    if (!(n[nlen - 1] & 1))
        return fail(err, errlen, -1, "modulus is even");
    if (elen == 0 || elen > 4 || e[0] == 0)
        return fail(err, errlen, -1, "exponent out of range (3 to 2^32-1, no leading zeros)");
    uint32_t ev = 0;
    for (size_t i = 0; i < elen; i++)
        ev = ev << 8 | e[i];
    if (ev < 3 || !(ev & 1))
        return fail(err, errlen, -1, "exponent must be odd and at least 3");

    k->bits = bits;
    k->k = nlen;
    k->limbs = (unsigned)((nlen + 3) / 4);
    k->e = ev;
    bn_from_bytes(k->n, k->limbs, n, nlen);

    /* -n^-1 mod 2^32 by Newton's iteration (each step doubles the bits). */
    uint32_t x = 1;
    for (int i = 0; i < 5; i++)
        x *= 2 - k->n[0] * x;
    k->n0inv = (uint32_t)(0 - x);

    /* R^2 mod n: start from 1 and double 2 * 32 * limbs times mod n. */
    uint32_t r[RSA_LIMBS];
    memset(r, 0, sizeof r);
    r[0] = 1;
    for (unsigned i = 0; i < 64 * k->limbs; i++) {
        uint32_t carry = 0;
        for (unsigned j = 0; j < k->limbs; j++) {
            uint32_t v = r[j];
            r[j] = v << 1 | carry;
            carry = v >> 31;
        }
        if (carry || bn_ge(r, k->n, k->limbs))
            bn_sub(r, k->n, k->limbs);
    }
    memcpy(k->r2, r, sizeof r);
    return 0;
}

/* DigestInfo for SHA-256 (RFC 8017 section 9.2, note 1), NULL parameters. */
static const uint8_t sha256_prefix[19] = {
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
};

int rsa_verify_sha256(const rsa_key *k, const uint8_t hash[32],
                      const uint8_t *sig, size_t siglen)
{
    uint32_t s[RSA_LIMBS], sm[RSA_LIMBS], acc[RSA_LIMBS], one[RSA_LIMBS];
    uint8_t em[RSA_MAX_BITS / 8], want[RSA_MAX_BITS / 8];
    unsigned L = k->limbs;

    /* Step 1: the signature is exactly k bytes; RSAVP1: s < n. */
    if (k->limbs == 0 || siglen != k->k || k->k < sizeof sha256_prefix + 32 + 11)
        return 0;
    bn_from_bytes(s, L, sig, siglen);
    if (bn_ge(s, k->n, L))
        return 0;

    /* m = s^e mod n, left to right over the bits of e, in Montgomery form. */
    mont_mul(sm, s, k->r2, k);
    memcpy(acc, sm, L * sizeof *acc);
    int top = 31;
    while (!(k->e >> top & 1))
        top--;
    for (int b = top - 1; b >= 0; b--) {
        mont_mul(acc, acc, acc, k);
        if (k->e >> b & 1)
            mont_mul(acc, acc, sm, k);
    }
    memset(one, 0, L * sizeof *one);
    one[0] = 1;
    mont_mul(acc, acc, one, k);
    bn_to_bytes(acc, em, k->k);

    /* EMSA-PKCS1-v1_5: 00 01 FF..FF 00 DigestInfo H, compared whole. */
    size_t ps = k->k - 3 - sizeof sha256_prefix - 32;
    want[0] = 0x00;
    want[1] = 0x01;
    memset(want + 2, 0xff, ps);
    want[2 + ps] = 0x00;
    memcpy(want + 3 + ps, sha256_prefix, sizeof sha256_prefix);
    memcpy(want + 3 + ps + sizeof sha256_prefix, hash, 32);
    return ct_equal(em, want, k->k);
}

/* ==== tokens ============================================================= */

/* Decodes one base64url part into out (cap bytes).  Returns the length or
 * -1. */
static long part_decode(const char *s, size_t n, void *out, size_t cap)
{
    if (n == 0)
        return 0;
    return b64url_decode(s, n, out, cap);
}

/* Reads the header: alg, kid, typ; refuses crit. */
static int read_header(jwt *t, char *err, size_t errlen)
{
    const char *h = t->hdr;
    int a = member(h, t->htok, t->nhtok, 0, "alg", 3);
    if (a < 0 || t->htok[a].type != JSON_STRING)
        return fail(err, errlen, JWT_EMALFORMED, "token header has no alg");
    if (tok_is(h, &t->htok[a], "HS256", 5))
        t->alg = JWT_HS256;
    else if (tok_is(h, &t->htok[a], "RS256", 5))
        t->alg = JWT_RS256;
    else if (tok_is(h, &t->htok[a], "none", 4))
        return fail(err, errlen, JWT_EALG, "unsigned tokens (alg none) are not accepted");
    else
        return fail(err, errlen, JWT_EALG, "token algorithm is not HS256 or RS256");

    int kid = member(h, t->htok, t->nhtok, 0, "kid", 3);
    if (kid >= 0) {
        long n;
        if (t->htok[kid].type != JSON_STRING ||
            (n = tok_unescape(h, &t->htok[kid], t->kid, sizeof t->kid)) < 0)
            return fail(err, errlen, JWT_EMALFORMED, "token kid is not a short string");
        t->kid_len = (size_t)n;
        t->has_kid = 1;
    }
    int typ = member(h, t->htok, t->nhtok, 0, "typ", 3);
    if (typ >= 0 && t->htok[typ].type != JSON_STRING)
        return fail(err, errlen, JWT_EMALFORMED, "token typ is not a string");
    if (member(h, t->htok, t->nhtok, 0, "crit", 4) >= 0)
        return fail(err, errlen, JWT_EMALFORMED, "token header has crit extensions");
    return JWT_OK;
}

/* The key for an RS256 token: by kid, or the only key. */
static const rsa_key *pick_key(const jwt *t, const jwks *ks, char *err, size_t errlen)
{
    if (t->has_kid) {
        for (unsigned i = 0; i < ks->n; i++)
            if (ks->keys[i].has_kid && ks->keys[i].kid_len == t->kid_len &&
                memcmp(ks->keys[i].kid, t->kid, t->kid_len) == 0)
                return &ks->keys[i];
        set_err(err, errlen, "token kid is not among the configured keys");
        return NULL;
    }
    if (ks->n == 1)
        return &ks->keys[0];
    set_err(err, errlen, "token has no kid and several keys are configured");
    return NULL;
}

static int check_signature(const jwt *t, const char *tok, size_t signed_len,
                           const jwt_config *cfg, char *err, size_t errlen)
{
    if (t->alg == JWT_HS256) {
        uint8_t mac[32];
        if (!cfg->secret)
            return fail(err, errlen, JWT_EALG, "HS256 tokens are not accepted here");
        hmac_sha256(cfg->secret, cfg->secret_len, tok, signed_len, mac);
        if (t->siglen != 32 || !ct_equal(mac, t->sig, 32))
            return fail(err, errlen, JWT_ESIG, "bad token signature");
        return JWT_OK;
    }
    if (!cfg->keys || cfg->keys->n == 0)
        return fail(err, errlen, JWT_EALG, "RS256 tokens are not accepted here");
    const rsa_key *k = pick_key(t, cfg->keys, err, errlen);
    if (!k)
        return JWT_EKID;
    uint8_t h[32];
    sha256(tok, signed_len, h);
    if (!rsa_verify_sha256(k, h, t->sig, t->siglen))
        return fail(err, errlen, JWT_ESIG, "bad token signature");
    return JWT_OK;
}

static int check_claims(jwt *t, const jwt_config *cfg, int64_t now,
                        char *err, size_t errlen)
{
    const char *c = t->claims;
    int i = member(c, t->ctok, t->nctok, 0, "exp", 3);
    if (i < 0)
        return fail(err, errlen, JWT_EEXP, "token has no exp");
    if (numeric_date(c, &t->ctok[i], &t->exp) < 0)
        return fail(err, errlen, JWT_EEXP, "token exp is not a number");
    if (now >= t->exp)
        return fail(err, errlen, JWT_EEXP, "token expired");
    t->nbf = 0;
    i = member(c, t->ctok, t->nctok, 0, "nbf", 3);
    if (i >= 0) {
        if (numeric_date(c, &t->ctok[i], &t->nbf) < 0)
            return fail(err, errlen, JWT_ENBF, "token nbf is not a number");
        if (now < t->nbf)
            return fail(err, errlen, JWT_ENBF, "token not yet valid (nbf)");
    }
    if (cfg->issuer) {
        i = member(c, t->ctok, t->nctok, 0, "iss", 3);
        if (i < 0 || !tok_is(c, &t->ctok[i], cfg->issuer, strlen(cfg->issuer)))
            return fail(err, errlen, JWT_EISS, "wrong token issuer");
    }
    if (cfg->audience) {
        size_t alen = strlen(cfg->audience);
        int ok = 0;
        i = member(c, t->ctok, t->nctok, 0, "aud", 3);
        if (i >= 0 && t->ctok[i].type == JSON_STRING)
            ok = tok_is(c, &t->ctok[i], cfg->audience, alen);
        else if (i >= 0 && t->ctok[i].type == JSON_ARRAY) {
            int k = i + 1;
            for (uint32_t m = 0; m < t->ctok[i].size && !ok; m++) {
                ok = tok_is(c, &t->ctok[k], cfg->audience, alen);
                k = tok_next(t->ctok, t->nctok, k);
            }
        }
        if (!ok)
            return fail(err, errlen, JWT_EAUD, "wrong token audience");
    }
    return JWT_OK;
}

int jwt_verify(jwt *t, const char *tok, size_t n, const jwt_config *cfg,
               int64_t now, char *err, size_t errlen)
{
    t->alg = JWT_ALG_NONE;
    t->has_kid = 0;
    t->kid_len = 0;
    t->nhtok = t->nctok = 0;
    t->hlen = t->clen = t->siglen = 0;
    t->exp = t->nbf = 0;

    if (n > JWT_MAX_LEN)
        return fail(err, errlen, JWT_EMALFORMED, "token too long");
    const char *d1 = memchr(tok, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok)))
        return fail(err, errlen, JWT_EMALFORMED, "token is not three dot-separated parts");
    size_t hn = (size_t)(d1 - tok), pn = (size_t)(d2 - d1 - 1);
    size_t sn = n - (size_t)(d2 + 1 - tok);

    long l = part_decode(tok, hn, t->hdr, sizeof t->hdr);
    if (l <= 0)
        return fail(err, errlen, JWT_EMALFORMED, "token header is not base64url");
    t->hlen = (size_t)l;
    l = part_decode(d1 + 1, pn, t->claims, sizeof t->claims);
    if (l <= 0)
        return fail(err, errlen, JWT_EMALFORMED, "token claims are not base64url");
    t->clen = (size_t)l;
    if (sn > B64URL_ENCLEN(sizeof t->sig))
        return fail(err, errlen, JWT_ESIG, "bad token signature (too long)");
    l = part_decode(d2 + 1, sn, t->sig, sizeof t->sig);
    if (l < 0)
        return fail(err, errlen, JWT_EMALFORMED, "token signature is not base64url");
    t->siglen = (size_t)l;

    t->nhtok = json_strict(t->hdr, t->hlen, t->htok, JWT_MAX_TOKENS, JWT_MAX_DEPTH,
                           "token header", err, errlen);
    if (t->nhtok < 0)
        return JWT_EMALFORMED;
    if (t->htok[0].type != JSON_OBJECT)
        return fail(err, errlen, JWT_EMALFORMED, "token header is not a JSON object");
    t->nctok = json_strict(t->claims, t->clen, t->ctok, JWT_MAX_TOKENS,
                           JWT_MAX_DEPTH, "token claims", err, errlen);
    if (t->nctok < 0)
        return JWT_EMALFORMED;
    if (t->ctok[0].type != JSON_OBJECT)
        return fail(err, errlen, JWT_EMALFORMED, "token claims are not a JSON object");

    int rc = read_header(t, err, errlen);
    if (rc != JWT_OK)
        return rc;
    rc = check_signature(t, tok, (size_t)(d2 - tok), cfg, err, errlen);
    if (rc != JWT_OK)
        return rc;
    return check_claims(t, cfg, now, err, errlen);
}

int jwt_claim(const jwt *t, const char *path, size_t plen)
{
    int at = 0;
    if (t->nctok <= 0)
        return -1;
    while (plen > 0) {
        const char *dot = memchr(path, '.', plen);
        size_t seg = dot ? (size_t)(dot - path) : plen;
        at = member(t->claims, t->ctok, t->nctok, at, path, seg);
        if (at < 0)
            return -1;
        if (!dot)
            return at;
        path += seg + 1;
        plen -= seg + 1;
    }
    return -1;
}

/* ==== JWKS =============================================================== */

#define JWKS_MAX_TOKENS 8192

/* Decodes a base64url string member of the key object; -1 when absent,
 * -2 when malformed. */
static long key_bytes(const char *buf, const json_tok *toks, int ntok, int obj,
                      const char *name, uint8_t *out, size_t cap)
{
    int v = member(buf, toks, ntok, obj, name, strlen(name));
    if (v < 0)
        return -1;
    if (toks[v].type != JSON_STRING)
        return -2;
    const char *s = buf + toks[v].start;
    size_t n = toks[v].end - toks[v].start;
    if (n > B64URL_ENCLEN(cap))
        return -3;
    long l = part_decode(s, n, out, cap);
    return l < 0 ? -2 : l;
}

/* Is the optional string member absent or equal to want? */
static int absent_or(const char *buf, const json_tok *toks, int ntok, int obj,
                     const char *name, const char *want)
{
    int v = member(buf, toks, ntok, obj, name, strlen(name));
    return v < 0 || tok_is(buf, &toks[v], want, strlen(want));
}

static int read_jwk(jwks *out, const char *buf, const json_tok *toks, int ntok,
                    int obj, unsigned idx, char *err, size_t errlen)
{
    char msg[160], why[96];
    uint8_t nb[RSA_MAX_BITS / 8 + 1], eb[8];

    if (toks[obj].type != JSON_OBJECT) {
        snprintf(msg, sizeof msg, "key %u is not a JSON object", idx);
        return fail(err, errlen, -1, msg);
    }
    int kty = member(buf, toks, ntok, obj, "kty", 3);
    if (kty < 0 || toks[kty].type != JSON_STRING) {
        snprintf(msg, sizeof msg, "key %u has no kty", idx);
        return fail(err, errlen, -1, msg);
    }
    if (!tok_is(buf, &toks[kty], "RSA", 3) || !absent_or(buf, toks, ntok, obj, "use", "sig") ||
        !absent_or(buf, toks, ntok, obj, "alg", "RS256")) {
        out->skipped++;
        return 0;
    }
    if (out->n == JWKS_MAX_KEYS) {
        snprintf(msg, sizeof msg, "more than %d RSA keys", JWKS_MAX_KEYS);
        return fail(err, errlen, -1, msg);
    }
    long nl = key_bytes(buf, toks, ntok, obj, "n", nb, sizeof nb);
    long el = key_bytes(buf, toks, ntok, obj, "e", eb, sizeof eb);
    if (nl == -1 || el == -1) {
        snprintf(msg, sizeof msg, "key %u lacks %s", idx, nl == -1 ? "n" : "e");
        return fail(err, errlen, -1, msg);
    }
    if (nl == -3) {
        snprintf(msg, sizeof msg, "key %u: modulus is larger than %d bits", idx, RSA_MAX_BITS);
        return fail(err, errlen, -1, msg);
    }
    if (el == -3) {
        snprintf(msg, sizeof msg, "key %u: exponent out of range", idx);
        return fail(err, errlen, -1, msg);
    }
    if (nl < 0 || el < 0) {
        snprintf(msg, sizeof msg, "key %u: %s is not base64url", idx, nl < 0 ? "n" : "e");
        return fail(err, errlen, -1, msg);
    }
    rsa_key *k = &out->keys[out->n];
    if (rsa_key_init(k, nb, (size_t)nl, eb, (size_t)el, why, sizeof why) < 0) {
        snprintf(msg, sizeof msg, "key %u: %s", idx, why);
        return fail(err, errlen, -1, msg);
    }
    int kid = member(buf, toks, ntok, obj, "kid", 3);
    if (kid >= 0) {
        long l;
        if (toks[kid].type != JSON_STRING ||
            (l = tok_unescape(buf, &toks[kid], k->kid, sizeof k->kid)) < 0) {
            snprintf(msg, sizeof msg, "key %u: kid is not a short string", idx);
            return fail(err, errlen, -1, msg);
        }
        k->kid_len = (size_t)l;
        k->has_kid = 1;
        for (unsigned i = 0; i < out->n; i++)
            if (out->keys[i].has_kid && out->keys[i].kid_len == k->kid_len &&
                memcmp(out->keys[i].kid, k->kid, k->kid_len) == 0) {
                snprintf(msg, sizeof msg, "key %u: kid used twice", idx);
                return fail(err, errlen, -1, msg);
            }
    }
    out->n++;
    return 0;
}

int jwks_parse(jwks *out, const char *buf, size_t len, char *err, size_t errlen)
{
    out->n = 0;
    out->skipped = 0;
    if (len > JWKS_MAX_LEN)
        return fail(err, errlen, -1, "file larger than 1 MiB");
    json_tok *toks = malloc(JWKS_MAX_TOKENS * sizeof *toks);
    if (!toks)
        return fail(err, errlen, -1, "out of memory");
    int rc = -1;
    int ntok = json_strict(buf, len, toks, JWKS_MAX_TOKENS, 16, "key file",
                           err, errlen);
    if (ntok < 0)
        goto out;
    int keys = member(buf, toks, ntok, 0, "keys", 4);
    if (keys < 0 || toks[keys].type != JSON_ARRAY) {
        set_err(err, errlen, "not a JWKS: no \"keys\" array");
        goto out;
    }
    int k = keys + 1;
    for (uint32_t m = 0; m < toks[keys].size; m++) {
        if (read_jwk(out, buf, toks, ntok, k, m, err, errlen) < 0)
            goto out;
        k = tok_next(toks, ntok, k);
    }
    if (out->n == 0) {
        set_err(err, errlen, "no RSA signing key (kty RSA) in the file");
        goto out;
    }
    rc = (int)out->n;
out:
    free(toks);
    if (rc < 0)
        out->n = 0;
    return rc;
}
