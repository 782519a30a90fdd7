/*
 * Gathers through per-axis index maps, the one kernel behind Pad and Tile (kernels_layout.c) and
 * nearest Resize (kernels_resize.c): Y[o] = X[sum_d map_d[o_d] * stride_d], or a constant when
 * some map_d[o_d] is -1 (Pad's constant mode). A prepare() allocates the params with
 * cpu_map_alloc, fills the maps, and sets k->run = cpu_map_run, k->free_params = cpu_map_free.
 */
#ifndef LOOM_CPU_INDEX_MAP_H
#define LOOM_CPU_INDEX_MAP_H

#include "cpu_kernels.h"

typedef struct cpu_map_params {
    uint32_t rank;
    size_t esize;
    int64_t out[LOOM_MAX_RANK], istride[LOOM_MAX_RANK];
    int64_t *map[LOOM_MAX_RANK]; /* into maps: out[d] entries, element offsets (or -1) */
    int64_t *maps;
    int64_t rows, row_len;       /* Y as [rows, out[rank-1]] */
    char value[8];               /* constant, in the output's dtype */
    int value_input;             /* read the constant from input 2 at run time */
} cpu_map_params;

/* A cpu_map_params for X -> Y of NODE (input 0 -> output 0; a scalar is shape [1]), with out,
 * istride, rows and row_len set and the maps allocated (one block of sum(out) entries) but not
 * filled. NULL when out of memory. Freed with cpu_map_free. */
cpu_map_params *cpu_map_alloc(const loom_node_desc *node);
void cpu_map_free(void *params);

/* Whether the map kernel takes NODE: a fixed-size dtype, the same for X and Y; Pad and Tile
 * must carry their canonical pads / repeats. 0 with REASON when not. */
int cpu_map_supports(const loom_node_desc *node, char *reason, size_t len);

/* The kernel's run function (cpu_run_fn). */
loom_status cpu_map_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                        char *err, size_t err_len);

#endif /* LOOM_CPU_INDEX_MAP_H */
