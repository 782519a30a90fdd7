/*
 * The runtime: starts the built-in backends and lists their devices. Plugins (loaded from
 * LOOM_BACKEND_PATH) join here when the loader lands; the built-in CPU backend already goes
 * through the same loom_backend table a plugin exposes.
 */
#include "sched_internal.h"

#include "backends/cpu/cpu_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static loom_status add_backend(loom_runtime *rt, const loom_backend *be)
{
    if ((be->abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return loom_set_error(LOOM_ERR_UNSUPPORTED,
                              "backend '%s' was built for ABI %u.%u; this Loom speaks %u.x",
                              be->name, be->abi_version >> 16, be->abi_version & 0xffff,
                              LOOM_ABI_VERSION_MAJOR);
    if (rt->n_backends >= LOOM_MAX_BACKENDS)
        return loom_set_error(LOOM_ERR_UNSUPPORTED, "too many backends (at most %d)",
                              LOOM_MAX_BACKENDS);
    uint32_t n = be->device_count(be->ctx);
    lr_device *d = realloc(rt->devices, (rt->n_devices + n + 1) * sizeof *d);
    if (!d)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory listing devices");
    rt->devices = d;
    rt->backends[rt->n_backends++] = be;
    for (uint32_t i = 0; i < n; i++) {
        lr_device *dev = &rt->devices[rt->n_devices];
        memset(dev, 0, sizeof *dev);
        snprintf(dev->id, sizeof dev->id, "%s:%u", be->name, i);
        dev->backend = be;
        dev->index = i;
        dev->info.abi_version = LOOM_ABI_VERSION;
        dev->info.struct_size = sizeof dev->info;
        if (be->device_info(be->ctx, i, &dev->info) != LOOM_OK) {
            fprintf(stderr, "loom: warning: device %s did not describe itself; skipped\n",
                    dev->id);
            continue;
        }
        rt->n_devices++;
    }
    return LOOM_OK;
}

loom_status loom_runtime_create(const loom_runtime_options *options, loom_runtime **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "runtime: out is NULL");
    *out = NULL;
    unsigned threads = 0;
    if (options) {
        if (options->struct_size < sizeof(uint32_t) * 2)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "runtime options: struct_size %u is too small (set it to "
                                  "sizeof(loom_runtime_options))", options->struct_size);
        threads = options->cpu_threads;
    }
    loom_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory creating the runtime");
    char err[256] = "";
    const loom_backend *cpu = loom_cpu_backend_create(threads, err, sizeof err);
    if (!cpu) {
        free(rt);
        return loom_set_error(LOOM_ERR_DEVICE_LOST, "CPU backend: %s", err);
    }
    loom_status st = add_backend(rt, cpu);
    if (st != LOOM_OK) {
        cpu->shutdown(cpu->ctx);
        free(rt->devices);
        free(rt);
        return st;
    }
    if (rt->n_devices == 0) {
        loom_runtime_destroy(rt);
        return loom_set_error(LOOM_ERR_DEVICE_LOST, "no device could start");
    }
    *out = rt;
    return LOOM_OK;
}

void loom_runtime_destroy(loom_runtime *rt)
{
    if (!rt)
        return;
    for (size_t i = rt->n_backends; i-- > 0;)
        if (rt->backends[i]->shutdown)
            rt->backends[i]->shutdown(rt->backends[i]->ctx);
    free(rt->devices);
    free(rt);
}

size_t loom_runtime_device_count(const loom_runtime *rt)
{
    return rt ? rt->n_devices : 0;
}

loom_status loom_runtime_device(const loom_runtime *rt, size_t i, char *id, size_t id_len,
                                loom_device_info *info)
{
    if (!rt || i >= rt->n_devices)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "device %zu does not exist", i);
    if (id && id_len)
        snprintf(id, id_len, "%s", rt->devices[i].id);
    if (info) {
        size_t n = info->struct_size && info->struct_size < sizeof *info ? info->struct_size
                                                                          : sizeof *info;
        memcpy(info, &rt->devices[i].info, n);
    }
    return LOOM_OK;
}
