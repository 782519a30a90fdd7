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
};

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

/* A topological order of G's nodes into ORDER (n_nodes entries), stable for graphs built in
 * order. Fails with LOOM_ERR_INVALID_ARGUMENT naming a node on a cycle. */
loom_status graph_topo_order(const loom_graph *g, uint32_t *order);

#endif /* LOOM_GRAPH_INTERNAL_H */
