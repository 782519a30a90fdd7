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
#define LO_MIN_OPSET 6
#define LO_MAX_OPSET 18

/* A string -> int32 map whose keys are borrowed (they live in the parsed model). */
typedef struct lo_smap {
    const char **keys;
    int32_t *vals;
    size_t cap, used;
} lo_smap;

int lo_smap_get(const lo_smap *m, const char *key, int32_t *val); /* 1 when found */
int lo_smap_put(lo_smap *m, const char *key, int32_t val);        /* 0 when out of memory */
void lo_smap_free(lo_smap *m);

/* The names one (sub)graph defines: values built so far, initializers not yet decoded, and the
 * names its needed nodes read (to tell unused optional outputs). */
typedef struct lo_scope {
    struct lo_scope *parent;
    const Onnx__GraphProto *gp;
    lo_smap values; /* name -> loom_value */
    lo_smap inits;  /* name -> index in gp->initializer, decoded on first read */
    lo_smap used;   /* names read by the nodes that are built, and the graph's outputs */
} lo_scope;

typedef struct lo_import {
    lo_source src;
    loom_onnx_options opt;
    int64_t opset; /* of the default domain */
    loom_graph *g;
    loom_status status; /* first failure */
    int depth;          /* of If subgraphs */
    void **allocs;      /* freed when the import ends */
    size_t n_allocs, cap_allocs;
} lo_import;

/* Zeroed memory (or a NUL-terminated copy) that lives until the import ends; NULL when out of
 * memory. */
void *lo_alloc(lo_import *im, size_t bytes);
char *lo_strndup(lo_import *im, const void *data, size_t len);

/* Record a failure: the message is prefixed with the file's name. Returns ST. */
loom_status lo_fail(lo_import *im, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The builder's (or decoder's) message in loom_last_error(), prefixed with the file's name;
 * returns ST. */
loom_status lo_fail_builder(lo_import *im, loom_status st);
/* Adopt a failure whose message is already complete (it names the file). */
loom_status lo_adopt(lo_import *im, loom_status st);

const char *lo_str(const char *s); /* "" for NULL */
/* The node's name for messages and for the graph: its own, else its first output's. */
const char *lo_node_name(const Onnx__NodeProto *n);

/* Resolve NAME in SC and its parents, decoding an initializer on first use. Returns 1 with
 * *OUT set, 0 when undefined, -1 after a failure (recorded). */
int lo_lookup(lo_import *im, lo_scope *sc, const char *name, loom_value *out);
/* Bind NAME to V in SC ("" and NULL are ignored). */
loom_status lo_define(lo_import *im, lo_scope *sc, const char *name, loom_value v);
/* Give V the model's tensor name NAME when it can have it. */
loom_status lo_name_value(lo_import *im, loom_value v, const char *name);

/* Constants. lo_own_constant hands T's buffer to the graph (T->data is NULL afterwards, freed
 * on failure too). All return LOOM_NO_VALUE after recording a failure. */
loom_value lo_own_constant(lo_import *im, const char *name, lo_tensor *t);
loom_value lo_const_i64s(lo_import *im, size_t n, const int64_t *values);
loom_value lo_scalar_const(lo_import *im, loom_dtype dtype, double value);

/* The value's constant data, or NULL when it is not a constant. */
const void *lo_const_data(const lo_import *im, loom_value v);
/* Type and shape of V. */
loom_tensor_desc lo_desc(const lo_import *im, loom_value v);
/* Record that a node evaluated here (Shape, Size, If's condition, ...) read V, so that the
 * graph does not report V as unused. */
void lo_mark_read(lo_import *im, loom_value v);

/* Is NODE's operator one Loom can import (registered, or handled by the importer)? */
int lo_node_supported(const lo_import *im, const Onnx__NodeProto *node);

/* Build NODE into the graph, binding its outputs in SC (onnx_nodes.c). */
loom_status lo_build_node(lo_import *im, lo_scope *sc, const Onnx__NodeProto *node);

/* Build the needed nodes of subgraph GP (a branch of If) in a scope inside PARENT, and write
 * the values of its outputs to OUTS (gp->n_output entries). */
loom_status lo_build_subgraph(lo_import *im, lo_scope *parent, const Onnx__GraphProto *gp,
                              loom_value *outs);

#endif /* LOOM_GRAPH_ONNX_IMPORT_H */
