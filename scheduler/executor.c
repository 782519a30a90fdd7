/*
 * The executor: runs a plan on all its devices at once. One worker per device walks that
 * device's nodes in plan order; a node starts when its dependency counter reaches zero; the
 * thread that called loom_plan_run is the worker of the plan's first device, and other devices
 * get threads of their own that sleep between runs.
 *
 * Copy nodes (transfers to and from devices the host cannot address) run on a transfer worker
 * per device and direction, so they overlap computation.
 *
 * Hot path: per node, one indirect call, an atomic decrement per successor on another worker,
 * and no lock or allocation. A worker whose next node is not ready spins briefly, then sleeps on
 * a condition variable; whoever makes that node ready wakes it only if it is asleep.
 *
 * Concurrent runs of one plan each take an execution context (arena, pointers, counters,
 * workers) from the plan's free list; a new one is made only when more runs overlap than ever
 * before.
 */
#include "sched_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_SPIN 4000

typedef struct plan_worker {
    struct plan_ctx *ctx;
    uint32_t slot;
    pthread_t thread;
    int started;
    pthread_mutex_t m;
    pthread_cond_t cv;
    atomic_int sleeping;
    uint64_t run_gen; /* guarded by m: bumped to start a run */
    int stop;         /* guarded by m */
} plan_worker;

/* The completion token of one node submitted by a pipelined worker. */
typedef struct plan_token {
    struct plan_ctx *ctx;
    uint32_t node;
} plan_token;

/* What one worker slot counted this run (loom_run_stats): relaxed atomics, each mostly touched
 * by its own slot's threads, on a cache line of its own. */
typedef struct slot_counts {
    atomic_size_t wakeups;     /* dependencies released across workers at completion */
    atomic_size_t event_waits; /* dependencies the device waited for through an event */
    atomic_size_t copies, peer_copies;
    char pad[64 - 4 * sizeof(atomic_size_t)];
} slot_counts;

/* The memory of one caller tensor of a run, for the overlap check (check_overlaps). */
typedef struct run_span {
    uintptr_t start, end;
    uint32_t index;
    uint8_t output; /* 0: input INDEX, 1: output INDEX */
} run_span;

struct plan_ctx {
    plan_ctx *next_free, *next_all;
    loom_plan *plan;
    void **arena;             /* per device slot */
    void **io_ptrs;           /* data pointer per plan->io position */
    loom_exec_args *args;     /* per node */
    uint32_t *patch;          /* io positions that point at caller tensors */
    uint32_t n_patch;
    atomic_uint *pending;     /* per node */
    plan_worker *workers;       /* per device slot */
    atomic_uint workers_left;
    atomic_int failed;
    atomic_size_t fallbacks;  /* nodes re-run on their fallback device this run */
    /* What each re-run was (loom_run_stats.fallbacks): n_nodes entries, in the order they
     * happened, allocated by the first failure of this context (the failure path) and kept. */
    _Atomic(loom_fallback_info *) fb_log;
    atomic_uchar *slot_failed; /* per device slot: a node failed on its device this run */
    loom_status fail_status;
    char fail_msg[640];
    int record;               /* timeline wanted this run */
    int safe;                 /* this run does not pipeline (after a pipelined failure) */
    plan_token *tokens;         /* per node */
    atomic_uint *outstanding; /* per worker: submitted nodes not yet completed */
    _Atomic uint64_t *last_end; /* per worker: the latest completion (timeline) */
    uint64_t *submitted;      /* per node: when it was submitted (timeline) */
    atomic_int pipe_failed;   /* a pipelined node failed: the run starts over safely */
    atomic_int pipe_fail_node; /* the first pipelined node that failed (-1: none) */
    loom_status refail_status; /* ... its status and message, for its re-run elsewhere */
    char refail_msg[512];
    uint64_t t0;
    loom_node_timing *timeline; /* per node */
    /* The overlap check of the caller's tensors: its scratch (inputs + outputs), and the data
     * pointers of the last arguments that passed it (the plan fixes their sizes): a run with the
     * same tensors, the usual case, compares pointers instead of sorting again. */
    run_span *spans;
    const void **checked;
    int checked_ok;
    /* Events (backend ABI 1.0): one per node that signals a successor device to device, made
     * once with the context and recorded again each run; HAVE_EVENTS when all were made,
     * EVENTS_ON for the current attempt (never while the run starts over safely). */
    void **events;            /* per node, NULL when it signals none */
    int have_events, events_on;
    uint32_t *arena_host;     /* per slot: 1 + the device whose alloc_host gave the arena */
    slot_counts *counts;      /* per slot */
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void wake(plan_worker *w)
{
    if (atomic_load(&w->sleeping)) {
        pthread_mutex_lock(&w->m);
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->m);
    }
}

/* Block until *COUNTER is zero, spinning first. */
static void wait_zero(plan_worker *w, atomic_uint *counter)
{
    for (int i = 0; i < WAIT_SPIN; i++) {
        if (atomic_load_explicit(counter, memory_order_acquire) == 0)
            return;
        relax();
    }
    pthread_mutex_lock(&w->m);
    atomic_store(&w->sleeping, 1);
    while (atomic_load(counter) != 0)
        pthread_cond_wait(&w->cv, &w->m);
    atomic_store(&w->sleeping, 0);
    pthread_mutex_unlock(&w->m);
}

static void record_failure(plan_ctx *c, const plan_node *n, loom_status st, const char *msg)
{
    const runtime_device *dev = &c->plan->rt->devices[n->device];
    if (!n->fb_kernel && !n->is_copy) /* with a fallback, run_fallback marked it if tried */
        atomic_store_explicit(&c->slot_failed[n->slot], 1, memory_order_relaxed);
    int expected = 0;
    if (atomic_compare_exchange_strong(&c->failed, &expected, 1)) {
        c->fail_status = st;
        int aside = !n->fb_kernel && !n->is_copy && atomic_load(&dev->health.until_ns);
        snprintf(c->fail_msg, sizeof c->fail_msg, "node '%s' (%s) on %s: %s%s", n->name,
                 n->op_name, dev->id, msg[0] ? msg : loom_status_name(st),
                 aside ? " (the device is set aside after repeated failures, but this node has "
                         "no fallback device)"
                       : "");
    }
}

/* Node N (plan index P) failed on its device with ST and MSG (or was not tried there: the
 * device is set aside), and re-runs on its fallback: count it, and keep what happened for the
 * run's stats. The failure path: the record is allocated at the context's first failure. */
static void note_fallback(plan_ctx *c, const plan_node *n, uint32_t p, loom_status st,
                          const char *msg)
{
    size_t k = atomic_fetch_add(&c->fallbacks, 1);
    uint32_t cap = c->plan->n_nodes;
    loom_fallback_info *log = atomic_load_explicit(&c->fb_log, memory_order_acquire);
    if (!log) {
        loom_fallback_info *mine = calloc((size_t)cap + 1, sizeof *mine);
        if (!mine)
            return; /* counted, not described */
        if (atomic_compare_exchange_strong(&c->fb_log, &log, mine))
            log = mine;
        else
            free(mine); /* another worker's failure made it first: LOG is that one */
    }
    if (k >= cap)
        return;
    loom_fallback_info *f = &log[k];
    f->node = p;
    f->failed_device = n->device;
    f->ran_device = n->fb_device;
    f->status = st;
    snprintf(f->message, sizeof f->message, "%s", msg);
}

/* What an asynchronous backend reports through done(): the host waits on PENDING like on a
 * dependency counter. */
typedef struct plan_completion {
    atomic_uint pending;
    loom_status status;
    plan_worker *waiter;
    char msg[512];
} plan_completion;

/* Runs on the backend's thread. The store happens under the waiter's mutex, and the waiter takes
 * that mutex once after it sees the store (submit_and_wait), so this thread is done with the
 * worker (and CP, on the waiter's stack) before the waiter can return, finish the run and let
 * the plan be destroyed. */
static void completion_done(void *token, loom_status status, const char *message)
{
    plan_completion *cp = token;
    cp->status = status;
    snprintf(cp->msg, sizeof cp->msg, "%s", message ? message : "");
    plan_worker *w = cp->waiter;
    pthread_mutex_lock(&w->m);
    atomic_store(&cp->pending, 0);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->m);
}

/* Run node P through the backend's submit() and wait for its completion; the worker sleeps on
 * its condition variable meanwhile, as for a dependency. */
static loom_status submit_and_wait(plan_ctx *c, plan_worker *self, const runtime_device *dev,
                                   const plan_node *n, uint32_t p, char *err, size_t err_len)
{
    const loom_backend *be = dev->backend;
    plan_completion cp = {.status = LOOM_OK, .waiter = self};
    atomic_init(&cp.pending, 1);
    /* ABI 1.0's enqueue() says why it refuses; an older plugin's submit() cannot. */
    loom_status (*enqueue)(void *, uint32_t, void *, const loom_exec_args *, loom_done_fn, void *,
                           char *, size_t) = RUNTIME_SLOT(be, enqueue);
    err[0] = '\0';
    loom_status st = enqueue ? enqueue(be->ctx, dev->index, n->kernel, &c->args[p],
                                       completion_done, &cp, err, err_len)
                             : be->submit(be->ctx, dev->index, n->kernel, &c->args[p],
                                          completion_done, &cp);
    if (st != LOOM_OK) { /* nothing was enqueued: done() will not be called */
        int raw = (int)st;
        if (!err[0] && raw >= LOOM_OK && raw <= LOOM_ERR_INTERNAL)
            snprintf(err, err_len, "backend '%s' refused the submission (status %s)", be->name,
                     loom_status_name(st));
        else if (!err[0])
            snprintf(err, err_len, "the submission was refused");
        return runtime_backend_status(be, raw, err, err_len);
    }
    wait_zero(self, &cp.pending);
    /* The backend's thread may still be leaving completion_done: wait until it unlocks. */
    pthread_mutex_lock(&self->m);
    pthread_mutex_unlock(&self->m);
    if (cp.status == LOOM_OK)
        return LOOM_OK;
    snprintf(err, err_len, "%s", cp.msg);
    return runtime_backend_status(be, (int)cp.status, err, err_len);
}

/* Run node P's fallback kernel on host copies of its data: its own device cannot be addressed
 * by the host, so inputs are downloaded and outputs uploaded back where its successors expect
 * them. This is the failure path: it may allocate. */
static loom_status run_fallback_staged(plan_ctx *c, const plan_node *n, uint32_t p, char *err,
                                       size_t err_len)
{
    loom_plan *plan = c->plan;
    const runtime_device *dev = &plan->rt->devices[n->device];
    const runtime_device *to = &plan->rt->devices[n->fb_device];
    const loom_backend *be = dev->backend;
    const loom_exec_args *a = &c->args[p];
    uint32_t nio = n->n_in + n->n_out;
    void **host = calloc(nio + 1, sizeof *host);
    void *scratch = n->fb_scratch_bytes ? aligned_alloc(64, (n->fb_scratch_bytes + 63) / 64 * 64)
                                        : NULL;
    loom_status st = LOOM_OK;
    if (!host || (n->fb_scratch_bytes && !scratch)) {
        snprintf(err, err_len, "out of memory staging the fallback");
        st = LOOM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (uint32_t k = 0; k < nio && st == LOOM_OK; k++) {
        int32_t t = plan->io[n->io_first + k];
        if (t < 0)
            continue;
        const plan_tensor *pt = &plan->tensors[t];
        const void *dptr = k < n->n_in ? a->inputs[k] : a->outputs[k - n->n_in];
        if (pt->kind == PLAN_T_CONSTANT) {
            host[k] = (void *)dptr; /* the host's own copy */
            continue;
        }
        if (!(host[k] = aligned_alloc(64, (pt->bytes + 64) / 64 * 64))) {
            snprintf(err, err_len, "out of memory staging the fallback");
            st = LOOM_ERR_OUT_OF_MEMORY;
        } else if (k < n->n_in && pt->bytes) {
            st = runtime_backend_status(be, (int)be->download(be->ctx, dev->index, host[k], dptr,
                                                              pt->bytes, err, err_len),
                                        err, err_len);
        }
    }
    if (st == LOOM_OK) {
        loom_exec_args ha = {.struct_size = sizeof ha, .inputs = (const void *const *)host,
                             .outputs = host + n->n_in, .scratch = scratch};
        st = runtime_backend_status(to->backend,
                                    (int)to->backend->execute(to->backend->ctx, to->index,
                                                              n->fb_kernel, &ha, err, err_len),
                                    err, err_len);
    }
    for (uint32_t k = 0; k < n->n_out && st == LOOM_OK; k++) {
        int32_t t = plan->io[n->io_first + n->n_in + k];
        if (t >= 0 && plan->tensors[t].bytes)
            st = runtime_backend_status(be, (int)be->upload(be->ctx, dev->index, a->outputs[k],
                                                            host[n->n_in + k],
                                                            plan->tensors[t].bytes, err, err_len),
                                        err, err_len);
    }
done:
    for (uint32_t k = 0; host && k < nio; k++) {
        int32_t t = plan->io[n->io_first + k];
        if (t >= 0 && plan->tensors[t].kind != PLAN_T_CONSTANT)
            free(host[k]);
    }
    free(host);
    free(scratch);
    return st;
}

/* A node failed on its device with ST (mapped to the enum) and the message in ERR: say so, and
 * run it on its fallback device instead. TRIED 0: the device was not tried, being set aside
 * (device_health.c), which the message at its trip said once. Outputs of host-visible devices
 * are host memory, so the other device writes them where the first one would have; other
 * devices' data is staged through the host. */
static loom_status run_fallback(plan_ctx *c, const plan_node *n, uint32_t p, loom_status st,
                                int tried, char *err, size_t err_len)
{
    const runtime_device *from = &c->plan->rt->devices[n->device];
    const runtime_device *to = &c->plan->rt->devices[n->fb_device];
    if (tried) {
        atomic_store_explicit(&c->slot_failed[n->slot], 1, memory_order_relaxed);
        runtime_message(c->plan->rt, "node '%s' (%s) failed on %s (%s: %s); re-ran on %s",
                        n->name, n->op_name, from->id, loom_status_name(st),
                        err[0] ? err : "no message", to->id);
    } else {
        snprintf(err, err_len, "not tried: %s is set aside after repeated failures", from->id);
    }
    note_fallback(c, n, p, st, err);
    err[0] = '\0';
    if (!from->info.host_visible)
        return run_fallback_staged(c, n, p, err, err_len);
    return runtime_backend_status(to->backend,
                                  (int)to->backend->execute(to->backend->ctx, to->index,
                                                            n->fb_kernel, &c->args[p], err,
                                                            err_len),
                                  err, err_len);
}

/* Run copy node N: move its tensor between host memory and its device's. */
static loom_status run_copy(plan_ctx *c, const plan_node *n, uint32_t p, char *err, size_t err_len)
{
    const runtime_device *dev = &c->plan->rt->devices[n->device];
    const loom_backend *be = dev->backend;
    const loom_exec_args *a = &c->args[p];
    size_t bytes = c->plan->tensors[c->plan->io[n->io_first]].bytes;
    if (!bytes)
        return LOOM_OK;
    slot_counts *cnt = &c->counts[n->slot];
    atomic_fetch_add_explicit(&cnt->copies, 1, memory_order_relaxed);
    if (n->copy_dir == PLAN_COPY_PEER) {
        const runtime_device *src = &c->plan->rt->devices[n->copy_src];
        atomic_fetch_add_explicit(&cnt->peer_copies, 1, memory_order_relaxed);
        return be->copy_peer(be->ctx, dev->index, a->outputs[0], src->index, a->inputs[0], bytes,
                             err, err_len);
    }
    loom_status (*fn)(void *, uint32_t, void *, const void *, size_t, char *, size_t) =
        n->copy_dir == PLAN_COPY_UPLOAD ? RUNTIME_SLOT(be, upload) : RUNTIME_SLOT(be, download);
    if (!fn) {
        snprintf(err, err_len, "backend '%s' has no %s", be->name,
                 n->copy_dir == PLAN_COPY_UPLOAD ? "upload" : "download");
        return LOOM_ERR_UNSUPPORTED;
    }
    return fn(be->ctx, dev->index, a->outputs[0], a->inputs[0], bytes, err, err_len);
}

/* Node P is done (or skipped): release its successors that wait for it, and wake their
 * workers when they become ready. Successors signalled by an event were released when P was
 * submitted (release_event_successors). */
static void release_successors(plan_ctx *c, const plan_node *n, uint32_t s)
{
    const loom_plan *plan = c->plan;
    size_t crossed = 0;
    for (uint32_t e = 0; e < n->n_succ; e++) {
        uint32_t q = plan->succ[n->succ_first + e];
        uint32_t qs = plan->nodes[q].slot;
        if (!c->safe && plan->devs[qs].pipelined && qs == s)
            continue; /* same in-order device: the queue orders them */
        if (c->events_on && plan->succ_event[n->succ_first + e])
            continue; /* released at submission: the device waits on the event */
        crossed += qs != s;
        if (atomic_fetch_sub_explicit(&c->pending[q], 1, memory_order_acq_rel) == 1 && qs != s)
            wake(&c->workers[qs]);
    }
    if (crossed)
        atomic_fetch_add_explicit(&c->counts[s].wakeups, crossed, memory_order_relaxed);
}

/* Node P was submitted and its event recorded after it (or it was skipped): release the
 * successors that wait for it on their device through that event; their workers only submit
 * (after event_wait), so the host never waits for P's completion on their behalf. */
static void release_event_successors(plan_ctx *c, const plan_node *n)
{
    const loom_plan *plan = c->plan;
    for (uint32_t e = 0; e < n->n_succ; e++) {
        if (!plan->succ_event[n->succ_first + e])
            continue;
        uint32_t q = plan->succ[n->succ_first + e];
        if (atomic_fetch_sub_explicit(&c->pending[q], 1, memory_order_acq_rel) == 1)
            wake(&c->workers[plan->nodes[q].slot]);
    }
}

/* A node that does not run (the run failed): release every successor. */
static void release_skipped(plan_ctx *c, const plan_node *n, uint32_t s)
{
    release_successors(c, n, s);
    if (c->events_on && n->n_evsucc)
        release_event_successors(c, n);
}

/* Make DEV's queue wait for the events of node N's event predecessors. */
static loom_status wait_events(plan_ctx *c, const runtime_device *dev, const plan_node *n,
                               char *err, size_t err_len)
{
    const loom_backend *be = dev->backend;
    for (uint32_t k = 0; k < n->n_evpred; k++) {
        uint32_t pp = c->plan->evpred[n->evpred_first + k];
        loom_status st = be->event_wait(be->ctx, dev->index, c->events[pp], err, err_len);
        if (st != LOOM_OK)
            return runtime_backend_status(be, st, err, err_len);
    }
    atomic_fetch_add_explicit(&c->counts[n->slot].event_waits, n->n_evpred, memory_order_relaxed);
    return LOOM_OK;
}

/* One of slot S's submitted nodes completed (any thread). Lock-free unless it may be the last:
 * that one is counted under the worker's mutex, and the worker takes the mutex once after it
 * sees zero (wait_outstanding), so this thread is done with the context before the run can end
 * and the context be freed. */
static void finish_outstanding(plan_ctx *c, uint32_t s)
{
    atomic_uint *o = &c->outstanding[s];
    unsigned v = atomic_load_explicit(o, memory_order_relaxed);
    while (v > 1)
        if (atomic_compare_exchange_weak_explicit(o, &v, v - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    plan_worker *w = &c->workers[s];
    pthread_mutex_lock(&w->m);
    if (atomic_fetch_sub_explicit(o, 1, memory_order_acq_rel) == 1)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->m);
}

/* Wait until every node slot S submitted has completed (see finish_outstanding). */
static void wait_outstanding(plan_ctx *c, uint32_t s)
{
    plan_worker *self = &c->workers[s];
    wait_zero(self, &c->outstanding[s]);
    pthread_mutex_lock(&self->m);
    pthread_mutex_unlock(&self->m);
}

/* Completion of a node a pipelined worker submitted (any thread). */
static void pipe_done(void *token, loom_status status, const char *message)
{
    plan_token *tk = token;
    plan_ctx *c = tk->ctx;
    const loom_plan *plan = c->plan;
    const plan_node *n = &plan->nodes[tk->node];
    uint32_t s = n->slot;
    if (status != LOOM_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", message ? message : "");
        status = runtime_backend_status(plan->rt->devices[n->device].backend, (int)status, msg,
                                        sizeof msg);
        if (!n->is_copy)
            atomic_store_explicit(&c->slot_failed[s], 1, memory_order_relaxed);
        int none = -1;
        if (atomic_compare_exchange_strong(&c->pipe_fail_node, &none, (int)tk->node)) {
            c->refail_status = status;
            snprintf(c->refail_msg, sizeof c->refail_msg, "%s", msg);
        }
        atomic_store(&c->pipe_failed, 1);
        record_failure(c, n, status, msg);
    }
    if (c->record) {
        /* In order: it started when it was submitted or when the previous one ended. */
        uint64_t end = loom_now_ns() - c->t0, start = c->submitted[tk->node];
        uint64_t prev = atomic_exchange(&c->last_end[s], end);
        loom_node_timing *t = &c->timeline[tk->node];
        t->node = tk->node;
        t->device = n->device;
        /* Asynchronous copies overlap each other: each started when it was started. */
        t->start_ns = !n->is_copy && prev > start && prev < end ? prev : start;
        t->end_ns = end;
    }
    release_successors(c, n, s);
    finish_outstanding(c, s);
}

/* A pipelined worker: submit each node of slot S once its predecessors on other workers are
 * done, without waiting for its own; then wait for every completion. */
static void run_pipelined(plan_ctx *c, uint32_t s)
{
    loom_plan *plan = c->plan;
    const plan_device_use *u = &plan->devs[s];
    const runtime_device *dev = &plan->rt->devices[u->device];
    const loom_backend *be = dev->backend;
    plan_worker *self = &c->workers[s];
    loom_status (*enqueue)(void *, uint32_t, void *, const loom_exec_args *, loom_done_fn,
                           void *, char *, size_t) = RUNTIME_SLOT(be, enqueue);
    char err[512];
    for (uint32_t i = 0; i < u->n_order; i++) {
        uint32_t p = u->order[i];
        const plan_node *n = &plan->nodes[p];
        wait_zero(self, &c->pending[p]);
        if (atomic_load_explicit(&c->failed, memory_order_relaxed)) {
            release_skipped(c, n, s);
            continue;
        }
        if (c->record)
            c->submitted[p] = loom_now_ns() - c->t0;
        atomic_fetch_add_explicit(&c->outstanding[s], 1, memory_order_relaxed);
        err[0] = '\0';
        loom_status st = LOOM_OK;
        if (c->events_on && n->n_evpred)
            st = wait_events(c, dev, n, err, sizeof err);
        if (st == LOOM_OK) {
            st = enqueue ? enqueue(be->ctx, dev->index, n->kernel, &c->args[p], pipe_done,
                                   &c->tokens[p], err, sizeof err)
                         : be->submit(be->ctx, dev->index, n->kernel, &c->args[p], pipe_done,
                                      &c->tokens[p]);
            if (st != LOOM_OK)
                st = runtime_backend_status(be, st, err, sizeof err);
        }
        if (st != LOOM_OK) /* nothing was enqueued: complete it here, as failed */
            pipe_done(&c->tokens[p], st, err[0] ? err : "submit failed");
        if (c->events_on && n->n_evsucc) {
            if (st == LOOM_OK) {
                st = be->event_record(be->ctx, dev->index, c->events[p], err, sizeof err);
                if (st != LOOM_OK) {
                    st = runtime_backend_status(be, st, err, sizeof err);
                    record_failure(c, n, st, err[0] ? err : "event_record failed");
                }
            }
            release_event_successors(c, n);
        }
    }
    wait_outstanding(c, s);
}

/* A transfer worker of a backend with upload_async/download_async: start each copy once its
 * predecessors are done and let the backend say when it has finished (pipe_done); an upload
 * that a device queue waits for records that queue's event. Then wait for every completion. */
static void run_transfers_async(plan_ctx *c, uint32_t s)
{
    loom_plan *plan = c->plan;
    const plan_device_use *u = &plan->devs[s];
    const runtime_device *dev = &plan->rt->devices[u->device];
    const loom_backend *be = dev->backend;
    plan_worker *self = &c->workers[s];
    slot_counts *cnt = &c->counts[s];
    char err[512];
    for (uint32_t i = 0; i < u->n_order; i++) {
        uint32_t p = u->order[i];
        const plan_node *n = &plan->nodes[p];
        wait_zero(self, &c->pending[p]);
        if (atomic_load_explicit(&c->failed, memory_order_relaxed)) {
            release_skipped(c, n, s);
            continue;
        }
        const loom_exec_args *a = &c->args[p];
        size_t bytes = plan->tensors[plan->io[n->io_first]].bytes;
        void *event = c->events_on && n->n_evsucc ? c->events[p] : NULL;
        if (c->record)
            c->submitted[p] = loom_now_ns() - c->t0;
        atomic_fetch_add_explicit(&c->outstanding[s], 1, memory_order_relaxed);
        err[0] = '\0';
        loom_status st = LOOM_OK;
        if (!bytes) {
            pipe_done(&c->tokens[p], LOOM_OK, NULL); /* nothing to move (no event: plan.c) */
            continue;
        }
        atomic_fetch_add_explicit(&cnt->copies, 1, memory_order_relaxed);
        if (n->copy_dir == PLAN_COPY_UPLOAD)
            st = be->upload_async(be->ctx, dev->index, a->outputs[0], a->inputs[0], bytes, event,
                                  pipe_done, &c->tokens[p], err, sizeof err);
        else
            st = be->download_async(be->ctx, dev->index, a->outputs[0], a->inputs[0], bytes,
                                    event, pipe_done, &c->tokens[p], err, sizeof err);
        if (st != LOOM_OK) {
            st = runtime_backend_status(be, st, err, sizeof err);
            pipe_done(&c->tokens[p], st, err[0] ? err : "asynchronous copy refused");
        }
        if (event)
            release_event_successors(c, n);
    }
    wait_outstanding(c, s);
}

/* Run every node of device slot S in order. */
static void run_device(plan_ctx *c, uint32_t s)
{
    if (c->plan->devs[s].pipelined && !c->safe) {
        run_pipelined(c, s);
        return;
    }
    if (c->plan->devs[s].async) {
        run_transfers_async(c, s);
        return;
    }
    loom_plan *plan = c->plan;
    const plan_device_use *u = &plan->devs[s];
    const runtime_device *dev = &plan->rt->devices[u->device];
    const loom_backend *be = dev->backend;
    loom_status (*submit)(void *, uint32_t, void *, const loom_exec_args *,
                          void (*)(void *, loom_status, const char *), void *) =
        RUNTIME_SLOT(be, submit);
    int async = submit || RUNTIME_SLOT(be, enqueue); /* submit_and_wait: enqueue or submit */
    plan_worker *self = &c->workers[s];
    int multi = plan->n_devs > 1;
    int record = c->record;
    char err[512];
    for (uint32_t i = 0; i < u->n_order; i++) {
        uint32_t p = u->order[i];
        const plan_node *n = &plan->nodes[p];
        if (multi)
            wait_zero(self, &c->pending[p]);
        if (!atomic_load_explicit(&c->failed, memory_order_relaxed)) {
            uint64_t start = record ? loom_now_ns() : 0;
            uint32_t ran_on = n->device;
            int tried = 1;
            err[0] = '\0';
            loom_status st;
            if (c->safe && (int)p == atomic_load(&c->pipe_fail_node) && n->fb_kernel) {
                /* It failed on its device in the pipelined attempt: straight to the fallback. */
                st = c->refail_status;
                snprintf(err, sizeof err, "%s", c->refail_msg);
            } else if (n->is_copy)
                st = run_copy(c, n, p, err, sizeof err);
            else if (n->fb_kernel && device_set_aside(plan->rt, n->device)) {
                st = LOOM_ERR_DEVICE_LOST; /* set aside (device_health.c): straight to fallback */
                tried = 0;
            } else if (async)
                st = submit_and_wait(c, self, dev, n, p, err, sizeof err);
            else
                st = be->execute(be->ctx, dev->index, n->kernel, &c->args[p], err, sizeof err);
            if (st != LOOM_OK) /* a status outside the enum is the plugin's bug: device lost */
                st = runtime_backend_status(be, (int)st, err, sizeof err);
            if (st != LOOM_OK && n->fb_kernel) {
                st = run_fallback(c, n, p, st, tried, err, sizeof err);
                ran_on = n->fb_device;
            }
            if (st != LOOM_OK)
                record_failure(c, n, st, err);
            if (record) {
                loom_node_timing *t = &c->timeline[p];
                t->node = p;
                t->device = ran_on;
                t->start_ns = start - c->t0;
                t->end_ns = loom_now_ns() - c->t0;
            }
        }
        if (multi)
            release_successors(c, n, s);
    }
}

static void *worker_main(void *arg)
{
    plan_worker *w = arg;
    pthread_setname_np(pthread_self(), "loom-device");
    plan_ctx *c = w->ctx;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&w->m);
        while (!w->stop && w->run_gen == seen)
            pthread_cond_wait(&w->cv, &w->m);
        if (w->stop) {
            pthread_mutex_unlock(&w->m);
            return NULL;
        }
        seen = w->run_gen;
        pthread_mutex_unlock(&w->m);
        run_device(c, w->slot);
        if (atomic_fetch_sub(&c->workers_left, 1) == 1)
            wake(&c->workers[0]);
    }
}

/* Bytes of an arena block of BYTES: whole 64-byte lines. */
static size_t arena_size(size_t bytes)
{
    return (bytes + 63) / 64 * 64;
}

/* Arena block of slot S from the pinned memory of the backend that stages its transfers
 * (plan.c plan_staging), or NULL (then ordinary memory is used). */
static void *alloc_staging(plan_ctx *c, uint32_t s)
{
    const plan_device_use *u = &c->plan->devs[s];
    if (!u->staging)
        return NULL;
    const runtime_device *h = &c->plan->rt->devices[u->staging - 1];
    size_t bytes = arena_size(u->arena_bytes);
    void *p = h->backend->alloc_host(h->backend->ctx, h->index, bytes);
    if (p && ((uintptr_t)p & 63)) { /* the arena's offsets assume 64-byte alignment */
        h->backend->free_host(h->backend->ctx, h->index, p, bytes);
        p = NULL;
    }
    if (p)
        c->arena_host[s] = u->staging;
    return p;
}

/* The events of context C's nodes that signal others device to device; without them (a
 * backend refused one) the run wakes the host for those dependencies too, and says so. */
static void make_events(plan_ctx *c)
{
    loom_plan *plan = c->plan;
    c->have_events = plan->n_event_edges > 0;
    for (uint32_t p = 0; p < plan->n_nodes && c->have_events; p++) {
        const plan_node *n = &plan->nodes[p];
        if (!n->n_evsucc)
            continue;
        const runtime_device *dev = &plan->rt->devices[n->device];
        const loom_backend *be = dev->backend;
        char err[256] = "";
        loom_status st = be->event_create(be->ctx, dev->index, &c->events[p], err, sizeof err);
        if (st != LOOM_OK || !c->events[p]) {
            if (st == LOOM_OK)
                snprintf(err, sizeof err, "no event returned");
            st = runtime_backend_status(be, st == LOOM_OK ? LOOM_ERR_INTERNAL : st, err,
                                        sizeof err);
            c->events[p] = NULL;
            c->have_events = 0;
            runtime_message(plan->rt, "%s: event_create failed (%s: %s); dependencies wake the "
                            "host instead", dev->id, loom_status_name(st), err);
        }
    }
}

static void ctx_free(plan_ctx *c)
{
    if (!c)
        return;
    loom_plan *plan = c->plan;
    if (c->workers) {
        /* Every worker thread is joined before any worker's mutex goes: a worker finishing its
         * last node wakes the caller's worker (slot 0) through that worker's mutex. */
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            plan_worker *w = &c->workers[s];
            if (w->started) {
                pthread_mutex_lock(&w->m);
                w->stop = 1;
                pthread_cond_signal(&w->cv);
                pthread_mutex_unlock(&w->m);
                pthread_join(w->thread, NULL);
            }
        }
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            pthread_mutex_destroy(&c->workers[s].m);
            pthread_cond_destroy(&c->workers[s].cv);
        }
    }
    if (c->events)
        for (uint32_t p = 0; p < plan->n_nodes; p++)
            if (c->events[p]) {
                const loom_backend *be = plan->rt->devices[plan->nodes[p].device].backend;
                be->event_destroy(be->ctx, c->events[p]);
            }
    if (c->arena)
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            if (!c->arena[s])
                continue;
            const runtime_device *dev = &plan->rt->devices[plan->devs[s].device];
            if (c->arena_host && c->arena_host[s]) {
                const runtime_device *h = &plan->rt->devices[c->arena_host[s] - 1];
                h->backend->free_host(h->backend->ctx, h->index, c->arena[s],
                                      arena_size(plan->devs[s].arena_bytes));
            } else if (dev->backend->alloc)
                dev->backend->free(dev->backend->ctx, dev->index, c->arena[s],
                                   plan->devs[s].arena_bytes);
            else
                free(c->arena[s]);
        }
    free(c->arena);
    free(c->io_ptrs);
    free(c->args);
    free(c->patch);
    free(c->pending);
    free(c->tokens);
    free(c->outstanding);
    free(c->last_end);
    free(c->submitted);
    free(c->workers);
    free(c->timeline);
    free(c->spans);
    free(c->checked);
    free(c->events);
    free(c->arena_host);
    free(c->counts);
    free(c->slot_failed);
    free(atomic_load(&c->fb_log));
    free(c);
}

static const void *tensor_ptr(const plan_ctx *c, int32_t t)
{
    if (t < 0)
        return NULL;
    const plan_tensor *pt = &c->plan->tensors[t];
    switch (pt->kind) {
    case PLAN_T_CONSTANT:
        return pt->data;
    case PLAN_T_INTERMEDIATE:
        return (char *)c->arena[c->plan->dev_slot[pt->device]] + pt->offset;
    default:
        return NULL; /* caller tensors: patched per run */
    }
}

/* A new execution context of PLAN, or NULL; when a device's intermediate memory is what failed,
 * *FAILED_DEVICE (may be NULL) is that runtime device. */
static plan_ctx *ctx_create(loom_plan *plan, uint32_t *failed_device)
{
    plan_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->plan = plan;
    uint32_t nn = plan->n_nodes;
    size_t n_io = 0;
    for (uint32_t p = 0; p < nn; p++)
        n_io += plan->nodes[p].n_in + plan->nodes[p].n_out;
    c->arena = calloc(plan->n_devs + 1, sizeof *c->arena);
    c->io_ptrs = calloc(n_io + 1, sizeof *c->io_ptrs);
    c->args = calloc(nn + 1, sizeof *c->args);
    c->patch = malloc((n_io + 1) * sizeof *c->patch);
    c->pending = calloc(nn + 1, sizeof *c->pending);
    c->tokens = calloc(nn + 1, sizeof *c->tokens);
    c->outstanding = calloc(plan->n_devs + 1, sizeof *c->outstanding);
    c->last_end = calloc(plan->n_devs + 1, sizeof *c->last_end);
    c->submitted = calloc(nn + 1, sizeof *c->submitted);
    c->workers = calloc(plan->n_devs + 1, sizeof *c->workers);
    c->timeline = calloc(nn + 1, sizeof *c->timeline);
    size_t n_args = (size_t)plan->n_inputs + plan->n_outputs;
    c->spans = malloc((n_args + 1) * sizeof *c->spans);
    c->checked = calloc(n_args + 1, sizeof *c->checked);
    c->events = calloc(nn + 1, sizeof *c->events);
    c->arena_host = calloc(plan->n_devs + 1, sizeof *c->arena_host);
    c->counts = aligned_alloc(64, (plan->n_devs + 1) * sizeof *c->counts);
    if (c->counts)
        memset(c->counts, 0, (plan->n_devs + 1) * sizeof *c->counts);
    if (!c->arena || !c->io_ptrs || !c->args || !c->patch || !c->pending ||
        !c->workers || !c->timeline || !c->tokens || !c->outstanding || !c->last_end ||
        !c->submitted || !c->spans || !c->checked || !c->events || !c->arena_host ||
        !c->counts || !(c->slot_failed = calloc(plan->n_devs + 1, sizeof *c->slot_failed))) {
        ctx_free(c);
        return NULL;
    }
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        plan_worker *w = &c->workers[s];
        w->ctx = c;
        w->slot = s;
        pthread_mutex_init(&w->m, NULL);
        pthread_cond_init(&w->cv, NULL);
        atomic_init(&w->sleeping, 0);
    }
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        size_t bytes = plan->devs[s].arena_bytes;
        if (!bytes)
            continue;
        const runtime_device *dev = &plan->rt->devices[plan->devs[s].device];
        c->arena[s] = alloc_staging(c, s);
        if (!c->arena[s])
            c->arena[s] = dev->backend->alloc
                              ? dev->backend->alloc(dev->backend->ctx, dev->index, bytes, 64)
                              : aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!c->arena[s]) {
            if (failed_device)
                *failed_device = plan->devs[s].device;
            ctx_free(c);
            return NULL;
        }
    }
    make_events(c);
    /* Pointers that stay put across runs are set once; caller tensors are patched per run. */
    for (uint32_t p = 0; p < nn; p++)
        c->tokens[p] = (plan_token){c, p};
    for (uint32_t p = 0; p < nn; p++) {
        const plan_node *n = &plan->nodes[p];
        loom_exec_args *a = &c->args[p];
        a->struct_size = sizeof *a;
        a->inputs = (const void *const *)&c->io_ptrs[n->io_first];
        a->outputs = &c->io_ptrs[n->io_first + n->n_in];
        a->scratch = n->scratch_bytes
                         ? (char *)c->arena[plan->dev_slot[n->device]] + n->scratch_offset
                         : NULL;
        for (uint32_t k = 0; k < n->n_in + n->n_out; k++) {
            uint32_t pos = n->io_first + k;
            int32_t t = plan->io[pos];
            if (t >= 0 && (plan->tensors[t].kind == PLAN_T_INPUT ||
                           plan->tensors[t].kind == PLAN_T_OUTPUT))
                c->patch[c->n_patch++] = pos;
            c->io_ptrs[pos] = (void *)tensor_ptr(c, t);
        }
    }
    for (uint32_t s = 1; s < plan->n_devs; s++) {
        if (pthread_create(&c->workers[s].thread, NULL, worker_main, &c->workers[s]) != 0) {
            ctx_free(c);
            return NULL;
        }
        c->workers[s].started = 1;
    }
    return c;
}

void plan_contexts_destroy(loom_plan *plan)
{
    plan_ctx *c = plan->all_ctx;
    while (c) {
        plan_ctx *next = c->next_all;
        ctx_free(c);
        c = next;
    }
    plan->all_ctx = plan->free_ctx = NULL;
}

size_t plan_contexts_trim(loom_plan *plan)
{
    pthread_mutex_lock(&plan->ctx_lock);
    plan_ctx *idle = plan->free_ctx;
    plan->free_ctx = NULL;
    /* Unlink the idle ones from the list of all contexts; those in use stay on it. */
    plan_ctx **link = &plan->all_ctx;
    while (*link) {
        int is_idle = 0;
        for (plan_ctx *f = idle; f && !is_idle; f = f->next_free)
            is_idle = f == *link;
        if (is_idle)
            *link = (*link)->next_all;
        else
            link = &(*link)->next_all;
    }
    pthread_mutex_unlock(&plan->ctx_lock);
    size_t freed = 0;
    while (idle) {
        plan_ctx *next = idle->next_free;
        for (uint32_t s = 0; s < plan->n_devs; s++)
            freed += plan->devs[s].arena_bytes;
        ctx_free(idle);
        idle = next;
    }
    return freed;
}

static plan_ctx *ctx_acquire(loom_plan *plan)
{
    pthread_mutex_lock(&plan->ctx_lock);
    plan_ctx *c = plan->free_ctx;
    if (c)
        plan->free_ctx = c->next_free;
    pthread_mutex_unlock(&plan->ctx_lock);
    if (c)
        return c;
    c = ctx_create(plan, NULL);
    if (!c)
        return NULL;
    pthread_mutex_lock(&plan->ctx_lock);
    c->next_all = plan->all_ctx;
    plan->all_ctx = c;
    pthread_mutex_unlock(&plan->ctx_lock);
    return c;
}

static void ctx_release(loom_plan *plan, plan_ctx *c)
{
    pthread_mutex_lock(&plan->ctx_lock);
    c->next_free = plan->free_ctx;
    plan->free_ctx = c;
    pthread_mutex_unlock(&plan->ctx_lock);
}

loom_status plan_contexts_prepare(loom_plan *plan, uint32_t *failed_device)
{
    *failed_device = UINT32_MAX;
    plan_ctx *c = ctx_create(plan, failed_device);
    if (!c) {
        if (*failed_device != UINT32_MAX)
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY,
                                  "cannot allocate %zu bytes of intermediate memory on %s",
                                  plan->devs[plan->dev_slot[*failed_device]].arena_bytes,
                                  plan->rt->devices[*failed_device].id);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY,
                              "cannot allocate the intermediate memory of a run (%zu bytes)",
                              plan->peak_bytes);
    }
    pthread_mutex_lock(&plan->ctx_lock);
    c->next_all = plan->all_ctx;
    plan->all_ctx = c;
    pthread_mutex_unlock(&plan->ctx_lock);
    ctx_release(plan, c);
    return LOOM_OK;
}

static loom_status check_args_memory(plan_ctx *c, const loom_tensor *const *inputs,
                                     loom_tensor *const *outputs);

/* Whether a run of PLAN starts without pipelining: an in-order device whose nodes are set aside
 * (device_health.c) runs them one by one, those with a fallback on their fallback device. */
static int starts_safe(loom_plan *plan)
{
    if (plan->strict)
        return 0;
    for (uint32_t s = 0; s < plan->n_devs; s++)
        if (plan->devs[s].pipelined && device_set_aside(plan->rt, plan->devs[s].device))
            return 1;
    return 0;
}

loom_status plan_execute(loom_plan *plan, const loom_tensor *const *inputs,
                       loom_tensor *const *outputs, loom_run_stats *stats)
{
    plan_ctx *c = ctx_acquire(plan);
    if (!c)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY,
                              "run: cannot allocate %zu bytes of intermediate memory",
                              plan->peak_bytes);
    loom_status arg_st = check_args_memory(c, inputs, outputs);
    if (arg_st != LOOM_OK) {
        ctx_release(plan, c);
        return arg_st;
    }
    for (uint32_t i = 0; i < c->n_patch; i++) {
        uint32_t pos = c->patch[i];
        const plan_tensor *t = &plan->tensors[plan->io[pos]];
        c->io_ptrs[pos] = t->kind == PLAN_T_INPUT ? loom_tensor_data(inputs[t->index])
                                                : loom_tensor_data(outputs[t->index]);
    }
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        atomic_store_explicit(&c->slot_failed[s], 0, memory_order_relaxed);
        slot_counts *k = &c->counts[s];
        atomic_store_explicit(&k->wakeups, 0, memory_order_relaxed);
        atomic_store_explicit(&k->event_waits, 0, memory_order_relaxed);
        atomic_store_explicit(&k->copies, 0, memory_order_relaxed);
        atomic_store_explicit(&k->peer_copies, 0, memory_order_relaxed);
    }
    int want_timeline = stats &&
                        stats->struct_size >= offsetof(loom_run_stats, timeline_count) +
                                                  sizeof(size_t) &&
                        stats->timeline && stats->timeline_capacity >= plan->n_nodes;
    c->record = want_timeline || plan->learn;
    c->t0 = loom_now_ns();
    for (c->safe = starts_safe(plan);; c->safe = 1) {
        /* The stats describe the attempt whose results the run returns. */
        atomic_store(&c->fallbacks, 0);
        for (uint32_t p = 0; p < plan->n_nodes; p++)
            atomic_store_explicit(&c->pending[p],
                                  c->safe ? plan->nodes[p].n_preds : plan->nodes[p].n_wait,
                                  memory_order_relaxed);
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            atomic_store_explicit(&c->outstanding[s], 0, memory_order_relaxed);
            atomic_store_explicit(&c->last_end[s], 0, memory_order_relaxed);
        }
        c->events_on = c->have_events && !c->safe;
        atomic_store(&c->failed, 0);
        atomic_store(&c->pipe_failed, 0);
        if (!c->safe)
            atomic_store(&c->pipe_fail_node, -1);
        c->fail_msg[0] = '\0';
        if (plan->n_devs > 1) {
            atomic_store(&c->workers_left, plan->n_devs - 1);
            for (uint32_t s = 1; s < plan->n_devs; s++) {
                plan_worker *w = &c->workers[s];
                pthread_mutex_lock(&w->m);
                w->run_gen++;
                pthread_cond_signal(&w->cv);
                pthread_mutex_unlock(&w->m);
            }
        }
        if (plan->n_devs > 0)
            run_device(c, 0);
        if (plan->n_devs > 1)
            wait_zero(&c->workers[0], &c->workers_left);
        /* A pipelined node failed: nodes after it on its device may have run on what it did
         * not write. Start over without pipelining, where each failing node is re-run on its
         * fallback device (every node is a pure function of its inputs). */
        if (c->safe || plan->strict || !atomic_load(&c->pipe_failed))
            break;
        runtime_message(plan->rt, "%s; the run started over without pipelining", c->fail_msg);
    }
    /* Graph outputs that no node produces (an input or constant returned as is). */
    for (uint32_t i = 0; i < plan->n_outputs; i++) {
        const plan_tensor *t = &plan->tensors[plan->output_tensor[i]];
        if (t->kind == PLAN_T_INPUT)
            memcpy(loom_tensor_data(outputs[i]), loom_tensor_data(inputs[t->index]), t->bytes);
        else if (t->kind == PLAN_T_CONSTANT && t->bytes)
            memcpy(loom_tensor_data(outputs[i]), t->data, t->bytes);
    }
    uint64_t end = loom_now_ns();
    if (!plan->strict) /* the breaker (device_health.c): each compute device's outcome */
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            if (plan->devs[s].link)
                continue;
            if (atomic_load_explicit(&c->slot_failed[s], memory_order_relaxed))
                device_health_failed_run(plan, plan->devs[s].device);
            else if (!atomic_load(&c->failed)) /* its nodes all ran, and none failed */
                device_health_good_run(plan->rt, plan->devs[s].device);
        }
    loom_status st = LOOM_OK;
    if (atomic_load(&c->failed))
        st = loom_set_error(c->fail_status, "%s", c->fail_msg);
    if (stats) {
        stats->latency_ms = (double)(end - c->t0) / 1e6;
        if (stats->struct_size >= offsetof(loom_run_stats, peak_bytes) + sizeof(size_t))
            stats->peak_bytes = plan->peak_bytes;
        if (stats->struct_size >= offsetof(loom_run_stats, fallback_count) + sizeof(size_t))
            stats->fallback_count = atomic_load(&c->fallbacks);
        if (stats->struct_size >= offsetof(loom_run_stats, fallbacks_written) + sizeof(size_t)) {
            /* This context's record, copied: concurrent runs each have their own. */
            const loom_fallback_info *log = atomic_load(&c->fb_log);
            size_t n = atomic_load(&c->fallbacks);
            if (n > plan->n_nodes)
                n = plan->n_nodes;
            if (n > stats->fallbacks_capacity)
                n = stats->fallbacks_capacity;
            if (!stats->fallbacks || !log)
                n = 0;
            if (n)
                memcpy(stats->fallbacks, log, n * sizeof *log);
            stats->fallbacks_written = n;
        }
        if (stats->struct_size >= offsetof(loom_run_stats, event_waits) + sizeof(size_t)) {
            size_t w = 0, ev = 0, cp = 0, peer = 0;
            for (uint32_t s = 0; s < plan->n_devs; s++) {
                w += atomic_load_explicit(&c->counts[s].wakeups, memory_order_relaxed);
                ev += atomic_load_explicit(&c->counts[s].event_waits, memory_order_relaxed);
                cp += atomic_load_explicit(&c->counts[s].copies, memory_order_relaxed);
                peer += atomic_load_explicit(&c->counts[s].peer_copies, memory_order_relaxed);
            }
            stats->host_wakeups = w;
            stats->event_waits = ev;
            stats->copies = cp;
            stats->peer_copies = peer;
        }
        if (want_timeline) {
            memcpy(stats->timeline, c->timeline, plan->n_nodes * sizeof *stats->timeline);
            stats->timeline_count = plan->n_nodes;
        } else if (stats->struct_size >= offsetof(loom_run_stats, timeline_count) +
                                             sizeof(size_t)) {
            stats->timeline_count = 0;
        }
    }
    if (plan->learn && st == LOOM_OK)
        plan_learn(plan, c->timeline, plan->n_nodes);
    ctx_release(plan, c);
    return st;
}

/* ---- what loom_plan_run is handed: checked before anything runs ---------------------------- */

/* A caller tensor's byte range, for the overlap check. */
static int cmp_span(const void *a, const void *b)
{
    const run_span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static const char *span_name(const loom_plan *plan, const run_span *s)
{
    return s->output ? plan->output_names[s->index] : plan->input_names[s->index];
}

/* Outputs are written while inputs are read and other outputs are written: an output whose bytes
 * overlap any other tensor's (exactly, partly, or the same tensor twice) would give wrong values
 * or a last-writer-wins race. Inputs may share memory with each other (reads only). Sorted by
 * start, one sweep finds any overlap with an output: O(n log n), so many outputs stay cheap. */
static loom_status check_overlaps(const loom_plan *plan, const loom_tensor *const *inputs,
                                  loom_tensor *const *outputs, run_span *spans)
{
    size_t n = (size_t)plan->n_inputs + plan->n_outputs, m = 0;
    if (plan->n_outputs == 0 || n < 2)
        return LOOM_OK;
    for (size_t i = 0; i < n; i++) {
        int out = i >= plan->n_inputs;
        uint32_t k = (uint32_t)(out ? i - plan->n_inputs : i);
        const loom_tensor *t = out ? outputs[k] : inputs[k];
        size_t bytes = loom_tensor_nbytes(t);
        if (!bytes)
            continue; /* an empty tensor is never read nor written */
        uintptr_t at = (uintptr_t)loom_tensor_data(t);
        spans[m++] = (run_span){at, at + bytes, k, (uint8_t)out};
    }
    qsort(spans, m, sizeof *spans, cmp_span);
    loom_status st = LOOM_OK;
    const run_span *far_in = NULL, *far_out = NULL; /* the farthest-reaching so far of each */
    for (size_t i = 0; i < m && st == LOOM_OK; i++) {
        const run_span *s = &spans[i];
        const run_span *hit = far_out && s->start < far_out->end ? far_out
                              : s->output && far_in && s->start < far_in->end ? far_in
                                                                              : NULL;
        if (hit) {
            const run_span *o = s->output ? s : hit, *other = s->output ? hit : s;
            st = loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                "run: output '%s' shares its memory with %s '%s' (outputs must not "
                                "overlap any input or other output)",
                                span_name(plan, o), other->output ? "output" : "input",
                                span_name(plan, other));
        }
        const run_span **far = s->output ? &far_out : &far_in;
        if (!*far || s->end > (*far)->end)
            *far = s;
    }
    return st;
}

/* The overlap check for this run's tensors in context C: skipped when they are the tensors of
 * the last run that passed it (same data pointers; their sizes are the plan's). */
static loom_status check_args_memory(plan_ctx *c, const loom_tensor *const *inputs,
                                     loom_tensor *const *outputs)
{
    const loom_plan *plan = c->plan;
    const size_t ni = plan->n_inputs, n = ni + plan->n_outputs;
    if (c->checked_ok) {
        size_t i = 0;
        while (i < n && c->checked[i] == loom_tensor_data(i < ni ? inputs[i] : outputs[i - ni]))
            i++;
        if (i == n)
            return LOOM_OK;
    }
    loom_status st = check_overlaps(plan, inputs, outputs, c->spans);
    c->checked_ok = st == LOOM_OK;
    for (size_t i = 0; i < n && c->checked_ok; i++)
        c->checked[i] = loom_tensor_data(i < ni ? inputs[i] : outputs[i - ni]);
    return st;
}

loom_status plan_check_run(const loom_plan *plan, const loom_tensor *const *inputs,
                           size_t n_inputs, loom_tensor *const *outputs, size_t n_outputs,
                           const loom_run_stats *stats)
{
    if (!plan)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "run: plan is NULL");
    if (n_inputs != plan->n_inputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "run: the graph has %u inputs, %zu given",
                              plan->n_inputs, n_inputs);
    if (n_outputs != plan->n_outputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "run: the graph has %u outputs, %zu given", plan->n_outputs,
                              n_outputs);
    if (n_inputs && !inputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "run: inputs is NULL but n_inputs is %zu", n_inputs);
    if (n_outputs && !outputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "run: outputs is NULL but n_outputs is %zu", n_outputs);
    if (stats && stats->struct_size < sizeof(uint32_t) + sizeof(double))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "run: stats->struct_size %u is too small (set it to "
                              "sizeof(loom_run_stats))", stats->struct_size);
    for (int side = 0; side < 2; side++) {
        size_t n = side ? n_outputs : n_inputs;
        for (size_t i = 0; i < n; i++) {
            const loom_tensor *t = side ? outputs[i] : inputs[i];
            const char *name = side ? plan->output_names[i] : plan->input_names[i];
            const plan_tensor *want =
                &plan->tensors[side ? plan->output_tensor[i] : plan->input_tensor[i]];
            if (!t)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "run: %s '%s' is NULL",
                                      side ? "output" : "input", name);
            const loom_tensor_desc *d = loom_tensor_desc_of(t);
            int same = d->dtype == want->desc.dtype && d->rank == want->desc.rank;
            for (uint32_t k = 0; same && k < d->rank; k++)
                same = d->dims[k] == want->desc.dims[k];
            if (!same) {
                char a[200], b[200];
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "run: %s '%s' is %s %s, the graph wants %s %s",
                                      side ? "output" : "input", name, loom_dtype_name(d->dtype),
                                      loom_dims_format(d->rank, d->dims, a, sizeof a),
                                      loom_dtype_name(want->desc.dtype),
                                      loom_dims_format(want->desc.rank, want->desc.dims, b,
                                                       sizeof b));
            }
        }
    }
    return LOOM_OK; /* the memory of the tensors is checked in plan_execute, per context */
}

/* ---- a plan's inputs and outputs, as the caller passes them --------------------------------- */

size_t loom_plan_input_count(const loom_plan *plan)
{
    return plan ? plan->n_inputs : 0;
}

size_t loom_plan_output_count(const loom_plan *plan)
{
    return plan ? plan->n_outputs : 0;
}

static loom_status io_info(const loom_plan *plan, int output, size_t i, const char **name,
                           loom_dtype *dtype, uint32_t *rank, int64_t *dims)
{
    const char *what = output ? "output" : "input";
    if (!plan)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan_%s_info: plan is NULL", what);
    uint32_t n = output ? plan->n_outputs : plan->n_inputs;
    if (i >= n)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "plan_%s_info: %s %zu does not exist (the plan has %u)", what, what,
                              i, n);
    loom_clear_error();
    const plan_tensor *t = &plan->tensors[output ? plan->output_tensor[i] : plan->input_tensor[i]];
    if (name)
        *name = output ? plan->output_names[i] : plan->input_names[i];
    if (dtype)
        *dtype = t->desc.dtype;
    if (rank)
        *rank = t->desc.rank;
    if (dims)
        for (uint32_t k = 0; k < t->desc.rank; k++)
            dims[k] = t->desc.dims[k];
    return LOOM_OK;
}

loom_status loom_plan_input_info(const loom_plan *plan, size_t i, const char **name,
                                 loom_dtype *dtype, uint32_t *rank, int64_t *dims)
{
    return io_info(plan, 0, i, name, dtype, rank, dims);
}

loom_status loom_plan_output_info(const loom_plan *plan, size_t i, const char **name,
                                  loom_dtype *dtype, uint32_t *rank, int64_t *dims)
{
    return io_info(plan, 1, i, name, dtype, rank, dims);
}
