/*
 * Placement (scheduler/place/): HEFT on Topcuoglu et al.'s published example, every policy's
 * schedule re-timed by an independent evaluator written here, the exact search against brute
 * force, the default policy against HEFT, pins, memory capacity, the latency target and the
 * validation messages. Nothing here asserts on time.
 */
#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/place/place.h"

/* Small budget for the searching policies: results are checked for validity and bounds, never
 * for a figure that depends on how far the search got. */
#define BUDGET 0.05

/* A problem with owned arrays. */
typedef struct inst {
    place_problem p;
    double cost[64 * 4], bw[16], lat[16], bytes[256], out[64], cap[4], power[4];
    uint32_t from[256], to[256];
    int32_t pin[64];
} inst;

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)((rng_state >> 33) % n);
}

static double rnd01(void)
{
    return rnd(1u << 30) / (double)(1u << 30);
}

/* A random DAG of N tasks on ND devices; some costs unsupported; CCR-ish spread of bytes. */
static void random_inst(inst *in, uint32_t n, uint32_t nd, double edge_p)
{
    memset(in, 0, sizeof *in);
    place_problem *p = &in->p;
    p->n_tasks = n, p->n_devices = nd;
    for (uint32_t t = 0; t < n; t++) {
        uint32_t keep = rnd(nd);
        for (uint32_t d = 0; d < nd; d++) {
            double v = 1.0 + 9.0 * rnd01();
            if (d != keep && rnd(6) == 0)
                v = INFINITY;
            in->cost[t * nd + d] = v;
        }
    }
    uint32_t ne = 0;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = i + 1; j < n && ne < 256; j++)
            if (rnd01() < edge_p) {
                in->from[ne] = i, in->to[ne] = j, in->bytes[ne] = 10.0 * rnd01();
                ne++;
            }
    p->n_edges = ne;
    for (uint32_t i = 0; i < nd; i++)
        for (uint32_t j = 0; j < nd; j++) {
            in->bw[i * nd + j] = 1.0 + rnd01();
            in->lat[i * nd + j] = i == j ? 0.0 : 0.5 * rnd01();
        }
    p->cost = in->cost, p->edge_from = in->from, p->edge_to = in->to, p->edge_bytes = in->bytes;
    p->bandwidth = in->bw, p->latency = in->lat;
}

/* The transfer time of edge E from I to J, written out again here. */
static double comm(const place_problem *p, uint32_t e, uint32_t i, uint32_t j)
{
    if (i == j)
        return 0.0;
    return p->latency[i * p->n_devices + j] + p->edge_bytes[e] / p->bandwidth[i * p->n_devices + j];
}

static int close_to(double a, double b)
{
    return fabs(a - b) <= 1e-9 * (fabs(a) + fabs(b)) + 1e-12;
}

/* Independent check of R against P: every task once in the orders on its device, which can
 * run it (and is its pin); times re-derived by relaxation to a fixed point (no topological
 * sort, no shared code) equal R's; durations, edges with transfers and one task at a time hold;
 * the makespan is the latest finish. Returns 1 when all hold. */
static int check_schedule(const place_problem *p, const place_result *r)
{
    uint32_t n = p->n_tasks, nd = p->n_devices;
    int ok = 1;
    uint32_t *seen = calloc(n + 1, sizeof *seen);
    double *st = calloc(n + 1, sizeof *st), *fi = calloc(n + 1, sizeof *fi);
    if (r->order_first[0] != 0 || r->order_first[nd] != n)
        ok = 0;
    for (uint32_t d = 0; ok && d < nd; d++)
        for (uint32_t k = r->order_first[d]; k < r->order_first[d + 1]; k++) {
            uint32_t t = r->order[k];
            if (t >= n || seen[t]++ || r->device[t] != d)
                ok = 0;
            else if (!(p->cost[t * nd + d] >= 0.0 && isfinite(p->cost[t * nd + d])))
                ok = 0;
            else if (p->pin && p->pin[t] >= 0 && (uint32_t)p->pin[t] != d)
                ok = 0;
        }
    if (ok) {
        /* Relaxation: at most n+1 sweeps for an acyclic constraint graph. */
        for (uint32_t sweep = 0; sweep <= n + 1; sweep++) {
            int changed = 0;
            for (uint32_t d = 0; d < nd; d++)
                for (uint32_t k = r->order_first[d]; k < r->order_first[d + 1]; k++) {
                    uint32_t t = r->order[k];
                    double s = k > r->order_first[d] ? fi[r->order[k - 1]] : 0.0;
                    for (uint32_t e = 0; e < p->n_edges; e++)
                        if (p->edge_to[e] == t) {
                            uint32_t q = p->edge_from[e];
                            double a = fi[q] + comm(p, e, r->device[q], d);
                            if (a > s)
                                s = a;
                        }
                    double f = s + p->cost[t * nd + d];
                    if (s != st[t] || f != fi[t])
                        changed = 1;
                    st[t] = s, fi[t] = f;
                }
            if (!changed)
                break;
            if (sweep == n + 1)
                ok = 0; /* did not settle: the orders contradict the edges */
        }
    }
    double ms = 0.0;
    for (uint32_t t = 0; ok && t < n; t++) {
        if (!close_to(st[t], r->start[t]) || !close_to(fi[t], r->finish[t]))
            ok = 0;
        if (!close_to(r->finish[t] - r->start[t], p->cost[t * nd + r->device[t]]))
            ok = 0;
        if (r->finish[t] > ms)
            ms = r->finish[t];
    }
    for (uint32_t e = 0; ok && e < p->n_edges; e++) {
        uint32_t a = p->edge_from[e], b = p->edge_to[e];
        if (r->start[b] < r->finish[a] + comm(p, e, r->device[a], r->device[b]) - 1e-9)
            ok = 0;
    }
    for (uint32_t a = 0; ok && a < n; a++)
        for (uint32_t b = a + 1; b < n; b++)
            if (r->device[a] == r->device[b] && r->start[a] < r->finish[b] - 1e-9 &&
                r->start[b] < r->finish[a] - 1e-9 &&
                r->finish[a] > r->start[a] && r->finish[b] > r->start[b])
                ok = 0;
    if (ok && !close_to(ms, r->makespan))
        ok = 0;
    free(seen), free(st), free(fi);
    return ok;
}

/* Peak resident output bytes on device D of R, as place.h defines residency. */
static double peak_memory(const place_problem *p, const place_result *r, uint32_t d)
{
    double peak = 0.0;
    for (uint32_t x = 0; x < p->n_tasks; x++) {
        if (r->device[x] != d)
            continue;
        double at = r->start[x], sum = 0.0; /* usage at the start of each resident output */
        for (uint32_t t = 0; t < p->n_tasks; t++) {
            if (r->device[t] != d)
                continue;
            double end = INFINITY;
            int has = 0;
            for (uint32_t e = 0; e < p->n_edges; e++)
                if (p->edge_from[e] == t) {
                    if (!has || r->finish[p->edge_to[e]] > end)
                        end = r->finish[p->edge_to[e]];
                    has = 1;
                }
            if (r->start[t] <= at && at < end)
                sum += p->output_bytes[t];
        }
        if (sum > peak)
            peak = sum;
    }
    return peak;
}

/* ---- HEFT on the published example ------------------------------------------------------ */

/* Topcuoglu, Hariri, Wu (2002), Fig. 2: 10 tasks, 3 processors; HEFT's makespan is 80. */
static void test_heft_reproduces_topcuoglu_example(void)
{
    static const double w[10][3] = {{14, 16, 9}, {13, 19, 18}, {11, 13, 19}, {13, 8, 17},
                                    {12, 13, 10}, {13, 16, 9}, {7, 15, 11}, {5, 11, 14},
                                    {18, 12, 20}, {21, 7, 16}};
    static const uint32_t ef[] = {0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 7, 8};
    static const uint32_t et[] = {1, 2, 3, 4, 5, 7, 8, 6, 7, 8, 8, 7, 9, 9, 9};
    static const double eb[] = {18, 12, 9, 11, 14, 19, 16, 23, 27, 23, 13, 15, 17, 11, 13};
    double bw[9], lat[9];
    for (int i = 0; i < 9; i++)
        bw[i] = 1.0, lat[i] = 0.0;
    place_problem p = {.n_tasks = 10, .n_devices = 3, .cost = &w[0][0], .n_edges = 15,
                    .edge_from = ef, .edge_to = et, .edge_bytes = eb, .bandwidth = bw,
                    .latency = lat};
    place_result r;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(place_place(&p, PLACE_POLICY_HEFT, 0, &r, err, sizeof err), LOOM_OK);
    CU_ASSERT_DOUBLE_EQUAL(r.makespan, 80.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(r.heft_makespan, 80.0, 1e-9);
    CU_ASSERT(check_schedule(&p, &r));
    /* The paper's schedule: n1 on P3 at 0-9, n10 on P2 ending at 80. */
    CU_ASSERT_EQUAL(r.device[0], 2);
    CU_ASSERT_DOUBLE_EQUAL(r.finish[0], 9.0, 1e-9);
    CU_ASSERT_EQUAL(r.device[9], 1);
    CU_ASSERT_DOUBLE_EQUAL(r.start[9], 73.0, 1e-9);
    place_result_free(&r);
    /* Loom's default finds a schedule at least as short, and it is valid. */
    CU_ASSERT_EQUAL_FATAL(place_place(&p, PLACE_POLICY_DEFAULT, BUDGET, &r, err, sizeof err), LOOM_OK);
    CU_ASSERT(r.makespan <= 80.0 + 1e-9);
    CU_ASSERT(check_schedule(&p, &r));
    place_result_free(&r);
}

/* ---- every policy's schedule is valid ---------------------------------------------------- */

static void test_every_policy_returns_a_valid_schedule(void)
{
    rng_state = 11;
    for (int rep = 0; rep < 12; rep++) {
        inst in;
        random_inst(&in, 6 + rnd(30), 2 + rnd(3), 0.15);
        for (int pol = PLACE_POLICY_DEFAULT; pol <= PLACE_POLICY_FIRST; pol++) {
            place_result r;
            char err[256];
            double budget = pol == PLACE_POLICY_EXACT ? 0.1 : BUDGET;
            CU_ASSERT_EQUAL_FATAL(place_place(&in.p, pol, budget, &r, err, sizeof err), LOOM_OK);
            CU_ASSERT(check_schedule(&in.p, &r));
            CU_ASSERT(r.makespan > 0.0);
            /* place_evaluate agrees with the result. */
            double ms = place_evaluate(&in.p, r.device, r.order, r.order_first, NULL, NULL);
            CU_ASSERT(close_to(ms, r.makespan));
            for (uint32_t t = 0; t < in.p.n_tasks; t++)
                CU_ASSERT(r.reason[t] >= PLACE_REASON_EFT && r.reason[t] <= PLACE_REASON_FIRST);
            place_result_free(&r);
        }
    }
}

static void test_default_is_never_worse_than_heft(void)
{
    rng_state = 23;
    for (int rep = 0; rep < 15; rep++) {
        inst in;
        random_inst(&in, 10 + rnd(50), 2 + rnd(3), 0.08);
        place_result h, d;
        char err[256];
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_HEFT, 0, &h, err, sizeof err), LOOM_OK);
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_DEFAULT, BUDGET, &d, err, sizeof err),
                              LOOM_OK);
        CU_ASSERT(d.makespan <= h.makespan * (1 + 1e-12));
        CU_ASSERT(close_to(d.heft_makespan, h.makespan));
        CU_ASSERT(check_schedule(&in.p, &d));
        place_result_free(&h);
        place_result_free(&d);
    }
}

/* ---- exact against brute force ----------------------------------------------------------- */

/* Least makespan over every topological sequence and every assignment, each task appended to
 * its device's queue as early as possible: every (device, order) schedule arises this way. */
static double brute_force(const place_problem *p)
{
    uint32_t n = p->n_tasks, nd = p->n_devices;
    uint32_t perm[8], dev[8];
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    double best = INFINITY;
    /* Heap's algorithm over permutations, iterative. */
    uint32_t cnt[8] = {0};
    uint32_t i = 0;
    int first = 1;
    for (;;) {
        if (!first) {
            while (i < n && cnt[i] >= i)
                cnt[i++] = 0;
            if (i >= n)
                break;
            uint32_t j = (i % 2) ? cnt[i] : 0, tmp = perm[j];
            perm[j] = perm[i], perm[i] = tmp;
            cnt[i]++;
            i = 0;
        }
        first = 0;
        /* topological? */
        uint32_t pos[8];
        for (uint32_t k = 0; k < n; k++)
            pos[perm[k]] = k;
        int topo = 1;
        for (uint32_t e = 0; e < p->n_edges; e++)
            if (pos[p->edge_from[e]] > pos[p->edge_to[e]])
                topo = 0;
        if (!topo)
            continue;
        uint32_t total = 1;
        for (uint32_t k = 0; k < n; k++)
            total *= nd;
        for (uint32_t code = 0; code < total; code++) {
            uint32_t c = code;
            int okd = 1;
            for (uint32_t k = 0; k < n; k++) {
                dev[k] = c % nd, c /= nd;
                if (!isfinite(p->cost[k * nd + dev[k]]))
                    okd = 0;
            }
            if (!okd)
                continue;
            double avail[4] = {0}, fin[8], ms = 0.0;
            for (uint32_t k = 0; k < n; k++) {
                uint32_t t = perm[k], d = dev[t];
                double s = avail[d];
                for (uint32_t e = 0; e < p->n_edges; e++)
                    if (p->edge_to[e] == t) {
                        double a = fin[p->edge_from[e]] + comm(p, e, dev[p->edge_from[e]], d);
                        if (a > s)
                            s = a;
                    }
                fin[t] = s + p->cost[t * nd + d];
                avail[d] = fin[t];
                if (fin[t] > ms)
                    ms = fin[t];
            }
            if (ms < best)
                best = ms;
        }
    }
    return best;
}

static void test_exact_matches_brute_force_on_tiny_dags(void)
{
    rng_state = 5;
    for (int rep = 0; rep < 20; rep++) {
        inst in;
        random_inst(&in, 3 + rnd(4), 2 + rnd(2), 0.3);
        double bf = brute_force(&in.p);
        place_result r;
        char err[256];
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_EXACT, 5.0, &r, err, sizeof err), LOOM_OK);
        CU_ASSERT(r.proven_optimal);
        CU_ASSERT(close_to(r.makespan, bf));
        CU_ASSERT(check_schedule(&in.p, &r));
        place_result_free(&r);
        /* The default policy solves tiny problems exactly too. */
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_DEFAULT, 1.0, &r, err, sizeof err),
                              LOOM_OK);
        CU_ASSERT(close_to(r.makespan, bf));
        place_result_free(&r);
    }
}

/* ---- constraints ------------------------------------------------------------------------- */

static void test_pins_are_respected_by_every_policy(void)
{
    rng_state = 77;
    for (int rep = 0; rep < 6; rep++) {
        inst in;
        random_inst(&in, 20, 3, 0.15);
        for (uint32_t t = 0; t < 20; t++) {
            in.pin[t] = -1;
            if (t % 4 == 0)
                for (uint32_t d = 0; d < 3; d++)
                    if (isfinite(in.cost[t * 3 + d]) && rnd(2)) {
                        in.pin[t] = (int32_t)d;
                        break;
                    }
        }
        in.p.pin = in.pin;
        for (int pol = PLACE_POLICY_DEFAULT; pol <= PLACE_POLICY_FIRST; pol++) {
            place_result r;
            char err[256];
            CU_ASSERT_EQUAL_FATAL(place_place(&in.p, pol, BUDGET, &r, err, sizeof err), LOOM_OK);
            CU_ASSERT(check_schedule(&in.p, &r));
            for (uint32_t t = 0; t < 20; t++)
                if (in.pin[t] >= 0) {
                    CU_ASSERT_EQUAL(r.device[t], (uint32_t)in.pin[t]);
                    CU_ASSERT_EQUAL(r.reason[t], PLACE_REASON_PINNED);
                }
            place_result_free(&r);
        }
    }
}

static void test_capacity_is_respected_and_reported(void)
{
    /* Eight independent tasks, each much faster on device 1, whose memory holds two outputs:
     * the rest must go to device 0, and say why. */
    inst in;
    memset(&in, 0, sizeof in);
    place_problem *p = &in.p;
    p->n_tasks = 8, p->n_devices = 2;
    for (uint32_t t = 0; t < 8; t++) {
        in.cost[t * 2] = 10.0, in.cost[t * 2 + 1] = 1.0;
        in.out[t] = 100.0;
    }
    for (int i = 0; i < 4; i++)
        in.bw[i] = 1.0, in.lat[i] = 0.0;
    in.cap[0] = 0.0, in.cap[1] = 250.0;
    p->cost = in.cost, p->bandwidth = in.bw, p->latency = in.lat;
    p->output_bytes = in.out, p->capacity = in.cap;
    for (int pol = PLACE_POLICY_DEFAULT; pol <= PLACE_POLICY_FIRST; pol++) {
        place_result r;
        char err[256];
        CU_ASSERT_EQUAL_FATAL(place_place(p, pol, BUDGET, &r, err, sizeof err), LOOM_OK);
        CU_ASSERT(check_schedule(p, &r));
        CU_ASSERT(peak_memory(p, &r, 1) <= 250.0);
        uint32_t on1 = 0, why = 0;
        for (uint32_t t = 0; t < 8; t++)
            on1 += r.device[t] == 1, why += r.reason[t] == PLACE_REASON_CAPACITY;
        CU_ASSERT(on1 <= 2);
        if (pol == PLACE_POLICY_HEFT)
            CU_ASSERT(why >= 6);
        place_result_free(&r);
    }
    /* With edges: random DAGs, capacities that bind; every policy stays within them. */
    rng_state = 99;
    for (int rep = 0; rep < 8; rep++) {
        random_inst(&in, 25, 3, 0.12);
        double total = 0.0;
        for (uint32_t t = 0; t < 25; t++)
            in.out[t] = 1.0 + 9.0 * rnd01(), total += in.out[t];
        in.cap[0] = 0.0, in.cap[1] = total * 0.25, in.cap[2] = total * 0.2;
        in.p.output_bytes = in.out, in.p.capacity = in.cap;
        for (int pol = PLACE_POLICY_DEFAULT; pol <= PLACE_POLICY_FIRST; pol++) {
            place_result r;
            char err[256];
            loom_status st = place_place(&in.p, pol, BUDGET, &r, err, sizeof err);
            /* Device 0 is unlimited, but a task only devices 1-2 can run may find no room. */
            if (st != LOOM_OK)
                continue;
            CU_ASSERT(check_schedule(&in.p, &r));
            CU_ASSERT(peak_memory(&in.p, &r, 1) <= in.cap[1] * (1 + 1e-9));
            CU_ASSERT(peak_memory(&in.p, &r, 2) <= in.cap[2] * (1 + 1e-9));
            place_result_free(&r);
        }
    }
}

static void test_target_latency_trades_time_for_energy(void)
{
    rng_state = 31;
    for (int rep = 0; rep < 6; rep++) {
        inst in;
        random_inst(&in, 20, 3, 0.12);
        in.power[0] = 10.0, in.power[1] = 60.0, in.power[2] = 25.0;
        in.p.power = in.power;
        place_result fast, slow, tight;
        char err[256];
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_DEFAULT, BUDGET, &fast, err, sizeof err),
                              LOOM_OK);
        /* A loose target: the makespan stays within it, the energy does not grow. */
        in.p.target_latency = fast.makespan * 1.5;
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_DEFAULT, BUDGET, &slow, err, sizeof err),
                              LOOM_OK);
        CU_ASSERT(slow.target_met);
        CU_ASSERT(slow.makespan <= in.p.target_latency * (1 + 1e-12));
        CU_ASSERT(slow.energy <= fast.energy * (1 + 1e-12));
        CU_ASSERT(check_schedule(&in.p, &slow));
        /* An impossible target: not met, and the shortest schedule found comes back. */
        in.p.target_latency = fast.makespan * 0.01;
        CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_HEFT, 0, &tight, err, sizeof err),
                              LOOM_OK);
        CU_ASSERT_FALSE(tight.target_met);
        CU_ASSERT(close_to(tight.makespan, tight.heft_makespan));
        place_result_free(&fast);
        place_result_free(&slow);
        place_result_free(&tight);
    }
    /* Two independent tasks, device 1 twice as fast at four times the power: without a target
     * both go fast; with room, the cheap device takes them and the reason says so. */
    double cost[4] = {2.0, 1.0, 2.0, 1.0}, bw[4] = {1, 1, 1, 1}, lat[4] = {0}, power[2] = {1, 4};
    place_problem p = {.n_tasks = 2, .n_devices = 2, .cost = cost, .bandwidth = bw, .latency = lat,
                    .power = power, .target_latency = 4.0};
    place_result r;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(place_place(&p, PLACE_POLICY_DEFAULT, BUDGET, &r, err, sizeof err), LOOM_OK);
    CU_ASSERT(r.target_met);
    CU_ASSERT_DOUBLE_EQUAL(r.energy, 4.0, 1e-12);
    CU_ASSERT_EQUAL(r.device[0], 0);
    CU_ASSERT_EQUAL(r.reason[0], PLACE_REASON_ENERGY);
    place_result_free(&r);
}

/* ---- place_evaluate and validation ---------------------------------------------------------- */

static void test_evaluate_rejects_infeasible_orders(void)
{
    /* a -> b on one device: the order b, a contradicts the edge. */
    double cost[2] = {1.0, 2.0}, bw[1] = {1}, lat[1] = {0}, bytes[1] = {0};
    uint32_t from[1] = {0}, to[1] = {1};
    place_problem p = {.n_tasks = 2, .n_devices = 1, .cost = cost, .n_edges = 1, .edge_from = from,
                    .edge_to = to, .edge_bytes = bytes, .bandwidth = bw, .latency = lat};
    uint32_t dev[2] = {0, 0}, good[2] = {0, 1}, bad[2] = {1, 0}, first[2] = {0, 2};
    double st[2], fi[2];
    CU_ASSERT_DOUBLE_EQUAL(place_evaluate(&p, dev, good, first, st, fi), 3.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(st[1], 1.0, 1e-12);
    CU_ASSERT(place_evaluate(&p, dev, bad, first, NULL, NULL) < 0.0);
    uint32_t dup[2] = {0, 0};
    CU_ASSERT(place_evaluate(&p, dev, dup, first, NULL, NULL) < 0.0);
    cost[1] = INFINITY;
    cost[0] = 1.0;
    CU_ASSERT(place_evaluate(&p, dev, good, first, NULL, NULL) < 0.0);
}

static void test_validation_names_the_culprit(void)
{
    double cost[6] = {1, 1, 1, 1, 1, 1}, bw[4] = {0, 1, 1, 0}, lat[4] = {0, 0, 0, 0};
    double bytes[3] = {1, 1, 1};
    uint32_t from[3] = {0, 1, 2}, to[3] = {1, 2, 0};
    const char *names[3] = {"load", "mul", "store"};
    place_problem p = {.n_tasks = 3, .n_devices = 2, .cost = cost, .n_edges = 3, .edge_from = from,
                    .edge_to = to, .edge_bytes = bytes, .bandwidth = bw, .latency = lat,
                    .task_names = names};
    char err[256];
    place_result r;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cycle"));
    CU_ASSERT(strstr(err, "'load'") || strstr(err, "'mul'") || strstr(err, "'store'"));
    CU_ASSERT_EQUAL(place_place(&p, PLACE_POLICY_HEFT, 0, &r, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    p.n_edges = 2;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_OK);
    cost[2] = INFINITY, cost[3] = -1.0;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "'mul'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no device"));
    cost[2] = cost[3] = 1.0;
    bw[1] = 0.0;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "bandwidth"));
    bw[1] = 1.0;
    lat[2] = -1.0;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "latency"));
    lat[2] = 0.0;
    int32_t pin[3] = {-1, 1, -1};
    cost[3] = INFINITY;
    p.pin = pin;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "'mul'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "pinned"));
    p.pin = NULL;
    cost[3] = 1.0;
    to[1] = 7;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "edge 1"));
    to[1] = 2;
    bytes[0] = -5;
    CU_ASSERT_EQUAL(place_validate(&p, err, sizeof err), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "edge 0"));
}

static void test_policy_and_reason_names(void)
{
    for (int pol = PLACE_POLICY_DEFAULT; pol <= PLACE_POLICY_FIRST; pol++)
        CU_ASSERT_EQUAL(place_policy_from_name(place_policy_name(pol)), pol);
    CU_ASSERT_EQUAL(place_policy_from_name("loom"), PLACE_POLICY_DEFAULT);
    CU_ASSERT_EQUAL(place_policy_from_name("fastest"), -1);
    for (int why = PLACE_REASON_EFT; why <= PLACE_REASON_FIRST; why++)
        CU_ASSERT_STRING_NOT_EQUAL(place_reason_name(why), "unknown");
}

static void test_larger_graph_places_validly(void)
{
    /* 60 tasks through every list policy and a short default search: valid and bounded. */
    rng_state = 3;
    inst in;
    random_inst(&in, 60, 4, 0.05);
    place_result h, d;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_HEFT, 0, &h, err, sizeof err), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(place_place(&in.p, PLACE_POLICY_DEFAULT, 0.2, &d, err, sizeof err), LOOM_OK);
    CU_ASSERT(check_schedule(&in.p, &h));
    CU_ASSERT(check_schedule(&in.p, &d));
    CU_ASSERT(d.makespan <= h.makespan);
    CU_ASSERT(d.evaluations > 1);
    place_result_free(&h);
    place_result_free(&d);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"HEFT reproduces Topcuoglu's example (80)", test_heft_reproduces_topcuoglu_example},
        {"every policy returns a valid schedule", test_every_policy_returns_a_valid_schedule},
        {"default is never worse than HEFT", test_default_is_never_worse_than_heft},
        {"exact matches brute force on tiny DAGs", test_exact_matches_brute_force_on_tiny_dags},
        {"pins are respected by every policy", test_pins_are_respected_by_every_policy},
        {"capacity is respected and reported", test_capacity_is_respected_and_reported},
        {"target latency trades time for energy", test_target_latency_trades_time_for_energy},
        {"place_evaluate rejects infeasible orders", test_evaluate_rejects_infeasible_orders},
        {"validation names the culprit", test_validation_names_the_culprit},
        {"policy and reason names", test_policy_and_reason_names},
        {"a larger graph places validly", test_larger_graph_places_validly},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"place", tests, NULL, NULL, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
