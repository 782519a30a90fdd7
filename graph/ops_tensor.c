/*
 * Structural tensor operators of the registry added for operator coverage (issue 13): Trilu,
 * CumSum, Hardmax, DepthToSpace, SpaceToDepth, EyeLike, OneHot, GatherND, ScatterND and
 * ReverseSequence. Shape
 * and dtype inference, attribute canonicalisation and cost.
 *
 * CANONICAL ATTRIBUTES:
 *   Trilu                upper:i (input 1, k, is read by the kernel when given; default 0)
 *   CumSum               exclusive:i reverse:i (input 1, axis, is read by the kernel)
 *   Hardmax              axis:i
 *   DepthToSpace         blocksize:i mode:s ("DCR" | "CRD")
 *   SpaceToDepth         blocksize:i
 *   EyeLike              dtype:i (a loom_dtype) k:i
 *   OneHot               axis:i depth:i (from constant input 1, which must be a constant)
 *   GatherND             batch_dims:i
 *   ScatterND            reduction:s ("none" | "add" | "mul" | "max" | "min")
 *   ReverseSequence      batch_axis:i time_axis:i (0 and 1, in either order; sequence_lens,
 *                        int64 [batch], is read by the kernel)
 */
#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

#define INVALID LOOM_ERR_INVALID_ARGUMENT

/* One scalar-like (rank 0, or 1-D of one value) integer input IDX. */
static loom_status check_scalar_int(loom_infer_ctx *ctx, uint32_t idx, const char *what)
{
    TRY(loom_ops_check_dtype(ctx, idx, what, LOOM_DTS_INDEX));
    const loom_tensor_desc *d = &ctx->inputs[idx];
    if (d->rank > 1 || (d->rank == 1 && d->dims[0] != 1))
        return loom_infer_fail(ctx, INVALID, "input %u (%s) must be a scalar", idx, what);
    return LOOM_OK;
}

static loom_status infer_trilu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"upper", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 2)
        return loom_infer_fail(ctx, INVALID, "input 0 has rank %u; it needs at least 2",
                               x->rank);
    if (loom_ops_has(ctx, 1))
        TRY(check_scalar_int(ctx, 1, "k"));
    TRY(loom_infer_set_int(ctx, "upper", loom_infer_get_int(ctx, "upper", 1) != 0));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_cumsum(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"exclusive", "reverse", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "x"));
    TRY(loom_ops_require(ctx, 1, "axis"));
    TRY(loom_ops_check_dtype(ctx, 0, "x", LOOM_DTS_ARITH | LOOM_DTS_WIDE));
    TRY(check_scalar_int(ctx, 1, "axis"));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 1)
        return loom_infer_fail(ctx, INVALID, "input 0 (x) must have rank >= 1");
    TRY(loom_infer_set_int(ctx, "exclusive", loom_infer_get_int(ctx, "exclusive", 0) != 0));
    TRY(loom_infer_set_int(ctx, "reverse", loom_infer_get_int(ctx, "reverse", 0) != 0));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_hardmax(loom_infer_ctx *ctx)
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

static loom_status infer_depth_space(loom_infer_ctx *ctx, int to_space)
{
    static const char *const names[] = {"blocksize", "mode", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_STRING};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank != 4)
        return loom_infer_fail(ctx, INVALID, "input 0 must be [N, C, H, W], not of rank %u",
                               x->rank);
    int64_t b = loom_infer_get_int(ctx, "blocksize", 0);
    if (b < 1 || b > (1 << 16))
        return loom_infer_fail(ctx, INVALID, "blocksize %lld must be a positive size",
                               (long long)b);
    int64_t dims[4] = {x->dims[0], x->dims[1], x->dims[2], x->dims[3]};
    if (to_space) {
        const char *mode = loom_infer_get_string(ctx, "mode", "DCR");
        if (strcmp(mode, "DCR") && strcmp(mode, "CRD"))
            return loom_infer_fail(ctx, INVALID, "mode '%s' is not DCR or CRD", mode);
        if (dims[1] % (b * b))
            return loom_infer_fail(ctx, INVALID,
                                   "channels %lld are not a multiple of blocksize^2 (%lld)",
                                   (long long)dims[1], (long long)(b * b));
        dims[1] /= b * b;
        dims[2] *= b;
        dims[3] *= b;
        TRY(loom_infer_set_string(ctx, "mode", mode));
    } else {
        if (loom_attr_list_get(ctx->attrs, "mode"))
            return loom_infer_fail(ctx, INVALID, "SpaceToDepth has no attribute 'mode'");
        if (dims[2] % b || dims[3] % b)
            return loom_infer_fail(ctx, INVALID,
                                   "height %lld and width %lld must be multiples of blocksize "
                                   "%lld",
                                   (long long)dims[2], (long long)dims[3], (long long)b);
        dims[1] *= b * b;
        dims[2] /= b;
        dims[3] /= b;
    }
    TRY(loom_infer_set_int(ctx, "blocksize", b));
    loom_ops_set_output(ctx, 0, x->dtype, 4, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_d2s(loom_infer_ctx *ctx)
{
    return infer_depth_space(ctx, 1);
}

static loom_status infer_s2d(loom_infer_ctx *ctx)
{
    return infer_depth_space(ctx, 0);
}

static loom_status infer_eyelike(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"dtype", "k", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank != 2)
        return loom_infer_fail(ctx, INVALID, "input 0 must be 2-D, not of rank %u", x->rank);
    int64_t dt = loom_infer_get_int(ctx, "dtype", (int64_t)x->dtype);
    if (dt <= 0 || dt >= 32 || !(LOOM_DTS_ALL & LOOM_DTS((unsigned)dt)))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED, "dtype %lld is not supported",
                               (long long)dt);
    TRY(loom_infer_set_int(ctx, "dtype", dt));
    TRY(loom_infer_set_int(ctx, "k", loom_infer_get_int(ctx, "k", 0)));
    loom_ops_set_output(ctx, 0, (loom_dtype)dt, 2, x->dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_onehot(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "depth", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "indices"));
    TRY(loom_ops_require(ctx, 1, "depth"));
    TRY(loom_ops_require(ctx, 2, "values"));
    uint32_t numeric = LOOM_DTS_FLOAT | LOOM_DTS_INDEX | LOOM_DTS(LOOM_DTYPE_I8) |
                       LOOM_DTS(LOOM_DTYPE_U8);
    TRY(loom_ops_check_dtype(ctx, 0, "indices", numeric));
    TRY(loom_ops_check_dtype(ctx, 1, "depth", numeric));
    TRY(loom_ops_check_dtype(ctx, 2, "values", LOOM_DTS_ALL));
    const loom_tensor_desc *ix = &ctx->inputs[0], *dp = &ctx->inputs[1], *v = &ctx->inputs[2];
    if (v->rank != 1 || v->dims[0] != 2)
        return loom_infer_fail(ctx, INVALID, "input 2 (values) must be [off, on]");
    if (dp->rank > 1 || (dp->rank == 1 && dp->dims[0] != 1))
        return loom_infer_fail(ctx, INVALID, "input 1 (depth) must be a scalar");
    /* A canonical node carries depth already; else it comes from the constant input. */
    int64_t depth = loom_infer_get_int(ctx, "depth", -1);
    if (depth < 0) {
        const void *data = ctx->input_constants ? ctx->input_constants[1] : NULL;
        if (!data) {
            ctx->need_constant = 2;
            return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                   "input 1 (depth) must be a constant");
        }
        double d;
        switch (dp->dtype) {
        case LOOM_DTYPE_I64: d = (double)*(const int64_t *)data; break;
        case LOOM_DTYPE_I32: d = *(const int32_t *)data; break;
        case LOOM_DTYPE_I8: d = *(const int8_t *)data; break;
        case LOOM_DTYPE_U8: d = *(const uint8_t *)data; break;
        default: d = loom_ops_scalar_to_float(dp->dtype, data); break;
        }
        if (!(d >= 1) || d > 1e9)
            return loom_infer_fail(ctx, INVALID, "depth %g must be a positive count", d);
        depth = (int64_t)d;
    }
    if (ix->rank + 1 > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, INVALID, "the output's rank would exceed %d",
                               LOOM_MAX_RANK);
    int64_t axis;
    TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), ix->rank + 1, &axis));
    int64_t dims[LOOM_MAX_RANK];
    for (uint32_t k = 0, s = 0; k < ix->rank + 1; k++)
        dims[k] = (int64_t)k == axis ? depth : ix->dims[s++];
    TRY(loom_infer_set_int(ctx, "axis", axis));
    TRY(loom_infer_set_int(ctx, "depth", depth));
    loom_ops_set_output(ctx, 0, v->dtype, ix->rank + 1, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_gather_nd(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"batch_dims", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_require(ctx, 1, "indices"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ALL));
    TRY(loom_ops_check_dtype(ctx, 1, "indices", LOOM_DTS(LOOM_DTYPE_I64)));
    const loom_tensor_desc *x = &ctx->inputs[0], *ix = &ctx->inputs[1];
    int64_t b = loom_infer_get_int(ctx, "batch_dims", 0);
    if (x->rank < 1 || ix->rank < 1)
        return loom_infer_fail(ctx, INVALID, "data and indices must have rank >= 1");
    if (b < 0 || b >= (int64_t)x->rank || b >= (int64_t)ix->rank)
        return loom_infer_fail(ctx, INVALID, "batch_dims %lld must be below both ranks",
                               (long long)b);
    int64_t last = ix->dims[ix->rank - 1];
    if (last < 1 || last > (int64_t)x->rank - b)
        return loom_infer_fail(ctx, INVALID,
                               "indices' last dimension %lld must be in [1, %lld]",
                               (long long)last, (long long)((int64_t)x->rank - b));
    for (int64_t k = 0; k < b; k++)
        if (x->dims[k] != ix->dims[k])
            return loom_infer_fail(ctx, INVALID, "batch dimension %lld differs: %lld and %lld",
                                   (long long)k, (long long)x->dims[k],
                                   (long long)ix->dims[k]);
    int64_t dims[2 * LOOM_MAX_RANK];
    uint32_t r = 0;
    for (uint32_t k = 0; k + 1 < ix->rank; k++)
        dims[r++] = ix->dims[k];
    for (uint32_t k = (uint32_t)(b + last); k < x->rank; k++)
        dims[r++] = x->dims[k];
    if (r > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, INVALID, "the output's rank would exceed %d",
                               LOOM_MAX_RANK);
    TRY(loom_infer_set_int(ctx, "batch_dims", b));
    loom_ops_set_output(ctx, 0, x->dtype, r, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_scatter_nd(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"reduction", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_require(ctx, 1, "indices"));
    TRY(loom_ops_require(ctx, 2, "updates"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ALL));
    TRY(loom_ops_check_dtype(ctx, 1, "indices", LOOM_DTS(LOOM_DTYPE_I64)));
    TRY(loom_ops_same_dtype(ctx, 2, "updates", 0));
    const loom_tensor_desc *x = &ctx->inputs[0], *ix = &ctx->inputs[1], *u = &ctx->inputs[2];
    const char *red = loom_infer_get_string(ctx, "reduction", "none");
    if (strcmp(red, "none") && strcmp(red, "add") && strcmp(red, "mul") && strcmp(red, "max") &&
        strcmp(red, "min"))
        return loom_infer_fail(ctx, INVALID, "reduction '%s' is not none, add, mul, max or min",
                               red);
    if (ix->rank < 1 || x->rank < 1)
        return loom_infer_fail(ctx, INVALID, "data and indices must have rank >= 1");
    int64_t last = ix->dims[ix->rank - 1];
    if (last < 1 || last > (int64_t)x->rank)
        return loom_infer_fail(ctx, INVALID, "indices' last dimension %lld must be in [1, %u]",
                               (long long)last, x->rank);
    /* updates = indices.shape[:-1] + data.shape[last:] */
    int ok = u->rank == ix->rank - 1 + x->rank - (uint32_t)last;
    for (uint32_t k = 0; ok && k + 1 < ix->rank; k++)
        ok = u->dims[k] == ix->dims[k];
    for (uint32_t k = (uint32_t)last; ok && k < x->rank; k++)
        ok = u->dims[ix->rank - 1 + k - (uint32_t)last] == x->dims[k];
    if (!ok)
        return loom_infer_fail(ctx, INVALID,
                               "input 2 (updates) must be indices.shape[:-1] + "
                               "data.shape[indices.shape[-1]:]");
    TRY(loom_infer_set_string(ctx, "reduction", red));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_reverse_sequence(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"batch_axis", "time_axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_require(ctx, 1, "sequence_lens"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL));
    TRY(loom_ops_check_dtype(ctx, 1, "sequence_lens", LOOM_DTS(LOOM_DTYPE_I64)));
    const loom_tensor_desc *x = &ctx->inputs[0], *l = &ctx->inputs[1];
    if (x->rank < 2)
        return loom_infer_fail(ctx, INVALID, "input 0 must have rank >= 2, not %u", x->rank);
    const int64_t b = loom_infer_get_int(ctx, "batch_axis", 1),
                  t = loom_infer_get_int(ctx, "time_axis", 0);
    if (!((b == 0 && t == 1) || (b == 1 && t == 0)))
        return loom_infer_fail(ctx, INVALID,
                               "batch_axis %lld and time_axis %lld must be 0 and 1 (either order)",
                               (long long)b, (long long)t);
    if (l->rank != 1 || l->dims[0] != x->dims[b])
        return loom_infer_fail(ctx, INVALID, "input 1 (sequence_lens) must have shape [%lld]",
                               (long long)x->dims[b]);
    TRY(loom_infer_set_int(ctx, "batch_axis", b));
    TRY(loom_infer_set_int(ctx, "time_axis", t));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* Data movement: bytes in and out, an operation per output element. */
static void cost_move(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->outputs[0]);
}

LOOM_OPS_DEF(loom_op_def_trilu, LOOM_OP_TRILU, "Trilu", 1, 2, 1, 1, infer_trilu, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_cumsum, LOOM_OP_CUM_SUM, "CumSum", 2, 2, 1, 1, infer_cumsum, cost_move,
             0);
LOOM_OPS_DEF(loom_op_def_hardmax, LOOM_OP_HARDMAX, "Hardmax", 1, 1, 1, 1, infer_hardmax,
             cost_move, 0);
LOOM_OPS_DEF(loom_op_def_depth_to_space, LOOM_OP_DEPTH_TO_SPACE, "DepthToSpace", 1, 1, 1, 1,
             infer_d2s, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_space_to_depth, LOOM_OP_SPACE_TO_DEPTH, "SpaceToDepth", 1, 1, 1, 1,
             infer_s2d, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_eyelike, LOOM_OP_EYE_LIKE, "EyeLike", 1, 1, 1, 1, infer_eyelike,
             cost_move, 0);
LOOM_OPS_DEF(loom_op_def_onehot, LOOM_OP_ONE_HOT, "OneHot", 3, 3, 1, 1, infer_onehot, cost_move,
             0);
LOOM_OPS_DEF(loom_op_def_gather_nd, LOOM_OP_GATHER_ND, "GatherND", 2, 2, 1, 1, infer_gather_nd,
             cost_move, 0);
LOOM_OPS_DEF(loom_op_def_scatter_nd, LOOM_OP_SCATTER_ND, "ScatterND", 3, 3, 1, 1,
             infer_scatter_nd, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_reverse_sequence, LOOM_OP_REVERSE_SEQUENCE, "ReverseSequence", 2, 2, 1,
             1, infer_reverse_sequence, cost_move, 0);
