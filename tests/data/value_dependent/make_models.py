#!/usr/bin/python3
"""Generate the ONNX models tests/test_value_dependent.c loads: operators whose output shape
depends on input values (NonZero, Compress, Unique, NonMaxSuppression) and a graph chaining
them, run through loom_model.

    /usr/bin/python3 tests/data/value_dependent/make_models.py
Every model is written beside this script and committed. The tests compute expected outputs
with naive loops in C, so no reference tensors are stored.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def save(name, nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="loom-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    with open(os.path.join(HERE, name + ".onnx"), "wb") as f:
        f.write(model.SerializeToString())


def main():
    # NonZero over a float of rank 3 and an int32 of rank 1, any dims.
    save("nonzero_f32", [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
         [vi("x", F, ["a", "b", "c"])], [vi("y", I64, [3, "n"])])
    save("nonzero_i32", [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
         [vi("x", I32, ["a"])], [vi("y", I64, [1, "n"])])
    # Compress along axis 1, and flattened.
    save("compress_axis", [helper.make_node("Compress", ["x", "c"], ["y"], name="cmp", axis=1)],
         [vi("x", F, ["a", "b"]), vi("c", B, ["k"])], [vi("y", F, ["a", "m"])])
    save("compress_flat", [helper.make_node("Compress", ["x", "c"], ["y"], name="cmp")],
         [vi("x", F, ["a", "b"]), vi("c", B, ["k"])], [vi("y", F, ["m"])])
    # Unique with all four outputs: sorted along axis 0 of a matrix; unsorted, flattened.
    outs = ["y", "indices", "inverse", "counts"]
    save("unique_sorted_axis", [helper.make_node("Unique", ["x"], outs, name="uq", axis=0,
                                                 sorted=1)],
         [vi("x", F, ["n", "m"])],
         [vi("y", F, ["u", "m"]), vi("indices", I64, ["u"]), vi("inverse", I64, ["n"]),
          vi("counts", I64, ["u"])])
    save("unique_unsorted_flat", [helper.make_node("Unique", ["x"], outs, name="uq", sorted=0)],
         [vi("x", F, ["n"])],
         [vi("y", F, ["u"]), vi("indices", I64, ["u"]), vi("inverse", I64, ["n"]),
          vi("counts", I64, ["u"])])
    # NonMaxSuppression, corner boxes, every scalar fed as an input (the bound is then
    # batches * classes * boxes); centre boxes with max_output_boxes_per_class a constant 2 and
    # no score threshold.
    save("nms_corner", [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou",
                                                              "thr"], ["sel"], name="nms",
                                         center_point_box=0)],
         [vi("boxes", F, ["b", "n", 4]), vi("scores", F, ["b", "c", "n"]), vi("max", I64, [1]),
          vi("iou", F, [1]), vi("thr", F, [1])], [vi("sel", I64, ["k", 3])])
    save("nms_center", [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"],
                                         ["sel"], name="nms", center_point_box=1)],
         [vi("boxes", F, ["b", "n", 4]), vi("scores", F, ["b", "c", "n"]), vi("iou", F, [1])],
         [vi("sel", I64, ["k", 3])], [numpy_helper.from_array(np.array([2], np.int64), "max")])
    # A chain: s = ReduceSum(x) (stage 0, read again in stage 2); nz = NonZero(x > 0.5) (also an
    # output); g = GatherND(x, Transpose(nz)); y = g * 2; u = Unique(g) (sorted, a second
    # value-dependent node fed by the first); z = u + s.
    save("chain", [
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["x", "half"], ["mask"], name="gt"),
        helper.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        helper.make_node("Transpose", ["nz"], ["idx"], name="tr", perm=[1, 0]),
        helper.make_node("GatherND", ["x", "idx"], ["g"], name="gather"),
        helper.make_node("Mul", ["g", "two"], ["y"], name="mul"),
        helper.make_node("Unique", ["g"], ["u"], name="uq"),
        helper.make_node("Add", ["u", "s"], ["z"], name="add"),
    ], [vi("x", F, ["a", "b"])],
        [vi("nz", I64, [2, "k"]), vi("y", F, ["k"]), vi("z", F, ["u"])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    # A count sizing a tensor downstream: r = Range(0, max(Unique(x)), 1). The stage after
    # Unique needs its output as a value (Range's limit), so each distinct value keys a
    # specialisation.
    save("unique_range", [
        helper.make_node("Unique", ["x"], ["u"], name="uq"),
        helper.make_node("ReduceMax", ["u"], ["m"], name="max", keepdims=0),
        helper.make_node("Range", ["zero", "m", "one"], ["r"], name="range"),
    ], [vi("x", I64, ["n"])], [vi("r", I64, ["k"])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero"),
         numpy_helper.from_array(np.array(1, np.int64), "one")])


if __name__ == "__main__":
    main()
