/*
 * CPU kernels of the operators that make tensors from shapes and scalars: Shape, ConstantOfShape,
 * Range (Dropout, once here, is kernels_dropout.c).
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

/* ---- Shape, ConstantOfShape, Range ---------------------------------------------------------- */

typedef struct misc_params {
    int64_t numel;
    int64_t start;             /* Shape: first dim reported */
    int64_t dims[LOOM_MAX_RANK]; /* Shape: the input's dims */
    uint64_t pattern;          /* ConstantOfShape: the fill value's bytes */
    size_t esize;
} misc_params;

static loom_status shape_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    const misc_params *p = k->params;
    int64_t *o = args->outputs[0];
    (void)pool;
    (void)err;
    (void)err_len;
    for (int64_t i = 0; i < p->numel; i++)
        o[i] = p->dims[p->start + i];
    return LOOM_OK;
}

typedef struct fill_job {
    void *out;
    uint64_t pattern;
    size_t esize;
} fill_job;

static void fill_walk(void *arg, size_t begin, size_t end)
{
    const fill_job *j = arg;
    const size_t n = end - begin;
    switch (j->esize) {
    case 1: memset((uint8_t *)j->out + begin, (int)(uint8_t)j->pattern, n); break;
    case 2: {
        uint16_t *restrict o = (uint16_t *)j->out + begin;
        const uint16_t v = (uint16_t)j->pattern;
        CPU_LOOP(n, o[i] = v;);
        break;
    }
    case 4: {
        uint32_t *restrict o = (uint32_t *)j->out + begin;
        const uint32_t v = (uint32_t)j->pattern;
        CPU_LOOP(n, o[i] = v;);
        break;
    }
    default: {
        uint64_t *restrict o = (uint64_t *)j->out + begin;
        const uint64_t v = j->pattern;
        CPU_LOOP(n, o[i] = v;);
        break;
    }
    }
}

static loom_status const_of_shape_run(const cpu_kernel *k, const loom_exec_args *args,
                                      cpu_pool *pool, char *err, size_t err_len)
{
    const misc_params *p = k->params;
    (void)err;
    (void)err_len;
    fill_job j = {args->outputs[0], p->pattern, p->esize};
    if (p->numel > 0)
        cpu_parallel_for(pool, (size_t)p->numel, GRAIN_CHEAP * 4, fill_walk, &j);
    return LOOM_OK;
}

/* Range reads start and delta now (they are constants, but a kernel reads its inputs). */
static loom_status range_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    const misc_params *p = k->params;
    const loom_dtype t = k->out[0].dtype;
    (void)pool;
    (void)err;
    (void)err_len;
    if (t == LOOM_DTYPE_F32) {
        /* numpy.arange: start + i * delta, in double, then narrowed. */
        const double s = load_f32(args->inputs[0], 0), d = load_f32(args->inputs[2], 0);
        float *o = args->outputs[0];
        for (int64_t i = 0; i < p->numel; i++)
            o[i] = (float)(s + (double)i * d);
        return LOOM_OK;
    }
    /* Every element lies between start and limit, so the wrap-free unsigned sum is exact. */
    const uint64_t s = (uint64_t)load_int(t, args->inputs[0], 0);
    const uint64_t d = (uint64_t)load_int(t, args->inputs[2], 0);
    if (t == LOOM_DTYPE_I32) {
        int32_t *o = args->outputs[0];
        for (int64_t i = 0; i < p->numel; i++)
            o[i] = (int32_t)(int64_t)(s + (uint64_t)i * d);
    } else {
        int64_t *o = args->outputs[0];
        for (int64_t i = 0; i < p->numel; i++)
            o[i] = (int64_t)(s + (uint64_t)i * d);
    }
    return LOOM_OK;
}

/* The bytes of VALUE (or VALUE_INT for integer dtypes) as dtype T. */
static uint64_t fill_pattern(loom_dtype t, float value, int64_t value_int)
{
    uint64_t pat = 0;
    switch (t) {
    case LOOM_DTYPE_F32: {
        uint32_t u;
        memcpy(&u, &value, sizeof u);
        pat = u;
        break;
    }
    case LOOM_DTYPE_F16: pat = cpu_f32_to_f16(value); break;
    case LOOM_DTYPE_BF16: pat = cpu_f32_to_bf16(value); break;
    case LOOM_DTYPE_BOOL: pat = value_int != 0; break;
    case LOOM_DTYPE_I8: case LOOM_DTYPE_U8: pat = (uint8_t)value_int; break;
    case LOOM_DTYPE_I32: pat = (uint32_t)value_int; break;
    default: pat = (uint64_t)value_int; break;
    }
    return pat;
}

static int misc_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs < 1 || node->n_outputs < 1 || !cpu_present(node, 0)) {
        cpu_reason(reason, len, "%s: expects an input and an output", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    switch (node->op) {
    case LOOM_OP_SHAPE: {
        const int64_t start = loom_node_attr_int(node, "start", 0);
        const int64_t end = loom_node_attr_int(node, "end", x->rank);
        if (start < 0 || end < start || end > (int64_t)x->rank || y->dtype != LOOM_DTYPE_I64 ||
            y->rank != 1 || y->dims[0] != end - start) {
            cpu_reason(reason, len, "%s: start/end are not canonical for the output", op);
            return 0;
        }
        return 1;
    }
    case LOOM_OP_CONSTANT_OF_SHAPE:
        if (loom_dtype_size(y->dtype) == 0)
            return no_dtype(node, y->dtype, "known dtypes", reason, len);
        return 1;
    case LOOM_OP_RANGE:
        if (node->n_inputs != 3 || y->rank != 1 ||
            !(y->dtype == LOOM_DTYPE_F32 || y->dtype == LOOM_DTYPE_I32 ||
              y->dtype == LOOM_DTYPE_I64))
            return no_dtype(node, y->dtype, "float32, int32, int64", reason, len);
        for (uint32_t i = 0; i < 3; i++)
            if (node->inputs[i].dtype != y->dtype ||
                loom_tensor_desc_numel(&node->inputs[i]) != 1) {
                cpu_reason(reason, len, "%s: start, limit and delta must be scalars of the "
                                        "output's dtype", op);
                return 0;
            }
        return 1;
    default:
        cpu_reason(reason, len, "%s: not handled here", op);
        return 0;
    }
}

static loom_status misc_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    misc_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *y = &k->out[0];
    p->numel = loom_tensor_desc_numel(y);
    p->esize = loom_dtype_size(y->dtype);
    switch (node->op) {
    case LOOM_OP_SHAPE:
        p->start = loom_node_attr_int(node, "start", 0);
        for (uint32_t d = 0; d < k->in[0].rank; d++)
            p->dims[d] = k->in[0].dims[d];
        k->run = shape_run;
        break;
    case LOOM_OP_CONSTANT_OF_SHAPE:
        p->pattern = fill_pattern(y->dtype, loom_node_attr_float(node, "value", 0.0f),
                                  loom_node_attr_int(node, "value_int", 0));
        k->run = const_of_shape_run;
        break;
    default: /* LOOM_OP_RANGE */
        k->run = range_run;
        break;
    }
    k->params = p;
    k->free_params = NULL;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

/* ---- HannWindow, HammingWindow, BlackmanWindow: a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N),
 * N the size (periodic) or size - 1 (symmetric), computed in float32 and stored as the output's
 * dtype (a size-1 symmetric window is [1]). ---- */

typedef struct window_params {
    int64_t size;
    int periodic;
    float a0, a1, a2;
    loom_dtype dt;
} window_params;

static void store_as(void *y, loom_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case LOOM_DTYPE_F32: ((float *)y)[i] = (float)v; break;
    case LOOM_DTYPE_F64: ((double *)y)[i] = v; break;
    case LOOM_DTYPE_F16: ((uint16_t *)y)[i] = cpu_f32_to_f16((float)v); break;
    case LOOM_DTYPE_BF16: ((uint16_t *)y)[i] = cpu_f32_to_bf16((float)v); break;
    case LOOM_DTYPE_I8: ((int8_t *)y)[i] = (int8_t)v; break;
    case LOOM_DTYPE_U8: ((uint8_t *)y)[i] = (uint8_t)v; break;
    case LOOM_DTYPE_I16: ((int16_t *)y)[i] = (int16_t)v; break;
    case LOOM_DTYPE_U16: ((uint16_t *)y)[i] = (uint16_t)v; break;
    case LOOM_DTYPE_I32: ((int32_t *)y)[i] = (int32_t)v; break;
    case LOOM_DTYPE_U32: ((uint32_t *)y)[i] = (uint32_t)v; break;
    case LOOM_DTYPE_I64: ((int64_t *)y)[i] = (int64_t)v; break;
    case LOOM_DTYPE_U64: ((uint64_t *)y)[i] = (uint64_t)v; break;
    default: break;
    }
}

static loom_status window_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const window_params *p = k->params;
    const double two_pi = 6.283185307179586476925286766559;
    const int64_t n_div = p->periodic ? p->size : p->size - 1;
    for (int64_t i = 0; i < p->size; i++) {
        float v = 1.0f;
        if (n_div > 0) {
            const double t = two_pi * (double)i / (double)n_div;
            v = p->a0;
            v -= p->a1 * (float)cos(t);
            v += p->a2 * (float)cos(2.0 * t);
        }
        store_as(args->outputs[0], p->dt, i, v);
    }
    return LOOM_OK;
}

static loom_status window_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    window_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->size = node->outputs[0].dims[0];
    p->periodic = loom_node_attr_int(node, "periodic", 1) != 0;
    p->dt = node->outputs[0].dtype;
    switch (node->op) {
    case LOOM_OP_HANN_WINDOW: p->a0 = 0.5f, p->a1 = 0.5f; break;
    case LOOM_OP_HAMMING_WINDOW: p->a0 = 25.0f / 46.0f, p->a1 = 1.0f - 25.0f / 46.0f; break;
    default: p->a0 = 0.42f, p->a1 = 0.5f, p->a2 = 0.08f; break;
    }
    k->params = p;
    k->run = window_run;
    return LOOM_OK;
}

static int window_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!loom_dtype_size(node->outputs[0].dtype) || node->outputs[0].dtype == LOOM_DTYPE_BOOL)
        return cpu_no_dtype(node, node->outputs[0].dtype, "a numeric dtype", reason, len);
    return 1;
}

void cpu_register_generators(cpu_op_entry *table)
{
    table[LOOM_OP_HANN_WINDOW] = (cpu_op_entry){window_supports, window_prepare};
    table[LOOM_OP_HAMMING_WINDOW] = (cpu_op_entry){window_supports, window_prepare};
    table[LOOM_OP_BLACKMAN_WINDOW] = (cpu_op_entry){window_supports, window_prepare};
    static const loom_op_id misc[] = {LOOM_OP_SHAPE, LOOM_OP_CONSTANT_OF_SHAPE, LOOM_OP_RANGE};
    for (size_t i = 0; i < sizeof misc / sizeof misc[0]; i++) {
        table[misc[i]].supports = misc_supports;
        table[misc[i]].prepare = misc_prepare;
    }
}
