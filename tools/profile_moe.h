/*
 * Per-expert token counts for `loom profile` (issue 14): when the measured plan runs a MoE as
 * placement units (passes/split_moe_experts.c: NAME/router, NAME/expert<e>, NAME), how many
 * tokens the router sent to each expert on the profile's inputs. The counts come from the
 * router itself: the profile's graph is copied with a MoERoute node (the operator the split
 * plan runs, same k and renormalisation) on each MoE's router logits, made a graph output, and
 * run once on cpu:0 with the measured runs' inputs; an expert's count is the number of tokens
 * of weight > 0 in its routing column. The measured plan is not touched.
 */
#ifndef LOOM_TOOLS_PROFILE_MOE_H
#define LOOM_TOOLS_PROFILE_MOE_H

#include <loom/loom.h>

#include <stddef.h>

typedef struct profile_moe_expert {
    char node[200];   /* the expert node's name in the plan: "moe/expert3" */
    long tokens;      /* tokens routed to it */
} profile_moe_expert;

typedef struct profile_moe {
    profile_moe_expert *experts; /* N entries, in graph order of the MoE nodes, then expert */
    size_t n;
    char error[200];             /* why there are no counts although the plan has experts */
} profile_moe;

/* Fill OUT for PLAN (made from G) run on inputs IN[N_IN] (G's inputs, in order) on RT. Nothing
 * to do (OUT->n = 0, no error) when PLAN has no MoEExpert node. When the counts cannot be
 * computed, OUT->n = 0 and OUT->error says why; the profile goes on without them. Free with
 * profile_moe_free. */
void profile_moe_tokens(loom_runtime *rt, const loom_graph *g, const loom_plan *plan,
                        loom_tensor *const *in, size_t n_in, profile_moe *out);

/* Free what profile_moe_tokens allocated in M (safe on a zeroed M). */
void profile_moe_free(profile_moe *m);

#endif /* LOOM_TOOLS_PROFILE_MOE_H */
