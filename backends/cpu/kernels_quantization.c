/*
 * CPU kernels of the quantisation operators: QuantizeLinear, DequantizeLinear, MatMulInteger,
 * QLinearMatMul, QLinearConv and ConvInteger.
 *
 * The integer GEMM behind MatMulInteger, QLinearMatMul, QLinearConv and ConvInteger works on
 * int16 operands with their zero points already subtracted (a uint8 or int8 value minus its zero
 * point always fits), accumulating in int32: A' rows times a packed B' panel, four rows at a
 * time over fixed-width column blocks, so that GCC vectorises the inner loop at -O2. Constant
 * weights are packed at prepare time; everything else is packed into the scratch area at run
 * time.
 * Requantisation follows ONNX's reference: acc * (scale_a * scale_b / scale_y) in double,
 * rounded half to even, plus the output zero point, saturated.
 */
#include "cpu_bcast.h"
#include "cpu_conv_int8.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QK_HAVE_X86 1
#endif

#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

#define GRAIN_CHEAP 16384
#define GRAIN_LIBM 2048

static int no_dtype(const loom_node_desc *node, loom_dtype t, const char *only, char *reason,
                    size_t len)
{
    cpu_reason(reason, len, "%s: dtype %s has no CPU kernel (only %s)", node->op_name,
               cpu_dtype_name(t), only);
    return 0;
}

/* Element I of an integer tensor of dtype T at P, widened. */
static inline int64_t load_int(loom_dtype t, const void *p, int64_t i)
{
    switch (t) {
    case LOOM_DTYPE_U8: case LOOM_DTYPE_BOOL: return ((const uint8_t *)p)[i];
    case LOOM_DTYPE_I8: return ((const int8_t *)p)[i];
    case LOOM_DTYPE_I32: return ((const int32_t *)p)[i];
    case LOOM_DTYPE_I64: return ((const int64_t *)p)[i];
    default: return 0;
    }
}

static inline float load_f32(const void *p, int64_t i)
{
    float f;
    memcpy(&f, (const char *)p + i * (int64_t)sizeof f, sizeof f);
    return f;
}

/* ---- QuantizeLinear, DequantizeLinear ------------------------------------------------------- */

typedef struct quant_params {
    int64_t numel, ch, inner; /* element i uses scale (i / inner) % ch */
    loom_dtype x_dtype, y_dtype, zp_dtype; /* zp_dtype UNDEFINED when absent */
    int avx512;               /* QuantizeLinear float -> 8 bits with AVX-512 (chosen at prepare) */
} quant_params;

typedef struct quant_job {
    const quant_params *p;
    const void *x;
    void *y;
    const float *scale;
    const void *zp;
} quant_job;

/* Segments of one channel within [BEGIN, END), each with its scale and zero point. */
#define QJ_SEGMENTS(BODY)                                                                         \
    do {                                                                                          \
        const quant_params *p = j->p;                                                             \
        size_t i0 = begin;                                                                        \
        while (i0 < end) {                                                                        \
            const size_t row = i0 / (size_t)p->inner;                                             \
            size_t i1 = (row + 1) * (size_t)p->inner;                                             \
            if (i1 > end)                                                                         \
                i1 = end;                                                                         \
            const int64_t c = (int64_t)(row % (size_t)p->ch);                                     \
            const float s = load_f32(j->scale, c);                                                \
            const int64_t z = p->zp_dtype ? load_int(p->zp_dtype, j->zp, c) : 0;                  \
            const size_t n = i1 - i0;                                                             \
            BODY;                                                                                 \
            i0 = i1;                                                                              \
        }                                                                                         \
    } while (0)

/* saturate(round_half_even(x / s) + z): NaN saturates to the low end. */
#define Q_LOOP(TX, TY, LO, HI)                                                                    \
    do {                                                                                          \
        const TX *restrict x = (const TX *)j->x + i0;                                             \
        TY *restrict y = (TY *)j->y + i0;                                                         \
        const float zf = (float)z;                                                                \
        /* rintf/fmaxf/fminf are libm calls at -O2 (NaN rules, no SSE4.1): compares and the   \
         * 1.5 * 2^23 rounding instead, so that the loop vectorises. The pre-clamp to 2^22 keeps  \
         * the rounding exact and sends NaN to the low end, as fmaxf did. */                    \
        CPU_LOOP(n, float v = (float)x[i] / s; v = v > -4194304.0f ? v : -4194304.0f;           \
                v = v < 4194304.0f ? v : 4194304.0f; v = (v + 12582912.0f) - 12582912.0f + zf; \
                v = v > LO ? v : LO; v = v < HI ? v : HI; y[i] = (TY)v;);                       \
    } while (0)

#ifdef QK_HAVE_X86
/* Q_LOOP(float, uint8_t or int8_t) with AVX-512, the same arithmetic: IEEE division, the
 * pre-clamp (max first: a NaN becomes its second operand, the low end), rounding half to even,
 * the zero point, the saturation. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
quant_f32_avx512(const float *x, void *y, size_t n, float s, float zf, float lo, float hi)
{
    const __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(zf);
    const __m512 big = _mm512_set1_ps(4194304.0f), nbig = _mm512_set1_ps(-4194304.0f);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    int8_t *o = y;
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(mk, x + i), vs);
        v = _mm512_min_ps(_mm512_max_ps(v, nbig), big);
        v = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                          vz);
        v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
        _mm_mask_storeu_epi8(o + i, mk, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
}
#endif

static void quant_walk(void *arg, size_t begin, size_t end)
{
    const quant_job *j = arg;
    const int f = j->p->x_dtype == LOOM_DTYPE_F32, u = j->p->y_dtype == LOOM_DTYPE_U8;
#ifdef QK_HAVE_X86
    if (f && j->p->avx512) {
        QJ_SEGMENTS(quant_f32_avx512((const float *)j->x + i0, (char *)j->y + i0, n, s, (float)z,
                                     u ? 0.0f : -128.0f, u ? 255.0f : 127.0f));
        return;
    }
#endif
    QJ_SEGMENTS({
        if (f && u)
            Q_LOOP(float, uint8_t, 0.0f, 255.0f);
        else if (f)
            Q_LOOP(float, int8_t, -128.0f, 127.0f);
        else if (u)
            Q_LOOP(int32_t, uint8_t, 0.0f, 255.0f);
        else
            Q_LOOP(int32_t, int8_t, -128.0f, 127.0f);
    });
}

/* (x - z) * s, computed in float as ONNX's reference does. */
#define DQ_LOOP(TX)                                                                               \
    do {                                                                                          \
        const TX *restrict x = (const TX *)j->x + i0;                                             \
        float *restrict y = (float *)j->y + i0;                                                   \
        const float zf = (float)z;                                                                \
        CPU_LOOP(n, y[i] = ((float)x[i] - zf) * s;);                                              \
    } while (0)

/* DequantizeLinear along the last axis (one scale per element of a row: what the int8-dynamic
 * pass writes after an int8 embedding Gather): [BEGIN, END) in stretches of one row, the scales
 * and zero points read along with it (element by element, QJ_SEGMENTS was ~3 ns an element). */
#define DQ_ROW_LOOP(TX, TZ)                                                                       \
    do {                                                                                          \
        const TX *restrict x = (const TX *)j->x + i0;                                             \
        const TZ *restrict zr = (const TZ *)j->zp + c0;                                           \
        CPU_LOOP(n, y[i] = ((float)x[i] - (float)zr[i]) * s[i];);                                 \
    } while (0)

static void dequant_rows(const quant_job *j, size_t begin, size_t end)
{
    const size_t ch = (size_t)j->p->ch;
    const loom_dtype t = j->p->x_dtype, zt = j->p->zp_dtype;
    for (size_t i0 = begin; i0 < end;) {
        const size_t c0 = i0 % ch;
        const size_t n = ch - c0 < end - i0 ? ch - c0 : end - i0;
        const float *restrict s = j->scale + c0;
        float *restrict y = (float *)j->y + i0;
        if (!zt && t == LOOM_DTYPE_I8) {
            const int8_t *restrict x = (const int8_t *)j->x + i0;
            CPU_LOOP(n, y[i] = (float)x[i] * s[i];);
        } else if (!zt && t == LOOM_DTYPE_U8) {
            const uint8_t *restrict x = (const uint8_t *)j->x + i0;
            CPU_LOOP(n, y[i] = (float)x[i] * s[i];);
        } else if (zt == LOOM_DTYPE_I8 && t == LOOM_DTYPE_I8) {
            DQ_ROW_LOOP(int8_t, int8_t);
        } else if (zt == LOOM_DTYPE_U8 && t == LOOM_DTYPE_U8) {
            DQ_ROW_LOOP(uint8_t, uint8_t);
        } else {
            for (size_t i = 0; i < n; i++) {
                const float z = zt ? (float)load_int(zt, j->zp, (int64_t)(c0 + i)) : 0.0f;
                y[i] = ((float)load_int(t, j->x, (int64_t)(i0 + i)) - z) * s[i];
            }
        }
        i0 += n;
    }
}

static void dequant_walk(void *arg, size_t begin, size_t end)
{
    const quant_job *j = arg;
    const loom_dtype t = j->p->x_dtype;
    if (j->p->inner == 1 && j->p->ch > 1) {
        dequant_rows(j, begin, end);
        return;
    }
    QJ_SEGMENTS({
        if (t == LOOM_DTYPE_U8)
            DQ_LOOP(uint8_t);
        else if (t == LOOM_DTYPE_I8)
            DQ_LOOP(int8_t);
        else
            DQ_LOOP(int32_t);
    });
}

static loom_status quant_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    const quant_params *p = k->params;
    (void)err;
    (void)err_len;
    if (p->numel == 0)
        return LOOM_OK;
    quant_job j = {p, args->inputs[0], args->outputs[0], args->inputs[1],
                   p->zp_dtype ? args->inputs[2] : NULL};
    cpu_parallel_for(pool, (size_t)p->numel, GRAIN_LIBM,
                     k->op == LOOM_OP_QUANTIZE_LINEAR ? quant_walk : dequant_walk, &j);
    return LOOM_OK;
}

/* One element, or 1-D of LEN. */
static int param_ok(const loom_tensor_desc *d, loom_dtype t, int64_t len)
{
    if (d->dtype != t)
        return 0;
    const int64_t n = loom_tensor_desc_numel(d);
    return (d->rank <= 1 && n == 1) || (len >= 0 && d->rank == 1 && d->dims[0] == len);
}

static int quant_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs < 2 || node->n_outputs != 1 || !cpu_present(node, 0) ||
        !cpu_present(node, 1)) {
        cpu_reason(reason, len, "%s: expects x and a scale", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0], *s = &node->inputs[1], *y = &node->outputs[0];
    const int q = node->op == LOOM_OP_QUANTIZE_LINEAR;
    if (q ? !(x->dtype == LOOM_DTYPE_F32 || x->dtype == LOOM_DTYPE_I32)
          : !(x->dtype == LOOM_DTYPE_U8 || x->dtype == LOOM_DTYPE_I8 ||
              x->dtype == LOOM_DTYPE_I32))
        return no_dtype(node, x->dtype, q ? "float32, int32" : "uint8, int8, int32", reason,
                        len);
    if (q ? !(y->dtype == LOOM_DTYPE_U8 || y->dtype == LOOM_DTYPE_I8)
          : y->dtype != LOOM_DTYPE_F32)
        return no_dtype(node, y->dtype, q ? "uint8, int8 outputs" : "float32 outputs", reason,
                        len);
    if (!cpu_same_shape(x, y)) {
        cpu_reason(reason, len, "%s: output shape differs from the input's", op);
        return 0;
    }
    const int64_t axis = loom_node_attr_int(node, "axis", 0);
    const int64_t n = loom_tensor_desc_numel(s);
    if (!(s->rank <= 1 && n == 1) &&
        (axis < 0 || axis >= (int64_t)x->rank || !param_ok(s, LOOM_DTYPE_F32, x->dims[axis]))) {
        cpu_reason(reason, len, "%s: scale is neither per-tensor nor along axis %lld", op,
                   (long long)axis);
        return 0;
    }
    if (s->dtype != LOOM_DTYPE_F32)
        return no_dtype(node, s->dtype, "float32 scales", reason, len);
    if (cpu_present(node, 2)) {
        const loom_tensor_desc *z = &node->inputs[2];
        if (z->dtype != (q ? y->dtype : x->dtype) || loom_tensor_desc_numel(z) != n ||
            z->rank > 1) {
            cpu_reason(reason, len, "%s: zero point does not match the scale or the dtype", op);
            return 0;
        }
    }
    return 1;
}

static loom_status quant_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                 size_t err_len)
{
    quant_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &k->in[0];
    p->numel = loom_tensor_desc_numel(x);
    p->x_dtype = x->dtype;
    p->y_dtype = k->out[0].dtype;
    p->zp_dtype = cpu_present(node, 2) ? k->in[2].dtype : LOOM_DTYPE_UNDEFINED;
#ifdef QK_HAVE_X86
    {
        const char *off = getenv("LOOM_CPU_NO_AVX512");
        __builtin_cpu_init();
        p->avx512 = !(off && *off && strcmp(off, "0") != 0) &&
                    __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl");
    }
#endif
    p->ch = 1;
    p->inner = p->numel > 0 ? p->numel : 1;
    if (loom_tensor_desc_numel(&k->in[1]) != 1) {
        const int64_t axis = loom_node_attr_int(node, "axis", 0);
        p->ch = x->dims[axis];
        p->inner = 1;
        for (uint32_t d = (uint32_t)axis + 1; d < x->rank; d++)
            p->inner *= x->dims[d];
        if (p->inner == 0)
            p->inner = 1;
    }
    k->params = p;
    k->free_params = NULL;
    k->scratch_bytes = 0;
    k->run = quant_run;
    return LOOM_OK;
}

/* ---- the integer GEMM ----------------------------------------------------------------------- */

/* Columns of C per block: 4 rows x IG_NB int32 accumulators stay in L1. */
#define IG_NB 64

/* C[M x N] (int32, row stride LDC) = A[M x K] (int16, LDA) * B[K x N] (int16, LDB). */
static void igemm(int64_t M, int64_t N, int64_t K, const int16_t *A, int64_t lda,
                  const int16_t *B, int64_t ldb, int32_t *C, int64_t ldc)
{
    int32_t acc[4][IG_NB];
    for (int64_t m = 0; m < M; m += 4) {
        const int64_t mr = M - m < 4 ? M - m : 4;
        /* Missing rows of a short group repeat the first one; their results are dropped. */
        const int16_t *a0 = A + m * lda;
        const int16_t *a1 = A + (m + (mr > 1 ? 1 : 0)) * lda;
        const int16_t *a2 = A + (m + (mr > 2 ? 2 : 0)) * lda;
        const int16_t *a3 = A + (m + (mr > 3 ? 3 : 0)) * lda;
        for (int64_t n = 0; n < N; n += IG_NB) {
            const int64_t nb = N - n < IG_NB ? N - n : IG_NB;
            memset(acc, 0, sizeof acc);
            if (nb == IG_NB) {
                for (int64_t k = 0; k < K; k++) {
                    /* int16 x int16 widened to int32: GCC's widening-multiply pattern
                     * (pmullw/pmulhw on SSE2, vpmaddwd-class code with AVX2), where an int32
                     * multiply would be emulated without SSE4.1. */
                    const int16_t v0 = a0[k], v1 = a1[k], v2 = a2[k], v3 = a3[k];
                    const int16_t *restrict b = B + k * ldb + n;
                    for (int j = 0; j < IG_NB; j++) {
                        acc[0][j] += (int32_t)v0 * (int32_t)b[j];
                        acc[1][j] += (int32_t)v1 * (int32_t)b[j];
                        acc[2][j] += (int32_t)v2 * (int32_t)b[j];
                        acc[3][j] += (int32_t)v3 * (int32_t)b[j];
                    }
                }
            } else {
                for (int64_t k = 0; k < K; k++) {
                    const int32_t v0 = a0[k], v1 = a1[k], v2 = a2[k], v3 = a3[k];
                    const int16_t *restrict b = B + k * ldb + n;
                    for (int64_t j = 0; j < nb; j++) {
                        const int32_t bv = b[j];
                        acc[0][j] += v0 * bv;
                        acc[1][j] += v1 * bv;
                        acc[2][j] += v2 * bv;
                        acc[3][j] += v3 * bv;
                    }
                }
            }
            for (int64_t r = 0; r < mr; r++)
                memcpy(C + (m + r) * ldc + n, acc[r], (size_t)nb * sizeof(int32_t));
        }
    }
}

/* Requantise one value: saturate(round_half_even(acc * mult) + zp) into [LO, HI]. */
static inline int32_t requant(int32_t acc, double mult, int32_t zp, int32_t lo, int32_t hi)
{
    double v = rint((double)acc * mult) + (double)zp;
    return v < lo ? lo : v > hi ? hi : (int32_t)v;
}

/* Write N requantised values into Y (uint8 or int8 per SIGNED_OUT). */
static void store_q(void *y, int signed_out, const int32_t *v, int64_t n)
{
    if (signed_out) {
        int8_t *o = y;
        for (int64_t i = 0; i < n; i++)
            o[i] = (int8_t)v[i];
    } else {
        uint8_t *o = y;
        for (int64_t i = 0; i < n; i++)
            o[i] = (uint8_t)v[i];
    }
}

/* Pack N elements of an 8-bit tensor of dtype T at SRC minus their zero points into int16 at
 * DST: element i's zero point is ZP[(i / DIV) % MOD] (dtype ZT; ZP NULL means 0). */
static void pack16(int16_t *dst, const void *src, loom_dtype t, int64_t n, const void *zp,
                   loom_dtype zt, int64_t div, int64_t mod)
{
    if (!zp || mod == 1) {
        const int16_t z = zp ? (int16_t)load_int(zt, zp, 0) : 0;
        if (t == LOOM_DTYPE_U8) {
            const uint8_t *restrict s = src;
            CPU_LOOP((size_t)n, dst[i] = (int16_t)(s[i] - z););
        } else {
            const int8_t *restrict s = src;
            CPU_LOOP((size_t)n, dst[i] = (int16_t)(s[i] - z););
        }
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = (int16_t)(load_int(t, src, i) - load_int(zt, zp, (i / div) % mod));
}

/* ---- MatMulInteger, QLinearMatMul ----------------------------------------------------------- */

typedef struct mm_params {
    int64_t M, N, K, batches, numel_a, numel_b;
    int64_t *a_off, *b_off;       /* per output batch: first element of A's / B's matrix */
    int qlinear;
    int16_t *b_packed;            /* constant B' packed at prepare, else NULL */
    size_t a_pack_off, b_pack_off, acc_off; /* scratch layout, bytes */
    int signed_out;
    /* The u8 x s8 path (constant 2-D B within int8 of its zero point, A's zero point per
     * tensor): B' packed for kernels_int8_gemm.c, A's rows copied as uint8 rows of RB bytes. */
    cpu_int8_packed *b8;
    int64_t rb, rows;             /* bytes per row of A, rows of A (batches x M) */
    int a_signed;
} mm_params;

static void mm_free(void *p)
{
    mm_params *m = p;
    if (m) {
        cpu_int8_packed_free(m->b8);
        free(m->a_off);
        free(m->b_off);
        free(m->b_packed);
    }
    free(m);
}

typedef struct mm_job {
    const mm_params *p;
    const int16_t *a, *b;
    int32_t *c;           /* MatMulInteger: the output; QLinearMatMul: the scratch */
    void *y;              /* QLinearMatMul output */
    const void *const *in;
    const loom_tensor_desc *din;
    int64_t groups;       /* row groups of 4 per batch */
} mm_job;

/* Requantise rows [M0, M1) of batch BATCH of a QLinearMatMul. */
static void mm_requant(const mm_job *j, int64_t batch, int64_t m0, int64_t m1)
{
    const mm_params *p = j->p;
    const loom_tensor_desc *d = j->din;
    const int64_t N = p->N;
    const int per_row_a = loom_tensor_desc_numel(&d[1]) != 1;
    const int per_col_b = loom_tensor_desc_numel(&d[4]) != 1;
    const int per_row_y = loom_tensor_desc_numel(&d[6]) != 1;
    const int per_row_zy = loom_tensor_desc_numel(&d[7]) != 1;
    const int32_t lo = p->signed_out ? -128 : 0, hi = p->signed_out ? 127 : 255;
    int32_t row[IG_NB];
    for (int64_t m = m0; m < m1; m++) {
        const float sa = load_f32(j->in[1], per_row_a ? m : 0);
        const float sy = load_f32(j->in[6], per_row_y ? m : 0);
        const int32_t zy = (int32_t)load_int(d[7].dtype, j->in[7], per_row_zy ? m : 0);
        const int32_t *c = j->c + (batch * p->M + m) * N;
        char *y = (char *)j->y + (batch * p->M + m) * N;
        for (int64_t n0 = 0; n0 < N; n0 += IG_NB) {
            const int64_t nb = N - n0 < IG_NB ? N - n0 : IG_NB;
            for (int64_t n = 0; n < nb; n++) {
                const float sb = load_f32(j->in[4], per_col_b ? n0 + n : 0);
                /* ONNX's reference: a_scale * b_scale / y_scale in float32, then the product
                 * with the int32 accumulator in double. */
                const float mult = sa * sb / sy;
                row[n] = requant(c[n0 + n], (double)mult, zy, lo, hi);
            }
            store_q(y + n0, p->signed_out, row, nb);
        }
    }
}

static void mm_walk(void *arg, size_t begin, size_t end)
{
    const mm_job *j = arg;
    const mm_params *p = j->p;
    for (size_t it = begin; it < end; it++) {
        const int64_t batch = (int64_t)it / j->groups, g = (int64_t)it % j->groups;
        const int64_t m0 = g * 4, m1 = m0 + 4 < p->M ? m0 + 4 : p->M;
        const int16_t *a = j->a + p->a_off[batch] + m0 * p->K;
        const int16_t *b = j->b + p->b_off[batch];
        int32_t *c = j->c + (batch * p->M + m0) * p->N;
        igemm(m1 - m0, p->N, p->K, a, p->K, b, p->N, c, p->N);
        if (p->qlinear)
            mm_requant(j, batch, m0, m1);
    }
}

/* Indices of the A and B inputs and their zero points: MatMulInteger (A, B, a_zero_point,
 * b_zero_point), QLinearMatMul (a, a_scale, a_zero_point, b, b_scale, b_zero_point, ...). */
static void mm_inputs(loom_op_id op, uint32_t *ia, uint32_t *iza, uint32_t *ib, uint32_t *izb)
{
    const int q = op == LOOM_OP_QLINEAR_MAT_MUL;
    *ia = 0;
    *iza = 2;
    *ib = q ? 3 : 1;
    *izb = q ? 5 : 3;
}

/* The u8 x s8 path, rows [begin, end) of A: copied as uint8 (int8 + 128), padded with the zero
 * point, then multiplied; QLinearMatMul's rows are requantised after all of them. */
typedef struct mm8_job {
    const mm_params *p;
    const void *a;
    uint8_t *a8, azu;
    int32_t *c;
} mm8_job;

static void mm8_walk(void *arg, size_t begin, size_t end)
{
    const mm8_job *j = arg;
    const mm_params *p = j->p;
    const uint8_t flip = p->a_signed ? 128 : 0;
    for (size_t r = begin; r < end; r++) {
        const uint8_t *src = (const uint8_t *)j->a + r * (size_t)p->K;
        uint8_t *dst = j->a8 + r * (size_t)p->rb;
        for (int64_t t = 0; t < p->K; t++)
            dst[t] = (uint8_t)(src[t] ^ flip);
        memset(dst + p->K, j->azu, (size_t)(p->rb - p->K));
    }
    cpu_int8_gemm_i32(p->b8, j->a8 + begin * (size_t)p->rb, (int64_t)(end - begin), j->azu,
                      j->c + begin * (size_t)p->N, p->N);
}

static void mm8_requant_walk(void *arg, size_t begin, size_t end)
{
    const mm_job *j = arg;
    const mm_params *p = j->p;
    for (size_t it = begin; it < end; it++) {
        const int64_t batch = (int64_t)it / j->groups, g = (int64_t)it % j->groups;
        const int64_t m0 = g * 4, m1 = m0 + 4 < p->M ? m0 + 4 : p->M;
        mm_requant(j, batch, m0, m1);
    }
}

static loom_status mm_run8(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool)
{
    const mm_params *p = k->params;
    uint32_t ia, iza, ib, izb;
    mm_inputs(k->op, &ia, &iza, &ib, &izb);
    char *scratch = args->scratch;
    const int za = iza < k->n_in && k->in[iza].dtype;
    mm8_job j8 = {.p = p,
                  .a = args->inputs[ia],
                  .a8 = (uint8_t *)(scratch + p->a_pack_off),
                  .azu = (uint8_t)((za ? load_int(k->in[iza].dtype, args->inputs[iza], 0) : 0) +
                                   (p->a_signed ? 128 : 0)),
                  .c = p->qlinear ? (int32_t *)(scratch + p->acc_off) : args->outputs[0]};
    const size_t grain = (size_t)(65536 / (p->K * p->N + 1)) + 4;
    cpu_parallel_for(pool, (size_t)p->rows, grain, mm8_walk, &j8);
    if (p->qlinear) {
        mm_job j = {.p = p, .c = j8.c, .y = args->outputs[0], .in = args->inputs, .din = k->in,
                    .groups = (p->M + 3) / 4};
        cpu_parallel_for(pool, (size_t)(p->batches * j.groups), 16, mm8_requant_walk, &j);
    }
    return LOOM_OK;
}

static loom_status mm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const mm_params *p = k->params;
    uint32_t ia, iza, ib, izb;
    (void)err;
    (void)err_len;
    mm_inputs(k->op, &ia, &iza, &ib, &izb);
    if (p->batches * p->M * p->N == 0)
        return LOOM_OK;
    if (p->b8)
        return mm_run8(k, args, pool);
    /* With K = 0 nothing is packed and the scratch may be absent (NULL). */
    char *scratch = args->scratch;
    int16_t *a = scratch ? (int16_t *)(scratch + p->a_pack_off) : NULL;
    const void *za = iza < k->n_in && k->in[iza].dtype ? args->inputs[iza] : NULL;
    const void *zb = izb < k->n_in && k->in[izb].dtype ? args->inputs[izb] : NULL;
    pack16(a, args->inputs[ia], k->in[ia].dtype, p->numel_a, za, za ? k->in[iza].dtype : 0,
           p->K, za ? loom_tensor_desc_numel(&k->in[iza]) : 1);
    const int16_t *b = p->b_packed;
    if (!b) {
        int16_t *bp = scratch ? (int16_t *)(scratch + p->b_pack_off) : NULL;
        pack16(bp, args->inputs[ib], k->in[ib].dtype, p->numel_b, zb, zb ? k->in[izb].dtype : 0,
               1, zb ? loom_tensor_desc_numel(&k->in[izb]) : 1);
        b = bp;
    }
    mm_job j = {.p = p, .a = a, .b = b, .in = args->inputs, .din = k->in,
                .groups = (p->M + 3) / 4};
    if (p->qlinear) {
        j.c = (int32_t *)(scratch + p->acc_off);
        j.y = args->outputs[0];
    } else {
        j.c = args->outputs[0];
    }
    const double work = 8.0 * (double)p->N * (double)(p->K > 0 ? p->K : 1);
    const size_t grain = work >= 65536.0 ? 1 : (size_t)(65536.0 / work);
    cpu_parallel_for(pool, (size_t)(p->batches * j.groups), grain, mm_walk, &j);
    return LOOM_OK;
}

static int is_q8(loom_dtype t)
{
    return t == LOOM_DTYPE_U8 || t == LOOM_DTYPE_I8;
}

static int mm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    const int q = node->op == LOOM_OP_QLINEAR_MAT_MUL;
    uint32_t ia, iza, ib, izb;
    mm_inputs(node->op, &ia, &iza, &ib, &izb);
    if (node->n_outputs != 1 || !cpu_present(node, ia) || !cpu_present(node, ib) ||
        (q && node->n_inputs != 8)) {
        cpu_reason(reason, len, "%s: unexpected inputs or outputs", op);
        return 0;
    }
    const loom_tensor_desc *a = &node->inputs[ia], *b = &node->inputs[ib], *y = &node->outputs[0];
    if (!is_q8(a->dtype))
        return no_dtype(node, a->dtype, "uint8, int8", reason, len);
    if (!is_q8(b->dtype))
        return no_dtype(node, b->dtype, "uint8, int8", reason, len);
    if (q ? !is_q8(y->dtype) : y->dtype != LOOM_DTYPE_I32)
        return no_dtype(node, y->dtype, q ? "uint8, int8 outputs" : "int32 outputs", reason,
                        len);
    if (a->rank < 1 || b->rank < 1 || a->rank > LOOM_MAX_RANK || b->rank > LOOM_MAX_RANK) {
        cpu_reason(reason, len, "%s: operands must have rank 1 or more", op);
        return 0;
    }
    const int64_t M = a->rank > 1 ? a->dims[a->rank - 2] : 1, K = a->dims[a->rank - 1];
    const int64_t N = b->rank > 1 ? b->dims[b->rank - 1] : 1;
    const int64_t kb = b->rank > 1 ? b->dims[b->rank - 2] : b->dims[0];
    if (K != kb) {
        cpu_reason(reason, len, "%s: inner dimensions differ", op);
        return 0;
    }
    if (cpu_present(node, iza) && !param_ok(&node->inputs[iza], a->dtype, M)) {
        cpu_reason(reason, len, "%s: a_zero_point must be a scalar or [M] of A's dtype", op);
        return 0;
    }
    if (cpu_present(node, izb) && !param_ok(&node->inputs[izb], b->dtype, N)) {
        cpu_reason(reason, len, "%s: b_zero_point must be a scalar or [N] of B's dtype", op);
        return 0;
    }
    if (q && (!param_ok(&node->inputs[1], LOOM_DTYPE_F32, M) ||
              !param_ok(&node->inputs[4], LOOM_DTYPE_F32, N) ||
              !param_ok(&node->inputs[6], LOOM_DTYPE_F32, M) ||
              !param_ok(&node->inputs[7], y->dtype, M) || !cpu_present(node, 2) ||
              !cpu_present(node, 5))) {
        cpu_reason(reason, len, "%s: scales and zero points must be scalars or per row/column",
                   op);
        return 0;
    }
    /* The output: broadcast batch dims, then M (when A is a matrix) and N (when B is). */
    const uint32_t ba = a->rank > 2 ? a->rank - 2 : 0, bb = b->rank > 2 ? b->rank - 2 : 0;
    const uint32_t br = ba > bb ? ba : bb;
    if (y->rank != br + (a->rank > 1) + (b->rank > 1)) {
        cpu_reason(reason, len, "%s: output rank does not match the operands", op);
        return 0;
    }
    for (uint32_t d = 0; d < br; d++) {
        const int64_t da = d + ba >= br ? a->dims[d + ba - br] : 1;
        const int64_t db = d + bb >= br ? b->dims[d + bb - br] : 1;
        if (!((da == y->dims[d] || da == 1) && (db == y->dims[d] || db == 1))) {
            cpu_reason(reason, len, "%s: batch dimensions do not broadcast to the output", op);
            return 0;
        }
    }
    return 1;
}

static loom_status mm_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    uint32_t ia, iza, ib, izb;
    mm_inputs(node->op, &ia, &iza, &ib, &izb);
    const loom_tensor_desc *a = &k->in[ia], *b = &k->in[ib], *y = &k->out[0];
    mm_params *p = calloc(1, sizeof *p);
    if (!p)
        goto oom;
    p->qlinear = node->op == LOOM_OP_QLINEAR_MAT_MUL;
    p->signed_out = y->dtype == LOOM_DTYPE_I8;
    p->M = a->rank > 1 ? a->dims[a->rank - 2] : 1;
    p->K = a->dims[a->rank - 1];
    p->N = b->rank > 1 ? b->dims[b->rank - 1] : 1;
    p->numel_a = loom_tensor_desc_numel(a);
    p->numel_b = loom_tensor_desc_numel(b);
    const uint32_t ba = a->rank > 2 ? a->rank - 2 : 0, bb = b->rank > 2 ? b->rank - 2 : 0;
    const uint32_t br = ba > bb ? ba : bb;
    p->batches = 1;
    for (uint32_t d = 0; d < br; d++)
        p->batches *= y->dims[d];
    p->a_off = calloc((size_t)(p->batches > 0 ? p->batches : 1), sizeof *p->a_off);
    p->b_off = calloc((size_t)(p->batches > 0 ? p->batches : 1), sizeof *p->b_off);
    if (!p->a_off || !p->b_off)
        goto oom;
    /* Each output batch's matrices in A and B: walk the batch index, strides 0 where an
     * operand broadcasts. */
    int64_t sa[LOOM_MAX_RANK] = {0}, sb[LOOM_MAX_RANK] = {0};
    {
        int64_t s = p->M * p->K;
        for (uint32_t d = br; d-- > 0;) {
            if (d + ba >= br) {
                const int64_t dim = a->dims[d + ba - br];
                sa[d] = dim == 1 ? 0 : s;
                s *= dim;
            }
        }
        s = p->K * p->N;
        for (uint32_t d = br; d-- > 0;) {
            if (d + bb >= br) {
                const int64_t dim = b->dims[d + bb - br];
                sb[d] = dim == 1 ? 0 : s;
                s *= dim;
            }
        }
    }
    for (int64_t t = 0; t < p->batches; t++) {
        int64_t rem = t, oa = 0, ob = 0;
        for (uint32_t d = br; d-- > 0;) {
            const int64_t c = rem % y->dims[d];
            rem /= y->dims[d];
            oa += c * sa[d];
            ob += c * sb[d];
        }
        p->a_off[t] = oa;
        p->b_off[t] = ob;
    }
    const void *bc = node->input_constants ? node->input_constants[ib] : NULL;
    const int zb_given = cpu_present(node, izb);
    const void *zbc = zb_given && node->input_constants ? node->input_constants[izb] : NULL;
    if (bc && (!zb_given || zbc) && p->numel_b > 0) {
        p->b_packed = malloc((size_t)p->numel_b * sizeof(int16_t));
        if (!p->b_packed)
            goto oom;
        pack16(p->b_packed, bc, b->dtype, p->numel_b, zbc, zbc ? k->in[izb].dtype : 0, 1,
               zbc ? loom_tensor_desc_numel(&k->in[izb]) : 1);
    }
    /* B' in int8 for the u8 x s8 GEMM when it fits, B is a matrix and A's zero point is one
     * value. */
    if (p->b_packed && b->rank == 2 && p->K > 0 &&
        (!cpu_present(node, iza) || loom_tensor_desc_numel(&k->in[iza]) == 1)) {
        int fits = 1;
        for (int64_t i = 0; i < p->numel_b && fits; i++)
            fits = p->b_packed[i] >= -128 && p->b_packed[i] <= 127;
        int8_t *b8 = fits ? malloc((size_t)(p->numel_b > 0 ? p->numel_b : 0) + 1) : NULL;
        if (fits && !b8)
            goto oom;
        for (int64_t i = 0; b8 && i < p->numel_b; i++)
            b8[i] = (int8_t)p->b_packed[i];
        if (b8) {
            p->b8 = cpu_int8_pack(b8, p->K, p->N, p->N, 1);
            free(b8);
            if (!p->b8)
                goto oom;
            p->rb = cpu_int8_row_bytes(p->b8);
            p->rows = p->numel_a / p->K;
            p->a_signed = a->dtype == LOOM_DTYPE_I8;
            free(p->b_packed); /* the int16 copy is not needed */
            p->b_packed = NULL;
        }
    }
    /* Scratch: A' | B' (unless packed) | int32 accumulators (QLinearMatMul), 64-byte aligned;
     * the u8 x s8 path: A's uint8 rows | accumulators. */
    size_t off = 0;
    p->a_pack_off = off;
    off = ALIGN64(off + (p->b8 ? (size_t)(p->rows * p->rb)
                               : (size_t)p->numel_a * sizeof(int16_t)));
    p->b_pack_off = off;
    if (!p->b_packed && !p->b8)
        off = ALIGN64(off + (size_t)p->numel_b * sizeof(int16_t));
    p->acc_off = off;
    if (p->qlinear)
        off = ALIGN64(off + (size_t)loom_tensor_desc_numel(y) * sizeof(int32_t));
    k->scratch_bytes = off;
    k->params = p;
    k->free_params = mm_free;
    k->run = mm_run;
    return LOOM_OK;
oom:
    mm_free(p);
    return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", node->op_name);
}

/* ---- QLinearConv, ConvInteger ---------------------------------------------------------------
 * ConvInteger is QLinearConv without the requantisation (its int32 sums are the output) and
 * with optional zero points. With constant weights whose distance from their zero point fits
 * int8 (quantize_static's symmetric int8 weights, uint8 weights around 128), the convolution is
 * kernels_conv_int8.c's implicit GEMM (u8 x s8, VNNI where the CPU has it, the requantisation
 * fused into its store). Otherwise one im2col + the int16 GEMM above. */

/* Output pixels per tile: the im2col panel of a tile is CKK x QC_TP int16. */
#define QC_TP 128
/* Tiles are dealt round-robin to at most this many slots, each with its own scratch. */
#define QC_SLOTS 16

typedef struct qc_params {
    int64_t N, C, H, W, M, OH, OW, KH, KW, G, Cg, Mg, CKK;
    int64_t sh, sw, dh, dw, ph, pw;
    int64_t tiles, items, slots;
    int16_t *w_packed;             /* constant W' = w - w_zp, [M x CKK], else NULL */
    size_t w_off, mult_off, slot_off, slot_bytes, col_bytes;
    int signed_out, x_signed;
    int integer;                   /* ConvInteger: int32 output, no requantisation */
    uint32_t iw, ixz, iwz;         /* input indices of w, x_zero_point, w_zero_point */
    cpu_qconv8 *q8;                /* constant int8-ranged W': kernels_conv_int8.c, else NULL */
} qc_params;

static void qc_free(void *p)
{
    qc_params *q = p;
    if (q) {
        free(q->w_packed);
        cpu_qconv8_free(q->q8);
    }
    free(q);
}

typedef struct qc_job {
    const qc_params *p;
    const void *x;
    const int16_t *w;
    const float *mult;
    const int32_t *bias;
    int32_t xzp, yzp;
    void *y;
    char *slots;
} qc_job;

/* The im2col panel of output pixels [P0, P0 + TP) of image N, group G: row ck = (c, kh, kw),
 * column j; padding reads as the zero point, i.e. 0 after subtraction. */
static void qc_im2col(const qc_job *j, int64_t n, int64_t g, int64_t p0, int64_t tp,
                      int16_t *col)
{
    const qc_params *p = j->p;
    int64_t oh[QC_TP], ow[QC_TP];
    for (int64_t t = 0; t < tp; t++) {
        oh[t] = (p0 + t) / p->OW;
        ow[t] = (p0 + t) % p->OW;
    }
    const int16_t zx = (int16_t)j->xzp;
    int64_t ck = 0;
    for (int64_t c = 0; c < p->Cg; c++) {
        const int64_t plane = ((n * p->C) + g * p->Cg + c) * p->H * p->W;
        for (int64_t kh = 0; kh < p->KH; kh++)
            for (int64_t kw = 0; kw < p->KW; kw++, ck++) {
                int16_t *dst = col + ck * tp;
                const int64_t dy = kh * p->dh - p->ph, dx = kw * p->dw - p->pw;
                for (int64_t t = 0; t < tp; t++) {
                    const int64_t ih = oh[t] * p->sh + dy, iw = ow[t] * p->sw + dx;
                    int16_t v = 0;
                    if (ih >= 0 && ih < p->H && iw >= 0 && iw < p->W) {
                        const int64_t at = plane + ih * p->W + iw;
                        v = (int16_t)((p->x_signed ? (int16_t)((const int8_t *)j->x)[at]
                                                   : (int16_t)((const uint8_t *)j->x)[at]) -
                                      zx);
                    }
                    dst[t] = v;
                }
            }
    }
}

static void qc_walk(void *arg, size_t begin, size_t end)
{
    const qc_job *j = arg;
    const qc_params *p = j->p;
    const int64_t P = p->OH * p->OW;
    const int32_t lo = p->signed_out ? -128 : 0, hi = p->signed_out ? 127 : 255;
    int32_t row[QC_TP];
    for (size_t s = begin; s < end; s++) {
        char *mem = j->slots + s * p->slot_bytes;
        int16_t *col = (int16_t *)mem;
        int32_t *acc = (int32_t *)(mem + p->col_bytes);
        for (int64_t it = (int64_t)s; it < p->items; it += p->slots) {
            const int64_t tile = it % p->tiles, ng = it / p->tiles;
            const int64_t g = ng % p->G, n = ng / p->G;
            const int64_t p0 = tile * QC_TP, tp = P - p0 < QC_TP ? P - p0 : QC_TP;
            qc_im2col(j, n, g, p0, tp, col);
            if (p->integer) {
                /* ConvInteger: the sums go straight to the output, one row per channel. */
                int32_t *y = (int32_t *)j->y + (n * p->M + g * p->Mg) * P + p0;
                igemm(p->Mg, tp, p->CKK, j->w + g * p->Mg * p->CKK, p->CKK, col, tp, y, P);
                continue;
            }
            igemm(p->Mg, tp, p->CKK, j->w + g * p->Mg * p->CKK, p->CKK, col, tp, acc, tp);
            for (int64_t mi = 0; mi < p->Mg; mi++) {
                const int64_t m = g * p->Mg + mi;
                const int32_t b = j->bias ? j->bias[m] : 0;
                const double mult = j->mult[m];
                const int32_t *a = acc + mi * tp;
                for (int64_t t = 0; t < tp; t++)
                    row[t] = requant(a[t] + b, mult, j->yzp, lo, hi);
                char *y = (char *)j->y + ((n * p->M + m) * P + p0);
                store_q(y, p->signed_out, row, tp);
            }
        }
    }
}

static loom_status qc_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const qc_params *p = k->params;
    (void)err;
    (void)err_len;
    if (p->N * p->M * p->OH * p->OW == 0)
        return LOOM_OK;
    char *scratch = args->scratch;
    const int16_t *w = p->w_packed;
    const int has_xz = p->ixz < k->n_in && k->in[p->ixz].dtype;
    const int has_wz = p->iwz < k->n_in && k->in[p->iwz].dtype;
    if (!w && !p->q8) {
        int16_t *wp = (int16_t *)(scratch + p->w_off);
        const int64_t nz = has_wz ? loom_tensor_desc_numel(&k->in[p->iwz]) : 1;
        pack16(wp, args->inputs[p->iw], k->in[p->iw].dtype, p->M * p->CKK,
               has_wz ? args->inputs[p->iwz] : NULL, has_wz ? k->in[p->iwz].dtype : 0, p->CKK,
               nz);
        w = wp;
    }
    float *mult = NULL;
    if (!p->integer) {
        mult = (float *)(scratch + p->mult_off);
        const float sx = load_f32(args->inputs[1], 0), sy = load_f32(args->inputs[6], 0);
        const int per_ch = loom_tensor_desc_numel(&k->in[4]) != 1;
        for (int64_t m = 0; m < p->M; m++)
            mult[m] = sx * load_f32(args->inputs[4], per_ch ? m : 0) / sy;
    }
    const int32_t *bias =
        !p->integer && k->n_in > 8 && k->in[8].dtype ? args->inputs[8] : NULL;
    const int32_t xzp =
        has_xz ? (int32_t)load_int(k->in[p->ixz].dtype, args->inputs[p->ixz], 0) : 0;
    const int32_t yzp = p->integer ? 0 : (int32_t)load_int(k->in[7].dtype, args->inputs[7], 0);
    if (p->q8) {
        const cpu_qconv8_args qa = {.x = args->inputs[0], .y = args->outputs[0], .x_zp = xzp,
                                    .y_zp = yzp, .mult = mult, .bias = bias,
                                    .scratch = scratch + p->slot_off};
        cpu_qconv8_run(p->q8, &qa, pool);
        return LOOM_OK;
    }
    qc_job j = {.p = p,
                .x = args->inputs[0],
                .w = w,
                .mult = mult,
                .bias = bias,
                .xzp = xzp,
                .yzp = yzp,
                .y = args->outputs[0],
                .slots = scratch + p->slot_off};
    cpu_parallel_for(pool, (size_t)p->slots, 1, qc_walk, &j);
    return LOOM_OK;
}

static int qc_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    const int integer = node->op == LOOM_OP_CONV_INTEGER;
    const uint32_t iw = integer ? 1 : 3, need = integer ? 2 : 8;
    if (node->n_inputs < need || node->n_inputs > (integer ? 4u : 9u) || node->n_outputs != 1) {
        cpu_reason(reason, len, "%s: expects %s inputs and one output", op,
                   integer ? "2 to 4" : "8 or 9");
        return 0;
    }
    for (uint32_t i = 0; i < need; i++)
        if (!cpu_present(node, i)) {
            cpu_reason(reason, len, "%s: input %u is required", op, i);
            return 0;
        }
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[iw], *y = &node->outputs[0];
    if (!is_q8(x->dtype))
        return no_dtype(node, x->dtype, "uint8, int8", reason, len);
    if (!is_q8(w->dtype))
        return no_dtype(node, w->dtype, "uint8, int8", reason, len);
    if (integer ? y->dtype != LOOM_DTYPE_I32 : !is_q8(y->dtype))
        return no_dtype(node, y->dtype, integer ? "int32 outputs" : "uint8, int8 outputs",
                        reason, len);
    if (x->rank != 3 && x->rank != 4) {
        cpu_reason(reason, len, "%s: only 1-D and 2-D convolutions have a CPU kernel (rank %u)",
                   op, x->rank);
        return 0;
    }
    const uint32_t s = x->rank - 2;
    const loom_attr *ks = loom_node_attr(node, "kernel_shape");
    const loom_attr *st = loom_node_attr(node, "strides");
    const loom_attr *dl = loom_node_attr(node, "dilations");
    const loom_attr *pd = loom_node_attr(node, "pads");
    const int64_t group = loom_node_attr_int(node, "group", 1);
    if (!ks || !st || !dl || !pd || ks->kind != LOOM_ATTR_INTS || ks->count != s ||
        st->kind != LOOM_ATTR_INTS || st->count != s || dl->kind != LOOM_ATTR_INTS ||
        dl->count != s || pd->kind != LOOM_ATTR_INTS || pd->count != 2 * s || group < 1) {
        cpu_reason(reason, len, "%s: attributes are not canonical", op);
        return 0;
    }
    if (w->rank != x->rank || y->rank != x->rank || x->dims[1] != w->dims[1] * group ||
        w->dims[0] % group != 0 || y->dims[1] != w->dims[0] || y->dims[0] != x->dims[0]) {
        cpu_reason(reason, len, "%s: shapes of x, w and y do not agree", op);
        return 0;
    }
    const int64_t M = w->dims[0];
    if (integer) {
        if ((cpu_present(node, 2) && !param_ok(&node->inputs[2], x->dtype, -1)) ||
            (cpu_present(node, 3) && !param_ok(&node->inputs[3], w->dtype, M))) {
            cpu_reason(reason, len, "%s: x_zero_point must be per-tensor and w_zero_point per "
                                    "tensor or per output channel, of x's and w's dtypes", op);
            return 0;
        }
    } else if (!param_ok(&node->inputs[1], LOOM_DTYPE_F32, -1) ||
        !param_ok(&node->inputs[2], x->dtype, -1) ||
        !param_ok(&node->inputs[4], LOOM_DTYPE_F32, M) ||
        !param_ok(&node->inputs[5], w->dtype, M) ||
        !param_ok(&node->inputs[6], LOOM_DTYPE_F32, -1) ||
        !param_ok(&node->inputs[7], y->dtype, -1)) {
        cpu_reason(reason, len, "%s: scales and zero points must be per-tensor (w's may be "
                                "per output channel)", op);
        return 0;
    }
    if (!integer && cpu_present(node, 8) && !(node->inputs[8].dtype == LOOM_DTYPE_I32 &&
                              node->inputs[8].rank == 1 && node->inputs[8].dims[0] == M)) {
        cpu_reason(reason, len, "%s: B must be int32 [M]", op);
        return 0;
    }
    int64_t ckk = w->dims[1];
    for (uint32_t d = 0; d < s; d++)
        ckk *= w->dims[2 + d];
    /* int16 products summed in int32: 255 * 255 * CKK must not overflow. */
    if (ckk > 33000) {
        cpu_reason(reason, len, "%s: %lld products per output could overflow int32", op,
                   (long long)ckk);
        return 0;
    }
    return 1;
}

static loom_status qc_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    const int integer = node->op == LOOM_OP_CONV_INTEGER;
    const uint32_t iw = integer ? 1 : 3;
    const loom_tensor_desc *x = &k->in[0], *w = &k->in[iw], *y = &k->out[0];
    qc_params *p = calloc(1, sizeof *p);
    if (!p)
        goto oom;
    p->integer = integer;
    p->iw = iw;
    p->ixz = 2;
    p->iwz = integer ? 3 : 5;
    const int two_d = x->rank == 4;
    const int64_t *ks = loom_node_attr(node, "kernel_shape")->ints;
    const int64_t *st = loom_node_attr(node, "strides")->ints;
    const int64_t *dl = loom_node_attr(node, "dilations")->ints;
    const int64_t *pd = loom_node_attr(node, "pads")->ints;
    p->N = x->dims[0];
    p->C = x->dims[1];
    p->M = w->dims[0];
    p->G = loom_node_attr_int(node, "group", 1);
    p->Cg = p->C / p->G;
    p->Mg = p->M / p->G;
    /* 1-D runs as 2-D with a height of 1. */
    p->H = two_d ? x->dims[2] : 1;
    p->W = x->dims[two_d ? 3 : 2];
    p->OH = two_d ? y->dims[2] : 1;
    p->OW = y->dims[two_d ? 3 : 2];
    p->KH = two_d ? ks[0] : 1;
    p->KW = ks[two_d ? 1 : 0];
    p->sh = two_d ? st[0] : 1;
    p->sw = st[two_d ? 1 : 0];
    p->dh = two_d ? dl[0] : 1;
    p->dw = dl[two_d ? 1 : 0];
    p->ph = two_d ? pd[0] : 0;
    p->pw = pd[two_d ? 1 : 0];
    p->CKK = p->Cg * p->KH * p->KW;
    p->signed_out = y->dtype == LOOM_DTYPE_I8;
    p->x_signed = x->dtype == LOOM_DTYPE_I8;
    const int64_t P = p->OH * p->OW;
    p->tiles = (P + QC_TP - 1) / QC_TP;
    p->items = p->N * p->G * p->tiles;
    p->slots = p->items < QC_SLOTS ? p->items : QC_SLOTS;
    if (p->slots < 1)
        p->slots = 1;
    const int wz_given = cpu_present(node, p->iwz);
    const void *wc = node->input_constants ? node->input_constants[iw] : NULL;
    const void *wzc = wz_given && node->input_constants ? node->input_constants[p->iwz] : NULL;
    const int64_t nw = p->M * p->CKK;
    if (wc && (wzc || !wz_given) && nw > 0) {
        p->w_packed = malloc((size_t)nw * sizeof(int16_t));
        if (!p->w_packed)
            goto oom;
        pack16(p->w_packed, wc, w->dtype, nw, wzc, wzc ? k->in[p->iwz].dtype : 0, p->CKK,
               wzc ? loom_tensor_desc_numel(&k->in[p->iwz]) : 1);
        /* W' in int8 for kernels_conv_int8.c, when every value fits. */
        int fits = 1;
        for (int64_t i = 0; i < nw && fits; i++)
            fits = p->w_packed[i] >= -128 && p->w_packed[i] <= 127;
        if (fits) {
            int8_t *w8 = malloc((size_t)nw);
            if (!w8)
                goto oom;
            for (int64_t i = 0; i < nw; i++)
                w8[i] = (int8_t)p->w_packed[i];
            const cpu_qconv8_geom geom = {.N = p->N, .C = p->C, .H = p->H, .W = p->W,
                                          .M = p->M, .OH = p->OH, .OW = p->OW, .KH = p->KH,
                                          .KW = p->KW, .G = p->G, .sh = p->sh, .sw = p->sw,
                                          .dh = p->dh, .dw = p->dw, .ph = p->ph, .pw = p->pw};
            p->q8 = cpu_qconv8_create(&geom, w8, p->x_signed, p->signed_out, p->integer);
            free(w8);
            if (!p->q8)
                goto oom;
            free(p->w_packed); /* the int16 copy is not needed */
            p->w_packed = NULL;
        }
    }
    /* Scratch: W' (unless packed) | multipliers [M] | per slot: im2col panel, accumulators (or
     * kernels_conv_int8.c's panels). */
    size_t off = 0;
    p->w_off = off;
    if (!p->w_packed && !p->q8)
        off = ALIGN64(off + (size_t)nw * sizeof(int16_t));
    p->mult_off = off;
    off = ALIGN64(off + (size_t)p->M * sizeof(float));
    p->slot_off = off;
    if (p->q8) {
        off += cpu_qconv8_scratch_bytes(p->q8);
    } else {
        p->col_bytes = ALIGN64((size_t)p->CKK * QC_TP * sizeof(int16_t));
        p->slot_bytes = p->col_bytes + ALIGN64((size_t)p->Mg * QC_TP * sizeof(int32_t));
        off += (size_t)p->slots * p->slot_bytes;
    }
    k->scratch_bytes = off;
    k->params = p;
    k->free_params = qc_free;
    k->run = qc_run;
    return LOOM_OK;
oom:
    qc_free(p);
    return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", node->op_name);
}

/* ---- DynamicQuantizeLinear ------------------------------------------------------------------ */

/* Round half to even without a libm call; |v| < 2^22. */
static inline float dql_round(float v)
{
    return (v + 12582912.0f) - 12582912.0f;
}

static int dql_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 1 || node->n_outputs != 3 || node->inputs[0].dtype != LOOM_DTYPE_F32)
        return cpu_reason(reason, len, "DynamicQuantizeLinear: float32 x, three outputs");
    return 1;
}

/* ONNX's arithmetic: the range [min(0, min x), max(0, max x)] onto [0, 255], the zero point
 * rounded half to even; a range of zero width (x all zeros) gives scale 1 and zero point 0, as
 * ONNX Runtime does. */
static loom_status dql_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)pool;
    (void)err;
    (void)err_len;
    const float *x = args->inputs[0];
    uint8_t *y = args->outputs[0];
    float *ys = args->outputs[1];
    uint8_t *yz = args->outputs[2];
    const int64_t n = loom_tensor_desc_numel(&k->in[0]);
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    float scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
    float zp = dql_round(fminf(255.0f, fmaxf(0.0f, 0.0f - lo / scale)));
    for (int64_t i = 0; i < n; i++) {
        float v = dql_round(x[i] / scale) + zp; /* a division, as ONNX writes it */
        v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v == v ? v : zp;
        y[i] = (uint8_t)v;
    }
    *ys = scale;
    *yz = (uint8_t)zp;
    return LOOM_OK;
}

static loom_status dql_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    (void)node;
    (void)err;
    (void)err_len;
    k->run = dql_run;
    k->params = NULL;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_quantization(cpu_op_entry *table)
{
    table[LOOM_OP_DYNAMIC_QUANTIZE_LINEAR].supports = dql_supports;
    table[LOOM_OP_DYNAMIC_QUANTIZE_LINEAR].prepare = dql_prepare;
    table[LOOM_OP_QUANTIZE_LINEAR].supports = quant_supports;
    table[LOOM_OP_QUANTIZE_LINEAR].prepare = quant_prepare;
    table[LOOM_OP_DEQUANTIZE_LINEAR].supports = quant_supports;
    table[LOOM_OP_DEQUANTIZE_LINEAR].prepare = quant_prepare;
    table[LOOM_OP_MAT_MUL_INTEGER].supports = mm_supports;
    table[LOOM_OP_MAT_MUL_INTEGER].prepare = mm_prepare;
    table[LOOM_OP_QLINEAR_MAT_MUL].supports = mm_supports;
    table[LOOM_OP_QLINEAR_MAT_MUL].prepare = mm_prepare;
    table[LOOM_OP_QLINEAR_CONV].supports = qc_supports;
    table[LOOM_OP_QLINEAR_CONV].prepare = qc_prepare;
    table[LOOM_OP_CONV_INTEGER].supports = qc_supports;
    table[LOOM_OP_CONV_INTEGER].prepare = qc_prepare;
}
