/*
 * Operators whose output SHAPE depends on their input VALUES: NonZero, Compress, Unique and
 * NonMaxSuppression. Shape inference cannot know such a shape, so it gives an UPPER BOUND (flag
 * LOOM_OPF_VALUE_DEPENDENT): every output is sized for the most the node can produce, and the
 * dimension that varies is the one this file names per op below. A kernel of such an op
 * (backends/cpu/kernels_value_dependent.c) writes its result packed, in the row-major layout of
 * the actual shape, at the start of each bound-sized output, and reports the actual shapes.
 * loom_model (scheduler/model.c) runs graphs holding them in stages split at these nodes;
 * loom_plan_create refuses them (the static plan API has no shapes that change while it runs).
 *
 * CANONICAL ATTRIBUTES, and the bound (the varying dim in capitals):
 *   NonZero              none. Y: int64 [rank(X), NNZ] (a scalar X counts as rank 1), bound
 *                        NNZ <= numel(X)
 *   Compress             axis:i when the node has one (non-negative), else none (X flattened).
 *                        Y: X's dims with dims[axis] = KEPT (or [KEPT]), bound min(len(condition),
 *                        dim) (numel without axis); a condition longer than that is an error
 *   Unique               sorted:i, axis:i when the node has one (non-negative), else none
 *                        (flattened). Y: X's dims with dims[axis] = U (or [U]); indices [U];
 *                        inverse_indices [dims[axis]] (or [numel]); counts [U]; bound U <= dims[axis]
 *                        (numel)
 *   NonMaxSuppression    center_point_box:i (0 or 1). selected_indices: int64 [SELECTED, 3],
 *                        bound batches * classes * min(boxes, max_output_boxes_per_class) when
 *                        input 2 is a constant, else batches * classes * boxes. Inputs 2..4
 *                        (scalars) are read by the kernel.
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static int64_t numel_of(const loom_tensor_desc *d)
{
    int64_t n = 1;
    for (uint32_t k = 0; k < d->rank; k++)
        n *= d->dims[k];
    return n;
}

/* ---- NonZero ------------------------------------------------------------------------------- */

static loom_status infer_non_zero(loom_infer_ctx *ctx)
{
    static const char *const names[] = {NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t dims[2] = {x->rank ? (int64_t)x->rank : 1, numel_of(x)};
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_I64, 2, dims);
    return loom_ops_finish(ctx);
}

/* One test per element, one write of RANK indices per (at most every) element. */
static void cost_non_zero(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]);
}

/* ---- Compress ------------------------------------------------------------------------------ */

static loom_status infer_compress(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_require(ctx, 1, "condition"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL));
    TRY(loom_ops_check_dtype(ctx, 1, "condition", LOOM_DTS(LOOM_DTYPE_BOOL)));
    const loom_tensor_desc *x = &ctx->inputs[0], *c = &ctx->inputs[1];
    if (c->rank != 1)
        return loom_infer_fail(ctx, INVALID, "condition must be 1-D, it has rank %u", c->rank);
    int64_t dims[LOOM_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    uint32_t rank;
    int64_t along;
    if (loom_attr_list_get(ctx->attrs, "axis")) {
        int64_t axis;
        TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis));
        TRY(loom_infer_set_int(ctx, "axis", axis));
        rank = x->rank;
        along = x->dims[axis];
        if (c->dims[0] > along)
            return loom_infer_fail(ctx, INVALID, "condition has %lld entries, more than the "
                                   "%lld of axis %lld", (long long)c->dims[0], (long long)along,
                                   (long long)axis);
        dims[axis] = c->dims[0];
    } else {
        rank = 1;
        along = numel_of(x);
        if (c->dims[0] > along)
            return loom_infer_fail(ctx, INVALID, "condition has %lld entries, more than the "
                                   "%lld elements of the flattened input",
                                   (long long)c->dims[0], (long long)along);
        dims[0] = c->dims[0];
    }
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    return loom_ops_finish(ctx);
}

/* ---- Unique -------------------------------------------------------------------------------- */

static loom_status infer_unique(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"sorted", "axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t dims[LOOM_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    uint32_t rank = 1;
    int64_t along = numel_of(x);
    if (loom_attr_list_get(ctx->attrs, "axis")) {
        int64_t axis;
        TRY(loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis));
        TRY(loom_infer_set_int(ctx, "axis", axis));
        rank = x->rank;
        along = x->dims[axis];
    } else {
        dims[0] = along;
    }
    TRY(loom_infer_set_int(ctx, "sorted", loom_infer_get_int(ctx, "sorted", 1) != 0));
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    for (uint32_t o = 1; o < ctx->n_outputs; o++)
        loom_ops_set_output(ctx, o, LOOM_DTYPE_I64, 1, &along);
    return loom_ops_finish(ctx);
}

/* A sort of the slices: n log2 n comparisons of a slice each. */
static void cost_unique(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    double n = loom_ops_numel(&node->inputs[0]);
    cost->flops = n * (1.0 + log2(n > 2 ? n : 2));
}

/* ---- NonMaxSuppression ----------------------------------------------------------------------- */

static loom_status scalar_input(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                                uint32_t mask)
{
    if (!loom_ops_has(ctx, idx))
        return LOOM_OK;
    TRY(loom_ops_check_dtype(ctx, idx, what, mask));
    if (numel_of(&ctx->inputs[idx]) != 1)
        return loom_infer_fail(ctx, INVALID, "input %u (%s) must hold one value, it has %lld",
                               idx, what, (long long)numel_of(&ctx->inputs[idx]));
    return LOOM_OK;
}

static loom_status infer_nms(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"center_point_box", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "boxes"));
    TRY(loom_ops_require(ctx, 1, "scores"));
    TRY(loom_ops_check_dtype(ctx, 0, "boxes", LOOM_DTS(LOOM_DTYPE_F32)));
    TRY(loom_ops_check_dtype(ctx, 1, "scores", LOOM_DTS(LOOM_DTYPE_F32)));
    TRY(scalar_input(ctx, 2, "max_output_boxes_per_class", LOOM_DTS(LOOM_DTYPE_I64)));
    TRY(scalar_input(ctx, 3, "iou_threshold", LOOM_DTS(LOOM_DTYPE_F32)));
    TRY(scalar_input(ctx, 4, "score_threshold", LOOM_DTS(LOOM_DTYPE_F32)));
    const loom_tensor_desc *b = &ctx->inputs[0], *s = &ctx->inputs[1];
    char a[128], c[128];
    if (b->rank != 3 || b->dims[2] != 4)
        return loom_infer_fail(ctx, INVALID, "boxes must be [batches, boxes, 4], got %s",
                               loom_dims_format(b->rank, b->dims, a, sizeof a));
    if (s->rank != 3 || s->dims[0] != b->dims[0] || s->dims[2] != b->dims[1])
        return loom_infer_fail(ctx, INVALID, "scores must be [batches, classes, boxes] = "
                               "[%lld, classes, %lld] for boxes %s, got %s",
                               (long long)b->dims[0], (long long)b->dims[1],
                               loom_dims_format(b->rank, b->dims, a, sizeof a),
                               loom_dims_format(s->rank, s->dims, c, sizeof c));
    int64_t cpb = loom_infer_get_int(ctx, "center_point_box", 0);
    if (cpb != 0 && cpb != 1)
        return loom_infer_fail(ctx, INVALID, "center_point_box is %lld; it must be 0 or 1",
                               (long long)cpb);
    TRY(loom_infer_set_int(ctx, "center_point_box", cpb));
    int64_t per_class = b->dims[1];
    const void *mx = loom_ops_has(ctx, 2) && ctx->input_constants ? ctx->input_constants[2]
                                                                   : NULL;
    if (!loom_ops_has(ctx, 2)) {
        per_class = 0; /* the default: no box is kept */
    } else if (mx) {
        int64_t v;
        memcpy(&v, mx, sizeof v);
        if (v < per_class)
            per_class = v < 0 ? 0 : v;
    }
    int64_t dims[2] = {b->dims[0] * s->dims[1] * per_class, 3};
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_I64, 2, dims);
    return loom_ops_finish(ctx);
}

/* Sorting each class's scores, then an IoU test (about 16 operations) of every candidate against
 * each box kept so far: bounded by boxes x kept per class. */
static void cost_nms(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *s = &node->inputs[1];
    double n = s->rank == 3 ? (double)s->dims[2] : 1.0;
    double kept = node->outputs[0].rank == 2 && s->rank == 3 && s->dims[0] * s->dims[1] > 0
                      ? (double)node->outputs[0].dims[0] / (double)(s->dims[0] * s->dims[1])
                      : 0.0;
    cost->flops = loom_ops_numel(s) * (log2(n > 2 ? n : 2) + 16.0 * kept);
}

LOOM_OPS_DEF(loom_op_def_non_zero, LOOM_OP_NON_ZERO, "NonZero", 1, 1, 1, 1, infer_non_zero,
             cost_non_zero, LOOM_OPF_VALUE_DEPENDENT | LOOM_OPF_NO_FOLD);
LOOM_OPS_DEF(loom_op_def_compress, LOOM_OP_COMPRESS, "Compress", 2, 2, 1, 1, infer_compress,
             cost_non_zero, LOOM_OPF_VALUE_DEPENDENT | LOOM_OPF_NO_FOLD);
LOOM_OPS_DEF(loom_op_def_unique, LOOM_OP_UNIQUE, "Unique", 1, 1, 1, 4, infer_unique, cost_unique,
             LOOM_OPF_VALUE_DEPENDENT | LOOM_OPF_NO_FOLD);
LOOM_OPS_DEF(loom_op_def_non_max_suppression, LOOM_OP_NON_MAX_SUPPRESSION, "NonMaxSuppression",
             2, 5, 1, 1, infer_nms, cost_nms, LOOM_OPF_VALUE_DEPENDENT | LOOM_OPF_NO_FOLD);
