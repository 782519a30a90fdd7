#!/bin/bash
# The default job: installs what is missing, builds Loom (release), and profiles the bundled
# model placed across every device found (the CPU and the npu-sim plugin), writing a Chrome trace
# (out/trace.json, open it in Perfetto), a Gantt chart (out/gantt.svg) and the graph for Graphviz
# (out/graph.dot).
# Extra arguments go to `loom profile` (e.g. --model attention --repeat 50).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-deps.sh
if [ ! -d build-release ]; then
    meson setup build-release -Dbuildtype=release >/dev/null
fi
meson compile -C build-release >/dev/null
mkdir -p out
# The plugins built here (the npu-sim NPU simulator) are found through LOOM_BACKEND_PATH, as an
# installed copy would find them in its plugin folder.
export LOOM_BACKEND_PATH="$PWD/build-release/backends/npu-sim${LOOM_BACKEND_PATH:+:$LOOM_BACKEND_PATH}"
./build-release/tools/loom devices
# fp16 is accepted so that the NPU can take the float32 nodes it supports.
./build-release/tools/loom profile --precision fp16 --trace out/trace.json --gantt out/gantt.svg \
    --dot out/graph.dot "$@"
