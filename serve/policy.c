/*
 * The batching policy: run-time estimates per batch size and the decision to dispatch a batch
 * now or wait for more rows. Pure functions of their arguments, so tests drive them with a
 * fake clock. Also the small shared pieces: the monotonic clock, the thread's serving message
 * and histograms.
 */
#include "serve_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The message is thread-local on purpose, as loom_last_error is: each thread reads what its
 * own calls did. */
static _Thread_local char serve_error[1024];

const char *loom_serve_last_error(void)
{
    return serve_error;
}

loom_status sv_error(loom_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(serve_error, sizeof serve_error, fmt, ap);
    va_end(ap);
    return status;
}

loom_serve_code sv_refuse(loom_serve_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(serve_error, sizeof serve_error, fmt, ap);
    va_end(ap);
    return code;
}

double sv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *loom_serve_code_name(loom_serve_code code)
{
    switch (code) {
    case LOOM_SERVE_OK: return "ok";
    case LOOM_SERVE_BAD_REQUEST: return "bad_request";
    case LOOM_SERVE_NOT_FOUND: return "not_found";
    case LOOM_SERVE_QUEUE_FULL: return "queue_full";
    case LOOM_SERVE_DEADLINE: return "deadline";
    case LOOM_SERVE_UNAVAILABLE: return "unavailable";
    case LOOM_SERVE_FAILED: return "failed";
    }
    return "unknown";
}

/* ---- estimates --------------------------------------------------------------------------- */

void sv_estimates_init(sv_estimates *e, uint32_t max_batch, int exact)
{
    memset(e, 0, sizeof *e);
    if (max_batch < 1)
        max_batch = 1;
    if (exact) {
        for (uint32_t s = 1; s <= max_batch && e->n_sizes < SV_MAX_SIZES; s++)
            e->sizes[e->n_sizes++] = s;
        return;
    }
    for (uint32_t s = 1; s < max_batch && e->n_sizes < SV_MAX_SIZES - 1; s *= 2)
        e->sizes[e->n_sizes++] = s;
    e->sizes[e->n_sizes++] = max_batch;
}

uint32_t sv_size_index(const sv_estimates *e, uint32_t rows)
{
    for (uint32_t i = 0; i < e->n_sizes; i++)
        if (e->sizes[i] >= rows)
            return i;
    return e->n_sizes;
}

double sv_estimate(const sv_estimates *e, uint32_t i)
{
    if (i >= e->n_sizes)
        return 0;
    /* Once anything is measured, seeds (the cost model's predictions) are not mixed with
     * measurements: an optimistic seed for a big batch would make the batcher wait for it. */
    int any_measured = 0;
    for (uint32_t k = 0; k < e->n_sizes; k++)
        any_measured |= e->measured[k] > 0;
    if (e->seconds[i] > 0 && (e->measured[i] || !any_measured))
        return e->seconds[i];
    /* Nearest known size: a bigger batch is assumed to cost proportionally more (an upper
     * bound on CPUs and GPUs alike), a smaller one as much as the known one. */
    uint32_t best = e->n_sizes;
    for (uint32_t k = 0; k < e->n_sizes; k++) {
        if (e->seconds[k] <= 0 || (any_measured && !e->measured[k]))
            continue;
        if (best == e->n_sizes ||
            fabs((double)e->sizes[k] - e->sizes[i]) < fabs((double)e->sizes[best] - e->sizes[i]))
            best = k;
    }
    if (best == e->n_sizes)
        return 0;
    if (e->sizes[best] < e->sizes[i])
        return e->seconds[best] * e->sizes[i] / e->sizes[best];
    return e->seconds[best];
}

void sv_estimate_seed(sv_estimates *e, uint32_t i, double seconds)
{
    if (i < e->n_sizes && e->measured[i] == 0 && seconds > 0)
        e->seconds[i] = seconds;
}

void sv_estimate_measure(sv_estimates *e, uint32_t i, double seconds)
{
    if (i >= e->n_sizes || !(seconds > 0))
        return;
    /* The first measurement replaces the seed; later ones move the mean by a fifth, so one
     * slow run (a page fault, a co-running batch) does not swing the batcher. */
    if (e->measured[i] == 0)
        e->seconds[i] = seconds;
    else
        e->seconds[i] += 0.2 * (seconds - e->seconds[i]);
    e->measured[i]++;
}

/* ---- the decision ------------------------------------------------------------------------ */

/* The size for ROWS waiting rows with the least predicted seconds per useful row: a batch of
 * 5 may run as 4 (one row left for the next batch) or padded to 8, whichever is cheaper. */
static uint32_t best_size(const sv_estimates *e, uint32_t rows, double budget_s,
                          double *per_row)
{
    uint32_t best = 0;
    double best_cost = INFINITY;
    for (uint32_t i = 0; i < e->n_sizes; i++) {
        uint32_t useful = rows < e->sizes[i] ? rows : e->sizes[i];
        double t = sv_estimate(e, i);
        /* Latency-aware: a size predicted to finish after the earliest deadline is not taken
         * (the smallest always is: something must run). */
        if (i > 0 && t > 0 && t > budget_s)
            break;
        double cost = t > 0 ? t / useful : 1.0 / useful; /* unknown: bigger is better */
        if (cost <= best_cost * 1.0001) { /* a tie goes to the bigger batch: fewer runs */
            best_cost = cost;
            best = i;
        }
        if (e->sizes[i] >= rows)
            break; /* larger sizes only add padding */
    }
    *per_row = best_cost;
    return best;
}

sv_decision sv_decide(const sv_queue_view *q, const sv_estimates *e)
{
    sv_decision d = {0};
    uint32_t rows = q->rows;
    if (rows == 0) {
        d.wake_at = INFINITY;
        return d;
    }
    if (rows > q->max_batch)
        rows = q->max_batch;
    double per_row;
    /* When even the smallest batch is too late for the earliest deadline (overload), size the
     * batch for a fresh request's target instead, so the queue drains as fast as the target
     * allows rather than one row at a time. */
    double budget = q->deadline - q->now - q->slack_s;
    if (budget < sv_estimate(e, 0) && q->target_s > budget)
        budget = q->target_s;
    uint32_t i = best_size(e, rows, budget, &per_row);
    d.size_index = i;
    d.rows = rows < e->sizes[i] ? rows : e->sizes[i];
    d.go = 1;
    if (rows >= q->max_batch || i + 1 > e->n_sizes)
        return d;
    /* The next size up: worth waiting for only when predicted cheaper per row, expected to
     * fill from the arrival rate, and finished before the earliest deadline even then. */
    uint32_t next = sv_size_index(e, rows + 1);
    if (next >= e->n_sizes || q->arrival_rate <= 0)
        return d;
    double t_next = sv_estimate(e, next);
    double t_now = sv_estimate(e, i);
    if (t_next <= 0 || t_now <= 0)
        return d;
    double next_per_row = t_next / e->sizes[next];
    if (!(next_per_row < 0.9 * per_row))
        return d;
    double fill_s = (double)(e->sizes[next] - rows) / q->arrival_rate;
    double latest_start = q->deadline - t_next - q->slack_s;
    if (q->now + fill_s > latest_start)
        return d;
    /* Waiting is predicted to pay off: decide again when the rows should be there (an arrival
     * decides earlier), and never later than the last moment that still meets the deadline. */
    d.go = 0;
    d.wake_at = q->now + fill_s;
    if (d.wake_at > latest_start)
        d.wake_at = latest_start;
    return d;
}

/* ---- histograms -------------------------------------------------------------------------- */

void sv_hist_init(sv_hist *h, const double *bounds, uint32_t n_bounds)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n_bounds > SV_HIST_MAX ? SV_HIST_MAX : n_bounds;
}

void sv_hist_add(sv_hist *h, double v)
{
    uint32_t k = 0;
    while (k < h->n_bounds && v > h->bounds[k])
        k++;
    h->counts[k]++;
    h->count++;
    h->sum += v;
}
