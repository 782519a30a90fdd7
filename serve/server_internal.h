/*
 * The server's own types, shared by the files that make it up: server.c (answering, running
 * batches, the workers, requests), models.c (adding models, plans per batch size, look-ups),
 * result.c (tensors, results, cached blobs), metrics.c (statistics, Prometheus text), qos.c
 * (variants and automatic switching), cascade.c (confidence cascades) and audit.c (the audit
 * trail). Built only on the public headers.
 */
#ifndef LOOM_SERVE_SERVER_INTERNAL_H
#define LOOM_SERVE_SERVER_INTERNAL_H

#include "serve_internal.h"

#include <loom/model.h>

#include <pthread.h>
#include <stdatomic.h>

/* ---- types ------------------------------------------------------------------------------- */

typedef struct sv_req sv_req;
typedef struct sv_model sv_model;
typedef struct sv_audit sv_audit;
typedef struct sv_trace sv_trace;
typedef struct sv_remote sv_remote;

/* Variants of a model, and what a request asks for. */
enum { SV_FULL = 0, SV_LITE = 1 };
enum { SV_MODE_AUTO = 0, SV_MODE_FULL, SV_MODE_LITE, SV_MODE_CASCADE };
/* Where a request is in a cascade. */
enum { SV_STAGE_PLAIN = 0, SV_STAGE_LITE_FIRST, SV_STAGE_ESCALATED, SV_STAGE_FINAL };

/* ---- automatic QoS switching (qos.c): pure, driven by tests with a fake clock ------------ */

/* What the switch knows when a request arrives under "auto". */
typedef struct sv_qos_view {
    double now;
    double deadline;        /* the request's (absolute): its own, else arrival + the target */
    uint32_t rows;          /* the request's rows */
    uint32_t queued_rows;   /* rows waiting for the full variant */
    uint32_t running_rows;  /* rows of the full variant being run now */
    uint32_t workers;
    uint32_t max_batch;     /* the full variant's */
    double batch_s;         /* predicted seconds of a full batch (MAX_BATCH rows); 0: unknown */
    double rest_s;          /* predicted seconds of the last, partial batch (the rows left over
                             * after full batches, at the size they would run at); 0: BATCH_S */
    double arrival_rate;    /* rows per second arriving at the model lately; 0: unknown */
} sv_qos_view;

typedef struct sv_qos_params {
    double enter, leave, leave_util, min_dwell_s;
} sv_qos_params;

typedef struct sv_qos_state {
    int lite;               /* 1: requests under auto go to lite */
    double since;           /* when the last switch happened */
    uint64_t switches;
} sv_qos_state;

typedef struct sv_qos_decision {
    int lite;               /* the variant for this request */
    int switched;           /* this decision changed the mode */
    double predicted_finish; /* absolute, the full variant's */
    double utilisation;     /* the full variant's at the arrival rate */
} sv_qos_decision;

/* Decide the variant of one request and update ST (hysteresis): see loom_serve_qos_options. */
sv_qos_decision sv_qos_decide(sv_qos_state *st, const sv_qos_params *p, const sv_qos_view *v);
/* The decision's inputs as one JSON object into BUF. */
void sv_qos_json(char *buf, size_t len, const sv_qos_view *v, const sv_qos_decision *d);

/* Confidence of each of ROWS rows of class scores [ROWS, CLASSES] (float32): the largest
 * probability (MARGIN 0) or top-1 minus top-2 (MARGIN 1); a row that is not a distribution
 * (an entry outside [0, 1] or a sum off 1 by more than 1e-3) is soft-maxed first. Returns the
 * smallest over the rows. */
double sv_confidence(const float *scores, int64_t rows, int64_t classes, int margin);

/* A model's QoS and cascade settings and state (on the primary variant). */
typedef struct sv_qos {
    int mode;               /* SV_MODE_* for requests without a variant */
    sv_qos_params p;
    sv_qos_state st;        /* under the server's lock */
    double last_arrival, mean_gap, mean_rows; /* arrivals at the model, under the server's lock */
    /* cascade */
    uint32_t conf_output;   /* index of the confidence output */
    int margin;
    double threshold;
    sv_remote *remote;      /* NULL: escalate locally */
    /* counters, under the primary's STATS_MU */
    uint64_t answered[2], escalated, fallbacks;
} sv_qos;

struct sv_req {
    sv_req *prev, *next;       /* in the model's queue */
    sv_model *model;
    char *id;
    uint32_t rows;
    loom_tensor **inputs;      /* model order; owned unless BORROWED */
    int borrowed;              /* INPUTS are the submitter's (loom_serve_request.borrow_inputs) */
    double t_submit;
    double deadline;           /* absolute; INFINITY: none */
    double batch_deadline;     /* what the batcher aims at: DEADLINE or submit + target */
    int priority;
    int leader;                /* runs for the cache entry KEY */
    int special;               /* in the queue out of plain arrival order, or with its own
                                * deadline (see sv_model.n_special) */
    sv_key key;
    loom_serve_done_fn done;
    void *user;
    /* Variants and cascades. */
    int stage;                 /* SV_STAGE_* */
    char *qos;                 /* the QoS decision's inputs (JSON), owned; NULL: none */
    const char *path;          /* static: the cascade path taken so far; NULL: the variant's */
    double confidence;         /* the lite answer's, in a cascade; -1 otherwise */
    loom_tensor **fallback;    /* escalated: the lite answer (n_out tensors), owned */
    char *note;                /* why the edge answer stood, owned; NULL: none */
};

typedef struct plan_slot {
    loom_plan *plan;           /* HELD's plan, or one made for this size alone (owned) */
    loom_model_held_plan held; /* an ONNX model's specialisation for this size (LM's) */
    int state;                 /* 0 none, 1 being made, 2 ready, -1 failed */
    char *devices;
    char plan_id[24];          /* "b<size>-<16 hex>": a digest of the plan's node placement */
    size_t n_nodes;
    loom_status status;
    char *message;
} plan_slot;

#define N_CODES 7

typedef struct model_metrics {
    uint64_t answers[N_CODES];     /* by loom_serve_code, refusals included */
    uint64_t accepted, batches, rows_run, rows_padded;
    sv_hist latency, queue, run, batch;
} model_metrics;

struct sv_model {
    char *name, *version;
    char *path;
    loom_serve_build_fn build;
    void *user;
    uint32_t batch_axis, max_batch, queue_limit;
    double target_s;
    int exact;
    /* An ONNX model loaded once: its specialisations per batch size share one copy of the
     * weights (NULL: a graph builder's model, or one loom_model cannot hold plans for, which
     * is imported per batch size instead). LM_IN: for each of LM's inputs, the index in IN. */
    loom_model *lm;
    uint32_t *lm_in;
    /* Plan options, with the strings they point to owned here. */
    loom_plan_options plan_opts;
    char *opt_device, *opt_policy, *opt_cache_dir;
    char **opt_pins;
    size_t n_in, n_out;
    loom_serve_tensor_info *in, *out;
    /* Under the server's lock: the queue, the estimates and the arrival rate. */
    sv_estimates est;
    sv_req *head, *tail;
    size_t depth;
    /* Queued requests with their own deadline, a priority, a variant or cascade stage, or
     * queued behind a request that arrived later. While there are none, the queue is in
     * arrival order and the head is both the oldest and the earliest batch deadline, and
     * nothing can expire: the workers then need not walk the queue. */
    size_t n_special;
    double last_arrival, mean_gap, mean_rows;
    /* Plans per size, under PLAN_MU. */
    pthread_mutex_t plan_mu;
    pthread_cond_t plan_cv;
    plan_slot slots[SV_MAX_SIZES];
    /* The result cache (NULL: none) and whether it is used now. */
    sv_cache *cache;
    int cache_on;
    /* Metrics, under STATS_MU. */
    pthread_mutex_t stats_mu;
    model_metrics met;
    /* Variants: VARIANT is this model's kind; PRIMARY the model first added under the name and
     * version (NULL when this is it: only the primary is seen by look-ups, and it holds VAR,
     * the model of each kind, and QOS, NULL until loom_server_set_qos). */
    int variant;
    sv_model *primary;
    sv_model *var[2];
    sv_qos *qos;
    uint32_t running_rows;     /* rows being run now, under the server's lock */
    /* The compute resources (sv_server_plan_resources) of each size's plan, under the
     * server's lock; 0 until the plan is made. */
    uint64_t size_res[SV_MAX_SIZES];
    char sha256[65];           /* of the ONNX file ("" for a model built in C) */
};

struct loom_server {
    loom_runtime *rt;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* workers wait for requests */
    pthread_cond_t idle_cv;  /* drain waits for OUTSTANDING to reach 0 */
    sv_model **models;
    size_t n_models, cap_models;
    pthread_t *workers;
    uint32_t n_workers;
    uint32_t idle;           /* workers waiting on WORK_CV, under MU: a submit wakes one only
                              * then (the busy ones look at the queue when their batch ends) */
    uint32_t signalled;      /* wake-ups sent to idle workers that none has come back from yet
                              * (at most IDLE), under MU: a submit does not wake another for a
                              * request the one on its way will see */
    int stopping, draining;
    atomic_long outstanding; /* accepted and not yet answered; changed under MU but when
                              * a request is answered (sv_server_finished) */
    /* Devices and their busy seconds (under STATS_MU). */
    size_t n_devices;
    char (*device_ids)[64];
    double *device_busy_s;
    /* Compute resources: each device's bit. Every CPU device and every device that computes
     * on the host's cores (loom_device_info.shares_host_cpu, e.g. PoCL) is the one host
     * resource (bit 0); each other device is its own. A batch starts only when every
     * resource of its plan has room: the host takes as many batches at once as the CPU
     * backend has cores for its threads (cores / threads: one when its pool spreads each
     * run over every core, two runs of one thread each on two cores), any other device one.
     * More runs than that on the same cores only slow each other down (and make the measured
     * batch times the batcher relies on wrong). */
    uint64_t *device_res;
    uint32_t res_cap[64];    /* batches each resource takes at once */
    uint32_t res_busy[64];   /* batches running on each, under MU */
    int res_waiters;         /* a batch was held back for busy devices: wake the workers when
                              * a batch ends, under MU */
    uint32_t lanes;          /* batches that can run at once: min(workers, sum of caps) */
    double answer_s;         /* moving mean of a batch's answering (after its devices were
                              * released: splitting, audit records, callbacks), under MU */
    pthread_mutex_t stats_mu;
    uint64_t refused_unknown; /* requests for models that do not exist */
    sv_audit *audit;          /* NULL: no audit trail */
    sv_trace *trace;          /* NULL: no serving trace */
};

/* ---- shared helpers ------------------------------------------------------------------------ */

char *sv_strdup(const char *s);
/* A copy of T (owned by the caller; NULL when out of memory). */
loom_tensor *sv_tensor_copy(const loom_tensor *t);
/* Copy ROWS rows along AXIS from SRC (from row SRC_ROW) into DST (from DST_ROW); the shapes agree
 * but along AXIS. SRC NULL: zero those rows of DST. */
void sv_copy_rows(loom_tensor *dst, int64_t dst_row, const loom_tensor *src, int64_t src_row,
                  int64_t rows, uint32_t axis);
/* A tensor shaped like LIKE but with ROWS along AXIS, its data NOT initialised: the caller
 * writes every row (sv_copy_rows). NULL when out of memory. */
loom_tensor *sv_tensor_with_rows(const loom_tensor *like, uint32_t axis, int64_t rows);
/* What a result says besides its outputs; NULL strings are "". */
typedef struct sv_result_text {
    loom_serve_code code;
    const char *message, *id, *model, *version, *devices, *variant, *path, *qos;
} sv_result_text;
/* A result with T's texts (copied) and, when OUTS is not NULL, model M's outputs OUTS[M->n_out]
 * (ownership taken on success, left with the caller on failure), all in one allocation;
 * freed with loom_serve_result_free. NULL when out of memory. */
loom_serve_result *sv_result_make(const sv_result_text *t, const sv_model *m, loom_tensor **outs);
/* A result of CODE and MESSAGE for model M (or MODEL_NAME when M is NULL), without outputs. */
loom_serve_result *sv_result_new(const sv_model *m, const char *model_name, const char *id,
                                 loom_serve_code code, const char *message);
/* Turn R into a failure with MESSAGE: its outputs are freed. */
void sv_result_fail(loom_serve_result *r, const char *message);
sv_blob *sv_outputs_to_blob(loom_tensor *const *outs, size_t n);
int sv_blob_to_outputs(const sv_blob *b, loom_tensor **outs, size_t n);

loom_status sv_model_plan(loom_server *s, sv_model *m, uint32_t i, plan_slot **out);
/* The compute resources (loom_server.device_res bits) the nodes of PLAN run on; the host
 * resource when none is known. */
uint64_t sv_server_plan_resources(const loom_server *s, loom_plan *plan);
/* The inputs of SL's plan, from INS (in the model's input order) into OUT (room for m->n_in);
 * returns how many. */
size_t sv_plan_inputs(const sv_model *m, const plan_slot *sl, loom_tensor *const *ins,
                      const loom_tensor **out);
void sv_model_free(sv_model *m);
sv_model *sv_find_model(const loom_server *s, const char *name, const char *version);
sv_model *sv_model_lookup(const loom_server *s, const char *name, const char *version);
sv_model *sv_model_at(const loom_server *s, size_t i);
/* SHA-256 of the file at PATH as 64 hex digits into HEX; 0, or -1 when it cannot be read. */
int sv_file_sha256(const char *path, char hex[65]);

/* ---- the server's internal entry points --------------------------------------------------- */

/* Timing of the run that answered a request. */
typedef struct figures {
    double queue_s, run_s;
    uint32_t batch_rows, batch_requests;
    int cache_hit;
    const char *devices;
    const char *plan_id;
} figures;

/* Answer R with CODE (OUTS: n_out tensors of R's rows, ownership taken; NULL unless OK): a
 * lite answer in a cascade may be escalated instead; else the result is built, audited and
 * delivered. Frees R (or hands it on). */
void sv_answer(loom_server *s, sv_req *r, loom_serve_code code, const char *message,
               loom_tensor **outs, const figures *f);
/* Put R into its model's queue and wake a worker (takes the server's lock). */
void sv_requeue(loom_server *s, sv_req *r);
/* One accepted request was answered (after its callback ran). */
void sv_server_finished(loom_server *s);
void sv_request_free(sv_req *r);
void sv_free_outputs(loom_tensor **outs, size_t n);

/* qos.c: pick the model of the variant REQUEST asks for (or auto chooses) for primary M, with
 * the server's lock held; sets R->stage and R->qos. Returns the model, or NULL with a refusal
 * message when the variant is unknown or not served. */
sv_model *sv_route(loom_server *s, sv_model *m, const char *variant, sv_req *r, double now);
/* qos.c: count an answer by variant (takes the primary's STATS_MU). */
void sv_qos_count(sv_model *m, int variant, int escalated, int fallback);

/* cascade.c: a lite answer OUTS of R at stage LITE_FIRST: returns 0 when it stands (R->path
 * and R->confidence set), 1 when R was escalated (R and OUTS taken). */
int sv_cascade_escalate(loom_server *s, sv_req *r, loom_tensor **outs);
/* cascade.c: the remote client of a model's cascade; parses URL. NULL with a message. */
sv_remote *sv_remote_create(const char *url, double timeout_s, uint32_t connections,
                            const sv_model *m, char *err, size_t err_len);
void sv_remote_destroy(sv_remote *r);

/* audit.c: open (or create) the database at PATH, move a journal a crash left into it,
 * verify its chain's tail, start the ingester thread. */
loom_status sv_audit_open(const char *path, const char *key_path, int new_segment,
                          int sync_full, sv_audit **out);
/* Stop the ingester after moving everything journaled into the database, close. */
void sv_audit_close(sv_audit *a);
/* Seal the record of R's answer RES and append it to the journal (on the calling thread;
 * with sync_full, on the disk) before the answer is delivered. When that fails, RES becomes
 * a failure ("the audit trail could not be written"): no answer leaves without its record. */
void sv_audit_record(sv_audit *a, const sv_req *r, const figures *f, loom_serve_result *res);

/* For tests: recompute every record's chain hash and MAC with the key in KEY_PATH (NULL: no
 * MACs), as someone who edited records and knows the format (not the real key) would. */
int sv_audit_reseal(const char *path, const char *key_path);

/* trace.c: the serving trace (Chrome trace-event JSON; docs/serve.md, "Trace"). Every call
 * takes NULL for "no trace" and is thread-safe. */
loom_status sv_trace_open(const char *path, sv_trace **out);
/* Close the array and the file; LOOM_ERR_IO when something could not be written. */
loom_status sv_trace_close(sv_trace *t);
/* One batch of M run on the calling thread from START to END (sv_now seconds). */
void sv_trace_batch(sv_trace *t, const sv_model *m, double start, double end, uint32_t rows,
                    uint32_t size, size_t requests, const char *devices, int ok);
/* R answered with RES at NOW: an async span from its arrival, with its figures and QoS inputs. */
void sv_trace_request(sv_trace *t, const sv_req *r, const loom_serve_result *res, double now);
/* MODEL's QoS switch changed mode at NOW; DECISION: its inputs (JSON object) or NULL. */
void sv_trace_switch(sv_trace *t, const char *model, double now, const char *decision);

#endif /* LOOM_SERVE_SERVER_INTERNAL_H */
