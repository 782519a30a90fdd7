/*
 * The OpenCL backend's private state and the helpers its kernel families share: devices, the
 * block table that turns the host's opaque addresses into (cl_mem, offset), prepared kernels,
 * and one execution's context. Not a public header; the backend sees only loom/backend.h.
 */
#ifndef LOOM_OCL_INTERNAL_H
#define LOOM_OCL_INTERNAL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif

#include <loom/backend.h>

#include <CL/cl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

/* The main program's kernels, created once per device from the built program. */
typedef enum ocl_kid {
    OCL_K_WHERE_1, OCL_K_WHERE_2, OCL_K_WHERE_4, OCL_K_WHERE_8,
    OCL_K_COPY_1, OCL_K_COPY_2, OCL_K_COPY_4, OCL_K_COPY_8,
    OCL_K_GATHER_1, OCL_K_GATHER_2, OCL_K_GATHER_4, OCL_K_GATHER_8,
    OCL_K_CAST, OCL_K_SOFTMAX, OCL_K_LAYERNORM, OCL_K_BATCHNORM, OCL_K_REDUCE, OCL_K_REDUCE_ROWS,
    OCL_K_POOL,
    OCL_K_IM2COL, OCL_K_BIAS_CHANNEL, OCL_K_SCALE, OCL_K_NOOP,
    /* subgraph claims (ocl_claims.c) */
    OCL_K_EPILOGUE, OCL_K_ADD_LAYERNORM, OCL_K_SCALE_MASK_SOFTMAX,
    /* MatMulInt8Dynamic (ocl_kernels_int8.c) */
    OCL_K_I8_QUANT_ROWS, OCL_K_I8_GEMM,
    /* MoEExpert (ocl_kernels_moe.c) */
    OCL_K_MOE_FC1, OCL_K_MOE_FC2,
    /* Trilu by element size, CumSum by type (ocl_kernels_scan.c) */
    OCL_K_TRILU_1, OCL_K_TRILU_2, OCL_K_TRILU_4, OCL_K_TRILU_8,
    OCL_K_CUMSUM_F32, OCL_K_CUMSUM_I32, OCL_K_CUMSUM_I64,
    /* GatherElements, GatherND by element size; ScatterElements, ScatterND by element size
     * (no reduction), then f32, i32, i64 (ocl_kernels_indexing.c) */
    OCL_K_GATHER_EL_1, OCL_K_GATHER_EL_2, OCL_K_GATHER_EL_4, OCL_K_GATHER_EL_8,
    OCL_K_SCATTER_EL_1, OCL_K_SCATTER_EL_2, OCL_K_SCATTER_EL_4, OCL_K_SCATTER_EL_8,
    OCL_K_SCATTER_EL_F32, OCL_K_SCATTER_EL_I32, OCL_K_SCATTER_EL_I64,
    OCL_K_GATHER_ND_1, OCL_K_GATHER_ND_2, OCL_K_GATHER_ND_4, OCL_K_GATHER_ND_8,
    OCL_K_SCATTER_ND_1, OCL_K_SCATTER_ND_2, OCL_K_SCATTER_ND_4, OCL_K_SCATTER_ND_8,
    OCL_K_SCATTER_ND_F32, OCL_K_SCATTER_ND_I32, OCL_K_SCATTER_ND_I64,
    OCL_K_COUNT
} ocl_kid;

/* One allocation: an address range reserved in the host's address space (never touched) that
 * names a cl_mem of the same size. */
typedef struct ocl_block {
    uintptr_t base;
    size_t size; /* bytes asked for */
    size_t span; /* bytes reserved (size rounded up to a page) */
    size_t mem_size; /* bytes of MEM (>= size when reused from the pool) */
    cl_mem mem;
} ocl_block;

/* The kernels of the elementwise program (ocl_ew_source), in the order they are created. */
enum { OCL_EW_FLAT, OCL_EW_VEC4, OCL_EW_BCAST, OCL_EW_COUNT };

/* One variant of the elementwise program: built with OPTS (the -D options naming op, dtypes
 * and broadcast classes), kept for the device's lifetime and shared by every prepared node
 * that asks for the same options. */
typedef struct ocl_variant {
    char opts[192];
    cl_program program;
    cl_kernel kernels[OCL_EW_COUNT];
} ocl_variant;

typedef struct ocl_device {
    uint32_t index;
    cl_platform_id platform;
    cl_device_id id;
    cl_context context;
    cl_command_queue queue;
    loom_device_info info;
    char platform_version[128];
    size_t max_wg; /* largest work-group size */
    /* Launch shapes for a CPU device (few large work-groups, contiguous blocks per work-item)
     * rather than a GPU's (a group per row, grid-stride loops). Set from the device kind;
     * LOOM_OPENCL_LAYOUT=gpu|cpu overrides it (tests run the GPU shapes on PoCL with it). */
    int cpu_layout;
    /* Held across one node's enqueues (kernel arguments, in-order queue) and program builds. */
    pthread_mutex_t lock;
    int prog_state; /* 0 not built yet, 1 built, -1 failed (prog_err says why) */
    char prog_err[512];
    cl_program program;
    cl_kernel kernels[OCL_K_COUNT];
    /* Elementwise variants built so far (under lock); a node copies the kernels it uses. */
    ocl_variant *variants;
    size_t n_variants, cap_variants;
    /* The block table, sorted by base: written under blocks_lock held for writing (alloc,
     * free), read under it held for reading (every execute). */
    pthread_rwlock_t blocks_lock;
    ocl_block *blocks;
    size_t n_blocks, cap_blocks;
    /* Released cl_mem kept for reuse, at most OCL_POOL_BYTES in all (under blocks_lock). */
    cl_mem *pool;
    size_t *pool_size;
    size_t n_pool, cap_pool, pool_bytes;
} ocl_device;

/* Test-only failure injection (LOOM_FAULT): the N-th event of each kind fails, 0 = never. */
typedef struct ocl_faults {
    long enqueue_at, build_at, alloc_at;
    atomic_long enqueues, builds, allocs;
} ocl_faults;

typedef struct ocl_state {
    loom_backend table;
    loom_host host; /* copy of what the host offered; log may be NULL */
    int have_host;
    ocl_device *devs;
    uint32_t n_devs;
    ocl_faults faults;
    char cache_dir[1024]; /* "" when there is no usable cache directory */
} ocl_state;

/* A buffer as a kernel sees it: the block's cl_mem and the byte offset inside it. */
typedef struct ocl_buf {
    cl_mem mem;
    size_t off;
} ocl_buf;

typedef struct ocl_run ocl_run;
typedef struct ocl_kernel ocl_kernel;

/* One op family's enqueue function: everything for one execution of K onto R's queue. */
typedef loom_status (*ocl_run_fn)(ocl_run *r, const ocl_kernel *k);

/* A prepared node (the handle prepare returns). */
struct ocl_kernel {
    uint32_t dev;
    loom_op_id op;
    char name[96];    /* node name, for messages */
    char op_name[40];
    uint32_t n_in, n_out;
    loom_tensor_desc *in, *out;
    cl_mem *consts; /* n_in entries: this handle's copy of each constant input, else NULL */
    cl_mem meta;    /* shapes and strides for the kernels, or NULL */
    cl_mem meta2;   /* a second table (e.g. per-input copy plans), or NULL */
    ocl_run_fn run;
    size_t scratch_bytes;
    /* Parameters the family reads at run time (integers and floats enough for every op). */
    int iop;        /* sub-operation code for the kernels that take one */
    int flat;       /* elementwise: no broadcasting */
    cl_kernel ew[OCL_EW_COUNT]; /* elementwise: the variant's kernels (owned by the device) */
    float fa, fb;
    int64_t v[32];  /* family-specific integers */
    void *params;   /* family-specific, freed with free() (or free_params when set) */
    void (*free_params)(void *params); /* NULL: free(params) */
};

/* Frees K (a handle ocl_prepare or ocl_prepare_subgraph made, possibly half-built) and all it
 * owns: its constant copies, its meta tables, its descriptors and its params (with free_params
 * when set). NULL does nothing. (ocl_backend.c) */
void ocl_kernel_free(ocl_kernel *k);

/* One execution of a kernel: the resolved buffers and the chain of events. */
struct ocl_run {
    ocl_state *s;
    ocl_device *d;
    const ocl_kernel *k;
    ocl_buf *in;  /* k->n_in entries; mem NULL for absent inputs */
    ocl_buf *out; /* k->n_out entries */
    ocl_buf scratch;
    cl_event last; /* the last command enqueued, or NULL */
    char *err;
    size_t err_len;
};

extern const char ocl_program_source[];
extern const size_t ocl_program_source_len;
extern const char ocl_ew_source[];
extern const size_t ocl_ew_source_len;

/* Write a one-line reason into REASON; returns 0 (for supports()). */
int ocl_reason(char *reason, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Whether the device can run NODE (0 with a reason otherwise). Pure. */
int ocl_kernels_supports(const ocl_state *s, const ocl_device *d, const loom_node_desc *node,
                         char *reason, size_t len);

/* Fill K (whose common fields the caller set: shapes, constants) for NODE: pick the run
 * function, compute the parameters, upload shape tables. Returns LOOM_OK or an error in ERR. */
loom_status ocl_kernels_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t err_len);

/* The buffer behind the device copy of a constant the host gives prepare() (the start of a
 * block from ocl_alloc on D holding BYTES bytes, loom_node_desc.input_device_constants),
 * retained for the kernel (released like ocl_buffer_from_host's); NULL when ADDR is not the start
 * of such a block (the caller then copies the constant itself). */
cl_mem ocl_buffer_shared(ocl_device *d, const void *addr, size_t bytes);
/* A read-only buffer of BYTES on D holding DATA (copied), or NULL with a message in ERR. The
 * caller releases it with clReleaseMemObject. */
cl_mem ocl_buffer_from_host(ocl_state *s, ocl_device *d, const void *data, size_t bytes,
                            char *err, size_t err_len);

/* Record a failure of the node R runs: writes "opencl:DEV: node 'NAME' (OP): <message>" into
 * R's error buffer and returns STATUS. */
loom_status ocl_run_fail(ocl_run *r, loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The kernels of the elementwise program built with OPTS on D (-D options; at most 191
 * characters) into OUT[OCL_EW_COUNT]: built at the first request, the binary cached on disk
 * under a key that includes OPTS, then shared until shutdown (the device owns them; callers
 * never release them). Takes D's lock. Returns LOOM_OK or a message in ERR. */
loom_status ocl_variant_kernels(ocl_state *s, ocl_device *d, const char *opts, cl_kernel *out,
                                char *err, size_t err_len);

/* The device's kernel ID (from the program built at prepare). Never NULL during a run. */
cl_kernel ocl_get_kernel(ocl_run *r, ocl_kid id);

/* Set argument I of KER; returns 0 on success, else records the failure in R. */
int ocl_arg(ocl_run *r, cl_kernel ker, cl_uint i, size_t size, const void *value);

/* Enqueue KER over GLOBAL work-items (LOCAL per group, 0 for the driver's choice) after
 * every command before it; nothing when GLOBAL is 0. Counts toward LOOM_FAULT's enqueue
 * failures. Returns LOOM_OK or the failure recorded in R. */
loom_status ocl_launch(ocl_run *r, cl_kernel ker, size_t global, size_t local);

/* Copy BYTES between buffers on R's queue. */
loom_status ocl_copy(ocl_run *r, ocl_buf src, ocl_buf dst, size_t bytes);

/* Check a CLBlast status (the event of the call is in *EV, taken over as R's last command). */
loom_status ocl_blas_done(ocl_run *r, int status, cl_event ev, const char *what);

/* Count one enqueue for LOOM_FAULT before a call that enqueues outside ocl_launch (CLBlast):
 * returns the injected failure recorded in R when this is the one to fail, else LOOM_OK. */
loom_status ocl_fault_check(ocl_run *r, const char *what);

/* Name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). */
const char *ocl_error_name(cl_int code);

/* ---- messages and failure injection (ocl_backend.c) ------------------------------------------ */

/* Write a message into ERR (when given) and return ST. */
loom_status ocl_fail(char *err, size_t err_len, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Pass one line to the host's log at LEVEL; nothing when the host gave no log. */
void ocl_log(const ocl_state *s, loom_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The Loom status of an OpenCL error code (out of memory, invalid argument, else device lost). */
loom_status ocl_cl_status(cl_int code);

/* Whether this event of a LOOM_FAULT kind (counter C, fault at AT; 0 = never) is the one to
 * fail. Counts the event. */
int ocl_fault_hits(atomic_long *c, long at);

/* ---- subgraph claims (ocl_claims.c) ---------------------------------------------------------- */

/* The table's claim and prepare_subgraph (see loom_backend in loom/backend.h): MatMul/Gemm +
 * bias + activation (CLBlast, then one epilogue kernel), Add + LayerNormalization (and the
 * decomposed LayerNorm), scale + mask + Softmax (one kernel each). */
uint32_t ocl_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *graph, uint32_t *nodes,
                   uint32_t max_nodes, loom_claim *claims, uint32_t max_claims);
loom_status ocl_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                 void **kernel, size_t *scratch_bytes, char *err,
                                 size_t err_len);

/* ---- devices (ocl_device.c) ------------------------------------------------------------------ */

/* Open every device of every platform into S->devs (S->n_devs of them); a device that cannot
 * start is logged and skipped, no platform leaves none. */
/* ABI 1.0 events and memory (ocl_events.c): the table slots of the same names. */
loom_status ocl_event_create(void *ctx, uint32_t dev, void **event, char *err, size_t err_len);
loom_status ocl_event_record(void *ctx, uint32_t dev, void *event, char *err, size_t err_len);
loom_status ocl_event_wait(void *ctx, uint32_t dev, void *event, char *err, size_t err_len);
void ocl_event_destroy(void *ctx, void *event);
loom_status ocl_upload_async(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                             void *event, loom_done_fn done, void *token, char *err,
                             size_t err_len);
loom_status ocl_download_async(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                               void *event, loom_done_fn done, void *token, char *err,
                               size_t err_len);
void *ocl_alloc_host(void *ctx, uint32_t dev, size_t size);
void ocl_free_host(void *ctx, uint32_t dev, void *ptr, size_t size);
loom_status ocl_memory_info(void *ctx, uint32_t dev, uint64_t *free_bytes, uint64_t *total_bytes);

void ocl_discover(ocl_state *s);

/* Release everything D holds: programs, kernels, blocks, pool, queue, context. */
void ocl_device_close(ocl_device *d);

/* Device string WHAT of ID into OUT (trailing blanks trimmed; "" when the driver fails). */
void ocl_dev_string(cl_device_id id, cl_device_info what, char *out, size_t len);

/* ---- programs (ocl_program.c) and their on-disk cache (ocl_program_cache.c) ------------------ */

/* Build D's main program and its kernels if not yet done (caller holds d->lock). Returns
 * LOOM_OK or a message in ERR; a real build failure is remembered, an injected one is not. */
loom_status ocl_ensure_program(ocl_state *s, ocl_device *d, char *err, size_t err_len);

/* Set S->cache_dir to $XDG_CACHE_HOME/loom/opencl (else ~/.cache/loom/opencl), created when
 * missing; left "" (no cache) when neither is set or it cannot be created. */
void ocl_cache_dir_init(ocl_state *s);

/* The cache key of a program of D (device, driver, platform, the hash of SRC, build options
 * OPTS) into KEY, and the path of its entry under DIR into FILE. */
void ocl_cache_key(const ocl_device *d, const char *src, size_t src_len, const char *opts,
                   char *key, size_t len, char *file, size_t file_len, const char *dir);

/* Why a present cache entry was not used, for the warning; NULL when it was fine or merely
 * stale (another format, another key: a different program under a colliding name). */
typedef struct ocl_cache_verdict {
    const char *corrupt;
} ocl_cache_verdict;

/* The cached binary under KEY in FILE, built for D with OPTS; NULL when absent or unusable
 * (then rebuilt), with V->corrupt saying why when the entry is damaged. The caller releases
 * the program. */
cl_program ocl_cache_load(const ocl_device *d, const char *key, const char *file,
                          const char *opts, ocl_cache_verdict *v);

/* Write PROG's binary under KEY to FILE through a temporary file and a rename (readers never
 * see half); failures leave no entry. */
void ocl_cache_store(cl_program prog, const char *key, const char *file);

/* ---- memory (ocl_memory.c) ------------------------------------------------------------------- */

/* The table's alloc, free, upload and download (see loom_backend in loom/backend.h). */
void *ocl_alloc(void *ctx, uint32_t dev, size_t size, size_t align);
void ocl_free(void *ctx, uint32_t dev, void *ptr, size_t size);
loom_status ocl_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                       char *err, size_t err_len);
loom_status ocl_download(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                         char *err, size_t err_len);

/* The cl_mem and offset of [P, P + BYTES) on D into OUT; 0 on success, -1 when the range is
 * not inside one block from alloc. Takes D's blocks_lock for reading. */
int ocl_resolve(ocl_device *d, const void *p, size_t bytes, ocl_buf *out);

#endif /* LOOM_OCL_INTERNAL_H */
