/*
 * Constant folding while a graph is built: with folding on (graph_set_folding, given an
 * evaluator by the layer that owns kernels), loom_graph_op evaluates a node whose inputs are all
 * constants (or that depends only on shapes) at once and adds its results as constants instead
 * of the node. The fold_constants pass does the same for a whole graph through graph_rebuild.
 */
#include "graph_internal.h"

#include <stdio.h>
#include <stdlib.h>

loom_status graph_set_folding(loom_graph *g, int enable, graph_eval_fn eval)
{
    if (graph_unusable(g))
        return g && g->error ? g->error : LOOM_ERR_INVALID_ARGUMENT;
    if (enable && !eval)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "folding needs an evaluator");
    g->folding = enable != 0;
    g->eval = enable ? eval : NULL;
    return LOOM_OK;
}

/* Largest result folding evaluates while building (64 MiB). */
#define LOOM_FOLD_MAX_BYTES ((size_t)64 << 20)

int graph_try_fold(loom_graph *g, const loom_op_def *def, const char *node_name,
                   const loom_value *inputs, size_t n_inputs, const loom_tensor_desc *in_d,
                   const void **in_c, const loom_tensor_desc *out_d, size_t n_outputs,
                   const loom_attr_list *attrs, loom_value *outputs)
{
    if (!g->folding || !g->eval || (def->flags & LOOM_OPF_NO_FOLD))
        return 0;
    int any_input = 0;
    for (size_t k = 0; k < n_inputs; k++) {
        if (inputs[k] == LOOM_NO_VALUE)
            continue;
        any_input = 1;
        if (!in_c[k] && !(def->flags & LOOM_OPF_SHAPE_ONLY))
            return 0;
    }
    if (!any_input && !(def->flags & LOOM_OPF_SHAPE_ONLY) && def->id != LOOM_OP_CONSTANT_OF_SHAPE &&
        def->id != LOOM_OP_RANGE)
        return 0;
    /* Folding materialises the result in memory now: a tiny model must not be able to make the
     * builder allocate gigabytes. Bigger results stay nodes and are computed at run time. */
    size_t total = 0;
    for (size_t k = 0; k < n_outputs; k++)
        total += (size_t)loom_tensor_desc_numel(&out_d[k]) * loom_dtype_size(out_d[k].dtype);
    if (total > LOOM_FOLD_MAX_BYTES)
        return 0;
    loom_node_desc desc = {0};
    desc.abi_version = LOOM_ABI_VERSION;
    desc.struct_size = sizeof desc;
    desc.op = def->id;
    desc.op_name = def->name;
    desc.name = node_name;
    desc.n_inputs = (uint32_t)n_inputs;
    desc.n_outputs = (uint32_t)n_outputs;
    desc.inputs = in_d;
    desc.outputs = out_d;
    desc.input_constants = in_c;
    desc.n_attrs = (uint32_t)attrs->count;
    desc.attrs = attrs->items;
    void **bufs = calloc(n_outputs + 1, sizeof *bufs);
    if (!bufs) {
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory folding", node_name,
                   def->name);
        return -1;
    }
    int rc = 1;
    for (size_t k = 0; k < n_outputs && rc == 1; k++) {
        size_t bytes = (size_t)loom_tensor_desc_numel(&out_d[k]) * loom_dtype_size(out_d[k].dtype);
        if (!(bufs[k] = calloc(1, bytes + 1))) {
            graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory folding",
                       node_name, def->name);
            rc = -1;
        }
    }
    char err[400] = "";
    if (rc == 1) {
        loom_status st = g->eval(&desc, in_c, (void *const *)bufs, err, sizeof err);
        if (st == LOOM_ERR_UNSUPPORTED) {
            rc = 0; /* no reference kernel: keep it as a node for a device that has one */
        } else if (st != LOOM_OK) {
            graph_fail(g, st, "node '%s' (%s): %s", node_name, def->name,
                       err[0] ? err : "evaluation failed");
            rc = -1;
        }
    }
    for (size_t k = 0; k < n_outputs && rc == 1; k++) {
        char vname[160];
        const char *want = vname;
        if (n_outputs == 1)
            snprintf(vname, sizeof vname, "%s", node_name);
        else
            snprintf(vname, sizeof vname, "%s:%zu", node_name, k);
        if (graph_name_find(g, want) >= 0)
            want = NULL;
        loom_value v = graph_add_value(g, want, "const", &out_d[k], GRAPH_VALUE_CONSTANT);
        if (v == LOOM_NO_VALUE) {
            rc = -1;
            break;
        }
        g->values[v].data = bufs[k];
        g->values[v].data_owned = 1;
        bufs[k] = NULL;
        outputs[k] = graph_handle(g, v);
    }
    for (size_t k = 0; k < n_outputs; k++)
        free(bufs[k]);
    free(bufs);
    if (rc == 1) {
        for (size_t k = 0; k < n_inputs; k++)
            if (inputs[k] != LOOM_NO_VALUE)
                g->values[inputs[k]].folded_uses++;
        g->n_folded++;
    }
    return rc;
}
