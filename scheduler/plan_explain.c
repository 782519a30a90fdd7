/*
 * What a plan says about itself: its nodes and where they run, why each node went where it did
 * (loom_plan_explain), the summary figures, the stages of planning (loom_plan_pass_info) and all
 * of it as JSON (loom_plan_explain_json, described in docs/profile.md).
 */
#include "sched_internal.h"

#include "cost/cost.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (!plan || i >= plan->n_nodes)
        return NULL;
    const plan_node *n = &plan->nodes[i];
    return n->is_copy ? n->link : plan->rt->devices[n->device].id;
}

int loom_plan_node_is_copy(const loom_plan *plan, size_t i)
{
    return plan && i < plan->n_nodes && plan->nodes[i].is_copy;
}

static const char *decided_name(uint8_t d)
{
    switch (d) {
    case PLAN_DECIDED_PINNED: return "pin";
    case PLAN_DECIDED_ONLY_DEVICE: return "only-device";
    case PLAN_DECIDED_REQUESTED: return "requested-device";
    case PLAN_DECIDED_SEARCH: return "search";
    case PLAN_DECIDED_ENERGY: return "energy";
    case PLAN_DECIDED_CAPACITY: return "capacity";
    case PLAN_DECIDED_FIRST: return "first";
    case PLAN_DECIDED_COPY: return "copy";
    case PLAN_DECIDED_SHARED_CPU: return "shared-cores";
    case PLAN_DECIDED_SINGLE: return "one-device";
    case PLAN_DECIDED_CLAIM: return "claim";
    default: return "earliest-finish";
    }
}

static const char *claim_state_name(uint8_t state)
{
    switch (state) {
    case PLAN_CLAIM_KEPT: return "kept";
    case PLAN_CLAIM_LOST: return "lost";
    case PLAN_CLAIM_FAILED: return "failed";
    default: return "split";
    }
}

/* "claim 0 of devmem:0 (MatMul+Add+Relu)" into BUF. */
static const char *claim_name(const loom_plan *plan, const plan_claim *c, char *buf, size_t len)
{
    snprintf(buf, len, "claim %u of %s (%s)", c->index, plan->rt->devices[c->device].id,
             c->label);
    return buf;
}

/* The one-line reason of node I into BUF. */
static void reason_line(const loom_plan *plan, size_t i, char *buf, size_t len)
{
    const plan_node *n = &plan->nodes[i];
    const loom_runtime *rt = plan->rt;
    const char *dev = rt->devices[n->device].id;
    const double *row = &plan->cost_s[i * plan->n_rt_devices];
    /* the runner-up: the cheapest other device */
    int other = -1;
    for (uint32_t d = 0; d < plan->n_rt_devices; d++)
        if (d != n->device && isfinite(row[d]) && (other < 0 || row[d] < row[other]))
            other = (int)d;
    char alt[160] = "";
    if (other >= 0)
        snprintf(alt, sizeof alt, "; %s would take %.3f ms", rt->devices[other].id,
                 row[other] * 1e3);
    char cn[160];
    switch (n->decided) {
    case PLAN_DECIDED_CLAIM:
        if (n->claim) {
            const plan_claim *c = &plan->claims[n->claim - 1];
            snprintf(buf, len, "%s: %s; it covers %s%s%s", claim_name(plan, c, cn, sizeof cn),
                     c->why, c->nodes_text, c->fallback[0] ? "; run-time fallback: " : "",
                     c->fallback);
        } else {
            snprintf(buf, len, "a claimed subgraph on %s", dev);
        }
        break;
    case PLAN_DECIDED_COPY:
        snprintf(buf, len, "moves %.0f bytes over %s (%.3f ms predicted)", n->bytes_in_moved,
                 n->link, n->pred_s * 1e3);
        break;
    case PLAN_DECIDED_PINNED:
        snprintf(buf, len, "pinned to %s by the user%s", dev, alt);
        break;
    case PLAN_DECIDED_REQUESTED:
        snprintf(buf, len, "the requested device %s runs it%s", dev, alt);
        break;
    case PLAN_DECIDED_ONLY_DEVICE:
        snprintf(buf, len, "%s is the only device that supports it", dev);
        break;
    case PLAN_DECIDED_SHARED_CPU:
        snprintf(buf, len, "%s runs it; devices on the host's own cores are kept out of "
                 "automatic placement while the cpu backend can run the node", dev);
        break;
    case PLAN_DECIDED_SINGLE:
        snprintf(buf, len, "the whole graph on %s alone is predicted within %.0f%% of spreading "
                 "it over devices (%.3f ms vs %.3f ms), too little to pay for transfers and "
                 "contention the model does not see%s", dev, PLAN_SINGLE_MARGIN * 100,
                 plan->pred_s * 1e3,
                 plan->single_rule_s * 1e3, alt);
        break;
    case PLAN_DECIDED_ENERGY:
        snprintf(buf, len, "%s uses less energy and the target latency still holds%s", dev, alt);
        break;
    case PLAN_DECIDED_CAPACITY:
        snprintf(buf, len, "a faster device had no memory left; %s finishes it first among "
                 "those that do%s", dev, alt);
        break;
    case PLAN_DECIDED_SEARCH:
        snprintf(buf, len, "the search found the graph finishes sooner with it on %s "
                 "(%.3f ms there%s)", dev, row[n->device] * 1e3, alt);
        break;
    case PLAN_DECIDED_FIRST:
        snprintf(buf, len, "%s is the first device that supports it (policy first)", dev);
        break;
    default:
        snprintf(buf, len, "finishes earliest on %s (%.3f ms, inputs moved %.0f bytes%s)", dev,
                 row[n->device] * 1e3, n->bytes_in_moved, alt);
        break;
    }
    if (n->pin_ignored > 0) {
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "; its pin to %s was ignored: that device cannot run it",
                 rt->devices[n->pin_ignored - 1].id);
    }
    /* Claims covering this node that were not kept say why. */
    for (uint32_t c = 0; c < plan->n_claims && !n->is_copy && n->decided != PLAN_DECIDED_CLAIM;
         c++) {
        const plan_claim *pc = &plan->claims[c];
        int covers = 0;
        for (uint32_t k = 0; k < pc->n_pos && !covers; k++)
            covers = pc->pos[k] == n->graph_index;
        if (covers) {
            size_t used = strlen(buf);
            snprintf(buf + used, len - used, "; %s was %s: %s", claim_name(plan, pc, cn, sizeof cn),
                     pc->state == PLAN_CLAIM_LOST ? "not kept" : "split", pc->why);
        }
    }
    if (n->cost_note) { /* a measurement overrode the backend's estimate: say which and by how much */
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "; %s", n->cost_note);
    }
}

void plan_node_cost_source(loom_plan *plan, plan_node *n, const loom_node_desc *desc)
{
    cost_choice c;
    cost_node_choose(plan->model, n->device, desc, &n->cost, &c);
    n->cost_source = c.source;
    free(n->cost_note);
    n->cost_note = cost_choice_note(plan->model, n->device, &c);
}

loom_status loom_plan_explain(const loom_plan *plan, size_t i, loom_node_explain *out)
{
    if (!plan || !out || out->struct_size < sizeof *out || i >= plan->n_nodes)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "explain: bad arguments (node %zu of %u, struct_size %u)", i,
                              plan ? plan->n_nodes : 0, out ? out->struct_size : 0);
    loom_clear_error();
    /* The reason text lives in a per-plan buffer so that the string outlives the call. */
    loom_plan *mp = (loom_plan *)plan;
    pthread_mutex_lock(&mp->ctx_lock);
    if (!mp->reasons) {
        mp->reasons = calloc(plan->n_nodes + 1, sizeof *mp->reasons);
    }
    if (mp->reasons && !mp->reasons[i]) {
        char buf[1024];
        reason_line(plan, i, buf, sizeof buf);
        mp->reasons[i] = strdup(buf);
    }
    pthread_mutex_unlock(&mp->ctx_lock);
    const plan_node *n = &plan->nodes[i];
    uint32_t sz = out->struct_size;
    memset(out, 0, sizeof *out);
    out->struct_size = sz;
    out->name = n->name;
    out->op = n->op_name;
    out->device = loom_plan_node_device(plan, i);
    out->predicted_s = n->pred_s;
    out->start_s = n->pred_start;
    out->finish_s = n->pred_finish;
    out->cost_s = &plan->cost_s[i * plan->n_rt_devices];
    out->cost_count = plan->n_rt_devices;
    out->cost_source = n->cost_source ? n->cost_source : "roofline";
    out->decided_by = decided_name(n->decided);
    out->reason = mp->reasons && mp->reasons[i] ? mp->reasons[i] : "";
    out->bytes_in_moved = n->bytes_in_moved;
    out->transfer_in_s = n->transfer_in_s;
    out->bytes_kept_local = n->bytes_kept_local;
    return LOOM_OK;
}

loom_status loom_plan_summary_get(const loom_plan *plan, loom_plan_summary *out)
{
    loom_plan_summary *caller = out;
    const size_t v1 = offsetof(loom_plan_summary, placement_ms) + sizeof out->placement_ms;
    if (!plan || !out || out->struct_size < v1)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "plan summary: bad arguments");
    loom_clear_error();
    loom_plan_summary s = {0};
    s.struct_size = out->struct_size;
    out = &s; /* filled whole, copied back as far as the caller's struct goes */
    out->policy = plan->policy;
    out->predicted_s = plan->pred_s;
    out->heft_predicted_s = plan->heft_s;
    out->target_latency_s = plan->target_s;
    out->target_met = plan->target_met;
    out->predicted_energy_j = plan->energy_j;
    out->best_single_device =
        plan->best_single >= 0 ? plan->rt->devices[plan->best_single].id : NULL;
    out->best_single_s = plan->best_single_s;
    out->n_copies = plan->n_copies;
    out->placement_ms = plan->placement_ms;
    for (uint32_t t = 0; t < plan->n_tensors; t++)
        if (plan->tensors[t].kind == PLAN_T_CONSTANT)
            out->constant_bytes += plan->tensors[t].bytes;
    memcpy(caller, &s, s.struct_size < sizeof s ? s.struct_size : sizeof s);
    return LOOM_OK;
}

/* A JSON number: JSON has no infinity, so devices that cannot run a node get null. */
static void json_num(char **buf, size_t *len, size_t *cap, double v);

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need < *cap)
        return 1;
    size_t n = *cap ? *cap : 4096;
    while (n <= need)
        n *= 2;
    char *b = realloc(*buf, n);
    if (!b)
        return 0;
    *buf = b;
    *cap = n;
    return 1;
}

/* Append formatted text; on allocation failure leaves *BUF NULL (checked at the end). */
static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    if (!*buf && *cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !grow(buf, cap, *len + (size_t)n + 1)) {
        free(*buf);
        *buf = NULL;
        *cap = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

static void json_num(char **buf, size_t *len, size_t *cap, double v)
{
    if (isfinite(v))
        append(buf, len, cap, "%.9g", v);
    else
        append(buf, len, cap, "null");
}

/* A JSON string with the escapes names may need. */
static void json_str(char **buf, size_t *len, size_t *cap, const char *s)
{
    append(buf, len, cap, "\"");
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            append(buf, len, cap, "\\%c", c);
        else if (c < 0x20)
            append(buf, len, cap, "\\u%04x", c);
        else
            append(buf, len, cap, "%c", c);
    }
    append(buf, len, cap, "\"");
}

size_t loom_plan_pass_count(const loom_plan *plan)
{
    return plan ? plan->n_stages : 0;
}

loom_status loom_plan_pass_info(const loom_plan *plan, size_t i, loom_pass_info *out)
{
    if (!plan || !out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "pass_info: plan or out is NULL");
    if (out->struct_size < sizeof *out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "pass_info: struct_size %u is too small (set it to "
                              "sizeof(loom_pass_info))", out->struct_size);
    if (i >= plan->n_stages)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "pass_info: stage %zu of %zu", i,
                              plan->n_stages);
    const pass_report *r = &plan->stages[i];
    out->name = r->name;
    out->nodes_before = r->nodes_before;
    out->nodes_after = r->nodes_after;
    out->ms = r->ms;
    out->summary = r->summary;
    return LOOM_OK;
}

loom_status loom_plan_explain_json(const loom_plan *plan, char **out)
{
    if (!plan || !out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "explain_json: NULL argument");
    *out = NULL;
    loom_clear_error();
    char *buf = NULL;
    size_t len = 0, cap = 0;
    loom_plan_summary sm = {.struct_size = sizeof sm};
    loom_plan_summary_get(plan, &sm);
    append(&buf, &len, &cap, "{\"policy\":");
    json_str(&buf, &len, &cap, sm.policy);
    append(&buf, &len, &cap, ",\"predicted_s\":");
    json_num(&buf, &len, &cap, sm.predicted_s);
    append(&buf, &len, &cap, ",\"heft_predicted_s\":");
    json_num(&buf, &len, &cap, sm.heft_predicted_s);
    append(&buf, &len, &cap, ",\"target_latency_s\":");
    json_num(&buf, &len, &cap, sm.target_latency_s);
    append(&buf, &len, &cap, ",\"target_met\":%s,\"predicted_energy_j\":",
           sm.target_met ? "true" : "false");
    json_num(&buf, &len, &cap, sm.predicted_energy_j);
    append(&buf, &len, &cap, ",\"best_single_device\":");
    if (sm.best_single_device)
        json_str(&buf, &len, &cap, sm.best_single_device);
    else
        append(&buf, &len, &cap, "null");
    append(&buf, &len, &cap, ",\"best_single_s\":");
    json_num(&buf, &len, &cap, sm.best_single_s);
    append(&buf, &len, &cap, ",\"copies\":%zu,\"placement_ms\":", sm.n_copies);
    json_num(&buf, &len, &cap, sm.placement_ms);
    append(&buf, &len, &cap, ",\"devices\":[");
    for (uint32_t d = 0; d < plan->n_rt_devices; d++) {
        append(&buf, &len, &cap, d ? "," : "");
        json_str(&buf, &len, &cap, plan->rt->devices[d].id);
    }
    append(&buf, &len, &cap, "],\"nodes\":[");
    for (size_t i = 0; i < plan->n_nodes; i++) {
        loom_node_explain e = {.struct_size = sizeof e};
        if (loom_plan_explain(plan, i, &e) != LOOM_OK)
            break;
        append(&buf, &len, &cap, "%s{\"name\":", i ? "," : "");
        json_str(&buf, &len, &cap, e.name);
        append(&buf, &len, &cap, ",\"op\":");
        json_str(&buf, &len, &cap, e.op);
        append(&buf, &len, &cap, ",\"device\":");
        json_str(&buf, &len, &cap, e.device);
        append(&buf, &len, &cap, ",\"copy\":%s,\"predicted_s\":",
               plan->nodes[i].is_copy ? "true" : "false");
        json_num(&buf, &len, &cap, e.predicted_s);
        append(&buf, &len, &cap, ",\"start_s\":");
        json_num(&buf, &len, &cap, e.start_s);
        append(&buf, &len, &cap, ",\"finish_s\":");
        json_num(&buf, &len, &cap, e.finish_s);
        append(&buf, &len, &cap, ",\"cost_s\":[");
        for (size_t d = 0; d < e.cost_count; d++) {
            append(&buf, &len, &cap, d ? "," : "");
            json_num(&buf, &len, &cap, e.cost_s[d]);
        }
        append(&buf, &len, &cap, "],\"cost_source\":");
        json_str(&buf, &len, &cap, e.cost_source);
        append(&buf, &len, &cap, ",\"decided_by\":");
        json_str(&buf, &len, &cap, e.decided_by);
        append(&buf, &len, &cap, ",\"reason\":");
        json_str(&buf, &len, &cap, e.reason);
        append(&buf, &len, &cap, ",\"bytes_in_moved\":");
        json_num(&buf, &len, &cap, e.bytes_in_moved);
        append(&buf, &len, &cap, ",\"transfer_in_s\":");
        json_num(&buf, &len, &cap, e.transfer_in_s);
        append(&buf, &len, &cap, ",\"bytes_kept_local\":");
        json_num(&buf, &len, &cap, e.bytes_kept_local);
        if (plan->nodes[i].claim)
            append(&buf, &len, &cap, ",\"claim\":%u", plan->nodes[i].claim - 1);
        append(&buf, &len, &cap, "}");
    }
    append(&buf, &len, &cap, "],\"claims\":[");
    for (uint32_t c = 0; c < plan->n_claims; c++) {
        const plan_claim *pc = &plan->claims[c];
        append(&buf, &len, &cap, "%s{\"device\":", c ? "," : "");
        json_str(&buf, &len, &cap, plan->rt->devices[pc->device].id);
        append(&buf, &len, &cap, ",\"index\":%u,\"label\":", pc->index);
        json_str(&buf, &len, &cap, pc->label);
        append(&buf, &len, &cap, ",\"nodes\":[");
        for (uint32_t k = 0, at = 0; k < pc->n_pos && pc->names; k++) {
            append(&buf, &len, &cap, k ? "," : "");
            json_str(&buf, &len, &cap, pc->names + at);
            at += (uint32_t)strlen(pc->names + at) + 1;
        }
        append(&buf, &len, &cap, "]");
        append(&buf, &len, &cap, ",\"node_count\":%u,\"state\":", pc->n_pos);
        json_str(&buf, &len, &cap, claim_state_name(pc->state));
        append(&buf, &len, &cap, ",\"estimate_s\":");
        json_num(&buf, &len, &cap, pc->estimate_s >= 0 ? pc->estimate_s : NAN);
        append(&buf, &len, &cap, ",\"unit_s\":");
        json_num(&buf, &len, &cap, pc->unit_s);
        append(&buf, &len, &cap, ",\"split_s\":");
        json_num(&buf, &len, &cap, pc->split_s);
        append(&buf, &len, &cap, ",\"reason\":");
        json_str(&buf, &len, &cap, pc->why);
        if (pc->fallback[0]) {
            append(&buf, &len, &cap, ",\"fallback\":");
            json_str(&buf, &len, &cap, pc->fallback);
        }
        append(&buf, &len, &cap, "}");
    }
    append(&buf, &len, &cap, "],\"claims_dropped\":%u", plan->n_claims_dropped);
    append(&buf, &len, &cap, ",\"passes\":[");
    for (size_t i = 0; i < plan->n_stages; i++) {
        const pass_report *r = &plan->stages[i];
        append(&buf, &len, &cap, "%s{\"name\":", i ? "," : "");
        json_str(&buf, &len, &cap, r->name);
        append(&buf, &len, &cap, ",\"nodes_before\":%zu,\"nodes_after\":%zu,\"ms\":",
               r->nodes_before, r->nodes_after);
        json_num(&buf, &len, &cap, r->ms);
        append(&buf, &len, &cap, ",\"summary\":");
        json_str(&buf, &len, &cap, r->summary);
        append(&buf, &len, &cap, "}");
    }
    append(&buf, &len, &cap, "]}");
    if (!buf)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "explain_json: out of memory");
    *out = buf;
    return LOOM_OK;
}

void loom_string_free(char *s)
{
    free(s);
}
