/*
 * Device copies of shared constants (sched_internal.h, "devconst"): a model's weights uploaded
 * once per device, however many shape specialisations (plans) of the model read them.
 *
 * A plan made for a model gets the model's cache. For a node placed on a device the host cannot
 * address whose backend says it takes device copies (loom_device_info.device_constants), every
 * constant input that the plan borrows (a weight of the model, not a constant folded for that
 * specialisation) is looked up by its host address and size: found, the plan takes a reference;
 * missing, a block is allocated on the device (the backend's alloc), the bytes uploaded, and the
 * entry registered. The device address goes to prepare() in input_device_constants. A plan
 * drops its references when it is destroyed, after its kernels are released; the last one frees
 * the block. Host data at one address is the same while any plan borrowing it lives (the
 * model's weight store is immutable; borrowed graph constants must stay unchanged while plans
 * use them), so the address and size are a sound key.
 */
#include "sched_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct devconst_entry {
    struct devconst_entry *next;
    const void *host;
    size_t bytes;
    uint32_t device;  /* runtime device */
    void *addr;       /* the block from the device's alloc */
    size_t refs;
};

struct devconst_cache {
    loom_runtime *rt;
    pthread_mutex_t lock;
    devconst_entry **buckets;
    size_t n_buckets, n_entries;
    size_t bytes;      /* held on devices now */
    uint64_t uploads;  /* blocks uploaded since the cache was made */
};

#define DEVCONST_BUCKETS 256

loom_status devconst_cache_create(loom_runtime *rt, devconst_cache **out)
{
    *out = NULL;
    devconst_cache *c = calloc(1, sizeof *c);
    if (c)
        c->buckets = calloc(DEVCONST_BUCKETS, sizeof *c->buckets);
    if (!c || !c->buckets) {
        free(c);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    c->rt = rt;
    c->n_buckets = DEVCONST_BUCKETS;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return LOOM_OK;
}

void devconst_cache_destroy(devconst_cache *c)
{
    if (!c)
        return;
    /* Every plan released its references before: nothing is left but, defensively, free it. */
    for (size_t b = 0; b < c->n_buckets; b++)
        for (devconst_entry *e = c->buckets[b], *next; e; e = next) {
            next = e->next;
            const runtime_device *dev = &c->rt->devices[e->device];
            dev->backend->free(dev->backend->ctx, dev->index, e->addr, e->bytes ? e->bytes : 1);
            free(e);
        }
    pthread_mutex_destroy(&c->lock);
    free(c->buckets);
    free(c);
}

static size_t bucket_of(const devconst_cache *c, const void *host, size_t bytes, uint32_t dev)
{
    uint64_t h = (uint64_t)(uintptr_t)host * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t)bytes * 0xc2b2ae3d27d4eb4full ^ (uint64_t)dev * 0x165667b19e3779f9ull;
    return (size_t)(h >> 40) & (c->n_buckets - 1);
}

int devconst_enabled(const loom_runtime *rt, uint32_t dev)
{
    /* LOOM_SHARED_DEVICE_WEIGHTS=0: every kernel copies its constants, as plain plans do (for
     * comparisons). */
    const char *env = getenv("LOOM_SHARED_DEVICE_WEIGHTS");
    if (env && !strcmp(env, "0"))
        return 0;
    const runtime_device *d = &rt->devices[dev];
    return !d->info.host_visible && LOOM_DEVICE_INFO_HAS_DEVICE_CONSTANTS(&d->info) &&
           d->info.device_constants && RUNTIME_SLOT(d->backend, alloc) &&
           RUNTIME_SLOT(d->backend, upload);
}

loom_status devconst_get(devconst_cache *c, uint32_t dev, const void *host, size_t bytes,
                         devconst_entry **out)
{
    *out = NULL;
    size_t b = bucket_of(c, host, bytes, dev);
    pthread_mutex_lock(&c->lock);
    for (devconst_entry *e = c->buckets[b]; e; e = e->next)
        if (e->host == host && e->bytes == bytes && e->device == dev) {
            e->refs++;
            pthread_mutex_unlock(&c->lock);
            *out = e;
            return LOOM_OK;
        }
    /* Uploaded under the lock: specialisations are made one at a time anyway, and two plans
     * wanting the same weight must not upload it twice. */
    const runtime_device *d = &c->rt->devices[dev];
    const loom_backend *be = d->backend;
    devconst_entry *e = calloc(1, sizeof *e);
    loom_status st = LOOM_OK;
    char err[512] = "";
    if (!e) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    } else if (!(e->addr = be->alloc(be->ctx, d->index, bytes ? bytes : 1, 64))) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of device "
                            "memory for a weight", d->id, bytes);
    } else if (bytes &&
               (st = runtime_backend_status(be, (int)be->upload(be->ctx, d->index, e->addr, host,
                                                                bytes, err, sizeof err),
                                            err, sizeof err)) != LOOM_OK) {
        be->free(be->ctx, d->index, e->addr, bytes ? bytes : 1);
        st = loom_set_error(st, "%s: uploading a weight of %zu bytes: %s", d->id, bytes,
                            err[0] ? err : loom_status_name(st));
    }
    if (st != LOOM_OK) {
        free(e);
        pthread_mutex_unlock(&c->lock);
        return st;
    }
    e->host = host;
    e->bytes = bytes;
    e->device = dev;
    e->refs = 1;
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->n_entries++;
    c->bytes += bytes;
    c->uploads++;
    pthread_mutex_unlock(&c->lock);
    *out = e;
    return LOOM_OK;
}

void *devconst_address(const devconst_entry *e)
{
    return e ? e->addr : NULL;
}

void devconst_put(devconst_cache *c, devconst_entry *e)
{
    if (!c || !e)
        return;
    size_t b = bucket_of(c, e->host, e->bytes, e->device);
    pthread_mutex_lock(&c->lock);
    if (--e->refs > 0) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    devconst_entry **pp = &c->buckets[b];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    c->n_entries--;
    c->bytes -= e->bytes;
    pthread_mutex_unlock(&c->lock);
    const runtime_device *d = &c->rt->devices[e->device];
    d->backend->free(d->backend->ctx, d->index, e->addr, e->bytes ? e->bytes : 1);
    free(e);
}

void devconst_stats(devconst_cache *c, size_t *bytes, size_t *entries, uint64_t *uploads)
{
    if (!c) {
        *bytes = *entries = 0;
        *uploads = 0;
        return;
    }
    pthread_mutex_lock(&c->lock);
    *bytes = c->bytes;
    *entries = c->n_entries;
    *uploads = c->uploads;
    pthread_mutex_unlock(&c->lock);
}
