#!/bin/bash
# Variants, cascades and the audit trail end to end (issue 20) with the digits fixtures: bad
# QoS options exit 2 with one line; a "cloud" `loom serve` (full) and an "edge" one (lite,
# cascading to the cloud over HTTP); unsure digits go to the cloud ("lite>remote"), and with
# the cloud killed the edge answer stands ("lite>remote-failed") and the edge keeps serving;
# then crash safety: the edge, audited, is SIGKILLed under load from 4 curl loops; every
# request a client got an answer for has its record and `loom audit verify` passes; the same
# with keep-alive clients fast enough that records are journaled concurrently.
# Usage: test_qos_http.sh LOOM_BINARY SOURCE_ROOT. Skips (77) without curl or python3-numpy.
set -u
LOOM="$(realpath "$1")"
ROOT="$(realpath "$2")"
PY=/usr/bin/python3
if ! command -v curl >/dev/null || ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "SKIP: needs curl and python3-numpy"
    exit 77
fi
TMP=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
cd "$TMP" || exit 1
fail=0
pass=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
ok() { echo "ok   $*"; pass=$((pass + 1)); }
D="$ROOT/tests/fixtures/digits"

# ---- bad options: one line, exit 2 ------------------------------------------------------
for spec in "threshold=1.5:threshold must be in" "mode=fast:mode must be" \
            "confidence_output=nope,mode=cascade:no output named 'nope'" \
            "variant=medium:variant must be full or lite"; do
    opt=${spec%%:*}
    want=${spec#*:}
    "$LOOM" serve --port 0 --model "d=$D/full.onnx:lite=$D/lite.onnx,$opt" >out 2>err; rc=$?
    [ $rc -eq 2 ] && [ "$(wc -l <err)" -eq 1 ] && grep -q "$want" err && ok "$opt: exit 2" \
        || bad "$opt: exit $rc: $(cat err)"
done

# start NAME ARGS...: run loom serve in the background, set PORT_<NAME> and PID_<NAME>
start() {
    local name=$1
    shift
    "$LOOM" serve --port 0 "$@" >"$name.out" 2>"$name.err" &
    local pid=$!
    PIDS="$PIDS $pid"
    local port=""
    for _ in $(seq 1 600); do
        port=$(sed -n 's|^loom serve: listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$name.out")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -z "$port" ] && { echo "FAIL $name did not start: $(cat "$name.err")"; exit 1; }
    eval "PORT_$name=$port PID_$name=$pid"
}

# Request bodies: digit images of the held-out set, one per file.
"$PY" - "$D" <<'PYEOF'
import json, sys, numpy as np
x = np.load(sys.argv[1] + "/test_x.npy")
for i in range(40):
    body = {"id": f"img{i}", "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                                        "data": x[i].tolist()}]}
    open(f"req{i}.json", "w").write(json.dumps(body))
PYEOF

start cloud --model "digits=$D/full.onnx"
start edge --model "digits=$D/lite.onnx:variant=lite,mode=cascade,threshold=0.99,remote=http://127.0.0.1:$PORT_cloud/v2/models/digits,remote_timeout_ms=2000"
infer() { curl -s -H 'Content-Type: application/json' "http://127.0.0.1:$1/v2/models/digits/infer" -d @"$2"; }
paths=""
for i in $(seq 0 9); do
    paths="$paths $(infer "$PORT_edge" req$i.json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["parameters"]["path"])')"
done
echo "$paths" | grep -q "lite>remote" && ok "unsure digits go to the cloud:$paths" \
    || bad "no escalation to the cloud:$paths"
kill -KILL "$PID_cloud"
out=$(infer "$PORT_edge" req0.json)
echo "$out" | grep -q '"path":"lite>remote-failed"' && echo "$out" | grep -q '"edge_answer":true' \
    && ok "cloud down: the edge answer stands, marked" || bad "cloud down: $out"
out=$(infer "$PORT_edge" req1.json)
echo "$out" | grep -q '"outputs"' && ok "the edge keeps serving" || bad "edge after cloud: $out"
kill -TERM "$PID_edge"
wait "$PID_edge" 2>/dev/null

# ---- crash safety: SIGKILL under load ---------------------------------------------------
start audited --model "digits=$D/full.onnx:lite=$D/lite.onnx,mode=auto" --audit audit.db
for c in 1 2 3 4; do
    (
        n=0
        while true; do
            i=$(( (n * 4 + c) % 40 ))
            id="c$c-$n"
            sed "s/\"img[0-9]*\"/\"$id\"/" req$i.json >body$c.json
            if curl -s -m 5 -H 'Content-Type: application/json' \
                "http://127.0.0.1:$PORT_audited/v2/models/digits/infer" -d @body$c.json \
                | grep -q '"outputs"'; then
                echo "$id" >>answered$c.txt
            fi
            n=$((n + 1))
        done
    ) &
    PIDS="$PIDS $!"
done
sleep 3
kill -KILL "$PID_audited"
sleep 0.5
for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
wait 2>/dev/null
cat answered*.txt 2>/dev/null | sort -u >answered.txt
n_answered=$(wc -l <answered.txt)
[ "$n_answered" -gt 10 ] && ok "$n_answered requests answered before SIGKILL" \
    || bad "only $n_answered answered under load"
"$LOOM" audit verify audit.db >verify.out; rc=$?
[ $rc -eq 0 ] && ok "verify after SIGKILL: $(cat verify.out)" || bad "verify: exit $rc: $(cat verify.out)"
"$LOOM" audit query audit.db --model digits | "$PY" -c '
import json, sys
ids = {json.loads(l)["request_id"] for l in sys.stdin}
missing = [i.strip() for i in open("answered.txt") if i.strip() not in ids]
print(len(missing), "missing", missing[:5])
sys.exit(1 if missing else 0)' >missing.out; rc=$?
[ $rc -eq 0 ] && ok "every answered request has its record" || bad "records missing: $(cat missing.out)"
# The same at a rate where the workers journal records concurrently and the ingester moves
# many per transaction (keep-alive clients in threads, thousands of requests a second):
# SIGKILL, then every answered id has its record (in the database or the journal it left).
start grouped --model "digits=$D/full.onnx" --audit grouped.db
"$PY" - "$PORT_grouped" "$PID_grouped" >grouped.out 2>&1 <<'PYEOF'
import http.client, json, os, signal, sys, threading, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
answered, stop = [[] for _ in range(8)], False
def client(c):
    conn, n = http.client.HTTPConnection("127.0.0.1", port, timeout=5), 0
    while not stop:
        rid, n = f"g{c}-{n}", n + 1
        body = json.dumps({"id": rid, "inputs": [{"name": "pixels", "datatype": "FP32",
                           "shape": [1, 64], "data": [float((n + c + i) % 17) for i in range(64)]}]})
        try:
            conn.request("POST", "/v2/models/digits/infer", body)
            r = conn.getresponse()
            if r.status == 200 and b'"outputs"' in r.read():
                answered[c].append(rid)
        except Exception:
            return
threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
for t in threads:
    t.start()
time.sleep(3)
os.kill(pid, signal.SIGKILL)
stop = True
for t in threads:
    t.join()
with open("grouped_answered.txt", "w") as f:
    f.writelines(i + "\n" for a in answered for i in a)
PYEOF
wait "$PID_grouped" 2>/dev/null
n_answered=$(wc -l <grouped_answered.txt)
[ "$n_answered" -gt 100 ] && ok "$n_answered requests answered by keep-alive clients before SIGKILL" \
    || bad "only $n_answered answered by keep-alive clients: $(cat grouped.out)"
"$LOOM" audit verify grouped.db >verify.out; rc=$?
[ $rc -eq 0 ] && ok "verify after SIGKILL (grouped): $(cat verify.out)" \
    || bad "verify (grouped): exit $rc: $(cat verify.out)"
"$LOOM" audit query grouped.db --model digits | "$PY" -c '
import json, sys
ids = {json.loads(l)["request_id"] for l in sys.stdin}
missing = [i.strip() for i in open("grouped_answered.txt") if i.strip() not in ids]
print(len(missing), "missing", missing[:5])
sys.exit(1 if missing else 0)' >missing.out; rc=$?
[ $rc -eq 0 ] && ok "every answered request has its record (grouped)" \
    || bad "records missing (grouped): $(cat missing.out)"
"$LOOM" audit verify /nonexistent.db >out 2>err; rc=$?
[ $rc -eq 2 ] && ok "verify of a missing database: exit 2" || bad "missing db: exit $rc"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
