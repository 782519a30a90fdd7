/*
 * One ONNX node into the graph: its attributes, the rewriting of older opset forms into the
 * opset-18 form the operator registry expects (attributes that became inputs, Softmax's
 * flattening before opset 13, Upsample and Resize-10, CastLike into Cast, Scatter into
 * ScatterElements), and the operators the importer evaluates itself: Constant,
 * ConstantOfShape, Shape and Size (their results depend only on attributes and shapes, which
 * are all static here) and If (inlined when its condition is a constant, else both branches
 * computed and selected with Where). Fused operators of ONNX Runtime's com.microsoft domain
 * (Gelu, FastGelu, BiasGelu, QuickGelu, SkipLayerNormalization, FusedMatMul) are lowered here
 * into the registry's operators. Loop, Scan and the sequence operators are handed to
 * onnx_control_flow.c.
 */
#include "graph/onnx/onnx_import.h"
#include "graph/onnx/onnx_control_flow.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ConstantOfShape refuses to materialise more than this: no real model needs it, and a corrupt
 * one must not exhaust memory. */
#define MAX_CONSTANT_BYTES ((size_t)1 << 30)

static int default_domain(const char *d)
{
    return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

/* Operators evaluated or rewritten here rather than looked up in the registry. */
static int importer_native(const char *op)
{
    return strcmp(op, "Constant") == 0 || strcmp(op, "ConstantOfShape") == 0 ||
           strcmp(op, "Shape") == 0 || strcmp(op, "Size") == 0 || strcmp(op, "If") == 0;
}

/* Operators of ONNX Runtime's com.microsoft domain that the registry implements under the same
 * name and with the same inputs and attributes (graph/ops_moe.c: MoE). Only from that domain:
 * the default domain has no such operator. */
static int contrib_op(const char *domain, const char *op)
{
    return strcmp(op, "MoE") == 0 && domain && strcmp(domain, "com.microsoft") == 0;
}

/* Fused operators of the com.microsoft domain (ONNX Runtime's transformer optimizer) that the
 * importer lowers into registry operators (contrib_lower below), with the operators each
 * lowering builds. */
static const struct {
    const char *op;
    const char *needs[4];
} contrib_lowered[] = {
    {"Gelu", {"Gelu"}},
    {"FastGelu", {"Gelu", "Add"}},
    {"BiasGelu", {"Gelu", "Add"}},
    {"QuickGelu", {"Mul", "Sigmoid"}},
    {"SkipLayerNormalization", {"Add", "LayerNormalization"}},
    {"FusedMatMul", {"MatMul", "Transpose", "Mul"}},
};

/* 1 when (DOMAIN, OP) is lowered here and the registry has every operator it needs, 0 when it
 * is not one of them, -1 when it is one but an operator it needs is missing. */
static int contrib_lowering(const char *domain, const char *op)
{
    if (!domain || strcmp(domain, "com.microsoft") != 0)
        return 0;
    if (onnx_contrib_attention_lowering(op)) /* onnx_contrib_attention.c */
        return onnx_contrib_attention_lowering(op);
    for (size_t i = 0; i < sizeof contrib_lowered / sizeof contrib_lowered[0]; i++) {
        if (strcmp(op, contrib_lowered[i].op) != 0)
            continue;
        for (size_t k = 0; k < 4 && contrib_lowered[i].needs[k]; k++)
            if (!loom_op_find(contrib_lowered[i].needs[k]))
                return -1;
        return 1;
    }
    return 0;
}

int onnx_node_supported(const onnx_import *im, const Onnx__NodeProto *node)
{
    (void)im;
    const char *op = onnx_str(node->op_type);
    if (contrib_op(node->domain, op))
        return loom_op_find(op) != NULL;
    int lowered = contrib_lowering(node->domain, op);
    if (lowered)
        return lowered > 0;
    if (!default_domain(node->domain) || !*op || strcmp(op, "MoE") == 0)
        return 0;
    if (importer_native(op) || onnx_cf_op(node->domain, op))
        return 1;
    if (strcmp(op, "Upsample") == 0)
        return loom_op_find("Resize") != NULL;
    if (strcmp(op, "CastLike") == 0)
        return loom_op_find("Cast") != NULL;
    if (strcmp(op, "Scatter") == 0)
        return loom_op_find("ScatterElements") != NULL;
    return loom_op_find(op) != NULL;
}

/* ---- a node being translated ---------------------------------------------------------------- */

typedef struct nb {
    onnx_import *im;
    onnx_scope *sc;
    const Onnx__NodeProto *node;
    const char *name; /* for messages and the graph; "" when the node has none */
    const char *op;   /* the registry's operator to build */
    loom_value *in;
    size_t n_in, cap_in;
    loom_attr *attrs;
    size_t n_attrs, cap_attrs;
    const char *special; /* first attribute of a kind loom_attr cannot carry (TENSOR, GRAPH) */
} nb;

static loom_status node_fail(nb *b, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static loom_status node_fail(nb *b, loom_status st, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return onnx_fail(b->im, st, "node '%.200s' (%.100s): %s", b->name, onnx_str(b->node->op_type),
                   msg);
}

static const Onnx__AttributeProto *proto_attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t a = 0; a < n->n_attribute; a++)
        if (n->attribute[a]->name && strcmp(n->attribute[a]->name, name) == 0)
            return n->attribute[a];
    return NULL;
}

static loom_status set_input(nb *b, size_t slot, loom_value v)
{
    if (slot >= b->cap_in)
        return node_fail(b, LOOM_ERR_INTERNAL, "input slot %zu out of range", slot);
    while (b->n_in <= slot)
        b->in[b->n_in++] = LOOM_NO_VALUE;
    b->in[slot] = v;
    return LOOM_OK;
}

static loom_status add_attr(nb *b, loom_attr a)
{
    if (b->n_attrs >= b->cap_attrs)
        return node_fail(b, LOOM_ERR_INTERNAL, "too many attributes");
    b->attrs[b->n_attrs++] = a;
    return LOOM_OK;
}

/* Remove attribute NAME from the list into *OUT; 0 when absent. */
static int take_attr(nb *b, const char *name, loom_attr *out)
{
    for (size_t i = 0; i < b->n_attrs; i++)
        if (strcmp(b->attrs[i].name, name) == 0) {
            if (out)
                *out = b->attrs[i];
            memmove(&b->attrs[i], &b->attrs[i + 1], (b->n_attrs - i - 1) * sizeof *b->attrs);
            b->n_attrs--;
            return 1;
        }
    return 0;
}

/* The node's attributes as loom_attr. Arrays are borrowed from the parsed model, which outlives
 * the import; strings are copied (protobuf bytes are not NUL-terminated). */
static loom_status convert_attrs(nb *b)
{
    static const int64_t no_ints[1] = {0};
    static const float no_floats[1] = {0};
    const Onnx__NodeProto *n = b->node;
    for (size_t i = 0; i < n->n_attribute; i++) {
        const Onnx__AttributeProto *a = n->attribute[i];
        const char *name = onnx_str(a->name);
        if (!*name)
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute %zu has no name", i);
        if (a->ref_attr_name && *a->ref_attr_name)
            return node_fail(b, LOOM_ERR_UNSUPPORTED, "attribute '%s' refers to a function's "
                             "attribute, which Loom does not support", name);
        Onnx__AttributeProto__AttributeType type = a->type;
        if (!a->has_type) /* files from before IR version 2 have no type: infer it */
            type = a->has_f ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT
                 : a->has_i ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
                 : a->has_s ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
                 : a->n_ints ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
                 : a->n_floats ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
                 : a->t ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR
                 : a->g ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH
                        : ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
        loom_attr la;
        switch (type) {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
            la = loom_attr_float(name, a->f);
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
            la = loom_attr_int(name, a->i);
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: {
            char *s = onnx_strndup(b->im, a->s.data, a->s.len);
            if (!s)
                return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            la = loom_attr_string(name, s);
            break;
        }
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
            la = loom_attr_ints(name, a->n_ints, a->n_ints ? a->ints : no_ints);
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
            la = loom_attr_floats(name, a->n_floats, a->n_floats ? a->floats : no_floats);
            break;
        default:
            if (!b->special)
                b->special = name;
            continue;
        }
        loom_status st = add_attr(b, la);
        if (st != LOOM_OK)
            return st;
    }
    return LOOM_OK;
}

static loom_status resolve_inputs(nb *b)
{
    const Onnx__NodeProto *n = b->node;
    for (size_t k = 0; k < n->n_input; k++) {
        const char *name = n->input[k];
        loom_value v = LOOM_NO_VALUE;
        if (*name) {
            int r = onnx_lookup(b->im, b->sc, name, &v);
            if (r < 0)
                return b->im->status;
            if (r == 0)
                return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "input '%.200s' is not defined",
                                 name);
        }
        b->in[b->n_in++] = v;
    }
    return LOOM_OK;
}

static int name_used(const nb *b, const char *name)
{
    return *name && onnx_smap_get(&b->sc->used, name, NULL);
}

/* Bind output K of the node to V, naming V after it. */
static loom_status bind_output(nb *b, size_t k, loom_value v, int rename)
{
    const char *name = b->node->output[k];
    loom_status st = onnx_define(b->im, b->sc, name, v);
    if (st == LOOM_OK && rename)
        st = onnx_name_value(b->im, v, name);
    return st;
}

/* Build b->op with the inputs and attributes gathered so far; bind the node's outputs. */
static loom_status emit(nb *b)
{
    if (b->special)
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "attribute '%s' is a tensor or graph, which "
                         "Loom supports only for Constant, ConstantOfShape and If", b->special);
    const loom_op_def *def = loom_op_find(b->op);
    size_t n_out = b->node->n_output;
    /* Optional trailing outputs the model does not read (Dropout's mask, MaxPool's indices,
     * BatchNormalization's training statistics) are not asked for when the registry lacks
     * them. */
    while (def && n_out > def->max_outputs && n_out > 0 &&
           !name_used(b, b->node->output[n_out - 1]))
        n_out--;
    loom_value *outs = calloc(n_out + 1, sizeof *outs);
    if (!outs)
        return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    loom_status st = loom_graph_op(b->im->g, b->op, *b->name ? b->name : NULL, b->in, b->n_in,
                                   b->attrs, b->n_attrs, outs, n_out);
    if (st != LOOM_OK) {
        free(outs);
        return onnx_fail_builder(b->im, st);
    }
    for (size_t k = 0; k < n_out && st == LOOM_OK; k++)
        st = bind_output(b, k, outs[k], 1);
    free(outs);
    return st;
}

/* Build one extra node of a rewrite (e.g. Softmax's flattening) with a single output. */
static loom_value emit_one(nb *b, const char *op, const char *suffix, const loom_value *in,
                           size_t n_in, const loom_attr *attrs, size_t n_attrs)
{
    size_t len = strlen(b->name) + strlen(suffix) + strlen(op) + 4;
    char *name = onnx_alloc(b->im, len);
    if (!name) {
        onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    snprintf(name, len, "%s%s", *b->name ? b->name : op, suffix);
    loom_value out;
    loom_status st = loom_graph_op(b->im->g, op, name, in, n_in, attrs, n_attrs, &out, 1);
    if (st != LOOM_OK) {
        onnx_fail_builder(b->im, st);
        return LOOM_NO_VALUE;
    }
    return out;
}

/* ---- attributes that became inputs ----------------------------------------------------------- */

/* Move the ints attribute ATTR into input SLOT as an int64 constant. */
static loom_status ints_attr_to_input(nb *b, const char *attr, size_t slot, int required)
{
    loom_attr a;
    if (!take_attr(b, attr, &a)) {
        if (required)
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' is missing", attr);
        return LOOM_OK;
    }
    if (a.kind != LOOM_ATTR_INTS && a.kind != LOOM_ATTR_INT)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must be ints", attr);
    loom_value v = a.kind == LOOM_ATTR_INTS ? onnx_const_i64s(b->im, a.count, a.ints)
                                            : onnx_const_i64s(b->im, 1, &a.i);
    if (v == LOOM_NO_VALUE)
        return b->im->status;
    return set_input(b, slot, v);
}

/* An input that is an empty constant means "absent" in older Resize forms. */
static void drop_empty_input(nb *b, size_t slot)
{
    if (slot < b->n_in && b->in[slot] != LOOM_NO_VALUE && onnx_const_data(b->im, b->in[slot])) {
        loom_tensor_desc d = onnx_desc(b->im, b->in[slot]);
        if (loom_tensor_desc_numel(&d) == 0) {
            onnx_mark_read(b->im, b->in[slot]);
            b->in[slot] = LOOM_NO_VALUE;
        }
    }
}

/* Resize-10 and Upsample: the output coordinate maps back as x / scale ("asymmetric") and
 * nearest picks the floor: what Resize-11 says with these two attributes. */
static loom_status old_resize_attrs(nb *b)
{
    loom_attr mode;
    const char *m = "nearest";
    if (take_attr(b, "mode", &mode) && mode.kind == LOOM_ATTR_STRING)
        m = mode.s;
    if (strcmp(m, "bilinear") == 0 || strcmp(m, "trilinear") == 0)
        m = "linear";
    loom_status st = add_attr(b, loom_attr_string("mode", m));
    if (st == LOOM_OK)
        st = add_attr(b, loom_attr_string("coordinate_transformation_mode", "asymmetric"));
    if (st == LOOM_OK && strcmp(m, "nearest") == 0)
        st = add_attr(b, loom_attr_string("nearest_mode", "floor"));
    return st;
}

/* Softmax, LogSoftmax and Hardmax before opset 13 flatten the input to 2-D at 'axis' (default 1)
 * and normalise over the flattened trailing dims: Reshape, the op over the last axis, Reshape
 * back. */
static loom_status old_softmax(nb *b)
{
    loom_attr a;
    int64_t axis = 1;
    if (take_attr(b, "axis", &a)) {
        if (a.kind != LOOM_ATTR_INT)
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute 'axis' must be an int");
        axis = a.i;
    }
    if (b->n_in < 1 || b->in[0] == LOOM_NO_VALUE)
        return emit(b); /* the registry names the missing input */
    loom_tensor_desc d = onnx_desc(b->im, b->in[0]);
    int64_t r = d.rank;
    if (axis < -r || axis > r || (r && axis == r))
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "axis %lld is out of range for rank %lld",
                         (long long)axis, (long long)r);
    if (axis < 0)
        axis += r;
    loom_status st;
    if (r <= 1 || axis == r - 1) {
        /* Already the last axis: the same as opset 13. */
        if ((st = add_attr(b, loom_attr_int("axis", r ? r - 1 : 0))) != LOOM_OK)
            return st;
        return emit(b);
    }
    if (b->special)
        return emit(b);
    int64_t n = 1, dd = 1;
    for (int64_t k = 0; k < r; k++)
        *(k < axis ? &n : &dd) *= d.dims[k];
    int64_t flat[2] = {n, dd};
    loom_value shape2 = onnx_const_i64s(b->im, 2, flat);
    if (shape2 == LOOM_NO_VALUE)
        return b->im->status;
    loom_value in2[2] = {b->in[0], shape2};
    loom_value x2 = emit_one(b, "Reshape", "/flatten", in2, 2, NULL, 0);
    if (x2 == LOOM_NO_VALUE)
        return b->im->status;
    loom_attr ax = loom_attr_int("axis", 1);
    loom_value y2 = emit_one(b, b->op, "/2d", &x2, 1, &ax, 1);
    if (y2 == LOOM_NO_VALUE)
        return b->im->status;
    loom_value back = onnx_const_i64s(b->im, (size_t)r, d.dims);
    if (back == LOOM_NO_VALUE)
        return b->im->status;
    loom_value in3[2] = {y2, back};
    loom_value y = emit_one(b, "Reshape", "", in3, 2, NULL, 0);
    if (y == LOOM_NO_VALUE)
        return b->im->status;
    return b->node->n_output ? bind_output(b, 0, y, 1) : LOOM_OK;
}

/* Opset 6 and older: binary operators with broadcast=1 and an axis align B's dims with A's
 * from that axis (not from the right, as numpy does): give B trailing 1s so that numpy's rule
 * lines it up the same way. */
static loom_status legacy_broadcast(nb *b, int64_t axis)
{
    if (b->n_in < 2 || b->in[0] == LOOM_NO_VALUE || b->in[1] == LOOM_NO_VALUE)
        return LOOM_OK;
    loom_tensor_desc a = onnx_desc(b->im, b->in[0]), bd = onnx_desc(b->im, b->in[1]);
    int64_t ra = a.rank, rb = bd.rank;
    if (axis < 0)
        axis += ra;
    if (axis < 0 || axis + rb > ra)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "broadcast axis %lld does not fit "
                         "ranks %lld and %lld", (long long)axis, (long long)ra, (long long)rb);
    if (axis + rb == ra)
        return LOOM_OK; /* already aligned on the right */
    int64_t shape[LOOM_MAX_RANK];
    for (int64_t k = 0; k < ra - axis; k++)
        shape[k] = k < rb ? bd.dims[k] : 1;
    loom_value sv = onnx_const_i64s(b->im, (size_t)(ra - axis), shape);
    if (sv == LOOM_NO_VALUE)
        return b->im->status;
    loom_value in2[2] = {b->in[1], sv};
    loom_value r = emit_one(b, "Reshape", "/broadcast", in2, 2, NULL, 0);
    if (r == LOOM_NO_VALUE)
        return b->im->status;
    b->in[1] = r;
    return LOOM_OK;
}

/* CastLike(input, target_type) is Cast(input, to = target_type's dtype): only the second
 * input's dtype matters, so it is read here and dropped. saturate (opset 19) only concerns the
 * float8 types, which Loom does not have: 1 (the default) is the only value accepted. */
static loom_status cast_like(nb *b)
{
    if (b->n_in != 2 || b->in[0] == LOOM_NO_VALUE || b->in[1] == LOOM_NO_VALUE)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "takes 2 inputs (input, target_type), "
                         "%zu given", b->n_in);
    loom_attr sat;
    if (take_attr(b, "saturate", &sat) && (sat.kind != LOOM_ATTR_INT || sat.i != 1))
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "saturate=0 (float8 conversions) is not "
                         "supported");
    loom_tensor_desc like = onnx_desc(b->im, b->in[1]);
    onnx_mark_read(b->im, b->in[1]);
    b->n_in = 1;
    b->op = "Cast";
    return add_attr(b, loom_attr_int("to", (int64_t)like.dtype));
}

/* Rewrite the node into the opset-18 form when the model's opset is older. */
static loom_status adapt(nb *b)
{
    const char *op = b->op;
    int64_t opset = b->im->opset;
    loom_status st = LOOM_OK;
    if (opset < 7) {
        /* consumed_inputs and is_test were hints for training runtimes, gone in opset 7. */
        take_attr(b, "consumed_inputs", NULL);
        take_attr(b, "is_test", NULL);
        loom_attr bc, ax;
        if (take_attr(b, "broadcast", &bc)) {
            int has_axis = take_attr(b, "axis", &ax);
            if (bc.kind == LOOM_ATTR_INT && bc.i && has_axis && ax.kind == LOOM_ATTR_INT &&
                (st = legacy_broadcast(b, ax.i)) != LOOM_OK)
                return st;
        }
    }
    if (strcmp(op, "Scatter") == 0) {
        /* Scatter (opsets 9 and 10, deprecated in 11) is ScatterElements without 'reduction'. */
        b->op = op = "ScatterElements";
    }
    if (strcmp(op, "PRelu") == 0 && opset < 7 && b->n_in == 2 && b->in[0] != LOOM_NO_VALUE &&
        b->in[1] != LOOM_NO_VALUE) {
        /* PRelu-6 takes a slope of shape [C] per channel (axis 1), not numpy-aligned. */
        loom_tensor_desc x = onnx_desc(b->im, b->in[0]), sl = onnx_desc(b->im, b->in[1]);
        if (sl.rank == 1 && x.rank > 2 && sl.dims[0] == x.dims[1] && sl.dims[0] != 1 &&
            (st = legacy_broadcast(b, 1)) != LOOM_OK)
            return st;
    }
    if (strcmp(op, "Slice") == 0 && opset < 10) {
        b->n_in = b->n_in ? 1 : 0;
        if ((st = ints_attr_to_input(b, "starts", 1, 1)) == LOOM_OK &&
            (st = ints_attr_to_input(b, "ends", 2, 1)) == LOOM_OK)
            st = ints_attr_to_input(b, "axes", 3, 0);
    } else if ((strcmp(op, "Squeeze") == 0 || strcmp(op, "Unsqueeze") == 0) && opset < 13) {
        st = ints_attr_to_input(b, "axes", 1, 0);
    } else if (strncmp(op, "Reduce", 6) == 0 &&
               opset < (strcmp(op, "ReduceSum") == 0 ? 13 : 18)) {
        st = ints_attr_to_input(b, "axes", 1, 0);
    } else if (strcmp(op, "Split") == 0 && opset < 13) {
        st = ints_attr_to_input(b, "split", 1, 0);
    } else if (strcmp(op, "TopK") == 0 && opset < 10) {
        st = ints_attr_to_input(b, "k", 1, 1);
    } else if (strcmp(op, "Pad") == 0 && opset < 11) {
        loom_attr value;
        double cv = 0;
        if (take_attr(b, "value", &value))
            cv = value.kind == LOOM_ATTR_FLOAT ? value.f : (double)value.i;
        b->n_in = b->n_in ? 1 : 0;
        if ((st = ints_attr_to_input(b, "pads", 1, 1)) == LOOM_OK && b->n_in &&
            b->in[0] != LOOM_NO_VALUE) {
            loom_value c = onnx_scalar_const(b->im, onnx_desc(b->im, b->in[0]).dtype, cv);
            st = c == LOOM_NO_VALUE ? b->im->status : set_input(b, 2, c);
        }
    } else if (strcmp(op, "Dropout") == 0 && opset < 12) {
        /* Dropout is the identity in inference: its ratio (an input from opset 12) and the
         * old is_test flag change nothing. */
        take_attr(b, "ratio", NULL);
        take_attr(b, "is_test", NULL);
    } else if (strcmp(op, "BatchNormalization") == 0 && opset < 9) {
        /* spatial=1 (the default) is what later opsets always do; is_test and
         * consumed_inputs only mattered to training. */
        loom_attr spatial;
        if (take_attr(b, "spatial", &spatial) && spatial.kind == LOOM_ATTR_INT && spatial.i != 1)
            return node_fail(b, LOOM_ERR_UNSUPPORTED, "spatial=%lld (per-element statistics) "
                             "is not supported", (long long)spatial.i);
        take_attr(b, "is_test", NULL);
        take_attr(b, "consumed_inputs", NULL);
    } else if ((strcmp(op, "Softmax") == 0 || strcmp(op, "LogSoftmax") == 0 ||
                strcmp(op, "Hardmax") == 0) && opset < 13) {
        return old_softmax(b);
    } else if (strcmp(op, "Upsample") == 0) {
        b->op = "Resize";
        loom_value x = b->n_in ? b->in[0] : LOOM_NO_VALUE;
        loom_value scales = b->n_in > 1 ? b->in[1] : LOOM_NO_VALUE;
        loom_attr sa;
        if (take_attr(b, "scales", &sa)) { /* opset 7 and 8 */
            if (sa.kind != LOOM_ATTR_FLOATS)
                return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute 'scales' must be "
                                 "floats");
            onnx_tensor t = {.dtype = LOOM_DTYPE_F32, .rank = 1, .dims = {(int64_t)sa.count}};
            t.data = malloc(sa.count * sizeof(float) + 1);
            if (!t.data)
                return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            if (sa.count)
                memcpy(t.data, sa.floats, sa.count * sizeof(float));
            scales = onnx_own_constant(b->im, NULL, &t);
            if (scales == LOOM_NO_VALUE)
                return b->im->status;
        }
        b->n_in = 0;
        if ((st = set_input(b, 0, x)) == LOOM_OK && (st = set_input(b, 1, LOOM_NO_VALUE)) ==
            LOOM_OK && (st = set_input(b, 2, scales)) == LOOM_OK)
            st = old_resize_attrs(b);
    } else if (strcmp(op, "CastLike") == 0) {
        st = cast_like(b);
    } else if (strcmp(op, "Resize") == 0) {
        if (opset < 11) {
            loom_value x = b->n_in ? b->in[0] : LOOM_NO_VALUE;
            loom_value scales = b->n_in > 1 ? b->in[1] : LOOM_NO_VALUE;
            b->n_in = 0;
            if ((st = set_input(b, 0, x)) == LOOM_OK &&
                (st = set_input(b, 1, LOOM_NO_VALUE)) == LOOM_OK &&
                (st = set_input(b, 2, scales)) == LOOM_OK)
                st = old_resize_attrs(b);
        } else {
            /* Opsets 11 and 12 make roi and scales mandatory and pass empty tensors for
             * "not given". */
            drop_empty_input(b, 1);
            drop_empty_input(b, 2);
            drop_empty_input(b, 3);
            while (b->n_in > 1 && b->in[b->n_in - 1] == LOOM_NO_VALUE)
                b->n_in--;
        }
    }
    if (st != LOOM_OK)
        return st;
    return emit(b);
}

/* ---- operators evaluated here --------------------------------------------------------------- */

static loom_status bind_constant(nb *b, onnx_tensor *t)
{
    if (b->node->n_output < 1) {
        free(t->data);
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "has no output");
    }
    loom_value v = onnx_own_constant(b->im, b->node->output[0], t);
    if (v == LOOM_NO_VALUE)
        return b->im->status;
    return bind_output(b, 0, v, 0);
}

static loom_status build_constant(nb *b)
{
    static const char *const kinds[] = {"value", "value_float", "value_floats", "value_int",
                                        "value_ints", "value_string", "value_strings",
                                        "sparse_value", NULL};
    const Onnx__AttributeProto *chosen = NULL;
    for (size_t i = 0; i < b->node->n_attribute; i++) {
        const Onnx__AttributeProto *a = b->node->attribute[i];
        for (size_t k = 0; kinds[k]; k++)
            if (a->name && strcmp(a->name, kinds[k]) == 0) {
                if (chosen)
                    return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "has both '%s' and '%s'",
                                     chosen->name, a->name);
                chosen = a;
            }
    }
    if (!chosen)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "has no value attribute");
    const char *kind = chosen->name;
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    if (strcmp(kind, "value") == 0) {
        if (!chosen->t)
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute 'value' holds no tensor");
        char what[300];
        snprintf(what, sizeof what, "node '%.200s' (Constant): value", b->name);
        loom_status st = onnx_tensor_decode(chosen->t, &b->im->src, what, &t);
        if (st != LOOM_OK)
            return onnx_adopt(b->im, st);
    } else if (strcmp(kind, "value_float") == 0 || strcmp(kind, "value_floats") == 0) {
        int one = strcmp(kind, "value_float") == 0;
        size_t n = one ? 1 : chosen->n_floats;
        t.dtype = LOOM_DTYPE_F32;
        t.rank = one ? 0 : 1;
        t.dims[0] = (int64_t)n;
        if (!(t.data = malloc(n * sizeof(float) + 1)))
            return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        if (one)
            memcpy(t.data, &chosen->f, sizeof(float));
        else if (n)
            memcpy(t.data, chosen->floats, n * sizeof(float));
    } else if (strcmp(kind, "value_int") == 0 || strcmp(kind, "value_ints") == 0) {
        int one = strcmp(kind, "value_int") == 0;
        size_t n = one ? 1 : chosen->n_ints;
        t.dtype = LOOM_DTYPE_I64;
        t.rank = one ? 0 : 1;
        t.dims[0] = (int64_t)n;
        if (!(t.data = malloc(n * sizeof(int64_t) + 1)))
            return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        if (one)
            memcpy(t.data, &chosen->i, sizeof(int64_t));
        else if (n)
            memcpy(t.data, chosen->ints, n * sizeof(int64_t));
    } else {
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "'%s' constants are not supported", kind);
    }
    return bind_constant(b, &t);
}

/* The data of input K when it is an int64 constant vector. */
static const int64_t *const_i64_vector(nb *b, size_t k, size_t *n)
{
    if (k >= b->n_in || b->in[k] == LOOM_NO_VALUE)
        return NULL;
    const void *data = onnx_const_data(b->im, b->in[k]);
    loom_tensor_desc d = onnx_desc(b->im, b->in[k]);
    if (!data || d.dtype != LOOM_DTYPE_I64 || d.rank != 1)
        return NULL;
    *n = (size_t)d.dims[0];
    return data;
}

static loom_status build_constant_of_shape(nb *b)
{
    size_t rank = 0;
    const int64_t *shape = const_i64_vector(b, 0, &rank);
    if (!shape && b->n_in && b->in[0] != LOOM_NO_VALUE && !onnx_const_data(b->im, b->in[0]))
        b->im->g->need_constant = (uint32_t)b->in[0] + 1; /* a value would do: say which */
    if (!shape)
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "its shape input must be a constant int64 "
                         "vector (Loom needs static shapes)");
    if (rank > LOOM_MAX_RANK)
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "rank %zu exceeds Loom's maximum of %d", rank,
                         LOOM_MAX_RANK);
    onnx_tensor fill;
    memset(&fill, 0, sizeof fill);
    const Onnx__AttributeProto *va = proto_attr(b->node, "value");
    if (va && va->t) {
        char what[300];
        snprintf(what, sizeof what, "node '%.200s' (ConstantOfShape): value", b->name);
        loom_status st = onnx_tensor_decode(va->t, &b->im->src, what, &fill);
        if (st != LOOM_OK)
            return onnx_adopt(b->im, st);
        if (fill.nbytes != loom_dtype_size(fill.dtype)) {
            free(fill.data);
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "its value must hold one element");
        }
    } else {
        fill.dtype = LOOM_DTYPE_F32;
        fill.nbytes = sizeof(float);
        if (!(fill.data = calloc(1, sizeof(float))))
            return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = fill.dtype;
    t.rank = (uint32_t)rank;
    for (size_t k = 0; k < rank; k++) {
        if (shape[k] < 0) {
            free(fill.data);
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "dimension %zu is negative (%lld)",
                             k, (long long)shape[k]);
        }
        t.dims[k] = shape[k];
    }
    int64_t numel;
    size_t es = fill.nbytes;
    if (!loom_dims_numel_checked(t.rank, t.dims, es, &numel) ||
        (size_t)numel * es > MAX_CONSTANT_BYTES) {
        free(fill.data);
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "the constant would take more than %zu bytes",
                         MAX_CONSTANT_BYTES);
    }
    t.data = malloc((size_t)numel * es + 1);
    if (!t.data) {
        free(fill.data);
        return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < numel; i++)
        memcpy((char *)t.data + (size_t)i * es, fill.data, es);
    free(fill.data);
    onnx_mark_read(b->im, b->in[0]);
    return bind_constant(b, &t);
}

static loom_status build_shape_or_size(nb *b, int size)
{
    if (b->n_in < 1 || b->in[0] == LOOM_NO_VALUE)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "needs an input");
    loom_tensor_desc d = onnx_desc(b->im, b->in[0]);
    int64_t r = d.rank, start = 0, end = r;
    const Onnx__AttributeProto *a;
    if (!size && (a = proto_attr(b->node, "start")) != NULL)
        start = a->i;
    if (!size && (a = proto_attr(b->node, "end")) != NULL)
        end = a->i;
    /* Opset 15: negative bounds count from the end; both are clamped to [0, rank]. */
    if (start < 0)
        start += r;
    if (end < 0)
        end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = LOOM_DTYPE_I64;
    t.rank = size ? 0 : 1;
    size_t n = size ? 1 : (size_t)(end > start ? end - start : 0);
    t.dims[0] = (int64_t)n;
    int64_t *data = malloc(n * sizeof *data + 1);
    if (!data)
        return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (size)
        data[0] = loom_tensor_desc_numel(&d);
    else
        for (size_t k = 0; k < n; k++)
            data[k] = d.dims[start + (int64_t)k];
    t.data = data;
    onnx_mark_read(b->im, b->in[0]);
    return bind_constant(b, &t);
}

static int same_desc(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return 0;
    for (uint32_t k = 0; k < a->rank; k++)
        if (a->dims[k] != b->dims[k])
            return 0;
    return 1;
}

static loom_status build_if(nb *b)
{
    const Onnx__AttributeProto *ta = proto_attr(b->node, "then_branch");
    const Onnx__AttributeProto *ea = proto_attr(b->node, "else_branch");
    if (!ta || !ta->g || !ea || !ea->g)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "needs then_branch and else_branch "
                         "graphs");
    if (b->n_in != 1 || b->in[0] == LOOM_NO_VALUE)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "needs exactly one input (the "
                         "condition)");
    size_t n_out = b->node->n_output;
    if (ta->g->n_output != n_out || ea->g->n_output != n_out)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "has %zu outputs, its branches %zu and "
                         "%zu", n_out, ta->g->n_output, ea->g->n_output);
    loom_value cond = b->in[0];
    loom_tensor_desc cd = onnx_desc(b->im, cond);
    if (loom_tensor_desc_numel(&cd) != 1)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "the condition must hold one element");
    loom_value *outs = calloc(2 * n_out + 1, sizeof *outs);
    if (!outs)
        return onnx_fail(b->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    loom_status st = LOOM_OK;
    const void *cdata = onnx_const_data(b->im, cond);
    if (cdata) {
        /* A constant condition (often folded from shapes): only the branch taken exists. */
        int taken = 0;
        size_t es = loom_dtype_size(cd.dtype);
        for (size_t k = 0; k < es; k++)
            taken |= ((const unsigned char *)cdata)[k] != 0;
        onnx_mark_read(b->im, cond);
        size_t first_new = b->im->g->n_values;
        st = onnx_build_subgraph(b->im, b->sc, taken ? ta->g : ea->g, outs);
        /* Values the branch made take the If's output names; outer values keep theirs. */
        for (size_t k = 0; k < n_out && st == LOOM_OK; k++)
            st = bind_output(b, k, outs[k], (size_t)outs[k] >= first_new);
        free(outs);
        return st;
    }
    /* A condition known only at run time: compute both branches and select, which is exact
     * when both give the same types and shapes. */
    st = onnx_build_subgraph(b->im, b->sc, ta->g, outs);
    if (st == LOOM_OK)
        st = onnx_build_subgraph(b->im, b->sc, ea->g, outs + n_out);
    for (size_t k = 0; k < n_out && st == LOOM_OK; k++) {
        loom_tensor_desc x = onnx_desc(b->im, outs[k]), y = onnx_desc(b->im, outs[n_out + k]);
        if (onnx_is_seq(outs[k]) || onnx_is_seq(outs[n_out + k])) {
            b->im->g->need_constant = (uint32_t)cond + 1;
            st = node_fail(b, LOOM_ERR_UNSUPPORTED, "its condition is not a constant and its "
                           "branches give sequences (output %zu); Loom selects between "
                           "branches only for tensors", k);
        } else if (!same_desc(&x, &y)) {
            char xs[128], ys[128];
            b->im->g->need_constant = (uint32_t)cond + 1; /* the condition's value would do */
            st = node_fail(b, LOOM_ERR_UNSUPPORTED, "its condition is not a constant and its "
                           "branches give output %zu different types or shapes (then: %s %s, "
                           "else: %s %s); Loom cannot run data-dependent control flow",
                           k, loom_dtype_name(x.dtype), loom_dims_format(x.rank, x.dims, xs,
                                                                         sizeof xs),
                           loom_dtype_name(y.dtype), loom_dims_format(y.rank, y.dims, ys,
                                                                      sizeof ys));
        }
    }
    if (st == LOOM_OK && cd.rank != 0) {
        loom_value shape = onnx_const_i64s(b->im, 0, NULL);
        loom_value in2[2] = {cond, shape};
        cond = shape == LOOM_NO_VALUE ? LOOM_NO_VALUE
                                      : emit_one(b, "Reshape", "/cond", in2, 2, NULL, 0);
        if (cond == LOOM_NO_VALUE)
            st = b->im->status;
    }
    for (size_t k = 0; k < n_out && st == LOOM_OK; k++) {
        char suffix[32];
        snprintf(suffix, sizeof suffix, n_out == 1 ? "" : "/select%zu", k);
        loom_value in3[3] = {cond, outs[k], outs[n_out + k]};
        loom_value y = emit_one(b, "Where", suffix, in3, 3, NULL, 0);
        st = y == LOOM_NO_VALUE ? b->im->status : bind_output(b, k, y, 1);
    }
    free(outs);
    return st;
}

/* ---- com.microsoft fused operators, lowered ------------------------------------------------- */

/* Take float attribute NAME (DEF when absent) into *OUT. */
static loom_status contrib_float(nb *b, const char *name, float def, float *out)
{
    loom_attr a;
    *out = def;
    if (!take_attr(b, name, &a))
        return LOOM_OK;
    if (a.kind != LOOM_ATTR_FLOAT)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must be a float", name);
    *out = a.f;
    return LOOM_OK;
}

/* Take int attribute NAME (DEF when absent) into *OUT. */
static loom_status contrib_int(nb *b, const char *name, int64_t def, int64_t *out)
{
    loom_attr a;
    *out = def;
    if (!take_attr(b, name, &a))
        return LOOM_OK;
    if (a.kind != LOOM_ATTR_INT)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must be an int", name);
    *out = a.i;
    return LOOM_OK;
}

/* Refuse whatever attribute the lowering did not take, and inputs past MAX_IN or missing among
 * the first MIN_IN. */
static loom_status contrib_check(nb *b, size_t min_in, size_t max_in)
{
    if (b->special)
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "attribute '%s' of com.microsoft %s is not "
                         "supported", b->special, b->op);
    if (b->n_attrs)
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "attribute '%s' of com.microsoft %s is not "
                         "supported", b->attrs[0].name, b->op);
    while (b->n_in > min_in && b->in[b->n_in - 1] == LOOM_NO_VALUE)
        b->n_in--;
    if ((b->n_in < min_in || b->n_in > max_in) && min_in == max_in)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "com.microsoft %s takes %zu inputs, %zu "
                         "given", b->op, min_in, b->n_in);
    if (b->n_in < min_in || b->n_in > max_in)
        return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "com.microsoft %s takes %zu to %zu "
                         "inputs, %zu given", b->op, min_in, max_in, b->n_in);
    for (size_t k = 0; k < min_in; k++)
        if (b->in[k] == LOOM_NO_VALUE)
            return node_fail(b, LOOM_ERR_INVALID_ARGUMENT, "input %zu of com.microsoft %s is "
                             "required", k, b->op);
    return LOOM_OK;
}

/* Refuse when output K (an optional one the lowering does not compute) is read by the graph. */
static loom_status contrib_unused_output(nb *b, size_t k, const char *what)
{
    if (k < b->node->n_output && name_used(b, b->node->output[k]))
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "output %zu ('%.200s', %s) of com.microsoft "
                         "%s is read by the graph; Loom computes only the outputs listed in "
                         "docs/operators.md", k, b->node->output[k], what, b->op);
    return LOOM_OK;
}

/* X * C for a scalar constant C of X's dtype. */
static loom_value contrib_scale(nb *b, loom_value x, double c, const char *suffix)
{
    loom_value s = onnx_scalar_const(b->im, onnx_desc(b->im, x).dtype, c);
    if (s == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_value in2[2] = {x, s};
    return emit_one(b, "Mul", suffix, in2, 2, NULL, 0);
}

/* Bind the lowering's result Y (LOOM_NO_VALUE when building it failed) to output 0. */
static loom_status contrib_bind(nb *b, loom_value y)
{
    if (y == LOOM_NO_VALUE)
        return b->im->status;
    return b->node->n_output ? bind_output(b, 0, y, 1) : LOOM_OK;
}

/* Gelu (exact, erf form), FastGelu (tanh approximation of Gelu(X + bias), bias optional),
 * BiasGelu (exact Gelu of A + B) and QuickGelu (X * Sigmoid(alpha * X)). */
static loom_status contrib_gelu(nb *b)
{
    loom_status st;
    const char *op = b->op;
    if (strcmp(op, "QuickGelu") == 0) {
        float alpha;
        if ((st = contrib_float(b, "alpha", 1.702f, &alpha)) != LOOM_OK ||
            (st = contrib_check(b, 1, 1)) != LOOM_OK)
            return st;
        loom_value x = b->in[0], ax = x;
        if (alpha != 1.0f && (ax = contrib_scale(b, x, alpha, "/alpha")) == LOOM_NO_VALUE)
            return b->im->status;
        loom_value s = emit_one(b, "Sigmoid", "/sigmoid", &ax, 1, NULL, 0);
        if (s == LOOM_NO_VALUE)
            return b->im->status;
        loom_value in2[2] = {x, s};
        return contrib_bind(b, emit_one(b, "Mul", "", in2, 2, NULL, 0));
    }
    int fast = strcmp(op, "FastGelu") == 0, bias = strcmp(op, "BiasGelu") == 0;
    if ((st = contrib_check(b, bias ? 2 : 1, fast || bias ? 2 : 1)) != LOOM_OK)
        return st;
    loom_value x = b->in[0];
    if (b->n_in == 2 && (x = emit_one(b, "Add", "/bias", b->in, 2, NULL, 0)) == LOOM_NO_VALUE)
        return b->im->status;
    loom_attr approx = loom_attr_string("approximate", "tanh");
    return contrib_bind(b, emit_one(b, "Gelu", "", &x, 1, &approx, fast ? 1 : 0));
}

/* SkipLayerNormalization: LayerNormalization over the last axis of input + skip (+ bias), with
 * gamma (and beta). Output 3, the sum, is given when asked for; outputs 1 and 2 (mean and
 * inverse standard deviation) are refused when the graph reads them. */
static loom_status contrib_skip_layer_norm(nb *b)
{
    float eps;
    loom_status st;
    /* ONNX Runtime's default epsilon for this operator. */
    if ((st = contrib_float(b, "epsilon", 1e-12f, &eps)) != LOOM_OK ||
        (st = contrib_check(b, 3, 5)) != LOOM_OK ||
        (st = contrib_unused_output(b, 1, "mean")) != LOOM_OK ||
        (st = contrib_unused_output(b, 2, "inv_std_var")) != LOOM_OK)
        return st;
    loom_value sum = emit_one(b, "Add", "/skip", b->in, 2, NULL, 0);
    if (sum == LOOM_NO_VALUE)
        return b->im->status;
    if (b->n_in > 4 && b->in[4] != LOOM_NO_VALUE) {
        loom_value in2[2] = {sum, b->in[4]};
        if ((sum = emit_one(b, "Add", "/bias", in2, 2, NULL, 0)) == LOOM_NO_VALUE)
            return b->im->status;
    }
    loom_value in3[3] = {sum, b->in[2], b->n_in > 3 ? b->in[3] : LOOM_NO_VALUE};
    loom_attr attrs[2] = {loom_attr_int("axis", -1), loom_attr_float("epsilon", eps)};
    loom_value y = emit_one(b, "LayerNormalization", "", in3, in3[2] == LOOM_NO_VALUE ? 2 : 3,
                            attrs, 2);
    if ((st = contrib_bind(b, y)) != LOOM_OK)
        return st;
    if (b->node->n_output > 3 && *b->node->output[3])
        return bind_output(b, 3, sum, 1);
    return LOOM_OK;
}

/* The last two axes of input K swapped. */
static loom_value contrib_swap_last(nb *b, size_t k, const char *suffix)
{
    loom_tensor_desc d = onnx_desc(b->im, b->in[k]);
    if (d.rank < 2) {
        node_fail(b, LOOM_ERR_UNSUPPORTED, "com.microsoft FusedMatMul transposes input %zu, "
                  "which has rank %u; Loom supports transA/transB only from rank 2", k,
                  (unsigned)d.rank);
        return LOOM_NO_VALUE;
    }
    int64_t perm[LOOM_MAX_RANK];
    for (uint32_t i = 0; i < d.rank; i++)
        perm[i] = i;
    perm[d.rank - 2] = d.rank - 1;
    perm[d.rank - 1] = d.rank - 2;
    loom_attr a = loom_attr_ints("perm", d.rank, perm);
    return emit_one(b, "Transpose", suffix, &b->in[k], 1, &a, 1);
}

/* FusedMatMul: alpha * MatMul(A or A's last two axes swapped, B likewise). transBatchA and
 * transBatchB (batch axes moved) are refused unless 0. */
static loom_status contrib_fused_matmul(nb *b)
{
    float alpha;
    int64_t ta, tb, tba, tbb;
    loom_status st;
    if ((st = contrib_float(b, "alpha", 1.0f, &alpha)) != LOOM_OK ||
        (st = contrib_int(b, "transA", 0, &ta)) != LOOM_OK ||
        (st = contrib_int(b, "transB", 0, &tb)) != LOOM_OK ||
        (st = contrib_int(b, "transBatchA", 0, &tba)) != LOOM_OK ||
        (st = contrib_int(b, "transBatchB", 0, &tbb)) != LOOM_OK)
        return st;
    if (tba || tbb)
        return node_fail(b, LOOM_ERR_UNSUPPORTED, "attribute '%s' of com.microsoft FusedMatMul "
                         "is %lld; Loom supports only 0", tba ? "transBatchA" : "transBatchB",
                         (long long)(tba ? tba : tbb));
    if ((st = contrib_check(b, 2, 2)) != LOOM_OK)
        return st;
    loom_value in2[2] = {b->in[0], b->in[1]};
    if (ta && (in2[0] = contrib_swap_last(b, 0, "/transA")) == LOOM_NO_VALUE)
        return b->im->status;
    if (tb && (in2[1] = contrib_swap_last(b, 1, "/transB")) == LOOM_NO_VALUE)
        return b->im->status;
    loom_value y = emit_one(b, "MatMul", alpha != 1.0f ? "/matmul" : "", in2, 2, NULL, 0);
    if (y != LOOM_NO_VALUE && alpha != 1.0f)
        y = contrib_scale(b, y, alpha, "");
    return contrib_bind(b, y);
}

static loom_status contrib_lower(nb *b)
{
    if (onnx_contrib_attention_lowering(b->op)) /* onnx_contrib_attention.c */
        return onnx_contrib_attention_lower(b->im, b->sc, b->node, b->name, b->in, b->n_in,
                                            b->attrs, b->n_attrs, b->special);
    if (strcmp(b->op, "SkipLayerNormalization") == 0)
        return contrib_skip_layer_norm(b);
    if (strcmp(b->op, "FusedMatMul") == 0)
        return contrib_fused_matmul(b);
    return contrib_gelu(b);
}

/* ---- entry ----------------------------------------------------------------------------------- */

loom_status onnx_build_node(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node)
{
    nb b;
    memset(&b, 0, sizeof b);
    b.im = im;
    b.sc = sc;
    b.node = node;
    b.name = onnx_node_name(node);
    b.op = onnx_str(node->op_type);
    /* Rewrites add at most four inputs and three attributes. */
    b.cap_in = node->n_input + 8;
    b.cap_attrs = node->n_attribute + 8;
    b.in = calloc(b.cap_in, sizeof *b.in);
    b.attrs = calloc(b.cap_attrs, sizeof *b.attrs);
    loom_status st;
    if (!b.in || !b.attrs) {
        st = onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    } else if ((st = resolve_inputs(&b)) == LOOM_OK) {
        /* Loop, Scan and sequences (onnx_control_flow.c); a node given a sequence goes there
         * too, to be passed through or refused by name. */
        if (onnx_cf_op(node->domain, b.op) || onnx_cf_has_seq(b.in, b.n_in))
            st = onnx_cf_build(im, sc, node, b.in, b.n_in);
        else if (strcmp(b.op, "Constant") == 0)
            st = build_constant(&b);
        else if (strcmp(b.op, "ConstantOfShape") == 0)
            st = build_constant_of_shape(&b);
        else if (strcmp(b.op, "Shape") == 0)
            st = build_shape_or_size(&b, 0);
        else if (strcmp(b.op, "Size") == 0)
            st = build_shape_or_size(&b, 1);
        else if (strcmp(b.op, "If") == 0)
            st = build_if(&b);
        else if ((st = convert_attrs(&b)) == LOOM_OK)
            st = contrib_lowering(node->domain, b.op) > 0 ? contrib_lower(&b) : adapt(&b);
    }
    free(b.in);
    free(b.attrs);
    return st;
}
