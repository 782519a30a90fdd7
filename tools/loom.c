/*
 * The `loom` command: main's dispatch and `loom devices`; every other subcommand lives in its own
 * file (commands.h).
 * Exit status: 0 on success, 1 on a runtime failure, 2 on bad usage or bad input, with one line
 * on stderr.
 */
#include <loom/loom.h>

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "tool_util.h"
#include "scheduler/cost/cost.h"

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

/* A runtime message on stderr (loom_runtime_messages_drain's callback). */
static void print_runtime_message(void *user, const char *message)
{
    (void)user;
    fprintf(stderr, "loom: %s\n", message);
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
    "           \"compute_units\", \"threads\", \"memory_bytes\", \"numa_node\"}, ...],\n"
    "           \"backends\": [{\"name\", \"abi\", \"options\": [{\"key\", \"help\",\n"
    "           \"default\", \"value\"}, ...]}, ...]}  (value: null when not set)\n"
    "%s"
    "\n"
    "Environment: LOOM_CPU_THREADS sets the CPU backend's thread count (default: all cores;\n"
    "--cpu-threads N wins over it).\n";

/* Each backend's declared options (backend ABI 1.0) and the value given: into BACKENDS (a
 * JSON array) when non-NULL, else as text after the device table. */
static void list_backend_options(const loom_runtime *rt, json_t *backends)
{
    size_t nb = loom_runtime_backend_count(rt);
    int header = 0;
    for (size_t b = 0; b < nb; b++) {
        const char *name = NULL;
        uint32_t abi = 0;
        size_t n_opt = 0;
        if (loom_runtime_backend_info(rt, b, &name, &abi, &n_opt) != LOOM_OK)
            continue;
        json_t *opts = backends ? json_array() : NULL;
        for (size_t j = 0; j < n_opt; j++) {
            const loom_backend_option *o = NULL;
            const char *value = NULL;
            if (loom_runtime_backend_option(rt, b, j, &o, &value) != LOOM_OK || !o->key)
                continue;
            if (opts) {
                json_t *e = json_pack("{s:s, s:s, s:s}", "key", o->key, "help",
                                      o->help ? o->help : "", "default",
                                      o->default_value ? o->default_value : "");
                json_object_set_new(e, "value", value ? json_string(value) : json_null());
                json_array_append_new(opts, e);
                continue;
            }
            if (!header++)
                printf("\nbackend options (--backend-option BACKEND:KEY=VALUE):\n");
            char def[160];
            snprintf(def, sizeof def, "%s", o->default_value && *o->default_value
                                                  ? o->default_value : "none");
            printf("  %s:%s = %s%s  (default %s) %s\n", name, o->key, value ? value : def,
                   value ? " [set]" : "", def, o->help ? o->help : "");
        }
        if (backends) {
            char ver[32];
            snprintf(ver, sizeof ver, "%u.%u", abi >> 16, abi & 0xffffu);
            json_array_append_new(backends, json_pack("{s:s, s:s, s:o}", "name", name, "abi", ver,
                                                      "options", opts));
        }
    }
}

static int cmd_devices(int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf(devices_help, tool_backend_option_help);
            return 0;
        } else
            return usage_error("devices", "unknown argument '%s'", argv[i]);
    }
    loom_runtime *rt;
    loom_status cst = tool_runtime_create(NULL, &rt);
    if (cst != LOOM_OK) {
        runtime_error("devices", "cannot start");
        return tool_runtime_exit_status(cst);
    }
    loom_runtime_messages_drain(rt, print_runtime_message, NULL);
    size_t n = loom_runtime_device_count(rt);
    json_t *list = json ? json_array() : NULL;
    /* The cost model's view of each device: calibrated figures, or the backend's facts. */
    cost_model *model = NULL;
    if (cost_model_open(rt, NULL, &model) != LOOM_OK)
        model = NULL;
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
            json_object_set_new(d, "host_visible", json_boolean(info.host_visible));
            json_object_set_new(d, "shares_host_cpu", json_boolean(info.shares_host_cpu));
            json_object_set_new(d, "in_order", json_boolean(info.in_order));
            json_object_set_new(d, "fp16", json_boolean(info.has_fp16));
            json_object_set_new(d, "fp64", json_boolean(info.has_fp64));
            json_object_set_new(d, "clock_mhz", json_integer(info.clock_mhz));
            json_object_set_new(d, "max_alloc_bytes", json_integer((json_int_t)info.max_alloc_bytes));
            json_object_set_new(d, "uuid", json_string(info.uuid));
            json_object_set_new(d, "pci_bus", json_string(info.pci_bus));
            json_object_set_new(d, "driver", json_string(info.driver));
            const cost_profile *pf = model ? cost_profile_of(model, (uint32_t)i) : NULL;
            if (pf)
                json_object_set_new(
                    d, "profile",
                    json_pack("{s:b, s:f, s:f, s:f, s:f}", "calibrated", pf->calibrated,
                              "gflops_f32", pf->flops[0] * 1e-9, "gflops_f16",
                              pf->flops[1] * 1e-9, "bandwidth_gbs", pf->mem_bandwidth * 1e-9,
                              "launch_us", pf->launch_s * 1e6));
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
            char prof[512];
            cost_profile_summary(model ? cost_profile_of(model, (uint32_t)i) : NULL, prof,
                               sizeof prof);
            printf("%-10s profile: %s\n", "", prof);
        }
    }
    cost_model_close(model);
    json_t *backends = json ? json_array() : NULL;
    list_backend_options(rt, backends);
    if (json) {
        json_t *root = json_pack("{s:o, s:o}", "devices", list, "backends", backends);
        char *s = json_dumps(root, JSON_INDENT(2));
        puts(s);
        free(s);
        json_decref(root);
    }
    loom_runtime_destroy(rt);
    return 0;
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
    "  profile    place a model across the devices, run it, show where each node ran and why\n"
    "  calibrate  measure every device (GFLOP/s, bandwidth, launch, links) for the cost model\n"
    "  sim        place an abstract task graph (JSON) on hypothetical devices\n"
    "  backend-test  check a backend (plugin file or name) against the CPU reference\n"
    "  serve      serve ONNX models over HTTP (KServe v2 protocol, batching, result cache)\n"
    "  loadgen    load a server (or a model in-process) and report QPS and latency\n"
    "  audit      verify or query the audit trail of 'loom serve --audit'\n"
    "  ops        list the operators Loom knows (domain, opsets, dtypes); --markdown\n"
    "  help       this text; 'loom COMMAND --help' describes a command\n"
    "\n"
    "  --version  print the version\n"
    "\n"
    "Commands that start a runtime (devices, run, profile, calibrate, backend-test, serve,\n"
    "loadgen) take --backend-option BACKEND:KEY=VALUE (repeatable) to set a backend's option.\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.\n";

/* OpenBLAS's pthread build starts one thread per core from its library constructor; each
 * reserves a 128 MiB buffer at start and retries forever when it cannot (under `ulimit -v`), and
 * OpenBLAS's exit handler joins them: the process spins and never ends (or, lower still, the
 * constructor cannot create the thread and exits before main). Loom runs OpenBLAS
 * single-threaded inside its own pool and never uses those threads, and only the environment at
 * load time keeps OpenBLAS from starting them. So before any library's constructor runs
 * (.preinit_array), the command executes itself again, once, with OPENBLAS_NUM_THREADS=1 (a
 * setenv here would be undone by libc's start-up); when that cannot be done it carries on. */
static char openblas_one_thread[] = "OPENBLAS_NUM_THREADS=1";

static void openblas_without_threads(int argc, char **argv, char **envp)
{
    (void)argc;
    size_t n = 0;
    for (; envp && envp[n]; n++)
        if (!strcmp(envp[n], openblas_one_thread))
            return;
    char **env = malloc((n + 2) * sizeof *env);
    if (!env)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], "OPENBLAS_NUM_THREADS=", 21) != 0)
            env[k++] = envp[i];
    env[k++] = openblas_one_thread;
    env[k] = NULL;
    execve("/proc/self/exe", argv, env);
    free(env);
}
__attribute__((section(".preinit_array"), used)) static void (*const loom_preinit)(
    int, char **, char **) = openblas_without_threads;

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    /* --backend-option and --cpu-threads, for every command that starts a runtime (tool_util.h). */
    static const char *const with_runtime[] = {"devices", "run", "profile", "calibrate",
                                               "backend-test", "serve", "loadgen"};
    for (size_t k = 0; k < sizeof with_runtime / sizeof *with_runtime; k++)
        if (!strcmp(cmd, with_runtime[k]) && !tool_backend_options_take(cmd, &argc, argv))
            return EXIT_USAGE;
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
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "loadgen"))
        return cmd_loadgen(argc - 2, argv + 2);
    if (!strcmp(cmd, "audit"))
        return cmd_audit(argc - 2, argv + 2);
    if (!strcmp(cmd, "profile"))
        return cmd_profile(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return loom_cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "calibrate"))
        return cmd_calibrate(argc - 2, argv + 2);
    if (!strcmp(cmd, "sim"))
        return cmd_sim(argc - 2, argv + 2);
    if (!strcmp(cmd, "backend-test"))
        return loom_cmd_backend_test(argc - 2, argv + 2);
    if (!strcmp(cmd, "ops"))
        return cmd_ops(argc - 2, argv + 2);
    fprintf(stderr, "loom: unknown command '%s' (see 'loom help')\n", cmd);
    return EXIT_USAGE;
}
