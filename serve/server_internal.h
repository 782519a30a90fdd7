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

#include <pthread.h>

/* ---- types ------------------------------------------------------------------------------- */

typedef struct sv_req sv_req;
typedef struct sv_model sv_model;

struct sv_req {
    sv_req *prev, *next;       /* in the model's queue */
    sv_model *model;
    char *id;
    uint32_t rows;
    loom_tensor **inputs;      /* model order, owned */
    double t_submit;
    double deadline;           /* absolute; INFINITY: none */
    double batch_deadline;     /* what the batcher aims at: DEADLINE or submit + target */
    int priority;
    int leader;                /* runs for the cache entry KEY */
    sv_key key;
    loom_serve_done_fn done;
    void *user;
};

typedef struct plan_slot {
    loom_plan *plan;
    int state;                 /* 0 none, 1 being made, 2 ready, -1 failed */
    char *devices;
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
    int stopping, draining;
    long outstanding;        /* accepted and not yet answered */
    /* Devices and their busy seconds (under STATS_MU). */
    size_t n_devices;
    char (*device_ids)[64];
    double *device_busy_s;
    pthread_mutex_t stats_mu;
    uint64_t refused_unknown; /* requests for models that do not exist */
};

/* ---- shared helpers ------------------------------------------------------------------------ */

char *sv_strdup(const char *s);
loom_tensor *sv_tensor_copy(const loom_tensor *t);
void sv_copy_rows(loom_tensor *dst, int64_t dst_row, const loom_tensor *src, int64_t src_row,
                  int64_t rows, uint32_t axis);
loom_tensor *sv_tensor_with_rows(const loom_tensor *like, uint32_t axis, int64_t rows);
loom_serve_result *sv_result_new(const sv_model *m, const char *model_name, const char *id,
                                 loom_serve_code code, const char *message);
int sv_result_set_outputs(loom_serve_result *r, const sv_model *m, loom_tensor **outs);
sv_blob *sv_outputs_to_blob(loom_tensor *const *outs, size_t n);
int sv_blob_to_outputs(const sv_blob *b, loom_tensor **outs, size_t n);

loom_status sv_model_plan(loom_server *s, sv_model *m, uint32_t i, plan_slot **out);
void sv_model_free(sv_model *m);
sv_model *sv_find_model(const loom_server *s, const char *name, const char *version);
sv_model *sv_model_lookup(const loom_server *s, const char *name, const char *version);
sv_model *sv_model_at(const loom_server *s, size_t i);

#endif /* LOOM_SERVE_SERVER_INTERNAL_H */
