/*
 * The built-in CPU backend's entry point. The backend itself is written as a plugin (it sees
 * only loom/backend.h); the host creates one instance per runtime through this function rather
 * than through dlopen.
 */
#ifndef LOOM_CPU_BACKEND_H
#define LOOM_CPU_BACKEND_H

#include <loom/backend.h>

/* Create a CPU backend whose pool uses THREADS threads (the caller of each parallel kernel
 * included), pinned one per core; 0 means LOOM_CPU_THREADS from the environment, else every
 * core. Sets OpenBLAS to one thread: the pool parallelises GEMMs itself, so OpenBLAS never
 * oversubscribes the cores. Returns a table owned by the caller, released by its shutdown()
 * slot; NULL on failure with a message in ERR. */
const loom_backend *loom_cpu_backend_create(unsigned threads, char *err, size_t err_len);

/* Evaluate one node on the calling thread with the CPU reference kernels, without a runtime:
 * used to fold constant subgraphs while a graph is built. INPUTS and OUTPUTS follow NODE's
 * descriptor (outputs sized by the caller; inputs of shape-only ops may be NULL). Returns the
 * kernel's status with a message in ERR. */
loom_status loom_cpu_eval_node(const loom_node_desc *node, const void *const *inputs,
                               void *const *outputs, char *err, size_t err_len);

/* Evaluate one node of an operator whose output shape depends on its input values (NonZero,
 * Compress, Unique, NonMaxSuppression; kernels_value_dependent.c) on the calling thread.
 * OUTPUTS are sized for NODE's output descriptors, the upper bounds its inference gave (an
 * absent optional output may be NULL); each receives its result packed in the row-major layout
 * of its actual shape, which ACTUAL[n_outputs] receives. Returns LOOM_ERR_UNSUPPORTED for any
 * other operator, LOOM_ERR_OUT_OF_MEMORY, or LOOM_ERR_INVALID_ARGUMENT for values the operator
 * refuses, with a message in ERR. */
loom_status loom_cpu_eval_value_dependent(const loom_node_desc *node, const void *const *inputs,
                                          void *const *outputs, loom_tensor_desc *actual,
                                          char *err, size_t err_len);

#endif /* LOOM_CPU_BACKEND_H */
