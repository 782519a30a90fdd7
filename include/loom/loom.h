/*
 * Loom's umbrella header: include this one. Graph building (graph.h), running (runtime.h) and
 * the backend ABI types they share (backend.h).
 */
#ifndef LOOM_LOOM_H
#define LOOM_LOOM_H

#include "backend.h"
#include "graph.h"
#include "runtime.h"
#include "onnx.h"

/* Version of the library as "MAJOR.MINOR.PATCH"; a static string. */
const char *loom_version(void);

#endif /* LOOM_LOOM_H */
