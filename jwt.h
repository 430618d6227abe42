/* jwt.h -- JSON Web Token verification (jwt.c): compact JWS parsing,
 * HS256 (HMAC-SHA256) and RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signatures,
 * JWKS files of RSA public keys, and the registered time, issuer and
 * audience claims.  Pure: no I/O, no allocation except the scratch of
 * jwks_parse(); everything else lives in caller-owned structs.
 */
#ifndef JWT_H
#define JWT_H

#include "pgcdc.h"

#define JWT_MAX_LEN 8192        /* bytes of a compact token */
#define JWT_MAX_JSON 6144       /* decoded header or claims */
#define JWT_MAX_TOKENS 256      /* JSON tokens of the header or the claims */
#define JWT_MAX_DEPTH 8         /* nested objects and arrays in the claims */
#define JWT_MAX_NAME 256        /* bytes of a member name, a kid */
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 4096
#define RSA_LIMBS (RSA_MAX_BITS / 32)
#define JWKS_MAX_KEYS 32
#define JWKS_MAX_LEN (1024 * 1024)

enum { JWT_ALG_NONE = 0, JWT_HS256, JWT_RS256 };

/* Outcomes of jwt_verify(); each comes with a one-line reason in err. */
enum {
    JWT_OK = 0,
    JWT_EMALFORMED = -1,    /* not a well-formed token (size, base64url, JSON) */
    JWT_EALG = -2,          /* alg none, unknown, or without a configured key */
    JWT_EKID = -3,          /* no key with that kid (or none named, several) */
    JWT_ESIG = -4,          /* signature does not verify */
    JWT_EEXP = -5,          /* exp missing, malformed or past */
    JWT_ENBF = -6,          /* nbf in the future (or malformed) */
    JWT_EISS = -7,          /* iss differs from the configured issuer */
    JWT_EAUD = -8           /* aud does not hold the configured audience */
};

/* An RSA public key, ready for verification. */
typedef struct rsa_key {
    char kid[JWT_MAX_NAME];
    size_t kid_len;
    int has_kid;
    unsigned bits;          /* bit length of n */
    size_t k;               /* byte length of n (= of a signature) */
    unsigned limbs;         /* 32-bit limbs of n */
    uint32_t e;             /* public exponent, odd, 3 ..= 2^32 - 1 */
    uint32_t n0inv;         /* -n^-1 mod 2^32 (Montgomery) */
    uint32_t n[RSA_LIMBS];  /* modulus, least significant limb first */
    uint32_t r2[RSA_LIMBS]; /* R^2 mod n, R = 2^(32 limbs) */
} rsa_key;

/* The RSA keys of a JWKS file. */
typedef struct jwks {
    rsa_key keys[JWKS_MAX_KEYS];
    unsigned n;
    unsigned skipped;       /* keys of other kinds, uses or algorithms */
} jwks;

/* What a token is checked against.  secret/keys NULL: that algorithm is not
 * accepted.  issuer/audience NULL: not checked. */
typedef struct jwt_config {
    const uint8_t *secret;
    size_t secret_len;
    const jwks *keys;
    const char *issuer, *audience;
} jwt_config;

/* A verified (or rejected) token: its decoded header and claims with their
 * JSON tokens.  About 20 KB; keep it off small stacks. */
typedef struct jwt {
    char hdr[JWT_MAX_JSON];
    size_t hlen;
    char claims[JWT_MAX_JSON];
    size_t clen;
    json_tok htok[JWT_MAX_TOKENS];
    json_tok ctok[JWT_MAX_TOKENS];
    int nhtok, nctok;
    uint8_t sig[RSA_MAX_BITS / 8];
    size_t siglen;
    int alg;                /* JWT_ALG_* */
    char kid[JWT_MAX_NAME];
    size_t kid_len;
    int has_kid;
    int64_t exp, nbf;       /* seconds; nbf 0 when absent */
} jwt;

/* Verifies the compact token tok[0..n) at time now (Unix seconds): shape,
 * header (alg, kid, typ, no crit), claims JSON (bounded size, count and
 * nesting, no duplicate member names anywhere), signature, then exp (required),
 * nbf, iss and aud.  Returns JWT_OK or a JWT_E* code with the reason in err
 * (never any part of the token).  t holds the claims afterwards. */
int jwt_verify(jwt *t, const char *tok, size_t n, const jwt_config *cfg,
               int64_t now, char *err, size_t errlen);

/* The claim at a dotted path ("sub", "app_metadata.tenant_id"): the index of
 * its value in t->ctok (contents in t->claims), or -1 when absent. */
int jwt_claim(const jwt *t, const char *path, size_t plen);

/* Parses a JWKS document (RFC 7517 section 5) into out: RSA keys ("kty"
 * "RSA", "n", "e", optional "kid"); keys of another "kty", a "use" other than
 * "sig", or an "alg" other than "RS256" are skipped and counted.  Refuses the
 * whole file (-1, reason in err) for malformed JSON, duplicate members or
 * kids, a modulus outside 2048..4096 bits, zero, even or with leading zero
 * bytes, an exponent outside 3..2^32-1 or even, more than JWKS_MAX_KEYS keys,
 * or no usable key.  Returns the number of keys. */
int jwks_parse(jwks *out, const char *buf, size_t len, char *err, size_t errlen);

/* Sets up k from the big-endian modulus and exponent.  Returns 0, or -1 with
 * the reason in err (the limits of jwks_parse). */
int rsa_key_init(rsa_key *k, const uint8_t *n, size_t nlen,
                 const uint8_t *e, size_t elen, char *err, size_t errlen);

/* RSASSA-PKCS1-v1_5 verification (RFC 8017 section 8.2.2) of a SHA-256
 * digest: the signature must be exactly k bytes and below n, and s^e mod n
 * must equal the whole expected EMSA-PKCS1-v1_5 block.  Returns 1 if valid. */
int rsa_verify_sha256(const rsa_key *k, const uint8_t hash[32],
                      const uint8_t *sig, size_t siglen);

#endif
