/*
 * CPU kernels of the structural tensor operators added for operator coverage
 * (graph/ops_tensor.c): Trilu, DepthToSpace, SpaceToDepth, EyeLike, OneHot, GatherND and
 * ScatterND without a reduction move bytes and take any dtype; CumSum, Hardmax and ScatterND's
 * reductions compute (float32, int32, int64). Indices out of range fail the run with a message
 * naming the value.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64

typedef struct tn_params {
    int64_t a, b, c;    /* op-specific sizes (documented at each op) */
    int64_t blk;        /* DepthToSpace/SpaceToDepth blocksize */
    int flag, flag2;    /* Trilu upper; CumSum exclusive, reverse; D2S CRD */
    int64_t k;          /* EyeLike k */
    size_t esize;
    loom_dtype dt;
} tn_params;

static int64_t read_int(const void *p, loom_dtype dt)
{
    return dt == I64 ? *(const int64_t *)p : *(const int32_t *)p;
}

static tn_params *tn_new(const loom_node_desc *node)
{
    tn_params *p = calloc(1, sizeof *p);
    if (p) {
        p->dt = node->inputs[0].dtype;
        p->esize = loom_dtype_size(p->dt);
    }
    return p;
}

/* ---- Trilu: X viewed as [a, rows b, cols c] ------------------------------------------------ */

static loom_status trilu_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const tn_params *p = k->params;
    const int64_t kk = cpu_kernel_present(k, 1) ? read_int(args->inputs[1], k->in[1].dtype) : 0;
    const char *x = args->inputs[0];
    char *y = args->outputs[0];
    const size_t es = p->esize;
    for (int64_t m = 0; m < p->a; m++)
        for (int64_t i = 0; i < p->b; i++) {
            const size_t row = (size_t)((m * p->b + i) * p->c) * es;
            for (int64_t j = 0; j < p->c; j++) {
                const int keep = p->flag ? j - i >= kk : j - i <= kk;
                if (keep)
                    memcpy(y + row + (size_t)j * es, x + row + (size_t)j * es, es);
                else
                    memset(y + row + (size_t)j * es, 0, es);
            }
        }
    return LOOM_OK;
}

static loom_status trilu_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                 size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->b = x->dims[x->rank - 2];
    p->c = x->dims[x->rank - 1];
    p->a = cpu_prod(x->dims, 0, x->rank - 2);
    p->flag = loom_node_attr_int(node, "upper", 1) != 0;
    k->params = p;
    k->run = trilu_run;
    return LOOM_OK;
}

/* ---- CumSum: X viewed as [outer a, len b, inner c] along the axis read at run time ---------- */

#define CUMSUM(T)                                                                                  \
    do {                                                                                           \
        const T *x = args->inputs[0];                                                              \
        T *y = args->outputs[0];                                                                   \
        for (int64_t o = 0; o < outer; o++)                                                        \
            for (int64_t i = 0; i < inner; i++) {                                                  \
                T acc = 0;                                                                         \
                for (int64_t s = 0; s < len; s++) {                                                \
                    const int64_t l = p->flag2 ? len - 1 - s : s;                                  \
                    const int64_t at = (o * len + l) * inner + i;                                  \
                    if (p->flag) {                                                                 \
                        y[at] = acc;                                                               \
                        acc = (T)(acc + x[at]);                                                    \
                    } else {                                                                       \
                        acc = (T)(acc + x[at]);                                                    \
                        y[at] = acc;                                                               \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
    } while (0)

static loom_status cumsum_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)pool;
    const tn_params *p = k->params;
    const loom_tensor_desc *xd = &k->in[0];
    int64_t axis = read_int(args->inputs[1], k->in[1].dtype);
    if (axis < -(int64_t)xd->rank || axis >= (int64_t)xd->rank)
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "CumSum: axis %lld is outside [-%u, %u)", (long long)axis, xd->rank,
                        xd->rank);
    if (axis < 0)
        axis += xd->rank;
    const int64_t outer = cpu_prod(xd->dims, 0, (uint32_t)axis), len = xd->dims[axis],
                  inner = cpu_prod(xd->dims, (uint32_t)axis + 1, xd->rank);
    switch (p->dt) {
    case F32: CUMSUM(float); break;
    case I32: CUMSUM(int32_t); break;
    case LOOM_DTYPE_F64: CUMSUM(double); break;
    default: CUMSUM(int64_t); break;
    }
    return LOOM_OK;
}

static loom_status cumsum_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->flag = loom_node_attr_int(node, "exclusive", 0) != 0;
    p->flag2 = loom_node_attr_int(node, "reverse", 0) != 0;
    k->params = p;
    k->run = cumsum_run;
    return LOOM_OK;
}

/* ---- Hardmax: [outer a, len b, inner c]; 1 at the first maximum ------------------------------ */

static loom_status hardmax_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const tn_params *p = k->params;
    const float *x = args->inputs[0];
    float *y = args->outputs[0];
    for (int64_t o = 0; o < p->a; o++)
        for (int64_t i = 0; i < p->c; i++) {
            int64_t best = 0;
            for (int64_t l = 0; l < p->b; l++) {
                const float v = x[(o * p->b + l) * p->c + i];
                const float bv = x[(o * p->b + best) * p->c + i];
                if (v > bv || (isnan(v) && !isnan(bv)))
                    best = l;
                y[(o * p->b + l) * p->c + i] = 0.0f;
            }
            if (p->b > 0)
                y[(o * p->b + best) * p->c + i] = 1.0f;
        }
    return LOOM_OK;
}

static loom_status hardmax_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                   size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    const uint32_t axis = (uint32_t)loom_node_attr_int(node, "axis", 0);
    p->a = cpu_prod(x->dims, 0, axis);
    p->b = x->dims[axis];
    p->c = cpu_prod(x->dims, axis + 1, x->rank);
    k->params = p;
    k->run = hardmax_run;
    return LOOM_OK;
}

/* ---- DepthToSpace, SpaceToDepth: a 6-D transpose ---------------------------------------------
 * Every output element (n, c, h, w) of DepthToSpace reads input channel
 * DCR: (bh * b + bw) * C' + c, CRD: c * b * b + bh * b + bw, at (h / b, w / b), with
 * bh = h % b, bw = w % b. SpaceToDepth is its DCR inverse. */

static loom_status d2s_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const tn_params *p = k->params;
    const int64_t b = p->blk;
    const int to_space = k->op == LOOM_OP_DEPTH_TO_SPACE;
    /* In the space layout (the output of D2S, the input of S2D): [N, Cs, Hs, Ws]; depth layout
     * [N, Cs * b * b, Hs / b, Ws / b]. */
    const loom_tensor_desc *sp = to_space ? &k->out[0] : &k->in[0];
    const int64_t N = sp->dims[0], Cs = sp->dims[1], Hs = sp->dims[2], Ws = sp->dims[3];
    const int64_t Hd = Hs / b, Wd = Ws / b;
    const char *x = args->inputs[0];
    char *y = args->outputs[0];
    const size_t es = p->esize;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < Cs; c++)
            for (int64_t h = 0; h < Hs; h++)
                for (int64_t w = 0; w < Ws; w++) {
                    const int64_t bh = h % b, bw = w % b;
                    const int64_t cd = p->flag ? c * b * b + bh * b + bw : (bh * b + bw) * Cs + c;
                    const int64_t s_off = ((n * Cs + c) * Hs + h) * Ws + w;
                    const int64_t d_off = ((n * Cs * b * b + cd) * Hd + h / b) * Wd + w / b;
                    if (to_space)
                        memcpy(y + (size_t)s_off * es, x + (size_t)d_off * es, es);
                    else
                        memcpy(y + (size_t)d_off * es, x + (size_t)s_off * es, es);
                }
    return LOOM_OK;
}

static loom_status d2s_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->blk = loom_node_attr_int(node, "blocksize", 1);
    p->flag = node->op == LOOM_OP_DEPTH_TO_SPACE &&
              !strcmp(cpu_str_attr(node, "mode", "DCR"), "CRD");
    k->params = p;
    k->run = d2s_run;
    return LOOM_OK;
}

/* ---- EyeLike -------------------------------------------------------------------------------- */

/* The value 1 in dtype DT into OUT (8 bytes). */
static void one_of(loom_dtype dt, unsigned char *out)
{
    memset(out, 0, 8);
    switch (dt) {
    case F32: { float f = 1.0f; memcpy(out, &f, 4); break; }
    case I32: { int32_t v = 1; memcpy(out, &v, 4); break; }
    case I64: case LOOM_DTYPE_U64: { int64_t v = 1; memcpy(out, &v, 8); break; }
    case LOOM_DTYPE_F64: { double d = 1.0; memcpy(out, &d, 8); break; }
    case LOOM_DTYPE_U32: { uint32_t v = 1; memcpy(out, &v, 4); break; }
    case LOOM_DTYPE_I16: case LOOM_DTYPE_U16: { uint16_t v = 1; memcpy(out, &v, 2); break; }
    case LOOM_DTYPE_F16: { uint16_t h = 0x3c00; memcpy(out, &h, 2); break; }
    case LOOM_DTYPE_BF16: { uint16_t h = 0x3f80; memcpy(out, &h, 2); break; }
    default: out[0] = 1; break; /* int8, uint8, bool */
    }
}

static loom_status eyelike_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const tn_params *p = k->params;
    const loom_tensor_desc *y = &k->out[0];
    const size_t es = loom_dtype_size(y->dtype);
    char *out = args->outputs[0];
    unsigned char one[8];
    one_of(y->dtype, one);
    memset(out, 0, (size_t)loom_tensor_desc_numel(y) * es);
    for (int64_t i = 0; i < y->dims[0]; i++) {
        const int64_t j = i + p->k;
        if (j >= 0 && j < y->dims[1])
            memcpy(out + (size_t)(i * y->dims[1] + j) * es, one, es);
    }
    return LOOM_OK;
}

static loom_status eyelike_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                   size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->k = loom_node_attr_int(node, "k", 0);
    k->params = p;
    k->run = eyelike_run;
    return LOOM_OK;
}

/* ---- OneHot: indices [a, c] around the new axis of size depth (b) ----------------------------- */

static double read_number(const void *p, loom_dtype dt, int64_t i)
{
    switch (dt) {
    case F32: return ((const float *)p)[i];
    case I32: return ((const int32_t *)p)[i];
    case I64: return (double)((const int64_t *)p)[i];
    case LOOM_DTYPE_I8: return ((const int8_t *)p)[i];
    case LOOM_DTYPE_U8: return ((const uint8_t *)p)[i];
    default: return NAN;
    }
}

static loom_status onehot_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const tn_params *p = k->params;
    const char *vals = args->inputs[2];
    char *y = args->outputs[0];
    const size_t es = loom_dtype_size(k->out[0].dtype);
    const int64_t depth = p->b;
    for (int64_t o = 0; o < p->a; o++)
        for (int64_t i = 0; i < p->c; i++) {
            double v = read_number(args->inputs[0], k->in[0].dtype, o * p->c + i);
            int64_t at = (int64_t)v; /* ONNX casts the index to an integer */
            if (at < 0)
                at += depth;
            for (int64_t d = 0; d < depth; d++)
                memcpy(y + (size_t)((o * depth + d) * p->c + i) * es,
                       vals + (d == at ? es : 0), es);
        }
    return LOOM_OK;
}

static loom_status onehot_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *y = &node->outputs[0];
    const uint32_t axis = (uint32_t)loom_node_attr_int(node, "axis", 0);
    p->a = cpu_prod(y->dims, 0, axis);
    p->b = y->dims[axis];
    p->c = cpu_prod(y->dims, axis + 1, y->rank);
    k->params = p;
    k->run = onehot_run;
    return LOOM_OK;
}

/* ---- GatherND, ScatterND ---------------------------------------------------------------------
 * Indices [B..., Q..., L] address data [B..., D_0 .. D_{L-1}, S...]: every index tuple picks
 * (GatherND) or writes (ScatterND) one slice of S elements. */

typedef struct nd_geom {
    int64_t batch;   /* product of the batch dims */
    int64_t tuples;  /* index tuples per batch */
    int64_t last;    /* L */
    int64_t slice;   /* elements per slice */
    int64_t data_per_batch;
    int64_t dims[LOOM_MAX_RANK], strides[LOOM_MAX_RANK]; /* of the L addressed dims, in slices */
} nd_geom;

static void nd_geom_make(const loom_tensor_desc *x, const loom_tensor_desc *ix, int64_t b,
                         nd_geom *g)
{
    g->last = ix->dims[ix->rank - 1];
    g->batch = cpu_prod(x->dims, 0, (uint32_t)b);
    g->tuples = cpu_prod(ix->dims, (uint32_t)b, ix->rank - 1);
    g->slice = cpu_prod(x->dims, (uint32_t)(b + g->last), x->rank);
    g->data_per_batch = cpu_prod(x->dims, (uint32_t)b, x->rank);
    int64_t s = 1;
    for (int64_t d = g->last; d-- > 0;) {
        g->dims[d] = x->dims[b + d];
        g->strides[d] = s;
        s *= g->dims[d];
    }
}

/* The slice a tuple addresses, or -1 (the bad value and its dim in *BAD, *BAD_DIM). */
static int64_t nd_slice(const nd_geom *g, const int64_t *tuple, int64_t *bad, int64_t *bad_dim)
{
    int64_t at = 0;
    for (int64_t d = 0; d < g->last; d++) {
        int64_t v = tuple[d];
        if (v < 0)
            v += g->dims[d];
        if (v < 0 || v >= g->dims[d]) {
            *bad = tuple[d];
            *bad_dim = g->dims[d];
            return -1;
        }
        at += v * g->strides[d];
    }
    return at;
}

typedef struct nd_params {
    nd_geom g;
    size_t esize;
    loom_dtype dt;
    int red; /* ScatterND: 0 none, 1 add, 2 mul, 3 max, 4 min */
} nd_params;

static loom_status gather_nd_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                                 char *err, size_t err_len)
{
    (void)pool;
    const nd_params *p = k->params;
    const nd_geom *g = &p->g;
    const char *x = args->inputs[0];
    const int64_t *ix = args->inputs[1];
    char *y = args->outputs[0];
    const size_t sb = (size_t)g->slice * p->esize;
    for (int64_t bt = 0; bt < g->batch; bt++)
        for (int64_t t = 0; t < g->tuples; t++) {
            int64_t bad = 0, bad_dim = 0; /* set by nd_slice when it fails */
            const int64_t s = nd_slice(g, ix + (bt * g->tuples + t) * g->last, &bad, &bad_dim);
            if (s < 0)
                return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                                "GatherND: index %lld is outside a dimension of %lld",
                                (long long)bad, (long long)bad_dim);
            memcpy(y + (size_t)(bt * g->tuples + t) * sb,
                   x + ((size_t)(bt * g->data_per_batch) * p->esize) + (size_t)s * sb, sb);
        }
    return LOOM_OK;
}

#define SCATTER_RED(T)                                                                             \
    do {                                                                                           \
        T *d = (T *)dst;                                                                           \
        const T *u = (const T *)src;                                                               \
        for (int64_t e = 0; e < g->slice; e++)                                                     \
            d[e] = p->red == 1   ? (T)(d[e] + u[e])                                                \
                   : p->red == 2 ? (T)(d[e] * u[e])                                                \
                   : p->red == 3 ? (d[e] > u[e] ? d[e] : u[e])                                     \
                                 : (d[e] < u[e] ? d[e] : u[e]);                                    \
    } while (0)

static loom_status scatter_nd_run(const cpu_kernel *k, const loom_exec_args *args,
                                  cpu_pool *pool, char *err, size_t err_len)
{
    (void)pool;
    const nd_params *p = k->params;
    const nd_geom *g = &p->g;
    const int64_t *ix = args->inputs[1];
    const char *upd = args->inputs[2];
    char *y = args->outputs[0];
    memcpy(y, args->inputs[0], (size_t)loom_tensor_desc_numel(&k->out[0]) * p->esize);
    const size_t sb = (size_t)g->slice * p->esize;
    for (int64_t t = 0; t < g->tuples; t++) {
        int64_t bad = 0, bad_dim = 0; /* set by nd_slice when it fails */
        const int64_t s = nd_slice(g, ix + t * g->last, &bad, &bad_dim);
        if (s < 0)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "ScatterND: index %lld is outside a dimension of %lld",
                            (long long)bad, (long long)bad_dim);
        char *dst = y + (size_t)s * sb;
        const char *src = upd + (size_t)t * sb;
        if (!p->red) {
            memcpy(dst, src, sb);
            continue;
        }
        switch (p->dt) {
        case F32: SCATTER_RED(float); break;
        case I32: SCATTER_RED(int32_t); break;
        default: SCATTER_RED(int64_t); break;
        }
    }
    return LOOM_OK;
}

static loom_status nd_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    nd_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const int scatter = node->op == LOOM_OP_SCATTER_ND;
    nd_geom_make(&node->inputs[0], &node->inputs[1],
                 scatter ? 0 : loom_node_attr_int(node, "batch_dims", 0), &p->g);
    p->dt = node->inputs[0].dtype;
    p->esize = loom_dtype_size(p->dt);
    const char *r = cpu_str_attr(node, "reduction", "none");
    p->red = !strcmp(r, "add") ? 1 : !strcmp(r, "mul") ? 2 : !strcmp(r, "max") ? 3
             : !strcmp(r, "min")                      ? 4
                                                      : 0;
    k->params = p;
    k->run = scatter ? scatter_nd_run : gather_nd_run;
    return LOOM_OK;
}

/* ---- supports ----------------------------------------------------------------------------- */

static int tn_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_dtype t = node->inputs[0].dtype;
    switch (node->op) {
    case LOOM_OP_CUM_SUM:
        if (!cpu_is_f32_i32_i64(t) && t != LOOM_DTYPE_F64)
            return cpu_no_dtype(node, t, "float32, float64, int32, int64", reason, len);
        break;
    case LOOM_OP_HARDMAX:
        if (t != F32)
            return cpu_no_dtype(node, t, "float32", reason, len);
        break;
    case LOOM_OP_ONE_HOT: {
        const loom_dtype it = t;
        if (!cpu_is_f32_i32_i64(it) && it != LOOM_DTYPE_I8 && it != LOOM_DTYPE_U8)
            return cpu_no_dtype(node, it, "float32, int8, uint8, int32, int64", reason, len);
        break;
    }
    case LOOM_OP_SCATTER_ND:
        if (strcmp(cpu_str_attr(node, "reduction", "none"), "none") && !cpu_is_f32_i32_i64(t))
            return cpu_no_dtype(node, t, "float32, int32, int64", reason, len);
        break;
    default: break;
    }
    if (!loom_dtype_size(t) || !loom_dtype_size(node->outputs[0].dtype))
        return cpu_no_dtype(node, t, "a sized dtype", reason, len);
    return 1;
}

/* ---- ReverseSequence: X as [T, B, inner] (time_axis 0) or [B, T, inner]; the first
 * sequence_lens[b] steps of each batch row reversed, the rest copied ---- */

static loom_status revseq_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)pool;
    const tn_params *p = k->params;
    const int64_t T_ = p->a, B = p->b, inner = p->c;
    const int time_first = p->flag;
    const int64_t *lens = args->inputs[1];
    const char *x = args->inputs[0];
    char *y = args->outputs[0];
    const size_t row = (size_t)inner * p->esize;
    for (int64_t b = 0; b < B; b++) {
        if (lens[b] < 0 || lens[b] > T_)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "ReverseSequence: sequence_lens[%lld] = %lld is outside [0, %lld]",
                            (long long)b, (long long)lens[b], (long long)T_);
        for (int64_t t = 0; t < T_; t++) {
            const int64_t src = t < lens[b] ? lens[b] - 1 - t : t;
            const int64_t yo = time_first ? t * B + b : b * T_ + t;
            const int64_t xo = time_first ? src * B + b : b * T_ + src;
            memcpy(y + (size_t)yo * row, x + (size_t)xo * row, row);
        }
    }
    return LOOM_OK;
}

static loom_status revseq_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    tn_params *p = tn_new(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->flag = loom_node_attr_int(node, "time_axis", 0) == 0;
    p->a = x->dims[p->flag ? 0 : 1];
    p->b = x->dims[p->flag ? 1 : 0];
    p->c = cpu_prod(x->dims, 2, x->rank);
    k->params = p;
    k->run = revseq_run;
    return LOOM_OK;
}

void cpu_register_tensor(cpu_op_entry *table)
{
    table[LOOM_OP_REVERSE_SEQUENCE] = (cpu_op_entry){tn_supports, revseq_prepare};
    table[LOOM_OP_TRILU] = (cpu_op_entry){tn_supports, trilu_prepare};
    table[LOOM_OP_CUM_SUM] = (cpu_op_entry){tn_supports, cumsum_prepare};
    table[LOOM_OP_HARDMAX] = (cpu_op_entry){tn_supports, hardmax_prepare};
    table[LOOM_OP_DEPTH_TO_SPACE] = (cpu_op_entry){tn_supports, d2s_prepare};
    table[LOOM_OP_SPACE_TO_DEPTH] = (cpu_op_entry){tn_supports, d2s_prepare};
    table[LOOM_OP_EYE_LIKE] = (cpu_op_entry){tn_supports, eyelike_prepare};
    table[LOOM_OP_ONE_HOT] = (cpu_op_entry){tn_supports, onehot_prepare};
    table[LOOM_OP_GATHER_ND] = (cpu_op_entry){tn_supports, nd_prepare};
    table[LOOM_OP_SCATTER_ND] = (cpu_op_entry){tn_supports, nd_prepare};
}
