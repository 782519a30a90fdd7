/*
 * Loom's fused operators (not ONNX), made by passes/fuse_epilogue.c: a Conv, MatMul or Gemm with
 * its epilogue applied while the output is still in cache,
 *
 *   FusedConv    X, W, B?, Z?      Y = act(Conv(X, W, B) + Z)
 *   FusedMatMul  A, B, bias?, Z?   Y = act(MatMul(A, B) + bias + Z), bias [N] (N: Y's last dim)
 *   FusedGemm    A, B, C?, Z?      Y = act(Gemm(A, B, C) + Z)
 *
 * Z (the residual) has Y's shape and dtype. CANONICAL ATTRIBUTES: the base operator's (graph/ops.h)
 * plus
 *   activation        s  "" (none), Relu, LeakyRelu, Clip, HardSigmoid, HardSwish, Sigmoid, SiLU
 *                        (x * Sigmoid(x)), Gelu (erf), GeluTanh
 *   activation_alpha  f  LeakyRelu's alpha, Clip's min, HardSigmoid's alpha (default 0)
 *   activation_beta   f  Clip's max, HardSigmoid's beta (default 0)
 *   fused_ops         s  what the node was made of, for people ("Conv+Add+HardSwish"): the plan
 *                        shows it as the node's op
 * and for FusedConv on 2-D images a max pooling of the activated output, Y = MaxPool(act(...)):
 *   pool              s  "" (none) or MaxPool
 *   pool_kernel       ii its kernel [kh, kw]
 *   pool_strides      ii its strides [sh, sw] (default the kernel); no padding, no dilation,
 *                        floor rounding (ONNX MaxPool with those attributes)
 * Shape inference is the base operator's on inputs 0..2 (Z has the conv's shape), then the
 * pooling's; cost is the base's plus the epilogue's few operations per conv output element and
 * the pooling's comparisons.
 */
#include "ops_defs.h"

#include <stdio.h>
#include <string.h>

static const char *const k_acts[] = {"",        "Relu",    "LeakyRelu", "Clip", "HardSigmoid",
                                     "HardSwish", "Sigmoid", "SiLU",      "Gelu", "GeluTanh",
                                     NULL};

/* FusedConv's pooling attributes (pool, pool_kernel, pool_strides) into K and S; 0 when there
 * is none, 1 when there is, -1 (message in CTX) when they are malformed. */
static int fused_pool_attrs(loom_infer_ctx *ctx, int64_t k[2], int64_t s[2])
{
    const loom_attr *a = loom_attr_list_get(ctx->attrs, "pool");
    if (a && (a->kind != LOOM_ATTR_STRING || !a->s ||
              (a->s[0] && strcmp(a->s, "MaxPool") != 0))) {
        loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                        "attribute 'pool' must be \"MaxPool\" or empty");
        return -1;
    }
    if (!a || !a->s[0])
        return 0;
    static const char *const names[] = {"pool_kernel", "pool_strides"};
    for (int i = 0; i < 2; i++) {
        const loom_attr *v = loom_attr_list_get(ctx->attrs, names[i]);
        int64_t *d = i ? s : k;
        if (!v && i == 1) {
            s[0] = k[0];
            s[1] = k[1];
            continue;
        }
        if (!v || v->kind != LOOM_ATTR_INTS || v->count != 2 || v->ints[0] < 1 ||
            v->ints[1] < 1) {
            loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                            "attribute '%s' must be two positive ints", names[i]);
            return -1;
        }
        d[0] = v->ints[0];
        d[1] = v->ints[1];
    }
    return 1;
}

static loom_status infer_fused(loom_infer_ctx *ctx, const loom_op_def *base)
{
    /* The epilogue's attributes are taken out, the base infers and canonicalises the rest, and
     * they are put back. */
    char act[32] = "", ops[128] = "";
    const loom_attr *a = loom_attr_list_get(ctx->attrs, "activation");
    if (a) {
        if (a->kind != LOOM_ATTR_STRING || !a->s)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'activation' must be a string");
        size_t k = 0;
        while (k_acts[k] && strcmp(k_acts[k], a->s) != 0)
            k++;
        if (!k_acts[k])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'activation' is '%.40s'; expected one of Relu, "
                                   "LeakyRelu, Clip, HardSigmoid, HardSwish, Sigmoid, SiLU, "
                                   "Gelu, GeluTanh (or empty)", a->s);
        snprintf(act, sizeof act, "%s", a->s);
    }
    float alpha = 0.0f, beta = 0.0f;
    static const char *const fnames[] = {"activation_alpha", "activation_beta"};
    for (int i = 0; i < 2; i++) {
        const loom_attr *f = loom_attr_list_get(ctx->attrs, fnames[i]);
        if (f && f->kind != LOOM_ATTR_FLOAT)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute '%s' must be a float", fnames[i]);
        if (f)
            *(i ? &beta : &alpha) = f->f;
    }
    const loom_attr *fo = loom_attr_list_get(ctx->attrs, "fused_ops");
    if (fo && (fo->kind != LOOM_ATTR_STRING || !fo->s))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'fused_ops' must be a string");
    snprintf(ops, sizeof ops, "%s", fo ? fo->s : "");
    int64_t pk[2] = {1, 1}, ps[2] = {1, 1};
    const int pool = base == &loom_op_def_conv ? fused_pool_attrs(ctx, pk, ps) : 0;
    if (pool < 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_infer_remove(ctx, "pool");
    loom_infer_remove(ctx, "pool_kernel");
    loom_infer_remove(ctx, "pool_strides");
    loom_infer_remove(ctx, "activation");
    loom_infer_remove(ctx, "activation_alpha");
    loom_infer_remove(ctx, "activation_beta");
    loom_infer_remove(ctx, "fused_ops");

    loom_infer_ctx b = *ctx;
    b.n_inputs = ctx->n_inputs < 3 ? ctx->n_inputs : (base == &loom_op_def_matmul ? 2 : 3);
    loom_status st = base->infer(&b);
    ctx->need_constant = b.need_constant;
    if (st != LOOM_OK)
        return st;
    const loom_tensor_desc *y = &ctx->outputs[0];
    if (base == &loom_op_def_matmul && loom_ops_has(ctx, 2)) {
        const loom_tensor_desc *bias = &ctx->inputs[2];
        int64_t n = y->rank ? y->dims[y->rank - 1] : 1;
        if (bias->dtype != y->dtype || bias->rank != 1 || bias->dims[0] != n)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (bias) must be [%lld] of the output's dtype",
                                   (long long)n);
    }
    if (loom_ops_has(ctx, 3)) {
        const loom_tensor_desc *z = &ctx->inputs[3];
        if (z->dtype != y->dtype || z->rank != y->rank ||
            memcmp(z->dims, y->dims, y->rank * sizeof y->dims[0]) != 0) {
            char sz[160], sy[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 3 (Z) has shape %s; expected the output's %s",
                                   loom_dims_format(z->rank, z->dims, sz, sizeof sz),
                                   loom_dims_format(y->rank, y->dims, sy, sizeof sy));
        }
    }
    if (pool) {
        loom_tensor_desc *yp = &ctx->outputs[0];
        if (yp->rank != 4 || yp->dims[2] < pk[0] || yp->dims[3] < pk[1]) {
            char sy[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "pool: the conv's output %s is not a 2-D image of at least "
                                   "the pool kernel [%lld,%lld]",
                                   loom_dims_format(yp->rank, yp->dims, sy, sizeof sy),
                                   (long long)pk[0], (long long)pk[1]);
        }
        for (int i = 0; i < 2; i++)
            yp->dims[2 + i] = (yp->dims[2 + i] - pk[i]) / ps[i] + 1;
        if ((st = loom_infer_set_string(ctx, "pool", "MaxPool")) != LOOM_OK ||
            (st = loom_infer_set_ints(ctx, "pool_kernel", 2, pk)) != LOOM_OK ||
            (st = loom_infer_set_ints(ctx, "pool_strides", 2, ps)) != LOOM_OK)
            return st;
    }
    if ((st = loom_infer_set_string(ctx, "activation", act)) != LOOM_OK ||
        (st = loom_infer_set_float(ctx, "activation_alpha", alpha)) != LOOM_OK ||
        (st = loom_infer_set_float(ctx, "activation_beta", beta)) != LOOM_OK ||
        (st = loom_infer_set_string(ctx, "fused_ops", ops)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

static loom_status infer_fused_conv(loom_infer_ctx *ctx)
{
    return infer_fused(ctx, &loom_op_def_conv);
}

static loom_status infer_fused_matmul(loom_infer_ctx *ctx)
{
    return infer_fused(ctx, &loom_op_def_matmul);
}

static loom_status infer_fused_gemm(loom_infer_ctx *ctx)
{
    return infer_fused(ctx, &loom_op_def_gemm);
}

static void cost_fused(const loom_node_desc *node, loom_op_cost *cost, const loom_op_def *base)
{
    loom_node_desc b = *node;
    if (b.n_inputs > 3)
        b.n_inputs = 3;
    base->cost(&b, cost);
    const double flops = cost->flops;
    loom_ops_cost_io(node, cost); /* the residual is read too */
    cost->flops = flops + 4.0 * loom_ops_numel(&node->outputs[0]);
}

static void cost_fused_conv(const loom_node_desc *node, loom_op_cost *cost)
{
    const loom_attr *pool = loom_node_attr(node, "pool");
    const loom_attr *k = loom_node_attr(node, "pool_kernel"), *s = loom_node_attr(node, "pool_strides");
    if (!pool || pool->kind != LOOM_ATTR_STRING || !pool->s || !pool->s[0] || !k || !s ||
        k->count != 2 || s->count != 2 || node->outputs[0].rank != 4) {
        cost_fused(node, cost, &loom_op_def_conv);
        return;
    }
    /* The conv's work is over the rows and columns the pooling reads; the output written is the
     * pooled one. */
    loom_node_desc b = *node;
    loom_tensor_desc y = node->outputs[0];
    for (int i = 0; i < 2; i++)
        y.dims[2 + i] = (y.dims[2 + i] - 1) * s->ints[i] + k->ints[i];
    b.outputs = &y;
    cost_fused(&b, cost, &loom_op_def_conv);
    const double flops = cost->flops;
    loom_ops_cost_io(node, cost);
    cost->flops = flops + loom_ops_numel(&y) * 1.0;
}

static void cost_fused_matmul(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_fused(node, cost, &loom_op_def_matmul);
}

static void cost_fused_gemm(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_fused(node, cost, &loom_op_def_gemm);
}

LOOM_OPS_DEF(loom_op_def_fused_conv, LOOM_OP_FUSED_CONV, "FusedConv", 2, 4, 1, 1,
             infer_fused_conv, cost_fused_conv, 0);
LOOM_OPS_DEF(loom_op_def_fused_matmul, LOOM_OP_FUSED_MAT_MUL, "FusedMatMul", 2, 4, 1, 1,
             infer_fused_matmul, cost_fused_matmul, 0);
LOOM_OPS_DEF(loom_op_def_fused_gemm, LOOM_OP_FUSED_GEMM, "FusedGemm", 2, 4, 1, 1,
             infer_fused_gemm, cost_fused_gemm, 0);
