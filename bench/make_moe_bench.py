#!/usr/bin/python3
"""The MoE layer of issue 14's measure, written for bench/bench_moe.sh: a com.microsoft MoE model
(sparse: Loom's MoE kernel, ONNX Runtime's CPU MoE) and the same layer written densely in
standard ONNX operators from the same weights (every expert on every token, gates zero where the
router did not pick the expert), seeded inputs, and numpy's output for both.

Usage: bench/make_moe_bench.py OUT_DIR [--tokens 64] [--experts 8] [--k 2] [--hidden 256]
                                        [--inter 1024] [--activation relu] [--normalize 1]
Writes OUT_DIR/moe.onnx, OUT_DIR/dense.onnx, OUT_DIR/input.npy, OUT_DIR/router_probs.npy and
OUT_DIR/expected.npy. Needs Debian's python3-onnx and python3-numpy.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests',
                                'fixtures', 'moe'))
from make_moe import moe_numpy  # noqa: E402  (the reference the fixtures are checked with)

ACT_OPS = {'relu': 'Relu', 'identity': 'Identity'}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--tokens', type=int, default=64)
    ap.add_argument('--experts', type=int, default=8)
    ap.add_argument('--k', type=int, default=2)
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--inter', type=int, default=1024)
    ap.add_argument('--activation', default='relu', choices=sorted(ACT_OPS))
    ap.add_argument('--normalize', type=int, default=1)
    a = ap.parse_args()
    T, E, H, I, k = a.tokens, a.experts, a.hidden, a.inter, a.k
    rng = np.random.default_rng(14)
    x = rng.standard_normal((T, H)).astype(np.float32)
    logits = (rng.standard_normal((T, E)) * 2).astype(np.float32)
    w1 = (rng.standard_normal((E, I, H)) / np.sqrt(H)).astype(np.float32)
    w2 = (rng.standard_normal((E, H, I)) / np.sqrt(I)).astype(np.float32)
    b1 = (rng.standard_normal((E, I)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal((E, H)) * 0.1).astype(np.float32)
    os.makedirs(a.out, exist_ok=True)
    ins = [helper.make_tensor_value_info('input', TensorProto.FLOAT, [T, H]),
           helper.make_tensor_value_info('router_probs', TensorProto.FLOAT, [T, E])]
    outs = [helper.make_tensor_value_info('output', TensorProto.FLOAT, [T, H])]
    opsets = [helper.make_opsetid('', 18), helper.make_opsetid('com.microsoft', 1)]

    # Sparse: one com.microsoft MoE node.
    moe = helper.make_node('MoE', ['input', 'router_probs', 'w1', 'b1', 'w2', 'b2'], ['output'],
                           name='moe', domain='com.microsoft', k=k, activation_type=a.activation,
                           normalize_routing_weights=a.normalize)
    inits = [numpy_helper.from_array(w1, 'w1'), numpy_helper.from_array(b1, 'b1'),
             numpy_helper.from_array(w2, 'w2'), numpy_helper.from_array(b2, 'b2')]
    m = helper.make_model(helper.make_graph([moe], 'moe', ins, outs, inits), opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, os.path.join(a.out, 'moe.onnx'))

    # Dense: every expert on every token through batched MatMuls ([T, H] x [E, H, I]), gates
    # from Softmax + TopK (the k-th largest as a threshold), summed over the experts.
    c = lambda name, v: numpy_helper.from_array(np.asarray(v), name)  # noqa: E731
    dinits = [numpy_helper.from_array(np.ascontiguousarray(w1.transpose(0, 2, 1)), 'w1t'),
              numpy_helper.from_array(b1[:, None, :], 'b1e'),
              numpy_helper.from_array(np.ascontiguousarray(w2.transpose(0, 2, 1)), 'w2t'),
              numpy_helper.from_array(b2[:, None, :], 'b2e'),
              c('kk', np.array([k], np.int64)), c('s0', np.array([k - 1], np.int64)),
              c('s1', np.array([k], np.int64)), c('ax1', np.array([1], np.int64)),
              c('ax0', np.array([0], np.int64)), c('ax2', np.array([2], np.int64)),
              c('zero', np.array(0, np.float32))]
    nodes = [
        helper.make_node('Softmax', ['router_probs'], ['p'], axis=1),
        helper.make_node('TopK', ['p', 'kk'], ['topv', 'topi'], axis=1),
        helper.make_node('Slice', ['topv', 's0', 's1', 'ax1'], ['thr']),
        helper.make_node('GreaterOrEqual', ['p', 'thr'], ['mask']),
        helper.make_node('Where', ['mask', 'p', 'zero'], ['g0']),
    ]
    if a.normalize:
        nodes += [helper.make_node('ReduceSum', ['g0', 'ax1'], ['gs'], keepdims=1),
                  helper.make_node('Div', ['g0', 'gs'], ['g'])]
    else:
        nodes += [helper.make_node('Identity', ['g0'], ['g'])]
    nodes += [
        helper.make_node('Transpose', ['g'], ['gt'], perm=[1, 0]),
        helper.make_node('Unsqueeze', ['gt', 'ax2'], ['gte']),
        helper.make_node('MatMul', ['input', 'w1t'], ['h0']),
        helper.make_node('Add', ['h0', 'b1e'], ['h1']),
        helper.make_node(ACT_OPS[a.activation], ['h1'], ['h']),
        helper.make_node('MatMul', ['h', 'w2t'], ['o0']),
        helper.make_node('Add', ['o0', 'b2e'], ['o1']),
        helper.make_node('Mul', ['o1', 'gte'], ['o2']),
        helper.make_node('ReduceSum', ['o2', 'ax0'], ['output'], keepdims=0),
    ]
    d = helper.make_model(helper.make_graph(nodes, 'moe_dense', ins, outs, dinits),
                          opset_imports=[helper.make_opsetid('', 18)])
    d.ir_version = 8
    onnx.checker.check_model(d)
    onnx.save(d, os.path.join(a.out, 'dense.onnx'))

    np.save(os.path.join(a.out, 'input.npy'), x)
    np.save(os.path.join(a.out, 'router_probs.npy'), logits)
    np.save(os.path.join(a.out, 'expected.npy'),
            moe_numpy(x, logits, w1, b1, w2, b2, k, a.activation, a.normalize))


if __name__ == '__main__':
    main()
