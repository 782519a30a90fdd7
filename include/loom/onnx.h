/*
 * Importing ONNX models (opsets 7 to 18) as Loom graphs, and reading ONNX TensorProto files
 * (the .pb inputs and outputs of the ONNX backend test suite).
 */
#ifndef LOOM_ONNX_H
#define LOOM_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The value of one symbolic dimension ("batch" = 1) or of one input's whole shape. */
typedef struct loom_onnx_dim {
    const char *name; /* the dim_param of the model, e.g. "batch_size" */
    int64_t value;
} loom_onnx_dim;

typedef struct loom_onnx_shape {
    const char *input; /* a graph input's name */
    uint32_t rank;
    const int64_t *dims;
} loom_onnx_shape;

/* A graph input bound to a value at import time: it becomes a constant of the graph (and is no
 * longer an input), so that what depends on it can be folded — e.g. a shape fed as an input. */
typedef struct loom_onnx_binding {
    const char *input;          /* a graph input's name */
    const loom_tensor *value;   /* borrowed for the call; copied into the graph */
} loom_onnx_binding;

typedef struct loom_onnx_options {
    uint32_t struct_size;       /* sizeof(loom_onnx_options) */
    const loom_onnx_dim *dims;  /* values of symbolic dims, by name */
    size_t n_dims;
    const loom_onnx_shape *shapes; /* full shapes of inputs (override the model's) */
    size_t n_shapes;
    /* Value for any symbolic or unknown dim not given above; 0 makes such a dim an error that
     * names the input and the dimension. */
    int64_t default_dim;
    /* Inputs to turn into constants (their dtype must match the model's; their shape wins). */
    const loom_onnx_binding *bindings;
    size_t n_bindings;
} loom_onnx_options;

/* Read the ONNX model at PATH into a new, checked graph (*OUT, freed with loom_graph_destroy).
 * External data files are looked up beside PATH. Initializers become constants; constant
 * subgraphs are folded (see loom_graph_set_folding); symbolic dims are resolved from OPTIONS
 * (may be NULL). The graph's inputs are the model's inputs that are not initializers, in model
 * order; its outputs are the model's outputs.
 * External data must lie beneath the model's folder (no "..", no absolute path, no symlink out of
 * it) and hold the bytes its tensor needs (checked before anything is allocated).
 * Fails with LOOM_ERR_IO (file unreadable), LOOM_ERR_INVALID_ARGUMENT (not a valid model:
 * truncated, corrupt, a missing, short or escaping external file, a dim left unresolved, a node
 * whose shapes do not fit, a name written twice, a cycle, subgraphs or types nested more than 100
 * protobuf messages deep), or LOOM_ERR_UNSUPPORTED (ops Loom lacks: ALL of them named in one message, with the
 * opset). The message in loom_last_error() names the file and the culprit. */
loom_status loom_onnx_load(const char *path, const loom_onnx_options *options, loom_graph **out);

/* The same from a model already in memory (DATA, SIZE bytes, borrowed for the call). BASE_DIR
 * is where external data files are looked up (NULL: the current directory). */
loom_status loom_onnx_load_memory(const void *data, size_t size, const char *base_dir,
                                  const loom_onnx_options *options, loom_graph **out);

/* Read a serialized ONNX TensorProto (.pb) into a new host tensor (*OUT, freed with
 * loom_tensor_destroy). When NAME is non-NULL, the proto's name is copied there (NAME_LEN bytes
 * with the NUL; "" when it has none). Fails with LOOM_ERR_IO or LOOM_ERR_INVALID_ARGUMENT
 * (corrupt, or a dtype Loom does not have), naming the file. */
loom_status loom_tensor_load_pb(const char *path, loom_tensor **out, char *name, size_t name_len);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_ONNX_H */
