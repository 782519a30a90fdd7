/*
 * Loom's default placement: a portfolio of list schedules (priority orders from HEFT's upward
 * rank with mean/least/greatest costs, PEFT's optimistic costs and a CPOP-like path length;
 * device rules EFT, OEFT and a one-level lookahead), HEFT itself included so the result is never
 * worse than HEFT, then a local search over (priority key, device) pairs aimed at the critical
 * path: move a critical task to another device, co-locate it with the predecessor whose data it
 * waits for, swap it ahead of the task that holds its device, or free a few tasks around it and
 * let EFT re-place them. Every candidate is re-timed by the decoder; acceptance is a short
 * annealing threshold that cools to zero at the deadline, with restarts from the best.
 *
 * Also the energy search under a latency target: greedy moves to cheaper devices while the
 * makespan stays within the target, then random moves.
 */
#include "place_internal.h"

#include <stdlib.h>
#include <string.h>

/* A priority order and a device rule: one member of the portfolio. */
typedef struct member {
    int key;  /* 0..2: upward rank with mean/min/max costs, 3: mean OCT, 4: CPOP */
    place_rule rule;
} member;

static const member portfolio[] = {
    {0, PLACE_RULE_EFT}, /* HEFT: first, always run */
    {3, PLACE_RULE_OEFT}, /* PEFT */
    {0, PLACE_RULE_LOOKAHEAD}, {3, PLACE_RULE_EFT}, {0, PLACE_RULE_OEFT}, {4, PLACE_RULE_EFT},
    {1, PLACE_RULE_EFT}, {2, PLACE_RULE_EFT}, {3, PLACE_RULE_LOOKAHEAD}, {4, PLACE_RULE_OEFT},
    {1, PLACE_RULE_OEFT}, {2, PLACE_RULE_OEFT}, {4, PLACE_RULE_LOOKAHEAD}, {1, PLACE_RULE_LOOKAHEAD},
    {2, PLACE_RULE_LOOKAHEAD},
};

/* Fill KEY with priority order number WHICH (see member.key). */
static void make_key(const place_ctx *c, int which, double *key, double *scratch)
{
    if (which <= 2)
        place_rank_upward(c, which, key);
    else if (which == 3)
        place_rank_oct(c, key);
    else
        place_rank_cpop(c, key, scratch);
}

/* The working state of the local search. */
typedef struct ls_buf {
    place_sched s;
    double *key;
    int32_t *assign;
} ls_buf;

static loom_status buf_init(ls_buf *b, const place_ctx *c)
{
    b->key = malloc(((size_t)c->n + 1) * sizeof *b->key);
    b->assign = malloc(((size_t)c->n + 1) * sizeof *b->assign);
    if (!b->key || !b->assign || place_sched_init(&b->s, c) != LOOM_OK) {
        free(b->key), free(b->assign);
        b->key = NULL, b->assign = NULL;
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    return LOOM_OK;
}

static void buf_free(ls_buf *b)
{
    if (b->key)
        place_sched_free(&b->s);
    free(b->key), free(b->assign);
}

/* The critical chain of S, last task first: CHAIN[i] waits for LINK[i] (UINT32_MAX: nothing),
 * through data when KIND[i] is 1, for the device when 2. POS is scratch (per task). Returns the
 * chain's length. */
static uint32_t critical_chain(const place_ctx *c, const place_sched *s, uint32_t *chain,
                               uint32_t *link, uint8_t *kind, uint32_t *pos)
{
    uint32_t n = c->n;
    if (!n)
        return 0;
    for (uint32_t d = 0; d < c->nd; d++)
        for (uint32_t k = 0; k < s->slot_n[d]; k++)
            pos[s->slot[(size_t)d * n + k]] = k;
    uint32_t t = 0;
    for (uint32_t u = 1; u < n; u++)
        if (s->finish[u] > s->finish[t])
            t = u;
    uint32_t len = 0;
    while (len < n) {
        double ready = 0.0;
        uint32_t dp = UINT32_MAX;
        for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++) {
            uint32_t q = c->pred_task[k];
            double arr = s->finish[q] + place_comm(c, c->pred_edge[k], s->dev[q], s->dev[t]);
            if (dp == UINT32_MAX || arr > ready)
                ready = arr, dp = q;
        }
        uint32_t d = s->dev[t], prev = UINT32_MAX;
        if (pos[t] > 0)
            prev = s->slot[(size_t)d * n + pos[t] - 1];
        chain[len] = t;
        if (dp != UINT32_MAX && ready >= s->start[t]) {
            link[len] = dp, kind[len] = 1;
        } else if (prev != UINT32_MAX && s->finish[prev] >= s->start[t]) {
            link[len] = prev, kind[len] = 2;
        } else {
            link[len] = UINT32_MAX, kind[len] = 0;
        }
        uint32_t next = link[len++];
        if (next == UINT32_MAX)
            break;
        t = next;
    }
    return len;
}

/* A random device that may run T other than its current one; UINT32_MAX when none. */
static uint32_t other_device(const place_ctx *c, uint32_t t, uint32_t cur, uint64_t *rng)
{
    uint32_t nd = c->nd, cnt = 0;
    for (uint32_t d = 0; d < nd; d++)
        cnt += d != cur && isfinite(c->w[(size_t)t * nd + d]);
    if (!cnt)
        return UINT32_MAX;
    uint32_t pick = (uint32_t)(place_rand(rng) % cnt);
    for (uint32_t d = 0; d < nd; d++)
        if (d != cur && isfinite(c->w[(size_t)t * nd + d]) && pick-- == 0)
            return d;
    return UINT32_MAX;
}

/* Whether T may run on D. */
static int allowed(const place_ctx *c, uint32_t t, uint32_t d)
{
    return isfinite(c->w[(size_t)t * c->nd + d]);
}

loom_status place_search(const place_ctx *c, double deadline, const place_sched *heft,
                       const double *heft_key, place_sched *best, double *key, int32_t *assign,
                       uint64_t *evals)
{
    uint32_t n = c->n;
    size_t nn = (size_t)n + 1;
    double t0 = place_now();
    /* Search time scales down for large graphs: at 10,000 tasks a tenth of the budget. */
    if (n > 1000)
        deadline = t0 + (deadline - t0) * (1000.0 / n);
    ls_buf cur = {0}, cand = {0};
    double *scratch = malloc(nn * sizeof *scratch);
    uint32_t *chain = malloc(nn * sizeof *chain), *link = malloc(nn * sizeof *link);
    uint32_t *pos = malloc(nn * sizeof *pos);
    uint8_t *kind = malloc(nn);
    loom_status st = LOOM_OK;
    if (!scratch || !chain || !link || !pos || !kind || buf_init(&cur, c) != LOOM_OK ||
        buf_init(&cand, c) != LOOM_OK) {
        st = LOOM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    /* Portfolio: HEFT (given), then the others while time allows. */
    place_sched_copy(best, heft, c);
    memcpy(key, heft_key, n * sizeof *key);
    double first_cost = 0.0;
    for (size_t m = 1; m < sizeof portfolio / sizeof *portfolio; m++) {
        double now = place_now();
        if (m == 2)
            first_cost = now - t0;
        /* After PEFT, a member runs only when the time left is well above its cost. */
        if (m >= 2 && now + 4.0 * first_cost > deadline)
            break;
        make_key(c, portfolio[m].key, cand.key, scratch);
        double ms = place_decode(c, &cand.s, cand.key, NULL, portfolio[m].rule);
        (*evals)++;
        if (ms < best->makespan) {
            place_sched_copy(best, &cand.s, c);
            memcpy(key, cand.key, n * sizeof *key);
        }
    }
    /* Everything on one device: when transfers dominate, often the best there is. */
    for (uint32_t d = 0; d < c->nd && place_now() + first_cost < deadline; d++) {
        uint32_t t = 0;
        while (t < n && allowed(c, t, d))
            t++;
        if (t < n || n == 0)
            continue;
        for (t = 0; t < n; t++)
            cand.assign[t] = (int32_t)d;
        double ms = place_decode(c, &cand.s, heft_key, cand.assign, PLACE_RULE_EFT);
        (*evals)++;
        if (ms < best->makespan) {
            place_sched_copy(best, &cand.s, c);
            memcpy(key, heft_key, n * sizeof *key);
        }
    }
    if (!isfinite(best->makespan)) {
        st = LOOM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (uint32_t t = 0; t < n; t++)
        assign[t] = (int32_t)best->dev[t];
    /* Local search from the best member. */
    uint64_t rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)n * 0x100000001B3ULL) ^ c->ne;
    place_sched_copy(&cur.s, best, c);
    memcpy(cur.key, key, n * sizeof *key);
    memcpy(cur.assign, assign, n * sizeof *assign);
    uint32_t len = critical_chain(c, &cur.s, chain, link, kind, pos);
    double t_ls = place_now(), span = deadline - t_ls;
    uint64_t since_best = 0, restart_after = 50 + 20 * (uint64_t)n;
    const double T0 = 0.01;
    uint64_t iter = 0;
    while (n > 1 && len > 0) {
        double now = place_now();
        if (now >= deadline)
            break;
        double temp = span > 0.0 ? T0 * (1.0 - (now - t_ls) / span) : 0.0;
        iter++;
        memcpy(cand.key, cur.key, n * sizeof *cand.key);
        memcpy(cand.assign, cur.assign, n * sizeof *cand.assign);
        uint32_t i = (uint32_t)(place_rand(&rng) % len), t = chain[i], l = link[i];
        double r = place_rand01(&rng);
        int changed = 0;
        if (r < 0.08) {
            /* Anywhere: a random task to a random device. */
            uint32_t u = (uint32_t)(place_rand(&rng) % n);
            uint32_t d = other_device(c, u, cur.s.dev[u], &rng);
            if (d != UINT32_MAX)
                cand.assign[u] = (int32_t)d, changed = 1;
        } else if (r < 0.25 && kind[i] == 1 && cur.s.dev[l] != cur.s.dev[t]) {
            /* Co-locate with the predecessor whose data T waits for. */
            if (place_rand(&rng) & 1) {
                if (allowed(c, t, cur.s.dev[l]))
                    cand.assign[t] = (int32_t)cur.s.dev[l], changed = 1;
            } else if (allowed(c, l, cur.s.dev[t])) {
                cand.assign[l] = (int32_t)cur.s.dev[t], changed = 1;
            }
        } else if (r < 0.45 && kind[i] == 2) {
            /* T waits for its device: go ahead of the task holding it, or move that task. */
            if (place_rand(&rng) & 1) {
                double tmp = cand.key[t];
                cand.key[t] = cand.key[l];
                cand.key[l] = tmp;
                if (cand.key[t] == cand.key[l])
                    cand.key[t] = nextafter(cand.key[l], INFINITY);
                changed = 1;
            } else {
                uint32_t d = other_device(c, l, cur.s.dev[l], &rng);
                if (d != UINT32_MAX)
                    cand.assign[l] = (int32_t)d, changed = 1;
            }
        } else if (r < 0.55) {
            /* Gather T and its neighbours on one device (the link's, or a random one): a
             * cluster moves where single moves would each pay a transfer first. */
            uint32_t d = l != UINT32_MAX && (place_rand(&rng) & 1) ? cur.s.dev[l]
                                                                  : (uint32_t)(place_rand(&rng) % c->nd);
            if (allowed(c, t, d))
                cand.assign[t] = (int32_t)d, changed = 1;
            for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++)
                if (allowed(c, c->pred_task[k], d))
                    cand.assign[c->pred_task[k]] = (int32_t)d, changed = 1;
            for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++)
                if (allowed(c, c->succ_task[k], d))
                    cand.assign[c->succ_task[k]] = (int32_t)d, changed = 1;
        } else if (r < 0.72) {
            /* Free T and some neighbours; EFT re-places them. */
            cand.assign[t] = -1;
            uint32_t deg = (c->pred_first[t + 1] - c->pred_first[t]) +
                           (c->succ_first[t + 1] - c->succ_first[t]);
            for (uint32_t j = 0; j < 3 && deg; j++) {
                uint32_t k = (uint32_t)(place_rand(&rng) % deg);
                uint32_t np = c->pred_first[t + 1] - c->pred_first[t];
                uint32_t u = k < np ? c->pred_task[c->pred_first[t] + k]
                                    : c->succ_task[c->succ_first[t] + k - np];
                cand.assign[u] = -1;
            }
            if (place_rand(&rng) & 1) {
                uint32_t j = (uint32_t)(place_rand(&rng) % len);
                cand.assign[chain[j]] = -1;
            }
            changed = 1;
        } else if (r < 0.80) {
            /* Nudge T's priority. */
            cand.key[t] *= 1.0 + 0.2 * (place_rand01(&rng) - 0.3);
            changed = 1;
        }
        if (!changed) {
            uint32_t d = other_device(c, t, cur.s.dev[t], &rng);
            if (d == UINT32_MAX)
                continue;
            cand.assign[t] = (int32_t)d;
        }
        double ms = place_decode(c, &cand.s, cand.key, cand.assign, PLACE_RULE_EFT);
        (*evals)++;
        since_best++;
        if (!isfinite(ms))
            continue;
        if (ms <= cur.s.makespan * (1.0 + temp)) {
            for (uint32_t u = 0; u < n; u++)
                cand.assign[u] = (int32_t)cand.s.dev[u];
            ls_buf tmp = cur;
            cur = cand;
            cand = tmp;
            if (ms < best->makespan) {
                place_sched_copy(best, &cur.s, c);
                memcpy(key, cur.key, n * sizeof *key);
                memcpy(assign, cur.assign, n * sizeof *assign);
                since_best = 0;
            }
            len = critical_chain(c, &cur.s, chain, link, kind, pos);
        }
        if (since_best > restart_after) {
            place_sched_copy(&cur.s, best, c);
            memcpy(cur.key, key, n * sizeof *key);
            memcpy(cur.assign, assign, n * sizeof *assign);
            len = critical_chain(c, &cur.s, chain, link, kind, pos);
            since_best = 0;
        }
    }
    /* Reasons: what the search fixed reads "search"; fill_result turns those HEFT agrees with
     * back into "earliest finish". Tasks placed by a portfolio member keep the member's. */
    (void)iter;
done:
    buf_free(&cur);
    buf_free(&cand);
    free(scratch), free(chain), free(link), free(pos), free(kind);
    return st;
}

/* ---- energy under a latency target -------------------------------------------------------- */

/* Energy of T on D. */
static double task_energy(const place_ctx *c, uint32_t t, uint32_t d)
{
    return c->p->cost[(size_t)t * c->nd + d] * (c->p->power ? c->p->power[d] : 1.0);
}

loom_status place_energy_search(const place_ctx *c, double target, double deadline,
                              int local_search, double *key, int32_t *assign, place_sched *s,
                              uint64_t *evals)
{
    uint32_t n = c->n, nd = c->nd;
    size_t nn = (size_t)n + 1;
    place_sched cand;
    double *save = malloc(nn * sizeof *save), *ckey = malloc(nn * sizeof *ckey);
    uint32_t *idx = malloc(nn * sizeof *idx);
    if (!save || !idx || !ckey || place_sched_init(&cand, c) != LOOM_OK) {
        free(save), free(idx), free(ckey);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    double ms = place_decode(c, s, key, assign, PLACE_RULE_EFT);
    (*evals)++;
    double energy = place_energy(c, s->dev);
    /* Greedy: tasks with most to save first, each to the cheapest device that keeps the target. */
    int changed = 1;
    while (changed && place_now() < deadline) {
        changed = 0;
        uint32_t m = 0;
        for (uint32_t t = 0; t < n; t++) {
            double best = task_energy(c, t, s->dev[t]);
            for (uint32_t d = 0; d < nd; d++)
                if (allowed(c, t, d) && task_energy(c, t, d) < best)
                    best = task_energy(c, t, d);
            save[t] = task_energy(c, t, s->dev[t]) - best;
            if (save[t] > 0.0)
                idx[m++] = t;
        }
        /* Insertion sort by saving, largest first (stable: lower index on ties). */
        for (uint32_t i = 1; i < m; i++) {
            uint32_t v = idx[i], j = i;
            while (j > 0 && save[idx[j - 1]] < save[v]) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = v;
        }
        for (uint32_t i = 0; i < m && place_now() < deadline; i++) {
            uint32_t t = idx[i], old = s->dev[t];
            /* Try the devices cheaper than the current one, cheapest first. */
            double floor = -1.0;
            for (;;) {
                uint32_t pick = UINT32_MAX;
                double pe = task_energy(c, t, old);
                for (uint32_t d = 0; d < nd; d++) {
                    double e = task_energy(c, t, d);
                    if (d != old && allowed(c, t, d) && e < pe && e > floor)
                        pick = d, pe = e;
                }
                if (pick == UINT32_MAX)
                    break;
                floor = pe;
                assign[t] = (int32_t)pick;
                double m2 = place_decode(c, &cand, key, assign, PLACE_RULE_EFT);
                (*evals)++;
                if (m2 <= target) {
                    place_sched_copy(s, &cand, c);
                    ms = m2;
                    energy = place_energy(c, s->dev);
                    changed = 1;
                    break;
                }
                assign[t] = (int32_t)old;
            }
        }
    }
    /* Random moves: a task to a cheaper device, or a priority nudge that may shorten the
     * schedule and so make room for the next move. */
    uint64_t rng = 0xD1B54A32D192ED03ULL ^ n;
    while (local_search && n > 0 && place_now() < deadline) {
        uint32_t t = (uint32_t)(place_rand(&rng) % n), old = s->dev[t];
        int prio = place_rand01(&rng) < 0.3;
        memcpy(ckey, key, n * sizeof *ckey);
        if (prio) {
            ckey[t] *= 1.0 + 0.2 * (place_rand01(&rng) - 0.3);
        } else {
            uint32_t d = other_device(c, t, old, &rng);
            if (d == UINT32_MAX || task_energy(c, t, d) >= task_energy(c, t, old))
                continue;
            assign[t] = (int32_t)d;
        }
        double m2 = place_decode(c, &cand, ckey, assign, PLACE_RULE_EFT);
        (*evals)++;
        double e2 = isfinite(m2) ? place_energy(c, cand.dev) : INFINITY;
        if (m2 <= target && (e2 < energy || (prio && e2 <= energy && m2 <= ms))) {
            place_sched_copy(s, &cand, c);
            memcpy(key, ckey, n * sizeof *key);
            ms = m2, energy = e2;
        } else {
            assign[t] = (int32_t)old;
        }
    }
    (void)ms;
    place_sched_free(&cand);
    free(save), free(idx), free(ckey);
    return LOOM_OK;
}
