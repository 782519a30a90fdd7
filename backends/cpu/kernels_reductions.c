/*
 * CPU kernels of the reductions: ReduceMean, ReduceSum, ReduceMax (planned), ReduceMin,
 * ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare (a walk per
 * output element), ArgMax and ArgMin, with ONNX opset-18 semantics.
 *
 * ReduceMean, ReduceSum and ReduceMax are planned at prepare time: the input's dimensions lose
 * their size-1 members and adjacent dimensions that are both kept or both reduced merge, so every
 * reduction becomes one of a few shapes: all of a contiguous tensor, contiguous runs into one
 * output element each (innermost axis reduced), or whole rows folded into an output row
 * (innermost axis kept).
 */
#include "cpu_axis.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements of work per parallel chunk: below this a tensor runs on the calling thread. */
#define NM_GRAIN 16384

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64

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
    const float m = cpu_max_f32(x, n), a = *(float *)acc;
    *(float *)acc = CPU_MAXF(m, a);
}

CPU_CLONES
static void row_max_f32(void *restrict acc_, const void *restrict x_, size_t n)
{
    float *restrict acc = acc_;
    const float *restrict x = x_;
    CPU_LOOP(n, acc[i] = CPU_MAXF(x[i], acc[i]););
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
        cpu_parallel_for(pool, (size_t)p->out_numel, cpu_grain_items(p->count, NM_GRAIN), red_inner,
                         &job);
        break;
    case RED_OUTER: {
        const int64_t w = p->run < RED_COLS ? p->run : RED_COLS;
        cpu_parallel_for(pool, (size_t)(p->out_numel / p->run * p->col_tiles),
                         cpu_grain_items(p->count * w, NM_GRAIN), red_outer, &job);
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
            return cpu_no_dtype(node, x->dtype, "float32", reason, len);
    } else if (x->dtype != LOOM_DTYPE_F32 && x->dtype != LOOM_DTYPE_I32 &&
               x->dtype != LOOM_DTYPE_I64) {
        return cpu_no_dtype(node, x->dtype, "float32, int32, int64", reason, len);
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

/* ===========================================================================================
 * ReduceMin, ReduceProd: each output element walks its reduced sub-tensor.
 * =========================================================================================== */

typedef struct rd_params {
    loom_dtype dt;
    int is_min;
    uint32_t n_keep, n_red;
    int64_t keep_dims[LOOM_MAX_RANK], keep_strides[LOOM_MAX_RANK];
    int64_t red_dims[LOOM_MAX_RANK], red_strides[LOOM_MAX_RANK];
    int64_t out_numel, count;
} rd_params;

typedef struct rd_job {
    const rd_params *p;
    const void *x;
    void *y;
} rd_job;

#define RD_TASK(T, ACC, INIT_MIN, ISNAN)                                                           \
    static void rd_##T(const rd_job *j, size_t o0, size_t o1)                                      \
    {                                                                                              \
        const rd_params *p = j->p;                                                                 \
        const T *x = j->x;                                                                         \
        T *y = j->y;                                                                               \
        const uint32_t nr = p->n_red;                                                              \
        const int64_t run = nr ? p->red_dims[nr - 1] : 1;                                          \
        const int64_t rs = nr ? p->red_strides[nr - 1] : 0;                                        \
        for (size_t o = o0; o < o1; o++) {                                                         \
            size_t rem = o;                                                                        \
            int64_t base = 0;                                                                      \
            for (uint32_t d = p->n_keep; d-- > 0;) {                                               \
                base += (int64_t)(rem % (size_t)p->keep_dims[d]) * p->keep_strides[d];             \
                rem /= (size_t)p->keep_dims[d];                                                    \
            }                                                                                      \
            ACC acc = p->is_min ? (ACC)(INIT_MIN) : (ACC)1;                                        \
            int64_t idx[LOOM_MAX_RANK] = {0};                                                      \
            const int64_t runs = p->count / (run ? run : 1);                                       \
            for (int64_t q = 0; q < runs && run > 0; q++) {                                        \
                int64_t off = base;                                                                \
                for (uint32_t d = 0; d + 1 < nr; d++)                                              \
                    off += idx[d] * p->red_strides[d];                                             \
                const T *xs = x + off;                                                             \
                if (p->is_min) {                                                                   \
                    for (int64_t i = 0; i < run; i++) {                                            \
                        const ACC v = (ACC)xs[i * rs];                                             \
                        if (v < acc || ISNAN(v))                                                   \
                            acc = ISNAN(acc) ? acc : v;                                            \
                    }                                                                              \
                } else {                                                                           \
                    for (int64_t i = 0; i < run; i++)                                              \
                        acc = (ACC)(acc * (ACC)xs[i * rs]);                                        \
                }                                                                                  \
                for (uint32_t d = nr ? nr - 1 : 0; d-- > 0;) {                                     \
                    if (++idx[d] < p->red_dims[d])                                                 \
                        break;                                                                     \
                    idx[d] = 0;                                                                    \
                }                                                                                  \
            }                                                                                      \
            y[o] = (T)acc;                                                                         \
        }                                                                                          \
    }
RD_TASK(float, float, INFINITY, CPU_IS_NAN_F)
RD_TASK(int32_t, int32_t, INT32_MAX, CPU_NEVER_NAN)
RD_TASK(int64_t, int64_t, INT64_MAX, CPU_NEVER_NAN)

static void rd_task(void *arg, size_t o0, size_t o1)
{
    const rd_job *j = arg;
    switch (j->p->dt) {
    case F32: rd_float(j, o0, o1); break;
    case I32: rd_int32_t(j, o0, o1); break;
    default: rd_int64_t(j, o0, o1); break;
    }
}

static loom_status rd_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const rd_params *p = k->params;
    if (p->out_numel == 0)
        return LOOM_OK;
    rd_job j = {p, args->inputs[0], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->out_numel, cpu_grain(p->count), rd_task, &j);
    return LOOM_OK;
}

/* The canonical axes attribute, whatever the dtype. */
static int rd_axes_ok(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_attr *a = loom_node_attr(node, "axes");
    if (!a || a->kind != LOOM_ATTR_INTS)
        return cpu_reason(reason, len, "%s: canonical axes missing", node->op_name);
    for (size_t i = 0; i < a->count; i++)
        if (a->ints[i] < 0 || a->ints[i] >= (int64_t)node->inputs[0].rank)
            return cpu_reason(reason, len, "%s: axis out of range", node->op_name);
    return 1;
}

static int rd_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!cpu_is_f32_i32_i64(t))
        return cpu_no_dtype(node, t, "float32, int32, int64", reason, len);
    return rd_axes_ok(node, reason, len);
}

static loom_status rd_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    rd_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *a = loom_node_attr(node, "axes");
    int red[LOOM_MAX_RANK] = {0};
    for (size_t i = 0; i < a->count; i++)
        red[a->ints[i]] = 1;
    p->dt = x->dtype;
    p->is_min = node->op == LOOM_OP_REDUCE_MIN;
    int64_t strides[LOOM_MAX_RANK], s = 1;
    for (uint32_t d = x->rank; d-- > 0;) {
        strides[d] = s;
        s *= x->dims[d];
    }
    p->count = 1;
    for (uint32_t d = 0; d < x->rank; d++) {
        if (red[d]) {
            p->red_dims[p->n_red] = x->dims[d];
            p->red_strides[p->n_red++] = strides[d];
            p->count *= x->dims[d];
        } else {
            p->keep_dims[p->n_keep] = x->dims[d];
            p->keep_strides[p->n_keep++] = strides[d];
        }
    }
    p->out_numel = loom_tensor_desc_numel(&node->outputs[0]);
    k->params = p;
    k->run = rd_run;
    return LOOM_OK;
}

/* ---- ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare (float32, float64) 
 * The walk of ReduceMin/ReduceProd, accumulating in double. LogSumExp takes the max first, so
 * that large scores do not overflow exp. */

enum { RX_L1, RX_L2, RX_LOG_SUM, RX_LOG_SUM_EXP, RX_SUM_SQUARE };

typedef struct rx_job {
    const rd_params *p;
    int mode;
    const void *x; /* float32 or float64 (p->dt) */
    void *y;
} rx_job;

/* Offset of output O's first element in X, and the walk over its reduced elements. */
static int64_t rx_base(const rd_params *p, size_t o)
{
    int64_t base = 0;
    for (uint32_t d = p->n_keep; d-- > 0;) {
        base += (int64_t)(o % (size_t)p->keep_dims[d]) * p->keep_strides[d];
        o /= (size_t)p->keep_dims[d];
    }
    return base;
}

/* Sum over the reduced elements of output O of f(x) (MODE), with SHIFT subtracted first for
 * LogSumExp; or, when MAX_PASS, their max. */
static double rx_walk(const rd_params *p, const void *x, int64_t base, int mode, double shift,
                      int max_pass)
{
    const uint32_t nr = p->n_red;
    const int64_t run = nr ? p->red_dims[nr - 1] : 1, rs = nr ? p->red_strides[nr - 1] : 0;
    const int64_t runs = run ? p->count / run : 0;
    int64_t idx[LOOM_MAX_RANK] = {0};
    double acc = max_pass ? -INFINITY : 0.0;
    for (int64_t q = 0; q < runs; q++) {
        int64_t off = base;
        for (uint32_t d = 0; d + 1 < nr; d++)
            off += idx[d] * p->red_strides[d];
        const int f64 = p->dt == LOOM_DTYPE_F64;
        for (int64_t i = 0; i < run; i++) {
            const int64_t at = off + i * rs;
            const double v = f64 ? ((const double *)x)[at] : (double)((const float *)x)[at];
            if (max_pass) {
                acc = v > acc || isnan(v) ? v : acc;
                continue;
            }
            switch (mode) {
            case RX_L1: acc += fabs(v); break;
            case RX_LOG_SUM: acc += v; break;
            case RX_LOG_SUM_EXP: acc += exp(v - shift); break;
            default: acc += v * v; break;
            }
        }
        for (uint32_t d = nr ? nr - 1 : 0; d-- > 0;) {
            if (++idx[d] < p->red_dims[d])
                break;
            idx[d] = 0;
        }
    }
    return acc;
}

static void rx_task(void *arg, size_t o0, size_t o1)
{
    const rx_job *j = arg;
    for (size_t o = o0; o < o1; o++) {
        const int64_t base = rx_base(j->p, o);
        double r;
        if (j->mode == RX_LOG_SUM_EXP) {
            const double m = rx_walk(j->p, j->x, base, j->mode, 0.0, 1);
            r = isfinite(m) ? m + log(rx_walk(j->p, j->x, base, j->mode, m, 0))
                            : m; /* -inf (nothing or all -inf), +inf or NaN */
            if (j->p->count == 0)
                r = -INFINITY;
        } else {
            r = rx_walk(j->p, j->x, base, j->mode, 0.0, 0);
            if (j->mode == RX_L2)
                r = sqrt(r);
            else if (j->mode == RX_LOG_SUM)
                r = log(r);
        }
        if (j->p->dt == LOOM_DTYPE_F64)
            ((double *)j->y)[o] = r;
        else
            ((float *)j->y)[o] = (float)r;
    }
}

static loom_status rx_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const rd_params *p = k->params;
    if (p->out_numel == 0)
        return LOOM_OK;
    const loom_op_id op = k->op;
    rx_job j = {p,
                op == LOOM_OP_REDUCE_L1        ? RX_L1
                : op == LOOM_OP_REDUCE_L2      ? RX_L2
                : op == LOOM_OP_REDUCE_LOG_SUM ? RX_LOG_SUM
                : op == LOOM_OP_REDUCE_LOG_SUM_EXP ? RX_LOG_SUM_EXP
                                                   : RX_SUM_SQUARE,
                args->inputs[0], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->out_numel, cpu_grain(p->count), rx_task, &j);
    return LOOM_OK;
}

static int rx_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (t != F32 && t != LOOM_DTYPE_F64)
        return cpu_no_dtype(node, t, "float32, float64", reason, len);
    return rd_axes_ok(node, reason, len); /* not rd_supports: that one refuses float64 */
}

static loom_status rx_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    loom_status st = rd_prepare(node, k, err, err_len);
    if (st == LOOM_OK)
        k->run = rx_run;
    return st;
}

/* ---- ArgMax, ArgMin: NaN wins (as numpy's), ties go to the first or the last index ---- */

#define ARG_TASK(T, ISNAN)                                                                         \
    static void arg_##T(const cpu_axis_job *j, size_t c0, size_t c1)                               \
    {                                                                                              \
        const cpu_axis_params *p = j->p;                                                           \
        const int64_t len = p->len, inner = p->inner;                                              \
        int64_t *y = j->y;                                                                         \
        for (size_t c = c0; c < c1; c++) {                                                         \
            const size_t o = c / (size_t)inner, i = c % (size_t)inner;                             \
            const T *x = (const T *)j->x + o * (size_t)(len * inner) + i;                          \
            T best = x[0];                                                                         \
            int64_t at = 0;                                                                        \
            for (int64_t l = 1; l < len; l++) {                                                    \
                const T v = x[l * inner];                                                          \
                int take;                                                                          \
                if (ISNAN(best))                                                                   \
                    take = p->last && ISNAN(v);                                                    \
                else if (ISNAN(v))                                                                 \
                    take = 1;                                                                      \
                else if (p->is_max)                                                                \
                    take = p->last ? v >= best : v > best;                                         \
                else                                                                               \
                    take = p->last ? v <= best : v < best;                                         \
                if (take) {                                                                        \
                    best = v;                                                                      \
                    at = l;                                                                        \
                }                                                                                  \
            }                                                                                      \
            y[c] = at;                                                                             \
        }                                                                                          \
    }
ARG_TASK(float, CPU_IS_NAN_F)
ARG_TASK(int32_t, CPU_NEVER_NAN)
ARG_TASK(int64_t, CPU_NEVER_NAN)
ARG_TASK(int8_t, CPU_NEVER_NAN)
ARG_TASK(uint8_t, CPU_NEVER_NAN)

static void arg_task(void *arg, size_t c0, size_t c1)
{
    const cpu_axis_job *j = arg;
    switch (j->p->dt) {
    case F32: arg_float(j, c0, c1); break;
    case I32: arg_int32_t(j, c0, c1); break;
    case I64: arg_int64_t(j, c0, c1); break;
    case LOOM_DTYPE_I8: arg_int8_t(j, c0, c1); break;
    default: arg_uint8_t(j, c0, c1); break;
    }
}

static loom_status arg_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const cpu_axis_params *p = k->params;
    cpu_axis_job j = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    size_t cols = (size_t)(p->outer * p->inner);
    if (cols == 0 || p->len == 0)
        return LOOM_OK;
    cpu_parallel_for(pool, cols, cpu_grain(p->len), arg_task, &j);
    return LOOM_OK;
}

static int arg_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!cpu_is_f32_i32_i64(t) && t != LOOM_DTYPE_I8 && t != LOOM_DTYPE_U8)
        return cpu_no_dtype(node, t, "float32, int32, int64, int8, uint8", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank ||
        node->outputs[0].dtype != LOOM_DTYPE_I64)
        return cpu_reason(reason, len, "%s: axis %lld out of range", node->op_name,
                          (long long)axis);
    return 1;
}

static loom_status arg_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    cpu_axis_params *p = cpu_axis_make(&node->inputs[0], loom_node_attr_int(node, "axis", 0));
    if (!p)
        return cpu_oom(node, err, err_len);
    p->is_max = node->op == LOOM_OP_ARG_MAX;
    p->last = loom_node_attr_int(node, "select_last_index", 0) != 0;
    k->params = p;
    k->run = arg_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_reductions(cpu_op_entry *table)
{
    table[LOOM_OP_REDUCE_MEAN] = (cpu_op_entry){red_supports, red_prepare};
    table[LOOM_OP_REDUCE_SUM] = (cpu_op_entry){red_supports, red_prepare};
    table[LOOM_OP_REDUCE_MAX] = (cpu_op_entry){red_supports, red_prepare};
    table[LOOM_OP_REDUCE_MIN] = (cpu_op_entry){rd_supports, rd_prepare};
    table[LOOM_OP_REDUCE_PROD] = (cpu_op_entry){rd_supports, rd_prepare};
    table[LOOM_OP_REDUCE_L1] = (cpu_op_entry){rx_supports, rx_prepare};
    table[LOOM_OP_REDUCE_L2] = (cpu_op_entry){rx_supports, rx_prepare};
    table[LOOM_OP_REDUCE_LOG_SUM] = (cpu_op_entry){rx_supports, rx_prepare};
    table[LOOM_OP_REDUCE_LOG_SUM_EXP] = (cpu_op_entry){rx_supports, rx_prepare};
    table[LOOM_OP_REDUCE_SUM_SQUARE] = (cpu_op_entry){rx_supports, rx_prepare};
    table[LOOM_OP_ARG_MAX] = (cpu_op_entry){arg_supports, arg_prepare};
    table[LOOM_OP_ARG_MIN] = (cpu_op_entry){arg_supports, arg_prepare};
}
