/*
 * A deliberately broken plugin for the loader's tests: loom_backend_query logs a reason through
 * the host ("fail-init: no device here (deliberate test failure)") and returns NULL, as a
 * plugin does when its hardware or driver is absent. The host must refuse it, keep the reason
 * in its messages, and start the other backends.
 */
#include <loom/backend.h>

#include <stddef.h>

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host_abi_version;
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log && host->log)
        host->log(host->host_ctx, LOOM_LOG_ERROR,
                  "fail-init: no device here (deliberate test failure)");
    return NULL;
}
