/* fuzz_jwt.c -- libFuzzer target for jwt.c's token verification.
 *
 * The first byte chooses what the rest is: 0 a whole compact token; 1 the
 * claims JSON and 2 the header JSON of a token that is then signed with the
 * configured HS256 secret, so the claim checks behind the signature are
 * reached too.  Verification must never read outside the input, must only
 * accept tokens with HS256 or RS256 and an exp after now, and every claim
 * lookup must land inside the decoded claims.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char secret[] = "fuzz-secret-fuzz-secret-fuzz-secret!";
static jwt T;

static const char *const paths[] = {
    "sub", "exp", "a.b", "app_metadata.tenant_id", "rooms", "x.y.z", "", "."
};

static size_t mint(char *out, size_t cap, const uint8_t *hdr, size_t hn,
                   const uint8_t *claims, size_t cn)
{
    long a = b64url_encode(hdr, hn, out, cap);
    if (a < 0 || (size_t)a + 1 >= cap)
        return 0;
    size_t o = (size_t)a;
    out[o++] = '.';
    long b = b64url_encode(claims, cn, out + o, cap - o);
    if (b < 0)
        return 0;
    o += (size_t)b;
    uint8_t mac[32];
    hmac_sha256(secret, sizeof secret - 1, out, o, mac);
    if (o + 1 + B64URL_ENCLEN(32) > cap)
        return 0;
    out[o++] = '.';
    o += (size_t)b64url_encode(mac, 32, out + o, cap - o);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    static const char claims[] = "{\"exp\":4102444800,\"sub\":\"u\"}";
    static char tok[JWT_MAX_LEN * 2];
    char err[160];
    size_t n;

    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        n = size - 1;
        if (n > sizeof tok)
            n = sizeof tok;
        memcpy(tok, data + 1, n);
        break;
    case 1:
        n = mint(tok, sizeof tok, (const uint8_t *)hdr, sizeof hdr - 1, data + 1, size - 1);
        break;
    default:
        n = mint(tok, sizeof tok, data + 1, size - 1, (const uint8_t *)claims,
                 sizeof claims - 1);
    }
    /* an exact-size heap copy, so a read past the end is caught */
    char *buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    memcpy(buf, tok, n);

    jwt_config cfg = { .secret = (const uint8_t *)secret, .secret_len = sizeof secret - 1,
                       .issuer = NULL, .audience = NULL };
    int rc = jwt_verify(&T, buf, n, &cfg, 1700000000, err, sizeof err);
    if (rc > 0 || rc < JWT_EAUD || strlen(err) >= sizeof err)
        abort();
    if (rc == JWT_OK) {
        if ((T.alg != JWT_HS256 && T.alg != JWT_RS256) || T.exp <= 1700000000)
            abort();
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            int at = jwt_claim(&T, paths[i], strlen(paths[i]));
            if (at >= T.nctok || (at >= 0 && T.ctok[at].end > T.clen))
                abort();
        }
    }
    cfg.issuer = "iss";
    cfg.audience = "aud";
    (void)jwt_verify(&T, buf, n, &cfg, 1700000000, err, sizeof err);
    free(buf);
    return 0;
}
