#!/usr/bin/python3
"""Generate the ONNX models tests/test_onnx_contrib_attention.c loads: the transformer operators
of ONNX Runtime's com.microsoft domain that Loom's importer lowers into registry operators
(EmbedLayerNormalization, Attention, MultiHeadAttention, RotaryEmbedding, MatMulNBits), and
models it must refuse.

    /usr/bin/python3 tests/data/contrib_attention/make_models.py
Every model is written beside this script and committed. Activations have symbolic dims (the
tests pick odd shapes through loom_model); weights are graph inputs, except MatMulNBits's
quantized weights, which must be initializers: they come from the generator lcg() below, which
the C test repeats to compute its reference. No reference tensors are stored.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
F, I32, I64, U8 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8
MS = "com.microsoft"


def vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name=op.lower(), domain=MS, **attrs)


def save(name, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid(MS, 1)],
                              producer_name="loom-tests")
    model.ir_version = 8
    # onnx.checker does not know com.microsoft operators: no check_model here.
    with open(os.path.join(HERE, name + ".onnx"), "wb") as f:
        f.write(model.SerializeToString())


def lcg(seed, n):
    """n bytes of the generator the C test repeats: x = x * 1664525 + 1013904223 (mod 2^32),
    each byte the top 8 bits."""
    out, x = [], seed
    for _ in range(n):
        x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        out.append(x >> 24)
    return out


def nbits(name, K, N, bits, block, zp, bias, seed, accuracy=0):
    """MatMulNBits with B, scales (and zero points) from lcg(seed): B's bytes first, then one
    byte per scale (scale = byte / 255 * 0.1 + 0.01), then the zero points' bytes (packed) or
    one byte per float zero point (zero point = byte / 17)."""
    nblk = (K + block - 1) // block
    blob = block * bits // 8
    nb, ns = N * nblk * blob, N * nblk
    zrow = (nblk * bits + 7) // 8
    nz = N * zrow if zp == "packed" else (ns if zp == "float" else 0)
    r = lcg(seed, nb + ns + nz)
    b = np.array(r[:nb], np.uint8).reshape(N, nblk, blob)
    s = np.array([v / 255.0 * 0.1 + 0.01 for v in r[nb:nb + ns]], np.float32).reshape(N, nblk)
    inits = [helper.make_tensor("B", U8, b.shape, b.tobytes(), raw=True),
             helper.make_tensor("scales", F, s.shape, s.tobytes(), raw=True)]
    ins = ["a", "B", "scales"]
    if zp == "packed":
        z = np.array(r[nb + ns:], np.uint8).reshape(N, zrow)
        inits.append(helper.make_tensor("zp", U8, z.shape, z.tobytes(), raw=True))
        ins.append("zp")
    elif zp == "float":
        z = np.array([v / 17.0 for v in r[nb + ns:]], np.float32).reshape(N, nblk)
        inits.append(helper.make_tensor("zp", F, z.shape, z.tobytes(), raw=True))
        ins.append("zp")
    inputs = [vi("a", ["b", "s", K])]
    if bias:
        ins += [""] * (5 - len(ins)) + ["bias"]
        inputs.append(vi("bias", [N]))
    attrs = dict(K=K, N=N, bits=bits, block_size=block)
    if accuracy:
        attrs["accuracy_level"] = accuracy
    save(name, [ms("MatMulNBits", ins, ["y"], **attrs)], inputs, [vi("y", ["b", "s", N])],
         inits)


def main():
    # ---- Attention: hidden 12, 3 heads of 4 (V of 2 with qkv_hidden_sizes).
    x, w, bias = vi("x", ["b", "s", 12]), vi("w", [12, 36]), vi("bias", [36])
    y = vi("y", ["b", "s", 12])
    save("attention", [ms("Attention", ["x", "w", "bias"], ["y"], num_heads=3)],
         [x, w, bias], [y])
    save("attention_lengths", [ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=3)],
         [x, w, bias, vi("mask", ["b"], I32)], [y])
    save("attention_2d_causal",
         [ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=3, unidirectional=1,
             qkv_hidden_sizes=[12, 12, 6], scale=0.3, mask_filter_value=-7.0)],
         [x, vi("w", [12, 30]), vi("bias", [30]), vi("mask", ["b", "s"], I32)],
         [vi("y", ["b", "s", 6])])
    save("attention_ends_starts", [ms("Attention", ["x", "w", "bias", "mask"], ["y"],
                                      num_heads=2)],
         [x, w, bias, vi("mask", ["b2"], I32)], [y])
    # No bias (ONNX Runtime 1.22 crashes on this one: not in the comparison with it).
    save("attention_no_bias", [ms("Attention", ["x", "w"], ["y"], num_heads=2)], [x, w], [y])
    save("attention_3d_mask", [ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=3,
                                  unidirectional=1)],
         [x, w, bias, vi("mask", ["b", "s", "s"], I32)], [y])
    # ---- MultiHeadAttention: query 12 wide (3 heads of 4), value 6 wide.
    q, k, v = vi("q", ["b", "s", 12]), vi("k", ["b", "l", 12]), vi("v", ["b", "l", 6])
    save("mha", [ms("MultiHeadAttention", ["q", "k", "v", "bias", "mask"], ["y"], num_heads=3)],
         [q, k, v, vi("bias", [30]), vi("mask", ["b", "l"], I32)], [vi("y", ["b", "s", 6])])
    save("mha_causal_lengths",
         [ms("MultiHeadAttention", ["q", "k", "v", "", "mask"], ["y"], num_heads=3,
             unidirectional=1, scale=0.5)],
         [q, vi("k", ["b", "s", 12]), vi("v", ["b", "s", 6]), vi("mask", ["b"], I32)],
         [vi("y", ["b", "s", 6])])
    save("mha_plain", [ms("MultiHeadAttention", ["q", "k", "v"], ["y"], num_heads=2)],
         [q, k, vi("v", ["b", "l", 8])], [vi("y", ["b", "s", 8])])
    # ---- EmbedLayerNormalization: hidden 12, vocabulary 11, 9 positions, 2 segments.
    ids, seg = vi("ids", ["b", "s"], I32), vi("seg", ["b", "s"], I32)
    word, pos, sege = vi("word", [11, 12]), vi("pos", [9, 12]), vi("sege", [2, 12])
    gamma, beta = vi("gamma", [12]), vi("beta", [12])
    save("embed_ln", [ms("EmbedLayerNormalization",
                         ["ids", "seg", "word", "pos", "sege", "gamma", "beta", "mask"],
                         ["y", "mask_index", "sum"], epsilon=1e-5)],
         [ids, seg, word, pos, sege, gamma, beta, vi("mask", ["b", "s"], I32)],
         [vi("y", ["b", "s", 12]), vi("mask_index", ["b"], I32), vi("sum", ["b", "s", 12])])
    save("embed_ln_position_ids", [ms("EmbedLayerNormalization",
                                      ["ids", "", "word", "pos", "", "gamma", "beta", "",
                                       "position_ids"], ["y", "mask_index"])],
         [ids, word, pos, gamma, beta, vi("position_ids", [1, "s"], I32)],
         [vi("y", ["b", "s", 12]), vi("mask_index", ["b"], I32)])
    # ---- RotaryEmbedding.
    save("rotary", [ms("RotaryEmbedding", ["x", "position_ids", "cos", "sin"], ["y"])],
         [x, vi("position_ids", ["b", "s"], I64), vi("cos", [9, 2]), vi("sin", [9, 2])], [y])
    save("rotary_interleaved_partial",
         [ms("RotaryEmbedding", ["x", "position_ids", "cos", "sin"], ["y"], interleaved=1,
             num_heads=3, rotary_embedding_dim=4, scale=0.5)],
         [vi("x", ["b", "s", 24]), vi("position_ids", [1], I64), vi("cos", [9, 2]),
          vi("sin", [9, 2])], [vi("y", ["b", "s", 24])])
    save("rotary_4d", [ms("RotaryEmbedding", ["x", "position_ids", "cos", "sin"], ["y"])],
         [vi("x", ["b", 3, "s", 6]), vi("position_ids", ["b", "s"], I64), vi("cos", [9, 3]),
          vi("sin", [9, 3])], [vi("y", ["b", 3, "s", 6])])
    # ---- MatMulNBits.
    nbits("matmul_nbits", 40, 7, 4, 16, "packed", True, 11)
    nbits("matmul_nbits_default_zp", 32, 5, 4, 32, None, False, 12, accuracy=1)
    nbits("matmul_nbits_float_zp", 48, 6, 4, 16, "float", False, 13)
    nbits("matmul_nbits_8bit", 20, 3, 8, 16, "packed", True, 14)
    # ---- Refused.
    save("bad_attention_past", [ms("Attention", ["x", "w", "bias", "", "past"], ["y"],
                                   num_heads=3)],
         [vi("x", [2, 5, 12]), vi("w", [12, 36]), vi("bias", [36]), vi("past", [2, 2, 3, 4, 4])],
         [vi("y", [2, 5, 12])])
    save("bad_attention_bias", [ms("Attention", ["x", "w", "bias", "", "", "ab"], ["y"],
                                   num_heads=3)],
         [vi("x", [2, 5, 12]), vi("w", [12, 36]), vi("bias", [36]), vi("ab", [2, 3, 5, 5])],
         [vi("y", [2, 5, 12])])
    save("bad_attention_mask", [ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=3)],
         [vi("x", [2, 5, 12]), vi("w", [12, 36]), vi("bias", [36]), vi("mask", [8], I32)],
         [vi("y", [2, 5, 12])])
    save("bad_attention_heads", [ms("Attention", ["x", "w"], ["y"], num_heads=5)],
         [vi("x", [2, 5, 12]), vi("w", [12, 36])], [vi("y", [2, 5, 12])])
    save("bad_mha_packed_kv", [ms("MultiHeadAttention", ["q", "kv"], ["y"], num_heads=3)],
         [vi("q", [2, 5, 12]), vi("kv", [2, 5, 3, 2, 4])], [vi("y", [2, 5, 12])])
    save("bad_mha_present", [ms("MultiHeadAttention", ["q", "k", "v"], ["y", "pk"],
                                num_heads=3)],
         [vi("q", [2, 5, 12]), vi("k", [2, 5, 12]), vi("v", [2, 5, 12])],
         [vi("y", [2, 5, 12]), vi("pk", [2, 3, 5, 4])])
    save("bad_rotary_packed", [ms("RotaryEmbedding", ["x", "p", "cos", "sin"], ["y"],
                                  is_packed_batching=1)],
         [vi("x", [2, 5, 12]), vi("p", [2, 5], I64), vi("cos", [9, 2]), vi("sin", [9, 2])],
         [vi("y", [2, 5, 12])])
    save("bad_embed_segment", [ms("EmbedLayerNormalization",
                                  ["ids", "seg", "word", "pos", "", "gamma", "beta"], ["y"])],
         [vi("ids", [2, 5], I32), vi("seg", [2, 5], I32), vi("word", [11, 12]),
          vi("pos", [9, 12]), vi("gamma", [12]), vi("beta", [12])], [vi("y", [2, 5, 12])])
    b = np.zeros((3, 1, 8), np.uint8)
    s = np.ones((3, 1), np.float32)
    save("bad_nbits_bits", [ms("MatMulNBits", ["a", "B", "scales"], ["y"], K=16, N=3, bits=3,
                               block_size=16)],
         [vi("a", [2, 16])], [vi("y", [2, 3])],
         [helper.make_tensor("B", U8, b.shape, b.tobytes(), raw=True),
          helper.make_tensor("scales", F, s.shape, s.tobytes(), raw=True)])
    save("bad_nbits_dynamic_b", [ms("MatMulNBits", ["a", "B", "scales"], ["y"], K=16, N=3,
                                    bits=4, block_size=16)],
         [vi("a", [2, 16]), vi("B", [3, 1, 8], U8)], [vi("y", [2, 3])],
         [helper.make_tensor("scales", F, s.shape, s.tobytes(), raw=True)])


if __name__ == "__main__":
    main()
