/*
 * Plans: a checked graph turned into what the executor needs. Nodes in a topological order,
 * each placed on a device and compiled by its backend; tensors with their home (caller input,
 * caller output, constant, arena offset); successor lists and dependency counts; the static
 * memory plan (memplan.c).
 *
 * Placement here is the foundation's: the device the caller asks for, else the first device
 * that supports the node. The cost-model policies replace place_node().
 */
#include "sched_internal.h"

#include <math.h>
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

/* Runtime device index named by SPEC ("cpu:0" or "cpu"), or -1. */
static int find_device(const loom_runtime *rt, const char *spec)
{
    for (size_t i = 0; i < rt->n_devices; i++)
        if (strcmp(rt->devices[i].id, spec) == 0)
            return (int)i;
    if (!strchr(spec, ':'))
        for (size_t i = 0; i < rt->n_devices; i++)
            if (strcmp(rt->devices[i].backend->name, spec) == 0)
                return (int)i;
    return -1;
}

static int device_supports(const loom_runtime *rt, size_t d, const loom_node_desc *desc,
                           char *why, size_t why_len)
{
    const lr_device *dev = &rt->devices[d];
    why[0] = '\0';
    return dev->backend->supports(dev->backend->ctx, dev->index, desc, why, why_len);
}

/* Pick the device of one node. WANT is the requested device or -1. */
static loom_status place_node(const loom_runtime *rt, const loom_node_desc *desc, int want,
                              int strict, uint32_t *device)
{
    char why[256];
    if (want >= 0) {
        if (device_supports(rt, (size_t)want, desc, why, sizeof why)) {
            *device = (uint32_t)want;
            return LOOM_OK;
        }
        if (strict)
            return loom_set_error(LOOM_ERR_UNSUPPORTED,
                                  "node '%s' (%s) cannot run on %s (strict placement): %s",
                                  desc->name, desc->op_name, rt->devices[want].id, why);
    }
    for (size_t d = 0; d < rt->n_devices; d++)
        if (device_supports(rt, d, desc, why, sizeof why)) {
            *device = (uint32_t)d;
            return LOOM_OK;
        }
    /* Nobody can: say what each device said. */
    char msg[900];
    size_t len = (size_t)snprintf(msg, sizeof msg, "node '%s' (%s) can run on no device:",
                                  desc->name, desc->op_name);
    for (size_t d = 0; d < rt->n_devices && len < sizeof msg; d++) {
        device_supports(rt, d, desc, why, sizeof why);
        len += (size_t)snprintf(msg + len, sizeof msg - len, "%s %s: %s", d ? ";" : "",
                                rt->devices[d].id, why[0] ? why : "unsupported");
    }
    return loom_set_error(LOOM_ERR_UNSUPPORTED, "%s", msg);
}

void loom_plan_destroy(loom_plan *plan)
{
    if (!plan)
        return;
    pl_contexts_destroy(plan);
    for (uint32_t i = 0; i < plan->n_nodes; i++) {
        pl_node *n = &plan->nodes[i];
        if (n->kernel) {
            const loom_backend *be = plan->rt->devices[n->device].backend;
            be->release_kernel(be->ctx, n->kernel);
        }
        if (n->fb_kernel) {
            const loom_backend *be = plan->rt->devices[n->fb_device].backend;
            be->release_kernel(be->ctx, n->fb_kernel);
        }
        free(n->name);
    }
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
    free(plan->devs);
    free(plan->dev_slot);
    free(plan->const_block);
    pthread_mutex_destroy(&plan->ctx_lock);
    free(plan);
}

/* Tensors: one per graph value that a run touches. Returns the value -> tensor map. */
static loom_status make_tensors(loom_plan *plan, const loom_graph *g, int32_t *tensor_of)
{
    size_t const_bytes = 0;
    uint32_t n = 0;
    for (size_t v = 0; v < g->n_values; v++) {
        const lg_value *val = &g->values[v];
        tensor_of[v] = -1;
        if (val->kind == LG_VALUE_INPUT || val->n_consumers || val->output_index >= 0 ||
            val->kind == LG_VALUE_NODE)
            tensor_of[v] = (int32_t)n++;
        if (val->kind == LG_VALUE_CONSTANT && val->data_owned && tensor_of[v] >= 0)
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
        const lg_value *val = &g->values[v];
        pl_tensor *t = &plan->tensors[tensor_of[v]];
        t->desc = val->desc;
        t->bytes = (size_t)loom_tensor_desc_numel(&val->desc) * loom_dtype_size(val->desc.dtype);
        t->producer = -1;
        t->last_use = -1;
        if (val->kind == LG_VALUE_INPUT) {
            t->kind = PL_T_INPUT;
        } else if (val->kind == LG_VALUE_CONSTANT) {
            t->kind = PL_T_CONSTANT;
            if (val->data_owned) {
                /* The plan outlives the graph: keep its own copy of owned constants. */
                void *dst = (char *)plan->const_block + const_off;
                if (t->bytes)
                    memcpy(dst, val->data, t->bytes);
                t->data = dst;
                const_off += (t->bytes + 63) / 64 * 64;
            } else {
                t->data = val->data;
            }
        } else if (val->output_index >= 0) {
            t->kind = PL_T_OUTPUT;
            t->index = (uint32_t)val->output_index;
        } else {
            t->kind = PL_T_INTERMEDIATE;
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
static void prepare_fallback(loom_plan *plan, pl_node *n, const loom_node_desc *desc)
{
    const loom_runtime *rt = plan->rt;
    if (rt->devices[n->device].backend == rt->backends[0])
        return; /* already on the reference backend */
    char why[256];
    for (size_t d = 0; d < rt->n_devices; d++) {
        if (d == n->device || !device_supports(rt, d, desc, why, sizeof why))
            continue;
        const lr_device *dev = &rt->devices[d];
        char err[256];
        void *k = NULL;
        size_t scratch = 0;
        if (dev->backend->prepare(dev->backend->ctx, dev->index, desc, &k, &scratch, err,
                                  sizeof err) == LOOM_OK) {
            n->fb_device = (uint32_t)d;
            n->fb_kernel = k;
            n->fb_scratch_bytes = scratch;
            return;
        }
    }
}

static loom_status make_nodes(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                              const int32_t *tensor_of, int want, int strict, uint32_t precision,
                              const float *absmax)
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
    plan->io = malloc((n_io + 1) * sizeof *plan->io);
    loom_tensor_desc *in_d = malloc(max_in * sizeof *in_d);
    loom_tensor_desc *out_d = malloc(max_out * sizeof *out_d);
    const void **in_c = malloc(max_in * sizeof *in_c);
    float *in_m = malloc(max_in * sizeof *in_m);
    loom_status st = LOOM_OK;
    if (!plan->nodes || !plan->io || !in_d || !out_d || !in_c || !in_m) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning graph '%s'", g->name);
        goto done;
    }
    uint32_t io = 0;
    for (uint32_t p = 0; p < g->n_nodes; p++) {
        const lg_node *gn = &g->nodes[order[p]];
        pl_node *n = &plan->nodes[p];
        plan->n_nodes = p + 1; /* so that destroy releases what was made */
        loom_node_desc desc;
        lg_node_desc(g, order[p], &desc, in_d, out_d, in_c);
        desc.precision = precision;
        if (absmax) {
            for (uint32_t k = 0; k < gn->n_inputs; k++)
                in_m[k] = gn->inputs[k] == LOOM_NO_VALUE ? NAN : absmax[gn->inputs[k]];
            desc.input_absmax = in_m;
        }
        n->op = gn->def->id;
        n->op_name = gn->def->name;
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
                plan->tensors[t].last_use = (int32_t)p;
        }
        for (uint32_t k = 0; k < gn->n_outputs; k++) {
            int32_t t = tensor_of[gn->outputs[k]];
            plan->io[io++] = t;
            plan->tensors[t].producer = (int32_t)p;
        }
        st = place_node(plan->rt, &desc, want, strict, &n->device);
        if (st != LOOM_OK)
            goto done;
        const lr_device *dev = &plan->rt->devices[n->device];
        char err[512] = "";
        st = dev->backend->prepare(dev->backend->ctx, dev->index, &desc, &n->kernel,
                                   &n->scratch_bytes, err, sizeof err);
        if (st != LOOM_OK) {
            n->kernel = NULL;
            st = loom_set_error(st, "node '%s' (%s) on %s: %s", n->name, n->op_name, dev->id,
                                err[0] ? err : "prepare failed");
            goto done;
        }
        if (!strict)
            prepare_fallback(plan, n, &desc);
        for (uint32_t k = 0; k < gn->n_outputs; k++)
            plan->tensors[tensor_of[gn->outputs[k]]].device = n->device;
    }
done:
    free(in_d);
    free(out_d);
    free(in_c);
    free(in_m);
    return st;
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
        const pl_node *n = &plan->nodes[c];
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
        const pl_node *n = &plan->nodes[c];
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

/* The devices the plan uses and each one's node order. */
static loom_status make_device_orders(loom_plan *plan)
{
    size_t nd = plan->rt->n_devices;
    plan->dev_slot = malloc((nd + 1) * sizeof *plan->dev_slot);
    plan->devs = calloc(nd + 1, sizeof *plan->devs);
    if (!plan->dev_slot || !plan->devs)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning devices");
    for (size_t d = 0; d < nd; d++)
        plan->dev_slot[d] = UINT32_MAX;
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        uint32_t d = plan->nodes[p].device;
        if (plan->dev_slot[d] == UINT32_MAX) {
            plan->dev_slot[d] = plan->n_devs;
            plan->devs[plan->n_devs++].device = d;
        }
        plan->devs[plan->dev_slot[d]].n_order++;
    }
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        plan->devs[s].order = malloc((plan->devs[s].n_order + 1) * sizeof(uint32_t));
        if (!plan->devs[s].order)
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning devices");
        plan->devs[s].n_order = 0;
    }
    for (uint32_t p = 0; p < plan->n_nodes; p++) {
        pl_device_use *u = &plan->devs[plan->dev_slot[plan->nodes[p].device]];
        u->order[u->n_order++] = p;
    }
    return LOOM_OK;
}

loom_status loom_plan_create(loom_runtime *rt, const loom_graph *g,
                             const loom_plan_options *options, loom_plan **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan: out is NULL");
    *out = NULL;
    if (!rt || !g)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan: runtime or graph is NULL");
    if (g->error != LOOM_OK)
        return loom_set_error(g->error, "%s", g->error_msg);
    if (!g->checked)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "graph '%s' was not checked: call loom_graph_check first", g->name);
    int want = -1, strict = 0;
    uint32_t precision = LOOM_PRECISION_F32;
    const loom_tensor *const *cal_sets = NULL;
    size_t n_cal = 0;
    if (options) {
        if (options->struct_size < sizeof(uint32_t) + sizeof(void *))
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "plan options: struct_size %u is too small (set it to "
                                  "sizeof(loom_plan_options))", options->struct_size);
        if (options->device) {
            want = find_device(rt, options->device);
            if (want < 0) {
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
        if (options->struct_size >= offsetof(loom_plan_options, strict) + sizeof(int))
            strict = options->strict;
        if (options->struct_size >= offsetof(loom_plan_options, precision) + sizeof(uint32_t)) {
            precision = options->precision;
            if (precision > LOOM_PRECISION_INT8)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "plan options: unknown precision %u (0 f32, 1 fp16, 2 int8)",
                                      precision);
        }
        if (options->struct_size >=
            offsetof(loom_plan_options, n_calibration_sets) + sizeof(size_t)) {
            cal_sets = options->calibration_inputs;
            n_cal = options->n_calibration_sets;
        }
    }
    if (precision != LOOM_PRECISION_INT8)
        n_cal = 0;
    if (n_cal) {
        loom_status cst = pl_check_calibration(g, cal_sets, n_cal);
        if (cst != LOOM_OK)
            return cst;
    }
    loom_plan *plan = calloc(1, sizeof *plan);
    int32_t *tensor_of = malloc((g->n_values + 1) * sizeof *tensor_of);
    uint32_t *order = malloc((g->n_nodes + 1) * sizeof *order);
    if (!plan || !tensor_of || !order) {
        free(plan);
        free(tensor_of);
        free(order);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning graph '%s'",
                              g->name);
    }
    plan->rt = rt;
    plan->strict = strict;
    pthread_mutex_init(&plan->ctx_lock, NULL);
    float *absmax = NULL;
    loom_status st = lg_topo_order(g, order);
    if (st == LOOM_OK && n_cal) {
        if (!(absmax = malloc((g->n_values + 1) * sizeof *absmax)))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory calibrating graph '%s'",
                                g->name);
        else
            st = pl_calibrate(g, order, cal_sets, n_cal, absmax);
    }
    if (st == LOOM_OK)
        st = make_tensors(plan, g, tensor_of);
    if (st == LOOM_OK)
        st = make_io_names(plan, g, tensor_of);
    if (st == LOOM_OK)
        st = make_nodes(plan, g, order, tensor_of, want, strict, precision, absmax);
    if (st == LOOM_OK)
        st = make_edges(plan);
    if (st == LOOM_OK)
        st = make_device_orders(plan);
    if (st == LOOM_OK)
        st = pl_memory_plan(plan);
    free(absmax);
    free(tensor_of);
    free(order);
    if (st != LOOM_OK) {
        loom_plan_destroy(plan);
        return st;
    }
    *out = plan;
    return LOOM_OK;
}

size_t loom_plan_peak_bytes(const loom_plan *plan)
{
    return plan ? plan->peak_bytes : 0;
}

size_t loom_plan_unshared_bytes(const loom_plan *plan)
{
    return plan ? plan->unshared_bytes : 0;
}

size_t loom_plan_node_count(const loom_plan *plan)
{
    return plan ? plan->n_nodes : 0;
}

const char *loom_plan_node_name(const loom_plan *plan, size_t i)
{
    return plan && i < plan->n_nodes ? plan->nodes[i].name : NULL;
}

const char *loom_plan_node_op(const loom_plan *plan, size_t i)
{
    return plan && i < plan->n_nodes ? plan->nodes[i].op_name : NULL;
}

const char *loom_plan_node_device(const loom_plan *plan, size_t i)
{
    return plan && i < plan->n_nodes ? plan->rt->devices[plan->nodes[i].device].id : NULL;
}

loom_status loom_plan_make_outputs(const loom_plan *plan, loom_tensor **outputs, size_t n)
{
    if (!plan || (!outputs && n))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "make_outputs: NULL argument");
    if (n != plan->n_outputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "make_outputs: the graph has %u outputs, %zu asked for",
                              plan->n_outputs, n);
    for (size_t i = 0; i < n; i++) {
        const pl_tensor *t = &plan->tensors[plan->output_tensor[i]];
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
    if (!plan)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "run: plan is NULL");
    if (n_inputs != plan->n_inputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "run: the graph has %u inputs, %zu given",
                              plan->n_inputs, n_inputs);
    if (n_outputs != plan->n_outputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "run: the graph has %u outputs, %zu given", plan->n_outputs,
                              n_outputs);
    if (stats && stats->struct_size < sizeof(uint32_t) + sizeof(double))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "run: stats->struct_size %u is too small (set it to "
                              "sizeof(loom_run_stats))", stats ? stats->struct_size : 0);
    for (int side = 0; side < 2; side++) {
        size_t n = side ? n_outputs : n_inputs;
        for (size_t i = 0; i < n; i++) {
            const loom_tensor *t = side ? outputs[i] : inputs[i];
            const char *name = side ? plan->output_names[i] : plan->input_names[i];
            const pl_tensor *want =
                &plan->tensors[side ? plan->output_tensor[i] : plan->input_tensor[i]];
            if (!t)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "run: %s '%s' is NULL",
                                      side ? "output" : "input", name);
            const loom_tensor_desc *d = loom_tensor_desc_of(t);
            int same = d->dtype == want->desc.dtype && d->rank == want->desc.rank;
            for (uint32_t k = 0; same && k < d->rank; k++)
                same = d->dims[k] == want->desc.dims[k];
            if (!same) {
                char a[200], b[200];
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "run: %s '%s' is %s %s, the graph wants %s %s",
                                      side ? "output" : "input", name, loom_dtype_name(d->dtype),
                                      loom_dims_format(d->rank, d->dims, a, sizeof a),
                                      loom_dtype_name(want->desc.dtype),
                                      loom_dims_format(want->desc.rank, want->desc.dims, b,
                                                       sizeof b));
            }
            if (side) /* an output written while an input is read would corrupt the run */
                for (size_t j = 0; j < n_inputs; j++)
                    if (loom_tensor_data(inputs[j]) == loom_tensor_data(t) &&
                        loom_tensor_nbytes(t))
                        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                              "run: output '%s' shares its memory with input "
                                              "'%s'", name, plan->input_names[j]);
        }
    }
    return pl_execute(plan, inputs, outputs, stats);
}
