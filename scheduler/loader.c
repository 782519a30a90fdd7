/*
 * The plugin loader: finds backend shared objects (paths given through the C API, then the
 * folders on LOOM_BACKEND_PATH, then the installed plugin folder), checks each one's ABI, and
 * registers its devices. Backend ABI 1.x plugins load as they are; a plugin that refuses the
 * 1.0 host is asked again with LOOM_ABI_VERSION_0_COMPAT, and a 0.1-0.4 table runs through the
 * adapter (a host-owned copy whose slots past the plugin's struct_size are NULL). A plugin that
 * cannot be used is refused with a message naming the file and the reason (loom_runtime_message);
 * the others keep working. Each plugin logs through a loom_host of its own (runtime.c), so that
 * its lines carry its name.
 */
#include "sched_internal.h"

#include "loom_config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct seen_files {
    char **paths;
    size_t n, cap;
} seen_files;

static int already_seen(seen_files *seen, const char *path)
{
    char real[PATH_MAX];
    const char *key = realpath(path, real) ? real : path;
    for (size_t i = 0; i < seen->n; i++)
        if (!strcmp(seen->paths[i], key))
            return 1;
    if (seen->n == seen->cap) {
        size_t n = seen->cap ? seen->cap * 2 : 8;
        char **p = realloc(seen->paths, n * sizeof *p);
        if (!p)
            return 0;
        seen->paths = p;
        seen->cap = n;
    }
    char *copy = strdup(key);
    if (copy)
        seen->paths[seen->n++] = copy;
    return 0;
}

/* The required slots of a table, by name, for the refusal message; and the slots that come in
 * pairs or groups (one without the others is a table the host cannot use). Slots past the
 * table's struct_size are read through RUNTIME_SLOT (NULL). */
static const char *missing_slot(const loom_backend *be)
{
    if (!be->name || !*be->name)
        return "name";
    if (!be->device_count)
        return "device_count";
    if (!be->device_info)
        return "device_info";
    if (!be->supports)
        return "supports";
    if (!be->prepare)
        return "prepare";
    if (!be->execute)
        return "execute";
    if (!be->release_kernel)
        return "release_kernel";
    if (be->alloc && !be->free)
        return "free (alloc is given)";
    if (RUNTIME_SLOT(be, claim) && !RUNTIME_SLOT(be, prepare_subgraph))
        return "prepare_subgraph (claim is given)";
    int events = !!RUNTIME_SLOT(be, event_create) + !!RUNTIME_SLOT(be, event_record) +
                 !!RUNTIME_SLOT(be, event_wait) + !!RUNTIME_SLOT(be, event_destroy);
    if (events && events < 4)
        return !RUNTIME_SLOT(be, event_create)   ? "event_create (the other event slots are given)"
               : !RUNTIME_SLOT(be, event_record) ? "event_record (the other event slots are given)"
               : !RUNTIME_SLOT(be, event_wait)   ? "event_wait (the other event slots are given)"
                                                 : "event_destroy (the other event slots are given)";
    if (!RUNTIME_SLOT(be, can_copy_peer) != !RUNTIME_SLOT(be, copy_peer))
        return RUNTIME_SLOT(be, copy_peer) ? "can_copy_peer (copy_peer is given)"
                                           : "copy_peer (can_copy_peer is given)";
    if (!RUNTIME_SLOT(be, alloc_host) != !RUNTIME_SLOT(be, free_host))
        return RUNTIME_SLOT(be, alloc_host) ? "free_host (alloc_host is given)"
                                            : "alloc_host (free_host is given)";
    if (be->struct_size >= offsetof(loom_backend, n_options) + sizeof be->n_options &&
        be->n_options && !RUNTIME_SLOT(be, set_option))
        return "set_option (options are declared)";
    return NULL;
}

/* The size of an ABI 1.0 table: every 1.x plugin's table has at least these bytes. */
#define BACKEND_TABLE_1_0_SIZE (offsetof(loom_backend, set_option) + sizeof(void (*)(void)))
/* The size of an ABI 0.4 table (0.1-0.3 tables are shorter prefixes of it). */
#define BACKEND_TABLE_0_4_SIZE (offsetof(loom_backend, claim))
/* The size of an ABI 0.1 table, the smallest the host accepts. */
#define BACKEND_TABLE_0_1_SIZE (offsetof(loom_backend, shutdown) + sizeof(void (*)(void)))

/* Seconds loom_backend_query may take before the runtime says so: every program that creates
 * a runtime waits for it. */
#define SLOW_QUERY_S 1.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Refuse the plugin at PATH (its table BE, when it gave one that may be called, is shut down). */
static void refuse(loom_runtime *rt, const char *path, void *h, runtime_host *host,
                   const loom_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void refuse(loom_runtime *rt, const char *path, void *h, runtime_host *host,
                   const loom_backend *be, const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    runtime_message(rt, "plugin %s refused: %s", path, why);
    if (be && be->shutdown)
        be->shutdown(be->ctx);
    if (h)
        dlclose(h);
    runtime_host_free(host);
}

static void load_file(loom_runtime *rt, const char *path)
{
    /* dlopen searches the library path for a name without a slash: a file named on the command
     * line ("npu.so") is the one in the current folder. */
    char local[PATH_MAX];
    const char *open_path = path;
    if (!strchr(path, '/') && snprintf(local, sizeof local, "./%s", path) < (int)sizeof local)
        open_path = local;
    void *h = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        runtime_message(rt, "plugin %s refused: cannot load it: %s", path, e ? e : "dlopen failed");
        return;
    }
    loom_backend_query_fn query;
    void *sym = dlsym(h, LOOM_BACKEND_QUERY_SYMBOL);
    memcpy(&query, &sym, sizeof query); /* object pointer to function pointer, as POSIX allows */
    if (!sym) {
        runtime_message(rt, "plugin %s refused: it exports no %s (not a Loom backend)", path,
                   LOOM_BACKEND_QUERY_SYMBOL);
        dlclose(h);
        return;
    }
    runtime_host *host = runtime_host_create(rt, path, NULL);
    if (!host) {
        runtime_message(rt, "plugin %s refused: out of memory", path);
        dlclose(h);
        return;
    }
    /* Asked for this host's version first; a plugin that refuses it (NULL) is asked once more
     * with the last 0.x version, so that a 0.x plugin loads through the adapter. What it logs
     * is held meanwhile: the lines of the query that answered are kept (both queries' when
     * neither did, without repeats), so that a 0.x plugin's "another major version" line
     * does not stand next to its successful load. */
    double t0 = now_s();
    runtime_host_hold(host);
    uint32_t asked = LOOM_ABI_VERSION;
    const loom_backend *be = query(asked, &host->host);
    size_t mark = runtime_host_hold(host), end = (size_t)-1;
    if (!be) {
        asked = LOOM_ABI_VERSION_0_COMPAT;
        host->host.abi_version = asked;
        be = query(asked, &host->host);
        if (be)
            runtime_host_release(host, mark, end, 0);
        else
            runtime_host_release(host, 0, end, 1);
    } else {
        runtime_host_release(host, 0, end, 0);
    }
    double took = now_s() - t0;
    if (took > SLOW_QUERY_S)
        runtime_message(rt, "plugin %s took %.1f s in loom_backend_query (a backend should start "
                        "in well under a second; every program that starts Loom waits for it)",
                        path, took);
    if (!be) {
        refuse(rt, path, h, host, NULL,
               "its loom_backend_query returned NULL for backend ABI %u.%u and for %u.%u (it "
               "could not start; see its messages above)",
               LOOM_ABI_VERSION_MAJOR, LOOM_ABI_VERSION_MINOR, LOOM_ABI_VERSION_0_COMPAT >> 16,
               LOOM_ABI_VERSION_0_COMPAT & 0xffffu);
        return;
    }
    unsigned major = be->abi_version >> 16, minor = be->abi_version & 0xffffu;
    int adapted = major == 0 && minor >= 1 && minor <= (LOOM_ABI_VERSION_0_COMPAT & 0xffffu);
    if (major != LOOM_ABI_VERSION_MAJOR && !adapted) {
        /* Its table layout is unknown: nothing in it is called, not even shutdown. */
        refuse(rt, path, h, host, NULL,
               "built for backend ABI %u.%u, this Loom speaks %u.%u (it loads 1.x plugins, and "
               "0.1-0.4 ones through the adapter)",
               major, minor, LOOM_ABI_VERSION_MAJOR, LOOM_ABI_VERSION_MINOR);
        return;
    }
    size_t least = adapted ? BACKEND_TABLE_0_1_SIZE : BACKEND_TABLE_1_0_SIZE;
    if (be->struct_size < least) {
        /* Too short to hold shutdown for sure (a 1.x table this short lies about its version):
         * nothing in it is called. */
        refuse(rt, path, h, host, NULL,
               "its table says backend ABI %u.%u but is %u bytes, smaller than the ABI %s table "
               "(%zu bytes)",
               major, minor, be->struct_size, adapted ? "0.1" : "1.0", least);
        return;
    }
    if (adapted) {
        /* The adapter: a 0.x table is a prefix of the 1.0 table; the host uses its own copy,
         * in which every slot past the plugin's table (struct_size) is NULL, so a plugin that
         * overstated its struct_size is still never read past the 0.4 slots. */
        size_t n = be->struct_size < BACKEND_TABLE_0_4_SIZE ? be->struct_size
                                                            : BACKEND_TABLE_0_4_SIZE;
        memset(&host->adapted, 0, sizeof host->adapted);
        memcpy(&host->adapted, be, n);
        host->adapted.struct_size = (uint32_t)n;
        be = &host->adapted;
    }
    const char *missing = missing_slot(be);
    if (missing) {
        refuse(rt, path, h, host, be, "required slot '%s' is missing", missing);
        return;
    }
    for (size_t i = 0; i < rt->n_backends; i++)
        if (!strcmp(rt->backends[i]->name, be->name)) {
            refuse(rt, path, h, host, be, "a backend named '%s' is already loaded", be->name);
            return;
        }
    runtime_host_set_name(host, be->name);
    if (runtime_add_backend(rt, be, h, host) != LOOM_OK)
        runtime_message(rt, "plugin %s refused: %s", path, loom_last_error());
}

static int is_shared_object(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && !strcmp(name + n - 3, ".so");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.so of DIR, in name order (a stable order makes device ids stable). */
static void load_dir(loom_runtime *rt, const char *dir, seen_files *seen, int quiet_missing)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (!quiet_missing)
            runtime_message(rt, "plugin folder %s cannot be read", dir);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_shared_object(e->d_name))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 8;
            char **p = realloc(names, c * sizeof *p);
            if (!p)
                break;
            names = p;
            cap = c;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        if ((names[n] = malloc(len)))
            snprintf(names[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (!already_seen(seen, names[i]))
            load_file(rt, names[i]);
        free(names[i]);
    }
    free(names);
}

static void load_path(loom_runtime *rt, const char *path, seen_files *seen, int quiet_missing)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!quiet_missing)
            runtime_message(rt, "plugin %s refused: no such file or folder", path);
        return;
    }
    if (S_ISDIR(st.st_mode))
        load_dir(rt, path, seen, quiet_missing);
    else if (!already_seen(seen, path))
        load_file(rt, path);
}

void runtime_load_plugins(loom_runtime *rt, const loom_runtime_options *o)
{
    seen_files seen = {0};
    int defaults = 1;
    if (o && o->struct_size >= offsetof(loom_runtime_options, no_default_plugins) + sizeof(int)) {
        for (size_t i = 0; i < o->n_plugin_paths; i++)
            if (o->plugin_paths && o->plugin_paths[i])
                load_path(rt, o->plugin_paths[i], &seen, 0);
        defaults = !o->no_default_plugins;
    }
    if (defaults) {
        const char *env = getenv("LOOM_BACKEND_PATH");
        if (env && *env) {
            char *copy = strdup(env);
            char *save = NULL;
            for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir;
                 dir = strtok_r(NULL, ":", &save))
                load_path(rt, dir, &seen, 0);
            free(copy);
        }
        /* The installed folder may well not exist (an uninstalled build): say nothing then. */
        load_path(rt, LOOM_PLUGIN_DIR, &seen, 1);
    }
    for (size_t i = 0; i < seen.n; i++)
        free(seen.paths[i]);
    free(seen.paths);
}
