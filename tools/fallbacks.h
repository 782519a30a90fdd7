/*
 * The nodes a command's runs re-ran on another device after their device failed
 * (loom_run_stats.fallbacks), gathered over many runs for `loom run` and `loom profile`: one
 * entry per node, failing device, device it re-ran on and status, with how many runs it
 * happened in and the first run's message. Also their one line of text for people.
 */
#ifndef LOOM_TOOLS_FALLBACKS_H
#define LOOM_TOOLS_FALLBACKS_H

#include <loom/loom.h>

#include <stddef.h>

typedef struct tool_fallback {
    loom_fallback_info info; /* the first run's */
    size_t runs;             /* runs in which it happened */
} tool_fallback;

typedef struct tool_fallbacks {
    tool_fallback *items;
    size_t n, cap;
    size_t total; /* node re-runs over all runs (fallback_count summed) */
    loom_fallback_info *buf; /* what a run writes into (loom_run_stats.fallbacks) */
    size_t buf_cap;
} tool_fallbacks;

/* Room for runs of PLAN: STATS->fallbacks and fallbacks_capacity point into F (zeroed by the
 * caller). Returns 0 when out of memory (STATS then asks for no details). */
int tool_fallbacks_prepare(tool_fallbacks *f, const loom_plan *plan, loom_run_stats *stats);

/* Add what the run that filled STATS re-ran. Returns 0 when out of memory (counted, not kept). */
int tool_fallbacks_add(tool_fallbacks *f, const loom_run_stats *stats);

void tool_fallbacks_free(tool_fallbacks *f);

/* STATUS in words: "device lost", "out of memory", ... */
const char *tool_status_text(loom_status status);

/* "failed on devmem:0 (device lost: MESSAGE); re-ran on cpu:0" into BUF; returns BUF. */
const char *tool_fallback_text(const loom_runtime *rt, const loom_fallback_info *fb, char *buf,
                               size_t len);

#endif /* LOOM_TOOLS_FALLBACKS_H */
