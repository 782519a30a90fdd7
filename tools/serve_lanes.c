/*
 * `--cpu-threads auto` (serve_lanes.h): the serving ceiling of each model measured under a
 * thread per core (one run at a time) and under one thread per run (a run per core at once),
 * and the way whose ceilings are higher.
 */
#include "serve_lanes.h"

#include "tool_util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LANES_MAX 256
#define TIMED_RUNS 5 /* per lane and size, after one untimed run */

/* Inputs of MODEL at batch size B along AXIS: declared dims, dynamic ones 1, zero-filled (as
 * the server's warm-up fills them). Returns 0, or -1 with whatever was made destroyed. */
static int make_inputs(const loom_model *model, uint32_t axis, int64_t b, loom_tensor **ins,
                       size_t n_in)
{
    for (size_t k = 0; k < n_in; k++) {
        loom_model_io io = {.struct_size = sizeof io};
        int64_t dims[LOOM_MAX_RANK];
        int ok = loom_model_input_info(model, k, &io) == LOOM_OK && io.rank >= 0 &&
                 io.rank <= LOOM_MAX_RANK;
        for (int32_t d = 0; ok && d < io.rank; d++)
            dims[d] = (uint32_t)d == axis ? b : io.dims[d] > 0 ? io.dims[d] : 1;
        if (!ok || loom_tensor_create(io.dtype, (uint32_t)io.rank, dims, &ins[k]) != LOOM_OK) {
            for (size_t j = 0; j < k; j++)
                loom_tensor_destroy(ins[j]);
            return -1;
        }
    }
    return 0;
}

typedef struct lane {
    loom_model *model;
    const loom_tensor *const *ins;
    size_t n_in, n_out;
    int timed;              /* runs timed after the untimed one */
    double ms[TIMED_RUNS];
    int ok;
    char err[256];          /* why a run failed (loom_last_error is the failing thread's) */
    pthread_t th;
} lane;

/* One lane: an untimed run, then L->timed timed ones (the plan's run alone). */
static void *lane_main(void *arg)
{
    lane *l = arg;
    loom_tensor *outs[64];
    l->ok = l->n_out <= 64;
    if (!l->ok)
        snprintf(l->err, sizeof l->err, "more than 64 outputs");
    for (int r = -1; l->ok && r < l->timed; r++) {
        loom_model_run_stats st = {.struct_size = sizeof st};
        l->ok = loom_model_run(l->model, l->ins, l->n_in, outs, l->n_out, &st) == LOOM_OK;
        if (!l->ok) {
            snprintf(l->err, sizeof l->err, "%s", loom_last_error());
            break;
        }
        for (size_t k = 0; k < l->n_out; k++)
            loom_tensor_destroy(outs[k]);
        if (r >= 0)
            l->ms[r] = st.run_ms;
    }
    return NULL;
}

/* The batch size after B on the way to MAX: doubled, and MAX itself last. */
static uint32_t next_size(uint32_t b, uint32_t max)
{
    return b < max && b * 2 > max ? max : b * 2;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The ceiling of M (samples/s) with LANES runs at once on RT; *BEST_B its batch size. 0 when
 * the model cannot be measured (ERR says why). */
static double ceiling(loom_runtime *rt, const serve_lanes_model *m, unsigned lanes,
                      uint32_t *best_b, char *err, size_t err_len)
{
    const loom_serve_model_options *o = m->options;
    uint32_t max_batch = o && o->max_batch ? o->max_batch : 8;
    uint32_t axis = o ? o->batch_axis : 0;
    double half_target_ms = (o && o->latency_target_s > 0 ? o->latency_target_s : 0.05) * 500;
    loom_model_options mo = {.struct_size = sizeof mo, .plan = o ? o->plan_options : NULL};
    loom_model *model = NULL;
    if (loom_model_load_onnx(rt, m->path, &mo, &model) != LOOM_OK) {
        snprintf(err, err_len, "%s: %s", m->path, loom_last_error());
        return 0;
    }
    size_t n_in = loom_model_input_count(model), n_out = loom_model_output_count(model);
    loom_tensor **ins = calloc(n_in ? n_in : 1, sizeof *ins);
    lane *ls = calloc(lanes, sizeof *ls);
    double best = 0, *all = calloc((size_t)lanes * TIMED_RUNS, sizeof *all);
    int failed = !ins || !ls || !all;
    /* A model whose batch dimension is fixed runs at that size only. */
    uint32_t first = 1;
    for (size_t k = 0; k < n_in; k++) {
        loom_model_io io = {.struct_size = sizeof io};
        if (loom_model_input_info(model, k, &io) == LOOM_OK && io.rank > (int32_t)axis &&
            io.dims[axis] > 0 && io.dims[axis] <= UINT32_MAX)
            first = max_batch = (uint32_t)io.dims[axis];
    }
    for (uint32_t b = first; !failed && b <= max_batch; b = next_size(b, max_batch)) {
        if (make_inputs(model, axis, b, ins, n_in) != 0) {
            snprintf(err, err_len, "%s: cannot make inputs of batch %u", m->path, b);
            failed = 1;
            break;
        }
        /* One run here first makes the specialisation, before the lanes race for it. */
        lane warm = {.model = model, .ins = (const loom_tensor *const *)ins, .n_in = n_in,
                     .n_out = n_out};
        lane_main(&warm);
        const char *why = warm.ok ? NULL : warm.err;
        size_t started = 0;
        for (unsigned k = 0; k < lanes && !why; k++, started++) {
            ls[k] = warm;
            ls[k].timed = TIMED_RUNS;
            if (pthread_create(&ls[k].th, NULL, lane_main, &ls[k]) != 0) {
                why = "cannot start a thread";
                break;
            }
        }
        for (size_t k = 0; k < started; k++) {
            pthread_join(ls[k].th, NULL);
            if (!ls[k].ok && !why)
                why = ls[k].err;
        }
        for (size_t k = 0; k < n_in; k++)
            loom_tensor_destroy(ins[k]);
        if (why) {
            snprintf(err, err_len, "%s at batch %u: %s", m->path, b, why);
            failed = 1;
            break;
        }
        size_t n = 0;
        for (unsigned k = 0; k < lanes; k++)
            for (int r = 0; r < TIMED_RUNS; r++)
                all[n++] = ls[k].ms[r];
        qsort(all, n, sizeof *all, cmp_double);
        double med = all[n / 2];
        double rate = med > 0 ? lanes * b * 1e3 / med : 0;
        /* Sizes whose run leaves room in the target; the first counts whatever it takes. */
        if ((b == first || med <= half_target_ms) && rate > best) {
            best = rate;
            *best_b = b;
        }
        if (med > half_target_ms || b == max_batch)
            break;
    }
    free(all);
    free(ls);
    free(ins);
    loom_model_destroy(model);
    return failed ? 0 : best;
}

/* The lanes a runtime made with THREADS per run has on the host: its CPU device's cores over
 * its threads, as the server counts them (0 when it has no CPU device). */
static unsigned host_lanes(loom_runtime *rt, unsigned *cores)
{
    for (size_t i = 0; i < loom_runtime_device_count(rt); i++) {
        char id[64];
        loom_device_info info = {.struct_size = sizeof info};
        if (loom_runtime_device(rt, i, id, sizeof id, &info) == LOOM_OK &&
            info.kind == LOOM_DEVICE_CPU && info.threads > 0) {
            *cores = info.compute_units;
            unsigned l = info.compute_units / info.threads;
            return l < 1 ? 1 : l > LANES_MAX ? LANES_MAX : l;
        }
    }
    return 0;
}

uint32_t serve_pick_cpu_threads(const serve_lanes_model *models, size_t n, char *why,
                                size_t why_len)
{
    char err[512] = "";
    double cap[2][64] = {{0}};
    uint32_t best_b[2][64] = {{0}};
    unsigned lanes[2] = {0, 0}, cores = 0;
    if (n > 64)
        n = 64; /* the first 64 models decide */
    for (int way = 0; way < 2 && !err[0]; way++) {
        loom_runtime_options ro = {.struct_size = sizeof ro, .cpu_threads = way ? 1 : 0};
        loom_runtime *rt = NULL;
        if (tool_runtime_create(&ro, &rt) != LOOM_OK) {
            snprintf(err, sizeof err, "cannot start a runtime: %s", loom_last_error());
            break;
        }
        lanes[way] = host_lanes(rt, &cores);
        if (lanes[way] == 0)
            snprintf(err, sizeof err, "no CPU device");
        else if (way == 1 && lanes[1] <= lanes[0])
            snprintf(err, sizeof err, "%u core%s: nothing to choose", cores, cores == 1 ? "" : "s");
        for (size_t k = 0; k < n && !err[0]; k++)
            cap[way][k] = ceiling(rt, &models[k], lanes[way], &best_b[way][k], err, sizeof err);
        loom_runtime_destroy(rt);
    }
    if (err[0]) {
        snprintf(why, why_len, "--cpu-threads auto: a thread per core (%s)", err);
        return 0;
    }
    double log_ratio = 0;
    for (size_t k = 0; k < n; k++) {
        if (!(cap[0][k] > 0 && cap[1][k] > 0)) {
            snprintf(why, why_len, "--cpu-threads auto: a thread per core (%s: no run time "
                     "measured)", models[k].path);
            return 0;
        }
        log_ratio += log(cap[1][k] / cap[0][k]);
    }
    uint32_t pick = log_ratio > 0 ? 1 : 0;
    int w = snprintf(why, why_len, "--cpu-threads auto: %s (",
                     pick ? "1, one-thread runs side by side" : "a thread per core, one run at a time");
    for (size_t k = 0; k < n && w > 0 && (size_t)w < why_len; k++)
        w += snprintf(why + w, why_len - (size_t)w,
                      "%s%s: %.0f samples/s at batch %u with %u one-thread run%s at once, %.0f at "
                      "batch %u with a thread per core",
                      k ? "; " : "", models[k].path, cap[1][k], best_b[1][k], lanes[1],
                      lanes[1] == 1 ? "" : "s", cap[0][k], best_b[0][k]);
    if (w > 0 && (size_t)w < why_len)
        snprintf(why + w, why_len - (size_t)w, ")");
    return pick;
}
