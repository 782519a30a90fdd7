/*
 * Normalisations of the registry: LayerNormalization, BatchNormalization (inference form),
 * InstanceNormalization, LRN and MeanVarianceNormalization. Shape and dtype inference,
 * attribute canonicalisation (graph/ops.h) and cost. Every epsilon must be finite and
 * non-negative (loom_ops_epsilon).
 *
 * CANONICAL ATTRIBUTES (besides those graph/ops.h lists):
 *   InstanceNormalization epsilon:f
 *   LRN                  alpha:f beta:f bias:f size:i (over the channel axis 1; the window is
 *                        [c - (size-1)/2, c + size/2], rounded down then up)
 *   MeanVarianceNormalization axes:ints (sorted, unique, non-negative; default [0, 2, 3]):
 *                        Y = (X - mean) / (sqrt(mean(X^2) - mean^2) + 1e-9) over AXES
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether P's dims, leading 1s dropped, equal the dims of X from AXIS on, leading 1s dropped:
 * then P has exactly one element per normalised position, laid out the same way. */
static int same_trailing(const loom_tensor_desc *p, const loom_tensor_desc *x, uint32_t axis)
{
    uint32_t i = 0, j = axis;
    while (i < p->rank && p->dims[i] == 1)
        i++;
    while (j < x->rank && x->dims[j] == 1)
        j++;
    if (p->rank - i != x->rank - j)
        return 0;
    for (; i < p->rank; i++, j++)
        if (p->dims[i] != x->dims[j])
            return 0;
    return 1;
}

static loom_status infer_layer_norm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "epsilon", "stash_type", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axis", "epsilon", NULL};
    static const char *const inputs[] = {"X", "Scale", "B"};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "Scale")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), x->rank, &axis)) !=
        LOOM_OK)
        return st;
    /* stash_type is the precision of the statistics; kernels keep them in f32 at least, which
     * is what stash_type=1 asks for, and no less than any other value does. */
    int64_t stash = loom_infer_get_int(ctx, "stash_type", 1);
    if (stash != LOOM_DTYPE_F32 && stash != LOOM_DTYPE_F16 && stash != LOOM_DTYPE_BF16)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'stash_type' is %lld; expected a float dtype",
                               (long long)stash);
    for (uint32_t i = 1; i <= 2; i++) {
        if (!loom_ops_has(ctx, i))
            continue;
        if ((st = loom_ops_same_dtype(ctx, i, inputs[i], 0)) != LOOM_OK)
            return st;
        if (!same_trailing(&ctx->inputs[i], x, (uint32_t)axis)) {
            char a[160], b[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) has shape %s; expected X's dims from axis "
                                   "%lld, %s",
                                   i, inputs[i],
                                   loom_dims_format(ctx->inputs[i].rank, ctx->inputs[i].dims, a,
                                                    sizeof a),
                                   (long long)axis,
                                   loom_dims_format(x->rank - (uint32_t)axis,
                                                    x->dims + axis, b, sizeof b));
        }
    }
    float eps;
    if ((st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK ||
        (st = loom_ops_epsilon(ctx, 1e-5f, &eps)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    /* Mean and InvStdDev keep X's rank with 1s from AXIS on; their type U is float for the
     * stash_type Loom computes in. */
    int64_t stat[LOOM_MAX_RANK];
    for (uint32_t k = 0; k < x->rank; k++)
        stat[k] = k < (uint32_t)axis ? x->dims[k] : 1;
    for (uint32_t o = 1; o < ctx->n_outputs && o < 3; o++)
        loom_ops_set_output(ctx, o, LOOM_DTYPE_F32, x->rank, stat);
    return loom_ops_finish(ctx);
}

/* Per element: mean and variance (3), normalise (2), scale and bias (2), and slack (1). */
static void cost_layer_norm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) * 8.0;
}

static loom_status infer_batch_norm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"epsilon", "momentum", "training_mode", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"epsilon", NULL};
    static const char *const inputs[] = {"X", "scale", "B", "input_mean", "input_var"};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK)
        return st;
    for (uint32_t i = 0; i < 5; i++)
        if ((st = loom_ops_require(ctx, i, inputs[i])) != LOOM_OK)
            return st;
    if ((st = loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    /* momentum only matters when training, which Loom does not do. */
    if (loom_infer_get_int(ctx, "training_mode", 0) != 0)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "training_mode=1 is not supported: Loom runs inference only");
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 2)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (X) has rank %u; expected at least 2 ([N, C, ...])",
                               x->rank);
    for (uint32_t i = 1; i < 5; i++) {
        const loom_tensor_desc *p = &ctx->inputs[i];
        /* ONNX lets the parameters have their own float type; Loom's kernels read them in X's,
         * which is what every exporter writes. */
        if ((st = loom_ops_same_dtype(ctx, i, inputs[i], 0)) != LOOM_OK)
            return st;
        if (p->rank != 1 || p->dims[0] != x->dims[1]) {
            char sp[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) has shape %s; expected [%lld] (X's channels)",
                                   i, inputs[i], loom_dims_format(p->rank, p->dims, sp, sizeof sp),
                                   (long long)x->dims[1]);
        }
    }
    float eps;
    if ((st = loom_ops_epsilon(ctx, 1e-5f, &eps)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* A multiply-add per element once scale, bias and the statistics are folded per channel. */
static void cost_batch_norm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) * 2.0;
}

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static void cost_io_flops(const loom_node_desc *node, loom_op_cost *cost, double per_out)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->outputs[0]) * per_out;
}

static loom_status infer_instance_norm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"epsilon", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT};
    static const char *const inputs[] = {"input", "scale", "B"};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    for (uint32_t i = 0; i < 3; i++)
        TRY(loom_ops_require(ctx, i, inputs[i]));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_FLOAT));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 3)
        return loom_infer_fail(ctx, INVALID,
                               "input 0 (input) has rank %u; expected at least 3 ([N, C, D...])",
                               x->rank);
    for (uint32_t i = 1; i < 3; i++) {
        TRY(loom_ops_same_dtype(ctx, i, inputs[i], 0));
        const loom_tensor_desc *p = &ctx->inputs[i];
        if (p->rank != 1 || p->dims[0] != x->dims[1])
            return loom_infer_fail(ctx, INVALID, "input %u (%s) must have shape [%lld]", i,
                                   inputs[i], (long long)x->dims[1]);
    }
    float eps;
    TRY(loom_ops_epsilon(ctx, 1e-5f, &eps));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static void cost_instance_norm(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_io_flops(node, cost, 6.0);
}

static loom_status infer_lrn(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "beta", "bias", "size", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT,
                                           LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 3)
        return loom_infer_fail(ctx, INVALID,
                               "input 0 (X) has rank %u; expected at least 3 ([N, C, D...])",
                               x->rank);
    const int64_t size = loom_infer_get_int(ctx, "size", 0);
    if (size < 1)
        return loom_infer_fail(ctx, INVALID, "attribute 'size' must be given and positive");
    const float alpha = loom_infer_get_float(ctx, "alpha", 1e-4f),
                beta = loom_infer_get_float(ctx, "beta", 0.75f),
                bias = loom_infer_get_float(ctx, "bias", 1.0f);
    if (!isfinite(alpha) || !isfinite(beta) || !isfinite(bias))
        return loom_infer_fail(ctx, INVALID, "alpha, beta and bias must be finite");
    TRY(loom_infer_set_float(ctx, "alpha", alpha));
    TRY(loom_infer_set_float(ctx, "beta", beta));
    TRY(loom_infer_set_float(ctx, "bias", bias));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* Per output: SIZE multiply-adds of the square sum and a power. */
static void cost_lrn(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_io_flops(node, cost,
                  2.0 * (double)loom_node_attr_int(node, "size", 1) + LOOM_FLOPS_TRANSCENDENTAL);
}

static loom_status infer_mvn(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axes", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT));
    const loom_tensor_desc *x = &ctx->inputs[0];
    static const int64_t def_axes[3] = {0, 2, 3};
    const int64_t *given;
    size_t n = loom_infer_get_ints(ctx, "axes", &given);
    const int64_t *src = n ? given : def_axes;
    if (!n)
        n = 3;
    if (n > x->rank)
        return loom_infer_fail(ctx, INVALID, "%zu axes for an input of rank %u", n, x->rank);
    int seen[LOOM_MAX_RANK] = {0};
    for (size_t i = 0; i < n; i++) {
        int64_t a;
        TRY(loom_ops_axis(ctx, "axes", src[i], x->rank, &a));
        if (seen[a])
            return loom_infer_fail(ctx, INVALID, "axis %lld is repeated", (long long)src[i]);
        seen[a] = 1;
    }
    int64_t axes[LOOM_MAX_RANK];
    size_t k = 0;
    for (uint32_t d = 0; d < x->rank; d++)
        if (seen[d])
            axes[k++] = d;
    TRY(loom_infer_set_ints(ctx, "axes", k, axes));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static void cost_mvn(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_io_flops(node, cost, 6.0);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_layer_normalization, LOOM_OP_LAYER_NORMALIZATION, "LayerNormalization",
             2, 3, 1, 3, infer_layer_norm, cost_layer_norm, 0);
/* Inference form only: the running statistics outputs of training are not produced. */
LOOM_OPS_DEF(loom_op_def_batch_normalization, LOOM_OP_BATCH_NORMALIZATION, "BatchNormalization",
             5, 5, 1, 1, infer_batch_norm, cost_batch_norm, 0);
LOOM_OPS_DEF(loom_op_def_instance_norm, LOOM_OP_INSTANCE_NORMALIZATION, "InstanceNormalization",
             3, 3, 1, 1, infer_instance_norm, cost_instance_norm, 0);
LOOM_OPS_DEF(loom_op_def_lrn, LOOM_OP_LRN, "LRN", 1, 1, 1, 1, infer_lrn, cost_lrn, 0);
LOOM_OPS_DEF(loom_op_def_mean_variance_normalization, LOOM_OP_MEAN_VARIANCE_NORMALIZATION,
             "MeanVarianceNormalization", 1, 1, 1, 1, infer_mvn, cost_mvn, 0);
