/*
 * CPU kernels of the activations that are not plain elementwise maps: Softmax and LogSoftmax
 * (along one axis) and PRelu (slope broadcast to X), with ONNX opset-18 semantics. Relu, Sigmoid,
 * Tanh, Gelu ... are in kernels_elementwise.c; HardSigmoid, HardSwish, Softplus, Elu and Selu in
 * kernels_compare_logic_round.c.
 */
#include "cpu_axis.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NM_GRAIN_EXP 8192 /* Softmax: an inline exp per element, ~2 ns */

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32

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

/* (cpu_kernels.h) CPU_BLK float partial sums per chunk of SM_CHUNK elements, the chunks' totals
 * added in double. No restrict: the compiled Softmax chains call it in place (Y == X). */
CPU_CLONES
double cpu_exp_sum_f32(float *y, const float *x, size_t n, float m)
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
        const float m = cpu_max_f32(x, len);
        const double s = cpu_exp_sum_f32(y, x, len, m);
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
            CPU_LOOP(w, m[i] = CPU_MAXF(xr[i], m[i]););
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
        cpu_parallel_for(pool, (size_t)p->outer, cpu_grain_items(p->len, NM_GRAIN_EXP), sm_rows,
                         &job);
    else
        cpu_parallel_for(pool, (size_t)(p->outer * p->tiles),
                         cpu_grain_items(p->len * (p->inner < SM_TILE ? p->inner : SM_TILE),
                                         NM_GRAIN_EXP),
                             sm_tiles, &job);
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
        return cpu_no_dtype(node, x->dtype, "float32", reason, len);
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

/* ---- LogSoftmax ---- */

static void lsm_task(void *arg, size_t c0, size_t c1)
{
    const cpu_axis_job *j = arg;
    const cpu_axis_params *p = j->p;
    const int64_t len = p->len, inner = p->inner;
    for (size_t c = c0; c < c1; c++) {
        const size_t o = c / (size_t)inner, i = c % (size_t)inner;
        const float *x = (const float *)j->x + o * (size_t)(len * inner) + i;
        float *y = (float *)j->y + o * (size_t)(len * inner) + i;
        float m = -INFINITY;
        for (int64_t l = 0; l < len; l++) {
            const float v = x[l * inner];
            if (v > m || v != v)
                m = v;
        }
        double s = 0.0;
        for (int64_t l = 0; l < len; l++)
            s += exp((double)(x[l * inner] - m));
        const float lse = m + (float)log(s);
        for (int64_t l = 0; l < len; l++)
            y[l * inner] = x[l * inner] - lse;
    }
}

static loom_status lsm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const cpu_axis_params *p = k->params;
    cpu_axis_job j = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    size_t cols = (size_t)(p->outer * p->inner);
    if (cols == 0 || p->len == 0)
        return LOOM_OK;
    cpu_parallel_for(pool, cols, cpu_grain(p->len * 8), lsm_task, &j);
    return LOOM_OK;
}

static int lsm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->inputs[0].dtype != F32)
        return cpu_no_dtype(node, node->inputs[0].dtype, "float32", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank)
        return cpu_reason(reason, len, "LogSoftmax: axis %lld out of range", (long long)axis);
    return 1;
}

static loom_status lsm_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    cpu_axis_params *p = cpu_axis_make(&node->inputs[0], loom_node_attr_int(node, "axis", -1));
    if (!p)
        return cpu_oom(node, err, err_len);
    k->params = p;
    k->run = lsm_run;
    return LOOM_OK;
}

/* ===========================================================================================
 * PRelu: Y = X < 0 ? slope * X : X, slope broadcast to X; rows of X's last dim.
 * =========================================================================================== */

typedef struct pr_params {
    uint32_t rank;
    loom_dtype dt;
    int64_t dims[LOOM_MAX_RANK], sstride[LOOM_MAX_RANK];
    int64_t rows, row_len;
} pr_params;

typedef struct pr_job {
    const pr_params *p;
    const void *x, *s;
    void *y;
} pr_job;

#define PR_ROW(T)                                                                                  \
    do {                                                                                           \
        const T *x = (const T *)j->x + r * (size_t)n, *s = (const T *)j->s + so;                   \
        T *y = (T *)j->y + r * (size_t)n;                                                          \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] = x[i] < 0 ? (T)(x[i] * s[i * ls]) : x[i];                                        \
    } while (0)

static void pr_task(void *arg, size_t r0, size_t r1)
{
    const pr_job *j = arg;
    const pr_params *p = j->p;
    const uint32_t last = p->rank - 1;
    const int64_t n = p->row_len, ls = p->sstride[last];
    for (size_t r = r0; r < r1; r++) {
        size_t rem = r;
        int64_t so = 0;
        for (uint32_t d = last; d-- > 0;) {
            so += (int64_t)(rem % (size_t)p->dims[d]) * p->sstride[d];
            rem /= (size_t)p->dims[d];
        }
        switch (p->dt) {
        case F32: PR_ROW(float); break;
        case I32: PR_ROW(int32_t); break;
        default: PR_ROW(int64_t); break;
        }
    }
}

static loom_status pr_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const pr_params *p = k->params;
    if (p->rows == 0 || p->row_len == 0)
        return LOOM_OK;
    pr_job j = {p, args->inputs[0], args->inputs[1], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain(p->row_len), pr_task, &j);
    return LOOM_OK;
}

static int pr_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!cpu_is_f32_i32_i64(t) || node->inputs[1].dtype != t)
        return cpu_no_dtype(node, t, "float32, int32, int64", reason, len);
    if (node->inputs[1].rank > node->inputs[0].rank)
        return cpu_reason(reason, len, "PRelu: slope has a higher rank than X");
    return 1;
}

static loom_status pr_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    pr_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *s = &node->inputs[1];
    p->dt = x->dtype;
    p->rank = x->rank ? x->rank : 1;
    int64_t st = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        p->dims[d] = x->rank ? x->dims[d] : 1;
        /* slope dims are right-aligned against X's */
        int64_t sd = d + s->rank >= p->rank && x->rank ? s->dims[d + s->rank - p->rank] : 1;
        p->sstride[d] = sd == 1 ? 0 : st;
        st *= sd;
    }
    p->row_len = p->dims[p->rank - 1];
    p->rows = cpu_prod(p->dims, 0, p->rank - 1);
    k->params = p;
    k->run = pr_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_activations(cpu_op_entry *table)
{
    table[LOOM_OP_SOFTMAX] = (cpu_op_entry){sm_supports, sm_prepare};
    table[LOOM_OP_LOG_SOFTMAX] = (cpu_op_entry){lsm_supports, lsm_prepare};
    table[LOOM_OP_PRELU] = (cpu_op_entry){pr_supports, pr_prepare};
}
