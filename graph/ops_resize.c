/*
 * Resize in the registry: shape and dtype inference, attribute canonicalisation and cost, with
 * ONNX opset-18 semantics.
 *
 * CANONICAL ATTRIBUTES:
 *   Resize               mode:s ("nearest" | "linear" | "cubic") coordinate_transformation_mode:s
 *                        ("half_pixel" | "pytorch_half_pixel" | "align_corners" | "asymmetric"
 *                        | "tf_half_pixel_for_nn" | "tf_crop_and_resize") nearest_mode:s
 *                        ("round_prefer_floor" | "round_prefer_ceil" | "floor" | "ceil")
 *                        scales:floats[rank] (the scale of every axis, from the scales input, or
 *                        out/in when sizes chose the output). Cubic only: cubic_coeff_a:f
 *                        exclude_outside:i (0 | 1). tf_crop_and_resize only: roi:floats[2*rank]
 *                        (every axis's start, then every axis's end, as fractions of the input;
 *                        0 and 1 for axes the axes attribute left out) extrapolation_value:f.
 *                        Inputs 1..3 are ignored by kernels.
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

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

/* The registry has no floats setter: add (or replace) a floats attribute through a one-item
 * list, whose item (malloc'd name and array, as the list owns them) moves into ctx->attrs. */
static loom_status set_floats(loom_infer_ctx *ctx, const char *name, size_t count,
                              const float *values)
{
    loom_attr a = {.name = name, .kind = LOOM_ATTR_FLOATS, .floats = values, .count = count};
    loom_attr_list one;
    char err[64];
    loom_infer_remove(ctx, name);
    if (loom_attr_list_init(&one, &a, 1, err, sizeof err) != LOOM_OK)
        return loom_infer_fail(ctx, LOOM_ERR_OUT_OF_MEMORY, "out of memory setting '%s'", name);
    loom_attr_list *l = ctx->attrs;
    if (l->count == l->capacity) {
        size_t cap = l->capacity ? 2 * l->capacity : 8;
        loom_attr *items = realloc(l->items, cap * sizeof *items);
        if (!items) {
            loom_attr_list_free(&one);
            return loom_infer_fail(ctx, LOOM_ERR_OUT_OF_MEMORY, "out of memory setting '%s'",
                                   name);
        }
        l->items = items;
        l->capacity = cap;
    }
    l->items[l->count++] = one.items[0];
    free(one.items);
    return LOOM_OK;
}

static size_t get_floats(const loom_infer_ctx *ctx, const char *name, const float **values)
{
    const loom_attr *a = loom_attr_list_get(ctx->attrs, name);
    if (!a || a->kind != LOOM_ATTR_FLOATS) {
        *values = NULL;
        return 0;
    }
    *values = a->floats;
    return a->count;
}

/* Constant 1-D float input IDX into OUT[CAP]; *COUNT its length. */
static loom_status const_floats(loom_infer_ctx *ctx, uint32_t idx, const char *what, size_t cap,
                                float *out, size_t *count)
{
    const loom_tensor_desc *d = &ctx->inputs[idx];
    const void *data = ctx->input_constants ? ctx->input_constants[idx] : NULL;
    if (!data && (ctx->need_constant = idx + 1))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED, "input %u (%s) must be a constant",
                               idx, what);
    size_t es = loom_dtype_size(d->dtype);
    if (!(LOOM_DTS(d->dtype) & LOOM_DTS_FLOAT))
        return loom_infer_fail(ctx, INVALID, "input %u (%s) must be a float tensor, not %s",
                               idx, what, loom_dtype_name(d->dtype));
    if (d->rank > 1)
        return loom_infer_fail(ctx, INVALID, "input %u (%s) must be 1-D, not of rank %u", idx,
                               what, d->rank);
    int64_t n = d->rank ? d->dims[0] : 1;
    if ((uint64_t)n > cap)
        return loom_infer_fail(ctx, INVALID, "input %u (%s) has %lld values, more than %zu",
                               idx, what, (long long)n, cap);
    for (int64_t k = 0; k < n; k++)
        out[k] = loom_ops_scalar_to_float(d->dtype, (const char *)data + (size_t)k * es);
    *count = (size_t)n;
    return LOOM_OK;
}

static int is_one_of(const char *s, const char *const *set)
{
    for (size_t k = 0; set[k]; k++)
        if (strcmp(s, set[k]) == 0)
            return 1;
    return 0;
}

static void cost_io_flops(const loom_node_desc *node, loom_op_cost *cost, double per_out)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->outputs[0]) * per_out;
}

static loom_status infer_resize(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"mode",
                                        "coordinate_transformation_mode",
                                        "nearest_mode",
                                        "cubic_coeff_a",
                                        "exclude_outside",
                                        "extrapolation_value",
                                        "antialias",
                                        "axes",
                                        "keep_aspect_ratio_policy",
                                        "scales",
                                        "roi",
                                        NULL};
    static const loom_attr_kind kinds[] = {
        LOOM_ATTR_STRING, LOOM_ATTR_STRING, LOOM_ATTR_STRING, LOOM_ATTR_FLOAT,
        LOOM_ATTR_INT,    LOOM_ATTR_FLOAT,  LOOM_ATTR_INT,    LOOM_ATTR_INTS,
        LOOM_ATTR_STRING, LOOM_ATTR_FLOATS, LOOM_ATTR_FLOATS};
    static const char *const canonical[] = {"mode",          "coordinate_transformation_mode",
                                            "nearest_mode",  "scales",
                                            "cubic_coeff_a", "exclude_outside",
                                            "roi",           "extrapolation_value",
                                            NULL};
    static const char *const modes[] = {"nearest", "linear", "cubic", NULL};
    static const char *const ctms[] = {"half_pixel",           "pytorch_half_pixel",
                                       "align_corners",        "asymmetric",
                                       "tf_half_pixel_for_nn", "tf_crop_and_resize",
                                       NULL};
    static const char *const nmodes[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                         "ceil", NULL};
    static const char *const policies[] = {"stretch", "not_larger", "not_smaller", NULL};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_ALL & ~LOOM_DTS(LOOM_DTYPE_BOOL)));
    const loom_tensor_desc *x = &ctx->inputs[0];
    const uint32_t r = x->rank;
    const char *mode = loom_infer_get_string(ctx, "mode", "nearest");
    const char *ctm = loom_infer_get_string(ctx, "coordinate_transformation_mode", "half_pixel");
    const char *nmode = loom_infer_get_string(ctx, "nearest_mode", "round_prefer_floor");
    const char *policy = loom_infer_get_string(ctx, "keep_aspect_ratio_policy", "stretch");
    if (!is_one_of(mode, modes))
        return loom_infer_fail(ctx, INVALID, "mode is '%s'; expected nearest, linear or cubic",
                               mode);
    if (!is_one_of(ctm, ctms))
        return loom_infer_fail(ctx, INVALID,
                               "coordinate_transformation_mode '%s' is not one of half_pixel, "
                               "pytorch_half_pixel, align_corners, asymmetric, "
                               "tf_half_pixel_for_nn, tf_crop_and_resize",
                               ctm);
    if (!is_one_of(nmode, nmodes))
        return loom_infer_fail(ctx, INVALID,
                               "nearest_mode '%s' is not one of round_prefer_floor, "
                               "round_prefer_ceil, floor, ceil",
                               nmode);
    if (!is_one_of(policy, policies))
        return loom_infer_fail(ctx, INVALID,
                               "keep_aspect_ratio_policy '%s' is not one of stretch, "
                               "not_larger, not_smaller",
                               policy);
    const int linear = strcmp(mode, "linear") == 0, cubic = strcmp(mode, "cubic") == 0;
    const int crop = strcmp(ctm, "tf_crop_and_resize") == 0;
    if ((linear || cubic) && x->dtype != LOOM_DTYPE_F32)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED, "%s mode needs float32 X, not %s",
                               mode, loom_dtype_name(x->dtype));
    const float coeff_a = loom_infer_get_float(ctx, "cubic_coeff_a", -0.75f);
    const int64_t exclude = loom_infer_get_int(ctx, "exclude_outside", 0);
    const float extrapolation = loom_infer_get_float(ctx, "extrapolation_value", 0.0f);
    if (!isfinite(coeff_a))
        return loom_infer_fail(ctx, INVALID, "cubic_coeff_a must be finite, got %g",
                               (double)coeff_a);
    if (exclude != 0 && exclude != 1)
        return loom_infer_fail(ctx, INVALID, "exclude_outside must be 0 or 1, got %lld",
                               (long long)exclude);
    /* Axes the scales or sizes inputs refer to (opset 18), every axis by default. */
    int64_t axes[LOOM_MAX_RANK];
    size_t n_axes = r;
    const int64_t *av;
    if (loom_attr_list_get(ctx->attrs, "axes")) {
        n_axes = loom_infer_get_ints(ctx, "axes", &av);
        if (n_axes > r)
            return loom_infer_fail(ctx, INVALID, "axes has %zu values for rank %u", n_axes, r);
        int seen[LOOM_MAX_RANK] = {0};
        for (size_t k = 0; k < n_axes; k++) {
            TRY(loom_ops_axis(ctx, "axes entry", av[k], r, &axes[k]));
            if (seen[axes[k]]++)
                return loom_infer_fail(ctx, INVALID, "axis %lld appears twice in axes",
                                       (long long)axes[k]);
        }
    } else {
        for (size_t k = 0; k < r; k++)
            axes[k] = (int64_t)k;
    }
    float scales[LOOM_MAX_RANK];
    int64_t out[LOOM_MAX_RANK];
    for (uint32_t d = 0; d < r; d++) {
        scales[d] = 1.0f;
        out[d] = x->dims[d];
    }
    int has_scales = loom_ops_has(ctx, 2) && loom_tensor_desc_numel(&ctx->inputs[2]) > 0;
    int has_sizes = loom_ops_has(ctx, 3) && loom_tensor_desc_numel(&ctx->inputs[3]) > 0;
    if (has_scales && has_sizes)
        return loom_infer_fail(ctx, INVALID, "only one of scales (input 2) and sizes (input 3) "
                                             "may be given");
    if (has_sizes) {
        int64_t sizes[LOOM_MAX_RANK];
        size_t n;
        TRY(loom_ops_const_ints(ctx, 3, "sizes", LOOM_MAX_RANK, sizes, &n));
        if (n != n_axes)
            return loom_infer_fail(ctx, INVALID, "sizes must have %zu values, got %zu", n_axes,
                                   n);
        for (size_t k = 0; k < n; k++)
            if (sizes[k] < 0)
                return loom_infer_fail(ctx, INVALID, "sizes has a negative value %lld",
                                       (long long)sizes[k]);
        if (strcmp(policy, "stretch") == 0) {
            for (size_t k = 0; k < n; k++) {
                int64_t d = axes[k];
                out[d] = sizes[k];
                scales[d] = x->dims[d] ? (float)((double)sizes[k] / (double)x->dims[d]) : 1.0f;
            }
        } else {
            /* One scale for all the axes, the one that keeps the aspect ratio. */
            int larger = strcmp(policy, "not_smaller") == 0;
            double sc = larger ? 0.0 : INFINITY;
            for (size_t k = 0; k < n; k++) {
                int64_t d = axes[k];
                if (x->dims[d] == 0)
                    continue;
                double v = (double)sizes[k] / (double)x->dims[d];
                sc = larger ? (v > sc ? v : sc) : (v < sc ? v : sc);
            }
            if (!isfinite(sc) || sc == 0.0)
                sc = 1.0;
            for (size_t k = 0; k < n; k++) {
                int64_t d = axes[k];
                scales[d] = (float)sc;
                out[d] = (int64_t)floor(sc * (double)x->dims[d] + 0.5);
            }
        }
    } else if (has_scales || get_floats(ctx, "scales", &(const float *){NULL}) == r) {
        float sv[LOOM_MAX_RANK];
        size_t n = 0;
        if (has_scales) {
            TRY(const_floats(ctx, 2, "scales", LOOM_MAX_RANK, sv, &n));
            if (n != n_axes)
                return loom_infer_fail(ctx, INVALID, "scales must have %zu values, got %zu",
                                       n_axes, n);
        } else { /* the canonical form, re-inferred */
            const float *fv;
            n = get_floats(ctx, "scales", &fv);
            if (n)
                memcpy(sv, fv, n * sizeof *sv);
            for (size_t k = 0; k < r; k++)
                axes[k] = (int64_t)k;
        }
        for (size_t k = 0; k < n; k++) {
            int64_t d = axes[k];
            if (!(sv[k] > 0.0f) || !isfinite(sv[k]))
                return loom_infer_fail(ctx, INVALID, "scales must be positive, got %g",
                                       (double)sv[k]);
            double o = floor((double)sv[k] * (double)x->dims[d]);
            if (o > (double)((int64_t)1 << 50))
                return loom_infer_fail(ctx, INVALID, "scale %g makes axis %lld too large",
                                       (double)sv[k], (long long)d);
            scales[d] = sv[k];
            out[d] = (int64_t)o;
        }
    } else {
        return loom_infer_fail(ctx, INVALID, "one of scales (input 2) and sizes (input 3) is "
                                             "required");
    }
    /* The region of interest (tf_crop_and_resize only): starts then ends, per listed axis. */
    float roi[2 * LOOM_MAX_RANK];
    if (crop) {
        for (uint32_t d = 0; d < r; d++) {
            roi[d] = 0.0f;
            roi[r + d] = 1.0f;
        }
        const float *rv;
        if (loom_ops_has(ctx, 1) && loom_tensor_desc_numel(&ctx->inputs[1]) > 0) {
            float given[2 * LOOM_MAX_RANK];
            size_t n;
            TRY(const_floats(ctx, 1, "roi", 2 * LOOM_MAX_RANK, given, &n));
            if (n != 2 * n_axes)
                return loom_infer_fail(ctx, INVALID, "roi must have %zu values (a start and "
                                       "an end per axis), got %zu", 2 * n_axes, n);
            for (size_t k = 0; k < n_axes; k++) {
                roi[axes[k]] = given[k];
                roi[r + (uint32_t)axes[k]] = given[n_axes + k];
            }
        } else if (get_floats(ctx, "roi", &rv) == 2 * (size_t)r) { /* the canonical form */
            memcpy(roi, rv, 2 * r * sizeof *roi);
        } else {
            return loom_infer_fail(ctx, INVALID, "coordinate_transformation_mode "
                                   "tf_crop_and_resize needs roi (input 1)");
        }
        for (uint32_t d = 0; d < 2 * r; d++)
            if (!isfinite(roi[d]))
                return loom_infer_fail(ctx, INVALID, "roi has a value that is not finite");
    }
    if ((linear || cubic) && loom_infer_get_int(ctx, "antialias", 0) != 0)
        for (uint32_t d = 0; d < r; d++)
            if (scales[d] < 1.0f)
                return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                       "antialias=1 when downsampling is not supported");
    for (uint32_t d = 0; d < r; d++)
        if (out[d] > 0 && x->dims[d] == 0)
            return loom_infer_fail(ctx, INVALID, "cannot resize the empty axis %u to %lld", d,
                                   (long long)out[d]);
    TRY(loom_infer_set_string(ctx, "mode", mode));
    TRY(loom_infer_set_string(ctx, "coordinate_transformation_mode", ctm));
    TRY(loom_infer_set_string(ctx, "nearest_mode", nmode));
    TRY(set_floats(ctx, "scales", r, scales));
    loom_infer_remove(ctx, "cubic_coeff_a");
    loom_infer_remove(ctx, "exclude_outside");
    loom_infer_remove(ctx, "extrapolation_value");
    loom_infer_remove(ctx, "roi");
    if (cubic) {
        TRY(loom_infer_set_float(ctx, "cubic_coeff_a", coeff_a));
        TRY(loom_infer_set_int(ctx, "exclude_outside", exclude));
    }
    if (crop) {
        TRY(set_floats(ctx, "roi", 2 * (size_t)r, roi));
        TRY(loom_infer_set_float(ctx, "extrapolation_value", extrapolation));
    }
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, r, out);
    return loom_ops_finish(ctx);
}

/* Linear (cubic): 2 (4) taps per resized axis, a multiply-add per combination of taps per
 * output; nearest: an index computation. */
static void cost_resize(const loom_node_desc *node, loom_op_cost *cost)
{
    const loom_attr *m = loom_node_attr(node, "mode");
    int taps = 1;
    if (m && m->kind == LOOM_ATTR_STRING)
        taps = strcmp(m->s, "linear") == 0 ? 2 : strcmp(m->s, "cubic") == 0 ? 4 : 1;
    double per = 1.0;
    if (taps > 1)
        for (uint32_t d = 0; d < node->inputs[0].rank; d++)
            if (node->inputs[0].dims[d] != node->outputs[0].dims[d])
                per *= taps;
    cost_io_flops(node, cost, taps > 1 ? 2.0 * per : 1.0);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_resize, LOOM_OP_RESIZE, "Resize",
             1, 4, 1, 1, infer_resize, cost_resize, 0);
