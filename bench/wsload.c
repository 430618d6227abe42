/* wsload.c -- load, fan-out and latency client for pgcdc's benchmarks.
 *
 * Opens N WebSocket connections to one URL and counts the server's messages
 * on each, in one epoll loop, then prints machine-readable result lines
 * ("key=value" pairs after a leading word) on stdout.
 *
 * The WebSocket client side it speaks (RFC 6455, version 13):
 *   - HTTP/1.1 GET upgrade with a random 16-byte Sec-WebSocket-Key; anything
 *     but "HTTP/1.1 101" is a failed connection (its status is counted);
 *   - server frames: FIN, opcodes 0 (continuation), 1, 2, 8, 9, 10, payload
 *     lengths in 7, 16 and 64 bits; reserved bits, masked server frames and
 *     bad control frames end the connection;
 *   - its own frames (pong to each ping, close) are masked with a fresh key.
 * One message is one counted frame.  Payloads are skipped without copying,
 * except control payloads and, with --latency, the data messages of the
 * measured connections, in which the row's "ts" column (epoch microseconds,
 * written by the workload) is compared with the CLOCK_REALTIME at which the
 * read() that completed the message returned.
 *
 * --pipe measures the reference instead: newline-separated wal2json
 * format-version 2 records on stdin (pg_recvlogical -f -), counting only the
 * I, U, D and T records, with the same result lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 256            /* handshakes in progress at once */
#define HS_CAP 4096                 /* bytes of an upgrade response */
#define CAPTURE_MAX (1u << 20)      /* data payloads above are not parsed */
#define READ_CHUNK (256 * 1024)
#define MAX_HEADERS 8

enum cstate { C_NEW, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_STALLED, C_DONE };

struct conn {
    int fd;
    uint8_t st;              /* enum cstate */
    uint8_t in_payload;      /* reading a frame's payload */
    uint8_t hdr_len;
    uint8_t op;              /* opcode of the current frame */
    uint8_t fin;
    uint8_t in_msg;          /* a fragmented data message is open */
    uint8_t measure;         /* latency is measured on this connection */
    uint8_t cap_over;        /* the message outgrew CAPTURE_MAX */
    uint8_t up;              /* the upgrade succeeded */
    uint8_t hdr[14];
    uint8_t ctl_len;
    uint8_t ctl[125];
    int close_code;          /* 0 none yet, -1 EOF, -2 reset/error */
    uint64_t left;           /* payload bytes still to come */
    uint64_t frames;
    int64_t t0;              /* monotonic start of connect, us */
    char *hs;                /* upgrade request, then response; freed after */
    size_t hs_len, hs_off;
    uint8_t *cap;            /* captured data payload (measured conns) */
    size_t cap_len, cap_size;
    uint8_t *out;            /* unsent client frames */
    size_t out_len, out_off;
    uint8_t *stash;          /* read past the K-th frame before stalling */
    size_t stash_len;
};

struct opts {
    const char *url;
    char host[256];
    char port[16];
    char path[2048];
    int nconn;
    uint64_t expect;         /* -n: frames per connection, 0 = no target */
    double timeout;          /* -t: seconds without progress */
    double ramp;             /* -r: connections started per second, 0 = fast */
    bool latency;
    int lat_conns;           /* measure on the first K connections */
    double idle;             /* --idle SECS, < 0 when not idle mode */
    int64_t stop_after;      /* --stop-reading-after K, < 0 off */
    double stall;            /* seconds to stay stalled before draining */
    double max_total;        /* hard cap on the run, seconds */
    const char *ready_file;
    const char *trace_file;  /* per-frame latency of connection 0 */
    const char *headers[MAX_HEADERS];
    int nheaders;
    bool pipe;
};

struct stat_code { int code; int count; };

struct run {
    struct opts o;
    struct conn *c;
    int ep;
    struct addrinfo *ai;
    uint64_t rng;
    /* connect phase */
    int started, inflight, upgraded, failed;
    int fail_connect, fail_eof, fail_timeout, fail_status, fail_fd;
    int last_errno;
    struct stat_code codes[8];
    int64_t conn_begin_mono, ready_mono;
    bool ready;
    /* streaming */
    int pending;             /* upgraded, open, below -n */
    int open;                /* upgraded and not closed */
    uint64_t total;
    uint64_t bytes;          /* data payload bytes */
    int64_t first_us, last_us;     /* realtime of first/last message */
    int64_t progress_mono;
    int closed_by_server;
    int close_codes[4];      /* 1000, 1001, 1013, other */
    /* latency */
    int64_t *lat;
    size_t nlat, lat_cap;
    uint64_t lat_misses;     /* measured messages without a ts */
    FILE *trace;
    /* slow consumer */
    int64_t stall_mono;
    uint64_t stall_frames;
    const char *wake;
    uint64_t drained;
};

static volatile sig_atomic_t got_signal, got_wake;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        got_wake = 1;
    else
        got_signal = 1;
}

static int64_t now_us(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: masks and keys need unpredictability only against
     * accidental collisions, not an attacker. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void rng_seed(uint64_t *s)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != (ssize_t)sizeof v)
            v = 0;
        close(fd);
    }
    v ^= (uint64_t)now_us(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32);
    *s = v ? v : 0x9E3779B97F4A7C15ULL;
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* Finds needle in hay without relying on a NUL terminator. */
static const uint8_t *find(const uint8_t *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    const uint8_t *p = hay, *end = hay + n;
    while ((size_t)(end - p) >= k) {
        const uint8_t *q = memchr(p, needle[0], (size_t)(end - p) - k + 1);
        if (!q)
            return NULL;
        if (memcmp(q, needle, k) == 0)
            return q;
        p = q + 1;
    }
    return NULL;
}

/* The "ts" column of a wal2json format-version 2 record:
 * {"name":"ts","type":"bigint","value":1700000000000000}. */
static int parse_ts(const uint8_t *p, size_t n, int64_t *ts)
{
    const uint8_t *k = find(p, n, "\"name\":\"ts\"");
    if (!k)
        return -1;
    const uint8_t *v = find(k, n - (size_t)(k - p), "\"value\":");
    if (!v)
        return -1;
    v += 8;
    const uint8_t *end = p + n;
    bool neg = false;
    if (v < end && *v == '-') {
        neg = true;
        v++;
    }
    if (v >= end || *v < '0' || *v > '9')
        return -1;
    int64_t x = 0;
    while (v < end && *v >= '0' && *v <= '9')
        x = x * 10 + (*v++ - '0');
    *ts = neg ? -x : x;
    return 0;
}

static void lat_add(struct run *r, int64_t d)
{
    if (r->nlat == r->lat_cap) {
        size_t cap = r->lat_cap ? r->lat_cap * 2 : 65536;
        int64_t *a = realloc(r->lat, cap * sizeof *a);
        if (!a)
            return;
        r->lat = a;
        r->lat_cap = cap;
    }
    r->lat[r->nlat++] = d;
}

/* One complete data message arrived at realtime now. */
static void on_message(struct run *r, struct conn *c, const uint8_t *p,
                       size_t n, bool have_payload, int64_t now)
{
    c->frames++;
    r->total++;
    if (!r->first_us || now < r->first_us)
        r->first_us = now;
    if (now > r->last_us)
        r->last_us = now;
    if (r->o.expect && c->frames == r->o.expect)
        r->pending--;
    if (c->measure) {
        int64_t ts;
        if (have_payload && parse_ts(p, n, &ts) == 0) {
            lat_add(r, now - ts);
            if (r->trace && c == r->c)
                fprintf(r->trace, "%lld %lld\n", (long long)now, (long long)(now - ts));
        } else
            r->lat_misses++;
    }
}

/* ---- connections ------------------------------------------------------ */

static void ep_set(struct run *r, struct conn *c, uint32_t events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_finish(struct run *r, struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->st == C_OPEN || c->st == C_STALLED) {
        r->open--;
        if (!r->o.expect || c->frames < r->o.expect)
            r->pending--;
    }
    c->st = C_DONE;
    free(c->hs);
    free(c->cap);
    free(c->out);
    free(c->stash);
    c->stash = NULL;
    c->hs = NULL;
    c->cap = NULL;
    c->out = NULL;
}

static void conn_fail(struct run *r, struct conn *c, int *counter)
{
    (*counter)++;
    r->failed++;
    r->inflight--;
    conn_finish(r, c);
}

/* Sends what is queued; a partial write waits for EPOLLOUT. */
static int flush_out(struct run *r, struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (c->st == C_OPEN)
                    ep_set(r, c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)w;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

/* Queues one masked FIN frame from the client (control frames only). */
static int send_frame(struct run *r, struct conn *c, int op,
                      const uint8_t *p, size_t n)
{
    size_t need = c->out_len + 6 + n;
    uint8_t *b = realloc(c->out, need);
    if (!b)
        return -1;
    c->out = b;
    b += c->out_len;
    uint32_t key = (uint32_t)rng_next(&r->rng);
    uint8_t mask[4] = { (uint8_t)(key >> 24), (uint8_t)(key >> 16),
                        (uint8_t)(key >> 8), (uint8_t)key };
    b[0] = (uint8_t)(0x80 | op);
    b[1] = (uint8_t)(0x80 | n);
    memcpy(b + 2, mask, 4);
    for (size_t i = 0; i < n; i++)
        b[6 + i] = p[i] ^ mask[i & 3];
    c->out_len = need;
    return flush_out(r, c);
}

static void record_close(struct run *r, struct conn *c, int code)
{
    if (c->close_code)
        return;
    c->close_code = code;
    if (code > 0) {
        r->closed_by_server++;
        r->close_codes[code == 1000 ? 0 : code == 1001 ? 1 : code == 1013 ? 2 : 3]++;
    }
}

/* A control frame's payload is complete.  Returns 1 when the connection is
 * over. */
static int on_control(struct run *r, struct conn *c)
{
    if (c->op == 0x9)
        return send_frame(r, c, 0xA, c->ctl, c->ctl_len) < 0;
    if (c->op != 0x8)
        return 0;
    int code = 1005;
    if (c->ctl_len >= 2)
        code = c->ctl[0] << 8 | c->ctl[1];
    record_close(r, c, code);
    uint8_t echo[2] = { (uint8_t)(code >> 8), (uint8_t)code };
    send_frame(r, c, 0x8, echo, code == 1005 ? 0 : 2);
    return 1;
}

static int start_payload(struct run *r, struct conn *c)
{
    uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
    uint64_t len = b1 & 0x7f;
    if (len == 126)
        len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
    else if (len == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | c->hdr[i];
    }
    c->op = b0 & 0x0f;
    c->fin = b0 >> 7;
    if ((b0 & 0x70) || (b1 & 0x80))
        return -1;
    if (c->op & 0x8) {
        if (!c->fin || len > 125 || (c->op != 0x8 && c->op != 0x9 && c->op != 0xA))
            return -1;
        c->ctl_len = 0;
    } else if (c->op == 0x1 || c->op == 0x2) {
        if (c->in_msg)
            return -1;
        c->cap_len = 0;
        c->cap_over = 0;
    } else if (c->op == 0x0) {
        if (!c->in_msg)
            return -1;
    } else {
        return -1;
    }
    if (!(c->op & 0x8)) {
        r->bytes += len;
        if (c->measure && c->cap_len + len > CAPTURE_MAX)
            c->cap_over = 1;
    }
    c->left = len;
    c->in_payload = 1;
    return 0;
}

/* The current frame's payload is complete.  Returns 1 when the connection is
 * over, -1 on error. */
static int end_frame(struct run *r, struct conn *c, int64_t now)
{
    c->in_payload = 0;
    c->hdr_len = 0;
    if (c->op & 0x8)
        return on_control(r, c);
    if (!c->fin) {
        c->in_msg = 1;
        return 0;
    }
    c->in_msg = 0;
    on_message(r, c, c->cap, c->cap_len, c->measure && !c->cap_over, now);
    return 0;
}

/* Has the connection consumed the frames it may before it stalls? */
static bool stop_reached(const struct run *r, const struct conn *c)
{
    return r->o.stop_after >= 0 && !r->wake && c->frames >= (uint64_t)r->o.stop_after;
}

/* Runs server bytes through the frame parser.  Returns 0, 1 when the
 * connection is over (close received), -1 on a protocol error.  A consumer
 * about to stall keeps the bytes after its K-th frame for later, so it has
 * taken exactly K frames. */
static int feed(struct run *r, struct conn *c, const uint8_t *p, size_t n,
                int64_t now)
{
    while (n > 0) {
        if (!c->in_payload && c->hdr_len == 0 && stop_reached(r, c)) {
            c->stash = malloc(n);
            if (!c->stash)
                return -1;
            memcpy(c->stash, p, n);
            c->stash_len = n;
            return 0;
        }
        if (!c->in_payload) {
            while (c->hdr_len < 2 && n) {
                c->hdr[c->hdr_len++] = *p++;
                n--;
            }
            if (c->hdr_len < 2)
                return 0;
            unsigned need = 2, l7 = c->hdr[1] & 0x7f;
            need += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
            need += (c->hdr[1] & 0x80) ? 4 : 0;
            while (c->hdr_len < need && n) {
                c->hdr[c->hdr_len++] = *p++;
                n--;
            }
            if (c->hdr_len < need)
                return 0;
            if (start_payload(r, c) < 0)
                return -1;
            if (c->left == 0) {
                int e = end_frame(r, c, now);
                if (e)
                    return e;
                continue;
            }
        }
        size_t take = c->left < n ? (size_t)c->left : n;
        if (c->op & 0x8) {
            memcpy(c->ctl + c->ctl_len, p, take);
            c->ctl_len = (uint8_t)(c->ctl_len + take);
        } else if (c->measure && !c->cap_over) {
            if (c->cap_len + take > c->cap_size) {
                size_t sz = c->cap_size ? c->cap_size : 4096;
                while (sz < c->cap_len + take)
                    sz *= 2;
                uint8_t *b = realloc(c->cap, sz);
                if (!b)
                    return -1;
                c->cap = b;
                c->cap_size = sz;
            }
            memcpy(c->cap + c->cap_len, p, take);
            c->cap_len += take;
        }
        c->left -= take;
        p += take;
        n -= take;
        if (c->left == 0) {
            int e = end_frame(r, c, now);
            if (e)
                return e;
        }
    }
    return 0;
}

static void build_request(struct run *r, struct conn *c)
{
    uint8_t key[16];
    char k64[25];
    for (int i = 0; i < 16; i += 8) {
        uint64_t v = rng_next(&r->rng);
        memcpy(key + i, &v, 8);
    }
    base64(key, 16, k64);
    size_t cap = 512 + strlen(r->o.path) + strlen(r->o.host);
    for (int i = 0; i < r->o.nheaders; i++)
        cap += strlen(r->o.headers[i]) + 2;
    c->hs = malloc(cap);
    if (!c->hs)
        return;
    int n = snprintf(c->hs, cap,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n",
                     r->o.path, r->o.host, r->o.port, k64);
    for (int i = 0; i < r->o.nheaders; i++)
        n += snprintf(c->hs + n, cap - (size_t)n, "%s\r\n", r->o.headers[i]);
    n += snprintf(c->hs + n, cap - (size_t)n, "\r\n");
    c->hs_len = (size_t)n;
    c->hs_off = 0;
}

static void conn_start(struct run *r, struct conn *c, int idx)
{
    r->started++;
    r->inflight++;
    c->t0 = now_us(CLOCK_MONOTONIC);
    c->measure = r->o.latency && (r->o.lat_conns <= 0 || idx < r->o.lat_conns);
    c->fd = socket(r->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        r->last_errno = errno;
        conn_fail(r, c, &r->fail_fd);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, r->ai->ai_addr, r->ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        r->last_errno = errno;
        conn_fail(r, c, &r->fail_connect);
        return;
    }
    build_request(r, c);
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLOUT;
    ev.data.ptr = c;
    if (!c->hs || epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        r->last_errno = errno;
        conn_fail(r, c, &r->fail_fd);
        return;
    }
    c->st = C_CONNECTING;
}

static void count_status(struct run *r, int code)
{
    for (int i = 0; i < 8; i++) {
        if (r->codes[i].code == code || r->codes[i].code == 0) {
            r->codes[i].code = code;
            r->codes[i].count++;
            return;
        }
    }
}

static void start_stall(struct run *r, struct conn *c)
{
    /* Without EPOLLIN nothing is read, so the kernel buffers fill and the
     * server's queue for us grows: a stuck consumer.  EPOLLRDHUP still tells
     * when the server gives up on us, if its FIN can get through. */
    c->st = C_STALLED;
    r->stall_mono = now_us(CLOCK_MONOTONIC);
    r->stall_frames = c->frames;
    ep_set(r, c, EPOLLRDHUP);
}

static void on_upgraded(struct run *r, struct conn *c, size_t head_len,
                        int64_t now)
{
    size_t extra = c->hs_len - head_len;
    uint8_t rest[HS_CAP];
    memcpy(rest, c->hs + head_len, extra);
    free(c->hs);
    c->hs = NULL;
    c->st = C_OPEN;
    c->up = 1;
    r->inflight--;
    r->upgraded++;
    r->open++;
    r->pending++;
    ep_set(r, c, EPOLLIN);
    r->progress_mono = now_us(CLOCK_MONOTONIC);
    if (extra) {
        int e = feed(r, c, rest, extra, now);
        if (e < 0)
            record_close(r, c, -2);
        if (e) {
            conn_finish(r, c);
            return;
        }
    }
    if (stop_reached(r, c))
        start_stall(r, c);
}

static void on_writable(struct run *r, struct conn *c)
{
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            r->last_errno = err;
            conn_fail(r, c, &r->fail_connect);
            return;
        }
        while (c->hs_off < c->hs_len) {
            ssize_t w = send(c->fd, c->hs + c->hs_off, c->hs_len - c->hs_off,
                             MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN)
                    return;
                r->last_errno = errno;
                conn_fail(r, c, &r->fail_connect);
                return;
            }
            c->hs_off += (size_t)w;
        }
        free(c->hs);           /* the response gets its own, larger buffer */
        c->hs = NULL;
        c->hs_len = 0;
        c->st = C_HANDSHAKE;
        ep_set(r, c, EPOLLIN);
        return;
    }
    if (flush_out(r, c) < 0) {
        record_close(r, c, -2);
        conn_finish(r, c);
    } else if (c->out_len == 0 && c->st == C_OPEN) {
        ep_set(r, c, EPOLLIN);
    }
}

static void on_handshake_data(struct run *r, struct conn *c)
{
    if (!c->hs) {
        c->hs = malloc(HS_CAP);
        if (!c->hs) {
            conn_fail(r, c, &r->fail_fd);
            return;
        }
    }
    ssize_t n = read(c->fd, c->hs + c->hs_len, HS_CAP - c->hs_len);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        r->last_errno = n < 0 ? errno : 0;
        conn_fail(r, c, &r->fail_eof);
        return;
    }
    int64_t now = now_us(CLOCK_REALTIME);
    c->hs_len += (size_t)n;
    const uint8_t *end = find((const uint8_t *)c->hs, c->hs_len, "\r\n\r\n");
    if (!end) {
        if (c->hs_len == HS_CAP)
            conn_fail(r, c, &r->fail_status);
        return;
    }
    size_t head = (size_t)(end - (const uint8_t *)c->hs) + 4;
    if (c->hs_len >= 12 && memcmp(c->hs, "HTTP/1.1 101", 12) == 0) {
        on_upgraded(r, c, head, now);
        return;
    }
    int code = 0;
    if (c->hs_len >= 12 && memcmp(c->hs, "HTTP/1.", 7) == 0)
        code = atoi(c->hs + 9);
    count_status(r, code);
    conn_fail(r, c, &r->fail_status);
}

static void end_stall(struct run *r, struct conn *c, const char *why)
{
    r->wake = why;
    c->st = C_OPEN;
    r->progress_mono = now_us(CLOCK_MONOTONIC);
    ep_set(r, c, EPOLLIN | (c->out_len ? EPOLLOUT : 0));
    if (c->stash) {
        uint8_t *p = c->stash;
        uint64_t before = c->frames;
        c->stash = NULL;
        int e = feed(r, c, p, c->stash_len, now_us(CLOCK_REALTIME));
        free(p);
        r->drained += c->frames - before;
        if (e < 0)
            record_close(r, c, -2);
        if (e)
            conn_finish(r, c);
    }
}

static void on_readable(struct run *r, struct conn *c, uint8_t *buf)
{
    ssize_t n = read(c->fd, buf, READ_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        record_close(r, c, n == 0 ? -1 : -2);
        conn_finish(r, c);
        return;
    }
    int64_t now = now_us(CLOCK_REALTIME);
    uint64_t before = c->frames;
    int e = feed(r, c, buf, (size_t)n, now);
    if (r->wake)
        r->drained += c->frames - before;
    if (c->frames != before)
        r->progress_mono = now_us(CLOCK_MONOTONIC);
    if (e < 0)
        record_close(r, c, -2);
    if (e) {
        conn_finish(r, c);
        return;
    }
    if (stop_reached(r, c))
        start_stall(r, c);
}

static void on_event(struct run *r, struct conn *c, uint32_t ev, uint8_t *buf)
{
    if (c->st == C_DONE)
        return;
    if (c->st == C_STALLED) {
        end_stall(r, c, (ev & EPOLLERR) ? "error" : "rdhup");
        return;
    }
    if (c->st == C_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_writable(r, c);
        return;
    }
    if (c->st == C_HANDSHAKE) {
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_handshake_data(r, c);
        return;
    }
    if (ev & EPOLLOUT) {
        on_writable(r, c);
        if (c->st == C_DONE)
            return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(r, c, buf);
}

/* ---- the run ---------------------------------------------------------- */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void print_connected(struct run *r)
{
    double secs = (double)(now_us(CLOCK_MONOTONIC) - r->conn_begin_mono) / 1e6;
    printf("connected ok=%d failed=%d secs=%.3f fail_connect=%d fail_status=%d "
           "fail_eof=%d fail_timeout=%d fail_fd=%d",
           r->upgraded, r->failed, secs, r->fail_connect, r->fail_status,
           r->fail_eof, r->fail_timeout, r->fail_fd);
    for (int i = 0; i < 8 && r->codes[i].code; i++)
        printf(" http_%d=%d", r->codes[i].code, r->codes[i].count);
    if (r->last_errno)
        printf(" last_error=\"%s\"", strerror(r->last_errno));
    printf("\n");
    fflush(stdout);
    if (r->o.ready_file) {
        FILE *f = fopen(r->o.ready_file, "w");
        if (f) {
            fprintf(f, "%d\n", r->upgraded);
            fclose(f);
        }
    }
}

/* Starts connections within the in-flight and ramp limits; times out stuck
 * handshakes. */
static void connect_phase(struct run *r, int64_t mono)
{
    double el = (double)(mono - r->conn_begin_mono) / 1e6;
    while (r->started < r->o.nconn && r->inflight < MAX_INFLIGHT) {
        if (r->o.ramp > 0 && r->started >= (int)(el * r->o.ramp) + 1)
            break;
        conn_start(r, &r->c[r->started], r->started);
    }
    int64_t limit = (int64_t)((r->o.timeout > 10 ? r->o.timeout : 10) * 1e6);
    for (int i = 0; i < r->started; i++) {
        struct conn *c = &r->c[i];
        if ((c->st == C_CONNECTING || c->st == C_HANDSHAKE) && mono - c->t0 > limit)
            conn_fail(r, c, &r->fail_timeout);
    }
    if (r->started == r->o.nconn && r->inflight == 0) {
        r->ready = true;
        r->ready_mono = mono;
        r->progress_mono = mono;
        print_connected(r);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(const int64_t *a, size_t n, double p)
{
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return a[k - 1];
}

static void print_results(struct run *r, const char *end, int nconns)
{
    uint64_t mn = UINT64_MAX, mx = 0;
    int complete = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &r->c[i];
        if (!r->o.pipe && !c->up)
            continue;
        if (c->frames < mn)
            mn = c->frames;
        if (c->frames > mx)
            mx = c->frames;
        if (r->o.expect && c->frames >= r->o.expect)
            complete++;
    }
    if (mn == UINT64_MAX)
        mn = 0;
    double win = (double)(r->last_us - r->first_us) / 1e6;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
                 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("result end=%s conns=%d frames=%llu bytes=%llu min=%llu max=%llu complete=%d "
           "first_us=%lld last_us=%lld window_s=%.6f fps=%.1f cpu_s=%.2f "
           "server_closed=%d close_1000=%d close_1001=%d close_1013=%d close_other=%d\n",
           end, r->o.pipe ? 1 : r->upgraded, (unsigned long long)r->total,
           (unsigned long long)r->bytes, (unsigned long long)mn, (unsigned long long)mx,
           complete, (long long)r->first_us, (long long)r->last_us, win,
           win > 0 ? (double)r->total / win : 0.0, cpu, r->closed_by_server,
           r->close_codes[0], r->close_codes[1], r->close_codes[2], r->close_codes[3]);
    if (r->o.latency) {
        int measured = r->o.pipe ? 1 : 0;
        if (!r->o.pipe)
            for (int i = 0; i < nconns; i++)
                measured += r->c[i].measure && r->c[i].up;
        if (r->nlat) {
            qsort(r->lat, r->nlat, sizeof *r->lat, cmp_i64);
            printf("latency conns=%d samples=%zu misses=%llu min_us=%lld p50_us=%lld "
                   "p90_us=%lld p99_us=%lld p999_us=%lld max_us=%lld\n",
                   measured, r->nlat, (unsigned long long)r->lat_misses,
                   (long long)r->lat[0], (long long)pct(r->lat, r->nlat, 50),
                   (long long)pct(r->lat, r->nlat, 90), (long long)pct(r->lat, r->nlat, 99),
                   (long long)pct(r->lat, r->nlat, 99.9), (long long)r->lat[r->nlat - 1]);
        } else {
            printf("latency conns=%d samples=0 misses=%llu\n", measured,
                   (unsigned long long)r->lat_misses);
        }
    }
    if (r->o.stop_after >= 0 && !r->o.pipe) {
        struct conn *c = &r->c[0];
        printf("slow stopped_after=%llu stalled=%s wake=%s close_code=%d drained=%llu\n",
               (unsigned long long)r->stall_frames, r->stall_mono ? "yes" : "no",
               r->wake ? r->wake : "none", c->close_code, (unsigned long long)r->drained);
    }
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
"usage: wsload -u ws://HOST:PORT/PATH?QUERY -c N [options]\n"
"       wsload --pipe [options] < pg_recvlogical-output\n"
"  -n FRAMES            frames expected per connection (end when all have them)\n"
"  -t SECS              end after SECS without any frame (default 30)\n"
"  -r PER_SEC           start at most PER_SEC connections per second\n"
"  -H 'Name: value'     extra request header (repeatable)\n"
"  --latency            measure receive time - row \"ts\" (epoch us) per frame\n"
"  --latency-conns K    ... only on the first K connections (default: all)\n"
"  --idle SECS          hold the connections open SECS, then exit\n"
"  --stop-reading-after K  stop reading after K frames (slow consumer)\n"
"  --stall SECS         how long to stay stopped before draining (default 60;\n"
"                       SIGUSR1 ends the stall at once)\n"
"  --max SECS           hard limit on the whole run (default 600)\n"
"  --ready-file PATH    written once every connection is upgraded or failed\n"
"  --trace PATH         with --latency: \"receive_us latency_us\" per frame of\n"
"                       the first connection (or of the pipe)\n");
    exit(2);
}

static int parse_url(struct opts *o)
{
    const char *u = o->url;
    if (strncmp(u, "ws://", 5) != 0)
        return -1;
    u += 5;
    const char *hend, *rest;
    if (*u == '[') {
        hend = strchr(u, ']');
        if (!hend)
            return -1;
        u++;
        rest = hend + 1;
    } else {
        hend = u + strcspn(u, ":/");
        rest = hend;
    }
    size_t hl = (size_t)(hend - u);
    if (hl == 0 || hl >= sizeof o->host)
        return -1;
    memcpy(o->host, u, hl);
    o->host[hl] = '\0';
    snprintf(o->port, sizeof o->port, "80");
    if (*rest == ':') {
        size_t pl = strcspn(rest + 1, "/");
        if (pl == 0 || pl >= sizeof o->port)
            return -1;
        memcpy(o->port, rest + 1, pl);
        o->port[pl] = '\0';
        rest += 1 + pl;
    }
    if (snprintf(o->path, sizeof o->path, "%s", *rest ? rest : "/") >= (int)sizeof o->path)
        return -1;
    return 0;
}

static void parse_args(struct opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->nconn = 1;
    o->timeout = 30;
    o->idle = -1;
    o->stop_after = -1;
    o->stall = 60;
    o->max_total = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (strcmp(a, "--latency") == 0) {
            o->latency = true;
            takes = false;
        } else if (strcmp(a, "--pipe") == 0) {
            o->pipe = true;
            takes = false;
        } else if (!v) {
            usage();
        } else if (strcmp(a, "-u") == 0) {
            o->url = v;
        } else if (strcmp(a, "-c") == 0) {
            o->nconn = atoi(v);
        } else if (strcmp(a, "-n") == 0) {
            o->expect = strtoull(v, NULL, 10);
        } else if (strcmp(a, "-t") == 0) {
            o->timeout = atof(v);
        } else if (strcmp(a, "-r") == 0) {
            o->ramp = atof(v);
        } else if (strcmp(a, "-H") == 0) {
            if (o->nheaders == MAX_HEADERS)
                usage();
            o->headers[o->nheaders++] = v;
        } else if (strcmp(a, "--latency-conns") == 0) {
            o->lat_conns = atoi(v);
        } else if (strcmp(a, "--idle") == 0) {
            o->idle = atof(v);
        } else if (strcmp(a, "--stop-reading-after") == 0) {
            o->stop_after = atoll(v);
        } else if (strcmp(a, "--stall") == 0) {
            o->stall = atof(v);
        } else if (strcmp(a, "--max") == 0) {
            o->max_total = atof(v);
        } else if (strcmp(a, "--ready-file") == 0) {
            o->ready_file = v;
        } else if (strcmp(a, "--trace") == 0) {
            o->trace_file = v;
        } else {
            usage();
        }
        if (takes)
            i++;
    }
    if (o->pipe)
        return;
    if (!o->url || o->nconn < 1 || parse_url(o) < 0)
        usage();
}

/* ---- pipe mode: the pg_recvlogical reference -------------------------- */

/* A wal2json format-version 2 line of a change (not B, C or M). */
static bool is_change(const uint8_t *p, size_t n)
{
    const uint8_t *a = find(p, n < 64 ? n : 64, "\"action\":\"");
    if (!a || (size_t)(a - p) + 10 >= n)
        return false;
    uint8_t k = a[10];
    return k == 'I' || k == 'U' || k == 'D' || k == 'T';
}

static void on_tick(int sig)
{
    (void)sig;
}

static int run_pipe(struct run *r)
{
    struct conn *c = r->c;
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return 1;
    (void)fcntl(0, F_SETFL, fcntl(0, F_GETFL) & ~O_NONBLOCK);
    struct sigaction tick;
    memset(&tick, 0, sizeof tick);
    tick.sa_handler = on_tick;     /* no SA_RESTART: read() returns EINTR */
    sigaction(SIGALRM, &tick, NULL);
    struct itimerval iv = { { 0, 100000 }, { 0, 100000 } };
    setitimer(ITIMER_REAL, &iv, NULL);
    c->measure = r->o.latency;
    int64_t start = now_us(CLOCK_MONOTONIC);
    r->progress_mono = start;
    r->pending = 1;
    const char *end = "timeout";
    for (;;) {
        int64_t mono = now_us(CLOCK_MONOTONIC);
        if (got_signal) {
            end = "signal";
            break;
        }
        if (mono - r->progress_mono > (int64_t)(r->o.timeout * 1e6))
            break;
        if (mono - start > (int64_t)(r->o.max_total * 1e6)) {
            end = "max";
            break;
        }
        if (r->o.expect && r->pending == 0) {
            end = "complete";
            break;
        }
        /* a blocking read, as cat does: one system call per wake-up (a
         * poll() before each read doubled them, and pg_recvlogical writes
         * every record and its newline apart, so the reader is woken once
         * or twice per record); the 100 ms interval timer set below
         * interrupts it so the time limits are still checked */
        if (len == cap) {
            uint8_t *b = realloc(buf, cap * 2);
            if (!b)
                break;
            buf = b;
            cap *= 2;
        }
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            end = "eof";
            break;
        }
        int64_t now = now_us(CLOCK_REALTIME);
        uint64_t before = c->frames;
        size_t scan = len;
        len += (size_t)n;
        size_t line = 0;
        const uint8_t *nl;
        while ((nl = memchr(buf + scan, '\n', len - scan)) != NULL) {
            size_t e = (size_t)(nl - buf);
            if (is_change(buf + line, e - line)) {
                r->bytes += e - line;
                on_message(r, c, buf + line, e - line, true, now);
            }
            line = scan = e + 1;
        }
        memmove(buf, buf + line, len - line);
        len -= line;
        if (c->frames != before)
            r->progress_mono = now_us(CLOCK_MONOTONIC);
    }
    free(buf);
    print_results(r, end, 1);
    if (r->trace)
        fclose(r->trace);
    return 0;
}

/* ---- main --------------------------------------------------------------- */

static const char *loop(struct run *r)
{
    static uint8_t buf[READ_CHUNK];
    struct epoll_event evs[512];
    for (;;) {
        int64_t mono = now_us(CLOCK_MONOTONIC);
        if (got_signal)
            return "signal";
        if (mono - r->conn_begin_mono > (int64_t)(r->o.max_total * 1e6))
            return "max";
        if (!r->ready)
            connect_phase(r, mono);
        if (r->ready) {
            if (r->o.idle >= 0) {
                if (mono - r->ready_mono >= (int64_t)(r->o.idle * 1e6))
                    return "idle";
            } else {
                if (r->open == 0)
                    return r->upgraded ? "closed" : "none";
                if (r->o.expect && r->pending == 0)
                    return "complete";
                bool stalled = r->stall_mono && !r->wake;
                if (!stalled && mono - r->progress_mono > (int64_t)(r->o.timeout * 1e6))
                    return "timeout";
            }
        }
        if (r->stall_mono && !r->wake
            && (got_wake || mono - r->stall_mono > (int64_t)(r->o.stall * 1e6))) {
            for (int i = 0; i < r->o.nconn; i++)
                if (r->c[i].st == C_STALLED)
                    end_stall(r, &r->c[i], got_wake ? "sigusr1" : "timeout");
        }
        int n = epoll_wait(r->ep, evs, 512, r->ready ? 100 : 10);
        for (int i = 0; i < n; i++)
            on_event(r, evs[i].data.ptr, evs[i].events, buf);
    }
}

int main(int argc, char **argv)
{
    static struct run run;
    struct run *r = &run;
    parse_args(&r->o, argc, argv);
    raise_nofile();
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    rng_seed(&r->rng);
    if (r->o.trace_file) {
        r->trace = fopen(r->o.trace_file, "w");
        if (!r->trace) {
            perror(r->o.trace_file);
            return 1;
        }
    }
    r->c = calloc((size_t)(r->o.pipe ? 1 : r->o.nconn), sizeof *r->c);
    if (!r->c) {
        fprintf(stderr, "wsload: out of memory\n");
        return 1;
    }
    if (r->o.pipe)
        return run_pipe(r);
    for (int i = 0; i < r->o.nconn; i++)
        r->c[i].fd = -1;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(r->o.host, r->o.port, &hints, &r->ai);
    if (e) {
        fprintf(stderr, "wsload: %s:%s: %s\n", r->o.host, r->o.port, gai_strerror(e));
        return 1;
    }
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    if (r->ep < 0) {
        perror("wsload: epoll_create1");
        return 1;
    }
    r->conn_begin_mono = now_us(CLOCK_MONOTONIC);
    const char *end = loop(r);
    if (!r->ready)
        print_connected(r);
    /* Say goodbye properly to whoever is still connected. */
    for (int i = 0; i < r->o.nconn; i++) {
        struct conn *c = &r->c[i];
        if (c->st == C_OPEN || c->st == C_STALLED) {
            uint8_t code[2] = { 1000 >> 8, 1000 & 0xff };
            send_frame(r, c, 0x8, code, 2);
        }
    }
    print_results(r, end, r->o.nconn);
    if (r->trace)
        fclose(r->trace);
    for (int i = 0; i < r->o.nconn; i++)
        if (r->c[i].fd >= 0)
            close(r->c[i].fd);
    freeaddrinfo(r->ai);
    return 0;
}
