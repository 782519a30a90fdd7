#!/bin/bash
# What a new user sees: two builds of loom side by side, every command with an empty cost-model
# cache (XDG_CACHE_HOME a new folder each time), two interleaved rounds. Per build and model
# (BERT-tiny and the CNN fixture from bench/bench_serve.sh's OUT folder): `loom run --dim
# batch=1 --repeat 50` (median, device busy times), `loom loadgen MODEL` in process at RATE
# (300 QPS for BERT-tiny, 20,000 for the CNN) for 6 s, and `loom serve` with `loom loadgen URL
# --binary` at the same rate. Prints figures; asserts nothing.
# Usage: bench/fresh_serve.sh LOOM_A LOOM_B MODELS_DIR   (e.g. /tmp/loom-serve-bench)
set -u
[ $# -eq 3 ] || { echo "usage: $0 LOOM_A LOOM_B MODELS_DIR" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); M=$(realpath "$3")
out=$(mktemp -d)
caches=()
trap 'rm -rf "$out" "${caches[@]}"' EXIT
fresh() { XDG_CACHE_HOME=$(mktemp -d); caches+=("$XDG_CACHE_HOME"); export XDG_CACHE_HOME; }
q() {
    /usr/bin/python3 -c 'import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit("no result (the server could not be reached)")
l = d["latency_ms"]
print("qps %.1f p50 %.2f p99 %.2f errors %s" % (d["achieved_qps"], l["p50"], l["p99"], d.get("errors")))'
}
port=18741
for round in 1 2; do
    for L in "$A" "$B"; do
        for model in bert_tiny cnn; do
            rate=300
            [ $model = cnn ] && rate=20000
            fresh
            echo "== round $round $L $model: loom run --dim batch=1 --repeat 50"
            (cd "$out" && "$L" run "$M/$model.onnx" --dim batch=1 --repeat 50 -o "$out/o" 2>&1 |
                grep -E "latency ms|busy")
            fresh
            echo "== round $round $L $model: loom loadgen in process --rate $rate --duration 6"
            "$L" loadgen "$M/$model.onnx" --rate $rate --duration 6 --max-batch 32 \
                --latency-ms 50 --json --quiet | q
            fresh
            echo "== round $round $L $model: loom serve + loom loadgen URL --rate $rate --duration 6"
            "$L" serve --model "m=$M/$model.onnx:max_batch=32,latency_ms=50" --port $port \
                >/dev/null 2>&1 &
            sp=$!
            for _ in $(seq 50); do
                curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
                sleep 0.2
            done
            "$L" loadgen "http://127.0.0.1:$port/v2/models/m" --rate $rate --duration 6 --binary \
                --json --quiet | q
            kill -TERM $sp
            wait $sp
        done
    done
done
