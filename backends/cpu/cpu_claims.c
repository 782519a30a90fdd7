/*
 * The CPU backend's subgraph claims (backend ABI 1.0): of the chains backends/common/
 * chain_match.c finds in the graph the host offers (loom_subgraph_desc), those the CPU runs as
 * one kernel, and their compilation:
 *
 *  1. CHAIN_GEMM (Conv / MatMul / Gemm + bias, residual, activation: the chains
 *     passes/fuse_epilogue.c fuses on CPU-only plans, with the same rules): compiled by building
 *     the FusedConv / FusedMatMul / FusedGemm node (graph/ops_fused.c) and preparing it with the
 *     CPU's own kernels: the same code and speed as the pass.
 *  2. CHAIN_ADD_LN (skip-layernorm): the sum, its statistics and the normalisation in one pass
 *     over each row.
 *  3. CHAIN_LN_DECOMP (LayerNorm as PyTorch exports it before opset 17): one LayerNorm kernel
 *     call.
 *  4. CHAIN_SOFTMAX (attention scores: scale and/or mask, then Softmax): one pass per row.
 * A chain is claimed when the CPU runs each of its nodes (and, for 1, the fused node).
 * Estimates are left to the host (negative): it sums its cost of the claimed nodes.
 *
 * The matcher works on the subgraph descriptor alone, so prepare_subgraph runs it again on the
 * claimed subgraph and compiles what it finds.
 */
#include "cpu_claims.h"
#include "cpu_simd.h"
#include "backends/common/chain_match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32

/* ---- the fused Conv/MatMul/Gemm node of a CHAIN_GEMM chain ----------------------------------- */

#define CC_MAX_ATTRS 48

typedef struct cc_fused {
    loom_node_desc node;
    loom_tensor_desc in[4];
    const void *consts[4];
    int32_t map[4]; /* the set's input (value) each input of the node reads; -1 absent */
    loom_attr attrs[CC_MAX_ATTRS];
} cc_fused;

/* The FusedConv/FusedMatMul/FusedGemm node of chain C into F; 0 when it cannot be built. */
static int cc_build_fused(const chain_view *v, const chain_match *c, cc_fused *f)
{
    const loom_node_desc *h = chain_node(v, c->head);
    memset(f, 0, sizeof *f);
    if (h->n_attrs + 7 > CC_MAX_ATTRS)
        return 0;
    f->node = *h;
    f->node.abi_version = LOOM_ABI_VERSION;
    f->node.struct_size = sizeof f->node;
    f->node.input_absmax = NULL;
    for (int j = 0; j < 4; j++)
        f->map[j] = -1;
    uint32_t n_base = h->op == LOOM_OP_MATMUL ? 2 : (h->n_inputs < 3 ? h->n_inputs : 3);
    for (uint32_t j = 0; j < n_base; j++) {
        f->map[j] = chain_in(v, c->head, j);
        if (f->map[j] >= 0)
            f->in[j] = *chain_desc(v, f->map[j]);
    }
    if (c->bias >= 0) {
        f->map[2] = c->bias;
        f->in[2] = *chain_desc(v, c->bias);
        if (h->op != LOOM_OP_GEMM) { /* Conv's B [M], MatMul's bias [N]: the same data, rank 1 */
            int64_t numel = loom_tensor_desc_numel(&f->in[2]);
            memset(f->in[2].dims, 0, sizeof f->in[2].dims);
            f->in[2].rank = 1;
            f->in[2].dims[0] = numel;
        }
    }
    uint32_t n_in = n_base;
    if (f->map[2] >= 0)
        n_in = 3;
    if (c->z >= 0) {
        f->map[3] = c->z;
        f->in[3] = *chain_desc(v, c->z);
        n_in = 4;
    }
    for (uint32_t j = 0; j < n_in; j++) {
        if (f->map[j] < 0) {
            f->in[j].dtype = LOOM_DTYPE_UNDEFINED;
            f->in[j].rank = 0;
        } else {
            f->consts[j] = chain_const(v, f->map[j]);
        }
    }
    f->node.n_inputs = n_in;
    f->node.inputs = f->in;
    f->node.input_constants = f->consts;
    f->node.n_outputs = 1;
    f->node.outputs = &chain_node(v, c->nodes[c->n - 1])->outputs[0];
    f->node.op = h->op == LOOM_OP_CONV     ? LOOM_OP_FUSED_CONV
                 : h->op == LOOM_OP_MATMUL ? LOOM_OP_FUSED_MAT_MUL
                                           : LOOM_OP_FUSED_GEMM;
    f->node.op_name = h->op == LOOM_OP_CONV     ? "FusedConv"
                      : h->op == LOOM_OP_MATMUL ? "FusedMatMul"
                                                : "FusedGemm";
    if (h->n_attrs)
        memcpy(f->attrs, h->attrs, h->n_attrs * sizeof *f->attrs);
    uint32_t na = h->n_attrs;
    f->attrs[na++] = (loom_attr){.name = "activation", .kind = LOOM_ATTR_STRING, .s = c->act};
    f->attrs[na++] = (loom_attr){.name = "activation_alpha", .kind = LOOM_ATTR_FLOAT,
                                 .f = c->alpha};
    f->attrs[na++] = (loom_attr){.name = "activation_beta", .kind = LOOM_ATTR_FLOAT, .f = c->beta};
    f->attrs[na++] = (loom_attr){.name = "fused_ops", .kind = LOOM_ATTR_STRING, .s = c->ops};
    if (c->pool) {
        f->attrs[na++] = (loom_attr){.name = "pool", .kind = LOOM_ATTR_STRING, .s = "MaxPool"};
        f->attrs[na++] = (loom_attr){.name = "pool_kernel", .kind = LOOM_ATTR_INTS,
                                     .ints = c->pool_k, .count = 2};
        f->attrs[na++] = (loom_attr){.name = "pool_strides", .kind = LOOM_ATTR_INTS,
                                     .ints = c->pool_s, .count = 2};
    }
    f->node.n_attrs = na;
    f->node.attrs = f->attrs;
    return 1;
}

/* ---- matching over a graph ------------------------------------------------------------------- */

/* chain_runs_fn for the CPU (CTX: the kernel table): whether the CPU runs every node of C, and
 * for CHAIN_GEMM the fused node. */
static int cc_cpu_runs(void *ctx, const chain_view *v, const chain_match *c)
{
    const cpu_op_entry *ops = ctx;
    char why[256];
    for (uint32_t i = 0; i < c->n; i++) {
        const loom_node_desc *n = chain_node(v, c->nodes[i]);
        if ((unsigned)n->op >= CPU_OP_TABLE_SIZE || !ops[n->op].prepare ||
            (ops[n->op].supports && !ops[n->op].supports(n, why, sizeof why)))
            return 0;
    }
    if (c->kind == CHAIN_GEMM) {
        cc_fused f;
        if (!cc_build_fused(v, c, &f))
            return 0;
        const cpu_op_entry *e = &ops[f.node.op];
        return e->prepare && (!e->supports || e->supports(&f.node, why, sizeof why));
    }
    return 1;
}

uint32_t cpu_claims_find(const cpu_op_entry *ops, const loom_subgraph_desc *graph,
                         uint32_t *nodes, uint32_t max_nodes, loom_claim *claims,
                         uint32_t max_claims)
{
    if (!ops)
        return 0;
    return chain_claims_find(graph, cc_cpu_runs, (void *)ops, nodes, max_nodes, claims,
                             max_claims);
}

/* ---- compiled chains ---------------------------------------------------------------------- */

/* CHAIN_GEMM: the fused node's kernel, its inputs picked from the set's. */
typedef struct cc_gemm_params {
    cpu_kernel inner;
    int32_t map[4];
    uint32_t n_in;
} cc_gemm_params;

static loom_status cc_gemm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    const cc_gemm_params *p = k->params;
    const void *ins[4] = {NULL, NULL, NULL, NULL};
    for (uint32_t j = 0; j < p->n_in; j++)
        ins[j] = p->map[j] >= 0 ? args->inputs[p->map[j]] : NULL;
    loom_exec_args a = {sizeof a, ins, args->outputs, args->scratch};
    return p->inner.run(&p->inner, &a, pool, err, err_len);
}

static void cc_gemm_free(void *params)
{
    cc_gemm_params *p = params;
    if (!p)
        return;
    cpu_kernel_release(&p->inner);
    free(p);
}

/* CHAIN_ADD_LN, CHAIN_LN_DECOMP: Y = LayerNorm(X [+ R]) over rows of N, Scale and B per element. */
typedef struct cc_ln_params {
    int64_t rows, n;
    float eps;
    int32_t x, r, scale, bias; /* the set's inputs; r, scale, bias -1 when absent */
    int r_row;                 /* R is one row of N repeated (else of X's shape) */
} cc_ln_params;

typedef struct cc_ln_job {
    const cc_ln_params *p;
    const float *x, *r, *g, *b;
    float *y;
} cc_ln_job;

CPU_CLONES
static void cc_add_row(float *restrict y, const float *restrict a, const float *restrict b,
                       size_t n)
{
    CPU_LOOP(n, y[i] = a[i] + b[i];);
}

/* Y = (X - MEAN) * INV * G + B (G, B may be NULL). Two versions, in place and not, so that
 * each loop has no aliasing for the vectoriser to fear. */
#define CC_LN_APPLY(X)                                                                            \
    do {                                                                                          \
        if (g && b)                                                                               \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv * g[i] + b[i];);                               \
        else if (g)                                                                               \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv * g[i];);                                      \
        else if (b)                                                                               \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv + b[i];);                                      \
        else                                                                                      \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv;);                                             \
    } while (0)

CPU_CLONES
static void cc_ln_apply(float *restrict y, const float *restrict x, size_t n,
                        const float *restrict g, const float *restrict b, float mean, float inv)
{
    CC_LN_APPLY(x);
}

CPU_CLONES
static void cc_ln_apply_inplace(float *restrict y, size_t n, const float *restrict g,
                                const float *restrict b, float mean, float inv)
{
    CC_LN_APPLY(y);
}

static void cc_ln_rows(void *arg, size_t begin, size_t end)
{
    const cc_ln_job *j = arg;
    const size_t n = (size_t)j->p->n;
    for (size_t row = begin; row < end; row++) {
        float *y = j->y + row * n;
        const float *x = j->x + row * n;
        if (j->r) { /* the sum goes to Y, and is normalised there while still in cache */
            cc_add_row(y, x, j->p->r_row ? j->r : j->r + row * n, n);
            x = y;
        }
        float mean, inv;
        cpu_layernorm_stats(x, n, j->p->eps, &mean, &inv);
        if (x == y)
            cc_ln_apply_inplace(y, n, j->g, j->b, mean, inv);
        else
            cc_ln_apply(y, x, n, j->g, j->b, mean, inv);
    }
}

static loom_status cc_ln_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const cc_ln_params *p = k->params;
    if (p->rows == 0 || p->n == 0)
        return LOOM_OK;
    cc_ln_job j = {p, args->inputs[p->x], p->r >= 0 ? args->inputs[p->r] : NULL,
                   p->scale >= 0 ? args->inputs[p->scale] : NULL,
                   p->bias >= 0 ? args->inputs[p->bias] : NULL, args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain_items(p->n * 4, CPU_GRAIN), cc_ln_rows, &j);
    return LOOM_OK;
}

/* CHAIN_SOFTMAX: Y = Softmax(X * c (or / c) + mask) over rows of LEN. */
typedef struct cc_sm_params {
    int64_t rows, len;
    int32_t x, mask;
    int has_scale, div;
    float c;
    uint32_t orank;                    /* the outer (row) dims of Y */
    int64_t odims[LOOM_MAX_RANK];
    int64_t mstride[LOOM_MAX_RANK];    /* the mask's element strides over them (0: repeat) */
    int64_t mlast;                     /* its stride along the row: 1, or 0 when broadcast */
} cc_sm_params;

typedef struct cc_sm_job {
    const cc_sm_params *p;
    const float *x, *mask;
    float *y;
} cc_sm_job;

CPU_CLONES
static void cc_sm_prologue(float *restrict y, const float *restrict x, const float *restrict m,
                           int64_t mstep, size_t n, int has_scale, int div, float c)
{
    if (!m) {
        if (div)
            CPU_LOOP(n, y[i] = x[i] / c;);
        else
            CPU_LOOP(n, y[i] = x[i] * c;);
    } else if (mstep == 0) {
        const float mv = m[0];
        if (!has_scale)
            CPU_LOOP(n, y[i] = x[i] + mv;);
        else if (div)
            CPU_LOOP(n, y[i] = x[i] / c + mv;);
        else
            CPU_LOOP(n, y[i] = x[i] * c + mv;);
    } else {
        if (!has_scale)
            CPU_LOOP(n, y[i] = x[i] + m[i];);
        else if (div)
            CPU_LOOP(n, y[i] = x[i] / c + m[i];);
        else
            CPU_LOOP(n, y[i] = x[i] * c + m[i];);
    }
}

CPU_CLONES
static void cc_scale_row(float *y, size_t n, float s)
{
    CPU_LOOP(n, y[i] *= s;);
}

static void cc_sm_rows(void *arg, size_t begin, size_t end)
{
    const cc_sm_job *j = arg;
    const cc_sm_params *p = j->p;
    const size_t len = (size_t)p->len;
    for (size_t row = begin; row < end; row++) {
        const float *m = NULL;
        if (j->mask) {
            int64_t off = 0, rem = (int64_t)row;
            for (uint32_t d = p->orank; d-- > 0;) {
                off += (rem % p->odims[d]) * p->mstride[d];
                rem /= p->odims[d];
            }
            m = j->mask + off;
        }
        float *y = j->y + row * len;
        cc_sm_prologue(y, j->x + row * len, m, p->mlast, len, p->has_scale, p->div, p->c);
        const float mx = cpu_max_f32(y, len);
        const double s = cpu_exp_sum_f32(y, y, len, mx);
        cc_scale_row(y, len, (float)(1.0 / s));
    }
}

static loom_status cc_sm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const cc_sm_params *p = k->params;
    if (p->rows == 0 || p->len == 0)
        return LOOM_OK;
    cc_sm_job j = {p, args->inputs[p->x], p->mask >= 0 ? args->inputs[p->mask] : NULL,
                   args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain_items(p->len * 2, 8192), cc_sm_rows, &j);
    return LOOM_OK;
}

/* ---- prepare_subgraph ------------------------------------------------------------------------ */

static loom_status cc_prepare_gemm(const cpu_op_entry *ops, const chain_view *v,
                                   const chain_match *c, cpu_kernel *k, char *err,
                                   size_t err_len)
{
    cc_fused f;
    if (!cc_build_fused(v, c, &f))
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "too many attributes on the head");
    cc_gemm_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(p->map, f.map, sizeof p->map);
    p->n_in = f.node.n_inputs;
    cpu_kernel *in = &p->inner;
    in->op = f.node.op;
    in->n_in = f.node.n_inputs;
    in->n_out = 1;
    in->in = calloc(in->n_in + 1, sizeof *in->in);
    in->out = calloc(2, sizeof *in->out);
    loom_status st = LOOM_OK;
    char why[256] = "";
    const cpu_op_entry *e = &ops[f.node.op];
    if (!in->in || !in->out) {
        st = cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    } else if (!e->prepare || (e->supports && !e->supports(&f.node, why, sizeof why))) {
        st = cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "%s: %s", f.node.op_name, why);
    } else {
        memcpy(in->in, f.in, in->n_in * sizeof *in->in);
        in->out[0] = f.node.outputs[0];
        st = e->prepare(&f.node, in, err, err_len);
        if (st == LOOM_OK && !in->run)
            st = cpu_fail(err, err_len, LOOM_ERR_INTERNAL, "%s: prepare set no kernel",
                          f.node.op_name);
    }
    if (st != LOOM_OK) {
        cc_gemm_free(p);
        return st;
    }
    k->params = p;
    k->free_params = cc_gemm_free;
    k->scratch_bytes = in->scratch_bytes;
    k->run = cc_gemm_run;
    return LOOM_OK;
}

static loom_status cc_prepare_ln(const chain_view *v, const chain_match *c, cpu_kernel *k,
                                 char *err, size_t err_len)
{
    cc_ln_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    const loom_tensor_desc *y = chain_desc(v, c->out);
    chain_rows(v, c, &p->rows, &p->n);
    p->eps = c->eps;
    p->x = c->x;
    p->r = c->r;
    p->scale = c->scale;
    p->bias = c->lbias;
    p->r_row = c->r >= 0 &&
               loom_tensor_desc_numel(chain_desc(v, c->r)) != loom_tensor_desc_numel(y);
    k->params = p;
    k->run = cc_ln_run;
    return LOOM_OK;
}

static loom_status cc_prepare_softmax(const chain_view *v, const chain_match *c,
                                      cpu_kernel *k, char *err, size_t err_len)
{
    cc_sm_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    const loom_tensor_desc *y = chain_desc(v, c->out);
    chain_rows(v, c, &p->rows, &p->len);
    p->x = c->x;
    p->mask = c->mask;
    p->has_scale = c->has_scale;
    p->div = c->div;
    p->c = c->c;
    p->orank = y->rank - 1;
    for (uint32_t d = 0; d < p->orank; d++)
        p->odims[d] = y->dims[d];
    chain_mask_strides(v, c, p->mstride, &p->mlast);
    k->params = p;
    k->run = cc_sm_run;
    return LOOM_OK;
}

loom_status cpu_claims_prepare(const cpu_op_entry *ops, const loom_subgraph_desc *sg,
                               cpu_kernel **kernel, char *err, size_t err_len)
{
    *kernel = NULL;
    const char *name = sg && sg->name ? sg->name : "subgraph";
    chain_view v;
    if (!ops || !sg || chain_view_init(&v, sg) != 0)
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "cpu: %s: malformed subgraph (a value id out of range or used before "
                        "it is produced)", name);
    chain_match c;
    char why[256] = "";
    loom_status st = chain_match_whole(&v, cc_cpu_runs, (void *)ops, "the CPU", &c, why,
                                       sizeof why);
    if (st != LOOM_OK)
        cpu_fail(err, err_len, st, "cpu: %s: %s", name, why);
    cpu_kernel *k = NULL;
    if (st == LOOM_OK && !(k = calloc(1, sizeof *k)))
        st = cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "cpu: %s: out of memory", name);
    if (st == LOOM_OK) {
        k->op = chain_node(&v, c.nodes[c.n - 1])->op;
        k->n_in = sg->n_inputs;
        k->n_out = 1;
        k->in = calloc(sg->n_inputs + 1, sizeof *k->in);
        k->out = calloc(2, sizeof *k->out);
        if (!k->in || !k->out) {
            st = cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "cpu: %s: out of memory", name);
        } else {
            if (sg->n_inputs)
                memcpy(k->in, sg->inputs, sg->n_inputs * sizeof *k->in);
            k->out[0] = sg->outputs[0];
            char msg[256] = "";
            switch (c.kind) {
            case CHAIN_GEMM:
                st = cc_prepare_gemm(ops, &v, &c, k, msg, sizeof msg);
                break;
            case CHAIN_ADD_LN:
            case CHAIN_LN_DECOMP:
                st = cc_prepare_ln(&v, &c, k, msg, sizeof msg);
                break;
            case CHAIN_SOFTMAX:
                st = cc_prepare_softmax(&v, &c, k, msg, sizeof msg);
                break;
            }
            if (st != LOOM_OK)
                cpu_fail(err, err_len, st, "cpu: %s (%s): %s", name, c.ops, msg);
        }
    }
    chain_view_free(&v);
    if (st != LOOM_OK) {
        if (k) {
            free(k->in);
            free(k->out);
            free(k);
        }
        return st;
    }
    *kernel = k;
    return LOOM_OK;
}
