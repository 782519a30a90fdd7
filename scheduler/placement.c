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
}

static void best_single(loom_plan *plan, uint32_t nn, uint32_t nd);

/* Every node has one candidate device (pinned, requested, or the only one that can): the
 * schedule each worker follows in plan order, as early as inputs and devices allow. */
static loom_status forced_schedule(loom_plan *plan, const place_problem *pr, const scratch *s,
                                   uint32_t *device, double *pred, uint8_t *decided)
{
    uint32_t nn = pr->n_tasks, nd = pr->n_devices;
    double *dev_free = calloc(nd + 1, sizeof *dev_free);
    if (!dev_free)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory placing the graph");
    for (uint32_t p = 0; p < nn; p++) {
        uint32_t d = 0;
        if (s->place_pin[p] >= 0)
            d = (uint32_t)s->place_pin[p];
        else
            while (d + 1 < nd && !isfinite(pr->cost[(size_t)p * nd + d]))
                d++;
        device[p] = d;
        pred[p] = 0; /* start: raised by the edges below */
        if (!decided[p])
            decided[p] = s->excluded[p] ? PLAN_DECIDED_SHARED_CPU : PLAN_DECIDED_ONLY_DEVICE;
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
        double c = plan->cost_s[(size_t)p * nd + device[p]];
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
    if (!s.in_d || !s.out_d || !s.in_c || !s.in_m || !s.place_cost || !s.bw || !s.lat ||
        !s.out_bytes || !s.cap || !s.power || !s.ebytes || !s.efrom || !s.eto || !s.mark ||
        !s.place_pin || !s.pos_of || !s.pins || !s.excluded || !plan->cost_s) {
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
            why[0] = '\0';
            if ((d < 64 && ((o->exclude >> d) & 1)) ||
                !dev->backend->supports(dev->backend->ctx, dev->index, &desc, why, sizeof why)) {
                row[d] = INFINITY;
                continue;
            }
            n_sup++;
            last_sup = d;
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
            row[d] = c;
        }
        if (!n_sup) {
            st = no_device_error(rt, &desc);
            goto done;
        }
        decided[p] = 0;
        int32_t pd = -1;
        int pinned = pinned_device(s.pins, o->n_pins, gn);
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
    /* Edges: one per (producer, consumer) pair, carrying every byte the consumer reads. */
    uint32_t ne = 0;
    for (uint32_t p = 0; p < nn; p++)
        s.mark[p] = UINT32_MAX;
    for (uint32_t c = 0; c < nn; c++) {
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
            s.cap[i] = (double)rt->devices[i].info.memory_bytes;
        for (uint32_t j = 0; j < nd; j++) {
            double lat = 0, bw = INFINITY;
            if (i != j)
                cost_link(plan->model, i, j, &lat, &bw);
            s.lat[(size_t)i * nd + j] = lat;
            s.bw[(size_t)i * nd + j] = bw > 0 ? bw : INFINITY;
        }
    }
    place_problem pr = {
        .n_tasks = nn, .n_devices = nd, .cost = s.place_cost, .n_edges = ne,
        .edge_from = s.efrom, .edge_to = s.eto, .edge_bytes = s.ebytes,
        .bandwidth = s.bw, .latency = s.lat, .pin = s.place_pin, .output_bytes = s.out_bytes,
        .capacity = s.cap, .target_latency = o->target_s, .power = s.power,
    };
    snprintf(plan->policy, sizeof plan->policy, "%s", place_policy_name((place_policy)policy));
    if (!choice) {
        /* Nothing to choose: every node has one candidate. The predictions come from one pass
         * in topological order (each node as soon as its inputs and its device allow), O(nodes
         * + edges) where a search would spend its budget finding the same placement. */
        st = forced_schedule(plan, &pr, &s, device, pred, decided);
        goto done;
    }
    double budget = o->budget_s > 0 ? o->budget_s : fmin(0.5, 0.005 + 0.0005 * nn);
    char err[512] = "";
    st = place_place(&pr, (place_policy)policy, budget, &res, err, sizeof err);
    if (st != LOOM_OK) {
        st = loom_set_error(st, "placing graph '%s': %s", g->name, err[0] ? err : "failed");
        goto done;
    }
    for (uint32_t p = 0; p < nn; p++) {
        device[p] = res.device[p];
        pred[p] = res.start[p];
        pred[nn + p] = res.finish[p];
        pred[2 * (size_t)nn + p] = res.finish[p] - res.start[p];
        if (!decided[p])
            decided[p] = s.excluded[p] && res.reason[p] == PLACE_REASON_ONLY_DEVICE
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
        int bd = cheapest_device(s.place_cost, nn, nd, &bs);
        int spread = 0;
        for (uint32_t p = 0; p < nn && !spread; p++)
            spread = bd >= 0 && device[p] != (uint32_t)bd;
        if (spread && res.makespan > (1.0 - PLAN_SINGLE_MARGIN) * bs) {
            double heft = plan->heft_s;
            for (uint32_t p = 0; p < nn; p++) {
                s.place_pin[p] = bd;
                if (decided[p] != PLAN_DECIDED_ONLY_DEVICE)
                    decided[p] = PLAN_DECIDED_SINGLE;
            }
            if ((st = forced_schedule(plan, &pr, &s, device, pred, decided)) != LOOM_OK)
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
