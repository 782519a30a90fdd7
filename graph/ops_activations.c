/*
 * Activation operators of the registry: Relu, LeakyRelu, Sigmoid, Tanh, Gelu, HardSigmoid,
 * HardSwish, Softplus, Elu, Selu, PRelu, Softmax and LogSoftmax. Shape and dtype inference,
 * attribute canonicalisation (graph/ops.h has the contract) and cost.
 *
 * CANONICAL ATTRIBUTES (besides those graph/ops.h lists for LeakyRelu, Gelu and Softmax):
 *   HardSigmoid          alpha:f beta:f
 *   Elu                  alpha:f
 *   Selu                 alpha:f gamma:f
 *   LogSoftmax           axis:i
 *   HardSwish, Softplus, PRelu: no attributes.
 *
 * Cost: a few FLOPs per output element; transcendental functions count
 * LOOM_FLOPS_TRANSCENDENTAL each. Bytes are the inputs read once and the outputs written once.
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

#define T LOOM_FLOPS_TRANSCENDENTAL

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

static loom_status infer_float_unary(loom_infer_ctx *ctx)
{
    return loom_ops_unary_no_attrs(ctx, LOOM_DTS_FLOAT);
}

static loom_status infer_leaky_relu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    float alpha = loom_infer_get_float(ctx, "alpha", 0.01f);
    if ((st = loom_infer_set_float(ctx, "alpha", alpha)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static loom_status infer_gelu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"approximate", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const char *approx = loom_infer_get_string(ctx, "approximate", "none");
    if (strcmp(approx, "none") != 0 && strcmp(approx, "tanh") != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'approximate' is '%s'; expected 'none' or 'tanh'",
                               approx);
    /* Copy first: APPROX may point into the attribute the setter replaces. */
    const char *canon = strcmp(approx, "tanh") == 0 ? "tanh" : "none";
    if ((st = loom_infer_set_string(ctx, "approximate", canon)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static void cost_one(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 1.0); }

static void cost_two(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 2.0); }

static void cost_transcendental(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, T);
}

/* 1 / (1 + exp(-x)): one exp, an add and a divide. */
static void cost_sigmoid(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, T + 2); }

/* 0.5 x (1 + erf(x / sqrt 2)) or its tanh form: one transcendental and about five operations. */
static void cost_gelu(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, T + 5); }

/* A float unary op whose float attributes NAMES (NULL-terminated) default to DEFAULTS. */
static loom_status unary_float_attrs(loom_infer_ctx *ctx, const char *const *names,
                                     const float *defaults)
{
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    for (size_t k = 0; names[k]; k++) {
        float v = loom_infer_get_float(ctx, names[k], defaults[k]);
        if ((st = loom_infer_set_float(ctx, names[k], v)) != LOOM_OK)
            return st;
    }
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static loom_status infer_hard_sigmoid(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "beta", NULL};
    static const float defaults[] = {0.2f, 0.5f};
    return unary_float_attrs(ctx, names, defaults);
}

static loom_status infer_elu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", NULL};
    static const float defaults[] = {1.0f};
    return unary_float_attrs(ctx, names, defaults);
}

static loom_status infer_selu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "gamma", NULL};
    static const float defaults[] = {1.67326319217681884765625f, 1.05070102214813232421875f};
    return unary_float_attrs(ctx, names, defaults);
}

static void cost_four(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 4.0); }

/* A transcendental plus a compare and a multiply or two. */
static void cost_transcendental_plus(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, T + 3.0);
}

static loom_status infer_softmax(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "input")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), x->rank, &axis)) !=
            LOOM_OK ||
        (st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* Per element: the max, a subtract, an exp, the sum and a multiply by the reciprocal. */
static void cost_softmax(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) * (T + 4.0);
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

static loom_status infer_log_softmax(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_FLOAT));
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t axis;
    TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), x->rank, &axis));
    TRY(loom_infer_set_int(ctx, "axis", axis));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* Per element: the max, a subtract, an exp, the sum; a log per row (ignored). */
static void cost_log_softmax(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_io_flops(node, cost, T + 3.0);
}

static loom_status infer_prelu(loom_infer_ctx *ctx)
{
    TRY(loom_infer_check_attrs(ctx, k_no_names, k_no_kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "slope"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT | LOOM_DTS_INDEX));
    TRY(loom_ops_same_dtype(ctx, 1, "slope", 0));
    const loom_tensor_desc *x = &ctx->inputs[0], *s = &ctx->inputs[1];
    loom_tensor_desc b;
    int ok = s->rank <= x->rank && loom_broadcast_shapes(s, x, &b) && b.rank == x->rank;
    for (uint32_t d = 0; ok && d < x->rank; d++)
        ok = b.dims[d] == x->dims[d];
    if (!ok) {
        char a[128], c[128];
        return loom_infer_fail(ctx, INVALID,
                               "slope of shape %s does not broadcast to X's shape %s",
                               loom_dims_format(s->rank, s->dims, a, sizeof a),
                               loom_dims_format(x->rank, x->dims, c, sizeof c));
    }
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static void cost_prelu(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_io_flops(node, cost, 2.0);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_relu, LOOM_OP_RELU, "Relu", 1, 1, 1, 1, infer_float_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_leaky_relu, LOOM_OP_LEAKY_RELU, "LeakyRelu",
             1, 1, 1, 1, infer_leaky_relu, cost_two, 0);
LOOM_OPS_DEF(loom_op_def_sigmoid, LOOM_OP_SIGMOID, "Sigmoid",
             1, 1, 1, 1, infer_float_unary, cost_sigmoid, 0);
LOOM_OPS_DEF(loom_op_def_tanh, LOOM_OP_TANH, "Tanh",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_gelu, LOOM_OP_GELU, "Gelu", 1, 1, 1, 1, infer_gelu, cost_gelu, 0);
/* max(0, min(1, alpha x + beta)): a multiply-add and two comparisons. */
LOOM_OPS_DEF(loom_op_def_hard_sigmoid, LOOM_OP_HARD_SIGMOID, "HardSigmoid",
             1, 1, 1, 1, infer_hard_sigmoid, cost_four, 0);
/* x * max(0, min(1, x/6 + 1/2)). */
LOOM_OPS_DEF(loom_op_def_hard_swish, LOOM_OP_HARD_SWISH, "HardSwish",
             1, 1, 1, 1, infer_float_unary, cost_four, 0);
/* log(1 + exp(x)): two transcendentals, counted as one plus the extra work. */
LOOM_OPS_DEF(loom_op_def_softplus, LOOM_OP_SOFTPLUS, "Softplus",
             1, 1, 1, 1, infer_float_unary, cost_transcendental_plus, 0);
LOOM_OPS_DEF(loom_op_def_elu, LOOM_OP_ELU, "Elu",
             1, 1, 1, 1, infer_elu, cost_transcendental_plus, 0);
LOOM_OPS_DEF(loom_op_def_selu, LOOM_OP_SELU, "Selu",
             1, 1, 1, 1, infer_selu, cost_transcendental_plus, 0);
LOOM_OPS_DEF(loom_op_def_prelu, LOOM_OP_PRELU, "PRelu", 2, 2, 1, 1, infer_prelu, cost_prelu, 0);
LOOM_OPS_DEF(loom_op_def_softmax, LOOM_OP_SOFTMAX, "Softmax",
             1, 1, 1, 1, infer_softmax, cost_softmax, 0);
LOOM_OPS_DEF(loom_op_def_log_softmax, LOOM_OP_LOG_SOFTMAX, "LogSoftmax",
             1, 1, 1, 1, infer_log_softmax, cost_log_softmax, 0);
