/* heartbeat.c — peer liveness across hosts: one thread per rank, a TCP
 * connection from every rank to rank 0, a 128-byte frame every period.
 * See heartbeat.h for what it is for and how a loss is reported. */
#define _GNU_SOURCE /* accept4, pipe2 */
#include "workers/heartbeat.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- frames ------------------------------------------------------------------------------
 *
 * Fixed 128 bytes, integers little-endian on the wire:
 *   magic u32, type u32, nonce u64, rank i32 (sender), lost i32, text[104]
 * HELLO carries the sender's host name, LOST the one-line description. */

#define HB_MAGIC 0x51534842u /* "QSHB" */
#define HB_FRAME 128
#define HB_TEXT 104
#define HB_MAX_ADDRS 16

enum { HB_HELLO = 1, HB_ACK, HB_BEAT, HB_BYE, HB_LOST };

typedef struct frame {
    uint32_t magic, type;
    uint64_t nonce;
    int32_t rank, lost;
    char text[HB_TEXT];
} frame;

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static void encode(const frame *f, unsigned char b[HB_FRAME])
{
    memset(b, 0, HB_FRAME);
    put32(b, f->magic);
    put32(b + 4, f->type);
    put32(b + 8, (uint32_t)f->nonce);
    put32(b + 12, (uint32_t)(f->nonce >> 32));
    put32(b + 16, (uint32_t)f->rank);
    put32(b + 20, (uint32_t)f->lost);
    memcpy(b + 24, f->text, HB_TEXT);
    b[HB_FRAME - 1] = 0;
}

static void decode(const unsigned char b[HB_FRAME], frame *f)
{
    f->magic = get32(b);
    f->type = get32(b + 4);
    f->nonce = (uint64_t)get32(b + 8) | ((uint64_t)get32(b + 12) << 32);
    f->rank = (int32_t)get32(b + 16);
    f->lost = (int32_t)get32(b + 20);
    memcpy(f->text, b + 24, HB_TEXT);
    f->text[HB_TEXT - 1] = '\0';
}

/* What rank 0 broadcasts: where to connect and the run's nonce. */
typedef struct blob {
    uint32_t magic;
    int32_t ok;              /* 0: rank 0 could not listen (text says why) */
    uint64_t nonce;
    uint16_t port;           /* network order */
    int32_t n_addrs;
    uint32_t addrs[HB_MAX_ADDRS]; /* IPv4, network order: other interfaces first, loopback last */
    char host[64];
    char text[128];
} blob;

/* ---- state (one heartbeat per process) -------------------------------------------------- */

typedef struct peer {
    int fd;
    int rank;
    bool gone;               /* said goodbye: no longer watched */
    double last;             /* when the last frame came */
    char host[64], addr[48];
    unsigned char buf[HB_FRAME];
    size_t have;
} peer;

static struct {
    bool active;
    int rank, size;
    uint64_t nonce;
    qs_heartbeat_opts o;
    qs_heartbeat_lost_fn on_lost;
    void *ctx;
    peer *peers;             /* rank 0: one per other rank; others: rank 0 only */
    int n_peers;
    int wake[2];             /* a byte here stops the thread */
    pthread_t thread;
    atomic_int lost;
    char what[256];
} g = {.lost = -1, .wake = {-1, -1}};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qs_heartbeat_opts_default(qs_heartbeat_opts *o)
{
    o->period_s = 1.0;
    o->timeout_s = 30.0;
    o->setup_s = 60.0;
}

/* ---- socket helpers --------------------------------------------------------------------- */

static bool send_frame(int fd, const frame *f)
{
    unsigned char b[HB_FRAME];
    encode(f, b);
    ssize_t n = send(fd, b, HB_FRAME, MSG_NOSIGNAL | MSG_DONTWAIT);
    return n == HB_FRAME;
}

/* Reads one whole frame, waiting at most timeout_s. */
static bool recv_frame(int fd, frame *f, double timeout_s)
{
    unsigned char b[HB_FRAME];
    size_t have = 0;
    double end = now_s() + timeout_s;
    while (have < HB_FRAME) {
        double left = end - now_s();
        if (left <= 0) return false;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
        ssize_t n = recv(fd, b + have, HB_FRAME - have, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
        if (n > 0) have += (size_t)n;
    }
    decode(b, f);
    return f->magic == HB_MAGIC;
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Connects to the first of n addresses that answers, trying all at once
 * (an unroutable one must not cost a timeout of its own); the others are
 * closed before anything is sent. -1 when none answered within timeout_s. */
static int connect_any(const uint32_t *addrs, int n, uint16_t port, double timeout_s, int *which)
{
    int fd[HB_MAX_ADDRS];
    struct pollfd p[HB_MAX_ADDRS];
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = port, .sin_addr = {addrs[i]}};
        if (fd[i] >= 0 && connect(fd[i], (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
            close(fd[i]);
            fd[i] = -1;
        }
        p[i] = (struct pollfd){fd[i], POLLOUT, 0};
    }
    int won = -1;
    for (double end = now_s() + timeout_s; won < 0 && now_s() < end;) {
        int left = 0;
        for (int i = 0; i < n; i++) left += fd[i] >= 0;
        if (!left || poll(p, (nfds_t)n, (int)((end - now_s()) * 1000) + 1) <= 0) break;
        for (int i = 0; i < n && won < 0; i++) {
            if (fd[i] < 0 || !p[i].revents) continue;
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (getsockopt(fd[i], SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0) {
                won = i;
            } else {
                close(fd[i]);
                fd[i] = p[i].fd = -1;
            }
        }
    }
    for (int i = 0; i < n; i++)
        if (i != won && fd[i] >= 0) close(fd[i]);
    if (won < 0) return -1;
    tune(fd[won]);
    *which = won;
    return fd[won];
}

static void fmt_addr(uint32_t a, char *buf, size_t cap)
{
    struct in_addr in = {a};
    if (!inet_ntop(AF_INET, &in, buf, (socklen_t)cap)) snprintf(buf, cap, "?");
}

/* ---- losing a peer ---------------------------------------------------------------------- */

static void declare_lost(int rank, const char *what)
{
    int none = -1;
    if (!atomic_compare_exchange_strong(&g.lost, &none, -2)) return; /* already lost one */
    snprintf(g.what, sizeof g.what, "%s", what);
    if (g.rank == 0) {
        /* tell every other rank which one is gone (best effort: a frame each) */
        frame f = {HB_MAGIC, HB_LOST, g.nonce, 0, rank, {0}};
        snprintf(f.text, sizeof f.text, "%s", what);
        for (int i = 0; i < g.n_peers; i++)
            if (g.peers[i].fd >= 0 && !g.peers[i].gone && g.peers[i].rank != rank) send_frame(g.peers[i].fd, &f);
    }
    atomic_store(&g.lost, rank);
    if (g.on_lost) g.on_lost(rank, g.what, g.ctx);
}

static void describe(const peer *p, const char *why, char *buf, size_t cap)
{
    snprintf(buf, cap, "rank %d on host %s (%s): %s", p->rank, p->host[0] ? p->host : "?", p->addr, why);
}

/* One frame from peer p. */
static void on_frame(peer *p, const frame *f)
{
    if (f->magic != HB_MAGIC || f->nonce != g.nonce) return;
    p->last = now_s();
    if (f->type == HB_BYE) {
        p->gone = true;
    } else if (f->type == HB_LOST && g.rank != 0) {
        char what[256];
        snprintf(what, sizeof what, "%s (seen by rank 0)", f->text);
        declare_lost(f->lost, what);
    }
}

/* ---- the thread ------------------------------------------------------------------------- */

static void *run_thread(void *arg)
{
    (void)arg;
    struct pollfd *pf = calloc((size_t)g.n_peers + 1, sizeof *pf);
    if (!pf) return NULL;
    double next_beat = now_s();
    for (;;) {
        double t = now_s();
        if (t >= next_beat) {
            frame f = {HB_MAGIC, HB_BEAT, g.nonce, g.rank, -1, {0}};
            for (int i = 0; i < g.n_peers; i++)
                if (g.peers[i].fd >= 0 && !g.peers[i].gone) send_frame(g.peers[i].fd, &f); /* a full buffer: skip */
            next_beat = t + g.o.period_s;
        }
        /* silence: a host or link gone */
        for (int i = 0; i < g.n_peers && atomic_load(&g.lost) == -1; i++) {
            peer *p = &g.peers[i];
            if (p->fd < 0 || p->gone || t - p->last <= g.o.timeout_s) continue;
            char why[96], what[256];
            snprintf(why, sizeof why, "no heartbeat for %.1f s (host down or unreachable)", t - p->last);
            describe(p, why, what, sizeof what);
            declare_lost(p->rank, what);
        }
        if (atomic_load(&g.lost) != -1) break;
        pf[0] = (struct pollfd){g.wake[0], POLLIN, 0};
        for (int i = 0; i < g.n_peers; i++)
            pf[i + 1] = (struct pollfd){g.peers[i].gone ? -1 : g.peers[i].fd, POLLIN, 0};
        int ms = (int)((next_beat - now_s()) * 1000) + 1;
        if (poll(pf, (nfds_t)g.n_peers + 1, ms < 1 ? 1 : ms) < 0 && errno != EINTR) break;
        if (pf[0].revents) break; /* qs_heartbeat_stop */
        for (int i = 0; i < g.n_peers && atomic_load(&g.lost) == -1; i++) {
            peer *p = &g.peers[i];
            if (!pf[i + 1].revents || p->fd < 0 || p->gone) continue;
            ssize_t n = recv(p->fd, p->buf + p->have, HB_FRAME - p->have, MSG_DONTWAIT);
            if (n > 0) {
                p->have += (size_t)n;
                if (p->have == HB_FRAME) {
                    frame f;
                    decode(p->buf, &f);
                    p->have = 0;
                    on_frame(p, &f);
                }
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* closed without a goodbye: the process ended (killed, crashed) */
                char what[256];
                describe(p, n == 0 ? "its connection closed without a goodbye (the process died)"
                                   : "its connection was reset (the process or host died)",
                         what, sizeof what);
                close(p->fd);
                p->fd = -1;
                declare_lost(p->rank, what);
            }
        }
        if (atomic_load(&g.lost) != -1) break;
    }
    free(pf);
    return NULL;
}

/* ---- set-up ----------------------------------------------------------------------------- */

/* Rank 0: the listening socket and the blob every rank connects with. */
static int listen_blob(blob *b)
{
    memset(b, 0, sizeof *b);
    b->magic = HB_MAGIC;
    gethostname(b->host, sizeof b->host - 1);
    if (getrandom(&b->nonce, sizeof b->nonce, 0) != (ssize_t)sizeof b->nonce)
        b->nonce = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(now_s() * 1e9);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_ANY)}};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        snprintf(b->text, sizeof b->text, "rank 0 cannot listen on a TCP port: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    b->port = sa.sin_port;
    /* every IPv4 address of rank 0's host; loopback last (one host) */
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (int pass = 0; pass < 2; pass++)
            for (struct ifaddrs *i = ifs; i && b->n_addrs < HB_MAX_ADDRS; i = i->ifa_next) {
                if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
                if (((i->ifa_flags & IFF_LOOPBACK) != 0) != (pass == 1)) continue;
                b->addrs[b->n_addrs++] = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
            }
        freeifaddrs(ifs);
    }
    if (b->n_addrs == 0) b->addrs[b->n_addrs++] = htonl(INADDR_LOOPBACK);
    b->ok = 1;
    return fd;
}

/* Rank 0: accepts every other rank (checked with the nonce). */
static qs_status accept_all(int lfd, qs_error *err)
{
    double end = now_s() + g.o.setup_s;
    int joined = 0;
    while (joined < g.size - 1) {
        double left = end - now_s();
        struct pollfd p = {lfd, POLLIN, 0};
        if (left <= 0) break;
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0 || !p.revents) continue;
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int fd = accept4(lfd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
        if (fd < 0) continue;
        tune(fd);
        frame f;
        if (!recv_frame(fd, &f, 5.0) || f.type != HB_HELLO || f.nonce != g.nonce || f.rank < 1 || f.rank >= g.size ||
            g.peers[f.rank - 1].fd >= 0) {
            close(fd); /* a stray connection, or a duplicate */
            continue;
        }
        peer *q = &g.peers[f.rank - 1];
        q->fd = fd;
        q->rank = f.rank;
        snprintf(q->host, sizeof q->host, "%.63s", f.text);
        fmt_addr(sa.sin_addr.s_addr, q->addr, sizeof q->addr);
        q->last = now_s();
        frame ack = {HB_MAGIC, HB_ACK, g.nonce, 0, -1, {0}};
        if (!send_frame(fd, &ack)) {
            close(fd);
            q->fd = -1;
            continue;
        }
        joined++;
    }
    if (joined < g.size - 1) {
        int missing = -1;
        for (int i = 0; i < g.n_peers && missing < 0; i++)
            if (g.peers[i].fd < 0) missing = i + 1;
        return qs_error_set(err, QS_ERR_IO, "heartbeat: rank %d did not connect to rank 0 within %.0f s", missing,
                            g.o.setup_s);
    }
    return QS_OK;
}

/* Other ranks: connects to rank 0 at one of its addresses. */
static qs_status connect_hub(const blob *b, qs_error *err)
{
    peer *q = &g.peers[0];
    q->rank = 0;
    snprintf(q->host, sizeof q->host, "%s", b->host);
    double end = now_s() + g.o.setup_s;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    while (now_s() < end) {
        int i = 0;
        int fd = connect_any(b->addrs, b->n_addrs, b->port, 3.0, &i);
        if (fd >= 0) {
            frame hello = {HB_MAGIC, HB_HELLO, g.nonce, g.rank, -1, {0}};
            snprintf(hello.text, sizeof hello.text, "%s", host);
            frame ack;
            if (send_frame(fd, &hello) && recv_frame(fd, &ack, 5.0) && ack.type == HB_ACK && ack.nonce == g.nonce) {
                q->fd = fd;
                fmt_addr(b->addrs[i], q->addr, sizeof q->addr);
                q->last = now_s();
                return QS_OK;
            }
            close(fd);
        }
        usleep(200000);
    }
    char a[48];
    fmt_addr(b->addrs[0], a, sizeof a);
    return qs_error_set(err, QS_ERR_IO, "heartbeat: rank %d cannot reach rank 0 on host %s (%s and %d other "
                        "address(es), TCP port %d) within %.0f s", g.rank, b->host, a, b->n_addrs - 1,
                        ntohs(b->port), g.o.setup_s);
}

static void close_all(void)
{
    for (int i = 0; i < g.n_peers; i++)
        if (g.peers[i].fd >= 0) close(g.peers[i].fd);
    free(g.peers);
    g.peers = NULL;
    g.n_peers = 0;
    for (int i = 0; i < 2; i++)
        if (g.wake[i] >= 0) close(g.wake[i]), g.wake[i] = -1;
}

qs_status qs_heartbeat_start(const qs_comm_i *comm, const qs_heartbeat_opts *o, qs_heartbeat_lost_fn on_lost,
                             void *ctx, qs_error *err)
{
    if (comm->size < 2 || g.active) return QS_OK;
    if (!(o->period_s > 0) || !(o->timeout_s > o->period_s) || !(o->setup_s > 0))
        return qs_error_set(err, QS_ERR_INPUT, "heartbeat: timeout %g s must exceed the period %g s", o->timeout_s,
                            o->period_s);
    g.rank = comm->rank;
    g.size = comm->size;
    g.o = *o;
    g.on_lost = on_lost;
    g.ctx = ctx;
    atomic_store(&g.lost, -1);
    g.n_peers = g.rank == 0 ? g.size - 1 : 1;
    g.peers = calloc((size_t)g.n_peers, sizeof *g.peers);
    if (!g.peers) return qs_error_set(err, QS_ERR_NOMEM, "heartbeat peers");
    for (int i = 0; i < g.n_peers; i++) g.peers[i].fd = -1;

    blob b;
    int lfd = -1;
    if (g.rank == 0) {
        /* rank 0 holds a socket per rank: lift the soft limit on open files
         * to the hard one (commonly 1024 vs 1048576) before that matters */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max &&
            rl.rlim_cur < (rlim_t)g.size + 256) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        lfd = listen_blob(&b);
    }
    qs_status st = comm->bcast(comm->ctx, &b, sizeof b, 0, err);
    g.nonce = b.nonce;
    if (st == QS_OK && !b.ok) st = qs_error_set(err, QS_ERR_IO, "heartbeat: %s", b.text);
    if (st == QS_OK) st = g.rank == 0 ? accept_all(lfd, err) : connect_hub(&b, err);
    if (lfd >= 0) close(lfd);
    if (st == QS_OK && pipe2(g.wake, O_CLOEXEC) != 0)
        st = qs_error_set(err, QS_ERR_IO, "heartbeat: pipe: %s", strerror(errno));
    /* every rank connected, or none goes on */
    int64_t bad[1] = {st != QS_OK};
    qs_error e2;
    if (comm->allreduce_max_i64(comm->ctx, bad, 1, &e2) != QS_OK && st == QS_OK) {
        st = e2.code;
        *err = e2;
    }
    if (st == QS_OK && bad[0]) st = qs_error_set(err, QS_ERR_IO, "heartbeat: another rank could not connect");
    if (st == QS_OK && pthread_create(&g.thread, NULL, run_thread, NULL) != 0)
        st = qs_error_set(err, QS_ERR_IO, "heartbeat: cannot start its thread");
    if (st != QS_OK) {
        close_all();
        return st;
    }
    g.active = true;
    return QS_OK;
}

int qs_heartbeat_lost(char *what, size_t cap)
{
    int r = atomic_load(&g.lost);
    if (r < 0) return -1;
    if (what && cap) snprintf(what, cap, "%s", g.what);
    return r;
}

void qs_heartbeat_stop(double grace_s)
{
    if (!g.active) return;
    for (double end = now_s() + grace_s; now_s() < end && atomic_load(&g.lost) == -1;) usleep(10000);
    g.active = false;
    /* the thread first (no two writers on a socket), then the goodbyes */
    char one = 1;
    if (write(g.wake[1], &one, 1) != 1) { /* the thread then ends at its next period */
    }
    pthread_join(g.thread, NULL);
    frame bye = {HB_MAGIC, HB_BYE, g.nonce, g.rank, -1, {0}};
    for (int i = 0; i < g.n_peers; i++) {
        peer *p = &g.peers[i];
        if (p->fd < 0 || p->gone) continue;
        send_frame(p->fd, &bye);
        /* FIN after the goodbye; unread frames are drained so close() does not
         * answer them with a reset that could overtake the goodbye */
        shutdown(p->fd, SHUT_WR);
        unsigned char sink[4096];
        while (recv(p->fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
    }
    close_all();
}
