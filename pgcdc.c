/* pgcdc.c -- stream PostgreSQL row changes to WebSocket clients.
 *
 * One process, one thread, one poll() loop.  It holds one logical
 * replication connection (libpq, replication=database, wal2json
 * format-version 2), one ordinary connection for catalog look-ups, a
 * listening socket, and the clients.  Each change wal2json sends is parsed
 * once (json.c), turned once into a WebSocket text frame carrying a "pos"
 * member, kept in a bounded history for resuming clients, and queued by
 * reference to every client whose subscription matches (query.c); queues
 * are written with writev() when the socket takes them.
 *
 * Sections: logging and utilities, configuration, server state (the one
 * struct S, by concern: S.http, S.hist, S.repl, S.cat, S.count), frames and
 * history, tables and groups, clients, HTTP (requests parsed by http.c),
 * catalog look-ups, replication (the stream identity is stream.c), metrics,
 * the event loop.  The external contract is docs/protocol.md; README.md is
 * the user's guide.
 */
#include "pgcdc.h"
#include "jwt.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

/* ==== Logging and small utilities ====================================== */

enum { L_ERROR, L_WARN, L_INFO, L_DEBUG };

/* Copies s into out (NUL-terminated, truncated to fit) with every byte
 * below 0x20 and 0x7f written as \n, \r, \t or \xNN, so no value a client
 * or the database sent can break a log line or reach a terminal as an escape
 * sequence.  Every log line passes through here, whatever its source. */
static void log_escape(const char *s, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != 0x7f) {
            out[o++] = (char)ch;
            continue;
        }
        out[o++] = '\\';
        if (ch == '\n') out[o++] = 'n';
        else if (ch == '\r') out[o++] = 'r';
        else if (ch == '\t') out[o++] = 't';
        else {
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void logf_(int level, const char *fmt, ...);
#define log_error(...) logf_(L_ERROR, __VA_ARGS__)
#define log_warn(...) logf_(L_WARN, __VA_ARGS__)
#define log_info(...) logf_(L_INFO, __VA_ARGS__)
#define log_debug(...) logf_(L_DEBUG, __VA_ARGS__)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        log_error("out of memory allocating %zu bytes", n);
        exit(2);
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        log_error("out of memory allocating %zu bytes", n);
        exit(2);
    }
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Constant-time equality: time depends only on the lengths. */
static int ct_equal(const void *a, size_t an, const void *b, size_t bn)
{
    const unsigned char *x = a, *y = b;
    unsigned char d = (unsigned char)(an != bn);
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

/* A growable byte buffer for building responses and messages. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_need(sbuf *b, size_t more)
{
    if (b->n + more + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + more + 1 > cap)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
}

static void sb_add(sbuf *b, const void *s, size_t n)
{
    sb_need(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_need(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* ==== Configuration ===================================================== */

typedef struct config {
    char *conninfo;
    char *slot;
    int temporary_slot;
    char *tables;            /* NULL: all */
    char *wal2json_options;  /* "name=value,..." */
    int status_interval;
    int reconnect_max;
    char *listen;
    int max_clients;
    size_t max_queue;
    int ping_interval;
    char *allowed_origins;
    char *token;
    int demo_page;
    size_t history;
    char *trusted_proxies;
    char *grant_secret;
    char *admin_listen;      /* NULL: /health and /metrics on listen */
    char *jwt_secret;        /* HS256 key */
    char *jwt_keys;          /* path of the JWKS file */
    char *jwt_issuer, *jwt_audience;
    jwks *keys;              /* the RSA keys read from jwt_keys */
    rule *rules;             /* [rules] */
    unsigned nrules;

    /* the lists above, parsed once when set: slices of their strings */
    table_pat *table_pats;   /* tables */
    unsigned ntable_pats;
    struct w2j_opt *w2j_opts;   /* wal2json_options */
    unsigned nw2j_opts;
    word_list origins;       /* allowed_origins */
    word_list proxies;       /* trusted_proxies */
    int max_snapshots;
    int snapshot_timeout;    /* seconds */
} config;

/* One name=value of wal2json_options, both trimmed. */
typedef struct w2j_opt {
    slice name, value;
} w2j_opt;

static int config_list(const char *key, config *c, char *err, size_t errlen);

static void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    c->slot = xstrndup("pgcdc", 5);
    c->temporary_slot = 1;
    c->wal2json_options = xstrndup("include-timestamp=1", 19);
    c->status_interval = 10;
    c->reconnect_max = 30;
    c->listen = xstrndup("127.0.0.1:8080", 14);
    c->max_clients = 10000;
    c->max_queue = 4194304;
    c->ping_interval = 25;
    c->demo_page = 1;
    c->history = 67108864;
    config_list("wal2json_options", c, NULL, 0);
    c->max_snapshots = 4;
    c->snapshot_timeout = 300;
}

static void config_free(config *c)
{
    free(c->table_pats); free(c->w2j_opts); free(c->origins.v); free(c->proxies.v);
    free(c->conninfo); free(c->slot); free(c->tables);
    free(c->wal2json_options); free(c->listen); free(c->allowed_origins);
    free(c->token); free(c->trusted_proxies); free(c->grant_secret);
    free(c->admin_listen);
    free(c->jwt_secret); free(c->jwt_keys); free(c->jwt_issuer); free(c->jwt_audience);
    free(c->keys);
    for (unsigned i = 0; i < c->nrules; i++)
        rule_free(&c->rules[i]);
    free(c->rules);
}

enum { K_STR, K_BOOL, K_INT, K_SIZE };

typedef struct keydef {
    const char *section, *name;
    int kind;
    size_t off;
    long long min, max;
} keydef;

#define KOFF(f) offsetof(config, f)
static const keydef keydefs[] = {
    { "postgres", "conninfo", K_STR, KOFF(conninfo), 0, 0 },
    { "postgres", "slot", K_STR, KOFF(slot), 0, 0 },
    { "postgres", "temporary_slot", K_BOOL, KOFF(temporary_slot), 0, 1 },
    { "postgres", "tables", K_STR, KOFF(tables), 0, 0 },
    { "postgres", "wal2json_options", K_STR, KOFF(wal2json_options), 0, 0 },
    { "postgres", "status_interval", K_INT, KOFF(status_interval), 1, 3600 },
    { "postgres", "reconnect_max", K_INT, KOFF(reconnect_max), 1, 86400 },
    { "server", "listen", K_STR, KOFF(listen), 0, 0 },
    { "server", "max_clients", K_INT, KOFF(max_clients), 1, 1000000 },
    { "server", "max_queue", K_SIZE, KOFF(max_queue), 4096, 1LL << 40 },
    { "server", "ping_interval", K_INT, KOFF(ping_interval), 0, 86400 },
    { "server", "allowed_origins", K_STR, KOFF(allowed_origins), 0, 0 },
    { "server", "token", K_STR, KOFF(token), 0, 0 },
    { "server", "demo_page", K_BOOL, KOFF(demo_page), 0, 1 },
    { "server", "history", K_SIZE, KOFF(history), 0, 1LL << 40 },
    { "server", "trusted_proxies", K_STR, KOFF(trusted_proxies), 0, 0 },
    { "server", "grant_secret", K_STR, KOFF(grant_secret), 0, 0 },
    { "server", "admin_listen", K_STR, KOFF(admin_listen), 0, 0 },
    { "server", "jwt_secret", K_STR, KOFF(jwt_secret), 0, 0 },
    { "server", "jwt_keys", K_STR, KOFF(jwt_keys), 0, 0 },
    { "server", "jwt_issuer", K_STR, KOFF(jwt_issuer), 0, 0 },
    { "server", "jwt_audience", K_STR, KOFF(jwt_audience), 0, 0 },
    { "server", "max_snapshots", K_INT, KOFF(max_snapshots), 1, 64 },
    { "server", "snapshot_timeout", K_INT, KOFF(snapshot_timeout), 1, 86400 },
};
#define NKEYS (sizeof keydefs / sizeof keydefs[0])

static int parse_bool(const char *v, int *out)
{
    static const char *t[] = { "true", "yes", "on", "1" };
    static const char *f[] = { "false", "no", "off", "0" };
    for (int i = 0; i < 4; i++) {
        if (ieq(v, strlen(v), t[i])) { *out = 1; return 0; }
        if (ieq(v, strlen(v), f[i])) { *out = 0; return 0; }
    }
    return -1;
}

static int parse_ll(const char *v, long long *out)
{
    char *end;
    errno = 0;
    if (!*v || !(isdigit((unsigned char)*v) || *v == '-'))
        return -1;
    *out = strtoll(v, &end, 10);
    return errno || *end ? -1 : 0;
}

/* listen = host:port | [v6]:port | :port */
static int parse_listen(const char *v, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon;
    size_t hn;
    long long p;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':')
            return -1;
        hn = (size_t)(close - v - 1);
        if (hn >= hcap)
            return -1;
        memcpy(host, v + 1, hn);
        colon = close + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon)
            return -1;
        hn = (size_t)(colon - v);
        if (hn >= hcap || memchr(v, ':', hn))
            return -1;
        memcpy(host, v, hn);
    }
    host[hn] = 0;
    if (parse_ll(colon + 1, &p) || p < 0 || p > 65535 || strlen(colon + 1) >= pcap)
        return -1;
    snprintf(port, pcap, "%lld", p);
    return 0;
}

static const char *reserved_w2j[] = {
    "format-version", "include-lsn", "include-transaction", "include-xids", "add-tables"
};
#define NRESERVED_W2J (sizeof reserved_w2j / sizeof reserved_w2j[0])

/* Elements in a comma list: room for the parsed form. */
static size_t list_room(const char *s)
{
    size_t n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

/* wal2json_options: name=value pairs, none of the reserved names; an empty
 * value (or one trailing comma) adds nothing. */
static int parse_w2j_options(config *c, char *err, size_t errlen)
{
    const char *v = c->wal2json_options;
    list_iter it;
    slice e;
    c->nw2j_opts = 0;
    c->w2j_opts = xrealloc(c->w2j_opts, list_room(v) * sizeof *c->w2j_opts);
    list_begin(&it, v, strlen(v), 0);
    while (list_next(&it, &e)) {
        const char *eq = memchr(e.p, '=', e.n);
        if (e.n == 0 && it.last)
            break;
        if (!eq || eq == e.p) {
            snprintf(err, errlen, "expected name=value, got \"%.*s\"", (int)e.n, e.p);
            return -1;
        }
        size_t nn = (size_t)(eq - e.p), vn = e.n - nn - 1;
        const char *name = trim(e.p, &nn), *val = trim(eq + 1, &vn);
        for (size_t i = 0; i < NRESERVED_W2J; i++)
            if (ieq(name, nn, reserved_w2j[i])) {
                snprintf(err, errlen, "\"%s\" is set by pgcdc itself and cannot be given", reserved_w2j[i]);
                return -1;
            }
        for (size_t i = 0; i < nn; i++)
            if (!(isalnum((unsigned char)name[i]) || name[i] == '-' || name[i] == '_')) {
                snprintf(err, errlen, "bad option name \"%.*s\"", (int)nn, name);
                return -1;
            }
        c->w2j_opts[c->nw2j_opts++] = (w2j_opt){ { name, nn }, { val, vn } };
    }
    return 0;
}

/* tables: wal2json add-tables elements, each schema.table (either may be
 * '*'), with backslash escapes for ',', '.' and '*'. */
static int parse_tables(config *c, char *err, size_t errlen)
{
    list_iter it;
    slice e;
    c->ntable_pats = 0;
    c->table_pats = xrealloc(c->table_pats, list_room(c->tables) * sizeof *c->table_pats);
    list_begin(&it, c->tables, strlen(c->tables), 1);
    while (list_next(&it, &e)) {
        table_pat *t = &c->table_pats[c->ntable_pats];
        if (e.n == 0 || table_pat_of(e, t) != 1 || t->schema.n == 0 || t->table.n == 0) {
            snprintf(err, errlen, "each element must be schema.table (either may be *), got \"%.*s\"",
                     (int)(e.n > 100 ? 100 : e.n), e.p);
            return -1;
        }
        c->ntable_pats++;
    }
    return 0;
}

/* allowed_origins and trusted_proxies: their non-empty elements. */
static void parse_words(const char *v, word_list *w)
{
    free(w->v);
    if (word_list_parse(v, w)) {
        log_error("out of memory");
        exit(2);
    }
}

/* Parses the list setting key (already stored in c), once, into its
 * array.  Returns 0, or -1 with the reason in err. */
static int config_list(const char *key, config *c, char *err, size_t errlen)
{
    if (!strcmp(key, "tables"))
        return parse_tables(c, err, errlen);
    if (!strcmp(key, "wal2json_options"))
        return parse_w2j_options(c, err, errlen);
    if (!strcmp(key, "trusted_proxies")) {
        parse_words(c->trusted_proxies, &c->proxies);
        /* peers are compared as inet_ntop writes them */
        for (unsigned i = 0; i < c->proxies.n; i++) {
            slice e = c->proxies.v[i];
            char a[64], canon[INET6_ADDRSTRLEN];
            unsigned char bin[16];
            int ok = 0;
            if (e.n < sizeof a) {
                memcpy(a, e.p, e.n);
                a[e.n] = 0;
                int af = strchr(a, ':') ? AF_INET6 : AF_INET;
                ok = inet_pton(af, a, bin) == 1 && inet_ntop(af, bin, canon, sizeof canon);
                if (ok && strcmp(canon, a)) {
                    snprintf(err, errlen, "write the address \"%s\" as \"%s\"", a, canon);
                    return -1;
                }
            }
            if (!ok) {
                snprintf(err, errlen, "expected IPv4 or IPv6 addresses, got \"%.*s\"", (int)(e.n > 100 ? 100 : e.n),
                         e.p);
                return -1;
            }
        }
    }
    if (!strcmp(key, "allowed_origins")) {
        parse_words(c->allowed_origins, &c->origins);
        /* an Origin header is scheme://host[:port], never a path */
        for (unsigned i = 0; i < c->origins.n; i++) {
            slice e = c->origins.v[i];
            const char *sep = NULL;
            for (size_t k = 0; !sep && k + 3 <= e.n; k++)
                if (!memcmp(e.p + k, "://", 3))
                    sep = e.p + k;
            int ok = (e.n == 1 && e.p[0] == '*') || (e.n == 4 && !memcmp(e.p, "null", 4)) ||
                     (sep && sep > e.p && (size_t)(sep - e.p) + 3 < e.n &&
                      !memchr(sep + 3, '/', e.n - (size_t)(sep - e.p) - 3));
            if (!ok) {
                snprintf(err, errlen, "an origin is scheme://host[:port] with no path (or *), got \"%.*s\"",
                         (int)(e.n > 100 ? 100 : e.n), e.p);
                return -1;
            }
        }
    }
    return 0;
}

#define SECRET_MIN 16   /* bytes of token and grant_secret */
#define JWT_SECRET_MIN 32   /* bytes of jwt_secret (HS256 keys are 256 bits) */

/* Reads and parses a JWKS file into a new jwks.  Returns it, or NULL with
 * the reason in err. */
static jwks *jwks_load(const char *path, char *err, size_t errlen)
{
    char why[200];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %.200s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(JWKS_MAX_LEN + 1);
    size_t n = fread(buf, 1, JWKS_MAX_LEN + 1, f);
    int bad = ferror(f);
    fclose(f);
    jwks *k = NULL;
    if (bad)
        snprintf(err, errlen, "cannot read %.200s", path);
    else if (n > JWKS_MAX_LEN)
        snprintf(err, errlen, "%.200s is larger than 1 MiB", path);
    else {
        k = xmalloc(sizeof *k);
        if (jwks_parse(k, buf, n, why, sizeof why) < 0) {
            snprintf(err, errlen, "%.200s: %s", path, why);
            free(k);
            k = NULL;
        }
    }
    free(buf);
    return k;
}

/* Copies a libpq message with the text between double quotes replaced by
 * "..." (one punctuation character, as in missing "=", is kept): libpq quotes the pieces of the connection string it complains
 * about, and those may be a password. */
static void redact_quoted(const char *m, char *out, size_t cap)
{
    size_t o = 0;
    while (*m && o + 6 < cap) {
        if (*m == '"' && m[1] && ispunct((unsigned char)m[1]) && m[2] == '"') {
            memcpy(out + o, m, 3);
            o += 3;
            m += 3;
            continue;
        }
        if (*m == '"') {
            const char *q = strchr(m + 1, '"');
            memcpy(out + o, "\"...\"", 5);
            o += 5;
            m = q ? q + 1 : m + strlen(m);
            continue;
        }
        out[o++] = *m++;
    }
    while (o && (out[o - 1] == '\n' || out[o - 1] == ' '))
        o--;
    out[o] = 0;
}

/* conninfo must be what libpq can parse: key = value pairs or a URI (a
 * bare word is a database name, as libpq takes it).  The error never holds
 * the value, which may carry a password. */
static int check_conninfo(const char *v, char *err, size_t errlen)
{
    char *perr = NULL, msg[256];
    if (!*v) {
        snprintf(err, errlen, "must not be empty");
        return -1;
    }
    if (!strchr(v, '=') && strncmp(v, "postgresql://", 13) && strncmp(v, "postgres://", 11))
        return 0;
    PQconninfoOption *o = PQconninfoParse(v, &perr);
    if (o) {
        PQconninfoFree(o);
        return 0;
    }
    redact_quoted(perr ? perr : "out of memory", msg, sizeof msg);
    PQfreemem(perr);
    snprintf(err, errlen, "not a valid libpq connection string or URI (%s; the value is not shown "
             "since it may hold a password)", msg);
    return -1;
}

static int check_value(const keydef *k, const char *v, config *c, char *err, size_t errlen)
{
    void *field = (char *)c + k->off;
    long long ll;
    if (k->kind == K_BOOL) {
        if (parse_bool(v, (int *)field)) {
            snprintf(err, errlen, "expected true or false, got \"%.100s\"", v);
            return -1;
        }
        return 0;
    }
    if (k->kind == K_INT || k->kind == K_SIZE) {
        if (parse_ll(v, &ll) || ll < k->min || ll > k->max) {
            snprintf(err, errlen, "expected a whole number from %lld to %lld, got \"%.100s\"",
                     k->min, k->max, v);
            return -1;
        }
        if (k->kind == K_INT)
            *(int *)field = (int)ll;
        else
            *(size_t *)field = (size_t)ll;
        return 0;
    }
    if (!strcmp(k->name, "slot")) {
        size_t n = strlen(v);
        if (n == 0 || n > 63 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_") != n) {
            snprintf(err, errlen, "a slot name is 1 to 63 characters of [a-z0-9_], got \"%.100s\"", v);
            return -1;
        }
    } else if (!strcmp(k->name, "listen") || !strcmp(k->name, "admin_listen")) {
        char h[256], p[8];
        if (parse_listen(v, h, sizeof h, p, sizeof p)) {
            snprintf(err, errlen, "expected host:port, [v6]:port or :port, got \"%.100s\"", v);
            return -1;
        }
    } else if (!strcmp(k->name, "conninfo")) {
        if (check_conninfo(v, err, errlen))
            return -1;
    } else if (!strcmp(k->name, "jwt_secret")) {
        if (strlen(v) < JWT_SECRET_MIN) {
            snprintf(err, errlen, "must be at least %d bytes (it has %zu); use a long random value, "
                     "e.g. from openssl rand -hex 32", JWT_SECRET_MIN, strlen(v));
            return -1;
        }
    } else if (!strcmp(k->name, "jwt_keys")) {
        jwks *keys = jwks_load(v, err, errlen);
        if (!keys)
            return -1;
        free(c->keys);
        c->keys = keys;
    } else if (!strcmp(k->name, "token") || !strcmp(k->name, "grant_secret")) {
        /* a grant pairs a known payload with its MAC: a short secret can be
         * found offline by trying them all */
        if (strlen(v) < SECRET_MIN) {
            snprintf(err, errlen, "must be at least %d bytes (it has %zu); use a long random value, "
                     "e.g. from openssl rand -hex 32", SECRET_MIN, strlen(v));
            return -1;
        }
    }
    char **sp = (char **)field;
    free(*sp);
    *sp = xstrndup(v, strlen(v));
    return config_list(k->name, c, err, errlen);
}

/* One [rules] line: table = rule.  Returns 0, or -1 after printing the
 * error with the file and line. */
static int config_rule(config *c, const char *key, size_t kn, const char *val,
                       const char *path, int lineno)
{
    char err[512], name[512];
    rule r;
    snprintf(name, sizeof name, "%.*s", (int)kn, key);
    if (rule_parse(name, val, &r, err, sizeof err)) {
        fprintf(stderr, "pgcdc: %s:%d: bad rule for \"%s\": %s\n", path, lineno, name, err);
        return -1;
    }
    for (unsigned i = 0; i < c->nrules; i++) {
        const rule *o = &c->rules[i];
        if ((!o->table && !r.table) ||
            (o->table && r.table && !strcmp(o->schema, r.schema) && !strcmp(o->table, r.table))) {
            fprintf(stderr, "pgcdc: %s:%d: duplicate rule for \"%s\" (first set on line %d)\n",
                    path, lineno, name, o->line);
            rule_free(&r);
            return -1;
        }
    }
    r.line = lineno;
    c->rules = xrealloc(c->rules, (c->nrules + 1) * sizeof *c->rules);
    c->rules[c->nrules++] = r;
    return 0;
}

static int key_line(const int *seen, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keydefs[i].name, name))
            return seen[i];
    return 0;
}

/* One way of authenticating clients: token, grant_secret, or the JWT keys;
 * the JWT settings and [rules] need jwt_secret or jwt_keys.  Returns 0, or
 * -1 after printing the error with the line that conflicts. */
static int config_check_auth(const config *c, const char *path, const int *seen, int rules_line)
{
    int jl = key_line(seen, "jwt_secret");
    if (!jl || (key_line(seen, "jwt_keys") && key_line(seen, "jwt_keys") > jl))
        jl = key_line(seen, "jwt_keys");
    static const char *const other[] = { "token", "grant_secret" };
    for (int i = 0; i < 2; i++) {
        int ol = key_line(seen, other[i]);
        if (jl && ol) {
            fprintf(stderr, "pgcdc: %s:%d: \"%s\" cannot be combined with jwt_secret or jwt_keys: "
                    "set one way of authenticating clients\n", path, ol > jl ? ol : jl, other[i]);
            return -1;
        }
    }
    if (!c->jwt_secret && !c->jwt_keys) {
        static const char *const need[] = { "jwt_issuer", "jwt_audience" };
        for (int i = 0; i < 2; i++)
            if (key_line(seen, need[i])) {
                fprintf(stderr, "pgcdc: %s:%d: \"%s\" needs jwt_secret or jwt_keys\n", path,
                        key_line(seen, need[i]), need[i]);
                return -1;
            }
        if (rules_line) {
            fprintf(stderr, "pgcdc: %s:%d: [rules] apply to clients with a JWT: set jwt_secret or "
                    "jwt_keys in [server]\n", path, rules_line);
            return -1;
        }
    }
    return 0;
}

/* Reads an INI file into c.  Returns 0, or -1 after printing an error that
 * names the file, the line and the key. */
static int config_load(config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[8192], section[64] = "";
    char err[512];
    int lineno = 0, rules_line = 0;
    int seen[NKEYS] = { 0 };

    if (!f) {
        fprintf(stderr, "pgcdc: %s: cannot open configuration file: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        lineno++;
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            fprintf(stderr, "pgcdc: %s:%d: line too long\n", path, lineno);
            goto fail;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        const char *s = trim(line, &n);
        if (n == 0 || *s == ';' || *s == '#')
            continue;
        if (*s == '[') {
            if (s[n - 1] != ']') {
                fprintf(stderr, "pgcdc: %s:%d: malformed section header\n", path, lineno);
                goto fail;
            }
            size_t sn = n - 2;
            const char *name = trim(s + 1, &sn);
            if (!ieq(name, sn, "postgres") && !ieq(name, sn, "server") && !ieq(name, sn, "rules")) {
                fprintf(stderr, "pgcdc: %s:%d: unknown section [%.*s] (expected [postgres], [server] or [rules])\n",
                        path, lineno, (int)sn, name);
                goto fail;
            }
            if (ieq(name, sn, "rules") && !rules_line)
                rules_line = lineno;
            snprintf(section, sizeof section, "%.*s", (int)sn, name);
            for (char *p = section; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            continue;
        }
        const char *eq = memchr(s, '=', n);
        if (!eq) {
            fprintf(stderr, "pgcdc: %s:%d: expected key = value\n", path, lineno);
            goto fail;
        }
        size_t kn = (size_t)(eq - s), vn = n - kn - 1;
        const char *key = trim(s, &kn);
        const char *val = trim(eq + 1, &vn);
        char vbuf[8192];
        snprintf(vbuf, sizeof vbuf, "%.*s", (int)vn, val);
        if (!*section) {
            fprintf(stderr, "pgcdc: %s:%d: key \"%.*s\" outside of a section\n", path, lineno, (int)kn, key);
            goto fail;
        }
        if (!strcmp(section, "rules")) {
            if (config_rule(c, key, kn, vbuf, path, lineno))
                goto fail;
            continue;
        }
        size_t i;
        for (i = 0; i < NKEYS; i++)
            if (!strcmp(keydefs[i].section, section) && ieq(key, kn, keydefs[i].name))
                break;
        if (i == NKEYS) {
            fprintf(stderr, "pgcdc: %s:%d: unknown key \"%.*s\" in [%s]\n", path, lineno, (int)kn, key, section);
            goto fail;
        }
        if (seen[i]) {
            fprintf(stderr, "pgcdc: %s:%d: duplicate key \"%s\" in [%s] (first set on line %d)\n",
                    path, lineno, keydefs[i].name, section, seen[i]);
            goto fail;
        }
        seen[i] = lineno;
        if (check_value(&keydefs[i], vbuf, c, err, sizeof err)) {
            fprintf(stderr, "pgcdc: %s:%d: bad value for \"%s\": %s\n", path, lineno, keydefs[i].name, err);
            goto fail;
        }
    }
    fclose(f);
    if (!c->conninfo) {
        fprintf(stderr, "pgcdc: %s: missing required key \"conninfo\" in [postgres]\n", path);
        return -1;
    }
    return config_check_auth(c, path, seen, rules_line);
fail:
    fclose(f);
    return -1;
}

/* ==== Server state ====================================================== */

typedef struct frame frame;
typedef struct table table;
typedef struct group group;
typedef struct client client;
typedef struct lookup lookup;
typedef struct snapjob snapjob;
typedef struct snapvis snapvis;

/* Bytes to send: a change's frame (shared, reference-counted, maybe in the
 * history), or a per-client message (HTTP response, pong, close). */
struct frame {
    /* ordered so that the header is 56 bytes: a change of up to 200 bytes
     * fits a 256-byte pool block */
    uint32_t refs;
    uint32_t hdr;        /* WebSocket header bytes before the payload */
    uint32_t len;        /* bytes in data (a record is under 1 GB) */
    uint32_t idx;        /* position: index inside the transaction ... */
    uint32_t xid;        /* the transaction's id (from its B record) */
    uint8_t cls;         /* pool size class, or NCLASS for malloc */
    uint8_t types;       /* SUB_* bit of the change, 0 for other bytes */
    uint8_t change;      /* counts in frames_sent when written whole */
    uint64_t lsn;        /* ... and the commit LSN */
    uint64_t seq;        /* history sequence number */
    table *tab;
    frame *sse;          /* the same message as a Server-Sent Event, built
                            when an SSE client first needs it; owned here */
    uint8_t data[];
};
_Static_assert(sizeof(void *) != 8 || offsetof(struct frame, data) == 56, "frame header grew past 56 bytes");

/* Identical subscriptions share a group, so a change is matched once per
 * distinct subscription and then queued to every member. */
struct group {
    spec *sp;
    table *tab;
    client *members;
    unsigned nmembers;
    group *next;
};

struct table {
    char *schema, *name;
    uint32_t hash;
    int64_t verified;    /* when the catalog last said it exists (ms) */
    int64_t priv_checked; /* when the catalog said whether ... */
    uint8_t can_select;  /* ... pgcdc's role may SELECT it */
    group *groups;
    table *next;         /* hash chain */
    /* this table's frames in the history, oldest first (a ring), so that a
     * replay looks at them and no others */
    frame **hx;
    uint32_t hxcap, hxhead, hxn;
};

enum cstate { C_HTTP, C_PENDING, C_WS, C_CLOSING, C_LINGER };

/* What an upgrade waiting for the catalog has to remember. */
typedef struct pending {
    spec *sp;
    ws_params prm;
    char *sub;           /* the JWT's sub claim, for the log; NULL if none */
    char accept[WS_ACCEPT_LEN + 1];
    lookup *lk;
    uint64_t since_lsn;  /* since=, parsed */
    uint32_t since_idx;
    char *leid;          /* SSE: the Last-Event-ID header, used as since */
} pending;

struct client {
    int fd;
    int slot;            /* index in the poll arrays */
    uint8_t state;       /* enum cstate */
    uint8_t pollout;     /* POLLOUT is being asked for */
    uint8_t dirty;       /* on the dirty list */
    uint8_t replaying;   /* catching up from the history */
    uint8_t close_after; /* close (HTTP: linger) once the queue is written */
    uint8_t got_close;   /* a close frame came from the peer */
    uint8_t sent_close;  /* a close frame was queued */
    uint8_t counted;     /* counts in nclients (upgraded) */
    uint8_t head;        /* the request is HEAD: answers carry no body */
    uint8_t admin;       /* accepted on admin_listen */
    uint8_t browser;     /* an upgrade with an allowed Origin: refusals become close 4000 + status */
    int64_t deadline;    /* ms: request, close or linger timeout; 0 none */
    int64_t last_rx;     /* ms of the last byte received */
    int64_t last_ping;
    int64_t grant_exp;   /* unix seconds; 0 none */
    int64_t token_exp;   /* the JWT's exp, unix seconds; 0 none */
    char *req;           /* HTTP request bytes (C_HTTP, C_PENDING) */
    uint32_t req_len, req_cap;
    uint32_t head_len;   /* bytes of the request head */
    size_t scanned;      /* request bytes searched for the head's end */
    pending *pend;
    group *grp;
    client *gnext, *gprev;
    client *dnext;       /* dirty list */
    int64_t wait_ms;     /* ms its write has waited for more of a transaction; 0 none */
    frame **q;           /* ring of queued frames */
    uint32_t qhead, qn, qcap, qoff;
    size_t qbytes;
    uint64_t cursor;     /* replaying: next history seq to look at */
    uint64_t since_lsn;  /* resumed: changes at or before this position */
    uint32_t since_idx;  /* ... were seen already; skip them */
    uint8_t has_since;
    uint8_t sse;         /* transport: Server-Sent Events, not WebSocket */
    uint8_t sse_hold;    /* SSE: since not decidable yet, held open */
    char *cors;          /* SSE: Access-Control-Allow-Origin value, or NULL */
    uint8_t snapping;    /* its snapshot's rows are not all sent yet */
    uint8_t snap_replay; /* catching up after its snapshot */
    snapjob *snap;       /* that snapshot, waiting or running */
    snapvis *vis;        /* after it: what the snapshot saw, to skip */
    uint64_t id;
    char addr[48];
    client *wnext, *wprev;  /* request unfinished: the waiting list, oldest first */
    uint8_t waiting;        /* ... on it */
    uint8_t peer_counted;   /* counts in its peer's waiting connections */
    ws_parser wp;
};

/* An upgrade waits on a lookup while an ordinary connection asks the
 * catalog whether its table exists; c is NULL once the client has gone. */
struct lookup {
    client *c;
    char *schema, *name;
    lookup *next;
};

/* Reasons of pgcdc_auth_failures_total, in the order of authf_names. */
enum { AUTHF_TOKEN, AUTHF_JWT, AUTHF_GRANT, AUTHF_ORIGIN, AUTHF_RULE, AUTHF_N };
static const char *const authf_names[AUTHF_N] = { "token", "jwt", "grant", "origin", "rule" };

enum rstate { R_WAIT, R_CONNECTING, R_IDENTIFY, R_SET, R_SLOTINFO,
              R_CREATE, R_START, R_STREAMING, R_STOPPING };

/* The catalog connection: down, connecting, idle (ready), busy (a query is out). */
enum cat_state { CAT_DOWN, CAT_CONNECTING, CAT_IDLE, CAT_BUSY };

#define MISSING_CACHE_MS 2000   /* "table does not exist" remembered */
#define MISSING_SLOTS 64

#define NCLASS 6             /* frame pool size classes */

/* Replication: the connection, its handshake and the stream position. */
typedef struct repl_state {
    PGconn *conn;
    enum rstate state;
    int64_t wait_until;       /* R_WAIT: reconnect at (ms) */
    int backoff;              /* seconds */
    int ever;                 /* streamed at least once */
    char server_version[32];
    char stream[17];          /* /health "stream"; empty until identified */
    int in_recovery;          /* the server is a standby */
    uint64_t slot_confirmed;  /* the slot's confirmed_flush_lsn when found */
    int slot_found;
    uint64_t cur_commit;      /* commit LSN of the open transaction */
    uint32_t cur_n;
    uint32_t cur_xid;         /* xid of the open transaction */
    int in_txn;
    int turn_commit;          /* a commit arrived in this loop turn */
    uint64_t done_commit;     /* newest transaction handed out entirely */
    uint64_t wal_end;         /* server's WAL end from the stream */
    uint64_t processed;       /* last LSN processed */
    uint64_t confirmed;       /* last LSN confirmed to the server */
    int64_t last_txn_ms;      /* when a B/C last arrived */
    int64_t last_status_ms;
    int reply_now;
    int more;                 /* libpq may hold more messages */
    int64_t rx_ms;            /* when the stream last said anything */
    int64_t attempt_ms;       /* when this connection attempt began */
    /* wal2json scratch */
    json_tok *toks;
    w2j_col *cols;
    unsigned ntoks, ncols;
} repl_state;

/* The history: a ring of change frames by sequence number, and the oldest
 * position a client can resume from. */
typedef struct hist_state {
    frame **ring;
    size_t cap, head, n, bytes;
    uint64_t first_seq, next_seq;
    uint64_t floor_lsn;     /* positions before (floor_lsn, floor_idx) -> 410 */
    uint32_t floor_idx;
    int floor_known;        /* the slot said where it resumes */
    uint64_t last_lsn;      /* last position broadcast */
    uint32_t last_idx;
    int have_last;
    int64_t replay_work;    /* what replays may still do this loop turn */
} hist_state;

/* The ordinary connection that asks whether a table exists. */
typedef struct cat_conn {
    PGconn *conn;
    enum cat_state state;
    int64_t retry;            /* CAT_DOWN: connect again at (ms) */
    int64_t since;            /* when it began waiting (connecting or busy) */
    lookup *lk_head, *lk_tail;
} cat_conn;

/* The listening socket and the client connections. */
typedef struct http_state {
    int listen_fd;
    int admin_fd;             /* admin_listen, or -1 */
    int64_t accept_paused;    /* out of descriptors: accept again after */
    int64_t emfile_logged;    /* when that was last logged */
    unsigned nclients;        /* upgraded WebSocket clients */
    unsigned nconns;          /* all client connections */
    uint64_t next_client_id;
    client *dirty;            /* clients with bytes to write */
    client *graveyard;        /* closed this iteration, freed at its end */
    /* connections whose request is not complete yet, oldest first, and
     * how many each peer address holds (chained hash of peer_count) */
    struct missing { char *schema, *name; int64_t at; } missing[MISSING_SLOTS];
    int missing_next;
    client *wait_head, *wait_tail;
    unsigned nwaiting;
    struct peer_count *peers[256];
    uint64_t shed_unlogged;   /* shed since the last log line about it */
    int64_t shed_logged;
    uint8_t rbuf[65536];      /* read buffer for upgraded clients */
} http_state;

/* Snapshot connections: down, connecting, pinning settings, idle, and
 * the steps of one snapshot: the prologue (BEGIN, LOCK, snapshot, catalog),
 * DECLARE, FETCH batches (or paused between them), COMMIT or ROLLBACK. */
enum snapc_state { SC_DOWN, SC_CONNECTING, SC_SETUP, SC_IDLE, SC_PROLOGUE, SC_DECLARE,
                   SC_FETCH, SC_PAUSED, SC_END };

typedef struct snapconn {
    PGconn *conn;
    PGcancel *cancel;
    enum snapc_state state;
    int slot;                 /* poll slot */
    snapjob *job;             /* the snapshot it runs */
    PGresult *rows;           /* a FETCH's rows, rendered once it is complete */
    int64_t since;            /* when the current step began (ms) */
    int nres;                 /* results of the prologue so far */
    int failed;               /* the current command failed ... */
    char err[256];            /* ... with this message */
} snapconn;

typedef struct snap_state {
    snapconn *conns;          /* max_snapshots of them */
    snapjob *wait_head, *wait_tail;
    unsigned waiting, active;
    uint64_t total, rows, fail_query, fail_timeout, fail_overtaken;
} snap_state;

/* Counters behind /metrics. */
typedef struct counters {
    uint64_t changes, frames, bytes, drop_slow, drop_proto, drop_timeout,
             reconnects, resumes, skipped, shed;
    uint64_t auth_fail[AUTHF_N];
} counters;

typedef struct server {
    config cfg;
    const char *config_path;
    int log_level;            /* L_* */
    int sigpipe[2];
    volatile int stop;
    volatile int hup;         /* SIGHUP: re-read jwt_keys */
    int64_t now;
    int64_t stop_deadline;

    /* poll arrays: 0 listen, 1 self-pipe, 2 replication, 3 catalog, then clients */
    struct pollfd *pfd;
    client **pcl;
    int npfd, cappfd;

    /* tables and subscriptions */
    table **tabs;
    unsigned ntabs_buckets, ntabs;
    table *tab_last;          /* the table the last record named ... */
    char tab_raw[128];        /* ... by these bytes (schema then table, */
    uint8_t tab_rsn, tab_rtn; /* as in the record, escapes and all) */
    char pos_head[32];        /* {"pos":"X/X: of ... */
    uint64_t pos_head_lsn;    /* ... this commit LSN */
    uint8_t pos_head_n;       /* (0: none yet) */
    char pos_idx[12];         /* the index last written, in decimal */
    uint32_t pos_idx_v;
    uint8_t pos_idx_n;        /* (0: none yet) */
    match_ctx match;          /* the change being matched */
    char *mbuf;               /* ... its unescaped values */
    size_t mcap;
    col_cache *mcols;         /* ... its columns, COLS_MAX */
    jwt *tok;                 /* the token being checked (about 20 KB) */
    /* projected frames of the change being broadcast, one per projection */
    struct proj_frame { const spec *sp; frame *f; } *proj;
    unsigned nproj, capproj;

    /* frame pool: free lists per size class */
    frame *pool[NCLASS];
    size_t pool_n[NCLASS];

    http_state http;
    hist_state hist;
    repl_state repl;
    cat_conn cat;
    snap_state snap;
    counters count;
} server;

static server S = { .log_level = L_INFO };

/* One line on stderr: UTC time, level, message (defined here, after S,
 * whose log_level it reads). */
static void logf_(int level, const char *fmt, ...)
{
    static const char *names[] = { "error", "warn", "info", "debug" };
    char line[1024], out[4096];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level > S.log_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, names[level]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* libpq's messages end with a newline: drop trailing blanks */
    size_t len = strlen(line);
    while (len > (size_t)n && (line[len - 1] == '\n' || line[len - 1] == ' '))
        len--;
    log_escape(line, len, out, sizeof out);
    fprintf(stderr, "%s\n", out);
}


static void waiting_del(client *c);

#define TOKS_MAX 65536
#define COLS_MAX 4096
#define REQ_MAX 8192
/* Times, in milliseconds. */
#define TICK_MS 100               /* the loop's longest sleep, and its timer step */
#define REQUEST_TIMEOUT_MS 10000  /* a request head must arrive within */
#define CLOSE_TIMEOUT_MS 5000     /* a closing client must answer the close */
#define DRAIN_TIMEOUT_MS 30000    /* ... or, with bytes still queued, drain first */
#define LINGER_MS 2000            /* after an HTTP answer, before closing */
#define TABLE_CACHE_MS 5000       /* the catalog's "table exists" is trusted */
#define CATALOG_TIMEOUT_MS 10000  /* the catalog connection must connect or answer */
#define CATALOG_RETRY_MS 1000     /* after it fails, before connecting again */
#define CONNECT_TIMEOUT_MS 30000  /* the replication handshake must finish */
#define SHUTDOWN_MS 3000          /* on SIGTERM, for clients to take their 1001 */
#define ACCEPT_PAUSE_MS 100       /* out of descriptors: accept again after */
#define LOG_EVERY_MS 10000        /* a repeated warning is logged at most this often */
/* Work all replays together may do in one loop turn: a frame looked at
 * costs 1, plus 1 per 256 bytes it holds (about a millisecond in all), so
 * no replay holds up the others for long; each takes up again next turn. */
#define REPLAY_WORK 2048
#define WAITING_MAX 1024     /* connections with an unfinished request */
#define PEER_WAITING_MAX 64  /* ... from one peer address */

static int pos_cmp(uint64_t al, uint32_t ai, uint64_t bl, uint32_t bi)
{
    if (al != bl)
        return al < bl ? -1 : 1;
    return ai < bi ? -1 : ai > bi;
}

/* ==== Frames and the history =========================================== */

/* Frames come from per-size free lists so that the hot path does not call
 * malloc for each change; each list keeps at most POOL_KEEP bytes. */
#define POOL_KEEP (1u << 20)
static const size_t class_size[NCLASS] = { 256, 512, 1024, 2048, 4096, 8192 };

static frame *frame_new(size_t len)
{
    size_t need = sizeof(frame) + len;
    frame *f;
    int cls;
    for (cls = 0; cls < NCLASS && class_size[cls] < need; cls++)
        ;
    if (cls < NCLASS && S.pool[cls]) {
        f = S.pool[cls];
        S.pool[cls] = *(frame **)f->data;
        S.pool_n[cls]--;
    } else {
        f = xmalloc(cls < NCLASS ? class_size[cls] : need);
    }
    memset(f, 0, sizeof *f);
    f->refs = 1;
    f->cls = (uint8_t)cls;
    f->len = (uint32_t)len;
    return f;
}

static size_t frame_cost(const frame *f)
{
    return f->cls < NCLASS ? class_size[f->cls] : sizeof(frame) + f->len;
}

static void frame_unref(frame *f)
{
    if (--f->refs)
        return;
    if (f->sse)
        frame_unref(f->sse);
    if (f->cls < NCLASS && (S.pool_n[f->cls] + 1) * class_size[f->cls] <= POOL_KEEP) {
        *(frame **)f->data = S.pool[f->cls];
        S.pool[f->cls] = f;
        S.pool_n[f->cls]++;
    } else {
        free(f);
    }
}

/* A frame holding a WebSocket message (opcode, payload). */
static frame *frame_ws(int opcode, const void *payload, size_t n)
{
    uint8_t h[10];
    size_t hl = ws_frame_header(h, opcode, n);
    frame *f = frame_new(hl + n);
    memcpy(f->data, h, hl);
    if (n)
        memcpy(f->data + hl, payload, n);
    f->hdr = (uint32_t)hl;
    return f;
}

/* The change frame f with only sp's columns (columns=), as a new frame
 * with the same position; NULL if the record cannot be read (then nothing
 * is sent rather than more columns than asked for). */
static frame *frame_project(const frame *f, const spec *sp)
{
    const char *pl = (const char *)f->data + f->hdr;
    size_t n = f->len - f->hdr;
    char *out = xmalloc(n ? n : 1);
    long pn = w2j_project(pl, n, sp->cols, sp->ncols, S.repl.toks, S.repl.ntoks, out, n);
    if (pn < 0) {
        free(out);
        return NULL;
    }
    frame *p = frame_ws(WS_OP_TEXT, out, (size_t)pn);
    free(out);
    p->change = 1;
    p->types = f->types;
    p->tab = f->tab;
    p->lsn = f->lsn;
    p->idx = f->idx;
    p->xid = f->xid;
    p->seq = f->seq;
    return p;
}

/* The projection of f for sp, built once per distinct projection of the
 * change being broadcast (S.proj holds them until the change is done). */
static frame *frame_projected(frame *f, const spec *sp)
{
    for (unsigned i = 0; i < S.nproj; i++) {
        const spec *o = S.proj[i].sp;
        if (o->ncols != sp->ncols)
            continue;
        unsigned k = 0;
        while (k < sp->ncols && !strcmp(o->cols[k], sp->cols[k]))
            k++;
        if (k == sp->ncols)
            return S.proj[i].f;
    }
    frame *p = frame_project(f, sp);
    if (!p)
        return NULL;
    if (S.nproj == S.capproj) {
        S.capproj = S.capproj ? 2 * S.capproj : 8;
        S.proj = xrealloc(S.proj, S.capproj * sizeof *S.proj);
    }
    S.proj[S.nproj].sp = sp;
    S.proj[S.nproj].f = p;
    S.nproj++;
    return p;
}

static frame *hist_at(uint64_t seq)
{
    if (seq < S.hist.first_seq || seq >= S.hist.first_seq + S.hist.n)
        return NULL;
    return S.hist.ring[(S.hist.head + (seq - S.hist.first_seq)) & (S.hist.cap - 1)];
}

/* The SSE sibling of a message frame (docs/protocol.md, Server-Sent
 * Events): built once, then shared by every SSE client like the frame. */
static frame *frame_sse(frame *f)
{
    if (f->sse)
        return f->sse;
    const char *p = (const char *)f->data + f->hdr;
    size_t n = f->len - f->hdr;
    frame *e = frame_new(sse_event_len(p, n));
    sse_event((char *)e->data, p, n);
    e->types = f->types;
    e->change = f->change;
    e->lsn = f->lsn;
    e->idx = f->idx;
    e->seq = f->seq;
    e->tab = f->tab;
    f->sse = e;
    /* a change in the history: its event counts against the history too */
    if (f->change && hist_at(f->seq) == f)
        S.hist.bytes += frame_cost(e);
    return e;
}

/* The table's index of the history: frame i (0 = oldest) ... */
static frame *tab_hist_at(const table *t, uint32_t i)
{
    return t->hx[(t->hxhead + i) & (t->hxcap - 1)];
}

/* ... the first at or after sequence number seq (t->hxn if none) ... */
static uint32_t tab_hist_from(const table *t, uint64_t seq)
{
    uint32_t lo = 0, hi = t->hxn;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (tab_hist_at(t, mid)->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ... a new frame, and the oldest one leaving. */
static void tab_hist_push(table *t, frame *f)
{
    if (t->hxn == t->hxcap) {
        uint32_t ncap = t->hxcap ? t->hxcap * 2 : 64;
        frame **nx = xmalloc(ncap * sizeof *nx);
        for (uint32_t i = 0; i < t->hxn; i++)
            nx[i] = tab_hist_at(t, i);
        free(t->hx);
        t->hx = nx;
        t->hxcap = ncap;
        t->hxhead = 0;
    }
    t->hx[(t->hxhead + t->hxn) & (t->hxcap - 1)] = f;
    t->hxn++;
}

static void tab_hist_pop(table *t, frame *f)
{
    if (t->hxn && tab_hist_at(t, 0) == f) {
        t->hxhead = (t->hxhead + 1) & (t->hxcap - 1);
        t->hxn--;
    }
}

static void hist_evict(void)
{
    frame *f = S.hist.ring[S.hist.head];
    if (f->tab)
        tab_hist_pop(f->tab, f);
    S.hist.head = (S.hist.head + 1) & (S.hist.cap - 1);
    S.hist.n--;
    S.hist.first_seq++;
    S.hist.bytes -= frame_cost(f) + (f->sse ? frame_cost(f->sse) : 0);
    /* whoever saw the evicted change can still resume; before it, not */
    if (pos_cmp(f->lsn, f->idx, S.hist.floor_lsn, S.hist.floor_idx) > 0) {
        S.hist.floor_lsn = f->lsn;
        S.hist.floor_idx = f->idx;
    }
    frame_unref(f);
}

/* Keeps f (takes a reference) and gives it the next sequence number. */
static void hist_push(frame *f)
{
    f->seq = S.hist.next_seq++;
    if (!S.cfg.history) {
        S.hist.first_seq = S.hist.next_seq;
        S.hist.floor_lsn = f->lsn;
        S.hist.floor_idx = f->idx;
        return;
    }
    if (S.hist.n == S.hist.cap) {
        size_t ncap = S.hist.cap ? S.hist.cap * 2 : 1024;
        frame **nh = xmalloc(ncap * sizeof *nh);
        for (size_t i = 0; i < S.hist.n; i++)
            nh[i] = S.hist.ring[(S.hist.head + i) & (S.hist.cap - 1)];
        free(S.hist.ring);
        S.hist.ring = nh;
        S.hist.cap = ncap;
        S.hist.head = 0;
    }
    f->refs++;
    S.hist.ring[(S.hist.head + S.hist.n) & (S.hist.cap - 1)] = f;
    S.hist.n++;
    if (f->tab)
        tab_hist_push(f->tab, f);
    S.hist.bytes += frame_cost(f);
    while (S.hist.bytes > S.cfg.history && S.hist.n > 0)
        hist_evict();
}

/* First history sequence number whose position is after (lsn, idx). */
static uint64_t hist_after(uint64_t lsn, uint32_t idx)
{
    size_t lo = 0, hi = S.hist.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        frame *f = S.hist.ring[(S.hist.head + mid) & (S.hist.cap - 1)];
        if (pos_cmp(f->lsn, f->idx, lsn, idx) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return S.hist.first_seq + lo;
}

/* ==== Tables and groups ================================================= */

static uint32_t name_hash(const char *s, size_t sn, const char *t, size_t tn)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sn; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (size_t i = 0; i < tn; i++)
        h = (h ^ (uint8_t)t[i]) * 16777619u;
    return h;
}

/* Finds the table (raw names); creates it when create is set. */
static table *table_get(const char *schema, size_t sn, const char *name, size_t tn, int create)
{
    uint32_t h = name_hash(schema, sn, name, tn);
    if (!S.tabs) {
        if (!create)
            return NULL;
        S.ntabs_buckets = 256;
        S.tabs = calloc(S.ntabs_buckets, sizeof *S.tabs);
        if (!S.tabs)
            exit(2);
    }
    table **b = &S.tabs[h & (S.ntabs_buckets - 1)];
    for (table *t = *b; t; t = t->next)
        if (t->hash == h && strlen(t->schema) == sn && !memcmp(t->schema, schema, sn) &&
            strlen(t->name) == tn && !memcmp(t->name, name, tn))
            return t;
    if (!create)
        return NULL;
    table *t = xmalloc(sizeof *t);
    memset(t, 0, sizeof *t);
    t->schema = xstrndup(schema, sn);
    t->name = xstrndup(name, tn);
    t->hash = h;
    t->next = *b;
    *b = t;
    S.ntabs++;
    return t;
}

/* A name from a record, unescaped into buf when it has escapes (catalog
 * names are at most 63 bytes).  Returns NULL for a bad escape. */
static const char *record_name(slice v, char buf[256], size_t *n)
{
    if (!memchr(v.p, '\\', v.n)) {
        *n = v.n;
        return v.p;
    }
    long u = json_unescape(v.p, v.n, buf, 256);
    if (u < 0)
        return NULL;
    *n = (size_t)u;
    return buf;
}

/* The table a wal2json record names; created when create is set. */
static table *table_of_record(const w2j_record *r, int create)
{
    char sb[256], tb[256];
    size_t sn, tn, rsn = r->schema.n, rtn = r->table.n;
    /* consecutive changes mostly name the same table: the same bytes as
     * last time name the same table (tables are never freed) */
    if (S.tab_last && rsn == S.tab_rsn && rtn == S.tab_rtn) {
        size_t i = 0;
        while (i < rsn && S.tab_raw[i] == r->schema.p[i])
            i++;
        while (i < rsn + rtn && S.tab_raw[i] == r->table.p[i - rsn])
            i++;
        if (i == rsn + rtn)
            return S.tab_last;
    }
    const char *s = record_name(r->schema, sb, &sn), *t = record_name(r->table, tb, &tn);
    table *found = s && t ? table_get(s, sn, t, tn, create) : NULL;
    if (found && rsn + rtn <= sizeof S.tab_raw) {
        memcpy(S.tab_raw, r->schema.p, rsn);
        memcpy(S.tab_raw + rsn, r->table.p, rtn);
        S.tab_rsn = (uint8_t)rsn;
        S.tab_rtn = (uint8_t)rtn;
        S.tab_last = found;
    }
    return found;
}

static void group_join(client *c, spec *sp, table *t)
{
    group *g;
    for (g = t->groups; g; g = g->next)
        if (!strcmp(g->sp->key, sp->key))
            break;
    if (g) {
        free(sp);
    } else {
        g = xmalloc(sizeof *g);
        memset(g, 0, sizeof *g);
        g->sp = sp;
        g->tab = t;
        g->next = t->groups;
        t->groups = g;
    }
    c->grp = g;
    c->gprev = NULL;
    c->gnext = g->members;
    if (g->members)
        g->members->gprev = c;
    g->members = c;
    g->nmembers++;
}

static void group_leave(client *c)
{
    group *g = c->grp;
    if (!g)
        return;
    if (c->gprev) c->gprev->gnext = c->gnext;
    else g->members = c->gnext;
    if (c->gnext)
        c->gnext->gprev = c->gprev;
    c->grp = NULL;
    if (--g->nmembers == 0) {
        group **pp = &g->tab->groups;
        while (*pp != g)
            pp = &(*pp)->next;
        *pp = g->next;
        free(g->sp);
        free(g);
    }
}

/* ==== Clients =========================================================== */

#define SLOT_LISTEN 0
#define SLOT_PIPE 1
#define SLOT_REPL 2
#define SLOT_CAT 3
#define SLOT_ADMIN 4
#define SLOT_SNAP 5          /* max_snapshots snapshot connections */
#define SLOT_FIRST (SLOT_SNAP + S.cfg.max_snapshots)


static void set_events(client *c)
{
    short ev = 0;
    if (c->fd < 0)
        return;
    if (c->state != C_PENDING)
        ev |= POLLIN;
    if (c->pollout)
        ev |= POLLOUT;
    S.pfd[c->slot].events = ev;
}

static void mark_dirty(client *c)
{
    if (!c->dirty && c->fd >= 0) {
        c->dirty = 1;
        c->dnext = S.http.dirty;
        S.http.dirty = c;
    }
}

/* What a queued frame costs against max_queue: a change's bytes (shared
 * with the other clients), or the whole allocation of a frame made for this
 * client alone (a pong of 2 bytes still takes a pool block). */
static size_t q_cost(const frame *f)
{
    return f->change ? f->len : frame_cost(f);
}

/* Drops queued frames: all of them, or (changes_only) the change frames not
 * yet started, keeping the handshake answer, pongs and other control frames
 * in their order. */
static void q_clear(client *c, int changes_only)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->qn; i++) {
        frame *f = c->q[(c->qhead + i) & (c->qcap - 1)];
        int started = i == 0 && c->qoff > 0;
        if (changes_only && (!f->change || started)) {
            c->q[(c->qhead + kept) & (c->qcap - 1)] = f;
            kept++;
        } else {
            c->qbytes -= q_cost(f);
            frame_unref(f);
        }
    }
    c->qn = kept;
    if (!kept) {
        c->qoff = 0;
        c->qbytes = 0;
    }
}

/* Queues f (taking a reference).  A change frame that would take the
 * queue past max_queue closes the client as a slow consumer. */
static void client_queue(client *c, frame *f);
static void client_ws_close(client *c, unsigned code, const char *reason, int wait_reply);
static void snap_detach(client *c);
static void snap_more(client *c);
static int snap_hides(client *c, const frame *f);
static void snap_request(client *c);

static frame *frame_sse(frame *f);

static void q_push(client *c, frame *f)
{
    /* a message (text frame) goes to an SSE client as an event */
    if (c->sse && f->hdr && (f->data[0] & 0x0f) == WS_OP_TEXT)
        f = frame_sse(f);
    if (c->qn == c->qcap) {
        uint32_t ncap = c->qcap ? c->qcap * 2 : 8;
        frame **nq = xmalloc(ncap * sizeof *nq);
        for (uint32_t i = 0; i < c->qn; i++)
            nq[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
        free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    f->refs++;
    c->q[(c->qhead + c->qn) & (c->qcap - 1)] = f;
    c->qn++;
    c->qbytes += q_cost(f);
    mark_dirty(c);
}

/* A resumed client ahead of the stream (pgcdc restarted and is decoding
 * again what the client saw) must not get those changes twice. */
static int seen_already(client *c, const frame *f)
{
    if (!c->has_since)
        return 0;
    if (pos_cmp(f->lsn, f->idx, c->since_lsn, c->since_idx) <= 0)
        return 1;
    c->has_since = 0;   /* positions only grow from here */
    return 0;
}

static void client_queue(client *c, frame *f)
{
    if (seen_already(c, f))
        return;
    if (f->change && c->qn && c->qbytes + f->len > S.cfg.max_queue) {
        log_info("client %llu %s: dropped as a slow consumer (%zu bytes queued)",
                 (unsigned long long)c->id, c->addr, c->qbytes);
        S.count.drop_slow++;
        client_ws_close(c, WS_CLOSE_TRY_AGAIN, "slow consumer", 1);
        return;
    }
    q_push(c, f);
}

static void client_free_mem(client *c)
{
    snap_detach(c);
    q_clear(c, 0);
    free(c->q);
    free(c->req);
    free(c->cors);
    if (c->pend) {
        if (c->pend->lk)
            c->pend->lk->c = NULL;   /* the look-up outlives the client */
        free(c->pend->sp);
        params_free(&c->pend->prm);
        free(c->pend->sub);
        free(c->pend->leid);
        free(c->pend);
    }
    free(c);
}

/* Closes the TCP connection now; the memory goes at the end of the loop. */
static void client_close(client *c)
{
    if (c->fd < 0)
        return;
    snap_detach(c);
    if (c->counted)
        S.http.nclients--;
    waiting_del(c);
    group_leave(c);
    close(c->fd);
    c->fd = -1;
    /* swap the last poll slot into ours */
    int last = S.npfd - 1;
    if (c->slot != last) {
        S.pfd[c->slot] = S.pfd[last];
        S.pcl[c->slot] = S.pcl[last];
        S.pcl[c->slot]->slot = c->slot;
    }
    S.npfd--;
    S.http.nconns--;
    /* it may still be on the dirty list: flush_dirty skips it, and its
     * memory lasts until graveyard_free, which runs after flush_dirty */
    c->gnext = S.http.graveyard;   /* out of its group now: reuse the link */
    S.http.graveyard = c;
}

static void graveyard_free(void)
{
    while (S.http.graveyard) {
        client *c = S.http.graveyard;
        S.http.graveyard = c->gnext;
        c->gnext = NULL;
        client_free_mem(c);
    }
}

/* Starts the closing handshake with code (0: empty payload).  Frames not
 * yet started are dropped; wait_reply waits for the peer's close (up to
 * CLOSE_TIMEOUT_MS), otherwise TCP closes once the close frame is out. */
/* Ends an SSE stream: the changes not yet started are dropped, then
 * "event: close" with the reason, then TCP closes once it is out. */
/* Both transports' ending: the snapshot let go, the queue dropped but for
 * a message being written, the last bytes (close frame or close event)
 * queued, and the client no longer counted nor subscribed. Behind unsent
 * bytes (a slow consumer) they may take a while to get out: give them
 * DRAIN_TIMEOUT_MS, then CLOSE_TIMEOUT_MS once they are out (client_write). */
static void client_closing(client *c, const void *bytes, size_t n)
{
    snap_detach(c);
    q_clear(c, 1);
    frame *f = frame_new(n);
    memcpy(f->data, bytes, n);
    q_push(c, f);
    frame_unref(f);
    c->sent_close = 1;
    c->state = C_CLOSING;
    c->replaying = 0;
    c->sse_hold = 0;
    group_leave(c);
    if (c->counted) {   /* closing: no longer a client, nor a max_clients place */
        c->counted = 0;
        S.http.nclients--;
    }
    c->deadline = S.now + (c->qn > 1 || c->pollout ? DRAIN_TIMEOUT_MS : CLOSE_TIMEOUT_MS);
}

static void client_sse_end(client *c, const char *reason)
{
    char buf[SSE_CLOSE_MAX];
    if (c->sent_close || c->fd < 0)
        return;
    client_closing(c, buf, sse_close_event(buf, reason));
    c->close_after = 1;
}

static void client_ws_close(client *c, unsigned code, const char *reason, int wait_reply)
{
    uint8_t buf[129];
    if (c->sse) {   /* the same ending, as SSE has it */
        client_sse_end(c, reason);
        return;
    }
    if (c->sent_close || c->fd < 0)
        return;
    client_closing(c, buf, ws_close_frame(buf, code, reason));
    c->close_after = (uint8_t)(!wait_reply || c->got_close);
}

static void replay_fill(client *c);

/* Writes as much of the queue as the socket takes. */
/* Frames per writev: as many as the kernel takes in one call, so a client
 * far behind (fan-out of a big transaction) costs few system calls. */
#define IOV_BATCH 1024

static void client_write(client *c)
{
    for (int rounds = 0; c->fd >= 0 && rounds < 64; rounds++) {
        if (!c->qn && c->replaying)
            replay_fill(c);
        if (!c->qn)
            break;
        struct iovec iov[IOV_BATCH];
        int k = 0;
        size_t off = c->qoff;
        for (uint32_t i = 0; i < c->qn && k < IOV_BATCH; i++, k++) {
            frame *f = c->q[(c->qhead + i) & (c->qcap - 1)];
            iov[k].iov_base = f->data + off;
            iov[k].iov_len = f->len - off;
            off = 0;
        }
        ssize_t w = writev(c->fd, iov, k);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            log_debug("client %llu %s: write failed: %s", (unsigned long long)c->id, c->addr,
                      strerror(errno));
            client_close(c);
            return;
        }
        S.count.bytes += (uint64_t)w;
        size_t left = (size_t)w;
        while (left) {
            frame *f = c->q[c->qhead];
            size_t rem = f->len - c->qoff;
            if (left < rem) {
                c->qoff += (uint32_t)left;
                break;
            }
            left -= rem;
            c->qoff = 0;
            c->qhead = (c->qhead + 1) & (c->qcap - 1);
            c->qn--;
            c->qbytes -= q_cost(f);
            if (f->change)
                S.count.frames++;
            frame_unref(f);
        }
        if (c->replaying && c->qbytes < S.cfg.max_queue / 4)
            replay_fill(c);
    }
    if (c->fd < 0)
        return;
    if (c->snap && c->qbytes < S.cfg.max_queue / 2)
        snap_more(c);
    /* replaying: come back for more (not while the snapshot's rows come) */
    int want = c->qn > 0 || (c->replaying && !c->snapping);
    if (!c->qn && c->qcap > 64) {   /* give back a big ring once drained */
        free(c->q);
        c->q = NULL;
        c->qcap = 0;
        c->qhead = 0;
    }
    if (!c->qn && c->state == C_CLOSING && c->deadline > S.now + CLOSE_TIMEOUT_MS)
        c->deadline = S.now + CLOSE_TIMEOUT_MS;   /* the close frame is out */
    if (!c->qn && c->close_after) {
        if (c->state == C_HTTP || c->state == C_LINGER || c->state == C_PENDING) {
            /* an HTTP answer: stop sending, drain what the peer still sends */
            shutdown(c->fd, SHUT_WR);
            c->state = C_LINGER;
            c->close_after = 0;
            c->deadline = S.now + LINGER_MS;
        } else {
            client_close(c);
            return;
        }
    }
    if (want != c->pollout) {
        c->pollout = (uint8_t)want;
        set_events(c);
    }
}

/* Coalescing (docs/protocol.md, Order): while a transaction is still
 * arriving (no commit came in this loop turn), an open client's write
 * waits until COALESCE_BYTES (at most an eighth of max_queue) are queued
 * for it or COALESCE_MS have passed.  A big transaction then goes out in a
 * few large writes instead of one small write per client per turn (its
 * frames arrive in reads of some 16 kB), which costs the kernel less on
 * both ends of every connection; a transaction that arrives whole, the
 * usual case, is written at once. */
#define COALESCE_BYTES 262144
#define COALESCE_MS 5

static int write_waits(client *c)
{
    if (!S.repl.in_txn || S.repl.turn_commit || c->state != C_WS || c->replaying || c->snap ||
        c->qbytes >= (COALESCE_BYTES < S.cfg.max_queue / 8 ? COALESCE_BYTES : S.cfg.max_queue / 8)) {
        c->wait_ms = 0;
        return 0;
    }
    if (!c->wait_ms)
        c->wait_ms = S.now;
    if (S.now - c->wait_ms < COALESCE_MS)
        return 1;
    c->wait_ms = 0;
    return 0;
}

/* Writes to every client with new bytes; those whose write waits
 * (write_waits) stay on the list.  Returns 1 if any did. */
static int flush_dirty(void)
{
    client *waiting = NULL;
    while (S.http.dirty) {
        client *c = S.http.dirty;
        S.http.dirty = c->dnext;
        c->dnext = NULL;
        if (c->fd < 0 || c->pollout) {   /* closed, or written on POLLOUT */
            c->dirty = 0;
            continue;
        }
        if (write_waits(c)) {
            c->dnext = waiting;
            waiting = c;
            continue;
        }
        c->dirty = 0;
        client_write(c);
    }
    S.http.dirty = waiting;
    return waiting != NULL;
}

/* Starts matching the change r (a record of len bytes) against
 * subscriptions: its values are worked out once, for all of them. */
static void match_change(const w2j_record *r, size_t len)
{
    if (S.mcap < len + 1) {
        S.mcap = len + 1;
        S.mbuf = xrealloc(S.mbuf, S.mcap);
    }
    if (!S.mcols) {
        S.mcols = xmalloc(COLS_MAX * sizeof *S.mcols);
        memset(S.mcols, 0, COLS_MAX * sizeof *S.mcols);
    }
    match_begin(&S.match, r, S.mbuf, S.mcap, S.mcols, COLS_MAX);
}

/* Matches a history frame against the client's subscription. */
static int frame_matches(client *c, frame *f)
{
    const spec *sp = c->grp->sp;
    if (f->tab != c->grp->tab || !(sp->types & f->types))
        return 0;
    if (!sp->nfilters || f->types == SUB_TRUNCATE)
        return 1;
    w2j_record r;
    if (w2j_parse((const char *)f->data + f->hdr, f->len - f->hdr, S.repl.toks, S.repl.ntoks,
                  S.repl.cols, S.repl.ncols, &r) != JSON_OK)
        return 0;
    match_change(&r, f->len);
    return spec_match(sp, &S.match);
}

/* Catching up: queues the history after the client's cursor, a part at a
 * time, and goes live once it reaches the newest change. */
static void replay_fill(client *c)
{
    size_t budget = S.cfg.max_queue / 2;
    if (!c->grp || c->snapping)
        return;
    table *t = c->grp->tab;
    uint32_t i = t && c->replaying ? tab_hist_from(t, c->cursor) : 0;
    while (c->replaying && c->qbytes < budget) {
        if (S.hist.replay_work <= 0)
            return;   /* this turn's share is spent: the rest next turn */
        if (c->cursor < S.hist.first_seq) {
            if (c->snap_replay) {
                log_info("client %llu %s: the history no longer holds the changes after its snapshot",
                         (unsigned long long)c->id, c->addr);
                S.snap.fail_overtaken++;
                client_ws_close(c, WS_CLOSE_TRY_AGAIN, "snapshot overtaken", 1);
                return;
            }
            log_info("client %llu %s: fell behind the history while resuming", (unsigned long long)c->id,
                     c->addr);
            S.count.drop_slow++;
            client_ws_close(c, WS_CLOSE_TRY_AGAIN, "fell behind the history", 1);
            return;
        }
        /* only this table's frames: the others cannot match */
        if (!t || i >= t->hxn) {
            c->cursor = S.hist.next_seq;
            c->replaying = 0;
            c->snap_replay = 0;
            log_debug("client %llu %s: caught up", (unsigned long long)c->id, c->addr);
            break;
        }
        frame *f = tab_hist_at(t, i++);
        c->cursor = f->seq + 1;
        S.hist.replay_work -= 1 + (int64_t)(f->len / 256);
        if (frame_matches(c, f) && !seen_already(c, f) && !snap_hides(c, f)) {
            if (!c->grp->sp->ncols) {
                q_push(c, f);
            } else {
                frame *p = frame_project(f, c->grp->sp);
                if (p) {
                    q_push(c, p);
                    frame_unref(p);
                }
            }
        }
    }
}

/* Bytes from an upgraded client. */
static void client_ws_input(client *c, uint8_t *buf, size_t n)
{
    while (n && c->fd >= 0 && !c->got_close) {
        size_t used = 0;
        unsigned code = 0;
        int ev = ws_parse(&c->wp, buf, n, &used, &code);
        buf += used;
        n -= used;
        switch (ev) {
        case WS_EV_PING:
            if (c->qbytes > S.cfg.max_queue) {   /* pings, never reading pongs */
                log_info("client %llu %s: dropped as a slow consumer (pongs not read)",
                         (unsigned long long)c->id, c->addr);
                S.count.drop_slow++;
                client_ws_close(c, WS_CLOSE_TRY_AGAIN, "slow consumer", 0);
                c->got_close = 1;
                return;
            }
            if (!c->sent_close) {
                frame *f = frame_ws(WS_OP_PONG, c->wp.ctl, c->wp.ctl_len);
                q_push(c, f);
                frame_unref(f);
            }
            break;
        case WS_EV_CLOSE:
            c->got_close = 1;
            log_info("client %llu %s: closed by peer (code %u)", (unsigned long long)c->id, c->addr, code);
            if (c->sent_close) {
                client_close(c);
                return;
            }
            client_ws_close(c, code == 1005 ? 0 : code, NULL, 0);
            return;
        case WS_EV_ERROR:
            log_info("client %llu %s: protocol error, closing with %u", (unsigned long long)c->id, c->addr, code);
            S.count.drop_proto++;
            if (c->sent_close) {
                client_close(c);
                return;
            }
            client_ws_close(c, code, code == WS_CLOSE_TOO_BIG ? "message too big" :
                            code == WS_CLOSE_INVALID_DATA ? "invalid UTF-8" : "protocol error", 0);
            c->got_close = 1;   /* read no further */
            return;
        default:
            break;
        }
    }
}

/* ==== HTTP ============================================================== */

#include "web/demo.h"
#include "web/pgcdc_js.h"

static const char *status_text(int st)
{
    switch (st) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 410: return "Gone";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Queues a complete response and closes the connection after it.  The
 * answer to a HEAD request has the same headers and no body, whatever the
 * status. */
static void http_respond(client *c, int st, const char *extra, const char *ctype,
                         const void *body, size_t blen)
{
    sbuf b = { 0 };
    sb_printf(&b, "HTTP/1.1 %d %s\r\nServer: pgcdc\r\nContent-Type: %s\r\n"
              "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n%s",
              st, status_text(st), ctype, blen, extra ? extra : "");
    if (c->cors)   /* an allowed page may read why (SSE) */
        sb_printf(&b, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", c->cors);
    sb_add(&b, "\r\n", 2);
    if (c->head)
        blen = 0;
    frame *f = frame_new(b.n + blen);
    memcpy(f->data, b.p, b.n);
    if (blen)
        memcpy(f->data + b.n, body, blen);
    free(b.p);
    q_clear(c, 0);
    q_push(c, f);
    frame_unref(f);
    waiting_del(c);
    c->close_after = 1;
    if (c->state == C_PENDING)
        c->state = C_HTTP;
    set_events(c);
}

/* Answers a refused upgrade the way a browser can read: 101, then close
 * code with reason[0..n) (control bytes already blanked), cut to the 123
 * bytes a close frame holds and kept valid UTF-8. */
static void ws_refuse(client *c, unsigned code, char *reason, size_t n)
{
    char resp[160];
    if (ws_utf8_step(0, (const uint8_t *)reason, n) != 0)
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)reason[i] >= 0x80)
                reason[i] = '?';
    if (n > 123) {
        n = 123;
        while (n && ws_utf8_step(0, (const uint8_t *)reason, n) != 0)
            n--;
    }
    reason[n] = 0;
    int len = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", c->pend->accept);
    frame *f = frame_new((size_t)len);
    memcpy(f->data, resp, (size_t)len);
    q_clear(c, 0);
    q_push(c, f);
    frame_unref(f);
    waiting_del(c);
    ws_parser_init(&c->wp);
    c->state = C_WS;
    c->last_rx = S.now;
    client_ws_close(c, code, reason, 1);
    set_events(c);
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void http_error(client *c, int st, const char *extra, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof msg - 2)
        n = (int)sizeof msg - 2;
    /* a browser cannot read the status of a refused upgrade: it gets 101
     * and at once close 4000 + status with the same reason */
    unsigned code = c->browser && c->pend && (st == 400 || st == 401 || st == 403 || st == 410 || st == 503)
                    ? 4000u + (unsigned)st : 0;
    /* the log escapes control bytes itself, so it sees them as sent */
    if (code)
        log_info("client %llu %s: refused with %d (close %u): %.*s", (unsigned long long)c->id, c->addr, st,
                 code, n, msg);
    else
        log_info("client %llu %s: refused with %d: %.*s", (unsigned long long)c->id, c->addr, st, n, msg);
    /* one line: never let a reflected value break the body into more */
    for (int i = 0; i < n; i++)
        if ((unsigned char)msg[i] < 0x20 || msg[i] == 0x7f)
            msg[i] = ' ';
    if (code) {
        msg[n] = 0;
        ws_refuse(c, code, msg, (size_t)n);
        return;
    }
    msg[n++] = '\n';
    http_respond(c, st, extra, "text/plain; charset=utf-8", msg, (size_t)n);
}

static void health_body(sbuf *b);
static void metrics_body(sbuf *b);
static void lookup_start(client *c, spec *sp);
static void upgrade_finish(client *c);
static void cat_tick(void);

/* Is the peer a configured trusted proxy? */
static int trusted_peer(const char *addr)
{
    return word_list_has(&S.cfg.proxies, addr, strlen(addr));
}

/* The client address for logs: from X-Forwarded-For when the peer is a
 * trusted proxy (the right-most entry that is not itself trusted). */
static void client_addr_from_xff(client *c, slice xff)
{
    if (!xff.n || !trusted_peer(c->addr))
        return;
    const char *s = xff.p;
    size_t n = xff.n;
    while (n) {
        size_t k = n;
        while (k && s[k - 1] != ',')
            k--;
        size_t en = n - k;
        const char *e = trim(s + k, &en);
        char a[48];
        if (en && en < sizeof a) {
            memcpy(a, e, en);
            a[en] = 0;
            if (!trusted_peer(a) || k == 0) {
                char old[48];
                memcpy(old, c->addr, sizeof old);
                snprintf(c->addr, sizeof c->addr, "%s", a);
                log_debug("client %llu: peer %s forwards for %s", (unsigned long long)c->id, old, c->addr);
                return;
            }
        }
        if (!k)
            break;
        n = k - 1;
    }
}

/* Is schema.name in the tables setting (all when it is unset)? */
static int tables_streamed(const char *schema, const char *name)
{
    if (!S.cfg.tables)
        return 1;
    for (unsigned i = 0; i < S.cfg.ntable_pats; i++)
        if (table_pat_match(&S.cfg.table_pats[i], schema, name))
            return 1;
    return 0;
}

static int grant_check(client *c, const spec *sp);

/* Tables the catalog said do not exist, remembered for MISSING_CACHE_MS so
 * that repeated requests for them cost no query (a ring of MISSING_SLOTS). */
static int missing_recently(const char *schema, const char *name)
{
    for (int i = 0; i < MISSING_SLOTS; i++) {
        const struct missing *m = &S.http.missing[i];
        if (m->schema && S.now - m->at < MISSING_CACHE_MS && !strcmp(m->schema, schema) &&
            !strcmp(m->name, name))
            return 1;
    }
    return 0;
}

static void missing_add(const char *schema, const char *name)
{
    struct missing *m = &S.http.missing[S.http.missing_next];
    S.http.missing_next = (S.http.missing_next + 1) % MISSING_SLOTS;
    free(m->schema);
    free(m->name);
    m->schema = xstrndup(schema, strlen(schema));
    m->name = xstrndup(name, strlen(name));
    m->at = S.now;
}

/* ---- JWT access and rules (docs/protocol.md, JWT and Rules) ---- */

static int jwt_on(void)
{
    return S.cfg.jwt_secret || S.cfg.jwt_keys;
}

/* SIGHUP: the jwt_keys file again; one that fails keeps the keys. */
static void reload_keys(void)
{
    char err[512];
    if (!S.cfg.jwt_keys) {
        log_info("SIGHUP: no jwt_keys file to re-read");
        return;
    }
    jwks *k = jwks_load(S.cfg.jwt_keys, err, sizeof err);
    if (!k) {
        log_warn("SIGHUP: jwt_keys not reloaded, the keys already loaded stay: %s", err);
        return;
    }
    free(S.cfg.keys);
    S.cfg.keys = k;
    log_info("SIGHUP: %u RSA key%s loaded from %s%s", k->n, k->n == 1 ? "" : "s", S.cfg.jwt_keys,
             k->skipped ? " (keys of other kinds skipped)" : "");
}

/* Credentials of a JWT client: the token from Authorization: Bearer or
 * ?token= (prm NULL when the query string did not parse), verified into
 * S.tok.  Returns 0, or -1 once the 401 is sent. */
static int jwt_auth(client *c, const http_req *r, const ws_params *prm)
{
    char err[256];
    const char *tok = NULL;
    size_t tn = 0;
    if (r->auth.n > 7 && ieq(r->auth.p, 7, "bearer ")) {
        tn = r->auth.n - 7;
        tok = trim(r->auth.p + 7, &tn);
    } else if (prm && prm->token) {
        tok = prm->token;
        tn = strlen(tok);
    }
    if (!tok) {
        S.count.auth_fail[AUTHF_JWT]++;
        http_error(c, 401, "WWW-Authenticate: Bearer\r\n",
                   "missing token: send a JWT as Authorization: Bearer <token> or ?token=");
        return -1;
    }
    if (!S.tok)
        S.tok = xmalloc(sizeof *S.tok);
    jwt_config jc = { (const uint8_t *)S.cfg.jwt_secret, S.cfg.jwt_secret ? strlen(S.cfg.jwt_secret) : 0,
                      S.cfg.keys, S.cfg.jwt_issuer, S.cfg.jwt_audience };
    if (jwt_verify(S.tok, tok, tn, &jc, (int64_t)time(NULL), err, sizeof err) != JWT_OK) {
        S.count.auth_fail[AUTHF_JWT]++;
        log_info("client %llu %s: JWT refused: %s", (unsigned long long)c->id, c->addr, err);
        http_error(c, 401, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", "%s", err);
        return -1;
    }
    c->token_exp = S.tok->exp;
    int i = jwt_claim(S.tok, "sub", 3);
    if (i >= 0 && S.tok->ctok[i].type == JSON_STRING && c->pend) {
        const json_tok *t = &S.tok->ctok[i];
        char *sub = xmalloc(t->end - t->start + 1);
        long n = json_unescape(S.tok->claims + t->start, t->end - t->start, sub, t->end - t->start);
        if (n >= 0) {
            sub[n] = 0;
            c->pend->sub = sub;
        } else {
            free(sub);
        }
    }
    return 0;
}

static void rule_refuse(client *c, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status == 403)
        S.count.auth_fail[AUTHF_RULE]++;
    http_error(c, status, NULL, "%s", msg);
}

/* The client's subscription sp with its table's rule applied (the rule's
 * filters, the claims put in as values, the rule's columns).  Returns the
 * new spec (sp is freed), or NULL once the 403 is sent. */
static spec *rule_apply(client *c, spec *sp)
{
    const ws_params *prm = &c->pend->prm;
    const rule *r = rule_find(S.cfg.rules, S.cfg.nrules, sp->schema, sp->table);
    if (!r) {
        rule_refuse(c, 403, "no rule for table %s.%s", sp->schema, sp->table);
        free(sp);
        return NULL;
    }
    unsigned nf = r->sp->nfilters;
    rule_value **vals = xmalloc((nf + 1) * sizeof *vals);
    unsigned *nvals = xmalloc((nf + 1) * sizeof *nvals);
    char *pool = xmalloc((size_t)nf * (S.tok->clen + 1) + 1);
    size_t used = 0;
    spec *out = NULL;
    memset(vals, 0, (nf + 1) * sizeof *vals);
    for (unsigned i = 0; i < nf; i++) {
        nvals[i] = 0;
        if (!r->paths[i])
            continue;
        const char *path = r->paths[i];
        int at = jwt_claim(S.tok, path, strlen(path));
        int in = r->sp->filters[i].op == OP_IN;
        if (at < 0) {
            rule_refuse(c, 403, "the token has no claim \"%s\" that the rule for %s.%s needs", path,
                        sp->schema, sp->table);
            goto done;
        }
        const json_tok *t = &S.tok->ctok[at];
        unsigned cnt = in ? t->size : 1;
        if ((in && t->type != JSON_ARRAY) || (!in && t->type != JSON_STRING && t->type != JSON_NUMBER)) {
            rule_refuse(c, 403, "claim \"%s\" must be %s", path,
                        in ? "an array of strings and numbers" : "a string or a number");
            goto done;
        }
        if (cnt > 1000) {
            rule_refuse(c, 403, "claim \"%s\" has more than 1000 elements", path);
            goto done;
        }
        vals[i] = xmalloc((cnt ? cnt : 1) * sizeof **vals);
        const json_tok *e = in ? t + 1 : t;
        for (unsigned k = 0; k < cnt; k++) {
            if (e->type != JSON_STRING && e->type != JSON_NUMBER) {
                rule_refuse(c, 403, "claim \"%s\" must be an array of strings and numbers", path);
                goto done;
            }
            const char *src = S.tok->claims + e->start;
            size_t sn = e->end - e->start;
            if (e->type == JSON_STRING) {
                long un = json_unescape(src, sn, pool + used, S.tok->clen + 1);
                if (un < 0 || memchr(pool + used, 0, (size_t)un)) {
                    rule_refuse(c, 403, "claim \"%s\" holds a string pgcdc cannot compare", path);
                    goto done;
                }
                src = pool + used;
                sn = (size_t)un;
                used += sn;
            }
            vals[i][k].s = src;
            vals[i][k].n = sn;
            e++;   /* array elements are scalars: one token each */
        }
        nvals[i] = cnt;
    }
    char err[512];
    int st;
    out = spec_build(prm->query, prm->filters, prm->nfilters, prm->columns, r,
                     (const rule_value *const *)vals, nvals, &st, err, sizeof err);
    if (!out)
        rule_refuse(c, st, "%s", err);
done:
    for (unsigned i = 0; i < nf; i++)
        free(vals[i]);
    free(vals);
    free(nvals);
    free(pool);
    free(sp);
    return out;
}

/* /sse: the method (GET or HEAD) and the CORS answer for an allowed
 * foreign page; then the checks of /ws.  1: go on. */
static int sse_request(client *c, http_req *r)
{
    if (!c->head && !(r->method.n == 3 && !memcmp(r->method.p, "GET", 3))) {
        http_error(c, 405, "Allow: GET, HEAD\r\n", "method %.*s not allowed on /sse: use GET",
                   (int)(r->method.n > 20 ? 20 : r->method.n), r->method.p);
        return 0;
    }
    /* allowed, and not the server's own (which the Origin policy alone,
     * with no list, accepts) */
    if (http_origin_check(r, &S.cfg.origins) > 0 && http_origin_check(r, NULL) < 0 && r->origin.n <= 200)
        c->cors = xstrndup(r->origin.p, r->origin.n);
    return 1;
}

static void handle_ws_request(client *c, http_req *r)
{
    char err[512];
    pending *pd;

    if (c->sse) {
        if (!sse_request(c, r))
            return;
        pd = xmalloc(sizeof *pd);
        memset(pd, 0, sizeof *pd);
        c->pend = pd;
        goto checks;
    }
    if (!c->head && !ieq(r->method.p, r->method.n, "GET")) {
        http_error(c, 405, "Allow: GET, HEAD\r\n", "method %.*s not allowed on /ws: use GET",
                   (int)(r->method.n > 20 ? 20 : r->method.n), r->method.p);
        return;
    }
    /* HEAD is answered as GET would be, and a HEAD is never an upgrade */
    if (!r->upgrade_ws || c->head) {
        http_error(c, 426, "Upgrade: websocket\r\n",
                   "this endpoint speaks WebSocket: send Upgrade: websocket and Connection: Upgrade");
        return;
    }
    if (r->version.p[7] != '1') {
        http_error(c, 400, NULL, "a WebSocket upgrade needs HTTP/1.1");
        return;
    }
    if (!r->conn_upgrade) {
        http_error(c, 400, NULL, "the Connection header must contain Upgrade");
        return;
    }
    if (r->nver != 1 || r->wsver.n == 0) {
        if (r->nver == 0)
            http_error(c, 400, "Sec-WebSocket-Version: 13\r\n", "missing Sec-WebSocket-Version header (13 is supported)");
        else
            http_error(c, 426, "Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket version: only 13 is supported");
        return;
    }
    if (r->wsver.n != 2 || memcmp(r->wsver.p, "13", 2)) {
        http_error(c, 426, "Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket version \"%.*s\": only 13 is supported",
                   (int)(r->wsver.n > 20 ? 20 : r->wsver.n), r->wsver.p);
        return;
    }
    pd = xmalloc(sizeof *pd);
    memset(pd, 0, sizeof *pd);
    c->pend = pd;
    if (r->nkey != 1 || ws_accept_key(r->key.p, r->key.n, pd->accept)) {
        http_error(c, 400, NULL, "missing or invalid Sec-WebSocket-Key (must be base64 of 16 bytes)");
        return;
    }
checks:;
    /* from here on, a browser (an allowed Origin) reads refusals as close
     * codes (ws_refuse) */
    int origin = http_origin_check(r, &S.cfg.origins);
    c->browser = (uint8_t)(origin > 0 && !c->sse);   /* SSE: plain statuses */
    int perr = params_parse(r->query.p, r->query.n, &pd->prm, err, sizeof err);
    if (!perr && r->nleid && (r->leid.n || r->nleid > 1)) {
        /* EventSource resumes with Last-Event-ID: it is since, and wins
         * (two of them are malformed, refused where since syntax is) */
        pd->leid = r->nleid > 1 ? xstrndup("(two headers)", 13) : xstrndup(r->leid.p, r->leid.n);
        pd->prm.since = pd->leid;
        /* an id is sent from the snapshot's end on: the client has the
         * rows, so its reconnection resumes instead of starting over */
        pd->prm.snapshot = NULL;
    }
    if (S.cfg.token) {
        const char *tok = NULL;
        size_t tn = 0;
        if (r->auth.n > 7 && ieq(r->auth.p, 7, "bearer ")) {
            tn = r->auth.n - 7;
            tok = trim(r->auth.p + 7, &tn);
        } else if (!perr && pd->prm.token) {
            tok = pd->prm.token;
            tn = strlen(tok);
        }
        if (!tok) {
            S.count.auth_fail[AUTHF_TOKEN]++;
            http_error(c, 401, "WWW-Authenticate: Bearer\r\n", "missing token: send Authorization: Bearer <token> or ?token=");
            return;
        }
        if (!ct_equal(tok, tn, S.cfg.token, strlen(S.cfg.token))) {
            S.count.auth_fail[AUTHF_TOKEN]++;
            http_error(c, 401, "WWW-Authenticate: Bearer\r\n", "invalid token");
            return;
        }
    } else if (jwt_on() && jwt_auth(c, r, perr ? NULL : &pd->prm)) {
        return;
    }
    if (origin < 0) {
        S.count.auth_fail[AUTHF_ORIGIN]++;
        if (r->norigin > 1)
            http_error(c, 403, NULL, "more than one Origin header");
        else
            http_error(c, 403, NULL, "origin \"%.*s\" is not allowed: list it in allowed_origins",
                       (int)(r->origin.n > 200 ? 200 : r->origin.n), r->origin.p);
        return;
    }
    if (perr) {
        http_error(c, 400, NULL, "%s", err);
        return;
    }
    if (!pd->prm.query) {
        http_error(c, 400, NULL, "missing query parameter: expected /ws?query=types:table[:filter]");
        return;
    }
    int st;
    spec *sp = spec_build(pd->prm.query, pd->prm.filters, pd->prm.nfilters, pd->prm.columns,
                          NULL, NULL, NULL, &st, err, sizeof err);
    if (!sp) {
        http_error(c, st, NULL, "%s", err);
        return;
    }
    pd->sp = sp;
    if (pd->prm.since && pos_parse(pd->prm.since, strlen(pd->prm.since), &pd->since_lsn, &pd->since_idx)) {
        http_error(c, 400, NULL, "malformed %s position \"%.60s\": expected X/X:n as sent in \"pos\"",
                   pd->leid ? "Last-Event-ID" : "since", pd->prm.since);
        return;
    }
    int snap = pd->prm.snapshot && !strcmp(pd->prm.snapshot, "1");
    if (snap && pd->leid) {
        /* an EventSource reconnecting after its snapshot's E marker (the
         * first id it got): it resumes from there, without a new snapshot */
        pd->prm.snapshot = NULL;
        snap = 0;
    }
    if (pd->prm.snapshot && !snap) {
        http_error(c, 400, NULL, "snapshot must be 1, got \"%.20s\"", pd->prm.snapshot);
        return;
    }
    if (snap && pd->prm.since) {
        http_error(c, 400, NULL, "snapshot=1 cannot be combined with since: a snapshot starts from the rows");
        return;
    }
    if (snap && !S.cfg.history) {
        http_error(c, 400, NULL, "snapshot needs the history (history = 0 in this server's configuration)");
        return;
    }
    if (!tables_streamed(sp->schema, sp->table)) {
        http_error(c, 403, NULL, "table %s.%s is not in the tables this server streams", sp->schema, sp->table);
        return;
    }
    /* authorization before the catalog is asked anything, so an
     * unauthorized client learns nothing about which tables exist */
    if (grant_check(c, sp))
        return;
    if (jwt_on()) {
        pd->sp = NULL;   /* rule_apply frees it */
        if (!(sp = rule_apply(c, sp)))
            return;
        pd->sp = sp;
    }
    if (missing_recently(sp->schema, sp->table)) {
        http_error(c, 400, NULL, "table %s.%s does not exist", sp->schema, sp->table);
        return;
    }
    table *t = table_get(sp->schema, strlen(sp->schema), sp->table, strlen(sp->table), 0);
    if (t && t->verified && S.now - t->verified < TABLE_CACHE_MS && !sp->ncols &&
        (!snap || S.now - t->priv_checked < TABLE_CACHE_MS)) {
        upgrade_finish(c);
        return;
    }
    c->state = C_PENDING;
    set_events(c);
    lookup_start(c, sp);
}

/* Signed grants (docs/protocol.md, Grants): 0 accepted, else the
 * response is sent. */
static int grant_check(client *c, const spec *sp)
{
    char err[512];
    int64_t exp = 0;
    if (!S.cfg.grant_secret)
        return 0;
    int st = grant_verify(S.cfg.grant_secret, strlen(S.cfg.grant_secret), c->pend->prm.grant, sp,
                          (int64_t)time(NULL), &exp, err, sizeof err);
    if (st) {
        S.count.auth_fail[AUTHF_GRANT]++;
        http_error(c, st, NULL, "%s", err);
        return -1;
    }
    c->grant_exp = exp;
    return 0;
}

/* Checks after the table is known to exist: grant, since, capacity; then
 * the 101 answer and the subscription. */
static void upgrade_finish(client *c)
{
    pending *pd = c->pend;
    spec *sp = pd->sp;
    uint64_t slsn = pd->since_lsn;
    uint32_t sidx = pd->since_idx;

    int hold = 0;

    int snap = pd->prm.snapshot && !strcmp(pd->prm.snapshot, "1");
    if (snap) {
        table *st = table_get(sp->schema, strlen(sp->schema), sp->table, strlen(sp->table), 0);
        if (!st || !st->can_select) {
            http_error(c, 403, NULL, "snapshot=1 needs pgcdc's database role to SELECT %s.%s, and it may not",
                       sp->schema, sp->table);
            return;
        }
        if (!S.hist.floor_known) {   /* the changes after it could not be told apart yet */
            http_error(c, 503, "Retry-After: 1\r\n", "replication is starting: a snapshot needs the stream; retry");
            return;
        }
    }
    if (pd->prm.since) {
        if (!S.hist.floor_known && c->sse) {
            hold = 1;   /* EventSource would give up on a 503: wait, with pings */
        } else if (!S.hist.floor_known) {
            http_error(c, 503, "Retry-After: 1\r\n",
                       "replication is starting: cannot tell yet whether position %s can be served; retry", pd->prm.since);
            return;
        }
        if (!hold && pos_cmp(slsn, sidx, S.hist.floor_lsn, S.hist.floor_idx) < 0) {
            http_error(c, 410, NULL, "position %s is older than the history this server keeps; reload your data",
                       pd->prm.since);
            return;
        }
    }
    if (S.http.nclients >= (unsigned)S.cfg.max_clients) {
        http_error(c, 503, "Retry-After: 5\r\n", "too many clients (max_clients = %d)", S.cfg.max_clients);
        return;
    }
    if (c->sse) {
        sbuf b = { 0 };
        sb_printf(&b, "HTTP/1.1 200 OK\r\nServer: pgcdc\r\nContent-Type: text/event-stream\r\n"
                  "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n");
        if (c->cors)
            sb_printf(&b, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", c->cors);
        sb_add(&b, "\r\n", 2);
        if (!c->head)
            sb_add(&b, "retry: 1000\n\n", 13);
        frame *f = frame_new(b.n);
        memcpy(f->data, b.p, b.n);
        free(b.p);
        q_push(c, f);
        frame_unref(f);
        if (c->head) {   /* the answer's head, no stream */
            c->close_after = 1;
            set_events(c);
            return;
        }
    } else {
        char resp[160];
        int n = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", pd->accept);
        frame *f = frame_new((size_t)n);
        memcpy(f->data, resp, (size_t)n);
        q_push(c, f);
        frame_unref(f);
    }

    table *t = table_get(sp->schema, strlen(sp->schema), sp->table, strlen(sp->table), 1);
    log_info("client %llu %s: subscribed to %s%s%s%s%s%s%s%s%s", (unsigned long long)c->id, c->addr, pd->prm.query,
             pd->prm.columns ? " columns=" : "", pd->prm.columns ? pd->prm.columns : "",
             pd->prm.since ? " since " : "", pd->prm.since ? pd->prm.since : "",
             pd->sub ? " sub=" : "", pd->sub ? pd->sub : "", c->sse ? " (SSE)" : "",
             hold ? ", held until replication says where it resumes" : "");
    pd->sp = NULL;
    group_join(c, sp, t);
    S.http.nclients++;
    c->counted = 1;
    c->state = C_WS;
    c->deadline = 0;
    c->last_rx = c->last_ping = S.now;
    ws_parser_init(&c->wp);
    if (pd->prm.since) {
        S.count.resumes++;
        /* held: nothing was decoded yet, so every change will come live,
         * the ones up to since skipped (clients_tick decides the rest) */
        c->replaying = (uint8_t)!hold;
        c->sse_hold = (uint8_t)hold;
        c->cursor = hist_after(slsn, sidx);
        c->has_since = 1;
        c->since_lsn = slsn;
        c->since_idx = sidx;
    }
    if (snap)
        snap_request(c);
    params_free(&pd->prm);
    free(pd->sub);
    free(pd->leid);
    free(pd);
    c->pend = NULL;
    set_events(c);
    mark_dirty(c);
    /* bytes the client sent right after its request are WebSocket frames */
    if (!c->sse && c->req && c->req_len > c->head_len)
        client_ws_input(c, (uint8_t *)c->req + c->head_len, c->req_len - c->head_len);
    free(c->req);
    c->req = NULL;
    c->req_len = 0;
}

/* A file compiled into the binary (the browser client): cacheable for an
 * hour, then revalidated by its entity tag (304 while unchanged). */
static void serve_asset(client *c, const http_req *r, const void *body, size_t n,
                        const char *etag, const char *ctype)
{
    size_t el = strlen(etag);
    int fresh = 0;
    for (const char *s = r->inm.p, *e = r->inm.p + r->inm.n; s && s + el <= e; s++)
        if ((*s == '"' && !memcmp(s, etag, el)) || (*s == '*' && r->inm.n == 1)) {
            fresh = 1;
            break;
        }
    sbuf b = { 0 };
    sb_printf(&b, "HTTP/1.1 %s\r\nServer: pgcdc\r\nContent-Type: %s\r\n", fresh ? "304 Not Modified" : "200 OK",
              ctype);
    if (!fresh)
        sb_printf(&b, "Content-Length: %zu\r\n", n);
    sb_printf(&b, "Cache-Control: public, max-age=3600\r\nETag: %s\r\nConnection: close\r\n\r\n", etag);
    if (!fresh && !c->head)
        sb_add(&b, body, n);
    frame *f = frame_new(b.n);
    memcpy(f->data, b.p, b.n);
    free(b.p);
    q_clear(c, 0);
    q_push(c, f);
    frame_unref(f);
    c->close_after = 1;
    set_events(c);
}

static int path_is(const http_req *r, const char *p)
{
    size_t n = strlen(p);
    return r->path.n == n && !memcmp(r->path.p, p, n);
}

static void handle_request(client *c, http_req *r)
{
    sbuf b = { 0 };
    c->head_len = (uint32_t)r->head_len;
    c->head = r->method.n == 4 && !memcmp(r->method.p, "HEAD", 4);
    client_addr_from_xff(c, r->xff);
    /* with admin_listen, /health and /metrics live there alone (and /ping
     * answers on both, for load balancers) */
    int admin_path = path_is(r, "/health") || path_is(r, "/metrics");
    if (c->admin ? !(admin_path || path_is(r, "/ping")) : admin_path && S.cfg.admin_listen) {
        http_error(c, 404, NULL, "not found: %.*s", (int)(r->path.n > 200 ? 200 : r->path.n), r->path.p);
        return;
    }
    if (r->path.n == 3 && !memcmp(r->path.p, "/ws", 3)) {
        handle_ws_request(c, r);
        return;
    }
    if (r->path.n == 4 && !memcmp(r->path.p, "/sse", 4)) {
        c->sse = 1;
        handle_ws_request(c, r);
        return;
    }
    int known = (r->path.n == 5 && !memcmp(r->path.p, "/ping", 5)) ||
                (r->path.n == 7 && !memcmp(r->path.p, "/health", 7)) ||
                (r->path.n == 8 && !memcmp(r->path.p, "/metrics", 8)) ||
                (r->path.n == 1 && r->path.p[0] == '/' && S.cfg.demo_page) ||
                (r->path.n == 9 && !memcmp(r->path.p, "/pgcdc.js", 9) && S.cfg.demo_page);
    if (!known) {
        http_error(c, 404, NULL, "not found: %.*s", (int)(r->path.n > 200 ? 200 : r->path.n), r->path.p);
        return;
    }
    if (!c->head && !(r->method.n == 3 && !memcmp(r->method.p, "GET", 3))) {
        http_error(c, 405, "Allow: GET, HEAD\r\n", "method %.*s not allowed: use GET",
                   (int)(r->method.n > 20 ? 20 : r->method.n), r->method.p);
        return;
    }
    if (r->path.n == 9) {
        serve_asset(c, r, pgcdc_js, sizeof pgcdc_js, pgcdc_js_etag, "text/javascript; charset=utf-8");
        return;
    }
    const char *ctype = "text/plain; charset=utf-8";
    int st = 200;
    switch (r->path.n) {
    case 5:
        sb_add(&b, "pong\n", 5);
        break;
    case 7:
        health_body(&b);
        ctype = "application/json";
        st = S.repl.state == R_STREAMING ? 200 : 503;
        break;
    case 8:
        metrics_body(&b);
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        break;
    default:
        sb_add(&b, demo_html, sizeof demo_html);
        ctype = "text/html; charset=utf-8";
        break;
    }
    http_respond(c, st, NULL, ctype, b.p, b.n);
    free(b.p);
}

static void client_read(client *c)
{
    uint8_t *buf = S.http.rbuf;
    if (c->state == C_HTTP) {
        if (c->close_after)
            goto drain;   /* answered already: ignore the rest */
        if (c->req_len == c->req_cap) {
            if (c->req_cap >= REQ_MAX) {
                http_error(c, 431, NULL, "request headers larger than %d bytes", REQ_MAX);
                return;
            }
            c->req_cap = c->req_cap ? c->req_cap * 2 : 1024;
            c->req = xrealloc(c->req, c->req_cap);
        }
        ssize_t n = read(c->fd, c->req + c->req_len, c->req_cap - c->req_len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            client_close(c);
            return;
        }
        if (n < 0)
            return;
        c->req_len += (uint32_t)n;
        c->last_rx = S.now;
        http_req r;
        /* only the new bytes are searched for the end of the head */
        size_t head = http_head_end(c->req, c->req_len, &c->scanned);
        int pr = head ? http_parse(c->req, head, &r) : 0;
        if (pr != 0)
            waiting_del(c);   /* the request is complete (or broken) */
        if (pr < 0)
            http_error(c, 400, NULL, "malformed HTTP request");
        else if (pr > 0)
            handle_request(c, &r);
        else if (c->req_len == REQ_MAX)
            http_error(c, 431, NULL, "request headers larger than %d bytes", REQ_MAX);
        return;
    }
drain:;
    ssize_t n = read(c->fd, buf, sizeof S.http.rbuf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        if (c->state == C_WS)
            log_info("client %llu %s: disconnected", (unsigned long long)c->id, c->addr);
        client_close(c);
        return;
    }
    if (n < 0)
        return;
    c->last_rx = S.now;
    if ((c->state == C_WS || c->state == C_CLOSING) && !c->sse)
        client_ws_input(c, buf, (size_t)n);   /* an SSE client's bytes mean nothing */
}

/* ==== Catalog look-ups ================================================== */

static void cat_down(const char *why)
{
    if (why)
        log_warn("catalog connection: %s", why);
    if (S.cat.conn)
        PQfinish(S.cat.conn);
    S.cat.conn = NULL;
    S.cat.state = CAT_DOWN;
    S.pfd[SLOT_CAT].fd = -1;
    S.cat.retry = S.now + CATALOG_RETRY_MS;
    /* nobody can be answered now: refuse the waiting upgrades */
    while (S.cat.lk_head) {
        lookup *l = S.cat.lk_head;
        S.cat.lk_head = l->next;
        if (l->c) {
            l->c->pend->lk = NULL;
            http_error(l->c, 503, "Retry-After: 2\r\n", "cannot check the table: the database is unavailable");
        }
        free(l->schema); free(l->name); free(l);
    }
    S.cat.lk_tail = NULL;
}

static void cat_send(void)
{
    while (S.cat.lk_head && !S.cat.lk_head->c) {   /* the client went away */
        lookup *l = S.cat.lk_head;
        S.cat.lk_head = l->next;
        free(l->schema); free(l->name); free(l);
    }
    if (!S.cat.lk_head) {
        S.cat.lk_tail = NULL;
        return;
    }
    const char *vals[2] = { S.cat.lk_head->schema, S.cat.lk_head->name };
    if (!PQsendQueryParams(S.cat.conn,
            "SELECT a.attname, pg_catalog.has_table_privilege(c.oid, 'SELECT') FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            2, NULL, vals, NULL, NULL, 0)) {
        cat_down(PQerrorMessage(S.cat.conn));
        return;
    }
    S.cat.state = CAT_BUSY;
    S.cat.since = S.now;
    PQflush(S.cat.conn);
}

static void lookup_start(client *c, spec *sp)
{
    lookup *l = xmalloc(sizeof *l);
    log_debug("catalog: looking up %s.%s", sp->schema, sp->table);
    l->c = c;
    l->schema = xstrndup(sp->schema, strlen(sp->schema));
    l->name = xstrndup(sp->table, strlen(sp->table));
    l->next = NULL;
    c->pend->lk = l;
    if (S.cat.lk_tail) S.cat.lk_tail->next = l;
    else S.cat.lk_head = l;
    S.cat.lk_tail = l;
    if (S.cat.state == CAT_IDLE)
        cat_send();
    else if (S.cat.state == CAT_DOWN)
        cat_tick();   /* connect now rather than at the next tick */
}

static void cat_tick(void)
{
    if ((S.cat.state == CAT_CONNECTING || S.cat.state == CAT_BUSY) && S.now - S.cat.since > CATALOG_TIMEOUT_MS) {
        char m[64];
        snprintf(m, sizeof m, "no answer from the database within %d s", CATALOG_TIMEOUT_MS / 1000);
        cat_down(m);
        return;
    }
    if (S.cat.state == CAT_DOWN && S.cat.lk_head && S.now >= S.cat.retry) {
        const char *keys[] = { "dbname", "fallback_application_name", NULL };
        const char *vals[] = { S.cfg.conninfo, "pgcdc", NULL };
        S.cat.conn = PQconnectStartParams(keys, vals, 1);
        if (!S.cat.conn || PQstatus(S.cat.conn) == CONNECTION_BAD) {
            char m[256];
            redact_quoted(S.cat.conn ? PQerrorMessage(S.cat.conn) : "out of memory", m, sizeof m);
            cat_down(m);
            return;
        }
        PQsetnonblocking(S.cat.conn, 1);
        S.cat.state = CAT_CONNECTING;
        S.cat.since = S.now;
        S.pfd[SLOT_CAT].fd = PQsocket(S.cat.conn);
        S.pfd[SLOT_CAT].events = POLLOUT;
    }
}

static void cat_event(void)
{
    if (S.cat.state == CAT_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(S.cat.conn);
        S.pfd[SLOT_CAT].fd = PQsocket(S.cat.conn);
        if (ps == PGRES_POLLING_READING) S.pfd[SLOT_CAT].events = POLLIN;
        else if (ps == PGRES_POLLING_WRITING) S.pfd[SLOT_CAT].events = POLLOUT;
        else if (ps == PGRES_POLLING_FAILED) cat_down(PQerrorMessage(S.cat.conn));
        else {
            S.cat.state = CAT_IDLE;
            S.pfd[SLOT_CAT].events = POLLIN;
            cat_send();
        }
        return;
    }
    if (!PQconsumeInput(S.cat.conn)) {
        cat_down(PQerrorMessage(S.cat.conn));
        return;
    }
    if (PQflush(S.cat.conn) == 1)
        S.pfd[SLOT_CAT].events = POLLIN | POLLOUT;
    else
        S.pfd[SLOT_CAT].events = POLLIN;
    while (S.cat.state == CAT_BUSY && !PQisBusy(S.cat.conn)) {
        PGresult *res = PQgetResult(S.cat.conn);
        if (!res) {
            S.cat.state = CAT_IDLE;
            cat_send();
            break;
        }
        lookup *l = S.cat.lk_head;
        if (!l) {
            PQclear(res);
            continue;
        }
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            log_warn("catalog look-up failed: %s", PQresultErrorMessage(res));
            PQclear(res);
            cat_down(NULL);
            return;
        }
        int exists = PQntuples(res) > 0;
        /* columns= names must be the table's (one row per column) */
        const char *missing = NULL;
        const spec *lsp = l->c ? l->c->pend->sp : NULL;
        for (unsigned i = 0; exists && lsp && i < lsp->ncols && !missing; i++) {
            int k = 0;
            while (k < PQntuples(res) && strcmp(PQgetvalue(res, k, 0), lsp->cols[i]))
                k++;
            if (k == PQntuples(res))
                missing = lsp->cols[i];
        }
        char mcol[160];
        snprintf(mcol, sizeof mcol, "%s", missing ? missing : "");
        int can_select = exists && PQgetvalue(res, 0, 1)[0] == 't';
        PQclear(res);
        S.cat.lk_head = l->next;
        if (!S.cat.lk_head)
            S.cat.lk_tail = NULL;
        client *c = l->c;
        if (exists) {
            table *t = table_get(l->schema, strlen(l->schema), l->name, strlen(l->name), 1);
            t->verified = S.now;
            t->can_select = (uint8_t)can_select;
            t->priv_checked = S.now;
        } else {
            missing_add(l->schema, l->name);
        }
        free(l->schema); free(l->name); free(l);
        if (c) {
            c->pend->lk = NULL;
            c->state = C_HTTP;
            if (exists && missing)
                http_error(c, 400, NULL, "table %s.%s has no column \"%s\" (columns=)", c->pend->sp->schema,
                           c->pend->sp->table, mcol);
            else if (exists)
                upgrade_finish(c);
            else
                http_error(c, 400, NULL, "table %s.%s does not exist", c->pend->sp->schema, c->pend->sp->table);
        }
    }
}

/* ==== Replication ======================================================= */

static const char *rstate_name(void)
{
    if (S.repl.state == R_STREAMING)
        return "streaming";
    if (S.repl.state == R_WAIT)
        return "down";
    return "connecting";
}

/* Microseconds since 2000-01-01, the protocol's clock. */
static int64_t pg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec - 946684800LL) * 1000000LL + ts.tv_nsec / 1000;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

/* A server error explained in one line: what is wrong and what to do. */
static const char *explain(const char *sqlstate, const char *msg)
{
    if (strstr(msg, "may not be used as an output plugin"))
        return "wal2json is not listed in the server's output_plugin_libraries: add it "
               "(output_plugin_libraries = 'wal2json') and restart PostgreSQL";
    if (sqlstate && !strcmp(sqlstate, "58P01") && strstr(msg, "wal2json"))
        return "the wal2json output plugin is not installed on the database server "
               "(Debian: apt-get install postgresql-15-wal2json)";
    if (strstr(msg, "wal_level"))
        return "logical decoding needs wal_level = logical on the server (ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)";
    if (sqlstate && !strcmp(sqlstate, "55006"))
        return "the replication slot is in use by another process (another pgcdc with the same slot?)";
    if (sqlstate && !strcmp(sqlstate, "42710") && strstr(msg, "replication slot") && S.cfg.temporary_slot)
        return "the temporary replication slot is in use by another connection (another pgcdc with the same "
               "slot?): give each instance its own slot";
    if (strstr(msg, "must be superuser or replication role") || strstr(msg, "permission denied to start WAL sender") ||
        (sqlstate && !strcmp(sqlstate, "42501")))
        return "the role lacks the REPLICATION privilege (ALTER ROLE ... WITH REPLICATION)";
    if (strstr(msg, "password authentication failed") || strstr(msg, "authentication failed") ||
        (sqlstate && (!strcmp(sqlstate, "28P01") || !strcmp(sqlstate, "28000"))))
        return "authentication failed: check the user and password in conninfo, PGPASSWORD or ~/.pgpass";
    if (strstr(msg, "pg_hba.conf"))
        return "the server's pg_hba.conf has no entry allowing this replication connection";
    if (S.repl.in_recovery && (strstr(msg, "invalidated") || strstr(msg, "can no longer get changes")))
        return "the replication slot on this standby was invalidated (the primary removed catalog rows it "
               "needed, or lowered wal_level): give the standby a physical slot on the primary and "
               "hot_standby_feedback = on, then drop the slot so pgcdc can create it anew";
    if (strstr(msg, "invalidated") || strstr(msg, "can no longer get changes"))
        return "the replication slot was invalidated (it exceeded max_slot_wal_keep_size); drop it with "
               "SELECT pg_drop_replication_slot('<slot>') so pgcdc can create it anew";
    if (strstr(msg, "max_replication_slots") || strstr(msg, "all replication slots are in use"))
        return "no free replication slot on the server: raise max_replication_slots";
    if (strstr(msg, "max_wal_senders") || strstr(msg, "too many clients"))
        return "the server has no free WAL sender or connection: raise max_wal_senders or max_connections";
    return NULL;
}

static void repl_teardown(void);

static void repl_fail(const char *what, PGresult *res)
{
    const char *msg = res ? PQresultErrorMessage(res) : (S.repl.conn ? PQerrorMessage(S.repl.conn) : "");
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char m[512];
    snprintf(m, sizeof m, "%s", msg && *msg ? msg : "connection lost");
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
        m[--n] = 0;
    const char *hint = explain(state, m);
    if (S.repl.state == R_STREAMING)
        log_warn("replication: stream ended (%s: %s)%s%s; reconnecting in %d s", what, m,
                 hint ? ": " : "", hint ? hint : "", S.repl.backoff);
    else
        log_error("replication: %s failed: %s%s%s; retrying in %d s", what, m, hint ? " -- " : "",
                  hint ? hint : "", S.repl.backoff);
    repl_teardown();
}

/* Drops the replication connection and schedules the next attempt. */
static void repl_teardown(void)
{
    if (S.repl.conn)
        PQfinish(S.repl.conn);
    S.repl.conn = NULL;
    S.pfd[SLOT_REPL].fd = -1;
    S.repl.state = R_WAIT;
    S.repl.wait_until = S.now + (int64_t)S.repl.backoff * 1000;
    S.repl.backoff = S.repl.backoff * 2 > S.cfg.reconnect_max ? S.cfg.reconnect_max : S.repl.backoff * 2;
    S.repl.in_txn = 0;
    S.repl.more = 0;
}

static void repl_watch(short events)
{
    S.pfd[SLOT_REPL].fd = S.repl.conn ? PQsocket(S.repl.conn) : -1;
    S.pfd[SLOT_REPL].events = events;
}

static int repl_send(const char *what, const char *cmd)
{
    log_debug("replication: %s", cmd);
    if (!PQsendQuery(S.repl.conn, cmd)) {
        repl_fail(what, NULL);
        return -1;
    }
    repl_watch(PQflush(S.repl.conn) == 1 ? POLLIN | POLLOUT : POLLIN);
    return 0;
}

static void repl_connect(void)
{
    const char *keys[] = { "dbname", "replication", "fallback_application_name", NULL };
    const char *vals[] = { S.cfg.conninfo, "database", "pgcdc", NULL };
    S.repl.conn = PQconnectStartParams(keys, vals, 1);
    if (!S.repl.conn) {
        log_error("replication: out of memory");
        exit(2);
    }
    if (PQstatus(S.repl.conn) == CONNECTION_BAD) {
        /* libpq refused the options themselves: its text may quote them */
        char m[256];
        redact_quoted(PQerrorMessage(S.repl.conn), m, sizeof m);
        log_error("replication: cannot use conninfo: %s; retrying in %d s", m, S.repl.backoff);
        S.repl.state = R_CONNECTING;
        repl_teardown();
        return;
    }
    PQsetnonblocking(S.repl.conn, 1);
    S.repl.state = R_CONNECTING;
    S.repl.attempt_ms = S.now;
    repl_watch(POLLOUT);
}

/* Session settings that change wal2json's text, pinned so that clients
 * always see the same formats whatever the server's defaults are; then
 * whether the server is a standby (decoding there needs PostgreSQL 16). */
static const char *pin_settings =
    "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex'; SELECT pg_catalog.pg_is_in_recovery()";

/* Appends 'value' quoted for the replication grammar. */
static void sb_quote(sbuf *b, const char *s, size_t n)
{
    sb_add(b, "'", 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'')
            sb_add(b, "'", 1);
        sb_add(b, s + i, 1);
    }
    sb_add(b, "'", 1);
}

/* ---- the handshake: one step per state ---- */

/* Each state of the handshake sends one command on entry and checks each of
 * its results; once the last result is in, the step says which state comes
 * next (R_WAIT: it tore the connection down itself). */

static void cmd_identify(sbuf *b)
{
    sb_add(b, "IDENTIFY_SYSTEM", 15);
}

static int check_identify(PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4) {
        repl_fail("IDENTIFY_SYSTEM", res);
        return -1;
    }
    if (PQgetisnull(res, 0, 3)) {
        log_error("replication: the connection has no database: conninfo must name one (dbname=...); retrying in %d s",
                  S.repl.backoff);
        repl_teardown();
        return -1;
    }
    if (stream_id(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 3), S.cfg.tables, S.cfg.wal2json_options,
                  S.repl.stream)) {
        log_error("out of memory computing the stream identity");
        exit(2);
    }
    return 0;
}

static enum rstate next_identify(void)
{
    return R_SET;
}

static void cmd_set(sbuf *b)
{
    sb_add(b, pin_settings, strlen(pin_settings));
}

static int check_set(PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1) {
        S.repl.in_recovery = !strcmp(PQgetvalue(res, 0, 0), "t");
        return 0;
    }
    if (st != PGRES_COMMAND_OK) {
        repl_fail("pinning session settings", res);
        return -1;
    }
    return 0;
}

static enum rstate next_set(void)
{
    if (S.repl.in_recovery && PQserverVersion(S.repl.conn) < 160000) {
        log_error("replication: the server is a standby (in recovery) running PostgreSQL %s, which cannot "
                  "decode on a standby (PostgreSQL 16 and later can): point conninfo at the primary; "
                  "retrying in %d s", S.repl.server_version, S.repl.backoff);
        repl_teardown();
        return R_WAIT;
    }
    if (S.repl.in_recovery)
        log_info("replication: the server is a standby (PostgreSQL %s): decoding there; the primary needs "
                 "wal_level = logical on the primary and here, hot_standby_feedback = on with a physical slot "
                 "keeps the slot valid, and creating a slot waits for the primary's next running-transactions "
                 "record (SELECT pg_log_standby_snapshot() on the primary sends one)", S.repl.server_version);
    /* a temporary slot is always new; a persistent one may exist */
    return S.cfg.temporary_slot ? R_CREATE : R_SLOTINFO;
}

static void cmd_slotinfo(sbuf *b)
{
    S.repl.slot_found = 0;
    sb_printf(b, "SELECT confirmed_flush_lsn, plugin, wal_status, database = current_database() "
              "FROM pg_catalog.pg_replication_slots WHERE slot_name = '%s'", S.cfg.slot);
}

static int check_slotinfo(PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        repl_fail("looking up the slot", res);
        return -1;
    }
    if (PQntuples(res) != 1)
        return 0;
    const char *plugin = PQgetvalue(res, 0, 1);
    const char *walst = PQgetvalue(res, 0, 2);
    const char *db_ok = PQgetvalue(res, 0, 3);
    if (strcmp(plugin, "wal2json")) {
        log_error("replication: slot \"%s\" exists with plugin \"%s\", not wal2json; "
                  "use another slot name or drop it; retrying in %d s", S.cfg.slot, plugin, S.repl.backoff);
        repl_teardown();
        return -1;
    }
    if (strcmp(db_ok, "t")) {
        log_error("replication: slot \"%s\" belongs to another database; use another slot name; retrying in %d s",
                  S.cfg.slot, S.repl.backoff);
        repl_teardown();
        return -1;
    }
    if (!strcmp(walst, "lost")) {
        log_error("replication: slot \"%s\" was invalidated (it exceeded max_slot_wal_keep_size); drop it "
                  "with SELECT pg_drop_replication_slot('%s'); retrying in %d s", S.cfg.slot, S.cfg.slot, S.repl.backoff);
        repl_teardown();
        return -1;
    }
    uint64_t cf = 0;
    if (!PQgetisnull(res, 0, 0))
        lsn_parse(PQgetvalue(res, 0, 0), strlen(PQgetvalue(res, 0, 0)), &cf);
    S.repl.slot_confirmed = cf;
    S.repl.slot_found = 1;
    return 0;
}

static enum rstate next_slotinfo(void)
{
    return S.repl.slot_found ? R_START : R_CREATE;   /* reuse it, or create it */
}

static void cmd_create(sbuf *b)
{
    sb_printf(b, "CREATE_REPLICATION_SLOT \"%s\" %sLOGICAL \"wal2json\" NOEXPORT_SNAPSHOT", S.cfg.slot,
              S.cfg.temporary_slot ? "TEMPORARY " : "");
}

static int check_create(PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        repl_fail("CREATE_REPLICATION_SLOT", res);
        return -1;
    }
    lsn_parse(PQgetvalue(res, 0, 1), strlen(PQgetvalue(res, 0, 1)), &S.repl.slot_confirmed);
    log_info("replication: created %s slot \"%s\" at %s", S.cfg.temporary_slot ? "temporary" : "persistent",
             S.cfg.slot, PQgetvalue(res, 0, 1));
    return 0;
}

static enum rstate next_create(void)
{
    return R_START;
}

static void cmd_start(sbuf *b)
{
    /* positions before what this slot can replay can no longer be served */
    uint64_t from = S.repl.slot_confirmed;
    if (!S.repl.ever || S.cfg.temporary_slot) {
        if (pos_cmp(from, 0, S.hist.floor_lsn, S.hist.floor_idx) > 0) {
            S.hist.floor_lsn = from;
            S.hist.floor_idx = 0;
        }
    }
    S.hist.floor_known = 1;
    if (S.repl.confirmed < from)
        S.repl.confirmed = from;
    if (S.repl.processed < from)
        S.repl.processed = from;
    sb_printf(b, "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (\"format-version\" '2', "
              "\"include-lsn\" '1', \"include-transaction\" '1', \"include-xids\" '1'", S.cfg.slot);
    if (S.cfg.tables) {
        sb_add(b, ", \"add-tables\" ", 15);
        sb_quote(b, S.cfg.tables, strlen(S.cfg.tables));
    }
    for (unsigned i = 0; i < S.cfg.nw2j_opts; i++) {
        const w2j_opt *o = &S.cfg.w2j_opts[i];
        sb_printf(b, ", \"%.*s\" ", (int)o->name.n, o->name.p);
        sb_quote(b, o->value.p, o->value.n);
    }
    sb_add(b, ")", 1);
}

static int check_start(PGresult *res)
{
    if (PQresultStatus(res) == PGRES_COPY_BOTH)
        return 0;
    repl_fail("START_REPLICATION", res);
    return -1;
}

static enum rstate next_start(void)
{
    return R_STREAMING;
}

static const struct repl_step {
    enum rstate state;
    const char *what;                  /* the command, as the logs name it */
    void (*command)(sbuf *b);          /* writes the command sent on entry */
    int (*check)(PGresult *res);       /* each result: 0, or -1 (torn down) */
    enum rstate (*next)(void);         /* after the last result */
} repl_steps[] = {
    { R_IDENTIFY, "IDENTIFY_SYSTEM", cmd_identify, check_identify, next_identify },
    { R_SET, "pinning session settings", cmd_set, check_set, next_set },
    { R_SLOTINFO, "looking up the slot", cmd_slotinfo, check_slotinfo, next_slotinfo },
    { R_CREATE, "CREATE_REPLICATION_SLOT", cmd_create, check_create, next_create },
    { R_START, "START_REPLICATION", cmd_start, check_start, next_start },
};

static const struct repl_step *repl_step_of(enum rstate st)
{
    for (size_t i = 0; i < sizeof repl_steps / sizeof repl_steps[0]; i++)
        if (repl_steps[i].state == st)
            return &repl_steps[i];
    return NULL;
}

/* Enters state st: sends its command, or starts streaming. */
static void repl_enter(enum rstate st)
{
    const struct repl_step *step = repl_step_of(st);
    S.repl.state = st;
    if (step) {
        sbuf b = { 0 };
        step->command(&b);
        repl_send(step->what, b.p);
        free(b.p);
        return;
    }
    if (st != R_STREAMING)
        return;
    repl_watch(POLLIN);
    if (S.repl.ever)
        S.count.reconnects++;
    log_info("replication: streaming from slot \"%s\" (confirmed %X/%X)", S.cfg.slot,
             (unsigned)(S.repl.confirmed >> 32), (unsigned)S.repl.confirmed);
    S.repl.ever = 1;
    S.repl.backoff = 1;
    S.repl.in_txn = 0;
    S.repl.last_status_ms = S.now;
    S.repl.last_txn_ms = S.now;
    S.repl.rx_ms = S.now;
}

/* A result of the current command: 0, or -1 when the connection is gone. */
static int repl_result(PGresult *res)
{
    const struct repl_step *step = repl_step_of(S.repl.state);
    return step ? step->check(res) : 0;
}

/* All results of the current command are in: go to the next step. */
static void repl_next(void)
{
    const struct repl_step *step = repl_step_of(S.repl.state);
    if (!step)
        return;
    enum rstate st = step->next();
    if (st != R_WAIT)
        repl_enter(st);
}

static void repl_status(void)
{
    uint8_t m[34];
    uint64_t pos = S.repl.done_commit;
    /* an idle database (or traffic elsewhere): confirm the WAL end, so the
     * slot holds no WAL it does not need */
    if (!S.repl.in_txn && S.repl.wal_end > pos &&
        S.now - S.repl.last_txn_ms >= (int64_t)S.cfg.status_interval * 1000)
        pos = S.repl.wal_end;
    if (pos > S.repl.confirmed)
        S.repl.confirmed = pos;
    m[0] = 'r';
    put64(m + 1, S.repl.confirmed);
    put64(m + 9, S.repl.confirmed);
    put64(m + 17, S.repl.confirmed);
    put64(m + 25, (uint64_t)pg_now_us());
    /* idle: ask for a keepalive, which carries how far the server has read */
    m[33] = !S.repl.in_txn && S.now - S.repl.last_txn_ms >= (int64_t)S.cfg.status_interval * 1000;
    if (PQputCopyData(S.repl.conn, (const char *)m, sizeof m) != 1) {
        repl_fail("sending a status update", NULL);
        return;
    }
    S.repl.last_status_ms = S.now;
    S.repl.reply_now = 0;
    if (PQflush(S.repl.conn) == 1)
        repl_watch(POLLIN | POLLOUT);
}

/* Appends v in upper-case hexadecimal without leading zeros. */
static char *put_hex(char *o, uint32_t v)
{
    int n = 1;
    for (uint32_t x = v >> 4; x; x >>= 4)
        n++;
    for (int i = n - 1; i >= 0; i--, v >>= 4)
        o[i] = "0123456789ABCDEF"[v & 15];
    return o + n;
}

static int pos_prefix(char *out, uint64_t lsn, uint32_t idx)
{
    char digits[10];
    int nd = 0;
    char *o = out;
    /* every change of a transaction shares the commit LSN: write it once */
    if (!S.pos_head_n || S.pos_head_lsn != lsn) {
        char *h = S.pos_head;
        memcpy(h, "{\"pos\":\"", 8);
        h = put_hex(h + 8, (uint32_t)(lsn >> 32));
        *h++ = '/';
        h = put_hex(h, (uint32_t)lsn);
        *h++ = ':';
        S.pos_head_n = (uint8_t)(h - S.pos_head);
        S.pos_head_lsn = lsn;
    }
    memcpy(o, S.pos_head, S.pos_head_n);
    o += S.pos_head_n;
    /* the index mostly grows by one: count on in the digits kept */
    if (S.pos_idx_n && idx && idx == S.pos_idx_v + 1) {
        int i = S.pos_idx_n - 1;
        while (i >= 0 && S.pos_idx[i] == '9')
            S.pos_idx[i--] = '0';
        if (i >= 0) {
            S.pos_idx[i]++;
        } else {
            memmove(S.pos_idx + 1, S.pos_idx, S.pos_idx_n);
            S.pos_idx[0] = '1';
            S.pos_idx_n++;
        }
    } else {
        uint32_t v = idx;
        do {
            digits[nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        S.pos_idx_n = 0;
        while (nd)
            S.pos_idx[S.pos_idx_n++] = digits[--nd];
    }
    S.pos_idx_v = idx;
    memcpy(o, S.pos_idx, S.pos_idx_n);
    o += S.pos_idx_n;
    *o++ = '"';
    *o++ = ',';
    return (int)(o - out);
}

static void handle_change(const char *rec, size_t len, w2j_record *r)
{
    uint32_t idx = S.repl.cur_n++;
    uint8_t bit = action_bit(r->action);
    if (S.hist.have_last && pos_cmp(S.repl.cur_commit, idx, S.hist.last_lsn, S.hist.last_idx) <= 0)
        return;   /* already sent before a reconnect */
    S.count.changes++;
    S.hist.have_last = 1;
    S.hist.last_lsn = S.repl.cur_commit;
    S.hist.last_idx = idx;
    /* with a history, every table gets an entry: a client may resume on it */
    table *t = table_of_record(r, S.cfg.history > 0);
    if (t)
        t->verified = S.now;
    if (!S.cfg.history && (!t || !t->groups)) {
        S.hist.floor_lsn = S.repl.cur_commit;
        S.hist.floor_idx = idx;
        return;
    }
    /* {"pos":"X/X:n", + the record after its '{' */
    char pfx[48];
    int pn = pos_prefix(pfx, S.repl.cur_commit, idx);
    size_t plen = (size_t)pn + len - 1;
    uint8_t h[10];
    size_t hl = ws_frame_header(h, WS_OP_TEXT, plen);
    frame *f = frame_new(hl + plen);
    memcpy(f->data, h, hl);
    memcpy(f->data + hl, pfx, (size_t)pn);
    memcpy(f->data + hl + (size_t)pn, rec + 1, len - 1);
    f->hdr = (uint32_t)hl;
    f->change = 1;
    f->types = bit;
    f->tab = t;
    f->lsn = S.repl.cur_commit;
    f->idx = idx;
    f->xid = S.repl.cur_xid;
    hist_push(f);
    if (t && t->groups)
        match_change(r, len);
    if (t) {
        for (group *g = t->groups, *gnext; g; g = gnext) {
            gnext = g->next;   /* g goes away if its last member is dropped */
            if (!spec_match(g->sp, &S.match))
                continue;
            frame *gf = g->sp->ncols ? frame_projected(f, g->sp) : f;
            if (!gf)
                continue;
            for (client *c = g->members, *next; c; c = next) {
                next = c->gnext;   /* a slow client leaves the group here */
                if (!c->replaying && !snap_hides(c, f))
                    client_queue(c, gf);
            }
        }
    }
    for (unsigned i = 0; i < S.nproj; i++)
        frame_unref(S.proj[i].f);
    S.nproj = 0;
    frame_unref(f);
}

static void handle_xlogdata(const uint8_t *msg, size_t n)
{
    uint64_t start = get64(msg + 1), end = get64(msg + 9);
    const char *rec = (const char *)msg + 25;
    size_t len = n - 25;
    w2j_record r;
    if (end > S.repl.wal_end)
        S.repl.wal_end = end;
    if (start > S.repl.processed)
        S.repl.processed = start;
    while (len && (rec[len - 1] == '\n' || rec[len - 1] == ' '))
        len--;
    /* the one-pass reader checks UTF-8 on its way; otherwise check here */
    int e = w2j_parse(rec, len, S.repl.toks, S.repl.ntoks, S.repl.cols, S.repl.ncols, &r);
    if (!(e == JSON_OK && r.utf8) && ws_utf8_step(0, (const uint8_t *)rec, len) != 0) {
        /* a text frame must be UTF-8; an SQL_ASCII database can send anything */
        S.count.skipped++;
        log_warn("replication: skipped a wal2json record at %X/%X that is not valid UTF-8 "
                 "(is the database SQL_ASCII?)", (unsigned)(start >> 32), (unsigned)start);
        if (S.repl.in_txn && len > 12 && !memcmp(rec, "{\"action\":\"", 11) && strchr("IUDT", rec[11]))
            S.repl.cur_n++;
        return;
    }
    if (e != JSON_OK || len < 2 || rec[0] != '{') {
        S.count.skipped++;
        log_warn("replication: skipped a wal2json record at %X/%X that cannot be parsed (%s, %zu bytes)",
                 (unsigned)(start >> 32), (unsigned)start,
                 e == JSON_NOMEM ? "too many columns" : e == JSON_PARTIAL ? "truncated" : "malformed", len);
        /* keep the position count honest for a change we could not read */
        if (S.repl.in_txn)
            S.repl.cur_n++;
        return;
    }
    switch (r.action) {
    case 'B': {
        uint64_t lsn;
        if (lsn_parse(r.lsn.p, r.lsn.n, &lsn)) {
            log_warn("replication: transaction begin without a usable lsn at %X/%X (include-lsn missing?)",
                     (unsigned)(start >> 32), (unsigned)start);
            lsn = start;
        }
        S.repl.cur_commit = lsn;
        S.repl.cur_xid = r.xid;
        S.repl.cur_n = 0;
        S.repl.in_txn = 1;
        S.repl.last_txn_ms = S.now;
        break;
    }
    case 'C':
        if (S.repl.cur_commit > S.repl.done_commit)
            S.repl.done_commit = S.repl.cur_commit;
        S.repl.in_txn = 0;
        S.repl.turn_commit = 1;
        S.repl.last_txn_ms = S.now;
        break;
    case 'I': case 'U': case 'D': case 'T':
        handle_change(rec, len, &r);
        break;
    default:
        break;   /* messages (M) and anything newer are not sent */
    }
}

/* Reads what the stream has, at most a batch, so that clients get a turn.
 * libpq takes at most its buffer (16 kB, some 40 changes) from the socket
 * per PQconsumeInput; reading again while the socket has more, up to a
 * quarter of max_queue per turn, lets one writev carry hundreds of frames
 * to each client instead of a few dozen (fan-out of a big transaction
 * costs far fewer system calls), while no client's queue can grow past
 * max_queue in one turn that it would not have reached anyway. */
static void repl_stream(void)
{
    if (!PQconsumeInput(S.repl.conn)) {
        repl_fail("reading", NULL);
        return;
    }
    S.repl.more = 0;
    S.repl.turn_commit = 0;
    size_t got = 0;
    for (int count = 0; count < 4096; count++) {
        char *buf = NULL;
        int n = PQgetCopyData(S.repl.conn, &buf, 1);
        if (n == 0 && got < S.cfg.max_queue / 4) {
            if (!PQconsumeInput(S.repl.conn)) {
                repl_fail("reading", NULL);
                return;
            }
            n = PQgetCopyData(S.repl.conn, &buf, 1);
        }
        if (n == 0)
            return;
        if (n > 0)
            got += (size_t)n;
        if (n == -1) {
            PGresult *res = PQgetResult(S.repl.conn);
            if (S.repl.state == R_STOPPING) {
                PQclear(res);
                return;
            }
            repl_fail("streaming", res && PQresultStatus(res) == PGRES_FATAL_ERROR ? res : NULL);
            PQclear(res);
            return;
        }
        if (n < 0) {
            repl_fail("streaming", NULL);
            return;
        }
        const uint8_t *m = (const uint8_t *)buf;
        S.repl.rx_ms = S.now;
        if (m[0] == 'w' && n >= 25) {
            if (S.repl.state == R_STREAMING)
                handle_xlogdata(m, (size_t)n);
        } else if (m[0] == 'k' && n >= 18) {
            uint64_t end = get64(m + 1);
            if (end > S.repl.wal_end)
                S.repl.wal_end = end;
            if (!S.repl.in_txn && end > S.repl.processed)
                S.repl.processed = end;
            if (m[17])
                S.repl.reply_now = 1;
        }
        PQfreemem(buf);
        if (S.repl.state != R_STREAMING && S.repl.state != R_STOPPING)
            return;
    }
    S.repl.more = 1;
}

static void repl_event(short revents)
{
    if (!S.repl.conn)
        return;
    if (S.repl.state == R_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(S.repl.conn);
        if (ps == PGRES_POLLING_READING) repl_watch(POLLIN);
        else if (ps == PGRES_POLLING_WRITING) repl_watch(POLLOUT);
        else if (ps == PGRES_POLLING_FAILED) repl_fail("connect", NULL);
        else {
            const char *v = PQparameterStatus(S.repl.conn, "server_version");
            snprintf(S.repl.server_version, sizeof S.repl.server_version, "%s", v ? v : "?");
            log_info("replication: connected to PostgreSQL %s", S.repl.server_version);
            repl_enter(R_IDENTIFY);
        }
        return;
    }
    if (revents & POLLOUT) {
        int f = PQflush(S.repl.conn);
        if (f < 0) {
            repl_fail("writing", NULL);
            return;
        }
        repl_watch(f == 1 ? POLLIN | POLLOUT : POLLIN);
    }
    if (S.repl.state == R_STREAMING || S.repl.state == R_STOPPING) {
        if (revents & (POLLIN | POLLERR | POLLHUP))
            repl_stream();
        return;
    }
    if (!PQconsumeInput(S.repl.conn)) {
        repl_fail("reading", NULL);
        return;
    }
    while (S.repl.conn && !PQisBusy(S.repl.conn)) {
        PGresult *res = PQgetResult(S.repl.conn);
        if (!res) {
            repl_next();
            return;
        }
        int st = repl_result(res);
        ExecStatusType es = PQresultStatus(res);
        PQclear(res);
        if (st < 0)
            return;
        if (es == PGRES_COPY_BOTH) {   /* no NULL result follows COPY BOTH */
            repl_next();
            return;
        }
    }
}

static void repl_tick(void)
{
    if (S.repl.state == R_WAIT && !S.stop && S.now >= S.repl.wait_until)
        repl_connect();
    /* (creating a slot on a standby waits for the primary, however long) */
    if (S.repl.state >= R_CONNECTING && S.repl.state < R_STREAMING && S.now - S.repl.attempt_ms > CONNECT_TIMEOUT_MS &&
        !(S.repl.in_recovery && S.repl.state == R_CREATE)) {
        log_error("replication: no answer from the server within %d s while connecting; retrying in %d s",
                  CONNECT_TIMEOUT_MS / 1000, S.repl.backoff);
        repl_teardown();
        return;
    }
    /* idle status updates ask for a reply, so a healthy server is never
     * silent this long: it is gone (partition, hang), reconnect */
    int64_t silent = (int64_t)(S.cfg.status_interval * 3 > 60 ? S.cfg.status_interval * 3 : 60) * 1000;
    if (S.repl.state == R_STREAMING && S.now - S.repl.rx_ms > silent) {
        log_warn("replication: the server sent nothing for %lld s; reconnecting in %d s",
                 (long long)(silent / 1000), S.repl.backoff);
        repl_teardown();
        return;
    }
    if (S.repl.state == R_STREAMING &&
        (S.repl.reply_now == 1 || S.now - S.repl.last_status_ms >= (int64_t)S.cfg.status_interval * 1000))
        repl_status();
}

/* ==== Snapshots ========================================================= */

/* A snapshot (docs/protocol.md, Snapshots) runs on one of max_snapshots
 * ordinary connections, inside this loop like every other: BEGIN
 * ISOLATION LEVEL REPEATABLE READ, READ ONLY; LOCK the table (so its
 * columns cannot change under the query); pg_current_snapshot() and the
 * WAL insert position; the columns and key from the catalog; then a
 * cursor over the matching rows, fetched in batches while the client's
 * queue is under half of max_queue.  Each row becomes an S message as
 * wal2json would have written an insert of it (snapshot.c); then the E
 * marker; then the history from the snapshot's start, without the
 * transactions the snapshot saw, and the live stream. */

#define SNAP_CURSOR "pgcdc_snapshot"
#define SNAP_IDLE_MS 60000          /* an idle snapshot connection is closed after */
#define SNAP_BATCH_MAX 10000        /* rows per FETCH at most */

/* What a client skips after its snapshot: transactions the snapshot saw. */
struct snapvis {
    uint64_t xmin, xmax;
    uint64_t wal;             /* commits at or after this LSN were not seen */
    size_t nxip;
    uint64_t xip[];
};

struct snapjob {
    client *c;                /* NULL once the client has gone */
    spec *sp;                 /* the client's subscription (its group owns it) */
    snapjob *next;            /* wait queue */
    int64_t started;          /* ms: when it was asked for */
    int flags;                /* W2J_* rendering options */
    uint64_t p0;              /* history sequence when the snapshot was asked */
    uint64_t scan;            /* first history sequence it may not have seen */
    snapvis *vis;
    snap_col *cols;
    unsigned ncols;
    sbuf colmem;              /* the catalog's strings, NUL-separated */
    sbuf *heads, *tails;      /* per column: its members around the value */
    sbuf prefix;              /* {"action":"S","schema":...,"columns":[ */
    sbuf key;                 /* ["id"] or null */
    sbuf row;                 /* scratch: one message */
    sbuf proj;                /* ... with only the columns= columns */
    uint64_t rows;
    unsigned batch;           /* rows to FETCH next */
    double avg;               /* bytes per message so far */
};

static void snap_send_query(snapconn *sc, const char *q)
{
    if (!PQsendQuery(sc->conn, q)) {
        snprintf(sc->err, sizeof sc->err, "%s", PQerrorMessage(sc->conn));
        sc->failed = 1;
    }
    sc->since = S.now;
}

static void snap_watch(snapconn *sc)
{
    short ev = POLLIN;
    if (sc->conn && PQflush(sc->conn) == 1)
        ev |= POLLOUT;
    S.pfd[sc->slot].fd = sc->conn ? PQsocket(sc->conn) : -1;
    S.pfd[sc->slot].events = sc->conn ? ev : 0;
}

static void snap_job_free(snapjob *j)
{
    if (!j)
        return;
    free(j->vis);
    free(j->cols);
    free(j->colmem.p);
    for (unsigned i = 0; j->heads && i < j->ncols; i++) {
        free(j->heads[i].p);
        free(j->tails[i].p);
    }
    free(j->heads);
    free(j->tails);
    free(j->prefix.p);
    free(j->key.p);
    free(j->row.p);
    free(j->proj.p);
    free(j);
}

/* Sends one message of a snapshot to the client (the transport frames it). */
static void client_send_msg(client *c, const char *payload, size_t n)
{
    frame *f = frame_ws(WS_OP_TEXT, payload, n);
    f->change = 1;            /* dropped, not sent, when the client is closed */
    q_push(c, f);
    frame_unref(f);
}

/* Ends the client's part in its snapshot (it leaves, or is being closed):
 * a waiting snapshot is forgotten, a running one is cancelled and its
 * transaction rolled back by the connection. */
static void snap_detach(client *c)
{
    snapjob *j = c->snap;
    free(c->vis);
    c->vis = NULL;
    c->snapping = 0;
    if (!j)
        return;
    c->snap = NULL;
    j->c = NULL;
    for (snapjob **pp = &S.snap.wait_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != j)
            continue;
        *pp = j->next;
        if (S.snap.wait_tail == j)
            S.snap.wait_tail = prev;
        S.snap.waiting--;
        snap_job_free(j);
        return;
    }
    /* running: the connection notices j->c == NULL (snap_conn_step) */
    for (int i = 0; i < S.cfg.max_snapshots; i++) {
        snapconn *sc = &S.snap.conns[i];
        if (sc->job != j)
            continue;
        if (sc->state == SC_PROLOGUE || sc->state == SC_DECLARE || sc->state == SC_FETCH) {
            /* a query is running: cancel it (a short blocking call; libpq
             * before 17 has no other) and roll back once its result is in */
            char e[256];
            if (sc->cancel && !PQcancel(sc->cancel, e, sizeof e))
                log_warn("snapshot: cancel request failed: %s", e);
        } else if (sc->state == SC_PAUSED) {
            sc->state = SC_END;
            snap_send_query(sc, "ROLLBACK");
            snap_watch(sc);
        }
    }
}

/* Fails a snapshot: closes its client with code and reason. */
static void snap_fail(snapjob *j, unsigned code, const char *why, const char *reason)
{
    client *c = j->c;
    if (!c)
        return;
    log_info("client %llu %s: snapshot of %s.%s: %s", (unsigned long long)c->id, c->addr, j->sp->schema,
             j->sp->table, reason);
    if (!strcmp(why, "query"))
        S.snap.fail_query++;
    else if (!strcmp(why, "timeout"))
        S.snap.fail_timeout++;
    else
        S.snap.fail_overtaken++;
    client_ws_close(c, code, reason, 1);   /* detaches the job */
}

static void snap_conn_down(snapconn *sc, const char *why)
{
    char r[300];
    snprintf(r, sizeof r, "snapshot failed: %s", why);
    if (sc->job) {
        snapjob *j = sc->job;
        sc->job = NULL;
        S.snap.active--;
        snap_fail(j, 1011, "query", r);
        snap_job_free(j);
    }
    if (sc->rows)
        PQclear(sc->rows);
    if (sc->cancel)
        PQfreeCancel(sc->cancel);
    if (sc->conn)
        PQfinish(sc->conn);
    sc->rows = NULL;
    sc->cancel = NULL;
    sc->conn = NULL;
    sc->state = SC_DOWN;
    snap_watch(sc);
    /* no connection left to run them: the waiting snapshots cannot start */
    for (int i = 0; i < S.cfg.max_snapshots; i++)
        if (S.snap.conns[i].state != SC_DOWN)
            return;
    while (S.snap.wait_head && strcmp(why, "idle"))
        snap_fail(S.snap.wait_head, 1011, "query", r);   /* detaches it */
}

/* Server notices on a snapshot connection go to the debug log. */
static void snap_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("snapshot connection: %s", msg);
}

static void snap_connect(snapconn *sc)
{
    const char *keys[] = { "dbname", "fallback_application_name", NULL };
    const char *vals[] = { S.cfg.conninfo, "pgcdc snapshot", NULL };
    sc->conn = PQconnectStartParams(keys, vals, 1);
    sc->since = S.now;
    if (!sc->conn || PQstatus(sc->conn) == CONNECTION_BAD) {
        char m[256];
        redact_quoted(sc->conn ? PQerrorMessage(sc->conn) : "out of memory", m, sizeof m);
        log_warn("snapshot connection: %s", m);
        snap_conn_down(sc, "cannot connect to the database");
        return;
    }
    PQsetnonblocking(sc->conn, 1);
    PQsetNoticeProcessor(sc->conn, snap_notice, NULL);
    sc->state = SC_CONNECTING;
    S.pfd[sc->slot].fd = PQsocket(sc->conn);
    S.pfd[sc->slot].events = POLLOUT;
}

static void snap_start(snapconn *sc, snapjob *j);

/* Starts waiting snapshots on idle connections, connecting more as needed. */
static void snap_kick(void)
{
    unsigned coming = 0;      /* connections on their way to idle */
    for (int i = 0; i < S.cfg.max_snapshots; i++)
        coming += S.snap.conns[i].state == SC_CONNECTING || S.snap.conns[i].state == SC_SETUP;
    for (int i = 0; i < S.cfg.max_snapshots && S.snap.wait_head; i++) {
        snapconn *sc = &S.snap.conns[i];
        if (sc->state == SC_DOWN) {
            if (coming < S.snap.waiting) {
                coming++;
                snap_connect(sc);   /* picks up a job once it is ready */
            }
            continue;
        }
        if (sc->state != SC_IDLE)
            continue;
        snapjob *j = S.snap.wait_head;
        S.snap.wait_head = j->next;
        if (!S.snap.wait_head)
            S.snap.wait_tail = NULL;
        S.snap.waiting--;
        j->next = NULL;
        snap_start(sc, j);
    }
}

/* A client with snapshot=1 was just upgraded: queue its snapshot. */
static void snap_request(client *c)
{
    snapjob *j = xmalloc(sizeof *j);
    memset(j, 0, sizeof *j);
    j->c = c;
    j->sp = c->grp->sp;
    j->started = S.now;
    j->flags = w2j_render_flags(S.cfg.wal2json_options);
    j->batch = 100;
    c->snap = j;
    c->snapping = 1;
    c->replaying = 1;         /* not live until the history is caught up */
    if (S.snap.wait_tail) S.snap.wait_tail->next = j;
    else S.snap.wait_head = j;
    S.snap.wait_tail = j;
    S.snap.waiting++;
    S.snap.total++;
    snap_kick();
}

static void snap_start(snapconn *sc, snapjob *j)
{
    sbuf q = { 0 }, name = { 0 };
    sc->job = j;
    sc->nres = 0;
    sc->failed = 0;
    S.snap.active++;
    /* the qualified name, as an identifier and as a regclass literal */
    size_t a = sql_ident(NULL, 0, j->sp->schema), b = sql_ident(NULL, 0, j->sp->table);
    sb_need(&name, a + b + 1);
    name.n = sql_ident(name.p, a, j->sp->schema);
    name.p[name.n++] = '.';
    name.n += sql_ident(name.p + name.n, b, j->sp->table);
    name.p[name.n] = 0;
    char *lit = PQescapeLiteral(sc->conn, name.p, name.n);
    if (!lit) {
        char r[300];
        snprintf(r, sizeof r, "snapshot failed: %s", PQerrorMessage(sc->conn));
        free(name.p);
        sc->job = NULL;
        S.snap.active--;
        snap_fail(j, 1011, "query", r);
        snap_job_free(j);
        return;
    }
    sb_printf(&q,
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
        "LOCK TABLE ONLY %s IN ACCESS SHARE MODE;"
        "SELECT pg_catalog.pg_current_snapshot()::text, pg_catalog.pg_current_wal_insert_lsn()::text;"
        "SELECT a.attname, CASE WHEN t.typtype = 'd' AND %s"
        " THEN pg_catalog.format_type(t.typbasetype, t.typtypmod)"
        " ELSE pg_catalog.format_type(a.atttypid, a.atttypmod) END,"
        " a.atttypid, a.attnum, a.attnotnull, coalesce(co.collisdeterministic, true),"
        " CASE WHEN a.atthasdef AND a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END"
        " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        " LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation"
        " LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = %s::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum;"
        "SELECT a.attname FROM (SELECT i.indrelid, i.indkey FROM pg_catalog.pg_index i"
        " JOIN pg_catalog.pg_class c ON c.oid = i.indrelid"
        " WHERE i.indrelid = %s::pg_catalog.regclass"
        " AND (i.indisprimary OR (i.indisreplident AND c.relreplident = 'i'))"
        " ORDER BY i.indisprimary DESC LIMIT 1) k"
        " CROSS JOIN LATERAL unnest(k.indkey::pg_catalog.int2[]) WITH ORDINALITY u(attnum, ord)"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = k.indrelid AND a.attnum = u.attnum"
        " ORDER BY u.ord",
        name.p, (j->flags & W2J_DOMAIN_BASE) ? "true" : "false", lit, lit);
    PQfreemem(lit);
    free(name.p);
    j->p0 = S.hist.next_seq;   /* everything decoded before this was committed before the snapshot */
    sc->state = SC_PROLOGUE;
    snap_send_query(sc, q.p);
    free(q.p);
    snap_watch(sc);
    if (j->c)
        log_debug("client %llu %s: snapshot of %s.%s started", (unsigned long long)j->c->id, j->c->addr,
                  j->sp->schema, j->sp->table);
}

/* The first history sequence the snapshot may not have seen: everything
 * decoded from p0 on, and any earlier transaction the snapshot does not
 * see.  A commit can be decoded before it shows as committed to new
 * snapshots (between its WAL record and its removal from the proc array,
 * or while it waits for a synchronous standby): such a transaction is in
 * the snapshot's in-progress list, or at or above its xmax when it was the
 * newest. */
static void snap_find_scan(snapjob *j)
{
    snapvis *v = j->vis;
    j->scan = j->p0;
    for (uint64_t seq = j->p0; seq-- > S.hist.first_seq; ) {
        frame *f = hist_at(seq);
        if (f->lsn >= v->wal || !xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip))
            j->scan = seq;
    }
}

/* Does the client skip frame f, as its snapshot already had it? */
static int snap_hides(client *c, const frame *f)
{
    snapvis *v = c->vis;
    if (!v)
        return 0;
    if (f->lsn >= v->wal) {   /* committed after the snapshot: from here on all are new */
        free(v);
        c->vis = NULL;
        return 0;
    }
    return xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip);
}

/* Result 3 of the prologue: pg_current_snapshot() and the WAL position. */
static int snap_take_snapshot(snapjob *j, PGresult *res)
{
    if (PQntuples(res) != 1 || PQnfields(res) != 2)
        return -1;
    const char *t = PQgetvalue(res, 0, 0);
    size_t n = strlen(t), cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += t[i] == ',';
    snapvis *v = xmalloc(sizeof *v + cap * sizeof v->xip[0]);
    long k = pgsnap_parse(t, n, &v->xmin, &v->xmax, v->xip, cap);
    const char *w = PQgetvalue(res, 0, 1);
    if (k < 0 || lsn_parse(w, strlen(w), &v->wal)) {
        free(v);
        return -1;
    }
    v->nxip = (size_t)k;
    j->vis = v;
    snap_find_scan(j);
    return 0;
}

/* Result 4: the columns; their members around the value are built once. */
static int snap_take_columns(snapjob *j, PGresult *res)
{
    unsigned n = (unsigned)PQntuples(res);
    if (PQnfields(res) != 7)
        return -1;
    j->ncols = n;
    j->cols = xmalloc((n ? n : 1) * sizeof *j->cols);
    j->heads = xmalloc((n ? n : 1) * sizeof *j->heads);
    j->tails = xmalloc((n ? n : 1) * sizeof *j->tails);
    memset(j->heads, 0, (n ? n : 1) * sizeof *j->heads);
    memset(j->tails, 0, (n ? n : 1) * sizeof *j->tails);
    size_t *off = xmalloc((n ? n : 1) * 3 * sizeof *off);
    for (unsigned i = 0; i < n; i++) {   /* strings first: colmem may move */
        for (int k = 0; k < 3; k++) {
            int field = k == 0 ? 0 : k == 1 ? 1 : 6;
            off[i * 3 + k] = PQgetisnull(res, (int)i, field) ? (size_t)-1 : j->colmem.n;
            if (off[i * 3 + k] != (size_t)-1) {
                const char *s = PQgetvalue(res, (int)i, field);
                sb_add(&j->colmem, s, strlen(s) + 1);
            }
        }
    }
    for (unsigned i = 0; i < n; i++) {
        snap_col *c = &j->cols[i];
        c->name = j->colmem.p + off[i * 3];
        c->type = j->colmem.p + off[i * 3 + 1];
        c->defexpr = off[i * 3 + 2] == (size_t)-1 ? NULL : j->colmem.p + off[i * 3 + 2];
        c->typoid = (uint32_t)strtoul(PQgetvalue(res, (int)i, 2), NULL, 10);
        c->attnum = atoi(PQgetvalue(res, (int)i, 3));
        c->notnull = PQgetvalue(res, (int)i, 4)[0] == 't';
        c->deterministic = PQgetvalue(res, (int)i, 5)[0] == 't';
        size_t hn = snap_col_head(NULL, 0, c, j->flags), tn = snap_col_tail(NULL, 0, c, j->flags);
        sb_need(&j->heads[i], hn);
        j->heads[i].n = snap_col_head(j->heads[i].p, hn + 1, c, j->flags);
        sb_need(&j->tails[i], tn);
        j->tails[i].n = snap_col_tail(j->tails[i].p, tn + 1, c, j->flags);
    }
    free(off);
    /* {"action":"S","schema":"...","table":"...","columns":[ */
    char *tmp;
    size_t a = pg_json_escape(NULL, 0, j->sp->schema, strlen(j->sp->schema));
    size_t b = pg_json_escape(NULL, 0, j->sp->table, strlen(j->sp->table));
    tmp = xmalloc(a + b);
    pg_json_escape(tmp, a, j->sp->schema, strlen(j->sp->schema));
    pg_json_escape(tmp + a, b, j->sp->table, strlen(j->sp->table));
    sb_add(&j->prefix, "{\"action\":\"S\",\"schema\":", 23);
    sb_add(&j->prefix, tmp, a);
    sb_add(&j->prefix, ",\"table\":", 9);
    sb_add(&j->prefix, tmp + a, b);
    sb_add(&j->prefix, ",\"columns\":[", 12);
    free(tmp);
    return 0;
}

/* Result 5: the key's column names, as a JSON array (or null). */
static void snap_take_key(snapjob *j, PGresult *res)
{
    int n = PQntuples(res);
    if (n <= 0 || PQnfields(res) != 1) {
        sb_add(&j->key, "null", 4);
        return;
    }
    sb_add(&j->key, "[", 1);
    for (int i = 0; i < n; i++) {
        const char *s = PQgetvalue(res, i, 0);
        size_t need = pg_json_escape(NULL, 0, s, strlen(s));
        if (i)
            sb_add(&j->key, ",", 1);
        sb_need(&j->key, need);
        pg_json_escape(j->key.p + j->key.n, need, s, strlen(s));
        j->key.n += need;
    }
    sb_add(&j->key, "]", 1);
}

/* Asks for the next batch if the client has room for it; else pauses. */
static void snap_fetch(snapconn *sc)
{
    snapjob *j = sc->job;
    char q[80];
    if (j->c && j->c->qbytes >= S.cfg.max_queue / 2) {
        sc->state = SC_PAUSED;
        sc->since = S.now;
        return;
    }
    /* about a quarter of max_queue per batch, by the messages so far */
    if (j->rows) {
        double want = (double)S.cfg.max_queue / 4 / (j->avg > 1 ? j->avg : 1);
        j->batch = want < 1 ? 1 : want > SNAP_BATCH_MAX ? SNAP_BATCH_MAX : (unsigned)want;
    }
    snprintf(q, sizeof q, "FETCH %u FROM " SNAP_CURSOR, j->batch);
    sc->state = SC_FETCH;
    snap_send_query(sc, q);
    snap_watch(sc);
}

/* The client's queue drained below half: the next batch may come. */
static void snap_more(client *c)
{
    snapjob *j = c->snap;
    if (!j || c->qbytes >= S.cfg.max_queue / 2)
        return;
    for (int i = 0; i < S.cfg.max_snapshots; i++) {
        snapconn *sc = &S.snap.conns[i];
        if (sc->job == j && sc->state == SC_PAUSED)
            snap_fetch(sc);
    }
}

/* Renders row r of a FETCH result as an S message into j->row; returns 0,
 * or -1 when the row is not valid UTF-8 (a text frame must be). */
static int snap_render_row(snapjob *j, PGresult *res, int r)
{
    size_t need = j->prefix.n + 2;
    for (unsigned i = 0; i < j->ncols; i++) {
        need += j->heads[i].n + j->tails[i].n + 1;
        need += PQgetisnull(res, r, (int)i) ? 4 : (size_t)PQgetlength(res, r, (int)i) * 6 + 2;
    }
    j->row.n = 0;
    sb_need(&j->row, need);
    char *o = j->row.p;
    size_t n = 0;
    memcpy(o, j->prefix.p, j->prefix.n);
    n += j->prefix.n;
    for (unsigned i = 0; i < j->ncols; i++) {
        const snap_col *c = &j->cols[i];
        if (i)
            o[n++] = ',';
        memcpy(o + n, j->heads[i].p, j->heads[i].n);
        n += j->heads[i].n;
        n += snap_render_value(o + n, need - n, snap_value_class(c->typoid), j->flags,
                               PQgetvalue(res, r, (int)i), (size_t)PQgetlength(res, r, (int)i),
                               PQgetisnull(res, r, (int)i));
        memcpy(o + n, j->tails[i].p, j->tails[i].n);
        n += j->tails[i].n;
    }
    o[n++] = ']';
    o[n++] = '}';
    j->row.n = n;
    return ws_utf8_step(0, (const uint8_t *)o, n) == 0 ? 0 : -1;
}

/* Does the row (as rendered) pass the subscription's filters?  The change
 * types do not limit snapshot rows. */
static int snap_row_matches(snapjob *j)
{
    spec any = *j->sp;
    w2j_record r;
    if (!any.nfilters)
        return 1;
    any.types = SUB_ALL;
    if (w2j_parse(j->row.p, j->row.n, S.repl.toks, S.repl.ntoks, S.repl.cols, S.repl.ncols, &r) != JSON_OK)
        return 0;
    r.action = 'I';
    match_change(&r, j->row.n);
    return spec_match(&any, &S.match);
}

/* The position for the E marker: the newest one before the first change
 * the snapshot did not see. */
static void snap_end_pos(snapjob *j, uint64_t *lsn, uint32_t *idx)
{
    snapvis *v = j->vis;
    for (uint64_t seq = j->scan; seq < S.hist.next_seq; seq++) {
        frame *f = hist_at(seq);
        if (f->lsn < v->wal && xid_visible(f->xid, v->xmin, v->xmax, v->xip, v->nxip))
            continue;
        frame *prev = seq > S.hist.first_seq ? hist_at(seq - 1) : NULL;
        *lsn = prev ? prev->lsn : S.hist.floor_lsn;
        *idx = prev ? prev->idx : S.hist.floor_idx;
        return;
    }
    *lsn = S.hist.have_last ? S.hist.last_lsn : S.hist.floor_lsn;
    *idx = S.hist.have_last ? S.hist.last_idx : S.hist.floor_idx;
}

/* Every row is out: the end marker, then the changes it did not see. */
static void snap_finish(snapjob *j)
{
    client *c = j->c;
    uint64_t lsn;
    uint32_t idx;
    char pfx[48];
    sbuf m = { 0 };
    if (!c)
        return;
    if (j->scan < S.hist.first_seq) {
        snap_fail(j, WS_CLOSE_TRY_AGAIN, "overtaken", "snapshot overtaken");
        return;
    }
    snap_end_pos(j, &lsn, &idx);
    int pn = pos_prefix(pfx, lsn, idx);
    sb_add(&m, pfx, (size_t)pn);
    sb_printf(&m, "\"action\":\"E\",\"rows\":%llu,\"key\":", (unsigned long long)j->rows);
    sb_add(&m, j->key.p, j->key.n);
    sb_add(&m, "}", 1);
    client_send_msg(c, m.p, m.n);
    free(m.p);
    log_info("client %llu %s: snapshot of %s.%s sent, %llu rows", (unsigned long long)c->id, c->addr,
             j->sp->schema, j->sp->table, (unsigned long long)j->rows);
    c->vis = j->vis;
    j->vis = NULL;
    c->cursor = j->scan;
    c->snap_replay = 1;
    c->snapping = 0;
    c->snap = NULL;
    j->c = NULL;
    mark_dirty(c);            /* the replay goes on from client_write */
}

/* One FETCH result: S messages for the matching rows. */
static void snap_take_rows(snapconn *sc, PGresult *res)
{
    snapjob *j = sc->job;
    int n = PQntuples(res);
    if (PQnfields(res) != (int)j->ncols && !(j->ncols == 0 && PQnfields(res) == 1)) {
        snprintf(sc->err, sizeof sc->err, "the table's columns changed");
        sc->failed = 1;
        return;
    }
    for (int r = 0; r < n && j->c; r++) {
        if (snap_render_row(j, res, r)) {
            snprintf(sc->err, sizeof sc->err, "a row is not valid UTF-8");
            sc->failed = 1;
            return;
        }
        j->avg = j->avg ? j->avg * 0.9 + (double)j->row.n * 0.1 : (double)j->row.n;
        if (!snap_row_matches(j))
            continue;
        if (j->sp->ncols) {   /* columns=: the filters saw the whole row, the client gets these */
            sb_need(&j->proj, j->row.n);
            long pn = w2j_project(j->row.p, j->row.n, j->sp->cols, j->sp->ncols, S.repl.toks, S.repl.ntoks,
                                  j->proj.p, j->row.n + 1);
            if (pn < 0) {
                snprintf(sc->err, sizeof sc->err, "a row could not be projected");
                sc->failed = 1;
                return;
            }
            client_send_msg(j->c, j->proj.p, (size_t)pn);
        } else {
            client_send_msg(j->c, j->row.p, j->row.n);
        }
        j->rows++;
        S.snap.rows++;
    }
}

/* All results of the connection's command are in: the next step. */
static void snap_conn_step(snapconn *sc)
{
    snapjob *j = sc->job;
    if (sc->rows && (sc->state != SC_FETCH || sc->failed || !j || !j->c)) {
        PQclear(sc->rows);
        sc->rows = NULL;
    }
    if (sc->state == SC_SETUP) {
        if (sc->failed) {
            char m[256];
            snprintf(m, sizeof m, "%s", sc->err);
            log_warn("snapshot connection: %s", m);
            snap_conn_down(sc, m);
            return;
        }
        sc->state = SC_IDLE;
        sc->since = S.now;
        snap_kick();
        return;
    }
    if (sc->state == SC_END) {
        if (j) {
            snap_job_free(j);
            sc->job = NULL;
            S.snap.active--;
        }
        sc->state = SC_IDLE;
        sc->since = S.now;
        sc->failed = 0;
        snap_kick();
        return;
    }
    if (sc->failed || !j->c) {
        sc->state = SC_END;   /* before snap_fail: nothing to cancel now */
        snap_send_query(sc, "ROLLBACK");
        if (sc->failed && j->c) {
            char r[300];
            snprintf(r, sizeof r, "snapshot failed: %s", sc->err);
            snap_fail(j, 1011, "query", r);
        }
        return;
    }
    switch (sc->state) {
    case SC_PROLOGUE: {
        if (!j->vis || !j->cols || !j->key.p) {
            snprintf(sc->err, sizeof sc->err, "unexpected answers from the database");
            sc->failed = 1;
            snap_conn_step(sc);
            return;
        }
        if (j->scan < S.hist.first_seq) {
            sc->state = SC_END;
            snap_send_query(sc, "ROLLBACK");
            snap_fail(j, WS_CLOSE_TRY_AGAIN, "overtaken", "snapshot overtaken");
            return;
        }
        unsigned np = 0;
        size_t pushed = 0;
        size_t need = snap_query(NULL, 0, SNAP_CURSOR, j->sp, j->cols, j->ncols, j->flags, &np, &pushed);
        char *q = xmalloc(need);
        snap_query(q, need, SNAP_CURSOR, j->sp, j->cols, j->ncols, j->flags, &np, &pushed);
        const char **vals = xmalloc((np ? np : 1) * sizeof *vals);
        const char *p = q + strlen(q) + 1;
        for (unsigned i = 0; i < np; i++) {
            vals[i] = p;
            p += strlen(p) + 1;
        }
        log_debug("snapshot of %s.%s: %zu of %u filters in the query", j->sp->schema, j->sp->table, pushed,
                  j->sp->nfilters);
        sc->state = SC_DECLARE;
        if (!PQsendQueryParams(sc->conn, q, (int)np, NULL, vals, NULL, NULL, 0)) {
            snprintf(sc->err, sizeof sc->err, "%s", PQerrorMessage(sc->conn));
            sc->failed = 1;
        }
        sc->since = S.now;
        free(vals);
        free(q);
        break;
    }
    case SC_DECLARE:
        snap_fetch(sc);
        break;
    case SC_FETCH: {
        PGresult *res = sc->rows;
        int last = !res || (unsigned)PQntuples(res) < j->batch;   /* the cursor is exhausted */
        sc->rows = NULL;
        /* the database reads the next batch while this one is rendered */
        if (last) {
            sc->state = SC_END;
            snap_send_query(sc, "COMMIT");
        } else {
            snap_fetch(sc);
        }
        if (res) {
            snap_take_rows(sc, res);
            PQclear(res);
        }
        if (last && sc->failed) {
            char r[300];
            snprintf(r, sizeof r, "snapshot failed: %s", sc->err);
            snap_fail(j, 1011, "query", r);
        } else if (last) {
            snap_finish(j);
        }
        break;
    }
    default:
        break;
    }
}

/* A result of the connection's current command; returns 1 when it keeps
 * res (a FETCH's rows), else the caller clears it. */
static int snap_conn_result(snapconn *sc, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    snapjob *j = sc->job;
    log_debug("snapshot connection %d: state %d result %s", sc->slot, (int)sc->state, PQresStatus(st));
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
        if (!sc->failed) {
            const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            snprintf(sc->err, sizeof sc->err, "%s", m ? m : PQresultErrorMessage(res));
        }
        sc->failed = 1;
        return 0;
    }
    if (sc->failed || !j || !j->c || sc->state == SC_SETUP || sc->state == SC_END)
        return 0;
    if (sc->state == SC_PROLOGUE) {
        int k = sc->nres++;
        int bad = 0;
        if (k == 2)
            bad = st != PGRES_TUPLES_OK || snap_take_snapshot(j, res);
        else if (k == 3)
            bad = st != PGRES_TUPLES_OK || snap_take_columns(j, res);
        else if (k == 4 && !(bad = st != PGRES_TUPLES_OK))
            snap_take_key(j, res);
        if (bad) {
            snprintf(sc->err, sizeof sc->err, "unexpected answer from the database");
            sc->failed = 1;
        }
    } else if (sc->state == SC_FETCH && st == PGRES_TUPLES_OK && !sc->rows) {
        sc->rows = res;
        return 1;
    }
    return 0;
}

static void snap_event(snapconn *sc)
{
    if (sc->state == SC_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(sc->conn);
        S.pfd[sc->slot].fd = PQsocket(sc->conn);
        if (ps == PGRES_POLLING_READING) S.pfd[sc->slot].events = POLLIN;
        else if (ps == PGRES_POLLING_WRITING) S.pfd[sc->slot].events = POLLOUT;
        else if (ps == PGRES_POLLING_FAILED) {
            char m[256];
            redact_quoted(PQerrorMessage(sc->conn), m, sizeof m);
            log_warn("snapshot connection: %s", m);
            snap_conn_down(sc, "cannot connect to the database");
        } else {
            sc->cancel = PQgetCancel(sc->conn);
            sc->state = SC_SETUP;
            sc->failed = 0;
            snap_send_query(sc, pin_settings);
            snap_watch(sc);
        }
        return;
    }
    if (!PQconsumeInput(sc->conn)) {
        char m[256];
        snprintf(m, sizeof m, "%s", PQerrorMessage(sc->conn));
        snap_conn_down(sc, m);
        return;
    }
    while (sc->conn && !PQisBusy(sc->conn) && sc->state != SC_IDLE && sc->state != SC_PAUSED &&
           sc->state != SC_DOWN) {
        PGresult *res = PQgetResult(sc->conn);
        if (res) {
            if (!snap_conn_result(sc, res))
                PQclear(res);
            continue;
        }
        snap_conn_step(sc);
    }
    if (sc->conn && sc->state == SC_IDLE) {
        /* notices and the like between snapshots: read and drop */
        PGresult *res;
        while (!PQisBusy(sc->conn) && (res = PQgetResult(sc->conn)) != NULL)
            PQclear(res);
    }
    if (sc->conn)
        snap_watch(sc);
}

/* Timeouts, the history overtaking a snapshot, idle connections. */
static void snap_tick(void)
{
    int64_t limit = (int64_t)S.cfg.snapshot_timeout * 1000;
    for (snapjob *j = S.snap.wait_head, *next; j; j = next) {
        next = j->next;
        if (j->c && S.now - j->started > limit)
            snap_fail(j, WS_CLOSE_TRY_AGAIN, "timeout", "snapshot timeout");
    }
    for (int i = 0; i < S.cfg.max_snapshots; i++) {
        snapconn *sc = &S.snap.conns[i];
        snapjob *j = sc->job;
        if (sc->state == SC_CONNECTING && S.now - sc->since > 10000) {
            snap_conn_down(sc, "no answer from the database within 10 s");
            continue;
        }
        if (sc->state == SC_IDLE && S.now - sc->since > SNAP_IDLE_MS) {
            snap_conn_down(sc, "idle");
            continue;
        }
        if (!j || !j->c)
            continue;
        if (S.now - j->started > limit)
            snap_fail(j, WS_CLOSE_TRY_AGAIN, "timeout", "snapshot timeout");
        else if (j->vis && j->scan < S.hist.first_seq)
            snap_fail(j, WS_CLOSE_TRY_AGAIN, "overtaken", "snapshot overtaken");
        else if (sc->state == SC_PAUSED)
            snap_more(j->c);
    }
    if (S.snap.wait_head)
        snap_kick();
}

static void snap_init(void)
{
    S.snap.conns = xmalloc((size_t)S.cfg.max_snapshots * sizeof *S.snap.conns);
    memset(S.snap.conns, 0, (size_t)S.cfg.max_snapshots * sizeof *S.snap.conns);
    for (int i = 0; i < S.cfg.max_snapshots; i++) {
        S.snap.conns[i].slot = SLOT_SNAP + i;
        S.pfd[SLOT_SNAP + i] = (struct pollfd){ -1, 0, 0 };
    }
}

static void snap_shutdown(void)
{
    for (int i = 0; S.snap.conns && i < S.cfg.max_snapshots; i++) {
        snapconn *sc = &S.snap.conns[i];
        if (sc->job && sc->state != SC_IDLE && sc->cancel) {
            char e[256];
            PQcancel(sc->cancel, e, sizeof e);
        }
        if (sc->job) {
            snap_job_free(sc->job);
            sc->job = NULL;
        }
        if (sc->rows)
            PQclear(sc->rows);
        sc->rows = NULL;
        if (sc->cancel)
            PQfreeCancel(sc->cancel);
        if (sc->conn)
            PQfinish(sc->conn);   /* the server rolls back what was open */
        sc->conn = NULL;
        sc->cancel = NULL;
    }
    free(S.snap.conns);
    S.snap.conns = NULL;
}

/* ==== Health and metrics ================================================ */

static void health_body(sbuf *b)
{
    sb_printf(b, "{\"status\":\"%s\",\"replication\":\"%s\",\"clients\":%u,\"lsn\":\"%X/%X\","
              "\"confirmed_lsn\":\"%X/%X\",\"slot\":\"%s\",\"version\":\"%s\",\"stream\":%s%s%s}\n",
              S.repl.state == R_STREAMING ? "ok" : "degraded", rstate_name(), S.http.nclients,
              (unsigned)(S.repl.processed >> 32), (unsigned)S.repl.processed,
              (unsigned)(S.repl.confirmed >> 32), (unsigned)S.repl.confirmed, S.cfg.slot, PGCDC_VERSION,
              S.repl.stream[0] ? "\"" : "", S.repl.stream[0] ? S.repl.stream : "null", S.repl.stream[0] ? "\"" : "");
}

static void metric(sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, (unsigned long long)v);
}

/* A labelled family: one value per label value, under one HELP and TYPE. */
static void metric_family(sbuf *b, const char *name, const char *type, const char *help,
                          const char *label, const char *const *names, const uint64_t *v, int n)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < n; i++)
        sb_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, names[i], (unsigned long long)v[i]);
}

static void metrics_body(sbuf *b)
{
    static const char *const transports[] = { "ws", "sse" };
    static const char *const drops[] = { "slow", "protocol", "timeout" };
    static const char *const snap_fails[] = { "query", "timeout", "overtaken" };
    uint64_t lag = S.repl.wal_end > S.repl.processed ? S.repl.wal_end - S.repl.processed : 0;
    frame *oldest = S.hist.n ? S.hist.ring[S.hist.head] : NULL;
    unsigned nsse = 0;
    for (int i = SLOT_FIRST; i < S.npfd; i++)
        nsse += S.pcl[i]->counted && S.pcl[i]->sse;
    metric(b, "pgcdc_clients", "gauge", "Connected streaming clients (WebSocket and SSE).", S.http.nclients);
    metric_family(b, "pgcdc_clients_by_transport", "gauge", "Connected streaming clients by transport.",
                  "transport", transports, (const uint64_t[]){ S.http.nclients - nsse, nsse }, 2);
    metric(b, "pgcdc_connections", "gauge", "Open client TCP connections, upgraded or not.", S.http.nconns);
    metric(b, "pgcdc_changes_total", "counter", "Changes decoded from the replication stream.", S.count.changes);
    metric(b, "pgcdc_frames_sent_total", "counter", "Change frames written to clients.", S.count.frames);
    metric(b, "pgcdc_bytes_sent_total", "counter", "Bytes written to clients.", S.count.bytes);
    metric_family(b, "pgcdc_clients_dropped_total", "counter", "Clients disconnected by the server.",
                  "reason", drops,
                  (const uint64_t[]){ S.count.drop_slow, S.count.drop_proto, S.count.drop_timeout }, 3);
    metric(b, "pgcdc_replication_connected", "gauge", "1 while the replication stream is up.", S.repl.state == R_STREAMING);
    metric(b, "pgcdc_replication_reconnects_total", "counter", "Times the replication stream was re-established.",
           S.count.reconnects);
    metric(b, "pgcdc_confirmed_lsn_bytes", "gauge", "Last LSN confirmed to the server.", S.repl.confirmed);
    metric(b, "pgcdc_replication_lag_bytes", "gauge", "Server WAL end minus the last LSN processed.", lag);
    metric(b, "pgcdc_records_skipped_total", "counter", "wal2json records that could not be parsed.", S.count.skipped);
    metric(b, "pgcdc_history_bytes", "gauge", "Memory held by the resume history.", S.hist.bytes);
    metric(b, "pgcdc_history_frames", "gauge", "Changes held by the resume history.", S.hist.n);
    metric(b, "pgcdc_history_oldest_lsn_bytes", "gauge", "Commit LSN of the oldest change in the history.",
           oldest ? oldest->lsn : 0);
    metric(b, "pgcdc_resumes_total", "counter", "Clients that connected with since.", S.count.resumes);
    metric(b, "pgcdc_connections_waiting", "gauge", "Connections whose request is not complete yet.", S.http.nwaiting);
    metric(b, "pgcdc_connections_shed_total", "counter",
           "Connections closed before finishing their request to make room for others.", S.count.shed);
    metric_family(b, "pgcdc_auth_failures_total", "counter", "Requests refused for their credentials or Origin.",
                  "reason", authf_names, S.count.auth_fail, AUTHF_N);
    metric(b, "pgcdc_snapshots_total", "counter", "Snapshots asked for (snapshot=1).", S.snap.total);
    metric(b, "pgcdc_snapshots_active", "gauge", "Snapshot queries running.", S.snap.active);
    metric(b, "pgcdc_snapshots_waiting", "gauge", "Snapshots waiting for a free connection.", S.snap.waiting);
    metric(b, "pgcdc_snapshot_rows_total", "counter", "Rows sent by snapshots.", S.snap.rows);
    metric_family(b, "pgcdc_snapshot_failures_total", "counter", "Snapshots that ended in an error.",
                  "reason", snap_fails,
                  (const uint64_t[]){ S.snap.fail_query, S.snap.fail_timeout, S.snap.fail_overtaken }, 3);
}

/* ==== The event loop ==================================================== */

static void on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGHUP)
        S.hup = 1;
    else
        S.stop = sig;
    if (write(S.sigpipe[1], "x", 1) < 0) {
        /* the pipe is full: the loop wakes anyway */
    }
    errno = saved;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int listen_on(const char *spec_, char *err, size_t errlen)
{
    char host[256], port[8];
    struct addrinfo hints, *res, *ai;
    int fd = -1, e;
    parse_listen(spec_, host, sizeof host, port, sizeof port);
    if (!*host) {
        /* ":port": one dual-stack socket for IPv6 and IPv4 when the host
         * has IPv6, else IPv4 only */
        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            struct sockaddr_in6 a6;
            int one = 1, zero = 0;
            memset(&a6, 0, sizeof a6);
            a6.sin6_family = AF_INET6;
            a6.sin6_addr = in6addr_any;
            a6.sin6_port = htons((uint16_t)atoi(port));
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(fd, 1024) == 0) {
                set_nonblock(fd);
                return fd;
            }
            close(fd);
            fd = -1;
        }
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if ((e = getaddrinfo(*host ? host : NULL, port, &hints, &res)) != 0) {
        snprintf(err, errlen, "cannot resolve listen address %s: %s", spec_, gai_strerror(e));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        snprintf(err, errlen, "cannot listen on %s: %s", spec_, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0)
        set_nonblock(fd);
    return fd;
}

/* ==== Connections that have not finished a request ===================== */

/* A connection counts here from accept until its request head is complete
 * (or it is answered or closed).  They are limited apart from WebSocket
 * clients, in all and per peer address, so idle or slow connections can
 * never keep clients out: when a limit is reached the oldest is shed.
 * A trusted proxy is exempt from the per-address limit: every client behind
 * it shares its address. */

typedef struct peer_count {
    char addr[48];
    unsigned n;
    struct peer_count *next;
} peer_count;

static struct peer_count **peer_slot(const char *addr)
{
    uint32_t h = 2166136261u;
    for (const char *p = addr; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct peer_count **pp = &S.http.peers[h % (sizeof S.http.peers / sizeof S.http.peers[0])];
    while (*pp && strcmp((*pp)->addr, addr))
        pp = &(*pp)->next;
    return pp;
}

static void waiting_del(client *c)
{
    if (!c->waiting)
        return;
    if (c->wprev) c->wprev->wnext = c->wnext;
    else S.http.wait_head = c->wnext;
    if (c->wnext) c->wnext->wprev = c->wprev;
    else S.http.wait_tail = c->wprev;
    c->wnext = c->wprev = NULL;
    c->waiting = 0;
    S.http.nwaiting--;
    if (c->peer_counted) {
        struct peer_count **pp = peer_slot(c->addr), *pc = *pp;
        c->peer_counted = 0;
        if (pc && --pc->n == 0) {
            *pp = pc->next;
            free(pc);
        }
    }
}

static void shed(client *c, const char *why)
{
    S.count.shed++;
    if (S.now - S.http.shed_logged >= LOG_EVERY_MS) {
        log_warn("client %llu %s: closed, its request unfinished after %lld ms: %s%s",
                 (unsigned long long)c->id, c->addr, (long long)(S.now - (c->deadline - REQUEST_TIMEOUT_MS)),
                 why, S.http.shed_unlogged ? " (more were shed; see pgcdc_connections_shed_total)" : "");
        S.http.shed_logged = S.now;
        S.http.shed_unlogged = 0;
    } else {
        S.http.shed_unlogged++;
    }
    client_close(c);
}

/* Makes room for c, then puts it last on the waiting list. */
static void waiting_add(client *c)
{
    if (!trusted_peer(c->addr)) {
        struct peer_count **pp = peer_slot(c->addr), *pc = *pp;
        if (pc && pc->n >= PEER_WAITING_MAX) {
            client *o = S.http.wait_head;
            while (o && !(o->peer_counted && !strcmp(o->addr, c->addr)))
                o = o->wnext;
            if (o)
                shed(o, "too many unfinished requests from this address");
            pp = peer_slot(c->addr);
            pc = *pp;
        }
        if (!pc) {
            pc = xmalloc(sizeof *pc);
            memset(pc, 0, sizeof *pc);
            snprintf(pc->addr, sizeof pc->addr, "%s", c->addr);
            *pp = pc;
        }
        pc->n++;
        c->peer_counted = 1;
    }
    if (S.http.nwaiting >= WAITING_MAX && S.http.wait_head)
        shed(S.http.wait_head, "too many unfinished requests");
    c->waiting = 1;
    c->wprev = S.http.wait_tail;
    if (S.http.wait_tail) S.http.wait_tail->wnext = c;
    else S.http.wait_head = c;
    S.http.wait_tail = c;
    S.http.nwaiting++;
}

/* Accepts on the listener in poll slot lslot (SLOT_LISTEN or SLOT_ADMIN). */
static void accept_clients(int lslot)
{
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept(S.pfd[lslot].fd, (struct sockaddr *)&ss, &sl);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* the listeners stay readable: pause them, or the loop spins */
                S.pfd[SLOT_LISTEN].events = 0;
                S.pfd[SLOT_ADMIN].events = 0;
                S.http.accept_paused = S.now + ACCEPT_PAUSE_MS;
                if (S.now - S.http.emfile_logged > LOG_EVERY_MS) {
                    log_warn("out of file descriptors (%s): raise the limit (ulimit -n)", strerror(errno));
                    S.http.emfile_logged = S.now;
                }
            }
            return;
        }
        if (set_nonblock(fd) < 0) {
            close(fd);
            continue;
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* the last resort against running out of descriptors; the limits
         * on unfinished requests keep this from being reached by them */
        if (S.http.nconns >= (unsigned)S.cfg.max_clients + WAITING_MAX + 1024u) {
            static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                       "Content-Length: 17\r\nConnection: close\r\n\r\ntoo many clients\n";
            if (write(fd, busy, sizeof busy - 1) < 0) {
                /* nothing more to do for it */
            }
            close(fd);
            continue;
        }
        client *c = xmalloc(sizeof *c);
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->id = ++S.http.next_client_id;
        c->state = C_HTTP;
        c->admin = (uint8_t)(lslot == SLOT_ADMIN);
        c->deadline = S.now + REQUEST_TIMEOUT_MS;
        c->last_rx = S.now;
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->addr, sizeof c->addr);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->addr, sizeof c->addr);
        else
            snprintf(c->addr, sizeof c->addr, "local");
        if (S.npfd == S.cappfd) {
            S.cappfd *= 2;
            S.pfd = xrealloc(S.pfd, (size_t)S.cappfd * sizeof *S.pfd);
            S.pcl = xrealloc(S.pcl, (size_t)S.cappfd * sizeof *S.pcl);
        }
        c->slot = S.npfd++;
        S.pfd[c->slot].fd = fd;
        S.pfd[c->slot].revents = 0;
        S.pcl[c->slot] = c;
        S.http.nconns++;
        set_events(c);
        log_debug("client %llu %s: connected", (unsigned long long)c->id, c->addr);
        waiting_add(c);
    }
}

/* Timeouts, pings and grant expiry; runs a few times a second. */
static void clients_tick(void)
{
    int64_t wall = (int64_t)time(NULL);
    int64_t ping_ms = (int64_t)S.cfg.ping_interval * 1000;
    for (int i = S.npfd - 1; i >= SLOT_FIRST; i--) {
        client *c = S.pcl[i];
        if (c->deadline && S.now >= c->deadline) {
            if (c->state == C_HTTP || c->state == C_PENDING)
                log_info("client %llu %s: request not complete within %d s, closed", (unsigned long long)c->id,
                         c->addr, REQUEST_TIMEOUT_MS / 1000);
            client_close(c);
            continue;
        }
        if (c->state != C_WS)
            continue;
        if (c->grant_exp && wall >= c->grant_exp) {
            log_info("client %llu %s: grant expired", (unsigned long long)c->id, c->addr);
            client_ws_close(c, WS_CLOSE_POLICY, "grant expired", 1);
            continue;
        }
        if (c->token_exp && wall >= c->token_exp) {
            log_info("client %llu %s: token expired", (unsigned long long)c->id, c->addr);
            client_ws_close(c, WS_CLOSE_POLICY, "token expired", 1);
            continue;
        }
        if (c->sse_hold && S.hist.floor_known) {
            /* replication said where it resumes: serve since, or end the
             * stream (the EventSource comes back and gets the 410) */
            c->sse_hold = 0;
            if (pos_cmp(c->since_lsn, c->since_idx, S.hist.floor_lsn, S.hist.floor_idx) < 0) {
                log_info("client %llu %s: held position is older than the history", (unsigned long long)c->id,
                         c->addr);
                client_sse_end(c, "position older than the history this server keeps (410): reload your data");
                continue;
            }
        }
        if (c->sse) {   /* a comment keeps proxies from closing an idle stream */
            if (ping_ms && S.now - c->last_ping >= ping_ms) {
                frame *f = frame_new(8);
                memcpy(f->data, ": ping\n\n", 8);
                q_push(c, f);
                frame_unref(f);
                c->last_ping = S.now;
            }
            continue;
        }
        if (ping_ms) {
            if (S.now - c->last_rx >= 3 * ping_ms) {
                log_info("client %llu %s: silent for %d s, dropped", (unsigned long long)c->id, c->addr,
                         3 * S.cfg.ping_interval);
                S.count.drop_timeout++;
                client_close(c);
                continue;
            }
            if (S.now - c->last_ping >= ping_ms) {
                frame *f = frame_ws(WS_OP_PING, "pgcdc", 5);
                q_push(c, f);
                frame_unref(f);
                c->last_ping = S.now;
            }
        }
    }
}

static void begin_shutdown(void)
{
    log_info("shutting down (signal %d): closing %u clients", S.stop, S.http.nclients);
    for (int i = S.npfd - 1; i >= SLOT_FIRST; i--) {
        client *c = S.pcl[i];
        if (c->state == C_WS)
            client_ws_close(c, WS_CLOSE_GOING_AWAY, "server shutting down", 1);
        else if (c->state != C_CLOSING)
            client_close(c);
    }
    if (S.repl.state == R_STREAMING) {
        S.repl.reply_now = 1;
        repl_status();
        if (S.repl.conn && PQputCopyEnd(S.repl.conn, NULL) == 1) {
            PQflush(S.repl.conn);
            S.repl.state = R_STOPPING;
        }
    }
    if (S.http.listen_fd >= 0) {
        close(S.http.listen_fd);
        S.http.listen_fd = -1;
        S.pfd[SLOT_LISTEN].fd = -1;
    }
    if (S.http.admin_fd >= 0) {
        close(S.http.admin_fd);
        S.http.admin_fd = -1;
        S.pfd[SLOT_ADMIN].fd = -1;
    }
    S.stop_deadline = S.now + SHUTDOWN_MS;
}

/* The replication stream ended cleanly after CopyDone? */
static int repl_stopped(void)
{
    if (S.repl.state != R_STOPPING)
        return 1;
    if (!PQconsumeInput(S.repl.conn))
        return 1;
    while (!PQisBusy(S.repl.conn)) {
        char *buf;
        int n = PQgetCopyData(S.repl.conn, &buf, 1);
        if (n > 0) {
            PQfreemem(buf);
            continue;
        }
        if (n == 0)
            return 0;
        PGresult *res;
        while (!PQisBusy(S.repl.conn) && (res = PQgetResult(S.repl.conn)) != NULL)
            PQclear(res);
        return !PQisBusy(S.repl.conn);
    }
    return 0;
}

static int run(void)
{
    int64_t last_tick = 0;
    int shutting = 0;
    S.repl.backoff = 1;
    S.repl.state = R_WAIT;
    S.repl.wait_until = 0;
    for (;;) {
        S.now = now_ms();
        S.hist.replay_work = REPLAY_WORK;
        if (S.stop && !shutting) {
            shutting = 1;
            begin_shutdown();
        }
        if (shutting) {
            int done = S.http.nconns == 0 && repl_stopped();
            if (done || S.now >= S.stop_deadline)
                break;
        }
        if (S.now - last_tick >= TICK_MS) {
            last_tick = S.now;
            if (S.http.accept_paused && S.now >= S.http.accept_paused && S.http.listen_fd >= 0) {
                S.http.accept_paused = 0;
                S.pfd[SLOT_LISTEN].events = POLLIN;
                S.pfd[SLOT_ADMIN].events = POLLIN;
            }
            clients_tick();
            if (!shutting) {
                repl_tick();
                cat_tick();
                snap_tick();
            }
        }
        int waiting = flush_dirty();
        graveyard_free();
        int timeout = S.repl.more ? 0 : waiting ? 1 : TICK_MS;
        int n = poll(S.pfd, (nfds_t)S.npfd, timeout);
        if (n < 0 && errno != EINTR) {
            log_error("poll: %s", strerror(errno));
            return 2;
        }
        S.now = now_ms();
        if (n <= 0 && !S.repl.more)
            continue;
        if (S.pfd[SLOT_PIPE].revents) {
            char drain[64];
            while (read(S.sigpipe[0], drain, sizeof drain) > 0)
                ;
        }
        if (S.hup) {
            S.hup = 0;
            reload_keys();
        }
        if (S.repl.conn && (S.pfd[SLOT_REPL].revents || S.repl.more))
            repl_event(S.pfd[SLOT_REPL].revents ? S.pfd[SLOT_REPL].revents : POLLIN);
        if (S.cat.conn && S.pfd[SLOT_CAT].revents)
            cat_event();
        for (int i = 0; i < S.cfg.max_snapshots; i++)
            if (S.snap.conns[i].conn && S.pfd[SLOT_SNAP + i].revents)
                snap_event(&S.snap.conns[i]);
        if (S.http.listen_fd >= 0 && (S.pfd[SLOT_LISTEN].revents & POLLIN))
            accept_clients(SLOT_LISTEN);
        if (S.http.admin_fd >= 0 && (S.pfd[SLOT_ADMIN].revents & POLLIN))
            accept_clients(SLOT_ADMIN);
        for (int i = S.npfd - 1; i >= SLOT_FIRST; i--) {
            if (i >= S.npfd)
                continue;
            short re = S.pfd[i].revents;
            client *c = S.pcl[i];
            S.pfd[i].revents = 0;
            if (!re || c->fd < 0)
                continue;
            if (re & POLLOUT)
                client_write(c);
            if (c->fd >= 0 && (re & (POLLIN | POLLHUP | POLLERR)))
                client_read(c);
        }
        flush_dirty();
        graveyard_free();
    }
    if (S.repl.conn) {
        PQfinish(S.repl.conn);
        S.repl.conn = NULL;
    }
    snap_shutdown();
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pgcdc [-c FILE] [-t] [-v|-q] [-V] [-h]\n"
               "  -c FILE   configuration file (default: ./pgcdc.config)\n"
               "  -t        parse and validate the configuration, print \"configuration ok\", exit\n"
               "  -v / -q   more / less logging (repeatable)\n"
               "  -V        print the version and exit\n"
               "  -h        this help\n");
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    const char *path = "./pgcdc.config";
    int test_only = 0, verbosity = 0;
    char err[512];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            fprintf(stderr, "pgcdc: unexpected argument \"%s\"\n", a);
            usage(stderr);
            return 1;
        }
        for (const char *o = a + 1; *o; o++) {
            switch (*o) {
            case 'c':
                if (o[1]) path = o + 1;
                else if (i + 1 < argc) path = argv[++i];
                else {
                    fprintf(stderr, "pgcdc: -c needs a file name\n");
                    usage(stderr);
                    return 1;
                }
                goto next_arg;
            case 't': test_only = 1; break;
            case 'v': verbosity++; break;
            case 'q': verbosity--; break;
            case 'V': printf("pgcdc %s\n", PGCDC_VERSION); return 0;
            case 'h': usage(stdout); return 0;
            default:
                fprintf(stderr, "pgcdc: unknown option -%c\n", *o);
                usage(stderr);
                return 1;
            }
        }
    next_arg:;
    }
    S.log_level = L_INFO + verbosity;
    if (S.log_level < L_ERROR) S.log_level = L_ERROR;
    if (S.log_level > L_DEBUG) S.log_level = L_DEBUG;

    config_defaults(&S.cfg);
    if (config_load(&S.cfg, path))
        return 1;
    if (test_only) {
        printf("configuration ok\n");
        config_free(&S.cfg);
        return 0;
    }
    S.config_path = path;
    if (S.cfg.keys)
        log_info("jwt_keys: %u RSA key%s loaded from %s%s", S.cfg.keys->n, S.cfg.keys->n == 1 ? "" : "s",
                 S.cfg.jwt_keys, S.cfg.keys->skipped ? " (keys of other kinds skipped)" : "");
    if (S.cfg.jwt_secret || S.cfg.jwt_keys)
        log_info("JWT access: %u rule%s", S.cfg.nrules, S.cfg.nrules == 1 ? "" : "s");
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (pipe(S.sigpipe) < 0) {
        log_error("pipe: %s", strerror(errno));
        return 2;
    }
    set_nonblock(S.sigpipe[0]);
    set_nonblock(S.sigpipe[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    S.http.listen_fd = listen_on(S.cfg.listen, err, sizeof err);
    if (S.http.listen_fd < 0) {
        log_error("%s", err);
        return 2;
    }
    S.http.admin_fd = -1;
    if (S.cfg.admin_listen) {
        S.http.admin_fd = listen_on(S.cfg.admin_listen, err, sizeof err);
        if (S.http.admin_fd < 0) {
            log_error("admin_listen: %s", err);
            return 2;
        }
        log_info("/health and /metrics on %s only", S.cfg.admin_listen);
    }
    S.cappfd = 1024;
    S.pfd = xmalloc((size_t)S.cappfd * sizeof *S.pfd);
    S.pcl = xmalloc((size_t)S.cappfd * sizeof *S.pcl);
    memset(S.pfd, 0, (size_t)S.cappfd * sizeof *S.pfd);
    memset(S.pcl, 0, (size_t)S.cappfd * sizeof *S.pcl);
    S.npfd = SLOT_FIRST;
    S.pfd[SLOT_LISTEN] = (struct pollfd){ S.http.listen_fd, POLLIN, 0 };
    S.pfd[SLOT_PIPE] = (struct pollfd){ S.sigpipe[0], POLLIN, 0 };
    S.pfd[SLOT_REPL] = (struct pollfd){ -1, 0, 0 };
    S.pfd[SLOT_CAT] = (struct pollfd){ -1, 0, 0 };
    S.pfd[SLOT_ADMIN] = (struct pollfd){ S.http.admin_fd, POLLIN, 0 };
    snap_init();
    S.repl.ntoks = TOKS_MAX;
    S.repl.ncols = COLS_MAX;
    S.repl.toks = xmalloc(S.repl.ntoks * sizeof *S.repl.toks);
    S.repl.cols = xmalloc(S.repl.ncols * sizeof *S.repl.cols);

    log_info("pgcdc %s listening on %s, slot \"%s\" (%s), history %zu bytes", PGCDC_VERSION, S.cfg.listen,
             S.cfg.slot, S.cfg.temporary_slot ? "temporary" : "persistent", S.cfg.history);
    int rc = run();
    log_info("stopped");
    config_free(&S.cfg);
    return rc;
}
