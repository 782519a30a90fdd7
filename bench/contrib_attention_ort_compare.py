#!/usr/bin/python3
"""Loom against ONNX Runtime on the com.microsoft transformer operators the importer lowers
(Attention, MultiHeadAttention, EmbedLayerNormalization, RotaryEmbedding, MatMulNBits): runs
every model of tests/data/contrib_attention (made by its make_models.py) through `loom run` and
scripts/ort/run_ort.js on the same seeded inputs, and prints the largest absolute difference per
model and output. Masks, ids and positions are drawn in range; one row of the 2-D Attention mask
is all zeros, so the masked-row semantics (mask_filter_value added, not -inf) are compared too.

    bench/contrib_attention_ort_compare.py LOOM ORT_DIR
LOOM is the built `loom` command; ORT_DIR holds run_ort.js with onnxruntime-node installed
beside it (npm install --ignore-scripts). Exit status 1 when a difference exceeds 1e-4.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "contrib_attention")
DIMS = {"b": 2, "s": 5, "l": 7, "b2": 4}
MODELS = ["attention", "attention_lengths", "attention_2d_causal", "attention_ends_starts",
          "attention_3d_mask", "mha", "mha_causal_lengths", "mha_plain", "embed_ln",
          "embed_ln_position_ids", "rotary", "rotary_interleaved_partial", "rotary_4d",
          "matmul_nbits", "matmul_nbits_default_zp", "matmul_nbits_float_zp"]
# Not compared: attention_no_bias (ONNX Runtime 1.22 crashes on an Attention without bias) and
# matmul_nbits_8bit (its CPU kernel computes only 4 bits here: "Only 4b quantization is
# supported for unpacked compute"); tests/test_onnx_contrib_attention.c checks both.


def make_input(rng, model, name, shape, elem):
    b, s = DIMS["b"], DIMS["s"]
    if elem == onnx.TensorProto.FLOAT:
        return rng.uniform(-2, 2, shape).astype(np.float32)
    if name == "mask" and model.startswith(("attention", "mha")):
        if model == "attention_ends_starts":
            ends = rng.integers(1, s + 1, b)
            return np.concatenate([ends, [rng.integers(0, e) for e in ends]]).astype(np.int32)
        if len(shape) == 1:
            return rng.integers(1, shape and (DIMS["l"] if model == "mha" else s) + 1,
                                shape).astype(np.int32)
        m = rng.integers(0, 2, shape)
        m.reshape(-1, shape[-1])[np.arange(m.size // shape[-1]),
                                 rng.integers(0, shape[-1], m.size // shape[-1])] = 1
        if model == "attention_2d_causal":
            m[0, :] = 0
        return m.astype(np.int32)
    if name == "mask":
        return rng.integers(0, 2, shape).astype(np.int32)
    if name == "ids":
        return rng.integers(0, 11, shape).astype(np.int32)
    if name == "seg":
        return rng.integers(0, 2, shape).astype(np.int32)
    if name == "position_ids" and model.startswith("embed"):
        return rng.integers(0, 9, shape).astype(np.int32)
    if name == "position_ids":
        hi = 9 - s + 1 if shape == [1] else 9
        return rng.integers(0, hi, shape).astype(np.int64)
    raise ValueError(f"{model}: no generator for input {name}")


def main():
    loom, ort_dir = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(13)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = os.path.join(DATA, name + ".onnx")
            model = onnx.load(path)
            args = []
            for vi in model.graph.input:
                tt = vi.type.tensor_type
                shape = [DIMS[d.dim_param] if d.dim_param else d.dim_value for d in tt.shape.dim]
                f = os.path.join(tmp, f"{name}_{vi.name}.npy")
                np.save(f, make_input(rng, name, vi.name, shape, tt.elem_type))
                args += ["-i", f"{vi.name}={f}"]
            dims = [a for k, v in DIMS.items() for a in ("--dim", f"{k}={v}")]
            lo, ort = os.path.join(tmp, name + "_loom"), os.path.join(tmp, name + "_ort")
            subprocess.run([loom, "run", path, *args, *dims, "-o", lo], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["node", os.path.join(ort_dir, "run_ort.js"), path, *args, "-o", ort],
                           check=True, stdout=subprocess.DEVNULL)
            for out in model.graph.output:
                a = np.load(os.path.join(lo, out.name + ".npy"))
                b = np.load(os.path.join(ort, out.name + ".npy"))
                if a.shape != b.shape:
                    print(f"{name:28s} {out.name:10s} shapes differ: {a.shape} vs {b.shape}")
                    worst = float("inf")
                    continue
                d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
                worst = max(worst, d)
                print(f"{name:28s} {out.name:10s} {str(list(a.shape)):14s} "
                      f"max|loom-ort| = {d:.3g}")
    return 1 if worst > 1e-4 else 0


if __name__ == "__main__":
    sys.exit(main())
