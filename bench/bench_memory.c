/*
 * What the static memory plan saves: for the example models (examples/models.h), the plan's peak
 * of intermediate memory against the sum of all intermediates (no reuse), and their ratio. One
 * run of each plan also reports the peak it saw, which should match the plan's.
 */
#include "bench_common.h"

#include <stdint.h>

#include "models.h"

/* One run of PLAN on seeded random inputs; returns the run's peak_bytes. */
static size_t run_once(const loom_graph *g, loom_plan *plan)
{
    size_t n_in = loom_graph_input_count(g), n_out = loom_graph_output_count(g);
    loom_tensor **ins = calloc(n_in ? n_in : 1, sizeof *ins);
    loom_tensor **outs = calloc(n_out ? n_out : 1, sizeof *outs);
    if (!ins || !outs) {
        fprintf(stderr, "bench_memory: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n_in; i++) {
        loom_dtype dtype;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK];
        bench_check(loom_value_info(g, loom_graph_input(g, i), &dtype, &rank, dims),
                    "loom_value_info");
        bench_check(loom_tensor_create(dtype, rank, dims, &ins[i]), "loom_tensor_create");
        if (dtype == LOOM_DTYPE_F32)
            example_fill_uniform(loom_tensor_data(ins[i]),
                                 loom_tensor_nbytes(ins[i]) / sizeof(float), 7 + i, -1.0f, 1.0f);
    }
    bench_check(loom_plan_make_outputs(plan, outs, n_out), "loom_plan_make_outputs");
    loom_run_stats stats = {.struct_size = sizeof stats};
    bench_check(loom_plan_run(plan, (const loom_tensor *const *)ins, n_in, outs, n_out, &stats),
                "loom_plan_run");
    for (size_t i = 0; i < n_in; i++)
        loom_tensor_destroy(ins[i]);
    for (size_t i = 0; i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    free(ins);
    free(outs);
    return stats.peak_bytes;
}

static void report(loom_runtime *rt, const char *name, loom_graph *g)
{
    if (!g) {
        fprintf(stderr, "bench_memory: out of memory building %s\n", name);
        exit(1);
    }
    bench_check(loom_graph_check(g), "loom_graph_check");
    loom_plan *plan = NULL;
    bench_check(loom_plan_create(rt, g, NULL, &plan), "loom_plan_create");
    size_t run_peak = run_once(g, plan);
    size_t peak = loom_plan_peak_bytes(plan), unshared = loom_plan_unshared_bytes(plan);
    printf("%-10s %6zu %14zu %14zu %8.3f %14zu\n", name, loom_plan_node_count(plan), peak,
           unshared, unshared ? (double)peak / (double)unshared : 0.0, run_peak);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

int main(void)
{
    loom_runtime *rt = NULL;
    bench_check(loom_runtime_create(NULL, &rt), "loom_runtime_create");
    printf("Intermediate memory of the example models: the static plan's peak vs the sum of all\n"
           "intermediates (what a run would need without reuse); ratio = peak / unshared.\n"
           "Bytes, all devices together; 'run peak' is loom_run_stats.peak_bytes of one run.\n\n");
    printf("%-10s %6s %14s %14s %8s %14s\n", "model", "nodes", "peak B", "unshared B", "ratio",
           "run peak B");
    report(rt, "mlp", example_mlp());
    report(rt, "attention", example_attention());
    loom_runtime_destroy(rt);
    return 0;
}
