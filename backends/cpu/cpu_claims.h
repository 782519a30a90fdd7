/*
 * The CPU backend's subgraph claims (backend ABI 1.0, loom_backend.claim and
 * prepare_subgraph): which chains of an offered graph the CPU compiles into one kernel, and
 * their compilation. backends/common/chain_match.h documents the chains (the matcher is shared
 * with the OpenCL backend), cpu_claims.c what the CPU makes of them; cpu_backend.c hooks these
 * into the table.
 */
#ifndef LOOM_CPU_CLAIMS_H
#define LOOM_CPU_CLAIMS_H

#include "cpu_kernels.h"

/* loom_backend.claim for the CPU: the chains of GRAPH that OPS (the backend's kernel table)
 * can compile, at most MAX_CLAIMS of them with their node indices in NODES (MAX_NODES
 * entries). Pure, thread-safe, allocates only temporaries; a malformed GRAPH (a value id out
 * of range) or no memory gives 0 claims. */
uint32_t cpu_claims_find(const cpu_op_entry *ops, const loom_subgraph_desc *graph,
                         uint32_t *nodes, uint32_t max_nodes, loom_claim *claims,
                         uint32_t max_claims);

/* loom_backend.prepare_subgraph for the CPU: SG must be exactly one chain cpu_claims_find
 * claims, with one output (the chain's last value). On success *KERNEL is a new kernel owned by
 * the caller (run and freed like any prepared node: its free_params frees what it holds); on
 * failure an error with a message naming SG in ERR. */
loom_status cpu_claims_prepare(const cpu_op_entry *ops, const loom_subgraph_desc *sg,
                               cpu_kernel **kernel, char *err, size_t err_len);

#endif /* LOOM_CPU_CLAIMS_H */
