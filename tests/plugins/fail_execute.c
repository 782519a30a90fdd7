/*
 * A deliberately broken plugin for the loader's tests: backend "fail-execute" with one device
 * (kind OTHER) that claims Relu and Add on float32 (any precision, no broadcasting) and whose
 * execute fails with "fail-execute: injected failure (call N)". With $LOOM_TEST_FAIL_AFTER=N
 * (read when the plugin is queried) the first N executions compute the right answer and every
 * later one fails; without it every execution fails. Lets the host's run-time fallback (re-run
 * the node on another device) be tested. With $LOOM_TEST_ASYNC=1 it also offers the ABI 0.2
 * submit() slot: the work runs on a thread of the plugin, which reports through done(), so the
 * host's asynchronous path is tested the same way.
 */
#include "test_plugin.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fx_state {
    loom_backend table;
    long fail_after; /* -1: fail always */
    atomic_long calls;
    pthread_mutex_t lock; /* guards LAST: the previous submit's thread, joined before the next */
    pthread_t last;
    int have_last;
} fx_state;

static loom_status fx_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d = tp_device_facts("fail-execute test device", LOOM_DEVICE_OTHER, 1);
    return tp_write_info(info, &d);
}

static int same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return 0;
    return 1;
}

static int fx_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    (void)ctx;
    int ok = dev == 0 && (node->op == LOOM_OP_RELU || node->op == LOOM_OP_ADD) &&
             node->inputs[0].dtype == LOOM_DTYPE_F32;
    if (ok && node->op == LOOM_OP_ADD)
        ok = same_shape(&node->inputs[0], &node->inputs[1]) &&
             same_shape(&node->inputs[0], &node->outputs[0]);
    if (!ok)
        snprintf(reason, reason_len, "fail-execute: only float32 Relu and Add (same shapes)");
    return ok;
}

static loom_status fx_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    if (!fx_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    int64_t *k = malloc(2 * sizeof *k);
    if (!k)
        return LOOM_ERR_OUT_OF_MEMORY;
    k[0] = node->op;
    k[1] = loom_tensor_desc_numel(&node->outputs[0]);
    *kernel = k;
    *scratch_bytes = 0;
    return LOOM_OK;
}

static loom_status fx_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    fx_state *s = ctx;
    (void)dev;
    long call = atomic_fetch_add(&s->calls, 1) + 1;
    if (s->fail_after < 0 || call > s->fail_after) {
        snprintf(err, err_len, "fail-execute: injected failure (call %ld)", call);
        return LOOM_ERR_DEVICE_LOST;
    }
    const int64_t *k = kernel;
    const float *a = args->inputs[0];
    float *y = args->outputs[0];
    if (k[0] == LOOM_OP_RELU)
        for (int64_t i = 0; i < k[1]; i++)
            y[i] = a[i] > 0 ? a[i] : 0.0f;
    else
        for (int64_t i = 0; i < k[1]; i++)
            y[i] = a[i] + ((const float *)args->inputs[1])[i];
    return LOOM_OK;
}

typedef struct fx_job {
    fx_state *s;
    void *kernel;
    loom_exec_args args;
    void (*done)(void *token, loom_status status, const char *message);
    void *token;
} fx_job;

static void *fx_job_main(void *arg)
{
    fx_job *j = arg;
    char err[256] = "";
    loom_status st = fx_execute(j->s, 0, j->kernel, &j->args, err, sizeof err);
    void (*done)(void *, loom_status, const char *) = j->done;
    void *token = j->token;
    free(j);
    done(token, st, err[0] ? err : NULL);
    return NULL;
}

static loom_status fx_submit(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                             void (*done)(void *token, loom_status status, const char *message),
                             void *token)
{
    fx_state *s = ctx;
    (void)dev;
    fx_job *j = malloc(sizeof *j);
    if (!j)
        return LOOM_ERR_OUT_OF_MEMORY;
    *j = (fx_job){s, kernel, *args, done, token};
    pthread_mutex_lock(&s->lock);
    if (s->have_last) /* it has called done() already: only its return is left */
        pthread_join(s->last, NULL);
    s->have_last = pthread_create(&s->last, NULL, fx_job_main, j) == 0;
    pthread_mutex_unlock(&s->lock);
    if (!s->have_last) {
        free(j);
        return LOOM_ERR_DEVICE_LOST;
    }
    return LOOM_OK;
}

static void fx_shutdown(void *ctx)
{
    fx_state *s = ctx;
    if (s->have_last)
        pthread_join(s->last, NULL);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host;
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return NULL;
    fx_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fail_after = -1;
    const char *env = getenv("LOOM_TEST_FAIL_AFTER");
    if (env && *env)
        s->fail_after = strtol(env, NULL, 10);
    atomic_init(&s->calls, 0);
    pthread_mutex_init(&s->lock, NULL);
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "fail-execute";
    t->ctx = s;
    t->device_count = tp_one_device;
    t->device_info = fx_device_info;
    t->supports = fx_supports;
    t->prepare = fx_prepare;
    t->execute = fx_execute;
    t->release_kernel = tp_release_kernel;
    t->shutdown = fx_shutdown;
    const char *async = getenv("LOOM_TEST_ASYNC");
    if (async && !strcmp(async, "1"))
        t->submit = fx_submit;
    return t;
}
