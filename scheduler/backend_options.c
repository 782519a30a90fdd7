/*
 * Backend options (backend ABI 1.0): the strings "BACKEND:KEY=VALUE" of
 * loom_runtime_options.backend_options, parsed once when the runtime is created, handed to each
 * backend's set_option after its table was accepted and before its devices are listed
 * (runtime_add_backend), and checked once every backend is in: an option for a backend that did
 * not load, a key the backend does not declare, a malformed string or a value the backend
 * refused fails loom_runtime_create with LOOM_ERR_INVALID_ARGUMENT naming the option. The
 * values given stay with the runtime so that `loom devices` can list them.
 */
#include "sched_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct backend_option_entry {
    char *text;              /* the string as the user gave it, for messages */
    char *backend, *key, *value;
    int seen;                /* a backend of that name was offered it */
} backend_option_entry;

struct backend_option_set {
    backend_option_entry *entries;
    size_t n;
    /* The first refusal (a key not declared, a value refused): loom_runtime_create fails with
     * it once the backends are in. */
    loom_status status;
    char message[1024];
};

/* A backend name or key: what the ABI lets a backend call itself ("npu-sim", "cpu_threads"). */
static int valid_word(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void backend_options_free(backend_option_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++) {
        free(set->entries[i].text);
        free(set->entries[i].backend);
        free(set->entries[i].key);
        free(set->entries[i].value);
    }
    free(set->entries);
    free(set);
}

loom_status backend_options_parse(const loom_runtime_options *o, backend_option_set **out)
{
    *out = NULL;
    if (!o || o->struct_size < offsetof(loom_runtime_options, n_backend_options) +
                                   sizeof o->n_backend_options)
        return LOOM_OK; /* an older struct: no options */
    if (!o->n_backend_options)
        return LOOM_OK;
    if (!o->backend_options)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "runtime options: backend_options is NULL but n_backend_options "
                              "is %zu", o->n_backend_options);
    backend_option_set *set = calloc(1, sizeof *set);
    if (set)
        set->entries = calloc(o->n_backend_options, sizeof *set->entries);
    if (!set || !set->entries) {
        backend_options_free(set);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory reading backend options");
    }
    for (size_t i = 0; i < o->n_backend_options; i++) {
        const char *s = o->backend_options[i];
        if (!s) {
            backend_options_free(set);
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "runtime options: backend_options[%zu] is NULL", i);
        }
        const char *colon = strchr(s, ':');
        const char *eq = colon ? strchr(colon + 1, '=') : NULL;
        if (!colon || !eq || !valid_word(s, (size_t)(colon - s)) ||
            !valid_word(colon + 1, (size_t)(eq - colon - 1))) {
            backend_options_free(set);
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "backend option '%.200s' is malformed: expected "
                                  "BACKEND:KEY=VALUE (npu-sim:profile=edge.json)", s);
        }
        backend_option_entry *e = &set->entries[set->n++];
        e->text = strdup(s);
        e->backend = dup_n(s, (size_t)(colon - s));
        e->key = dup_n(colon + 1, (size_t)(eq - colon - 1));
        e->value = strdup(eq + 1);
        if (!e->text || !e->backend || !e->key || !e->value) {
            backend_options_free(set);
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory reading backend options");
        }
    }
    *out = set;
    return LOOM_OK;
}

/* The options BE declares, or none when its table predates ABI 1.0. */
static const loom_backend_option *declared(const loom_backend *be, uint32_t *n)
{
    *n = 0;
    if (be->struct_size < offsetof(loom_backend, n_options) + sizeof be->n_options)
        return NULL;
    if (!be->options)
        return NULL;
    *n = be->n_options;
    return be->options;
}

static int declares(const loom_backend *be, const char *key)
{
    uint32_t n;
    const loom_backend_option *opts = declared(be, &n);
    for (uint32_t k = 0; k < n; k++)
        if (opts[k].key && !strcmp(opts[k].key, key))
            return 1;
    return 0;
}

/* The keys BE declares, "a, b, c" into BUF (for "it declares ..."). */
static void key_list(const loom_backend *be, char *buf, size_t len)
{
    uint32_t n;
    const loom_backend_option *opts = declared(be, &n);
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t k = 0; k < n && used < len; k++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", k ? ", " : "",
                                 opts[k].key ? opts[k].key : "?");
}

/* Record the first refusal in SET and set the thread's error to it. */
static loom_status refuse(backend_option_set *set, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static loom_status refuse(backend_option_set *set, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (set->status == LOOM_OK) {
        set->status = LOOM_ERR_INVALID_ARGUMENT;
        snprintf(set->message, sizeof set->message, "%s", msg);
    }
    return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "%s", msg);
}

loom_status backend_options_apply(loom_runtime *rt, const loom_backend *be)
{
    backend_option_set *set = rt->options;
    if (!set || !be->name)
        return LOOM_OK;
    for (size_t i = 0; i < set->n; i++) {
        backend_option_entry *e = &set->entries[i];
        if (strcmp(e->backend, be->name) != 0)
            continue;
        e->seen = 1;
        if (!declares(be, e->key)) {
            char keys[512];
            key_list(be, keys, sizeof keys);
            return refuse(set, "backend option '%.200s': backend '%s' has no option '%s' (%s%s)",
                          e->text, be->name, e->key, keys[0] ? "it declares: " : "it declares none",
                          keys);
        }
        loom_status (*set_option)(void *, const char *, const char *, char *, size_t) =
            RUNTIME_SLOT(be, set_option);
        if (!set_option)
            return refuse(set, "backend option '%.200s': backend '%s' declares options but has no "
                          "set_option", e->text, be->name);
        char err[512] = "";
        int raw = set_option(be->ctx, e->key, e->value, err, sizeof err);
        loom_status st = runtime_backend_status(be, raw, err, sizeof err);
        if (st != LOOM_OK)
            return refuse(set, "backend option '%.200s' refused by backend '%s': %s", e->text,
                          be->name, err[0] ? err : loom_status_name(st));
    }
    return LOOM_OK;
}

loom_status backend_options_check(loom_runtime *rt)
{
    backend_option_set *set = rt->options;
    if (!set)
        return LOOM_OK;
    if (set->status != LOOM_OK)
        return loom_set_error(set->status, "%s", set->message);
    for (size_t i = 0; i < set->n; i++) {
        if (set->entries[i].seen)
            continue;
        char names[256];
        size_t used = 0;
        names[0] = '\0';
        for (size_t b = 0; b < rt->n_backends && used < sizeof names; b++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", b ? ", " : "",
                                     rt->backends[b]->name);
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "backend option '%.200s': no backend '%s' is loaded (loaded: %s)",
                              set->entries[i].text, set->entries[i].backend, names);
    }
    return LOOM_OK;
}

const char *backend_options_value(const loom_runtime *rt, const char *backend, const char *key)
{
    const backend_option_set *set = rt ? rt->options : NULL;
    const char *v = NULL;
    for (size_t i = 0; set && i < set->n; i++)
        if (!strcmp(set->entries[i].backend, backend) && !strcmp(set->entries[i].key, key))
            v = set->entries[i].value; /* the last one given wins, as set_option saw them */
    return v;
}

/* ---- the public listing ------------------------------------------------------------------ */

size_t loom_runtime_backend_count(const loom_runtime *rt)
{
    return rt ? rt->n_backends : 0;
}

loom_status loom_runtime_backend_info(const loom_runtime *rt, size_t i, const char **name,
                                      uint32_t *abi_version, size_t *n_options)
{
    if (!rt)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "runtime_backend_info: runtime is NULL");
    if (i >= rt->n_backends)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "backend %zu does not exist (%zu backends)", i, rt->n_backends);
    loom_clear_error();
    const loom_backend *be = rt->backends[i];
    uint32_t n;
    declared(be, &n);
    if (name)
        *name = be->name;
    if (abi_version)
        *abi_version = be->abi_version;
    if (n_options)
        *n_options = n;
    return LOOM_OK;
}

loom_status loom_runtime_backend_option(const loom_runtime *rt, size_t i, size_t j,
                                        const loom_backend_option **option, const char **value)
{
    if (!rt)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "runtime_backend_option: runtime is NULL");
    if (i >= rt->n_backends)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "backend %zu does not exist (%zu backends)", i, rt->n_backends);
    const loom_backend *be = rt->backends[i];
    uint32_t n;
    const loom_backend_option *opts = declared(be, &n);
    if (j >= n)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "backend '%s' has no option %zu (%u options)", be->name, j, n);
    loom_clear_error();
    if (option)
        *option = &opts[j];
    if (value)
        *value = opts[j].key ? backend_options_value(rt, be->name, opts[j].key) : NULL;
    return LOOM_OK;
}
