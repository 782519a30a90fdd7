/*
 * The ONNX importer: a ModelProto (opsets 7 to 18, parsed by protobuf-c over the system's
 * onnx.proto) becomes a checked Loom graph. Initializers become constants when first read;
 * nodes go through loom_graph_op with folding on, so subgraphs of constants (shape arithmetic:
 * Shape -> Gather -> Concat -> Reshape) turn into constants while the graph is built. Older
 * operator forms are rewritten into the opset-18 form the registry expects (onnx_nodes.c);
 * a few operators are evaluated here because their results depend only on shapes or
 * attributes (Constant, ConstantOfShape, Shape, Size) or are control flow (If; Loop and Scan
 * are unrolled and sequences resolved in onnx_control_flow.c and onnx_sequences.c).
 */
#include <loom/onnx.h>

#include "graph/graph_internal.h"
#include "graph/onnx/onnx_import.h"
#include "graph/onnx/onnx_control_flow.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest nesting of If subgraphs we follow: far beyond real models, and a bound on recursion
 * for hostile files. */
#define MAX_SUBGRAPH_DEPTH 16

/* Deepest nesting of protobuf messages a model may have (loom/onnx.h documents it). protobuf-c
 * unpacks recursively, about a kilobyte of stack per level, so a small file of thousands of
 * nested If or Loop nodes (or sequence types) would overflow the stack inside the unpacker,
 * before MAX_SUBGRAPH_DEPTH is ever checked: the wire format is scanned for depth first,
 * without recursion. Each If level costs three messages (node, attribute, graph), so this is
 * well past MAX_SUBGRAPH_DEPTH and that limit keeps its own message. */
#define MAX_MESSAGE_DEPTH 100

/* ---- a string -> int32 map with borrowed keys (open addressing) ----------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

int onnx_smap_get(const onnx_smap *m, const char *key, int32_t *val)
{
    if (!m->cap)
        return 0;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return 0;
        if (strcmp(m->keys[i], key) == 0) {
            if (val)
                *val = m->vals[i];
            return 1;
        }
    }
}

int onnx_smap_put(onnx_smap *m, const char *key, int32_t val)
{
    if ((m->used + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 32;
        const char **keys = calloc(ncap, sizeof *keys);
        int32_t *vals = calloc(ncap, sizeof *vals);
        if (!keys || !vals) {
            free(keys);
            free(vals);
            return 0;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = hash_str(m->keys[i]) & (ncap - 1);
            while (keys[j])
                j = (j + 1) & (ncap - 1);
            keys[j] = m->keys[i];
            vals[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = ncap;
    }
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->used++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 1;
}

void onnx_smap_free(onnx_smap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- allocations that live until the import ends ---------------------------------------- */

void *onnx_alloc(onnx_import *im, size_t bytes)
{
    if (im->n_allocs == im->cap_allocs) {
        size_t n = im->cap_allocs ? im->cap_allocs * 2 : 32;
        void **p = realloc(im->allocs, n * sizeof *p);
        if (!p)
            return NULL;
        im->allocs = p;
        im->cap_allocs = n;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (p)
        im->allocs[im->n_allocs++] = p;
    return p;
}

char *onnx_strndup(onnx_import *im, const void *data, size_t len)
{
    char *s = onnx_alloc(im, len + 1);
    if (s && len)
        memcpy(s, data, len);
    return s;
}

/* ---- errors ------------------------------------------------------------------------------- */

loom_status onnx_fail(onnx_import *im, loom_status st, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (im->status == LOOM_OK)
        im->status = st;
    /* Names in the message come from the model (or the user's path): escaped, so that none
     * reaches a terminal raw. */
    return onnx_error(st, "%s: %s", im->src.file, msg);
}

loom_status onnx_adopt(onnx_import *im, loom_status st)
{
    if (im->status == LOOM_OK)
        im->status = st;
    return st;
}

loom_status onnx_fail_builder(onnx_import *im, loom_status st)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", loom_last_error());
    if (st == LOOM_OK)
        st = LOOM_ERR_INTERNAL;
    return onnx_fail(im, st, "%s", msg[0] ? msg : "graph builder failed");
}

const char *onnx_str(const char *s)
{
    return s ? s : "";
}

const char *onnx_node_name(const Onnx__NodeProto *n)
{
    if (n->name && *n->name)
        return n->name;
    for (size_t k = 0; k < n->n_output; k++)
        if (n->output[k] && *n->output[k])
            return n->output[k];
    return "";
}

/* ---- value names ----------------------------------------------------------------------------
 * Graph values carry the model's tensor names, so messages, traces and output files speak the
 * model's language. The builder names a node's outputs after the node; when such a made-up
 * name is wanted by a tensor of the model, the made-up one moves aside. */

/* NAME if it can be given to a new or renamed value, else NULL (let the graph make one up). */
static const char *claim_name(onnx_import *im, const char *name)
{
    if (!name || !*name)
        return NULL;
    loom_value w = loom_graph_find_value(im->g, name);
    if (w == LOOM_NO_VALUE)
        return name;
    const graph_value *val = &im->g->values[w];
    if (val->kind == GRAPH_VALUE_INPUT || val->output_index >= 0)
        return NULL;
    size_t len = strlen(name) + 24;
    char *alt = malloc(len);
    if (!alt)
        return NULL;
    for (unsigned k = 1;; k++) {
        snprintf(alt, len, "%s~%u", name, k);
        if (loom_graph_find_value(im->g, alt) == LOOM_NO_VALUE)
            break;
    }
    loom_status st = loom_value_set_name(im->g, w, alt);
    free(alt);
    return st == LOOM_OK ? name : NULL;
}

loom_status onnx_name_value(onnx_import *im, loom_value v, const char *name)
{
    if (!name || !*name || v == LOOM_NO_VALUE || onnx_is_seq(v))
        return LOOM_OK; /* a sequence is the importer's, not a graph value: no name to give */
    const char *cur = loom_value_name(im->g, v);
    if (cur && strcmp(cur, name) == 0)
        return LOOM_OK;
    const char *n = claim_name(im, name);
    if (n && loom_value_set_name(im->g, v, n) != LOOM_OK)
        return onnx_fail_builder(im, im->g->error);
    return im->g->error != LOOM_OK ? onnx_fail_builder(im, im->g->error) : LOOM_OK;
}

loom_value onnx_own_constant(onnx_import *im, const char *name, onnx_tensor *t)
{
    loom_value v = loom_constant_borrowed(im->g, claim_name(im, name), t->dtype, t->rank,
                                          t->dims, t->data);
    if (v == LOOM_NO_VALUE) {
        free(t->data);
        t->data = NULL;
        onnx_fail_builder(im, im->g->error);
        return LOOM_NO_VALUE;
    }
    /* The graph takes the buffer over (it frees owned constants with free()), which spares a
     * copy of every weight. */
    im->g->values[v].data_owned = 1;
    t->data = NULL;
    return v;
}

loom_value onnx_const_i64s(onnx_import *im, size_t n, const int64_t *values)
{
    loom_value v = loom_constant_i64s(im->g, n, values);
    if (v == LOOM_NO_VALUE)
        onnx_fail_builder(im, im->g->error);
    return v;
}

/* VALUE rounded toward zero and saturated to [LO, HI] (NaN gives 0): a model's float attribute
 * may not fit the integer type it lands in. */
static int64_t saturate(double value, double lo, double hi)
{
    if (!(value == value))
        return 0;
    if (value <= lo)
        return (int64_t)lo;
    if (value >= hi)
        return hi >= 9.2e18 ? INT64_MAX : (int64_t)hi;
    return (int64_t)value;
}

loom_value onnx_scalar_const(onnx_import *im, loom_dtype dtype, double value)
{
    unsigned char buf[8] = {0};
    float f = value > 3.4e38 ? INFINITY : value < -3.4e38 ? -INFINITY : (float)value;
    switch (dtype) {
    case LOOM_DTYPE_F32: memcpy(buf, &f, 4); break;
    case LOOM_DTYPE_F16: { uint16_t h = onnx_f32_to_f16(f); memcpy(buf, &h, 2); break; }
    case LOOM_DTYPE_BF16: { uint16_t h = onnx_f32_to_bf16(f); memcpy(buf, &h, 2); break; }
    case LOOM_DTYPE_I32: {
        int32_t i = (int32_t)saturate(value, INT32_MIN, INT32_MAX);
        memcpy(buf, &i, 4);
        break;
    }
    case LOOM_DTYPE_I64: {
        int64_t i = saturate(value, -9.2e18, 9.2e18);
        memcpy(buf, &i, 8);
        break;
    }
    case LOOM_DTYPE_I8: {
        int8_t i = (int8_t)saturate(value, -128, 127);
        memcpy(buf, &i, 1);
        break;
    }
    case LOOM_DTYPE_U8: buf[0] = (uint8_t)saturate(value, 0, 255); break;
    case LOOM_DTYPE_BOOL: buf[0] = value != 0; break;
    default: break;
    }
    loom_value v = loom_constant(im->g, NULL, dtype, 0, NULL, buf);
    if (v == LOOM_NO_VALUE)
        onnx_fail_builder(im, im->g->error);
    return v;
}

/* ---- scopes --------------------------------------------------------------------------------
 * Names resolve in the innermost scope first (a subgraph of If sees the outer graph's values).
 * Initializers are decoded only when a node reads them, so unused ones cost nothing and never
 * leave an unused constant behind. */

static loom_status scope_init(onnx_import *im, onnx_scope *sc, onnx_scope *parent,
                              const Onnx__GraphProto *gp)
{
    memset(sc, 0, sizeof *sc);
    sc->parent = parent;
    sc->gp = gp;
    if (gp->n_sparse_initializer)
        return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "graph '%s': sparse initializers are not "
                       "supported", onnx_str(gp->name));
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *t = gp->initializer[i];
        if (!t->name || !*t->name)
            return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "graph '%s': initializer %zu has no "
                           "name", onnx_str(gp->name), i);
        if (i > INT32_MAX || !onnx_smap_put(&sc->inits, t->name, (int32_t)i))
            return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    return LOOM_OK;
}

static void scope_free(onnx_scope *sc)
{
    onnx_smap_free(&sc->values);
    onnx_smap_free(&sc->inits);
    onnx_smap_free(&sc->used);
}

loom_status onnx_define(onnx_import *im, onnx_scope *sc, const char *name, loom_value v)
{
    if (!name || !*name)
        return LOOM_OK;
    if (!onnx_smap_put(&sc->values, name, v))
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    return LOOM_OK;
}

int onnx_lookup(onnx_import *im, onnx_scope *sc, const char *name, loom_value *out)
{
    for (onnx_scope *s = sc; s; s = s->parent) {
        int32_t v;
        if (onnx_smap_get(&s->values, name, &v)) {
            *out = v;
            return 1;
        }
        if (onnx_smap_get(&s->inits, name, &v)) {
            char what[160];
            snprintf(what, sizeof what, "initializer '%.100s'", name);
            onnx_tensor lt;
            const onnx_tensor *wt = NULL; /* from the model's weight store: borrowed */
            loom_status st = im->weights ? onnx_weights_get(im->weights, s->gp->initializer[v],
                                                            &im->src, what, &wt)
                                         : onnx_tensor_decode(s->gp->initializer[v], &im->src,
                                                              what, &lt);
            if (st != LOOM_OK) {
                onnx_adopt(im, st);
                return -1;
            }
            loom_value c = wt ? loom_constant_borrowed(im->g, claim_name(im, name), wt->dtype,
                                                       wt->rank, wt->dims, wt->data)
                              : onnx_own_constant(im, name, &lt);
            if (wt && c == LOOM_NO_VALUE)
                onnx_fail_builder(im, im->g->error);
            if (c == LOOM_NO_VALUE)
                return -1;
            if (!onnx_smap_put(&s->values, name, c)) {
                onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
                return -1;
            }
            *out = c;
            return 1;
        }
    }
    return 0;
}

const void *onnx_const_data(const onnx_import *im, loom_value v)
{
    if (v < 0 || (size_t)v >= im->g->n_values)
        return NULL;
    const graph_value *val = &im->g->values[v];
    return val->kind == GRAPH_VALUE_CONSTANT ? val->data : NULL;
}

loom_tensor_desc onnx_desc(const onnx_import *im, loom_value v)
{
    loom_tensor_desc d;
    memset(&d, 0, sizeof d);
    if (v >= 0 && (size_t)v < im->g->n_values)
        d = im->g->values[v].desc;
    return d;
}

void onnx_mark_read(onnx_import *im, loom_value v)
{
    /* Counted like a read by a folded node: the value was needed, for its shape or to choose a
     * branch, but no node of the graph reads it at run time. */
    if (v >= 0 && (size_t)v < im->g->n_values)
        im->g->values[v].folded_uses++;
}

/* ---- which nodes are needed ----------------------------------------------------------------
 * Only nodes that lead to the graph's outputs are built: the graph refuses dead nodes, and a
 * node nobody reads costs time. A node's subgraphs (If branches) read outer names too. */

typedef struct name_stack {
    const char **items;
    size_t n, cap;
} name_stack;

static int push_name(name_stack *s, const char *name)
{
    if (!name || !*name)
        return 1;
    if (s->n == s->cap) {
        size_t n = s->cap ? s->cap * 2 : 64;
        const char **p = realloc(s->items, n * sizeof *p);
        if (!p)
            return 0;
        s->items = p;
        s->cap = n;
    }
    s->items[s->n++] = name;
    return 1;
}

/* Every name the nodes of GP (and their subgraphs) read, and GP's outputs: an over-estimate of
 * what GP needs from outside, which is all "needed" must not miss. */
static int push_subgraph_reads(name_stack *s, const Onnx__GraphProto *gp, int depth)
{
    if (depth > MAX_SUBGRAPH_DEPTH)
        return 1; /* deeper nesting fails when it is built */
    for (size_t i = 0; i < gp->n_output; i++)
        if (!push_name(s, gp->output[i]->name))
            return 0;
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *n = gp->node[i];
        for (size_t k = 0; k < n->n_input; k++)
            if (!push_name(s, n->input[k]))
                return 0;
        for (size_t a = 0; a < n->n_attribute; a++) {
            const Onnx__AttributeProto *at = n->attribute[a];
            if (at->g && !push_subgraph_reads(s, at->g, depth + 1))
                return 0;
            for (size_t j = 0; j < at->n_graphs; j++)
                if (!push_subgraph_reads(s, at->graphs[j], depth + 1))
                    return 0;
        }
    }
    return 1;
}

/* ---- single assignment ---------------------------------------------------------------------
 * As onnx.checker: every name is written once in a graph, by one node output, a graph input or
 * an initializer (an input may share its name with an initializer, as before IR version 4),
 * and a graph output is listed once. The first conflict is named; PRODUCER gets each node
 * output's node. */

static loom_status check_assignments(onnx_import *im, const Onnx__GraphProto *gp,
                                     onnx_smap *producer)
{
    /* Values in WRITER: a node's index, or -1 (graph input) or -2 (initializer). */
    onnx_smap writer = {0}, outs = {0};
    loom_status st = LOOM_OK;
    const char *graph = gp->name && *gp->name ? gp->name : NULL;
    char where[160] = "";
    if (im->depth)
        snprintf(where, sizeof where, "subgraph '%.100s': ", graph ? graph : "");
    for (size_t i = 0; i < gp->n_input && st == LOOM_OK; i++)
        if (gp->input[i]->name && *gp->input[i]->name &&
            !onnx_smap_put(&writer, gp->input[i]->name, -1))
            st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < gp->n_initializer && st == LOOM_OK; i++)
        if (gp->initializer[i]->name && !onnx_smap_get(&writer, gp->initializer[i]->name, NULL) &&
            !onnx_smap_put(&writer, gp->initializer[i]->name, -2))
            st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < gp->n_node && st == LOOM_OK; i++) {
        const Onnx__NodeProto *n = gp->node[i];
        const char *op = onnx_str(n->op_type);
        for (size_t k = 0; k < n->n_output && st == LOOM_OK; k++) {
            const char *o = n->output[k];
            if (!o || !*o)
                continue;
            for (size_t r = 0; r < n->n_input && st == LOOM_OK; r++)
                if (n->input[r] && strcmp(n->input[r], o) == 0)
                    st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "%snode '%.200s' (%.100s) "
                                   "writes '%.200s', which it also reads", where,
                                   onnx_node_name(n), op, o);
            int32_t w;
            if (st != LOOM_OK || !onnx_smap_get(&writer, o, &w)) {
                if (st == LOOM_OK && (i > INT32_MAX || !onnx_smap_put(&writer, o, (int32_t)i) ||
                                      !onnx_smap_put(producer, o, (int32_t)i)))
                    st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
                continue;
            }
            if (w == (int32_t)i)
                st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "%snode '%.200s' (%.100s) writes "
                               "'%.200s' twice: every output needs a name of its own", where,
                               onnx_node_name(n), op, o);
            else if (w < 0)
                st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "%snode '%.200s' (%.100s) writes "
                               "'%.200s', which is a graph %s", where, onnx_node_name(n), op, o,
                               w == -1 ? "input" : "initializer");
            else
                st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "%snodes '%.200s' (%.100s) and "
                               "'%.200s' (%.100s) both write '%.200s': a name is written once",
                               where, onnx_node_name(gp->node[w]),
                               onnx_str(gp->node[w]->op_type), onnx_node_name(n), op, o);
        }
    }
    for (size_t i = 0; i < gp->n_output && st == LOOM_OK; i++) {
        const char *o = onnx_str(gp->output[i]->name);
        if (!*o)
            continue;
        if (onnx_smap_get(&outs, o, NULL))
            st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "%sgraph output '%.200s' is listed "
                           "twice", where, o);
        else if (!onnx_smap_put(&outs, o, 1))
            st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    onnx_smap_free(&writer);
    onnx_smap_free(&outs);
    return st;
}

/* NEEDED[i] = 1 for the nodes of SC->gp that its outputs depend on; fills SC->used. */
static loom_status mark_needed(onnx_import *im, onnx_scope *sc, const onnx_smap *producer,
                               unsigned char *needed)
{
    const Onnx__GraphProto *gp = sc->gp;
    name_stack st = {0};
    loom_status status = LOOM_OK;
    for (size_t i = 0; i < gp->n_output && status == LOOM_OK; i++)
        if (!push_name(&st, gp->output[i]->name))
            status = LOOM_ERR_OUT_OF_MEMORY;
    while (status == LOOM_OK && st.n) {
        const char *name = st.items[--st.n];
        if (onnx_smap_get(&sc->used, name, NULL))
            continue;
        if (!onnx_smap_put(&sc->used, name, 1)) {
            status = LOOM_ERR_OUT_OF_MEMORY;
            break;
        }
        int32_t i;
        if (!onnx_smap_get(producer, name, &i) || needed[i])
            continue;
        needed[i] = 1;
        const Onnx__NodeProto *n = gp->node[i];
        for (size_t k = 0; k < n->n_input && status == LOOM_OK; k++)
            if (!push_name(&st, n->input[k]))
                status = LOOM_ERR_OUT_OF_MEMORY;
        for (size_t a = 0; a < n->n_attribute && status == LOOM_OK; a++) {
            const Onnx__AttributeProto *at = n->attribute[a];
            if (at->g && !push_subgraph_reads(&st, at->g, im->depth + 1))
                status = LOOM_ERR_OUT_OF_MEMORY;
            for (size_t j = 0; j < at->n_graphs && status == LOOM_OK; j++)
                if (!push_subgraph_reads(&st, at->graphs[j], im->depth + 1))
                    status = LOOM_ERR_OUT_OF_MEMORY;
        }
    }
    free(st.items);
    if (status != LOOM_OK)
        return onnx_fail(im, status, "out of memory");
    return LOOM_OK;
}

/* ---- order ---------------------------------------------------------------------------------
 * ONNX wants nodes in topological order; ONNX Runtime sorts them itself, and so does Loom: a
 * depth-first walk (with its own stack: chains of 100k nodes are real) that keeps the model's
 * order wherever the model is sorted. A cycle is named as one, node by node. */

/* The needed nodes that node I reads from (its inputs and what its subgraphs read; itself
 * left out, as a subgraph's own names may coincide with the node's outputs). */
static int node_deps(onnx_import *im, const Onnx__GraphProto *gp, const onnx_smap *producer,
                     const unsigned char *needed, size_t i, name_stack *tmp, int32_t **deps,
                     size_t *n_deps, size_t *cap_deps)
{
    const Onnx__NodeProto *n = gp->node[i];
    tmp->n = 0;
    for (size_t k = 0; k < n->n_input; k++)
        if (!push_name(tmp, n->input[k]))
            return 0;
    for (size_t a = 0; a < n->n_attribute; a++) {
        const Onnx__AttributeProto *at = n->attribute[a];
        if (at->g && !push_subgraph_reads(tmp, at->g, im->depth + 1))
            return 0;
        for (size_t j = 0; j < at->n_graphs; j++)
            if (!push_subgraph_reads(tmp, at->graphs[j], im->depth + 1))
                return 0;
    }
    for (size_t k = 0; k < tmp->n; k++) {
        int32_t j;
        if (!onnx_smap_get(producer, tmp->items[k], &j) || (size_t)j == i || !needed[j])
            continue;
        if (*n_deps == *cap_deps) {
            size_t c = *cap_deps ? *cap_deps * 2 : 64;
            int32_t *p = realloc(*deps, c * sizeof *p);
            if (!p)
                return 0;
            *deps = p;
            *cap_deps = c;
        }
        (*deps)[(*n_deps)++] = j;
    }
    return 1;
}

/* ORDER (gp->n_node entries) gets the needed nodes, each after the nodes it reads; returns the
 * count in *N_ORDER. */
static loom_status topo_order(onnx_import *im, const Onnx__GraphProto *gp,
                              const onnx_smap *producer, const unsigned char *needed,
                              int32_t *order, size_t *n_order)
{
    size_t nn = gp->n_node;
    size_t *start = calloc(nn + 1, sizeof *start);
    unsigned char *state = calloc(nn + 1, 1); /* 0 new, 1 on the walk's path, 2 done */
    struct frame {
        int32_t node;
        size_t next;
    } *stack = malloc((nn + 1) * sizeof *stack);
    int32_t *deps = NULL;
    size_t n_deps = 0, cap_deps = 0;
    name_stack tmp = {0};
    loom_status st = LOOM_OK;
    if (!start || !state || !stack)
        st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < nn && st == LOOM_OK; i++) {
        start[i] = n_deps;
        if (needed[i] && !node_deps(im, gp, producer, needed, i, &tmp, &deps, &n_deps, &cap_deps))
            st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (st == LOOM_OK)
        start[nn] = n_deps;
    *n_order = 0;
    for (size_t root = 0; root < nn && st == LOOM_OK; root++) {
        if (!needed[root] || state[root])
            continue;
        size_t top = 0;
        stack[0].node = (int32_t)root;
        stack[0].next = start[root];
        state[root] = 1;
        while (st == LOOM_OK) {
            struct frame *f = &stack[top];
            if (f->next == start[f->node + 1]) {
                state[f->node] = 2;
                order[(*n_order)++] = f->node;
                if (top == 0)
                    break;
                top--;
                continue;
            }
            int32_t d = deps[f->next++];
            if (state[d] == 2)
                continue;
            if (state[d] == 0) {
                state[d] = 1;
                top++;
                stack[top].node = d;
                stack[top].next = start[d];
                continue;
            }
            /* D is on the path: the path from D to here, and back to D, is a cycle. */
            size_t from = top;
            while (stack[from].node != d)
                from--;
            char path[600];
            size_t w = 0;
            for (size_t k = from; k <= top + 1 && w < sizeof path - 8; k++) {
                const Onnx__NodeProto *n = gp->node[k <= top ? stack[k].node : d];
                int len = snprintf(path + w, sizeof path - w, "%s'%.100s'", k > from ? " -> " : "",
                                   onnx_node_name(n));
                if (len < 0 || (size_t)len >= sizeof path - w) {
                    snprintf(path + (sizeof path - 8), 8, " ...");
                    break;
                }
                w += (size_t)len;
            }
            st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "%scycle through nodes %s",
                           im->depth ? "a subgraph has a " : "", path);
        }
    }
    free(start);
    free(state);
    free(stack);
    free(deps);
    free(tmp.items);
    return st;
}

/* Build the needed nodes of SC->gp, each after those it reads. */
static loom_status build_body(onnx_import *im, onnx_scope *sc)
{
    const Onnx__GraphProto *gp = sc->gp;
    onnx_smap producer = {0};
    unsigned char *needed = calloc(gp->n_node + 1, 1);
    int32_t *order = calloc(gp->n_node + 1, sizeof *order);
    size_t n_order = 0;
    loom_status st = needed && order ? LOOM_OK
                                     : onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == LOOM_OK)
        st = check_assignments(im, gp, &producer);
    if (st == LOOM_OK)
        st = mark_needed(im, sc, &producer, needed);
    if (st == LOOM_OK)
        st = topo_order(im, gp, &producer, needed, order, &n_order);
    for (size_t i = 0; i < n_order && st == LOOM_OK; i++) {
        im->g->need_constant = 0;
        st = onnx_build_node(im, sc, gp->node[order[i]]);
        if (st != LOOM_OK && im->report && im->g->need_constant) {
            const onnx_scope *root = sc;
            while (root->parent)
                root = root->parent;
            onnx_report_need(im, root->gp);
        }
    }
    onnx_smap_free(&producer);
    free(needed);
    free(order);
    return st;
}

loom_status onnx_build_subgraph(onnx_import *im, onnx_scope *parent, const Onnx__GraphProto *gp,
                              loom_value *outs)
{
    if (im->depth >= MAX_SUBGRAPH_DEPTH)
        return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "subgraphs nested deeper than %d levels",
                       MAX_SUBGRAPH_DEPTH);
    if (gp->n_input)
        return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "subgraph '%s' has inputs; an If branch "
                       "takes none", onnx_str(gp->name));
    return onnx_build_body(im, parent, gp, NULL, 0, outs);
}

loom_status onnx_build_body(onnx_import *im, onnx_scope *parent, const Onnx__GraphProto *gp,
                            const loom_value *ins, size_t n_ins, loom_value *outs)
{
    if (im->depth >= MAX_SUBGRAPH_DEPTH)
        return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "subgraphs nested deeper than %d levels",
                       MAX_SUBGRAPH_DEPTH);
    if (gp->n_input != n_ins)
        return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "subgraph '%s' takes %zu inputs, %zu "
                         "given", onnx_str(gp->name), gp->n_input, n_ins);
    onnx_scope sc;
    im->depth++;
    loom_status st = scope_init(im, &sc, parent, gp);
    for (size_t i = 0; i < n_ins && st == LOOM_OK; i++)
        st = onnx_define(im, &sc, gp->input[i]->name, ins[i]);
    if (st == LOOM_OK)
        st = build_body(im, &sc);
    for (size_t i = 0; i < gp->n_output && st == LOOM_OK; i++) {
        const char *name = onnx_str(gp->output[i]->name);
        int r = onnx_lookup(im, &sc, name, &outs[i]);
        if (r < 0)
            st = im->status;
        else if (r == 0)
            st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "subgraph '%s': output '%s' is not "
                         "computed by any node", onnx_str(gp->name), name);
    }
    im->depth--;
    scope_free(&sc);
    return st;
}

/* ---- graph inputs ------------------------------------------------------------------------- */

static const loom_onnx_shape *option_shape(const onnx_import *im, const char *name)
{
    for (size_t i = 0; i < im->opt.n_shapes; i++)
        if (im->opt.shapes[i].input && strcmp(im->opt.shapes[i].input, name) == 0)
            return &im->opt.shapes[i];
    return NULL;
}

static int option_dim(const onnx_import *im, const char *name, int64_t *value)
{
    for (size_t i = 0; i < im->opt.n_dims; i++)
        if (im->opt.dims[i].name && strcmp(im->opt.dims[i].name, name) == 0) {
            *value = im->opt.dims[i].value;
            return 1;
        }
    return 0;
}

static loom_status declare_input(onnx_import *im, onnx_scope *sc, const Onnx__ValueInfoProto *vi)
{
    const char *name = onnx_str(vi->name);
    if (!*name)
        return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "a graph input has no name");
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "input '%s' is not a tensor (sequences, maps "
                       "and optionals are not supported)", name);
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    int32_t et = tt->has_elem_type ? tt->elem_type : 0;
    loom_dtype dtype = onnx_dtype_from_onnx(et);
    if (dtype == LOOM_DTYPE_UNDEFINED)
        return onnx_fail(im, et ? LOOM_ERR_UNSUPPORTED : LOOM_ERR_INVALID_ARGUMENT,
                       "input '%s' has dtype %s (%d), which Loom does not support", name,
                       onnx_onnx_type_name(et), (int)et);
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank;
    for (size_t i = 0; i < im->opt.n_bindings; i++) {
        const loom_onnx_binding *b = &im->opt.bindings[i];
        if (!b->input || strcmp(b->input, name) != 0)
            continue;
        if (!b->value || loom_tensor_dtype(b->value) != dtype)
            return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s' is bound to a %s tensor; "
                           "the model declares %s", name,
                           b->value ? loom_dtype_name(loom_tensor_dtype(b->value)) : "NULL",
                           loom_dtype_name(dtype));
        rank = loom_tensor_rank(b->value);
        loom_tensor_dims(b->value, dims);
        loom_value v = loom_constant(im->g, name, dtype, rank, dims, loom_tensor_data(b->value));
        if (v == LOOM_NO_VALUE)
            return onnx_fail_builder(im, im->g->error);
        onnx_mark_read(im, v);
        return onnx_define(im, sc, name, v);
    }
    const loom_onnx_shape *os = option_shape(im, name);
    if (os) {
        if (os->rank > LOOM_MAX_RANK || (os->rank && !os->dims))
            return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s': the shape given in "
                           "options has rank %u (dims %s)", name, os->rank,
                           os->dims ? "given" : "NULL");
        rank = os->rank;
        for (uint32_t k = 0; k < rank; k++) {
            if (os->dims[k] < 0)
                return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s': the shape given in "
                               "options has a negative dimension %u (%lld)", name, k,
                               (long long)os->dims[k]);
            dims[k] = os->dims[k];
        }
    } else {
        const Onnx__TensorShapeProto *sp = tt->shape;
        if (!sp)
            return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s' has no shape in the model; "
                           "give its data with -i %s=FILE (loom run), or its shape in "
                           "options.shapes (C API)", name, name);
        if (sp->n_dim > LOOM_MAX_RANK)
            return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "input '%s' has rank %zu; Loom's maximum "
                           "is %d", name, sp->n_dim, LOOM_MAX_RANK);
        rank = (uint32_t)sp->n_dim;
        for (uint32_t k = 0; k < rank; k++) {
            const Onnx__TensorShapeProto__Dimension *d = sp->dim[k];
            if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                d->dim_value >= 0) {
                dims[k] = d->dim_value;
                continue;
            }
            int symbolic = d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                           d->dim_param && *d->dim_param;
            if (symbolic && option_dim(im, d->dim_param, &dims[k])) {
                if (dims[k] < 0)
                    return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u "
                                   "('%s') is given the negative value %lld in options", name, k,
                                   d->dim_param, (long long)dims[k]);
                continue;
            }
            if (im->opt.default_dim > 0) {
                dims[k] = im->opt.default_dim;
                continue;
            }
            /* Read by CLI users and C programmers alike: both remedies, each in its own terms. */
            if (symbolic)
                return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u ('%s') "
                               "has no value; give it with --dim %s=VALUE (loom), or in "
                               "options.dims or options.shapes (C API)", name, k, d->dim_param,
                               d->dim_param);
            return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u has no "
                           "value (%s in the model); give the input's data with -i %s=FILE "
                           "(loom run), or its shape in options.shapes (C API)", name, k,
                           d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                               ? "negative"
                               : "unnamed",
                           name);
        }
    }
    loom_value v = loom_input(im->g, name, dtype, rank, dims);
    if (v == LOOM_NO_VALUE)
        return onnx_fail_builder(im, im->g->error);
    /* An input the model declares but never reads is valid ONNX; the caller still passes it. */
    onnx_mark_read(im, v);
    return onnx_define(im, sc, name, v);
}

/* ---- graph outputs ------------------------------------------------------------------------ */

static loom_status add_output(onnx_import *im, onnx_scope *sc, const Onnx__ValueInfoProto *vo)
{
    const char *name = onnx_str(vo->name);
    loom_value v;
    int r = onnx_lookup(im, sc, name, &v);
    if (r < 0)
        return im->status;
    if (r == 0)
        return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "graph output '%s' is not computed by "
                       "any node", name);
    if (onnx_is_seq(v))
        return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "graph output '%s' is a sequence; Loom's "
                         "graphs give tensors only (sequences live inside the model)", name);
    const graph_value *val = &im->g->values[v];
    if (val->kind != GRAPH_VALUE_NODE || val->output_index >= 0) {
        /* An output that is an input, a constant (folded) or already another output gets a
         * node of its own: renaming the input would change what callers pass, and a run
         * writes every output. */
        loom_value copy;
        graph_set_folding(im->g, 0, NULL);
        loom_status st = loom_graph_op(im->g, "Identity", NULL, &v, 1, NULL, 0, &copy, 1);
        graph_set_folding(im->g, im->eval != NULL, im->eval);
        if (st != LOOM_OK)
            return onnx_fail_builder(im, st);
        v = copy;
    }
    const char *n = claim_name(im, name);
    loom_status st = loom_output(im->g, v, n);
    if (st != LOOM_OK)
        return onnx_fail_builder(im, st);
    return LOOM_OK;
}

/* ---- dead nodes ------------------------------------------------------------------------------
 * A node can be left without readers after it was built: when only a node evaluated here read
 * it (Shape of an intermediate value), or only the branch of If that a constant condition did
 * not take. The graph refuses such dead nodes, so they are removed; their outputs stay behind as
 * data-less constants that nothing reads (value handles must stay valid). */

static void prune_dead_nodes(loom_graph *g)
{
    size_t n = g->n_nodes;
    unsigned char *dead = calloc(n + 1, 1);
    if (!dead)
        return; /* the check then names the dead node */
    size_t n_dead = 0;
    for (size_t i = n; i-- > 0;) {
        const graph_node *node = &g->nodes[i];
        int used = 0;
        for (uint32_t o = 0; o < node->n_outputs && !used; o++) {
            const graph_value *val = &g->values[node->outputs[o]];
            used = val->n_consumers || val->output_index >= 0;
        }
        if (used)
            continue;
        dead[i] = 1;
        n_dead++;
        for (uint32_t k = 0; k < node->n_inputs; k++) {
            loom_value v = node->inputs[k];
            if (v == LOOM_NO_VALUE)
                continue;
            g->values[v].n_consumers--;
            g->values[v].folded_uses++; /* read by a node that was removed, not left unused */
        }
    }
    if (!n_dead) {
        free(dead);
        return;
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        graph_node *node = &g->nodes[i];
        if (dead[i]) {
            for (uint32_t o = 0; o < node->n_outputs; o++) {
                graph_value *val = &g->values[node->outputs[o]];
                val->kind = GRAPH_VALUE_CONSTANT;
                val->producer = -1;
                val->data = NULL;
                val->data_owned = 0;
                val->folded_uses++;
            }
            free(node->name);
            free(node->inputs);
            free(node->outputs);
            loom_attr_list_free(&node->attrs);
            continue;
        }
        if (w != i)
            g->nodes[w] = *node;
        for (uint32_t o = 0; o < g->nodes[w].n_outputs; o++)
            g->values[g->nodes[w].outputs[o]].producer = (int32_t)w;
        w++;
    }
    g->n_nodes = w;
    free(dead);
}

/* ---- operators Loom lacks: all of them, named at once --------------------------------------- */

typedef struct op_list {
    char **names;
    size_t n, cap;
    size_t nodes;
} op_list;

static int list_add(op_list *l, const char *domain, const char *op)
{
    size_t len = strlen(domain) + strlen(op) + 2;
    char *s = malloc(len);
    if (!s)
        return 0;
    snprintf(s, len, "%s%s%s", domain, *domain ? "." : "", op);
    l->nodes++;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->names[i], s) == 0) {
            free(s);
            return 1;
        }
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 8;
        char **p = realloc(l->names, c * sizeof *p);
        if (!p) {
            free(s);
            return 0;
        }
        l->names = p;
        l->cap = c;
    }
    l->names[l->n++] = s;
    return 1;
}

static int collect_unsupported(const onnx_import *im, const Onnx__GraphProto *gp, int depth,
                               op_list *l)
{
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *n = gp->node[i];
        if (!onnx_node_supported(im, n)) {
            const char *dom = onnx_str(n->domain);
            if (strcmp(dom, "ai.onnx") == 0)
                dom = "";
            const char *op = onnx_str(n->op_type);
            if (!list_add(l, dom, *op ? op : "(no op type)"))
                return 0;
            continue;
        }
        if (depth >= MAX_SUBGRAPH_DEPTH)
            continue;
        for (size_t a = 0; a < n->n_attribute; a++)
            if (n->attribute[a]->g &&
                !collect_unsupported(im, n->attribute[a]->g, depth + 1, l))
                return 0;
    }
    return 1;
}

/* Whether every node of GP (no subgraphs) is an operator of the default domain whose opset-1
 * definition is still the one opsets 6 to 18 use (one version, no attributes): a model of
 * opset 1 to 5 made only of them reads as if it were opset 6. */
static int unchanged_since_1(const char *op)
{
    static const char *const ops[] = {"GlobalAveragePool", "GlobalMaxPool", "Not", "Softplus",
                                      "Softsign", NULL};
    for (size_t k = 0; ops[k]; k++)
        if (strcmp(ops[k], op) == 0)
            return 1;
    return 0;
}

static int only_unchanged_since_1(const Onnx__GraphProto *gp)
{
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *n = gp->node[i];
        const char *d = onnx_str(n->domain);
        if ((*d && strcmp(d, "ai.onnx") != 0) || n->n_attribute ||
            !unchanged_since_1(onnx_str(n->op_type)))
            return 0;
    }
    return gp->n_node > 0;
}

void onnx_op_opsets(const char *op, int *lo, int *hi)
{
    *lo = unchanged_since_1(op) ? 1 : ONNX_MIN_OPSET;
    *hi = ONNX_MAX_OPSET;
}

static loom_status check_ops(onnx_import *im, const Onnx__GraphProto *gp)
{
    op_list l = {0};
    loom_status st = LOOM_OK;
    if (!collect_unsupported(im, gp, 0, &l)) {
        st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    } else if (l.n) {
        size_t len = 1;
        for (size_t i = 0; i < l.n; i++)
            len += strlen(l.names[i]) + 2;
        char *all = malloc(len);
        if (!all) {
            st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        } else {
            all[0] = '\0';
            for (size_t i = 0; i < l.n; i++) {
                if (i)
                    strcat(all, ", ");
                strcat(all, l.names[i]);
            }
            char opset[32] = "no default opset";
            if (im->opset)
                snprintf(opset, sizeof opset, "opset %lld", (long long)im->opset);
            st = onnx_fail(im, LOOM_ERR_UNSUPPORTED, "unsupported ops (%s): %.600s (%zu node%s)",
                         opset, all, l.nodes, l.nodes == 1 ? "" : "s");
            free(all);
        }
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.names[i]);
    free(l.names);
    return st;
}

/* ---- the model ------------------------------------------------------------------------------ */

static loom_status import_model(onnx_import *im, const Onnx__ModelProto *m)
{
    const Onnx__GraphProto *gp = m->graph;
    if (!gp)
        return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "the model has no graph");
    int have_opset = 0;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        const char *d = onnx_str(o->domain);
        if (!*d || strcmp(d, "ai.onnx") == 0) {
            im->opset = o->has_version ? o->version : 0;
            have_opset = 1;
        }
    }
    /* Operators first: a model made only of other domains' operators (training, ML) is
     * unsupported for them, whatever its default opset. */
    loom_status st = check_ops(im, gp);
    if (st != LOOM_OK)
        return st;
    if (!have_opset)
        return onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "the model imports no opset of the "
                       "default ONNX domain");
    /* Opset 6 is read too: the ONNX backend tests converted from PyTorch use it, and what
     * changed in 7 (legacy broadcasting, is_test, consumed_inputs) is rewritten in
     * onnx_nodes.c. Opsets 1 to 5 only for models of operators unchanged since opset 1. */
    if ((im->opset < ONNX_MIN_OPSET && !(im->opset >= 1 && only_unchanged_since_1(gp))) ||
        im->opset > ONNX_MAX_OPSET)
        return onnx_fail(im, LOOM_ERR_UNSUPPORTED, "opset %lld is not supported (Loom imports "
                       "opsets %d to %d)", (long long)im->opset, ONNX_MIN_OPSET, ONNX_MAX_OPSET);

    im->g = loom_graph_create(gp->name && *gp->name ? gp->name : "model");
    if (!im->g)
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    graph_raw_handles(im->g); /* the importer indexes g->values with the handles it gets */
    graph_set_folding(im->g, im->eval != NULL, im->eval);
    onnx_scope root;
    st = scope_init(im, &root, NULL, gp);
    /* Inputs that are also initializers (models before IR version 4 list both) are constants
     * with a default value: Loom treats them as constants. */
    for (size_t i = 0; i < gp->n_input && st == LOOM_OK; i++)
        if (!onnx_smap_get(&root.inits, onnx_str(gp->input[i]->name), NULL))
            st = declare_input(im, &root, gp->input[i]);
    /* A shape given for a name the model does not have as an input is a typo to report, not
     * to ignore. */
    for (size_t i = 0; i < im->opt.n_shapes && st == LOOM_OK; i++) {
        const char *name = im->opt.shapes[i].input;
        loom_value v = name ? loom_graph_find_value(im->g, name) : LOOM_NO_VALUE;
        if (v == LOOM_NO_VALUE || im->g->values[v].kind != GRAPH_VALUE_INPUT)
            st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "options->shapes[%zu] names '%s', which "
                         "is not an input of the model", i, name ? name : "(null)");
    }
    for (size_t i = 0; i < im->opt.n_bindings && st == LOOM_OK; i++) {
        const char *name = im->opt.bindings[i].input;
        loom_value v = name ? loom_graph_find_value(im->g, name) : LOOM_NO_VALUE;
        if (v == LOOM_NO_VALUE)
            st = onnx_fail(im, LOOM_ERR_INVALID_ARGUMENT, "options->bindings[%zu] names '%s', "
                         "which is not an input of the model", i, name ? name : "(null)");
    }
    if (st == LOOM_OK)
        st = build_body(im, &root);
    for (size_t i = 0; i < gp->n_output && st == LOOM_OK; i++)
        st = add_output(im, &root, gp->output[i]);
    scope_free(&root);
    if (st != LOOM_OK)
        return st;
    prune_dead_nodes(im->g);
    st = loom_graph_check(im->g);
    if (st != LOOM_OK)
        return onnx_fail_builder(im, st);
    return LOOM_OK;
}

/* ---- nesting, before unpacking ----------------------------------------------------------------
 * A walk over the protobuf wire format with an explicit stack, guided by protobuf-c's own
 * descriptors (so it knows which length-delimited fields are messages, for any version of
 * onnx.proto). Whatever it calls corrupt, protobuf-c would refuse too. */

typedef enum { WIRE_OK, WIRE_CORRUPT, WIRE_TOO_DEEP } wire_verdict;

static int wire_varint(const uint8_t *p, size_t end, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && *pos < end; shift += 7) {
        uint8_t b = p[(*pos)++];
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static wire_verdict wire_check_depth(const uint8_t *p, size_t size,
                                     const ProtobufCMessageDescriptor *desc, unsigned max_depth)
{
    struct {
        size_t end;
        const ProtobufCMessageDescriptor *desc;
    } stack[MAX_MESSAGE_DEPTH + 1];
    if (max_depth > MAX_MESSAGE_DEPTH)
        max_depth = MAX_MESSAGE_DEPTH;
    unsigned top = 0;
    stack[0].end = size;
    stack[0].desc = desc;
    size_t pos = 0;
    for (;;) {
        while (pos == stack[top].end) {
            if (top == 0)
                return WIRE_OK;
            top--;
        }
        size_t end = stack[top].end;
        uint64_t tag, len;
        if (!wire_varint(p, end, &pos, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
            return WIRE_CORRUPT;
        switch (tag & 7) {
        case 0:
            if (!wire_varint(p, end, &pos, &len))
                return WIRE_CORRUPT;
            break;
        case 1:
            if (end - pos < 8)
                return WIRE_CORRUPT;
            pos += 8;
            break;
        case 5:
            if (end - pos < 4)
                return WIRE_CORRUPT;
            pos += 4;
            break;
        case 2: {
            if (!wire_varint(p, end, &pos, &len) || len > end - pos)
                return WIRE_CORRUPT;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(stack[top].desc, (unsigned)(tag >> 3));
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && f->descriptor) {
                if (top + 1 > max_depth)
                    return WIRE_TOO_DEEP;
                top++;
                stack[top].end = pos + (size_t)len;
                stack[top].desc = f->descriptor;
            } else {
                pos += (size_t)len;
            }
            break;
        }
        default: /* groups (protobuf-c has none) and undefined wire types */
            return WIRE_CORRUPT;
        }
    }
}

/* OWNED (may be NULL) is freed as soon as DATA is parsed: the parsed model holds its own copy
 * of every weight, so the file's bytes need not stay alongside it. */
static loom_status load(const void *data, size_t size, void *owned, const char *base_dir,
                        const char *file, const loom_onnx_options *options, graph_eval_fn eval,
                        loom_graph **out)
{
    onnx_import im;
    memset(&im, 0, sizeof im);
    im.eval = eval;
    im.src.file = file;
    im.src.base_dir = base_dir;
    if (options) {
        if (options->struct_size < sizeof(uint32_t)) {
            free(owned);
            return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "options->struct_size is %u; set it "
                           "to sizeof(loom_onnx_options)", options->struct_size);
        }
        size_t n = options->struct_size < sizeof im.opt ? options->struct_size : sizeof im.opt;
        memcpy(&im.opt, options, n);
        if ((im.opt.n_dims && !im.opt.dims) || (im.opt.n_shapes && !im.opt.shapes) ||
            (im.opt.n_bindings && !im.opt.bindings)) {
            free(owned);
            return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "options: n_dims, n_shapes or "
                           "n_bindings is set but its array is NULL");
        }
    }
    if (!data && size)
        return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "data is NULL");
    wire_verdict wv = size ? wire_check_depth(data, size, &onnx__model_proto__descriptor,
                                              MAX_MESSAGE_DEPTH)
                           : WIRE_OK;
    if (wv == WIRE_TOO_DEEP) {
        free(owned);
        return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "subgraphs or types are nested more "
                         "than %d protobuf messages deep (If or Loop inside If or Loop, sequence "
                         "of sequence, ...), deeper than Loom reads", MAX_MESSAGE_DEPTH);
    }
    Onnx__ModelProto *m = wv == WIRE_OK ? onnx__model_proto__unpack(NULL, size, data) : NULL;
    free(owned);
    if (!m)
        return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "not a valid ONNX model (the protobuf "
                       "is truncated or corrupt)");
    loom_status st = import_model(&im, m);
    onnx__model_proto__free_unpacked(m, NULL);
    for (size_t i = 0; i < im.n_allocs; i++)
        free(im.allocs[i]);
    free(im.allocs);
    if (st != LOOM_OK) {
        loom_graph_destroy(im.g);
        return st;
    }
    *out = im.g;
    return LOOM_OK;
}

loom_status onnx_unpack(const void *data, size_t size, const char *file, Onnx__ModelProto **out)
{
    onnx_import im;
    memset(&im, 0, sizeof im);
    im.src.file = file;
    *out = NULL;
    wire_verdict wv = size ? wire_check_depth(data, size, &onnx__model_proto__descriptor,
                                              MAX_MESSAGE_DEPTH)
                           : WIRE_OK;
    if (wv == WIRE_TOO_DEEP)
        return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "subgraphs or types are nested more "
                         "than %d protobuf messages deep (If or Loop inside If or Loop, sequence "
                         "of sequence, ...), deeper than Loom reads", MAX_MESSAGE_DEPTH);
    *out = wv == WIRE_OK ? onnx__model_proto__unpack(NULL, size, data) : NULL;
    if (!*out)
        return onnx_fail(&im, LOOM_ERR_INVALID_ARGUMENT, "not a valid ONNX model (the protobuf "
                       "is truncated or corrupt)");
    return LOOM_OK;
}

loom_status onnx_import_unpacked(const Onnx__ModelProto *m, const onnx_source *src,
                                 const loom_onnx_options *options, graph_eval_fn eval,
                                 onnx_weights *weights, onnx_import_report *report,
                                 loom_graph **out)
{
    onnx_import im;
    memset(&im, 0, sizeof im);
    im.eval = eval;
    im.src = *src;
    im.weights = weights;
    im.report = report;
    *out = NULL;
    if (options) {
        size_t n = options->struct_size < sizeof im.opt ? options->struct_size : sizeof im.opt;
        memcpy(&im.opt, options, n);
    }
    loom_status st = import_model(&im, m);
    for (size_t i = 0; i < im.n_allocs; i++)
        free(im.allocs[i]);
    free(im.allocs);
    if (st != LOOM_OK) {
        loom_graph_destroy(im.g);
        return st;
    }
    *out = im.g;
    return LOOM_OK;
}

loom_status onnx_import_memory(const void *data, size_t size, const char *base_dir,
                               const loom_onnx_options *options, graph_eval_fn eval,
                               loom_graph **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_onnx_load_memory: out is NULL");
    *out = NULL;
    return load(data, size, NULL, base_dir, "ONNX model", options, eval, out);
}

loom_status onnx_import_file(const char *path, const loom_onnx_options *options,
                             graph_eval_fn eval, loom_graph **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_onnx_load: out is NULL");
    *out = NULL;
    if (!path)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_onnx_load: path is NULL");
    void *data;
    size_t size;
    loom_status st = onnx_read_file(path, &data, &size);
    if (st != LOOM_OK)
        return st;
    /* External data lies beside the model. */
    size_t len = strlen(path);
    char *dir = malloc(len + 2);
    if (!dir) {
        free(data);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    memcpy(dir, path, len + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    st = load(data, size, data, dir, path, options, eval, out);
    free(dir);
    return st;
}
