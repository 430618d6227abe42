/* fanout_ref.c -- the kernel's own fan-out limit, as a reference for pgcdc.
 *
 * A minimal sender: it accepts C WebSocket connections (any request head is
 * answered with a fixed "101 Switching Protocols"; wsload does not check
 * the accept key), builds N ready-made text frames shaped exactly like the
 * frames pgcdc sends for bench/run.sh's 200,000-row transaction (the same
 * members, lengths and header sizes), and then writes those same frames to
 * every socket with writev(), up to IOV_MAX frames per call, in one poll()
 * loop over non-blocking sockets -- what pgcdc does for a change, minus
 * everything else pgcdc does.  It prints "t0_us=<epoch microseconds>" when
 * it starts sending and "sent frames=... cpu_user_s=... cpu_sys_s=..." at the
 * end, so a run of wsload against it gives frames per second from t0 to the
 * last frame, as bench/run.sh measures pgcdc.
 *
 *   fanout_ref -p PORT [-c CLIENTS] [-n FRAMES] [--ready-file PATH]
 *
 * Built by bench/fanout.sh; links nothing but libc.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

struct frame {
    uint8_t *p;
    size_t n;
};

struct peer {
    int fd;
    size_t next;    /* index of the next frame to write */
    size_t off;     /* bytes of it already written */
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* One frame like pgcdc's for row i of one 200,000-row transaction: the
 * WebSocket header, then {"pos":...} and wal2json's members. */
static struct frame make_frame(size_t i, int64_t ts)
{
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"pos\":\"0/1A2B3C48:%zu\",\"action\":\"I\",\"xid\":7452,"
                     "\"timestamp\":\"2026-12-04 19:50:00.123456+00\",\"lsn\":\"0/%zX\","
                     "\"schema\":\"public\",\"table\":\"bench_t\",\"columns\":["
                     "{\"name\":\"id\",\"type\":\"bigint\",\"value\":%zu},"
                     "{\"name\":\"ts\",\"type\":\"bigint\",\"value\":%lld},"
                     "{\"name\":\"payload\",\"type\":\"text\",\"value\":\"row %zu\"}]}",
                     i, 0x1A2B3C48 + i * 0x60, i + 1, (long long)ts, i + 1);
    struct frame f;
    size_t hl = n < 126 ? 2 : 4;
    f.p = malloc(hl + (size_t)n);
    if (!f.p) {
        perror("malloc");
        exit(1);
    }
    f.p[0] = 0x81;
    if (hl == 2) {
        f.p[1] = (uint8_t)n;
    } else {
        f.p[1] = 126;
        f.p[2] = (uint8_t)(n >> 8);
        f.p[3] = (uint8_t)n;
    }
    memcpy(f.p + hl, body, (size_t)n);
    f.n = hl + (size_t)n;
    return f;
}

/* Reads the request head (until an empty line) and answers 101. */
static int handshake(int fd)
{
    char buf[8192];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t k = read(fd, buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            return -1;
        len += (size_t)k;
        buf[len] = 0;
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
    return write(fd, resp, sizeof resp - 1) == (ssize_t)(sizeof resp - 1) ? 0 : -1;
}

/* Writes what the socket takes; returns 1 when the peer has every frame. */
static int send_some(struct peer *c, const struct frame *fr, size_t nfr)
{
    struct iovec iov[IOV_MAX];
    while (c->next < nfr) {
        int k = 0;
        for (size_t i = c->next; i < nfr && k < IOV_MAX; i++, k++) {
            size_t skip = i == c->next ? c->off : 0;
            iov[k].iov_base = fr[i].p + skip;
            iov[k].iov_len = fr[i].n - skip;
        }
        ssize_t w = writev(c->fd, iov, k);
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        size_t left = (size_t)w;
        while (left) {
            size_t rest = fr[c->next].n - c->off;
            if (left >= rest) {
                left -= rest;
                c->next++;
                c->off = 0;
            } else {
                c->off += left;
                left = 0;
            }
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    int port = 0, nc = 100;
    size_t nfr = 200000;
    const char *ready = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc)
            nc = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            nfr = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--ready-file") && i + 1 < argc)
            ready = argv[++i];
        else {
            fprintf(stderr, "usage: fanout_ref -p PORT [-c CLIENTS] [-n FRAMES] [--ready-file PATH]\n");
            return 2;
        }
    }
    if (port <= 0 || nc <= 0 || !nfr) {
        fprintf(stderr, "fanout_ref: -p PORT is required; -c and -n must be positive\n");
        return 2;
    }
    struct frame *fr = malloc(nfr * sizeof *fr);
    struct peer *pc = calloc((size_t)nc, sizeof *pc);
    struct pollfd *pfd = calloc((size_t)nc, sizeof *pfd);
    if (!fr || !pc || !pfd) {
        perror("malloc");
        return 1;
    }
    int64_t ts = now_us();
    for (size_t i = 0; i < nfr; i++)
        fr[i] = make_frame(i, ts);

    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1024)) {
        perror("listen");
        return 1;
    }
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f) {
            fprintf(f, "listening\n");
            fclose(f);
        }
    }
    for (int i = 0; i < nc; i++) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0 || handshake(fd)) {
            perror("accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        pc[i].fd = fd;
    }
    /* the clients have read their 101 by now or will in a moment; give
     * them a beat so the send loop measures only the frames */
    usleep(200000);

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    printf("t0_us=%lld\n", (long long)now_us());
    fflush(stdout);
    /* every socket is tried once, then only those poll() says take more */
    int done = 0;
    for (int i = 0; i < nc; i++) {
        pfd[i].fd = pc[i].fd;
        pfd[i].events = POLLOUT;
        pfd[i].revents = POLLOUT;
    }
    while (done < nc) {
        for (int i = 0; i < nc; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents)
                continue;
            int rc = send_some(&pc[i], fr, nfr);
            if (rc != 0) {
                if (rc < 0)
                    fprintf(stderr, "fanout_ref: client %d: %s\n", i, strerror(errno));
                pfd[i].fd = -1;
                done++;
            }
        }
        if (done < nc && poll(pfd, (nfds_t)nc, 1000) < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
    }
    getrusage(RUSAGE_SELF, &r1);
    double us = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6;
    double sy = (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("sent frames=%zu clients=%d cpu_user_s=%.3f cpu_sys_s=%.3f\n", nfr * (size_t)nc, nc, us, sy);
    /* the clients count every frame before they hang up; keep the sockets
     * open until then */
    sleep(2);
    return 0;
}
