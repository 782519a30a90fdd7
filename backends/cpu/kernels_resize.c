/*
 * CPU kernel of Resize, with ONNX opset-18 semantics (canonical attributes: graph/ops_resize.c):
 * nearest through the per-axis index maps of cpu_index_map.c (-1, the extrapolation value, where
 * tf_crop_and_resize falls outside the input); linear and cubic as separable taps per axis (2
 * or 4 source elements and their weights per output index), combined over the outer axes per
 * output row and applied along the last axis.
 */
#include "cpu_index_map.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32

/* Most tap combinations over the outer axes of one row (4 cubic axes, or 8 linear ones). */
#define RS_MAX_TAPS 256

enum { CT_HALF, CT_PYTORCH, CT_ALIGN, CT_ASYM, CT_TF_NN, CT_CROP };
enum { NM_RPF, NM_RPC, NM_FLOOR, NM_CEIL };

static int rs_ctm(const char *s)
{
    return strcmp(s, "pytorch_half_pixel") == 0     ? CT_PYTORCH
           : strcmp(s, "align_corners") == 0        ? CT_ALIGN
           : strcmp(s, "asymmetric") == 0           ? CT_ASYM
           : strcmp(s, "tf_half_pixel_for_nn") == 0 ? CT_TF_NN
           : strcmp(s, "tf_crop_and_resize") == 0   ? CT_CROP
                                                    : CT_HALF;
}

/* Source coordinate of output index O along an axis of IN -> OUT elements at SCALE; START and
 * END are the axis's region of interest (tf_crop_and_resize). */
static double rs_coord(int ctm, double o, double scale, int64_t in, int64_t out, double start,
                       double end)
{
    /* ONNX's reference uses length_resized = scale * in; when that is OUT up to float rounding
     * (sizes given, or an exact scale) the exact ratio OUT / IN is used. */
    double lr = scale * (double)in;
    if (in > 0 && fabs(lr - (double)out) <= 1e-5 * (double)(out > 1 ? out : 1)) {
        lr = (double)out;
        scale = (double)out / (double)in;
    }
    switch (ctm) {
    case CT_PYTORCH: return lr > 1.0 ? (o + 0.5) / scale - 0.5 : -0.5;
    case CT_ALIGN: return lr > 1.0 ? o * (double)(in - 1) / (lr - 1.0) : 0.0;
    case CT_ASYM: return o / scale;
    case CT_TF_NN: return (o + 0.5) / scale;
    case CT_CROP:
        return lr == 1.0 ? 0.5 * (start + end) * (double)(in - 1)
                         : start * (double)(in - 1) + o * (end - start) * (double)(in - 1) /
                                                          (lr - 1.0);
    default: return (o + 0.5) / scale - 0.5;
    }
}

/* Whether a tf_crop_and_resize coordinate C lies outside the input [0, IN - 1]. */
static int rs_outside(int ctm, double c, int64_t in)
{
    return ctm == CT_CROP && (c < 0.0 || c > (double)(in - 1));
}

static int64_t clamp_i64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The cubic convolution kernel of Keys with parameter A at distance T >= 0. */
static double rs_cubic(double t, double a)
{
    if (t <= 1.0)
        return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
    if (t < 2.0)
        return ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a;
    return 0.0;
}

/* ---- nearest -------------------------------------------------------------------------------- */

/* V in dtype T into OUT (8 bytes): saturated to the type's range, NaN as 0 for integers. */
static void rs_value_as(loom_dtype t, double v, char *out)
{
    memset(out, 0, 8);
    if (t == LOOM_DTYPE_F32) {
        float f = (float)v;
        memcpy(out, &f, 4);
        return;
    }
    if (t == LOOM_DTYPE_F64) {
        memcpy(out, &v, 8);
        return;
    }
    if (t == LOOM_DTYPE_F16 || t == LOOM_DTYPE_BF16) {
        uint16_t h = t == LOOM_DTYPE_F16 ? cpu_f32_to_f16((float)v) : cpu_f32_to_bf16((float)v);
        memcpy(out, &h, 2);
        return;
    }
    if (isnan(v))
        v = 0.0;
#define RS_SAT(T, LO, HI)                                                                          \
    do {                                                                                           \
        T x_ = v <= (double)(LO) ? (T)(LO) : v >= (double)(HI) ? (T)(HI) : (T)v;                   \
        memcpy(out, &x_, sizeof x_);                                                               \
    } while (0)
    switch (t) {
    case LOOM_DTYPE_I8: RS_SAT(int8_t, INT8_MIN, INT8_MAX); break;
    case LOOM_DTYPE_U8: RS_SAT(uint8_t, 0, UINT8_MAX); break;
    case LOOM_DTYPE_I16: RS_SAT(int16_t, INT16_MIN, INT16_MAX); break;
    case LOOM_DTYPE_U16: RS_SAT(uint16_t, 0, UINT16_MAX); break;
    case LOOM_DTYPE_I32: RS_SAT(int32_t, INT32_MIN, INT32_MAX); break;
    case LOOM_DTYPE_U32: RS_SAT(uint32_t, 0, UINT32_MAX); break;
    /* 2^63 and 2^64 are exact doubles; the largest doubles below them convert safely */
    case LOOM_DTYPE_I64: RS_SAT(int64_t, INT64_MIN, 9223372036854774784.0); break;
    case LOOM_DTYPE_U64: RS_SAT(uint64_t, 0, 18446744073709549568.0); break;
    default: break;
    }
#undef RS_SAT
}

/* ---- linear and cubic: taps per axis -------------------------------------------------------- */

typedef struct rs_axis {
    int taps;         /* 1 (an axis left as it is), 2 (linear) or 4 (cubic) */
    int64_t *off;     /* [out * taps] element offsets into X */
    float *w;         /* [out * taps] weights */
    unsigned char *outside; /* [out]: 1 where the output takes the extrapolation value; or NULL */
} rs_axis;

typedef struct rs_params {
    uint32_t rank;
    int64_t out[LOOM_MAX_RANK];
    rs_axis ax[LOOM_MAX_RANK];
    float extrapolation;
    int64_t rows, row_len;
} rs_params;

static void rs_free(void *params)
{
    rs_params *p = params;
    if (p)
        for (uint32_t d = 0; d < p->rank; d++) {
            free(p->ax[d].off);
            free(p->ax[d].w);
            free(p->ax[d].outside);
        }
    free(p);
}

typedef struct rs_job {
    const rs_params *p;
    const float *x;
    float *y;
} rs_job;

/* Y[0..N) = sum over taps of W * XS[OFF], T taps per output (T a constant where inlined). */
static inline void rs_row(float *restrict y, const float *xs, float wt, const int64_t *off,
                          const float *w, int64_t n, int t)
{
    for (int64_t i = 0; i < n; i++) {
        float acc = 0.0f;
        for (int k = 0; k < t; k++)
            acc += w[i * t + k] * xs[off[i * t + k]];
        y[i] += wt * acc;
    }
}

static void rs_task(void *arg, size_t r0, size_t r1)
{
    const rs_job *j = arg;
    const rs_params *p = j->p;
    const uint32_t last = p->rank - 1;
    const int64_t n = p->row_len;
    const rs_axis *la = &p->ax[last];
    int64_t idx[LOOM_MAX_RANK] = {0};
    size_t rem = r0;
    for (uint32_t d = last; d-- > 0;) {
        idx[d] = (int64_t)(rem % (size_t)p->out[d]);
        rem /= (size_t)p->out[d];
    }
    int64_t toff[RS_MAX_TAPS];
    float tw[RS_MAX_TAPS];
    for (size_t r = r0; r < r1; r++) {
        float *y = j->y + r * (size_t)n;
        /* taps of the outer axes: offsets and weights of every combination */
        int nt = 1, fill = 0;
        toff[0] = 0;
        tw[0] = 1.0f;
        for (uint32_t d = 0; d < last && !fill; d++) {
            const rs_axis *a = &p->ax[d];
            const int64_t o = idx[d];
            if (a->outside && a->outside[o]) {
                fill = 1;
                break;
            }
            const int64_t *ao = a->off + o * a->taps;
            const float *aw = a->w + o * a->taps;
            for (int k = a->taps; k-- > 0;)
                for (int t = 0; t < nt; t++) {
                    toff[k * nt + t] = toff[t] + ao[k];
                    tw[k * nt + t] = tw[t] * aw[k];
                }
            nt *= a->taps;
        }
        for (int64_t i = 0; i < n; i++)
            y[i] = fill ? p->extrapolation : 0.0f;
        for (int t = 0; t < nt && !fill; t++) {
            const float *xs = j->x + toff[t];
            switch (la->taps) { /* constant tap counts let the compiler unroll */
            case 1: rs_row(y, xs, tw[t], la->off, la->w, n, 1); break;
            case 2: rs_row(y, xs, tw[t], la->off, la->w, n, 2); break;
            default: rs_row(y, xs, tw[t], la->off, la->w, n, 4); break;
            }
        }
        if (la->outside && !fill)
            for (int64_t i = 0; i < n; i++)
                if (la->outside[i])
                    y[i] = p->extrapolation;
        for (uint32_t d = last; d-- > 0;) {
            if (++idx[d] < p->out[d])
                break;
            idx[d] = 0;
        }
    }
}

static loom_status rs_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const rs_params *p = k->params;
    if (p->rows == 0 || p->row_len == 0)
        return LOOM_OK;
    rs_job j = {p, args->inputs[0], args->outputs[0]};
    int64_t work = p->row_len * p->ax[p->rank - 1].taps;
    for (uint32_t d = 0; d + 1 < p->rank; d++)
        work *= p->ax[d].taps;
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain(work * 2), rs_task, &j);
    return LOOM_OK;
}

/* Whether axis D of NODE is left as it is: same length, scale 1 and, for tf_crop_and_resize,
 * the whole axis as region of interest. */
static int rs_identity(const loom_node_desc *node, uint32_t d)
{
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->rank == 0)
        return 1;
    if (x->dims[d] != node->outputs[0].dims[d] || loom_node_attr(node, "scales")->floats[d] != 1.0f)
        return 0;
    const loom_attr *roi = loom_node_attr(node, "roi");
    if (strcmp(cpu_str_attr(node, "coordinate_transformation_mode", "half_pixel"),
               "tf_crop_and_resize") != 0)
        return 1;
    return roi && roi->kind == LOOM_ATTR_FLOATS && roi->count == 2 * (size_t)x->rank &&
           roi->floats[d] == 0.0f && roi->floats[x->rank + d] == 1.0f;
}

static int rs_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_attr *sc = loom_node_attr(node, "scales");
    const loom_tensor_desc *x = &node->inputs[0];
    if (!sc || sc->kind != LOOM_ATTR_FLOATS || sc->count != x->rank)
        return cpu_reason(reason, len, "Resize: canonical scales missing");
    const char *mode = cpu_str_attr(node, "mode", "nearest");
    if (strcmp(cpu_str_attr(node, "coordinate_transformation_mode", "half_pixel"),
               "tf_crop_and_resize") == 0) {
        const loom_attr *roi = loom_node_attr(node, "roi");
        if (!roi || roi->kind != LOOM_ATTR_FLOATS || roi->count != 2 * (size_t)x->rank)
            return cpu_reason(reason, len, "Resize: canonical roi missing");
    }
    const int cubic = strcmp(mode, "cubic") == 0;
    if (strcmp(mode, "linear") == 0 || cubic) {
        if (x->dtype != F32)
            return cpu_no_dtype(node, x->dtype, "float32 for linear and cubic", reason, len);
        int64_t combos = 1;
        for (uint32_t d = 0; d + 1 < x->rank; d++)
            if (!rs_identity(node, d))
                combos *= cubic ? 4 : 2;
        if (combos > RS_MAX_TAPS)
            return cpu_reason(reason, len, "Resize: %s over more than %d outer axes", mode,
                              cubic ? 4 : 8);
        return 1;
    }
    if (strcmp(mode, "nearest") != 0)
        return cpu_reason(reason, len, "Resize: mode '%s' has no CPU kernel", mode);
    return cpu_map_supports(node, reason, len);
}

/* Taps of one axis of IN -> OUT elements (element stride STRIDE) for linear or cubic. */
static int rs_axis_fill(rs_axis *a, int cubic, int ctm, double scale, int64_t in, int64_t out,
                        int64_t stride, double start, double end, double coeff_a, int exclude)
{
    a->off = malloc((size_t)(out ? out : 1) * (size_t)a->taps * sizeof *a->off);
    a->w = malloc((size_t)(out ? out : 1) * (size_t)a->taps * sizeof *a->w);
    if (ctm == CT_CROP && a->taps > 1)
        a->outside = calloc((size_t)(out ? out : 1), 1);
    if (!a->off || !a->w || (ctm == CT_CROP && a->taps > 1 && !a->outside))
        return 0;
    for (int64_t o = 0; o < out; o++) {
        int64_t *ao = a->off + o * a->taps;
        float *aw = a->w + o * a->taps;
        if (a->taps == 1) {
            ao[0] = o * stride;
            aw[0] = 1.0f;
            continue;
        }
        double c = rs_coord(ctm, (double)o, scale, in, out, start, end);
        if (rs_outside(ctm, c, in))
            a->outside[o] = 1;
        if (!cubic) {
            double f = floor(c);
            ao[0] = clamp_i64((int64_t)f, 0, in - 1) * stride;
            ao[1] = clamp_i64((int64_t)f + 1, 0, in - 1) * stride;
            aw[0] = (float)(1.0 - (c - f));
            aw[1] = (float)(c - f);
            continue;
        }
        /* The four nearest source indices base-1 .. base+2, with the fraction r = c - base in
         * (0, 1]: an integral c takes the taps c-2 .. c+1 (weights 0, 0, 1, 0). */
        double base = ceil(c) - 1.0, r = c - base, w[4], sum = 0.0;
        w[0] = rs_cubic(r + 1.0, coeff_a);
        w[1] = rs_cubic(r, coeff_a);
        w[2] = rs_cubic(1.0 - r, coeff_a);
        w[3] = rs_cubic(2.0 - r, coeff_a);
        for (int k = 0; k < 4; k++) {
            int64_t i = (int64_t)base - 1 + k;
            if (exclude && (i < 0 || i >= in))
                w[k] = 0.0;
            sum += w[k];
            ao[k] = clamp_i64(i, 0, in - 1) * stride;
        }
        for (int k = 0; k < 4; k++)
            aw[k] = (float)(exclude && sum != 0.0 ? w[k] / sum : w[k]);
    }
    return 1;
}

static loom_status rs_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    const float *scales = loom_node_attr(node, "scales")->floats;
    const int ctm = rs_ctm(cpu_str_attr(node, "coordinate_transformation_mode", "half_pixel"));
    const loom_attr *roi_attr = ctm == CT_CROP ? loom_node_attr(node, "roi") : NULL;
    const float *roi = roi_attr ? roi_attr->floats : NULL;
    const float extrapolation = loom_node_attr_float(node, "extrapolation_value", 0.0f);
    const char *nm = cpu_str_attr(node, "nearest_mode", "round_prefer_floor");
    const int nmode = strcmp(nm, "round_prefer_ceil") == 0 ? NM_RPC
                      : strcmp(nm, "floor") == 0         ? NM_FLOOR
                      : strcmp(nm, "ceil") == 0          ? NM_CEIL
                                                         : NM_RPF;
    const char *mode = cpu_str_attr(node, "mode", "nearest");
    if (strcmp(mode, "nearest") == 0) {
        cpu_map_params *p = cpu_map_alloc(node);
        if (!p)
            return cpu_oom(node, err, err_len);
        for (uint32_t d = 0; d < x->rank; d++) {
            const double start = roi ? roi[d] : 0.0, end = roi ? roi[x->rank + d] : 1.0;
            for (int64_t o = 0; o < p->out[d]; o++) {
                double c = rs_coord(ctm, (double)o, scales[d], x->dims[d], y->dims[d], start,
                                    end);
                if (rs_outside(ctm, c, x->dims[d])) {
                    p->map[d][o] = -1;
                    continue;
                }
                double f = floor(c), frac = c - f;
                int64_t i;
                if (frac == 0.0)
                    i = (int64_t)f;
                else if (nmode == NM_FLOOR)
                    i = (int64_t)f;
                else if (nmode == NM_CEIL)
                    i = (int64_t)f + 1;
                else if (nmode == NM_RPF)
                    i = frac <= 0.5 ? (int64_t)f : (int64_t)f + 1;
                else
                    i = frac < 0.5 ? (int64_t)f : (int64_t)f + 1;
                p->map[d][o] = clamp_i64(i, 0, x->dims[d] - 1) * p->istride[d];
            }
        }
        if (x->rank == 0)
            p->map[0][0] = 0;
        rs_value_as(y->dtype, extrapolation, p->value);
        k->params = p;
        k->free_params = cpu_map_free;
        k->run = cpu_map_run;
        return LOOM_OK;
    }
    const int cubic = strcmp(mode, "cubic") == 0;
    const double coeff_a = loom_node_attr_float(node, "cubic_coeff_a", -0.75f);
    const int exclude = loom_node_attr_int(node, "exclude_outside", 0) != 0;
    rs_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->rank = x->rank ? x->rank : 1;
    p->extrapolation = extrapolation;
    int64_t stride = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        const int64_t in = x->rank ? x->dims[d] : 1;
        p->out[d] = x->rank ? y->dims[d] : 1;
        rs_axis *a = &p->ax[d];
        a->taps = rs_identity(node, d) ? 1 : cubic ? 4 : 2;
        if (!rs_axis_fill(a, cubic, ctm, x->rank ? scales[d] : 1.0, in, p->out[d], stride,
                          roi ? roi[d] : 0.0, roi ? roi[x->rank + d] : 1.0, coeff_a, exclude)) {
            rs_free(p);
            return cpu_oom(node, err, err_len);
        }
        stride *= in;
    }
    p->row_len = p->out[p->rank - 1];
    p->rows = cpu_prod(p->out, 0, p->rank - 1);
    k->params = p;
    k->free_params = rs_free;
    k->run = rs_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_resize(cpu_op_entry *table)
{
    table[LOOM_OP_RESIZE] = (cpu_op_entry){rs_supports, rs_prepare};
}
