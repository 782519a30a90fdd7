/* Shared helpers of the `loom` subcommands (tool_util.h). */
#include "tool_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

void tool_vsay(const char *prefix, const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ' ';
    fprintf(stderr, "%s: %s\n", prefix, buf);
}

int tool_exit_status(loom_status status, tool_phase phase)
{
    switch (status) {
    case LOOM_OK: return TOOL_EXIT_OK;
    case LOOM_ERR_INVALID_ARGUMENT: return TOOL_EXIT_USAGE;
    case LOOM_ERR_UNSUPPORTED:
    case LOOM_ERR_IO: return phase == TOOL_LOADING ? TOOL_EXIT_USAGE : TOOL_EXIT_RUNTIME;
    default: return TOOL_EXIT_RUNTIME;
    }
}

int tool_write_exit_status(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
    case EACCES:
    case EPERM:
    case EROFS:
    case ELOOP:
    case ENAMETOOLONG:
    case EEXIST:
    case EINVAL: return TOOL_EXIT_USAGE;
    default: return TOOL_EXIT_RUNTIME;
    }
}

/* The backend options of this process's command line (tool_backend_options_take). */
#define TOOL_MAX_BACKEND_OPTIONS 256
static const char *backend_options[TOOL_MAX_BACKEND_OPTIONS];
static size_t n_backend_options;
/* --cpu-threads N of this process's command line; 0 when not given (or "auto", until the
 * command has chosen: tool_cpu_threads_set). */
static uint32_t cpu_threads;
static int cpu_threads_auto;

const char tool_backend_option_help[] =
    "  --backend-option BACKEND:KEY=VALUE\n"
    "           set an option of a backend before its devices are listed (repeatable):\n"
    "           npu-sim:profile=edge.json; 'loom devices' lists each backend's options. An\n"
    "           unknown backend or key, or a value the backend refuses, exits 2.\n"
    "  --cpu-threads N|auto\n"
    "           threads of the CPU backend, 1 to 1024 (default: LOOM_CPU_THREADS, else one\n"
    "           per core). 'loom serve' runs cores / N batches at once on the host: with 1,\n"
    "           one one-thread batch per core instead of each batch spread over every core.\n"
    "           auto (loom serve, loom loadgen): measure each model both ways first and\n"
    "           serve with the one whose ceiling is higher (seconds at start).\n";

/* "--NAME VALUE" or "--NAME=VALUE" at ARGV[*I] (NAME with its dashes): 1 with *VALUE set (NULL
 * when the value is missing) and *I past it, 0 when ARGV[*I] is another argument. */
static int take_pair(const char *name, int argc, char **argv, int *i, const char **value)
{
    size_t n = strlen(name);
    if (!strcmp(argv[*i], name)) {
        *value = *i + 1 < argc ? argv[++*i] : NULL;
        return 1;
    }
    if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    return 0;
}

int tool_backend_options_take(const char *cmd, int *argc, char **argv)
{
    int out = 0;
    for (int i = 0; i < *argc; i++) {
        const char *value = NULL;
        if (take_pair("--cpu-threads", *argc, argv, &i, &value)) {
            if (value && !strcmp(value, "auto")) {
                if (strcmp(cmd, "serve") && strcmp(cmd, "loadgen")) {
                    fprintf(stderr, "loom %s: --cpu-threads auto is for loom serve and loom "
                            "loadgen; give a thread count from 1 to %d\n", cmd,
                            LOOM_MAX_CPU_THREADS);
                    return 0;
                }
                cpu_threads_auto = 1;
                cpu_threads = 0;
                continue;
            }
            cpu_threads_auto = 0;
            char *end = NULL;
            errno = 0;
            long v = value ? strtol(value, &end, 10) : 0;
            if (!value || !*value || errno || *end || v < 1 || v > LOOM_MAX_CPU_THREADS) {
                fprintf(stderr, "loom %s: --cpu-threads wants a thread count from 1 to %d, got "
                        "'%s'\n", cmd, LOOM_MAX_CPU_THREADS, value ? value : "nothing");
                return 0;
            }
            cpu_threads = (uint32_t)v;
            continue;
        }
        if (!take_pair("--backend-option", *argc, argv, &i, &value)) {
            argv[out++] = argv[i];
            continue;
        }
        if (!value) {
            fprintf(stderr, "loom %s: option --backend-option needs a value "
                    "(BACKEND:KEY=VALUE)\n", cmd);
            return 0;
        }
        if (n_backend_options == TOOL_MAX_BACKEND_OPTIONS) {
            fprintf(stderr, "loom %s: more than %d --backend-option\n", cmd,
                    TOOL_MAX_BACKEND_OPTIONS);
            return 0;
        }
        backend_options[n_backend_options++] = value;
    }
    for (int i = out; i < *argc; i++)
        argv[i] = NULL;
    *argc = out;
    return 1;
}

int tool_cpu_threads_auto(void)
{
    return cpu_threads_auto;
}

void tool_cpu_threads_set(uint32_t threads)
{
    cpu_threads = threads;
    cpu_threads_auto = 0;
}

loom_status tool_runtime_create(const loom_runtime_options *base, loom_runtime **out)
{
    loom_runtime_options o = {.struct_size = sizeof o};
    if (base)
        o = *base;
    o.struct_size = sizeof o;
    o.backend_options = backend_options;
    o.n_backend_options = n_backend_options;
    if (cpu_threads && !o.cpu_threads)
        o.cpu_threads = cpu_threads;
    return loom_runtime_create(&o, out);
}

int tool_runtime_exit_status(loom_status status)
{
    if (status == LOOM_OK)
        return TOOL_EXIT_OK;
    const char *e = loom_last_error();
    return status == LOOM_ERR_INVALID_ARGUMENT && e && !strncmp(e, "backend option", 14)
               ? TOOL_EXIT_USAGE
               : TOOL_EXIT_RUNTIME;
}

const char *tool_option_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        return NULL;
    const char *v = argv[*i + 1];
    if (v[0] == '-' && v[1] && !(v[1] >= '0' && v[1] <= '9') && v[1] != '.')
        return NULL;
    ++*i;
    return v;
}

const char *tool_bytes_text(double b, char *buf, size_t len)
{
    if (b < 1024)
        snprintf(buf, len, "%.0f B", b);
    else if (b < 1024.0 * 1024)
        snprintf(buf, len, "%.1f KiB", b / 1024);
    else
        snprintf(buf, len, "%.1f MiB", b / (1024.0 * 1024));
    return buf;
}

int tool_close(FILE *f)
{
    int bad = ferror(f);
    int e = errno;
    if (fclose(f) != 0 || bad) {
        if (bad)
            errno = e ? e : EIO;
        return 0;
    }
    return 1;
}

FILE *tool_out_open(tool_out *o, const char *path)
{
    o->f = NULL;
    o->path = path;
    o->tmp[0] = '\0';
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        errno = S_ISLNK(sb.st_mode) ? ELOOP : S_ISDIR(sb.st_mode) ? EISDIR : 0;
        if (!errno && !S_ISREG(sb.st_mode))
            errno = EINVAL;
        if (errno)
            return NULL;
    } else if (errno != ENOENT) {
        return NULL;
    }
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path) + 1 : 0;
    const char *base = slash ? slash + 1 : path;
    for (int attempt = 0; attempt < 100; attempt++) {
        uint32_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint32_t)getpid() * 2654435761u + (uint32_t)attempt;
        int n = snprintf(o->tmp, sizeof o->tmp, "%.*s.%.200s.%08x.tmp", dir_len, path, base,
                         (unsigned)r);
        if (n < 0 || (size_t)n >= sizeof o->tmp) {
            errno = ENAMETOOLONG;
            return NULL;
        }
        int fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            o->tmp[0] = '\0';
            return NULL;
        }
        if (!(o->f = fdopen(fd, "w"))) {
            int e = errno;
            close(fd);
            unlink(o->tmp);
            errno = e;
        }
        return o->f;
    }
    errno = EEXIST;
    return NULL;
}

int tool_out_commit(tool_out *o)
{
    int ok = fflush(o->f) == 0 && !ferror(o->f) && fsync(fileno(o->f)) == 0;
    int e = ok ? 0 : errno ? errno : EIO;
    if (fclose(o->f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    o->f = NULL;
    if (ok && rename(o->tmp, o->path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(o->tmp);
        errno = e;
    }
    return ok;
}

const char *tool_out_error_text(int err)
{
    switch (err) {
    case ELOOP: return "it is a symbolic link (refused, not followed)";
    case EISDIR: return "it is a directory";
    case EINVAL: return "it exists and is not a regular file";
    default: return strerror(err);
    }
}

void tool_out_abort(tool_out *o)
{
    int e = errno;
    if (o->f)
        fclose(o->f);
    o->f = NULL;
    if (o->tmp[0])
        unlink(o->tmp);
    errno = e;
}

/* By name, then by index: equal names keep their order, so the first is found first. */
static int cmp_entry(const void *a, const void *b)
{
    const tool_name_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

int tool_name_index_build(tool_name_index *ix, const char *const *names, size_t n)
{
    *ix = (tool_name_index){0};
    ix->entries = malloc((n + 1) * sizeof *ix->entries);
    if (!ix->entries)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (names[i])
            ix->entries[ix->n++] = (tool_name_entry){names[i], i};
    qsort(ix->entries, ix->n, sizeof *ix->entries, cmp_entry);
    return 1;
}

long tool_name_index_find(const tool_name_index *ix, const char *name)
{
    if (!name)
        return -1;
    size_t lo = 0, hi = ix->n; /* first entry whose name is >= NAME */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ix->entries[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && !strcmp(ix->entries[lo].name, name) ? (long)ix->entries[lo].index : -1;
}

void tool_name_index_free(tool_name_index *ix)
{
    free(ix->entries);
    *ix = (tool_name_index){0};
}
