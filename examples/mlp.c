/*
 * A 3-layer MLP (batch 64, 784 -> 512 -> 256 -> 10, softmax) built through the C API, checked,
 * planned, and run: the whole life of a graph in one small program to copy from. It prints the
 * first row of class probabilities, the latency, and how much intermediate memory the plan's
 * reuse saves. Exit status 0 on success, 1 on any failure (with Loom's message on stderr).
 *
 * Build in-tree with meson (build/examples/mlp), or against an installed Loom with the Makefile
 * beside this file: make && ./mlp
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include <loom/loom.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models.h"

#define WARMUP_RUNS 2
#define TIMED_RUNS 20

static int report(const char *what, loom_status status)
{
    fprintf(stderr, "mlp: %s failed (%s): %s\n", what, loom_status_name(status),
            loom_last_error());
    return 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* How many of PLAN's nodes went to each device, e.g. "7 on cpu:0". */
static void print_placement(const loom_plan *plan)
{
    size_t n = loom_plan_node_count(plan);
    printf("placement: %zu nodes:", n);
    for (size_t i = 0; i < n; i++) {
        const char *dev = loom_plan_node_device(plan, i);
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(loom_plan_node_device(plan, j), dev) == 0;
        if (seen)
            continue;
        size_t count = 0;
        for (size_t j = i; j < n; j++)
            count += strcmp(loom_plan_node_device(plan, j), dev) == 0;
        printf(" %zu on %s", count, dev);
    }
    printf("\n");
}

int main(void)
{
    int rc = 1;
    loom_status st;
    loom_graph *graph = NULL;
    loom_runtime *runtime = NULL;
    loom_plan *plan = NULL;
    loom_tensor *input = NULL, *output = NULL;

    graph = example_mlp();
    if (!graph) {
        fprintf(stderr, "mlp: out of memory while building the graph\n");
        goto done;
    }
    /* Builder errors are sticky: one check here reports the first of them. */
    if ((st = loom_graph_check(graph)) != LOOM_OK) {
        report("loom_graph_check", st);
        goto done;
    }

    /* The input tensor, shaped as the graph declared it, filled with seeded random pixels. */
    loom_dtype dtype;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
    if ((st = loom_value_info(graph, loom_graph_input(graph, 0), &dtype, &rank, dims)) != LOOM_OK) {
        report("loom_value_info", st);
        goto done;
    }
    if ((st = loom_tensor_create(dtype, rank, dims, &input)) != LOOM_OK) {
        report("loom_tensor_create", st);
        goto done;
    }
    example_fill_uniform(loom_tensor_data(input), loom_tensor_nbytes(input) / sizeof(float), 42,
                         0.0f, 1.0f);

    if ((st = loom_runtime_create(NULL, &runtime)) != LOOM_OK) {
        report("loom_runtime_create", st);
        goto done;
    }
    if ((st = loom_plan_create(runtime, graph, NULL, &plan)) != LOOM_OK) {
        report("loom_plan_create", st);
        goto done;
    }
    /* The plan keeps what it needs: the graph can go now. */
    loom_graph_destroy(graph);
    graph = NULL;

    if ((st = loom_plan_make_outputs(plan, &output, 1)) != LOOM_OK) {
        report("loom_plan_make_outputs", st);
        goto done;
    }

    const loom_tensor *inputs[1] = {input};
    loom_tensor *outputs[1] = {output};
    double wall[TIMED_RUNS], own[TIMED_RUNS];
    size_t run_peak = 0;
    for (int r = 0; r < WARMUP_RUNS + TIMED_RUNS; r++) {
        loom_run_stats stats = {.struct_size = sizeof stats};
        double t0 = now_ms();
        if ((st = loom_plan_run(plan, inputs, 1, outputs, 1, &stats)) != LOOM_OK) {
            report("loom_plan_run", st);
            goto done;
        }
        double t1 = now_ms();
        if (r >= WARMUP_RUNS) {
            wall[r - WARMUP_RUNS] = t1 - t0;
            own[r - WARMUP_RUNS] = stats.latency_ms;
        }
        run_peak = stats.peak_bytes;
    }

    /* Each row is a probability distribution over the 10 classes. */
    const float *probs = loom_tensor_data(output);
    int64_t out_dims[LOOM_MAX_RANK];
    loom_tensor_dims(output, out_dims);
    const int64_t rows = out_dims[0], classes = out_dims[1];
    printf("mlp: %d x %d -> %d -> %d -> %d, softmax\n", EXAMPLE_MLP_BATCH, EXAMPLE_MLP_IN,
           EXAMPLE_MLP_HIDDEN1, EXAMPLE_MLP_HIDDEN2, EXAMPLE_MLP_OUT);
    print_placement(plan);
    printf("probs[0] =");
    for (int64_t c = 0; c < classes; c++)
        printf(" %.5f", probs[c]);
    printf("\n");
    for (int64_t r = 0; r < rows; r++) {
        double sum = 0.0;
        for (int64_t c = 0; c < classes; c++) {
            float p = probs[r * classes + c];
            if (!isfinite(p) || p < 0.0f || p > 1.0f) {
                fprintf(stderr, "mlp: probs[%lld][%lld] = %g is not a probability\n",
                        (long long)r, (long long)c, (double)p);
                goto done;
            }
            sum += p;
        }
        if (fabs(sum - 1.0) > 1e-4) {
            fprintf(stderr, "mlp: row %lld of the softmax sums to %.6f, not 1\n", (long long)r,
                    sum);
            goto done;
        }
    }

    qsort(wall, TIMED_RUNS, sizeof wall[0], cmp_double);
    qsort(own, TIMED_RUNS, sizeof own[0], cmp_double);
    printf("latency: median %.3f ms, min %.3f ms over %d runs (Loom's own figure: median %.3f "
           "ms)\n",
           wall[TIMED_RUNS / 2], wall[0], TIMED_RUNS, own[TIMED_RUNS / 2]);

    size_t peak = loom_plan_peak_bytes(plan), unshared = loom_plan_unshared_bytes(plan);
    printf("intermediate memory: peak %.1f KiB vs %.1f KiB unshared (%.0f%%); last run's peak "
           "%.1f KiB\n",
           peak / 1024.0, unshared / 1024.0, unshared ? 100.0 * (double)peak / unshared : 0.0,
           run_peak / 1024.0);
    rc = 0;

done:
    loom_tensor_destroy(output);
    loom_tensor_destroy(input);
    loom_plan_destroy(plan);
    loom_runtime_destroy(runtime);
    loom_graph_destroy(graph);
    return rc;
}
