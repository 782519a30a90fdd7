/*
 * A small, complete Loom backend plugin: one device ("skeleton:0") that runs Relu and Add
 * (float32, same shapes) and claims Add -> Relu chains as one fused kernel. Copy this file to
 * start a backend of your own; docs/writing-a-backend.md walks through it. Built against the
 * installed <loom/backend.h> alone (see the Makefile).
 *
 * The file is in parts. Parts 1-3 are all a plugin needs (device facts, supports, prepare,
 * execute); the others show the optional slots of backend ABI 1.0, each usable on its own:
 *   1. state and device facts
 *   2. supports / prepare / execute / release: node by node
 *   3. the exported loom_backend_query
 *   4. options (loom_backend.options, set_option): max_elements, device_memory, memory_mb
 *   5. subgraph claims (claim, prepare_subgraph): Add -> Relu becomes one pass over the data
 *   6. an in-order queue with a thread: enqueue, events, asynchronous copies
 *   7. device memory the host cannot address (option device_memory=1): alloc, upload, download,
 *      memory_info
 */
#include <loom/backend.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== 1. state and device facts ============================================================ */

typedef struct skel_queue skel_queue;

/* The backend's state: the table the host reads, and whatever the backend needs. One instance
 * per loom_backend_query call, freed by shutdown: no global mutable state. */
typedef struct skel_state {
    loom_backend table;
    void *host_ctx;
    void (*log)(void *host_ctx, loom_log_level level, const char *message);
    /* options (part 4) */
    int64_t max_elements;   /* 0: no limit */
    int device_memory;      /* 1: memory the host cannot address (part 7) */
    uint64_t memory_bytes;  /* capacity of that memory */
    /* part 7: bytes handed out by alloc */
    pthread_mutex_t mem_lock;
    uint64_t allocated;
    /* part 6: the device's queue, started on first use */
    skel_queue *queue;
    pthread_mutex_t queue_lock;
} skel_state;

static void skel_log(skel_state *s, loom_log_level level, const char *message)
{
    if (s->log)
        s->log(s->host_ctx, level, message);
}

static uint32_t skel_device_count(void *ctx)
{
    (void)ctx;
    return 1;
}

/* Facts with units; what we do not know stays 0. The host's struct may be older (smaller) than
 * ours: copy only what it has room for, and keep its abi_version and struct_size. */
static loom_status skel_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    skel_state *s = ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "skeleton example device");
    d.kind = LOOM_DEVICE_OTHER;
    d.compute_units = 1;
    d.threads = 1;
    d.numa_node = -1;
    /* Part 7: with device_memory=1 its buffers are not ordinary host memory (to the host). */
    d.host_visible = s->device_memory ? 0 : 1;
    d.memory_bytes = s->memory_bytes;
    d.in_order = 1; /* part 6: enqueued work runs in submission order */
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &d, size && size < sizeof d ? size : sizeof d);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

/* ==== 2. node by node ======================================================================= */

/* What prepare() (or prepare_subgraph) compiles into. */
typedef enum skel_kind { SKEL_RELU = 1, SKEL_ADD, SKEL_ADD_RELU } skel_kind;

typedef struct skel_kernel {
    skel_kind kind;
    int64_t n;            /* element count */
    uint32_t n_inputs;    /* 1 or 2 */
    const float *constant[2]; /* own copies of constant inputs (part 7 needs them), or NULL */
} skel_kernel;

static int same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return 0;
    return 1;
}

/* Pure: the same node always gets the same answer, and a "no" always comes with a reason. */
static int skel_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                         size_t reason_len)
{
    skel_state *s = ctx;
    if (dev != 0) {
        snprintf(reason, reason_len, "skeleton: no device %u", dev);
        return 0;
    }
    if (node->op != LOOM_OP_RELU && node->op != LOOM_OP_ADD) {
        snprintf(reason, reason_len, "skeleton: %s is not supported (only Relu and Add)",
                 node->op_name);
        return 0;
    }
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (node->inputs[i].dtype != LOOM_DTYPE_F32) {
            snprintf(reason, reason_len, "skeleton: %s runs on float32 only", node->op_name);
            return 0;
        }
    if (node->op == LOOM_OP_ADD && (!same_shape(&node->inputs[0], &node->inputs[1]) ||
                                    !same_shape(&node->inputs[0], &node->outputs[0]))) {
        snprintf(reason, reason_len, "skeleton: Add without broadcasting only");
        return 0;
    }
    int64_t n = loom_tensor_desc_numel(&node->outputs[0]);
    if (s->max_elements && n > s->max_elements) {
        snprintf(reason, reason_len, "skeleton: %lld elements, more than max_elements=%lld",
                 (long long)n, (long long)s->max_elements);
        return 0;
    }
    return 1;
}

static void skel_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    skel_kernel *k = kernel;
    if (!k)
        return;
    free((void *)k->constant[0]);
    free((void *)k->constant[1]);
    free(k);
}

/* A kernel of KIND over N elements; CONSTANTS (N_INPUTS entries, may be NULL) are copied: the
 * host passes their host pointers at run time, which a device-memory backend must not read
 * through its own addresses (ABI 0.3 rule). */
static loom_status make_kernel(skel_kind kind, int64_t n, uint32_t n_inputs,
                               const void *const *constants, void **kernel, char *err,
                               size_t err_len)
{
    skel_kernel *k = calloc(1, sizeof *k);
    if (!k)
        goto oom;
    k->kind = kind;
    k->n = n;
    k->n_inputs = n_inputs;
    for (uint32_t i = 0; constants && i < n_inputs; i++) {
        if (!constants[i])
            continue;
        float *c = malloc((size_t)(n ? n : 1) * sizeof *c);
        if (!c) {
            skel_release_kernel(NULL, k);
            goto oom;
        }
        memcpy(c, constants[i], (size_t)n * sizeof *c);
        k->constant[i] = c;
    }
    *kernel = k;
    return LOOM_OK;
oom:
    snprintf(err, err_len, "skeleton: out of memory");
    return LOOM_ERR_OUT_OF_MEMORY;
}

/* Copy what the kernel needs: the node descriptor is only valid during this call. */
static loom_status skel_prepare(void *ctx, uint32_t dev, const loom_node_desc *node,
                                void **kernel, size_t *scratch_bytes, char *err, size_t err_len)
{
    if (!skel_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    *scratch_bytes = 0;
    return make_kernel(node->op == LOOM_OP_RELU ? SKEL_RELU : SKEL_ADD,
                       loom_tensor_desc_numel(&node->outputs[0]), node->n_inputs,
                       node->input_constants, kernel, err, err_len);
}

/* Our memory is host memory either way; with device_memory=1 it is simply memory the host
 * promised not to touch. */
static void run_kernel(const skel_kernel *k, const loom_exec_args *args)
{
    const float *a = k->constant[0] ? k->constant[0] : args->inputs[0];
    const float *b = k->n_inputs > 1 ? (k->constant[1] ? k->constant[1] : args->inputs[1]) : NULL;
    float *y = args->outputs[0];
    switch (k->kind) {
    case SKEL_RELU:
        for (int64_t i = 0; i < k->n; i++)
            y[i] = a[i] > 0.0f ? a[i] : 0.0f;
        break;
    case SKEL_ADD:
        for (int64_t i = 0; i < k->n; i++)
            y[i] = a[i] + b[i];
        break;
    case SKEL_ADD_RELU: /* part 5: one pass, the sum never stored */
        for (int64_t i = 0; i < k->n; i++) {
            float v = a[i] + b[i];
            y[i] = v > 0.0f ? v : 0.0f;
        }
        break;
    }
}

/* Runs to completion; may be called from several threads at once with different ARGS, so it
 * only reads the kernel. */
static loom_status skel_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                                char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)err;
    (void)err_len;
    run_kernel(kernel, args);
    return LOOM_OK;
}

/* ==== 4. options ============================================================================ */

/* Declared in the table: `loom devices --json` lists them; users set them as
 * --backend-option skeleton:max_elements=1000000 or loom_runtime_options.backend_options. */
static const loom_backend_option skel_options[] = {
    {"max_elements", "refuse nodes with more elements than this (0: no limit)", "0"},
    {"device_memory", "1: memory the host cannot address, moved by upload/download", "0"},
    {"memory_mb", "capacity of the device's memory in MiB", "256"},
};

static int parse_int(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

/* Called after loom_backend_query and before device_count: a refusal names the value. */
static loom_status skel_set_option(void *ctx, const char *key, const char *value, char *err,
                                   size_t err_len)
{
    skel_state *s = ctx;
    long long v;
    if (!strcmp(key, "max_elements") && parse_int(value, 0, INT64_MAX, &v)) {
        s->max_elements = v;
        return LOOM_OK;
    }
    if (!strcmp(key, "device_memory") && parse_int(value, 0, 1, &v)) {
        s->device_memory = (int)v;
        return LOOM_OK;
    }
    if (!strcmp(key, "memory_mb") && parse_int(value, 1, 1 << 20, &v)) {
        s->memory_bytes = (uint64_t)v << 20;
        return LOOM_OK;
    }
    snprintf(err, err_len, "skeleton: option %s: '%s' is not a valid value", key, value);
    return LOOM_ERR_INVALID_ARGUMENT;
}

/* ==== 5. subgraph claims ==================================================================== */

/* Offered the graph, claim every Add whose only reader is a Relu (and whose sum is not a graph
 * output): the pair becomes one kernel that never stores the sum. Pure, like supports(). */
static uint32_t skel_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *g, uint32_t *nodes,
                           uint32_t max_nodes, loom_claim *claims, uint32_t max_claims)
{
    char why[128];
    uint32_t n_claims = 0, used = 0;
    /* Value ids of node outputs start after the inputs, in node order. */
    uint32_t first_out = g->n_inputs;
    for (uint32_t k = 0; k < g->n_nodes; k++) {
        const loom_node_desc *add = &g->nodes[k];
        uint32_t add_out = first_out;
        first_out += add->n_outputs;
        if (add->op != LOOM_OP_ADD || !skel_supports(ctx, dev, add, why, sizeof why))
            continue;
        int graph_output = 0;
        for (uint32_t o = 0; o < g->n_outputs; o++)
            graph_output |= g->output_values[o] == add_out;
        if (graph_output)
            continue;
        /* Its readers: exactly one, a Relu we support. */
        int reader = -1, readers = 0;
        for (uint32_t j = k + 1; j < g->n_nodes; j++)
            for (uint32_t i = 0; i < g->nodes[j].n_inputs; i++)
                if (g->node_inputs[j][i] == (int32_t)add_out) {
                    readers++;
                    reader = (int)j;
                }
        if (readers != 1 || g->nodes[reader].op != LOOM_OP_RELU ||
            !skel_supports(ctx, dev, &g->nodes[reader], why, sizeof why))
            continue;
        if (n_claims == max_claims || used + 2 > max_nodes)
            break;
        nodes[used] = k;
        nodes[used + 1] = (uint32_t)reader;
        claims[n_claims].first_node = used;
        claims[n_claims].node_count = 2;
        claims[n_claims].estimate_s = -1.0; /* no model of our own: the host prices it */
        snprintf(claims[n_claims].label, sizeof claims[n_claims].label, "Add+Relu");
        n_claims++;
        used += 2;
    }
    return n_claims;
}

/* Compile a claimed Add -> Relu: its inputs are the Add's two inputs, its output the Relu's. */
static loom_status skel_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                         void **kernel, size_t *scratch_bytes, char *err,
                                         size_t err_len)
{
    (void)ctx;
    (void)dev;
    if (sg->n_nodes != 2 || sg->nodes[0].op != LOOM_OP_ADD || sg->nodes[1].op != LOOM_OP_RELU ||
        sg->n_inputs != 2 || sg->n_outputs != 1) {
        snprintf(err, err_len, "skeleton: %s is not an Add -> Relu pair",
                 sg->name ? sg->name : "subgraph");
        return LOOM_ERR_UNSUPPORTED;
    }
    *scratch_bytes = 0;
    return make_kernel(SKEL_ADD_RELU, loom_tensor_desc_numel(&sg->outputs[0]), 2,
                       sg->input_constants, kernel, err, err_len);
}

/* ==== 6. an in-order queue: enqueue, events, asynchronous copies ============================ */

/* Work items run by one thread in submission order; each completes (done) before the next. */
typedef enum item_kind { ITEM_KERNEL = 1, ITEM_COPY, ITEM_WAIT } item_kind;

typedef struct skel_event {
    pthread_mutex_t m;
    pthread_cond_t cv;
    uint64_t target;  /* the queue position it marks (items up to it done) */
    uint64_t reached; /* the queue position done so far, as the event last saw it */
} skel_event;

typedef struct skel_item {
    struct skel_item *next;
    item_kind kind;
    uint64_t seq;
    const skel_kernel *kernel;
    const void *in[2];
    void *out;
    void *dst;          /* copies */
    const void *src;
    size_t bytes;
    skel_event *event;  /* ITEM_WAIT: wait for it; ITEM_COPY: mark it when done */
    loom_done_fn done;
    void *token;
} skel_item;

struct skel_queue {
    pthread_t thread;
    pthread_mutex_t m;
    pthread_cond_t cv;
    skel_item *head, *tail;
    uint64_t submitted; /* sequence number of the last item submitted */
    int stop;
};

static void event_mark(skel_event *e, uint64_t seq)
{
    pthread_mutex_lock(&e->m);
    if (seq > e->reached)
        e->reached = seq;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->m);
}

static void *queue_main(void *arg)
{
    skel_queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->m);
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->m);
        skel_item *it = q->head;
        if (!it) { /* stopping, and nothing left */
            pthread_mutex_unlock(&q->m);
            return NULL;
        }
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->m);
        switch (it->kind) {
        case ITEM_KERNEL: {
            loom_exec_args a = {.struct_size = sizeof a, .inputs = it->in,
                                .outputs = &it->out, .scratch = NULL};
            run_kernel(it->kernel, &a);
            break;
        }
        case ITEM_COPY:
            if (it->bytes)
                memcpy(it->dst, it->src, it->bytes);
            if (it->event)
                event_mark(it->event, it->seq);
            break;
        case ITEM_WAIT: /* another queue's point: block this queue until it is reached */
            pthread_mutex_lock(&it->event->m);
            while (it->event->reached < it->event->target)
                pthread_cond_wait(&it->event->cv, &it->event->m);
            pthread_mutex_unlock(&it->event->m);
            break;
        }
        if (it->done)
            it->done(it->token, LOOM_OK, NULL);
        free(it);
    }
}

/* The queue, started on first use (a backend only used synchronously never starts a thread). */
static skel_queue *get_queue(skel_state *s, char *err, size_t err_len)
{
    pthread_mutex_lock(&s->queue_lock);
    if (!s->queue) {
        skel_queue *q = calloc(1, sizeof *q);
        if (q) {
            pthread_mutex_init(&q->m, NULL);
            pthread_cond_init(&q->cv, NULL);
            if (pthread_create(&q->thread, NULL, queue_main, q) != 0) {
                pthread_mutex_destroy(&q->m);
                pthread_cond_destroy(&q->cv);
                free(q);
                q = NULL;
            }
        }
        s->queue = q;
    }
    skel_queue *q = s->queue;
    pthread_mutex_unlock(&s->queue_lock);
    if (!q)
        snprintf(err, err_len, "skeleton: cannot start the device's queue thread");
    return q;
}

/* Append IT (allocated by the caller) to the queue; its sequence number is returned. */
static uint64_t push(skel_queue *q, skel_item *it)
{
    pthread_mutex_lock(&q->m);
    it->seq = ++q->submitted;
    if (it->event && it->kind == ITEM_COPY)
        it->event->target = it->seq;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->m);
    return it->seq;
}

static skel_item *new_item(item_kind kind, char *err, size_t err_len)
{
    skel_item *it = calloc(1, sizeof *it);
    if (!it)
        snprintf(err, err_len, "skeleton: out of memory queueing work");
    else
        it->kind = kind;
    return it;
}

/* Enqueue a kernel and return; DONE follows from the queue's thread. The host keeps ARGS' arrays
 * alive until DONE, but we copy the pointers anyway: it costs nothing. */
static loom_status skel_enqueue(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                                loom_done_fn done, void *token, char *err, size_t err_len)
{
    (void)dev;
    skel_queue *q = get_queue(ctx, err, err_len);
    skel_item *it = q ? new_item(ITEM_KERNEL, err, err_len) : NULL;
    if (!it)
        return q ? LOOM_ERR_OUT_OF_MEMORY : LOOM_ERR_DEVICE_LOST;
    const skel_kernel *k = kernel;
    it->kernel = k;
    for (uint32_t i = 0; i < k->n_inputs; i++)
        it->in[i] = args->inputs[i];
    it->out = args->outputs[0];
    it->done = done;
    it->token = token;
    push(q, it);
    return LOOM_OK;
}

/* Events. One queue here, so a wait on our own queue is always already satisfied; a backend with
 * several devices (a queue each) makes one queue wait for another's point this way without
 * waking the host. */
static loom_status skel_event_create(void *ctx, uint32_t dev, void **event, char *err,
                                     size_t err_len)
{
    (void)ctx;
    (void)dev;
    skel_event *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_len, "skeleton: out of memory for an event");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    pthread_mutex_init(&e->m, NULL);
    pthread_cond_init(&e->cv, NULL);
    *event = e;
    return LOOM_OK;
}

/* Mark the point after everything submitted so far: a copy item with no bytes marks it. */
static loom_status skel_event_record(void *ctx, uint32_t dev, void *event, char *err,
                                     size_t err_len)
{
    (void)dev;
    skel_queue *q = get_queue(ctx, err, err_len);
    skel_item *it = q ? new_item(ITEM_COPY, err, err_len) : NULL;
    if (!it)
        return q ? LOOM_ERR_OUT_OF_MEMORY : LOOM_ERR_DEVICE_LOST;
    it->event = event;
    push(q, it);
    return LOOM_OK;
}

static loom_status skel_event_wait(void *ctx, uint32_t dev, void *event, char *err,
                                   size_t err_len)
{
    (void)dev;
    skel_queue *q = get_queue(ctx, err, err_len);
    skel_item *it = q ? new_item(ITEM_WAIT, err, err_len) : NULL;
    if (!it)
        return q ? LOOM_ERR_OUT_OF_MEMORY : LOOM_ERR_DEVICE_LOST;
    it->event = event;
    push(q, it);
    return LOOM_OK;
}

static void skel_event_destroy(void *ctx, void *event)
{
    (void)ctx;
    skel_event *e = event;
    if (!e)
        return;
    pthread_mutex_destroy(&e->m);
    pthread_cond_destroy(&e->cv);
    free(e);
}

/* Asynchronous copies: queued behind the kernels submitted before them, so a download sees
 * their results; EVENT (optional) marks the copy's completion for event_wait. */
static loom_status copy_async(skel_state *s, void *dst, const void *src, size_t bytes,
                              void *event, loom_done_fn done, void *token, char *err,
                              size_t err_len)
{
    skel_queue *q = get_queue(s, err, err_len);
    skel_item *it = q ? new_item(ITEM_COPY, err, err_len) : NULL;
    if (!it)
        return q ? LOOM_ERR_OUT_OF_MEMORY : LOOM_ERR_DEVICE_LOST;
    it->dst = dst;
    it->src = src;
    it->bytes = bytes;
    it->event = event;
    it->done = done;
    it->token = token;
    push(q, it);
    return LOOM_OK;
}

static loom_status skel_upload_async(void *ctx, uint32_t dev, void *dst, const void *src,
                                     size_t bytes, void *event, loom_done_fn done, void *token,
                                     char *err, size_t err_len)
{
    (void)dev;
    return copy_async(ctx, dst, src, bytes, event, done, token, err, err_len);
}

static loom_status skel_download_async(void *ctx, uint32_t dev, void *dst, const void *src,
                                       size_t bytes, void *event, loom_done_fn done, void *token,
                                       char *err, size_t err_len)
{
    (void)dev;
    return copy_async(ctx, dst, src, bytes, event, done, token, err, err_len);
}

/* ==== 7. device memory (option device_memory=1) ============================================ */

/* The host never dereferences these addresses: it only adds offsets and hands them back. */
static void *skel_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    skel_state *s = ctx;
    (void)dev;
    pthread_mutex_lock(&s->mem_lock);
    int room = size <= s->memory_bytes - s->allocated;
    if (room)
        s->allocated += size; /* free() is told the same size back */
    pthread_mutex_unlock(&s->mem_lock);
    size_t rounded = (size + align - 1) / align * align;
    void *p = room ? aligned_alloc(align, rounded ? rounded : align) : NULL;
    if (room && !p) {
        pthread_mutex_lock(&s->mem_lock);
        s->allocated -= size;
        pthread_mutex_unlock(&s->mem_lock);
    }
    return p;
}

static void skel_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    skel_state *s = ctx;
    (void)dev;
    if (!ptr)
        return;
    free(ptr);
    pthread_mutex_lock(&s->mem_lock);
    s->allocated = s->allocated > size ? s->allocated - size : 0;
    pthread_mutex_unlock(&s->mem_lock);
}

/* Synchronous copies. The queue may still hold kernels writing SRC: a download first waits for
 * the queue to drain, as the ABI asks (everything finished before the call is visible). */
static void drain_queue(skel_state *s)
{
    pthread_mutex_lock(&s->queue_lock);
    skel_queue *q = s->queue;
    pthread_mutex_unlock(&s->queue_lock);
    if (!q)
        return;
    skel_event e = {.target = 0, .reached = 0};
    pthread_mutex_init(&e.m, NULL);
    pthread_cond_init(&e.cv, NULL);
    char err[64];
    if (skel_event_record(s, 0, &e, err, sizeof err) == LOOM_OK) {
        pthread_mutex_lock(&e.m);
        while (e.reached < e.target)
            pthread_cond_wait(&e.cv, &e.m);
        pthread_mutex_unlock(&e.m);
    }
    pthread_mutex_destroy(&e.m);
    pthread_cond_destroy(&e.cv);
}

static loom_status skel_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                               char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)err;
    (void)err_len;
    memcpy(dst, src, bytes);
    return LOOM_OK;
}

static loom_status skel_download(void *ctx, uint32_t dev, void *dst, const void *src,
                                 size_t bytes, char *err, size_t err_len)
{
    (void)dev;
    (void)err;
    (void)err_len;
    drain_queue(ctx);
    memcpy(dst, src, bytes);
    return LOOM_OK;
}

/* What alloc can still give: the capacity check of a plan asks this. */
static loom_status skel_memory_info(void *ctx, uint32_t dev, uint64_t *free_bytes,
                                    uint64_t *total_bytes)
{
    skel_state *s = ctx;
    (void)dev;
    pthread_mutex_lock(&s->mem_lock);
    *free_bytes = s->memory_bytes - s->allocated;
    *total_bytes = s->memory_bytes;
    pthread_mutex_unlock(&s->mem_lock);
    return LOOM_OK;
}

/* ==== 3. the exported symbol ================================================================ */

static void skel_shutdown(void *ctx)
{
    skel_state *s = ctx;
    if (s->queue) { /* finish what is queued, then stop the thread */
        pthread_mutex_lock(&s->queue->m);
        s->queue->stop = 1;
        pthread_cond_signal(&s->queue->cv);
        pthread_mutex_unlock(&s->queue->m);
        pthread_join(s->queue->thread, NULL);
        pthread_mutex_destroy(&s->queue->m);
        pthread_cond_destroy(&s->queue->cv);
        free(s->queue);
    }
    pthread_mutex_destroy(&s->mem_lock);
    pthread_mutex_destroy(&s->queue_lock);
    free(s); /* the table lives inside the state: it dies here too */
}

/* The one exported symbol. Refuse a host of another major version; otherwise make a new,
 * independent instance. Slots left NULL mean "not offered": the host's defaults apply. */
__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    void *hctx = NULL;
    void (*log)(void *, loom_log_level, const char *) = NULL;
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log) {
        hctx = host->host_ctx;
        log = host->log;
    }
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR) {
        if (log)
            log(hctx, LOOM_LOG_ERROR, "skeleton: built for another major version of the ABI");
        return NULL;
    }
    skel_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->host_ctx = hctx;
    s->log = log;
    s->memory_bytes = (uint64_t)256 << 20;
    pthread_mutex_init(&s->mem_lock, NULL);
    pthread_mutex_init(&s->queue_lock, NULL);
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "skeleton";
    t->ctx = s;
    /* parts 1-3: required */
    t->device_count = skel_device_count;
    t->device_info = skel_device_info;
    t->supports = skel_supports;
    t->prepare = skel_prepare;
    t->execute = skel_execute;
    t->release_kernel = skel_release_kernel;
    t->shutdown = skel_shutdown;
    /* part 4 */
    t->options = skel_options;
    t->n_options = sizeof skel_options / sizeof skel_options[0];
    t->set_option = skel_set_option;
    /* part 5 */
    t->claim = skel_claim;
    t->prepare_subgraph = skel_prepare_subgraph;
    /* part 6 */
    t->enqueue = skel_enqueue;
    t->event_create = skel_event_create;
    t->event_record = skel_event_record;
    t->event_wait = skel_event_wait;
    t->event_destroy = skel_event_destroy;
    t->upload_async = skel_upload_async;
    t->download_async = skel_download_async;
    /* part 7: alloc/upload/download are what a device the host cannot address needs; with
     * device_memory=0 they are harmless (the host then uses them only for the arena). */
    t->alloc = skel_alloc;
    t->free = skel_free;
    t->upload = skel_upload;
    t->download = skel_download;
    t->memory_info = skel_memory_info;
    skel_log(s, LOOM_LOG_DEBUG, "skeleton: started");
    return t;
}
