/*
 * Loop (opsets 1, 11, 13, 16) and Scan (opset 8 with its batch axis; 9, 11, 16) unrolled into
 * the graph while it is built: the body is built once per iteration in a scope of its own whose
 * inputs are bound to that iteration's values (iteration number, condition, loop-carried values,
 * scan slices), each copy's nodes named "<node>/<iteration>/<body node>", and the per-iteration
 * scan outputs stacked (Unsqueeze + Concat) into the node's outputs. Folding happens on the way,
 * so a body over constants becomes constants. See onnx_control_flow.h for why and for the limit.
 */
#include "graph/onnx/onnx_control_flow.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared helpers ------------------------------------------------------------------------- */

loom_status onnx_cf_fail(onnx_import *im, const Onnx__NodeProto *node, loom_status st,
                         const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return onnx_fail(im, st, "node '%.200s' (%.100s): %s", onnx_node_name(node),
                     onnx_str(node->op_type), msg);
}

loom_value onnx_cf_op1(onnx_import *im, const char *op, const char *name, const loom_value *in,
                       size_t n_in, const loom_attr *attrs, size_t n_attrs)
{
    loom_value out = LOOM_NO_VALUE;
    loom_status st = loom_graph_op(im->g, op, name, in, n_in, attrs, n_attrs, &out, 1);
    if (st != LOOM_OK) {
        onnx_fail_builder(im, st);
        return LOOM_NO_VALUE;
    }
    return out;
}

loom_value onnx_cf_unsqueeze(onnx_import *im, loom_value x, int64_t axis, const char *name)
{
    loom_value axes = onnx_const_i64s(im, 1, &axis);
    if (axes == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_value in2[2] = {x, axes};
    return onnx_cf_op1(im, "Unsqueeze", name, in2, 2, NULL, 0);
}

loom_status onnx_cf_bind(onnx_import *im, onnx_scope *sc, const char *name, loom_value v,
                         int rename)
{
    loom_status st = onnx_define(im, sc, name, v);
    if (st == LOOM_OK && rename)
        st = onnx_name_value(im, v, name);
    return st;
}

void onnx_cf_mark_new(onnx_import *im, size_t first_new)
{
    for (size_t v = first_new; v < im->g->n_values; v++) {
        const graph_value *val = &im->g->values[v];
        if (val->kind == GRAPH_VALUE_CONSTANT && !val->n_consumers && !val->folded_uses &&
            val->output_index < 0)
            onnx_mark_read(im, (loom_value)v);
    }
}

const Onnx__AttributeProto *onnx_cf_attr(const Onnx__NodeProto *node, const char *name)
{
    for (size_t a = 0; a < node->n_attribute; a++)
        if (node->attribute[a]->name && strcmp(node->attribute[a]->name, name) == 0)
            return node->attribute[a];
    return NULL;
}

int onnx_cf_op(const char *domain, const char *op)
{
    static const char *const ops[] = {"Loop", "Scan", "SequenceEmpty", "SequenceConstruct",
                                      "SequenceAt", "SequenceInsert", "SequenceErase",
                                      "SequenceLength", "SplitToSequence", "ConcatFromSequence",
                                      NULL};
    if (domain && *domain && strcmp(domain, "ai.onnx") != 0)
        return 0;
    for (size_t k = 0; ops[k]; k++)
        if (strcmp(op, ops[k]) == 0)
            return 1;
    return 0;
}

int onnx_cf_has_seq(const loom_value *in, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (onnx_is_seq(in[k]))
            return 1;
    return 0;
}

/* ---- attributes ------------------------------------------------------------------------------ */

static int attr_is(const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t)
{
    if (a->has_type)
        return a->type == t;
    /* Files from before IR version 2 have no type. */
    switch (t) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return a->has_i;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return a->n_ints > 0;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return a->g != NULL;
    default: return 0;
    }
}

/* Refuse an attribute of NODE not among KNOWN (NULL-terminated). */
static loom_status check_attr_names(onnx_import *im, const Onnx__NodeProto *node,
                                    const char *const *known)
{
    for (size_t a = 0; a < node->n_attribute; a++) {
        const char *name = onnx_str(node->attribute[a]->name);
        int ok = 0;
        for (size_t k = 0; known[k] && !ok; k++)
            ok = strcmp(name, known[k]) == 0;
        if (!ok)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "has attribute '%.100s', "
                                "which %s does not have", name, onnx_str(node->op_type));
    }
    return LOOM_OK;
}

/* The graph attribute 'body' of NODE into *OUT. */
static loom_status body_attr(onnx_import *im, const Onnx__NodeProto *node,
                             const Onnx__GraphProto **out)
{
    const Onnx__AttributeProto *a = onnx_cf_attr(node, "body");
    if (!a || !a->g || !attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH))
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "needs its 'body' attribute, "
                            "a graph");
    *out = a->g;
    return LOOM_OK;
}

/* Optional ints attribute NAME with N entries (0 when absent: *V is then NULL). */
static loom_status ints_attr(onnx_import *im, const Onnx__NodeProto *node, const char *name,
                             size_t n, const int64_t **v)
{
    *v = NULL;
    const Onnx__AttributeProto *a = onnx_cf_attr(node, name);
    if (!a)
        return LOOM_OK;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) || a->n_ints != n)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must hold %zu "
                            "ints, one per %s", name, n, strstr(name, "output") ? "scan output"
                                                                                : "scan input");
    *v = a->ints;
    return LOOM_OK;
}

/* ---- values ---------------------------------------------------------------------------------- */

/* The one element of constant V as an integer (bool and integer dtypes): 1, else 0 (not a
 * constant, or not one element of such a dtype). */
static int const_int(const onnx_import *im, loom_value v, int64_t *out)
{
    const void *data = onnx_const_data(im, v);
    loom_tensor_desc d = onnx_desc(im, v);
    if (!data || loom_tensor_desc_numel(&d) != 1)
        return 0;
    switch (d.dtype) {
    case LOOM_DTYPE_I64: *out = *(const int64_t *)data; return 1;
    case LOOM_DTYPE_I32: *out = *(const int32_t *)data; return 1;
    case LOOM_DTYPE_BOOL:
    case LOOM_DTYPE_U8: *out = *(const uint8_t *)data != 0; return 1;
    default: return 0;
    }
}

/* The name a value of NODE's input K has in the model, for messages. */
static const char *input_name(const Onnx__NodeProto *node, size_t k)
{
    return k < node->n_input ? onnx_str(node->input[k]) : "";
}

/* Declared type of VI when it is a tensor whose dtype Loom has and whose dims are all known. */
static int declared_desc(const Onnx__ValueInfoProto *vi, loom_tensor_desc *d)
{
    const Onnx__TypeProto *tp = vi ? vi->type : NULL;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type ||
        !tp->tensor_type->shape || tp->tensor_type->shape->n_dim > LOOM_MAX_RANK - 1)
        return 0;
    memset(d, 0, sizeof *d);
    d->dtype = onnx_dtype_from_onnx(tp->tensor_type->elem_type);
    if (d->dtype == LOOM_DTYPE_UNDEFINED)
        return 0;
    const Onnx__TensorShapeProto *sp = tp->tensor_type->shape;
    d->rank = (uint32_t)sp->n_dim;
    for (size_t k = 0; k < sp->n_dim; k++) {
        if (sp->dim[k]->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
            sp->dim[k]->dim_value < 0)
            return 0;
        d->dims[k] = sp->dim[k]->dim_value;
    }
    return 1;
}

/* An empty constant: ELEM's shape with a dim of 0 inserted at AXIS (what stacking no iteration
 * gives). */
static loom_value empty_stack(onnx_import *im, const loom_tensor_desc *elem, int64_t axis)
{
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = elem->dtype;
    t.rank = elem->rank + 1;
    for (uint32_t k = 0, j = 0; k < t.rank; k++)
        t.dims[k] = (int64_t)k == axis ? 0 : elem->dims[j++];
    t.data = malloc(1);
    if (!t.data) {
        onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    return onnx_own_constant(im, NULL, &t);
}

/* Largest scan slice made of zeros to learn a body's output shapes from (scan_core). */
#define MAX_PROBE_BYTES ((size_t)1 << 24)

/* A constant of zeros of shape ELEM, standing for a scan slice when a scan has none; refused
 * naming NODE past MAX_PROBE_BYTES. */
static loom_value zeros(onnx_import *im, const Onnx__NodeProto *node,
                        const loom_tensor_desc *elem)
{
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = elem->dtype;
    t.rank = elem->rank;
    memcpy(t.dims, elem->dims, sizeof t.dims);
    int64_t numel;
    size_t es = loom_dtype_size(t.dtype);
    if (!loom_dims_numel_checked(t.rank, t.dims, es, &numel) ||
        (size_t)numel * es > MAX_PROBE_BYTES) {
        onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "its scan inputs are empty along the scan "
                     "axis and its body does not declare its outputs' shapes; Loom would learn "
                     "them from one iteration on zeros, but a slice is larger than %zu bytes",
                     MAX_PROBE_BYTES);
        return LOOM_NO_VALUE;
    }
    if (!(t.data = calloc(1, (size_t)numel * es + 1))) {
        onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    return onnx_own_constant(im, NULL, &t);
}

/* ---- building a body ------------------------------------------------------------------------- */

/* A copy of GP whose nodes are named "PREFIX/<their name>", so that the copies of one body in
 * the unrolled graph are told apart in traces and messages. Shallow: inputs, outputs and
 * attributes are GP's. Lives until the import ends; NULL when out of memory (recorded). */
static const Onnx__GraphProto *renamed_body(onnx_import *im, const Onnx__GraphProto *gp,
                                            const char *prefix)
{
    Onnx__GraphProto *c = onnx_alloc(im, sizeof *c);
    Onnx__NodeProto **nodes = onnx_alloc(im, (gp->n_node + 1) * sizeof *nodes);
    Onnx__NodeProto *copies = onnx_alloc(im, (gp->n_node + 1) * sizeof *copies);
    if (!c || !nodes || !copies) {
        onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    *c = *gp;
    for (size_t i = 0; i < gp->n_node; i++) {
        copies[i] = *gp->node[i];
        const char *own = onnx_node_name(gp->node[i]);
        size_t len = strlen(prefix) + strlen(own) + 2;
        char *name = onnx_alloc(im, len);
        if (!name) {
            onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            return NULL;
        }
        snprintf(name, len, "%s/%s", prefix, own);
        copies[i].name = name;
        nodes[i] = &copies[i];
    }
    c->node = nodes;
    return c;
}

/* Refuse, naming NODE, when N_ITER more copies of BODY would take the import's unrolling past
 * ONNX_MAX_EXPANDED body nodes. */
static loom_status check_fits(onnx_import *im, const Onnx__NodeProto *node,
                              const Onnx__GraphProto *body, uint64_t n_iter)
{
    uint64_t cost = body->n_node ? body->n_node : 1;
    uint64_t left = im->expanded < ONNX_MAX_EXPANDED ? ONNX_MAX_EXPANDED - im->expanded : 0;
    if (n_iter <= left / cost)
        return LOOM_OK;
    char before[80] = "";
    if (im->expanded)
        snprintf(before, sizeof before, "; %zu were built before", im->expanded);
    return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "unrolling %llu iteration%s of its "
                        "%zu-node body would build more than %d nodes, Loom's limit (Loom "
                        "unrolls Loop and Scan when it builds the graph%s)",
                        (unsigned long long)n_iter, n_iter == 1 ? "" : "s", body->n_node,
                        ONNX_MAX_EXPANDED, before);
}

/* Build one copy of BODY (iteration ITER of NODE; PREFIX, when non-NULL, goes before the
 * iteration in node names) with its inputs bound to INS; its outputs into OUTS. */
static loom_status run_body(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                            const Onnx__GraphProto *body, const char *prefix, const char *iter,
                            const loom_value *ins, loom_value *outs)
{
    uint64_t cost = body->n_node ? body->n_node : 1;
    if (cost > ONNX_MAX_EXPANDED - (im->expanded < ONNX_MAX_EXPANDED ? im->expanded
                                                                      : ONNX_MAX_EXPANDED))
        return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "unrolling iteration %s%s%s of its "
                            "%zu-node body would take the nodes built by unrolling past %d, "
                            "Loom's limit (Loom unrolls Loop and Scan when it builds the graph; "
                            "%zu were built before)", iter, prefix ? " of " : "",
                            prefix ? prefix : "", body->n_node, ONNX_MAX_EXPANDED, im->expanded);
    im->expanded += (size_t)cost;
    char name[400];
    snprintf(name, sizeof name, "%.200s%s%.80s/%s", onnx_node_name(node), prefix ? "/" : "",
             prefix ? prefix : "", iter);
    const Onnx__GraphProto *copy = renamed_body(im, body, name);
    if (!copy)
        return im->status;
    return onnx_build_body(im, sc, copy, ins, body->n_input, outs);
}

/* A growing list of values. */
typedef struct vlist {
    loom_value *v;
    size_t n, cap;
} vlist;

static int vlist_push(vlist *l, loom_value v)
{
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 16;
        loom_value *p = realloc(l->v, c * sizeof *p);
        if (!p)
            return 0;
        l->v = p;
        l->cap = c;
    }
    l->v[l->n++] = v;
    return 1;
}

static void vlists_free(vlist *l, size_t n)
{
    for (size_t k = 0; l && k < n; k++)
        free(l[k].v);
    free(l);
}

/* The N values VALS (of one shape) stacked along a new axis AXIS (in [0, rank]), in the order
 * given (reversed when REVERSE); NAME names the nodes. */
static loom_value stack(onnx_import *im, const loom_value *vals, size_t n, int64_t axis,
                        int reverse, const char *name)
{
    loom_value *u = calloc(n + 1, sizeof *u);
    if (!u) {
        onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    char nm[400];
    for (size_t k = 0; k < n; k++) {
        snprintf(nm, sizeof nm, "%.300s/unsqueeze%zu", name, k);
        if ((u[k] = onnx_cf_unsqueeze(im, vals[reverse ? n - 1 - k : k], axis, nm)) ==
            LOOM_NO_VALUE) {
            free(u);
            return LOOM_NO_VALUE;
        }
    }
    loom_value out = u[0];
    if (n > 1) {
        loom_attr a = loom_attr_int("axis", axis);
        out = onnx_cf_op1(im, "Concat", name, u, n, &a, 1);
    }
    free(u);
    return out;
}

/* ---- Loop ------------------------------------------------------------------------------------ */

/* Loop(M, cond, v_initial...) -> (v_final..., scan_outputs...):
 *     for (i = 0; (M absent or i < M) and (cond absent or cond); i++)
 *         cond, v..., scan... = body(i, cond, v...)
 * with the condition the body computes read only when the node has a cond input (ONNX: with M
 * alone, the body's condition is ignored). Scan outputs stack each iteration's value along a
 * new first axis. */
static loom_status build_loop(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                              const loom_value *in, size_t n_in)
{
    static const char *const known[] = {"body", NULL};
    const Onnx__GraphProto *body = NULL;
    loom_status st;
    if ((st = check_attr_names(im, node, known)) != LOOM_OK ||
        (st = body_attr(im, node, &body)) != LOOM_OK)
        return st;
    if (n_in < 2)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "takes at least 2 inputs (M "
                            "and cond, either may be empty), %zu given", n_in);
    size_t n_carried = n_in - 2;
    if (body->n_input != n_carried + 2)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its body takes %zu inputs; "
                            "with %zu loop-carried value%s it must take %zu (iteration number, "
                            "condition, then the values)", body->n_input, n_carried,
                            n_carried == 1 ? "" : "s", n_carried + 2);
    if (body->n_output < n_carried + 1)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its body gives %zu outputs; "
                            "with %zu loop-carried value%s it must give at least %zu (condition, "
                            "the values, then any scan outputs)", body->n_output, n_carried,
                            n_carried == 1 ? "" : "s", n_carried + 1);
    size_t n_scan = body->n_output - 1 - n_carried;
    if (node->n_output != n_carried + n_scan)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "has %zu outputs; its body "
                            "gives %zu loop-carried value%s and %zu scan output%s, so it must "
                            "have %zu", node->n_output, n_carried, n_carried == 1 ? "" : "s",
                            n_scan, n_scan == 1 ? "" : "s", n_carried + n_scan);
    for (size_t k = 2; k < n_in; k++)
        if (in[k] == LOOM_NO_VALUE)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "loop-carried input %zu "
                                "is empty", k);
    if (onnx_is_seq(in[0]) || onnx_is_seq(in[1]))
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its %s is a sequence; it "
                            "must be a tensor", onnx_is_seq(in[0]) ? "trip count" : "condition");

    /* The trip count and the condition must be known now: Loom unrolls the loop. */
    int has_m = in[0] != LOOM_NO_VALUE, has_cond = in[1] != LOOM_NO_VALUE;
    int64_t trip = 0, cond = 1;
    for (int k = 0; k < 2; k++) {
        if (in[k] == LOOM_NO_VALUE)
            continue;
        loom_tensor_desc d = onnx_desc(im, in[k]);
        loom_dtype want = k ? LOOM_DTYPE_BOOL : LOOM_DTYPE_I64;
        if (d.dtype != want || loom_tensor_desc_numel(&d) != 1)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its %s ('%.200s') must be "
                                "one %s, not %s of %lld elements", k ? "condition" : "trip count",
                                input_name(node, (size_t)k), loom_dtype_name(want),
                                loom_dtype_name(d.dtype),
                                (long long)loom_tensor_desc_numel(&d));
        if (!const_int(im, in[k], k ? &cond : &trip)) {
            im->g->need_constant = (uint32_t)in[k] + 1; /* its value would do: say which */
            return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "its %s ('%.200s') is only "
                                "known at run time; Loom unrolls loops when it builds the graph "
                                "and needs it as a constant (bind the inputs it is computed "
                                "from)", k ? "condition" : "trip count",
                                input_name(node, (size_t)k));
        }
    }
    if (!has_m && !has_cond)
        return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "has neither a trip count nor a "
                            "condition: it would never end");
    /* A plain for loop says at once when it is too long; a loop with a condition (PyTorch's
     * while loops give M = INT64_MAX) is charged iteration by iteration. */
    if (has_m && !has_cond && trip > 0 &&
        (st = check_fits(im, node, body, (uint64_t)trip)) != LOOM_OK)
        return st;

    size_t first_new = im->g->n_values;
    size_t n_body_in = n_carried + 2;
    loom_value *ins = calloc(n_body_in + 1, sizeof *ins);
    loom_value *outs = calloc(body->n_output + 1, sizeof *outs);
    vlist *scans = calloc(n_scan + 1, sizeof *scans);
    if (!ins || !outs || !scans) {
        free(ins);
        free(outs);
        vlists_free(scans, n_scan);
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(ins + 2, in + 2, n_carried * sizeof *ins);
    ins[1] = has_cond ? in[1] : onnx_scalar_const(im, LOOM_DTYPE_BOOL, 1);
    if (ins[1] == LOOM_NO_VALUE)
        st = im->status;
    for (int64_t i = 0; st == LOOM_OK && (!has_m || i < trip) && cond; i++) {
        ins[0] = onnx_scalar_const(im, LOOM_DTYPE_I64, (double)i);
        if (ins[0] == LOOM_NO_VALUE) {
            st = im->status;
            break;
        }
        char iter[32];
        snprintf(iter, sizeof iter, "%lld", (long long)i);
        if ((st = run_body(im, sc, node, body, NULL, iter, ins, outs)) != LOOM_OK)
            break;
        memcpy(ins + 2, outs + 1, n_carried * sizeof *ins);
        for (size_t k = 0; k < n_scan && st == LOOM_OK; k++) {
            loom_value v = outs[1 + n_carried + k];
            if (onnx_is_seq(v))
                st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan output %zu of its "
                                  "body ('%.200s') is a sequence; scan outputs are tensors", k,
                                  onnx_str(body->output[1 + n_carried + k]->name));
            else if (!vlist_push(&scans[k], v))
                st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        if (st != LOOM_OK || !has_cond || (has_m && i + 1 >= trip))
            continue;
        /* The condition for the next iteration, which the body computed. */
        loom_value c = outs[0];
        loom_tensor_desc d = onnx_desc(im, c);
        if (onnx_is_seq(c) || d.dtype != LOOM_DTYPE_BOOL || loom_tensor_desc_numel(&d) != 1) {
            st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its body's condition output "
                              "('%.200s') must be one bool", onnx_str(body->output[0]->name));
        } else if (!const_int(im, c, &cond)) {
            im->g->need_constant = (uint32_t)c + 1;
            st = onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "the condition its body computes "
                              "in iteration %lld ('%.200s') is only known at run time; Loom "
                              "unrolls loops when it builds the graph and needs it as a "
                              "constant", (long long)i, onnx_str(body->output[0]->name));
        }
        ins[1] = c;
    }
    int probed = 0;
    /* Final loop-carried values: the last iteration's, or the initial ones. */
    for (size_t k = 0; k < n_carried && st == LOOM_OK; k++) {
        loom_value v = ins[2 + k];
        st = onnx_cf_bind(im, sc, node->output[k], v, !onnx_is_seq(v) && (size_t)v >= first_new);
    }
    for (size_t k = 0; k < n_scan && st == LOOM_OK; k++) {
        const char *oname = node->output[n_carried + k];
        if (!*oname)
            continue;
        char name[400];
        snprintf(name, sizeof name, "%.200s/scan%zu", onnx_node_name(node), k);
        loom_value y;
        if (scans[k].n) {
            y = stack(im, scans[k].v, scans[k].n, 0, 0, name);
        } else {
            /* No iteration: an empty stack of the body's declared output, or, when the body
             * does not declare it, of what one iteration would give (built for its shape;
             * the nodes are left unread and removed). */
            loom_tensor_desc e;
            if (!declared_desc(body->output[1 + n_carried + k], &e)) {
                if (!probed) {
                    ins[0] = onnx_scalar_const(im, LOOM_DTYPE_I64, 0);
                    st = ins[0] == LOOM_NO_VALUE
                             ? im->status
                             : run_body(im, sc, node, body, NULL, "shape", ins, outs);
                    if (st != LOOM_OK)
                        break;
                    probed = 1;
                }
                loom_value v = outs[1 + n_carried + k];
                if (onnx_is_seq(v)) {
                    st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan output %zu "
                                      "of its body is a sequence; scan outputs are tensors", k);
                    break;
                }
                e = onnx_desc(im, v);
            }
            y = e.rank < LOOM_MAX_RANK ? empty_stack(im, &e, 0) : LOOM_NO_VALUE;
            if (e.rank >= LOOM_MAX_RANK)
                st = onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "scan output %zu would have "
                                  "rank %u, past Loom's maximum of %d", k, e.rank + 1,
                                  LOOM_MAX_RANK);
        }
        if (st == LOOM_OK)
            st = y == LOOM_NO_VALUE ? im->status : onnx_cf_bind(im, sc, oname, y, 1);
    }
    for (size_t k = 0; k < n_in; k++)
        onnx_mark_read(im, in[k]); /* read by the loop even when no iteration used them */
    if (st == LOOM_OK)
        onnx_cf_mark_new(im, first_new);
    free(ins);
    free(outs);
    vlists_free(scans, n_scan);
    return st;
}

/* ---- Scan ------------------------------------------------------------------------------------ */

typedef struct scan_spec {
    const Onnx__GraphProto *body;
    size_t n_state, n_in, n_out;  /* N states, M scan inputs, K scan outputs */
    const int64_t *in_axes;      /* M entries or NULL (all 0) */
    const int64_t *in_dirs;      /* M entries or NULL (all forward) */
    const int64_t *out_axes;     /* K entries or NULL (all 0) */
    const int64_t *out_dirs;     /* K entries or NULL (all forward) */
} scan_spec;

/* AXIS of a tensor of rank R, in [-R, R-1], into [0, R-1]; -1 when out of range. */
static int64_t norm_axis(int64_t axis, int64_t r)
{
    if (axis < -r || axis >= r)
        return -1;
    return axis < 0 ? axis + r : axis;
}

/* One Scan over STATES (N) and SCANS (M) as SP says; RESULTS gets the final states then the
 * stacked scan outputs (N + K). PREFIX (NULL: none) goes into the unrolled nodes' names. */
static loom_status scan_core(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                             const scan_spec *sp, const char *prefix, const loom_value *states,
                             const loom_value *scans, loom_value *results)
{
    const Onnx__GraphProto *body = sp->body;
    size_t n_state = sp->n_state, n_in = sp->n_in, n_out = sp->n_out;
    int64_t len = -1;
    int64_t *axes = calloc(n_in + 1, sizeof *axes);
    loom_value *ins = calloc(n_state + n_in + 1, sizeof *ins);
    loom_value *outs = calloc(n_state + n_out + 1, sizeof *outs);
    vlist *lists = calloc(n_out + 1, sizeof *lists);
    loom_status st = LOOM_OK;
    if (!axes || !ins || !outs || !lists)
        st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t j = 0; j < n_in && st == LOOM_OK; j++) {
        loom_tensor_desc d = onnx_desc(im, scans[j]);
        int64_t a = sp->in_axes ? sp->in_axes[j] : 0;
        if ((axes[j] = norm_axis(a, d.rank)) < 0) {
            st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan input %zu has rank %u: "
                              "its scan axis %lld is out of range", j, d.rank, (long long)a);
            break;
        }
        int64_t l = d.dims[axes[j]];
        if (len >= 0 && l != len)
            st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan inputs have different "
                              "lengths (%lld and %lld along their scan axes)", (long long)len,
                              (long long)l);
        len = l;
    }
    for (size_t j = 0; j < n_in && st == LOOM_OK; j++) {
        int64_t dir = sp->in_dirs ? sp->in_dirs[j] : 0;
        if (dir != 0 && dir != 1)
            st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan input %zu has "
                              "direction %lld; 0 (forward) or 1 (reverse)", j, (long long)dir);
    }
    for (size_t k = 0; k < n_out && st == LOOM_OK; k++) {
        int64_t dir = sp->out_dirs ? sp->out_dirs[k] : 0;
        if (dir != 0 && dir != 1)
            st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan output %zu has "
                              "direction %lld; 0 (forward) or 1 (reverse)", k, (long long)dir);
    }
    /* Refused at once when too long, before anything is built. */
    if (st == LOOM_OK && len > 0)
        st = check_fits(im, node, body, (uint64_t)len);
    if (st == LOOM_OK)
        memcpy(ins, states, n_state * sizeof *ins);
    char base[300];
    snprintf(base, sizeof base, "%.200s%s%.80s", onnx_node_name(node), prefix ? "/" : "",
             prefix ? prefix : "");
    for (int64_t t = 0; st == LOOM_OK && t < len; t++) {
        for (size_t j = 0; j < n_in && st == LOOM_OK; j++) {
            int64_t idx = sp->in_dirs && sp->in_dirs[j] ? len - 1 - t : t;
            loom_value iv = onnx_scalar_const(im, LOOM_DTYPE_I64, (double)idx);
            char name[400];
            snprintf(name, sizeof name, "%s/%lld/scan_input%zu", base, (long long)t, j);
            loom_attr a = loom_attr_int("axis", axes[j]);
            loom_value in2[2] = {scans[j], iv};
            ins[n_state + j] = iv == LOOM_NO_VALUE
                                   ? LOOM_NO_VALUE
                                   : onnx_cf_op1(im, "Gather", name, in2, 2, &a, 1);
            if (ins[n_state + j] == LOOM_NO_VALUE)
                st = im->status;
        }
        char iter[32];
        snprintf(iter, sizeof iter, "%lld", (long long)t);
        if (st == LOOM_OK)
            st = run_body(im, sc, node, body, prefix, iter, ins, outs);
        for (size_t k = 0; k < n_state + n_out && st == LOOM_OK; k++)
            if (onnx_is_seq(outs[k]))
                st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "output %zu of its body "
                                  "('%.200s') is a sequence; Scan's are tensors", k,
                                  onnx_str(body->output[k]->name));
        if (st != LOOM_OK)
            break;
        memcpy(ins, outs, n_state * sizeof *ins);
        for (size_t k = 0; k < n_out && st == LOOM_OK; k++)
            if (!vlist_push(&lists[k], outs[n_state + k]))
                st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (st == LOOM_OK)
        memcpy(results, ins, n_state * sizeof *results);
    /* Without iterations (a scan axis of length 0), outputs are empty stacks of what the body
     * declares, or else of what one iteration on zeros gives. */
    int probed = 0;
    for (size_t k = 0; k < n_out && st == LOOM_OK; k++) {
        loom_tensor_desc e;
        if (len > 0) {
            e = onnx_desc(im, lists[k].v[0]);
        } else if (!declared_desc(body->output[n_state + k], &e)) {
            if (!probed) {
                for (size_t j = 0; j < n_in && st == LOOM_OK; j++) {
                    loom_tensor_desc d = onnx_desc(im, scans[j]);
                    memmove(&d.dims[axes[j]], &d.dims[axes[j] + 1],
                            (d.rank - 1 - (size_t)axes[j]) * sizeof d.dims[0]);
                    d.rank--;
                    if ((ins[n_state + j] = zeros(im, node, &d)) == LOOM_NO_VALUE)
                        st = im->status;
                }
                if (st == LOOM_OK)
                    st = run_body(im, sc, node, body, prefix, "shape", ins, outs);
                if (st != LOOM_OK)
                    break;
                probed = 1;
            }
            if (onnx_is_seq(outs[n_state + k])) {
                st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan output %zu of its "
                                  "body is a sequence; Scan's are tensors", k);
                break;
            }
            e = onnx_desc(im, outs[n_state + k]);
        }
        int64_t r = (int64_t)e.rank + 1;
        int64_t a = sp->out_axes ? sp->out_axes[k] : 0, axis = norm_axis(a, r);
        if (axis < 0) {
            st = onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "scan output %zu has rank "
                              "%lld: its axis %lld is out of range", k, (long long)r,
                              (long long)a);
            break;
        }
        if (r > LOOM_MAX_RANK) {
            st = onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "scan output %zu would have rank "
                              "%lld, past Loom's maximum of %d", k, (long long)r, LOOM_MAX_RANK);
            break;
        }
        char name[400];
        snprintf(name, sizeof name, "%s/scan_output%zu", base, k);
        results[n_state + k] = len > 0 ? stack(im, lists[k].v, lists[k].n, axis,
                                               sp->out_dirs && sp->out_dirs[k], name)
                                       : empty_stack(im, &e, axis);
        if (results[n_state + k] == LOOM_NO_VALUE)
            st = im->status;
    }
    free(axes);
    free(ins);
    free(outs);
    vlists_free(lists, n_out);
    return st;
}

/* Element B of X along its first axis (Gather, the axis removed). */
static loom_value batch_item(onnx_import *im, loom_value x, int64_t b, const char *name)
{
    loom_value iv = onnx_scalar_const(im, LOOM_DTYPE_I64, (double)b);
    if (iv == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_value in2[2] = {x, iv};
    loom_attr a = loom_attr_int("axis", 0);
    return onnx_cf_op1(im, "Gather", name, in2, 2, &a, 1);
}

/* Scan-8: inputs (sequence_lens, states..., scan inputs...) carry a batch axis first (scan
 * inputs scan along axis 1); each batch entry is its own scan, and the results are stacked back
 * along the batch axis. */
static loom_status scan8(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                         scan_spec *sp, const loom_value *in, loom_value *results)
{
    size_t n_state = sp->n_state, n_in = sp->n_in, n_res = sp->n_state + sp->n_out;
    int64_t batch = -1, max_len = -1;
    for (size_t k = 0; k < n_state + n_in; k++) {
        loom_tensor_desc d = onnx_desc(im, in[1 + k]);
        uint32_t need = k < n_state ? 1 : 2;
        if (d.rank < need)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "input %zu has rank %u; "
                                "Scan-8 %s have a batch axis first%s", k + 1, d.rank,
                                k < n_state ? "states" : "scan inputs",
                                k < n_state ? "" : ", then the sequence axis");
        if (batch >= 0 && d.dims[0] != batch)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "inputs have different "
                                "batch sizes (%lld and %lld)", (long long)batch,
                                (long long)d.dims[0]);
        batch = d.dims[0];
        if (k >= n_state)
            max_len = d.dims[1];
    }
    if (batch <= 0)
        return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "has a batch of %lld; Loom unrolls "
                            "Scan-8 per batch entry and needs at least one", (long long)batch);
    /* Every batch entry is a scan of its own: refused at once when they would not fit. */
    loom_status st = LOOM_OK;
    if ((uint64_t)batch > ONNX_MAX_EXPANDED || (uint64_t)max_len > ONNX_MAX_EXPANDED)
        st = check_fits(im, node, sp->body, ONNX_MAX_EXPANDED + (uint64_t)1);
    else
        st = check_fits(im, node, sp->body, (uint64_t)batch * (uint64_t)(max_len ? max_len : 1));
    if (st != LOOM_OK)
        return st;
    if (in[0] != LOOM_NO_VALUE) {
        /* Sequence lengths: only the full length of every batch entry is supported. */
        const void *data = onnx_const_data(im, in[0]);
        loom_tensor_desc d = onnx_desc(im, in[0]);
        if (onnx_is_seq(in[0]) || (d.dtype != LOOM_DTYPE_I64 && d.dtype != LOOM_DTYPE_I32) ||
            loom_tensor_desc_numel(&d) != batch)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "sequence_lens must hold "
                                "one integer per batch entry (%lld)", (long long)batch);
        if (!data) {
            im->g->need_constant = (uint32_t)in[0] + 1;
            return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "its sequence_lens is only known "
                                "at run time; Loom unrolls Scan when it builds the graph");
        }
        for (int64_t b = 0; b < batch; b++) {
            int64_t l = d.dtype == LOOM_DTYPE_I64 ? ((const int64_t *)data)[b]
                                                  : ((const int32_t *)data)[b];
            if (l != max_len)
                return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "sequence_lens gives batch "
                                    "entry %lld the length %lld, not the inputs' %lld; Loom "
                                    "supports only full-length sequences", (long long)b,
                                    (long long)l, (long long)max_len);
        }
        onnx_mark_read(im, in[0]);
    }
    loom_value *items = calloc(n_state + n_in + n_res + 1, sizeof *items);
    vlist *per = calloc(n_res + 1, sizeof *per);
    if (!items || !per)
        st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    loom_value *res_b = items ? items + n_state + n_in : NULL;
    for (int64_t b = 0; b < batch && st == LOOM_OK; b++) {
        char name[400], prefix[40];
        for (size_t k = 0; k < n_state + n_in && st == LOOM_OK; k++) {
            snprintf(name, sizeof name, "%.200s/batch%lld/input%zu", onnx_node_name(node),
                     (long long)b, k + 1);
            if ((items[k] = batch_item(im, in[1 + k], b, name)) == LOOM_NO_VALUE)
                st = im->status;
        }
        snprintf(prefix, sizeof prefix, "batch%lld", (long long)b);
        if (st == LOOM_OK)
            st = scan_core(im, sc, node, sp, prefix, items, items + n_state, res_b);
        for (size_t k = 0; k < n_res && st == LOOM_OK; k++)
            if (!vlist_push(&per[k], res_b[k]))
                st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t k = 0; k < n_res && st == LOOM_OK; k++) {
        char name[400];
        snprintf(name, sizeof name, "%.200s/%s%zu", onnx_node_name(node),
                 k < n_state ? "state" : "scan_output", k < n_state ? k : k - n_state);
        if ((results[k] = stack(im, per[k].v, per[k].n, 0, 0, name)) == LOOM_NO_VALUE)
            st = im->status;
    }
    free(items);
    vlists_free(per, n_res);
    return st;
}

/* Scan(initial states..., scan inputs...) -> (final states..., scan outputs...), the body run
 * once per slice along each scan input's axis (num_scan_inputs of them, all of one length), in
 * the given directions; scan outputs stacked along their axes, reversed for direction 1.
 * Opset 8's form has sequence_lens first and a batch axis. */
static loom_status build_scan(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                              const loom_value *in, size_t n_in)
{
    static const char *const known9[] = {"body", "num_scan_inputs", "scan_input_axes",
                                         "scan_input_directions", "scan_output_axes",
                                         "scan_output_directions", NULL};
    static const char *const known8[] = {"body", "num_scan_inputs", "directions", NULL};
    int v8 = im->opset < 9;
    scan_spec sp;
    memset(&sp, 0, sizeof sp);
    loom_status st;
    if ((st = check_attr_names(im, node, v8 ? known8 : known9)) != LOOM_OK ||
        (st = body_attr(im, node, &sp.body)) != LOOM_OK)
        return st;
    const Onnx__AttributeProto *na = onnx_cf_attr(node, "num_scan_inputs");
    if (!na || !attr_is(na, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT))
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "needs its 'num_scan_inputs' "
                            "attribute, an int");
    size_t skip = v8 ? 1 : 0; /* sequence_lens */
    if (n_in < skip || na->i < 1 || (uint64_t)na->i > n_in - skip)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "num_scan_inputs is %lld; it "
                            "must be 1 to the %zu inputs given%s", (long long)na->i,
                            n_in >= skip ? n_in - skip : 0, v8 ? " after sequence_lens" : "");
    const Onnx__GraphProto *body = sp.body;
    sp.n_in = (size_t)na->i;
    sp.n_state = n_in - skip - sp.n_in;
    if (body->n_input != sp.n_state + sp.n_in)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its body takes %zu inputs; "
                            "with %zu state%s and %zu scan input%s it must take %zu",
                            body->n_input, sp.n_state, sp.n_state == 1 ? "" : "s", sp.n_in,
                            sp.n_in == 1 ? "" : "s", sp.n_state + sp.n_in);
    if (body->n_output < sp.n_state)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its body gives %zu outputs; "
                            "with %zu state%s it must give at least %zu (the states, then the "
                            "scan outputs)", body->n_output, sp.n_state,
                            sp.n_state == 1 ? "" : "s", sp.n_state);
    sp.n_out = body->n_output - sp.n_state;
    if (node->n_output != body->n_output)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "has %zu outputs; its body "
                            "gives %zu (%zu state%s, %zu scan output%s)", node->n_output,
                            body->n_output, sp.n_state, sp.n_state == 1 ? "" : "s", sp.n_out,
                            sp.n_out == 1 ? "" : "s");
    for (size_t k = skip; k < n_in; k++) {
        if (in[k] == LOOM_NO_VALUE)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "input %zu is empty", k);
        if (onnx_is_seq(in[k]))
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%.200s') is a "
                                "sequence; Scan takes tensors", k, input_name(node, k));
    }
    if (v8) {
        if ((st = ints_attr(im, node, "directions", sp.n_in, &sp.in_dirs)) != LOOM_OK)
            return st;
    } else if ((st = ints_attr(im, node, "scan_input_axes", sp.n_in, &sp.in_axes)) != LOOM_OK ||
               (st = ints_attr(im, node, "scan_input_directions", sp.n_in, &sp.in_dirs)) !=
                   LOOM_OK ||
               (st = ints_attr(im, node, "scan_output_axes", sp.n_out, &sp.out_axes)) !=
                   LOOM_OK ||
               (st = ints_attr(im, node, "scan_output_directions", sp.n_out, &sp.out_dirs)) !=
                   LOOM_OK) {
        return st;
    }
    size_t first_new = im->g->n_values;
    loom_value *results = calloc(body->n_output + 1, sizeof *results);
    if (!results)
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    st = v8 ? scan8(im, sc, node, &sp, in, results)
            : scan_core(im, sc, node, &sp, NULL, in, in + sp.n_state, results);
    for (size_t k = 0; k < node->n_output && st == LOOM_OK; k++)
        st = onnx_cf_bind(im, sc, node->output[k], results[k], (size_t)results[k] >= first_new);
    for (size_t k = 0; k < n_in; k++)
        onnx_mark_read(im, in[k]);
    if (st == LOOM_OK)
        onnx_cf_mark_new(im, first_new);
    free(results);
    return st;
}

/* ---- entry ----------------------------------------------------------------------------------- */

loom_status onnx_cf_build(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                          const loom_value *in, size_t n_in)
{
    const char *op = onnx_str(node->op_type);
    if (onnx_cf_op(node->domain, op)) {
        if (strcmp(op, "Loop") == 0)
            return build_loop(im, sc, node, in, n_in);
        if (strcmp(op, "Scan") == 0)
            return build_scan(im, sc, node, in, n_in);
        return onnx_build_sequence_op(im, sc, node, in, n_in);
    }
    int default_domain = !node->domain || !*node->domain || strcmp(node->domain, "ai.onnx") == 0;
    if (default_domain && strcmp(op, "Identity") == 0 && n_in == 1 && node->n_output == 1)
        return onnx_cf_bind(im, sc, node->output[0], in[0], 0);
    for (size_t k = 0; k < n_in; k++)
        if (onnx_is_seq(in[k]))
            return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "input %zu ('%.200s') is a "
                                "sequence; Loom takes sequences only in the sequence operators, "
                                "Identity, Loop and If", k, input_name(node, k));
    return onnx_cf_fail(im, node, LOOM_ERR_INTERNAL, "not an operator of onnx_cf_build");
}
