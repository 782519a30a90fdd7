/*
 * A discrete-event simulation of one served model under open-loop Poisson load, driving the
 * real batching policy (serve/policy.c: sv_decide, sv_estimate_measure) with a fake clock, so
 * batching policies can be compared without noisy real runs. It mirrors the server's worker
 * loop (serve/server.c, worker_main): requests queue in arrival order; whenever a lane (a
 * batch the host can run at once: 1 with the CPU pool, the core count with one thread per
 * run) is free, the policy sees the queue (rows, the oldest's deadline = arrival + target,
 * the arrival rate as the server's moving mean of gaps, the oldest's arrival) and either
 * dispatches a batch (the head's requests up to the size, run at the smallest plan size that
 * holds them) or names a time to decide again; it decides again at every arrival, batch end
 * and wake-up. A batch's run time is the measured direct-run time of its size, times a
 * log-normal noise factor, with an optional slow spell (a co-running process), plus an
 * optional CPU cost per request charged to the batch (the HTTP front end and the load
 * generator on the same cores). Its measured time feeds the estimates as the server's does.
 *
 * For each policy it searches (bisection, common random numbers) the highest Poisson rate
 * whose p99 latency meets the target with at least 95% of the offered rate achieved (the
 * pass rule of `loom loadgen --find-max-qps`), and prints it against the ceiling (the best
 * samples/s among sizes whose run time is at most half the target, times the lanes). The
 * policies: "policy" (sv_decide, what the server runs), "greedy:B" (never wait; at most B
 * rows), "timeout:B:X" (wait until B rows are queued or the oldest has waited X ms; Triton's
 * preferred size and maximum queue delay), and "grid" (the best of greedy and timeout over
 * B = every size, X = 0.25..20 ms: an offline-tuned policy that knows the load in advance).
 *
 * Run times come from --times (ms per size 1, 2, 4, ..), from a bench/bench_serve.sh
 * ceiling.txt (--ceiling FILE --model NAME --config pool|1thr: each size's median), or from
 * the presets (--preset bert_pool|bert_1thr|cnn_pool|cnn_1thr: the medians of
 * `bench/bench_serve.sh build-release /tmp/loom-serve-bench2`, bench/RESULTS.md, "Serving
 * (issue 19)"). Prints figures; asserts nothing.
 */
#include "serve/serve_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { POL_SV, POL_GREEDY, POL_TIMEOUT };

typedef struct policy {
    int kind;
    uint32_t b;      /* greedy, timeout: the most rows per batch */
    double x_s;      /* timeout: the longest the oldest request waits for B rows */
} policy;

typedef struct config {
    uint32_t n_sizes;
    uint32_t sizes[SV_MAX_SIZES];
    double t_s[SV_MAX_SIZES];  /* measured run time per size */
    uint32_t max_batch, lanes;
    double target_s, p99_s;
    double noise;              /* sigma of the log-normal run-time factor */
    double slow_p, slow_f;     /* a batch runs SLOW_F times longer with probability SLOW_P */
    double phase_p, phase_f, phase_s; /* slow phases (co-running processes): a fraction PHASE_P
                                       * of the time, each lasting PHASE_S on average (both
                                       * phases' lengths exponential), batches that start in
                                       * one run PHASE_F times longer */
    double cpu_per_req_s;      /* added to a batch's run time per row */
    double fixed_s;            /* added to every latency (the network and HTTP round trip) */
    size_t requests;           /* per seed and rate */
    int seeds;
} config;

typedef struct outcome {
    double p99, achieved, mean_rows;
    uint64_t batches, hist[SV_MAX_SIZES];
} outcome;

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_normal(uint64_t *s)
{
    return sqrt(-2 * log(rng_unit(s))) * cos(6.283185307179586 * rng_unit(s));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The rows the policy dispatches now (0: wait until *WAKE). */
static uint32_t decide(const config *c, const policy *p, const sv_estimates *e, double now,
                       const double *arr, size_t qh, size_t qt, double rate, double *wake,
                       uint32_t *size_index)
{
    uint32_t rows = (uint32_t)(qt - qh < c->max_batch ? qt - qh : c->max_batch);
    if (p->kind == POL_SV) {
        sv_queue_view v = {.now = now, .deadline = arr[qh] + c->target_s, .rows = rows,
                           .max_batch = c->max_batch, .arrival_rate = rate, .slack_s = 0.002,
                           .target_s = c->target_s, .oldest_s = arr[qh]};
        sv_decision d = sv_decide(&v, e);
        if (!d.go) {
            *wake = d.wake_at;
            return 0;
        }
        *size_index = d.size_index;
        return d.rows ? d.rows : 1;
    }
    uint32_t b = p->b < rows ? p->b : rows;
    if (p->kind == POL_TIMEOUT && rows < p->b && now < arr[qh] + p->x_s) {
        *wake = arr[qh] + p->x_s;
        return 0;
    }
    *size_index = sv_size_index(e, b);
    return b;
}

/* One run at RATE with seed SEED; latencies appended to LAT (room for c->requests). */
static void simulate(const config *c, const policy *p, double rate, uint64_t seed, double *lat,
                     outcome *o)
{
    size_t n = c->requests;
    double *arr = malloc(n * sizeof *arr);
    uint64_t rs = seed * 7919 + 1;
    /* Arrivals as loom loadgen makes them: N exponential gaps, scaled to N / RATE seconds. */
    double t = 0;
    for (size_t k = 0; k < n; k++) {
        t += -log(rng_unit(&rs)) / rate;
        arr[k] = t;
    }
    double total = t - log(rng_unit(&rs)) / rate, span = (double)n / rate;
    for (size_t k = 0; k < n; k++)
        arr[k] = arr[k] / total * span;
    uint64_t ns = seed * 104729 + 3; /* run-time noise: its own stream */
    uint64_t ps = seed * 15485863 + 5; /* phases: theirs, in time order, so every policy
                                        * meets the same ones */
    int slow_phase = 0;
    double phase_end = c->phase_p > 0 ? -log(rng_unit(&ps)) * c->phase_s * (1 - c->phase_p) /
                                            c->phase_p
                                      : INFINITY;

    sv_estimates e;
    sv_estimates_init(&e, c->max_batch, 0);
    for (uint32_t i = 0; i < e.n_sizes; i++) /* warm=1: every size run once */
        sv_estimate_measure(&e, i, c->t_s[i < c->n_sizes ? i : c->n_sizes - 1]);
    double lane_end[64];
    size_t lane_from[64], lane_to[64];
    int lane_busy[64] = {0};
    size_t qh = 0, na = 0;  /* queued: [qh, na); arrived: [0, na) */
    double last_arrival = 0, mean_gap = 0, wake = INFINITY, last_done = 0;
    for (;;) {
        int busy = 0;
        for (uint32_t l = 0; l < c->lanes; l++)
            busy |= lane_busy[l];
        if (qh == n && na == n && !busy)
            break;
        /* The next event: an arrival, a batch's end, or a wake-up. */
        double now = na < n ? arr[na] : INFINITY;
        for (uint32_t l = 0; l < c->lanes; l++)
            if (lane_busy[l] && lane_end[l] < now)
                now = lane_end[l];
        if (wake < now)
            now = wake;
        if (!isfinite(now))
            break; /* cannot happen: something is queued and nothing pending */
        wake = INFINITY;
        for (uint32_t l = 0; l < c->lanes; l++) {
            if (!lane_busy[l] || lane_end[l] > now)
                continue;
            lane_busy[l] = 0;
            for (size_t k = lane_from[l]; k < lane_to[l]; k++) {
                lat[k] = lane_end[l] - arr[k] + c->fixed_s;
            }
            if (lane_end[l] > last_done)
                last_done = lane_end[l];
        }
        while (na < n && arr[na] <= now) {
            if (last_arrival > 0) {
                double gap = arr[na] - last_arrival;
                if (gap > 1.0 || mean_gap <= 0)
                    mean_gap = gap > 1.0 ? 0 : gap;
                else
                    mean_gap += 0.1 * (gap - mean_gap);
            }
            last_arrival = arr[na];
            na++;
        }
        /* Free lanes take batches while the policy says go. */
        for (uint32_t l = 0; l < c->lanes && qh < na; l++) {
            if (lane_busy[l])
                continue;
            double w = INFINITY;
            uint32_t idx = 0;
            double r = mean_gap > 0 ? 1.0 / mean_gap : 0;
            uint32_t rows = decide(c, p, &e, now, arr, qh, na, r, &w, &idx);
            if (rows == 0) {
                if (w < wake)
                    wake = w > now ? w : now + 1e-6;
                break;
            }
            /* As the server: the rows taken run at the smallest size that holds them. */
            uint32_t exact = sv_size_index(&e, rows);
            if (exact < e.n_sizes)
                idx = exact;
            double f = exp(c->noise * rng_normal(&ns) - 0.5 * c->noise * c->noise);
            if (c->slow_p > 0 && rng_unit(&ns) < c->slow_p)
                f *= c->slow_f;
            while (now >= phase_end) {
                slow_phase = !slow_phase;
                double mean = slow_phase ? c->phase_s : c->phase_s * (1 - c->phase_p) / c->phase_p;
                phase_end += -log(rng_unit(&ps)) * mean;
            }
            if (slow_phase)
                f *= c->phase_f;
            uint32_t ti = idx < c->n_sizes ? idx : c->n_sizes - 1;
            double run = c->t_s[ti] * f + rows * c->cpu_per_req_s;
            sv_estimate_measure(&e, idx, run);
            lane_busy[l] = 1;
            lane_end[l] = now + run;
            lane_from[l] = qh;
            lane_to[l] = qh + rows;
            qh += rows;
            o->batches++;
            o->hist[idx]++;
            o->mean_rows += rows;
        }
    }
    double end = last_done > arr[n - 1] ? last_done : arr[n - 1];
    o->achieved += (double)n / end;
    free(arr);
}

/* Every seed at RATE: p99 over all their requests, mean achieved rate. */
static outcome evaluate(const config *c, const policy *p, double rate)
{
    outcome o;
    memset(&o, 0, sizeof o);
    size_t n = c->requests;
    double *lat = malloc(n * (size_t)c->seeds * sizeof *lat);
    for (int s = 0; s < c->seeds; s++)
        simulate(c, p, rate, (uint64_t)s + 1, lat + n * (size_t)s, &o);
    size_t all = n * (size_t)c->seeds;
    qsort(lat, all, sizeof *lat, cmp_double);
    size_t i = (size_t)ceil(0.99 * (double)all) - 1;
    o.p99 = lat[i];
    o.achieved /= c->seeds;
    o.mean_rows = o.batches ? o.mean_rows / (double)o.batches : 0;
    free(lat);
    return o;
}

static int passes(const config *c, const outcome *o, double rate)
{
    return o->p99 <= c->p99_s && o->achieved >= 0.95 * rate;
}

static double ceiling(const config *c, uint32_t *best_b)
{
    double best = 0;
    for (uint32_t i = 0; i < c->n_sizes; i++) {
        double sps = c->lanes * c->sizes[i] / c->t_s[i];
        if (c->t_s[i] <= c->target_s / 2 && sps > best) {
            best = sps;
            *best_b = c->sizes[i];
        }
    }
    return best;
}

/* The highest rate that passes (bisection over [0, 1.2 x CEIL]); its outcome in *AT. */
static double max_rate(const config *c, const policy *p, double ceil_sps, outcome *at)
{
    double lo = 0, hi = 1.2 * ceil_sps;
    memset(at, 0, sizeof *at);
    for (int step = 0; step < 14; step++) {
        double mid = (lo + hi) / 2;
        outcome o = evaluate(c, p, mid);
        if (passes(c, &o, mid)) {
            lo = mid;
            *at = o;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void policy_name(const policy *p, char *buf, size_t len)
{
    if (p->kind == POL_SV)
        snprintf(buf, len, "policy (sv_decide)");
    else if (p->kind == POL_GREEDY)
        snprintf(buf, len, "greedy:%u", p->b);
    else
        snprintf(buf, len, "timeout:%u:%g", p->b, p->x_s * 1e3);
}

static void report(const config *c, const policy *p, double rate, double ceil_sps,
                   const outcome *o)
{
    char name[64];
    policy_name(p, name, sizeof name);
    printf("  %-22s max %9.1f/s = %5.1f%% of the ceiling;  p99 %6.2f ms, mean %5.2f rows, "
           "batches:", name, rate, 100 * rate / ceil_sps, o->p99 * 1e3, o->mean_rows);
    for (uint32_t i = 0; i < c->n_sizes; i++)
        if (o->hist[i])
            printf(" %u:%.0f%%", c->sizes[i], 100.0 * (double)o->hist[i] / (double)o->batches);
    printf("\n");
}

/* Median run time per size of MODEL/CFG in a bench_serve.sh ceiling.txt. */
static int read_ceiling(const char *path, const char *model, const char *cfg, config *c)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "sim_batcher: cannot read '%s'\n", path);
        return -1;
    }
    double v[SV_MAX_SIZES][64];
    int nv[SV_MAX_SIZES] = {0};
    char m[64], g[16];
    unsigned b;
    double ms, sps;
    c->n_sizes = 0;
    while (fscanf(f, "%63s %15s %u %lf %lf", m, g, &b, &ms, &sps) == 5) {
        if (strcmp(m, model) || strcmp(g, cfg) || b == 0)
            continue;
        uint32_t i = 0;
        while (i < c->n_sizes && c->sizes[i] != b)
            i++;
        if (i == c->n_sizes) {
            if (i == SV_MAX_SIZES)
                continue;
            c->sizes[c->n_sizes++] = b;
        }
        if (nv[i] < 64)
            v[i][nv[i]++] = ms * 1e-3;
    }
    fclose(f);
    if (c->n_sizes == 0) {
        fprintf(stderr, "sim_batcher: no '%s %s' rows in '%s'\n", model, cfg, path);
        return -1;
    }
    for (uint32_t i = 0; i < c->n_sizes; i++) {
        qsort(v[i], (size_t)nv[i], sizeof v[i][0], cmp_double);
        c->t_s[i] = nv[i] % 2 ? v[i][nv[i] / 2] : (v[i][nv[i] / 2 - 1] + v[i][nv[i] / 2]) / 2;
    }
    return 0;
}

static int set_times(config *c, const double *ms, uint32_t n)
{
    c->n_sizes = n;
    for (uint32_t i = 0; i < n; i++) {
        c->sizes[i] = 1u << i;
        c->t_s[i] = ms[i] * 1e-3;
    }
    return 0;
}

/* V as a number in [LO, HI] into *OUT; else an error naming OPT and V. */
static int num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "sim_batcher: %s '%s': want a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: sim_batcher (--preset NAME | --times MS,MS,.. | --ceiling FILE --model M "
            "--config pool|1thr)\n"
            "         [--lanes N] [--target-ms 50] [--p99-ms 50] [--noise 0.05] [--slow P,F]\n"
            "         [--phases P,F,MS]\n"
            "         [--cpu-us-per-request U] [--fixed-us U] [--requests N] [--seeds K]\n"
            "         [--policy policy|greedy:B|timeout:B:MS|grid|all]\n"
            "presets: bert_pool, bert_1thr, cnn_pool, cnn_1thr (lanes 1 for pool, 2 for 1thr)\n");
    return 2;
}

int main(int argc, char **argv)
{
    /* The medians of bench/bench_serve.sh's last recorded run (/tmp/loom-serve-bench2). */
    static const double bert_pool[] = {2.352, 4.62, 9.086, 17.774, 35.275, 72.077};
    static const double bert_1thr[] = {6.464, 10.881, 19.75, 37.911, 74.985, 152.336};
    static const double cnn_pool[] = {0.041, 0.073, 0.133, 0.206, 0.402, 0.773};
    static const double cnn_1thr[] = {0.050, 0.098, 0.184, 0.367, 0.736, 1.483};
    config c = {.lanes = 0, .target_s = 0.05, .p99_s = 0.05, .noise = 0.05, .slow_f = 1,
                .requests = 100000, .seeds = 2};
    const char *ceil_path = NULL, *model = NULL, *cfg = NULL, *pol = "all";
    int have_times = 0;
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!v)
            return usage();
        a++;
        if (!strcmp(k, "--preset")) {
            const double *t = NULL;
            uint32_t lanes = 1;
            if (!strcmp(v, "bert_pool")) t = bert_pool;
            else if (!strcmp(v, "bert_1thr")) { t = bert_1thr; lanes = 2; }
            else if (!strcmp(v, "cnn_pool")) t = cnn_pool;
            else if (!strcmp(v, "cnn_1thr")) { t = cnn_1thr; lanes = 2; }
            else {
                fprintf(stderr, "sim_batcher: unknown preset '%s'\n", v);
                return usage();
            }
            set_times(&c, t, 6);
            if (!c.lanes)
                c.lanes = lanes;
            have_times = 1;
        } else if (!strcmp(k, "--times")) {
            double t[SV_MAX_SIZES];
            uint32_t n = 0;
            for (char *s = (char *)v, *end; *s && n < 20; s = *end ? end + 1 : end) {
                t[n] = strtod(s, &end);
                if (end == s || !(t[n] > 0)) {
                    fprintf(stderr, "sim_batcher: bad --times '%s'\n", v);
                    return 2;
                }
                n++;
            }
            set_times(&c, t, n);
            have_times = n > 0;
        } else if (!strcmp(k, "--ceiling")) ceil_path = v;
        else if (!strcmp(k, "--model")) model = v;
        else if (!strcmp(k, "--config")) cfg = v;
        else if (!strcmp(k, "--lanes") || !strcmp(k, "--target-ms") || !strcmp(k, "--p99-ms") ||
                 !strcmp(k, "--noise") || !strcmp(k, "--cpu-us-per-request") ||
                 !strcmp(k, "--fixed-us") || !strcmp(k, "--requests") || !strcmp(k, "--seeds")) {
            double x;
            int lanes = !strcmp(k, "--lanes"), reqs = !strcmp(k, "--requests"),
                seeds = !strcmp(k, "--seeds");
            if (num(k, v, lanes || seeds ? 1 : reqs ? 100 : 0,
                    lanes ? 64 : reqs ? 1e8 : seeds ? 1000 : 1e6, &x) != 0)
                return 2;
            if (lanes) c.lanes = (uint32_t)x;
            else if (reqs) c.requests = (size_t)x;
            else if (seeds) c.seeds = (int)x;
            else if (!strcmp(k, "--target-ms")) c.target_s = x * 1e-3;
            else if (!strcmp(k, "--p99-ms")) c.p99_s = x * 1e-3;
            else if (!strcmp(k, "--noise")) c.noise = x;
            else if (!strcmp(k, "--cpu-us-per-request")) c.cpu_per_req_s = x * 1e-6;
            else c.fixed_s = x * 1e-6;
        } else if (!strcmp(k, "--slow")) {
            if (sscanf(v, "%lf,%lf", &c.slow_p, &c.slow_f) != 2 || !(c.slow_p >= 0) ||
                !(c.slow_p <= 1) || !(c.slow_f > 0)) {
                fprintf(stderr, "sim_batcher: bad --slow '%s' (P,F)\n", v);
                return 2;
            }
        } else if (!strcmp(k, "--phases")) {
            double ms = 0;
            if (sscanf(v, "%lf,%lf,%lf", &c.phase_p, &c.phase_f, &ms) != 3 || !(c.phase_p > 0) ||
                !(c.phase_p < 1) || !(c.phase_f > 0) || !(ms > 0)) {
                fprintf(stderr, "sim_batcher: bad --phases '%s' (P,F,MS: 0<P<1)\n", v);
                return 2;
            }
            c.phase_s = ms * 1e-3;
        } else if (!strcmp(k, "--policy")) pol = v;
        else {
            fprintf(stderr, "sim_batcher: unknown option '%s'\n", k);
            return usage();
        }
    }
    if (ceil_path) {
        if (!model || !cfg)
            return usage();
        if (read_ceiling(ceil_path, model, cfg, &c) != 0)
            return 2;
        if (!c.lanes)
            c.lanes = strcmp(cfg, "1thr") ? 1 : 2;
        have_times = 1;
    }
    if (!have_times || c.requests < 100 || c.seeds < 1 || c.lanes < 1 || c.lanes > 64 ||
        !(c.target_s > 0) || !(c.p99_s > 0))
        return usage();
    c.max_batch = c.sizes[c.n_sizes - 1];
    for (uint32_t i = 0; i < c.n_sizes; i++)
        if (c.sizes[i] != (i + 1 == c.n_sizes ? c.max_batch : 1u << i)) {
            fprintf(stderr, "sim_batcher: sizes must be 1, 2, 4, .. (the server's plan sizes)\n");
            return 2;
        }
    uint32_t best_b = 1;
    double ceil_sps = ceiling(&c, &best_b);
    if (!(ceil_sps > 0)) {
        fprintf(stderr, "sim_batcher: no size runs within half the target\n");
        return 2;
    }
    printf("sim: %u lane(s), target %.0f ms, p99 <= %.0f ms, noise %.2f, slow %.3f x%.1f, "
           "phases %.2f x%.1f %.0f ms, +%.0f us/request CPU, +%.0f us fixed; %zu requests x %d "
           "seeds per rate\n",
           c.lanes, c.target_s * 1e3, c.p99_s * 1e3, c.noise, c.slow_p, c.slow_f, c.phase_p,
           c.phase_f, c.phase_s * 1e3,
           c.cpu_per_req_s * 1e6, c.fixed_s * 1e6, c.requests, c.seeds);
    printf("  run ms:");
    for (uint32_t i = 0; i < c.n_sizes; i++)
        printf(" %u:%.3f", c.sizes[i], c.t_s[i] * 1e3);
    printf("\n  ceiling %.1f samples/s (batch %u, run time <= target/2)\n", ceil_sps, best_b);

    int all = !strcmp(pol, "all"), grid = all || !strcmp(pol, "grid");
    if (!all && !grid && strcmp(pol, "policy") && strncmp(pol, "greedy:", 7) &&
        strncmp(pol, "timeout:", 8)) {
        fprintf(stderr, "sim_batcher: unknown --policy '%s'\n", pol);
        return usage();
    }
    if (all || !strcmp(pol, "policy")) {
        policy p = {.kind = POL_SV};
        outcome o;
        double r = max_rate(&c, &p, ceil_sps, &o);
        report(&c, &p, r, ceil_sps, &o);
    }
    if (!strncmp(pol, "greedy:", 7) || !strncmp(pol, "timeout:", 8)) {
        policy p = {.kind = pol[0] == 'g' ? POL_GREEDY : POL_TIMEOUT};
        double x = 0;
        if (p.kind == POL_GREEDY ? sscanf(pol + 7, "%u", &p.b) != 1
                                 : sscanf(pol + 8, "%u:%lf", &p.b, &x) != 2 || p.b < 1) {
            fprintf(stderr, "sim_batcher: bad --policy '%s'\n", pol);
            return 2;
        }
        p.x_s = x * 1e-3;
        outcome o;
        double r = max_rate(&c, &p, ceil_sps, &o);
        report(&c, &p, r, ceil_sps, &o);
    }
    if (grid) {
        static const double xs[] = {0, 0.25, 0.5, 1, 2, 5, 10, 20};
        policy best = {0};
        outcome best_o = {0};
        double best_r = -1;
        for (uint32_t i = 0; i < c.n_sizes; i++)
            for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++) {
                policy p = {.kind = xs[k] > 0 ? POL_TIMEOUT : POL_GREEDY, .b = c.sizes[i],
                            .x_s = xs[k] * 1e-3};
                if (p.kind == POL_TIMEOUT && c.sizes[i] == 1)
                    continue;
                outcome o;
                double r = max_rate(&c, &p, ceil_sps, &o);
                if (all && p.kind == POL_GREEDY)
                    report(&c, &p, r, ceil_sps, &o);
                if (r > best_r) {
                    best_r = r;
                    best = p;
                    best_o = o;
                }
            }
        printf("  best of the grid (offline-tuned):\n");
        report(&c, &best, best_r, ceil_sps, &best_o);
    }
    return 0;
}
