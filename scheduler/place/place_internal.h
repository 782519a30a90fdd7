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
 * what lp_evaluate computes for it.
 */
#ifndef LOOM_PLACE_INTERNAL_H
#define LOOM_PLACE_INTERNAL_H

#include "place.h"

#include <math.h>
#include <stdint.h>

/* How the decoder picks a device for a task whose device is not fixed. */
typedef enum lpi_rule {
    LPI_RULE_EFT = 0,   /* earliest finish time (HEFT) */
    LPI_RULE_OEFT,      /* earliest finish + optimistic cost to the exit (PEFT) */
    LPI_RULE_LOOKAHEAD, /* earliest finish of the task's children, estimated (then EFT) */
    LPI_RULE_FIRST,     /* the first device that can run it (LP_POLICY_FIRST) */
} lpi_rule;

/* The problem compiled once per lp_place call. Owned by the call; freed by lpi_ctx_free. */
typedef struct lpi_ctx {
    const lp_problem *p;
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
} lpi_ctx;

/* Scratch and output of one decode. Preallocated once; decoding allocates nothing. */
typedef struct lpi_sched {
    uint32_t *dev;          /* per task */
    double *start, *finish; /* per task */
    uint8_t *reason;        /* per task: the lp_reason of the decoder's choice */
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
} lpi_sched;

/* Transfer time of edge E from device I to device J (0 on one device). Every file uses this one
 * expression so that decoded times and lp_evaluate's agree to the bit. */
static inline double lpi_comm(const lpi_ctx *c, uint32_t e, uint32_t i, uint32_t j)
{
    if (i == j)
        return 0.0;
    const lp_problem *p = c->p;
    return p->latency[(size_t)i * c->nd + j] + p->edge_bytes[e] / p->bandwidth[(size_t)i * c->nd + j];
}

/* Deterministic pseudo-random numbers (xorshift64*). */
static inline uint64_t lpi_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A uniform double in [0, 1). */
static inline double lpi_rand01(uint64_t *s)
{
    return (double)(lpi_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Seconds on a monotonic clock. */
double lpi_now(void);

/* Compile the (validated) PROBLEM into C. Returns LOOM_ERR_OUT_OF_MEMORY on failure (C is then
 * freed). */
loom_status lpi_ctx_init(lpi_ctx *c, const lp_problem *problem);
void lpi_ctx_free(lpi_ctx *c);

/* Allocate / free a decode's arrays for C's sizes. */
loom_status lpi_sched_init(lpi_sched *s, const lpi_ctx *c);
void lpi_sched_free(lpi_sched *s);
/* Copy the schedule part (dev, start, finish, reason, slots, makespan) of SRC into DST. */
void lpi_sched_copy(lpi_sched *dst, const lpi_sched *src, const lpi_ctx *c);

/* Priority keys (higher first). */
void lpi_rank_upward(const lpi_ctx *c, int which, double *rank); /* which: 0 mean, 1 min, 2 max */
void lpi_rank_oct(const lpi_ctx *c, double *rank);                /* PEFT's mean OCT */
void lpi_rank_cpop(const lpi_ctx *c, double *rank, double *scratch); /* upward + downward */

/* List-schedule every task: ready tasks by decreasing KEY (ties: lower index), each on
 * ASSIGN[t] when ASSIGN is non-NULL and ASSIGN[t] >= 0, otherwise on the device RULE picks.
 * Returns the makespan, or INFINITY when some task found no device with memory for it (or its
 * fixed device could not take it). */
double lpi_decode(const lpi_ctx *c, lpi_sched *s, const double *key, const int32_t *assign,
                  lpi_rule rule);

/* Peak resident bytes exceed a capacity for the schedule DEV/START/FINISH? (0: fits). */
int lpi_memory_exceeded(const lpi_ctx *c, const uint32_t *dev, const double *start,
                        const double *finish, double *ev_t, double *ev_b, uint32_t *ev_i);

/* Energy of assignment DEV: sum of cost * power. */
double lpi_energy(const lpi_ctx *c, const uint32_t *dev);

/* The default policy's search: portfolio of list schedules (HEFT's, decoded by the caller into
 * HEFT with key HEFT_KEY, is its first member), then local search until DEADLINE (a lpi_now()
 * time). On return BEST holds the best schedule, KEY/ASSIGN reproduce it through lpi_decode.
 * *EVALS counts decodes. Fails only on allocation failure or when no list schedule fits the
 * memory. */
loom_status lpi_search(const lpi_ctx *c, double deadline, const lpi_sched *heft,
                       const double *heft_key, lpi_sched *best, double *key, int32_t *assign,
                       uint64_t *evals);

/* Lower the energy of the schedule (KEY, ASSIGN) while its makespan stays <= TARGET: greedy
 * moves to cheaper devices, then (LOCAL_SEARCH) random moves, until DEADLINE. ASSIGN is
 * updated (every entry fixed); S receives the final schedule. */
loom_status lpi_energy_search(const lpi_ctx *c, double target, double deadline,
                              int local_search, double *key, int32_t *assign, lpi_sched *s,
                              uint64_t *evals);

/* Branch and bound to the least makespan, starting from the incumbent INC (a decoded schedule).
 * Stops at DEADLINE. On return, when it found better, ASSIGN/KEY reproduce the best through
 * lpi_decode (the keys give the start-time order) and *PROVEN says whether the search finished. */
loom_status lpi_exact(const lpi_ctx *c, double deadline, const lpi_sched *inc, double *key,
                      int32_t *assign, uint64_t *evals, int *proven);

#endif /* LOOM_PLACE_INTERNAL_H */
