/*
 * The simulated NPU's exact integer kernels: QuantizeLinear, DequantizeLinear, QLinearMatMul and
 * QLinearConv, following ONNX exactly as the CPU reference does (no rounding of the device's
 * own). Float ops are in npu_kernels.c.
 */
#include "npu_sim.h"

#include <math.h>

static float load_scalar_f(const void *p, loom_dtype t, int64_t i)
{
    if (t == LOOM_DTYPE_F16)
        return npu_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static int32_t load_q(const void *p, loom_dtype t, int64_t i)
{
    if (!p)
        return 0;
    return t == LOOM_DTYPE_U8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

static void store_q(void *p, loom_dtype t, int64_t i, int32_t v)
{
    if (t == LOOM_DTYPE_U8)
        ((uint8_t *)p)[i] = (uint8_t)v;
    else
        ((int8_t *)p)[i] = (int8_t)v;
}

static void q_range(loom_dtype t, int32_t *lo, int32_t *hi)
{
    *lo = t == LOOM_DTYPE_U8 ? 0 : -128;
    *hi = t == LOOM_DTYPE_U8 ? 255 : 127;
}

/* Index along the quantisation axis of element I, when the scale has more than one entry. */
static int64_t axis_index(const npu_kernel *k, int64_t i)
{
    if (npu_numel(&k->in[1]) == 1)
        return 0;
    int64_t inner = 1;
    for (uint32_t d = (uint32_t)k->axis + 1; d < k->in[0].rank; d++)
        inner *= k->in[0].dims[d];
    return (i / inner) % k->in[0].dims[k->axis];
}

void npu_run_quantize(const npu_kernel *k, const loom_exec_args *a)
{
    int64_t n = npu_numel(&k->in[0]);
    loom_dtype yt = k->out[0].dtype;
    int32_t lo, hi;
    q_range(yt, &lo, &hi);
    const void *zp = k->n_in > 2 && k->in_present[2] ? a->inputs[2] : NULL;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = axis_index(k, i);
        float s = load_scalar_f(a->inputs[1], k->in[1].dtype, c);
        float x = load_scalar_f(a->inputs[0], k->in[0].dtype, i);
        float v = rintf(x / s) + (float)load_q(zp, yt, zp && npu_numel(&k->in[2]) > 1 ? c : 0);
        v = fmaxf(v, (float)lo);
        v = fminf(v, (float)hi);
        store_q(a->outputs[0], yt, i, (int32_t)v);
    }
}

void npu_run_dequantize(const npu_kernel *k, const loom_exec_args *a)
{
    int64_t n = npu_numel(&k->in[0]);
    const void *zp = k->n_in > 2 && k->in_present[2] ? a->inputs[2] : NULL;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = axis_index(k, i);
        float s = load_scalar_f(a->inputs[1], k->in[1].dtype, c);
        int32_t q = load_q(a->inputs[0], k->in[0].dtype, i) -
                    load_q(zp, k->in[0].dtype, zp && npu_numel(&k->in[2]) > 1 ? c : 0);
        float v = (float)q * s;
        if (k->out[0].dtype == LOOM_DTYPE_F16)
            ((uint16_t *)a->outputs[0])[i] = npu_f32_to_f16(v);
        else
            ((float *)a->outputs[0])[i] = v;
    }
}

static int32_t requant(int32_t acc, float mult, int32_t zp, int32_t lo, int32_t hi)
{
    double v = rint((double)acc * (double)mult) + (double)zp;
    return v < lo ? lo : v > hi ? hi : (int32_t)v;
}

void npu_run_qlinear_matmul(const npu_kernel *k, const loom_exec_args *a)
{
    const loom_tensor_desc *ta = &k->in[0], *tb = &k->in[3], *ty = &k->out[0];
    int64_t M = ta->dims[0], K = ta->dims[1], N = tb->dims[1];
    float sa = ((const float *)a->inputs[1])[0], sy = ((const float *)a->inputs[6])[0];
    int32_t za = load_q(a->inputs[2], ta->dtype, 0), zb = load_q(a->inputs[5], tb->dtype, 0),
            zy = load_q(a->inputs[7], ty->dtype, 0), lo, hi;
    q_range(ty->dtype, &lo, &hi);
    int per_col = npu_numel(&k->in[4]) > 1;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            int32_t acc = 0;
            for (int64_t kk = 0; kk < K; kk++)
                acc += (load_q(a->inputs[0], ta->dtype, m * K + kk) - za) *
                       (load_q(a->inputs[3], tb->dtype, kk * N + n) - zb);
            float mult = sa * ((const float *)a->inputs[4])[per_col ? n : 0] / sy;
            store_q(a->outputs[0], ty->dtype, m * N + n, requant(acc, mult, zy, lo, hi));
        }
}

void npu_run_qlinear_conv(const npu_kernel *k, const loom_exec_args *a)
{
    int64_t N, C, H, W, M, OH, OW;
    npu_conv_out(k, &N, &C, &H, &W, &M, &OH, &OW);
    int64_t G = k->group, Cg = C / G, Mg = M / G, KH = k->k[0], KW = k->k[1];
    loom_dtype xt = k->in[0].dtype, wt = k->in[3].dtype, yt = k->out[0].dtype;
    float sx = ((const float *)a->inputs[1])[0], sy = ((const float *)a->inputs[6])[0];
    int32_t zx = load_q(a->inputs[2], xt, 0), zw = load_q(a->inputs[5], wt, 0),
            zy = load_q(a->inputs[7], yt, 0), lo, hi;
    q_range(yt, &lo, &hi);
    int per_ch = npu_numel(&k->in[4]) > 1;
    const int32_t *bias = k->n_in > 8 && k->in_present[8] ? a->inputs[8] : NULL;
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t g = m / Mg;
            float mult = sx * ((const float *)a->inputs[4])[per_ch ? m : 0] / sy;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    int32_t acc = bias ? bias[m] : 0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t ih = oh * k->stride[0] - k->pad[0] + kh * k->dil[0];
                            if (ih < 0 || ih >= H)
                                continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t iw = ow * k->stride[1] - k->pad[1] + kw * k->dil[1];
                                if (iw < 0 || iw >= W)
                                    continue;
                                int64_t xi = (((n * C) + g * Cg + c) * H + ih) * W + iw;
                                int64_t wi = (((m * Cg) + c) * KH + kh) * KW + kw;
                                acc += (load_q(a->inputs[0], xt, xi) - zx) *
                                       (load_q(a->inputs[3], wt, wi) - zw);
                            }
                        }
                    store_q(a->outputs[0], yt, ((n * M + m) * OH + oh) * OW + ow,
                            requant(acc, mult, zy, lo, hi));
                }
        }
}

