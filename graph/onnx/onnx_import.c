/* Placeholder: the ONNX importer lands here. */
#include <loom/onnx.h>

#include "graph/graph_internal.h"

loom_status loom_onnx_load_memory(const void *data, size_t size, const char *base_dir,
                                  const loom_onnx_options *options, loom_graph **out)
{
    (void)data, (void)size, (void)base_dir, (void)options;
    *out = NULL;
    return loom_set_error(LOOM_ERR_UNSUPPORTED, "ONNX import is not built yet");
}

loom_status loom_onnx_load(const char *path, const loom_onnx_options *options, loom_graph **out)
{
    return loom_onnx_load_memory(path, 0, NULL, options, out);
}
