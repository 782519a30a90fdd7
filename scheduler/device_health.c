/*
 * The circuit breaker of a failing device. A node whose device fails is re-run on its fallback
 * device (executor.c); a device that fails on every run would still be tried, and fail, on every
 * run. After LOOM_BREAKER_FAILED_RUNS consecutive runs in which a node failed on a device, that
 * device is set aside for a cool-down (LOOM_BREAKER_COOLDOWN_MS, doubling at each trip up to
 * LOOM_BREAKER_COOLDOWN_MAX_MS): nodes placed on it that have a fallback run there straight away,
 * without trying it. When the cool-down is over the device is tried again; a run in which it
 * works resets the count and the doubling, a failure sets it aside again at once.
 *
 * The state is per runtime device and shared by every plan of the runtime: three atomics. The
 * executor reads until_ns once per node with a fallback (a relaxed load, 0 while in service) and
 * reports each run's outcome per device at the run's end. Only non-strict plans take part: a
 * strict plan has no fallback, so it always tries the device and neither counts nor skips.
 */
#include "sched_internal.h"

#include <stdlib.h>

/* An environment override of a default, or the default when unset or not a whole number. */
static uint64_t env_or(const char *name, uint64_t fallback)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return fallback;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    return *end || s[0] == '-' ? fallback : (uint64_t)v;
}

int device_health_check(loom_runtime *rt, uint32_t device, uint64_t until)
{
    runtime_device *dev = &rt->devices[device];
    if (loom_now_ns() < until)
        return 1;
    /* The cool-down is over: back in service. One caller wins and says so. */
    if (atomic_compare_exchange_strong(&dev->health.until_ns, &until, 0))
        runtime_message(rt, "device %s tried again after its cool-down", dev->id);
    return 0;
}

/* The device PLAN's nodes on DEVICE re-run on (the first one's), or NULL when none has one. */
static const char *fallback_of(const loom_plan *plan, uint32_t device)
{
    for (uint32_t p = 0; p < plan->n_nodes; p++)
        if (plan->nodes[p].device == device && plan->nodes[p].fb_kernel)
            return plan->rt->devices[plan->nodes[p].fb_device].id;
    return NULL;
}

void device_health_failed_run(const loom_plan *plan, uint32_t device)
{
    loom_runtime *rt = plan->rt;
    runtime_device *dev = &rt->devices[device];
    uint64_t runs = env_or("LOOM_BREAKER_RUNS", LOOM_BREAKER_FAILED_RUNS);
    unsigned n = atomic_fetch_add(&dev->health.failed_runs, 1) + 1;
    if (!runs || n < runs || atomic_load(&dev->health.until_ns))
        return;
    uint64_t base = env_or("LOOM_BREAKER_COOLDOWN_MS", LOOM_BREAKER_COOLDOWN_MS);
    uint64_t cap = env_or("LOOM_BREAKER_COOLDOWN_MAX_MS", LOOM_BREAKER_COOLDOWN_MAX_MS);
    if (cap < base)
        cap = base;
    unsigned trips = atomic_load(&dev->health.trips);
    uint64_t ms = base;
    for (unsigned k = 0; k < trips && ms < cap; k++)
        ms *= 2;
    if (ms > cap)
        ms = cap;
    if (!ms)
        ms = 1; /* until_ns 0 means in service */
    uint64_t expected = 0;
    if (!atomic_compare_exchange_strong(&dev->health.until_ns, &expected,
                                        loom_now_ns() + ms * 1000000ull))
        return; /* another run set it aside meanwhile */
    atomic_fetch_add(&dev->health.trips, 1);
    runtime_message(rt, "device %s set aside for %g s after %u failed runs; its nodes run on %s",
                    dev->id, (double)ms / 1e3, n,
                    fallback_of(plan, device) ? fallback_of(plan, device) : "their fallback device");
}

void device_health_good_run(loom_runtime *rt, uint32_t device)
{
    device_health *h = &rt->devices[device].health;
    /* Only in service: a device set aside did not run, so it has not recovered. */
    if (atomic_load_explicit(&h->until_ns, memory_order_relaxed))
        return;
    if (atomic_load_explicit(&h->failed_runs, memory_order_relaxed))
        atomic_store(&h->failed_runs, 0);
    if (atomic_load_explicit(&h->trips, memory_order_relaxed))
        atomic_store(&h->trips, 0);
}
