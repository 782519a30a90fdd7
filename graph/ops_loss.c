/*
 * Losses of the registry: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (ONNX opset
 * 13). Shape and dtype inference, attribute canonicalisation and cost. Exported models carry
 * them when a training graph is exported whole, and the ONNX backend suite expands
 * SoftmaxCrossEntropyLoss into NegativeLogLikelihoodLoss.
 *
 * Shapes: scores/input X [N, C, d1..dk], target [N, d1..dk] (int32/int64), weight [C].
 * Output: [N, d1..dk] for reduction "none", else a scalar. SoftmaxCrossEntropyLoss's optional
 * second output is log_prob, X's shape.
 *
 * CANONICAL ATTRIBUTES:
 *   NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
 *                        reduction:s ("none" | "sum" | "mean") ignore_index:i (only when given:
 *                        a target equal to it contributes 0 and weighs 0 in the mean)
 */
#include "ops_defs.h"

#include <stdint.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static loom_status infer_loss(loom_infer_ctx *ctx, int softmax)
{
    static const char *const names[] = {"reduction", "ignore_index", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING, LOOM_ATTR_INT};
    const char *xname = softmax ? "scores" : "input", *tname = softmax ? "labels" : "target";
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, xname));
    TRY(loom_ops_require(ctx, 1, tname));
    TRY(loom_ops_check_dtype(ctx, 0, xname, LOOM_DTS_FLOAT));
    TRY(loom_ops_check_dtype(ctx, 1, tname, LOOM_DTS_INDEX));
    const loom_tensor_desc *x = &ctx->inputs[0], *t = &ctx->inputs[1];
    if (x->rank < 2)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (%s) has rank %u; it needs [N, C, ...] (rank >= 2)",
                               xname, x->rank);
    int same = t->rank + 1 == x->rank && t->dims[0] == x->dims[0];
    for (uint32_t d = 2; same && d < x->rank; d++)
        same = t->dims[d - 1] == x->dims[d];
    if (!same)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 1 (%s) must have input 0's shape without its class "
                               "dimension 1",
                               tname);
    if (loom_ops_has(ctx, 2)) {
        TRY(loom_ops_same_dtype(ctx, 2, "weights", 0));
        const loom_tensor_desc *w = &ctx->inputs[2];
        if (w->rank != 1 || w->dims[0] != x->dims[1])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (weights) must be 1-D with %lld (C) values",
                                   (long long)x->dims[1]);
    }
    const char *red = loom_infer_get_string(ctx, "reduction", "mean");
    if (strcmp(red, "none") && strcmp(red, "sum") && strcmp(red, "mean"))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "reduction '%s' is not one of none, sum, mean", red);
    int none = !strcmp(red, "none");
    TRY(loom_infer_set_string(ctx, "reduction", red));
    if (none)
        loom_ops_set_output(ctx, 0, x->dtype, t->rank, t->dims);
    else
        loom_ops_set_output(ctx, 0, x->dtype, 0, NULL);
    if (ctx->n_outputs > 1) {
        if (!softmax)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "makes one output");
        loom_ops_set_output(ctx, 1, x->dtype, x->rank, x->dims);
    }
    return loom_ops_finish(ctx);
}

static loom_status infer_nll(loom_infer_ctx *ctx)
{
    return infer_loss(ctx, 0);
}

static loom_status infer_sce(loom_infer_ctx *ctx)
{
    return infer_loss(ctx, 1);
}

/* NLL reads one score per target; SoftmaxCrossEntropy also a log-softmax over every score
 * (a max, an exp and an add per score, a log per row). */
static void cost_loss(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = 2.0 * loom_ops_numel(&node->inputs[1]);
    if (node->op != LOOM_OP_NEGATIVE_LOG_LIKELIHOOD_LOSS)
        cost->flops += (2.0 + LOOM_FLOPS_TRANSCENDENTAL) * loom_ops_numel(&node->inputs[0]);
}

LOOM_OPS_DEF(loom_op_def_nll_loss, LOOM_OP_NEGATIVE_LOG_LIKELIHOOD_LOSS,
             "NegativeLogLikelihoodLoss", 2, 3, 1, 1, infer_nll, cost_loss, 0);
LOOM_OPS_DEF(loom_op_def_softmax_cross_entropy_loss, LOOM_OP_SOFTMAX_CROSS_ENTROPY_LOSS,
             "SoftmaxCrossEntropyLoss", 2, 3, 1, 2, infer_sce, cost_loss, 0);
