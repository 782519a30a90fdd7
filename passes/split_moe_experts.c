/*
 * split_moe_experts: a MoE node (graph/ops_moe.c) whose expert weights are constants becomes
 * placement units, so that the cost model can put experts on different devices (expert
 * parallelism):
 *
 *   NAME/router    MoERoute(router_probs)  -> routing [tokens, num_experts] (each token's
 *                                             weights in the columns of its k experts, else 0)
 *   NAME/expert<e> MoEExpert(input, routing, expert e's fc1/fc2/fc3 weights and biases) -> that
 *                                             expert's weighted contribution, input's shape
 *                                             (one per expert)
 *   NAME           Sum of the experts' contributions (the MoE's output, its name kept)
 *
 * Every output has a size known before the run, so shapes stay static; the moves of the input,
 * the routing and each contribution between devices are ordinary edges and copies of the plan.
 * Expert e's weights are slices of the MoE's constants, borrowed (not copied) like every
 * constant of a rebuild. The numbers are the fused kernel's: the same routing, each expert's
 * FFN on its own tokens; only the order of the final sum differs (expert order here, routing
 * order there).
 *
 * When: the plan asks for it (pass_ctx.split_moe: more than one device the experts could run
 * on, a pin that names the pieces, or LOOM_MOE_SPLIT=1; LOOM_MOE_SPLIT=0 never). On one device
 * the fused node is faster (one routing pass, no per-expert output to zero and sum), so
 * without a choice of devices nothing changes. Left fused as well: a MoE whose weights or
 * biases are not constants, that is not float32, or that has a single expert.
 */
#include "passes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct split_state {
    const loom_graph *g;
    uint8_t *split; /* per node: 1 when it is a MoE to split */
} split_state;

/* Whether input I of N is absent or a constant f32 with data. */
static int const_or_absent(const loom_graph *g, const graph_node *n, uint32_t i)
{
    if (i >= n->n_inputs || n->inputs[i] == LOOM_NO_VALUE)
        return 1;
    return passes_const_f32(g, n->inputs[i]) != NULL;
}

static int splittable(const loom_graph *g, const graph_node *n)
{
    if (n->def->id != LOOM_OP_MOE || n->n_outputs != 1)
        return 0;
    if (g->values[n->inputs[0]].desc.dtype != LOOM_DTYPE_F32 ||
        g->values[n->inputs[1]].desc.dtype != LOOM_DTYPE_F32)
        return 0;
    if (g->values[n->inputs[1]].desc.dims[1] < 2)
        return 0;
    for (uint32_t i = 2; i < 8; i++)
        if (!const_or_absent(g, n, i))
            return 0;
    return 1;
}

/* Name NAME if free in G, else NULL (the builder makes one up). */
static const char *free_name(loom_graph *g, const char *name)
{
    return loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL;
}

/* Expert E's slice of the MoE's constant input V ([num_experts, ...] -> [...]), borrowed from
 * the source graph's data (the rebuilt graph keeps the source alive, or the caller's buffer,
 * exactly as for any constant it borrows). LOOM_NO_VALUE for an absent input. */
static loom_value expert_slice(graph_rebuild_ctx *rc, const loom_graph *src, loom_value v,
                               int64_t e, const char *node, const char *what)
{
    if (v == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_graph *g = graph_rebuild_dst(rc);
    const graph_value *c = &src->values[v];
    int64_t dims[LOOM_MAX_RANK], per = 1;
    for (uint32_t d = 1; d < c->desc.rank; d++) {
        dims[d - 1] = c->desc.dims[d];
        per *= c->desc.dims[d];
    }
    char name[320];
    snprintf(name, sizeof name, "%s/expert%lld.%s", node, (long long)e, what);
    loom_value s = loom_constant_borrowed(g, free_name(g, name), LOOM_DTYPE_F32,
                                          c->desc.rank - 1, dims,
                                          (const float *)c->data + e * per);
    if (s != LOOM_NO_VALUE)
        g->values[s].copy_in_plan = c->data_owned || c->copy_in_plan;
    return s;
}

static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *n, loom_value *out)
{
    split_state *ss = user;
    const loom_graph *src = ss->g;
    if (!ss->split[n - src->nodes])
        return 0;
    loom_graph *g = graph_rebuild_dst(rc);
    const int64_t experts = src->values[n->inputs[1]].desc.dims[1];
    const loom_attr *ka = loom_attr_list_get(&n->attrs, "k");
    const loom_attr *na = loom_attr_list_get(&n->attrs, "normalize_routing_weights");
    const loom_attr *aa = loom_attr_list_get(&n->attrs, "activation_type");
    const int64_t k = ka ? ka->i : 1;
    const char *act = aa ? aa->s : "relu";
    char name[320];

    loom_value x = graph_rebuild_map(rc, n->inputs[0]);
    loom_value logits = graph_rebuild_map(rc, n->inputs[1]), routing = LOOM_NO_VALUE;
    loom_attr rattrs[2] = {loom_attr_int("k", k),
                           loom_attr_int("normalize_routing_weights", na ? na->i : 0)};
    snprintf(name, sizeof name, "%s/router", n->name);
    if (loom_graph_op(g, "MoERoute", name, &logits, 1, rattrs, 2, &routing, 1) != LOOM_OK)
        return -1;
    loom_value *parts = malloc((size_t)experts * sizeof *parts);
    if (!parts) {
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory splitting node '%s'", n->name);
        return -1;
    }
    static const char *const what[6] = {"fc1_weights", "fc1_bias", "fc2_weights",
                                        "fc2_bias",    "fc3_weights", "fc3_bias"};
    uint32_t n_in = 2;
    for (uint32_t i = 2; i < n->n_inputs && i < 8; i++)
        if (n->inputs[i] != LOOM_NO_VALUE)
            n_in = i + 1;
    for (int64_t e = 0; e < experts; e++) {
        loom_value in[8] = {x, routing};
        for (uint32_t i = 2; i < n_in; i++)
            in[i] = expert_slice(rc, src, n->inputs[i], e, n->name, what[i - 2]);
        loom_attr eattrs[3] = {loom_attr_int("expert", e), loom_attr_string("activation_type", act),
                               loom_attr_int("k", k)};
        snprintf(name, sizeof name, "%s/expert%lld", n->name, (long long)e);
        if (loom_graph_op(g, "MoEExpert", name, in, n_in, eattrs, 3, &parts[e], 1) != LOOM_OK) {
            free(parts);
            return -1;
        }
    }
    loom_status st = loom_graph_op(g, "Sum", n->name, parts, (size_t)experts, NULL, 0, out, 1);
    free(parts);
    return st == LOOM_OK ? 1 : -1;
}

loom_status pass_split_moe_experts(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                   char *summary, size_t summary_len)
{
    *out = NULL;
    size_t n_moe = 0;
    for (size_t i = 0; i < in->n_nodes; i++)
        n_moe += in->nodes[i].def->id == LOOM_OP_MOE;
    if (!n_moe) {
        snprintf(summary, summary_len, "no MoE");
        return LOOM_OK;
    }
    if (!ctx->split_moe) {
        snprintf(summary, summary_len, "off: %s", ctx->split_moe_why[0] ? ctx->split_moe_why
                                                                         : "not asked for");
        return LOOM_OK;
    }
    split_state ss = {.g = in, .split = calloc(in->n_nodes + 1, 1)};
    if (!ss.split)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory splitting graph '%s'",
                              in->name);
    size_t n_split = 0;
    int64_t n_experts = 0;
    for (size_t i = 0; i < in->n_nodes; i++)
        if (splittable(in, &in->nodes[i])) {
            ss.split[i] = 1;
            n_split++;
            n_experts += in->values[in->nodes[i].inputs[1]].desc.dims[1];
        }
    if (!n_split) {
        free(ss.split);
        snprintf(summary, summary_len, "%zu MoE left fused (weights not constant f32, or one "
                 "expert)", n_moe);
        return LOOM_OK;
    }
    loom_graph *g;
    loom_status st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &ss, &g);
    free(ss.split);
    if (st != LOOM_OK)
        return st;
    snprintf(summary, summary_len, "split %zu MoE into router + %lld expert nodes + sum (%s)%s",
             n_split, (long long)n_experts, ctx->split_moe_why[0] ? ctx->split_moe_why : "asked",
             n_split < n_moe ? "; others left fused" : "");
    *out = g;
    return LOOM_OK;
}
