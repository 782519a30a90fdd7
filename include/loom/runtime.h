/*
 * Running graphs: the runtime (devices found on this machine), host tensors for inputs and
 * outputs, plans (a checked graph placed on devices, compiled, with a static memory plan) and
 * runs with their figures.
 *
 * Threading: a runtime may be used from several threads. A plan is immutable once created and
 * loom_plan_run may be called on one plan from several threads at once; each concurrent run gets
 * its own intermediate memory. The calling thread takes part in the CPU kernels' work: some
 * (the convolutions) keep tiles of up to 48 KiB on its stack, so call loom_plan_run and
 * loom_model_run from threads with at least 256 KiB of stack (glibc's default is 8 MiB).
 */
#ifndef LOOM_RUNTIME_H
#define LOOM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_runtime loom_runtime; /* opaque: devices and their backends */
typedef struct loom_plan loom_plan;       /* opaque: a graph placed on devices, ready to run */

/* ---- the runtime ------------------------------------------------------------------------- */

/* The most threads the CPU backend starts (loom_runtime_options.cpu_threads and
 * LOOM_CPU_THREADS). */
#define LOOM_MAX_CPU_THREADS 1024

typedef struct loom_runtime_options {
    uint32_t struct_size;  /* sizeof(loom_runtime_options): lets the struct grow */
    /* Threads of the CPU backend, 1 to LOOM_MAX_CPU_THREADS; 0: LOOM_CPU_THREADS (same range),
     * else one per core. A larger count is refused (LOOM_ERR_INVALID_ARGUMENT, naming it). */
    uint32_t cpu_threads;
    /* Backend plugins to load first: shared objects, or folders whose *.so files are tried.
     * N_PLUGIN_PATHS entries, none NULL (a NULL array with a count is refused). */
    const char *const *plugin_paths;
    size_t n_plugin_paths;
    /* Non-zero: load only PLUGIN_PATHS, not LOOM_BACKEND_PATH nor the installed folder. */
    int no_default_plugins;
    /* Options for backends, N_BACKEND_OPTIONS strings "BACKEND:KEY=VALUE" (npu-sim:profile=
     * edge.json), applied through the backend's set_option before its devices are listed
     * (backend ABI 1.0, loom_backend.options). An option for a backend that is not loaded or
     * does not declare KEY, a malformed string, or a value the backend refuses fails
     * loom_runtime_create with LOOM_ERR_INVALID_ARGUMENT naming the option. */
    const char *const *backend_options;
    size_t n_backend_options;
} loom_runtime_options;

/* Find the devices of this machine and start their backends. OPTIONS may be NULL (defaults).
 * On success *OUT is owned by the caller: free with loom_runtime_destroy. Fails with
 * LOOM_ERR_INVALID_ARGUMENT on bad OPTIONS (a thread count beyond LOOM_MAX_CPU_THREADS, a NULL
 * plugin path) or a bad LOOM_CPU_THREADS, and LOOM_ERR_DEVICE_LOST when no device could start. */
loom_status loom_runtime_create(const loom_runtime_options *options, loom_runtime **out);

/* Messages of the runtime, oldest first: plugins refused (with the file and the reason),
 * devices skipped, backends' own log lines (prefixed with the backend's name), nodes re-run on
 * another device, devices set aside after repeated failures. They are kept in a bounded ring
 * (LOOM_RUNTIME_MESSAGES_MAX): when it is full the oldest go, and the first message then says
 * how many were dropped ("N messages dropped"). Strings owned by the runtime, valid until the
 * next loom_runtime_messages_drain or until that many newer messages arrived. A refused plugin
 * never stops the others. */
#define LOOM_RUNTIME_MESSAGES_MAX 256
size_t loom_runtime_message_count(const loom_runtime *runtime);
const char *loom_runtime_message(const loom_runtime *runtime, size_t i);

/* Hand every message now held to FN (with USER), oldest first (the "N messages dropped" line
 * first when messages were lost), and empty the ring; returns how many FN got. FN may be NULL
 * to discard them. Thread-safe against backends logging meanwhile; FN must not call back into
 * the runtime's message functions. */
size_t loom_runtime_messages_drain(loom_runtime *runtime,
                                   void (*fn)(void *user, const char *message), void *user);

/* Drop the caller's reference to RUNTIME. Each plan made from RUNTIME holds a reference of
 * its own, so plans stay valid (and runnable) after this call; the backends' threads stop and
 * the runtime is freed when the last of them is destroyed (at once when there is none). After
 * this call the caller must not use RUNTIME itself (not even to make plans). NULL is allowed.
 * Thread-safe against loom_plan_destroy on other threads. */
void loom_runtime_destroy(loom_runtime *runtime);

/* Number of devices, and facts about the I-th (id "cpu:0" into ID, at most ID_LEN bytes with
 * the NUL). Returns LOOM_ERR_INVALID_ARGUMENT when I is out of range. */
size_t loom_runtime_device_count(const loom_runtime *runtime);
loom_status loom_runtime_device(const loom_runtime *runtime, size_t i, char *id, size_t id_len,
                                loom_device_info *info);

/* The backends of RUNTIME (built in first, then plugins, in load order) and the options each
 * declares (backend ABI 1.0, loom_backend.options), for listings such as `loom devices`.
 * loom_runtime_backend_info: the I-th backend's NAME (owned by the backend, valid while RUNTIME
 * lives), the ABI version its table was built for (packed as LOOM_ABI_VERSION) and how many
 * options it declares; any output may be NULL. loom_runtime_backend_option: its J-th option
 * (the backend's declaration) and the VALUE the user gave it through
 * loom_runtime_options.backend_options (NULL when none was given: the backend's default
 * holds). Both fail with LOOM_ERR_INVALID_ARGUMENT when RUNTIME is NULL or I or J is out of
 * range. */
size_t loom_runtime_backend_count(const loom_runtime *runtime);
loom_status loom_runtime_backend_info(const loom_runtime *runtime, size_t i, const char **name,
                                      uint32_t *abi_version, size_t *n_options);
loom_status loom_runtime_backend_option(const loom_runtime *runtime, size_t i, size_t j,
                                        const loom_backend_option **option, const char **value);

/* Measure the devices of RUNTIME for the cost model (sustained GFLOP/s, memory bandwidth,
 * launch latency, host links) and save their profiles in CACHE_DIR (NULL: $XDG_CACHE_HOME/loom,
 * else $HOME/.cache/loom), where plans find them. ONLY_MISSING: only devices without a cached
 * profile; QUICK: fewer sizes and repeats. PROGRESS (may be NULL) receives a label and the
 * fraction done. *N_MEASURED (may be NULL) gets the number of devices measured. Fails naming
 * the device whose measurement failed, or with LOOM_ERR_IO naming the cache file. */
loom_status loom_runtime_calibrate(loom_runtime *runtime, const char *cache_dir, int only_missing,
                                   int quick,
                                   void (*progress)(void *user, const char *label,
                                                    double fraction),
                                   void *user, size_t *n_measured);

/* ---- plans ------------------------------------------------------------------------------- */

typedef struct loom_plan_options {
    uint32_t struct_size; /* sizeof(loom_plan_options) */
    /* Run every node on this device ("cpu:0", or "cpu" for the backend's first device); NULL
     * lets the placement policy decide. */
    const char *device;
    /* Fail plan creation when a node cannot run where it was asked to, instead of placing it on
     * another device that supports it; and fail a run when a node's device fails, instead of
     * re-running the node on another device. */
    int strict;
    /* The lowest precision accepted for float32 nodes (loom_precision): LOOM_PRECISION_F32
     * (default) keeps them exact; F16 or INT8 lets devices such as NPUs take them;
     * LOOM_PRECISION_INT8_DYNAMIC rewrites the graph first (the quantize_int8_dynamic pass):
     * MatMul and Gemm nodes with constant f32 weights (inner dimension >= 16) get int8 weights
     * with one scale per output column, stored once in the plan (the float weights are not
     * kept), and quantise their activations per row when they run; the rest stays f32. */
    uint32_t precision;
    /* Sample inputs to calibrate int8 scales of activations (used when PRECISION is
     * LOOM_PRECISION_INT8, ignored otherwise): N_CALIBRATION_SETS sets of the graph's inputs,
     * set s being CALIBRATION_INPUTS[s * n_inputs .. s * n_inputs + n_inputs - 1] in the order
     * of the graph's inputs, each of the input's dtype and shape. The plan evaluates the graph
     * on each set with the CPU reference kernels and gives each node the largest |value| of
     * each of its inputs (loom_node_desc.input_absmax). NULL / 0: not calibrated (devices
     * quantise activations dynamically). Borrowed for the call only. */
    const loom_tensor *const *calibration_inputs;
    size_t n_calibration_sets;
    /* ---- placement (the cost model and the placement policies) ---- */
    /* "default" (NULL): Loom's search (lookahead, portfolio, local search, exact when tiny);
     * "heft", "peft", "exact", or "first" (each node on the first device that supports it). */
    const char *policy;
    /* > 0: meet this end-to-end latency (seconds) at least energy (device power weights from
     * the profiles) instead of minimising latency; loom_plan_summary says whether the plan is
     * predicted to meet it. */
    double target_latency_s;
    /* Pins, each "OP=DEVICE" (every node of that op type, e.g. "Conv=npu-sim") or
     * "node:NAME=DEVICE" (one node). A device that cannot run a pinned node is an error with
     * STRICT, else the pin is ignored for that node (and said so in its explanation). */
    const char *const *pins;
    size_t n_pins;
    /* Seconds the placement search may take; 0: the policy's default (0.5 s at most, far less
     * for small graphs). */
    double budget_s;
    /* Where device profiles and measured history are cached; NULL: $XDG_CACHE_HOME/loom, else
     * $HOME/.cache/loom. The runtime parses a folder's history.json once and keeps it in
     * memory for every later plan, parsing it again only when the file changed on disk (or the
     * runtime saved it); profiles.json is read at every plan creation. */
    const char *cache_dir;
    /* Non-zero: record every run's measured per-node times into the cost model's history
     * (saved to the cache when the plan is destroyed). */
    int learn;
    /* LOOM_PRECISION_INT8_DYNAMIC only: nodes (by name) that stay float. */
    const char *const *keep_float;
    size_t n_keep_float;
} loom_plan_options;

/* Place a checked GRAPH on RUNTIME's devices, compile every node and make the static memory
 * plan. OPTIONS may be NULL. The plan copies what it needs from GRAPH (constants it borrowed
 * stay borrowed), so GRAPH may be destroyed afterwards. On success *OUT is owned by the caller:
 * free with loom_plan_destroy. Fails with LOOM_ERR_INVALID_ARGUMENT when GRAPH was not checked
 * or OPTIONS names an unknown device, LOOM_ERR_UNSUPPORTED when some node can run on no
 * device (the message names the node and each device's reason) or when a node's output shape
 * depends on its input values (NonZero, Compress, Unique, NonMaxSuppression: a static memory
 * plan cannot size it; the message names the node; loom/model.h runs such models in stages). */
loom_status loom_plan_create(loom_runtime *runtime, const loom_graph *graph,
                             const loom_plan_options *options, loom_plan **out);

/* Free PLAN; no run of it may be in progress. NULL is allowed. Drops the plan's reference to its
 * runtime: destroying the last plan of a runtime already passed to loom_runtime_destroy stops
 * the runtime's backends too. */
void loom_plan_destroy(loom_plan *plan);

/* Bytes of intermediate memory one run of PLAN needs (the static memory plan's peak, all
 * devices together), and what it would need without reuse (the sum of all intermediates). */
size_t loom_plan_peak_bytes(const loom_plan *plan);
size_t loom_plan_unshared_bytes(const loom_plan *plan);

/* Number of nodes in PLAN, and the device id and node name of the I-th (in execution order);
 * strings are owned by the plan. Return NULL when I is out of range. */
size_t loom_plan_node_count(const loom_plan *plan);
const char *loom_plan_node_name(const loom_plan *plan, size_t i);
const char *loom_plan_node_op(const loom_plan *plan, size_t i);
const char *loom_plan_node_device(const loom_plan *plan, size_t i);

/* Whether the I-th node of PLAN is a transfer the plan inserted (op "Copy") rather than a
 * node of the graph; loom_plan_node_device then gives its link, "host->opencl:0" (upload) or
 * "opencl:0->host" (download), and its name is "copy:TENSOR->DEVICE". */
int loom_plan_node_is_copy(const loom_plan *plan, size_t i);

/* Why the I-th node of PLAN runs where it does. Strings and arrays are owned by the plan. */
typedef struct loom_node_explain {
    uint32_t struct_size;      /* set by the caller to sizeof(loom_node_explain) */
    const char *name, *op, *device;
    double predicted_s;        /* predicted time on its device */
    double start_s, finish_s;  /* in the predicted schedule */
    /* Predicted seconds on each runtime device (loom_runtime_device order), INFINITY where the
     * device cannot run it; COST_COUNT entries. */
    const double *cost_s;
    size_t cost_count;
    /* where its device's figure came from: history, calibration (a calibrated measurement of
     * its op class that overrode a backend estimate more than 2x off it; REASON says by how
     * much), backend, roofline; link for a copy */
    const char *cost_source;
    const char *decided_by;    /* pin, only-device, requested-device, earliest-finish, search,
                                * energy, capacity, first, copy, one-device (spreading over
                                * devices was predicted less than 10% faster than the best one
                                * alone, which runs it all), shared-cores (a device on the
                                * host's own cores kept out while the cpu backend can run it) */
    const char *reason;        /* one line for people */
    double bytes_in_moved;     /* input bytes that had to move from another device */
    double transfer_in_s;      /* predicted seconds of those transfers */
    double bytes_kept_local;   /* input bytes that stayed on its device (transfers saved) */
} loom_node_explain;

/* Fill OUT for the I-th node of PLAN. Fails with LOOM_ERR_INVALID_ARGUMENT when I is out of
 * range or OUT->struct_size is too small. */
loom_status loom_plan_explain(const loom_plan *plan, size_t i, loom_node_explain *out);

/* The plan as a whole, as placed: predictions, not measurements. */
typedef struct loom_plan_summary {
    uint32_t struct_size;      /* set by the caller to sizeof(loom_plan_summary) */
    const char *policy;        /* the policy that placed it */
    double predicted_s;        /* predicted end-to-end latency */
    double heft_predicted_s;   /* HEFT's on the same costs (0 when the policy was "first") */
    double target_latency_s;   /* 0: none */
    int target_met;            /* predicted: 1 met (or no target), 0 missed */
    double predicted_energy_j; /* sum over nodes of time x device power */
    const char *best_single_device; /* the device that alone would finish soonest (predicted) */
    double best_single_s;      /* its predicted latency */
    size_t n_copies;           /* transfer nodes inserted */
    double placement_ms;       /* time the placement took */
    /* ---- since 0.4 ---- */
    size_t constant_bytes;     /* constants (weights) the plan holds or borrows */
} loom_plan_summary;

/* Fill OUT with PLAN's summary: the fields OUT->struct_size covers (a caller built against an
 * older header gets the fields it knows). Fails with LOOM_ERR_INVALID_ARGUMENT on NULLs or a
 * struct_size below the first version's. */
loom_status loom_plan_summary_get(const loom_plan *plan, loom_plan_summary *out);

/* What one stage of planning did: a graph pass (validate, fold_constants, calibrate_int8, ...)
 * or a scheduler stage (place, compile, insert_copies, memory_plan), in the order they ran
 * (docs/architecture.md lists the pipeline). */
typedef struct loom_pass_info {
    uint32_t struct_size;   /* set by the caller to sizeof(loom_pass_info) */
    const char *name;       /* static string */
    size_t nodes_before;    /* nodes of the graph (or plan) before and after the stage */
    size_t nodes_after;
    double ms;              /* wall time the stage took */
    const char *summary;    /* one line of what it did; owned by the plan */
} loom_pass_info;

/* Number of stages PLAN recorded (0 when PLAN is NULL). */
size_t loom_plan_pass_count(const loom_plan *plan);

/* Fill OUT (struct_size set by the caller) with stage I of PLAN; strings live as long as PLAN.
 * Fails with LOOM_ERR_INVALID_ARGUMENT on NULLs, a small struct_size or I out of range. */
loom_status loom_plan_pass_info(const loom_plan *plan, size_t i, loom_pass_info *out);

/* Write PLAN's placement and explanations as JSON (docs/profile.md describes it) into a new
 * NUL-terminated string *OUT, owned by the caller: free with loom_string_free. */
loom_status loom_plan_explain_json(const loom_plan *plan, char **out);
void loom_string_free(char *s);

/* Timing of one node in one run: nanoseconds since the run's start. */
typedef struct loom_node_timing {
    uint32_t node;   /* index as in loom_plan_node_name */
    uint32_t device; /* index as in loom_runtime_device */
    uint64_t start_ns;
    uint64_t end_ns;
} loom_node_timing;

/* Figures of one run. Filled by loom_plan_run when the caller passes one; plain data. */
typedef struct loom_run_stats {
    uint32_t struct_size; /* set by the caller to sizeof(loom_run_stats): lets the struct grow */
    double latency_ms;    /* wall time of the run, from start to the last node's end */
    size_t peak_bytes;    /* peak of intermediate memory across all devices */
    /* Per-node timeline: when TIMELINE is non-NULL and TIMELINE_CAPACITY >= the plan's node
     * count, the run writes one entry per node (in plan order) and sets TIMELINE_COUNT. The
     * caller owns the array. */
    loom_node_timing *timeline;
    size_t timeline_capacity;
    size_t timeline_count;
    /* Nodes whose device failed and that were re-run on another device (never with a strict
     * plan); loom_runtime_message says which and why. */
    size_t fallback_count;
    /* ---- appended (backend ABI 1.0) ---- */
    /* The first FALLBACKS_CAPACITY of those re-runs, when FALLBACKS is non-NULL (the caller owns
     * the array): which node, where it failed, the backend's status and message, where it
     * re-ran. FALLBACKS_WRITTEN entries were written (at most the capacity). */
    struct loom_fallback_info *fallbacks;
    size_t fallbacks_capacity;
    size_t fallbacks_written;
    /* Transfers this run: copy steps of the plan that moved data (host<->device, and
     * device<->device through peer copies). */
    size_t copies;
    size_t peer_copies;         /* of those, device-to-device without the host */
    /* Cross-worker dependencies this run resolved by waking a host thread, and those the
     * devices resolved themselves through backend events (no host wake-up). */
    size_t host_wakeups;
    size_t event_waits;
} loom_run_stats;

/* One node re-run on another device (loom_run_stats.fallbacks). */
typedef struct loom_fallback_info {
    uint32_t node;          /* index as in loom_plan_node_name */
    uint32_t failed_device; /* runtime device indices, as in loom_runtime_device */
    uint32_t ran_device;
    loom_status status;     /* what the failing device's backend returned (mapped to the enum) */
    char message[256];      /* the backend's message, "" when it gave none */
} loom_fallback_info;

/* Run PLAN once. INPUTS and OUTPUTS are the graph's, in declaration order; the caller owns
 * both and keeps them alive until the call returns. Thread-safe: one plan may run from several
 * threads at once. STATS may be NULL.
 * Fails with LOOM_ERR_INVALID_ARGUMENT, before anything runs or is written, when a count, dtype
 * or shape differs from the graph's (the message names the input or output), when INPUTS or
 * OUTPUTS is NULL with a non-zero count or holds a NULL tensor, and when an output's memory
 * overlaps, even partly, an input's or another output's (the same tensor passed twice
 * included); inputs may share memory with each other. Fails with the failing node's status (its
 * name in the message) when a kernel fails. */
loom_status loom_plan_run(loom_plan *plan, const loom_tensor *const *inputs, size_t n_inputs,
                          loom_tensor *const *outputs, size_t n_outputs, loom_run_stats *stats);

/* Create, for each output of PLAN's graph, a zero-filled tensor of its dtype and shape, into
 * OUTPUTS[N] (N must equal the output count). On success the caller owns them all (free each
 * with loom_tensor_destroy); on failure none is left allocated. */
loom_status loom_plan_make_outputs(const loom_plan *plan, loom_tensor **outputs, size_t n);

/* Number of inputs and outputs PLAN's graph had (what loom_plan_run takes); 0 for NULL. */
size_t loom_plan_input_count(const loom_plan *plan);
size_t loom_plan_output_count(const loom_plan *plan);

/* The I-th input (output) of PLAN, in the order loom_plan_run takes them: its NAME (owned by the
 * plan, valid until loom_plan_destroy), DTYPE, RANK and DIMS (LOOM_MAX_RANK entries). Each of
 * NAME, DTYPE, RANK and DIMS may be NULL. Answers from the plan alone, so it works after the
 * graph is destroyed. Fails with LOOM_ERR_INVALID_ARGUMENT when PLAN is NULL or I is out of
 * range. */
loom_status loom_plan_input_info(const loom_plan *plan, size_t i, const char **name,
                                 loom_dtype *dtype, uint32_t *rank, int64_t *dims);
loom_status loom_plan_output_info(const loom_plan *plan, size_t i, const char **name,
                                  loom_dtype *dtype, uint32_t *rank, int64_t *dims);

/* How a dependency between nodes run by different workers (two devices, or a device and a
 * transfer) is signalled: by waking the consumer's host thread when the producer completes, or
 * device to device through a backend event (the consumer's queue waits; no host wake-up). */
typedef enum loom_dependency_kind {
    LOOM_DEPENDENCY_HOST = 1,
    LOOM_DEPENDENCY_EVENT = 2,
} loom_dependency_kind;

/* Number of PLAN's cross-worker dependencies (0 for NULL), and the I-th of them: producer node
 * *FROM and consumer node *TO (indices as in loom_plan_node_name) and its *KIND; any of the
 * three may be NULL. What loom_run_stats.host_wakeups and event_waits count per run, and what
 * `loom profile --trace` draws as flow arrows. LOOM_EVENTS=0 (read at plan time) plans every
 * dependency as a host wake-up. Fails with LOOM_ERR_INVALID_ARGUMENT when PLAN is NULL or I is
 * out of range. */
size_t loom_plan_dependency_count(const loom_plan *plan);
loom_status loom_plan_dependency(const loom_plan *plan, size_t i, size_t *from, size_t *to,
                                 loom_dependency_kind *kind);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_RUNTIME_H */
