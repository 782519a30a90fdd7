/*
 * `loom profile --trace OUT.json`: the last measured run as Chrome trace-event JSON (Perfetto and
 * chrome://tracing open it). One track (tid) per device and one per link, named by thread_name
 * metadata events; a complete ("X") event per node with its op, shape, device, predicted time and
 * reason. docs/profile.md describes the format.
 */
#ifndef LOOM_TOOLS_TRACE_H
#define LOOM_TOOLS_TRACE_H

#include "profile_view.h"

/* Write VIEW's last run to PATH. Returns 1 on success, 0 on failure with errno set (nothing
 * printed). */
int loom_trace_write(const char *path, const profile_view *view);

#endif /* LOOM_TOOLS_TRACE_H */
