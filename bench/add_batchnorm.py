#!/usr/bin/python3
"""Inserts an inference BatchNormalization (seeded random scale, bias, mean, var > 0) after every
Conv and ConvTranspose of an ONNX model, as a model exported without folding its batch norms
looks, to measure the fold_batchnorm pass (issue 16) on bench/make_vision.py's models:

    /usr/bin/python3 bench/add_batchnorm.py IN.onnx OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def main():
    src, dst = sys.argv[1], sys.argv[2]
    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    rng = np.random.default_rng(7)
    nodes, added = [], 0
    for n in g.node:
        nodes.append(n)
        if n.op_type not in ('Conv', 'ConvTranspose') or n.input[1] not in inits:
            continue
        w = inits[n.input[1]].dims
        group = next((a.i for a in n.attribute if a.name == 'group'), 1)
        ch = w[0] if n.op_type == 'Conv' else w[1] * group
        y = n.output[0]
        pre = y + '_prebn'
        n.output[0] = pre
        names = []
        for what, v in (('scale', rng.uniform(0.5, 1.5, ch)), ('bias', rng.uniform(-0.1, 0.1, ch)),
                        ('mean', rng.uniform(-0.1, 0.1, ch)), ('var', rng.uniform(0.5, 1.5, ch))):
            nm = '%s_bn_%s' % (n.name or y, what)
            g.initializer.append(numpy_helper.from_array(v.astype(np.float32), nm))
            names.append(nm)
        nodes.append(helper.make_node('BatchNormalization', [pre] + names, [y],
                                      name='%s_bn' % (n.name or y), epsilon=1e-5))
        added += 1
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    print('%s: %d BatchNormalization added' % (dst, added))


if __name__ == '__main__':
    main()
