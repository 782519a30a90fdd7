/*
 * CPU kernels of the indexing operators: Gather, GatherElements, ScatterElements and TopK, with
 * ONNX opset-18 semantics (canonical attributes: graph/ops_indexing.c). Indices out of range are
 * a run-time error naming the node.
 */
#include "cpu_axis.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64

/* ---- Gather ------------------------------------------------------------------------------------ */

typedef struct gather_params {
    size_t outer, inner_bytes;
    int64_t axis_dim, n_idx;
    int idx64;
} gather_params;

static int gather_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 2 || node->n_outputs != 1) {
        cpu_reason(reason, len, "Gather takes 2 inputs and 1 output");
        return 0;
    }
    if (loom_dtype_size(node->inputs[0].dtype) == 0 ||
        node->outputs[0].dtype != node->inputs[0].dtype) {
        cpu_reason(reason, len, "Gather: dtype %d not supported", (int)node->inputs[0].dtype);
        return 0;
    }
    loom_dtype it = node->inputs[1].dtype;
    if (it != LOOM_DTYPE_I32 && it != LOOM_DTYPE_I64) {
        cpu_reason(reason, len, "Gather: indices must be i32 or i64 (dtype %d)", (int)it);
        return 0;
    }
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank) {
        cpu_reason(reason, len, "Gather: axis %lld out of range", (long long)axis);
        return 0;
    }
    return 1;
}

typedef struct gather_ctx {
    const gather_params *p;
    const char *x;
    const void *idx;
    char *y;
} gather_ctx;

static int64_t gather_index(const gather_params *p, const void *idx, int64_t i)
{
    int64_t v = p->idx64 ? ((const int64_t *)idx)[i] : ((const int32_t *)idx)[i];
    return v < 0 ? v + p->axis_dim : v;
}

static void gather_task(void *arg, size_t t0, size_t t1)
{
    const gather_ctx *c = arg;
    const gather_params *p = c->p;
    size_t n = p->inner_bytes;
    for (size_t t = t0; t < t1; t++) {
        size_t o = t / (size_t)p->n_idx, q = t % (size_t)p->n_idx;
        int64_t v = gather_index(p, c->idx, (int64_t)q);
        cpu_copy_bytes(c->y + t * n, c->x + (o * (size_t)p->axis_dim + (size_t)v) * n, n);
    }
}

static loom_status gather_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    const gather_params *p = k->params;
    gather_ctx c = {.p = p, .x = args->inputs[0], .idx = args->inputs[1], .y = args->outputs[0]};
    /* Every index is checked before any is used, so a bad one never reads outside X. */
    for (int64_t i = 0; i < p->n_idx; i++) {
        int64_t v = p->idx64 ? ((const int64_t *)c.idx)[i] : ((const int32_t *)c.idx)[i];
        if (v < -p->axis_dim || v >= p->axis_dim)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "Gather: index %lld out of range [%lld, %lld)", (long long)v,
                            (long long)-p->axis_dim, (long long)p->axis_dim);
    }
    if (p->outer == 0 || p->inner_bytes == 0 || p->n_idx == 0)
        return LOOM_OK;
    size_t items = p->outer * (size_t)p->n_idx;
    cpu_parallel_for(pool, items, cpu_grain_bytes(p->inner_bytes), gather_task, &c);
    return LOOM_OK;
}

static loom_status gather_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    gather_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "Gather: out of memory");
    const loom_tensor_desc *x = &k->in[0];
    uint32_t axis = (uint32_t)loom_node_attr_int(node, "axis", 0);
    p->outer = 1;
    for (uint32_t d = 0; d < axis; d++)
        p->outer *= (size_t)x->dims[d];
    p->inner_bytes = loom_dtype_size(x->dtype);
    for (uint32_t d = axis + 1; d < x->rank; d++)
        p->inner_bytes *= (size_t)x->dims[d];
    p->axis_dim = x->dims[axis];
    p->n_idx = loom_tensor_desc_numel(&k->in[1]);
    p->idx64 = k->in[1].dtype == LOOM_DTYPE_I64;
    k->params = p;
    k->run = gather_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ===========================================================================================
 * ScatterElements and GatherElements: indices of the data's rank; an index replaces the
 * position along the axis.
 * =========================================================================================== */

typedef struct el_params {
    uint32_t rank, axis;
    int64_t idims[LOOM_MAX_RANK], dstride[LOOM_MAX_RANK];
    int64_t axis_dim, n_idx, data_numel;
    size_t esize;
    int idx64;
    loom_dtype dt;
    int red; /* 0 none, 1 add, 2 mul, 3 max, 4 min */
} el_params;

static int64_t el_index(const el_params *p, const void *idx, int64_t i)
{
    return p->idx64 ? ((const int64_t *)idx)[i] : ((const int32_t *)idx)[i];
}

/* Every index in range, or an error naming the first bad one. */
static loom_status el_check(const cpu_kernel *k, const el_params *p, const void *idx, char *err,
                            size_t err_len)
{
    for (int64_t i = 0; i < p->n_idx; i++) {
        int64_t v = el_index(p, idx, i);
        if (v < -p->axis_dim || v >= p->axis_dim)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "%s: index %lld (element %lld of indices) is out of range [%lld, "
                            "%lld) for axis %u",
                            k->op == LOOM_OP_SCATTER_ELEMENTS ? "ScatterElements"
                                                              : "GatherElements",
                            (long long)v, (long long)i, (long long)-p->axis_dim,
                            (long long)p->axis_dim, p->axis);
    }
    return LOOM_OK;
}

/* Data offset of index element I (its multi-index with the axis replaced by its value). */
static int64_t el_offset(const el_params *p, const void *idx, int64_t i)
{
    int64_t off = 0, rem = i;
    for (uint32_t d = p->rank; d-- > 0;) {
        int64_t q = rem % p->idims[d];
        rem /= p->idims[d];
        if (d == p->axis) {
            q = el_index(p, idx, i);
            if (q < 0)
                q += p->axis_dim;
        }
        off += q * p->dstride[d];
    }
    return off;
}

typedef struct el_job {
    const el_params *p;
    const char *x;
    const void *idx;
    char *y;
} el_job;

static void ge_task(void *arg, size_t i0, size_t i1)
{
    const el_job *j = arg;
    const el_params *p = j->p;
    for (size_t i = i0; i < i1; i++)
        cpu_copy_bytes(j->y + i * p->esize,
                       j->x + (size_t)el_offset(p, j->idx, (int64_t)i) * p->esize, p->esize);
}

static loom_status ge_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const el_params *p = k->params;
    loom_status st = el_check(k, p, args->inputs[1], err, err_len);
    if (st != LOOM_OK || p->n_idx == 0)
        return st;
    el_job j = {p, args->inputs[0], args->inputs[1], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->n_idx, CPU_GRAIN / 4, ge_task, &j);
    return LOOM_OK;
}

#define SC_APPLY(T)                                                                                \
    static void sc_##T(const el_params *p, const void *idx, const T *u, T *y)                      \
    {                                                                                              \
        for (int64_t i = 0; i < p->n_idx; i++) {                                                   \
            T *d = y + el_offset(p, idx, i);                                                       \
            switch (p->red) {                                                                      \
            case 1: *d = (T)(*d + u[i]); break;                                                    \
            case 2: *d = (T)(*d * u[i]); break;                                                    \
            case 3: *d = u[i] > *d ? u[i] : *d; break;                                             \
            default: *d = u[i] < *d ? u[i] : *d; break;                                            \
            }                                                                                      \
        }                                                                                          \
    }
SC_APPLY(float)
SC_APPLY(int32_t)
SC_APPLY(int64_t)

static loom_status sc_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)pool;
    const el_params *p = k->params;
    loom_status st = el_check(k, p, args->inputs[1], err, err_len);
    if (st != LOOM_OK)
        return st;
    char *y = args->outputs[0];
    if (p->data_numel)
        memcpy(y, args->inputs[0], (size_t)p->data_numel * p->esize);
    const void *idx = args->inputs[1];
    const char *u = args->inputs[2];
    if (p->red == 0) {
        /* In index order, so that the last of duplicate indices wins. */
        for (int64_t i = 0; i < p->n_idx; i++)
            cpu_copy_bytes(y + (size_t)el_offset(p, idx, i) * p->esize, u + (size_t)i * p->esize,
                           p->esize);
        return LOOM_OK;
    }
    switch (p->dt) {
    case F32: sc_float(p, idx, (const float *)u, (float *)y); break;
    case I32: sc_int32_t(p, idx, (const int32_t *)u, (int32_t *)y); break;
    default: sc_int64_t(p, idx, (const int64_t *)u, (int64_t *)y); break;
    }
    return LOOM_OK;
}

static int el_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype, it = node->inputs[1].dtype;
    if (it != I32 && it != I64)
        return cpu_reason(reason, len, "%s: indices must be int32 or int64", node->op_name);
    size_t es = loom_dtype_size(t);
    if (es == 0 || es > 8)
        return cpu_no_dtype(node, t, "fixed-size dtypes", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank ||
        node->inputs[1].rank != node->inputs[0].rank)
        return cpu_reason(reason, len, "%s: axis or indices rank malformed", node->op_name);
    if (node->op == LOOM_OP_SCATTER_ELEMENTS &&
        strcmp(cpu_str_attr(node, "reduction", "none"), "none") != 0 && !cpu_is_f32_i32_i64(t))
        return cpu_no_dtype(node, t, "float32, int32, int64 with a reduction", reason, len);
    return 1;
}

static loom_status el_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    el_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *ix = &node->inputs[1];
    p->rank = x->rank;
    p->axis = (uint32_t)loom_node_attr_int(node, "axis", 0);
    int64_t s = 1;
    for (uint32_t d = x->rank; d-- > 0;) {
        p->dstride[d] = s;
        s *= x->dims[d];
        p->idims[d] = ix->dims[d];
    }
    p->axis_dim = x->dims[p->axis];
    p->n_idx = loom_tensor_desc_numel(ix);
    p->data_numel = loom_tensor_desc_numel(x);
    p->esize = loom_dtype_size(x->dtype);
    p->idx64 = ix->dtype == I64;
    p->dt = x->dtype;
    const char *red = cpu_str_attr(node, "reduction", "none");
    p->red = strcmp(red, "add") == 0   ? 1
             : strcmp(red, "mul") == 0 ? 2
             : strcmp(red, "max") == 0 ? 3
             : strcmp(red, "min") == 0 ? 4
                                       : 0;
    k->params = p;
    k->run = node->op == LOOM_OP_SCATTER_ELEMENTS ? sc_run : ge_run;
    return LOOM_OK;
}

/* ---- TopK: a bounded heap per column (the worst kept element at its root), then sorted ---- */

#define TOPK_CHUNKS 64

#define TOPK_IMPL(T, ISNAN)                                                                        \
    /* Whether element A ranks before element B (value, then the lower index). */                  \
    static inline int topk_before_##T(const T *x, int64_t inner, int largest, int64_t a,          \
                                      int64_t b)                                                   \
    {                                                                                              \
        const T va = x[a * inner], vb = x[b * inner];                                              \
        const int na = ISNAN(va), nb = ISNAN(vb);                                                  \
        if (na || nb) { /* NaN ranks as the largest value */                                       \
            if (na && nb)                                                                          \
                return a < b;                                                                      \
            return largest ? na : nb;                                                              \
        }                                                                                          \
        if (va != vb)                                                                              \
            return largest ? va > vb : va < vb;                                                    \
        return a < b;                                                                              \
    }                                                                                              \
    static void topk_sift_##T(const T *x, int64_t inner, int largest, int64_t *h, int64_t n,      \
                              int64_t i)                                                           \
    {                                                                                              \
        for (;;) {                                                                                 \
            int64_t w = i, l = 2 * i + 1, r = l + 1;                                               \
            if (l < n && topk_before_##T(x, inner, largest, h[w], h[l]))                           \
                w = l;                                                                             \
            if (r < n && topk_before_##T(x, inner, largest, h[w], h[r]))                           \
                w = r;                                                                             \
            if (w == i)                                                                            \
                return;                                                                            \
            int64_t t = h[i];                                                                      \
            h[i] = h[w];                                                                           \
            h[w] = t;                                                                              \
            i = w;                                                                                 \
        }                                                                                          \
    }                                                                                              \
    static void topk_col_##T(const cpu_axis_job *j, size_t c, int64_t *h)                          \
    {                                                                                              \
        const cpu_axis_params *p = j->p;                                                           \
        const int64_t len = p->len, inner = p->inner, k = p->k;                                    \
        const size_t o = c / (size_t)inner, i = c % (size_t)inner;                                 \
        const T *x = (const T *)j->x + o * (size_t)(len * inner) + i;                              \
        T *yv = (T *)j->y + o * (size_t)(k * inner) + i;                                           \
        int64_t *yi = j->y2 ? (int64_t *)j->y2 + o * (size_t)(k * inner) + i : NULL;               \
        /* max-heap of "worst": the root ranks after every other kept element */                   \
        for (int64_t l = 0; l < k; l++)                                                            \
            h[l] = l;                                                                              \
        for (int64_t s = k / 2; s-- > 0;)                                                          \
            topk_sift_##T(x, inner, p->largest, h, k, s);                                          \
        for (int64_t l = k; l < len; l++) {                                                        \
            if (topk_before_##T(x, inner, p->largest, l, h[0])) {                                  \
                h[0] = l;                                                                          \
                topk_sift_##T(x, inner, p->largest, h, k, 0);                                      \
            }                                                                                      \
        }                                                                                          \
        for (int64_t n = k; n > 0; n--) { /* pop the worst to the back */                          \
            const int64_t w = h[0];                                                                \
            h[0] = h[n - 1];                                                                       \
            topk_sift_##T(x, inner, p->largest, h, n - 1, 0);                                      \
            yv[(n - 1) * inner] = x[w * inner];                                                    \
            if (yi)                                                                                \
                yi[(n - 1) * inner] = w;                                                           \
        }                                                                                          \
    }
TOPK_IMPL(float, CPU_IS_NAN_F)
TOPK_IMPL(int32_t, CPU_NEVER_NAN)
TOPK_IMPL(int64_t, CPU_NEVER_NAN)

static void topk_task(void *arg, size_t q0, size_t q1)
{
    const cpu_axis_job *j = arg;
    const cpu_axis_params *p = j->p;
    const size_t cols = (size_t)(p->outer * p->inner);
    for (size_t q = q0; q < q1; q++) {
        int64_t *h = j->heap + q * (size_t)p->k;
        const size_t c0 = cols * q / (size_t)p->chunks, c1 = cols * (q + 1) / (size_t)p->chunks;
        for (size_t c = c0; c < c1; c++) {
            switch (p->dt) {
            case F32: topk_col_float(j, c, h); break;
            case I32: topk_col_int32_t(j, c, h); break;
            default: topk_col_int64_t(j, c, h); break;
            }
        }
    }
}

static loom_status topk_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const cpu_axis_params *p = k->params;
    if (p->chunks == 0 || p->k == 0)
        return LOOM_OK;
    cpu_axis_job j = {.p = p, .x = args->inputs[0], .y = args->outputs[0],
                  .y2 = k->n_out > 1 ? args->outputs[1] : NULL, .heap = args->scratch};
    size_t cols = (size_t)(p->outer * p->inner);
    size_t per_chunk = cols / (size_t)p->chunks + 1;
    cpu_parallel_for(pool, (size_t)p->chunks, cpu_grain(p->len * (int64_t)per_chunk * 2),
                     topk_task, &j);
    return LOOM_OK;
}

static int topk_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!cpu_is_f32_i32_i64(t))
        return cpu_no_dtype(node, t, "float32, int32, int64", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank || !loom_node_attr(node, "k"))
        return cpu_reason(reason, len, "TopK: canonical axis and k missing");
    return 1;
}

static loom_status topk_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    cpu_axis_params *p = cpu_axis_make(&node->inputs[0], loom_node_attr_int(node, "axis", -1));
    if (!p)
        return cpu_oom(node, err, err_len);
    p->k = loom_node_attr_int(node, "k", 0);
    p->largest = loom_node_attr_int(node, "largest", 1) != 0;
    int64_t cols = p->outer * p->inner;
    p->chunks = cols < TOPK_CHUNKS ? cols : TOPK_CHUNKS;
    k->params = p;
    k->run = topk_run;
    k->scratch_bytes = (size_t)(p->chunks * p->k) * sizeof(int64_t);
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_indexing(cpu_op_entry *table)
{
    table[LOOM_OP_GATHER] = (cpu_op_entry){gather_supports, gather_prepare};
    table[LOOM_OP_GATHER_ELEMENTS] = (cpu_op_entry){el_supports, el_prepare};
    table[LOOM_OP_SCATTER_ELEMENTS] = (cpu_op_entry){el_supports, el_prepare};
    table[LOOM_OP_TOP_K] = (cpu_op_entry){topk_supports, topk_prepare};
}
