#!/bin/bash
# CPU per request of each thread, by thread name, while `loom loadgen` offers an open-loop load.
#
#   bench/thread_cpu.sh LOOM MODEL.onnx RATE SECONDS inproc|http [LOADGEN OPTIONS...]
#
# inproc: `loom loadgen MODEL.onnx --rate RATE` (the serving C API in the load generator's own
# process, max_batch 32, latency target 50 ms); http: `loom serve` with MODEL as m (the same
# options) and `loom loadgen URL --binary --rate RATE`. LOOM_CPU_THREADS is passed through (1:
# one-thread runs). The threads' utime + stime (/proc/PID/task/*/stat) are read 1 s after the
# load starts and 1 s before it ends; each line is one thread name (summed over its threads):
# microseconds of CPU per answered request and CPUs used, then the context switches per
# request. Thread names: loom-serve (workers), loom-cpu (the CPU pool), MHD-* (the HTTP front
# end), exe/loom (the load generator's client and main threads).
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,14p' "$0"; exit 2; }
LOOM=$(realpath "$1"); MODEL=$(realpath "$2"); RATE=$3; DUR=$4; HOW=$5; shift 5
[ "${DUR%.*}" -ge 4 ] || { echo "thread_cpu: SECONDS must be at least 4" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
snap() { # PID -> "name cpu_ticks ctxt_switches" per thread name
    for t in /proc/$1/task/*; do
        echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14+$15}' "$t/stat") $(awk '/ctxt_switches/{s+=$2} END{print s}' "$t/status")"
    done 2>/dev/null | awk '{a[$1]+=$2; c[$1]+=$3} END{for (k in a) print k, a[k], c[k]}'
}
SP=""
if [ "$HOW" = http ]; then
    "$LOOM" serve --port 0 --model "m=$MODEL:max_batch=32,latency_ms=50" > "$tmp/serve.out" 2> "$tmp/serve.err" &
    SP=$!
    for _ in $(seq 100); do grep -q ':[0-9]*$' "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
    PORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$tmp/serve.out" | head -1)
    [ -n "$PORT" ] || { cat "$tmp/serve.err" >&2; exit 1; }
    "$LOOM" loadgen "http://127.0.0.1:$PORT/v2/models/m" --rate 20 --duration 1 --quiet --binary > /dev/null
    "$LOOM" loadgen "http://127.0.0.1:$PORT/v2/models/m" --binary --rate "$RATE" --duration "$DUR" --quiet --json "$@" > "$tmp/lg.json" &
else
    "$LOOM" loadgen "$MODEL" --max-batch 32 --latency-ms 50 --rate "$RATE" --duration "$DUR" --quiet --json "$@" > "$tmp/lg.json" &
fi
LP=$!
sleep 1
snap $LP > "$tmp/l0"; [ -n "$SP" ] && snap $SP > "$tmp/s0"
W=$((${DUR%.*} - 2)); sleep $W
snap $LP > "$tmp/l1"; [ -n "$SP" ] && snap $SP > "$tmp/s1"
wait $LP
[ -n "$SP" ] && { kill -TERM $SP; wait $SP || true; }
W=$W TMP=$tmp python3 - <<'PY'
import json, os
w, tmp = float(os.environ["W"]), os.environ["TMP"]
d = json.load(open(f"{tmp}/lg.json"))
q = d["achieved_qps"]
print("achieved %.0f QPS, %d ok, errors %s, p99 %.2f ms, mean batch %.2f"
      % (q, d["ok"], d["errors"], d["latency_ms"]["p99"], d.get("mean_batch") or 0))
hz = os.sysconf("SC_CLK_TCK")
for side, a, b in (("server", "s0", "s1"), ("loadgen", "l0", "l1")):
    if not os.path.exists(f"{tmp}/{a}"):
        continue
    before = {l.split()[0]: l.split()[1:] for l in open(f"{tmp}/{a}")}
    for line in sorted(open(f"{tmp}/{b}")):
        name, ticks, cs = line.split()
        t0, c0 = before.get(name, ["0", "0"])
        us = (int(ticks) - int(t0)) * 1e6 / hz
        print("  %-7s %-14s %7.2f us/request  %.3f CPUs  %.2f context switches/request"
              % (side, name, us / (q * w), us / 1e6 / w, (int(cs) - int(c0)) / (q * w)))
PY
