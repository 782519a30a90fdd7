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

/* A device's circuit breaker (device_health.c): after LOOM_BREAKER_FAILED_RUNS consecutive runs
 * in which a node failed on it, the nodes that have a fallback skip it for a cool-down. Shared by
 * every plan of the runtime; zero (memset) is "in service, no failure". */
typedef struct device_health {
    atomic_uint failed_runs;    /* consecutive runs (non-strict plans) in which it failed */
    atomic_uint trips;          /* times set aside since its last good run: the cool-down doubles */
    _Atomic uint64_t until_ns;  /* set aside until then (loom_now_ns); 0: in service */
} device_health;

typedef struct runtime_device {
    char id[64];                /* "cpu:0" */
    const loom_backend *backend;
    uint32_t index;             /* device index within its backend */
    loom_device_info info;
    device_health health;
} runtime_device;

/* What one backend gets as its loom_host: HOST.host_ctx points here, so that every line the
 * backend logs, while loom_backend_query runs and at run time alike, carries its prefix: the
 * plugin's file while it is being queried ("plugin /x/npu.so: error: ..."), its backend name
 * once the table is known ("npu-sim: warning: ..."). Owned by the runtime, freed after the
 * backend's shutdown (and its dlclose). */
typedef struct runtime_host {
    loom_host host;
    loom_runtime *rt;
    char name[64];       /* the backend's name, "" until its table is known; under msg_lock */
    char *file;          /* the plugin's file as given (NULL for a built-in backend) */
    char *real;          /* its real path, when it has one */
    /* While HOLDING, log lines are kept here instead of the runtime's messages: the loader
     * decides which of the two loom_backend_query calls' lines to keep (under msg_lock). */
    int holding;
    char **held;
    size_t n_held, cap_held;
    /* A 0.x table, copied into a 1.0 table whose slots past the plugin's struct_size are NULL
     * (the adapter); the runtime uses this copy instead of the plugin's table. */
    loom_backend adapted;
} runtime_host;

struct loom_runtime {
    const loom_backend *backends[LOOM_MAX_BACKENDS];
    void *handles[LOOM_MAX_BACKENDS]; /* dlopen handle of each plugin; NULL when built in */
    runtime_host *hosts[LOOM_MAX_BACKENDS]; /* each backend's loom_host; NULL for the cpu */
    size_t n_backends;
    runtime_device *devices;
    size_t n_devices;
    /* The messages: a ring of at most LOOM_RUNTIME_MESSAGES_MAX lines counting the "N messages
     * dropped" line, which comes first while MSG_DROPPED > 0 (then only MAX - 1 lines are
     * held). MSG_FIRST is the oldest held line's slot, MSG_HELD how many are held. */
    pthread_mutex_t msg_lock;   /* plugins may log from their own threads */
    char *msg_ring[LOOM_RUNTIME_MESSAGES_MAX];
    size_t msg_first, msg_held;
    size_t msg_dropped;         /* lost since the last drain */
    char msg_dropped_line[96];
    /* References: the caller's (dropped by loom_runtime_destroy) and one per plan made from it
     * (dropped by loom_plan_destroy). The backends stop when the last one goes. */
    atomic_uint refs;
    /* The user's backend options (backend_options.c), NULL when none were given. */
    struct backend_option_set *options;
    /* The cost model's parsed history files, one per cache folder, shared by the cost models of
     * every plan (scheduler/cost/cost_history_cache.c), and how many parses were made. */
    pthread_mutex_t cost_lock;
    struct cost_cache_entry *cost_cache;
    uint64_t cost_history_parses;
};

/* A slot of BE's table, or NULL when the backend's table is too old to have it. */
#define RUNTIME_SLOT(be, field)                                                                     \
    ((be)->struct_size >= offsetof(loom_backend, field) + sizeof((be)->field) ? (be)->field : NULL)

/* ---- runtime.c / loader.c ---- */
/* Register a started backend's devices. Takes ownership of BE (shut down on failure), of
 * HANDLE (dlclosed on failure) and of HOST (the backend's loom_host record, freed on failure),
 * which may be NULL. A device whose memory the host cannot address (host_visible 0) is refused
 * unless the table has alloc, upload and download; a backend none of whose devices is usable is
 * refused as a whole (LOOM_ERR_UNSUPPORTED naming why). */
loom_status runtime_add_backend(loom_runtime *rt, const loom_backend *be, void *handle,
                                runtime_host *host);
/* A new loom_host record for a backend (FILE: its plugin file, or NULL when built in; NAME:
 * its backend name when already known, else NULL). NULL when out of memory. */
runtime_host *runtime_host_create(loom_runtime *rt, const char *file, const char *name);
/* Free HOST (after its backend's shutdown); NULL is allowed. */
void runtime_host_free(runtime_host *host);
/* Hold HOST's log lines from now on instead of adding them to the runtime's messages; returns
 * how many are held already (the loader's mark between its two loom_backend_query calls). */
size_t runtime_host_hold(runtime_host *host);
/* Stop holding: move the held lines [FROM, TO) into the runtime's messages in order (with
 * SKIP_REPEATS, one equal to a line moved before it is left out) and drop every other. */
void runtime_host_release(runtime_host *host, size_t from, size_t to, int skip_repeats);
/* Set HOST's backend name (the prefix of its later lines). */
void runtime_host_set_name(runtime_host *host, const char *name);
/* The name of the backend loaded from plugin file PATH (as given, or the same real path), or
 * NULL when no backend of RT came from it (it was refused, or never tried). For `loom
 * backend-test`, which tests exactly that plugin's devices. */
const char *runtime_plugin_backend(const loom_runtime *rt, const char *path);
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
/* ---- backend_options.c ---- */
/* The parsed "BACKEND:KEY=VALUE" strings of loom_runtime_options.backend_options. */
typedef struct backend_option_set backend_option_set;
/* Parse O's backend options (O may be NULL or an older struct: none) into *OUT (NULL when
 * none; free with backend_options_free). Fails with LOOM_ERR_INVALID_ARGUMENT naming a
 * malformed string or a NULL array or entry, LOOM_ERR_OUT_OF_MEMORY. */
loom_status backend_options_parse(const loom_runtime_options *o, backend_option_set **out);
void backend_options_free(backend_option_set *set);
/* Hand BE (its table accepted, its devices not yet listed) the options of RT->options meant
 * for it, in the order given, through its set_option. A key BE does not declare or a value it
 * refuses fails with LOOM_ERR_INVALID_ARGUMENT naming the option (and the backend's message);
 * the first such failure is also kept for backend_options_check. */
loom_status backend_options_apply(loom_runtime *rt, const loom_backend *be);
/* Once every backend is in: the first failure of backend_options_apply, else an option for a
 * backend that is not loaded (LOOM_ERR_INVALID_ARGUMENT naming it and the loaded backends). */
loom_status backend_options_check(loom_runtime *rt);
/* The value the user gave BACKEND's KEY (the last when given twice), or NULL. */
const char *backend_options_value(const loom_runtime *rt, const char *backend, const char *key);
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
    /* When a measurement overrode its device's backend estimate (cost_choice_note): the
     * explanation's "cost from measurement ...; X's estimate ... was 19x off"; else NULL. */
    char *cost_note;
    /* ---- events (executor.c) ---- */
    uint32_t evpred_first, n_evpred; /* predecessors signalled by a device event, in plan->evpred */
    uint32_t n_evsucc;    /* successors it signals by an event (the run records one for it) */
    uint32_t copy_src;    /* peer copies: the runtime device the tensor comes from */
    /* ---- subgraph claims (claims.c) ---- */
    uint32_t claim;       /* 1 + index in plan->claims when it is (or came from) a claim; 0: none */
} plan_node;

/* PLAN_COPY_PEER: device to device of one backend (copy_peer), run by the destination's
 * transfer worker; DEVICE is the destination, COPY_SRC the source. */
enum { PLAN_COPY_UPLOAD = 1, PLAN_COPY_DOWNLOAD = 2, PLAN_COPY_PEER = 3 };

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
    PLAN_DECIDED_CLAIM,      /* a backend's claimed subgraph, kept as one unit (or its nodes) */
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
    /* Host memory that transfers read or write lives in this arena: 1 + the runtime device
     * whose backend's alloc_host stages it (pinned memory), 0 when none. */
    uint32_t staging;
    /* Transfer workers: the backend starts the copies (upload_async/download_async) and says
     * when they are done; the worker does not block in them. */
    uint32_t async;
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
    /* Per entry of succ: 1 when the dependency is signalled device to device by an event
     * (both on in-order queues of one backend with events), 0 when a host thread is woken. */
    uint8_t *succ_event;
    uint32_t *evpred;      /* event predecessors of each node (plan_node.evpred_first) */
    uint32_t n_event_edges;
    /* Cross-worker dependencies (loom_plan_dependency): producer node and index into succ. */
    uint32_t *dep_from, *dep_edge;
    uint32_t n_deps;
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
    /* ---- subgraph claims (claims.c) ---- */
    struct plan_claim *claims; /* every valid claim, with placement's decision */
    uint32_t n_claims;
    uint32_t n_claims_dropped; /* claims that broke a rule (each said so in a runtime message) */
    /* ---- device copies of shared constants (devconst.c) ---- */
    struct devconst_cache *dconst; /* the model's cache (borrowed), NULL: plain plan */
    struct devconst_entry **dc_refs; /* references this plan holds, dropped at its destroy */
    uint32_t n_dc_refs, cap_dc_refs;
};

/* ---- devconst.c: device copies of shared constants (a model's weights once per device) ---- */
typedef struct devconst_cache devconst_cache;
typedef struct devconst_entry devconst_entry;
/* A new, empty cache for RT's devices; free with devconst_cache_destroy once no plan holds any
 * of its entries. Fails only with LOOM_ERR_OUT_OF_MEMORY. */
loom_status devconst_cache_create(loom_runtime *rt, devconst_cache **out);
void devconst_cache_destroy(devconst_cache *c);
/* Whether runtime device DEV takes device copies of constants (loom_device_info.
 * device_constants, memory the host cannot address, alloc and upload), unless
 * LOOM_SHARED_DEVICE_WEIGHTS is "0". */
int devconst_enabled(const loom_runtime *rt, uint32_t dev);
/* The device copy on runtime device DEV of the BYTES bytes at HOST: found, or allocated with
 * the device's alloc and uploaded (once). One reference for the caller (devconst_put). Fails
 * naming the device when the memory cannot be had or the upload fails. Thread-safe. */
loom_status devconst_get(devconst_cache *c, uint32_t dev, const void *host, size_t bytes,
                         devconst_entry **out);
/* The device address of E (the start of its block). */
void *devconst_address(const devconst_entry *e);
/* Drop a reference; the last frees the device block. Thread-safe. NULLs are ignored. */
void devconst_put(devconst_cache *c, devconst_entry *e);
/* Bytes held on devices now, entries now, and uploads made since C was created (C may be NULL:
 * all 0). Thread-safe. */
void devconst_stats(devconst_cache *c, size_t *bytes, size_t *entries, uint64_t *uploads);
/* loom_plan_create for a model's specialisation: constants the plan borrows (the model's
 * weights) are shared on devices through DC (may be NULL: exactly loom_plan_create). */
loom_status plan_create_shared(loom_runtime *rt, const loom_graph *g,
                               const loom_plan_options *options, devconst_cache *dc,
                               loom_plan **out);

/* ---- claims.c: subgraph claims (ABI 1.0) ---- */

typedef enum plan_claim_state {
    PLAN_CLAIM_SPLIT = 0, /* its nodes were placed one by one (WHY says why) */
    PLAN_CLAIM_KEPT,      /* one unit on its device: one plan node, one kernel */
    PLAN_CLAIM_LOST,      /* another device's overlapping claim was kept instead */
    PLAN_CLAIM_FAILED,    /* kept, but prepare_subgraph failed: its nodes run one by one */
} plan_claim_state;

/* A claim that passed the rules (connected, convex, in range, no overlap, typed outputs). */
typedef struct plan_claim {
    uint32_t device;      /* runtime device that claimed it */
    uint32_t index;       /* its position among the claims that device's claim() returned */
    uint32_t *pos;        /* its nodes as positions in the placement order, ascending */
    uint32_t n_pos;
    double estimate_s;    /* the backend's estimate; < 0: none (the node costs are summed) */
    char label[64];       /* "MatMul+Add+Relu" (the backend's, or made from the ops) */
    char *nodes_text;     /* "mm0, add0, relu0": the names of its nodes, for explanations */
    uint8_t state;        /* a plan_claim_state */
    double unit_s;        /* predicted seconds as one unit on DEVICE (INFINITY: cannot) */
    double split_s;       /* predicted seconds of its nodes placed one by one (INFINITY: cannot) */
    char why[256];        /* the decision in words */
    char *names;          /* its node names, each NUL-terminated, one after the other (n_pos) */
    char *sig;            /* its history signature as one unit (cost_signature_unit) */
    double measured_s;    /* the history's median for the unit on DEVICE; < 0: none */
    char fallback[192];   /* kept and compiled: its run-time fallback in words ("" : none asked) */
} plan_claim;

/* A loom_subgraph_desc with the storage behind it, and the graph value behind each value id. */
typedef struct plan_subgraph {
    loom_subgraph_desc desc;
    loom_value *value_of; /* per value id: the graph value */
    uint32_t n_values;
    void *block;          /* everything else, one allocation */
    char name[160];
} plan_subgraph;

/* The subgraph of G made of the nodes ORDER[POS[0..N-1]] (POS ascending: a topological order),
 * as loom_subgraph_desc numbers it: its inputs are the values read from outside the set, in
 * graph value order; its outputs the values graph outputs or nodes outside the set read.
 * Node descriptors carry PRECISION and ABSMAX (per graph value, may be NULL) like make_nodes'.
 * NAME is for messages. Free with plan_subgraph_free. */
loom_status plan_subgraph_build(const loom_graph *g, const uint32_t *order, const uint32_t *pos,
                                uint32_t n, uint32_t precision, const float *absmax,
                                const char *name, plan_subgraph *out);
void plan_subgraph_free(plan_subgraph *sg);

/* The claim stage (after the passes, before placement): offer G (every node, in ORDER) to each
 * device whose backend has claim() and prepare_subgraph(), that placement may use (WANT: -1 or
 * the requested device; EXCLUDE: a bit per device to leave out); check each claim and keep the
 * valid ones in PLAN->claims (state SPLIT until placement decides). A claim that breaks a rule
 * is dropped with a runtime message naming the claim and the rule. $LOOM_CLAIMS=0 turns the
 * stage off. Writes a one-line summary into SUMMARY. Fails only when out of memory. */
loom_status plan_claims_collect(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                                uint32_t precision, const float *absmax, int want,
                                uint64_t exclude, char *summary, size_t summary_len);

/* Placement's decision on every claim of PLAN: RAW (n_nodes x n_devices) is each node's
 * predicted seconds on each device whether or not the device supports it alone (INFINITY: no
 * figure), COST the same with unsupported and excluded devices at INFINITY; USER_PINNED marks
 * nodes a user pin names; PLACE_PIN (may be NULL) the device a node placed alone must run on
 * (the requested device of a plan that names one, a pin; -1: free), which its split uses (a
 * node that cannot run alone where it is pinned makes its claims unsplittable); SHARED_OUT a
 * bit per device that computes on the cores of the host's own CPU device and so stays out of
 * automatic placement: a claim of such a device is split unless PLACE_PIN puts one of its
 * nodes there. A claim is kept when its unit is predicted no slower than its nodes
 * placed one by one (the best device of each plus transfers between them); overlapping claims
 * compete by the time they save. Writes UNIT_OF[p] (1 + the kept claim covering position p, 0:
 * none) and each claim's state, figures and WHY. */
void plan_claims_decide(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                        const double *raw, const double *cost, const uint8_t *user_pinned,
                        const int32_t *place_pin, uint64_t shared_out, uint32_t *unit_of);

/* The run-time fallback of kept claim CLAIM, compiled from SG on its device: the first other
 * host-visible device whose backend claims SG whole (one claim of all its nodes) and compiles it
 * with prepare_subgraph; that kernel takes the unit's loom_exec_args as they are (the same
 * subgraph's inputs and outputs). Sets *FB_DEVICE, *FB_KERNEL (NULL: no fallback) and
 * *FB_SCRATCH, and CLAIM->fallback says which device, or why there is none. A unit on the
 * reference backend gets none (nothing to fall back to). Never fails: without a fallback a
 * failing unit fails its run, as before. */
void plan_claim_fallback(loom_plan *plan, plan_claim *claim, const plan_subgraph *sg,
                         uint32_t *fb_device, void **fb_kernel, size_t *fb_scratch);

/* Free PLAN's claims. */
void plan_claims_free(loom_plan *plan);

/* Runtime device index named by SPEC ("cpu:0", or "cpu" for the backend's first), or -1. */
int plan_find_device(const loom_runtime *rt, const char *spec);

/* ---- plan_moe.c ---- */
/* Whether the plan splits G's MoE nodes into router, experts and sum (passes/split_moe_experts.c)
 * into *SPLIT, and why into WHY: LOOM_MOE_SPLIT=0/1, a pin naming the pieces (MoEExpert=,
 * MoERoute=, node:<moe>/expert<e> or /router), else whether at least two devices the plan may
 * use (WANT, EXCLUDE; not those on the host's own cores) support one of its experts described
 * at PRECISION (a loom_precision). No MoE: *SPLIT = 0 and WHY = "". Never fails. */
void plan_moe_split_decide(const loom_runtime *rt, const loom_graph *g, uint32_t precision,
                           int want, uint64_t exclude, const char *const *pins, size_t n_pins,
                           int *split, char *why, size_t why_len);

/* ---- plan_explain.c ---- */
/* Set N's cost_source (and cost_note, freeing an older one) from PLAN's cost model for its
 * device, DESC being N's descriptor. */
void plan_node_cost_source(loom_plan *plan, plan_node *n, const loom_node_desc *desc);

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
 * order, summary figures) and PRED (4 x n_nodes: start, finish, duration, and the rank of the
 * node's task in a topological order of the tasks: a claim kept as one unit is one task) and
 * DECIDED; with claims (PLAN->claims) it decides them (plan_claims_decide) and places every kept
 * claim as one task on its device;
 * PIN_IGNORED[p] (zeroed by the caller) becomes 1 + the pinned device when a pin could not be
 * honoured (not strict). Opens PLAN->model. */
loom_status plan_place(loom_plan *plan, const loom_graph *g, const uint32_t *order,
                     const int32_t *tensor_of, uint32_t precision, const float *absmax,
                     const plan_place_opts *opts, uint32_t *device, double *pred, uint8_t *decided,
                     int16_t *pin_ignored);

/* Bytes of memory DEV can give the plan: the free bytes of its backend's memory_info when it
 * tells, else loom_device_info.memory_bytes (the capacity placement respects). */
double plan_free_memory(const runtime_device *dev);

/* Predicted seconds of moving BYTES from runtime device FROM to TO (COST_HOST: host memory). */
double plan_link_seconds(const loom_plan *plan, uint32_t from, uint32_t to, double bytes);

/* After a measured run: feed the per-node times of TIMELINE into the cost model's history. */
void plan_learn(loom_plan *plan, const loom_node_timing *timeline, size_t count);

/* ---- reference.c ---- */
/* The evaluator the layers below use to run a node on the host: the CPU reference kernels. */
graph_eval_fn runtime_reference_eval(void);
/* Evaluate NODE, an operator whose output shape depends on its input values, with the CPU
 * reference kernels (loom_cpu_eval_value_dependent documents the arguments): OUTPUTS sized for
 * the descriptor's upper bounds, ACTUAL receives the shapes produced. */
loom_status runtime_reference_eval_value_dependent(const loom_node_desc *node,
                                                   const void *const *inputs,
                                                   void *const *outputs, loom_tensor_desc *actual,
                                                   char *err, size_t err_len);

/* ---- memplan.c ---- */
/* Assign arena offsets to every intermediate tensor and node scratch of PLAN, reusing memory
 * between tensors whose lifetimes (in each device's execution order) do not overlap. Fills the
 * arena sizes, peak_bytes and unshared_bytes. */
loom_status plan_memory_plan(loom_plan *plan);

/* ---- device_health.c: the circuit breaker of a failing device ---- */
/* Defaults, documented in docs/writing-a-backend.md ("When a device fails"); the environment
 * overrides them (LOOM_BREAKER_RUNS, 0 turns the breaker off; LOOM_BREAKER_COOLDOWN_MS;
 * LOOM_BREAKER_COOLDOWN_MAX_MS). */
#define LOOM_BREAKER_FAILED_RUNS 3          /* consecutive failed runs that set a device aside */
#define LOOM_BREAKER_COOLDOWN_MS 30000      /* the first cool-down; it doubles at each trip */
#define LOOM_BREAKER_COOLDOWN_MAX_MS 600000 /* ... up to this */

/* Out of line: DEV's until_ns is UNTIL (non-zero). 1 while the cool-down lasts; once it is over
 * the first caller puts the device back in service (a message says so) and every caller gets 0. */
int device_health_check(loom_runtime *rt, uint32_t device, uint64_t until);

/* Whether nodes with a fallback skip runtime device DEVICE now. The hot path: one relaxed load
 * while the device is in service. */
static inline int device_set_aside(loom_runtime *rt, uint32_t device)
{
    uint64_t until = atomic_load_explicit(&rt->devices[device].health.until_ns,
                                          memory_order_relaxed);
    return until && device_health_check(rt, device, until);
}

/* The end of a run of non-strict PLAN, whose nodes ran on runtime device DEVICE: a run in which
 * a node failed on it counts toward the breaker (the message names the device PLAN's nodes
 * re-run on); a run in which it worked, in service, resets the count. */
void device_health_failed_run(const loom_plan *plan, uint32_t device);
void device_health_good_run(loom_runtime *rt, uint32_t device);

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
