/*
 * A standalone SVG Gantt chart of one run's timeline (`loom profile --gantt`): one lane per
 * device, a rectangle per node coloured by its op class, a tooltip <title> per rectangle, a
 * time axis and a legend. Nodes narrower than a pixel on a lane merge into grey aggregates.
 */
#ifndef LOOM_TOOLS_GANTT_H
#define LOOM_TOOLS_GANTT_H

#include <loom/loom.h>

/* Write the chart of ST's timeline (nodes of PLAN) to PATH; TITLE heads it. Returns 1 on
 * success, 0 on failure with errno set (nothing printed). */
int loom_gantt_write(const char *path, const loom_plan *plan, const loom_run_stats *st,
                     const char *title);

#endif /* LOOM_TOOLS_GANTT_H */
