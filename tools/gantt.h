/*
 * A standalone SVG Gantt chart of one run's timeline (`loom profile --gantt`): one lane per
 * device and one per link (the plan's copies run on link lanes), a rectangle per node coloured by
 * its op class, a tooltip <title> per rectangle, a time axis, the latency target as a dashed
 * vertical line when there is one, and a legend. Nodes narrower than a pixel on a lane merge
 * into grey aggregates.
 */
#ifndef LOOM_TOOLS_GANTT_H
#define LOOM_TOOLS_GANTT_H

#include "profile_view.h"

/* Write the chart of VIEW's last run to PATH; VIEW's title heads it and its target (when > 0)
 * is drawn. Returns 1 on success, 0 on failure with errno set (nothing printed). */
int loom_gantt_write(const char *path, const profile_view *view);

#endif /* LOOM_TOOLS_GANTT_H */
