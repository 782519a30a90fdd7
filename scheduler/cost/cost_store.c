/*
 * Persistence of the cost model: the cache folder, profiles.json and history.json.
 *
 *   profiles.json  {"version": 1, "profiles": {KEY: {"backend", "device", "calibrated": true,
 *                   "calibrated_at", "flops_f32", "flops_f16", "flops_int8", "mem_bandwidth",
 *                   "launch_s", "to_host_latency_s", "to_host_bandwidth",
 *                   "from_host_latency_s", "from_host_bandwidth", "power_w", "cache_bytes",
 *                   "class_column" (the flops column the class fits were measured in: 0 f32,
 *                   1 f16),
 *                   "fixed_s_<class>", "rate_<class>" for each op class (cost_op_class:
 *                   matmul, conv, binary, div, unary, transcendental, softmax, norm, reduce,
 *                   pool, copy, view; 0 or absent: not fitted)}}}
 *   history.json   {"version": 1, "history": {KEY: {SIGNATURE: {"samples": [s, ...],
 *                   "median": s, "t": unix time of the save that last updated it}}}}
 * KEY is the profile key (cost_profile_key: backend|device name|driver|t<threads>|the facts
 * that change a measurement's meaning|abi<version>|o<options hash>); samples are seconds, oldest
 * first, at most COST_HISTORY_KEEP. Only calibrated profiles are written: facts are re-read at
 * every start. A key holds at most COST_HISTORY_MAX_SIGS signatures: a save that would leave
 * more drops the least recently updated ("t"; none: oldest), so the file's size is bounded.
 *
 * Reading: profiles.json at every cost_model_open (small); history.json once per runtime and
 * then only when it changed on disk: the runtime keeps the parsed history as a shared snapshot
 * (cost_history_cache.c) under each model's own table.
 *
 * Saving merges: the file on disk is read again and only what this model changed is replaced,
 * so entries of devices absent from this run (a plugin not loaded) and of other processes
 * survive. Each file is written to a temporary file in the same folder, flushed, then renamed
 * over the old one, so a reader never sees half a file.
 *
 * Damage is said once, through runtime_message naming the file, and put aside so that it is
 * not said again at every start: a file that does not parse (garbage, a truncated file, NaN or
 * an overflowing number, another version) or a folder where the file should be is renamed to
 * NAME.bad-<UTC time> and ignored; entries of the wrong shape or with implausible figures
 * (negative, non-finite, a profile outside the bounds below, a sample beyond a day) are dropped
 * and the file rewritten without them.
 */
#include "cost_internal.h"

#include <jansson.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COST_FILE_VERSION 1

char *cost_default_cache_dir(const char *dir)
{
    char buf[4096];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (dir && dir[0])
        return strdup(dir);
    if (xdg && xdg[0] == '/')
        snprintf(buf, sizeof buf, "%s/loom", xdg);
    else if (home && home[0])
        snprintf(buf, sizeof buf, "%s/.cache/loom", home);
    else
        return NULL;
    return strdup(buf);
}

/* mkdir -p PATH (mode 0755 for what it creates). Returns 0 on success, else errno. */
static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return errno;
        buf[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

/* Move the damaged file (or folder) PATH aside to PATH.bad-<UTC time> so that it is reported
 * once, not at every start; the new name into MOVED, "" when it could not be moved. */
static void quarantine(const char *path, char *moved, size_t len)
{
    char when[32] = "0";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(moved, len, "%s.bad-%s", path, when);
    struct stat st;
    if (lstat(moved, &st) == 0 || rename(path, moved) != 0)
        moved[0] = '\0';
}

/* Why ROOT (NULL: did not parse, ERR says why) is not a JSON object of our version whose member
 * MEMBER is an object, into WHAT (LEN bytes) or a static string; NULL when it is one. */
static const char *root_problem(const json_t *root, const json_error_t *err, const char *member,
                                char *what, size_t len)
{
    if (!root) {
        snprintf(what, len, "line %d: %s", err->line, err->text);
        return what;
    }
    if (!json_is_object(root))
        return "not a JSON object";
    if (json_integer_value(json_object_get(root, "version")) != COST_FILE_VERSION)
        return "unknown version (expected 1)";
    if (!json_is_object(json_object_get(root, member))) {
        snprintf(what, len, "no \"%s\" object", member);
        return what;
    }
    return NULL;
}

/* Say that PATH is corrupt (WHY) and move it aside (quarantine). */
static void report_corrupt(cost_model *m, const char *path, const char *why)
{
    char moved[4300];
    quarantine(path, moved, sizeof moved);
    runtime_message(m->rt, "cost model: %s is corrupt (%s); %s%s", path, why,
                    moved[0] ? "moved to " : "ignored", moved);
}

/* Parse file NAME of the cache folder. Returns the root object (caller decrefs) or NULL when
 * the file is missing or, when QUIET is 0, with a message through runtime_message and the file
 * moved aside (quarantine), when it is not a JSON object of our version whose member MEMBER is
 * an object. */
static json_t *read_file(cost_model *m, const char *name, const char *member, int quiet)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", m->cache_dir, name);
    struct stat st;
    if (lstat(path, &st) != 0)
        return NULL;
    json_error_t err;
    json_t *root = S_ISREG(st.st_mode) ? json_load_file(path, 0, &err) : NULL;
    const char *why = NULL;
    char what[256];
    if (!S_ISREG(st.st_mode))
        why = S_ISDIR(st.st_mode) ? "a folder, not a file" : "not a regular file";
    else
        why = root_problem(root, &err, member, what, sizeof what);
    if (why) {
        if (!quiet)
            report_corrupt(m, path, why);
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Write ROOT to file NAME of the cache folder atomically (temporary file, then rename). */
static loom_status write_file(cost_model *m, const char *name, json_t *root)
{
    char path[4200], tmp[4300];
    int e = mkdir_p(m->cache_dir);
    if (e)
        return loom_set_error(LOOM_ERR_IO, "cost model: cannot create the cache folder %s: %s",
                              m->cache_dir, strerror(e));
    snprintf(path, sizeof path, "%s/%s", m->cache_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", m->cache_dir, name);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return loom_set_error(LOOM_ERR_IO, "cost model: cannot write %s: %s", path,
                              strerror(errno));
    FILE *f = fdopen(fd, "w");
    int ok = f != NULL;
    if (!f)
        close(fd);
    ok = ok && json_dumpf(root, f, JSON_INDENT(1) | JSON_SORT_KEYS) == 0;
    ok = ok && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    e = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return loom_set_error(LOOM_ERR_IO, "cost model: cannot write %s: %s", path,
                              strerror(e ? e : EIO));
    }
    return LOOM_OK;
}

/* ---- profiles --------------------------------------------------------------------------- */

typedef struct prof_field {
    const char *name;
    size_t offset;
    int required; /* must be > 0 in a calibrated entry */
    double max;   /* a figure above it is not a measurement (0 is always allowed: unknown) */
    double min;   /* nor one that is positive and below it */
} prof_field;

/* Bounds of what any device measures: rates from 1 kop/s (or kB/s) to 1e18 per second, fixed
 * costs and latencies under 10 s. A figure outside them came from a damaged or poisoned file
 * and would put every node on one device. */
#define RATE_MIN 1e3
#define RATE_MAX 1e18
#define TIME_MAX 10.0

static const prof_field prof_fields[] = {
    {"flops_f32", offsetof(cost_profile, flops[0]), 1, RATE_MAX, RATE_MIN},
    {"flops_f16", offsetof(cost_profile, flops[1]), 0, RATE_MAX, RATE_MIN},
    {"flops_int8", offsetof(cost_profile, flops[2]), 0, RATE_MAX, RATE_MIN},
    {"mem_bandwidth", offsetof(cost_profile, mem_bandwidth), 1, RATE_MAX, RATE_MIN},
    {"launch_s", offsetof(cost_profile, launch_s), 1, TIME_MAX, 0},
    {"to_host_latency_s", offsetof(cost_profile, to_host_latency_s), 0, TIME_MAX, 0},
    {"to_host_bandwidth", offsetof(cost_profile, to_host_bandwidth), 0, RATE_MAX, RATE_MIN},
    {"from_host_latency_s", offsetof(cost_profile, from_host_latency_s), 0, TIME_MAX, 0},
    {"from_host_bandwidth", offsetof(cost_profile, from_host_bandwidth), 0, RATE_MAX, RATE_MIN},
    {"power_w", offsetof(cost_profile, power_w), 0, 1e6, 0},
    {"cache_bytes", offsetof(cost_profile, cache_bytes), 0, 1e15, 0},
    {"class_column", offsetof(cost_profile, class_column), 0, 2, 0},
#define CLASS_FIELDS(cls, name)                                                                \
    {"fixed_s_" name, offsetof(cost_profile, class_fixed_s[cls]), 0, TIME_MAX, 0},             \
    {"rate_" name, offsetof(cost_profile, class_rate[cls]), 0, RATE_MAX, RATE_MIN}
    CLASS_FIELDS(COST_CLASS_MATMUL, "matmul"),
    CLASS_FIELDS(COST_CLASS_CONV, "conv"),
    CLASS_FIELDS(COST_CLASS_BINARY, "binary"),
    CLASS_FIELDS(COST_CLASS_DIV, "div"),
    CLASS_FIELDS(COST_CLASS_UNARY, "unary"),
    CLASS_FIELDS(COST_CLASS_TRANSCENDENTAL, "transcendental"),
    CLASS_FIELDS(COST_CLASS_SOFTMAX, "softmax"),
    CLASS_FIELDS(COST_CLASS_NORM, "norm"),
    CLASS_FIELDS(COST_CLASS_REDUCE, "reduce"),
    CLASS_FIELDS(COST_CLASS_POOL, "pool"),
    CLASS_FIELDS(COST_CLASS_COPY, "copy"),
    CLASS_FIELDS(COST_CLASS_VIEW, "view"),
#undef CLASS_FIELDS
};
#define N_PROF_FIELDS (sizeof prof_fields / sizeof prof_fields[0])

static double *field_of(cost_profile *p, const prof_field *f)
{
    return (double *)((char *)p + f->offset);
}

/* Apply the cached entry OBJ to P. Returns 0 (P untouched) when OBJ is malformed. */
static int profile_from_json(cost_profile *p, json_t *obj)
{
    double v[N_PROF_FIELDS];
    if (!json_is_object(obj) || !json_is_true(json_object_get(obj, "calibrated")))
        return 0;
    for (size_t k = 0; k < N_PROF_FIELDS; k++) {
        json_t *x = json_object_get(obj, prof_fields[k].name);
        v[k] = x ? json_number_value(x) : 0;
        if ((x && !json_is_number(x)) || !isfinite(v[k]) || v[k] < 0 ||
            (prof_fields[k].required && !(v[k] > 0)) || v[k] > prof_fields[k].max ||
            (v[k] > 0 && v[k] < prof_fields[k].min))
            return 0;
    }
    /* A 0 means "not measured": the facts' figure stays. */
    for (size_t k = 0; k < N_PROF_FIELDS; k++)
        if (v[k] > 0)
            *field_of(p, &prof_fields[k]) = v[k];
    if (p->host_visible) {
        p->to_host_latency_s = p->from_host_latency_s = 0;
        p->to_host_bandwidth = p->from_host_bandwidth = 0;
    }
    p->calibrated = 1;
    return 1;
}

static json_t *profile_to_json(const cost_model *m, uint32_t d)
{
    const cost_profile *p = &m->profiles[d];
    json_t *o = json_object();
    if (!o)
        return NULL;
    char when[64] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_set_new(o, "backend", json_string(m->rt->devices[d].backend->name));
    json_object_set_new(o, "device", json_string(m->rt->devices[d].info.name));
    json_object_set_new(o, "calibrated", json_true());
    json_object_set_new(o, "calibrated_at", json_string(when));
    for (size_t k = 0; k < N_PROF_FIELDS; k++) {
        double x = *field_of((cost_profile *)p, &prof_fields[k]);
        json_object_set_new(o, prof_fields[k].name, json_real(isfinite(x) && x > 0 ? x : 0));
    }
    json_object_set_new(o, "shares_host_cpu", json_boolean(p->shares_host_cpu));
    json_object_set_new(o, "host_visible", json_boolean(p->host_visible));
    return o;
}

/* ---- loading ---------------------------------------------------------------------------- */

static loom_status write_file(cost_model *m, const char *name, json_t *root);

/* Rewrite file NAME without the entries a load dropped (ROOT is what is left); says whether
 * that worked, for the message. */
static const char *rewrite_without(cost_model *m, const char *name, json_t *root)
{
    return write_file(m, name, root) == LOOM_OK ? "dropped from the file" : "ignored";
}

static void load_profiles(cost_model *m)
{
    json_t *root = read_file(m, "profiles.json", "profiles", 0);
    if (!root)
        return;
    json_t *profs = json_object_get(root, "profiles");
    char bad[sizeof m->profiles[0].key] = "";
    size_t n_bad = 0;
    for (uint32_t d = 0; d < m->n_devices; d++) {
        json_t *obj = json_object_get(profs, m->profiles[d].key);
        if (obj && !profile_from_json(&m->profiles[d], obj) && m->group[d] == d) {
            if (!n_bad++)
                snprintf(bad, sizeof bad, "%s", m->profiles[d].key);
            json_object_del(profs, m->profiles[d].key);
        }
    }
    if (n_bad)
        runtime_message(m->rt, "cost model: %s/profiles.json: the entr%s of '%s'%s %s malformed "
                        "or implausible; %s", m->cache_dir, n_bad == 1 ? "y" : "ies", bad,
                        n_bad > 1 ? " and others" : "", n_bad == 1 ? "is" : "are",
                        rewrite_without(m, "profiles.json", root));
    json_decref(root);
}

/* Longest plausible time of one node: a day. */
#define SAMPLE_MAX_S 86400.0

cost_snapshot *cost_history_parse(cost_model *m, const char *text, size_t len, int *rewritten)
{
    *rewritten = 0;
    json_t *root = NULL;
    if (!text) {
        root = read_file(m, "history.json", "history", 0);
    } else {
        json_error_t err;
        char what[256], path[4200];
        root = json_loadb(text, len, 0, &err);
        const char *why = root_problem(root, &err, "history", what, sizeof what);
        if (why) {
            snprintf(path, sizeof path, "%s/history.json", m->cache_dir);
            report_corrupt(m, path, why);
            json_decref(root);
            root = NULL;
        }
    }
    if (!root)
        return NULL;
    cost_snapshot *snap = calloc(1, sizeof *snap);
    uint32_t ng = m->n_devices;
    if (snap)
        snap->group_count = calloc(ng ? ng : 1, sizeof *snap->group_count);
    if (!snap || !snap->group_count) {
        free(snap);
        json_decref(root);
        return NULL; /* out of memory: no history, as with no file */
    }
    atomic_init(&snap->refs, 1);
    snap->n_groups = ng;
    json_t *hist = json_object_get(root, "history");
    size_t bad = 0;
    for (uint32_t d = 0; d < m->n_devices; d++) {
        if (m->group[d] != d)
            continue;
        json_t *sigs = json_object_get(hist, m->profiles[d].key);
        if (!sigs)
            continue;
        if (!json_is_object(sigs)) {
            bad++;
            json_object_del(hist, m->profiles[d].key);
            continue;
        }
        const char *sig;
        json_t *e, *tmp;
        json_object_foreach_safe(sigs, tmp, sig, e) {
            json_t *samples = json_object_get(e, "samples");
            size_t n = json_array_size(samples);
            int ok = json_is_array(samples) && strlen(sig) < COST_SIG_MAX;
            for (size_t i = 0; ok && i < n; i++) {
                json_t *x = json_array_get(samples, i);
                double v = json_number_value(x);
                ok = json_is_number(x) && isfinite(v) && v >= 0 && v <= SAMPLE_MAX_S;
            }
            if (!ok) { /* the whole signature goes: its good samples are suspect too */
                bad++;
                json_object_del(sigs, sig);
                continue;
            }
            size_t first = n > COST_HISTORY_KEEP ? n - COST_HISTORY_KEEP : 0;
            uint64_t h = cost_sig_hash(sig, d);
            for (size_t i = first; i < n; i++)
                cost_table_add(&snap->table, NULL, sig, d, h,
                               json_number_value(json_array_get(samples, i)));
        }
    }
    for (size_t i = 0; i < snap->table.cap; i++)
        if (snap->table.slots[i]) {
            snap->table.slots[i]->dirty = 0;
            snap->group_count[snap->table.slots[i]->group]++;
        }
    if (bad) {
        runtime_message(m->rt, "cost model: %s/history.json: %zu malformed entr%s (negative, "
                        "non-finite or beyond a day); %s", m->cache_dir, bad,
                        bad == 1 ? "y" : "ies", rewrite_without(m, "history.json", root));
        *rewritten = 1;
    }
    json_decref(root);
    return snap;
}

void cost_store_load(cost_model *m)
{
    load_profiles(m);
    m->base = cost_history_acquire(m);
}

/* ---- saving ----------------------------------------------------------------------------- */

/* The file's root to merge into: the current one when it parses, else a fresh one. */
static json_t *merge_root(cost_model *m, const char *name, const char *member)
{
    json_t *root = read_file(m, name, member, 1);
    if (root)
        return root;
    root = json_object();
    if (root) {
        json_object_set_new(root, "version", json_integer(COST_FILE_VERSION));
        json_object_set_new(root, member, json_object());
    }
    return root;
}

static loom_status save_profiles(cost_model *m)
{
    int any = 0;
    for (uint32_t d = 0; d < m->n_devices; d++)
        any |= m->profile_dirty[d];
    if (!any)
        return LOOM_OK;
    json_t *root = merge_root(m, "profiles.json", "profiles");
    if (!root)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "cost model: out of memory saving");
    json_t *profs = json_object_get(root, "profiles");
    for (uint32_t d = 0; d < m->n_devices; d++)
        if (m->profile_dirty[d] && m->profiles[d].calibrated)
            json_object_set_new(profs, m->profiles[d].key, profile_to_json(m, d));
    loom_status st = write_file(m, "profiles.json", root);
    json_decref(root);
    if (st == LOOM_OK)
        for (uint32_t d = 0; d < m->n_devices; d++)
            m->profile_dirty[d] = 0;
    return st;
}

typedef struct sig_age {
    const char *sig;
    json_int_t t;
} sig_age;

static int cmp_sig_age(const void *a, const void *b)
{
    const sig_age *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return strcmp(x->sig, y->sig);
}

/* Drop the least recently updated signatures of SIGS beyond COST_HISTORY_MAX_SIGS ("t", the
 * save that last updated one; none or malformed: oldest; ties by name, for a stable file). */
static void trim_signatures(json_t *sigs)
{
    size_t n = json_object_size(sigs);
    if (n <= COST_HISTORY_MAX_SIGS)
        return;
    sig_age *age = malloc(n * sizeof *age);
    if (!age)
        return; /* trimmed at a later save */
    size_t k = 0;
    const char *sig;
    json_t *e;
    json_object_foreach(sigs, sig, e) {
        json_t *t = json_object_get(e, "t");
        age[k++] = (sig_age){sig, json_is_integer(t) ? json_integer_value(t) : 0};
    }
    qsort(age, k, sizeof *age, cmp_sig_age);
    /* Deleting frees the key strings AGE points to: collect the names first. */
    size_t drop = k - COST_HISTORY_MAX_SIGS;
    char **names = calloc(drop, sizeof *names);
    for (size_t i = 0; names && i < drop; i++)
        names[i] = strdup(age[i].sig);
    for (size_t i = 0; names && i < drop; i++)
        if (names[i])
            json_object_del(sigs, names[i]);
    for (size_t i = 0; names && i < drop; i++)
        free(names[i]);
    free(names);
    free(age);
}

static loom_status save_history(cost_model *m)
{
    pthread_rwlock_wrlock(&m->lock);
    size_t dirty = 0;
    for (size_t i = 0; i < m->own.cap; i++)
        dirty += m->own.slots[i] && m->own.slots[i]->dirty;
    loom_status st = LOOM_OK;
    if (!dirty)
        goto out;
    json_t *root = merge_root(m, "history.json", "history");
    if (!root) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "cost model: out of memory saving");
        goto out;
    }
    json_t *hist = json_object_get(root, "history");
    json_int_t now = (json_int_t)time(NULL);
    for (size_t i = 0; i < m->own.cap; i++) {
        const cost_hist *e = m->own.slots[i];
        if (!e || !e->dirty)
            continue;
        const char *key = m->profiles[e->group].key;
        json_t *sigs = json_object_get(hist, key);
        if (!json_is_object(sigs)) {
            sigs = json_object();
            json_object_set_new(hist, key, sigs);
        }
        json_t *samples = json_array();
        /* Oldest first: the ring starts at NEXT once it is full. */
        uint32_t start = e->n < COST_HISTORY_KEEP ? 0 : e->next;
        for (uint32_t k = 0; k < e->n; k++)
            json_array_append_new(samples, json_real(e->samples[(start + k) % COST_HISTORY_KEEP]));
        json_t *o = json_object();
        json_object_set_new(o, "samples", samples);
        json_object_set_new(o, "median", json_real(e->median));
        json_object_set_new(o, "t", json_integer(now));
        json_object_set_new(sigs, e->sig, o);
    }
    /* Bound the keys of this runtime's devices (others were bounded when they were saved). */
    for (uint32_t d = 0; d < m->n_devices; d++)
        if (m->group[d] == d)
            trim_signatures(json_object_get(hist, m->profiles[d].key));
    st = write_file(m, "history.json", root);
    json_decref(root);
    if (st == LOOM_OK) {
        for (size_t i = 0; i < m->own.cap; i++)
            if (m->own.slots[i])
                m->own.slots[i]->dirty = 0;
        cost_history_invalidate(m); /* the runtime's snapshot is older than the file now */
    }
out:
    pthread_rwlock_unlock(&m->lock);
    return st;
}

loom_status cost_model_save(cost_model *m)
{
    if (!m)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "cost model: model is NULL");
    if (!m->cache_dir[0])
        return loom_set_error(LOOM_ERR_IO, "cost model: no cache folder (set XDG_CACHE_HOME "
                              "or HOME, or give one)");
    loom_status st = save_profiles(m);
    loom_status st2 = save_history(m);
    return st != LOOM_OK ? st : st2;
}
