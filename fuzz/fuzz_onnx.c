/*
 * libFuzzer target for the ONNX importer: any bytes given to loom_onnx_load_memory must give a
 * graph or an error, never a crash, a leak or undefined behaviour. Built and run by fuzz/run.sh.
 * External data files are looked up in $LOOM_FUZZ_BASE_DIR (run.sh points it at the test
 * models, so the fuzzer can reach external.bin).
 *
 * Dynamic shapes (include/loom/model.h): when the bytes import and the model declares a dynamic
 * input dimension (dim_param, unnamed or negative), the same bytes are loaded as a loom_model
 * (through a memfd, as the model API reads a path) and run at two shapes derived from the bytes:
 * one that gives each symbol one value, one that gives each dimension its own (so symbols may be
 * bound two ways, which must be refused). Every dynamic dim is 1 to 4; integer inputs hold small
 * values from the bytes (a Reshape's shape, a TopK's K fed as inputs); a 1 MiB memory cap makes
 * the model refuse any absurd computed shape before allocating it. Each run must succeed or fail
 * with a status and a message, never crash, leak or allocate the absurd size.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <loom/loom.h>
#include <loom/model.h>
#include <loom/onnx.h>

#include "graph/onnx/onnx_import.h" /* onnx_unpack: a cheap look at the declared inputs */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MODEL_MEMORY_CAP ((size_t)1 << 20) /* per tensor and per specialisation */
#define MAX_INPUT_BYTES ((size_t)1 << 16)  /* skip a shape whose inputs would be larger */
#define MAX_INPUTS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A hash of the bytes, the source of the shapes and the integer values. */
static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static loom_runtime *runtime(void)
{
    static loom_runtime *rt; /* one per process: starting the CPU backend is not cheap */
    static int tried;
    if (!tried) {
        tried = 1;
        /* The CPU alone: the shape path is what is fuzzed here, not a GPU driver. */
        setenv("LOOM_OPENCL", "0", 1);
        loom_runtime_options ro = {.struct_size = sizeof ro, .cpu_threads = 1,
                                   .no_default_plugins = 1};
        if (loom_runtime_create(&ro, &rt) != LOOM_OK)
            rt = NULL;
    }
    return rt;
}

/* Run M once with inputs whose dynamic dims come from SEED: per symbol (BY_SYMBOL) or per dim.
 * Inputs too large to make are skipped. */
static void run_at_shape(loom_model *m, uint64_t seed, int by_symbol)
{
    size_t n_in = loom_model_input_count(m), n_out = loom_model_output_count(m);
    if (n_in > MAX_INPUTS || n_out > 64)
        return;
    loom_tensor *in[MAX_INPUTS] = {0};
    loom_tensor *out[64] = {0};
    size_t total = 0;
    int ok = 1;
    for (size_t i = 0; ok && i < n_in; i++) {
        loom_model_io io = {.struct_size = sizeof io};
        if (loom_model_input_info(m, i, &io) != LOOM_OK || io.dtype == LOOM_DTYPE_UNDEFINED) {
            ok = 0;
            break;
        }
        uint32_t rank = io.rank < 0 ? 0 : (uint32_t)io.rank;
        int64_t dims[LOOM_MAX_RANK];
        size_t numel = 1;
        for (uint32_t k = 0; k < rank; k++) {
            if (io.dims[k] >= 0)
                dims[k] = io.dims[k];
            else if (by_symbol && io.dim_params[k])
                dims[k] = 1 + (int64_t)(mix(seed, hash_str(io.dim_params[k])) % 4);
            else
                dims[k] = 1 + (int64_t)(mix(seed, i * LOOM_MAX_RANK + k) % 4);
            if (dims[k] > 0 && numel > MAX_INPUT_BYTES / (size_t)dims[k])
                ok = 0;
            numel *= (size_t)dims[k];
        }
        size_t esize = loom_dtype_size(io.dtype);
        if (!ok || !esize || numel > MAX_INPUT_BYTES / esize ||
            (total += numel * esize) > MAX_INPUT_BYTES ||
            loom_tensor_create(io.dtype, rank, dims, &in[i]) != LOOM_OK) {
            ok = 0;
            break;
        }
        /* Integer inputs may be shapes, axes or counts: small values, -1 included. */
        unsigned char *p = loom_tensor_data(in[i]);
        for (size_t e = 0; p && e < numel; e++) {
            int64_t v = (int64_t)(mix(seed, (i << 20) + e) % 6) - 1;
            if (io.dtype == LOOM_DTYPE_I64)
                ((int64_t *)p)[e] = v;
            else if (io.dtype == LOOM_DTYPE_I32)
                ((int32_t *)p)[e] = (int32_t)v;
        }
    }
    if (ok) {
        loom_status st = loom_model_run(m, (const loom_tensor *const *)in, n_in, out, n_out,
                                        NULL);
        if (st != LOOM_OK && !*loom_last_error())
            abort(); /* a failure must say why */
        if (getenv("LOOM_FUZZ_TRACE")) /* what the shape path did, to check the seeds reach it */
            fprintf(stderr, "fuzz_onnx: model run (%s): %s\n", by_symbol ? "by symbol" : "by dim",
                    st == LOOM_OK ? "ok" : loom_last_error());
        for (size_t i = 0; i < n_out; i++)
            loom_tensor_destroy(out[i]);
    }
    for (size_t i = 0; i < n_in; i++)
        loom_tensor_destroy(in[i]);
    loom_clear_error();
}

/* Whether the model in DATA declares a graph input with a dynamic dimension (dim_param,
 * unnamed or negative), initializers included (the model API tells them apart). */
static int has_dynamic_dim(const uint8_t *data, size_t size)
{
    Onnx__ModelProto *mp = NULL;
    if (onnx_unpack(data, size, "fuzz", &mp) != LOOM_OK)
        return 0;
    int dynamic = 0;
    const Onnx__GraphProto *gp = mp->graph;
    for (size_t i = 0; gp && !dynamic && i < gp->n_input; i++) {
        const Onnx__TypeProto *tp = gp->input[i]->type;
        if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type ||
            !tp->tensor_type->shape)
            continue;
        const Onnx__TensorShapeProto *sp = tp->tensor_type->shape;
        for (size_t k = 0; k < sp->n_dim && !dynamic; k++)
            dynamic = sp->dim[k]->value_case !=
                          ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
                      sp->dim[k]->dim_value < 0;
    }
    onnx__model_proto__free_unpacked(mp, NULL);
    loom_clear_error();
    return dynamic;
}

static void fuzz_model(const uint8_t *data, size_t size)
{
    loom_runtime *rt = runtime();
    if (!rt)
        return;
    int fd = memfd_create("fuzz_onnx", MFD_CLOEXEC);
    if (fd < 0)
        return;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu", .policy = "first"};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po, .max_specialisations = 2,
                             .memory_cap = MODEL_MEMORY_CAP};
    loom_model *m = NULL;
    if (done == size && loom_model_load_onnx(rt, path, &mo, &m) == LOOM_OK) {
        uint64_t seed = 0;
        for (size_t i = 0; i < size; i += 1 + size / 64)
            seed = mix(seed, data[i]);
        seed = mix(seed, size);
        run_at_shape(m, seed, 1);
        run_at_shape(m, mix(seed, 1), 0);
    }
    loom_model_destroy(m);
    loom_clear_error();
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Symbolic dims get a small value so that models with them get past input declaration. */
    loom_onnx_options options = {.struct_size = sizeof options, .default_dim = 2};
    loom_graph *graph = NULL;
    if (loom_onnx_load_memory(data, size, getenv("LOOM_FUZZ_BASE_DIR"), &options, &graph) ==
        LOOM_OK)
        loom_graph_destroy(graph);
    /* Only models with a dynamic dim go on to the model API: fixed ones have one shape, which
     * the import above covered. Those whose import failed go on too: a shape fed as an input
     * (a Reshape's) makes a plain import fail, and the model binds it per run. The check is
     * cheap next to loading a model. */
    loom_clear_error();
    if (has_dynamic_dim(data, size))
        fuzz_model(data, size);
    return 0;
}
