/*
 * A test plugin whose memory the host cannot address: backend "devmem", one device (kind NPU)
 * that reports host_visible = 0. Its alloc() hands out addresses with bit 62 flipped, which the
 * CPU cannot dereference (non-canonical), so any host code that touches device memory instead
 * of going through upload()/download() crashes at once. It computes float32 Relu, Add (same
 * shapes) and 2-D MatMul with naive loops, keeps its own copy of constant inputs from prepare
 * (as the ABI asks), and estimates its time as 5 TFLOP/s with a 2 us launch, so that the
 * placement sends MatMuls to it and the plan needs copy nodes.
 *
 * $LOOM_TEST_DEVMEM_FAIL=N (read when the plugin is queried): the N-th execution fails with
 * "devmem: injected failure", for the executor's staged fallback.
 * $LOOM_TEST_DEVMEM_ODD_COPY_BYTES=N: every upload() and download() of exactly N bytes returns
 * 77, a status outside loom_status, with "devmem: odd copy status on purpose" (calibration's
 * host-link timing copies 4 KiB first).
 * $LOOM_TEST_DEVMEM_SHARES_HOST=1: the device says it computes on the host's CPU cores
 * (shares_host_cpu), as PoCL does.
 *
 * ABI 1.0 memory and events (tests/test_events.c): when $LOOM_TEST_DEVMEM_DEVICES is set (1 or
 * 2 devices; unset: the one synchronous device above, so older tests keep their plans) every
 * device has in-order queues, each a thread of its own: one for kernels (enqueue and submit,
 * in_order = 1) and one for copies (upload_async, download_async). It offers events (a
 * generation counter per event: record marks a point in a queue, wait blocks the queue until
 * it is reached), copy_peer between its devices, alloc_host/free_host (ordinary aligned memory)
 * and memory_info, whose free bytes are $LOOM_TEST_DEVMEM_FREE (default 1 GiB). The plugin
 * counts what the host used; devmem_test_count(NAME) (exported) returns a count: "alloc_host",
 * "free_host", "peer", "upload_async", "download_async", "record", "wait", "enqueue".
 */
#include <loom/backend.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEV_BIT ((uintptr_t)1 << 62)

#define DM_MAX_DEVICES 2

struct dm_state;

/* One operation of a queue. */
typedef struct dm_op {
    enum { DM_EXEC, DM_RECORD, DM_WAIT, DM_UPLOAD, DM_DOWNLOAD } kind;
    void *kernel;
    const void **in; /* every input pointer of an execution (N_IN, owned by the op) */
    uint32_t n_in;
    void *out;
    loom_done_fn done;
    void *token;
    struct dm_event *event;
    uint64_t target;
    void *dst;
    const void *src;
    size_t bytes;
    struct dm_op *next;
} dm_op;

/* An in-order queue and its thread. */
typedef struct dm_queue {
    struct dm_state *s;
    uint32_t dev;
    pthread_t thread;
    int started;
    pthread_mutex_t m;
    pthread_cond_t cv;
    dm_op *head, *tail;
    int stop;
} dm_queue;

/* An event: RECORDED counts the points marked (record, or an async copy's completion);
 * REACHED the last point a queue passed. A wait blocks until REACHED >= the count it saw. */
typedef struct dm_event {
    pthread_mutex_t m;
    pthread_cond_t cv;
    uint64_t recorded, reached;
} dm_event;

typedef struct dm_state {
    loom_backend table;
    long fail_at; /* 0: never */
    atomic_long calls;
    uint32_t n_devices;
    int async;               /* the ABI 1.0 queues, events and memory slots */
    uint64_t free_bytes;     /* memory_info */
    dm_queue queues[DM_MAX_DEVICES][2]; /* [dev][0: kernels, 1: copies] */
    /* Subgraph claims (dm_claim): $LOOM_TEST_DEVMEM_CLAIMS ("off", or a broken claim to add:
     * "overlap", "range", "disconnected", "nonconvex", "nan"), $LOOM_TEST_DEVMEM_CLAIM_S (the
     * estimate of every claim, seconds), $LOOM_TEST_DEVMEM_SG_FAIL=1 (prepare_subgraph fails),
     * $LOOM_TEST_DEVMEM_WRONG_UNIT=1 (a claimed unit computes a wrong answer: the bias is
     * added twice; for `loom backend-test`, which must fail it). */
    char claim_mode[16];
    double claim_s;          /* < 0: estimate from the flops */
    int sg_fail;
    int wrong_unit;
    int shares_host;         /* $LOOM_TEST_DEVMEM_SHARES_HOST=1: says it computes on the host's
                              * CPU cores, as PoCL does */
    size_t odd_copy_bytes;   /* $LOOM_TEST_DEVMEM_ODD_COPY_BYTES; 0: never */
} dm_state;

typedef struct dm_kernel {
    loom_op_id op;
    int64_t m, k, n;    /* MatMul dims; elementwise: m = element count */
    void *constant[2];  /* own copies of constant inputs */
    /* A claimed unit (op LOOM_OP_GEMM, never a single node here): Y = act(A W + bias), W
     * (constant[0], K x N) and the bias broadcast to M x N (constant[1], or NULL) its own
     * copies; A is input A_INDEX. */
    int unit_relu, unit_a;
    int unit_wrong;     /* $LOOM_TEST_DEVMEM_WRONG_UNIT: the bias counts twice */
    uint32_t n_in;      /* inputs of its loom_exec_args (a unit: its subgraph's inputs) */
} dm_kernel;

static void *to_host(const void *p)
{
    return (void *)((uintptr_t)p ^ DEV_BIT);
}

static int is_device(const void *p)
{
    return ((uintptr_t)p & DEV_BIT) != 0;
}

static uint32_t dm_device_count(void *ctx)
{
    return ((dm_state *)ctx)->n_devices;
}

static loom_status dm_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    dm_state *s = ctx;
    if (dev >= s->n_devices)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "devmem test device");
    d.in_order = (uint32_t)s->async;
    d.kind = LOOM_DEVICE_NPU;
    d.compute_units = 1;
    d.threads = 1;
    d.numa_node = -1;
    d.host_visible = 0;
    d.memory_bytes = (uint64_t)1 << 30;
    d.peak_flops_f32 = 50e9;
    d.mem_bandwidth = 50e9;
    d.launch_latency_s = 2e-6;
    d.shares_host_cpu = (uint32_t)s->shares_host;
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &d, size && size < sizeof d ? size : sizeof d);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

static int same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return 0;
    return 1;
}

static int dm_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    int ok = dev < ((dm_state *)ctx)->n_devices && node->n_inputs >= 1 &&
             node->inputs[0].dtype == LOOM_DTYPE_F32;
    if (ok && node->op == LOOM_OP_ADD)
        ok = same_shape(&node->inputs[0], &node->inputs[1]) &&
             same_shape(&node->inputs[0], &node->outputs[0]);
    else if (ok && node->op == LOOM_OP_MATMUL)
        ok = node->inputs[0].rank == 2 && node->inputs[1].rank == 2;
    else if (ok)
        ok = node->op == LOOM_OP_RELU;
    if (!ok)
        snprintf(reason, reason_len, "devmem: only float32 Relu, Add (same shapes), 2-D MatMul");
    return ok;
}

static void dm_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    dm_kernel *k = kernel;
    if (!k)
        return;
    free(k->constant[0]);
    free(k->constant[1]);
    free(k);
}

static loom_status dm_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    dm_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return LOOM_ERR_OUT_OF_MEMORY;
    k->op = node->op;
    k->n_in = node->n_inputs;
    if (node->op == LOOM_OP_MATMUL) {
        k->m = node->inputs[0].dims[0];
        k->k = node->inputs[0].dims[1];
        k->n = node->inputs[1].dims[1];
    } else {
        k->m = loom_tensor_desc_numel(&node->outputs[0]);
    }
    for (uint32_t i = 0; i < node->n_inputs && i < 2; i++) {
        if (!node->input_constants || !node->input_constants[i])
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(&node->inputs[i]) * sizeof(float);
        if (!(k->constant[i] = malloc(bytes ? bytes : 1))) {
            dm_release_kernel(ctx, k);
            snprintf(err, err_len, "devmem: out of memory copying a constant");
            return LOOM_ERR_OUT_OF_MEMORY;
        }
        memcpy(k->constant[i], node->input_constants[i], bytes);
    }
    *kernel = k;
    *scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- subgraph claims (ABI 1.0) ---------------------------------------------------------- */

/* Run a claimed unit: Y = act(A W + bias) with naive loops. */
static loom_status dm_run_unit(const dm_kernel *k, const loom_exec_args *args, char *err,
                               size_t err_len)
{
    const void *a = args->inputs[k->unit_a];
    if (!is_device(a) || !is_device(args->outputs[0])) {
        snprintf(err, err_len, "devmem: a unit's input or output is a host address");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    const float *x = to_host(a), *w = k->constant[0], *b = k->constant[1];
    float *y = to_host(args->outputs[0]);
    for (int64_t i = 0; i < k->m; i++)
        for (int64_t j = 0; j < k->n; j++) {
            double acc = b ? b[i * k->n + j] * (k->unit_wrong ? 2.0 : 1.0) : 0.0;
            for (int64_t q = 0; q < k->k; q++)
                acc += (double)x[i * k->k + q] * w[q * k->n + j];
            y[i * k->n + j] = k->unit_relu && acc < 0 ? 0.0f : (float)acc;
        }
    return LOOM_OK;
}

static int is_f32_const(const loom_subgraph_desc *g, int32_t v)
{
    return v >= 0 && (uint32_t)v < g->n_inputs && g->input_constants[v] &&
           g->inputs[v].dtype == LOOM_DTYPE_F32;
}

/* Whether constant DESC broadcasts to [M, N] (rank <= 2, each dim 1 or the full size). */
static int broadcasts(const loom_tensor_desc *d, int64_t m, int64_t n)
{
    if (d->rank > 2)
        return 0;
    int64_t d0 = d->rank == 2 ? d->dims[0] : 1, d1 = d->rank >= 1 ? d->dims[d->rank - 1] : 1;
    return (d0 == 1 || d0 == m) && (d1 == 1 || d1 == n);
}

/* The readers of each value of G: COUNT[v] and the last one in LAST[v] (-1: none); graph
 * outputs count as a reader outside. */
static void dm_readers(const loom_subgraph_desc *g, uint32_t n_values, uint32_t *count,
                       int32_t *last)
{
    for (uint32_t v = 0; v < n_values; v++) {
        count[v] = 0;
        last[v] = -1;
    }
    for (uint32_t k = 0; k < g->n_nodes; k++)
        for (uint32_t j = 0; j < g->nodes[k].n_inputs; j++) {
            int32_t v = g->node_inputs[k][j];
            if (v >= 0 && (uint32_t)v < n_values) {
                count[v]++;
                last[v] = (int32_t)k;
            }
        }
    for (uint32_t o = 0; o < g->n_outputs; o++)
        if (g->output_values[o] < n_values)
            count[g->output_values[o]] += 2; /* never the only reader */
}

/* The chain devmem compiles starting at node K of G: MatMul (2-D, constant W) [+ Add of a
 * constant that broadcasts] [+ Relu], or Gemm (transA 0, constant B and C) [+ Relu]. Writes the
 * node indices into CHAIN; returns their count (< 2: no chain). OUT0[k] is node k's first
 * output value id. */
static uint32_t dm_chain(const loom_subgraph_desc *g, uint32_t k, const uint32_t *out0,
                         const uint32_t *count, const int32_t *last, uint32_t *chain)
{
    const loom_node_desc *h = &g->nodes[k];
    if (h->n_inputs < 2 || h->inputs[0].dtype != LOOM_DTYPE_F32 || h->inputs[0].rank != 2 ||
        h->inputs[1].rank != 2 || !is_f32_const(g, g->node_inputs[k][1]))
        return 0;
    int64_t m = h->outputs[0].dims[0], n = h->outputs[0].dims[1];
    if (h->op == LOOM_OP_GEMM) {
        if (loom_node_attr_int(h, "transA", 0) != 0 ||
            (h->n_inputs > 2 && g->node_inputs[k][2] >= 0 &&
             (!is_f32_const(g, g->node_inputs[k][2]) || !broadcasts(&h->inputs[2], m, n))))
            return 0;
    } else if (h->op != LOOM_OP_MATMUL) {
        return 0;
    }
    uint32_t len = 0;
    chain[len++] = k;
    uint32_t v = out0[k];
    int added = h->op == LOOM_OP_GEMM;
    for (int step = 0; step < 2; step++) {
        if (count[v] != 1 || last[v] < 0)
            break;
        uint32_t c = (uint32_t)last[v];
        const loom_node_desc *cn = &g->nodes[c];
        if (!added && cn->op == LOOM_OP_ADD && cn->n_inputs == 2) {
            int32_t other = g->node_inputs[c][0] == (int32_t)v ? g->node_inputs[c][1]
                                                                : g->node_inputs[c][0];
            uint32_t oi = g->node_inputs[c][0] == (int32_t)v ? 1 : 0;
            if (!is_f32_const(g, other) || !broadcasts(&cn->inputs[oi], m, n))
                break;
            added = 1;
        } else if (cn->op == LOOM_OP_RELU) {
            chain[len++] = c;
            break;
        } else {
            break;
        }
        chain[len++] = c;
        v = out0[c];
    }
    return len;
}

static uint32_t dm_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *g, uint32_t *nodes,
                         uint32_t max_nodes, loom_claim *claims, uint32_t max_claims)
{
    dm_state *s = ctx;
    (void)dev;
    if (!strcmp(s->claim_mode, "off") || !g->n_nodes)
        return 0;
    uint32_t n_values = g->n_inputs;
    for (uint32_t k = 0; k < g->n_nodes; k++)
        n_values += g->nodes[k].n_outputs;
    uint32_t *count = calloc(n_values + 1, sizeof *count);
    int32_t *last = calloc(n_values + 1, sizeof *last);
    uint32_t *out0 = calloc(g->n_nodes + 1, sizeof *out0);
    uint32_t *chain = calloc(4, sizeof *chain);
    if (!count || !last || !out0 || !chain) {
        free(count), free(last), free(out0), free(chain);
        return 0;
    }
    dm_readers(g, n_values, count, last);
    uint32_t next = g->n_inputs;
    for (uint32_t k = 0; k < g->n_nodes; k++) {
        out0[k] = next;
        next += g->nodes[k].n_outputs;
    }
    uint32_t nc = 0, used = 0;
    for (uint32_t k = 0; k < g->n_nodes && nc < max_claims; k++) {
        uint32_t len = dm_chain(g, k, out0, count, last, chain);
        if (len < 2 || used + len > max_nodes)
            continue;
        loom_claim *c = &claims[nc++];
        c->first_node = used;
        c->node_count = len;
        const loom_node_desc *h = &g->nodes[k];
        double flops = 2.0 * (double)h->outputs[0].dims[0] * (double)h->outputs[0].dims[1] *
                       (double)h->inputs[0].dims[1];
        c->estimate_s = s->claim_s >= 0 ? s->claim_s : 2e-6 + flops / 5e12;
        c->label[0] = '\0'; /* the host names it from the ops */
        for (uint32_t i = 0; i < len; i++)
            nodes[used++] = chain[i];
    }
    /* Broken claims on purpose, for the host's checks (tests/test_claims.c). */
    const char *mode = s->claim_mode;
    if (nc && nc < max_claims && used + 2 <= max_nodes) {
        loom_claim *c = &claims[nc];
        memset(c, 0, sizeof *c);
        c->estimate_s = -1;
        c->first_node = used;
        if (!strcmp(mode, "overlap")) {
            c->node_count = claims[0].node_count;
            c->first_node = claims[0].first_node;
            snprintf(c->label, sizeof c->label, "overlapping");
            nc++;
        } else if (!strcmp(mode, "range")) {
            nodes[used++] = g->n_nodes + 5;
            c->node_count = 1;
            snprintf(c->label, sizeof c->label, "out-of-range");
            nc++;
        } else if (!strcmp(mode, "nan")) {
            c->first_node = claims[0].first_node;
            c->node_count = claims[0].node_count;
            c->estimate_s = 0.0 / 0.0;
            snprintf(c->label, sizeof c->label, "nan-estimate");
            claims[0] = *c; /* replaces the first claim */
        } else if (!strcmp(mode, "disconnected") && nc >= 3) {
            /* The head of chain 1 and the end of chain 2, in place of those two chains. */
            nodes[used++] = nodes[claims[1].first_node];
            nodes[used++] = nodes[claims[2].first_node + claims[2].node_count - 1];
            c->node_count = 2;
            snprintf(c->label, sizeof c->label, "disconnected");
            claims[1] = *c;
            for (uint32_t i = 3; i < nc; i++)
                claims[i - 1] = claims[i];
            nc--;
        }
    }
    if (!strcmp(mode, "nonconvex") && nc < max_claims && used + 2 <= max_nodes) {
        /* A node K and a reader C of K's output that also reads, through another node, K's
         * output again (a diamond): {K, C} is connected but not convex. */
        for (uint32_t k = 0; k < g->n_nodes; k++)
            for (uint32_t c = k + 1; c < g->n_nodes; c++) {
                int direct = 0, via = 0;
                for (uint32_t j = 0; j < g->nodes[c].n_inputs; j++) {
                    int32_t v = g->node_inputs[c][j];
                    direct |= v == (int32_t)out0[k];
                    for (uint32_t b = k + 1; b < c; b++)
                        if (v == (int32_t)out0[b])
                            for (uint32_t i = 0; i < g->nodes[b].n_inputs; i++)
                                via |= g->node_inputs[b][i] == (int32_t)out0[k];
                }
                if (direct && via && nc < max_claims) {
                    loom_claim *cl = &claims[nc++];
                    memset(cl, 0, sizeof *cl);
                    cl->first_node = used;
                    cl->node_count = 2;
                    cl->estimate_s = -1;
                    snprintf(cl->label, sizeof cl->label, "nonconvex");
                    nodes[used++] = k;
                    nodes[used++] = c;
                    k = c = g->n_nodes; /* one is enough */
                }
            }
    }
    free(count);
    free(last);
    free(out0);
    free(chain);
    return nc;
}

static loom_status dm_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *g,
                                       void **kernel, size_t *scratch_bytes, char *err,
                                       size_t err_len)
{
    dm_state *s = ctx;
    (void)dev;
    if (s->sg_fail) {
        snprintf(err, err_len, "devmem: injected prepare_subgraph failure for %s", g->name);
        return LOOM_ERR_UNSUPPORTED;
    }
    uint32_t n_values = g->n_inputs;
    for (uint32_t k = 0; k < g->n_nodes; k++)
        n_values += g->nodes[k].n_outputs;
    uint32_t count[64], out0[8], chain[4];
    int32_t last[64];
    if (n_values > 64 || g->n_nodes > 3 || g->n_outputs != 1) {
        snprintf(err, err_len, "devmem: %s is not a chain devmem compiles", g->name);
        return LOOM_ERR_UNSUPPORTED;
    }
    dm_readers(g, n_values, count, last);
    uint32_t next = g->n_inputs;
    for (uint32_t k = 0; k < g->n_nodes; k++) {
        out0[k] = next;
        next += g->nodes[k].n_outputs;
    }
    /* The output leaves, so it has no single reader inside: the chain stops there. */
    if (dm_chain(g, 0, out0, count, last, chain) != g->n_nodes ||
        g->output_values[0] != out0[g->n_nodes - 1]) {
        snprintf(err, err_len, "devmem: %s is not a chain devmem compiles", g->name);
        return LOOM_ERR_UNSUPPORTED;
    }
    const loom_node_desc *h = &g->nodes[0];
    dm_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return LOOM_ERR_OUT_OF_MEMORY;
    k->op = LOOM_OP_GEMM;
    k->m = h->outputs[0].dims[0];
    k->n = h->outputs[0].dims[1];
    k->k = h->inputs[0].dims[1];
    k->unit_a = g->node_inputs[0][0];
    k->unit_relu = g->nodes[g->n_nodes - 1].op == LOOM_OP_RELU;
    k->unit_wrong = s->wrong_unit;
    k->n_in = g->n_inputs;
    if (k->unit_a < 0 || (uint32_t)k->unit_a >= g->n_inputs || g->input_constants[k->unit_a]) {
        free(k);
        snprintf(err, err_len, "devmem: %s: its activation is not a non-constant input", g->name);
        return LOOM_ERR_UNSUPPORTED;
    }
    int trans_b = h->op == LOOM_OP_GEMM && loom_node_attr_int(h, "transB", 0);
    float alpha = h->op == LOOM_OP_GEMM ? loom_node_attr_float(h, "alpha", 1.0f) : 1.0f;
    float beta = h->op == LOOM_OP_GEMM ? loom_node_attr_float(h, "beta", 1.0f) : 1.0f;
    const float *wsrc = g->input_constants[g->node_inputs[0][1]];
    float *w = malloc((size_t)(k->k * k->n + 1) * sizeof *w);
    float *b = NULL;
    /* The bias: Gemm's C, or the constant the Add reads. */
    const loom_tensor_desc *bd = NULL;
    const float *bsrc = NULL;
    if (h->op == LOOM_OP_GEMM && h->n_inputs > 2 && g->node_inputs[0][2] >= 0) {
        bd = &h->inputs[2];
        bsrc = g->input_constants[g->node_inputs[0][2]];
    } else if (g->n_nodes > 1 && g->nodes[1].op == LOOM_OP_ADD) {
        uint32_t oi = g->node_inputs[1][0] == (int32_t)out0[0] ? 1 : 0;
        bd = &g->nodes[1].inputs[oi];
        bsrc = g->input_constants[g->node_inputs[1][oi]];
    }
    if (bd)
        b = malloc((size_t)(k->m * k->n + 1) * sizeof *b);
    if (!w || (bd && !b)) {
        free(w), free(b), free(k);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    for (int64_t q = 0; q < k->k; q++)
        for (int64_t j = 0; j < k->n; j++)
            w[q * k->n + j] = alpha * (trans_b ? wsrc[j * k->k + q] : wsrc[q * k->n + j]);
    if (bd) {
        int64_t d0 = bd->rank == 2 ? bd->dims[0] : 1, d1 = bd->rank >= 1 ? bd->dims[bd->rank - 1] : 1;
        for (int64_t i = 0; i < k->m; i++)
            for (int64_t j = 0; j < k->n; j++)
                b[i * k->n + j] = beta * bsrc[(d0 == 1 ? 0 : i) * d1 + (d1 == 1 ? 0 : j)];
    }
    k->constant[0] = w;
    k->constant[1] = b;
    *kernel = k;
    *scratch_bytes = 0;
    return LOOM_OK;
}

static loom_status dm_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    dm_state *s = ctx;
    (void)dev;
    long call = atomic_fetch_add(&s->calls, 1) + 1;
    if (s->fail_at > 0 && call == s->fail_at) {
        snprintf(err, err_len, "devmem: injected failure (call %ld)", call);
        return LOOM_ERR_DEVICE_LOST;
    }
    const dm_kernel *k = kernel;
    if (k->op == LOOM_OP_GEMM)
        return dm_run_unit(k, args, err, err_len);
    const float *in[2] = {NULL, NULL};
    int n_in = k->op == LOOM_OP_RELU ? 1 : 2;
    for (int i = 0; i < n_in; i++) {
        if (k->constant[i]) {
            in[i] = k->constant[i];
        } else if (!is_device(args->inputs[i])) {
            snprintf(err, err_len, "devmem: input %d is a host address, not device memory", i);
            return LOOM_ERR_INVALID_ARGUMENT;
        } else {
            in[i] = to_host(args->inputs[i]);
        }
    }
    if (!is_device(args->outputs[0])) {
        snprintf(err, err_len, "devmem: the output is a host address, not device memory");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    float *y = to_host(args->outputs[0]);
    if (k->op == LOOM_OP_RELU) {
        for (int64_t i = 0; i < k->m; i++)
            y[i] = in[0][i] > 0 ? in[0][i] : 0.0f;
    } else if (k->op == LOOM_OP_ADD) {
        for (int64_t i = 0; i < k->m; i++)
            y[i] = in[0][i] + in[1][i];
    } else {
        for (int64_t i = 0; i < k->m; i++)
            for (int64_t j = 0; j < k->n; j++) {
                double acc = 0;
                for (int64_t q = 0; q < k->k; q++)
                    acc += (double)in[0][i * k->k + q] * in[1][q * k->n + j];
                y[i * k->n + j] = (float)acc;
            }
    }
    return LOOM_OK;
}

static double dm_estimate(void *ctx, uint32_t dev, const loom_node_desc *node)
{
    (void)ctx;
    (void)dev;
    double flops = 0;
    if (node->op == LOOM_OP_MATMUL)
        flops = 2.0 * (double)node->inputs[0].dims[0] * (double)node->inputs[0].dims[1] *
                (double)node->inputs[1].dims[1];
    else
        flops = (double)loom_tensor_desc_numel(&node->outputs[0]);
    return 2e-6 + flops / 5e12;
}

static void *dm_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    (void)ctx;
    (void)dev;
    void *p = aligned_alloc(align < 64 ? 64 : align, (size + 63) / 64 * 64);
    return p ? (void *)((uintptr_t)p ^ DEV_BIT) : NULL;
}

static void dm_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    (void)ctx;
    (void)dev;
    (void)size;
    if (ptr)
        free(to_host(ptr));
}

static loom_status dm_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                             char *err, size_t err_len)
{
    (void)dev;
    if (!is_device(dst) || is_device(src)) {
        snprintf(err, err_len, "devmem: upload needs a device destination and a host source");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    if (bytes && bytes == ((dm_state *)ctx)->odd_copy_bytes) {
        snprintf(err, err_len, "devmem: odd copy status on purpose");
        return (loom_status)77;
    }
    memcpy(to_host(dst), src, bytes);
    return LOOM_OK;
}

static loom_status dm_download(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                               char *err, size_t err_len)
{
    (void)dev;
    if (is_device(dst) || !is_device(src)) {
        snprintf(err, err_len, "devmem: download needs a device source and a host destination");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    if (bytes && bytes == ((dm_state *)ctx)->odd_copy_bytes) {
        snprintf(err, err_len, "devmem: odd copy status on purpose");
        return (loom_status)77;
    }
    memcpy(dst, to_host(src), bytes);
    return LOOM_OK;
}

/* ---- ABI 1.0: queues, events, asynchronous and peer copies, pinned memory ---------------- */

enum { C_ALLOC_HOST, C_FREE_HOST, C_PEER, C_UPLOAD_ASYNC, C_DOWNLOAD_ASYNC, C_RECORD, C_WAIT,
       C_ENQUEUE, C_COUNT };
static const char *const count_names[C_COUNT] = {"alloc_host", "free_host", "peer",
                                                 "upload_async", "download_async", "record",
                                                 "wait", "enqueue"};
static atomic_long counts[C_COUNT]; /* across instances: what the tests read */

__attribute__((visibility("default"))) long devmem_test_count(const char *name);

long devmem_test_count(const char *name)
{
    for (int i = 0; i < C_COUNT; i++)
        if (!strcmp(name, count_names[i]))
            return atomic_load(&counts[i]);
    return -1;
}

static void count(int what)
{
    atomic_fetch_add(&counts[what], 1);
}

/* Mark the point TARGET of EV as reached. */
static void event_reach(dm_event *ev, uint64_t target)
{
    pthread_mutex_lock(&ev->m);
    if (ev->reached < target)
        ev->reached = target;
    pthread_cond_broadcast(&ev->cv);
    pthread_mutex_unlock(&ev->m);
}

static void run_op(dm_queue *q, dm_op *op)
{
    char err[256] = "";
    loom_status st = LOOM_OK;
    switch (op->kind) {
    case DM_EXEC: {
        loom_exec_args a = {.struct_size = sizeof a, .inputs = (const void *const *)op->in,
                            .outputs = (void *const *)&op->out};
        st = dm_execute(q->s, q->dev, op->kernel, &a, err, sizeof err);
        break;
    }
    case DM_RECORD:
        event_reach(op->event, op->target);
        return;
    case DM_WAIT:
        pthread_mutex_lock(&op->event->m);
        while (op->event->reached < op->target)
            pthread_cond_wait(&op->event->cv, &op->event->m);
        pthread_mutex_unlock(&op->event->m);
        return;
    case DM_UPLOAD:
        memcpy(to_host(op->dst), op->src, op->bytes);
        break;
    case DM_DOWNLOAD:
        memcpy(op->dst, to_host(op->src), op->bytes);
        break;
    }
    if (op->event) /* an async copy's completion point */
        event_reach(op->event, op->target);
    op->done(op->token, st, err[0] ? err : NULL);
}

static void *queue_main(void *arg)
{
    dm_queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->m);
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->m);
        dm_op *op = q->head;
        if (!op) { /* stopped and drained */
            pthread_mutex_unlock(&q->m);
            return NULL;
        }
        q->head = op->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->m);
        run_op(q, op);
        free(op->in);
        free(op);
    }
}

/* Append a copy of OP to queue Q of DEV (0: kernels, 1: copies). */
static loom_status push(dm_state *s, uint32_t dev, int which, const dm_op *op, char *err,
                        size_t err_len)
{
    if (dev >= s->n_devices) {
        snprintf(err, err_len, "devmem: no device %u", dev);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    dm_op *o = malloc(sizeof *o);
    if (!o) {
        snprintf(err, err_len, "devmem: out of memory queueing");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    *o = *op;
    o->next = NULL;
    dm_queue *q = &s->queues[dev][which];
    pthread_mutex_lock(&q->m);
    if (q->tail)
        q->tail->next = o;
    else
        q->head = o;
    q->tail = o;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->m);
    return LOOM_OK;
}

static loom_status dm_enqueue(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              loom_done_fn done, void *token, char *err, size_t err_len)
{
    const dm_kernel *k = kernel;
    dm_op op = {.kind = DM_EXEC, .kernel = kernel, .done = done, .token = token,
                .out = args->outputs[0], .n_in = k->n_in};
    /* Every input pointer: a unit's activation may be any of its subgraph's inputs. */
    op.in = calloc(k->n_in + 1, sizeof *op.in);
    if (!op.in) {
        snprintf(err, err_len, "devmem: out of memory queueing");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    for (uint32_t i = 0; i < k->n_in; i++)
        op.in[i] = args->inputs[i];
    count(C_ENQUEUE);
    loom_status st = push(ctx, dev, 0, &op, err, err_len);
    if (st != LOOM_OK)
        free(op.in);
    return st;
}

static loom_status dm_submit(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                             void (*done)(void *, loom_status, const char *), void *token)
{
    char err[128];
    return dm_enqueue(ctx, dev, kernel, args, done, token, err, sizeof err);
}

static loom_status dm_event_create(void *ctx, uint32_t dev, void **event, char *err,
                                   size_t err_len)
{
    (void)ctx;
    (void)dev;
    dm_event *ev = calloc(1, sizeof *ev);
    if (!ev) {
        snprintf(err, err_len, "devmem: out of memory for an event");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    pthread_mutex_init(&ev->m, NULL);
    pthread_cond_init(&ev->cv, NULL);
    *event = ev;
    return LOOM_OK;
}

/* The next point of EV, for a record or an async copy issued now. */
static uint64_t next_point(dm_event *ev)
{
    pthread_mutex_lock(&ev->m);
    uint64_t t = ++ev->recorded;
    pthread_mutex_unlock(&ev->m);
    return t;
}

static loom_status dm_event_record(void *ctx, uint32_t dev, void *event, char *err,
                                   size_t err_len)
{
    dm_op op = {.kind = DM_RECORD, .event = event, .target = next_point(event)};
    count(C_RECORD);
    return push(ctx, dev, 0, &op, err, err_len);
}

static loom_status dm_event_wait(void *ctx, uint32_t dev, void *event, char *err, size_t err_len)
{
    dm_event *ev = event;
    pthread_mutex_lock(&ev->m);
    dm_op op = {.kind = DM_WAIT, .event = ev, .target = ev->recorded};
    pthread_mutex_unlock(&ev->m);
    count(C_WAIT);
    return push(ctx, dev, 0, &op, err, err_len);
}

static void dm_event_destroy(void *ctx, void *event)
{
    (void)ctx;
    dm_event *ev = event;
    if (!ev)
        return;
    /* A record still queued (its waiters were skipped after a failure) runs first. */
    pthread_mutex_lock(&ev->m);
    while (ev->reached < ev->recorded)
        pthread_cond_wait(&ev->cv, &ev->m);
    pthread_mutex_unlock(&ev->m);
    pthread_mutex_destroy(&ev->m);
    pthread_cond_destroy(&ev->cv);
    free(ev);
}

static loom_status dm_upload_async(void *ctx, uint32_t dev, void *dst, const void *src,
                                   size_t bytes, void *event, loom_done_fn done, void *token,
                                   char *err, size_t err_len)
{
    if (!is_device(dst) || is_device(src)) {
        snprintf(err, err_len, "devmem: upload needs a device destination and a host source");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    dm_op op = {.kind = DM_UPLOAD, .dst = dst, .src = src, .bytes = bytes, .event = event,
                .target = event ? next_point(event) : 0, .done = done, .token = token};
    count(C_UPLOAD_ASYNC);
    return push(ctx, dev, 1, &op, err, err_len);
}

static loom_status dm_download_async(void *ctx, uint32_t dev, void *dst, const void *src,
                                     size_t bytes, void *event, loom_done_fn done, void *token,
                                     char *err, size_t err_len)
{
    if (is_device(dst) || !is_device(src)) {
        snprintf(err, err_len, "devmem: download needs a device source and a host destination");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    dm_op op = {.kind = DM_DOWNLOAD, .dst = dst, .src = src, .bytes = bytes, .event = event,
                .target = event ? next_point(event) : 0, .done = done, .token = token};
    count(C_DOWNLOAD_ASYNC);
    return push(ctx, dev, 1, &op, err, err_len);
}

static int dm_can_copy_peer(void *ctx, uint32_t dev_dst, uint32_t dev_src)
{
    dm_state *s = ctx;
    return dev_dst < s->n_devices && dev_src < s->n_devices && dev_dst != dev_src;
}

static loom_status dm_copy_peer(void *ctx, uint32_t dev_dst, void *dst, uint32_t dev_src,
                                const void *src, size_t bytes, char *err, size_t err_len)
{
    if (!dm_can_copy_peer(ctx, dev_dst, dev_src) || !is_device(dst) || !is_device(src)) {
        snprintf(err, err_len, "devmem: copy_peer needs two device addresses of two devices "
                 "(%u <- %u, %p <- %p)", dev_dst, dev_src, dst, src);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    count(C_PEER);
    memcpy(to_host(dst), to_host(src), bytes);
    return LOOM_OK;
}

static void *dm_alloc_host(void *ctx, uint32_t dev, size_t size)
{
    (void)ctx;
    (void)dev;
    count(C_ALLOC_HOST);
    return aligned_alloc(4096, (size + 4095) / 4096 * 4096);
}

static void dm_free_host(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    (void)ctx;
    (void)dev;
    (void)size;
    if (ptr)
        count(C_FREE_HOST);
    free(ptr);
}

static loom_status dm_memory_info(void *ctx, uint32_t dev, uint64_t *free_bytes,
                                  uint64_t *total_bytes)
{
    dm_state *s = ctx;
    if (dev >= s->n_devices)
        return LOOM_ERR_INVALID_ARGUMENT;
    *free_bytes = s->free_bytes;
    *total_bytes = (uint64_t)1 << 30;
    return LOOM_OK;
}

static void dm_shutdown(void *ctx)
{
    dm_state *s = ctx;
    for (uint32_t d = 0; d < DM_MAX_DEVICES; d++)
        for (int w = 0; w < 2; w++) {
            dm_queue *q = &s->queues[d][w];
            if (!q->started)
                continue;
            pthread_mutex_lock(&q->m);
            q->stop = 1;
            pthread_cond_signal(&q->cv);
            pthread_mutex_unlock(&q->m);
            pthread_join(q->thread, NULL);
            pthread_mutex_destroy(&q->m);
            pthread_cond_destroy(&q->cv);
        }
    free(ctx);
}

/* Start the queues of the ABI 1.0 mode; 0 on failure (the plugin then refuses to load). */
static int start_queues(dm_state *s)
{
    for (uint32_t d = 0; d < s->n_devices; d++)
        for (int w = 0; w < 2; w++) {
            dm_queue *q = &s->queues[d][w];
            q->s = s;
            q->dev = d;
            pthread_mutex_init(&q->m, NULL);
            pthread_cond_init(&q->cv, NULL);
            if (pthread_create(&q->thread, NULL, queue_main, q) != 0) {
                pthread_mutex_destroy(&q->m);
                pthread_cond_destroy(&q->cv);
                return 0;
            }
            q->started = 1;
        }
    return 1;
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host;
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return NULL; /* built for 1.x: any 1.y host has upload/download */
    dm_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    const char *env = getenv("LOOM_TEST_DEVMEM_FAIL");
    if (env && *env)
        s->fail_at = strtol(env, NULL, 10);
    atomic_init(&s->calls, 0);
    s->n_devices = 1;
    const char *nd = getenv("LOOM_TEST_DEVMEM_DEVICES");
    if (nd && *nd) {
        s->async = 1;
        s->n_devices = strtol(nd, NULL, 10) >= 2 ? 2 : 1;
    }
    const char *fb = getenv("LOOM_TEST_DEVMEM_FREE");
    s->free_bytes = fb && *fb ? strtoull(fb, NULL, 10) : (uint64_t)1 << 30;
    if (s->async && !start_queues(s)) {
        dm_shutdown(s);
        return NULL;
    }
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "devmem";
    t->ctx = s;
    t->device_count = dm_device_count;
    t->device_info = dm_device_info;
    t->supports = dm_supports;
    t->prepare = dm_prepare;
    t->execute = dm_execute;
    t->release_kernel = dm_release_kernel;
    t->alloc = dm_alloc;
    t->free = dm_free;
    t->shutdown = dm_shutdown;
    t->estimate = dm_estimate;
    t->upload = dm_upload;
    t->download = dm_download;
    t->claim = dm_claim;
    t->prepare_subgraph = dm_prepare_subgraph;
    const char *cm = getenv("LOOM_TEST_DEVMEM_CLAIMS");
    snprintf(s->claim_mode, sizeof s->claim_mode, "%s", cm ? cm : "");
    const char *cs = getenv("LOOM_TEST_DEVMEM_CLAIM_S");
    s->claim_s = cs && *cs ? strtod(cs, NULL) : -1.0;
    const char *sf = getenv("LOOM_TEST_DEVMEM_SG_FAIL");
    s->sg_fail = sf && !strcmp(sf, "1");
    const char *oc = getenv("LOOM_TEST_DEVMEM_ODD_COPY_BYTES");
    s->odd_copy_bytes = oc && *oc ? (size_t)strtoull(oc, NULL, 10) : 0;
    const char *wu = getenv("LOOM_TEST_DEVMEM_WRONG_UNIT");
    s->wrong_unit = wu && !strcmp(wu, "1");
    const char *sh = getenv("LOOM_TEST_DEVMEM_SHARES_HOST");
    s->shares_host = sh && !strcmp(sh, "1");
    if (s->async) {
        t->submit = dm_submit;
        t->enqueue = dm_enqueue;
        t->event_create = dm_event_create;
        t->event_record = dm_event_record;
        t->event_wait = dm_event_wait;
        t->event_destroy = dm_event_destroy;
        t->upload_async = dm_upload_async;
        t->download_async = dm_download_async;
        t->can_copy_peer = dm_can_copy_peer;
        t->copy_peer = dm_copy_peer;
        t->alloc_host = dm_alloc_host;
        t->free_host = dm_free_host;
        t->memory_info = dm_memory_info;
    }
    return t;
}
