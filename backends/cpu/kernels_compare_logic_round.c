/*
 * CPU kernels of the ABI 0.2 elementwise operators: comparisons (Equal, Less, Greater,
 * LessOrEqual, GreaterOrEqual) and logic (And, Or, Xor, Not) with broadcasting; rounding and
 * unary math (Floor, Ceil, Round, Reciprocal, Sign, Sin, Cos); the activations HardSigmoid,
 * HardSwish, Softplus, Elu and Selu; Sum and Mean (variadic, broadcasting). They share one
 * broadcast planner and one operator table; the ABI 0.1 elementwise ops (Relu ... Log, Add ...
 * Max, Clip, Where, Cast, Expand, Identity) are in kernels_elementwise.c.
 *
 * Broadcasting is planned at prepare time the way kernels_elementwise.c does it (this file has
 * its own small planner): size-1 output dims dropped, adjacent dims merged where every operand
 * allows, byte strides that are 0 where an operand repeats; run() hands contiguous runs to one
 * of four loops per operator (each operand advancing or not along the run).
 */
#include "cpu_bcast.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- broadcasting plans --------------------------------------------------------------------- */

typedef struct k2_ctx {
    float alpha, beta, gamma; /* unary parameters */
} k2_ctx;

/* A contiguous run of N outputs from operands A and B. */
typedef void (*k2_fn)(size_t n, void *restrict o, const void *restrict a, const void *restrict b,
                      const k2_ctx *ctx);

/* The shared broadcast planner (cpu_bcast.c); two operands at most here. */
typedef cpu_bcast_plan bc_plan;

typedef struct bc_job {
    const bc_plan *plan;
    k2_fn fn;
    char *out;
    const char *in[2];
    size_t out_esize;
    const k2_ctx *ctx;
} bc_job;

/* Output elements [BEGIN, END) of a plan; a chunk may start and end inside a run. */
static void bc_walk(void *arg, size_t begin, size_t end)
{
    const bc_job *j = arg;
    const bc_plan *p = j->plan;
    const uint32_t outer = p->rank - 1, n = p->n_ops;
    const size_t inner = (size_t)p->dims[outer];
    int64_t coord[LOOM_MAX_RANK] = {0};
    int64_t row_off[2] = {0, 0};
    size_t row = begin / inner, col = begin % inner;
    for (uint32_t d = outer; d-- > 0;) {
        coord[d] = (int64_t)(row % (size_t)p->dims[d]);
        row /= (size_t)p->dims[d];
        for (uint32_t k = 0; k < n; k++)
            row_off[k] += coord[d] * p->strides[k][d];
    }
    const char *in[2] = {NULL, NULL};
    size_t i = begin;
    for (;;) {
        size_t len = inner - col;
        if (len > end - i)
            len = end - i;
        for (uint32_t k = 0; k < n; k++)
            in[k] = j->in[k] + row_off[k] + (int64_t)col * p->strides[k][outer];
        j->fn(len, j->out + i * j->out_esize, in[0], in[1], j->ctx);
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

/* ---- unary loops ---------------------------------------------------------------------------- */

#define K2_UNARY(NAME, TI, TO, EXPR)                                                              \
    static void NAME(size_t n, void *restrict o_, const void *restrict a_,                        \
                     const void *restrict b_, const k2_ctx *ctx)                                  \
    {                                                                                             \
        TO *restrict o = o_;                                                                      \
        const TI *restrict a = a_;                                                                \
        const float alpha = ctx->alpha, beta = ctx->beta, gamma = ctx->gamma;                     \
        (void)b_;                                                                                 \
        (void)alpha;                                                                              \
        (void)beta;                                                                               \
        (void)gamma;                                                                              \
        CPU_LOOP(n, const TI x = a[i]; o[i] = (EXPR););                                           \
    }

static inline float clamp01(float v)
{
    return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
}

/* log(1 + e^x) without overflow for large x. */
static inline float softplus(float x)
{
    return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
}

K2_UNARY(hard_sigmoid_f32, float, float, clamp01(alpha * x + beta))
K2_UNARY(hard_swish_f32, float, float, x * clamp01(x * (1.0f / 6.0f) + 0.5f))
K2_UNARY(reciprocal_f32, float, float, 1.0f / x)
K2_UNARY(floor_f32, float, float, floorf(x))
K2_UNARY(ceil_f32, float, float, ceilf(x))
/* rintf rounds half to even in the default rounding mode, which Loom never changes. */
K2_UNARY(round_f32, float, float, rintf(x))
K2_UNARY(sin_f32, float, float, sinf(x))
K2_UNARY(cos_f32, float, float, cosf(x))
K2_UNARY(softplus_f32, float, float, softplus(x))
K2_UNARY(elu_f32, float, float, x >= 0.0f ? x : alpha * expm1f(x))
K2_UNARY(selu_f32, float, float, x > 0.0f ? gamma * x : gamma * alpha * expm1f(x))
/* NaN and signed zeros pass through, as numpy.sign does. */
K2_UNARY(sign_f32, float, float, x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x)
K2_UNARY(sign_i8, int8_t, int8_t, (int8_t)((x > 0) - (x < 0)))
K2_UNARY(sign_u8, uint8_t, uint8_t, (uint8_t)(x > 0))
K2_UNARY(sign_i32, int32_t, int32_t, (int32_t)((x > 0) - (x < 0)))
K2_UNARY(sign_i64, int64_t, int64_t, (int64_t)((x > 0) - (x < 0)))
K2_UNARY(not_bool, uint8_t, uint8_t, (uint8_t)(x == 0))

/* ---- binary loops --------------------------------------------------------------------------- */

#define K2_BIN_VARIANT(NAME, SA, SB, TA, TO, EXPR)                                                \
    static void NAME##_##SA##SB(size_t n, void *restrict o_, const void *restrict a_,             \
                                const void *restrict b_, const k2_ctx *ctx)                       \
    {                                                                                             \
        TO *restrict o = o_;                                                                      \
        const TA *restrict pa = a_;                                                               \
        const TA *restrict pb = b_;                                                               \
        (void)ctx;                                                                                \
        CPU_LOOP(n, const TA a = pa[i * SA]; const TA b = pb[i * SB]; o[i] = (TO)(EXPR););        \
    }
/* Indexed by inner_mask: bit 0 A advances, bit 1 B advances. */
#define K2_BIN(NAME, TA, TO, EXPR)                                                                \
    K2_BIN_VARIANT(NAME, 0, 0, TA, TO, EXPR)                                                      \
    K2_BIN_VARIANT(NAME, 1, 0, TA, TO, EXPR)                                                      \
    K2_BIN_VARIANT(NAME, 0, 1, TA, TO, EXPR)                                                      \
    K2_BIN_VARIANT(NAME, 1, 1, TA, TO, EXPR)                                                      \
    static const k2_fn NAME[4] = {NAME##_00, NAME##_10, NAME##_01, NAME##_11};

#define K2_CMP_ROW(SN, T)                                                                         \
    K2_BIN(eq_##SN, T, uint8_t, a == b)                                                           \
    K2_BIN(lt_##SN, T, uint8_t, a < b)                                                            \
    K2_BIN(gt_##SN, T, uint8_t, a > b)                                                            \
    K2_BIN(le_##SN, T, uint8_t, a <= b)                                                           \
    K2_BIN(ge_##SN, T, uint8_t, a >= b)
K2_CMP_ROW(f32, float)
K2_CMP_ROW(i8, int8_t)
K2_CMP_ROW(u8, uint8_t)
K2_CMP_ROW(i32, int32_t)
K2_CMP_ROW(i64, int64_t)

/* Bools are 0 or 1 by contract; != 0 keeps any other byte from leaking into the result. */
K2_BIN(and_bool, uint8_t, uint8_t, (a != 0) & (b != 0))
K2_BIN(or_bool, uint8_t, uint8_t, (a != 0) | (b != 0))
K2_BIN(xor_bool, uint8_t, uint8_t, (a != 0) ^ (b != 0))
K2_BIN(eq_bool, uint8_t, uint8_t, (a != 0) == (b != 0))
K2_BIN(add_f32, float, float, a + b)

/* In-place accumulation for Sum/Mean: o += b. Indexed like K2_BIN (the output always advances
 * except in a one-element plan, where the stride does not matter). */
#define K2_ACC_VARIANT(SB)                                                                        \
    static void acc_f32_##SB(size_t n, void *restrict o_, const void *restrict a_,                \
                             const void *restrict b_, const k2_ctx *ctx)                          \
    {                                                                                             \
        float *restrict o = o_;                                                                   \
        const float *restrict pb = b_;                                                            \
        (void)a_;                                                                                 \
        (void)ctx;                                                                                \
        CPU_LOOP(n, o[i] += pb[i * SB];);                                                         \
    }
K2_ACC_VARIANT(0)
K2_ACC_VARIANT(1)
static const k2_fn acc_f32[4] = {acc_f32_0, acc_f32_0, acc_f32_1, acc_f32_1};

/* ---- elementwise params, run and prepare ---------------------------------------------------- */

#define EW_MAX_PASSES 64

typedef struct ew_pass {
    bc_plan plan;
    k2_fn fn;
    int32_t src[2]; /* input feeding each operand; -1: the output itself */
} ew_pass;

typedef struct ew2_params {
    int64_t numel;
    size_t grain, out_esize, in_esize;
    k2_fn flat;         /* unary: one input of the output's shape, walked contiguously */
    k2_ctx ctx;
    int copy_first;     /* Sum/Mean of one input: a copy */
    float scale;        /* Mean: 1/n applied at the end; 0 = none */
    uint32_t n_passes;
    ew_pass *passes;    /* owned, n_passes */
} ew2_params;

static void ew2_free(void *p)
{
    ew2_params *e = p;
    if (e)
        free(e->passes);
    free(e);
}

typedef struct flat_job {
    k2_fn fn;
    char *out;
    const char *in;
    size_t out_esize, in_esize;
    const k2_ctx *ctx;
} flat_job;

static void flat_walk(void *arg, size_t begin, size_t end)
{
    const flat_job *j = arg;
    j->fn(end - begin, j->out + begin * j->out_esize, j->in + begin * j->in_esize, NULL, j->ctx);
}

typedef struct scale_job {
    float *o;
    float s;
} scale_job;

static void scale_walk(void *arg, size_t begin, size_t end)
{
    const scale_job *j = arg;
    float *restrict o = j->o + begin;
    const float s = j->s;
    CPU_LOOP(end - begin, o[i] *= s;);
}

static loom_status ew2_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    const ew2_params *p = k->params;
    (void)err;
    (void)err_len;
    if (p->numel == 0)
        return LOOM_OK;
    const size_t n = (size_t)p->numel;
    if (p->flat) {
        flat_job j = {p->flat, args->outputs[0], args->inputs[0], p->out_esize, p->in_esize,
                      &p->ctx};
        cpu_parallel_for(pool, n, p->grain, flat_walk, &j);
        return LOOM_OK;
    }
    if (p->copy_first)
        memcpy(args->outputs[0], args->inputs[0], n * p->out_esize);
    bc_job j = {.out = args->outputs[0], .out_esize = p->out_esize, .ctx = &p->ctx};
    for (uint32_t s = 0; s < p->n_passes; s++) {
        const ew_pass *pass = &p->passes[s];
        j.plan = &pass->plan;
        j.fn = pass->fn;
        for (uint32_t o = 0; o < pass->plan.n_ops; o++)
            j.in[o] = pass->src[o] < 0 ? (const char *)args->outputs[0]
                                       : (const char *)args->inputs[pass->src[o]];
        cpu_parallel_for(pool, n, p->grain, bc_walk, &j);
    }
    if (p->scale != 0.0f) {
        scale_job sj = {args->outputs[0], p->scale};
        cpu_parallel_for(pool, n, GRAIN_CHEAP, scale_walk, &sj);
    }
    return LOOM_OK;
}

static int is_float_unary(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_HARD_SIGMOID: case LOOM_OP_HARD_SWISH: case LOOM_OP_RECIPROCAL:
    case LOOM_OP_FLOOR: case LOOM_OP_CEIL: case LOOM_OP_ROUND: case LOOM_OP_SIN:
    case LOOM_OP_COS: case LOOM_OP_SOFTPLUS: case LOOM_OP_ELU: case LOOM_OP_SELU:
        return 1;
    default:
        return 0;
    }
}

static int is_libm(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_SIN: case LOOM_OP_COS: case LOOM_OP_SOFTPLUS: case LOOM_OP_ELU:
    case LOOM_OP_SELU:
        return 1;
    default:
        return 0;
    }
}

static int is_compare(loom_op_id op)
{
    return op == LOOM_OP_EQUAL || op == LOOM_OP_LESS || op == LOOM_OP_GREATER ||
           op == LOOM_OP_LESS_OR_EQUAL || op == LOOM_OP_GREATER_OR_EQUAL;
}

static int is_logic(loom_op_id op)
{
    return op == LOOM_OP_AND || op == LOOM_OP_OR || op == LOOM_OP_XOR;
}

static k2_fn unary_fn(loom_op_id op, loom_dtype t)
{
    switch (op) {
    case LOOM_OP_HARD_SIGMOID: return hard_sigmoid_f32;
    case LOOM_OP_HARD_SWISH: return hard_swish_f32;
    case LOOM_OP_RECIPROCAL: return reciprocal_f32;
    case LOOM_OP_FLOOR: return floor_f32;
    case LOOM_OP_CEIL: return ceil_f32;
    case LOOM_OP_ROUND: return round_f32;
    case LOOM_OP_SIN: return sin_f32;
    case LOOM_OP_COS: return cos_f32;
    case LOOM_OP_SOFTPLUS: return softplus_f32;
    case LOOM_OP_ELU: return elu_f32;
    case LOOM_OP_SELU: return selu_f32;
    case LOOM_OP_NOT: return not_bool;
    case LOOM_OP_SIGN:
        switch (t) {
        case LOOM_DTYPE_F32: return sign_f32;
        case LOOM_DTYPE_I8: return sign_i8;
        case LOOM_DTYPE_U8: return sign_u8;
        case LOOM_DTYPE_I32: return sign_i32;
        case LOOM_DTYPE_I64: return sign_i64;
        default: return NULL;
        }
    default: return NULL;
    }
}

/* The four-variant table of a comparison or logic op on inputs of dtype T, or NULL. */
static const k2_fn *binary_fns(loom_op_id op, loom_dtype t)
{
#define CMP_BY_TYPE(SN)                                                                           \
    switch (op) {                                                                                 \
    case LOOM_OP_EQUAL: return eq_##SN;                                                           \
    case LOOM_OP_LESS: return lt_##SN;                                                            \
    case LOOM_OP_GREATER: return gt_##SN;                                                         \
    case LOOM_OP_LESS_OR_EQUAL: return le_##SN;                                                   \
    case LOOM_OP_GREATER_OR_EQUAL: return ge_##SN;                                                \
    default: return NULL;                                                                         \
    }
    switch (op) {
    case LOOM_OP_AND: return t == LOOM_DTYPE_BOOL ? and_bool : NULL;
    case LOOM_OP_OR: return t == LOOM_DTYPE_BOOL ? or_bool : NULL;
    case LOOM_OP_XOR: return t == LOOM_DTYPE_BOOL ? xor_bool : NULL;
    default: break;
    }
    switch (t) {
    case LOOM_DTYPE_F32: CMP_BY_TYPE(f32)
    case LOOM_DTYPE_I8: CMP_BY_TYPE(i8)
    case LOOM_DTYPE_U8: CMP_BY_TYPE(u8)
    case LOOM_DTYPE_I32: CMP_BY_TYPE(i32)
    case LOOM_DTYPE_I64: CMP_BY_TYPE(i64)
    case LOOM_DTYPE_BOOL: return op == LOOM_OP_EQUAL ? eq_bool : NULL;
    default: return NULL;
    }
#undef CMP_BY_TYPE
}

static int ew2_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs < 1 || node->n_outputs != 1 || !cpu_present(node, 0)) {
        cpu_reason(reason, len, "%s: expects inputs and one output", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    if (is_float_unary(node->op) || node->op == LOOM_OP_SIGN || node->op == LOOM_OP_NOT) {
        if (node->n_inputs != 1) {
            cpu_reason(reason, len, "%s: expects one input", op);
            return 0;
        }
        if (!unary_fn(node->op, x->dtype))
            return no_dtype(node, x->dtype,
                            node->op == LOOM_OP_NOT    ? "bool"
                            : node->op == LOOM_OP_SIGN ? "float32, int8, uint8, int32, int64"
                                                       : "float32",
                            reason, len);
        if (!cpu_same_shape(x, y) || x->dtype != y->dtype) {
            cpu_reason(reason, len, "%s: output differs from the input in dtype or shape", op);
            return 0;
        }
        return 1;
    }
    if (is_compare(node->op) || is_logic(node->op)) {
        if (node->n_inputs != 2 || !cpu_present(node, 1)) {
            cpu_reason(reason, len, "%s: expects two inputs", op);
            return 0;
        }
        if (node->inputs[1].dtype != x->dtype) {
            cpu_reason(reason, len, "%s: inputs of different dtypes (%s, %s)", op,
                       cpu_dtype_name(x->dtype), cpu_dtype_name(node->inputs[1].dtype));
            return 0;
        }
        if (!binary_fns(node->op, x->dtype))
            return no_dtype(node, x->dtype,
                            is_logic(node->op)           ? "bool"
                            : node->op == LOOM_OP_EQUAL ? "float32, int8, uint8, int32, int64, "
                                                          "bool"
                                                        : "float32, int8, uint8, int32, int64",
                            reason, len);
        if (y->dtype != LOOM_DTYPE_BOOL || !cpu_broadcasts_to(x, y) ||
            !cpu_broadcasts_to(&node->inputs[1], y)) {
            cpu_reason(reason, len, "%s: output is not the bool broadcast of the inputs", op);
            return 0;
        }
        return 1;
    }
    /* Sum, Mean */
    if (node->n_inputs > EW_MAX_PASSES) {
        cpu_reason(reason, len, "%s: more than %d inputs", op, EW_MAX_PASSES);
        return 0;
    }
    for (uint32_t i = 0; i < node->n_inputs; i++) {
        const loom_tensor_desc *in = &node->inputs[i];
        if (in->dtype != LOOM_DTYPE_F32)
            return no_dtype(node, in->dtype, "float32", reason, len);
        if (!cpu_broadcasts_to(in, y)) {
            cpu_reason(reason, len, "%s: input %u does not broadcast to the output", op, i);
            return 0;
        }
    }
    if (y->dtype != LOOM_DTYPE_F32 || (node->n_inputs == 1 && !cpu_same_shape(x, y))) {
        cpu_reason(reason, len, "%s: output is not the float32 broadcast of the inputs", op);
        return 0;
    }
    return 1;
}

static loom_status ew2_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    ew2_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_op_id op = node->op;
    const loom_tensor_desc *y = &k->out[0];
    p->numel = loom_tensor_desc_numel(y);
    p->out_esize = loom_dtype_size(y->dtype);
    p->in_esize = loom_dtype_size(k->in[0].dtype);
    p->grain = is_libm(op) ? GRAIN_LIBM : GRAIN_CHEAP;
    const loom_tensor_desc *ops[2];
    if (is_float_unary(op) || op == LOOM_OP_SIGN || op == LOOM_OP_NOT) {
        p->flat = unary_fn(op, k->in[0].dtype);
        if (op == LOOM_OP_HARD_SIGMOID) {
            p->ctx.alpha = loom_node_attr_float(node, "alpha", 0.2f);
            p->ctx.beta = loom_node_attr_float(node, "beta", 0.5f);
        } else if (op == LOOM_OP_ELU) {
            p->ctx.alpha = loom_node_attr_float(node, "alpha", 1.0f);
        } else if (op == LOOM_OP_SELU) {
            p->ctx.alpha = loom_node_attr_float(node, "alpha", 1.67326319217681884765625f);
            p->ctx.gamma = loom_node_attr_float(node, "gamma", 1.05070102214813232421875f);
        }
    } else if (is_compare(op) || is_logic(op)) {
        p->n_passes = 1;
        p->passes = calloc(1, sizeof *p->passes);
        if (!p->passes)
            goto oom;
        ops[0] = &k->in[0];
        ops[1] = &k->in[1];
        cpu_bcast_build(&p->passes[0].plan, y, 2, ops);
        p->passes[0].fn = binary_fns(op, k->in[0].dtype)[p->passes[0].plan.inner_mask];
        p->passes[0].src[0] = 0;
        p->passes[0].src[1] = 1;
    } else { /* Sum, Mean */
        const uint32_t n = node->n_inputs;
        if (op == LOOM_OP_MEAN && n > 1)
            p->scale = 1.0f / (float)n;
        if (n == 1) {
            p->copy_first = 1;
        } else {
            p->n_passes = n - 1;
            p->passes = calloc(n - 1, sizeof *p->passes);
            if (!p->passes)
                goto oom;
            ops[0] = &k->in[0];
            ops[1] = &k->in[1];
            cpu_bcast_build(&p->passes[0].plan, y, 2, ops);
            p->passes[0].fn = add_f32[p->passes[0].plan.inner_mask];
            p->passes[0].src[0] = 0;
            p->passes[0].src[1] = 1;
            for (uint32_t s = 1; s < n - 1; s++) {
                ops[0] = y;
                ops[1] = &k->in[s + 1];
                cpu_bcast_build(&p->passes[s].plan, y, 2, ops);
                p->passes[s].fn = acc_f32[p->passes[s].plan.inner_mask];
                p->passes[s].src[0] = -1;
                p->passes[s].src[1] = (int32_t)s + 1;
            }
        }
    }
    k->params = p;
    k->free_params = ew2_free;
    k->scratch_bytes = 0;
    k->run = ew2_run;
    return LOOM_OK;
oom:
    ew2_free(p);
    return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", node->op_name);
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_compare_logic_round(cpu_op_entry *table)
{
    static const loom_op_id ew[] = {
        LOOM_OP_HARD_SIGMOID, LOOM_OP_HARD_SWISH, LOOM_OP_RECIPROCAL, LOOM_OP_FLOOR,
        LOOM_OP_CEIL,         LOOM_OP_ROUND,      LOOM_OP_SIN,        LOOM_OP_COS,
        LOOM_OP_SOFTPLUS,     LOOM_OP_ELU,        LOOM_OP_SELU,       LOOM_OP_SIGN,
        LOOM_OP_NOT,          LOOM_OP_AND,        LOOM_OP_OR,         LOOM_OP_XOR,
        LOOM_OP_EQUAL,        LOOM_OP_LESS,       LOOM_OP_GREATER,    LOOM_OP_LESS_OR_EQUAL,
        LOOM_OP_GREATER_OR_EQUAL, LOOM_OP_SUM,    LOOM_OP_MEAN,
    };
    for (size_t i = 0; i < sizeof ew / sizeof ew[0]; i++) {
        table[ew[i]].supports = ew2_supports;
        table[ew[i]].prepare = ew2_prepare;
    }
}
