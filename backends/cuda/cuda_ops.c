/*
 * Single nodes on a CUDA device: which ones the backend runs (supports, always with a reason
 * when not), their compilation (prepare: the kernel's plan, device copies of constant inputs)
 * and their launch on the device's compute stream. GEMMs go to cuBLAS; everything else to the
 * kernels of cuda_kernels.cu. supports() and prepare() share one planning function, so that
 * prepare accepts exactly what supports accepted.
 *
 * cuBLAS is column-major, Loom's tensors row-major: a row-major M x N product C = A B is the
 * column-major N x M product C^T = B^T A^T, so every call passes B first, then A, with the
 * dimensions swapped, and the row-major leading dimensions as they are.
 */
#include "cuda_internal.h"
#include "cuda_kernels.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a node compiles into. */
typedef enum op_kind {
    OPK_UNARY = 1,
    OPK_BINARY,
    OPK_COPY,   /* Reshape, Flatten, Squeeze, Unsqueeze, Identity, a Reduce over no axis */
    OPK_GATHER, /* Transpose, Expand */
    OPK_MATMUL,
    OPK_GEMM,
    OPK_SOFTMAX,
    OPK_LAYERNORM,
    OPK_REDUCE_ROWS,
    OPK_REDUCE_WALK,
} op_kind;

/* Inputs a node's kernel reads (the rest, such as Reshape's shape, are constants the registry
 * already turned into attributes): at most 3 for the ops below. */
#define MAX_DATA_INPUTS 3

struct cuda_node_kernel {
    cuda_kernel_kind kind; /* CUDA_KERNEL_NODE: first, as for every kernel handed out */
    op_kind op_kind;
    char op_name[32];      /* for messages (the descriptor's string dies after prepare) */
    uint32_t n_data;       /* inputs 0 .. n_data-1 are read (those the node has: n_in) */
    uint32_t n_in;         /* the node's input count: the host passes that many pointers */
    /* Per data input: the device copy of a constant input, or NULL (the host passes it). */
    const void *dev_const[MAX_DATA_INPUTS];
    uint8_t owned[MAX_DATA_INPUTS]; /* 1: dev_const[i] is ours to cudaFree */
    int op;                         /* cuda_unary_op, cuda_binary_op or cuda_reduce_op */
    float alpha, beta, eps;
    cuda_walk walk, walk2;
    int64_t n, rows, cols;
    size_t elem_size, out_bytes;
    /* GEMMs: row-major M x K times K x N; for MatMul the batch walk (operand 0 = A, 1 = B,
     * strides in matrices) in WALK. */
    int64_t m, nn, k;
    int trans_a, trans_b, has_c;
};

static int fail(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t len, const char *fmt, ...)
{
    if (why && len) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(why, len, "cuda: ");
        if (n > 0 && (size_t)n < len)
            vsnprintf(why + n, len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static const char *dtype_name(loom_dtype t)
{
    switch (t) {
    case LOOM_DTYPE_F32: return "float32";
    case LOOM_DTYPE_F16: return "float16";
    case LOOM_DTYPE_BF16: return "bfloat16";
    case LOOM_DTYPE_F64: return "float64";
    case LOOM_DTYPE_I8: return "int8";
    case LOOM_DTYPE_U8: return "uint8";
    case LOOM_DTYPE_I16: return "int16";
    case LOOM_DTYPE_U16: return "uint16";
    case LOOM_DTYPE_I32: return "int32";
    case LOOM_DTYPE_U32: return "uint32";
    case LOOM_DTYPE_I64: return "int64";
    case LOOM_DTYPE_U64: return "uint64";
    case LOOM_DTYPE_BOOL: return "bool";
    default: return "undefined";
    }
}

static int present(const loom_node_desc *node, uint32_t i)
{
    return i < node->n_inputs && node->inputs[i].dtype != LOOM_DTYPE_UNDEFINED;
}

/* Inputs 0..N-1 present and float32, and output 0 float32. */
static int all_f32(const loom_node_desc *node, uint32_t n, char *why, size_t len)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!present(node, i))
            return fail(why, len, "%s: input %u is missing", node->op_name, i);
        if (node->inputs[i].dtype != LOOM_DTYPE_F32)
            return fail(why, len, "%s: input %u is %s; this backend computes in float32 only",
                        node->op_name, i, dtype_name(node->inputs[i].dtype));
    }
    if (node->n_outputs < 1 || node->outputs[0].dtype != LOOM_DTYPE_F32)
        return fail(why, len, "%s: the output is not float32", node->op_name);
    return 1;
}

/* Only the first output (LayerNormalization's Mean and InvStdDev are not computed). */
static int one_output(const loom_node_desc *node, char *why, size_t len)
{
    for (uint32_t i = 1; i < node->n_outputs; i++)
        if (node->outputs[i].dtype != LOOM_DTYPE_UNDEFINED)
            return fail(why, len, "%s: output %u is not computed (only the first output)",
                        node->op_name, i);
    return 1;
}

static int unary_op(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_RELU: return CUDA_UNARY_RELU;
    case LOOM_OP_LEAKY_RELU: return CUDA_UNARY_LEAKY_RELU;
    case LOOM_OP_SIGMOID: return CUDA_UNARY_SIGMOID;
    case LOOM_OP_TANH: return CUDA_UNARY_TANH;
    case LOOM_OP_ERF: return CUDA_UNARY_ERF;
    case LOOM_OP_GELU: return CUDA_UNARY_GELU;
    case LOOM_OP_SQRT: return CUDA_UNARY_SQRT;
    case LOOM_OP_EXP: return CUDA_UNARY_EXP;
    case LOOM_OP_LOG: return CUDA_UNARY_LOG;
    case LOOM_OP_NEG: return CUDA_UNARY_NEG;
    case LOOM_OP_ABS: return CUDA_UNARY_ABS;
    case LOOM_OP_RECIPROCAL: return CUDA_UNARY_RECIPROCAL;
    default: return 0;
    }
}

static int binary_op(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_ADD: return CUDA_BINARY_ADD;
    case LOOM_OP_SUB: return CUDA_BINARY_SUB;
    case LOOM_OP_MUL: return CUDA_BINARY_MUL;
    case LOOM_OP_DIV: return CUDA_BINARY_DIV;
    case LOOM_OP_POW: return CUDA_BINARY_POW;
    default: return 0;
    }
}

static int reduce_op(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_REDUCE_SUM: return CUDA_REDUCE_SUM;
    case LOOM_OP_REDUCE_MEAN: return CUDA_REDUCE_MEAN;
    case LOOM_OP_REDUCE_MAX: return CUDA_REDUCE_MAX;
    default: return 0;
    }
}

static int64_t numel(const loom_tensor_desc *t)
{
    return loom_tensor_desc_numel(t);
}

static int plan_matmul(const loom_node_desc *node, cuda_node_kernel *k, char *why, size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    if (a->rank < 1 || b->rank < 1)
        return fail(why, len, "MatMul of a scalar");
    /* numpy: a 1-D A is one row, a 1-D B one column, each dropped from the output. */
    const int64_t K = a->dims[a->rank - 1];
    const int64_t M = a->rank >= 2 ? a->dims[a->rank - 2] : 1;
    const int64_t Kb = b->rank >= 2 ? b->dims[b->rank - 2] : b->dims[0];
    const int64_t N = b->rank >= 2 ? b->dims[b->rank - 1] : 1;
    if (K != Kb)
        return fail(why, len, "MatMul: inner dimensions %lld and %lld differ", (long long)K,
                    (long long)Kb);
    const int32_t ar = a->rank >= 2 ? (int32_t)a->rank - 2 : 0;
    const int32_t br = b->rank >= 2 ? (int32_t)b->rank - 2 : 0;
    const int32_t r = ar > br ? ar : br;
    int64_t batch[CUDA_MAX_RANK];
    for (int32_t d = 0; d < r; d++) {
        int32_t ea = d - (r - ar), eb = d - (r - br);
        int64_t da = ea >= 0 ? a->dims[ea] : 1, db = eb >= 0 ? b->dims[eb] : 1;
        if (da != db && da != 1 && db != 1)
            return fail(why, len, "MatMul: batch dimensions %lld and %lld do not broadcast",
                        (long long)da, (long long)db);
        batch[d] = da == 1 ? db : da;
    }
    cuda_walk *w = &k->walk;
    memset(w, 0, sizeof *w);
    w->rank = r;
    w->n_operands = 2;
    for (int32_t d = 0; d < r; d++)
        w->dims[d] = batch[d];
    if (!cuda_bcast_strides(ar, a->dims, r, batch, w->strides[0]) ||
        !cuda_bcast_strides(br, b->dims, r, batch, w->strides[1]))
        return fail(why, len, "MatMul: batch dimensions do not broadcast");
    const int64_t count = cuda_walk_numel(w);
    cuda_walk_collapse(w);
    if (count * M * N != numel(&node->outputs[0]))
        return fail(why, len, "MatMul: output has %lld elements, expected %lld",
                    (long long)numel(&node->outputs[0]), (long long)(count * M * N));
    const int64_t inner = w->rank ? w->dims[w->rank - 1] : 1;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || inner > INT_MAX)
        return fail(why, len, "MatMul: a dimension beyond cuBLAS's int range");
    k->op_kind = OPK_MATMUL;
    k->m = M;
    k->nn = N;
    k->k = K;
    k->n = count;
    return 1;
}

static int plan_gemm(const loom_node_desc *node, cuda_node_kernel *k, char *why, size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    if (a->rank != 2 || b->rank != 2)
        return fail(why, len, "Gemm needs 2-D A and B");
    k->trans_a = loom_node_attr_int(node, "transA", 0) != 0;
    k->trans_b = loom_node_attr_int(node, "transB", 0) != 0;
    k->alpha = loom_node_attr_float(node, "alpha", 1.0f);
    k->beta = loom_node_attr_float(node, "beta", 1.0f);
    k->m = k->trans_a ? a->dims[1] : a->dims[0];
    k->k = k->trans_a ? a->dims[0] : a->dims[1];
    k->nn = k->trans_b ? b->dims[0] : b->dims[1];
    const int64_t kb = k->trans_b ? b->dims[1] : b->dims[0];
    if (kb != k->k)
        return fail(why, len, "Gemm: inner dimensions %lld and %lld differ", (long long)k->k,
                    (long long)kb);
    if (k->m > INT_MAX || k->nn > INT_MAX || k->k > INT_MAX)
        return fail(why, len, "Gemm: a dimension beyond cuBLAS's int range");
    const int64_t out[2] = {k->m, k->nn};
    k->has_c = present(node, 2);
    if (k->has_c) {
        const loom_tensor_desc *c = &node->inputs[2];
        memset(&k->walk, 0, sizeof k->walk);
        k->walk.rank = 2;
        k->walk.n_operands = 1;
        k->walk.dims[0] = k->m;
        k->walk.dims[1] = k->nn;
        if (!cuda_bcast_strides((int32_t)c->rank, c->dims, 2, out, k->walk.strides[0]))
            return fail(why, len, "Gemm: C does not broadcast to [%lld, %lld]", (long long)k->m,
                        (long long)k->nn);
        cuda_walk_collapse(&k->walk);
    }
    k->op_kind = OPK_GEMM;
    return 1;
}

static int plan_layernorm(const loom_node_desc *node, cuda_node_kernel *k, char *why, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    int64_t axis = loom_node_attr_int(node, "axis", -1);
    if (axis < 0 || axis >= (int64_t)x->rank)
        return fail(why, len, "LayerNormalization: axis %lld outside rank %u", (long long)axis,
                    x->rank);
    int64_t rows = 1, cols = 1;
    for (uint32_t d = 0; d < x->rank; d++)
        *((int64_t)d < axis ? &rows : &cols) *= x->dims[d];
    /* Scale and B must hold one value per normalised element: same number of elements as a
     * row, and broadcastable to the row's shape (so the same layout). */
    const int32_t inner_rank = (int32_t)x->rank - (int32_t)axis;
    for (uint32_t i = 1; i <= 2; i++) {
        if (!present(node, i))
            continue;
        const loom_tensor_desc *t = &node->inputs[i];
        int64_t strides[CUDA_MAX_RANK];
        if (numel(t) != cols ||
            !cuda_bcast_strides((int32_t)t->rank, t->dims, inner_rank, x->dims + axis, strides))
            return fail(why, len, "LayerNormalization: %s is not one value per normalised "
                        "element (broadcast Scale or B is not supported)",
                        i == 1 ? "Scale" : "B");
    }
    k->op_kind = OPK_LAYERNORM;
    k->rows = rows;
    k->cols = cols;
    k->eps = loom_node_attr_float(node, "epsilon", 1e-5f);
    return 1;
}

static int plan_reduce(const loom_node_desc *node, cuda_node_kernel *k, char *why, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *axes = loom_node_attr(node, "axes");
    uint8_t reduced[CUDA_MAX_RANK] = {0};
    size_t n_axes = axes && axes->kind == LOOM_ATTR_INTS ? axes->count : 0;
    if (axes && axes->kind != LOOM_ATTR_INTS)
        return fail(why, len, "%s: axes is not a list of ints", node->op_name);
    for (size_t i = 0; i < n_axes; i++) {
        if (axes->ints[i] < 0 || axes->ints[i] >= (int64_t)x->rank)
            return fail(why, len, "%s: axis %lld outside rank %u", node->op_name,
                        (long long)axes->ints[i], x->rank);
        reduced[axes->ints[i]] = 1;
    }
    if (n_axes == 0) { /* noop_with_empty_axes: the identity */
        k->op_kind = OPK_COPY;
        k->out_bytes = (size_t)numel(x) * sizeof(float);
        return 1;
    }
    k->op = reduce_op(node->op);
    /* The reduced axes a trailing run: contiguous rows, one block each. */
    uint32_t first = x->rank;
    while (first > 0 && reduced[first - 1])
        first--;
    int trailing = 1;
    for (uint32_t d = 0; d < first; d++)
        if (reduced[d])
            trailing = 0;
    if (trailing) {
        int64_t rows = 1, cols = 1;
        for (uint32_t d = 0; d < x->rank; d++)
            *(d < first ? &rows : &cols) *= x->dims[d];
        k->op_kind = OPK_REDUCE_ROWS;
        k->rows = rows;
        k->cols = cols;
    } else {
        k->op_kind = OPK_REDUCE_WALK;
        cuda_reduce_walks((int32_t)x->rank, x->dims, reduced, &k->walk, &k->walk2);
    }
    return 1;
}

/* The plan of NODE in K (no allocation, nothing outside K written): shared by supports() and
 * prepare(). Returns 1, or 0 with a reason in WHY. */
static int plan_node(const loom_node_desc *node, cuda_node_kernel *k, char *why, size_t len)
{
    memset(k, 0, sizeof *k);
    k->kind = CUDA_KERNEL_NODE;
    snprintf(k->op_name, sizeof k->op_name, "%s", node->op_name ? node->op_name : "?");
    k->n_in = node->n_inputs;
    if (node->n_outputs < 1)
        return fail(why, len, "%s has no output", node->op_name);
    const loom_tensor_desc *y = &node->outputs[0];
    k->n = numel(y);
    int u = unary_op(node->op), bin = binary_op(node->op), red = reduce_op(node->op);
    if (u) {
        if (!all_f32(node, 1, why, len))
            return 0;
        k->op_kind = OPK_UNARY;
        k->n_data = 1;
        k->op = u;
        if (node->op == LOOM_OP_LEAKY_RELU)
            k->alpha = loom_node_attr_float(node, "alpha", 0.01f);
        if (node->op == LOOM_OP_GELU) {
            const loom_attr *ap = loom_node_attr(node, "approximate");
            const char *mode = ap && ap->kind == LOOM_ATTR_STRING && ap->s ? ap->s : "none";
            if (!strcmp(mode, "tanh"))
                k->op = CUDA_UNARY_GELU_TANH;
            else if (strcmp(mode, "none"))
                return fail(why, len, "Gelu: approximate='%s' is not supported", mode);
        }
        return 1;
    }
    if (bin) {
        if (!all_f32(node, 2, why, len))
            return 0;
        cuda_walk *w = &k->walk;
        w->rank = (int32_t)y->rank;
        w->n_operands = 2;
        for (uint32_t d = 0; d < y->rank; d++)
            w->dims[d] = y->dims[d];
        for (int i = 0; i < 2; i++)
            if (!cuda_bcast_strides((int32_t)node->inputs[i].rank, node->inputs[i].dims,
                                    (int32_t)y->rank, y->dims, w->strides[i]))
                return fail(why, len, "%s: input %d does not broadcast to the output's shape",
                            node->op_name, i);
        cuda_walk_collapse(w);
        k->op_kind = OPK_BINARY;
        k->n_data = 2;
        k->op = bin;
        return 1;
    }
    if (red) {
        if (!all_f32(node, 1, why, len))
            return 0;
        k->n_data = 1;
        return plan_reduce(node, k, why, len);
    }
    switch (node->op) {
    case LOOM_OP_RESHAPE:
    case LOOM_OP_FLATTEN:
    case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE:
    case LOOM_OP_IDENTITY: {
        const size_t es = present(node, 0) ? loom_dtype_size(node->inputs[0].dtype) : 0;
        if (!es || node->inputs[0].dtype != y->dtype || numel(&node->inputs[0]) != k->n)
            return fail(why, len, "%s: input and output differ in type or size", node->op_name);
        k->op_kind = OPK_COPY;
        k->n_data = 1;
        k->out_bytes = (size_t)k->n * es;
        return 1;
    }
    case LOOM_OP_TRANSPOSE:
    case LOOM_OP_EXPAND: {
        const loom_tensor_desc *x = present(node, 0) ? &node->inputs[0] : NULL;
        const size_t es = x ? loom_dtype_size(x->dtype) : 0;
        if (!es || x->dtype != y->dtype)
            return fail(why, len, "%s: input and output differ in type", node->op_name);
        if (node->op == LOOM_OP_TRANSPOSE) {
            const loom_attr *perm = loom_node_attr(node, "perm");
            if (!perm || perm->kind != LOOM_ATTR_INTS || perm->count != x->rank)
                return fail(why, len, "Transpose: perm does not list the %u axes", x->rank);
            uint8_t seen[CUDA_MAX_RANK] = {0};
            for (size_t i = 0; i < perm->count; i++) {
                if (perm->ints[i] < 0 || perm->ints[i] >= (int64_t)x->rank || seen[perm->ints[i]])
                    return fail(why, len, "Transpose: perm is not a permutation");
                seen[perm->ints[i]] = 1;
            }
            cuda_transpose_walk((int32_t)x->rank, x->dims, perm->ints, &k->walk);
        } else {
            cuda_walk *w = &k->walk;
            w->rank = (int32_t)y->rank;
            w->n_operands = 1;
            for (uint32_t d = 0; d < y->rank; d++)
                w->dims[d] = y->dims[d];
            if (!cuda_bcast_strides((int32_t)x->rank, x->dims, (int32_t)y->rank, y->dims,
                                    w->strides[0]))
                return fail(why, len, "Expand: the input does not broadcast to the output");
            cuda_walk_collapse(w);
        }
        k->op_kind = OPK_GATHER;
        k->n_data = 1;
        k->elem_size = es;
        return 1;
    }
    case LOOM_OP_MATMUL:
        if (!all_f32(node, 2, why, len))
            return 0;
        k->n_data = 2;
        return plan_matmul(node, k, why, len);
    case LOOM_OP_GEMM:
        if (!all_f32(node, 2, why, len))
            return 0;
        if (present(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32)
            return fail(why, len, "Gemm: C is %s; this backend computes in float32 only",
                        dtype_name(node->inputs[2].dtype));
        k->n_data = 3;
        return plan_gemm(node, k, why, len);
    case LOOM_OP_SOFTMAX: {
        if (!all_f32(node, 1, why, len))
            return 0;
        const loom_tensor_desc *x = &node->inputs[0];
        int64_t axis = loom_node_attr_int(node, "axis", -1);
        if (x->rank < 1 || axis != (int64_t)x->rank - 1)
            return fail(why, len, "Softmax over axis %lld of rank %u: only the last axis",
                        (long long)axis, x->rank);
        k->op_kind = OPK_SOFTMAX;
        k->n_data = 1;
        k->cols = x->dims[x->rank - 1];
        k->rows = k->cols ? k->n / k->cols : 0;
        return 1;
    }
    case LOOM_OP_LAYER_NORMALIZATION:
        if (!all_f32(node, 2, why, len) || !one_output(node, why, len))
            return 0;
        if (present(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32)
            return fail(why, len, "LayerNormalization: B is not float32");
        k->n_data = 3;
        return plan_layernorm(node, k, why, len);
    case LOOM_OP_CONV:
        return fail(why, len, "Conv is not supported: it needs cuDNN or an implicit-GEMM "
                    "kernel, neither of which this backend has yet");
    default:
        return fail(why, len, "%s is not supported (the CUDA backend runs MatMul, Gemm, "
                    "Add/Sub/Mul/Div/Pow, Relu, LeakyRelu, Gelu, Erf, Tanh, Sigmoid, Sqrt, Exp, "
                    "Log, Neg, Abs, Reciprocal, Softmax, LayerNormalization, Transpose, Expand, "
                    "Reshape-like copies, ReduceMean/Sum/Max)",
                    node->op_name);
    }
}

int cuda_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                  size_t reason_len)
{
    cuda_state *s = ctx;
    if (dev >= (uint32_t)s->n_devices)
        return fail(reason, reason_len, "no device %u", dev);
    cuda_node_kernel k;
    return plan_node(node, &k, reason, reason_len);
}

loom_status cuda_node_prepare(cuda_state *s, uint32_t dev, const loom_node_desc *node,
                              const void *const *device_constants, cuda_node_kernel **out,
                              char *err, size_t err_len)
{
    *out = NULL;
    if (dev >= (uint32_t)s->n_devices) {
        snprintf(err, err_len, "cuda: no device %u", dev);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    cuda_node_kernel *k = malloc(sizeof *k);
    if (!k) {
        snprintf(err, err_len, "cuda: out of memory");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    if (!plan_node(node, k, err, err_len)) {
        free(k);
        return LOOM_ERR_UNSUPPORTED;
    }
    cudaError_t e = cudaSetDevice(s->devs[dev].ordinal);
    if (e != cudaSuccess) {
        free(k);
        return cuda_fail(e, "cudaSetDevice", err, err_len);
    }
    /* Constant inputs: the host passes their host pointers at execute, so the kernel reads its
     * device copy instead; the host's own device copy when it shares one, else ours. */
    for (uint32_t i = 0; i < k->n_data && i < node->n_inputs; i++) {
        const void *host = node->input_constants ? node->input_constants[i] : NULL;
        if (!host || !present(node, i))
            continue;
        if (device_constants && device_constants[i]) {
            k->dev_const[i] = device_constants[i];
            continue;
        }
        size_t bytes = (size_t)numel(&node->inputs[i]) * loom_dtype_size(node->inputs[i].dtype);
        void *p = NULL;
        e = cudaMalloc(&p, bytes ? bytes : 1);
        if (e == cudaSuccess && bytes)
            e = cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            if (p)
                cudaFree(p);
            cuda_node_release(k);
            return cuda_fail(e, "copying a constant input to the device", err, err_len);
        }
        k->dev_const[i] = p;
        k->owned[i] = 1;
    }
    *out = k;
    return LOOM_OK;
}

loom_status cuda_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                         size_t *scratch_bytes, char *err, size_t err_len)
{
    cuda_state *s = ctx;
    const void *const *dc =
        LOOM_NODE_DESC_HAS_DEVICE_CONSTANTS(node) ? node->input_device_constants : NULL;
    cuda_node_kernel *k = NULL;
    loom_status st = cuda_node_prepare(s, dev, node, dc, &k, err, err_len);
    *kernel = k;
    *scratch_bytes = 0;
    return st;
}

void cuda_node_release(cuda_node_kernel *k)
{
    if (!k)
        return;
    for (int i = 0; i < MAX_DATA_INPUTS; i++)
        if (k->owned[i])
            cudaFree((void *)k->dev_const[i]);
    free(k);
}

size_t cuda_node_output_bytes(const cuda_node_kernel *k)
{
    return k->op_kind == OPK_COPY ? k->out_bytes
           : k->op_kind == OPK_GATHER ? (size_t)k->n * k->elem_size
                                      : (size_t)k->n * sizeof(float);
}

static loom_status launched(int rc, const cuda_node_kernel *k, char *err, size_t err_len)
{
    if (rc == 0)
        return LOOM_OK;
    char what[96];
    snprintf(what, sizeof what, "launching %s", k->op_name);
    return cuda_fail((cudaError_t)rc, what, err, err_len);
}

static loom_status blas(cublasStatus_t st, const cuda_node_kernel *k, char *err, size_t err_len)
{
    if (st == CUBLAS_STATUS_SUCCESS)
        return LOOM_OK;
    char what[96];
    snprintf(what, sizeof what, "%s (cuBLAS sgemm)", k->op_name);
    return cuda_blas_fail(st, what, err, err_len);
}

static loom_status run_matmul(cuda_dev *d, const cuda_node_kernel *k, const float *a,
                              const float *b, float *y, char *err, size_t err_len)
{
    const int64_t M = k->m, N = k->nn, K = k->k;
    if (k->n == 0 || M == 0 || N == 0)
        return LOOM_OK;
    cudaStream_t stream = d->stream[CUDA_Q_COMPUTE];
    if (K == 0) { /* sums over nothing */
        cudaError_t e = cudaMemsetAsync(y, 0, (size_t)(k->n * M * N) * sizeof(float), stream);
        return e == cudaSuccess ? LOOM_OK : cuda_fail(e, "cudaMemsetAsync", err, err_len);
    }
    const float one = 1.0f, zero = 0.0f;
    const cuda_walk *w = &k->walk;
    const int64_t inner = w->rank ? w->dims[w->rank - 1] : 1;
    const int64_t sa = w->rank ? w->strides[0][w->rank - 1] * M * K : 0;
    const int64_t sb = w->rank ? w->strides[1][w->rank - 1] * K * N : 0;
    const int64_t outer = k->n / inner;
    /* One strided-batched call per run of the innermost collapsed batch axis (usually one call
     * in all: equal or fully broadcast batches collapse to a single axis). */
    for (int64_t o = 0; o < outer; o++) {
        int64_t off[CUDA_MAX_OPERANDS] = {0, 0, 0};
        if (w->rank)
            cuda_walk_offsets(w, o * inner, off);
        const float *ao = a + off[0] * M * K, *bo = b + off[1] * K * N;
        float *yo = y + o * inner * M * N;
        cublasStatus_t st = cublasSgemmStridedBatched(
            d->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, bo, (int)N, sb, ao,
            (int)K, sa, &zero, yo, (int)N, M * N, (int)inner);
        if (st != CUBLAS_STATUS_SUCCESS)
            return blas(st, k, err, err_len);
    }
    return LOOM_OK;
}

static loom_status run_gemm(cuda_dev *d, const cuda_node_kernel *k, const float *a,
                            const float *b, const float *c, float *y, char *err, size_t err_len)
{
    const int64_t M = k->m, N = k->nn, K = k->k;
    if (M == 0 || N == 0)
        return LOOM_OK;
    cudaStream_t stream = d->stream[CUDA_Q_COMPUTE];
    /* Y = beta C first (broadcast), then the product accumulates onto it (cuBLAS beta 1). */
    const int with_c = k->has_c && c && k->beta != 0.0f;
    if (with_c) {
        loom_status st = launched(cuda_launch_gather_scaled(stream, k->beta, c, y, &k->walk), k,
                                  err, err_len);
        if (st != LOOM_OK)
            return st;
    }
    if (K == 0) {
        if (with_c)
            return LOOM_OK;
        cudaError_t e = cudaMemsetAsync(y, 0, (size_t)(M * N) * sizeof(float), stream);
        return e == cudaSuccess ? LOOM_OK : cuda_fail(e, "cudaMemsetAsync", err, err_len);
    }
    const float beta = with_c ? 1.0f : 0.0f;
    /* Column-major view: B^T (N x K) first, then A^T (K x M); a transposed operand is stored
     * the other way round, so its leading dimension is its other extent. */
    cublasStatus_t st = cublasSgemm(d->blas, k->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    k->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K,
                                    &k->alpha, b, (int)(k->trans_b ? K : N), a,
                                    (int)(k->trans_a ? M : K), &beta, y, (int)N);
    return blas(st, k, err, err_len);
}

loom_status cuda_node_launch(cuda_state *s, cuda_dev *d, const cuda_node_kernel *k,
                             const void *const *in_args, void *const *out, char *err,
                             size_t err_len)
{
    (void)s;
    const void *in[MAX_DATA_INPUTS] = {NULL, NULL, NULL};
    /* An absent optional input (Gemm's C, LayerNormalization's B) may lie beyond the host's
     * array: read only the pointers it passed. */
    for (uint32_t i = 0; i < k->n_data && i < k->n_in; i++)
        in[i] = k->dev_const[i] ? k->dev_const[i] : in_args[i];
    cudaStream_t stream = d->stream[CUDA_Q_COMPUTE];
    void *y = out[0];
    switch (k->op_kind) {
    case OPK_UNARY:
        return launched(cuda_launch_unary(stream, (cuda_unary_op)k->op, k->alpha, in[0], y, k->n),
                        k, err, err_len);
    case OPK_BINARY:
        return launched(
            cuda_launch_binary(stream, (cuda_binary_op)k->op, in[0], in[1], y, &k->walk), k, err,
            err_len);
    case OPK_COPY: {
        if (!k->out_bytes)
            return LOOM_OK;
        cudaError_t e = cudaMemcpyAsync(y, in[0], k->out_bytes, cudaMemcpyDeviceToDevice, stream);
        return e == cudaSuccess ? LOOM_OK : cuda_fail(e, "cudaMemcpyAsync", err, err_len);
    }
    case OPK_GATHER:
        return launched(cuda_launch_gather(stream, k->elem_size, in[0], y, &k->walk), k, err,
                        err_len);
    case OPK_MATMUL:
        return run_matmul(d, k, in[0], in[1], y, err, err_len);
    case OPK_GEMM:
        return run_gemm(d, k, in[0], in[1], in[2], y, err, err_len);
    case OPK_SOFTMAX:
        return launched(cuda_launch_softmax(stream, in[0], y, k->rows, k->cols), k, err, err_len);
    case OPK_LAYERNORM:
        return launched(cuda_launch_layernorm(stream, in[0], in[1], in[2], y, k->rows, k->cols,
                                              k->eps),
                        k, err, err_len);
    case OPK_REDUCE_ROWS:
        return launched(
            cuda_launch_reduce_rows(stream, (cuda_reduce_op)k->op, in[0], y, k->rows, k->cols), k,
            err, err_len);
    case OPK_REDUCE_WALK:
        return launched(cuda_launch_reduce_walk(stream, (cuda_reduce_op)k->op, in[0], y, &k->walk,
                                                &k->walk2),
                        k, err, err_len);
    }
    snprintf(err, err_len, "cuda: internal error: kernel of unknown kind %d", (int)k->op_kind);
    return LOOM_ERR_INTERNAL;
}
