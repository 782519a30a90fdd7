#!/bin/bash
# End-to-end checks of `loom sim`: each kind of invalid instance exits 2 with one line on stderr
# naming the culprit; a good instance places with every policy and -o writes a schedule that
# parses and respects the instance (re-checked here in Python).
# usage: test_sim_cli.sh LOOM DATA_DIR   (DATA_DIR: tests/data/sim)
set -u
LOOM="$1"
DATA="$2"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
pass=0
check() { # NAME EXPECTED_STATUS PATTERN COMMAND...: status and a stderr line matching PATTERN
    local name="$1" want="$2" pat="$3"
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL $name: exit $got, wanted $want"; cat "$TMP/err"; fail=$((fail + 1)); return
    fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" "$TMP/err"; then
        echo "FAIL $name: stderr lacks '$pat':"; cat "$TMP/err"; fail=$((fail + 1)); return
    fi
    if [ "$want" -ne 0 ] && [ "$(wc -l <"$TMP/err")" -ne 1 ]; then
        echo "FAIL $name: not one line on stderr:"; cat "$TMP/err"; fail=$((fail + 1)); return
    fi
    echo "ok   $name"; pass=$((pass + 1))
}

check "help" 0 "" "$LOOM" sim --help
check "no instance" 2 "no instance" "$LOOM" sim
check "unknown policy" 2 "unknown policy 'fastest'" "$LOOM" sim "$DATA/good.json" --policy fastest
check "bad budget" 2 "budget" "$LOOM" sim "$DATA/good.json" --budget -1
check "unknown option" 2 "unknown argument '--frob'" "$LOOM" sim "$DATA/good.json" --frob
check "missing file" 2 "nonexistent.json" "$LOOM" sim "$TMP/nonexistent.json"
check "not JSON" 2 "not valid JSON" "$LOOM" sim "$DATA/bad_not_json.json"
check "missing key" 2 "missing key 'edges'" "$LOOM" sim "$DATA/bad_missing_edges.json"
check "unknown task in an edge" 2 "unknown task 'zz'" "$LOOM" sim "$DATA/bad_unknown_task.json"
check "duplicate id" 2 "duplicate task id 'a'" "$LOOM" sim "$DATA/bad_duplicate_id.json"
check "cycle" 2 "cycle through task '[bc]'" "$LOOM" sim "$DATA/bad_cycle.json"
check "cost row size" 2 "task 'a': 'cost' must have 2 entries" "$LOOM" sim "$DATA/bad_cost_size.json"
check "matrix size" 2 "'bandwidth' must be an array of 2 rows" "$LOOM" sim "$DATA/bad_matrix_size.json"
check "negative cost" 2 "task 'a': negative cost" "$LOOM" sim "$DATA/bad_negative_cost.json"
check "negative bytes" 2 "edge 0 ('a' to 'b')" "$LOOM" sim "$DATA/bad_negative_bytes.json"
check "negative latency" 2 "'latency' from 'cpu0' to 'gpu0'" "$LOOM" sim "$DATA/bad_negative_latency.json"
check "zero bandwidth" 2 "'bandwidth' from 'cpu0' to 'gpu0' is 0" "$LOOM" sim "$DATA/bad_zero_bandwidth.json"
check "no device can run" 2 "task 'nowhere': no device can run it" "$LOOM" sim "$DATA/bad_no_device.json"
# Finite numbers whose sums overflow: bad input naming the task or edge, not "nothing fits".
check "costs overflowing the total" 2 "task 'b': cost 1.5e+308 s on 'cpu0' makes the tasks' total time overflow" \
    "$LOOM" sim "$DATA/bad_overflow_cost.json"
check "transfer time overflowing" 2 "edge 0 ('a' to 'b'): 1e+300 bytes from 'cpu0' to 'gpu0'" \
    "$LOOM" sim "$DATA/bad_overflow_bytes.json"
# An option expecting a value does not take the next option as its value.
check "-o followed by an option" 2 "option -o needs a value" "$LOOM" sim "$DATA/good.json" -o --json

for p in default loom heft peft exact first; do
    check "policy $p" 0 "" "$LOOM" sim "$DATA/good.json" --policy $p --budget 0.05 -o "$TMP/s_$p.json"
    python3 - "$DATA/good.json" "$TMP/s_$p.json" <<'PY' || { echo "FAIL schedule of $p"; fail=$((fail + 1)); }
import json, sys
inst, sch = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
dev = {d["name"]: i for i, d in enumerate(inst["devices"])}
cost = {t["id"]: t["cost"] for t in inst["tasks"]}
s = {e["task"]: e for e in sch["schedule"]}
assert set(s) == set(cost)
for t, e in s.items():
    c = cost[t][dev[e["device"]]]
    assert c is not None and abs(e["finish"] - e["start"] - c) < 1e-12
for e in inst["edges"]:
    a, b = s[e["from"]], s[e["to"]]
    i, j = dev[a["device"]], dev[b["device"]]
    delay = 0 if i == j else inst["latency"][i][j] + e["bytes"] / inst["bandwidth"][i][j]
    assert b["start"] >= a["finish"] + delay - 1e-12
assert abs(sch["makespan"] - max(e["finish"] for e in s.values())) < 1e-12
PY
done
check "json report" 0 "" "$LOOM" sim "$DATA/good.json" --json --budget 0.05
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["makespan"] <= d["heft_makespan"] and d["evaluations"] >= 1' "$TMP/out" \
    || { echo "FAIL --json content"; fail=$((fail + 1)); }
check "text report" 0 "" "$LOOM" sim "$DATA/good.json" --policy heft
grep -q "^makespan" "$TMP/out" && grep -q "^HEFT .*ratio" "$TMP/out" || { echo "FAIL text report"; fail=$((fail + 1)); }
# An output path that cannot be created is the argument's fault: 2, as for every command
# (docs/run.md, "Exit status"); a failure while writing (disk full) would be 1.
check "unwritable output" 2 "cannot write" "$LOOM" sim "$DATA/good.json" --policy heft -o "$TMP/no/such/dir.json"

# The schedule is written whole or not at all; a symlink at its name is refused, not followed.
echo precious >"$TMP/victim" && ln -s victim "$TMP/linked.json"
check "-o over a symlink refused" 2 "linked.json': it is a symbolic link" "$LOOM" sim "$DATA/good.json" --policy heft -o "$TMP/linked.json"
[ "$(cat "$TMP/victim")" = precious ] || { echo "FAIL the symlink's target was written"; fail=$((fail + 1)); }
echo old >"$TMP/s_old.json"
check "-o replaces an existing file" 0 "" "$LOOM" sim "$DATA/good.json" --policy heft -o "$TMP/s_old.json"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))["makespan"]' "$TMP/s_old.json" || { echo "FAIL replaced schedule"; fail=$((fail + 1)); }

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
