#!/bin/bash
# The MoE layer of issue 14's measure, side by side in one run: Loom's sparse MoE kernel, the same
# layer written densely in standard ONNX ops from the same weights (bench/make_moe_bench.py: every
# expert on every token), and ONNX Runtime's CPU MoE (onnxruntime-node 1.24.3 from
# scripts/ort-moe; 1.22 in scripts/ort/ has no CPU MoE), on the same thread counts; then each
# output against numpy (rtol 1e-4). Prints, per thread count and round, the median and the
# fastest of N runs. Figures only; asserts nothing about time.
#
# Usage: bench/bench_moe.sh [--loom PATH] [--baseline PATH] [--threads "1 2"] [--repeat N]
#                           [--rounds R] [--work DIR]
#   --loom PATH      a release build's loom (default build-release/tools/loom, built when missing)
#   --baseline PATH  another loom (e.g. a build of an earlier commit) whose sparse MoE runs right
#                    after PATH's in every round: before/after figures from alternating runs
# Each round starts with the machine's load average (figures on a shared machine vary with it).
# Needs node, npm, Debian's python3-onnx and python3-numpy (/usr/bin/python3).
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
loom="" baseline="" threads="1 2" repeat=50 rounds=3 work=""
while [ $# -gt 0 ]; do
    case "$1" in
        --loom) loom="$2"; shift 2 ;;
        --baseline) baseline="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench_moe.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
py=/usr/bin/python3
if [ -z "$loom" ]; then
    b="$src/build-release"
    [ -f "$b/build.ninja" ] || meson setup "$b" "$src" -Dbuildtype=release >&2
    meson compile -C "$b" tools/loom:executable >&2
    loom="$b/tools/loom"
fi
work="${work:-$(mktemp -d)}"
ort_dir="$src/scripts/ort-moe"
[ -d "$ort_dir/node_modules/onnxruntime-node" ] ||
    (cd "$ort_dir" && npm ci --ignore-scripts --no-audit --no-fund >&2)
# run_ort.js resolves onnxruntime-node from its own folder: a copy beside ort-moe's modules.
mkdir -p "$work/ort"
cp "$src/scripts/ort/run_ort.js" "$work/ort/"
ln -sfn "$ort_dir/node_modules" "$work/ort/node_modules"

"$py" "$src/bench/make_moe_bench.py" "$work" >&2
ins=(-i input="$work/input.npy" -i router_probs="$work/router_probs.npy")
stat='import json,sys; l=json.load(sys.stdin)["latency_ms"]; print("median %8.3f ms  fastest %8.3f ms" % (l["median"], l["min"]))'
echo "MoE layer: 64 tokens, 8 experts, top-2, hidden 256, inter 1024, relu, renormalised"
echo "loom: $loom${baseline:+; baseline: $baseline}; $(nproc) CPUs"
for r in $(seq "$rounds"); do
    echo "round $r  load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for t in $threads; do
        for m in moe dense; do
            printf 'round %s  threads %s  %-18s ' "$r" "$t" "loom $m"
            LOOM_CPU_THREADS="$t" "$loom" run "$work/$m.onnx" "${ins[@]}" -o "$work/out_$m" \
                --device cpu:0 --repeat "$repeat" --json 2>/dev/null | "$py" -c "$stat"
            if [ "$m" = moe ] && [ -n "$baseline" ]; then
                printf 'round %s  threads %s  %-18s ' "$r" "$t" "baseline moe"
                LOOM_CPU_THREADS="$t" "$baseline" run "$work/moe.onnx" "${ins[@]}" \
                    -o "$work/out_base" --device cpu:0 --repeat "$repeat" --json 2>/dev/null |
                    "$py" -c "$stat"
            fi
        done
        printf 'round %s  threads %s  %-18s ' "$r" "$t" "onnxruntime moe"
        node "$work/ort/run_ort.js" "$work/moe.onnx" "${ins[@]}" -o "$work/out_ort" --threads "$t" \
            --warmup 3 --repeat "$repeat" --json | "$py" -c "$stat"
    done
done
"$py" - "$work" <<'EOF'
import sys
import numpy as np
w = sys.argv[1]
e = np.load(f'{w}/expected.npy')
import os
for m in ('moe', 'base', 'dense', 'ort'):
    if not os.path.exists(f'{w}/out_{m}/output.npy'):
        continue
    y = np.load(f'{w}/out_{m}/output.npy')
    print(f'{m:6s} vs numpy: max |diff| {float(np.abs(y - e).max()):.3g}, '
          f'allclose(rtol=1e-4): {np.allclose(y, e, rtol=1e-4, atol=1e-6)}')
EOF
