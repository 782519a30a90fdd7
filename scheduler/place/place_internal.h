/*
 * Placement's internal shapes, shared by the files of scheduler/place/: the problem compiled
 * into flat arrays (CSR adjacency, allowed costs, mean costs, ranks), the list-scheduling
 * decoder every policy is built on, and the searches (portfolio + local search, exact branch
 * and bound, energy under a latency target).
 *
 * One representation of a schedule serves all policies: a priority key per task and, per task,
 * either a fixed device or "choose by the rule". The decoder takes ready tasks in order of
 * decreasing key and puts each in the earliest gap of its device that fits (insertion-based),
 * which yields exactly the as-early-as-possible timing of the resulting per-device order, i.e.
 * what place_evaluate computes for it.
 */
#ifndef LOOM_PLACE_INTERNAL_H
#define LOOM_PLACE_INTERNAL_H

#include "place.h"

#include <math.h>
#include <stdint.h>

/* How the decoder picks a device for a task whose device is not fixed. */
typedef enum place_rule {
    PLACE_RULE_EFT = 0,   /* earliest finish time (HEFT) */
    PLACE_RULE_OEFT,      /* earliest finish + optimistic cost to the exit (PEFT) */
    PLACE_RULE_LOOKAHEAD, /* earliest finish of the task's children, estimated (then EFT) */
    PLACE_RULE_FIRST,     /* the first device that can run it (PLACE_POLICY_FIRST) */
} place_rule;

/* The problem compiled once per place_place call. Owned by the call; freed by place_ctx_free. */
typedef struct place_ctx {
    const place_problem *p;
    uint32_t n, nd, ne;
    double *w;        /* n*nd: cost where the task may run (finite, >= 0, pin respected), else INF */
    uint8_t *n_allowed; /* per task: how many devices may run it */
    double *wmean;    /* per task: mean of its allowed costs */
    double *wmin;     /* per task: least allowed cost */
    double *cmean;    /* per edge: mean transfer time over device pairs i != j (HEFT's) */
    /* CSR adjacency: preds of t are pred_task[pred_first[t] .. pred_first[t+1]-1] (with the
     * edge index in pred_edge); likewise succs. */
    uint32_t *pred_first, *pred_task, *pred_edge;
    uint32_t *succ_first, *succ_task, *succ_edge;
    uint32_t *topo;   /* a topological order */
    double *oct;      /* n*nd: PEFT's optimistic cost table */
    double *blevel_min; /* per task: least cost path to an exit, own cost included, no transfers */
    int has_capacity; /* some device has a finite capacity */
    double *cap;      /* per device: capacity in bytes, INFINITY when unlimited */
    double *out_bytes;/* per task (zeros when the problem has none) */
} place_ctx;

/* Scratch and output of one decode. Preallocated once; decoding allocates nothing. */
typedef struct place_sched {
    uint32_t *dev;          /* per task */
    double *start, *finish; /* per task */
    uint8_t *reason;        /* per task: the place_reason of the decoder's choice */
    uint32_t *slot;         /* nd * n: slot[d*n + k] is device d's k-th task by start time */
    uint32_t *slot_n;       /* per device: how many */
    double *slot_st, *slot_fi; /* nd * n: start/finish of slot[...], kept beside it so the gap
                                * search reads memory in sequence */
    double makespan;
    /* scratch */
    uint32_t *heap;         /* ready tasks */
    uint32_t *npred_left;   /* per task */
    uint32_t *nsucc_left;   /* per task (memory bookkeeping) */
    double *mem_end;        /* per task: when its output leaves its device (INF: not yet known) */
    double *ev_t;           /* 2n: sweep events (capacity checks) */
    double *ev_b;           /* 2n */
    uint32_t *ev_i;         /* 2n */
} place_sched;

/* Transfer time of edge E from device I to device J (0 on one device). Every file uses this one
 * expression so that decoded times and place_evaluate's agree to the bit. */
static inline double place_comm(const place_ctx *c, uint32_t e, uint32_t i, uint32_t j)
{
    if (i == j)
        return 0.0;
    const place_problem *p = c->p;
    return p->latency[(size_t)i * c->nd + j] + p->edge_bytes[e] / p->bandwidth[(size_t)i * c->nd + j];
}

/* Deterministic pseudo-random numbers (xorshift64*). */
static inline uint64_t place_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A uniform double in [0, 1). */
static inline double place_rand01(uint64_t *s)
{
    return (double)(place_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Seconds on a monotonic clock. */
double place_now(void);

/* Compile the (validated) PROBLEM into C. Returns LOOM_ERR_OUT_OF_MEMORY on failure (C is then
 * freed). */
loom_status place_ctx_init(place_ctx *c, const place_problem *problem);
void place_ctx_free(place_ctx *c);

/* Allocate / free a decode's arrays for C's sizes. */
loom_status place_sched_init(place_sched *s, const place_ctx *c);
void place_sched_free(place_sched *s);
/* Copy the schedule part (dev, start, finish, reason, slots, makespan) of SRC into DST. */
void place_sched_copy(place_sched *dst, const place_sched *src, const place_ctx *c);

/* Priority keys (higher first). */
void place_rank_upward(const place_ctx *c, int which, double *rank); /* which: 0 mean, 1 min, 2 max */
void place_rank_oct(const place_ctx *c, double *rank);                /* PEFT's mean OCT */
void place_rank_cpop(const place_ctx *c, double *rank, double *scratch); /* upward + downward */

/* List-schedule every task: ready tasks by decreasing KEY (ties: lower index), each on
 * ASSIGN[t] when ASSIGN is non-NULL and ASSIGN[t] >= 0, otherwise on the device RULE picks.
 * Returns the makespan, or INFINITY when some task found no device with memory for it (or its
 * fixed device could not take it). */
double place_decode(const place_ctx *c, place_sched *s, const double *key, const int32_t *assign,
                  place_rule rule);

/* Peak resident bytes exceed a capacity for the schedule DEV/START/FINISH? (0: fits). */
int place_memory_exceeded(const place_ctx *c, const uint32_t *dev, const double *start,
                        const double *finish, double *ev_t, double *ev_b, uint32_t *ev_i);

/* Energy of assignment DEV: sum of cost * power. */
double place_energy(const place_ctx *c, const uint32_t *dev);

/* The default policy's search: portfolio of list schedules (HEFT's, decoded by the caller into
 * HEFT with key HEFT_KEY, is its first member), then local search until DEADLINE (a place_now()
 * time). On return BEST holds the best schedule, KEY/ASSIGN reproduce it through place_decode.
 * *EVALS counts decodes. Fails only on allocation failure or when no list schedule fits the
 * memory. */
loom_status place_search(const place_ctx *c, double deadline, const place_sched *heft,
                       const double *heft_key, place_sched *best, double *key, int32_t *assign,
                       uint64_t *evals);

/* Lower the energy of the schedule (KEY, ASSIGN) while its makespan stays <= TARGET: greedy
 * moves to cheaper devices, then (LOCAL_SEARCH) random moves, until DEADLINE. ASSIGN is
 * updated (every entry fixed); S receives the final schedule. */
loom_status place_energy_search(const place_ctx *c, double target, double deadline,
                              int local_search, double *key, int32_t *assign, place_sched *s,
                              uint64_t *evals);

/* Branch and bound to the least makespan, starting from the incumbent INC (a decoded schedule).
 * Stops at DEADLINE. On return, when it found better, ASSIGN/KEY reproduce the best through
 * place_decode (the keys give the start-time order) and *PROVEN says whether the search finished. */
loom_status place_exact(const place_ctx *c, double deadline, const place_sched *inc, double *key,
                      int32_t *assign, uint64_t *evals, int *proven);

#endif /* LOOM_PLACE_INTERNAL_H */
