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
 * On plans the CPU may run (pass_ctx.int8_epilogue) what follows a quantised node goes into it
 * too: a bias Add of a constant row [N] (when the node has no bias of its own) becomes its bias
 * input, and then a GELU, either a Gelu node or the Erf form exporters write (x / sqrt(2) (or
 * x * 1/sqrt(2)), Erf, + 1, times x, times 0.5, the 0.5 applied to x first or last), becomes its
 * activation attribute (the CPU kernel applies it to the block it has just stored). Every value
 * inside such a chain must have no other reader and not be a graph output.
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

/* A quantised node with what follows it absorbed: made at LAST, the chain's last node. */
typedef struct quant_chain {
    uint32_t head, last;
    loom_value bias; /* a constant row [N] added to the output, or LOOM_NO_VALUE */
    const char *act; /* "", "Gelu" or "GeluTanh" */
} quant_chain;

typedef struct quant_state {
    const loom_graph *src;
    const pass_ctx *ctx;
    size_t done, kept_small, kept_listed, tables;
    int32_t *role;        /* per node: -1, or the chain it belongs to (NULL: no chains) */
    quant_chain *chains;
    size_t n_chains, fused_bias, fused_act;
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

/* ---- what follows a quantised node (pass_ctx.int8_epilogue) ---------------------------------- */

static int same_desc(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    return a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->dims, b->dims, a->rank * sizeof a->dims[0]) == 0;
}

/* Whether V is a constant f32 scalar (one element) within 1e-5 relative of WANT. */
static int scalar_near(const loom_graph *g, loom_value v, double want)
{
    const graph_value *c = v == LOOM_NO_VALUE ? NULL : passes_const_f32(g, v);
    if (!c || loom_tensor_desc_numel(&c->desc) != 1)
        return 0;
    const double x = *(const float *)c->data;
    return fabs(x - want) <= 1e-5 * fabs(want);
}

/* The only reader of V in G when it is free (ROLE NULL, or -1 there), else -1. */
static int32_t free_reader(const loom_graph *g, const int32_t *role, const int32_t *reader,
                           loom_value v)
{
    int32_t r = passes_only_reader(g, reader, v);
    return r >= 0 && (!role || role[r] < 0) ? r : -1;
}

/* GELU's Erf form on X (two readers: the scale and the product), as the nodes it is made of
 * (NODES[5], the last one's output is GELU(X)). Returns 0 when X is not followed by it. */
static int erf_gelu(const loom_graph *g, const int32_t *role, const int32_t *reader, loom_value x,
                    int32_t nodes[5])
{
    if (g->values[x].output_index >= 0 || g->values[x].n_consumers != 2)
        return 0;
    int32_t rd[2] = {-1, -1};
    int nr = 0;
    for (size_t i = 0; i < g->n_nodes && nr < 2; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] == x) {
                rd[nr++] = (int32_t)i;
                break;
            }
    if (nr != 2)
        return 0;
    for (int t = 0; t < 2; t++) {
        const int32_t d = rd[t], m = rd[1 - t];
        const graph_node *dn = &g->nodes[d], *mn = &g->nodes[m];
        if (role && (role[d] >= 0 || role[m] >= 0))
            continue;
        /* x / sqrt(2), or x * (1 / sqrt(2)) */
        int scaled = (dn->def->id == LOOM_OP_DIV && dn->n_inputs == 2 && dn->inputs[0] == x &&
                      scalar_near(g, dn->inputs[1], 1.4142135623730951)) ||
                     scalar_near(g, passes_other_input(dn, LOOM_OP_MUL, x), 0.7071067811865476);
        if (!scaled || dn->n_outputs != 1)
            continue;
        const int32_t e = free_reader(g, role, reader, dn->outputs[0]);
        if (e < 0 || g->nodes[e].def->id != LOOM_OP_ERF)
            continue;
        const loom_value ev = g->nodes[e].outputs[0];
        const int32_t a = free_reader(g, role, reader, ev);
        if (a < 0 || !scalar_near(g, passes_other_input(&g->nodes[a], LOOM_OP_ADD, ev), 1.0))
            continue;
        const loom_value av = g->nodes[a].outputs[0];
        const int32_t ar = free_reader(g, role, reader, av);
        const int32_t h = free_reader(g, role, reader, mn->n_outputs == 1 ? mn->outputs[0] : x);
        if (h < 0 || mn->n_outputs != 1)
            continue;
        const graph_node *hn = &g->nodes[h];
        if (passes_other_input(mn, LOOM_OP_MUL, x) == av && ar == m) {
            /* (x * (erf + 1)) * 0.5 */
            if (!scalar_near(g, passes_other_input(hn, LOOM_OP_MUL, mn->outputs[0]), 0.5))
                continue;
        } else if (scalar_near(g, passes_other_input(mn, LOOM_OP_MUL, x), 0.5) && ar == h) {
            /* (x * 0.5) * (erf + 1) */
            if (passes_other_input(hn, LOOM_OP_MUL, mn->outputs[0]) != av)
                continue;
        } else {
            continue;
        }
        if (!same_desc(&g->values[hn->outputs[0]].desc, &g->values[x].desc))
            continue;
        nodes[0] = d;
        nodes[1] = e;
        nodes[2] = a;
        nodes[3] = m;
        nodes[4] = h;
        return 1;
    }
    return 0;
}

int passes_gelu_after(const loom_graph *g, const int32_t *reader, const int32_t *role,
                      loom_value x, int32_t nodes[5], const char **act)
{
    const int32_t r = free_reader(g, role, reader, x);
    if (r >= 0 && g->nodes[r].def->id == LOOM_OP_GELU && g->nodes[r].n_outputs == 1) {
        const loom_attr *ap = loom_attr_list_get(&g->nodes[r].attrs, "approximate");
        const char *s = ap && ap->kind == LOOM_ATTR_STRING && ap->s ? ap->s : "none";
        if (strcmp(s, "none") != 0 && strcmp(s, "tanh") != 0)
            return 0;
        *act = strcmp(s, "tanh") == 0 ? "GeluTanh" : "Gelu";
        nodes[0] = r;
        return 1;
    }
    if (erf_gelu(g, role, reader, x, nodes)) {
        *act = "Gelu";
        return 5;
    }
    return 0;
}

/* What follows quantised node H (its plan QP): the chain, when it absorbs anything, with its
 * nodes marked in QS->role. */
static void plan_chain(quant_state *qs, const int32_t *reader, uint32_t h, const quant_plan *qp)
{
    const loom_graph *g = qs->src;
    const graph_node *head = &g->nodes[h];
    if (head->n_outputs != 1 || qs->role[h] >= 0)
        return;
    quant_chain c = {.head = h, .last = h, .bias = LOOM_NO_VALUE, .act = ""};
    int32_t marked[6];
    int n_marked = 0;
    loom_value cur = head->outputs[0];
    const loom_tensor_desc *y = &g->values[cur].desc;
    int32_t r = free_reader(g, qs->role, reader, cur);
    if (r >= 0 && qp->c_len == 0) {
        loom_value o = passes_other_input(&g->nodes[r], LOOM_OP_ADD, cur);
        const graph_value *b = o == LOOM_NO_VALUE ? NULL : passes_const_f32(g, o);
        if (b && loom_tensor_desc_numel(&b->desc) == qp->n && b->desc.rank >= 1 &&
            b->desc.rank <= y->rank && b->desc.dims[b->desc.rank - 1] == qp->n &&
            same_desc(&g->values[g->nodes[r].outputs[0]].desc, y)) {
            c.bias = o;
            c.last = (uint32_t)r;
            marked[n_marked++] = r;
            cur = g->nodes[r].outputs[0];
        }
    }
    int32_t gelu[5];
    const int n_gelu = passes_gelu_after(g, reader, qs->role, cur, gelu, &c.act);
    if (n_gelu) {
        c.last = (uint32_t)gelu[n_gelu - 1];
        for (int i = 0; i < n_gelu; i++)
            marked[n_marked++] = gelu[i];
    }
    if (!n_marked)
        return;
    const int32_t id = (int32_t)qs->n_chains;
    qs->chains[qs->n_chains++] = c;
    qs->role[h] = id;
    for (int i = 0; i < n_marked; i++)
        qs->role[marked[i]] = id;
    qs->fused_bias += c.bias != LOOM_NO_VALUE;
    qs->fused_act += *c.act != 0;
}

/* Quantise the node's weight into the new graph: B_q int8 [K, N], one scale per column, with
 * chain C's bias and activation when C is not NULL. */
static int quantize_node(quant_state *qs, graph_rebuild_ctx *rc, const graph_node *nd,
                         const quant_plan *qpp, const quant_chain *chain, loom_value *out)
{
    const quant_plan qp = *qpp;
    loom_graph *g = graph_rebuild_dst(rc);
    int64_t k = qp.k, n = qp.n;
    const float *cbias = NULL; /* the chain's bias row */
    if (chain && chain->bias != LOOM_NO_VALUE)
        cbias = passes_const_f32(qs->src, chain->bias)->data;
    int8_t *bq = malloc((size_t)(k * n) + 1);
    float *scale = malloc((size_t)n * sizeof *scale + 1);
    float *bias = qp.c_len || cbias ? malloc((size_t)n * sizeof *bias) : NULL;
    if (!bq || !scale || ((qp.c_len || cbias) && !bias)) {
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
        if (cbias)
            bias[j] = cbias[j];
        else if (bias)
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
    loom_attr act = loom_attr_string("activation", chain ? chain->act : "");
    const int with_act = chain && *chain->act;
    if (loom_graph_op(g, "MatMulInt8Dynamic", nd->name, ins, vbias != LOOM_NO_VALUE ? 4 : 3,
                      with_act ? &act : NULL, with_act ? 1 : 0, out, 1) != LOOM_OK)
        return -1;
    qs->done++;
    return 1;
}

/* Whether ND is quantised (its plan in QP); counts the nodes kept float when COUNT. */
static int will_quantize(quant_state *qs, const graph_node *nd, quant_plan *qp, int count)
{
    if (!plan_node(qs, nd, qp))
        return 0;
    if (listed(qs->ctx, nd->name)) {
        qs->kept_listed += (size_t)count;
        return 0;
    }
    if (qp->k < QUANT_MIN_K) {
        qs->kept_small += (size_t)count;
        return 0;
    }
    return 1;
}

static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *nd, loom_value *out)
{
    quant_state *qs = user;
    quant_plan qp;
    const uint32_t idx = (uint32_t)(nd - qs->src->nodes);
    if (qs->role && qs->role[idx] >= 0) {
        const quant_chain *c = &qs->chains[qs->role[idx]];
        if (idx != c->last)
            return 2; /* absorbed: the chain's last node makes the quantised node */
        const graph_node *head = &qs->src->nodes[c->head];
        if (!will_quantize(qs, head, &qp, 0)) { /* planned from the same test: cannot be */
            loom_set_error(LOOM_ERR_INTERNAL, "node '%s' was planned for int8 but is not",
                           head->name);
            return -1;
        }
        return quantize_node(qs, rc, head, &qp, c, out);
    }
    const graph_value *table = embedding_table(qs->src, nd);
    if (table && !listed(qs->ctx, nd->name))
        return rewrite_gather(qs, rc, nd, table, out);
    if (!will_quantize(qs, nd, &qp, 1))
        return 0;
    return quantize_node(qs, rc, nd, &qp, NULL, out);
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
    if (ctx->int8_epilogue) {
        int32_t *reader;
        void *chains;
        loom_status sst = passes_chain_scratch(in, sizeof *qs.chains, "quantising", &reader,
                                               &qs.role, &chains);
        if (sst != LOOM_OK)
            return sst;
        qs.chains = chains;
        for (size_t p = 0; p < in->n_nodes; p++) {
            const uint32_t h = ctx->order[p];
            if (will_quantize(&qs, &in->nodes[h], &qp, 0))
                plan_chain(&qs, reader, h, &qp);
        }
        free(reader);
    }
    loom_graph *g;
    loom_status st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &qs, &g);
    free(qs.role);
    free(qs.chains);
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
             "listed), %zu embedding table%s to int8; fused: %zu bias Add, %zu GELU",
             qs.done, qs.kept_small + qs.kept_listed, qs.kept_small, QUANT_MIN_K, qs.kept_listed,
             qs.tables, qs.tables == 1 ? "" : "s", qs.fused_bias, qs.fused_act);
    *out = g;
    return LOOM_OK;
}
