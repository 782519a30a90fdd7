/*
 * `loom calibrate`: measure each device (sustained GEMM throughput in f32 and, where the device
 * computes in it, f16; streaming bandwidth; launch latency; host links of devices whose memory
 * the host cannot address) and cache the profiles the cost model places graphs with. A device
 * with a cached profile is reused unless --force. A progress bar goes to stderr when it is a
 * terminal; the figures go to stdout, as text or one JSON object.
 */
#include "tool_util.h"
#include "commands.h"

#include <loom/loom.h>

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/cost/cost.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char calibrate_help[] =
    "usage: loom calibrate [--quick] [--device ID] [--force] [--json] [--cache DIR]\n"
    "\n"
    "Measure every device (or one) and cache its profile for the cost model: sustained\n"
    "GEMM GFLOP/s in f32 (and f16 where the device computes in fp16), streaming memory\n"
    "bandwidth, launch latency, and for devices whose memory the host cannot address the\n"
    "latency and bandwidth of copies to and from the host. Each figure is the median of\n"
    "several runs with spikes dropped.\n"
    "\n"
    "  --quick       fewer sizes and runs (GEMM 128 and 256): a few seconds per device\n"
    "  --device ID   only this device (cpu:0, or cpu for the backend's first)\n"
    "  --force       measure again devices that already have a cached profile\n"
    "  --json        print one JSON object: {\"cache_dir\", \"profiles_file\", \"devices\":\n"
    "                [{\"id\", \"name\", \"key\", \"status\" (measured|cached|facts),\n"
    "                \"gflops_f32\", \"gflops_f16\", \"bandwidth_gbs\", \"launch_us\",\n"
    "                \"host_visible\", \"to_host\", \"from_host\" ({\"latency_us\",\n"
    "                \"bandwidth_gbs\"} or null), \"shares_host_cpu\"}]}\n"
    "  --cache DIR   cache folder (default $XDG_CACHE_HOME/loom, else ~/.cache/loom)\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 bad usage.\n";

/* A terminal progress bar on stderr. */
typedef struct bar {
    int drawn;
} bar;

static void draw_bar(void *user, const char *label, double fraction)
{
    bar *b = user;
    int width = 30, fill = (int)(fraction * width + 0.5);
    if (fill > width)
        fill = width;
    char cells[64];
    for (int i = 0; i < width; i++)
        cells[i] = i < fill ? '#' : '.';
    cells[width] = '\0';
    fprintf(stderr, "\r[%s] %3d%% %-40.40s", cells, (int)(fraction * 100 + 0.5), label);
    fflush(stderr);
    b->drawn = 1;
}

static void clear_bar(bar *b)
{
    if (b->drawn)
        fprintf(stderr, "\r%80s\r", "");
    b->drawn = 0;
}

/* Index of device SPEC ("cpu:0", or "cpu" for the backend's first) or -1. */
static long find_device(const loom_runtime *rt, const char *spec)
{
    size_t n = loom_runtime_device_count(rt), len = strlen(spec);
    for (size_t i = 0; i < n; i++) {
        char id[64];
        loom_device_info info = {.struct_size = sizeof info};
        if (loom_runtime_device(rt, i, id, sizeof id, &info) != LOOM_OK)
            continue;
        if (strcmp(id, spec) == 0 || (strncmp(id, spec, len) == 0 && id[len] == ':' &&
                                      !strchr(spec, ':')))
            return (long)i;
    }
    return -1;
}

static json_t *gflops_json(double x)
{
    return x > 0 && isfinite(x) ? json_real(x * 1e-9) : json_null();
}

static json_t *link_json(double latency_s, double bandwidth)
{
    json_t *o = json_object();
    json_object_set_new(o, "latency_us", json_real(latency_s * 1e6));
    json_object_set_new(o, "bandwidth_gbs", gflops_json(bandwidth));
    return o;
}

/* Print one device's figures as text. */
static void print_device(const char *id, const char *name, const cost_profile *p,
                         const char *status)
{
    printf("%s  %s  [%s]\n", id, name, status);
    if (p->flops[0] > 0)
        printf("  GEMM f32    %10.2f GFLOP/s\n", p->flops[0] * 1e-9);
    if (p->flops[1] > 0)
        printf("  GEMM f16    %10.2f GFLOP/s\n", p->flops[1] * 1e-9);
    else
        printf("  GEMM f16             -  (no fp16 arithmetic)\n");
    printf("  bandwidth   %10.2f GB/s\n", p->mem_bandwidth * 1e-9);
    printf("  launch      %10.2f us\n", p->launch_s * 1e6);
    if (p->host_visible)
        printf("  host link   host-visible memory: no copies\n");
    else
        printf("  host link   to host %.2f us + %.2f GB/s, from host %.2f us + %.2f GB/s\n",
               p->to_host_latency_s * 1e6, p->to_host_bandwidth * 1e-9,
               p->from_host_latency_s * 1e6, p->from_host_bandwidth * 1e-9);
    if (p->shares_host_cpu)
        printf("  note        computes on the host's CPU cores (competes with the cpu backend)\n");
}

/* A runtime message on stderr (loom_runtime_messages_drain's callback): drained after each
 * device, so a long calibration never overruns the bounded ring unseen. */
static void print_note(void *user, const char *message)
{
    (void)user;
    fprintf(stderr, "loom calibrate: note: %s\n", message);
}

int cmd_calibrate(int argc, char **argv)
{
    int quick = 0, force = 0, json = 0;
    const char *device = NULL, *cache = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(calibrate_help, stdout);
            fputs(tool_backend_option_help, stdout);
            return 0;
        } else if (!strcmp(a, "--quick")) {
            quick = 1;
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--device") || !strcmp(a, "--cache")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loom calibrate: %s needs a value (see loom calibrate --help)\n",
                        a);
                return EXIT_USAGE;
            }
            *(!strcmp(a, "--device") ? &device : &cache) = argv[++i];
        } else {
            fprintf(stderr, "loom calibrate: unknown option '%s' (see loom calibrate --help)\n",
                    a);
            return EXIT_USAGE;
        }
    }

    loom_runtime *rt = NULL;
    loom_status rst = tool_runtime_create(NULL, &rt);
    if (rst != LOOM_OK) {
        fprintf(stderr, "loom calibrate: %s\n", loom_last_error());
        return tool_runtime_exit_status(rst);
    }
    int status = 0;
    cost_model *m = NULL;
    size_t n = loom_runtime_device_count(rt);
    long only = -1;
    if (device && (only = find_device(rt, device)) < 0) {
        fprintf(stderr, "loom calibrate: unknown device '%s' (loom devices lists them)\n",
                device);
        loom_runtime_destroy(rt);
        return EXIT_USAGE;
    }
    if (cost_model_open(rt, cache, &m) != LOOM_OK) {
        fprintf(stderr, "loom calibrate: %s\n", loom_last_error());
        loom_runtime_destroy(rt);
        return EXIT_RUNTIME;
    }
    /* Per device: what its profile is now ("measured", "cached", "facts"); NULL: not asked. */
    const char **state = calloc(n ? n : 1, sizeof *state);
    if (!state) {
        fprintf(stderr, "loom calibrate: out of memory\n");
        cost_model_close(m);
        loom_runtime_destroy(rt);
        return EXIT_RUNTIME;
    }
    bar b = {0};
    int tty = isatty(STDERR_FILENO);
    int measured = 0;
    for (size_t i = 0; i < n; i++) {
        if (only >= 0 && (long)i != only)
            continue;
        const cost_profile *p = cost_profile_of(m, (uint32_t)i);
        if (p->calibrated && !force) {
            state[i] = "cached";
            continue;
        }
        loom_runtime_messages_drain(rt, print_note, NULL); /* what came before, e.g. loading */
        loom_status st = cost_calibrate_device(m, (uint32_t)i, quick, tty ? draw_bar : NULL, &b);
        clear_bar(&b);
        loom_runtime_messages_drain(rt, print_note, NULL);
        if (st != LOOM_OK) {
            fprintf(stderr, "loom calibrate: %s\n", loom_last_error());
            status = EXIT_RUNTIME;
            state[i] = "facts";
            continue;
        }
        state[i] = quick ? "measured, quick" : "measured";
        measured++;
    }
    const char *dir = cost_cache_dir(m);
    if (measured && cost_model_save(m) != LOOM_OK) {
        fprintf(stderr, "loom calibrate: %s\n", loom_last_error());
        status = EXIT_RUNTIME;
    }
    loom_runtime_messages_drain(rt, print_note, NULL);

    json_t *root = json ? json_object() : NULL, *devs = json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        if (!state[i])
            continue;
        char id[64];
        loom_device_info info = {.struct_size = sizeof info};
        loom_runtime_device(rt, i, id, sizeof id, &info);
        const cost_profile *p = cost_profile_of(m, (uint32_t)i);
        if (!json) {
            print_device(id, info.name, p, state[i]);
            continue;
        }
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "name", json_string(info.name));
        json_object_set_new(o, "key", json_string(p->key));
        json_object_set_new(o, "status", json_string(!strncmp(state[i], "measured", 8)
                                                         ? "measured" : state[i]));
        json_object_set_new(o, "gflops_f32", gflops_json(p->flops[0]));
        json_object_set_new(o, "gflops_f16", gflops_json(p->flops[1]));
        json_object_set_new(o, "bandwidth_gbs", gflops_json(p->mem_bandwidth));
        json_object_set_new(o, "launch_us", json_real(p->launch_s * 1e6));
        json_object_set_new(o, "host_visible", json_boolean(p->host_visible));
        json_object_set_new(o, "to_host", p->host_visible ? json_null()
                                          : link_json(p->to_host_latency_s, p->to_host_bandwidth));
        json_object_set_new(o, "from_host",
                            p->host_visible ? json_null()
                                            : link_json(p->from_host_latency_s,
                                                        p->from_host_bandwidth));
        json_object_set_new(o, "shares_host_cpu", json_boolean(p->shares_host_cpu));
        json_array_append_new(devs, o);
    }
    char file[4200];
    snprintf(file, sizeof file, "%s/profiles.json", dir);
    if (json) {
        json_object_set_new(root, "cache_dir", json_string(dir));
        json_object_set_new(root, "profiles_file", dir[0] ? json_string(file) : json_null());
        json_object_set_new(root, "devices", devs);
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(root);
    } else if (!dir[0]) {
        printf("no cache folder (set XDG_CACHE_HOME or HOME, or use --cache): nothing saved\n");
    } else {
        printf("%s %s\n", measured ? "profiles written to" : "profiles cached in", file);
    }
    free(state);
    cost_model_close(m);
    loom_runtime_destroy(rt);
    return status;
}
