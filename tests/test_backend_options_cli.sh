#!/bin/bash
# End-to-end checks of `--backend-option BACKEND:KEY=VALUE` (backend ABI 1.0 options, issue 15):
# `loom devices --json` lists each backend's declared options and the values given, the npu-sim
# plugin takes its profile and device count from options (`loom run` on a device that only the
# option creates), and every bad option (malformed, unknown backend, undeclared key, a value the
# plugin refuses, no value) exits 2 with one line naming it, on every command that starts a
# runtime; `--cpu-threads N` likewise (the CPU backend's thread count, bad values exit 2).
# Usage: test_backend_options_cli.sh LOOM NPU_SIM_PLUGIN SOURCE_ROOT
set -u
LOOM="$1"
PLUGIN="$2"
SRC="$3"
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
    echo "SKIP: /usr/bin/python3 not installed (needed to read JSON)"
    exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export LOOM_BACKEND_PATH="$(dirname "$PLUGIN")"
export XDG_CACHE_HOME="$TMP/cache"
unset LOOM_NPU_SIM_PROFILE LOOM_NPU_SIM_DEVICES
MODEL="$SRC/tests/fixtures/mlp/model.onnx"
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
# Exit 2, exactly one line on stderr, containing TEXT.
check_bad() { # NAME TEXT COMMAND...
    local name="$1" text="$2"
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$? lines
    lines=$(wc -l <"$TMP/err")
    if [ "$got" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$text" "$TMP/err"; then
        echo "FAIL $name: exit $got (wanted 2), $lines lines on stderr (wanted 1), wanted '$text':"
        cat "$TMP/err"; fail=$((fail + 1))
    else
        echo "ok   $name"; pass=$((pass + 1))
    fi
}
expect() { # NAME COMMAND...: a further assertion
    local name="$1"
    shift
    if "$@"; then
        echo "ok   $name"; pass=$((pass + 1))
    else
        echo "FAIL $name"; fail=$((fail + 1))
    fi
}

cat >"$TMP/edge.json" <<'EOF'
{"name": "cli-options-npu", "tops_int8": 30, "tflops_fp16": 12, "bandwidth_gbs": 50,
 "dispatch_latency_us": 8, "memory_mb": 256}
EOF

# ---- listing ----
check "devices --json without options" 0 "$LOOM" devices --json
expect "backends and their declared options are listed (no value set)" "$PY" - "$TMP/out" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
be = {b["name"]: b for b in d["backends"]}
assert "cpu" in be and "npu-sim" in be, be.keys()
opts = {o["key"]: o for o in be["npu-sim"]["options"]}
assert set(opts) == {"profile", "devices"}, opts
for o in opts.values():
    assert o["help"] and "default" in o and o["value"] is None, o
assert opts["devices"]["default"] == "1"
assert be["npu-sim"]["abi"].startswith("1."), be["npu-sim"]
assert sum(x["backend"] == "npu-sim" for x in d["devices"]) == 1
EOF
check "devices --json with profile and devices options" 0 "$LOOM" devices --json \
    --backend-option "npu-sim:profile=$TMP/edge.json" --backend-option=npu-sim:devices=2
expect "the values given are listed and took effect" "$PY" - "$TMP/out" "$TMP/edge.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
be = {b["name"]: b for b in d["backends"]}
opts = {o["key"]: o for o in be["npu-sim"]["options"]}
assert opts["profile"]["value"] == sys.argv[2], opts
assert opts["devices"]["value"] == "2", opts
npus = [x for x in d["devices"] if x["backend"] == "npu-sim"]
assert len(npus) == 2, npus
assert all("cli-options-npu" in x["name"] for x in npus), npus
assert npus[0]["memory_bytes"] == 256 << 20, npus
EOF
check "devices (text) lists options" 0 "$LOOM" devices --backend-option npu-sim:devices=2
expect "text listing shows npu-sim:devices = 2 [set]" grep -q "npu-sim:devices = 2 \[set\]" "$TMP/out"
expect "text listing shows npu-sim:profile" grep -q "npu-sim:profile = " "$TMP/out"

# ---- loom run on a device only the option creates ----
check_bad "run on npu-sim:1 without the option" "npu-sim:1" "$LOOM" run "$MODEL" \
    --device npu-sim:1 -o "$TMP/o0"
check "run --backend-option npu-sim:devices=2 --device npu-sim:1" 0 "$LOOM" run "$MODEL" \
    --backend-option npu-sim:devices=2 --backend-option "npu-sim:profile=$TMP/edge.json" \
    --device npu-sim:1 -o "$TMP/o1"
expect "run wrote its outputs" test -s "$TMP/o1/probs.npy" -o -n "$(ls "$TMP/o1" 2>/dev/null)"
check "profile --backend-option" 0 "$LOOM" profile "$MODEL" \
    --backend-option "npu-sim:profile=$TMP/edge.json" --json
expect "profile's devices include the optioned npu-sim" grep -q "npu-sim" "$TMP/out"

# ---- bad options: exit 2, one line naming the option ----
for cmd in devices run profile calibrate; do
    args=()
    case $cmd in
    run | profile) args=("$MODEL") ;;
    calibrate) args=(--quick) ;;
    esac
    check_bad "$cmd: undeclared key" "npu-sim:frob=1" "$LOOM" $cmd "${args[@]}" \
        --backend-option npu-sim:frob=1
    check_bad "$cmd: unknown backend" "no backend 'nosuch' is loaded" "$LOOM" $cmd "${args[@]}" \
        --backend-option nosuch:profile=x.json
done
check_bad "refused value carries the plugin's message" "not a device count (1 to 16)" \
    "$LOOM" devices --backend-option npu-sim:devices=0
check_bad "unreadable profile names the file" "$TMP/missing.json" \
    "$LOOM" run "$MODEL" --backend-option "npu-sim:profile=$TMP/missing.json"
check_bad "malformed option" "is malformed: expected BACKEND:KEY=VALUE" \
    "$LOOM" devices --backend-option npu-sim-profile
check_bad "option without a value" "needs a value" "$LOOM" devices --backend-option
check_bad "backend-test with a bad option" "npu-sim:frob=1" \
    "$LOOM" backend-test "$PLUGIN" --backend-option npu-sim:frob=1
check_bad "a command without a runtime does not take it" "--backend-option" \
    "$LOOM" sim "$TMP/edge.json" --backend-option npu-sim:devices=2

# ---- --cpu-threads N: the CPU backend's thread count, on every command that starts a runtime ----
check "devices --cpu-threads 1" 0 env LOOM_CPU_THREADS=2 "$LOOM" devices --json --cpu-threads 1
expect "cpu:0 lists 1 thread (the option wins over LOOM_CPU_THREADS)" "$PY" - "$TMP/out" <<'EOF2'
import json, sys
d = json.load(open(sys.argv[1]))
c = [x for x in d["devices"] if x["id"] == "cpu:0"]
assert c and c[0]["threads"] == 1, c
EOF2
check "run --cpu-threads=1" 0 "$LOOM" run "$MODEL" --cpu-threads=1 -o "$TMP/o1"
check "run without the option" 0 "$LOOM" run "$MODEL" -o "$TMP/o2"
expect "one thread computes the same outputs" "$PY" - "$TMP/o1" "$TMP/o2" <<'EOF2'
import glob, os, sys
import numpy as np
a = sorted(glob.glob(os.path.join(sys.argv[1], "*.npy")))
assert a, "no outputs written"
for f in a:
    x, y = np.load(f), np.load(os.path.join(sys.argv[2], os.path.basename(f)))
    assert x.shape == y.shape and np.allclose(x, y, rtol=1e-5, atol=1e-6), f
EOF2
for bad in 0 1025 x -1 ""; do
    check_bad "--cpu-threads '$bad' refused" "--cpu-threads wants a thread count from 1 to 1024, got" \
        "$LOOM" run "$MODEL" --cpu-threads "$bad"
done
check_bad "--cpu-threads without a value" "got 'nothing'" "$LOOM" devices --cpu-threads
check_bad "--cpu-threads auto outside serving" "--cpu-threads auto is for loom serve and loom loadgen" \
    "$LOOM" run "$MODEL" --cpu-threads auto
check_bad "loadgen --cpu-threads 0" "--cpu-threads wants" "$LOOM" loadgen "$MODEL" --rate 1 \
    --cpu-threads 0

# ---- the OpenCL backend's layout option, where there is an OpenCL device ----
if LOOM_OPENCL=1 "$LOOM" devices 2>/dev/null | grep -q '^opencl:'; then
    check "opencl:layout=gpu" 0 env LOOM_OPENCL=1 "$LOOM" devices --json \
        --backend-option opencl:layout=gpu
    expect "opencl's layout value is listed" grep -q '"value": "gpu"' "$TMP/out"
    check_bad "opencl:layout refused" "layout 'diagonal' is not one of cpu, gpu, auto" \
        env LOOM_OPENCL=1 "$LOOM" devices --backend-option opencl:layout=diagonal
else
    echo "skip opencl:layout (no OpenCL device)"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
