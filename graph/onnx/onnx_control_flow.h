/*
 * Inside the ONNX importer: Loop and Scan, unrolled while the graph is built
 * (onnx_control_flow.c), and ONNX sequences, which exist only at import time as lists of graph
 * values (onnx_sequences.c). What onnx_nodes.c and onnx_import.c call, and what the two files
 * share. Not a public header.
 *
 * Why unrolled: Loom's graphs are static DAGs whose every node is placed on a device. A Loop
 * whose trip count and condition are known when the graph is built (constants, or values folded
 * from shapes and bound inputs) becomes its body built once per iteration, each copy's nodes
 * placed and run like any other; a Scan likewise over its sequence length, which static shapes
 * give. A trip count or condition computed at run time is refused with the value it needs
 * (loom_graph.need_constant), so that loom_model can bind the inputs it depends on and import
 * again. Unrolling stops at ONNX_MAX_EXPANDED body nodes in all.
 */
#ifndef LOOM_GRAPH_ONNX_CONTROL_FLOW_H
#define LOOM_GRAPH_ONNX_CONTROL_FLOW_H

#include "graph/onnx/onnx_import.h"

/* Most body nodes one import may build by unrolling Loop and Scan (each iteration counts its
 * body's node count, at least 1; nested loops count every copy). */
#define ONNX_MAX_EXPANDED 4096

/* A sequence's handle in a scope's name table: ONNX_SEQ_TAG + its index in im->seqs. Graph
 * value handles of the importer's graphs are plain indices below GRAPH_MAX_VALUES (2^24), so the
 * two never meet; every bounds-checked accessor (onnx_desc, onnx_const_data, onnx_mark_read)
 * treats a sequence handle as "no such value". */
#define ONNX_SEQ_TAG ((loom_value)0x40000000)

/* A sequence: immutable once made (SequenceInsert and SequenceErase make new ones). ITEMS are
 * graph values (tensors) of DTYPE; the arrays live until the import ends. */
typedef struct onnx_seq {
    loom_dtype dtype; /* of every element (SequenceEmpty's dtype when there is none) */
    size_t n;
    loom_value *items;
} onnx_seq;

/* Whether V is a sequence handle. */
static inline int onnx_is_seq(loom_value v)
{
    return v >= ONNX_SEQ_TAG;
}

/* The sequence V stands for, or NULL when V is not one of this import's sequences. */
const onnx_seq *onnx_seq_get(const onnx_import *im, loom_value v);

/* A new sequence of N values (copied) of DTYPE; its handle, or LOOM_NO_VALUE after recording a
 * failure (out of memory, too many sequences). */
loom_value onnx_seq_new(onnx_import *im, loom_dtype dtype, size_t n, const loom_value *items);

/* Whether (DOMAIN, OP) is built by onnx_cf_build: Loop, Scan and the sequence operators of the
 * default domain. */
int onnx_cf_op(const char *domain, const char *op);

/* Whether any of the N values IN is a sequence (such a node goes to onnx_cf_build, which passes
 * it through (Identity) or refuses it by name). */
int onnx_cf_has_seq(const loom_value *in, size_t n);

/* Build NODE (its inputs resolved into IN, N_IN entries, LOOM_NO_VALUE for empty names) into the
 * graph, binding its outputs in SC: Loop, Scan, the sequence operators, Identity of a sequence;
 * any other operator given a sequence is refused naming the input. Failures are recorded in IM
 * with a message naming the node and its operator: LOOM_ERR_INVALID_ARGUMENT for a malformed
 * node (missing body, wrong input or output counts, out-of-range positions or axes),
 * LOOM_ERR_UNSUPPORTED for what Loom cannot import (a trip count, condition or position known
 * only at run time, unrolling past ONNX_MAX_EXPANDED), LOOM_ERR_OUT_OF_MEMORY. */
loom_status onnx_cf_build(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                          const loom_value *in, size_t n_in);

/* ---- shared by onnx_control_flow.c and onnx_sequences.c ------------------------------------ */

/* Record a failure of NODE: "node 'NAME' (OP): " and the formatted message; returns ST. */
loom_status onnx_cf_fail(onnx_import *im, const Onnx__NodeProto *node, loom_status st,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Build one registry operator OP named NAME with one output; its value, or LOOM_NO_VALUE after
 * recording the builder's failure. */
loom_value onnx_cf_op1(onnx_import *im, const char *op, const char *name, const loom_value *in,
                       size_t n_in, const loom_attr *attrs, size_t n_attrs);

/* X with a new axis of size 1 inserted at AXIS (0 <= AXIS <= rank(X)), as node NAME. */
loom_value onnx_cf_unsqueeze(onnx_import *im, loom_value x, int64_t axis, const char *name);

/* Bind NAME in SC to V; give V the name too when RENAME (and V is a graph value). */
loom_status onnx_cf_bind(onnx_import *im, onnx_scope *sc, const char *name, loom_value v,
                         int rename);

/* Count every constant made since value FIRST_NEW that nothing reads as read: what unrolling or
 * a sequence operator made and the graph does not need (an unused chunk of a split, an
 * iteration number the body ignores) is not an error of the model. */
void onnx_cf_mark_new(onnx_import *im, size_t first_new);

/* The attribute NAME of NODE, or NULL. */
const Onnx__AttributeProto *onnx_cf_attr(const Onnx__NodeProto *node, const char *name);

/* The sequence operators (onnx_sequences.c), called by onnx_cf_build. */
loom_status onnx_build_sequence_op(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                                   const loom_value *in, size_t n_in);

#endif /* LOOM_GRAPH_ONNX_CONTROL_FLOW_H */
