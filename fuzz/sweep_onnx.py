#!/usr/bin/python3
"""Sweep malformed ONNX models through the `loom` command (issue 17).

Writes about a hundred hostile or broken models into a temporary folder (truncations and bit
flips of valid models, subgraphs and types nested thousands deep, external data that claims
terabytes, escapes the model's folder through symlinks or is a FIFO, graphs that break single
assignment or form a cycle, control characters in names, dimensions without value) and runs
`loom run` and `loom profile` on each under `timeout`. It reports, and exits 1 on, any crash
(a signal, or a sanitizer's report on stderr), any hang, any exit status other than 0, 1 or 2,
any stderr that is not one line, any raw control character on stderr, and any bad-input model
that does not exit 2.

    fuzz/sweep_onnx.py LOOM_BINARY [--keep DIR] [--timeout S]

Build the binary with -Db_sanitize=address,undefined for the sanitizers' verdict. Needs
python3-onnx and python3-numpy.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fld(n, payload):
    return varint(n << 3 | 2) + varint(len(payload)) + payload


def fint(n, v):
    return varint(n << 3) + varint(v)


def raw_model(graph):
    return fint(1, 8) + fld(8, fint(2, 13)) + fld(7, graph)


def model_bytes(nodes, inputs, outputs, inits=(), opset=13):
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def vi(name, dims, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, dims)


def external(name, dims, location, offset=None):
    t = onnx.TensorProto()
    t.name = name
    t.data_type = T.FLOAT
    t.dims.extend(dims)
    t.data_location = T.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    if offset is not None:
        e = t.external_data.add()
        e.key, e.value = "offset", str(offset)
    return t


def valid_models():
    """A few valid models to cut and flip."""
    x, y = vi("x", [2, 4]), vi("y", [2, 3])
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    b = numpy_helper.from_array(np.ones(3, dtype=np.float32), "b")
    mlp = model_bytes([h.make_node("MatMul", ["x", "w"], ["h"]),
                       h.make_node("Add", ["h", "b"], ["a"]),
                       h.make_node("Relu", ["a"], ["y"])], [x], [y], [w, b])
    shape = numpy_helper.from_array(np.array([4, 2], dtype=np.int64), "s")
    reshape = model_bytes([h.make_node("Reshape", ["x", "s"], ["r"]),
                           h.make_node("Softmax", ["r"], ["y"], axis=-1)],
                          [x], [vi("y", [4, 2])], [shape])
    then_g = h.make_graph([h.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", [2, 4])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [2, 4])])
    iff = model_bytes([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                      [vi("c", [], T.BOOL), x], [vi("y", [2, 4])])
    conv = model_bytes([h.make_node("Conv", ["x", "k"], ["y"], pads=[1, 1, 1, 1])],
                       [vi("x", [1, 1, 4, 4])], [vi("y", [1, 1, 4, 4])],
                       [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "k")])
    return {"mlp": mlp, "reshape": reshape, "if": iff, "conv": conv}


def hostile(d):
    """(name, bytes or None, expect) — expect: 'bad' (exit 2), 'ok' (0) or 'any' (0, 1, 2)."""
    out = []
    x, y = vi("x", [4]), vi("y", [4])
    # Nesting thousands deep.
    for levels, op, attr in ((3000, b"If", b"then_branch"), (5000, b"If", b"then_branch"),
                             (3000, b"Loop", b"body")):
        g = b""
        for _ in range(levels):
            node = fld(1, b"c") + fld(2, b"o") + fld(4, op) + fld(5, fld(1, attr) + fint(20, 5) +
                                                                   fld(6, g))
            g = fld(1, node) + fld(12, fld(1, b"o"))
        out.append((f"nested_{op.decode()}_{levels}", raw_model(g), "bad"))
    t = fld(1, fint(1, 1))
    for _ in range(20000):
        t = fld(4, fld(1, t))
    out.append(("nested_sequence_20000", raw_model(fld(11, fld(1, b"x") + fld(2, t))), "bad"))
    # Invalid graphs.
    out.append(("two_writers", model_bytes([h.make_node("Relu", ["x"], ["y"], name="a"),
                                            h.make_node("Neg", ["x"], ["y"], name="b")],
                                           [x], [y]), "bad"))
    out.append(("split_y_y", model_bytes([h.make_node("Split", ["x"], ["y", "y"], axis=0,
                                                      split=[2, 2])], [x], [vi("y", [2])],
                                         opset=11), "bad"))
    out.append(("writes_own_input", model_bytes([h.make_node("Relu", ["x"], ["t"]),
                                                 h.make_node("Add", ["t", "y"], ["y"])],
                                                [x], [y]), "bad"))
    out.append(("writes_graph_input", model_bytes([h.make_node("Relu", ["x"], ["x"])], [x], [x]),
                "bad"))
    out.append(("output_twice", model_bytes([h.make_node("Relu", ["x"], ["y"])], [x], [y, y]),
                "bad"))
    out.append(("cycle", model_bytes([h.make_node("Relu", ["b"], ["a"], name="A"),
                                      h.make_node("Neg", ["a"], ["b"], name="B"),
                                      h.make_node("Abs", ["a"], ["y"], name="C")], [x], [y]),
                "bad"))
    out.append(("out_of_order", model_bytes([h.make_node("Abs", ["a"], ["y"]),
                                             h.make_node("Relu", ["x"], ["a"])], [x], [y]),
                "ok"))
    # Control characters in names.
    out.append(("control_op", model_bytes([h.make_node("Evil\x1b]0;owned\x07", ["x"], ["y"])],
                                          [x], [y]), "bad"))
    out.append(("control_node", model_bytes([h.make_node("Add", ["x", "q\x1b[2J"], ["y"],
                                                         name="n\x1b[31m")], [x], [y]), "bad"))
    # Dimensions without value.
    out.append(("dim_symbolic", model_bytes([h.make_node("Relu", ["x"], ["y"])],
                                            [vi("x", ["batch", 4])], [vi("y", ["batch", 4])]),
                "any"))
    neg = vi("x", [2, 4])
    neg.type.tensor_type.shape.dim[0].dim_value = -3
    out.append(("dim_negative", model_bytes([h.make_node("Relu", ["x"], ["y"])], [neg],
                                            [vi("y", [2, 4])]), "bad"))
    # External data.
    os.makedirs(os.path.join(d, "outside"), exist_ok=True)
    with open(os.path.join(d, "outside", "secret.bin"), "wb") as f:
        f.write(b"SECRET!!" * 2)
    with open(os.path.join(d, "w16.bin"), "wb") as f:
        f.write(np.arange(4, dtype=np.float32).tobytes())
    for name, loc, dims, expect in (("ext_ok", "w16.bin", [4], "ok"),
                                    ("ext_huge", "w16.bin", [1 << 20, 1 << 20], "bad"),
                                    ("ext_short", "w16.bin", [8], "bad"),
                                    ("ext_dotdot", "../outside/secret.bin", [4], "bad"),
                                    ("ext_absolute", os.path.join(d, "outside/secret.bin"), [4],
                                     "bad"),
                                    ("ext_symlink_file", "link_secret.bin", [4], "bad"),
                                    ("ext_symlink_etc", "link_passwd.bin", [4], "bad"),
                                    ("ext_symlink_dir", "linkdir/secret.bin", [4], "bad"),
                                    ("ext_fifo", "fifo.bin", [4], "bad"),
                                    ("ext_directory", "outside", [4], "bad"),
                                    ("ext_missing", "nope.bin", [4], "bad")):
        ys = vi("y", dims)
        out.append((name, model_bytes([h.make_node("Identity", ["w"], ["y"])], [], [ys],
                                      [external("w", dims, loc)]), expect))
    out.append(("ext_offset_huge", model_bytes([h.make_node("Identity", ["w"], ["y"])], [],
                                               [y], [external("w", [4], "w16.bin",
                                                              1 << 62)]), "bad"))
    os.symlink(os.path.join(d, "outside", "secret.bin"), os.path.join(d, "link_secret.bin"))
    os.symlink("/etc/passwd", os.path.join(d, "link_passwd.bin"))
    os.symlink(os.path.join(d, "outside"), os.path.join(d, "linkdir"))
    os.mkfifo(os.path.join(d, "fifo.bin"))
    return out


def mutants(valid, rng):
    out = []
    for name, data in valid.items():
        for k in range(6):  # truncations
            n = rng.randrange(1, len(data))
            out.append((f"{name}_cut{n}", data[:n], "bad"))
        for k in range(10):  # bit flips
            b = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            out.append((f"{name}_flip{k}", bytes(b), "any"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("loom")
    ap.add_argument("--keep")
    ap.add_argument("--timeout", type=int, default=60)
    args = ap.parse_args()
    d = args.keep or tempfile.mkdtemp(prefix="loom-sweep-")
    os.makedirs(d, exist_ok=True)
    rng = random.Random(17)
    cases = hostile(d) + mutants(valid_models(), rng)
    env = dict(os.environ, LOOM_NO_CALIBRATE="1", ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    problems, codes = [], {}
    for name, data, expect in cases:
        path = os.path.join(d, name + ".onnx")
        with open(path, "wb") as f:
            f.write(data)
        for cmd in (["run", path, "-o", os.path.join(d, "out-" + name)],
                    ["profile", path, "--repeat", "1"]):
            try:
                p = subprocess.run(["timeout", str(args.timeout), args.loom] + cmd, env=env,
                                   capture_output=True, timeout=args.timeout + 30)
                rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
            except subprocess.TimeoutExpired:
                rc, err = 124, ""
            codes[rc] = codes.get(rc, 0) + 1
            what = f"{cmd[0]} {name}: exit {rc}"
            lines = [ln for ln in err.splitlines() if ln.strip()]
            if rc == 124:
                problems.append(what + " (hang)")
            elif rc < 0 or rc > 2:
                problems.append(what + " (crash or undocumented status): " + err.strip()[-600:])
            elif "Sanitizer" in err or "runtime error:" in err:
                problems.append(what + " (sanitizer): " + err.strip()[-600:])
            elif expect == "bad" and rc != 2:
                problems.append(what + f" (bad input must exit 2): {err.strip()[:300]}")
            elif expect == "ok" and rc != 0:
                problems.append(what + f" (should load): {err.strip()[:300]}")
            elif rc != 0 and len(lines) != 1:
                problems.append(what + f" ({len(lines)} lines on stderr): {err[:300]}")
            if any(ord(c) < 0x20 and c not in "\n" for c in err):
                problems.append(what + " (raw control character on stderr)")
            if "SECRET" in err or "root:" in err:
                problems.append(what + " (external data escaped the folder)")
    print(f"{len(cases)} models, {2 * len(cases)} runs; exit statuses: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    for p in problems:
        print("PROBLEM:", p)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
