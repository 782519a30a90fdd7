/* Placeholder: .npy reading and writing land here. */
#include "sched_internal.h"

loom_status loom_tensor_load_npy(const char *path, loom_tensor **out)
{
    (void)path;
    *out = NULL;
    return loom_set_error(LOOM_ERR_UNSUPPORTED, ".npy reading is not built yet");
}

loom_status loom_tensor_save_npy(const char *path, const loom_tensor *tensor)
{
    (void)path, (void)tensor;
    return loom_set_error(LOOM_ERR_UNSUPPORTED, ".npy writing is not built yet");
}
