#!/bin/bash
# `loom profile` with experts as placement units (issue 14): a com.microsoft MoE model profiled
# with a pin naming one of its experts is split, and the report lists every expert with its
# device and the tokens routed to it (text table and JSON "moe_experts"); the tokens add up to
# tokens x k; the split graph run by `loom run` (LOOM_MOE_SPLIT=1) matches ONNX Runtime's output
# of the fixture; with the npu-sim plugin and fp16 precision the plan splits by itself; a pin naming
# a piece that does not exist exits 2 with one line. Never asserts on time.
# Usage: test_moe_profile_cli.sh LOOM SOURCE_ROOT NPU_SIM_PLUGIN
set -u
LOOM="$1"
SRC="$2"
PLUGIN="$3"
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
    echo "SKIP: /usr/bin/python3 not installed (needed to read JSON)"
    exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export XDG_CACHE_HOME="$TMP/cache"
MODEL="$SRC/tests/fixtures/moe/silu_k2/model.onnx"
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# Text: the experts' table, one row per expert.
if "$LOOM" profile "$MODEL" --no-calibrate --no-learn --repeat 2 --warmup 1 \
        --pin node:moe_silu_k2/expert1=cpu:0 > "$TMP/out.txt" 2> "$TMP/err.txt"; then
    ok
else
    bad "profile with an expert pin exited $?: $(cat "$TMP/err.txt")"
fi
grep -q '^MoE EXPERT  *DEVICE  *TOKENS' "$TMP/out.txt" && ok || bad "no MoE EXPERT table"
[ "$(grep -c '^moe_silu_k2/expert[0-3] ' "$TMP/out.txt")" -ge 8 ] && ok ||
    bad "want 4 experts in the node table and 4 in the experts' table"

# JSON: every expert with its tokens (they add up to tokens x k: each route of these seeded
# inputs has a weight > 0), its device and measured time; the pieces in the node list.
if "$LOOM" profile "$MODEL" --no-calibrate --no-learn --repeat 2 --warmup 1 --json \
        --pin node:moe_silu_k2/expert1=cpu:0 > "$TMP/out.json" 2> "$TMP/err.txt"; then
    ok
else
    bad "profile --json exited $?: $(cat "$TMP/err.txt")"
fi
"$PY" - "$TMP/out.json" <<'PYEOF' && ok || bad "JSON moe_experts"
import json, sys
r = json.load(open(sys.argv[1]))
ex = r["moe_experts"]
assert [e["node"] for e in ex] == ["moe_silu_k2/expert%d" % i for i in range(4)], ex
assert sum(e["tokens"] for e in ex) == 6 * 2, ex  # 6 tokens, top-2
for e in ex:
    assert e["device"] == "cpu:0" and e["measured_ms"] is not None and e["tokens"] >= 0, e
nodes = {n["name"]: n for n in r["nodes"]}
assert nodes["moe_silu_k2"]["op"] == "Sum" and nodes["moe_silu_k2/router"]["op"] == "MoERoute"
PYEOF

# The split graph through `loom run` (LOOM_MOE_SPLIT=1) on the fixture's inputs against the
# fixture's expected output (ONNX Runtime's).
if LOOM_MOE_SPLIT=1 "$LOOM" run "$MODEL" -i input="$SRC/tests/fixtures/moe/silu_k2/input_input.npy" \
        -i router_probs="$SRC/tests/fixtures/moe/silu_k2/input_router_probs.npy" \
        -o "$TMP/run" > /dev/null 2> "$TMP/err.txt"; then
    ok
else
    bad "loom run with LOOM_MOE_SPLIT=1 exited $?: $(cat "$TMP/err.txt")"
fi
"$PY" - "$TMP/run" "$SRC/tests/fixtures/moe/silu_k2/expected_output.npy" <<'PYEOF' && ok ||
import glob, sys
import numpy as np
got = np.load(glob.glob(sys.argv[1] + "/*.npy")[0])
want = np.load(sys.argv[2])
assert np.allclose(got, want, rtol=1e-4, atol=1e-5), abs(got - want).max()
PYEOF
    bad "the split run differs from ONNX Runtime's output"

# cpu:0 + npu-sim at fp16: the plan splits because two devices can run the experts.
if LOOM_BACKEND_PATH="$(dirname "$PLUGIN")" "$LOOM" profile "$MODEL" --no-calibrate --no-learn \
        --repeat 2 --warmup 1 --precision fp16 --passes > "$TMP/npu.txt" 2> "$TMP/err.txt"; then
    ok
else
    bad "profile with npu-sim exited $?: $(cat "$TMP/err.txt")"
fi
grep -q 'split 1 MoE into router + 4 expert nodes + sum (experts can run on cpu:0, npu-sim:0)' \
    "$TMP/npu.txt" && ok || bad "with npu-sim the plan did not split by itself"

# A pin naming a piece that the model does not have: exit 2, one line.
"$LOOM" profile "$MODEL" --no-calibrate --pin node:moe_silu_k2/bogus=cpu:0 > /dev/null \
    2> "$TMP/err.txt"
st=$?
if [ "$st" = 2 ] && [ "$(wc -l < "$TMP/err.txt")" = 1 ]; then ok; else
    bad "bogus piece pin: exit $st, $(wc -l < "$TMP/err.txt") lines (want 2, 1)"; fi

echo "moe profile cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
