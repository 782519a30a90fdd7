/*
 * The OpenCL backend's elementwise operators: unary math and activations, IsNaN and IsInf,
 * binary arithmetic, Mod, BitShift, comparisons and logic (each node gets a variant of
 * ocl_ew_source specialised to its op, dtypes and broadcast classes), Where, and Cast.
 */
#include "ocl_kernels.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Operation codes of the elementwise program (ocl_ew_source's UOP and BOP). */
enum {
    U_RELU = 1, U_LEAKY, U_SIGMOID, U_TANH, U_ERF, U_GELU, U_GELU_TANH, U_SQRT, U_EXP, U_LOG,
    U_NEG, U_ABS, U_CLIP, U_RECIP, U_FLOOR, U_CEIL, U_ROUND, U_HSIG, U_HSWISH, U_SIN, U_COS,
    U_SOFTPLUS, U_ELU, U_SELU, U_SIGN, U_IDENT, U_NOT, U_ISNAN, U_ISINF
};
enum {
    B_ADD = 1, B_SUB, B_MUL, B_DIV, B_POW, B_MIN, B_MAX, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND,
    B_OR, B_XOR, B_PRELU, B_MOD, B_BITSHIFT
};

/* The OpenCL type of an integer dtype, NULL for another dtype. */
static const char *ew_int_type(loom_dtype dt)
{
    switch (dt) {
    case LOOM_DTYPE_I8: return "char";
    case LOOM_DTYPE_U8: return "uchar";
    case LOOM_DTYPE_I16: return "short";
    case LOOM_DTYPE_U16: return "ushort";
    case LOOM_DTYPE_I32: return "int";
    case LOOM_DTYPE_U32: return "uint";
    case LOOM_DTYPE_I64: return "long";
    case LOOM_DTYPE_U64: return "ulong";
    default: return NULL;
    }
}

static int ew_signed(loom_dtype dt)
{
    return dt == LOOM_DTYPE_I8 || dt == LOOM_DTYPE_I16 || dt == LOOM_DTYPE_I32 ||
           dt == LOOM_DTYPE_I64;
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
    case LOOM_OP_IS_NAN: return U_ISNAN;
    case LOOM_OP_IS_INF: return U_ISINF;
    default: return 0;
    }
}

int ocl_unary_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->op == LOOM_OP_GELU) {
        const loom_attr *a = loom_node_attr(node, "approximate");
        if (a && (a->kind != LOOM_ATTR_STRING || !a->s ||
                  (strcmp(a->s, "none") && strcmp(a->s, "tanh"))))
            return ocl_reason(reason, len, "Gelu: approximate must be none or tanh");
    }
    loom_dtype dt = node->inputs[0].dtype;
    int code = unary_code(node);
    if (code == U_NOT)
        return dt == LOOM_DTYPE_BOOL ? 1 : ocl_reason(reason, len, "Not: bool only");
    if (code == U_ISNAN || code == U_ISINF) /* f32 only, as the CPU reference */
        return dt == LOOM_DTYPE_F32 && node->outputs[0].dtype == LOOM_DTYPE_BOOL
                   ? 1
                   : ocl_reason(reason, len, "%s: f32 only", node->op_name);
    if (code == U_NEG || code == U_ABS || code == U_SIGN) {
        if (dt == LOOM_DTYPE_I32 || dt == LOOM_DTYPE_I64 || ocl_is_float(dt))
            return 1;
        return ocl_reason(reason, len, "%s: f32, f16, i32 and i64 only", node->op_name);
    }
    if (!ocl_is_float(dt))
        return ocl_reason(reason, len, "%s: f32 and f16 only", node->op_name);
    if (node->op == LOOM_OP_CLIP && ((ocl_has_in(node, 1) && !ocl_is_const(node, 1)) ||
                                     (ocl_has_in(node, 2) && !ocl_is_const(node, 2))))
        return ocl_reason(reason, len, "Clip: min and max must be constants");
    return 1;
}

static loom_status ew_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                              ocl_kernel *k, uint32_t nin, char *err, size_t len);

loom_status ocl_unary_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
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
    case LOOM_OP_IS_INF: /* pa: detect negative infinities, pb: positive ones */
        k->fa = loom_node_attr_int(node, "detect_negative", 1) != 0;
        k->fb = loom_node_attr_int(node, "detect_positive", 1) != 0;
        break;
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
    case LOOM_OP_MOD: return B_MOD;
    case LOOM_OP_BIT_SHIFT: return B_BITSHIFT;
    default: return 0;
    }
}

int ocl_binary_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 2 || !ocl_has_in(node, 0) || !ocl_has_in(node, 1))
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
        return ocl_is_float(a) ? 1 : ocl_reason(reason, len, "%s: f32 and f16 only", node->op_name);
    if ((code == B_MOD || code == B_BITSHIFT) && node->outputs[0].dtype != a)
        return ocl_reason(reason, len, "%s: output dtype differs from the inputs'", node->op_name);
    if (code == B_BITSHIFT)
        return a == LOOM_DTYPE_U8 || a == LOOM_DTYPE_U16 || a == LOOM_DTYPE_U32 ||
                       a == LOOM_DTYPE_U64
                   ? 1
                   : ocl_reason(reason, len, "BitShift: uint8, uint16, uint32 and uint64 only");
    if (code == B_MOD) {
        if (a == LOOM_DTYPE_F32 || ew_int_type(a))
            return 1;
        return ocl_reason(reason, len, "Mod: f32 and 8- to 64-bit integers only");
    }
    if (code == B_EQ && a == LOOM_DTYPE_BOOL)
        return 1;
    if (ocl_is_float(a) || a == LOOM_DTYPE_I32 || a == LOOM_DTYPE_I64)
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
        ocl_bcast_strides(&node->inputs[j], out, &meta[1 + rank * (1 + j)]);
        if (ocl_numel(&node->inputs[j]) != ocl_numel(out) || !ocl_same_shape(&node->inputs[j], out))
            k->flat = 0;
    }
    return ocl_put_meta(s, d, k, meta, 1 + rank * (1 + n), 0, err, len);
}

loom_status ocl_binary_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                               ocl_kernel *k, char *err, size_t len)
{
    k->iop = binary_code(node->op);
    return ew_prepare(s, d, node, k, 2, err, len);
}

/* ---- the specialised elementwise kernels (unary and binary) ----------------------------------- */

/* String attribute NAME of NODE, DEF when absent. */
static const char *ew_str_attr(const loom_node_desc *node, const char *name, const char *def)
{
    const loom_attr *a = loom_node_attr(node, name);
    return a && a->kind == LOOM_ATTR_STRING && a->s ? a->s : def;
}

/* Broadcast classes of an input (ocl_ew_source's CA and CB). */
enum { EW_SAME, EW_SCALAR, EW_DIVMOD, EW_TABLE };

/* The class of input IN read as OUT; for EW_DIVMOD, *DIV and *MOD give its index as
 * (i / div) % mod: IN's elements are one run of OUT's dims, broadcast over the others. */
static int ew_class(const loom_tensor_desc *in, const loom_tensor_desc *out, int64_t *div,
                    int64_t *mod)
{
    *div = 1;
    *mod = 1;
    int64_t ni = ocl_numel(in);
    if (ni == ocl_numel(out))
        return EW_SAME;
    if (ni == 1)
        return EW_SCALAR;
    int64_t st[LOOM_MAX_RANK];
    ocl_bcast_strides(in, out, st);
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
    default: return ew_int_type(dt) ? ew_int_type(dt) : "uchar"; /* bool */
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
    size_t es = ocl_esize(dt), eo = ocl_esize(k->out[0].dtype);
    int two = k->n_in > 1;
    ocl_buf b = two ? r->in[1] : r->in[0];
    cl_ulong ao = ocl_eoff(r->in[0], es), bo = ocl_eoff(b, es), yo = ocl_eoff(r->out[0], eo);
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
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
    if (ocl_cpu_like(r->d)) {
        items = ocl_row_groups(r->d, (int64_t)ew_items(units, local)) * local;
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
    char opts[192], extra[48] = "";
    if (nin == 2 && k->iop == B_MOD)
        snprintf(extra, sizeof extra, " -DFM=%d -DSGN=%d",
                 loom_node_attr_int(node, "fmod", 0) != 0, ew_signed(it));
    else if (nin == 2 && k->iop == B_BITSHIFT)
        snprintf(extra, sizeof extra, " -DLEFT=%d",
                 strcmp(ew_str_attr(node, "direction", "LEFT"), "RIGHT") != 0);
    snprintf(opts, sizeof opts, "-DT=%s -DOT=%s -DHIN=%d -DHOUT=%d -DISF=%d -DNIN=%u -D%s=%d "
             "-DCA=%d -DCB=%d%s", ew_type(it), ew_type(ot), it == LOOM_DTYPE_F16,
             ot == LOOM_DTYPE_F16, ocl_is_float(it), nin, nin == 1 ? "UOP" : "BOP", k->iop, cls[0],
             cls[1], extra);
    loom_status st = ocl_variant_kernels(s, d, opts, k->ew, err, len);
    if (st != LOOM_OK)
        return st;
    size_t local = ocl_kernel_local(d, k->ew[OCL_EW_FLAT], 64);
    for (int i = 1; i < OCL_EW_COUNT; i++) {
        size_t l = ocl_kernel_local(d, k->ew[i], 64);
        local = l < local ? l : local;
    }
    k->v[4] = (int64_t)local;
    k->run = run_elementwise;
    return LOOM_OK;
}

/* ---- Where ---------------------------------------------------------------------------------- */

int ocl_where_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 3)
        return ocl_reason(reason, len, "Where: three inputs");
    if (node->inputs[0].dtype != LOOM_DTYPE_BOOL)
        return ocl_reason(reason, len, "Where: condition must be bool");
    if (node->inputs[1].dtype != node->inputs[2].dtype ||
        ocl_size_index(ocl_esize(node->inputs[1].dtype)) < 0)
        return ocl_reason(reason, len, "Where: X and Y of one supported dtype");
    return 1;
}

static loom_status run_where(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_WHERE_1 + ocl_size_index(es)));
    cl_ulong co = ocl_eoff(r->in[0], 1), xo = ocl_eoff(r->in[1], es), zo = ocl_eoff(r->in[2], es);
    cl_ulong yo = ocl_eoff(r->out[0], es), n = (cl_ulong)ocl_numel(&k->out[0]);
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

loom_status ocl_where_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                              ocl_kernel *k, char *err, size_t len)
{
    k->run = run_where;
    return bcast_prepare(s, d, node, k, 3, err, len);
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

int ocl_cast_supports(const loom_node_desc *node, char *reason, size_t len)
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
        return ocl_copy(r, r->in[0], r->out[0], (size_t)ocl_numel(&k->out[0]) * ocl_esize(dt));
    cl_ulong xo = ocl_eoff(r->in[0], ocl_esize(st)), yo = ocl_eoff(r->out[0], ocl_esize(dt));
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
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

loom_status ocl_cast_prepare(const loom_node_desc *node, ocl_kernel *k)
{
    (void)node;
    k->run = run_cast;
    return LOOM_OK;
}
