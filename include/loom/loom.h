/*
 * Loom's umbrella header: include this one. The base (core.h: statuses, errors,
 * host tensors), graph building (graph.h), running (runtime.h), ONNX import (onnx.h) and the
 * backend ABI types they share (backend.h).
 */
#ifndef LOOM_LOOM_H
#define LOOM_LOOM_H

#include "backend.h"
#include "core.h"
#include "graph.h"
#include "runtime.h"
#include "onnx.h"
#include "serve.h"
#include "model.h"

#endif /* LOOM_LOOM_H */
