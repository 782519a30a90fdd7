/*
 * Indexing operators of the registry: Gather, GatherElements, ScatterElements and TopK. Shape
 * and dtype inference, attribute canonicalisation (graph/ops.h) and cost.
 *
 * CANONICAL ATTRIBUTES (besides Gather's, in graph/ops.h):
 *   TopK                 axis:i k:i largest:i sorted:i (input 1 is ignored by kernels; values
 *                        are always returned sorted, ties broken by the lower index)
 *   ScatterElements      axis:i reduction:s ("none" | "add" | "mul" | "max" | "min")
 *   GatherElements       axis:i
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

static loom_status need_data(loom_infer_ctx *ctx, const char *what)
{
    loom_status st = loom_ops_require(ctx, 0, what);
    return st != LOOM_OK ? st : loom_ops_check_dtype(ctx, 0, what, LOOM_DTS_ALL);
}

static loom_status infer_gather(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "data")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "indices")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 1, "indices", LOOM_DTS_INDEX)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *ind = &ctx->inputs[1];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis)) !=
        LOOM_OK)
        return st;
    uint32_t rank = x->rank - 1 + ind->rank;
    if (rank > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "output rank %u exceeds the maximum rank %d", rank, LOOM_MAX_RANK);
    /* Constant indices are checked now, so the error names the node instead of failing a run. */
    const void *data = ctx->input_constants ? ctx->input_constants[1] : NULL;
    int64_t dim = x->dims[axis];
    if (data) {
        int64_t count = (int64_t)loom_ops_numel(ind);
        for (int64_t k = 0; k < count; k++) {
            int64_t idx = ind->dtype == LOOM_DTYPE_I64 ? ((const int64_t *)data)[k]
                                                       : ((const int32_t *)data)[k];
            if (idx < -dim || idx >= dim)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "index %lld is out of range for axis %lld of size %lld",
                                       (long long)idx, (long long)axis, (long long)dim);
        }
    }
    int64_t dims[LOOM_MAX_RANK];
    uint32_t r = 0;
    for (int64_t k = 0; k < axis; k++)
        dims[r++] = x->dims[k];
    for (uint32_t k = 0; k < ind->rank; k++)
        dims[r++] = ind->dims[k];
    for (uint32_t k = (uint32_t)axis + 1; k < x->rank; k++)
        dims[r++] = x->dims[k];
    if ((st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    return loom_ops_finish(ctx);
}

/* Only the selected elements (and Gather's indices) are read. */
static void cost_select(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->bytes_read = cost->bytes_written;
    if (node->op == LOOM_OP_GATHER)
        cost->bytes_read += loom_ops_numel(&node->inputs[1]) *
                            (double)loom_dtype_size(node->inputs[1].dtype);
}

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static int is_one_of(const char *s, const char *const *set)
{
    for (size_t k = 0; set[k]; k++)
        if (strcmp(s, set[k]) == 0)
            return 1;
    return 0;
}

static loom_status infer_top_k(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "largest", "sorted", "k", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT, LOOM_ATTR_INT,
                                           LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_ARITH));
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t axis, k;
    TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), x->rank, &axis));
    if (loom_ops_has(ctx, 1)) {
        int64_t v[1];
        size_t n;
        TRY(loom_ops_const_ints(ctx, 1, "K", 1, v, &n));
        if (n != 1)
            return loom_infer_fail(ctx, INVALID, "input 1 (K) must hold one value, got %zu", n);
        k = v[0];
    } else if (loom_attr_list_get(ctx->attrs, "k")) { /* opset 1, and the canonical form */
        k = loom_infer_get_int(ctx, "k", 0);
    } else {
        return loom_infer_fail(ctx, INVALID, "input 1 (K) is required");
    }
    if (k < 0 || k > x->dims[axis])
        return loom_infer_fail(ctx, INVALID, "k = %lld is out of range: axis %lld has %lld "
                                             "elements",
                               (long long)k, (long long)axis, (long long)x->dims[axis]);
    TRY(loom_infer_set_int(ctx, "axis", axis));
    TRY(loom_infer_set_int(ctx, "k", k));
    TRY(loom_infer_set_int(ctx, "largest", loom_infer_get_int(ctx, "largest", 1) != 0));
    TRY(loom_infer_set_int(ctx, "sorted", loom_infer_get_int(ctx, "sorted", 1) != 0));
    int64_t dims[LOOM_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    dims[axis] = k;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    if (ctx->n_outputs > 1)
        loom_ops_set_output(ctx, 1, LOOM_DTYPE_I64, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* A comparison per input element and log2(k) per kept one. */
static void cost_top_k(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    double k = (double)loom_node_attr_int(node, "k", 1);
    cost->flops = loom_ops_numel(&node->inputs[0]) * (1.0 + log2(k > 1 ? k : 1));
}

static loom_status check_elements_indices(loom_infer_ctx *ctx, uint32_t idx, int64_t axis)
{
    const loom_tensor_desc *x = &ctx->inputs[0], *i = &ctx->inputs[idx];
    TRY(loom_ops_check_dtype(ctx, idx, "indices", LOOM_DTS_INDEX));
    if (i->rank != x->rank)
        return loom_infer_fail(ctx, INVALID, "indices have rank %u but data has rank %u",
                               i->rank, x->rank);
    for (uint32_t d = 0; d < x->rank; d++)
        if ((int64_t)d != axis && i->dims[d] > x->dims[d]) {
            char a[128], b[128];
            return loom_infer_fail(ctx, INVALID,
                                   "indices shape %s exceeds data shape %s on axis %u",
                                   loom_dims_format(i->rank, i->dims, a, sizeof a),
                                   loom_dims_format(x->rank, x->dims, b, sizeof b), d);
        }
    return LOOM_OK;
}

static loom_status infer_scatter_elements(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "reduction", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_STRING};
    static const char *const reds[] = {"none", "add", "mul", "max", "min", NULL};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_require(ctx, 1, "indices"));
    TRY(loom_ops_require(ctx, 2, "updates"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ALL));
    TRY(loom_ops_same_dtype(ctx, 2, "updates", 0));
    const loom_tensor_desc *x = &ctx->inputs[0], *i = &ctx->inputs[1], *u = &ctx->inputs[2];
    int64_t axis;
    TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis));
    TRY(check_elements_indices(ctx, 1, axis));
    int same = u->rank == i->rank;
    for (uint32_t d = 0; same && d < i->rank; d++)
        same = u->dims[d] == i->dims[d];
    if (!same) {
        char a[128], b[128];
        return loom_infer_fail(ctx, INVALID, "updates shape %s differs from indices shape %s",
                               loom_dims_format(u->rank, u->dims, a, sizeof a),
                               loom_dims_format(i->rank, i->dims, b, sizeof b));
    }
    const char *red = loom_infer_get_string(ctx, "reduction", "none");
    if (!is_one_of(red, reds))
        return loom_infer_fail(ctx, INVALID,
                               "reduction is '%s'; expected none, add, mul, max or min", red);
    if (strcmp(red, "none") != 0 && x->dtype == LOOM_DTYPE_BOOL)
        return loom_infer_fail(ctx, INVALID, "reduction '%s' needs numbers, not bool", red);
    TRY(loom_infer_set_int(ctx, "axis", axis));
    TRY(loom_infer_set_string(ctx, "reduction", red));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static void cost_scatter(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[1]);
}

static loom_status infer_gather_elements(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_require(ctx, 1, "indices"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0], *i = &ctx->inputs[1];
    int64_t axis;
    TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis));
    TRY(check_elements_indices(ctx, 1, axis));
    if (x->dims[axis] == 0 && loom_tensor_desc_numel(i) > 0)
        return loom_infer_fail(ctx, INVALID, "cannot gather from the empty axis %lld",
                               (long long)axis);
    TRY(loom_infer_set_int(ctx, "axis", axis));
    loom_ops_set_output(ctx, 0, x->dtype, i->rank, i->dims);
    return loom_ops_finish(ctx);
}

static void cost_gather_elements(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    /* Only as many data elements are read as are written. */
    cost->bytes_read = loom_ops_numel(&node->inputs[1]) *
                       (double)(loom_dtype_size(node->inputs[1].dtype) +
                                loom_dtype_size(node->inputs[0].dtype));
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_gather, LOOM_OP_GATHER, "Gather",
             2, 2, 1, 1, infer_gather, cost_select, 0);
LOOM_OPS_DEF(loom_op_def_gather_elements, LOOM_OP_GATHER_ELEMENTS, "GatherElements",
             2, 2, 1, 1, infer_gather_elements, cost_gather_elements, 0);
LOOM_OPS_DEF(loom_op_def_scatter_elements, LOOM_OP_SCATTER_ELEMENTS, "ScatterElements",
             3, 3, 1, 1, infer_scatter_elements, cost_scatter, 0);
LOOM_OPS_DEF(loom_op_def_top_k, LOOM_OP_TOP_K, "TopK", 1, 2, 1, 2, infer_top_k, cost_top_k, 0);
