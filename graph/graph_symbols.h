/*
 * Symbolic dimensions of graphs built through the C API (loom_input_symbolic): the graph
 * layer's side table of named unknown input dims and of the expressions over them that shape
 * inference carries to every value, and the specialisation of such a graph to concrete input
 * shapes. Not a public header; graph/graph_symbols.c holds the implementation.
 *
 * HOW INFERENCE CARRIES SYMBOLS. Every operator's shape inference is concrete (int64 dims), so
 * a symbolic graph is inferred at three PROBE assignments of its symbols at once: probe A
 * (symbol k = 5040 * (k + 1)) is what g->values[].desc holds; probes B and C live in the side
 * table. A node's inference failing at A or B is a contradiction of the graph's symbols
 * (reported at build time, hence at loom_graph_check, with the probe numbers in the message
 * replaced by the symbols' names); C (values with odd remainders) only sharpens the fitting of
 * floor divisions. The symbolic expression of each output dim is then found by a rule for the
 * operators that combine dims (Reshape, Flatten, Concat: products, quotients and sums) or by
 * fitting floor((k*E + c)/s) to the three probes for an input dim expression E (copies, Slice,
 * Conv and pooling windows, Pad, ...), and verified against all three probes. A dim that
 * matches no form is OPAQUE: still symbolic (it varies with the symbols), computed at run time.
 */
#ifndef LOOM_GRAPH_SYMBOLS_H
#define LOOM_GRAPH_SYMBOLS_H

#include "graph_internal.h"

/* Most distinct symbols in one graph. */
#define GRAPH_SYM_MAX 16

/* What graph_sym_infer found for one node, handed to graph_sym_attach once its values exist. */
typedef struct graph_sym_node graph_sym_node;

/* Free G's side table (NULL allowed). */
void graph_sym_free(graph_symtab *t);

/* Symbolic inference of a node about to be added to G (G->sym set): IN are value indices (N_IN
 * of them, LOOM_NO_VALUE for absent ones), IN_D/IN_C their descriptors/constant data at probe A,
 * ATTRS/N_ATTRS the caller's attributes (as given, not canonical), CANON the canonical ones
 * inference made of them at probe A, OUT_D the outputs inferred at probe A. Sets *OUT to NULL when no input is symbolic (an ordinary node), else to what
 * graph_sym_attach needs. Returns LOOM_OK, or a failure recorded in G (sticky) naming the node
 * and the symbols in contradiction. */
loom_status graph_sym_infer(struct loom_graph *g, const loom_op_def *def, const char *node_name,
                            const loom_value *in, size_t n_in, const loom_tensor_desc *in_d,
                            const void **in_c, const loom_attr *attrs, size_t n_attrs,
                            const loom_attr_list *canon, const loom_tensor_desc *out_d,
                            size_t n_out, graph_sym_node **out);

/* Record R (taken, may be NULL) for node NODE of G, whose output values now exist. */
loom_status graph_sym_attach(struct loom_graph *g, size_t node, graph_sym_node *r);

/* Free R without attaching it (a failed builder call). */
void graph_sym_node_free(graph_sym_node *r);

/* Rewrite an inference failure message ERR (at probe A) of a node reading IN (N_IN) so that
 * probe numbers read as the symbols' expressions, and append the inputs' symbolic shapes. */
void graph_sym_explain(const struct loom_graph *g, const loom_value *in, size_t n_in, char *err,
                       size_t err_len);

/* 1 when value index V of G has a symbolic dim. */
int graph_sym_value_is_symbolic(const struct loom_graph *g, int32_t v);

/* 1 when dim K of value V of G is a known constant (always, in a graph without symbols). */
int graph_sym_dim_known(const loom_graph *g, int32_t v, uint32_t k);

/* Number of G's symbols and the name of symbol I (owned by G). */
size_t graph_sym_count(const struct loom_graph *g);
const char *graph_sym_name(const struct loom_graph *g, size_t i);

/* The symbol index of dim K of value V, or -1 when that dim is not exactly one symbol. */
int graph_sym_dim_symbol(const struct loom_graph *g, int32_t v, uint32_t k);

/* A checked symbolic graph SRC specialised to INPUTS (one tensor per graph input, in order;
 * only dtypes and shapes read): a new checked graph *OUT (the caller's) whose inputs have those
 * shapes, whose nodes are SRC's re-inferred from their original attributes (folding with EVAL
 * when not NULL), and whose constants BORROW SRC's data without the plan copying it (the caller
 * keeps SRC alive longer than *OUT and every plan made from it). Fails with
 * LOOM_ERR_INVALID_ARGUMENT naming the input, the dim, the symbol and the values when INPUTS
 * contradict SRC, or naming the node and the symbols' values when an operator rejects them. */
loom_status graph_sym_specialise(const struct loom_graph *src, const loom_tensor *const *inputs,
                                 size_t n_inputs, graph_eval_fn eval, struct loom_graph **out);

/* Bytes and count of SRC's constants (what a model made from it holds once). */
size_t graph_sym_constant_bytes(const struct loom_graph *g, size_t *count);

#endif /* LOOM_GRAPH_SYMBOLS_H */
