/*
 * Placement time on a large graph: blocks of two parallel towers (MatMul -> Relu on each, joined
 * by Add), repeated until the graph has NODES nodes (default 10,000), planned on every device
 * the runtime finds plus the plugins named on the command line (e.g. npu-sim and the devmem test
 * plugin: with the CPU and an OpenCL device that makes four). Prints the time of the placement
 * itself (costs of every node on every device, then the policy: loom_plan_summary.placement_ms)
 * and of the whole loom_plan_create (which also compiles every node and plans memory), per
 * policy, medians of 3.
 *
 * Usage: bench_place [NODES] [PLUGIN.so ...]
 */
#include "bench_common.h"

#include <stdint.h>
#include <string.h>

static loom_graph *build(int nodes)
{
    loom_graph *g = loom_graph_create("towers");
    const int64_t dx[2] = {32, 64}, dw[2] = {64, 64};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    /* The weights are one graph input shared by every MatMul: 10,000 nodes of weights would
     * be a gigabyte, and placement does not care where the bytes come from. */
    loom_value w = loom_input(g, "w", LOOM_DTYPE_F32, 2, dw);
    loom_value h = x;
    for (int n = 0; n + 5 <= nodes; n += 5) {
        loom_value a = loom_relu(g, loom_matmul(g, h, w));
        loom_value b = loom_relu(g, loom_matmul(g, h, w));
        h = loom_add(g, a, b);
    }
    loom_output(g, h, "y");
    if (loom_graph_check(g) != LOOM_OK) {
        fprintf(stderr, "bench_place: %s\n", loom_last_error());
        exit(1);
    }
    return g;
}

int main(int argc, char **argv)
{
    int nodes = argc > 1 ? atoi(argv[1]) : 10000;
    if (nodes < 5) {
        fprintf(stderr, "usage: bench_place [NODES >= 5] [PLUGIN.so ...]\n");
        return 2;
    }
    const char **paths = (const char **)(argv + 2);
    loom_runtime_options ro = {.struct_size = sizeof ro, .plugin_paths = argc > 2 ? paths : NULL,
                               .n_plugin_paths = argc > 2 ? (size_t)(argc - 2) : 0};
    loom_runtime *rt;
    if (loom_runtime_create(&ro, &rt) != LOOM_OK) {
        fprintf(stderr, "bench_place: %s\n", loom_last_error());
        return 1;
    }
    printf("devices:");
    for (size_t i = 0; i < loom_runtime_device_count(rt); i++) {
        char id[64];
        loom_runtime_device(rt, i, id, sizeof id, NULL);
        printf(" %s", id);
    }
    printf("\n");
    loom_graph *g = build(nodes);
    const char *policies[] = {"first", "heft", "peft", "default"};
    for (size_t p = 0; p < sizeof policies / sizeof *policies; p++) {
        double place_ms[3], create_ms[3], pred = 0, heft = 0;
        size_t n_nodes = 0, copies = 0;
        for (int r = 0; r < 3; r++) {
            loom_plan_options o = {.struct_size = sizeof o, .policy = policies[p],
                                   .precision = LOOM_PRECISION_F16};
            double t0 = bench_now();
            loom_plan *plan;
            if (loom_plan_create(rt, g, &o, &plan) != LOOM_OK) {
                fprintf(stderr, "bench_place: %s\n", loom_last_error());
                return 1;
            }
            create_ms[r] = (bench_now() - t0) * 1e3;
            loom_plan_summary sm = {.struct_size = sizeof sm};
            loom_plan_summary_get(plan, &sm);
            place_ms[r] = sm.placement_ms;
            pred = sm.predicted_s;
            heft = sm.heft_predicted_s;
            copies = sm.n_copies;
            n_nodes = loom_plan_node_count(plan) - copies;
            loom_plan_destroy(plan);
        }
        qsort(place_ms, 3, sizeof(double), bench_cmp_double);
        qsort(create_ms, 3, sizeof(double), bench_cmp_double);
        printf("policy %-8s nodes %zu: placement %.1f ms, plan_create %.1f ms; predicted "
               "%.3f ms (HEFT %.3f ms), %zu copies\n",
               policies[p], n_nodes, place_ms[1], create_ms[1], pred * 1e3, heft * 1e3, copies);
    }
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    return 0;
}
