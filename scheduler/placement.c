/*
 * From a graph to a placement problem and back: what each device would cost for each node
 * (supports() first, then the cost model), the transfers between them, pins, the requested
 * device, and the policy's answer with its reasons. The search itself lives in place/, on the
 * same abstract problem that `loom sim` reads from JSON.
 */
#include "sched_internal.h"

#include "cost/cost.h"
#include "place/place.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int plan_find_device(const loom_runtime *rt, const char *spec)
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

double plan_free_memory(const runtime_device *dev)
{
    const loom_backend *be = dev->backend;
    loom_status (*info)(void *, uint32_t, uint64_t *, uint64_t *) = RUNTIME_SLOT(be, memory_info);
    uint64_t free_b = 0, total_b = 0;
    if (info && info(be->ctx, dev->index, &free_b, &total_b) == LOOM_OK)
        return (double)free_b;
    return (double)dev->info.memory_bytes;
}

double plan_link_seconds(const loom_plan *plan, uint32_t from, uint32_t to, double bytes)
{
    double lat = 0, bw = INFINITY;
    if (plan->model)
        cost_link(plan->model, from, to, &lat, &bw);
    return lat + (bw > 0 && isfinite(bw) ? bytes / bw : 0);
}

/* Bytes of a tensor of DESC. */
static double desc_bytes(const loom_tensor_desc *desc)
{
    return (double)loom_tensor_desc_numel(desc) * (double)loom_dtype_size(desc->dtype);
}

/* The device whose column of COST (N rows of ND) has the least finite sum, or -1 when every
 * device has a node it cannot run; *SUM gets that sum: every node on that device, in turn. */
static int cheapest_device(const double *cost, uint32_t n, uint32_t nd, double *sum)
{
    int best = -1;
    for (uint32_t d = 0; d < nd; d++) {
        double t = 0;
        for (uint32_t p = 0; p < n && isfinite(t); p++)
            t += cost[(size_t)p * nd + d];
        if (isfinite(t) && (best < 0 || t < *sum)) {
            best = (int)d;
            *sum = t;
        }
    }
    return best;
}

/* A parsed pin: the device of every node of an op type, or of one node. */
typedef struct pin {
    const char *op;     /* op name, or NULL */
    const char *node;   /* node name, or NULL */
    size_t len;         /* length of the op/node name inside the pin string */
    int device;
} pin;

static loom_status parse_pins(const loom_runtime *rt, const loom_graph *g,
                              const char *const *pins, size_t n, pin *out)
{
    for (size_t i = 0; i < n; i++) {
        const char *s = pins[i];
        const char *eq = s ? strrchr(s, '=') : NULL;
        if (!s || !eq || eq == s || !eq[1])
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "pin '%s': expected OP=DEVICE or node:NAME=DEVICE",
                                  s ? s : "(null)");
        pin *p = &out[i];
        memset(p, 0, sizeof *p);
        p->device = plan_find_device(rt, eq + 1);
        if (p->device < 0)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "pin '%s': unknown device '%s'", s,
                                  eq + 1);
        if (!strncmp(s, "node:", 5)) {
            p->node = s + 5;
            p->len = (size_t)(eq - p->node);
            int found = 0;
            for (size_t k = 0; k < g->n_nodes && !found; k++)
                found = strlen(g->nodes[k].name) == p->len &&
                        !strncmp(g->nodes[k].name, p->node, p->len);
            if (!found)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "pin '%s': the graph has no node named '%.*s'", s,
                                      (int)p->len, p->node);
        } else {
            p->op = s;
            p->len = (size_t)(eq - s);
            char name[64];
            if (p->len >= sizeof name)
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "pin '%s': op name too long", s);
            memcpy(name, s, p->len);
            name[p->len] = '\0';
            if (!loom_op_find(name))
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "pin '%s': unknown op '%s' (ops are ONNX names, e.g. "
                                      "Conv; use node:NAME=DEVICE for one node)", s, name);
        }
    }
    return LOOM_OK;
}

/* The device pinned for node GN (a node pin wins over an op pin), or -1. */
static int pinned_device(const pin *pins, size_t n, const graph_node *gn)
{
    int dev = -1;
    for (size_t i = 0; i < n; i++) {
        if (pins[i].node && strlen(gn->name) == pins[i].len &&
            !strncmp(gn->name, pins[i].node, pins[i].len))
            return pins[i].device;
        if (pins[i].op && strlen(gn->def->name) == pins[i].len &&
            !strncmp(gn->def->name, pins[i].op, pins[i].len))
            dev = pins[i].device;
    }
    return dev;
}

/* "node 'x' (Op) can run on no device: cpu:0: reason; ..." */
static loom_status no_device_error(const loom_runtime *rt, const loom_node_desc *desc)
{
    char msg[900], why[256];
    size_t len = (size_t)snprintf(msg, sizeof msg, "node '%s' (%s) can run on no device:",
                                  desc->name, desc->op_name);
    for (size_t d = 0; d < rt->n_devices && len < sizeof msg; d++) {
        const runtime_device *dev = &rt->devices[d];
        why[0] = '\0';
        dev->backend->supports(dev->backend->ctx, dev->index, desc, why, sizeof why);
        len += (size_t)snprintf(msg + len, sizeof msg - len, "%s %s: %s", d ? ";" : "", dev->id,
                                why[0] ? why : "unsupported");
    }
    return loom_set_error(LOOM_ERR_UNSUPPORTED, "%s", msg);
}

static uint8_t decided_of(uint8_t reason)
{
    switch (reason) {
    case PLACE_REASON_PINNED: return PLAN_DECIDED_PINNED;
    case PLACE_REASON_ONLY_DEVICE: return PLAN_DECIDED_ONLY_DEVICE;
    case PLACE_REASON_SEARCH: return PLAN_DECIDED_SEARCH;
    case PLACE_REASON_ENERGY: return PLAN_DECIDED_ENERGY;
    case PLACE_REASON_CAPACITY: return PLAN_DECIDED_CAPACITY;
    case PLACE_REASON_FIRST: return PLAN_DECIDED_FIRST;
    default: return PLAN_DECIDED_EFT;
    }
}

typedef struct scratch {
    loom_tensor_desc *in_d, *out_d;
    const void **in_c;
    float *in_m;
    double *place_cost, *bw, *lat, *out_bytes, *cap, *power, *ebytes;
    int32_t *place_pin, *pos_of;
    uint32_t *efrom, *eto, *mark;
    pin *pins;
    uint8_t *excluded;
    /* Subgraph claims: each node's figure on every device whether supported or not, user
     * pins, nodes no device runs alone, the kept claim of each node (plan_claims_decide); and
     * the tasks when kept claims are contracted (tk_of: node -> task; members in CSR). */
    double *raw;
    uint8_t *user_pinned, *nosup;
    uint32_t *unit_of, *tk_of, *tk_first, *tk_mem;
    double *t_cost, *t_pcost, *t_out, *t_pred;
    int32_t *t_pin;
    uint8_t *t_excl, *t_dec;
    uint32_t *t_dev;
} scratch;

static void scratch_free(scratch *s)
{
    free(s->in_d);
    free(s->out_d);
    free(s->in_c);
    free(s->in_m);
    free(s->place_cost);
    free(s->bw);
    free(s->lat);
    free(s->out_bytes);
    free(s->cap);
    free(s->power);
    free(s->ebytes);
    free(s->place_pin);
    free(s->pos_of);
    free(s->efrom);
    free(s->eto);
    free(s->mark);
    free(s->pins);
    free(s->excluded);
    free(s->raw);
    free(s->user_pinned);
    free(s->nosup);
    free(s->unit_of);
    free(s->tk_of);
    free(s->tk_first);
    free(s->tk_mem);
    free(s->t_cost);
    free(s->t_pcost);
    free(s->t_out);
    free(s->t_pred);
    free(s->t_pin);
    free(s->t_excl);
    free(s->t_dec);
    free(s->t_dev);
}

static void best_single(loom_plan *plan, uint32_t nn, uint32_t nd);

/* Every node has one candidate device (pinned, requested, or the only one that can): the
 * schedule each worker follows in plan order, as early as inputs and devices allow. */
static loom_status forced_schedule(loom_plan *plan, const place_problem *pr, const double *dur,
                                   const int32_t *pin, const uint8_t *excluded, uint32_t *device,
                                   double *pred, uint8_t *decided)
{
    uint32_t nn = pr->n_tasks, nd = pr->n_devices;
    double *dev_free = calloc(nd + 1, sizeof *dev_free);
    if (!dev_free)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory placing the graph");
    for (uint32_t p = 0; p < nn; p++) {
        uint32_t d = 0;
        if (pin[p] >= 0)
            d = (uint32_t)pin[p];
        else
            while (d + 1 < nd && !isfinite(pr->cost[(size_t)p * nd + d]))
                d++;
        device[p] = d;
        pred[p] = 0; /* start: raised by the edges below */
        if (!decided[p])
            decided[p] = excluded[p] ? PLAN_DECIDED_SHARED_CPU : PLAN_DECIDED_ONLY_DEVICE;
    }
    /* Edges are grouped by consumer in topological order (built that way in plan_place). */
    uint32_t e = 0;
    double makespan = 0, energy = 0;
    for (uint32_t p = 0; p < nn; p++) {
        double ready = 0;
        for (; e < pr->n_edges && pr->edge_to[e] == p; e++) {
            uint32_t q = pr->edge_from[e];
            double t = pred[nn + q];
            if (device[q] != device[p]) {
                size_t l = (size_t)device[q] * nd + device[p];
                t += pr->latency[l] + (isfinite(pr->bandwidth[l]) && pr->bandwidth[l] > 0
                                           ? pr->edge_bytes[e] / pr->bandwidth[l]
                                           : 0);
            }
            if (t > ready)
                ready = t;
        }
        double c = dur[(size_t)p * nd + device[p]];
        double start = fmax(ready, dev_free[device[p]]);
        pred[p] = start;
        pred[nn + p] = start + c;
        pred[2 * (size_t)nn + p] = c;
        dev_free[device[p]] = start + c;
        makespan = fmax(makespan, start + c);
        energy += c * (pr->power ? pr->power[device[p]] : 1.0);
    }
    free(dev_free);
    plan->pred_s = makespan;
    plan->heft_s = makespan; /* any list policy finds this same schedule */
    plan->energy_j = energy;
    return LOOM_OK;
}

/* Whether a claim of runtime device DEV covers placement position P. */
static int claimed_by(const loom_plan *plan, uint32_t dev, uint32_t p)
{
    for (uint32_t c = 0; c < plan->n_claims; c++)
        for (uint32_t i = 0; plan->claims[c].device == dev && i < plan->claims[c].n_pos; i++)
            if (plan->claims[c].pos[i] == p)
                return 1;
    return 0;
}

/* Kept claims (S->unit_of, from plan_claims_decide) become one task each: the tasks in a
 * topological order (among ready tasks, the one holding the earliest position first, so that
 * without claims it is the positions' order), their cost rows (a kept claim: its unit's figure
 * on its device, nothing elsewhere), pins, output bytes and decisions, and the edges between
 * tasks grouped by consumer. Fills S->tk_* and S->t_*; *N_TASKS, *N_EDGES. */
static loom_status contract_claims(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                                   scratch *s, const uint8_t *decided, uint32_t *n_tasks,
                                   uint32_t *n_edges)
{
    uint32_t nn = (uint32_t)g->n_nodes, nd = plan->n_rt_devices;
    uint32_t *prov = malloc(((size_t)nn + 1) * sizeof *prov);
    uint32_t *unit_prov = calloc((size_t)plan->n_claims + 1, sizeof *unit_prov);
    uint32_t *indeg = calloc((size_t)nn + 1, sizeof *indeg);
    uint32_t *ofirst = calloc((size_t)nn + 2, sizeof *ofirst);
    uint32_t *heap = malloc(((size_t)nn + 1) * sizeof *heap);
    uint32_t *rank = malloc(((size_t)nn + 1) * sizeof *rank);
    size_t n_slots = 0;
    for (uint32_t p = 0; p < nn; p++)
        n_slots += g->nodes[order[p]].n_inputs;
    uint32_t *oadj = malloc((n_slots + 1) * sizeof *oadj);
    s->tk_of = malloc(((size_t)nn + 1) * sizeof *s->tk_of);
    s->tk_first = calloc((size_t)nn + 2, sizeof *s->tk_first);
    s->tk_mem = malloc(((size_t)nn + 1) * sizeof *s->tk_mem);
    s->t_cost = malloc(((size_t)nn * nd + 1) * sizeof *s->t_cost);
    s->t_pcost = malloc(((size_t)nn * nd + 1) * sizeof *s->t_pcost);
    s->t_out = calloc((size_t)nn + 1, sizeof *s->t_out);
    s->t_pred = malloc((3 * (size_t)nn + 1) * sizeof *s->t_pred);
    s->t_pin = malloc(((size_t)nn + 1) * sizeof *s->t_pin);
    s->t_excl = calloc((size_t)nn + 1, 1);
    s->t_dec = calloc((size_t)nn + 1, 1);
    s->t_dev = calloc((size_t)nn + 1, sizeof *s->t_dev);
    loom_status st = LOOM_OK;
    if (!prov || !unit_prov || !indeg || !ofirst || !heap || !rank || !oadj || !s->tk_of ||
        !s->tk_first || !s->tk_mem || !s->t_cost || !s->t_pcost || !s->t_out || !s->t_pred ||
        !s->t_pin || !s->t_excl || !s->t_dec || !s->t_dev) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory placing claims");
        goto done;
    }
    uint32_t np = 0;
    for (uint32_t p = 0; p < nn; p++) {
        uint32_t u = s->unit_of[p];
        if (u) {
            if (!unit_prov[u - 1])
                unit_prov[u - 1] = ++np;
            prov[p] = unit_prov[u - 1] - 1;
        } else {
            prov[p] = np++;
        }
    }
    /* Edges between provisional tasks (duplicates kept: counted and removed alike). */
    for (int fill = 0; fill < 2; fill++) {
        for (uint32_t p = 0; p < nn; p++) {
            const graph_node *gn = &g->nodes[order[p]];
            for (uint32_t k = 0; k < gn->n_inputs; k++) {
                loom_value v = gn->inputs[k];
                if (v == LOOM_NO_VALUE || g->values[v].kind != GRAPH_VALUE_NODE)
                    continue;
                uint32_t a = prov[s->pos_of[g->values[v].producer]], b = prov[p];
                if (a == b)
                    continue;
                if (!fill) {
                    ofirst[a + 2]++;
                    indeg[b]++;
                } else {
                    oadj[ofirst[a + 1]++] = b;
                }
            }
        }
        if (!fill)
            for (uint32_t t = 0; t < np; t++)
                ofirst[t + 2] += ofirst[t + 1];
    }
    /* Kahn's algorithm with a min-heap on the provisional index. */
    uint32_t hn = 0, nr = 0;
    for (uint32_t t = 0; t < np; t++)
        if (!indeg[t])
            heap[hn++] = t; /* ascending: already a heap */
    while (hn) {
        uint32_t t = heap[0];
        heap[0] = heap[--hn];
        for (uint32_t i = 0;;) {
            uint32_t l = 2 * i + 1, m = i;
            if (l < hn && heap[l] < heap[m])
                m = l;
            if (l + 1 < hn && heap[l + 1] < heap[m])
                m = l + 1;
            if (m == i)
                break;
            uint32_t x = heap[i];
            heap[i] = heap[m];
            heap[m] = x;
            i = m;
        }
        rank[t] = nr++;
        for (uint32_t e = ofirst[t]; e < ofirst[t + 1]; e++)
            if (!--indeg[oadj[e]]) {
                uint32_t i = hn++;
                heap[i] = oadj[e];
                while (i && heap[(i - 1) / 2] > heap[i]) {
                    uint32_t x = heap[i];
                    heap[i] = heap[(i - 1) / 2];
                    heap[(i - 1) / 2] = x;
                    i = (i - 1) / 2;
                }
            }
    }
    if (nr != np) {
        st = loom_set_error(LOOM_ERR_INTERNAL, "placing claims: the claimed units make a cycle");
        goto done;
    }
    for (uint32_t p = 0; p < nn; p++) {
        s->tk_of[p] = rank[prov[p]];
        s->tk_first[s->tk_of[p] + 2]++;
    }
    for (uint32_t t = 0; t < np; t++)
        s->tk_first[t + 2] += s->tk_first[t + 1];
    for (uint32_t p = 0; p < nn; p++)
        s->tk_mem[s->tk_first[s->tk_of[p] + 1]++] = p;
    for (uint32_t t = 0; t < np; t++) {
        uint32_t p0 = s->tk_mem[s->tk_first[t]];
        double *cr = &s->t_cost[(size_t)t * nd], *pr = &s->t_pcost[(size_t)t * nd];
        for (uint32_t e = s->tk_first[t]; e < s->tk_first[t + 1]; e++)
            s->t_out[t] += s->out_bytes[s->tk_mem[e]];
        if (s->unit_of[p0]) {
            const plan_claim *c = &plan->claims[s->unit_of[p0] - 1];
            for (uint32_t d = 0; d < nd; d++)
                cr[d] = pr[d] = d == c->device ? c->unit_s : INFINITY;
            s->t_pin[t] = (int32_t)c->device;
            s->t_dec[t] = PLAN_DECIDED_CLAIM;
        } else {
            memcpy(cr, &plan->cost_s[(size_t)p0 * nd], nd * sizeof *cr);
            memcpy(pr, &s->place_cost[(size_t)p0 * nd], nd * sizeof *pr);
            s->t_pin[t] = s->place_pin[p0];
            s->t_excl[t] = s->excluded[p0];
            s->t_dec[t] = decided[p0];
        }
    }
    /* Edges between tasks, grouped by consumer in task order, bytes summed per pair. */
    uint32_t ne = 0;
    for (uint32_t t = 0; t < np; t++)
        s->mark[t] = UINT32_MAX;
    for (uint32_t c = 0; c < np; c++)
        for (uint32_t m = s->tk_first[c]; m < s->tk_first[c + 1]; m++) {
            const graph_node *gn = &g->nodes[order[s->tk_mem[m]]];
            for (uint32_t k = 0; k < gn->n_inputs; k++) {
                loom_value v = gn->inputs[k];
                if (v == LOOM_NO_VALUE || g->values[v].kind != GRAPH_VALUE_NODE)
                    continue;
                uint32_t t = s->tk_of[s->pos_of[g->values[v].producer]];
                if (t == c)
                    continue;
                double bytes = desc_bytes(&g->values[v].desc);
                if (s->mark[t] == c) {
                    for (uint32_t e = ne; e-- > 0;)
                        if (s->efrom[e] == t && s->eto[e] == c) {
                            s->ebytes[e] += bytes;
                            break;
                        }
                    continue;
                }
                s->mark[t] = c;
                s->efrom[ne] = t;
                s->eto[ne] = c;
                s->ebytes[ne++] = bytes;
            }
        }
    *n_tasks = np;
    *n_edges = ne;
done:
    free(prov);
    free(unit_prov);
    free(indeg);
    free(ofirst);
    free(heap);
    free(rank);
    free(oadj);
    return st;
}

loom_status plan_place(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                     const int32_t *tensor_of, uint32_t precision, const float *absmax,
                     const plan_place_opts *o, uint32_t *device, double *pred, uint8_t *decided,
                     int16_t *pin_ignored)
{
    (void)tensor_of;
    loom_runtime *rt = plan->rt;
    uint32_t nn = (uint32_t)g->n_nodes, nd = (uint32_t)rt->n_devices;
    uint64_t t0 = loom_now_ns();
    int policy = PLACE_POLICY_DEFAULT;
    if (o->policy && (policy = place_policy_from_name(o->policy)) < 0)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "unknown placement policy '%s' (default, heft, peft, exact, first)",
                              o->policy);
    size_t max_in = 1, max_out = 1, n_edges = 0;
    for (uint32_t i = 0; i < nn; i++) {
        if (g->nodes[i].n_inputs > max_in)
            max_in = g->nodes[i].n_inputs;
        if (g->nodes[i].n_outputs > max_out)
            max_out = g->nodes[i].n_outputs;
        n_edges += g->nodes[i].n_inputs;
    }
    scratch s = {0};
    s.in_d = malloc(max_in * sizeof *s.in_d);
    s.out_d = malloc(max_out * sizeof *s.out_d);
    s.in_c = malloc(max_in * sizeof *s.in_c);
    s.in_m = malloc(max_in * sizeof *s.in_m);
    s.place_cost = malloc(((size_t)nn * nd + 1) * sizeof *s.place_cost);
    s.bw = malloc(((size_t)nd * nd + 1) * sizeof *s.bw);
    s.lat = malloc(((size_t)nd * nd + 1) * sizeof *s.lat);
    s.out_bytes = calloc(nn + 1, sizeof *s.out_bytes);
    s.cap = calloc(nd + 1, sizeof *s.cap);
    s.power = calloc(nd + 1, sizeof *s.power);
    s.ebytes = malloc((n_edges + 1) * sizeof *s.ebytes);
    s.efrom = malloc((n_edges + 1) * sizeof *s.efrom);
    s.eto = malloc((n_edges + 1) * sizeof *s.eto);
    s.mark = malloc((nn + 1) * sizeof *s.mark);
    s.place_pin = malloc((nn + 1) * sizeof *s.place_pin);
    s.pos_of = malloc((nn + 1) * sizeof *s.pos_of);
    s.pins = calloc(o->n_pins + 1, sizeof *s.pins);
    s.excluded = calloc(nn + 1, 1);
    plan->cost_s = malloc(((size_t)nn * nd + 1) * sizeof *plan->cost_s);
    plan->n_rt_devices = nd;
    loom_status st = LOOM_OK;
    place_result res = {0};
    int choice = 0; /* some node has more than one candidate device */
    /* The tasks placement places: the nodes, or with kept claims each claim as one (below). */
    uint32_t nt = nn, ne = 0;
    uint32_t *tdev = device;
    double *tpred = pred, *tcost = NULL, *pcost = NULL, *tout = NULL;
    int32_t *tpin = NULL;
    uint8_t *tdec = decided, *texcl = NULL;
    if (plan->n_claims) {
        s.raw = malloc(((size_t)nn * nd + 1) * sizeof *s.raw);
        s.user_pinned = calloc(nn + 1, 1);
        s.nosup = calloc(nn + 1, 1);
        s.unit_of = calloc(nn + 1, sizeof *s.unit_of);
    }
    if (!s.in_d || !s.out_d || !s.in_c || !s.in_m || !s.place_cost || !s.bw || !s.lat ||
        !s.out_bytes || !s.cap || !s.power || !s.ebytes || !s.efrom || !s.eto || !s.mark ||
        !s.place_pin || !s.pos_of || !s.pins || !s.excluded || !plan->cost_s ||
        (plan->n_claims && (!s.raw || !s.user_pinned || !s.nosup || !s.unit_of))) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory placing graph '%s'", g->name);
        goto done;
    }
    if ((st = parse_pins(rt, g, o->pins, o->n_pins, s.pins)) != LOOM_OK)
        goto done;
    if (!plan->model && (st = cost_model_open(rt, o->cache_dir, &plan->model)) != LOOM_OK)
        goto done;
    /* Is there a cpu-backend device that does not share cores with another one? Devices on
     * the host's cores (PoCL) then stay out of automatic placement: running both at once
     * would only make them compete for the same cores. */
    int host_cpu = -1;
    for (uint32_t d = 0; d < nd && host_cpu < 0; d++) {
        const cost_profile *pf = cost_profile_of(plan->model, d);
        if (rt->devices[d].info.kind == LOOM_DEVICE_CPU && !pf->shares_host_cpu)
            host_cpu = (int)d;
    }
    for (uint32_t p = 0; p < nn; p++)
        s.pos_of[order[p]] = (int32_t)p;
    for (uint32_t p = 0; p < nn; p++) {
        const graph_node *gn = &g->nodes[order[p]];
        loom_node_desc desc;
        graph_node_desc(g, order[p], &desc, s.in_d, s.out_d, s.in_c);
        desc.precision = precision;
        if (absmax) {
            for (uint32_t k = 0; k < gn->n_inputs; k++)
                s.in_m[k] = gn->inputs[k] == LOOM_NO_VALUE ? NAN : absmax[gn->inputs[k]];
            desc.input_absmax = s.in_m;
        }
        loom_op_cost oc = {0};
        if (gn->def->cost)
            gn->def->cost(&desc, &oc);
        for (uint32_t k = 0; k < gn->n_outputs; k++)
            s.out_bytes[p] += desc_bytes(&s.out_d[k]);
        uint32_t n_sup = 0, last_sup = 0;
        char why[256];
        double *row = &plan->cost_s[(size_t)p * nd];
        /* Every device's figure at once (one signature, one history lookup), then the devices
         * that cannot run the node are struck out. */
        cost_node_seconds_all(plan->model, &desc, &oc, row);
        for (uint32_t d = 0; d < nd; d++) {
            const runtime_device *dev = &rt->devices[d];
            double c = row[d];
            if (!(c >= 0) || !isfinite(c))
                c = 1.0; /* a model that cannot say: expensive, but possible */
            if (!dev->info.host_visible) {
                /* Graph inputs arrive from the host, graph outputs leave for it. */
                for (uint32_t k = 0; k < gn->n_inputs; k++)
                    if (gn->inputs[k] != LOOM_NO_VALUE &&
                        g->values[gn->inputs[k]].kind == GRAPH_VALUE_INPUT)
                        c += plan_link_seconds(plan, COST_HOST, d, desc_bytes(&s.in_d[k]));
                for (uint32_t k = 0; k < gn->n_outputs; k++)
                    if (g->values[gn->outputs[k]].output_index >= 0)
                        c += plan_link_seconds(plan, d, COST_HOST, desc_bytes(&s.out_d[k]));
            }
            if (s.raw) /* claims: the figure of a node its device need not run alone */
                s.raw[(size_t)p * nd + d] = c;
            why[0] = '\0';
            if ((d < 64 && ((o->exclude >> d) & 1)) ||
                !dev->backend->supports(dev->backend->ctx, dev->index, &desc, why, sizeof why)) {
                row[d] = INFINITY;
                continue;
            }
            n_sup++;
            last_sup = d;
            row[d] = c;
        }
        int pinned = pinned_device(s.pins, o->n_pins, gn);
        if (s.user_pinned)
            s.user_pinned[p] = pinned >= 0;
        if (!n_sup && s.nosup) {
            /* No device runs it alone: a claim may still run it (decided below). */
            s.nosup[p] = 1;
            decided[p] = 0;
            s.place_pin[p] = -1;
            for (uint32_t d = 0; d < nd; d++)
                s.place_cost[(size_t)p * nd + d] = INFINITY;
            continue;
        }
        if (!n_sup) {
            st = no_device_error(rt, &desc);
            goto done;
        }
        decided[p] = 0;
        int32_t pd = -1;
        if (pinned >= 0) {
            if (isfinite(row[pinned])) {
                pd = pinned;
                decided[p] = PLAN_DECIDED_PINNED;
            } else if (o->strict) {
                const runtime_device *dev = &rt->devices[pinned];
                why[0] = '\0';
                dev->backend->supports(dev->backend->ctx, dev->index, &desc, why, sizeof why);
                st = loom_set_error(LOOM_ERR_UNSUPPORTED,
                                    "node '%s' (%s) is pinned to %s, which cannot run it: %s",
                                    gn->name, gn->def->name, dev->id, why);
                goto done;
            } else {
                pin_ignored[p] = (int16_t)(pinned + 1);
            }
        }
        if (pd < 0 && o->want >= 0) {
            if (isfinite(row[o->want])) {
                pd = o->want;
                decided[p] = PLAN_DECIDED_REQUESTED;
            } else if (o->strict && s.nosup && claimed_by(plan, (uint32_t)o->want, p)) {
                /* The requested device runs it only inside its claim: that claim must be kept
                 * (checked once the claims are decided), and nowhere else may run it. */
                s.nosup[p] = 2;
                decided[p] = 0;
                s.place_pin[p] = o->want;
                for (uint32_t d = 0; d < nd; d++)
                    s.place_cost[(size_t)p * nd + d] = INFINITY;
                continue;
            } else if (o->strict) {
                const runtime_device *dev = &rt->devices[o->want];
                why[0] = '\0';
                dev->backend->supports(dev->backend->ctx, dev->index, &desc, why, sizeof why);
                st = loom_set_error(LOOM_ERR_UNSUPPORTED,
                                    "node '%s' (%s) cannot run on %s (strict placement): %s",
                                    gn->name, gn->def->name, dev->id, why);
                goto done;
            }
        }
        s.place_pin[p] = pd;
        uint32_t n_cand = 0;
        for (uint32_t d = 0; d < nd; d++) {
            double c = row[d];
            if (pd < 0 && policy != PLACE_POLICY_FIRST && isfinite(c) && host_cpu >= 0 &&
                (int)d != host_cpu && isfinite(row[host_cpu]) &&
                cost_profile_of(plan->model, d)->shares_host_cpu) {
                c = INFINITY;
                s.excluded[p] = 1;
            }
            s.place_cost[(size_t)p * nd + d] = c;
            n_cand += isfinite(c) != 0;
        }
        if (pd < 0 && n_sup == 1) {
            decided[p] = PLAN_DECIDED_ONLY_DEVICE;
            s.place_pin[p] = (int32_t)last_sup;
        }
        if (pd < 0 && n_cand > 1)
            choice = 1;
    }
    /* Claims: which run as one unit (plan_claims_decide); a node no device runs alone must be
     * in one of those. Kept claims are then one task each. Without them the tasks are the
     * nodes, and the arrays below are the nodes'. */
    tcost = plan->cost_s;
    pcost = s.place_cost;
    tout = s.out_bytes;
    tpin = s.place_pin;
    texcl = s.excluded;
    if (plan->n_claims) {
        /* Devices on the host CPU's cores, out of automatic placement (a plan that names its
         * device leaves the choice to no one). */
        uint64_t shared_out = 0;
        for (uint32_t d = 0; d < nd && d < 64; d++)
            if (policy != PLACE_POLICY_FIRST && o->want < 0 && host_cpu >= 0 &&
                (int)d != host_cpu && cost_profile_of(plan->model, d)->shares_host_cpu)
                shared_out |= (uint64_t)1 << d;
        plan_claims_decide(plan, g, order, s.raw, plan->cost_s, s.user_pinned, s.place_pin,
                           shared_out, s.unit_of);
        int kept = 0;
        for (uint32_t p = 0; p < nn; p++) {
            kept |= s.unit_of[p] != 0;
            if (s.nosup[p] && !s.unit_of[p]) {
                loom_node_desc desc;
                graph_node_desc(g, order[p], &desc, s.in_d, s.out_d, s.in_c);
                desc.precision = precision;
                if (s.nosup[p] == 2) { /* strict, and its claim on the requested device split */
                    const runtime_device *dev = &rt->devices[o->want];
                    char why[256] = "";
                    dev->backend->supports(dev->backend->ctx, dev->index, &desc, why, sizeof why);
                    st = loom_set_error(LOOM_ERR_UNSUPPORTED,
                                        "node '%s' (%s) cannot run on %s (strict placement): "
                                        "%s; its claim was not kept", g->nodes[order[p]].name,
                                        g->nodes[order[p]].def->name, dev->id, why);
                } else {
                    st = no_device_error(rt, &desc);
                }
                goto done;
            }
        }
        if (kept) {
            if ((st = contract_claims(plan, g, order, &s, decided, &nt, &ne)) != LOOM_OK)
                goto done;
            tdev = s.t_dev;
            tpred = s.t_pred;
            tcost = s.t_cost;
            pcost = s.t_pcost;
            tout = s.t_out;
            tpin = s.t_pin;
            tdec = s.t_dec;
            texcl = s.t_excl;
            choice = 0;
            for (uint32_t t = 0; t < nt && !choice; t++) {
                uint32_t n_cand = 0;
                for (uint32_t d = 0; d < nd; d++)
                    n_cand += isfinite(pcost[(size_t)t * nd + d]) != 0;
                choice = tpin[t] < 0 && n_cand > 1;
            }
        }
    }
    /* Edges: one per (producer, consumer) pair, carrying every byte the consumer reads. */
    for (uint32_t p = 0; p < nn && !s.tk_of; p++)
        s.mark[p] = UINT32_MAX;
    for (uint32_t c = 0; c < nn && !s.tk_of; c++) {
        const graph_node *gn = &g->nodes[order[c]];
        for (uint32_t k = 0; k < gn->n_inputs; k++) {
            loom_value v = gn->inputs[k];
            if (v == LOOM_NO_VALUE || g->values[v].kind != GRAPH_VALUE_NODE)
                continue;
            uint32_t p = (uint32_t)s.pos_of[g->values[v].producer];
            double bytes = desc_bytes(&g->values[v].desc);
            if (s.mark[p] == c) {
                for (uint32_t e = ne; e-- > 0;)
                    if (s.efrom[e] == p && s.eto[e] == c) {
                        s.ebytes[e] += bytes;
                        break;
                    }
                continue;
            }
            s.mark[p] = c;
            s.efrom[ne] = p;
            s.eto[ne] = c;
            s.ebytes[ne++] = bytes;
        }
    }
    for (uint32_t i = 0; i < nd; i++) {
        const cost_profile *pf = cost_profile_of(plan->model, i);
        s.power[i] = pf->power_w > 0 ? pf->power_w : 1.0;
        if (!rt->devices[i].info.host_visible)
            s.cap[i] = plan_free_memory(&rt->devices[i]);
        for (uint32_t j = 0; j < nd; j++) {
            double lat = 0, bw = INFINITY;
            if (i != j)
                cost_link(plan->model, i, j, &lat, &bw);
            s.lat[(size_t)i * nd + j] = lat;
            s.bw[(size_t)i * nd + j] = bw > 0 ? bw : INFINITY;
        }
    }
    place_problem pr = {
        .n_tasks = nt, .n_devices = nd, .cost = pcost, .n_edges = ne,
        .edge_from = s.efrom, .edge_to = s.eto, .edge_bytes = s.ebytes,
        .bandwidth = s.bw, .latency = s.lat, .pin = tpin, .output_bytes = tout,
        .capacity = s.cap, .target_latency = o->target_s, .power = s.power,
    };
    snprintf(plan->policy, sizeof plan->policy, "%s", place_policy_name((place_policy)policy));
    if (!choice) {
        /* Nothing to choose: every node has one candidate. The predictions come from one pass
         * in topological order (each node as soon as its inputs and its device allow), O(nodes
         * + edges) where a search would spend its budget finding the same placement. */
        st = forced_schedule(plan, &pr, tcost, tpin, texcl, tdev, tpred, tdec);
        goto done;
    }
    double budget = o->budget_s > 0 ? o->budget_s : fmin(0.5, 0.005 + 0.0005 * nt);
    char err[512] = "";
    st = place_place(&pr, (place_policy)policy, budget, &res, err, sizeof err);
    if (st != LOOM_OK) {
        st = loom_set_error(st, "placing graph '%s': %s", g->name, err[0] ? err : "failed");
        goto done;
    }
    for (uint32_t p = 0; p < nt; p++) {
        tdev[p] = res.device[p];
        tpred[p] = res.start[p];
        tpred[nt + p] = res.finish[p];
        tpred[2 * (size_t)nt + p] = res.finish[p] - res.start[p];
        if (!tdec[p])
            tdec[p] = texcl[p] && res.reason[p] == PLACE_REASON_ONLY_DEVICE
                          ? PLAN_DECIDED_SHARED_CPU
                          : decided_of(res.reason[p]);
    }
    plan->pred_s = res.makespan;
    plan->heft_s = res.heft_makespan;
    plan->target_s = o->target_s;
    plan->target_met = res.target_met;
    plan->energy_j = res.energy;
    /* Spreading a graph over devices pays only when the model says so by more than its own
     * error: devices contend for what the model does not see (host cores, memory bandwidth,
     * the driver). Unless the user pinned or targeted something, a placement predicted less
     * than PLAN_SINGLE_MARGIN faster than the best device alone becomes that device alone. */
    if (policy != PLACE_POLICY_FIRST && !(o->target_s > 0) && !o->n_pins && o->want < 0) {
        double bs = 0;
        int bd = cheapest_device(pcost, nt, nd, &bs);
        int spread = 0;
        for (uint32_t p = 0; p < nt && !spread; p++)
            spread = bd >= 0 && tdev[p] != (uint32_t)bd;
        if (spread && res.makespan > (1.0 - PLAN_SINGLE_MARGIN) * bs) {
            double heft = plan->heft_s;
            for (uint32_t p = 0; p < nt; p++) {
                tpin[p] = bd;
                if (tdec[p] != PLAN_DECIDED_ONLY_DEVICE && tdec[p] != PLAN_DECIDED_CLAIM)
                    tdec[p] = PLAN_DECIDED_SINGLE;
            }
            if ((st = forced_schedule(plan, &pr, tcost, tpin, texcl, tdev, tpred, tdec)) !=
                LOOM_OK)
                goto done;
            plan->heft_s = heft;
            plan->single_rule_s = res.makespan;
            plan->target_met = 1;
        }
    }
    best_single(plan, nn, nd);
    plan->placement_ms = (double)(loom_now_ns() - t0) / 1e6;
done:
    if (st == LOOM_OK && !choice) {
        plan->target_s = o->target_s;
        plan->target_met = !(o->target_s > 0) || plan->pred_s <= o->target_s;
        best_single(plan, nn, nd);
        plan->placement_ms = (double)(loom_now_ns() - t0) / 1e6;
    }
    if (st == LOOM_OK) {
        /* Tasks back to nodes: a kept claim's nodes share its device and schedule; the fourth
         * row of PRED is each node's task rank (make_nodes' execution-order tie-break). */
        for (uint32_t p = 0; p < nn; p++) {
            uint32_t t = s.tk_of ? s.tk_of[p] : p;
            if (s.tk_of) {
                device[p] = tdev[t];
                pred[p] = tpred[t];
                pred[nn + p] = tpred[nt + t];
                pred[2 * (size_t)nn + p] = tpred[2 * (size_t)nt + t];
                decided[p] = tdec[t];
            }
            pred[3 * (size_t)nn + p] = t;
        }
    }
    place_result_free(&res);
    scratch_free(&s);
    return st;
}

/* The best single device: every node there, one after another (predicted). */
static void best_single(loom_plan *plan, uint32_t nn, uint32_t nd)
{
    plan->best_single_s = 0;
    plan->best_single = cheapest_device(plan->cost_s, nn, nd, &plan->best_single_s);
}

void plan_learn(loom_plan *plan, const loom_node_timing *timeline, size_t count)
{
    if (!plan->model)
        return;
    for (size_t i = 0; i < count; i++) {
        const plan_node *n = &plan->nodes[timeline[i].node];
        if (n->is_copy || !n->sig || timeline[i].device != n->device)
            continue; /* a fallback run says nothing about the planned device */
        cost_record_signature(plan->model, n->device, n->sig,
                            (double)(timeline[i].end_ns - timeline[i].start_ns) / 1e9);
    }
}

loom_status loom_runtime_calibrate(loom_runtime *rt, const char *cache_dir, int only_missing,
                                   int quick,
                                   void (*progress)(void *user, const char *label,
                                                    double fraction),
                                   void *user, size_t *n_measured)
{
    if (n_measured)
        *n_measured = 0;
    if (!rt)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "calibrate: runtime is NULL");
    loom_clear_error();
    cost_model *m = NULL;
    loom_status st = cost_model_open(rt, cache_dir, &m);
    if (st != LOOM_OK)
        return st;
    size_t todo = 0;
    for (uint32_t d = 0; d < rt->n_devices; d++)
        todo += !only_missing || !cost_profile_of(m, d)->calibrated;
    if (todo) {
        st = cost_calibrate(m, only_missing, quick, progress, user);
        if (st == LOOM_OK)
            st = cost_model_save(m);
    }
    if (st == LOOM_OK && n_measured)
        *n_measured = todo;
    cost_model_close(m);
    return st;
}
