#!/bin/bash
# Serving figures (issue 19; docs/serve.md): generates a BERT-tiny-sized encoder (4 layers,
# hidden 256, 4 heads, FFN 1024, sequence 64), the CNN fixture and a trivial model, all with a
# symbolic batch dimension, into OUT (default /tmp/loom-serve-bench; never committed), then
#   1. the ceiling: `loom run --dim batch=B` at B = 1..32, samples/s per batch size;
#   2. max QPS with p99 <= 50 ms under open-loop Poisson load, batching on vs off;
#   3. per-request overhead over HTTP on the trivial model, cache hits over HTTP and in process.
# Usage: bench/bench_serve.sh [BUILD_DIR] [OUT]. Prints figures; asserts nothing about time.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$root/build}")
out=${2:-/tmp/loom-serve-bench}
LOOM="$build/tools/loom"
STEP=${LOOM_BENCH_STEP_S:-4}
mkdir -p "$out"
cd "$out"
/usr/bin/python3 - "$root" <<'PY'
import os, sys
import numpy as np, onnx
from onnx import helper, TensorProto
sys.path.insert(0, os.path.join(sys.argv[1], 'tests', 'fixtures'))
from make_fixtures import transformer_encoder
def symbolic_batch(m):
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = 'batch'
    return m
if not os.path.exists('bert_tiny.onnx'):
    m, _, _ = transformer_encoder(np.random.default_rng(7), 4, 256, 4, 64, 30522, 1024,
                                  batch=1, name='bert_tiny')
    onnx.save(symbolic_batch(m), 'bert_tiny.onnx')
onnx.save(symbolic_batch(onnx.load(os.path.join(sys.argv[1], 'tests/fixtures/cnn/model.onnx'))),
          'cnn.onnx')
g = helper.make_graph([helper.make_node('Add', ['x', 'one'], ['y'])], 'trivial',
                      [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['batch', 4])],
                      [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['batch', 4])],
                      [helper.make_tensor('one', TensorProto.FLOAT, [1], [1.0])])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]), 'trivial.onnx')
PY
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== 1. ceiling: direct runs (loom run --dim batch=B --repeat 30), median latency"
for model in bert_tiny cnn; do
    for b in 1 2 4 8 16 32; do
        "$LOOM" run "$model.onnx" --dim batch=$b --repeat 30 --warmup 3 --json >run.json 2>/dev/null
        /usr/bin/python3 - "$model" "$b" <<'PY'
import json, sys
r = json.load(open('run.json'))
def find(o, keys):
    if isinstance(o, dict):
        for k in keys:
            if k in o and isinstance(o[k], (int, float)):
                return o[k]
        for v in o.values():
            x = find(v, keys)
            if x is not None:
                return x
    return None
ms = find(r, ['median'])
b = int(sys.argv[2])
print(f"  {sys.argv[1]:10s} batch {b:3d}: {ms:8.2f} ms  {b / ms * 1e3:8.1f} samples/s")
PY
    done
done
serve() { # NAME OPTIONS -> starts a server, sets PORT and PID
    "$LOOM" serve --model "$1=$out/$1.onnx:$2" --port 0 --workers "${WORKERS:-2}" \
        >serve.out 2>serve.err &
    PID=$!
    PORT=""
    for _ in $(seq 1 600); do
        PORT=$(sed -n 's|^loom serve: listening on http://127.0.0.1:\([0-9]*\)$|\1|p' serve.out)
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "server did not start: $(cat serve.err)"; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }
echo "== 2. max QPS with p99 <= 50 ms, open-loop Poisson, binary tensors (step ${STEP} s)"
for model in bert_tiny cnn; do
    for mb in 32 1; do
        serve "$model" "max_batch=$mb,latency_ms=50,warm=1"
        echo "-- $model, max_batch=$mb: loom loadgen http://127.0.0.1:PORT/v2/models/$model --find-max-qps --p99 50 --binary --duration $STEP"
        "$LOOM" loadgen "http://127.0.0.1:$PORT/v2/models/$model" --find-max-qps --p99 50 \
            --binary --duration "$STEP" --quiet
        stop
    done
done
echo "== 3. overhead: trivial model (x + 1 on [1, 4]), closed loop, 1 client, 5 s"
serve trivial "max_batch=8"
echo "-- HTTP, JSON, no cache"
"$LOOM" loadgen "http://127.0.0.1:$PORT/v2/models/trivial" --concurrency 1 --duration 5 --quiet
stop
serve trivial "max_batch=8,cache_mb=16"
echo "-- HTTP, JSON, every request a cache hit (--distinct 1)"
"$LOOM" loadgen "http://127.0.0.1:$PORT/v2/models/trivial" --concurrency 1 --duration 5 \
    --distinct 1 --quiet
stop
echo "-- in process, no cache"
"$LOOM" loadgen "$out/trivial.onnx" --concurrency 1 --duration 5 --quiet
echo "-- in process, every request a cache hit"
"$LOOM" loadgen "$out/trivial.onnx" --concurrency 1 --duration 5 --distinct 1 --cache-mb 16 \
    --quiet
echo "-- direct loom_plan_run of the trivial model (loom run --repeat 2000)"
"$LOOM" run trivial.onnx --dim batch=1 --repeat 2000 --json 2>/dev/null | \
    /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); print('  direct run:', r['latency_ms'])"
