/*
 * The `loom` command: devices, and profile of a bundled model (the subcommands of DESIGN.md that
 * need the ONNX importer, the cost model and the plugin loader arrive with their issues).
 * Exit status: 0 on success, 1 on a runtime failure, 2 on bad usage or bad input, with one line
 * on stderr.
 */
#include <loom/loom.h>

#include <jansson.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "figures.h"
#include "gantt.h"
#include "models.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char *kind_name(loom_device_kind k)
{
    switch (k) {
    case LOOM_DEVICE_CPU: return "cpu";
    case LOOM_DEVICE_GPU: return "gpu";
    case LOOM_DEVICE_NPU: return "npu";
    default: return "other";
    }
}

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "loom %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'loom %s --help')\n", cmd);
    return EXIT_USAGE;
}

static int runtime_error(const char *cmd, const char *what)
{
    fprintf(stderr, "loom %s: %s: %s\n", cmd, what, loom_last_error());
    return EXIT_RUNTIME;
}

/* ---- loom devices ------------------------------------------------------------------------- */

static const char devices_help[] =
    "usage: loom devices [--json]\n"
    "\n"
    "List the devices Loom found on this machine: id (BACKEND:INDEX, as --device takes it),\n"
    "backend, kind (cpu|gpu|npu|other), cores or compute units, threads used, memory and NUMA\n"
    "node as hwloc sees them.\n"
    "\n"
    "  --json   one JSON object: {\"devices\": [{\"id\", \"backend\", \"kind\", \"name\",\n"
    "           \"compute_units\", \"threads\", \"memory_bytes\", \"numa_node\"}, ...]}\n"
    "\n"
    "Environment: LOOM_CPU_THREADS sets the CPU backend's thread count (default: all cores).\n";

static int cmd_devices(int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(devices_help, stdout);
            return 0;
        } else
            return usage_error("devices", "unknown argument '%s'", argv[i]);
    }
    loom_runtime *rt;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK)
        return runtime_error("devices", "cannot start");
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++)
        fprintf(stderr, "loom: %s\n", loom_runtime_message(rt, i));
    size_t n = loom_runtime_device_count(rt);
    json_t *list = json ? json_array() : NULL;
    if (!json)
        printf("%-10s %-8s %-6s %6s %7s %12s %5s  %s\n", "ID", "BACKEND", "KIND", "UNITS",
               "THREADS", "MEMORY", "NUMA", "NAME");
    for (size_t i = 0; i < n; i++) {
        char id[64];
        loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
        loom_runtime_device(rt, i, id, sizeof id, &info);
        char backend[64];
        snprintf(backend, sizeof backend, "%s", id);
        char *colon = strchr(backend, ':');
        if (colon)
            *colon = '\0';
        if (json) {
            json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "id", id, "backend",
                                  backend, "kind", kind_name(info.kind), "name", info.name,
                                  "compute_units", (json_int_t)info.compute_units, "threads",
                                  (json_int_t)info.threads, "memory_bytes",
                                  (json_int_t)info.memory_bytes, "numa_node",
                                  (json_int_t)info.numa_node);
            json_array_append_new(list, d);
        } else {
            char numa[16];
            if (info.numa_node >= 0)
                snprintf(numa, sizeof numa, "%d", info.numa_node);
            else
                snprintf(numa, sizeof numa, "-");
            printf("%-10s %-8s %-6s %6u %7u %9.1f GiB %5s  %s\n", id, backend,
                   kind_name(info.kind), info.compute_units, info.threads,
                   (double)info.memory_bytes / (1024.0 * 1024 * 1024), numa, info.name);
        }
    }
    if (json) {
        json_t *root = json_pack("{s:o}", "devices", list);
        char *s = json_dumps(root, JSON_INDENT(2));
        puts(s);
        free(s);
        json_decref(root);
    }
    loom_runtime_destroy(rt);
    return 0;
}

/* ---- loom profile ------------------------------------------------------------------------- */

static const char profile_help[] =
    "usage: loom profile [MODEL.onnx | --model mlp|attention] [--device ID] [--repeat N]\n"
    "                    [--warmup N] [--precision P] [--strict] [--json] [--trace OUT.json]\n"
    "                    [--gantt OUT.svg]\n"
    "\n"
    "Run an ONNX model (symbolic dims set to 1, inputs seeded random) or a bundled model on\n"
    "every device found (or on --device ID only), N times after\n"
    "warm-up runs, and print where each node ran and what it cost: a per-node table with\n"
    "the median time, then the end-to-end latency (median, p95, p99, min) and the peak of\n"
    "intermediate memory against what the graph would need without reuse.\n"
    "\n"
    "  --model NAME      bundled model: mlp (64x784 -> 512 -> 256 -> 10, default) or attention\n"
    "                    (one transformer attention block, seq 128, d_model 256, 4 heads)\n"
    "  --device ID       only this device (e.g. cpu:0, or cpu for the backend's first); nodes\n"
    "                    it cannot run go to a device that can, and the table says where\n"
    "  --strict          fail when a device cannot run a node instead of moving the node\n"
    "  --precision P     lowest precision float32 nodes may run in on devices that offer it:\n"
    "                    f32 (default, exact), fp16 or int8 (NPUs such as npu-sim need it)\n"
    "  --repeat N        measured runs (default 20)\n"
    "  --warmup N        runs before measuring (default 3)\n"
    "  --json            print the figures as one JSON object instead of tables\n"
    "  --trace OUT.json  write the last run's timeline as a Chrome trace (Perfetto opens it)\n"
    "  --gantt OUT.svg   write the last run's timeline as an SVG Gantt chart (lane per device)\n"
    ;

typedef struct profile_opts {
    const char *model, *device, *trace, *gantt;
    const char *onnx; /* a model file instead of a bundled model */
    int repeat, warmup, json, strict;
    uint32_t precision; /* loom_precision accepted for float32 nodes */
} profile_opts;

static int parse_count(const char *cmd, const char *flag, const char *s, int min, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || v < min || v > 1000000) {
        fprintf(stderr, "loom %s: %s wants a whole number from %d to 1000000, got '%s'\n", cmd,
                flag, min, s ? s : "");
        return 0;
    }
    *out = (int)v;
    return 1;
}

static loom_graph *build_model(const profile_opts *o)
{
    const char *name = o->model;
    if (o->onnx) {
        loom_graph *g = NULL;
        loom_onnx_options oo = {.struct_size = sizeof oo, .default_dim = 1};
        if (loom_onnx_load(o->onnx, &oo, &g) != LOOM_OK)
            return NULL;
        return g;
    }
    if (!strcmp(name, "mlp"))
        return example_mlp();
    if (!strcmp(name, "attention"))
        return example_attention();
    return NULL;
}

/* Fill every input with seeded random data in [-1, 1). */
static void fill_inputs(loom_tensor **in, size_t n)
{
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        if (loom_tensor_dtype(in[i]) != LOOM_DTYPE_F32)
            continue;
        float *d = loom_tensor_data(in[i]);
        size_t count = loom_tensor_nbytes(in[i]) / sizeof(float);
        for (size_t k = 0; k < count; k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            d[k] = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
        }
    }
}

static int write_trace(const char *path, const loom_plan *plan, const loom_run_stats *st,
                       const char *model)
{
    json_t *events = json_array();
    json_array_append_new(events, json_pack("{s:s, s:s, s:i, s:{s:s}}", "name", "process_name",
                                            "ph", "M", "pid", 1, "args", "name", model));
    /* One track per device, named by its id. */
    const char *seen[64];
    int n_seen = 0;
    for (size_t i = 0; i < st->timeline_count; i++) {
        const loom_node_timing *t = &st->timeline[i];
        const char *dev = loom_plan_node_device(plan, t->node);
        int known = 0;
        for (int k = 0; k < n_seen; k++)
            known |= !strcmp(seen[k], dev);
        if (!known && n_seen < 64) {
            seen[n_seen++] = dev;
            json_array_append_new(events, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name",
                                                    "thread_name", "ph", "M", "pid", 1, "tid",
                                                    (int)t->device, "args", "name", dev));
        }
        json_array_append_new(
            events, json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:{s:s}}", "name",
                              loom_plan_node_name(plan, t->node), "cat",
                              loom_plan_node_op(plan, t->node), "ph", "X", "ts",
                              (double)t->start_ns / 1e3, "dur",
                              (double)(t->end_ns - t->start_ns) / 1e3, "pid", 1, "tid",
                              (int)t->device, "args", "op", loom_plan_node_op(plan, t->node)));
    }
    json_t *root = json_pack("{s:o, s:s}", "traceEvents", events, "displayTimeUnit", "ms");
    int rc = json_dump_file(root, path, JSON_COMPACT);
    json_decref(root);
    if (rc != 0) {
        fprintf(stderr, "loom profile: cannot write trace '%s': %s\n", path, strerror(errno));
        return 0;
    }
    return 1;
}

/* Profile MODEL on DEVICE; appends a JSON record to OUT when JSON output is on. */
static int profile_device(const profile_opts *o, loom_runtime *rt, const char *device, json_t *out,
                          int write_trace_here)
{
    loom_graph *g = build_model(o);
    if (!g || loom_graph_check(g) != LOOM_OK) {
        loom_graph_destroy(g);
        if (o->onnx) {
            fprintf(stderr, "loom profile: %s\n", loom_last_error());
            return EXIT_USAGE;
        }
        return runtime_error("profile", "building the bundled model failed");
    }
    /* Not strict: what DEVICE cannot run goes to a device that can, and the table says where. */
    loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = o->strict,
                            .precision = o->precision};
    loom_plan *plan;
    if (loom_plan_create(rt, g, &po, &plan) != LOOM_OK) {
        loom_graph_destroy(g);
        return runtime_error("profile", device);
    }
    size_t n_in = loom_graph_input_count(g), n_out = loom_graph_output_count(g);
    loom_tensor **in = calloc(n_in + 1, sizeof *in), **outs = calloc(n_out + 1, sizeof *outs);
    size_t nn = loom_plan_node_count(plan);
    int runs = o->repeat;
    double *lat = calloc((size_t)runs, sizeof *lat);
    double *node_ms = calloc(nn * (size_t)runs + 1, sizeof *node_ms);
    loom_node_timing *tl = calloc(nn + 1, sizeof *tl);
    int rc = 0;
    if (!in || !outs || !lat || !node_ms || !tl) {
        fprintf(stderr, "loom profile: out of memory\n");
        rc = EXIT_RUNTIME;
        goto done;
    }
    for (size_t i = 0; i < n_in; i++) {
        loom_dtype dt;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK];
        loom_value_info(g, loom_graph_input(g, i), &dt, &rank, dims);
        if (loom_tensor_create(dt, rank, dims, &in[i]) != LOOM_OK) {
            rc = runtime_error("profile", "input");
            goto done;
        }
    }
    fill_inputs(in, n_in);
    if (loom_plan_make_outputs(plan, outs, n_out) != LOOM_OK) {
        rc = runtime_error("profile", "outputs");
        goto done;
    }
    loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = nn};
    for (int r = 0; r < o->warmup + runs; r++) {
        if (loom_plan_run(plan, (const loom_tensor *const *)in, n_in, outs, n_out, &st) !=
            LOOM_OK) {
            rc = runtime_error("profile", "run failed");
            goto done;
        }
        if (r < o->warmup)
            continue;
        lat[r - o->warmup] = st.latency_ms;
        for (size_t i = 0; i < st.timeline_count; i++)
            node_ms[tl[i].node * (size_t)runs + (size_t)(r - o->warmup)] =
                (double)(tl[i].end_ns - tl[i].start_ns) / 1e6;
    }
    qsort(lat, (size_t)runs, sizeof *lat, loom_cmp_double);
    double total = 0;
    for (size_t i = 0; i < nn; i++) {
        qsort(&node_ms[i * (size_t)runs], (size_t)runs, sizeof(double), loom_cmp_double);
        total += loom_percentile(&node_ms[i * (size_t)runs], runs, 0.5);
    }
    double peak = (double)loom_plan_peak_bytes(plan), unshared = (double)loom_plan_unshared_bytes(plan);
    if (out) {
        json_t *nodes = json_array();
        for (size_t i = 0; i < nn; i++)
            json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:f}", "node",
                                                   loom_plan_node_name(plan, i), "op",
                                                   loom_plan_node_op(plan, i), "device",
                                                   loom_plan_node_device(plan, i), "measured_ms",
                                                   loom_percentile(&node_ms[i * (size_t)runs], runs,
                                                              0.5)));
        json_array_append_new(
            out, json_pack("{s:s, s:s, s:i, s:{s:f, s:f, s:f, s:f}, s:I, s:I, s:o}", "model",
                           o->model, "device", device, "runs", runs, "latency_ms", "median",
                           loom_percentile(lat, runs, 0.5), "p95",
                           loom_percentile(lat, runs, 0.95), "p99",
                           loom_percentile(lat, runs, 0.99), "min", lat[0], "peak_memory_bytes",
                           (json_int_t)peak, "unshared_memory_bytes", (json_int_t)unshared,
                           "nodes", nodes));
    } else {
        printf("\n== %s on %s: %zu nodes, %d runs after %d warm-up ==\n", o->model, device, nn,
               runs, o->warmup);
        printf("%-28s %-20s %-8s %11s %7s\n", "NODE", "OP", "DEVICE", "MEDIAN ms", "SHARE");
        for (size_t i = 0; i < nn; i++) {
            double m = loom_percentile(&node_ms[i * (size_t)runs], runs, 0.5);
            printf("%-28.28s %-20.20s %-8s %11.4f %6.1f%%\n", loom_plan_node_name(plan, i),
                   loom_plan_node_op(plan, i), loom_plan_node_device(plan, i), m,
                   total > 0 ? 100.0 * m / total : 0.0);
        }
        printf("latency ms: median %.3f  p95 %.3f  p99 %.3f  min %.3f\n",
               loom_percentile(lat, runs, 0.5), loom_percentile(lat, runs, 0.95),
               loom_percentile(lat, runs, 0.99), lat[0]);
        printf("intermediate memory: peak %.2f MiB with reuse, %.2f MiB without (%.0f%%)\n",
               peak / 1048576.0, unshared / 1048576.0, unshared > 0 ? 100.0 * peak / unshared : 0);
    }
    if (write_trace_here && o->trace) {
        if (!write_trace(o->trace, plan, &st, o->model))
            rc = EXIT_USAGE;
        else if (!o->json)
            printf("trace written to %s (open it in https://ui.perfetto.dev or chrome://tracing)\n",
                   o->trace);
    }
    if (write_trace_here && o->gantt) {
        if (!loom_gantt_write(o->gantt, plan, &st, o->model)) {
            fprintf(stderr, "loom profile: cannot write Gantt chart '%s': %s\n", o->gantt,
                    strerror(errno));
            rc = EXIT_USAGE;
        } else if (!o->json) {
            printf("Gantt chart written to %s (open it in a web browser)\n", o->gantt);
        }
    }
done:
    for (size_t i = 0; in && i < n_in; i++)
        loom_tensor_destroy(in[i]);
    for (size_t i = 0; outs && i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    free(in);
    free(outs);
    free(lat);
    free(node_ms);
    free(tl);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    return rc;
}

static int cmd_profile(int argc, char **argv)
{
    profile_opts o = {.model = "mlp", .repeat = 20, .warmup = 3};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(profile_help, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--strict")) {
            o.strict = 1;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--device") || !strcmp(a, "--trace") ||
                   !strcmp(a, "--gantt") || !strcmp(a, "--repeat") || !strcmp(a, "--warmup") ||
                   !strcmp(a, "--precision")) {
            if (!v)
                return usage_error("profile", "%s needs a value", a);
            i++;
            if (!strcmp(a, "--model"))
                o.model = v;
            else if (!strcmp(a, "--device"))
                o.device = v;
            else if (!strcmp(a, "--trace"))
                o.trace = v;
            else if (!strcmp(a, "--gantt"))
                o.gantt = v;
            else if (!strcmp(a, "--precision")) {
                if (!strcmp(v, "f32"))
                    o.precision = LOOM_PRECISION_F32;
                else if (!strcmp(v, "fp16"))
                    o.precision = LOOM_PRECISION_F16;
                else if (!strcmp(v, "int8"))
                    o.precision = LOOM_PRECISION_INT8;
                else
                    return usage_error("profile", "unknown precision '%s' (f32, fp16, int8)", v);
            }
            else if (!strcmp(a, "--repeat") && !parse_count("profile", a, v, 1, &o.repeat))
                return EXIT_USAGE;
            else if (!strcmp(a, "--warmup") && !parse_count("profile", a, v, 0, &o.warmup))
                return EXIT_USAGE;
        } else if (a[0] == '-') {
            return usage_error("profile", "unknown option '%s'", a);
        } else if (!o.onnx) {
            o.onnx = a;
            o.model = a;
        } else {
            return usage_error("profile", "one model at a time ('%s' is extra)", a);
        }
    }
    if (!o.onnx && strcmp(o.model, "mlp") && strcmp(o.model, "attention"))
        return usage_error("profile", "unknown bundled model '%s' (mlp or attention)", o.model);
    loom_runtime *rt;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK)
        return runtime_error("profile", "cannot start");
    json_t *records = o.json ? json_array() : NULL;
    int rc = 0;
    if (o.device) {
        rc = profile_device(&o, rt, o.device, records, 1);
        if (rc == EXIT_RUNTIME && strstr(loom_last_error(), "unknown device"))
            rc = EXIT_USAGE;
    } else {
        size_t n = loom_runtime_device_count(rt);
        for (size_t i = 0; i < n && !rc; i++) {
            char id[64];
            loom_runtime_device(rt, i, id, sizeof id, NULL);
            rc = profile_device(&o, rt, id, records, i == 0);
        }
    }
    if (records) {
        if (!rc) {
            json_t *root = json_pack("{s:o}", "profiles", records);
            char *s = json_dumps(root, JSON_INDENT(2));
            puts(s);
            free(s);
            json_decref(root);
        } else {
            json_decref(records);
        }
    }
    loom_runtime_destroy(rt);
    return rc;
}

/* ---- main --------------------------------------------------------------------------------- */

static const char main_help[] =
    "usage: loom COMMAND [ARGS]\n"
    "\n"
    "Loom places every node of an operator graph on the device where the graph finishes\n"
    "soonest, runs it and measures it.\n"
    "\n"
    "commands:\n"
    "  devices    list the devices found on this machine\n"
    "  run        run an ONNX model on given or random inputs, write its outputs as .npy\n"
    "  profile    run a bundled model on every device and show where the time goes\n"
    "  backend-test  check a backend (plugin file or name) against the CPU reference\n"
    "  help       this text; 'loom COMMAND --help' describes a command\n"
    "\n"
    "  --version  print the version\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(main_help, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("loom %s\n", loom_version());
        return 0;
    }
    if (!strcmp(cmd, "devices"))
        return cmd_devices(argc - 2, argv + 2);
    if (!strcmp(cmd, "profile"))
        return cmd_profile(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return loom_cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "backend-test"))
        return loom_cmd_backend_test(argc - 2, argv + 2);
    fprintf(stderr, "loom: unknown command '%s' (see 'loom help')\n", cmd);
    return EXIT_USAGE;
}
