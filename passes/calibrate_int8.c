/*
 * The calibrate_int8 pass: int8 activation scales from sample inputs. The graph is evaluated
 * node by node, in topological order, with the reference evaluator on each sample set, and the
 * largest |value| of every f32 graph value is recorded. An analysis pass: the graph is not
 * changed; the plan hands the figures to backends as loom_node_desc.input_absmax.
 */
#include "passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float absmax_f32(const float *x, int64_t n)
{
    float m = 0;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m) /* NaNs are skipped */
            m = a;
    }
    return m;
}

static size_t value_bytes(const graph_value *v)
{
    return (size_t)loom_tensor_desc_numel(&v->desc) * loom_dtype_size(v->desc.dtype);
}

loom_status pass_check_calibration(const loom_graph *g, const loom_tensor *const *sets,
                                   size_t n_sets)
{
    if (n_sets == 0)
        return LOOM_OK;
    if (!sets)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "plan options: %zu calibration sets but calibration_inputs is NULL",
                              n_sets);
    for (size_t s = 0; s < n_sets; s++) {
        for (size_t i = 0; i < g->n_inputs; i++) {
            const graph_value *v = &g->values[g->inputs[i]];
            const loom_tensor *t = sets[s * g->n_inputs + i];
            if (!t)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "calibration set %zu: input '%s' is NULL", s, v->name);
            if (loom_tensor_dtype(t) != v->desc.dtype)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "calibration set %zu: input '%s' has dtype %d, the graph "
                                      "declares %d", s, v->name, (int)loom_tensor_dtype(t),
                                      (int)v->desc.dtype);
            int64_t dims[LOOM_MAX_RANK];
            loom_tensor_dims(t, dims);
            uint32_t rank = loom_tensor_rank(t);
            int same = rank == v->desc.rank;
            for (uint32_t d = 0; same && d < rank; d++)
                same = dims[d] == v->desc.dims[d];
            if (!same) {
                char got[160] = "", want[160] = "";
                size_t a = 0, b = 0;
                for (uint32_t d = 0; d < rank && a < sizeof got; d++)
                    a += (size_t)snprintf(got + a, sizeof got - a, "%s%lld", d ? "x" : "",
                                          (long long)dims[d]);
                for (uint32_t d = 0; d < v->desc.rank && b < sizeof want; d++)
                    b += (size_t)snprintf(want + b, sizeof want - b, "%s%lld", d ? "x" : "",
                                          (long long)v->desc.dims[d]);
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "calibration set %zu: input '%s' has shape [%s], the graph "
                                      "declares [%s]", s, v->name, got, want);
            }
        }
    }
    return LOOM_OK;
}

static loom_status calibrate(const loom_graph *g, const uint32_t *order, graph_eval_fn eval,
                             const loom_tensor *const *sets, size_t n_sets, float *absmax)
{
    size_t nv = g->n_values;
    for (size_t v = 0; v < nv; v++)
        absmax[v] = g->values[v].desc.dtype == LOOM_DTYPE_F32 ? 0.0f : NAN;
    for (size_t v = 0; v < nv; v++)
        if (g->values[v].kind == GRAPH_VALUE_CONSTANT && g->values[v].data &&
            g->values[v].desc.dtype == LOOM_DTYPE_F32)
            absmax[v] = absmax_f32(g->values[v].data, loom_tensor_desc_numel(&g->values[v].desc));

    /* Last reader (position in ORDER) of every value, so intermediates are freed early. */
    int64_t *last = malloc((nv + 1) * sizeof *last);
    void **buf = calloc(nv + 1, sizeof *buf);
    size_t max_in = 1, max_out = 1;
    for (size_t i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].n_inputs > max_in)
            max_in = g->nodes[i].n_inputs;
        if (g->nodes[i].n_outputs > max_out)
            max_out = g->nodes[i].n_outputs;
    }
    loom_tensor_desc *in_d = malloc(max_in * sizeof *in_d);
    loom_tensor_desc *out_d = malloc(max_out * sizeof *out_d);
    const void **in_c = malloc(max_in * sizeof *in_c);
    const void **ins = malloc(max_in * sizeof *ins);
    void **outs = malloc(max_out * sizeof *outs);
    loom_status st = LOOM_OK;
    if (!last || !buf || !in_d || !out_d || !in_c || !ins || !outs) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory calibrating graph '%s'",
                            g->name);
        goto done;
    }
    for (size_t v = 0; v < nv; v++)
        last[v] = -1;
    for (uint32_t p = 0; p < g->n_nodes; p++) {
        const graph_node *n = &g->nodes[order[p]];
        for (uint32_t k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] != LOOM_NO_VALUE)
                last[n->inputs[k]] = p;
    }

    for (size_t s = 0; s < n_sets && st == LOOM_OK; s++) {
        for (size_t i = 0; i < g->n_inputs; i++) {
            loom_value v = g->inputs[i];
            const loom_tensor *t = sets[s * g->n_inputs + i];
            if (g->values[v].desc.dtype == LOOM_DTYPE_F32) {
                float m = absmax_f32(loom_tensor_data(t),
                                     loom_tensor_desc_numel(&g->values[v].desc));
                if (m > absmax[v])
                    absmax[v] = m;
            }
        }
        for (uint32_t p = 0; p < g->n_nodes && st == LOOM_OK; p++) {
            const graph_node *n = &g->nodes[order[p]];
            loom_node_desc desc;
            graph_node_desc(g, order[p], &desc, in_d, out_d, in_c);
            for (uint32_t k = 0; k < n->n_inputs; k++) {
                loom_value v = n->inputs[k];
                if (v == LOOM_NO_VALUE)
                    ins[k] = NULL;
                else if (g->values[v].kind == GRAPH_VALUE_INPUT)
                    ins[k] = NULL; /* filled below */
                else if (g->values[v].kind == GRAPH_VALUE_CONSTANT)
                    ins[k] = g->values[v].data;
                else
                    ins[k] = buf[v];
            }
            /* Graph inputs: find the set's tensor for each. */
            for (uint32_t k = 0; k < n->n_inputs; k++) {
                loom_value v = n->inputs[k];
                if (v == LOOM_NO_VALUE || g->values[v].kind != GRAPH_VALUE_INPUT)
                    continue;
                for (size_t i = 0; i < g->n_inputs; i++)
                    if (g->inputs[i] == v)
                        ins[k] = loom_tensor_data(sets[s * g->n_inputs + i]);
            }
            for (uint32_t k = 0; k < n->n_outputs && st == LOOM_OK; k++) {
                loom_value v = n->outputs[k];
                free(buf[v]);
                if (!(buf[v] = calloc(1, value_bytes(&g->values[v]) + 1)))
                    st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY,
                                        "out of memory calibrating node '%s'", n->name);
                outs[k] = buf[v];
            }
            if (st != LOOM_OK)
                break;
            char err[400] = "";
            st = eval(&desc, ins, (void *const *)outs, err, sizeof err);
            if (st != LOOM_OK) {
                st = loom_set_error(st, "calibration: node '%s' (%s): %s", n->name,
                                    n->def->name, err[0] ? err : "evaluation failed");
                break;
            }
            for (uint32_t k = 0; k < n->n_outputs; k++) {
                loom_value v = n->outputs[k];
                if (g->values[v].desc.dtype == LOOM_DTYPE_F32) {
                    float m = absmax_f32(buf[v], loom_tensor_desc_numel(&g->values[v].desc));
                    if (m > absmax[v])
                        absmax[v] = m;
                }
                if (last[v] < 0) { /* read by no node: a graph output or unused */
                    free(buf[v]);
                    buf[v] = NULL;
                }
            }
            for (uint32_t k = 0; k < n->n_inputs; k++) {
                loom_value v = n->inputs[k];
                if (v != LOOM_NO_VALUE && g->values[v].kind == GRAPH_VALUE_NODE && last[v] == p) {
                    free(buf[v]);
                    buf[v] = NULL;
                }
            }
        }
        for (size_t v = 0; v < nv; v++) {
            free(buf[v]);
            buf[v] = NULL;
        }
    }
done:
    if (buf)
        for (size_t v = 0; v < nv; v++)
            free(buf[v]);
    free(buf);
    free(last);
    free(in_d);
    free(out_d);
    free(in_c);
    free(ins);
    free(outs);
    return st;
}

loom_status pass_calibrate_int8(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                char *summary, size_t summary_len)
{
    *out = NULL;
    if (!ctx->n_calibration_sets) {
        snprintf(summary, summary_len, "not asked (int8 plans with calibration inputs only)");
        return LOOM_OK;
    }
    if (!ctx->eval)
        return loom_set_error(LOOM_ERR_INTERNAL, "calibration needs the reference evaluator");
    free(ctx->absmax);
    if (!(ctx->absmax = malloc((in->n_values + 1) * sizeof *ctx->absmax)))
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory calibrating graph '%s'",
                              in->name);
    loom_status st = calibrate(in, ctx->order, ctx->eval, ctx->calibration_sets,
                               ctx->n_calibration_sets, ctx->absmax);
    if (st == LOOM_OK)
        snprintf(summary, summary_len, "%zu set%s: activation ranges of %zu values",
                 ctx->n_calibration_sets, ctx->n_calibration_sets == 1 ? "" : "s",
                 in->n_values);
    return st;
}
