/*
 * CPU kernels of the normalisations: LayerNormalization, BatchNormalization (inference) and
 * InstanceNormalization (per (n, c) plane), with ONNX opset-18 semantics. Softmax and LogSoftmax
 * are in kernels_activations.c, as in the registry (graph/ops_activations.c).
 */
#include "cpu_axis.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements of work per parallel chunk: below this a tensor runs on the calling thread. */
#define NM_GRAIN 16384

#define F32 LOOM_DTYPE_F32

/* ---- float32 row primitives ----------------------------------------------------------------- */

CPU_CLONES
static float sum_f32(const float *restrict x, size_t n)
{
    float acc[CPU_BLK] = {0};
    size_t i = 0;
    for (; i + CPU_BLK <= n; i += CPU_BLK)
        for (size_t k = 0; k < CPU_BLK; k++)
            acc[k] += x[i + k];
    float s = 0.0f;
    for (; i < n; i++)
        s += x[i];
    for (size_t w = CPU_BLK / 2; w > 0; w /= 2)
        for (size_t k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0] + s;
}

/* Sum of (x - m)^2: the two-pass variance, which does not cancel as E[x^2] - E[x]^2 can. */
CPU_CLONES
static float sumsq_dev_f32(const float *restrict x, size_t n, float m)
{
    float acc[CPU_BLK] = {0};
    size_t i = 0;
    for (; i + CPU_BLK <= n; i += CPU_BLK)
        for (size_t k = 0; k < CPU_BLK; k++) {
            const float d = x[i + k] - m;
            acc[k] += d * d;
        }
    float s = 0.0f;
    for (; i < n; i++) {
        const float d = x[i] - m;
        s += d * d;
    }
    for (size_t w = CPU_BLK / 2; w > 0; w /= 2)
        for (size_t k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0] + s;
}

/* ---- LayerNormalization --------------------------------------------------------------------- */

/* How Scale or B reaches the normalised elements: absent, already N contiguous floats, or
 * broadcast over some normalised axes and expanded into scratch at run time. */
enum { LN_ABSENT = 0, LN_DIRECT = 1, LN_EXPAND = 2 };

typedef struct ln_params {
    int64_t outer, n;  /* X viewed as [outer, n], normalised over n */
    float eps;
    int mode[2];       /* Scale, B */
    uint32_t nrank;    /* the normalised axes, for expansion */
    int64_t ndims[LOOM_MAX_RANK];
    int64_t nstrides[2][LOOM_MAX_RANK]; /* element strides of Scale, B over them (0: repeat) */
    int want_mean, want_inv;
} ln_params;

typedef struct ln_job {
    const ln_params *p;
    const float *x, *scale, *bias;
    float *y, *mean, *inv;
} ln_job;

CPU_CLONES
static void ln_apply(size_t n, float *restrict y, const float *restrict x,
                     const float *restrict g, const float *restrict b, float mean, float inv)
{
    if (b)
        CPU_LOOP(n, y[i] = (x[i] - mean) * inv * g[i] + b[i];);
    else
        CPU_LOOP(n, y[i] = (x[i] - mean) * inv * g[i];);
}

void cpu_layernorm_stats(const float *x, size_t n, float eps, float *mean, float *inv)
{
    const float m = sum_f32(x, n) / (float)n;
    *mean = m;
    *inv = 1.0f / sqrtf(sumsq_dev_f32(x, n, m) / (float)n + eps);
}

static void ln_rows(void *arg, size_t begin, size_t end)
{
    const ln_job *j = arg;
    const size_t n = (size_t)j->p->n;
    for (size_t r = begin; r < end; r++) {
        const float *x = j->x + r * n;
        const float mean = sum_f32(x, n) / (float)n;
        const float var = sumsq_dev_f32(x, n, mean) / (float)n;
        const float inv = 1.0f / sqrtf(var + j->p->eps);
        ln_apply(n, j->y + r * n, x, j->scale, j->bias, mean, inv);
        if (j->mean)
            j->mean[r] = mean;
        if (j->inv)
            j->inv[r] = inv;
    }
}

/* SRC broadcast over the normalised axes into N contiguous floats at DST. */
static void ln_expand(const ln_params *p, const int64_t *strides, const float *src, float *dst)
{
    int64_t idx[LOOM_MAX_RANK] = {0};
    int64_t off = 0;
    const uint32_t r = p->nrank;
    for (int64_t i = 0; i < p->n; i++) {
        dst[i] = src[off];
        for (uint32_t d = r; d-- > 0;) {
            off += strides[d];
            if (++idx[d] < p->ndims[d])
                break;
            off -= strides[d] * p->ndims[d];
            idx[d] = 0;
        }
    }
}

static loom_status ln_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const ln_params *p = k->params;
    if (p->outer == 0)
        return LOOM_OK;
    ln_job job = {p, args->inputs[0], args->inputs[1], NULL, args->outputs[0], NULL, NULL};
    if (p->mode[1] != LN_ABSENT)
        job.bias = args->inputs[2];
    if (p->want_mean)
        job.mean = args->outputs[1];
    if (p->want_inv)
        job.inv = args->outputs[2];
    if (p->n == 0) { /* statistics of nothing */
        for (int64_t r = 0; r < p->outer; r++) {
            if (job.mean)
                job.mean[r] = NAN;
            if (job.inv)
                job.inv[r] = NAN;
        }
        return LOOM_OK;
    }
    float *scratch = args->scratch;
    if (p->mode[0] == LN_EXPAND) {
        ln_expand(p, p->nstrides[0], job.scale, scratch);
        job.scale = scratch;
    }
    if (p->mode[1] == LN_EXPAND) {
        ln_expand(p, p->nstrides[1], job.bias, scratch + p->n);
        job.bias = scratch + p->n;
    }
    cpu_parallel_for(pool, (size_t)p->outer, cpu_grain_items(p->n * 3, NM_GRAIN), ln_rows, &job);
    return LOOM_OK;
}

/* How input I (Scale or B) of a LayerNormalization over axes [AXIS, rank) of X applies: LN_*,
 * or -1 when it varies over an axis that is not normalised (or does not broadcast at all). */
static int ln_mode(const loom_node_desc *node, uint32_t i, uint32_t axis, int64_t *strides)
{
    if (!cpu_present(node, i))
        return LN_ABSENT;
    const loom_tensor_desc *x = &node->inputs[0], *s = &node->inputs[i];
    if (s->rank > x->rank)
        return -1;
    const uint32_t lead = x->rank - s->rank;
    int64_t st = 1;
    int full = 1;
    for (uint32_t d = x->rank; d-- > 0;) {
        const int64_t sd = d < lead ? 1 : s->dims[d - lead];
        if (sd != 1 && sd != x->dims[d])
            return -1;
        if (d < axis) {
            if (sd != 1)
                return -1;
            continue;
        }
        if (sd != x->dims[d])
            full = 0;
        if (strides)
            strides[d - axis] = sd == 1 ? 0 : st;
        st *= sd;
    }
    return full ? LN_DIRECT : LN_EXPAND;
}

static int ln_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs < 2 || node->n_outputs < 1) {
        cpu_reason(reason, len, "%s: expects X, Scale and an output", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, x->dtype, "float32", reason, len);
    const int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)x->rank) {
        cpu_reason(reason, len, "%s: axis %lld out of range for rank %u", op, (long long)axis,
                   x->rank);
        return 0;
    }
    for (uint32_t i = 1; i < 3 && i < node->n_inputs; i++) {
        if (!cpu_present(node, i))
            continue;
        if (node->inputs[i].dtype != LOOM_DTYPE_F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
        if (ln_mode(node, i, (uint32_t)axis, NULL) < 0) {
            cpu_reason(reason, len, "%s: %s must broadcast over the normalised axes only", op,
                       i == 1 ? "Scale" : "B");
            return 0;
        }
    }
    if (!cpu_present(node, 1)) {
        cpu_reason(reason, len, "%s: Scale is required", op);
        return 0;
    }
    const int64_t outer = cpu_prod(x->dims, 0, (uint32_t)axis);
    for (uint32_t o = 1; o < node->n_outputs && o < 3; o++) {
        const loom_tensor_desc *t = &node->outputs[o];
        if (t->dtype == LOOM_DTYPE_UNDEFINED)
            continue;
        if (t->dtype != LOOM_DTYPE_F32 || loom_tensor_desc_numel(t) != outer) {
            cpu_reason(reason, len, "%s: output %u must be float32 with one value per row", op,
                       o);
            return 0;
        }
    }
    if (node->n_inputs > 3 || node->n_outputs > 3) {
        cpu_reason(reason, len, "%s: unexpected number of inputs or outputs", op);
        return 0;
    }
    return 1;
}

static loom_status ln_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    ln_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &node->inputs[0];
    const uint32_t axis = (uint32_t)loom_node_attr_int(node, "axis", -1);
    p->outer = cpu_prod(x->dims, 0, axis);
    p->n = cpu_prod(x->dims, axis, x->rank);
    p->eps = loom_node_attr_float(node, "epsilon", 1e-5f);
    p->nrank = x->rank - axis;
    memcpy(p->ndims, x->dims + axis, p->nrank * sizeof *p->ndims);
    p->mode[0] = ln_mode(node, 1, axis, p->nstrides[0]);
    p->mode[1] = ln_mode(node, 2, axis, p->nstrides[1]);
    p->want_mean = node->n_outputs > 1 && node->outputs[1].dtype != LOOM_DTYPE_UNDEFINED;
    p->want_inv = node->n_outputs > 2 && node->outputs[2].dtype != LOOM_DTYPE_UNDEFINED;
    k->scratch_bytes = (size_t)(2 * p->n) * sizeof(float);
    if (p->mode[0] != LN_EXPAND && p->mode[1] != LN_EXPAND)
        k->scratch_bytes = 0;
    k->params = p;
    k->run = ln_run;
    return LOOM_OK;
}

/* ---- BatchNormalization (inference) --------------------------------------------------------- */

typedef struct bn_params {
    int64_t n, c, plane; /* X viewed as [n, c, plane] */
    float eps;
} bn_params;

typedef struct bn_job {
    const bn_params *p;
    const float *x, *scale, *bias, *mean, *var;
    float *y;
} bn_job;

CPU_CLONES
static void bn_apply(size_t n, float *restrict y, const float *restrict x, float m, float a,
                     float b)
{
    CPU_LOOP(n, y[i] = (x[i] - m) * a + b;);
}

static void bn_planes(void *arg, size_t begin, size_t end)
{
    const bn_job *j = arg;
    const size_t plane = (size_t)j->p->plane;
    for (size_t q = begin; q < end; q++) {
        const size_t c = q % (size_t)j->p->c;
        const float a = j->scale[c] / sqrtf(j->var[c] + j->p->eps);
        bn_apply(plane, j->y + q * plane, j->x + q * plane, j->mean[c], a, j->bias[c]);
    }
}

static loom_status bn_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const bn_params *p = k->params;
    if (p->n == 0 || p->c == 0 || p->plane == 0)
        return LOOM_OK;
    bn_job job = {p,
                  args->inputs[0],
                  args->inputs[1],
                  args->inputs[2],
                  args->inputs[3],
                  args->inputs[4],
                  args->outputs[0]};
    cpu_parallel_for(pool, (size_t)(p->n * p->c), cpu_grain_items(p->plane, NM_GRAIN), bn_planes,
                     &job);
    return LOOM_OK;
}

static int bn_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs != 5 || node->n_outputs < 1) {
        cpu_reason(reason, len, "%s: expects X, scale, B, mean, var and an output", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, x->dtype, "float32", reason, len);
    if (x->rank < 2) {
        cpu_reason(reason, len, "%s: X must have rank >= 2 (N, C, ...), not %u", op, x->rank);
        return 0;
    }
    for (uint32_t i = 1; i < 5; i++) {
        const loom_tensor_desc *t = &node->inputs[i];
        if (t->dtype != LOOM_DTYPE_F32)
            return cpu_no_dtype(node, t->dtype, "float32", reason, len);
        if (loom_tensor_desc_numel(t) != x->dims[1]) {
            cpu_reason(reason, len, "%s: input %u must hold one value per channel", op, i);
            return 0;
        }
    }
    for (uint32_t o = 1; o < node->n_outputs; o++)
        if (node->outputs[o].dtype != LOOM_DTYPE_UNDEFINED) {
            cpu_reason(reason, len,
                       "%s: training mode (running mean/var outputs) has no CPU kernel", op);
            return 0;
        }
    return 1;
}

static loom_status bn_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    bn_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &node->inputs[0];
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->plane = cpu_prod(x->dims, 2, x->rank);
    p->eps = loom_node_attr_float(node, "epsilon", 1e-5f);
    k->params = p;
    k->run = bn_run;
    return LOOM_OK;
}

/* ---- InstanceNormalization: per (n, c) plane ---- */

static void in_task(void *arg, size_t q0, size_t q1)
{
    const cpu_axis_job *j = arg;
    const cpu_axis_params *p = j->p;
    const int64_t n = p->inner;
    for (size_t q = q0; q < q1; q++) {
        const float *x = (const float *)j->x + q * (size_t)n;
        float *y = (float *)j->y + q * (size_t)n;
        const size_t c = q % (size_t)p->c;
        double s = 0.0, v = 0.0;
        for (int64_t i = 0; i < n; i++)
            s += x[i];
        const double mean = n ? s / (double)n : 0.0;
        for (int64_t i = 0; i < n; i++) {
            const double d = x[i] - mean;
            v += d * d;
        }
        const double var = n ? v / (double)n : 0.0;
        const float a = (float)(((const float *)j->scale)[c] / sqrt(var + p->eps));
        const float b = ((const float *)j->bias)[c] - (float)mean * a;
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * a + b;
    }
}

static loom_status in_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const cpu_axis_params *p = k->params;
    cpu_axis_job j = {.p = p, .x = args->inputs[0], .scale = args->inputs[1],
                  .bias = args->inputs[2], .y = args->outputs[0]};
    if (p->outer * p->len == 0 || p->inner == 0)
        return LOOM_OK;
    cpu_parallel_for(pool, (size_t)(p->outer * p->len), cpu_grain(3 * p->inner), in_task, &j);
    return LOOM_OK;
}

static int in_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < 3; i++)
        if (node->inputs[i].dtype != F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    if (node->inputs[0].rank < 2)
        return cpu_reason(reason, len, "InstanceNormalization: X must be [N, C, ...]");
    return 1;
}

static loom_status in_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    cpu_axis_params *p = cpu_axis_make(x, 1);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->c = x->dims[1];
    p->eps = loom_node_attr_float(node, "epsilon", 1e-5f);
    k->params = p;
    k->run = in_run;
    return LOOM_OK;
}

/* ---- LRN: X viewed as [N, C, inner]; a window of channels per element ---- */

typedef struct lrn_params {
    int64_t n, c, inner, size;
    float alpha, beta, bias;
} lrn_params;

static loom_status lrn_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const lrn_params *p = k->params;
    const float *x = args->inputs[0];
    float *y = args->outputs[0];
    const int64_t before = (p->size - 1) / 2, after = p->size / 2; /* floor, ceil of (size-1)/2 */
    const float scale = p->alpha / (float)p->size;
    for (int64_t n = 0; n < p->n; n++)
        for (int64_t c = 0; c < p->c; c++) {
            const int64_t c0 = c - before < 0 ? 0 : c - before;
            const int64_t c1 = c + after >= p->c ? p->c - 1 : c + after;
            const float *xc = x + (n * p->c + c) * p->inner;
            float *yc = y + (n * p->c + c) * p->inner;
            for (int64_t i = 0; i < p->inner; i++) {
                float sq = 0.0f;
                for (int64_t q = c0; q <= c1; q++) {
                    const float v = x[(n * p->c + q) * p->inner + i];
                    sq += v * v;
                }
                yc[i] = xc[i] / powf(p->bias + scale * sq, p->beta);
            }
        }
    return LOOM_OK;
}

static loom_status lrn_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    lrn_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->inner = cpu_prod(x->dims, 2, x->rank);
    p->size = loom_node_attr_int(node, "size", 1);
    p->alpha = loom_node_attr_float(node, "alpha", 1e-4f);
    p->beta = loom_node_attr_float(node, "beta", 0.75f);
    p->bias = loom_node_attr_float(node, "bias", 1.0f);
    k->params = p;
    k->run = lrn_run;
    return LOOM_OK;
}

/* ---- MeanVarianceNormalization: statistics per group (the index without the reduced axes),
 * in double, then Y = (X - mean) / (sqrt(E[X^2] - mean^2) + 1e-9) ---- */

typedef struct mvn_params {
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
    int red[LOOM_MAX_RANK];
    int64_t groups, count; /* groups, and elements per group */
} mvn_params;

static int64_t mvn_group(const mvn_params *p, int64_t flat)
{
    int64_t g = 0, mul = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        const int64_t i = flat % p->dims[d];
        flat /= p->dims[d];
        if (!p->red[d]) {
            g += i * mul;
            mul *= p->dims[d];
        }
    }
    return g;
}

static loom_status mvn_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const mvn_params *p = k->params;
    const float *x = args->inputs[0];
    float *y = args->outputs[0];
    double *sum = args->scratch, *sq = sum + p->groups;
    memset(sum, 0, (size_t)p->groups * 2 * sizeof *sum);
    const int64_t n = p->groups * p->count;
    for (int64_t i = 0; i < n; i++) {
        const int64_t g = mvn_group(p, i);
        sum[g] += x[i];
        sq[g] += (double)x[i] * x[i];
    }
    for (int64_t g = 0; g < p->groups; g++) {
        const double mean = sum[g] / (double)p->count;
        const double var = sq[g] / (double)p->count - mean * mean;
        sum[g] = mean;
        sq[g] = 1.0 / (sqrt(var > 0.0 ? var : 0.0) + 1e-9);
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t g = mvn_group(p, i);
        y[i] = (float)((x[i] - sum[g]) * sq[g]);
    }
    return LOOM_OK;
}

static loom_status mvn_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    mvn_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *axes = loom_node_attr(node, "axes");
    p->rank = x->rank;
    for (uint32_t d = 0; d < x->rank; d++)
        p->dims[d] = x->dims[d];
    for (size_t i = 0; axes && axes->kind == LOOM_ATTR_INTS && i < axes->count; i++)
        if (axes->ints[i] >= 0 && axes->ints[i] < (int64_t)x->rank)
            p->red[axes->ints[i]] = 1;
    p->groups = 1;
    p->count = 1;
    for (uint32_t d = 0; d < x->rank; d++)
        *(p->red[d] ? &p->count : &p->groups) *= x->dims[d];
    k->params = p;
    k->run = mvn_run;
    k->scratch_bytes = (size_t)(2 * p->groups) * sizeof(double);
    return LOOM_OK;
}

static int f32_in_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->inputs[0].dtype != F32)
        return cpu_no_dtype(node, node->inputs[0].dtype, "float32", reason, len);
    return 1;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_normalization(cpu_op_entry *table)
{
    table[LOOM_OP_LAYER_NORMALIZATION] = (cpu_op_entry){ln_supports, ln_prepare};
    table[LOOM_OP_BATCH_NORMALIZATION] = (cpu_op_entry){bn_supports, bn_prepare};
    table[LOOM_OP_INSTANCE_NORMALIZATION] = (cpu_op_entry){in_supports, in_prepare};
    table[LOOM_OP_LRN] = (cpu_op_entry){f32_in_supports, lrn_prepare};
    table[LOOM_OP_MEAN_VARIANCE_NORMALIZATION] = (cpu_op_entry){f32_in_supports, mvn_prepare};
}
