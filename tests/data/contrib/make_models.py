#!/usr/bin/python3
"""Generate the ONNX models tests/test_onnx_contrib.c loads: fused operators of ONNX Runtime's
com.microsoft domain (Gelu, FastGelu, BiasGelu, QuickGelu, SkipLayerNormalization, FusedMatMul)
that Loom's importer lowers into registry operators, and models it must refuse.

    /usr/bin/python3 tests/data/contrib/make_models.py
Every model is written beside this script and committed. The tests compute expected outputs
with naive loops in C, so no reference tensors are stored. Dims are symbolic: the tests pick
odd shapes through loom_model.
"""
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
F = TensorProto.FLOAT
MS = "com.microsoft"


def vi(name, shape):
    return helper.make_tensor_value_info(name, F, shape)


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


def main():
    x, h = vi("x", ["b", "s", "h"]), vi("h_vec", ["h"])
    y = vi("y", ["b", "s", "h"])
    save("gelu", [ms("Gelu", ["x"], ["y"])], [x], [y])
    save("fast_gelu", [ms("FastGelu", ["x"], ["y"])], [x], [y])
    save("fast_gelu_bias", [ms("FastGelu", ["x", "h_vec"], ["y"])], [x, h], [y])
    save("bias_gelu", [ms("BiasGelu", ["x", "h_vec"], ["y"])], [x, h], [y])
    save("quick_gelu", [ms("QuickGelu", ["x"], ["y"])], [x], [y])
    save("quick_gelu_alpha", [ms("QuickGelu", ["x"], ["y"], alpha=0.75)], [x], [y])
    # SkipLayerNormalization: every input and the sum output; only gamma, default epsilon.
    skip, gamma, beta, bias = vi("skip", ["b", "s", "h"]), vi("gamma", ["h"]), \
        vi("beta", ["h"]), vi("bias", ["h"])
    save("skip_ln_full", [ms("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"],
                             ["y", "", "", "sum"], epsilon=1e-5)],
         [x, skip, gamma, beta, bias], [y, vi("sum", ["b", "s", "h"])])
    save("skip_ln_gamma", [ms("SkipLayerNormalization", ["x", "skip", "gamma"], ["y"])],
         [x, skip, gamma], [y])
    # FusedMatMul: plain with alpha; both transposed, batched, alpha; A transposed only.
    a2, b2 = vi("a", ["m", "k"]), vi("bm", ["k", "n"])
    save("fused_matmul", [ms("FusedMatMul", ["a", "bm"], ["y"], alpha=0.5)], [a2, b2],
         [vi("y", ["m", "n"])])
    save("fused_matmul_tt", [ms("FusedMatMul", ["a", "bm"], ["y"], alpha=-1.25, transA=1,
                                transB=1)],
         [vi("a", ["b", "k", "m"]), vi("bm", ["b", "n", "k"])], [vi("y", ["b", "m", "n"])])
    save("fused_matmul_ta", [ms("FusedMatMul", ["a", "bm"], ["y"], transA=1)],
         [vi("a", ["k", "m"]), vi("bm", ["b", "k", "n"])], [vi("y", ["b", "m", "n"])])
    # Refused: transBatchA, an unknown attribute, SkipLayerNormalization's mean read.
    save("bad_trans_batch", [ms("FusedMatMul", ["a", "bm"], ["y"], transBatchA=1)],
         [vi("a", [2, 3, 4]), vi("bm", [2, 4, 5])], [vi("y", [2, 3, 5])])
    save("bad_attr", [ms("QuickGelu", ["x"], ["y"], beta=2.0)], [vi("x", [2, 3])],
         [vi("y", [2, 3])])
    save("bad_skip_mean", [ms("SkipLayerNormalization", ["x", "skip", "gamma"],
                              ["y", "mean"])],
         [vi("x", [2, 3, 4]), vi("skip", [2, 3, 4]), vi("gamma", [4])],
         [vi("y", [2, 3, 4]), vi("mean", [2, 3, 1])])
    # Refused as invalid: BiasGelu without its bias; transA of a vector.
    save("bad_bias_gelu_inputs", [ms("BiasGelu", ["x"], ["y"])], [vi("x", [2, 3])],
         [vi("y", [2, 3])])
    save("bad_trans_vector", [ms("FusedMatMul", ["a", "bm"], ["y"], transA=1)],
         [vi("a", [4]), vi("bm", [4, 5])], [vi("y", [5])])


if __name__ == "__main__":
    main()
