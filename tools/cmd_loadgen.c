/*
 * `loom loadgen`: load a KServe v2 server over HTTP (or a model served in-process) and report
 * what it delivered: achieved QPS, latency percentiles, errors by kind, and the batch sizes the
 * server chose (from its /metrics). Open loop (Poisson or constant arrivals, latency measured
 * from each request's scheduled arrival so a slow server cannot hide its queueing), or closed
 * loop with N clients; --find-max-qps searches the highest rate that meets a p99 target.
 * The HTTP clients are minimal HTTP/1.1 clients with keep-alive for exactly the requests they
 * make (blocking, one thread per client, in the closed loop; one thread over non-blocking
 * connections with epoll in the open loop); they parse only the status line and
 * Content-Length of the answers.
 */
#include <loom/loom.h>
#include <loom/serve.h>

#include <jansson.h>

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tool_util.h"
#include "commands.h"
#include "serve_lanes.h"
#include "serve/serve_internal.h"

static const char loadgen_help[] =
    "usage: loom loadgen URL|MODEL.onnx (--rate QPS [--constant] | --concurrency N)\n"
    "                    [--duration S] [--requests N] [--find-max-qps --p99 MS]\n"
    "                    [--model NAME] [--batch ROWS] [--distinct N] [--binary]\n"
    "                    [--connections N] [--timeout-ms MS] [--client-nice N] [--json]\n"
    "                    [--quiet]\n"
    "                    in-process only: [--max-batch N] [--latency-ms MS] [--cache-mb MB]\n"
    "                    [--workers N] [--trace FILE]\n"
    "\n"
    "URL is a server (http://127.0.0.1:8000 with --model NAME, or\n"
    "http://HOST:PORT/v2/models/NAME[/versions/V][/infer]); MODEL.onnx is served in-process.\n"
    "  --rate QPS        open loop: Poisson arrivals at QPS (--constant: evenly spaced)\n"
    "  --concurrency N   closed loop: N clients, each sending its next request on an answer\n"
    "  --duration S      seconds to run (default 10)\n"
    "  --requests N      stop after N requests\n"
    "  --find-max-qps    search the highest open-loop rate whose p99 meets --p99 MS with under\n"
    "                    0.1% errors (each step runs --duration, default 5 s here)\n"
    "  --batch ROWS      rows per request (default 1)\n"
    "  --distinct N      different request bodies, cycled (default 256; 1: all identical)\n"
    "  --binary          send tensors with the binary data extension\n"
    "  --connections N   open-loop HTTP connections (default 64)\n"
    "  --timeout-ms MS   per-request deadline sent to the server (parameters.timeout)\n"
    "  --client-nice N   run the threads that send requests and read answers at loom's own\n"
    "                    nice value plus N (lower priority; default 10, capped at 19; 0: the\n"
    "                    server's priority): where the load generator shares cores with the\n"
    "                    server, its threads then take them when the server's do not, as a\n"
    "                    client on another machine would. Latency still counts from each\n"
    "                    request's scheduled time, so a request sent late counts late. In\n"
    "                    process the server's threads keep loom's own nice value.\n"
    "  --trace FILE      in process: the server's Chrome trace-event file (each batch on\n"
    "                    its worker's track, each request's span; as loom serve --trace)\n"
    "  --json            one JSON object on stdout instead of the table\n"
    "  --quiet           no progress line on stderr\n"
    "Exit status: 0 when the run completed (errors are reported, not fatal), 1 when the\n"
    "server cannot be reached or the model cannot be served, 2 on bad usage.\n";

static int lg_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int lg_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loom loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'loom loadgen --help')\n");
    va_end(ap);
    return 2;
}

static void lg_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void lg_say(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ' ';
    fprintf(stderr, "loom loadgen: %s\n", buf);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
    double d = t - now_s();
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ---- the run's state --------------------------------------------------------------------- */

enum { K_OK, K_400, K_404, K_413, K_503, K_504, K_500, K_OTHER, K_IO, N_KINDS };
static const char *const kind_names[N_KINDS] = {"ok", "http_400", "http_404", "http_413",
                                                "http_503", "http_504", "http_500",
                                                "http_other", "io"};

typedef struct body {
    char *data;
    size_t len, header_len;
} body;

typedef struct lg {
    /* what to load */
    int http;
    int client_nice;          /* added to the client threads' nice value (--client-nice) */
    char host[256], port[256], path[600], model[256], version[64];
    body *bodies;
    size_t n_bodies;
    loom_runtime *rt;
    loom_server *srv;
    loom_tensor **tensors;    /* in-process: n_bodies x n_in */
    size_t n_in;
    /* the run */
    int open;                 /* 1 open loop, 0 closed */
    int poisson;
    double rate;
    int concurrency, connections;
    double duration;
    size_t max_requests;
    double *arrival;          /* open loop: scheduled times (relative to T0) */
    double *lat;              /* per request: seconds, or -1 */
    unsigned char *kind;
    size_t n_slots;
    atomic_size_t next;
    atomic_size_t sent, done, errors;
    atomic_int stop;
    atomic_ullong last_done_ns; /* when the last answer came, since T0 */
    double t0, t_end;
    int quiet;
    double timeout_ms;
} lg;

/* ---- HTTP -------------------------------------------------------------------------------- */

/* The shared client (serve/http_client.c), opened on first use. */
typedef sv_http_conn hconn;

static void hc_close(hconn *c)
{
    sv_http_close(c);
}

/* Send one request (METHOD PATH with BODY, may be NULL) and read the answer: its status into
 * *STATUS and, when OUT is non-NULL, its body into a new *OUT (malloc, NUL-terminated).
 * Returns 0, or -1 on a connection failure (the connection is then closed). */
static int hc_request(const lg *g, hconn *c, const char *method, const char *path,
                      const body *b, int *status, char **out)
{
    if (c->fd < 0 && !c->host[0])
        sv_http_init(c, g->host, g->port);
    sv_http_reply rp = {.want_body = out != NULL};
    if (sv_http_request(c, method, path, b ? b->data : NULL, b ? b->len : 0,
                        b ? b->header_len : 0, 0, &rp) != 0)
        return -1;
    *status = rp.status;
    if (out)
        *out = rp.body;
    return 0;
}

static int kind_of_status(int st)
{
    switch (st) {
    case 200: return K_OK;
    case 400: return K_400;
    case 404: return K_404;
    case 413: return K_413;
    case 503: return K_503;
    case 504: return K_504;
    case 500: return K_500;
    default: return K_OTHER;
    }
}

/* ---- request bodies ---------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const void *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            fprintf(stderr, "loom loadgen: out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)(n < (int)sizeof tmp ? n : (int)sizeof tmp - 1));
}

/* A seeded generator (xorshift64*), one per body, so runs are reproducible. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static loom_dtype dtype_of(const char *n)
{
    static const struct {
        const char *n;
        loom_dtype d;
    } t[] = {{"FP32", LOOM_DTYPE_F32}, {"INT64", LOOM_DTYPE_I64}, {"INT32", LOOM_DTYPE_I32},
             {"INT8", LOOM_DTYPE_I8},  {"UINT8", LOOM_DTYPE_U8},  {"BOOL", LOOM_DTYPE_BOOL}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(t[i].n, n))
            return t[i].d;
    return LOOM_DTYPE_UNDEFINED;
}

/* Fill N elements of DT at DATA with seeded values: floats in [-1, 1), integers in [0, 100). */
static void fill_random(void *data, loom_dtype dt, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd(s);
        switch (dt) {
        case LOOM_DTYPE_F32: ((float *)data)[i] = (float)((double)(r >> 11) / 4503599627370496.0
                                                          - 1.0); break;
        case LOOM_DTYPE_I64: ((int64_t *)data)[i] = (int64_t)(r % 100); break;
        case LOOM_DTYPE_I32: ((int32_t *)data)[i] = (int32_t)(r % 100); break;
        case LOOM_DTYPE_I8: ((int8_t *)data)[i] = (int8_t)(r % 100); break;
        case LOOM_DTYPE_U8: ((uint8_t *)data)[i] = (uint8_t)(r % 100); break;
        case LOOM_DTYPE_BOOL: ((uint8_t *)data)[i] = (uint8_t)(r & 1); break;
        default: break;
        }
    }
}

/* Bodies for the model's inputs described by META (the metadata JSON). */
static int make_bodies(lg *g, const json_t *meta, int rows, size_t n_bodies, int binary)
{
    const json_t *inputs = json_object_get(meta, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0)
        return -1;
    g->bodies = calloc(n_bodies, sizeof *g->bodies);
    if (!g->bodies)
        return -1;
    g->n_bodies = n_bodies;
    for (size_t b = 0; b < n_bodies; b++) {
        uint64_t seed = 0x9E3779B97F4A7C15ull * (b + 1);
        sbuf j = {0}, bin = {0};
        sb_fmt(&j, "{\"id\":\"lg%zu\",\"inputs\":[", b);
        if (g->timeout_ms > 0)
            j.len -= 0; /* parameters are appended below */
        size_t i;
        const json_t *in;
        json_array_foreach(inputs, i, in) {
            const char *name = json_string_value(json_object_get(in, "name"));
            const char *dtn = json_string_value(json_object_get(in, "datatype"));
            const json_t *shape = json_object_get(in, "shape");
            loom_dtype dt = dtn ? dtype_of(dtn) : LOOM_DTYPE_UNDEFINED;
            if (!name || dt == LOOM_DTYPE_UNDEFINED || !json_is_array(shape)) {
                free(j.p);
                free(bin.p);
                return -1;
            }
            size_t n = 1;
            sb_fmt(&j, "%s{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[", i ? "," : "", name,
                   dtn);
            for (size_t d = 0; d < json_array_size(shape); d++) {
                json_int_t v = json_integer_value(json_array_get(shape, d));
                if (v < 0)
                    v = rows;
                n *= (size_t)v;
                sb_fmt(&j, "%s%lld", d ? "," : "", (long long)v);
            }
            sb_fmt(&j, "]");
            size_t es = loom_dtype_size(dt);
            void *data = calloc(n ? n : 1, es);
            if (!data) {
                free(j.p);
                free(bin.p);
                return -1;
            }
            fill_random(data, dt, n, &seed);
            if (binary) {
                sb_fmt(&j, ",\"parameters\":{\"binary_data_size\":%zu}}", n * es);
                sb_put(&bin, data, n * es);
            } else {
                sb_fmt(&j, ",\"data\":[");
                for (size_t k = 0; k < n; k++) {
                    if (dt == LOOM_DTYPE_F32)
                        sb_fmt(&j, "%s%.9g", k ? "," : "", ((float *)data)[k]);
                    else if (dt == LOOM_DTYPE_I64)
                        sb_fmt(&j, "%s%lld", k ? "," : "", (long long)((int64_t *)data)[k]);
                    else if (dt == LOOM_DTYPE_I32)
                        sb_fmt(&j, "%s%d", k ? "," : "", ((int32_t *)data)[k]);
                    else if (dt == LOOM_DTYPE_I8)
                        sb_fmt(&j, "%s%d", k ? "," : "", ((int8_t *)data)[k]);
                    else if (dt == LOOM_DTYPE_BOOL)
                        sb_fmt(&j, "%s%s", k ? "," : "", ((uint8_t *)data)[k] ? "true" : "false");
                    else
                        sb_fmt(&j, "%s%u", k ? "," : "", ((uint8_t *)data)[k]);
                }
                sb_fmt(&j, "]}");
            }
            free(data);
        }
        sb_fmt(&j, "]");
        if (g->timeout_ms > 0)
            sb_fmt(&j, ",\"parameters\":{\"timeout\":%lld%s}", (long long)(g->timeout_ms * 1000),
                   binary ? ",\"binary_data_output\":true" : "");
        else if (binary)
            sb_fmt(&j, ",\"parameters\":{\"binary_data_output\":true}");
        sb_fmt(&j, "}");
        g->bodies[b].header_len = binary ? j.len : 0;
        if (binary && bin.len)
            sb_put(&j, bin.p, bin.len);
        free(bin.p);
        g->bodies[b].data = j.p;
        g->bodies[b].len = j.len;
    }
    return 0;
}

/* In-process: random input tensors per body, in the model's input order. */
static int make_tensors(lg *g, int rows, size_t n_bodies)
{
    loom_serve_tensor_info info[64];
    size_t n = loom_server_model_inputs(g->srv, g->model, NULL, info, 64);
    if (n == 0 || n > 64)
        return -1;
    g->n_in = n;
    g->n_bodies = n_bodies;
    g->tensors = calloc(n * n_bodies, sizeof *g->tensors);
    if (!g->tensors)
        return -1;
    for (size_t b = 0; b < n_bodies; b++) {
        uint64_t seed = 0x9E3779B97F4A7C15ull * (b + 1);
        for (size_t k = 0; k < n; k++) {
            int64_t dims[LOOM_MAX_RANK];
            size_t cnt = 1;
            for (uint32_t d = 0; d < info[k].rank; d++) {
                dims[d] = info[k].dims[d] < 0 ? rows : info[k].dims[d];
                cnt *= (size_t)dims[d];
            }
            if (loom_tensor_create(info[k].dtype, info[k].rank, dims, &g->tensors[b * n + k]) !=
                LOOM_OK)
                return -1;
            fill_random(loom_tensor_data(g->tensors[b * n + k]), info[k].dtype, cnt, &seed);
        }
    }
    return 0;
}

/* ---- metrics: batch sizes ---------------------------------------------------------------- */

#define N_BUCKETS 10
static const char *const bucket_les[N_BUCKETS] = {"1", "2", "4", "8", "16", "32", "64", "128",
                                                  "256", "+Inf"};

typedef struct batch_hist {
    double cum[N_BUCKETS];
    double sum, count;
    int found;
} batch_hist;

static void parse_batch_hist(const char *text, const char *model, batch_hist *h)
{
    memset(h, 0, sizeof *h);
    if (!text)
        return;
    char want[300];
    snprintf(want, sizeof want, "model=\"%s\"", model);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, "loom_batch_size_", 16))
            continue;
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char l[512];
        if (len >= sizeof l)
            continue;
        memcpy(l, line, len);
        l[len] = '\0';
        if (!strstr(l, want))
            continue;
        const char *val = strrchr(l, ' ');
        if (!val)
            continue;
        double v = strtod(val + 1, NULL);
        h->found = 1;
        if (!strncmp(l, "loom_batch_size_sum", 19)) {
            h->sum = v;
        } else if (!strncmp(l, "loom_batch_size_count", 21)) {
            h->count = v;
        } else {
            const char *le = strstr(l, "le=\"");
            if (!le)
                continue;
            le += 4;
            for (int k = 0; k < N_BUCKETS; k++) {
                size_t kl = strlen(bucket_les[k]);
                if (!strncmp(le, bucket_les[k], kl) && le[kl] == '"')
                    h->cum[k] = v;
            }
        }
    }
}

static char *scrape(lg *g)
{
    char *text = NULL;
    if (g->http) {
        hconn c = {.fd = -1};
        int st;
        if (hc_request(g, &c, "GET", "/metrics", NULL, &st, &text) != 0 || st != 200) {
            free(text);
            text = NULL;
        }
        hc_close(&c);
    } else {
        loom_server_metrics_text(g->srv, &text);
    }
    return text;
}

/* ---- running ----------------------------------------------------------------------------- */

static void record(lg *g, size_t k, double latency, int kind)
{
    g->lat[k] = latency;
    g->kind[k] = (unsigned char)kind;
    double since = now_s() - g->t0;
    unsigned long long t = since > 0 ? (unsigned long long)(since * 1e9) : 0;
    unsigned long long prev = atomic_load(&g->last_done_ns);
    while (t > prev && !atomic_compare_exchange_weak(&g->last_done_ns, &prev, t))
        ;
    if (kind != K_OK)
        atomic_fetch_add(&g->errors, 1);
    atomic_fetch_add(&g->done, 1);
}

/* Next request slot, or SIZE_MAX when the run is over. */
static size_t take_slot(lg *g)
{
    if (atomic_load(&g->stop))
        return SIZE_MAX;
    size_t k = atomic_fetch_add(&g->next, 1);
    if (k >= g->n_slots) {
        atomic_store(&g->stop, 1);
        return SIZE_MAX;
    }
    if (!g->open && now_s() >= g->t_end) {
        atomic_store(&g->stop, 1);
        return SIZE_MAX;
    }
    atomic_fetch_add(&g->sent, 1);
    return k;
}

/* One client of the closed loop over HTTP: its next request when its answer came. */
static void *http_client(void *arg)
{
    lg *g = arg;
    hconn c = {.fd = -1};
    sleep_until(g->t0);
    for (;;) {
        size_t k = take_slot(g);
        if (k == SIZE_MAX)
            break;
        double t_sched = now_s();
        int st = 0;
        int rc = hc_request(g, &c, "POST", g->path, &g->bodies[k % g->n_bodies], &st, NULL);
        double t = now_s();
        record(g, k, t - t_sched, rc == 0 ? kind_of_status(st) : K_IO);
    }
    hc_close(&c);
    return NULL;
}

/* The open loop over HTTP: one thread and CONNECTIONS keep-alive connections, non-blocking,
 * driven by epoll. It sends each request at its scheduled arrival on an idle connection (or,
 * when every connection is busy, on the first to come free: its latency still counts from the
 * schedule) and reads the answers as they come, several per wake-up under load. A thread per
 * connection, each sleeping until its next arrival and blocking on its answer, cost the
 * machine two context switches per request, on the cores the server shares. */
typedef struct econn {
    int fd;                   /* -1: not connected */
    size_t k;                 /* the request in flight; SIZE_MAX: idle */
    double t_sched;
    char buf[16384];          /* the answer's head read so far (then scratch for its body) */
    size_t have;
    int status;               /* the answer's, once its head is read; 0: reading the head */
    int close_after;          /* the answer said Connection: close */
    size_t body_left;         /* bytes of its body still to come */
    double t_rx;              /* when the last bytes read arrived (kernel stamp, monotonic
                               * seconds); 0: not known */
} econn;

/* Read from C's socket like read(), noting in C->T_RX when the bytes read arrived: the
 * kernel's receive stamp (SO_TIMESTAMPNS, on the real-time clock) moved to the monotonic one. */
static ssize_t econn_recv(econn *c, void *to, size_t room)
{
    struct iovec iov = {to, room};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = sizeof ctl.buf};
    ssize_t r = recvmsg(c->fd, &mh, 0);
    if (r <= 0)
        return r;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec rx, real, mono;
            memcpy(&rx, CMSG_DATA(cm), sizeof rx);
            clock_gettime(CLOCK_REALTIME, &real);
            clock_gettime(CLOCK_MONOTONIC, &mono);
            double age = (double)(real.tv_sec - rx.tv_sec) +
                         (double)(real.tv_nsec - rx.tv_nsec) * 1e-9;
            /* A stamp in the future or from long ago (the real-time clock stepped): unknown. */
            c->t_rx = age >= 0 && age < 10
                          ? (double)mono.tv_sec + (double)mono.tv_nsec * 1e-9 - age : 0;
        }
    return r;
}

static int econn_open(const lg *g, econn *c, int ep)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(g->host, g->port, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* The kernel stamps what arrives: an answer's latency ends when it reached this socket,
     * not when this thread (at a lower priority than the server, --client-nice) read it. */
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->have = 0;
    c->status = 0;
    return 0;
}

static void econn_close(econn *c)
{
    if (c->fd >= 0)
        close(c->fd); /* leaves the epoll set with its last descriptor */
    c->fd = -1;
    c->have = 0;
    c->status = 0;
}

/* Send request K (its head prepared in HEADS) on C; 0, or -1 when the connection failed. */
static int econn_send(const lg *g, econn *c, int ep, size_t k, double t_sched, const sbuf *heads)
{
    if (c->fd < 0 && econn_open(g, c, ep) != 0)
        return -1;
    const body *b = &g->bodies[k % g->n_bodies];
    const sbuf *h = &heads[k % g->n_bodies];
    struct iovec iov[2] = {{h->p, h->len}, {b->data, b->len}}, *v = iov;
    int n = 2;
    while (n > 0) {
        ssize_t w = writev(c->fd, v, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) { /* a full socket buffer: wait for room */
                struct pollfd p = {.fd = c->fd, .events = POLLOUT};
                if (poll(&p, 1, 30000) > 0)
                    continue;
            }
            econn_close(c);
            return -1;
        }
        while (n > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (char *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    c->k = k;
    c->t_sched = t_sched;
    c->t_rx = 0;
    return 0;
}

/* The end of C's request: record it as KIND; C is idle again (closed when CLOSE_IT). */
static void econn_finish(lg *g, econn *c, int kind, int close_it)
{
    if (close_it)
        econn_close(c);
    if (c->k != SIZE_MAX) {
        double end = kind != K_IO && c->t_rx > 0 ? c->t_rx : now_s();
        record(g, c->k, end - c->t_sched, kind);
    }
    c->k = SIZE_MAX;
    c->status = 0;
    c->t_rx = 0;
}

/* Read what C has: the answer's head into BUF, its body counted off without being kept (a
 * BERT's hidden states run to hundreds of KB). Returns 1 when the answer is complete (recorded,
 * C idle again), 0 when more is to come, -1 when the connection failed (recorded as io). */
static int econn_read(lg *g, econn *c)
{
    for (;;) {
        char *to = c->status ? c->buf : c->buf + c->have;
        size_t room = c->status ? sizeof c->buf : sizeof c->buf - 1 - c->have;
        if (c->status && room > c->body_left)
            room = c->body_left; /* never read past this answer */
        if (room == 0)
            break;
        ssize_t r = econn_recv(c, to, room);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 0;
        if (r <= 0) {
            econn_finish(g, c, K_IO, 1);
            return -1;
        }
        if (c->status) {
            c->body_left -= (size_t)r;
            if (c->body_left == 0)
                break;
            continue;
        }
        c->have += (size_t)r;
        c->buf[c->have] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end) {
            if (c->have >= sizeof c->buf - 1)
                break; /* a head this client cannot read */
            continue;
        }
        size_t head_len = (size_t)(end - c->buf) + 4, clen = 0;
        int status = 0;
        c->close_after = 0;
        if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1 || status <= 0)
            break;
        for (char *l = strstr(c->buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
            if (!strncasecmp(l + 2, "Content-Length:", 15))
                clen = strtoull(l + 17, NULL, 10);
            else if (!strncasecmp(l + 2, "Connection: close", 17))
                c->close_after = 1;
        }
        /* One request at a time per connection: what followed the head is this body. */
        size_t got = c->have - head_len;
        if (got > clen)
            break; /* more than the answer announced */
        c->status = status;
        c->body_left = clen - got;
        c->have = 0;
        if (c->body_left == 0)
            break;
    }
    if (c->status && c->body_left == 0) {
        econn_finish(g, c, kind_of_status(c->status), c->close_after);
        return 1;
    }
    econn_finish(g, c, K_IO, 1); /* not an answer this client can read */
    return -1;
}

static void *http_open_epoll(void *arg)
{
    lg *g = arg;
    int n_conn = g->connections > 0 ? g->connections : 1;
    econn *conns = calloc((size_t)n_conn, sizeof *conns);
    econn **idle = calloc((size_t)n_conn, sizeof *idle);
    sbuf *heads = calloc(g->n_bodies, sizeof *heads);
    size_t *backlog = malloc(g->n_slots * sizeof *backlog); /* due, waiting for a connection */
    struct epoll_event evs[64];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    size_t n_idle = 0, bl_head = 0, bl_tail = 0, in_flight = 0;
    int ok = conns && idle && heads && backlog && ep >= 0;
    for (size_t i = 0; ok && i < g->n_bodies; i++) {
        const body *b = &g->bodies[i];
        /* sb_put for the parts of unbounded length (sb_fmt stops at 511 bytes). */
        sb_put(&heads[i], "POST ", 5);
        sb_put(&heads[i], g->path, strlen(g->path));
        sb_put(&heads[i], " HTTP/1.1\r\nHost: ", 17);
        sb_put(&heads[i], g->host, strlen(g->host));
        sb_put(&heads[i], ":", 1);
        sb_put(&heads[i], g->port, strlen(g->port));
        sb_fmt(&heads[i], "\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
               b->header_len ? "application/octet-stream" : "application/json", b->len);
        if (b->header_len)
            sb_fmt(&heads[i], "Inference-Header-Content-Length: %zu\r\n", b->header_len);
        sb_put(&heads[i], "\r\n", 2);
        ok = heads[i].p != NULL;
    }
    for (int i = 0; ok && i < n_conn; i++) {
        conns[i].fd = -1;
        conns[i].k = SIZE_MAX;
        idle[n_idle++] = &conns[n_conn - 1 - i]; /* the first connections are used first */
    }
    if (!ok) {
        lg_say("out of memory for %d connections", n_conn);
        for (;;) { /* every request fails rather than being left unanswered */
            size_t k = take_slot(g);
            if (k == SIZE_MAX)
                break;
            record(g, k, 0, K_IO);
        }
    }
    size_t next = ok ? take_slot(g) : SIZE_MAX;
    sleep_until(g->t0);
    while (ok && (next != SIZE_MAX || in_flight > 0 || bl_head < bl_tail)) {
        if (atomic_load(&g->stop) == 2)
            break; /* the main thread gave up waiting */
        double now = now_s();
        /* Requests due: on an idle connection, else behind the others due. */
        while (next != SIZE_MAX && g->t0 + g->arrival[next] <= now) {
            backlog[bl_tail++] = next;
            next = take_slot(g);
        }
        while (bl_head < bl_tail && n_idle > 0) {
            size_t k = backlog[bl_head++];
            econn *c = idle[--n_idle];
            if (econn_send(g, c, ep, k, g->t0 + g->arrival[k], heads) == 0) {
                in_flight++;
            } else {
                record(g, k, now_s() - (g->t0 + g->arrival[k]), K_IO);
                idle[n_idle++] = c;
            }
        }
        /* Wait for answers until the next arrival. */
        struct timespec ts = {0, 0}, *tsp = NULL;
        if (next != SIZE_MAX) {
            double d = g->t0 + g->arrival[next] - now_s();
            if (d < 0)
                d = 0;
            ts.tv_sec = (time_t)d;
            ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
            tsp = &ts;
        } else {
            ts.tv_nsec = 50000000; /* look at the stop flag now and then */
            tsp = &ts;
        }
        int n = epoll_pwait2(ep, evs, 64, tsp, NULL);
        if (n < 0 && errno == ENOSYS) /* a kernel before 5.11: millisecond timeouts */
            n = epoll_wait(ep, evs, 64, (int)(tsp->tv_sec * 1000 + tsp->tv_nsec / 1000000));
        for (int e = 0; e < n; e++) {
            econn *c = evs[e].data.ptr;
            if (c->fd < 0 || c->k == SIZE_MAX) {
                /* An idle connection the server closed, or spoke on unasked: drop it; it
                 * reopens when next used. */
                char tmp[256];
                ssize_t r = c->fd >= 0 ? read(c->fd, tmp, sizeof tmp) : 0;
                if (c->fd >= 0 && (r >= 0 || (errno != EAGAIN && errno != EINTR)))
                    econn_close(c);
                continue;
            }
            int r = econn_read(g, c);
            if (r != 0) {
                in_flight--;
                idle[n_idle++] = c;
            }
        }
    }
    /* Requests that never went out (the run was stopped): errors, each answered once. */
    for (size_t b = bl_head; ok && b < bl_tail; b++)
        record(g, backlog[b], now_s() - (g->t0 + g->arrival[backlog[b]]), K_IO);
    for (int i = 0; conns && i < n_conn; i++)
        econn_close(&conns[i]);
    for (size_t i = 0; heads && i < g->n_bodies; i++)
        free(heads[i].p);
    if (ep >= 0)
        close(ep);
    free(heads);
    free(conns);
    free(idle);
    free(backlog);
    return NULL;
}

typedef struct inproc_req {
    lg *g;
    size_t k;
    double t_sched;
} inproc_req;

static int kind_of_code(loom_serve_code c)
{
    switch (c) {
    case LOOM_SERVE_OK: return K_OK;
    case LOOM_SERVE_BAD_REQUEST: return K_400;
    case LOOM_SERVE_NOT_FOUND: return K_404;
    case LOOM_SERVE_QUEUE_FULL: case LOOM_SERVE_UNAVAILABLE: return K_503;
    case LOOM_SERVE_DEADLINE: return K_504;
    default: return K_500;
    }
}

static void inproc_done(loom_serve_result *r, void *user)
{
    inproc_req *q = user;
    record(q->g, q->k, now_s() - q->t_sched, r ? kind_of_code(r->code) : K_500);
    loom_serve_result_free(r);
    free(q);
}

static loom_serve_request inproc_request(lg *g, size_t k)
{
    loom_serve_request rq = {.struct_size = sizeof rq, .model = g->model,
                             .inputs = (const loom_tensor *const *)&g->tensors[(k % g->n_bodies) *
                                                                               g->n_in],
                             .n_inputs = g->n_in, .timeout_s = g->timeout_ms * 1e-3,
                             /* the bodies live, unchanged, until the run ends */
                             .borrow_inputs = 1};
    return rq;
}

static void *inproc_open(void *arg)
{
    lg *g = arg;
    for (;;) {
        size_t k = take_slot(g);
        if (k == SIZE_MAX)
            break;
        double t_sched = g->t0 + g->arrival[k];
        sleep_until(t_sched);
        inproc_req *q = malloc(sizeof *q);
        if (!q) {
            record(g, k, 0, K_500);
            continue;
        }
        *q = (inproc_req){g, k, t_sched};
        loom_serve_request rq = inproc_request(g, k);
        loom_serve_code code = loom_serve_submit(g->srv, &rq, inproc_done, q);
        if (code != LOOM_SERVE_OK) {
            free(q);
            record(g, k, now_s() - t_sched, kind_of_code(code));
        }
    }
    return NULL;
}

static void *inproc_closed(void *arg)
{
    lg *g = arg;
    sleep_until(g->t0);
    for (;;) {
        size_t k = take_slot(g);
        if (k == SIZE_MAX)
            break;
        double t = now_s();
        loom_serve_request rq = inproc_request(g, k);
        loom_serve_result *r = NULL;
        loom_serve_code code = loom_serve_infer(g->srv, &rq, &r);
        record(g, k, now_s() - t, kind_of_code(code));
        loom_serve_result_free(r);
    }
    return NULL;
}

/* A client thread: its nice value first (Linux keeps one per thread; the server's threads,
 * started before, keep theirs), then its loop. */
typedef struct client_start {
    lg *g;
    void *(*fn)(void *);
} client_start;

static void *client_main(void *arg)
{
    const client_start *cs = arg;
    if (cs->g->client_nice > 0) {
        /* Relative to loom's own: started at nice -10 (a benchmark given the machine), the
         * clients run at 0, ten levels below the server as by default (an absolute 10 would
         * be twenty levels and starve them). */
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
        int want = cur + cs->g->client_nice;
        if (errno == 0)
            setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), want > 19 ? 19 : want);
    }
    return cs->fn(cs->g);
}

typedef struct report {
    double target_rate, elapsed, qps;
    size_t sent, ok, kinds[N_KINDS];
    double p50, p95, p99, p999, max, mean;
    batch_hist batches;       /* deltas over the run */
} report;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p * (double)n) - 1;
    return v[i < n ? i : n - 1];
}

/* One run: open loop at RATE (> 0) or closed loop with CONCURRENCY clients. */
static int run_once(lg *g, double rate, int concurrency, double duration, size_t max_requests,
                    report *rep)
{
    memset(rep, 0, sizeof *rep);
    g->open = rate > 0;
    g->rate = rate;
    size_t cap;
    if (g->open) {
        cap = (size_t)ceil(rate * duration);
        if (max_requests && max_requests < cap)
            cap = max_requests;
    } else {
        cap = max_requests ? max_requests : 2000000;
    }
    if (cap == 0)
        cap = 1;
    g->n_slots = cap;
    g->lat = malloc(cap * sizeof *g->lat);
    g->kind = malloc(cap);
    g->arrival = g->open ? malloc(cap * sizeof *g->arrival) : NULL;
    if (!g->lat || !g->kind || (g->open && !g->arrival)) {
        free(g->lat);
        free(g->kind);
        free(g->arrival);
        lg_say("out of memory for %zu requests", cap);
        return 1;
    }
    memset(g->kind, 0xff, cap); /* not answered (yet) */
    if (g->open) {
        uint64_t s = 0x2545F4914F6CDD1Dull;
        double t = 0;
        for (size_t k = 0; k < cap; k++) {
            double u = ((double)(rnd(&s) >> 11) + 0.5) / 9007199254740992.0;
            t += g->poisson ? -log(u) / rate : 1.0 / rate;
            g->arrival[k] = t;
        }
        /* Poisson: the arrivals of a Poisson process of RATE conditioned on CAP of them in
         * CAP / RATE seconds (the partial sums of CAP + 1 exponential gaps over their total
         * are the sorted uniforms that conditioning gives). Without it the offered rate of a
         * short run is off by about 1/sqrt(CAP) (3% for 1000 requests), and --find-max-qps,
         * which wants 95% of the offered rate achieved, would fail good steps by chance. */
        if (g->poisson) {
            double u = ((double)(rnd(&s) >> 11) + 0.5) / 9007199254740992.0;
            double total = t - log(u) / rate, span = (double)cap / rate;
            for (size_t k = 0; k < cap; k++)
                g->arrival[k] = g->arrival[k] / total * span;
        } else {
            for (size_t k = 0; k < cap; k++)
                g->arrival[k] -= 1.0 / rate; /* evenly spaced from 0 */
        }
    }
    atomic_store(&g->next, 0);
    atomic_store(&g->sent, 0);
    atomic_store(&g->done, 0);
    atomic_store(&g->errors, 0);
    atomic_store(&g->stop, 0);
    atomic_store(&g->last_done_ns, 0);
    char *before = scrape(g);
    batch_hist hb, ha;
    parse_batch_hist(before, g->model, &hb);
    free(before);

    /* Open loop: one thread (over HTTP, it drives every connection); closed: one a client. */
    int n_threads = g->open ? 1 : concurrency;
    client_start cs = {g, g->open ? (g->http ? http_open_epoll : inproc_open)
                                  : (g->http ? http_client : inproc_closed)};
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    if (!th)
        return 1;
    g->t0 = now_s() + 0.01;
    g->t_end = g->t0 + duration;
    int started = 0;
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&th[i], NULL, client_main, &cs) != 0)
            break;
        started++;
    }
    /* Progress once a second while the clients run. */
    double last = now_s();
    while (atomic_load(&g->done) < (g->open ? cap : 0) || !atomic_load(&g->stop)) {
        if (!g->open && atomic_load(&g->stop))
            break;
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        double t = now_s();
        if (g->open && t > g->t0 + g->arrival[cap - 1] + 30) {
            atomic_store(&g->stop, 2); /* answers more than 30 s late: give up waiting */
            break;
        }
        if (!g->quiet && t - last >= 1.0) {
            last = t;
            size_t d = atomic_load(&g->done);
            fprintf(stderr, "\rloadgen: %5.1f s  %zu sent  %zu done  %zu errors  %.0f QPS   ",
                    t - g->t0, atomic_load(&g->sent), d, atomic_load(&g->errors),
                    (double)d / (t - g->t0));
        }
        if (g->open && atomic_load(&g->done) >= cap)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
    /* In-process open loop: answers may still be arriving. */
    size_t sent = atomic_load(&g->sent);
    double wait_end = now_s() + 30;
    while (atomic_load(&g->done) < sent && now_s() < wait_end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    double t_done = now_s();
    if (!g->quiet)
        fprintf(stderr, "\r%*s\r", 78, "");
    char *after = scrape(g);
    parse_batch_hist(after, g->model, &ha);
    free(after);

    size_t done = atomic_load(&g->done);
    rep->target_rate = rate;
    rep->sent = sent;
    double *ok = malloc((done ? done : 1) * sizeof *ok);
    size_t n_ok = 0;
    double sum = 0;
    for (size_t k = 0; k < sent && k < cap; k++) {
        if (g->kind[k] >= N_KINDS) {
            rep->kinds[K_IO]++; /* never answered */
            continue;
        }
        rep->kinds[g->kind[k]]++;
        if (g->kind[k] == K_OK && ok) {
            ok[n_ok++] = g->lat[k];
            sum += g->lat[k];
        }
    }
    rep->ok = n_ok;
    rep->elapsed = (double)atomic_load(&g->last_done_ns) * 1e-9;
    if (g->open && sent && g->arrival[sent - 1] > rep->elapsed)
        rep->elapsed = g->arrival[sent - 1];
    (void)t_done;
    rep->qps = rep->elapsed > 0 ? (double)n_ok / rep->elapsed : 0;
    if (ok && n_ok) {
        qsort(ok, n_ok, sizeof *ok, cmp_double);
        rep->p50 = pct(ok, n_ok, 0.50);
        rep->p95 = pct(ok, n_ok, 0.95);
        rep->p99 = pct(ok, n_ok, 0.99);
        rep->p999 = pct(ok, n_ok, 0.999);
        rep->max = ok[n_ok - 1];
        rep->mean = sum / (double)n_ok;
    }
    free(ok);
    rep->batches.found = ha.found;
    for (int k = 0; k < N_BUCKETS; k++)
        rep->batches.cum[k] = ha.cum[k] - hb.cum[k];
    rep->batches.sum = ha.sum - hb.sum;
    rep->batches.count = ha.count - hb.count;
    free(g->lat);
    free(g->kind);
    free(g->arrival);
    g->lat = NULL;
    g->kind = NULL;
    g->arrival = NULL;
    return 0;
}

static json_t *report_json(const report *r)
{
    json_t *errs = json_object();
    for (int k = 1; k < N_KINDS; k++)
        if (r->kinds[k])
            json_object_set_new(errs, kind_names[k], json_integer((json_int_t)r->kinds[k]));
    json_t *b = json_object();
    double prev = 0;
    for (int k = 0; k < N_BUCKETS; k++) {
        double n = r->batches.cum[k] - prev;
        prev = r->batches.cum[k];
        if (n > 0)
            json_object_set_new(b, bucket_les[k], json_integer((json_int_t)n));
    }
    return json_pack("{s:f,s:f,s:f,s:I,s:I,s:o,s:{s:f,s:f,s:f,s:f,s:f,s:f},s:o,s:f}",
                     "target_qps", r->target_rate, "achieved_qps", r->qps, "seconds", r->elapsed,
                     "sent", (json_int_t)r->sent, "ok", (json_int_t)r->ok, "errors", errs,
                     "latency_ms", "p50", r->p50 * 1e3, "p95", r->p95 * 1e3, "p99",
                     r->p99 * 1e3, "p99.9", r->p999 * 1e3, "max", r->max * 1e3, "mean",
                     r->mean * 1e3, "batch_sizes", b, "mean_batch",
                     r->batches.count > 0 ? r->batches.sum / r->batches.count : 0.0);
}

static void report_print(const report *r, const char *what)
{
    printf("%s\n", what);
    size_t errors = r->sent - r->kinds[K_OK];
    printf("  requests    %zu sent, %zu ok, %zu errors", r->sent, r->ok, errors);
    if (errors) {
        printf(" (");
        int first = 1;
        for (int k = 1; k < N_KINDS; k++)
            if (r->kinds[k]) {
                printf("%s%s: %zu", first ? "" : ", ", kind_names[k], r->kinds[k]);
                first = 0;
            }
        printf(")");
    }
    printf("\n  achieved    %.1f QPS over %.2f s", r->qps, r->elapsed);
    if (r->target_rate > 0)
        printf(" (offered %.1f)", r->target_rate);
    printf("\n  latency ms  p50 %.3f  p95 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n",
           r->p50 * 1e3, r->p95 * 1e3, r->p99 * 1e3, r->p999 * 1e3, r->max * 1e3, r->mean * 1e3);
    if (r->batches.found && r->batches.count > 0) {
        printf("  batches     %.0f, mean %.2f rows:", r->batches.count,
               r->batches.sum / r->batches.count);
        double prev = 0;
        for (int k = 0; k < N_BUCKETS; k++) {
            double n = r->batches.cum[k] - prev;
            prev = r->batches.cum[k];
            if (n > 0)
                printf("  <=%s: %.0f", bucket_les[k], n);
        }
        printf("\n");
    }
}

/* ---- the command ------------------------------------------------------------------------- */

static int parse_url(lg *g, const char *url, const char *model_opt)
{
    const char *p = url + 7; /* after http:// */
    const char *slash = strchr(p, '/');
    size_t hp = slash ? (size_t)(slash - p) : strlen(p);
    char hostport[256];
    if (hp == 0 || hp >= sizeof hostport)
        return -1;
    memcpy(hostport, p, hp);
    hostport[hp] = '\0';
    char *colon = strrchr(hostport, ':');
    if (hostport[0] == '[') {
        char *rb = strchr(hostport, ']');
        if (!rb)
            return -1;
        *rb = '\0';
        snprintf(g->host, sizeof g->host, "%s", hostport + 1);
        snprintf(g->port, sizeof g->port, "%s", rb[1] == ':' ? rb + 2 : "80");
    } else if (colon) {
        *colon = '\0';
        snprintf(g->host, sizeof g->host, "%s", hostport);
        snprintf(g->port, sizeof g->port, "%s", colon + 1);
    } else {
        snprintf(g->host, sizeof g->host, "%s", hostport);
        snprintf(g->port, sizeof g->port, "80");
    }
    const char *path = slash ? slash : "";
    char name[256] = "", version[64] = "";
    if (!strncmp(path, "/v2/models/", 11)) {
        const char *n = path + 11;
        size_t nl = strcspn(n, "/");
        if (nl == 0 || nl >= sizeof name)
            return -1;
        memcpy(name, n, nl);
        const char *rest = n + nl;
        if (!strncmp(rest, "/versions/", 10)) {
            size_t vl = strcspn(rest + 10, "/");
            if (vl == 0 || vl >= sizeof version)
                return -1;
            memcpy(version, rest + 10, vl);
        }
    } else if (*path && strcmp(path, "/")) {
        return -1;
    }
    if (model_opt)
        snprintf(name, sizeof name, "%s", model_opt);
    if (!*name)
        return -1;
    snprintf(g->model, sizeof g->model, "%s", name);
    snprintf(g->version, sizeof g->version, "%s", version);
    if (*version)
        snprintf(g->path, sizeof g->path, "/v2/models/%s/versions/%s/infer", name, version);
    else
        snprintf(g->path, sizeof g->path, "/v2/models/%s/infer", name);
    return 0;
}

static int parse_num(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= min && v <= max))
        return 0;
    *out = v;
    return 1;
}

int cmd_loadgen(int argc, char **argv)
{
    const char *target = NULL, *model_opt = NULL, *trace_path = NULL;
    double rate = 0, duration = -1, p99_ms = 0, requests = 0, concurrency = 0, rows = 1,
           distinct = 256, connections = 64, timeout_ms = 0, max_batch = 8, latency_ms = 50,
           cache_mb = 0, workers = 2, client_nice = 10;
    int constant = 0, find_max = 0, json = 0, binary = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(loadgen_help, stdout);
            fputs(tool_backend_option_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--constant")) { constant = 1; continue; }
        if (!strcmp(a, "--find-max-qps")) { find_max = 1; continue; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--binary")) { binary = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (a[0] != '-') {
            if (target)
                return lg_usage("more than one target: '%s' and '%s'", target, a);
            target = a;
            continue;
        }
        if (i + 1 >= argc)
            return lg_usage("option %s needs a value", a);
        const char *v = argv[++i];
        struct {
            const char *flag;
            double *dst, min, max;
        } nums[] = {
            {"--rate", &rate, 0.001, 1e7},           {"--duration", &duration, 0.01, 86400},
            {"--p99", &p99_ms, 0.001, 1e6},          {"--requests", &requests, 1, 1e9},
            {"--concurrency", &concurrency, 1, 4096}, {"--batch", &rows, 1, 256},
            {"--distinct", &distinct, 1, 100000},    {"--connections", &connections, 1, 4096},
            {"--timeout-ms", &timeout_ms, 0.001, 1e7}, {"--max-batch", &max_batch, 1, 256},
            {"--latency-ms", &latency_ms, 1, 1e6},   {"--cache-mb", &cache_mb, 0, 1 << 20},
            {"--workers", &workers, 1, 256},         {"--client-nice", &client_nice, 0, 19},
        };
        int found = 0;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++)
            if (!strcmp(a, nums[k].flag)) {
                if (!parse_num(v, nums[k].min, nums[k].max, nums[k].dst))
                    return lg_usage("%s wants a number from %g to %g, got '%s'", a, nums[k].min,
                                    nums[k].max, v);
                found = 1;
            }
        if (!strcmp(a, "--model")) {
            model_opt = v;
            found = 1;
        }
        if (!strcmp(a, "--trace")) {
            trace_path = v;
            found = 1;
        }
        if (!found)
            return lg_usage("unknown option '%s'", a);
    }
    if (!target)
        return lg_usage("%s", "no target: a URL (http://...) or MODEL.onnx");
    if (!find_max && (rate > 0) == (concurrency > 0))
        return lg_usage("%s", "give exactly one of --rate QPS and --concurrency N");
    if (find_max && p99_ms <= 0)
        return lg_usage("%s", "--find-max-qps needs --p99 MS");
    if (duration < 0)
        duration = find_max ? 5 : 10;

    lg *g = calloc(1, sizeof *g);
    if (!g)
        return 1;
    g->poisson = !constant;
    g->connections = (int)connections;
    g->client_nice = (int)client_nice;
    g->quiet = quiet || json;
    g->timeout_ms = timeout_ms;
    int rc = 0;
    if (!strncmp(target, "http://", 7)) {
        g->http = 1;
        if (parse_url(g, target, model_opt) != 0) {
            free(g);
            return lg_usage("cannot read the URL '%s' (http://HOST:PORT/v2/models/NAME, or "
                            "http://HOST:PORT with --model NAME)", target);
        }
        hconn c = {.fd = -1};
        char meta_path[700], *meta_text = NULL;
        int st = 0;
        if (*g->version)
            snprintf(meta_path, sizeof meta_path, "/v2/models/%s/versions/%s", g->model,
                     g->version);
        else
            snprintf(meta_path, sizeof meta_path, "/v2/models/%s", g->model);
        if (hc_request(g, &c, "GET", meta_path, NULL, &st, &meta_text) != 0) {
            lg_say("cannot reach %s:%s", g->host, g->port);
            free(g);
            return 1;
        }
        hc_close(&c);
        json_t *meta = st == 200 ? json_loads(meta_text, 0, NULL) : NULL;
        free(meta_text);
        if (!meta) {
            lg_say("GET %s answered %d: no metadata for model '%s'", meta_path, st, g->model);
            free(g);
            return st == 404 ? 2 : 1;
        }
        if (make_bodies(g, meta, (int)rows, (size_t)distinct, binary) != 0) {
            json_decref(meta);
            lg_say("cannot make requests for model '%s' (inputs of a datatype loadgen cannot "
                   "fill?)", g->model);
            free(g);
            return 1;
        }
        json_decref(meta);
    } else {
        snprintf(g->model, sizeof g->model, "%s", model_opt ? model_opt : "model");
        loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = (uint32_t)max_batch,
                                       .latency_target_s = latency_ms * 1e-3,
                                       .cache_bytes = (size_t)cache_mb << 20, .warm = 1};
        if (tool_cpu_threads_auto()) { /* as loom serve: measure, then serve (serve_lanes.h) */
            char why[2048];
            serve_lanes_model lm = {target, &mo};
            tool_cpu_threads_set(serve_pick_cpu_threads(&lm, 1, why, sizeof why));
            lg_say("%s", why); /* even when quiet: the figures depend on it */
        }
        loom_status rst = tool_runtime_create(NULL, &g->rt);
        if (rst != LOOM_OK) {
            lg_say("cannot start the runtime: %s", loom_last_error());
            free(g);
            return tool_runtime_exit_status(rst);
        }
        loom_server_options so = {.struct_size = sizeof so, .workers = (uint32_t)workers,
                                  .trace_path = trace_path};
        loom_status st = loom_server_create(g->rt, &so, &g->srv);
        if (st == LOOM_OK)
            st = loom_server_add_onnx(g->srv, g->model, target, &mo);
        if (st != LOOM_OK || make_tensors(g, (int)rows, (size_t)distinct) != 0) {
            lg_say("%s", st != LOOM_OK ? loom_serve_last_error() : "cannot make inputs");
            rc = st == LOOM_ERR_INVALID_ARGUMENT || st == LOOM_ERR_IO ? 2 : 1;
        }
    }
    char what[1024];
    report rep;
    if (rc == 0 && find_max) {
        /* The ceiling first: a closed loop with enough clients to keep every worker busy. */
        report probe;
        snprintf(what, sizeof what, "probe");
        rc = run_once(g, 0, 16, duration, 0, &probe);
        double hi = probe.qps * 1.3, lo = 0, best = 0;
        report best_rep = probe;
        int have_best = 0;
        json_t *steps = json_array();
        for (int step = 0; rc == 0 && step < 7 && hi > 0.1; step++) {
            double mid = step == 0 ? probe.qps * 0.9 : (lo + hi) / 2;
            rc = run_once(g, mid, 0, duration, (size_t)requests, &rep);
            size_t errors = rep.sent - rep.kinds[K_OK];
            int pass = rep.p99 * 1e3 <= p99_ms && errors * 1000 <= rep.sent &&
                       rep.qps >= 0.95 * mid;
            if (!g->quiet)
                fprintf(stderr, "loadgen: %.1f QPS offered: %.1f achieved, p99 %.2f ms, %zu "
                        "errors: %s\n", mid, rep.qps, rep.p99 * 1e3, errors,
                        pass ? "meets" : "misses");
            json_array_append_new(steps, report_json(&rep));
            if (pass) {
                lo = mid;
                if (mid > best) {
                    best = mid;
                    best_rep = rep;
                    have_best = 1;
                }
            } else {
                hi = mid;
            }
        }
        if (json) {
            json_t *o = json_pack("{s:s,s:f,s:f,s:f,s:o,s:o}", "mode", "find-max-qps",
                                  "p99_target_ms", p99_ms, "closed_loop_qps", probe.qps,
                                  "max_qps", best, "at_max",
                                  have_best ? report_json(&best_rep) : json_null(), "steps",
                                  steps);
            char *s = json_dumps(o, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(o);
        } else {
            json_decref(steps);
            printf("closed loop (16 clients): %.1f QPS, p99 %.2f ms\n", probe.qps,
                   probe.p99 * 1e3);
            snprintf(what, sizeof what, "max QPS with p99 <= %g ms: %.1f", p99_ms, best);
            if (have_best)
                report_print(&best_rep, what);
            else
                printf("%s (no rate met the target)\n", what);
        }
    } else if (rc == 0) {
        rc = run_once(g, rate, (int)concurrency, duration, (size_t)requests, &rep);
        if (json) {
            json_t *o = report_json(&rep);
            json_object_set_new(o, "mode", json_string(rate > 0 ? (constant ? "constant"
                                                                              : "poisson")
                                                                 : "closed"));
            if (concurrency > 0)
                json_object_set_new(o, "concurrency", json_integer((json_int_t)concurrency));
            char *s = json_dumps(o, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(o);
        } else {
            if (rate > 0)
                snprintf(what, sizeof what, "open loop, %s arrivals at %g QPS, %s%s",
                         constant ? "constant" : "Poisson", rate, g->http ? g->path : target,
                         g->http ? "" : " (in-process)");
            else
                snprintf(what, sizeof what, "closed loop, %g clients, %s%s", concurrency,
                         g->http ? g->path : target, g->http ? "" : " (in-process)");
            report_print(&rep, what);
        }
    }
    for (size_t b = 0; g->bodies && b < g->n_bodies; b++)
        free(g->bodies[b].data);
    free(g->bodies);
    loom_server_destroy(g->srv);
    for (size_t k = 0; g->tensors && k < g->n_bodies * g->n_in; k++)
        loom_tensor_destroy(g->tensors[k]);
    free(g->tensors);
    loom_runtime_destroy(g->rt);
    free(g);
    return rc;
}
