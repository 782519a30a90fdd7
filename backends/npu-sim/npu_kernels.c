/*
 * The simulated NPU's kernels: prepare (weights quantised, scratch laid out), the float ops
 * (Conv, MatMul, Gemm, Relu, Clip, Add, Mul, pools) and the dispatch of a run. What the device
 * takes is decided in npu_support.c; the exact integer ops are in npu_kernels_quant.c. The
 * kernels compute for real on the host but with the device's arithmetic:
 *  - fp16: every float operand is rounded to fp16, sums accumulate in f32 (as NPU MAC arrays
 *    do), and every result is rounded to fp16 (so an f32 tensor leaving the device holds fp16
 *    values, and values beyond 65504 become infinities, as on the device);
 *  - int8: weights (Conv W, MatMul/Gemm B) that are constants of the graph are quantised at
 *    prepare time, symmetric, one scale per output channel (maxabs/127); activations are
 *    quantised per tensor. When the host calibrated the plan on sample inputs
 *    (loom_node_desc.input_absmax gives a positive max-abs for an input), that input's scale
 *    is static, absmax/127 fixed at prepare time, and values beyond the calibrated range
 *    saturate at +-127 at run time, as on a device with static scales; otherwise the scale
 *    comes from the tensor's max-abs at run time (dynamic quantisation). Products accumulate
 *    in int32 and are dequantised to f32. Elementwise and pooling nodes quantise their float
 *    inputs the same way and compute on the dequantised values.
 *  - QuantizeLinear/DequantizeLinear/QLinearConv/QLinearMatMul follow ONNX exactly, as the CPU
 *    reference does; Reshape/Flatten are copies.
 */
#include "npu_sim.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNUSED_SLOT ((size_t)-1)

static loom_status fail(char *err, size_t len, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static loom_status fail(char *err, size_t len, loom_status st, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* ---- fp16 ---------------------------------------------------------------------------------- */

uint16_t npu_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf, nan (kept quiet) */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: an fp16 subnormal or zero */
        if (a < 0x33000000u) /* <= 2^-25 (a tie at 2^-25 goes to even: 0) */
            return (uint16_t)sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = a - 0x38000000u, rem = r & 0x1fffu;
    r >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++; /* a carry into the exponent is the right answer */
    return (uint16_t)(sign | r);
}

float npu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        x = sign | 0x7f800000u | (m << 13);
    else
        x = sign | ((e + 112u) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* ---- prepare ------------------------------------------------------------------------------- */

static size_t take(size_t *off, size_t bytes)
{
    size_t at = *off;
    *off += (bytes + 63) & ~(size_t)63;
    return at;
}

static float quant_scale(float maxabs)
{
    return maxabs > 0 && isfinite(maxabs) ? maxabs / 127.0f : 1.0f;
}

static int8_t quant8(float v, float scale)
{
    float q = rintf(v / scale);
    if (!(q >= -127.0f)) /* also NaN */
        q = q > 0 ? 127.0f : -127.0f;
    if (q > 127.0f)
        q = 127.0f;
    return (int8_t)q;
}

/* Channel of element I of the weight W in K's layout, and the channel count. Conv: W[M, ...]
 * runs over M; MatMul: B[..., K, N] over N; Gemm: B[K, N] or, transposed, B[N, K] over N. */
static int64_t weight_channels(const npu_kernel *k)
{
    const loom_tensor_desc *w = &k->in[k->w_input];
    if (k->op == LOOM_OP_CONV)
        return w->dims[0];
    if (k->op == LOOM_OP_GEMM && k->trans_b)
        return w->dims[0];
    return w->dims[w->rank - 1];
}

static int64_t weight_channel_of(const npu_kernel *k, int64_t i)
{
    const loom_tensor_desc *w = &k->in[k->w_input];
    if (k->op == LOOM_OP_CONV)
        return i / (w->dims[0] ? npu_numel(w) / w->dims[0] : 1);
    if (k->op == LOOM_OP_GEMM && k->trans_b)
        return i / w->dims[1];
    return i % w->dims[w->rank - 1];
}

/* Symmetric quantisation of the weight W: per channel when PER_CHANNEL, else per tensor (then
 * every scale is the same). */
static void quantise_weight(const npu_kernel *k, const float *w, int per_channel, int8_t *q,
                            float *scale)
{
    int64_t n = npu_numel(&k->in[k->w_input]), ch = k->n_ch;
    for (int64_t c = 0; c < ch; c++)
        scale[c] = 0;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        int64_t c = per_channel ? weight_channel_of(k, i) : 0;
        if (a > scale[c])
            scale[c] = a;
    }
    if (!per_channel)
        for (int64_t c = 1; c < ch; c++)
            scale[c] = scale[0];
    for (int64_t c = 0; c < ch; c++)
        scale[c] = quant_scale(scale[c]);
    for (int64_t i = 0; i < n; i++)
        q[i] = quant8(w[i], scale[weight_channel_of(k, i)]);
}

static void ints2(const loom_node_desc *node, const char *name, int64_t *v, size_t n, int64_t def)
{
    const loom_attr *a = loom_node_attr(node, name);
    for (size_t i = 0; i < n; i++)
        v[i] = a && a->kind == LOOM_ATTR_INTS && i < a->count ? a->ints[i] : def;
}

loom_status npu_kernel_prepare(const loom_node_desc *node, npu_mode mode, npu_kernel *k,
                               char *err, size_t err_len)
{
    memset(k, 0, sizeof *k);
    k->op = node->op;
    k->mode = mode;
    k->n_in = node->n_inputs;
    k->n_out = node->n_outputs;
    for (uint32_t i = 0; i < node->n_inputs; i++) {
        k->in[i] = node->inputs[i];
        k->in_present[i] = npu_input_present(node, i);
    }
    k->out[0] = node->outputs[0];
    k->w_input = -1;
    if (mode == NPU_MODE_INT8 && LOOM_NODE_DESC_HAS_ABSMAX(node) && node->input_absmax)
        for (uint32_t i = 0; i < node->n_inputs && i < NPU_MAX_IN; i++) {
            float m = node->input_absmax[i];
            if (k->in_present[i] && k->in[i].dtype == LOOM_DTYPE_F32 && m > 0 && isfinite(m))
                k->in_scale[i] = quant_scale(m);
        }
    k->s_out = k->s_qa = k->s_qw = k->s_ws = UNUSED_SLOT;
    for (uint32_t i = 0; i < NPU_MAX_IN; i++)
        k->s_in[i] = UNUSED_SLOT;

    switch (node->op) {
    case LOOM_OP_CONV: case LOOM_OP_QLINEAR_CONV: case LOOM_OP_MAX_POOL:
    case LOOM_OP_AVERAGE_POOL: {
        const loom_tensor_desc *w = &node->inputs[node->op == LOOM_OP_CONV ? 1 : 3];
        int is_conv = node->op == LOOM_OP_CONV || node->op == LOOM_OP_QLINEAR_CONV;
        ints2(node, "kernel_shape", k->k, 2, 1);
        if (is_conv) {
            k->k[0] = w->dims[2];
            k->k[1] = w->dims[3];
        }
        ints2(node, "strides", k->stride, 2, 1);
        ints2(node, "dilations", k->dil, 2, 1);
        ints2(node, "pads", k->pad, 4, 0);
        k->group = loom_node_attr_int(node, "group", 1);
        if (k->group < 1)
            k->group = 1;
        k->count_include_pad = (int)loom_node_attr_int(node, "count_include_pad", 0);
        break;
    }
    case LOOM_OP_GEMM:
        k->alpha = loom_node_attr_float(node, "alpha", 1.0f);
        k->beta = loom_node_attr_float(node, "beta", 1.0f);
        k->trans_a = (int)loom_node_attr_int(node, "transA", 0);
        k->trans_b = (int)loom_node_attr_int(node, "transB", 0);
        break;
    case LOOM_OP_CLIP:
        k->lo = loom_node_attr_float(node, "min", -INFINITY);
        k->hi = loom_node_attr_float(node, "max", INFINITY);
        break;
    case LOOM_OP_QUANTIZE_LINEAR: case LOOM_OP_DEQUANTIZE_LINEAR:
        k->axis = loom_node_attr_int(node, "axis", 0);
        break;
    case LOOM_OP_MOE_EXPERT: {
        const loom_attr *act = loom_node_attr(node, "activation_type");
        const char *a = act && act->kind == LOOM_ATTR_STRING && act->s ? act->s : "relu";
        k->moe_expert = loom_node_attr_int(node, "expert", 0);
        k->moe_act = strcmp(a, "gelu") == 0 ? 1 : strcmp(a, "silu") == 0 ? 2
                     : strcmp(a, "identity") == 0 ? 3 : 0;
        break;
    }
    default:
        break;
    }

    /* Scratch: fp16/int8-rounded copies of the float inputs, a float result when the output is
     * fp16, and the int8 operands of the integer GEMM path. */
    size_t off = 0;
    int gemm_like = node->op == LOOM_OP_CONV || node->op == LOOM_OP_MATMUL ||
                    node->op == LOOM_OP_GEMM;
    if (mode == NPU_MODE_INT8 && gemm_like) {
        k->w_input = 1;
        k->n_ch = weight_channels(k);
        k->s_qa = take(&off, (size_t)npu_numel(&k->in[0]));
        const float *wc = node->input_constants ? node->input_constants[1] : NULL;
        if (wc) {
            k->wq = malloc((size_t)npu_numel(&k->in[1]) + 1);
            k->wscale = malloc(((size_t)k->n_ch + 1) * sizeof *k->wscale);
            if (!k->wq || !k->wscale) {
                npu_kernel_free(k);
                return fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "npu-sim: out of memory");
            }
            quantise_weight(k, wc, 1, k->wq, k->wscale);
        } else {
            k->s_qw = take(&off, (size_t)npu_numel(&k->in[1]));
            k->s_ws = take(&off, ((size_t)k->n_ch + 1) * sizeof(float));
        }
    } else if (mode != NPU_MODE_EXACT) {
        for (uint32_t i = 0; i < node->n_inputs; i++)
            if (k->in_present[i] && npu_is_float(k->in[i].dtype))
                k->s_in[i] = take(&off, (size_t)npu_numel(&k->in[i]) * sizeof(float));
        if (k->out[0].dtype == LOOM_DTYPE_F16)
            k->s_out = take(&off, (size_t)npu_numel(&k->out[0]) * sizeof(float));
    }
    k->s_hid = UNUSED_SLOT;
    if (node->op == LOOM_OP_MOE_EXPERT)
        k->s_hid = take(&off, (size_t)node->inputs[2].dims[0] * sizeof(float));
    k->scratch_bytes = off;
    return LOOM_OK;
}

void npu_kernel_free(npu_kernel *k)
{
    if (!k)
        return;
    free(k->wq);
    free(k->wscale);
    k->wq = NULL;
    k->wscale = NULL;
}

/* ---- run: helpers -------------------------------------------------------------------------- */

/* Input I of a float node as f32 values in the device's arithmetic. */
static const float *load_input(const npu_kernel *k, const loom_exec_args *a, uint32_t i,
                               char *scratch)
{
    const void *src = a->inputs[i];
    if (!src || k->s_in[i] == UNUSED_SLOT)
        return src;
    float *dst = (float *)(scratch + k->s_in[i]);
    int64_t n = npu_numel(&k->in[i]);
    if (k->in[i].dtype == LOOM_DTYPE_F16) {
        const uint16_t *h = src;
        for (int64_t j = 0; j < n; j++)
            dst[j] = npu_f16_to_f32(h[j]);
    } else if (k->mode == NPU_MODE_F16) {
        const float *f = src;
        for (int64_t j = 0; j < n; j++)
            dst[j] = npu_round_f16(f[j]);
    } else { /* int8: quantise per tensor, hand on the dequantised values */
        const float *f = src;
        float s = k->in_scale[i];
        if (!(s > 0)) { /* not calibrated: dynamic scale */
            float m = 0;
            for (int64_t j = 0; j < n; j++)
                m = fmaxf(m, fabsf(f[j]));
            s = quant_scale(m);
        }
        for (int64_t j = 0; j < n; j++)
            dst[j] = (float)quant8(f[j], s) * s;
    }
    return dst;
}

static float *result_buffer(const npu_kernel *k, const loom_exec_args *a, char *scratch)
{
    if (k->s_out != UNUSED_SLOT)
        return (float *)(scratch + k->s_out);
    return a->outputs[0];
}

/* Hand the f32 result R over in the output's dtype, rounded as the device would. */
static void store_result(const npu_kernel *k, const loom_exec_args *a, float *r)
{
    int64_t n = npu_numel(&k->out[0]);
    if (k->out[0].dtype == LOOM_DTYPE_F16) {
        uint16_t *h = a->outputs[0];
        for (int64_t j = 0; j < n; j++)
            h[j] = npu_f32_to_f16(r[j]);
    } else if (k->mode == NPU_MODE_F16) {
        for (int64_t j = 0; j < n; j++)
            r[j] = npu_round_f16(r[j]);
    }
}

/* Strides of IN (right-aligned against OUT's rank R <= 4) in OUT's index space, 0 where IN
 * broadcasts; padded in front to 4 dims. */
static void bcast_strides(const loom_tensor_desc *in, uint32_t r, const int64_t *odims,
                          int64_t *st)
{
    int64_t s = 1;
    for (int d = 3; d >= 0; d--) {
        int od = d - (4 - (int)r);
        int id = od - ((int)r - (int)in->rank);
        if (od < 0 || id < 0) {
            st[d] = 0;
            continue;
        }
        st[d] = in->dims[id] == 1 && odims[od] != 1 ? 0 : s;
        s *= in->dims[id];
    }
}

static void dims4(const loom_tensor_desc *d, int64_t *o)
{
    for (int i = 0; i < 4; i++) {
        int j = i - (4 - (int)d->rank);
        o[i] = j >= 0 ? d->dims[j] : 1;
    }
}

/* ---- run: float kernels -------------------------------------------------------------------- */

static void run_elementwise(const npu_kernel *k, const float *x, float *y)
{
    int64_t n = npu_numel(&k->out[0]);
    if (k->op == LOOM_OP_RELU)
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : 0.0f;
    else
        for (int64_t i = 0; i < n; i++)
            y[i] = fminf(fmaxf(x[i], k->lo), k->hi);
}

static void run_binary(const npu_kernel *k, const float *a, const float *b, float *y)
{
    int64_t od[4], sa[4], sb[4];
    dims4(&k->out[0], od);
    bcast_strides(&k->in[0], k->out[0].rank, k->out[0].dims, sa);
    bcast_strides(&k->in[1], k->out[0].rank, k->out[0].dims, sb);
    int mul = k->op == LOOM_OP_MUL;
    int64_t o = 0;
    for (int64_t i0 = 0; i0 < od[0]; i0++)
        for (int64_t i1 = 0; i1 < od[1]; i1++)
            for (int64_t i2 = 0; i2 < od[2]; i2++)
                for (int64_t i3 = 0; i3 < od[3]; i3++) {
                    float u = a[i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]];
                    float v = b[i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3]];
                    y[o++] = mul ? u * v : u + v;
                }
}

/* Offsets of the batch matrices of A and B for output batch B_OUT (MatMul, ranks <= 4). */
static void batch_offsets(const npu_kernel *k, int64_t b_out, int64_t *oa, int64_t *ob)
{
    const loom_tensor_desc *y = &k->out[0];
    int64_t idx[2] = {0, 0}, rem = b_out;
    uint32_t nb = y->rank - 2;
    for (int d = (int)nb - 1; d >= 0; d--) {
        idx[d] = rem % y->dims[d];
        rem /= y->dims[d];
    }
    for (int which = 0; which < 2; which++) {
        const loom_tensor_desc *t = &k->in[which];
        uint32_t tb = t->rank - 2;
        int64_t off = 0, mat = t->dims[t->rank - 2] * t->dims[t->rank - 1], s = mat;
        for (int d = (int)tb - 1; d >= 0; d--) {
            int od = d + (int)(nb - tb);
            int64_t i = t->dims[d] == 1 ? 0 : idx[od];
            off += i * s;
            s *= t->dims[d];
        }
        *(which ? ob : oa) = off;
    }
}

/* Y[M,N] = A * B over K, A(m,k) = a[m*ars + k*acs], B(k,n) = b[k*brs + n*bcs]. */
static void gemm_f32(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs,
                     const float *b, int64_t brs, int64_t bcs, float *y)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float acc = 0;
            for (int64_t kk = 0; kk < K; kk++)
                acc += a[m * ars + kk * acs] * b[kk * brs + n * bcs];
            y[m * N + n] = acc;
        }
}

static void gemm_i8(int64_t M, int64_t N, int64_t K, const int8_t *a, int64_t ars, int64_t acs,
                    const int8_t *b, int64_t brs, int64_t bcs, int32_t *y_row, int64_t m)
{
    (void)M;
    for (int64_t n = 0; n < N; n++) {
        int32_t acc = 0;
        for (int64_t kk = 0; kk < K; kk++)
            acc += (int32_t)a[m * ars + kk * acs] * (int32_t)b[kk * brs + n * bcs];
        y_row[n] = acc;
    }
}

/* Quantise the activation input 0 per tensor into QA, with its calibrated static scale (values
 * beyond it saturate) or else a dynamic one from its max-abs; returns the scale. */
static float quantise_activation(const npu_kernel *k, const float *x, int8_t *qa)
{
    int64_t n = npu_numel(&k->in[0]);
    float s = k->in_scale[0];
    if (!(s > 0)) {
        float m = 0;
        for (int64_t i = 0; i < n; i++)
            m = fmaxf(m, fabsf(x[i]));
        s = quant_scale(m);
    }
    for (int64_t i = 0; i < n; i++)
        qa[i] = quant8(x[i], s);
    return s;
}

static loom_status run_matmul_gemm(const npu_kernel *k, const loom_exec_args *a, char *scratch)
{
    const loom_tensor_desc *y = &k->out[0], *ta = &k->in[0];
    int64_t M = y->dims[y->rank - 2], N = y->dims[y->rank - 1];
    int64_t K = k->op == LOOM_OP_GEMM ? (k->trans_a ? ta->dims[0] : ta->dims[1])
                                      : ta->dims[ta->rank - 1];
    int64_t ars = k->trans_a ? 1 : K, acs = k->trans_a ? M : 1;
    int64_t brs = k->trans_b ? 1 : N, bcs = k->trans_b ? K : 1;
    int64_t batches = M > 0 && N > 0 ? npu_numel(y) / (M * N) : 0;
    float *out = k->mode == NPU_MODE_INT8 ? a->outputs[0] : result_buffer(k, a, scratch);

    if (k->mode == NPU_MODE_INT8) {
        int8_t *qa = (int8_t *)(scratch + k->s_qa);
        float sa = quantise_activation(k, a->inputs[0], qa);
        const int8_t *qb = k->wq;
        const float *sb = k->wscale;
        if (!qb) {
            int8_t *qw = (int8_t *)(scratch + k->s_qw);
            float *ws = (float *)(scratch + k->s_ws);
            quantise_weight(k, a->inputs[1], 0, qw, ws);
            qb = qw;
            sb = ws;
        }
        int32_t row[256];
        for (int64_t bt = 0; bt < batches; bt++) {
            int64_t oa = 0, ob = 0;
            if (k->op == LOOM_OP_MATMUL)
                batch_offsets(k, bt, &oa, &ob);
            for (int64_t m = 0; m < M; m++)
                for (int64_t n0 = 0; n0 < N; n0 += 256) {
                    int64_t nn = N - n0 < 256 ? N - n0 : 256;
                    gemm_i8(M, nn, K, qa + oa, ars, acs, qb + ob + n0 * bcs, brs, bcs, row, m);
                    for (int64_t n = 0; n < nn; n++)
                        out[bt * M * N + m * N + n0 + n] = (float)row[n] * sa * sb[n0 + n];
                }
        }
    } else {
        const float *fa = load_input(k, a, 0, scratch), *fb = load_input(k, a, 1, scratch);
        for (int64_t bt = 0; bt < batches; bt++) {
            int64_t oa = 0, ob = 0;
            if (k->op == LOOM_OP_MATMUL)
                batch_offsets(k, bt, &oa, &ob);
            gemm_f32(M, N, K, fa + oa, ars, acs, fb + ob, brs, bcs, out + bt * M * N);
        }
    }
    if (k->op == LOOM_OP_GEMM) {
        const float *c = NULL;
        int64_t sc[4] = {0, 0, 0, 0};
        if (k->n_in > 2 && k->in_present[2]) {
            c = k->mode == NPU_MODE_INT8 ? a->inputs[2] : load_input(k, a, 2, scratch);
            bcast_strides(&k->in[2], 2, y->dims, sc);
        }
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                float v = k->alpha * out[m * N + n];
                if (c && k->beta != 0)
                    v += k->beta * c[m * sc[2] + n * sc[3]];
                out[m * N + n] = v;
            }
    }
    if (k->mode != NPU_MODE_INT8)
        store_result(k, a, out);
    return LOOM_OK;
}

void npu_conv_out(const npu_kernel *k, int64_t *N, int64_t *C, int64_t *H, int64_t *W,
                  int64_t *M, int64_t *OH, int64_t *OW)
{
    *N = k->in[0].dims[0];
    *C = k->in[0].dims[1];
    *H = k->in[0].dims[2];
    *W = k->in[0].dims[3];
    *M = k->out[0].dims[1];
    *OH = k->out[0].dims[2];
    *OW = k->out[0].dims[3];
}

static loom_status run_conv(const npu_kernel *k, const loom_exec_args *a, char *scratch)
{
    int64_t N, C, H, W, M, OH, OW;
    npu_conv_out(k, &N, &C, &H, &W, &M, &OH, &OW);
    int64_t G = k->group, Cg = C / G, Mg = M / G, KH = k->k[0], KW = k->k[1];
    int int8 = k->mode == NPU_MODE_INT8;
    const float *x = NULL, *w = NULL, *bias = NULL;
    const int8_t *qx = NULL, *qw = k->wq;
    const float *ws = k->wscale;
    float sx = 1;
    float *y = int8 ? a->outputs[0] : result_buffer(k, a, scratch);
    if (int8) {
        int8_t *q = (int8_t *)(scratch + k->s_qa);
        sx = quantise_activation(k, a->inputs[0], q);
        qx = q;
        if (!qw) {
            int8_t *q2 = (int8_t *)(scratch + k->s_qw);
            float *s2 = (float *)(scratch + k->s_ws);
            quantise_weight(k, a->inputs[1], 1, q2, s2);
            qw = q2;
            ws = s2;
        }
        bias = k->n_in > 2 && k->in_present[2] ? a->inputs[2] : NULL;
    } else {
        x = load_input(k, a, 0, scratch);
        w = load_input(k, a, 1, scratch);
        bias = k->n_in > 2 && k->in_present[2] ? load_input(k, a, 2, scratch) : NULL;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t g = m / Mg;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    float facc = 0;
                    int32_t iacc = 0;
                    for (int64_t c = 0; c < Cg; c++) {
                        int64_t xc = ((n * C) + g * Cg + c) * H * W;
                        int64_t wc = ((m * Cg) + c) * KH * KW;
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t ih = oh * k->stride[0] - k->pad[0] + kh * k->dil[0];
                            if (ih < 0 || ih >= H)
                                continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t iw = ow * k->stride[1] - k->pad[1] + kw * k->dil[1];
                                if (iw < 0 || iw >= W)
                                    continue;
                                if (int8)
                                    iacc += (int32_t)qx[xc + ih * W + iw] *
                                            (int32_t)qw[wc + kh * KW + kw];
                                else
                                    facc += x[xc + ih * W + iw] * w[wc + kh * KW + kw];
                            }
                        }
                    }
                    float v = int8 ? (float)iacc * sx * ws[m] : facc;
                    if (bias)
                        v += bias[m];
                    y[((n * M + m) * OH + oh) * OW + ow] = v;
                }
        }
    if (!int8)
        store_result(k, a, y);
    return LOOM_OK;
}

static void run_pool(const npu_kernel *k, const float *x, float *y)
{
    int64_t N = k->in[0].dims[0], C = k->in[0].dims[1], H = k->in[0].dims[2],
            W = k->in[0].dims[3], OH = k->out[0].dims[2], OW = k->out[0].dims[3];
    int is_max = k->op == LOOM_OP_MAX_POOL;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                float acc = is_max ? -INFINITY : 0.0f;
                int64_t valid = 0, padded = 0;
                for (int64_t kh = 0; kh < k->k[0]; kh++) {
                    int64_t ih = oh * k->stride[0] - k->pad[0] + kh * k->dil[0];
                    for (int64_t kw = 0; kw < k->k[1]; kw++) {
                        int64_t iw = ow * k->stride[1] - k->pad[1] + kw * k->dil[1];
                        /* taps inside the padded input count for count_include_pad */
                        if (ih < H + k->pad[2] && iw < W + k->pad[3])
                            padded++;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                            continue;
                        float v = x[(p * H + ih) * W + iw];
                        valid++;
                        if (is_max)
                            acc = v > acc ? v : acc;
                        else
                            acc += v;
                    }
                }
                if (!is_max) {
                    int64_t d = k->count_include_pad ? padded : valid;
                    acc = d ? acc / (float)d : 0.0f;
                }
                y[(p * OH + oh) * OW + ow] = acc;
            }
}

static void run_gap(const npu_kernel *k, const float *x, float *y)
{
    int64_t planes = k->in[0].dims[0] * k->in[0].dims[1];
    int64_t sp = planes ? npu_numel(&k->in[0]) / planes : 0;
    for (int64_t p = 0; p < planes; p++) {
        float acc = 0;
        for (int64_t i = 0; i < sp; i++)
            acc += x[p * sp + i];
        y[p] = sp ? acc / (float)sp : 0.0f;
    }
}

/* ---- run ------------------------------------------------------------------------------------ */

/* MoEExpert in fp16: every operand rounded to fp16 on load, f32 accumulation, the hidden row
 * rounded to fp16 as the device would store it; the rows of the tokens the expert does not take
 * (routing weight <= 0) are zero. */
static loom_status run_moe_expert(const npu_kernel *k, const loom_exec_args *a, char *scratch)
{
    const float *x = load_input(k, a, 0, scratch), *rt = load_input(k, a, 1, scratch);
    const float *w1 = load_input(k, a, 2, scratch), *w2 = load_input(k, a, 4, scratch);
    const float *b1 = k->in_present[3] ? load_input(k, a, 3, scratch) : NULL;
    const float *b2 = k->in_present[5] ? load_input(k, a, 5, scratch) : NULL;
    const float *w3 = k->in_present[6] ? load_input(k, a, 6, scratch) : NULL;
    const float *b3 = k->in_present[7] ? load_input(k, a, 7, scratch) : NULL;
    float *y = result_buffer(k, a, scratch), *h = (float *)(scratch + k->s_hid);
    const loom_tensor_desc *xd = &k->in[0];
    const int64_t T = k->in[1].dims[0], E = k->in[1].dims[1], H = xd->dims[xd->rank - 1];
    const int64_t I = k->in[2].dims[0];
    for (int64_t t = 0; t < T; t++) {
        const float w = rt[t * E + k->moe_expert], *xr = x + t * H;
        float *yr = y + t * H;
        if (!(w > 0.0f)) {
            memset(yr, 0, (size_t)H * sizeof(float));
            continue;
        }
        for (int64_t i = 0; i < I; i++) {
            float v = b1 ? b1[i] : 0.0f;
            for (int64_t c = 0; c < H; c++)
                v += w1[i * H + c] * xr[c];
            if (k->moe_act == 0)
                v = v > 0.0f ? v : 0.0f;
            else if (k->moe_act == 1)
                v = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
            else if (k->moe_act == 2)
                v = v / (1.0f + expf(-v));
            if (w3) {
                float g = b3 ? b3[i] : 0.0f;
                for (int64_t c = 0; c < H; c++)
                    g += w3[i * H + c] * xr[c];
                v *= g;
            }
            h[i] = npu_round_f16(v);
        }
        for (int64_t c = 0; c < H; c++) {
            float o = b2 ? b2[c] : 0.0f;
            for (int64_t i = 0; i < I; i++)
                o += w2[c * I + i] * h[i];
            yr[c] = w * o;
        }
    }
    store_result(k, a, y);
    return LOOM_OK;
}

loom_status npu_kernel_run(const npu_kernel *k, const loom_exec_args *a, char *err,
                           size_t err_len)
{
    char *scratch = a->scratch;
    if (k->scratch_bytes && !scratch)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                    "npu-sim: %zu bytes of scratch were asked for and none was given",
                    k->scratch_bytes);
    for (uint32_t i = 0; i < k->n_in; i++)
        if (k->in_present[i] && !a->inputs[i] && !(k->op == LOOM_OP_RESHAPE && i == 1))
            return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "npu-sim: input %u is missing",
                        i);
    switch (k->op) {
    case LOOM_OP_CONV:
        return run_conv(k, a, scratch);
    case LOOM_OP_MATMUL: case LOOM_OP_GEMM:
        return run_matmul_gemm(k, a, scratch);
    case LOOM_OP_RELU: case LOOM_OP_CLIP: case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
    case LOOM_OP_GLOBAL_AVERAGE_POOL: {
        const float *x = load_input(k, a, 0, scratch);
        float *y = result_buffer(k, a, scratch);
        if (k->op == LOOM_OP_RELU || k->op == LOOM_OP_CLIP)
            run_elementwise(k, x, y);
        else if (k->op == LOOM_OP_GLOBAL_AVERAGE_POOL)
            run_gap(k, x, y);
        else
            run_pool(k, x, y);
        store_result(k, a, y);
        return LOOM_OK;
    }
    case LOOM_OP_ADD: case LOOM_OP_MUL: {
        const float *x = load_input(k, a, 0, scratch), *z = load_input(k, a, 1, scratch);
        float *y = result_buffer(k, a, scratch);
        run_binary(k, x, z, y);
        store_result(k, a, y);
        return LOOM_OK;
    }
    case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN:
        memcpy(a->outputs[0], a->inputs[0],
               (size_t)npu_numel(&k->in[0]) * loom_dtype_size(k->in[0].dtype));
        return LOOM_OK;
    case LOOM_OP_QUANTIZE_LINEAR:
        npu_run_quantize(k, a);
        return LOOM_OK;
    case LOOM_OP_DEQUANTIZE_LINEAR:
        npu_run_dequantize(k, a);
        return LOOM_OK;
    case LOOM_OP_QLINEAR_MAT_MUL:
        npu_run_qlinear_matmul(k, a);
        return LOOM_OK;
    case LOOM_OP_QLINEAR_CONV:
        npu_run_qlinear_conv(k, a);
        return LOOM_OK;
    case LOOM_OP_MOE_EXPERT:
        return run_moe_expert(k, a, scratch);
    default:
        return fail(err, err_len, LOOM_ERR_INTERNAL, "npu-sim: no kernel for op %d", (int)k->op);
    }
}

