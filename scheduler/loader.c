/*
 * The plugin loader: finds backend shared objects (paths given through the C API, then the
 * folders on LOOM_BACKEND_PATH, then the installed plugin folder), checks each one's ABI, and
 * registers its devices. A plugin that cannot be used is refused with a message naming the file
 * and the reason (loom_runtime_message); the others keep working.
 */
#include "sched_internal.h"

#include "loom_config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* The required slots of a table, by name, for the refusal message. */
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
    return NULL;
}

static void load_file(loom_runtime *rt, const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
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
    rt->loading = path;
    const loom_backend *be = query(LOOM_ABI_VERSION, &rt->host);
    rt->loading = NULL;
    if (!be) {
        runtime_message(rt, "plugin %s refused: its loom_backend_query returned NULL (it could not "
                       "start; see its messages above)", path);
        dlclose(h);
        return;
    }
    unsigned major = be->abi_version >> 16, minor = be->abi_version & 0xffffu;
    if (major != LOOM_ABI_VERSION_MAJOR) {
        runtime_message(rt, "plugin %s refused: built for backend ABI %u.%u, this Loom speaks %u.x",
                   path, major, minor, LOOM_ABI_VERSION_MAJOR);
        /* Its table layout is unknown: do not call anything in it. */
        dlclose(h);
        return;
    }
    if (be->struct_size < offsetof(loom_backend, shutdown) + sizeof be->shutdown) {
        runtime_message(rt, "plugin %s refused: its table is %u bytes, smaller than any ABI %u table",
                   path, be->struct_size, LOOM_ABI_VERSION_MAJOR);
        dlclose(h);
        return;
    }
    const char *missing = missing_slot(be);
    if (missing) {
        runtime_message(rt, "plugin %s refused: required slot '%s' is missing", path, missing);
        if (be->shutdown)
            be->shutdown(be->ctx);
        dlclose(h);
        return;
    }
    for (size_t i = 0; i < rt->n_backends; i++)
        if (!strcmp(rt->backends[i]->name, be->name)) {
            runtime_message(rt, "plugin %s refused: a backend named '%s' is already loaded", path,
                       be->name);
            if (be->shutdown)
                be->shutdown(be->ctx);
            dlclose(h);
            return;
        }
    if (runtime_add_backend(rt, be, h) != LOOM_OK)
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
