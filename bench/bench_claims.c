/*
 * Subgraph claims (backend ABI 1.0) through the devmem test plugin: an MLP of LAYERS layers
 * (MatMul + bias Add of a constant row + Relu, WIDTH wide, batch BATCH) planned with the claim
 * stage (each layer one unit on devmem:0) and without it ($LOOM_CLAIMS=0, and $LOOM_FUSE=0 so
 * that the CPU's own fusion does not keep every node on the CPU): plan nodes, copy nodes, and
 * per run the copies and host wake-ups the executor counts (loom_run_stats) and the median
 * wall time; and node by node with MatMul and Relu pinned to devmem:0 (the bias Add, a
 * broadcast devmem does not run alone, stays on the CPU), the plan a claim replaces. Figures
 * only; nothing is asserted.
 *
 * Usage: bench_claims DEVMEM_PLUGIN [LAYERS WIDTH BATCH]   (default 3 256 32)
 */
#include "bench_common.h"

#include <string.h>

#define RUNS 20

static loom_graph *mlp(int layers, int width, int batch, float **store)
{
    loom_graph *g = loom_graph_create("mlp");
    int64_t dx[2] = {batch, width}, dw[2] = {width, width}, db[1] = {width};
    loom_value h = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    for (int l = 0; l < layers; l++) {
        float *w = store[2 * l], *b = store[2 * l + 1];
        for (int i = 0; i < width * width; i++)
            w[i] = (float)((i * 7 + l) % 13 - 6) / (13.0f * width);
        for (int i = 0; i < width; i++)
            b[i] = (float)(i % 5) / 10.0f;
        char wn[16], bn[16];
        snprintf(wn, sizeof wn, "w%d", l);
        snprintf(bn, sizeof bn, "b%d", l);
        loom_value mm = loom_matmul(g, h, loom_constant(g, wn, LOOM_DTYPE_F32, 2, dw, w));
        h = loom_relu(g, loom_add(g, mm, loom_constant(g, bn, LOOM_DTYPE_F32, 1, db, b)));
    }
    loom_output(g, h, "y");
    bench_check(loom_graph_check(g), "graph check");
    return g;
}

static void measure(loom_runtime *rt, loom_graph *g, int width, int batch, const char *what,
                    const char *const *pins, size_t n_pins)
{
    loom_plan_options o = {.struct_size = sizeof o, .pins = pins, .n_pins = n_pins};
    loom_plan *plan = NULL;
    bench_check(loom_plan_create(rt, g, &o, &plan), "plan");
    loom_plan_summary sm = {.struct_size = sizeof sm};
    bench_check(loom_plan_summary_get(plan, &sm), "summary");
    size_t on_dev = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        on_dev += !loom_plan_node_is_copy(plan, i) &&
                  !strncmp(loom_plan_node_device(plan, i), "devmem", 6);
    int64_t dx[2] = {batch, width};
    loom_tensor *x, *y;
    bench_check(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x), "tensor");
    float *xd = loom_tensor_data(x);
    for (int i = 0; i < batch * width; i++)
        xd[i] = (float)(i % 11) / 11.0f;
    bench_check(loom_plan_make_outputs(plan, &y, 1), "outputs");
    double t[RUNS];
    loom_run_stats st = {.struct_size = sizeof st};
    for (int r = 0; r < RUNS + 2; r++) {
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        double t0 = bench_now();
        bench_check(loom_plan_run(plan, (const loom_tensor *const *)&x, 1, &y, 1, &st), "run");
        if (r >= 2)
            t[r - 2] = bench_now() - t0;
    }
    printf("%-12s plan nodes %2zu (devmem %2zu), copy nodes %zu | per run: copies %zu, host "
           "wake-ups %zu, event waits %zu | median %.3f ms\n",
           what, loom_plan_node_count(plan), on_dev, sm.n_copies, st.copies, st.host_wakeups,
           st.event_waits, bench_median(t, RUNS) * 1e3);
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
    loom_plan_destroy(plan);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_claims DEVMEM_PLUGIN [LAYERS WIDTH BATCH]\n");
        return 2;
    }
    int layers = argc > 2 ? atoi(argv[2]) : 3, width = argc > 3 ? atoi(argv[3]) : 256;
    int batch = argc > 4 ? atoi(argv[4]) : 32;
    if (layers < 1 || width < 1 || batch < 1) {
        fprintf(stderr, "bench_claims: LAYERS, WIDTH and BATCH must be positive\n");
        return 2;
    }
    const char *paths[1] = {argv[1]};
    loom_runtime_options ro = {.struct_size = sizeof ro, .plugin_paths = paths,
                               .n_plugin_paths = 1, .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    bench_check(loom_runtime_create(&ro, &rt), "runtime");
    float **store = calloc(2 * (size_t)layers, sizeof *store);
    for (int l = 0; store && l < layers; l++) {
        store[2 * l] = malloc((size_t)width * width * sizeof(float));
        store[2 * l + 1] = malloc((size_t)width * sizeof(float));
        if (!store[2 * l] || !store[2 * l + 1])
            store = NULL;
    }
    if (!store) {
        fprintf(stderr, "bench_claims: out of memory\n");
        return 1;
    }
    loom_graph *g = mlp(layers, width, batch, store);
    printf("MLP %d x (MatMul+Add+Relu), width %d, batch %d, through devmem:0\n", layers, width,
           batch);
    unsetenv("LOOM_CLAIMS");
    measure(rt, g, width, batch, "claims", NULL, 0);
    setenv("LOOM_CLAIMS", "0", 1);
    setenv("LOOM_FUSE", "0", 1);
    measure(rt, g, width, batch, "no claims", NULL, 0);
    /* Node by node through devmem as far as it can (the bias Add, a broadcast, stays on the
     * CPU): the plan the claim replaces. */
    const char *pins[] = {"MatMul=devmem", "Relu=devmem"};
    measure(rt, g, width, batch, "node pins", pins, 2);
    loom_graph_destroy(g);
    for (int l = 0; l < 2 * layers; l++)
        free(store[l]);
    free(store);
    loom_runtime_destroy(rt);
    return 0;
}
