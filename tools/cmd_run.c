/*
 * `loom run`: load an ONNX model, feed it inputs from .npy or TensorProto .pb files (seeded
 * random data for the rest), run it once or N times after warm-up, write every output as .npy
 * and report latency, memory and per-device busy time, as text or one JSON object.
 */
#include <loom/loom.h>
#include <loom/onnx.h>

#include <jansson.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "fallbacks.h"
#include "figures.h"
#include "run_sets.h"
#include "tool_util.h"

#define EXIT_RUNTIME TOOL_EXIT_RUNTIME
#define EXIT_USAGE TOOL_EXIT_USAGE

static const char run_help[] =
    "usage: loom run MODEL.onnx [-i NAME=FILE]... [-o DIR] [--device ID] [--strict] [--repeat N]\n"
    "                [--warmup N] [--json] [--dim NAME=VALUE]... [--precision P]\n"
    "                [--calibrate N]\n"
    "       loom run MODEL.onnx --inputs DIR [--inputs DIR]... [-o DIR] [--device ID]\n"
    "                [--strict] [--repeat N] [--json]\n"
    "                several input sets (DIR/NAME.npy per input) in one process: each set's\n"
    "                shapes hit a cached specialisation of the model or create one\n"
    "\n"
    "Run an ONNX model and write each output to DIR/<output name>.npy (characters other than\n"
    "A-Z a-z 0-9 . _ - in the name become '_').\n"
    "\n"
    "  -i NAME=FILE      the model input NAME from FILE: NumPy .npy (C order) or an ONNX\n"
    "                    TensorProto .pb; its dtype and shape must be the model's. Inputs not\n"
    "                    given get seeded random data: floats uniform in [-1, 1), integers\n"
    "                    in [0, 4), bools 0 or 1\n"
    "  -o DIR            where outputs go (created if missing; default: the current directory)\n"
    "  --device ID       run the nodes on this device (cpu:0, or cpu for the backend's first;\n"
    "                    'loom devices' lists them); what it cannot run goes to a device that\n"
    "                    can, unless --strict; an NPU implies --precision fp16.\n"
    "                    Default: the placement policy decides\n"
    "  --strict          fail instead of moving a node to another device: at planning when\n"
    "                    the device cannot run it, at run time when the device fails\n"
    "  --repeat N        run N times and print latency median, p95, p99 and min\n"
    "  --warmup N        runs before those measured (default 3 with --repeat, else 0)\n"
    "  --dim NAME=VALUE  value of the model's symbolic dimension NAME (e.g. batch_size=1)\n"
    "  --precision P     lowest precision float32 nodes may run in: f32 (default, exact),\n"
    "                    fp16 or int8 (lets devices such as NPUs take them), or int8-dynamic\n"
    "  --quantize int8-dynamic  MatMul/Gemm with constant weights get int8 weights (per output\n"
    "                    column) and quantise activations per row at run time (about 4x less\n"
    "                    weight memory); the same as --precision int8-dynamic\n"
    "  --calibrate N     with --precision int8: calibrate the int8 scales of activations on\n"
    "                    N sets of seeded random inputs of the model's dtypes and shapes (as\n"
    "                    for inputs not given); devices then use static scales, and values\n"
    "                    beyond the calibrated range saturate. Default: dynamic scales\n"
    "  --json            print one JSON object instead of text: {\"model\", \"device\", \"runs\",\n"
    "                    \"latency_ms\": {\"median\", \"p95\", \"p99\", \"min\"},\n"
    "                    \"peak_memory_bytes\", \"devices\": [{\"id\", \"busy_ms\"}],\n"
    "                    \"outputs\": [{\"name\", \"dtype\", \"shape\", \"file\"}],\n"
    "                    \"fallback_count\", \"fallbacks\": [{\"node\", \"op\", \"failed_device\",\n"
    "                    \"ran_device\", \"status\", \"message\", \"runs\"}]}\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.\n";

typedef struct run_input {
    const char *name, *file; /* from argv */
    loom_tensor *tensor;
} run_input;

typedef struct run_opts {
    const char *model, *out_dir, *device;
    int repeat, warmup, json, strict;
    uint32_t precision; /* a loom_precision */
    int precision_given;
    int calibrate; /* sample sets for int8 calibration, 0 for none */
    run_input *inputs;
    size_t n_inputs;
    loom_onnx_dim *dims;
    size_t n_dims;
} run_opts;

/* One line on stderr, whatever newlines the library's message holds. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tool_vsay("loom run", fmt, ap);
    va_end(ap);
}

static int usage(const char *fmt, const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    say("%s (see 'loom run --help')", msg);
    return EXIT_USAGE;
}

/* The same for a parser that returns 0 on failure. */
static int bad_usage(const char *fmt, const char *arg)
{
    usage(fmt, arg);
    return 0;
}

static int parse_int(const char *flag, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        say("%s wants a whole number from %ld to %ld, got '%s' (see 'loom run --help')", flag,
            min, max, s);
        return 0;
    }
    *out = v;
    return 1;
}

static void shape_text(char *buf, size_t len, uint32_t rank, const int64_t *dims)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (uint32_t k = 0; k < rank && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", k ? ", " : "", (long long)dims[k]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcasecmp(s + a - b, suffix);
}

static int parse_args(int argc, char **argv, run_opts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(a, "--strict")) {
            o->strict = 1;
            continue;
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (o->model)
                return bad_usage("unexpected argument '%s' (one model at a time)", a);
            o->model = a;
            continue;
        }
        int takes_value = !strcmp(a, "-i") || !strcmp(a, "--input") || !strcmp(a, "-o") ||
                          !strcmp(a, "--output") || !strcmp(a, "--device") ||
                          !strcmp(a, "--repeat") || !strcmp(a, "--warmup") ||
                          !strcmp(a, "--dim") || !strcmp(a, "--precision") ||
                          !strcmp(a, "--quantize") || !strcmp(a, "--calibrate");
        if (!takes_value)
            return bad_usage("unknown option '%s'", a);
        /* "--device -o DIR" must not run on a device called "-o". */
        if (!(v = tool_option_value(argc, argv, &i)))
            return bad_usage("option %s needs a value", a);
        long n;
        if (!strcmp(a, "-i") || !strcmp(a, "--input")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1])
                return bad_usage("-i wants NAME=FILE, got '%s'", v);
            size_t name_len = (size_t)(eq - v);
            for (size_t k = 0; k < o->n_inputs; k++)
                if (strlen(o->inputs[k].name) == name_len &&
                    !strncmp(o->inputs[k].name, v, name_len))
                    return bad_usage("input '%s' is given twice", o->inputs[k].name);
            char *name = strndup(v, name_len);
            if (!name)
                return bad_usage("%s", "out of memory");
            o->inputs[o->n_inputs++] = (run_input){.name = name, .file = eq + 1};
        } else if (!strcmp(a, "--dim")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v)
                return bad_usage("--dim wants NAME=VALUE, got '%s'", v);
            if (!parse_int("--dim", eq + 1, 1, INT32_MAX, &n))
                return 0;
            char *name = strndup(v, (size_t)(eq - v));
            if (!name)
                return bad_usage("%s", "out of memory");
            o->dims[o->n_dims++] = (loom_onnx_dim){.name = name, .value = n};
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            o->out_dir = v;
        } else if (!strcmp(a, "--device")) {
            o->device = v;
        } else if (!strcmp(a, "--precision")) {
            o->precision_given = 1;
            if (!strcmp(v, "f32") || !strcmp(v, "fp32"))
                o->precision = LOOM_PRECISION_F32;
            else if (!strcmp(v, "fp16") || !strcmp(v, "f16"))
                o->precision = LOOM_PRECISION_F16;
            else if (!strcmp(v, "int8"))
                o->precision = LOOM_PRECISION_INT8;
            else if (!strcmp(v, "int8-dynamic"))
                o->precision = LOOM_PRECISION_INT8_DYNAMIC;
            else
                return bad_usage("unknown --precision '%s' (f32, fp16, int8 or int8-dynamic)", v);
        } else if (!strcmp(a, "--quantize")) {
            if (strcmp(v, "int8-dynamic") != 0)
                return bad_usage("unknown --quantize '%s' (int8-dynamic)", v);
            o->precision_given = 1;
            o->precision = LOOM_PRECISION_INT8_DYNAMIC;
        } else if (!strcmp(a, "--calibrate")) {
            if (!parse_int(a, v, 1, 1000, &n))
                return 0;
            o->calibrate = (int)n;
        } else if (!strcmp(a, "--repeat")) {
            if (!parse_int(a, v, 1, 1000000, &n))
                return 0;
            o->repeat = (int)n;
        } else if (!strcmp(a, "--warmup")) {
            if (!parse_int(a, v, 0, 1000000, &n))
                return 0;
            o->warmup = (int)n;
        }
    }
    if (!o->model)
        return bad_usage("%s", "no model given: loom run MODEL.onnx");
    if (o->calibrate && o->precision != LOOM_PRECISION_INT8)
        return bad_usage("%s", "--calibrate needs --precision int8");
    return 1;
}

/* ---- inputs -------------------------------------------------------------------------------- */

/* Read every -i file. Returns 1, or minus the exit status after a message. */
static int load_input_files(run_opts *o)
{
    for (size_t i = 0; i < o->n_inputs; i++) {
        run_input *in = &o->inputs[i];
        loom_status st;
        if (ends_with(in->file, ".npy"))
            st = loom_tensor_load_npy(in->file, &in->tensor);
        else if (ends_with(in->file, ".pb"))
            st = loom_tensor_load_pb(in->file, &in->tensor, NULL, 0);
        else
            return -usage("input file '%s' is neither .npy nor .pb", in->file);
        if (st != LOOM_OK) {
            say("input '%s': %s", in->name, loom_last_error());
            return -tool_exit_status(st, TOOL_LOADING);
        }
    }
    return 1;
}

/* Seeded random data for an input not given: floats uniform in [-1, 1), integers in [0, 4),
 * bools 0 or 1. Each input has its own stream, so one input's data does not depend on the
 * others'. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | (uint32_t)e << 10 | man >> 13, rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++; /* may carry into the exponent, which is right */
    return (uint16_t)half;
}

static void fill_random(loom_tensor *t, size_t index)
{
    uint64_t s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(index + 1) * 0xBF58476D1CE4E5B9ull);
    for (int k = 0; k < 4; k++)
        next_random(&s);
    size_t size = loom_dtype_size(loom_tensor_dtype(t));
    size_t count = size ? loom_tensor_nbytes(t) / size : 0;
    unsigned char *d = loom_tensor_data(t);
    for (size_t i = 0; i < count; i++) {
        uint64_t r = next_random(&s);
        float f = (float)((double)(r >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
        switch (loom_tensor_dtype(t)) {
        case LOOM_DTYPE_F32: memcpy(d + 4 * i, &f, 4); break;
        case LOOM_DTYPE_F16: {
            uint16_t h = f32_to_f16(f);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        case LOOM_DTYPE_BF16: {
            uint32_t x;
            memcpy(&x, &f, 4);
            uint16_t h = (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        case LOOM_DTYPE_BOOL: d[i] = (unsigned char)(r >> 63); break;
        case LOOM_DTYPE_U8:
        case LOOM_DTYPE_I8: d[i] = (unsigned char)(r >> 62); break;
        case LOOM_DTYPE_I32: {
            int32_t v = (int32_t)(r >> 62);
            memcpy(d + 4 * i, &v, 4);
            break;
        }
        case LOOM_DTYPE_I64: {
            int64_t v = (int64_t)(r >> 62);
            memcpy(d + 8 * i, &v, 8);
            break;
        }
        default: break;
        }
    }
}

/* The model's inputs, for a message: "x (float [1, 3]), mask (bool [1, 3])". */
static void list_inputs(const loom_graph *g, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < loom_graph_input_count(g) && n < len; i++) {
        loom_value v = loom_graph_input(g, i);
        loom_dtype dt;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK];
        loom_value_info(g, v, &dt, &rank, dims);
        char shape[160];
        shape_text(shape, sizeof shape, rank, dims);
        n += (size_t)snprintf(buf + n, len - n, "%s%s (%s %s)", i ? ", " : "",
                              loom_value_name(g, v), loom_dtype_name(dt), shape);
    }
    if (!loom_graph_input_count(g))
        snprintf(buf, len, "none");
}

/* Match the given inputs to the graph's and check their dtype and shape; fill IN (graph
 * order) with borrowed given tensors or new random ones (OWNED[i] set). */
static int bind_inputs(const run_opts *o, const loom_graph *g, loom_tensor **in, int *owned)
{
    size_t n_in = loom_graph_input_count(g);
    for (size_t k = 0; k < o->n_inputs; k++) {
        const run_input *ri = &o->inputs[k];
        loom_value v = loom_graph_find_value(g, ri->name);
        size_t pos = n_in;
        for (size_t i = 0; i < n_in; i++)
            if (loom_graph_input(g, i) == v)
                pos = i;
        if (v == LOOM_NO_VALUE || pos == n_in) {
            char names[1024];
            list_inputs(g, names, sizeof names);
            say("'%s' is not an input of %s; its inputs are: %s", ri->name, o->model, names);
            return 0;
        }
        loom_dtype dt;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK], gd[LOOM_MAX_RANK];
        loom_value_info(g, v, &dt, &rank, dims);
        char want[160], got[160];
        shape_text(want, sizeof want, rank, dims);
        loom_tensor_dims(ri->tensor, gd);
        shape_text(got, sizeof got, loom_tensor_rank(ri->tensor), gd);
        if (loom_tensor_dtype(ri->tensor) != dt) {
            say("input '%s': %s holds %s, the model wants %s", ri->name, ri->file,
                loom_dtype_name(loom_tensor_dtype(ri->tensor)), loom_dtype_name(dt));
            return 0;
        }
        if (strcmp(want, got) != 0) {
            say("input '%s': %s has shape %s, the model wants %s", ri->name, ri->file, got,
                want);
            return 0;
        }
        in[pos] = ri->tensor;
    }
    for (size_t i = 0; i < n_in; i++) {
        if (in[i])
            continue;
        loom_dtype dt;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK];
        loom_value_info(g, loom_graph_input(g, i), &dt, &rank, dims);
        if (loom_tensor_create(dt, rank, dims, &in[i]) != LOOM_OK) {
            say("input '%s': %s", loom_value_name(g, loom_graph_input(g, i)), loom_last_error());
            return 0;
        }
        owned[i] = 1;
        fill_random(in[i], i);
    }
    return 1;
}

/* ---- the model and the device -------------------------------------------------------------- */

/* The runtime id of --device SPEC ("cpu:0" or a backend name), or NULL after a message. */
static const char *resolve_device(loom_runtime *rt, const char *spec, char *id, size_t id_len)
{
    size_t n = loom_runtime_device_count(rt);
    size_t slen = strlen(spec);
    for (size_t i = 0; i < n; i++) {
        loom_runtime_device(rt, i, id, id_len, NULL);
        if (!strcmp(id, spec) || (!strchr(spec, ':') && !strncmp(id, spec, slen) &&
                                  id[slen] == ':'))
            return id;
    }
    char known[512];
    size_t k = 0;
    known[0] = '\0';
    for (size_t i = 0; i < n && k < sizeof known; i++) {
        char d[64];
        loom_runtime_device(rt, i, d, sizeof d, NULL);
        k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", d);
    }
    say("unknown device '%s' (devices here: %s)", spec, known);
    return NULL;
}

/* Advice to append to the importer's message MSG about an unresolved dim, unless it already
 * says how the command sets one. */
static const char *dim_hint(const char *msg)
{
    return strstr(msg, "symbolic") && !strstr(msg, "--dim") ? " (loom run: --dim NAME=VALUE)" : "";
}

/* Load the model. Symbolic dims come from --dim; when those leave one unresolved, the shapes of
 * the given input files settle it. Returns 0 on success, else the exit status. */
/* Load the model as one graph; on failure the message goes to WHY (WHY_LEN bytes), for the
 * caller to say unless the model runs in stages after all. */
static int load_model(const run_opts *o, loom_graph **g, char *why, size_t why_len)
{
    loom_onnx_options opt = {.struct_size = sizeof opt, .dims = o->dims, .n_dims = o->n_dims};
    loom_status st = loom_onnx_load(o->model, &opt, g);
    if (st == LOOM_OK)
        return 0;
    if (st == LOOM_ERR_INVALID_ARGUMENT && o->n_inputs) {
        char first[2048];
        snprintf(first, sizeof first, "%s", loom_last_error());
        loom_onnx_shape *shapes = calloc(o->n_inputs, sizeof *shapes);
        int64_t(*dims)[LOOM_MAX_RANK] = calloc(o->n_inputs, sizeof *dims);
        if (shapes && dims) {
            for (size_t i = 0; i < o->n_inputs; i++) {
                loom_tensor_dims(o->inputs[i].tensor, dims[i]);
                shapes[i] = (loom_onnx_shape){.input = o->inputs[i].name,
                                              .rank = loom_tensor_rank(o->inputs[i].tensor),
                                              .dims = dims[i]};
            }
            opt.shapes = shapes;
            opt.n_shapes = o->n_inputs;
            st = loom_onnx_load(o->model, &opt, g);
        }
        free(shapes);
        free(dims);
        if (st == LOOM_OK)
            return 0;
        snprintf(why, why_len, "%s%s", first, dim_hint(first));
        return EXIT_USAGE;
    }
    /* The importer's message speaks of its options; say how this command sets a dim. */
    snprintf(why, why_len, "%s%s", loom_last_error(), dim_hint(loom_last_error()));
    return tool_exit_status(st, TOOL_LOADING);
}

/* ---- outputs ------------------------------------------------------------------------------- */

/* Create the output folder DIR (and its parents) and check that files can be made in it,
 * before the model runs. Returns 0, or the exit status after a message: a folder that cannot be
 * created or written is the -o argument's fault (2), like any output path (docs/run.md). */
static int make_dirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) {
        say("out of memory");
        return EXIT_RUNTIME;
    }
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            say("cannot create output directory '%s': %s", p, strerror(e));
            free(p);
            return tool_write_exit_status(e);
        }
        *s = c;
        if (!c)
            break;
    }
    free(p);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        say("output directory '%s' is not a directory", dir);
        return tool_write_exit_status(ENOTDIR);
    }
    if (access(dir, W_OK | X_OK) != 0) {
        int e = errno;
        say("cannot write in output directory '%s': %s", dir, strerror(e));
        return tool_write_exit_status(e);
    }
    return 0;
}

/* Check the output files' names before the model runs: a symbolic link, folder or device at one
 * is refused (loom_tensor_save_npy refuses them too; saying so now spares the run). Sets
 * EXISTED[i] for the regular files that will be replaced. Returns 0, or 2 after a message. */
static int check_output_paths(char **paths, size_t n, int *existed)
{
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        existed[i] = 0;
        if (lstat(paths[i], &sb) != 0)
            continue;
        if (S_ISLNK(sb.st_mode)) {
            say("output file '%s' is a symbolic link: refused, not followed (remove it or "
                "choose another -o)", paths[i]);
            return EXIT_USAGE;
        }
        if (!S_ISREG(sb.st_mode)) {
            say("output file '%s' exists and is not a regular file", paths[i]);
            return EXIT_USAGE;
        }
        existed[i] = 1;
    }
    return 0;
}

/* File names for the outputs: the sanitised output name, made unique with _2, _3... */
/* Output I's name, as the plan keeps it (the graph is gone by the time outputs are written). */
static const char *plan_output_name(const loom_plan *plan, size_t i)
{
    const char *name = NULL;
    if (loom_plan_output_info(plan, i, &name, NULL, NULL, NULL) != LOOM_OK || !name)
        return "?";
    return name;
}

static char **paths_for_names(const run_opts *o, const char *const *names, size_t n)
{
    char **paths = calloc(n + 1, sizeof *paths);
    if (!paths)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        char base[256];
        size_t k = 0;
        for (const char *c = name ? name : ""; *c && k + 1 < sizeof base; c++)
            base[k++] = ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                         (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-')
                            ? *c
                            : '_';
        base[k] = '\0';
        if (!k || !strcmp(base, ".") || !strcmp(base, ".."))
            snprintf(base, sizeof base, "output%zu", i);
        char file[600];
        for (int attempt = 1;; attempt++) {
            if (attempt == 1)
                snprintf(file, sizeof file, "%s%s%s.npy", o->out_dir ? o->out_dir : "",
                         o->out_dir ? "/" : "", base);
            else
                snprintf(file, sizeof file, "%s%s%s_%d.npy", o->out_dir ? o->out_dir : "",
                         o->out_dir ? "/" : "", base, attempt);
            int taken = 0;
            for (size_t j = 0; j < i; j++)
                taken |= !strcmp(paths[j], file);
            if (!taken)
                break;
        }
        paths[i] = strdup(file);
        if (!paths[i]) {
            for (size_t j = 0; j < i; j++)
                free(paths[j]);
            free(paths);
            return NULL;
        }
    }
    return paths;
}

static char **output_paths(const run_opts *o, const loom_graph *g)
{
    size_t n = loom_graph_output_count(g);
    const char **names = calloc(n + 1, sizeof *names);
    if (!names)
        return NULL;
    for (size_t i = 0; i < n; i++)
        names[i] = loom_value_name(g, loom_graph_output(g, i));
    char **paths = paths_for_names(o, names, n);
    free(names);
    return paths;
}

/* ---- the command --------------------------------------------------------------------------- */

/* The inputs of model M from -i files, seeded random data for the rest (their dims from the
 * model or --dim). Returns 0, or the exit status after a message. */
static int bind_model_inputs(const run_opts *o, const loom_model *m, loom_tensor **in,
                             int *owned)
{
    size_t n_in = loom_model_input_count(m);
    loom_model_io io = {.struct_size = sizeof io};
    for (size_t k = 0; k < o->n_inputs; k++) {
        size_t pos = n_in;
        for (size_t i = 0; i < n_in; i++)
            if (loom_model_input_info(m, i, &io) == LOOM_OK && !strcmp(io.name, o->inputs[k].name))
                pos = i;
        if (pos == n_in) {
            say("'%s' is not an input of %s", o->inputs[k].name, o->model);
            return EXIT_USAGE;
        }
        in[pos] = o->inputs[k].tensor;
    }
    for (size_t i = 0; i < n_in; i++) {
        if (in[i])
            continue;
        loom_model_input_info(m, i, &io);
        int64_t dims[LOOM_MAX_RANK];
        for (int32_t k = 0; k < io.rank; k++) {
            dims[k] = io.dims[k];
            for (size_t d = 0; dims[k] < 0 && io.dim_params[k] && d < o->n_dims; d++)
                if (!strcmp(o->dims[d].name, io.dim_params[k]))
                    dims[k] = o->dims[d].value;
            if (dims[k] < 0 && io.dim_params[k]) {
                say("input '%s': dimension %d ('%s') has no value; give it with --dim %s=VALUE "
                    "or the input's data with -i %s=FILE", io.name, k, io.dim_params[k],
                    io.dim_params[k], io.name);
                return EXIT_USAGE;
            }
            if (dims[k] < 0) {
                say("input '%s': dimension %d has no value; give the input's data with -i "
                    "%s=FILE", io.name, k, io.name);
                return EXIT_USAGE;
            }
        }
        if (io.rank < 0 || io.dtype == LOOM_DTYPE_UNDEFINED) {
            say("input '%s': the model gives no type or shape; give its data with -i %s=FILE",
                io.name, io.name);
            return EXIT_USAGE;
        }
        if (loom_tensor_create(io.dtype, (uint32_t)io.rank, dims, &in[i]) != LOOM_OK) {
            say("input '%s': %s", io.name, loom_last_error());
            return EXIT_RUNTIME;
        }
        owned[i] = 1;
        fill_random(in[i], i);
    }
    return 0;
}

/* A model holding operators whose output shape depends on input values (NonZero, Unique,
 * NonMaxSuppression, ...) has no static plan: it runs through loom_model, in stages (model.h).
 * IN are the bound inputs (the graph's, in model order); outputs go to PATHS. Returns the exit
 * status; *STAGED is 0 (nothing done) when the model is not such a model. */
static int run_through_model(const run_opts *o, loom_runtime *rt, const char *device_id,
                             const loom_plan_options *po, loom_tensor **given_in,
                             char **given_paths, const int *given_existed, int *staged)
{
    loom_model_options mo = {.struct_size = sizeof mo, .plan = po};
    loom_model *m = NULL;
    *staged = 0;
    if (loom_model_load_onnx(rt, o->model, &mo, &m) != LOOM_OK || !loom_model_is_staged(m)) {
        loom_model_destroy(m);
        return 0;
    }
    *staged = 1;
    size_t n_in = loom_model_input_count(m), n_out = loom_model_output_count(m);
    int runs = o->repeat > 0 ? o->repeat : 1;
    int warmup = o->warmup >= 0 ? o->warmup : o->repeat > 0 ? 3 : 0;
    double *lat = calloc((size_t)runs, sizeof *lat);
    loom_tensor **outs = calloc(n_out + 1, sizeof *outs);
    /* The caller's inputs and output paths when it bound them from the graph, else ours. */
    loom_tensor **in = given_in ? given_in : calloc(n_in + 1, sizeof *in);
    int *owned = calloc(n_in + 1, sizeof *owned);
    const char **names = calloc(n_out + 1, sizeof *names);
    char **paths = given_paths;
    int *existed = given_existed ? NULL : calloc(n_out + 1, sizeof *existed);
    int rc = 0;
    if (!lat || !outs || !in || !owned || !names || (!given_existed && !existed)) {
        say("out of memory");
        rc = EXIT_RUNTIME;
    }
    if (rc == 0 && !given_in)
        rc = bind_model_inputs(o, m, in, owned);
    loom_model_io io = {.struct_size = sizeof io};
    for (size_t i = 0; rc == 0 && !paths && i < n_out; i++)
        names[i] = loom_model_output_info(m, i, &io) == LOOM_OK ? io.name : "";
    if (rc == 0 && !paths && o->out_dir)
        rc = make_dirs(o->out_dir);
    if (rc == 0 && !paths && !(paths = paths_for_names(o, names, n_out))) {
        say("out of memory");
        rc = EXIT_RUNTIME;
    }
    if (rc == 0 && !given_paths)
        rc = check_output_paths(paths, n_out, existed);
    const int *was = given_existed ? given_existed : existed;
    for (int k = 0; rc == 0 && k < warmup + runs; k++) {
        for (size_t i = 0; i < n_out; i++) {
            loom_tensor_destroy(outs[i]);
            outs[i] = NULL;
        }
        loom_model_run_stats rs = {.struct_size = sizeof rs};
        loom_status st = loom_model_run(m, (const loom_tensor *const *)in, n_in, outs, n_out, &rs);
        if (st != LOOM_OK) {
            say("run failed: %s", loom_last_error());
            rc = st == LOOM_ERR_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_RUNTIME;
        } else if (k >= warmup) {
            lat[k - warmup] = rs.latency_ms;
        }
    }
    for (size_t i = 0; rc == 0 && i < n_out; i++) {
        loom_model_output_info(m, i, &io);
        if (loom_tensor_save_npy(paths[i], outs[i]) != LOOM_OK) {
            int e = errno;
            say("output '%s': %s", io.name, loom_last_error());
            rc = tool_write_exit_status(e);
        } else if (was[i]) {
            say("replaced the existing file '%s'", paths[i]);
        }
    }
    if (rc == 0) {
        qsort(lat, (size_t)runs, sizeof *lat, loom_cmp_double);
        json_t *outl = o->json ? json_array() : NULL;
        if (!o->json)
            printf("%s on %s: staged at value-dependent shapes, %d run%s\nlatency ms: median "
                   "%.4f  min %.4f\n", o->model, device_id, runs, runs > 1 ? "s" : "",
                   loom_percentile(lat, runs, 0.5), lat[0]);
        for (size_t i = 0; i < n_out; i++) {
            int64_t dims[LOOM_MAX_RANK];
            loom_tensor_dims(outs[i], dims);
            loom_model_output_info(m, i, &io);
            if (o->json) {
                json_t *shape = json_array();
                for (uint32_t k = 0; k < loom_tensor_rank(outs[i]); k++)
                    json_array_append_new(shape, json_integer((json_int_t)dims[k]));
                json_array_append_new(outl, json_pack("{s:s, s:s, s:o, s:s}", "name", io.name,
                                                      "dtype",
                                                      loom_dtype_name(loom_tensor_dtype(outs[i])),
                                                      "shape", shape, "file", paths[i]));
                continue;
            }
            char shape[160];
            shape_text(shape, sizeof shape, loom_tensor_rank(outs[i]), dims);
            printf("output %s: %s %s -> %s\n", io.name,
                   loom_dtype_name(loom_tensor_dtype(outs[i])), shape, paths[i]);
        }
        if (o->json) {
            json_t *root = json_pack("{s:s, s:s, s:i, s:b, s:{s:f, s:f}, s:o}", "model",
                                     o->model, "device", device_id, "runs", runs, "staged", 1,
                                     "latency_ms", "median", loom_percentile(lat, runs, 0.5),
                                     "min", lat[0], "outputs", outl);
            char *js = root ? json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) : NULL;
            if (js)
                puts(js);
            else
                rc = EXIT_RUNTIME;
            free(js);
            json_decref(root);
        }
    }
    for (size_t i = 0; outs && i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    for (size_t i = 0; in && owned && i < n_in; i++)
        if (owned[i])
            loom_tensor_destroy(in[i]);
    if (in != given_in)
        free(in);
    for (size_t i = 0; paths != given_paths && paths && i < n_out; i++)
        free(paths[i]);
    if (paths != given_paths)
        free(paths);
    free(owned);
    free(names);
    free(existed);
    free(outs);
    free(lat);
    loom_model_destroy(m);
    return rc;
}

int loom_cmd_run(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(run_help, stdout);
            fputs(tool_backend_option_help, stdout);
            return 0;
        }
    /* Several input sets through one model and its specialisation cache (cmd_run_sets.c). */
    if (run_sets_wanted(argc, argv))
        return run_sets_main(argc, argv);
    run_opts o = {.warmup = -1};
    o.inputs = calloc((size_t)argc + 1, sizeof *o.inputs);
    o.dims = calloc((size_t)argc + 1, sizeof *o.dims);
    loom_runtime *rt = NULL;
    loom_graph *g = NULL;
    loom_plan *plan = NULL;
    loom_tensor **in = NULL, **outs = NULL;
    int *owned = NULL;
    char **paths = NULL;
    int *existed = NULL;
    double *lat = NULL, *busy = NULL;
    loom_node_timing *tl = NULL;
    tool_fallbacks fbs = {0}; /* nodes re-run on another device, over every run */
    size_t n_in = 0, n_out = 0, n_dev = 0, msgs_seen = 0;
    int rc = 0;
    if (!o.inputs || !o.dims) {
        say("out of memory");
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (!parse_args(argc, argv, &o)) {
        rc = EXIT_USAGE;
        goto done;
    }
    FILE *mf = fopen(o.model, "rb");
    if (!mf) {
        say("cannot open model '%s': %s", o.model, strerror(errno));
        rc = EXIT_USAGE;
        goto done;
    }
    fclose(mf);
    int r = load_input_files(&o);
    if (r < 0) {
        rc = -r;
        goto done;
    }
    loom_status rst = tool_runtime_create(NULL, &rt);
    if (rst != LOOM_OK) {
        say("cannot start: %s", loom_last_error());
        rc = tool_runtime_exit_status(rst);
        goto done;
    }
    n_dev = loom_runtime_device_count(rt);
    /* What planning and running report from here on (a damaged cache put aside, a node moved
     * off a device that could not build it) goes to stderr, one line each, at the end. */
    msgs_seen = loom_runtime_message_count(rt);
    char device_id[64] = "auto";
    if (o.device && !resolve_device(rt, o.device, device_id, sizeof device_id)) {
        rc = EXIT_USAGE;
        goto done;
    }
    char why_load[2300] = "";
    if ((rc = load_model(&o, &g, why_load, sizeof why_load)) != 0) {
        /* A model whose shapes depend on values may not import as one graph (a Range or a
         * Reshape sized by a count it computes): loom_model runs it in stages. */
        loom_plan_options po0 = {.struct_size = sizeof po0,
                                 .device = o.device ? device_id : NULL, .strict = o.strict,
                                 .precision = o.precision};
        int staged = 0, src = run_through_model(&o, rt, device_id, &po0, NULL, NULL, NULL,
                                                &staged);
        if (staged)
            rc = src;
        else
            say("%s", why_load);
        goto done;
    }

    n_in = loom_graph_input_count(g);
    n_out = loom_graph_output_count(g);
    in = calloc(n_in + 1, sizeof *in);
    owned = calloc(n_in + 1, sizeof *owned);
    outs = calloc(n_out + 1, sizeof *outs);
    if (!in || !owned || !outs) {
        say("out of memory");
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (!bind_inputs(&o, g, in, owned)) {
        rc = EXIT_USAGE;
        goto done;
    }
    if (o.out_dir && (rc = make_dirs(o.out_dir)) != 0)
        goto done;
    paths = output_paths(&o, g);
    existed = calloc(n_out + 1, sizeof *existed);
    if (!paths || !existed) {
        say("out of memory");
        rc = EXIT_RUNTIME;
        goto done;
    }
    if ((rc = check_output_paths(paths, n_out, existed)) != 0)
        goto done;

    /* An NPU computes in reduced precision: asking for one implies fp16 unless told otherwise
     * (like OpenVINO's inference-precision hint). */
    if (o.device && !o.precision_given)
        for (size_t d = 0; d < n_dev; d++) {
            char id[64];
            loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
            if (loom_runtime_device(rt, d, id, sizeof id, &info) == LOOM_OK &&
                !strcmp(id, device_id) && info.kind == LOOM_DEVICE_NPU)
                o.precision = LOOM_PRECISION_F16;
        }
    loom_plan_options po = {.struct_size = sizeof po, .device = o.device ? device_id : NULL,
                            .strict = o.strict, .precision = o.precision};
    loom_tensor **cal = NULL;
    size_t n_cal = o.calibrate ? (size_t)o.calibrate * n_in : 0;
    if (n_cal) { /* seeded random sample sets, streams apart from the run's own inputs */
        if (!(cal = calloc(n_cal, sizeof *cal))) {
            say("out of memory");
            rc = EXIT_RUNTIME;
            goto done;
        }
        for (size_t k = 0; k < n_cal && rc == 0; k++) {
            loom_dtype dt;
            uint32_t rank;
            int64_t dims[LOOM_MAX_RANK];
            loom_value v = loom_graph_input(g, k % n_in);
            loom_value_info(g, v, &dt, &rank, dims);
            if (loom_tensor_create(dt, rank, dims, &cal[k]) != LOOM_OK) {
                say("calibration input '%s': %s", loom_value_name(g, v), loom_last_error());
                rc = EXIT_RUNTIME;
            } else {
                fill_random(cal[k], 1000003u * (k / n_in + 1) + k % n_in);
            }
        }
        po.calibration_inputs = (const loom_tensor *const *)cal;
        po.n_calibration_sets = (size_t)o.calibrate;
    }
    loom_status st = rc == 0 ? loom_plan_create(rt, g, &po, &plan) : LOOM_OK;
    for (size_t k = 0; cal && k < n_cal; k++)
        loom_tensor_destroy(cal[k]);
    free(cal);
    if (rc != 0)
        goto done;
    char why[1024] = ""; /* the plan's refusal, if the model is not a staged one after all */
    if (st == LOOM_ERR_UNSUPPORTED) {
        snprintf(why, sizeof why, "%s", loom_last_error());
        int staged = 0;
        rc = run_through_model(&o, rt, device_id, &po, in, paths, existed, &staged);
        if (staged)
            goto done;
    }
    if (st != LOOM_OK) {
        say("cannot plan %s%s%s: %s", o.model, o.device ? " on " : "", o.device ? device_id : "",
            why[0] ? why : loom_last_error());
        rc = tool_exit_status(st, TOOL_PLANNING);
        goto done;
    }
    /* The plan keeps what it needs (names included): the graph and its float weights go now,
     * so that with --quantize int8-dynamic only the int8 weights stay in memory. */
    loom_graph_destroy(g);
    g = NULL;
    if (!o.device) { /* one device for every node: name it; several: "auto" */
        size_t nn = loom_plan_node_count(plan);
        for (size_t i = 0; i < nn; i++) {
            const char *d = loom_plan_node_device(plan, i);
            if (i == 0)
                snprintf(device_id, sizeof device_id, "%s", d);
            else if (strcmp(device_id, d) != 0) {
                snprintf(device_id, sizeof device_id, "auto");
                break;
            }
        }
    }
    if (loom_plan_make_outputs(plan, outs, n_out) != LOOM_OK) {
        say("outputs: %s", loom_last_error());
        rc = EXIT_RUNTIME;
        goto done;
    }

    int runs = o.repeat > 0 ? o.repeat : 1;
    int warmup = o.warmup >= 0 ? o.warmup : o.repeat > 0 ? 3 : 0;
    size_t nn = loom_plan_node_count(plan);
    lat = calloc((size_t)runs, sizeof *lat);
    busy = calloc((size_t)runs * (n_dev + 1), sizeof *busy);
    tl = calloc(nn + 1, sizeof *tl);
    if (!lat || !busy || !tl) {
        say("out of memory");
        rc = EXIT_RUNTIME;
        goto done;
    }
    loom_run_stats stats = {.struct_size = sizeof stats, .timeline = tl,
                            .timeline_capacity = nn};
    tool_fallbacks_prepare(&fbs, plan, &stats);
    size_t peak = 0;
    for (int k = 0; k < warmup + runs; k++) {
        st = loom_plan_run(plan, (const loom_tensor *const *)in, n_in, outs, n_out, &stats);
        if (st != LOOM_OK) {
            say("run failed: %s", loom_last_error());
            rc = EXIT_RUNTIME;
            goto done;
        }
        tool_fallbacks_add(&fbs, &stats); /* warm-up runs included: a failure is news */
        if (k < warmup)
            continue;
        int m = k - warmup;
        lat[m] = stats.latency_ms;
        if (stats.peak_bytes > peak)
            peak = stats.peak_bytes;
        for (size_t i = 0; i < stats.timeline_count; i++)
            if (tl[i].device < n_dev)
                busy[tl[i].device * (size_t)runs + (size_t)m] +=
                    (double)(tl[i].end_ns - tl[i].start_ns) / 1e6;
    }
    if (!peak)
        peak = loom_plan_peak_bytes(plan);

    /* Each output goes to a temporary file that is renamed over the target when whole. */
    for (size_t i = 0; i < n_out; i++) {
        if (loom_tensor_save_npy(paths[i], outs[i]) != LOOM_OK) {
            int e = errno;
            char why[512]; /* looking the name up clears the thread's last error: copy first */
            snprintf(why, sizeof why, "%s", loom_last_error());
            say("output '%s': %s", plan_output_name(plan, i), why);
            rc = tool_write_exit_status(e);
            goto done;
        }
        if (existed[i])
            say("replaced the existing file '%s'", paths[i]);
    }

    qsort(lat, (size_t)runs, sizeof *lat, loom_cmp_double);
    /* Devices that run nodes of the plan, in runtime order, with their median busy time. */
    int *used = calloc(n_dev + 1, sizeof *used);
    if (!used) {
        say("out of memory");
        rc = EXIT_RUNTIME;
        goto done;
    }
    for (size_t i = 0; i < nn; i++)
        for (size_t d = 0; d < n_dev; d++) {
            char id[64];
            loom_runtime_device(rt, d, id, sizeof id, NULL);
            if (!strcmp(id, loom_plan_node_device(plan, i)))
                used[d] = 1;
        }
    for (size_t d = 0; d < n_dev; d++)
        qsort(&busy[d * (size_t)runs], (size_t)runs, sizeof *busy, loom_cmp_double);

    if (o.json) {
        json_t *devs = json_array(), *outl = json_array();
        for (size_t d = 0; d < n_dev; d++) {
            if (!used[d])
                continue;
            char id[64];
            loom_runtime_device(rt, d, id, sizeof id, NULL);
            json_array_append_new(devs, json_pack("{s:s, s:f}", "id", id, "busy_ms",
                                                  loom_percentile(&busy[d * (size_t)runs], runs,
                                                             0.5)));
        }
        for (size_t i = 0; i < n_out; i++) {
            int64_t dims[LOOM_MAX_RANK];
            loom_tensor_dims(outs[i], dims);
            json_t *shape = json_array();
            for (uint32_t k = 0; k < loom_tensor_rank(outs[i]); k++)
                json_array_append_new(shape, json_integer((json_int_t)dims[k]));
            json_array_append_new(
                outl, json_pack("{s:s, s:s, s:o, s:s}", "name", plan_output_name(plan, i),
                                "dtype",
                                loom_dtype_name(loom_tensor_dtype(outs[i])), "shape", shape,
                                "file", paths[i]));
        }
        json_t *root = json_pack("{s:s, s:s, s:i, s:{s:f, s:f, s:f, s:f}, s:I, s:o, s:o}",
                                 "model", o.model, "device", device_id, "runs", runs,
                                 "latency_ms", "median", loom_percentile(lat, runs, 0.5),
                                 "p95", loom_percentile(lat, runs, 0.95),
                                 "p99", loom_percentile(lat, runs, 0.99),
                                 "min", lat[0], "peak_memory_bytes", (json_int_t)peak, "devices",
                                 devs, "outputs", outl);
        json_t *fbl = json_array();
        for (size_t i = 0; i < fbs.n; i++) {
            const loom_fallback_info *fb = &fbs.items[i].info;
            char from[64] = "?", to[64] = "?";
            loom_runtime_device(rt, fb->failed_device, from, sizeof from, NULL);
            loom_runtime_device(rt, fb->ran_device, to, sizeof to, NULL);
            json_array_append_new(
                fbl, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "node",
                               loom_plan_node_name(plan, fb->node), "op",
                               loom_plan_node_op(plan, fb->node), "failed_device", from,
                               "ran_device", to, "status", loom_status_name(fb->status),
                               "message", fb->message, "runs", (json_int_t)fbs.items[i].runs));
        }
        if (root) {
            json_object_set_new(root, "fallback_count", json_integer((json_int_t)fbs.total));
            json_object_set_new(root, "fallbacks", fbl);
        } else {
            json_decref(fbl);
        }
        char *s = root ? json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) : NULL;
        if (!s) {
            say("cannot format the JSON report");
            rc = EXIT_RUNTIME;
        } else {
            puts(s);
        }
        free(s);
        json_decref(root);
    } else {
        printf("%s on %s: %zu nodes, %d run%s", o.model, device_id, nn, runs,
               runs > 1 ? "s" : "");
        if (warmup)
            printf(" after %d warm-up", warmup);
        printf("\n");
        if (o.repeat > 0)
            printf("latency ms: median %.4f  p95 %.4f  p99 %.4f  min %.4f\n",
                   loom_percentile(lat, runs, 0.5), loom_percentile(lat, runs, 0.95),
                   loom_percentile(lat, runs, 0.99), lat[0]);
        else
            printf("latency ms: %.4f\n", lat[0]);
        printf("intermediate memory: peak %.2f MiB\n", (double)peak / 1048576.0);
        loom_plan_summary sum = {.struct_size = sizeof sum};
        if (loom_plan_summary_get(plan, &sum) == LOOM_OK)
            printf("constants (weights) held by the plan: %.2f MiB\n",
                   (double)sum.constant_bytes / 1048576.0);
        if (fbs.total)
            printf("%zu node run%s re-run on another device after a device failure:\n",
                   fbs.total, fbs.total > 1 ? "s" : "");
        for (size_t i = 0; i < fbs.n; i++) {
            const loom_fallback_info *fb = &fbs.items[i].info;
            char what[512];
            printf("  node '%s' (%s) %s", loom_plan_node_name(plan, fb->node),
                   loom_plan_node_op(plan, fb->node), tool_fallback_text(rt, fb, what, sizeof what));
            if (warmup + runs > 1)
                printf(" (in %zu of %d runs)", fbs.items[i].runs, warmup + runs);
            printf("\n");
        }
        for (size_t d = 0; d < n_dev; d++) {
            if (!used[d])
                continue;
            char id[64];
            loom_runtime_device(rt, d, id, sizeof id, NULL);
            printf("device %s: busy %.4f ms\n", id,
                   loom_percentile(&busy[d * (size_t)runs], runs, 0.5));
        }
        for (size_t i = 0; i < n_out; i++) {
            int64_t dims[LOOM_MAX_RANK];
            loom_tensor_dims(outs[i], dims);
            char shape[160];
            shape_text(shape, sizeof shape, loom_tensor_rank(outs[i]), dims);
            printf("output %s: %s %s -> %s\n", plan_output_name(plan, i),
                   loom_dtype_name(loom_tensor_dtype(outs[i])), shape, paths[i]);
        }
    }
    free(used);
done:
    for (size_t i = 0; in && i < n_in; i++)
        if (owned[i])
            loom_tensor_destroy(in[i]);
    for (size_t i = 0; outs && i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    for (size_t i = 0; paths && i < n_out; i++)
        free(paths[i]);
    free(paths);
    free(existed);
    free(in);
    free(owned);
    free(outs);
    free(lat);
    free(busy);
    free(tl);
    tool_fallbacks_free(&fbs);
    for (size_t i = msgs_seen; rt && i < loom_runtime_message_count(rt); i++)
        say("%s", loom_runtime_message(rt, i));
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    for (size_t i = 0; o.inputs && i < o.n_inputs; i++) {
        free((char *)o.inputs[i].name);
        loom_tensor_destroy(o.inputs[i].tensor);
    }
    for (size_t i = 0; o.dims && i < o.n_dims; i++)
        free((char *)o.dims[i].name);
    free(o.inputs);
    free(o.dims);
    return rc;
}
