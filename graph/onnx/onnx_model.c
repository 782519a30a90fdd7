/*
 * One ONNX model, many imports: the weight store that every import of one unpacked ModelProto
 * borrows its initializers from (decoded once, however many shape specialisations are made),
 * and the report of which graph inputs an import needed as constants. The loom_model of
 * scheduler/model.c is built on these.
 */
#include "graph/graph_internal.h"
#include "graph/onnx/onnx_import.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct weight_slot {
    const Onnx__TensorProto *key; /* NULL: empty */
    onnx_tensor t;
} weight_slot;

struct onnx_weights {
    weight_slot *slots;
    size_t cap, used;
    size_t bytes;
};

onnx_weights *onnx_weights_create(void)
{
    return calloc(1, sizeof(onnx_weights));
}

void onnx_weights_destroy(onnx_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->cap; i++)
        if (w->slots[i].key)
            free(w->slots[i].t.data);
    free(w->slots);
    free(w);
}

size_t onnx_weights_bytes(const onnx_weights *w)
{
    return w ? w->bytes : 0;
}

size_t onnx_weights_count(const onnx_weights *w)
{
    return w ? w->used : 0;
}

static size_t slot_of(const weight_slot *slots, size_t cap, const Onnx__TensorProto *key)
{
    uint64_t h = (uint64_t)(uintptr_t)key;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    size_t i = (size_t)h & (cap - 1);
    while (slots[i].key && slots[i].key != key)
        i = (i + 1) & (cap - 1);
    return i;
}

static int grow(onnx_weights *w)
{
    if ((w->used + 1) * 2 <= w->cap)
        return 1;
    size_t ncap = w->cap ? w->cap * 2 : 64;
    weight_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return 0;
    for (size_t i = 0; i < w->cap; i++)
        if (w->slots[i].key)
            ns[slot_of(ns, ncap, w->slots[i].key)] = w->slots[i];
    free(w->slots);
    w->slots = ns;
    w->cap = ncap;
    return 1;
}

loom_status onnx_weights_get(onnx_weights *w, const Onnx__TensorProto *t, const onnx_source *src,
                             const char *what, const onnx_tensor **out)
{
    if (w->cap) {
        size_t i = slot_of(w->slots, w->cap, t);
        if (w->slots[i].key) {
            *out = &w->slots[i].t;
            return LOOM_OK;
        }
    }
    if (!grow(w))
        return onnx_error(LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", src->file);
    onnx_tensor d;
    loom_status st = onnx_tensor_decode(t, src, what, &d);
    if (st != LOOM_OK)
        return st;
    size_t i = slot_of(w->slots, w->cap, t);
    w->slots[i].key = t;
    w->slots[i].t = d;
    w->used++;
    w->bytes += d.nbytes;
    *out = &w->slots[i].t;
    return LOOM_OK;
}

/* Free the payload protobuf-c unpacked for T (the store holds the decoded copy now). The
 * message was unpacked with the default allocator, so its arrays are malloc'd. */
static void release_payload(Onnx__TensorProto *t)
{
    if (t->has_raw_data && t->raw_data.data) {
        free(t->raw_data.data);
        t->raw_data.data = NULL;
        t->raw_data.len = 0;
    }
#define DROP(field)                                                                                \
    do {                                                                                           \
        free(t->field);                                                                            \
        t->field = NULL;                                                                           \
        t->n_##field = 0;                                                                          \
    } while (0)
    DROP(float_data);
    DROP(int32_data);
    DROP(int64_data);
    DROP(double_data);
    DROP(uint64_data);
#undef DROP
}

loom_status onnx_weights_preload(onnx_weights *w, Onnx__GraphProto *gp, const onnx_source *src)
{
    for (size_t i = 0; i < gp->n_initializer; i++) {
        Onnx__TensorProto *t = gp->initializer[i];
        /* Tensors Loom cannot decode stay as they are: the import that reads one (if any)
         * reports it, and an unused one costs nothing. */
        if (!t->name || !*t->name || (t->has_data_type &&
                                      onnx_dtype_from_onnx(t->data_type) == LOOM_DTYPE_UNDEFINED))
            continue;
        char what[160];
        snprintf(what, sizeof what, "initializer '%.100s'", t->name);
        const onnx_tensor *d;
        loom_status st = onnx_weights_get(w, t, src, what, &d);
        if (st != LOOM_OK)
            return st;
        release_payload(t);
    }
    return LOOM_OK;
}

/* ---- which graph inputs were needed as constants ----------------------------------------- */

void onnx_report_need(onnx_import *im, const Onnx__GraphProto *root)
{
    loom_graph *g = im->g;
    onnx_import_report *r = im->report;
    uint32_t start = g->need_constant;
    if (!r || !start || start > g->n_values)
        return;
    unsigned char *seen = calloc(g->n_values + 1, 1);
    int32_t *stack = malloc((g->n_values + 1) * sizeof *stack);
    if (!seen || !stack) {
        free(seen);
        free(stack);
        return;
    }
    size_t top = 0;
    stack[top++] = (int32_t)(start - 1);
    seen[start - 1] = 1;
    while (top) {
        const graph_value *val = &g->values[stack[--top]];
        if (val->kind == GRAPH_VALUE_INPUT) {
            for (size_t i = 0; i < root->n_input; i++) {
                if (!root->input[i]->name || !val->name ||
                    strcmp(root->input[i]->name, val->name) != 0)
                    continue;
                int dup = 0;
                for (size_t k = 0; k < r->n_need; k++)
                    dup |= r->need[k] == (uint32_t)i;
                if (!dup && r->n_need < ONNX_MAX_NEED)
                    r->need[r->n_need++] = (uint32_t)i;
                break;
            }
            continue;
        }
        if (val->kind != GRAPH_VALUE_NODE || val->producer < 0)
            continue;
        const graph_node *n = &g->nodes[val->producer];
        for (uint32_t k = 0; k < n->n_inputs; k++) {
            loom_value v = n->inputs[k];
            if (v == LOOM_NO_VALUE || v < 0 || (size_t)v >= g->n_values || seen[v])
                continue;
            seen[v] = 1;
            stack[top++] = v;
        }
    }
    free(seen);
    free(stack);
}
