/*
 * Graph passes and the pipeline that runs them. A pass takes a checked graph and either leaves
 * it as it is or returns a new, checked graph that replaces it; it reports what it changed in one
 * line. The pipeline runs them in a fixed, documented order (docs/architecture.md):
 *
 *   validate -> fold_constants -> fuse_qdq -> fuse_quantized_matmul -> quantize_int8_dynamic ->
 *   fold_batchnorm -> fuse_epilogue -> split_moe_experts -> calibrate_int8 -> (later: specialise
 *   shapes)
 *
 * and the scheduler then places the result, inserts copies and plans memory. Passes see the
 * graph layer only; what they must evaluate (folding, calibration) goes through the evaluator
 * the scheduler hands in (graph_eval_fn: the CPU reference kernels), never a backend directly.
 */
#ifndef LOOM_PASSES_H
#define LOOM_PASSES_H

#include "graph/graph_internal.h"

#include <loom/runtime.h>

/* What the pipeline's caller gives the passes, and what analysis passes leave for it. */
typedef struct pass_ctx {
    graph_eval_fn eval;                  /* reference evaluator; NULL: nothing is evaluated */
    int fold;                            /* run fold_constants */
    /* quantize_int8_dynamic: on/off, and nodes (by name) that stay float (borrowed). */
    int quantize_int8_dynamic;
    const char *const *keep_float;
    size_t n_keep_float;
    /* fuse_epilogue: on/off (the plan turns it on when the CPU can take the fused nodes), and
     * when off, why, for the pass's summary ("" : no CPU among the devices the plan may use). */
    int fuse_epilogue;
    char fuse_epilogue_off[120];
    /* quantize_int8_dynamic, fuse_quantized_matmul: the CPU may take MatMulInt8Dynamic nodes
     * with a bias Add and an activation fused in (set with fuse_epilogue, and kept when another
     * device claims subgraphs: no other device claims int8 chains). */
    int int8_epilogue;
    /* split_moe_experts: on/off (the plan turns it on when the experts have a choice of
     * devices), and why, for the pass's summary. */
    int split_moe;
    char split_moe_why[120];
    /* calibrate_int8: sample input sets (n_sets x the graph's inputs, in order), borrowed. */
    const loom_tensor *const *calibration_sets;
    size_t n_calibration_sets;
    /* Filled by the pipeline: the final graph's topological order (validate) and, when
     * calibrating, each value's largest |x| over the sets (NaN for non-f32 values). */
    uint32_t *order;
    float *absmax;
} pass_ctx;

/* One pass: read IN; on success set *OUT to NULL (IN unchanged) or to a new checked graph that
 * replaces IN (owned by the pipeline). SUMMARY receives one line of what it did ("3 nodes
 * folded"). Failures set loom_last_error naming the node and return its status. */
typedef loom_status (*pass_fn)(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                               char *summary, size_t summary_len);

typedef struct pass_def {
    const char *name; /* "fold_constants" */
    pass_fn run;
} pass_def;

#define PASS_MAX_REPORTS 16

/* What one stage did: a pass of this file, or a scheduler stage the plan appends (place,
 * insert_copies, memory_plan). */
typedef struct pass_report {
    const char *name;      /* static */
    size_t nodes_before, nodes_after;
    double ms;             /* wall time of the stage */
    char summary[160];
} pass_report;

typedef struct pass_result {
    const loom_graph *graph;   /* the graph to place: the input or OWNED */
    loom_graph *owned;         /* a graph a pass made; freed by passes_result_free */
    /* Graphs earlier passes made and a later one replaced: the later graph borrows constants a
     * pass created in them (fold_batchnorm's weights), so they live until passes_result_free. */
    loom_graph *retired[PASS_MAX_REPORTS];
    size_t n_retired;
    pass_report reports[PASS_MAX_REPORTS];
    size_t n_reports;
} pass_result;

/* Run the pipeline over G (checked) with CTX. On success RES->graph is what to place and
 * CTX->order (and CTX->absmax when calibrating) are allocated for it; free everything with
 * passes_result_free. On failure nothing needs freeing beyond passes_result_free (safe). */
/* ---- graph_queries.c: what the rewriting passes ask of a graph ---- */
/* V as a constant f32 value with data, else NULL (also for LOOM_NO_VALUE). */
const graph_value *passes_const_f32(const loom_graph *g, loom_value v);
/* READER[v] (G->n_values entries, the caller's) = the first node (in node order) reading value
 * v, or -1 when none does. */
void passes_first_readers(const loom_graph *g, int32_t *reader);
/* The one node reading V (from READER as passes_first_readers fills it), or -1: none,
 * several, or V is a graph output. */
int32_t passes_only_reader(const loom_graph *g, const int32_t *reader, loom_value v);
/* The other input of N when N is a node of op ID with two inputs and one output, one input V
 * (the other a different value); LOOM_NO_VALUE if not. */
loom_value passes_other_input(const graph_node *n, loom_op_id id, loom_value v);
/* The scratch of a pass that turns chains of G's nodes into one node each: *READER
 * (passes_first_readers' array), *ROLE (one entry per node, all -1: no chain yet) and *CHAINS
 * (room for one chain of CHAIN_SIZE bytes per node), malloc'ed, the caller frees them. Returns
 * LOOM_OK, or LOOM_ERR_OUT_OF_MEMORY naming WHAT ("fusing", "quantising") with nothing left
 * allocated. */
loom_status passes_chain_scratch(const loom_graph *g, size_t chain_size, const char *what,
                                 int32_t **reader, int32_t **role, void **chains);

/* GELU applied to X in G (passes/quantize_int8_dynamic.c): a Gelu node (approximate none or
 * tanh) that is X's only reader, or the Erf form exporters write (X read by a Div by sqrt(2) or
 * a Mul by 1/sqrt(2), then Erf, + 1, times X, times 0.5, the 0.5 applied to X first or last),
 * every value inside it with no other reader and not a graph output. READER is
 * passes_first_readers' array; ROLE (may be NULL) marks nodes already taken (>= 0), which it
 * may not use. Returns how many nodes it is made of (1 or 5; 0: none), their indices in NODES,
 * the last one's output being GELU(X), and sets *ACT to "Gelu" or "GeluTanh". */
int passes_gelu_after(const loom_graph *g, const int32_t *reader, const int32_t *role,
                      loom_value x, int32_t nodes[5], const char **act);

loom_status passes_run(const loom_graph *g, pass_ctx *ctx, pass_result *res);

/* Free what passes_run allocated in RES and CTX. Safe on a zeroed or failed result. */
void passes_result_free(pass_result *res, pass_ctx *ctx);

/* Append a report of a stage run outside this layer (placement and after). */
void passes_report_add(pass_result *res, const char *name, size_t nodes_before,
                       size_t nodes_after, double ms, const char *summary);

/* ---- the passes (one file each) ---- */
loom_status pass_validate(const loom_graph *in, loom_graph **out, pass_ctx *ctx, char *summary,
                          size_t summary_len);
loom_status pass_fold_constants(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                char *summary, size_t summary_len);
loom_status pass_fuse_quantized_matmul(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                       char *summary, size_t summary_len);
/* QDQ-form MatMul/Gemm -> MatMulInt8Dynamic with a fixed activation scale, Conv [+ Relu] +
 * QuantizeLinear -> QLinearConv, and the other DequantizeLinear of constants folded
 * (fuse_qdq.c); LOOM_FUSE_QDQ=0 turns the fusion off. */
loom_status pass_fuse_qdq(const loom_graph *in, loom_graph **out, pass_ctx *ctx, char *summary,
                          size_t summary_len);
loom_status pass_quantize_int8_dynamic(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                       char *summary, size_t summary_len);
/* Conv/ConvTranspose + inference BatchNormalization with constant parameters -> one Conv with
 * folded weights and bias (fold_batchnorm.c); LOOM_FOLD_BN=0 turns it off. */
loom_status pass_fold_batchnorm(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                char *summary, size_t summary_len);
loom_status pass_fuse_epilogue(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                               char *summary, size_t summary_len);
/* A MoE with constant expert weights -> MoERoute + one MoEExpert per expert + Sum, placement
 * units for expert parallelism, when CTX->split_moe (split_moe_experts.c). */
loom_status pass_split_moe_experts(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                   char *summary, size_t summary_len);
loom_status pass_calibrate_int8(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                char *summary, size_t summary_len);

/* Check N_SETS calibration sets of G's inputs (count, dtype, shape), naming the bad input
 * (calibrate_int8.c; the plan calls it before anything else is built). */
loom_status pass_check_calibration(const loom_graph *g, const loom_tensor *const *sets,
                                   size_t n_sets);

#endif /* LOOM_PASSES_H */
