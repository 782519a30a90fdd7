/*
 * libFuzzer target for the ONNX importer: any bytes given to loom_onnx_load_memory must give a
 * graph or an error, never a crash, a leak or undefined behaviour. Built and run by fuzz/run.sh.
 * External data files are looked up in $LOOM_FUZZ_BASE_DIR (run.sh points it at the test
 * models, so the fuzzer can reach external.bin).
 */
#include <loom/onnx.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Symbolic dims get a small value so that models with them get past input declaration. */
    loom_onnx_options options = {.struct_size = sizeof options, .default_dim = 2};
    loom_graph *graph = NULL;
    if (loom_onnx_load_memory(data, size, getenv("LOOM_FUZZ_BASE_DIR"), &options, &graph) ==
        LOOM_OK)
        loom_graph_destroy(graph);
    return 0;
}
