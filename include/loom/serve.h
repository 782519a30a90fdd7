/*
 * Serving: a server answers a stream of inference requests for named models within their
 * latency targets. Requests of one model wait in a priority queue; a latency-aware batcher
 * joins compatible ones along the batch dimension when the measured run time of the bigger
 * batch still meets the oldest request's deadline; a result cache answers repeated requests
 * without running them (identical requests in flight run once); worker threads run batches
 * through plans made per batch size. An HTTP front end speaks the KServe v2 / Open Inference
 * Protocol and exposes Prometheus metrics (docs/serve.md).
 *
 * Threading: every function here may be called from any thread, except that a server must not
 * be destroyed while another thread still uses it. Completion callbacks run on the server's
 * worker threads (or, for a cache hit, in the submitting thread before loom_serve_submit
 * returns): they must not block for long and must not call loom_server_destroy.
 *
 * Errors: functions that fail return a loom_status and leave a message for the calling thread
 * in loom_serve_last_error() (it includes loom_last_error() when a lower layer failed).
 */
#ifndef LOOM_SERVE_H
#define LOOM_SERVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "graph.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_server loom_server;           /* opaque: models, queues, workers, caches */
typedef struct loom_serve_http loom_serve_http;   /* opaque: the HTTP front end of a server */

/* The calling thread's message for its last failed serving call, e.g. "model 'bert' has no
 * input named 'ids'". Owned by Loom, valid until the thread's next serving call; "" if none. */
const char *loom_serve_last_error(void);

/* ---- the server -------------------------------------------------------------------------- */

typedef struct loom_server_options {
    uint32_t struct_size; /* sizeof(loom_server_options): lets the struct grow */
    /* Threads that run batches; 0: 2. Batches of different models, or of one model, run at
     * once on as many workers (each plan run spreads over its devices). */
    uint32_t workers;
    /* The audit trail (docs/serve.md, "Audit trail"): NULL: off. Else the SQLite database
     * (created when absent, WAL mode) to which every answered request appends one
     * hash-chained record: written to the journal PATH + "-pending" before the answer is
     * delivered, moved into the database in the background. One server per database. */
    const char *audit_path;
    /* A file whose bytes are the HMAC-SHA-256 key of the records; NULL: no MACs. */
    const char *audit_key_path;
    /* Non-zero: when the database's chain does not verify, start a new segment (a record says
     * where and why) instead of refusing to append. */
    int audit_new_segment;
    /* Non-zero: the journal is fdatasync'ed after each record before its answer leaves, and
     * SQLite runs synchronous=FULL: nothing answered is lost even to a power cut. 0 (the
     * default): a record reaches the operating system before its answer leaves, so a crash or
     * SIGKILL of the process loses nothing answered; a power cut may lose the last records. */
    int audit_sync_full;
    /* A serving trace (docs/serve.md, "Trace"): NULL: off. Else a file created (truncated) at
     * start, into which every batch (per worker), every answered request (from arrival to
     * answer, with its variant, path, figures and the QoS decision's inputs) and every QoS
     * switch is written as a Chrome trace event; the JSON array is closed by
     * loom_server_destroy. */
    const char *trace_path;
} loom_server_options;

/* Create a server over RUNTIME (borrowed: it must outlive the server). OPTIONS may be NULL.
 * Its workers start at once. On success *OUT is owned by the caller: free with
 * loom_server_destroy. Fails with LOOM_ERR_OUT_OF_MEMORY or LOOM_ERR_INTERNAL (a thread could
 * not start); with an audit database, LOOM_ERR_IO when it cannot be opened or written, or
 * LOOM_ERR_INVALID_ARGUMENT when its chain is broken (the message names the first bad record)
 * and AUDIT_NEW_SEGMENT is not set, or the key file is unreadable or empty; with a trace path,
 * LOOM_ERR_IO when the file cannot be created. */
loom_status loom_server_create(loom_runtime *runtime, const loom_server_options *options,
                               loom_server **out);

/* Stop accepting requests, answer every request already accepted (run or, when past its
 * deadline, answered with LOOM_SERVE_DEADLINE), stop the workers and free SERVER and its
 * models. NULL is allowed. Must not be called from a completion callback. */
void loom_server_destroy(loom_server *server);

/* Stop accepting requests (loom_serve_submit answers LOOM_SERVE_UNAVAILABLE from now on) and
 * wait until every accepted request has been answered. The server stays usable for queries
 * and statistics; destroy it afterwards. */
void loom_server_drain(loom_server *server);

/* ---- models ------------------------------------------------------------------------------ */

/* Builds the graph of a model for a batch of BATCH rows (the batch dimension set to BATCH),
 * checked; returns a graph the server owns from then on (and frees with loom_graph_destroy),
 * or NULL on failure with a message in loom_last_error(). USER is what was given to
 * loom_server_add_graph. Called from the thread that adds the model or from a worker. */
typedef loom_graph *(*loom_serve_build_fn)(int64_t batch, void *user);

typedef struct loom_serve_model_options {
    uint32_t struct_size;   /* sizeof(loom_serve_model_options) */
    const char *version;    /* NULL: "1". Copied */
    uint32_t batch_axis;    /* the batch dimension of every input and output; 0 by default */
    /* Largest batch (rows along BATCH_AXIS) one run takes; 0: 8; 1 turns batching off (a
     * request may still carry several rows, up to this bound). */
    uint32_t max_batch;
    /* Target of the end-to-end latency (seconds) used for requests without a deadline when
     * deciding how long a batch may wait; 0: 0.05. */
    double latency_target_s;
    uint32_t queue_limit;   /* most waiting requests; beyond it LOOM_SERVE_QUEUE_FULL; 0: 1024 */
    size_t cache_bytes;     /* bytes of cached results; 0: no cache for this model */
    /* Plans are made for batch sizes 1, 2, 4, ... up to MAX_BATCH (MAX_BATCH itself included)
     * and a batch is padded to the next of these; non-zero EXACT_SIZES makes a plan for every
     * size instead (more plans, no padding). */
    int exact_sizes;
    /* Non-zero: make every batch size's plan now rather than on first use, and run each a few
     * times on zero-filled inputs so the batcher starts from measured run times. */
    int warm;
    /* Placement options for the plans (device, policy, ...); NULL: defaults. Borrowed for
     * the call only: the strings are copied. */
    const loom_plan_options *plan_options;
    /* The variant this file is: NULL or "full", or "lite" (a smaller model with the same
     * inputs and outputs). Adding a NAME and version that is already served with another
     * variant adds this one to it (its inputs and outputs must match); the model's
     * QoS settings (loom_server_set_qos) then choose between them per request. */
    const char *variant;
} loom_serve_model_options;

/* Add the ONNX model at PATH under NAME (copied) with OPTIONS (may be NULL). The file is read
 * once per batch size, with the batch dimension of every input overridden (other symbolic
 * dims must be resolvable, else default to 1). The plan for batch 1 is made now, so a model
 * that cannot run fails here. Fails with LOOM_ERR_INVALID_ARGUMENT (duplicate NAME and
 * version, an input without the batch axis, a bad option), or the status of loading or
 * placing the model. */
loom_status loom_server_add_onnx(loom_server *server, const char *name, const char *path,
                                 const loom_serve_model_options *options);

/* Add a model built in C: BUILD(batch, USER) makes its graph for a batch size (see
 * loom_serve_build_fn). USER is borrowed until the server is destroyed. Fails as
 * loom_server_add_onnx. */
loom_status loom_server_add_graph(loom_server *server, const char *name, loom_serve_build_fn build,
                                  void *user, const loom_serve_model_options *options);

/* ---- variants, QoS and cascades (docs/serve.md) ----------------------------------------- */

typedef struct loom_serve_qos_options {
    uint32_t struct_size;      /* sizeof(loom_serve_qos_options) */
    /* What a request with no variant (or "auto") gets: "auto" (the default; the full variant
     * while the cost model predicts queued work meets each request's deadline, else the lite
     * one, with hysteresis), "cascade" (lite first, the full one when unsure), "full", "lite". */
    const char *mode;
    /* Automatic switching: to lite when the predicted finish of the full variant's queued work
     * passes ENTER x the request's time budget (0: 1.0); back to full when it is under
     * LEAVE x the budget (0: 0.5), the full variant's predicted utilisation under the recent
     * arrival rate is under LEAVE_UTIL (0: 0.8), and MIN_DWELL_S (0: 0.25) passed since the
     * last switch. */
    double enter, leave, leave_util, min_dwell_s;
    /* Cascade: the lite variant's output whose rows are class scores (NULL: the first output),
     * CONFIDENCE "max_prob" (the largest softmax probability; rows that are not already a
     * distribution are soft-maxed; NULL: this) or "margin" (top-1 minus top-2 probability),
     * and the THRESHOLD in [0, 1] under which a request is escalated to the full variant. */
    const char *confidence_output;
    const char *confidence;
    double threshold;
    /* NULL: escalate to the local full variant. Else the full model is remote: another
     * `loom serve`, "http://HOST:PORT/v2/models/NAME" (plain HTTP), asked with a timeout of
     * REMOTE_TIMEOUT_S (0: 1 s; never past the request's deadline); when it is down, slow or
     * fails, the lite answer stands, marked (path "lite>remote-failed"). */
    const char *remote_url;
    double remote_timeout_s;
    uint32_t remote_connections; /* concurrent escalations in flight; 0: 4 */
} loom_serve_qos_options;

/* Set model NAME's QoS and cascade settings (copied). Fails with LOOM_ERR_INVALID_ARGUMENT,
 * naming the culprit, for an unknown model or mode, a ratio or threshold outside its range
 * ([0, 1] for THRESHOLD), a confidence output the lite variant does not have or that is not
 * float32, "auto" or "cascade" without a lite variant, a cascade with neither a local full
 * variant nor a remote URL, or a URL that is not http://HOST:PORT/PATH. */
loom_status loom_server_set_qos(loom_server *server, const char *name, const char *version,
                                const loom_serve_qos_options *options);

/* Number of models and the name and version of the I-th (owned by the server); NULL when I is
 * out of range. */
size_t loom_server_model_count(const loom_server *server);
const char *loom_server_model_name(const loom_server *server, size_t i);
const char *loom_server_model_version(const loom_server *server, size_t i);

/* One input or output of a model, as a client sees it: the batch dimension is -1. */
typedef struct loom_serve_tensor_info {
    const char *name;  /* owned by the server */
    loom_dtype dtype;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
} loom_serve_tensor_info;

/* Inputs and outputs of model NAME (VERSION NULL: any). Returns the count and fills INFO[I] for
 * I < CAPACITY. Returns 0 for an unknown model (inputs and outputs are never 0 otherwise). */
size_t loom_server_model_inputs(const loom_server *server, const char *name, const char *version,
                                loom_serve_tensor_info *info, size_t capacity);
size_t loom_server_model_outputs(const loom_server *server, const char *name,
                                 const char *version, loom_serve_tensor_info *info,
                                 size_t capacity);

/* Turn MODEL's result cache off (0) or back on (non-zero; only when it was added with a cache
 * budget). Fails with LOOM_ERR_INVALID_ARGUMENT for an unknown model. */
loom_status loom_server_set_cache(loom_server *server, const char *name, const char *version,
                                  int enable);

/* ---- requests ---------------------------------------------------------------------------- */

/* Outcome of a request. */
typedef enum loom_serve_code {
    LOOM_SERVE_OK = 0,
    LOOM_SERVE_BAD_REQUEST,  /* wrong input names, count, dtypes or shapes (message says) */
    LOOM_SERVE_NOT_FOUND,    /* no model of that name and version */
    LOOM_SERVE_QUEUE_FULL,   /* the model's queue is at its bound: try again later */
    LOOM_SERVE_DEADLINE,     /* the deadline passed before the request could run */
    LOOM_SERVE_UNAVAILABLE,  /* the server is draining or stopping */
    LOOM_SERVE_FAILED,       /* the run failed (message says why) */
} loom_serve_code;

/* Short name of CODE ("deadline"); a static string. */
const char *loom_serve_code_name(loom_serve_code code);

typedef struct loom_serve_request {
    uint32_t struct_size;    /* sizeof(loom_serve_request) */
    const char *model;       /* model name */
    const char *version;     /* NULL: the model's only (or first added) version */
    const char *id;          /* optional request id, copied, echoed in the result */
    /* The model's inputs. INPUT_NAMES NULL: INPUTS are in the model's input order; else
     * INPUT_NAMES[i] names INPUTS[i]. Every input must be given once, with the model's dtype
     * and, except along the batch axis, its shape; the batch (rows) of every input must be
     * the same, 1 to the model's max batch. The data is copied before loom_serve_submit
     * returns, unless BORROW_INPUTS is set. */
    const loom_tensor *const *inputs;
    const char *const *input_names;
    size_t n_inputs;
    /* Seconds from submission after which the request is answered LOOM_SERVE_DEADLINE instead
     * of being run; 0: no deadline (the model's latency target still guides batching). */
    double timeout_s;
    int priority;            /* higher runs first; 0 by default */
    int no_cache;            /* non-zero: neither read nor fill the result cache */
    /* NULL or "auto": the model's QoS mode; "full", "lite": that variant; "cascade": lite
     * first, escalated when unsure. Cascaded requests skip the result cache. */
    const char *variant;
    /* Non-zero: INPUTS are used in place, not copied (no allocation or copy per request): the
     * caller keeps every input tensor alive and unchanged from loom_serve_submit until DONE is
     * called for this request (when submit refuses it, until submit returns). The tensors
     * stay the caller's; the server never frees them. Zero: copied, as above. Added after
     * VARIANT: a STRUCT_SIZE that ends before it means zero. loom_serve_infer borrows always
     * (it returns only after the answer). */
    int borrow_inputs;
} loom_serve_request;

/* The answer to one request, with its figures. */
typedef struct loom_serve_result {
    loom_serve_code code;
    const char *message;         /* "" when CODE is LOOM_SERVE_OK */
    const char *id;              /* the request's id ("" when none) */
    const char *model, *version;
    /* Outputs in the model's output order, each of the request's rows; owned by the result. */
    size_t n_outputs;
    loom_tensor **outputs;
    const char **output_names;
    /* Figures (seconds): waiting in the queue, the batch's run, submission to answer. */
    double queue_s, run_s, total_s;
    uint32_t batch_rows;         /* rows of the batch it ran in (padding included); 0: not run */
    uint32_t batch_requests;     /* requests in that batch */
    int cache_hit;               /* answered from the cache (or by an identical request) */
    const char *devices;         /* devices of the plan that ran it, "cpu:0,opencl:0" */
    /* Which variant answered ("full", "lite"; "" for a refusal), the path taken ("full",
     * "lite", "lite>full", "lite>remote", "lite>full-failed", "lite>remote-failed"), the lite
     * answer's confidence in a cascade (-1 otherwise), and the QoS decision's inputs as JSON
     * ("" when no decision was made). Owned by the result. */
    const char *variant;
    const char *path;
    double confidence;
    const char *qos;
} loom_serve_result;

/* Called exactly once per accepted request with its RESULT, which the callee owns: free it with
 * loom_serve_result_free (it may be kept after the callback returns). */
typedef void (*loom_serve_done_fn)(loom_serve_result *result, void *user);

/* Submit REQUEST. On LOOM_SERVE_OK the request is accepted and DONE(result, USER) will be
 * called exactly once. Any other code means it was refused now (DONE is never called) and
 * loom_serve_last_error() says why: LOOM_SERVE_NOT_FOUND, LOOM_SERVE_BAD_REQUEST,
 * LOOM_SERVE_QUEUE_FULL or LOOM_SERVE_UNAVAILABLE. A cache hit calls DONE before returning. */
loom_serve_code loom_serve_submit(loom_server *server, const loom_serve_request *request,
                                  loom_serve_done_fn done, void *user);

/* Submit REQUEST and wait for its answer. *OUT (owned by the caller, freed with
 * loom_serve_result_free) is set in every case, refusals included (with N_OUTPUTS 0). Returns
 * (*OUT)->code, or LOOM_SERVE_FAILED with *OUT NULL when out of memory. */
loom_serve_code loom_serve_infer(loom_server *server, const loom_serve_request *request,
                                 loom_serve_result **out);

/* Free RESULT and its outputs. NULL is allowed. */
void loom_serve_result_free(loom_serve_result *result);

/* ---- statistics -------------------------------------------------------------------------- */

typedef struct loom_serve_model_stats {
    uint32_t struct_size;        /* set by the caller to sizeof(loom_serve_model_stats) */
    uint64_t requests;           /* accepted */
    uint64_t ok, failed, deadline_missed, rejected; /* answers by kind; REJECTED: refused */
    uint64_t batches;            /* runs */
    uint64_t rows_run, rows_padded; /* rows of requests run, and padding rows added */
    uint64_t cache_hits, cache_misses, cache_evictions, cache_coalesced;
    size_t cache_bytes;          /* bytes held by the cache now */
    size_t queue_depth;          /* requests waiting now */
    double predicted_run_s[7];   /* the batcher's run-time estimate at batch 1, 2, 4 .. 64 */
    uint64_t answered_full, answered_lite; /* answers by the variant that gave them */
    uint64_t escalated;          /* cascade requests sent on to the full variant */
    uint64_t edge_fallbacks;     /* escalations whose full answer failed: the lite one stood */
    uint64_t qos_switches;       /* automatic switches between full and lite */
    int lite_mode;               /* 1 while "auto" sends requests to lite */
} loom_serve_model_stats;

/* Fill OUT with model NAME's counters. Fails with LOOM_ERR_INVALID_ARGUMENT for an unknown
 * model or a small struct_size. */
loom_status loom_server_model_stats(const loom_server *server, const char *name,
                                    const char *version, loom_serve_model_stats *out);

/* The server's metrics in the Prometheus text exposition format 0.0.4 (docs/serve.md lists
 * them) into a new NUL-terminated string *OUT, freed by the caller with loom_string_free. */
loom_status loom_server_metrics_text(const loom_server *server, char **out);

/* ---- the audit trail --------------------------------------------------------------------- */

/* Verify the audit database at PATH (opened read-only) and then the records of its journal
 * PATH + "-pending" not yet in it, with the HMAC key in the file KEY_PATH (NULL: the hash
 * chain only). Returns 0 when every record verifies (*COUNT records; MESSAGE says so), 1 when
 * one does not (MESSAGE names the first edited, deleted, inserted or reordered record, or
 * where the journal is damaged; *COUNT the records that verified), -1 when the database,
 * journal or key cannot be read (MESSAGE says why). */
int loom_audit_verify(const char *path, const char *key_path, uint64_t *count, char *message,
                      size_t message_len);

/* Write the records of the audit database at PATH and of its journal (PATH + "-pending") as
 * JSON lines (one object per record, every column) to OUT, in order: those of MODEL (NULL:
 * any), answered at or after SINCE (Unix seconds; 0: any), with REQUEST_ID (NULL: any).
 * Returns 0, or -1 with MESSAGE (also when the journal is damaged: nothing written). */
int loom_audit_query(const char *path, const char *model, double since, const char *request_id,
                     FILE *out, char *message, size_t message_len);

/* ---- HTTP front end ---------------------------------------------------------------------- */

typedef struct loom_serve_http_options {
    uint32_t struct_size;    /* sizeof(loom_serve_http_options) */
    const char *host;        /* address to listen on; NULL: "127.0.0.1" */
    uint16_t port;           /* 0: a free port (loom_serve_http_port tells which) */
    size_t max_body_bytes;   /* larger request bodies get 413; 0: 64 MiB */
    /* Open connections at most; 0: 16,384, or fewer when the process's descriptor limit
     * (RLIMIT_NOFILE) does not leave room for them (`loom serve` raises its soft limit to the
     * hard one at start). Beyond the limit new connections wait in the kernel's queue. */
    uint32_t max_connections;
    uint32_t threads;        /* threads parsing and answering HTTP; 0: 1 */
    uint32_t idle_timeout_s; /* idle connections closed after this; 0: 60 */
} loom_serve_http_options;

/* Start serving SERVER (borrowed: it must outlive the front end) over HTTP/1.1: the KServe v2
 * endpoints and GET /metrics (docs/serve.md). OPTIONS may be NULL. On success *OUT is owned
 * by the caller: stop and free it with loom_serve_http_stop. Fails with LOOM_ERR_IO when the
 * address cannot be bound (the message names it) or LOOM_ERR_INVALID_ARGUMENT for a bad host. */
loom_status loom_serve_http_start(loom_server *server, const loom_serve_http_options *options,
                                  loom_serve_http **out);

/* The TCP port HTTP listens on. */
uint16_t loom_serve_http_port(const loom_serve_http *http);

/* Stop accepting connections and new requests (infer answers 503 from now on, and every answer
 * from now on closes its connection), wait until the server has answered every accepted request
 * and each answer has been handed to its connection (at most TIMEOUT_S seconds for the handing
 * over), answer 503 to connections still waiting in the listening socket's queue and close it
 * (later clients are refused; each refused client's request is read and dropped, for up to
 * half a second in all, so that it gets the 503 rather than a reset connection), give requests
 * whose headers had arrived, and connections taken in whose first request had not, up to a
 * second to be answered and written, then close everything and free HTTP. Idle keep-alive
 * connections are not waited for. NULL is allowed. The server itself is left running: destroy
 * it afterwards. */
void loom_serve_http_stop(loom_serve_http *http, double timeout_s);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_SERVE_H */
