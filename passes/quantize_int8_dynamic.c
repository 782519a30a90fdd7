/*
 * The quantize_int8_dynamic pass (plan precision LOOM_PRECISION_INT8_DYNAMIC): what PyTorch's
 * quantize_dynamic does to Linear layers. Every MatMul, and every Gemm without transA, whose
 * weight is a constant f32 matrix becomes one MatMulInt8Dynamic node: the weight is quantised
 * once to int8 with one symmetric scale per output column (Gemm's alpha and transB folded in),
 * Gemm's C (beta folded in) becomes the node's bias, and the activations are quantised per row
 * when the node runs, with int32 sums and a float result. Embedding tables (Gather along axis 0
 * from a constant f32 [V, D] matrix) become an int8 table with one scale per column, gathered
 * then dequantised. The float weights do not reach the new graph, so a plan keeps only the int8
 * copy (about a quarter of the bytes).
 *
 * Left in float: an inner dimension under QUANT_MIN_K (too little work for the error it costs),
 * non-constant weights, a Gemm with transA or a C that is not a constant row, and the nodes the
 * user lists (pass_ctx.keep_float).
 */
#include "passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Below this inner dimension a node stays float. */
#define QUANT_MIN_K 16

typedef struct quant_state {
    const loom_graph *src;
    const pass_ctx *ctx;
    size_t done, kept_small, kept_listed, tables;
} quant_state;

static int listed(const pass_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_keep_float; i++)
        if (ctx->keep_float[i] && strcmp(ctx->keep_float[i], name) == 0)
            return 1;
    return 0;
}

static float attr_f(const graph_node *n, const char *name, float dflt)
{
    const loom_attr *a = loom_attr_list_get(&n->attrs, name);
    return a ? a->f : dflt;
}

static int64_t attr_i(const graph_node *n, const char *name, int64_t dflt)
{
    const loom_attr *a = loom_attr_list_get(&n->attrs, name);
    return a ? a->i : dflt;
}

/* What a node turns into: the weight W[k][n] = alpha * B(k, n) (B transposed when TRANS_B), and
 * the bias (beta * C broadcast to [N]) or none. Returns 0 when the node stays float. */
typedef struct quant_plan {
    const float *b;
    int64_t k, n;
    int trans_b;
    float alpha, beta;
    const float *c;
    int64_t c_len; /* 0: no bias; 1: one value for every column; N: one per column */
} quant_plan;

static int plan_node(const quant_state *qs, const graph_node *nd, quant_plan *qp)
{
    const loom_graph *g = qs->src;
    memset(qp, 0, sizeof *qp);
    qp->alpha = 1.0f;
    qp->beta = 1.0f;
    if (nd->def->id != LOOM_OP_MATMUL && nd->def->id != LOOM_OP_GEMM)
        return 0;
    if (g->values[nd->inputs[0]].desc.dtype != LOOM_DTYPE_F32)
        return 0;
    const graph_value *w = passes_const_f32(g, nd->inputs[1]);
    if (!w || w->desc.rank != 2)
        return 0;
    if (nd->def->id == LOOM_OP_GEMM) {
        if (attr_i(nd, "transA", 0))
            return 0;
        qp->trans_b = attr_i(nd, "transB", 0) != 0;
        qp->alpha = attr_f(nd, "alpha", 1.0f);
        qp->beta = attr_f(nd, "beta", 1.0f);
    }
    qp->b = w->data;
    qp->k = w->desc.dims[qp->trans_b ? 1 : 0];
    qp->n = w->desc.dims[qp->trans_b ? 0 : 1];
    if (nd->def->id == LOOM_OP_GEMM && nd->n_inputs > 2 && nd->inputs[2] != LOOM_NO_VALUE &&
        qp->beta != 0.0f) {
        const graph_value *c = passes_const_f32(g, nd->inputs[2]);
        if (!c)
            return 0;
        int64_t numel = loom_tensor_desc_numel(&c->desc);
        /* A row (or one value) that broadcasts over every row of the output; a full [M, N]
         * C is not a bias. */
        int row = numel == 1 || (numel == qp->n && c->desc.dims[c->desc.rank - 1] == qp->n);
        if (!row)
            return 0;
        qp->c = c->data;
        qp->c_len = numel;
    }
    return 1;
}

/* An embedding table: Gather (axis 0) from a constant f32 [V, D] table of at least
 * QUANT_MIN_TABLE elements. */
#define QUANT_MIN_TABLE 4096

static const graph_value *embedding_table(const loom_graph *g, const graph_node *nd)
{
    if (nd->def->id != LOOM_OP_GATHER || nd->n_inputs != 2 || attr_i(nd, "axis", 0) != 0)
        return NULL;
    const graph_value *t = passes_const_f32(g, nd->inputs[0]);
    return t && t->desc.rank == 2 && t->desc.dims[1] >= QUANT_MIN_K &&
                   loom_tensor_desc_numel(&t->desc) >= QUANT_MIN_TABLE
               ? t
               : NULL;
}

/* Gather from an int8 copy of the table (one scale per column D), then DequantizeLinear along
 * the last axis: the rows gathered are the rows quantised, and the table shrinks 4x. */
static int rewrite_gather(quant_state *qs, graph_rebuild_ctx *rc, const graph_node *nd,
                          const graph_value *t, loom_value *out)
{
    loom_graph *g = graph_rebuild_dst(rc);
    const int64_t v = t->desc.dims[0], d = t->desc.dims[1];
    const float *w = t->data;
    int8_t *q = malloc((size_t)(v * d) + 1);
    float *scale = malloc((size_t)d * sizeof *scale + 1);
    if (!q || !scale) {
        free(q);
        free(scale);
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory quantising node '%s'", nd->name);
        return -1;
    }
    for (int64_t j = 0; j < d; j++) {
        float m = 0.0f;
        for (int64_t r = 0; r < v; r++)
            m = fabsf(w[r * d + j]) > m ? fabsf(w[r * d + j]) : m;
        scale[j] = m > 0.0f ? m / 127.0f : 1.0f;
    }
    for (int64_t r = 0; r < v; r++)
        for (int64_t j = 0; j < d; j++) {
            float x = nearbyintf(w[r * d + j] / scale[j]);
            x = x > 127.0f ? 127.0f : x < -127.0f ? -127.0f : x;
            q[r * d + j] = (int8_t)(x == x ? x : 0.0f);
        }
    char name[300];
    int64_t td[2] = {v, d}, sd[1] = {d};
    snprintf(name, sizeof name, "%s.table_int8", nd->name);
    loom_value vq = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                  LOOM_DTYPE_I8, 2, td, q);
    snprintf(name, sizeof name, "%s.table_scale", nd->name);
    loom_value vs = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                  LOOM_DTYPE_F32, 1, sd, scale);
    free(q);
    free(scale);
    loom_value gi[2] = {vq, graph_rebuild_map(rc, nd->inputs[1])}, rows;
    snprintf(name, sizeof name, "%s.int8", nd->name);
    if (loom_graph_op(g, "Gather", name, gi, 2, NULL, 0, &rows, 1) != LOOM_OK)
        return -1;
    uint32_t rank = g->values[rows].desc.rank;
    loom_attr axis = loom_attr_int("axis", (int64_t)rank - 1);
    loom_value di[2] = {rows, vs};
    if (loom_graph_op(g, "DequantizeLinear", nd->name, di, 2, &axis, 1, out, 1) != LOOM_OK)
        return -1;
    qs->tables++;
    return 1;
}

/* Quantise the node's weight into the new graph: B_q int8 [K, N], one scale per column. */
static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *nd, loom_value *out)
{
    quant_state *qs = user;
    quant_plan qp;
    const graph_value *table = embedding_table(qs->src, nd);
    if (table && !listed(qs->ctx, nd->name))
        return rewrite_gather(qs, rc, nd, table, out);
    if (!plan_node(qs, nd, &qp))
        return 0;
    if (listed(qs->ctx, nd->name)) {
        qs->kept_listed++;
        return 0;
    }
    if (qp.k < QUANT_MIN_K) {
        qs->kept_small++;
        return 0;
    }
    loom_graph *g = graph_rebuild_dst(rc);
    int64_t k = qp.k, n = qp.n;
    int8_t *bq = malloc((size_t)(k * n) + 1);
    float *scale = malloc((size_t)n * sizeof *scale + 1);
    float *bias = qp.c_len ? malloc((size_t)n * sizeof *bias) : NULL;
    if (!bq || !scale || (qp.c_len && !bias)) {
        free(bq);
        free(scale);
        free(bias);
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory quantising node '%s'", nd->name);
        return -1;
    }
    /* W(k, j) = alpha * B[k][j] (or B[j][k] transposed). */
#define W(kk, jj) (qp.alpha * (qp.trans_b ? qp.b[(jj) * k + (kk)] : qp.b[(kk) * n + (jj)]))
    for (int64_t j = 0; j < n; j++) {
        float m = 0.0f;
        for (int64_t kk = 0; kk < k; kk++) {
            float a = fabsf(W(kk, j));
            if (a > m) /* NaN weights are skipped: they quantise to 0 */
                m = a;
        }
        scale[j] = m > 0.0f ? m / 127.0f : 1.0f;
        const float inv = 1.0f / scale[j];
        for (int64_t kk = 0; kk < k; kk++) {
            float q = nearbyintf(W(kk, j) * inv);
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            bq[kk * n + j] = (int8_t)(q == q ? q : 0.0f);
        }
        if (bias)
            bias[j] = qp.beta * qp.c[qp.c_len == 1 ? 0 : j];
    }
#undef W
    char name[300];
    int64_t bd[2] = {k, n}, sd[1] = {n};
    snprintf(name, sizeof name, "%s.weight_int8", nd->name);
    loom_value vb = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                  LOOM_DTYPE_I8, 2, bd, bq);
    snprintf(name, sizeof name, "%s.weight_scale", nd->name);
    loom_value vs = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                  LOOM_DTYPE_F32, 1, sd, scale);
    loom_value vbias = LOOM_NO_VALUE;
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", nd->name);
        vbias = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                              LOOM_DTYPE_F32, 1, sd, bias);
    }
    free(bq);
    free(scale);
    free(bias);
    loom_value ins[4] = {graph_rebuild_map(rc, nd->inputs[0]), vb, vs, vbias};
    if (loom_graph_op(g, "MatMulInt8Dynamic", nd->name, ins, bias ? 4 : 3, NULL, 0, out, 1) !=
        LOOM_OK)
        return -1;
    qs->done++;
    return 1;
}

loom_status pass_quantize_int8_dynamic(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                       char *summary, size_t summary_len)
{
    *out = NULL;
    if (!ctx->quantize_int8_dynamic) {
        snprintf(summary, summary_len, "not asked (precision int8-dynamic)");
        return LOOM_OK;
    }
    quant_state qs = {.src = in, .ctx = ctx};
    size_t candidates = 0;
    quant_plan qp;
    for (size_t i = 0; i < in->n_nodes; i++)
        candidates += (size_t)plan_node(&qs, &in->nodes[i], &qp) +
                      (embedding_table(in, &in->nodes[i]) != NULL);
    if (!candidates) {
        snprintf(summary, summary_len,
                 "warning: nothing to quantize (no MatMul or Gemm with constant float weights)");
        return LOOM_OK;
    }
    loom_graph *g;
    loom_status st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &qs, &g);
    if (st != LOOM_OK)
        return st;
    if (!qs.done && !qs.tables) {
        loom_graph_destroy(g);
        snprintf(summary, summary_len,
                 "warning: nothing quantized (%zu kept float: %zu with inner dimension < %d, %zu "
                 "listed)", qs.kept_small + qs.kept_listed, qs.kept_small, QUANT_MIN_K,
                 qs.kept_listed);
        return LOOM_OK;
    }
    snprintf(summary, summary_len,
             "%zu MatMul/Gemm to int8 (%zu kept float: %zu with inner dimension < %d, %zu "
             "listed), %zu embedding table%s to int8",
             qs.done, qs.kept_small + qs.kept_listed, qs.kept_small, QUANT_MIN_K, qs.kept_listed,
             qs.tables, qs.tables == 1 ? "" : "s");
    *out = g;
    return LOOM_OK;
}
