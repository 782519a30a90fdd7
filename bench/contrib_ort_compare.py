#!/usr/bin/python3
"""Loom against ONNX Runtime on the com.microsoft fused operators the importer lowers (Gelu,
FastGelu, BiasGelu, QuickGelu, SkipLayerNormalization, FusedMatMul): runs every model of
tests/data/contrib (made by its make_models.py) through `loom run` and scripts/ort/run_ort.js
on the same seeded inputs, and prints the largest absolute difference per model and output.

    bench/contrib_ort_compare.py LOOM ORT_DIR
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
DATA = os.path.join(HERE, "..", "tests", "data", "contrib")
DIMS = {"b": 3, "s": 5, "h": 7, "m": 5, "k": 9, "n": 3}
MODELS = ["gelu", "fast_gelu", "fast_gelu_bias", "bias_gelu", "quick_gelu", "quick_gelu_alpha",
          "skip_ln_full", "skip_ln_gamma", "fused_matmul", "fused_matmul_tt", "fused_matmul_ta"]


def main():
    loom, ort_dir = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(7)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = os.path.join(DATA, name + ".onnx")
            model = onnx.load(path)
            args = []
            for vi in model.graph.input:
                shape = [DIMS[d.dim_param] if d.dim_param else d.dim_value
                         for d in vi.type.tensor_type.shape.dim]
                f = os.path.join(tmp, f"{name}_{vi.name}.npy")
                np.save(f, rng.uniform(-3, 3, shape).astype(np.float32))
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
                d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
                worst = max(worst, d)
                print(f"{name:18s} {out.name:5s} {str(list(a.shape)):12s} max|loom-ort| = {d:.3g}")
    return 1 if worst > 1e-4 else 0


if __name__ == "__main__":
    sys.exit(main())
