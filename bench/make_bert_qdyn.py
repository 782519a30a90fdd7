#!/usr/bin/python3
"""Writes the dynamically quantized form of a float ONNX model, the way ONNX Runtime's
quantize_dynamic does it for MatMul (weight_type int8, per tensor; its defaults): every MatMul
whose second input is a constant float matrix becomes

    x_q, x_s, x_zp = DynamicQuantizeLinear(x)          (one per activation, shared)
    y = Mul(Cast<float>(MatMulInteger(x_q, W_q, x_zp, W_zp)), Mul(x_s, W_s))

with W_q = round(W / W_s) in [-127, 127], W_s = max|W| / 127 and W_zp = 0. Written here with the
onnx package because Debian has no onnxruntime for Python; bench/int8_compare.sh runs the result
in both Loom and ONNX Runtime. Generated at benchmark time, never committed.

    /usr/bin/python3 bench/make_bert_qdyn.py IN.onnx OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: make_bert_qdyn.py IN.onnx OUT.onnx')
    model = onnx.load(sys.argv[1])
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes, new_inits, drop = [], [], set()
    dql_of = {}  # activation name -> (x_q, x_s, x_zp)
    count = 0
    for node in g.node:
        w = inits.get(node.input[1]) if node.op_type == 'MatMul' and len(node.input) == 2 else None
        wa = numpy_helper.to_array(w) if w is not None else None
        if wa is None or wa.dtype != np.float32 or wa.ndim != 2:
            new_nodes.append(node)
            continue
        x = node.input[0]
        if x not in dql_of:
            q = (x + '_quantized', x + '_scale', x + '_zero_point')
            new_nodes.append(helper.make_node('DynamicQuantizeLinear', [x], list(q),
                                              name=x + '_QuantizeLinear'))
            dql_of[x] = q
        xq, xs, xzp = dql_of[x]
        scale = np.float32(max(np.abs(wa).max(), 1e-12) / 127.0)
        wq = np.clip(np.rint(wa / scale), -127, 127).astype(np.int8)
        base = node.name or node.output[0]
        new_inits += [numpy_helper.from_array(wq, w.name + '_quantized'),
                      numpy_helper.from_array(np.array(scale, np.float32), w.name + '_scale'),
                      numpy_helper.from_array(np.array(0, np.int8), w.name + '_zero_point')]
        drop.add(w.name)
        mm, mf, sc = base + '_MatMulInteger', base + '_cast', base + '_scales'
        new_nodes += [
            helper.make_node('MatMulInteger', [xq, w.name + '_quantized', xzp,
                                               w.name + '_zero_point'], [mm], name=base + '_quant'),
            helper.make_node('Cast', [mm], [mf], to=TensorProto.FLOAT, name=base + '_cast'),
            helper.make_node('Mul', [xs, w.name + '_scale'], [sc], name=base + '_scale_mul'),
            helper.make_node('Mul', [mf, sc], [node.output[0]], name=base + '_output_mul'),
        ]
        count += 1
    del g.node[:]
    g.node.extend(new_nodes)
    keep = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    # DynamicQuantizeLinear and MatMulInteger need opset >= 11; the model's opset covers it.
    onnx.save(model, sys.argv[2])
    print(f'{count} MatMuls quantized, {len(dql_of)} DynamicQuantizeLinear, '
          f'{sum(t.ByteSize() for t in g.initializer) / 1e6:.0f} MB of initializers')


if __name__ == '__main__':
    main()
