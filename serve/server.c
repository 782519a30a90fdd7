/*
 * The server: models with one plan per batch size (made lazily, behind model_plan), a priority
 * queue per model, worker threads that ask the batching policy which batch to run next, run it,
 * split the outputs back per request and answer each request exactly once; the result cache
 * with coalescing of identical requests; counters and histograms for the metrics.
 */
#include "serve_internal.h"

#include <loom/onnx.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- types ------------------------------------------------------------------------------- */

typedef struct sv_req sv_req;
typedef struct sv_model sv_model;

struct sv_req {
    sv_req *prev, *next;       /* in the model's queue */
    sv_model *model;
    char *id;
    uint32_t rows;
    loom_tensor **inputs;      /* model order, owned */
    double t_submit;
    double deadline;           /* absolute; INFINITY: none */
    double batch_deadline;     /* what the batcher aims at: DEADLINE or submit + target */
    int priority;
    int leader;                /* runs for the cache entry KEY */
    sv_key key;
    loom_serve_done_fn done;
    void *user;
};

typedef struct plan_slot {
    loom_plan *plan;
    int state;                 /* 0 none, 1 being made, 2 ready, -1 failed */
    char *devices;
    size_t n_nodes;
    loom_status status;
    char *message;
} plan_slot;

#define N_CODES 7

typedef struct model_metrics {
    uint64_t answers[N_CODES];     /* by loom_serve_code, refusals included */
    uint64_t accepted, batches, rows_run, rows_padded;
    sv_hist latency, queue, run, batch;
} model_metrics;

struct sv_model {
    char *name, *version;
    char *path;
    loom_serve_build_fn build;
    void *user;
    uint32_t batch_axis, max_batch, queue_limit;
    double target_s;
    int exact;
    /* Plan options, with the strings they point to owned here. */
    loom_plan_options plan_opts;
    char *opt_device, *opt_policy, *opt_cache_dir;
    char **opt_pins;
    size_t n_in, n_out;
    loom_serve_tensor_info *in, *out;
    /* Under the server's lock: the queue, the estimates and the arrival rate. */
    sv_estimates est;
    sv_req *head, *tail;
    size_t depth;
    double last_arrival, mean_gap, mean_rows;
    /* Plans per size, under PLAN_MU. */
    pthread_mutex_t plan_mu;
    pthread_cond_t plan_cv;
    plan_slot slots[SV_MAX_SIZES];
    /* The result cache (NULL: none) and whether it is used now. */
    sv_cache *cache;
    int cache_on;
    /* Metrics, under STATS_MU. */
    pthread_mutex_t stats_mu;
    model_metrics met;
};

struct loom_server {
    loom_runtime *rt;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* workers wait for requests */
    pthread_cond_t idle_cv;  /* drain waits for OUTSTANDING to reach 0 */
    sv_model **models;
    size_t n_models, cap_models;
    pthread_t *workers;
    uint32_t n_workers;
    int stopping, draining;
    long outstanding;        /* accepted and not yet answered */
    /* Devices and their busy seconds (under STATS_MU). */
    size_t n_devices;
    char (*device_ids)[64];
    double *device_busy_s;
    pthread_mutex_t stats_mu;
    uint64_t refused_unknown; /* requests for models that do not exist */
};

static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define N_LAT (sizeof latency_bounds / sizeof latency_bounds[0])
#define N_BATCH (sizeof batch_bounds / sizeof batch_bounds[0])

static char *dup_str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- tensors: shapes, copies, slices ----------------------------------------------------- */

static loom_tensor *tensor_copy(const loom_tensor *t)
{
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(t, dims);
    loom_tensor *c;
    if (loom_tensor_create(loom_tensor_dtype(t), loom_tensor_rank(t), dims, &c) != LOOM_OK)
        return NULL;
    memcpy(loom_tensor_data(c), loom_tensor_data(t), loom_tensor_nbytes(t));
    return c;
}

/* Copy ROWS rows along AXIS from SRC starting at row SRC_ROW into DST at DST_ROW. Both have the
 * same shape except along AXIS. */
static void copy_rows(loom_tensor *dst, int64_t dst_row, const loom_tensor *src, int64_t src_row,
                      int64_t rows, uint32_t axis)
{
    int64_t dd[LOOM_MAX_RANK], sd[LOOM_MAX_RANK];
    loom_tensor_dims(dst, dd);
    loom_tensor_dims(src, sd);
    uint32_t rank = loom_tensor_rank(dst);
    size_t es = loom_dtype_size(loom_tensor_dtype(dst));
    size_t outer = 1, inner = es;
    for (uint32_t k = 0; k < axis; k++)
        outer *= (size_t)dd[k];
    for (uint32_t k = axis + 1; k < rank; k++)
        inner *= (size_t)dd[k];
    char *d = loom_tensor_data(dst);
    const char *s = loom_tensor_data(src);
    for (size_t o = 0; o < outer; o++)
        memcpy(d + (o * (size_t)dd[axis] + (size_t)dst_row) * inner,
               s + (o * (size_t)sd[axis] + (size_t)src_row) * inner, (size_t)rows * inner);
}

static loom_tensor *tensor_with_rows(const loom_tensor *like, uint32_t axis, int64_t rows)
{
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(like, dims);
    dims[axis] = rows;
    loom_tensor *t;
    if (loom_tensor_create(loom_tensor_dtype(like), loom_tensor_rank(like), dims, &t) != LOOM_OK)
        return NULL;
    return t;
}

/* ---- results ----------------------------------------------------------------------------- */

static loom_serve_result *result_new(const sv_model *m, const char *model_name, const char *id,
                                     loom_serve_code code, const char *message)
{
    loom_serve_result *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->code = code;
    r->message = dup_str(message ? message : "");
    r->id = dup_str(id ? id : "");
    r->model = dup_str(m ? m->name : model_name ? model_name : "");
    r->version = dup_str(m ? m->version : "");
    r->devices = dup_str("");
    if (!r->message || !r->id || !r->model || !r->version || !r->devices) {
        loom_serve_result_free(r);
        return NULL;
    }
    return r;
}

/* Give R the outputs OUTS (ownership taken, even on failure). Returns 0 or -1. */
static int result_set_outputs(loom_serve_result *r, const sv_model *m, loom_tensor **outs)
{
    r->outputs = calloc(m->n_out, sizeof *r->outputs);
    r->output_names = calloc(m->n_out, sizeof *r->output_names);
    if (!r->outputs || !r->output_names) {
        for (size_t k = 0; k < m->n_out; k++)
            loom_tensor_destroy(outs[k]);
        return -1;
    }
    r->n_outputs = m->n_out;
    int ok = 0;
    for (size_t k = 0; k < m->n_out; k++) {
        r->outputs[k] = outs[k];
        r->output_names[k] = dup_str(m->out[k].name);
        if (!r->output_names[k])
            ok = -1;
    }
    return ok;
}

void loom_serve_result_free(loom_serve_result *r)
{
    if (!r)
        return;
    for (size_t k = 0; k < r->n_outputs; k++) {
        if (r->outputs)
            loom_tensor_destroy(r->outputs[k]);
        if (r->output_names)
            free((char *)r->output_names[k]);
    }
    free(r->outputs);
    free(r->output_names);
    free((char *)r->message);
    free((char *)r->id);
    free((char *)r->model);
    free((char *)r->version);
    free((char *)r->devices);
    free(r);
}

/* Outputs as one blob for the cache: per output dtype, rank, dims, byte count, data. */
static sv_blob *outputs_to_blob(loom_tensor *const *outs, size_t n)
{
    size_t size = sizeof(uint64_t);
    for (size_t k = 0; k < n; k++)
        size += 2 * sizeof(uint32_t) + (LOOM_MAX_RANK + 1) * sizeof(int64_t) +
                ((loom_tensor_nbytes(outs[k]) + 7) & ~(size_t)7);
    sv_blob *b = sv_blob_new(size);
    if (!b)
        return NULL;
    unsigned char *p = b->data;
    uint64_t count = n;
    memcpy(p, &count, sizeof count);
    p += sizeof count;
    for (size_t k = 0; k < n; k++) {
        uint32_t head[2] = {(uint32_t)loom_tensor_dtype(outs[k]), loom_tensor_rank(outs[k])};
        int64_t dims[LOOM_MAX_RANK + 1] = {0};
        loom_tensor_dims(outs[k], dims);
        dims[LOOM_MAX_RANK] = (int64_t)loom_tensor_nbytes(outs[k]);
        memcpy(p, head, sizeof head);
        p += sizeof head;
        memcpy(p, dims, sizeof dims);
        p += sizeof dims;
        memcpy(p, loom_tensor_data(outs[k]), (size_t)dims[LOOM_MAX_RANK]);
        p += ((size_t)dims[LOOM_MAX_RANK] + 7) & ~(size_t)7;
    }
    return b;
}

/* New tensors from BLOB into OUTS[N]; 0, or -1 (none left allocated). */
static int blob_to_outputs(const sv_blob *b, loom_tensor **outs, size_t n)
{
    const unsigned char *p = b->data;
    uint64_t count;
    memcpy(&count, p, sizeof count);
    p += sizeof count;
    if (count != n)
        return -1;
    for (size_t k = 0; k < n; k++) {
        uint32_t head[2];
        int64_t dims[LOOM_MAX_RANK + 1];
        memcpy(head, p, sizeof head);
        p += sizeof head;
        memcpy(dims, p, sizeof dims);
        p += sizeof dims;
        if (loom_tensor_create((loom_dtype)head[0], head[1], dims, &outs[k]) != LOOM_OK) {
            for (size_t j = 0; j < k; j++)
                loom_tensor_destroy(outs[j]);
            return -1;
        }
        memcpy(loom_tensor_data(outs[k]), p, (size_t)dims[LOOM_MAX_RANK]);
        p += ((size_t)dims[LOOM_MAX_RANK] + 7) & ~(size_t)7;
    }
    return 0;
}

/* ---- answering --------------------------------------------------------------------------- */

typedef struct figures {
    double queue_s, run_s;
    uint32_t batch_rows, batch_requests;
    int cache_hit;
    const char *devices;
} figures;

static void count_answer(sv_model *m, loom_serve_code code, const loom_serve_result *r)
{
    pthread_mutex_lock(&m->stats_mu);
    m->met.answers[code]++;
    if (r) {
        sv_hist_add(&m->met.latency, r->total_s);
        if (!r->cache_hit && r->batch_rows)
            sv_hist_add(&m->met.queue, r->queue_s);
    }
    pthread_mutex_unlock(&m->stats_mu);
}

static void request_free(sv_req *r)
{
    if (!r)
        return;
    if (r->inputs && r->model)
        for (size_t k = 0; k < r->model->n_in; k++)
            loom_tensor_destroy(r->inputs[k]);
    free(r->inputs);
    free(r->id);
    free(r);
}

static void finished_one(loom_server *s)
{
    pthread_mutex_lock(&s->mu);
    if (--s->outstanding == 0)
        pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Answer R (and, when it leads a cache entry, every request that followed it). OUTS
 * (n_out tensors of R's rows, ownership taken; NULL unless CODE is OK). Frees R. */
static void answer(loom_server *s, sv_req *r, loom_serve_code code, const char *message,
                   loom_tensor **outs, const figures *f)
{
    sv_model *m = r->model;
    double now = sv_now();
    if (r->leader) {
        sv_blob *blob = code == LOOM_SERVE_OK ? outputs_to_blob(outs, m->n_out) : NULL;
        void **waiters;
        size_t n = sv_cache_finish(m->cache, r->key, blob, &waiters);
        for (size_t w = 0; w < n; w++) {
            sv_req *fr = waiters[w];
            fr->leader = 0;
            loom_tensor *copies[LOOM_MAX_RANK * 8];
            loom_tensor **fo = m->n_out <= sizeof copies / sizeof copies[0] ? copies : NULL;
            loom_serve_code fc = code;
            const char *fm = message;
            if (code == LOOM_SERVE_OK) {
                if (!fo || !blob || blob_to_outputs(blob, fo, m->n_out) != 0) {
                    fc = LOOM_SERVE_FAILED;
                    fm = "out of memory copying a coalesced result";
                    fo = NULL;
                }
            } else {
                fo = NULL;
            }
            figures ff = *f;
            ff.cache_hit = 1;
            answer(s, fr, fc, fm, fo, &ff);
        }
        free(waiters);
        sv_blob_release(blob);
    }
    loom_serve_result *res = result_new(m, NULL, r->id, code, message);
    if (res) {
        res->queue_s = f->queue_s;
        res->run_s = f->run_s;
        res->batch_rows = f->batch_rows;
        res->batch_requests = f->batch_requests;
        res->cache_hit = f->cache_hit;
        res->total_s = now - r->t_submit;
        if (f->devices) {
            free((char *)res->devices);
            res->devices = dup_str(f->devices);
        }
        if (outs && result_set_outputs(res, m, outs) != 0) {
            outs = NULL;
            loom_serve_result_free(res);
            res = NULL;
        }
        outs = NULL;
    }
    if (outs)
        for (size_t k = 0; k < m->n_out; k++)
            loom_tensor_destroy(outs[k]);
    count_answer(m, res ? res->code : LOOM_SERVE_FAILED, res);
    /* Out of memory for the result itself: the callback still gets its one call. */
    if (!res) {
        res = calloc(1, sizeof *res);
        if (res) {
            res->code = LOOM_SERVE_FAILED;
            res->message = dup_str("out of memory");
        }
    }
    r->done(res, r->user);
    loom_server *srv = s;
    request_free(r);
    finished_one(srv);
}

/* ---- plans per batch size ---------------------------------------------------------------- */

static loom_graph *model_graph(loom_server *s, sv_model *m, int64_t batch)
{
    (void)s;
    if (m->build) {
        loom_graph *g = m->build(batch, m->user);
        if (!g)
            sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': the graph builder failed for batch "
                     "%lld: %s", m->name, (long long)batch, loom_last_error());
        return g;
    }
    loom_onnx_options o = {.struct_size = sizeof o, .default_dim = 1};
    loom_onnx_shape shapes[64];
    int64_t dims[64][LOOM_MAX_RANK];
    if (m->n_in > 0 && m->n_in <= 64) {
        for (size_t k = 0; k < m->n_in; k++) {
            for (uint32_t d = 0; d < m->in[k].rank; d++)
                dims[k][d] = d == m->batch_axis ? batch : m->in[k].dims[d];
            shapes[k] = (loom_onnx_shape){m->in[k].name, m->in[k].rank, dims[k]};
        }
        o.shapes = shapes;
        o.n_shapes = m->n_in;
    }
    loom_graph *g = NULL;
    if (loom_onnx_load(m->path, &o, &g) != LOOM_OK) {
        sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s' at batch %lld: %s", m->name,
                 (long long)batch, loom_last_error());
        return NULL;
    }
    return g;
}

static int outputs_fit(sv_model *m, loom_graph *g, int64_t batch)
{
    size_t n = loom_graph_output_count(g);
    if (n != m->n_out)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %zu outputs at batch %lld, %zu "
                        "at batch 1", m->name, n, (long long)batch, m->n_out), 0;
    for (size_t k = 0; k < n; k++) {
        loom_dtype dt;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK];
        loom_value_info(g, loom_graph_output(g, k), &dt, &rank, dims);
        if (rank <= m->batch_axis || dims[m->batch_axis] != batch)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': output '%s' does not have "
                            "the batch (%lld) along axis %u", m->name, m->out[k].name,
                            (long long)batch, m->batch_axis), 0;
    }
    return 1;
}

static char *plan_devices(loom_plan *p)
{
    char buf[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++) {
        if (loom_plan_node_is_copy(p, i))
            continue;
        const char *d = loom_plan_node_device(p, i);
        if (!d || strstr(buf, d))
            continue;
        int w = snprintf(buf + len, sizeof buf - len, "%s%s", len ? "," : "", d);
        if (w < 0 || (size_t)w >= sizeof buf - len)
            break;
        len += (size_t)w;
    }
    return dup_str(buf);
}

/* The plan for size index I of M, made on first use ("plan for batch size B": the one place
 * that knows how a batch size becomes a plan). */
static loom_status model_plan(loom_server *s, sv_model *m, uint32_t i, plan_slot **out)
{
    plan_slot *sl = &m->slots[i];
    pthread_mutex_lock(&m->plan_mu);
    while (sl->state == 1)
        pthread_cond_wait(&m->plan_cv, &m->plan_mu);
    if (sl->state == 2 || sl->state == -1) {
        loom_status st = sl->state == 2 ? LOOM_OK : sl->status;
        if (st != LOOM_OK)
            sv_error(st, "%s", sl->message ? sl->message : "plan failed");
        pthread_mutex_unlock(&m->plan_mu);
        *out = sl;
        return st;
    }
    sl->state = 1;
    pthread_mutex_unlock(&m->plan_mu);

    int64_t batch = m->est.sizes[i];
    loom_status st = LOOM_OK;
    loom_plan *plan = NULL;
    loom_graph *g = model_graph(s, m, batch);
    if (!g) {
        st = LOOM_ERR_INVALID_ARGUMENT;
    } else if (!outputs_fit(m, g, batch)) {
        st = LOOM_ERR_INVALID_ARGUMENT;
    } else if ((st = loom_plan_create(s->rt, g, &m->plan_opts, &plan)) != LOOM_OK) {
        sv_error(st, "model '%s' at batch %lld: %s", m->name, (long long)batch,
                 loom_last_error());
    }
    loom_graph_destroy(g);
    double predicted = 0;
    if (plan) {
        loom_plan_summary sum = {.struct_size = sizeof sum};
        if (loom_plan_summary_get(plan, &sum) == LOOM_OK)
            predicted = sum.predicted_s;
    }
    pthread_mutex_lock(&m->plan_mu);
    sl->plan = plan;
    sl->status = st;
    sl->state = st == LOOM_OK ? 2 : -1;
    if (plan) {
        sl->devices = plan_devices(plan);
        sl->n_nodes = loom_plan_node_count(plan);
    } else {
        sl->message = dup_str(loom_serve_last_error());
    }
    pthread_cond_broadcast(&m->plan_cv);
    pthread_mutex_unlock(&m->plan_mu);
    if (predicted > 0) {
        pthread_mutex_lock(&s->mu);
        sv_estimate_seed(&m->est, i, predicted);
        pthread_mutex_unlock(&s->mu);
    }
    *out = sl;
    return st;
}

/* ---- running a batch --------------------------------------------------------------------- */

static void answer_all(loom_server *s, sv_req **reqs, size_t n, loom_serve_code code,
                       const char *msg, const figures *f)
{
    for (size_t k = 0; k < n; k++)
        answer(s, reqs[k], code, msg, NULL, f);
}

static void run_batch(loom_server *s, sv_model *m, sv_req **reqs, size_t n, uint32_t idx)
{
    double t_start = sv_now();
    uint32_t size = m->est.sizes[idx];
    uint32_t rows = 0;
    for (size_t k = 0; k < n; k++)
        rows += reqs[k]->rows;
    figures f = {.batch_rows = size, .batch_requests = (uint32_t)n};
    plan_slot *sl;
    if (model_plan(s, m, idx, &sl) != LOOM_OK) {
        answer_all(s, reqs, n, LOOM_SERVE_FAILED, loom_serve_last_error(), &f);
        return;
    }
    f.devices = sl->devices;
    size_t n_in = m->n_in, n_out = m->n_out;
    loom_tensor **ins = calloc(n_in, sizeof *ins);
    loom_tensor **outs = calloc(n_out, sizeof *outs);
    int direct = n == 1 && reqs[0]->rows == size;
    int ok = ins && outs;
    for (size_t k = 0; ok && k < n_in; k++) {
        if (direct) {
            ins[k] = reqs[0]->inputs[k];
            continue;
        }
        ins[k] = tensor_with_rows(reqs[0]->inputs[k], m->batch_axis, size);
        if (!ins[k]) {
            ok = 0;
            break;
        }
        int64_t row = 0;
        for (size_t r = 0; r < n; r++) {
            copy_rows(ins[k], row, reqs[r]->inputs[k], 0, reqs[r]->rows, m->batch_axis);
            row += reqs[r]->rows;
        }
    }
    if (ok && loom_plan_make_outputs(sl->plan, outs, n_out) != LOOM_OK)
        ok = 0;
    if (!ok) {
        if (!direct && ins)
            for (size_t k = 0; k < n_in; k++)
                loom_tensor_destroy(ins[k]);
        free(ins);
        free(outs);
        answer_all(s, reqs, n, LOOM_SERVE_FAILED, "out of memory forming a batch", &f);
        return;
    }
    loom_node_timing *tl = calloc(sl->n_nodes ? sl->n_nodes : 1, sizeof *tl);
    loom_run_stats st = {.struct_size = sizeof st, .timeline = tl,
                         .timeline_capacity = tl ? sl->n_nodes : 0};
    double t0 = sv_now();
    loom_status rs = loom_plan_run(sl->plan, (const loom_tensor *const *)ins, n_in, outs, n_out,
                                   &st);
    double t1 = sv_now();
    if (!direct)
        for (size_t k = 0; k < n_in; k++)
            loom_tensor_destroy(ins[k]);
    free(ins);
    f.run_s = t1 - t0;

    pthread_mutex_lock(&s->mu);
    if (rs == LOOM_OK)
        sv_estimate_measure(&m->est, idx, t1 - t0);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&m->stats_mu);
    m->met.batches++;
    m->met.rows_run += rows;
    m->met.rows_padded += size - rows;
    sv_hist_add(&m->met.batch, size);
    sv_hist_add(&m->met.run, t1 - t0);
    pthread_mutex_unlock(&m->stats_mu);
    if (tl) {
        pthread_mutex_lock(&s->stats_mu);
        for (size_t k = 0; k < st.timeline_count; k++)
            if (tl[k].device < s->n_devices)
                s->device_busy_s[tl[k].device] += (double)(tl[k].end_ns - tl[k].start_ns) * 1e-9;
        pthread_mutex_unlock(&s->stats_mu);
        free(tl);
    }

    if (rs != LOOM_OK) {
        char msg[1100];
        snprintf(msg, sizeof msg, "model '%s' run failed: %s", m->name, loom_last_error());
        for (size_t k = 0; k < n_out; k++)
            loom_tensor_destroy(outs[k]);
        free(outs);
        answer_all(s, reqs, n, LOOM_SERVE_FAILED, msg, &f);
        return;
    }
    int64_t row = 0;
    for (size_t r = 0; r < n; r++) {
        sv_req *q = reqs[r];
        f.queue_s = t_start - q->t_submit;
        if (direct) {
            answer(s, q, LOOM_SERVE_OK, NULL, outs, &f);
            free(outs);
            return;
        }
        loom_tensor *mine[64];
        loom_tensor **o = n_out <= 64 ? mine : NULL;
        int good = o != NULL;
        for (size_t k = 0; good && k < n_out; k++) {
            o[k] = tensor_with_rows(outs[k], m->batch_axis, q->rows);
            if (!o[k]) {
                for (size_t j = 0; j < k; j++)
                    loom_tensor_destroy(o[j]);
                good = 0;
                break;
            }
            copy_rows(o[k], 0, outs[k], row, q->rows, m->batch_axis);
        }
        row += q->rows;
        if (good)
            answer(s, q, LOOM_SERVE_OK, NULL, o, &f);
        else
            answer(s, q, LOOM_SERVE_FAILED, "out of memory splitting a batch", NULL, &f);
    }
    for (size_t k = 0; k < n_out; k++)
        loom_tensor_destroy(outs[k]);
    free(outs);
}

/* ---- the workers ------------------------------------------------------------------------- */

static void queue_remove(sv_model *m, sv_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        m->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        m->tail = r->prev;
    r->prev = r->next = NULL;
    m->depth--;
}

/* Insert R behind every request of its priority or higher (FIFO within a priority). */
static void queue_insert(sv_model *m, sv_req *r)
{
    sv_req *after = m->tail;
    while (after && after->priority < r->priority)
        after = after->prev;
    r->prev = after;
    r->next = after ? after->next : m->head;
    if (r->next)
        r->next->prev = r;
    else
        m->tail = r;
    if (after)
        after->next = r;
    else
        m->head = r;
    m->depth++;
}

/* Called with the lock held: take every request past its deadline out of the queues. */
static sv_req *take_expired(loom_server *s, double now)
{
    sv_req *list = NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        sv_model *m = s->models[i];
        for (sv_req *r = m->head, *next; r; r = next) {
            next = r->next;
            if (r->deadline < now) {
                queue_remove(m, r);
                r->next = list;
                list = r;
            }
        }
    }
    return list;
}

static void *worker_main(void *arg)
{
    loom_server *s = arg;
    size_t cap = 256;
    sv_req **batch = malloc(cap * sizeof *batch);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        double now = sv_now();
        sv_req *expired = take_expired(s, now);
        if (expired) {
            pthread_mutex_unlock(&s->mu);
            while (expired) {
                sv_req *next = expired->next;
                figures f = {.queue_s = now - expired->t_submit};
                answer(s, expired, LOOM_SERVE_DEADLINE,
                       "the deadline passed before the request could run", NULL, &f);
                expired = next;
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        sv_model *pick = NULL;
        sv_decision pd = {0};
        double pick_deadline = INFINITY, wake = INFINITY;
        size_t queued = 0;
        for (size_t i = 0; i < s->n_models; i++) {
            sv_model *m = s->models[i];
            if (!m->head)
                continue;
            queued += m->depth;
            sv_queue_view v = {.now = now, .deadline = INFINITY, .max_batch = m->max_batch,
                               .slack_s = 0.002, .target_s = m->target_s};
            for (sv_req *r = m->head; r && v.rows < m->max_batch; r = r->next)
                v.rows += r->rows;
            for (sv_req *r = m->head; r; r = r->next)
                if (r->batch_deadline < v.deadline)
                    v.deadline = r->batch_deadline;
            if (!s->draining && !s->stopping && m->mean_gap > 0)
                v.arrival_rate = m->mean_rows / m->mean_gap;
            sv_decision d = sv_decide(&v, &m->est);
            if (d.go) {
                if (!pick || v.deadline < pick_deadline) {
                    pick = m;
                    pd = d;
                    pick_deadline = v.deadline;
                }
            } else if (d.wake_at < wake) {
                wake = d.wake_at;
            }
        }
        if (!pick) {
            if (s->stopping && queued == 0)
                break;
            if (wake == INFINITY) {
                pthread_cond_wait(&s->work_cv, &s->mu);
            } else {
                struct timespec ts;
                double w = wake;
                ts.tv_sec = (time_t)w;
                ts.tv_nsec = (long)((w - (double)ts.tv_sec) * 1e9);
                pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
            }
            continue;
        }
        /* Form the batch: requests in queue order that fit the chosen size. */
        uint32_t idx = pd.size_index;
        if (pick->head->rows > pick->est.sizes[idx])
            idx = sv_size_index(&pick->est, pick->head->rows);
        uint32_t size = pick->est.sizes[idx], rows = 0;
        size_t n = 0;
        for (sv_req *r = pick->head, *next; r && rows < size; r = next) {
            next = r->next;
            if (rows + r->rows > size)
                continue;
            if (n == cap) {
                sv_req **nb = realloc(batch, 2 * cap * sizeof *nb);
                if (!nb)
                    break;
                batch = nb;
                cap *= 2;
            }
            queue_remove(pick, r);
            batch[n++] = r;
            rows += r->rows;
        }
        /* With exact sizes, run the rows taken exactly. */
        uint32_t exact_idx = sv_size_index(&pick->est, rows);
        if (exact_idx < pick->est.n_sizes)
            idx = exact_idx;
        pthread_mutex_unlock(&s->mu);
        if (n)
            run_batch(s, pick, batch, n, idx);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(batch);
    return NULL;
}

/* ---- the server -------------------------------------------------------------------------- */

loom_status loom_server_create(loom_runtime *runtime, const loom_server_options *options,
                               loom_server **out)
{
    *out = NULL;
    if (!runtime)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "loom_server_create: no runtime");
    if (options && options->struct_size < sizeof(uint32_t) * 2)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "loom_server_create: options.struct_size "
                        "too small");
    loom_server *s = calloc(1, sizeof *s);
    if (!s)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    s->rt = runtime;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->stats_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->work_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->idle_cv, NULL);
    s->n_devices = loom_runtime_device_count(runtime);
    s->device_ids = calloc(s->n_devices ? s->n_devices : 1, sizeof *s->device_ids);
    s->device_busy_s = calloc(s->n_devices ? s->n_devices : 1, sizeof *s->device_busy_s);
    uint32_t nw = options && options->workers ? options->workers : 2;
    s->workers = calloc(nw, sizeof *s->workers);
    if (!s->device_ids || !s->device_busy_s || !s->workers) {
        loom_server_destroy(s);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < s->n_devices; i++)
        loom_runtime_device(runtime, i, s->device_ids[i], sizeof s->device_ids[i], NULL);
    for (uint32_t i = 0; i < nw; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            loom_server_destroy(s);
            return sv_error(LOOM_ERR_INTERNAL, "cannot start a worker thread");
        }
        s->n_workers++;
    }
    *out = s;
    return LOOM_OK;
}

void loom_server_drain(loom_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    pthread_cond_broadcast(&s->work_cv);
    while (s->outstanding > 0)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void model_free(sv_model *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < SV_MAX_SIZES; i++) {
        loom_plan_destroy(m->slots[i].plan);
        free(m->slots[i].devices);
        free(m->slots[i].message);
    }
    for (size_t k = 0; k < m->n_in; k++)
        free((char *)m->in[k].name);
    for (size_t k = 0; k < m->n_out; k++)
        free((char *)m->out[k].name);
    free(m->in);
    free(m->out);
    sv_cache_destroy(m->cache);
    free(m->name);
    free(m->version);
    free(m->path);
    free(m->opt_device);
    free(m->opt_policy);
    free(m->opt_cache_dir);
    if (m->opt_pins)
        for (size_t k = 0; k < m->plan_opts.n_pins; k++)
            free(m->opt_pins[k]);
    free(m->opt_pins);
    pthread_mutex_destroy(&m->plan_mu);
    pthread_cond_destroy(&m->plan_cv);
    pthread_mutex_destroy(&m->stats_mu);
    free(m);
}

void loom_server_destroy(loom_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    s->stopping = 1;
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    for (uint32_t i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    /* The workers answered everything queued; followers of cache entries were answered with
     * their leaders. Wait for answers still being delivered by other threads. */
    pthread_mutex_lock(&s->mu);
    while (s->outstanding > 0)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->n_models; i++)
        model_free(s->models[i]);
    free(s->models);
    free(s->workers);
    free(s->device_ids);
    free(s->device_busy_s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->stats_mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

static sv_model *find_model(const loom_server *s, const char *name, const char *version)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        sv_model *m = s->models[i];
        if (!strcmp(m->name, name) && (!version || !*version || !strcmp(m->version, version)))
            return m;
    }
    return NULL;
}

/* Describe the values of G (inputs or outputs) with the batch dim as -1. */
static loom_status describe(sv_model *m, const loom_graph *g, int outputs)
{
    size_t n = outputs ? loom_graph_output_count(g) : loom_graph_input_count(g);
    loom_serve_tensor_info *info = calloc(n ? n : 1, sizeof *info);
    if (!info)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (outputs) {
        m->out = info;
        m->n_out = n;
    } else {
        m->in = info;
        m->n_in = n;
    }
    for (size_t k = 0; k < n; k++) {
        loom_value v = outputs ? loom_graph_output(g, k) : loom_graph_input(g, k);
        loom_value_info(g, v, &info[k].dtype, &info[k].rank, info[k].dims);
        info[k].name = dup_str(loom_value_name(g, v));
        if (!info[k].name)
            return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        if (info[k].rank <= m->batch_axis)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s '%s' (rank %u) has no "
                            "batch axis %u", m->name, outputs ? "output" : "input",
                            info[k].name, info[k].rank, m->batch_axis);
        if (info[k].dims[m->batch_axis] != 1)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s '%s' has %lld along the "
                            "batch axis %u at batch 1", m->name, outputs ? "output" : "input",
                            info[k].name, (long long)info[k].dims[m->batch_axis], m->batch_axis);
        info[k].dims[m->batch_axis] = -1;
    }
    return LOOM_OK;
}

static loom_status add_model(loom_server *s, const char *name, const char *path,
                             loom_serve_build_fn build, void *user,
                             const loom_serve_model_options *o)
{
    if (!s || !name || !*name)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "a model needs a name");
    if (o && o->struct_size < offsetof(loom_serve_model_options, plan_options))
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': options.struct_size too small",
                        name);
    loom_serve_model_options d = {.struct_size = sizeof d};
    if (o)
        memcpy(&d, o, o->struct_size < sizeof d ? o->struct_size : sizeof d);
    const char *version = d.version && *d.version ? d.version : "1";
    if (d.max_batch > 256)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': max_batch %u is over 256", name,
                        d.max_batch);
    if (d.exact_sizes && d.max_batch > SV_MAX_SIZES)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': exact sizes need max_batch <= "
                        "%d", name, SV_MAX_SIZES);
    if (d.latency_target_s < 0 || d.batch_axis >= LOOM_MAX_RANK)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': bad latency target or batch "
                        "axis", name);
    pthread_mutex_lock(&s->mu);
    int dup = find_model(s, name, version) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (dup)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s' version '%s' is already served",
                        name, version);
    sv_model *m = calloc(1, sizeof *m);
    if (!m)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&m->plan_mu, NULL);
    pthread_cond_init(&m->plan_cv, NULL);
    pthread_mutex_init(&m->stats_mu, NULL);
    m->name = dup_str(name);
    m->version = dup_str(version);
    m->path = dup_str(path);
    m->build = build;
    m->user = user;
    m->batch_axis = d.batch_axis;
    m->max_batch = d.max_batch ? d.max_batch : 8;
    m->queue_limit = d.queue_limit ? d.queue_limit : 1024;
    m->target_s = d.latency_target_s > 0 ? d.latency_target_s : 0.05;
    m->exact = d.exact_sizes;
    sv_estimates_init(&m->est, m->max_batch, m->exact);
    sv_hist_init(&m->met.latency, latency_bounds, N_LAT);
    sv_hist_init(&m->met.queue, latency_bounds, N_LAT);
    sv_hist_init(&m->met.run, latency_bounds, N_LAT);
    sv_hist_init(&m->met.batch, batch_bounds, N_BATCH);
    m->plan_opts.struct_size = sizeof m->plan_opts;
    loom_status st = LOOM_OK;
    if (d.plan_options) {
        const loom_plan_options *po = d.plan_options;
        memcpy(&m->plan_opts, po, po->struct_size < sizeof m->plan_opts ? po->struct_size
                                                                          : sizeof m->plan_opts);
        m->plan_opts.struct_size = sizeof m->plan_opts;
        m->plan_opts.calibration_inputs = NULL; /* borrowed for the call only */
        m->plan_opts.n_calibration_sets = 0;
        m->opt_device = dup_str(po->device);
        m->opt_policy = dup_str(po->policy);
        m->opt_cache_dir = dup_str(po->cache_dir);
        m->plan_opts.device = m->opt_device;
        m->plan_opts.policy = m->opt_policy;
        m->plan_opts.cache_dir = m->opt_cache_dir;
        if (po->n_pins) {
            m->opt_pins = calloc(po->n_pins, sizeof *m->opt_pins);
            if (!m->opt_pins)
                st = LOOM_ERR_OUT_OF_MEMORY;
            for (size_t k = 0; st == LOOM_OK && k < po->n_pins; k++)
                m->opt_pins[k] = dup_str(po->pins[k]);
            m->plan_opts.pins = (const char *const *)m->opt_pins;
        }
    }
    if (!m->name || !m->version || (path && !m->path))
        st = LOOM_ERR_OUT_OF_MEMORY;
    if (st == LOOM_OK && d.cache_bytes) {
        m->cache = sv_cache_create(d.cache_bytes);
        m->cache_on = m->cache != NULL;
        if (!m->cache)
            st = LOOM_ERR_OUT_OF_MEMORY;
    }
    if (st != LOOM_OK) {
        model_free(m);
        return sv_error(st, "out of memory");
    }
    /* The batch-1 graph says what the inputs and outputs are. For an ONNX file the inputs are
     * first read as the model declares them (symbolic dims as 1). */
    loom_graph *g = NULL;
    if (path) {
        loom_onnx_options oo = {.struct_size = sizeof oo, .default_dim = 1};
        if (loom_onnx_load(path, &oo, &g) != LOOM_OK)
            st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s", name, loom_last_error());
        if (st == LOOM_OK) {
            /* Describe with the batch forced to 1 (the model may declare another). */
            size_t n = loom_graph_input_count(g);
            m->in = calloc(n ? n : 1, sizeof *m->in);
            m->n_in = m->in ? n : 0;
            for (size_t k = 0; m->in && k < n; k++) {
                loom_value v = loom_graph_input(g, k);
                loom_value_info(g, v, &m->in[k].dtype, &m->in[k].rank, m->in[k].dims);
                m->in[k].name = dup_str(loom_value_name(g, v));
                if (m->in[k].rank <= m->batch_axis) {
                    st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': input '%s' (rank %u) "
                                  "has no batch axis %u", name, m->in[k].name, m->in[k].rank,
                                  m->batch_axis);
                    break;
                }
            }
            loom_graph_destroy(g);
            g = NULL;
            if (st == LOOM_OK)
                g = model_graph(s, m, 1);
            if (st == LOOM_OK && !g)
                st = LOOM_ERR_INVALID_ARGUMENT;
            for (size_t k = 0; k < m->n_in; k++)
                free((char *)m->in[k].name);
            free(m->in);
            m->in = NULL;
            m->n_in = 0;
        }
    } else {
        g = model_graph(s, m, 1);
        if (!g)
            st = LOOM_ERR_INVALID_ARGUMENT;
        else if (loom_graph_check(g) != LOOM_OK)
            st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s", name, loom_last_error());
    }
    if (st == LOOM_OK)
        st = describe(m, g, 0);
    if (st == LOOM_OK)
        st = describe(m, g, 1);
    loom_graph_destroy(g);
    /* The batch-1 plan now, so a model that cannot run is refused here; the others when
     * first needed, or now with WARM. */
    plan_slot *sl;
    for (uint32_t i = 0; st == LOOM_OK && i < (d.warm ? m->est.n_sizes : 1); i++)
        st = model_plan(s, m, i, &sl);
    if (st != LOOM_OK) {
        model_free(m);
        return st;
    }
    pthread_mutex_lock(&s->mu);
    if (s->n_models == s->cap_models) {
        size_t cap = s->cap_models ? 2 * s->cap_models : 4;
        sv_model **nm = realloc(s->models, cap * sizeof *nm);
        if (!nm) {
            pthread_mutex_unlock(&s->mu);
            model_free(m);
            return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        s->models = nm;
        s->cap_models = cap;
    }
    s->models[s->n_models++] = m;
    pthread_mutex_unlock(&s->mu);
    return LOOM_OK;
}

loom_status loom_server_add_onnx(loom_server *s, const char *name, const char *path,
                                 const loom_serve_model_options *o)
{
    if (!path)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': no path", name ? name : "");
    return add_model(s, name, path, NULL, NULL, o);
}

loom_status loom_server_add_graph(loom_server *s, const char *name, loom_serve_build_fn build,
                                  void *user, const loom_serve_model_options *o)
{
    if (!build)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': no graph builder",
                        name ? name : "");
    return add_model(s, name, NULL, build, user, o);
}

size_t loom_server_model_count(const loom_server *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    size_t n = s->n_models;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return n;
}

static sv_model *model_at(const loom_server *s, size_t i)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    sv_model *m = i < s->n_models ? s->models[i] : NULL;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return m;
}

const char *loom_server_model_name(const loom_server *s, size_t i)
{
    sv_model *m = model_at(s, i);
    return m ? m->name : NULL;
}

const char *loom_server_model_version(const loom_server *s, size_t i)
{
    sv_model *m = model_at(s, i);
    return m ? m->version : NULL;
}

static sv_model *lookup(const loom_server *s, const char *name, const char *version)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    sv_model *m = find_model(s, name, version);
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return m;
}

size_t loom_server_model_inputs(const loom_server *s, const char *name, const char *version,
                                loom_serve_tensor_info *info, size_t capacity)
{
    sv_model *m = lookup(s, name, version);
    if (!m)
        return 0;
    for (size_t k = 0; k < m->n_in && k < capacity; k++)
        info[k] = m->in[k];
    return m->n_in;
}

size_t loom_server_model_outputs(const loom_server *s, const char *name, const char *version,
                                 loom_serve_tensor_info *info, size_t capacity)
{
    sv_model *m = lookup(s, name, version);
    if (!m)
        return 0;
    for (size_t k = 0; k < m->n_out && k < capacity; k++)
        info[k] = m->out[k];
    return m->n_out;
}

loom_status loom_server_set_cache(loom_server *s, const char *name, const char *version,
                                  int enable)
{
    sv_model *m = lookup(s, name, version);
    if (!m)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "no model '%s'", name ? name : "");
    pthread_mutex_lock(&s->mu);
    m->cache_on = enable && m->cache;
    pthread_mutex_unlock(&s->mu);
    return LOOM_OK;
}

int sv_server_accepting(const loom_server *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    int a = !s->draining;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return a;
}

int sv_server_find_model(const loom_server *s, const char *name, const char *version,
                         const char **canonical_version, uint32_t *max_batch)
{
    sv_model *m = lookup(s, name, version);
    if (!m)
        return 0;
    if (canonical_version)
        *canonical_version = m->version;
    if (max_batch)
        *max_batch = m->max_batch;
    return 1;
}

void sv_server_count_refusal(loom_server *s, const char *model, loom_serve_code code)
{
    sv_model *m = lookup(s, model, NULL);
    if (m) {
        pthread_mutex_lock(&m->stats_mu);
        m->met.answers[code]++;
        pthread_mutex_unlock(&m->stats_mu);
    } else {
        pthread_mutex_lock(&s->stats_mu);
        s->refused_unknown++;
        pthread_mutex_unlock(&s->stats_mu);
    }
}

/* ---- requests ---------------------------------------------------------------------------- */

static sv_key request_key(const sv_model *m, loom_tensor *const *inputs)
{
    XXH3_state_t *st = XXH3_createState();
    sv_key k = {0, 0};
    if (!st)
        return k;
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, m->name, strlen(m->name) + 1);
    XXH3_128bits_update(st, m->version, strlen(m->version) + 1);
    for (size_t i = 0; i < m->n_in; i++) {
        int64_t head[2 + LOOM_MAX_RANK] = {0};
        head[0] = loom_tensor_dtype(inputs[i]);
        head[1] = loom_tensor_rank(inputs[i]);
        loom_tensor_dims(inputs[i], head + 2);
        XXH3_128bits_update(st, m->in[i].name, strlen(m->in[i].name) + 1);
        XXH3_128bits_update(st, head, sizeof head);
        XXH3_128bits_update(st, loom_tensor_data(inputs[i]), loom_tensor_nbytes(inputs[i]));
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    k.lo = h.low64;
    k.hi = h.high64;
    return k;
}

/* Check REQ's inputs against M and put them in model order into ORDERED; sets *ROWS. */
static loom_serve_code check_inputs(const sv_model *m, const loom_serve_request *req,
                                    const loom_tensor **ordered, uint32_t *rows)
{
    if (req->n_inputs != m->n_in)
        return sv_refuse(LOOM_SERVE_BAD_REQUEST, "model '%s' takes %zu inputs, the request "
                         "has %zu", m->name, m->n_in, req->n_inputs);
    for (size_t k = 0; k < m->n_in; k++)
        ordered[k] = NULL;
    for (size_t i = 0; i < req->n_inputs; i++) {
        size_t k = i;
        if (req->input_names) {
            const char *nm = req->input_names[i] ? req->input_names[i] : "";
            for (k = 0; k < m->n_in && strcmp(m->in[k].name, nm); k++)
                ;
            if (k == m->n_in)
                return sv_refuse(LOOM_SERVE_BAD_REQUEST, "model '%s' has no input named '%s'",
                                 m->name, nm);
            if (ordered[k])
                return sv_refuse(LOOM_SERVE_BAD_REQUEST, "input '%s' given twice", nm);
        }
        if (!req->inputs[i])
            return sv_refuse(LOOM_SERVE_BAD_REQUEST, "input '%s' is NULL", m->in[k].name);
        ordered[k] = req->inputs[i];
    }
    *rows = 0;
    for (size_t k = 0; k < m->n_in; k++) {
        const loom_serve_tensor_info *in = &m->in[k];
        const loom_tensor *t = ordered[k];
        if (loom_tensor_dtype(t) != in->dtype)
            return sv_refuse(LOOM_SERVE_BAD_REQUEST, "input '%s' is %s, the model wants %s",
                             in->name, loom_dtype_name(loom_tensor_dtype(t)),
                             loom_dtype_name(in->dtype));
        int64_t dims[LOOM_MAX_RANK];
        loom_tensor_dims(t, dims);
        int shape_ok = loom_tensor_rank(t) == in->rank;
        for (uint32_t d = 0; shape_ok && d < in->rank; d++)
            if (d != m->batch_axis && dims[d] != in->dims[d])
                shape_ok = 0;
        if (!shape_ok) {
            char want[160] = "", got[160] = "";
            size_t a = 0, b = 0;
            for (uint32_t d = 0; d < in->rank && a < sizeof want - 24; d++)
                a += (size_t)snprintf(want + a, sizeof want - a, "%s%lld", d ? "," : "",
                                      (long long)in->dims[d]);
            for (uint32_t d = 0; d < loom_tensor_rank(t) && b < sizeof got - 24; d++)
                b += (size_t)snprintf(got + b, sizeof got - b, "%s%lld", d ? "," : "",
                                      (long long)dims[d]);
            return sv_refuse(LOOM_SERVE_BAD_REQUEST, "input '%s' has shape [%s], the model wants "
                             "[%s] (-1: any batch)", in->name, got, want);
        }
        int64_t r = dims[m->batch_axis];
        if (k == 0) {
            if (r < 1 || r > m->max_batch)
                return sv_refuse(LOOM_SERVE_BAD_REQUEST, "input '%s' has a batch of %lld, the "
                                 "model takes 1 to %u", in->name, (long long)r, m->max_batch);
            *rows = (uint32_t)r;
        } else if (r != *rows) {
            return sv_refuse(LOOM_SERVE_BAD_REQUEST, "input '%s' has a batch of %lld, input "
                             "'%s' %u", in->name, (long long)r, m->in[0].name, *rows);
        }
    }
    return LOOM_SERVE_OK;
}

static void answer_hit(sv_req *r, const sv_blob *blob, loom_server *s)
{
    sv_model *m = r->model;
    loom_tensor *outs[64];
    figures f = {.cache_hit = 1};
    if (m->n_out <= 64 && blob_to_outputs(blob, outs, m->n_out) == 0)
        answer(s, r, LOOM_SERVE_OK, NULL, outs, &f);
    else
        answer(s, r, LOOM_SERVE_FAILED, "out of memory reading a cached result", NULL, &f);
}

loom_serve_code loom_serve_submit(loom_server *s, const loom_serve_request *req,
                                  loom_serve_done_fn done, void *user)
{
    if (!s || !req || !done || req->struct_size < offsetof(loom_serve_request, timeout_s))
        return sv_refuse(LOOM_SERVE_BAD_REQUEST, "loom_serve_submit: no server, request or "
                         "callback, or a small struct_size");
    loom_serve_request rq = {0};
    memcpy(&rq, req, req->struct_size < sizeof rq ? req->struct_size : sizeof rq);
    double now = sv_now();
    sv_model *m = lookup(s, rq.model, rq.version);
    if (!m) {
        sv_server_count_refusal(s, rq.model, LOOM_SERVE_NOT_FOUND);
        if (rq.version && lookup(s, rq.model, NULL))
            return sv_refuse(LOOM_SERVE_NOT_FOUND, "model '%s' has no version '%s'", rq.model,
                             rq.version);
        return sv_refuse(LOOM_SERVE_NOT_FOUND, "no model '%s'", rq.model ? rq.model : "");
    }
    const loom_tensor *ordered[64];
    uint32_t rows = 0;
    loom_serve_code code = m->n_in > 64 ? sv_refuse(LOOM_SERVE_BAD_REQUEST, "too many inputs")
                                        : check_inputs(m, &rq, ordered, &rows);
    if (code == LOOM_SERVE_OK && !(rq.timeout_s >= 0))
        code = sv_refuse(LOOM_SERVE_BAD_REQUEST, "a negative timeout");
    if (code != LOOM_SERVE_OK) {
        sv_server_count_refusal(s, m->name, code);
        return code;
    }
    sv_req *r = calloc(1, sizeof *r);
    if (r) {
        r->model = m;
        r->inputs = calloc(m->n_in, sizeof *r->inputs);
        r->id = dup_str(rq.id ? rq.id : "");
    }
    int ok = r && r->inputs && r->id;
    for (size_t k = 0; ok && k < m->n_in; k++)
        ok = (r->inputs[k] = tensor_copy(ordered[k])) != NULL;
    if (!ok) {
        request_free(r);
        sv_server_count_refusal(s, m->name, LOOM_SERVE_FAILED);
        return sv_refuse(LOOM_SERVE_UNAVAILABLE, "out of memory copying the inputs");
    }
    r->rows = rows;
    r->t_submit = now;
    r->deadline = rq.timeout_s > 0 ? now + rq.timeout_s : INFINITY;
    r->batch_deadline = rq.timeout_s > 0 ? r->deadline : now + m->target_s;
    r->priority = rq.priority;
    r->done = done;
    r->user = user;

    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        request_free(r);
        sv_server_count_refusal(s, m->name, LOOM_SERVE_UNAVAILABLE);
        return sv_refuse(LOOM_SERVE_UNAVAILABLE, "the server is shutting down");
    }
    if (m->depth >= m->queue_limit) {
        pthread_mutex_unlock(&s->mu);
        request_free(r);
        sv_server_count_refusal(s, m->name, LOOM_SERVE_QUEUE_FULL);
        return sv_refuse(LOOM_SERVE_QUEUE_FULL, "model '%s': the queue is full (%u waiting)",
                         m->name, m->queue_limit);
    }
    s->outstanding++;
    int use_cache = m->cache_on && !rq.no_cache;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&m->stats_mu);
    m->met.accepted++;
    pthread_mutex_unlock(&m->stats_mu);

    if (use_cache) {
        r->key = request_key(m, r->inputs);
        sv_blob *hit = NULL;
        sv_lookup lk = sv_cache_begin(m->cache, r->key, r, &hit);
        if (lk == SV_CACHE_HIT) {
            answer_hit(r, hit, s);
            sv_blob_release(hit);
            return LOOM_SERVE_OK;
        }
        if (lk == SV_CACHE_FOLLOW)
            return LOOM_SERVE_OK; /* answered with its leader */
        r->leader = 1;
    }
    pthread_mutex_lock(&s->mu);
    queue_insert(m, r);
    /* Arrival statistics for the batcher: mean gap between arrivals and rows per arrival. */
    if (m->last_arrival > 0) {
        double gap = now - m->last_arrival;
        if (gap > 1.0 || m->mean_gap <= 0) {
            m->mean_gap = gap > 1.0 ? 0 : gap;
            m->mean_rows = rows;
        } else {
            m->mean_gap += 0.1 * (gap - m->mean_gap);
            m->mean_rows += 0.1 * (rows - m->mean_rows);
        }
    }
    m->last_arrival = now;
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    return LOOM_SERVE_OK;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    loom_serve_result *result;
    int done;
} waiter;

static void infer_done(loom_serve_result *result, void *user)
{
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->result = result;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

loom_serve_code loom_serve_infer(loom_server *s, const loom_serve_request *req,
                                 loom_serve_result **out)
{
    waiter w = {.result = NULL};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    loom_serve_code code = loom_serve_submit(s, req, infer_done, &w);
    if (code == LOOM_SERVE_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        *out = w.result;
    } else {
        *out = result_new(NULL, req && req->struct_size >= offsetof(loom_serve_request, id) &&
                                        req->model ? req->model : "",
                          NULL, code, loom_serve_last_error());
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (!*out)
        return LOOM_SERVE_FAILED;
    return (*out)->code;
}

/* ---- statistics and metrics -------------------------------------------------------------- */

loom_status loom_server_model_stats(const loom_server *s, const char *name, const char *version,
                                    loom_serve_model_stats *out)
{
    sv_model *m = lookup(s, name, version);
    if (!m || !out || out->struct_size < sizeof *out)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "no model '%s' or a small struct_size",
                        name ? name : "");
    loom_serve_model_stats r = {.struct_size = sizeof r};
    pthread_mutex_lock(&m->stats_mu);
    r.requests = m->met.accepted;
    r.ok = m->met.answers[LOOM_SERVE_OK];
    r.failed = m->met.answers[LOOM_SERVE_FAILED];
    r.deadline_missed = m->met.answers[LOOM_SERVE_DEADLINE];
    r.rejected = m->met.answers[LOOM_SERVE_BAD_REQUEST] + m->met.answers[LOOM_SERVE_QUEUE_FULL] +
                 m->met.answers[LOOM_SERVE_UNAVAILABLE] + m->met.answers[LOOM_SERVE_NOT_FOUND];
    r.batches = m->met.batches;
    r.rows_run = m->met.rows_run;
    r.rows_padded = m->met.rows_padded;
    pthread_mutex_unlock(&m->stats_mu);
    if (m->cache) {
        sv_cache_stats cs;
        sv_cache_get_stats(m->cache, &cs);
        r.cache_hits = cs.hits;
        r.cache_misses = cs.misses;
        r.cache_evictions = cs.evictions;
        r.cache_coalesced = cs.coalesced;
        r.cache_bytes = cs.bytes;
    }
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    r.queue_depth = m->depth;
    for (uint32_t k = 0; k < 7; k++) {
        uint32_t i = sv_size_index(&m->est, 1u << k);
        r.predicted_run_s[k] = i < m->est.n_sizes && m->est.sizes[i] == (1u << k)
                                   ? sv_estimate(&m->est, i) : 0;
    }
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    *out = r;
    return LOOM_OK;
}

/* A growable string for the metrics text. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Label values are escaped as the format asks: backslash, double quote and newline. */
static void sb_label(strbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_printf(b, "\\%c", *v);
        else if (*v == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *v);
    }
}

static void sb_model_labels(strbuf *b, const sv_model *m)
{
    sb_printf(b, "model=\"");
    sb_label(b, m->name);
    sb_printf(b, "\",version=\"");
    sb_label(b, m->version);
    sb_printf(b, "\"");
}

static void sb_hist(strbuf *b, const char *name, const sv_model *m, const sv_hist *h)
{
    uint64_t cum = 0;
    for (uint32_t k = 0; k <= h->n_bounds; k++) {
        cum += h->counts[k];
        sb_printf(b, "%s_bucket{", name);
        sb_model_labels(b, m);
        if (k < h->n_bounds)
            sb_printf(b, ",le=\"%.6g\"} %llu\n", h->bounds[k], (unsigned long long)cum);
        else
            sb_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum{", name);
    sb_model_labels(b, m);
    sb_printf(b, "} %.17g\n%s_count{", h->sum, name);
    sb_model_labels(b, m);
    sb_printf(b, "} %llu\n", (unsigned long long)h->count);
}

loom_status loom_server_metrics_text(const loom_server *s, char **out)
{
    *out = NULL;
    strbuf b = {0};
    size_t n = loom_server_model_count(s);
    sv_model **ms = calloc(n ? n : 1, sizeof *ms);
    model_metrics *mm = calloc(n ? n : 1, sizeof *mm);
    sv_cache_stats *cs = calloc(n ? n : 1, sizeof *cs);
    size_t *depth = calloc(n ? n : 1, sizeof *depth);
    if (!ms || !mm || !cs || !depth) {
        free(ms);
        free(mm);
        free(cs);
        free(depth);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    /* A consistent copy first, then the text without any lock held. */
    for (size_t i = 0; i < n; i++) {
        ms[i] = model_at(s, i);
        pthread_mutex_lock(&ms[i]->stats_mu);
        mm[i] = ms[i]->met;
        pthread_mutex_unlock(&ms[i]->stats_mu);
        if (ms[i]->cache)
            sv_cache_get_stats(ms[i]->cache, &cs[i]);
        pthread_mutex_lock((pthread_mutex_t *)&s->mu);
        depth[i] = ms[i]->depth;
        pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    }
    sb_printf(&b, "# HELP loom_requests_total Inference requests answered or refused, by model "
                  "and outcome.\n# TYPE loom_requests_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < N_CODES; c++) {
            sb_printf(&b, "loom_requests_total{");
            sb_model_labels(&b, ms[i]);
            sb_printf(&b, ",status=\"%s\"} %llu\n", loom_serve_code_name((loom_serve_code)c),
                      (unsigned long long)mm[i].answers[c]);
        }
    uint64_t unknown;
    pthread_mutex_lock((pthread_mutex_t *)&s->stats_mu);
    unknown = s->refused_unknown;
    pthread_mutex_unlock((pthread_mutex_t *)&s->stats_mu);
    sb_printf(&b, "# HELP loom_unknown_model_requests_total Requests naming a model that is not "
                  "served.\n# TYPE loom_unknown_model_requests_total counter\n"
                  "loom_unknown_model_requests_total %llu\n", (unsigned long long)unknown);
    struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"loom_request_duration_seconds", "Time from submission to answer.",
         offsetof(model_metrics, latency)},
        {"loom_queue_duration_seconds", "Time requests waited before their batch started.",
         offsetof(model_metrics, queue)},
        {"loom_batch_run_duration_seconds", "Run time of each batch.",
         offsetof(model_metrics, run)},
        {"loom_batch_size", "Rows of each batch run (padding included).",
         offsetof(model_metrics, batch)},
    };
    for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name, hists[h].help,
                  hists[h].name);
        for (size_t i = 0; i < n; i++)
            sb_hist(&b, hists[h].name, ms[i],
                    (const sv_hist *)((const char *)&mm[i] + hists[h].off));
    }
    struct {
        const char *name, *help, *type;
    } simple[] = {
        {"loom_batches_total", "Batches run.", "counter"},
        {"loom_padding_rows_total", "Rows of padding added to fill a batch size.", "counter"},
        {"loom_cache_hits_total", "Requests answered from the result cache or by an identical "
                                  "request in flight.", "counter"},
        {"loom_cache_misses_total", "Cache lookups that found nothing.", "counter"},
        {"loom_cache_evictions_total", "Results evicted from the cache for room.", "counter"},
        {"loom_cache_bytes", "Bytes of results held by the cache.", "gauge"},
        {"loom_queue_depth", "Requests waiting now.", "gauge"},
    };
    for (size_t q = 0; q < sizeof simple / sizeof simple[0]; q++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", simple[q].name, simple[q].help,
                  simple[q].name, simple[q].type);
        for (size_t i = 0; i < n; i++) {
            unsigned long long v = 0;
            switch (q) {
            case 0: v = mm[i].batches; break;
            case 1: v = mm[i].rows_padded; break;
            case 2: v = cs[i].hits; break;
            case 3: v = cs[i].misses; break;
            case 4: v = cs[i].evictions; break;
            case 5: v = cs[i].bytes; break;
            default: v = depth[i]; break;
            }
            sb_printf(&b, "%s{", simple[q].name);
            sb_model_labels(&b, ms[i]);
            sb_printf(&b, "} %llu\n", v);
        }
    }
    sb_printf(&b, "# HELP loom_device_busy_seconds_total Seconds devices spent running nodes of "
                  "served batches.\n# TYPE loom_device_busy_seconds_total counter\n");
    pthread_mutex_lock((pthread_mutex_t *)&s->stats_mu);
    for (size_t d = 0; d < s->n_devices; d++) {
        sb_printf(&b, "loom_device_busy_seconds_total{device=\"");
        sb_label(&b, s->device_ids[d]);
        sb_printf(&b, "\"} %.9f\n", s->device_busy_s[d]);
    }
    pthread_mutex_unlock((pthread_mutex_t *)&s->stats_mu);
    free(ms);
    free(mm);
    free(cs);
    free(depth);
    if (b.failed) {
        free(b.p);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    /* loom_string_free is free(); the string is handed over as it is. */
    *out = b.p;
    return LOOM_OK;
}
