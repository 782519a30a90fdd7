#!/usr/bin/python3
"""Generate the small ONNX models tests/test_model.c loads (dynamic shapes, issue 12).

    /usr/bin/python3 tests/data/model/make_models.py
Every model is written beside this script and committed. The tests compute expected outputs
with naive loops in C, so no reference tensors are stored.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def save(name, graph, opset=13):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="loom-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    with open(os.path.join(HERE, name + ".onnx"), "wb") as f:
        f.write(model.SerializeToString())


def dyn_mlp():
    """y = Relu(x @ W + B) with x [batch, 8]; s = z * 2 with z [batch, seq]: two inputs that
    share the symbol 'batch'. W[k][j] = 0.01 * (k * 4 + j) - 0.1, B[j] = 0.5 * j - 0.5."""
    w = (0.01 * np.arange(32, dtype=np.float32) - 0.1).reshape(8, 4).astype(np.float32)
    b = (0.5 * np.arange(4, dtype=np.float32) - 0.5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "B"], ["xwb"], name="add"),
        helper.make_node("Relu", ["xwb"], ["y"], name="relu"),
        helper.make_node("Mul", ["z", "two"], ["s"], name="mul"),
    ]
    g = helper.make_graph(nodes, "dyn_mlp", [vi("x", F, ["batch", 8]), vi("z", F, ["batch", "seq"])],
                          [vi("y", F, ["batch", 4]), vi("s", F, ["batch", "seq"])],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
                           numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    save("dyn_mlp", g)


def reshape_input():
    """y = Reshape(x, shape) + 1: the shape is an input, needed as a value."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("Add", ["r", "one"], ["y"], name="add")]
    g = helper.make_graph(nodes, "reshape_input", [vi("x", F, ["n"]), vi("shape", I64, [2])],
                          [vi("y", F, ["d0", "d1"])],
                          [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    save("reshape_input", g)


def expand_input():
    """y = Expand(x, shape): an absurd shape must be refused before anything is allocated."""
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")]
    g = helper.make_graph(nodes, "expand_input", [vi("x", F, [1]), vi("shape", I64, ["k"])],
                          [vi("y", F, ["d0", "d1"])])
    save("expand_input", g)


for make in (dyn_mlp, reshape_input, expand_input):
    make()
