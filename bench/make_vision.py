#!/usr/bin/python3
"""Writes the vision benchmark set of bench/ort_compare.sh (issue 16), seeded random weights,
generated at benchmark time and never committed (several MB each):

  mobilenet   a MobileNetV3-small-like classifier, 3x224x224 -> 1000: a 3x3/2 stem, eleven
              inverted-residual blocks (1x1 expansion, depthwise 3x3 or 5x5 with stride 1 or 2,
              squeeze-excitation = GlobalAveragePool, 1x1 Relu, 1x1 HardSigmoid, Mul; 1x1
              projection; residual Add when the shape allows), HardSwish/Relu, a 1x1 576 conv,
              GlobalAveragePool, Gemm 1024 + HardSwish, Gemm 1000. Batch normalisation folded into
              the convolutions' biases, as exporters write it.
  detector    a DBNet-like text detector, 3x320x320 -> 1x320x320 probability map: the same kind of
              backbone (features at strides 8, 16, 32), an FPN (1x1 laterals, Resize nearest x2 +
              Add top-down, 3x3 smoothing convs), every level Resized to stride 4 and Concat, a head
              of Conv 3x3 + Relu, ConvTranspose 2x2/2 + Relu, ConvTranspose 2x2/2, Sigmoid.
  cnn         tests/fixtures/cnn/model.onnx with its batch changed (the fixture is batch 2).

    /usr/bin/python3 bench/make_vision.py OUT_DIR [--batch 1,8] [--models mobilenet,detector,cnn]

writes OUT_DIR/<model>_b<batch>/model.onnx and input_x.npy (seeded N(0,1) input) for each.
"""
import argparse
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, base):
        self.count += 1
        return f'{base}_{self.count}'

    def const(self, base, array):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(array, n))
        return n

    def op(self, op_type, inputs, out=None, **attrs):
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type),
                                           **attrs))
        return out

    # -- layers ---------------------------------------------------------------------------
    def conv(self, x, cin, cout, k, stride=1, group=1, act=None, gain=2.0):
        """Conv with a bias (batch normalisation folded in) and an optional activation."""
        fan_in = cin // group * k * k
        w = self.const('w', (self.rng.standard_normal((cout, cin // group, k, k)) *
                             math.sqrt(gain / fan_in)).astype(np.float32))
        b = self.const('b', (0.05 * self.rng.standard_normal(cout)).astype(np.float32))
        p = k // 2
        y = self.op('Conv', [x, w, b], kernel_shape=[k, k], strides=[stride, stride],
                    pads=[p, p, p, p], group=group)
        return self.act(y, act)

    def act(self, x, act):
        if act == 'RE':
            return self.op('Relu', [x])
        if act == 'HS':
            return self.op('HardSwish', [x])
        if act == 'HSIG':
            return self.op('HardSigmoid', [x], alpha=1.0 / 6, beta=0.5)
        if act == 'SIG':
            return self.op('Sigmoid', [x])
        return x

    def se(self, x, c):
        s = self.op('GlobalAveragePool', [x])
        mid = make_divisible(c // 4)
        s = self.conv(s, c, mid, 1, act='RE')
        s = self.conv(s, mid, c, 1, act='HSIG', gain=1.0)
        return self.op('Mul', [x, s])

    def bneck(self, x, cin, k, exp, cout, se, nl, stride):
        h = x
        if exp != cin:
            h = self.conv(h, cin, exp, 1, act=nl)
        h = self.conv(h, exp, exp, k, stride=stride, group=exp, act=nl)
        if se:
            h = self.se(h, exp)
        h = self.conv(h, exp, cout, 1, gain=1.0)
        if stride == 1 and cin == cout:
            h = self.op('Add', [h, x])
        return h

    def gemm(self, x, cin, cout):
        w = self.const('fc_w', (self.rng.standard_normal((cout, cin)) /
                                math.sqrt(cin)).astype(np.float32))
        b = self.const('fc_b', (0.05 * self.rng.standard_normal(cout)).astype(np.float32))
        return self.op('Gemm', [x, w, b], transB=1)

    def model(self, name, inputs, outputs):
        g = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='loom-bench')
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m)
        return m


def make_divisible(v, d=8):
    return max(d, int(v + d / 2) // d * d)


# MobileNetV3-small's blocks: kernel, expansion, out, SE, nonlinearity, stride.
MNV3_SMALL = [
    (3, 16, 16, True, 'RE', 2),
    (3, 72, 24, False, 'RE', 2),
    (3, 88, 24, False, 'RE', 1),
    (5, 96, 40, True, 'HS', 2),
    (5, 240, 40, True, 'HS', 1),
    (5, 240, 40, True, 'HS', 1),
    (5, 120, 48, True, 'HS', 1),
    (5, 144, 48, True, 'HS', 1),
    (5, 288, 96, True, 'HS', 2),
    (5, 576, 96, True, 'HS', 1),
    (5, 576, 96, True, 'HS', 1),
]


def backbone(b, x, taps=()):
    """Stem and the MobileNetV3-small blocks; returns the last feature map and those after the
    blocks listed in TAPS (block indices), with their channel counts."""
    h = b.conv(x, 3, 16, 3, stride=2, act='HS')
    c, feats = 16, []
    for i, (k, exp, cout, se, nl, s) in enumerate(MNV3_SMALL):
        h = b.bneck(h, c, k, exp, cout, se, nl, s)
        c = cout
        if i in taps:
            feats.append((h, c))
    return h, c, feats


def mobilenet(batch, seed=16):
    b = Builder(seed)
    h, c, _ = backbone(b, 'x')
    h = b.conv(h, c, 576, 1, act='HS')
    h = b.op('GlobalAveragePool', [h])
    h = b.op('Flatten', [h], axis=1)
    h = b.act(b.gemm(h, 576, 1024), 'HS')
    b.nodes.append(helper.make_node('Gemm', [h, b.const('fc_w', (b.rng.standard_normal(
        (1000, 1024)) / 32).astype(np.float32)), b.const('fc_b', np.zeros(1000, np.float32))],
        ['logits'], name='classifier', transB=1))
    return b.model('mobilenet_v3_small_like',
                   [helper.make_tensor_value_info('x', TensorProto.FLOAT, [batch, 3, 224, 224])],
                   [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [batch, 1000])])


def detector(batch, seed=17):
    b = Builder(seed)
    size, inner = 320, 64
    # After block 2: stride 8 (24 ch); block 7: stride 16 (48 ch); block 10: stride 32 (96 ch).
    _, _, feats = backbone(b, 'x', taps=(2, 7, 10))
    scales = b.const('scales2', np.array([1, 1, 2, 2], np.float32))
    lat = [b.conv(f, c, inner, 1, gain=1.0) for f, c in feats]
    top = [lat[2]]
    for lvl in (1, 0):  # top-down: upsample the coarser level and add the lateral
        up = b.op('Resize', [top[-1], '', scales], mode='nearest')
        top.append(b.op('Add', [lat[lvl], up]))
    p5, p4, p3 = top
    outs = []
    for p, f in ((p3, 1), (p4, 2), (p5, 4)):  # smooth, then bring every level to stride 4
        o = b.conv(p, inner, inner // 4, 3, gain=1.0)
        sc = b.const('scales', np.array([1, 1, 2 * f, 2 * f], np.float32))
        outs.append(b.op('Resize', [o, '', sc], mode='nearest'))
    fuse = b.op('Concat', outs, axis=1)
    h = b.conv(fuse, 3 * (inner // 4), inner // 4, 3, act='RE')
    for cout, act in ((inner // 4, 'RE'), (1, 'SIG')):
        w = b.const('ct_w', (b.rng.standard_normal((inner // 4, cout, 2, 2)) /
                             math.sqrt(inner // 4)).astype(np.float32))
        bias = b.const('ct_b', (0.05 * b.rng.standard_normal(cout)).astype(np.float32))
        h = b.op('ConvTranspose', [h, w, bias], kernel_shape=[2, 2], strides=[2, 2])
        if act == 'SIG':
            b.nodes.append(helper.make_node('Sigmoid', [h], ['prob'], name='prob'))
        else:
            h = b.act(h, act)
    return b.model('dbnet_like_detector',
                   [helper.make_tensor_value_info('x', TensorProto.FLOAT, [batch, 3, size, size])],
                   [helper.make_tensor_value_info('prob', TensorProto.FLOAT,
                                                  [batch, 1, size, size])])


def cnn(batch):
    """The CNN fixture with batch BATCH (every other dim is fixed by its weights)."""
    m = onnx.load(os.path.join(ROOT, 'tests', 'fixtures', 'cnn', 'model.onnx'))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = batch
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out')
    ap.add_argument('--batch', default='1,8')
    ap.add_argument('--models', default='mobilenet,detector,cnn')
    a = ap.parse_args()
    makers = {'mobilenet': mobilenet, 'detector': detector, 'cnn': cnn}
    for name in a.models.split(','):
        if name not in makers:
            sys.exit(f'make_vision.py: unknown model {name!r} ({", ".join(makers)})')
        for batch in (int(s) for s in a.batch.split(',')):
            m = makers[name](batch)
            d = os.path.join(a.out, f'{name}_b{batch}')
            os.makedirs(d, exist_ok=True)
            onnx.save(m, os.path.join(d, 'model.onnx'))
            dims = [x.dim_value for x in m.graph.input[0].type.tensor_type.shape.dim]
            x = np.random.default_rng(1000 + batch).standard_normal(dims).astype(np.float32)
            np.save(os.path.join(d, 'input_x.npy'), x)
            print(f'{d}: {len(m.graph.node)} nodes, '
                  f'{sum(np.prod(t.dims) for t in m.graph.initializer) / 1e6:.2f} M weights')


if __name__ == '__main__':
    main()
