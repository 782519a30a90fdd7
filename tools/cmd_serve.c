/*
 * `loom serve`: serve ONNX models over HTTP with the KServe v2 / Open Inference Protocol
 * (docs/serve.md). Prints the address it listens on, then runs until SIGTERM or SIGINT, when
 * it stops accepting, answers what it accepted, and exits 0.
 */
#include <loom/loom.h>
#include <loom/serve.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tool_util.h"
#include "commands.h"
#include "serve_lanes.h"

static const char serve_help[] =
    "usage: loom serve --model NAME=PATH[:OPTION=VALUE,...]... [--host ADDR] [--port N]\n"
    "                  [--workers N] [--http-threads N] [--max-body BYTES]\n"
    "                  [--max-connections N] [--idle-timeout S] [--device ID] [--policy P]\n"
    "                  [--audit DB [--audit-key FILE] [--audit-new-segment]\n"
    "                  [--audit-sync full|normal]] [--trace FILE]\n"
    "\n"
    "Serves ONNX models over HTTP/1.1 with the KServe v2 inference protocol (JSON and binary\n"
    "tensors) and Prometheus metrics at /metrics. Runs until SIGTERM or SIGINT, then answers\n"
    "every request it accepted and exits 0.\n"
    "\n"
    "  --model NAME=PATH[:OPTIONS]  serve the ONNX file PATH as NAME (repeatable); OPTIONS,\n"
    "                   separated by ',' or ':': version=V, max_batch=N (default 8; 1: no\n"
    "                   batching), latency_ms=MS (target guiding the batcher, default 50),\n"
    "                   queue=N (waiting requests before 503, default 1024), cache_mb=MB\n"
    "                   (result cache, default 0: off), batch_dim=AXIS (default 0),\n"
    "                   exact=1 (a plan per batch size, no padding), warm=1 (plan every\n"
    "                   batch size at start)\n"
    "  --host ADDR      address to listen on (default 127.0.0.1)\n"
    "  --port N         TCP port (default 8000; 0: any free port)\n"
    "  --workers N      threads running batches (default 2)\n"
    "  --http-threads N threads handling HTTP (default 1)\n"
    "  --max-body BYTES largest request body (default 67108864); larger ones get 413\n"
    "  --max-connections N  open connections at most (default 16384, or what the\n"
    "                   descriptor limit allows; the soft limit is raised to the hard one)\n"
    "  --idle-timeout S close connections idle this long (default 60)\n"
    "  --device ID      run every model on this device (default: placed by the cost model)\n"
    "  --policy P       placement policy for the plans\n"
    "  --audit DB       append a hash-chained record of every answer to the SQLite database\n"
    "                   DB (journaled before the answer is sent; see docs/serve.md)\n"
    "  --audit-key FILE HMAC-SHA-256 key (the file's bytes) sealing each record\n"
    "  --audit-new-segment  when DB's chain is broken, start a new segment (recorded)\n"
    "                   instead of refusing to start\n"
    "  --audit-sync full|normal  normal (default): what was answered survives a crash of\n"
    "                   the process; full: also a power cut (an fsync per answer)\n"
    "  --trace FILE     write a Chrome trace (chrome://tracing, Perfetto) of the batches per\n"
    "                   worker, every request with its variant, path, figures and QoS\n"
    "                   decision inputs, and every QoS switch\n"
    "\n"
    "Variants, QoS and cascades (more --model OPTIONS): lite=PATH (a lite variant with the\n"
    "same inputs and outputs), variant=full|lite (what PATH is), mode=auto|cascade|full|lite\n"
    "(what requests without parameters.variant get; auto switches to lite when the full\n"
    "variant's queue is predicted to miss deadlines), enter=R, leave=R, leave_util=R,\n"
    "dwell_ms=MS (switching thresholds), threshold=T (escalate when the lite confidence is\n"
    "under T), confidence=max_prob|margin, confidence_output=NAME, remote=URL (the full model\n"
    "behind another loom serve: http://HOST:PORT/v2/models/NAME), remote_timeout_ms=MS.\n"
    "\n"
    "It prints one line 'loom serve: listening on http://ADDR:PORT' on stdout when ready.\n"
    "Exit status: 0 after a clean stop, 1 runtime failure (e.g. the port is taken), 2 bad\n"
    "usage or a model that cannot be loaded.\n";

static int serve_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int serve_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loom serve: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'loom serve --help')\n");
    va_end(ap);
    return 2;
}

/* One line on stderr, newlines of library messages flattened. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ' ';
    fprintf(stderr, "loom serve: %s\n", buf);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return 0;
    *out = v;
    return 1;
}

typedef struct model_arg {
    char *name, *path;
    loom_serve_model_options o;
    char *version;
    char *lite;                  /* lite=PATH: the lite variant */
    loom_serve_qos_options q;    /* QoS and cascade options */
    int has_qos;
    char remote[600];            /* remote=URL */
} model_arg;

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= min && v <= max))
        return 0;
    *out = v;
    return 1;
}

/* NAME=PATH[:k=v,...]: options begin at the first ':' whose next word holds '=' (so paths with
 * ':' in them still work). */
static int parse_model(char *arg, model_arg *m)
{
    memset(m, 0, sizeof *m);
    m->o.struct_size = sizeof m->o;
    m->q.struct_size = sizeof m->q;
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return serve_usage("--model wants NAME=PATH[:OPTIONS], got '%s'", arg);
    *eq = '\0';
    m->name = arg;
    m->path = eq + 1;
    char *opts = NULL;
    for (char *c = strchr(m->path, ':'); c; c = strchr(c + 1, ':')) {
        size_t w = strcspn(c + 1, ",:");
        if (memchr(c + 1, '=', w)) {
            *c = '\0';
            opts = c + 1;
            break;
        }
    }
    if (!*m->path)
        return serve_usage("--model %s: no path", m->name);
    /* remote=URL holds ':' itself: taken out first, up to the next ','. */
    char *rem = opts ? strstr(opts, "remote=") : NULL;
    if (rem && (rem == opts || rem[-1] == ',' || rem[-1] == ':')) {
        char *val = rem + 7, *comma = strchr(val, ',');
        size_t len = comma ? (size_t)(comma - val) : strlen(val);
        if (len == 0 || len >= sizeof m->remote)
            return serve_usage("--model %s: remote= wants http://HOST:PORT/v2/models/NAME",
                               m->name);
        memcpy(m->remote, val, len);
        m->remote[len] = '\0';
        m->q.remote_url = m->remote;
        m->has_qos = 1;
        memmove(rem, comma ? comma + 1 : val + len, strlen(comma ? comma + 1 : val + len) + 1);
    }
    for (char *tok = opts ? strtok(opts, ",:") : NULL; tok; tok = strtok(NULL, ",:")) {
        char *v = strchr(tok, '=');
        if (!v)
            return serve_usage("--model %s: option '%s' is not KEY=VALUE", m->name, tok);
        *v++ = '\0';
        long n;
        if (!strcmp(tok, "version")) {
            if (!*v)
                return serve_usage("--model %s: empty version", m->name);
            m->o.version = v;
        } else if (!strcmp(tok, "max_batch")) {
            if (!parse_long(v, 1, 256, &n))
                return serve_usage("--model %s: max_batch must be 1 to 256, got '%s'", m->name,
                                   v);
            m->o.max_batch = (uint32_t)n;
        } else if (!strcmp(tok, "latency_ms")) {
            if (!parse_long(v, 1, 3600000, &n))
                return serve_usage("--model %s: latency_ms must be a positive integer, got "
                                   "'%s'", m->name, v);
            m->o.latency_target_s = n * 1e-3;
        } else if (!strcmp(tok, "queue")) {
            if (!parse_long(v, 1, 1000000, &n))
                return serve_usage("--model %s: queue must be 1 to 1000000, got '%s'", m->name,
                                   v);
            m->o.queue_limit = (uint32_t)n;
        } else if (!strcmp(tok, "cache_mb")) {
            if (!parse_long(v, 0, 1 << 20, &n))
                return serve_usage("--model %s: cache_mb must be 0 to 1048576, got '%s'",
                                   m->name, v);
            m->o.cache_bytes = (size_t)n << 20;
        } else if (!strcmp(tok, "batch_dim")) {
            if (!parse_long(v, 0, 7, &n))
                return serve_usage("--model %s: batch_dim must be 0 to 7, got '%s'", m->name, v);
            m->o.batch_axis = (uint32_t)n;
        } else if (!strcmp(tok, "exact")) {
            if (!parse_long(v, 0, 1, &n))
                return serve_usage("--model %s: exact must be 0 or 1", m->name);
            m->o.exact_sizes = (int)n;
        } else if (!strcmp(tok, "warm")) {
            if (!parse_long(v, 0, 1, &n))
                return serve_usage("--model %s: warm must be 0 or 1", m->name);
            m->o.warm = (int)n;
        } else if (!strcmp(tok, "lite")) {
            if (!*v)
                return serve_usage("--model %s: lite= wants the lite variant's path", m->name);
            m->lite = v;
            m->has_qos = 1;
        } else if (!strcmp(tok, "variant")) {
            if (strcmp(v, "full") && strcmp(v, "lite"))
                return serve_usage("--model %s: variant must be full or lite, got '%s'",
                                   m->name, v);
            m->o.variant = v;
        } else if (!strcmp(tok, "mode")) {
            if (strcmp(v, "auto") && strcmp(v, "cascade") && strcmp(v, "full") &&
                strcmp(v, "lite"))
                return serve_usage("--model %s: mode must be auto, cascade, full or lite, got "
                                   "'%s'", m->name, v);
            m->q.mode = v;
            m->has_qos = 1;
        } else if (!strcmp(tok, "threshold")) {
            if (!parse_double(v, 0, 1, &m->q.threshold))
                return serve_usage("--model %s: threshold must be in [0, 1], got '%s'", m->name,
                                   v);
            m->has_qos = 1;
        } else if (!strcmp(tok, "confidence")) {
            if (strcmp(v, "max_prob") && strcmp(v, "margin"))
                return serve_usage("--model %s: confidence must be max_prob or margin, got "
                                   "'%s'", m->name, v);
            m->q.confidence = v;
            m->has_qos = 1;
        } else if (!strcmp(tok, "confidence_output")) {
            m->q.confidence_output = v;
            m->has_qos = 1;
        } else if (!strcmp(tok, "remote_timeout_ms")) {
            if (!parse_long(v, 1, 3600000, &n))
                return serve_usage("--model %s: remote_timeout_ms must be a positive integer, "
                                   "got '%s'", m->name, v);
            m->q.remote_timeout_s = n * 1e-3;
            m->has_qos = 1;
        } else if (!strcmp(tok, "enter") || !strcmp(tok, "leave") ||
                   !strcmp(tok, "leave_util")) {
            double d;
            if (!parse_double(v, 1e-6, 100, &d))
                return serve_usage("--model %s: %s must be a positive ratio, got '%s'", m->name,
                                   tok, v);
            *(!strcmp(tok, "enter") ? &m->q.enter : !strcmp(tok, "leave") ? &m->q.leave
                                                                           : &m->q.leave_util) = d;
            m->has_qos = 1;
        } else if (!strcmp(tok, "dwell_ms")) {
            if (!parse_long(v, 0, 3600000, &n))
                return serve_usage("--model %s: dwell_ms must be 0 or more, got '%s'", m->name,
                                   v);
            m->q.min_dwell_s = n ? n * 1e-3 : 1e-9;
            m->has_qos = 1;
        } else {
            return serve_usage("--model %s: unknown option '%s'", m->name, tok);
        }
    }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    model_arg models[64];
    size_t n_models = 0;
    loom_serve_http_options ho = {.struct_size = sizeof ho, .host = "127.0.0.1", .port = 8000};
    loom_server_options so = {.struct_size = sizeof so};
    loom_plan_options po = {.struct_size = sizeof po};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(serve_help, stdout);
            fputs(tool_backend_option_help, stdout);
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "--model") || !strcmp(a, "--host") || !strcmp(a, "--port") ||
            !strcmp(a, "--workers") || !strcmp(a, "--http-threads") ||
            !strcmp(a, "--max-body") || !strcmp(a, "--max-connections") ||
            !strcmp(a, "--idle-timeout") || !strcmp(a, "--device") || !strcmp(a, "--policy") ||
            !strcmp(a, "--audit") || !strcmp(a, "--audit-key") || !strcmp(a, "--audit-sync") ||
            !strcmp(a, "--trace")) {
            if (!v)
                return serve_usage("option %s needs a value", a);
            i++;
        } else if (!strcmp(a, "--audit-new-segment")) {
            so.audit_new_segment = 1;
            continue;
        } else {
            return serve_usage("unknown argument '%s'", a);
        }
        if (!strcmp(a, "--model")) {
            if (n_models == 64)
                return serve_usage("%s", "at most 64 models");
            int rc = parse_model(argv[i], &models[n_models]);
            if (rc)
                return rc;
            for (size_t k = 0; k < n_models; k++) {
                const char *v1 = models[k].o.version ? models[k].o.version : "1";
                const char *v2 = models[n_models].o.version ? models[n_models].o.version : "1";
                if (!strcmp(models[k].name, models[n_models].name) && !strcmp(v1, v2))
                    return serve_usage("model '%s' version '%s' given twice",
                                       models[k].name, v1);
            }
            n_models++;
        } else if (!strcmp(a, "--host")) {
            ho.host = v;
        } else if (!strcmp(a, "--port")) {
            if (!parse_long(v, 0, 65535, &n))
                return serve_usage("--port must be 0 to 65535, got '%s'", v);
            ho.port = (uint16_t)n;
        } else if (!strcmp(a, "--workers")) {
            if (!parse_long(v, 1, 256, &n))
                return serve_usage("--workers must be 1 to 256, got '%s'", v);
            so.workers = (uint32_t)n;
        } else if (!strcmp(a, "--http-threads")) {
            if (!parse_long(v, 1, 256, &n))
                return serve_usage("--http-threads must be 1 to 256, got '%s'", v);
            ho.threads = (uint32_t)n;
        } else if (!strcmp(a, "--max-body")) {
            if (!parse_long(v, 1, LONG_MAX, &n))
                return serve_usage("--max-body must be a positive byte count, got '%s'", v);
            ho.max_body_bytes = (size_t)n;
        } else if (!strcmp(a, "--max-connections")) {
            if (!parse_long(v, 1, 1000000, &n))
                return serve_usage("--max-connections must be 1 to 1000000, got '%s'", v);
            ho.max_connections = (uint32_t)n;
        } else if (!strcmp(a, "--idle-timeout")) {
            if (!parse_long(v, 1, 86400, &n))
                return serve_usage("--idle-timeout must be 1 to 86400 seconds, got '%s'", v);
            ho.idle_timeout_s = (uint32_t)n;
        } else if (!strcmp(a, "--device")) {
            po.device = v;
        } else if (!strcmp(a, "--policy")) {
            po.policy = v;
        } else if (!strcmp(a, "--audit")) {
            so.audit_path = v;
        } else if (!strcmp(a, "--audit-key")) {
            so.audit_key_path = v;
        } else if (!strcmp(a, "--trace")) {
            so.trace_path = v;
        } else if (!strcmp(a, "--audit-sync")) {
            if (strcmp(v, "full") && strcmp(v, "normal"))
                return serve_usage("--audit-sync must be full or normal, got '%s'", v);
            so.audit_sync_full = !strcmp(v, "full");
        }
    }
    if (n_models == 0)
        return serve_usage("%s", "no model given: --model NAME=PATH");
    if (so.audit_key_path && !so.audit_path)
        return serve_usage("%s", "--audit-key needs --audit DB");

    /* Signals are taken by sigwait in this thread only: block them before any thread starts,
     * so every thread the runtime, the server and libmicrohttpd make inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (tool_cpu_threads_auto()) {
        /* Measure both ways of using the cores with these models, then serve with the better
         * (serve_lanes.h); the choice and its figures are logged. */
        serve_lanes_model *lm = calloc(n_models, sizeof *lm);
        char why[4096];
        uint32_t t = 0;
        if (lm) {
            for (size_t k = 0; k < n_models; k++) {
                models[k].o.plan_options = &po;
                lm[k] = (serve_lanes_model){models[k].path, &models[k].o};
            }
            t = serve_pick_cpu_threads(lm, n_models, why, sizeof why);
            say("%s", why);
        }
        free(lm);
        tool_cpu_threads_set(t);
    }
    loom_runtime *rt;
    loom_status rst = tool_runtime_create(NULL, &rt);
    if (rst != LOOM_OK) {
        say("cannot start the runtime: %s", loom_last_error());
        return tool_runtime_exit_status(rst);
    }
    loom_server *srv;
    loom_status cst = loom_server_create(rt, &so, &srv);
    if (cst != LOOM_OK) {
        say("%s", loom_serve_last_error());
        loom_runtime_destroy(rt);
        return cst == LOOM_ERR_INVALID_ARGUMENT ? 2 : 1;
    }
    int rc = 0;
    for (size_t k = 0; k < n_models && rc == 0; k++) {
        models[k].o.plan_options = &po;
        loom_status st = loom_server_add_onnx(srv, models[k].name, models[k].path, &models[k].o);
        if (st == LOOM_OK && models[k].lite) {
            loom_serve_model_options lo = models[k].o;
            lo.variant = "lite";
            st = loom_server_add_onnx(srv, models[k].name, models[k].lite, &lo);
        }
        if (st == LOOM_OK && models[k].has_qos)
            st = loom_server_set_qos(srv, models[k].name, models[k].o.version, &models[k].q);
        if (st != LOOM_OK) {
            say("%s", loom_serve_last_error());
            rc = st == LOOM_ERR_INVALID_ARGUMENT || st == LOOM_ERR_IO ||
                         st == LOOM_ERR_UNSUPPORTED ? 2 : 1;
        }
    }
    /* Room for many connections: the soft descriptor limit up to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loom_serve_http *http = NULL;
    if (rc == 0 && loom_serve_http_start(srv, &ho, &http) != LOOM_OK) {
        say("%s", loom_serve_last_error());
        rc = 1;
    }
    if (rc == 0) {
        const char *h = ho.host;
        int v6 = strchr(h, ':') != NULL;
        printf("loom serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", h, v6 ? "]" : "",
               loom_serve_http_port(http));
        fflush(stdout);
        int sig = 0;
        while (sigwait(&set, &sig) != 0)
            ;
        say("%s: draining (answering accepted requests), then stopping",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
        loom_serve_http_stop(http, 30.0);
    }
    loom_server_destroy(srv);
    loom_runtime_destroy(rt);
    return rc;
}
