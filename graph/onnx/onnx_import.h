/*
 * Inside the ONNX importer: the state of one import, name scopes, and the helpers that the core
 * (onnx_import.c: model, graph inputs and outputs, scopes, If) and the per-operator translation
 * (onnx_nodes.c: attributes, older opset forms, Constant, Shape, ...) share. Not a public header.
 */
#ifndef LOOM_GRAPH_ONNX_IMPORT_H
#define LOOM_GRAPH_ONNX_IMPORT_H

#include <loom/onnx.h>

#include "graph/graph_internal.h"
#include "graph/onnx/onnx_internal.h"

/* The default-domain opsets the importer reads (loom/onnx.h promises 7 to 18; 6 is accepted
 * as well). */
#define ONNX_MIN_OPSET 6
#define ONNX_MAX_OPSET 18

/* The default-domain opsets in which the importer reads operator OP into *LO..*HI:
 * ONNX_MIN_OPSET (1 for the few operators unchanged since opset 1, which a model of opset 1 to 5
 * may be made of) to ONNX_MAX_OPSET. For `loom ops`. */
void onnx_op_opsets(const char *op, int *lo, int *hi);

/* A string -> int32 map whose keys are borrowed (they live in the parsed model). */
typedef struct onnx_smap {
    const char **keys;
    int32_t *vals;
    size_t cap, used;
} onnx_smap;

int onnx_smap_get(const onnx_smap *m, const char *key, int32_t *val); /* 1 when found */
int onnx_smap_put(onnx_smap *m, const char *key, int32_t val);        /* 0 when out of memory */
void onnx_smap_free(onnx_smap *m);

/* The names one (sub)graph defines: values built so far, initializers not yet decoded, and the
 * names its needed nodes read (to tell unused optional outputs). */
typedef struct onnx_scope {
    struct onnx_scope *parent;
    const Onnx__GraphProto *gp;
    onnx_smap values; /* name -> loom_value */
    onnx_smap inits;  /* name -> index in gp->initializer, decoded on first read */
    onnx_smap used;   /* names read by the nodes that are built, and the graph's outputs */
} onnx_scope;

typedef struct onnx_import {
    onnx_source src;
    loom_onnx_options opt;
    int64_t opset; /* of the default domain */
    loom_graph *g;
    loom_status status; /* first failure */
    int depth;          /* of If subgraphs */
    void **allocs;      /* freed when the import ends */
    size_t n_allocs, cap_allocs;
    graph_eval_fn eval; /* folds constant subgraphs while building; NULL: no folding */
    struct onnx_weights *weights;       /* NULL: initializers decoded into the graph */
    struct onnx_import_report *report;  /* NULL: nothing reported beyond the status */
    /* Loop and Scan unrolled at import (onnx_control_flow.c), and the sequences built so far
     * (onnx_sequences.c; a sequence's handle is ONNX_SEQ_TAG + its index here). */
    size_t expanded;          /* body nodes built by unrolling so far (ONNX_MAX_EXPANDED) */
    struct onnx_seq **seqs;   /* each allocated with onnx_alloc */
    size_t n_seqs, cap_seqs;
} onnx_import;

/* ---- one model, many imports (onnx_model.c; the loom_model of scheduler/model.c) ----------
 * A model's initializers decoded once into a weight store; every import of that unpacked model
 * borrows them (loom_constant_borrowed semantics: graphs and plans hold pointers, not copies),
 * so the store must outlive every graph and plan made from it. Not thread-safe: one import at
 * a time per store. */
typedef struct onnx_weights onnx_weights;

/* A new, empty store (NULL when out of memory); free with onnx_weights_destroy. */
onnx_weights *onnx_weights_create(void);
void onnx_weights_destroy(onnx_weights *w);
/* Bytes of decoded data the store holds, and how many tensors. */
size_t onnx_weights_bytes(const onnx_weights *w);
size_t onnx_weights_count(const onnx_weights *w);
/* T's decoded data (borrowed from the store, valid until onnx_weights_destroy), decoding it on
 * first use. Failures as onnx_tensor_decode. */
loom_status onnx_weights_get(onnx_weights *w, const Onnx__TensorProto *t, const onnx_source *src,
                             const char *what, const onnx_tensor **out);
/* Decode every initializer of GP into W now and release the protobuf's copy of its payload
 * (the store's copy is then the only one). */
loom_status onnx_weights_preload(onnx_weights *w, Onnx__GraphProto *gp, const onnx_source *src);

/* What an import says beyond its status: the graph inputs (indices into the model's
 * graph->input) that a node needed as constants, because an operator's inference or the
 * importer needs their values (a Reshape's shape, a TopK's K, ConstantOfShape's shape, an If's
 * condition). Binding them (options.bindings) and importing again can succeed. */
#define ONNX_MAX_NEED 64
typedef struct onnx_import_report {
    size_t n_need;
    uint32_t need[ONNX_MAX_NEED];
} onnx_import_report;

/* Unpack the serialized model DATA (SIZE bytes; FILE names it in messages) into *OUT (free
 * with onnx__model_proto__free_unpacked(*OUT, NULL)), its nesting checked first as
 * onnx_import_memory does. Fails with LOOM_ERR_INVALID_ARGUMENT. */
loom_status onnx_unpack(const void *data, size_t size, const char *file, Onnx__ModelProto **out);
/* Import the already unpacked model M (borrowed; never modified) as onnx_import_file does,
 * taking initializers from WEIGHTS when non-NULL and filling REPORT when non-NULL. SRC names
 * the file in messages and where external data lies. */
loom_status onnx_import_unpacked(const Onnx__ModelProto *m, const onnx_source *src,
                                 const loom_onnx_options *options, graph_eval_fn eval,
                                 onnx_weights *weights, onnx_import_report *report,
                                 loom_graph **out);
/* After a node failed: record in IM->report the graph inputs that the value the graph says
 * was needed as a constant (loom_graph.need_constant) is computed from. */
void onnx_report_need(onnx_import *im, const Onnx__GraphProto *root);

/* The importer's entry points behind loom_onnx_load and loom_onnx_load_memory (onnx.h documents
 * their arguments, ownership and failures). EVAL evaluates constant subgraphs while the graph
 * is built (the layer above hands in its reference kernels); NULL turns folding off, which
 * leaves models whose shapes are computed by subgraphs unimportable. */
loom_status onnx_import_file(const char *path, const loom_onnx_options *options,
                             graph_eval_fn eval, loom_graph **out);
loom_status onnx_import_memory(const void *data, size_t size, const char *base_dir,
                               const loom_onnx_options *options, graph_eval_fn eval,
                               loom_graph **out);

/* Zeroed memory (or a NUL-terminated copy) that lives until the import ends; NULL when out of
 * memory. */
void *onnx_alloc(onnx_import *im, size_t bytes);
char *onnx_strndup(onnx_import *im, const void *data, size_t len);

/* Record a failure: the message is prefixed with the file's name. Returns ST. */
loom_status onnx_fail(onnx_import *im, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The builder's (or decoder's) message in loom_last_error(), prefixed with the file's name;
 * returns ST. */
loom_status onnx_fail_builder(onnx_import *im, loom_status st);
/* Adopt a failure whose message is already complete (it names the file). */
loom_status onnx_adopt(onnx_import *im, loom_status st);

const char *onnx_str(const char *s); /* "" for NULL */
/* The node's name for messages and for the graph: its own, else its first output's. */
const char *onnx_node_name(const Onnx__NodeProto *n);

/* Resolve NAME in SC and its parents, decoding an initializer on first use. Returns 1 with
 * *OUT set, 0 when undefined, -1 after a failure (recorded). */
int onnx_lookup(onnx_import *im, onnx_scope *sc, const char *name, loom_value *out);
/* Bind NAME to V in SC ("" and NULL are ignored). */
loom_status onnx_define(onnx_import *im, onnx_scope *sc, const char *name, loom_value v);
/* Give V the model's tensor name NAME when it can have it. */
loom_status onnx_name_value(onnx_import *im, loom_value v, const char *name);

/* Constants. onnx_own_constant hands T's buffer to the graph (T->data is NULL afterwards, freed
 * on failure too). All return LOOM_NO_VALUE after recording a failure. */
loom_value onnx_own_constant(onnx_import *im, const char *name, onnx_tensor *t);
loom_value onnx_const_i64s(onnx_import *im, size_t n, const int64_t *values);
loom_value onnx_scalar_const(onnx_import *im, loom_dtype dtype, double value);

/* The value's constant data, or NULL when it is not a constant. */
const void *onnx_const_data(const onnx_import *im, loom_value v);
/* Type and shape of V. */
loom_tensor_desc onnx_desc(const onnx_import *im, loom_value v);
/* Record that a node evaluated here (Shape, Size, If's condition, ...) read V, so that the
 * graph does not report V as unused. */
void onnx_mark_read(onnx_import *im, loom_value v);

/* Is NODE's operator one Loom can import (registered, or handled by the importer)? */
int onnx_node_supported(const onnx_import *im, const Onnx__NodeProto *node);

/* Build NODE into the graph, binding its outputs in SC (onnx_nodes.c). */
loom_status onnx_build_node(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node);

/* The com.microsoft transformer operators lowered in onnx_contrib_attention.c
 * (EmbedLayerNormalization, Attention, MultiHeadAttention, RotaryEmbedding, MatMulNBits): 1 when
 * OP is one and the registry has every operator its lowering builds, -1 when it is one but an
 * operator is missing, 0 when it is not one. */
int onnx_contrib_attention_lowering(const char *op);
/* Lower NODE (one of those; its domain already checked) into the graph and bind its outputs in
 * SC. IN (N_IN values, LOOM_NO_VALUE for absent inputs) and ATTRS (N_ATTRS, consumed: the array
 * is reordered) are the node's resolved inputs and attributes, SPECIAL the first attribute
 * loom_attr cannot carry (NULL: none), NAME the node's name for messages. Fails, recorded in IM
 * with a message naming the node and the input, output or attribute, with
 * LOOM_ERR_UNSUPPORTED for forms not lowered (past/present states, attention_bias, packed QKV,
 * non-constant quantized weights...) and LOOM_ERR_INVALID_ARGUMENT for malformed nodes. */
loom_status onnx_contrib_attention_lower(onnx_import *im, onnx_scope *sc,
                                         const Onnx__NodeProto *node, const char *name,
                                         loom_value *in, size_t n_in, loom_attr *attrs,
                                         size_t n_attrs, const char *special);

/* Build the needed nodes of subgraph GP (a branch of If) in a scope inside PARENT, and write
 * the values of its outputs to OUTS (gp->n_output entries). */
loom_status onnx_build_subgraph(onnx_import *im, onnx_scope *parent, const Onnx__GraphProto *gp,
                              loom_value *outs);

/* Build the needed nodes of subgraph GP (a Loop or Scan body, or a branch when N_INS is 0) in
 * a scope inside PARENT whose graph inputs are bound to INS (N_INS must be gp->n_input, values
 * or sequence handles), and write the values of its outputs to OUTS (gp->n_output entries).
 * Fails as the nodes do, or when nested deeper than the importer follows. */
loom_status onnx_build_body(onnx_import *im, onnx_scope *parent, const Onnx__GraphProto *gp,
                            const loom_value *ins, size_t n_ins, loom_value *outs);

#endif /* LOOM_GRAPH_ONNX_IMPORT_H */
