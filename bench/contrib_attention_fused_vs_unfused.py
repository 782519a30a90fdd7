#!/usr/bin/python3
"""Is each com.microsoft transformer operator Loom lowers (Attention, MultiHeadAttention,
EmbedLayerNormalization, RotaryEmbedding, MatMulNBits) at least as fast as the unfused ONNX graph
it replaces? Builds both forms of each at a BERT-small-like size (batch 2, sequence 128, hidden
384, 6 heads; weights as initializers), checks with `loom run` that they compute the same
outputs on the same inputs, then times them with `loom run --repeat N --json`, alternating the
two forms ROUNDS times, and prints the median of the per-round medians and the smallest
per-round minimum (ms; on a shared machine the minimum is the steadier figure).

    bench/contrib_attention_fused_vs_unfused.py LOOM [--repeat 50] [--rounds 5]
The unfused graphs are what exporters emit before ONNX Runtime's transformer optimizer fuses
them: separate Q/K/V MatMul + Add, Reshape, Transpose, MatMul, Div, Add of the mask, Softmax,
MatMul, Transpose, Reshape; Gather + Add + LayerNormalization; Slice/Neg/Concat rotate_half with
Gather'ed cos/sin; MatMul with the dequantized weight. Figures only: nothing is asserted.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto as TP, helper, numpy_helper

B, S, H, N = 2, 128, 384, 6
D = H // N
MS = "com.microsoft"
rng = np.random.default_rng(5)


def t(name, a):
    return numpy_helper.from_array(np.ascontiguousarray(a), name)


def vi(name, shape, ty=TP.FLOAT):
    return helper.make_tensor_value_info(name, ty, shape)


def model(path, nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    onnx.save(m, path)


def node(op, ins, outs, **kw):
    return helper.make_node(op, ins, outs, **kw)


def c64(name, v):
    return t(name, np.array(v, np.int64))


def unfused_attention(prefix, q, k, v, mask_add, nodes, inits):
    """Scaled dot-product attention over [B, S, H] q, k, v as exporters write it."""
    inits += [c64(prefix + "shape4", [B, S, N, D]), c64(prefix + "shape3", [B, S, H]),
              t(prefix + "sqrt_d", np.array(np.sqrt(D), np.float32))]
    for x, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])):
        nodes += [node("Reshape", [x, prefix + "shape4"], [x + "_4"]),
                  node("Transpose", [x + "_4"], [x + "_t"], perm=perm)]
    nodes += [node("MatMul", [q + "_t", k + "_t"], [prefix + "qk"]),
              node("Div", [prefix + "qk", prefix + "sqrt_d"], [prefix + "qk_s"]),
              node("Add", [prefix + "qk_s", mask_add], [prefix + "qk_m"]),
              node("Softmax", [prefix + "qk_m"], [prefix + "p"], axis=-1),
              node("MatMul", [prefix + "p", v + "_t"], [prefix + "ctx"]),
              node("Transpose", [prefix + "ctx"], [prefix + "ctx_t"], perm=[0, 2, 1, 3]),
              node("Reshape", [prefix + "ctx_t", prefix + "shape3"], ["y"])]


def mask_add_nodes(nodes, inits):
    """[B, S] int32 0/1 mask -> (1 - mask) * -10000 as [B, 1, 1, S] float."""
    inits += [t("one", np.array(1.0, np.float32)), t("filt", np.array(-10000.0, np.float32)),
              c64("mask_shape", [B, 1, 1, S])]
    nodes += [node("Cast", ["mask"], ["mask_f"], to=TP.FLOAT),
              node("Sub", ["one", "mask_f"], ["inv"]),
              node("Mul", ["inv", "filt"], ["madd2"]),
              node("Reshape", ["madd2", "mask_shape"], ["madd"])]


def build(tmp):
    cases = []
    # ---- Attention
    w = (rng.standard_normal((H, 3 * H)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal(3 * H) * 0.05).astype(np.float32)
    ins = [vi("x", [B, S, H]), vi("mask", [B, S], TP.INT32)]
    fused = os.path.join(tmp, "attention_fused.onnx")
    model(fused, [node("Attention", ["x", "w", "bias", "mask"], ["y"], domain=MS, num_heads=N)],
          ins, [vi("y", [B, S, H])], [t("w", w), t("bias", bias)])
    nodes, inits = [], []
    for i, nm in enumerate("qkv"):
        inits += [t("w" + nm, w[:, i * H:(i + 1) * H]), t("b" + nm, bias[i * H:(i + 1) * H])]
        nodes += [node("MatMul", ["x", "w" + nm], [nm + "0"]),
                  node("Add", [nm + "0", "b" + nm], [nm])]
    mask_add_nodes(nodes, inits)
    unfused_attention("a_", "q", "k", "v", "madd", nodes, inits)
    unfused = os.path.join(tmp, "attention_unfused.onnx")
    model(unfused, nodes, ins, [vi("y", [B, S, H])], inits)
    cases.append(("Attention", fused, unfused, {"mask": "mask"}))
    # ---- MultiHeadAttention (Q, K, V given, bias, key_padding_mask)
    ins = [vi("q", [B, S, H]), vi("k", [B, S, H]), vi("v", [B, S, H]),
           vi("mask", [B, S], TP.INT32)]
    fused = os.path.join(tmp, "mha_fused.onnx")
    model(fused, [node("MultiHeadAttention", ["q", "k", "v", "bias", "mask"], ["y"], domain=MS,
                       num_heads=N)], ins, [vi("y", [B, S, H])], [t("bias", bias)])
    nodes, inits = [], []
    for i, nm in enumerate("qkv"):
        inits.append(t("b" + nm, bias[i * H:(i + 1) * H]))
        nodes.append(node("Add", [nm, "b" + nm], [nm + "b"]))
    mask_add_nodes(nodes, inits)
    unfused_attention("m_", "qb", "kb", "vb", "madd", nodes, inits)
    unfused = os.path.join(tmp, "mha_unfused.onnx")
    model(unfused, nodes, ins, [vi("y", [B, S, H])], inits)
    cases.append(("MultiHeadAttention", fused, unfused, {"mask": "mask"}))
    # ---- EmbedLayerNormalization (BERT: word, position, segment; mask_index unused)
    V, P = 1000, 512
    word = rng.standard_normal((V, H)).astype(np.float32)
    pos = rng.standard_normal((P, H)).astype(np.float32)
    seg = rng.standard_normal((2, H)).astype(np.float32)
    gamma = rng.standard_normal(H).astype(np.float32)
    beta = rng.standard_normal(H).astype(np.float32)
    winit = [t("word", word), t("pos", pos), t("seg", seg), t("gamma", gamma), t("beta", beta)]
    ins = [vi("ids", [B, S], TP.INT32), vi("segids", [B, S], TP.INT32)]
    fused = os.path.join(tmp, "embed_fused.onnx")
    model(fused, [node("EmbedLayerNormalization", ["ids", "segids", "word", "pos", "seg", "gamma",
                                                   "beta"], ["y"], domain=MS, epsilon=1e-12)],
          ins, [vi("y", [B, S, H])], winit)
    unfused = os.path.join(tmp, "embed_unfused.onnx")
    model(unfused, [node("Gather", ["word", "ids"], ["we"]),
                    node("Gather", ["pos", "positions"], ["pe"]),
                    node("Gather", ["seg", "segids"], ["se"]),
                    node("Add", ["we", "pe"], ["s1"]), node("Add", ["s1", "se"], ["s2"]),
                    node("LayerNormalization", ["s2", "gamma", "beta"], ["y"], axis=-1,
                         epsilon=1e-12)],
          ins, [vi("y", [B, S, H])], winit + [t("positions", np.arange(S, dtype=np.int64))])
    cases.append(("EmbedLayerNormalization", fused, unfused, {"ids": (0, V), "segids": (0, 2)}))
    # ---- RotaryEmbedding on [B, S, H] (6 heads of 64, half split), per-token positions
    M = 256
    inv = 1.0 / (10000 ** (np.arange(0, D, 2) / D))
    ang = np.arange(M)[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    ins = [vi("x", [B, S, H]), vi("pids", [B, S], TP.INT64)]
    fused = os.path.join(tmp, "rotary_fused.onnx")
    model(fused, [node("RotaryEmbedding", ["x", "pids", "cos", "sin"], ["y"], domain=MS)],
          ins, [vi("y", [B, S, H])], [t("cos", cos), t("sin", sin)])
    cos2 = np.concatenate([cos, cos], 1)
    sin2 = np.concatenate([sin, sin], 1)
    unfused = os.path.join(tmp, "rotary_unfused.onnx")
    model(unfused, [node("Reshape", ["x", "s4"], ["x4"]),
                    node("Gather", ["cos2", "pids"], ["c"]), node("Gather", ["sin2", "pids"], ["s"]),
                    node("Unsqueeze", ["c", "ax2"], ["cu"]), node("Unsqueeze", ["s", "ax2"], ["su"]),
                    node("Slice", ["x4", "z", "h", "ax3"], ["x1"]),
                    node("Slice", ["x4", "h", "d", "ax3"], ["x2"]),
                    node("Neg", ["x2"], ["nx2"]),
                    node("Concat", ["nx2", "x1"], ["rot"], axis=-1),
                    node("Mul", ["x4", "cu"], ["xc"]), node("Mul", ["rot", "su"], ["rs"]),
                    node("Add", ["xc", "rs"], ["y4"]), node("Reshape", ["y4", "s3"], ["y"])],
          ins, [vi("y", [B, S, H])],
          [t("cos2", cos2), t("sin2", sin2), c64("s4", [B, S, N, D]), c64("s3", [B, S, H]),
           c64("ax2", [2]), c64("ax3", [3]), c64("z", [0]), c64("h", [D // 2]), c64("d", [D])])
    cases.append(("RotaryEmbedding", fused, unfused, {"pids": (0, M)}))
    # ---- MatMulNBits, 4 bits, block 32, packed zero points: [B*S, H] x [H, 4H]
    K, Nn, blk = H, 4 * H, 32
    nblk = K // blk
    q = rng.integers(0, 16, (Nn, nblk, blk)).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    scales = (rng.uniform(0.01, 0.1, (Nn, nblk))).astype(np.float32)
    zq = rng.integers(0, 16, (Nn, nblk)).astype(np.uint8)
    zpk = (zq[:, 0::2] | (zq[:, 1::2] << 4)).astype(np.uint8)
    wdq = ((q.astype(np.float32) - zq[..., None]) * scales[..., None]).reshape(Nn, K).T
    ins = [vi("a", [B, S, K])]
    fused = os.path.join(tmp, "nbits_fused.onnx")
    model(fused, [node("MatMulNBits", ["a", "B", "scales", "zp"], ["y"], domain=MS, K=K, N=Nn,
                       bits=4, block_size=blk)], ins, [vi("y", [B, S, Nn])],
          [t("B", packed), t("scales", scales), t("zp", zpk)])
    unfused = os.path.join(tmp, "nbits_unfused.onnx")
    model(unfused, [node("MatMul", ["a", "w"], ["y"])], ins, [vi("y", [B, S, Nn])],
          [t("w", np.ascontiguousarray(wdq))])
    cases.append(("MatMulNBits", fused, unfused, {}))
    return cases


def inputs(tmp, path, special):
    m = onnx.load(path)
    args = []
    for v in m.graph.input:
        tt = v.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        f = os.path.join(tmp, f"in_{v.name}.npy")
        if not os.path.exists(f):
            if v.name == "mask":
                a = np.ones(shape, np.int32)
                a[1, S * 3 // 4:] = 0
            elif v.name in special:
                lo, hi = special[v.name]
                a = rng.integers(lo, hi, shape).astype(
                    np.int64 if tt.elem_type == TP.INT64 else np.int32)
            else:
                a = rng.standard_normal(shape).astype(np.float32)
            np.save(f, a)
        args += ["-i", f"{v.name}={f}"]
    return args


def run(loom, path, args, out, repeat):
    r = subprocess.run([loom, "run", path, *args, "-o", out, "--repeat", str(repeat), "--json"],
                       check=True, capture_output=True, text=True)
    lat = json.loads(r.stdout)["latency_ms"]
    return lat["median"], lat["min"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("loom")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, fused, unfused, special in build(tmp):
            args = inputs(tmp, fused, special)
            uargs = inputs(tmp, unfused, special)
            fo, uo = os.path.join(tmp, "fo"), os.path.join(tmp, "uo")
            fm, um = [], []
            for _ in range(a.rounds):
                fm.append(run(a.loom, fused, args, fo, a.repeat))
                um.append(run(a.loom, unfused, uargs, uo, a.repeat))
            yf, yu = np.load(os.path.join(fo, "y.npy")), np.load(os.path.join(uo, "y.npy"))
            diff = float(np.max(np.abs(yf.astype(np.float64) - yu)))
            f, u = float(np.median([m for m, _ in fm])), float(np.median([m for m, _ in um]))
            fn, un = min(m for _, m in fm), min(m for _, m in um)
            print(f"{name:24s} median fused {f:7.3f} unfused {u:7.3f} ms ({f / u:4.2f})  "
                  f"min fused {fn:7.3f} unfused {un:7.3f} ms ({fn / un:4.2f})  "
                  f"max|diff| {diff:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
