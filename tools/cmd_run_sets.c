/*
 * `loom run MODEL.onnx --inputs DIR [--inputs DIR]...`: several input sets in one process,
 * through one loom_model (include/loom/model.h), so that the shape-specialisation cache can be
 * seen working: each set's shapes either hit a cached specialisation or create one. Each DIR
 * holds NAME.npy (or NAME.pb, or input_NAME.npy) for every input of the model; outputs go to
 * OUT/<set index>/<output>.npy with -o OUT. docs/run.md describes it.
 */
#include "run_sets.h"

#include "tool_util.h"

#include <loom/loom.h>

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tool_vsay("loom run", fmt, ap);
    va_end(ap);
}

int run_sets_wanted(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--inputs"))
            return 1;
    return 0;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The tensor of input NAME in DIR; exit status on failure (0 on success). */
static int load_input(const char *dir, const char *name, loom_tensor **out)
{
    static const char *const forms[] = {"%s/%s.npy", "%s/%s.pb", "%s/input_%s.npy"};
    char p[2048];
    for (size_t f = 0; f < 3; f++) {
        snprintf(p, sizeof p, forms[f], dir, name);
        if (!file_exists(p))
            continue;
        loom_status st = f == 1 ? loom_tensor_load_pb(p, out, NULL, 0)
                                : loom_tensor_load_npy(p, out);
        if (st != LOOM_OK) {
            say("%s", loom_last_error());
            return tool_exit_status(st, TOOL_LOADING);
        }
        return 0;
    }
    say("input set '%s' has no file for input '%s' (%s.npy, %s.pb or input_%s.npy)", dir, name,
        name, name, name);
    return TOOL_EXIT_USAGE;
}

static int write_outputs(const char *out_dir, size_t set, loom_model *m, loom_tensor **outs,
                         size_t n)
{
    char d[2048];
    snprintf(d, sizeof d, "%s/%zu", out_dir, set);
    if ((mkdir(out_dir, 0777) != 0 && errno != EEXIST) || (mkdir(d, 0777) != 0 && errno != EEXIST)) {
        say("cannot create '%s': %s", d, strerror(errno));
        return tool_write_exit_status(errno);
    }
    for (size_t i = 0; i < n; i++) {
        loom_model_io io = {.struct_size = sizeof io};
        loom_model_output_info(m, i, &io);
        char p[2300];
        snprintf(p, sizeof p, "%s/%s.npy", d, io.name);
        if (loom_tensor_save_npy(p, outs[i]) != LOOM_OK) {
            int e = errno;
            say("%s", loom_last_error());
            return tool_write_exit_status(e);
        }
    }
    return 0;
}

int run_sets_main(int argc, char **argv)
{
    const char *model_path = NULL, *device = NULL, *out_dir = NULL;
    int json = 0, strict = 0;
    long repeat = 1;
    const char **dirs = calloc((size_t)argc + 1, sizeof *dirs);
    size_t n_dirs = 0;
    if (!dirs) {
        say("out of memory");
        return TOOL_EXIT_RUNTIME;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--strict")) {
            strict = 1;
        } else if (a[0] != '-') {
            if (model_path) {
                say("unexpected argument '%s' (one model at a time)", a);
                free(dirs);
                return TOOL_EXIT_USAGE;
            }
            model_path = a;
        } else if (!strcmp(a, "--inputs") || !strcmp(a, "--device") || !strcmp(a, "-o") ||
                   !strcmp(a, "--output") || !strcmp(a, "--repeat")) {
            const char *v = tool_option_value(argc, argv, &i);
            if (!v) {
                say("option %s needs a value", a);
                free(dirs);
                return TOOL_EXIT_USAGE;
            }
            if (!strcmp(a, "--inputs"))
                dirs[n_dirs++] = v;
            else if (!strcmp(a, "--device"))
                device = v;
            else if (!strcmp(a, "--repeat")) {
                char *end;
                repeat = strtol(v, &end, 10);
                if (*end || repeat < 1 || repeat > 1000000) {
                    say("--repeat wants a count from 1 to 1000000, got '%s'", v);
                    free(dirs);
                    return TOOL_EXIT_USAGE;
                }
            } else
                out_dir = v;
        } else {
            say("option '%s' does not go with --inputs (it takes MODEL, --inputs DIR..., "
                "--device, --strict, --repeat, -o, --json)", a);
            free(dirs);
            return TOOL_EXIT_USAGE;
        }
    }
    if (!model_path) {
        say("no model given: loom run MODEL.onnx --inputs DIR...");
        free(dirs);
        return TOOL_EXIT_USAGE;
    }
    loom_runtime *rt = NULL;
    loom_model *m = NULL;
    int rc = 0;
    json_t *jsets = json ? json_array() : NULL;
    loom_status st = tool_runtime_create(NULL, &rt);
    if (st != LOOM_OK) {
        say("%s", loom_last_error());
        rc = tool_runtime_exit_status(st);
    }
    loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = strict};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po};
    if (!rc && (st = loom_model_load_onnx(rt, model_path, &mo, &m)) != LOOM_OK) {
        say("%s", loom_last_error());
        rc = tool_exit_status(st, TOOL_LOADING);
    }
    size_t n_in = m ? loom_model_input_count(m) : 0, n_out = m ? loom_model_output_count(m) : 0;
    loom_tensor **in = calloc(n_in + 1, sizeof *in), **outs = calloc(n_out + 1, sizeof *outs);
    if (!rc && (!in || !outs)) {
        say("out of memory");
        rc = TOOL_EXIT_RUNTIME;
    }
    for (size_t s = 0; !rc && s < n_dirs; s++) {
        for (size_t i = 0; !rc && i < n_in; i++) {
            loom_model_io io = {.struct_size = sizeof io};
            loom_model_input_info(m, i, &io);
            rc = load_input(dirs[s], io.name, &in[i]);
        }
        loom_model_run_stats first = {.struct_size = sizeof first};
        double best = 0;
        for (long r = 0; !rc && r < repeat; r++) {
            loom_model_run_stats rs = {.struct_size = sizeof rs};
            st = loom_model_run(m, (const loom_tensor *const *)in, n_in, outs, n_out, &rs);
            if (st != LOOM_OK) {
                say("input set '%s': %s", dirs[s], loom_last_error());
                rc = tool_exit_status(st, TOOL_RUNNING);
                break;
            }
            if (r == 0)
                first = rs;
            if (r == 0 || rs.latency_ms < best)
                best = rs.latency_ms;
            if (r + 1 < repeat)
                for (size_t i = 0; i < n_out; i++) {
                    loom_tensor_destroy(outs[i]);
                    outs[i] = NULL;
                }
        }
        if (!rc && out_dir)
            rc = write_outputs(out_dir, s, m, outs, n_out);
        if (!rc) {
            char shapes[512] = "";
            size_t w = 0;
            for (size_t i = 0; i < n_in && w + 64 < sizeof shapes; i++) {
                int64_t d[LOOM_MAX_RANK];
                char buf[128];
                loom_tensor_dims(in[i], d);
                loom_model_io io = {.struct_size = sizeof io};
                loom_model_input_info(m, i, &io);
                size_t bw = 0;
                buf[0] = '\0';
                for (uint32_t k = 0; k < loom_tensor_rank(in[i]) && bw + 24 < sizeof buf; k++)
                    bw += (size_t)snprintf(buf + bw, sizeof buf - bw, "%s%lld", k ? "x" : "",
                                           (long long)d[k]);
                w += (size_t)snprintf(shapes + w, sizeof shapes - w, "%s%s %s", i ? ", " : "",
                                      io.name, loom_tensor_rank(in[i]) ? buf : "scalar");
            }
            if (json) {
                json_array_append_new(
                    jsets, json_pack("{s:s, s:s, s:b, s:f, s:f, s:f, s:I}", "inputs", dirs[s],
                                     "shapes", shapes, "hit", first.cache_hit, "create_ms",
                                     first.create_ms, "first_latency_ms", first.latency_ms,
                                     "best_latency_ms", best,
                                     "specialisation_bytes",
                                     (json_int_t)first.specialisation_bytes));
            } else {
                printf("set %zu (%s): %s: %s", s, dirs[s], shapes,
                       first.cache_hit ? "cached specialisation" : "new specialisation");
                if (!first.cache_hit)
                    printf(" (created in %.2f ms)", first.create_ms);
                printf(", %.3f ms", first.latency_ms);
                if (repeat > 1)
                    printf(", best of %ld %.3f ms", repeat, best);
                printf("\n");
            }
        }
        for (size_t i = 0; i < n_in; i++) {
            loom_tensor_destroy(in[i]);
            in[i] = NULL;
        }
        for (size_t i = 0; i < n_out; i++) {
            loom_tensor_destroy(outs[i]);
            outs[i] = NULL;
        }
    }
    if (!rc) {
        loom_model_stats ms = {.struct_size = sizeof ms};
        loom_model_stats_get(m, &ms);
        if (json) {
            json_t *o = json_pack("{s:s, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I}}", "model",
                                  model_path, "sets", jsets, "specialisations", "hits",
                                  (json_int_t)ms.hits, "misses", (json_int_t)ms.misses,
                                  "evictions", (json_int_t)ms.evictions, "live",
                                  (json_int_t)ms.live, "bytes", (json_int_t)ms.bytes,
                                  "weight_bytes", (json_int_t)ms.weight_bytes);
            jsets = NULL;
            char *txt = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
            if (txt)
                printf("%s\n", txt);
            free(txt);
            json_decref(o);
        } else {
            char wb[32], sb[32];
            printf("specialisations: %llu hit%s, %llu miss%s, %llu eviction%s, %zu live (%s); "
                   "weights %s, held once\n",
                   (unsigned long long)ms.hits, ms.hits == 1 ? "" : "s",
                   (unsigned long long)ms.misses, ms.misses == 1 ? "" : "es",
                   (unsigned long long)ms.evictions, ms.evictions == 1 ? "" : "s", ms.live,
                   tool_bytes_text((double)ms.bytes, sb, sizeof sb),
                   tool_bytes_text((double)ms.weight_bytes, wb, sizeof wb));
        }
    }
    json_decref(jsets);
    free(in);
    free(outs);
    loom_model_destroy(m);
    loom_runtime_destroy(rt);
    free(dirs);
    return rc;
}
