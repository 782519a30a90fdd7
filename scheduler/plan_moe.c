/*
 * Whether a plan splits its MoE nodes into placement units (passes/split_moe_experts.c): the
 * split pays only when the experts have a choice of devices, since on one device the fused
 * kernel is faster. The question is asked of the devices themselves: one expert of the graph's
 * first splittable MoE, with its real shapes, is offered to the supports() of every device the
 * plan may use.
 */
#include "sched_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether PIN ("node:NAME=DEV" or "OP=DEV") names a piece of a split MoE. */
static int pin_names_piece(const char *pin)
{
    return strncmp(pin, "MoEExpert=", 10) == 0 || strncmp(pin, "MoERoute=", 9) == 0 ||
           (strncmp(pin, "node:", 5) == 0 &&
            (strstr(pin, "/expert") != NULL || strstr(pin, "/router") != NULL));
}

/* A one-node graph holding expert 0 of MoE node N of G, its weights as inputs (a backend's
 * supports() sees the shapes and attributes; NULL when it cannot be built). */
static loom_graph *probe_graph(const loom_graph *g, const graph_node *n)
{
    loom_graph *p = loom_graph_create("moe-probe");
    if (!p)
        return NULL;
    static const char *const names[8] = {"x",   "routing", "fc1_w", "fc1_b",
                                         "fc2_w", "fc2_b", "fc3_w", "fc3_b"};
    loom_value in[8];
    uint32_t n_in = 0;
    for (uint32_t i = 0; i < n->n_inputs && i < 8; i++) {
        in[i] = LOOM_NO_VALUE;
        if (n->inputs[i] == LOOM_NO_VALUE)
            continue;
        loom_tensor_desc d = g->values[n->inputs[i]].desc;
        if (i >= 2) { /* [num_experts, ...] -> one expert's [...] */
            for (uint32_t k = 1; k < d.rank; k++)
                d.dims[k - 1] = d.dims[k];
            d.rank--;
        }
        in[i] = loom_input(p, names[i], d.dtype, d.rank, d.dims);
        n_in = i + 1;
    }
    const loom_attr *ka = loom_attr_list_get(&n->attrs, "k");
    const loom_attr *aa = loom_attr_list_get(&n->attrs, "activation_type");
    loom_attr attrs[3] = {loom_attr_int("expert", 0),
                          loom_attr_string("activation_type", aa ? aa->s : "relu"),
                          loom_attr_int("k", ka ? ka->i : 1)};
    loom_value y;
    if (loom_graph_op(p, "MoEExpert", "expert", in, n_in, attrs, 3, &y, 1) != LOOM_OK ||
        loom_output(p, y, "y") != LOOM_OK || loom_graph_check(p) != LOOM_OK) {
        loom_graph_destroy(p);
        return NULL;
    }
    return p;
}

void plan_moe_split_decide(const loom_runtime *rt, const loom_graph *g, uint32_t precision,
                           int want, uint64_t exclude, const char *const *pins, size_t n_pins,
                           int *split, char *why, size_t why_len)
{
    *split = 0;
    why[0] = '\0';
    const graph_node *moe = NULL;
    for (size_t i = 0; i < g->n_nodes && !moe; i++)
        if (g->nodes[i].def->id == LOOM_OP_MOE)
            moe = &g->nodes[i];
    if (!moe)
        return;
    const char *env = getenv("LOOM_MOE_SPLIT");
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) {
        *split = env[0] == '1';
        snprintf(why, why_len, "LOOM_MOE_SPLIT=%s", env);
        return;
    }
    for (size_t i = 0; i < n_pins; i++)
        if (pins[i] && pin_names_piece(pins[i])) {
            *split = 1;
            snprintf(why, why_len, "pin '%.60s' names its pieces", pins[i]);
            return;
        }
    loom_graph *p = probe_graph(g, moe);
    if (!p) {
        snprintf(why, why_len, "its experts cannot be described on their own");
        return;
    }
    loom_node_desc desc;
    loom_tensor_desc ins[8], outs[1];
    const void *consts[8];
    graph_node_desc(p, 0, &desc, ins, outs, consts);
    desc.precision = precision; /* as placement will describe it */
    char list[96] = "", reason[256];
    size_t n_ok = 0, at = 0;
    for (size_t d = 0; d < rt->n_devices; d++) {
        const runtime_device *dev = &rt->devices[d];
        if ((want >= 0 && (size_t)want != d) || (d < 64 && ((exclude >> d) & 1)))
            continue;
        /* A device on the host's own cores competes with the CPU for them (placement keeps it
         * out of automatic placement): no second device for the experts. */
        if (dev->info.shares_host_cpu && want < 0)
            continue;
        reason[0] = '\0';
        if (!dev->backend->supports(dev->backend->ctx, dev->index, &desc, reason, sizeof reason))
            continue;
        n_ok++;
        if (at < sizeof list)
            at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", at ? ", " : "", dev->id);
    }
    loom_graph_destroy(p);
    *split = n_ok >= 2;
    if (*split)
        snprintf(why, why_len, "experts can run on %s", list);
    else
        snprintf(why, why_len, "one device can run its experts (%s)", n_ok ? list : "none");
}
