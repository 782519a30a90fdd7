/*
 * The scheduler's internal shapes: the runtime's devices, the plan (placement, compiled kernels,
 * static memory plan, dependency structure) and the executor's per-run context.
 */
#ifndef LOOM_SCHED_INTERNAL_H
#define LOOM_SCHED_INTERNAL_H

#include <loom/runtime.h>

#include <pthread.h>
#include <stdatomic.h>

#include "graph/graph_internal.h"
#include "passes/passes.h"

#define LOOM_MAX_BACKENDS 16

typedef struct runtime_device {
    char id[64];                /* "cpu:0" */
    const loom_backend *backend;
    uint32_t index;             /* device index within its backend */
    loom_device_info info;
} runtime_device;

#define LOOM_MAX_MESSAGES 256

struct loom_runtime {
    const loom_backend *backends[LOOM_MAX_BACKENDS];
    void *handles[LOOM_MAX_BACKENDS]; /* dlopen handle of each plugin; NULL when built in */
    size_t n_backends;
    runtime_device *devices;
    size_t n_devices;
    loom_host host;             /* what plugins get: logging into MESSAGES */
    pthread_mutex_t msg_lock;   /* plugins may log from their own threads */
    char *messages[LOOM_MAX_MESSAGES];
    size_t n_messages;
    const char *loading;        /* the plugin file being started, for its log messages */
    /* References: the caller's (dropped by loom_runtime_destroy) and one per plan made from it
     * (dropped by loom_plan_destroy). The backends stop when the last one goes. */
    atomic_uint refs;
};

/* A slot of BE's table, or NULL when the backend's table is too old to have it. */
#define RUNTIME_SLOT(be, field)                                                                     \
    ((be)->struct_size >= offsetof(loom_backend, field) + sizeof((be)->field) ? (be)->field : NULL)

/* ---- runtime.c / loader.c ---- */
/* Register a started backend's devices. Takes ownership of BE (shut down on failure) and of
 * HANDLE (dlclosed on failure), which may be NULL. */
loom_status runtime_add_backend(loom_runtime *rt, const loom_backend *be, void *handle);
/* STATUS as BE returned it, made a loom_status: a value outside the enum (a plugin's bug)
 * becomes LOOM_ERR_DEVICE_LOST, and MSG (MSG_LEN bytes, holding the backend's message, may be
 * NULL) is rewritten to keep the plugin's number: "backend 'x' returned status 77, not a
 * loom_status: <its message>". Every call site that receives a status from a backend passes it
 * through this. */
loom_status runtime_backend_status(const loom_backend *be, int status, char *msg, size_t msg_len);
/* Append a message (formatted) to the runtime's list; thread-safe. */
void runtime_message(loom_runtime *rt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Load the plugins OPTIONS asks for (may be NULL), in the documented order. */
void runtime_load_plugins(loom_runtime *rt, const loom_runtime_options *options);
/* Take a reference to RT for a plan (returns RT); drop one, freeing RT with the last. */
loom_runtime *runtime_retain(loom_runtime *rt);
void runtime_release(loom_runtime *rt);

/* Where a tensor's bytes live during a run. */
typedef enum plan_tensor_kind {
    PLAN_T_INPUT = 1,     /* the caller's input tensor INDEX */
    PLAN_T_OUTPUT,        /* the caller's output tensor INDEX (written in place by its producer) */
    PLAN_T_CONSTANT,      /* DATA, owned by the plan or borrowed from the user */
    PLAN_T_INTERMEDIATE,  /* OFFSET in DEVICE's arena */
} plan_tensor_kind;

typedef struct plan_tensor {
    plan_tensor_kind kind;
    loom_tensor_desc desc;
    size_t bytes;
    uint32_t index;    /* input/output position */
    uint32_t device;   /* intermediates: the producer's device */
    size_t offset;     /* intermediates: offset in the arena */
    const void *data;  /* constants */
    int32_t producer;  /* plan node index, -1 for inputs and constants */
    int32_t last_use;  /* position (in plan order) of the last node that reads it, -1 if none */
} plan_tensor;

typedef struct plan_node {
    char *name;
    const char *op_name;  /* static, from the registry; or OP_LABEL */
    char *op_label;       /* a fused node's "Conv+Add+Relu" (attribute fused_ops), owned; or NULL */
    loom_op_id op;
    uint32_t device;      /* runtime device index */
    void *kernel;
    size_t scratch_bytes, scratch_offset;
    uint32_t n_in, n_out;
    uint32_t io_first;    /* first entry of the node's inputs then outputs in plan->io */
    uint32_t succ_first, n_succ; /* successors in plan->succ */
    uint32_t n_preds;     /* dependency count at the start of a run */
    uint32_t n_wait;      /* the same, without same-worker predecessors of a pipelined worker */
    loom_op_cost cost;
    /* Where the node re-runs when its device fails (not with strict plans): another device
     * that supports it, compiled at plan time so that a failure needs no allocation. */
    uint32_t fb_device;
    void *fb_kernel;      /* NULL: no fallback */
    size_t fb_scratch_bytes;
    /* ---- placement and explanation ---- */
    uint32_t slot;        /* the worker (index in plan->devs) that runs it */
    uint8_t is_copy;      /* a transfer the plan inserted (op "Copy") */
    uint8_t copy_dir;     /* PLAN_COPY_UPLOAD or PLAN_COPY_DOWNLOAD */
    uint8_t decided;      /* a plan_decided */
    int16_t pin_ignored;  /* 1 + the device a pin asked for and that cannot run it; 0: none */
    char *link;           /* copies: the lane "host->opencl:0" / "opencl:0->host" */
    double pred_s, pred_start, pred_finish; /* predicted duration and schedule (seconds) */
    double order_rank;    /* tie-break of the execution order: topological position */
    const char *cost_source; /* "history", "backend", "roofline", "link" (static strings) */
    double bytes_in_moved, transfer_in_s, bytes_kept_local;
    uint32_t graph_index; /* position in the topological order of the graph (copies: UINT32_MAX) */
    char *sig;            /* the cost model's history signature (learning plans only) */
} plan_node;

enum { PLAN_COPY_UPLOAD = 1, PLAN_COPY_DOWNLOAD = 2 };

/* What decided a node's device (loom_node_explain.decided_by). */
typedef enum plan_decided {
    PLAN_DECIDED_EFT = 1,
    PLAN_DECIDED_PINNED,
    PLAN_DECIDED_ONLY_DEVICE,
    PLAN_DECIDED_SEARCH,
    PLAN_DECIDED_ENERGY,
    PLAN_DECIDED_CAPACITY,
    PLAN_DECIDED_FIRST,
    PLAN_DECIDED_REQUESTED,
    PLAN_DECIDED_COPY,
    PLAN_DECIDED_SHARED_CPU, /* a device on the host's cores kept out while the cpu backend can */
    PLAN_DECIDED_SINGLE,     /* spreading was predicted too small a gain: one device runs all */
} plan_decided;

typedef struct plan_device_use {
    uint32_t device;      /* runtime device index (links: the device that is not host-visible) */
    uint32_t link;        /* 0: the device's compute worker; PLAN_COPY_*: its transfer worker */
    /* 1: the device runs submitted work in order (loom_device_info.in_order) and has submit():
     * the worker submits each node once its predecessors on other workers are done, without
     * waiting for those on this device. */
    uint32_t pipelined;
    uint32_t *order;      /* plan node indices this device runs, in order */
    uint32_t n_order;
    size_t arena_bytes;   /* the static memory plan's peak on this device */
} plan_device_use;

typedef struct plan_ctx plan_ctx;

struct loom_plan {
    loom_runtime *rt;
    plan_node *nodes;        /* in execution (topological) order */
    uint32_t n_nodes;
    plan_tensor *tensors;
    uint32_t n_tensors;
    int32_t *io;           /* tensor index per node input/output slot (-1: absent input) */
    uint32_t n_io;         /* entries of io in use */
    uint32_t *succ;        /* successor node indices */
    plan_device_use *devs;   /* the devices this plan uses */
    uint32_t n_devs;
    uint32_t *dev_slot;    /* runtime device index -> index in devs (UINT32_MAX: unused) */
    uint32_t n_inputs, n_outputs;
    uint32_t *input_tensor;   /* tensor index of each graph input */
    uint32_t *output_tensor;  /* tensor index of each graph output (may be an input/constant) */
    char **input_names, **output_names;
    void *const_block;        /* owned copies of the graph's constants */
    size_t peak_bytes, unshared_bytes;
    int strict;

    pthread_mutex_t ctx_lock; /* guards the free list: taken once per run, never per node */
    plan_ctx *free_ctx;
    plan_ctx *all_ctx;

    /* ---- placement ---- */
    uint32_t n_rt_devices;
    double *cost_s;           /* n_nodes x n_rt_devices predicted seconds (INFINITY: cannot) */
    struct cost_model *model;   /* the cost model (kept when learning, else NULL after planning) */
    int learn;
    char policy[16];
    double pred_s, heft_s, target_s, energy_j, best_single_s, placement_ms;
    int target_met;
    int32_t best_single;      /* runtime device index, -1 when none runs every node */
    uint32_t n_copies;
    double single_rule_s;     /* > 0: the spread placement's prediction the one-device rule beat */
    uint32_t precision;       /* the plan's loom_precision (part of history signatures) */
    char **reasons;           /* explanation lines, made on first request (under ctx_lock) */
    pass_report stages[PASS_MAX_REPORTS]; /* what each pass and scheduler stage did */
    size_t n_stages;
};

/* Runtime device index named by SPEC ("cpu:0", or "cpu" for the backend's first), or -1. */
int plan_find_device(const loom_runtime *rt, const char *spec);

/* ---- placement.c ---- */
/* A multi-device placement must be predicted at least this much faster than the best device
 * alone (a fraction), more than the cost model's typical error, or that device runs it all. */
#define PLAN_SINGLE_MARGIN 0.10

typedef struct plan_place_opts {
    int want;                 /* requested runtime device or -1 */
    int strict;
    const char *policy;
    double target_s, budget_s;
    const char *const *pins;
    size_t n_pins;
    const char *cache_dir;
    uint64_t exclude;         /* a bit per runtime device placement must not use */
} plan_place_opts;

/* Decide the device of every node of G (in ORDER, whose positions index the plan's nodes as
 * make_nodes builds them): supports() of every device, costs from the cost model, the policy.
 * Writes DEVICE[p], and fills the placement fields of the plan (cost_s rows in topological
 * order, summary figures) and PRED (3 x n_nodes: start, finish, duration) and DECIDED;
 * PIN_IGNORED[p] (zeroed by the caller) becomes 1 + the pinned device when a pin could not be
 * honoured (not strict). Opens PLAN->model. */
loom_status plan_place(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                     const int32_t *tensor_of, uint32_t precision, const float *absmax,
                     const plan_place_opts *opts, uint32_t *device, double *pred, uint8_t *decided,
                     int16_t *pin_ignored);

/* Predicted seconds of moving BYTES from runtime device FROM to TO (COST_HOST: host memory). */
double plan_link_seconds(const loom_plan *plan, uint32_t from, uint32_t to, double bytes);

/* After a measured run: feed the per-node times of TIMELINE into the cost model's history. */
void plan_learn(loom_plan *plan, const loom_node_timing *timeline, size_t count);

/* ---- reference.c ---- */
/* The evaluator the layers below use to run a node on the host: the CPU reference kernels. */
graph_eval_fn runtime_reference_eval(void);

/* ---- memplan.c ---- */
/* Assign arena offsets to every intermediate tensor and node scratch of PLAN, reusing memory
 * between tensors whose lifetimes (in each device's execution order) do not overlap. Fills the
 * arena sizes, peak_bytes and unshared_bytes. */
loom_status plan_memory_plan(loom_plan *plan);

/* ---- executor.c ---- */
/* The argument checks of loom_plan_run: counts, NULL arrays and tensors, dtypes and shapes, and
 * memory an output shares with an input or another output (the message names both). */
loom_status plan_check_run(const loom_plan *plan, const loom_tensor *const *inputs,
                           size_t n_inputs, loom_tensor *const *outputs, size_t n_outputs,
                           const loom_run_stats *stats);
/* Run PLAN once (see loom_plan_run). */
loom_status plan_execute(loom_plan *plan, const loom_tensor *const *inputs,
                       loom_tensor *const *outputs, loom_run_stats *stats);
/* Create PLAN's first execution context now (its intermediate memory on every device, its
 * workers) and keep it for the first run. On failure *FAILED_DEVICE is the runtime device whose
 * memory could not be had (UINT32_MAX when it was something else) and the error is set. */
loom_status plan_contexts_prepare(loom_plan *plan, uint32_t *failed_device);
/* Free every execution context of PLAN (no run may be in progress). */
void plan_contexts_destroy(loom_plan *plan);
/* Free PLAN's idle execution contexts (their arenas) while runs may be in progress: contexts
 * in use stay. Returns the bytes of arena freed. (scheduler/model.c keeps idle
 * specialisations from holding intermediate memory.) */
size_t plan_contexts_trim(loom_plan *plan);

#endif /* LOOM_SCHED_INTERNAL_H */
