#!/usr/bin/python3
"""Generate the small ONNX models and reference tensors that tests/test_onnx.c reads.

Run with Debian's python3 (python3-onnx, python3-numpy) from anywhere:
    /usr/bin/python3 tests/data/onnx/make_models.py
Every output is written beside this script and committed. Expected outputs are computed here
with numpy, independently of Loom, and stored as ONNX TensorProto files (<model>.in<k>.pb,
<model>.out<k>.pb). Inputs are generated from a fixed seed, so reruns give identical files.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20240501)


def path(name):
    return os.path.join(HERE, name)


def save_model(name, graph, opset, check=True, ir_version=None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="loom-tests")
    # onnx 1.12 stamps IR version 8; keep what old opsets were written with where it matters.
    if ir_version is not None:
        model.ir_version = ir_version
    if check:
        onnx.checker.check_model(model)
    with open(path(name + ".onnx"), "wb") as f:
        f.write(model.SerializeToString())


def save_tensor(filename, array, name=""):
    t = numpy_helper.from_array(np.asarray(array), name)
    with open(path(filename), "wb") as f:
        f.write(t.SerializeToString())


def save_io(model, inputs, outputs):
    for k, a in enumerate(inputs):
        save_tensor("%s.in%d.pb" % (model, k), a, "in%d" % k)
    for k, a in enumerate(outputs):
        save_tensor("%s.out%d.pb" % (model, k), a, "out%d" % k)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


F = TensorProto.FLOAT
I64 = TensorProto.INT64


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- Add/MatMul/Relu with one raw and one typed initializer -----------------------------------
def mlp():
    x, w, b = f32(2, 3), f32(3, 4), f32(4)
    w_init = numpy_helper.from_array(w, "W")  # raw_data
    b_init = helper.make_tensor("B", F, [4], b.tolist())  # float_data
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
         helper.make_node("Add", ["xw", "B"], ["xwb"], name="add"),
         helper.make_node("Relu", ["xwb"], ["y"], name="relu")],
        "mlp", [vi("x", F, [2, 3])], [vi("y", F, [2, 4])], [w_init, b_init])
    save_model("mlp", g, 13)
    save_io("mlp", [x], [np.maximum(x @ w + b, 0)])


# --- typed int64/int32 initializers and a Constant node ----------------------------------------
def constants():
    x = f32(3, 4)
    idx = np.array([2, 0], dtype=np.int64)
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], name="c",
                          value=numpy_helper.from_array(np.full((1, 4), 0.5, np.float32))),
         helper.make_node("Constant", [], ["two"], name="two", value_float=2.0),
         helper.make_node("Gather", ["x", "idx"], ["rows"], name="gather", axis=0),
         helper.make_node("Add", ["rows", "c"], ["s"], name="add"),
         helper.make_node("Mul", ["s", "two"], ["y"], name="mul")],
        "constants", [vi("x", F, [3, 4])], [vi("y", F, [2, 4])],
        [helper.make_tensor("idx", I64, [2], idx.tolist())])  # int64_data
    save_model("constants", g, 13)
    save_io("constants", [x], [(x[idx] + 0.5) * 2.0])


# --- Slice: attribute form (opset 9) and input form (opset 13) ---------------------------------
def slices():
    x = f32(4, 6)
    want = x[1:3, 0:6:1][:, 2:5]
    g9 = helper.make_graph(
        [helper.make_node("Slice", ["x"], ["y"], name="slice", starts=[1, 2], ends=[3, 5],
                          axes=[0, 1])],
        "slice9", [vi("x", F, [4, 6])], [vi("y", F, [2, 3])])
    save_model("slice_opset9", g9, 9)
    g13 = helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice")],
        "slice13", [vi("x", F, [4, 6])], [vi("y", F, [2, 3])],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "starts"),
         numpy_helper.from_array(np.array([3, 5], np.int64), "ends"),
         numpy_helper.from_array(np.array([0, 1], np.int64), "axes")])
    save_model("slice_opset13", g13, 13)
    save_io("slice", [x], [want])


# --- Softmax opset 11, axis=1 on rank 3: flatten semantics -------------------------------------
def softmax11():
    x = f32(2, 3, 4)
    want = softmax(x.reshape(2, 12), 1).reshape(2, 3, 4)
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=1)],
                          "softmax11", [vi("x", F, [2, 3, 4])], [vi("y", F, [2, 3, 4])])
    save_model("softmax_opset11", g, 11)
    save_io("softmax_opset11", [x], [want])


# --- Shape -> Gather -> Unsqueeze -> Concat -> Reshape: must fold to a constant shape ------------
def shape_chain():
    x = f32(2, 3, 4)
    g = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
         helper.make_node("Gather", ["shp", "zero"], ["n"], name="gather", axis=0),
         helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
         helper.make_node("Concat", ["n1", "minus1"], ["newshape"], name="concat", axis=0),
         helper.make_node("Reshape", ["x", "newshape"], ["flat"], name="reshape"),
         helper.make_node("Relu", ["flat"], ["y"], name="relu")],
        "shape_chain", [vi("x", F, [2, 3, 4])], [vi("y", F, [2, 12])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero"),
         numpy_helper.from_array(np.array([0], np.int64), "axes0"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    save_model("shape_chain", g, 13)
    save_io("shape_chain", [x], [np.maximum(x.reshape(2, 12), 0)])


# --- a symbolic batch dimension ------------------------------------------------------------------
def symbolic():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "symbolic",
                          [vi("x", F, ["batch", 3])], [vi("y", F, ["batch", 3])])
    save_model("symbolic", g, 13)


# --- external data: beside the model, missing, and outside the model's directory ------------------
def external():
    x, w = f32(2, 3), f32(3, 2)
    with open(path("external.bin"), "wb") as f:
        f.write(b"\0" * 16)  # an offset, to check it is honoured
        f.write(w.tobytes())

    def ext_tensor(location, offset, length):
        t = TensorProto()
        t.name = "W"
        t.data_type = F
        t.dims.extend([3, 2])
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    def graph(location):
        return helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
                                 "external", [vi("x", F, [2, 3])], [vi("y", F, [2, 2])],
                                 [ext_tensor(location, 16, w.nbytes)])
    # The checker would open the data files; these three are checked by the tests instead.
    save_model("external", graph("external.bin"), 13, check=False)
    save_model("external_missing", graph("missing_weights.bin"), 13, check=False)
    save_model("external_escape", graph("../external.bin"), 13, check=False)
    save_io("external", [x], [x @ w])


# --- If with a constant condition (inlined) and with a run-time one (Where) -----------------------
def if_models():
    x = f32(2, 3)
    then_g = helper.make_graph([helper.make_node("Add", ["x", "one"], ["t"], name="then_add")],
                               "then", [], [vi("t", F, [2, 3])],
                               [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["e"], name="else_mul")],
                               "else", [], [vi("e", F, [2, 3])])
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["r"], name="if", then_branch=then_g,
                          else_branch=else_g),
         helper.make_node("Neg", ["r"], ["y"], name="neg")],
        "if_const", [vi("x", F, [2, 3])], [vi("y", F, [2, 3])],
        [numpy_helper.from_array(np.array(True), "cond")])
    save_model("if_const", g, 13)
    save_io("if_const", [x], [-(x + 1.0)])
    g2 = helper.make_graph(
        [helper.make_node("If", ["c"], ["r"], name="if", then_branch=then_g,
                          else_branch=else_g),
         helper.make_node("Neg", ["r"], ["y"], name="neg")],
        "if_dynamic", [vi("x", F, [2, 3]), vi("c", TensorProto.BOOL, [])],
        [vi("y", F, [2, 3])])
    save_model("if_dynamic", g2, 13)
    save_io("if_dynamic", [x, np.array(False)], [-(x * x)])


# --- dead values: only read by Shape, or only by the branch a constant condition skips ----------
def dead_values():
    x = f32(2, 3)
    else_g = helper.make_graph([helper.make_node("Add", ["sq", "x"], ["e"], name="else_add")],
                               "else", [], [vi("e", F, [2, 3])])
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"], name="then_id")],
                               "then", [], [vi("t", F, [2, 3])])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),          # read only by Shape
         helper.make_node("Shape", ["r"], ["rs"], name="shape"),
         helper.make_node("ConstantOfShape", ["rs"], ["ones"], name="cos",
                          value=numpy_helper.from_array(np.array([1.0], np.float32))),
         helper.make_node("Mul", ["x", "x"], ["sq"], name="square"),   # read only by else
         helper.make_node("If", ["cond"], ["b"], name="if", then_branch=then_g,
                          else_branch=else_g),
         helper.make_node("Add", ["b", "ones"], ["y"], name="add")],
        "dead_values", [vi("x", F, [2, 3])], [vi("y", F, [2, 3])],
        [numpy_helper.from_array(np.array(True), "cond")])
    save_model("dead_values", g, 13)
    save_io("dead_values", [x], [x + 1.0])


# --- outputs that are an input, a constant, and the same value twice --------------------------------
def odd_outputs():
    x = f32(3)
    c = np.array([1.0, 2.0, 3.0], np.float32)
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Identity", ["r"], ["r2"], name="id")],
        "odd_outputs", [vi("x", F, [3])],
        [vi("x_out", F, [3]), vi("c", F, [3]), vi("r", F, [3]), vi("r2", F, [3])],
        [numpy_helper.from_array(c, "c")])
    # x_out is x itself (an output named after an input would clash, so it goes through Identity)
    g.node.insert(0, helper.make_node("Identity", ["x"], ["x_out"], name="pass"))
    save_model("odd_outputs", g, 13)
    save_io("odd_outputs", [x], [x, c, np.maximum(x, 0), np.maximum(x, 0)])


# --- operators Loom lacks --------------------------------------------------------------------------
def unknown_ops():
    g = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["a"], name="f1"),
         helper.make_node("Relu", ["a"], ["b"], name="relu"),
         helper.make_node("OtherOp", ["b"], ["c"], name="o1"),
         helper.make_node("FancyOp", ["c"], ["y"], name="f2")],
        "unknown", [vi("x", F, [2])], [vi("y", F, [2])])
    save_model("unknown_ops", g, 13, check=False)


# --- malformed models -------------------------------------------------------------------------------
def bad_models():
    g = helper.make_graph([helper.make_node("Add", ["x", "foo"], ["y"], name="add")],
                          "undefined_input", [vi("x", F, [2])], [vi("y", F, [2])])
    save_model("undefined_input", g, 13, check=False)
    # A dtype Loom does not have (complex64; float64 is supported since the op-coverage work).
    d = numpy_helper.from_array(np.ones(2, np.complex64), "d")
    g = helper.make_graph([helper.make_node("Add", ["x", "d"], ["y"], name="add")],
                          "complex_init", [vi("x", TensorProto.COMPLEX64, [2])],
                          [vi("y", TensorProto.COMPLEX64, [2])], [d])
    save_model("complex_input", g, 13, check=False)
    g = helper.make_graph([helper.make_node("Add", ["x", "d"], ["y"], name="add")],
                          "complex_init", [vi("x", F, [2])], [vi("y", F, [2])], [d])
    save_model("complex_initializer", g, 13, check=False)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                          "bad_shapes", [vi("x", F, [2, 3])], [vi("y", F, [2, 4])],
                          [numpy_helper.from_array(np.ones((5, 4), np.float32), "w")])
    save_model("bad_shapes", g, 13, check=False)


# --- older forms of ops the registry may or may not have yet -------------------------------------------
def old_forms():
    x = f32(1, 2, 3, 4)
    # ReduceSum with the axes attribute (opset 11) and Unsqueeze with axes (opset 11)
    g = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], name="rsum", axes=[1, 3], keepdims=0),
         helper.make_node("Unsqueeze", ["s"], ["y"], name="unsq", axes=[0])],
        "reduce11", [vi("x", F, [1, 2, 3, 4])], [vi("y", F, [1, 1, 3])])
    save_model("reduce_opset11", g, 11)
    save_io("reduce_opset11", [x], [x.sum(axis=(1, 3))[None]])
    # Split with the split attribute (opset 11), one output unused, and Dropout-7 with a ratio
    x2 = f32(6, 2)
    g = helper.make_graph(
        [helper.make_node("Split", ["x"], ["a", "b", "c"], name="split", axis=0,
                          split=[1, 2, 3]),
         helper.make_node("Add", ["a", "b0"], ["y"], name="add"),
         helper.make_node("Relu", ["c"], ["z"], name="relu")],
        "split11", [vi("x", F, [6, 2])], [vi("y", F, [1, 2]), vi("z", F, [3, 2])],
        [numpy_helper.from_array(np.full((1, 2), 3.0, np.float32), "b0")])
    save_model("split_opset11", g, 11)
    save_io("split_opset11", [x2], [x2[0:1] + 3.0, np.maximum(x2[3:6], 0)])
    # Pad-2 with attributes, Dropout-7 with ratio, Upsample-7 with scales
    x3 = f32(1, 1, 2, 2)
    g = helper.make_graph(
        [helper.make_node("Pad", ["x"], ["p"], name="pad", pads=[0, 0, 1, 0, 0, 0, 0, 1],
                          value=1.5),
         helper.make_node("Dropout", ["p"], ["d", "mask"], name="dropout", ratio=0.3),
         helper.make_node("Upsample", ["d"], ["y"], name="up", scales=[1.0, 1.0, 2.0, 2.0],
                          mode="nearest")],
        "old7", [vi("x", F, [1, 1, 2, 2])], [vi("y", F, [1, 1, 6, 6])])
    save_model("old_opset7", g, 7, ir_version=3)
    padded = np.pad(x3, [(0, 0), (0, 0), (1, 0), (0, 1)], constant_values=1.5)
    save_io("old_opset7", [x3], [padded.repeat(2, axis=2).repeat(2, axis=3)])


# --- reference tensors in each dtype the .pb reader handles ------------------------------------------
def tensors():
    save_tensor("t_f16.pb", np.array([[1.5, -2.0], [0.25, 65504]], np.float16), "half")
    save_tensor("t_i32.pb", np.array([1, -2, 3], np.int32), "ints")
    save_tensor("t_bool.pb", np.array([True, False, True]), "flags")
    # make_tensor stores float16 values as their bits in int32_data
    t = helper.make_tensor("typed_f16", TensorProto.FLOAT16, [2], [1.0, -0.5])
    assert list(t.int32_data) == [0x3c00, 0xb800]
    with open(path("t_f16_typed.pb"), "wb") as f:
        f.write(t.SerializeToString())
    t = helper.make_tensor("typed_u8", TensorProto.UINT8, [3], [0, 7, 255])
    with open(path("t_u8_typed.pb"), "wb") as f:
        f.write(t.SerializeToString())
    save_tensor("t_c64.pb", np.array([1.0], np.complex64), "cplx")


for make in (mlp, constants, slices, softmax11, shape_chain, symbolic, external, if_models,
             unknown_ops, bad_models, old_forms, tensors, dead_values, odd_outputs):
    make()
