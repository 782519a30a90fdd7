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
    /* Every known size bounds the others: a bigger batch costs at most proportionally more
     * (it could run as several smaller ones: an upper bound on CPUs and GPUs alike), a
     * smaller one at most as much. A size's own measurement stands against the sizes
     * measured before it, but not against fresher ones: a size measured during a slow spell
     * (a co-running process) and then not chosen again would otherwise keep its stale
     * figure for ever, and never be chosen again. */
    int own = e->seconds[i] > 0 && (e->measured[i] || !any_measured);
    double best = own ? e->seconds[i] : INFINITY;
    for (uint32_t k = 0; k < e->n_sizes; k++) {
        if (k == i || e->seconds[k] <= 0 || (any_measured && !e->measured[k]))
            continue;
        if (own && (!e->measured[i] || e->stamp[k] <= e->stamp[i]))
            continue; /* a seed, or a measurement fresher than K's */
        double bound = e->sizes[k] < e->sizes[i]
                           ? e->seconds[k] * e->sizes[i] / e->sizes[k]
                           : e->seconds[k];
        if (bound < best)
            best = bound;
    }
    return isfinite(best) ? best : 0;
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
    e->stamp[i] = ++e->n_measures;
}

/* ---- the decision ------------------------------------------------------------------------ */

/* Whether a batch predicted to take T seconds leaves room for the requests that arrive while
 * it runs: at the recent arrival rate they form the next batch, which starts when this one
 * ends, and a request that arrived just after this one started must still finish within the
 * model's target (T + the next batch's predicted time + the slack). Without an arrival rate
 * or a target there is nobody behind to protect. */
static int leaves_room(const sv_estimates *e, const sv_queue_view *q, double t)
{
    if (!(q->arrival_rate > 0) || !(q->target_s > 0) || e->n_sizes == 0)
        return 1;
    double behind = ceil(q->arrival_rate * t);
    uint32_t rows = behind < 1 ? 1 : behind > q->max_batch ? q->max_batch : (uint32_t)behind;
    uint32_t k = sv_size_index(e, rows);
    if (k >= e->n_sizes)
        k = e->n_sizes - 1;
    return t + sv_estimate(e, k) + q->slack_s <= q->target_s;
}

/* Whether some size both leaves room (leaves_room) and keeps up with the arrivals (its rows
 * per predicted second at least the arrival rate): if none does, the arrivals outpace what
 * the target allows, and holding batches small for the requests behind only makes the queue
 * grow faster. */
static int room_can_be_kept(const sv_estimates *e, const sv_queue_view *q)
{
    for (uint32_t i = 0; i < e->n_sizes; i++) {
        double t = sv_estimate(e, i);
        if (t > 0 && (double)e->sizes[i] >= q->arrival_rate * t && leaves_room(e, q, t))
            return 1;
    }
    return 0;
}

/* The size for ROWS waiting rows with the least predicted seconds per useful row: a batch of
 * 5 may run as 4 (one row left for the next batch) or padded to 8, whichever is cheaper.
 * Latency-aware: a size predicted to finish after the earliest deadline is not taken, nor
 * one that leaves no room for the requests arriving meanwhile (leaves_room) when room can be
 * kept at all; the smallest always is (something must run). Under overload (no size keeps
 * room and up with the arrivals) only the deadline bounds the size, and the cheapest per row
 * drains the queue fastest. */
static uint32_t best_size(const sv_estimates *e, const sv_queue_view *q, uint32_t rows,
                          double budget_s)
{
    int keep_room = room_can_be_kept(e, q);
    uint32_t best = 0;
    double best_cost = INFINITY;
    for (uint32_t i = 0; i < e->n_sizes; i++) {
        uint32_t useful = rows < e->sizes[i] ? rows : e->sizes[i];
        double t = sv_estimate(e, i);
        if (i > 0 && t > 0 && (t > budget_s || (keep_room && !leaves_room(e, q, t))))
            break;
        double cost = t > 0 ? t / useful : 1.0 / useful; /* unknown: bigger is better */
        if (cost <= best_cost * 1.0001) { /* a tie goes to the bigger batch: fewer runs */
            best_cost = cost;
            best = i;
        }
        /* Larger sizes only add padding, unless the next one is predicted to run faster
         * outright (a plan placed better at that size). */
        if (e->sizes[i] >= rows && !(i + 1 < e->n_sizes && t > 0 && sv_estimate(e, i + 1) > 0 &&
                                     sv_estimate(e, i + 1) < t))
            break;
    }
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
    /* When even the smallest batch is too late for the earliest deadline (overload), size the
     * batch for a fresh request's target instead, so the queue drains as fast as the target
     * allows rather than one row at a time. */
    double budget = q->deadline - q->now - q->slack_s;
    if (budget < sv_estimate(e, 0) && q->target_s > budget)
        budget = q->target_s;
    uint32_t i = best_size(e, q, rows, budget);
    d.size_index = i;
    d.rows = rows < e->sizes[i] ? rows : e->sizes[i];
    d.go = 1;
    if (rows >= q->max_batch || i + 1 > e->n_sizes)
        return d;
    /* The next size up, for the rows waiting and those expected at the arrival rate. Waiting
     * leaves the device idle until they come, so it pays only when the bigger batch, started
     * then, is predicted to finish every one of those rows no later than running now and
     * running the rest (the rows left behind and those that arrive) as a batch of their own
     * once both this batch is done and they are there; and when it still meets the earliest
     * deadline and leaves room for the requests behind it. */
    uint32_t next = sv_size_index(e, rows + 1);
    if (next >= e->n_sizes || q->arrival_rate <= 0)
        return d;
    double t_next = sv_estimate(e, next);
    double t_now = sv_estimate(e, i);
    uint32_t rest = e->sizes[next] - d.rows;
    uint32_t rest_i = sv_size_index(e, rest);
    double t_rest = rest_i < e->n_sizes ? sv_estimate(e, rest_i) : 0;
    if (t_next <= 0 || t_now <= 0 || t_rest <= 0 || !leaves_room(e, q, t_next))
        return d;
    double fill_s = (double)(e->sizes[next] - rows) / q->arrival_rate;
    double go_now_done = (t_now > fill_s ? t_now : fill_s) + t_rest;
    if (fill_s + t_next > go_now_done)
        return d;
    /* The oldest request waits in all no longer than the batch it could run in now takes (as
     * in ski rental: whatever comes, its latency is at most twice the best): the arrival rate
     * is a mean, and when the rows do not come (a closed loop whose clients wait for these
     * answers) a wait re-decided at every wake-up would otherwise last until the deadline. */
    if (q->oldest_s > 0 && q->now - q->oldest_s + fill_s > t_now)
        return d;
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
