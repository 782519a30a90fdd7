/*
 * Inside the operator registry: the definition each op family file (graph/ops_<family>.c)
 * exports for the table in ops_registry.c, and the helpers those files share (input checks,
 * constant shape-like inputs, axis resolution, cost accounting; ops_infer_util.c).
 * Not a public header; only graph/ops_*.c include it.
 */
#ifndef LOOM_GRAPH_OPS_DEFS_H
#define LOOM_GRAPH_OPS_DEFS_H

#include "ops.h"

#include <stddef.h>
#include <stdint.h>

/* ---- the operators, one object each, by family file ------------------------------------------
 * The registry (ops_registry.c) lists them all; each family file defines its own. */
/* (ops_activations.c) */
extern const loom_op_def loom_op_def_relu;
extern const loom_op_def loom_op_def_leaky_relu;
extern const loom_op_def loom_op_def_sigmoid;
extern const loom_op_def loom_op_def_tanh;
extern const loom_op_def loom_op_def_gelu;
extern const loom_op_def loom_op_def_hard_sigmoid;
extern const loom_op_def loom_op_def_hard_swish;
extern const loom_op_def loom_op_def_softplus;
extern const loom_op_def loom_op_def_elu;
extern const loom_op_def loom_op_def_selu;
extern const loom_op_def loom_op_def_prelu;
extern const loom_op_def loom_op_def_softmax;
extern const loom_op_def loom_op_def_log_softmax;

/* (ops_elementwise.c) */
extern const loom_op_def loom_op_def_add;
extern const loom_op_def loom_op_def_sub;
extern const loom_op_def loom_op_def_mul;
extern const loom_op_def loom_op_def_div;
extern const loom_op_def loom_op_def_pow;
extern const loom_op_def loom_op_def_sqrt;
extern const loom_op_def loom_op_def_exp;
extern const loom_op_def loom_op_def_log;
extern const loom_op_def loom_op_def_erf;
extern const loom_op_def loom_op_def_neg;
extern const loom_op_def loom_op_def_abs;
extern const loom_op_def loom_op_def_sign;
extern const loom_op_def loom_op_def_reciprocal;
extern const loom_op_def loom_op_def_floor;
extern const loom_op_def loom_op_def_ceil;
extern const loom_op_def loom_op_def_round;
extern const loom_op_def loom_op_def_sin;
extern const loom_op_def loom_op_def_cos;
extern const loom_op_def loom_op_def_min;
extern const loom_op_def loom_op_def_max;
extern const loom_op_def loom_op_def_sum;
extern const loom_op_def loom_op_def_mean;
extern const loom_op_def loom_op_def_clip;
extern const loom_op_def loom_op_def_cast;
extern const loom_op_def loom_op_def_identity;
extern const loom_op_def loom_op_def_dropout;

/* (ops_compare_logic.c) */
extern const loom_op_def loom_op_def_equal;
extern const loom_op_def loom_op_def_less;
extern const loom_op_def loom_op_def_greater;
extern const loom_op_def loom_op_def_less_or_equal;
extern const loom_op_def loom_op_def_greater_or_equal;
extern const loom_op_def loom_op_def_and;
extern const loom_op_def loom_op_def_or;
extern const loom_op_def loom_op_def_xor;
extern const loom_op_def loom_op_def_not;
extern const loom_op_def loom_op_def_where;

/* (ops_reductions.c) */
extern const loom_op_def loom_op_def_reduce_mean;
extern const loom_op_def loom_op_def_reduce_sum;
extern const loom_op_def loom_op_def_reduce_max;
extern const loom_op_def loom_op_def_reduce_min;
extern const loom_op_def loom_op_def_reduce_prod;
extern const loom_op_def loom_op_def_arg_max;
extern const loom_op_def loom_op_def_arg_min;
extern const loom_op_def loom_op_def_reduce_l1;
extern const loom_op_def loom_op_def_reduce_l2;
extern const loom_op_def loom_op_def_reduce_log_sum;
extern const loom_op_def loom_op_def_reduce_log_sum_exp;
extern const loom_op_def loom_op_def_reduce_sum_square;

/* (ops_loss.c) */
extern const loom_op_def loom_op_def_nll_loss;
extern const loom_op_def loom_op_def_softmax_cross_entropy_loss;

/* (ops_math.c) */
extern const loom_op_def loom_op_def_tan;
extern const loom_op_def loom_op_def_asin;
extern const loom_op_def loom_op_def_acos;
extern const loom_op_def loom_op_def_atan;
extern const loom_op_def loom_op_def_sinh;
extern const loom_op_def loom_op_def_cosh;
extern const loom_op_def loom_op_def_asinh;
extern const loom_op_def loom_op_def_acosh;
extern const loom_op_def loom_op_def_atanh;
extern const loom_op_def loom_op_def_softsign;
extern const loom_op_def loom_op_def_thresholded_relu;
extern const loom_op_def loom_op_def_shrink;
extern const loom_op_def loom_op_def_celu;
extern const loom_op_def loom_op_def_isnan;
extern const loom_op_def loom_op_def_isinf;
extern const loom_op_def loom_op_def_mod;
extern const loom_op_def loom_op_def_bitshift;

/* (ops_tensor.c) */
extern const loom_op_def loom_op_def_trilu;
extern const loom_op_def loom_op_def_cumsum;
extern const loom_op_def loom_op_def_hardmax;
extern const loom_op_def loom_op_def_depth_to_space;
extern const loom_op_def loom_op_def_space_to_depth;
extern const loom_op_def loom_op_def_eyelike;
extern const loom_op_def loom_op_def_onehot;
extern const loom_op_def loom_op_def_gather_nd;
extern const loom_op_def loom_op_def_scatter_nd;

/* (ops_value_dependent.c) */
extern const loom_op_def loom_op_def_non_zero;
extern const loom_op_def loom_op_def_compress;
extern const loom_op_def loom_op_def_unique;
extern const loom_op_def loom_op_def_non_max_suppression;

/* (ops_sampling.c) */
extern const loom_op_def loom_op_def_grid_sample;
extern const loom_op_def loom_op_def_rnn;
extern const loom_op_def loom_op_def_global_max_pool;
extern const loom_op_def loom_op_def_lrn;
extern const loom_op_def loom_op_def_max_unpool;
extern const loom_op_def loom_op_def_mean_variance_normalization;
extern const loom_op_def loom_op_def_det;
extern const loom_op_def loom_op_def_reverse_sequence;
extern const loom_op_def loom_op_def_hann_window;
extern const loom_op_def loom_op_def_hamming_window;
extern const loom_op_def loom_op_def_blackman_window;
extern const loom_op_def loom_op_def_roi_align;

/* (ops_normalization.c) */
extern const loom_op_def loom_op_def_layer_normalization;
extern const loom_op_def loom_op_def_batch_normalization;
extern const loom_op_def loom_op_def_instance_norm;

/* (ops_linalg.c) */
extern const loom_op_def loom_op_def_matmul;
extern const loom_op_def loom_op_def_gemm;
extern const loom_op_def loom_op_def_einsum;

/* (ops_conv_pool.c) */
extern const loom_op_def loom_op_def_conv;
extern const loom_op_def loom_op_def_conv_transpose;
extern const loom_op_def loom_op_def_max_pool;
extern const loom_op_def loom_op_def_average_pool;
extern const loom_op_def loom_op_def_global_average_pool;

/* (ops_layout.c) */
extern const loom_op_def loom_op_def_reshape;
extern const loom_op_def loom_op_def_transpose;
extern const loom_op_def loom_op_def_flatten;
extern const loom_op_def loom_op_def_concat;
extern const loom_op_def loom_op_def_split;
extern const loom_op_def loom_op_def_slice;
extern const loom_op_def loom_op_def_squeeze;
extern const loom_op_def loom_op_def_unsqueeze;
extern const loom_op_def loom_op_def_expand;
extern const loom_op_def loom_op_def_pad;
extern const loom_op_def loom_op_def_tile;

/* (ops_resize.c) */
extern const loom_op_def loom_op_def_resize;

/* (ops_indexing.c) */
extern const loom_op_def loom_op_def_gather;
extern const loom_op_def loom_op_def_gather_elements;
extern const loom_op_def loom_op_def_scatter_elements;
extern const loom_op_def loom_op_def_top_k;

/* (ops_quantization.c) */
extern const loom_op_def loom_op_def_quantize;
extern const loom_op_def loom_op_def_dequantize;
extern const loom_op_def loom_op_def_matmul_integer;
extern const loom_op_def loom_op_def_matmul_int8_dynamic;
extern const loom_op_def loom_op_def_dynamic_quantize;
extern const loom_op_def loom_op_def_qlinear_matmul;
extern const loom_op_def loom_op_def_qlinear_conv;
extern const loom_op_def loom_op_def_conv_integer;

/* (ops_moe.c) */
extern const loom_op_def loom_op_def_moe;
extern const loom_op_def loom_op_def_moe_route;
extern const loom_op_def loom_op_def_moe_expert;

/* (ops_fused.c) */
extern const loom_op_def loom_op_def_fused_conv;
extern const loom_op_def loom_op_def_fused_matmul;
extern const loom_op_def loom_op_def_fused_gemm;

/* (ops_recurrent.c) */
extern const loom_op_def loom_op_def_lstm;
extern const loom_op_def loom_op_def_gru;

/* (ops_generators.c) */
extern const loom_op_def loom_op_def_shape;
extern const loom_op_def loom_op_def_constant_of_shape;
extern const loom_op_def loom_op_def_range;

/* Define operator VAR (the registry's loom_op_def_<name>) with the fields of loom_op_def. */
#define LOOM_OPS_DEF(var, opid, onnx, in_min, in_max, out_min, out_max, inf, cst, fl)             \
    const loom_op_def var = {.id = opid,                                                          \
                             .name = onnx,                                                        \
                             .min_inputs = in_min,                                                \
                             .max_inputs = in_max,                                                \
                             .min_outputs = out_min,                                              \
                             .max_outputs = out_max,                                              \
                             .infer = inf,                                                        \
                             .cost = cst,                                                         \
                             .flags = fl}

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
/* The wider integers and float64 (issue 13): storage everywhere, arithmetic where an op's
 * mask names them. */
#define LOOM_DTS_UNSIGNED                                                                    \
    (LOOM_DTS(LOOM_DTYPE_U8) | LOOM_DTS(LOOM_DTYPE_U16) | LOOM_DTS(LOOM_DTYPE_U32) |          \
     LOOM_DTS(LOOM_DTYPE_U64))
#define LOOM_DTS_WIDE                                                                        \
    (LOOM_DTS(LOOM_DTYPE_I16) | LOOM_DTS(LOOM_DTYPE_U16) | LOOM_DTS(LOOM_DTYPE_U32) |         \
     LOOM_DTS(LOOM_DTYPE_U64) | LOOM_DTS(LOOM_DTYPE_F64))
/* Every dtype Loom knows: Cast, Identity and the layout ops. */
#define LOOM_DTS_ALL (LOOM_DTS_ARITH | LOOM_DTS(LOOM_DTYPE_BOOL) | LOOM_DTS_WIDE)

/* ---- helpers for infer() (ops_infer_util.c) ----------------------------------------------------- */

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
/* Read attribute 'epsilon' (DEFAULT_VALUE when absent) into *EPS and canonicalise it; fails
 * with LOOM_ERR_INVALID_ARGUMENT when it is negative, NaN or infinite (the normalisations add it
 * to a variance before a square root). */
loom_status loom_ops_epsilon(loom_infer_ctx *ctx, float default_value, float *eps);
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

/* Cost of an op doing FLOPS work per output element (bytes from loom_ops_cost_io). */
void loom_ops_cost_per_output(const loom_node_desc *node, loom_op_cost *cost, double flops);

/* Output 0 takes input 0 ("X")'s dtype and shape; X's dtype must be in MASK. Attributes are the
 * caller's to check. */
loom_status loom_ops_unary_shape(loom_infer_ctx *ctx, uint32_t mask);

/* A unary op without attributes: loom_ops_unary_shape, then loom_ops_finish. */
loom_status loom_ops_unary_no_attrs(loom_infer_ctx *ctx, uint32_t mask);

#endif /* LOOM_GRAPH_OPS_DEFS_H */
