/*
 * The HTTP front end on libmicrohttpd: the KServe v2 / Open Inference Protocol endpoints
 * (health, server and model metadata, readiness, infer with JSON or binary tensors) and GET
 * /metrics. An infer request is parsed once its body is in, submitted to the server, and its
 * connection suspended until the answer arrives from a worker (or answered at once on a cache
 * hit), so that thousands of waiting connections cost no threads.
 */
#include "serve_internal.h"

#include <loom/loom.h>

#include <jansson.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* How far beyond the body limit a body already on its way is still read (and dropped) so
 * that its sender receives the 413; a larger one is refused at once (see the access handler). */
#define LINGER_MAX ((unsigned long long)64 << 20)

struct loom_serve_http {
    loom_server *server;
    struct MHD_Daemon *daemon;
    uint16_t port;
    size_t max_body;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long inflight;           /* infer requests submitted whose response is not yet queued */
    long active;             /* requests begun (headers read) and not yet completed */
    long fresh;              /* connections open whose first request has not begun */
    int draining;            /* set once, under MU; read without it by atomic loads */
    MHD_socket listen_fd;    /* handed back by MHD_quiesce_daemon; closed at stop */
};

/* Each connection's own context (MHD's socket context): its front end, and whether its first
 * request has yet to begin (the stop waits for those: see loom_serve_http_stop). */
typedef struct sock_ctx {
    loom_serve_http *h;
    int fresh;
} sock_ctx;

/* C's socket context (NULL when it could not be allocated). */
static sock_ctx *sock_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

typedef struct conn {
    loom_serve_http *h;
    char *body;
    size_t len, cap;
    int too_big;
    int started;             /* the request was routed (and maybe submitted) */
    int counted;             /* counted in H->INFLIGHT until its response is queued */
    /* Between the submitting thread and the worker that answers. */
    pthread_mutex_t mu;
    int done, suspended;
    loom_serve_result *result;
    sv_parsed parsed;
    struct MHD_Connection *connection;
} conn;

/* ---- responses --------------------------------------------------------------------------- */

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                                 const char *type, size_t header_len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (header_len) {
        char v[32];
        snprintf(v, sizeof v, "%zu", header_len);
        MHD_add_response_header(r, "Inference-Header-Content-Length", v);
    }
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    /* While draining, each answer closes its connection: the stop waits for requests, not for
     * idle keep-alive connections. */
    sock_ctx *sc = sock_of(c);
    loom_serve_http *h = sc ? sc->h : NULL;
    if (h && __atomic_load_n(&h->draining, __ATOMIC_ACQUIRE))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return MHD_NO;
    return send_body(c, status, s, strlen(s), "application/json", 0);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return send_json(c, status, json_pack("{s:s}", "error", msg));
}

/* 413: the request body is over --max-body. */
static enum MHD_Result send_too_large(struct MHD_Connection *c)
{
    return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is over the limit");
}

static unsigned status_of(loom_serve_code code)
{
    switch (code) {
    case LOOM_SERVE_OK: return MHD_HTTP_OK;
    case LOOM_SERVE_BAD_REQUEST: return MHD_HTTP_BAD_REQUEST;
    case LOOM_SERVE_NOT_FOUND: return MHD_HTTP_NOT_FOUND;
    case LOOM_SERVE_QUEUE_FULL: return MHD_HTTP_SERVICE_UNAVAILABLE;
    case LOOM_SERVE_UNAVAILABLE: return MHD_HTTP_SERVICE_UNAVAILABLE;
    case LOOM_SERVE_DEADLINE: return MHD_HTTP_GATEWAY_TIMEOUT;
    case LOOM_SERVE_FAILED: return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

static void inflight_done(loom_serve_http *h, conn *cx)
{
    pthread_mutex_lock(&h->mu);
    if (!cx->counted) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    cx->counted = 0;
    if (--h->inflight == 0)
        pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* The answer of an infer request, as HTTP. */
static enum MHD_Result send_result(conn *cx)
{
    loom_serve_result *r = cx->result;
    enum MHD_Result ret;
    if (!r) {
        ret = send_error(cx->connection, 500, "out of memory");
    } else if (r->code != LOOM_SERVE_OK) {
        ret = send_error(cx->connection, status_of(r->code), r->message);
    } else {
        char *body;
        size_t len, header_len;
        char err[512];
        if (sv_kserve_response(r, &cx->parsed, &body, &len, &header_len, err, sizeof err) != 0)
            ret = send_error(cx->connection, strstr(err, "no output named") ? 400 : 500, err);
        else
            ret = send_body(cx->connection, 200, body, len,
                            header_len ? "application/octet-stream" : "application/json",
                            header_len);
    }
    loom_serve_result_free(r);
    cx->result = NULL;
    inflight_done(cx->h, cx);
    return ret;
}

static void infer_done(loom_serve_result *result, void *user)
{
    conn *cx = user;
    pthread_mutex_lock(&cx->mu);
    cx->result = result;
    cx->done = 1;
    if (cx->suspended) {
        cx->suspended = 0;
        MHD_resume_connection(cx->connection);
    }
    pthread_mutex_unlock(&cx->mu);
}

/* ---- endpoints --------------------------------------------------------------------------- */

static json_t *tensor_list(const loom_serve_tensor_info *t, size_t n)
{
    json_t *a = json_array();
    for (size_t k = 0; k < n; k++) {
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t[k].rank; d++)
            json_array_append_new(shape, json_integer(t[k].dims[d]));
        const char *dtn = sv_kserve_dtype_name(t[k].dtype);
        json_array_append_new(a, json_pack("{s:s,s:s,s:o}", "name", t[k].name, "datatype",
                                           dtn ? dtn : "FP32", "shape", shape));
    }
    return a;
}

static enum MHD_Result model_metadata(loom_serve_http *h, struct MHD_Connection *c,
                                      const char *name, const char *version)
{
    const char *canonical;
    if (!sv_server_find_model(h->server, name, version, &canonical, NULL))
        return send_error(c, 404, version ? "unknown model or version" : "unknown model");
    loom_serve_tensor_info in[64], out[64];
    size_t ni = loom_server_model_inputs(h->server, name, canonical, in, 64);
    size_t no = loom_server_model_outputs(h->server, name, canonical, out, 64);
    json_t *versions = json_array();
    for (size_t i = 0; i < loom_server_model_count(h->server); i++)
        if (!strcmp(loom_server_model_name(h->server, i), name))
            json_array_append_new(versions, json_string(loom_server_model_version(h->server, i)));
    return send_json(c, 200, json_pack("{s:s,s:o,s:s,s:o,s:o}", "name", name, "versions",
                                       versions, "platform", "loom", "inputs",
                                       tensor_list(in, ni < 64 ? ni : 64), "outputs",
                                       tensor_list(out, no < 64 ? no : 64)));
}

/* Parse and submit an infer request; answers at once or suspends the connection. */
static enum MHD_Result infer(loom_serve_http *h, conn *cx, const char *name, const char *version)
{
    struct MHD_Connection *c = cx->connection;
    const char *canonical;
    uint32_t max_batch;
    if (!sv_server_find_model(h->server, name, version, &canonical, &max_batch)) {
        sv_server_count_refusal(h->server, name, LOOM_SERVE_NOT_FOUND);
        return send_error(c, 404, version ? "unknown model or version" : "unknown model");
    }
    if (cx->too_big) {
        sv_server_count_refusal(h->server, name, LOOM_SERVE_BAD_REQUEST);
        return send_too_large(c);
    }
    size_t header_len = 0;
    const char *hl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 "Inference-Header-Content-Length");
    if (hl) {
        char *end;
        unsigned long long v = strtoull(hl, &end, 10);
        if (!*hl || *end || hl[0] == '-' || v == 0 || v > cx->len) {
            sv_server_count_refusal(h->server, name, LOOM_SERVE_BAD_REQUEST);
            return send_error(c, 400, "Inference-Header-Content-Length is not a length within "
                              "the body");
        }
        header_len = (size_t)v;
    }
    loom_serve_tensor_info in[64];
    size_t ni = loom_server_model_inputs(h->server, name, canonical, in, 64);
    char err[512];
    if (sv_kserve_parse(cx->body ? cx->body : "", cx->len, header_len, in, ni < 64 ? ni : 64,
                        &cx->parsed, err, sizeof err) != 0) {
        sv_server_count_refusal(h->server, name, LOOM_SERVE_BAD_REQUEST);
        return send_error(c, 400, err);
    }
    /* Outputs asked for must exist: checked now so a bad name is a 400 before running. */
    if (cx->parsed.n_outputs) {
        loom_serve_tensor_info out[64];
        size_t no = loom_server_model_outputs(h->server, name, canonical, out, 64);
        for (size_t k = 0; k < cx->parsed.n_outputs; k++) {
            size_t j;
            for (j = 0; j < no && j < 64 && strcmp(out[j].name, cx->parsed.output_names[k]); j++)
                ;
            if (j == no || j == 64) {
                snprintf(err, sizeof err, "the model has no output named '%s'",
                         cx->parsed.output_names[k]);
                sv_server_count_refusal(h->server, name, LOOM_SERVE_BAD_REQUEST);
                return send_error(c, 400, err);
            }
        }
    }
    free(cx->body);
    cx->body = NULL;
    pthread_mutex_lock(&h->mu);
    int draining = h->draining;
    if (!draining) {
        h->inflight++;
        cx->counted = 1;
    }
    pthread_mutex_unlock(&h->mu);
    if (draining) {
        sv_server_count_refusal(h->server, name, LOOM_SERVE_UNAVAILABLE);
        return send_error(c, 503, "the server is shutting down");
    }
    loom_serve_request rq = {.struct_size = sizeof rq, .model = name, .version = canonical,
                             .id = cx->parsed.id,
                             .inputs = (const loom_tensor *const *)cx->parsed.inputs,
                             .input_names = (const char *const *)cx->parsed.input_names,
                             .n_inputs = cx->parsed.n_inputs,
                             .timeout_s = cx->parsed.timeout_s,
                             .priority = cx->parsed.priority,
                             .variant = cx->parsed.variant,
                             /* The parsed tensors live in CX until the request completes,
                              * which is after the answer (a suspended connection is not
                              * closed): the server uses them in place. */
                             .borrow_inputs = 1};
    loom_serve_code code = loom_serve_submit(h->server, &rq, infer_done, cx);
    if (code != LOOM_SERVE_OK) {
        inflight_done(h, cx);
        return send_error(c, status_of(code), loom_serve_last_error());
    }
    pthread_mutex_lock(&cx->mu);
    if (cx->done) {
        pthread_mutex_unlock(&cx->mu);
        return send_result(cx);
    }
    cx->suspended = 1;
    MHD_suspend_connection(c);
    pthread_mutex_unlock(&cx->mu);
    return MHD_YES;
}

/* Split URL into at most 6 path segments (modified in place in BUF). */
static size_t segments(char *buf, char **seg)
{
    size_t n = 0;
    char *save = NULL; /* strtok_r: with --http-threads, several threads route at once */
    for (char *s = strtok_r(buf, "/", &save); s && n < 7; s = strtok_r(NULL, "/", &save))
        seg[n++] = s;
    return n;
}

static enum MHD_Result route(loom_serve_http *h, conn *cx, struct MHD_Connection *c,
                             const char *url, const char *method)
{
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int post = !strcmp(method, "POST");
    char buf[1024];
    if (strlen(url) >= sizeof buf)
        return send_error(c, 404, "no such endpoint");
    strcpy(buf, url);
    char *seg[7];
    size_t n = segments(buf, seg);
    /* A body over the limit gets 413 at every endpoint (infer's own check also counts it
     * against the model, after a 404 for an unknown one). */
    if (cx->too_big && !(n >= 4 && !strcmp(seg[n - 1], "infer")))
        return send_too_large(c);
    if (n == 1 && !strcmp(seg[0], "metrics")) {
        if (!get)
            return send_error(c, 405, "GET /metrics");
        char *text;
        if (loom_server_metrics_text(h->server, &text) != LOOM_OK)
            return send_error(c, 500, loom_serve_last_error());
        return send_body(c, 200, text, strlen(text), "text/plain; version=0.0.4; charset=utf-8",
                         0);
    }
    if (n == 0 || strcmp(seg[0], "v2"))
        return send_error(c, 404, "no such endpoint");
    if (n == 1) {
        if (!get)
            return send_error(c, 405, "GET /v2");
        return send_json(c, 200, json_pack("{s:s,s:s,s:[s]}", "name", "loom", "version",
                                           loom_version(), "extensions", "binary_tensor_data"));
    }
    if (!strcmp(seg[1], "health") && n == 3) {
        if (!get)
            return send_error(c, 405, "GET /v2/health/live|ready");
        if (!strcmp(seg[2], "live"))
            return send_json(c, 200, json_pack("{s:b}", "live", 1));
        if (!strcmp(seg[2], "ready")) {
            int ready = sv_server_accepting(h->server) &&
                        !__atomic_load_n(&h->draining, __ATOMIC_ACQUIRE);
            return send_json(c, ready ? 200 : 503, json_pack("{s:b}", "ready", ready));
        }
        return send_error(c, 404, "no such endpoint");
    }
    if (strcmp(seg[1], "models") || n < 3)
        return send_error(c, 404, "no such endpoint");
    const char *name = seg[2], *version = NULL;
    size_t k = 3;
    if (n >= 5 && !strcmp(seg[3], "versions")) {
        version = seg[4];
        k = 5;
    }
    if (n == k) {
        if (!get)
            return send_error(c, 405, "GET for model metadata");
        return model_metadata(h, c, name, version);
    }
    if (n == k + 1 && !strcmp(seg[k], "ready")) {
        if (!get)
            return send_error(c, 405, "GET for model readiness");
        if (!sv_server_find_model(h->server, name, version, NULL, NULL))
            return send_error(c, 404, "unknown model");
        int ready = sv_server_accepting(h->server) &&
                        !__atomic_load_n(&h->draining, __ATOMIC_ACQUIRE);
        return send_json(c, ready ? 200 : 503, json_pack("{s:s,s:b}", "name", name, "ready",
                                                         ready));
    }
    if (n == k + 1 && !strcmp(seg[k], "infer")) {
        if (!post)
            return send_error(c, 405, "POST to infer");
        return infer(h, cx, name, version);
    }
    return send_error(c, 404, "no such endpoint");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *http_version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)http_version;
    loom_serve_http *h = cls;
    conn *cx = *con_cls;
    if (!cx) {
        cx = calloc(1, sizeof *cx);
        if (!cx)
            return MHD_NO;
        cx->h = h;
        cx->connection = c;
        pthread_mutex_init(&cx->mu, NULL);
        *con_cls = cx;
        sock_ctx *sc = sock_of(c);
        pthread_mutex_lock(&h->mu);
        h->active++;
        if (sc && sc->fresh) {
            sc->fresh = 0;
            h->fresh--;
        }
        pthread_mutex_unlock(&h->mu);
        /* A body announced over the limit is refused before it is read when the client
         * waits for "100 Continue" (it then never sends the body) or announces more than
         * LINGER_MAX beyond the limit. Otherwise the client is already sending it, and
         * answering at once would close the socket with the body unread: the kernel then
         * resets the connection and the client may lose the 413 it was sent. So that body is
         * read and dropped (the too_big path below) and the 413 follows it. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long announced = cl ? strtoull(cl, NULL, 10) : 0;
        if (announced > h->max_body) {
            const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_EXPECT);
            if ((expect && !strcasecmp(expect, "100-continue")) ||
                announced - h->max_body > LINGER_MAX) {
                cx->started = 1;
                return send_too_large(c);
            }
            cx->too_big = 1;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cx->too_big || cx->len + n > h->max_body) {
            cx->too_big = 1;
            free(cx->body);
            cx->body = NULL;
            cx->len = cx->cap = 0;
            return MHD_YES;
        }
        if (cx->len + n + 1 > cx->cap) {
            size_t cap = cx->cap ? cx->cap : 4096;
            while (cap < cx->len + n + 1)
                cap *= 2;
            char *nb = realloc(cx->body, cap);
            if (!nb)
                return MHD_NO;
            cx->body = nb;
            cx->cap = cap;
        }
        memcpy(cx->body + cx->len, upload_data, n);
        cx->len += n;
        return MHD_YES;
    }
    if (cx->started) {
        /* Resumed: the answer is in. */
        pthread_mutex_lock(&cx->mu);
        int done = cx->done;
        pthread_mutex_unlock(&cx->mu);
        if (done != 1)
            return MHD_YES;
        cx->done = 2;
        return send_result(cx);
    }
    cx->started = 1;
    return route(h, cx, c, url, method);
}

/* Each connection knows its front end (for the responses' Connection header) and is counted
 * as fresh until its first request begins or it closes. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)c;
    loom_serve_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        sock_ctx *sc = malloc(sizeof *sc);
        *socket_context = sc; /* NULL without memory: only the Connection header is lost */
        if (!sc)
            return;
        sc->h = h;
        sc->fresh = 1;
        pthread_mutex_lock(&h->mu);
        h->fresh++;
        pthread_mutex_unlock(&h->mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        sock_ctx *sc = *socket_context;
        if (sc && sc->fresh) {
            pthread_mutex_lock(&h->mu);
            h->fresh--;
            pthread_mutex_unlock(&h->mu);
        }
        free(sc);
        *socket_context = NULL;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    conn *cx = *con_cls;
    if (!cx)
        return;
    /* A connection closed while its request waited for an answer (the client went away):
     * the answer still arrives, since suspended connections are not closed by MHD; it is
     * freed here only after the callback has run. */
    if (cx->counted)
        inflight_done(cx->h, cx);
    pthread_mutex_lock(&cx->h->mu);
    cx->h->active--;
    pthread_mutex_unlock(&cx->h->mu);
    sv_parsed_free(&cx->parsed);
    loom_serve_result_free(cx->result);
    free(cx->body);
    pthread_mutex_destroy(&cx->mu);
    free(cx);
    *con_cls = NULL;
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* The default connection limit: 16,384, or what the process's descriptor limit leaves after a
 * reserve for the server's own files (models, the audit database, plugins, logs). Idle
 * connections beyond the limit would wait in the kernel's accept queue and with them every new
 * client, so the limit is set as high as descriptors allow. */
static unsigned default_max_connections(void)
{
    struct rlimit rl;
    unsigned cap = 16384;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        rlim_t avail = rl.rlim_cur > 256 ? rl.rlim_cur - 128 : rl.rlim_cur / 2;
        if (avail < cap)
            cap = avail > 16 ? (unsigned)avail : 16;
    }
    return cap;
}

loom_status loom_serve_http_start(loom_server *server, const loom_serve_http_options *options,
                                  loom_serve_http **out)
{
    *out = NULL;
    loom_serve_http_options o = {.struct_size = sizeof o};
    if (options)
        memcpy(&o, options, options->struct_size < sizeof o ? options->struct_size : sizeof o);
    const char *host = o.host ? o.host : "127.0.0.1";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", o.port);
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "cannot resolve the host '%s'", host);
    loom_serve_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    h->server = server;
    h->max_body = o.max_body_bytes ? o.max_body_bytes : (size_t)64 << 20;
    h->listen_fd = MHD_INVALID_SOCKET;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = o.threads ? o.threads : 1;
    unsigned max_conn = o.max_connections ? o.max_connections : default_max_connections();
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, max_conn,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(o.idle_timeout_s ? o.idle_timeout_s : 60),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0u,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        free(h);
        return sv_error(LOOM_ERR_IO, "cannot listen on %s port %u (in use, or not an address "
                        "of this machine)", host, o.port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o.port;
    *out = h;
    return LOOM_OK;
}

uint16_t loom_serve_http_port(const loom_serve_http *h)
{
    return h->port;
}

/* After MHD_quiesce_daemon, the listening socket FD is ours: answer every connection still
 * waiting in its backlog with a short 503 and close it. Each client may still be sending its
 * request: closing a socket with unread data makes the kernel reset the connection, and the
 * reset can reach the client before it has read the 503 (curl then reports a send or receive
 * failure instead of the answer). So the 503 is sent and the sending side shut, and what the
 * clients send is read and dropped until each closes its side, for at most half a second in
 * all, before the sockets are closed. FD, the listening socket, is closed here, right after
 * the backlog is taken. */
#define BACKLOG_MAX 4096
static void refuse_backlog(MHD_socket fd)
{
    static const char body[] = "{\"error\":\"the server is shutting down\"}\n";
    if (fd == MHD_INVALID_SOCKET)
        return;
    /* The length is counted, not written by hand (a hand-written 41 for these 40 bytes once
     * left every refused client waiting for a byte that never came: curl's "partial file"). */
    char reply[256];
    int len = snprintf(reply, sizeof reply, "HTTP/1.1 503 Service Unavailable\r\n"
                       "Connection: close\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    int fl = fcntl(fd, F_GETFL, 0);
    if (len <= 0 || (size_t)len >= sizeof reply || fl < 0 ||
        fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        close(fd);
        return;
    }
    struct pollfd *open_ = malloc(BACKLOG_MAX * sizeof *open_);
    nfds_t n = 0;
    for (int k = 0; k < BACKLOG_MAX; k++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            break;
        ssize_t w = send(c, reply, (size_t)len, MSG_NOSIGNAL);
        (void)w;
        shutdown(c, SHUT_WR);
        if (!open_) {
            close(c); /* no room to wait for it: closed at once */
            continue;
        }
        open_[n].fd = c;
        open_[n].events = POLLIN;
        n++;
    }
    /* No more connections: from now on a client is refused (not queued and then reset when
     * the socket closes after the wait below). */
    close(fd);
    double end = sv_now() + 0.5;
    nfds_t left = n;
    while (left > 0) {
        int ms = (int)((end - sv_now()) * 1e3);
        if (ms <= 0 || poll(open_, n, ms) <= 0)
            break;
        for (nfds_t i = 0; i < n; i++) {
            if (open_[i].fd < 0 || !open_[i].revents)
                continue;
            char sink[4096];
            ssize_t r;
            while ((r = recv(open_[i].fd, sink, sizeof sink, 0)) > 0) {
            }
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                close(open_[i].fd);
                open_[i].fd = -1; /* poll skips negative descriptors */
                left--;
            }
        }
    }
    for (nfds_t i = 0; i < n; i++)
        if (open_[i].fd >= 0)
            close(open_[i].fd);
    free(open_);
}

void loom_serve_http_stop(loom_serve_http *h, double timeout_s)
{
    if (!h)
        return;
    /* Draining: requests that arrive from now on are answered 503 (the socket stays open, so a
     * client that connects meanwhile gets an answer rather than a cut connection). */
    pthread_mutex_lock(&h->mu);
    __atomic_store_n(&h->draining, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&h->mu);
    /* Every accepted request is answered, then handed to its connection. */
    loom_server_drain(h->server);
    double end = sv_now() + (timeout_s > 0 ? timeout_s : 0);
    pthread_mutex_lock(&h->mu);
    while (h->inflight > 0 && sv_now() < end) {
        pthread_mutex_unlock(&h->mu);
        usleep(2000);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    /* Stop accepting; connections the kernel accepted that MHD never saw get a 503 of ours
     * instead of a reset, and the socket is closed at once (later clients are refused). */
    h->listen_fd = MHD_quiesce_daemon(h->daemon);
    refuse_backlog(h->listen_fd); /* closes it */
    h->listen_fd = MHD_INVALID_SOCKET;
    /* Requests MHD had begun reading (their headers in) are answered (503 for new infers) and
     * written out before the connections close, and so are the first requests of connections
     * MHD accepted before it stopped listening but has not yet read from (closing those would
     * cut off a client that connected in time): wait until none of either is left, and for a
     * moment more in case a connection's request was still arriving; at most a second (a
     * client that stalls, or went away without MHD seeing it yet, is not waited for). Idle
     * keep-alive connections that have been served are not waited for. */
    int quiet = 0;
    double grace = sv_now() + 1.0;
    while (quiet < 3 && sv_now() < grace) {
        pthread_mutex_lock(&h->mu);
        long busy = h->active + h->fresh;
        pthread_mutex_unlock(&h->mu);
        quiet = busy == 0 ? quiet + 1 : 0;
        usleep(10000);
    }
    MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}
