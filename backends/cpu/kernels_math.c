/*
 * CPU kernels of the elementwise math added for operator coverage (graph/ops_math.c): Tan,
 * Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh, Atanh, Softsign, ThresholdedRelu, Shrink, Celu
 * (float32, through libm in double), IsNaN and IsInf (float32 to bool), Mod (float32, float64
 * and every integer, broadcast) and BitShift (unsigned, broadcast). None of them is hot in the models Loom
 * targets: plain loops, split over the pool.
 */
#include "cpu_bcast.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- unary ---------------------------------------------------------------------------------- */

typedef struct mu_params {
    loom_op_id op;
    float alpha, beta; /* ThresholdedRelu/Celu alpha; Shrink bias (alpha) and lambd (beta) */
    int neg, pos;      /* IsInf */
    loom_dtype dt;
} mu_params;

typedef struct mu_job {
    const mu_params *p;
    const void *x;
    void *y;
} mu_job;

static double mu_apply(const mu_params *p, double v)
{
    switch (p->op) {
    case LOOM_OP_TAN: return tan(v);
    case LOOM_OP_ASIN: return asin(v);
    case LOOM_OP_ACOS: return acos(v);
    case LOOM_OP_ATAN: return atan(v);
    case LOOM_OP_SINH: return sinh(v);
    case LOOM_OP_COSH: return cosh(v);
    case LOOM_OP_ASINH: return asinh(v);
    case LOOM_OP_ACOSH: return acosh(v);
    case LOOM_OP_ATANH: return atanh(v);
    case LOOM_OP_SOFTSIGN: return v / (1.0 + fabs(v));
    case LOOM_OP_THRESHOLDED_RELU: return v > (double)p->alpha ? v : 0.0;
    case LOOM_OP_CELU: {
        const double a = (double)p->alpha;
        return fmax(0.0, v) + fmin(0.0, a * expm1(v / a));
    }
    case LOOM_OP_SHRINK: {
        const double bias = (double)p->alpha, l = (double)p->beta;
        return v < -l ? v + bias : v > l ? v - bias : 0.0;
    }
    default: return v;
    }
}

#define MU_LOOP(T)                                                                                 \
    do {                                                                                           \
        const T *x = (const T *)j->x + b;                                                          \
        T *y = (T *)j->y + b;                                                                      \
        for (size_t i = 0; i < e - b; i++)                                                         \
            y[i] = (T)mu_apply(p, (double)x[i]);                                                   \
    } while (0)

static void mu_task(void *arg, size_t b, size_t e)
{
    const mu_job *j = arg;
    const mu_params *p = j->p;
    if (p->op == LOOM_OP_IS_NAN || p->op == LOOM_OP_IS_INF) {
        const float *x = (const float *)j->x + b;
        uint8_t *y = (uint8_t *)j->y + b;
        for (size_t i = 0; i < e - b; i++)
            y[i] = p->op == LOOM_OP_IS_NAN ? isnan(x[i]) != 0
                                           : isinf(x[i]) && (x[i] > 0 ? p->pos : p->neg);
        return;
    }
    switch (p->dt) {
    case LOOM_DTYPE_F32: MU_LOOP(float); break;
    case LOOM_DTYPE_I8: MU_LOOP(int8_t); break;
    case LOOM_DTYPE_U8: MU_LOOP(uint8_t); break;
    case LOOM_DTYPE_I32: MU_LOOP(int32_t); break;
    case LOOM_DTYPE_I64: MU_LOOP(int64_t); break;
    default: break;
    }
}

static loom_status mu_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    mu_job j = {k->params, args->inputs[0], args->outputs[0]};
    const int64_t n = loom_tensor_desc_numel(&k->out[0]);
    if (n > 0)
        cpu_parallel_for(pool, (size_t)n, cpu_grain(8), mu_task, &j);
    return LOOM_OK;
}

static int mu_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (node->op == LOOM_OP_SHRINK) {
        if (t != LOOM_DTYPE_F32 && !cpu_is_f32_i32_i64(t) && t != LOOM_DTYPE_I8 &&
            t != LOOM_DTYPE_U8)
            return cpu_no_dtype(node, t, "float32, int8, uint8, int32, int64", reason, len);
    } else if (t != LOOM_DTYPE_F32) {
        return cpu_no_dtype(node, t, "float32", reason, len);
    }
    if (!cpu_same_shape(&node->inputs[0], &node->outputs[0]))
        return cpu_reason(reason, len, "%s: output shape differs from the input's",
                          node->op_name);
    return 1;
}

static loom_status mu_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    mu_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->op = node->op;
    p->dt = node->inputs[0].dtype;
    if (node->op == LOOM_OP_SHRINK) {
        p->alpha = loom_node_attr_float(node, "bias", 0.0f);
        p->beta = loom_node_attr_float(node, "lambd", 0.5f);
    } else {
        p->alpha = loom_node_attr_float(node, "alpha", 1.0f);
    }
    p->neg = loom_node_attr_int(node, "detect_negative", 1) != 0;
    p->pos = loom_node_attr_int(node, "detect_positive", 1) != 0;
    k->params = p;
    k->run = mu_run;
    return LOOM_OK;
}

/* ---- binary: Mod, BitShift ------------------------------------------------------------------ */

typedef struct mb_params {
    cpu_bcast_plan plan;
    loom_op_id op;
    loom_dtype dt;
    int fmod, left;
    size_t esize;
} mb_params;

typedef struct mb_job {
    const mb_params *p;
    const char *a, *b;
    char *y;
} mb_job;

/* Integer Mod: fmod=1 is C's % (the dividend's sign); fmod=0 gives the divisor's sign
 * (Python's %). x % 0 is 0 rather than a trap. */
#define IMOD_FN(T)                                                                                 \
    static inline T imod_##T(T a, T b, int fm)                                                     \
    {                                                                                              \
        if (b == 0)                                                                                \
            return 0;                                                                              \
        if (b == -1)                                                                               \
            return 0; /* also INT_MIN % -1, which C leaves undefined */                            \
        T r = (T)(a % b);                                                                          \
        if (!fm && r != 0 && ((r < 0) != (b < 0)))                                                 \
            r = (T)(r + b);                                                                        \
        return r;                                                                                  \
    }
IMOD_FN(int8_t)
IMOD_FN(int16_t)
IMOD_FN(int32_t)
IMOD_FN(int64_t)
#define IMOD(T, A, B) imod_##T(A, B, fm)

#define MB_RUN(T, EXPR)                                                                            \
    do {                                                                                           \
        const T *restrict a = (const T *)pa;                                                       \
        const T *restrict bb = (const T *)pb;                                                      \
        T *restrict y = (T *)py;                                                                   \
        for (int64_t i = 0; i < n; i++) {                                                          \
            const T va = a[i * sa], vb = bb[i * sb];                                               \
            y[i] = (EXPR);                                                                         \
        }                                                                                          \
    } while (0)

/* One innermost run of N outputs; SA/SB are element strides (0 or 1). */
static void mb_inner(const mb_params *p, const char *pa, const char *pb, char *py, int64_t n,
                     int64_t sa, int64_t sb)
{
    const int fm = p->fmod, left = p->left;
    if (p->op == LOOM_OP_BIT_SHIFT) {
        switch (p->dt) {
        case LOOM_DTYPE_U8:
            MB_RUN(uint8_t, vb >= 8 ? 0 : left ? (uint8_t)(va << vb) : (uint8_t)(va >> vb));
            break;
        case LOOM_DTYPE_U16:
            MB_RUN(uint16_t, vb >= 16 ? 0 : left ? (uint16_t)(va << vb) : (uint16_t)(va >> vb));
            break;
        case LOOM_DTYPE_U32:
            MB_RUN(uint32_t, vb >= 32 ? 0 : left ? (uint32_t)(va << vb) : (uint32_t)(va >> vb));
            break;
        case LOOM_DTYPE_U64:
            MB_RUN(uint64_t, vb >= 64 ? 0 : left ? (uint64_t)(va << vb) : (uint64_t)(va >> vb));
            break;
        default: break;
        }
        return;
    }
    switch (p->dt) {
    case LOOM_DTYPE_F32: MB_RUN(float, fmodf(va, vb)); break;
    case LOOM_DTYPE_I8: MB_RUN(int8_t, IMOD(int8_t, va, vb)); break;
    case LOOM_DTYPE_U8: MB_RUN(uint8_t, vb == 0 ? 0 : (uint8_t)(va % vb)); break;
    case LOOM_DTYPE_I32: MB_RUN(int32_t, IMOD(int32_t, va, vb)); break;
    case LOOM_DTYPE_I64: MB_RUN(int64_t, IMOD(int64_t, va, vb)); break;
    case LOOM_DTYPE_F64: MB_RUN(double, fmod(va, vb)); break;
    case LOOM_DTYPE_F16: /* fmod is exact: the float32 result is a float16 value */
        MB_RUN(uint16_t, cpu_f32_to_f16(fmodf(cpu_f16_to_f32(va), cpu_f16_to_f32(vb))));
        break;
    case LOOM_DTYPE_I16: MB_RUN(int16_t, IMOD(int16_t, va, vb)); break;
    case LOOM_DTYPE_U16: MB_RUN(uint16_t, vb == 0 ? 0 : (uint16_t)(va % vb)); break;
    case LOOM_DTYPE_U32: MB_RUN(uint32_t, vb == 0 ? 0 : va % vb); break;
    case LOOM_DTYPE_U64: MB_RUN(uint64_t, vb == 0 ? 0 : va % vb); break;
    default: break;
    }
}

/* Outer positions [o0, o1) of the plan (all dims but the innermost), each one innermost run. */
static void mb_task(void *arg, size_t o0, size_t o1)
{
    const mb_job *j = arg;
    const mb_params *p = j->p;
    const cpu_bcast_plan *pl = &p->plan;
    const uint32_t r = pl->rank;
    const int64_t run = pl->dims[r - 1];
    const int64_t sa = pl->strides[0][r - 1] ? 1 : 0, sb = pl->strides[1][r - 1] ? 1 : 0;
    for (size_t o = o0; o < o1; o++) {
        size_t rem = o;
        int64_t offa = 0, offb = 0;
        for (uint32_t d = r - 1; d-- > 0;) {
            const int64_t i = (int64_t)(rem % (size_t)pl->dims[d]);
            rem /= (size_t)pl->dims[d];
            offa += i * pl->strides[0][d];
            offb += i * pl->strides[1][d];
        }
        mb_inner(p, j->a + offa, j->b + offb, j->y + (int64_t)o * run * (int64_t)p->esize, run,
                 sa, sb);
    }
}

static loom_status mb_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const mb_params *p = k->params;
    if (loom_tensor_desc_numel(&k->out[0]) == 0)
        return LOOM_OK;
    mb_job j = {p, args->inputs[0], args->inputs[1], args->outputs[0]};
    int64_t outer = 1;
    for (uint32_t d = 0; d + 1 < p->plan.rank; d++)
        outer *= p->plan.dims[d];
    cpu_parallel_for(pool, (size_t)outer, cpu_grain(p->plan.dims[p->plan.rank - 1]), mb_task,
                     &j);
    return LOOM_OK;
}

static int mb_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (node->op == LOOM_OP_BIT_SHIFT) {
        if (t != LOOM_DTYPE_U8 && t != LOOM_DTYPE_U16 && t != LOOM_DTYPE_U32 &&
            t != LOOM_DTYPE_U64)
            return cpu_no_dtype(node, t, "uint8, uint16, uint32, uint64", reason, len);
    } else if (!cpu_is_f32_i32_i64(t) && t != LOOM_DTYPE_I8 && t != LOOM_DTYPE_U8 &&
               t != LOOM_DTYPE_F64 && t != LOOM_DTYPE_I16 && t != LOOM_DTYPE_U16 &&
               t != LOOM_DTYPE_U32 && t != LOOM_DTYPE_U64 &&
               !(t == LOOM_DTYPE_F16 && node->op == LOOM_OP_MOD)) {
        return cpu_no_dtype(node, t, "float32, float64, float16 (Mod) and the integers",
                            reason, len);
    }
    if (node->inputs[1].dtype != t || node->outputs[0].dtype != t ||
        !cpu_broadcasts_to(&node->inputs[0], &node->outputs[0]) ||
        !cpu_broadcasts_to(&node->inputs[1], &node->outputs[0]))
        return cpu_reason(reason, len, "%s: the output is not the broadcast of the inputs",
                          node->op_name);
    return 1;
}

static loom_status mb_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    mb_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *ops[2] = {&k->in[0], &k->in[1]};
    cpu_bcast_build(&p->plan, &k->out[0], 2, ops);
    p->op = node->op;
    p->dt = node->inputs[0].dtype;
    p->esize = loom_dtype_size(p->dt);
    p->fmod = loom_node_attr_int(node, "fmod", 0) != 0;
    p->left = !strcmp(cpu_str_attr(node, "direction", "LEFT"), "LEFT");
    k->params = p;
    k->run = mb_run;
    return LOOM_OK;
}

void cpu_register_math(cpu_op_entry *table)
{
    static const loom_op_id unary[] = {
        LOOM_OP_TAN,      LOOM_OP_ASIN,  LOOM_OP_ACOS,  LOOM_OP_ATAN,
        LOOM_OP_SINH,     LOOM_OP_COSH,  LOOM_OP_ASINH, LOOM_OP_ACOSH,
        LOOM_OP_ATANH,    LOOM_OP_SOFTSIGN, LOOM_OP_THRESHOLDED_RELU, LOOM_OP_SHRINK,
        LOOM_OP_CELU,     LOOM_OP_IS_NAN, LOOM_OP_IS_INF,
    };
    for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++)
        table[unary[i]] = (cpu_op_entry){mu_supports, mu_prepare};
    table[LOOM_OP_MOD] = (cpu_op_entry){mb_supports, mb_prepare};
    table[LOOM_OP_BIT_SHIFT] = (cpu_op_entry){mb_supports, mb_prepare};
}
