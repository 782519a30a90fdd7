/*
 * The neural-network operators of ABI 0.2: ConvTranspose, Resize, Pad, Tile, Einsum,
 * InstanceNormalization, LSTM, GRU, TopK, ArgMax, ArgMin, ScatterElements, GatherElements,
 * LogSoftmax, PRelu, ReduceMin and ReduceProd. Shape and dtype inference, attribute
 * canonicalisation and cost, with ONNX opset-18 semantics.
 *
 * CANONICAL ATTRIBUTES of these ops (graph/ops.h has the rules; every axis is non-negative). A
 * canonical node infers to itself, so each op also accepts its canonical attributes as input.
 *   ConvTranspose        kernel_shape:ints[S] strides:ints[S] dilations:ints[S] pads:ints[2S]
 *                        output_padding:ints[S] group:i. auto_pad and output_shape are resolved
 *                        into pads (begins then ends), which may then be NEGATIVE: a negative
 *                        pad grows the output by zero-contribution rows (output_shape larger
 *                        than the natural size). Y[s] gets X[i] * W[k] where
 *                        s = i * stride - pad_begin + k * dilation.
 *   Resize               mode:s ("nearest" | "linear") coordinate_transformation_mode:s
 *                        ("half_pixel" | "pytorch_half_pixel" | "align_corners" | "asymmetric"
 *                        | "tf_half_pixel_for_nn") nearest_mode:s ("round_prefer_floor" |
 *                        "round_prefer_ceil" | "floor" | "ceil") scales:floats[rank] (the
 *                        scale of every axis, from the scales input, or out/in when sizes
 *                        chose the output). Inputs 1..3 are ignored by kernels.
 *   Pad                  mode:s ("constant" | "reflect" | "edge") pads:ints[2*rank] (begins
 *                        then ends for EVERY axis; negative values crop) value:f (the constant
 *                        value when input 2 is a constant, else 0; when input 2 is present the
 *                        kernel reads it, which is exact for integer dtypes). Inputs 1 and 3
 *                        are ignored by kernels.
 *   Tile                 repeats:ints[rank] (input 1 is ignored by kernels)
 *   Einsum               equation:s, explicit ("ij,jk->ik"): no spaces, an output term always,
 *                        ellipses replaced by upper-case labels the equation did not use. A
 *                        label of an ellipsis dim may be 1 in one operand and n in another
 *                        (broadcast); every other label has one size everywhere.
 *   InstanceNormalization epsilon:f
 *   LSTM                 direction:s ("forward" | "reverse" | "bidirectional") hidden_size:i
 *                        layout:i clip:f (+inf: none) input_forget:i
 *   GRU                  direction:s hidden_size:i layout:i clip:f linear_before_reset:i
 *                        (LSTM and GRU: default activations only; an 'activations' attribute,
 *                        ONNX's list of strings, may be given as one comma-separated string and
 *                        must name the defaults. sequence_lens, when given, is read at run time.)
 *   TopK                 axis:i k:i largest:i sorted:i (input 1 is ignored by kernels; values
 *                        are always returned sorted, ties broken by the lower index)
 *   ArgMax, ArgMin       axis:i keepdims:i select_last_index:i
 *   ScatterElements      axis:i reduction:s ("none" | "add" | "mul" | "max" | "min")
 *   GatherElements       axis:i
 *   LogSoftmax           axis:i
 *   ReduceMin/Prod       axes:ints keepdims:i (as ReduceMax)
 *   PRelu: no attributes.
 *
 * Cost: a multiply-add counts 2 FLOPs, a comparison or an add 1, a transcendental function
 * LOOM_FLOPS_TRANSCENDENTAL; bytes are each input read once and each output written once.
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
#define INVALID LOOM_ERR_INVALID_ARGUMENT
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static const char *const k_no_names[] = {NULL};
static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT};

/* ---- helpers -------------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Python's floor division by 2, for paddings that may be negative. */
static int64_t floor_half(int64_t v)
{
    return v >= 0 ? v / 2 : -((-v + 1) / 2);
}

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
    if (!data)
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

/* Ints attribute NAME with exactly COUNT values, each >= MIN_VALUE, or DEF everywhere. */
static loom_status ints_attr(loom_infer_ctx *ctx, const char *name, size_t count, int64_t def,
                             int64_t min_value, int64_t *out)
{
    const int64_t *v;
    if (!loom_attr_list_get(ctx->attrs, name)) {
        for (size_t k = 0; k < count; k++)
            out[k] = def;
        return LOOM_OK;
    }
    size_t n = loom_infer_get_ints(ctx, name, &v);
    if (n != count)
        return loom_infer_fail(ctx, INVALID, "%s must have %zu values, got %zu", name, count, n);
    for (size_t k = 0; k < count; k++) {
        if (v[k] < min_value)
            return loom_infer_fail(ctx, INVALID, "%s has value %lld; must be at least %lld",
                                   name, (long long)v[k], (long long)min_value);
        out[k] = v[k];
    }
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

/* ---- ConvTranspose -------------------------------------------------------------------------- */

static loom_status infer_conv_transpose(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"kernel_shape", "strides",        "dilations",
                                        "pads",         "auto_pad",       "group",
                                        "output_padding", "output_shape", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INTS,   LOOM_ATTR_INTS,
                                           LOOM_ATTR_INTS, LOOM_ATTR_STRING, LOOM_ATTR_INT,
                                           LOOM_ATTR_INTS, LOOM_ATTR_INTS};
    static const char *const canonical[] = {"kernel_shape", "strides", "dilations", "pads",
                                            "output_padding", "group", NULL};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "W"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT));
    TRY(loom_ops_same_dtype(ctx, 1, "W", 0));
    const loom_tensor_desc *x = &ctx->inputs[0], *w = &ctx->inputs[1];
    if (x->rank < 3 || x->rank > 5)
        return loom_infer_fail(ctx, INVALID,
                               "input 0 (X) has rank %u; expected 3 to 5 ([N, C, spatial...])",
                               x->rank);
    if (w->rank != x->rank)
        return loom_infer_fail(ctx, INVALID,
                               "input 1 (W) has rank %u; expected %u like X ([C, M/group, "
                               "kernel...])",
                               w->rank, x->rank);
    const uint32_t s = x->rank - 2;
    int64_t group = loom_infer_get_int(ctx, "group", 1);
    if (group < 1)
        return loom_infer_fail(ctx, INVALID, "group is %lld; must be at least 1",
                               (long long)group);
    if (w->dims[0] != x->dims[1])
        return loom_infer_fail(ctx, INVALID, "X has %lld channels but W has %lld input channels",
                               (long long)x->dims[1], (long long)w->dims[0]);
    if (x->dims[1] % group != 0)
        return loom_infer_fail(ctx, INVALID, "X's %lld channels are not divisible by group %lld",
                               (long long)x->dims[1], (long long)group);
    int64_t m;
    if (__builtin_mul_overflow(w->dims[1], group, &m))
        return loom_infer_fail(ctx, INVALID, "output channels overflow");
    int64_t kernel[3], strides[3], dil[3], pads[6], opad[3], out[3];
    for (uint32_t i = 0; i < s; i++)
        kernel[i] = w->dims[2 + i];
    if (loom_attr_list_get(ctx->attrs, "kernel_shape")) {
        const int64_t *ks;
        size_t n = loom_infer_get_ints(ctx, "kernel_shape", &ks);
        if (n != s || memcmp(ks, kernel, s * sizeof *ks) != 0)
            return loom_infer_fail(ctx, INVALID, "kernel_shape differs from W's kernel dims");
    }
    TRY(ints_attr(ctx, "strides", s, 1, 1, strides));
    TRY(ints_attr(ctx, "dilations", s, 1, 1, dil));
    /* Canonical pads may be negative (see the header), so that a canonical node re-infers. */
    TRY(ints_attr(ctx, "pads", 2 * s, 0, INT32_MIN, pads));
    TRY(ints_attr(ctx, "output_padding", s, 0, 0, opad));
    if (loom_ops_has(ctx, 2)) {
        const loom_tensor_desc *b = &ctx->inputs[2];
        TRY(loom_ops_same_dtype(ctx, 2, "B", 0));
        if (b->rank != 1 || b->dims[0] != m)
            return loom_infer_fail(ctx, INVALID, "input 2 (B) must have shape [%lld]",
                                   (long long)m);
    }
    const char *auto_pad = loom_infer_get_string(ctx, "auto_pad", "NOTSET");
    static const char *const pads_modes[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", NULL};
    if (!is_one_of(auto_pad, pads_modes))
        return loom_infer_fail(ctx, INVALID,
                               "auto_pad is '%s'; expected NOTSET, SAME_UPPER, SAME_LOWER or "
                               "VALID",
                               auto_pad);
    int upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    int same = upper || strcmp(auto_pad, "SAME_LOWER") == 0;
    const int64_t *oshape = NULL;
    size_t n_oshape = loom_infer_get_ints(ctx, "output_shape", &oshape);
    if (loom_attr_list_get(ctx->attrs, "output_shape")) {
        if (n_oshape == s + 2)
            oshape += 2; /* some exporters give the whole shape */
        else if (n_oshape != s)
            return loom_infer_fail(ctx, INVALID,
                                   "output_shape must have %u values (one per spatial axis), "
                                   "got %zu",
                                   s, n_oshape);
    }
    if (strcmp(auto_pad, "VALID") == 0)
        memset(pads, 0, sizeof pads);
    for (uint32_t i = 0; i < s; i++) {
        if (dil[i] > INT32_MAX || strides[i] > INT32_MAX || kernel[i] > INT32_MAX ||
            x->dims[2 + i] > ((int64_t)1 << 40))
            return loom_infer_fail(ctx, INVALID, "spatial axis %u is too large", i);
        int64_t ek = (kernel[i] - 1) * dil[i] + 1;
        int64_t natural = strides[i] * (x->dims[2 + i] - 1) + opad[i] + ek;
        if (x->dims[2 + i] == 0)
            natural = 0;
        if (oshape || same) {
            int64_t want = oshape ? oshape[i] : x->dims[2 + i] * strides[i];
            if (want < 0)
                return loom_infer_fail(ctx, INVALID, "output_shape has a negative value");
            int64_t total = natural - want;
            /* ONNX's reference: SAME_UPPER puts the odd pad at the end, everything else at
             * the beginning. */
            pads[i] = upper ? floor_half(total) : total - floor_half(total);
            pads[s + i] = total - pads[i];
            out[i] = want;
        } else {
            out[i] = natural - pads[i] - pads[s + i];
            if (x->dims[2 + i] == 0)
                out[i] = 0;
            if (out[i] < 0)
                return loom_infer_fail(ctx, INVALID,
                                       "pads %lld + %lld exceed the output size %lld along "
                                       "spatial axis %u",
                                       (long long)pads[i], (long long)pads[s + i],
                                       (long long)natural, i);
        }
    }
    TRY(loom_infer_set_ints(ctx, "kernel_shape", s, kernel));
    TRY(loom_infer_set_ints(ctx, "strides", s, strides));
    TRY(loom_infer_set_ints(ctx, "dilations", s, dil));
    TRY(loom_infer_set_ints(ctx, "pads", 2 * (size_t)s, pads));
    TRY(loom_infer_set_ints(ctx, "output_padding", s, opad));
    TRY(loom_infer_set_int(ctx, "group", group));
    loom_ops_keep_only(ctx, canonical);
    int64_t dims[LOOM_MAX_RANK] = {x->dims[0], m};
    for (uint32_t i = 0; i < s; i++)
        dims[2 + i] = out[i];
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* Every input element multiplies a kernel slab of M/group * prod(kernel) weights. */
static void cost_conv_transpose(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *w = &node->inputs[1];
    double per_in = 1.0;
    for (uint32_t k = 1; k < w->rank; k++)
        per_in *= (double)w->dims[k];
    cost->flops = 2.0 * loom_ops_numel(&node->inputs[0]) * per_in;
    if (node->n_inputs > 2 && node->inputs[2].dtype != LOOM_DTYPE_UNDEFINED)
        cost->flops += loom_ops_numel(&node->outputs[0]);
}

/* ---- Resize --------------------------------------------------------------------------------- */

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
                                        NULL};
    static const loom_attr_kind kinds[] = {
        LOOM_ATTR_STRING, LOOM_ATTR_STRING, LOOM_ATTR_STRING, LOOM_ATTR_FLOAT, LOOM_ATTR_INT,
        LOOM_ATTR_FLOAT,  LOOM_ATTR_INT,    LOOM_ATTR_INTS,   LOOM_ATTR_STRING, LOOM_ATTR_FLOATS};
    static const char *const canonical[] = {"mode", "coordinate_transformation_mode",
                                            "nearest_mode", "scales", NULL};
    static const char *const modes[] = {"nearest", "linear", NULL};
    static const char *const ctms[] = {"half_pixel",   "pytorch_half_pixel",   "align_corners",
                                       "asymmetric",   "tf_half_pixel_for_nn", NULL};
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
    if (strcmp(mode, "cubic") == 0)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "mode 'cubic' is not supported (only nearest and linear)");
    if (!is_one_of(mode, modes))
        return loom_infer_fail(ctx, INVALID, "mode is '%s'; expected nearest, linear or cubic",
                               mode);
    if (strcmp(ctm, "tf_crop_and_resize") == 0)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "coordinate_transformation_mode 'tf_crop_and_resize' is not "
                               "supported");
    if (!is_one_of(ctm, ctms))
        return loom_infer_fail(ctx, INVALID,
                               "coordinate_transformation_mode '%s' is not one of half_pixel, "
                               "pytorch_half_pixel, align_corners, asymmetric, "
                               "tf_half_pixel_for_nn",
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
    int linear = strcmp(mode, "linear") == 0;
    if (linear && x->dtype != LOOM_DTYPE_F32)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "linear mode needs float32 X, not %s",
                               loom_dtype_name(x->dtype));
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
    if (linear && loom_infer_get_int(ctx, "antialias", 0) != 0)
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
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, r, out);
    return loom_ops_finish(ctx);
}

/* Linear: 2^(resized axes) multiply-adds per output; nearest: an index computation. */
static void cost_resize(const loom_node_desc *node, loom_op_cost *cost)
{
    const loom_attr *m = loom_node_attr(node, "mode");
    int linear = m && m->kind == LOOM_ATTR_STRING && strcmp(m->s, "linear") == 0;
    double per = 1.0;
    if (linear)
        for (uint32_t d = 0; d < node->inputs[0].rank; d++)
            if (node->inputs[0].dims[d] != node->outputs[0].dims[d])
                per *= 2.0;
    cost_io_flops(node, cost, linear ? 2.0 * per : 1.0);
}

/* ---- Pad ------------------------------------------------------------------------------------ */

static loom_status infer_pad(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"mode", "pads", "value", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING, LOOM_ATTR_INTS, LOOM_ATTR_FLOAT};
    static const char *const canonical[] = {"mode", "pads", "value", NULL};
    static const char *const modes[] = {"constant", "reflect", "edge", NULL};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    const uint32_t r = x->rank;
    const char *mode = loom_infer_get_string(ctx, "mode", "constant");
    if (strcmp(mode, "wrap") == 0)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "mode 'wrap' (opset 19) is not supported");
    if (!is_one_of(mode, modes))
        return loom_infer_fail(ctx, INVALID, "mode is '%s'; expected constant, reflect or edge",
                               mode);
    int64_t given[2 * LOOM_MAX_RANK];
    size_t n = 0;
    if (loom_ops_has(ctx, 1)) {
        TRY(loom_ops_const_ints(ctx, 1, "pads", 2 * LOOM_MAX_RANK, given, &n));
    } else if (loom_attr_list_get(ctx->attrs, "pads")) { /* opset < 11, and the canonical form */
        const int64_t *v;
        n = loom_infer_get_ints(ctx, "pads", &v);
        if (n > 2 * LOOM_MAX_RANK)
            return loom_infer_fail(ctx, INVALID, "pads has %zu values, more than %d", n,
                                   2 * LOOM_MAX_RANK);
        if (n)
            memcpy(given, v, n * sizeof *v);
    } else {
        return loom_infer_fail(ctx, INVALID, "input 1 (pads) is required");
    }
    int64_t axes[LOOM_MAX_RANK];
    size_t n_axes = r;
    if (loom_ops_has(ctx, 3)) {
        TRY(loom_ops_const_ints(ctx, 3, "axes", LOOM_MAX_RANK, axes, &n_axes));
        int seen[LOOM_MAX_RANK] = {0};
        for (size_t k = 0; k < n_axes; k++) {
            TRY(loom_ops_axis(ctx, "axes entry", axes[k], r, &axes[k]));
            if (seen[axes[k]]++)
                return loom_infer_fail(ctx, INVALID, "axis %lld appears twice in axes",
                                       (long long)axes[k]);
        }
    } else {
        for (size_t k = 0; k < r; k++)
            axes[k] = (int64_t)k;
    }
    if (n != 2 * n_axes)
        return loom_infer_fail(ctx, INVALID, "pads must have %zu values, got %zu", 2 * n_axes, n);
    int64_t pads[2 * LOOM_MAX_RANK] = {0};
    for (size_t k = 0; k < n_axes; k++) {
        pads[axes[k]] = given[k];
        pads[r + axes[k]] = given[n_axes + k];
    }
    float value = loom_infer_get_float(ctx, "value", 0.0f);
    if (loom_ops_has(ctx, 2)) {
        const loom_tensor_desc *v = &ctx->inputs[2];
        TRY(loom_ops_same_dtype(ctx, 2, "constant_value", 0));
        if (loom_tensor_desc_numel(v) != 1 || v->rank > 1)
            return loom_infer_fail(ctx, INVALID,
                                   "input 2 (constant_value) must be a scalar (or one value)");
        if (ctx->input_constants && ctx->input_constants[2])
            value = loom_ops_scalar_to_float(v->dtype, ctx->input_constants[2]);
    }
    int64_t dims[LOOM_MAX_RANK];
    for (uint32_t d = 0; d < r; d++) {
        int64_t o;
        if (pads[d] < -((int64_t)1 << 48) || pads[d] > ((int64_t)1 << 48) ||
            pads[r + d] < -((int64_t)1 << 48) || pads[r + d] > ((int64_t)1 << 48))
            return loom_infer_fail(ctx, INVALID, "pads of axis %u are too large", d);
        o = x->dims[d] + pads[d] + pads[r + d];
        if (o < 0)
            return loom_infer_fail(ctx, INVALID,
                                   "pads %lld and %lld crop more than axis %u's %lld elements",
                                   (long long)pads[d], (long long)pads[r + d], d,
                                   (long long)x->dims[d]);
        if (strcmp(mode, "constant") != 0 && x->dims[d] == 0 && o > 0)
            return loom_infer_fail(ctx, INVALID, "mode '%s' cannot pad the empty axis %u", mode,
                                   d);
        dims[d] = o;
    }
    TRY(loom_infer_set_string(ctx, "mode", mode));
    TRY(loom_infer_set_ints(ctx, "pads", 2 * (size_t)r, pads));
    TRY(loom_infer_set_float(ctx, "value", value));
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, r, dims);
    return loom_ops_finish(ctx);
}

/* ---- Tile ----------------------------------------------------------------------------------- */

static loom_status infer_tile(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"repeats", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "input"));
    TRY(loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL));
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t rep[LOOM_MAX_RANK];
    size_t n;
    if (loom_ops_has(ctx, 1)) {
        TRY(loom_ops_const_ints(ctx, 1, "repeats", LOOM_MAX_RANK, rep, &n));
    } else {
        const int64_t *v;
        n = loom_infer_get_ints(ctx, "repeats", &v);
        if (!loom_attr_list_get(ctx->attrs, "repeats"))
            return loom_infer_fail(ctx, INVALID, "input 1 (repeats) is required");
        if (n > LOOM_MAX_RANK)
            n = LOOM_MAX_RANK + 1;
        else
            if (n)
                memcpy(rep, v, n * sizeof *v);
    }
    if (n != x->rank)
        return loom_infer_fail(ctx, INVALID, "repeats must have %u values (the input's rank), "
                                             "got %zu",
                               x->rank, n);
    int64_t dims[LOOM_MAX_RANK];
    for (uint32_t d = 0; d < x->rank; d++) {
        if (rep[d] < 0)
            return loom_infer_fail(ctx, INVALID, "repeats has a negative value %lld",
                                   (long long)rep[d]);
        if (__builtin_mul_overflow(x->dims[d], rep[d], &dims[d]))
            return loom_infer_fail(ctx, INVALID, "axis %u overflows", d);
    }
    TRY(loom_infer_set_ints(ctx, "repeats", x->rank, rep));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* ---- Einsum --------------------------------------------------------------------------------- */

#define EIN_MAX_OPS 2

/* Parse EQ for the inputs of CTX into the canonical explicit form CANON. */
static loom_status einsum_parse(loom_infer_ctx *ctx, const char *eq, char *canon, size_t cap,
                                int64_t *out_dims, uint32_t *out_rank)
{
    char terms[EIN_MAX_OPS + 1][64];
    int ell[EIN_MAX_OPS + 1]; /* position of "..." in each term, -1 when none */
    size_t n_terms = 0, len = 0;
    int explicit_out = 0;
    int used[128] = {0};
    memset(terms, 0, sizeof terms);
    for (int k = 0; k <= EIN_MAX_OPS; k++)
        ell[k] = -1;
    for (const char *p = eq; *p; p++) {
        char c = *p;
        if (c == ' ' || c == '\t')
            continue;
        if (c == ',' || (c == '-' && p[1] == '>')) {
            if (explicit_out)
                return loom_infer_fail(ctx, INVALID, "equation '%s': ',' or '->' after '->'",
                                       eq);
            if (c == '-') {
                explicit_out = 1;
                p++;
            }
            if (++n_terms > EIN_MAX_OPS)
                return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                       "equation '%s': more than %d operands are not supported",
                                       eq, EIN_MAX_OPS);
            len = 0;
            continue;
        }
        if (c == '.') {
            if (strncmp(p, "...", 3) != 0 || ell[n_terms] >= 0)
                return loom_infer_fail(ctx, INVALID, "equation '%s': bad ellipsis", eq);
            ell[n_terms] = (int)len;
            p += 2;
            continue;
        }
        if (!isalpha((unsigned char)c))
            return loom_infer_fail(ctx, INVALID, "equation '%s': invalid character '%c'", eq, c);
        if (len + 1 >= sizeof terms[0])
            return loom_infer_fail(ctx, INVALID, "equation '%s': term too long", eq);
        terms[n_terms][len++] = c;
        used[(unsigned char)c] = 1;
    }
    size_t n_ops = explicit_out ? n_terms : n_terms + 1;
    if (n_ops != ctx->n_inputs)
        return loom_infer_fail(ctx, INVALID, "equation '%s' has %zu operands but %u inputs given",
                               eq, n_ops, ctx->n_inputs);
    /* Ellipsis dims: as many as the largest count over operands, labelled from 'Z' down. */
    uint32_t n_ell = 0;
    for (size_t i = 0; i < n_ops; i++) {
        size_t l = strlen(terms[i]);
        uint32_t rank = ctx->inputs[i].rank;
        if (ell[i] < 0) {
            if (l != rank)
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': term %zu has %zu labels for an input of "
                                       "rank %u",
                                       eq, i, l, rank);
        } else {
            if (l > rank)
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': term %zu has %zu labels for an input of "
                                       "rank %u",
                                       eq, i, l, rank);
            if (rank - l > n_ell)
                n_ell = (uint32_t)(rank - l);
        }
    }
    char ell_labels[LOOM_MAX_RANK + 1] = {0};
    for (uint32_t e = 0, c = 'Z'; e < n_ell; c--) {
        if (c < 'A')
            return loom_infer_fail(ctx, INVALID, "equation '%s': out of labels", eq);
        if (!used[c])
            ell_labels[e++] = (char)c;
    }
    char full[EIN_MAX_OPS + 1][64];
    for (size_t i = 0; i < n_ops; i++) {
        size_t l = strlen(terms[i]);
        if (ell[i] < 0) {
            memcpy(full[i], terms[i], l + 1);
            continue;
        }
        uint32_t ne = ctx->inputs[i].rank - (uint32_t)l;
        size_t at = 0;
        for (int k = 0; k < ell[i]; k++)
            full[i][at++] = terms[i][k];
        for (uint32_t e = 0; e < ne; e++) /* right-aligned, as broadcasting is */
            full[i][at++] = ell_labels[n_ell - ne + e];
        for (size_t k = (size_t)ell[i]; k < l; k++)
            full[i][at++] = terms[i][k];
        full[i][at] = 0;
    }
    /* Sizes per label; ellipsis labels broadcast (1 against n). */
    int64_t size[128];
    for (int c = 0; c < 128; c++)
        size[c] = -1;
    for (size_t i = 0; i < n_ops; i++) {
        for (uint32_t d = 0; full[i][d]; d++) {
            unsigned c = (unsigned char)full[i][d];
            int64_t v = ctx->inputs[i].dims[d];
            /* Upper-case labels are those of the canonical form's ellipses. */
            int is_ell = strchr(ell_labels, (int)c) != NULL || (c >= 'A' && c <= 'Z');
            if (size[c] < 0 || (is_ell && size[c] == 1))
                size[c] = v;
            else if (size[c] != v && !(is_ell && v == 1))
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': label '%c' has sizes %lld and %lld", eq,
                                       (char)c, (long long)size[c], (long long)v);
        }
    }
    char outt[64];
    if (explicit_out) {
        const char *o = terms[n_terms];
        size_t at = 0, l = strlen(o);
        int oell = ell[n_terms];
        if (oell < 0 && n_ell > 0) {
            /* numpy drops nothing silently: ellipsis dims must appear in the output */
            return loom_infer_fail(ctx, INVALID,
                                   "equation '%s': the output must contain '...'", eq);
        }
        for (int k = 0; k < (oell < 0 ? (int)l : oell); k++)
            outt[at++] = o[k];
        if (oell >= 0) {
            for (uint32_t e = 0; e < n_ell; e++)
                outt[at++] = ell_labels[e];
            for (size_t k = (size_t)oell; k < l; k++)
                outt[at++] = o[k];
        }
        outt[at] = 0;
        for (size_t k = 0; k < at; k++) {
            if (size[(unsigned char)outt[k]] < 0)
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': output label '%c' is in no input", eq,
                                       outt[k]);
            if (strchr(outt + k + 1, outt[k]))
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': output label '%c' appears twice", eq,
                                       outt[k]);
        }
    } else {
        /* Implicit: ellipsis dims, then labels seen exactly once, in alphabetical order. */
        size_t at = 0;
        for (uint32_t e = 0; e < n_ell; e++)
            outt[at++] = ell_labels[e];
        for (int c = 'A'; c <= 'z'; c++) {
            if (!isalpha(c) || !used[c])
                continue;
            int count = 0;
            for (size_t i = 0; i < n_ops; i++)
                for (const char *q = terms[i]; *q; q++)
                    count += *q == c;
            if (count == 1)
                outt[at++] = (char)c;
        }
        outt[at] = 0;
    }
    size_t orank = strlen(outt);
    if (orank > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, INVALID, "equation '%s': output rank %zu exceeds %d", eq,
                               orank, LOOM_MAX_RANK);
    for (size_t k = 0; k < orank; k++)
        out_dims[k] = size[(unsigned char)outt[k]];
    *out_rank = (uint32_t)orank;
    size_t at = 0;
    canon[0] = 0;
    for (size_t i = 0; i < n_ops; i++)
        at += (size_t)snprintf(canon + at, cap - at, "%s%s", i ? "," : "", full[i]);
    snprintf(canon + at, cap - at, "->%s", outt);
    return LOOM_OK;
}

static loom_status infer_einsum(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"equation", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    const char *eq = loom_infer_get_string(ctx, "equation", NULL);
    if (!eq)
        return loom_infer_fail(ctx, INVALID, "attribute 'equation' is required");
    for (uint32_t i = 0; i < ctx->n_inputs; i++) {
        TRY(loom_ops_require(ctx, i, "Inputs"));
        TRY(loom_ops_check_dtype(ctx, i, "Inputs",
                                 LOOM_DTS(LOOM_DTYPE_F32) | LOOM_DTS_INDEX));
        TRY(loom_ops_same_dtype(ctx, i, "Inputs", 0));
    }
    char canon[256];
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank = 0;
    TRY(einsum_parse(ctx, eq, canon, sizeof canon, dims, &rank));
    TRY(loom_infer_set_string(ctx, "equation", canon));
    loom_ops_set_output(ctx, 0, ctx->inputs[0].dtype, rank, dims);
    return loom_ops_finish(ctx);
}

/* A multiply-add per point of the full label space (what a GEMM of the contraction does). */
static void cost_einsum(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_attr *a = loom_node_attr(node, "equation");
    int64_t size[128] = {0};
    int seen[128] = {0};
    double space = 1.0;
    uint32_t op = 0, d = 0;
    for (const char *p = a && a->s ? a->s : ""; *p && *p != '-'; p++) {
        if (*p == ',') {
            op++;
            d = 0;
            continue;
        }
        unsigned c = (unsigned char)*p & 127u;
        if (op < node->n_inputs && d < node->inputs[op].rank &&
            node->inputs[op].dims[d] > size[c])
            size[c] = node->inputs[op].dims[d];
        d++;
        seen[c] = 1;
    }
    for (int c = 0; c < 128; c++)
        if (seen[c])
            space *= (double)size[c];
    cost->flops = 2.0 * space;
}

/* ---- InstanceNormalization ------------------------------------------------------------------ */

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
    TRY(loom_infer_set_float(ctx, "epsilon", loom_infer_get_float(ctx, "epsilon", 1e-5f)));
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static void cost_instance_norm(const loom_node_desc *node, loom_op_cost *cost)
{
    cost_io_flops(node, cost, 6.0);
}

/* ---- LSTM and GRU --------------------------------------------------------------------------- */

/* Whether the comma-separated names in LIST (case-insensitive, blanks ignored) are DEFS
 * repeated for each of DIRS directions. */
static int default_activations(const char *list, const char *const *defs, size_t n_defs,
                               int64_t dirs)
{
    const char *p = list;
    for (int64_t d = 0; d < dirs; d++) {
        for (size_t k = 0; k < n_defs; k++) {
            while (*p == ' ' || *p == ',')
                p++;
            size_t l = strlen(defs[k]);
            for (size_t j = 0; j < l; j++)
                if (tolower((unsigned char)p[j]) != tolower((unsigned char)defs[k][j]))
                    return 0;
            p += l;
            if (*p && *p != ',' && *p != ' ')
                return 0;
        }
    }
    while (*p == ' ' || *p == ',')
        p++;
    return *p == 0;
}

static loom_status infer_rnn(loom_infer_ctx *ctx, int lstm)
{
    static const char *const lstm_names[] = {"activation_alpha", "activation_beta",
                                             "activations",      "clip",
                                             "direction",        "hidden_size",
                                             "input_forget",     "layout",
                                             NULL};
    static const loom_attr_kind lstm_kinds[] = {LOOM_ATTR_FLOATS, LOOM_ATTR_FLOATS,
                                                LOOM_ATTR_STRING, LOOM_ATTR_FLOAT,
                                                LOOM_ATTR_STRING, LOOM_ATTR_INT,
                                                LOOM_ATTR_INT,    LOOM_ATTR_INT};
    static const char *const gru_names[] = {"activation_alpha", "activation_beta",
                                            "activations",      "clip",
                                            "direction",        "hidden_size",
                                            "linear_before_reset", "layout",
                                            NULL};
    static const char *const lstm_canon[] = {"direction", "hidden_size", "layout", "clip",
                                             "input_forget", NULL};
    static const char *const gru_canon[] = {"direction", "hidden_size", "layout", "clip",
                                            "linear_before_reset", NULL};
    static const char *const lstm_acts[] = {"Sigmoid", "Tanh", "Tanh"};
    static const char *const gru_acts[] = {"Sigmoid", "Tanh"};
    static const char *const dirs_names[] = {"forward", "reverse", "bidirectional", NULL};
    static const char *const lstm_in[] = {"X", "W", "R", "B", "sequence_lens", "initial_h",
                                          "initial_c", "P"};
    static const char *const gru_in[] = {"X", "W", "R", "B", "sequence_lens", "initial_h"};
    const char *const *in_names = lstm ? lstm_in : gru_in;
    const int64_t gates = lstm ? 4 : 3;
    TRY(loom_infer_check_attrs(ctx, lstm ? lstm_names : gru_names, lstm_kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "W"));
    TRY(loom_ops_require(ctx, 2, "R"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS(LOOM_DTYPE_F32)));
    const char *dir = loom_infer_get_string(ctx, "direction", "forward");
    if (!is_one_of(dir, dirs_names))
        return loom_infer_fail(ctx, INVALID,
                               "direction is '%s'; expected forward, reverse or bidirectional",
                               dir);
    const int64_t nd = strcmp(dir, "bidirectional") == 0 ? 2 : 1;
    const char *acts = loom_infer_get_string(ctx, "activations", NULL);
    if (acts && !default_activations(acts, lstm ? lstm_acts : gru_acts, lstm ? 3 : 2, nd))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "activations '%s' are not supported: only the defaults (%s)",
                               acts, lstm ? "Sigmoid, Tanh, Tanh" : "Sigmoid, Tanh");
    int64_t layout = loom_infer_get_int(ctx, "layout", 0);
    if (layout != 0 && layout != 1)
        return loom_infer_fail(ctx, INVALID, "layout is %lld; expected 0 or 1",
                               (long long)layout);
    const loom_tensor_desc *x = &ctx->inputs[0], *w = &ctx->inputs[1], *r = &ctx->inputs[2];
    if (x->rank != 3)
        return loom_infer_fail(ctx, INVALID, "input 0 (X) must be 3-D, not of rank %u", x->rank);
    const int64_t seq = layout ? x->dims[1] : x->dims[0];
    const int64_t batch = layout ? x->dims[0] : x->dims[1];
    const int64_t in_size = x->dims[2];
    int64_t h = loom_infer_get_int(ctx, "hidden_size", -1);
    if (r->rank == 3 && h < 0)
        h = r->dims[2];
    if (h < 1)
        return loom_infer_fail(ctx, INVALID, "hidden_size must be at least 1");
    char want[128];
    const int64_t wd[3] = {nd, gates * h, in_size}, rd[3] = {nd, gates * h, h};
    for (uint32_t i = 1; i < ctx->n_inputs && i < (lstm ? 8u : 6u); i++) {
        if (!loom_ops_has(ctx, i))
            continue;
        const loom_tensor_desc *t = &ctx->inputs[i];
        int64_t e[3];
        uint32_t er = 3;
        switch (i) {
        case 1: memcpy(e, wd, sizeof e); break;
        case 2: memcpy(e, rd, sizeof e); break;
        case 3: er = 2, e[0] = nd, e[1] = 2 * gates * h; break;
        case 4: er = 1, e[0] = batch; break;
        case 5:
        case 6:
            e[0] = layout ? batch : nd, e[1] = layout ? nd : batch, e[2] = h;
            break;
        default: er = 2, e[0] = nd, e[1] = 3 * h; break;
        }
        if (i == 4)
            TRY(loom_ops_check_dtype(ctx, i, in_names[i], LOOM_DTS(LOOM_DTYPE_I32)));
        else
            TRY(loom_ops_same_dtype(ctx, i, in_names[i], 0));
        int ok = t->rank == er;
        for (uint32_t k = 0; ok && k < er; k++)
            ok = t->dims[k] == e[k];
        if (!ok) {
            char got[128];
            return loom_infer_fail(ctx, INVALID, "input %u (%s) has shape %s; expected %s", i,
                                   in_names[i], loom_dims_format(t->rank, t->dims, got, sizeof got),
                                   loom_dims_format(er, e, want, sizeof want));
        }
    }
    (void)w;
    float clip = loom_infer_get_float(ctx, "clip", INFINITY);
    if (!(clip > 0.0f))
        return loom_infer_fail(ctx, INVALID, "clip must be positive, got %g", (double)clip);
    TRY(loom_infer_set_string(ctx, "direction", dir));
    TRY(loom_infer_set_int(ctx, "hidden_size", h));
    TRY(loom_infer_set_int(ctx, "layout", layout));
    TRY(loom_infer_set_float(ctx, "clip", clip));
    if (lstm)
        TRY(loom_infer_set_int(ctx, "input_forget",
                               loom_infer_get_int(ctx, "input_forget", 0) != 0));
    else
        TRY(loom_infer_set_int(ctx, "linear_before_reset",
                               loom_infer_get_int(ctx, "linear_before_reset", 0) != 0));
    loom_ops_keep_only(ctx, lstm ? lstm_canon : gru_canon);
    const int64_t y[4] = {layout ? batch : seq, layout ? seq : nd, layout ? nd : batch, h};
    const int64_t yh[3] = {layout ? batch : nd, layout ? nd : batch, h};
    for (uint32_t o = 0; o < ctx->n_outputs; o++) {
        if (o == 0)
            loom_ops_set_output(ctx, 0, x->dtype, 4, y);
        else
            loom_ops_set_output(ctx, o, x->dtype, 3, yh);
    }
    return loom_ops_finish(ctx);
}

static loom_status infer_lstm(loom_infer_ctx *ctx) { return infer_rnn(ctx, 1); }
static loom_status infer_gru(loom_infer_ctx *ctx) { return infer_rnn(ctx, 0); }

/* Per step and direction: the input and recurrent GEMMs (2 * gates*H * (I + H) per batch row)
 * and the gates' activations. */
static void cost_rnn(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[1];
    double steps = (double)x->dims[0] * (double)x->dims[1] * (double)w->dims[0];
    double gh = (double)w->dims[1];
    double h = gh / (node->op == LOOM_OP_LSTM ? 4.0 : 3.0);
    cost->flops = steps * (2.0 * gh * ((double)x->dims[2] + h) + gh * (T + 2.0));
}

/* ---- TopK ----------------------------------------------------------------------------------- */

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

/* ---- ArgMax, ArgMin ------------------------------------------------------------------------- */

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

/* ---- ScatterElements, GatherElements -------------------------------------------------------- */

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

/* ---- LogSoftmax, PRelu ---------------------------------------------------------------------- */

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

/* ---- ReduceMin, ReduceProd ------------------------------------------------------------------ */

/* As ReduceMax (ops_nn.c): axes from constant input 1 or the attribute, sorted and unique. */
static loom_status infer_reduce(loom_infer_ctx *ctx, uint32_t mask)
{
    static const char *const names[] = {"axes", "keepdims", "noop_with_empty_axes", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axes", "keepdims", NULL};
    int64_t axes[LOOM_MAX_RANK];
    size_t n = 0;
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "data"));
    TRY(loom_ops_check_dtype(ctx, 0, "data", mask));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (loom_ops_has(ctx, 1)) {
        TRY(loom_ops_const_ints(ctx, 1, "axes", LOOM_MAX_RANK, axes, &n));
    } else {
        const int64_t *v;
        n = loom_infer_get_ints(ctx, "axes", &v);
        if (n > LOOM_MAX_RANK)
            return loom_infer_fail(ctx, INVALID, "axes has %zu values, more than the maximum "
                                                 "rank %d",
                                   n, LOOM_MAX_RANK);
        if (n)
            memcpy(axes, v, n * sizeof *v);
    }
    /* A present but empty 'axes' is the canonical form of noop_with_empty_axes=1. */
    int noop = loom_infer_get_int(ctx, "noop_with_empty_axes", 0) != 0 ||
               (!loom_ops_has(ctx, 1) && loom_attr_list_get(ctx->attrs, "axes") != NULL);
    int keepdims = loom_infer_get_int(ctx, "keepdims", 1) != 0;
    if (n == 0 && !noop) {
        n = x->rank;
        for (size_t k = 0; k < n; k++)
            axes[k] = (int64_t)k;
    }
    int reduced[LOOM_MAX_RANK] = {0};
    for (size_t k = 0; k < n; k++) {
        TRY(loom_ops_axis(ctx, "axes entry", axes[k], x->rank, &axes[k]));
        if (reduced[axes[k]])
            return loom_infer_fail(ctx, INVALID, "axis %lld appears twice in axes",
                                   (long long)axes[k]);
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
    TRY(loom_infer_set_ints(ctx, "axes", n, axes));
    TRY(loom_infer_set_int(ctx, "keepdims", keepdims));
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_reduce_min(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_ARITH);
}

static loom_status infer_reduce_prod(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_FLOAT | LOOM_DTS_INDEX);
}

/* ---- the definitions ------------------------------------------------------------------------ */

#define DEF(var, opid, onnx, in_min, in_max, out_min, out_max, inf, cst)                         \
    static const loom_op_def var = {.id = opid,                                                  \
                                    .name = onnx,                                                \
                                    .min_inputs = in_min,                                        \
                                    .max_inputs = in_max,                                        \
                                    .min_outputs = out_min,                                      \
                                    .max_outputs = out_max,                                      \
                                    .infer = inf,                                                \
                                    .cost = cst}

DEF(def_conv_transpose, LOOM_OP_CONV_TRANSPOSE, "ConvTranspose", 2, 3, 1, 1, infer_conv_transpose,
    cost_conv_transpose);
DEF(def_resize, LOOM_OP_RESIZE, "Resize", 1, 4, 1, 1, infer_resize, cost_resize);
DEF(def_pad, LOOM_OP_PAD, "Pad", 1, 4, 1, 1, infer_pad, loom_ops_cost_io);
DEF(def_tile, LOOM_OP_TILE, "Tile", 1, 2, 1, 1, infer_tile, loom_ops_cost_io);
DEF(def_arg_max, LOOM_OP_ARG_MAX, "ArgMax", 1, 1, 1, 1, infer_arg, cost_per_input);
DEF(def_top_k, LOOM_OP_TOP_K, "TopK", 1, 2, 1, 2, infer_top_k, cost_top_k);
DEF(def_scatter_elements, LOOM_OP_SCATTER_ELEMENTS, "ScatterElements", 3, 3, 1, 1,
    infer_scatter_elements, cost_scatter);
DEF(def_gather_elements, LOOM_OP_GATHER_ELEMENTS, "GatherElements", 2, 2, 1, 1,
    infer_gather_elements, cost_gather_elements);
DEF(def_einsum, LOOM_OP_EINSUM, "Einsum", 1, EIN_MAX_OPS, 1, 1, infer_einsum, cost_einsum);
DEF(def_instance_norm, LOOM_OP_INSTANCE_NORMALIZATION, "InstanceNormalization", 3, 3, 1, 1,
    infer_instance_norm, cost_instance_norm);
DEF(def_lstm, LOOM_OP_LSTM, "LSTM", 3, 8, 1, 3, infer_lstm, cost_rnn);
DEF(def_gru, LOOM_OP_GRU, "GRU", 3, 6, 1, 2, infer_gru, cost_rnn);
DEF(def_arg_min, LOOM_OP_ARG_MIN, "ArgMin", 1, 1, 1, 1, infer_arg, cost_per_input);
DEF(def_reduce_min, LOOM_OP_REDUCE_MIN, "ReduceMin", 1, 2, 1, 1, infer_reduce_min,
    cost_per_input);
DEF(def_reduce_prod, LOOM_OP_REDUCE_PROD, "ReduceProd", 1, 2, 1, 1, infer_reduce_prod,
    cost_per_input);
DEF(def_prelu, LOOM_OP_PRELU, "PRelu", 2, 2, 1, 1, infer_prelu, cost_prelu);
DEF(def_log_softmax, LOOM_OP_LOG_SOFTMAX, "LogSoftmax", 1, 1, 1, 1, infer_log_softmax,
    cost_log_softmax);

/* In loom_op_id order. */
static const loom_op_def *const k_nn2_ops[] = {
    &def_conv_transpose, &def_resize,         &def_pad,         &def_tile,
    &def_arg_max,        &def_top_k,          &def_scatter_elements,
    &def_gather_elements, &def_einsum,        &def_instance_norm, &def_lstm,
    &def_gru,            &def_arg_min,        &def_reduce_min,  &def_reduce_prod,
    &def_prelu,          &def_log_softmax,
};

const loom_op_set loom_ops_nn2 = {k_nn2_ops, sizeof k_nn2_ops / sizeof k_nn2_ops[0]};
