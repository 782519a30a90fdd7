#!/bin/bash
# Dynamic shapes against ONNX Runtime (issue 12): one loom_model of BERT-base with dynamic batch
# and sequence (bench/make_bert.py --dynamic) runs every shape of a grid in one process
# (bench/bench_dynamic --out writes each shape's input and output), then ONNX Runtime runs the
# same model on the same inputs, and each output is compared with rtol 1e-3, atol 1e-4 (the
# issue's tolerance): the worst element per shape and whether all pass. Prints figures only.
#
# Usage: bench/ort_dynamic.sh [--seq 16,64,128,256] [--batch 1,4,16] [--build DIR] [--work DIR]
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seqs=16,64,128,256 batches=1,4,16 build="$src/build-release" work=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seq) seqs="$2"; shift 2 ;;
        --batch) batches="$2"; shift 2 ;;
        --build) build="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "ort_dynamic.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
work="${work:-$build/ort-dynamic}"
py=/usr/bin/python3
ort_dir="$src/scripts/ort"
mkdir -p "$work"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$src" -Dbuildtype=release >/dev/null
fi
meson compile -C "$build" bench/bench_dynamic >/dev/null
if ! (cd "$ort_dir" && node -e 'require("onnxruntime-node")') 2>/dev/null; then
    (cd "$ort_dir" && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
fi
model="$work/bert_dynamic/model.onnx"
[ -f "$model" ] || "$py" "$src/bench/make_bert.py" --dynamic "$work" >/dev/null
"$build/bench/bench_dynamic" "$model" --seq "$seqs" --batch "$batches" --repeat 1 \
    --out "$work/shapes" >"$work/bench_dynamic.txt"
echo "== BERT-base, dynamic batch x sequence: Loom (one loom_model) vs ONNX Runtime, same inputs"
printf '%-10s %14s %14s %8s\n' "shape" "max |diff|" "worst/allowed" "pass"
all=1
for d in "$work"/shapes/b*_s*; do
    node "$ort_dir/run_ort.js" "$model" -i "input_ids=$d/input_ids.npy" -o "$d/ort" \
        --threads 2 >/dev/null 2>&1 || { echo "$(basename "$d"): ONNX Runtime failed"; all=0; continue; }
    line=$("$py" - "$d" <<'PY'
import sys, numpy as np
d = sys.argv[1]
a = np.load(f"{d}/hidden.npy").astype(np.float64)
b = np.load(f"{d}/ort/hidden.npy").astype(np.float64)
assert a.shape == b.shape, (a.shape, b.shape)
diff = np.abs(a - b)
ratio = float((diff / (1e-4 + 1e-3 * np.abs(b))).max())
print(f"{diff.max():.3g} {ratio:.3f} {'yes' if ratio <= 1 else 'NO'}")
PY
    )
    read -r mx ratio ok <<<"$line"
    printf '%-10s %14s %14s %8s\n' "$(basename "$d")" "$mx" "$ratio" "$ok"
    [ "$ok" = yes ] || all=0
done
[ $all = 1 ] && echo "every shape within rtol 1e-3, atol 1e-4" || echo "some shape outside the tolerance"
