/*
 * The normalisation and reduction kernels of the CPU backend: Softmax, LayerNormalization,
 * BatchNormalization (inference), ReduceMean, ReduceSum and ReduceMax.
 *
 * Reductions are planned at prepare time: the input's dimensions lose their size-1 members and
 * adjacent dimensions that are both kept or both reduced merge, so every reduction becomes one
 * of a few shapes: all of a contiguous tensor, contiguous runs into one output element each
 * (innermost axis reduced), or whole rows folded into an output row (innermost axis kept).
 */
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements of work per parallel chunk: below this a tensor runs on the calling thread. */
#define NM_GRAIN 16384
#define NM_GRAIN_EXP 8192 /* Softmax: an inline exp per element, ~2 ns */

/* Max that lets a NaN win, as NumPy's max does. */
#define NM_MAXF(a, b) ((a) != (a) || (a) > (b) ? (a) : (b))

static size_t grain_items(int64_t work_per_item, size_t grain)
{
    if (work_per_item <= 0)
        return grain;
    size_t g = grain / (size_t)work_per_item;
    return g ? g : 1;
}

static int no_dtype(const loom_node_desc *node, loom_dtype t, const char *only, char *reason,
                    size_t len)
{
    cpu_reason(reason, len, "%s: dtype %s has no CPU kernel (only %s)", node->op_name,
               cpu_dtype_name(t), only);
    return 0;
}

/* ---- vectorisable exp ----------------------------------------------------------------------- */


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

CPU_CLONES
static float max_f32(const float *restrict x, size_t n)
{
    float acc[CPU_BLK];
    for (size_t k = 0; k < CPU_BLK; k++)
        acc[k] = -INFINITY;
    size_t i = 0;
    for (; i + CPU_BLK <= n; i += CPU_BLK)
        for (size_t k = 0; k < CPU_BLK; k++)
            acc[k] = NM_MAXF(x[i + k], acc[k]);
    float m = -INFINITY;
    for (; i < n; i++)
        m = NM_MAXF(x[i], m);
    for (size_t k = 0; k < CPU_BLK; k++)
        m = NM_MAXF(acc[k], m);
    return m;
}

/* ---- Softmax -------------------------------------------------------------------------------- */

/* Columns a Softmax over a non-innermost axis handles at once: their running max and sum live
 * on the stack, and each pass over the axis is a contiguous run of this many floats. */
#define SM_TILE 256

typedef struct sm_params {
    int64_t outer, len, inner; /* X viewed as [outer, len, inner], softmax over len */
    int64_t tiles;             /* column tiles per outer index when inner > 1 */
} sm_params;

typedef struct sm_job {
    const sm_params *p;
    const float *x;
    float *y;
} sm_job;

CPU_CLONES
static void scale_f32(float *restrict y, size_t n, float s)
{
    CPU_LOOP(n, y[i] *= s;);
}

/* Elements whose exponentials are summed in float before the running total takes them in
 * double: rows and columns of any length keep a sum accurate to a few 1e-7. A multiple of
 * CPU_BLK. */
#define SM_CHUNK 1024

/* Y[i] = e^(X[i] - M) for i < N; returns their sum: CPU_BLK float partial sums per chunk of
 * SM_CHUNK elements, the chunks' totals added in double. */
CPU_CLONES
static double exp_sum_f32(float *restrict y, const float *restrict x, size_t n, float m)
{
    double total = 0.0;
    for (size_t c = 0; c < n; c += SM_CHUNK) {
        const size_t end = n - c < SM_CHUNK ? n : c + SM_CHUNK;
        float acc[CPU_BLK] = {0};
        size_t i = c;
        for (; i + CPU_BLK <= end; i += CPU_BLK)
            for (size_t k = 0; k < CPU_BLK; k++) {
                const float e = cpu_exp_neg(x[i + k] - m);
                y[i + k] = e;
                acc[k] += e;
            }
        float s = 0.0f;
        for (; i < end; i++) {
            const float e = cpu_exp_neg(x[i] - m);
            y[i] = e;
            s += e;
        }
        for (size_t w = CPU_BLK / 2; w > 0; w /= 2)
            for (size_t k = 0; k < w; k++)
                acc[k] += acc[k + w];
        total += (double)(acc[0] + s);
    }
    return total;
}

/* Y[i] = e^(X[i] - M[i]), S[i] += Y[i] for i < N. */
CPU_CLONES
static void exp_acc_f32(float *restrict y, float *restrict s, const float *restrict x,
                        const float *restrict m, size_t n)
{
    CPU_LOOP(n, const float e = cpu_exp_neg(x[i] - m[i]); y[i] = e; s[i] += e;);
}

/* Softmax over contiguous rows [BEGIN, END). */
static void sm_rows(void *arg, size_t begin, size_t end)
{
    const sm_job *j = arg;
    const size_t len = (size_t)j->p->len;
    for (size_t r = begin; r < end; r++) {
        const float *x = j->x + r * len;
        float *y = j->y + r * len;
        const float m = max_f32(x, len);
        const double s = exp_sum_f32(y, x, len, m);
        scale_f32(y, len, (float)(1.0 / s));
    }
}

/* Softmax over a strided axis: work item = (outer index, tile of up to SM_TILE columns). Each
 * column sums along the axis in float, taken into a double total every SM_CHUNK rows. */
CPU_CLONES
static void sm_tiles(void *arg, size_t begin, size_t end)
{
    const sm_job *j = arg;
    const sm_params *p = j->p;
    const size_t len = (size_t)p->len, inner = (size_t)p->inner;
    float m[SM_TILE];
    float s[SM_TILE];
    double total[SM_TILE];
    for (size_t it = begin; it < end; it++) {
        const size_t o = it / (size_t)p->tiles, c0 = (it % (size_t)p->tiles) * SM_TILE;
        const size_t w = inner - c0 < SM_TILE ? inner - c0 : SM_TILE;
        const float *x = j->x + o * len * inner + c0;
        float *y = j->y + o * len * inner + c0;
        memcpy(m, x, w * sizeof *m);
        for (size_t l = 1; l < len; l++) {
            const float *restrict xr = x + l * inner;
            CPU_LOOP(w, m[i] = NM_MAXF(xr[i], m[i]););
        }
        memset(total, 0, w * sizeof *total);
        for (size_t l0 = 0; l0 < len; l0 += SM_CHUNK) {
            const size_t l1 = len - l0 < SM_CHUNK ? len : l0 + SM_CHUNK;
            memset(s, 0, w * sizeof *s);
            for (size_t l = l0; l < l1; l++)
                exp_acc_f32(y + l * inner, s, x + l * inner, m, w);
            for (size_t c = 0; c < w; c++)
                total[c] += (double)s[c];
        }
        for (size_t c = 0; c < w; c++)
            s[c] = (float)(1.0 / total[c]);
        for (size_t l = 0; l < len; l++) {
            float *restrict yr = y + l * inner;
            CPU_LOOP(w, yr[i] *= s[i];);
        }
    }
}

static loom_status sm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const sm_params *p = k->params;
    if (p->outer == 0 || p->len == 0 || p->inner == 0)
        return LOOM_OK;
    sm_job job = {p, args->inputs[0], args->outputs[0]};
    if (p->inner == 1)
        cpu_parallel_for(pool, (size_t)p->outer, grain_items(p->len, NM_GRAIN_EXP), sm_rows,
                         &job);
    else
        cpu_parallel_for(pool, (size_t)(p->outer * p->tiles),
                         grain_items(p->len * (p->inner < SM_TILE ? p->inner : SM_TILE),
                                     NM_GRAIN_EXP),
                         sm_tiles, &job);
    return LOOM_OK;
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
    cpu_parallel_for(pool, (size_t)p->outer, grain_items(p->n * 3, NM_GRAIN), ln_rows, &job);
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
        return no_dtype(node, x->dtype, "float32", reason, len);
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
            return no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
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
    cpu_parallel_for(pool, (size_t)(p->n * p->c), grain_items(p->plane, NM_GRAIN), bn_planes,
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
        return no_dtype(node, x->dtype, "float32", reason, len);
    if (x->rank < 2) {
        cpu_reason(reason, len, "%s: X must have rank >= 2 (N, C, ...), not %u", op, x->rank);
        return 0;
    }
    for (uint32_t i = 1; i < 5; i++) {
        const loom_tensor_desc *t = &node->inputs[i];
        if (t->dtype != LOOM_DTYPE_F32)
            return no_dtype(node, t->dtype, "float32", reason, len);
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

/* ---- Softmax supports/prepare --------------------------------------------------------------- */

static int sm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs != 1 || node->n_outputs != 1) {
        cpu_reason(reason, len, "%s: expects one input and one output", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->dtype != LOOM_DTYPE_F32)
        return no_dtype(node, x->dtype, "float32", reason, len);
    const int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (x->rank > 0 && (axis < 0 || axis >= (int64_t)x->rank)) {
        cpu_reason(reason, len, "%s: axis %lld out of range for rank %u", op, (long long)axis,
                   x->rank);
        return 0;
    }
    return 1;
}

static loom_status sm_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    sm_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &node->inputs[0];
    const uint32_t axis = (uint32_t)loom_node_attr_int(node, "axis", -1);
    if (x->rank == 0) { /* a scalar: softmax of one value */
        p->outer = p->len = p->inner = 1;
    } else {
        p->outer = cpu_prod(x->dims, 0, axis);
        p->len = x->dims[axis];
        p->inner = cpu_prod(x->dims, axis + 1, x->rank);
    }
    p->tiles = (p->inner + SM_TILE - 1) / SM_TILE;
    k->params = p;
    k->run = sm_run;
    return LOOM_OK;
}

/* ---- ReduceMean, ReduceSum, ReduceMax ------------------------------------------------------- */

enum {
    RED_NOOP,  /* empty output */
    RED_FILL,  /* reduces over an empty axis: every output is the identity */
    RED_COPY,  /* nothing left to reduce */
    RED_ALL,   /* everything into one value */
    RED_INNER, /* innermost axis reduced: contiguous runs into single outputs */
    RED_OUTER, /* innermost axis kept: input rows fold into output rows */
};

/* The operations of one (op, dtype) on accumulators, on void pointers so that one plan walker
 * serves all. Float sums accumulate in double: the reference backend should not lose digits to
 * long sums that cancel. Integer sums wrap, through unsigned arithmetic. */
typedef struct red_vt {
    size_t acc_size; /* bytes of one accumulator */
    void (*init)(void *restrict acc, size_t n);                       /* the identity */
    void (*run)(void *restrict acc, const void *restrict x, size_t n); /* acc[0] op= x[0..n) */
    void (*row)(void *restrict acc, const void *restrict x, size_t n); /* acc[i] op= x[i] */
    void (*merge)(void *restrict acc, const void *restrict parts, size_t n); /* acc[0] op= .. */
    /* y[i] = acc[i], divided by DIV for float sums (1 unless ReduceMean). */
    void (*store)(void *restrict y, const void *restrict acc, size_t n, double div);
} red_vt;

/* float32 sums, in double. */
static void init_f64(void *restrict acc_, size_t n)
{
    double *restrict acc = acc_;
    CPU_LOOP(n, acc[i] = 0.0;);
}

CPU_CLONES
static void run_sum_f32(void *restrict acc, const void *restrict x_, size_t n)
{
    const float *restrict x = x_;
    double part[CPU_BLK] = {0};
    size_t i = 0;
    for (; i + CPU_BLK <= n; i += CPU_BLK)
        for (size_t k = 0; k < CPU_BLK; k++)
            part[k] += (double)x[i + k];
    double s = 0.0;
    for (; i < n; i++)
        s += (double)x[i];
    for (size_t k = 0; k < CPU_BLK; k++)
        s += part[k];
    *(double *)acc += s;
}

CPU_CLONES
static void row_sum_f32(void *restrict acc_, const void *restrict x_, size_t n)
{
    double *restrict acc = acc_;
    const float *restrict x = x_;
    CPU_LOOP(n, acc[i] += (double)x[i];);
}

static void merge_f64(void *restrict acc, const void *restrict parts_, size_t n)
{
    const double *restrict parts = parts_;
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += parts[i];
    *(double *)acc += s;
}

CPU_CLONES
static void store_sum_f32(void *restrict y_, const void *restrict acc_, size_t n, double div)
{
    float *restrict y = y_;
    const double *restrict acc = acc_;
    CPU_LOOP(n, y[i] = (float)(acc[i] / div););
}

/* float32 max, in float. */
static void init_max_f32(void *restrict acc_, size_t n)
{
    float *restrict acc = acc_;
    CPU_LOOP(n, acc[i] = -INFINITY;);
}

static void run_max_f32(void *restrict acc, const void *restrict x, size_t n)
{
    const float m = max_f32(x, n), a = *(float *)acc;
    *(float *)acc = NM_MAXF(m, a);
}

CPU_CLONES
static void row_max_f32(void *restrict acc_, const void *restrict x_, size_t n)
{
    float *restrict acc = acc_;
    const float *restrict x = x_;
    CPU_LOOP(n, acc[i] = NM_MAXF(x[i], acc[i]););
}

#define RED_INT(T, U, TMIN)                                                                       \
    static void init0_##T(void *restrict acc_, size_t n)                                          \
    {                                                                                             \
        T *restrict acc = acc_;                                                                   \
        CPU_LOOP(n, acc[i] = 0;);                                                                 \
    }                                                                                             \
    static void initmin_##T(void *restrict acc_, size_t n)                                        \
    {                                                                                             \
        T *restrict acc = acc_;                                                                   \
        CPU_LOOP(n, acc[i] = TMIN;);                                                              \
    }                                                                                             \
    static void run_sum_##T(void *restrict acc, const void *restrict x_, size_t n)                \
    {                                                                                             \
        const T *restrict x = x_;                                                                 \
        U part[CPU_BLK] = {0}, s = 0;                                                             \
        size_t i = 0;                                                                             \
        for (; i + CPU_BLK <= n; i += CPU_BLK)                                                     \
            for (size_t k = 0; k < CPU_BLK; k++)                                                  \
                part[k] += (U)x[i + k];                                                           \
        for (; i < n; i++)                                                                        \
            s += (U)x[i];                                                                         \
        for (size_t k = 0; k < CPU_BLK; k++)                                                      \
            s += part[k];                                                                         \
        *(T *)acc = (T)((U)*(T *)acc + s);                                                        \
    }                                                                                             \
    static void row_sum_##T(void *restrict acc_, const void *restrict x_, size_t n)               \
    {                                                                                             \
        T *restrict acc = acc_;                                                                   \
        const T *restrict x = x_;                                                                 \
        CPU_LOOP(n, acc[i] = (T)((U)acc[i] + (U)x[i]););                                          \
    }                                                                                             \
    static void run_max_##T(void *restrict acc, const void *restrict x_, size_t n)                \
    {                                                                                             \
        const T *restrict x = x_;                                                                 \
        T part[CPU_BLK], m = *(T *)acc;                                                           \
        size_t i = 0;                                                                             \
        for (size_t k = 0; k < CPU_BLK; k++)                                                      \
            part[k] = m;                                                                          \
        for (; i + CPU_BLK <= n; i += CPU_BLK)                                                     \
            for (size_t k = 0; k < CPU_BLK; k++)                                                  \
                part[k] = x[i + k] > part[k] ? x[i + k] : part[k];                                \
        for (; i < n; i++)                                                                        \
            m = x[i] > m ? x[i] : m;                                                              \
        for (size_t k = 0; k < CPU_BLK; k++)                                                      \
            m = part[k] > m ? part[k] : m;                                                        \
        *(T *)acc = m;                                                                            \
    }                                                                                             \
    static void row_max_##T(void *restrict acc_, const void *restrict x_, size_t n)               \
    {                                                                                             \
        T *restrict acc = acc_;                                                                   \
        const T *restrict x = x_;                                                                 \
        CPU_LOOP(n, acc[i] = x[i] > acc[i] ? x[i] : acc[i];);                                     \
    }                                                                                             \
    static void store_##T(void *restrict y, const void *restrict acc, size_t n, double div)       \
    {                                                                                             \
        (void)div;                                                                                \
        memcpy(y, acc, n * sizeof(T));                                                            \
    }
RED_INT(int32_t, uint32_t, INT32_MIN)
RED_INT(int64_t, uint64_t, INT64_MIN)

static void store_max_f32(void *restrict y, const void *restrict acc, size_t n, double div)
{
    (void)div;
    memcpy(y, acc, n * sizeof(float));
}

static const red_vt red_sum_f32 = {8, init_f64, run_sum_f32, row_sum_f32, merge_f64,
                                   store_sum_f32};
static const red_vt red_max_f32 = {4, init_max_f32, run_max_f32, row_max_f32, run_max_f32,
                                   store_max_f32};
static const red_vt red_sum_i32 = {4, init0_int32_t, run_sum_int32_t, row_sum_int32_t,
                                   run_sum_int32_t, store_int32_t};
static const red_vt red_max_i32 = {4, initmin_int32_t, run_max_int32_t, row_max_int32_t,
                                   run_max_int32_t, store_int32_t};
static const red_vt red_sum_i64 = {8, init0_int64_t, run_sum_int64_t, row_sum_int64_t,
                                   run_sum_int64_t, store_int64_t};
static const red_vt red_max_i64 = {8, initmin_int64_t, run_max_int64_t, row_max_int64_t,
                                   run_max_int64_t, store_int64_t};

/* Output columns per work item when the innermost axis is kept: their accumulators live on
 * the stack (8 KiB), long enough runs to vectorise, short enough that a few output rows still
 * split over the pool. */
#define RED_COLS 1024
/* Most partial results RED_ALL keeps in scratch; fixed, so that a sum does not depend on the
 * number of threads. */
#define RED_MAX_PARTS 64

typedef struct red_params {
    int kind;
    const red_vt *vt;
    size_t esize;
    double div;              /* count for ReduceMean, else 1 */
    int64_t count;           /* input elements per output element */
    int64_t out_numel;
    int64_t run;             /* length of the innermost (contiguous) run */
    uint32_t n_keep;         /* kept axes other than an innermost kept one */
    int64_t keep_dims[LOOM_MAX_RANK], keep_strides[LOOM_MAX_RANK]; /* strides in elements */
    uint32_t n_red;          /* reduced axes other than an innermost reduced one */
    int64_t red_dims[LOOM_MAX_RANK], red_strides[LOOM_MAX_RANK];
    int64_t col_tiles;       /* RED_OUTER: column tiles per output row */
    int64_t parts, part_len; /* RED_ALL */
} red_params;

typedef struct red_job {
    const red_params *p;
    const char *x;
    char *y;
    char *parts; /* RED_ALL: one accumulator per part, packed */
} red_job;

/* Advance the odometer IDX over DIMS, moving *OFF by STRIDES; 0 once it has wrapped around. */
static int odo_next(uint32_t n, const int64_t *dims, const int64_t *strides, int64_t *idx,
                    int64_t *off)
{
    for (uint32_t d = n; d-- > 0;) {
        *off += strides[d];
        if (++idx[d] < dims[d])
            return 1;
        *off -= strides[d] * dims[d];
        idx[d] = 0;
    }
    return 0;
}

/* Input offset (elements) of kept-axes position POS, with its odometer state in IDX. */
static int64_t keep_offset(const red_params *p, size_t pos, int64_t *idx)
{
    int64_t off = 0;
    for (uint32_t d = p->n_keep; d-- > 0;) {
        idx[d] = (int64_t)(pos % (size_t)p->keep_dims[d]);
        pos /= (size_t)p->keep_dims[d];
        off += idx[d] * p->keep_strides[d];
    }
    return off;
}

/* Outputs [BEGIN, END), each the reduction of count elements in runs of p->run. */
static void red_inner(void *arg, size_t begin, size_t end)
{
    const red_job *j = arg;
    const red_params *p = j->p;
    const size_t es = p->esize;
    int64_t kidx[LOOM_MAX_RANK], ridx[LOOM_MAX_RANK] = {0};
    int64_t base = keep_offset(p, begin, kidx);
    double acc[1];
    for (size_t o = begin; o < end; o++) {
        p->vt->init(acc, 1);
        int64_t roff = 0;
        do
            p->vt->run(acc, j->x + (size_t)(base + roff) * es, (size_t)p->run);
        while (odo_next(p->n_red, p->red_dims, p->red_strides, ridx, &roff));
        p->vt->store(j->y + o * es, acc, 1, p->div);
        odo_next(p->n_keep, p->keep_dims, p->keep_strides, kidx, &base);
    }
}

/* Work items [BEGIN, END) = (output row, column tile): fold every reduced position's row in. */
static void red_outer(void *arg, size_t begin, size_t end)
{
    const red_job *j = arg;
    const red_params *p = j->p;
    const size_t es = p->esize, run = (size_t)p->run;
    int64_t kidx[LOOM_MAX_RANK], ridx[LOOM_MAX_RANK] = {0};
    double acc[RED_COLS];
    for (size_t it = begin; it < end; it++) {
        const size_t row = it / (size_t)p->col_tiles;
        const size_t c0 = (it % (size_t)p->col_tiles) * RED_COLS;
        const size_t w = run - c0 < RED_COLS ? run - c0 : RED_COLS;
        const int64_t base = keep_offset(p, row, kidx) + (int64_t)c0;
        p->vt->init(acc, w);
        int64_t roff = 0;
        do
            p->vt->row(acc, j->x + (size_t)(base + roff) * es, w);
        while (odo_next(p->n_red, p->red_dims, p->red_strides, ridx, &roff));
        p->vt->store(j->y + (row * run + c0) * es, acc, w, p->div);
    }
}

/* Partial results of RED_ALL: part I covers a contiguous slice of the input. */
static void red_parts(void *arg, size_t begin, size_t end)
{
    const red_job *j = arg;
    const red_params *p = j->p;
    for (size_t i = begin; i < end; i++) {
        const int64_t from = (int64_t)i * p->part_len;
        const int64_t n = p->count - from < p->part_len ? p->count - from : p->part_len;
        char *part = j->parts + i * p->vt->acc_size;
        p->vt->init(part, 1);
        p->vt->run(part, j->x + (size_t)from * p->esize, (size_t)n);
    }
}

/* Every output the reduction of nothing: the identity, or NaN for a mean (0 / 0). */
static void red_fill(const red_params *p, char *y)
{
    double acc[RED_COLS];
    p->vt->init(acc, RED_COLS);
    for (int64_t at = 0; at < p->out_numel; at += RED_COLS) {
        const int64_t w = p->out_numel - at < RED_COLS ? p->out_numel - at : RED_COLS;
        p->vt->store(y + (size_t)at * p->esize, acc, (size_t)w, p->div);
    }
}

static loom_status red_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const red_params *p = k->params;
    red_job job = {p, args->inputs[0], args->outputs[0], args->scratch};
    switch (p->kind) {
    case RED_NOOP:
        break;
    case RED_FILL:
        red_fill(p, job.y);
        break;
    case RED_COPY:
        memcpy(job.y, job.x, (size_t)p->out_numel * p->esize);
        break;
    case RED_ALL: {
        double acc[1];
        cpu_parallel_for(pool, (size_t)p->parts, 1, red_parts, &job);
        p->vt->init(acc, 1);
        p->vt->merge(acc, job.parts, (size_t)p->parts);
        p->vt->store(job.y, acc, 1, p->div);
        break;
    }
    case RED_INNER:
        cpu_parallel_for(pool, (size_t)p->out_numel, grain_items(p->count, NM_GRAIN), red_inner,
                         &job);
        break;
    case RED_OUTER: {
        const int64_t w = p->run < RED_COLS ? p->run : RED_COLS;
        cpu_parallel_for(pool, (size_t)(p->out_numel / p->run * p->col_tiles),
                         grain_items(p->count * w, NM_GRAIN), red_outer, &job);
        break;
    }
    }
    return LOOM_OK;
}

/* The reduced axes of NODE into RED[rank] (1: reduced). Returns 0 when the axes are malformed. */
static int red_axes(const loom_node_desc *node, int *red)
{
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *a = loom_node_attr(node, "axes");
    for (uint32_t d = 0; d < x->rank; d++)
        red[d] = a ? 0 : 1; /* no attribute at all: ONNX's default, every axis */
    if (!a)
        return 1;
    if (a->kind != LOOM_ATTR_INTS || (a->count && !a->ints))
        return 0;
    for (size_t i = 0; i < a->count; i++) {
        const int64_t ax = a->ints[i];
        if (ax < 0 || ax >= (int64_t)x->rank || red[ax])
            return 0;
        red[ax] = 1;
    }
    return 1;
}

static int red_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    if (node->n_inputs < 1 || node->n_outputs != 1) {
        cpu_reason(reason, len, "%s: expects one data input and one output", op);
        return 0;
    }
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    if (node->op == LOOM_OP_REDUCE_MEAN) {
        if (x->dtype != LOOM_DTYPE_F32)
            return no_dtype(node, x->dtype, "float32", reason, len);
    } else if (x->dtype != LOOM_DTYPE_F32 && x->dtype != LOOM_DTYPE_I32 &&
               x->dtype != LOOM_DTYPE_I64) {
        return no_dtype(node, x->dtype, "float32, int32, int64", reason, len);
    }
    if (y->dtype != x->dtype) {
        cpu_reason(reason, len, "%s: output dtype differs from the input's", op);
        return 0;
    }
    int red[LOOM_MAX_RANK];
    if (x->rank > LOOM_MAX_RANK || !red_axes(node, red)) {
        cpu_reason(reason, len, "%s: axes must be unique and within rank %u", op, x->rank);
        return 0;
    }
    int64_t kept = 1;
    for (uint32_t d = 0; d < x->rank; d++)
        if (!red[d])
            kept *= x->dims[d];
    if (loom_tensor_desc_numel(y) != kept) {
        cpu_reason(reason, len, "%s: output shape does not match the reduced axes", op);
        return 0;
    }
    return 1;
}

static loom_status red_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    red_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_dtype t = x->dtype;
    const int is_max = node->op == LOOM_OP_REDUCE_MAX;
    p->vt = t == LOOM_DTYPE_F32   ? (is_max ? &red_max_f32 : &red_sum_f32)
            : t == LOOM_DTYPE_I32 ? (is_max ? &red_max_i32 : &red_sum_i32)
                                  : (is_max ? &red_max_i64 : &red_sum_i64);
    p->esize = loom_dtype_size(t);
    p->out_numel = loom_tensor_desc_numel(&node->outputs[0]);
    int red[LOOM_MAX_RANK];
    red_axes(node, red);
    const int64_t in_numel = loom_tensor_desc_numel(x);
    p->count = p->out_numel ? in_numel / p->out_numel : 0;
    p->div = node->op == LOOM_OP_REDUCE_MEAN ? (double)p->count : 1.0;
    k->params = p;
    k->run = red_run;

    /* Coalesce: drop size-1 axes, merge neighbours that are both kept or both reduced. */
    int64_t dims[LOOM_MAX_RANK];
    int flag[LOOM_MAX_RANK];
    uint32_t r = 0;
    int any_red = 0;
    for (uint32_t d = 0; d < x->rank; d++) {
        if (x->dims[d] == 1)
            continue;
        if (r > 0 && flag[r - 1] == red[d]) {
            dims[r - 1] *= x->dims[d];
        } else {
            dims[r] = x->dims[d];
            flag[r++] = red[d];
        }
        any_red |= red[d];
    }
    if (p->out_numel == 0) {
        p->kind = RED_NOOP;
        return LOOM_OK;
    }
    if (in_numel == 0) {
        p->kind = RED_FILL;
        return LOOM_OK;
    }
    if (!any_red) {
        p->kind = RED_COPY;
        return LOOM_OK;
    }
    if (r == 1) { /* one reduced axis left, nothing kept */
        p->kind = RED_ALL;
        p->parts = (p->count + NM_GRAIN - 1) / NM_GRAIN;
        if (p->parts > RED_MAX_PARTS)
            p->parts = RED_MAX_PARTS;
        p->part_len = (p->count + p->parts - 1) / p->parts;
        p->parts = (p->count + p->part_len - 1) / p->part_len;
        k->scratch_bytes = (size_t)p->parts * p->vt->acc_size;
        return LOOM_OK;
    }
    int64_t strides[LOOM_MAX_RANK];
    int64_t s = 1;
    for (uint32_t d = r; d-- > 0;) {
        strides[d] = s;
        s *= dims[d];
    }
    p->run = dims[r - 1];
    for (uint32_t d = 0; d + 1 < r; d++) {
        if (flag[d]) {
            p->red_dims[p->n_red] = dims[d];
            p->red_strides[p->n_red++] = strides[d];
        } else {
            p->keep_dims[p->n_keep] = dims[d];
            p->keep_strides[p->n_keep++] = strides[d];
        }
    }
    if (flag[r - 1]) {
        p->kind = RED_INNER;
    } else {
        p->kind = RED_OUTER;
        p->col_tiles = (p->run + RED_COLS - 1) / RED_COLS;
    }
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_normalize(cpu_op_entry *table)
{
    table[LOOM_OP_SOFTMAX] = (cpu_op_entry){sm_supports, sm_prepare};
    table[LOOM_OP_LAYER_NORMALIZATION] = (cpu_op_entry){ln_supports, ln_prepare};
    table[LOOM_OP_BATCH_NORMALIZATION] = (cpu_op_entry){bn_supports, bn_prepare};
    table[LOOM_OP_REDUCE_MEAN] = (cpu_op_entry){red_supports, red_prepare};
    table[LOOM_OP_REDUCE_SUM] = (cpu_op_entry){red_supports, red_prepare};
    table[LOOM_OP_REDUCE_MAX] = (cpu_op_entry){red_supports, red_prepare};
}
