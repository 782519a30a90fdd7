/*
 * A deliberately broken plugin for the loader's tests: a valid shared object that exports
 * nothing named loom_backend_query (only a misspelt look-alike), so the host must refuse it
 * with a message naming the file and the missing symbol.
 */
#include <loom/backend.h>

#include <stddef.h>

__attribute__((visibility("default"))) const loom_backend *
loom_backend_qeury(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_qeury(uint32_t host_abi_version, const loom_host *host)
{
    (void)host_abi_version;
    (void)host;
    return NULL;
}
