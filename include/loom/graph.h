/*
 * Building operator graphs in C: tensors (graph inputs, constants, the values operators produce),
 * one builder call per operator plus a generic loom_graph_op for any registered operator, and
 * validation. A graph is built once, checked once (loom_graph_check), then planned and run
 * through loom/runtime.h.
 *
 * Errors are sticky, as in a stream: the first failing builder call records its error, and
 * every later builder call on the same graph does nothing and returns LOOM_NO_VALUE, so a
 * program can build a whole graph and check once at the end. loom_graph_check() returns the
 * first error, with the node's name in loom_last_error().
 *
 * A graph is not thread-safe while it is being built; once checked it is read-only and may be
 * planned from several threads. A call that would change a checked graph (a builder, loom_input,
 * loom_output, a rename, loom_graph_replace_uses, loom_graph_set_folding) fails with
 * LOOM_ERR_INVALID_ARGUMENT ("... is read-only") and changes nothing: the graph keeps no error
 * from it and stays checked and plannable.
 *
 * Every call that returns a loom_status, and every builder call (those returning a new
 * loom_value), clears the thread's loom_last_error() when it succeeds.
 */
#ifndef LOOM_GRAPH_H
#define LOOM_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "core.h" /* loom_status, loom_dtype, last error, host tensors */

#ifdef __cplusplus
extern "C" {
#endif

/* A value of a graph: an input, a constant or an operator's output. An opaque non-negative
 * integer handle, valid only with the graph that made it: it carries a tag of its graph, and a
 * call given another graph's handle fails (sticky for builders) with LOOM_ERR_INVALID_ARGUMENT
 * naming the graph, even when a value of the same position exists. Handles compare equal only
 * within one graph; do not do arithmetic on them. A graph holds at most 2^24 - 1 values. */
typedef int32_t loom_value;
#define LOOM_NO_VALUE ((loom_value)-1)

typedef struct loom_graph loom_graph; /* opaque */

/* Create an empty graph; NAME (may be NULL) is copied. Returns NULL only when out of memory.
 * Free with loom_graph_destroy. */
loom_graph *loom_graph_create(const char *name);

/* Free GRAPH and everything it owns. Constants borrowed with loom_constant_borrowed are not
 * freed. NULL is allowed. Plans made from the graph stay valid: they keep what they need. */
void loom_graph_destroy(loom_graph *graph);

/* Constant folding while building: when ENABLE is non-zero, a node whose inputs are all
 * constants (or whose result depends only on its inputs' shapes, like Shape) is evaluated at
 * once with the CPU reference kernels and becomes a constant instead of a node. Off by default
 * (the ONNX importer turns it on). Fails (sticky) when a folded node's kernel fails. */
loom_status loom_graph_set_folding(loom_graph *graph, int enable);

/* ---- tensors ---------------------------------------------------------------------------- */

/* Declare a graph input NAME (copied; must be unique in the graph) of DTYPE with RANK dims
 * (RANK <= LOOM_MAX_RANK, each dim >= 0). Inputs are passed to loom_plan_run in the order
 * they were declared. Fails (sticky) on a duplicate name, bad dtype or shape. */
loom_value loom_input(loom_graph *graph, const char *name, loom_dtype dtype, uint32_t rank,
                      const int64_t *dims);

/* Declare a graph input like loom_input, some of whose dims are SYMBOLIC: named unknown sizes
 * ("batch", "sequence") fixed only when the graph runs. DIMS[k] is a size >= 0 for a fixed dim,
 * or -1 for a symbolic one, whose name is DIM_NAMES[k] (1 to 63 letters, digits, '_', '.' or
 * '-'; copied). DIM_NAMES may be NULL when no dim is -1, and holds NULL for fixed dims. One name
 * used in several places (in one input or several) is one symbol: it must take the same value
 * everywhere in a run. A graph holds at most 16 symbols.
 * Shape inference carries symbols through every operator: each dim of every value is a constant,
 * an expression of the symbols (sums, products and floor divisions by constants: what Reshape,
 * Flatten, Concat, Slice, Conv and pooling compute; loom_value_dim_expr shows it) or, when no
 * such form fits, unknown until run time; loom_value_info reports -1 for every dim that is not
 * a constant. Symbols are independent unknowns: an operator that would require a symbolic dim
 * to equal a constant other than 1 (a MatMul's inner dim against a weight's), or to equal another
 * symbol (adding [batch] to [seq]), or to have one particular size, makes the builder call fail
 * (sticky, reported by loom_graph_check) with LOOM_ERR_INVALID_ARGUMENT and a message naming the
 * node and the symbols ("node 'mm' (MatMul): inner dimensions 'seq' and 3 differ ... (inputs: 'x'
 * [batch, seq], 'W' [3, 4]; ...)"). How: inference runs at three placeholder assignments of the
 * symbols (multiples of 5040: a Reshape needing a symbol to be a multiple of, say, 11 or 16
 * is refused as a contradiction). Nodes reading symbolic dims are never folded.
 * A checked graph with symbols is not planned by loom_plan_create (which refuses it, naming the
 * symbols): run it through loom_model_from_graph (loom/model.h), which makes a plan per input
 * shape. Fails (sticky) on a NULL name, a rank over LOOM_MAX_RANK, NULL dims, a dim < -1, a -1
 * without a name, a name given to a fixed dim, a bad name, a 17th symbol, and as loom_input. */
loom_value loom_input_symbolic(loom_graph *graph, const char *name, loom_dtype dtype,
                               uint32_t rank, const int64_t *dims, const char *const *dim_names);

/* Number of symbols of GRAPH (0 for NULL or a graph without symbolic inputs), and the name of
 * symbol I (owned by the graph; NULL when out of range), in order of first declaration. */
size_t loom_graph_symbol_count(const loom_graph *graph);
const char *loom_graph_symbol_name(const loom_graph *graph, size_t i);

/* Write the symbolic expression of dim AXIS of VALUE into BUF (CAP bytes, truncated to fit, NUL
 * terminated): a number for a known dim, else an expression of the symbols such as "batch",
 * "batch*seq", "seq+2" or "(seq-1)/2" ('/' is floor division), or "?" for a dim known only at
 * run time. Fails with LOOM_ERR_INVALID_ARGUMENT on a NULL graph or buffer, CAP 0, a handle the
 * graph does not have or an axis not below the value's rank. */
loom_status loom_value_dim_expr(const loom_graph *graph, loom_value value, uint32_t axis,
                                char *buf, size_t cap);

/* A constant tensor whose data (dense, C order) is COPIED into the graph. NAME may be NULL
 * (a name is made up). */
loom_value loom_constant(loom_graph *graph, const char *name, loom_dtype dtype, uint32_t rank,
                         const int64_t *dims, const void *data);

/* A constant whose data is BORROWED: the graph keeps the pointer, and the caller must keep the
 * data alive and unchanged until the graph AND every plan made from it are destroyed. Use it
 * for large weights that are already in memory (e.g. a mapped file). */
loom_value loom_constant_borrowed(loom_graph *graph, const char *name, loom_dtype dtype,
                                  uint32_t rank, const int64_t *dims, const void *data);

/* Convenience constants: a scalar f32, and a 1-D i64 vector of COUNT elements (copied). */
loom_value loom_constant_f32(loom_graph *graph, float value);
loom_value loom_constant_i64s(loom_graph *graph, size_t count, const int64_t *values);

/* Mark VALUE as a graph output named NAME (copied; NULL keeps the value's own name). Outputs
 * are returned by loom_plan_run in the order they were marked. A value may be an output once:
 * marking it again fails (sticky), naming the value, and does not rename it. NAME must not be
 * another value's name (value names are unique in a graph). */
loom_status loom_output(loom_graph *graph, loom_value value, const char *name);

/* Rename VALUE (its name appears in messages, traces and as an output file name). NAME is
 * copied; it must be non-empty and not the name of another value of the graph. Fails (sticky)
 * otherwise, naming both. */
loom_status loom_value_set_name(loom_graph *graph, loom_value value, const char *name);

/* Name the node that produced VALUE (the typed builders return only values; this is how their
 * nodes get names, e.g. for pins "node:NAME=DEVICE" in loom_plan_options). NAME is copied. Fails
 * (sticky) with LOOM_ERR_INVALID_ARGUMENT when NAME is NULL or empty, when another node of the
 * graph already has that name (names Loom made up included), when VALUE is a graph input or a
 * constant (a folded node is a constant), or when the graph is checked (without poisoning it).
 * Naming a node does not rename its output values. Takes time linear in the node count. */
loom_status loom_node_set_name(loom_graph *graph, loom_value value, const char *name);

/* Type and shape of VALUE, as inferred when the node producing it was added; a dim that
 * depends on symbols (loom_input_symbolic) is -1. Returns LOOM_ERR_INVALID_ARGUMENT for a handle
 * the graph does not have. RANK/DIMS may be NULL; DIMS must hold LOOM_MAX_RANK entries. */
loom_status loom_value_info(const loom_graph *graph, loom_value value, loom_dtype *dtype,
                            uint32_t *rank, int64_t *dims);

/* Name of VALUE (owned by the graph), or NULL for a bad handle. */
const char *loom_value_name(const loom_graph *graph, loom_value value);

/* The value named NAME, or LOOM_NO_VALUE. */
loom_value loom_graph_find_value(const loom_graph *graph, const char *name);

/* Graph surgery: make every node that reads OLD_VALUE read NEW_VALUE instead (both must have the
 * same dtype and shape). Fails (sticky) otherwise. Such rewiring can create a cycle, which
 * loom_graph_check reports. */
loom_status loom_graph_replace_uses(loom_graph *graph, loom_value old_value, loom_value new_value);

/* ---- the generic builder ------------------------------------------------------------------ */

/* Add a node running the registered operator OP_TYPE (ONNX spelling: "MatMul") on N_INPUTS
 * inputs (LOOM_NO_VALUE for an absent optional input), with N_ATTRS attributes (copied), making
 * N_OUTPUTS outputs whose handles are written to OUTPUTS. NODE_NAME may be NULL (a name is made
 * up from the op). Shapes and dtypes are inferred and checked now; the operator's attributes are
 * canonicalised (defaults filled in). Fails (sticky) on an unknown op, wrong arity, a bad
 * attribute, or mismatched dtypes or shapes; the message names the node and the op. */
loom_status loom_graph_op(loom_graph *graph, const char *op_type, const char *node_name,
                          const loom_value *inputs, size_t n_inputs, const loom_attr *attrs,
                          size_t n_attrs, loom_value *outputs, size_t n_outputs);

/* Attribute constructors for loom_graph_op: they only fill the struct; nothing is copied until
 * loom_graph_op copies it. */
loom_attr loom_attr_int(const char *name, int64_t value);
loom_attr loom_attr_float(const char *name, float value);
loom_attr loom_attr_string(const char *name, const char *value);
loom_attr loom_attr_ints(const char *name, size_t count, const int64_t *values);
loom_attr loom_attr_floats(const char *name, size_t count, const float *values);

/* ---- one builder per operator ---------------------------------------------------------------
 * Each adds one node and returns its (first) output, or LOOM_NO_VALUE after an error (sticky).
 * Semantics follow ONNX opset 18. Arrays are copied. */

loom_value loom_matmul(loom_graph *g, loom_value a, loom_value b);
/* Y = alpha * op(A) * op(B) + beta * C; C may be LOOM_NO_VALUE. */
loom_value loom_gemm(loom_graph *g, loom_value a, loom_value b, loom_value c, float alpha,
                     float beta, int trans_a, int trans_b);

/* Parameters of Conv and the pooling ops; zero-initialise and set what differs from ONNX's
 * defaults. Arrays hold one entry per spatial dimension (pads: begins then ends); a count of 0
 * means the default (strides and dilations 1, pads 0, kernel shape from the weights). */
typedef struct loom_window_params {
    size_t n_spatial;             /* number of spatial dims the arrays below describe, or 0 */
    int64_t kernel_shape[3];      /* pooling only */
    int64_t strides[3];
    int64_t dilations[3];
    int64_t pads[6];
    const char *auto_pad;         /* NULL, "NOTSET", "SAME_UPPER", "SAME_LOWER" or "VALID" */
    int64_t group;                /* Conv: 0 means 1 */
    int ceil_mode;                /* pooling */
    int count_include_pad;        /* AveragePool */
} loom_window_params;

/* X: [N, C, spatial...]; W: [M, C/group, kernel...]; B (optional): [M]. 1-D and 2-D. */
loom_value loom_conv(loom_graph *g, loom_value x, loom_value w, loom_value b,
                     const loom_window_params *params);
loom_value loom_max_pool(loom_graph *g, loom_value x, const loom_window_params *params);
loom_value loom_average_pool(loom_graph *g, loom_value x, const loom_window_params *params);
loom_value loom_global_average_pool(loom_graph *g, loom_value x);

loom_value loom_relu(loom_graph *g, loom_value x);
loom_value loom_leaky_relu(loom_graph *g, loom_value x, float alpha);
loom_value loom_sigmoid(loom_graph *g, loom_value x);
loom_value loom_tanh(loom_graph *g, loom_value x);
loom_value loom_erf(loom_graph *g, loom_value x);
/* APPROXIMATE is "none" (exact, erf-based) or "tanh"; NULL means "none". */
loom_value loom_gelu(loom_graph *g, loom_value x, const char *approximate);
loom_value loom_sqrt(loom_graph *g, loom_value x);
loom_value loom_exp(loom_graph *g, loom_value x);
loom_value loom_log(loom_graph *g, loom_value x);
loom_value loom_neg(loom_graph *g, loom_value x);
loom_value loom_abs(loom_graph *g, loom_value x);
loom_value loom_identity(loom_graph *g, loom_value x);
/* Clamp to [lo, hi]; pass -INFINITY / INFINITY for an open side. */
loom_value loom_clip(loom_graph *g, loom_value x, float lo, float hi);

/* Binary operators with ONNX (numpy) broadcasting. */
loom_value loom_add(loom_graph *g, loom_value a, loom_value b);
loom_value loom_sub(loom_graph *g, loom_value a, loom_value b);
loom_value loom_mul(loom_graph *g, loom_value a, loom_value b);
loom_value loom_div(loom_graph *g, loom_value a, loom_value b);
loom_value loom_pow(loom_graph *g, loom_value a, loom_value b);
loom_value loom_min(loom_graph *g, loom_value a, loom_value b);
loom_value loom_max(loom_graph *g, loom_value a, loom_value b);
/* COND (bool) ? A : B, all three broadcast together. */
loom_value loom_where(loom_graph *g, loom_value cond, loom_value a, loom_value b);

loom_value loom_softmax(loom_graph *g, loom_value x, int64_t axis);
/* SCALE and BIAS (optional) have the shape of X's dims from AXIS on. */
loom_value loom_layer_norm(loom_graph *g, loom_value x, loom_value scale, loom_value bias,
                           int64_t axis, float epsilon);
/* Inference form: per-channel SCALE, BIAS, MEAN, VAR of shape [C]. */
loom_value loom_batch_norm(loom_graph *g, loom_value x, loom_value scale, loom_value bias,
                           loom_value mean, loom_value var, float epsilon);

/* Mixture of Experts, as ONNX Runtime's com.microsoft MoE: X [tokens, hidden] (or [batch, seq,
 * hidden]); ROUTER_LOGITS [tokens, num_experts] (softmax is taken here); FC1_W [num_experts,
 * inter, hidden] and FC2_W [num_experts, hidden, inter] (each expert's weights as PyTorch's
 * nn.Linear stores them); FC1_B [num_experts, inter] and FC2_B [num_experts, hidden] optional
 * (LOOM_NO_VALUE). Each token goes to the K experts of highest probability and Y[t] =
 * sum_j p_j * (FC2_j act(FC1_j x[t] + b1_j) + b2_j), Y shaped as X. ACTIVATION is "relu" (NULL),
 * "gelu" (tanh approximation), "silu" or "identity". Only the routed tokens are computed.
 * Renormalised routing weights (normalize_routing_weights) and Mixtral's gated FFN (fc3) are
 * attributes/inputs of loom_graph_op(g, "MoE", ...). A K outside [1, num_experts], expert
 * weights whose shapes disagree or another activation fail the graph (the sticky error names
 * the node and the problem). The output value belongs to G. */
loom_value loom_moe(loom_graph *g, loom_value x, loom_value router_logits, loom_value fc1_w,
                    loom_value fc1_b, loom_value fc2_w, loom_value fc2_b, int64_t k,
                    const char *activation);

/* Shape may hold one -1 (inferred) and 0s (copy the input's dim). */
loom_value loom_reshape(loom_graph *g, loom_value x, size_t rank, const int64_t *shape);
/* PERM of RANK(x) entries; NULL reverses the dims. */
loom_value loom_transpose(loom_graph *g, loom_value x, const int64_t *perm);
loom_value loom_flatten(loom_graph *g, loom_value x, int64_t axis);
loom_value loom_concat(loom_graph *g, const loom_value *xs, size_t n, int64_t axis);
/* Split X along AXIS into N parts of SIZES (NULL: equal parts); writes N handles to OUTS. */
loom_status loom_split(loom_graph *g, loom_value x, int64_t axis, size_t n, const int64_t *sizes,
                       loom_value *outs);
/* AXES and STEPS may be NULL (all leading axes; steps of 1). */
loom_value loom_slice(loom_graph *g, loom_value x, size_t n, const int64_t *starts,
                      const int64_t *ends, const int64_t *axes, const int64_t *steps);
loom_value loom_gather(loom_graph *g, loom_value data, loom_value indices, int64_t axis);
/* AXES may be NULL with N = 0 (squeeze every dim of size 1). */
loom_value loom_squeeze(loom_graph *g, loom_value x, size_t n, const int64_t *axes);
loom_value loom_unsqueeze(loom_graph *g, loom_value x, size_t n, const int64_t *axes);
loom_value loom_expand(loom_graph *g, loom_value x, size_t rank, const int64_t *shape);
loom_value loom_cast(loom_graph *g, loom_value x, loom_dtype to);

/* Reductions over AXES (N of them; N = 0 reduces over every axis). */
loom_value loom_reduce_mean(loom_graph *g, loom_value x, size_t n, const int64_t *axes,
                            int keepdims);
loom_value loom_reduce_sum(loom_graph *g, loom_value x, size_t n, const int64_t *axes,
                           int keepdims);
loom_value loom_reduce_max(loom_graph *g, loom_value x, size_t n, const int64_t *axes,
                           int keepdims);

/* ---- checking and inspecting ------------------------------------------------------------- */

/* Validate the whole graph: reports the first sticky builder error if there was one; otherwise
 * checks that it has outputs, that every node input is defined, that there are no cycles, and
 * that no value is left unused (a computed value that is neither consumed nor an output, or an
 * input that nothing reads). Returns LOOM_OK, or the error with a message naming the node or
 * value. Marks the graph read-only on success: later builder calls fail. */
loom_status loom_graph_check(loom_graph *graph);

/* Number of nodes, inputs and outputs of GRAPH; 0 for a NULL graph. */
size_t loom_graph_node_count(const loom_graph *graph);
size_t loom_graph_input_count(const loom_graph *graph);
size_t loom_graph_output_count(const loom_graph *graph);
/* Handle of the I-th graph input / output, or LOOM_NO_VALUE when out of range. */
loom_value loom_graph_input(const loom_graph *graph, size_t i);
loom_value loom_graph_output(const loom_graph *graph, size_t i);

/* ---- walking the nodes ----------------------------------------------------------------------
 * Nodes are numbered 0 .. loom_graph_node_count() - 1 in the order they were added: a
 * topological order unless loom_graph_replace_uses pointed a node at a later value. Nodes folded
 * into constants (loom_graph_set_folding) are not nodes. Adding a node appends, so indices already
 * seen stay valid. None of these calls fails or sets loom_last_error(): an index out of range
 * (or a NULL graph) gives NULL, 0 or LOOM_NO_VALUE, so a caller may probe. Read-only: safe from
 * several threads once the graph is checked. */

/* Name of node I (the NODE_NAME given to loom_graph_op, or one made up from the op), or NULL.
 * loom_graph_op does not check node names for uniqueness (ONNX models may repeat them);
 * loom_node_set_name does. Owned by the graph; valid until it is destroyed or the node renamed. */
const char *loom_graph_node_name(const loom_graph *graph, size_t i);

/* Operator of node I in ONNX spelling ("MatMul"), or NULL. A static string of the operator
 * registry: valid for the life of the program. */
const char *loom_graph_node_op(const loom_graph *graph, size_t i);

/* Number of input slots of node I, absent optional inputs included; 0 when I is out of range. */
size_t loom_graph_node_input_count(const loom_graph *graph, size_t i);

/* Number of outputs of node I; 0 when I is out of range. */
size_t loom_graph_node_output_count(const loom_graph *graph, size_t i);

/* Value read by input slot K of node I: a graph input, a constant or another node's output.
 * LOOM_NO_VALUE for an absent optional input (Gemm without C), and when I or K is out of range.
 * Use loom_value_name / loom_value_info on the result. */
loom_value loom_graph_node_input(const loom_graph *graph, size_t i, size_t k);

/* Value made by output K of node I, or LOOM_NO_VALUE when I or K is out of range. Every output
 * of a node is a distinct value that no other node produces. */
loom_value loom_graph_node_output(const loom_graph *graph, size_t i, size_t k);

/* Index of the node whose output VALUE is (as numbered by loom_graph_node_name), or -1 when
 * VALUE is a graph input, a constant, LOOM_NO_VALUE or out of range. Constant time. */
long loom_graph_value_producer(const loom_graph *graph, loom_value value);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_GRAPH_H */
