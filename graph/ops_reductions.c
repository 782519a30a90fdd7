/*
 * Reductions of the registry: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd,
 * ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax and ArgMin. Shape
 * and dtype inference, attribute canonicalisation (graph/ops.h) and cost.
 *
 * CANONICAL ATTRIBUTES (ReduceMean/Sum/Max as graph/ops.h lists them):
 *   ReduceMin/Prod/L1/L2/LogSum/LogSumExp/SumSquare
 *                        axes:ints keepdims:i (as ReduceMax)
 *   ArgMax, ArgMin       axis:i keepdims:i select_last_index:i
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

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Axes come from constant input 1 (opset 18) or the 'axes' attribute (earlier opsets, and the
 * canonical form); when both are there the node is canonical and the attribute wins. No axes
 * reduce everything, unless noop_with_empty_axes makes the node an identity (canonical: an
 * empty 'axes'). */
static loom_status infer_reduce(loom_infer_ctx *ctx, uint32_t mask)
{
    static const char *const names[] = {"axes", "keepdims", "noop_with_empty_axes", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axes", "keepdims", NULL};
    loom_status st;
    int64_t axes[LOOM_MAX_RANK];
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "data")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "data", mask)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    /* A canonical node inferred again (a pass rebuilding the graph) has both the axes input and
     * the resolved 'axes' attribute: the attribute says it all (empty: an identity). */
    int canonical_again = loom_ops_has(ctx, 1) && loom_attr_list_get(ctx->attrs, "axes");
    if (loom_ops_has(ctx, 1) && !canonical_again) {
        if ((st = loom_ops_const_ints(ctx, 1, "axes", LOOM_MAX_RANK, axes, &n)) != LOOM_OK)
            return st;
    } else {
        const int64_t *v;
        n = loom_infer_get_ints(ctx, "axes", &v);
        if (n > LOOM_MAX_RANK)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'axes' has %zu values, more than the maximum "
                                   "rank %d",
                                   n, LOOM_MAX_RANK);
        for (size_t k = 0; k < n; k++)
            axes[k] = v[k];
    }
    /* A present but empty 'axes' attribute is the canonical form of noop_with_empty_axes=1, so
     * that a canonical node infers to itself. */
    int noop = loom_infer_get_int(ctx, "noop_with_empty_axes", 0) != 0 ||
               ((!loom_ops_has(ctx, 1) || canonical_again) &&
                loom_attr_list_get(ctx->attrs, "axes") != NULL);
    int keepdims = loom_infer_get_int(ctx, "keepdims", 1) != 0;
    if (n == 0 && !noop) {
        n = x->rank;
        for (size_t k = 0; k < n; k++)
            axes[k] = (int64_t)k;
    }
    int reduced[LOOM_MAX_RANK] = {0};
    for (size_t k = 0; k < n; k++) {
        if ((st = loom_ops_axis(ctx, "axes entry", axes[k], x->rank, &axes[k])) != LOOM_OK)
            return st;
        if (reduced[axes[k]])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "axis %lld appears twice in axes", (long long)axes[k]);
        reduced[axes[k]] = 1;
    }
    qsort(axes, n, sizeof axes[0], cmp_i64);
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank = 0;
    for (uint32_t k = 0; k < x->rank; k++) {
        if (!reduced[k])
            dims[rank++] = x->dims[k];
        else if (keepdims)
            dims[rank++] = 1;
    }
    if ((st = loom_infer_set_ints(ctx, "axes", n, axes)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "keepdims", keepdims)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_reduce_sum_mean(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_FLOAT | LOOM_DTS_INDEX);
}

static loom_status infer_reduce_max(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_ARITH);
}

/* An add or comparison per input element; ReduceMean a divide per output. */
static void cost_reduce(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]);
    if (node->op == LOOM_OP_REDUCE_MEAN)
        cost->flops += loom_ops_numel(&node->outputs[0]);
}

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static loom_status infer_arg(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "keepdims", "select_last_index", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ARITH));
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t axis;
    TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis));
    if (x->dims[axis] == 0)
        return loom_infer_fail(ctx, INVALID, "axis %lld is empty: there is no extreme to find",
                               (long long)axis);
    int keep = loom_infer_get_int(ctx, "keepdims", 1) != 0;
    TRY(loom_infer_set_int(ctx, "axis", axis));
    TRY(loom_infer_set_int(ctx, "keepdims", keep));
    TRY(loom_infer_set_int(ctx, "select_last_index",
                           loom_infer_get_int(ctx, "select_last_index", 0) != 0));
    int64_t dims[LOOM_MAX_RANK];
    uint32_t r = 0;
    for (uint32_t d = 0; d < x->rank; d++) {
        if ((int64_t)d != axis)
            dims[r++] = x->dims[d];
        else if (keep)
            dims[r++] = 1;
    }
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_I64, r, dims);
    return loom_ops_finish(ctx);
}

static void cost_per_input(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]);
}

static loom_status infer_reduce_min(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_ARITH);
}

static loom_status infer_reduce_prod(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_FLOAT | LOOM_DTS_INDEX);
}

/* ReduceL1 ... ReduceSumSquare: a map (abs, square, exp) and an add per input element. */
static void cost_reduce_map(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const double n = loom_ops_numel(&node->inputs[0]);
    cost->flops = node->op == LOOM_OP_REDUCE_LOG_SUM_EXP ? (3.0 + LOOM_FLOPS_TRANSCENDENTAL) * n
                                                         : 2.0 * n;
}

/* ReduceL1 ... ReduceSumSquare also compute in float64. */
static loom_status infer_reduce_map(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_FLOAT | LOOM_DTS_INDEX | LOOM_DTS(LOOM_DTYPE_F64));
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_reduce_mean, LOOM_OP_REDUCE_MEAN, "ReduceMean",
             1, 2, 1, 1, infer_reduce_sum_mean, cost_reduce, 0);
LOOM_OPS_DEF(loom_op_def_reduce_sum, LOOM_OP_REDUCE_SUM, "ReduceSum",
             1, 2, 1, 1, infer_reduce_sum_mean, cost_reduce, 0);
LOOM_OPS_DEF(loom_op_def_reduce_max, LOOM_OP_REDUCE_MAX, "ReduceMax",
             1, 2, 1, 1, infer_reduce_max, cost_reduce, 0);
LOOM_OPS_DEF(loom_op_def_reduce_min, LOOM_OP_REDUCE_MIN, "ReduceMin",
             1, 2, 1, 1, infer_reduce_min, cost_per_input, 0);
LOOM_OPS_DEF(loom_op_def_reduce_prod, LOOM_OP_REDUCE_PROD, "ReduceProd",
             1, 2, 1, 1, infer_reduce_prod, cost_per_input, 0);
LOOM_OPS_DEF(loom_op_def_arg_max, LOOM_OP_ARG_MAX, "ArgMax",
             1, 1, 1, 1, infer_arg, cost_per_input, 0);
LOOM_OPS_DEF(loom_op_def_arg_min, LOOM_OP_ARG_MIN, "ArgMin",
             1, 1, 1, 1, infer_arg, cost_per_input, 0);
LOOM_OPS_DEF(loom_op_def_reduce_l1, LOOM_OP_REDUCE_L1, "ReduceL1",
             1, 2, 1, 1, infer_reduce_map, cost_reduce_map, 0);
LOOM_OPS_DEF(loom_op_def_reduce_l2, LOOM_OP_REDUCE_L2, "ReduceL2",
             1, 2, 1, 1, infer_reduce_map, cost_reduce_map, 0);
LOOM_OPS_DEF(loom_op_def_reduce_log_sum, LOOM_OP_REDUCE_LOG_SUM, "ReduceLogSum",
             1, 2, 1, 1, infer_reduce_map, cost_reduce_map, 0);
LOOM_OPS_DEF(loom_op_def_reduce_log_sum_exp, LOOM_OP_REDUCE_LOG_SUM_EXP, "ReduceLogSumExp",
             1, 2, 1, 1, infer_reduce_map, cost_reduce_map, 0);
LOOM_OPS_DEF(loom_op_def_reduce_sum_square, LOOM_OP_REDUCE_SUM_SQUARE, "ReduceSumSquare",
             1, 2, 1, 1, infer_reduce_map, cost_reduce_map, 0);
