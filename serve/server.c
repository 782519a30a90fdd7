/*
 * The server: models with one plan per batch size (made lazily, behind model_plan), a priority
 * queue per model, worker threads that ask the batching policy which batch to run next, run it,
 * split the outputs back per request and answer each request exactly once; the result cache
 * with coalescing of identical requests; counters and histograms for the metrics.
 */
#include "server_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- answering --------------------------------------------------------------------------- */

static void count_answer(sv_model *m, loom_serve_code code, const loom_serve_result *r)
{
    if (m->primary)
        m = m->primary; /* the metrics of a model are its primary's, all variants together */
    pthread_mutex_lock(&m->stats_mu);
    m->met.answers[code]++;
    if (r) {
        sv_hist_add(&m->met.latency, r->total_s);
        if (!r->cache_hit && r->batch_rows)
            sv_hist_add(&m->met.queue, r->queue_s);
    }
    pthread_mutex_unlock(&m->stats_mu);
}

void sv_request_free(sv_req *r)
{
    if (!r)
        return;
    if (r->inputs && r->model && !r->borrowed)
        for (size_t k = 0; k < r->model->n_in; k++)
            loom_tensor_destroy(r->inputs[k]);
    free(r->qos);
    free(r->note);
    if (r->fallback && r->model)
        sv_free_outputs(r->fallback, r->model->n_out);
    free(r);
}

void sv_free_outputs(loom_tensor **outs, size_t n)
{
    if (!outs)
        return;
    for (size_t k = 0; k < n; k++)
        loom_tensor_destroy(outs[k]);
    free(outs);
}

void sv_server_finished(loom_server *s)
{
    /* Without the lock while others are outstanding; the last one takes it, so that the count
     * reaches 0 only under it: a drain or destroy that sees 0 there knows no thread is still
     * about to touch the server. */
    long n = atomic_load_explicit(&s->outstanding, memory_order_relaxed);
    while (n > 1)
        if (atomic_compare_exchange_weak_explicit(&s->outstanding, &n, n - 1,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return;
    pthread_mutex_lock(&s->mu);
    if (atomic_fetch_sub_explicit(&s->outstanding, 1, memory_order_acq_rel) == 1)
        pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Answer R (and, when it leads a cache entry, every request that followed it). OUTS
 * (n_out tensors of R's rows, ownership taken; NULL unless CODE is OK). Frees R. */
void sv_answer(loom_server *s, sv_req *r, loom_serve_code code, const char *message,
                   loom_tensor **outs, const figures *f)
{
    sv_model *m = r->model;
    double now = sv_now();
    if (r->leader) {
        sv_blob *blob = code == LOOM_SERVE_OK ? sv_outputs_to_blob(outs, m->n_out) : NULL;
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
                if (!fo || !blob || sv_blob_to_outputs(blob, fo, m->n_out) != 0) {
                    fc = LOOM_SERVE_FAILED;
                    fm = "out of memory copying a coalesced result";
                    fo = NULL;
                }
            } else {
                fo = NULL;
            }
            figures ff = *f;
            ff.cache_hit = 1;
            sv_answer(s, fr, fc, fm, fo, &ff);
        }
        free(waiters);
        sv_blob_release(blob);
    }
    /* Cascades: a lite answer may be escalated instead of answered; an escalated request whose
     * full run did not answer falls back to the lite answer, marked. */
    if (r->stage == SV_STAGE_LITE_FIRST && code == LOOM_SERVE_OK && outs &&
        sv_cascade_escalate(s, r, outs))
        return;
    int fallback = 0;
    loom_tensor **free_array = NULL; /* an array of tensors handed over here */
    if (r->stage == SV_STAGE_ESCALATED) {
        r->stage = SV_STAGE_FINAL;
        if (code == LOOM_SERVE_OK) {
            r->path = "lite>full";
            sv_free_outputs(r->fallback, m->n_out);
        } else {
            if (outs)
                for (size_t k = 0; k < m->n_out; k++)
                    loom_tensor_destroy(outs[k]);
            outs = free_array = r->fallback;
            free(r->note);
            r->note = sv_strdup(message ? message : "");
            code = LOOM_SERVE_OK;
            message = NULL;
            r->path = "lite>full-failed";
            fallback = 1;
        }
        r->fallback = NULL;
    } else if (r->stage == SV_STAGE_FINAL && r->path && strstr(r->path, "-failed")) {
        fallback = 1;
    }
    int answered = m->variant;
    if (r->path)
        answered = !strcmp(r->path, "lite") || strstr(r->path, "-failed") ? SV_LITE : SV_FULL;
    const char *vn = answered == SV_LITE ? "lite" : "full";
    int ok = code == LOOM_SERVE_OK;
    sv_result_text txt = {.code = code, .message = ok && r->note ? r->note : message,
                          .id = r->id, .model = m->name, .version = m->version,
                          .devices = f->devices, .variant = ok ? vn : "",
                          .path = ok ? (r->path ? r->path : vn) : "", .qos = ok ? r->qos : ""};
    loom_serve_result *res = sv_result_make(&txt, m, outs);
    if (res) {
        outs = NULL; /* the result's now */
        res->confidence = ok ? r->confidence : -1;
        res->queue_s = f->queue_s;
        res->run_s = f->run_s;
        res->batch_rows = f->batch_rows;
        res->batch_requests = f->batch_requests;
        res->cache_hit = f->cache_hit;
        res->total_s = now - r->t_submit;
    }
    if (outs)
        for (size_t k = 0; k < m->n_out; k++)
            loom_tensor_destroy(outs[k]);
    free(free_array);
    count_answer(m, res ? res->code : LOOM_SERVE_FAILED, res);
    if (res && res->code == LOOM_SERVE_OK)
        sv_qos_count(m, answered, 0, fallback);
    /* Out of memory for the result itself: the callback still gets its one call. */
    if (!res)
        res = sv_result_new(NULL, m->name, r->id, LOOM_SERVE_FAILED, "out of memory");
    sv_trace_request(s->trace, r, res, now);
    /* Its record in the audit journal before the answer leaves (or the request fails). */
    if (s->audit && res)
        sv_audit_record(s->audit, r, f, res);
    r->done(res, r->user);
    loom_server *srv = s;
    sv_request_free(r);
    sv_server_finished(srv);
}

/* ---- running a batch --------------------------------------------------------------------- */

static void answer_all(loom_server *s, sv_req **reqs, size_t n, loom_serve_code code,
                       const char *msg, const figures *f)
{
    for (size_t k = 0; k < n; k++)
        sv_answer(s, reqs[k], code, msg, NULL, f);
}

static void resources_hold(loom_server *s, uint64_t res, int delta)
{
    for (int r = 0; r < 64; r++)
        if (res >> r & 1)
            s->res_busy[r] = (uint32_t)((int)s->res_busy[r] + delta);
}

/* Answering a batch takes at least this long on average before an idle worker is woken to
 * start the next batch meanwhile: a wake-up costs both threads a few microseconds, which
 * answering a batch of a tiny model in less time than this does not repay (measured with the
 * digits model over HTTP, maximum QPS at p99 <= 20 ms, audit on / off paired per round: -7%
 * and -21% when every release woke a worker, +3% and -3% with this threshold). */
#define SV_WAKE_FOR_ANSWER_S 20e-6

/* The batch of ROWS rows of M (size index IDX) holding RES is off its devices after a run of
 * RUN_S seconds (0: it did not run; else that size's estimate learns it, under the same lock):
 * they take the next batch while this one's requests are answered (splitting, the audit
 * record, the callback or HTTP response), on this worker's thread. A worker waits for that
 * next batch: one that waited for these devices, or an idle one when requests are queued (a
 * request that arrived while the devices were busy woke nobody, wake_for) and answering takes
 * long enough to be worth it (SV_WAKE_FOR_ANSWER_S); else this worker takes the queued
 * requests once it has answered. Takes the server's lock. */
static void release_batch(loom_server *s, sv_model *m, uint64_t res, uint32_t rows, uint32_t idx,
                          double run_s)
{
    pthread_mutex_lock(&s->mu);
    if (run_s > 0)
        sv_estimate_measure(&m->est, idx, run_s);
    m->running_rows -= rows;
    resources_hold(s, res, -1);
    /* Only then: waking every worker after every batch cost each request of a closed loop
     * ~20 us over HTTP. */
    if (s->res_waiters) {
        s->res_waiters = 0;
        pthread_cond_broadcast(&s->work_cv);
    } else if (s->idle > s->signalled && s->answer_s >= SV_WAKE_FOR_ANSWER_S) {
        int queued = 0;
        for (size_t i = 0; i < s->n_models && !queued; i++)
            queued = s->models[i]->head != NULL;
        if (queued) {
            s->signalled++;
            pthread_cond_signal(&s->work_cv);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* Run REQS (N requests, taken off M's queue) as one batch of size index IDX on a plan whose
 * devices RES this worker holds (released here, as soon as the plan has run), and answer each
 * request. Returns the seconds answering took after the release (0 when the batch failed
 * before running). */
static double run_batch(loom_server *s, sv_model *m, sv_req **reqs, size_t n, uint32_t idx,
                        uint64_t res)
{
    double t_start = sv_now();
    uint32_t size = m->est.sizes[idx];
    uint32_t rows = 0;
    for (size_t k = 0; k < n; k++)
        rows += reqs[k]->rows;
    figures f = {.batch_rows = size, .batch_requests = (uint32_t)n};
    plan_slot *sl;
    if (sv_model_plan(s, m, idx, &sl) != LOOM_OK) {
        release_batch(s, m, res, rows, idx, 0);
        answer_all(s, reqs, n, LOOM_SERVE_FAILED, loom_serve_last_error(), &f);
        return 0;
    }
    f.devices = sl->devices;
    f.plan_id = sl->plan_id;
    size_t n_in = m->n_in, n_out = m->n_out;
    loom_tensor **ins = calloc(n_in, sizeof *ins);
    loom_tensor **outs = calloc(n_out, sizeof *outs);
    const loom_tensor **pin = calloc(n_in ? n_in : 1, sizeof *pin); /* in the plan's order */
    int direct = n == 1 && reqs[0]->rows == size;
    int ok = ins && outs && pin;
    for (size_t k = 0; ok && k < n_in; k++) {
        if (direct) {
            ins[k] = reqs[0]->inputs[k];
            continue;
        }
        ins[k] = sv_tensor_with_rows(reqs[0]->inputs[k], m->batch_axis, size);
        if (!ins[k]) {
            ok = 0;
            break;
        }
        int64_t row = 0;
        for (size_t r = 0; r < n; r++) {
            sv_copy_rows(ins[k], row, reqs[r]->inputs[k], 0, reqs[r]->rows, m->batch_axis);
            row += reqs[r]->rows;
        }
        if (row < size) /* padding: zeros */
            sv_copy_rows(ins[k], row, NULL, 0, size - row, m->batch_axis);
    }
    if (ok && loom_plan_make_outputs(sl->plan, outs, n_out) != LOOM_OK)
        ok = 0;
    if (!ok) {
        if (!direct && ins)
            for (size_t k = 0; k < n_in; k++)
                loom_tensor_destroy(ins[k]);
        free(ins);
        free(outs);
        free(pin);
        release_batch(s, m, res, rows, idx, 0);
        answer_all(s, reqs, n, LOOM_SERVE_FAILED, "out of memory forming a batch", &f);
        return 0;
    }
    loom_node_timing *tl = calloc(sl->n_nodes ? sl->n_nodes : 1, sizeof *tl);
    loom_run_stats st = {.struct_size = sizeof st, .timeline = tl,
                         .timeline_capacity = tl ? sl->n_nodes : 0};
    double t0 = sv_now();
    size_t n_pin = sv_plan_inputs(m, sl, ins, pin);
    loom_status rs = loom_plan_run(sl->plan, pin, n_pin, outs, n_out, &st);
    free(pin);
    double t1 = sv_now();
    if (!direct)
        for (size_t k = 0; k < n_in; k++)
            loom_tensor_destroy(ins[k]);
    free(ins);
    f.run_s = t1 - t0;

    sv_trace_batch(s->trace, m, t0, t1, rows, size, n, sl->devices, rs == LOOM_OK);
    release_batch(s, m, res, rows, idx, rs == LOOM_OK ? t1 - t0 : 0);
    double t_released = sv_now();
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
        return sv_now() - t_released;
    }
    int64_t row = 0;
    for (size_t r = 0; r < n; r++) {
        sv_req *q = reqs[r];
        f.queue_s = t_start - q->t_submit;
        if (direct) {
            sv_answer(s, q, LOOM_SERVE_OK, NULL, outs, &f);
            free(outs);
            return sv_now() - t_released;
        }
        loom_tensor *mine[64];
        loom_tensor **o = n_out <= 64 ? mine : NULL;
        int good = o != NULL;
        for (size_t k = 0; good && k < n_out; k++) {
            o[k] = sv_tensor_with_rows(outs[k], m->batch_axis, q->rows);
            if (!o[k]) {
                for (size_t j = 0; j < k; j++)
                    loom_tensor_destroy(o[j]);
                good = 0;
                break;
            }
            sv_copy_rows(o[k], 0, outs[k], row, q->rows, m->batch_axis);
        }
        row += q->rows;
        if (good)
            sv_answer(s, q, LOOM_SERVE_OK, NULL, o, &f);
        else
            sv_answer(s, q, LOOM_SERVE_FAILED, "out of memory splitting a batch", NULL, &f);
    }
    for (size_t k = 0; k < n_out; k++)
        loom_tensor_destroy(outs[k]);
    free(outs);
    return sv_now() - t_released;
}

/* ---- the workers ------------------------------------------------------------------------- */

uint64_t sv_server_plan_resources(const loom_server *s, loom_plan *plan)
{
    uint64_t res = 0;
    for (size_t i = 0; plan && i < loom_plan_node_count(plan); i++) {
        const char *d = loom_plan_node_device(plan, i);
        for (size_t k = 0; d && k < s->n_devices; k++)
            if (!strcmp(d, s->device_ids[k]))
                res |= s->device_res[k];
    }
    return res ? res : 1;
}

/* The resources a batch of size index I of M would hold (the host's while its plan is not
 * made: making it runs there). Under the server's lock. */
static uint64_t size_resources(const sv_model *m, uint32_t i)
{
    return i < SV_MAX_SIZES && m->size_res[i] ? m->size_res[i] : 1;
}

/* Whether every resource in RES has room for one more batch. Under the server's lock. */
static int resources_free(const loom_server *s, uint64_t res)
{
    for (int r = 0; r < 64; r++)
        if ((res >> r & 1) && s->res_busy[r] >= s->res_cap[r])
            return 0;
    return 1;
}

/* Whether a worker woken now could start a batch of M: some size's devices have room. When
 * none has, every one of them is held by a running batch, whose worker decides again when it
 * ends and sees what was queued meanwhile. Under the server's lock. */
static int model_can_start(const loom_server *s, const sv_model *m)
{
    for (uint32_t i = 0; i < m->est.n_sizes; i++)
        if (resources_free(s, size_resources(m, i)))
            return 1;
    return 0;
}

/* Wake a waiting worker for a request of M just queued, unless none waits, one is already on
 * its way (it sees this request too), or no batch of M could start now. Under the server's
 * lock; returns whether to signal WORK_CV (after unlocking, so the worker does not wake only
 * to block on the lock). */
static int wake_for(loom_server *s, const sv_model *m)
{
    int wake = s->idle > s->signalled && model_can_start(s, m);
    s->signalled += (uint32_t)wake;
    return wake;
}

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
    m->n_special -= (size_t)r->special;
    r->special = 0;
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
    /* Special (see sv_model.n_special): anything that could put the head's place as the
     * oldest and the earliest deadline in doubt. */
    r->special = r->deadline < INFINITY || r->priority != 0 || r->stage != SV_STAGE_PLAIN ||
                 r->batch_deadline != r->t_submit + m->target_s ||
                 (r->prev && r->prev->t_submit > r->t_submit);
    m->n_special += (size_t)r->special;
}

/* Called with the lock held: take every request past its deadline out of the queues. */
static sv_req *take_expired(loom_server *s, double now)
{
    sv_req *list = NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        sv_model *m = s->models[i];
        if (m->n_special == 0)
            continue; /* no request of its own deadline: none can expire */
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
    pthread_setname_np(pthread_self(), "loom-serve");
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
                sv_answer(s, expired, LOOM_SERVE_DEADLINE,
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
            if (m->n_special == 0) {
                v.deadline = m->head->batch_deadline; /* arrival order (n_special) */
                v.oldest_s = m->head->t_submit;
            }
            for (sv_req *r = m->n_special ? m->head : NULL; r; r = r->next) {
                if (r->batch_deadline < v.deadline)
                    v.deadline = r->batch_deadline;
                if (v.oldest_s == 0 || r->t_submit < v.oldest_s)
                    v.oldest_s = r->t_submit;
            }
            if (!s->draining && !s->stopping && m->mean_gap > 0)
                v.arrival_rate = m->mean_rows / m->mean_gap;
            sv_decision d = sv_decide(&v, &m->est);
            /* A batch whose devices are busy with another waits for it to end (its end wakes
             * the workers), then is decided again with what has arrived meanwhile. */
            if (d.go && !resources_free(s, size_resources(m, d.size_index))) {
                s->res_waiters = 1;
                continue;
            }
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
            s->idle++;
            if (wake == INFINITY) {
                pthread_cond_wait(&s->work_cv, &s->mu);
            } else {
                struct timespec ts;
                double w = wake;
                ts.tv_sec = (time_t)w;
                ts.tv_nsec = (long)((w - (double)ts.tv_sec) * 1e9);
                pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
            }
            s->idle--;
            /* Back from waiting, for whatever reason: this worker decides with the queue as
             * it is now, which covers one wake-up sent to the idle ones. */
            if (s->signalled > 0)
                s->signalled--;
            if (s->signalled > s->idle)
                s->signalled = s->idle;
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
        uint64_t res = size_resources(pick, pd.size_index) | size_resources(pick, idx);
        pick->running_rows += rows;
        resources_hold(s, res, 1);
        pthread_mutex_unlock(&s->mu);
        double answering = 0;
        if (n)
            answering = run_batch(s, pick, batch, n, idx, res);
        else
            release_batch(s, pick, res, rows, idx, 0);
        pthread_mutex_lock(&s->mu);
        if (n)
            s->answer_s += 0.1 * (answering - s->answer_s);
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
    loom_server_options so = {.struct_size = sizeof so};
    if (options)
        memcpy(&so, options, options->struct_size < sizeof so ? options->struct_size : sizeof so);
    sv_audit *audit = NULL;
    if (so.audit_path) {
        loom_status ast = sv_audit_open(so.audit_path, so.audit_key_path, so.audit_new_segment,
                                        so.audit_sync_full, &audit);
        if (ast != LOOM_OK)
            return ast;
    }
    sv_trace *trace = NULL;
    if (so.trace_path) {
        loom_status tst = sv_trace_open(so.trace_path, &trace);
        if (tst != LOOM_OK) {
            sv_audit_close(audit);
            return tst;
        }
    }
    loom_server *s = calloc(1, sizeof *s);
    if (!s) {
        sv_audit_close(audit);
        sv_trace_close(trace);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    s->rt = runtime;
    s->audit = audit;
    s->trace = trace;
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
    s->device_res = calloc(s->n_devices ? s->n_devices : 1, sizeof *s->device_res);
    uint32_t nw = so.workers ? so.workers : 2;
    s->workers = calloc(nw, sizeof *s->workers);
    if (!s->device_ids || !s->device_busy_s || !s->device_res || !s->workers) {
        loom_server_destroy(s);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (int r = 0; r < 64; r++)
        s->res_cap[r] = 1;
    for (size_t i = 0; i < s->n_devices; i++) {
        loom_device_info info = {.struct_size = sizeof info};
        loom_runtime_device(runtime, i, s->device_ids[i], sizeof s->device_ids[i], &info);
        int host = info.kind == LOOM_DEVICE_CPU ||
                   (info.struct_size >= offsetof(loom_device_info, shares_host_cpu) +
                                            sizeof info.shares_host_cpu && info.shares_host_cpu);
        s->device_res[i] = host ? 1 : (uint64_t)1 << (i + 1 < 64 ? i + 1 : 63);
        if (info.kind == LOOM_DEVICE_CPU && info.threads > 0 &&
            info.compute_units / info.threads > s->res_cap[0])
            s->res_cap[0] = info.compute_units / info.threads;
    }
    uint32_t n_lanes = 0;
    for (int r = 0; r < 64; r++) {
        int used = r == 0; /* the host always: plans not yet made count there */
        for (size_t i = 0; i < s->n_devices && !used; i++)
            used = s->device_res[i] == (uint64_t)1 << r;
        if (used)
            n_lanes += s->res_cap[r];
    }
    s->lanes = nw < n_lanes ? nw : n_lanes;
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
    while (atomic_load(&s->outstanding) > 0)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
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
    while (atomic_load(&s->outstanding) > 0)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    sv_audit_close(s->audit);
    sv_trace_close(s->trace);
    for (size_t i = 0; i < s->n_models; i++)
        sv_model_free(s->models[i]);
    free(s->models);
    free(s->workers);
    free(s->device_ids);
    free(s->device_busy_s);
    free(s->device_res);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->stats_mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
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
    XXH3_128bits_update(st, &m->variant, sizeof m->variant);
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
    if (m->n_out <= 64 && sv_blob_to_outputs(blob, outs, m->n_out) == 0)
        sv_answer(s, r, LOOM_SERVE_OK, NULL, outs, &f);
    else
        sv_answer(s, r, LOOM_SERVE_FAILED, "out of memory reading a cached result", NULL, &f);
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
    sv_model *m = sv_model_lookup(s, rq.model, rq.version);
    if (!m) {
        sv_server_count_refusal(s, rq.model, LOOM_SERVE_NOT_FOUND);
        if (rq.version && sv_model_lookup(s, rq.model, NULL))
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
    /* One allocation: the request, its input array and its id. */
    const char *id = rq.id ? rq.id : "";
    size_t id_len = strlen(id) + 1;
    sv_req *r = calloc(1, sizeof *r + m->n_in * sizeof *r->inputs + id_len);
    int ok = r != NULL;
    if (r) {
        r->model = m;
        r->inputs = (loom_tensor **)(r + 1);
        r->id = (char *)(r->inputs + m->n_in);
        memcpy(r->id, id, id_len);
        r->borrowed = rq.borrow_inputs != 0;
    }
    for (size_t k = 0; ok && k < m->n_in; k++)
        ok = (r->inputs[k] = r->borrowed ? (loom_tensor *)ordered[k]
                                         : sv_tensor_copy(ordered[k])) != NULL;
    if (!ok) {
        sv_request_free(r);
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
    r->confidence = -1;

    pthread_mutex_lock(&s->mu);
    sv_model *vm = s->draining ? m : sv_route(s, m, rq.variant, r, now);
    if (!vm) {
        pthread_mutex_unlock(&s->mu);
        sv_request_free(r);
        sv_server_count_refusal(s, m->name, LOOM_SERVE_BAD_REQUEST);
        return LOOM_SERVE_BAD_REQUEST; /* sv_route left the message */
    }
    m = r->model = vm;
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        sv_request_free(r);
        sv_server_count_refusal(s, m->name, LOOM_SERVE_UNAVAILABLE);
        return sv_refuse(LOOM_SERVE_UNAVAILABLE, "the server is shutting down");
    }
    if (m->depth >= m->queue_limit) {
        pthread_mutex_unlock(&s->mu);
        sv_request_free(r);
        sv_server_count_refusal(s, m->name, LOOM_SERVE_QUEUE_FULL);
        return sv_refuse(LOOM_SERVE_QUEUE_FULL, "model '%s': the queue is full (%u waiting)",
                         m->name, m->queue_limit);
    }
    atomic_fetch_add_explicit(&s->outstanding, 1, memory_order_relaxed); /* under MU */
    int use_cache = m->cache_on && !rq.no_cache && r->stage == SV_STAGE_PLAIN;
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
    /* The busy workers, and one on its way, decide again with this request queued. */
    int wake = wake_for(s, m);
    pthread_mutex_unlock(&s->mu);
    if (wake)
        pthread_cond_signal(&s->work_cv);
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
    /* The caller's inputs outlive this call, which returns after the answer: borrowed. */
    loom_serve_request rq = {0};
    const loom_serve_request *sub = req;
    if (req && req->struct_size >= offsetof(loom_serve_request, timeout_s)) {
        memcpy(&rq, req, req->struct_size < sizeof rq ? req->struct_size : sizeof rq);
        rq.struct_size = sizeof rq;
        rq.borrow_inputs = 1;
        sub = &rq;
    }
    loom_serve_code code = loom_serve_submit(s, sub, infer_done, &w);
    if (code == LOOM_SERVE_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        *out = w.result;
    } else {
        *out = sv_result_new(NULL, req && req->struct_size >= offsetof(loom_serve_request, id) &&
                                        req->model ? req->model : "",
                          NULL, code, loom_serve_last_error());
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (!*out)
        return LOOM_SERVE_FAILED;
    return (*out)->code;
}

void sv_requeue(loom_server *s, sv_req *r)
{
    pthread_mutex_lock(&s->mu);
    queue_insert(r->model, r);
    int wake = wake_for(s, r->model);
    pthread_mutex_unlock(&s->mu);
    if (wake)
        pthread_cond_signal(&s->work_cv);
}
