/*
 * `loom profile`: place a model (an ONNX file or a bundled model) across the devices with a
 * placement policy, run the plan N times after warm-up runs, and show where every node ran, why,
 * what it was predicted to cost and what it cost: a per-node table, per-device totals, latency
 * figures, the prediction error, the latency target met or missed, and the placed plan against
 * the best single device (measured too). Optionally a Chrome trace, an SVG Gantt chart and a
 * Graphviz drawing of the last run. docs/profile.md describes every output.
 */
#include <loom/loom.h>
#include <loom/onnx.h>

#include <jansson.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "fallbacks.h"
#include "dot.h"
#include "figures.h"
#include "gantt.h"
#include "graph_view.h"
#include "models.h"
#include "profile_moe.h"
#include "profile_view.h"
#include "tool_util.h"
#include "trace.h"

#define EXIT_RUNTIME TOOL_EXIT_RUNTIME
#define EXIT_USAGE TOOL_EXIT_USAGE
#define DEFAULT_ROWS 60 /* rows of the node table without --all */

static const char profile_help[] =
    "usage: loom profile [MODEL.onnx | --model NAME] [--target-latency T]\n"
    "                    [--policy P] [--device ID] [--pin OP=DEV | --pin node:NAME=DEV]...\n"
    "                    [--repeat N] [--warmup N] [--precision P] [--strict] [--budget S]\n"
    "                    [--trace OUT.json] [--gantt OUT.svg] [--dot OUT.dot] [--all] [--json]\n"
    "                    [--no-calibrate] [--no-learn] [--passes] [--dim NAME=VALUE]...\n"
    "                    [--shape INPUT=D0xD1x...]...\n"
    "\n"
    "Place a model across every device found with a placement policy (or on one device with\n"
    "--device), run the plan N times after warm-up runs, and show where each node ran, why,\n"
    "what it was predicted to cost and what it cost: a table of nodes (the plan's copies\n"
    "between devices included, on their link FROM->TO), per-device busy time, utilisation and\n"
    "bytes moved, the end-to-end latency (median, p95, p99, min), the prediction error, the\n"
    "target met or missed, and the placed plan against the best single device (also measured).\n"
    "Inputs are seeded random data. An ONNX model's symbolic dims are given with --dim, as for\n"
    "'loom run', or whole input shapes with --shape; a dim left unresolved (symbolic, negative\n"
    "or unnamed) is refused, named.\n"
    "\n"
    "  --model NAME        bundled model: mlp (64x784 -> 512 -> 256 -> 10, default), attention\n"
    "                      (one transformer attention block, seq 128, d_model 256, 4 heads) or\n"
    "                      towers (three parallel MLP towers of widths 1024, 512 and 256, joined),\n"
    "                      moe (a MoE layer: 256 tokens, each to its top 2 of 8 experts of\n"
    "                      512 -> 2048 -> 512; 64 MiB of weights),\n"
    "                      bert (BERT-base encoder: 12 layers, hidden 768, seq 128, batch 1,\n"
    "                      435 MB of seeded weights) or bert-tiny (4 layers, hidden 256, seq 64)\n"
    "  --target-latency T  meet this end-to-end latency at least energy instead of minimising\n"
    "                      latency: 300ms, 0.3s, 300us, or a plain number of seconds\n"
    "  --policy P          default (Loom's search), heft, peft, exact or first\n"
    "  --device ID         every node on this device (e.g. cpu:0, or cpu for the backend's\n"
    "                      first); nodes it cannot run go to a device that can, unless --strict\n"
    "  --pin OP=DEV        every node of op OP on device DEV (e.g. MatMul=npu-sim); repeatable\n"
    "  --pin node:NAME=DEV the node NAME on device DEV\n"
    "  --strict            fail when a node cannot run where it was asked to (device or pin)\n"
    "  --precision P       lowest precision float32 nodes may run in: f32 (default, exact),\n"
    "                      fp16 or int8 (NPUs such as npu-sim need one of those), or\n"
    "                      int8-dynamic (= --quantize int8-dynamic)\n"
    "  --quantize int8-dynamic  MatMul/Gemm with constant weights run in int8 (weights per\n"
    "                      output column, activations per row at run time)\n"
    "  --budget S          seconds the placement search may take (default: the policy's)\n"
    "  --dim NAME=VALUE    value of the model's symbolic dimension NAME (e.g. batch_size=1)\n"
    "  --shape INPUT=D0xD1x...  profile with input INPUT of this shape (e.g. --shape\n"
    "                      input_ids=1x128 --shape attention_mask=1x128); repeatable. Its rank and\n"
    "                      fixed dims must be the model's; the symbols it settles (sequence=128)\n"
    "                      apply to every input that has them\n"
    "  --repeat N          measured runs (default 20)\n"
    "  --warmup N          runs before measuring (default 3); they record what each node took,\n"
    "                      and the model is placed again from those measurements\n"
    "  --no-learn          keep the first placement and record nothing in the cost model's\n"
    "                      history ($XDG_CACHE_HOME/loom/history.json)\n"
    "  --no-calibrate      do not measure devices that have no profile yet (by default they\n"
    "                      are calibrated once, quickly, like `loom calibrate --quick`;\n"
    "                      LOOM_NO_CALIBRATE=1 does the same)\n"
    "  --all               print every node (default: the first 60 in plan order)\n"
    "  --passes            print what each stage of planning did: the graph passes (validate,\n"
    "                      fold_constants, calibrate_int8) and the scheduler's (place, compile,\n"
    "                      insert_copies, memory_plan), nodes before/after and time\n"
    "  --json              print everything as one JSON object instead of tables\n"
    "  --trace OUT.json    the last run as a Chrome trace (open it in https://ui.perfetto.dev):\n"
    "                      a track per device and per link\n"
    "  --gantt OUT.svg     the last run as an SVG Gantt chart: a lane per device and per link,\n"
    "                      the target as a dashed line\n"
    "  --dot OUT.dot       the graph for Graphviz, nodes coloured by device, copies dashed\n"
    "                      (dot -Tsvg OUT.dot -o graph.svg)\n"
    "\n"
    "docs/profile.md describes the table, the JSON fields and the three files.\n"
    "Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.\n";

/* One --shape INPUT=D0xD1x... */
typedef struct profile_shape {
    const char *arg;    /* the whole argument, borrowed from argv (for messages) */
    char *input;        /* ours */
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
} profile_shape;

typedef struct profile_opts {
    const char *model;     /* bundled model name, or the ONNX file's path */
    const char *onnx;      /* a model file instead of a bundled model */
    const char *device, *policy, *trace, *gantt, *dot;
    const char **pins;     /* borrowed from argv; the array is ours */
    size_t n_pins;
    loom_onnx_dim *dims;   /* --dim values; the names are ours */
    size_t n_dims;
    profile_shape *shapes; /* --shape values */
    size_t n_shapes;
    int repeat, warmup, json, strict, all, passes;
    int no_calibrate;      /* skip measuring devices that have no profile yet */
    int no_learn;          /* do not learn from the warm-up runs (nor re-place after them) */
    uint32_t precision;    /* loom_precision accepted for float32 nodes */
    const char *precision_name;
    double target_s, budget_s;
} profile_opts;

/* What the measured runs of one plan gave. */
typedef struct measured {
    loom_plan *plan;
    size_t n_nodes;
    int runs;
    double *latency_ms;       /* RUNS entries, sorted */
    double *node_ms;          /* per node: its median (NAN when never timed) */
    loom_node_timing *last;   /* the last run's timeline */
    size_t last_count;
    size_t fallbacks;         /* nodes re-run elsewhere, all runs together */
    tool_fallbacks fbs;       /* ... which, where, why (loom_run_stats.fallbacks) */
    /* Learning: the first plan ran the warm-up runs recording measured times, then the plan
     * was made again from them. */
    int replanned;            /* times the graph was placed again */
    double first_predicted_s; /* the first plan's prediction */
    size_t moved;             /* graph nodes whose device changed, all rounds together */
} measured;

/* ---- messages ------------------------------------------------------------------------------ */

/* One line on stderr, prefixed "loom profile: ", whatever newlines the message holds. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tool_vsay("loom profile", fmt, ap);
    va_end(ap);
}

/* Bad usage: the message, a pointer to the help, exit status 2. */
static int usage(const char *fmt, const char *arg)
{
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, arg);
    say("%s (see 'loom profile --help')", msg);
    return EXIT_USAGE;
}

/* ---- arguments ----------------------------------------------------------------------------- */

/* A whole number from MIN to 1000000 into *OUT; 0 after a message otherwise. */
static int parse_count(const char *flag, const char *s, int min, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > 1000000) {
        say("%s wants a whole number from %d to 1000000, got '%s'", flag, min, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* A duration: a number with an optional unit s, ms, us (or µs) or ns; no unit means seconds.
 * Returns 1 with the seconds in *OUT, 0 when S is not one (or not finite, or negative). */
static int parse_duration(const char *s, double *out)
{
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"", 1}, {"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6},
                 {"ns", 1e-9}};
    if (!s || !*s || !(s[0] == '.' || (s[0] >= '0' && s[0] <= '9')))
        return 0; /* no sign, no "inf", no whitespace */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0 || strchr(s, 'x') || strchr(s, 'X'))
        return 0;
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
        if (!strcmp(end, units[k].unit)) {
            *out = v * units[k].scale;
            return 1;
        }
    return 0;
}

/* Whether POLICY is one loom_plan_options.policy knows. */
static int known_policy(const char *policy)
{
    static const char *const policies[] = {"default", "heft", "peft", "exact", "first"};
    for (size_t k = 0; k < sizeof policies / sizeof policies[0]; k++)
        if (!strcmp(policy, policies[k]))
            return 1;
    return 0;
}

/* Parse one --shape value V (INPUT=D0xD1x..., each D from 1 to 2147483647) into O. Returns -1
 * to go on, else the exit status after a message. */
static int parse_shape(const char *v, profile_opts *o)
{
    const char *eq = strchr(v, '=');
    profile_shape sh = {.arg = v};
    int ok = eq && eq != v && eq[1];
    for (const char *p = eq ? eq + 1 : NULL; ok && p;) {
        char *end = NULL;
        errno = 0;
        long long n = *p >= '0' && *p <= '9' ? strtoll(p, &end, 10) : 0;
        if (!end || end == p || errno || n < 1 || n > INT32_MAX || sh.rank == LOOM_MAX_RANK ||
            (*end && *end != 'x')) {
            ok = 0;
            break;
        }
        sh.dims[sh.rank++] = n;
        p = *end == 'x' ? end + 1 : NULL;
    }
    if (!ok)
        return usage("--shape wants INPUT=D0xD1x... (e.g. input_ids=1x128) with at most 8 dims, "
                     "each from 1 to 2147483647, got '%s'", v);
    for (size_t k = 0; k < o->n_shapes; k++)
        if (strlen(o->shapes[k].input) == (size_t)(eq - v) &&
            !strncmp(o->shapes[k].input, v, (size_t)(eq - v)))
            return usage("--shape gives input '%s' twice", o->shapes[k].input);
    profile_shape *s = realloc(o->shapes, (o->n_shapes + 1) * sizeof *s);
    if (s)
        o->shapes = s;
    if (!s || !(sh.input = strndup(v, (size_t)(eq - v)))) {
        say("out of memory");
        return EXIT_RUNTIME;
    }
    o->shapes[o->n_shapes++] = sh;
    return -1;
}

/* Parse ARGV into O. Returns -1 to go on, else the exit status (0 after --help). */
/* The bundled models (examples/models.c), by the name --model takes. */
static const struct bundled_model {
    const char *name;
    loom_graph *(*build)(void);
} bundled_models[] = {
    {"mlp", example_mlp},   {"attention", example_attention}, {"towers", example_towers},
    {"moe", example_moe},   {"bert", example_bert},           {"bert-tiny", example_bert_tiny},
};

/* The bundled model NAME, or NULL. */
static const struct bundled_model *find_bundled(const char *name)
{
    for (size_t i = 0; i < sizeof bundled_models / sizeof bundled_models[0]; i++)
        if (!strcmp(bundled_models[i].name, name))
            return &bundled_models[i];
    return NULL;
}

static int parse_args(int argc, char **argv, profile_opts *o)
{
    int rc;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(profile_help, stdout);
            fputs(tool_backend_option_help, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--strict")) {
            o->strict = 1;
        } else if (!strcmp(a, "--all")) {
            o->all = 1;
        } else if (!strcmp(a, "--passes")) {
            o->passes = 1;
        } else if (!strcmp(a, "--no-calibrate")) {
            o->no_calibrate = 1;
        } else if (!strcmp(a, "--no-learn")) {
            o->no_learn = 1;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--device") || !strcmp(a, "--trace") ||
                   !strcmp(a, "--gantt") || !strcmp(a, "--dot") || !strcmp(a, "--repeat") ||
                   !strcmp(a, "--warmup") || !strcmp(a, "--precision") ||
                   !strcmp(a, "--quantize") ||
                   !strcmp(a, "--policy") || !strcmp(a, "--target-latency") ||
                   !strcmp(a, "--pin") || !strcmp(a, "--budget") || !strcmp(a, "--dim") ||
                   !strcmp(a, "--shape")) {
            /* "--device --json" must not look for a device called "--json". */
            if (!(v = tool_option_value(argc, argv, &i)))
                return usage("option %s needs a value", a);
            if (!strcmp(a, "--dim")) {
                const char *eq = strchr(v, '=');
                char *end = NULL;
                errno = 0;
                long n = eq ? strtol(eq + 1, &end, 10) : 0;
                if (!eq || eq == v || !eq[1] || errno || *end || n < 1 || n > INT32_MAX)
                    return usage("--dim wants NAME=VALUE with VALUE from 1 to 2147483647, got "
                                 "'%s'", v);
                loom_onnx_dim *d = realloc(o->dims, (o->n_dims + 1) * sizeof *d);
                char *name = strndup(v, (size_t)(eq - v));
                if (d)
                    o->dims = d;
                if (!d || !name) {
                    free(name);
                    say("out of memory");
                    return EXIT_RUNTIME;
                }
                o->dims[o->n_dims++] = (loom_onnx_dim){.name = name, .value = n};
            } else if (!strcmp(a, "--shape")) {
                if ((rc = parse_shape(v, o)) >= 0)
                    return rc;
            } else if (!strcmp(a, "--model")) {
                o->model = v;
            } else if (!strcmp(a, "--device")) {
                o->device = v;
            } else if (!strcmp(a, "--trace")) {
                o->trace = v;
            } else if (!strcmp(a, "--gantt")) {
                o->gantt = v;
            } else if (!strcmp(a, "--dot")) {
                o->dot = v;
            } else if (!strcmp(a, "--policy")) {
                if (!known_policy(v))
                    return usage("unknown policy '%s' (default, heft, peft, exact, first)", v);
                o->policy = v;
            } else if (!strcmp(a, "--target-latency")) {
                if (!parse_duration(v, &o->target_s) || o->target_s <= 0)
                    return usage("--target-latency wants a duration above 0 such as 300ms, "
                                 "0.3s, 300us or 2 (seconds), got '%s'", v);
            } else if (!strcmp(a, "--budget")) {
                if (!parse_duration(v, &o->budget_s))
                    return usage("--budget wants seconds (0.5, or 500ms), got '%s'", v);
            } else if (!strcmp(a, "--pin")) {
                const char **p = realloc(o->pins, (o->n_pins + 1) * sizeof *p);
                if (!p) {
                    say("out of memory");
                    return EXIT_RUNTIME;
                }
                o->pins = p;
                o->pins[o->n_pins++] = v;
            } else if (!strcmp(a, "--precision")) {
                if (!strcmp(v, "f32"))
                    o->precision = LOOM_PRECISION_F32;
                else if (!strcmp(v, "fp16"))
                    o->precision = LOOM_PRECISION_F16;
                else if (!strcmp(v, "int8"))
                    o->precision = LOOM_PRECISION_INT8;
                else if (!strcmp(v, "int8-dynamic"))
                    o->precision = LOOM_PRECISION_INT8_DYNAMIC;
                else
                    return usage("unknown precision '%s' (f32, fp16, int8, int8-dynamic)", v);
                o->precision_name = v;
            } else if (!strcmp(a, "--quantize")) {
                if (strcmp(v, "int8-dynamic") != 0)
                    return usage("unknown --quantize '%s' (int8-dynamic)", v);
                o->precision = LOOM_PRECISION_INT8_DYNAMIC;
                o->precision_name = v;
            } else if (!strcmp(a, "--repeat") && !parse_count(a, v, 1, &o->repeat)) {
                return EXIT_USAGE;
            } else if (!strcmp(a, "--warmup") && !parse_count(a, v, 0, &o->warmup)) {
                return EXIT_USAGE;
            }
        } else if (a[0] == '-') {
            return usage("unknown option '%s'", a);
        } else if (!o->onnx) {
            o->onnx = a;
            o->model = a;
        } else {
            return usage("one model at a time ('%s' is extra)", a);
        }
    }
    if (!o->onnx && !find_bundled(o->model))
        return usage("unknown bundled model '%s' (mlp, attention, towers, moe, bert or "
                     "bert-tiny)",
                     o->model);
    if (!o->onnx && o->n_shapes)
        return usage("--shape applies to an ONNX model file, not to the bundled model '%s'",
                     o->model);
    return -1;
}

/* ---- the model, the device, the pins ------------------------------------------------------- */

/* The model's declared shape of IO as text for messages: "batchx128", "?" for an unnamed
 * dynamic dim. */
static const char *declared_shape(const loom_model_io *io, char *buf, size_t cap)
{
    size_t w = 0;
    buf[0] = '\0';
    for (int32_t k = 0; k < io->rank && w < cap; k++) {
        int n = io->dims[k] >= 0 ? snprintf(buf + w, cap - w, "%s%lld", k ? "x" : "",
                                            (long long)io->dims[k])
                                 : snprintf(buf + w, cap - w, "%s%s", k ? "x" : "",
                                            io->dim_params[k] ? io->dim_params[k] : "?");
        if (n < 0)
            break;
        w += (size_t)n;
    }
    return io->rank == 0 ? "a scalar" : buf;
}

/* Check every --shape against the model's declared inputs (the input exists, the rank, the
 * fixed dims, a symbol given one value only, --dim included), and add the symbols the shapes
 * settle to O's dims, so that other inputs with those symbols follow. The declarations are
 * read through a loom_model (the file is read once more; its weights are freed before the
 * import). Returns 0, else the exit status after one line naming the culprit. */
static int resolve_shapes(loom_runtime *rt, profile_opts *o)
{
    loom_model *m = NULL;
    loom_status st = loom_model_load_onnx(rt, o->onnx, NULL, &m);
    if (st != LOOM_OK) {
        say("%s", loom_last_error());
        return tool_exit_status(st, TOOL_LOADING);
    }
    size_t n_in = loom_model_input_count(m), n_user_dims = o->n_dims;
    /* Which --shape settled each symbol added below (for messages). */
    const char **settled_by = calloc(o->n_shapes * LOOM_MAX_RANK + 1, sizeof *settled_by);
    int rc = 0;
    if (!settled_by) {
        say("out of memory");
        rc = EXIT_RUNTIME;
    }
    for (size_t s = 0; !rc && s < o->n_shapes; s++) {
        const profile_shape *sh = &o->shapes[s];
        loom_model_io io = {.struct_size = sizeof io};
        size_t i = 0;
        for (; i < n_in; i++) {
            loom_model_input_info(m, i, &io);
            if (!strcmp(io.name, sh->input))
                break;
        }
        if (i == n_in) {
            char names[512];
            size_t w = 0;
            names[0] = '\0';
            for (size_t k = 0; k < n_in && w + 8 < sizeof names; k++) {
                loom_model_io other = {.struct_size = sizeof other};
                loom_model_input_info(m, k, &other);
                int n = snprintf(names + w, sizeof names - w, "%s%s", k ? ", " : "", other.name);
                w = n < 0 ? w : w + (size_t)n < sizeof names ? w + (size_t)n : sizeof names - 1;
            }
            say("--shape %s: the model has no input '%s' (its inputs: %s)", sh->arg, sh->input,
                n_in ? names : "none");
            rc = EXIT_USAGE;
            break;
        }
        if (io.rank < 0)
            continue; /* the model gives no shape: any shape is the caller's to give */
        char decl[256];
        if ((int32_t)sh->rank != io.rank) {
            say("--shape %s: input '%s' has rank %d in the model (%s), the shape has rank %u",
                sh->arg, sh->input, io.rank, declared_shape(&io, decl, sizeof decl), sh->rank);
            rc = EXIT_USAGE;
            break;
        }
        for (uint32_t k = 0; !rc && k < sh->rank; k++) {
            if (io.dims[k] >= 0 && io.dims[k] != sh->dims[k]) {
                say("--shape %s: dimension %u of input '%s' is %lld, the model fixes it at %lld "
                    "(%s)", sh->arg, k, sh->input, (long long)sh->dims[k],
                    (long long)io.dims[k], declared_shape(&io, decl, sizeof decl));
                rc = EXIT_USAGE;
                break;
            }
            const char *sym = io.dim_params[k];
            if (!sym)
                continue;
            /* One value per symbol: --dim first, then the shapes before this one. */
            size_t d = 0;
            while (d < o->n_dims && strcmp(o->dims[d].name, sym))
                d++;
            if (d < o->n_dims) {
                if (o->dims[d].value != sh->dims[k]) {
                    say("--shape %s: dimension '%s' is %lld in input '%s' but %lld in %s%s",
                        sh->arg, sym, (long long)sh->dims[k], sh->input,
                        (long long)o->dims[d].value, d < n_user_dims ? "--dim " : "--shape ",
                        d < n_user_dims ? sym : settled_by[d - n_user_dims]);
                    rc = EXIT_USAGE;
                }
                continue;
            }
            loom_onnx_dim *nd = realloc(o->dims, (o->n_dims + 1) * sizeof *nd);
            char *name = strdup(sym);
            if (nd)
                o->dims = nd;
            if (!nd || !name) {
                free(name);
                say("out of memory");
                rc = EXIT_RUNTIME;
                break;
            }
            settled_by[o->n_dims - n_user_dims] = sh->arg;
            o->dims[o->n_dims++] = (loom_onnx_dim){.name = name, .value = sh->dims[k]};
        }
    }
    free(settled_by);
    loom_model_destroy(m);
    return rc;
}

/* Build and check the model. Returns 0 with *G set, else the exit status after a message. */
static int build_model(loom_runtime *rt, profile_opts *o, loom_graph **g)
{
    *g = NULL;
    if (o->onnx) {
        /* Every dim resolved, as for `loom run`: a symbolic one from --dim or --shape, and a
         * negative or unnamed one is refused (setting it to 1 silently profiled another
         * model). */
        int rc = o->n_shapes ? resolve_shapes(rt, o) : 0;
        if (rc)
            return rc;
        loom_onnx_shape *shapes = calloc(o->n_shapes + 1, sizeof *shapes);
        if (!shapes) {
            say("out of memory");
            return EXIT_RUNTIME;
        }
        for (size_t s = 0; s < o->n_shapes; s++)
            shapes[s] = (loom_onnx_shape){.input = o->shapes[s].input, .rank = o->shapes[s].rank,
                                          .dims = o->shapes[s].dims};
        loom_onnx_options oo = {.struct_size = sizeof oo, .dims = o->dims, .n_dims = o->n_dims,
                                .shapes = shapes, .n_shapes = o->n_shapes};
        loom_status st = loom_onnx_load(o->onnx, &oo, g);
        free(shapes);
        if (st != LOOM_OK) {
            const char *e = loom_last_error();
            say("%s%s", e, strstr(e, "symbolic") && !strstr(e, "--dim")
                               ? " (loom profile: --dim NAME=VALUE)"
                               : "");
            return tool_exit_status(st, TOOL_LOADING);
        }
    } else {
        *g = find_bundled(o->model)->build(); /* the name was checked by parse_args */
    }
    if (!*g) {
        say("building the bundled model '%s': out of memory", o->model);
        return EXIT_RUNTIME;
    }
    if (loom_graph_check(*g) != LOOM_OK) {
        say("%s", loom_last_error());
        loom_graph_destroy(*g);
        *g = NULL;
        return o->onnx ? EXIT_USAGE : EXIT_RUNTIME;
    }
    return 0;
}

/* Whether SPEC names a device of RT: its id ("cpu:0") or a backend's name ("cpu"). */
static int device_known(const loom_runtime *rt, const char *spec)
{
    size_t slen = strlen(spec);
    for (size_t i = 0; i < loom_runtime_device_count(rt); i++) {
        char id[64];
        if (loom_runtime_device(rt, i, id, sizeof id, NULL) != LOOM_OK)
            continue;
        if (!strcmp(id, spec) || (!strchr(spec, ':') && !strncmp(id, spec, slen) &&
                                  id[slen] == ':'))
            return 1;
    }
    return 0;
}

/* The devices of RT as "cpu:0, npu-sim:0" into BUF. */
static void device_list(const loom_runtime *rt, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < loom_runtime_device_count(rt) && k < len; i++) {
        char id[64];
        loom_runtime_device(rt, i, id, sizeof id, NULL);
        k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? ", " : "", id);
    }
}

/* Check --device and every --pin against RT's devices and G's nodes. Returns 0, else exit 2
 * after a message naming what is wrong. */
static int check_placement_args(const profile_opts *o, const loom_runtime *rt, const loom_graph *g)
{
    char known[512];
    device_list(rt, known, sizeof known);
    if (o->device && !device_known(rt, o->device)) {
        say("unknown device '%s' (devices here: %s)", o->device, known);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < o->n_pins; i++) {
        const char *pin = o->pins[i];
        const char *eq = strrchr(pin, '=');
        int is_node = !strncmp(pin, "node:", 5);
        const char *what = is_node ? pin + 5 : pin;
        if (!eq || eq == what || !eq[1]) {
            say("--pin wants OP=DEVICE or node:NAME=DEVICE, got '%s' (see 'loom profile "
                "--help')", pin);
            return EXIT_USAGE;
        }
        if (!device_known(rt, eq + 1)) {
            say("--pin '%s': unknown device '%s' (devices here: %s)", pin, eq + 1, known);
            return EXIT_USAGE;
        }
        size_t wlen = (size_t)(eq - what);
        int found = 0;
        gv_node n;
        for (size_t k = 0; !found && gv_node_get(g, k, &n); k++) {
            const char *s = is_node ? n.name : n.op;
            found = strlen(s) == wlen && !strncmp(s, what, wlen);
        }
        /* The pieces of a MoE that the plan splits (passes/split_moe_experts.c): MoEExpert,
         * MoERoute, node:<moe>/expert<e>, node:<moe>/router; the plan checks the rest. */
        for (size_t k = 0; !found && gv_node_get(g, k, &n); k++) {
            if (strcmp(n.op, "MoE") != 0)
                continue;
            size_t nl = strlen(n.name);
            found = is_node ? wlen > nl + 1 && !strncmp(what, n.name, nl) && what[nl] == '/' &&
                                  (!strncmp(what + nl + 1, "expert", 6) ||
                                   (wlen == nl + 7 && !strncmp(what + nl + 1, "router", 6)))
                            : (wlen == 9 && !strncmp(what, "MoEExpert", 9)) ||
                                  (wlen == 8 && !strncmp(what, "MoERoute", 8));
        }
        if (!found) {
            say("--pin '%s': the model has no %s '%.*s'", pin, is_node ? "node" : "node of op",
                (int)wlen, what);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* ---- running ------------------------------------------------------------------------------- */

/* Fill every float32 input with seeded random data in [-1, 1); other dtypes stay zero. */
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

/* Free what M holds (the plan included). */
static void measured_free(measured *m)
{
    loom_plan_destroy(m->plan);
    free(m->latency_ms);
    free(m->node_ms);
    free(m->last);
    tool_fallbacks_free(&m->fbs);
    *m = (measured){0};
}

/* Exit status for a failed loom_plan_create: the caller's input is at fault (2) or not (1). */
static int plan_exit(loom_status st)
{
    return tool_exit_status(st, TOOL_PLANNING);
}

/* Run PLAN N times on IN[N_IN] (outputs made and dropped here). Returns 0, or the exit status
 * after a message. */
static int warmup_runs(loom_plan *plan, const loom_graph *g, loom_tensor **in, size_t n_in, int n)
{
    size_t n_out = loom_graph_output_count(g);
    loom_tensor **outs = calloc(n_out + 1, sizeof *outs);
    int rc = 0;
    if (!outs || loom_plan_make_outputs(plan, outs, n_out) != LOOM_OK) {
        say("making the outputs: %s", outs ? loom_last_error() : "out of memory");
        free(outs);
        return EXIT_RUNTIME;
    }
    for (int r = 0; r < n && !rc; r++)
        if (loom_plan_run(plan, (const loom_tensor *const *)in, n_in, outs, n_out, NULL) !=
            LOOM_OK) {
            say("run failed: %s", loom_last_error());
            rc = EXIT_RUNTIME;
        }
    for (size_t i = 0; i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    free(outs);
    return rc;
}

/* Destroy *PLAN (a learning plan saves what it measured) and place G again with PO; *MOVED
 * gets the number of graph nodes whose device changed. The two plans' nodes are matched by
 * name through an index: a 200,000-node chain would take hours pairwise. */
static loom_status replan(loom_runtime *rt, const loom_graph *g, const loom_plan_options *po,
                          loom_plan **plan, size_t *moved)
{
    size_t n0 = loom_plan_node_count(*plan);
    char **before = calloc(n0 + 1, sizeof *before); /* "NAME\0DEVICE" per graph node */
    for (size_t i = 0; before && i < n0; i++)
        if (!loom_plan_node_is_copy(*plan, i)) {
            const char *name = loom_plan_node_name(*plan, i), *dev = loom_plan_node_device(*plan, i);
            size_t a = strlen(name ? name : ""), b = strlen(dev ? dev : "");
            if ((before[i] = malloc(a + b + 2))) {
                memcpy(before[i], name ? name : "", a + 1);
                memcpy(before[i] + a + 1, dev ? dev : "", b + 1);
            }
        }
    loom_plan_destroy(*plan);
    *plan = NULL;
    loom_status st = loom_plan_create(rt, g, po, plan);
    if (st != LOOM_OK)
        say("placing the model again: %s", loom_last_error());
    *moved = 0;
    size_t n1 = st == LOOM_OK ? loom_plan_node_count(*plan) : 0;
    const char **names = calloc(n1 + 1, sizeof *names);
    tool_name_index ix = {0};
    for (size_t j = 0; names && j < n1; j++)
        names[j] = loom_plan_node_name(*plan, j);
    if (names)
        tool_name_index_build(&ix, names, n1);
    for (size_t i = 0; before && i < n0; i++) {
        if (!before[i])
            continue;
        long j = tool_name_index_find(&ix, before[i]);
        if (j >= 0)
            *moved += strcmp(loom_plan_node_device(*plan, (size_t)j),
                             before[i] + strlen(before[i]) + 1) != 0;
        free(before[i]);
    }
    tool_name_index_free(&ix);
    free(names);
    free(before);
    return st;
}

/* Plan G on RT with PO and run it WARMUP + RUNS times on inputs IN[N_IN]; when PO learns, the
 * warm-up runs teach the cost model and the graph is placed again before measuring. Returns 0
 * with *M filled (freed with measured_free), else the exit status after a message. */
static int measure(loom_runtime *rt, const loom_graph *g, const loom_plan_options *po,
                   loom_tensor **in, size_t n_in, int warmup, int runs, measured *m)
{
    *m = (measured){.runs = runs};
    loom_status st = loom_plan_create(rt, g, po, &m->plan);
    if (st != LOOM_OK) {
        say("placing the model: %s", loom_last_error());
        return plan_exit(st);
    }
    size_t n_out = loom_graph_output_count(g);
    if (po->learn && warmup > 0) {
        /* Explore first: the plan only measures nodes where it put them, so a device the model
         * overrates keeps its nodes and the others are never measured. The device predicted
         * fastest alone runs every node it can, recording each. */
        loom_plan_summary s0 = {.struct_size = sizeof s0};
        if (!po->device && loom_plan_summary_get(m->plan, &s0) == LOOM_OK &&
            s0.best_single_device) {
            loom_plan_options one = *po;
            one.device = s0.best_single_device;
            one.pins = NULL;
            one.n_pins = 0;
            one.strict = 0;
            loom_plan *single = NULL;
            if (loom_plan_create(rt, g, &one, &single) == LOOM_OK) {
                int wrc = warmup_runs(single, g, in, n_in, warmup);
                loom_plan_destroy(single); /* saves what it measured */
                if (wrc != 0)
                    return EXIT_RUNTIME;
                size_t moved = 0;
                if ((st = replan(rt, g, po, &m->plan, &moved)) != LOOM_OK)
                    return plan_exit(st);
            }
        }
        /* Warm up on the plan while it records what each node took, then place again from
         * those measurements: what the model only guessed is now measured. A node that moved
         * to a device it never ran on is measured in the next round; at most three rounds. */
        for (int round = 0; round < 3; round++) {
            if (warmup_runs(m->plan, g, in, n_in, warmup) != 0)
                return EXIT_RUNTIME;
            if (round == 0) {
                loom_plan_summary sm = {.struct_size = sizeof sm};
                loom_plan_summary_get(m->plan, &sm);
                m->first_predicted_s = sm.predicted_s;
            }
            size_t moved = 0;
            if ((st = replan(rt, g, po, &m->plan, &moved)) != LOOM_OK)
                return plan_exit(st);
            m->replanned++;
            m->moved += moved;
            if (!moved)
                break;
        }
        warmup = 1; /* the new plan's first run pays its own start-up */
    }
    size_t nn = loom_plan_node_count(m->plan);
    m->n_nodes = nn;
    loom_tensor **outs = calloc(n_out + 1, sizeof *outs);
    double *samples = malloc((nn * (size_t)runs + 1) * sizeof *samples);
    int *count = calloc(nn + 1, sizeof *count);
    m->latency_ms = calloc((size_t)runs, sizeof *m->latency_ms);
    m->node_ms = calloc(nn + 1, sizeof *m->node_ms);
    m->last = calloc(nn + 1, sizeof *m->last);
    int rc = 0;
    if (!outs || !samples || !count || !m->latency_ms || !m->node_ms || !m->last) {
        say("out of memory");
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (loom_plan_make_outputs(m->plan, outs, n_out) != LOOM_OK) {
        say("making the outputs: %s", loom_last_error());
        rc = EXIT_RUNTIME;
        goto done;
    }
    for (int r = 0; r < warmup + runs; r++) {
        loom_run_stats rs = {.struct_size = sizeof rs, .timeline = m->last,
                             .timeline_capacity = nn};
        tool_fallbacks_prepare(&m->fbs, m->plan, &rs);
        if (loom_plan_run(m->plan, (const loom_tensor *const *)in, n_in, outs, n_out, &rs) !=
            LOOM_OK) {
            say("run failed: %s", loom_last_error());
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (r < warmup)
            continue;
        m->latency_ms[r - warmup] = rs.latency_ms;
        m->fallbacks += rs.fallback_count;
        tool_fallbacks_add(&m->fbs, &rs);
        m->last_count = rs.timeline_count;
        for (size_t i = 0; i < rs.timeline_count; i++) {
            const loom_node_timing *t = &m->last[i];
            if (t->node >= nn || count[t->node] >= runs)
                continue;
            uint64_t end = t->end_ns < t->start_ns ? t->start_ns : t->end_ns;
            samples[(size_t)t->node * (size_t)runs + (size_t)count[t->node]++] =
                (double)(end - t->start_ns) / 1e6;
        }
    }
    qsort(m->latency_ms, (size_t)runs, sizeof *m->latency_ms, loom_cmp_double);
    for (size_t i = 0; i < nn; i++) {
        double *s = &samples[i * (size_t)runs];
        qsort(s, (size_t)count[i], sizeof *s, loom_cmp_double);
        m->node_ms[i] = count[i] ? loom_percentile(s, count[i], 0.5) : NAN;
    }
done:
    for (size_t i = 0; outs && i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    free(outs);
    free(samples);
    free(count);
    if (rc)
        measured_free(m);
    return rc;
}

/* ---- the view of the placed plan ----------------------------------------------------------- */

/* Figures of one track (device or link) over the measured runs. */
typedef struct track_figures {
    double busy_ms;           /* sum of its nodes' medians */
    size_t nodes;
    double bytes_in, bytes_out;
    double err_median, err_p90; /* relative prediction error of its nodes; NAN when none */
    size_t err_nodes;
} track_figures;

/* Everything the reports print, beside the view. */
typedef struct profile_report {
    profile_view view;
    loom_node_explain *explain; /* per node; zeroed where the plan gave none */
    int *explained;
    track_figures *tracks;
    loom_plan_summary summary;
    int have_summary;
    double err_median, err_p90; /* all nodes */
    size_t err_nodes;
} profile_report;

/* The part of link id LINK before its first "->" (the source device) into BUF. */
static const char *link_source(const char *link, char *buf, size_t len)
{
    const char *arrow = strstr(link, "->");
    size_t n = arrow ? (size_t)(arrow - link) : strlen(link);
    snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), link);
    return buf;
}

/* The part of link id LINK after its last "->" (the destination device). */
static const char *link_destination(const char *link)
{
    const char *to = NULL;
    for (const char *p = strstr(link, "->"); p; p = strstr(p + 2, "->"))
        to = p + 2;
    return to ? to : link;
}

/* The value a copy node moves, from its name ("copy:TENSOR->DEVICE" or "copy:TENSOR"): the
 * longest prefix after "copy:" that names a value of G and ends where the name does or at
 * "->", ":" or "@". LOOM_NO_VALUE when none does. */
static loom_value copy_tensor(const loom_graph *g, const char *name)
{
    if (strncmp(name, "copy:", 5))
        return LOOM_NO_VALUE;
    const char *rest = name + 5;
    size_t len = strlen(rest);
    char *buf = malloc(len + 1);
    if (!buf)
        return LOOM_NO_VALUE;
    loom_value found = LOOM_NO_VALUE;
    for (size_t n = len; n > 0 && found == LOOM_NO_VALUE; n--) {
        const char *tail = rest + n;
        if (*tail && strncmp(tail, "->", 2) && *tail != ':' && *tail != '@')
            continue;
        memcpy(buf, rest, n);
        buf[n] = '\0';
        found = loom_graph_find_value(g, buf);
    }
    free(buf);
    return found;
}

/* Index of the track named NAME in V, adding it (IS_LINK) when absent. */
static size_t track_index(profile_view *v, const char *name, int is_link)
{
    for (size_t k = 0; k < v->n_tracks; k++)
        if (!strcmp(v->tracks[k].name, name))
            return k;
    v->tracks[v->n_tracks] = (profile_track){name, is_link};
    return v->n_tracks++;
}

/* Median and p90 of the relative errors ERR[N] (sorted here) into *MED and *P90 (NAN when
 * N is 0). */
static void error_figures(double *err, size_t n, double *med, double *p90)
{
    qsort(err, n, sizeof *err, loom_cmp_double);
    *med = n ? loom_percentile(err, (int)n, 0.5) : NAN;
    *p90 = n ? loom_percentile(err, (int)n, 0.9) : NAN;
}

/* Free what R holds (the plan and graph are not R's). */
static void report_free(profile_report *r)
{
    free(r->view.nodes);
    free(r->view.tracks);
    free(r->explain);
    free(r->explained);
    free(r->tracks);
}

/* Fill R from the measured plan M of graph G on RT. Returns 0, or EXIT_RUNTIME when out of
 * memory (after a message). */
static int make_report(profile_report *r, const loom_runtime *rt, const loom_graph *g,
                       const measured *m, const profile_opts *o)
{
    size_t nn = m->n_nodes;
    *r = (profile_report){0};
    r->view = (profile_view){.title = o->model, .graph = g, .n_nodes = nn,
                             .target_s = o->target_s, .plan = m->plan};
    r->view.nodes = calloc(nn + 1, sizeof *r->view.nodes);
    r->view.tracks = calloc(nn + loom_runtime_device_count(rt) + 1, sizeof *r->view.tracks);
    r->explain = calloc(nn + 1, sizeof *r->explain);
    r->explained = calloc(nn + 1, sizeof *r->explained);
    double *err = calloc(nn + 1, sizeof *err);
    if (!r->view.nodes || !r->view.tracks || !r->explain || !r->explained || !err) {
        free(err);
        report_free(r);
        say("out of memory");
        return EXIT_RUNTIME;
    }
    /* The graph's nodes by name, to find each plan node's graph node without a scan. */
    size_t ng = loom_graph_node_count(g);
    const char **gnames = calloc(ng + 1, sizeof *gnames);
    tool_name_index gix = {0};
    for (size_t i = 0; gnames && i < ng; i++)
        gnames[i] = loom_graph_node_name(g, i);
    if (!gnames || !tool_name_index_build(&gix, gnames, ng)) {
        free(gnames);
        free(err);
        report_free(r);
        say("out of memory");
        return EXIT_RUNTIME;
    }
    free(gnames);
    /* Device tracks first, in runtime order, for the devices the plan uses. */
    for (size_t d = 0; d < loom_runtime_device_count(rt); d++) {
        char id[64];
        loom_runtime_device(rt, d, id, sizeof id, NULL);
        for (size_t i = 0; i < nn; i++) {
            const char *dev = loom_plan_node_device(m->plan, i);
            if (!loom_plan_node_is_copy(m->plan, i) && dev && !strcmp(dev, id)) {
                track_index(&r->view, dev, 0); /* the plan's string, which outlives ours */
                break;
            }
        }
    }
    for (size_t i = 0; i < nn; i++) {
        profile_node *n = &r->view.nodes[i];
        loom_node_explain *ex = &r->explain[i];
        ex->struct_size = sizeof *ex;
        r->explained[i] = loom_plan_explain(m->plan, i, ex) == LOOM_OK;
        if (!r->explained[i])
            *ex = (loom_node_explain){.struct_size = sizeof *ex};
        const char *name = loom_plan_node_name(m->plan, i), *op = loom_plan_node_op(m->plan, i);
        const char *dev = loom_plan_node_device(m->plan, i);
        n->name = name ? name : "?";
        n->op = op ? op : "?";
        n->device = dev ? dev : "?";
        n->is_copy = loom_plan_node_is_copy(m->plan, i);
        n->predicted_ms = r->explained[i] ? ex->predicted_s * 1e3 : NAN;
        n->measured_ms = m->node_ms[i];
        n->decided_by = r->explained[i] && ex->decided_by ? ex->decided_by : "";
        n->reason = r->explained[i] && ex->reason ? ex->reason : "";
        n->bytes_moved = r->explained[i] ? ex->bytes_in_moved : 0;
        n->track = track_index(&r->view, n->device, n->is_copy);
        n->tensor = LOOM_NO_VALUE;
        n->graph_node = -1;
        loom_value shown = LOOM_NO_VALUE;
        if (n->is_copy) {
            n->tensor = copy_tensor(g, n->name);
            shown = n->tensor;
        } else {
            n->graph_node = tool_name_index_find(&gix, n->name);
            gv_node gn;
            if (n->graph_node >= 0 && gv_node_get(g, (size_t)n->graph_node, &gn) &&
                gn.n_outputs)
                shown = gn.outputs[0];
        }
        if (shown != LOOM_NO_VALUE)
            gv_shape(g, shown, n->shape, sizeof n->shape);
    }
    for (size_t k = 0; k < m->fbs.n; k++) { /* the first reason of each node that fell back */
        const tool_fallback *f = &m->fbs.items[k];
        profile_node *n = f->info.node < nn ? &r->view.nodes[f->info.node] : NULL;
        if (!n || n->fallback[0])
            continue;
        char what[320];
        snprintf(n->fallback, sizeof n->fallback, "%s (in %zu of %d runs)",
                 tool_fallback_text(rt, &f->info, what, sizeof what), f->runs, m->runs);
    }
    for (size_t i = 0; i < m->last_count; i++) {
        const loom_node_timing *t = &m->last[i];
        if (t->node < nn) {
            r->view.nodes[t->node].timed = 1;
            r->view.nodes[t->node].start_ns = t->start_ns;
            r->view.nodes[t->node].end_ns = t->end_ns;
        }
    }
    tool_name_index_free(&gix);
    /* Per track: busy time, node count, bytes through copies, prediction error. */
    r->tracks = calloc(r->view.n_tracks + 1, sizeof *r->tracks);
    if (!r->tracks) {
        free(err);
        report_free(r);
        say("out of memory");
        return EXIT_RUNTIME;
    }
    for (size_t i = 0; i < nn; i++) {
        const profile_node *n = &r->view.nodes[i];
        track_figures *tf = &r->tracks[n->track];
        tf->nodes++;
        if (!isnan(n->measured_ms))
            tf->busy_ms += n->measured_ms;
        if (!n->is_copy)
            continue;
        char src[64];
        tf->bytes_in += n->bytes_moved;
        tf->bytes_out += n->bytes_moved;
        for (size_t k = 0; k < r->view.n_tracks; k++) {
            const profile_track *t = &r->view.tracks[k];
            if (t->is_link)
                continue;
            if (!strcmp(t->name, link_source(n->device, src, sizeof src)))
                r->tracks[k].bytes_out += n->bytes_moved;
            if (!strcmp(t->name, link_destination(n->device)))
                r->tracks[k].bytes_in += n->bytes_moved;
        }
    }
    for (size_t k = 0; k <= r->view.n_tracks; k++) { /* each track, then all (k == n_tracks) */
        size_t ne = 0;
        for (size_t i = 0; i < nn; i++) {
            const profile_node *n = &r->view.nodes[i];
            if ((k == r->view.n_tracks || n->track == k) && isfinite(n->predicted_ms) &&
                n->measured_ms > 0)
                err[ne++] = fabs(n->predicted_ms - n->measured_ms) / n->measured_ms;
        }
        if (k < r->view.n_tracks) {
            error_figures(err, ne, &r->tracks[k].err_median, &r->tracks[k].err_p90);
            r->tracks[k].err_nodes = ne;
        } else {
            error_figures(err, ne, &r->err_median, &r->err_p90);
            r->err_nodes = ne;
        }
    }
    free(err);
    r->summary.struct_size = sizeof r->summary;
    r->have_summary = loom_plan_summary_get(m->plan, &r->summary) == LOOM_OK;
    if (!r->have_summary)
        r->summary = (loom_plan_summary){.struct_size = sizeof r->summary};
    return 0;
}

/* ---- reports ------------------------------------------------------------------------------- */


/* A number of milliseconds as "%.4f", or "-" when not known. */
static const char *ms_text(double ms, char *buf, size_t len)
{
    if (isfinite(ms))
        snprintf(buf, len, "%.4f", ms);
    else
        snprintf(buf, len, "-");
    return buf;
}

/* A ratio as a percentage "12%", or "-" when not known. */
static const char *pct_text(double r, char *buf, size_t len)
{
    if (isfinite(r))
        snprintf(buf, len, "%.0f%%", r * 100);
    else
        snprintf(buf, len, "-");
    return buf;
}

/* The devices the plan's nodes run on, as "cpu:0, npu-sim:0", into BUF. */
static const char *used_devices(const profile_report *r, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t t = 0; t < r->view.n_tracks && k < len; t++)
        if (!r->view.tracks[t].is_link)
            k += (size_t)snprintf(buf + k, len - k, "%s%s", k ? ", " : "",
                                  r->view.tracks[t].name);
    return buf;
}

/* The text report on stdout. SINGLE is the best single device's measured plan (NULL when not
 * measured). */
/* The experts of split MoE nodes: device, tokens routed to each (MOE), predicted and measured
 * time; nothing when the plan has none. */
static void print_moe_text(const profile_report *r, const profile_moe *moe)
{
    if (moe->error[0])
        printf("\nMoE experts: %s\n", moe->error);
    if (!moe->n)
        return;
    char a[64], b[64];
    printf("\n%-28s %-18s %8s %9s %9s\n", "MoE EXPERT", "DEVICE", "TOKENS", "PRED ms",
           "MEAS ms");
    for (size_t e = 0; e < moe->n; e++) {
        const profile_node *n = NULL;
        for (size_t i = 0; i < r->view.n_nodes && !n; i++)
            if (!r->view.nodes[i].is_copy && strcmp(r->view.nodes[i].name, moe->experts[e].node) == 0)
                n = &r->view.nodes[i];
        printf("%-28.28s %-18.18s %8ld %9s %9s\n", moe->experts[e].node, n ? n->device : "-",
               moe->experts[e].tokens, ms_text(n ? n->predicted_ms : NAN, a, sizeof a),
               ms_text(n ? n->measured_ms : NAN, b, sizeof b));
    }
    printf("(tokens: the router run once on these inputs on cpu:0)\n");
}

static void print_text(const profile_opts *o, const profile_report *r, const measured *m,
                       const measured *single, const profile_moe *moe)
{
    const loom_plan_summary *s = &r->summary;
    char a[64], b[64], devs[512];
    size_t nn = r->view.n_nodes;
    printf("== %s: %zu nodes on %s (policy %s), %d runs after %d warm-up ==\n", o->model, nn,
           used_devices(r, devs, sizeof devs),
           s->policy ? s->policy : o->policy ? o->policy : "default", m->runs, o->warmup);
    if (o->passes) {
        printf("%-15s %8s %8s %9s  %s\n", "STAGE", "NODES IN", "OUT", "ms", "WHAT IT DID");
        for (size_t i = 0; i < loom_plan_pass_count(m->plan); i++) {
            loom_pass_info pi = {.struct_size = sizeof pi};
            if (loom_plan_pass_info(m->plan, i, &pi) == LOOM_OK)
                printf("%-15s %8zu %8zu %9.3f  %s\n", pi.name, pi.nodes_before, pi.nodes_after,
                       pi.ms, pi.summary);
        }
        printf("\n");
    }
    printf("%-28s %-14s %-14s %-18s %9s %9s  %s\n", "NODE", "OP", "SHAPE", "DEVICE", "PRED ms",
           "MEAS ms", "DECIDED BY");
    size_t rows = o->all || nn <= DEFAULT_ROWS ? nn : DEFAULT_ROWS;
    for (size_t i = 0; i < rows; i++) {
        const profile_node *n = &r->view.nodes[i];
        printf("%-28.28s %-14.14s %-14.14s %-18.18s %9s %9s  %s\n", n->name, n->op,
               n->shape[0] ? n->shape : "-", n->device, ms_text(n->predicted_ms, a, sizeof a),
               ms_text(n->measured_ms, b, sizeof b), n->decided_by[0] ? n->decided_by : "-");
        if (n->fallback[0])
            printf("  ^ fallback: %s\n", n->fallback);
    }
    if (rows < nn)
        printf("... %zu more nodes (use --all, or --json for all)\n", nn - rows);
    print_moe_text(r, moe);

    double med = loom_percentile(m->latency_ms, m->runs, 0.5);
    printf("\n%-18s %9s %6s %6s %10s %10s %9s %9s\n", "DEVICE", "BUSY ms", "UTIL", "NODES",
           "BYTES IN", "BYTES OUT", "ERR med", "ERR p90");
    for (size_t k = 0; k < r->view.n_tracks; k++) {
        const track_figures *tf = &r->tracks[k];
        char bi[32], bo[32], e1[16], e2[16];
        printf("%-18.18s %9.4f %6s %6zu %10s %10s %9s %9s\n", r->view.tracks[k].name,
               tf->busy_ms, pct_text(med > 0 ? tf->busy_ms / med : NAN, a, sizeof a), tf->nodes,
               tool_bytes_text(tf->bytes_in, bi, sizeof bi), tool_bytes_text(tf->bytes_out, bo, sizeof bo),
               pct_text(tf->err_median, e1, sizeof e1), pct_text(tf->err_p90, e2, sizeof e2));
    }
    printf("\nlatency ms: median %.3f  p95 %.3f  p99 %.3f  min %.3f\n", med,
           loom_percentile(m->latency_ms, m->runs, 0.95),
           loom_percentile(m->latency_ms, m->runs, 0.99), m->latency_ms[0]);
    if (r->have_summary)
        printf("predicted %.3f ms, measured %.3f ms (median)", s->predicted_s * 1e3, med);
    else
        printf("no prediction from the plan");
    printf("; node prediction error: median %s, p90 %s over %zu nodes\n",
           pct_text(r->err_median, a, sizeof a), pct_text(r->err_p90, b, sizeof b),
           r->err_nodes);
    if (o->target_s > 0) {
        double t_ms = o->target_s * 1e3, margin = t_ms - med;
        printf("target %g ms: %s, margin %.3f ms (%.1f%%)", t_ms, med <= t_ms ? "met" : "MISSED",
               margin, 100.0 * margin / t_ms);
        if (r->have_summary)
            printf("; predicted %s", s->target_met ? "met" : "missed");
        printf("\n");
    }
    if (single && single->runs) {
        double sm = loom_percentile(single->latency_ms, single->runs, 0.5);
        printf("placed plan %.3f ms vs best single device %s %.3f ms (%.2f\xc3\x97)", med,
               s->best_single_device, sm, med > 0 ? sm / med : NAN);
        printf("; predicted %.3f vs %.3f ms\n", s->predicted_s * 1e3, s->best_single_s * 1e3);
    } else if (r->have_summary && s->best_single_device) {
        printf("best single device (predicted): %s %.3f ms vs placed %.3f ms\n",
               s->best_single_device, s->best_single_s * 1e3, s->predicted_s * 1e3);
    }
    double peak = (double)loom_plan_peak_bytes(m->plan);
    double unshared = (double)loom_plan_unshared_bytes(m->plan);
    printf("intermediate memory: peak %.2f MiB with reuse, %.2f MiB without (%.0f%%)\n",
           peak / 1048576.0, unshared / 1048576.0, unshared > 0 ? 100.0 * peak / unshared : 0);
    if (r->have_summary)
        printf("placement: %zu copies, %.2f ms to place; predicted energy %.4g J\n",
               s->n_copies, s->placement_ms, s->predicted_energy_j);
    if (m->replanned)
        printf("learning: placed again %d time(s) from the measured times of %d warm-up runs "
               "each: predicted %.3f ms -> %.3f ms, %zu node move(s)\n",
               m->replanned, o->warmup, m->first_predicted_s * 1e3,
               r->have_summary ? s->predicted_s * 1e3 : 0, m->moved);
    if (m->fallbacks)
        printf("fallbacks: %zu node runs moved to another device after a failure\n",
               m->fallbacks);
    for (size_t i = rows; i < nn; i++) /* those the table did not show */
        if (r->view.nodes[i].fallback[0])
            printf("  node '%s' (%s) %s\n", r->view.nodes[i].name, r->view.nodes[i].op,
                   r->view.nodes[i].fallback);
}

/* A finite number as JSON, anything else as null. */
static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* A string as JSON, NULL as null. */
static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* {"median", "p90", "nodes"} of a relative prediction error. */
static json_t *jerror(double med, double p90, size_t n)
{
    json_t *e = json_object();
    json_object_set_new(e, "median", jnum(med));
    json_object_set_new(e, "p90", jnum(p90));
    json_object_set_new(e, "nodes", json_integer((json_int_t)n));
    return e;
}

/* The JSON node record of node I (docs/profile.md, "nodes"). */
static json_t *json_node(const profile_report *r, const loom_runtime *rt,
                         const tool_fallbacks *m_fbs, size_t i)
{
    const profile_node *n = &r->view.nodes[i];
    const loom_node_explain *ex = &r->explain[i];
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer((json_int_t)i));
    json_object_set_new(o, "name", json_string(n->name));
    json_object_set_new(o, "op", json_string(n->op));
    json_object_set_new(o, "shape", json_string(n->shape));
    json_object_set_new(o, "device", json_string(n->device));
    json_object_set_new(o, "copy", json_boolean(n->is_copy));
    json_object_set_new(o, "predicted_ms", jnum(n->predicted_ms));
    json_object_set_new(o, "measured_ms", jnum(n->measured_ms));
    json_object_set_new(o, "decided_by", json_string(n->decided_by));
    json_object_set_new(o, "reason", json_string(n->reason));
    const tool_fallback *fb = NULL; /* the first time it ran elsewhere, if it ever did */
    for (size_t k = 0; k < m_fbs->n && !fb; k++)
        if (m_fbs->items[k].info.node == i)
            fb = &m_fbs->items[k];
    if (fb) {
        char from[64] = "?", to[64] = "?";
        loom_runtime_device(rt, fb->info.failed_device, from, sizeof from, NULL);
        loom_runtime_device(rt, fb->info.ran_device, to, sizeof to, NULL);
        json_object_set_new(o, "fallback",
                            json_pack("{s:s, s:s, s:s, s:s, s:I}", "failed_device", from,
                                      "ran_device", to, "status", loom_status_name(fb->info.status),
                                      "message", fb->info.message, "runs",
                                      (json_int_t)fb->runs));
    } else {
        json_object_set_new(o, "fallback", json_null());
    }
    int have = r->explained[i];
    json_object_set_new(o, "cost_source", jstr(have ? ex->cost_source : NULL));
    json_object_set_new(o, "predicted_start_ms", have ? jnum(ex->start_s * 1e3) : json_null());
    json_object_set_new(o, "predicted_finish_ms", have ? jnum(ex->finish_s * 1e3) : json_null());
    json_object_set_new(o, "bytes_in_moved", have ? jnum(ex->bytes_in_moved) : json_null());
    json_object_set_new(o, "transfer_in_ms", have ? jnum(ex->transfer_in_s * 1e3) : json_null());
    json_object_set_new(o, "bytes_kept_local", have ? jnum(ex->bytes_kept_local) : json_null());
    json_t *costs = json_object();
    for (size_t d = 0; have && ex->cost_s && d < ex->cost_count; d++) {
        char id[64];
        if (loom_runtime_device(rt, d, id, sizeof id, NULL) == LOOM_OK)
            json_object_set_new(costs, id, jnum(ex->cost_s[d] * 1e3));
    }
    json_object_set_new(o, "cost_ms", costs);
    return o;
}

/* The whole JSON report (docs/profile.md) on stdout. */
static void print_json(const profile_opts *o, const profile_report *r, const loom_runtime *rt,
                       const measured *m, const measured *single, const profile_moe *moe)
{
    const loom_plan_summary *s = &r->summary;
    double med = loom_percentile(m->latency_ms, m->runs, 0.5);
    json_t *root = json_object();
    json_object_set_new(root, "model", json_string(o->model));
    json_object_set_new(root, "policy", jstr(s->policy ? s->policy
                                             : o->policy ? o->policy : "default"));
    json_object_set_new(root, "device", jstr(o->device));
    json_object_set_new(root, "precision", json_string(o->precision_name));
    json_object_set_new(root, "strict", json_boolean(o->strict));
    json_t *pins = json_array();
    for (size_t i = 0; i < o->n_pins; i++)
        json_array_append_new(pins, json_string(o->pins[i]));
    json_object_set_new(root, "pins", pins);
    json_object_set_new(root, "runs", json_integer(m->runs));
    json_object_set_new(root, "warmup", json_integer(o->warmup));
    json_t *nodes = json_array();
    for (size_t i = 0; i < r->view.n_nodes; i++)
        json_array_append_new(nodes, json_node(r, rt, &m->fbs, i));
    json_object_set_new(root, "nodes", nodes);
    if (moe->n || moe->error[0]) { /* experts of split MoE nodes: tokens routed to each */
        json_t *ex = json_array();
        for (size_t e = 0; e < moe->n; e++) {
            json_t *j = json_object();
            json_object_set_new(j, "node", json_string(moe->experts[e].node));
            json_object_set_new(j, "tokens", json_integer(moe->experts[e].tokens));
            for (size_t i = 0; i < r->view.n_nodes; i++) {
                const profile_node *n = &r->view.nodes[i];
                if (n->is_copy || strcmp(n->name, moe->experts[e].node) != 0)
                    continue;
                json_object_set_new(j, "device", json_string(n->device));
                json_object_set_new(j, "predicted_ms", jnum(n->predicted_ms));
                json_object_set_new(j, "measured_ms", jnum(n->measured_ms));
                break;
            }
            json_array_append_new(ex, j);
        }
        json_object_set_new(root, "moe_experts", ex);
        if (moe->error[0])
            json_object_set_new(root, "moe_experts_error", json_string(moe->error));
    }
    json_t *devs = json_array();
    for (size_t k = 0; k < r->view.n_tracks; k++) {
        const track_figures *tf = &r->tracks[k];
        json_t *d = json_object();
        json_object_set_new(d, "id", json_string(r->view.tracks[k].name));
        json_object_set_new(d, "link", json_boolean(r->view.tracks[k].is_link));
        json_object_set_new(d, "busy_ms", jnum(tf->busy_ms));
        json_object_set_new(d, "utilisation", med > 0 ? jnum(tf->busy_ms / med) : json_null());
        json_object_set_new(d, "nodes", json_integer((json_int_t)tf->nodes));
        json_object_set_new(d, "bytes_in", jnum(tf->bytes_in));
        json_object_set_new(d, "bytes_out", jnum(tf->bytes_out));
        json_object_set_new(d, "prediction_error",
                            jerror(tf->err_median, tf->err_p90, tf->err_nodes));
        json_array_append_new(devs, d);
    }
    json_object_set_new(root, "devices", devs);
    json_object_set_new(root, "latency_ms",
                        json_pack("{s:f, s:f, s:f, s:f}", "median", med, "p95",
                                  loom_percentile(m->latency_ms, m->runs, 0.95), "p99",
                                  loom_percentile(m->latency_ms, m->runs, 0.99), "min",
                                  m->latency_ms[0]));
    json_object_set_new(root, "predicted_latency_ms",
                        r->have_summary ? jnum(s->predicted_s * 1e3) : json_null());
    json_object_set_new(root, "prediction_error", jerror(r->err_median, r->err_p90, r->err_nodes));
    if (o->target_s > 0) {
        double t_ms = o->target_s * 1e3;
        json_t *t = json_object();
        json_object_set_new(t, "latency_ms", json_real(t_ms));
        json_object_set_new(t, "met", json_boolean(med <= t_ms));
        json_object_set_new(t, "margin_ms", json_real(t_ms - med));
        json_object_set_new(t, "margin_pct", json_real(100.0 * (t_ms - med) / t_ms));
        json_object_set_new(t, "predicted_met",
                            r->have_summary ? json_boolean(s->target_met) : json_null());
        json_object_set_new(root, "target", t);
    } else {
        json_object_set_new(root, "target", json_null());
    }
    if (r->have_summary && s->best_single_device) {
        json_t *b = json_object();
        double sm = single && single->runs ? loom_percentile(single->latency_ms, single->runs, 0.5)
                                           : NAN;
        json_object_set_new(b, "device", json_string(s->best_single_device));
        json_object_set_new(b, "predicted_ms", jnum(s->best_single_s * 1e3));
        json_object_set_new(b, "measured_ms", jnum(sm));
        json_object_set_new(b, "speedup", med > 0 ? jnum(sm / med) : json_null());
        json_object_set_new(b, "predicted_speedup",
                            s->predicted_s > 0 ? jnum(s->best_single_s / s->predicted_s)
                                               : json_null());
        json_object_set_new(root, "best_single_device", b);
    } else {
        json_object_set_new(root, "best_single_device", json_null());
    }
    json_t *plan = json_object();
    json_object_set_new(plan, "policy", jstr(s->policy));
    json_object_set_new(plan, "predicted_ms", r->have_summary ? jnum(s->predicted_s * 1e3)
                                                              : json_null());
    json_object_set_new(plan, "heft_predicted_ms",
                        r->have_summary ? jnum(s->heft_predicted_s * 1e3) : json_null());
    json_object_set_new(plan, "predicted_energy_j",
                        r->have_summary ? jnum(s->predicted_energy_j) : json_null());
    json_object_set_new(plan, "copies", json_integer((json_int_t)s->n_copies));
    json_object_set_new(plan, "placement_ms",
                        r->have_summary ? jnum(s->placement_ms) : json_null());
    json_object_set_new(plan, "replanned", json_integer(m->replanned));
    json_t *stages = json_array();
    for (size_t i = 0; i < loom_plan_pass_count(m->plan); i++) {
        loom_pass_info pi = {.struct_size = sizeof pi};
        if (loom_plan_pass_info(m->plan, i, &pi) != LOOM_OK)
            continue;
        json_t *st = json_object();
        json_object_set_new(st, "name", json_string(pi.name));
        json_object_set_new(st, "nodes_before", json_integer((json_int_t)pi.nodes_before));
        json_object_set_new(st, "nodes_after", json_integer((json_int_t)pi.nodes_after));
        json_object_set_new(st, "ms", jnum(pi.ms));
        json_object_set_new(st, "summary", json_string(pi.summary));
        json_array_append_new(stages, st);
    }
    json_object_set_new(plan, "passes", stages);
    json_object_set_new(plan, "first_predicted_ms",
                        m->replanned ? jnum(m->first_predicted_s * 1e3) : json_null());
    json_object_set_new(plan, "nodes_moved", json_integer((json_int_t)m->moved));
    json_object_set_new(root, "plan", plan);
    json_object_set_new(root, "memory",
                        json_pack("{s:I, s:I}", "peak_bytes",
                                  (json_int_t)loom_plan_peak_bytes(m->plan), "unshared_bytes",
                                  (json_int_t)loom_plan_unshared_bytes(m->plan)));
    json_object_set_new(root, "fallbacks", json_integer((json_int_t)m->fallbacks));
    char *text = json_dumps(root, JSON_INDENT(2));
    if (text)
        puts(text);
    free(text);
    json_decref(root);
}

/* Write the files asked for, each whole or not at all. Returns 0, or the exit status after a
 * message naming the file that could not be written (2 for a path at fault, 1 for a failure
 * while writing: docs/run.md). */
static int write_files(const profile_opts *o, const profile_view *view)
{
    static const char *const what[] = {"trace", "Gantt chart", "graph"};
    static const char *const hint[] = {"open it in https://ui.perfetto.dev or chrome://tracing",
                                       "open it in a web browser",
                                       "render it with dot -Tsvg"};
    const char *paths[] = {o->trace, o->gantt, o->dot};
    for (int k = 0; k < 3; k++) {
        if (!paths[k])
            continue;
        int ok = k == 0 ? loom_trace_write(paths[k], view)
               : k == 1 ? loom_gantt_write(paths[k], view)
                        : loom_dot_write(paths[k], view);
        if (!ok) {
            int e = errno;
            say("cannot write %s '%s': %s", what[k], paths[k], tool_out_error_text(e));
            return tool_write_exit_status(e);
        }
        if (!o->json)
            printf("%s written to %s (%s)\n", what[k], paths[k], hint[k]);
    }
    return 0;
}

/* The best single device's plan, measured like the placed one; *SINGLE stays empty when there
 * is nothing to compare (--device, no summary) or its plan fails (not fatal: said on stderr
 * unless JSON is printed, where measured_ms is then null). */
static void measure_single(const profile_opts *o, loom_runtime *rt, const loom_graph *g,
                           const profile_report *r, loom_tensor **in, size_t n_in,
                           measured *single)
{
    *single = (measured){0};
    if (o->device || !r->have_summary || !r->summary.best_single_device)
        return;
    loom_plan_options po = {.struct_size = sizeof po, .device = r->summary.best_single_device,
                            .precision = o->precision, .budget_s = o->budget_s};
    if (measure(rt, g, &po, in, n_in, o->warmup, o->repeat, single) != 0)
        *single = (measured){0};
}

/* A progress bar on stderr (only on a terminal). */
static void progress_bar(void *user, const char *label, double fraction)
{
    (void)user;
    int width = 30, done = (int)(fraction * width + 0.5);
    fprintf(stderr, "\r  [%.*s%*s] %3.0f%% %-40.40s", done, "##############################",
            width - done, "", fraction * 100, label);
    if (fraction >= 1)
        fputc('\n', stderr);
    fflush(stderr);
}

/* Measure the devices that have no profile in the cache yet (quick), so that predictions rest
 * on this machine's figures. Returns 0 or the exit status after a message. */
static int calibrate_missing(loom_runtime *rt, const profile_opts *o)
{
    int tty = isatty(STDERR_FILENO);
    if (tty && !o->json)
        fprintf(stderr, "calibrating devices without a profile (quick; --no-calibrate skips)\n");
    size_t n = 0;
    if (loom_runtime_calibrate(rt, NULL, 1, 1, tty ? progress_bar : NULL, NULL, &n) != LOOM_OK) {
        say("calibrating: %s", loom_last_error());
        return EXIT_RUNTIME;
    }
    if (n && !o->json && !tty)
        fprintf(stderr, "calibrated %zu device(s) (quick)\n", n);
    return 0;
}

/* Free what O owns (not the strings it borrows from argv). */
static void free_opts(profile_opts *o)
{
    free(o->pins);
    for (size_t i = 0; i < o->n_dims; i++)
        free((char *)o->dims[i].name);
    free(o->dims);
    for (size_t i = 0; i < o->n_shapes; i++)
        free(o->shapes[i].input);
    free(o->shapes);
}

int cmd_profile(int argc, char **argv)
{
    profile_opts o = {.model = "mlp", .repeat = 20, .warmup = 3, .precision_name = "f32"};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) {
        free_opts(&o);
        return rc;
    }
    loom_runtime *rt = NULL;
    loom_graph *g = NULL;
    loom_tensor **in = NULL;
    size_t n_in = 0;
    measured m = {0}, single = {0};
    profile_report r = {0};
    int have_report = 0;
    loom_status rst = tool_runtime_create(NULL, &rt);
    if (rst != LOOM_OK) {
        say("cannot start: %s", loom_last_error());
        free_opts(&o);
        return tool_runtime_exit_status(rst);
    }
    rc = build_model(rt, &o, &g);
    if (!rc)
        rc = check_placement_args(&o, rt, g);
    const char *no_cal = getenv("LOOM_NO_CALIBRATE");
    if (!rc && !o.no_calibrate && !(no_cal && *no_cal && strcmp(no_cal, "0")))
        rc = calibrate_missing(rt, &o);
    if (!rc) {
        n_in = loom_graph_input_count(g);
        in = calloc(n_in + 1, sizeof *in);
        if (!in) {
            say("out of memory");
            rc = EXIT_RUNTIME;
        }
        for (size_t i = 0; !rc && i < n_in; i++) {
            loom_dtype dt;
            uint32_t rank;
            int64_t dims[LOOM_MAX_RANK];
            loom_value_info(g, loom_graph_input(g, i), &dt, &rank, dims);
            if (loom_tensor_create(dt, rank, dims, &in[i]) != LOOM_OK) {
                say("input '%s': %s", loom_value_name(g, loom_graph_input(g, i)),
                    loom_last_error());
                rc = EXIT_RUNTIME;
            }
        }
        if (!rc)
            fill_inputs(in, n_in);
    }
    if (!rc) {
        loom_plan_options po = {
            .struct_size = sizeof po, .device = o.device, .strict = o.strict,
            .precision = o.precision,
            .policy = o.policy && strcmp(o.policy, "default") ? o.policy : NULL,
            .target_latency_s = o.target_s, .pins = o.pins, .n_pins = o.n_pins,
            .budget_s = o.budget_s, .learn = !o.no_learn};
        rc = measure(rt, g, &po, in, n_in, o.warmup, o.repeat, &m);
    }
    if (!rc) {
        rc = make_report(&r, rt, g, &m, &o);
        have_report = !rc;
    }
    if (!rc) {
        measure_single(&o, rt, g, &r, in, n_in, &single);
        profile_moe moe;
        profile_moe_tokens(rt, g, m.plan, in, n_in, &moe);
        if (o.json)
            print_json(&o, &r, rt, &m, &single, &moe);
        else
            print_text(&o, &r, &m, &single, &moe);
        profile_moe_free(&moe);
        rc = write_files(&o, &r.view);
    }
    if (have_report)
        report_free(&r);
    measured_free(&single);
    measured_free(&m);
    for (size_t i = 0; in && i < n_in; i++)
        loom_tensor_destroy(in[i]);
    free(in);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    free_opts(&o);
    return rc;
}
