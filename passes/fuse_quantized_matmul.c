/*
 * The fuse_quantized_matmul pass: dynamically quantised ONNX models at int8 speed. ONNX Runtime's
 * quantize_dynamic writes every MatMul as
 *
 *   x_q, x_s, x_zp = DynamicQuantizeLinear(x)
 *   y = Mul(Cast<float>(MatMulInteger(x_q, W_q, x_zp, W_zp)), Mul(x_s, W_s))   [+ Add(bias)]
 *
 * five nodes that run one at a time through reference kernels. The pass turns each such chain
 * into one MatMulInt8Dynamic node with tensor_asymmetric = 1: the activations are quantised
 * exactly as DynamicQuantizeLinear does, the int8 weights are W_q - W_zp (per tensor or per
 * column), the scale is W_s and the bias the Add's constant, so the integer sums and the final
 * float multiply are the ones the unfused graph computes. A DynamicQuantizeLinear shared by
 * several MatMuls (Q, K, V) disappears once every reader is fused.
 *
 * On plans the CPU may run (pass_ctx.int8_epilogue) a GELU after the chain (passes_gelu_after:
 * a Gelu node or its Erf form) goes into the node too, as its activation attribute.
 *
 * Left alone: weights or scales that are not constants, W_q - W_zp outside int8, intermediate
 * values read by anything else, a Cast to another type.
 */
#include "passes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One chain: the nodes it absorbs and what the fused node needs. */
typedef struct qchain {
    uint32_t dql, mmi, cast, smul, mul, add; /* node indices; add = UINT32_MAX when none */
    loom_value x;                            /* the float activations (source value) */
    const graph_value *w, *wzp, *ws, *bias;
    const char *act;                         /* a GELU absorbed after it, or "" */
} qchain;

typedef struct qfuse {
    const loom_graph *g;
    int32_t *producer_of;  /* value -> node index (-1) */
    uint32_t *chain_at;    /* node -> 1 + chain index whose last node it is, else 0 */
    uint8_t *drop;         /* node absorbed into a chain */
    qchain *chains;
    size_t n_chains;
} qfuse;

static int32_t producer(const qfuse *f, loom_value v)
{
    return v == LOOM_NO_VALUE ? -1 : f->producer_of[v];
}

static const graph_value *const_of(const loom_graph *g, loom_value v, loom_dtype dtype)
{
    if (v == LOOM_NO_VALUE)
        return NULL;
    const graph_value *val = &g->values[v];
    return val->kind == GRAPH_VALUE_CONSTANT && val->data && val->desc.dtype == dtype ? val : NULL;
}

/* Read by exactly one node input and not a graph output. */
static int single_use(const loom_graph *g, loom_value v)
{
    return g->values[v].n_consumers == 1 && g->values[v].output_index < 0;
}

/* Elements of a per-tensor (1) or per-column (N) parameter; 0 when it is neither. */
static int64_t param_len(const graph_value *p, int64_t n)
{
    int64_t len = loom_tensor_desc_numel(&p->desc);
    if (len == 1 && p->desc.rank <= 1)
        return 1;
    return p->desc.rank == 1 && len == n ? n : 0;
}

static int64_t wzp_at(const graph_value *wzp, int64_t j)
{
    if (!wzp)
        return 0;
    int64_t idx = loom_tensor_desc_numel(&wzp->desc) == 1 ? 0 : j;
    return wzp->desc.dtype == LOOM_DTYPE_U8 ? ((const uint8_t *)wzp->data)[idx]
                                            : ((const int8_t *)wzp->data)[idx];
}

/* Does node M (a Mul) end a chain? Fills C. */
static int match(const qfuse *f, uint32_t m, qchain *c)
{
    const loom_graph *g = f->g;
    const graph_node *mul = &g->nodes[m];
    if (mul->def->id != LOOM_OP_MUL || mul->n_inputs != 2)
        return 0;
    memset(c, 0, sizeof *c);
    c->add = UINT32_MAX;
    for (int side = 0; side < 2; side++) {
        int32_t pc = producer(f, mul->inputs[side]), ps = producer(f, mul->inputs[1 - side]);
        if (pc < 0 || ps < 0 || g->nodes[pc].def->id != LOOM_OP_CAST ||
            g->nodes[ps].def->id != LOOM_OP_MUL)
            continue;
        const graph_node *cast = &g->nodes[pc], *smul = &g->nodes[ps];
        const loom_attr *to = loom_attr_list_get(&cast->attrs, "to");
        if (!to || to->i != 1 /* FLOAT */ || !single_use(g, cast->outputs[0]) ||
            !single_use(g, smul->outputs[0]))
            continue;
        int32_t pm = producer(f, cast->inputs[0]);
        if (pm < 0 || g->nodes[pm].def->id != LOOM_OP_MAT_MUL_INTEGER ||
            !single_use(g, g->nodes[pm].outputs[0]))
            continue;
        const graph_node *mmi = &g->nodes[pm];
        if (mmi->n_inputs < 3 || mmi->inputs[2] == LOOM_NO_VALUE)
            continue;
        int32_t pd = producer(f, mmi->inputs[0]);
        if (pd < 0 || g->nodes[pd].def->id != LOOM_OP_DYNAMIC_QUANTIZE_LINEAR ||
            mmi->inputs[0] != g->nodes[pd].outputs[0] || mmi->inputs[2] != g->nodes[pd].outputs[2])
            continue;
        const graph_node *dql = &g->nodes[pd];
        /* The scale product: x_s times a constant W_s, either order. */
        int xs_side = smul->inputs[0] == dql->outputs[1] ? 0 : smul->inputs[1] == dql->outputs[1]
                                                                   ? 1
                                                                   : -1;
        if (xs_side < 0)
            continue;
        const graph_value *w = const_of(g, mmi->inputs[1], LOOM_DTYPE_U8);
        if (!w)
            w = const_of(g, mmi->inputs[1], LOOM_DTYPE_I8);
        if (!w || w->desc.rank != 2)
            continue;
        const int64_t k = w->desc.dims[0], n = w->desc.dims[1];
        const graph_value *ws = const_of(g, smul->inputs[1 - xs_side], LOOM_DTYPE_F32);
        const graph_value *wzp = NULL;
        if (mmi->n_inputs > 3 && mmi->inputs[3] != LOOM_NO_VALUE) {
            wzp = const_of(g, mmi->inputs[3], w->desc.dtype);
            if (!wzp || !param_len(wzp, n))
                continue;
        }
        if (!ws || !param_len(ws, n))
            continue;
        /* W_q - W_zp must be an int8. */
        int fits = 1;
        for (int64_t j = 0; j < n && fits; j++) {
            const int64_t z = wzp_at(wzp, j);
            for (int64_t t = 0; t < k && fits; t++) {
                int64_t v = w->desc.dtype == LOOM_DTYPE_U8 ? ((const uint8_t *)w->data)[t * n + j]
                                                           : ((const int8_t *)w->data)[t * n + j];
                fits = v - z >= -128 && v - z <= 127;
            }
        }
        if (!fits)
            continue;
        c->dql = (uint32_t)pd;
        c->mmi = (uint32_t)pm;
        c->cast = (uint32_t)pc;
        c->smul = (uint32_t)ps;
        c->mul = m;
        c->x = dql->inputs[0];
        c->w = w;
        c->wzp = wzp;
        c->ws = ws;
        /* A bias row added right after: part of the chain. */
        loom_value y = mul->outputs[0];
        if (single_use(g, y)) {
            for (size_t i = 0; i < g->n_nodes; i++) {
                const graph_node *a = &g->nodes[i];
                if (a->def->id != LOOM_OP_ADD || a->n_inputs != 2 ||
                    (a->inputs[0] != y && a->inputs[1] != y))
                    continue;
                const graph_value *b =
                    const_of(g, a->inputs[a->inputs[0] == y ? 1 : 0], LOOM_DTYPE_F32);
                const graph_value *yv = &g->values[y];
                if (b && b->desc.rank == 1 && b->desc.dims[0] == n && yv->desc.rank >= 1 &&
                    yv->desc.dims[yv->desc.rank - 1] == n) {
                    c->add = (uint32_t)i;
                    c->bias = b;
                }
                break;
            }
        }
        return 1;
    }
    return 0;
}

static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *n, loom_value *out)
{
    qfuse *f = user;
    const uint32_t i = (uint32_t)(n - f->g->nodes);
    if (f->drop[i])
        return 2;
    if (!f->chain_at[i])
        return 0;
    const qchain *c = &f->chains[f->chain_at[i] - 1];
    loom_graph *g = graph_rebuild_dst(rc);
    const int64_t k = c->w->desc.dims[0], nn = c->w->desc.dims[1];
    int8_t *bq = malloc((size_t)(k * nn) + 1);
    float *scale = malloc((size_t)nn * sizeof *scale + 1);
    if (!bq || !scale) {
        free(bq);
        free(scale);
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing node '%s'", n->name);
        return -1;
    }
    const int per_col_scale = loom_tensor_desc_numel(&c->ws->desc) != 1;
    for (int64_t j = 0; j < nn; j++) {
        const int64_t z = wzp_at(c->wzp, j);
        for (int64_t t = 0; t < k; t++) {
            int64_t v = c->w->desc.dtype == LOOM_DTYPE_U8
                            ? ((const uint8_t *)c->w->data)[t * nn + j]
                            : ((const int8_t *)c->w->data)[t * nn + j];
            bq[t * nn + j] = (int8_t)(v - z);
        }
        scale[j] = ((const float *)c->ws->data)[per_col_scale ? j : 0];
    }
    const graph_node *mmi = &f->g->nodes[c->mmi];
    char name[300];
    int64_t bd[2] = {k, nn}, sd[1] = {nn};
    snprintf(name, sizeof name, "%s.weight_int8", mmi->name);
    loom_value vb = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                  LOOM_DTYPE_I8, 2, bd, bq);
    snprintf(name, sizeof name, "%s.weight_scale", mmi->name);
    loom_value vs = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                  LOOM_DTYPE_F32, 1, sd, scale);
    free(bq);
    free(scale);
    loom_value ins[4] = {graph_rebuild_map(rc, c->x), vb, vs,
                         c->bias ? graph_rebuild_map(rc, (loom_value)(c->bias - f->g->values))
                                 : LOOM_NO_VALUE};
    loom_attr at[2] = {loom_attr_int("tensor_asymmetric", 1),
                       loom_attr_string("activation", c->act)};
    if (loom_graph_op(g, "MatMulInt8Dynamic", mmi->name, ins, c->bias ? 4 : 3, at,
                      *c->act ? 2 : 1, out, 1) != LOOM_OK)
        return -1;
    return 1;
}

loom_status pass_fuse_quantized_matmul(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                       char *summary, size_t summary_len)
{
    *out = NULL;
    int any = 0;
    for (size_t i = 0; i < in->n_nodes && !any; i++)
        any = in->nodes[i].def->id == LOOM_OP_MAT_MUL_INTEGER;
    if (!any) {
        snprintf(summary, summary_len, "no MatMulInteger");
        return LOOM_OK;
    }
    qfuse f = {.g = in};
    f.producer_of = malloc((in->n_values + 1) * sizeof *f.producer_of);
    f.chain_at = calloc(in->n_nodes + 1, sizeof *f.chain_at);
    f.drop = calloc(in->n_nodes + 1, 1);
    f.chains = malloc((in->n_nodes + 1) * sizeof *f.chains);
    int32_t *reader = ctx->int8_epilogue ? malloc((in->n_values + 1) * sizeof *reader) : NULL;
    size_t n_gelu = 0;
    loom_status st = LOOM_OK;
    if (!f.producer_of || !f.chain_at || !f.drop || !f.chains || (ctx->int8_epilogue && !reader)) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing graph '%s'", in->name);
        goto done;
    }
    for (size_t v = 0; v < in->n_values; v++)
        f.producer_of[v] = in->values[v].kind == GRAPH_VALUE_NODE ? in->values[v].producer : -1;
    if (reader)
        passes_first_readers(in, reader);
    for (size_t i = 0; i < in->n_nodes; i++) {
        qchain c;
        if (!match(&f, (uint32_t)i, &c) || f.drop[c.mmi] || f.drop[c.cast] || f.drop[c.smul])
            continue;
        c.act = "";
        uint32_t last = c.add != UINT32_MAX ? c.add : c.mul;
        f.drop[c.mmi] = f.drop[c.cast] = f.drop[c.smul] = 1;
        if (c.add != UINT32_MAX)
            f.drop[c.mul] = 1;
        int32_t gelu[5];
        const char *act = "";
        const int ng =
            reader ? passes_gelu_after(in, reader, NULL, in->nodes[last].outputs[0], gelu, &act)
                   : 0;
        int free_gelu = ng > 0;
        for (int t = 0; t < ng; t++)
            free_gelu &= !f.drop[gelu[t]] && !f.chain_at[gelu[t]];
        if (free_gelu) {
            f.drop[last] = 1;
            for (int t = 0; t + 1 < ng; t++)
                f.drop[gelu[t]] = 1;
            last = (uint32_t)gelu[ng - 1];
            c.act = act;
            n_gelu++;
        }
        f.chains[f.n_chains++] = c;
        f.chain_at[last] = (uint32_t)f.n_chains;
    }
    /* A DynamicQuantizeLinear goes when every reader of its outputs went. */
    size_t dropped_dql = 0;
    for (size_t i = 0; i < in->n_nodes && f.n_chains; i++) {
        const graph_node *d = &in->nodes[i];
        if (d->def->id != LOOM_OP_DYNAMIC_QUANTIZE_LINEAR)
            continue;
        int all = 1;
        for (uint32_t o = 0; o < d->n_outputs && all; o++) {
            loom_value v = d->outputs[o];
            if (in->values[v].output_index >= 0)
                all = 0;
            for (size_t j = 0; j < in->n_nodes && all; j++)
                for (uint32_t t = 0; t < in->nodes[j].n_inputs && all; t++)
                    if (in->nodes[j].inputs[t] == v && !f.drop[j])
                        all = 0;
        }
        if (all) {
            f.drop[i] = 1;
            dropped_dql++;
        }
    }
    if (!f.n_chains) {
        snprintf(summary, summary_len, "nothing fused (no DynamicQuantizeLinear + MatMulInteger "
                                       "chain with constant weights)");
        goto done;
    }
    loom_graph *g;
    st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &f, &g);
    if (st != LOOM_OK)
        goto done;
    snprintf(summary, summary_len,
             "%zu DynamicQuantizeLinear+MatMulInteger chains into MatMulInt8Dynamic (%zu shared "
             "DynamicQuantizeLinear removed, %zu GELU fused)", f.n_chains, dropped_dql, n_gelu);
    *out = g;
done:
    free(reader);
    free(f.producer_of);
    free(f.chain_at);
    free(f.drop);
    free(f.chains);
    return st;
}
