/*
 * The cost model's insides, shared by its files: the model object, the history table, the
 * signature builder and the persistence entry points. Not for use outside scheduler/cost/.
 *
 *   cost_model.c      profiles from facts, node and link costs, the history table
 *   cost_store.c      cache folder, profiles.json and history.json (jansson, atomic writes)
 *   cost_history_cache.c  the runtime's parsed history.json, shared by its cost models
 *   cost_calibrate.c  measurements through real plans (GEMM, bandwidth, launch, host links)
 *   cost_stats.c      robust medians, prediction error, the profile summary line
 */
#ifndef LOOM_COST_INTERNAL_H
#define LOOM_COST_INTERNAL_H

#include "cost.h"

#include <pthread.h>
#include <stdatomic.h>

#include "scheduler/sched_internal.h"

/* Samples kept per signature (the most recent ones) and the fewest that make a history figure
 * trusted over the backend's estimate and the roofline. Nodes of one shape in every layer of a
 * model share a signature, so one run adds a sample per layer: 32 keep a few runs' worth. */
#define COST_HISTORY_KEEP 32
#define COST_HISTORY_MIN 3

/* Signatures history.json keeps per profile key: saving drops the least recently updated ones
 * beyond this (each entry carries "t", the Unix time it was last saved; entries without it
 * count as the oldest), so the file stops growing at about this many entries per device. */
#define COST_HISTORY_MAX_SIGS 1024

/* Longest signature text; longer ones are cut and end in a hash of the whole (see cost_sig). */
#define COST_SIG_MAX 512

/* One op signature's measured times on one group of devices (devices with one profile key). */
typedef struct cost_hist {
    char *sig;                       /* owned */
    uint64_t hash;                   /* of sig and group */
    uint32_t group;
    uint32_t n;                      /* samples held (<= COST_HISTORY_KEEP) */
    uint32_t next;                   /* ring position of the next sample */
    double samples[COST_HISTORY_KEEP]; /* ring, oldest overwritten */
    double median;                   /* robust median of the samples, kept current */
    int dirty;                       /* changed since the last save */
    /* Observations more than COST_OUTLIER_RATIO off the median, held back (cost_learn): */
    int warned;                      /* said once for this signature */
    uint32_t n_off;                  /* consecutive ones, the latest in off[] */
    double off[COST_HISTORY_MIN];
} cost_hist;

/* A hash table of history entries: open addressing, NULL empty; capacity a power of two. */
typedef struct cost_table {
    cost_hist **slots;
    size_t cap, count;
} cost_table;

/* The history of one cache folder as parsed from its history.json for one runtime's device
 * groups: immutable once built, shared (refcounted) by every cost model of that runtime that
 * opens the folder while the file stays the same (cost_history_cache.c). A model reads it under
 * its own table: what the model learns goes into its table, copied from here first. */
typedef struct cost_snapshot {
    atomic_uint refs;
    cost_table table;
    uint32_t n_groups;
    uint32_t *group_count; /* per device group (runtime device index): entries */
} cost_snapshot;

/* The entry (SIG, GROUP, HASH) of T, or NULL. */
cost_hist *cost_table_find(const cost_table *t, const char *sig, uint32_t group, uint64_t hash);

/* Insert or find (SIG, GROUP, HASH) in T and append SECONDS (a new entry counts in
 * GROUP_COUNT[GROUP] when GROUP_COUNT is not NULL). Returns the entry, NULL when out of memory. */
cost_hist *cost_table_add(cost_table *t, atomic_uint *group_count, const char *sig,
                          uint32_t group, uint64_t hash, double seconds);

/* Free T's entries and slots. */
void cost_table_free(cost_table *t);

/* Drop a reference to S, freeing it with the last; NULL is allowed. */
void cost_snapshot_release(cost_snapshot *s);

/* The snapshot of M's cache folder's history.json for M's runtime, referenced for M (release
 * with cost_snapshot_release), or NULL when there is no file (or no usable entry). The file is
 * parsed only when the runtime has no snapshot of it or when it changed on disk since (device,
 * inode, size, modification and change times; a file modified less than two seconds before it
 * was read is also compared by content, so a change within the file system's timestamp
 * granularity is seen). Parsing reports and puts aside damage as cost_store_load documents.
 * Thread-safe: concurrent openings parse once. */
cost_snapshot *cost_history_acquire(cost_model *m);

/* Parse history.json of M's cache folder from TEXT (LEN bytes) into a new snapshot for M's
 * device groups (cost_store.c), reporting and dropping malformed entries (the file is then
 * rewritten without them and *REWRITTEN set to 1). NULL when the text is no usable history
 * (the file is then put aside, said once) or out of memory. */
cost_snapshot *cost_history_parse(cost_model *m, const char *text, size_t len, int *rewritten);

/* M's runtime saved history.json: its snapshot is stale (the next opening parses again). */
void cost_history_invalidate(cost_model *m);

/* An observation this many times above or below the history's median is not learned (a
 * clock glitch, a page-in, a poisoned figure): warned about once per signature. Only when
 * COST_HISTORY_MIN such observations come in a row, all on the same side, has the device really
 * changed: the history then starts again from them. */
#define COST_OUTLIER_RATIO 1000.0

/* Learn SECONDS for (SIG, GROUP, HASH): cost_hist_add, guarded against outliers as above and
 * against negative or non-finite figures (refused, warned about once per model). DEV names the
 * device in the warning. The caller holds the write lock. Returns the entry when the sample was
 * learned, else NULL. */
cost_hist *cost_learn(cost_model *m, uint32_t dev, const char *sig, uint32_t group, uint64_t hash,
                      double seconds);

struct cost_model {
    loom_runtime *rt;        /* borrowed: must outlive the model */
    char *cache_dir;         /* owned; "" when no cache folder could be found */
    uint32_t n_devices;
    cost_profile *profiles;    /* per runtime device */
    int *profile_dirty;      /* per device: calibrated since the last save */
    uint32_t *group;         /* per device: first device index with the same profile key */

    pthread_rwlock_t lock;   /* guards the history table (readers: cost_node_seconds) */
    cost_table own;          /* what this model learned (entries of BASE copied on first use) */
    cost_snapshot *base;     /* the history on disk when the model opened (shared), or NULL */
    atomic_uint *group_count; /* per device group: entries of OWN, read without the lock */
    atomic_int warned_invalid; /* a negative or non-finite observation was reported */
    /* Per device x (op class + 1): a backend estimate far off a measurement was reported. */
    atomic_int *disagree_said;
};

/* Build NODE's signature ("MatMul|f32[1,128,768];f32[768,768]|f32[1,128,768]|p0", then
 * "|a<hex>" for a hash of its attributes when it has any) into BUF (COST_SIG_MAX bytes) and
 * return the FNV-1a hash of the text mixed with GROUP. No allocation. */
uint64_t cost_sig(const loom_node_desc *node, uint32_t group, char *buf);

/* Hash of a finished signature text SIG with GROUP (as cost_sig returns). */
uint64_t cost_sig_hash(const char *sig, uint32_t group);

/* Insert or find the entry (SIG, GROUP, HASH) of the model's own table (made from BASE's entry
 * when only BASE has it, so that its samples carry on) and append SECONDS; the caller holds the
 * write lock. Returns the entry, or NULL when out of memory (the sample is dropped). */
cost_hist *cost_hist_add(cost_model *m, const char *sig, uint32_t group, uint64_t hash,
                     double seconds);

/* The profile of device DEV of RT from its backend's facts alone (calibrated = 0), with the
 * documented defaults for facts the backend leaves 0, and its cache key (cost_profile_key). */
void cost_profile_from_facts(const loom_runtime *rt, const runtime_device *dev, cost_profile *p);

/* The cache key of DEV's profile into KEY (LEN bytes): "backend|device name|driver|t<threads>|
 * hv<host-visible>,um<unified memory>,io<in-order>,sc<shares host cores>,f16<>,f64<>|
 * abi<major>.<minor>|o<hash of the options given to its backend, 00000000 when none>". RT
 * (may be NULL: no options) holds the options. Two devices share history and profile only
 * when every part is equal. */
void cost_profile_key(const loom_runtime *rt, const runtime_device *dev, char *key, size_t len);

/* The cache folder: DIR when non-NULL, else $XDG_CACHE_HOME/loom (when absolute), else
 * $HOME/.cache/loom; NULL when none applies or out of memory. Caller frees. */
char *cost_default_cache_dir(const char *dir);

/* Load profiles.json and history.json from the model's cache folder into M (devices whose key
 * is found get the cached profile; history entries of every device group are loaded, as the
 * runtime's shared snapshot: cost_history_acquire). Missing files are fine; a corrupt file or
 * entry is reported through runtime_message and skipped. */
void cost_store_load(cost_model *m);

/* Sort N values ascending in place (insertion sort: N is small). */
void cost_sort(double *v, size_t n);

#endif /* LOOM_COST_INTERNAL_H */
