#!/bin/bash
# Statically quantised (QDQ) models side by side (issue 14, part 3): the CNN and the MLP that
# bench/make_qdq.py writes, in float32 and in QDQ form, run by Loom with the fuse_qdq pass (QDQ
# Conv -> QLinearConv on the int8 conv kernel, QDQ Gemm -> MatMulInt8Dynamic), by Loom without it
# (LOOM_FUSE_QDQ=0: the weights' DequantizeLinear folded, float Conv/Gemm between
# QuantizeLinear/DequantizeLinear pairs, as written), and by ONNX Runtime (onnxruntime-node,
# scripts/ort), on the same input and threads, alternating runs. Prints the median over rounds
# of each run's median latency and the fastest run, then how far each quantised output is from
# Loom's float32 output and from Loom's unfused QDQ run. Prints figures only; asserts nothing.
#
# Usage: bench/qdq_compare.sh [--repeat N] [--rounds R] [--threads T] [--loom PATH] [--work DIR]
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repeat=30 rounds=3 threads=1 loom="$src/build-release/tools/loom" work="/tmp/loom-qdq"
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) repeat="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --loom) loom="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "qdq_compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
py=/usr/bin/python3
ort_dir="$src/scripts/ort"
[ -x "$loom" ] || { echo "qdq_compare.sh: no loom at $loom (--loom PATH)" >&2; exit 2; }
mkdir -p "$work"
[ -f "$work/cnn_qdq.onnx" ] || "$py" "$src/bench/make_qdq.py" "$work" >/dev/null
have_ort=1
(cd "$ort_dir" && node -e 'require("onnxruntime-node")') 2>/dev/null || have_ort=0
export LOOM_CPU_THREADS="$threads" LOOM_NO_CALIBRATE=1

loom_json() { # OUTDIR MODEL INPUT: "median fastest"
    "$loom" run "$2" -i "x=$3" -o "$1" --repeat "$repeat" --json 2>/dev/null |
        "$py" -c 'import json,sys; l=json.load(sys.stdin)["latency_ms"]; print(l["median"], l["min"])'
}
ort_json() { # OUTDIR MODEL INPUT
    node "$ort_dir/run_ort.js" "$2" -i "x=$3" -o "$1" --threads "$threads" --warmup 3 \
        --repeat "$repeat" --json 2>/dev/null |
        "$py" -c 'import json,sys; d=json.load(sys.stdin); l=d.get("latency_ms") or {}
print(d.get("median_ms") or l.get("median"), d.get("min_ms") or l.get("min", "nan"))'
}

echo "== QDQ models; $threads thread(s); $rounds rounds x $repeat runs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in cnn mlp; do
    in="$work/input_$m.npy"
    declare -A med=() fast=()
    for ((r = 0; r < rounds; r++)); do
        read -r a b < <(loom_json "$work/out_${m}_f32" "$work/${m}_f32.onnx" "$in")
        med[loom_f32]+=" $a"; fast[loom_f32]+=" $b"
        read -r a b < <(loom_json "$work/out_${m}_fused" "$work/${m}_qdq.onnx" "$in")
        med[loom_qdq_fused]+=" $a"; fast[loom_qdq_fused]+=" $b"
        read -r a b < <(LOOM_FUSE_QDQ=0 loom_json "$work/out_${m}_unfused" "$work/${m}_qdq.onnx" "$in")
        med[loom_qdq_unfused]+=" $a"; fast[loom_qdq_unfused]+=" $b"
        if [ "$have_ort" = 1 ]; then
            read -r a b < <(ort_json "$work/out_${m}_ort_f32" "$work/${m}_f32.onnx" "$in")
            med[ort_f32]+=" $a"; fast[ort_f32]+=" $b"
            read -r a b < <(ort_json "$work/out_${m}_ort_qdq" "$work/${m}_qdq.onnx" "$in")
            med[ort_qdq]+=" $a"; fast[ort_qdq]+=" $b"
        fi
    done
    echo "-- $m"
    printf '%-18s %12s %12s\n' variant "median ms" "fastest ms"
    for n in loom_f32 loom_qdq_fused loom_qdq_unfused ort_f32 ort_qdq; do
        [ -n "${med[$n]:-}" ] || continue
        "$py" -c "import statistics,sys; a=sys.argv[2].split(); b=sys.argv[3].split()
print('%-18s %12.3f %12.3f' % (sys.argv[1], statistics.median(map(float,a)), min(map(float,b))))" \
            "$n" "${med[$n]}" "${fast[$n]}"
    done
    "$py" - "$work" "$m" <<'PY'
import glob, os, sys
import numpy as np
w, m = sys.argv[1], sys.argv[2]
def out(tag):
    f = glob.glob(os.path.join(w, f"out_{m}_{tag}", "*.npy"))
    return np.load(f[0]).ravel().astype(np.float64) if f else None
ref, unf = out("f32"), out("unfused")
for tag in ("fused", "unfused", "ort_qdq"):
    x = out(tag)
    if x is None:
        continue
    cos = float(x @ ref / np.linalg.norm(x) / np.linalg.norm(ref))
    d = float(np.abs(x - unf).max())
    print(f"{tag:10s} cosine with loom f32 {cos:.5f}; max |diff| from loom unfused QDQ {d:.4g}")
PY
    unset med fast
done
