#!/bin/bash
# Dynamic int8 side by side (issue 14): BERT-base (bench/make_bert.py) in float32 and quantized,
# in Loom and in ONNX Runtime, on the same input and the same CPU threads, alternating runs.
#   loom f32           loom run model.onnx
#   loom int8-dynamic  loom run model.onnx --quantize int8-dynamic   (Loom's pass)
#   loom qdyn          loom run model_qdyn.onnx   (ORT's quantize_dynamic form, fused by Loom)
#   ort f32            run_ort.js model.onnx
#   ort qdyn           run_ort.js model_qdyn.onnx (bench/make_bert_qdyn.py writes it)
# For each it prints the median latency (median of the per-round medians), and the weights the
# plan holds (Loom); then the cosine similarity of each quantized output with Loom's float32
# output. Prints figures only; asserts nothing about time.
#
# Usage: bench/int8_compare.sh [--repeat N] [--rounds R] [--threads T] [--build DIR] [--work DIR]
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repeat=10 rounds=3 threads=2 build="$src/build-release" work=""
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) repeat="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --build) build="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "int8_compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
work="${work:-$build/int8-compare}"
py=/usr/bin/python3
ort_dir="$src/scripts/ort"
mkdir -p "$work"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ -f "$build/build.ninja" ]; then
    configure=(meson configure "$build" -Dbuildtype=release)
else
    configure=(meson setup "$build" "$src" -Dbuildtype=release)
fi
if ! { "${configure[@]}" && meson compile -C "$build" tools/loom:executable; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "int8_compare.sh: building Loom failed" >&2
    exit 1
fi
loom="$build/tools/loom"
if ! (cd "$ort_dir" && node -e 'require("onnxruntime-node")') 2>/dev/null; then
    echo "== installing onnxruntime-node into $ort_dir/node_modules" >&2
    (cd "$ort_dir" && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
fi
[ -f "$work/bert/model.onnx" ] || "$py" "$src/bench/make_bert.py" "$work" >/dev/null
[ -f "$work/bert/model_qdyn.onnx" ] ||
    "$py" "$src/bench/make_bert_qdyn.py" "$work/bert/model.onnx" "$work/bert/model_qdyn.onnx"
m="$work/bert"
in=(-i "input_ids=$m/input_input_ids.npy")
export LOOM_CPU_THREADS="$threads" LOOM_NO_CALIBRATE=1

# One timed invocation: prints its median latency in ms.
time_loom() { # OUTDIR MODEL [ARGS...]
    local out="$1"; shift
    "$loom" run "$@" "${in[@]}" -o "$out" --repeat "$repeat" --json 2>/dev/null |
        "$py" -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"]["median"])'
}
time_ort() { # OUTDIR MODEL
    node "$ort_dir/run_ort.js" "$2" "${in[@]}" -o "$1" --threads "$threads" --warmup 3 \
        --repeat "$repeat" --json 2>/dev/null |
        "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d.get("median_ms") or d["latency_ms"]["median"])'
}

names=(loom_f32 loom_int8_dynamic loom_qdyn ort_f32 ort_qdyn)
declare -A all
for ((r = 0; r < rounds; r++)); do
    all[loom_f32]+=" $(time_loom "$work/out_loom_f32" "$m/model.onnx")"
    all[ort_f32]+=" $(time_ort "$work/out_ort_f32" "$m/model.onnx")"
    all[loom_int8_dynamic]+=" $(time_loom "$work/out_loom_int8" "$m/model.onnx" --quantize int8-dynamic)"
    all[ort_qdyn]+=" $(time_ort "$work/out_ort_qdyn" "$m/model_qdyn.onnx")"
    all[loom_qdyn]+=" $(time_loom "$work/out_loom_qdyn" "$m/model_qdyn.onnx")"
done
weights() { # (-o: the outputs go to the work directory, not the current one)
    "$loom" run "$@" "${in[@]}" -o "$work/out_weights" 2>/dev/null |
        sed -n 's/^constants (weights) held by the plan: //p'
}
echo "== BERT-base, batch 1, sequence 128; $threads threads; median of $rounds rounds x $repeat runs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-20s %12s %18s\n' "variant" "median ms" "weights in plan"
for n in "${names[@]}"; do
    med=$("$py" -c "import statistics,sys; print('%.2f' % statistics.median(map(float, sys.argv[1:])))" ${all[$n]})
    w=""
    case $n in
        loom_f32) w=$(weights "$m/model.onnx") ;;
        loom_int8_dynamic) w=$(weights "$m/model.onnx" --quantize int8-dynamic) ;;
        loom_qdyn) w=$(weights "$m/model_qdyn.onnx") ;;
    esac
    printf '%-20s %12s %18s\n' "$n" "$med" "$w"
    eval "med_$n=$med"
done
"$py" - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
ref = np.load(f"{w}/out_loom_f32/hidden.npy").ravel().astype(np.float64)
def cos(path):
    x = np.load(path).ravel().astype(np.float64)
    return float(x @ ref / np.linalg.norm(x) / np.linalg.norm(ref))
for name, path in [("loom int8-dynamic", "out_loom_int8"), ("loom qdyn", "out_loom_qdyn"),
                   ("ort qdyn", "out_ort_qdyn"), ("ort f32", "out_ort_f32")]:
    print(f"cosine with loom f32 hidden states: {name:18s} {cos(f'{w}/{path}/hidden.npy'):.5f}")
PY
echo "ratios: loom f32 / loom int8-dynamic = $("$py" -c "print('%.2f' % ($med_loom_f32 / $med_loom_int8_dynamic))")x faster;" \
     "loom int8-dynamic / ort qdyn = $("$py" -c "print('%.2f' % ($med_loom_int8_dynamic / $med_ort_qdyn))");" \
     "loom qdyn / ort qdyn = $("$py" -c "print('%.2f' % ($med_loom_qdyn / $med_ort_qdyn))")"
