/*
 * The operator registry: for every operator Loom knows, its arity, shape and dtype inference,
 * attribute canonicalisation, and cost (FLOPs and bytes moved, the cost model's inputs).
 * Kernels live in the backends; the CPU backend is the reference.
 *
 * CANONICAL ATTRIBUTES. Inference fills in every default and resolves every axis, so that a
 * backend reads attributes without re-implementing ONNX's defaulting rules. After inference a
 * node carries exactly these attributes (all axes non-negative):
 *   Gemm                 alpha:f beta:f transA:i transB:i            (C broadcasts to [M,N])
 *   Conv                 kernel_shape:ints[S] strides:ints[S] dilations:ints[S] pads:ints[2S]
 *                        (begins then ends; auto_pad resolved into pads) group:i
 *   MaxPool              kernel_shape strides dilations pads (as Conv) ceil_mode:i
 *   AveragePool          kernel_shape strides dilations pads ceil_mode:i count_include_pad:i
 *   LeakyRelu            alpha:f
 *   Gelu                 approximate:s ("none" | "tanh")
 *   Clip                 min:f max:f (from constant inputs 1/2 when given, else -inf/+inf;
 *                        when input 1 or 2 is present but not constant the kernel reads it)
 *   Softmax              axis:i
 *   LayerNormalization   axis:i epsilon:f
 *   BatchNormalization   epsilon:f
 *   Reshape              shape:ints[rank(Y)] (the resolved output shape; input 1 is ignored)
 *   Transpose            perm:ints[rank]
 *   Flatten, Concat, Gather                   axis:i
 *   Split                axis:i split:ints[n_outputs] (sizes of every output)
 *   Slice                starts:ints[rank] steps:ints[rank] (for EVERY axis of the input; the
 *                        effective first index and step: Y[i...] = X[starts[d] + i_d*steps[d]];
 *                        inputs 1..4 are ignored by kernels)
 *   Squeeze, Unsqueeze   axes:ints (sorted; Unsqueeze's refer to the output's rank)
 *   ReduceMean/Sum/Max   axes:ints (sorted, unique; every axis when the node reduces all; empty
 *                        means identity, from noop_with_empty_axes=1) keepdims:i
 *   Cast                 to:i (a loom_dtype)
 *   Expand               (none; input 1 is ignored by kernels, the output shape says it all)
 *   MatMul, Relu, Sigmoid, Tanh, Erf, Add, Sub, Mul, Div, Pow, Sqrt, Exp, Log, Neg, Abs,
 *   Min, Max, Where, Identity, GlobalAveragePool: no attributes.
 * Unknown attributes are an error. Inputs that carry shapes or axes (Reshape's shape, Slice's
 * starts/ends/axes/steps, Split's split, Squeeze/Unsqueeze/Reduce* axes, Expand's shape) must be
 * constants of the graph.
 */
#ifndef LOOM_GRAPH_OPS_H
#define LOOM_GRAPH_OPS_H

#include <loom/backend.h>

#include "core/core_internal.h"

#include <stddef.h>

/* Work of one node, for the cost model. */
typedef struct loom_op_cost {
    double flops;         /* arithmetic operations (a multiply-add counts 2) */
    double bytes_read;    /* bytes of inputs read, each input counted once */
    double bytes_written; /* bytes of outputs written */
} loom_op_cost;

/* The state inference works on. The registry's caller fills the inputs and the user's
 * attributes; infer() checks them, canonicalises the attributes through loom_infer_set_*,
 * and fills the outputs' dtype and shape. */
typedef struct loom_infer_ctx {
    const char *node_name;
    uint32_t n_inputs;            /* as given, absent optional inputs included */
    const loom_tensor_desc *inputs;  /* absent optional inputs: dtype LOOM_DTYPE_UNDEFINED */
    const void *const *input_constants; /* data of constant inputs, else NULL */
    uint32_t n_outputs;
    loom_tensor_desc *outputs;    /* to fill */
    struct loom_attr_list *attrs; /* the node's attributes: read, then canonicalise */
    char *err;                    /* message on failure, without the node's name prefix */
    size_t err_len;
    /* Set by infer() when it failed because an input must be a constant and is not: 1 + that
     * input's index (0: not that reason). The graph records which value it was
     * (loom_graph.need_constant), so that a caller can bind it and try again. */
    uint32_t need_constant;
    /* Set only by loom_op_input0_dtypes: where loom_ops_check_dtype records the set it checks
     * input 0 against (and then stops inference). NULL otherwise. */
    uint32_t *probe_input0;
} loom_infer_ctx;

typedef struct loom_op_def {
    loom_op_id id;
    const char *name;             /* ONNX spelling */
    uint32_t min_inputs, max_inputs;   /* max UINT32_MAX: variadic */
    uint32_t min_outputs, max_outputs;
    /* Check inputs and attributes, canonicalise, fill outputs. Returns LOOM_OK or an error with
     * ctx->err set (e.g. "inner dimensions 512 and 256 differ"). */
    loom_status (*infer)(loom_infer_ctx *ctx);
    /* Work of a node whose descriptor has gone through infer(). */
    void (*cost)(const loom_node_desc *node, loom_op_cost *cost);
    /* LOOM_OPF_* bits. */
    unsigned flags;
} loom_op_def;

/* The op's outputs depend only on its inputs' types and shapes, never on their data (Shape):
 * such a node can always be evaluated while the graph is built, when folding is on. */
#define LOOM_OPF_SHAPE_ONLY 1u
/* Never fold this op even when all its inputs are constants (e.g. random generators). */
#define LOOM_OPF_NO_FOLD 2u
/* The op's output SHAPE depends on its input VALUES (NonZero, Compress, Unique,
 * NonMaxSuppression): inference gives an upper bound, the kernel reports the actual shape, and
 * only loom_model runs such nodes (in stages split at them; graph/ops_value_dependent.c). */
#define LOOM_OPF_VALUE_DEPENDENT 4u

/* The operator named NAME (ONNX spelling, case-sensitive), or NULL. */
const loom_op_def *loom_op_find(const char *name);
/* The operator with id ID, or NULL. */
const loom_op_def *loom_op_get(loom_op_id id);
/* Number of registered operators, and the I-th (for listings and conformance runs). */
size_t loom_op_count(void);
const loom_op_def *loom_op_at(size_t i);

/* The domain a model names DEF in: "ai.onnx"; "com.microsoft" (MoE); "loom" for the operators
 * Loom's own passes make (FusedConv, FusedMatMul, FusedGemm, MatMulInt8Dynamic), which no
 * model needs to name. */
const char *loom_op_domain(const loom_op_def *def);
/* The dtypes (LOOM_DTS_* bits over loom_dtype) inference accepts for input 0, as its own
 * dtype check says: DEF's infer() runs on placeholder inputs until it checks input 0's dtype.
 * 0 when inference does not check input 0 through loom_ops_check_dtype before something else
 * stops it (a required attribute, a constant it must read, a check written out by hand). */
uint32_t loom_op_input0_dtypes(const loom_op_def *def);

/* ---- the attribute list inference works on ------------------------------------------------ */

/* A growable list of attributes that owns copies of its names, strings and arrays. */
typedef struct loom_attr_list {
    loom_attr *items;
    size_t count, capacity;
} loom_attr_list;

/* Copy N attributes into an empty LIST. Returns LOOM_ERR_INVALID_ARGUMENT (message in ERR) for a
 * duplicate or unnamed attribute, LOOM_ERR_OUT_OF_MEMORY. */
loom_status loom_attr_list_init(loom_attr_list *list, const loom_attr *attrs, size_t n, char *err,
                                size_t err_len);
void loom_attr_list_free(loom_attr_list *list);
const loom_attr *loom_attr_list_get(const loom_attr_list *list, const char *name);

/* Getters for infer(): return the attribute's value when present with the right kind, else
 * DEFAULT_VALUE; a present attribute of the wrong kind is reported by loom_infer_check_attrs. */
int64_t loom_infer_get_int(const loom_infer_ctx *ctx, const char *name, int64_t default_value);
float loom_infer_get_float(const loom_infer_ctx *ctx, const char *name, float default_value);
const char *loom_infer_get_string(const loom_infer_ctx *ctx, const char *name,
                                  const char *default_value);
/* The ints of attribute NAME into *VALUES (borrowed from the list) and their count; returns 0
 * when absent. */
size_t loom_infer_get_ints(const loom_infer_ctx *ctx, const char *name, const int64_t **values);

/* Setters (add or replace). Return LOOM_ERR_OUT_OF_MEMORY on allocation failure. */
loom_status loom_infer_set_int(loom_infer_ctx *ctx, const char *name, int64_t value);
loom_status loom_infer_set_float(loom_infer_ctx *ctx, const char *name, float value);
loom_status loom_infer_set_string(loom_infer_ctx *ctx, const char *name, const char *value);
loom_status loom_infer_set_ints(loom_infer_ctx *ctx, const char *name, size_t count,
                                const int64_t *values);
/* Remove attribute NAME if present. */
void loom_infer_remove(loom_infer_ctx *ctx, const char *name);

/* Fail with a message unless every attribute of the node is one of the NULL-terminated NAMES
 * with the matching kind in KINDS. */
loom_status loom_infer_check_attrs(loom_infer_ctx *ctx, const char *const *names,
                                   const loom_attr_kind *kinds);

/* Format a message into ctx->err and return STATUS. */
loom_status loom_infer_fail(loom_infer_ctx *ctx, loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ONNX multidirectional broadcasting of A and B into OUT. Returns 0 when incompatible. */
int loom_broadcast_shapes(const loom_tensor_desc *a, const loom_tensor_desc *b,
                          loom_tensor_desc *out);

#endif /* LOOM_GRAPH_OPS_H */
