/*
 * Dispatch overhead of the executor: graphs of 20,000 one-element nodes, where the kernels do
 * next to nothing and the run's wall time is the cost of scheduling, dispatching and completing
 * nodes. Two shapes:
 *   independent  y_i = x + c_i for 20,000 distinct scalar constants c_i, every y_i a graph
 *                output: all nodes are ready at once (the pool's best case for parallelism);
 *   chain        y = x + 1, 20,000 times in sequence: each node waits on the previous one, so
 *                it measures the latency of one dispatch from completion to completion.
 * Each runs with the CPU backend on 1 thread and on every core, or with --device ID every node
 * on that device (e.g. opencl: the GPU's dispatch, kernels enqueued back to back) once. The
 * figure is the median wall time of loom_plan_run (after warm-up) divided by the plan's node
 * count, so a later pass that fuses nodes changes what is divided, not the meaning of the figure.
 *
 * Usage: bench_dispatch [NODES] [--device ID]   (default 20000 nodes on cpu)
 */
#include "bench_common.h"

#include <stdint.h>
#include <string.h>

#define WARMUP_RUNS 2
#define TIMED_RUNS 7

enum shape { INDEPENDENT, CHAIN };

static const char *shape_name(enum shape s)
{
    return s == INDEPENDENT ? "independent" : "chain";
}

/* Build and check the graph of SHAPE with NODES nodes. Exits on failure. */
static loom_graph *build(enum shape s, int nodes)
{
    loom_graph *g = loom_graph_create(shape_name(s));
    if (!g) {
        fprintf(stderr, "bench_dispatch: out of memory\n");
        exit(1);
    }
    const int64_t one[1] = {1};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, one);
    if (s == INDEPENDENT) {
        for (int i = 0; i < nodes; i++) {
            /* Distinct constants, so no pass can merge the nodes as duplicates. */
            loom_value y = loom_add(g, x, loom_constant_f32(g, (float)i));
            char name[32];
            snprintf(name, sizeof name, "y%d", i);
            /* Fails only after an earlier builder error, which the check below reports. */
            (void)loom_output(g, y, name);
        }
    } else {
        loom_value c = loom_constant_f32(g, 1.0f);
        loom_value y = x;
        for (int i = 0; i < nodes; i++)
            y = loom_add(g, y, c);
        (void)loom_output(g, y, "y");
    }
    bench_check(loom_graph_check(g), "loom_graph_check");
    return g;
}

/* The outputs must be x + i (independent) or x + NODES (chain): a dispatcher that skips or
 * repeats nodes shows up here. Sums of small integers are exact in f32. */
static void verify(enum shape s, int nodes, float x, loom_tensor *const *outs, size_t n_outs)
{
    for (size_t i = 0; i < n_outs; i++) {
        float got = *(const float *)loom_tensor_data(outs[i]);
        float want = s == INDEPENDENT ? x + (float)i : x + (float)nodes;
        if (got != want) {
            fprintf(stderr, "bench_dispatch: %s: output %zu is %g, expected %g\n", shape_name(s),
                    i, (double)got, (double)want);
            exit(1);
        }
    }
}

static void bench(enum shape s, int nodes, uint32_t threads, const char *device)
{
    loom_runtime_options ropts = {.struct_size = sizeof ropts, .cpu_threads = threads};
    loom_runtime *rt = NULL;
    bench_check(loom_runtime_create(&ropts, &rt), "loom_runtime_create");

    double t0 = bench_now();
    loom_graph *g = build(s, nodes);
    double t1 = bench_now();
    loom_plan_options popts = {.struct_size = sizeof popts, .device = device};
    loom_plan *plan = NULL;
    bench_check(loom_plan_create(rt, g, &popts, &plan), "loom_plan_create");
    double t2 = bench_now();
    loom_graph_destroy(g);

    const int64_t one[1] = {1};
    loom_tensor *x = NULL;
    bench_check(loom_tensor_create(LOOM_DTYPE_F32, 1, one, &x), "loom_tensor_create");
    *(float *)loom_tensor_data(x) = 0.5f;
    const size_t n_outs = s == INDEPENDENT ? (size_t)nodes : 1;
    loom_tensor **outs = calloc(n_outs, sizeof *outs);
    if (!outs) {
        fprintf(stderr, "bench_dispatch: out of memory\n");
        exit(1);
    }
    bench_check(loom_plan_make_outputs(plan, outs, n_outs), "loom_plan_make_outputs");

    const loom_tensor *inputs[1] = {x};
    double wall[TIMED_RUNS];
    for (int r = 0; r < WARMUP_RUNS + TIMED_RUNS; r++) {
        double a = bench_now();
        bench_check(loom_plan_run(plan, inputs, 1, outs, n_outs, NULL), "loom_plan_run");
        double b = bench_now();
        if (r >= WARMUP_RUNS)
            wall[r - WARMUP_RUNS] = b - a;
    }
    verify(s, nodes, 0.5f, outs, n_outs);

    size_t plan_nodes = loom_plan_node_count(plan);
    double med = bench_median(wall, TIMED_RUNS);
    printf("%-12s %7d %7zu %8u %10.1f %10.1f %10.2f %10.2f\n", shape_name(s), nodes, plan_nodes,
           threads, (t1 - t0) * 1e3, (t2 - t1) * 1e3, med * 1e3,
           plan_nodes ? med * 1e6 / (double)plan_nodes : 0.0);
    fflush(stdout);

    for (size_t i = 0; i < n_outs; i++)
        loom_tensor_destroy(outs[i]);
    free(outs);
    loom_tensor_destroy(x);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
}

int main(int argc, char **argv)
{
    int nodes = 20000;
    const char *device = "cpu";
    for (int i = 1; i < argc; i++) {
        char *end;
        long v = strtol(argv[i], &end, 10);
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            device = argv[++i];
        } else if (argv[i][0] != '-' && !*end && v >= 1 && v <= 10000000) {
            nodes = (int)v;
        } else {
            fprintf(stderr, "usage: bench_dispatch [NODES] [--device ID]\n");
            return 2;
        }
    }
    int cores = bench_cores();
    printf("Loom dispatch overhead: tiny one-element Add nodes on %s, %d cores\n", device,
           cores);
    printf("run ms: median wall time of loom_plan_run over %d runs after %d warm-up runs;\n"
           "us/node: run ms / plan nodes. build/plan ms: graph construction + check, "
           "loom_plan_create.\n\n",
           TIMED_RUNS, WARMUP_RUNS);
    printf("%-12s %7s %7s %8s %10s %10s %10s %10s\n", "graph", "nodes", "plan", "threads",
           "build ms", "plan ms", "run ms", "us/node");
    /* The CPU thread counts matter on the CPU only; another device runs each shape once. */
    int on_cpu = !strcmp(device, "cpu") || !strncmp(device, "cpu:", 4);
    uint32_t thread_counts[2] = {on_cpu ? 1 : (uint32_t)cores, (uint32_t)cores};
    int n_counts = on_cpu && cores > 1 ? 2 : 1;
    for (int s = INDEPENDENT; s <= CHAIN; s++)
        for (int t = 0; t < n_counts; t++)
            bench((enum shape)s, nodes, thread_counts[t], device);
    return 0;
}
