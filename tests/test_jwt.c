/* test_jwt.c -- JWT verification (jwt.c): RFC 7515 appendix A.1 (HS256) and
 * A.2 (RS256) verified byte for byte, RSA keys of 2048, 3072 and 4096 bits
 * with tokens signed by PyJWT, Project Wycheproof's RSASSA-PKCS1-v1_5
 * SHA-256 vectors (C2SP/wycheproof, Apache License 2.0; data only, in
 * jwt_vectors.h), and every refusal: algorithms, keys, base64url spelling,
 * duplicate names, size limits, time, issuer and audience claims, JWKS
 * files. */
#include <stdint.h>
#include <stdlib.h>

#include "t.h"
#include "jwt.h"
#include "jwt_vectors.h"

void test_jwt(void);

/* RFC 7515 A.1: the HMAC key (a JWK "k") and the token. */
static const char a1_k[] =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
static const char a1_tok[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/* RFC 7515 A.2: the RSA public key and the token. */
static const char a2_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"n\":\""
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx"
    "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs"
    "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV"
    "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8"
    "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
    "\",\"e\":\"AQAB\"}]}";
static const char a2_tok[] =
    "eyJhbGciOiJSUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7"
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4"
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K"
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv"
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB"
    "p0igcN_IoypGlUPQGe77Rw";

#define A_NOW 1300819379    /* one second before the examples' exp */
#define NOW 1700000000

static const char secret[] = "0123456789abcdef0123456789abcdef";

static jwt T;               /* ~20 KB: not on the stack */
static jwks KS;
static char err[160];

static int verify(const char *tok, const jwt_config *cfg, int64_t now)
{
    err[0] = '\0';
    return jwt_verify(&T, tok, strlen(tok), cfg, now, err, sizeof err);
}

/* Mints "b64(hdr).b64(claims).HS256(key)" into out (our own HMAC: these
 * cases test the parser and the checks; real libraries' tokens are checked
 * end to end in tests/suite_jwt.py). */
static const char *mint(char *out, size_t cap, const char *hdr, const char *claims,
                        const char *key)
{
    size_t o = 0;
    long l = b64url_encode((const uint8_t *)hdr, strlen(hdr), out, cap);
    if (l < 0)
        return "";
    o = (size_t)l;
    out[o++] = '.';
    l = b64url_encode((const uint8_t *)claims, strlen(claims), out + o, cap - o);
    if (l < 0)
        return "";
    o += (size_t)l;
    uint8_t mac[32];
    hmac_sha256(key, strlen(key), out, o, mac);
    out[o++] = '.';
    l = b64url_encode(mac, 32, out + o, cap - o - 1);
    if (l < 0)
        return "";
    o += (size_t)l;
    out[o] = '\0';
    return out;
}

static const char *hs(const char *claims)
{
    static char buf[JWT_MAX_LEN + 64];
    return mint(buf, sizeof buf, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, secret);
}

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = strlen(h) / 2;
    if (n > cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void test_rfc7515(void)
{
    TEST("jwt RFC 7515 A.1 HS256 example") {
        uint8_t key[64];
        long kl = b64url_decode(a1_k, strlen(a1_k), key, sizeof key);
        CHECK_EQ(kl, 64);
        jwt_config cfg = { .secret = key, .secret_len = (size_t)kl };
        CHECK_EQ(verify(a1_tok, &cfg, A_NOW), JWT_OK);
        CHECK_EQ(T.alg, JWT_HS256);
        CHECK_EQ(T.exp, 1300819380);
        int i = jwt_claim(&T, "iss", 3);
        CHECK(i > 0 && T.ctok[i].type == JSON_STRING);
        /* a dotted path cannot name a claim whose name holds a dot */
        CHECK_EQ(jwt_claim(&T, "http://example.com/is_root", 26), -1);
        CHECK_EQ(T.ctok[0].size, 3);
        /* the exact second of exp is too late */
        CHECK_EQ(verify(a1_tok, &cfg, A_NOW + 1), JWT_EEXP);
        CHECK(strcmp(err, "token expired") == 0);
        /* a different key, a flipped signature byte, a changed claim */
        key[0] ^= 1;
        CHECK_EQ(verify(a1_tok, &cfg, A_NOW), JWT_ESIG);
        key[0] ^= 1;
        char tok[sizeof a1_tok];
        memcpy(tok, a1_tok, sizeof tok);
        tok[sizeof tok - 3] = tok[sizeof tok - 3] == 'X' ? 'Y' : 'X';
        CHECK_EQ(verify(tok, &cfg, A_NOW), JWT_ESIG);
        memcpy(tok, a1_tok, sizeof tok);
        tok[45] = tok[45] == 'A' ? 'B' : 'A';
        CHECK(verify(tok, &cfg, A_NOW) != JWT_OK);
        /* HS256 without a configured secret: refused by algorithm */
        jwt_config none = { 0 };
        CHECK_EQ(verify(a1_tok, &none, A_NOW), JWT_EALG);
    }

    TEST("jwt RFC 7515 A.2 RS256 example") {
        CHECK_EQ(jwks_parse(&KS, a2_jwks, strlen(a2_jwks), err, sizeof err), 1);
        CHECK_EQ(KS.keys[0].bits, 2048);
        CHECK_EQ(KS.keys[0].e, 65537);
        jwt_config cfg = { .keys = &KS };
        CHECK_EQ(verify(a2_tok, &cfg, A_NOW), JWT_OK);
        CHECK_EQ(T.alg, JWT_RS256);
        CHECK_EQ(verify(a2_tok, &cfg, A_NOW + 1), JWT_EEXP);
        /* every single-bit change of the signature is refused */
        char tok[sizeof a2_tok];
        size_t sigat = strrchr(a2_tok, '.') - a2_tok + 1, bad = 0;
        for (size_t i = sigat; i + 1 < sizeof a2_tok; i += 7) {
            memcpy(tok, a2_tok, sizeof tok);
            tok[i] = tok[i] == 'A' ? 'B' : 'A';
            bad += verify(tok, &cfg, A_NOW) == JWT_OK;
        }
        CHECK_EQ(bad, 0);
        /* the RS256 token under an HS256-only configuration */
        jwt_config hsonly = { .secret = (const uint8_t *)secret, .secret_len = 32 };
        CHECK_EQ(verify(a2_tok, &hsonly, A_NOW), JWT_EALG);
    }
}

static void test_rsa_keys(void)
{
    TEST("jwt RS256 with 2048, 3072 and 4096-bit keys (PyJWT tokens)") {
        CHECK_EQ(jwks_parse(&KS, gen_jwks, strlen(gen_jwks), err, sizeof err), 4);
        CHECK_EQ(KS.keys[0].bits, 2048);
        CHECK_EQ(KS.keys[1].bits, 3072);
        CHECK_EQ(KS.keys[2].bits, 4096);
        CHECK_EQ(KS.keys[3].e, 3);
        jwt_config cfg = { .keys = &KS, .issuer = "pgcdc-test" };
        for (size_t i = 0; i < sizeof gen_tokens / sizeof gen_tokens[0]; i++) {
            CHECK_EQ(verify(gen_tokens[i][1], &cfg, NOW), JWT_OK);
            CHECK(T.has_kid && strlen(gen_tokens[i][0]) == T.kid_len &&
                  memcmp(T.kid, gen_tokens[i][0], T.kid_len) == 0);
        }
        /* a key's token under another key's kid */
        jwks *one = malloc(sizeof *one);
        if (one) {
            *one = KS;
            memcpy(one->keys[0].kid, "k3072", 5);
            memcpy(one->keys[1].kid, "k2048", 5);
            jwt_config swapped = { .keys = one };
            CHECK_EQ(verify(gen_tokens[0][1], &swapped, NOW), JWT_ESIG);
            CHECK_EQ(verify(gen_tokens[1][1], &swapped, NOW), JWT_ESIG);
            /* a kid the file does not hold */
            memcpy(one->keys[0].kid, "zz", 2);
            one->keys[0].kid_len = 2;
            CHECK_EQ(verify(gen_tokens[3][1], &swapped, NOW), JWT_OK);
            memcpy(one->keys[3].kid, "zz", 2);
            one->keys[3].kid_len = 2;
            CHECK_EQ(verify(gen_tokens[3][1], &swapped, NOW), JWT_EKID);
            CHECK(strstr(err, "kid") != NULL);
            free(one);
        }
    }

    TEST("jwt Wycheproof RSASSA-PKCS1-v1_5 SHA-256 vectors") {
        unsigned ran = 0, wrong = 0;
        for (size_t g = 0; g < sizeof wp_groups / sizeof wp_groups[0]; g++) {
            const struct wp_group *wg = &wp_groups[g];
            uint8_t n[600], e[8];
            size_t nl = unhex(wg->n, n, sizeof n), el = unhex(wg->e, e, sizeof e), z = 0;
            while (z < nl && n[z] == 0)
                z++;
            rsa_key *k = &KS.keys[0];
            int rc = rsa_key_init(k, n + z, nl - z, e, el, err, sizeof err);
            CHECK_EQ(rc, 0);
            if (rc)
                continue;
            for (unsigned i = 0; i < wg->ncases; i++) {
                const struct wp_case *c = &wg->cases[i];
                static uint8_t msg[4096], sig[1024];
                size_t ml = unhex(c->msg, msg, sizeof msg);
                size_t sl = unhex(c->sig, sig, sizeof sig);
                uint8_t h[32];
                sha256(msg, ml, h);
                int ok = rsa_verify_sha256(k, h, sig, sl);
                ran++;
                if ((c->result == 1 && !ok) || (c->result == 0 && ok)) {
                    wrong++;
                    fprintf(stderr, "  wycheproof group %zu tcId %d: got %d want %d\n",
                            g, c->id, ok, c->result);
                }
            }
        }
        CHECK(ran > 300);
        CHECK_EQ(wrong, 0);
    }

    TEST("jwt rsa_verify_sha256 refuses wrong lengths and s >= n") {
        CHECK_EQ(jwks_parse(&KS, a2_jwks, strlen(a2_jwks), err, sizeof err), 1);
        const char *dot = strrchr(a2_tok, '.');
        uint8_t sig[600], h[32];
        long sl = b64url_decode(dot + 1, strlen(dot + 1), sig, sizeof sig);
        CHECK_EQ(sl, 256);
        sha256(a2_tok, (size_t)(dot - a2_tok), h);
        CHECK_EQ(rsa_verify_sha256(&KS.keys[0], h, sig, 256), 1);
        /* one byte short, a leading zero byte more */
        CHECK_EQ(rsa_verify_sha256(&KS.keys[0], h, sig + 1, 255), 0);
        uint8_t longer[257];
        longer[0] = 0;
        memcpy(longer + 1, sig, 256);
        CHECK_EQ(rsa_verify_sha256(&KS.keys[0], h, longer, 257), 0);
        /* s + n has the same residue but is out of range: s = n itself */
        uint8_t nb[256];
        for (size_t i = 0; i < 256; i++) {
            size_t bit = (255 - i) * 8;
            nb[i] = (uint8_t)(KS.keys[0].n[bit / 32] >> (bit % 32));
        }
        CHECK_EQ(rsa_verify_sha256(&KS.keys[0], h, nb, 256), 0);
        memset(sig, 0, 256);
        CHECK_EQ(rsa_verify_sha256(&KS.keys[0], h, sig, 256), 0);
        sig[255] = 1;
        CHECK_EQ(rsa_verify_sha256(&KS.keys[0], h, sig, 256), 0);
    }
}

static void test_refusals(void)
{
    jwt_config cfg = { .secret = (const uint8_t *)secret, .secret_len = 32 };
    char buf[JWT_MAX_LEN + 64];

    TEST("jwt algorithm refusals") {
        CHECK_EQ(verify(hs("{\"exp\":4102444800}"), &cfg, NOW), JWT_OK);
        /* alg none, with or without a signature part */
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"none\"}", "{\"exp\":4102444800}",
                             secret), &cfg, NOW), JWT_EALG);
        CHECK(strstr(err, "none") != NULL);
        CHECK_EQ(verify("eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDB9.", &cfg, NOW), JWT_EALG);
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"HS512\"}", "{\"exp\":4102444800}",
                             secret), &cfg, NOW), JWT_EALG);
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"hs256\"}", "{\"exp\":4102444800}",
                             secret), &cfg, NOW), JWT_EALG);
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"typ\":\"JWT\"}", "{\"exp\":4102444800}",
                             secret), &cfg, NOW), JWT_EMALFORMED);
        /* a key in the header is ignored, never used */
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"HS256\",\"jwk\":{\"kty\":\"oct\",\"k\":\"AA\"}}",
                             "{\"exp\":4102444800}", secret), &cfg, NOW), JWT_OK);
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"HS256\",\"jwk\":{\"kty\":\"oct\",\"k\":\"AA\"}}",
                             "{\"exp\":4102444800}", "\0"), &cfg, NOW), JWT_ESIG);
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"HS256\",\"crit\":[\"x\"]}",
                             "{\"exp\":4102444800}", secret), &cfg, NOW), JWT_EMALFORMED);
        /* HS/RS confusion: HS256 "signed" with the public key's text */
        CHECK_EQ(jwks_parse(&KS, a2_jwks, strlen(a2_jwks), err, sizeof err), 1);
        jwt_config rs = { .keys = &KS };
        const char *conf = mint(buf, sizeof buf, "{\"alg\":\"HS256\"}", "{\"exp\":4102444800}",
                                a2_jwks);
        CHECK_EQ(verify(conf, &rs, NOW), JWT_EALG);
        jwt_config both = { .secret = (const uint8_t *)secret, .secret_len = 32, .keys = &KS };
        CHECK_EQ(verify(conf, &both, NOW), JWT_ESIG);
        /* an RS256 header over an HMAC signature */
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"RS256\"}", "{\"exp\":4102444800}",
                             a2_jwks), &both, NOW), JWT_ESIG);
    }

    TEST("jwt shape and base64url refusals") {
        const char *good = hs("{\"exp\":4102444800}");
        size_t n = strlen(good);
        char tok[256];
        memcpy(tok, good, n + 1);
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_OK);
        CHECK_EQ(verify("", &cfg, NOW), JWT_EMALFORMED);
        CHECK_EQ(verify("a.b", &cfg, NOW), JWT_EMALFORMED);
        CHECK_EQ(verify("a.b.c.d", &cfg, NOW), JWT_EMALFORMED);
        /* a fourth part appended */
        memcpy(tok + n, ".x", 3);
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_EMALFORMED);
        /* padding, the standard alphabet, whitespace */
        snprintf(tok, sizeof tok, "%.*s=%s", (int)(strchr(good, '.') - good), good,
                 strchr(good, '.'));
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_EMALFORMED);
        memcpy(tok, good, n + 1);
        for (size_t i = 0; i < n; i++)
            if (tok[i] == '-' || tok[i] == '_') {
                tok[i] = tok[i] == '-' ? '+' : '/';
                CHECK(verify(tok, &cfg, NOW) != JWT_OK);
                break;
            }
        memcpy(tok, good, n + 1);
        tok[3] = ' ';
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_EMALFORMED);
        /* non-canonical: the signature's last character with its unused low
         * bits set decodes to the same bytes but is another spelling */
        memcpy(tok, good, n + 1);
        char *last = &tok[n - 1];
        static const char alpha[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        int v = (int)(strchr(alpha, *last) - alpha);
        *last = alpha[v | 1];     /* 43 chars -> 2 spare bits */
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_EMALFORMED);
        CHECK(strstr(err, "base64url") != NULL);
        *last = alpha[v | 2];
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_EMALFORMED);
        /* the header's last character likewise */
        memcpy(tok, good, n + 1);
        char *hl = strchr(tok, '.') - 1;
        int hv = (int)(strchr(alpha, *hl) - alpha);
        *hl = alpha[hv ^ 1];
        CHECK_EQ(verify(tok, &cfg, NOW), JWT_EMALFORMED);
        /* header and claims must be JSON objects */
        CHECK_EQ(verify(mint(buf, sizeof buf, "[\"HS256\"]", "{}", secret), &cfg, NOW),
                 JWT_EMALFORMED);
        CHECK_EQ(verify(hs("[1]"), &cfg, NOW), JWT_EMALFORMED);
        CHECK_EQ(verify(hs("{\"exp\":4102444800} x"), &cfg, NOW), JWT_EMALFORMED);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,}"), &cfg, NOW), JWT_EMALFORMED);
    }

    TEST("jwt duplicate member names are refused") {
        CHECK_EQ(verify(mint(buf, sizeof buf, "{\"alg\":\"HS256\",\"alg\":\"none\"}",
                             "{\"exp\":4102444800}", secret), &cfg, NOW), JWT_EMALFORMED);
        CHECK(strstr(err, "duplicate") != NULL);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"exp\":1}"), &cfg, NOW), JWT_EMALFORMED);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"sub\":\"a\",\"s\\u0075b\":\"b\"}"), &cfg,
                        NOW), JWT_EMALFORMED);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"m\":{\"a\":1,\"b\":{\"c\":1,\"c\":2}}}"),
                        &cfg, NOW), JWT_EMALFORMED);
        /* the same name in different objects is fine */
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}]}"),
                        &cfg, NOW), JWT_OK);
    }

    TEST("jwt size, count and nesting limits") {
        /* a 100 KB token */
        size_t big = 100 * 1024;
        char *huge = malloc(big + 1);
        if (huge) {
            memset(huge, 'A', big);
            huge[10] = '.';
            huge[20] = '.';
            huge[big] = '\0';
            CHECK_EQ(verify(huge, &cfg, NOW), JWT_EMALFORMED);
            CHECK(strcmp(err, "token too long") == 0);
            free(huge);
        }
        /* 10,000 claims do not fit; 300 small ones are too many members */
        char claims[JWT_MAX_JSON];
        size_t o = 0;
        o += (size_t)snprintf(claims, sizeof claims, "{\"exp\":4102444800");
        for (int i = 0; i < 300 && o + 16 < sizeof claims; i++)
            o += (size_t)snprintf(claims + o, sizeof claims - o, ",\"%d\":0", i);
        snprintf(claims + o, sizeof claims - o, "}");
        CHECK_EQ(verify(hs(claims), &cfg, NOW), JWT_EMALFORMED);
        CHECK(strstr(err, "too many") != NULL);
        /* nesting: 8 levels pass, 9 do not */
        char deep[256];
        for (int levels = 8; levels <= 9; levels++) {
            o = (size_t)snprintf(deep, sizeof deep, "{\"exp\":4102444800,\"d\":");
            for (int i = 1; i < levels; i++)
                deep[o++] = '[';
            deep[o++] = '1';
            for (int i = 1; i < levels; i++)
                deep[o++] = ']';
            deep[o++] = '}';
            deep[o] = '\0';
            CHECK_EQ(verify(hs(deep), &cfg, NOW), levels == 8 ? JWT_OK : JWT_EMALFORMED);
        }
        /* a member name longer than the limit */
        char longname[600];
        o = (size_t)snprintf(longname, sizeof longname, "{\"exp\":4102444800,\"");
        memset(longname + o, 'n', 300);
        o += 300;
        snprintf(longname + o, sizeof longname - o, "\":1}");
        CHECK_EQ(verify(hs(longname), &cfg, NOW), JWT_EMALFORMED);
    }

    TEST("jwt exp, nbf, iss and aud") {
        CHECK_EQ(verify(hs("{\"sub\":\"x\"}"), &cfg, NOW), JWT_EEXP);
        CHECK(strcmp(err, "token has no exp") == 0);
        CHECK_EQ(verify(hs("{\"exp\":\"4102444800\"}"), &cfg, NOW), JWT_EEXP);
        CHECK_EQ(verify(hs("{\"exp\":1700000000}"), &cfg, NOW), JWT_EEXP);
        CHECK_EQ(verify(hs("{\"exp\":1700000001}"), &cfg, NOW), JWT_OK);
        CHECK_EQ(verify(hs("{\"exp\":1700000000.5}"), &cfg, NOW), JWT_EEXP);
        CHECK_EQ(verify(hs("{\"exp\":1.7e9}"), &cfg, NOW - 300000000), JWT_OK);
        CHECK_EQ(T.exp, 1700000000);
        CHECK_EQ(verify(hs("{\"exp\":1e400}"), &cfg, NOW), JWT_OK);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"nbf\":1700000001}"), &cfg, NOW), JWT_ENBF);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"nbf\":1700000000}"), &cfg, NOW), JWT_OK);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"nbf\":null}"), &cfg, NOW), JWT_ENBF);

        jwt_config ia = cfg;
        ia.issuer = "https://issuer.example";
        ia.audience = "pgcdc";
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"iss\":\"https://issuer.example\","
                           "\"aud\":\"pgcdc\"}"), &ia, NOW), JWT_OK);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"iss\":\"https:\\/\\/issuer.example\","
                           "\"aud\":[\"x\",\"pgcdc\"]}"), &ia, NOW), JWT_OK);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"iss\":\"https://other.example\","
                           "\"aud\":\"pgcdc\"}"), &ia, NOW), JWT_EISS);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"aud\":\"pgcdc\"}"), &ia, NOW), JWT_EISS);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"iss\":\"https://issuer.example\","
                           "\"aud\":\"pgcdcx\"}"), &ia, NOW), JWT_EAUD);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"iss\":\"https://issuer.example\","
                           "\"aud\":[\"a\",[\"pgcdc\"]]}"), &ia, NOW), JWT_EAUD);
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"iss\":\"https://issuer.example\"}"),
                        &ia, NOW), JWT_EAUD);
        /* an HS256 MAC cut short or made longer never verifies */
        const char *full = hs("{\"exp\":4102444800}");
        const char *sig = strrchr(full, '.') + 1;
        uint8_t mac[40];
        long ml = b64url_decode(sig, strlen(sig), mac, sizeof mac);
        CHECK_EQ(ml, 32);
        static const size_t cuts[] = { 0, 1, 16, 31, 33 };
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            char cut[256];
            size_t pre = (size_t)(sig - full);
            memcpy(cut, full, pre);
            mac[32] = 0;
            long el = b64url_encode(mac, cuts[i], cut + pre, sizeof cut - pre - 1);
            cut[pre + (size_t)el] = '\0';
            CHECK_EQ(verify(cut, &cfg, NOW), JWT_ESIG);
        }
        /* the signature is checked before any claim */
        const char *t = hs("{\"sub\":\"x\"}");
        char bad[256];
        snprintf(bad, sizeof bad, "%s", t);
        bad[strlen(bad) - 2] ^= 1;
        CHECK_EQ(verify(bad, &cfg, NOW), JWT_ESIG);
    }

    TEST("jwt claims by dotted path") {
        CHECK_EQ(verify(hs("{\"exp\":4102444800,\"sub\":\"u1\",\"app_metadata\":"
                           "{\"tenant_id\":42,\"rooms\":[\"a\",\"b\"]},\"a.b\":1}"),
                        &cfg, NOW), JWT_OK);
        int i = jwt_claim(&T, "sub", 3);
        CHECK(i > 0 && T.ctok[i].type == JSON_STRING);
        CHECK_MEM(T.claims + T.ctok[i].start, T.ctok[i].end - T.ctok[i].start, "u1");
        i = jwt_claim(&T, "app_metadata.tenant_id", 22);
        CHECK(i > 0 && T.ctok[i].type == JSON_NUMBER);
        CHECK_MEM(T.claims + T.ctok[i].start, T.ctok[i].end - T.ctok[i].start, "42");
        i = jwt_claim(&T, "app_metadata.rooms", 18);
        CHECK(i > 0 && T.ctok[i].type == JSON_ARRAY && T.ctok[i].size == 2);
        CHECK_EQ(jwt_claim(&T, "app_metadata", 12) > 0, 1);
        CHECK_EQ(jwt_claim(&T, "app_metadata.nope", 17), -1);
        CHECK_EQ(jwt_claim(&T, "sub.x", 5), -1);
        CHECK_EQ(jwt_claim(&T, "a.b", 3), -1);
        CHECK_EQ(jwt_claim(&T, "", 0), -1);
        CHECK_EQ(jwt_claim(&T, "app_metadata.", 13), -1);
    }
}

static int jwks_err(const char *doc, const char *want)
{
    int rc = jwks_parse(&KS, doc, strlen(doc), err, sizeof err);
    if (rc >= 0 || !strstr(err, want)) {
        fprintf(stderr, "  jwks %.60s: rc %d err \"%s\", want \"%s\"\n", doc, rc, err, want);
        return 0;
    }
    return 1;
}

static void test_jwks(void)
{
    TEST("jwks refusals") {
        /* a 16,384-bit modulus (2,048 bytes of 0xff then odd) */
        static char doc[8192];
        size_t o = (size_t)snprintf(doc, sizeof doc, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"");
        for (int i = 0; i < 2730; i++)
            doc[o++] = '_';
        doc[o++] = 'w';
        o += (size_t)snprintf(doc + o, sizeof doc - o, "\"}]}");
        CHECK(jwks_err(doc, "larger than 4096 bits"));
        CHECK(jwks_err("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"AA\"}]}", "zero"));
        CHECK(jwks_err("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"\"}]}", "zero"));
        /* 1024 bits */
        o = (size_t)snprintf(doc, sizeof doc, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"");
        for (int i = 0; i < 170; i++)
            doc[o++] = '_';
        doc[o++] = 'w';
        snprintf(doc + o, sizeof doc - o, "\"}]}");
        CHECK(jwks_err(doc, "smaller than 2048"));
        /* the A.2 key made even, with a leading zero, with bad exponents */
        char k[2048];
        const char *nstart = strstr(a2_jwks, "\"n\":\"") + 5;
        size_t nlen = (size_t)(strchr(nstart, '"') - nstart);
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"%.*sA\"}]}",
                 (int)nlen - 1, nstart);   /* last char 'Q' -> 'A': even */
        CHECK(jwks_err(k, "even"));
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"AAAA%.*s\"}]}",
                 (int)nlen, nstart);
        CHECK(jwks_err(k, "leading zero"));
        static const char *const bad_e[] = { "AQ", "Ag", "AA", "AAEAAQ", "AQAAAAE", "" };
        for (size_t i = 0; i < sizeof bad_e / sizeof bad_e[0]; i++) {
            snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"%s\",\"n\":\"%.*s\"}]}",
                     bad_e[i], (int)nlen, nstart);
            CHECK(jwks_err(k, "exponent"));
        }
        /* non-canonical base64url in n (last char with spare bits set) */
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"%.*sR\"}]}",
                 (int)nlen - 1, nstart);
        CHECK(jwks_err(k, "base64url"));
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"%.*s=\"}]}",
                 (int)nlen, nstart);
        CHECK(jwks_err(k, "base64url"));
        /* duplicate kid, duplicate member, missing members */
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"e\":\"AQAB\",\"n\":\"%.*s\"},"
                 "{\"kty\":\"RSA\",\"kid\":\"a\",\"e\":\"AQAB\",\"n\":\"%.*s\"}]}",
                 (int)nlen, nstart, (int)nlen, nstart);
        CHECK(jwks_err(k, "kid used twice"));
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"e\":\"Aw\",\"n\":\"%.*s\"}]}",
                 (int)nlen, nstart);
        CHECK(jwks_err(k, "duplicate"));
        CHECK(jwks_err("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "lacks n"));
        CHECK(jwks_err("{\"keys\":[{\"e\":\"AQAB\"}]}", "no kty"));
        CHECK(jwks_err("{\"keys\":[]}", "no RSA"));
        CHECK(jwks_err("{\"keys\":{}}", "keys"));
        CHECK(jwks_err("[]", "keys"));
        CHECK(jwks_err("{\"keys\":[1]}", "not a JSON object"));
        CHECK(jwks_err("{\"keys\":[", "JSON"));
        CHECK(jwks_err("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"},"
                       "{\"kty\":\"oct\",\"k\":\"AA\"}]}", "no RSA"));
    }

    TEST("jwks skips other key kinds, uses and algorithms") {
        char k[4096];
        const char *nstart = strstr(a2_jwks, "\"n\":\"") + 5;
        size_t nlen = (size_t)(strchr(nstart, '"') - nstart);
        snprintf(k, sizeof k, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"},"
                 "{\"kty\":\"RSA\",\"use\":\"enc\",\"e\":\"AQAB\",\"n\":\"%.*s\"},"
                 "{\"kty\":\"RSA\",\"alg\":\"RS512\",\"e\":\"AQAB\",\"n\":\"%.*s\"},"
                 "{\"kty\":\"RSA\",\"kid\":\"x\",\"use\":\"sig\",\"alg\":\"RS256\",\"e\":\"AQAB\","
                 "\"n\":\"%.*s\",\"x5c\":[\"MIIC\"],\"d\":\"AA\"}],\"extra\":1}",
                 (int)nlen, nstart, (int)nlen, nstart, (int)nlen, nstart);
        CHECK_EQ(jwks_parse(&KS, k, strlen(k), err, sizeof err), 1);
        CHECK_EQ(KS.skipped, 3);
        CHECK(KS.keys[0].has_kid && KS.keys[0].kid_len == 1 && KS.keys[0].kid[0] == 'x');
        /* the only key is used for a token with no kid */
        jwt_config cfg = { .keys = &KS };
        CHECK_EQ(verify(a2_tok, &cfg, A_NOW), JWT_OK);
    }
}

void test_jwt(void)
{
    test_rfc7515();
    test_rsa_keys();
    test_refusals();
    test_jwks();
}
