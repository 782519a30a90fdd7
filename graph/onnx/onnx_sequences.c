/*
 * ONNX sequences at import time: a sequence is a list of graph values (onnx_seq) that exists
 * only while the graph is built, so the sequence operators become plain wiring, Split, Unsqueeze
 * and Concat: SequenceEmpty, SequenceConstruct, SequenceAt, SequenceInsert, SequenceErase
 * (positions must be constants: folded, or bound inputs), SequenceLength (a constant),
 * SplitToSequence (Split, and Squeeze when keepdims=0) and ConcatFromSequence (Concat, after
 * Unsqueeze when new_axis=1). Sequences may be carried through Loop and If; graph inputs and
 * outputs stay tensors.
 */
#include "graph/onnx/onnx_control_flow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Most sequences one import makes (each SequenceInsert makes one; unrolled loops multiply them);
 * far past what ONNX_MAX_EXPANDED lets a model build. */
#define MAX_SEQS ((size_t)1 << 20)

const onnx_seq *onnx_seq_get(const onnx_import *im, loom_value v)
{
    if (!onnx_is_seq(v))
        return NULL;
    size_t i = (size_t)(v - ONNX_SEQ_TAG);
    return i < im->n_seqs ? im->seqs[i] : NULL;
}

loom_value onnx_seq_new(onnx_import *im, loom_dtype dtype, size_t n, const loom_value *items)
{
    if (im->n_seqs >= MAX_SEQS) {
        onnx_fail(im, LOOM_ERR_UNSUPPORTED, "the model makes more than %zu sequences", MAX_SEQS);
        return LOOM_NO_VALUE;
    }
    if (im->n_seqs == im->cap_seqs) {
        /* Import-lifetime arrays: the old one stays until the import ends. */
        size_t cap = im->cap_seqs ? im->cap_seqs * 2 : 16;
        onnx_seq **p = onnx_alloc(im, cap * sizeof *p);
        if (!p) {
            onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            return LOOM_NO_VALUE;
        }
        if (im->n_seqs)
            memcpy(p, im->seqs, im->n_seqs * sizeof *p);
        im->seqs = p;
        im->cap_seqs = cap;
    }
    onnx_seq *s = onnx_alloc(im, sizeof *s);
    loom_value *copy = onnx_alloc(im, (n + 1) * sizeof *copy);
    if (!s || !copy) {
        onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    if (n)
        memcpy(copy, items, n * sizeof *copy);
    s->dtype = dtype;
    s->n = n;
    s->items = copy;
    im->seqs[im->n_seqs] = s;
    return ONNX_SEQ_TAG + (loom_value)im->n_seqs++;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Input K as a sequence, or NULL after refusing (NAME says what the operator calls it). */
static const onnx_seq *seq_input(onnx_import *im, const Onnx__NodeProto *node,
                                 const loom_value *in, size_t n_in, size_t k)
{
    const onnx_seq *s = k < n_in ? onnx_seq_get(im, in[k]) : NULL;
    if (!s)
        onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "input %zu%s%.200s%s must be a "
                     "sequence", k, k < node->n_input ? " ('" : "",
                     k < node->n_input ? onnx_str(node->input[k]) : "",
                     k < node->n_input ? "')" : "");
    return s;
}

/* Input K as a tensor, or LOOM_NO_VALUE after refusing. */
static loom_value tensor_input(onnx_import *im, const Onnx__NodeProto *node, const loom_value *in,
                               size_t n_in, size_t k)
{
    if (k >= n_in || in[k] == LOOM_NO_VALUE || onnx_is_seq(in[k])) {
        onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "input %zu must be a tensor%s", k,
                     k < n_in && onnx_is_seq(in[k]) ? ", not a sequence" : "");
        return LOOM_NO_VALUE;
    }
    return in[k];
}

/* The position in input K (absent: *PRESENT = 0), a constant integer scalar. */
static loom_status position_input(onnx_import *im, const Onnx__NodeProto *node,
                                  const loom_value *in, size_t n_in, size_t k, int *present,
                                  int64_t *pos)
{
    *present = k < n_in && in[k] != LOOM_NO_VALUE;
    if (!*present)
        return LOOM_OK;
    if (onnx_is_seq(in[k]))
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its position must be a "
                            "tensor, not a sequence");
    loom_tensor_desc d = onnx_desc(im, in[k]);
    if ((d.dtype != LOOM_DTYPE_I64 && d.dtype != LOOM_DTYPE_I32) ||
        loom_tensor_desc_numel(&d) != 1)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its position must be one "
                            "int32 or int64, not %s of %lld elements", loom_dtype_name(d.dtype),
                            (long long)loom_tensor_desc_numel(&d));
    const void *data = onnx_const_data(im, in[k]);
    if (!data) {
        im->g->need_constant = (uint32_t)in[k] + 1; /* its value would do: say which */
        return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "its position ('%.200s') is only "
                            "known at run time; Loom resolves sequences when it builds the graph "
                            "and needs it as a constant", onnx_str(node->input[k]));
    }
    *pos = d.dtype == LOOM_DTYPE_I64 ? *(const int64_t *)data : *(const int32_t *)data;
    onnx_mark_read(im, in[k]);
    return LOOM_OK;
}

/* POS in [-N, N - 1 + EXTRA] (EXTRA 1: one past the end is allowed) into [0, N - 1 + EXTRA]. */
static loom_status position_range(onnx_import *im, const Onnx__NodeProto *node, int64_t *pos,
                                  size_t n, int extra)
{
    int64_t lo = -(int64_t)n, hi = (int64_t)n - 1 + extra;
    if (*pos < lo || *pos > hi)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "position %lld is out of range "
                            "for a sequence of %zu tensor%s ([%lld, %lld])", (long long)*pos, n,
                            n == 1 ? "" : "s", (long long)lo, (long long)hi);
    if (*pos < 0)
        *pos += (int64_t)n;
    return LOOM_OK;
}

static loom_status bind_seq(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                            loom_value s)
{
    if (s == LOOM_NO_VALUE)
        return im->status;
    return onnx_cf_bind(im, sc, node->output[0], s, 0);
}

/* An int attribute NAME of NODE (DEF when absent). */
static loom_status int_attr(onnx_import *im, const Onnx__NodeProto *node, const char *name,
                            int64_t def, int required, int64_t *out)
{
    const Onnx__AttributeProto *a = onnx_cf_attr(node, name);
    *out = def;
    if (!a) {
        if (required)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "needs its '%s' attribute",
                                name);
        return LOOM_OK;
    }
    if ((a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) ||
        (!a->has_type && !a->has_i))
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must be an int",
                            name);
    *out = a->i;
    return LOOM_OK;
}

/* Refuse attributes other than KNOWN (NULL-terminated). */
static loom_status only_attrs(onnx_import *im, const Onnx__NodeProto *node,
                              const char *const *known)
{
    for (size_t a = 0; a < node->n_attribute; a++) {
        const char *name = onnx_str(node->attribute[a]->name);
        int ok = 0;
        for (size_t k = 0; known && known[k] && !ok; k++)
            ok = strcmp(name, known[k]) == 0;
        if (!ok)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "has attribute '%.100s', "
                                "which %s does not have", name, onnx_str(node->op_type));
    }
    return LOOM_OK;
}

static loom_status count_inputs(onnx_import *im, const Onnx__NodeProto *node, size_t n_in,
                                size_t lo, size_t hi)
{
    if (n_in >= lo && n_in <= hi)
        return LOOM_OK;
    if (lo == hi)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "takes %zu input%s, %zu given",
                            lo, lo == 1 ? "" : "s", n_in);
    return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "takes %zu to %zu inputs, %zu "
                        "given", lo, hi, n_in);
}

/* ---- the operators --------------------------------------------------------------------------- */

static loom_status sequence_empty(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                                  size_t n_in)
{
    static const char *const known[] = {"dtype", NULL};
    int64_t et;
    loom_status st;
    if ((st = only_attrs(im, node, known)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 0, 0)) != LOOM_OK ||
        (st = int_attr(im, node, "dtype", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, &et)) !=
            LOOM_OK)
        return st;
    loom_dtype dt = et >= INT32_MIN && et <= INT32_MAX ? onnx_dtype_from_onnx((int32_t)et)
                                                       : LOOM_DTYPE_UNDEFINED;
    if (dt == LOOM_DTYPE_UNDEFINED)
        return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "dtype %lld (%s) is not one Loom "
                            "supports", (long long)et,
                            et >= INT32_MIN && et <= INT32_MAX
                                ? onnx_onnx_type_name((int32_t)et)
                                : "unknown");
    return bind_seq(im, sc, node, onnx_seq_new(im, dt, 0, NULL));
}

static loom_status sequence_construct(onnx_import *im, onnx_scope *sc,
                                      const Onnx__NodeProto *node, const loom_value *in,
                                      size_t n_in)
{
    loom_status st;
    if ((st = only_attrs(im, node, NULL)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 1, SIZE_MAX)) != LOOM_OK)
        return st;
    loom_dtype dt = LOOM_DTYPE_UNDEFINED;
    for (size_t k = 0; k < n_in; k++) {
        if (tensor_input(im, node, in, n_in, k) == LOOM_NO_VALUE)
            return im->status;
        loom_tensor_desc d = onnx_desc(im, in[k]);
        if (k && d.dtype != dt)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "input %zu is %s, input 0 "
                                "%s: a sequence holds tensors of one dtype", k,
                                loom_dtype_name(d.dtype), loom_dtype_name(dt));
        dt = d.dtype;
        onnx_mark_read(im, in[k]);
    }
    return bind_seq(im, sc, node, onnx_seq_new(im, dt, n_in, in));
}

static loom_status sequence_at(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                               const loom_value *in, size_t n_in)
{
    loom_status st;
    const onnx_seq *s;
    int present;
    int64_t pos = 0;
    if ((st = only_attrs(im, node, NULL)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 2, 2)) != LOOM_OK)
        return st;
    if (!(s = seq_input(im, node, in, n_in, 0)))
        return im->status;
    if ((st = position_input(im, node, in, n_in, 1, &present, &pos)) != LOOM_OK)
        return st;
    if (!present)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "needs its position input");
    if ((st = position_range(im, node, &pos, s->n, 0)) != LOOM_OK)
        return st;
    return onnx_cf_bind(im, sc, node->output[0], s->items[pos], 0);
}

static loom_status sequence_insert(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                                   const loom_value *in, size_t n_in)
{
    loom_status st;
    const onnx_seq *s;
    int present;
    int64_t pos = 0;
    if ((st = only_attrs(im, node, NULL)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 2, 3)) != LOOM_OK)
        return st;
    if (!(s = seq_input(im, node, in, n_in, 0)))
        return im->status;
    loom_value t = tensor_input(im, node, in, n_in, 1);
    if (t == LOOM_NO_VALUE)
        return im->status;
    loom_tensor_desc d = onnx_desc(im, t);
    if (d.dtype != s->dtype)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "inserts a %s tensor into a "
                            "sequence of %s", loom_dtype_name(d.dtype),
                            loom_dtype_name(s->dtype));
    if ((st = position_input(im, node, in, n_in, 2, &present, &pos)) != LOOM_OK)
        return st;
    if (!present)
        pos = (int64_t)s->n; /* at the back */
    if ((st = position_range(im, node, &pos, s->n, 1)) != LOOM_OK)
        return st;
    loom_value *items = malloc((s->n + 1) * sizeof *items);
    if (!items)
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(items, s->items, (size_t)pos * sizeof *items);
    items[pos] = t;
    memcpy(items + pos + 1, s->items + pos, (s->n - (size_t)pos) * sizeof *items);
    onnx_mark_read(im, t);
    loom_value r = onnx_seq_new(im, s->dtype, s->n + 1, items);
    free(items);
    return bind_seq(im, sc, node, r);
}

static loom_status sequence_erase(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                                  const loom_value *in, size_t n_in)
{
    loom_status st;
    const onnx_seq *s;
    int present;
    int64_t pos = -1; /* the last */
    if ((st = only_attrs(im, node, NULL)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 1, 2)) != LOOM_OK)
        return st;
    if (!(s = seq_input(im, node, in, n_in, 0)))
        return im->status;
    if ((st = position_input(im, node, in, n_in, 1, &present, &pos)) != LOOM_OK)
        return st;
    if (!present)
        pos = -1;
    if (!s->n)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "erases from an empty "
                            "sequence");
    if ((st = position_range(im, node, &pos, s->n, 0)) != LOOM_OK)
        return st;
    loom_value *items = malloc(s->n * sizeof *items);
    if (!items)
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(items, s->items, (size_t)pos * sizeof *items);
    memcpy(items + pos, s->items + pos + 1, (s->n - (size_t)pos - 1) * sizeof *items);
    /* The erased tensor was read by the sequence, whatever reads it later. */
    onnx_mark_read(im, s->items[pos]);
    loom_value r = onnx_seq_new(im, s->dtype, s->n - 1, items);
    free(items);
    return bind_seq(im, sc, node, r);
}

static loom_status sequence_length(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                                   const loom_value *in, size_t n_in)
{
    loom_status st;
    const onnx_seq *s;
    if ((st = only_attrs(im, node, NULL)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 1, 1)) != LOOM_OK)
        return st;
    if (!(s = seq_input(im, node, in, n_in, 0)))
        return im->status;
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = LOOM_DTYPE_I64;
    t.rank = 0;
    if (!(t.data = malloc(sizeof(int64_t))))
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    *(int64_t *)t.data = (int64_t)s->n;
    loom_value v = onnx_own_constant(im, node->output[0], &t);
    if (v == LOOM_NO_VALUE)
        return im->status;
    return onnx_cf_bind(im, sc, node->output[0], v, 0);
}

/* SplitToSequence(input, split?): chunks along axis. No split: chunks of 1 (the axis removed
 * when keepdims=0); a scalar split: chunks of that size, the last one smaller when it does not
 * divide; a 1-D split: those sizes. */
static loom_status split_to_sequence(onnx_import *im, onnx_scope *sc,
                                     const Onnx__NodeProto *node, const loom_value *in,
                                     size_t n_in)
{
    static const char *const known[] = {"axis", "keepdims", NULL};
    loom_status st;
    int64_t axis, keepdims;
    if ((st = only_attrs(im, node, known)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 1, 2)) != LOOM_OK ||
        (st = int_attr(im, node, "axis", 0, 0, &axis)) != LOOM_OK ||
        (st = int_attr(im, node, "keepdims", 1, 0, &keepdims)) != LOOM_OK)
        return st;
    loom_value x = tensor_input(im, node, in, n_in, 0);
    if (x == LOOM_NO_VALUE)
        return im->status;
    loom_tensor_desc d = onnx_desc(im, x);
    int64_t r = d.rank;
    if (axis < -r || axis >= r)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "axis %lld is out of range for "
                            "rank %lld", (long long)axis, (long long)r);
    if (axis < 0)
        axis += r;
    int64_t dim = d.dims[axis];
    int64_t *sizes = NULL;
    size_t n = 0;
    int squeeze = 0;
    if (n_in > 1 && in[1] != LOOM_NO_VALUE) {
        loom_value sp = tensor_input(im, node, in, n_in, 1);
        if (sp == LOOM_NO_VALUE)
            return im->status;
        loom_tensor_desc sd = onnx_desc(im, sp);
        const void *data = onnx_const_data(im, sp);
        if ((sd.dtype != LOOM_DTYPE_I64 && sd.dtype != LOOM_DTYPE_I32) || sd.rank > 1)
            return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "split must be an int32 "
                                "or int64 scalar or vector");
        if (!data) {
            im->g->need_constant = (uint32_t)sp + 1;
            return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "its split ('%.200s') is only "
                                "known at run time; Loom resolves sequences when it builds the "
                                "graph and needs it as a constant", onnx_str(node->input[1]));
        }
        onnx_mark_read(im, sp);
        size_t count = (size_t)loom_tensor_desc_numel(&sd);
        if (sd.rank == 0) {
            int64_t chunk = sd.dtype == LOOM_DTYPE_I64 ? *(const int64_t *)data
                                                       : *(const int32_t *)data;
            if (chunk <= 0)
                return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "split is %lld; a "
                                    "chunk size must be positive", (long long)chunk);
            n = (size_t)(dim / chunk + (dim % chunk != 0));
            if (n > ONNX_MAX_EXPANDED)
                return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "would make a sequence of "
                                    "%zu tensors; Loom's limit is %d", n, ONNX_MAX_EXPANDED);
            if (!(sizes = calloc(n + 1, sizeof *sizes)))
                return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            for (size_t k = 0; k < n; k++)
                sizes[k] = k + 1 < n || dim % chunk == 0 ? chunk : dim % chunk;
        } else {
            n = count;
            if (!(sizes = calloc(n + 1, sizeof *sizes)))
                return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            int64_t sum = 0;
            for (size_t k = 0; k < n; k++) {
                sizes[k] = sd.dtype == LOOM_DTYPE_I64 ? ((const int64_t *)data)[k]
                                                      : ((const int32_t *)data)[k];
                if (sizes[k] < 0 || __builtin_add_overflow(sum, sizes[k], &sum)) {
                    free(sizes);
                    return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "split size %zu "
                                        "is negative or too large", k);
                }
            }
            if (sum != dim) {
                free(sizes);
                return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "split sizes sum to "
                                    "%lld but axis %lld has size %lld", (long long)sum,
                                    (long long)axis, (long long)dim);
            }
        }
    } else {
        n = (size_t)dim;
        squeeze = !keepdims;
        if (n > ONNX_MAX_EXPANDED)
            return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "would make a sequence of %zu "
                                "tensors; Loom's limit is %d", n, ONNX_MAX_EXPANDED);
        if (!(sizes = calloc(n + 1, sizeof *sizes)))
            return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        for (size_t k = 0; k < n; k++)
            sizes[k] = 1;
    }
    if (n > ONNX_MAX_EXPANDED) { /* a 1-D split this long */
        free(sizes);
        return onnx_cf_fail(im, node, LOOM_ERR_UNSUPPORTED, "would make a sequence of %zu "
                            "tensors; Loom's limit is %d", n, ONNX_MAX_EXPANDED);
    }
    loom_value *items = calloc(n + 1, sizeof *items);
    if (!items) {
        free(sizes);
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    size_t first_new = im->g->n_values;
    st = LOOM_OK;
    if (n) {
        loom_value sv = onnx_const_i64s(im, n, sizes);
        loom_value in2[2] = {x, sv};
        loom_attr a = loom_attr_int("axis", axis);
        if (sv == LOOM_NO_VALUE ||
            (st = loom_graph_op(im->g, "Split", onnx_node_name(node), in2, 2, &a, 1, items, n)) !=
                LOOM_OK)
            st = sv == LOOM_NO_VALUE ? im->status : onnx_fail_builder(im, st);
    }
    for (size_t k = 0; k < n && st == LOOM_OK && squeeze; k++) {
        char name[300];
        snprintf(name, sizeof name, "%.200s/squeeze%zu", onnx_node_name(node), k);
        loom_value ax = onnx_const_i64s(im, 1, &axis);
        loom_value in2[2] = {items[k], ax};
        items[k] = ax == LOOM_NO_VALUE ? LOOM_NO_VALUE
                                       : onnx_cf_op1(im, "Squeeze", name, in2, 2, NULL, 0);
        if (items[k] == LOOM_NO_VALUE)
            st = im->status;
    }
    if (st == LOOM_OK) {
        onnx_mark_read(im, x);
        onnx_cf_mark_new(im, first_new);
        st = bind_seq(im, sc, node, onnx_seq_new(im, d.dtype, n, items));
    }
    free(items);
    free(sizes);
    return st;
}

/* ConcatFromSequence(sequence): Concat of its tensors along axis, or, with new_axis=1, stacked
 * along a new axis (in [-r-1, r] for tensors of rank r). */
static loom_status concat_from_sequence(onnx_import *im, onnx_scope *sc,
                                        const Onnx__NodeProto *node, const loom_value *in,
                                        size_t n_in)
{
    static const char *const known[] = {"axis", "new_axis", NULL};
    loom_status st;
    int64_t axis, new_axis;
    const onnx_seq *s;
    if ((st = only_attrs(im, node, known)) != LOOM_OK ||
        (st = count_inputs(im, node, n_in, 1, 1)) != LOOM_OK ||
        (st = int_attr(im, node, "axis", 0, 1, &axis)) != LOOM_OK ||
        (st = int_attr(im, node, "new_axis", 0, 0, &new_axis)) != LOOM_OK)
        return st;
    if (new_axis != 0 && new_axis != 1)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "new_axis is %lld; 0 or 1",
                            (long long)new_axis);
    if (!(s = seq_input(im, node, in, n_in, 0)))
        return im->status;
    if (!s->n)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "its sequence is empty; there "
                            "is nothing to concatenate");
    loom_tensor_desc d = onnx_desc(im, s->items[0]);
    int64_t r = (int64_t)d.rank + new_axis;
    if (axis < -r || axis >= r)
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "axis %lld is out of range for "
                            "tensors of rank %u%s", (long long)axis, d.rank,
                            new_axis ? " with new_axis=1" : "");
    if (axis < 0)
        axis += r;
    loom_value *parts = calloc(s->n + 1, sizeof *parts);
    if (!parts)
        return onnx_fail(im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    st = LOOM_OK;
    for (size_t k = 0; k < s->n && st == LOOM_OK; k++) {
        parts[k] = s->items[k];
        if (!new_axis)
            continue;
        char name[300];
        snprintf(name, sizeof name, "%.200s/unsqueeze%zu", onnx_node_name(node), k);
        if ((parts[k] = onnx_cf_unsqueeze(im, s->items[k], axis, name)) == LOOM_NO_VALUE)
            st = im->status;
    }
    loom_value y = LOOM_NO_VALUE;
    if (st == LOOM_OK) {
        loom_attr a = loom_attr_int("axis", axis);
        y = onnx_cf_op1(im, "Concat", onnx_node_name(node), parts, s->n, &a, 1);
        if (y == LOOM_NO_VALUE)
            st = im->status;
    }
    free(parts);
    if (st != LOOM_OK)
        return st;
    return onnx_cf_bind(im, sc, node->output[0], y, 1);
}

loom_status onnx_build_sequence_op(onnx_import *im, onnx_scope *sc, const Onnx__NodeProto *node,
                                   const loom_value *in, size_t n_in)
{
    const char *op = onnx_str(node->op_type);
    if (node->n_output != 1 || !*node->output[0])
        return onnx_cf_fail(im, node, LOOM_ERR_INVALID_ARGUMENT, "must have one named output, "
                            "not %zu", node->n_output);
    if (strcmp(op, "SequenceEmpty") == 0)
        return sequence_empty(im, sc, node, n_in);
    if (strcmp(op, "SequenceConstruct") == 0)
        return sequence_construct(im, sc, node, in, n_in);
    if (strcmp(op, "SequenceAt") == 0)
        return sequence_at(im, sc, node, in, n_in);
    if (strcmp(op, "SequenceInsert") == 0)
        return sequence_insert(im, sc, node, in, n_in);
    if (strcmp(op, "SequenceErase") == 0)
        return sequence_erase(im, sc, node, in, n_in);
    if (strcmp(op, "SequenceLength") == 0)
        return sequence_length(im, sc, node, in, n_in);
    if (strcmp(op, "SplitToSequence") == 0)
        return split_to_sequence(im, sc, node, in, n_in);
    if (strcmp(op, "ConcatFromSequence") == 0)
        return concat_from_sequence(im, sc, node, in, n_in);
    return onnx_cf_fail(im, node, LOOM_ERR_INTERNAL, "not a sequence operator");
}
