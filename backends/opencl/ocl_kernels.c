/*
 * The OpenCL backend's operator families: what each op accepts (supports), what prepare works
 * out once (shape tables, constants), and what one execution enqueues. GEMMs (MatMul, Gemm,
 * Conv after im2col) go to CLBlast; everything else to the program of ocl_source.c.
 */
#include "ocl_internal.h"

#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Operation codes of the elementwise program (ocl_ew_source's UOP and BOP). */
enum {
    U_RELU = 1, U_LEAKY, U_SIGMOID, U_TANH, U_ERF, U_GELU, U_GELU_TANH, U_SQRT, U_EXP, U_LOG,
    U_NEG, U_ABS, U_CLIP, U_RECIP, U_FLOOR, U_CEIL, U_ROUND, U_HSIG, U_HSWISH, U_SIN, U_COS,
    U_SOFTPLUS, U_ELU, U_SELU, U_SIGN, U_IDENT, U_NOT
};
enum {
    B_ADD = 1, B_SUB, B_MUL, B_DIV, B_POW, B_MIN, B_MAX, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND,
    B_OR, B_XOR, B_PRELU
};

#define ARG(ker, i, v)                                                                             \
    do {                                                                                           \
        if (ocl_arg(r, ker, (cl_uint)(i), sizeof(v), &(v)))                                        \
            return LOOM_ERR_INTERNAL;                                                              \
    } while (0)

static loom_status kfail(char *err, size_t len, loom_status st, const loom_node_desc *node,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static loom_status kfail(char *err, size_t len, loom_status st, const loom_node_desc *node,
                         const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, len, "opencl: node '%s' (%s): %s", node->name ? node->name : "", node->op_name,
             msg);
    return st;
}

static int64_t numel(const loom_tensor_desc *t)
{
    return loom_tensor_desc_numel(t);
}

static size_t esize(loom_dtype dt)
{
    return loom_dtype_size(dt);
}

/* Element offset of B for elements of size ES. */
static cl_ulong eoff(ocl_buf b, size_t es)
{
    return (cl_ulong)(b.off / es);
}

/* Upload N int64 values as K's shape table (META, or META2 when SECOND). */
static loom_status put_meta(ocl_state *s, ocl_device *d, ocl_kernel *k, const int64_t *v,
                            size_t n, int second, char *err, size_t len)
{
    cl_mem m = ocl_buffer_from_host(s, d, v, (n ? n : 1) * sizeof(int64_t), err, len);
    if (!m)
        return LOOM_ERR_OUT_OF_MEMORY;
    if (second)
        k->meta2 = m;
    else
        k->meta = m;
    return LOOM_OK;
}

/* Strides (elements) of IN read as OUT's shape under numpy broadcasting (right-aligned). */
static void bcast_strides(const loom_tensor_desc *in, const loom_tensor_desc *out, int64_t *st)
{
    int64_t s = 1;
    for (int d = (int)out->rank - 1, j = (int)in->rank - 1; d >= 0; d--, j--) {
        if (j < 0) {
            st[d] = 0;
            continue;
        }
        st[d] = in->dims[j] == 1 && out->dims[d] != 1 ? 0 : s;
        s *= in->dims[j];
    }
}

static void contiguous_strides(const loom_tensor_desc *t, int64_t *st)
{
    int64_t s = 1;
    for (int d = (int)t->rank - 1; d >= 0; d--) {
        st[d] = s;
        s *= t->dims[d];
    }
}

static int same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d])
            return 0;
    return 1;
}

static int is_float(loom_dtype dt)
{
    return dt == LOOM_DTYPE_F32 || dt == LOOM_DTYPE_F16;
}

/* Whether input I of NODE is present. */
static int has_in(const loom_node_desc *node, uint32_t i)
{
    return i < node->n_inputs && node->inputs[i].dtype != LOOM_DTYPE_UNDEFINED;
}

static int is_const(const loom_node_desc *node, uint32_t i)
{
    return node->input_constants && i < node->n_inputs && node->input_constants[i];
}

/* Only the first output is produced: the others must be absent. */
static int one_output(const loom_node_desc *node)
{
    for (uint32_t i = 1; i < node->n_outputs; i++)
        if (node->outputs[i].dtype != LOOM_DTYPE_UNDEFINED)
            return 0;
    return node->n_outputs >= 1;
}

/* ---- unary elementwise ---------------------------------------------------------------------- */

static int unary_code(const loom_node_desc *node)
{
    switch (node->op) {
    case LOOM_OP_RELU: return U_RELU;
    case LOOM_OP_LEAKY_RELU: return U_LEAKY;
    case LOOM_OP_SIGMOID: return U_SIGMOID;
    case LOOM_OP_TANH: return U_TANH;
    case LOOM_OP_ERF: return U_ERF;
    case LOOM_OP_GELU: {
        const loom_attr *a = loom_node_attr(node, "approximate");
        return a && a->kind == LOOM_ATTR_STRING && a->s && !strcmp(a->s, "tanh") ? U_GELU_TANH
                                                                                  : U_GELU;
    }
    case LOOM_OP_SQRT: return U_SQRT;
    case LOOM_OP_EXP: return U_EXP;
    case LOOM_OP_LOG: return U_LOG;
    case LOOM_OP_NEG: return U_NEG;
    case LOOM_OP_ABS: return U_ABS;
    case LOOM_OP_CLIP: return U_CLIP;
    case LOOM_OP_RECIPROCAL: return U_RECIP;
    case LOOM_OP_FLOOR: return U_FLOOR;
    case LOOM_OP_CEIL: return U_CEIL;
    case LOOM_OP_ROUND: return U_ROUND;
    case LOOM_OP_HARD_SIGMOID: return U_HSIG;
    case LOOM_OP_HARD_SWISH: return U_HSWISH;
    case LOOM_OP_SIN: return U_SIN;
    case LOOM_OP_COS: return U_COS;
    case LOOM_OP_SOFTPLUS: return U_SOFTPLUS;
    case LOOM_OP_ELU: return U_ELU;
    case LOOM_OP_SELU: return U_SELU;
    case LOOM_OP_SIGN: return U_SIGN;
    case LOOM_OP_NOT: return U_NOT;
    default: return 0;
    }
}

static int unary_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype dt = node->inputs[0].dtype;
    int code = unary_code(node);
    if (code == U_NOT)
        return dt == LOOM_DTYPE_BOOL ? 1 : ocl_reason(reason, len, "Not: bool only");
    if (code == U_NEG || code == U_ABS || code == U_SIGN) {
        if (dt == LOOM_DTYPE_I32 || dt == LOOM_DTYPE_I64 || is_float(dt))
            return 1;
        return ocl_reason(reason, len, "%s: f32, f16, i32 and i64 only", node->op_name);
    }
    if (!is_float(dt))
        return ocl_reason(reason, len, "%s: f32 and f16 only", node->op_name);
    if (node->op == LOOM_OP_CLIP && ((has_in(node, 1) && !is_const(node, 1)) ||
                                     (has_in(node, 2) && !is_const(node, 2))))
        return ocl_reason(reason, len, "Clip: min and max must be constants");
    return 1;
}

static loom_status ew_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                              ocl_kernel *k, uint32_t nin, char *err, size_t len);

static loom_status unary_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                 ocl_kernel *k, char *err, size_t len)
{
    k->iop = unary_code(node);
    switch (node->op) {
    case LOOM_OP_LEAKY_RELU: k->fa = loom_node_attr_float(node, "alpha", 0.01f); break;
    case LOOM_OP_CLIP:
        k->fa = loom_node_attr_float(node, "min", -INFINITY);
        k->fb = loom_node_attr_float(node, "max", INFINITY);
        break;
    case LOOM_OP_HARD_SIGMOID:
        k->fa = loom_node_attr_float(node, "alpha", 0.2f);
        k->fb = loom_node_attr_float(node, "beta", 0.5f);
        break;
    case LOOM_OP_ELU: k->fa = loom_node_attr_float(node, "alpha", 1.0f); break;
    case LOOM_OP_SELU:
        k->fa = loom_node_attr_float(node, "alpha", 1.67326319217681884765625f);
        k->fb = loom_node_attr_float(node, "gamma", 1.05070102214813232421875f);
        break;
    default: break;
    }
    return ew_prepare(s, d, node, k, 1, err, len);
}

/* ---- binary elementwise (arithmetic, comparisons, logic) ------------------------------------ */

static int binary_code(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_ADD: return B_ADD;
    case LOOM_OP_SUB: return B_SUB;
    case LOOM_OP_MUL: return B_MUL;
    case LOOM_OP_DIV: return B_DIV;
    case LOOM_OP_POW: return B_POW;
    case LOOM_OP_MIN: return B_MIN;
    case LOOM_OP_MAX: return B_MAX;
    case LOOM_OP_EQUAL: return B_EQ;
    case LOOM_OP_LESS: return B_LT;
    case LOOM_OP_GREATER: return B_GT;
    case LOOM_OP_LESS_OR_EQUAL: return B_LE;
    case LOOM_OP_GREATER_OR_EQUAL: return B_GE;
    case LOOM_OP_AND: return B_AND;
    case LOOM_OP_OR: return B_OR;
    case LOOM_OP_XOR: return B_XOR;
    case LOOM_OP_PRELU: return B_PRELU;
    default: return 0;
    }
}

static int binary_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 2 || !has_in(node, 0) || !has_in(node, 1))
        return ocl_reason(reason, len, "%s: exactly two inputs supported", node->op_name);
    loom_dtype a = node->inputs[0].dtype, b = node->inputs[1].dtype;
    if (a != b)
        return ocl_reason(reason, len, "%s: inputs of different dtypes", node->op_name);
    if (node->outputs[0].rank > LOOM_MAX_RANK)
        return ocl_reason(reason, len, "%s: rank too large", node->op_name);
    int code = binary_code(node->op);
    if (code == B_AND || code == B_OR || code == B_XOR)
        return a == LOOM_DTYPE_BOOL ? 1 : ocl_reason(reason, len, "%s: bool only", node->op_name);
    if (code == B_POW || code == B_PRELU)
        return is_float(a) ? 1 : ocl_reason(reason, len, "%s: f32 and f16 only", node->op_name);
    if (code == B_EQ && a == LOOM_DTYPE_BOOL)
        return 1;
    if (is_float(a) || a == LOOM_DTYPE_I32 || a == LOOM_DTYPE_I64)
        return 1;
    return ocl_reason(reason, len, "%s: f32, f16, i32 and i64 only", node->op_name);
}

/* The broadcast table of the first N inputs read as output 0: [rank, dims, strides...]. */
static loom_status bcast_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                 ocl_kernel *k, uint32_t n, char *err, size_t len)
{
    const loom_tensor_desc *out = &node->outputs[0];
    int64_t meta[1 + 4 * LOOM_MAX_RANK];
    uint32_t rank = out->rank;
    meta[0] = rank;
    for (uint32_t dd = 0; dd < rank; dd++)
        meta[1 + dd] = out->dims[dd];
    k->flat = 1;
    for (uint32_t j = 0; j < n; j++) {
        bcast_strides(&node->inputs[j], out, &meta[1 + rank * (1 + j)]);
        if (numel(&node->inputs[j]) != numel(out) || !same_shape(&node->inputs[j], out))
            k->flat = 0;
    }
    return put_meta(s, d, k, meta, 1 + rank * (1 + n), 0, err, len);
}

static loom_status binary_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                  ocl_kernel *k, char *err, size_t len)
{
    k->iop = binary_code(node->op);
    return ew_prepare(s, d, node, k, 2, err, len);
}

/* ---- the specialised elementwise kernels (unary and binary) ----------------------------------- */

/* Broadcast classes of an input (ocl_ew_source's CA and CB). */
enum { EW_SAME, EW_SCALAR, EW_DIVMOD, EW_TABLE };

/* The work-group size for KER on D: at most CAP, the kernel's and the device's limits. */
static size_t kernel_local(const ocl_device *d, cl_kernel ker, size_t cap)
{
    size_t wg = 0;
    if (clGetKernelWorkGroupInfo(ker, d->id, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL) !=
            CL_SUCCESS || !wg)
        wg = d->max_wg;
    if (wg > d->max_wg)
        wg = d->max_wg;
    return wg < cap ? wg : cap;
}

static int cpu_like(const ocl_device *d);

/* The largest power of two <= the limits of KER on D (and CAP) that is not above WANT's next
 * power of two: a row of WANT elements gets no more work-items than it can use. */
static size_t row_local(const ocl_device *d, cl_kernel ker, int64_t want, size_t cap)
{
    /* On a CPU device a group runs its work-items one after another on one core: a single
     * work-item per group streams through the row with float4 accumulators, and the tree has
     * nothing to do (measured with bench_opencl on PoCL: 1 work-item beat 8, 16 and 256). */
    if (cpu_like(d))
        cap = 1;
    size_t lim = kernel_local(d, ker, cap), local = 1;
    while (local * 2 <= lim && (int64_t)local < want)
        local *= 2;
    return local;
}

/* Whether D is a CPU device (PoCL and the like): there every work-group costs a scheduling
 * step of microseconds, so kernels get a few large groups instead of one per row. */
static int cpu_like(const ocl_device *d)
{
    return d->cpu_layout;
}

/* Work-groups for a kernel whose groups loop over ROWS rows: a row per group on a GPU (up to 64
 * per compute unit), four groups per compute unit on a CPU device. At least 1. */
static size_t row_groups(const ocl_device *d, int64_t rows)
{
    int64_t cu = d->info.compute_units ? (int64_t)d->info.compute_units : 1;
    int64_t cap = cpu_like(d) ? 4 * cu : 64 * cu;
    int64_t g = rows < cap ? rows : cap;
    return g > 0 ? (size_t)g : 1;
}

/* The class of input IN read as OUT; for EW_DIVMOD, *DIV and *MOD give its index as
 * (i / div) % mod: IN's elements are one run of OUT's dims, broadcast over the others. */
static int ew_class(const loom_tensor_desc *in, const loom_tensor_desc *out, int64_t *div,
                    int64_t *mod)
{
    *div = 1;
    *mod = 1;
    int64_t ni = numel(in);
    if (ni == numel(out))
        return EW_SAME;
    if (ni == 1)
        return EW_SCALAR;
    int64_t st[LOOM_MAX_RANK];
    bcast_strides(in, out, st);
    int first = -1, last = -1;
    for (int dd = 0; dd < (int)out->rank; dd++) {
        if (st[dd] == 0 || out->dims[dd] == 1)
            continue;
        if (first >= 0 && last != dd - 1)
            return EW_TABLE; /* a broadcast dim inside the run */
        if (first < 0)
            first = dd;
        last = dd;
    }
    if (first < 0)
        return EW_TABLE;
    int64_t m = 1, dv = 1;
    for (int dd = first; dd <= last; dd++)
        m *= out->dims[dd];
    for (int dd = last + 1; dd < (int)out->rank; dd++)
        dv *= out->dims[dd];
    if (m != ni)
        return EW_TABLE;
    *div = dv;
    *mod = m;
    return EW_DIVMOD;
}

static const char *ew_type(loom_dtype dt)
{
    switch (dt) {
    case LOOM_DTYPE_F32: return "float";
    case LOOM_DTYPE_F16: return "half";
    case LOOM_DTYPE_I32: return "int";
    case LOOM_DTYPE_I64: return "long";
    default: return "uchar"; /* bool */
    }
}

/* Elementwise work-items: each takes PER elements (the count need not divide). */
static size_t ew_items(uint64_t n, uint64_t per)
{
    return (size_t)((n + per - 1) / per);
}

static loom_status run_elementwise(ocl_run *r, const ocl_kernel *k)
{
    loom_dtype dt = k->in[0].dtype;
    size_t es = esize(dt), eo = esize(k->out[0].dtype);
    int two = k->n_in > 1;
    ocl_buf b = two ? r->in[1] : r->in[0];
    cl_ulong ao = eoff(r->in[0], es), bo = eoff(b, es), yo = eoff(r->out[0], eo);
    cl_ulong n = (cl_ulong)numel(&k->out[0]);
    cl_float pa = k->fa, pb = k->fb;
    cl_long da = k->v[0], ma = k->v[1], db = k->v[2], mb = k->v[3];
    cl_mem meta = k->meta ? k->meta : r->in[0].mem;
    /* Whole float4s only where every operand starts on one (vload4 needs only the element's
     * alignment, but a GPU loads aligned vectors in one transaction). */
    int vec = k->flat && ao % 4 == 0 && bo % 4 == 0 && yo % 4 == 0;
    int which = !k->flat ? OCL_EW_BCAST : vec ? OCL_EW_VEC4 : OCL_EW_FLAT;
    cl_kernel ker = k->ew[which];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, ao);
    ARG(ker, 2, b.mem);
    ARG(ker, 3, bo);
    ARG(ker, 4, r->out[0].mem);
    ARG(ker, 5, yo);
    ARG(ker, 6, n);
    ARG(ker, 7, pa);
    ARG(ker, 8, pb);
    ARG(ker, 9, meta);
    ARG(ker, 10, da);
    ARG(ker, 11, ma);
    ARG(ker, 12, db);
    ARG(ker, 13, mb);
    /* Several elements per work-item. A GPU: a grid-stride loop, four float4s (or four
     * elements) each. A CPU device: a contiguous block each, four groups per compute unit. */
    cl_ulong units = which == OCL_EW_VEC4 ? n / 4 : n, per = 0;
    size_t local = (size_t)k->v[4], items;
    if (cpu_like(r->d)) {
        items = row_groups(r->d, (int64_t)ew_items(units, local)) * local;
        per = (cl_ulong)ew_items(units, items);
    } else {
        items = ew_items(units, 4);
    }
    ARG(ker, 14, per);
    if (items == 0)
        items = 1; /* only a tail of fewer than 4 elements */
    return n ? ocl_launch(r, ker, items, local) : LOOM_OK;
}

/* Pick the variant of the elementwise program for NODE (NIN inputs; K's iop is the op code)
 * and get its kernels built. */
static loom_status ew_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                              ocl_kernel *k, uint32_t nin, char *err, size_t len)
{
    const loom_tensor_desc *out = &node->outputs[0];
    loom_dtype it = node->inputs[0].dtype, ot = out->dtype;
    int cls[2] = {EW_SAME, EW_SAME};
    int64_t dm[4] = {1, 1, 1, 1};
    for (uint32_t j = 0; j < nin; j++)
        cls[j] = ew_class(&node->inputs[j], out, &dm[2 * j], &dm[2 * j + 1]);
    k->flat = cls[0] == EW_SAME && cls[1] == EW_SAME;
    memcpy(k->v, dm, sizeof dm);
    if (cls[0] == EW_TABLE || cls[1] == EW_TABLE) {
        loom_status st = bcast_prepare(s, d, node, k, nin, err, len);
        if (st != LOOM_OK)
            return st;
        k->flat = 0;
    }
    char opts[192];
    snprintf(opts, sizeof opts, "-DT=%s -DOT=%s -DHIN=%d -DHOUT=%d -DISF=%d -DNIN=%u -D%s=%d "
             "-DCA=%d -DCB=%d", ew_type(it), ew_type(ot), it == LOOM_DTYPE_F16,
             ot == LOOM_DTYPE_F16, is_float(it), nin, nin == 1 ? "UOP" : "BOP", k->iop, cls[0],
             cls[1]);
    loom_status st = ocl_variant_kernels(s, d, opts, k->ew, err, len);
    if (st != LOOM_OK)
        return st;
    size_t local = kernel_local(d, k->ew[OCL_EW_FLAT], 64);
    for (int i = 1; i < OCL_EW_COUNT; i++) {
        size_t l = kernel_local(d, k->ew[i], 64);
        local = l < local ? l : local;
    }
    k->v[4] = (int64_t)local;
    k->run = run_elementwise;
    return LOOM_OK;
}

/* ---- Where ---------------------------------------------------------------------------------- */

static int size_index(size_t es)
{
    return es == 1 ? 0 : es == 2 ? 1 : es == 4 ? 2 : es == 8 ? 3 : -1;
}

static int where_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->inputs[0].dtype != LOOM_DTYPE_BOOL)
        return ocl_reason(reason, len, "Where: condition must be bool");
    if (node->inputs[1].dtype != node->inputs[2].dtype ||
        size_index(esize(node->inputs[1].dtype)) < 0)
        return ocl_reason(reason, len, "Where: X and Y of one supported dtype");
    return 1;
}

static loom_status run_where(ocl_run *r, const ocl_kernel *k)
{
    size_t es = esize(k->out[0].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_WHERE_1 + size_index(es)));
    cl_ulong co = eoff(r->in[0], 1), xo = eoff(r->in[1], es), zo = eoff(r->in[2], es);
    cl_ulong yo = eoff(r->out[0], es), n = (cl_ulong)numel(&k->out[0]);
    cl_int flat = k->flat;
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, co);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, xo);
    ARG(ker, 4, r->in[2].mem);
    ARG(ker, 5, zo);
    ARG(ker, 6, r->out[0].mem);
    ARG(ker, 7, yo);
    ARG(ker, 8, n);
    ARG(ker, 9, flat);
    ARG(ker, 10, k->meta);
    return ocl_launch(r, ker, (size_t)n, 0);
}

/* ---- copies: Identity/Reshape family, Transpose, Expand, Slice, Concat, Split --------------- */

/* A strided copy: RANK dims, source strides and base, destination strides and base (elements);
 * stored in K's META2-free table META at entry offset MO. */
typedef struct copy_plan {
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK], src[LOOM_MAX_RANK], dst[LOOM_MAX_RANK];
    int64_t src_base, dst_base, n;
    uint32_t in, out; /* which input and output */
} copy_plan;

typedef struct copy_params {
    uint32_t n_plans;
    int64_t mo[]; /* per plan: offset of its table in META; then the plans follow */
} copy_params;

static int copy_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (size_index(esize(node->inputs[0].dtype)) < 0)
        return ocl_reason(reason, len, "%s: dtype of unsupported size", node->op_name);
    if (node->op == LOOM_OP_SPLIT || node->op == LOOM_OP_CONCAT)
        for (uint32_t i = 0; i < node->n_outputs; i++)
            if (node->outputs[i].dtype == LOOM_DTYPE_UNDEFINED)
                return ocl_reason(reason, len, "%s: absent outputs", node->op_name);
    return 1;
}

static loom_status run_bytes_copy(ocl_run *r, const ocl_kernel *k)
{
    size_t bytes = (size_t)numel(&k->out[0]) * esize(k->out[0].dtype);
    return ocl_copy(r, r->in[0], r->out[0], bytes);
}

static loom_status run_copies(ocl_run *r, const ocl_kernel *k)
{
    const copy_plan *plans = k->params;
    size_t es = esize(k->out[0].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_COPY_1 + size_index(es)));
    cl_ulong mo = 0;
    for (int64_t p = 0; p < k->v[0]; p++) {
        const copy_plan *c = &plans[p];
        cl_long xo = (cl_long)eoff(r->in[c->in], es) + c->src_base;
        cl_long yo = (cl_long)eoff(r->out[c->out], es) + c->dst_base;
        cl_ulong n = (cl_ulong)c->n;
        ARG(ker, 0, r->in[c->in].mem);
        ARG(ker, 1, xo);
        ARG(ker, 2, r->out[c->out].mem);
        ARG(ker, 3, yo);
        ARG(ker, 4, n);
        ARG(ker, 5, k->meta);
        ARG(ker, 6, mo);
        loom_status st = ocl_launch(r, ker, (size_t)n, 0);
        if (st != LOOM_OK)
            return st;
        mo += 1 + 3 * (cl_ulong)c->rank;
    }
    return LOOM_OK;
}

static loom_status copies_finish(ocl_state *s, ocl_device *d, ocl_kernel *k, copy_plan *plans,
                                 size_t n, char *err, size_t len)
{
    size_t total = 0;
    for (size_t p = 0; p < n; p++)
        total += 1 + 3 * (size_t)plans[p].rank;
    int64_t *meta = calloc(total + 1, sizeof *meta);
    if (!meta) {
        free(plans);
        snprintf(err, len, "out of memory");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    size_t at = 0;
    for (size_t p = 0; p < n; p++) {
        copy_plan *c = &plans[p];
        c->n = 1;
        meta[at++] = c->rank;
        for (uint32_t dd = 0; dd < c->rank; dd++) {
            meta[at + dd] = c->dims[dd];
            meta[at + c->rank + dd] = c->src[dd];
            meta[at + 2 * c->rank + dd] = c->dst[dd];
            c->n *= c->dims[dd];
        }
        at += 3 * (size_t)c->rank;
    }
    loom_status st = put_meta(s, d, k, meta, total, 0, err, len);
    free(meta);
    if (st != LOOM_OK) {
        free(plans);
        return st;
    }
    k->params = plans;
    k->v[0] = (int64_t)n;
    k->run = run_copies;
    return LOOM_OK;
}

static loom_status copy_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    switch (node->op) {
    case LOOM_OP_IDENTITY: case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN: case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE:
        k->run = run_bytes_copy;
        return LOOM_OK;
    default: break;
    }
    size_t n_plans = node->op == LOOM_OP_CONCAT ? node->n_inputs
                     : node->op == LOOM_OP_SPLIT ? node->n_outputs : 1;
    copy_plan *plans = calloc(n_plans ? n_plans : 1, sizeof *plans);
    if (!plans)
        return kfail(err, len, LOOM_ERR_OUT_OF_MEMORY, node, "out of memory");
    int64_t xs[LOOM_MAX_RANK], ys[LOOM_MAX_RANK];
    contiguous_strides(x, xs);
    contiguous_strides(y, ys);
    if (node->op == LOOM_OP_TRANSPOSE) {
        const loom_attr *perm = loom_node_attr(node, "perm");
        copy_plan *c = &plans[0];
        c->rank = y->rank;
        for (uint32_t dd = 0; dd < y->rank; dd++) {
            c->dims[dd] = y->dims[dd];
            c->src[dd] = xs[perm->ints[dd]];
            c->dst[dd] = ys[dd];
        }
    } else if (node->op == LOOM_OP_EXPAND) {
        copy_plan *c = &plans[0];
        c->rank = y->rank;
        bcast_strides(x, y, c->src);
        for (uint32_t dd = 0; dd < y->rank; dd++) {
            c->dims[dd] = y->dims[dd];
            c->dst[dd] = ys[dd];
        }
    } else if (node->op == LOOM_OP_SLICE) {
        const loom_attr *starts = loom_node_attr(node, "starts"), *steps = loom_node_attr(node, "steps");
        copy_plan *c = &plans[0];
        c->rank = y->rank;
        for (uint32_t dd = 0; dd < y->rank; dd++) {
            c->dims[dd] = y->dims[dd];
            c->src[dd] = steps->ints[dd] * xs[dd];
            c->dst[dd] = ys[dd];
            c->src_base += starts->ints[dd] * xs[dd];
        }
    } else if (node->op == LOOM_OP_CONCAT) {
        int64_t axis = loom_node_attr_int(node, "axis", 0), at = 0;
        for (uint32_t i = 0; i < node->n_inputs; i++) {
            copy_plan *c = &plans[i];
            const loom_tensor_desc *xi = &node->inputs[i];
            c->rank = xi->rank;
            c->in = i;
            contiguous_strides(xi, c->src);
            for (uint32_t dd = 0; dd < xi->rank; dd++) {
                c->dims[dd] = xi->dims[dd];
                c->dst[dd] = ys[dd];
            }
            c->dst_base = at * ys[axis];
            at += xi->dims[axis];
        }
    } else { /* Split */
        int64_t axis = loom_node_attr_int(node, "axis", 0), at = 0;
        for (uint32_t o = 0; o < node->n_outputs; o++) {
            copy_plan *c = &plans[o];
            const loom_tensor_desc *yo = &node->outputs[o];
            c->rank = yo->rank;
            c->out = o;
            contiguous_strides(yo, c->dst);
            for (uint32_t dd = 0; dd < yo->rank; dd++) {
                c->dims[dd] = yo->dims[dd];
                c->src[dd] = xs[dd];
            }
            c->src_base = at * xs[axis];
            at += yo->dims[axis];
        }
    }
    return copies_finish(s, d, k, plans, n_plans, err, len);
}

/* ---- Gather --------------------------------------------------------------------------------- */

static int gather_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (size_index(esize(node->inputs[0].dtype)) < 0)
        return ocl_reason(reason, len, "Gather: dtype of unsupported size");
    loom_dtype it = node->inputs[1].dtype;
    if (it != LOOM_DTYPE_I32 && it != LOOM_DTYPE_I64)
        return ocl_reason(reason, len, "Gather: indices must be i32 or i64");
    return 1;
}

static loom_status run_gather(ocl_run *r, const ocl_kernel *k)
{
    size_t es = esize(k->out[0].dtype), is = esize(k->in[1].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_GATHER_1 + size_index(es)));
    cl_ulong xo = eoff(r->in[0], es), io = eoff(r->in[1], is), yo = eoff(r->out[0], es);
    cl_ulong n = (cl_ulong)numel(&k->out[0]);
    cl_int ix64 = is == 8;
    cl_long axis_len = k->v[0], nidx = k->v[1], inner = k->v[2];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, io);
    ARG(ker, 4, ix64);
    ARG(ker, 5, r->out[0].mem);
    ARG(ker, 6, yo);
    ARG(ker, 7, n);
    ARG(ker, 8, axis_len);
    ARG(ker, 9, nidx);
    ARG(ker, 10, inner);
    return ocl_launch(r, ker, (size_t)n, 0);
}

static loom_status gather_prepare(const loom_node_desc *node, ocl_kernel *k, char *err,
                                  size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    int64_t axis = loom_node_attr_int(node, "axis", 0), inner = 1;
    for (uint32_t dd = (uint32_t)axis + 1; dd < x->rank; dd++)
        inner *= x->dims[dd];
    k->v[0] = x->dims[axis];
    k->v[1] = numel(&node->inputs[1]);
    k->v[2] = inner ? inner : 1;
    /* Constant indices are checked once here; computed ones that fall outside give zeros. */
    if (is_const(node, 1)) {
        for (int64_t j = 0; j < k->v[1]; j++) {
            int64_t ix = node->inputs[1].dtype == LOOM_DTYPE_I64
                             ? ((const int64_t *)node->input_constants[1])[j]
                             : ((const int32_t *)node->input_constants[1])[j];
            if (ix < -k->v[0] || ix >= k->v[0])
                return kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node,
                             "index %lld is out of range for axis %lld of size %lld",
                             (long long)ix, (long long)axis, (long long)k->v[0]);
        }
    }
    k->run = run_gather;
    return LOOM_OK;
}

/* ---- Cast ----------------------------------------------------------------------------------- */

static int cast_dtype_ok(loom_dtype dt)
{
    switch (dt) {
    case LOOM_DTYPE_F32: case LOOM_DTYPE_U8: case LOOM_DTYPE_I8: case LOOM_DTYPE_I32:
    case LOOM_DTYPE_I64: case LOOM_DTYPE_BOOL: case LOOM_DTYPE_F16: case LOOM_DTYPE_BF16:
        return 1;
    default:
        return 0;
    }
}

static int cast_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!cast_dtype_ok(node->inputs[0].dtype) || !cast_dtype_ok(node->outputs[0].dtype))
        return ocl_reason(reason, len, "Cast: dtype %d -> %d not supported",
                          node->inputs[0].dtype, node->outputs[0].dtype);
    return 1;
}

static loom_status run_cast(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_CAST);
    loom_dtype st = k->in[0].dtype, dt = k->out[0].dtype;
    if (st == dt)
        return ocl_copy(r, r->in[0], r->out[0], (size_t)numel(&k->out[0]) * esize(dt));
    cl_ulong xo = eoff(r->in[0], esize(st)), yo = eoff(r->out[0], esize(dt));
    cl_ulong n = (cl_ulong)numel(&k->out[0]);
    cl_int sc = (cl_int)st, dc = (cl_int)dt;
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, sc);
    ARG(ker, 3, r->out[0].mem);
    ARG(ker, 4, yo);
    ARG(ker, 5, dc);
    ARG(ker, 6, n);
    return ocl_launch(r, ker, (size_t)n, 0);
}

/* ---- Softmax, LogSoftmax, LayerNormalization, BatchNormalization ----------------------------- */

static void split_axis(const loom_tensor_desc *t, int64_t axis, int64_t *outer, int64_t *mid,
                       int64_t *inner)
{
    *outer = *mid = *inner = 1;
    for (uint32_t dd = 0; dd < t->rank; dd++) {
        if ((int64_t)dd < axis)
            *outer *= t->dims[dd];
        else if ((int64_t)dd == axis)
            *mid = t->dims[dd];
        else
            *inner *= t->dims[dd];
    }
}

static loom_status run_softmax(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_SOFTMAX);
    cl_ulong xo = eoff(r->in[0], 4), yo = eoff(r->out[0], 4);
    cl_long outer = k->v[0], n = k->v[1], inner = k->v[2];
    cl_int logsm = k->iop;
    size_t local = (size_t)k->v[3];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, inner);
    ARG(ker, 6, logsm);
    cl_long rows = outer * inner;
    ARG(ker, 7, rows);
    if (ocl_arg(r, ker, 8, 2 * local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    /* A work-group per row (fewer on CPU devices); an empty row (n = 0) writes nothing. */
    return n ? ocl_launch(r, ker, row_groups(r->d, rows) * local, local) : LOOM_OK;
}

static loom_status run_layernorm(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_LAYERNORM);
    int has_b = r->in[2].mem != NULL && k->n_in > 2;
    cl_ulong xo = eoff(r->in[0], 4), so = eoff(r->in[1], 4), bo = has_b ? eoff(r->in[2], 4) : 0;
    cl_ulong yo = eoff(r->out[0], 4);
    cl_int hb = has_b;
    cl_long n = k->v[1];
    cl_float eps = k->fa;
    cl_mem bmem = has_b ? r->in[2].mem : r->in[1].mem;
    size_t local = (size_t)k->v[2];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, so);
    ARG(ker, 4, bmem);
    ARG(ker, 5, bo);
    ARG(ker, 6, hb);
    ARG(ker, 7, r->out[0].mem);
    ARG(ker, 8, yo);
    ARG(ker, 9, n);
    ARG(ker, 10, eps);
    cl_long rows = k->v[0];
    ARG(ker, 11, rows);
    if (ocl_arg(r, ker, 12, local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    return rows ? ocl_launch(r, ker, row_groups(r->d, rows) * local, local) : LOOM_OK;
}

static loom_status run_batchnorm(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_BATCHNORM);
    cl_ulong o[5];
    for (int i = 0; i < 5; i++)
        o[i] = eoff(r->in[i], 4);
    cl_ulong yo = eoff(r->out[0], 4), n = (cl_ulong)numel(&k->out[0]);
    cl_long C = k->v[0], inner = k->v[1];
    cl_float eps = k->fa;
    for (int i = 0; i < 5; i++) {
        ARG(ker, 2 * i, r->in[i].mem);
        ARG(ker, 2 * i + 1, o[i]);
    }
    ARG(ker, 10, r->out[0].mem);
    ARG(ker, 11, yo);
    ARG(ker, 12, n);
    ARG(ker, 13, C);
    ARG(ker, 14, inner);
    ARG(ker, 15, eps);
    return ocl_launch(r, ker, (size_t)n, 0);
}

/* ---- reductions and pools -------------------------------------------------------------------- */

static loom_status run_reduce(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_REDUCE);
    cl_ulong xo = eoff(r->in[0], 4), yo = eoff(r->out[0], 4), n = (cl_ulong)numel(&k->out[0]);
    cl_int op = k->iop;
    cl_long count = k->v[0];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, k->meta);
    ARG(ker, 6, op);
    ARG(ker, 7, count);
    return ocl_launch(r, ker, (size_t)n, 0);
}

/* One launch of reduce_rows_f32: GROUPS rows (outputs times parts) reduced from SRC into DST by
 * work-groups of LOCAL. */
static loom_status reduce_rows_launch(ocl_run *r, const ocl_kernel *k, ocl_buf src, ocl_buf dst,
                                      cl_long count, cl_int contig, cl_long parts, cl_float div,
                                      size_t groups, size_t local)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_REDUCE_ROWS);
    cl_ulong xo = eoff(src, 4), yo = eoff(dst, 4);
    cl_int op = k->iop;
    ARG(ker, 0, src.mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, dst.mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, k->meta);
    ARG(ker, 5, op);
    ARG(ker, 6, count);
    ARG(ker, 7, contig);
    ARG(ker, 8, parts);
    ARG(ker, 9, div);
    cl_long total = (cl_long)groups;
    ARG(ker, 10, total);
    if (ocl_arg(r, ker, 11, local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    return groups ? ocl_launch(r, ker, row_groups(r->d, total) * local, local) : LOOM_OK;
}

/* A work-group per output (v[1] = local size, v[2] = contiguous rows); with v[3] = PARTS > 1,
 * PARTS groups per output write partial results to scratch and a second launch (v[4] = its
 * local size) combines them. */
static loom_status run_reduce_rows(ocl_run *r, const ocl_kernel *k)
{
    size_t n_out = (size_t)numel(&k->out[0]);
    cl_long count = k->v[0], parts = k->v[3];
    cl_float div = k->iop == 1 ? (float)count : 1.0f;
    if (parts <= 1)
        return reduce_rows_launch(r, k, r->in[0], r->out[0], count, (cl_int)k->v[2], 1, div,
                                  n_out, (size_t)k->v[1]);
    loom_status st = reduce_rows_launch(r, k, r->in[0], r->scratch, count, (cl_int)k->v[2], parts,
                                        1.0f, n_out * (size_t)parts, (size_t)k->v[1]);
    if (st != LOOM_OK)
        return st;
    return reduce_rows_launch(r, k, r->scratch, r->out[0], parts, 1, 1, div, n_out,
                              (size_t)k->v[4]);
}

/* Reduce X over the axes in MASK (bit per axis). Few elements per output and many outputs: a
 * work-item per output; otherwise a work-group per output (split in parts when there are too
 * few outputs to fill the device). */
static loom_status reduce_prepare_mask(ocl_state *s, ocl_device *d, const loom_tensor_desc *x,
                                       uint32_t mask, ocl_kernel *k, char *err, size_t len)
{
    int64_t xs[LOOM_MAX_RANK], meta[2 + 4 * LOOM_MAX_RANK];
    contiguous_strides(x, xs);
    int nk = 0, nr = 0, contig = 1, seen_reduced = 0;
    int64_t kd[LOOM_MAX_RANK], ks[LOOM_MAX_RANK], rd[LOOM_MAX_RANK], rs[LOOM_MAX_RANK];
    int64_t count = 1, n_out = 1;
    for (uint32_t dd = 0; dd < x->rank; dd++) {
        if (mask & (1u << dd)) {
            rd[nr] = x->dims[dd];
            rs[nr++] = xs[dd];
            count *= x->dims[dd];
            seen_reduced |= x->dims[dd] > 1;
        } else {
            kd[nk] = x->dims[dd];
            ks[nk++] = xs[dd];
            n_out *= x->dims[dd];
            /* A kept axis after a reduced one: an output's elements are not one run. */
            if (seen_reduced && x->dims[dd] > 1)
                contig = 0;
        }
    }
    size_t at = 0;
    meta[at++] = nk;
    for (int i = 0; i < nk; i++)
        meta[at + (size_t)i] = kd[i], meta[at + (size_t)nk + (size_t)i] = ks[i];
    at += 2 * (size_t)nk;
    meta[at++] = nr;
    for (int i = 0; i < nr; i++)
        meta[at + (size_t)i] = rd[i], meta[at + (size_t)nr + (size_t)i] = rs[i];
    at += 2 * (size_t)nr;
    k->v[0] = count;
    if (count < 32 && n_out >= 64) {
        k->run = run_reduce;
    } else {
        cl_kernel ker = d->kernels[OCL_K_REDUCE_ROWS];
        size_t local = row_local(d, ker, count, 256);
        /* Enough groups for every compute unit several times over. */
        int64_t target = 4 * (int64_t)(d->info.compute_units ? d->info.compute_units : 1);
        int64_t parts = 1;
        if (n_out < target) {
            parts = (target + n_out - 1) / n_out;
            int64_t most = count / ((int64_t)local * 16); /* each work-item 16 elements or more */
            if (parts > most)
                parts = most;
            if (parts < 1)
                parts = 1;
        }
        k->v[1] = (int64_t)local;
        k->v[2] = contig;
        k->v[3] = parts;
        k->v[4] = (int64_t)row_local(d, ker, parts, 256);
        k->scratch_bytes = parts > 1 ? (size_t)(n_out * parts) * sizeof(float) : 0;
        k->run = run_reduce_rows;
    }
    return put_meta(s, d, k, meta, at, 0, err, len);
}

static loom_status run_pool(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_POOL);
    cl_ulong xo = eoff(r->in[0], 4), yo = eoff(r->out[0], 4), n = (cl_ulong)numel(&k->out[0]);
    cl_int is_max = k->op == LOOM_OP_MAX_POOL, incl = k->iop;
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, k->meta);
    ARG(ker, 6, is_max);
    ARG(ker, 7, incl);
    return ocl_launch(r, ker, (size_t)n, 0);
}

static int window_supports(const loom_node_desc *node, char *reason, size_t len, int conv)
{
    uint32_t rank = node->inputs[0].rank;
    if (node->inputs[0].dtype != LOOM_DTYPE_F32)
        return ocl_reason(reason, len, "%s: f32 only", node->op_name);
    if (!one_output(node))
        return ocl_reason(reason, len, "%s: the Indices output is not supported", node->op_name);
    if (conv ? (rank < 3 || rank > 4) : (rank < 3 || rank > 5))
        return ocl_reason(reason, len, "%s: %s spatial dims supported (input rank %u)",
                          node->op_name, conv ? "1 or 2" : "1 to 3", rank);
    return 1;
}

/* Spatial attribute NAME of NODE padded in front to 3 dims with FILL (pads: begins then ends). */
static void spatial3(const loom_node_desc *node, const char *name, int64_t fill, int64_t *out3,
                     int which_half)
{
    uint32_t ns = node->inputs[0].rank - 2;
    const loom_attr *a = loom_node_attr(node, name);
    for (int i = 0; i < 3; i++)
        out3[i] = fill;
    for (uint32_t i = 0; i < ns; i++) {
        int64_t v = fill;
        if (a && a->kind == LOOM_ATTR_INTS) {
            size_t at = (size_t)which_half * ns + i;
            if (at < a->count)
                v = a->ints[at];
        }
        out3[3 - ns + i] = v;
    }
}

static loom_status pool_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    uint32_t ns = x->rank - 2;
    int64_t m[21];
    for (int i = 0; i < 3; i++)
        m[i] = m[3 + i] = 1;
    for (uint32_t i = 0; i < ns; i++) {
        m[3 - ns + i] = x->dims[2 + i];
        m[6 - ns + i] = y->dims[2 + i];
    }
    spatial3(node, "kernel_shape", 1, &m[6], 0);
    spatial3(node, "strides", 1, &m[9], 0);
    spatial3(node, "dilations", 1, &m[12], 0);
    spatial3(node, "pads", 0, &m[15], 0);
    spatial3(node, "pads", 0, &m[18], 1);
    k->iop = (int)loom_node_attr_int(node, "count_include_pad", 0);
    k->run = run_pool;
    return put_meta(s, d, k, m, 21, 0, err, len);
}

/* ---- GEMMs: MatMul, Gemm, Conv (CLBlast) ------------------------------------------------------ */

typedef struct gemm_batch {
    int64_t a, b, c; /* element offsets of one product */
} gemm_batch;

/* MatMul: Y[b] = A[ba] x B[bb] for each batch b; stride mode when offsets are regular. */
typedef struct matmul_params {
    int64_t m, n, kk, count;
    int strided; /* 1: CLBlastSgemmStridedBatched with sa, sb */
    int64_t sa, sb;
    gemm_batch batches[];
} matmul_params;

static loom_status run_matmul(ocl_run *r, const ocl_kernel *k)
{
    const matmul_params *p = k->params;
    cl_command_queue q = r->d->queue;
    size_t ao = r->in[0].off / 4, bo = r->in[1].off / 4, co = r->out[0].off / 4;
    if (p->strided) {
        loom_status st = ocl_fault_check(r, "CLBlastSgemmStridedBatched");
        if (st != LOOM_OK)
            return st;
        cl_event ev = NULL;
        CLBlastStatusCode bs = CLBlastSgemmStridedBatched(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)p->m,
            (size_t)p->n, (size_t)p->kk, 1.0f, r->in[0].mem, ao, (size_t)p->kk, (size_t)p->sa,
            r->in[1].mem, bo, (size_t)p->n, (size_t)p->sb, 0.0f, r->out[0].mem, co, (size_t)p->n,
            (size_t)(p->m * p->n), (size_t)p->count, &q, &ev);
        return ocl_blas_done(r, bs, ev, "CLBlastSgemmStridedBatched");
    }
    for (int64_t i = 0; i < p->count; i++) {
        const gemm_batch *g = &p->batches[i];
        loom_status st = ocl_fault_check(r, "CLBlastSgemm");
        if (st != LOOM_OK)
            return st;
        cl_event ev = NULL;
        CLBlastStatusCode bs = CLBlastSgemm(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)p->m,
            (size_t)p->n, (size_t)p->kk, 1.0f, r->in[0].mem, ao + (size_t)g->a, (size_t)p->kk,
            r->in[1].mem, bo + (size_t)g->b, (size_t)p->n, 0.0f, r->out[0].mem, co + (size_t)g->c,
            (size_t)p->n, &q, &ev);
        if ((st = ocl_blas_done(r, bs, ev, "CLBlastSgemm")) != LOOM_OK)
            return st;
    }
    return LOOM_OK;
}

static int matmul_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    if (a->dtype != LOOM_DTYPE_F32 || b->dtype != LOOM_DTYPE_F32)
        return ocl_reason(reason, len, "MatMul: f32 only (CLBlast has no integer GEMM)");
    if (numel(a) == 0 || numel(b) == 0 || numel(&node->outputs[0]) == 0)
        return ocl_reason(reason, len, "MatMul: empty operands not supported");
    return 1;
}

static loom_status matmul_prepare(const loom_node_desc *node, ocl_kernel *k, char *err,
                                  size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1], *y = &node->outputs[0];
    int64_t m = a->rank >= 2 ? a->dims[a->rank - 2] : 1, kk = a->dims[a->rank - 1];
    int64_t n = b->rank >= 2 ? b->dims[b->rank - 1] : 1;
    /* Batch dims: A's and B's leading dims broadcast to the output's. */
    uint32_t ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
    uint32_t rbatch = ra > rb ? ra : rb;
    int64_t bd[LOOM_MAX_RANK], da[LOOM_MAX_RANK], db[LOOM_MAX_RANK];
    int64_t count = 1;
    for (uint32_t i = 0; i < rbatch; i++) {
        int64_t x = i + ra >= rbatch ? a->dims[i + ra - rbatch] : 1;
        int64_t z = i + rb >= rbatch ? b->dims[i + rb - rbatch] : 1;
        da[i] = x;
        db[i] = z;
        bd[i] = x > z ? x : z;
        count *= bd[i];
    }
    (void)y;
    /* B without batch dims and A contiguous: one GEMM of (count*M) rows. */
    if (rb == 0) {
        m *= count;
        count = 1;
    }
    matmul_params *p = calloc(1, sizeof *p + (size_t)count * sizeof(gemm_batch));
    if (!p)
        return kfail(err, len, LOOM_ERR_OUT_OF_MEMORY, node, "out of memory");
    p->m = m;
    p->n = n;
    p->kk = kk;
    p->count = count;
    for (int64_t i = 0; i < count && rb; i++) {
        int64_t rem = i, oa = 0, ob = 0, sa = 1, sb = 1;
        for (int dd = (int)rbatch - 1; dd >= 0; dd--) {
            int64_t idx = rem % bd[dd];
            rem /= bd[dd];
            oa += (da[dd] == 1 ? 0 : idx) * sa;
            ob += (db[dd] == 1 ? 0 : idx) * sb;
            sa *= da[dd];
            sb *= db[dd];
        }
        p->batches[i] = (gemm_batch){oa * m * kk, ob * kk * n, i * m * n};
    }
    if (rb == 0)
        p->batches[0] = (gemm_batch){0, 0, 0};
    /* Regular offsets (no broadcast of either side) take the strided-batched call. */
    if (count > 1) {
        int regular = 1;
        for (int64_t i = 0; i < count && regular; i++)
            regular = p->batches[i].a == i * m * kk && p->batches[i].b == i * kk * n;
        if (regular) {
            p->strided = 1;
            p->sa = m * kk;
            p->sb = kk * n;
        }
    }
    k->params = p;
    k->run = run_matmul;
    return LOOM_OK;
}

/* Gemm: optional C copied (broadcast) into Y, then Y = alpha op(A) op(B) + beta Y. */
static loom_status run_gemm(ocl_run *r, const ocl_kernel *k)
{
    int64_t m = k->v[0], n = k->v[1], kk = k->v[2];
    int ta = (int)k->v[3], tb = (int)k->v[4], has_c = (int)k->v[5];
    float beta = has_c ? k->fb : 0.0f;
    loom_status st;
    if (has_c) {
        cl_kernel ker = ocl_get_kernel(r, OCL_K_COPY_4);
        cl_long xo = (cl_long)eoff(r->in[2], 4), yo = (cl_long)eoff(r->out[0], 4);
        cl_ulong cnt = (cl_ulong)(m * n), mo = 0;
        ARG(ker, 0, r->in[2].mem);
        ARG(ker, 1, xo);
        ARG(ker, 2, r->out[0].mem);
        ARG(ker, 3, yo);
        ARG(ker, 4, cnt);
        ARG(ker, 5, k->meta);
        ARG(ker, 6, mo);
        if ((st = ocl_launch(r, ker, (size_t)cnt, 0)) != LOOM_OK)
            return st;
    }
    if ((st = ocl_fault_check(r, "CLBlastSgemm")) != LOOM_OK)
        return st;
    cl_command_queue q = r->d->queue;
    cl_event ev = NULL;
    CLBlastStatusCode bs = CLBlastSgemm(
        CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        tb ? CLBlastTransposeYes : CLBlastTransposeNo, (size_t)m, (size_t)n, (size_t)kk, k->fa,
        r->in[0].mem, r->in[0].off / 4, (size_t)(ta ? m : kk), r->in[1].mem, r->in[1].off / 4,
        (size_t)(tb ? kk : n), beta, r->out[0].mem, r->out[0].off / 4, (size_t)n, &q, &ev);
    return ocl_blas_done(r, bs, ev, "CLBlastSgemm");
}

static int gemm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (has_in(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return ocl_reason(reason, len, "Gemm: f32 only");
    if (numel(&node->outputs[0]) == 0 || numel(&node->inputs[0]) == 0)
        return ocl_reason(reason, len, "Gemm: empty operands not supported");
    return 1;
}

static loom_status gemm_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *y = &node->outputs[0];
    int ta = (int)loom_node_attr_int(node, "transA", 0), tb = (int)loom_node_attr_int(node, "transB", 0);
    k->v[0] = y->dims[0];
    k->v[1] = y->dims[1];
    k->v[2] = ta ? a->dims[0] : a->dims[1];
    k->v[3] = ta;
    k->v[4] = tb;
    k->fa = loom_node_attr_float(node, "alpha", 1.0f);
    k->fb = loom_node_attr_float(node, "beta", 1.0f);
    k->v[5] = has_in(node, 2) && k->fb != 0.0f;
    k->run = run_gemm;
    if (!k->v[5])
        return LOOM_OK;
    int64_t meta[1 + 3 * 2];
    meta[0] = 2;
    meta[1] = y->dims[0];
    meta[2] = y->dims[1];
    bcast_strides(&node->inputs[2], y, &meta[3]);
    meta[5] = y->dims[1];
    meta[6] = 1;
    return put_meta(s, d, k, meta, 7, 0, err, len);
}

/* Conv, 1-D and 2-D: per image and group, im2col into scratch (skipped for 1x1 stride-1
 * unpadded kernels) and one GEMM W[g] x col; bias added per channel afterwards. */
static int conv_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!window_supports(node, reason, len, 1))
        return 0;
    if (node->inputs[1].dtype != LOOM_DTYPE_F32 ||
        (has_in(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32))
        return ocl_reason(reason, len, "Conv: f32 only");
    if (numel(&node->outputs[0]) == 0 || numel(&node->inputs[1]) == 0)
        return ocl_reason(reason, len, "Conv: empty tensors not supported");
    return 1;
}

static loom_status run_conv(ocl_run *r, const ocl_kernel *k)
{
    const int64_t *v = k->v;
    int64_t N = v[0], C = v[1], H = v[2], W = v[3], M = v[4], G = v[5], KH = v[6], KW = v[7];
    int64_t OH = v[8], OW = v[9], direct = v[10];
    int64_t Cg = C / G, Mg = M / G, K = Cg * KH * KW, P = OH * OW;
    cl_command_queue q = r->d->queue;
    size_t xo = r->in[0].off / 4, wo = r->in[1].off / 4, yo = r->out[0].off / 4;
    size_t so = r->scratch.off / 4;
    cl_kernel im2col = ocl_get_kernel(r, OCL_K_IM2COL);
    loom_status st;
    for (int64_t img = 0; img < N; img++) {
        for (int64_t g = 0; g < G; g++) {
            size_t xoff = xo + (size_t)((img * C + g * Cg) * H * W);
            cl_mem bmem = r->in[0].mem;
            size_t boff = xoff;
            if (!direct) {
                cl_ulong xe = xoff, ce = so, cnt = (cl_ulong)(K * P);
                ARG(im2col, 0, r->in[0].mem);
                ARG(im2col, 1, xe);
                ARG(im2col, 2, r->scratch.mem);
                ARG(im2col, 3, ce);
                ARG(im2col, 4, k->meta);
                ARG(im2col, 5, cnt);
                if ((st = ocl_launch(r, im2col, (size_t)cnt, 0)) != LOOM_OK)
                    return st;
                bmem = r->scratch.mem;
                boff = so;
            }
            if ((st = ocl_fault_check(r, "CLBlastSgemm")) != LOOM_OK)
                return st;
            cl_event ev = NULL;
            CLBlastStatusCode bs = CLBlastSgemm(
                CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)Mg,
                (size_t)P, (size_t)K, 1.0f, r->in[1].mem, wo + (size_t)(g * Mg * K), (size_t)K,
                bmem, boff, (size_t)P, 0.0f, r->out[0].mem,
                yo + (size_t)((img * M + g * Mg) * P), (size_t)P, &q, &ev);
            if ((st = ocl_blas_done(r, bs, ev, "CLBlastSgemm")) != LOOM_OK)
                return st;
        }
    }
    if (k->n_in > 2 && r->in[2].mem) {
        cl_kernel ker = ocl_get_kernel(r, OCL_K_BIAS_CHANNEL);
        cl_ulong ye = yo, be = r->in[2].off / 4, n = (cl_ulong)(N * M * P);
        cl_long Ml = M, inner = P;
        ARG(ker, 0, r->out[0].mem);
        ARG(ker, 1, ye);
        ARG(ker, 2, r->in[2].mem);
        ARG(ker, 3, be);
        ARG(ker, 4, n);
        ARG(ker, 5, Ml);
        ARG(ker, 6, inner);
        if ((st = ocl_launch(r, ker, (size_t)n, 0)) != LOOM_OK)
            return st;
    }
    return LOOM_OK;
}

static loom_status conv_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[1], *y = &node->outputs[0];
    int two = x->rank == 4;
    int64_t N = x->dims[0], C = x->dims[1], H = two ? x->dims[2] : 1, W = x->dims[x->rank - 1];
    int64_t M = w->dims[0], G = loom_node_attr_int(node, "group", 1);
    int64_t KH = two ? w->dims[2] : 1, KW = w->dims[w->rank - 1];
    int64_t OH = two ? y->dims[2] : 1, OW = y->dims[y->rank - 1];
    int64_t k3[3], s3[3], d3[3], pb[3], pe[3];
    spatial3(node, "kernel_shape", 1, k3, 0);
    spatial3(node, "strides", 1, s3, 0);
    spatial3(node, "dilations", 1, d3, 0);
    spatial3(node, "pads", 0, pb, 0);
    spatial3(node, "pads", 0, pe, 1);
    if (G < 1 || C % G || M % G)
        return kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node, "group %lld does not divide "
                     "the channels", (long long)G);
    int64_t v[11] = {N, C, H, W, M, G, KH, KW, OH, OW, 0};
    v[10] = KH == 1 && KW == 1 && s3[1] == 1 && s3[2] == 1 && pb[1] == 0 && pb[2] == 0 &&
            pe[1] == 0 && pe[2] == 0 && OH == H && OW == W;
    memcpy(k->v, v, sizeof v);
    int64_t meta[13] = {C / G, H, W, KH, KW, s3[1], s3[2], d3[1], d3[2], pb[1], pb[2], OH, OW};
    k->scratch_bytes = v[10] ? 0 : (size_t)((C / G) * KH * KW * OH * OW) * sizeof(float);
    k->run = run_conv;
    return put_meta(s, d, k, meta, 13, 0, err, len);
}

/* ---- the op table ----------------------------------------------------------------------------- */

int ocl_kernels_supports(const ocl_state *s, const ocl_device *d, const loom_node_desc *node,
                         char *reason, size_t len)
{
    (void)s;
    if (node->n_inputs < 1 || node->n_outputs < 1)
        return ocl_reason(reason, len, "%s: no inputs or outputs", node->op_name);
    if (node->outputs[0].rank > LOOM_MAX_RANK)
        return ocl_reason(reason, len, "%s: rank too large", node->op_name);
    (void)d;
    switch (node->op) {
    case LOOM_OP_RELU: case LOOM_OP_LEAKY_RELU: case LOOM_OP_SIGMOID: case LOOM_OP_TANH:
    case LOOM_OP_ERF: case LOOM_OP_GELU: case LOOM_OP_SQRT: case LOOM_OP_EXP: case LOOM_OP_LOG:
    case LOOM_OP_NEG: case LOOM_OP_ABS: case LOOM_OP_CLIP: case LOOM_OP_RECIPROCAL:
    case LOOM_OP_FLOOR: case LOOM_OP_CEIL: case LOOM_OP_ROUND: case LOOM_OP_HARD_SIGMOID:
    case LOOM_OP_HARD_SWISH: case LOOM_OP_SIN: case LOOM_OP_COS: case LOOM_OP_SOFTPLUS:
    case LOOM_OP_ELU: case LOOM_OP_SELU: case LOOM_OP_SIGN: case LOOM_OP_NOT:
        if (node->op == LOOM_OP_GELU) {
            const loom_attr *a = loom_node_attr(node, "approximate");
            if (a && (a->kind != LOOM_ATTR_STRING || !a->s ||
                      (strcmp(a->s, "none") && strcmp(a->s, "tanh"))))
                return ocl_reason(reason, len, "Gelu: approximate must be none or tanh");
        }
        return unary_supports(node, reason, len);
    case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_DIV: case LOOM_OP_POW:
    case LOOM_OP_MIN: case LOOM_OP_MAX: case LOOM_OP_EQUAL: case LOOM_OP_LESS:
    case LOOM_OP_GREATER: case LOOM_OP_LESS_OR_EQUAL: case LOOM_OP_GREATER_OR_EQUAL:
    case LOOM_OP_AND: case LOOM_OP_OR: case LOOM_OP_XOR: case LOOM_OP_PRELU:
        return binary_supports(node, reason, len);
    case LOOM_OP_WHERE:
        return node->n_inputs == 3 ? where_supports(node, reason, len)
                                   : ocl_reason(reason, len, "Where: three inputs");
    case LOOM_OP_IDENTITY: case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN: case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE: case LOOM_OP_TRANSPOSE: case LOOM_OP_EXPAND: case LOOM_OP_SLICE:
    case LOOM_OP_CONCAT: case LOOM_OP_SPLIT:
        if (node->op == LOOM_OP_TRANSPOSE && !loom_node_attr(node, "perm"))
            return ocl_reason(reason, len, "Transpose: no canonical perm");
        if (node->op == LOOM_OP_SLICE &&
            (!loom_node_attr(node, "starts") || !loom_node_attr(node, "steps")))
            return ocl_reason(reason, len, "Slice: no canonical starts/steps");
        if (node->op == LOOM_OP_CONCAT)
            for (uint32_t i = 0; i < node->n_inputs; i++)
                if (!has_in(node, i))
                    return ocl_reason(reason, len, "Concat: absent input");
        return copy_supports(node, reason, len);
    case LOOM_OP_GATHER:
        return gather_supports(node, reason, len);
    case LOOM_OP_CAST:
        return cast_supports(node, reason, len);
    case LOOM_OP_SOFTMAX: case LOOM_OP_LOG_SOFTMAX:
        return node->inputs[0].dtype == LOOM_DTYPE_F32
                   ? 1
                   : ocl_reason(reason, len, "%s: f32 only", node->op_name);
    case LOOM_OP_LAYER_NORMALIZATION: {
        if (node->inputs[0].dtype != LOOM_DTYPE_F32 || !has_in(node, 1) ||
            node->inputs[1].dtype != LOOM_DTYPE_F32 ||
            (has_in(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32))
            return ocl_reason(reason, len, "LayerNormalization: f32 only");
        if (!one_output(node))
            return ocl_reason(reason, len, "LayerNormalization: Mean and InvStdDev outputs not "
                              "supported");
        int64_t o, mid, in;
        split_axis(&node->inputs[0], loom_node_attr_int(node, "axis", -1), &o, &mid, &in);
        int64_t nn = mid * in;
        if (numel(&node->inputs[1]) != nn || (has_in(node, 2) && numel(&node->inputs[2]) != nn))
            return ocl_reason(reason, len, "LayerNormalization: broadcast scale/bias not "
                              "supported");
        return 1;
    }
    case LOOM_OP_BATCH_NORMALIZATION:
        for (uint32_t i = 0; i < 5; i++)
            if (!has_in(node, i) || node->inputs[i].dtype != LOOM_DTYPE_F32)
                return ocl_reason(reason, len, "BatchNormalization: f32 X, scale, B, mean, var");
        if (!one_output(node) || node->inputs[0].rank < 2)
            return ocl_reason(reason, len, "BatchNormalization: inference form only");
        return 1;
    case LOOM_OP_REDUCE_MEAN: case LOOM_OP_REDUCE_SUM: case LOOM_OP_REDUCE_MAX:
    case LOOM_OP_REDUCE_MIN: case LOOM_OP_REDUCE_PROD:
        return node->inputs[0].dtype == LOOM_DTYPE_F32
                   ? 1
                   : ocl_reason(reason, len, "%s: f32 only", node->op_name);
    case LOOM_OP_GLOBAL_AVERAGE_POOL:
        return node->inputs[0].dtype == LOOM_DTYPE_F32 && node->inputs[0].rank >= 3
                   ? 1
                   : ocl_reason(reason, len, "GlobalAveragePool: f32, rank >= 3");
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
        return window_supports(node, reason, len, 0);
    case LOOM_OP_MATMUL:
        return matmul_supports(node, reason, len);
    case LOOM_OP_GEMM:
        return gemm_supports(node, reason, len);
    case LOOM_OP_CONV:
        return conv_supports(node, reason, len);
    default:
        return ocl_reason(reason, len, "no OpenCL kernel for %s", node->op_name);
    }
}

loom_status ocl_kernels_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t len)
{
    switch (node->op) {
    case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_DIV: case LOOM_OP_POW:
    case LOOM_OP_MIN: case LOOM_OP_MAX: case LOOM_OP_EQUAL: case LOOM_OP_LESS:
    case LOOM_OP_GREATER: case LOOM_OP_LESS_OR_EQUAL: case LOOM_OP_GREATER_OR_EQUAL:
    case LOOM_OP_AND: case LOOM_OP_OR: case LOOM_OP_XOR: case LOOM_OP_PRELU:
        return binary_prepare(s, d, node, k, err, len);
    case LOOM_OP_WHERE:
        k->run = run_where;
        return bcast_prepare(s, d, node, k, 3, err, len);
    case LOOM_OP_IDENTITY: case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN: case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE: case LOOM_OP_TRANSPOSE: case LOOM_OP_EXPAND: case LOOM_OP_SLICE:
    case LOOM_OP_CONCAT: case LOOM_OP_SPLIT:
        return copy_prepare(s, d, node, k, err, len);
    case LOOM_OP_GATHER:
        return gather_prepare(node, k, err, len);
    case LOOM_OP_CAST:
        k->run = run_cast;
        return LOOM_OK;
    case LOOM_OP_SOFTMAX: case LOOM_OP_LOG_SOFTMAX:
        split_axis(&node->inputs[0], loom_node_attr_int(node, "axis", -1), &k->v[0], &k->v[1],
                   &k->v[2]);
        k->iop = node->op == LOOM_OP_LOG_SOFTMAX;
        k->v[3] = (int64_t)row_local(d, d->kernels[OCL_K_SOFTMAX], k->v[1], 256);
        k->run = run_softmax;
        return LOOM_OK;
    case LOOM_OP_LAYER_NORMALIZATION: {
        int64_t mid, in;
        split_axis(&node->inputs[0], loom_node_attr_int(node, "axis", -1), &k->v[0], &mid, &in);
        k->v[1] = mid * in;
        k->v[2] = (int64_t)row_local(d, d->kernels[OCL_K_LAYERNORM], k->v[1], 256);
        k->fa = loom_node_attr_float(node, "epsilon", 1e-5f);
        k->run = run_layernorm;
        return LOOM_OK;
    }
    case LOOM_OP_BATCH_NORMALIZATION: {
        const loom_tensor_desc *x = &node->inputs[0];
        int64_t inner = 1;
        for (uint32_t dd = 2; dd < x->rank; dd++)
            inner *= x->dims[dd];
        k->v[0] = x->dims[1];
        k->v[1] = inner;
        k->fa = loom_node_attr_float(node, "epsilon", 1e-5f);
        k->run = run_batchnorm;
        return LOOM_OK;
    }
    case LOOM_OP_REDUCE_MEAN: case LOOM_OP_REDUCE_SUM: case LOOM_OP_REDUCE_MAX:
    case LOOM_OP_REDUCE_MIN: case LOOM_OP_REDUCE_PROD: {
        const loom_attr *axes = loom_node_attr(node, "axes");
        uint32_t mask = 0;
        if (!axes || axes->kind != LOOM_ATTR_INTS)
            mask = (1u << node->inputs[0].rank) - 1;
        else
            for (size_t i = 0; i < axes->count; i++)
                mask |= 1u << axes->ints[i];
        k->iop = node->op == LOOM_OP_REDUCE_SUM    ? 0
                 : node->op == LOOM_OP_REDUCE_MEAN ? 1
                 : node->op == LOOM_OP_REDUCE_MAX  ? 2
                 : node->op == LOOM_OP_REDUCE_MIN  ? 3
                                                   : 4;
        return reduce_prepare_mask(s, d, &node->inputs[0], mask, k, err, len);
    }
    case LOOM_OP_GLOBAL_AVERAGE_POOL:
        k->iop = 1;
        return reduce_prepare_mask(s, d, &node->inputs[0],
                                   ((1u << node->inputs[0].rank) - 1) & ~3u, k, err, len);
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
        return pool_prepare(s, d, node, k, err, len);
    case LOOM_OP_MATMUL:
        return matmul_prepare(node, k, err, len);
    case LOOM_OP_GEMM:
        return gemm_prepare(s, d, node, k, err, len);
    case LOOM_OP_CONV:
        return conv_prepare(s, d, node, k, err, len);
    default:
        return unary_prepare(s, d, node, k, err, len);
    }
}
