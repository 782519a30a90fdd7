/*
 * A test plugin whose misbehaviours are asked for through the environment (read when it is
 * queried): backend "quirks", one device (kind OTHER, host-visible) that runs float32 Relu.
 *
 *   every execute()                 logs the warning "relu of N elements ran" through the host
 *                                   (at run time: the host must still prefix it "quirks: ")
 *   LOOM_TEST_QUIRKS_LOG=N          loom_backend_query logs N info lines "line K of N"
 *   LOOM_TEST_QUIRKS_SLEEP_MS=N     loom_backend_query sleeps N milliseconds first
 *   LOOM_TEST_QUIRKS_PREPARE_STATUS=S  prepare() fails with status S (77: not a loom_status)
 *                                   and the message "quirks: prepare fails on purpose"
 *   LOOM_TEST_QUIRKS_NO_PREPARE=1   the table leaves the required slot prepare NULL
 */
#include "test_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct qk_state {
    loom_backend table;
    loom_host host; /* copied: valid until shutdown, as the ABI says */
    int have_log;
    int prepare_status; /* 0: prepare works */
} qk_state;

static void qk_log(const qk_state *s, loom_log_level level, const char *msg)
{
    if (s->have_log)
        s->host.log(s->host.host_ctx, level, msg);
}

static loom_status qk_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d = tp_device_facts("quirks test device", LOOM_DEVICE_OTHER, 1);
    return tp_write_info(info, &d);
}

static int qk_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    (void)ctx;
    if (tp_is_relu_f32(dev, node))
        return 1;
    snprintf(reason, reason_len, "quirks: only float32 Relu");
    return 0;
}

static loom_status qk_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    const qk_state *s = ctx;
    if (!qk_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    if (s->prepare_status) {
        snprintf(err, err_len, "quirks: prepare fails on purpose");
        return (loom_status)s->prepare_status;
    }
    return tp_relu_prepare(node, kernel, scratch_bytes);
}

static loom_status qk_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    (void)dev;
    (void)err;
    (void)err_len;
    tp_relu_run(kernel, args);
    const int64_t n = *(const int64_t *)kernel;
    char msg[64];
    snprintf(msg, sizeof msg, "relu of %lld elements ran", (long long)n);
    qk_log(ctx, LOOM_LOG_WARNING, msg);
    return LOOM_OK;
}

static void qk_shutdown(void *ctx)
{
    free(ctx);
}

static long env_long(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return NULL;
    long sleep_ms = env_long("LOOM_TEST_QUIRKS_SLEEP_MS");
    if (sleep_ms > 0) {
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    qk_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log && host->log) {
        s->host = *host;
        s->have_log = 1;
    }
    s->prepare_status = (int)env_long("LOOM_TEST_QUIRKS_PREPARE_STATUS");
    long lines = env_long("LOOM_TEST_QUIRKS_LOG");
    for (long i = 1; i <= lines; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "line %ld of %ld", i, lines);
        qk_log(s, LOOM_LOG_INFO, msg);
    }
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "quirks";
    t->ctx = s;
    t->device_count = tp_one_device;
    t->device_info = qk_device_info;
    t->supports = qk_supports;
    t->prepare = qk_prepare;
    t->execute = qk_execute;
    t->release_kernel = tp_release_kernel;
    t->shutdown = qk_shutdown;
    if (env_long("LOOM_TEST_QUIRKS_NO_PREPARE") == 1)
        t->prepare = NULL;
    return t;
}
