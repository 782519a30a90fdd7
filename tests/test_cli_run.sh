#!/bin/bash
# End-to-end checks of `loom run`: tiny ONNX models made here with the onnx Python package, run
# on .npy and TensorProto .pb inputs and on seeded random data, outputs checked with NumPy;
# repeat and JSON reports; and every kind of bad usage or bad input exits 2 with one line on
# stderr. Usage: test_cli_run.sh LOOM_BINARY SOURCE_ROOT [DEVMEM_PLUGIN]. Skips (77) without
# python3-onnx. DEVMEM_PLUGIN (tests/plugins/devmem.so) lets a device fail: what `loom run` and
# `loom profile` say about the node re-run on the CPU.
set -u
LOOM="$(realpath "$1")"
DEVMEM="${3:+$(realpath "$3")}"
PY=/usr/bin/python3
if ! "$PY" -c 'import onnx, numpy' 2>/dev/null; then
    echo "SKIP: $PY lacks onnx or numpy (Debian: python3-onnx python3-numpy)"
    exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
fail=0
pass=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
check() { # NAME EXPECTED_STATUS COMMAND...
    local name="$1" want="$2"
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then
        bad "$name: exit $got, wanted $want"; cat "$TMP/err"
    else
        echo "ok   $name"; pass=$((pass + 1))
    fi
}
# A bad-input check: exit 2, exactly one line on stderr, and that line contains TEXT.
check_bad() { # NAME TEXT COMMAND...
    local name="$1" text="$2"
    shift 2
    check "$name" 2 "$@"
    local lines
    lines=$(wc -l <"$TMP/err")
    [ "$lines" -eq 1 ] || bad "$name: $lines lines on stderr, wanted 1"
    grep -qF -- "$text" "$TMP/err" || { bad "$name: stderr lacks '$text'"; cat "$TMP/err"; }
}
pycheck() { # NAME, then a Python program on stdin, run in $TMP
    local name="$1"
    if "$PY" - >"$TMP/py.out" 2>&1; then
        echo "ok   $name"; pass=$((pass + 1))
    else
        bad "$name"; cat "$TMP/py.out"
    fi
}

# ---- models and inputs ----------------------------------------------------------------------
"$PY" - <<'PY' || { echo "FAIL making the test models"; exit 1; }
import numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto as T

def save(name, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, name + ".onnx")

vi = helper.make_tensor_value_info
# relu(x + y) and x * y: two outputs, one of whose names needs sanitising.
save("addmul", [helper.make_node("Add", ["x", "y"], ["s"]),
                helper.make_node("Relu", ["s"], ["relu:out/0"]),
                helper.make_node("Mul", ["x", "y"], ["prod"])],
     [vi("x", T.FLOAT, [2, 3]), vi("y", T.FLOAT, [2, 3])],
     [vi("relu:out/0", T.FLOAT, [2, 3]), vi("prod", T.FLOAT, [2, 3])])
# Symbolic batch dimension.
save("symbolic", [helper.make_node("Relu", ["x"], ["y"])],
     [vi("x", T.FLOAT, ["batch", 3])], [vi("y", T.FLOAT, ["batch", 3])])
# One input of each dtype the random filler makes, passed straight through.
kinds = [("f", T.FLOAT), ("h", T.FLOAT16), ("i", T.INT64), ("j", T.INT32), ("b", T.BOOL),
         ("u", T.UINT8)]
save("identity", [helper.make_node("Identity", [n], [n + "_out"]) for n, _ in kinds],
     [vi(n, t, [64]) for n, t in kinds], [vi(n + "_out", t, [64]) for n, t in kinds])
# Gather from a 4-row table with int64 indices: random indices must stay in range.
table = np.arange(8, dtype=np.float32).reshape(4, 2)
save("gather", [helper.make_node("Gather", ["table", "idx"], ["rows"], axis=0)],
     [vi("idx", T.INT64, [5])], [vi("rows", T.FLOAT, [5, 2])],
     [numpy_helper.from_array(table, "table")])
# A bfloat16 output (written as float32) and a float16 input.
save("tobf16", [helper.make_node("Cast", ["x"], ["y"], to=T.BFLOAT16)],
     [vi("x", T.FLOAT, [4])], [vi("y", T.BFLOAT16, [4])])
save("half", [helper.make_node("Identity", ["x"], ["y"])],
     [vi("x", T.FLOAT16, [3])], [vi("y", T.FLOAT16, [3])])
np.save("h.npy", np.array([1.5, -2, 0.25], np.float16))
np.save("four.npy", np.array([1.0, -2.5, 3.140625, 0.1], np.float32))
np.save("big_x.npy", np.arange(1024, dtype=np.float32))

rng = np.random.default_rng(7)
x = rng.standard_normal((2, 3)).astype(np.float32)
y = rng.standard_normal((2, 3)).astype(np.float32)
np.save("x.npy", x)
np.save("y.npy", y)
for name, a in (("x", x), ("y", y)):
    with open(name + ".pb", "wb") as f:
        f.write(numpy_helper.from_array(a, name).SerializeToString())
np.save("x_fortran.npy", np.asfortranarray(x))
np.save("x_f64.npy", x.astype(np.float64))
np.save("x_i64.npy", x.astype(np.int64))
np.save("x_3x2.npy", x.reshape(3, 2))
np.save("x_batch5.npy", rng.standard_normal((5, 3)).astype(np.float32))
np.save("idx.npy", np.array([3, 0, 2, 2, 1], dtype=np.int64))
with open("corrupt.npy", "wb") as f:
    f.write(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'")
with open("corrupt.onnx", "wb") as f:
    f.write(b"this is not a protobuf \xff\xff\xff\xff")
# A 4 KiB output, for a write that fails part way.
save("big", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", T.FLOAT, [1024])],
     [vi("y", T.FLOAT, [1024])])
# fc1: MatMul with constant weights, then Relu, for a device that fails (the devmem plugin).
fw = (np.arange(16 * 8, dtype=np.float32).reshape(16, 8) % 7 - 3) / 4
save("fc", [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["y"], name="act")],
     [vi("x", T.FLOAT, [8, 16])], [vi("y", T.FLOAT, [8, 8])], [numpy_helper.from_array(fw, "w")])
np.save("fc_w.npy", fw)
np.save("fc_x.npy", (np.arange(8 * 16, dtype=np.float32).reshape(8, 16) % 5 - 2) / 2)
# Models Loom cannot take, for the exit-status rule shared by every command.
relu = [helper.make_node("Relu", ["x"], ["y"])]
def save_raw(name, nodes, inputs, outputs, opsets):
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs), opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, "bad_" + name + ".onnx")
op13 = [helper.make_opsetid("", 13)]
save_raw("unknown_op", [helper.make_node("FrobnicateX", ["x"], ["y"])],
         [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])], op13)
save_raw("unknown_domain", [helper.make_node("Relu", ["x"], ["y"], domain="com.example")],
         [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])],
         op13 + [helper.make_opsetid("com.example", 1)])
save_raw("old_opset", relu, [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])],
         [helper.make_opsetid("", 1)])
save_raw("complex_dtype", [helper.make_node("Identity", ["x"], ["y"])],
         [vi("x", T.COMPLEX64, [2])], [vi("y", T.COMPLEX64, [2])], op13)
save_raw("rank9", relu, [vi("x", T.FLOAT, [1] * 9)], [vi("y", T.FLOAT, [1] * 9)], op13)
# Headers claiming far more data than the file holds: 2 GiB in 640 bytes, 2^40 elements.
for name, shape in (("claim2g.npy", "(536870912,)"), ("claim2e40.npy", "(1048576, 1048576)")):
    d = ("{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape).ljust(117) + "\n"
    with open(name, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + bytes([len(d), 0]) + d.encode() + bytes(512))
PY

# ---- running ----------------------------------------------------------------------------------
check "run --help" 0 "$LOOM" run --help
grep -q "usage: loom run" "$TMP/out" || bad "run --help text"

check "npy inputs" 0 "$LOOM" run addmul.onnx -i x=x.npy -i y=y.npy -o npy_out
pycheck "npy outputs match numpy" <<'PY'
import numpy as np
x, y = np.load("x.npy"), np.load("y.npy")
r = np.load("npy_out/relu_out_0.npy"); p = np.load("npy_out/prod.npy")
assert r.dtype == np.float32 and r.shape == (2, 3), (r.dtype, r.shape)
np.testing.assert_allclose(r, np.maximum(x + y, 0), rtol=1e-6, atol=1e-7)
np.testing.assert_allclose(p, x * y, rtol=1e-6, atol=1e-7)
PY
grep -q "npy_out/relu_out_0.npy" "$TMP/out" || bad "text report names the output file"

check "pb inputs" 0 "$LOOM" run addmul.onnx -i x=x.pb -i y=y.pb -o pb_out/nested/dir
pycheck "pb outputs match numpy, nested -o created" <<'PY'
import numpy as np
x, y = np.load("x.npy"), np.load("y.npy")
np.testing.assert_allclose(np.load("pb_out/nested/dir/relu_out_0.npy"), np.maximum(x + y, 0),
                           rtol=1e-6, atol=1e-7)
np.testing.assert_allclose(np.load("pb_out/nested/dir/prod.npy"), x * y, rtol=1e-6, atol=1e-7)
PY

check "mixed npy and pb" 0 "$LOOM" run addmul.onnx -i x=x.pb -i y=y.npy -o mixed_out
cmp -s mixed_out/prod.npy npy_out/prod.npy || bad "mixed inputs give the same outputs"

mkdir -p cwd_run && (cd cwd_run && "$LOOM" run ../addmul.onnx -i x=../x.npy >/dev/null 2>&1)
check "random fill for inputs not given, outputs in the current directory" 0 test -f cwd_run/prod.npy
pycheck "random input is in [-1, 1)" <<'PY'
import numpy as np
x = np.load("x.npy")
p = np.load("cwd_run/prod.npy")  # x * random y
y = p / np.where(x == 0, 1, x)
assert np.all(y >= -1) and np.all(y < 1), y
assert len(np.unique(np.round(y, 5))) > 1, "random data is constant"
PY

check "random data is seeded" 0 "$LOOM" run identity.onnx -o rand1
check "random data again" 0 "$LOOM" run identity.onnx -o rand2
for n in f h i j b u; do
    cmp -s "rand1/${n}_out.npy" "rand2/${n}_out.npy" || bad "random '$n' differs between runs"
done
pycheck "random data of each dtype" <<'PY'
import numpy as np
want = {"f": np.float32, "h": np.float16, "i": np.int64, "j": np.int32, "b": np.bool_,
        "u": np.uint8}
for n, dt in want.items():
    a = np.load("rand1/%s_out.npy" % n)
    assert a.dtype == dt and a.shape == (64,), (n, a.dtype, a.shape)
    assert len(np.unique(a)) > 1, (n, "constant")
    if dt in (np.float32, np.float16):
        assert np.all(a >= -1) and np.all(a < 1), (n, a)
    elif dt is not np.bool_:
        assert np.all(a >= 0) and np.all(a < 16), (n, a)
PY

check "int64 input from npy" 0 "$LOOM" run gather.onnx -i idx=idx.npy -o gather_out
pycheck "gather output" <<'PY'
import numpy as np
t = np.arange(8, dtype=np.float32).reshape(4, 2)
np.testing.assert_array_equal(np.load("gather_out/rows.npy"), t[[3, 0, 2, 2, 1]])
PY
check "random int64 indices stay in range" 0 "$LOOM" run gather.onnx -o gather_rand

check "bfloat16 output" 0 "$LOOM" run tobf16.onnx -i x=four.npy -o bf_out --json
"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["outputs"][0]["dtype"] == "bfloat16", r' \
    "$TMP/out" || bad "json names the bfloat16 dtype"
pycheck "bfloat16 output is written as float32" <<'PY'
import numpy as np
y = np.load("bf_out/y.npy")
assert y.dtype == np.float32, y.dtype
# 0.1 rounds to the nearest bfloat16 (0.10009765625); the others are exact.
np.testing.assert_array_equal(y, np.array([1.0, -2.5, 3.140625, 0.10009765625], np.float32))
PY
check "float16 input and output" 0 "$LOOM" run half.onnx -i x=h.npy -o half_out
pycheck "float16 output" <<'PY'
import numpy as np
y = np.load("half_out/y.npy")
assert y.dtype == np.float16
np.testing.assert_array_equal(y, np.load("h.npy"))
PY

check "symbolic dim from --dim" 0 "$LOOM" run symbolic.onnx --dim batch=4 -o sym_dim
pycheck "symbolic output shape" <<'PY'
import numpy as np
assert np.load("sym_dim/y.npy").shape == (4, 3)
PY
check "symbolic dim from the input file" 0 "$LOOM" run symbolic.onnx -i x=x_batch5.npy -o sym_file
pycheck "symbolic output from file" <<'PY'
import numpy as np
x = np.load("x_batch5.npy")
np.testing.assert_allclose(np.load("sym_file/y.npy"), np.maximum(x, 0))
PY
check_bad "unresolved symbolic dim" "batch" "$LOOM" run symbolic.onnx

# ---- repeat and JSON --------------------------------------------------------------------------
mkdir -p rep && (cd rep && "$LOOM" run ../addmul.onnx --repeat 5 --warmup 1 >../rep.txt 2>&1)
check "repeat runs" 0 grep -q "latency ms: median .* p95 .* p99 .* min" rep.txt
check "repeat without -o still writes outputs" 0 test -f rep/prod.npy

check "json report" 0 "$LOOM" run addmul.onnx -i x=x.npy --repeat 4 --json -o json_out
cp "$TMP/out" report.json
pycheck "json content" <<'PY'
import json, os, re
r = json.load(open("report.json"))
assert set(r) == {"model", "device", "runs", "latency_ms", "peak_memory_bytes", "devices",
                  "outputs", "fallback_count", "fallbacks"}, sorted(r)
assert r["fallback_count"] == 0 and r["fallbacks"] == [], r
assert r["model"] == "addmul.onnx" and r["runs"] == 4
l = r["latency_ms"]
assert set(l) == {"median", "p95", "p99", "min"}
assert 0 < l["min"] <= l["median"] <= l["p95"] <= l["p99"], l
assert isinstance(r["peak_memory_bytes"], int) and r["peak_memory_bytes"] >= 0
assert r["devices"] and all(set(d) == {"id", "busy_ms"} and d["busy_ms"] >= 0
                            for d in r["devices"]), r["devices"]
assert all(re.fullmatch(r"[A-Za-z0-9_.-]+:[0-9]+", d["id"]) for d in r["devices"]), r["devices"]
outs = {o["name"]: o for o in r["outputs"]}
assert set(outs) == {"relu:out/0", "prod"}
o = outs["relu:out/0"]
assert o["dtype"] == "float" and o["shape"] == [2, 3] and o["file"] == "json_out/relu_out_0.npy"
assert all(os.path.exists(o["file"]) for o in r["outputs"])
PY
check "json without repeat is one run" 0 "$LOOM" run addmul.onnx --json -o json1
"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["runs"] == 1' "$TMP/out" ||
    bad "json runs is 1 without --repeat"

check "device cpu:0" 0 "$LOOM" run addmul.onnx --device cpu:0 --json -o dev_out
"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["device"] == "cpu:0", r' \
    "$TMP/out" || bad "json names the device"
check "device by backend name" 0 "$LOOM" run addmul.onnx --device cpu -o dev_out

check "precision fp16 on the CPU stays exact" 0 "$LOOM" run addmul.onnx -i x=x.npy -i y=y.npy --precision fp16 -o prec_out
cmp -s prec_out/prod.npy npy_out/prod.npy || bad "fp16 precision changes nothing on the CPU"

# The simulated NPU plugin, when this build has one: a plan on it, timed on it.
NPU_DIR="$(dirname "$LOOM")/../backends/npu-sim"
if [ -d "$NPU_DIR" ]; then
    check "npu-sim device with fp16" 0 env LOOM_BACKEND_PATH="$NPU_DIR" "$LOOM" run addmul.onnx \
        -i x=x.npy -i y=y.npy --device npu-sim --precision fp16 --json -o npu_out
    cp "$TMP/out" npu.json
    pycheck "npu-sim report and outputs" <<'PY'
import json
import numpy as np
r = json.load(open("npu.json"))
assert r["device"] == "npu-sim:0", r["device"]
assert [d["id"] for d in r["devices"]] == ["npu-sim:0"] and r["devices"][0]["busy_ms"] > 0, r
x, y = np.load("x.npy"), np.load("y.npy")
np.testing.assert_allclose(np.load("npu_out/prod.npy"), x * y, rtol=2e-3, atol=2e-3)
PY
    # --device npu-sim implies fp16.
    check "npu-sim device implies fp16" 0 env LOOM_BACKEND_PATH="$NPU_DIR" "$LOOM" run addmul.onnx \
        -i x=x.npy -i y=y.npy --device npu-sim -o npu_out2
    # Without reduced precision, a strict plan refuses the node (1) instead of moving it.
    check "npu-sim refuses float32 with --strict" 1 \
        env LOOM_BACKEND_PATH="$NPU_DIR" "$LOOM" run addmul.onnx --device npu-sim --precision f32 \
        --strict
    [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "precision" "$TMP/err" ||
        bad "npu-sim refusal is one line naming the precision"
else
    echo "skip npu-sim checks: no plugin at $NPU_DIR"
fi

# ---- a device that fails: the node re-runs on the CPU, and the reports say which and why ---------
if [ -n "$DEVMEM" ]; then
    check "failing device: run" 0 env LOOM_BACKEND_PATH="$DEVMEM" LOOM_TEST_DEVMEM_FAIL=1 \
        "$LOOM" run fc.onnx -i x=fc_x.npy --device devmem -o fc_out
    # devmem claims MatMul+Relu: the unit (named after its first node) is what fails and re-runs.
    grep -qF "node 'fc1' (MatMul+Relu) failed on devmem:0 (device lost: devmem: injected failure" \
        "$TMP/out" && grep -qF "; re-ran on cpu:0" "$TMP/out" ||
        { bad "run text names the node, both devices and the reason"; cat "$TMP/out"; }
    grep -qF "1 node run re-run on another device" "$TMP/out" || bad "run text counts the re-run"
    pycheck "failing device: outputs right" <<'PY'
import numpy as np
x, w = np.load("fc_x.npy"), np.load("fc_w.npy")
np.testing.assert_allclose(np.load("fc_out/y.npy"), np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)
PY
    check "failing device: run --json" 0 env LOOM_BACKEND_PATH="$DEVMEM" LOOM_TEST_DEVMEM_FAIL=1 \
        "$LOOM" run fc.onnx --device devmem --repeat 3 --warmup 0 --json -o fc_json
    cp "$TMP/out" fc.json
    pycheck "failing device: json fallbacks" <<'PY'
import json
r = json.load(open("fc.json"))
assert r["fallback_count"] == 1, r
f = r["fallbacks"]
assert len(f) == 1 and set(f[0]) == {"node", "op", "failed_device", "ran_device", "status",
                                     "message", "runs"}, f
f = f[0]
assert (f["node"], f["op"], f["failed_device"], f["ran_device"], f["status"], f["runs"]) == \
    ("fc1", "MatMul+Relu", "devmem:0", "cpu:0", "LOOM_ERR_DEVICE_LOST", 1), f
assert f["message"].startswith("devmem: injected failure"), f
PY
    check "failing device: profile" 0 env LOOM_BACKEND_PATH="$DEVMEM" LOOM_TEST_DEVMEM_FAIL=1 \
        LOOM_NO_CALIBRATE=1 "$LOOM" profile fc.onnx --device devmem --repeat 2 --warmup 0 \
        --no-learn --trace fc_trace.json
    grep -qF "^ fallback: failed on devmem:0 (device lost: devmem: injected failure" "$TMP/out" &&
        grep -qF "re-ran on cpu:0 (in 1 of 2 runs)" "$TMP/out" ||
        { bad "profile text shows the reason under the node"; cat "$TMP/out"; }
    check "failing device: profile --json" 0 env LOOM_BACKEND_PATH="$DEVMEM" \
        LOOM_TEST_DEVMEM_FAIL=1 LOOM_NO_CALIBRATE=1 "$LOOM" profile fc.onnx --device devmem \
        --repeat 2 --warmup 0 --no-learn --json
    cp "$TMP/out" fc_profile.json
    pycheck "failing device: profile json and trace" <<'PY'
import json
p = json.load(open("fc_profile.json"))
assert p["fallbacks"] == 1, p["fallbacks"]
nodes = {n["name"]: n for n in p["nodes"]}
f = nodes["fc1"]["fallback"]
assert f and (f["failed_device"], f["ran_device"], f["status"], f["runs"]) == \
    ("devmem:0", "cpu:0", "LOOM_ERR_DEVICE_LOST", 1), f
assert f["message"].startswith("devmem: injected failure"), f
assert all(n["fallback"] is None for n in p["nodes"] if n["name"] != "fc1")
t = json.load(open("fc_trace.json"))
ev = [e for e in t["traceEvents"] if e.get("name") == "fc1"]
assert ev and "failed on devmem:0" in ev[0]["args"]["fallback"], ev
PY
else
    echo "skip failing-device checks: no devmem plugin given"
fi

# ---- bad usage and bad input: exit 2, one line ---------------------------------------------------
check_bad "no model" "no model" "$LOOM" run
check_bad "unknown option" "--frobnicate" "$LOOM" run addmul.onnx --frobnicate
check_bad "option without value" "-o needs a value" "$LOOM" run addmul.onnx -o
check_bad "two models" "unexpected argument" "$LOOM" run addmul.onnx gather.onnx
check_bad "missing model" "no-such.onnx" "$LOOM" run no-such.onnx
check_bad "corrupt model" "corrupt.onnx" "$LOOM" run corrupt.onnx
check_bad "-i without =" "NAME=FILE" "$LOOM" run addmul.onnx -i x.npy
check_bad "input given twice" "twice" "$LOOM" run addmul.onnx -i x=x.npy -i x=y.npy
check_bad "unknown input lists the model's inputs" "its inputs are: x (float [2, 3]), y (float [2, 3])" \
    "$LOOM" run addmul.onnx -i z=x.npy
check_bad "missing input file" "nothere.npy" "$LOOM" run addmul.onnx -i x=nothere.npy
check_bad "missing pb file" "nothere.pb" "$LOOM" run addmul.onnx -i x=nothere.pb
check_bad "input of another extension" "neither .npy nor .pb" "$LOOM" run addmul.onnx -i x=x.txt
check_bad "wrong shape" "shape [3, 2], the model wants [2, 3]" "$LOOM" run addmul.onnx -i x=x_3x2.npy
check_bad "wrong dtype" "holds int64, the model wants float" "$LOOM" run addmul.onnx -i x=x_i64.npy
check_bad "float64 npy for a float input" "holds double, the model wants float" "$LOOM" run addmul.onnx -i x=x_f64.npy
check_bad "fortran npy" "Fortran" "$LOOM" run addmul.onnx -i x=x_fortran.npy
check_bad "corrupt npy" "corrupt.npy" "$LOOM" run addmul.onnx -i x=corrupt.npy
check_bad "npy claiming 2 GiB in 640 bytes" "claim2g.npy" "$LOOM" run addmul.onnx -i x=claim2g.npy
check_bad "npy claiming 2^40 elements" "truncated (512 of 4398046511104 bytes)" \
    "$LOOM" run addmul.onnx -i x=claim2e40.npy
check_bad "unknown device" "unknown device 'tpu:7'" "$LOOM" run addmul.onnx --device tpu:7
check_bad "bad repeat" "--repeat" "$LOOM" run addmul.onnx --repeat zero
check_bad "negative warmup" "--warmup" "$LOOM" run addmul.onnx --warmup -1
check_bad "bad dim" "--dim" "$LOOM" run symbolic.onnx --dim batch
check_bad "unknown precision" "--precision 'fp8'" "$LOOM" run addmul.onnx --precision fp8
check "int8 calibrated on random sets" 0 "$LOOM" run addmul.onnx --precision int8 --calibrate 2 -o cal_out
check_bad "calibrate without int8" "--calibrate needs --precision int8" "$LOOM" run addmul.onnx --calibrate 2
check_bad "bad calibrate" "--calibrate" "$LOOM" run addmul.onnx --precision int8 --calibrate 0
touch a_file
check_bad "output dir is a file" "a_file" "$LOOM" run addmul.onnx -o a_file
# One rule for output paths (docs/run.md): a folder that cannot be created or written is the
# -o argument's fault, 2, whatever the reason; a failure while writing (disk full) is 1.
check_bad "output dir cannot be created" "a_file/sub" "$LOOM" run addmul.onnx -o a_file/sub
mkdir -p ro_dir && chmod 555 ro_dir
if [ "$(id -u)" -ne 0 ]; then
    check_bad "read-only output dir" "ro_dir" "$LOOM" run addmul.onnx -o ro_dir
elif command -v setpriv >/dev/null 2>&1; then
    # Root writes anywhere: the check runs as nobody, in a folder nobody can read.
    chmod 755 "$TMP" && chmod 644 addmul.onnx
    check_bad "read-only output dir (as nobody)" "ro_dir" setpriv --reuid=65534 --regid=65534 \
        --clear-groups "$LOOM" run addmul.onnx -o ro_dir
    chmod 700 "$TMP"
else
    echo "skip the read-only output dir: root writes anywhere and setpriv is missing"
fi
chmod 755 ro_dir
# An option expecting a value does not take the next option as its value.
check_bad "--device followed by -o" "option --device needs a value" \
    "$LOOM" run addmul.onnx --device -o dev_swallow
[ ! -e dev_swallow ] || bad "--device -o: nothing written"

# ---- writing outputs: whole files, by rename ----------------------------------------------------
check "first run into a folder" 0 "$LOOM" run addmul.onnx -i x=x.npy -i y=y.npy -o again
[ ! -s "$TMP/err" ] || bad "first run: nothing on stderr"
check "second run replaces the outputs" 0 "$LOOM" run addmul.onnx -i x=y.npy -i y=y.npy -o again
grep -qF "replaced the existing file 'again/prod.npy'" "$TMP/err" || bad "replacing a file is said"
pycheck "replaced output holds the new result" <<'PY'
import numpy as np
y = np.load("y.npy")
np.testing.assert_allclose(np.load("again/prod.npy"), y * y, rtol=1e-6)
PY
mkdir -p linked && echo precious >victim.txt && ln -sf ../victim.txt linked/prod.npy
check_bad "symlink at an output name is refused" "linked/prod.npy" "$LOOM" run addmul.onnx -o linked
grep -q "symbolic link" "$TMP/err" || bad "symlink refusal says why"
[ "$(cat victim.txt)" = precious ] || bad "the symlink's target is untouched"
# A write that fails part way (the file-size limit, as a full disk would): exit 1, one line, the
# old file intact and no partial or temporary file left.
mkdir -p fsz && "$LOOM" run big.onnx -o fsz >/dev/null 2>&1 && cp fsz/y.npy old_y.npy
check "write failing part way" 1 bash -c "ulimit -f 2; trap '' XFSZ; exec \"\$0\" run big.onnx -i x=big_x.npy -o fsz" "$LOOM"
[ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "fsz/y.npy" "$TMP/err" || { bad "failed write: one line naming the file"; cat "$TMP/err"; }
cmp -s fsz/y.npy old_y.npy || bad "failed write: the old file is intact"
[ -z "$(ls -A fsz | grep -v '^y.npy$')" ] || { bad "failed write left files"; ls -A fsz; }

# ---- output shapes that depend on values: staged through loom_model ---------------------------
VD="$2/tests/data/value_dependent/chain.onnx"
"$PY" -c 'import numpy as np; np.save("vd_x.npy", np.array([[1, 0, 2], [0.25, 3, 0.5]], np.float32))'
check "run: NonZero chain, staged" 0 "$LOOM" run "$VD" -i x=vd_x.npy -o vd
grep -q "staged" "$TMP/out" || { bad "staged run: the report says it was staged"; cat "$TMP/out"; }
"$PY" - <<'PYEOF' || bad "staged run: outputs"
import numpy as np
x = np.load("vd_x.npy")
nz = np.load("vd/nz.npy"); y = np.load("vd/y.npy"); z = np.load("vd/z.npy")
assert (nz == np.array(np.nonzero(x > 0.5))).all(), nz
assert np.allclose(y, 2 * x[x > 0.5]), y
assert np.allclose(z, np.unique(x[x > 0.5]) + x.sum()), z
PYEOF
# A count that sizes a later tensor (Range): the model does not import as one graph at all.
"$PY" -c 'import numpy as np; np.save("vd_u.npy", np.array([3, 1, 3, 5, 1], np.int64))'
check "run: count-sized Range, staged" 0 "$LOOM" run "$2/tests/data/value_dependent/unique_range.onnx" \
    -i x=vd_u.npy -o vdr
"$PY" -c 'import numpy as np; r = np.load("vdr/r.npy"); assert (r == np.arange(5)).all(), r' ||
    bad "staged run: Range output"
check_bad "run: staged model, dim without a value" "--dim n=VALUE" "$LOOM" run \
    "$2/tests/data/value_dependent/unique_range.onnx"
check "profile: NonZero chain is refused" 1 env LOOM_NO_CALIBRATE=1 "$LOOM" profile "$VD" \
    --dim a=2 --dim b=3 --repeat 1 --warmup 0
[ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "'nz' (NonZero)" "$TMP/err" ||
    { bad "profile: one line naming the value-dependent node"; cat "$TMP/err"; }

# ---- one exit-status rule for every command: the same bad file, the same status ----------------
for m in unknown_op unknown_domain old_opset complex_dtype rank9; do
    check_bad "run: bad model $m" "bad_$m.onnx" "$LOOM" run "bad_$m.onnx"
    check_bad "profile: bad model $m" "bad_$m.onnx" env LOOM_NO_CALIBRATE=1 "$LOOM" profile \
        "bad_$m.onnx" --repeat 1 --warmup 0
done
for f in bad_unknown_op.onnx claim2g.npy no-such-file; do
    check_bad "run: $f as a model" "$f" "$LOOM" run "./$f"
    check_bad "profile: $f as a model" "$f" env LOOM_NO_CALIBRATE=1 "$LOOM" profile "./$f"
    check_bad "sim: $f as an instance" "$f" "$LOOM" sim "./$f"
    check_bad "backend-test: $f as a plugin" "$f" "$LOOM" backend-test "./$f"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
