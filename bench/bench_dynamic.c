/*
 * Dynamic shapes (issue 12): one loom_model of a BERT-base with dynamic batch and sequence
 * (bench/make_bert.py --dynamic) runs every shape of a grid in one process. Prints, per shape,
 * whether it created a specialisation and how long that took, the run's latency and the
 * process's resident memory; then resident memory against the weights plus the largest
 * specialisation's intermediates, and the per-run overhead of a cached specialisation against
 * a plan made for that shape alone (both allocate their outputs each run). Figures only.
 *
 *   bench_dynamic MODEL.onnx [--seq 16,64,128,256] [--batch 1,4,16] [--repeat N] [--out DIR]
 *                 [--overhead SMALL.onnx]
 * --overhead measures the per-run overhead on a small model too (50 x N runs), where a few
 * microseconds are not lost in the run's own noise.
 * --out DIR writes DIR/b<B>_s<S>/input_ids.npy and hidden.npy for bench/ort_dynamic.sh.
 */
#include <loom/loom.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident memory of this process, bytes. */
static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

static size_t parse_list(const char *s, long *out, size_t cap)
{
    size_t n = 0;
    while (*s && n < cap) {
        char *end;
        out[n++] = strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s)
            break;
    }
    return n;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static loom_tensor *token_ids(long batch, long seq, unsigned seed)
{
    int64_t d[2] = {batch, seq};
    loom_tensor *t = NULL;
    if (loom_tensor_create(LOOM_DTYPE_I64, 2, d, &t) != LOOM_OK)
        return NULL;
    int64_t *p = loom_tensor_data(t);
    uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
    for (long i = 0; i < batch * seq; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (int64_t)(x % 30522);
    }
    return t;
}

/* Per-run overhead of a cached specialisation of PATH (every dynamic dim 2, inputs zero)
 * against a plan made for that shape alone; both make their outputs each run; medians of
 * REPEAT interleaved runs. A small model shows what the model adds, not the run's noise. */
static int overhead(loom_runtime *rt, const char *path, long repeat)
{
    loom_model *m;
    if (loom_model_load_onnx(rt, path, NULL, &m) != LOOM_OK) {
        fprintf(stderr, "overhead: %s\n", loom_last_error());
        return 1;
    }
    size_t n = loom_model_input_count(m), n_out = loom_model_output_count(m);
    loom_tensor *in[16] = {0}, *mo[16] = {0}, *po[16] = {0};
    loom_onnx_shape shapes[16];
    int64_t dims[16][LOOM_MAX_RANK];
    for (size_t i = 0; i < n && i < 16; i++) {
        loom_model_io io = {.struct_size = sizeof io};
        loom_model_input_info(m, i, &io);
        for (int32_t k = 0; k < io.rank; k++)
            dims[i][k] = io.dims[k] < 0 ? 2 : io.dims[k];
        loom_tensor_create(io.dtype, (uint32_t)io.rank, dims[i], &in[i]);
        shapes[i] = (loom_onnx_shape){.input = io.name, .rank = (uint32_t)io.rank,
                                      .dims = dims[i]};
    }
    loom_onnx_options oo = {.struct_size = sizeof oo, .shapes = shapes, .n_shapes = n};
    loom_graph *g;
    loom_plan *plan;
    if (loom_onnx_load(path, &oo, &g) != LOOM_OK || loom_plan_create(rt, g, NULL, &plan) != LOOM_OK) {
        fprintf(stderr, "overhead, plan alone: %s\n", loom_last_error());
        return 1;
    }
    if (loom_model_run(m, (const loom_tensor *const *)in, n, mo, n_out, NULL) != LOOM_OK) {
        fprintf(stderr, "overhead, model run: %s\n", loom_last_error());
        return 1;
    }
    for (size_t k = 0; k < n_out; k++)
        loom_tensor_destroy(mo[k]);
    double *tm = calloc((size_t)repeat, sizeof *tm), *tp = calloc((size_t)repeat, sizeof *tp);
    for (long r = -50; r < repeat; r++) {
        double a = now_s();
        loom_model_run(m, (const loom_tensor *const *)in, n, mo, n_out, NULL);
        double b = now_s();
        for (size_t k = 0; k < n_out; k++)
            loom_tensor_destroy(mo[k]);
        double c = now_s();
        loom_plan_make_outputs(plan, po, n_out);
        loom_status pst = loom_plan_run(plan, (const loom_tensor *const *)in, n, po, n_out, NULL);
        double d = now_s();
        if (pst != LOOM_OK) {
            fprintf(stderr, "overhead, plan run: %s\n", loom_last_error());
            return 1;
        }
        for (size_t k = 0; k < n_out; k++)
            loom_tensor_destroy(po[k]);
        if (r >= 0) {
            tm[r] = b - a;
            tp[r] = d - c;
        }
    }
    qsort(tm, (size_t)repeat, sizeof *tm, cmp_d);
    qsort(tp, (size_t)repeat, sizeof *tp, cmp_d);
    printf("overhead on %s (dynamic dims 2), %ld runs each: model (cached) median %.2f us, plan "
           "alone median %.2f us: %.2f us per run\n", path, repeat, tm[repeat / 2] * 1e6,
           tp[repeat / 2] * 1e6, (tm[repeat / 2] - tp[repeat / 2]) * 1e6);
    free(tm);
    free(tp);
    for (size_t i = 0; i < n; i++)
        loom_tensor_destroy(in[i]);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_model_destroy(m);
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *out_dir = NULL, *small = NULL;
    long seqs[16] = {16, 64, 128, 256}, batches[16] = {1, 4, 16};
    size_t n_seq = 4, n_batch = 3;
    long repeat = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seq") && i + 1 < argc)
            n_seq = parse_list(argv[++i], seqs, 16);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            n_batch = parse_list(argv[++i], batches, 16);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--overhead") && i + 1 < argc)
            small = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out_dir = argv[++i];
        else
            model = argv[i];
    }
    if (!model) {
        fprintf(stderr, "usage: bench_dynamic MODEL.onnx [--seq L] [--batch L] [--repeat N] "
                        "[--out DIR]\n");
        return 2;
    }
    loom_runtime *rt;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK) {
        fprintf(stderr, "runtime: %s\n", loom_last_error());
        return 1;
    }
    if (small && overhead(rt, small, repeat * 50) != 0)
        return 1;
    double rss0 = rss_bytes();
    double t0 = now_s();
    loom_model *m;
    loom_model_options mo = {.struct_size = sizeof mo};
    if (loom_model_load_onnx(rt, model, &mo, &m) != LOOM_OK) {
        fprintf(stderr, "load: %s\n", loom_last_error());
        return 1;
    }
    double load_s = now_s() - t0;
    loom_model_stats ms = {.struct_size = sizeof ms};
    loom_model_stats_get(m, &ms);
    printf("model %s: loaded in %.2f s, weights %.1f MB in %zu tensors, RSS %.1f MB (%.1f MB "
           "before load)\n", model, load_s, ms.weight_bytes / 1e6, ms.weight_tensors,
           rss_bytes() / 1e6, rss0 / 1e6);
    printf("%6s %6s %8s %12s %12s %14s %10s\n", "batch", "seq", "spec", "create ms",
           "latency ms", "intermed. MB", "RSS MB");
    double max_rss = 0, max_spec = 0, max_create = 0;
    for (size_t si = 0; si < n_seq; si++)
        for (size_t bi = 0; bi < n_batch; bi++) {
            long b = batches[bi], s = seqs[si];
            loom_tensor *ids = token_ids(b, s, (unsigned)(b * 1000 + s));
            loom_tensor *out = NULL;
            loom_model_run_stats rs = {.struct_size = sizeof rs};
            const loom_tensor *in[1] = {ids};
            if (loom_model_run(m, in, 1, &out, 1, &rs) != LOOM_OK) {
                fprintf(stderr, "run b%ld s%ld: %s\n", b, s, loom_last_error());
                return 1;
            }
            double r = rss_bytes();
            if (r > max_rss)
                max_rss = r;
            if ((double)rs.specialisation_bytes > max_spec)
                max_spec = (double)rs.specialisation_bytes;
            if (!rs.cache_hit && rs.create_ms > max_create)
                max_create = rs.create_ms;
            printf("%6ld %6ld %8s %12.2f %12.1f %14.1f %10.1f\n", b, s,
                   rs.cache_hit ? "hit" : "new", rs.create_ms, rs.latency_ms,
                   rs.specialisation_bytes / 1e6, r / 1e6);
            fflush(stdout);
            if (out_dir) {
                char d[1024], p[1100];
                snprintf(d, sizeof d, "%s/b%ld_s%ld", out_dir, b, s);
                mkdir(out_dir, 0777);
                mkdir(d, 0777);
                snprintf(p, sizeof p, "%s/input_ids.npy", d);
                loom_tensor_save_npy(p, ids);
                snprintf(p, sizeof p, "%s/hidden.npy", d);
                loom_tensor_save_npy(p, out);
            }
            loom_tensor_destroy(out);
            loom_tensor_destroy(ids);
        }
    loom_model_stats_get(m, &ms);
    double bound = (double)ms.weight_bytes + max_spec;
    printf("specialisations: %llu created, %llu hits, %zu live; weights held once: %.1f MB "
           "(borrowed %.1f MB across specialisations, copied constants %.1f MB)\n",
           (unsigned long long)ms.misses, (unsigned long long)ms.hits, ms.live,
           ms.weight_bytes / 1e6, ms.borrowed_bytes / 1e6, ms.copied_const_bytes / 1e6);
    if (ms.device_weight_uploads)
        printf("weights on devices the host cannot address (once per device for every "
               "specialisation): %.1f MB in %zu tensors, %llu uploads\n",
               ms.device_weight_bytes / 1e6, ms.device_weight_tensors,
               (unsigned long long)ms.device_weight_uploads);
    printf("largest RSS %.1f MB = %.3f x (weights %.1f MB + largest specialisation %.1f MB); "
           "slowest creation %.2f ms\n", max_rss / 1e6, max_rss / bound, ms.weight_bytes / 1e6,
           max_spec / 1e6, max_create);

    /* Overhead of a cached specialisation per run, against a plan made for the shape alone:
     * both make their outputs each run; medians of interleaved runs. */
    long ob = batches[0], os_ = seqs[0];
    char name_b[] = "batch", name_s[] = "sequence";
    loom_onnx_dim dims[2] = {{name_b, ob}, {name_s, os_}};
    loom_onnx_options oo = {.struct_size = sizeof oo, .dims = dims, .n_dims = 2};
    loom_graph *g;
    loom_plan *plan;
    if (loom_onnx_load(model, &oo, &g) != LOOM_OK ||
        loom_plan_create(rt, g, NULL, &plan) != LOOM_OK) {
        fprintf(stderr, "plan alone: %s\n", loom_last_error());
        return 1;
    }
    loom_tensor *ids = token_ids(ob, os_, 7);
    const loom_tensor *in[1] = {ids};
    double *tm = calloc((size_t)repeat, sizeof *tm), *tp = calloc((size_t)repeat, sizeof *tp);
    for (long r = -5; r < repeat; r++) {
        loom_tensor *out = NULL;
        double a = now_s();
        loom_model_run(m, in, 1, &out, 1, NULL);
        double bsec = now_s();
        loom_tensor_destroy(out);
        loom_tensor *po = NULL;
        double c = now_s();
        loom_plan_make_outputs(plan, &po, 1);
        loom_plan_run(plan, in, 1, &po, 1, NULL);
        double d = now_s();
        loom_tensor_destroy(po);
        if (r >= 0) {
            tm[r] = bsec - a;
            tp[r] = d - c;
        }
    }
    qsort(tm, (size_t)repeat, sizeof *tm, cmp_d);
    qsort(tp, (size_t)repeat, sizeof *tp, cmp_d);
    double mm = tm[repeat / 2], pm = tp[repeat / 2];
    printf("batch %ld seq %ld, %ld runs each: model (cached) median %.1f us, plan alone median "
           "%.1f us: overhead %.1f us per run\n", ob, os_, repeat, mm * 1e6, pm * 1e6,
           (mm - pm) * 1e6);
    free(tm);
    free(tp);
    loom_tensor_destroy(ids);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_model_destroy(m);
    loom_runtime_destroy(rt);
    return 0;
}
