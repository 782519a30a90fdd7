#!/bin/bash
# The default job: installs what is missing, builds Loom (release), and profiles the bundled
# model on every device found, writing a Chrome trace (out/trace.json, open it in Perfetto).
# Extra arguments go to `loom profile` (e.g. --model attention --repeat 50).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-deps.sh
if [ ! -d build-release ]; then
    meson setup build-release -Dbuildtype=release >/dev/null
fi
meson compile -C build-release >/dev/null
mkdir -p out
./build-release/tools/loom devices
./build-release/tools/loom profile --trace out/trace.json "$@"
