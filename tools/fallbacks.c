/*
 * Fallback records gathered over runs (fallbacks.h).
 */
#include "fallbacks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tool_fallbacks_prepare(tool_fallbacks *f, const loom_plan *plan, loom_run_stats *stats)
{
    size_t nn = loom_plan_node_count(plan);
    if (!f->buf || f->buf_cap < nn) {
        free(f->buf);
        f->buf = calloc(nn + 1, sizeof *f->buf);
        f->buf_cap = f->buf ? nn : 0;
    }
    stats->fallbacks = f->buf;
    stats->fallbacks_capacity = f->buf_cap;
    stats->fallbacks_written = 0;
    return f->buf != NULL;
}

int tool_fallbacks_add(tool_fallbacks *f, const loom_run_stats *stats)
{
    f->total += stats->fallback_count;
    for (size_t k = 0; stats->fallbacks && k < stats->fallbacks_written; k++) {
        const loom_fallback_info *fb = &stats->fallbacks[k];
        size_t i = 0;
        while (i < f->n &&
               !(f->items[i].info.node == fb->node &&
                 f->items[i].info.failed_device == fb->failed_device &&
                 f->items[i].info.ran_device == fb->ran_device &&
                 f->items[i].info.status == fb->status))
            i++;
        if (i == f->n) {
            if (f->n == f->cap) {
                size_t cap = f->cap ? 2 * f->cap : 8;
                tool_fallback *items = realloc(f->items, cap * sizeof *items);
                if (!items)
                    return 0;
                f->items = items;
                f->cap = cap;
            }
            f->items[f->n++] = (tool_fallback){.info = *fb, .runs = 0};
        }
        f->items[i].runs++;
    }
    return 1;
}

void tool_fallbacks_free(tool_fallbacks *f)
{
    free(f->items);
    free(f->buf);
    *f = (tool_fallbacks){0};
}

const char *tool_status_text(loom_status status)
{
    switch (status) {
    case LOOM_OK: return "ok";
    case LOOM_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LOOM_ERR_UNSUPPORTED: return "unsupported";
    case LOOM_ERR_OUT_OF_MEMORY: return "out of memory";
    case LOOM_ERR_DEVICE_LOST: return "device lost";
    case LOOM_ERR_IO: return "I/O error";
    case LOOM_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *tool_fallback_text(const loom_runtime *rt, const loom_fallback_info *fb, char *buf,
                               size_t len)
{
    char from[64] = "?", to[64] = "?";
    loom_runtime_device(rt, fb->failed_device, from, sizeof from, NULL);
    loom_runtime_device(rt, fb->ran_device, to, sizeof to, NULL);
    snprintf(buf, len, "failed on %s (%s%s%s); re-ran on %s", from, tool_status_text(fb->status),
             fb->message[0] ? ": " : "", fb->message, to);
    return buf;
}
