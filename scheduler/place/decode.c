/*
 * The list-scheduling decoder every policy is built on: ready tasks by decreasing key, each put
 * in the earliest gap of a device that fits it (insertion-based), the device fixed or chosen by
 * a rule (EFT, PEFT's OEFT, a one-level lookahead, first device). Also the memory bookkeeping:
 * a task's output is resident on its device from its start until its last consumer finishes.
 *
 * Decoding allocates nothing: place_sched holds every array, sized once per problem.
 */
#include "place_internal.h"

#include <stdlib.h>
#include <string.h>

loom_status place_sched_init(place_sched *s, const place_ctx *c)
{
    memset(s, 0, sizeof *s);
    size_t n = (size_t)c->n + 1, nd = c->nd;
    s->dev = malloc(n * sizeof *s->dev);
    s->start = malloc(n * sizeof *s->start);
    s->finish = malloc(n * sizeof *s->finish);
    s->reason = malloc(n);
    s->slot = malloc(n * nd * sizeof *s->slot);
    s->slot_n = calloc(nd, sizeof *s->slot_n);
    s->slot_st = malloc(n * nd * sizeof *s->slot_st);
    s->slot_fi = malloc(n * nd * sizeof *s->slot_fi);
    s->heap = malloc(n * sizeof *s->heap);
    s->npred_left = malloc(n * sizeof *s->npred_left);
    s->nsucc_left = malloc(n * sizeof *s->nsucc_left);
    s->mem_end = malloc(n * sizeof *s->mem_end);
    s->ev_t = malloc(2 * n * sizeof *s->ev_t);
    s->ev_b = malloc(2 * n * sizeof *s->ev_b);
    s->ev_i = malloc(2 * n * sizeof *s->ev_i);
    if (!s->dev || !s->start || !s->finish || !s->reason || !s->slot || !s->slot_n || !s->heap ||
        !s->slot_st || !s->slot_fi ||
        !s->npred_left || !s->nsucc_left || !s->mem_end || !s->ev_t || !s->ev_b || !s->ev_i) {
        place_sched_free(s);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    s->makespan = INFINITY;
    return LOOM_OK;
}

void place_sched_free(place_sched *s)
{
    free(s->dev), free(s->start), free(s->finish), free(s->reason), free(s->slot);
    free(s->slot_n), free(s->heap), free(s->npred_left), free(s->nsucc_left), free(s->mem_end);
    free(s->ev_t), free(s->ev_b), free(s->ev_i), free(s->slot_st), free(s->slot_fi);
    memset(s, 0, sizeof *s);
}

void place_sched_copy(place_sched *dst, const place_sched *src, const place_ctx *c)
{
    size_t n = c->n;
    memcpy(dst->dev, src->dev, n * sizeof *dst->dev);
    memcpy(dst->start, src->start, n * sizeof *dst->start);
    memcpy(dst->finish, src->finish, n * sizeof *dst->finish);
    memcpy(dst->reason, src->reason, n);
    for (uint32_t d = 0; d < c->nd; d++) {
        size_t o = (size_t)d * n, k = src->slot_n[d];
        memcpy(dst->slot + o, src->slot + o, k * sizeof *dst->slot);
        memcpy(dst->slot_st + o, src->slot_st + o, k * sizeof *dst->slot_st);
        memcpy(dst->slot_fi + o, src->slot_fi + o, k * sizeof *dst->slot_fi);
    }
    memcpy(dst->slot_n, src->slot_n, c->nd * sizeof *dst->slot_n);
    dst->makespan = src->makespan;
}

/* ---- the ready heap: max key first, then lowest index ------------------------------------- */

/* Whether task A goes before task B. */
static inline int before(const double *key, uint32_t a, uint32_t b)
{
    return key[a] > key[b] || (key[a] == key[b] && a < b);
}

static void heap_push(uint32_t *h, uint32_t *n, const double *key, uint32_t t)
{
    uint32_t i = (*n)++;
    while (i > 0) {
        uint32_t up = (i - 1) / 2;
        if (!before(key, t, h[up]))
            break;
        h[i] = h[up];
        i = up;
    }
    h[i] = t;
}

static uint32_t heap_pop(uint32_t *h, uint32_t *n, const double *key)
{
    uint32_t top = h[0], last = h[--(*n)], i = 0, m = *n;
    for (;;) {
        uint32_t ch = 2 * i + 1;
        if (ch >= m)
            break;
        if (ch + 1 < m && before(key, h[ch + 1], h[ch]))
            ch++;
        if (!before(key, h[ch], last))
            break;
        h[i] = h[ch];
        i = ch;
    }
    h[i] = last;
    return top;
}

/* ---- gaps and memory --------------------------------------------------------------------- */

/* Earliest start >= READY of a task lasting W among device D's tasks; *POS gets its place. */
static double find_slot(const place_sched *s, const place_ctx *c, uint32_t d, double ready, double w,
                        uint32_t *pos)
{
    const double *sst = s->slot_st + (size_t)d * c->n, *sfi = s->slot_fi + (size_t)d * c->n;
    uint32_t cnt = s->slot_n[d], lo = 0, hi = cnt;
    /* Finishes are sorted too (tasks on a device do not overlap): skip those done by READY. */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (sfi[mid] > ready)
            hi = mid;
        else
            lo = mid + 1;
    }
    double st = ready;
    for (uint32_t k = lo;; k++) {
        if (k == cnt || st + w <= sst[k]) {
            *pos = k;
            return st;
        }
        st = sfi[k]; /* > READY: past the binary search */
    }
}

/* Sort events (time, bytes) by time, releases (negative bytes) before allocations at a tie. */
static void sort_events(double *t, double *b, uint32_t *idx, uint32_t m)
{
    /* Shell sort on an index: no allocation, no recursion, fast enough for the sizes that carry
     * capacities. */
    for (uint32_t i = 0; i < m; i++)
        idx[i] = i;
    static const uint32_t gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t g = 0; g < sizeof gaps / sizeof *gaps; g++) {
        uint32_t gap = gaps[g];
        for (uint32_t i = gap; i < m; i++) {
            uint32_t v = idx[i], j = i;
            while (j >= gap && (t[idx[j - gap]] > t[v] ||
                                (t[idx[j - gap]] == t[v] && b[idx[j - gap]] > b[v]))) {
                idx[j] = idx[j - gap];
                j -= gap;
            }
            idx[j] = v;
        }
    }
}

/* Whether BYTES more, resident on device D from time FROM on, keep D within its capacity given
 * what the tasks already there hold (their outputs' ends are INFINITY while a consumer is not
 * placed yet, so the check is conservative and stays true once the rest is placed). */
static int memory_fits(const place_ctx *c, place_sched *s, uint32_t d, double from, double bytes)
{
    double cap = c->cap[d];
    if (!isfinite(cap))
        return 1;
    const uint32_t *sl = s->slot + (size_t)d * c->n;
    uint32_t cnt = s->slot_n[d], m = 0;
    double total = bytes;
    for (uint32_t k = 0; k < cnt; k++)
        total += c->out_bytes[sl[k]];
    if (total <= cap)
        return 1;
    if (bytes > cap)
        return 0;
    /* Sweep the profile from FROM on. */
    double base = bytes;
    for (uint32_t k = 0; k < cnt; k++) {
        uint32_t q = sl[k];
        double ob = c->out_bytes[q], end = s->mem_end[q];
        if (ob <= 0.0 || end <= from)
            continue;
        if (s->start[q] <= from) {
            base += ob;
        } else {
            s->ev_t[m] = s->start[q], s->ev_b[m] = ob, m++;
        }
        if (isfinite(end))
            s->ev_t[m] = end, s->ev_b[m] = -ob, m++;
    }
    if (base > cap)
        return 0;
    sort_events(s->ev_t, s->ev_b, s->ev_i, m);
    double cur = base;
    for (uint32_t i = 0; i < m; i++) {
        cur += s->ev_b[s->ev_i[i]];
        if (cur > cap * (1 + 1e-12))
            return 0;
    }
    return 1;
}

int place_memory_exceeded(const place_ctx *c, const uint32_t *dev, const double *start,
                        const double *finish, double *ev_t, double *ev_b, uint32_t *ev_i)
{
    if (!c->has_capacity)
        return 0;
    for (uint32_t d = 0; d < c->nd; d++) {
        if (!isfinite(c->cap[d]))
            continue;
        uint32_t m = 0;
        for (uint32_t t = 0; t < c->n; t++) {
            if (dev[t] != d || c->out_bytes[t] <= 0.0)
                continue;
            double end = INFINITY;
            if (c->succ_first[t + 1] > c->succ_first[t]) {
                end = 0.0;
                for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++)
                    if (finish[c->succ_task[k]] > end)
                        end = finish[c->succ_task[k]];
            }
            ev_t[m] = start[t], ev_b[m] = c->out_bytes[t], m++;
            if (isfinite(end))
                ev_t[m] = end, ev_b[m] = -c->out_bytes[t], m++;
        }
        sort_events(ev_t, ev_b, ev_i, m);
        double cur = 0.0;
        for (uint32_t i = 0; i < m; i++) {
            cur += ev_b[ev_i[i]];
            if (cur > c->cap[d] * (1 + 1e-12))
                return 1;
        }
    }
    return 0;
}

/* ---- the decoder ------------------------------------------------------------------------- */

/* One-level lookahead: the latest of T's children's best estimated finish if T finishes at FT
 * on device D (other inputs of a child and gaps are ignored: an estimate, used to rank). */
static double lookahead(const place_ctx *c, const place_sched *s, uint32_t t, uint32_t d, double ft)
{
    uint32_t nd = c->nd;
    double worst = ft;
    for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++) {
        uint32_t ch = c->succ_task[k], e = c->succ_edge[k];
        double best = INFINITY;
        for (uint32_t d2 = 0; d2 < nd; d2++) {
            double w = c->w[(size_t)ch * nd + d2];
            if (!isfinite(w))
                continue;
            double arr = ft + place_comm(c, e, d, d2);
            double avail = 0.0;
            if (d2 == d)
                avail = ft;
            else if (s->slot_n[d2])
                avail = s->slot_fi[(size_t)d2 * c->n + s->slot_n[d2] - 1];
            double f = (arr > avail ? arr : avail) + w;
            if (f < best)
                best = f;
        }
        if (best > worst)
            worst = best;
    }
    return worst;
}

double place_decode(const place_ctx *c, place_sched *s, const double *key, const int32_t *assign,
                  place_rule rule)
{
    uint32_t n = c->n, nd = c->nd, hn = 0;
    const int mem = c->has_capacity;
    memset(s->slot_n, 0, nd * sizeof *s->slot_n);
    for (uint32_t t = 0; t < n; t++) {
        s->npred_left[t] = c->pred_first[t + 1] - c->pred_first[t];
        s->nsucc_left[t] = c->succ_first[t + 1] - c->succ_first[t];
        s->mem_end[t] = INFINITY;
        if (!s->npred_left[t])
            heap_push(s->heap, &hn, key, t);
    }
    double makespan = 0.0;
    while (hn) {
        uint32_t t = heap_pop(s->heap, &hn, key);
        int32_t fixed = assign ? assign[t] : -1;
        uint32_t best_d = UINT32_MAX, best_pos = 0, free_d = UINT32_MAX;
        double best_score = INFINITY, best_ft = INFINITY, best_st = 0.0;
        double free_score = INFINITY, free_ft = INFINITY;
        for (uint32_t d = 0; d < nd; d++) {
            if (fixed >= 0 && d != (uint32_t)fixed)
                continue;
            double w = c->w[(size_t)t * nd + d];
            if (!isfinite(w))
                continue;
            double ready = 0.0;
            for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++) {
                uint32_t q = c->pred_task[k];
                double arr = s->finish[q] + place_comm(c, c->pred_edge[k], s->dev[q], d);
                if (arr > ready)
                    ready = arr;
            }
            uint32_t pos;
            double st = find_slot(s, c, d, ready, w, &pos);
            double ft = st + w, score;
            switch (fixed >= 0 ? PLACE_RULE_EFT : rule) {
            case PLACE_RULE_OEFT: score = ft + c->oct[(size_t)t * nd + d]; break;
            case PLACE_RULE_LOOKAHEAD: score = lookahead(c, s, t, d, ft); break;
            case PLACE_RULE_FIRST: score = (double)d; break;
            default: score = ft; break;
            }
            if (score < free_score || (score == free_score && ft < free_ft))
                free_score = score, free_ft = ft, free_d = d;
            if (mem && !memory_fits(c, s, d, st, c->out_bytes[t]))
                continue;
            if (score < best_score || (score == best_score && ft < best_ft)) {
                best_score = score, best_ft = ft, best_st = st, best_d = d, best_pos = pos;
            }
        }
        if (best_d == UINT32_MAX) {
            s->makespan = INFINITY;
            return INFINITY;
        }
        size_t o = (size_t)best_d * n, tail = s->slot_n[best_d] - best_pos;
        uint32_t *sl = s->slot + o;
        double *sst = s->slot_st + o, *sfi = s->slot_fi + o;
        memmove(sl + best_pos + 1, sl + best_pos, tail * sizeof *sl);
        memmove(sst + best_pos + 1, sst + best_pos, tail * sizeof *sst);
        memmove(sfi + best_pos + 1, sfi + best_pos, tail * sizeof *sfi);
        sl[best_pos] = t;
        sst[best_pos] = best_st;
        sfi[best_pos] = best_ft;
        s->slot_n[best_d]++;
        s->dev[t] = best_d;
        s->start[t] = best_st;
        s->finish[t] = best_ft;
        s->reason[t] = fixed >= 0 ? PLACE_REASON_SEARCH
                       : rule == PLACE_RULE_FIRST ? PLACE_REASON_FIRST : PLACE_REASON_EFT;
        if (free_d != best_d)
            s->reason[t] = PLACE_REASON_CAPACITY;
        if (best_ft > makespan)
            makespan = best_ft;
        if (mem)
            for (uint32_t k = c->pred_first[t]; k < c->pred_first[t + 1]; k++) {
                uint32_t q = c->pred_task[k];
                if (--s->nsucc_left[q] == 0) {
                    double end = 0.0;
                    for (uint32_t j = c->succ_first[q]; j < c->succ_first[q + 1]; j++)
                        if (s->finish[c->succ_task[j]] > end)
                            end = s->finish[c->succ_task[j]];
                    s->mem_end[q] = end;
                }
            }
        for (uint32_t k = c->succ_first[t]; k < c->succ_first[t + 1]; k++) {
            uint32_t v = c->succ_task[k];
            if (--s->npred_left[v] == 0)
                heap_push(s->heap, &hn, key, v);
        }
    }
    s->makespan = makespan;
    return makespan;
}
