/*
 * The graph IR as the rest of Loom sees it (scheduler, importers): values, nodes, their
 * canonical attributes. Not a public header.
 */
#ifndef LOOM_GRAPH_INTERNAL_H
#define LOOM_GRAPH_INTERNAL_H

#include <loom/graph.h>

#include "core/core_internal.h"

#include "ops.h"

typedef enum graph_value_kind {
    GRAPH_VALUE_INPUT = 1,
    GRAPH_VALUE_CONSTANT = 2,
    GRAPH_VALUE_NODE = 3, /* produced by a node */
} graph_value_kind;

typedef struct graph_symtab graph_symtab; /* graph_symbols.h */

typedef struct graph_value {
    char *name;
    loom_tensor_desc desc;
    graph_value_kind kind;
    int32_t producer;       /* node index for GRAPH_VALUE_NODE, else -1 */
    uint32_t producer_slot; /* which output of the producer */
    const void *data;       /* constants: their data */
    int data_owned;         /* constants: 1 when the graph frees DATA */
    int copy_in_plan;       /* constants: DATA belongs to another graph (a rewrite borrowed it):
                             * a plan keeps its own copy, as of owned data */
    int output_index;       /* position among graph outputs, -1 when not an output */
    uint32_t n_consumers;   /* node inputs that read it */
    uint32_t folded_uses;   /* reads by nodes that were folded into constants */
} graph_value;

typedef struct graph_node {
    const loom_op_def *def;
    char *name;
    uint32_t n_inputs, n_outputs;
    loom_value *inputs;  /* LOOM_NO_VALUE for absent optional inputs */
    loom_value *outputs;
    loom_attr_list attrs; /* canonical */
} graph_node;

/* Value names -> value index: an open-addressing hash set, so uniqueness checks stay O(1). */
typedef struct graph_name_index {
    int32_t *slots; /* value index, -1 empty */
    size_t cap;     /* power of two; 0 until the first name */
    size_t used;
} graph_name_index;

/* Evaluates one node on host memory, on the calling thread: what folding needs. The graph layer
 * links no kernels: the layer that owns them hands one in (scheduler/reference.c gives the
 * CPU backend's reference kernels). INPUTS and OUTPUTS follow NODE's descriptor; outputs are sized
 * by the caller. Returns LOOM_ERR_UNSUPPORTED when it has no kernel for the node (the node then
 * stays a node), another failure with a message in ERR. */
typedef loom_status (*graph_eval_fn)(const loom_node_desc *node, const void *const *inputs,
                                     void *const *outputs, char *err, size_t err_len);

struct loom_graph {
    char *name;
    graph_value *values;
    size_t n_values, cap_values;
    graph_node *nodes;
    size_t n_nodes, cap_nodes;
    loom_value *inputs;
    size_t n_inputs, cap_inputs;
    loom_value *outputs;
    size_t n_outputs, cap_outputs;
    loom_status error;     /* sticky: first builder failure */
    char error_msg[512];
    int checked;
    uint32_t name_counter; /* for made-up names */
    graph_name_index names;
    int folding;           /* evaluate nodes of constants while building (loom_graph_set_folding) */
    graph_eval_fn eval;    /* what folding evaluates with; NULL: nothing folds */
    uint32_t n_folded;     /* nodes folded away */
    /* 1 + the index of the value a failed loom_graph_op needed as a constant (its operator's
     * inference said so), 0 when the last failure was for another reason: what lets the ONNX
     * importer report which graph inputs a model needs as values. */
    uint32_t need_constant;
    /* The graph's tag in the loom_value handles the public API hands out (see graph_handle);
     * 0: handles are plain value indices (graph_raw_handles). */
    uint32_t tag;
    /* Symbolic dims (loom_input_symbolic): NULL for a graph without symbols. */
    graph_symtab *sym;
};

/* Public value handles: bits 24..30 hold the graph's tag (1..127, from a process-wide counter,
 * so handles of the last 127 graphs made never pass for one another), bits 0..23 the value's
 * index. Inside Loom, node inputs/outputs, g->inputs and g->outputs hold plain indices; the
 * public calls translate at the boundary. A graph holds at most GRAPH_MAX_VALUES values. */
#define GRAPH_HANDLE_INDEX_BITS 24
#define GRAPH_MAX_VALUES (((size_t)1 << GRAPH_HANDLE_INDEX_BITS) - 1)

/* The handle of value index I of G (LOOM_NO_VALUE for I < 0). */
static inline loom_value graph_handle(const loom_graph *g, int32_t i)
{
    return i < 0 ? LOOM_NO_VALUE
                 : (loom_value)(((uint32_t)g->tag << GRAPH_HANDLE_INDEX_BITS) | (uint32_t)i);
}

/* The value index handle V stands for in G, or -1 when V is not one of G's (another graph's
 * handle, LOOM_NO_VALUE, out of range). */
static inline int32_t graph_index(const loom_graph *g, loom_value v)
{
    if (!g || v < 0 || ((uint32_t)v >> GRAPH_HANDLE_INDEX_BITS) != g->tag)
        return -1;
    uint32_t i = (uint32_t)v & (uint32_t)GRAPH_MAX_VALUES;
    return i < g->n_values ? (int32_t)i : -1;
}

/* Make G hand out plain value indices as handles (tag 0), for code inside Loom that builds a
 * graph through the public calls and indexes g->values with what they return (the ONNX
 * importer, graph_rebuild). Call right after loom_graph_create, before any value exists. Such
 * graphs still refuse tagged handles of other graphs. */
void graph_raw_handles(loom_graph *g);

/* Fill DESC for node I of G. IN_DESCS/IN_CONSTS must hold the node's n_inputs entries; both are
 * owned by the caller. Everything else points into G. */
void graph_node_desc(const loom_graph *g, size_t i, loom_node_desc *desc, loom_tensor_desc *in_descs,
                  loom_tensor_desc *out_descs, const void **in_consts);

/* Turn folding while building on (ENABLE non-zero, evaluating with EVAL) or off. Fails when G
 * is NULL or already failed (sticky), or ENABLE is set without EVAL. */
loom_status graph_set_folding(loom_graph *g, int enable, graph_eval_fn eval);

/* A new checked graph (*OUT, the caller's) made of SRC's inputs, constants (borrowed), nodes in
 * topological ORDER and outputs, every name kept. With EVAL, nodes of constants are folded on
 * the way (graph_rebuild.c). Fails naming the node that did not rebuild. */
loom_status graph_rebuild(const loom_graph *src, const uint32_t *order, graph_eval_fn eval,
                          loom_graph **out);

/* A rebuild in progress (graph_rebuild.c), as a rewrite hook sees it. */
typedef struct graph_rebuild_ctx graph_rebuild_ctx;

/* The graph being built. */
loom_graph *graph_rebuild_dst(graph_rebuild_ctx *rc);

/* The new graph's value for source value V: inputs and values of nodes already rebuilt, and
 * constants (borrowed into the new graph at their first use); LOOM_NO_VALUE for LOOM_NO_VALUE. */
loom_value graph_rebuild_map(graph_rebuild_ctx *rc, loom_value v);

/* Called for every source node N, in order: returns 1 after adding a replacement to
 * graph_rebuild_dst(RC) whose values it wrote to OUT (one per output of N; the rebuild names them
 * as N's were named), 2 when N is dropped (absorbed into a replacement the hook makes for a later
 * node: nothing may read N's outputs then), 0 to have N copied as it is, -1 after a failure (the
 * new graph's sticky error, or a loom_set_error). */
typedef int (*graph_rewrite_fn)(void *user, graph_rebuild_ctx *rc, const graph_node *n,
                                loom_value *out);

/* graph_rebuild with a rewrite hook (REWRITE may be NULL; USER is passed to it). */
loom_status graph_rebuild_with(const loom_graph *src, const uint32_t *order, graph_eval_fn eval,
                               graph_rewrite_fn rewrite, void *user, loom_graph **out);

/* Give V (a value of G) the name NAME, renaming to "NAME~k" any other value of G that holds it
 * (graph_rebuild.c). Fails as loom_value_set_name. */
loom_status graph_rebuild_take_name(loom_graph *g, loom_value v, const char *name);

/* Make V, the rebuilt value of a source graph output named NAME, an output of G under that name:
 * a value that is not a node's output (folded into a constant, or an input) gets an Identity node
 * of its own first, since a run writes every output. Errors are G's sticky error. */
void graph_rebuild_output(loom_graph *g, loom_value v, const char *name);

/* A topological order of G's nodes into ORDER (n_nodes entries), stable for graphs built in
 * order. Fails with LOOM_ERR_INVALID_ARGUMENT naming a node on a cycle (graph_check.c). */
loom_status graph_topo_order(const loom_graph *g, uint32_t *order);

/* ---- the builder core's own helpers (graph.c), shared with graph_fold.c and graph_check.c ---- */

/* Record G's first failure (sticky; G may be NULL) and the thread's last error; returns STATUS. */
loom_status graph_fail(loom_graph *g, loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The API boundary of every builder call: 1 (with the thread's last error set) when G is NULL,
 * already failed or checked (read-only), else clears the last error and returns 0. */
int graph_unusable(loom_graph *g);

/* Index of the value named NAME in G, or -1. */
int32_t graph_name_find(const loom_graph *g, const char *name);

/* Append a value of DESC and KIND; NAME NULL makes one up from PREFIX. Returns its index, or
 * LOOM_NO_VALUE after recording the error in G. */
loom_value graph_add_value(loom_graph *g, const char *name, const char *prefix,
                           const loom_tensor_desc *desc, graph_value_kind kind);

/* Folding while building (graph_fold.c): evaluate node NODE_NAME of DEF whose inputs are
 * constants now and add its results as constants into OUTPUTS. Returns 1 when folded, 0 when
 * the node is not foldable (folding off, an input not constant, result too big, no reference
 * kernel), -1 after recording an error in G. */
int graph_try_fold(loom_graph *g, const loom_op_def *def, const char *node_name,
                   const loom_value *inputs, size_t n_inputs, const loom_tensor_desc *in_d,
                   const void **in_c, const loom_tensor_desc *out_d, size_t n_outputs,
                   const loom_attr_list *attrs, loom_value *outputs);

#endif /* LOOM_GRAPH_INTERNAL_H */
