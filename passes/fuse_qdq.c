/*
 * The fuse_qdq pass: statically quantised ONNX models in "QDQ" form (what ONNX Runtime's
 * quantize_static writes) at int8 speed. Such a model keeps float operators and wraps them in
 * QuantizeLinear/DequantizeLinear pairs:
 *
 *   x_q = QuantizeLinear(x, s_x, z_x);  x' = DequantizeLinear(x_q, s_x, z_x)
 *   w'  = DequantizeLinear(W_q, s_w, z_w)            (constant int8 weights, per tensor/channel)
 *   y   = MatMul(x', w') | Gemm(x', w', b') | Conv(x', w', b')  [-> Relu] [-> QuantizeLinear]
 *
 * and, run as written, dequantises the weights and activations and multiplies in float. The pass
 * rewrites:
 *
 *   MatMul / Gemm  -> MatMulInt8Dynamic with a_scale = s_x, a_zero_point = z_x (static
 *                     quantisation: x quantised exactly as the QuantizeLinear does, int32 sums
 *                     against W_q - z_w, one float multiply by s_x * s_w per column, the bias
 *                     added in float). Gemm: transA = 0, B either way, alpha folded into the
 *                     scales, beta * C into the bias. A following QuantizeLinear stays.
 *   Conv [-> Relu] -> QLinearConv (x_q, W_q, the bias as int32 at scale s_x * s_w, requantised
 *   -> QuantizeLinear into the QuantizeLinear's scale and zero point); a Relu between them
 *                     goes when that zero point is the bottom of its range (the clamp is the
 *                     Relu).
 *   other Conv     -> ConvInteger (x_q, W_q, z_x, z_w: the int32 sums, on the same int8 kernel)
 *   (a float output)  + DequantizeLinear along the channels, scale s_x * s_w, zero point minus
 *                     the bias as int32 at that scale: a float output, (sum + b_q) s_x s_w, what
 *                     the float Conv computes over the dequantised values up to float rounding
 *                     (and the bias rounded to the sums' scale, as quantize_static stores it).
 *                     Needs W_q - z_w within int8; a Relu after it stays a Relu.
 *
 * The DequantizeLinear / QuantizeLinear nodes go once nothing else reads them. Left alone (the
 * graph runs as the reference would): activations quantised per axis, or whose QuantizeLinear and
 * DequantizeLinear disagree; weights that are not constants, quantised along another axis than
 * the output channels, or with W_q - z_w outside int8 (MatMul/Gemm, a Conv with a float
 * output); a Conv of rank other than 3 and 4; values read by anything else.
 *
 * DequantizeLinear is never folded while a graph is built (so the weights reach this pass as
 * int8 constants); this pass folds every DequantizeLinear of constants it did not fuse into a
 * float constant, as the builder used to, with the same arithmetic as the CPU kernel.
 * LOOM_FUSE_QDQ=0 turns the fusion off (the folding stays).
 */
#include "passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QA_KEEP = 0, QA_DROP, QA_FOLD, QA_MATMUL, QA_CONV, QA_CONV_FLOAT };

/* A per-tensor activation quantisation: x' = DequantizeLinear(QuantizeLinear(x)). */
typedef struct qdq_act {
    int32_t q, dq;     /* node indices */
    loom_value x, xq;  /* float source, quantised value */
    float scale;
    int32_t zp;        /* in the quantised dtype */
    loom_dtype dtype;  /* uint8 or int8 */
} qdq_act;

/* Constant quantised weights: W' = DequantizeLinear(W_q, scale, zp). */
typedef struct qdq_weight {
    int32_t dq;
    const graph_value *w, *scale, *zp; /* zp NULL: 0 */
    int64_t axis;                      /* -1 per tensor */
} qdq_weight;

typedef struct qdq_fusion {
    int kind;                 /* QA_MATMUL, QA_CONV or QA_CONV_FLOAT */
    uint32_t op;              /* the MatMul/Gemm/Conv node */
    qdq_act a;
    qdq_weight w;
    int32_t bias_dq;          /* DequantizeLinear producing the bias, or -1 */
    loom_value bias;          /* the bias value (source graph), or LOOM_NO_VALUE */
    int32_t relu, q_out;      /* Conv: absorbed Relu (-1) and the output QuantizeLinear */
} qdq_fusion;

typedef struct qdq_fuse {
    const loom_graph *g;
    int32_t *producer_of;
    uint8_t *action;          /* per node: QA_* */
    uint32_t *fusion_at;      /* per node: 1 + fusion index emitted there, else 0 */
    uint8_t *absorbed_q;      /* per node: a QuantizeLinear a Conv fusion replaced */
    uint8_t *needed_q;        /* per node: a QuantizeLinear whose output a QLinearConv reads */
    qdq_fusion *fusions;
    size_t n_fusions, n_conv, n_conv_float, n_matmul, n_folded;
} qdq_fuse;

static int32_t producer_op(const qdq_fuse *f, loom_value v, loom_op_id op)
{
    if (v == LOOM_NO_VALUE)
        return -1;
    int32_t p = f->producer_of[v];
    return p >= 0 && f->g->nodes[p].def->id == op ? p : -1;
}

static const graph_value *constant(const loom_graph *g, loom_value v)
{
    if (v == LOOM_NO_VALUE)
        return NULL;
    const graph_value *val = &g->values[v];
    return val->kind == GRAPH_VALUE_CONSTANT && val->data ? val : NULL;
}

static int is_q8(loom_dtype t)
{
    return t == LOOM_DTYPE_U8 || t == LOOM_DTYPE_I8;
}

/* Element I of an integer constant, widened. */
static int64_t int_at(const graph_value *v, int64_t i)
{
    switch (v->desc.dtype) {
    case LOOM_DTYPE_U8: return ((const uint8_t *)v->data)[i];
    case LOOM_DTYPE_I8: return ((const int8_t *)v->data)[i];
    case LOOM_DTYPE_I32: return ((const int32_t *)v->data)[i];
    default: return 0;
    }
}

static float f32_at(const graph_value *v, int64_t i)
{
    return ((const float *)v->data)[i];
}

/* One-element (per-tensor) constant of dtype T. */
static const graph_value *scalar_const(const loom_graph *g, loom_value v, loom_dtype t)
{
    const graph_value *c = constant(g, v);
    return c && c->desc.dtype == t && c->desc.rank <= 1 && loom_tensor_desc_numel(&c->desc) == 1
               ? c
               : NULL;
}

/* Is V DequantizeLinear(QuantizeLinear(x)) with one constant scale and zero point, the same in
 * both? Fills A. */
static int match_act(const qdq_fuse *f, loom_value v, qdq_act *a)
{
    const loom_graph *g = f->g;
    int32_t d = producer_op(f, v, LOOM_OP_DEQUANTIZE_LINEAR);
    if (d < 0)
        return 0;
    const graph_node *dq = &g->nodes[d];
    int32_t q = producer_op(f, dq->inputs[0], LOOM_OP_QUANTIZE_LINEAR);
    if (q < 0)
        return 0;
    const graph_node *qn = &g->nodes[q];
    const loom_dtype t = g->values[dq->inputs[0]].desc.dtype;
    if (!is_q8(t) || qn->n_inputs < 2 || g->values[qn->inputs[0]].desc.dtype != LOOM_DTYPE_F32)
        return 0;
    const graph_value *s1 = scalar_const(g, qn->inputs[1], LOOM_DTYPE_F32);
    const graph_value *s2 = scalar_const(g, dq->inputs[1], LOOM_DTYPE_F32);
    const loom_value z1v = qn->n_inputs > 2 ? qn->inputs[2] : LOOM_NO_VALUE;
    const loom_value z2v = dq->n_inputs > 2 ? dq->inputs[2] : LOOM_NO_VALUE;
    const graph_value *z1 = z1v != LOOM_NO_VALUE ? scalar_const(g, z1v, t) : NULL;
    const graph_value *z2 = z2v != LOOM_NO_VALUE ? scalar_const(g, z2v, t) : NULL;
    if (!s1 || !s2 || (z1v != LOOM_NO_VALUE && !z1) || (z2v != LOOM_NO_VALUE && !z2))
        return 0;
    const int64_t zq = z1 ? int_at(z1, 0) : 0, zd = z2 ? int_at(z2, 0) : 0;
    const float sc = f32_at(s1, 0);
    if (memcmp(s1->data, s2->data, sizeof(float)) != 0 || zq != zd || !(sc > 0.0f) ||
        !isfinite(sc))
        return 0;
    a->q = q;
    a->dq = d;
    a->x = qn->inputs[0];
    a->xq = dq->inputs[0];
    a->scale = sc;
    a->zp = (int32_t)zq;
    a->dtype = t;
    return 1;
}

/* Is V DequantizeLinear of constant int8/uint8 weights of RANK, per tensor or per channel
 * along AXIS (of CHANNELS)? Fills W. */
static int match_weight(const qdq_fuse *f, loom_value v, uint32_t rank, int64_t axis,
                        qdq_weight *w)
{
    const loom_graph *g = f->g;
    int32_t d = producer_op(f, v, LOOM_OP_DEQUANTIZE_LINEAR);
    if (d < 0)
        return 0;
    const graph_node *dq = &g->nodes[d];
    const graph_value *wq = constant(g, dq->inputs[0]);
    const graph_value *sc = constant(g, dq->inputs[1]);
    if (!wq || !is_q8(wq->desc.dtype) || wq->desc.rank != rank || !sc ||
        sc->desc.dtype != LOOM_DTYPE_F32)
        return 0;
    const graph_value *zp = NULL;
    if (dq->n_inputs > 2 && dq->inputs[2] != LOOM_NO_VALUE) {
        zp = constant(g, dq->inputs[2]);
        if (!zp || zp->desc.dtype != wq->desc.dtype)
            return 0;
    }
    const int64_t ns = loom_tensor_desc_numel(&sc->desc);
    if (ns == 1 && sc->desc.rank <= 1) {
        w->axis = -1;
    } else {
        const int64_t a = loom_attr_list_get(&dq->attrs, "axis")
                              ? loom_attr_list_get(&dq->attrs, "axis")->i
                              : 1;
        if (a != axis || sc->desc.rank != 1 || ns != wq->desc.dims[axis])
            return 0; /* per channel, but not along the output channels */
        w->axis = axis;
    }
    if (zp && loom_tensor_desc_numel(&zp->desc) != ns)
        return 0;
    for (int64_t i = 0; i < ns; i++)
        if (!(f32_at(sc, i) > 0.0f) || !isfinite(f32_at(sc, i)))
            return 0;
    w->dq = d;
    w->w = wq;
    w->scale = sc;
    w->zp = zp;
    return 1;
}

/* A bias: a float constant, or DequantizeLinear of constants (then *DQ is its node). */
static int match_bias(const qdq_fuse *f, loom_value v, int64_t n, int32_t *dq)
{
    const loom_graph *g = f->g;
    *dq = -1;
    if (v == LOOM_NO_VALUE)
        return 1;
    const graph_value *c = constant(g, v);
    const loom_tensor_desc *d = &g->values[v].desc;
    if (loom_tensor_desc_numel(d) != n || d->dims[d->rank ? d->rank - 1 : 0] != n ||
        d->dtype != LOOM_DTYPE_F32)
        return 0;
    if (c)
        return 1;
    int32_t p = producer_op(f, v, LOOM_OP_DEQUANTIZE_LINEAR);
    if (p < 0)
        return 0;
    const graph_node *dn = &g->nodes[p];
    for (uint32_t k = 0; k < dn->n_inputs; k++)
        if (dn->inputs[k] != LOOM_NO_VALUE && !constant(g, dn->inputs[k]))
            return 0;
    *dq = p;
    return 1;
}

/* The only node reading V, or -1 (none, several, or V is a graph output). */
static int32_t sole_reader(const qdq_fuse *f, loom_value v)
{
    const loom_graph *g = f->g;
    if (g->values[v].output_index >= 0 || g->values[v].n_consumers != 1)
        return -1;
    for (size_t i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] == v)
                return (int32_t)i;
    return -1;
}

static int weights_fit_int8(const qdq_weight *w);
static int match_conv_q(qdq_fuse *f, const graph_node *n, qdq_fusion *z);

/* Conv node C [-> Relu] -> QuantizeLinear, 1-D or 2-D: QA_CONV. Without the QuantizeLinear (or
 * with one the output cannot take over), and with W_q - z_w within int8: QA_CONV_FLOAT, the
 * Conv alone with a float output (a Relu after it stays). */
static int match_conv(qdq_fuse *f, uint32_t c, qdq_fusion *z)
{
    const loom_graph *g = f->g;
    const graph_node *n = &g->nodes[c];
    if (n->n_inputs < 2)
        return 0;
    const uint32_t rank = g->values[n->inputs[0]].desc.rank;
    if ((rank != 3 && rank != 4) || !match_act(f, n->inputs[0], &z->a) ||
        !match_weight(f, n->inputs[1], rank, 0, &z->w))
        return 0;
    const int64_t m = z->w.w->desc.dims[0];
    z->bias = n->n_inputs > 2 ? n->inputs[2] : LOOM_NO_VALUE;
    if (!match_bias(f, z->bias, m, &z->bias_dq))
        return 0;
    /* int32 sums: the QLinearConv kernel bounds the products per output. */
    int64_t ckk = 1;
    for (uint32_t k = 1; k < rank; k++)
        ckk *= z->w.w->desc.dims[k];
    if (ckk > 33000)
        return 0;
    z->op = c;
    if (!match_conv_q(f, n, z)) {
        if (!weights_fit_int8(&z->w))
            return 0;
        z->relu = z->q_out = -1;
        z->kind = QA_CONV_FLOAT;
    }
    return 1;
}

/* The [Relu ->] QuantizeLinear after Conv N that a QLinearConv's output can be. */
static int match_conv_q(qdq_fuse *f, const graph_node *n, qdq_fusion *z)
{
    const loom_graph *g = f->g;
    z->relu = -1;
    int32_t r = sole_reader(f, n->outputs[0]);
    if (r >= 0 && g->nodes[r].def->id == LOOM_OP_RELU) {
        z->relu = r;
        r = sole_reader(f, g->nodes[r].outputs[0]);
    }
    if (r < 0 || g->nodes[r].def->id != LOOM_OP_QUANTIZE_LINEAR)
        return 0;
    const graph_node *qo = &g->nodes[r];
    const loom_dtype yt = g->values[qo->outputs[0]].desc.dtype;
    const graph_value *ys = scalar_const(g, qo->inputs[1], LOOM_DTYPE_F32);
    const loom_value yzv = qo->n_inputs > 2 ? qo->inputs[2] : LOOM_NO_VALUE;
    const graph_value *yz = yzv != LOOM_NO_VALUE ? scalar_const(g, yzv, yt) : NULL;
    if (!ys || (yzv != LOOM_NO_VALUE && !yz) || !is_q8(yt))
        return 0;
    if (z->relu >= 0) {
        /* The Relu is the clamp only when the zero point is the bottom of the range. */
        const int64_t bottom = yt == LOOM_DTYPE_U8 ? 0 : -128;
        if ((yz ? int_at(yz, 0) : 0) != bottom)
            return 0;
    }
    z->q_out = r;
    z->kind = QA_CONV;
    return 1;
}

/* Does W_q - z_w fit int8 everywhere (the MatMulInt8Dynamic kernel's B, the int8 conv's W')? */
static int weights_fit_int8(const qdq_weight *w)
{
    const int64_t total = loom_tensor_desc_numel(&w->w->desc);
    int64_t inner = 1; /* elements per step along the channel axis */
    for (uint32_t d = (uint32_t)(w->axis < 0 ? 0 : w->axis) + 1; d < w->w->desc.rank; d++)
        inner *= w->w->desc.dims[d];
    const int64_t ch = w->axis < 0 ? 1 : w->w->desc.dims[w->axis];
    for (int64_t i = 0; i < total; i++) {
        const int64_t z = w->zp ? int_at(w->zp, w->axis < 0 ? 0 : (i / inner) % ch) : 0;
        const int64_t v = int_at(w->w, i) - z;
        if (v < -128 || v > 127)
            return 0;
    }
    return 1;
}

/* MatMul(x', W') with W [K, N] per tensor or per column; Gemm(x', W', C) with transA = 0. */
static int match_matmul(qdq_fuse *f, uint32_t i, qdq_fusion *z)
{
    const loom_graph *g = f->g;
    const graph_node *n = &g->nodes[i];
    const int gemm = n->def->id == LOOM_OP_GEMM;
    if (n->n_inputs < 2 || !match_act(f, n->inputs[0], &z->a) || f->absorbed_q[z->a.q])
        return 0;
    int64_t trans_b = 0;
    if (gemm) {
        const loom_attr *ta = loom_attr_list_get(&n->attrs, "transA");
        const loom_attr *tb = loom_attr_list_get(&n->attrs, "transB");
        if ((ta && ta->i != 0) || g->values[n->inputs[0]].desc.rank != 2)
            return 0;
        trans_b = tb ? tb->i : 0;
    }
    if (!match_weight(f, n->inputs[1], 2, trans_b ? 0 : 1, &z->w) || !weights_fit_int8(&z->w))
        return 0;
    const int64_t nn = z->w.w->desc.dims[trans_b ? 0 : 1];
    z->bias = gemm && n->n_inputs > 2 ? n->inputs[2] : LOOM_NO_VALUE;
    if (z->bias != LOOM_NO_VALUE && !match_bias(f, z->bias, nn, &z->bias_dq))
        return 0;
    if (z->bias == LOOM_NO_VALUE)
        z->bias_dq = -1;
    z->relu = z->q_out = -1;
    z->kind = QA_MATMUL;
    z->op = i;
    return 1;
}

/* DequantizeLinear of constants N into a new float array (the CPU kernel's arithmetic); NULL
 * when out of memory. */
static float *dequantize(const loom_graph *g, const graph_node *n)
{
    const graph_value *x = constant(g, n->inputs[0]), *s = constant(g, n->inputs[1]);
    const graph_value *zp = n->n_inputs > 2 ? constant(g, n->inputs[2]) : NULL;
    const int64_t total = loom_tensor_desc_numel(&x->desc);
    const int64_t ns = loom_tensor_desc_numel(&s->desc);
    int64_t inner = 1, ch = 1;
    if (ns != 1) {
        const loom_attr *ax = loom_attr_list_get(&n->attrs, "axis");
        const int64_t a = ax ? ax->i : 1;
        ch = x->desc.dims[a];
        for (uint32_t d = (uint32_t)a + 1; d < x->desc.rank; d++)
            inner *= x->desc.dims[d];
    }
    float *out = malloc((size_t)(total > 0 ? total : 1) * sizeof *out);
    if (!out)
        return NULL;
    for (int64_t i = 0; i < total; i++) {
        const int64_t c = ns == 1 ? 0 : (i / inner) % ch;
        const float zf = zp ? (float)int_at(zp, c) : 0.0f;
        out[i] = ((float)int_at(x, i) - zf) * f32_at(s, c);
    }
    return out;
}

/* The bias of Z as floats [N] (times BETA), or NULL when out of memory. */
static float *bias_f32(const qdq_fuse *f, const qdq_fusion *z, int64_t n, float beta)
{
    const loom_graph *g = f->g;
    float *b = malloc((size_t)n * sizeof *b + 1);
    if (!b)
        return NULL;
    if (z->bias_dq >= 0) {
        float *d = dequantize(g, &g->nodes[z->bias_dq]);
        if (!d) {
            free(b);
            return NULL;
        }
        for (int64_t j = 0; j < n; j++)
            b[j] = beta * d[j];
        free(d);
    } else {
        const graph_value *c = constant(g, z->bias);
        for (int64_t j = 0; j < n; j++)
            b[j] = beta * f32_at(c, j);
    }
    return b;
}

static loom_value new_const(loom_graph *g, const char *base, const char *what, loom_dtype t,
                            uint32_t rank, const int64_t *dims, const void *data)
{
    char name[300];
    snprintf(name, sizeof name, "%s.%s", base, what);
    return loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL, t,
                         rank, dims, data);
}

static int emit_matmul(qdq_fuse *f, graph_rebuild_ctx *rc, const qdq_fusion *z, loom_value *out)
{
    const loom_graph *src = f->g;
    loom_graph *g = graph_rebuild_dst(rc);
    const graph_node *n = &src->nodes[z->op];
    const loom_attr *tb = loom_attr_list_get(&n->attrs, "transB");
    const int trans = n->def->id == LOOM_OP_GEMM && tb && tb->i;
    const int64_t d0 = z->w.w->desc.dims[0], d1 = z->w.w->desc.dims[1];
    const int64_t k = trans ? d1 : d0, nn = trans ? d0 : d1;
    float alpha = 1.0f, beta = 1.0f;
    if (n->def->id == LOOM_OP_GEMM) {
        const loom_attr *al = loom_attr_list_get(&n->attrs, "alpha");
        const loom_attr *be = loom_attr_list_get(&n->attrs, "beta");
        alpha = al ? al->f : 1.0f;
        beta = be ? be->f : 1.0f;
    }
    int8_t *bq = malloc((size_t)(k * nn) + 1);
    float *scale = malloc((size_t)nn * sizeof *scale + 1);
    float *bias = z->bias != LOOM_NO_VALUE ? bias_f32(f, z, nn, beta) : NULL;
    if (!bq || !scale || (z->bias != LOOM_NO_VALUE && !bias)) {
        free(bq);
        free(scale);
        free(bias);
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing node '%s'", n->name);
        return -1;
    }
    for (int64_t j = 0; j < nn; j++) {
        const int64_t c = z->w.axis < 0 ? 0 : j;
        const int64_t zp = z->w.zp ? int_at(z->w.zp, c) : 0;
        for (int64_t t = 0; t < k; t++)
            bq[t * nn + j] = (int8_t)(int_at(z->w.w, trans ? j * k + t : t * nn + j) - zp);
        scale[j] = alpha * f32_at(z->w.scale, c);
    }
    const int64_t bd[2] = {k, nn}, sd[1] = {nn};
    loom_value ins[4] = {graph_rebuild_map(rc, z->a.x),
                         new_const(g, n->name, "weight_int8", LOOM_DTYPE_I8, 2, bd, bq),
                         new_const(g, n->name, "weight_scale", LOOM_DTYPE_F32, 1, sd, scale),
                         bias ? new_const(g, n->name, "bias", LOOM_DTYPE_F32, 1, sd, bias)
                              : LOOM_NO_VALUE};
    free(bq);
    free(scale);
    free(bias);
    /* The uint8 form of the activations' quantisation: int8 with zero point z is z + 128. */
    const int64_t azp = z->a.zp + (z->a.dtype == LOOM_DTYPE_I8 ? 128 : 0);
    loom_attr at[3] = {loom_attr_int("tensor_asymmetric", 1),
                       loom_attr_float("a_scale", z->a.scale),
                       loom_attr_int("a_zero_point", azp)};
    loom_value y;
    if (loom_graph_op(g, "MatMulInt8Dynamic", n->name, ins, bias ? 4 : 3, at, 3, &y, 1) !=
        LOOM_OK)
        return -1;
    *out = y;
    return 1;
}

static int emit_conv(qdq_fuse *f, graph_rebuild_ctx *rc, const qdq_fusion *z, loom_value *out)
{
    const loom_graph *src = f->g;
    loom_graph *g = graph_rebuild_dst(rc);
    const graph_node *n = &src->nodes[z->op], *qo = &src->nodes[z->q_out];
    const graph_node *dq = &src->nodes[z->w.dq];
    const int64_t m = z->w.w->desc.dims[0];
    const loom_dtype wt = z->w.w->desc.dtype, xt = z->a.dtype;
    const loom_dtype yt = src->values[qo->outputs[0]].desc.dtype;
    int32_t *bq = NULL;
    void *wz0 = z->w.zp ? NULL : calloc((size_t)m + 1, 1); /* absent: zero */
    if (!z->w.zp && !wz0) {
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing node '%s'", n->name);
        return -1;
    }
    if (z->bias != LOOM_NO_VALUE) {
        float *b = bias_f32(f, z, m, 1.0f);
        bq = malloc((size_t)m * sizeof *bq + 1);
        if (!b || !bq) {
            free(b);
            free(bq);
            free(wz0);
            loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing node '%s'", n->name);
            return -1;
        }
        for (int64_t j = 0; j < m; j++) {
            /* The bias at the accumulator's scale s_x * s_w, as quantize_static writes it. */
            const double sw = f32_at(z->w.scale, z->w.axis < 0 ? 0 : j);
            double v = rint((double)b[j] / ((double)z->a.scale * sw));
            v = v > 2147483647.0 ? 2147483647.0 : v < -2147483648.0 ? -2147483648.0 : v;
            bq[j] = (int32_t)v;
        }
        free(b);
    }
    const int64_t one[1] = {1}, md[1] = {m};
    const uint8_t zero8 = 0;
    const uint8_t xz8 = (uint8_t)(xt == LOOM_DTYPE_I8 ? (uint8_t)(int8_t)z->a.zp : z->a.zp);
    loom_value ins[9];
    ins[0] = graph_rebuild_map(rc, z->a.xq);
    ins[1] = loom_constant(g, NULL, LOOM_DTYPE_F32, 0, one, &z->a.scale);
    ins[2] = loom_constant(g, NULL, xt, 0, one, &xz8);
    ins[3] = graph_rebuild_map(rc, dq->inputs[0]);
    ins[4] = graph_rebuild_map(rc, dq->inputs[1]);
    ins[5] = z->w.zp ? graph_rebuild_map(rc, dq->inputs[2])
                     : loom_constant(g, NULL, wt, z->w.axis < 0 ? 0 : 1,
                                     z->w.axis < 0 ? one : md, wz0);
    free(wz0);
    ins[6] = graph_rebuild_map(rc, qo->inputs[1]);
    ins[7] = qo->n_inputs > 2 && qo->inputs[2] != LOOM_NO_VALUE
                 ? graph_rebuild_map(rc, qo->inputs[2])
                 : loom_constant(g, NULL, yt, 0, one, &zero8);
    ins[8] = bq ? new_const(g, n->name, "bias_int32", LOOM_DTYPE_I32, 1, md, bq) : LOOM_NO_VALUE;
    free(bq);
    loom_value y;
    if (loom_graph_op(g, "QLinearConv", n->name, ins, bq ? 9 : 8, n->attrs.items, n->attrs.count,
                      &y, 1) != LOOM_OK)
        return -1;
    *out = y;
    return 1;
}

/* Conv Z with a float output: ConvInteger(x_q, W_q, z_x, z_w) -> int32 sums, then one
 * DequantizeLinear along the channels with scale s_x * s_w[m] and zero point -b_q[m], the bias
 * at the sums' scale (as emit_conv rounds it): y = (sum + b_q) * s_x * s_w, what the float Conv
 * computes over the dequantised values, up to float rounding. */
static int emit_conv_float(qdq_fuse *f, graph_rebuild_ctx *rc, const qdq_fusion *z,
                           loom_value *out)
{
    const loom_graph *src = f->g;
    loom_graph *g = graph_rebuild_dst(rc);
    const graph_node *n = &src->nodes[z->op];
    const graph_node *dq = &src->nodes[z->w.dq];
    const int64_t m = z->w.w->desc.dims[0];
    const loom_dtype wt = z->w.w->desc.dtype, xt = z->a.dtype;
    float *scale = malloc((size_t)m * sizeof *scale + 1);
    int32_t *zp = calloc((size_t)m + 1, sizeof *zp);
    void *wz0 = z->w.zp ? NULL : calloc((size_t)m + 1, 1);
    float *b = z->bias != LOOM_NO_VALUE ? bias_f32(f, z, m, 1.0f) : NULL;
    if (!scale || !zp || (!z->w.zp && !wz0) || (z->bias != LOOM_NO_VALUE && !b)) {
        free(scale);
        free(zp);
        free(wz0);
        free(b);
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing node '%s'", n->name);
        return -1;
    }
    for (int64_t j = 0; j < m; j++) {
        const float sw = f32_at(z->w.scale, z->w.axis < 0 ? 0 : j);
        scale[j] = z->a.scale * sw;
        if (b) {
            double v = rint((double)b[j] / ((double)z->a.scale * sw));
            v = v > 2147483647.0 ? 2147483647.0 : v < -2147483647.0 ? -2147483647.0 : v;
            zp[j] = -(int32_t)v;
        }
    }
    free(b);
    const int64_t one[1] = {1}, md[1] = {m};
    const uint8_t xz8 = (uint8_t)(xt == LOOM_DTYPE_I8 ? (uint8_t)(int8_t)z->a.zp : z->a.zp);
    loom_value ins[4] = {graph_rebuild_map(rc, z->a.xq), graph_rebuild_map(rc, dq->inputs[0]),
                         loom_constant(g, NULL, xt, 0, one, &xz8),
                         z->w.zp ? graph_rebuild_map(rc, dq->inputs[2])
                                 : loom_constant(g, NULL, wt, z->w.axis < 0 ? 0 : 1,
                                                 z->w.axis < 0 ? one : md, wz0)};
    free(wz0);
    loom_value acc, y;
    if (loom_graph_op(g, "ConvInteger", n->name, ins, 4, n->attrs.items, n->attrs.count, &acc,
                      1) != LOOM_OK) {
        free(scale);
        free(zp);
        return -1;
    }
    loom_value dq_in[3] = {acc, new_const(g, n->name, "sum_scale", LOOM_DTYPE_F32, 1, md, scale),
                           new_const(g, n->name, "minus_bias_int32", LOOM_DTYPE_I32, 1, md, zp)};
    free(scale);
    free(zp);
    const loom_attr ax = loom_attr_int("axis", 1);
    char name[300];
    snprintf(name, sizeof name, "%s.dequantize", n->name);
    if (loom_graph_op(g, "DequantizeLinear",
                      loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL, dq_in, 3,
                      &ax, 1, &y, 1) != LOOM_OK)
        return -1;
    *out = y;
    return 1;
}

static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *n, loom_value *out)
{
    qdq_fuse *f = user;
    const uint32_t i = (uint32_t)(n - f->g->nodes);
    switch (f->action[i]) {
    case QA_DROP:
        return 2;
    case QA_FOLD: {
        float *d = dequantize(f->g, n);
        if (!d) {
            loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory folding node '%s'", n->name);
            return -1;
        }
        const loom_tensor_desc *x = &f->g->values[n->inputs[0]].desc;
        *out = loom_constant(graph_rebuild_dst(rc), NULL, LOOM_DTYPE_F32, x->rank, x->dims, d);
        free(d);
        return 1;
    }
    case QA_MATMUL:
        return emit_matmul(f, rc, &f->fusions[f->fusion_at[i] - 1], out);
    case QA_CONV:
        return emit_conv(f, rc, &f->fusions[f->fusion_at[i] - 1], out);
    case QA_CONV_FLOAT:
        return emit_conv_float(f, rc, &f->fusions[f->fusion_at[i] - 1], out);
    default:
        return 0;
    }
}

/* Does every node reading an output of node I go (QA_DROP, or replaced by a fusion that does not
 * read it)? Graph outputs stay. */
static int all_readers_gone(const qdq_fuse *f, uint32_t i)
{
    const loom_graph *g = f->g;
    const graph_node *n = &g->nodes[i];
    for (uint32_t o = 0; o < n->n_outputs; o++) {
        const loom_value v = n->outputs[o];
        if (g->values[v].output_index >= 0)
            return 0;
        for (size_t j = 0; j < g->n_nodes; j++)
            for (uint32_t k = 0; k < g->nodes[j].n_inputs; k++)
                if (g->nodes[j].inputs[k] == v && f->action[j] != QA_DROP &&
                    f->action[j] != QA_MATMUL && f->action[j] != QA_CONV_FLOAT)
                    return 0;
    }
    return 1;
}

/* A DequantizeLinear whose inputs are all constants and whose output is not a graph output. */
static int constant_dq(const loom_graph *g, const graph_node *n)
{
    if (n->def->id != LOOM_OP_DEQUANTIZE_LINEAR || g->values[n->outputs[0]].output_index >= 0)
        return 0;
    for (uint32_t k = 0; k < n->n_inputs; k++)
        if (n->inputs[k] != LOOM_NO_VALUE && !constant(g, n->inputs[k]))
            return 0;
    return 1;
}

loom_status pass_fuse_qdq(const loom_graph *in, loom_graph **out, pass_ctx *ctx, char *summary,
                          size_t summary_len)
{
    *out = NULL;
    int any = 0;
    for (size_t i = 0; i < in->n_nodes && !any; i++)
        any = in->nodes[i].def->id == LOOM_OP_DEQUANTIZE_LINEAR;
    if (!any) {
        snprintf(summary, summary_len, "no DequantizeLinear");
        return LOOM_OK;
    }
    const char *env = getenv("LOOM_FUSE_QDQ");
    const int fuse = !(env && strcmp(env, "0") == 0);
    qdq_fuse f = {.g = in};
    f.producer_of = malloc((in->n_values + 1) * sizeof *f.producer_of);
    f.action = calloc(in->n_nodes + 1, 1);
    f.absorbed_q = calloc(in->n_nodes + 1, 1);
    f.needed_q = calloc(in->n_nodes + 1, 1);
    f.fusion_at = calloc(in->n_nodes + 1, sizeof *f.fusion_at);
    f.fusions = malloc((in->n_nodes + 1) * sizeof *f.fusions);
    loom_status st = LOOM_OK;
    if (!f.producer_of || !f.action || !f.absorbed_q || !f.needed_q || !f.fusion_at ||
        !f.fusions) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing graph '%s'", in->name);
        goto done;
    }
    for (size_t v = 0; v < in->n_values; v++)
        f.producer_of[v] = in->values[v].kind == GRAPH_VALUE_NODE ? in->values[v].producer : -1;
    /* Convolutions first: they take over their output QuantizeLinear, which a MatMul reading
     * the same activations then cannot use (its float source is gone). */
    for (size_t i = 0; i < in->n_nodes && fuse; i++) {
        qdq_fusion z;
        if (in->nodes[i].def->id != LOOM_OP_CONV || !match_conv(&f, (uint32_t)i, &z))
            continue;
        f.fusions[f.n_fusions++] = z;
        if (z.kind == QA_CONV_FLOAT) {
            f.action[i] = QA_CONV_FLOAT;
            f.needed_q[z.a.q] = 1;
            f.fusion_at[i] = (uint32_t)f.n_fusions;
            f.n_conv_float++;
            continue;
        }
        f.action[i] = QA_DROP;
        if (z.relu >= 0)
            f.action[z.relu] = QA_DROP;
        f.action[z.q_out] = QA_CONV;
        f.absorbed_q[z.q_out] = 1;
        f.needed_q[z.a.q] = 1;
        f.fusion_at[z.q_out] = (uint32_t)f.n_fusions;
        f.n_conv++;
    }
    for (size_t i = 0; i < in->n_nodes && fuse; i++) {
        qdq_fusion z;
        const loom_op_id op = in->nodes[i].def->id;
        if ((op != LOOM_OP_MATMUL && op != LOOM_OP_GEMM) || !match_matmul(&f, (uint32_t)i, &z))
            continue;
        f.fusions[f.n_fusions++] = z;
        f.action[i] = QA_MATMUL;
        f.fusion_at[i] = (uint32_t)f.n_fusions;
        f.n_matmul++;
    }
    /* DequantizeLinear nodes then QuantizeLinear nodes nothing reads any more go; every other
     * DequantizeLinear of constants is folded (when the plan folds). */
    for (size_t i = 0; i < in->n_nodes; i++)
        if (in->nodes[i].def->id == LOOM_OP_DEQUANTIZE_LINEAR && f.action[i] == QA_KEEP &&
            f.n_fusions && all_readers_gone(&f, (uint32_t)i))
            f.action[i] = QA_DROP;
    for (size_t i = 0; i < in->n_nodes; i++)
        if (in->nodes[i].def->id == LOOM_OP_QUANTIZE_LINEAR && f.action[i] == QA_KEEP &&
            !f.needed_q[i] && f.n_fusions && all_readers_gone(&f, (uint32_t)i))
            f.action[i] = QA_DROP;
    for (size_t i = 0; i < in->n_nodes; i++)
        if (f.action[i] == QA_KEEP && ctx->fold && constant_dq(in, &in->nodes[i])) {
            f.action[i] = QA_FOLD;
            f.n_folded++;
        }
    if (!f.n_fusions && !f.n_folded) {
        snprintf(summary, summary_len, "%s", fuse ? "nothing fused (no QDQ MatMul/Gemm/Conv "
                                                    "with constant int8 weights)"
                                                  : "off (LOOM_FUSE_QDQ=0)");
        goto done;
    }
    loom_graph *g;
    st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &f, &g);
    if (st != LOOM_OK)
        goto done;
    snprintf(summary, summary_len,
             "%zu QDQ MatMul/Gemm into MatMulInt8Dynamic, %zu QDQ Conv into QLinearConv, %zu "
             "QDQ Conv with a float output into ConvInteger + DequantizeLinear, %zu "
             "DequantizeLinear of constants folded%s",
             f.n_matmul, f.n_conv, f.n_conv_float, f.n_folded,
             fuse ? "" : " (fusion off: LOOM_FUSE_QDQ=0)");
    *out = g;
done:
    free(f.producer_of);
    free(f.action);
    free(f.absorbed_q);
    free(f.needed_q);
    free(f.fusion_at);
    free(f.fusions);
    return st;
}
