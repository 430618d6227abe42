/* jwtverify.c -- the cost of verifying one JWT with pgcdc's own code.
 *
 *   jwtverify KEYS.json HS_SECRET TOKENS_FILE...
 *
 * Each TOKENS_FILE holds one token per line (a different token each, as
 * distinct clients would present).  Every token is verified once against the
 * HS256 secret and the JWKS file, in a loop repeated until about a second
 * has passed; prints the file, the tokens, and the mean microseconds per
 * verification.  Exits 1 if any token fails to verify.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwt.h"

static jwt T;
static jwks KS;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, len = 0;
    char *b = malloc(cap + 1);
    size_t r;
    while (b && (r = fread(b + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[len] = 0;
    *n = len;
    return b;
}

int main(int argc, char **argv)
{
    char err[160];
    size_t n;
    if (argc < 4) {
        fprintf(stderr, "usage: %s KEYS.json HS_SECRET TOKENS_FILE...\n", argv[0]);
        return 2;
    }
    char *keys = slurp(argv[1], &n);
    if (!keys || jwks_parse(&KS, keys, n, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], keys ? err : "cannot read");
        return 2;
    }
    jwt_config cfg = { .secret = (const uint8_t *)argv[2], .secret_len = strlen(argv[2]),
                       .keys = &KS };
    int rc = 0;
    for (int a = 3; a < argc; a++) {
        char *text = slurp(argv[a], &n);
        if (!text)
            return 2;
        char **toks = NULL;
        size_t nt = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            toks = realloc(toks, (nt + 1) * sizeof *toks);
            toks[nt++] = line;
        }
        if (!nt)
            continue;
        long done = 0;
        double t0 = now_s(), t1;
        do {
            for (size_t i = 0; i < nt; i++)
                if (jwt_verify(&T, toks[i], strlen(toks[i]), &cfg, (int64_t)time(NULL),
                               err, sizeof err) != JWT_OK) {
                    fprintf(stderr, "%s: token %zu: %s\n", argv[a], i, err);
                    rc = 1;
                }
            done += (long)nt;
            t1 = now_s();
        } while (t1 - t0 < 1.0 && !rc);
        printf("%-28s %6zu tokens  %8.1f us/verify  (%ld verifications)\n", argv[a] + (strrchr(argv[a], '/') ? strrchr(argv[a], '/') - argv[a] + 1 : 0),
               nt, (t1 - t0) * 1e6 / (double)done, done);
        free(toks);
        free(text);
    }
    free(keys);
    return rc;
}
