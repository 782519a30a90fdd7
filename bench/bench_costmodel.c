/*
 * How well the cost model predicts per-node times: each fixture model (tests/fixtures/) runs
 * on one device; its nodes' predicted times are compared with the measured ones (the run
 * timeline's per-node durations, median of the evaluation runs) before any history (roofline,
 * or the backend's estimate) and after history was recorded from separate training runs
 * (alternating with the evaluation runs).
 * Prints the median and 90th percentile of |predicted - measured| / measured, per model and
 * over all nodes, and the cost of one cost_node_seconds call. Never asserts on time.
 *
 * The device's profile comes from the user's cache (run `loom calibrate` first: without it the
 * roofline uses the backend's facts). History is recorded into a temporary copy of the cache,
 * so the user's history.json is left alone and "before" really has no history.
 *
 * Usage: bench_costmodel [FIXTURES_DIR] [--device ID] [--cache DIR] [--train N] [--eval N]
 *                        [--nodes]
 * (defaults: 10 training runs, 15 evaluation runs; --nodes prints every node's op, FLOPs,
 * bytes, predictions and measured median in microseconds).
 */
#include <loom/loom.h>
#include <loom/onnx.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph/graph_internal.h"
#include "scheduler/cost/cost.h"

#define MAX_IO 16

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Copy file SRC to DST; returns 0 when SRC does not exist or on failure. */
static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in)
        return 0;
    FILE *out = fopen(dst, "wb");
    char buf[65536];
    size_t n;
    int ok = out != NULL;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    fclose(in);
    if (out && fclose(out) != 0)
        ok = 0;
    return ok;
}

/* Graph node index of plan node P (same name and op), or -1. Linear: the models are small. */
static long graph_node_of(const loom_graph *g, const loom_plan *plan, size_t p, char *used)
{
    const char *name = loom_plan_node_name(plan, p), *op = loom_plan_node_op(plan, p);
    for (size_t i = 0; name && op && i < g->n_nodes; i++)
        if (!used[i] && g->nodes[i].name && !strcmp(g->nodes[i].name, name) &&
            !strcmp(g->nodes[i].def->name, op)) {
            used[i] = 1;
            return (long)i;
        }
    return -1;
}

/* Predicted seconds of graph node GI on device DEV (the model as it stands). */
static double predict(const cost_model *m, uint32_t dev, const loom_graph *g, size_t gi,
                      const char **source)
{
    loom_tensor_desc in[64], out[16];
    const void *cst[64];
    if (g->nodes[gi].n_inputs > 64 || g->nodes[gi].n_outputs > 16)
        return NAN;
    loom_node_desc d;
    graph_node_desc(g, gi, &d, in, out, cst);
    d.precision = LOOM_PRECISION_F32;
    loom_op_cost cost = {0};
    if (g->nodes[gi].def->cost)
        g->nodes[gi].def->cost(&d, &cost);
    if (source)
        *source = cost_node_source(m, dev, &d);
    return cost_node_seconds(m, dev, &d, &cost);
}

typedef struct pooled {
    double *before, *after, *meas;
    size_t n, cap;
} pooled;

static void pool_add(pooled *p, double b, double a, double m)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->before = realloc(p->before, p->cap * sizeof *p->before);
        p->after = realloc(p->after, p->cap * sizeof *p->after);
        p->meas = realloc(p->meas, p->cap * sizeof *p->meas);
        if (!p->before || !p->after || !p->meas) {
            fprintf(stderr, "bench_costmodel: out of memory\n");
            exit(1);
        }
    }
    p->before[p->n] = b;
    p->after[p->n] = a;
    p->meas[p->n++] = m;
}

/* Print every node's figures (--nodes): op, FLOPs, bytes, predictions and measurement. */
static int g_dump_nodes;

static void run_model(loom_runtime *rt, cost_model *m, uint32_t dev, const char *dev_id,
                      const char *dir, const char *model, int n_train, int n_eval, pooled *all)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/model.onnx", dir, model);
    loom_graph *g = NULL;
    loom_plan *plan = NULL;
    loom_tensor *inputs[MAX_IO] = {0}, *outputs[MAX_IO] = {0};
    if (loom_onnx_load(path, NULL, &g) != LOOM_OK) {
        printf("%-12s %s\n", model, loom_last_error());
        return;
    }
    size_t n_in = loom_graph_input_count(g), n_out = loom_graph_output_count(g);
    loom_plan_options po = {.struct_size = sizeof po, .device = dev_id, .strict = 1};
    if (n_in > MAX_IO || n_out > MAX_IO || loom_plan_create(rt, g, &po, &plan) != LOOM_OK) {
        printf("%-12s cannot plan on %s: %s\n", model, dev_id, loom_last_error());
        loom_graph_destroy(g);
        return;
    }
    for (size_t i = 0; i < n_in; i++) {
        loom_value v = loom_graph_input(g, i);
        snprintf(path, sizeof path, "%s/%s/input_%s.npy", dir, model, loom_value_name(g, v));
        if (loom_tensor_load_npy(path, &inputs[i]) != LOOM_OK) {
            loom_dtype t;
            uint32_t rank;
            int64_t dims[LOOM_MAX_RANK];
            loom_value_info(g, v, &t, &rank, dims);
            loom_tensor_create(t, rank, dims, &inputs[i]);
        }
    }
    loom_plan_make_outputs(plan, outputs, n_out);
    size_t nn = loom_plan_node_count(plan);
    loom_node_timing *tl = calloc(nn, sizeof *tl);
    double *samples = calloc(nn * (size_t)n_eval, sizeof *samples);
    double *before = calloc(nn, sizeof *before), *after = calloc(nn, sizeof *after);
    double *meas = calloc(nn, sizeof *meas);
    long *gidx = calloc(nn, sizeof *gidx);
    char *used = calloc(g->n_nodes + 1, 1);
    const char *src_before = "?", *src_after = "?";
    if (!tl || !samples || !before || !after || !meas || !gidx || !used) {
        fprintf(stderr, "bench_costmodel: out of memory\n");
        exit(1);
    }
    for (size_t p = 0; p < nn; p++) {
        gidx[p] = graph_node_of(g, plan, p, used);
        before[p] = gidx[p] >= 0 ? predict(m, dev, g, (size_t)gidx[p], &src_before) : NAN;
    }
    loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = nn};
    const loom_tensor *const *cin = (const loom_tensor *const *)inputs;
    for (int r = 0; r < 2; r++) /* warm-up */
        loom_plan_run(plan, cin, n_in, outputs, n_out, &st);
    /* Training and evaluation runs alternate (all training runs first when there are more of
     * them), so that both see the same machine: on a shared machine the load drifts over
     * seconds, and that drift is not the model's error. */
    for (int t = 0, e = 0; t < n_train || e < n_eval;) {
        int train = t < n_train && (e >= n_eval || t * n_eval <= e * n_train);
        if (loom_plan_run(plan, cin, n_in, outputs, n_out, &st) != LOOM_OK) {
            printf("%-12s run failed: %s\n", model, loom_last_error());
            goto out;
        }
        if (train) {
            cost_record_timeline(m, g, plan, &st, LOOM_PRECISION_F32);
            t++;
            continue;
        }
        for (size_t k = 0; k < st.timeline_count; k++)
            samples[(size_t)tl[k].node * n_eval + e] =
                (double)(tl[k].end_ns - tl[k].start_ns) * 1e-9;
        e++;
    }
    double sum_b = 0, sum_a = 0, sum_m = 0;
    size_t used_nodes = 0;
    for (size_t p = 0; p < nn; p++) {
        if (gidx[p] < 0)
            continue;
        qsort(&samples[p * n_eval], (size_t)n_eval, sizeof *samples, cmp_double);
        meas[p] = samples[p * n_eval + n_eval / 2];
        after[p] = predict(m, dev, g, (size_t)gidx[p], &src_after);
        sum_b += before[p];
        sum_a += after[p];
        sum_m += meas[p];
        pool_add(all, before[p], after[p], meas[p]);
        used_nodes++;
        if (g_dump_nodes) {
            loom_tensor_desc din[64], dout[16];
            const void *dc[64];
            loom_node_desc d;
            loom_op_cost c = {0};
            graph_node_desc(g, (size_t)gidx[p], &d, din, dout, dc);
            if (g->nodes[gidx[p]].def->cost)
                g->nodes[gidx[p]].def->cost(&d, &c);
            printf("  node %-8s %-22s flops %10.0f bytes %10.0f  before %9.2f after %9.2f "
                   "meas %9.2f us\n", model, loom_plan_node_op(plan, p), c.flops,
                   c.bytes_read + c.bytes_written, before[p] * 1e6, after[p] * 1e6,
                   meas[p] * 1e6);
        }
    }
    double bm, b90, am, a90;
    cost_error_stats(before, meas, nn, &bm, &b90);
    cost_error_stats(after, meas, nn, &am, &a90);
    printf("%-12s %5zu  %8s %7.1f%% %7.1f%%  %8s %7.1f%% %7.1f%%  %9.3f %9.3f %9.3f\n", model,
           used_nodes, src_before, 100 * bm, 100 * b90, src_after, 100 * am, 100 * a90,
           sum_b * 1e3, sum_a * 1e3, sum_m * 1e3);
out:
    free(tl);
    free(samples);
    free(before);
    free(after);
    free(meas);
    free(gidx);
    free(used);
    for (size_t i = 0; i < MAX_IO; i++) {
        loom_tensor_destroy(inputs[i]);
        loom_tensor_destroy(outputs[i]);
    }
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time per cost_node_seconds call (and per node for cost_node_seconds_all) over the
 * transformer's nodes x every device, with the history filled: the placement's hot path.
 * Thread CPU time, so that the backends' idle threads and other processes do not count. */
static void time_calls(const cost_model *m, loom_runtime *rt, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/transformer/model.onnx", dir);
    loom_graph *g = NULL;
    if (loom_onnx_load(path, NULL, &g) != LOOM_OK)
        return;
    size_t nn = g->n_nodes, nd = loom_runtime_device_count(rt), calls = 0;
    loom_node_desc *desc = calloc(nn, sizeof *desc);
    loom_op_cost *cost = calloc(nn, sizeof *cost);
    loom_tensor_desc *io = calloc(nn * 80, sizeof *io);
    const void **cst = calloc(nn * 64, sizeof *cst);
    double *all = calloc(nd, sizeof *all);
    if (!desc || !cost || !io || !cst || !all) {
        fprintf(stderr, "bench_costmodel: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < nn; i++) {
        if (g->nodes[i].n_inputs > 64 || g->nodes[i].n_outputs > 16)
            continue;
        graph_node_desc(g, i, &desc[i], &io[i * 80], &io[i * 80 + 64], &cst[i * 64]);
        if (g->nodes[i].def->cost)
            g->nodes[i].def->cost(&desc[i], &cost[i]);
    }
    double sink = 0, t0 = thread_cpu_s();
    for (int rep = 0; rep < 200; rep++)
        for (size_t i = 0; i < nn; i++)
            for (size_t d = 0; d < nd; d++, calls++)
                sink += cost_node_seconds(m, (uint32_t)d, &desc[i], &cost[i]);
    double per_call = (thread_cpu_s() - t0) / (double)calls;
    t0 = thread_cpu_s();
    for (int rep = 0; rep < 200; rep++)
        for (size_t i = 0; i < nn; i++) {
            cost_node_seconds_all(m, &desc[i], &cost[i], all);
            sink += all[0];
        }
    double per_node = (thread_cpu_s() - t0) / (200.0 * (double)nn);
    printf("\nlc_node_seconds: %.0f ns per call (history hits, %zu calls, %zu device(s)); "
           "cost_node_seconds_all: %.0f ns per node%s\n"
           "10,000 nodes x %zu device(s): %.1f ms with cost_node_seconds, %.1f ms with "
           "cost_node_seconds_all\n", per_call * 1e9, calls, nd, per_node * 1e9,
           sink < 0 ? "?" : "", nd, per_call * 1e4 * (double)nd * 1e3, per_node * 1e4 * 1e3);
    free(desc);
    free(cost);
    free(io);
    free(cst);
    free(all);
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    const char *dir = "tests/fixtures", *dev_id = "cpu:0", *cache = NULL;
    int n_train = 10, n_eval = 15;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            dev_id = argv[++i];
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc)
            cache = argv[++i];
        else if (!strcmp(argv[i], "--train") && i + 1 < argc)
            n_train = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--eval") && i + 1 < argc)
            n_eval = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nodes"))
            g_dump_nodes = 1;
        else if (argv[i][0] != '-')
            dir = argv[i];
        else {
            fprintf(stderr, "usage: bench_costmodel [FIXTURES_DIR] [--device ID] [--cache DIR] "
                            "[--train N] [--eval N] [--nodes]\n");
            return 2;
        }
    }
    if (n_train < 1 || n_eval < 1) {
        fprintf(stderr, "bench_costmodel: --train and --eval need at least 1\n");
        return 2;
    }
    loom_runtime *rt = NULL;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK) {
        fprintf(stderr, "bench_costmodel: %s\n", loom_last_error());
        return 1;
    }
    long dev = -1;
    for (size_t i = 0; i < loom_runtime_device_count(rt); i++) {
        char id[64];
        loom_device_info info = {.struct_size = sizeof info};
        if (loom_runtime_device(rt, i, id, sizeof id, &info) == LOOM_OK && !strcmp(id, dev_id))
            dev = (long)i;
    }
    if (dev < 0) {
        fprintf(stderr, "bench_costmodel: no device '%s'\n", dev_id);
        loom_runtime_destroy(rt);
        return 2;
    }

    /* The user's profiles, in a temporary cache of our own (empty history). */
    cost_model *user = NULL;
    char tmp[] = "/tmp/loom-bench-cost-XXXXXX", src[4200], dst[4200];
    if (!mkdtemp(tmp) || cost_model_open(rt, cache, &user) != LOOM_OK) {
        fprintf(stderr, "bench_costmodel: cannot set up a temporary cache\n");
        return 1;
    }
    snprintf(src, sizeof src, "%s/profiles.json", cost_cache_dir(user));
    snprintf(dst, sizeof dst, "%s/profiles.json", tmp);
    int copied = copy_file(src, dst);
    cost_model_close(user);
    cost_model *m = NULL;
    if (cost_model_open(rt, tmp, &m) != LOOM_OK) {
        fprintf(stderr, "bench_costmodel: %s\n", loom_last_error());
        return 1;
    }
    char line[512];
    cost_profile_summary(cost_profile_of(m, (uint32_t)dev), line, sizeof line);
    printf("device %s: %s\n", dev_id, line);
    if (!cost_profile_of(m, (uint32_t)dev)->calibrated)
        printf("(no calibrated profile%s: run `loom calibrate` first for calibrated figures)\n",
               copied ? " for this device" : " in the cache");
    printf("%d training runs record history, %d evaluation runs (alternating with them) are "
           "measured (per node: median)\n\n", n_train, n_eval);
    printf("%-12s %5s  %8s %8s %8s  %8s %8s %8s  %9s %9s %9s\n", "model", "nodes", "before",
           "median", "p90", "after", "median", "p90", "sum pred", "sum pred", "sum meas");
    printf("%-12s %5s  %8s %8s %8s  %8s %8s %8s  %9s %9s %9s\n", "", "", "(source)", "", "",
           "(source)", "", "", "before ms", "after ms", "ms");
    pooled all = {0};
    static const char *const models[] = {"mlp", "cnn", "transformer"};
    for (size_t i = 0; i < 3; i++)
        run_model(rt, m, (uint32_t)dev, dev_id, dir, models[i], n_train, n_eval, &all);
    double bm, b90, am, a90;
    cost_error_stats(all.before, all.meas, all.n, &bm, &b90);
    cost_error_stats(all.after, all.meas, all.n, &am, &a90);
    printf("%-12s %5zu  %8s %7.1f%% %7.1f%%  %8s %7.1f%% %7.1f%%\n", "all nodes", all.n, "",
           100 * bm, 100 * b90, "", 100 * am, 100 * a90);
    time_calls(m, rt, dir);
    free(all.before);
    free(all.after);
    free(all.meas);
    cost_model_close(m);
    /* The temporary cache: its two files, then the folder. */
    snprintf(dst, sizeof dst, "%s/profiles.json", tmp);
    unlink(dst);
    snprintf(dst, sizeof dst, "%s/history.json", tmp);
    unlink(dst);
    rmdir(tmp);
    loom_runtime_destroy(rt);
    return 0;
}
