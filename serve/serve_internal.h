/*
 * What the files of the serving layer share: the batching policy (pure functions over a view
 * of one model's queue, so tests drive it with a fake clock), the result cache with in-flight
 * coalescing, the KServe v2 request parser and response writer, histograms, and the server's
 * internal entry points the HTTP front end uses. Built only on the public headers.
 */
#ifndef LOOM_SERVE_INTERNAL_H
#define LOOM_SERVE_INTERNAL_H

#include <loom/serve.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- messages ---------------------------------------------------------------------------- */

/* Set the calling thread's serving message (loom_serve_last_error); returns STATUS. */
loom_status sv_error(loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same, returning a loom_serve_code. */
loom_serve_code sv_refuse(loom_serve_code code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Seconds on the monotonic clock. */
double sv_now(void);

/* ---- batching policy --------------------------------------------------------------------- */

#define SV_MAX_SIZES 64

/* Run-time estimates per plan batch size: seeded by the plan's predicted makespan, then an
 * exponentially weighted mean of measured run times. */
typedef struct sv_estimates {
    uint32_t n_sizes;
    uint32_t sizes[SV_MAX_SIZES];   /* ascending; the last is the model's max batch */
    double seconds[SV_MAX_SIZES];   /* 0: nothing known yet */
    uint32_t measured[SV_MAX_SIZES]; /* runs measured */
    uint64_t stamp[SV_MAX_SIZES];    /* when each was last measured (a count of measurements) */
    uint64_t n_measures;
} sv_estimates;

/* Fill the size set: 1, 2, 4, .. and MAX_BATCH, or every size 1..MAX_BATCH when EXACT. */
void sv_estimates_init(sv_estimates *e, uint32_t max_batch, int exact);
/* Index of the smallest size >= ROWS (n_sizes when none). */
uint32_t sv_size_index(const sv_estimates *e, uint32_t rows);
/* The predicted seconds of a run at size index I: its own measurement (or seed, while nothing
 * is measured), else the tightest bound from the known sizes (scaled linearly from a smaller
 * one, flat from a bigger one); a measurement is also held to the bounds from sizes measured
 * after it, so a stale figure does not outlive fresher ones. 0 when nothing is known. */
double sv_estimate(const sv_estimates *e, uint32_t i);
/* Record a seed (a prediction, only used until something is measured) or a measurement. */
void sv_estimate_seed(sv_estimates *e, uint32_t i, double seconds);
void sv_estimate_measure(sv_estimates *e, uint32_t i, double seconds);

/* What the batcher knows of one model's queue at time NOW. */
typedef struct sv_queue_view {
    double now;
    double deadline;        /* the earliest deadline among the waiting requests (absolute) */
    uint32_t rows;          /* rows of compatible requests waiting (head's shape), capped */
    uint32_t max_batch;
    double arrival_rate;    /* rows per second arriving lately (0: unknown) */
    double slack_s;         /* margin kept before a deadline */
    double target_s;        /* the model's latency target: sizes batches under overload,
                             * and with ARRIVAL_RATE keeps room for the requests arriving
                             * while a batch runs (they must finish within it too) */
    double oldest_s;        /* when the longest-waiting request was queued (absolute); 0:
                             * unknown. Its whole wait is bounded by the run it could have now */
} sv_queue_view;

typedef struct sv_decision {
    int go;                 /* 1: dispatch a batch now */
    uint32_t size_index;    /* when GO: the plan size to run */
    uint32_t rows;          /* when GO: rows to take (<= the size; the rest is padding) */
    double wake_at;         /* when not GO: decide again at this time (absolute) */
} sv_decision;

/* Decide whether to dispatch now: at max batch, or when waiting for the next size would make
 * the earliest deadline miss by the estimates, or when waiting is not predicted to pay (the
 * device idles until the rows arrive: the bigger batch must finish them no later than running
 * now and running the rest as a batch of their own afterwards); else wait. Picks, among the
 * sizes predicted to finish before the earliest deadline and to leave the requests arriving
 * meanwhile room to finish within TARGET_S in the next batch (the smallest always
 * qualifies), the one with the least predicted seconds per useful row. Pure. */
sv_decision sv_decide(const sv_queue_view *q, const sv_estimates *e);

/* ---- result cache ------------------------------------------------------------------------ */

typedef struct sv_key {
    uint64_t lo, hi;
} sv_key;

/* An immutable cached value, reference-counted: the cache and each reader hold a reference. */
typedef struct sv_blob {
    int refs;               /* atomic */
    size_t size;
    unsigned char data[];
} sv_blob;

sv_blob *sv_blob_new(size_t size);
void sv_blob_ref(sv_blob *b);
void sv_blob_release(sv_blob *b);

typedef struct sv_cache sv_cache;

typedef enum sv_lookup {
    SV_CACHE_HIT,     /* *HIT holds a reference: release it */
    SV_CACHE_LEAD,    /* not cached and not in flight: the caller runs it, then sv_cache_finish */
    SV_CACHE_FOLLOW,  /* an identical request is in flight: WAITER is answered with it */
} sv_lookup;

typedef struct sv_cache_stats {
    uint64_t hits, misses, evictions, coalesced, inserts;
    size_t bytes, entries, max_bytes;
} sv_cache_stats;

/* A cache of at most MAX_BYTES of values (least recently used evicted first). NULL when out of
 * memory. Thread-safe. */
sv_cache *sv_cache_create(size_t max_bytes);
void sv_cache_destroy(sv_cache *c);
/* Look KEY up. On a miss, either registers the caller as the one that computes it (LEAD) or
 * attaches WAITER to the identical request in flight (FOLLOW). */
sv_lookup sv_cache_begin(sv_cache *c, sv_key key, void *waiter, sv_blob **hit);
/* The leader of KEY finished: VALUE (borrowed; NULL on failure) is stored when it fits. The
 * waiters that followed are returned in a new array *WAITERS (free()) of the returned count. */
size_t sv_cache_finish(sv_cache *c, sv_key key, sv_blob *value, void ***waiters);
void sv_cache_get_stats(sv_cache *c, sv_cache_stats *out);

/* ---- histograms -------------------------------------------------------------------------- */

#define SV_HIST_MAX 24
typedef struct sv_hist {
    uint32_t n_bounds;
    const double *bounds;   /* upper bounds, ascending (static) */
    uint64_t counts[SV_HIST_MAX + 1]; /* per bucket; the last is +Inf */
    uint64_t count;
    double sum;
} sv_hist;

void sv_hist_init(sv_hist *h, const double *bounds, uint32_t n_bounds);
void sv_hist_add(sv_hist *h, double v);

/* ---- KServe v2 requests and responses ---------------------------------------------------- */

/* "FP32" for LOOM_DTYPE_F32 ...; NULL for a dtype with no KServe name. */
const char *sv_kserve_dtype_name(loom_dtype dt);
/* The Loom dtype of a KServe datatype name; LOOM_DTYPE_UNDEFINED when Loom has none. */
loom_dtype sv_kserve_dtype(const char *name);

/* One parsed infer request. Every pointer is owned by it: free with sv_parsed_free. */
typedef struct sv_parsed {
    char *id;
    size_t n_inputs;
    char **input_names;
    loom_tensor **inputs;
    size_t n_outputs;        /* 0: all outputs */
    char **output_names;
    int *output_binary;      /* per requested output: -1 unset, 0 JSON, 1 binary */
    int binary_default;      /* parameters.binary_data_output */
    double timeout_s;
    int priority;
    char *variant;           /* parameters.variant; NULL: none */
} sv_parsed;

/* Parse an infer request BODY of LEN bytes: when HEADER_LEN > 0 (Inference-Header-Content-
 * Length) the first HEADER_LEN bytes are the JSON and the rest the binary tensor data, else it
 * is all JSON. INPUTS (N_INPUTS) describe the model's inputs (batch dim -1): names and dtypes
 * must match one of them and shapes must fit. Returns 0 and fills OUT, or -1 with a message in
 * ERR naming what is wrong (OUT then holds nothing to free). */
int sv_kserve_parse(const char *body, size_t len, size_t header_len,
                    const loom_serve_tensor_info *inputs, size_t n_inputs, sv_parsed *out,
                    char *err, size_t err_len);
void sv_parsed_free(sv_parsed *p);

/* Write the response to RESULT as KServe v2 JSON, with outputs asked for in BINARY form (per
 * P's requested outputs and binary default) appended after it. *BODY (malloc) of *LEN bytes;
 * *HEADER_LEN is the JSON part's length when some output is binary, else 0. Returns 0, or -1
 * when out of memory or a requested output does not exist (ERR says). */
int sv_kserve_response(const loom_serve_result *result, const sv_parsed *p, char **body,
                       size_t *len, size_t *header_len, char *err, size_t err_len);

/* ---- the server, for the front end ------------------------------------------------------- */

/* Record an HTTP request refused before reaching the queue (for the metrics). */
void sv_server_count_refusal(loom_server *server, const char *model, loom_serve_code code);
/* Whether the server accepts requests (not draining). */
int sv_server_accepting(const loom_server *server);
/* 1 when the named model (VERSION NULL: any) exists, and copies its canonical version. */
int sv_server_find_model(const loom_server *server, const char *name, const char *version,
                         const char **canonical_version, uint32_t *max_batch);

/* ---- the HTTP/1.1 client (http_client.c) ------------------------------------------------- */

/* One keep-alive connection (opened on first use, reopened after a failure). */
typedef struct sv_http_conn {
    int fd;                 /* -1: not connected */
    char host[256], port[16];
    char buf[16384];        /* bytes read past the last answer */
    size_t have;
} sv_http_conn;

typedef struct sv_http_reply {
    int want_body;          /* set by the caller: 1 to get BODY */
    int status;
    char *body;             /* malloc, NUL-terminated (LEN bytes before it); NULL if unwanted */
    size_t len;
    size_t header_len;      /* the answer's Inference-Header-Content-Length; 0: none */
} sv_http_reply;

/* A connection to HOST:PORT (copied), not yet open. */
void sv_http_init(sv_http_conn *c, const char *host, const char *port);
/* Close C's socket (it reopens on the next request). */
void sv_http_close(sv_http_conn *c);
/* Send METHOD PATH with BODY (LEN bytes; NULL: none; HEADER_LEN > 0: binary-tensor body with
 * that Inference-Header-Content-Length) and read the answer into REPLY, all within TIMEOUT_S
 * seconds (0: no limit). Returns 0, or -1 on a connection failure or timeout (C is closed). */
int sv_http_request(sv_http_conn *c, const char *method, const char *path, const void *body,
                    size_t len, size_t header_len, double timeout_s, sv_http_reply *reply);
/* Split "http://HOST:PORT[/PATH]" (PATH "/" when absent); 0, or -1 when URL is not that. */
int sv_http_parse_url(const char *url, char *host, size_t host_len, char *port, size_t port_len,
                      char *path, size_t path_len);

#endif /* LOOM_SERVE_INTERNAL_H */
