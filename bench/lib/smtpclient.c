/*
 * smtpclient: a small SMTP load client for the benchmark (bench/compare.py).
 *
 * smtp-source (Postfix's load generator) gives no latencies and cannot do
 * TLS; this client does both. One thread per session, blocking sockets, all
 * commands of a transaction pipelined (MAIL, RCPT, DATA in one write). For
 * every message it measures the accept latency: the time from the end of
 * data (the final "." written, after the body) to the reply. With --tls a
 * session is EHLO, STARTTLS, EHLO, and with --auth AUTH PLAIN, before its
 * first message; the time from connect() to the session being ready (before
 * AUTH with --pipeline) is the setup time. --per-session K closes a session
 * after K messages and opens a new one (1: one message per session, the
 * "sessions per second" measure).
 * --pipeline saves two round trips a session: AUTH PLAIN goes with the first
 * MAIL, RCPT and DATA, and QUIT with the session's last final dot.
 * --rate R paces the load: message m (over all sessions) starts no earlier
 * than m / R seconds after the start (bench/traffic_soak.py's steady load).
 *
 * Prints one JSON document on stdout.
 *
 * usage: smtpclient --port P [--host 127.0.0.1] [--sessions N] [--messages M]
 *          [--size BYTES] [--per-session K] [--tls] [--auth USER:PASS]
 *          [--from ADDR] [--to ADDR] [--helo NAME] [--pipeline] [--rate R]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *opt_host = "127.0.0.1";
static int opt_port;
static int opt_sessions = 1;
static long opt_messages = 1000;
static long opt_size = 1024;
static long opt_per_session; /* 0: every message on one session */
static int opt_tls;
static int opt_pipeline; /* AUTH with the first transaction, QUIT with the last dot */
static double opt_rate;  /* messages per second over all sessions; 0: as fast as they go */
static double t_start;
static const char *opt_auth; /* user:pass */
static const char *opt_from = "bench@example.test";
static const char *opt_to = "rcpt@sink.example";
static const char *opt_helo = "bench.client.test";

static SSL_CTX *ctx;
static atomic_long next_msg;
static atomic_long n_ok, n_refused, n_errors, n_sessions;
static char auth_line[1024];

struct conn {
    int fd;
    SSL *ssl;
    char buf[16384];
    size_t len, off;
};

struct worker {
    pthread_t th;
    int id;
    double *lat; /* seconds, per accepted message */
    size_t nlat, caplat;
    double *setup; /* seconds, per session */
    size_t nsetup, capsetup;
    char *body;
    size_t bodylen;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void push(double **v, size_t *n, size_t *cap, double x)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *v = realloc(*v, *cap * sizeof(double));
        if (*v == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    (*v)[(*n)++] = x;
}

static int c_write(struct conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, s, (int)(n > 1 << 30 ? 1 << 30 : n));
            if (r <= 0)
                return -1;
            w = r;
        } else {
            w = send(c->fd, s, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int c_fill(struct conn *c)
{
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == sizeof(c->buf))
        return -1;
    ssize_t r;
    if (c->ssl) {
        int k = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
        r = k > 0 ? k : -1;
    } else {
        do
            r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        while (r < 0 && errno == EINTR);
    }
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    return 0;
}

/* One reply (all its lines); returns its code or -1. */
static int c_reply(struct conn *c)
{
    for (;;) {
        char *start = c->buf + c->off;
        char *nl = memchr(start, '\n', c->len - c->off);
        if (nl == NULL) {
            if (c_fill(c) < 0)
                return -1;
            continue;
        }
        size_t linelen = (size_t)(nl - start) + 1;
        c->off += linelen;
        if (linelen < 4)
            return -1;
        if (start[3] == '-')
            continue;
        return (start[0] - '0') * 100 + (start[1] - '0') * 10 + (start[2] - '0');
    }
}

static void c_close(struct conn *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->len = c->off = 0;
}

static int c_cmd(struct conn *c, const char *line, int want)
{
    if (c_write(c, line, strlen(line)) < 0)
        return -1;
    int code = c_reply(c);
    return code == want ? 0 : -1;
}

/* Connect and get the session ready for MAIL; 0 on success. */
static int c_open(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    inet_pton(AF_INET, opt_host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    c->ssl = NULL;
    c->len = c->off = 0;
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    char ehlo[300];
    snprintf(ehlo, sizeof(ehlo), "EHLO %s\r\n", opt_helo);
    if (c_reply(c) != 220 || c_cmd(c, ehlo, 250) < 0)
        return -1;
    if (opt_tls) {
        if (c_cmd(c, "STARTTLS\r\n", 220) < 0)
            return -1;
        if (c->off != c->len)
            return -1; /* nothing may follow the 220 */
        c->len = c->off = 0;
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        if (SSL_connect(c->ssl) != 1)
            return -1;
        if (c_cmd(c, ehlo, 250) < 0)
            return -1;
    }
    if (opt_auth && !opt_pipeline && c_cmd(c, auth_line, 235) < 0)
        return -1;
    return 0;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    struct conn c = {.fd = -1};
    long on_session = 0;
    /* pipelined, AUTH PLAIN leads a session's first group: it carries its
     * response, which RFC 4954 section 4 allows */
    char env[2048];
    size_t authlen = opt_auth && opt_pipeline ? strlen(auth_line) : 0;
    memcpy(env, auth_line, authlen);
    snprintf(env + authlen, sizeof(env) - authlen, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n",
             opt_from, opt_to);
    int consecutive_errors = 0;
    for (;;) {
        long m = atomic_fetch_add(&next_msg, 1);
        if (m >= opt_messages)
            break;
        if (opt_rate > 0) {
            double wait = t_start + (double)m / opt_rate - now();
            if (wait > 0)
                usleep((useconds_t)(wait * 1e6));
        }
        if (c.fd < 0) {
            double t0 = now();
            if (c_open(&c) < 0) {
                atomic_fetch_add(&n_errors, 1);
                c_close(&c);
                if (++consecutive_errors > 20) {
                    fprintf(stderr, "smtpclient: session setup keeps failing\n");
                    break;
                }
                usleep(10000);
                continue;
            }
            push(&w->setup, &w->nsetup, &w->capsetup, now() - t0);
            atomic_fetch_add(&n_sessions, 1);
            on_session = 0;
        }
        /* a unique Message-ID per message: patch its digits in place */
        char *mid = strstr(w->body, "Message-ID: <");
        if (mid) {
            char tag[32];
            snprintf(tag, sizeof(tag), "%010ld.%08d", m % 10000000000L, w->id % 100000000);
            memcpy(mid + 13, tag, 19);
        }
        int with_auth = on_session == 0 && authlen > 0;
        /* pipelined, QUIT follows the session's last dot (RFC 2920) */
        int with_quit = opt_pipeline && opt_per_session > 0 && on_session + 1 >= opt_per_session;
        const char *group = with_auth ? env : env + authlen;
        const char *dot = with_quit ? ".\r\nQUIT\r\n" : ".\r\n";
        int ok = c_write(&c, group, strlen(group)) == 0 &&
                 (!with_auth || c_reply(&c) == 235) && c_reply(&c) == 250 &&
                 c_reply(&c) == 250 && c_reply(&c) == 354 && c_write(&c, w->body, w->bodylen) == 0;
        double t0 = now();
        int code = ok && c_write(&c, dot, strlen(dot)) == 0 ? c_reply(&c) : -1;
        double t1 = now();
        if (code == 250) {
            push(&w->lat, &w->nlat, &w->caplat, t1 - t0);
            atomic_fetch_add(&n_ok, 1);
            consecutive_errors = 0;
        } else if (code > 0) {
            atomic_fetch_add(&n_refused, 1);
            if (!with_quit)
                c_cmd(&c, "RSET\r\n", 250);
        } else {
            atomic_fetch_add(&n_errors, 1);
            c_close(&c);
            if (++consecutive_errors > 20) {
                fprintf(stderr, "smtpclient: sessions keep failing\n");
                break;
            }
            continue;
        }
        if (opt_per_session > 0 && ++on_session >= opt_per_session) {
            if (with_quit)
                c_reply(&c);
            else
                c_cmd(&c, "QUIT\r\n", 221);
            c_close(&c);
        }
    }
    if (c.fd >= 0) {
        c_cmd(&c, "QUIT\r\n", 221);
        c_close(&c);
    }
    return NULL;
}

static char *make_body(size_t size, size_t *len)
{
    char head[1024];
    int hl = snprintf(head, sizeof(head),
                      "From: <%s>\r\nTo: <%s>\r\nSubject: benchmark message\r\n"
                      "Message-ID: <0000000000.00000000@bench.client.test>\r\n"
                      "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n",
                      opt_from, opt_to);
    size_t cap = size + (size_t)hl + 200;
    char *b = malloc(cap);
    memcpy(b, head, (size_t)hl);
    size_t n = (size_t)hl;
    static const char line[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789abcd\r\n"; /* 78 octets */
    while (n + sizeof(line) - 1 <= size || n == (size_t)hl) {
        memcpy(b + n, line, sizeof(line) - 1);
        n += sizeof(line) - 1;
    }
    if (size >= n + 3) { /* a last, shorter line brings it to the size asked */
        memset(b + n, 'x', size - n - 2);
        n = size - 2;
        b[n++] = '\r';
        b[n++] = '\n';
    }
    *len = n;
    return b;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'H'},     {"port", 1, 0, 'p'}, {"sessions", 1, 0, 's'},
        {"messages", 1, 0, 'm'}, {"size", 1, 0, 'l'}, {"per-session", 1, 0, 'k'},
        {"tls", 0, 0, 't'},      {"auth", 1, 0, 'a'}, {"from", 1, 0, 'f'},
        {"to", 1, 0, 'r'},       {"helo", 1, 0, 'e'},
        {"pipeline", 0, 0, 'P'}, {"rate", 1, 0, 'R'},  {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'H': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 's': opt_sessions = atoi(optarg); break;
        case 'm': opt_messages = atol(optarg); break;
        case 'l': opt_size = atol(optarg); break;
        case 'k': opt_per_session = atol(optarg); break;
        case 't': opt_tls = 1; break;
        case 'a': opt_auth = optarg; break;
        case 'f': opt_from = optarg; break;
        case 'r': opt_to = optarg; break;
        case 'e': opt_helo = optarg; break;
        case 'P': opt_pipeline = 1; break;
        case 'R': opt_rate = atof(optarg); break;
        default: fprintf(stderr, "usage: see the comment at the top of smtpclient.c\n"); return 2;
        }
    }
    if (opt_port <= 0 || opt_sessions <= 0 || opt_messages <= 0) {
        fprintf(stderr, "smtpclient: --port, --sessions and --messages must be positive\n");
        return 2;
    }
    if (opt_rate < 0) {
        fprintf(stderr, "smtpclient: --rate must not be negative\n");
        return 2;
    }
    if (opt_tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* a full handshake each time */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    if (opt_auth) {
        const char *colon = strchr(opt_auth, ':');
        if (colon == NULL) {
            fprintf(stderr, "smtpclient: --auth USER:PASS\n");
            return 2;
        }
        unsigned char raw[512];
        size_t ul = (size_t)(colon - opt_auth), pl = strlen(colon + 1);
        if (ul + pl + 2 > sizeof(raw))
            return 2;
        raw[0] = 0;
        memcpy(raw + 1, opt_auth, ul);
        raw[1 + ul] = 0;
        memcpy(raw + 2 + ul, colon + 1, pl);
        char b64[800];
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)(ul + pl + 2));
        snprintf(auth_line, sizeof(auth_line), "AUTH PLAIN %s\r\n", b64);
    }
    struct worker *w = calloc((size_t)opt_sessions, sizeof(*w));
    double t0 = now();
    t_start = t0;
    for (int i = 0; i < opt_sessions; i++) {
        w[i].id = i;
        w[i].body = make_body((size_t)opt_size, &w[i].bodylen);
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256 * 1024);
        if (pthread_create(&w[i].th, &a, run, &w[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
        pthread_attr_destroy(&a);
    }
    size_t nl = 0, ns = 0;
    for (int i = 0; i < opt_sessions; i++) {
        pthread_join(w[i].th, NULL);
        nl += w[i].nlat;
        ns += w[i].nsetup;
    }
    double secs = now() - t0;
    double *lat = malloc((nl + 1) * sizeof(double)), *setup = malloc((ns + 1) * sizeof(double));
    size_t k = 0, j = 0;
    for (int i = 0; i < opt_sessions; i++) {
        memcpy(lat + k, w[i].lat, w[i].nlat * sizeof(double));
        k += w[i].nlat;
        memcpy(setup + j, w[i].setup, w[i].nsetup * sizeof(double));
        j += w[i].nsetup;
    }
    qsort(lat, nl, sizeof(double), cmp);
    qsort(setup, ns, sizeof(double), cmp);
    double sum = 0;
    for (size_t i = 0; i < nl; i++)
        sum += lat[i];
    printf("{\"messages\": %ld, \"refused\": %ld, \"errors\": %ld, \"sessions\": %ld, "
           "\"seconds\": %.4f, \"messages_per_s\": %.1f, \"sessions_per_s\": %.1f, "
           "\"message_bytes\": %zu, "
           "\"lat_p50_ms\": %.3f, \"lat_p90_ms\": %.3f, \"lat_p99_ms\": %.3f, "
           "\"lat_max_ms\": %.3f, \"lat_mean_ms\": %.3f, "
           "\"setup_p50_ms\": %.3f, \"setup_p99_ms\": %.3f}\n",
           atomic_load(&n_ok), atomic_load(&n_refused), atomic_load(&n_errors),
           atomic_load(&n_sessions), secs, atomic_load(&n_ok) / secs,
           atomic_load(&n_sessions) / secs, w[0].bodylen, pct(lat, nl, 50) * 1e3,
           pct(lat, nl, 90) * 1e3, pct(lat, nl, 99) * 1e3, nl ? lat[nl - 1] * 1e3 : 0,
           nl ? sum / (double)nl * 1e3 : 0, pct(setup, ns, 50) * 1e3, pct(setup, ns, 99) * 1e3);
    return atomic_load(&n_ok) > 0 ? 0 : 1;
}
