/* Placeholder: TensorProto reading lands here. */
#include <loom/onnx.h>

#include "graph/graph_internal.h"

loom_status loom_tensor_load_pb(const char *path, loom_tensor **out, char *name, size_t name_len)
{
    (void)path, (void)name, (void)name_len;
    *out = NULL;
    return loom_set_error(LOOM_ERR_UNSUPPORTED, "TensorProto reading is not built yet");
}
