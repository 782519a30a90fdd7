/*
 * The elementwise kernels of the CPU backend: unary maths, the broadcasting binary and variadic
 * operators (Add ... Max), Clip, Where, Cast, Expand and Identity.
 *
 * Broadcasting is resolved at prepare time into an ew_plan: the output's dimensions with size-1
 * dimensions dropped and adjacent dimensions merged wherever every operand allows it, each
 * operand walking them with byte strides (0 where it broadcasts). Along the innermost dimension
 * every operand then has stride 0 or 1 element, so run() hands contiguous runs to one of four
 * small loops per operator (a and b advance, only a, only b, neither) chosen at prepare time.
 * Same shape, scalar operand, row and column broadcasting all come out of this as one or two
 * long runs per chunk.
 */
#include "cpu_bcast.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Elements per parallel chunk: cheap operations are memory-bound and only worth splitting for
 * large tensors; libm calls cost ~10-20 ns an element, so smaller chunks pay off. */
#define EW_GRAIN_CHEAP 16384
#define EW_GRAIN_LIBM 2048
#define EW_GRAIN_CALL 4096 /* integer division, f16/bf16 conversions, inline exp/erf/tanh */

#define EW_MAX_IN 3

/* Scalars an inner loop needs beyond its operands. */
typedef struct ew_ctx {
    float alpha;          /* LeakyRelu */
    float lo_f, hi_f;     /* Clip, float32 */
    int64_t lo_i, hi_i;   /* Clip, integers */
    atomic_int *fault;    /* integer Div sets it when a divisor is 0 */
} ew_ctx;

/* One contiguous run of N output elements from operands A, B, C (unused ones are NULL). */
typedef void (*ew_fn)(size_t n, void *restrict o, const void *restrict a, const void *restrict b,
                      const void *restrict c, const ew_ctx *ctx);

/* A coalesced broadcast plan (cpu_bcast.h). */
typedef cpu_bcast_plan ew_plan;
_Static_assert(EW_MAX_IN <= CPU_BCAST_MAX_OPS, "the shared plan holds every operand");

/* One sweep over the output. Variadic Min/Max take several: the first combines inputs 0 and 1,
 * each later one folds one more input into the output in place. */
typedef struct ew_pass {
    ew_plan plan;
    ew_fn fn;
    int32_t src[EW_MAX_IN]; /* input index feeding each operand; -1: the output itself */
} ew_pass;

typedef struct ew_params {
    int64_t numel;
    size_t grain;
    size_t out_esize, in_esize;
    ew_fn flat;      /* set: one same-shape input, walked contiguously; passes unused */
    ew_ctx ctx;      /* the static scalars */
    int clip;        /* Clip: bounds from inputs 1 and 2 when present */
    uint32_t n_passes;
    ew_pass passes[];
} ew_params;

/* ---- helpers -------------------------------------------------------------------------------- */

static int is_num(loom_dtype t)
{
    return t == LOOM_DTYPE_F32 || t == LOOM_DTYPE_I32 || t == LOOM_DTYPE_I64;
}

/* Neg and Abs: the signed types with a kernel. */
static int is_signed_num(loom_dtype t)
{
    return is_num(t) || t == LOOM_DTYPE_F64;
}

/* Add ... Max: float32, float64 and every integer width (issue 13: the suite's float64 and
 * uint8 cases). */
static int is_binary_num(loom_dtype t)
{
    switch (t) {
    case LOOM_DTYPE_F32: case LOOM_DTYPE_F64: case LOOM_DTYPE_I8: case LOOM_DTYPE_U8:
    case LOOM_DTYPE_I16: case LOOM_DTYPE_U16: case LOOM_DTYPE_I32: case LOOM_DTYPE_U32:
    case LOOM_DTYPE_I64: case LOOM_DTYPE_U64:
        return 1;
    default:
        return 0;
    }
}

typedef struct ew_job {
    const ew_plan *plan;
    ew_fn fn;
    char *out;
    const char *in[EW_MAX_IN];
    size_t out_esize, in_esize;
    const ew_ctx *ctx;
} ew_job;

/* Output elements [BEGIN, END) of a plan: a chunk may start and end inside a row. */
static void ew_walk(void *arg, size_t begin, size_t end)
{
    const ew_job *j = arg;
    const ew_plan *p = j->plan;
    const uint32_t outer = p->rank - 1, n = p->n_ops;
    const size_t inner = (size_t)p->dims[outer];
    int64_t coord[LOOM_MAX_RANK];
    int64_t row_off[EW_MAX_IN] = {0};
    size_t row = begin / inner, col = begin % inner;
    for (uint32_t d = outer; d-- > 0;) {
        coord[d] = (int64_t)(row % (size_t)p->dims[d]);
        row /= (size_t)p->dims[d];
        for (uint32_t k = 0; k < n; k++)
            row_off[k] += coord[d] * p->strides[k][d];
    }
    const char *in[EW_MAX_IN] = {NULL, NULL, NULL};
    size_t i = begin;
    for (;;) {
        size_t len = inner - col;
        if (len > end - i)
            len = end - i;
        for (uint32_t k = 0; k < n; k++)
            in[k] = j->in[k] + row_off[k] + (int64_t)col * p->strides[k][outer];
        j->fn(len, j->out + i * j->out_esize, in[0], in[1], in[2], j->ctx);
        i += len;
        if (i >= end)
            break;
        col = 0;
        for (uint32_t d = outer; d-- > 0;) {
            for (uint32_t k = 0; k < n; k++)
                row_off[k] += p->strides[k][d];
            if (++coord[d] < p->dims[d])
                break;
            coord[d] = 0;
            for (uint32_t k = 0; k < n; k++)
                row_off[k] -= p->strides[k][d] * p->dims[d];
        }
    }
}

static void ew_flat(void *arg, size_t begin, size_t end)
{
    const ew_job *j = arg;
    j->fn(end - begin, j->out + begin * j->out_esize, j->in[0] + begin * j->in_esize, NULL, NULL,
          j->ctx);
}

/* ---- unary float32 -------------------------------------------------------------------------- */

#define EW_UNARY(NAME, T, EXPR)                                                                   \
    CPU_CLONES                                                                                    \
    static void NAME(size_t n, void *restrict o_, const void *restrict a_,                        \
                     const void *restrict b_, const void *restrict c_, const ew_ctx *ctx)         \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        const T *restrict a = a_;                                                                 \
        const float alpha = ctx->alpha;                                                           \
        (void)b_;                                                                                 \
        (void)c_;                                                                                 \
        (void)alpha;                                                                              \
        CPU_LOOP(n, const T x = a[i]; o[i] = (EXPR););                                            \
    }

/* ---- vectorisable transcendentals -----------------------------------------------------------
 * Branch-free float code (selects, no libm calls) that GCC vectorises inside CPU_LOOP's blocks.
 * Accuracy against double-precision libm, measured over dense grids: exp ~1e-7 relative over
 * the normal range, erf 4.3e-7 absolute, tanh 7.5e-8 absolute. The exp core is cpu_simd.h's. */

/* e^x for any x, subnormal results included. X is clamped to [-104, 88.8] (e^-104 rounds to 0,
 * e^88.8 overflows: -inf gives 0, +inf gives inf; a NaN goes through), and 2^n is applied as
 * two factors 2^(n/2) * 2^(n - n/2), each normal for n in [-150, 128]. */
static inline float ew_exp(float x)
{
    float xc = cpu_sel(x < -104.0f, -104.0f, x);
    xc = cpu_sel(xc > 88.8f, 88.8f, xc);
    uint32_t n;
    const float p = cpu_exp_reduce(xc, &n);
    const uint32_t n1 = (uint32_t)((int32_t)n >> 1), n2 = n - n1;
    return p * cpu_pow2(n1) * cpu_pow2(n2);
}

/* erf as x * P(x^2) / Q(x^2) on [-4, 4] (the rational approximation of Eigen and XLA); outside
 * it erf is +-1 in float. A NaN stays NaN. */
static inline float ew_erf(float a)
{
    float x = cpu_sel(a > 4.0f, 4.0f, a);
    x = cpu_sel(x < -4.0f, -4.0f, x);
    const float z = x * x;
    float p = -2.72614225801306e-10f;
    p = p * z + 2.77068142495902e-08f;
    p = p * z + -2.10102402082508e-06f;
    p = p * z + -5.69250639462346e-05f;
    p = p * z + -7.34990630326855e-04f;
    p = p * z + -2.95459980854025e-03f;
    p = p * z + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * z + -2.13374055278905e-04f;
    q = q * z + -1.68282697438203e-03f;
    q = q * z + -7.37332916720468e-03f;
    q = q * z + -1.42647390514189e-02f;
    return x * p / q;
}

/* tanh: Cephes' odd polynomial for |x| < 0.625 (keeps the relative accuracy near 0), else
 * 1 - 2 / (e^2|x| + 1); 1 for |x| > 9. Both on |x|, then x's sign goes on, so -0 stays -0 and
 * a NaN (which takes the second form) stays NaN. */
static inline float ew_tanh(float x)
{
    const float ax = fabsf(x);
    const float z = x * x;
    float s = -5.70498872745e-3f;
    s = s * z + 2.06390887954e-2f;
    s = s * z - 5.37397155531e-2f;
    s = s * z + 1.33314422036e-1f;
    s = s * z - 3.33332819422e-1f;
    s = s * z * ax + ax;
    const float e = cpu_exp_mid(2.0f * cpu_sel(ax > 9.0f, 9.0f, ax)); /* in [0, 18] */
    const float l = cpu_sel(ax > 9.0f, 1.0f, 1.0f - 2.0f / (e + 1.0f));
    const float t = cpu_sel(ax < 0.625f, s, l);
    return cpu_f_bits(cpu_bits_f(t) | (cpu_bits_f(x) & 0x80000000u));
}

/* exp of a non-positive argument only: no overflow for large |x|. */
static inline float ew_sigmoid(float x)
{
    const float e = cpu_exp_neg(-fabsf(x));
    const float r = 1.0f / (1.0f + e);
    return cpu_sel(x >= 0.0f, r, e * r);
}

static inline float ew_gelu(float x)
{
    return 0.5f * x * (1.0f + ew_erf(x * 0.70710678118654752440f));
}

static inline float ew_gelu_tanh(float x)
{
    return 0.5f * x * (1.0f + ew_tanh(0.79788456080286535588f * (x + 0.044715f * x * x * x)));
}

/* x < 0 ? 0 : x lets a NaN through, as max(0, x) does in ONNX Runtime and NumPy. */
EW_UNARY(relu_f32, float, x < 0.0f ? 0.0f : x)
/* Written as relu(x) + alpha * min(x, 0): a product under a condition is not if-converted with
 * trapping maths (GCC's default), so x < 0 ? alpha * x : x would not vectorise. Exact: one of
 * the terms is 0; a NaN still comes through the first. */
EW_UNARY(leaky_relu_f32, float, (x < 0.0f ? 0.0f : x) + alpha * (x < 0.0f ? x : 0.0f))
EW_UNARY(sigmoid_f32, float, ew_sigmoid(x))
EW_UNARY(tanh_f32, float, ew_tanh(x))
EW_UNARY(erf_f32, float, ew_erf(x))
EW_UNARY(gelu_f32, float, ew_gelu(x))
EW_UNARY(gelu_tanh_f32, float, ew_gelu_tanh(x))
EW_UNARY(sqrt_f32, float, sqrtf(x))
EW_UNARY(exp_f32, float, ew_exp(x))
EW_UNARY(log_f32, float, logf(x))
EW_UNARY(neg_f32, float, -x)
EW_UNARY(abs_f32, float, fabsf(x))
EW_UNARY(neg_f64, double, -x)
EW_UNARY(abs_f64, double, fabs(x))
/* Integers wrap (through unsigned arithmetic) instead of overflowing: -INT_MIN is INT_MIN. */
EW_UNARY(neg_i32, int32_t, (int32_t)(0u - (uint32_t)x))
EW_UNARY(neg_i64, int64_t, (int64_t)(0u - (uint64_t)x))
EW_UNARY(abs_i32, int32_t, x < 0 ? (int32_t)(0u - (uint32_t)x) : x)
EW_UNARY(abs_i64, int64_t, x < 0 ? (int64_t)(0u - (uint64_t)x) : x)

/* Clip: min then max, so that min > max gives max everywhere, as ONNX says. */
CPU_CLONES
static void clip_f32(size_t n, void *restrict o_, const void *restrict a_, const void *restrict b_,
                     const void *restrict c_, const ew_ctx *ctx)
{
    float *restrict o = o_;
    const float *restrict a = a_;
    const float lo = ctx->lo_f, hi = ctx->hi_f;
    (void)b_;
    (void)c_;
    CPU_LOOP(n, float x = a[i]; x = x < lo ? lo : x; o[i] = x > hi ? hi : x;);
}

#define EW_CLIP_INT(NAME, T)                                                                      \
    CPU_CLONES                                                                                    \
    static void NAME(size_t n, void *restrict o_, const void *restrict a_,                        \
                     const void *restrict b_, const void *restrict c_, const ew_ctx *ctx)         \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        const T *restrict a = a_;                                                                 \
        const T lo = (T)ctx->lo_i, hi = (T)ctx->hi_i;                                             \
        (void)b_;                                                                                 \
        (void)c_;                                                                                 \
        CPU_LOOP(n, T x = a[i]; x = x < lo ? lo : x; o[i] = x > hi ? hi : x;);                    \
    }
EW_CLIP_INT(clip_i8, int8_t)
EW_CLIP_INT(clip_u8, uint8_t)
EW_CLIP_INT(clip_i32, int32_t)
EW_CLIP_INT(clip_i64, int64_t)

/* ---- binary --------------------------------------------------------------------------------- */

/* SA and SB are the literal 0 or 1 each operand advances by, so each variant compiles to a loop
 * over contiguous memory or with a loop-invariant operand. */
#define EW_BIN_VARIANT(NAME, SA, SB, TA, TB, TO, EXPR)                                            \
    CPU_CLONES                                                                                    \
    static void NAME##_##SA##SB(size_t n, void *restrict o_, const void *restrict a_,             \
                                const void *restrict b_, const void *restrict c_,                 \
                                const ew_ctx *ctx)                                                \
    {                                                                                             \
        TO *restrict o = o_;                                                                      \
        const TA *restrict pa = a_;                                                               \
        const TB *restrict pb = b_;                                                               \
        (void)c_;                                                                                 \
        (void)ctx;                                                                                \
        CPU_LOOP(n, const TA a = pa[i * SA]; const TB b = pb[i * SB]; o[i] = (EXPR););            \
    }
/* The table is indexed by the plan's inner_mask: bit 0 a advances, bit 1 b advances. */
#define EW_BIN(NAME, TA, TB, TO, EXPR)                                                            \
    EW_BIN_VARIANT(NAME, 0, 0, TA, TB, TO, EXPR)                                                  \
    EW_BIN_VARIANT(NAME, 1, 0, TA, TB, TO, EXPR)                                                  \
    EW_BIN_VARIANT(NAME, 0, 1, TA, TB, TO, EXPR)                                                  \
    EW_BIN_VARIANT(NAME, 1, 1, TA, TB, TO, EXPR)                                                  \
    static const ew_fn NAME[4] = {NAME##_00, NAME##_10, NAME##_01, NAME##_11};

/* In-place folding for variadic Min/Max: o = op(o, b). Indexed like EW_BIN (bit 0, the output
 * itself, always advances). */
#define EW_ACC_VARIANT(NAME, SB, T, EXPR)                                                         \
    CPU_CLONES                                                                                    \
    static void NAME##_acc##SB(size_t n, void *restrict o_, const void *restrict a_,              \
                               const void *restrict b_, const void *restrict c_,                  \
                               const ew_ctx *ctx)                                                 \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        const T *restrict pb = b_;                                                                \
        (void)a_;                                                                                 \
        (void)c_;                                                                                 \
        (void)ctx;                                                                                \
        CPU_LOOP(n, const T a = o[i]; const T b = pb[i * SB]; o[i] = (EXPR););                    \
    }
#define EW_ACC(NAME, T, EXPR)                                                                     \
    EW_ACC_VARIANT(NAME, 0, T, EXPR)                                                              \
    EW_ACC_VARIANT(NAME, 1, T, EXPR)                                                              \
    static const ew_fn NAME##_acc[4] = {NAME##_acc0, NAME##_acc0, NAME##_acc1, NAME##_acc1};

#define EW_WRAP(T, U, OP) (T)((U)a OP(U) b)

EW_BIN(add_f32, float, float, float, a + b)
EW_BIN(sub_f32, float, float, float, a - b)
EW_BIN(mul_f32, float, float, float, a * b)
EW_BIN(div_f32, float, float, float, a / b)
EW_BIN(add_f64, double, double, double, a + b)
EW_BIN(sub_f64, double, double, double, a - b)
EW_BIN(mul_f64, double, double, double, a * b)
EW_BIN(div_f64, double, double, double, a / b)
EW_BIN(add_i32, int32_t, int32_t, int32_t, EW_WRAP(int32_t, uint32_t, +))
EW_BIN(sub_i32, int32_t, int32_t, int32_t, EW_WRAP(int32_t, uint32_t, -))
EW_BIN(mul_i32, int32_t, int32_t, int32_t, EW_WRAP(int32_t, uint32_t, *))
EW_BIN(add_i64, int64_t, int64_t, int64_t, EW_WRAP(int64_t, uint64_t, +))
EW_BIN(sub_i64, int64_t, int64_t, int64_t, EW_WRAP(int64_t, uint64_t, -))
EW_BIN(mul_i64, int64_t, int64_t, int64_t, EW_WRAP(int64_t, uint64_t, *))
/* The narrow and unsigned integers wrap modulo 2^bits like the others (computed in unsigned,
 * where the promoted product cannot overflow). */
#define EW_INT_ARITH(SN, T, U)                                                                    \
    EW_BIN(add_##SN, T, T, T, EW_WRAP(T, U, +))                                                   \
    EW_BIN(sub_##SN, T, T, T, EW_WRAP(T, U, -))                                                   \
    EW_BIN(mul_##SN, T, T, T, (T)((uint64_t)(U)a * (uint64_t)(U)b))
EW_INT_ARITH(i8, int8_t, uint8_t)
EW_INT_ARITH(u8, uint8_t, uint8_t)
EW_INT_ARITH(i16, int16_t, uint16_t)
EW_INT_ARITH(u16, uint16_t, uint16_t)
EW_INT_ARITH(u32, uint32_t, uint32_t)
EW_INT_ARITH(u64, uint64_t, uint64_t)

/* Float Min/Max propagate a NaN from either side, like NumPy's minimum/maximum. */
#define EW_MAX_F(a, b) ((a) != (a) || (a) > (b) ? (a) : (b))
#define EW_MIN_F(a, b) ((a) != (a) || (a) < (b) ? (a) : (b))
#define EW_MAX_I(a, b) ((a) > (b) ? (a) : (b))
#define EW_MIN_I(a, b) ((a) < (b) ? (a) : (b))
EW_BIN(max_f32, float, float, float, EW_MAX_F(a, b))
EW_BIN(min_f32, float, float, float, EW_MIN_F(a, b))
EW_BIN(max_i32, int32_t, int32_t, int32_t, EW_MAX_I(a, b))
EW_BIN(min_i32, int32_t, int32_t, int32_t, EW_MIN_I(a, b))
EW_BIN(max_i64, int64_t, int64_t, int64_t, EW_MAX_I(a, b))
EW_BIN(min_i64, int64_t, int64_t, int64_t, EW_MIN_I(a, b))
EW_ACC(max_f32, float, EW_MAX_F(a, b))
EW_ACC(min_f32, float, EW_MIN_F(a, b))
EW_ACC(max_i32, int32_t, EW_MAX_I(a, b))
EW_ACC(min_i32, int32_t, EW_MIN_I(a, b))
EW_ACC(max_i64, int64_t, EW_MAX_I(a, b))
EW_ACC(min_i64, int64_t, EW_MIN_I(a, b))
#define EW_MINMAX(SN, T, MAXE, MINE)                                                              \
    EW_BIN(max_##SN, T, T, T, MAXE(a, b))                                                         \
    EW_BIN(min_##SN, T, T, T, MINE(a, b))                                                         \
    EW_ACC(max_##SN, T, MAXE(a, b))                                                               \
    EW_ACC(min_##SN, T, MINE(a, b))
EW_MINMAX(f64, double, EW_MAX_F, EW_MIN_F)
EW_MINMAX(i8, int8_t, EW_MAX_I, EW_MIN_I)
EW_MINMAX(u8, uint8_t, EW_MAX_I, EW_MIN_I)
EW_MINMAX(i16, int16_t, EW_MAX_I, EW_MIN_I)
EW_MINMAX(u16, uint16_t, EW_MAX_I, EW_MIN_I)
EW_MINMAX(u32, uint32_t, EW_MAX_I, EW_MIN_I)
EW_MINMAX(u64, uint64_t, EW_MAX_I, EW_MIN_I)
/* float16 Min/Max compare as float32 (exact) and pick one input's bits. */
static inline uint16_t ew_max_h(uint16_t a, uint16_t b)
{
    const float x = cpu_f16_to_f32(a), y = cpu_f16_to_f32(b);
    return x != x || x > y ? a : b;
}
static inline uint16_t ew_min_h(uint16_t a, uint16_t b)
{
    const float x = cpu_f16_to_f32(a), y = cpu_f16_to_f32(b);
    return x != x || x < y ? a : b;
}
EW_MINMAX(f16, uint16_t, ew_max_h, ew_min_h)

/* Pow: float32 base; the exponent may be float32, int32 or int64 (ONNX's T1). */
EW_BIN(pow_f32, float, float, float, powf(a, b))
EW_BIN(pow_f32_i32, float, int32_t, float, powf(a, (float)b))
EW_BIN(pow_f32_i64, float, int64_t, float, powf(a, (float)b))
EW_BIN(pow_f32_i8, float, int8_t, float, powf(a, (float)b))
EW_BIN(pow_f32_u8, float, uint8_t, float, powf(a, (float)b))
EW_BIN(pow_f32_i16, float, int16_t, float, powf(a, (float)b))
EW_BIN(pow_f32_u16, float, uint16_t, float, powf(a, (float)b))
EW_BIN(pow_f32_u32, float, uint32_t, float, powf(a, (float)b))
EW_BIN(pow_f32_u64, float, uint64_t, float, powf(a, (float)b))

/* Integer bases (int32, int64): an integer exponent is exact exponentiation by squaring,
 * wrapping modulo 2^bits like Mul; a negative one gives the truncated 1 / a^-e (1 for a base
 * of 1, +-1 for -1, else 0; 0 for a base of 0, where NumPy refuses). A float32 exponent goes
 * through double pow and converts back, truncating toward zero (NaN and out-of-range values
 * give the dtype's minimum, as x86's conversion does). */
static inline uint64_t ew_ipow(uint64_t base, uint64_t e)
{
    uint64_t r = 1;
    while (e) {
        if (e & 1)
            r *= base;
        base *= base;
        e >>= 1;
    }
    return r;
}
static inline int64_t ew_ipow_signed(int64_t a, int64_t e)
{
    if (e >= 0)
        return (int64_t)ew_ipow((uint64_t)a, (uint64_t)e);
    return a == 1 ? 1 : a == -1 ? ((e & 1) ? -1 : 1) : 0;
}
static inline int64_t ew_fpow_i64(int64_t a, float e)
{
    const double v = pow((double)a, (double)e);
    return v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? (int64_t)v : INT64_MIN;
}
static inline int32_t ew_fpow_i32(int32_t a, float e)
{
    const double v = pow((double)a, (double)e);
    return v > -2147483649.0 && v < 2147483648.0 ? (int32_t)v : INT32_MIN;
}
#define EW_POW_INT(SN, T)                                                                         \
    EW_BIN(pow_##SN##_i8, T, int8_t, T, (T)ew_ipow_signed(a, b))                                  \
    EW_BIN(pow_##SN##_u8, T, uint8_t, T, (T)ew_ipow((uint64_t)(int64_t)a, b))                     \
    EW_BIN(pow_##SN##_i16, T, int16_t, T, (T)ew_ipow_signed(a, b))                                \
    EW_BIN(pow_##SN##_u16, T, uint16_t, T, (T)ew_ipow((uint64_t)(int64_t)a, b))                   \
    EW_BIN(pow_##SN##_i32, T, int32_t, T, (T)ew_ipow_signed(a, b))                                \
    EW_BIN(pow_##SN##_u32, T, uint32_t, T, (T)ew_ipow((uint64_t)(int64_t)a, b))                   \
    EW_BIN(pow_##SN##_i64, T, int64_t, T, (T)ew_ipow_signed(a, b))                                \
    EW_BIN(pow_##SN##_u64, T, uint64_t, T, (T)ew_ipow((uint64_t)(int64_t)a, b))                   \
    EW_BIN(pow_##SN##_f32, T, float, T, ew_fpow_##SN(a, b))
EW_POW_INT(i32, int32_t)
EW_POW_INT(i64, int64_t)

/* The Pow kernels by (base, exponent) dtype; NULL when there is none. */
#define pow_f32_f32 pow_f32
static const ew_fn *pow_fns(loom_dtype base, loom_dtype e)
{
#define EW_POW_ROW(SN)                                                                            \
    e == LOOM_DTYPE_F32 ? pow_##SN##_f32 : e == LOOM_DTYPE_I8 ? pow_##SN##_i8                    \
    : e == LOOM_DTYPE_U8 ? pow_##SN##_u8 : e == LOOM_DTYPE_I16 ? pow_##SN##_i16                  \
    : e == LOOM_DTYPE_U16 ? pow_##SN##_u16 : e == LOOM_DTYPE_I32 ? pow_##SN##_i32                \
    : e == LOOM_DTYPE_U32 ? pow_##SN##_u32 : e == LOOM_DTYPE_I64 ? pow_##SN##_i64                \
    : e == LOOM_DTYPE_U64 ? pow_##SN##_u64 : NULL
    switch (base) {
    case LOOM_DTYPE_F32: return EW_POW_ROW(f32);
    case LOOM_DTYPE_I32: return EW_POW_ROW(i32);
    case LOOM_DTYPE_I64: return EW_POW_ROW(i64);
    default: return NULL;
    }
#undef EW_POW_ROW
}
/* A constant exponent of 2 (x^2 in every LayerNorm written out in ONNX) needs no libm. */
EW_BIN(square_f32, float, float, float, ((void)b, a * a))

/* Integer Div truncates toward zero like C; a zero divisor is reported after the sweep, and
 * INT_MIN / -1 (which traps on x86) wraps to INT_MIN. */
#define EW_IDIV_VARIANT(NAME, SA, SB, T, U)                                                       \
    static void NAME##_##SA##SB(size_t n, void *restrict o_, const void *restrict a_,             \
                                const void *restrict b_, const void *restrict c_,                 \
                                const ew_ctx *ctx)                                                \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        const T *restrict pa = a_;                                                                \
        const T *restrict pb = b_;                                                                \
        int zero = 0;                                                                             \
        (void)c_;                                                                                 \
        for (size_t i = 0; i < n; i++) {                                                          \
            const T a = pa[i * SA], b = pb[i * SB];                                               \
            if (b == 0) {                                                                         \
                zero = 1;                                                                         \
                o[i] = 0;                                                                         \
            } else if (b == -1) {                                                                 \
                o[i] = (T)((U)0 - (U)a);                                                          \
            } else {                                                                              \
                o[i] = a / b;                                                                     \
            }                                                                                     \
        }                                                                                         \
        if (zero)                                                                                 \
            atomic_store_explicit(ctx->fault, 1, memory_order_relaxed);                           \
    }
#define EW_IDIV(NAME, T, U)                                                                       \
    EW_IDIV_VARIANT(NAME, 0, 0, T, U)                                                             \
    EW_IDIV_VARIANT(NAME, 1, 0, T, U)                                                             \
    EW_IDIV_VARIANT(NAME, 0, 1, T, U)                                                             \
    EW_IDIV_VARIANT(NAME, 1, 1, T, U)                                                             \
    static const ew_fn NAME[4] = {NAME##_00, NAME##_10, NAME##_01, NAME##_11};
EW_IDIV(div_i32, int32_t, uint32_t)
EW_IDIV(div_i64, int64_t, uint64_t)
/* int8 and int16 promote to int, where INT_MIN / -1 cannot trap: the cast back wraps. */
EW_IDIV(div_i8, int8_t, uint8_t)
EW_IDIV(div_i16, int16_t, uint16_t)

/* Unsigned Div: no negative divisor to special-case. */
#define EW_UDIV_VARIANT(NAME, SA, SB, T)                                                          \
    static void NAME##_##SA##SB(size_t n, void *restrict o_, const void *restrict a_,             \
                                const void *restrict b_, const void *restrict c_,                 \
                                const ew_ctx *ctx)                                                \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        const T *restrict pa = a_;                                                                \
        const T *restrict pb = b_;                                                                \
        int zero = 0;                                                                             \
        (void)c_;                                                                                 \
        for (size_t i = 0; i < n; i++) {                                                          \
            const T a = pa[i * SA], b = pb[i * SB];                                               \
            if (b == 0) {                                                                         \
                zero = 1;                                                                         \
                o[i] = 0;                                                                         \
            } else {                                                                              \
                o[i] = (T)(a / b);                                                                \
            }                                                                                     \
        }                                                                                         \
        if (zero)                                                                                 \
            atomic_store_explicit(ctx->fault, 1, memory_order_relaxed);                           \
    }
#define EW_UDIV(NAME, T)                                                                          \
    EW_UDIV_VARIANT(NAME, 0, 0, T)                                                                \
    EW_UDIV_VARIANT(NAME, 1, 0, T)                                                                \
    EW_UDIV_VARIANT(NAME, 0, 1, T)                                                                \
    EW_UDIV_VARIANT(NAME, 1, 1, T)                                                                \
    static const ew_fn NAME[4] = {NAME##_00, NAME##_10, NAME##_01, NAME##_11};
EW_UDIV(div_u8, uint8_t)
EW_UDIV(div_u16, uint16_t)
EW_UDIV(div_u32, uint32_t)
EW_UDIV(div_u64, uint64_t)

/* ---- Where, Expand, Identity: byte copies by element size ------------------------------------ */

/* A bit-mask select instead of ?: so that the loop vectorises with a bool condition. */
#define EW_WHERE_VARIANT(NAME, T, SC, SX, SY)                                                     \
    CPU_CLONES                                                                                    \
    static void NAME##_##SC##SX##SY(size_t n, void *restrict o_, const void *restrict c_,         \
                                    const void *restrict x_, const void *restrict y_,             \
                                    const ew_ctx *ctx)                                            \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        const uint8_t *restrict pc = c_;                                                          \
        const T *restrict px = x_;                                                                \
        const T *restrict py = y_;                                                                \
        (void)ctx;                                                                                \
        CPU_LOOP(n, const T m = (T)(0 - (T)(pc[i * SC] != 0));                                    \
                o[i] = (T)((px[i * SX] & m) | (py[i * SY] & (T)~m)););                            \
    }
/* Indexed by inner_mask: bit 0 cond, bit 1 X, bit 2 Y advance. */
#define EW_WHERE(NAME, T)                                                                         \
    EW_WHERE_VARIANT(NAME, T, 0, 0, 0)                                                            \
    EW_WHERE_VARIANT(NAME, T, 1, 0, 0)                                                            \
    EW_WHERE_VARIANT(NAME, T, 0, 1, 0)                                                            \
    EW_WHERE_VARIANT(NAME, T, 1, 1, 0)                                                            \
    EW_WHERE_VARIANT(NAME, T, 0, 0, 1)                                                            \
    EW_WHERE_VARIANT(NAME, T, 1, 0, 1)                                                            \
    EW_WHERE_VARIANT(NAME, T, 0, 1, 1)                                                            \
    EW_WHERE_VARIANT(NAME, T, 1, 1, 1)                                                            \
    static const ew_fn NAME[8] = {NAME##_000, NAME##_100, NAME##_010, NAME##_110,                 \
                                  NAME##_001, NAME##_101, NAME##_011, NAME##_111};
EW_WHERE(where_8, uint8_t)
EW_WHERE(where_16, uint16_t)
EW_WHERE(where_32, uint32_t)
EW_WHERE(where_64, uint64_t)

/* Copy a run (the operand advances) or fill it with one element (it repeats). */
#define EW_COPY(NAME, T)                                                                          \
    static void NAME##_fill(size_t n, void *restrict o_, const void *restrict a_,                 \
                            const void *restrict b_, const void *restrict c_, const ew_ctx *ctx)  \
    {                                                                                             \
        T *restrict o = o_;                                                                       \
        T v;                                                                                      \
        memcpy(&v, a_, sizeof v);                                                                 \
        (void)b_;                                                                                 \
        (void)c_;                                                                                 \
        (void)ctx;                                                                                \
        CPU_LOOP(n, o[i] = v;);                                                                   \
    }                                                                                             \
    static void NAME##_copy(size_t n, void *restrict o_, const void *restrict a_,                 \
                            const void *restrict b_, const void *restrict c_, const ew_ctx *ctx)  \
    {                                                                                             \
        (void)b_;                                                                                 \
        (void)c_;                                                                                 \
        (void)ctx;                                                                                \
        memcpy(o_, a_, n * sizeof(T));                                                            \
    }                                                                                             \
    static const ew_fn NAME[2] = {NAME##_fill, NAME##_copy};
EW_COPY(copy_8, uint8_t)
EW_COPY(copy_16, uint16_t)
EW_COPY(copy_32, uint32_t)
EW_COPY(copy_64, uint64_t)

static const ew_fn *copy_fns(size_t esize)
{
    switch (esize) {
    case 1: return copy_8;
    case 2: return copy_16;
    case 4: return copy_32;
    default: return copy_64;
    }
}

static const ew_fn *where_fns(size_t esize)
{
    switch (esize) {
    case 1: return where_8;
    case 2: return where_16;
    case 4: return where_32;
    default: return where_64;
    }
}

/* ---- Cast ----------------------------------------------------------------------------------- */

/* Every pair goes through LOAD (to a C arithmetic value) then STORE (to the destination's
 * representation): plain C conversions (float to int truncates toward zero), != 0 for bool,
 * float32 for the half types. */
#define LD_ID(x) (x)
#define LD_F16(x) cpu_f16_to_f32(x)
#define LD_BF16(x) cpu_bf16_to_f32(x)
#define ST_F32(v) ((float)(v))
#define ST_F16(v) cpu_f32_to_f16((float)(v))
#define ST_BF16(v) cpu_f32_to_bf16((float)(v))
#define ST_I8(v) ((int8_t)(v))
#define ST_U8(v) ((uint8_t)(v))
#define ST_I32(v) ((int32_t)(v))
#define ST_I64(v) ((int64_t)(v))
#define ST_BOOL(v) ((uint8_t)((v) != 0))
#define ST_F64(v) ((double)(v))
#define ST_I16(v) ((int16_t)(v))
#define ST_U16(v) ((uint16_t)(v))
#define ST_U32(v) ((uint32_t)(v))
#define ST_U64(v) ((uint64_t)(v))

#define EW_CAST(NAME, TS, LOAD, TD, STORE)                                                        \
    static void NAME(size_t n, void *restrict o_, const void *restrict a_,                        \
                     const void *restrict b_, const void *restrict c_, const ew_ctx *ctx)         \
    {                                                                                             \
        TD *restrict o = o_;                                                                      \
        const TS *restrict a = a_;                                                                \
        (void)b_;                                                                                 \
        (void)c_;                                                                                 \
        (void)ctx;                                                                                \
        CPU_LOOP(n, o[i] = STORE(LOAD(a[i])););                                                   \
    }
#define EW_CAST_ROW(SN, TS, LOAD)                                                                 \
    EW_CAST(cast_##SN##_f32, TS, LOAD, float, ST_F32)                                             \
    EW_CAST(cast_##SN##_f16, TS, LOAD, uint16_t, ST_F16)                                          \
    EW_CAST(cast_##SN##_bf16, TS, LOAD, uint16_t, ST_BF16)                                        \
    EW_CAST(cast_##SN##_i8, TS, LOAD, int8_t, ST_I8)                                              \
    EW_CAST(cast_##SN##_u8, TS, LOAD, uint8_t, ST_U8)                                             \
    EW_CAST(cast_##SN##_i32, TS, LOAD, int32_t, ST_I32)                                           \
    EW_CAST(cast_##SN##_i64, TS, LOAD, int64_t, ST_I64)                                           \
    EW_CAST(cast_##SN##_bool, TS, LOAD, uint8_t, ST_BOOL)                                         \
    EW_CAST(cast_##SN##_f64, TS, LOAD, double, ST_F64)                                            \
    EW_CAST(cast_##SN##_i16, TS, LOAD, int16_t, ST_I16)                                           \
    EW_CAST(cast_##SN##_u16, TS, LOAD, uint16_t, ST_U16)                                          \
    EW_CAST(cast_##SN##_u32, TS, LOAD, uint32_t, ST_U32)                                          \
    EW_CAST(cast_##SN##_u64, TS, LOAD, uint64_t, ST_U64)
EW_CAST_ROW(f32, float, LD_ID)
EW_CAST_ROW(f16, uint16_t, LD_F16)
EW_CAST_ROW(bf16, uint16_t, LD_BF16)
EW_CAST_ROW(i8, int8_t, LD_ID)
EW_CAST_ROW(u8, uint8_t, LD_ID)
EW_CAST_ROW(i32, int32_t, LD_ID)
EW_CAST_ROW(i64, int64_t, LD_ID)
EW_CAST_ROW(bool, uint8_t, LD_ID)
EW_CAST_ROW(f64, double, LD_ID)
EW_CAST_ROW(i16, int16_t, LD_ID)
EW_CAST_ROW(u16, uint16_t, LD_ID)
EW_CAST_ROW(u32, uint32_t, LD_ID)
EW_CAST_ROW(u64, uint64_t, LD_ID)

#define EW_CAST_TROW(SN)                                                                          \
    {cast_##SN##_f32, cast_##SN##_f16, cast_##SN##_bf16, cast_##SN##_i8,  cast_##SN##_u8,         \
     cast_##SN##_i32, cast_##SN##_i64, cast_##SN##_bool, cast_##SN##_f64, cast_##SN##_i16,        \
     cast_##SN##_u16, cast_##SN##_u32, cast_##SN##_u64}
#define EW_CAST_N 13
static const ew_fn cast_fns[EW_CAST_N][EW_CAST_N] = {
    EW_CAST_TROW(f32), EW_CAST_TROW(f16),  EW_CAST_TROW(bf16), EW_CAST_TROW(i8),
    EW_CAST_TROW(u8),  EW_CAST_TROW(i32),  EW_CAST_TROW(i64),  EW_CAST_TROW(bool),
    EW_CAST_TROW(f64), EW_CAST_TROW(i16),  EW_CAST_TROW(u16),  EW_CAST_TROW(u32),
    EW_CAST_TROW(u64)};

/* Row/column of cast_fns, or -1 for a dtype Cast does not handle. */
static int cast_index(loom_dtype t)
{
    switch (t) {
    case LOOM_DTYPE_F32: return 0;
    case LOOM_DTYPE_F16: return 1;
    case LOOM_DTYPE_BF16: return 2;
    case LOOM_DTYPE_I8: return 3;
    case LOOM_DTYPE_U8: return 4;
    case LOOM_DTYPE_I32: return 5;
    case LOOM_DTYPE_I64: return 6;
    case LOOM_DTYPE_BOOL: return 7;
    case LOOM_DTYPE_F64: return 8;
    case LOOM_DTYPE_I16: return 9;
    case LOOM_DTYPE_U16: return 10;
    case LOOM_DTYPE_U32: return 11;
    case LOOM_DTYPE_U64: return 12;
    default: return -1;
    }
}

/* ---- operator tables ------------------------------------------------------------------------ */

static int is_unary_float(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_RELU: case LOOM_OP_LEAKY_RELU: case LOOM_OP_SIGMOID: case LOOM_OP_TANH:
    case LOOM_OP_ERF: case LOOM_OP_GELU: case LOOM_OP_SQRT: case LOOM_OP_EXP: case LOOM_OP_LOG:
        return 1;
    default:
        return 0;
    }
}

static int is_libm(loom_op_id op)
{
    return op == LOOM_OP_LOG || op == LOOM_OP_POW;
}

/* The inline (vectorised) transcendentals: ~1-4 ns an element. */
static int is_transcendental(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_SIGMOID: case LOOM_OP_TANH: case LOOM_OP_ERF: case LOOM_OP_GELU:
    case LOOM_OP_EXP:
        return 1;
    default:
        return 0;
    }
}

/* Gelu's approximate attribute: 0 "none", 1 "tanh", -1 anything else. */
static int gelu_mode(const loom_node_desc *node)
{
    const loom_attr *a = loom_node_attr(node, "approximate");
    if (!a)
        return 0;
    if (a->kind != LOOM_ATTR_STRING || !a->s)
        return -1;
    if (strcmp(a->s, "none") == 0)
        return 0;
    if (strcmp(a->s, "tanh") == 0)
        return 1;
    return -1;
}

static ew_fn unary_fn(const loom_node_desc *node)
{
    const loom_dtype t = node->inputs[0].dtype;
    switch (node->op) {
    case LOOM_OP_RELU: return relu_f32;
    case LOOM_OP_LEAKY_RELU: return leaky_relu_f32;
    case LOOM_OP_SIGMOID: return sigmoid_f32;
    case LOOM_OP_TANH: return tanh_f32;
    case LOOM_OP_ERF: return erf_f32;
    case LOOM_OP_GELU: return gelu_mode(node) == 1 ? gelu_tanh_f32 : gelu_f32;
    case LOOM_OP_SQRT: return sqrt_f32;
    case LOOM_OP_EXP: return exp_f32;
    case LOOM_OP_LOG: return log_f32;
    case LOOM_OP_NEG:
        return t == LOOM_DTYPE_F32   ? neg_f32
               : t == LOOM_DTYPE_F64 ? neg_f64
               : t == LOOM_DTYPE_I32 ? neg_i32
                                     : neg_i64;
    case LOOM_OP_ABS:
        return t == LOOM_DTYPE_F32   ? abs_f32
               : t == LOOM_DTYPE_F64 ? abs_f64
               : t == LOOM_DTYPE_I32 ? abs_i32
                                     : abs_i64;
    case LOOM_OP_CLIP:
        return t == LOOM_DTYPE_F32  ? clip_f32
               : t == LOOM_DTYPE_I8 ? clip_i8
               : t == LOOM_DTYPE_U8 ? clip_u8
               : t == LOOM_DTYPE_I32 ? clip_i32
                                     : clip_i64;
    default: return NULL;
    }
}

/* The kernels of one dtype for Add, Sub, Mul, Div, Max, Min and the accumulating Max, Min. */
typedef struct ew_bin_row {
    loom_dtype t;
    const ew_fn *fns[6];
    const ew_fn *acc[2];
} ew_bin_row;

#define EW_BIN_ROW(T, SN)                                                                         \
    {T, {add_##SN, sub_##SN, mul_##SN, div_##SN, max_##SN, min_##SN}, {max_##SN##_acc, min_##SN##_acc}}
static const ew_bin_row bin_rows[] = {
    EW_BIN_ROW(LOOM_DTYPE_F32, f32), EW_BIN_ROW(LOOM_DTYPE_F64, f64),
    EW_BIN_ROW(LOOM_DTYPE_I8, i8),   EW_BIN_ROW(LOOM_DTYPE_U8, u8),
    EW_BIN_ROW(LOOM_DTYPE_I16, i16), EW_BIN_ROW(LOOM_DTYPE_U16, u16),
    EW_BIN_ROW(LOOM_DTYPE_I32, i32), EW_BIN_ROW(LOOM_DTYPE_U32, u32),
    EW_BIN_ROW(LOOM_DTYPE_I64, i64), EW_BIN_ROW(LOOM_DTYPE_U64, u64),
};

/* The four-variant table of a binary op for dtype T; the accumulating one in *ACC for Min/Max.
 * NULL for a dtype without kernels (supports() refused it). */
static const ew_fn *binary_fns(loom_op_id op, loom_dtype t, const ew_fn **acc)
{
    *acc = NULL;
    if (t == LOOM_DTYPE_F16) { /* Min and Max only */
        *acc = op == LOOM_OP_MAX ? max_f16_acc : op == LOOM_OP_MIN ? min_f16_acc : NULL;
        return op == LOOM_OP_MAX ? max_f16 : op == LOOM_OP_MIN ? min_f16 : NULL;
    }
    const ew_bin_row *r = NULL;
    for (size_t i = 0; i < sizeof bin_rows / sizeof bin_rows[0]; i++)
        if (bin_rows[i].t == t)
            r = &bin_rows[i];
    if (!r)
        return NULL;
    switch (op) {
    case LOOM_OP_ADD: return r->fns[0];
    case LOOM_OP_SUB: return r->fns[1];
    case LOOM_OP_MUL: return r->fns[2];
    case LOOM_OP_DIV: return r->fns[3];
    case LOOM_OP_MAX:
        *acc = r->acc[0];
        return r->fns[4];
    case LOOM_OP_MIN:
        *acc = r->acc[1];
        return r->fns[5];
    default: return NULL;
    }
}

/* ---- supports ------------------------------------------------------------------------------- */

static int no_dtype(const loom_node_desc *node, loom_dtype t, const char *only, char *reason,
                    size_t len)
{
    cpu_reason(reason, len, "%s: dtype %s has no CPU kernel (only %s)", node->op_name,
               cpu_dtype_name(t), only);
    return 0;
}

static int ew_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_outputs < 1 || node->n_inputs < 1) {
        cpu_reason(reason, len, "%s: expects at least one input and one output", op);
        return 0;
    }
    const loom_tensor_desc *y = &node->outputs[0];
    const loom_tensor_desc *x = &node->inputs[0];
    if (node->n_inputs > 1 && node->op != LOOM_OP_MIN && node->op != LOOM_OP_MAX &&
        node->op != LOOM_OP_CLIP && node->op != LOOM_OP_WHERE && node->op != LOOM_OP_EXPAND) {
        int binary = node->op == LOOM_OP_ADD || node->op == LOOM_OP_SUB ||
                     node->op == LOOM_OP_MUL || node->op == LOOM_OP_DIV || node->op == LOOM_OP_POW;
        if (!binary || node->n_inputs != 2) {
            cpu_reason(reason, len, "%s: unexpected number of inputs (%u)", op, node->n_inputs);
            return 0;
        }
    }
    if (is_unary_float(node->op)) {
        if (x->dtype != LOOM_DTYPE_F32)
            return no_dtype(node, x->dtype, "float32", reason, len);
        if (node->op == LOOM_OP_GELU && gelu_mode(node) < 0) {
            cpu_reason(reason, len, "%s: approximate must be \"none\" or \"tanh\"", op);
            return 0;
        }
    } else {
        switch (node->op) {
        case LOOM_OP_NEG: case LOOM_OP_ABS: case LOOM_OP_CLIP:
            if (node->op != LOOM_OP_CLIP && !is_signed_num(x->dtype))
                return no_dtype(node, x->dtype, "float32, float64, int32, int64", reason, len);
            if (node->op == LOOM_OP_CLIP && !is_num(x->dtype) && x->dtype != LOOM_DTYPE_I8 &&
                x->dtype != LOOM_DTYPE_U8)
                return no_dtype(node, x->dtype, "float32, int8, uint8, int32, int64", reason,
                                len);
            for (uint32_t i = 1; i < node->n_inputs && i < 3; i++) {
                if (!cpu_present(node, i))
                    continue;
                if (node->inputs[i].dtype != x->dtype ||
                    loom_tensor_desc_numel(&node->inputs[i]) != 1) {
                    cpu_reason(reason, len, "%s: %s must be a scalar of the input's dtype", op,
                               i == 1 ? "min" : "max");
                    return 0;
                }
            }
            if (node->op == LOOM_OP_CLIP && node->n_inputs > 3) {
                cpu_reason(reason, len, "%s: unexpected number of inputs (%u)", op,
                           node->n_inputs);
                return 0;
            }
            break;
        case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_DIV:
        case LOOM_OP_MIN: case LOOM_OP_MAX:
            for (uint32_t i = 0; i < node->n_inputs; i++) {
                const loom_tensor_desc *in = &node->inputs[i];
                if (!is_binary_num(in->dtype) &&
                    !(in->dtype == LOOM_DTYPE_F16 &&
                      (node->op == LOOM_OP_MIN || node->op == LOOM_OP_MAX)))
                    return no_dtype(node, in->dtype,
                                    "float32, float64, float16 (Min, Max) and the integers",
                                    reason, len);
                if (in->dtype != y->dtype) {
                    cpu_reason(reason, len, "%s: inputs of different dtypes (%s, %s)", op,
                               cpu_dtype_name(in->dtype), cpu_dtype_name(y->dtype));
                    return 0;
                }
                if (!cpu_broadcasts_to(in, y)) {
                    cpu_reason(reason, len, "%s: input %u does not broadcast to the output", op,
                               i);
                    return 0;
                }
            }
            if (node->n_inputs < 2 && node->op != LOOM_OP_MIN && node->op != LOOM_OP_MAX) {
                cpu_reason(reason, len, "%s: expects two inputs", op);
                return 0;
            }
            return 1;
        case LOOM_OP_POW:
            if (x->dtype != LOOM_DTYPE_F32 && x->dtype != LOOM_DTYPE_I32 &&
                x->dtype != LOOM_DTYPE_I64)
                return no_dtype(node, x->dtype, "float32, int32, int64", reason, len);
            if (node->n_inputs != 2 || !pow_fns(x->dtype, node->inputs[1].dtype)) {
                cpu_reason(reason, len,
                           "%s: exponent must be float32 or an integer (int8 to uint64)", op);
                return 0;
            }
            if (!cpu_broadcasts_to(x, y) || !cpu_broadcasts_to(&node->inputs[1], y)) {
                cpu_reason(reason, len, "%s: inputs do not broadcast to the output", op);
                return 0;
            }
            return 1;
        case LOOM_OP_WHERE:
            if (node->n_inputs != 3) {
                cpu_reason(reason, len, "%s: expects three inputs", op);
                return 0;
            }
            if (x->dtype != LOOM_DTYPE_BOOL) {
                cpu_reason(reason, len, "%s: condition must be bool, not %s", op,
                           cpu_dtype_name(x->dtype));
                return 0;
            }
            if (loom_dtype_size(y->dtype) == 0 || node->inputs[1].dtype != y->dtype ||
                node->inputs[2].dtype != y->dtype)
                return no_dtype(node, node->inputs[1].dtype, "X and Y of one known dtype",
                                reason, len);
            for (uint32_t i = 0; i < 3; i++)
                if (!cpu_broadcasts_to(&node->inputs[i], y)) {
                    cpu_reason(reason, len, "%s: input %u does not broadcast to the output", op,
                               i);
                    return 0;
                }
            return 1;
        case LOOM_OP_CAST:
            if (cast_index(x->dtype) < 0)
                return no_dtype(node, x->dtype,
                                "the numeric dtypes and bool",
                                reason, len);
            if (cast_index(y->dtype) < 0)
                return no_dtype(node, y->dtype,
                                "the numeric dtypes and bool",
                                reason, len);
            break;
        case LOOM_OP_IDENTITY:
            if (loom_dtype_size(x->dtype) == 0 || x->dtype != y->dtype)
                return no_dtype(node, x->dtype, "known dtypes", reason, len);
            break;
        case LOOM_OP_EXPAND:
            if (loom_dtype_size(x->dtype) == 0 || x->dtype != y->dtype)
                return no_dtype(node, x->dtype, "known dtypes", reason, len);
            if (!cpu_broadcasts_to(x, y)) {
                cpu_reason(reason, len, "%s: input does not broadcast to the output", op);
                return 0;
            }
            return 1;
        default:
            cpu_reason(reason, len, "%s: not an elementwise operator", op);
            return 0;
        }
    }
    /* Unary and Cast: one input of the output's shape. */
    if (!cpu_same_shape(x, y)) {
        cpu_reason(reason, len, "%s: output shape differs from the input's", op);
        return 0;
    }
    if (node->op != LOOM_OP_CAST && node->op != LOOM_OP_IDENTITY && x->dtype != y->dtype) {
        cpu_reason(reason, len, "%s: output dtype differs from the input's", op);
        return 0;
    }
    return 1;
}

/* ---- run ------------------------------------------------------------------------------------ */

/* Clip's bound I (1 min, 2 max) when the node has it, read now because it may be computed. */
static void clip_bounds(const cpu_kernel *k, const loom_exec_args *args, ew_ctx *ctx)
{
    for (uint32_t i = 1; i < 3 && i < k->n_in; i++) {
        const void *v = args->inputs[i];
        if (!v || k->in[i].dtype == LOOM_DTYPE_UNDEFINED)
            continue;
        float f = 0;
        int64_t n = 0;
        switch (k->in[i].dtype) {
        case LOOM_DTYPE_F32: memcpy(&f, v, sizeof f); break;
        case LOOM_DTYPE_I32: {
            int32_t t;
            memcpy(&t, v, sizeof t);
            n = t;
            break;
        }
        case LOOM_DTYPE_I8: n = *(const int8_t *)v; break;
        case LOOM_DTYPE_U8: n = *(const uint8_t *)v; break;
        default: memcpy(&n, v, sizeof n); break;
        }
        if (i == 1) {
            ctx->lo_f = f;
            ctx->lo_i = n;
        } else {
            ctx->hi_f = f;
            ctx->hi_i = n;
        }
    }
}

static loom_status ew_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const ew_params *p = k->params;
    if (p->numel == 0)
        return LOOM_OK;
    atomic_int fault = 0;
    ew_ctx ctx = p->ctx;
    ctx.fault = &fault;
    if (p->clip)
        clip_bounds(k, args, &ctx);
    ew_job job = {.out = args->outputs[0], .out_esize = p->out_esize, .ctx = &ctx};
    if (p->flat) {
        job.fn = p->flat;
        job.in[0] = args->inputs[0];
        job.in_esize = p->in_esize;
        cpu_parallel_for(pool, (size_t)p->numel, p->grain, ew_flat, &job);
        return LOOM_OK;
    }
    for (uint32_t s = 0; s < p->n_passes; s++) {
        const ew_pass *pass = &p->passes[s];
        job.plan = &pass->plan;
        job.fn = pass->fn;
        for (uint32_t o = 0; o < pass->plan.n_ops; o++)
            job.in[o] = pass->src[o] < 0 ? (const char *)args->outputs[0]
                                         : (const char *)args->inputs[pass->src[o]];
        cpu_parallel_for(pool, (size_t)p->numel, p->grain, ew_walk, &job);
    }
    if (atomic_load_explicit(&fault, memory_order_relaxed))
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "Div: integer division by zero");
    return LOOM_OK;
}

/* ---- prepare -------------------------------------------------------------------------------- */

static ew_params *params_new(const cpu_kernel *k, uint32_t n_passes)
{
    ew_params *p = calloc(1, sizeof *p + n_passes * sizeof(ew_pass));
    if (!p)
        return NULL;
    p->numel = loom_tensor_desc_numel(&k->out[0]);
    p->out_esize = loom_dtype_size(k->out[0].dtype);
    p->in_esize = loom_dtype_size(k->in[0].dtype);
    p->n_passes = n_passes;
    p->grain = EW_GRAIN_CHEAP;
    p->ctx.lo_f = -INFINITY;
    p->ctx.hi_f = INFINITY;
    p->ctx.lo_i = INT64_MIN;
    p->ctx.hi_i = INT64_MAX;
    return p;
}

/* A Clip bound from the float attribute, for an integer input: the tightest integer bound,
 * saturated to T's range [TMIN, TMAX]. */
static int64_t int_bound(float f, int is_min, int64_t tmin, int64_t tmax)
{
    if (isnan(f))
        return is_min ? tmin : tmax;
    double v = is_min ? ceil((double)f) : floor((double)f);
    if (v <= (double)tmin)
        return tmin;
    if (v >= (double)tmax)
        return tmax;
    return (int64_t)v;
}

static void pass_set(ew_pass *pass, const loom_tensor_desc *out, uint32_t n,
                     const loom_tensor_desc *const *ops, const int32_t *src)
{
    cpu_bcast_build(&pass->plan, out, n, ops);
    for (uint32_t o = 0; o < n; o++)
        pass->src[o] = src[o];
}

/* Whether input I is a constant scalar equal to V. */
static int const_scalar_is(const loom_node_desc *node, uint32_t i, float v)
{
    if (!node->input_constants || !node->input_constants[i] ||
        node->inputs[i].dtype != LOOM_DTYPE_F32 || loom_tensor_desc_numel(&node->inputs[i]) != 1)
        return 0;
    float f;
    memcpy(&f, node->input_constants[i], sizeof f);
    return f == v;
}

static loom_status ew_prepare(const loom_node_desc *node, cpu_kernel *k, char *err, size_t err_len)
{
    const loom_tensor_desc *y = &k->out[0];
    const loom_op_id op = node->op;
    const uint32_t n_passes = (op == LOOM_OP_MIN || op == LOOM_OP_MAX) && node->n_inputs > 2
                                  ? node->n_inputs - 1
                                  : 1;
    ew_params *p = params_new(k, n_passes);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    if (is_libm(op))
        p->grain = EW_GRAIN_LIBM;
    else if (is_transcendental(op))
        p->grain = EW_GRAIN_CALL;
    const loom_tensor_desc *ops[EW_MAX_IN];
    const int32_t src012[EW_MAX_IN] = {0, 1, 2};
    switch (op) {
    case LOOM_OP_IDENTITY:
        p->flat = copy_fns(p->out_esize)[1];
        break;
    case LOOM_OP_CAST: {
        const int si = cast_index(k->in[0].dtype), di = cast_index(y->dtype);
        p->flat = si == di ? copy_fns(p->out_esize)[1] : cast_fns[si][di];
        if (si == 1 || si == 2 || di == 1 || di == 2)
            p->grain = EW_GRAIN_CALL;
        break;
    }
    case LOOM_OP_EXPAND:
        ops[0] = &k->in[0];
        pass_set(&p->passes[0], y, 1, ops, src012);
        p->passes[0].fn = copy_fns(p->out_esize)[p->passes[0].plan.inner_mask & 1];
        break;
    case LOOM_OP_WHERE:
        for (uint32_t i = 0; i < 3; i++)
            ops[i] = &k->in[i];
        pass_set(&p->passes[0], y, 3, ops, src012);
        p->passes[0].fn = where_fns(p->out_esize)[p->passes[0].plan.inner_mask];
        break;
    case LOOM_OP_POW: {
        const loom_dtype te = k->in[1].dtype;
        const ew_fn *fns = k->in[0].dtype == LOOM_DTYPE_F32 && te == LOOM_DTYPE_F32 &&
                                   const_scalar_is(node, 1, 2.0f)
                               ? square_f32
                               : pow_fns(k->in[0].dtype, te);
        ops[0] = &k->in[0];
        ops[1] = &k->in[1];
        pass_set(&p->passes[0], y, 2, ops, src012);
        p->passes[0].fn = fns[p->passes[0].plan.inner_mask];
        break;
    }
    case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_DIV:
    case LOOM_OP_MIN: case LOOM_OP_MAX: {
        const ew_fn *acc;
        const ew_fn *fns = binary_fns(op, y->dtype, &acc);
        if (op == LOOM_OP_DIV && y->dtype != LOOM_DTYPE_F32)
            p->grain = EW_GRAIN_CALL;
        if (node->n_inputs == 1) { /* Min/Max of one input: a copy */
            ops[0] = &k->in[0];
            pass_set(&p->passes[0], y, 1, ops, src012);
            p->passes[0].fn = copy_fns(p->out_esize)[p->passes[0].plan.inner_mask & 1];
            break;
        }
        ops[0] = &k->in[0];
        ops[1] = &k->in[1];
        pass_set(&p->passes[0], y, 2, ops, src012);
        p->passes[0].fn = fns[p->passes[0].plan.inner_mask];
        for (uint32_t s = 1; s < n_passes; s++) {
            const int32_t src[2] = {-1, (int32_t)s + 1};
            ops[0] = y;
            ops[1] = &k->in[s + 1];
            pass_set(&p->passes[s], y, 2, ops, src);
            p->passes[s].fn = acc[p->passes[s].plan.inner_mask];
        }
        break;
    }
    default: /* unary, Clip */
        p->flat = unary_fn(node);
        if (op == LOOM_OP_LEAKY_RELU)
            p->ctx.alpha = loom_node_attr_float(node, "alpha", 0.01f);
        if (op == LOOM_OP_CLIP) {
            p->clip = 1;
            p->ctx.lo_f = loom_node_attr_float(node, "min", -INFINITY);
            p->ctx.hi_f = loom_node_attr_float(node, "max", INFINITY);
            const loom_dtype t = y->dtype;
            const int64_t tmin = t == LOOM_DTYPE_I8    ? INT8_MIN
                                 : t == LOOM_DTYPE_U8  ? 0
                                 : t == LOOM_DTYPE_I32 ? INT32_MIN
                                                       : INT64_MIN;
            const int64_t tmax = t == LOOM_DTYPE_I8    ? INT8_MAX
                                 : t == LOOM_DTYPE_U8  ? UINT8_MAX
                                 : t == LOOM_DTYPE_I32 ? INT32_MAX
                                                       : INT64_MAX;
            p->ctx.lo_i = int_bound(p->ctx.lo_f, 1, tmin, tmax);
            p->ctx.hi_i = int_bound(p->ctx.hi_f, 0, tmin, tmax);
        }
        break;
    }
    k->params = p;
    k->free_params = NULL;
    k->scratch_bytes = 0;
    k->run = ew_run;
    return LOOM_OK;
}

void cpu_register_elementwise(cpu_op_entry *table)
{
    static const loom_op_id ops[] = {
        LOOM_OP_RELU, LOOM_OP_LEAKY_RELU, LOOM_OP_SIGMOID, LOOM_OP_TANH,  LOOM_OP_ERF,
        LOOM_OP_GELU, LOOM_OP_SQRT,       LOOM_OP_EXP,     LOOM_OP_LOG,   LOOM_OP_NEG,
        LOOM_OP_ABS,  LOOM_OP_IDENTITY,   LOOM_OP_ADD,     LOOM_OP_SUB,   LOOM_OP_MUL,
        LOOM_OP_DIV,  LOOM_OP_POW,        LOOM_OP_MIN,     LOOM_OP_MAX,   LOOM_OP_CLIP,
        LOOM_OP_WHERE, LOOM_OP_CAST,      LOOM_OP_EXPAND,
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        table[ops[i]].supports = ew_supports;
        table[ops[i]].prepare = ew_prepare;
    }
}
