/*
 * The CUDA backend's shared state and the functions its files give each other. The backend is
 * a plugin: it sees Loom only through <loom/backend.h>, and CUDA through the runtime API (the C
 * headers cuda_runtime_api.h and cublas_v2.h; the kernels of cuda_kernels.cu are reached
 * through cuda_kernels.h). Files: cuda_backend.c (the table, options, memory, queues, events),
 * cuda_device.c (devices, their facts, per-device streams), cuda_ops.c (supports, prepare,
 * execute of single nodes, cuBLAS GEMMs), cuda_claims.c (chains of nodes replayed as CUDA
 * graphs).
 */
#ifndef LOOM_CUDA_INTERNAL_H
#define LOOM_CUDA_INTERNAL_H

#include <loom/backend.h>

#include "cuda_index.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Which stream (and completion thread) of a device: kernels, host->device, device->host. */
enum { CUDA_Q_COMPUTE = 0, CUDA_Q_H2D = 1, CUDA_Q_D2H = 2, CUDA_Q_COUNT = 3 };

typedef struct cuda_done_item cuda_done_item;

/* A thread that waits, in submission order, for the completion events of one stream and calls
 * the host's done() for each: done() may then call anything, which a cudaLaunchHostFunc
 * callback could not (no CUDA calls there). Started on first use, joined at shutdown. */
typedef struct cuda_waiter {
    pthread_t thread;
    int started;
    int stop;
    int ordinal; /* the CUDA device, made current on the thread */
    pthread_mutex_t m;
    pthread_cond_t cv;
    cuda_done_item *head, *tail;
} cuda_waiter;

/* A block of device memory that alloc() had to align beyond cudaMalloc's own alignment. */
typedef struct cuda_aligned_block {
    void *user, *base;
    struct cuda_aligned_block *next;
} cuda_aligned_block;

/* One CUDA device. */
typedef struct cuda_dev {
    int ordinal;
    loom_device_info info; /* facts, read once at load */
    /* Serialises everything enqueued on the compute stream and every use of the cuBLAS
     * handle (execute may be called concurrently), and the lazy start below. */
    pthread_mutex_t lock;
    int ready; /* streams and cuBLAS made (first use: not at load, to start quickly) */
    cudaStream_t stream[CUDA_Q_COUNT];
    cublasHandle_t blas;
    void *blas_workspace; /* cuBLAS's workspace, ours so that graph capture never allocates */
    cuda_waiter waiter[CUDA_Q_COUNT];
    pthread_mutex_t mem_lock;
    cuda_aligned_block *aligned;
} cuda_dev;

/* The backend instance: one per loom_backend_query, freed by shutdown. */
typedef struct cuda_state {
    loom_backend table;
    void *host_ctx;
    void (*log)(void *host_ctx, loom_log_level level, const char *message);
    int n_devices;
    cuda_dev *devs;
    /* options */
    int tf32;   /* 1: cuBLAS may use TF32 tensor cores for float32 GEMMs */
    int graphs; /* 1: claim chains of nodes and replay them as CUDA graphs */
} cuda_state;

/* ---- cuda_backend.c ---- */
/* Reports MESSAGE (printf-style) through the host's log. */
void cuda_log(cuda_state *s, loom_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes "cuda: WHAT: <CUDA's error name and string>" into ERR and returns the loom_status
 * for E: LOOM_ERR_OUT_OF_MEMORY for allocation failures, else LOOM_ERR_DEVICE_LOST. */
loom_status cuda_fail(cudaError_t e, const char *what, char *err, size_t err_len);
/* The same for a cuBLAS status. */
loom_status cuda_blas_fail(cublasStatus_t st, const char *what, char *err, size_t err_len);
/* Queues (DONE, TOKEN) behind everything enqueued so far on queue Q of DEV: a completion event
 * is recorded on that stream now and DONE called from DEV's waiter thread once it has passed,
 * with the status of the work. The caller holds the device lock for Q == CUDA_Q_COMPUTE. On an
 * error nothing is queued and DONE will not be called. */
loom_status cuda_queue_done(cuda_state *s, cuda_dev *d, int q, loom_done_fn done, void *token,
                            char *err, size_t err_len);
/* Waits until everything enqueued so far on stream Q of D has finished. */
loom_status cuda_stream_wait(cuda_dev *d, int q, char *err, size_t err_len);

/* ---- cuda_device.c ---- */
/* Counts the CUDA devices and reads their facts into S; with none, logs why (once) and leaves
 * S with zero devices. Returns LOOM_ERR_OUT_OF_MEMORY only. */
loom_status cuda_devices_open(cuda_state *s);
/* Makes D's device current on this thread and, on first use, creates its streams and cuBLAS
 * handle. Thread-safe. */
loom_status cuda_dev_ready(cuda_state *s, cuda_dev *d, char *err, size_t err_len);
/* Frees what cuda_dev_ready made (the waiters are already joined). */
void cuda_devices_close(cuda_state *s);

/* ---- cuda_ops.c ---- */
typedef struct cuda_node_kernel cuda_node_kernel;
/* The node table slots. */
int cuda_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                  size_t reason_len);
loom_status cuda_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                         size_t *scratch_bytes, char *err, size_t err_len);
/* Compiles NODE for S's device DEV (supports() already said yes), device copies of its
 * constant inputs included (or the host's, DEVICE_CONSTANTS[i] non-NULL). */
loom_status cuda_node_prepare(cuda_state *s, uint32_t dev, const loom_node_desc *node,
                              const void *const *device_constants, cuda_node_kernel **out,
                              char *err, size_t err_len);
/* Enqueues K on D's compute stream (the caller holds D's lock) with inputs IN and outputs OUT
 * as the host passed them (constant inputs are replaced by the kernel's device copies). */
loom_status cuda_node_launch(cuda_state *s, cuda_dev *d, const cuda_node_kernel *k,
                             const void *const *in, void *const *out, char *err, size_t err_len);
/* Frees K and its device copies. */
void cuda_node_release(cuda_node_kernel *k);
/* Bytes of K's single output. */
size_t cuda_node_output_bytes(const cuda_node_kernel *k);

/* ---- cuda_claims.c ---- */
uint32_t cuda_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *g, uint32_t *nodes,
                    uint32_t max_nodes, loom_claim *claims, uint32_t max_claims);
loom_status cuda_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                  void **kernel, size_t *scratch_bytes, char *err,
                                  size_t err_len);

/* What prepare() and prepare_subgraph() hand the host: a node or a chain, told apart by the
 * first field, so that execute/enqueue/release take either. */
typedef enum cuda_kernel_kind { CUDA_KERNEL_NODE = 1, CUDA_KERNEL_CHAIN = 2 } cuda_kernel_kind;
/* Enqueues kernel KERNEL (either kind) with ARGS on DEV's compute stream, holding its lock. */
loom_status cuda_kernel_launch(cuda_state *s, uint32_t dev, void *kernel,
                               const loom_exec_args *args, char *err, size_t err_len);
/* Frees a chain kernel. */
void cuda_chain_release(void *kernel);

#endif /* LOOM_CUDA_INTERNAL_H */
