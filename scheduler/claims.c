/*
 * Subgraph claims (backend ABI 1.0): after the graph passes and before placement, every device
 * whose backend has claim() is offered the graph as a loom_subgraph_desc and says which
 * connected subgraphs it wants to compile into single kernels. This file builds the
 * descriptors (the whole graph, or one claimed set for prepare_subgraph), checks each claim
 * against the rules (indices in range, no overlap within one device's claims, connected,
 * convex, typed outputs) and drops the ones that break them with a message, and decides, with
 * the placement's cost rows, which claims run as one unit (plan_claims_decide). Placement
 * (placement.c) then places each kept claim as one task; make_nodes (plan.c) compiles it with
 * prepare_subgraph into one plan node.
 */
#include "sched_internal.h"

#include "cost/cost.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Round N up to a multiple of 16 bytes (the block's pieces stay aligned for any type). */
static size_t al16(size_t n)
{
    return (n + 15) / 16 * 16;
}

void plan_subgraph_free(plan_subgraph *sg)
{
    if (!sg)
        return;
    free(sg->block);
    free(sg->value_of);
    memset(sg, 0, sizeof *sg);
}

loom_status plan_subgraph_build(const loom_graph *g, const uint32_t *order, const uint32_t *pos,
                                uint32_t n, uint32_t precision, const float *absmax,
                                const char *name, plan_subgraph *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name ? name : "subgraph");
    size_t nv = g->n_values;
    uint8_t *member = calloc(g->n_nodes + 1, 1);
    int32_t *id = malloc((nv + 1) * sizeof *id);
    uint8_t *outside = calloc(nv + 1, 1); /* read by a node outside the set */
    if (!member || !id || !outside) {
        free(member);
        free(id);
        free(outside);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory describing %s", out->name);
    }
    for (uint32_t k = 0; k < n; k++)
        member[order[pos[k]]] = 1;
    for (size_t v = 0; v < nv; v++)
        id[v] = -1;
    size_t n_in_slots = 0, n_out_slots = 0;
    for (uint32_t k = 0; k < n; k++) {
        const graph_node *gn = &g->nodes[order[pos[k]]];
        n_in_slots += gn->n_inputs;
        n_out_slots += gn->n_outputs;
        for (uint32_t j = 0; j < gn->n_inputs; j++) {
            loom_value v = gn->inputs[j];
            if (v == LOOM_NO_VALUE)
                continue;
            const graph_value *val = &g->values[v];
            if (!(val->kind == GRAPH_VALUE_NODE && val->producer >= 0 && member[val->producer]))
                id[v] = -2; /* an input of the set */
        }
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        if (member[i])
            continue;
        const graph_node *gn = &g->nodes[i];
        for (uint32_t j = 0; j < gn->n_inputs; j++)
            if (gn->inputs[j] != LOOM_NO_VALUE)
                outside[gn->inputs[j]] = 1;
    }
    uint32_t n_inputs = 0, n_outputs = 0;
    for (size_t v = 0; v < nv; v++)
        if (id[v] == -2)
            id[v] = (int32_t)n_inputs++;
    uint32_t next = n_inputs;
    for (uint32_t k = 0; k < n; k++) {
        const graph_node *gn = &g->nodes[order[pos[k]]];
        for (uint32_t j = 0; j < gn->n_outputs; j++) {
            loom_value v = gn->outputs[j];
            id[v] = (int32_t)next++;
            if (g->values[v].output_index >= 0 || outside[v])
                n_outputs++;
        }
    }
    out->n_values = next;
    /* One block: nodes, per-node input id arrays and pointers, per-node tensor descs,
     * constants, absmax, then the set's inputs/constants/outputs/output ids. */
    size_t sz_nodes = al16((size_t)n * sizeof(loom_node_desc));
    size_t sz_nip = al16((size_t)n * sizeof(int32_t *));
    size_t sz_ids = al16(n_in_slots * sizeof(int32_t));
    size_t sz_ind = al16(n_in_slots * sizeof(loom_tensor_desc));
    size_t sz_outd = al16(n_out_slots * sizeof(loom_tensor_desc));
    size_t sz_inc = al16(n_in_slots * sizeof(void *));
    size_t sz_inm = absmax ? al16(n_in_slots * sizeof(float)) : 0;
    size_t sz_sin = al16(n_inputs * sizeof(loom_tensor_desc));
    size_t sz_sic = al16(n_inputs * sizeof(void *));
    size_t sz_sout = al16(n_outputs * sizeof(loom_tensor_desc));
    size_t sz_sov = al16(n_outputs * sizeof(uint32_t));
    size_t total = sz_nodes + sz_nip + sz_ids + sz_ind + sz_outd + sz_inc + sz_inm + sz_sin +
                   sz_sic + sz_sout + sz_sov + 16;
    char *b = calloc(1, total);
    out->value_of = malloc(((size_t)next + 1) * sizeof *out->value_of);
    if (!b || !out->value_of) {
        free(b);
        free(member);
        free(id);
        free(outside);
        plan_subgraph_free(out);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory describing %s", out->name);
    }
    out->block = b;
    loom_node_desc *nodes = (loom_node_desc *)b;
    b += sz_nodes;
    const int32_t **nip = (const int32_t **)(void *)b;
    b += sz_nip;
    int32_t *ids = (int32_t *)(void *)b;
    b += sz_ids;
    loom_tensor_desc *ind = (loom_tensor_desc *)(void *)b;
    b += sz_ind;
    loom_tensor_desc *outd = (loom_tensor_desc *)(void *)b;
    b += sz_outd;
    const void **inc = (const void **)(void *)b;
    b += sz_inc;
    float *inm = absmax ? (float *)(void *)b : NULL;
    b += sz_inm;
    loom_tensor_desc *sin = (loom_tensor_desc *)(void *)b;
    b += sz_sin;
    const void **sic = (const void **)(void *)b;
    b += sz_sic;
    loom_tensor_desc *sout = (loom_tensor_desc *)(void *)b;
    b += sz_sout;
    uint32_t *sov = (uint32_t *)(void *)b;
    for (size_t v = 0; v < nv; v++) {
        if (id[v] < 0)
            continue;
        out->value_of[id[v]] = (loom_value)v;
        if ((uint32_t)id[v] < n_inputs) {
            sin[id[v]] = g->values[v].desc;
            sic[id[v]] = g->values[v].kind == GRAPH_VALUE_CONSTANT ? g->values[v].data : NULL;
        }
    }
    size_t in_off = 0, out_off = 0;
    uint32_t o = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t gi = order[pos[k]];
        const graph_node *gn = &g->nodes[gi];
        graph_node_desc(g, gi, &nodes[k], &ind[in_off], &outd[out_off], &inc[in_off]);
        nodes[k].precision = precision;
        if (inm) {
            for (uint32_t j = 0; j < gn->n_inputs; j++)
                inm[in_off + j] =
                    gn->inputs[j] == LOOM_NO_VALUE ? NAN : absmax[gn->inputs[j]];
            nodes[k].input_absmax = &inm[in_off];
        }
        for (uint32_t j = 0; j < gn->n_inputs; j++)
            ids[in_off + j] = gn->inputs[j] == LOOM_NO_VALUE ? -1 : id[gn->inputs[j]];
        nip[k] = &ids[in_off];
        for (uint32_t j = 0; j < gn->n_outputs; j++) {
            loom_value v = gn->outputs[j];
            if (g->values[v].output_index >= 0 || outside[v]) {
                sout[o] = g->values[v].desc;
                sov[o++] = (uint32_t)id[v];
            }
        }
        in_off += gn->n_inputs;
        out_off += gn->n_outputs;
    }
    loom_subgraph_desc *d = &out->desc;
    d->abi_version = LOOM_ABI_VERSION;
    d->struct_size = sizeof *d;
    d->name = out->name;
    d->n_nodes = n;
    d->nodes = nodes;
    d->node_inputs = (const int32_t *const *)nip;
    d->n_inputs = n_inputs;
    d->inputs = sin;
    d->input_constants = (const void *const *)sic;
    d->n_outputs = n_outputs;
    d->outputs = sout;
    d->output_values = sov;
    free(member);
    free(id);
    free(outside);
    return LOOM_OK;
}

void plan_claim_fallback(loom_plan *plan, plan_claim *claim, const plan_subgraph *sg,
                         uint32_t *fb_device, void **fb_kernel, size_t *fb_scratch)
{
    const loom_runtime *rt = plan->rt;
    const uint32_t n = sg->desc.n_nodes;
    *fb_kernel = NULL;
    *fb_scratch = 0;
    claim->fallback[0] = '\0';
    if (rt->devices[claim->device].backend == rt->backends[0] || !n)
        return; /* already on the reference backend */
    const uint32_t max_nodes = 2 * n + 64, max_claims = n + 16;
    uint32_t *idx = calloc(max_nodes + 1, sizeof *idx);
    loom_claim *cl = calloc(max_claims + 1, sizeof *cl);
    uint8_t *seen = calloc(n + 1, 1);
    char last[256] = "";
    for (size_t d = 0; idx && cl && seen && d < rt->n_devices && !*fb_kernel; d++) {
        const runtime_device *dev = &rt->devices[d];
        const loom_backend *be = dev->backend;
        /* A fallback runs on host memory (the executor stages a device's data through it). */
        if (d == claim->device || !dev->info.host_visible || !RUNTIME_SLOT(be, claim) ||
            !RUNTIME_SLOT(be, prepare_subgraph))
            continue;
        uint32_t got = be->claim(be->ctx, dev->index, &sg->desc, idx, max_nodes, cl, max_claims);
        /* Exactly one claim, of every node once. */
        int whole = got == 1 && cl[0].node_count == n && cl[0].first_node <= max_nodes - n;
        memset(seen, 0, n);
        for (uint32_t k = 0; whole && k < n; k++) {
            uint32_t v = idx[cl[0].first_node + k];
            whole = v < n && !seen[v];
            if (whole)
                seen[v] = 1;
        }
        if (!whole) {
            snprintf(last, sizeof last, "%s does not claim it whole", dev->id);
            continue;
        }
        void *k = NULL;
        size_t scratch = 0;
        char err[256] = "";
        loom_status ps = runtime_backend_status(
            be, (int)be->prepare_subgraph(be->ctx, dev->index, &sg->desc, &k, &scratch, err,
                                          sizeof err),
            err, sizeof err);
        if (ps != LOOM_OK || !k) {
            if (ps == LOOM_OK && k == NULL)
                snprintf(err, sizeof err, "it returned no kernel");
            snprintf(last, sizeof last, "%s does not compile it: %.120s", dev->id,
                     err[0] ? err : loom_status_name(ps));
            continue;
        }
        *fb_device = (uint32_t)d;
        *fb_kernel = k;
        *fb_scratch = scratch;
        snprintf(claim->fallback, sizeof claim->fallback, "%s (its own compiled unit of the "
                 "same nodes)", dev->id);
    }
    if (!*fb_kernel)
        snprintf(claim->fallback, sizeof claim->fallback, "none (%.160s)",
                 !idx || !cl || !seen ? "out of memory"
                 : last[0]        ? last
                                  : "no other host-visible device claims subgraphs");
    free(idx);
    free(cl);
    free(seen);
}

void plan_claims_free(loom_plan *plan)
{
    for (uint32_t i = 0; i < plan->n_claims; i++) {
        free(plan->claims[i].pos);
        free(plan->claims[i].nodes_text);
        free(plan->claims[i].names);
        free(plan->claims[i].sig);
    }
    free(plan->claims);
    plan->claims = NULL;
    plan->n_claims = 0;
}

/* The label of a claim: the backend's (made printable and terminated), else the ops joined. */
static void claim_label(const loom_claim *c, const loom_graph *g, const uint32_t *order,
                        const uint32_t *pos, uint32_t n, char *out, size_t len)
{
    size_t k = 0;
    for (; k < sizeof c->label && k + 1 < len && c->label[k]; k++)
        out[k] = (unsigned char)c->label[k] >= 0x20 && (unsigned char)c->label[k] < 0x7f
                     ? c->label[k]
                     : '?';
    out[k] = '\0';
    if (k)
        return;
    size_t used = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < n && used + 1 < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "+" : "",
                                 g->nodes[order[pos[i]]].def->name);
    if (used >= len && len > 4)
        memcpy(out + len - 4, "...", 4);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Forward and backward adjacency of the graph over positions, for the rule checks. */
typedef struct claim_adj {
    uint32_t *cons_first, *cons; /* per value: the positions that read it */
    int32_t *pos_of;             /* graph node index -> position */
    uint32_t *stamp;             /* per position: last visit's stamp */
    uint32_t *queue;
    uint32_t n_stamp;
} claim_adj;

/* Check claim POS[0..N-1] (sorted, distinct, in range) against the rules; NULL when it keeps
 * them, else the rule it breaks (written into WHY). IN_SET[p] marks its members. */
static const char *check_rules(const loom_graph *g, const uint32_t *order, claim_adj *a,
                               const uint8_t *in_set, const uint32_t *pos, uint32_t n, char *why,
                               size_t why_len)
{
    /* Typed outputs. */
    for (uint32_t i = 0; i < n; i++) {
        const graph_node *gn = &g->nodes[order[pos[i]]];
        for (uint32_t j = 0; j < gn->n_outputs; j++) {
            const loom_tensor_desc *d = &g->values[gn->outputs[j]].desc;
            int ok = loom_dtype_size(d->dtype) != 0 && d->rank <= LOOM_MAX_RANK;
            for (uint32_t r = 0; ok && r < d->rank; r++)
                ok = d->dims[r] >= 0;
            if (!ok) {
                snprintf(why, why_len, "output %u of node '%s' has no known type and shape", j,
                         gn->name);
                return why;
            }
        }
    }
    /* Connected: a walk from the first member along values, staying inside the set. */
    uint32_t st = ++a->n_stamp, head = 0, tail = 0, seen = 1;
    a->queue[tail++] = pos[0];
    a->stamp[pos[0]] = st;
    while (head < tail) {
        uint32_t p = a->queue[head++];
        const graph_node *gn = &g->nodes[order[p]];
        for (uint32_t j = 0; j < gn->n_inputs; j++) {
            loom_value v = gn->inputs[j];
            if (v == LOOM_NO_VALUE || g->values[v].kind != GRAPH_VALUE_NODE)
                continue;
            uint32_t q = (uint32_t)a->pos_of[g->values[v].producer];
            if (in_set[q] && a->stamp[q] != st) {
                a->stamp[q] = st;
                a->queue[tail++] = q;
                seen++;
            }
        }
        for (uint32_t j = 0; j < gn->n_outputs; j++) {
            loom_value v = gn->outputs[j];
            for (uint32_t e = a->cons_first[v]; e < a->cons_first[v + 1]; e++) {
                uint32_t q = a->cons[e];
                if (in_set[q] && a->stamp[q] != st) {
                    a->stamp[q] = st;
                    a->queue[tail++] = q;
                    seen++;
                }
            }
        }
    }
    if (seen != n) {
        snprintf(why, why_len, "not connected (node '%s' is not linked to node '%s' inside it)",
                 g->nodes[order[pos[0]]].name, g->nodes[order[pos[n - 1]]].name);
        return why;
    }
    /* Convex: from every reader outside the set of a member's output, walk forward; reaching a
     * member means a path leaves the set and comes back. */
    st = ++a->n_stamp;
    head = tail = 0;
    for (uint32_t i = 0; i < n; i++) {
        const graph_node *gn = &g->nodes[order[pos[i]]];
        for (uint32_t j = 0; j < gn->n_outputs; j++) {
            loom_value v = gn->outputs[j];
            for (uint32_t e = a->cons_first[v]; e < a->cons_first[v + 1]; e++) {
                uint32_t q = a->cons[e];
                if (!in_set[q] && a->stamp[q] != st) {
                    a->stamp[q] = st;
                    a->queue[tail++] = q;
                }
            }
        }
    }
    while (head < tail) {
        uint32_t p = a->queue[head++];
        const graph_node *gn = &g->nodes[order[p]];
        for (uint32_t j = 0; j < gn->n_outputs; j++) {
            loom_value v = gn->outputs[j];
            for (uint32_t e = a->cons_first[v]; e < a->cons_first[v + 1]; e++) {
                uint32_t q = a->cons[e];
                if (in_set[q]) {
                    snprintf(why, why_len, "not convex (a path leaves it and comes back: node "
                             "'%s' outside it reads it and feeds node '%s' inside it)",
                             gn->name, g->nodes[order[q]].name);
                    return why;
                }
                if (a->stamp[q] != st) {
                    a->stamp[q] = st;
                    a->queue[tail++] = q;
                }
            }
        }
    }
    return NULL;
}

/* Whether the claim stage is on ($LOOM_CLAIMS=0 turns it off, for comparisons). */
static int claims_enabled(void)
{
    const char *e = getenv("LOOM_CLAIMS");
    return !(e && !strcmp(e, "0"));
}

loom_status plan_claims_collect(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                                uint32_t precision, const float *absmax, int want,
                                uint64_t exclude, char *summary, size_t summary_len)
{
    loom_runtime *rt = plan->rt;
    uint32_t nn = (uint32_t)g->n_nodes;
    snprintf(summary, summary_len, "no device claims subgraphs");
    if (!claims_enabled()) {
        snprintf(summary, summary_len, "off (LOOM_CLAIMS=0)");
        return LOOM_OK;
    }
    int any = 0;
    for (size_t d = 0; d < rt->n_devices && !any; d++) {
        const loom_backend *be = rt->devices[d].backend;
        any = RUNTIME_SLOT(be, claim) && (want < 0 || (size_t)want == d) &&
              !(d < 64 && ((exclude >> d) & 1));
    }
    if (!any || !nn)
        return LOOM_OK;
    plan_subgraph whole;
    memset(&whole, 0, sizeof whole);
    loom_status st = LOOM_OK;
    /* The whole graph: every position. */
    /* Room for every node twice and a claim per node and more: a plugin that breaks the rules
     * (overlap) is told so rather than cut short. */
    const uint32_t max_nodes = 2 * nn + 64, max_claims = nn + 16;
    uint32_t *all = malloc(((size_t)nn + 1) * sizeof *all);
    uint32_t *idx = calloc((size_t)max_nodes + 1, sizeof *idx);
    loom_claim *cl = calloc((size_t)max_claims + 1, sizeof *cl);
    uint8_t *in_set = calloc((size_t)nn + 1, 1);
    uint8_t *taken = calloc((size_t)nn + 1, 1);
    uint32_t *tmp = malloc(((size_t)max_nodes + 1) * sizeof *tmp);
    claim_adj a = {0};
    a.cons_first = calloc(g->n_values + 2, sizeof *a.cons_first);
    a.pos_of = malloc((g->n_nodes + 1) * sizeof *a.pos_of);
    a.stamp = calloc((size_t)nn + 1, sizeof *a.stamp);
    a.queue = malloc(((size_t)nn + 1) * sizeof *a.queue);
    size_t n_slots = 0;
    for (uint32_t p = 0; p < nn; p++)
        n_slots += g->nodes[order[p]].n_inputs;
    a.cons = malloc((n_slots + 1) * sizeof *a.cons);
    plan->claims = NULL;
    size_t cap = 0;
    uint32_t n_offered = 0, n_got = 0;
    if (!all || !idx || !cl || !in_set || !taken || !tmp || !a.cons_first || !a.pos_of ||
        !a.stamp || !a.queue || !a.cons) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory collecting claims");
        goto done;
    }
    for (uint32_t p = 0; p < nn; p++) {
        all[p] = p;
        a.pos_of[order[p]] = (int32_t)p;
        const graph_node *gn = &g->nodes[order[p]];
        for (uint32_t j = 0; j < gn->n_inputs; j++)
            if (gn->inputs[j] != LOOM_NO_VALUE)
                a.cons_first[gn->inputs[j] + 1]++;
    }
    for (size_t v = 0; v < g->n_values; v++)
        a.cons_first[v + 1] += a.cons_first[v];
    {
        uint32_t *fill = calloc(g->n_values + 1, sizeof *fill);
        if (!fill) {
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory collecting claims");
            goto done;
        }
        for (uint32_t p = 0; p < nn; p++) {
            const graph_node *gn = &g->nodes[order[p]];
            for (uint32_t j = 0; j < gn->n_inputs; j++) {
                loom_value v = gn->inputs[j];
                if (v != LOOM_NO_VALUE)
                    a.cons[a.cons_first[v] + fill[v]++] = p;
            }
        }
        free(fill);
    }
    st = plan_subgraph_build(g, order, all, nn, precision, absmax, "the graph", &whole);
    if (st != LOOM_OK)
        goto done;
    for (size_t d = 0; d < rt->n_devices; d++) {
        const runtime_device *dev = &rt->devices[d];
        const loom_backend *be = dev->backend;
        if (!RUNTIME_SLOT(be, claim) || (want >= 0 && (size_t)want != d) ||
            (d < 64 && ((exclude >> d) & 1)))
            continue;
        if (!RUNTIME_SLOT(be, prepare_subgraph)) {
            runtime_message(rt, "%s: the backend has claim() but no prepare_subgraph(): its "
                            "claims are ignored", dev->id);
            continue;
        }
        n_offered++;
        memset(cl, 0, ((size_t)max_claims + 1) * sizeof *cl);
        uint32_t got = be->claim(be->ctx, dev->index, &whole.desc, idx, max_nodes, cl,
                                 max_claims);
        if (got > max_claims) {
            runtime_message(rt, "%s: claim() returned %u claims, more than the %u it was given "
                            "room for; the rest are ignored", dev->id, got, max_claims);
            got = max_claims;
        }
        memset(taken, 0, nn);
        for (uint32_t k = 0; k < got; k++) {
            const loom_claim *c = &cl[k];
            char label[64], why[512] = "";
            const char *broken = NULL;
            uint32_t cnt = c->node_count;
            claim_label(c, g, order, NULL, 0, label, sizeof label); /* the backend's */
            if (!label[0])
                snprintf(label, sizeof label, "?");
            if (cnt == 0) {
                broken = "it has no nodes";
            } else if (cnt > nn) {
                snprintf(why, sizeof why, "it lists %u nodes, more than the graph's %u", cnt, nn);
                broken = why;
            } else if (c->first_node > max_nodes || cnt > max_nodes - c->first_node) {
                snprintf(why, sizeof why, "its node list (entries %u..%u) is outside the %u "
                         "entries of the index array", c->first_node,
                         c->first_node + cnt - 1, max_nodes);
                broken = why;
            } else {
                memcpy(tmp, &idx[c->first_node], cnt * sizeof *tmp);
                for (uint32_t i = 0; i < cnt && !broken; i++)
                    if (tmp[i] >= nn) {
                        snprintf(why, sizeof why, "node index %u is out of range (the graph "
                                 "has %u nodes)", tmp[i], nn);
                        broken = why;
                    }
                if (!broken) {
                    qsort(tmp, cnt, sizeof *tmp, cmp_u32);
                    claim_label(c, g, order, tmp, cnt, label, sizeof label);
                    for (uint32_t i = 1; i < cnt && !broken; i++)
                        if (tmp[i] == tmp[i - 1]) {
                            snprintf(why, sizeof why, "node '%s' is listed twice",
                                     g->nodes[order[tmp[i]]].name);
                            broken = why;
                        }
                    for (uint32_t i = 0; i < cnt && !broken; i++)
                        if (taken[tmp[i]]) {
                            snprintf(why, sizeof why, "it overlaps an earlier claim of the "
                                     "same device (node '%s')", g->nodes[order[tmp[i]]].name);
                            broken = why;
                        }
                }
                if (!broken) {
                    if (!isfinite(c->estimate_s) && !(c->estimate_s < 0)) {
                        snprintf(why, sizeof why, "its estimate %g is not a number of seconds "
                                 "(negative: none)", c->estimate_s);
                        broken = why;
                    }
                }
                if (!broken) {
                    for (uint32_t i = 0; i < cnt; i++)
                        in_set[tmp[i]] = 1;
                    broken = check_rules(g, order, &a, in_set, tmp, cnt, why, sizeof why);
                    for (uint32_t i = 0; i < cnt; i++)
                        in_set[tmp[i]] = 0;
                }
            }
            if (broken) {
                runtime_message(rt, "%s: claim %u (%s) dropped: %s", dev->id, k, label, broken);
                plan->n_claims_dropped++;
                continue;
            }
            for (uint32_t i = 0; i < cnt; i++)
                taken[tmp[i]] = 1;
            if (plan->n_claims == cap) {
                size_t nc = cap ? 2 * cap : 8;
                plan_claim *pc = realloc(plan->claims, nc * sizeof *pc);
                if (!pc) {
                    st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory collecting claims");
                    goto done;
                }
                plan->claims = pc;
                cap = nc;
            }
            plan_claim *pc = &plan->claims[plan->n_claims];
            memset(pc, 0, sizeof *pc);
            pc->device = (uint32_t)d;
            pc->index = k;
            pc->n_pos = cnt;
            pc->estimate_s = c->estimate_s;
            pc->unit_s = pc->split_s = INFINITY;
            snprintf(pc->label, sizeof pc->label, "%s", label);
            size_t text = 1;
            for (uint32_t i = 0; i < cnt; i++)
                text += strlen(g->nodes[order[tmp[i]]].name) + 2;
            pc->measured_s = -1;
            char sig[COST_SIGNATURE_MAX];
            cost_signature_unit(label, whole.desc.nodes, tmp, cnt, sig);
            pc->pos = malloc(cnt * sizeof *pc->pos);
            pc->nodes_text = malloc(text);
            pc->names = malloc(text);
            pc->sig = strdup(sig);
            if (!pc->pos || !pc->nodes_text || !pc->names || !pc->sig) {
                free(pc->pos);
                free(pc->nodes_text);
                free(pc->names);
                free(pc->sig);
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory collecting claims");
                goto done;
            }
            memcpy(pc->pos, tmp, cnt * sizeof *tmp);
            size_t used = 0;
            pc->nodes_text[0] = '\0';
            for (uint32_t i = 0; i < cnt; i++)
                used += (size_t)snprintf(pc->nodes_text + used, text - used, "%s%s",
                                         i ? ", " : "", g->nodes[order[tmp[i]]].name);
            for (uint32_t i = 0, at = 0; i < cnt; i++) {
                const char *nm = g->nodes[order[tmp[i]]].name;
                size_t len = strlen(nm) + 1;
                memcpy(pc->names + at, nm, len);
                at += (uint32_t)len;
            }
            plan->n_claims++;
            n_got++;
        }
    }
    snprintf(summary, summary_len, "%u device%s offered the graph: %u claim%s valid, %u dropped",
             n_offered, n_offered == 1 ? "" : "s", n_got, n_got == 1 ? "" : "s",
             plan->n_claims_dropped);
done:
    plan_subgraph_free(&whole);
    free(all);
    free(idx);
    free(cl);
    free(in_set);
    free(taken);
    free(tmp);
    free(a.cons_first);
    free(a.cons);
    free(a.pos_of);
    free(a.stamp);
    free(a.queue);
    return st;
}

/* Seconds of moving BYTES between runtime devices FROM and TO (0 on one device). */
static double move_s(const loom_plan *plan, uint32_t from, uint32_t to, double bytes)
{
    return from == to ? 0 : plan_link_seconds(plan, from, to, bytes);
}

void plan_claims_decide(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                        const double *raw, const double *cost, const uint8_t *user_pinned,
                        const int32_t *place_pin, uint64_t shared_out, uint32_t *unit_of)
{
    const loom_runtime *rt = plan->rt;
    uint32_t nn = (uint32_t)g->n_nodes, nd = (uint32_t)rt->n_devices;
    for (uint32_t p = 0; p < nn; p++)
        unit_of[p] = 0;
    if (!plan->n_claims)
        return;
    int32_t *best = malloc(((size_t)nn + 1) * sizeof *best);
    int32_t *pos_of = malloc((g->n_nodes + 1) * sizeof *pos_of);
    uint32_t *rank = malloc(((size_t)plan->n_claims + 1) * sizeof *rank);
    uint8_t *mine = calloc((size_t)nn + 1, 1);
    if (!best || !pos_of || !rank || !mine) {
        /* Without memory to decide, every claim is split: the plan is still right. */
        for (uint32_t c = 0; c < plan->n_claims; c++)
            snprintf(plan->claims[c].why, sizeof plan->claims[c].why,
                     "out of memory deciding claims");
        goto done;
    }
    for (uint32_t p = 0; p < nn; p++) {
        pos_of[order[p]] = (int32_t)p;
        best[p] = -1;
        /* A node placed alone runs where a pin or the requested device puts it: its split
         * is priced there, not on a device placement would not use. */
        if (place_pin && place_pin[p] >= 0 && (uint32_t)place_pin[p] < nd) {
            if (isfinite(cost[(size_t)p * nd + place_pin[p]]))
                best[p] = place_pin[p];
            continue; /* -1: it cannot run there alone, so the claim cannot be split */
        }
        for (uint32_t d = 0; d < nd; d++)
            if (isfinite(cost[(size_t)p * nd + d]) &&
                (best[p] < 0 || cost[(size_t)p * nd + d] < cost[(size_t)p * nd + best[p]]))
                best[p] = (int32_t)d;
    }
    uint32_t n_cand = 0;
    for (uint32_t c = 0; c < plan->n_claims; c++) {
        plan_claim *pc = &plan->claims[c];
        const runtime_device *dev = &rt->devices[pc->device];
        pc->state = PLAN_CLAIM_SPLIT;
        for (uint32_t i = 0; i < pc->n_pos; i++)
            mine[pc->pos[i]] = 1;
        /* The unit: the backend's estimate (plus moving graph inputs and outputs when the
         * device's memory is its own), else its nodes' figures on the device summed. */
        double unit = 0;
        if (pc->estimate_s >= 0) {
            unit = pc->estimate_s;
            if (!dev->info.host_visible)
                for (uint32_t i = 0; i < pc->n_pos; i++) {
                    const graph_node *gn = &g->nodes[order[pc->pos[i]]];
                    for (uint32_t j = 0; j < gn->n_inputs; j++)
                        if (gn->inputs[j] != LOOM_NO_VALUE &&
                            g->values[gn->inputs[j]].kind == GRAPH_VALUE_INPUT)
                            unit += plan_link_seconds(
                                plan, COST_HOST, pc->device,
                                (double)loom_tensor_desc_numel(&g->values[gn->inputs[j]].desc) *
                                    (double)loom_dtype_size(g->values[gn->inputs[j]].desc.dtype));
                    for (uint32_t j = 0; j < gn->n_outputs; j++)
                        if (g->values[gn->outputs[j]].output_index >= 0)
                            unit += plan_link_seconds(
                                plan, pc->device, COST_HOST,
                                (double)loom_tensor_desc_numel(&g->values[gn->outputs[j]].desc) *
                                    (double)loom_dtype_size(g->values[gn->outputs[j]].desc.dtype));
                }
        } else {
            for (uint32_t i = 0; i < pc->n_pos; i++)
                unit += raw[(size_t)pc->pos[i] * nd + pc->device];
        }
        /* What the unit took when it ran here before replaces the prediction of its kernel
         * (the links to move the graph's inputs and outputs stay): a backend that misjudges its
         * compiled subgraph learns, as single nodes do. */
        if (plan->model && cost_history_median(plan->model, pc->device, pc->sig,
                                               &pc->measured_s) &&
            pc->measured_s > 0) {
            double base = pc->estimate_s;
            if (!(base >= 0)) {
                base = 0;
                for (uint32_t i = 0; i < pc->n_pos; i++)
                    base += raw[(size_t)pc->pos[i] * nd + pc->device];
            }
            unit = pc->measured_s + (unit - base);
        } else {
            pc->measured_s = -1;
        }
        pc->unit_s = isfinite(unit) ? unit : INFINITY;
        /* Split: each node on its best device, plus the transfers between them inside. */
        double split = 0;
        const char *unsup = NULL;
        for (uint32_t i = 0; i < pc->n_pos && isfinite(split); i++) {
            uint32_t p = pc->pos[i];
            if (best[p] < 0) {
                split = INFINITY;
                unsup = g->nodes[order[p]].name;
                break;
            }
            split += cost[(size_t)p * nd + best[p]];
            const graph_node *gn = &g->nodes[order[p]];
            for (uint32_t j = 0; j < gn->n_inputs; j++) {
                loom_value v = gn->inputs[j];
                if (v == LOOM_NO_VALUE || g->values[v].kind != GRAPH_VALUE_NODE)
                    continue;
                uint32_t q = (uint32_t)pos_of[g->values[v].producer];
                if (mine[q] && best[q] >= 0)
                    split += move_s(plan, (uint32_t)best[q], (uint32_t)best[p],
                                    (double)loom_tensor_desc_numel(&g->values[v].desc) *
                                        (double)loom_dtype_size(g->values[v].desc.dtype));
            }
        }
        pc->split_s = split;
        const char *pinned = NULL;
        for (uint32_t i = 0; i < pc->n_pos && !pinned; i++)
            if (user_pinned && user_pinned[pc->pos[i]])
                pinned = g->nodes[order[pc->pos[i]]].name;
        for (uint32_t i = 0; i < pc->n_pos; i++)
            mine[pc->pos[i]] = 0;
        /* A device on the host CPU's own cores takes a claim only where it must run one of
         * its nodes anyway: as one unit it would compete for the cores with the host's CPU
         * device, which runs the same nodes without copies (the rule placement applies to
         * single nodes). */
        int shared = pc->device < 64 && (shared_out >> pc->device & 1);
        for (uint32_t i = 0; i < pc->n_pos && shared; i++)
            if (place_pin && place_pin[pc->pos[i]] == (int32_t)pc->device)
                shared = 0;
        if (pinned) {
            snprintf(pc->why, sizeof pc->why, "split: node '%s' is pinned by the user (pins "
                     "place single nodes)", pinned);
        } else if (shared) {
            snprintf(pc->why, sizeof pc->why, "split: %s computes on the host's CPU cores, "
                     "which the CPU device runs its nodes on without copies", dev->id);
        } else if (!isfinite(pc->unit_s)) {
            snprintf(pc->why, sizeof pc->why, "split: no prediction for the unit on %s",
                     dev->id);
        } else if (pc->unit_s > pc->split_s) {
            snprintf(pc->why, sizeof pc->why, "split: its nodes placed one by one are predicted "
                     "faster (%.3f ms vs %.3f ms as one unit on %s%s)", pc->split_s * 1e3,
                     pc->unit_s * 1e3, dev->id, pc->measured_s > 0 ? ", measured" : "");
        } else {
            rank[n_cand++] = c;
            (void)unsup;
        }
    }
    /* Candidates by the time they save (most first); the first of overlapping ones wins. */
    for (uint32_t i = 1; i < n_cand; i++)
        for (uint32_t j = i; j > 0; j--) {
            const plan_claim *x = &plan->claims[rank[j - 1]], *y = &plan->claims[rank[j]];
            double sx = isfinite(x->split_s) ? x->split_s - x->unit_s : INFINITY;
            double sy = isfinite(y->split_s) ? y->split_s - y->unit_s : INFINITY;
            if (sy > sx) {
                uint32_t t = rank[j];
                rank[j] = rank[j - 1];
                rank[j - 1] = t;
            } else {
                break;
            }
        }
    for (uint32_t i = 0; i < n_cand; i++) {
        plan_claim *pc = &plan->claims[rank[i]];
        uint32_t other = 0;
        for (uint32_t k = 0; k < pc->n_pos && !other; k++)
            other = unit_of[pc->pos[k]];
        if (other) {
            const plan_claim *w = &plan->claims[other - 1];
            pc->state = PLAN_CLAIM_LOST;
            snprintf(pc->why, sizeof pc->why, "not kept: it overlaps claim %u of %s (%s), "
                     "which saves more (%.3f ms as one unit)", w->index,
                     rt->devices[w->device].id, w->label, w->unit_s * 1e3);
            continue;
        }
        pc->state = PLAN_CLAIM_KEPT;
        const char *how = pc->measured_s > 0 ? "measured" : "predicted";
        if (isfinite(pc->split_s))
            snprintf(pc->why, sizeof pc->why, "kept as a unit on %s (%s %.3f ms vs split "
                     "%.3f ms)", rt->devices[pc->device].id, how, pc->unit_s * 1e3,
                     pc->split_s * 1e3);
        else
            snprintf(pc->why, sizeof pc->why, "kept as a unit on %s (%s %.3f ms; split "
                     "impossible: no device runs all its nodes alone)",
                     rt->devices[pc->device].id, how, pc->unit_s * 1e3);
        for (uint32_t k = 0; k < pc->n_pos; k++)
            unit_of[pc->pos[k]] = rank[i] + 1;
    }
done:
    free(best);
    free(pos_of);
    free(rank);
    free(mine);
}
