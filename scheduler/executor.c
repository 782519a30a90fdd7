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
    int expected = 0;
    if (atomic_compare_exchange_strong(&c->failed, &expected, 1)) {
        c->fail_status = st;
        snprintf(c->fail_msg, sizeof c->fail_msg, "node '%s' (%s) on %s: %s", n->name,
                 n->op_name, c->plan->rt->devices[n->device].id,
                 msg[0] ? msg : loom_status_name(st));
    }
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
    loom_status st = be->submit(be->ctx, dev->index, n->kernel, &c->args[p], completion_done, &cp);
    if (st != LOOM_OK) {
        snprintf(err, err_len, "submit failed");
        return st;
    }
    wait_zero(self, &cp.pending);
    /* The backend's thread may still be leaving completion_done: wait until it unlocks. */
    pthread_mutex_lock(&self->m);
    pthread_mutex_unlock(&self->m);
    if (cp.status != LOOM_OK)
        snprintf(err, err_len, "%s", cp.msg);
    return cp.status;
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
            st = be->download(be->ctx, dev->index, host[k], dptr, pt->bytes, err, err_len);
        }
    }
    if (st == LOOM_OK) {
        loom_exec_args ha = {.struct_size = sizeof ha, .inputs = (const void *const *)host,
                             .outputs = host + n->n_in, .scratch = scratch};
        st = to->backend->execute(to->backend->ctx, to->index, n->fb_kernel, &ha, err, err_len);
    }
    for (uint32_t k = 0; k < n->n_out && st == LOOM_OK; k++) {
        int32_t t = plan->io[n->io_first + n->n_in + k];
        if (t >= 0 && plan->tensors[t].bytes)
            st = be->upload(be->ctx, dev->index, a->outputs[k], host[n->n_in + k],
                            plan->tensors[t].bytes, err, err_len);
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

/* A node failed on its device: say so, and run it on its fallback device instead. Outputs of
 * host-visible devices are host memory, so the other device writes them where the first one
 * would have; other devices' data is staged through the host. */
static loom_status run_fallback(plan_ctx *c, const plan_node *n, uint32_t p, loom_status st,
                                char *err, size_t err_len)
{
    const runtime_device *from = &c->plan->rt->devices[n->device];
    const runtime_device *to = &c->plan->rt->devices[n->fb_device];
    runtime_message(c->plan->rt, "node '%s' (%s) failed on %s (%s: %s); re-ran on %s", n->name,
               n->op_name, from->id, loom_status_name(st), err[0] ? err : "no message", to->id);
    atomic_fetch_add(&c->fallbacks, 1);
    err[0] = '\0';
    if (!from->info.host_visible)
        return run_fallback_staged(c, n, p, err, err_len);
    return to->backend->execute(to->backend->ctx, to->index, n->fb_kernel, &c->args[p], err,
                                err_len);
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
 * workers when they become ready. */
static void release_successors(plan_ctx *c, const plan_node *n, uint32_t s)
{
    const loom_plan *plan = c->plan;
    for (uint32_t e = 0; e < n->n_succ; e++) {
        uint32_t q = plan->succ[n->succ_first + e];
        uint32_t qs = plan->nodes[q].slot;
        if (!c->safe && plan->devs[qs].pipelined && qs == s)
            continue; /* same in-order device: the queue orders them */
        if (atomic_fetch_sub_explicit(&c->pending[q], 1, memory_order_acq_rel) == 1 && qs != s)
            wake(&c->workers[qs]);
    }
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
        int none = -1;
        if (atomic_compare_exchange_strong(&c->pipe_fail_node, &none, (int)tk->node)) {
            c->refail_status = status;
            snprintf(c->refail_msg, sizeof c->refail_msg, "%s", message ? message : "");
        }
        atomic_store(&c->pipe_failed, 1);
        record_failure(c, n, status, message ? message : "");
    }
    if (c->record) {
        /* In order: it started when it was submitted or when the previous one ended. */
        uint64_t end = loom_now_ns() - c->t0, start = c->submitted[tk->node];
        uint64_t prev = atomic_exchange(&c->last_end[s], end);
        loom_node_timing *t = &c->timeline[tk->node];
        t->node = tk->node;
        t->device = n->device;
        t->start_ns = prev > start && prev < end ? prev : start;
        t->end_ns = end;
    }
    release_successors(c, n, s);
    plan_worker *self = &c->workers[s]; /* read before the store: the run may end right after */
    if (atomic_fetch_sub_explicit(&c->outstanding[s], 1, memory_order_acq_rel) == 1)
        wake(self);
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
    for (uint32_t i = 0; i < u->n_order; i++) {
        uint32_t p = u->order[i];
        const plan_node *n = &plan->nodes[p];
        wait_zero(self, &c->pending[p]);
        if (atomic_load_explicit(&c->failed, memory_order_relaxed)) {
            release_successors(c, n, s);
            continue;
        }
        if (c->record)
            c->submitted[p] = loom_now_ns() - c->t0;
        atomic_fetch_add_explicit(&c->outstanding[s], 1, memory_order_relaxed);
        loom_status st = be->submit(be->ctx, dev->index, n->kernel, &c->args[p], pipe_done,
                                    &c->tokens[p]);
        if (st != LOOM_OK) /* nothing was enqueued: complete it here, as failed */
            pipe_done(&c->tokens[p], st, "submit failed");
    }
    wait_zero(self, &c->outstanding[s]);
}

/* Run every node of device slot S in order. */
static void run_device(plan_ctx *c, uint32_t s)
{
    if (c->plan->devs[s].pipelined && !c->safe) {
        run_pipelined(c, s);
        return;
    }
    loom_plan *plan = c->plan;
    const plan_device_use *u = &plan->devs[s];
    const runtime_device *dev = &plan->rt->devices[u->device];
    const loom_backend *be = dev->backend;
    loom_status (*submit)(void *, uint32_t, void *, const loom_exec_args *,
                          void (*)(void *, loom_status, const char *), void *) =
        RUNTIME_SLOT(be, submit);
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
            err[0] = '\0';
            loom_status st;
            if (c->safe && (int)p == atomic_load(&c->pipe_fail_node) && n->fb_kernel) {
                /* It failed on its device in the pipelined attempt: straight to the fallback. */
                st = c->refail_status;
                snprintf(err, sizeof err, "%s", c->refail_msg);
            } else if (n->is_copy)
                st = run_copy(c, n, p, err, sizeof err);
            else if (submit)
                st = submit_and_wait(c, self, dev, n, p, err, sizeof err);
            else
                st = be->execute(be->ctx, dev->index, n->kernel, &c->args[p], err, sizeof err);
            if (st != LOOM_OK && n->fb_kernel) {
                st = run_fallback(c, n, p, st, err, sizeof err);
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
    if (c->arena)
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            if (!c->arena[s])
                continue;
            const runtime_device *dev = &plan->rt->devices[plan->devs[s].device];
            if (dev->backend->alloc)
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
    if (!c->arena || !c->io_ptrs || !c->args || !c->patch || !c->pending ||
        !c->workers || !c->timeline || !c->tokens || !c->outstanding || !c->last_end ||
        !c->submitted || !c->spans || !c->checked) {
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
    atomic_store(&c->fallbacks, 0);
    int want_timeline = stats &&
                        stats->struct_size >= offsetof(loom_run_stats, timeline_count) +
                                                  sizeof(size_t) &&
                        stats->timeline && stats->timeline_capacity >= plan->n_nodes;
    c->record = want_timeline || plan->learn;
    c->t0 = loom_now_ns();
    for (c->safe = 0;; c->safe = 1) {
        for (uint32_t p = 0; p < plan->n_nodes; p++)
            atomic_store_explicit(&c->pending[p],
                                  c->safe ? plan->nodes[p].n_preds : plan->nodes[p].n_wait,
                                  memory_order_relaxed);
        for (uint32_t s = 0; s < plan->n_devs; s++) {
            atomic_store_explicit(&c->outstanding[s], 0, memory_order_relaxed);
            atomic_store_explicit(&c->last_end[s], 0, memory_order_relaxed);
        }
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
    loom_status st = LOOM_OK;
    if (atomic_load(&c->failed))
        st = loom_set_error(c->fail_status, "%s", c->fail_msg);
    if (stats) {
        stats->latency_ms = (double)(end - c->t0) / 1e6;
        if (stats->struct_size >= offsetof(loom_run_stats, peak_bytes) + sizeof(size_t))
            stats->peak_bytes = plan->peak_bytes;
        if (stats->struct_size >= offsetof(loom_run_stats, fallback_count) + sizeof(size_t))
            stats->fallback_count = atomic_load(&c->fallbacks);
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
