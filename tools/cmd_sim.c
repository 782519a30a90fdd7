/*
 * `loom sim`: place an abstract DAG instance (DESIGN.md, "Abstract DAG instances"; docs/sim.md)
 * with a placement policy and report its makespan against HEFT's; -o writes the schedule.
 * The instance is validated strictly: every error is one line naming the culprit, exit status 2.
 */
#include <jansson.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "scheduler/place/place.h"
#include "tool_util.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char sim_help[] =
    "usage: loom sim INSTANCE.json [--policy P] [--budget S] [--target-latency S]\n"
    "                [-o SCHEDULE.json] [--json]\n"
    "\n"
    "Place an abstract DAG instance (tasks with a cost per device, edges carrying bytes, links\n"
    "with latency and bandwidth; docs/sim.md) and report the makespan, HEFT's makespan on the\n"
    "same instance and their ratio, the schedules evaluated and the time taken.\n"
    "\n"
    "  --policy P          default (or loom): portfolio + local search, exact when tiny;\n"
    "                      heft, peft, exact (branch and bound), first (first device)\n"
    "  --budget S          seconds of search (default 0.5; exact: 10); list policies ignore it\n"
    "  --target-latency S  minimise energy with makespan <= S (overrides the instance's)\n"
    "  -o FILE             write {\"makespan\": s, \"schedule\": [{\"task\", \"device\", \"start\",\n"
    "                      \"finish\"}, ...]} (by start time)\n"
    "  --json              print the report as one JSON object\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 bad usage or an invalid instance (one line on\n"
    "stderr naming the culprit).\n";

/* The instance as place_problem wants it, plus the names it came with. Everything is owned here. */
typedef struct sim_instance {
    place_problem p;
    uint32_t n, nd, ne;
    char **task_id, **dev_name;
    double *cost, *bandwidth, *latency, *edge_bytes, *output_bytes, *capacity, *power;
    uint32_t *edge_from, *edge_to;
    int32_t *pin;
} sim_instance;

static void instance_free(sim_instance *in)
{
    if (in->task_id)
        for (uint32_t i = 0; i < in->n; i++)
            free(in->task_id[i]);
    if (in->dev_name)
        for (uint32_t i = 0; i < in->nd; i++)
            free(in->dev_name[i]);
    free(in->task_id), free(in->dev_name), free(in->cost), free(in->bandwidth);
    free(in->latency), free(in->edge_bytes), free(in->output_bytes), free(in->capacity);
    free(in->power), free(in->edge_from), free(in->edge_to), free(in->pin);
    memset(in, 0, sizeof *in);
}

/* printf one line into ERR; returns 0 (for `return bad(...)`). */
static int bad(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return 0;
}

/* Whether V is a JSON number (integer or real); its value into *OUT. */
static int number(const json_t *v, double *out)
{
    if (!json_is_number(v))
        return 0;
    *out = json_number_value(v);
    return 1;
}

/* Index of the task named ID, or -1 (linear in tasks only for messages; lookups use a sorted
 * index built once). */
typedef struct name_ix {
    const char *name;
    uint32_t index;
} name_ix;

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

static int64_t lookup(const name_ix *ix, uint32_t n, const char *name)
{
    name_ix k = {name, 0};
    const name_ix *f = bsearch(&k, ix, n, sizeof *ix, cmp_name);
    return f ? (int64_t)f->index : -1;
}

/* Read an NDxND matrix KEY of ROOT into OUT; off-diagonal entries must be numbers, checked by
 * POSITIVE (> 0) or non-negative; the diagonal is unused and may be null. */
static int read_matrix(json_t *root, const char *key, uint32_t nd, int positive, double *out,
                       char **names, char *err, size_t len)
{
    json_t *m = json_object_get(root, key);
    if (!m)
        return bad(err, len, "missing key '%s'", key);
    if (!json_is_array(m) || json_array_size(m) != nd)
        return bad(err, len, "'%s' must be an array of %u rows (one per device), not %zu", key,
                   nd, json_is_array(m) ? json_array_size(m) : (size_t)0);
    for (uint32_t i = 0; i < nd; i++) {
        json_t *row = json_array_get(m, i);
        if (!json_is_array(row) || json_array_size(row) != nd)
            return bad(err, len, "'%s' row %u (device '%s') must have %u entries, not %zu", key,
                       i, names[i], nd, json_is_array(row) ? json_array_size(row) : (size_t)0);
        for (uint32_t j = 0; j < nd; j++) {
            json_t *v = json_array_get(row, j);
            double x = 0.0;
            if (i == j) {
                if (!json_is_null(v) && !number(v, &x))
                    return bad(err, len, "'%s'[%u][%u]: not a number or null", key, i, j);
                out[(size_t)i * nd + j] = 0.0;
                continue;
            }
            if (!number(v, &x))
                return bad(err, len, "'%s' from '%s' to '%s': not a number", key, names[i],
                           names[j]);
            if (positive ? !(x > 0.0) : !(x >= 0.0))
                return bad(err, len, "'%s' from '%s' to '%s' is %g: must be %s", key, names[i],
                           names[j], x, positive ? "> 0" : ">= 0");
            out[(size_t)i * nd + j] = x;
        }
    }
    return 1;
}

/* Whether every sum a schedule can form stays finite: each number may be finite and yet a sum
 * of them overflow to infinity (costs of 1e308 s), and an infinite makespan or memory total
 * then reads as "nothing fits". A bound on all of them: the tasks run one after another, each
 * on its slowest device, and every edge crosses its slowest link; the same for energy and for
 * the bytes kept in memory. Returns 1, or 0 with ERR naming the task or edge that overflows. */
static int check_magnitudes(const sim_instance *in, int any_power, char *err, size_t len)
{
    uint32_t nd = in->nd;
    double time = 0.0, energy = 0.0, bytes = 0.0;
    for (uint32_t t = 0; t < in->n; t++) {
        for (uint32_t d = 0; d < nd; d++) {
            double c = in->cost[(size_t)t * nd + d];
            if (!isfinite(c))
                continue; /* null: cannot run there */
            if (!isfinite(time + c))
                return bad(err, len, "task '%s': cost %g s on '%s' makes the tasks' total time "
                           "overflow (not a finite number of seconds)", in->task_id[t], c,
                           in->dev_name[d]);
            if (any_power && !isfinite(energy + in->power[d] * c))
                return bad(err, len, "task '%s': cost %g s on '%s' at power %g W makes the "
                           "total energy overflow", in->task_id[t], c, in->dev_name[d],
                           in->power[d]);
        }
        double worst = 0.0, worst_e = 0.0;
        for (uint32_t d = 0; d < nd; d++) {
            double c = in->cost[(size_t)t * nd + d];
            if (isfinite(c)) {
                worst = c > worst ? c : worst;
                double e = any_power ? in->power[d] * c : 0.0;
                worst_e = e > worst_e ? e : worst_e;
            }
        }
        time += worst;
        energy += worst_e;
        if (!isfinite(time) || !isfinite(energy))
            return bad(err, len, "task '%s': its cost makes the tasks' total %s overflow (not "
                       "a finite number)", in->task_id[t], isfinite(time) ? "energy" : "time");
        bytes += in->output_bytes[t];
        if (!isfinite(bytes))
            return bad(err, len, "task '%s': output_bytes %g makes the total memory overflow",
                       in->task_id[t], in->output_bytes[t]);
    }
    for (uint32_t e = 0; e < in->ne; e++) {
        double worst = 0.0;
        for (uint32_t i = 0; i < nd; i++)
            for (uint32_t j = 0; j < nd; j++) {
                if (i == j)
                    continue;
                double x = in->latency[(size_t)i * nd + j] +
                           in->edge_bytes[e] / in->bandwidth[(size_t)i * nd + j];
                if (!isfinite(x) || !isfinite(time + x))
                    return bad(err, len, "edge %u ('%s' to '%s'): %g bytes from '%s' to '%s' "
                               "take %s", e, in->task_id[in->edge_from[e]],
                               in->task_id[in->edge_to[e]], in->edge_bytes[e], in->dev_name[i],
                               in->dev_name[j], isfinite(x) ? "a time that makes the total "
                               "overflow" : "longer than a finite number of seconds");
                worst = x > worst ? x : worst;
            }
        time += worst;
    }
    return 1;
}

/* Parse and check ROOT into IN. Returns 1, or 0 with ERR set. */
static int parse_instance(json_t *root, sim_instance *in, char *err, size_t len)
{
    if (!json_is_object(root))
        return bad(err, len, "the instance must be a JSON object");
    static const char *const keys[] = {"devices", "bandwidth", "latency", "tasks", "edges"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
        if (!json_object_get(root, keys[k]))
            return bad(err, len, "missing key '%s'", keys[k]);
    json_t *devs = json_object_get(root, "devices"), *tasks = json_object_get(root, "tasks");
    json_t *edges = json_object_get(root, "edges");
    if (!json_is_array(devs) || json_array_size(devs) == 0)
        return bad(err, len, "'devices' must be a non-empty array");
    if (!json_is_array(tasks))
        return bad(err, len, "'tasks' must be an array");
    if (!json_is_array(edges))
        return bad(err, len, "'edges' must be an array");
    if (json_array_size(devs) > 255 || json_array_size(tasks) > UINT32_MAX / 4 ||
        json_array_size(edges) > UINT32_MAX / 4)
        return bad(err, len, "too many devices, tasks or edges");
    uint32_t nd = (uint32_t)json_array_size(devs), n = (uint32_t)json_array_size(tasks);
    uint32_t ne = (uint32_t)json_array_size(edges);
    in->nd = nd, in->n = n, in->ne = ne;
    size_t nn = (size_t)n + 1, nee = (size_t)ne + 1;
    in->dev_name = calloc(nd, sizeof *in->dev_name);
    in->task_id = calloc(nn, sizeof *in->task_id);
    in->cost = malloc(nn * nd * sizeof *in->cost);
    in->bandwidth = malloc((size_t)nd * nd * sizeof *in->bandwidth);
    in->latency = malloc((size_t)nd * nd * sizeof *in->latency);
    in->edge_bytes = malloc(nee * sizeof *in->edge_bytes);
    in->edge_from = malloc(nee * sizeof *in->edge_from);
    in->edge_to = malloc(nee * sizeof *in->edge_to);
    in->output_bytes = calloc(nn, sizeof *in->output_bytes);
    in->capacity = calloc(nd, sizeof *in->capacity);
    in->power = malloc((size_t)nd * sizeof *in->power);
    in->pin = malloc(nn * sizeof *in->pin);
    name_ix *ix = malloc(nn * sizeof *ix), *dix = malloc((size_t)nd * sizeof *dix);
    int ok = 0, any_out = 0, any_cap = 0, any_pin = 0, any_power = 0;
    if (!in->dev_name || !in->task_id || !in->cost || !in->bandwidth || !in->latency ||
        !in->edge_bytes || !in->edge_from || !in->edge_to || !in->output_bytes ||
        !in->capacity || !in->power || !in->pin || !ix || !dix) {
        bad(err, len, "out of memory");
        goto done;
    }
    for (uint32_t d = 0; d < nd; d++) {
        json_t *dv = json_array_get(devs, d), *name = json_object_get(dv, "name");
        if (!json_is_object(dv) || !json_is_string(name)) {
            bad(err, len, "device %u: missing 'name' (a string)", d);
            goto done;
        }
        in->dev_name[d] = strdup(json_string_value(name));
        if (!in->dev_name[d]) {
            bad(err, len, "out of memory");
            goto done;
        }
        dix[d] = (name_ix){in->dev_name[d], d};
        json_t *v;
        double x;
        in->power[d] = 1.0;
        if ((v = json_object_get(dv, "capacity"))) {
            if (!number(v, &x) || !(x >= 0.0)) {
                bad(err, len, "device '%s': capacity must be a number >= 0", in->dev_name[d]);
                goto done;
            }
            in->capacity[d] = x, any_cap = 1;
        }
        if ((v = json_object_get(dv, "power"))) {
            if (!number(v, &x) || !(x >= 0.0)) {
                bad(err, len, "device '%s': power must be a number >= 0", in->dev_name[d]);
                goto done;
            }
            in->power[d] = x, any_power = 1;
        }
    }
    qsort(dix, nd, sizeof *dix, cmp_name);
    for (uint32_t d = 1; d < nd; d++)
        if (!strcmp(dix[d - 1].name, dix[d].name)) {
            bad(err, len, "duplicate device name '%s'", dix[d].name);
            goto done;
        }
    if (!read_matrix(root, "bandwidth", nd, 1, in->bandwidth, in->dev_name, err, len) ||
        !read_matrix(root, "latency", nd, 0, in->latency, in->dev_name, err, len))
        goto done;
    for (uint32_t t = 0; t < n; t++) {
        json_t *tv = json_array_get(tasks, t), *id = json_object_get(tv, "id");
        if (!json_is_object(tv) || !json_is_string(id)) {
            bad(err, len, "task %u: missing 'id' (a string)", t);
            goto done;
        }
        const char *name = json_string_value(id);
        in->task_id[t] = strdup(name);
        if (!in->task_id[t]) {
            bad(err, len, "out of memory");
            goto done;
        }
        ix[t] = (name_ix){in->task_id[t], t};
        json_t *cost = json_object_get(tv, "cost");
        if (!cost) {
            bad(err, len, "task '%s': missing key 'cost'", name);
            goto done;
        }
        if (!json_is_array(cost) || json_array_size(cost) != nd) {
            bad(err, len, "task '%s': 'cost' must have %u entries (one per device), not %zu",
                name, nd, json_is_array(cost) ? json_array_size(cost) : (size_t)0);
            goto done;
        }
        int any = 0;
        for (uint32_t d = 0; d < nd; d++) {
            json_t *v = json_array_get(cost, d);
            double x;
            if (json_is_null(v)) {
                in->cost[(size_t)t * nd + d] = INFINITY;
                continue;
            }
            if (!number(v, &x) || !isfinite(x)) {
                bad(err, len, "task '%s': cost on '%s' is not a number or null", name,
                    in->dev_name[d]);
                goto done;
            }
            if (x < 0.0) {
                bad(err, len, "task '%s': negative cost %g on '%s'", name, x, in->dev_name[d]);
                goto done;
            }
            in->cost[(size_t)t * nd + d] = x;
            any = 1;
        }
        if (!any) {
            bad(err, len, "task '%s': no device can run it (every cost is null)", name);
            goto done;
        }
        json_t *v;
        double x;
        in->pin[t] = -1;
        if ((v = json_object_get(tv, "output_bytes"))) {
            if (!number(v, &x) || !(x >= 0.0)) {
                bad(err, len, "task '%s': output_bytes must be a number >= 0", name);
                goto done;
            }
            in->output_bytes[t] = x, any_out = 1;
        }
        if ((v = json_object_get(tv, "pin")) && !json_is_null(v)) {
            int64_t d = json_is_string(v) ? lookup(dix, nd, json_string_value(v)) : -1;
            if (d < 0) {
                bad(err, len, "task '%s': 'pin' names no device", name);
                goto done;
            }
            if (!isfinite(in->cost[(size_t)t * nd + d])) {
                bad(err, len, "task '%s': pinned to '%s', which cannot run it", name,
                    in->dev_name[d]);
                goto done;
            }
            in->pin[t] = (int32_t)d, any_pin = 1;
        }
    }
    qsort(ix, n, sizeof *ix, cmp_name);
    for (uint32_t t = 1; t < n; t++)
        if (!strcmp(ix[t - 1].name, ix[t].name)) {
            bad(err, len, "duplicate task id '%s'", ix[t].name);
            goto done;
        }
    for (uint32_t e = 0; e < ne; e++) {
        json_t *ev = json_array_get(edges, e);
        const char *what[2] = {"from", "to"};
        uint32_t *dst[2] = {&in->edge_from[e], &in->edge_to[e]};
        if (!json_is_object(ev)) {
            bad(err, len, "edge %u: not an object", e);
            goto done;
        }
        for (int k = 0; k < 2; k++) {
            json_t *v = json_object_get(ev, what[k]);
            if (!json_is_string(v)) {
                bad(err, len, "edge %u: missing '%s' (a task id)", e, what[k]);
                goto done;
            }
            int64_t t = lookup(ix, n, json_string_value(v));
            if (t < 0) {
                bad(err, len, "edge %u: unknown task '%s' in '%s'", e, json_string_value(v),
                    what[k]);
                goto done;
            }
            *dst[k] = (uint32_t)t;
        }
        json_t *b = json_object_get(ev, "bytes");
        double x;
        if (!b) {
            bad(err, len, "edge %u ('%s' to '%s'): missing key 'bytes'", e,
                in->task_id[in->edge_from[e]], in->task_id[in->edge_to[e]]);
            goto done;
        }
        if (!number(b, &x) || !isfinite(x) || x < 0.0) {
            bad(err, len, "edge %u ('%s' to '%s'): bytes must be a number >= 0", e,
                in->task_id[in->edge_from[e]], in->task_id[in->edge_to[e]]);
            goto done;
        }
        in->edge_bytes[e] = x;
    }
    if (!check_magnitudes(in, any_power, err, len))
        goto done;
    double target = 0.0;
    json_t *tl = json_object_get(root, "target_latency");
    if (tl && !json_is_null(tl) && (!number(tl, &target) || !(target >= 0.0))) {
        bad(err, len, "'target_latency' must be a number >= 0 (seconds)");
        goto done;
    }
    place_problem *p = &in->p;
    memset(p, 0, sizeof *p);
    p->n_tasks = n, p->n_devices = nd, p->n_edges = ne;
    p->cost = in->cost;
    p->edge_from = in->edge_from, p->edge_to = in->edge_to, p->edge_bytes = in->edge_bytes;
    p->bandwidth = in->bandwidth, p->latency = in->latency;
    p->pin = any_pin ? in->pin : NULL;
    p->output_bytes = any_out ? in->output_bytes : NULL;
    p->capacity = any_cap ? in->capacity : NULL;
    p->power = any_power ? in->power : NULL;
    p->target_latency = target;
    p->task_names = (const char *const *)in->task_id;
    p->device_names = (const char *const *)in->dev_name;
    /* What remains (cycles, a pin without a device): the library's own check, same names. */
    ok = place_validate(p, err, len) == LOOM_OK;
done:
    free(ix), free(dix);
    return ok;
}

/* Order of tasks in the written schedule: by start, then device, then index (qsort_r). */
static int cmp_start(const void *a, const void *b, void *ctx)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    const place_result *r = ctx;
    if (r->start[x] != r->start[y])
        return r->start[x] < r->start[y] ? -1 : 1;
    if (r->device[x] != r->device[y])
        return r->device[x] < r->device[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Write the schedule of R to PATH. Returns 0 on success. */
static int write_schedule(const char *path, const sim_instance *in, const place_result *r)
{
    uint32_t *ord = malloc(((size_t)in->n + 1) * sizeof *ord);
    json_t *root = json_object(), *list = json_array();
    int rc = -1;
    if (!ord || !root || !list)
        goto done;
    for (uint32_t t = 0; t < in->n; t++)
        ord[t] = t;
    qsort_r(ord, in->n, sizeof *ord, cmp_start, (void *)r);
    json_object_set_new(root, "makespan", json_real(r->makespan));
    for (uint32_t i = 0; i < in->n; i++) {
        uint32_t t = ord[i];
        json_t *e = json_object();
        json_object_set_new(e, "task", json_string(in->task_id[t]));
        json_object_set_new(e, "device", json_string(in->dev_name[r->device[t]]));
        json_object_set_new(e, "start", json_real(r->start[t]));
        json_object_set_new(e, "finish", json_real(r->finish[t]));
        json_array_append_new(list, e);
    }
    json_object_set(root, "schedule", list);
    /* Written whole or not at all (a temporary file renamed over PATH). */
    tool_out out;
    if (!tool_out_open(&out, path))
        goto done;
    errno = 0;
    if (json_dumpf(root, out.f, JSON_REAL_PRECISION(17)) != 0) {
        if (!errno)
            errno = EIO;
        tool_out_abort(&out);
        goto done;
    }
    rc = tool_out_commit(&out) ? 0 : -1;
done:;
    int e = errno;
    json_decref(list);
    json_decref(root);
    free(ord);
    errno = e;
    return rc;
}

/* Parse a non-negative number of seconds. */
static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.0) || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

int cmd_sim(int argc, char **argv)
{
    const char *path = NULL, *out = NULL, *policy_name = "default";
    double budget = 0.0, target = -1.0;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(sim_help, stdout);
            return 0;
        }
        int has_value = !strcmp(a, "--policy") || !strcmp(a, "--budget") || !strcmp(a, "-o") ||
                        !strcmp(a, "--target-latency");
        /* "-o --json" must not write a file called "--json". */
        const char *v = has_value ? tool_option_value(argc, argv, &i) : NULL;
        if (has_value && !v) {
            fprintf(stderr, "loom sim: option %s needs a value (see 'loom sim --help')\n", a);
            return EXIT_USAGE;
        }
        if (!strcmp(a, "--policy")) {
            policy_name = v;
        } else if (!strcmp(a, "--budget")) {
            if (!parse_seconds(v, &budget) || budget <= 0.0) {
                fprintf(stderr, "loom sim: --budget '%s': not a positive number of seconds\n",
                        argv[i]);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--target-latency")) {
            if (!parse_seconds(v, &target)) {
                fprintf(stderr, "loom sim: --target-latency '%s': not a number of seconds\n",
                        argv[i]);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "-o")) {
            out = v;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "loom sim: unknown argument '%s' (see 'loom sim --help')\n", a);
            return EXIT_USAGE;
        } else if (path) {
            fprintf(stderr, "loom sim: one instance only ('%s' and '%s')\n", path, a);
            return EXIT_USAGE;
        } else {
            path = a;
        }
    }
    if (!path) {
        fprintf(stderr, "loom sim: no instance given (see 'loom sim --help')\n");
        return EXIT_USAGE;
    }
    int policy = place_policy_from_name(policy_name);
    if (policy < 0) {
        fprintf(stderr,
                "loom sim: unknown policy '%s' (default, loom, heft, peft, exact, first)\n",
                policy_name);
        return EXIT_USAGE;
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (jerr.line < 0)
            fprintf(stderr, "loom sim: %s: %s\n", path, jerr.text);
        else
            fprintf(stderr, "loom sim: %s:%d:%d: not valid JSON: %s\n", path, jerr.line,
                    jerr.column, jerr.text);
        return EXIT_USAGE;
    }
    sim_instance in = {0};
    char err[512] = "";
    if (!parse_instance(root, &in, err, sizeof err)) {
        json_decref(root);
        fprintf(stderr, "loom sim: %s: %s\n", path, err);
        instance_free(&in);
        return EXIT_USAGE;
    }
    json_decref(root);
    if (target >= 0.0)
        in.p.target_latency = target;
    place_result r;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    loom_status st = place_place(&in.p, (place_policy)policy, budget, &r, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (st != LOOM_OK) {
        fprintf(stderr, "loom sim: %s: %s\n", path, err);
        instance_free(&in);
        return tool_exit_status(st, TOOL_PLANNING);
    }
    int rc = 0;
    if (out && write_schedule(out, &in, &r) != 0) {
        int e = errno;
        fprintf(stderr, "loom sim: cannot write '%s': %s\n", out, tool_out_error_text(e));
        rc = tool_write_exit_status(e);
    }
    double ratio = r.heft_makespan > 0.0 ? r.makespan / r.heft_makespan : 1.0;
    if (rc == 0 && json) {
        json_t *o = json_object();
        json_object_set_new(o, "instance", json_string(path));
        json_object_set_new(o, "policy", json_string(place_policy_name((place_policy)policy)));
        json_object_set_new(o, "tasks", json_integer(in.n));
        json_object_set_new(o, "edges", json_integer(in.ne));
        json_object_set_new(o, "devices", json_integer(in.nd));
        json_object_set_new(o, "makespan", json_real(r.makespan));
        json_object_set_new(o, "heft_makespan", json_real(r.heft_makespan));
        json_object_set_new(o, "ratio", json_real(ratio));
        json_object_set_new(o, "energy", json_real(r.energy));
        json_object_set_new(o, "target_latency", json_real(in.p.target_latency));
        json_object_set_new(o, "target_met", json_boolean(r.target_met));
        json_object_set_new(o, "proven_optimal", json_boolean(r.proven_optimal));
        json_object_set_new(o, "evaluations", json_integer((json_int_t)r.evaluations));
        json_object_set_new(o, "seconds", json_real(secs));
        char *s = json_dumps(o, JSON_REAL_PRECISION(17));
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else if (rc == 0) {
        printf("instance     %s: %u tasks, %u edges, %u devices\n", path, in.n, in.ne, in.nd);
        printf("policy       %s\n", place_policy_name((place_policy)policy));
        printf("makespan     %.9g s%s\n", r.makespan, r.proven_optimal ? " (optimal)" : "");
        printf("HEFT         %.9g s (ratio %.4f)\n", r.heft_makespan, ratio);
        if (in.p.target_latency > 0.0)
            printf("energy       %.9g J, target %.9g s %s\n", r.energy, in.p.target_latency,
                   r.target_met ? "met" : "NOT met");
        printf("evaluations  %llu\n", (unsigned long long)r.evaluations);
        printf("time         %.3f s\n", secs);
    }
    place_result_free(&r);
    instance_free(&in);
    return rc;
}
