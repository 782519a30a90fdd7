#!/bin/bash
# Loom against ONNX Runtime, side by side, on the same models, inputs and CPU thread count:
# a BERT-base-sized encoder (generated here by bench/make_bert.py, ~435 MB, never committed) and
# the CNN fixture (tests/fixtures/cnn). For each model it prints the median latency of
# `loom run MODEL --repeat N --json` (release build) and of ONNX Runtime through
# scripts/ort/run_ort.js, their ratio Loom/ORT, and how far the two outputs are apart. When Loom
# is slower, it prints Loom's time per op (the sum of the node times of each op type) beside
# ORT's, to say which ops lose. Prints figures only; asserts nothing about time.
#
# Usage: bench/ort_compare.sh [--repeat N] [--rounds R] [--threads T] [--models bert,cnn,...]
#                             [--build DIR] [--work DIR] [--loom PATH]
#   --repeat N   timed runs per invocation, after warm-up (default 20)
#   --rounds R   invocations per runtime, alternating Loom and ORT; the median of the per-round
#                medians is reported, which damps a busy machine (default 3)
#   --threads T  CPU threads of both (LOOM_CPU_THREADS for Loom, intraOpNumThreads for ORT;
#                default 2)
#   --models     any of bert, cnn, mlp, transformer (default bert,cnn)
#   --build DIR  Loom's release build (default build-release; configured when missing)
#   --work DIR   where the generated BERT and the outputs go (default DIR/ort-compare)
#   --loom PATH  time this loom binary instead of building one in --build
# Needs node, npm (installs onnxruntime-node into scripts/ort/ when missing) and Debian's
# python3-onnx + numpy (/usr/bin/python3).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repeat=20 rounds=3 threads=2 models=bert,cnn build="$src/build-release" work="" loom=""
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) repeat="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --build) build="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --loom) loom="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "ort_compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
work="${work:-$build/ort-compare}"
py=/usr/bin/python3
ort_dir="$src/scripts/ort"
run_ort="$ort_dir/run_ort.js"

# ---- Loom's release build and ONNX Runtime -----------------------------------------------------
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ -z "$loom" ]; then
    if [ -f "$build/build.ninja" ]; then
        configure=(meson configure "$build" -Dbuildtype=release)
    else
        configure=(meson setup "$build" "$src" -Dbuildtype=release)
    fi
    if ! { "${configure[@]}" && meson compile -C "$build" tools/loom:executable; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "ort_compare.sh: building Loom failed" >&2
        exit 1
    fi
    loom="$build/tools/loom"
    build_kind="release build"
else
    build_kind="given with --loom"
fi
if ! (cd "$ort_dir" && node -e 'require("onnxruntime-node")') 2>/dev/null; then
    echo "== installing onnxruntime-node into $ort_dir/node_modules" >&2
    (cd "$ort_dir" && npm ci --ignore-scripts --no-audit --no-fund >&2)
fi
"$py" -c 'import onnx, numpy' 2>/dev/null ||
    { echo "ort_compare.sh: $py lacks onnx or numpy (apt-get install python3-onnx python3-numpy)" >&2; exit 2; }

mkdir -p "$work"
model_dir() {
    case "$1" in
        bert)
            # Regenerated only when its generator changed (it takes a while and 2.5 GB of memory).
            local stamp
            stamp="$(cat "$src/bench/make_bert.py" "$src/tests/fixtures/make_fixtures.py" | md5sum | cut -c1-32)"
            if [ ! -f "$work/bert/model.onnx" ] || [ "$(cat "$work/bert/.stamp" 2>/dev/null)" != "$stamp" ]; then
                echo "== generating the BERT-base-sized encoder into $work/bert" >&2
                "$py" "$src/bench/make_bert.py" "$work" >&2
                echo "$stamp" >"$work/bert/.stamp"
            fi
            echo "$work/bert" ;;
        cnn|mlp|transformer) echo "$src/tests/fixtures/$1" ;;
        *) echo "ort_compare.sh: unknown model '$1' (bert, cnn, mlp, transformer)" >&2; exit 2 ;;
    esac
}

# Median of the per-round medians, their range, and the fastest single run (latency_ms.min: the
# figure least disturbed by a busy machine), read from the JSON each runtime printed. Loom's
# output is read leniently: latency_ms.median (or latency_ms as a number, or the median of
# runs_ms).
summarise() { # KIND FILE...
    "$py" - "$@" <<'EOF'
import json, statistics, sys
kind, files = sys.argv[1], sys.argv[2:]
def find_latency(o):
    if isinstance(o, dict):
        l = o.get('latency_ms')
        if isinstance(l, dict) and isinstance(l.get('median'), (int, float)):
            return l['median']
        if isinstance(l, (int, float)):
            return l
        if isinstance(o.get('runs_ms'), list) and o['runs_ms']:
            return statistics.median(o['runs_ms'])
        for v in o.values():
            r = find_latency(v)
            if r is not None:
                return r
    if isinstance(o, list):
        for v in o:
            r = find_latency(v)
            if r is not None:
                return r
    return None
def find_min(o):
    if isinstance(o, dict):
        l = o.get('latency_ms')
        if isinstance(l, dict) and isinstance(l.get('min'), (int, float)):
            return l['min']
        for v in o.values():
            r = find_min(v)
            if r is not None:
                return r
    return None
meds, mins = [], []
for f in files:
    with open(f) as fh:
        o = json.load(fh)
    m = find_latency(o)
    if m is None:
        sys.exit(f'ort_compare.sh: no latency in {kind} output {f}')
    meds.append(m)
    mins.append(find_min(o) or m)
print(f'{statistics.median(meds):.3f} {min(meds):.3f} {max(meds):.3f} {min(mins):.3f}')
EOF
}

# Largest difference between the outputs the two runtimes wrote (same names, .npy).
compare_outputs() { # LOOM_DIR ORT_DIR
    "$py" - "$1" "$2" <<'EOF'
import os, sys
import numpy as np
a, b = sys.argv[1], sys.argv[2]
worst = []
for f in sorted(os.listdir(b)):
    if not f.endswith('.npy'):
        continue
    if not os.path.exists(os.path.join(a, f)):
        print(f'{f[:-4]}: Loom wrote none'); continue
    x, y = np.load(os.path.join(a, f)), np.load(os.path.join(b, f))
    if x.shape != y.shape:
        print(f'{f[:-4]}: shape {x.shape} vs {y.shape}'); continue
    d = np.abs(x.astype(np.float64) - y.astype(np.float64))
    out = np.count_nonzero(~(d <= 1e-4 + 1e-3 * np.abs(y.astype(np.float64))))
    worst.append(f'{f[:-4]}: max |diff| {d.max():.2e}, {out} of {d.size} outside atol 1e-4 + rtol 1e-3')
print('; '.join(worst) if worst else 'no outputs to compare')
EOF
}

# Loom's time per op type (sum over the nodes of that op, ms per run) beside ORT's, from
# `loom run --json` when it lists nodes with their times, else from `loom profile MODEL --json`.
per_op_table() { # LOOM_JSON ORT_PROFILE_JSON LOOM_TOTAL_MS ORT_TOTAL_MS
    "$py" - "$@" <<'EOF'
import json, sys
from collections import defaultdict
loom_file, ort_file = sys.argv[1], sys.argv[2]
TIME_KEYS = ('measured_ms', 'median_ms', 'ms', 'time_ms', 'mean_ms', 'duration_ms')
def node_lists(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if isinstance(v, list) and v and all(isinstance(n, dict) and 'op' in n for n in v):
                yield v
            else:
                yield from node_lists(v)
    elif isinstance(o, list):
        for v in o:
            yield from node_lists(v)
def node_ms(n):
    for k in TIME_KEYS:
        if isinstance(n.get(k), (int, float)):
            return n[k]
    if 'start_ms' in n and 'end_ms' in n:
        return n['end_ms'] - n['start_ms']
    if 'start_ns' in n and 'end_ns' in n:
        return (n['end_ns'] - n['start_ns']) / 1e6
    return None
loom_ops, loom_count = defaultdict(float), defaultdict(int)
with open(loom_file) as f:
    for nodes in node_lists(json.load(f)):
        if all(node_ms(n) is not None for n in nodes):
            for n in nodes:
                loom_ops[n['op']] += node_ms(n)
                loom_count[n['op']] += 1
            break
if not loom_ops:
    sys.exit(2)
with open(ort_file) as f:
    ort_ops = json.load(f).get('profile', {}).get('ms_per_run_by_op', {})
# ORT (optimisation level 'basic') rewrites MatMul + Add into Gemm; group the GEMM family so the
# totals compare like with like.
fam = ('MatMul', 'Gemm', 'FusedMatMul')
lt, ot = sum(loom_ops.values()), sum(ort_ops.values())
rows = sorted(set(loom_ops) | set(ort_ops), key=lambda k: -loom_ops.get(k, 0))
print(f'    {"op":<22} {"nodes":>5} {"Loom ms":>10} {"share":>6} {"ORT ms":>10} {"Loom/ORT":>9}')
def row(name, n, l, o):
    ratio = f'{l / o:9.2f}' if l and o else f'{"-":>9}'
    ls = f'{l:10.3f}' if l else f'{"-":>10}'
    os_ = f'{o:10.3f}' if o else f'{"-":>10}'
    share = f'{100 * l / lt:5.1f}%' if l else f'{"":>6}'
    print(f'    {name:<22} {n:>5} {ls} {share} {os_} {ratio}')
for k in rows:
    row(k, loom_count.get(k, 0) or '', loom_ops.get(k, 0), ort_ops.get(k, 0))
lf = sum(loom_ops.get(k, 0) for k in fam) + loom_ops.get('Add', 0)
of = sum(ort_ops.get(k, 0) for k in fam) + ort_ops.get('Add', 0)
row('[MatMul+Gemm+Add]', '', lf, of)
row('[sum of nodes]', sum(loom_count.values()), lt, ot)
EOF
}

# Builds bench/loom_node_times.c against the release build's libloom (once per run).
node_times_tool() {
    [ -x "$work/loom_node_times" ] && [ "$work/loom_node_times" -nt "$src/bench/loom_node_times.c" ] &&
        [ "$work/loom_node_times" -nt "$build/libloom.so" ] && return 0
    [ -f "$build/libloom.so" ] || meson compile -C "$build" >"$log" 2>&1 || return 1
    cc -std=c11 -O2 -I"$src/include" "$src/bench/loom_node_times.c" -L"$build" -lloom \
        -Wl,-rpath,"$build" -o "$work/loom_node_times" 2>"$out/loom.profile.err"
}

echo "== Loom vs ONNX Runtime: $(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== $threads threads each, $repeat timed runs per invocation, $rounds alternating rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== Loom's latency is loom run's (start of the run to its last node's end); ORT's is the wall time of"
echo "   session.run() from JavaScript, which adds the N-API layer (~0.1 ms: it dominates the tiny fixtures)"
echo "== Loom: $loom ($build_kind); ORT: onnxruntime-node $(cd "$ort_dir" && node -p 'require("onnxruntime-node").env.versions.node') (CPU EP, graph optimisation 'all', sequential, 1 inter-op thread)"
summary=()
IFS=, read -ra model_list <<<"$models"
for m in "${model_list[@]}"; do
    dir="$(model_dir "$m")"
    model="$dir/model.onnx"
    in_args=()
    for f in "$dir"/input_*.npy; do
        name="$(basename "$f" .npy)"
        in_args+=(-i "${name#input_}=$f")
    done
    out="$work/$m.out"
    rm -rf "$out"
    mkdir -p "$out/loom" "$out/ort"
    echo
    echo "== $m: $model ($(du -h "$model" | cut -f1))"
    loom_cmd=("$loom" run "$model" "${in_args[@]}" -o "$out/loom" --device cpu:0 --repeat "$repeat" --json)
    ort_cmd=(node "$run_ort" "$model" "${in_args[@]}" -o "$out/ort" --threads "$threads" --warmup 3 --repeat "$repeat" --json)
    echo "   LOOM_CPU_THREADS=$threads ${loom_cmd[*]}"
    echo "   ${ort_cmd[*]}"
    loom_json=() ort_json=() failed=0
    for r in $(seq 1 "$rounds"); do
        if ! LOOM_CPU_THREADS="$threads" "${loom_cmd[@]}" >"$out/loom.$r.json" 2>"$out/loom.$r.err"; then
            echo "   loom run failed: $(tail -n 3 "$out/loom.$r.err")"
            failed=1
            break
        fi
        loom_json+=("$out/loom.$r.json")
        "${ort_cmd[@]}" >"$out/ort.$r.json"
        ort_json+=("$out/ort.$r.json")
    done
    [ "${#ort_json[@]}" -gt 0 ] || "${ort_cmd[@]}" >"$out/ort.1.json"
    read -r om omin omax obest <<<"$(summarise ORT "${ort_json[@]:-$out/ort.1.json}")"
    if [ "$failed" = 1 ]; then
        printf '   %-6s median %9.3f ms (rounds %.3f..%.3f), fastest run %.3f ms\n' ORT "$om" "$omin" "$omax" "$obest"
        summary+=("$(printf '%-12s %10s %10.3f %9s %10s %10.3f %9s' "$m" failed "$om" - failed "$obest" -)")
        continue
    fi
    read -r lm lmin lmax lbest <<<"$(summarise Loom "${loom_json[@]}")"
    ratio="$(awk -v a="$lm" -v b="$om" 'BEGIN { printf "%.2f", a / b }')"
    best_ratio="$(awk -v a="$lbest" -v b="$obest" 'BEGIN { printf "%.2f", a / b }')"
    printf '   %-6s median %9.3f ms (rounds %.3f..%.3f), fastest run %.3f ms\n' Loom "$lm" "$lmin" "$lmax" "$lbest"
    printf '   %-6s median %9.3f ms (rounds %.3f..%.3f), fastest run %.3f ms\n' ORT "$om" "$omin" "$omax" "$obest"
    printf '   Loom/ORT %.2f (fastest runs: %.2f); outputs: %s\n' "$ratio" "$best_ratio" \
        "$(compare_outputs "$out/loom" "$out/ort")"
    summary+=("$(printf '%-12s %10.3f %10.3f %9s %10.3f %10.3f %9s' "$m" "$lm" "$om" "$ratio" "$lbest" "$obest" "$best_ratio")")

    if awk -v r="$ratio" 'BEGIN { exit !(r > 1.0) }'; then
        echo "   Loom is slower: time per op (ms per run, median node times; ORT at optimisation"
        echo "   level 'basic' so that its ops stay those of the model, MatMul+Add fused into Gemm):"
        "$py" -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2],"w"))' \
            "${loom_json[-1]}" "$out/loom.nodes.json"
        node "$run_ort" "$model" "${in_args[@]}" --threads "$threads" --warmup 2 --repeat "$repeat" --opt basic \
            --profile "$out/ort_profile" --json >"$out/ort.profile.json"
        if ! per_op_table "$out/loom.nodes.json" "$out/ort.profile.json" 2>/dev/null; then
            # `loom run --json` has no node times: ask `loom profile`, else time the nodes with
            # bench/loom_node_times.c (the C API's per-node timeline).
            named_inputs=()
            for ((k = 1; k < ${#in_args[@]}; k += 2)); do named_inputs+=("${in_args[$k]}"); done
            if LOOM_CPU_THREADS="$threads" "$loom" profile "$model" --device cpu:0 --repeat "$repeat" --json \
                    >"$out/loom.nodes.json" 2>"$out/loom.profile.err" &&
                    per_op_table "$out/loom.nodes.json" "$out/ort.profile.json" 2>/dev/null; then
                echo "   (Loom's node times from: loom profile $model --device cpu:0 --repeat $repeat --json)"
            elif node_times_tool && LOOM_CPU_THREADS="$threads" "$work/loom_node_times" "$model" "$repeat" 2 \
                    "${named_inputs[@]}" >"$out/loom.nodes.json" 2>"$out/loom.profile.err" &&
                    per_op_table "$out/loom.nodes.json" "$out/ort.profile.json"; then
                echo "   (Loom's node times from bench/loom_node_times.c: 'loom run --json' lists none)"
            else
                echo "   no per-node times: neither 'loom run --json', 'loom profile MODEL.onnx' nor bench/loom_node_times.c gave them"
                tail -n 2 "$out/loom.profile.err" | sed 's/^/   /'
            fi
        fi
    fi
done

echo
echo "== summary ($threads threads; latency in ms: median of the rounds' medians, and fastest single run)"
printf '%-12s %10s %10s %9s %10s %10s %9s\n' model 'Loom med' 'ORT med' Loom/ORT 'Loom min' 'ORT min' Loom/ORT
printf '%s\n' "${summary[@]}"
