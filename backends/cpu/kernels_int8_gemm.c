/*
 * MatMulInt8Dynamic on the CPU: Y[m][n] = (sum_k qa[m][k] * B[k][n]) * sa[m] * sb[n] + bias[n],
 * where each row of A is quantised when the node runs (symmetric, qa in [-127, 127], one scale
 * sa[m] = max|A[m]| / 127) and B is int8 with one scale per column. Sums are exact int32. With
 * tensor_asymmetric, A is quantised as ONNX DynamicQuantizeLinear does instead (uint8, one scale
 * and zero point for the whole tensor), so a fused DynamicQuantizeLinear + MatMulInteger keeps its
 * integer arithmetic exactly; with a_scale and a_zero_point too, A is quantised with that fixed
 * scale and zero point (static quantisation, as QuantizeLinear does: the fuse_qdq pass).
 *
 * The inner loop is AVX-512 VNNI's vpdpbusd (u8 x s8, four products summed into each int32
 * lane, no saturation): A's rows are stored as u8 (qa + 128, or DynamicQuantizeLinear's values)
 * and the zero point times the column sum of B is taken back out in the epilogue. B is packed once at prepare into panels of 64 columns, each
 * k-group of 4 holding 64 x 4 bytes, so the micro-kernel (4 rows x 64 columns, 16 accumulators)
 * reads B contiguously. Machines without VNNI run the same packed layout with portable integer
 * code (exact, slower). The ISA is chosen once, at prepare (LOOM_CPU_NO_VNNI=1: portable).
 * An activation attribute (the int8-dynamic pass fuses MatMul + bias Add + GELU) is applied by
 * the epilogue (cpu_epilogue.h, the fused ops' formulas) to each row's 64 columns of a panel
 * right after they are stored, while they are in cache.
 */
#include "cpu_epilogue.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define I8G_HAVE_X86 1
#endif

#define I8G_PANEL 64 /* columns per packed panel */

/* Four bytes of a quantised row read as one int32 (rows are 4-byte aligned): a broadcast
 * straight from memory, which the compiler folds into vpdpbusd's {1to16} operand. */
typedef int32_t i8g_i32 __attribute__((may_alias));
#define I8G_ROWS 4   /* rows per micro-kernel */

typedef struct i8g_params {
    int64_t m, k, n;
    int64_t kg;         /* k-groups of 4 (K rounded up) */
    int64_t panels;     /* ceil(N / 64) */
    int8_t *packed;     /* panels x kg x 64 x 4 bytes, zero-padded */
    int32_t *colsum;    /* sum_k B[k][n], per padded column */
    float *scale;       /* per padded column (0 in the padding) */
    float *bias;        /* per padded column, or NULL */
    int vnni;
    int asym;           /* tensor_asymmetric: A quantised as DynamicQuantizeLinear does */
    int fixed;          /* asym with a fixed scale and zero point (a_scale, a_zero_point) */
    float a_scale;
    int32_t a_zp;
    cpu_epilogue ep;    /* the activation after the bias (CPU_ACT_NONE: none) */
} i8g_params;

static void i8g_free(void *p)
{
    i8g_params *q = p;
    if (!q)
        return;
    free(q->packed);
    free(q->colsum);
    free(q->scale);
    free(q->bias);
    free(q);
}

static int i8g_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 3 || node->inputs[0].dtype != LOOM_DTYPE_F32 ||
        node->inputs[1].dtype != LOOM_DTYPE_I8 || node->inputs[2].dtype != LOOM_DTYPE_F32)
        return cpu_reason(reason, len, "MatMulInt8Dynamic wants f32 A, int8 B, f32 scales");
    if (!node->input_constants || !node->input_constants[1] || !node->input_constants[2] ||
        (cpu_present(node, 3) && !node->input_constants[3]))
        return cpu_reason(reason, len, "MatMulInt8Dynamic wants constant B, scales and bias");
    cpu_epilogue ep;
    return cpu_epilogue_parse(node, &ep, reason, len);
}

/* Where a scratch region of BYTES starts, 64-byte aligned, after OFF bytes. */
static size_t align64(size_t off)
{
    return (off + 63) & ~(size_t)63;
}

typedef struct i8g_run {
    const i8g_params *p;
    const float *a;
    float *y;
    uint8_t *qa;    /* m x (kg * 4) */
    float *sa;      /* m */
    int32_t zp;     /* what the stored u8 values of A are offset by: 128, or A's zero point */
    float scale, zpf; /* tensor_asymmetric: A's scale and zero point */
    int32_t *c;     /* cpu_int8_gemm_i32: int32 sums go here (row stride ldc), not to y */
    int64_t ldc;
} i8g_run;

/* Quantise rows [b, e) of A. */
static void quant_rows(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const int64_t k = r->p->k, kp = r->p->kg * 4;
    for (size_t m = b; m < e; m++) {
        const float *a = r->a + m * (size_t)k;
        uint8_t *q = r->qa + m * (size_t)kp;
        float amax = 0.0f;
        for (int64_t i = 0; i < k; i++) {
            float v = fabsf(a[i]);
            amax = v > amax ? v : amax; /* NaN rows quantise as 0 below */
        }
        const float s = amax > 0.0f && isfinite(amax) ? amax / 127.0f : 1.0f;
        const float inv = 1.0f / s;
        for (int64_t i = 0; i < k; i++) {
            float v = a[i] * inv;
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v == v ? v : 0.0f;
            /* Round half to even without a libm call: |v| <= 127 << 2^22. */
            v = (v + 12582912.0f) - 12582912.0f;
            q[i] = (uint8_t)((int)v + 128);
        }
        for (int64_t i = k; i < kp; i++)
            q[i] = 128; /* B is zero there: any value, but keep the column sums right */
        r->sa[m] = s;
    }
}

/* tensor_asymmetric: rows [b, e) of A as ONNX DynamicQuantizeLinear quantises them, with the
 * scale and zero point already found over the whole tensor (R->scale, R->zpf), dividing as
 * ONNX writes it. */
static void quant_rows_asym(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const int64_t k = r->p->k, kp = r->p->kg * 4;
    for (size_t m = b; m < e; m++) {
        const float *a = r->a + m * (size_t)k;
        uint8_t *q = r->qa + m * (size_t)kp;
        for (int64_t i = 0; i < k; i++) {
            float v = ((a[i] / r->scale + 12582912.0f) - 12582912.0f) + r->zpf;
            v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v == v ? v : r->zpf;
            q[i] = (uint8_t)v;
        }
        for (int64_t i = k; i < kp; i++)
            q[i] = (uint8_t)r->zp; /* B is zero there */
    }
}

/* The epilogue of one row and ACC[0..cols) of panel P: dequantise, add the bias, store. */
static void store_row(const i8g_run *r, int64_t m, int64_t p, const int32_t *acc, int64_t cols)
{
    const i8g_params *q = r->p;
    const int64_t c0 = p * I8G_PANEL;
    const int32_t *cs = q->colsum + c0, zp = r->zp;
    if (r->c) {
        int32_t *c = r->c + m * r->ldc + c0;
        for (int64_t j = 0; j < cols; j++)
            c[j] = acc[j] - zp * cs[j];
        return;
    }
    float *y = r->y + m * q->n + c0;
    const float sa = r->sa[m];
    const float *sb = q->scale + c0;
    if (q->bias) {
        const float *bias = q->bias + c0;
        for (int64_t j = 0; j < cols; j++)
            y[j] = (float)(acc[j] - zp * cs[j]) * (sa * sb[j]) + bias[j];
    } else {
        for (int64_t j = 0; j < cols; j++)
            y[j] = (float)(acc[j] - zp * cs[j]) * (sa * sb[j]);
    }
    if (!cpu_epilogue_is_identity(&q->ep))
        cpu_epilogue_apply(&q->ep, y, (size_t)cols, 0.0f, NULL, NULL);
}

/* Portable: rows [m0, m0 + rows) x panel P. */
static void tile_generic(const i8g_run *r, int64_t m0, int64_t rows, int64_t p)
{
    const i8g_params *q = r->p;
    const int64_t kp = q->kg * 4;
    const int64_t cols = q->n - p * I8G_PANEL < I8G_PANEL ? q->n - p * I8G_PANEL : I8G_PANEL;
    const int8_t *panel = q->packed + (size_t)p * (size_t)q->kg * I8G_PANEL * 4;
    for (int64_t i = 0; i < rows; i++) {
        int32_t acc[I8G_PANEL] = {0};
        const uint8_t *a = r->qa + (m0 + i) * kp;
        for (int64_t g = 0; g < q->kg; g++) {
            const int8_t *b = panel + g * I8G_PANEL * 4;
            for (int64_t j = 0; j < I8G_PANEL; j++)
                for (int t = 0; t < 4; t++)
                    acc[j] += (int32_t)a[g * 4 + t] * (int32_t)b[j * 4 + t];
        }
        store_row(r, m0 + i, p, acc, cols);
    }
}

#ifdef I8G_HAVE_X86
/* Quantise rows [b, e) of A with AVX-512 (the VNNI path): the same arithmetic as quant_rows
 * (cvtps rounds half to even, like the portable code). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void
quant_rows_avx512(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const int64_t k = r->p->k, kp = r->p->kg * 4;
    const __m512 lim = _mm512_set1_ps(127.0f);
    const __m512i off = _mm512_set1_epi32(128);
    for (size_t m = b; m < e; m++) {
        const float *a = r->a + m * (size_t)k;
        uint8_t *q = r->qa + m * (size_t)kp;
        __m512 vmax = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= k; i += 16)
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(a + i)));
        if (i < k) {
            __mmask16 mk = (__mmask16)((1u << (k - i)) - 1);
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(mk, a + i)));
        }
        float amax = _mm512_reduce_max_ps(vmax);
        const float s = amax > 0.0f && isfinite(amax) ? amax / 127.0f : 1.0f;
        const __m512 inv = _mm512_set1_ps(1.0f / s);
        for (i = 0; i < k; i += 16) {
            __mmask16 mk = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, a + i), inv);
            /* NaN -> 0 (max/min with a NaN first operand return the second). */
            v = _mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
            __m512i qi = _mm512_add_epi32(_mm512_cvtps_epi32(v), off);
            _mm_mask_storeu_epi8(q + i, mk, _mm512_cvtepi32_epi8(qi));
        }
        for (i = k; i < kp; i++)
            q[i] = 128;
        r->sa[m] = s;
    }
}

/* tensor_asymmetric on the VNNI path: quant_rows_asym with AVX-512 (the same division and
 * round-half-even: cvtps rounds so under the default MXCSR). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void
quant_rows_asym_avx512(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const int64_t k = r->p->k, kp = r->p->kg * 4;
    const __m512 scale = _mm512_set1_ps(r->scale), zp = _mm512_set1_ps(r->zpf);
    const __m512 top = _mm512_set1_ps(255.0f), zero = _mm512_setzero_ps();
    for (size_t m = b; m < e; m++) {
        const float *a = r->a + m * (size_t)k;
        uint8_t *q = r->qa + m * (size_t)kp;
        for (int64_t i = 0; i < k; i += 16) {
            __mmask16 mk = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
            __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(mk, a + i), scale);
            v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_add_ps(v, zp);
            /* NaN -> the zero point, as the portable code does. */
            v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v, zp);
            v = _mm512_min_ps(_mm512_max_ps(v, zero), top);
            _mm_mask_storeu_epi8(q + i, mk, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
        }
        for (int64_t i = k; i < kp; i++)
            q[i] = (uint8_t)r->zp;
    }
}

/* The range of the whole of A, with AVX-512. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void
range_avx512(const float *a, size_t n, float *lo, float *hi)
{
    __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(a + i);
        vlo = _mm512_min_ps(vlo, v);
        vhi = _mm512_max_ps(vhi, v);
    }
    float l = _mm512_reduce_min_ps(vlo), h = _mm512_reduce_max_ps(vhi);
    for (; i < n; i++) {
        l = a[i] < l ? a[i] : l;
        h = a[i] > h ? a[i] : h;
    }
    *lo = l;
    *hi = h;
}

/* GELU (erf form) of 16 lanes: the epilogue's formula (cpu_epilogue.c: 0.5 x (1 + erf(x /
 * sqrt 2)), erf by the same rational polynomial on [-4, 4]) with fused multiply-adds, so within
 * a few ulp of it rather than equal. A NaN stays NaN. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static inline __m512
gelu_avx512(__m512 x)
{
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752440f));
    /* min/max return their second operand when one is NaN: clamp with t second */
    t = _mm512_max_ps(_mm512_set1_ps(-4.0f), _mm512_min_ps(_mm512_set1_ps(4.0f), t));
    const __m512 z = _mm512_mul_ps(t, t);
    __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-2.10102402082508e-06f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.69250639462346e-05f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-7.34990630326855e-04f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-2.95459980854025e-03f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-1.60960333262415e-02f));
    __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-2.13374055278905e-04f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-1.68282697438203e-03f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-7.37332916720468e-03f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-1.42647390514189e-02f));
    const __m512 erf = _mm512_div_ps(_mm512_mul_ps(t, p), q);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x),
                         _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

/* The epilogue of one row of a VNNI tile: ACC (4 x 16 int32) minus 128 * column sums, times
 * sa * sb, plus the bias, then the activation (GELU here, others by cpu_epilogue_apply after
 * the store), stored for the panel's COLS valid columns. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void
store_row_avx512(const i8g_run *r, int64_t m, int64_t p, const __m512i *acc, int64_t cols)
{
    const i8g_params *q = r->p;
    const int64_t c0 = p * I8G_PANEL;
    if (r->c) {
        for (int v = 0; v < 4 && v * 16 < cols; v++) {
            const int64_t left = cols - v * 16;
            const __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512i t = _mm512_sub_epi32(
                acc[v], _mm512_mullo_epi32(_mm512_set1_epi32(r->zp),
                                           _mm512_loadu_si512(q->colsum + c0 + v * 16)));
            _mm512_mask_storeu_epi32(r->c + m * r->ldc + c0 + v * 16, mk, t);
        }
        return;
    }
    float *y = r->y + m * q->n + c0;
    const __m512 sa = _mm512_set1_ps(r->sa[m]);
    const int gelu = q->ep.act == CPU_ACT_GELU;
    for (int v = 0; v < 4 && v * 16 < cols; v++) {
        const int64_t left = cols - v * 16;
        const __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512i t = _mm512_sub_epi32(
            acc[v], _mm512_mullo_epi32(_mm512_set1_epi32(r->zp),
                                       _mm512_loadu_si512(q->colsum + c0 + v * 16)));
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(t),
                                 _mm512_mul_ps(sa, _mm512_loadu_ps(q->scale + c0 + v * 16)));
        if (q->bias)
            f = _mm512_add_ps(f, _mm512_loadu_ps(q->bias + c0 + v * 16));
        if (gelu)
            f = gelu_avx512(f);
        _mm512_mask_storeu_ps(y + v * 16, mk, f);
    }
    if (!gelu && !cpu_epilogue_is_identity(&q->ep))
        cpu_epilogue_apply(&q->ep, y, (size_t)cols, 0.0f, NULL, NULL);
}

/* VNNI: up to 4 rows x one panel of 64 columns, 16 accumulators held in registers (spelled
 * out: a loop over an accumulator array left them in memory at -O2). A block of fewer than 4
 * rows repeats its last row and stores only the rows it has. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void
tile_vnni(const i8g_run *r, int64_t m0, int64_t rows, int64_t p)
{
    const i8g_params *q = r->p;
    const int64_t kp = q->kg * 4;
    const int64_t cols = q->n - p * I8G_PANEL < I8G_PANEL ? q->n - p * I8G_PANEL : I8G_PANEL;
    const int8_t *b = q->packed + (size_t)p * (size_t)q->kg * I8G_PANEL * 4;
    const uint8_t *a0 = r->qa + m0 * kp;
    const uint8_t *a1 = a0 + (rows > 1 ? kp : 0);
    const uint8_t *a2 = a0 + (rows > 2 ? 2 * kp : rows > 1 ? kp : 0);
    const uint8_t *a3 = a0 + (rows > 3 ? 3 * kp : rows > 2 ? 2 * kp : rows > 1 ? kp : 0);
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
    __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    for (int64_t g = 0; g < q->kg; g++, b += I8G_PANEL * 4) {
        const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
        const __m512i b2 = _mm512_loadu_si512(b + 128), b3 = _mm512_loadu_si512(b + 192);
        __m512i av = _mm512_set1_epi32(*(const i8g_i32 *)(a0 + g * 4));
        c00 = _mm512_dpbusd_epi32(c00, av, b0);
        c01 = _mm512_dpbusd_epi32(c01, av, b1);
        c02 = _mm512_dpbusd_epi32(c02, av, b2);
        c03 = _mm512_dpbusd_epi32(c03, av, b3);
        av = _mm512_set1_epi32(*(const i8g_i32 *)(a1 + g * 4));
        c10 = _mm512_dpbusd_epi32(c10, av, b0);
        c11 = _mm512_dpbusd_epi32(c11, av, b1);
        c12 = _mm512_dpbusd_epi32(c12, av, b2);
        c13 = _mm512_dpbusd_epi32(c13, av, b3);
        av = _mm512_set1_epi32(*(const i8g_i32 *)(a2 + g * 4));
        c20 = _mm512_dpbusd_epi32(c20, av, b0);
        c21 = _mm512_dpbusd_epi32(c21, av, b1);
        c22 = _mm512_dpbusd_epi32(c22, av, b2);
        c23 = _mm512_dpbusd_epi32(c23, av, b3);
        av = _mm512_set1_epi32(*(const i8g_i32 *)(a3 + g * 4));
        c30 = _mm512_dpbusd_epi32(c30, av, b0);
        c31 = _mm512_dpbusd_epi32(c31, av, b1);
        c32 = _mm512_dpbusd_epi32(c32, av, b2);
        c33 = _mm512_dpbusd_epi32(c33, av, b3);
    }
    const __m512i r0[4] = {c00, c01, c02, c03}, r1[4] = {c10, c11, c12, c13};
    const __m512i r2[4] = {c20, c21, c22, c23}, r3[4] = {c30, c31, c32, c33};
    store_row_avx512(r, m0, p, r0, cols);
    if (rows > 1)
        store_row_avx512(r, m0 + 1, p, r1, cols);
    if (rows > 2)
        store_row_avx512(r, m0 + 2, p, r2, cols);
    if (rows > 3)
        store_row_avx512(r, m0 + 3, p, r3, cols);
}
#endif

/* Tiles [b, e): tile t is panel t / row_blocks, row block t % row_blocks. Panel-major, so one
 * thread walks every row of A over a panel of B (K x 64 bytes) while it is in cache: row-major
 * order streamed the whole of B from memory once per 4 rows. */
static void tiles(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const i8g_params *q = r->p;
    const int64_t row_blocks = (q->m + I8G_ROWS - 1) / I8G_ROWS;
    for (size_t t = b; t < e; t++) {
        int64_t p = (int64_t)t / row_blocks, rb = (int64_t)t % row_blocks;
        int64_t m0 = rb * I8G_ROWS;
        int64_t rows = q->m - m0 < I8G_ROWS ? q->m - m0 : I8G_ROWS;
#ifdef I8G_HAVE_X86
        if (q->vnni) {
            tile_vnni(r, m0, rows, p);
            continue;
        }
#endif
        tile_generic(r, m0, rows, p);
    }
}

static loom_status i8g_run_fn(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const i8g_params *q = k->params;
    if (q->m == 0 || q->n == 0)
        return LOOM_OK;
    i8g_run r = {.p = q, .a = args->inputs[0], .y = args->outputs[0]};
    r.qa = args->scratch;
    r.sa = (float *)((char *)args->scratch + align64((size_t)q->m * (size_t)q->kg * 4));
    if (q->fixed) {
        /* Static quantisation: QuantizeLinear's arithmetic with the node's scale and zero
         * point (the rows are quantised exactly as in the dynamic case below). */
        r.scale = q->a_scale;
        r.zpf = (float)q->a_zp;
        r.zp = q->a_zp;
        for (int64_t m = 0; m < q->m; m++)
            r.sa[m] = q->a_scale;
#ifdef I8G_HAVE_X86
        cpu_parallel_for(pool, (size_t)q->m, 16, q->vnni ? quant_rows_asym_avx512 : quant_rows_asym,
                         &r);
#else
        cpu_parallel_for(pool, (size_t)q->m, 16, quant_rows_asym, &r);
#endif
    } else if (q->asym) {
        /* ONNX DynamicQuantizeLinear over the whole of A: [min(0, min), max(0, max)] onto
         * [0, 255]; a range of zero width gives scale 1, zero point 0 (as ONNX Runtime). */
        const size_t n = (size_t)(q->m * q->k);
        float lo = 0.0f, hi = 0.0f;
#ifdef I8G_HAVE_X86
        if (q->vnni)
            range_avx512(r.a, n, &lo, &hi);
        else
#endif
            for (size_t i = 0; i < n; i++) {
                lo = r.a[i] < lo ? r.a[i] : lo;
                hi = r.a[i] > hi ? r.a[i] : hi;
            }
        const float scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
        float zp = 0.0f - lo / scale;
        zp = zp < 0.0f ? 0.0f : zp > 255.0f ? 255.0f : zp;
        zp = (zp + 12582912.0f) - 12582912.0f;
        r.scale = scale;
        r.zpf = zp;
        r.zp = (int32_t)zp;
        for (int64_t m = 0; m < q->m; m++)
            r.sa[m] = scale;
#ifdef I8G_HAVE_X86
        cpu_parallel_for(pool, (size_t)q->m, 16, q->vnni ? quant_rows_asym_avx512 : quant_rows_asym,
                         &r);
#else
        cpu_parallel_for(pool, (size_t)q->m, 16, quant_rows_asym, &r);
#endif
    } else {
        r.zp = 128;
#ifdef I8G_HAVE_X86
        cpu_parallel_for(pool, (size_t)q->m, 16, q->vnni ? quant_rows_avx512 : quant_rows, &r);
#else
        cpu_parallel_for(pool, (size_t)q->m, 16, quant_rows, &r);
#endif
    }
    size_t n_tiles = (size_t)((q->m + I8G_ROWS - 1) / I8G_ROWS) * (size_t)q->panels;
    cpu_parallel_for(pool, n_tiles, 1, tiles, &r);
    return LOOM_OK;
}

/* LOOM_CPU_NO_VNNI=1 forces the portable code (tests run both). */
static int cpu_has_vnni(void)
{
    const char *off = getenv("LOOM_CPU_NO_VNNI");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
#if defined(I8G_HAVE_X86) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* B [K x N] (element (k, n) at BS[k * LDK + n * LDN]) packed into panels, with its column
 * sums; the ISA chosen. NULL when out of memory. */
static i8g_params *i8g_pack(const int8_t *bs, int64_t k, int64_t n, int64_t ldk, int64_t ldn)
{
    i8g_params *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->k = k;
    q->n = n;
    q->kg = (q->k + 3) / 4;
    q->panels = (q->n + I8G_PANEL - 1) / I8G_PANEL;
    const size_t padn = (size_t)q->panels * I8G_PANEL;
    q->packed = calloc((size_t)q->panels * (size_t)q->kg * I8G_PANEL * 4 + 64, 1);
    q->colsum = calloc(padn + 1, sizeof *q->colsum);
    if (!q->packed || !q->colsum) {
        i8g_free(q);
        return NULL;
    }
    for (int64_t j = 0; j < q->n; j++) {
        int64_t p = j / I8G_PANEL, c = j % I8G_PANEL;
        int32_t sum = 0;
        for (int64_t kk = 0; kk < q->k; kk++) {
            int8_t v = bs[kk * ldk + j * ldn];
            sum += v;
            q->packed[((size_t)(p * q->kg + kk / 4) * I8G_PANEL + (size_t)c) * 4 +
                      (size_t)(kk % 4)] = v;
        }
        q->colsum[j] = sum;
    }
    q->vnni = cpu_has_vnni();
    return q;
}

cpu_int8_packed *cpu_int8_pack(const int8_t *b, int64_t k, int64_t n, int64_t ldk, int64_t ldn)
{
    return i8g_pack(b, k, n, ldk, ldn);
}

void cpu_int8_packed_free(cpu_int8_packed *p)
{
    i8g_free(p);
}

int64_t cpu_int8_row_bytes(const cpu_int8_packed *p)
{
    return p->kg * 4;
}

void cpu_int8_gemm_i32(const cpu_int8_packed *p, const uint8_t *a, int64_t rows, int32_t a_zp,
                       int32_t *c, int64_t ldc)
{
    i8g_run r = {.p = p, .qa = (uint8_t *)a, .zp = a_zp, .c = c, .ldc = ldc};
    for (int64_t pn = 0; pn < p->panels; pn++)
        for (int64_t m0 = 0; m0 < rows; m0 += I8G_ROWS) {
            const int64_t n_rows = rows - m0 < I8G_ROWS ? rows - m0 : I8G_ROWS;
#ifdef I8G_HAVE_X86
            if (p->vnni) {
                tile_vnni(&r, m0, n_rows, pn);
                continue;
            }
#endif
            tile_generic(&r, m0, n_rows, pn);
        }
}

static loom_status i8g_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    i8g_params *q = i8g_pack(node->input_constants[1], b->dims[0], b->dims[1], b->dims[1], 1);
    if (!q)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory packing weights");
    q->m = q->k ? loom_tensor_desc_numel(a) / q->k : 0;
    const size_t padn = (size_t)q->panels * I8G_PANEL;
    q->scale = calloc(padn + 1, sizeof *q->scale);
    q->bias = cpu_present(node, 3) ? calloc(padn + 1, sizeof *q->bias) : NULL;
    if (!q->scale || (cpu_present(node, 3) && !q->bias)) {
        i8g_free(q);
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory packing weights");
    }
    const float *sc = node->input_constants[2];
    for (int64_t j = 0; j < q->n; j++) {
        q->scale[j] = sc[j];
        if (q->bias)
            q->bias[j] = ((const float *)node->input_constants[3])[j];
    }
    q->asym = loom_node_attr_int(node, "tensor_asymmetric", 0) != 0;
    const loom_attr *as = loom_node_attr(node, "a_scale");
    if (q->asym && as && as->kind == LOOM_ATTR_FLOAT) {
        q->fixed = 1;
        q->a_scale = as->f;
        q->a_zp = (int32_t)loom_node_attr_int(node, "a_zero_point", 0);
    }
    if (!cpu_epilogue_parse(node, &q->ep, NULL, 0)) { /* supports refused it already */
        i8g_free(q);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED,
                        "MatMulInt8Dynamic: unknown activation");
    }
    k->run = i8g_run_fn;
    k->params = q;
    k->free_params = i8g_free;
    k->scratch_bytes = align64((size_t)q->m * (size_t)q->kg * 4) + (size_t)q->m * sizeof(float);
    return LOOM_OK;
}

void cpu_register_int8_gemm(cpu_op_entry *table)
{
    table[LOOM_OP_MAT_MUL_INT8_DYNAMIC].supports = i8g_supports;
    table[LOOM_OP_MAT_MUL_INT8_DYNAMIC].prepare = i8g_prepare;
}
