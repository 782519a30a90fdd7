/*
 * Placement on an abstract problem: tasks with a cost per device, edges carrying bytes, links
 * with latency and bandwidth. The same code places a real plan (scheduler/plan.c builds the
 * problem from the graph and the cost model) and a `loom sim` instance (tools/cmd_sim.c reads it
 * from JSON), so what users plan for hardware they do not have is what Loom does on hardware
 * they have.
 *
 * The model (../shared/DESIGN.md, "Abstract DAG instances"): a device runs one task at a time,
 * without preemption; a task starts when its device is free and every input has arrived; an
 * edge between tasks on different devices i != j delays the consumer by
 * latency[i][j] + bytes / bandwidth[i][j]; on one device it is free; transfers overlap
 * computation and do not contend with one another.
 */
#ifndef LOOM_PLACE_H
#define LOOM_PLACE_H

#include <loom/backend.h>

#include <stddef.h>
#include <stdint.h>

/* Policies. */
typedef enum place_policy {
    PLACE_POLICY_DEFAULT = 0, /* Loom's: lookahead + portfolio + local search (+ exact when tiny) */
    PLACE_POLICY_HEFT,        /* Topcuoglu et al.: upward rank, insertion-based earliest finish */
    PLACE_POLICY_PEFT,        /* Arabnejad & Barbosa: optimistic cost table lookahead */
    PLACE_POLICY_EXACT,       /* branch and bound to the optimum (small problems; the budget caps it) */
    PLACE_POLICY_FIRST,       /* each task on the first device that can run it (no search) */
} place_policy;

/* Why a task went where it did (the deciding constraint or criterion). */
typedef enum place_reason {
    PLACE_REASON_EFT = 1,      /* earliest finish time (the policy's list-scheduling choice) */
    PLACE_REASON_PINNED,       /* the problem pinned it there */
    PLACE_REASON_ONLY_DEVICE,  /* no other device can run it */
    PLACE_REASON_SEARCH,       /* moved there by the local search / exact search: a shorter schedule */
    PLACE_REASON_ENERGY,       /* the target latency allowed a cheaper device */
    PLACE_REASON_CAPACITY,     /* its better device had no memory left */
    PLACE_REASON_FIRST,        /* PLACE_POLICY_FIRST */
} place_reason;

typedef struct place_problem {
    uint32_t n_tasks, n_devices;
    /* cost[t * n_devices + d]: seconds of task t on device d; INFINITY (or any value < 0) when
     * d cannot run t. Every task must have at least one finite cost. */
    const double *cost;
    uint32_t n_edges;
    const uint32_t *edge_from, *edge_to; /* task indices; the graph must be acyclic */
    const double *edge_bytes;            /* bytes each edge carries */
    /* n_devices * n_devices, [i * n_devices + j] for a transfer from i to j (diagonal unused). */
    const double *bandwidth; /* bytes per second, > 0 */
    const double *latency;   /* seconds, >= 0 */
    /* Optional, NULL when absent: */
    const int32_t *pin;         /* per task: the device it must run on, or -1 */
    /* Memory: each task's output bytes live on its device from the task's start until its last
     * consumer finishes (outputs of tasks without consumers until the end); the sum resident on
     * a device must stay <= capacity[d] (0: unlimited). */
    const double *output_bytes; /* per task */
    const double *capacity;     /* per device */
    /* Objective: with target_latency > 0, find a schedule whose makespan is <= target_latency
     * and whose energy sum(cost[t][d] * power[d]) is least; when none exists, return the
     * shortest one found (place_result.target_met = 0). power: watts per device (NULL: all 1). */
    double target_latency;
    const double *power;
    /* Optional names for messages (NULL: "task 3", "device 1"); not copied. */
    const char *const *task_names;
    const char *const *device_names;
} place_problem;

typedef struct place_result {
    double makespan;       /* seconds */
    double energy;         /* joules, sum(cost * power) */
    int target_met;        /* 1 when target_latency was given and met (or not given) */
    uint32_t *device;      /* per task */
    double *start, *finish;/* per task, seconds from 0 */
    uint8_t *reason;       /* per task, an place_reason */
    /* Tasks of each device in execution order: order[order_first[d] .. order_first[d+1]-1]. */
    uint32_t *order;
    uint32_t *order_first; /* n_devices + 1 */
    double heft_makespan;  /* HEFT's makespan on the same problem (the baseline), for reports */
    uint64_t evaluations;  /* schedules evaluated by the search */
    int proven_optimal;    /* 1 when the exact search finished: no shorter schedule exists */
} place_result;

/* Check PROBLEM (sizes, costs, acyclicity, pins, a task nobody can run); on failure writes a
 * message naming the culprit (task/edge index) into ERR and returns LOOM_ERR_INVALID_ARGUMENT. */
loom_status place_validate(const place_problem *problem, char *err, size_t err_len);

/* Place PROBLEM (validated first) with POLICY in at most BUDGET_S seconds of search (0: the
 * policy's default, 0.5 s for the default policy, 10 s for exact; list policies ignore it; the
 * default policy searches for budget * 1000 / n_tasks above 1,000 tasks). A latency target
 * gives half the budget to the shortest schedule and half to lowering its energy. On success RESULT's
 * arrays are allocated (free with place_result_free). Fails with LOOM_ERR_INVALID_ARGUMENT (ERR
 * says why) or LOOM_ERR_OUT_OF_MEMORY. Deterministic for a given problem and budget-independent
 * policies; the default policy's result never has a larger makespan than HEFT's. */
loom_status place_place(const place_problem *problem, place_policy policy, double budget_s,
                     place_result *result, char *err, size_t err_len);

/* Free RESULT's arrays (RESULT itself is the caller's). */
void place_result_free(place_result *result);

/* Makespan of the schedule that runs each task on DEVICE[t], each device's tasks in the order
 * ORDER/ORDER_FIRST (as in place_result), each as early as the model allows; writes START/FINISH
 * when non-NULL. Returns a negative value when the assignment or order is infeasible (a task on
 * a device that cannot run it, an order against the edges). */
double place_evaluate(const place_problem *problem, const uint32_t *device, const uint32_t *order,
                   const uint32_t *order_first, double *start, double *finish);

/* Parse a policy name ("default"/"loom", "heft", "peft", "exact", "first"); -1 when unknown. */
int place_policy_from_name(const char *name);
const char *place_policy_name(place_policy policy);
const char *place_reason_name(place_reason reason);

#endif /* LOOM_PLACE_H */
