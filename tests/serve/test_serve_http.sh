#!/bin/bash
# `loom serve` end to end: starts it on a free loopback port with the CNN fixture, talks to it
# with curl (KServe v2: health, metadata, infer with JSON and binary tensors, metrics), checks
# every answer against `loom run` on the same inputs, sends malformed requests (each must get
# its 4xx and a JSON error naming the problem), many requests at once, then SIGTERM while
# requests are in flight: each is answered, the server exits 0. Bad usage exits 2.
# Usage: test_serve_http.sh LOOM_BINARY SOURCE_ROOT. Skips (77) without curl or python3-numpy.
set -u
LOOM="$(realpath "$1")"
ROOT="$(realpath "$2")"
PY=/usr/bin/python3
if ! command -v curl >/dev/null || ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "SKIP: needs curl and python3-numpy"
    exit 77
fi
TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
cd "$TMP" || exit 1
fail=0
pass=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
ok() { echo "ok   $*"; pass=$((pass + 1)); }
MODEL="$ROOT/tests/fixtures/cnn/model.onnx"

# ---- bad usage --------------------------------------------------------------------------
"$LOOM" serve >out 2>err; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <err)" -eq 1 ] && grep -q "no model" err && ok "no model: exit 2" \
    || bad "no model: exit $rc: $(cat err)"
"$LOOM" serve --model m=/nonexistent/model.onnx --port 0 >out 2>err; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <err)" -eq 1 ] && grep -q "nonexistent" err \
    && ok "missing model file: exit 2" || bad "missing model file: exit $rc: $(cat err)"
"$LOOM" serve --model "m=$MODEL:max_batch=0" >out 2>err; rc=$?
[ $rc -eq 2 ] && grep -q "max_batch" err && ok "bad model option: exit 2" \
    || bad "bad model option: exit $rc: $(cat err)"
"$LOOM" serve --model "m=$MODEL:colour=red" >out 2>err; rc=$?
[ $rc -eq 2 ] && grep -q "unknown option 'colour'" err && ok "unknown model option: exit 2" \
    || bad "unknown model option: exit $rc: $(cat err)"

# ---- start ------------------------------------------------------------------------------
"$LOOM" serve --model "cnn=$MODEL:max_batch=4,cache_mb=8" --port 0 --max-body 200000 \
    >server.out 2>server.err &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 600); do
    PORT=$(sed -n 's|^loom serve: listening on http://127.0.0.1:\([0-9]*\)$|\1|p' server.out)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ]; then
    echo "FAIL the server did not start: $(cat server.err)"
    exit 1
fi
ok "listening on port $PORT"
URL="http://127.0.0.1:$PORT"

# A second server on the same port cannot bind: runtime failure, exit 1.
"$LOOM" serve --model "cnn=$MODEL" --port "$PORT" >out 2>err; rc=$?
[ $rc -eq 1 ] && grep -q "cannot listen" err && ok "port in use: exit 1" \
    || bad "port in use: exit $rc: $(cat err)"

# ---- health and metadata ----------------------------------------------------------------
get() { # PATH -> prints "STATUS BODY"
    curl -s -o body -w '%{http_code}' "$URL$1"
}
[ "$(get /v2/health/live)" = 200 ] && grep -q '"live": *true' body && ok "live" || bad "live"
[ "$(get /v2/health/ready)" = 200 ] && ok "ready" || bad "ready"
[ "$(get /v2)" = 200 ] && grep -q binary_tensor_data body && ok "server metadata" \
    || bad "server metadata: $(cat body)"
st=$(get /v2/models/cnn)
if [ "$st" = 200 ] && "$PY" - <<'PY'
import json
m = json.load(open('body'))
assert m['name'] == 'cnn' and m['versions'] == ['1'], m
assert m['inputs'] == [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 3, 32, 32]}], m
assert m['outputs'] == [{'name': 'logits', 'datatype': 'FP32', 'shape': [-1, 10]}], m
PY
then ok "model metadata, -1 for the batch"; else bad "model metadata: $st $(cat body)"; fi
[ "$(get /v2/models/cnn/versions/1)" = 200 ] && ok "versioned metadata" || bad "versioned metadata"
[ "$(get /v2/models/cnn/ready)" = 200 ] && ok "model ready" || bad "model ready"
[ "$(get /v2/models/nope)" = 404 ] && grep -q '"error"' body && ok "unknown model metadata 404" \
    || bad "unknown model metadata"
[ "$(get /v2/models/cnn/versions/9/ready)" = 404 ] && ok "unknown version 404" \
    || bad "unknown version"
[ "$(get /v2/nothing)" = 404 ] && ok "unknown endpoint 404" || bad "unknown endpoint"

# ---- answers against `loom run` ---------------------------------------------------------
# The fixture's input has 2 rows; loom run gives the reference for both.
"$PY" - "$ROOT/tests/fixtures/cnn/input_x.npy" <<'PY'
import json, sys
import numpy as np
x = np.load(sys.argv[1]).astype(np.float32)
np.save('x2.npy', x)
def req(a, rid, nested=False):
    data = a.tolist() if nested else a.ravel().tolist()
    return {'id': rid, 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': list(a.shape),
                                   'data': data}]}
json.dump(req(x, 'both'), open('req2.json', 'w'))
json.dump(req(x[0:1], 'row0', nested=True), open('req_row0.json', 'w'))
json.dump(req(x[1:2], 'row1'), open('req_row1.json', 'w'))
# Binary: the JSON header then the raw float32 bytes; outputs asked for in binary.
h = json.dumps({'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [1, 3, 32, 32],
                            'parameters': {'binary_data_size': 3 * 32 * 32 * 4}}],
                'outputs': [{'name': 'logits', 'parameters': {'binary_data': True}}]}).encode()
open('req_bin.bin', 'wb').write(h + x[1:2].tobytes())
open('req_bin.len', 'w').write(str(len(h)))
open('req_short.bin', 'wb').write(h + x[1:2].tobytes()[:100])
PY
mkdir -p ref
"$LOOM" run "$MODEL" -i x=x2.npy -o ref >/dev/null 2>run.err || bad "loom run: $(cat run.err)"

post() { # FILE [extra curl args] -> status; body in ./body
    local f="$1"
    shift
    curl -s -o body -D headers -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "@$f" "$@" "$URL/v2/models/cnn/infer"
}
check_json() { # NAME ROWS...: body's logits equal the reference rows
    "$PY" - "$@" <<'PY'
import json, sys
import numpy as np
ref = np.load('ref/logits.npy')
rows = [int(r) for r in sys.argv[2:]]
r = json.load(open('body'))
o = [t for t in r['outputs'] if t['name'] == 'logits'][0]
assert o['datatype'] == 'FP32' and o['shape'] == [len(rows), 10], o['shape']
got = np.array(o['data'], dtype=np.float32).reshape(o['shape'])
assert np.allclose(got, ref[rows], rtol=1e-4, atol=1e-5), (got, ref[rows])
PY
}
[ "$(post req2.json)" = 200 ] && check_json both 0 1 && grep -q '"id":"both"' body \
    && ok "infer, 2 rows, equals loom run" || bad "infer 2 rows: $(head -c 300 body)"
[ "$(post req_row0.json)" = 200 ] && check_json row0 0 && ok "infer, nested data, row 0" \
    || bad "infer row 0: $(head -c 300 body)"
[ "$(post req_row1.json)" = 200 ] && check_json row1 1 && ok "infer, row 1" \
    || bad "infer row 1: $(head -c 300 body)"
# Again: a cache hit, same answer.
[ "$(post req_row1.json)" = 200 ] && check_json row1 1 && ok "repeat (cache) same answer" \
    || bad "repeat: $(head -c 300 body)"
# Binary both ways.
st=$(curl -s -o body -D headers -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
    -H "Inference-Header-Content-Length: $(cat req_bin.len)" --data-binary @req_bin.bin \
    "$URL/v2/models/cnn/infer")
if [ "$st" = 200 ] && "$PY" - <<'PY'
import json, re
import numpy as np
hdr = open('headers').read()
n = int(re.search(r'(?i)inference-header-content-length: *(\d+)', hdr).group(1))
raw = open('body', 'rb').read()
meta = json.loads(raw[:n])
o = meta['outputs'][0]
assert o['parameters']['binary_data_size'] == 40 and 'data' not in o, o
got = np.frombuffer(raw[n:], dtype=np.float32).reshape(1, 10)
ref = np.load('ref/logits.npy')[1:2]
assert np.allclose(got, ref, rtol=1e-4, atol=1e-5)
PY
then ok "binary tensors in and out"; else bad "binary: $st $(head -c 300 body)"; fi

# Many at once: every one answered 200 with its row.
pids=""
for i in $(seq 1 24); do
    f=req_row$((i % 2)).json
    (curl -s -o "par$i.out" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "@$f" "$URL/v2/models/cnn/infer" >"par$i.st") &
    pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids
n200=$(cat par*.st | grep -o 200 | wc -l)
[ "$n200" -eq 24 ] && ok "24 concurrent requests answered" || bad "concurrent: $n200 of 24"

# ---- malformed requests -----------------------------------------------------------------
expect() { # NAME STATUS TEXT FILE [curl args]
    local name="$1" want="$2" text="$3" f="$4"
    shift 4
    local st
    st=$(post "$f" "$@")
    if [ "$st" = "$want" ] && grep -qF -- "$text" body && grep -q '^{"error":' body; then
        ok "$name: $want"
    else
        bad "$name: $st $(head -c 300 body)"
    fi
}
printf '{"inputs": [' >bad1.json
expect "malformed JSON" 400 "malformed JSON" bad1.json
echo '{"inputs":[{"name":"y","datatype":"FP32","shape":[1,3,32,32],"data":[]}]}' >bad2.json
expect "wrong input name" 400 "no input named 'y'" bad2.json
echo '{"inputs":[{"name":"x","datatype":"INT64","shape":[1,3,32,32],"data":[]}]}' >bad3.json
expect "wrong datatype" 400 "datatype INT64, the model wants FP32" bad3.json
echo '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,32,31],"data":[]}]}' >bad4.json
expect "wrong shape" 400 "0 data elements" bad4.json
"$PY" -c "
import json; json.dump({'inputs':[{'name':'x','datatype':'FP32','shape':[1,3,32,31],
'data':[0.0]*(3*32*31)}]}, open('bad5.json','w'))"
expect "wrong shape, right count" 400 "has shape [1,3,32,31]" bad5.json
"$PY" -c "
import json; json.dump({'inputs':[{'name':'x','datatype':'FP32','shape':[20,3,32,32],
'data':[0.123456789]*(20*3*32*32)}]}, open('bad6.json','w'))"
# Sent whole before the answer is read: the server reads and drops it so that the 413 is not
# lost to a reset connection (CI once saw curl get no answer at all here).
expect "body over the limit" 413 "over the limit" bad6.json
for _ in 1 2 3 4 5 6 7 8 9 10; do post bad6.json >/dev/null; done
[ "$(post bad6.json)" = 413 ] && [ "$(post bad6.json)" = 413 ] \
    && ok "body over the limit, again and again: 413" || bad "body over the limit, repeated"
st=$(curl -s -o body -w '%{http_code}' --data-binary @bad6.json "$URL/v2/models/cnn")
[ "$st" = 413 ] && grep -q "over the limit" body && ok "body over the limit elsewhere: 413" \
    || bad "body over the limit at the metadata endpoint: $st $(head -c 200 body)"
# A client that waits for "100 Continue" is answered before it sends the body; so is one that
# announces far more than the server would ever read.
expect "body over the limit, Expect: 100-continue" 413 "over the limit" bad6.json \
    -H "Expect: 100-continue"
huge=$("$PY" - "$PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"POST /v2/models/cnn/infer HTTP/1.1\r\nHost: x\r\n"
          b"Content-Length: 1000000000000\r\n\r\n{\"in")
print(s.recv(4096).decode("latin-1").split("\r\n")[0])
PY
)
case "$huge" in *" 413 "*) ok "1 TB announced: 413 at once" ;; *) bad "1 TB announced: $huge" ;; esac
echo '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,32,32],"data":[1]}],"outputs":[{"name":"nope"}]}' >bad7.json
expect "too few elements" 400 "1 data elements" bad7.json
"$PY" -c "
import json; json.dump({'inputs':[{'name':'x','datatype':'FP32','shape':[1,3,32,32],
'data':[0.0]*(3*32*32)}],'outputs':[{'name':'nope'}]}, open('bad8.json','w'))"
expect "unknown output" 400 "no output named 'nope'" bad8.json
expect "binary shorter than announced" 400 "shorter than announced" req_short.bin \
    -H "Inference-Header-Content-Length: $(cat req_bin.len)"
expect "header length over the body" 400 "Inference-Header-Content-Length" req_row0.json \
    -H "Inference-Header-Content-Length: 99999999"
st=$(curl -s -o body -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @req_row0.json "$URL/v2/models/nope/infer")
[ "$st" = 404 ] && grep -q '"error"' body && ok "infer on an unknown model: 404" \
    || bad "unknown model infer: $st"
[ "$(get /v2/models/cnn/infer)" = 405 ] && ok "GET on infer: 405" || bad "GET on infer"
# A client that goes away mid-request: the server keeps serving.
(printf 'POST /v2/models/cnn/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"inp' \
    >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null
[ "$(post req_row0.json)" = 200 ] && ok "serving after a client went away" \
    || bad "after a client went away"
# Thousands of idle connections (more than the old default limit of 1024): others are still
# served while they stay open, and the server's descriptors return to what they were.
fds_before=$(ls "/proc/$SERVER_PID/fd" | wc -l)
idle=$("$PY" - "$PORT" "$URL" <<'PY'
import resource, socket, subprocess, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(hard, 4096)
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
n = min(2000, want - 64)
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) for _ in range(n)]
r = subprocess.run(["curl", "-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}",
                    sys.argv[2] + "/v2/health/ready"], capture_output=True, text=True)
print(n, r.stdout)
for s in socks:
    s.close()
PY
)
case "$idle" in
    *" 200") ok "served with ${idle% *} idle connections open" ;;
    *) bad "with idle connections open: '$idle'" ;;
esac
for _ in $(seq 1 50); do
    [ "$(ls "/proc/$SERVER_PID/fd" | wc -l)" -le "$fds_before" ] && break
    sleep 0.1
done
fds_after=$(ls "/proc/$SERVER_PID/fd" | wc -l)
[ "$fds_after" -le "$fds_before" ] && ok "descriptors back to $fds_after after the idle clients left" \
    || bad "descriptors: $fds_before before the idle clients, $fds_after after"

# ---- metrics ----------------------------------------------------------------------------
st=$(curl -s -o metrics.txt -D headers -w '%{http_code}' "$URL/metrics")
if [ "$st" = 200 ] && grep -qi 'content-type: text/plain; version=0.0.4' headers && "$PY" - <<'PY'
import re
t = open('metrics.txt').read()
assert '# TYPE loom_requests_total counter' in t
assert '# TYPE loom_request_duration_seconds histogram' in t
assert '# TYPE loom_batch_size histogram' in t
assert re.search(r'^loom_batch_size_bucket\{model="cnn",version="1",le="\+Inf"\} \d+$', t, re.M)
assert re.search(r'^loom_cache_hits_total\{model="cnn",version="1"\} [1-9]', t, re.M)
assert re.search(r'^loom_device_busy_seconds_total\{device="cpu:0"\} ', t, re.M)
ok = int(re.search(r'^loom_requests_total\{model="cnn",version="1",status="ok"\} (\d+)$', t, re.M).group(1))
assert ok == 30, ok  # 5 single (binary included) + 24 concurrent + 1 after the disconnect
bad = int(re.search(r'^loom_requests_total\{model="cnn",version="1",status="bad_request"\} (\d+)$', t, re.M).group(1))
assert bad >= 9, bad
# Histogram buckets are cumulative and end with the count.
for name in ('loom_request_duration_seconds', 'loom_batch_size'):
    vals = [int(v) for v in re.findall(r'^%s_bucket\{model="cnn"[^}]*\} (\d+)$' % name, t, re.M)]
    cnt = int(re.search(r'^%s_count\{model="cnn"[^}]*\} (\d+)$' % name, t, re.M).group(1))
    assert vals == sorted(vals) and vals[-1] == cnt, (name, vals, cnt)
PY
then ok "metrics in the Prometheus text format"; else bad "metrics: $st"; head -40 metrics.txt; fi

# ---- loom loadgen against the server: every request answered once ----------------------
# The open loop drives its connections from one thread with epoll: with 2 connections for 300
# requests at 2000/s most requests wait for a connection to come free; JSON and binary bodies;
# and the closed loop. Each must report every request sent as answered ok.
lg_check() { # NAME N [loadgen args]
    local name=$1 n=$2
    shift 2
    if "$LOOM" loadgen "$URL/v2/models/cnn" --json --quiet "$@" >lg.json 2>lg.err &&
        "$PY" - "$n" <<'PY'
import json, sys
r, n = json.load(open('lg.json')), int(sys.argv[1])
assert r['sent'] == n and r['ok'] == n and not r['errors'], r
# Latency runs from the scheduled arrival (at or after the run's start) to the answer (over
# HTTP: the kernel's receive stamp, moved from the real-time clock to the monotonic one), so
# it is positive and no longer than the run itself (its last answer, recorded after the stamp).
lat = r['latency_ms']
assert 0 < lat['p50'] <= lat['p99'] <= lat['max'] <= r['seconds'] * 1000 + 0.01, (lat, r)
PY
    then ok "loadgen $name: $n sent, $n ok"; else bad "loadgen $name: $(cat lg.json lg.err)"; fi
}
lg_check "open loop, JSON, 2 connections" 300 --rate 2000 --requests 300 --connections 2
lg_check "open loop, binary" 300 --rate 1000 --requests 300 --binary
lg_check "closed loop, 3 clients" 200 --concurrency 3 --requests 200
lg_check "open loop, clients at the server's priority" 200 --rate 1000 --requests 200 \
    --client-nice 0
# In process, with one-thread CPU runs (two batches at once on two cores) and the server's
# trace: every request answered, and the trace holds a span per request and the batches that
# answered them (rows summing to the requests).
if "$LOOM" loadgen "$MODEL" --cpu-threads 1 --rate 400 --requests 200 --trace lg-trace.json \
    --json --quiet >lg.json 2>lg.err && "$PY" - <<'PY'
import json
r = json.load(open('lg.json'))
assert r['sent'] == 200 and r['ok'] == 200 and not r['errors'], r
ev = json.load(open('lg-trace.json'))
batches = [e for e in ev if e.get('cat') == 'batch']
ends = [e for e in ev if e.get('cat') == 'request' and e.get('ph') == 'e']
assert len(ends) == 200 and all(e['args']['status'] == 'ok' for e in ends), len(ends)
assert sum(b['args']['requests'] for b in batches) == 200, batches[:3]
PY
then ok "loadgen in process, --cpu-threads 1 --trace: 200 answered, traced"
else bad "loadgen in process --cpu-threads 1 --trace: $(cat lg.json lg.err)"; fi
# --cpu-threads auto: both ways measured first, the choice said in one line with the figures,
# then every request answered.
if "$LOOM" loadgen "$MODEL" --cpu-threads auto --rate 400 --requests 100 --json --quiet \
    >lg.json 2>lg.err && "$PY" - <<'PY'
import json, re
r = json.load(open('lg.json'))
assert r['sent'] == 100 and r['ok'] == 100 and not r['errors'], r
lines = [l for l in open('lg.err') if '--cpu-threads auto:' in l]
assert len(lines) == 1, open('lg.err').read()
assert re.search(r'auto: (1, one-thread runs|a thread per core)', lines[0]), lines[0]
# The figures of both ways, unless the machine has one core (nothing to choose).
assert re.search(r'[0-9]+ samples/s at batch [0-9]+ with [0-9]+ one-thread runs? at once, '
                 r'[0-9]+ at batch [0-9]+ with a thread per core', lines[0]) \
    or '1 core: nothing to choose' in lines[0], lines[0]
PY
then ok "loadgen --cpu-threads auto: measured, chose, 100 answered ($(grep -o 'auto: [^(]*' lg.err))"
else bad "loadgen --cpu-threads auto: $(cat lg.json lg.err)"; fi
"$LOOM" loadgen "$URL/v2/models/cnn" --rate 10 --requests 1 --client-nice 20 >/dev/null 2>err
rc=$?
[ $rc -eq 2 ] && grep -q "client-nice" err && ok "loadgen --client-nice 20: exit 2" \
    || bad "loadgen --client-nice 20: exit $rc: $(cat err)"

# ---- SIGTERM drains ---------------------------------------------------------------------
pids=""
for i in $(seq 1 10); do
    (curl -s -o "drain$i.out" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary @req2.json "$URL/v2/models/cnn/infer" >"drain$i.st"; echo $? >"drain$i.rc") &
    pids="$pids $!"
done
sleep 0.2
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
rc=$?
SERVER_PID=""
# shellcheck disable=SC2086
wait $pids
[ $rc -eq 0 ] && ok "SIGTERM: exit 0" || bad "SIGTERM: exit $rc $(cat server.err)"
answered=0
for i in $(seq 1 10); do
    st=$(cat "drain$i.st"); crc=$(cat "drain$i.rc")
    # Answered in full, or refused before being accepted (connection refused: curl 7, or 503).
    if [ "$st" = 200 ]; then answered=$((answered + 1));
    elif [ "$crc" = 7 ] || [ "$st" = 503 ]; then :;
    else bad "request $i during drain: status $st, curl $crc"; fi
done
ok "drain: $answered of 10 in-flight requests answered, none cut off"
grep -q "draining" server.err && ok "drain announced on stderr" || bad "no drain line"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
