/*
 * Subgraph claims of the CUDA backend (backend ABI 1.0) and their replay as CUDA graphs. claim()
 * takes every maximal chain of two or more nodes the device supports in which each value but
 * the last is read only by the next node (and is not an output of the offered graph): a chain
 * is connected and convex by construction. prepare_subgraph() compiles each node as prepare()
 * would and lays the chain's internal values out in the scratch area. The first run with a set
 * of addresses captures the launches into a CUDA graph (stream capture on the compute stream,
 * cuBLAS included: its workspace is ours, so the capture allocates nothing) and later runs with
 * the same addresses replay it with one cudaGraphLaunch; a plan's arena addresses do not change
 * between runs, so a chain costs one launch instead of one per node. Should capture fail, the
 * chain says so once and launches node by node from then on. The option graphs=0 claims nothing.
 */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest chain claimed: a bound on the work one graph holds, and on claim()'s arrays. */
#define MAX_CHAIN 64
/* Instantiated graphs kept per chain, one per set of addresses (concurrent contexts of a plan
 * each have their own arena). */
#define GRAPH_CACHE 4
/* Alignment of internal values in the scratch area. */
#define VALUE_ALIGN 256

typedef struct chain_step {
    cuda_node_kernel *k;
    uint32_t n_in;
    int32_t *in_val; /* value id per input, -1 absent */
    uint32_t out_val;
} chain_step;

enum { AT_INPUT = 1, AT_OUTPUT, AT_SCRATCH };

typedef struct graph_entry {
    const void **key; /* inputs, outputs, scratch: the addresses the graph was captured with */
    cudaGraphExec_t exec;
    uint64_t used;    /* last use, for eviction */
} graph_entry;

typedef struct cuda_chain_kernel {
    cuda_kernel_kind kind; /* CUDA_KERNEL_CHAIN */
    char name[96];
    uint32_t n_steps;
    chain_step *steps;
    uint32_t n_inputs, n_outputs, n_values;
    uint8_t *where;  /* per value: AT_* */
    size_t *index;   /* per value: input index, output index, or scratch offset */
    int use_graph;
    /* Touched only under the device lock (every launch holds it). */
    int graph_broken;
    uint64_t clock;
    graph_entry cache[GRAPH_CACHE];
} cuda_chain_kernel;

/* ---- claim ---- */

uint32_t cuda_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *g, uint32_t *nodes,
                    uint32_t max_nodes, loom_claim *claims, uint32_t max_claims)
{
    cuda_state *s = ctx;
    if (!s->graphs || dev >= (uint32_t)s->n_devices || g->n_nodes < 2)
        return 0;
    uint32_t n_values = g->n_inputs;
    for (uint32_t k = 0; k < g->n_nodes; k++)
        n_values += g->nodes[k].n_outputs;
    uint32_t *firsts = malloc(g->n_nodes * sizeof *firsts);
    uint32_t *readers = calloc(n_values, sizeof *readers);
    int32_t *reader = malloc(n_values * sizeof *reader);
    uint8_t *is_out = calloc(n_values, 1), *ok = calloc(g->n_nodes, 1),
            *taken = calloc(g->n_nodes, 1);
    uint32_t n = 0, used = 0;
    if (!firsts || !readers || !reader || !is_out || !ok || !taken)
        goto done;
    for (uint32_t k = 0, v = g->n_inputs; k < g->n_nodes; k++) {
        firsts[k] = v;
        v += g->nodes[k].n_outputs;
    }
    for (uint32_t k = 0; k < g->n_nodes; k++)
        for (uint32_t j = 0; j < g->nodes[k].n_inputs; j++) {
            int32_t v = g->node_inputs[k][j];
            if (v >= 0 && (uint32_t)v < n_values) {
                readers[v]++;
                reader[v] = (int32_t)k;
            }
        }
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->output_values[i] < n_values)
            is_out[g->output_values[i]] = 1;
    char why[256];
    for (uint32_t k = 0; k < g->n_nodes; k++)
        ok[k] = (uint8_t)cuda_supports(ctx, dev, &g->nodes[k], why, sizeof why);
    uint32_t chain[MAX_CHAIN];
    for (uint32_t h = 0; h < g->n_nodes && n < max_claims; h++) {
        if (!ok[h] || taken[h])
            continue;
        uint32_t len = 0, cur = h;
        chain[len++] = h;
        while (len < MAX_CHAIN && g->nodes[cur].n_outputs == 1) {
            uint32_t v = firsts[cur];
            if (is_out[v] || readers[v] != 1)
                break;
            uint32_t r = (uint32_t)reader[v];
            if (r <= cur || !ok[r] || taken[r])
                break;
            chain[len++] = r;
            cur = r;
        }
        if (len < 2 || used + len > max_nodes)
            continue;
        loom_claim *c = &claims[n++];
        memset(c, 0, sizeof *c);
        c->first_node = used;
        c->node_count = len;
        c->estimate_s = -1.0; /* the host sums its figures for the nodes */
        size_t at = 0;
        for (uint32_t i = 0; i < len; i++) {
            nodes[used++] = chain[i];
            taken[chain[i]] = 1;
            const char *op = g->nodes[chain[i]].op_name ? g->nodes[chain[i]].op_name : "?";
            int w = snprintf(c->label + at, sizeof c->label - at, "%s%s", i ? "+" : "", op);
            if (w < 0 || (size_t)w >= sizeof c->label - at) {
                c->label[0] = '\0'; /* too long to name: the host makes a label */
                break;
            }
            at += (size_t)w;
        }
    }
done:
    free(firsts);
    free(readers);
    free(reader);
    free(is_out);
    free(ok);
    free(taken);
    return n;
}

/* ---- prepare_subgraph ---- */

void cuda_chain_release(void *kernel)
{
    cuda_chain_kernel *c = kernel;
    if (!c)
        return;
    for (int i = 0; i < GRAPH_CACHE; i++) {
        if (c->cache[i].exec)
            cudaGraphExecDestroy(c->cache[i].exec);
        free(c->cache[i].key);
    }
    for (uint32_t i = 0; i < c->n_steps; i++) {
        cuda_node_release(c->steps[i].k);
        free(c->steps[i].in_val);
    }
    free(c->steps);
    free(c->where);
    free(c->index);
    free(c);
}

static loom_status refuse(cuda_chain_kernel *c, char *err, size_t err_len, const char *name,
                          const char *what)
{
    snprintf(err, err_len, "cuda: %s: %s", name ? name : "subgraph", what);
    cuda_chain_release(c);
    return LOOM_ERR_UNSUPPORTED;
}

loom_status cuda_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                  void **kernel, size_t *scratch_bytes, char *err,
                                  size_t err_len)
{
    cuda_state *s = ctx;
    *kernel = NULL;
    *scratch_bytes = 0;
    if (dev >= (uint32_t)s->n_devices || sg->n_nodes < 1) {
        snprintf(err, err_len, "cuda: no device %u or an empty subgraph", dev);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    cuda_chain_kernel *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_len, "cuda: out of memory");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    c->kind = CUDA_KERNEL_CHAIN;
    snprintf(c->name, sizeof c->name, "%s", sg->name ? sg->name : "subgraph");
    c->use_graph = s->graphs;
    c->n_inputs = sg->n_inputs;
    c->n_outputs = sg->n_outputs;
    c->n_values = sg->n_inputs;
    for (uint32_t k = 0; k < sg->n_nodes; k++)
        c->n_values += sg->nodes[k].n_outputs;
    c->steps = calloc(sg->n_nodes, sizeof *c->steps);
    c->where = calloc(c->n_values, 1);
    c->index = calloc(c->n_values, sizeof *c->index);
    if (!c->steps || !c->where || !c->index)
        return refuse(c, err, err_len, sg->name, "out of memory");
    for (uint32_t v = 0; v < sg->n_inputs; v++) {
        c->where[v] = AT_INPUT;
        c->index[v] = v;
    }
    for (uint32_t i = 0; i < sg->n_outputs; i++) {
        uint32_t v = sg->output_values[i];
        if (v < sg->n_inputs || v >= c->n_values)
            return refuse(c, err, err_len, sg->name, "an output is not made by a node of it");
        c->where[v] = AT_OUTPUT;
        c->index[v] = i;
    }
    const void *const *sg_devc =
        LOOM_SUBGRAPH_DESC_HAS_DEVICE_CONSTANTS(sg) ? sg->input_device_constants : NULL;
    size_t scratch = 0;
    for (uint32_t k = 0, v0 = sg->n_inputs; k < sg->n_nodes; v0 += sg->nodes[k].n_outputs, k++) {
        const loom_node_desc *node = &sg->nodes[k];
        chain_step *st = &c->steps[k];
        c->n_steps = k + 1;
        st->n_in = node->n_inputs;
        st->in_val = malloc((node->n_inputs ? node->n_inputs : 1) * sizeof *st->in_val);
        const void **consts = calloc(node->n_inputs ? node->n_inputs : 1, sizeof *consts);
        const void **devc = calloc(node->n_inputs ? node->n_inputs : 1, sizeof *devc);
        if (!st->in_val || !consts || !devc) {
            free(consts);
            free(devc);
            return refuse(c, err, err_len, sg->name, "out of memory");
        }
        /* The set's constants, as the node's: its own descriptor need not carry them. */
        for (uint32_t j = 0; j < node->n_inputs; j++) {
            int32_t v = sg->node_inputs[k][j];
            st->in_val[j] = v;
            if (v >= 0 && (uint32_t)v < sg->n_inputs) {
                consts[j] = sg->input_constants ? sg->input_constants[v] : NULL;
                devc[j] = sg_devc ? sg_devc[v] : NULL;
            }
        }
        loom_node_desc nd = *node;
        nd.input_constants = consts;
        loom_status ps = cuda_node_prepare(s, dev, &nd, devc, &st->k, err, err_len);
        free(consts);
        free(devc);
        if (ps != LOOM_OK) {
            cuda_chain_release(c);
            return ps;
        }
        /* Output 0 only (the kernels make one); the value lives in the outputs or in scratch. */
        st->out_val = v0;
        if (c->where[v0] != AT_OUTPUT) {
            c->where[v0] = AT_SCRATCH;
            c->index[v0] = scratch;
            size_t bytes = cuda_node_output_bytes(st->k);
            scratch += (bytes + VALUE_ALIGN - 1) / VALUE_ALIGN * VALUE_ALIGN;
        }
    }
    /* Every value a step reads must exist by then (inputs, or an earlier step's output 0). */
    for (uint32_t k = 0; k < c->n_steps; k++)
        for (uint32_t j = 0; j < c->steps[k].n_in; j++) {
            int32_t v = c->steps[k].in_val[j];
            if (v >= 0 && ((uint32_t)v >= c->n_values || !c->where[v]))
                return refuse(c, err, err_len, sg->name,
                              "a node reads a value this backend does not compute (a second "
                              "output)");
        }
    for (uint32_t i = 0; i < sg->n_outputs; i++) {
        uint32_t v = sg->output_values[i];
        int made = 0;
        for (uint32_t k = 0; k < c->n_steps; k++)
            made |= c->steps[k].out_val == v;
        if (!made)
            return refuse(c, err, err_len, sg->name,
                          "an output is a value this backend does not compute");
    }
    *kernel = c;
    *scratch_bytes = scratch;
    return LOOM_OK;
}

/* ---- launch ---- */

static const void *value_ptr(const cuda_chain_kernel *c, const loom_exec_args *args, int32_t v)
{
    if (v < 0)
        return NULL;
    switch (c->where[v]) {
    case AT_INPUT:
        return args->inputs[c->index[v]];
    case AT_OUTPUT:
        return args->outputs[c->index[v]];
    default:
        return (const char *)args->scratch + c->index[v];
    }
}

static loom_status launch_steps(cuda_state *s, cuda_dev *d, const cuda_chain_kernel *c,
                                const loom_exec_args *args, char *err, size_t err_len)
{
    for (uint32_t k = 0; k < c->n_steps; k++) {
        const chain_step *st = &c->steps[k];
        const void *in[8] = {NULL}; /* the supported ops read at most 3 */
        for (uint32_t j = 0; j < st->n_in && j < 8; j++)
            in[j] = value_ptr(c, args, st->in_val[j]);
        void *out[1] = {(void *)value_ptr(c, args, (int32_t)st->out_val)};
        loom_status r = cuda_node_launch(s, d, st->k, in, out, err, err_len);
        if (r != LOOM_OK)
            return r;
    }
    return LOOM_OK;
}

/* The addresses a run uses, in KEY (n_inputs + n_outputs + 1 entries). */
static void make_key(const cuda_chain_kernel *c, const loom_exec_args *args, const void **key)
{
    uint32_t i = 0;
    for (uint32_t j = 0; j < c->n_inputs; j++)
        key[i++] = args->inputs[j];
    for (uint32_t j = 0; j < c->n_outputs; j++)
        key[i++] = args->outputs[j];
    key[i] = args->scratch;
}

/* Captures the chain's launches with ARGS' addresses into a new executable graph. Returns 1
 * with *EXEC, or 0 when capture or instantiation failed (nothing was run: the caller launches
 * the steps itself), with the reason in WHY; a failing launch inside the capture is returned
 * as *ST with its message in ERR. */
static int capture(cuda_state *s, cuda_dev *d, const cuda_chain_kernel *c,
                   const loom_exec_args *args, cudaGraphExec_t *exec, loom_status *st, char *err,
                   size_t err_len, char *why, size_t why_len)
{
    cudaStream_t stream = d->stream[CUDA_Q_COMPUTE];
    *st = LOOM_OK;
    /* Thread-local mode: transfer threads may still call cudaMemcpy and friends meanwhile. */
    cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cuda_fail(e, "cudaStreamBeginCapture", why, why_len);
        return 0;
    }
    loom_status r = launch_steps(s, d, c, args, err, err_len);
    cudaGraph_t graph = NULL;
    e = cudaStreamEndCapture(stream, &graph);
    if (r != LOOM_OK) {
        if (graph)
            cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        snprintf(why, why_len, "a launch failed while capturing: %s", err);
        return 0;
    }
    if (e != cudaSuccess || !graph) {
        cuda_fail(e, "cudaStreamEndCapture", why, why_len);
        (void)cudaGetLastError();
        return 0;
    }
    e = cudaGraphInstantiateWithFlags(exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        cuda_fail(e, "cudaGraphInstantiateWithFlags", why, why_len);
        (void)cudaGetLastError();
        return 0;
    }
    return 1;
}

static loom_status launch_chain(cuda_state *s, cuda_dev *d, cuda_chain_kernel *c,
                                const loom_exec_args *args, char *err, size_t err_len)
{
    if (!c->use_graph || c->graph_broken)
        return launch_steps(s, d, c, args, err, err_len);
    const uint32_t nk = c->n_inputs + c->n_outputs + 1;
    const void **key = malloc(nk * sizeof *key);
    if (!key)
        return launch_steps(s, d, c, args, err, err_len);
    make_key(c, args, key);
    graph_entry *hit = NULL, *victim = &c->cache[0];
    for (int i = 0; i < GRAPH_CACHE; i++) {
        graph_entry *g = &c->cache[i];
        if (g->exec && !memcmp(g->key, key, nk * sizeof *key)) {
            hit = g;
            break;
        }
        if (!g->exec || (victim->exec && g->used < victim->used))
            victim = g;
    }
    if (!hit) {
        cudaGraphExec_t exec;
        loom_status st;
        char why[256];
        if (!capture(s, d, c, args, &exec, &st, err, err_len, why, sizeof why)) {
            free(key);
            c->graph_broken = 1;
            cuda_log(s, LOOM_LOG_WARNING, "cuda: %s: no CUDA graph (%s); launching its nodes one "
                     "by one from now on", c->name, why);
            return launch_steps(s, d, c, args, err, err_len);
        }
        if (victim->exec) {
            /* It may still be running: let the stream drain before destroying it. */
            (void)cudaStreamSynchronize(d->stream[CUDA_Q_COMPUTE]);
            cudaGraphExecDestroy(victim->exec);
            free(victim->key);
        }
        victim->exec = exec;
        victim->key = key;
        hit = victim;
    } else {
        free(key);
    }
    hit->used = ++c->clock;
    cudaError_t e = cudaGraphLaunch(hit->exec, d->stream[CUDA_Q_COMPUTE]);
    return e == cudaSuccess ? LOOM_OK : cuda_fail(e, "cudaGraphLaunch", err, err_len);
}

loom_status cuda_kernel_launch(cuda_state *s, uint32_t dev, void *kernel,
                               const loom_exec_args *args, char *err, size_t err_len)
{
    cuda_dev *d = &s->devs[dev];
    if (!kernel) {
        snprintf(err, err_len, "cuda: no kernel");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    if (*(const cuda_kernel_kind *)kernel == CUDA_KERNEL_CHAIN)
        return launch_chain(s, d, kernel, args, err, err_len);
    return cuda_node_launch(s, d, kernel, args->inputs, args->outputs, err, err_len);
}
