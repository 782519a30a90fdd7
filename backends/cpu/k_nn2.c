/*
 * CPU kernels of the ABI 0.2 neural-network operators: ConvTranspose (GEMM + col2im), Resize,
 * Pad and Tile (one "gather through per-axis index maps" kernel), Einsum (batched GEMM after
 * permutes, else a naive loop), InstanceNormalization, LSTM and GRU, TopK, ArgMax/ArgMin,
 * ScatterElements, GatherElements, LogSoftmax, PRelu, ReduceMin and ReduceProd.
 *
 * Every prepare() turns the canonical attributes (graph/ops_nn2.c lists them) into index
 * tables and loop bounds; run() only loops. Work splits over cpu_parallel_for where a node is
 * large enough; OpenBLAS runs single-threaded inside the pool's threads.
 */
#include "cpu_kernels.h"

#include <cblas.h>

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAIN 16384 /* elements of work per parallel chunk */

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64

/* ---- shared helpers -------------------------------------------------------------------------- */

static int no_dtype(const loom_node_desc *node, loom_dtype t, const char *only, char *reason,
                    size_t len)
{
    return cpu_reason(reason, len, "%s: dtype %s has no CPU kernel (only %s)", node->op_name,
                      cpu_dtype_name(t), only);
}

static size_t grain_for(int64_t work_per_item)
{
    if (work_per_item <= 0)
        return GRAIN;
    size_t g = GRAIN / (size_t)work_per_item;
    return g ? g : 1;
}

static int is_f32_i32_i64(loom_dtype t)
{
    return t == F32 || t == I32 || t == I64;
}

static loom_status oom(const loom_node_desc *node, char *err, size_t len)
{
    return cpu_fail(err, len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", node->op_name);
}

/* C[m, n] (ldc) = op(A) * op(B), row-major, single-threaded; K == 0 gives zeros. */
static void sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static int fits_int(int64_t v)
{
    return v >= 0 && v <= INT_MAX;
}

/* Copy one element of SIZE bytes. */
static inline void copy_elem(char *dst, const char *src, size_t size)
{
    switch (size) {
    case 1: *dst = *src; break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    default: memcpy(dst, src, size);
    }
}

/* ===========================================================================================
 * ConvTranspose: per (image, group) one GEMM col = W_g^T X_g, then col2im into Y.
 * =========================================================================================== */

typedef struct ct_params {
    int64_t n, c, m, g, cg, mg;  /* batch, channels in/out, groups, per-group channels */
    int64_t in[3], out[3], k[3], st[3], dil[3], pb[3]; /* spatial, padded to 3-D */
    int64_t kk, hw_in, hw_out;  /* kernel elements, input and output plane sizes */
    int has_bias;
} ct_params;

typedef struct ct_job {
    const ct_params *p;
    const float *x, *w, *bias;
    float *y, *col;
    int64_t n, g;
} ct_job;

/* col[:, c0:c1] = W_g^T X_g[:, c0:c1]: columns are input positions. */
static void ct_gemm_task(void *arg, size_t b0, size_t b1)
{
    const ct_job *j = arg;
    const ct_params *p = j->p;
    const int64_t c0 = (int64_t)b0 * 256, c1 = (int64_t)b1 * 256 < p->hw_in ? (int64_t)b1 * 256
                                                                           : p->hw_in;
    const float *xg = j->x + (j->n * p->c + j->g * p->cg) * p->hw_in;
    const float *wg = j->w + j->g * p->cg * p->mg * p->kk;
    sgemm(1, 0, p->mg * p->kk, c1 - c0, p->cg, wg, p->mg * p->kk, xg + c0, p->hw_in, 0.0f,
          j->col + c0, p->hw_in);
}

/* Scatter-add the columns of output channels [m0, m1) of the group into Y. */
static void ct_col2im_task(void *arg, size_t m0, size_t m1)
{
    const ct_job *j = arg;
    const ct_params *p = j->p;
    for (size_t mo = m0; mo < m1; mo++) {
        const int64_t oc = j->g * p->mg + (int64_t)mo;
        float *y = j->y + (j->n * p->m + oc) * p->hw_out;
        const float b = p->has_bias ? j->bias[oc] : 0.0f;
        for (int64_t i = 0; i < p->hw_out; i++)
            y[i] = b;
        const float *col = j->col + (int64_t)mo * p->kk * p->hw_in;
        for (int64_t k0 = 0; k0 < p->k[0]; k0++)
            for (int64_t k1 = 0; k1 < p->k[1]; k1++)
                for (int64_t k2 = 0; k2 < p->k[2]; k2++, col += p->hw_in) {
                    /* Input positions whose output lands inside along the innermost axis. */
                    const int64_t off2 = k2 * p->dil[2] - p->pb[2];
                    int64_t lo = 0, hi = p->in[2];
                    while (lo < hi && lo * p->st[2] + off2 < 0)
                        lo++;
                    while (hi > lo && (hi - 1) * p->st[2] + off2 >= p->out[2])
                        hi--;
                    for (int64_t i0 = 0; i0 < p->in[0]; i0++) {
                        const int64_t o0 = i0 * p->st[0] + k0 * p->dil[0] - p->pb[0];
                        if (o0 < 0 || o0 >= p->out[0])
                            continue;
                        for (int64_t i1 = 0; i1 < p->in[1]; i1++) {
                            const int64_t o1 = i1 * p->st[1] + k1 * p->dil[1] - p->pb[1];
                            if (o1 < 0 || o1 >= p->out[1])
                                continue;
                            const float *src = col + (i0 * p->in[1] + i1) * p->in[2];
                            float *dst = y + (o0 * p->out[1] + o1) * p->out[2] + off2;
                            if (p->st[2] == 1)
                                for (int64_t i2 = lo; i2 < hi; i2++)
                                    dst[i2] += src[i2];
                            else
                                for (int64_t i2 = lo; i2 < hi; i2++)
                                    dst[i2 * p->st[2]] += src[i2];
                        }
                    }
                }
    }
}

static loom_status ct_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const ct_params *p = k->params;
    if (p->n == 0 || p->m == 0 || p->hw_out == 0)
        return LOOM_OK;
    ct_job j = {p, args->inputs[0], args->inputs[1], p->has_bias ? args->inputs[2] : NULL,
                args->outputs[0], args->scratch, 0, 0};
    for (j.n = 0; j.n < p->n; j.n++)
        for (j.g = 0; j.g < p->g; j.g++) {
            if (p->hw_in > 0) {
                size_t blocks = (size_t)((p->hw_in + 255) / 256);
                double work = (double)p->mg * (double)p->kk * (double)p->cg * 256.0;
                cpu_parallel_for(pool, blocks, work >= 4.0 * GRAIN ? 1 : blocks, ct_gemm_task,
                                 &j);
            }
            cpu_parallel_for(pool, (size_t)p->mg,
                             grain_for(p->kk * (p->hw_in > 0 ? p->hw_in : 1) + p->hw_out),
                             ct_col2im_task, &j);
        }
    return LOOM_OK;
}

static int ints_attr(const loom_node_desc *node, const char *name, size_t count, int64_t *out)
{
    const loom_attr *a = loom_node_attr(node, name);
    if (!a || a->kind != LOOM_ATTR_INTS || a->count != count)
        return 0;
    for (size_t i = 0; i < count; i++)
        out[i] = a->ints[i];
    return 1;
}

static int ct_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->dtype != F32 || node->inputs[1].dtype != F32 ||
        (cpu_present(node, 2) && node->inputs[2].dtype != F32))
        return no_dtype(node, x->dtype, "float32", reason, len);
    if (x->rank < 3 || x->rank > 5)
        return cpu_reason(reason, len, "ConvTranspose: X must have 1 to 3 spatial dims");
    size_t s = x->rank - 2;
    int64_t v[6];
    if (!ints_attr(node, "strides", s, v) || !ints_attr(node, "dilations", s, v) ||
        !ints_attr(node, "pads", 2 * s, v) || !ints_attr(node, "kernel_shape", s, v))
        return cpu_reason(reason, len, "ConvTranspose: canonical attributes missing");
    const loom_tensor_desc *w = &node->inputs[1];
    int64_t rows = w->dims[1] * cpu_prod(w->dims, 2, w->rank);
    if (!fits_int(rows) || !fits_int(cpu_prod(x->dims, 2, x->rank)) || !fits_int(x->dims[1]))
        return cpu_reason(reason, len, "ConvTranspose: too large for one BLAS call");
    return 1;
}

static loom_status ct_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    ct_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[1], *y = &node->outputs[0];
    const uint32_t s = x->rank - 2, lead = 3 - s;
    int64_t st[3], dil[3], pads[6];
    ints_attr(node, "strides", s, st);
    ints_attr(node, "dilations", s, dil);
    ints_attr(node, "pads", 2 * s, pads);
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->m = y->dims[1];
    p->g = loom_node_attr_int(node, "group", 1);
    p->cg = p->c / p->g;
    p->mg = w->dims[1];
    for (uint32_t i = 0; i < 3; i++) {
        int sp = i >= lead;
        uint32_t q = i - lead;
        p->in[i] = sp ? x->dims[2 + q] : 1;
        p->out[i] = sp ? y->dims[2 + q] : 1;
        p->k[i] = sp ? w->dims[2 + q] : 1;
        p->st[i] = sp ? st[q] : 1;
        p->dil[i] = sp ? dil[q] : 1;
        p->pb[i] = sp ? pads[q] : 0;
    }
    p->kk = p->k[0] * p->k[1] * p->k[2];
    p->hw_in = p->in[0] * p->in[1] * p->in[2];
    p->hw_out = p->out[0] * p->out[1] * p->out[2];
    p->has_bias = cpu_present(node, 2);
    k->params = p;
    k->run = ct_run;
    k->scratch_bytes = (size_t)(p->mg * p->kk * p->hw_in) * sizeof(float);
    return LOOM_OK;
}

/* ===========================================================================================
 * Gathers through per-axis index maps: Pad, Tile and nearest Resize. Y[o] = X[sum_d
 * map_d[o_d] * stride_d], or the constant when some map_d[o_d] is -1 (Pad's constant mode).
 * =========================================================================================== */

typedef struct map_params {
    uint32_t rank;
    size_t esize;
    int64_t out[LOOM_MAX_RANK], istride[LOOM_MAX_RANK];
    int64_t *map[LOOM_MAX_RANK]; /* into maps: out[d] entries, element offsets (or -1) */
    int64_t *maps;
    int64_t rows, row_len;       /* Y as [rows, out[rank-1]] */
    char value[8];               /* constant, in the output's dtype */
    int value_input;             /* read the constant from input 2 at run time */
} map_params;

static void map_free(void *params)
{
    map_params *p = params;
    if (p)
        free(p->maps);
    free(p);
}

typedef struct map_job {
    const map_params *p;
    const char *x;
    char *y;
    const char *value;
} map_job;

#define MAP_ROW(T)                                                                                 \
    do {                                                                                           \
        const T *xs = (const T *)(j->x) + base;                                                    \
        T *yd = (T *)y;                                                                            \
        T v;                                                                                       \
        memcpy(&v, j->value, sizeof v);                                                            \
        for (int64_t i = 0; i < n; i++)                                                            \
            yd[i] = inner[i] < 0 ? v : xs[inner[i]];                                               \
    } while (0)

static void map_task(void *arg, size_t r0, size_t r1)
{
    const map_job *j = arg;
    const map_params *p = j->p;
    const uint32_t last = p->rank - 1;
    const int64_t n = p->row_len;
    const int64_t *inner = p->map[last];
    int64_t idx[LOOM_MAX_RANK] = {0};
    /* multi-index of row r0 over the outer axes */
    size_t rem = r0;
    for (uint32_t d = last; d-- > 0;) {
        idx[d] = (int64_t)(rem % (size_t)p->out[d]);
        rem /= (size_t)p->out[d];
    }
    for (size_t r = r0; r < r1; r++) {
        char *y = j->y + r * (size_t)n * p->esize;
        int64_t base = 0;
        int fill = 0;
        for (uint32_t d = 0; d < last; d++) {
            int64_t m = p->map[d][idx[d]];
            if (m < 0)
                fill = 1;
            base += m;
        }
        if (fill) {
            for (int64_t i = 0; i < n; i++)
                copy_elem(y + (size_t)i * p->esize, j->value, p->esize);
        } else {
            switch (p->esize) {
            case 1: MAP_ROW(uint8_t); break;
            case 2: MAP_ROW(uint16_t); break;
            case 4: MAP_ROW(uint32_t); break;
            default: MAP_ROW(uint64_t); break;
            }
        }
        for (uint32_t d = last; d-- > 0;) {
            if (++idx[d] < p->out[d])
                break;
            idx[d] = 0;
        }
    }
}

static loom_status map_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const map_params *p = k->params;
    if (p->rows == 0 || p->row_len == 0)
        return LOOM_OK;
    map_job j = {p, args->inputs[0], args->outputs[0], p->value};
    if (p->value_input && args->inputs[2])
        j.value = args->inputs[2];
    cpu_parallel_for(pool, (size_t)p->rows, grain_for(p->row_len), map_task, &j);
    return LOOM_OK;
}

/* A map_params for X -> Y of NODE, maps unfilled: one block of sum(out) entries. */
static map_params *map_alloc(const loom_node_desc *node)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    map_params *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    /* A scalar is a tensor of shape [1]. */
    p->rank = x->rank ? x->rank : 1;
    p->esize = loom_dtype_size(x->dtype);
    int64_t total = 0, s = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        p->out[d] = x->rank ? y->dims[d] : 1;
        p->istride[d] = s;
        s *= x->rank ? x->dims[d] : 1;
        total += p->out[d];
    }
    p->maps = malloc((size_t)(total ? total : 1) * sizeof *p->maps);
    if (!p->maps) {
        free(p);
        return NULL;
    }
    int64_t at = 0;
    for (uint32_t d = 0; d < p->rank; d++) {
        p->map[d] = p->maps + at;
        at += p->out[d];
    }
    p->row_len = p->out[p->rank - 1];
    p->rows = cpu_prod(p->out, 0, p->rank - 1);
    return p;
}

static int map_supports(const loom_node_desc *node, char *reason, size_t len)
{
    size_t es = loom_dtype_size(node->inputs[0].dtype);
    if (es == 0 || es > 8 || node->outputs[0].dtype != node->inputs[0].dtype)
        return no_dtype(node, node->inputs[0].dtype, "fixed-size dtypes", reason, len);
    if (node->op == LOOM_OP_PAD) {
        const loom_attr *a = loom_node_attr(node, "pads");
        if (!a || a->kind != LOOM_ATTR_INTS || a->count != 2 * (size_t)node->inputs[0].rank)
            return cpu_reason(reason, len, "Pad: canonical pads missing");
    }
    if (node->op == LOOM_OP_TILE) {
        const loom_attr *a = loom_node_attr(node, "repeats");
        if (!a || a->kind != LOOM_ATTR_INTS || a->count != node->inputs[0].rank)
            return cpu_reason(reason, len, "Tile: canonical repeats missing");
    }
    return 1;
}

/* Where output index O of an axis of N input elements, padded by PB in front, reads from. */
static int64_t pad_source(int mode, int64_t o, int64_t pb, int64_t n)
{
    int64_t i = o - pb;
    if (i >= 0 && i < n)
        return i;
    if (mode == 0) /* constant */
        return -1;
    if (mode == 2) /* edge */
        return i < 0 ? 0 : n - 1;
    if (n == 1) /* reflect over one element */
        return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0)
        i += period;
    return i < n ? i : period - i;
}

static void value_from_float(loom_dtype t, float v, char *out)
{
    memset(out, 0, 8);
    switch (t) {
    case LOOM_DTYPE_F32: memcpy(out, &v, 4); break;
    case LOOM_DTYPE_F16: {
        uint16_t h = cpu_f32_to_f16(v);
        memcpy(out, &h, 2);
        break;
    }
    case LOOM_DTYPE_BF16: {
        uint16_t h = cpu_f32_to_bf16(v);
        memcpy(out, &h, 2);
        break;
    }
    case LOOM_DTYPE_I32: {
        int32_t i = (int32_t)v;
        memcpy(out, &i, 4);
        break;
    }
    case LOOM_DTYPE_I64: {
        int64_t i = (int64_t)v;
        memcpy(out, &i, 8);
        break;
    }
    case LOOM_DTYPE_I8: *(int8_t *)out = (int8_t)v; break;
    case LOOM_DTYPE_U8: *(uint8_t *)out = (uint8_t)v; break;
    case LOOM_DTYPE_BOOL: *(uint8_t *)out = v != 0.0f; break;
    default: break;
    }
}

static loom_status pad_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    map_params *p = map_alloc(node);
    if (!p)
        return oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *pads = loom_node_attr(node, "pads");
    const loom_attr *m = loom_node_attr(node, "mode");
    const char *mode = m && m->kind == LOOM_ATTR_STRING ? m->s : "constant";
    int mi = strcmp(mode, "reflect") == 0 ? 1 : strcmp(mode, "edge") == 0 ? 2 : 0;
    for (uint32_t d = 0; d < x->rank; d++) {
        const int64_t pb = pads->ints[d];
        for (int64_t o = 0; o < p->out[d]; o++) {
            int64_t src = pad_source(mi, o, pb, x->dims[d]);
            p->map[d][o] = src < 0 ? -1 : src * p->istride[d];
        }
    }
    if (x->rank == 0)
        p->map[0][0] = 0;
    value_from_float(x->dtype, loom_node_attr_float(node, "value", 0.0f), p->value);
    p->value_input = cpu_present(node, 2);
    k->params = p;
    k->free_params = map_free;
    k->run = map_run;
    return LOOM_OK;
}

static loom_status tile_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    map_params *p = map_alloc(node);
    if (!p)
        return oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    for (uint32_t d = 0; d < x->rank; d++)
        for (int64_t o = 0; o < p->out[d]; o++)
            p->map[d][o] = (o % x->dims[d]) * p->istride[d];
    if (x->rank == 0)
        p->map[0][0] = 0;
    k->params = p;
    k->free_params = map_free;
    k->run = map_run;
    return LOOM_OK;
}

/* ===========================================================================================
 * Resize: nearest through index maps; linear as separable 2-tap weights per axis.
 * =========================================================================================== */

enum { CT_HALF, CT_PYTORCH, CT_ALIGN, CT_ASYM, CT_TF_NN };
enum { NM_RPF, NM_RPC, NM_FLOOR, NM_CEIL };

static int rs_ctm(const char *s)
{
    return strcmp(s, "pytorch_half_pixel") == 0     ? CT_PYTORCH
           : strcmp(s, "align_corners") == 0        ? CT_ALIGN
           : strcmp(s, "asymmetric") == 0           ? CT_ASYM
           : strcmp(s, "tf_half_pixel_for_nn") == 0 ? CT_TF_NN
                                                    : CT_HALF;
}

static const char *str_attr(const loom_node_desc *node, const char *name, const char *def)
{
    const loom_attr *a = loom_node_attr(node, name);
    return a && a->kind == LOOM_ATTR_STRING ? a->s : def;
}

/* Source coordinate of output index O along an axis of IN -> OUT elements at SCALE. */
static double rs_coord(int ctm, double o, double scale, int64_t in, int64_t out)
{
    /* ONNX's reference uses length_resized = scale * in; when that is OUT up to float rounding
     * (sizes given, or an exact scale) the exact ratio OUT / IN is used. */
    double lr = scale * (double)in;
    if (in > 0 && fabs(lr - (double)out) <= 1e-5 * (double)(out > 1 ? out : 1)) {
        lr = (double)out;
        scale = (double)out / (double)in;
    }
    switch (ctm) {
    case CT_PYTORCH: return lr > 1.0 ? (o + 0.5) / scale - 0.5 : 0.0;
    case CT_ALIGN: return lr > 1.0 ? o * (double)(in - 1) / (lr - 1.0) : 0.0;
    case CT_ASYM: return o / scale;
    case CT_TF_NN: return (o + 0.5) / scale;
    default: return (o + 0.5) / scale - 0.5;
    }
}

static int64_t clamp_i64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

typedef struct rs_params {
    uint32_t rank;
    int64_t out[LOOM_MAX_RANK], istride[LOOM_MAX_RANK];
    int active[LOOM_MAX_RANK];  /* outer axis that interpolates (2 taps) */
    int64_t *i0[LOOM_MAX_RANK], *i1[LOOM_MAX_RANK]; /* element offsets */
    float *w1[LOOM_MAX_RANK];
    void *block;
    int64_t rows, row_len;
} rs_params;

static void rs_free(void *params)
{
    rs_params *p = params;
    if (p)
        free(p->block);
    free(p);
}

typedef struct rs_job {
    const rs_params *p;
    const float *x;
    float *y;
} rs_job;

static void rs_task(void *arg, size_t r0, size_t r1)
{
    const rs_job *j = arg;
    const rs_params *p = j->p;
    const uint32_t last = p->rank - 1;
    const int64_t n = p->row_len;
    const int64_t *a0 = p->i0[last], *a1 = p->i1[last];
    const float *wl = p->w1[last];
    int64_t idx[LOOM_MAX_RANK] = {0};
    size_t rem = r0;
    for (uint32_t d = last; d-- > 0;) {
        idx[d] = (int64_t)(rem % (size_t)p->out[d]);
        rem /= (size_t)p->out[d];
    }
    int64_t toff[128];
    float tw[128];
    for (size_t r = r0; r < r1; r++) {
        /* taps of the outer axes: offsets and weights */
        int nt = 1;
        toff[0] = 0;
        tw[0] = 1.0f;
        for (uint32_t d = 0; d < last; d++) {
            const int64_t o = idx[d];
            if (!p->active[d]) {
                for (int t = 0; t < nt; t++)
                    toff[t] += p->i0[d][o];
                continue;
            }
            const float w = p->w1[d][o];
            for (int t = 0; t < nt; t++) {
                toff[nt + t] = toff[t] + p->i1[d][o];
                tw[nt + t] = tw[t] * w;
                toff[t] += p->i0[d][o];
                tw[t] *= 1.0f - w;
            }
            nt *= 2;
        }
        float *y = j->y + r * (size_t)n;
        for (int64_t i = 0; i < n; i++)
            y[i] = 0.0f;
        for (int t = 0; t < nt; t++) {
            const float *xs = j->x + toff[t];
            const float wt = tw[t];
            for (int64_t i = 0; i < n; i++)
                y[i] += wt * ((1.0f - wl[i]) * xs[a0[i]] + wl[i] * xs[a1[i]]);
        }
        for (uint32_t d = last; d-- > 0;) {
            if (++idx[d] < p->out[d])
                break;
            idx[d] = 0;
        }
    }
}

static loom_status rs_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const rs_params *p = k->params;
    if (p->rows == 0 || p->row_len == 0)
        return LOOM_OK;
    rs_job j = {p, args->inputs[0], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, grain_for(p->row_len * 4), rs_task, &j);
    return LOOM_OK;
}

static int rs_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_attr *sc = loom_node_attr(node, "scales");
    const loom_tensor_desc *x = &node->inputs[0];
    if (!sc || sc->kind != LOOM_ATTR_FLOATS || sc->count != x->rank)
        return cpu_reason(reason, len, "Resize: canonical scales missing");
    const char *mode = str_attr(node, "mode", "nearest");
    if (strcmp(mode, "linear") == 0) {
        if (x->dtype != F32)
            return no_dtype(node, x->dtype, "float32 for linear", reason, len);
        int active = 0;
        for (uint32_t d = 0; d + 1 < x->rank; d++)
            active += x->dims[d] != node->outputs[0].dims[d] || sc->floats[d] != 1.0f;
        if (active > 7)
            return cpu_reason(reason, len, "Resize: linear over more than 8 axes");
        return 1;
    }
    if (strcmp(mode, "nearest") != 0)
        return cpu_reason(reason, len, "Resize: mode '%s' has no CPU kernel", mode);
    return map_supports(node, reason, len);
}

static loom_status rs_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    const float *scales = loom_node_attr(node, "scales")->floats;
    const int ctm = rs_ctm(str_attr(node, "coordinate_transformation_mode", "half_pixel"));
    const char *nm = str_attr(node, "nearest_mode", "round_prefer_floor");
    const int nmode = strcmp(nm, "round_prefer_ceil") == 0 ? NM_RPC
                      : strcmp(nm, "floor") == 0         ? NM_FLOOR
                      : strcmp(nm, "ceil") == 0          ? NM_CEIL
                                                         : NM_RPF;
    if (strcmp(str_attr(node, "mode", "nearest"), "nearest") == 0) {
        map_params *p = map_alloc(node);
        if (!p)
            return oom(node, err, err_len);
        for (uint32_t d = 0; d < x->rank; d++) {
            for (int64_t o = 0; o < p->out[d]; o++) {
                double c = rs_coord(ctm, (double)o, scales[d], x->dims[d], y->dims[d]);
                double f = floor(c), frac = c - f;
                int64_t i;
                if (frac == 0.0)
                    i = (int64_t)f;
                else if (nmode == NM_FLOOR)
                    i = (int64_t)f;
                else if (nmode == NM_CEIL)
                    i = (int64_t)f + 1;
                else if (nmode == NM_RPF)
                    i = frac <= 0.5 ? (int64_t)f : (int64_t)f + 1;
                else
                    i = frac < 0.5 ? (int64_t)f : (int64_t)f + 1;
                p->map[d][o] = clamp_i64(i, 0, x->dims[d] - 1) * p->istride[d];
            }
        }
        if (x->rank == 0)
            p->map[0][0] = 0;
        k->params = p;
        k->free_params = map_free;
        k->run = map_run;
        return LOOM_OK;
    }
    rs_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
    p->rank = x->rank ? x->rank : 1;
    int64_t total = 0, s = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        p->out[d] = x->rank ? y->dims[d] : 1;
        p->istride[d] = s;
        s *= x->rank ? x->dims[d] : 1;
        total += p->out[d];
    }
    p->block = malloc((size_t)(total ? total : 1) * (2 * sizeof(int64_t) + sizeof(float)));
    if (!p->block) {
        free(p);
        return oom(node, err, err_len);
    }
    int64_t *ip = p->block;
    float *wp = (float *)(ip + 2 * total);
    for (uint32_t d = 0; d < p->rank; d++) {
        p->i0[d] = ip;
        p->i1[d] = ip + p->out[d];
        p->w1[d] = wp;
        ip += 2 * p->out[d];
        wp += p->out[d];
        const int64_t in = x->rank ? x->dims[d] : 1;
        const int identity = in == p->out[d] && (x->rank == 0 || scales[d] == 1.0f);
        p->active[d] = !identity;
        for (int64_t o = 0; o < p->out[d]; o++) {
            if (identity) {
                p->i0[d][o] = p->i1[d][o] = o * p->istride[d];
                p->w1[d][o] = 0.0f;
                continue;
            }
            double c = rs_coord(ctm, (double)o, scales[d], in, p->out[d]);
            double f = floor(c);
            int64_t a = (int64_t)f;
            p->i0[d][o] = clamp_i64(a, 0, in - 1) * p->istride[d];
            p->i1[d][o] = clamp_i64(a + 1, 0, in - 1) * p->istride[d];
            p->w1[d][o] = (float)(c - f);
        }
    }
    p->row_len = p->out[p->rank - 1];
    p->rows = cpu_prod(p->out, 0, p->rank - 1);
    k->params = p;
    k->free_params = rs_free;
    k->run = rs_run;
    return LOOM_OK;
}

/* ===========================================================================================
 * Einsum: the canonical equation (explicit, no ellipsis). Two f32 operands without repeated or
 * operand-only summed labels become permute + batched GEMM + permute; the rest runs a naive
 * loop over the label space.
 * =========================================================================================== */

#define EIN_LABELS 52

typedef struct ein_perm {
    int needed;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];    /* of the destination, C order */
    int64_t sstride[LOOM_MAX_RANK]; /* source stride for each destination dim */
} ein_perm;

typedef struct ein_params {
    uint32_t n_ops;
    loom_dtype dt;
    int gemm;
    /* naive: output labels then summed labels, with per-operand strides per label */
    uint32_t n_out, n_sum;
    int64_t lsize[EIN_LABELS];
    int64_t lstride[2][EIN_LABELS];
    int64_t out_numel, sum_numel;
    /* gemm */
    int64_t batch, m, n, k;
    ein_perm pa, pb, pc; /* A -> [batch, m, k], B -> [batch, k, n], [batch, m, n] -> Y */
    size_t off_b, off_c; /* float offsets of the permuted buffers in scratch */
} ein_params;

static int ein_label(char c)
{
    return c >= 'a' && c <= 'z' ? c - 'a' : c >= 'A' && c <= 'Z' ? 26 + c - 'A' : -1;
}

/* ein_label of a character already validated by ein_split. */
static unsigned ein_lab(char c)
{
    int l = ein_label(c);
    return l < 0 ? 0u : (unsigned)l;
}

/* Naive: output element [o0, o1) each sums over the summed labels. Labels are ordered output
 * first; lsize/lstride are indexed by that order. */
#define EIN_NAIVE(T, ACC)                                                                          \
    static void ein_naive_##T(const ein_params *p, const void *const *in, void *out, size_t o0,  \
                              size_t o1)                                                           \
    {                                                                                              \
        const T *a = in[0], *b = p->n_ops > 1 ? in[1] : NULL;                                      \
        T *y = out;                                                                                \
        const uint32_t nl = p->n_out + p->n_sum;                                                   \
        for (size_t o = o0; o < o1; o++) {                                                         \
            int64_t idx[EIN_LABELS] = {0};                                                        \
            size_t rem = o;                                                                        \
            int64_t oa = 0, ob = 0;                                                                \
            for (uint32_t l = p->n_out; l-- > 0;) {                                                \
                idx[l] = (int64_t)(rem % (size_t)p->lsize[l]);                                     \
                rem /= (size_t)p->lsize[l];                                                        \
                oa += idx[l] * p->lstride[0][l];                                                   \
                ob += idx[l] * p->lstride[1][l];                                                   \
            }                                                                                      \
            ACC acc = 0;                                                                           \
            for (int64_t s = 0; s < p->sum_numel; s++) {                                           \
                ACC v = (ACC)a[oa];                                                                \
                if (b)                                                                             \
                    v *= (ACC)b[ob];                                                               \
                acc += v;                                                                          \
                for (uint32_t l = nl; l-- > p->n_out;) {                                           \
                    oa += p->lstride[0][l];                                                        \
                    ob += p->lstride[1][l];                                                        \
                    if (++idx[l] < p->lsize[l])                                                    \
                        break;                                                                     \
                    oa -= idx[l] * p->lstride[0][l];                                               \
                    ob -= idx[l] * p->lstride[1][l];                                               \
                    idx[l] = 0;                                                                    \
                }                                                                                  \
            }                                                                                      \
            y[o] = (T)acc;                                                                         \
        }                                                                                          \
    }
EIN_NAIVE(float, double)
EIN_NAIVE(int32_t, int64_t)
EIN_NAIVE(int64_t, int64_t)

typedef struct ein_job {
    const ein_params *p;
    const void *const *in;
    void *out;
    const float *a, *b;
    float *c;
    const ein_perm *perm;
    const float *src;
    float *dst;
} ein_job;

static void ein_naive_task(void *arg, size_t o0, size_t o1)
{
    const ein_job *j = arg;
    switch (j->p->dt) {
    case F32: ein_naive_float(j->p, j->in, j->out, o0, o1); break;
    case I32: ein_naive_int32_t(j->p, j->in, j->out, o0, o1); break;
    default: ein_naive_int64_t(j->p, j->in, j->out, o0, o1); break;
    }
}

/* dst (C order over perm->dims) = src read through perm->sstride; rows of the last dim. */
static void ein_perm_task(void *arg, size_t r0, size_t r1)
{
    const ein_job *j = arg;
    const ein_perm *q = j->perm;
    const uint32_t last = q->rank - 1;
    const int64_t n = q->dims[last], ls = q->sstride[last];
    for (size_t r = r0; r < r1; r++) {
        size_t rem = r;
        int64_t off = 0;
        for (uint32_t d = last; d-- > 0;) {
            off += (int64_t)(rem % (size_t)q->dims[d]) * q->sstride[d];
            rem /= (size_t)q->dims[d];
        }
        float *dst = j->dst + r * (size_t)n;
        const float *src = j->src + off;
        for (int64_t i = 0; i < n; i++)
            dst[i] = src[i * ls];
    }
}

static void ein_permute(cpu_pool *pool, const ein_perm *q, const float *src, float *dst)
{
    ein_job j = {.perm = q, .src = src, .dst = dst};
    int64_t rows = cpu_prod(q->dims, 0, q->rank - 1), n = q->dims[q->rank - 1];
    if (rows == 0 || n == 0)
        return;
    cpu_parallel_for(pool, (size_t)rows, grain_for(n), ein_perm_task, &j);
}

static void ein_gemm_task(void *arg, size_t b0, size_t b1)
{
    const ein_job *j = arg;
    const ein_params *p = j->p;
    for (size_t b = b0; b < b1; b++)
        sgemm(0, 0, p->m, p->n, p->k, j->a + b * (size_t)(p->m * p->k), p->k,
              j->b + b * (size_t)(p->k * p->n), p->n, 0.0f, j->c + b * (size_t)(p->m * p->n),
              p->n);
}

static loom_status ein_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const ein_params *p = k->params;
    if (p->out_numel == 0)
        return LOOM_OK;
    ein_job j = {.p = p, .in = args->inputs, .out = args->outputs[0]};
    if (!p->gemm) {
        cpu_parallel_for(pool, (size_t)p->out_numel, grain_for(p->sum_numel), ein_naive_task,
                         &j);
        return LOOM_OK;
    }
    float *scratch = args->scratch;
    j.a = args->inputs[0];
    j.b = args->inputs[1];
    j.c = args->outputs[0];
    if (p->pa.needed) {
        ein_permute(pool, &p->pa, j.a, scratch);
        j.a = scratch;
    }
    if (p->pb.needed) {
        ein_permute(pool, &p->pb, j.b, scratch + p->off_b);
        j.b = scratch + p->off_b;
    }
    if (p->pc.needed)
        j.c = scratch + p->off_c;
    double work = 2.0 * (double)p->m * (double)p->n * (double)p->k;
    size_t grain = work >= GRAIN ? 1 : (size_t)(GRAIN / (work + 1.0)) + 1;
    cpu_parallel_for(pool, (size_t)p->batch, grain, ein_gemm_task, &j);
    if (p->pc.needed)
        ein_permute(pool, &p->pc, j.c, args->outputs[0]);
    return LOOM_OK;
}

typedef struct ein_eq {
    uint32_t n_ops;
    char term[3][LOOM_MAX_RANK + 1]; /* operands, then the output */
} ein_eq;

static int ein_split(const char *eq, ein_eq *e)
{
    memset(e, 0, sizeof *e);
    const char *arrow = strstr(eq, "->");
    if (!arrow)
        return 0;
    uint32_t t = 0, at = 0;
    for (const char *p = eq; p < arrow; p++) {
        if (*p == ',') {
            if (++t >= 2)
                return 0;
            at = 0;
            continue;
        }
        if (ein_label(*p) < 0 || at >= LOOM_MAX_RANK)
            return 0;
        e->term[t][at++] = *p;
    }
    e->n_ops = t + 1;
    at = 0;
    for (const char *p = arrow + 2; *p; p++) {
        if (ein_label(*p) < 0 || at >= LOOM_MAX_RANK)
            return 0;
        e->term[2][at++] = *p;
    }
    return 1;
}

static int ein_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *eq = str_attr(node, "equation", NULL);
    ein_eq e;
    if (!eq || !ein_split(eq, &e) || e.n_ops != node->n_inputs)
        return cpu_reason(reason, len, "Einsum: canonical equation missing or malformed");
    loom_dtype t = node->inputs[0].dtype;
    if (!is_f32_i32_i64(t))
        return no_dtype(node, t, "float32, int32, int64", reason, len);
    for (uint32_t i = 0; i < e.n_ops; i++)
        if (strlen(e.term[i]) != node->inputs[i].rank || node->inputs[i].dtype != t)
            return cpu_reason(reason, len, "Einsum: operand %u does not match the equation", i);
    return 1;
}

static loom_status ein_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    ein_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
    ein_eq e;
    ein_split(str_attr(node, "equation", ""), &e);
    p->n_ops = e.n_ops;
    p->dt = node->inputs[0].dtype;
    k->params = p;
    k->run = ein_run;
    /* Label order: output labels, then the summed ones in order of appearance. */
    int order[EIN_LABELS];
    uint32_t nl = 0;
    for (int l = 0; l < EIN_LABELS; l++)
        order[l] = -1;
    for (const char *c = e.term[2]; *c; c++) {
        order[ein_lab(*c)] = (int)nl++;
    }
    p->n_out = nl;
    for (uint32_t i = 0; i < e.n_ops; i++)
        for (const char *c = e.term[i]; *c; c++)
            if (order[ein_lab(*c)] < 0) {
                order[ein_lab(*c)] = (int)nl++;
            }
    p->n_sum = nl - p->n_out;
    for (uint32_t l = 0; l < nl; l++)
        p->lsize[l] = -1;
    int repeated = 0, broadcast = 0;
    for (uint32_t i = 0; i < e.n_ops; i++) {
        const loom_tensor_desc *d = &node->inputs[i];
        int64_t s = 1;
        for (uint32_t q = d->rank; q-- > 0;) {
            int l = order[ein_lab(e.term[i][q])];
            if (p->lstride[i][l])
                repeated = 1;
            if (d->dims[q] != 1)
                p->lstride[i][l] += s;
            if (p->lsize[l] < 0 || p->lsize[l] == 1) /* a 1 broadcasts, even against 0 */
                p->lsize[l] = d->dims[q];
            s *= d->dims[q];
        }
    }
    for (uint32_t i = 0; i < e.n_ops; i++) {
        const loom_tensor_desc *d = &node->inputs[i];
        for (uint32_t q = 0; q < d->rank; q++)
            if (d->dims[q] != p->lsize[order[ein_lab(e.term[i][q])]])
                broadcast = 1;
        /* a repeated label may have had a size-1 dim: recheck it via strchr */
        for (uint32_t q = 0; q < d->rank; q++)
            if (strchr(e.term[i] + q + 1, e.term[i][q]))
                repeated = 1;
    }
    p->out_numel = cpu_prod(p->lsize, 0, p->n_out);
    p->sum_numel = cpu_prod(p->lsize, p->n_out, nl);
    if (p->sum_numel == 0) { /* sums over nothing: zeros, the naive loop writes them */
        p->sum_numel = 0;
    }
    /* GEMM path: f32, two operands, every label in both or in the output. */
    if (p->dt != F32 || e.n_ops != 2 || repeated || broadcast)
        return LOOM_OK;
    const char *ta = e.term[0], *tb = e.term[1], *to = e.term[2];
    char bl[LOOM_MAX_RANK + 1] = "", ml[LOOM_MAX_RANK + 1] = "", nlab[LOOM_MAX_RANK + 1] = "",
         kl[LOOM_MAX_RANK + 1] = "";
    size_t nb = 0, nm = 0, nn = 0, nk = 0;
    for (const char *c = ta; *c; c++) {
        int in_b = strchr(tb, *c) != NULL, in_o = strchr(to, *c) != NULL;
        if (in_b && in_o)
            bl[nb++] = *c;
        else if (in_o)
            ml[nm++] = *c;
        else if (in_b)
            kl[nk++] = *c;
        else
            return LOOM_OK; /* summed in A alone */
    }
    for (const char *c = tb; *c; c++) {
        int in_a = strchr(ta, *c) != NULL, in_o = strchr(to, *c) != NULL;
        if (!in_a && in_o)
            nlab[nn++] = *c;
        else if (!in_a)
            return LOOM_OK; /* summed in B alone */
    }
    /* The output's batch labels keep the output's order, so Y often needs no permute. */
    nb = 0;
    for (const char *c = to; *c; c++)
        if (strchr(ta, *c) && strchr(tb, *c))
            bl[nb++] = *c;
    bl[nb] = 0;
    p->batch = 1, p->m = 1, p->n = 1, p->k = 1;
    for (size_t i = 0; i < nb; i++)
        p->batch *= p->lsize[order[ein_lab(bl[i])]];
    for (size_t i = 0; i < nm; i++)
        p->m *= p->lsize[order[ein_lab(ml[i])]];
    for (size_t i = 0; i < nn; i++)
        p->n *= p->lsize[order[ein_lab(nlab[i])]];
    for (size_t i = 0; i < nk; i++)
        p->k *= p->lsize[order[ein_lab(kl[i])]];
    if (!fits_int(p->m) || !fits_int(p->n) || !fits_int(p->k))
        return LOOM_OK;
    /* Permutes: destination label strings and where each label lives in the source. */
    /* Each operand has at most LOOM_MAX_RANK labels, so the joined strings fit; the buffers
     * are sized for three full groups so that the compiler can see no truncation. */
    char da[3 * LOOM_MAX_RANK + 1], db[3 * LOOM_MAX_RANK + 1], dc[3 * LOOM_MAX_RANK + 1];
    snprintf(da, sizeof da, "%s%s%s", bl, ml, kl);
    snprintf(db, sizeof db, "%s%s%s", bl, kl, nlab);
    snprintf(dc, sizeof dc, "%s%s%s", bl, ml, nlab);
    struct {
        ein_perm *q;
        const char *dst, *src;
        uint32_t op; /* operand index for source strides, 2: the [b, m, n] buffer */
    } plan[3] = {{&p->pa, da, ta, 0}, {&p->pb, db, tb, 1}, {&p->pc, to, dc, 2}};
    for (int i = 0; i < 3; i++) {
        ein_perm *q = plan[i].q;
        const char *dst = plan[i].dst, *src = plan[i].src;
        q->needed = strcmp(dst, src) != 0 && strlen(dst) > 1;
        q->rank = (uint32_t)strlen(dst);
        int64_t sst[LOOM_MAX_RANK], s = 1;
        for (uint32_t d = (uint32_t)strlen(src); d-- > 0;) {
            sst[d] = s;
            s *= p->lsize[order[ein_lab(src[d])]];
        }
        for (uint32_t d = 0; d < q->rank; d++) {
            q->dims[d] = p->lsize[order[ein_lab(dst[d])]];
            q->sstride[d] = sst[strchr(src, dst[d]) - src];
        }
        if (q->rank == 0)
            q->needed = 0;
    }
    size_t sa = p->pa.needed ? (size_t)(p->batch * p->m * p->k) : 0;
    size_t sb = p->pb.needed ? (size_t)(p->batch * p->k * p->n) : 0;
    size_t sc = p->pc.needed ? (size_t)(p->batch * p->m * p->n) : 0;
    p->off_b = (sa + 15) / 16 * 16;
    p->off_c = p->off_b + (sb + 15) / 16 * 16;
    k->scratch_bytes = (p->off_c + sc) * sizeof(float);
    p->gemm = 1;
    return LOOM_OK;
}

/* ===========================================================================================
 * Rows along one axis: X viewed as [outer, len, inner]. InstanceNormalization, LogSoftmax,
 * ArgMax/ArgMin and TopK work on one (outer, inner) column at a time.
 * =========================================================================================== */

typedef struct axis_params {
    int64_t outer, len, inner;
    loom_dtype dt;
    /* InstanceNorm */
    int64_t c;
    float eps;
    /* Arg */
    int is_max, last;
    /* TopK */
    int64_t k, chunks;
    int largest;
} axis_params;

typedef struct axis_job {
    const axis_params *p;
    const void *x, *scale, *bias;
    void *y, *y2;
    int64_t *heap;
} axis_job;

static axis_params *axis_make(const loom_tensor_desc *x, int64_t axis)
{
    axis_params *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->dt = x->dtype;
    p->outer = cpu_prod(x->dims, 0, (uint32_t)axis);
    p->len = x->dims[axis];
    p->inner = cpu_prod(x->dims, (uint32_t)axis + 1, x->rank);
    return p;
}

/* ---- InstanceNormalization: per (n, c) plane ---- */

static void in_task(void *arg, size_t q0, size_t q1)
{
    const axis_job *j = arg;
    const axis_params *p = j->p;
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
    const axis_params *p = k->params;
    axis_job j = {.p = p, .x = args->inputs[0], .scale = args->inputs[1],
                  .bias = args->inputs[2], .y = args->outputs[0]};
    if (p->outer * p->len == 0 || p->inner == 0)
        return LOOM_OK;
    cpu_parallel_for(pool, (size_t)(p->outer * p->len), grain_for(3 * p->inner), in_task, &j);
    return LOOM_OK;
}

static int in_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < 3; i++)
        if (node->inputs[i].dtype != F32)
            return no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    if (node->inputs[0].rank < 2)
        return cpu_reason(reason, len, "InstanceNormalization: X must be [N, C, ...]");
    return 1;
}

static loom_status in_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    axis_params *p = axis_make(x, 1);
    if (!p)
        return oom(node, err, err_len);
    p->c = x->dims[1];
    p->eps = loom_node_attr_float(node, "epsilon", 1e-5f);
    k->params = p;
    k->run = in_run;
    return LOOM_OK;
}

/* ---- LogSoftmax ---- */

static void lsm_task(void *arg, size_t c0, size_t c1)
{
    const axis_job *j = arg;
    const axis_params *p = j->p;
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
    const axis_params *p = k->params;
    axis_job j = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    size_t cols = (size_t)(p->outer * p->inner);
    if (cols == 0 || p->len == 0)
        return LOOM_OK;
    cpu_parallel_for(pool, cols, grain_for(p->len * 8), lsm_task, &j);
    return LOOM_OK;
}

static int lsm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->inputs[0].dtype != F32)
        return no_dtype(node, node->inputs[0].dtype, "float32", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank)
        return cpu_reason(reason, len, "LogSoftmax: axis %lld out of range", (long long)axis);
    return 1;
}

static loom_status lsm_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    axis_params *p = axis_make(&node->inputs[0], loom_node_attr_int(node, "axis", -1));
    if (!p)
        return oom(node, err, err_len);
    k->params = p;
    k->run = lsm_run;
    return LOOM_OK;
}

/* ---- ArgMax, ArgMin: NaN wins (as numpy's), ties go to the first or the last index ---- */

#define ARG_TASK(T, ISNAN)                                                                         \
    static void arg_##T(const axis_job *j, size_t c0, size_t c1)                                   \
    {                                                                                              \
        const axis_params *p = j->p;                                                               \
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
#define IS_NAN_F(v) ((v) != (v))
#define NEVER_NAN(v) ((void)(v), 0)
ARG_TASK(float, IS_NAN_F)
ARG_TASK(int32_t, NEVER_NAN)
ARG_TASK(int64_t, NEVER_NAN)
ARG_TASK(int8_t, NEVER_NAN)
ARG_TASK(uint8_t, NEVER_NAN)

static void arg_task(void *arg, size_t c0, size_t c1)
{
    const axis_job *j = arg;
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
    const axis_params *p = k->params;
    axis_job j = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    size_t cols = (size_t)(p->outer * p->inner);
    if (cols == 0 || p->len == 0)
        return LOOM_OK;
    cpu_parallel_for(pool, cols, grain_for(p->len), arg_task, &j);
    return LOOM_OK;
}

static int arg_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!is_f32_i32_i64(t) && t != LOOM_DTYPE_I8 && t != LOOM_DTYPE_U8)
        return no_dtype(node, t, "float32, int32, int64, int8, uint8", reason, len);
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
    axis_params *p = axis_make(&node->inputs[0], loom_node_attr_int(node, "axis", 0));
    if (!p)
        return oom(node, err, err_len);
    p->is_max = node->op == LOOM_OP_ARG_MAX;
    p->last = loom_node_attr_int(node, "select_last_index", 0) != 0;
    k->params = p;
    k->run = arg_run;
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
    static void topk_col_##T(const axis_job *j, size_t c, int64_t *h)                              \
    {                                                                                              \
        const axis_params *p = j->p;                                                               \
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
TOPK_IMPL(float, IS_NAN_F)
TOPK_IMPL(int32_t, NEVER_NAN)
TOPK_IMPL(int64_t, NEVER_NAN)

static void topk_task(void *arg, size_t q0, size_t q1)
{
    const axis_job *j = arg;
    const axis_params *p = j->p;
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
    const axis_params *p = k->params;
    if (p->chunks == 0 || p->k == 0)
        return LOOM_OK;
    axis_job j = {.p = p, .x = args->inputs[0], .y = args->outputs[0],
                  .y2 = k->n_out > 1 ? args->outputs[1] : NULL, .heap = args->scratch};
    size_t cols = (size_t)(p->outer * p->inner);
    size_t per_chunk = cols / (size_t)p->chunks + 1;
    cpu_parallel_for(pool, (size_t)p->chunks, grain_for(p->len * (int64_t)per_chunk * 2),
                     topk_task, &j);
    return LOOM_OK;
}

static int topk_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!is_f32_i32_i64(t))
        return no_dtype(node, t, "float32, int32, int64", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank || !loom_node_attr(node, "k"))
        return cpu_reason(reason, len, "TopK: canonical axis and k missing");
    return 1;
}

static loom_status topk_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    axis_params *p = axis_make(&node->inputs[0], loom_node_attr_int(node, "axis", -1));
    if (!p)
        return oom(node, err, err_len);
    p->k = loom_node_attr_int(node, "k", 0);
    p->largest = loom_node_attr_int(node, "largest", 1) != 0;
    int64_t cols = p->outer * p->inner;
    p->chunks = cols < TOPK_CHUNKS ? cols : TOPK_CHUNKS;
    k->params = p;
    k->run = topk_run;
    k->scratch_bytes = (size_t)(p->chunks * p->k) * sizeof(int64_t);
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
        copy_elem(j->y + i * p->esize, j->x + (size_t)el_offset(p, j->idx, (int64_t)i) * p->esize,
                  p->esize);
}

static loom_status ge_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const el_params *p = k->params;
    loom_status st = el_check(k, p, args->inputs[1], err, err_len);
    if (st != LOOM_OK || p->n_idx == 0)
        return st;
    el_job j = {p, args->inputs[0], args->inputs[1], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->n_idx, GRAIN / 4, ge_task, &j);
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
            copy_elem(y + (size_t)el_offset(p, idx, i) * p->esize, u + (size_t)i * p->esize,
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
        return no_dtype(node, t, "fixed-size dtypes", reason, len);
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank ||
        node->inputs[1].rank != node->inputs[0].rank)
        return cpu_reason(reason, len, "%s: axis or indices rank malformed", node->op_name);
    if (node->op == LOOM_OP_SCATTER_ELEMENTS &&
        strcmp(str_attr(node, "reduction", "none"), "none") != 0 && !is_f32_i32_i64(t))
        return no_dtype(node, t, "float32, int32, int64 with a reduction", reason, len);
    return 1;
}

static loom_status el_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    el_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
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
    const char *red = str_attr(node, "reduction", "none");
    p->red = strcmp(red, "add") == 0   ? 1
             : strcmp(red, "mul") == 0 ? 2
             : strcmp(red, "max") == 0 ? 3
             : strcmp(red, "min") == 0 ? 4
                                       : 0;
    k->params = p;
    k->run = node->op == LOOM_OP_SCATTER_ELEMENTS ? sc_run : ge_run;
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
    cpu_parallel_for(pool, (size_t)p->rows, grain_for(p->row_len), pr_task, &j);
    return LOOM_OK;
}

static int pr_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!is_f32_i32_i64(t) || node->inputs[1].dtype != t)
        return no_dtype(node, t, "float32, int32, int64", reason, len);
    if (node->inputs[1].rank > node->inputs[0].rank)
        return cpu_reason(reason, len, "PRelu: slope has a higher rank than X");
    return 1;
}

static loom_status pr_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    pr_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
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
RD_TASK(float, float, INFINITY, IS_NAN_F)
RD_TASK(int32_t, int32_t, INT32_MAX, NEVER_NAN)
RD_TASK(int64_t, int64_t, INT64_MAX, NEVER_NAN)

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
    cpu_parallel_for(pool, (size_t)p->out_numel, grain_for(p->count), rd_task, &j);
    return LOOM_OK;
}

static int rd_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (!is_f32_i32_i64(t))
        return no_dtype(node, t, "float32, int32, int64", reason, len);
    const loom_attr *a = loom_node_attr(node, "axes");
    if (!a || a->kind != LOOM_ATTR_INTS)
        return cpu_reason(reason, len, "%s: canonical axes missing", node->op_name);
    for (size_t i = 0; i < a->count; i++)
        if (a->ints[i] < 0 || a->ints[i] >= (int64_t)node->inputs[0].rank)
            return cpu_reason(reason, len, "%s: axis out of range", node->op_name);
    return 1;
}

static loom_status rd_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    rd_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
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

/* ===========================================================================================
 * LSTM and GRU: per direction, one GEMM of every time step's input projection, then per step
 * one GEMM of the recurrence and the gates. Directions run in parallel.
 * =========================================================================================== */

typedef struct rnn_params {
    int lstm;
    int64_t seq, batch, in, h, nd, gates;
    int layout, reverse, input_forget, lbr;
    float clip;
    int has_b, has_len, has_h0, has_c0, has_p;
    size_t per_dir; /* floats of scratch per direction */
} rnn_params;

typedef struct rnn_job {
    const rnn_params *p;
    const loom_exec_args *args;
    float *scratch;
    const int32_t *lens;
} rnn_job;

static inline float sigm(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

static inline float clipf(float v, float c)
{
    return v > c ? c : v < -c ? -c : v;
}

static void rnn_dir(void *arg, size_t d0, size_t d1)
{
    const rnn_job *j = arg;
    const rnn_params *p = j->p;
    const int64_t T_ = p->seq, B = p->batch, IN = p->in, H = p->h, G = p->gates, GH = G * H;
    const float *x = j->args->inputs[0];
    const float *w_all = j->args->inputs[1], *r_all = j->args->inputs[2];
    const float *b_all = p->has_b ? j->args->inputs[3] : NULL;
    const float *h0 = p->has_h0 ? j->args->inputs[5] : NULL;
    const float *c0 = p->lstm && p->has_c0 ? j->args->inputs[6] : NULL;
    const float *p_all = p->lstm && p->has_p ? j->args->inputs[7] : NULL;
    float *y = j->args->outputs[0], *yh = j->args->outputs[1];
    float *yc = p->lstm ? j->args->outputs[2] : NULL;
    for (size_t dd = d0; dd < d1; dd++) {
        const int64_t d = (int64_t)dd;
        const int rev = p->nd == 2 ? d == 1 : p->reverse;
        const float *W = w_all + d * GH * IN, *R = r_all + d * GH * H;
        const float *Wb = b_all ? b_all + d * 2 * GH : NULL, *Rb = Wb ? Wb + GH : NULL;
        const float *P = p_all ? p_all + d * 3 * H : NULL;
        float *xw = j->scratch + dd * p->per_dir;
        float *hr = xw + T_ * B * GH;
        float *hs = hr + B * GH, *cs = hs + B * H, *rh = cs + B * H;
        /* input projection of every (t, b): X rows are [t*B + b] (layout 0) or [b*T + t] */
        sgemm(0, 1, T_ * B, GH, IN, x, IN, W, IN, 0.0f, xw, GH);
        if (Wb) {
            for (int64_t r = 0; r < T_ * B; r++) {
                float *row = xw + r * GH;
                for (int64_t g = 0; g < GH; g++) {
                    /* GRU's recurrent h bias goes inside r (*) (...) when linear_before_reset */
                    const int keep_rb = !p->lstm && p->lbr && g >= 2 * H;
                    row[g] += Wb[g] + (keep_rb ? 0.0f : Rb[g]);
                }
            }
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < H; i++) {
                const int64_t at = p->layout ? (b * p->nd + d) * H + i : (d * B + b) * H + i;
                hs[b * H + i] = h0 ? h0[at] : 0.0f;
                cs[b * H + i] = c0 ? c0[at] : 0.0f;
            }
        for (int64_t s = 0; s < T_; s++) {
            /* recurrence: HR = H_prev R^T (GRU without lbr: only the z and r gates here) */
            const int64_t rg = !p->lstm && !p->lbr ? 2 * H : GH;
            sgemm(0, 1, B, rg, H, hs, H, R, H, 0.0f, hr, GH);
            for (int64_t b = 0; b < B; b++) {
                const int64_t len = j->lens ? j->lens[b] : T_;
                if (s >= len)
                    continue;
                const int64_t t = rev ? len - 1 - s : s;
                const int64_t row = p->layout ? b * T_ + t : t * B + b;
                const float *xr = xw + row * GH;
                float *g = hr + b * GH;
                /* GRU's h gate adds its input part later, inside or outside r (*) (...) */
                const int64_t add = p->lstm ? GH : 2 * H;
                for (int64_t q = 0; q < add; q++)
                    g[q] += xr[q];
                if (!p->lstm && !p->lbr)
                    for (int64_t i = 0; i < H; i++)
                        rh[b * H + i] = sigm(clipf(g[H + i], p->clip)) * hs[b * H + i];
            }
            if (!p->lstm && !p->lbr) /* (r (*) H_prev) Rh^T */
                sgemm(0, 1, B, H, H, rh, H, R + 2 * H * H, H, 0.0f, hr + 2 * H, GH);
            for (int64_t b = 0; b < B; b++) {
                const int64_t len = j->lens ? j->lens[b] : T_;
                if (s >= len)
                    continue;
                const int64_t t = rev ? len - 1 - s : s;
                const int64_t row = p->layout ? b * T_ + t : t * B + b;
                const float *xr = xw + row * GH;
                float *g = hr + b * GH, *hb = hs + b * H, *cb = cs + b * H;
                if (p->lstm) {
                    /* gates i, o, f, c; peepholes P = [Pi, Po, Pf] */
                    for (int64_t i = 0; i < H; i++) {
                        const float c_prev = cb[i];
                        float gi = g[i], go = g[H + i], gf = g[2 * H + i], gc = g[3 * H + i];
                        if (P) {
                            gi += P[i] * c_prev;
                            gf += P[2 * H + i] * c_prev;
                        }
                        const float it = sigm(clipf(gi, p->clip));
                        const float ft = p->input_forget ? 1.0f - it : sigm(clipf(gf, p->clip));
                        const float c = ft * c_prev + it * tanhf(clipf(gc, p->clip));
                        if (P)
                            go += P[H + i] * c;
                        const float o = sigm(clipf(go, p->clip));
                        cb[i] = c;
                        hb[i] = o * tanhf(c);
                    }
                } else {
                    for (int64_t i = 0; i < H; i++) {
                        const float z = sigm(clipf(g[i], p->clip));
                        float hh;
                        if (p->lbr) {
                            const float r = sigm(clipf(g[H + i], p->clip));
                            const float rec = g[2 * H + i] + (Rb ? Rb[2 * H + i] : 0.0f);
                            hh = tanhf(clipf(xr[2 * H + i] + r * rec, p->clip));
                        } else {
                            hh = tanhf(clipf(xr[2 * H + i] + g[2 * H + i], p->clip));
                        }
                        hb[i] = (1.0f - z) * hh + z * hb[i];
                    }
                }
                if (y) {
                    float *yo = y + (p->layout ? ((b * T_ + t) * p->nd + d) * H
                                               : ((t * p->nd + d) * B + b) * H);
                    memcpy(yo, hb, (size_t)H * sizeof *yo);
                }
            }
        }
        for (int64_t b = 0; b < B; b++) {
            const int64_t at = p->layout ? (b * p->nd + d) * H : (d * B + b) * H;
            if (yh)
                memcpy(yh + at, hs + b * H, (size_t)H * sizeof *yh);
            if (yc)
                memcpy(yc + at, cs + b * H, (size_t)H * sizeof *yc);
        }
    }
}

static loom_status rnn_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    const rnn_params *p = k->params;
    const int32_t *lens = p->has_len ? args->inputs[4] : NULL;
    for (int64_t b = 0; lens && b < p->batch; b++)
        if (lens[b] < 0 || lens[b] > p->seq)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "%s: sequence_lens[%lld] = %d is out of range [0, %lld]",
                            p->lstm ? "LSTM" : "GRU", (long long)b, (int)lens[b],
                            (long long)p->seq);
    /* The outputs the kernel writes: 1 to 3 of them; absent ones are skipped. */
    void *outs[3] = {NULL, NULL, NULL};
    for (uint32_t o = 0; o < k->n_out && o < 3; o++)
        outs[o] = args->outputs[o];
    if (outs[0])
        memset(outs[0], 0, (size_t)loom_tensor_desc_numel(&k->out[0]) * sizeof(float));
    if (p->batch == 0)
        return LOOM_OK;
    loom_exec_args a = *args;
    a.outputs = outs;
    rnn_job j = {p, &a, args->scratch, lens};
    cpu_parallel_for(pool, (size_t)p->nd, 1, rnn_dir, &j);
    return LOOM_OK;
}

static int rnn_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (i != 4 && cpu_present(node, i) && node->inputs[i].dtype != F32)
            return no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    if (cpu_present(node, 4) && node->inputs[4].dtype != I32)
        return cpu_reason(reason, len, "%s: sequence_lens must be int32", node->op_name);
    const loom_tensor_desc *x = &node->inputs[0];
    int64_t h = loom_node_attr_int(node, "hidden_size", 0);
    int64_t g = node->op == LOOM_OP_LSTM ? 4 : 3;
    if (x->rank != 3 || h < 1 || !fits_int(x->dims[0] * x->dims[1]) || !fits_int(g * h) ||
        !fits_int(x->dims[2]))
        return cpu_reason(reason, len, "%s: shapes too large or malformed", node->op_name);
    return 1;
}

static loom_status rnn_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    rnn_params *p = calloc(1, sizeof *p);
    if (!p)
        return oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->lstm = node->op == LOOM_OP_LSTM;
    p->layout = loom_node_attr_int(node, "layout", 0) != 0;
    p->seq = p->layout ? x->dims[1] : x->dims[0];
    p->batch = p->layout ? x->dims[0] : x->dims[1];
    p->in = x->dims[2];
    p->h = loom_node_attr_int(node, "hidden_size", 1);
    p->gates = p->lstm ? 4 : 3;
    const char *dir = str_attr(node, "direction", "forward");
    p->nd = strcmp(dir, "bidirectional") == 0 ? 2 : 1;
    p->reverse = strcmp(dir, "reverse") == 0;
    p->input_forget = loom_node_attr_int(node, "input_forget", 0) != 0;
    p->lbr = loom_node_attr_int(node, "linear_before_reset", 0) != 0;
    p->clip = loom_node_attr_float(node, "clip", INFINITY);
    p->has_b = cpu_present(node, 3);
    p->has_len = cpu_present(node, 4);
    p->has_h0 = cpu_present(node, 5);
    p->has_c0 = cpu_present(node, 6);
    p->has_p = cpu_present(node, 7);
    const int64_t gh = p->gates * p->h;
    p->per_dir = (size_t)(p->seq * p->batch * gh + p->batch * gh + 3 * p->batch * p->h);
    p->per_dir = (p->per_dir + 15) / 16 * 16;
    k->params = p;
    k->run = rnn_run;
    k->scratch_bytes = (size_t)p->nd * p->per_dir * sizeof(float);
    return LOOM_OK;
}

/* ---- registration ------------------------------------------------------------------------- */

void cpu_register_nn2(cpu_op_entry *table)
{
    table[LOOM_OP_CONV_TRANSPOSE] = (cpu_op_entry){ct_supports, ct_prepare};
    table[LOOM_OP_RESIZE] = (cpu_op_entry){rs_supports, rs_prepare};
    table[LOOM_OP_PAD] = (cpu_op_entry){map_supports, pad_prepare};
    table[LOOM_OP_TILE] = (cpu_op_entry){map_supports, tile_prepare};
    table[LOOM_OP_EINSUM] = (cpu_op_entry){ein_supports, ein_prepare};
    table[LOOM_OP_INSTANCE_NORMALIZATION] = (cpu_op_entry){in_supports, in_prepare};
    table[LOOM_OP_LSTM] = (cpu_op_entry){rnn_supports, rnn_prepare};
    table[LOOM_OP_GRU] = (cpu_op_entry){rnn_supports, rnn_prepare};
    table[LOOM_OP_TOP_K] = (cpu_op_entry){topk_supports, topk_prepare};
    table[LOOM_OP_ARG_MAX] = (cpu_op_entry){arg_supports, arg_prepare};
    table[LOOM_OP_ARG_MIN] = (cpu_op_entry){arg_supports, arg_prepare};
    table[LOOM_OP_SCATTER_ELEMENTS] = (cpu_op_entry){el_supports, el_prepare};
    table[LOOM_OP_GATHER_ELEMENTS] = (cpu_op_entry){el_supports, el_prepare};
    table[LOOM_OP_LOG_SOFTMAX] = (cpu_op_entry){lsm_supports, lsm_prepare};
    table[LOOM_OP_PRELU] = (cpu_op_entry){pr_supports, pr_prepare};
    table[LOOM_OP_REDUCE_MIN] = (cpu_op_entry){rd_supports, rd_prepare};
    table[LOOM_OP_REDUCE_PROD] = (cpu_op_entry){rd_supports, rd_prepare};
}
