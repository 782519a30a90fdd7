/*
 * The Chrome trace of `loom profile` (see trace.h). Timestamps are microseconds since the run's
 * start; pid 1 is the run, tid k + 1 is track k of the view.
 */
#include "trace.h"
#include "tool_util.h"

#include <jansson.h>

#include <errno.h>
#include <math.h>

/* A metadata ("M") event NAME on track TID with one string argument ARG_KEY = ARG_VALUE. */
static json_t *metadata(const char *name, int tid, const char *arg_key, json_t *arg_value)
{
    json_t *args = json_object();
    json_object_set_new(args, arg_key, arg_value);
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:o}", "name", name, "ph", "M", "ts", 0, "pid",
                     1, "tid", tid, "args", args);
}

/* A finite number as JSON, NaN and infinities as null (JSON has no such numbers). */
static json_t *number_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

int loom_trace_write(const char *path, const profile_view *view)
{
    json_t *events = json_array();
    json_array_append_new(events, metadata("process_name", 1, "name",
                                           json_string(view->title ? view->title : "loom")));
    for (size_t k = 0; k < view->n_tracks; k++) {
        const profile_track *t = &view->tracks[k];
        json_array_append_new(events, metadata("thread_name", (int)k + 1, "name",
                                               json_string(t->name)));
        /* Devices above links, each in the view's order. */
        json_array_append_new(events, metadata("thread_sort_index", (int)k + 1, "sort_index",
                                               json_integer((json_int_t)k)));
    }
    for (size_t i = 0; i < view->n_nodes; i++) {
        const profile_node *n = &view->nodes[i];
        if (!n->timed)
            continue;
        uint64_t end = n->end_ns < n->start_ns ? n->start_ns : n->end_ns;
        json_t *args = json_pack("{s:s, s:s, s:s, s:o, s:f, s:s, s:s, s:b}", "op", n->op,
                                 "shape", n->shape, "device", n->device, "predicted_ms",
                                 number_or_null(n->predicted_ms), "measured_median_ms",
                                 n->measured_ms, "decided_by", n->decided_by, "reason",
                                 n->reason, "copy", n->is_copy);
        if (n->is_copy)
            json_object_set_new(args, "bytes", json_real(n->bytes_moved));
        if (n->fallback[0])
            json_object_set_new(args, "fallback", json_string(n->fallback));
        json_array_append_new(
            events, json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:o}", "name", n->name,
                              "cat", n->op, "ph", "X", "ts", (double)n->start_ns / 1e3, "dur",
                              (double)(end - n->start_ns) / 1e3, "pid", 1, "tid",
                              (int)n->track + 1, "args", args));
    }
    /* Dependencies across workers as flow arrows from the producer's end to the consumer's
     * start: "host" when the producer's completion woke the consumer's thread, "event" when the
     * consumer's device waited on a backend event (the host never waited for it). */
    size_t n_deps = view->plan ? loom_plan_dependency_count(view->plan) : 0;
    for (size_t i = 0; i < n_deps; i++) {
        size_t from, to;
        loom_dependency_kind kind;
        if (loom_plan_dependency(view->plan, i, &from, &to, &kind) != LOOM_OK ||
            from >= view->n_nodes || to >= view->n_nodes)
            continue;
        const profile_node *a = &view->nodes[from], *b = &view->nodes[to];
        if (!a->timed || !b->timed)
            continue;
        const char *name = kind == LOOM_DEPENDENCY_EVENT ? "event" : "host";
        uint64_t a_end = a->end_ns < a->start_ns ? a->start_ns : a->end_ns;
        /* An event lets the consumer start before the producer ends: the arrow leaves the
         * producer where the consumer started, when that is earlier. */
        double ts_from = (double)(a_end < b->start_ns || kind != LOOM_DEPENDENCY_EVENT
                                      ? a_end
                                      : (b->start_ns > a->start_ns ? b->start_ns : a->start_ns)) /
                         1e3;
        json_array_append_new(
            events, json_pack("{s:s, s:s, s:s, s:I, s:f, s:i, s:i}", "name", name, "cat",
                              "dependency", "ph", "s", "id", (json_int_t)i + 1, "ts", ts_from,
                              "pid", 1, "tid", (int)a->track + 1));
        json_array_append_new(
            events, json_pack("{s:s, s:s, s:s, s:s, s:I, s:f, s:i, s:i}", "name", name, "cat",
                              "dependency", "ph", "f", "bp", "e", "id", (json_int_t)i + 1, "ts",
                              (double)b->start_ns / 1e3, "pid", 1, "tid", (int)b->track + 1));
    }
    json_t *root = json_pack("{s:o, s:s}", "traceEvents", events, "displayTimeUnit", "ms");
    if (view->target_s > 0)
        json_object_set_new(root, "otherData",
                            json_pack("{s:f}", "target_latency_ms", view->target_s * 1e3));
    tool_out out;
    FILE *f = tool_out_open(&out, path);
    if (!f) {
        int e = errno;
        json_decref(root);
        errno = e;
        return 0;
    }
    errno = 0;
    int rc = json_dumpf(root, f, JSON_COMPACT);
    json_decref(root);
    if (rc != 0) {
        if (!errno)
            errno = EIO;
        tool_out_abort(&out);
        return 0;
    }
    return tool_out_commit(&out);
}
