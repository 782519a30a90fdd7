/*
 * Placement's entry points: validation, the compiled problem (CSR adjacency, mean costs, ranks),
 * place_place's dispatch to the policies, the result (orders, reasons, energy) and place_evaluate, the
 * independent timing of any (device, order) schedule that every returned result is checked
 * against.
 */
#include "place_internal.h"

#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Default budgets (seconds) when place_place gets 0. */
#define PLACE_DEFAULT_BUDGET 0.5
#define PLACE_EXACT_BUDGET 10.0
/* The default policy runs the exact search when the problem has at most this many tasks. */
#define PLACE_EXACT_TASKS 16

double place_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- names ------------------------------------------------------------------------------- */

int place_policy_from_name(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "default") || !strcmp(name, "loom"))
        return PLACE_POLICY_DEFAULT;
    if (!strcmp(name, "heft"))
        return PLACE_POLICY_HEFT;
    if (!strcmp(name, "peft"))
        return PLACE_POLICY_PEFT;
    if (!strcmp(name, "exact"))
        return PLACE_POLICY_EXACT;
    if (!strcmp(name, "first"))
        return PLACE_POLICY_FIRST;
    return -1;
}

const char *place_policy_name(place_policy policy)
{
    switch (policy) {
    case PLACE_POLICY_DEFAULT: return "default";
    case PLACE_POLICY_HEFT: return "heft";
    case PLACE_POLICY_PEFT: return "peft";
    case PLACE_POLICY_EXACT: return "exact";
    case PLACE_POLICY_FIRST: return "first";
    }
    return "unknown";
}

const char *place_reason_name(place_reason reason)
{
    switch (reason) {
    case PLACE_REASON_EFT: return "earliest finish";
    case PLACE_REASON_PINNED: return "pinned";
    case PLACE_REASON_ONLY_DEVICE: return "only device";
    case PLACE_REASON_SEARCH: return "search";
    case PLACE_REASON_ENERGY: return "energy";
    case PLACE_REASON_CAPACITY: return "capacity";
    case PLACE_REASON_FIRST: return "first device";
    }
    return "unknown";
}

/* ---- validation -------------------------------------------------------------------------- */

/* printf into ERR (when non-NULL) and return LOOM_ERR_INVALID_ARGUMENT. */
static loom_status fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return LOOM_ERR_INVALID_ARGUMENT;
}

/* "task 't3'" or "task 3" into BUF. */
static const char *task_label(const place_problem *p, uint32_t t, char *buf, size_t len)
{
    if (p->task_names && p->task_names[t])
        snprintf(buf, len, "task '%s'", p->task_names[t]);
    else
        snprintf(buf, len, "task %u", t);
    return buf;
}

/* "device 'gpu0'" or "device 1" into BUF. */
static const char *device_label(const place_problem *p, uint32_t d, char *buf, size_t len)
{
    if (p->device_names && p->device_names[d])
        snprintf(buf, len, "device '%s'", p->device_names[d]);
    else
        snprintf(buf, len, "device %u", d);
    return buf;
}

/* Whether COST (seconds) means "can run": finite and >= 0. NaN is neither and is refused. */
static int runnable(double cost)
{
    return isfinite(cost) && cost >= 0.0;
}

loom_status place_validate(const place_problem *p, char *err, size_t err_len)
{
    char a[160], b[160];
    if (!p)
        return fail(err, err_len, "no problem");
    if (p->n_devices == 0)
        return fail(err, err_len, "no devices");
    if (p->n_tasks && !p->cost)
        return fail(err, err_len, "no cost matrix");
    if (p->n_edges && (!p->edge_from || !p->edge_to || !p->edge_bytes))
        return fail(err, err_len, "edges without endpoints or bytes");
    if (p->n_devices > 1 && (!p->bandwidth || !p->latency))
        return fail(err, err_len, "no bandwidth or latency matrix");
    uint32_t n = p->n_tasks, nd = p->n_devices;
    for (uint32_t i = 0; i < nd; i++)
        for (uint32_t j = 0; j < nd; j++) {
            if (i == j)
                continue;
            double bw = p->bandwidth[(size_t)i * nd + j], lat = p->latency[(size_t)i * nd + j];
            if (!(bw > 0.0) || isnan(bw))
                return fail(err, err_len, "bandwidth from %s to %s is %g: must be > 0",
                            device_label(p, i, a, sizeof a), device_label(p, j, b, sizeof b), bw);
            if (!(lat >= 0.0) || !isfinite(lat))
                return fail(err, err_len, "latency from %s to %s is %g: must be finite and >= 0",
                            device_label(p, i, a, sizeof a), device_label(p, j, b, sizeof b), lat);
        }
    for (uint32_t t = 0; t < n; t++) {
        int any = 0;
        for (uint32_t d = 0; d < nd; d++) {
            double v = p->cost[(size_t)t * nd + d];
            if (isnan(v))
                return fail(err, err_len, "%s: cost on %s is not a number",
                            task_label(p, t, a, sizeof a), device_label(p, d, b, sizeof b));
            any |= runnable(v);
        }
        if (!any)
            return fail(err, err_len, "%s: no device can run it", task_label(p, t, a, sizeof a));
        if (p->pin && p->pin[t] >= 0) {
            if ((uint32_t)p->pin[t] >= nd)
                return fail(err, err_len, "%s: pinned to device %d, but there are %u devices",
                            task_label(p, t, a, sizeof a), p->pin[t], nd);
            if (!runnable(p->cost[(size_t)t * nd + (uint32_t)p->pin[t]]))
                return fail(err, err_len, "%s: pinned to %s, which cannot run it",
                            task_label(p, t, a, sizeof a),
                            device_label(p, (uint32_t)p->pin[t], b, sizeof b));
        }
        if (p->output_bytes && (!(p->output_bytes[t] >= 0.0) || !isfinite(p->output_bytes[t])))
            return fail(err, err_len, "%s: output bytes %g must be finite and >= 0",
                        task_label(p, t, a, sizeof a), p->output_bytes[t]);
    }
    if (p->capacity)
        for (uint32_t d = 0; d < nd; d++)
            if (!(p->capacity[d] >= 0.0))
                return fail(err, err_len, "%s: capacity %g must be >= 0 (0: unlimited)",
                            device_label(p, d, a, sizeof a), p->capacity[d]);
    if (p->power)
        for (uint32_t d = 0; d < nd; d++)
            if (!(p->power[d] >= 0.0) || !isfinite(p->power[d]))
                return fail(err, err_len, "%s: power %g must be finite and >= 0",
                            device_label(p, d, a, sizeof a), p->power[d]);
    if (!(p->target_latency >= 0.0) || !isfinite(p->target_latency))
        return fail(err, err_len, "target latency %g must be finite and >= 0 (0: none)",
                    p->target_latency);
    for (uint32_t e = 0; e < p->n_edges; e++) {
        if (p->edge_from[e] >= n || p->edge_to[e] >= n)
            return fail(err, err_len, "edge %u: task index %u out of range (%u tasks)", e,
                        p->edge_from[e] >= n ? p->edge_from[e] : p->edge_to[e], n);
        if (!(p->edge_bytes[e] >= 0.0) || !isfinite(p->edge_bytes[e]))
            return fail(err, err_len, "edge %u (%s to %s): bytes %g must be finite and >= 0", e,
                        task_label(p, p->edge_from[e], a, sizeof a),
                        task_label(p, p->edge_to[e], b, sizeof b), p->edge_bytes[e]);
        if (p->edge_from[e] == p->edge_to[e])
            return fail(err, err_len, "the graph has a cycle through %s (an edge to itself)",
                        task_label(p, p->edge_from[e], a, sizeof a));
    }
    /* Acyclicity (Kahn); on failure walk back along unresolved preds to land on a cycle. */
    uint32_t *indeg = calloc((size_t)n + 1, sizeof *indeg);
    uint32_t *queue = malloc(((size_t)n + 1) * sizeof *queue);
    uint32_t *first = calloc((size_t)n + 2, sizeof *first);
    uint32_t *adj = malloc(((size_t)p->n_edges + 1) * sizeof *adj);
    if (!indeg || !queue || !first || !adj) {
        free(indeg), free(queue), free(first), free(adj);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    for (uint32_t e = 0; e < p->n_edges; e++)
        indeg[p->edge_to[e]]++, first[p->edge_from[e] + 1]++;
    for (uint32_t t = 0; t < n; t++)
        first[t + 1] += first[t];
    for (uint32_t e = 0; e < p->n_edges; e++)
        adj[first[p->edge_from[e]]++] = p->edge_to[e];
    for (uint32_t t = n; t > 0; t--)
        first[t] = first[t - 1];
    first[0] = 0;
    uint32_t head = 0, tail = 0;
    for (uint32_t t = 0; t < n; t++)
        if (!indeg[t])
            queue[tail++] = t;
    while (head < tail) {
        uint32_t t = queue[head++];
        for (uint32_t k = first[t]; k < first[t + 1]; k++)
            if (--indeg[adj[k]] == 0)
                queue[tail++] = adj[k];
    }
    loom_status st = LOOM_OK;
    if (tail < n) {
        /* Every task left has a pred left; following them n times ends on a cycle. */
        uint32_t t = 0;
        while (!indeg[t])
            t++;
        for (uint32_t step = 0; step < n; step++)
            for (uint32_t e = 0; e < p->n_edges; e++)
                if (p->edge_to[e] == t && indeg[p->edge_from[e]]) {
                    t = p->edge_from[e];
                    break;
                }
        st = fail(err, err_len, "the graph has a cycle through %s", task_label(p, t, a, sizeof a));
    }
    free(indeg), free(queue), free(first), free(adj);
    return st;
}

/* ---- the compiled problem ---------------------------------------------------------------- */

void place_ctx_free(place_ctx *c)
{
    free(c->w), free(c->n_allowed), free(c->wmean), free(c->wmin), free(c->cmean);
    free(c->pred_first), free(c->pred_task), free(c->pred_edge);
    free(c->succ_first), free(c->succ_task), free(c->succ_edge);
    free(c->topo), free(c->oct), free(c->blevel_min), free(c->cap), free(c->out_bytes);
    memset(c, 0, sizeof *c);
}

/* Fill FIRST/TASK/EDGE (CSR) from edges keyed by KEY (from or to) pointing at OTHER. */
static void build_csr(uint32_t n, uint32_t ne, const uint32_t *key, const uint32_t *other,
                      uint32_t *first, uint32_t *task, uint32_t *edge)
{
    memset(first, 0, ((size_t)n + 1) * sizeof *first);
    for (uint32_t e = 0; e < ne; e++)
        first[key[e] + 1]++;
    for (uint32_t t = 0; t < n; t++)
        first[t + 1] += first[t];
    /* Stable fill: edges of one task keep their input order. */
    for (uint32_t e = 0; e < ne; e++) {
        uint32_t k = first[key[e]]++;
        task[k] = other[e];
        edge[k] = e;
    }
    for (uint32_t t = n; t > 0; t--)
        first[t] = first[t - 1];
    first[0] = 0;
}

loom_status place_ctx_init(place_ctx *c, const place_problem *p)
{
    memset(c, 0, sizeof *c);
    c->p = p;
    uint32_t n = p->n_tasks, nd = p->n_devices, ne = p->n_edges;
    c->n = n, c->nd = nd, c->ne = ne;
    size_t nn = (size_t)n + 1, nee = (size_t)ne + 1;
    c->w = malloc(nn * nd * sizeof *c->w);
    c->n_allowed = malloc(nn);
    c->wmean = malloc(nn * sizeof(double));
    c->wmin = malloc(nn * sizeof(double));
    c->cmean = malloc(nee * sizeof(double));
    c->pred_first = malloc((nn + 1) * sizeof(uint32_t));
    c->succ_first = malloc((nn + 1) * sizeof(uint32_t));
    c->pred_task = malloc(nee * sizeof(uint32_t));
    c->pred_edge = malloc(nee * sizeof(uint32_t));
    c->succ_task = malloc(nee * sizeof(uint32_t));
    c->succ_edge = malloc(nee * sizeof(uint32_t));
    c->topo = malloc(nn * sizeof(uint32_t));
    c->oct = malloc(nn * nd * sizeof(double));
    c->blevel_min = malloc(nn * sizeof(double));
    c->cap = malloc((size_t)nd * sizeof(double));
    c->out_bytes = calloc(nn, sizeof(double));
    if (!c->w || !c->n_allowed || !c->wmean || !c->wmin || !c->cmean || !c->pred_first ||
        !c->succ_first || !c->pred_task || !c->pred_edge || !c->succ_task || !c->succ_edge ||
        !c->topo || !c->oct || !c->blevel_min || !c->cap || !c->out_bytes) {
        place_ctx_free(c);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    for (uint32_t t = 0; t < n; t++) {
        double sum = 0.0, mn = INFINITY;
        uint32_t cnt = 0;
        for (uint32_t d = 0; d < nd; d++) {
            double v = p->cost[(size_t)t * nd + d];
            int ok = runnable(v) && (!p->pin || p->pin[t] < 0 || (uint32_t)p->pin[t] == d);
            c->w[(size_t)t * nd + d] = ok ? v : INFINITY;
            if (ok) {
                sum += v, cnt++;
                if (v < mn)
                    mn = v;
            }
        }
        c->n_allowed[t] = (uint8_t)(cnt > 255 ? 255 : cnt);
        c->wmean[t] = cnt ? sum / cnt : INFINITY;
        c->wmin[t] = mn;
        if (p->output_bytes)
            c->out_bytes[t] = p->output_bytes[t];
    }
    c->has_capacity = 0;
    for (uint32_t d = 0; d < nd; d++) {
        double v = p->capacity ? p->capacity[d] : 0.0;
        c->cap[d] = v > 0.0 ? v : INFINITY;
        c->has_capacity |= v > 0.0;
    }
    if (!p->output_bytes)
        c->has_capacity = 0;
    build_csr(n, ne, p->edge_to, p->edge_from, c->pred_first, c->pred_task, c->pred_edge);
    build_csr(n, ne, p->edge_from, p->edge_to, c->succ_first, c->succ_task, c->succ_edge);
    for (uint32_t e = 0; e < ne; e++) {
        uint32_t u = p->edge_from[e], v = p->edge_to[e];
        double sum = 0.0;
        uint32_t cnt = 0;
        /* Over every ordered pair of distinct devices, as Topcuoglu et al. average the links
         * (restricting to the devices that can run each end reads better on paper but departs
         * from the published HEFT, which is the baseline). */
        (void)u, (void)v;
        for (uint32_t i = 0; i < nd; i++)
            for (uint32_t j = 0; j < nd; j++)
                if (j != i)
                    sum += place_comm(c, e, i, j), cnt++;
        c->cmean[e] = cnt ? sum / cnt : 0.0;
    }
    /* Topological order (Kahn, lowest index first among the ready, for reproducibility). */
    uint32_t *indeg = c->blevel_min == NULL ? NULL : (uint32_t *)malloc(nn * sizeof(uint32_t));
    if (!indeg) {
        place_ctx_free(c);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    uint32_t head = 0, tail = 0;
    for (uint32_t t = 0; t < n; t++) {
        indeg[t] = c->pred_first[t + 1] - c->pred_first[t];
        if (!indeg[t])
            c->topo[tail++] = t;
    }
    while (head < tail) {
        uint32_t t = c->topo[head++];
        for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++)
            if (--indeg[c->succ_task[k]] == 0)
                c->topo[tail++] = c->succ_task[k];
    }
    free(indeg);
    /* Optimistic cost table (PEFT) and the least-cost bottom level, exits first. */
    for (uint32_t i = n; i-- > 0;) {
        uint32_t t = c->topo[i];
        double bl = 0.0;
        for (uint32_t d = 0; d < nd; d++)
            c->oct[(size_t)t * nd + d] = 0.0;
        for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++) {
            uint32_t s = c->succ_task[k], e = c->succ_edge[k];
            if (c->blevel_min[s] > bl)
                bl = c->blevel_min[s];
            for (uint32_t d = 0; d < nd; d++) {
                double best = INFINITY;
                for (uint32_t d2 = 0; d2 < nd; d2++) {
                    double ws = c->w[(size_t)s * nd + d2];
                    if (!isfinite(ws))
                        continue;
                    double v = c->oct[(size_t)s * nd + d2] + ws + (d2 != d ? c->cmean[e] : 0.0);
                    if (v < best)
                        best = v;
                }
                if (best > c->oct[(size_t)t * nd + d])
                    c->oct[(size_t)t * nd + d] = best;
            }
        }
        c->blevel_min[t] = c->wmin[t] + bl;
    }
    return LOOM_OK;
}

/* ---- ranks ------------------------------------------------------------------------------- */

void place_rank_upward(const place_ctx *c, int which, double *rank)
{
    uint32_t nd = c->nd;
    for (uint32_t i = c->n; i-- > 0;) {
        uint32_t t = c->topo[i];
        double own = c->wmean[t];
        if (which == 1)
            own = c->wmin[t];
        else if (which == 2) {
            own = 0.0;
            for (uint32_t d = 0; d < nd; d++) {
                double v = c->w[(size_t)t * nd + d];
                if (isfinite(v) && v > own)
                    own = v;
            }
        }
        double best = 0.0;
        for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++) {
            double v = c->cmean[c->succ_edge[k]] + rank[c->succ_task[k]];
            if (v > best)
                best = v;
        }
        rank[t] = own + best;
    }
}

void place_rank_oct(const place_ctx *c, double *rank)
{
    uint32_t nd = c->nd;
    for (uint32_t t = 0; t < c->n; t++) {
        double sum = 0.0;
        uint32_t cnt = 0;
        for (uint32_t d = 0; d < nd; d++)
            if (isfinite(c->w[(size_t)t * nd + d]))
                sum += c->oct[(size_t)t * nd + d], cnt++;
        rank[t] = cnt ? sum / cnt : 0.0;
    }
}

void place_rank_cpop(const place_ctx *c, double *rank, double *scratch)
{
    place_rank_upward(c, 0, rank);
    for (uint32_t i = 0; i < c->n; i++) {
        uint32_t t = c->topo[i];
        double best = 0.0;
        for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++) {
            uint32_t q = c->pred_task[k];
            double v = scratch[q] + c->wmean[q] + c->cmean[c->pred_edge[k]];
            if (v > best)
                best = v;
        }
        scratch[t] = best;
    }
    for (uint32_t t = 0; t < c->n; t++)
        rank[t] += scratch[t];
}

double place_energy(const place_ctx *c, const uint32_t *dev)
{
    double e = 0.0;
    for (uint32_t t = 0; t < c->n; t++) {
        double w = c->p->cost[(size_t)t * c->nd + dev[t]];
        e += w * (c->p->power ? c->p->power[dev[t]] : 1.0);
    }
    return e;
}

/* ---- place_evaluate ------------------------------------------------------------------------- */

double place_evaluate(const place_problem *p, const uint32_t *device, const uint32_t *order,
                   const uint32_t *order_first, double *start, double *finish)
{
    uint32_t n = p->n_tasks, nd = p->n_devices;
    if (n == 0)
        return 0.0;
    if (order_first[0] != 0 || order_first[nd] != n)
        return -1.0;
    /* A task's predecessors in time: its edges' sources and the task before it on its device.
     * Kahn's algorithm over both; a task never reached means the orders contradict the edges. */
    uint32_t *pos = malloc((size_t)n * sizeof *pos);       /* index in ORDER */
    uint32_t *indeg = calloc(n, sizeof *indeg);
    uint32_t *first = calloc((size_t)n + 1, sizeof *first);
    uint32_t *adj = malloc(((size_t)p->n_edges + 1) * sizeof *adj);
    uint32_t *adj_e = malloc(((size_t)p->n_edges + 1) * sizeof *adj_e);
    uint32_t *queue = malloc((size_t)n * sizeof *queue);
    double *st = malloc((size_t)n * sizeof *st), *fi = malloc((size_t)n * sizeof *fi);
    double *ready = calloc(n, sizeof *ready);
    double result = -1.0;
    if (!pos || !indeg || !first || !adj || !adj_e || !queue || !st || !fi || !ready)
        goto done;
    for (uint32_t t = 0; t < n; t++)
        pos[t] = UINT32_MAX;
    for (uint32_t d = 0; d < nd; d++) {
        if (order_first[d + 1] < order_first[d])
            goto done;
        for (uint32_t k = order_first[d]; k < order_first[d + 1]; k++) {
            uint32_t t = order[k];
            if (t >= n || pos[t] != UINT32_MAX || device[t] != d)
                goto done;
            double w = p->cost[(size_t)t * nd + d];
            if (!runnable(w) || (p->pin && p->pin[t] >= 0 && (uint32_t)p->pin[t] != d))
                goto done;
            pos[t] = k;
            if (k > order_first[d])
                indeg[t]++;
        }
    }
    for (uint32_t e = 0; e < p->n_edges; e++)
        indeg[p->edge_to[e]]++, first[p->edge_from[e] + 1]++;
    for (uint32_t t = 0; t < n; t++)
        first[t + 1] += first[t];
    for (uint32_t e = 0; e < p->n_edges; e++) {
        uint32_t k = first[p->edge_from[e]]++;
        adj[k] = p->edge_to[e];
        adj_e[k] = e;
    }
    for (uint32_t t = n; t > 0; t--)
        first[t] = first[t - 1];
    first[0] = 0;
    uint32_t head = 0, tail = 0;
    for (uint32_t t = 0; t < n; t++)
        if (!indeg[t])
            queue[tail++] = t;
    double makespan = 0.0;
    while (head < tail) {
        uint32_t t = queue[head++], d = device[t], k = pos[t];
        double s = ready[t];
        if (k > order_first[d] && fi[order[k - 1]] > s)
            s = fi[order[k - 1]];
        st[t] = s;
        fi[t] = s + p->cost[(size_t)t * nd + d];
        if (fi[t] > makespan)
            makespan = fi[t];
        for (uint32_t j = first[t]; j < first[t + 1]; j++) {
            uint32_t v = adj[j], e = adj_e[j];
            double arr = fi[t];
            if (device[v] != d)
                arr += p->latency[(size_t)d * nd + device[v]] +
                       p->edge_bytes[e] / p->bandwidth[(size_t)d * nd + device[v]];
            if (arr > ready[v])
                ready[v] = arr;
            if (--indeg[v] == 0)
                queue[tail++] = v;
        }
        if (k + 1 < order_first[d + 1] && --indeg[order[k + 1]] == 0)
            queue[tail++] = order[k + 1];
    }
    if (tail < n)
        goto done;
    if (start)
        memcpy(start, st, (size_t)n * sizeof *st);
    if (finish)
        memcpy(finish, fi, (size_t)n * sizeof *fi);
    result = makespan;
done:
    free(pos), free(indeg), free(first), free(adj), free(adj_e), free(queue), free(st), free(fi);
    free(ready);
    return result;
}

/* ---- results ----------------------------------------------------------------------------- */

void place_result_free(place_result *r)
{
    if (!r)
        return;
    free(r->device), free(r->start), free(r->finish), free(r->reason), free(r->order);
    free(r->order_first);
    r->device = NULL, r->start = r->finish = NULL, r->reason = NULL, r->order = NULL;
    r->order_first = NULL;
}

/* Fill R from the decoded schedule S. HEFT_DEV (may be NULL): HEFT's devices, so that a task the
 * search left where HEFT put it reads "earliest finish" rather than "search". BEFORE_ENERGY
 * (may be NULL): devices before the energy search, to mark the tasks it moved. */
static loom_status fill_result(const place_ctx *c, const place_sched *s, const uint32_t *heft_dev,
                               const uint32_t *before_energy, place_result *r, char *err,
                               size_t err_len)
{
    uint32_t n = c->n, nd = c->nd;
    size_t nn = (size_t)n + 1;
    r->device = malloc(nn * sizeof *r->device);
    r->start = malloc(nn * sizeof *r->start);
    r->finish = malloc(nn * sizeof *r->finish);
    r->reason = malloc(nn);
    r->order = malloc(nn * sizeof *r->order);
    r->order_first = malloc(((size_t)nd + 1) * sizeof *r->order_first);
    if (!r->device || !r->start || !r->finish || !r->reason || !r->order || !r->order_first) {
        place_result_free(r);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    uint32_t k = 0;
    for (uint32_t d = 0; d < nd; d++) {
        r->order_first[d] = k;
        for (uint32_t i = 0; i < s->slot_n[d]; i++)
            r->order[k++] = s->slot[(size_t)d * n + i];
    }
    r->order_first[nd] = k;
    for (uint32_t t = 0; t < n; t++) {
        r->device[t] = s->dev[t];
        uint8_t why = s->reason[t];
        if (why == PLACE_REASON_SEARCH && heft_dev && heft_dev[t] == s->dev[t])
            why = PLACE_REASON_EFT;
        if (before_energy && before_energy[t] != s->dev[t])
            why = PLACE_REASON_ENERGY;
        if (c->n_allowed[t] == 1)
            why = PLACE_REASON_ONLY_DEVICE;
        if (c->p->pin && c->p->pin[t] >= 0)
            why = PLACE_REASON_PINNED;
        r->reason[t] = why;
    }
    double ms = place_evaluate(c->p, r->device, r->order, r->order_first, r->start, r->finish);
    if (ms < 0.0 || (n && fabs(ms - s->makespan) > 1e-9 * (fabs(ms) + 1e-300) + 1e-15)) {
        place_result_free(r);
        fail(err, err_len, "internal error: schedule re-evaluates to %g, not %g", ms, s->makespan);
        return LOOM_ERR_INTERNAL;
    }
    r->makespan = ms;
    r->energy = place_energy(c, r->device);
    r->target_met = c->p->target_latency <= 0.0 || ms <= c->p->target_latency;
    return LOOM_OK;
}

/* ---- place_place ---------------------------------------------------------------------------- */

loom_status place_place(const place_problem *p, place_policy policy, double budget_s, place_result *r,
                     char *err, size_t err_len)
{
    if (!r)
        return fail(err, err_len, "no result");
    memset(r, 0, sizeof *r);
    loom_status st = place_validate(p, err, err_len);
    if (st != LOOM_OK)
        return st;
    if ((int)policy < PLACE_POLICY_DEFAULT || policy > PLACE_POLICY_FIRST)
        return fail(err, err_len, "unknown policy %d", (int)policy);
    double t0 = place_now();
    if (!(budget_s > 0.0))
        budget_s = policy == PLACE_POLICY_EXACT ? PLACE_EXACT_BUDGET : PLACE_DEFAULT_BUDGET;
    double deadline = t0 + budget_s;
    place_ctx c;
    st = place_ctx_init(&c, p);
    if (st != LOOM_OK)
        return st;
    uint32_t n = c.n;
    place_sched s, heft;
    int s_ok = place_sched_init(&s, &c) == LOOM_OK, h_ok = place_sched_init(&heft, &c) == LOOM_OK;
    double *key = malloc(((size_t)n + 1) * sizeof *key);
    double *tmp = malloc(((size_t)n + 1) * sizeof *tmp);
    int32_t *assign = malloc(((size_t)n + 1) * sizeof *assign);
    uint32_t *before = malloc(((size_t)n + 1) * sizeof *before);
    if (!s_ok || !h_ok || !key || !tmp || !assign || !before) {
        st = LOOM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    /* HEFT first: the baseline every report quotes, and the default policy's floor. */
    place_rank_upward(&c, 0, key);
    double heft_ms = place_decode(&c, &heft, key, NULL, PLACE_RULE_EFT);
    r->evaluations = 1;
    r->heft_makespan = heft_ms;
    double target = p->target_latency;
    int energy_phase = target > 0.0;
    double min_deadline = energy_phase ? t0 + 0.5 * budget_s : deadline;
    double ms = INFINITY;
    switch (policy) {
    case PLACE_POLICY_HEFT:
        place_sched_copy(&s, &heft, &c);
        ms = heft_ms;
        break;
    case PLACE_POLICY_PEFT:
        place_rank_oct(&c, key);
        ms = place_decode(&c, &s, key, NULL, PLACE_RULE_OEFT);
        r->evaluations++;
        break;
    case PLACE_POLICY_FIRST:
        /* Topological order, first device each: the naive baseline. */
        for (uint32_t i = 0; i < n; i++)
            key[c.topo[i]] = (double)(n - i);
        ms = place_decode(&c, &s, key, NULL, PLACE_RULE_FIRST);
        r->evaluations++;
        break;
    case PLACE_POLICY_DEFAULT:
    case PLACE_POLICY_EXACT: {
        uint64_t ev = 0;
        int exact = policy == PLACE_POLICY_EXACT || n <= PLACE_EXACT_TASKS;
        /* The exact search starts from the heuristic's best; give the heuristic a slice. */
        double search_deadline = min_deadline;
        if (exact)
            search_deadline = t0 + (policy == PLACE_POLICY_EXACT ? fmin(0.1, 0.05 * (min_deadline - t0))
                                                              : 0.3 * (min_deadline - t0));
        memcpy(tmp, key, n * sizeof *tmp); /* HEFT's key */
        st = place_search(&c, search_deadline, &heft, tmp, &s, key, assign, &ev);
        r->evaluations += ev;
        if (st != LOOM_OK) {
            fail(err, err_len, "no placement fits the devices' memory");
            goto done;
        }
        ms = s.makespan;
        if (exact) {
            int proven = 0;
            ev = 0;
            st = place_exact(&c, min_deadline, &s, key, assign, &ev, &proven);
            r->evaluations += ev;
            if (st != LOOM_OK)
                goto done;
            double m2 = place_decode(&c, &heft /* scratch */, key, assign, PLACE_RULE_EFT);
            if (m2 < ms) {
                place_sched_copy(&s, &heft, &c);
                ms = m2;
            } else {
                for (uint32_t t = 0; t < n; t++)
                    assign[t] = (int32_t)s.dev[t];
            }
            r->proven_optimal = proven;
            /* heft scratch was overwritten: decode HEFT again for the reasons. */
            place_rank_upward(&c, 0, tmp);
            place_decode(&c, &heft, tmp, NULL, PLACE_RULE_EFT);
        }
        break;
    }
    }
    if (!isfinite(ms)) {
        st = fail(err, err_len, "no placement fits the devices' memory");
        goto done;
    }
    if (!isfinite(heft_ms))
        r->heft_makespan = INFINITY;
    if (energy_phase && ms <= target) {
        for (uint32_t t = 0; t < n; t++) {
            before[t] = s.dev[t];
            assign[t] = (int32_t)s.dev[t];
        }
        /* KEY still holds the priorities S was decoded with, so KEY with every device fixed
         * reproduces S; the list policies get the greedy pass only. */
        uint64_t ev = 0;
        int ls = policy == PLACE_POLICY_DEFAULT || policy == PLACE_POLICY_EXACT;
        st = place_energy_search(&c, target, deadline, ls, key, assign, &s, &ev);
        r->evaluations += ev;
        if (st != LOOM_OK)
            goto done;
    }
    st = fill_result(&c, &s, isfinite(heft_ms) ? heft.dev : NULL,
                     energy_phase && ms <= target ? before : NULL, r, err, err_len);
done:
    if (s_ok)
        place_sched_free(&s);
    if (h_ok)
        place_sched_free(&heft);
    free(key), free(tmp), free(assign), free(before);
    place_ctx_free(&c);
    return st;
}
