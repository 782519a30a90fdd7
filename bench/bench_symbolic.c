/*
 * Symbolic dims in C-API graphs (issue 12, item 1): what a model made with loom_model_from_graph
 * costs. A small graph, x [batch, seq, H] -> Relu(x @ W1 + b1) @ W2 -> Reshape [batch, seq*H],
 * is built once with symbolic batch and seq; then
 *   - creating a specialisation: loom_model_run on N new shapes (rs.create_ms: specialising the
 *     graph, placing, compiling, memory planning), against loom_plan_create alone on the same
 *     graph built with those shapes fixed, and against the specialisation of the graph alone
 *     (graph_sym_specialise: re-inferring every node at the new shapes; hence the static
 *     library and the source root's headers);
 *   - the per-run overhead of a cached specialisation against a plan made directly for that
 *     shape: both allocate their outputs each run; medians of interleaved runs.
 * Figures only, no assertion on time.
 *
 *   bench_symbolic [--hidden H] [--shapes N] [--repeat R] [--device ID]
 */
#include <loom/loom.h>

#include "graph/graph_symbols.h" /* graph_sym_specialise, timed alone */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return v[n / 2];
}

/* The graph: symbolic when BATCH/SEQ are -1, else fixed at them. */
static loom_graph *build(int64_t batch, int64_t seq, int64_t h, const float *w1, const float *b1,
                         const float *w2)
{
    loom_graph *g = loom_graph_create("bench_symbolic");
    const int64_t xd[3] = {batch, seq, h}, wd[2] = {h, h}, bd[1] = {h};
    const char *names[3] = {"batch", "seq", NULL};
    loom_value x = batch < 0 ? loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 3, xd, names)
                             : loom_input(g, "x", LOOM_DTYPE_F32, 3, xd);
    loom_value a = loom_constant_borrowed(g, "W1", LOOM_DTYPE_F32, 2, wd, w1);
    loom_value b = loom_constant_borrowed(g, "b1", LOOM_DTYPE_F32, 1, bd, b1);
    loom_value c = loom_constant_borrowed(g, "W2", LOOM_DTYPE_F32, 2, wd, w2);
    loom_value y = loom_matmul(g, loom_relu(g, loom_add(g, loom_matmul(g, x, a), b)), c);
    const int64_t shape[2] = {0, -1};
    loom_output(g, loom_reshape(g, y, 2, shape), "y");
    if (loom_graph_check(g) != LOOM_OK) {
        fprintf(stderr, "graph: %s\n", loom_last_error());
        exit(1);
    }
    return g;
}

int main(int argc, char **argv)
{
    long h = 64, n_shapes = 20, repeat = 2000;
    const char *device = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hidden") && i + 1 < argc)
            h = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc)
            n_shapes = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--hidden H] [--shapes N] [--repeat R] [--device ID]\n",
                    argv[0]);
            return 2;
        }
    }
    if (h < 1 || n_shapes < 1 || repeat < 1) {
        fprintf(stderr, "bench_symbolic: --hidden, --shapes and --repeat must be >= 1\n");
        return 2;
    }
    float *w1 = malloc((size_t)(h * h) * sizeof *w1), *w2 = malloc((size_t)(h * h) * sizeof *w2);
    float *b1 = malloc((size_t)h * sizeof *b1);
    for (long i = 0; i < h * h; i++) {
        w1[i] = (float)(i % 13) * 0.01f - 0.06f;
        w2[i] = (float)(i % 7) * 0.02f - 0.06f;
    }
    for (long i = 0; i < h; i++)
        b1[i] = 0.01f * (float)i;
    loom_runtime *rt = NULL;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK) {
        fprintf(stderr, "runtime: %s\n", loom_last_error());
        return 1;
    }
    loom_plan_options po = {.struct_size = sizeof po, .device = device};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po,
                             .max_specialisations = (size_t)n_shapes + 1};
    loom_model *m = NULL;
    if (loom_model_from_graph(rt, build(-1, -1, h, w1, b1, w2), &mo, &m) != LOOM_OK) {
        fprintf(stderr, "model: %s\n", loom_last_error());
        return 1;
    }
    /* Creation: each shape once (a miss), then the same shape planned directly. */
    double *create = calloc((size_t)n_shapes, sizeof *create);
    double *direct = calloc((size_t)n_shapes, sizeof *direct);
    double *spec = calloc((size_t)n_shapes, sizeof *spec);
    loom_graph *sym = build(-1, -1, h, w1, b1, w2);
    for (long s = 0; s < n_shapes; s++) {
        const int64_t d[3] = {1 + s % 4, 3 + s, h};
        loom_tensor *x = NULL, *out[1] = {NULL};
        loom_tensor_create(LOOM_DTYPE_F32, 3, d, &x);
        memset(loom_tensor_data(x), 0, loom_tensor_nbytes(x));
        const loom_tensor *in[1] = {x};
        loom_model_run_stats rs = {.struct_size = sizeof rs};
        if (loom_model_run(m, in, 1, out, 1, &rs) != LOOM_OK || rs.cache_hit) {
            fprintf(stderr, "run: %s\n", loom_last_error());
            return 1;
        }
        create[s] = rs.create_ms;
        loom_tensor_destroy(out[0]);
        loom_graph *sg = NULL;
        double t1 = now_s();
        if (graph_sym_specialise(sym, in, 1, NULL, &sg) != LOOM_OK) {
            fprintf(stderr, "specialise: %s\n", loom_last_error());
            return 1;
        }
        spec[s] = (now_s() - t1) * 1e3;
        loom_graph_destroy(sg);
        loom_graph *g = build(d[0], d[1], h, w1, b1, w2);
        loom_plan *plan = NULL;
        double t0 = now_s();
        if (loom_plan_create(rt, g, &po, &plan) != LOOM_OK) {
            fprintf(stderr, "plan: %s\n", loom_last_error());
            return 1;
        }
        direct[s] = (now_s() - t0) * 1e3;
        loom_plan_destroy(plan);
        loom_graph_destroy(g);
        loom_tensor_destroy(x);
    }
    double cmin = create[0], cmax = create[0];
    for (long s = 0; s < n_shapes; s++) {
        cmin = create[s] < cmin ? create[s] : cmin;
        cmax = create[s] > cmax ? create[s] : cmax;
    }
    double cmed = median(create, (size_t)n_shapes), dmed = median(direct, (size_t)n_shapes);
    double smed = median(spec, (size_t)n_shapes);
    printf("hidden %ld, device %s: creating a specialisation (%ld new shapes): median %.3f ms "
           "(min %.3f, max %.3f); loom_plan_create alone on the same graph with fixed shapes: "
           "median %.3f ms; the graph's specialisation alone (graph_sym_specialise): median "
           "%.3f ms\n",
           h, device ? device : "(policy)", n_shapes, cmed, cmin, cmax, dmed, smed);
    loom_graph_destroy(sym);
    free(spec);

    /* Per-run overhead at batch 2, seq 8: cached specialisation vs a plan made directly. */
    const int64_t d[3] = {2, 8, h};
    loom_tensor *x = NULL, *mo_out[1] = {NULL}, *po_out[1] = {NULL};
    loom_tensor_create(LOOM_DTYPE_F32, 3, d, &x);
    memset(loom_tensor_data(x), 0, loom_tensor_nbytes(x));
    const loom_tensor *in[1] = {x};
    loom_graph *g = build(2, 8, h, w1, b1, w2);
    loom_plan *plan = NULL;
    if (loom_plan_create(rt, g, &po, &plan) != LOOM_OK ||
        loom_model_run(m, in, 1, mo_out, 1, NULL) != LOOM_OK) {
        fprintf(stderr, "overhead: %s\n", loom_last_error());
        return 1;
    }
    loom_tensor_destroy(mo_out[0]);
    double *tm = calloc((size_t)repeat, sizeof *tm), *tp = calloc((size_t)repeat, sizeof *tp);
    for (long r = -100; r < repeat; r++) {
        double a = now_s();
        loom_status ms = loom_model_run(m, in, 1, mo_out, 1, NULL);
        double b = now_s();
        loom_tensor_destroy(mo_out[0]);
        double c = now_s();
        loom_plan_make_outputs(plan, po_out, 1);
        loom_status ps = loom_plan_run(plan, in, 1, po_out, 1, NULL);
        double e = now_s();
        loom_tensor_destroy(po_out[0]);
        if (ms != LOOM_OK || ps != LOOM_OK) {
            fprintf(stderr, "overhead run: %s\n", loom_last_error());
            return 1;
        }
        if (r >= 0) {
            tm[r] = b - a;
            tp[r] = e - c;
        }
    }
    double mm = median(tm, (size_t)repeat), pm = median(tp, (size_t)repeat);
    printf("per run at [2, 8, %ld], %ld interleaved runs each: model (cached specialisation) "
           "median %.2f us, plan made directly median %.2f us: overhead %.2f us per run\n",
           h, repeat, mm * 1e6, pm * 1e6, (mm - pm) * 1e6);
    loom_model_stats st = {.struct_size = sizeof st};
    loom_model_stats_get(m, &st);
    printf("model: %llu runs, %llu hits, %llu misses, %zu live; constants %zu bytes held once, "
           "%zu bytes borrowed by the live specialisations, %zu copied\n",
           (unsigned long long)st.runs, (unsigned long long)st.hits,
           (unsigned long long)st.misses, st.live, st.weight_bytes, st.borrowed_bytes,
           st.copied_const_bytes);
    free(tm);
    free(tp);
    free(create);
    free(direct);
    loom_tensor_destroy(x);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_model_destroy(m);
    loom_runtime_destroy(rt);
    free(w1);
    free(w2);
    free(b1);
    return 0;
}
