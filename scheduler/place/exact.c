/*
 * Exact placement by branch and bound, for small problems. A schedule is built by appending one
 * ready task at a time to the end of one device's queue, at the earliest time the model allows.
 * Every as-early-as-possible schedule arises this way with non-decreasing start times (append
 * its tasks in order of start), so the search only appends a task that starts no earlier than
 * the one appended before it: each schedule is met about once, and every task still to come
 * starts no earlier than that start, which gives the bounds:
 *   - a task's earliest start (the last start, its placed inputs' arrival) plus the least-cost
 *     path from it to an exit;
 *   - the load bound: devices free from max(their end, last start), the remaining least costs
 *     spread over all devices.
 * The incumbent is the heuristic's best; children are tried by earliest finish first.
 */
#include "place_internal.h"

#include <stdlib.h>
#include <string.h>

#define PLACE_EXACT_MAX_TASKS 200

typedef struct bb_child {
    uint32_t t, d;
    double start, finish;
} bb_child;

typedef struct bb {
    const place_ctx *c;
    double deadline;
    uint64_t nodes;
    int timed_out;
    uint8_t *done;
    uint32_t *dev, *npred_left, *seq, *best_seq, *best_dev;
    double *start, *finish, *avail;
    double best;
    bb_child *kids; /* n * n * nd: the children of each depth */
    double rem_min; /* sum of wmin over tasks not placed */
    /* memory check at the leaves */
    double *ev_t, *ev_b;
    uint32_t *ev_i;
} bb;

/* Lower bound on the makespan of any completion of the current partial schedule whose later
 * tasks start at or after LAST_START; CUR_MS is the partial schedule's makespan. */
static double bound(const bb *b, double last_start, double cur_ms)
{
    const place_ctx *c = b->c;
    uint32_t nd = c->nd;
    double lb = cur_ms, load = b->rem_min;
    for (uint32_t d = 0; d < nd; d++)
        load += b->avail[d] > last_start ? b->avail[d] : last_start;
    load /= nd;
    if (load > lb)
        lb = load;
    for (uint32_t t = 0; t < c->n; t++) {
        if (b->done[t])
            continue;
        double est = last_start;
        for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++) {
            uint32_t q = c->pred_task[k];
            if (!b->done[q])
                continue;
            double arr = INFINITY;
            for (uint32_t d = 0; d < nd; d++)
                if (isfinite(c->w[(size_t)t * nd + d])) {
                    double a = b->finish[q] + place_comm(c, c->pred_edge[k], b->dev[q], d);
                    if (a < arr)
                        arr = a;
                }
            if (arr > est)
                est = arr;
        }
        if (est + c->blevel_min[t] > lb)
            lb = est + c->blevel_min[t];
    }
    return lb;
}

/* Extend the partial schedule of DEPTH tasks. */
static void branch(bb *b, uint32_t depth, double last_start, double cur_ms)
{
    const place_ctx *c = b->c;
    uint32_t n = c->n, nd = c->nd;
    if ((++b->nodes & 1023) == 0 && place_now() > b->deadline)
        b->timed_out = 1;
    if (b->timed_out)
        return;
    if (depth == n) {
        if (cur_ms < b->best * (1.0 - 1e-12)) {
            if (c->has_capacity &&
                place_memory_exceeded(c, b->dev, b->start, b->finish, b->ev_t, b->ev_b, b->ev_i))
                return;
            b->best = cur_ms;
            memcpy(b->best_seq, b->seq, n * sizeof *b->seq);
            memcpy(b->best_dev, b->dev, n * sizeof *b->dev);
        }
        return;
    }
    bb_child *kids = b->kids + (size_t)depth * n * nd;
    uint32_t nk = 0;
    for (uint32_t t = 0; t < n; t++) {
        if (b->done[t] || b->npred_left[t])
            continue;
        for (uint32_t d = 0; d < nd; d++) {
            double w = c->w[(size_t)t * nd + d];
            if (!isfinite(w))
                continue;
            double st = b->avail[d];
            for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++) {
                uint32_t q = c->pred_task[k];
                double arr = b->finish[q] + place_comm(c, c->pred_edge[k], b->dev[q], d);
                if (arr > st)
                    st = arr;
            }
            if (st < last_start)
                continue; /* met in another order */
            double ft = st + w;
            if (ft + c->blevel_min[t] - c->wmin[t] >= b->best * (1.0 - 1e-12))
                continue;
            bb_child k = {t, d, st, ft};
            uint32_t j = nk++;
            while (j > 0 && (kids[j - 1].finish > ft ||
                             (kids[j - 1].finish == ft && kids[j - 1].start > st))) {
                kids[j] = kids[j - 1];
                j--;
            }
            kids[j] = k;
        }
    }
    for (uint32_t i = 0; i < nk && !b->timed_out; i++) {
        bb_child k = kids[i];
        double old_avail = b->avail[k.d];
        double ms = k.finish > cur_ms ? k.finish : cur_ms;
        b->done[k.t] = 1;
        b->dev[k.t] = k.d;
        b->start[k.t] = k.start;
        b->finish[k.t] = k.finish;
        b->avail[k.d] = k.finish;
        b->seq[depth] = k.t;
        b->rem_min -= c->wmin[k.t];
        for (uint32_t j = c->succ_first[k.t]; j < c->succ_first[k.t + 1]; j++)
            b->npred_left[c->succ_task[j]]--;
        if (bound(b, k.start, ms) < b->best * (1.0 - 1e-12))
            branch(b, depth + 1, k.start, ms);
        for (uint32_t j = c->succ_first[k.t]; j < c->succ_first[k.t + 1]; j++)
            b->npred_left[c->succ_task[j]]++;
        b->rem_min += c->wmin[k.t];
        b->avail[k.d] = old_avail;
        b->done[k.t] = 0;
    }
}

loom_status place_exact(const place_ctx *c, double deadline, const place_sched *inc, double *key,
                      int32_t *assign, uint64_t *evals, int *proven)
{
    uint32_t n = c->n, nd = c->nd;
    size_t nn = (size_t)n + 1;
    bb b = {0};
    b.c = c;
    b.deadline = deadline;
    b.best = inc->makespan;
    b.done = calloc(nn, 1);
    b.dev = malloc(nn * sizeof *b.dev);
    b.npred_left = malloc(nn * sizeof *b.npred_left);
    b.seq = malloc(nn * sizeof *b.seq);
    b.best_seq = malloc(nn * sizeof *b.best_seq);
    b.best_dev = malloc(nn * sizeof *b.best_dev);
    b.start = malloc(nn * sizeof *b.start);
    b.finish = malloc(nn * sizeof *b.finish);
    b.avail = calloc(nd, sizeof *b.avail);
    b.kids = malloc((n > PLACE_EXACT_MAX_TASKS ? 1 : nn * nn * nd) * sizeof *b.kids);
    b.ev_t = malloc(2 * nn * sizeof *b.ev_t);
    b.ev_b = malloc(2 * nn * sizeof *b.ev_b);
    b.ev_i = malloc(2 * nn * sizeof *b.ev_i);
    loom_status st = LOOM_OK;
    if (!b.done || !b.dev || !b.npred_left || !b.seq || !b.best_seq || !b.best_dev || !b.start ||
        !b.finish || !b.avail || !b.kids || !b.ev_t || !b.ev_b || !b.ev_i) {
        st = LOOM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (uint32_t t = 0; t < n; t++) {
        b.npred_left[t] = c->pred_first[t + 1] - c->pred_first[t];
        b.rem_min += c->wmin[t];
    }
    double inc_ms = b.best;
    /* Beyond a few hundred tasks the tree is hopeless and the children table too big: the
     * incumbent stands, unproven. */
    if (n > PLACE_EXACT_MAX_TASKS) {
        *proven = 0;
        goto done;
    }
    if (bound(&b, 0.0, 0.0) < b.best * (1.0 - 1e-12))
        branch(&b, 0, 0.0, 0.0);
    *evals += b.nodes;
    *proven = !b.timed_out;
    if (b.best < inc_ms) {
        /* The start order as keys, devices fixed: the decoder reproduces it (or better). */
        for (uint32_t i = 0; i < n; i++) {
            key[b.best_seq[i]] = (double)(n - i);
            assign[b.best_seq[i]] = (int32_t)b.best_dev[b.best_seq[i]];
        }
    }
done:
    free(b.done), free(b.dev), free(b.npred_left), free(b.seq), free(b.best_seq);
    free(b.best_dev), free(b.start), free(b.finish), free(b.avail), free(b.kids);
    free(b.ev_t), free(b.ev_b), free(b.ev_i);
    return st;
}
