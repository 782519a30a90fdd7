/*
 * Inside the operator registry: the definition each op family file (ops_elementwise.c,
 * ops_nn.c, ops_layout.c) exports for the table in ops_common.c, and the helpers those files
 * share (input checks, constant shape-like inputs, axis resolution, cost accounting).
 * Not a public header; only graph/ops_*.c include it.
 */
#ifndef LOOM_GRAPH_OPS_DEFS_H
#define LOOM_GRAPH_OPS_DEFS_H

#include "ops.h"

#include <stddef.h>
#include <stdint.h>

/* ---- the operators, one object each (ops_elementwise.c) ------------------------------------- */
extern const loom_op_def loom_op_def_relu;
extern const loom_op_def loom_op_def_leaky_relu;
extern const loom_op_def loom_op_def_sigmoid;
extern const loom_op_def loom_op_def_tanh;
extern const loom_op_def loom_op_def_erf;
extern const loom_op_def loom_op_def_gelu;
extern const loom_op_def loom_op_def_add;
extern const loom_op_def loom_op_def_sub;
extern const loom_op_def loom_op_def_mul;
extern const loom_op_def loom_op_def_div;
extern const loom_op_def loom_op_def_pow;
extern const loom_op_def loom_op_def_sqrt;
extern const loom_op_def loom_op_def_exp;
extern const loom_op_def loom_op_def_log;
extern const loom_op_def loom_op_def_neg;
extern const loom_op_def loom_op_def_abs;
extern const loom_op_def loom_op_def_min;
extern const loom_op_def loom_op_def_max;
extern const loom_op_def loom_op_def_clip;
extern const loom_op_def loom_op_def_where;
extern const loom_op_def loom_op_def_cast;
extern const loom_op_def loom_op_def_identity;
extern const loom_op_def loom_op_def_expand;

/* (ops_nn.c) */
extern const loom_op_def loom_op_def_matmul;
extern const loom_op_def loom_op_def_gemm;
extern const loom_op_def loom_op_def_conv;
extern const loom_op_def loom_op_def_max_pool;
extern const loom_op_def loom_op_def_average_pool;
extern const loom_op_def loom_op_def_global_average_pool;
extern const loom_op_def loom_op_def_softmax;
extern const loom_op_def loom_op_def_layer_normalization;
extern const loom_op_def loom_op_def_batch_normalization;
extern const loom_op_def loom_op_def_reduce_mean;
extern const loom_op_def loom_op_def_reduce_sum;
extern const loom_op_def loom_op_def_reduce_max;

/* (ops_layout.c) */
extern const loom_op_def loom_op_def_reshape;
extern const loom_op_def loom_op_def_transpose;
extern const loom_op_def loom_op_def_flatten;
extern const loom_op_def loom_op_def_concat;
extern const loom_op_def loom_op_def_split;
extern const loom_op_def loom_op_def_slice;
extern const loom_op_def loom_op_def_gather;
extern const loom_op_def loom_op_def_squeeze;
extern const loom_op_def loom_op_def_unsqueeze;

/* A table of operators defined together. The registry (ops_common.c) chains the core set with
 * the sets of later ABI versions: ops_nn2.c (ConvTranspose, Resize, Pad, recurrent ops, ...) and
 * ops_ew2.c (comparisons, logic, rounding, quantisation, ...). */
typedef struct loom_op_set {
    const loom_op_def *const *ops;
    size_t count;
} loom_op_set;
extern const loom_op_set loom_ops_nn2;
extern const loom_op_set loom_ops_ew2;

/* ---- dtype sets --------------------------------------------------------------------------
 * Bit masks over loom_dtype values (all below 32), so that one call checks "is one of". */
#define LOOM_DTS(d) (1u << (unsigned)(d))
#define LOOM_DTS_FLOAT                                                                       \
    (LOOM_DTS(LOOM_DTYPE_F32) | LOOM_DTS(LOOM_DTYPE_F16) | LOOM_DTS(LOOM_DTYPE_BF16))
#define LOOM_DTS_INDEX (LOOM_DTS(LOOM_DTYPE_I32) | LOOM_DTS(LOOM_DTYPE_I64))
/* Signed arithmetic: what Neg and Abs accept. */
#define LOOM_DTS_SIGNED (LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_I8) | LOOM_DTS_INDEX)
/* Arithmetic: Add, Sub, Mul, Div, Min, Max, Clip. */
#define LOOM_DTS_ARITH (LOOM_DTS_SIGNED | LOOM_DTS(LOOM_DTYPE_U8))
/* Every dtype Loom knows: Cast, Identity and the layout ops. */
#define LOOM_DTS_ALL (LOOM_DTS_ARITH | LOOM_DTS(LOOM_DTYPE_BOOL))

/* ---- helpers for infer() (ops_common.c) ----------------------------------------------------- */

/* Whether input IDX was given (exists and is not an absent optional input). */
int loom_ops_has(const loom_infer_ctx *ctx, uint32_t idx);
/* Fail unless input IDX (called WHAT in messages, e.g. "X") was given. */
loom_status loom_ops_require(loom_infer_ctx *ctx, uint32_t idx, const char *what);
/* Fail unless input IDX's dtype is in the set MASK (LOOM_DTS_*). */
loom_status loom_ops_check_dtype(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                                 uint32_t mask);
/* Fail unless input IDX has the dtype of input REF. */
loom_status loom_ops_same_dtype(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                                uint32_t ref);
/* Resolve AXIS against RANK: valid values are -RANK..RANK-1 (ONNX), the result is
 * non-negative. WHAT names the attribute or input in messages ("axis", "axes"). */
loom_status loom_ops_axis(loom_infer_ctx *ctx, const char *what, int64_t axis, int64_t rank,
                          int64_t *out);
/* Read constant 1-D (or scalar) int64/int32 input IDX into OUT[CAP]; *COUNT gets its length.
 * Fails when the input is not a constant ("input 1 (shape) must be a constant"), has another
 * dtype or rank, or holds more than CAP values. */
loom_status loom_ops_const_ints(loom_infer_ctx *ctx, uint32_t idx, const char *what, size_t cap,
                                int64_t *out, size_t *count);
/* Write output IDX: dtype, rank and dims (unused dims zeroed). */
void loom_ops_set_output(loom_infer_ctx *ctx, uint32_t idx, loom_dtype dtype, uint32_t rank,
                         const int64_t *dims);
/* Remove every attribute whose name is not in the NULL-terminated KEEP list: the last step of
 * canonicalisation, so that a node carries exactly the attributes graph/ops.h lists. */
void loom_ops_keep_only(loom_infer_ctx *ctx, const char *const *keep);
/* The last step of every infer(): fails when an output's element count (or its size in bytes)
 * overflows, so that no later stage multiplies dims unchecked. */
loom_status loom_ops_finish(loom_infer_ctx *ctx);
/* Value of one element of a constant of DTYPE at DATA, as a float (f16/bf16 converted). */
float loom_ops_scalar_to_float(loom_dtype dtype, const void *data);

/* ---- helpers for cost() --------------------------------------------------------------------- */

/* A multiply-add counts 2 FLOPs. Transcendental functions (exp, log, tanh, erf, sqrt, pow) have
 * no single cost across devices; the cost model counts each as this many FLOPs per element,
 * the order of a vectorised polynomial approximation. */
#define LOOM_FLOPS_TRANSCENDENTAL 4.0

/* Elements of DESC (0 for an absent input), as a double: costs never need exact integers. */
double loom_ops_numel(const loom_tensor_desc *desc);
/* Bytes of all present inputs into cost->bytes_read and of all outputs into bytes_written;
 * flops set to 0. Every op's cost starts here. */
void loom_ops_cost_io(const loom_node_desc *node, loom_op_cost *cost);

#endif /* LOOM_GRAPH_OPS_DEFS_H */
