/*
 * A test plugin for the executor's failure paths: backend "odd-status", one host-visible device
 * (kind OTHER) that claims float32 Relu. Each call that runs a node has an outcome taken from
 * $LOOM_TEST_ODD_PATTERN (read when the plugin is queried), one character per call, the last one
 * repeating: '7' returns status 77 (outside loom_status: a plugin's bug the host must map), 'F'
 * returns LOOM_ERR_DEVICE_LOST, 'S' computes the right answer. Default "7". Every failure's
 * message ends with "(call N)", N counting the calls, so a test can tell whether the host called
 * the device at all (the circuit breaker).
 *
 * $LOOM_TEST_ODD says where a failure shows:
 *   execute  (default) execute() returns it, with its message;
 *   enqueue  the ABI 1.0 enqueue() refuses the submission with it and a message (submit() is
 *            offered too: the host must prefer enqueue);
 *   submit   only the ABI 0.2 submit(), which refuses with it and cannot say why;
 *   done     enqueue() accepts, and the completion callback reports it, with its message.
 */
#include "test_plugin.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct odd_state {
    loom_backend table;
    char pattern[64];
    atomic_long calls;
} odd_state;

static loom_status odd_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d = tp_device_facts("odd-status test device", LOOM_DEVICE_OTHER, 1);
    return tp_write_info(info, &d);
}

static int odd_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                        size_t reason_len)
{
    (void)ctx;
    int ok = tp_is_relu_f32(dev, node);
    if (!ok)
        snprintf(reason, reason_len, "odd-status: only float32 Relu");
    return ok;
}

static loom_status odd_prepare(void *ctx, uint32_t dev, const loom_node_desc *node,
                               void **kernel, size_t *scratch_bytes, char *err, size_t err_len)
{
    if (!odd_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    return tp_relu_prepare(node, kernel, scratch_bytes);
}

/* This call's outcome (as an int: 77 is no loom_status), its message in ERR when it fails. */
static int odd_outcome(odd_state *s, const char *where, char *err, size_t err_len)
{
    long call = atomic_fetch_add(&s->calls, 1) + 1;
    size_t len = strlen(s->pattern);
    char c = s->pattern[(size_t)call <= len ? (size_t)call - 1 : len - 1];
    if (c == 'S')
        return LOOM_OK;
    snprintf(err, err_len, "odd-status: %s failed with %s (call %ld)", where,
             c == '7' ? "its own status 77" : "device lost", call);
    return c == '7' ? 77 : LOOM_ERR_DEVICE_LOST;
}

static loom_status odd_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                               char *err, size_t err_len)
{
    (void)dev;
    int st = odd_outcome(ctx, "execute", err, err_len);
    if (st == LOOM_OK)
        tp_relu_run(kernel, args);
    return (loom_status)st;
}

/* Mode "done": accepted, run at once, reported through DONE (from this thread: allowed). */
static loom_status odd_enqueue_done(void *ctx, uint32_t dev, void *kernel,
                                    const loom_exec_args *args, loom_done_fn done, void *token,
                                    char *err, size_t err_len)
{
    (void)dev;
    (void)err;
    (void)err_len;
    char msg[256] = "";
    int st = odd_outcome(ctx, "the completion", msg, sizeof msg);
    if (st == LOOM_OK)
        tp_relu_run(kernel, args);
    done(token, (loom_status)st, st == LOOM_OK ? NULL : msg);
    return LOOM_OK;
}

/* Mode "enqueue": refused, with a message. */
static loom_status odd_enqueue_refuse(void *ctx, uint32_t dev, void *kernel,
                                      const loom_exec_args *args, loom_done_fn done, void *token,
                                      char *err, size_t err_len)
{
    (void)dev;
    int st = odd_outcome(ctx, "enqueue (queue full)", err, err_len);
    if (st != LOOM_OK)
        return (loom_status)st;
    tp_relu_run(kernel, args);
    done(token, LOOM_OK, NULL);
    return LOOM_OK;
}

/* Mode "submit" (and the submit() beside enqueue): refused, without a word. */
static loom_status odd_submit(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              void (*done)(void *token, loom_status status, const char *message),
                              void *token)
{
    (void)dev;
    char ignored[256];
    int st = odd_outcome(ctx, "submit", ignored, sizeof ignored);
    if (st != LOOM_OK)
        return (loom_status)st;
    tp_relu_run(kernel, args);
    done(token, LOOM_OK, NULL);
    return LOOM_OK;
}

static void odd_shutdown(void *ctx)
{
    free(ctx);
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host;
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return NULL;
    odd_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    const char *pattern = getenv("LOOM_TEST_ODD_PATTERN");
    snprintf(s->pattern, sizeof s->pattern, "%s", pattern && *pattern ? pattern : "7");
    atomic_init(&s->calls, 0);
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "odd-status";
    t->ctx = s;
    t->device_count = tp_one_device;
    t->device_info = odd_device_info;
    t->supports = odd_supports;
    t->prepare = odd_prepare;
    t->execute = odd_execute;
    t->release_kernel = tp_release_kernel;
    t->shutdown = odd_shutdown;
    const char *mode = getenv("LOOM_TEST_ODD");
    if (mode && !strcmp(mode, "enqueue")) {
        t->enqueue = odd_enqueue_refuse;
        t->submit = odd_submit;
    } else if (mode && !strcmp(mode, "submit")) {
        t->submit = odd_submit;
    } else if (mode && !strcmp(mode, "done")) {
        t->enqueue = odd_enqueue_done;
    }
    return t;
}
