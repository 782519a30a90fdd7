/*
 * Plans: a checked graph turned into what the executor needs. Nodes in a topological order,
 * each placed on a device and compiled by its backend; tensors with their home (caller input,
 * caller output, constant, arena offset); successor lists and dependency counts; the static
 * memory plan (memplan.c).
 *
 * Placement (placement.c, place/) decides each node's device; where a node reads a tensor that
 * lives in memory its device cannot address, the plan inserts an explicit copy node run by
 * that device's transfer worker, so transfers overlap computation and show in the timeline.
 */
#include "sched_internal.h"
#include "graph/graph_symbols.h"

#include "cost/cost.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int device_supports(const loom_runtime *rt, size_t d, const loom_node_desc *desc,
                           char *why, size_t why_len)
{
    const runtime_device *dev = &rt->devices[d];
    why[0] = '\0';
    return dev->backend->supports(dev->backend->ctx, dev->index, desc, why, why_len);
}

void loom_plan_destroy(loom_plan *plan)
{
    if (!plan)
        return;
    plan_contexts_destroy(plan);
    for (uint32_t i = 0; i < plan->n_nodes; i++) {
        plan_node *n = &plan->nodes[i];
        if (n->kernel) {
            const loom_backend *be = plan->rt->devices[n->device].backend;
            be->release_kernel(be->ctx, n->kernel);
        }
        if (n->fb_kernel) {
            const loom_backend *be = plan->rt->devices[n->fb_device].backend;
            be->release_kernel(be->ctx, n->fb_kernel);
        }
        free(n->name);
        free(n->op_label);
        free(n->link);
        free(n->sig);
        free(n->cost_note);
    }
    /* After the kernels: they used these device copies until released. */
    for (uint32_t i = 0; i < plan->n_dc_refs; i++)
        devconst_put(plan->dconst, plan->dc_refs[i]);
    free(plan->dc_refs);
    for (uint32_t i = 0; i < plan->n_devs; i++)
        free(plan->devs[i].order);
    for (uint32_t i = 0; i < plan->n_inputs; i++)
        free(plan->input_names[i]);
    for (uint32_t i = 0; i < plan->n_outputs; i++)
        free(plan->output_names[i]);
    free(plan->input_names);
    free(plan->output_names);
    free(plan->input_tensor);
    free(plan->output_tensor);
    free(plan->nodes);
    free(plan->tensors);
    free(plan->io);
    free(plan->succ);
    free(plan->succ_event);
    free(plan->evpred);
    free(plan->dep_from);
    free(plan->dep_edge);
    free(plan->devs);
    free(plan->dev_slot);
    free(plan->const_block);
    free(plan->cost_s);
    plan_claims_free(plan);
    if (plan->reasons)
        for (uint32_t i = 0; i < plan->n_nodes; i++)
            free(plan->reasons[i]);
    free(plan->reasons);
    cost_model_close(plan->model);
    pthread_mutex_destroy(&plan->ctx_lock);
    loom_runtime *rt = plan->rt;
    free(plan);
    runtime_release(rt); /* last: the kernels above were released through its backends */
}

/* Tensors: one per graph value that a run touches. Returns the value -> tensor map. */
static loom_status make_tensors(loom_plan *plan, const loom_graph *g, int32_t *tensor_of)
{
    size_t const_bytes = 0;
    uint32_t n = 0;
    for (size_t v = 0; v < g->n_values; v++) {
        const graph_value *val = &g->values[v];
        tensor_of[v] = -1;
        if (val->kind == GRAPH_VALUE_INPUT || val->n_consumers || val->output_index >= 0 ||
            val->kind == GRAPH_VALUE_NODE)
            tensor_of[v] = (int32_t)n++;
        if (val->kind == GRAPH_VALUE_CONSTANT && (val->data_owned || val->copy_in_plan) &&
            tensor_of[v] >= 0)
            const_bytes += (loom_tensor_desc_numel(&val->desc) * loom_dtype_size(val->desc.dtype) +
                            63) / 64 * 64;
    }
    plan->tensors = calloc(n + 1, sizeof *plan->tensors);
    plan->const_block = const_bytes ? aligned_alloc(64, const_bytes) : NULL;
    if (!plan->tensors || (const_bytes && !plan->const_block))
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning graph '%s'",
                              g->name);
    plan->n_tensors = n;
    size_t const_off = 0;
    for (size_t v = 0; v < g->n_values; v++) {
        if (tensor_of[v] < 0)
            continue;
        const graph_value *val = &g->values[v];
        plan_tensor *t = &plan->tensors[tensor_of[v]];
        t->desc = val->desc;
        t->bytes = (size_t)loom_tensor_desc_numel(&val->desc) * loom_dtype_size(val->desc.dtype);
        t->producer = -1;
        t->last_use = -1;
        if (val->kind == GRAPH_VALUE_INPUT) {
            t->kind = PLAN_T_INPUT;
        } else if (val->kind == GRAPH_VALUE_CONSTANT) {
            t->kind = PLAN_T_CONSTANT;
            if (val->data_owned || val->copy_in_plan) {
                /* The plan outlives the graph: keep its own copy of owned constants. */
                /* No block when every such constant is empty (a folded empty Range): no
                 * offset from NULL (fuzz/regressions/plan_empty_constants_null_block.onnx). */
                void *dst = plan->const_block ? (char *)plan->const_block + const_off : NULL;
                if (t->bytes)
                    memcpy(dst, val->data, t->bytes);
                t->data = dst;
                const_off += (t->bytes + 63) / 64 * 64;
            } else {
                t->data = val->data;
            }
        } else if (val->output_index >= 0) {
            t->kind = PLAN_T_OUTPUT;
            t->index = (uint32_t)val->output_index;
        } else {
            t->kind = PLAN_T_INTERMEDIATE;
        }
    }
    for (size_t i = 0; i < g->n_inputs; i++) {
        int32_t t = tensor_of[g->inputs[i]];
        plan->tensors[t].index = (uint32_t)i;
    }
    return LOOM_OK;
}

static loom_status make_io_names(loom_plan *plan, const loom_graph *g, const int32_t *tensor_of)
{
    plan->n_inputs = (uint32_t)g->n_inputs;
    plan->n_outputs = (uint32_t)g->n_outputs;
    plan->input_tensor = calloc(g->n_inputs + 1, sizeof *plan->input_tensor);
    plan->output_tensor = calloc(g->n_outputs + 1, sizeof *plan->output_tensor);
    plan->input_names = calloc(g->n_inputs + 1, sizeof *plan->input_names);
    plan->output_names = calloc(g->n_outputs + 1, sizeof *plan->output_names);
    if (!plan->input_tensor || !plan->output_tensor || !plan->input_names || !plan->output_names)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning graph '%s'",
                              g->name);
    for (size_t i = 0; i < g->n_inputs; i++) {
        plan->input_tensor[i] = (uint32_t)tensor_of[g->inputs[i]];
        if (!(plan->input_names[i] = dup_str(g->values[g->inputs[i]].name)))
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < g->n_outputs; i++) {
        plan->output_tensor[i] = (uint32_t)tensor_of[g->outputs[i]];
        if (!(plan->output_names[i] = dup_str(g->values[g->outputs[i]].name)))
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    return LOOM_OK;
}

/* Place and compile every node, in ORDER. */
/* Compile a fallback for node N (already placed and prepared): the first other device that
 * supports it. Plugins fail; the built-in CPU backend is the one that takes over. */
static void prepare_fallback(loom_plan *plan, plan_node *n, const loom_node_desc *desc)
{
    const loom_runtime *rt = plan->rt;
    if (rt->devices[n->device].backend == rt->backends[0])
        return; /* already on the reference backend */
    char why[256];
    for (size_t d = 0; d < rt->n_devices; d++) {
        /* A fallback runs on host memory (the executor stages a non-host-visible node's data
         * through it), so only host-visible devices take over. */
        if (d == n->device || !rt->devices[d].info.host_visible ||
            !device_supports(rt, d, desc, why, sizeof why))
            continue;
        const runtime_device *dev = &rt->devices[d];
        char err[256];
        void *k = NULL;
        size_t scratch = 0;
        if (runtime_backend_status(dev->backend,
                                   (int)dev->backend->prepare(dev->backend->ctx, dev->index, desc,
                                                              &k, &scratch, err, sizeof err),
                                   err, sizeof err) == LOOM_OK) {
            n->fb_device = (uint32_t)d;
            n->fb_kernel = k;
            n->fb_scratch_bytes = scratch;
            return;
        }
    }
}

/* Non-strict plans: node N could not be prepared on the device it was placed on (a kernel that
 * does not compile, device memory that cannot be had: WHY). Move it to the first other
 * host-visible device that supports and prepares it (the CPU, in the end), saying so through
 * runtime_message. Returns 1 when it moved; 0 leaves N as it was. */
static int replace_failed_node(loom_plan *plan, plan_node *n, const loom_node_desc *desc,
                               const char *why)
{
    loom_runtime *rt = plan->rt;
    char reason[256], err[256];
    for (size_t d = 0; d < rt->n_devices; d++) {
        const runtime_device *dev = &rt->devices[d];
        void *k = NULL;
        size_t scratch = 0;
        if (d == n->device || !dev->info.host_visible ||
            !device_supports(rt, d, desc, reason, sizeof reason) ||
            runtime_backend_status(dev->backend,
                                   (int)dev->backend->prepare(dev->backend->ctx, dev->index, desc,
                                                              &k, &scratch, err, sizeof err),
                                   err, sizeof err) != LOOM_OK)
            continue;
        runtime_message(rt, "node '%s' (%s) cannot be prepared on %s (%s); placed on %s instead",
                        n->name, n->op_name, rt->devices[n->device].id, why, dev->id);
        n->device = (uint32_t)d;
        n->kernel = k;
        n->scratch_bytes = scratch;
        return 1;
    }
    return 0;
}

/* The device copies, on runtime device DEV, of the constants among the N inputs VALUES (graph
 * values of G, LOOM_NO_VALUE: absent) that PLAN shares through its model's cache: those it
 * borrows (a model's weights), not those folded or copied for this plan alone. Writes DEV_C[k]
 * (NULL where none) and returns DEV_C when any was found, NULL otherwise (a plain plan, a
 * device that makes its own copies, no shared constant). PLAN holds a reference to each. A
 * copy that cannot be made (device memory, an upload that fails) is not an error: the backend
 * then copies the constants itself, as for a plain plan, and fails there if it must. */
static const void *const *plan_device_constants(loom_plan *plan, const loom_graph *g,
                                                const loom_value *values, uint32_t n,
                                                uint32_t dev, const void **dev_c)
{
    if (!plan->dconst || !devconst_enabled(plan->rt, dev))
        return NULL;
    int any = 0;
    for (uint32_t k = 0; k < n; k++)
        dev_c[k] = NULL;
    for (uint32_t k = 0; k < n; k++) {
        const graph_value *val = values[k] == LOOM_NO_VALUE ? NULL : &g->values[values[k]];
        if (!val || val->kind != GRAPH_VALUE_CONSTANT || !val->data || val->data_owned ||
            val->copy_in_plan || val->desc.dtype == LOOM_DTYPE_UNDEFINED)
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(&val->desc) *
                       loom_dtype_size(val->desc.dtype);
        if (!bytes)
            continue;
        if (plan->n_dc_refs == plan->cap_dc_refs) {
            uint32_t cap = plan->cap_dc_refs ? 2 * plan->cap_dc_refs : 16;
            devconst_entry **r = realloc(plan->dc_refs, cap * sizeof *r);
            if (!r)
                return NULL;
            plan->dc_refs = r;
            plan->cap_dc_refs = cap;
        }
        devconst_entry *e = NULL;
        if (devconst_get(plan->dconst, dev, val->data, bytes, &e) != LOOM_OK) {
            runtime_message(plan->rt, "%s: %s; the kernels copy their weights themselves",
                            plan->rt->devices[dev].id, loom_last_error());
            loom_clear_error();
            return NULL;
        }
        plan->dc_refs[plan->n_dc_refs++] = e;
        dev_c[k] = devconst_address(e);
        any = 1;
    }
    return any ? dev_c : NULL;
}

/* Kept claim CLAIM (index CI in plan->claims): one plan node whose kernel is the backend's
 * prepare_subgraph of the claimed nodes, with the subgraph's inputs and outputs (internal values
 * get no memory: nothing produces or reads their tensors). When the backend cannot compile it,
 * the claim's state becomes PLAN_CLAIM_FAILED (a runtime message says why) and nothing is made:
 * make_nodes then makes its nodes one by one. Its run-time fallback is another device's
 * compilation of the same subgraph, when one claims it whole (plan_claim_fallback). */
static loom_status make_claim_node(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                                   const int32_t *tensor_of, plan_claim *claim, uint32_t ci,
                                   const uint32_t *device, const double *pred, uint32_t precision,
                                   const float *absmax, uint32_t *io)
{
    size_t nn = g->n_nodes;
    uint32_t p0 = claim->pos[0];
    loom_runtime *rt = plan->rt;
    const runtime_device *dev = &rt->devices[claim->device];
    char name[160];
    snprintf(name, sizeof name, "claim %u of %s (%s)", claim->index, dev->id, claim->label);
    plan_subgraph sg;
    loom_status st = plan_subgraph_build(g, order, claim->pos, claim->n_pos, precision, absmax,
                                         name, &sg);
    if (st != LOOM_OK)
        return st;
    void *kernel = NULL;
    size_t scratch = 0;
    char err[512] = "";
    const void **dev_c = calloc(sg.desc.n_inputs + 1, sizeof *dev_c);
    if (!dev_c) {
        plan_subgraph_free(&sg);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    sg.desc.input_device_constants = plan_device_constants(plan, g, sg.value_of,
                                                           sg.desc.n_inputs, claim->device,
                                                           dev_c);
    loom_status ps = dev->backend->prepare_subgraph(dev->backend->ctx, dev->index, &sg.desc,
                                                    &kernel, &scratch, err, sizeof err);
    ps = runtime_backend_status(dev->backend, (int)ps, err, sizeof err);
    /* Those copies are CLAIM->device's: no other device's compilation gets them. */
    sg.desc.input_device_constants = NULL;
    free(dev_c);
    if (ps != LOOM_OK || !kernel) {
        if (!err[0])
            snprintf(err, sizeof err, "%s", ps == LOOM_OK ? "it returned no kernel"
                                                          : "prepare_subgraph failed");
        claim->state = PLAN_CLAIM_FAILED;
        /* Truncation is acceptable here (the runtime message below has the whole text). */
        if (snprintf(claim->why, sizeof claim->why, "kept as a unit on %s (predicted %.3f ms vs "
                     "split %.3f ms), but it could not be compiled (%.100s): its nodes run one "
                     "by one", dev->id, claim->unit_s * 1e3, claim->split_s * 1e3, err) < 0)
            claim->why[0] = '\0';
        runtime_message(rt, "%s: %s could not be compiled (%s); its nodes run one by one",
                        dev->id, name, err);
        plan_subgraph_free(&sg);
        return LOOM_OK;
    }
    const uint32_t q = plan->n_nodes;
    plan_node *n = &plan->nodes[q];
    plan->n_nodes = q + 1; /* so that destroy releases the kernel */
    n->kernel = kernel;
    n->scratch_bytes = scratch;
    n->device = claim->device;
    n->claim = ci + 1;
    plan_claim_fallback(plan, claim, &sg, &n->fb_device, &n->fb_kernel, &n->fb_scratch_bytes);
    const graph_node *head = &g->nodes[order[p0]];
    n->op = head->def->id;
    n->op_label = dup_str(claim->label);
    n->name = dup_str(head->name);
    if (!n->op_label || !n->name) {
        plan_subgraph_free(&sg);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    n->op_name = n->op_label;
    for (uint32_t k = 0; k < claim->n_pos; k++) {
        const graph_node *gn = &g->nodes[order[claim->pos[k]]];
        loom_op_cost c = {0};
        if (gn->def->cost)
            gn->def->cost(&sg.desc.nodes[k], &c);
        n->cost.flops += c.flops;
        n->cost.bytes_read += c.bytes_read;
        n->cost.bytes_written += c.bytes_written;
    }
    n->n_in = sg.desc.n_inputs;
    n->n_out = sg.desc.n_outputs;
    n->io_first = *io;
    for (uint32_t k = 0; k < sg.desc.n_inputs; k++) {
        int32_t t = tensor_of[sg.value_of[k]];
        plan->io[(*io)++] = t;
        if (t >= 0)
            plan->tensors[t].last_use = (int32_t)q;
    }
    for (uint32_t k = 0; k < sg.desc.n_outputs; k++) {
        int32_t t = tensor_of[sg.value_of[sg.desc.output_values[k]]];
        plan->io[(*io)++] = t;
        plan->tensors[t].producer = (int32_t)q;
        plan->tensors[t].device = n->device;
    }
    plan->n_io = *io;
    n->pred_start = pred[p0];
    n->pred_finish = pred[nn + p0];
    n->pred_s = pred[2 * nn + p0];
    n->decided = PLAN_DECIDED_CLAIM;
    n->order_rank = pred[3 * nn + p0];
    n->graph_index = p0;
    n->cost_source = claim->measured_s > 0    ? "history"
                     : claim->estimate_s >= 0 ? "backend"
                                              : cost_node_source(plan->model, n->device,
                                                                 &sg.desc.nodes[0]);
    /* Its measured times teach the history as one unit (plan_learn). */
    if (plan->learn && claim->sig && !(n->sig = strdup(claim->sig))) {
        plan_subgraph_free(&sg);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    (void)device;
    plan_subgraph_free(&sg);
    return LOOM_OK;
}

static loom_status make_nodes(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                              const int32_t *tensor_of, const uint32_t *device, const double *pred,
                              const uint8_t *decided, const int16_t *pin_ignored, int strict,
                              uint32_t precision, const float *absmax)
{
    size_t n_io = 0, max_in = 1, max_out = 1;
    for (size_t i = 0; i < g->n_nodes; i++) {
        n_io += g->nodes[i].n_inputs + g->nodes[i].n_outputs;
        if (g->nodes[i].n_inputs > max_in)
            max_in = g->nodes[i].n_inputs;
        if (g->nodes[i].n_outputs > max_out)
            max_out = g->nodes[i].n_outputs;
    }
    plan->nodes = calloc(g->n_nodes + 1, sizeof *plan->nodes);
    size_t nn = g->n_nodes;
    plan->io = malloc((n_io + 1) * sizeof *plan->io);
    loom_tensor_desc *in_d = malloc(max_in * sizeof *in_d);
    loom_tensor_desc *out_d = malloc(max_out * sizeof *out_d);
    const void **in_c = malloc(max_in * sizeof *in_c);
    const void **dev_c = malloc(max_in * sizeof *dev_c);
    float *in_m = malloc(max_in * sizeof *in_m);
    /* Claims placement kept (1 + the claim covering each position; 0: none). */
    uint32_t *claim_of = plan->n_claims ? calloc(nn + 1, sizeof *claim_of) : NULL;
    loom_status st = LOOM_OK;
    if (!plan->nodes || !plan->io || !in_d || !out_d || !in_c || !dev_c || !in_m ||
        (plan->n_claims && !claim_of)) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning graph '%s'", g->name);
        goto done;
    }
    for (uint32_t c = 0; c < plan->n_claims; c++)
        if (plan->claims[c].state == PLAN_CLAIM_KEPT)
            for (uint32_t k = 0; k < plan->claims[c].n_pos; k++)
                claim_of[plan->claims[c].pos[k]] = c + 1;
    uint32_t io = 0;
    for (uint32_t p = 0; p < g->n_nodes; p++) {
        const graph_node *gn = &g->nodes[order[p]];
        plan_claim *claim = claim_of && claim_of[p] ? &plan->claims[claim_of[p] - 1] : NULL;
        if (claim && claim->state == PLAN_CLAIM_KEPT) {
            /* One plan node for the whole claim, made at its first node; when the backend
             * cannot compile it, its nodes are made one by one below (state FAILED). */
            if (claim->pos[0] != p)
                continue;
            st = make_claim_node(plan, g, order, tensor_of, claim, claim_of[p] - 1, device, pred,
                                 precision, absmax, &io);
            if (st != LOOM_OK)
                goto done;
            if (claim->state == PLAN_CLAIM_KEPT)
                continue;
        }
        const uint32_t q = plan->n_nodes;
        plan_node *n = &plan->nodes[q];
        plan->n_nodes = q + 1; /* so that destroy releases what was made */
        loom_node_desc desc;
        graph_node_desc(g, order[p], &desc, in_d, out_d, in_c);
        desc.precision = precision;
        if (absmax) {
            for (uint32_t k = 0; k < gn->n_inputs; k++)
                in_m[k] = gn->inputs[k] == LOOM_NO_VALUE ? NAN : absmax[gn->inputs[k]];
            desc.input_absmax = in_m;
        }
        n->op = gn->def->id;
        n->op_name = gn->def->name;
        const loom_attr *fused = loom_attr_list_get(&gn->attrs, "fused_ops");
        if (fused && fused->kind == LOOM_ATTR_STRING && fused->s && *fused->s) {
            if (!(n->op_label = dup_str(fused->s))) {
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
                goto done;
            }
            n->op_name = n->op_label;
        }
        if (!(n->name = dup_str(gn->name))) {
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            goto done;
        }
        if (gn->def->cost)
            gn->def->cost(&desc, &n->cost);
        n->n_in = gn->n_inputs;
        n->n_out = gn->n_outputs;
        n->io_first = io;
        for (uint32_t k = 0; k < gn->n_inputs; k++) {
            loom_value v = gn->inputs[k];
            int32_t t = v == LOOM_NO_VALUE ? -1 : tensor_of[v];
            plan->io[io++] = t;
            if (t >= 0)
                plan->tensors[t].last_use = (int32_t)q;
        }
        for (uint32_t k = 0; k < gn->n_outputs; k++) {
            int32_t t = tensor_of[gn->outputs[k]];
            plan->io[io++] = t;
            plan->tensors[t].producer = (int32_t)q;
        }
        n->device = device[p];
        n->pred_start = pred[p];
        n->pred_finish = pred[nn + p];
        n->pred_s = pred[2 * nn + p];
        n->decided = decided[p];
        n->pin_ignored = pin_ignored[p];
        n->order_rank = pred[3 * nn + p]; /* the rank of its task (placement.c) */
        n->graph_index = p;
        if (claim) {
            /* A claim that could not be compiled: its nodes run one by one on its device, in
             * its time slot, in their topological order. */
            uint32_t k = 0;
            while (k + 1 < claim->n_pos && claim->pos[k] != p)
                k++;
            double span = n->pred_finish - n->pred_start;
            n->pred_start += span * k / claim->n_pos;
            n->pred_finish = n->pred_start + span / claim->n_pos;
            n->pred_s = span / claim->n_pos;
            n->order_rank += (double)(k + 1) / (claim->n_pos + 1);
            n->claim = claim_of[p];
        }
        plan_node_cost_source(plan, n, &desc);
        if (plan->learn) {
            char sig[COST_SIGNATURE_MAX];
            cost_signature(&desc, sig);
            if (!(n->sig = strdup(sig))) {
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
                goto done;
            }
        }
        const runtime_device *dev = &plan->rt->devices[n->device];
        char err[512] = "";
        if (claim && !device_supports(plan->rt, n->device, &desc, err, sizeof err)) {
            st = LOOM_ERR_UNSUPPORTED; /* claimed, but the device does not run it alone */
        } else {
            desc.input_device_constants = plan_device_constants(plan, g, gn->inputs,
                                                                gn->n_inputs, n->device, dev_c);
            st = runtime_backend_status(
                dev->backend,
                (int)dev->backend->prepare(dev->backend->ctx, dev->index, &desc, &n->kernel,
                                           &n->scratch_bytes, err, sizeof err),
                err, sizeof err);
            /* Those copies are N->device's: no other device's prepare gets them. */
            desc.input_device_constants = NULL;
        }
        if (st != LOOM_OK) {
            n->kernel = NULL;
            if (!strict && replace_failed_node(plan, n, &desc, err[0] ? err : "prepare failed")) {
                st = LOOM_OK;
                plan_node_cost_source(plan, n, &desc);
            } else {
                st = loom_set_error(st, "node '%s' (%s) on %s: %s", n->name, n->op_name, dev->id,
                                    err[0] ? err : "prepare failed");
                goto done;
            }
        }
        if (!strict)
            prepare_fallback(plan, n, &desc);
        for (uint32_t k = 0; k < gn->n_outputs; k++)
            plan->tensors[tensor_of[gn->outputs[k]]].device = n->device;
        plan->n_io = io;
    }
done:
    free(claim_of);
    free(in_d);
    free(out_d);
    free(in_c);
    free(dev_c);
    free(in_m);
    return st;
}

/* Memory space of runtime device D: UINT32_MAX for host memory, else D itself. */
static uint32_t space_of(const loom_plan *plan, uint32_t d)
{
    return plan->rt->devices[d].info.host_visible ? UINT32_MAX : d;
}

/* Memory space a tensor lives in. */
static uint32_t tensor_space(const loom_plan *plan, const plan_tensor *t)
{
    if (t->kind == PLAN_T_INTERMEDIATE) /* its arena's device (a copy's, not the copy node's) */
        return space_of(plan, t->device);
    if (t->kind == PLAN_T_OUTPUT && t->producer >= 0)
        return space_of(plan, plan->nodes[t->producer].device);
    return UINT32_MAX;
}

typedef struct copy_memo {
    uint32_t space;  /* target memory space */
    int32_t dst;     /* the source tensor's copy there */
    int32_t next;    /* the source's next copy (index in memo), -1 */
} copy_memo;

typedef struct copy_state {
    copy_memo *memo;
    int32_t *memo_head; /* per source tensor: its first copy in memo, -1 */
    size_t n_memo;
    const char **tensor_name;
} copy_state;

/* Remember that tensor SRC has the copy DST in memory space SPACE. */
static void memo_add(copy_state *cs, int32_t src, uint32_t space, int32_t dst)
{
    cs->memo[cs->n_memo] = (copy_memo){space, dst, cs->memo_head[src]};
    cs->memo_head[src] = (int32_t)cs->n_memo++;
}

/* A new copy node moving tensor SRC into memory space SPACE (host: UINT32_MAX) into tensor DST
 * (already made), for the consumer device HV_DEVICE when SPACE is the host. */
static loom_status add_copy_node(loom_plan *plan, copy_state *cs, int32_t src, int32_t dst,
                                 uint32_t space)
{
    plan_tensor *ts = &plan->tensors[src];
    uint32_t from = tensor_space(plan, ts);
    uint32_t p = plan->n_nodes;
    plan_node *n = &plan->nodes[p];
    memset(n, 0, sizeof *n);
    n->is_copy = 1;
    n->op = LOOM_OP_INVALID;
    n->op_name = "Copy";
    n->decided = PLAN_DECIDED_COPY;
    n->cost_source = "link";
    n->graph_index = UINT32_MAX;
    n->copy_dir = space == UINT32_MAX  ? PLAN_COPY_DOWNLOAD
                  : from == UINT32_MAX ? PLAN_COPY_UPLOAD
                                       : PLAN_COPY_PEER;
    n->device = n->copy_dir == PLAN_COPY_DOWNLOAD ? from : space;
    n->copy_src = n->copy_dir == PLAN_COPY_PEER ? from : UINT32_MAX;
    const char *dev_id = plan->rt->devices[n->device].id;
    char buf[512];
    if (n->copy_dir == PLAN_COPY_PEER)
        snprintf(buf, sizeof buf, "%s->%s", plan->rt->devices[from].id, dev_id);
    else
        snprintf(buf, sizeof buf, n->copy_dir == PLAN_COPY_UPLOAD ? "host->%s" : "%s->host",
                 dev_id);
    n->link = strdup(buf);
    snprintf(buf, sizeof buf, "copy:%s->%s", cs->tensor_name[src] ? cs->tensor_name[src] : "?",
             n->copy_dir == PLAN_COPY_DOWNLOAD ? "host" : dev_id);
    n->name = strdup(buf);
    if (!n->link || !n->name)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning copies");
    n->n_in = 1;
    n->n_out = 1;
    n->io_first = plan->n_io;
    plan->io[plan->n_io++] = src;
    plan->io[plan->n_io++] = dst;
    n->cost.bytes_read = n->cost.bytes_written = (double)ts->bytes;
    n->bytes_in_moved = (double)ts->bytes;
    double ready = ts->producer >= 0 ? plan->nodes[ts->producer].pred_finish : 0;
    /* Before its producer's successors, after the producer itself. */
    n->order_rank = ts->producer >= 0 ? plan->nodes[ts->producer].order_rank + 0.5 : -0.5;
    n->pred_s = plan_link_seconds(plan, n->copy_dir == PLAN_COPY_UPLOAD ? COST_HOST : from,
                                  n->copy_dir == PLAN_COPY_DOWNLOAD ? COST_HOST : n->device,
                                  (double)ts->bytes);
    n->transfer_in_s = n->pred_s;
    n->pred_start = ready;
    n->pred_finish = ready + n->pred_s;
    plan->n_nodes++;
    plan->n_copies++;
    return LOOM_OK;
}

/* Whether runtime device DST can copy straight from device SRC: one backend that says so
 * (can_copy_peer), and LOOM_PEER_COPY is not "0" (for comparisons). */
static int peer_ok(const loom_plan *plan, uint32_t dst, uint32_t src)
{
    const runtime_device *d = &plan->rt->devices[dst], *s = &plan->rt->devices[src];
    const loom_backend *be = d->backend;
    if (be != s->backend || !RUNTIME_SLOT(be, can_copy_peer) || !RUNTIME_SLOT(be, copy_peer))
        return 0;
    const char *env = getenv("LOOM_PEER_COPY");
    if (env && !strcmp(env, "0"))
        return 0;
    return be->can_copy_peer(be->ctx, d->index, s->index) != 0;
}

/* The device whose arena holds a host-memory tensor read by CONSUMER: CONSUMER itself when the
 * host can address its memory, else the first such device of the runtime (a tensor staged
 * between two devices must be host memory, not the consumer's). */
static uint32_t host_device(const loom_plan *plan, uint32_t consumer)
{
    if (plan->rt->devices[consumer].info.host_visible)
        return consumer;
    for (uint32_t d = 0; d < plan->rt->n_devices; d++)
        if (plan->rt->devices[d].info.host_visible)
            return d;
    return consumer;
}

/* The tensor holding SRC's data in memory space SPACE, for a consumer on runtime device
 * CONSUMER; made (with its copy node: peer to peer when the backend can, else via the host
 * between two devices) when missing. */
static loom_status copy_of(loom_plan *plan, copy_state *cs, int32_t src, uint32_t space,
                           uint32_t consumer, int32_t *out)
{
    if (tensor_space(plan, &plan->tensors[src]) == space) {
        *out = src;
        return LOOM_OK;
    }
    for (int32_t i = cs->memo_head[src]; i >= 0; i = cs->memo[i].next)
        if (cs->memo[i].space == space) {
            *out = cs->memo[i].dst;
            return LOOM_OK;
        }
    int32_t from = src;
    loom_status st;
    uint32_t src_space = tensor_space(plan, &plan->tensors[src]);
    if (space != UINT32_MAX && src_space != UINT32_MAX && !peer_ok(plan, space, src_space)) {
        /* device to another device: through the host (in host memory, not the consumer's) */
        if ((st = copy_of(plan, cs, src, UINT32_MAX, host_device(plan, consumer), &from)) !=
            LOOM_OK)
            return st;
    }
    int32_t dst = (int32_t)plan->n_tensors++;
    plan_tensor *t = &plan->tensors[dst];
    *t = plan->tensors[src];
    t->kind = PLAN_T_INTERMEDIATE;
    t->data = NULL;
    t->device = space == UINT32_MAX ? consumer : space;
    cs->tensor_name[dst] = cs->tensor_name[src];
    if ((st = add_copy_node(plan, cs, from, dst, space)) != LOOM_OK)
        return st;
    t->producer = (int32_t)(plan->n_nodes - 1);
    memo_add(cs, src, space, dst);
    *out = dst;
    return LOOM_OK;
}

static int cmp_node_order(const void *a, const void *b)
{
    const plan_node *x = a, *y = b;
    if (x->pred_start != y->pred_start)
        return x->pred_start < y->pred_start ? -1 : 1;
    return x->order_rank < y->order_rank ? -1 : x->order_rank > y->order_rank;
}

/* Insert the copy nodes the placement needs, then order every node by predicted start (ties:
 * topological rank), which is a topological order each device's worker follows. */
static loom_status insert_copies(loom_plan *plan, const loom_graph *g, const int32_t *tensor_of)
{
    uint32_t nn = plan->n_nodes, nt = plan->n_tensors;
    int any = 0;
    for (uint32_t p = 0; p < nn && !any; p++)
        any = space_of(plan, plan->nodes[p].device) != UINT32_MAX;
    copy_state cs = {0};
    loom_status st = LOOM_OK;
    if (any) {
        /* At most: one copy per (input slot) plus one per graph output, each maybe two hops. */
        size_t n_slots = 0;
        for (uint32_t p = 0; p < nn; p++)
            n_slots += plan->nodes[p].n_in;
        size_t max_copies = 2 * (n_slots + plan->n_outputs) + 1;
        plan_node *nodes = realloc(plan->nodes, (nn + max_copies + 1) * sizeof *nodes);
        if (nodes)
            plan->nodes = nodes;
        int32_t *io = realloc(plan->io, (plan->n_io + 2 * max_copies + 1) * sizeof *io);
        if (io)
            plan->io = io;
        plan_tensor *ts = realloc(plan->tensors, (nt + max_copies + 1) * sizeof *ts);
        if (ts)
            plan->tensors = ts;
        cs.memo = malloc(max_copies * sizeof *cs.memo);
        cs.memo_head = malloc((nt + max_copies + 1) * sizeof *cs.memo_head);
        cs.tensor_name = calloc(nt + max_copies + 1, sizeof(char *));
        if (!nodes || !io || !ts || !cs.memo || !cs.memo_head || !cs.tensor_name) {
            free(cs.memo);
            free(cs.memo_head);
            free(cs.tensor_name);
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning copies");
        }
        for (uint32_t t = 0; t < nt + max_copies; t++)
            cs.memo_head[t] = -1;
        for (size_t v = 0; v < g->n_values; v++)
            if (tensor_of[v] >= 0)
                cs.tensor_name[tensor_of[v]] = g->values[v].name;
        /* Graph outputs made on a device the host cannot address: the device keeps a twin and
         * a copy node writes the caller's tensor. */
        for (uint32_t i = 0; i < plan->n_outputs && st == LOOM_OK; i++) {
            int32_t t = (int32_t)plan->output_tensor[i];
            plan_tensor *pt = &plan->tensors[t];
            if (pt->kind != PLAN_T_OUTPUT || pt->producer < 0 ||
                tensor_space(plan, pt) == UINT32_MAX)
                continue;
            int32_t host = (int32_t)plan->n_tensors++;
            plan->tensors[host] = *pt;
            cs.tensor_name[host] = cs.tensor_name[t];
            pt->kind = PLAN_T_INTERMEDIATE;
            pt->device = plan->nodes[pt->producer].device;
            if ((st = add_copy_node(plan, &cs, t, host, UINT32_MAX)) != LOOM_OK)
                break;
            plan->tensors[host].producer = (int32_t)(plan->n_nodes - 1);
            plan->output_tensor[i] = (uint32_t)host;
            memo_add(&cs, t, UINT32_MAX, host);
        }
    }
    /* Each input read from another memory space reads a copy instead (host memory only: every
     * device reads each tensor where it is). */
    for (uint32_t c = 0; c < nn && st == LOOM_OK; c++) {
        uint32_t space = space_of(plan, plan->nodes[c].device);
        for (uint32_t k = 0; k < plan->nodes[c].n_in && st == LOOM_OK; k++) {
            uint32_t pos = plan->nodes[c].io_first + k;
            int32_t t = plan->io[pos], to = t;
            /* Constants: a device that cannot address host memory copied them at prepare
             * time. */
            if (t < 0 || plan->tensors[t].kind == PLAN_T_CONSTANT)
                continue;
            if (any)
                st = copy_of(plan, &cs, t, space, plan->nodes[c].device, &to);
            if (st == LOOM_OK && to != t) {
                plan->io[pos] = to;
                plan->nodes[c].bytes_in_moved += (double)plan->tensors[t].bytes;
                plan->nodes[c].transfer_in_s += plan->nodes[plan->tensors[to].producer].pred_s;
            } else if (st == LOOM_OK) {
                plan->nodes[c].bytes_kept_local += (double)plan->tensors[t].bytes;
            }
        }
    }
    free(cs.memo);
    free(cs.memo_head);
    free(cs.tensor_name);
    if (st != LOOM_OK)
        return st;
    /* Execution order: by predicted start, then topological rank; rows of cost_s follow. */
    uint32_t total = plan->n_nodes, nd = plan->n_rt_devices;
    qsort(plan->nodes, total, sizeof *plan->nodes, cmp_node_order);
    double *cost = malloc(((size_t)total * nd + 1) * sizeof *cost);
    if (!cost)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning copies");
    for (uint32_t p = 0; p < total; p++) {
        plan_node *n = &plan->nodes[p];
        for (uint32_t d = 0; d < nd; d++)
            cost[(size_t)p * nd + d] =
                n->is_copy ? (d == n->device ? n->pred_s : INFINITY)
                : n->claim && plan->claims[n->claim - 1].state == PLAN_CLAIM_KEPT
                    ? (d == n->device ? plan->claims[n->claim - 1].unit_s : INFINITY)
                    : plan->cost_s[(size_t)n->graph_index * nd + d];
    }
    free(plan->cost_s);
    plan->cost_s = cost;
    for (uint32_t t = 0; t < plan->n_tensors; t++) {
        plan->tensors[t].producer = -1;
        plan->tensors[t].last_use = -1;
    }
    for (uint32_t p = 0; p < total; p++) {
        const plan_node *n = &plan->nodes[p];
        for (uint32_t k = 0; k < n->n_in; k++) {
            int32_t t = plan->io[n->io_first + k];
            if (t >= 0)
                plan->tensors[t].last_use = (int32_t)p;
        }
        for (uint32_t k = 0; k < n->n_out; k++)
            plan->tensors[plan->io[n->io_first + n->n_in + k]].producer = (int32_t)p;
    }
    return LOOM_OK;
}

/* Successor lists (deduplicated) and dependency counts. */
static loom_status make_edges(loom_plan *plan)
{
    uint32_t nn = plan->n_nodes;
    size_t n_edges = 0;
    for (uint32_t p = 0; p < nn; p++)
        n_edges += plan->nodes[p].n_in;
    uint32_t *count = calloc(nn + 1, sizeof *count);
    uint32_t *mark = malloc((nn + 1) * sizeof *mark);
    plan->succ = malloc((n_edges + 1) * sizeof *plan->succ);
    if (!count || !mark || !plan->succ) {
        free(count);
        free(mark);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning edges");
    }
    /* pass 1: count distinct (producer, consumer) pairs per producer */
    for (uint32_t p = 0; p < nn; p++)
        mark[p] = UINT32_MAX;
    for (uint32_t c = 0; c < nn; c++) {
        const plan_node *n = &plan->nodes[c];
        for (uint32_t k = 0; k < n->n_in; k++) {
            int32_t t = plan->io[n->io_first + k];
            if (t < 0 || plan->tensors[t].producer < 0)
                continue;
            uint32_t p = (uint32_t)plan->tensors[t].producer;
            if (mark[p] != c) {
                mark[p] = c;
                count[p]++;
                plan->nodes[c].n_preds++;
            }
        }
    }
    uint32_t off = 0;
    for (uint32_t p = 0; p < nn; p++) {
        plan->nodes[p].succ_first = off;
        off += count[p];
        count[p] = 0;
    }
    for (uint32_t p = 0; p < nn; p++)
        mark[p] = UINT32_MAX;
    for (uint32_t c = 0; c < nn; c++) {
        const plan_node *n = &plan->nodes[c];
        for (uint32_t k = 0; k < n->n_in; k++) {
            int32_t t = plan->io[n->io_first + k];
            if (t < 0 || plan->tensors[t].producer < 0)
                continue;
            uint32_t p = (uint32_t)plan->tensors[t].producer;
            if (mark[p] != c) {
                mark[p] = c;
                plan->succ[plan->nodes[p].succ_first + count[p]++] = c;
            }
        }
    }
    for (uint32_t p = 0; p < nn; p++)
        plan->nodes[p].n_succ = count[p];
    free(count);
    free(mark);
    return LOOM_OK;
}

/* Whether BE offers events (all four slots). */
static int has_events(const loom_backend *be)
{
    return RUNTIME_SLOT(be, event_create) && RUNTIME_SLOT(be, event_record) &&
           RUNTIME_SLOT(be, event_wait) && RUNTIME_SLOT(be, event_destroy);
}

/* Which cross-worker dependencies the devices signal themselves (plan->succ_event): a consumer
 * on a pipelined (in-order) worker of a backend with events, whose producer is a node of a
 * pipelined worker of the same backend, or an upload to the consumer's device that the backend
 * runs asynchronously (upload_async records the event). The consumer's worker then waits only
 * for the producer's submission, and event_wait orders the queues. LOOM_EVENTS=0 turns it off
 * (every dependency wakes the host), for comparisons. */
static loom_status plan_events(loom_plan *plan)
{
    uint32_t nn = plan->n_nodes;
    size_t n_edges = 0;
    for (uint32_t p = 0; p < nn; p++) {
        n_edges += plan->nodes[p].n_succ;
        plan->nodes[p].n_evpred = plan->nodes[p].n_evsucc = 0;
    }
    plan->succ_event = calloc(n_edges + 1, 1);
    if (!plan->succ_event)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning events");
    plan->n_event_edges = 0;
    /* The cross-worker dependencies, for loom_plan_dependency. */
    plan->dep_from = malloc((n_edges + 1) * sizeof *plan->dep_from);
    plan->dep_edge = malloc((n_edges + 1) * sizeof *plan->dep_edge);
    if (!plan->dep_from || !plan->dep_edge)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning events");
    plan->n_deps = 0;
    for (uint32_t p = 0; p < nn; p++) {
        const plan_node *n = &plan->nodes[p];
        for (uint32_t e = 0; e < n->n_succ; e++)
            if (plan->nodes[plan->succ[n->succ_first + e]].slot != n->slot) {
                plan->dep_from[plan->n_deps] = p;
                plan->dep_edge[plan->n_deps++] = n->succ_first + e;
            }
    }
    const char *env = getenv("LOOM_EVENTS");
    if (env && !strcmp(env, "0"))
        return LOOM_OK;
    for (uint32_t p = 0; p < nn; p++) {
        plan_node *n = &plan->nodes[p];
        const plan_device_use *un = &plan->devs[n->slot];
        const loom_backend *bn = plan->rt->devices[n->device].backend;
        /* An upload of nothing starts no copy, so it would record no event. */
        int from_ok = un->pipelined || (un->link == PLAN_COPY_UPLOAD && un->async &&
                                        plan->tensors[plan->io[n->io_first]].bytes > 0);
        for (uint32_t e = 0; e < n->n_succ && from_ok; e++) {
            plan_node *q = &plan->nodes[plan->succ[n->succ_first + e]];
            const plan_device_use *uq = &plan->devs[q->slot];
            const loom_backend *bq = plan->rt->devices[q->device].backend;
            if (q->slot == n->slot || !uq->pipelined || bq != bn || !has_events(bq))
                continue;
            if (un->link && n->device != q->device)
                continue; /* an upload signals the queue of its own device only */
            plan->succ_event[n->succ_first + e] = 1;
            n->n_evsucc++;
            q->n_evpred++;
            plan->n_event_edges++;
        }
    }
    plan->evpred = malloc((plan->n_event_edges + 1) * sizeof *plan->evpred);
    if (!plan->evpred)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning events");
    uint32_t off = 0;
    for (uint32_t p = 0; p < nn; p++) {
        plan->nodes[p].evpred_first = off;
        off += plan->nodes[p].n_evpred;
        plan->nodes[p].n_evpred = 0;
    }
    for (uint32_t p = 0; p < nn; p++) {
        const plan_node *n = &plan->nodes[p];
        for (uint32_t e = 0; e < n->n_succ; e++)
            if (plan->succ_event[n->succ_first + e]) {
                plan_node *q = &plan->nodes[plan->succ[n->succ_first + e]];
                plan->evpred[q->evpred_first + q->n_evpred++] = p;
            }
    }
    return LOOM_OK;
}

/* Pinned staging: a host arena that holds tensors a copy node reads (upload) or writes
 * (download) of a device whose backend offers alloc_host comes from that alloc_host
 * (executor.c ctx_create), so the transfers run from page-locked memory. The caller's own input
 * and output tensors are the caller's memory and stay as they are. */
static void plan_staging(loom_plan *plan)
{
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        const plan_node *n = &plan->nodes[p];
        if (!n->is_copy || n->copy_dir == PLAN_COPY_PEER)
            continue;
        const loom_backend *be = plan->rt->devices[n->device].backend;
        if (!RUNTIME_SLOT(be, alloc_host) || !RUNTIME_SLOT(be, free_host))
            continue;
        int32_t t = plan->io[n->io_first + (n->copy_dir == PLAN_COPY_UPLOAD ? 0 : 1)];
        const plan_tensor *pt = &plan->tensors[t];
        if (pt->kind != PLAN_T_INTERMEDIATE || !plan->rt->devices[pt->device].info.host_visible)
            continue;
        uint32_t s = plan->dev_slot[pt->device];
        if (s != UINT32_MAX && !plan->devs[s].staging)
            plan->devs[s].staging = 1 + n->device;
    }
}

/* The workers of the plan: one per device it computes on, then one per transfer direction
 * (upload, download, peer) of each device the host cannot address; each one's nodes in plan
 * order. */
static loom_status make_device_orders(loom_plan *plan)
{
    size_t nd = plan->rt->n_devices;
    plan->dev_slot = malloc((nd + 1) * sizeof *plan->dev_slot);
    plan->devs = calloc(4 * nd + 1, sizeof *plan->devs);
    uint32_t *link_slot = malloc((3 * nd + 1) * sizeof *link_slot);
    if (!plan->dev_slot || !plan->devs || !link_slot) {
        free(link_slot);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning devices");
    }
    for (size_t d = 0; d < nd; d++) {
        plan->dev_slot[d] = UINT32_MAX;
        link_slot[3 * d] = link_slot[3 * d + 1] = link_slot[3 * d + 2] = UINT32_MAX;
    }
    /* Compute workers first (the caller's thread drives slot 0), including devices that only
     * hold tensors (a copy's destination arena). */
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        uint32_t d = plan->nodes[p].device;
        if (!plan->nodes[p].is_copy && plan->dev_slot[d] == UINT32_MAX) {
            plan->dev_slot[d] = plan->n_devs;
            plan->devs[plan->n_devs++].device = d;
        }
    }
    for (uint32_t t = 0; t < plan->n_tensors; t++) {
        uint32_t d = plan->tensors[t].device;
        if (plan->tensors[t].kind == PLAN_T_INTERMEDIATE && plan->dev_slot[d] == UINT32_MAX) {
            plan->dev_slot[d] = plan->n_devs;
            plan->devs[plan->n_devs++].device = d;
        }
    }
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        plan_node *n = &plan->nodes[p];
        if (n->is_copy) {
            uint32_t *ls = &link_slot[3 * n->device + (n->copy_dir - 1u)];
            if (*ls == UINT32_MAX) {
                *ls = plan->n_devs;
                plan->devs[plan->n_devs].device = n->device;
                plan->devs[plan->n_devs++].link = n->copy_dir;
            }
            n->slot = *ls;
        } else {
            n->slot = plan->dev_slot[n->device];
        }
        plan->devs[n->slot].n_order++;
    }
    free(link_slot);
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        plan->devs[s].order = malloc((plan->devs[s].n_order + 1) * sizeof(uint32_t));
        if (!plan->devs[s].order)
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning devices");
        plan->devs[s].n_order = 0;
    }
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        plan_device_use *u = &plan->devs[plan->nodes[p].slot];
        u->order[u->n_order++] = p;
    }
    /* Pipelined workers: a device that keeps submission order needs no wait for its own
     * predecessors. Fallbacks are not pipelined: a failure makes the run start over without
     * pipelining (executor.c). */
    const char *pipe_env = getenv("LOOM_PIPELINE"); /* "0": off, for comparisons */
    int pipe_ok = !(pipe_env && !strcmp(pipe_env, "0"));
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        plan_device_use *u = &plan->devs[s];
        const runtime_device *dev = &plan->rt->devices[u->device];
        u->pipelined = pipe_ok && !u->link &&
                       (RUNTIME_SLOT(dev->backend, submit) || RUNTIME_SLOT(dev->backend, enqueue)) &&
                       dev->info.in_order && plan->n_devs > 1;
        u->async = (u->link == PLAN_COPY_UPLOAD && RUNTIME_SLOT(dev->backend, upload_async)) ||
                   (u->link == PLAN_COPY_DOWNLOAD && RUNTIME_SLOT(dev->backend, download_async));
    }
    plan_staging(plan);
    for (uint32_t p = 0; p < plan->n_nodes; p++)
        plan->nodes[p].n_wait = 0;
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        const plan_node *n = &plan->nodes[p];
        for (uint32_t e = 0; e < n->n_succ; e++) {
            plan_node *q = &plan->nodes[plan->succ[n->succ_first + e]];
            if (!(plan->devs[q->slot].pipelined && q->slot == n->slot))
                q->n_wait++;
        }
    }
    return plan_events(plan);
}

/* Record a finished scheduler stage in RES, timed from *T0 (which moves to now). */
static void stage_done(pass_result *res, const char *name, size_t before, size_t after,
                       uint64_t *t0, const char *summary)
{
    uint64_t now = loom_now_ns();
    passes_report_add(res, name, before, after, (double)(now - *t0) / 1e6, summary);
    *t0 = now;
}

/* One attempt at a plan; EXCLUDE (a bit per runtime device) names devices placement must not
 * use: those whose intermediate memory could not be had on an earlier attempt. */
static loom_status plan_create_once(loom_runtime *rt, const loom_graph *g,
                                    const loom_plan_options *options, uint64_t exclude,
                                    devconst_cache *dc, loom_plan **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan: out is NULL");
    *out = NULL;
    loom_clear_error();
    if (!rt || !g)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan: runtime or graph is NULL");
    if (g->error != LOOM_OK)
        return loom_set_error(g->error, "%s", g->error_msg);
    if (!g->checked)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "graph '%s' was not checked: call loom_graph_check first", g->name);
    int strict = 0, learn = 0;
    uint32_t precision = LOOM_PRECISION_F32;
    const loom_tensor *const *cal_sets = NULL;
    size_t n_cal = 0;
    const char *const *keep_float = NULL;
    size_t n_keep_float = 0;
    plan_place_opts po = {.want = -1, .exclude = exclude};
#define HAS(field) (options->struct_size >= offsetof(loom_plan_options, field) + sizeof options->field)
    if (options) {
        if (options->struct_size < sizeof(uint32_t) + sizeof(void *))
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "plan options: struct_size %u is too small (set it to "
                                  "sizeof(loom_plan_options))", options->struct_size);
        if (options->device) {
            po.want = plan_find_device(rt, options->device);
            if (po.want < 0) {
                char list[512];
                size_t len = 0;
                list[0] = '\0';
                for (size_t d = 0; d < rt->n_devices && len < sizeof list; d++)
                    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", d ? ", " : "",
                                            rt->devices[d].id);
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "unknown device '%s' (devices here: %s)", options->device,
                                      list);
            }
        }
        if (HAS(strict))
            strict = options->strict;
        if (HAS(precision)) {
            precision = options->precision;
            if (precision > LOOM_PRECISION_INT8_DYNAMIC)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "plan options: unknown precision %u (0 f32, 1 fp16, 2 int8, "
                                      "3 int8-dynamic)", precision);
        }
        if (HAS(n_calibration_sets)) {
            cal_sets = options->calibration_inputs;
            n_cal = options->n_calibration_sets;
        }
        if (HAS(n_keep_float)) {
            keep_float = options->keep_float;
            n_keep_float = options->n_keep_float;
            if (n_keep_float && !keep_float)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "plan options: n_keep_float is %zu but keep_float is NULL",
                                      n_keep_float);
        }
        if (HAS(learn)) {
            po.policy = options->policy;
            po.target_s = options->target_latency_s;
            po.pins = options->pins;
            po.n_pins = options->n_pins;
            po.budget_s = options->budget_s;
            po.cache_dir = options->cache_dir;
            learn = options->learn;
            if (!(po.target_s >= 0) || !(po.budget_s >= 0))
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "plan options: target latency and budget must be >= 0");
            if (po.n_pins && !po.pins)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan options: pins is NULL");
            for (size_t i = 0; i < po.n_pins; i++)
                if (!po.pins[i])
                    return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                          "plan options: pins[%zu] is NULL", i);
        }
    }
#undef HAS
    po.strict = strict;
    if (precision != LOOM_PRECISION_INT8)
        n_cal = 0;
    if (n_cal) {
        loom_status cst = pass_check_calibration(g, cal_sets, n_cal);
        if (cst != LOOM_OK)
            return cst;
    }
    /* The graph passes first (passes/pipeline.c): what is placed is their result. */
    pass_ctx pctx = {.eval = runtime_reference_eval(), .fold = 1,
                     .calibration_sets = cal_sets, .n_calibration_sets = n_cal,
                     .quantize_int8_dynamic = precision == LOOM_PRECISION_INT8_DYNAMIC,
                     .keep_float = keep_float, .n_keep_float = n_keep_float};
    /* Fused nodes run on the CPU only: fuse when the CPU may take them (every node on a CPU
     * device, or placement free with a CPU present) and no pin names the graph's nodes as
     * written. LOOM_FUSE=0 turns it off, for comparisons. Not either when another device the
     * plan may use claims subgraphs (ABI 1.0): the chains stay whole for it to claim, and the
     * CPU gets its fusion through its own claims. */
    const char *fuse_env = getenv("LOOM_FUSE"), *claims_env = getenv("LOOM_CLAIMS");
    int other_claims = -1; /* the first other device that claims subgraphs */
    if (fuse_env && strcmp(fuse_env, "0") == 0)
        snprintf(pctx.fuse_epilogue_off, sizeof pctx.fuse_epilogue_off, "LOOM_FUSE=0");
    else if (po.n_pins)
        snprintf(pctx.fuse_epilogue_off, sizeof pctx.fuse_epilogue_off,
                 "pins name the graph's nodes as written");
    else
        for (size_t d = 0; d < rt->n_devices; d++) {
            if (!(po.want < 0 || (size_t)po.want == d) ||
                (d < 64 && ((po.exclude >> d) & 1)))
                continue;
            if (strncmp(rt->devices[d].id, "cpu:", 4) == 0)
                pctx.fuse_epilogue = pctx.int8_epilogue = 1;
            else if (RUNTIME_SLOT(rt->devices[d].backend, claim) &&
                     !(claims_env && strcmp(claims_env, "0") == 0) && other_claims < 0)
                other_claims = (int)d;
        }
    if (other_claims >= 0 && pctx.fuse_epilogue) {
        pctx.fuse_epilogue = 0;
        snprintf(pctx.fuse_epilogue_off, sizeof pctx.fuse_epilogue_off,
                 "%s claims subgraphs; the CPU fuses through its own claims",
                 rt->devices[other_claims].id);
    }
    plan_moe_split_decide(rt, g, precision == LOOM_PRECISION_INT8_DYNAMIC ? LOOM_PRECISION_F32
                                                                          : precision,
                          po.want, po.exclude, po.pins, po.n_pins, &pctx.split_moe,
                          pctx.split_moe_why, sizeof pctx.split_moe_why);
    /* int8-dynamic is a rewrite of the graph; devices then see f32 nodes (and the new ones). */
    const uint32_t requested_precision = precision;
    if (precision == LOOM_PRECISION_INT8_DYNAMIC)
        precision = LOOM_PRECISION_F32;
    pass_result pres;
    loom_status pst = passes_run(g, &pctx, &pres);
    if (pst != LOOM_OK) {
        passes_result_free(&pres, &pctx);
        return pst;
    }
    const loom_graph *user_graph = g;
    g = pres.graph;
    loom_plan *plan = calloc(1, sizeof *plan);
    if (plan)
        plan->dconst = dc;
    size_t nn = g->n_nodes;
    int32_t *tensor_of = malloc((g->n_values + 1) * sizeof *tensor_of);
    uint32_t *order = malloc((nn + 1) * sizeof *order);
    uint32_t *device = malloc((nn + 1) * sizeof *device);
    double *pred = malloc((4 * nn + 1) * sizeof *pred);
    uint8_t *decided = calloc(nn + 1, 1);
    int16_t *pin_ignored = calloc(nn + 1, sizeof *pin_ignored);
    if (!plan || !tensor_of || !order || !device || !pred || !decided || !pin_ignored) {
        free(plan);
        free(tensor_of);
        free(order);
        free(device);
        free(pred);
        free(decided);
        free(pin_ignored);
        passes_result_free(&pres, &pctx);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning graph '%s'",
                              g->name);
    }
    memcpy(order, pctx.order, nn * sizeof *order);
    plan->rt = runtime_retain(rt); /* the runtime lives as long as its plans */
    plan->strict = strict;
    plan->learn = learn;
    plan->precision = requested_precision;
    plan->best_single = -1;
    pthread_mutex_init(&plan->ctx_lock, NULL);
    const float *absmax = pctx.absmax;
    (void)user_graph;
    /* The scheduler's stages, after the passes; each is timed for loom profile --passes. */
    uint64_t t0 = loom_now_ns();
    loom_status st = make_tensors(plan, g, tensor_of);
    if (st == LOOM_OK)
        st = make_io_names(plan, g, tensor_of);
    if (st == LOOM_OK) {
        /* Subgraph claims (claims.c): offered after the passes, decided by placement. */
        char line[128];
        st = plan_claims_collect(plan, g, order, precision, absmax, po.want, po.exclude, line,
                                 sizeof line);
        if (st == LOOM_OK)
            stage_done(&pres, "claims", nn, nn, &t0, line);
    }
    if (st == LOOM_OK)
        st = plan_place(plan, g, order, tensor_of, precision, absmax, &po, device, pred, decided,
                      pin_ignored);
    if (st == LOOM_OK)
        stage_done(&pres, "place", nn, nn, &t0, plan->policy);
    if (st == LOOM_OK)
        st = make_nodes(plan, g, order, tensor_of, device, pred, decided, pin_ignored, strict,
                        precision, absmax);
    if (st == LOOM_OK)
        stage_done(&pres, "compile", nn, plan->n_nodes, &t0, "kernels prepared on their devices");
    if (st == LOOM_OK)
        st = insert_copies(plan, g, tensor_of);
    if (st == LOOM_OK)
        st = make_edges(plan);
    if (st == LOOM_OK)
        st = make_device_orders(plan);
    if (st == LOOM_OK) {
        char line[64];
        snprintf(line, sizeof line, "%u copy node%s", plan->n_copies,
                 plan->n_copies == 1 ? "" : "s");
        stage_done(&pres, "insert_copies", nn, plan->n_nodes, &t0, line);
    }
    if (st == LOOM_OK)
        st = plan_memory_plan(plan);
    if (st == LOOM_OK) {
        char line[96];
        snprintf(line, sizeof line, "peak %zu bytes of intermediates", plan->peak_bytes);
        stage_done(&pres, "memory_plan", plan->n_nodes, plan->n_nodes, &t0, line);
        memcpy(plan->stages, pres.reports, pres.n_reports * sizeof *pres.reports);
        plan->n_stages = pres.n_reports;
    }
    if (!learn) {
        /* Predictions are made: only a learning plan needs the model afterwards. */
        cost_model_close(plan->model);
        plan->model = NULL;
    }
    passes_result_free(&pres, &pctx);
    free(tensor_of);
    free(order);
    free(device);
    free(pred);
    free(decided);
    free(pin_ignored);
    if (st != LOOM_OK) {
        loom_plan_destroy(plan);
        return st;
    }
    loom_clear_error(); /* a stage may have noted what it worked around: the call succeeded */
    *out = plan;
    return LOOM_OK;
}

/* The capacity check: each device whose backend tells its free memory (memory_info) must have
 * the plan's intermediate memory there free. On failure *FAILED is that runtime device and the
 * error names it and both sizes. A device without memory_info, or whose query fails, is left to
 * its allocation (plan_contexts_prepare). */
static loom_status plan_check_capacity(const loom_plan *plan, uint32_t *failed)
{
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        const plan_device_use *u = &plan->devs[s];
        const runtime_device *dev = &plan->rt->devices[u->device];
        const loom_backend *be = dev->backend;
        loom_status (*info)(void *, uint32_t, uint64_t *, uint64_t *) =
            RUNTIME_SLOT(be, memory_info);
        if (u->link || !u->arena_bytes || !info || u->staging)
            continue;
        uint64_t free_b = 0, total_b = 0;
        if (runtime_backend_status(be, (int)info(be->ctx, dev->index, &free_b, &total_b), NULL,
                                   0) != LOOM_OK)
            continue;
        if ((uint64_t)u->arena_bytes > free_b) {
            *failed = u->device;
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY,
                                  "%s: the plan needs %zu bytes of intermediate memory there, "
                                  "but the device reports %llu bytes free (of %llu)",
                                  dev->id, u->arena_bytes, (unsigned long long)free_b,
                                  (unsigned long long)total_b);
        }
    }
    return LOOM_OK;
}

loom_status loom_plan_create(loom_runtime *rt, const loom_graph *g,
                             const loom_plan_options *options, loom_plan **out)
{
    return plan_create_shared(rt, g, options, NULL, out);
}

loom_status plan_create_shared(loom_runtime *rt, const loom_graph *g,
                               const loom_plan_options *options, devconst_cache *dc,
                               loom_plan **out)
{
    uint64_t exclude = 0;
    /* A graph with symbolic dims has no shapes to plan: a model makes a plan per input shape. */
    if (out && g && graph_sym_count(g)) {
        *out = NULL;
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "graph '%s' has symbolic dimensions "
                              "('%s'%s): make a model of it with loom_model_from_graph, which "
                              "plans each input shape", g->name ? g->name : "?",
                              graph_sym_name(g, 0), graph_sym_count(g) > 1 ? ", ..." : "");
    }
    /* A node whose output shape depends on its input values has no shape a static plan can
     * size memory for: loom_model runs such graphs in stages (scheduler/model.c). */
    for (size_t i = 0; out && g && i < g->n_nodes; i++)
        if (g->nodes[i].def->flags & LOOM_OPF_VALUE_DEPENDENT) {
            *out = NULL;
            return loom_set_error(LOOM_ERR_UNSUPPORTED, "node '%s' (%s): its output shape "
                                  "depends on its input values, which a plan cannot size; run "
                                  "the model through loom_model (loom run does)",
                                  g->nodes[i].name ? g->nodes[i].name : "?",
                                  g->nodes[i].def->name);
        }
    for (;;) {
        loom_status st = plan_create_once(rt, g, options, exclude, dc, out);
        if (st != LOOM_OK)
            return st;
        /* The devices' free memory now (memory_info), then the intermediate memory of the first
         * run: a device that cannot give it is known before any run, and the nodes placed there
         * go elsewhere, as nodes it cannot run do (a strict plan is refused by the first check
         * and meets an allocation failure at its first run instead). */
        uint32_t failed = UINT32_MAX;
        int strict = (*out)->strict;
        st = plan_check_capacity(*out, &failed);
        if (st == LOOM_OK && strict)
            return LOOM_OK;
        if (st == LOOM_OK)
            st = plan_contexts_prepare(*out, &failed);
        if (st == LOOM_OK)
            return LOOM_OK;
        loom_plan_destroy(*out);
        *out = NULL;
        if (strict || failed >= rt->n_devices || failed >= 64 || (exclude >> failed) & 1 ||
            rt->devices[failed].info.host_visible)
            return st; /* host memory itself: nothing else to move to */
        runtime_message(rt, "%s: cannot allocate the plan's intermediate memory there (%s); its "
                        "nodes are placed on other devices", rt->devices[failed].id,
                        loom_last_error());
        exclude |= (uint64_t)1 << failed;
    }
}

size_t loom_plan_dependency_count(const loom_plan *plan)
{
    return plan ? plan->n_deps : 0;
}

loom_status loom_plan_dependency(const loom_plan *plan, size_t i, size_t *from, size_t *to,
                                 loom_dependency_kind *kind)
{
    if (!plan)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan_dependency: plan is NULL");
    if (i >= plan->n_deps)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "plan_dependency: dependency %zu does not exist (the plan has %u)",
                              i, plan->n_deps);
    loom_clear_error();
    uint32_t e = plan->dep_edge[i];
    if (from)
        *from = plan->dep_from[i];
    if (to)
        *to = plan->succ[e];
    if (kind)
        *kind = plan->succ_event[e] ? LOOM_DEPENDENCY_EVENT : LOOM_DEPENDENCY_HOST;
    return LOOM_OK;
}

loom_status loom_plan_make_outputs(const loom_plan *plan, loom_tensor **outputs, size_t n)
{
    if (!plan || (!outputs && n))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "make_outputs: NULL argument");
    loom_clear_error();
    if (n != plan->n_outputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "make_outputs: the graph has %u outputs, %zu asked for",
                              plan->n_outputs, n);
    for (size_t i = 0; i < n; i++) {
        const plan_tensor *t = &plan->tensors[plan->output_tensor[i]];
        loom_status st = loom_tensor_create(t->desc.dtype, t->desc.rank, t->desc.dims,
                                            &outputs[i]);
        if (st != LOOM_OK) {
            while (i-- > 0) {
                loom_tensor_destroy(outputs[i]);
                outputs[i] = NULL;
            }
            return st;
        }
    }
    return LOOM_OK;
}

loom_status loom_plan_run(loom_plan *plan, const loom_tensor *const *inputs, size_t n_inputs,
                          loom_tensor *const *outputs, size_t n_outputs, loom_run_stats *stats)
{
    loom_clear_error();
    loom_status st = plan_check_run(plan, inputs, n_inputs, outputs, n_outputs, stats);
    if (st == LOOM_OK)
        st = plan_execute(plan, inputs, outputs, stats);
    if (st == LOOM_OK)
        loom_clear_error(); /* a node re-run elsewhere is in the runtime's messages, not here */
    return st;
}
