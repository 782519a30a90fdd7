/*
 * The graph IR and its builder core: values (inputs, constants, node outputs), nodes, the
 * sticky error, name uniqueness. Per-op builders live in builders.c; inference and
 * canonicalisation in the registry (ops_*.c); folding while building in graph_fold.c;
 * loom_graph_check and the topological order in graph_check.c.
 */
#include "graph_internal.h"
#include "graph_symbols.h"


#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers --------------------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Record the graph's first failure (sticky) and the thread's last error. */
loom_status graph_fail(loom_graph *g, loom_status status, const char *fmt, ...)
{
    char msg[sizeof g->error_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g && g->error == LOOM_OK) {
        g->error = status;
        memcpy(g->error_msg, msg, sizeof msg);
    }
    return loom_set_error(status, "%s", msg);
}

/* The API boundary of every builder call: a call on a graph that already failed does nothing and
 * reports the first failure; a call on a checked graph (read-only) fails without poisoning it, so
 * the graph stays plannable. Otherwise the thread's last error is cleared: the call starts
 * clean, and a success leaves "". */
int graph_unusable(loom_graph *g)
{
    if (!g) {
        loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "graph is NULL");
        return 1;
    }
    if (g->error != LOOM_OK) {
        loom_set_error(g->error, "%s", g->error_msg);
        return 1;
    }
    if (g->checked) {
        loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                       "graph '%s' was already checked and is read-only", g->name);
        return 1;
    }
    loom_clear_error();
    return 0;
}

/* The status a refused builder call returns (see graph_unusable). */
static loom_status graph_unusable_status(const loom_graph *g)
{
    return g && g->error != LOOM_OK ? g->error : LOOM_ERR_INVALID_ARGUMENT;
}

static int grow(void **items, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 1;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*items, n * elem);
    if (!p)
        return 0;
    *items = p;
    *cap = n;
    return 1;
}


/* ---- names: a hash set over value names, so uniqueness checks stay O(1) ------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

int32_t graph_name_find(const loom_graph *g, const char *name)
{
    const graph_name_index *ix = &g->names;
    if (!ix->cap)
        return -1;
    for (size_t i = hash_str(name) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
        int32_t v = ix->slots[i];
        if (v < 0)
            return -1;
        if (strcmp(g->values[v].name, name) == 0)
            return v;
    }
}

static int name_insert_slot(graph_name_index *ix, const loom_graph *g, int32_t v)
{
    for (size_t i = hash_str(g->values[v].name) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
        if (ix->slots[i] < 0) {
            ix->slots[i] = v;
            return 1;
        }
    }
}

static int name_insert(loom_graph *g, int32_t v)
{
    graph_name_index *ix = &g->names;
    if ((ix->used + 1) * 2 > ix->cap) {
        size_t ncap = ix->cap ? ix->cap * 2 : 64;
        int32_t *slots = malloc(ncap * sizeof *slots);
        if (!slots)
            return 0;
        for (size_t i = 0; i < ncap; i++)
            slots[i] = -1;
        graph_name_index nix = {slots, ncap, 0};
        for (size_t i = 0; i < ix->cap; i++)
            if (ix->slots[i] >= 0)
                name_insert_slot(&nix, g, ix->slots[i]);
        nix.used = ix->used;
        free(ix->slots);
        *ix = nix;
    }
    name_insert_slot(ix, g, v);
    ix->used++;
    return 1;
}

/* Remove value V's name from the index (used by renames): rebuild the probe chain after it. */
static void name_remove(loom_graph *g, int32_t v)
{
    graph_name_index *ix = &g->names;
    if (!ix->cap)
        return;
    size_t mask = ix->cap - 1, i = hash_str(g->values[v].name) & mask;
    while (ix->slots[i] >= 0 && ix->slots[i] != v)
        i = (i + 1) & mask;
    if (ix->slots[i] < 0)
        return;
    ix->slots[i] = -1;
    ix->used--;
    for (size_t j = (i + 1) & mask; ix->slots[j] >= 0; j = (j + 1) & mask) {
        int32_t w = ix->slots[j];
        ix->slots[j] = -1;
        name_insert_slot(ix, g, w);
    }
}

/* ---- graphs ------------------------------------------------------------------------------ */

/* Where graph tags come from: the one process-wide counter of Loom, atomic and holding nothing
 * but a number, so that a handle of one graph is refused by another (see graph_handle). */
static atomic_uint graph_tag_counter;

loom_graph *loom_graph_create(const char *name)
{
    loom_graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->name = dup_str(name ? name : "graph");
    if (!g->name) {
        free(g);
        return NULL;
    }
    unsigned max_tag = (unsigned)(INT32_MAX >> GRAPH_HANDLE_INDEX_BITS); /* 127 */
    g->tag = 1 + atomic_fetch_add_explicit(&graph_tag_counter, 1, memory_order_relaxed) % max_tag;
    return g;
}

void graph_raw_handles(loom_graph *g)
{
    if (g && g->n_values == 0)
        g->tag = 0;
}

void loom_graph_destroy(loom_graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_values; i++) {
        free(g->values[i].name);
        if (g->values[i].data_owned)
            free((void *)g->values[i].data);
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        free(g->nodes[i].name);
        free(g->nodes[i].inputs);
        free(g->nodes[i].outputs);
        loom_attr_list_free(&g->nodes[i].attrs);
    }
    free(g->names.slots);
    free(g->values);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g->name);
    graph_sym_free(g->sym);
    free(g);
}

static int valid_dtype(loom_dtype t)
{
    return loom_dtype_size(t) != 0;
}

/* Append a value; NAME NULL makes one up from PREFIX. Returns LOOM_NO_VALUE after recording the
 * error. */
loom_value graph_add_value(loom_graph *g, const char *name, const char *prefix,
                           const loom_tensor_desc *desc, graph_value_kind kind)
{
    char made[96];
    if (!name) {
        do
            snprintf(made, sizeof made, "%s_%u", prefix, g->name_counter++);
        while (graph_name_find(g, made) >= 0);
        name = made;
    } else if (!*name) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "a %s has an empty name", prefix);
        return LOOM_NO_VALUE;
    } else if (graph_name_find(g, name) >= 0) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "value name '%s' is already used in graph '%s'",
                   name, g->name);
        return LOOM_NO_VALUE;
    }
    if (g->n_values >= GRAPH_MAX_VALUES ||
        !grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof *g->values)) {
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding value '%s'", name);
        return LOOM_NO_VALUE;
    }
    graph_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = dup_str(name);
    if (!v->name) {
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding value '%s'", name);
        return LOOM_NO_VALUE;
    }
    v->desc = *desc;
    v->kind = kind;
    v->producer = -1;
    v->output_index = -1;
    loom_value id = (loom_value)g->n_values++;
    if (!name_insert(g, id)) {
        free(v->name);
        g->n_values--;
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding value '%s'", name);
        return LOOM_NO_VALUE;
    }
    return id;
}

/* Validate a user-given type and shape into DESC; WHAT names it in messages. */
static int make_desc(loom_graph *g, const char *what, const char *name, loom_dtype dtype,
                     uint32_t rank, const int64_t *dims, loom_tensor_desc *desc)
{
    const char *n = name ? name : "(unnamed)";
    if (!valid_dtype(dtype)) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "%s '%s': unknown dtype %d", what, n, (int)dtype);
        return 0;
    }
    if (rank > LOOM_MAX_RANK) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "%s '%s': rank %u exceeds the maximum of %d",
                   what, n, rank, LOOM_MAX_RANK);
        return 0;
    }
    if (rank && !dims) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "%s '%s': dims is NULL for rank %u", what, n,
                   rank);
        return 0;
    }
    memset(desc, 0, sizeof *desc);
    desc->dtype = dtype;
    desc->rank = rank;
    for (uint32_t k = 0; k < rank; k++) {
        if (dims[k] < 0) {
            graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "%s '%s': dimension %u is negative (%lld)",
                       what, n, k, (long long)dims[k]);
            return 0;
        }
        desc->dims[k] = dims[k];
    }
    int64_t numel;
    if (!loom_dims_numel_checked(rank, desc->dims, loom_dtype_size(dtype), &numel)) {
        char buf[256];
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "%s '%s': shape %s overflows (too many elements)",
                   what, n, loom_dims_format(rank, desc->dims, buf, sizeof buf));
        return 0;
    }
    return 1;
}

loom_value loom_input(loom_graph *g, const char *name, loom_dtype dtype, uint32_t rank,
                      const int64_t *dims)
{
    if (graph_unusable(g))
        return LOOM_NO_VALUE;
    if (!name) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "graph input without a name");
        return LOOM_NO_VALUE;
    }
    loom_tensor_desc d;
    if (!make_desc(g, "input", name, dtype, rank, dims, &d))
        return LOOM_NO_VALUE;
    if (!grow((void **)&g->inputs, &g->cap_inputs, g->n_inputs + 1, sizeof *g->inputs)) {
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding input '%s'", name);
        return LOOM_NO_VALUE;
    }
    loom_value v = graph_add_value(g, name, "input", &d, GRAPH_VALUE_INPUT);
    if (v != LOOM_NO_VALUE)
        g->inputs[g->n_inputs++] = v;
    return graph_handle(g, v);
}

static loom_value add_constant(loom_graph *g, const char *name, loom_dtype dtype, uint32_t rank,
                               const int64_t *dims, const void *data, int copy)
{
    if (graph_unusable(g))
        return LOOM_NO_VALUE;
    loom_tensor_desc d;
    if (!make_desc(g, "constant", name, dtype, rank, dims, &d))
        return LOOM_NO_VALUE;
    int64_t numel = loom_tensor_desc_numel(&d);
    size_t bytes = (size_t)numel * loom_dtype_size(dtype);
    if (!data && bytes) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "constant '%s': data is NULL",
                   name ? name : "(unnamed)");
        return LOOM_NO_VALUE;
    }
    void *copy_of = NULL;
    if (copy) {
        /* One extra byte so that empty constants still get a distinct, valid pointer. */
        copy_of = malloc(bytes + 1);
        if (!copy_of) {
            graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory copying constant '%s' (%zu bytes)",
                       name ? name : "(unnamed)", bytes);
            return LOOM_NO_VALUE;
        }
        if (bytes)
            memcpy(copy_of, data, bytes);
    }
    loom_value v = graph_add_value(g, name, "const", &d, GRAPH_VALUE_CONSTANT);
    if (v == LOOM_NO_VALUE) {
        free(copy_of);
        return v;
    }
    g->values[v].data = copy ? copy_of : data;
    g->values[v].data_owned = copy;
    return graph_handle(g, v);
}

loom_value loom_constant(loom_graph *g, const char *name, loom_dtype dtype, uint32_t rank,
                         const int64_t *dims, const void *data)
{
    return add_constant(g, name, dtype, rank, dims, data, 1);
}

loom_value loom_constant_borrowed(loom_graph *g, const char *name, loom_dtype dtype,
                                  uint32_t rank, const int64_t *dims, const void *data)
{
    return add_constant(g, name, dtype, rank, dims, data, 0);
}

loom_value loom_constant_f32(loom_graph *g, float value)
{
    return add_constant(g, NULL, LOOM_DTYPE_F32, 0, NULL, &value, 1);
}

loom_value loom_constant_i64s(loom_graph *g, size_t count, const int64_t *values)
{
    int64_t dims[1] = {(int64_t)count};
    return add_constant(g, NULL, LOOM_DTYPE_I64, 1, dims, values, 1);
}

loom_status loom_output(loom_graph *g, loom_value handle, const char *name)
{
    if (graph_unusable(g))
        return g ? g->error ? g->error : LOOM_ERR_INVALID_ARGUMENT : LOOM_ERR_INVALID_ARGUMENT;
    loom_value v = graph_index(g, handle);
    if (v < 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "output %s: handle %d is not a value of graph '%s'",
                          name ? name : "(unnamed)", (int)handle, g->name);
    graph_value *val = &g->values[v];
    if (val->output_index >= 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "value '%s' is already output %d",
                          val->name, val->output_index);
    if (name && strcmp(name, val->name) != 0) {
        loom_status s = loom_value_set_name(g, handle, name);
        if (s != LOOM_OK)
            return s;
    }
    if (!grow((void **)&g->outputs, &g->cap_outputs, g->n_outputs + 1, sizeof *g->outputs))
        return graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding output '%s'", val->name);
    val->output_index = (int)g->n_outputs;
    g->outputs[g->n_outputs++] = v;
    return LOOM_OK;
}

loom_status loom_value_set_name(loom_graph *g, loom_value handle, const char *name)
{
    if (graph_unusable(g))
        return g && g->error ? g->error : LOOM_ERR_INVALID_ARGUMENT;
    loom_value v = graph_index(g, handle);
    if (v < 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "rename: handle %d is not a value of graph '%s'", (int)handle, g->name);
    if (!name || !*name)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "rename of '%s': empty name",
                          g->values[v].name);
    int32_t other = graph_name_find(g, name);
    if (other == v)
        return LOOM_OK;
    if (other >= 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "rename of '%s': name '%s' is already used in graph '%s'",
                          g->values[v].name, name, g->name);
    char *n = dup_str(name);
    if (!n)
        return graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory renaming '%s'",
                          g->values[v].name);
    name_remove(g, v);
    free(g->values[v].name);
    g->values[v].name = n;
    if (!name_insert(g, v))
        return graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory renaming '%s'", name);
    return LOOM_OK;
}

loom_status loom_node_set_name(loom_graph *g, loom_value handle, const char *name)
{
    if (graph_unusable(g))
        return graph_unusable_status(g);
    loom_value v = graph_index(g, handle);
    if (v < 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "node_set_name: handle %d is not a value of graph '%s'", (int)handle,
                          g->name);
    const graph_value *val = &g->values[v];
    if (!name || !*name)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "node_set_name: empty name for the node of '%s'", val->name);
    if (val->kind != GRAPH_VALUE_NODE || val->producer < 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "node_set_name '%s': value '%s' is %s, not made by a node", name,
                          val->name, val->kind == GRAPH_VALUE_INPUT ? "a graph input"
                                                                     : "a constant");
    graph_node *node = &g->nodes[val->producer];
    if (strcmp(node->name, name) == 0)
        return LOOM_OK;
    /* Pins name nodes: two nodes of one name would make "node:NAME=DEV" ambiguous. A linear scan
     * keeps no index that node removals (the importer's dead-code pass) would have to mend. */
    for (size_t i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, name) == 0)
            return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                              "node_set_name: node name '%s' is already used in graph '%s' (by "
                              "a %s node)", name, g->name, g->nodes[i].def->name);
    char *n = dup_str(name);
    if (!n)
        return graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory naming node '%s'", name);
    free(node->name);
    node->name = n;
    return LOOM_OK;
}

loom_status loom_value_info(const loom_graph *g, loom_value handle, loom_dtype *dtype,
                            uint32_t *rank, int64_t *dims)
{
    if (!g)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "value_info: graph is NULL");
    loom_value v = graph_index(g, handle);
    if (v < 0)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "value_info: handle %d is not a value of graph '%s'", (int)handle,
                              g->name);
    loom_clear_error();
    const loom_tensor_desc *d = &g->values[v].desc;
    if (dtype)
        *dtype = d->dtype;
    if (rank)
        *rank = d->rank;
    if (dims)
        for (uint32_t k = 0; k < d->rank; k++)
            dims[k] = graph_sym_dim_known(g, v, k) ? d->dims[k] : -1;
    return LOOM_OK;
}

const char *loom_value_name(const loom_graph *g, loom_value v)
{
    int32_t i = graph_index(g, v);
    return i >= 0 ? g->values[i].name : NULL;
}

loom_value loom_graph_find_value(const loom_graph *g, const char *name)
{
    if (!g || !name)
        return LOOM_NO_VALUE;
    return graph_handle(g, graph_name_find(g, name));
}

/* ---- nodes ------------------------------------------------------------------------------- */

loom_attr loom_attr_int(const char *name, int64_t value)
{
    loom_attr a = {0};
    a.name = name;
    a.kind = LOOM_ATTR_INT;
    a.i = value;
    return a;
}

loom_attr loom_attr_float(const char *name, float value)
{
    loom_attr a = {0};
    a.name = name;
    a.kind = LOOM_ATTR_FLOAT;
    a.f = value;
    return a;
}

loom_attr loom_attr_string(const char *name, const char *value)
{
    loom_attr a = {0};
    a.name = name;
    a.kind = LOOM_ATTR_STRING;
    a.s = value;
    return a;
}

loom_attr loom_attr_ints(const char *name, size_t count, const int64_t *values)
{
    loom_attr a = {0};
    a.name = name;
    a.kind = LOOM_ATTR_INTS;
    a.ints = values;
    a.count = count;
    return a;
}

loom_attr loom_attr_floats(const char *name, size_t count, const float *values)
{
    loom_attr a = {0};
    a.name = name;
    a.kind = LOOM_ATTR_FLOATS;
    a.floats = values;
    a.count = count;
    return a;
}

loom_status loom_graph_op(loom_graph *g, const char *op_type, const char *node_name,
                          const loom_value *inputs, size_t n_inputs, const loom_attr *attrs,
                          size_t n_attrs, loom_value *outputs, size_t n_outputs)
{
    if (graph_unusable(g))
        return g && g->error ? g->error : LOOM_ERR_INVALID_ARGUMENT;
    const char *nn = node_name ? node_name : "(unnamed)";
    if (!op_type)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "node '%s': op type is NULL", nn);
    const loom_op_def *def = loom_op_find(op_type);
    if (!def)
        return graph_fail(g, LOOM_ERR_UNSUPPORTED, "node '%s': unknown op '%s'", nn, op_type);

    char made_name[96];
    if (!node_name) {
        snprintf(made_name, sizeof made_name, "%s_%u", def->name, g->name_counter++);
        node_name = made_name;
    }
    if (n_inputs < def->min_inputs || n_inputs > def->max_inputs) {
        if (def->max_inputs == UINT32_MAX)
            return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                              "node '%s' (%s): takes at least %u inputs, got %zu", node_name,
                              def->name, def->min_inputs, n_inputs);
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "node '%s' (%s): takes %u to %u inputs, got %zu", node_name, def->name,
                          def->min_inputs, def->max_inputs, n_inputs);
    }
    if (n_outputs < def->min_outputs || n_outputs > def->max_outputs)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "node '%s' (%s): makes %u to %u outputs, %zu asked for", node_name,
                          def->name, def->min_outputs, def->max_outputs, n_outputs);
    if ((n_inputs && !inputs) || !outputs || (n_attrs && !attrs))
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "node '%s' (%s): NULL array argument",
                          node_name, def->name);

    loom_status st = LOOM_ERR_OUT_OF_MEMORY;
    loom_tensor_desc *in_d = calloc(n_inputs + 1, sizeof *in_d);
    const void **in_c = calloc(n_inputs + 1, sizeof *in_c);
    loom_tensor_desc *out_d = calloc(n_outputs, sizeof *out_d);
    loom_value *in_copy = malloc((n_inputs + 1) * sizeof *in_copy);
    loom_value *out_copy = malloc(n_outputs * sizeof *out_copy);
    char *name_copy = dup_str(node_name);
    loom_attr_list list = {0};
    graph_sym_node *symres = NULL; /* symbolic dims of the outputs (graph_symbols.h) */
    char err[400] = "";
    if (!in_d || !in_c || !out_d || !in_copy || !out_copy || !name_copy) {
        graph_fail(g, st, "node '%s' (%s): out of memory", node_name, def->name);
        goto fail;
    }
    for (size_t k = 0; k < n_inputs; k++) {
        loom_value v = inputs[k] == LOOM_NO_VALUE ? LOOM_NO_VALUE : graph_index(g, inputs[k]);
        in_copy[k] = v;
        if (inputs[k] == LOOM_NO_VALUE)
            continue; /* absent optional input: dtype stays UNDEFINED */
        if (v < 0) {
            st = graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                            "node '%s' (%s): input %zu is not a value of graph '%s' (handle %d)",
                            node_name, def->name, k, g->name, (int)inputs[k]);
            goto fail;
        }
        in_d[k] = g->values[v].desc;
        if (g->values[v].kind == GRAPH_VALUE_CONSTANT)
            in_c[k] = g->values[v].data;
    }
    st = loom_attr_list_init(&list, attrs, n_attrs, err, sizeof err);
    if (st != LOOM_OK) {
        graph_fail(g, st, "node '%s' (%s): %s", node_name, def->name, err);
        goto fail;
    }
    loom_infer_ctx ctx = {
        .node_name = node_name,
        .n_inputs = (uint32_t)n_inputs,
        .inputs = in_d,
        .input_constants = in_c,
        .n_outputs = (uint32_t)n_outputs,
        .outputs = out_d,
        .attrs = &list,
        .err = err,
        .err_len = sizeof err,
    };
    st = def->infer(&ctx);
    if (st != LOOM_OK) {
        if (ctx.need_constant && ctx.need_constant <= n_inputs &&
            in_copy[ctx.need_constant - 1] >= 0)
            g->need_constant = (uint32_t)in_copy[ctx.need_constant - 1] + 1;
        if (g->sym)
            graph_sym_explain(g, in_copy, n_inputs, err, sizeof err);
        graph_fail(g, st, "node '%s' (%s): %s", node_name, def->name,
                   err[0] ? err : "shape inference failed");
        goto fail;
    }
    for (size_t k = 0; k < n_outputs; k++) {
        int64_t numel;
        char buf[256];
        if (!valid_dtype(out_d[k].dtype) || out_d[k].rank > LOOM_MAX_RANK) {
            st = graph_fail(g, LOOM_ERR_INTERNAL,
                            "node '%s' (%s): inference gave output %zu no valid type", node_name,
                            def->name, k);
            goto fail;
        }
        if (!loom_dims_numel_checked(out_d[k].rank, out_d[k].dims, loom_dtype_size(out_d[k].dtype),
                                     &numel)) {
            st = graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                            "node '%s' (%s): output %zu shape %s overflows", node_name, def->name,
                            k, loom_dims_format(out_d[k].rank, out_d[k].dims, buf, sizeof buf));
            goto fail;
        }
    }
    if (g->sym && graph_sym_infer(g, def, node_name, in_copy, n_inputs, in_d, in_c, attrs,
                                  n_attrs, &list, out_d, n_outputs, &symres) != LOOM_OK) {
        st = g->error;
        goto fail;
    }
    /* A node reading symbolic dims is never folded: its result depends on the run's shapes. */
    int folded = symres ? 0
                        : graph_try_fold(g, def, node_name, in_copy, n_inputs, in_d, in_c, out_d,
                                         n_outputs, &list, outputs);
    if (folded < 0) {
        st = g->error;
        goto fail;
    }
    if (folded) {
        loom_attr_list_free(&list);
        free(in_d);
        free(in_c);
        free(out_d);
        free(in_copy);
        free(out_copy);
        free(name_copy);
        return LOOM_OK;
    }
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes)) {
        st = graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory", node_name,
                        def->name);
        goto fail;
    }
    /* Output values: the node's name for its only output, "name:k" for several. */
    size_t first_value = g->n_values;
    for (size_t k = 0; k < n_outputs; k++) {
        char vname[160];
        const char *want = vname;
        if (n_outputs == 1)
            snprintf(vname, sizeof vname, "%s", node_name);
        else
            snprintf(vname, sizeof vname, "%s:%zu", node_name, k);
        if (graph_name_find(g, want) >= 0)
            want = NULL; /* taken (e.g. by an input): make one up */
        loom_value v = graph_add_value(g, want, def->name, &out_d[k], GRAPH_VALUE_NODE);
        if (v == LOOM_NO_VALUE) {
            st = g->error;
            /* roll back the values already added for this node */
            while (g->n_values > first_value) {
                g->n_values--;
                name_remove(g, (int32_t)g->n_values);
                free(g->values[g->n_values].name);
            }
            goto fail;
        }
        g->values[v].producer = (int32_t)g->n_nodes;
        g->values[v].producer_slot = (uint32_t)k;
        out_copy[k] = v;
    }
    for (size_t k = 0; k < n_inputs; k++)
        if (in_copy[k] != LOOM_NO_VALUE)
            g->values[in_copy[k]].n_consumers++;
    graph_node *node = &g->nodes[g->n_nodes++];
    node->def = def;
    node->name = name_copy;
    node->n_inputs = (uint32_t)n_inputs;
    node->n_outputs = (uint32_t)n_outputs;
    node->inputs = in_copy;
    node->outputs = out_copy;
    node->attrs = list;
    if (symres && graph_sym_attach(g, g->n_nodes - 1, symres) != LOOM_OK) {
        for (size_t k = 0; k < n_outputs; k++)
            outputs[k] = LOOM_NO_VALUE;
        free(in_d);
        free(in_c);
        free(out_d);
        return g->error;
    }
    for (size_t k = 0; k < n_outputs; k++)
        outputs[k] = graph_handle(g, out_copy[k]);
    free(in_d);
    free(in_c);
    free(out_d);
    return LOOM_OK;

fail:
    for (size_t k = 0; outputs && k < n_outputs; k++)
        outputs[k] = LOOM_NO_VALUE;
    graph_sym_node_free(symres);
    loom_attr_list_free(&list);
    free(in_d);
    free(in_c);
    free(out_d);
    free(in_copy);
    free(out_copy);
    free(name_copy);
    return st;
}

loom_status loom_graph_replace_uses(loom_graph *g, loom_value old_handle, loom_value new_handle)
{
    if (graph_unusable(g))
        return g && g->error ? g->error : LOOM_ERR_INVALID_ARGUMENT;
    loom_value old_value = graph_index(g, old_handle), new_value = graph_index(g, new_handle);
    if (old_value < 0 || new_value < 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "replace_uses: handle %d or %d is not a "
                          "value of graph '%s'", (int)old_handle, (int)new_handle, g->name);
    const loom_tensor_desc *a = &g->values[old_value].desc, *b = &g->values[new_value].desc;
    int same = a->dtype == b->dtype && a->rank == b->rank;
    for (uint32_t k = 0; same && k < a->rank; k++)
        same = a->dims[k] == b->dims[k];
    if (!same) {
        char x[128], y[128];
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "replace_uses: '%s' (%s %s) and '%s' (%s %s) differ in type or shape",
                          g->values[old_value].name, loom_dtype_name(a->dtype),
                          loom_dims_format(a->rank, a->dims, x, sizeof x),
                          g->values[new_value].name, loom_dtype_name(b->dtype),
                          loom_dims_format(b->rank, b->dims, y, sizeof y));
    }
    for (size_t i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] == old_value) {
                g->nodes[i].inputs[k] = new_value;
                g->values[old_value].n_consumers--;
                g->values[new_value].n_consumers++;
            }
    return LOOM_OK;
}

size_t loom_graph_node_count(const loom_graph *g)
{
    return g ? g->n_nodes : 0;
}

size_t loom_graph_input_count(const loom_graph *g)
{
    return g ? g->n_inputs : 0;
}

size_t loom_graph_output_count(const loom_graph *g)
{
    return g ? g->n_outputs : 0;
}

loom_value loom_graph_input(const loom_graph *g, size_t i)
{
    return g && i < g->n_inputs ? graph_handle(g, g->inputs[i]) : LOOM_NO_VALUE;
}

loom_value loom_graph_output(const loom_graph *g, size_t i)
{
    return g && i < g->n_outputs ? graph_handle(g, g->outputs[i]) : LOOM_NO_VALUE;
}

void graph_node_desc(const loom_graph *g, size_t i, loom_node_desc *desc, loom_tensor_desc *in_descs,
                  loom_tensor_desc *out_descs, const void **in_consts)
{
    const graph_node *node = &g->nodes[i];
    memset(desc, 0, sizeof *desc);
    desc->abi_version = LOOM_ABI_VERSION;
    desc->struct_size = sizeof *desc;
    desc->op = node->def->id;
    desc->op_name = node->def->name;
    desc->name = node->name;
    desc->n_inputs = node->n_inputs;
    desc->n_outputs = node->n_outputs;
    for (uint32_t k = 0; k < node->n_inputs; k++) {
        loom_value v = node->inputs[k];
        if (v == LOOM_NO_VALUE) {
            memset(&in_descs[k], 0, sizeof in_descs[k]);
            in_consts[k] = NULL;
        } else {
            in_descs[k] = g->values[v].desc;
            in_consts[k] = g->values[v].kind == GRAPH_VALUE_CONSTANT ? g->values[v].data : NULL;
        }
    }
    for (uint32_t k = 0; k < node->n_outputs; k++)
        out_descs[k] = g->values[node->outputs[k]].desc;
    desc->inputs = in_descs;
    desc->outputs = out_descs;
    desc->input_constants = in_consts;
    desc->n_attrs = (uint32_t)node->attrs.count;
    desc->attrs = node->attrs.items;
}
