/*
 * CPU kernels of the operators whose output shape depends on their input values: NonZero,
 * Compress, Unique and NonMaxSuppression (graph/ops_value_dependent.c defines them and their
 * upper-bound shapes). Each writes its result packed, in the row-major layout of the ACTUAL
 * shape, at the start of every bound-sized output, and reports the actual shapes. They run on
 * the host, on the calling thread, between the stages of a loom_model run
 * (loom_cpu_eval_value_dependent); no plan ever holds them, so they may allocate.
 */
#include "cpu_backend.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- elements of any dtype ------------------------------------------------------------------ */

static int is_float(loom_dtype t)
{
    return t == LOOM_DTYPE_F32 || t == LOOM_DTYPE_F64 || t == LOOM_DTYPE_F16 ||
           t == LOOM_DTYPE_BF16;
}

static double as_double(loom_dtype t, const unsigned char *p)
{
    switch (t) {
    case LOOM_DTYPE_F32: {
        float v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    case LOOM_DTYPE_F64: {
        double v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    case LOOM_DTYPE_F16:
    case LOOM_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p, sizeof h);
        return t == LOOM_DTYPE_F16 ? cpu_f16_to_f32(h) : cpu_bf16_to_f32(h);
    }
    default:
        return 0;
    }
}

/* -1, 0, 1 as A is less than, equal to or greater than B. NaNs equal one another and sort after
 * every number (so Unique keeps one NaN, as numpy.unique does). */
static int cmp_elem(loom_dtype t, const unsigned char *a, const unsigned char *b)
{
    if (is_float(t)) {
        double x = as_double(t, a), y = as_double(t, b);
        int nx = isnan(x), ny = isnan(y);
        if (nx || ny)
            return nx - ny;
        return (x > y) - (x < y);
    }
#define CMP_AS(type)                                                                               \
    do {                                                                                           \
        type x_, y_;                                                                               \
        memcpy(&x_, a, sizeof x_);                                                                 \
        memcpy(&y_, b, sizeof y_);                                                                 \
        return (x_ > y_) - (x_ < y_);                                                              \
    } while (0)
    switch (t) {
    case LOOM_DTYPE_I8:
        CMP_AS(int8_t);
    case LOOM_DTYPE_I16:
        CMP_AS(int16_t);
    case LOOM_DTYPE_I32:
        CMP_AS(int32_t);
    case LOOM_DTYPE_I64:
        CMP_AS(int64_t);
    case LOOM_DTYPE_U16:
        CMP_AS(uint16_t);
    case LOOM_DTYPE_U32:
        CMP_AS(uint32_t);
    case LOOM_DTYPE_U64:
        CMP_AS(uint64_t);
    default: /* u8, bool */
        CMP_AS(uint8_t);
    }
#undef CMP_AS
}

/* Whether the element at P is non-zero: -0.0 is zero, NaN is not. */
static int is_nonzero(loom_dtype t, size_t es, const unsigned char *p)
{
    unsigned char b[8];
    memcpy(b, p, es);
    if (is_float(t)) /* clear the sign bit: little-endian, the top byte's high bit */
        b[es - 1] &= 0x7f;
    for (size_t k = 0; k < es; k++)
        if (b[k])
            return 1;
    return 0;
}

static int64_t numel(const loom_tensor_desc *d)
{
    int64_t n = 1;
    for (uint32_t k = 0; k < d->rank; k++)
        n *= d->dims[k];
    return n;
}

static loom_status oom(const loom_node_desc *node, char *err, size_t len)
{
    return cpu_oom(node, err, len);
}

/* ---- NonZero ------------------------------------------------------------------------------- */

static loom_status run_non_zero(const loom_node_desc *node, const void *const *in,
                                void *const *out, loom_tensor_desc *actual)
{
    const loom_tensor_desc *x = &node->inputs[0];
    size_t es = loom_dtype_size(x->dtype);
    const unsigned char *p = in[0];
    int64_t n = numel(x), nnz = 0;
    for (int64_t i = 0; i < n; i++)
        nnz += is_nonzero(x->dtype, es, p + (size_t)i * es);
    int64_t rank = x->rank ? x->rank : 1;
    int64_t *y = out[0];
    int64_t j = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!is_nonzero(x->dtype, es, p + (size_t)i * es))
            continue;
        int64_t rest = i;
        for (int64_t d = (int64_t)x->rank - 1; d >= 0; d--) {
            y[d * nnz + j] = rest % x->dims[d];
            rest /= x->dims[d];
        }
        if (!x->rank)
            y[j] = 0;
        j++;
    }
    actual[0] = node->outputs[0];
    actual[0].dims[0] = rank;
    actual[0].dims[1] = nnz;
    return LOOM_OK;
}

/* ---- Compress ------------------------------------------------------------------------------ */

static loom_status run_compress(const loom_node_desc *node, const void *const *in,
                                void *const *out, loom_tensor_desc *actual)
{
    const loom_tensor_desc *x = &node->inputs[0];
    size_t es = loom_dtype_size(x->dtype);
    const unsigned char *cond = in[1];
    int64_t len = node->inputs[1].dims[0];
    const loom_attr *ax = loom_node_attr(node, "axis");
    int64_t outer = 1, along = numel(x), inner = 1;
    if (ax) {
        along = x->dims[ax->i];
        for (int64_t d = 0; d < ax->i; d++)
            outer *= x->dims[d];
        for (int64_t d = ax->i + 1; d < (int64_t)x->rank; d++)
            inner *= x->dims[d];
    }
    if (len > along)
        len = along;
    int64_t kept = 0;
    for (int64_t i = 0; i < len; i++)
        kept += cond[i] != 0;
    const unsigned char *src = in[0];
    unsigned char *dst = out[0];
    size_t row = (size_t)inner * es;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < len; i++)
            if (cond[i]) {
                memcpy(dst, src + ((size_t)(o * along + i)) * row, row);
                dst += row;
            }
    actual[0] = node->outputs[0];
    actual[0].dims[ax ? ax->i : 0] = kept;
    return LOOM_OK;
}

/* ---- Unique -------------------------------------------------------------------------------- */

typedef struct unique_view {
    loom_dtype t;
    size_t es;
    const unsigned char *x;
    int64_t outer, along, inner;
} unique_view;

/* Compare slices A and B (indices along the axis) element by element in row-major order. */
static int cmp_slices(const unique_view *v, int64_t a, int64_t b)
{
    for (int64_t o = 0; o < v->outer; o++)
        for (int64_t i = 0; i < v->inner; i++) {
            int c = cmp_elem(v->t, v->x + (size_t)((o * v->along + a) * v->inner + i) * v->es,
                             v->x + (size_t)((o * v->along + b) * v->inner + i) * v->es);
            if (c)
                return c;
        }
    return 0;
}

/* Stable merge sort of IDX[0, N) by slice (TMP: N scratch entries). */
static void sort_slices(const unique_view *v, int64_t *idx, int64_t *tmp, int64_t n)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = cmp_slices(v, idx[j], idx[i]) < 0 ? idx[j++] : idx[i++];
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof *idx);
    }
}

static loom_status run_unique(const loom_node_desc *node, const void *const *in,
                              void *const *out, loom_tensor_desc *actual, char *err,
                              size_t err_len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *ax = loom_node_attr(node, "axis");
    int sorted = loom_node_attr_int(node, "sorted", 1) != 0;
    unique_view v = {x->dtype, loom_dtype_size(x->dtype), in[0], 1, numel(x), 1};
    if (ax) {
        v.along = x->dims[ax->i];
        for (int64_t d = 0; d < ax->i; d++)
            v.outer *= x->dims[d];
        for (int64_t d = ax->i + 1; d < (int64_t)x->rank; d++)
            v.inner *= x->dims[d];
    }
    int64_t n = v.along;
    size_t cnt = (size_t)(n > 0 ? n : 1);
    int64_t *order = malloc(cnt * sizeof *order), *tmp = malloc(cnt * sizeof *tmp);
    int64_t *group = malloc(cnt * sizeof *group); /* slice -> unique index */
    int64_t *first = malloc(cnt * sizeof *first), *count = malloc(cnt * sizeof *count);
    if (!order || !tmp || !group || !first || !count) {
        free(order);
        free(tmp);
        free(group);
        free(first);
        free(count);
        return oom(node, err, err_len);
    }
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    sort_slices(&v, order, tmp, n);
    /* Groups of equal slices, in sorted order; stability makes each group's first entry its
     * first occurrence. */
    int64_t u = 0;
    for (int64_t k = 0; k < n; k++) {
        if (k == 0 || cmp_slices(&v, order[k - 1], order[k]) != 0) {
            first[u] = order[k];
            count[u] = 0;
            u++;
        }
        count[u - 1]++;
        group[order[k]] = u - 1;
    }
    if (!sorted) {
        /* Unique values in order of first occurrence: renumber the groups by scanning X. ORDER
         * (no longer needed) receives the renumbered FIRST, GROUP is renumbered in place. */
        int64_t *renum = tmp, next = 0;
        for (int64_t g = 0; g < u; g++)
            renum[g] = -1;
        for (int64_t i = 0; i < n; i++)
            if (renum[group[i]] < 0)
                renum[group[i]] = next++;
        for (int64_t g = 0; g < u; g++)
            order[renum[g]] = first[g];
        for (int64_t g = 0; g < u; g++)
            first[g] = count[g];
        for (int64_t g = 0; g < u; g++)
            count[renum[g]] = first[g];
        memcpy(first, order, (size_t)u * sizeof *first);
        for (int64_t i = 0; i < n; i++)
            group[i] = renum[group[i]];
    }
    unsigned char *y = out[0];
    size_t row = (size_t)v.inner * v.es;
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t g = 0; g < u; g++)
            memcpy(y + (size_t)(o * u + g) * row,
                   v.x + (size_t)(o * v.along + first[g]) * row, row);
    actual[0] = node->outputs[0];
    actual[0].dims[ax ? ax->i : 0] = u;
    for (uint32_t k = 1; k < node->n_outputs; k++) {
        actual[k] = node->outputs[k];
        if (k != 2)
            actual[k].dims[0] = u;
        int64_t *dst = out[k];
        if (!dst)
            continue;
        if (k == 1)
            memcpy(dst, first, (size_t)u * sizeof *dst);
        else if (k == 2)
            memcpy(dst, group, (size_t)n * sizeof *dst);
        else
            memcpy(dst, count, (size_t)u * sizeof *dst);
    }
    free(order);
    free(tmp);
    free(group);
    free(first);
    free(count);
    return LOOM_OK;
}

/* ---- NonMaxSuppression ----------------------------------------------------------------------- */

typedef struct nms_box {
    float y0, x0, y1, x1, area;
} nms_box;

static nms_box corners(const float *b, int center)
{
    nms_box r;
    if (center) {
        r.x0 = b[0] - b[2] / 2.0f;
        r.x1 = b[0] + b[2] / 2.0f;
        r.y0 = b[1] - b[3] / 2.0f;
        r.y1 = b[1] + b[3] / 2.0f;
    } else {
        r.y0 = fminf(b[0], b[2]);
        r.y1 = fmaxf(b[0], b[2]);
        r.x0 = fminf(b[1], b[3]);
        r.x1 = fmaxf(b[1], b[3]);
    }
    r.area = (r.x1 - r.x0) * (r.y1 - r.y0);
    return r;
}

/* Whether A and B overlap by more than THRESHOLD (intersection over union). Boxes without area
 * or without overlap never suppress one another. */
static int suppresses(const nms_box *a, const nms_box *b, float threshold)
{
    float w = fminf(a->x1, b->x1) - fmaxf(a->x0, b->x0);
    float h = fminf(a->y1, b->y1) - fmaxf(a->y0, b->y0);
    if (w <= 0 || h <= 0 || a->area <= 0 || b->area <= 0)
        return 0;
    float inter = w * h, uni = a->area + b->area - inter;
    if (uni <= 0)
        return 0;
    return inter / uni > threshold;
}

typedef struct nms_cand {
    float score;
    int64_t box;
} nms_cand;

/* Higher score first; equal scores by lower box index (qsort is not stable). */
static int cmp_cand(const void *pa, const void *pb)
{
    const nms_cand *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->box > b->box) - (a->box < b->box);
}

static loom_status run_nms(const loom_node_desc *node, const void *const *in, void *const *out,
                           loom_tensor_desc *actual, char *err, size_t err_len)
{
    const loom_tensor_desc *bd = &node->inputs[0], *sd = &node->inputs[1];
    int64_t nb = bd->dims[0], nbox = bd->dims[1], ncls = sd->dims[1];
    int center = loom_node_attr_int(node, "center_point_box", 0) != 0;
    int64_t max_out = 0;
    float iou = 0, score_thr = 0;
    int has_thr = node->n_inputs > 4 && in[4];
    if (node->n_inputs > 2 && in[2])
        memcpy(&max_out, in[2], sizeof max_out);
    if (node->n_inputs > 3 && in[3])
        memcpy(&iou, in[3], sizeof iou);
    if (has_thr)
        memcpy(&score_thr, in[4], sizeof score_thr);
    if (max_out > nbox)
        max_out = nbox;
    if (max_out < 0)
        max_out = 0;
    if (!(iou >= 0.0f && iou <= 1.0f))
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "iou_threshold is %g; it must "
                        "lie in [0, 1]", (double)iou);
    /* The bound the registry gave: a constant max_output_boxes_per_class set it, and a run
     * must not ask for more than it was sized for. */
    if (nb * ncls * max_out > node->outputs[0].dims[0])
        return cpu_fail(err, err_len, LOOM_ERR_INTERNAL, "max_output_boxes_per_class %lld "
                        "exceeds the output's bound", (long long)max_out);
    size_t cap = (size_t)(nbox > 0 ? nbox : 1);
    nms_cand *cand = malloc(cap * sizeof *cand);
    nms_box *kept = malloc(cap * sizeof *kept);
    if (!cand || !kept) {
        free(cand);
        free(kept);
        return oom(node, err, err_len);
    }
    const float *boxes = in[0], *scores = in[1];
    int64_t *y = out[0], sel = 0;
    for (int64_t b = 0; b < nb && max_out > 0; b++)
        for (int64_t c = 0; c < ncls; c++) {
            const float *sc = scores + (size_t)((b * ncls + c) * nbox);
            size_t nc = 0;
            for (int64_t i = 0; i < nbox; i++)
                if (!has_thr || sc[i] > score_thr)
                    cand[nc++] = (nms_cand){sc[i], i};
            qsort(cand, nc, sizeof *cand, cmp_cand);
            int64_t nk = 0;
            for (size_t k = 0; k < nc && nk < max_out; k++) {
                nms_box bx = corners(boxes + (size_t)((b * nbox + cand[k].box) * 4), center);
                int keep = 1;
                for (int64_t q = 0; q < nk && keep; q++)
                    keep = !suppresses(&kept[q], &bx, iou);
                if (!keep)
                    continue;
                kept[nk++] = bx;
                y[sel * 3] = b;
                y[sel * 3 + 1] = c;
                y[sel * 3 + 2] = cand[k].box;
                sel++;
            }
        }
    free(cand);
    free(kept);
    actual[0] = node->outputs[0];
    actual[0].dims[0] = sel;
    return LOOM_OK;
}

/* ---- entry point ---------------------------------------------------------------------------- */

loom_status loom_cpu_eval_value_dependent(const loom_node_desc *node, const void *const *inputs,
                                          void *const *outputs, loom_tensor_desc *actual,
                                          char *err, size_t err_len)
{
    for (uint32_t k = 0; k < node->n_outputs; k++)
        actual[k] = node->outputs[k];
    switch (node->op) {
    case LOOM_OP_NON_ZERO:
        return run_non_zero(node, inputs, outputs, actual);
    case LOOM_OP_COMPRESS:
        return run_compress(node, inputs, outputs, actual);
    case LOOM_OP_UNIQUE:
        return run_unique(node, inputs, outputs, actual, err, err_len);
    case LOOM_OP_NON_MAX_SUPPRESSION:
        return run_nms(node, inputs, outputs, actual, err, err_len);
    default:
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "%s: not an operator whose output "
                        "shape depends on its input values", node->op_name);
    }
}
