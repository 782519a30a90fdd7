/*
 * The ONNX backend test suite as Debian packages it (libonnx-testdata): for each case, load
 * model.onnx, run every test_data_set_N on the CPU and compare each output with output_N.pb
 * using the tolerances of onnx's backend test runner (rtol 1e-3, atol 1e-7; exact for integers
 * and bools). Each case runs in a child process, so a crash or a hang is one failed case, not a
 * lost run. Prints total / supported / passed and the failures.
 *
 *   onnx_conformance [--data DIR] [--filter SUBSTR] [--list FILE] [--expect FILE] [--verbose]
 *                    [--timeout SECONDS] [--no-fork] [--device ID] [--strict]
 *
 * Exit status: 0 (or 1 when a case named in --expect did not pass), 2 on bad usage, 77 (skip)
 * when the test data is not installed.
 */
#include <loom/loom.h>
#include <loom/onnx.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_DATA "/usr/share/libonnx-testdata/data"
#define RTOL 1e-3
#define ATOL 1e-7
#define MAX_IO 64

/* --device: where the cases run; only the CPU run is strict (elsewhere what the device cannot
 * run goes to the CPU, as users get it). */
static const char *run_device = "cpu";
/* --strict: plan strictly on a non-CPU device too, so that a case passes only when every node
 * ran there (a node the device refuses makes the case unsupported). */
static int run_strict = 0;

static const char *const suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
#define N_SUITES (sizeof suites / sizeof suites[0])

typedef enum verdict { V_PASS = 'P', V_FAIL = 'F', V_UNSUPPORTED = 'U' } verdict;

typedef struct case_result {
    char *name;     /* "node/test_abs" */
    verdict v;
    char *message;  /* why it failed or is unsupported */
    int suite;
} case_result;

/* ---- small helpers -------------------------------------------------------------------------- */

static int exists(const char *path, int want_dir)
{
    struct stat sb;
    return stat(path, &sb) == 0 && (want_dir ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the entries of DIR that start with PREFIX (NULL: all but dot files); the
 * caller frees each and the array. */
/* The parent's lists, kept reachable from globals: a forked child exits (so that a sanitizer can
 * report the case's own leaks through its status) while the parent's arrays are still in use,
 * and LeakSanitizer must not count those as the child's leaks. */
static char **g_cases;
static void *g_results;
static char **g_expected;

static char **list_dir(const char *dir, const char *prefix, size_t *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    size_t cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    while (names && (e = readdir(d))) {
        if (e->d_name[0] == '.' || (prefix && strncmp(e->d_name, prefix, strlen(prefix))))
            continue;
        if (*n == cap) {
            char **bigger = realloc(names, 2 * cap * sizeof *names);
            if (!bigger)
                break;
            names = bigger;
            cap *= 2;
        }
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (names)
        qsort(names, *n, sizeof *names, cmp_str);
    return names;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void shape_text(char *buf, size_t len, uint32_t rank, const int64_t *dims)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (uint32_t k = 0; k < rank && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", k ? ", " : "", (long long)dims[k]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

static double f16_to_double(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m | 0x400, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double element(const void *data, loom_dtype dt, size_t i)
{
    const unsigned char *p = data;
    switch (dt) {
    case LOOM_DTYPE_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case LOOM_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return f16_to_double(h);
    }
    case LOOM_DTYPE_F64: {
        double d;
        memcpy(&d, p + 8 * i, 8);
        return d;
    }
    case LOOM_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    default: return 0;
    }
}

static int64_t int_element(const void *data, loom_dtype dt, size_t i)
{
    const unsigned char *p = data;
    switch (dt) {
    case LOOM_DTYPE_U8:
    case LOOM_DTYPE_BOOL: return p[i];
    case LOOM_DTYPE_I8: return (int8_t)p[i];
    case LOOM_DTYPE_I32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case LOOM_DTYPE_I16: {
        int16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case LOOM_DTYPE_U16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case LOOM_DTYPE_U32: {
        uint32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case LOOM_DTYPE_U64: { /* compared as bits: equal values have equal bits */
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    case LOOM_DTYPE_I64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    default: return 0;
    }
}

/* Compare output NAME (GOT) with EXPECTED as onnx's backend runner does
 * (numpy.testing.assert_allclose(rtol=1e-3, atol=1e-7), NaN equal to NaN; integers and bools
 * exactly). Returns NULL when they agree, else a malloc'ed description. */
static char *compare(const char *name, const loom_tensor *got, const loom_tensor *expected)
{
    loom_dtype gd = loom_tensor_dtype(got), ed = loom_tensor_dtype(expected);
    /* Old exporters wrote bfloat16 data as uint16 TensorProtos (the same bits): read them as
     * the bfloat16 the model's output is. */
    if (gd == LOOM_DTYPE_BF16 && ed == LOOM_DTYPE_U16)
        ed = gd;
    if (gd != ed)
        return fmt("output '%s': dtype %s, expected %s", name, loom_dtype_name(gd),
                   loom_dtype_name(ed));
    int64_t gdims[LOOM_MAX_RANK], edims[LOOM_MAX_RANK];
    loom_tensor_dims(got, gdims);
    loom_tensor_dims(expected, edims);
    char gs[200], es[200];
    shape_text(gs, sizeof gs, loom_tensor_rank(got), gdims);
    shape_text(es, sizeof es, loom_tensor_rank(expected), edims);
    if (strcmp(gs, es) != 0)
        return fmt("output '%s': shape %s, expected %s", name, gs, es);
    size_t count = loom_tensor_nbytes(got) / loom_dtype_size(gd);
    const void *g = loom_tensor_data(got), *e = loom_tensor_data(expected);
    size_t bad = 0, worst = 0;
    double max_err = 0;
    int is_float = gd == LOOM_DTYPE_F32 || gd == LOOM_DTYPE_F16 || gd == LOOM_DTYPE_BF16 ||
                   gd == LOOM_DTYPE_F64;
    for (size_t i = 0; i < count; i++) {
        if (is_float) {
            double a = element(g, gd, i), b = element(e, gd, i);
            if (isnan(a) && isnan(b))
                continue;
            double err = fabs(a - b);
            int ok = isinf(b) ? a == b : err <= ATOL + RTOL * fabs(b);
            if (isnan(err))
                err = INFINITY;
            if (!ok) {
                if (!bad || err > max_err)
                    worst = i;
                bad++;
            }
            if (err > max_err)
                max_err = err;
        } else {
            int64_t a = int_element(g, gd, i), b = int_element(e, gd, i);
            if (a != b) {
                double err = fabs((double)a - (double)b);
                if (!bad || err > max_err) {
                    worst = i;
                    max_err = err;
                }
                bad++;
            }
        }
    }
    if (!bad)
        return NULL;
    if (is_float)
        return fmt("output '%s': %zu of %zu elements differ, max abs error %.3g (element %zu: "
                   "got %.7g, expected %.7g)",
                   name, bad, count, max_err, worst, element(g, gd, worst),
                   element(e, gd, worst));
    return fmt("output '%s': %zu of %zu elements differ (element %zu: got %lld, expected %lld)",
               name, bad, count, worst, (long long)int_element(g, gd, worst),
               (long long)int_element(e, gd, worst));
}

/* ---- one case ------------------------------------------------------------------------------- */

typedef struct data_set {
    loom_tensor *in[MAX_IO], *out[MAX_IO];
    char in_name[MAX_IO][128]; /* the TensorProto's name: the model input it feeds */
    size_t n_in, n_out;
} data_set;

static void free_data_set(data_set *d)
{
    for (size_t i = 0; i < d->n_in; i++)
        loom_tensor_destroy(d->in[i]);
    for (size_t i = 0; i < d->n_out; i++)
        loom_tensor_destroy(d->out[i]);
    d->n_in = d->n_out = 0;
}

/* Read DIR/PREFIX_0.pb, DIR/PREFIX_1.pb, ... into TS. Returns NULL or a malloc'ed error. */
static char *load_pbs(const char *dir, const char *prefix, loom_tensor **ts, size_t *n,
                      char (*names)[128])
{
    for (*n = 0; *n < MAX_IO; (*n)++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s_%zu.pb", dir, prefix, *n);
        if (!exists(path, 0))
            break;
        if (loom_tensor_load_pb(path, &ts[*n], names ? names[*n] : NULL, 128) != LOOM_OK)
            return fmt("%s_%zu.pb: %s", prefix, *n, loom_last_error());
    }
    return NULL;
}

/* Run one data set through MODEL, each input as given (the model specialises itself to the
 * data set's shapes, and binds the inputs it needs as values). Returns NULL when every output
 * agrees. */
static char *run_data_set(loom_model *model, data_set *d, verdict *v)
{
    size_t n_in = loom_model_input_count(model), n_out = loom_model_output_count(model);
    if (d->n_in != n_in)
        return fmt("the model has %zu inputs, the data set %zu", n_in, d->n_in);
    if (d->n_out != n_out)
        return fmt("the model has %zu outputs, the data set %zu", n_out, d->n_out);
    /* input_K.pb feeds the model's input K, or the input its name says when it has one. */
    const loom_tensor *in[MAX_IO];
    loom_tensor *as_bf16[MAX_IO] = {0};
    for (size_t i = 0; i < n_in; i++) {
        loom_model_io io = {.struct_size = sizeof io};
        loom_model_input_info(model, i, &io);
        in[i] = d->in[i];
        for (size_t k = 0; k < d->n_in; k++)
            if (d->in_name[k][0] && strcmp(d->in_name[k], io.name) == 0)
                in[i] = d->in[k];
        /* Old exporters wrote bfloat16 inputs as uint16 TensorProtos (the same bits): feed
         * them as the bfloat16 the model declares, through a view of the same data. */
        if (io.dtype == LOOM_DTYPE_BF16 && loom_tensor_dtype(in[i]) == LOOM_DTYPE_U16) {
            int64_t dims[LOOM_MAX_RANK];
            loom_tensor_dims(in[i], dims);
            if (loom_tensor_wrap(LOOM_DTYPE_BF16, loom_tensor_rank(in[i]), dims,
                                 loom_tensor_data(in[i]), &as_bf16[i]) != LOOM_OK) {
                for (size_t j = 0; j < i; j++)
                    loom_tensor_destroy(as_bf16[j]);
                return fmt("input %zu as bfloat16: %s", i, loom_last_error());
            }
            in[i] = as_bf16[i];
        }
    }
    loom_tensor *outs[MAX_IO] = {0};
    loom_status st = loom_model_run(model, in, n_in, outs, n_out, NULL);
    for (size_t i = 0; i < n_in; i++)
        loom_tensor_destroy(as_bf16[i]);
    if (st != LOOM_OK) {
        *v = st == LOOM_ERR_UNSUPPORTED ? V_UNSUPPORTED : V_FAIL;
        return fmt("run: %s: %s", loom_status_name(st), loom_last_error());
    }
    char *msg = NULL;
    for (size_t i = 0; !msg && i < n_out; i++) {
        loom_model_io io = {.struct_size = sizeof io};
        loom_model_output_info(model, i, &io);
        msg = compare(io.name, outs[i], d->out[i]);
    }
    for (size_t i = 0; i < n_out; i++)
        loom_tensor_destroy(outs[i]);
    if (msg)
        *v = V_FAIL;
    return msg;
}

static verdict run_case(const char *dir, char **message)
{
    *message = NULL;
    char model_path[1200];
    snprintf(model_path, sizeof model_path, "%s/model.onnx", dir);
    loom_runtime *rt;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK) {
        *message = fmt("runtime: %s", loom_last_error());
        return V_FAIL;
    }
    verdict v = V_PASS;
    size_t n_sets = 0;
    char **sets = list_dir(dir, "test_data_set_", &n_sets);
    loom_plan_options po = {.struct_size = sizeof po, .device = run_device,
                            .strict = run_strict || !strncmp(run_device, "cpu", 3)};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po};
    loom_model *model = NULL;
    loom_status st = loom_model_load_onnx(rt, model_path, &mo, &model);
    if (st != LOOM_OK) {
        v = st == LOOM_ERR_UNSUPPORTED ? V_UNSUPPORTED : V_FAIL;
        *message = fmt("load: %s: %s", loom_status_name(st), loom_last_error());
    }
    if (!*message && !n_sets) {
        *message = fmt("no test_data_set_* directory");
        v = V_FAIL;
    }
    for (size_t s = 0; !*message && s < n_sets; s++) {
        char sdir[1200];
        snprintf(sdir, sizeof sdir, "%s/%s", dir, sets[s]);
        data_set d = {0};
        char *err = load_pbs(sdir, "input", d.in, &d.n_in, d.in_name);
        if (!err)
            err = load_pbs(sdir, "output", d.out, &d.n_out, NULL);
        if (err && v == V_PASS)
            v = V_FAIL;
        if (!err)
            err = run_data_set(model, &d, &v);
        if (err) {
            if (v == V_PASS)
                v = V_FAIL;
            *message = n_sets > 1 ? fmt("%s: %s", sets[s], err) : strdup(err);
            free(err);
        }
        free_data_set(&d);
    }
    free_list(sets, n_sets);
    loom_model_destroy(model);
    loom_runtime_destroy(rt);
    return v;
}
/* Run the case in a child process (unless NO_FORK), so that a crash, a hang past TIMEOUT
 * seconds or a sanitizer's complaint is this case's failure alone. */
static verdict run_isolated(const char *dir, int no_fork, int timeout, char **message)
{
    if (no_fork)
        return run_case(dir, message);
    int fds[2];
    if (pipe(fds) != 0) {
        *message = fmt("pipe: %s", strerror(errno));
        return V_FAIL;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        *message = fmt("fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return V_FAIL;
    }
    if (pid == 0) {
        close(fds[0]);
        alarm((unsigned)timeout);
        char *msg;
        verdict v = run_case(dir, &msg);
        char *line = fmt("%c%s", (char)v, msg ? msg : "");
        for (char *p = line; p && *p; p++)
            if (*p == '\n')
                *p = ' ';
        size_t len = line ? strlen(line) : 0, off = 0;
        while (off < len) {
            ssize_t w = write(fds[1], line + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        free(line);
        free(msg);
        close(fds[1]);
        exit(0); /* exit, not _exit: sanitizers report leaks through the status */
    }
    close(fds[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fds[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (buf)
        buf[len] = '\0';
    verdict v;
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        *message = sig == SIGALRM ? fmt("timed out after %d s", timeout)
                                  : fmt("crashed: %s", strsignal(sig));
        v = V_FAIL;
    } else if (!buf || len == 0) {
        *message = fmt("the child exited with status %d and no result",
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        v = V_FAIL;
    } else {
        v = (verdict)buf[0];
        *message = buf[1] ? strdup(buf + 1) : NULL;
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0 && v == V_PASS) {
            v = V_FAIL;
            *message = fmt("passed, then exited with status %d (a sanitizer report?)",
                           WEXITSTATUS(status));
        }
    }
    free(buf);
    return v;
}

/* ---- main ----------------------------------------------------------------------------------- */

static const char help[] =
    "usage: onnx_conformance [--data DIR] [--filter SUBSTR] [--list FILE] [--expect FILE]\n"
    "                        [--verbose] [--timeout SECONDS] [--no-fork] [--device ID]\n"
    "                        [--strict]\n"
    "\n"
    "Run the ONNX backend test cases of DIR/{node,pytorch-converted,pytorch-operator,simple}\n"
    "(default " DEFAULT_DATA ", Debian package libonnx-testdata) on the CPU and\n"
    "compare with the expected outputs (rtol 1e-3, atol 1e-7; exact for integers and bools).\n"
    "\n"
    "  --filter SUBSTR    only cases whose name (suite/case) contains SUBSTR\n"
    "  --list FILE        write the names of the passing cases to FILE\n"
    "  --expect FILE      exit 1 when a case named in FILE (one per line, # comments) fails\n"
    "  --verbose          print every case's result\n"
    "  --timeout SECONDS  per case (default 120)\n"
    "  --no-fork          run cases in this process (for debuggers)\n"
    "  --device ID        run on this device (default cpu, strict); on another device, nodes\n"
    "                     it cannot run go to the CPU\n"
    "  --strict           every node on --device's device (a case it cannot run whole is\n"
    "                     unsupported): what the device itself passes\n";

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "onnx_conformance: %s '%s' (see --help)\n", what, arg);
    return 2;
}

int main(int argc, char **argv)
{
    const char *data = getenv("LOOM_ONNX_TESTDATA"), *filter = NULL, *list = NULL,
               *expect = NULL;
    int verbose = 0, no_fork = 0, timeout = 120;
    if (!data)
        data = DEFAULT_DATA;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            verbose = 1;
        } else if (!strcmp(a, "--no-fork")) {
            no_fork = 1;
        } else if (!strcmp(a, "--strict")) {
            run_strict = 1;
        } else if (!strcmp(a, "--data") || !strcmp(a, "--filter") || !strcmp(a, "--list") ||
                   !strcmp(a, "--expect") || !strcmp(a, "--timeout") ||
                   !strcmp(a, "--device")) {
            if (!v)
                return usage_error("missing value for", a);
            i++;
            if (!strcmp(a, "--data"))
                data = v;
            else if (!strcmp(a, "--filter"))
                filter = v;
            else if (!strcmp(a, "--list"))
                list = v;
            else if (!strcmp(a, "--expect"))
                expect = v;
            else if (!strcmp(a, "--device"))
                run_device = v;
            else if ((timeout = atoi(v)) <= 0)
                return usage_error("bad --timeout", v);
        } else {
            return usage_error("unknown argument", a);
        }
    }
    /* A CPU run does not need OpenCL: starting PoCL in every case's process costs time. */
    if (!strncmp(run_device, "cpu", 3)) {
        setenv("LOOM_OPENCL", "0", 0);
    } else {
        /* Probe in a child: a driver started here (PoCL's threads) would not survive the fork
         * of every case's process. */
        int found = 0;
        pid_t pid = fork();
        if (pid == 0) {
            loom_runtime *probe;
            if (loom_runtime_create(NULL, &probe) == LOOM_OK) {
                for (size_t i = 0; i < loom_runtime_device_count(probe) && !found; i++) {
                    char id[64];
                    loom_runtime_device(probe, i, id, sizeof id, NULL);
                    found = !strncmp(id, run_device, strlen(run_device));
                }
                loom_runtime_destroy(probe);
            }
            _exit(found ? 0 : 1);
        }
        int wst = 0;
        found = pid > 0 && waitpid(pid, &wst, 0) == pid && WIFEXITED(wst) &&
                WEXITSTATUS(wst) == 0;
        if (!found) {
            printf("SKIP: no device '%s' here\n", run_device);
            return 77;
        }
    }
    if (!exists(data, 1)) {
        printf("SKIP: no ONNX test data at %s (install the Debian package libonnx-testdata)\n",
               data);
        return 77;
    }

    /* The expected-pass list first, so that a missing file is reported before a long run. */
    char **expected = NULL;
    size_t n_expected = 0;
    if (expect) {
        FILE *f = fopen(expect, "r");
        if (!f) {
            fprintf(stderr, "onnx_conformance: cannot read '%s': %s\n", expect, strerror(errno));
            return 2;
        }
        char line[1024];
        size_t cap = 0;
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "#\r\n")] = '\0';
            char *s = line, *e;
            while (*s == ' ' || *s == '\t')
                s++;
            for (e = s + strlen(s); e > s && (e[-1] == ' ' || e[-1] == '\t'); e--)
                ;
            *e = '\0';
            if (!*s)
                continue;
            if (n_expected == cap) {
                cap = cap ? 2 * cap : 256;
                char **bigger = realloc(expected, cap * sizeof *expected);
                if (!bigger)
                    break;
                expected = bigger;
            }
            expected[n_expected++] = strdup(s);
            g_expected = expected;
        }
        fclose(f);
    }

    case_result *results = NULL;
    size_t n_results = 0, cap = 0;
    for (size_t s = 0; s < N_SUITES; s++) {
        char sdir[1024];
        snprintf(sdir, sizeof sdir, "%s/%s", data, suites[s]);
        size_t n_cases;
        char **cases = list_dir(sdir, NULL, &n_cases);
        g_cases = cases;
        for (size_t c = 0; c < n_cases; c++) {
            char cdir[2048], model[2100];
            snprintf(cdir, sizeof cdir, "%s/%s", sdir, cases[c]);
            snprintf(model, sizeof model, "%s/model.onnx", cdir);
            char *name = fmt("%s/%s", suites[s], cases[c]);
            if (!name || !exists(model, 0) || (filter && !strstr(name, filter))) {
                free(name);
                continue;
            }
            if (n_results == cap) {
                cap = cap ? 2 * cap : 1024;
                case_result *bigger = realloc(results, cap * sizeof *results);
                if (!bigger) {
                    free(name);
                    break;
                }
                results = bigger;
                g_results = results;
            }
            case_result *r = &results[n_results++];
            r->name = name;
            r->suite = (int)s;
            r->v = run_isolated(cdir, no_fork, timeout, &r->message);
            if (verbose)
                printf("%-11s %s%s%s\n",
                       r->v == V_PASS ? "pass" : r->v == V_FAIL ? "FAIL" : "unsupported", name,
                       r->message ? ": " : "", r->message ? r->message : "");
        }
        free_list(cases, n_cases);
    }

    size_t per[N_SUITES][3] = {{0}}, total[3] = {0};
    for (size_t i = 0; i < n_results; i++) {
        int k = results[i].v == V_PASS ? 0 : results[i].v == V_FAIL ? 1 : 2;
        per[results[i].suite][k]++;
        total[k]++;
    }
    printf("\nONNX backend tests from %s%s%s%s:\n", data, filter ? " (filter '" : "",
           filter ? filter : "", filter ? "')" : "");
    printf("  %-18s %6s %9s %6s %6s\n", "suite", "total", "supported", "passed", "failed");
    for (size_t s = 0; s < N_SUITES; s++)
        printf("  %-18s %6zu %9zu %6zu %6zu\n", suites[s], per[s][0] + per[s][1] + per[s][2],
               per[s][0] + per[s][1], per[s][0], per[s][1]);
    printf("  %-18s %6zu %9zu %6zu %6zu\n", "all", n_results, total[0] + total[1], total[0],
           total[1]);
    printf("total %zu, supported %zu, passed %zu\n", n_results, total[0] + total[1], total[0]);
    if (total[1]) {
        printf("\nfailures (%zu):\n", total[1]);
        for (size_t i = 0; i < n_results; i++)
            if (results[i].v == V_FAIL)
                printf("  %s: %s\n", results[i].name,
                       results[i].message ? results[i].message : "failed");
    }

    int rc = 0;
    if (list) {
        FILE *f = fopen(list, "w");
        if (!f) {
            fprintf(stderr, "onnx_conformance: cannot write '%s': %s\n", list, strerror(errno));
            rc = 2;
        } else {
            if (!strncmp(run_device, "cpu", 3))
                fprintf(f, "# ONNX backend test cases (libonnx-testdata) that pass on the CPU.\n"
                           "# Regenerate: onnx_conformance --list FILE\n");
            else
                fprintf(f, "# ONNX backend test cases (libonnx-testdata) that pass %s %s.\n"
                           "# Regenerate: onnx_conformance --device %s%s --list FILE\n",
                        run_strict ? "with every node on" : "with nodes on", run_device,
                        run_device, run_strict ? " --strict" : "");
            for (size_t i = 0; i < n_results; i++)
                if (results[i].v == V_PASS)
                    fprintf(f, "%s\n", results[i].name);
            if (fclose(f) != 0) {
                fprintf(stderr, "onnx_conformance: cannot write '%s'\n", list);
                rc = 2;
            }
        }
    }
    if (expect) {
        size_t missed = 0, checked = 0;
        for (size_t e = 0; e < n_expected; e++) {
            if (filter && !strstr(expected[e], filter))
                continue;
            checked++;
            const case_result *found = NULL;
            for (size_t i = 0; i < n_results && !found; i++)
                if (!strcmp(results[i].name, expected[e]))
                    found = &results[i];
            if (found && found->v == V_PASS)
                continue;
            if (!missed++)
                printf("\nexpected to pass but did not (%s):\n", expect);
            printf("  %s: %s\n", expected[e],
                   !found ? "no such case"
                   : found->message ? found->message
                                    : "failed");
        }
        if (missed) {
            printf("%zu expected case(s) did not pass\n", missed);
            rc = rc ? rc : 1;
        } else {
            printf("all %zu expected cases passed\n", checked);
        }
    }
    for (size_t i = 0; i < n_results; i++) {
        free(results[i].name);
        free(results[i].message);
    }
    free(results);
    for (size_t e = 0; e < n_expected; e++)
        free(expected[e]);
    free(expected);
    return rc;
}
