#!/usr/bin/python3
"""Write statically quantised models in QDQ form (issue 14, part 3), as ONNX Runtime's
quantize_static lays them out: every quantised operator's inputs come through
QuantizeLinear -> DequantizeLinear (uint8 activations, one scale and zero point per tensor from a
calibration run), weights are int8 constants dequantised per output channel (symmetric), biases
int32 at the scale s_x * s_w, and an operator's output is quantised again (after its Relu).

  cnn_qdq.onnx  x [1, 3, 96, 96]: four 3x3 Conv + Relu (32, 64 s2, 64, 128 s2 channels),
                GlobalAveragePool, Flatten, Gemm 128 -> 10
  mlp_qdq.onnx  x [64, 512]: Gemm 512 -> 1024, Relu, Gemm 1024 -> 1024, Relu, Gemm 1024 -> 256
                (transB = 1, as PyTorch exports Linear)
  cnn_f32.onnx, mlp_f32.onnx: the float models they were quantised from
  input_cnn.npy, input_mlp.npy: a seeded input each

Calibration runs the float model in numpy on 8 seeded inputs. Prints nothing but the paths.

Usage: make_qdq.py OUTDIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(14)


def conv2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    cols = np.empty((n, c * kh * kw, oh * ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            cols[:, (np.arange(c) * kh + i) * kw + j, :] = patch.reshape(n, c, oh * ow)
    y = np.einsum("mk,nkp->nmp", w.reshape(m, -1), cols) + b[None, :, None]
    return y.reshape(n, m, oh, ow).astype(np.float32)


def act_params(lo, hi):
    lo, hi = min(0.0, float(lo)), max(0.0, float(hi))
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(np.round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


class Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def node(self, op, ins, base, **attrs):
        out = self.name(base)
        self.nodes.append(helper.make_node(op, ins, [out], name=out + "_node", **attrs))
        return out

    def qdq(self, x, scale, zp):
        s, z = self.const("s", scale), self.const("zp", zp)
        q = self.node("QuantizeLinear", [x, s, z], "q")
        return self.node("DequantizeLinear", [q, s, z], "dq")

    def weight(self, w, axis):
        """int8 symmetric per output channel along AXIS; returns (dequantised name, scales)."""
        red = tuple(i for i in range(w.ndim) if i != axis)
        sw = (np.abs(w).max(axis=red) / 127.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        wq = np.clip(np.round(w / sw.reshape(shape)), -127, 127).astype(np.int8)
        dq = self.node("DequantizeLinear", [self.const("w", wq), self.const("ws", sw),
                                            self.const("wz", np.zeros(sw.shape, np.int8))],
                       "wdq", axis=axis)
        return dq, sw

    def bias(self, b, sx, sw):
        s = (sx * sw).astype(np.float32)
        bq = np.round(b / s).astype(np.int32)
        return self.node("DequantizeLinear", [self.const("b", bq), self.const("bs", s),
                                              self.const("bz", np.zeros(s.shape, np.int32))],
                         "bdq", axis=0)


def save(path, b, inp, shape, out, out_shape):
    g = helper.make_graph(b.nodes, os.path.basename(path)[:-5],
                          [helper.make_tensor_value_info(inp, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                          b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    onnx.save(m, path)


def cnn(outdir):
    spec = [(3, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
    ws = [(rng.standard_normal((co, ci, 3, 3)) * np.sqrt(2.0 / (ci * 9))).astype(np.float32)
          for ci, co, _ in spec]
    bs = [(rng.standard_normal(co) * 0.05).astype(np.float32) for _, co, _ in spec]
    fw = (rng.standard_normal((10, 128)) * np.sqrt(1.0 / 128)).astype(np.float32)
    fb = (rng.standard_normal(10) * 0.05).astype(np.float32)

    def forward(x):
        acts = [x]
        for (_, _, s), w, b in zip(spec, ws, bs):
            x = np.maximum(conv2d(x, w, b, s, 1), 0)
            acts.append(x)
        x = x.mean(axis=(2, 3))
        acts.append(x)
        return acts, x @ fw.T + fb

    cal = [rng.standard_normal((1, 3, 96, 96)).astype(np.float32) for _ in range(8)]
    runs = [forward(x)[0] for x in cal]
    params = [act_params(min(r[i].min() for r in runs), max(r[i].max() for r in runs))
              for i in range(len(runs[0]))]

    for quant in (False, True):
        b = Builder()
        x = "x"
        for i, ((_, _, s), w, bias) in enumerate(zip(spec, ws, bs)):
            if quant:
                sx = params[i][0]
                xin = b.qdq(x, *params[i])
                wdq, sw = b.weight(w, 0)
                y = b.node("Conv", [xin, wdq, b.bias(bias, sx, sw)], "conv",
                           pads=[1, 1, 1, 1], strides=[s, s], kernel_shape=[3, 3])
            else:
                y = b.node("Conv", [x, b.const("w", w), b.const("b", bias)], "conv",
                           pads=[1, 1, 1, 1], strides=[s, s], kernel_shape=[3, 3])
            x = b.node("Relu", [y], "relu")
        if quant:
            x = b.qdq(x, *params[4])
        x = b.node("GlobalAveragePool", [x], "gap")
        x = b.node("Flatten", [x], "flat")
        if quant:
            sx = params[5][0]
            x = b.qdq(x, *params[5])
            wdq, sw = b.weight(fw, 0)
            y = b.node("Gemm", [x, wdq, b.bias(fb, sx, sw)], "fc", transB=1)
        else:
            y = b.node("Gemm", [x, b.const("w", fw), b.const("b", fb)], "fc", transB=1)
        save(os.path.join(outdir, "cnn_qdq.onnx" if quant else "cnn_f32.onnx"), b, "x",
             [1, 3, 96, 96], y, [1, 10])
    np.save(os.path.join(outdir, "input_cnn.npy"), cal[0])


def mlp(outdir):
    dims = [512, 1024, 1024, 256]
    ws = [(rng.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(np.float32)
          for i, o in zip(dims, dims[1:])]
    bs = [(rng.standard_normal(o) * 0.05).astype(np.float32) for o in dims[1:]]

    def forward(x):
        acts = [x]
        for k, (w, b) in enumerate(zip(ws, bs)):
            x = x @ w.T + b
            if k + 1 < len(ws):
                x = np.maximum(x, 0)
            acts.append(x)
        return acts

    cal = [rng.standard_normal((64, 512)).astype(np.float32) for _ in range(8)]
    runs = [forward(x) for x in cal]
    params = [act_params(min(r[i].min() for r in runs), max(r[i].max() for r in runs))
              for i in range(len(runs[0]))]
    for quant in (False, True):
        b = Builder()
        x = "x"
        for k, (w, bias) in enumerate(zip(ws, bs)):
            if quant:
                sx = params[k][0]
                xin = b.qdq(x, *params[k])
                wdq, sw = b.weight(w, 0)
                x = b.node("Gemm", [xin, wdq, b.bias(bias, sx, sw)], "fc", transB=1)
            else:
                x = b.node("Gemm", [x, b.const("w", w), b.const("b", bias)], "fc", transB=1)
            if k + 1 < len(ws):
                x = b.node("Relu", [x], "relu")
        save(os.path.join(outdir, "mlp_qdq.onnx" if quant else "mlp_f32.onnx"), b, "x",
             [64, 512], x, [64, 256])
    np.save(os.path.join(outdir, "input_mlp.npy"), cal[0])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cnn(out)
    mlp(out)
    for f in sorted(os.listdir(out)):
        print(os.path.join(out, f))


if __name__ == "__main__":
    main()
