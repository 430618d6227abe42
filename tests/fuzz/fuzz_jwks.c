/* fuzz_jwks.c -- libFuzzer target for jwt.c's JWKS parser.
 *
 * The input is a JWKS document.  When it is accepted, every key must be
 * within the limits (2048..4096 bits, odd modulus, odd e >= 3), at most
 * JWKS_MAX_KEYS, and verifying a fixed RS256 token against the keys must
 * run (and fail: no fuzzed key holds its private half).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static jwks KS;
static jwt T;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char tok[] =
        "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9."
        "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7";
    char err[160];
    char *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    if (size)
        memcpy(buf, data, size);
    int rc = jwks_parse(&KS, buf, size, err, sizeof err);
    if (rc >= 0) {
        if (rc == 0 || (unsigned)rc != KS.n || KS.n > JWKS_MAX_KEYS)
            abort();
        for (unsigned i = 0; i < KS.n; i++) {
            const rsa_key *k = &KS.keys[i];
            if (k->bits < RSA_MIN_BITS || k->bits > RSA_MAX_BITS || !(k->n[0] & 1) ||
                k->e < 3 || !(k->e & 1) || k->kid_len >= sizeof k->kid)
                abort();
        }
        jwt_config cfg = { .keys = &KS };
        if (jwt_verify(&T, tok, sizeof tok - 1, &cfg, 1700000000, err, sizeof err) == JWT_OK)
            abort();
    } else if (KS.n != 0 || strlen(err) == 0) {
        abort();
    }
    free(buf);
    return 0;
}
