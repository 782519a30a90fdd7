/*
 * Per-node times of one ONNX model on Loom's CPU, as JSON, for bench/ort_compare.sh when
 * `loom run --json` lists no node times: imports MODEL, runs it on cpu:0 (LOOM_CPU_THREADS
 * threads) on the given .npy inputs, WARMUP + REPEAT times, and prints each node's median time
 * over the REPEAT runs from the run's timeline:
 *   {"latency_ms": {"median": ms}, "nodes": [{"node", "op", "device", "measured_ms"}, ...]}
 * Built by ort_compare.sh against the release build's libloom; not part of the meson build.
 * Usage: loom_node_times MODEL.onnx REPEAT WARMUP NAME=INPUT.npy...
 */
#include <loom/loom.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* S as a JSON string body (ONNX names may hold any character). */
static void put_json(const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: loom_node_times MODEL.onnx REPEAT WARMUP NAME=INPUT.npy...\n");
        return 2;
    }
    int repeat = atoi(argv[2]), warmup = atoi(argv[3]);
    size_t n_in = (size_t)(argc - 4);
    if (repeat < 1 || warmup < 0) {
        fprintf(stderr, "loom_node_times: REPEAT must be >= 1 and WARMUP >= 0\n");
        return 2;
    }
    loom_graph *g = NULL;
    loom_runtime *rt = NULL;
    loom_plan *plan = NULL;
    loom_tensor **in = calloc(n_in + 1, sizeof *in), **out = NULL;
    loom_node_timing *tl = NULL;
    double *node_ms = NULL, *lat = calloc((size_t)repeat, sizeof *lat);
    int rc = 1;
    size_t n_out = 0, nn = 0;

    if (loom_onnx_load(argv[1], NULL, &g) != LOOM_OK || loom_runtime_create(NULL, &rt) != LOOM_OK)
        goto fail;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0", .strict = 1};
    if (loom_plan_create(rt, g, &po, &plan) != LOOM_OK)
        goto fail;
    if (n_in != loom_graph_input_count(g)) {
        fprintf(stderr, "loom_node_times: the model has %zu inputs, %zu given\n",
                loom_graph_input_count(g), n_in);
        goto out;
    }
    for (size_t i = 0; i < n_in; i++) {
        const char *name = loom_value_name(g, loom_graph_input(g, i)), *file = NULL;
        size_t len = strlen(name);
        for (size_t k = 0; k < n_in; k++)
            if (!strncmp(argv[4 + k], name, len) && argv[4 + k][len] == '=')
                file = argv[4 + k] + len + 1;
        if (!file) {
            fprintf(stderr, "loom_node_times: no NAME=FILE for input '%s'\n", name);
            goto out;
        }
        if (loom_tensor_load_npy(file, &in[i]) != LOOM_OK)
            goto fail;
    }
    n_out = loom_graph_output_count(g);
    nn = loom_plan_node_count(plan);
    out = calloc(n_out, sizeof *out);
    tl = calloc(nn, sizeof *tl);
    node_ms = calloc(nn * (size_t)repeat, sizeof *node_ms);
    if (!out || !tl || !node_ms || !lat || !in)
        goto out;
    if (loom_plan_make_outputs(plan, out, n_out) != LOOM_OK)
        goto fail;
    for (int r = -warmup; r < repeat; r++) {
        loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = nn};
        if (loom_plan_run(plan, (const loom_tensor *const *)in, n_in, out, n_out, &st) != LOOM_OK)
            goto fail;
        if (r < 0)
            continue;
        lat[r] = st.latency_ms;
        for (size_t k = 0; k < st.timeline_count; k++)
            node_ms[tl[k].node * (size_t)repeat + (size_t)r] =
                (double)(tl[k].end_ns - tl[k].start_ns) / 1e6;
    }
    printf("{\"latency_ms\": {\"median\": %.6f}, \"nodes\": [", median(lat, repeat));
    for (size_t i = 0; i < nn; i++) {
        printf("%s\n {\"node\": \"", i ? "," : "");
        put_json(loom_plan_node_name(plan, i));
        printf("\", \"op\": \"");
        put_json(loom_plan_node_op(plan, i));
        printf("\", \"device\": \"");
        put_json(loom_plan_node_device(plan, i));
        printf("\", \"measured_ms\": %.6f}", median(&node_ms[i * (size_t)repeat], repeat));
    }
    printf("\n]}\n");
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "loom_node_times: %s\n", loom_last_error());
out:
    for (size_t i = 0; in && i < n_in; i++)
        loom_tensor_destroy(in[i]);
    for (size_t i = 0; out && i < n_out; i++)
        loom_tensor_destroy(out[i]);
    free(in), free(out), free(tl), free(node_ms), free(lat);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
    return rc;
}
