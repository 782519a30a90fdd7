/*
 * The pass pipeline: runs the passes in their documented order over a checked graph, swaps in
 * each rewritten graph, keeps the topological order current and records what every stage did
 * (nodes before and after, time, a line) for loom profile --passes and the plan's JSON.
 */
#include "passes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The order is part of the contract (docs/architecture.md): validate first, so later passes
 * may assume a checked, ordered graph; analyses (calibration) last, on the final graph. */
static const pass_def pipeline[] = {
    {"validate", pass_validate},
    {"fold_constants", pass_fold_constants},
    {"fuse_qdq", pass_fuse_qdq},
    {"fuse_quantized_matmul", pass_fuse_quantized_matmul},
    {"quantize_int8_dynamic", pass_quantize_int8_dynamic},
    {"fold_batchnorm", pass_fold_batchnorm},
    {"fuse_epilogue", pass_fuse_epilogue},
    {"split_moe_experts", pass_split_moe_experts},
    {"calibrate_int8", pass_calibrate_int8},
};

void passes_report_add(pass_result *res, const char *name, size_t nodes_before,
                       size_t nodes_after, double ms, const char *summary)
{
    if (res->n_reports >= PASS_MAX_REPORTS)
        return;
    pass_report *r = &res->reports[res->n_reports++];
    r->name = name;
    r->nodes_before = nodes_before;
    r->nodes_after = nodes_after;
    r->ms = ms;
    snprintf(r->summary, sizeof r->summary, "%s", summary ? summary : "");
}

loom_status passes_run(const loom_graph *g, pass_ctx *ctx, pass_result *res)
{
    memset(res, 0, sizeof *res);
    res->graph = g;
    for (size_t p = 0; p < sizeof pipeline / sizeof pipeline[0]; p++) {
        char summary[160] = "";
        loom_graph *next = NULL;
        size_t before = res->graph->n_nodes;
        uint64_t t0 = loom_now_ns();
        loom_status st = pipeline[p].run(res->graph, &next, ctx, summary, sizeof summary);
        if (st != LOOM_OK)
            return st;
        if (next) {
            if (res->owned)
                res->retired[res->n_retired++] = res->owned; /* next may borrow from it */
            res->owned = next;
            res->graph = next;
            /* Later stages walk the new graph: order it. */
            uint32_t *order = malloc((next->n_nodes + 1) * sizeof *order);
            if (!order)
                return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory ordering graph '%s'",
                                      next->name);
            st = graph_topo_order(next, order);
            free(ctx->order);
            ctx->order = order;
            if (st != LOOM_OK)
                return st;
        }
        passes_report_add(res, pipeline[p].name, before, res->graph->n_nodes,
                          (double)(loom_now_ns() - t0) / 1e6, summary);
    }
    return LOOM_OK;
}

void passes_result_free(pass_result *res, pass_ctx *ctx)
{
    if (res) {
        loom_graph_destroy(res->owned);
        res->owned = NULL;
        res->graph = NULL;
        for (size_t i = 0; i < res->n_retired; i++)
            loom_graph_destroy(res->retired[i]);
        res->n_retired = 0;
    }
    if (ctx) {
        free(ctx->order);
        free(ctx->absmax);
        ctx->order = NULL;
        ctx->absmax = NULL;
    }
}
