/*
 * Layout and shape operators of the registry: Reshape, Transpose, Flatten, Concat, Split,
 * Slice, Squeeze, Unsqueeze, Expand, Pad and Tile. Shape and dtype inference, attribute
 * canonicalisation (graph/ops.h) and cost (bytes moved; no arithmetic). Gather is in
 * ops_indexing.c, Resize in ops_resize.c.
 *
 * CANONICAL ATTRIBUTES (besides those graph/ops.h lists):
 *   Pad                  mode:s ("constant" | "reflect" | "edge") pads:ints[2*rank] (begins
 *                        then ends for EVERY axis; negative values crop) value:f (the constant
 *                        value when input 2 is a constant, else 0; when input 2 is present the
 *                        kernel reads it, which is exact for integer dtypes). Inputs 1 and 3
 *                        are ignored by kernels.
 *   Tile                 repeats:ints[rank] (input 1 is ignored by kernels)
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

static loom_status need_data(loom_infer_ctx *ctx, const char *what)
{
    loom_status st = loom_ops_require(ctx, 0, what);
    return st != LOOM_OK ? st : loom_ops_check_dtype(ctx, 0, what, LOOM_DTS_ALL);
}

/* Resolve N axes against RANK in place (non-negative), rejecting repeats; WHAT names them. */
static loom_status resolve_axes(loom_infer_ctx *ctx, const char *what, int64_t *axes, size_t n,
                                int64_t rank)
{
    loom_status st;
    for (size_t k = 0; k < n; k++) {
        if ((st = loom_ops_axis(ctx, what, axes[k], rank, &axes[k])) != LOOM_OK)
            return st;
        for (size_t j = 0; j < k; j++)
            if (axes[j] == axes[k])
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "axis %lld appears twice in %s", (long long)axes[k], what);
    }
    return LOOM_OK;
}

static loom_status infer_reshape(loom_infer_ctx *ctx)
{
    /* 'shape' is accepted so that a canonical node infers to itself (with input 1 too: then the
     * resolved attribute wins, see below). */
    static const char *const names[] = {"allowzero", "shape", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INTS};
    static const char *const canonical[] = {"shape", NULL};
    loom_status st;
    int64_t shape[LOOM_MAX_RANK];
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "data")) != LOOM_OK ||
        (st = loom_ops_const_ints(ctx, 1, "shape", LOOM_MAX_RANK, shape, &n)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    int allowzero = loom_infer_get_int(ctx, "allowzero", 0) != 0;
    /* A canonical node inferred again (a pass rebuilding the graph) has both: its 'shape' is
     * the resolved one, whose zeros are real dims, and allowzero is gone. */
    const int64_t *resolved;
    size_t n_resolved = loom_infer_get_ints(ctx, "shape", &resolved);
    if (loom_attr_list_get(ctx->attrs, "shape") && n_resolved == n) {
        for (size_t k = 0; k < n; k++)
            shape[k] = resolved[k];
        allowzero = 1;
    }
    int64_t known = 1, in_numel = 1;
    long infer_at = -1;
    int overflow = 0;
    for (size_t k = 0; k < n; k++) {
        if (shape[k] == -1) {
            if (infer_at >= 0)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "input 1 (shape) has more than one -1");
            infer_at = (long)k;
            continue;
        }
        if (shape[k] < -1)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 1 (shape) has an invalid dimension %lld",
                                   (long long)shape[k]);
        if (shape[k] == 0 && !allowzero) {
            /* 0 copies the input's dim at the same position (ONNX, allowzero=0). */
            if (k >= x->rank)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "input 1 (shape) has 0 at position %zu, but the input "
                                       "has only %u dims to copy",
                                       k, x->rank);
            shape[k] = x->dims[k];
        }
        if (__builtin_mul_overflow(known, shape[k], &known))
            overflow = 1;
    }
    for (uint32_t k = 0; k < x->rank; k++)
        in_numel *= x->dims[k]; /* the input's own count was checked when it was made */
    char a[160], b[160];
    if (infer_at >= 0) {
        if (overflow || known == 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "cannot infer the -1 in shape %s from %lld elements",
                                   loom_dims_format((uint32_t)n, shape, b, sizeof b),
                                   (long long)in_numel);
        if (in_numel % known != 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "cannot reshape %s (%lld elements) into %s",
                                   loom_dims_format(x->rank, x->dims, a, sizeof a),
                                   (long long)in_numel,
                                   loom_dims_format((uint32_t)n, shape, b, sizeof b));
        shape[infer_at] = in_numel / known;
    } else if (overflow || known != in_numel) {
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "cannot reshape %s (%lld elements) into %s (%s elements)",
                               loom_dims_format(x->rank, x->dims, a, sizeof a),
                               (long long)in_numel,
                               loom_dims_format((uint32_t)n, shape, b, sizeof b),
                               overflow ? "too many" : "a different number of");
    }
    if ((st = loom_infer_set_ints(ctx, "shape", n, shape)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, (uint32_t)n, shape);
    return loom_ops_finish(ctx);
}

static loom_status infer_transpose(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"perm", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "data")) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t perm[LOOM_MAX_RANK], dims[LOOM_MAX_RANK];
    if (loom_attr_list_get(ctx->attrs, "perm")) {
        const int64_t *v;
        size_t n = loom_infer_get_ints(ctx, "perm", &v);
        if (n != x->rank)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'perm' has %zu values; expected %u (the rank)", n,
                                   x->rank);
        memcpy(perm, v, n * sizeof perm[0]);
        /* Distinct in-range axes: a permutation. */
        if ((st = resolve_axes(ctx, "perm", perm, n, x->rank)) != LOOM_OK)
            return st;
    } else {
        for (uint32_t k = 0; k < x->rank; k++)
            perm[k] = x->rank - 1 - k;
    }
    for (uint32_t k = 0; k < x->rank; k++)
        dims[k] = x->dims[perm[k]];
    if ((st = loom_infer_set_ints(ctx, "perm", x->rank, perm)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_flatten(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "input")) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    int64_t r = x->rank, axis = loom_infer_get_int(ctx, "axis", 1);
    /* Flatten's axis may also be the rank itself (everything goes to the first dim). */
    if (axis < -r || axis > r)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "axis %lld is out of range for rank %lld (expected %lld..%lld)",
                               (long long)axis, (long long)r, (long long)-r, (long long)r);
    if (axis < 0)
        axis += r;
    int64_t dims[2] = {1, 1};
    for (int64_t k = 0; k < r; k++)
        dims[k < axis ? 0 : 1] *= x->dims[k];
    if ((st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, 2, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_concat(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK)
        return st;
    if (ctx->n_inputs == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "needs at least one input");
    if ((st = need_data(ctx, "inputs")) != LOOM_OK)
        return st;
    if (!loom_attr_list_get(ctx->attrs, "axis"))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "attribute 'axis' is required");
    const loom_tensor_desc *x0 = &ctx->inputs[0];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x0->rank, &axis)) !=
        LOOM_OK)
        return st;
    int64_t dims[LOOM_MAX_RANK];
    memcpy(dims, x0->dims, sizeof dims);
    for (uint32_t i = 1; i < ctx->n_inputs; i++) {
        const loom_tensor_desc *xi = &ctx->inputs[i];
        if ((st = loom_ops_require(ctx, i, "inputs")) != LOOM_OK ||
            (st = loom_ops_same_dtype(ctx, i, "inputs", 0)) != LOOM_OK)
            return st;
        int same = xi->rank == x0->rank;
        for (uint32_t k = 0; same && k < x0->rank; k++)
            same = k == axis || xi->dims[k] == x0->dims[k];
        if (!same) {
            char a[160], b[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u has shape %s, which differs from input 0's %s "
                                   "outside axis %lld",
                                   i, loom_dims_format(xi->rank, xi->dims, a, sizeof a),
                                   loom_dims_format(x0->rank, x0->dims, b, sizeof b),
                                   (long long)axis);
        }
        if (__builtin_add_overflow(dims[axis], xi->dims[axis], &dims[axis]))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "the concatenated axis %lld overflows", (long long)axis);
    }
    if ((st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x0->dtype, x0->rank, dims);
    return loom_ops_finish(ctx);
}

/* Sizes come from constant input 1 (opset 13+), else the 'split' attribute (opset 11, and the
 * canonical form), else equal parts: ceil(dim / n) each with a smaller last one (opset 18's
 * num_outputs rule, which also covers opset 13's evenly divisible case). */
static loom_status split_sizes(loom_infer_ctx *ctx, int64_t dim, int64_t *sizes)
{
    loom_status st;
    const size_t n = ctx->n_outputs;
    if (loom_ops_has(ctx, 1) || loom_attr_list_get(ctx->attrs, "split")) {
        size_t count;
        if (loom_ops_has(ctx, 1)) {
            const loom_tensor_desc *d = &ctx->inputs[1];
            /* The count first, for a clearer message than "too many values". */
            if (d->rank == 1 && d->dims[0] != (int64_t)n)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "split has %lld sizes for %zu outputs",
                                       (long long)d->dims[0], n);
            if ((st = loom_ops_const_ints(ctx, 1, "split", n, sizes, &count)) != LOOM_OK)
                return st;
        } else {
            const int64_t *v;
            count = loom_infer_get_ints(ctx, "split", &v);
            if (count == n)
                memcpy(sizes, v, n * sizeof sizes[0]);
        }
        if (count != n)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "split has %zu sizes for %zu outputs", count, n);
        return LOOM_OK;
    }
    if (loom_attr_list_get(ctx->attrs, "num_outputs") &&
        loom_infer_get_int(ctx, "num_outputs", 0) != (int64_t)n)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'num_outputs' is %lld but the node has %zu outputs",
                               (long long)loom_infer_get_int(ctx, "num_outputs", 0), n);
    int64_t chunk = dim / (int64_t)n + (dim % (int64_t)n != 0);
    for (size_t i = 0; i < n; i++) {
        int64_t left = dim - chunk * (int64_t)i; /* chunk * i <= dim + n: no overflow */
        sizes[i] = left < 0 ? 0 : left < chunk ? left : chunk;
    }
    return LOOM_OK;
}

static loom_status infer_split(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "split", "num_outputs", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INTS, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axis", "split", NULL};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "input")) != LOOM_OK)
        return st;
    if (ctx->n_outputs == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "needs at least one output");
    const loom_tensor_desc *x = &ctx->inputs[0];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", 0), x->rank, &axis)) !=
        LOOM_OK)
        return st;
    int64_t *sizes = malloc(ctx->n_outputs * sizeof *sizes);
    if (!sizes)
        return loom_infer_fail(ctx, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    int64_t dim = x->dims[axis], sum = 0;
    if ((st = split_sizes(ctx, dim, sizes)) != LOOM_OK)
        goto done;
    for (uint32_t i = 0; i < ctx->n_outputs; i++) {
        if (sizes[i] < 0) {
            st = loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "split size %u is negative (%lld)",
                                 i, (long long)sizes[i]);
            goto done;
        }
        if (__builtin_add_overflow(sum, sizes[i], &sum))
            sum = -1; /* cannot match a real dim */
    }
    if (sum != dim) {
        st = loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                             "split sizes sum to %lld but axis %lld has size %lld",
                             (long long)sum, (long long)axis, (long long)dim);
        goto done;
    }
    for (uint32_t i = 0; i < ctx->n_outputs; i++) {
        int64_t dims[LOOM_MAX_RANK];
        memcpy(dims, x->dims, sizeof dims);
        dims[axis] = sizes[i];
        loom_ops_set_output(ctx, i, x->dtype, x->rank, dims);
    }
    if ((st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "split", ctx->n_outputs, sizes)) != LOOM_OK)
        goto done;
    loom_ops_keep_only(ctx, canonical);
    st = loom_ops_finish(ctx);
done:
    free(sizes);
    return st;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ONNX's rules: negative starts/ends count from the end; then, for a positive step, both clamp
 * to [0, dim]; for a negative step, start clamps to [0, dim-1] and end to [-1, dim-1]. */
static void slice_axis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *first,
                       int64_t *len)
{
    *first = 0;
    *len = 0;
    if (dim == 0)
        return;
    if (start < 0)
        start += dim; /* start >= INT64_MIN and dim > 0: no overflow */
    if (end < 0)
        end += dim;
    if (step > 0) {
        start = clamp64(start, 0, dim);
        end = clamp64(end, 0, dim);
        if (end > start)
            *len = (end - start - 1) / step + 1;
    } else {
        start = clamp64(start, 0, dim - 1);
        end = clamp64(end, -1, dim - 1);
        /* -INT64_MIN does not exist; any step that large takes one element, as INT64_MAX. */
        int64_t mag = step == INT64_MIN ? INT64_MAX : -step;
        if (start > end)
            *len = (start - end - 1) / mag + 1;
    }
    if (*len > 0)
        *first = start;
}

static loom_status infer_slice(loom_infer_ctx *ctx)
{
    /* The canonical attributes are accepted so that a canonical node infers to itself; the
     * inputs always win. */
    static const char *const names[] = {"starts", "steps", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INTS};
    static const char *const what[] = {"data", "starts", "ends", "axes", "steps"};
    loom_status st;
    int64_t v[5][LOOM_MAX_RANK];
    size_t n = 0, count;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "data")) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    for (uint32_t i = 1; i <= 4; i++) {
        if (i >= 3 && !loom_ops_has(ctx, i))
            continue;
        if ((st = loom_ops_const_ints(ctx, i, what[i], LOOM_MAX_RANK, v[i], &count)) != LOOM_OK)
            return st;
        if (i == 1)
            n = count;
        else if (count != n)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) has %zu values but starts has %zu", i, what[i],
                                   count, n);
    }
    if (n > x->rank)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "starts has %zu values, more than the rank %u", n, x->rank);
    if (!loom_ops_has(ctx, 3))
        for (size_t k = 0; k < n; k++)
            v[3][k] = (int64_t)k;
    if (!loom_ops_has(ctx, 4))
        for (size_t k = 0; k < n; k++)
            v[4][k] = 1;
    if ((st = resolve_axes(ctx, "axes", v[3], n, x->rank)) != LOOM_OK)
        return st;
    int64_t starts[LOOM_MAX_RANK], steps[LOOM_MAX_RANK], dims[LOOM_MAX_RANK];
    for (uint32_t d = 0; d < x->rank; d++) {
        starts[d] = 0;
        steps[d] = 1;
        dims[d] = x->dims[d];
    }
    for (size_t k = 0; k < n; k++) {
        int64_t a = v[3][k];
        if (v[4][k] == 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 4 (steps) has a 0 for axis %lld", (long long)a);
        slice_axis(x->dims[a], v[1][k], v[2][k], v[4][k], &starts[a], &dims[a]);
        steps[a] = v[4][k];
    }
    if ((st = loom_infer_set_ints(ctx, "starts", x->rank, starts)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "steps", x->rank, steps)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* Axes from constant input 1 (opset 13+) or the 'axes' attribute (earlier opsets, and the
 * canonical form); the input wins. Returns 0 in *PRESENT when neither is there. */
static loom_status read_axes(loom_infer_ctx *ctx, int64_t *axes, size_t *n, int *present)
{
    *present = 1;
    if (loom_ops_has(ctx, 1))
        return loom_ops_const_ints(ctx, 1, "axes", LOOM_MAX_RANK, axes, n);
    if (!loom_attr_list_get(ctx->attrs, "axes")) {
        *present = 0;
        *n = 0;
        return LOOM_OK;
    }
    const int64_t *v;
    *n = loom_infer_get_ints(ctx, "axes", &v);
    if (*n > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'axes' has %zu values, more than the maximum rank %d",
                               *n, LOOM_MAX_RANK);
    if (*n) /* an empty list may come with a NULL array */
        memcpy(axes, v, *n * sizeof axes[0]);
    return LOOM_OK;
}

static loom_status infer_squeeze(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axes", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS};
    loom_status st;
    int64_t axes[LOOM_MAX_RANK];
    size_t n;
    int present;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "data")) != LOOM_OK ||
        (st = read_axes(ctx, axes, &n, &present)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (!present) {
        /* No axes: every dim of size 1 goes. */
        for (uint32_t k = 0; k < x->rank; k++)
            if (x->dims[k] == 1)
                axes[n++] = k;
    }
    if ((st = resolve_axes(ctx, "axes", axes, n, x->rank)) != LOOM_OK)
        return st;
    for (size_t k = 0; k < n; k++)
        if (x->dims[axes[k]] != 1)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "cannot squeeze axis %lld of size %lld", (long long)axes[k],
                                   (long long)x->dims[axes[k]]);
    qsort(axes, n, sizeof axes[0], cmp_i64);
    int64_t dims[LOOM_MAX_RANK];
    uint32_t r = 0;
    for (uint32_t k = 0, j = 0; k < x->rank; k++) {
        if (j < n && axes[j] == k)
            j++;
        else
            dims[r++] = x->dims[k];
    }
    if ((st = loom_infer_set_ints(ctx, "axes", n, axes)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, r, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_unsqueeze(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axes", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS};
    loom_status st;
    int64_t axes[LOOM_MAX_RANK];
    size_t n;
    int present;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = need_data(ctx, "data")) != LOOM_OK ||
        (st = read_axes(ctx, axes, &n, &present)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (!present)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "axes are required (input 1, or attribute 'axes')");
    uint32_t rank = x->rank + (uint32_t)n;
    if (rank > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "output rank %u exceeds the maximum rank %d", rank, LOOM_MAX_RANK);
    /* Unsqueeze's axes index the output. */
    if ((st = resolve_axes(ctx, "axes", axes, n, rank)) != LOOM_OK)
        return st;
    qsort(axes, n, sizeof axes[0], cmp_i64);
    int64_t dims[LOOM_MAX_RANK];
    for (uint32_t k = 0, j = 0, i = 0; k < rank; k++) {
        if (j < n && axes[j] == k) {
            dims[k] = 1;
            j++;
        } else {
            dims[k] = x->dims[i++];
        }
    }
    if ((st = loom_infer_set_ints(ctx, "axes", n, axes)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    return loom_ops_finish(ctx);
}

static void cost_move(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
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

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

static loom_status infer_expand(loom_infer_ctx *ctx)
{
    loom_status st;
    int64_t shape[LOOM_MAX_RANK];
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "input")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL)) != LOOM_OK ||
        (st = loom_ops_const_ints(ctx, 1, "shape", LOOM_MAX_RANK, shape, &n)) != LOOM_OK)
        return st;
    loom_tensor_desc target = {.dtype = ctx->inputs[0].dtype, .rank = (uint32_t)n};
    for (size_t k = 0; k < n; k++) {
        if (shape[k] < 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 1 (shape) has a negative dimension %lld",
                                   (long long)shape[k]);
        target.dims[k] = shape[k];
    }
    loom_tensor_desc y;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (!loom_broadcast_shapes(x, &target, &y)) {
        char a[160], b[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "cannot expand shape %s to %s",
                               loom_dims_format(x->rank, x->dims, a, sizeof a),
                               loom_dims_format(target.rank, target.dims, b, sizeof b));
    }
    loom_ops_set_output(ctx, 0, x->dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static void cost_copy(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 0.0); }

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

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_reshape, LOOM_OP_RESHAPE, "Reshape",
             2, 2, 1, 1, infer_reshape, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_transpose, LOOM_OP_TRANSPOSE, "Transpose",
             1, 1, 1, 1, infer_transpose, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_flatten, LOOM_OP_FLATTEN, "Flatten",
             1, 1, 1, 1, infer_flatten, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_concat, LOOM_OP_CONCAT, "Concat",
             1, UINT32_MAX, 1, 1, infer_concat, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_split, LOOM_OP_SPLIT, "Split",
             1, 2, 1, UINT32_MAX, infer_split, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_slice, LOOM_OP_SLICE, "Slice", 3, 5, 1, 1, infer_slice, cost_select, 0);
LOOM_OPS_DEF(loom_op_def_squeeze, LOOM_OP_SQUEEZE, "Squeeze",
             1, 2, 1, 1, infer_squeeze, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_unsqueeze, LOOM_OP_UNSQUEEZE, "Unsqueeze",
             1, 2, 1, 1, infer_unsqueeze, cost_move, 0);
LOOM_OPS_DEF(loom_op_def_expand, LOOM_OP_EXPAND, "Expand", 2, 2, 1, 1, infer_expand, cost_copy, 0);
LOOM_OPS_DEF(loom_op_def_pad, LOOM_OP_PAD, "Pad", 1, 4, 1, 1, infer_pad, loom_ops_cost_io, 0);
LOOM_OPS_DEF(loom_op_def_tile, LOOM_OP_TILE, "Tile", 1, 2, 1, 1, infer_tile, loom_ops_cost_io, 0);
