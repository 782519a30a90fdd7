#!/bin/bash
# Builds Loom and its benchmarks in a release build (build-bench/ under the source root) and runs
# every benchmark, printing its figures. Nothing here asserts on time.
# Usage: bench/run.sh [BUILD_DIR]
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$src/build-bench}"

# Build output goes to a log, shown only when the build fails, so the figures stand alone.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ -f "$build/build.ninja" ]; then
    configure=(meson configure "$build" --buildtype=release)
else
    configure=(meson setup "$build" "$src" --buildtype=release)
fi
if ! { "${configure[@]}" && meson compile -C "$build" bench_dispatch bench_gemm bench_memory; } \
        >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi

echo "== $(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
for b in bench_memory bench_dispatch bench_gemm; do
    echo
    echo "== $b"
    "$build/bench/$b"
done
