/*
 * Comparison and logic operators of the registry: Equal, Less, Greater, LessOrEqual,
 * GreaterOrEqual (bool outputs, ONNX broadcasting), And, Or, Xor, Not, and the selection Where.
 * Shape and dtype inference (graph/ops.h has the contract) and cost. None has attributes.
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

#define DTS_BOOL LOOM_DTS(LOOM_DTYPE_BOOL)

static const char *shape_str(const loom_tensor_desc *d, char *buf, size_t len)
{
    return loom_dims_format(d->rank, d->dims, buf, len);
}

static loom_status infer_not(loom_infer_ctx *ctx)
{
    return loom_ops_unary_no_attrs(ctx, DTS_BOOL);
}

/* Broadcast every input (all required, all of input 0's dtype, which must be in MASK) into
 * *OUT. NAMES name the inputs in messages; NULL names them data_<i>. */
static loom_status broadcast_all(loom_infer_ctx *ctx, uint32_t mask, const char *const *names,
                                 loom_tensor_desc *out)
{
    loom_status st;
    char what[32];
    for (uint32_t i = 0; i < ctx->n_inputs; i++) {
        const char *name = names ? names[i] : what;
        if (!names)
            snprintf(what, sizeof what, "data_%u", i);
        if ((st = loom_ops_require(ctx, i, name)) != LOOM_OK)
            return st;
        if (i == 0) {
            if ((st = loom_ops_check_dtype(ctx, 0, name, mask)) != LOOM_OK)
                return st;
            *out = ctx->inputs[0];
            continue;
        }
        if ((st = loom_ops_same_dtype(ctx, i, name, 0)) != LOOM_OK)
            return st;
        loom_tensor_desc next;
        if (!loom_broadcast_shapes(out, &ctx->inputs[i], &next)) {
            char a[160], b[160];
            return loom_infer_fail(
                ctx, LOOM_ERR_INVALID_ARGUMENT,
                "shapes %s and %s cannot be broadcast together (input %u (%s))",
                shape_str(out, a, sizeof a), shape_str(&ctx->inputs[i], b, sizeof b), i, name);
        }
        next.dtype = out->dtype;
        *out = next;
    }
    return LOOM_OK;
}

/* Two inputs of one dtype in MASK, broadcast; the output is OUT_DTYPE, or the inputs' dtype
 * when UNDEFINED. */
static loom_status binary(loom_infer_ctx *ctx, uint32_t mask, loom_dtype out_dtype)
{
    static const char *const names[] = {"A", "B"};
    loom_status st;
    loom_tensor_desc y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = broadcast_all(ctx, mask, names, &y)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, out_dtype ? out_dtype : y.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_logic(loom_infer_ctx *ctx)
{
    return binary(ctx, DTS_BOOL, LOOM_DTYPE_BOOL);
}

static loom_status infer_equal(loom_infer_ctx *ctx)
{
    return binary(ctx, LOOM_DTS_ARITH | DTS_BOOL, LOOM_DTYPE_BOOL);
}

static loom_status infer_compare(loom_infer_ctx *ctx)
{
    return binary(ctx, LOOM_DTS_ARITH, LOOM_DTYPE_BOOL);
}

static void cost_one(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 1.0); }

/* Broadcast inputs FIRST..N_INPUTS-1 (all required, all of input FIRST's dtype, which must be in
 * MASK) into *OUT. NAMES name the inputs in messages; NULL names them by position. */
static loom_status broadcast_inputs(loom_infer_ctx *ctx, uint32_t first, uint32_t mask,
                                    const char *const *names, loom_tensor_desc *out)
{
    loom_status st;
    char what[32];
    for (uint32_t i = first; i < ctx->n_inputs; i++) {
        const char *name = names ? names[i] : what;
        if (!names)
            snprintf(what, sizeof what, "data_%u", i);
        if ((st = loom_ops_require(ctx, i, name)) != LOOM_OK)
            return st;
        if (i == first) {
            if ((st = loom_ops_check_dtype(ctx, i, name, mask)) != LOOM_OK)
                return st;
            *out = ctx->inputs[i];
            continue;
        }
        if ((st = loom_ops_same_dtype(ctx, i, name, first)) != LOOM_OK)
            return st;
        loom_tensor_desc next;
        if (!loom_broadcast_shapes(out, &ctx->inputs[i], &next)) {
            char a[160], b[160];
            return loom_infer_fail(
                ctx, LOOM_ERR_INVALID_ARGUMENT,
                "shapes %s and %s cannot be broadcast together (input %u (%s))",
                loom_dims_format(out->rank, out->dims, a, sizeof a),
                loom_dims_format(ctx->inputs[i].rank, ctx->inputs[i].dims, b, sizeof b), i,
                name);
        }
        next.dtype = out->dtype;
        *out = next;
    }
    return LOOM_OK;
}

static loom_status infer_where(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"condition", "X", "Y"};
    loom_status st;
    loom_tensor_desc xy, y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, names[0])) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, names[0], LOOM_DTS(LOOM_DTYPE_BOOL))) != LOOM_OK ||
        (st = broadcast_inputs(ctx, 1, LOOM_DTS_ALL, names, &xy)) != LOOM_OK)
        return st;
    if (!loom_broadcast_shapes(&ctx->inputs[0], &xy, &y)) {
        char a[160], b[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "shapes %s (condition) and %s (X and Y) cannot be broadcast "
                               "together",
                               loom_dims_format(ctx->inputs[0].rank, ctx->inputs[0].dims, a,
                                                sizeof a),
                               loom_dims_format(xy.rank, xy.dims, b, sizeof b));
    }
    loom_ops_set_output(ctx, 0, xy.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_equal, LOOM_OP_EQUAL, "Equal", 2, 2, 1, 1, infer_equal, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_less, LOOM_OP_LESS, "Less", 2, 2, 1, 1, infer_compare, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_greater, LOOM_OP_GREATER, "Greater",
             2, 2, 1, 1, infer_compare, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_less_or_equal, LOOM_OP_LESS_OR_EQUAL, "LessOrEqual",
             2, 2, 1, 1, infer_compare, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_greater_or_equal, LOOM_OP_GREATER_OR_EQUAL, "GreaterOrEqual",
             2, 2, 1, 1, infer_compare, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_and, LOOM_OP_AND, "And", 2, 2, 1, 1, infer_logic, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_or, LOOM_OP_OR, "Or", 2, 2, 1, 1, infer_logic, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_xor, LOOM_OP_XOR, "Xor", 2, 2, 1, 1, infer_logic, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_not, LOOM_OP_NOT, "Not", 1, 1, 1, 1, infer_not, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_where, LOOM_OP_WHERE, "Where", 3, 3, 1, 1, infer_where, cost_one, 0);
