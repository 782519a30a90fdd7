/*
 * Sampling operators of the registry (issue 13): GridSample and RoiAlign. Shape and dtype
 * inference, attribute canonicalisation and cost.
 *
 * CANONICAL ATTRIBUTES:
 *   GridSample           mode:s ("linear" | "nearest" | "cubic"; opset 16's "bilinear" and
 *                        "bicubic" are read as "linear" and "cubic") padding_mode:s ("zeros" |
 *                        "border" | "reflection") align_corners:i. X is [N, C, D1..Dr] (r >= 1),
 *                        grid [N, O1..Or, r] with grid[..., 0] the coordinate along the last
 *                        axis (x, Dr); Y is [N, C, O1..Or] (opset 20's N-D form; opset 16 is its
 *                        r = 2 case).
 *   RoiAlign             coordinate_transformation_mode:s ("half_pixel" | "output_half_pixel")
 *                        mode:s ("avg" | "max") output_height:i output_width:i
 *                        sampling_ratio:i (0: adaptive) spatial_scale:f. X [N, C, H, W], rois
 *                        [R, 4] (x1, y1, x2, y2), batch_indices int64 [R]; Y [R, C, oh, ow].
 */

#include "ops_defs.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

#define INVALID LOOM_ERR_INVALID_ARGUMENT

/* ---- GridSample ----------------------------------------------------------------------------- */

static loom_status infer_grid_sample(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"align_corners", "mode", "padding_mode", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_STRING, LOOM_ATTR_STRING};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "grid"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_F64)));
    TRY(loom_ops_check_dtype(ctx, 1, "grid", LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_F64)));
    const loom_tensor_desc *x = &ctx->inputs[0], *g = &ctx->inputs[1];
    if (x->rank < 3)
        return loom_infer_fail(ctx, INVALID, "input 0 (X) must be [N, C, D1, ...], not of rank %u",
                               x->rank);
    const uint32_t r = x->rank - 2;
    if (g->rank != x->rank || g->dims[0] != x->dims[0] || g->dims[x->rank - 1] != (int64_t)r)
        return loom_infer_fail(ctx, INVALID,
                               "input 1 (grid) must be [N, O1..O%u, %u] with N = %lld", r, r,
                               (long long)x->dims[0]);
    const char *mode = loom_infer_get_string(ctx, "mode", "linear");
    if (strcmp(mode, "bilinear") == 0)
        mode = "linear";
    else if (strcmp(mode, "bicubic") == 0)
        mode = "cubic";
    if (strcmp(mode, "linear") && strcmp(mode, "nearest") && strcmp(mode, "cubic"))
        return loom_infer_fail(ctx, INVALID,
                               "mode is '%s'; expected linear (bilinear), nearest or cubic "
                               "(bicubic)",
                               mode);
    if (strcmp(mode, "cubic") == 0 && r > 3)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "cubic mode over %u spatial axes is not supported (at most 3)", r);
    const char *pad = loom_infer_get_string(ctx, "padding_mode", "zeros");
    if (strcmp(pad, "zeros") && strcmp(pad, "border") && strcmp(pad, "reflection"))
        return loom_infer_fail(ctx, INVALID,
                               "padding_mode is '%s'; expected zeros, border or reflection", pad);
    const int64_t ac = loom_infer_get_int(ctx, "align_corners", 0) != 0;
    /* the strings may live in the attribute list the setters replace: set mode from a copy */
    char mode_s[16], pad_s[16];
    snprintf(mode_s, sizeof mode_s, "%s", mode);
    snprintf(pad_s, sizeof pad_s, "%s", pad);
    TRY(loom_infer_set_string(ctx, "mode", mode_s));
    TRY(loom_infer_set_string(ctx, "padding_mode", pad_s));
    TRY(loom_infer_set_int(ctx, "align_corners", ac));
    int64_t y[LOOM_MAX_RANK];
    y[0] = x->dims[0];
    y[1] = x->dims[1];
    for (uint32_t k = 0; k < r; k++)
        y[2 + k] = g->dims[1 + k];
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, y);
    return loom_ops_finish(ctx);
}

/* Per output element: the taps (1, 2^r or 4^r) a multiply-add each, plus the coordinates. */
static void cost_grid_sample(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const uint32_t r = node->inputs[0].rank - 2;
    const loom_attr *a = loom_node_attr(node, "mode");
    const char *mode = a && a->kind == LOOM_ATTR_STRING ? a->s : "linear";
    const double taps = strcmp(mode, "nearest") == 0 ? 1.0
                        : strcmp(mode, "cubic") == 0 ? pow(4.0, r)
                                                      : pow(2.0, r);
    cost->flops = loom_ops_numel(&node->outputs[0]) * (2.0 * taps + 4.0 * r);
}

/* ---- RoiAlign ------------------------------------------------------------------------------- */

static loom_status infer_roi_align(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"coordinate_transformation_mode", "mode",
                                        "output_height", "output_width", "sampling_ratio",
                                        "spatial_scale", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING, LOOM_ATTR_STRING, LOOM_ATTR_INT,
                                           LOOM_ATTR_INT,    LOOM_ATTR_INT,    LOOM_ATTR_FLOAT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "rois"));
    TRY(loom_ops_require(ctx, 2, "batch_indices"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_F64)));
    TRY(loom_ops_same_dtype(ctx, 1, "rois", 0));
    TRY(loom_ops_check_dtype(ctx, 2, "batch_indices", LOOM_DTS(LOOM_DTYPE_I64)));
    const loom_tensor_desc *x = &ctx->inputs[0], *rois = &ctx->inputs[1],
                           *bi = &ctx->inputs[2];
    if (x->rank != 4)
        return loom_infer_fail(ctx, INVALID, "input 0 (X) must be [N, C, H, W], not of rank %u",
                               x->rank);
    if (rois->rank != 2 || rois->dims[1] != 4)
        return loom_infer_fail(ctx, INVALID, "input 1 (rois) must be [num_rois, 4]");
    if (bi->rank != 1 || bi->dims[0] != rois->dims[0])
        return loom_infer_fail(ctx, INVALID, "input 2 (batch_indices) must be [%lld]",
                               (long long)rois->dims[0]);
    const char *ctm = loom_infer_get_string(ctx, "coordinate_transformation_mode", "half_pixel");
    if (strcmp(ctm, "half_pixel") && strcmp(ctm, "output_half_pixel"))
        return loom_infer_fail(ctx, INVALID,
                               "coordinate_transformation_mode is '%s'; expected half_pixel or "
                               "output_half_pixel",
                               ctm);
    const char *mode = loom_infer_get_string(ctx, "mode", "avg");
    if (strcmp(mode, "avg") && strcmp(mode, "max"))
        return loom_infer_fail(ctx, INVALID, "mode is '%s'; expected avg or max", mode);
    const int64_t oh = loom_infer_get_int(ctx, "output_height", 1),
                  ow = loom_infer_get_int(ctx, "output_width", 1),
                  sr = loom_infer_get_int(ctx, "sampling_ratio", 0);
    const float scale = loom_infer_get_float(ctx, "spatial_scale", 1.0f);
    if (oh < 1 || ow < 1 || sr < 0 || !isfinite(scale))
        return loom_infer_fail(ctx, INVALID,
                               "output_height and output_width must be positive, "
                               "sampling_ratio non-negative and spatial_scale finite");
    char ctm_s[24], mode_s[8];
    snprintf(ctm_s, sizeof ctm_s, "%s", ctm);
    snprintf(mode_s, sizeof mode_s, "%s", mode);
    TRY(loom_infer_set_string(ctx, "coordinate_transformation_mode", ctm_s));
    TRY(loom_infer_set_string(ctx, "mode", mode_s));
    TRY(loom_infer_set_int(ctx, "output_height", oh));
    TRY(loom_infer_set_int(ctx, "output_width", ow));
    TRY(loom_infer_set_int(ctx, "sampling_ratio", sr));
    TRY(loom_infer_set_float(ctx, "spatial_scale", scale));
    const int64_t y[4] = {rois->dims[0], x->dims[1], oh, ow};
    loom_ops_set_output(ctx, 0, x->dtype, 4, y);
    return loom_ops_finish(ctx);
}

/* Per output element: the samples of its bin (sampling_ratio^2, or about 4 when adaptive), a
 * bilinear read (8 FLOPs) each. */
static void cost_roi_align(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const double sr = (double)loom_node_attr_int(node, "sampling_ratio", 0);
    cost->flops = loom_ops_numel(&node->outputs[0]) * 8.0 * (sr > 0 ? sr * sr : 4.0);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_grid_sample, LOOM_OP_GRID_SAMPLE, "GridSample", 2, 2, 1, 1,
             infer_grid_sample, cost_grid_sample, 0);
LOOM_OPS_DEF(loom_op_def_roi_align, LOOM_OP_ROI_ALIGN, "RoiAlign", 3, 3, 1, 1, infer_roi_align,
             cost_roi_align, 0);
