/*
 * The base every part of Loom shares: statuses and the calling thread's last error, dtype names,
 * the library's version, and host tensors (the buffers callers pass in and get back, and their
 * .npy files). Needs nothing of the graph or the runtime; graph.h and runtime.h include it.
 */
#ifndef LOOM_CORE_H
#define LOOM_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h" /* loom_status, loom_dtype, LOOM_MAX_RANK: shared with backends */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- statuses and errors ------------------------------------------------------------------ */

/* The calling thread's message for its last failure, e.g.
 * "node 'fc1' (MatMul): inner dimensions 512 and 256 differ". Owned by Loom; valid until the
 * thread's next call into Loom. Never NULL: "" when there was no failure. Every call that
 * returns a loom_status, and every graph builder call (those returning a new loom_value), clears
 * it when it succeeds, so after a success it is ""; calls that cannot fail (accessors such as
 * loom_tensor_data, loom_graph_find_value or loom_plan_node_name) leave it as it was. */
const char *loom_last_error(void);

/* Name of STATUS ("LOOM_ERR_UNSUPPORTED"); a static string, never NULL. */
const char *loom_status_name(loom_status status);

/* Name of DTYPE as ONNX spells it ("float", "int64"); a static string, "undefined" for unknown. */
const char *loom_dtype_name(loom_dtype dtype);

/* The library's version, "MAJOR.MINOR.PATCH"; a static string. */
const char *loom_version(void);

typedef struct loom_tensor loom_tensor;   /* opaque: a typed, shaped host buffer */

/* ---- host tensors ------------------------------------------------------------------------ */

/* Allocate a zero-filled host tensor of DTYPE and shape DIMS[RANK] (64-byte aligned data).
 * On success *OUT is owned by the caller: free with loom_tensor_destroy. Fails with
 * LOOM_ERR_INVALID_ARGUMENT on a bad dtype, rank or dim, or a size that overflows, and
 * LOOM_ERR_OUT_OF_MEMORY. */
loom_status loom_tensor_create(loom_dtype dtype, uint32_t rank, const int64_t *dims,
                               loom_tensor **out);

/* Wrap caller memory DATA (dense, C order) as a tensor without copying. The caller keeps DATA
 * alive until loom_tensor_destroy(*OUT), which does not free DATA. */
loom_status loom_tensor_wrap(loom_dtype dtype, uint32_t rank, const int64_t *dims, void *data,
                             loom_tensor **out);

/* Free TENSOR (and its data unless it was wrapped). NULL is allowed. */
void loom_tensor_destroy(loom_tensor *tensor);

/* Accessors. The data pointer is owned by the tensor; DIMS must hold LOOM_MAX_RANK entries. */
void *loom_tensor_data(const loom_tensor *tensor);
loom_dtype loom_tensor_dtype(const loom_tensor *tensor);
uint32_t loom_tensor_rank(const loom_tensor *tensor);
void loom_tensor_dims(const loom_tensor *tensor, int64_t *dims);
size_t loom_tensor_nbytes(const loom_tensor *tensor);

/* Read a NumPy .npy file (format 1.0 to 3.0, C order, little-endian; dtypes f4, f2, i1, u1, i4,
 * i8, b1, and bfloat16 stored as <V2 is not supported) into a new tensor (*OUT, freed with
 * loom_tensor_destroy). Fails with LOOM_ERR_IO or LOOM_ERR_INVALID_ARGUMENT naming the file and
 * what is wrong (Fortran order, big-endian, unknown dtype, truncated data). The shape's size is
 * checked against the file before anything is allocated: a header claiming more than the file
 * holds is LOOM_ERR_INVALID_ARGUMENT, however large the claim. */
loom_status loom_tensor_load_npy(const char *path, loom_tensor **out);

/* Write TENSOR to PATH as a .npy file (format 1.0). bfloat16 tensors are written as float32
 * (NumPy has no bfloat16). Atomic: the bytes go to a new temporary file in PATH's folder
 * (mode 0666 less the umask), every write checked and synced, then renamed over PATH, so PATH
 * holds its old contents or all the new ones, never part (a full disk, a kill mid-write); an
 * existing regular file is replaced. A symbolic link, folder or device at PATH is refused, not
 * followed. Fails with LOOM_ERR_IO naming the file, errno left saying why (ENOSPC, EFBIG,
 * ELOOP for a symlink, ...); no temporary file remains after a failure. */
loom_status loom_tensor_save_npy(const char *path, const loom_tensor *tensor);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CORE_H */
