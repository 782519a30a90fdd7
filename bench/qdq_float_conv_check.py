#!/usr/bin/python3
"""A QDQ Conv whose output stays float (issue 14, part 3): the fuse_qdq pass runs it as
ConvInteger (the int8 kernel) + DequantizeLinear. Writes a model where it happens, in the layout
quantize_static uses (uint8 activations, int8 weights per output channel, int32 bias at
s_x * s_w):

  x [1, 16, 40, 40] -> Q/DQ -> Conv 3x3 32 + Relu -> Q/DQ -> Conv 3x3 s2 48 -> Relu -> y (float)

(the first Conv has a QuantizeLinear after it: QLinearConv; the second does not), then runs it
with Loom (fused, and LOOM_FUSE_QDQ=0: float Conv over the dequantised values) and ONNX Runtime
(scripts/ort, when installed) on the same seeded input, and prints how far the outputs are from
each other and from float64 numpy loops over the dequantised values, and each run's median
latency. Prints figures only; asserts nothing.

Usage: qdq_float_conv_check.py LOOM [WORKDIR] [--threads T] [--repeat N]
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, m, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            y += np.einsum("mc,nchw->nmhw", w[:, :, i, j], patch)
    return y + b[None, :, None, None]


def quant(x, s, z):
    return np.clip(np.round(x / s) + z, 0, 255)


def main():
    args = [a for a in sys.argv[1:]]
    threads, repeat = 1, 30
    if "--threads" in args:
        i = args.index("--threads")
        threads = int(args[i + 1])
        del args[i:i + 2]
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    loom = args[0]
    work = args[1] if len(args) > 1 else "/tmp/loom-qdq-float"
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(1414)
    x = rng.standard_normal((1, 16, 40, 40)).astype(np.float32)
    spec = [(16, 32, 1), (32, 48, 2)]
    ws = [(rng.standard_normal((co, ci, 3, 3)) * np.sqrt(2.0 / (ci * 9))).astype(np.float32)
          for ci, co, _ in spec]
    bs = [(rng.standard_normal(co) * 0.05).astype(np.float32) for _, co, _ in spec]
    # Activation ranges from the float model on this input (a one-sample calibration).
    a0 = x
    a1 = np.maximum(conv2d(a0.astype(np.float64), ws[0], bs[0], 1, 1), 0)
    acts = []
    for a in (a0, a1):
        lo, hi = min(0.0, float(a.min())), max(0.0, float(a.max()))
        s = np.float32((hi - lo) / 255.0)
        acts.append((s, np.uint8(np.clip(np.round(-lo / s), 0, 255))))

    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], name=out + "_node", **kw))
        return out

    cur = "x"
    wq_all, sw_all, bq_all = [], [], []
    for i, ((ci, co, st), w, b) in enumerate(zip(spec, ws, bs)):
        s, z = acts[i]
        q = node("QuantizeLinear", [cur, const(f"s{i}", s), const(f"z{i}", z)], f"q{i}")
        dq = node("DequantizeLinear", [q, f"s{i}", f"z{i}"], f"dq{i}")
        sw = (np.abs(w).max(axis=(1, 2, 3)) / 127.0).astype(np.float32)
        wq = np.clip(np.round(w / sw[:, None, None, None]), -127, 127).astype(np.int8)
        bq = np.round(b / (s * sw)).astype(np.int32)
        wq_all.append(wq)
        sw_all.append(sw)
        bq_all.append(bq)
        wdq = node("DequantizeLinear", [const(f"w{i}", wq), const(f"ws{i}", sw),
                                        const(f"wz{i}", np.zeros(co, np.int8))], f"wdq{i}",
                   axis=0)
        bdq = node("DequantizeLinear", [const(f"b{i}", bq), const(f"bs{i}", (s * sw).astype(np.float32)),
                                        const(f"bz{i}", np.zeros(co, np.int32))], f"bdq{i}", axis=0)
        c = node("Conv", [dq, wdq, bdq], f"conv{i}", pads=[1, 1, 1, 1], strides=[st, st],
                 kernel_shape=[3, 3])
        cur = node("Relu", [c], f"relu{i}" if i == 0 else "y")
    g = helper.make_graph(nodes, "qdq_float_conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48, 20, 20])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    path = os.path.join(work, "qdq_float_conv.onnx")
    onnx.save(m, path)
    inp = os.path.join(work, "x.npy")
    np.save(inp, x)

    # float64 loops over the dequantised values.
    h = x.astype(np.float64)
    for i, ((ci, co, st), wq, sw, bq) in enumerate(zip(spec, wq_all, sw_all, bq_all)):
        s, z = acts[i]
        h = (quant(h.astype(np.float32), s, float(z)) - float(z)) * float(s)
        h = np.maximum(conv2d(h, wq * sw[:, None, None, None].astype(np.float64),
                              bq * (s * sw).astype(np.float64), st, 1), 0)
    ref = h

    env = dict(os.environ, LOOM_CPU_THREADS=str(threads), LOOM_NO_CALIBRATE="1")
    outs, times = {}, {}

    def run_loom(tag, extra):
        d = os.path.join(work, tag)
        r = subprocess.run([loom, "run", path, "-i", f"x={inp}", "-o", d, "--repeat", str(repeat),
                            "--json"], env=dict(env, **extra), capture_output=True, text=True,
                           check=True)
        times[tag] = json.loads(r.stdout)["latency_ms"]["median"]
        outs[tag] = np.load(glob.glob(os.path.join(d, "*.npy"))[0]).astype(np.float64)

    run_loom("loom_fused", {})
    run_loom("loom_unfused", {"LOOM_FUSE_QDQ": "0"})
    prof = subprocess.run([loom, "profile", path, "--repeat", "3"], env=env, capture_output=True,
                          text=True)
    ops = [ln.split()[1] for ln in prof.stdout.splitlines()[2:] if ln.strip() and
           not ln.startswith(("DEVICE", "cpu", "latency", "predicted", "placed", "intermediate",
                              "placement", "learning"))]
    ort = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "ort",
                       "run_ort.js")
    d = os.path.join(work, "ort")
    r = subprocess.run(["node", ort, path, "-i", f"x={inp}", "-o", d, "--threads", str(threads),
                        "--repeat", str(repeat), "--json"], capture_output=True, text=True)
    if r.returncode == 0:
        j = json.loads(r.stdout)
        times["ort"] = j.get("median_ms") or (j.get("latency_ms") or {}).get("median")
        outs["ort"] = np.load(glob.glob(os.path.join(d, "*.npy"))[0]).astype(np.float64)
    print(f"fused plan ops: {' '.join(ops)}")
    top = np.abs(ref).max()
    for tag, y in outs.items():
        print(f"{tag:13s} median {times[tag]:.3f} ms; max |y - float64 loops| {np.abs(y - ref).max():.3g} "
              f"(of max |y| {top:.3g}); max |y - loom_unfused| {np.abs(y - outs['loom_unfused']).max():.3g}")


if __name__ == "__main__":
    main()
