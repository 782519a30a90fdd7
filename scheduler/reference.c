/*
 * The reference evaluator: the CPU backend's kernels, run on the calling thread over host memory.
 * The graph and passes layers link no kernels; the public calls that evaluate nodes while a graph
 * is built (folding, ONNX import) live here and hand the evaluator down.
 */
#include "sched_internal.h"

#include "backends/cpu/cpu_backend.h"
#include "graph/onnx/onnx_import.h"

graph_eval_fn runtime_reference_eval(void)
{
    return loom_cpu_eval_node;
}

loom_status runtime_reference_eval_value_dependent(const loom_node_desc *node,
                                                   const void *const *inputs,
                                                   void *const *outputs, loom_tensor_desc *actual,
                                                   char *err, size_t err_len)
{
    return loom_cpu_eval_value_dependent(node, inputs, outputs, actual, err, err_len);
}

loom_status loom_graph_set_folding(loom_graph *graph, int enable)
{
    return graph_set_folding(graph, enable, enable ? loom_cpu_eval_node : NULL);
}

loom_status loom_onnx_load_memory(const void *data, size_t size, const char *base_dir,
                                  const loom_onnx_options *options, loom_graph **out)
{
    loom_status st = onnx_import_memory(data, size, base_dir, options, loom_cpu_eval_node, out);
    if (st == LOOM_OK)
        loom_clear_error(); /* a success leaves loom_last_error() "" (loom/core.h) */
    return st;
}

loom_status loom_onnx_load(const char *path, const loom_onnx_options *options, loom_graph **out)
{
    loom_status st = onnx_import_file(path, options, loom_cpu_eval_node, out);
    if (st == LOOM_OK)
        loom_clear_error();
    return st;
}
