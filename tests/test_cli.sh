#!/bin/bash
# End-to-end checks of the `loom` command: help texts, device listing (text and JSON), the
# bundled profile with a Chrome trace and an SVG Gantt chart, and that bad usage exits 2 with
# one line on stderr.
set -u
LOOM="$1"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
pass=0
check() { # NAME EXPECTED_STATUS COMMAND...
    local name="$1" want="$2"
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL $name: exit $got, wanted $want"; cat "$TMP/err"; fail=$((fail + 1))
    else
        echo "ok   $name"; pass=$((pass + 1))
    fi
}
json_ok() { python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1"; }

check "help" 0 "$LOOM" help
check "no command is bad usage" 2 "$LOOM"
check "unknown command is bad usage" 2 "$LOOM" frobnicate
grep -q "unknown command 'frobnicate'" "$TMP/err" || { echo "FAIL message names the command"; fail=$((fail+1)); }
check "version" 0 "$LOOM" --version
for sub in devices profile; do
    check "$sub --help" 0 "$LOOM" $sub --help
    grep -q "usage: loom $sub" "$TMP/out" || { echo "FAIL $sub --help text"; fail=$((fail+1)); }
done
check "devices" 0 "$LOOM" devices
grep -q "^cpu:0 " "$TMP/out" || { echo "FAIL devices lists cpu:0"; fail=$((fail+1)); }
check "devices --json" 0 "$LOOM" devices --json
python3 - "$TMP/out" <<'PY' || { echo "FAIL devices --json content"; fail=$((fail+1)); }
import json, sys
d = json.load(open(sys.argv[1]))["devices"]
assert d[0]["id"] == "cpu:0" and d[0]["kind"] == "cpu" and d[0]["compute_units"] >= 1
assert d[0]["memory_bytes"] > 0 and "numa_node" in d[0]
PY
check "devices bad flag" 2 "$LOOM" devices --yaml
check "profile mlp with trace" 0 "$LOOM" profile --model mlp --repeat 3 --warmup 1 --trace "$TMP/t.json"
grep -q "latency ms: median" "$TMP/out" || { echo "FAIL profile prints latency"; fail=$((fail+1)); }
python3 - "$TMP/t.json" <<'PY' || { echo "FAIL trace is trace-event JSON"; fail=$((fail+1)); }
import json, sys
t = json.load(open(sys.argv[1]))
ev = [e for e in t["traceEvents"] if e["ph"] == "X"]
assert ev, "no complete events"
for e in ev:
    assert isinstance(e["name"], str) and e["dur"] >= 0 and e["ts"] >= 0
    assert "pid" in e and "tid" in e
PY
check "profile attention --json" 0 "$LOOM" profile --model attention --repeat 2 --warmup 0 --json
python3 - "$TMP/out" <<'PY' || { echo "FAIL profile --json content"; fail=$((fail+1)); }
import json, sys
p = json.load(open(sys.argv[1]))
assert p["latency_ms"]["median"] > 0 and p["memory"]["peak_bytes"] <= p["memory"]["unshared_bytes"]
assert len(p["nodes"]) > 5
PY
# The bundled BERT-like encoder (examples/models.c), small variant: 3 + 33 x 4 nodes.
check "profile bert-tiny --json" 0 "$LOOM" profile --model bert-tiny --repeat 2 --warmup 1 --device cpu --json
python3 - "$TMP/out" <<'PY' || { echo "FAIL profile bert-tiny content"; fail=$((fail+1)); }
import json, sys
p = json.load(open(sys.argv[1]))
# The graph has 135 nodes (the validate stage sees them all); passes may fuse some, and the table
# lists what the plan runs.
stages = p["plan"]["passes"]
assert p["model"] == "bert-tiny" and stages[0]["name"] == "validate", p["model"]
assert stages[0]["nodes_before"] == 135, stages[0]
assert len(p["nodes"]) == stages[-1]["nodes_after"], (len(p["nodes"]), stages[-1])
assert p["latency_ms"]["median"] > 0
PY
check "profile bert-tiny placed" 0 "$LOOM" profile --model bert-tiny --repeat 2
# One run for both, so the chart and the report describe the same placement.
check "profile attention --gantt --json" 0 "$LOOM" profile --model attention --repeat 2 --warmup 0 --gantt "$TMP/g.svg" --json
/usr/bin/python3 - "$TMP/g.svg" "$TMP/out" <<'PY' || { echo "FAIL gantt is a standalone SVG of every node"; fail=$((fail+1)); }
import json, sys
import xml.etree.ElementTree as ET
svg = ET.parse(sys.argv[1]).getroot()
prof = json.load(open(sys.argv[2]))
NS = "{http://www.w3.org/2000/svg}"
assert svg.tag == NS + "svg", svg.tag
assert not list(svg.iter(NS + "script")) and not list(svg.iter("script")), "has a script"
for el in svg.iter():
    for k in el.attrib:
        assert not k.endswith("href"), "external reference"
lanes = [t.text for t in svg.iter(NS + "text") if "lane" in t.get("class", "").split()]
devices = {n["device"] for n in prof["nodes"]}
assert "cpu:0" in lanes, lanes
assert sorted(lanes) == sorted(devices), (lanes, devices)
rects = [r for r in svg.iter(NS + "rect")]
nodes = [r for r in rects if "node" in r.get("class", "").split()]
merged = sum(int(r.get("data-nodes")) for r in rects if "aggregate" in r.get("class", "").split())
assert prof["plan"]["passes"][0]["nodes_before"] == 19, prof["plan"]["passes"][0]  # the graph
assert len(prof["nodes"]) == prof["plan"]["passes"][-1]["nodes_after"], len(prof["nodes"])
assert len(nodes) + merged == len(prof["nodes"]), (len(nodes), merged)
for r in nodes:
    assert r.find(NS + "title") is not None and " ms" in r.find(NS + "title").text
PY
check "profile unwritable gantt" 2 "$LOOM" profile --repeat 1 --warmup 0 --gantt /nonexistent/dir/g.svg
[ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "/nonexistent/dir/g.svg" "$TMP/err" || { echo "FAIL unwritable gantt: one line naming the file"; fail=$((fail+1)); }
check "profile unknown model" 2 "$LOOM" profile --model resnet
check "profile bad repeat" 2 "$LOOM" profile --repeat -3
check "profile unknown device" 2 "$LOOM" profile --device tpu:3
grep -q "tpu:3" "$TMP/err" || { echo "FAIL unknown device named"; fail=$((fail+1)); }
check "profile missing onnx file" 2 "$LOOM" profile "$TMP/missing.onnx"
grep -q "missing.onnx" "$TMP/err" || { echo "FAIL missing model named"; fail=$((fail+1)); }
check "profile unwritable trace" 2 "$LOOM" profile --repeat 1 --warmup 0 --trace /nonexistent/dir/t.json
check "LOOM_CPU_THREADS bad" 1 env LOOM_CPU_THREADS=zero "$LOOM" devices
grep -q "LOOM_CPU_THREADS" "$TMP/err" || { echo "FAIL bad env named"; fail=$((fail+1)); }
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
