/*
 * CPU kernels of the sampling operators (graph/ops_sampling.c): GridSample and RoiAlign, float32.
 *
 * GridSample follows ONNX Runtime's CPU kernel (and PyTorch's grid_sample, which the ONNX test
 * data comes from): a grid coordinate g in [-1, 1] maps to x = (g + 1) / 2 * (size - 1) with
 * align_corners, else ((g + 1) * size - 1) / 2; nearest rounds half to even; a coordinate
 * outside [lo, hi] (align_corners: [0, size - 1], else [-0.5, size - 0.5]) is clamped to
 * [0, size - 1] (border) or reflected into [lo, hi] (reflection) before interpolation; each tap
 * then reads 0 outside the input (zeros), the nearest edge (border) or the reflected index.
 * Cubic uses A = -0.75 over 4 taps per axis. Any number of spatial axes (opset 20's N-D form).
 *
 * RoiAlign follows ONNX Runtime's (and Detectron's) kernel: each output bin averages (or, mode
 * max, takes the largest of) sampling_ratio^2 bilinear samples (ceil(roi size / bins) per axis
 * when sampling_ratio is 0); a sample outside [-1, size] reads 0, one in [-1, 0] reads the
 * edge; half_pixel shifts the roi by -0.5 pixel, output_half_pixel instead makes it at least
 * one pixel wide. In max mode a sample is the largest of its four weighted taps.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32

/* ===========================================================================================
 * GridSample
 * =========================================================================================== */

enum { GS_LINEAR, GS_NEAREST, GS_CUBIC };
enum { GS_ZEROS, GS_BORDER, GS_REFLECTION };

typedef struct gs_params {
    int mode, pad, align;
    uint32_t r;                        /* spatial axes */
    int64_t n, c;
    int64_t in[LOOM_MAX_RANK];         /* input spatial sizes D1..Dr */
    int64_t in_plane, out_plane;       /* products of the input / output spatial sizes */
    int taps;                          /* per axis: 1, 2 or 4 */
} gs_params;

typedef struct gs_job {
    const gs_params *p;
    const float *x, *grid;
    float *y;
} gs_job;

static float gs_reflect(float x, float lo, float hi)
{
    const double range = (double)hi - (double)lo;
    if (!(range > 0.0) || !isfinite(x))
        return lo;
    if (x < lo || x > hi) {
        const double dx = x < lo ? (double)lo - x : (double)x - hi;
        const double n = floor(dx / range), r = dx - n * range;
        const int even = fmod(n, 2.0) == 0.0;
        return (float)(x < lo ? (even ? lo + r : hi - r) : (even ? hi - r : lo + r));
    }
    return x;
}

/* floor(X) as an integer, saturated far outside any axis (NaN reads as far below). */
static int64_t gs_floor(float x)
{
    const float f = floorf(x);
    return f >= -1e9f && f <= 1e9f ? (int64_t)f : f > 0.0f ? (int64_t)1e9 : -(int64_t)1e9;
}

static void gs_cubic_coeffs(float t, float w[4])
{
    const float a = -0.75f;
    const float x = fabsf(t);
    w[0] = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a;
    w[1] = ((a + 2) * x - (a + 3)) * x * x + 1;
    w[2] = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1;
    w[3] = ((a * (2 - x) - 5 * a) * (2 - x) + 8 * a) * (2 - x) - 4 * a;
}

/* The index a tap at integer position I of an axis of SIZE reads, or -1 for a zero. */
static int64_t gs_tap_index(const gs_params *p, int64_t i, int64_t size)
{
    if (i >= 0 && i < size)
        return i;
    switch (p->pad) {
    case GS_BORDER: return i < 0 ? 0 : size - 1;
    case GS_REFLECTION: {
        const float lo = p->align ? 0.0f : -0.5f;
        const float hi = p->align ? (float)(size - 1) : (float)size - 0.5f;
        int64_t v = (int64_t)gs_reflect((float)i, lo, hi);
        return v < 0 ? 0 : v >= size ? size - 1 : v;
    }
    default: return -1;
    }
}

static void gs_points(void *arg, size_t b0, size_t b1)
{
    const gs_job *j = arg;
    const gs_params *p = j->p;
    const uint32_t r = p->r;
    const int taps = p->taps;
    /* per axis: the taps' input offsets (-1: zero) and weights */
    int64_t off[LOOM_MAX_RANK][4];
    float w[LOOM_MAX_RANK][4];
    int64_t stride[LOOM_MAX_RANK];
    int64_t s = 1;
    for (uint32_t k = r; k-- > 0;) {
        stride[k] = s;
        s *= p->in[k];
    }
    int ntaps = 1;
    for (uint32_t k = 0; k < r; k++)
        ntaps *= taps;
    for (size_t pt = b0; pt < b1; pt++) {
        const int64_t n = (int64_t)pt / p->out_plane;
        const float *g = j->grid + pt * r;
        for (uint32_t k = 0; k < r; k++) {
            const int64_t size = p->in[k];
            const float gv = g[r - 1 - k]; /* grid[..., 0] is the last axis */
            float x = p->align ? (gv + 1.0f) / 2.0f * (float)(size - 1)
                               : ((gv + 1.0f) * (float)size - 1.0f) / 2.0f;
            if (p->mode == GS_NEAREST)
                x = nearbyintf(x);
            const float lo = p->align ? 0.0f : -0.5f;
            const float hi = p->align ? (float)(size - 1) : (float)size - 0.5f;
            if (x < lo || x > hi) {
                if (p->pad == GS_BORDER)
                    x = x < 0.0f ? 0.0f : x > (float)(size - 1) ? (float)(size - 1) : x;
                else if (p->pad == GS_REFLECTION)
                    x = gs_reflect(x, lo, hi);
            }
            if (p->mode == GS_NEAREST) {
                const int64_t t = gs_tap_index(p, gs_floor(x), size);
                off[k][0] = t < 0 ? -1 : t * stride[k];
                w[k][0] = 1.0f;
            } else {
                const int64_t i0 = gs_floor(x);
                const float t = x - floorf(x);
                if (p->mode == GS_LINEAR) {
                    w[k][0] = 1.0f - t;
                    w[k][1] = t;
                } else {
                    gs_cubic_coeffs(t, w[k]);
                }
                const int64_t first = p->mode == GS_LINEAR ? i0 : i0 - 1;
                for (int q = 0; q < taps; q++) {
                    const int64_t ti = gs_tap_index(p, first + q, size);
                    off[k][q] = ti < 0 ? -1 : ti * stride[k];
                }
            }
        }
        const int64_t o = (int64_t)pt % p->out_plane;
        for (int64_t c = 0; c < p->c; c++) {
            const float *xp = j->x + (n * p->c + c) * p->in_plane;
            float acc = 0.0f;
            for (int tap = 0; tap < ntaps; tap++) {
                int rest = tap;
                int64_t at = 0;
                float wt = 1.0f;
                int zero = 0;
                for (uint32_t k = r; k-- > 0;) {
                    const int q = rest % taps;
                    rest /= taps;
                    if (off[k][q] < 0)
                        zero = 1;
                    at += off[k][q];
                    wt *= w[k][q];
                }
                if (!zero)
                    acc += wt * xp[at];
            }
            j->y[(n * p->c + c) * p->out_plane + o] = acc;
        }
    }
}

static loom_status gs_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const gs_params *p = k->params;
    gs_job j = {p, args->inputs[0], args->inputs[1], args->outputs[0]};
    const size_t points = (size_t)(p->n * p->out_plane);
    int64_t work = p->c;
    for (uint32_t q = 0; q < p->r; q++)
        work *= p->taps;
    cpu_parallel_for(pool, points, cpu_grain(work), gs_points, &j);
    return LOOM_OK;
}

static loom_status gs_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    gs_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    const char *mode = cpu_str_attr(node, "mode", "linear");
    const char *pad = cpu_str_attr(node, "padding_mode", "zeros");
    p->mode = strcmp(mode, "nearest") == 0 ? GS_NEAREST
              : strcmp(mode, "cubic") == 0 ? GS_CUBIC
                                           : GS_LINEAR;
    p->taps = p->mode == GS_NEAREST ? 1 : p->mode == GS_CUBIC ? 4 : 2;
    p->pad = strcmp(pad, "border") == 0       ? GS_BORDER
             : strcmp(pad, "reflection") == 0 ? GS_REFLECTION
                                              : GS_ZEROS;
    p->align = loom_node_attr_int(node, "align_corners", 0) != 0;
    p->r = x->rank - 2;
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->in_plane = cpu_prod(x->dims, 2, x->rank);
    p->out_plane = cpu_prod(y->dims, 2, y->rank);
    for (uint32_t q = 0; q < p->r; q++)
        p->in[q] = x->dims[2 + q];
    k->params = p;
    k->run = gs_run;
    return LOOM_OK;
}

static int gs_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < 2; i++)
        if (node->inputs[i].dtype != F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    return 1;
}

/* ===========================================================================================
 * RoiAlign
 * =========================================================================================== */

typedef struct ra_params {
    int64_t n, c, h, w, rois, oh, ow, sr;
    float scale;
    int half_pixel, max_mode;
} ra_params;

typedef struct ra_job {
    const ra_params *p;
    const float *x, *rois;
    const int64_t *bi;
    float *y;
} ra_job;

/* Adaptive samples per bin along an axis: ceil(BIN), 0 for an empty or NaN bin, at most 1024
 * (a huge roi would otherwise loop for ever; ONNX Runtime has no bound). */
static int64_t ra_grid(float bin)
{
    if (!(bin > 0.0f))
        return 0;
    return bin >= 1024.0f ? 1024 : (int64_t)ceilf(bin);
}

static void ra_rois(void *arg, size_t r0, size_t r1)
{
    const ra_job *j = arg;
    const ra_params *p = j->p;
    const float off = p->half_pixel ? 0.5f : 0.0f;
    for (size_t r = r0; r < r1; r++) {
        const float *roi = j->rois + r * 4;
        const float x0 = roi[0] * p->scale - off, y0 = roi[1] * p->scale - off;
        float rw = roi[2] * p->scale - off - x0, rh = roi[3] * p->scale - off - y0;
        if (!p->half_pixel) {
            rw = rw > 1.0f ? rw : 1.0f;
            rh = rh > 1.0f ? rh : 1.0f;
        }
        const float bh = rh / (float)p->oh, bw = rw / (float)p->ow;
        const int64_t gh = p->sr > 0 ? p->sr : ra_grid(rh / (float)p->oh);
        const int64_t gw = p->sr > 0 ? p->sr : ra_grid(rw / (float)p->ow);
        const float count = (float)(gh * gw > 1 ? gh * gw : 1);
        const int64_t b = j->bi[r];
        for (int64_t c = 0; c < p->c; c++) {
            const float *xp = j->x + (b * p->c + c) * p->h * p->w;
            float *yp = j->y + ((int64_t)r * p->c + c) * p->oh * p->ow;
            for (int64_t ph = 0; ph < p->oh; ph++)
                for (int64_t pw = 0; pw < p->ow; pw++) {
                    float acc = 0.0f;
                    int any = 0;
                    for (int64_t iy = 0; iy < gh; iy++) {
                        float yy = y0 + (float)ph * bh + ((float)iy + 0.5f) * bh / (float)gh;
                        for (int64_t ix = 0; ix < gw; ix++) {
                            float xx = x0 + (float)pw * bw + ((float)ix + 0.5f) * bw / (float)gw;
                            float v = 0.0f;
                            /* (written so that a NaN coordinate reads 0 too) */
                            if (yy >= -1.0f && yy <= (float)p->h && xx >= -1.0f &&
                                xx <= (float)p->w) {
                                float sy = yy <= 0.0f ? 0.0f : yy, sx = xx <= 0.0f ? 0.0f : xx;
                                int64_t yl = (int64_t)sy, xl = (int64_t)sx, yh2, xh2;
                                if (yl >= p->h - 1) {
                                    yh2 = yl = p->h - 1;
                                    sy = (float)yl;
                                } else {
                                    yh2 = yl + 1;
                                }
                                if (xl >= p->w - 1) {
                                    xh2 = xl = p->w - 1;
                                    sx = (float)xl;
                                } else {
                                    xh2 = xl + 1;
                                }
                                const float ly = sy - (float)yl, lx = sx - (float)xl;
                                const float hy = 1.0f - ly, hx = 1.0f - lx;
                                const float t1 = hy * hx * xp[yl * p->w + xl];
                                const float t2 = hy * lx * xp[yl * p->w + xh2];
                                const float t3 = ly * hx * xp[yh2 * p->w + xl];
                                const float t4 = ly * lx * xp[yh2 * p->w + xh2];
                                v = p->max_mode ? fmaxf(fmaxf(fmaxf(t1, t2), t3), t4)
                                                : t1 + t2 + t3 + t4;
                            }
                            if (p->max_mode)
                                acc = any ? fmaxf(acc, v) : v;
                            else
                                acc += v;
                            any = 1;
                        }
                    }
                    yp[ph * p->ow + pw] = p->max_mode ? acc : acc / count;
                }
        }
    }
}

static loom_status ra_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const ra_params *p = k->params;
    const int64_t *bi = args->inputs[2];
    for (int64_t r = 0; r < p->rois; r++)
        if (bi[r] < 0 || bi[r] >= p->n)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "RoiAlign: batch_indices[%lld] = %lld is outside [0, %lld)",
                            (long long)r, (long long)bi[r], (long long)p->n);
    if (p->h == 0 || p->w == 0) {
        memset(args->outputs[0], 0, (size_t)(p->rois * p->c * p->oh * p->ow) * sizeof(float));
        return LOOM_OK;
    }
    ra_job j = {p, args->inputs[0], args->inputs[1], bi, args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rois, cpu_grain(p->c * p->oh * p->ow * 16), ra_rois, &j);
    return LOOM_OK;
}

static loom_status ra_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    ra_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->h = x->dims[2];
    p->w = x->dims[3];
    p->rois = node->inputs[1].dims[0];
    p->oh = loom_node_attr_int(node, "output_height", 1);
    p->ow = loom_node_attr_int(node, "output_width", 1);
    p->sr = loom_node_attr_int(node, "sampling_ratio", 0);
    p->scale = loom_node_attr_float(node, "spatial_scale", 1.0f);
    p->half_pixel = strcmp(cpu_str_attr(node, "coordinate_transformation_mode", "half_pixel"),
                           "half_pixel") == 0;
    p->max_mode = strcmp(cpu_str_attr(node, "mode", "avg"), "max") == 0;
    k->params = p;
    k->run = ra_run;
    return LOOM_OK;
}

static int ra_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < 2; i++)
        if (node->inputs[i].dtype != F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    return 1;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_sampling(cpu_op_entry *table)
{
    table[LOOM_OP_GRID_SAMPLE] = (cpu_op_entry){gs_supports, gs_prepare};
    table[LOOM_OP_ROI_ALIGN] = (cpu_op_entry){ra_supports, ra_prepare};
}
