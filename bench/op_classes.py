#!/usr/bin/python3
"""Per-op-class time of a Loom plan, from `loom profile MODEL.onnx --device cpu:0 --json`: the
measured node times summed by op, with convolutions split by the kernel that runs them
(depthwise: group == channels; pointwise: 1x1 stride 1; other: im2col + GEMM), read from the
ONNX model by node name (a fused node keeps its Conv's name; its op, e.g. Conv+Add+HardSwish,
says what it absorbed).

    /usr/bin/python3 bench/op_classes.py MODEL.onnx PROFILE.json [PROFILE.json ...]

With several profiles (before/after) prints one column each.
"""
import json
import sys
from collections import defaultdict

import onnx
from onnx import helper


def conv_classes(path):
    m = onnx.load(path, load_external_data=False)
    shapes = {}
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    out = {}
    for n in m.graph.node:
        if n.op_type != 'Conv':
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        w = shapes.get(n.input[1], [])
        group = a.get('group', 1)
        k = list(a.get('kernel_shape', w[2:]))
        s = list(a.get('strides', [1] * len(k)))
        if group > 1 and len(w) > 1 and w[1] == 1:
            out[n.name] = f'Conv dw {k[0]}x{k[-1]}' + (f'/{s[0]}' if s[0] > 1 else '')
        elif all(x == 1 for x in k) and all(x == 1 for x in s):
            out[n.name] = 'Conv 1x1'
        else:
            out[n.name] = f'Conv {k[0]}x{k[-1]}' + (f'/{s[0]}' if s[0] > 1 else '')
    return out


def nodes_of(o):
    if isinstance(o, dict):
        for v in o.values():
            if isinstance(v, list) and v and isinstance(v[0], dict) and 'op' in v[0]:
                return v
            r = nodes_of(v)
            if r:
                return r
    return None


def breakdown(classes, path):
    with open(path) as f:
        nodes = nodes_of(json.load(f))
    agg, cnt = defaultdict(float), defaultdict(int)
    for n in nodes:
        op = n['op']
        base = op.split('+')[0]
        key = op
        if base in ('Conv', 'FusedConv') and n.get('name') in classes:
            key = classes[n['name']] + (op[len(base):] and ' +' + op[len(base) + 1:])
        agg[key] += n.get('measured_ms') or 0.0
        cnt[key] += 1
    return agg, cnt


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    classes = conv_classes(sys.argv[1])
    cols = [breakdown(classes, p) for p in sys.argv[2:]]
    keys = sorted(set().union(*(a for a, _ in cols)), key=lambda k: -max(a.get(k, 0) for a, _ in cols))
    head = ''.join(f' {"nodes":>5} {"ms":>8} {"share":>6}' for _ in cols)
    print(f'{"op class":<34}{head}')
    totals = [sum(a.values()) for a, _ in cols]
    for k in keys:
        row = ''
        for (a, c), t in zip(cols, totals):
            if k in a:
                row += f' {c[k]:>5} {a[k]:8.3f} {100 * a[k] / t:5.1f}%'
            else:
                row += f' {"":>5} {"-":>8} {"":>6}'
        print(f'{k:<34}{row}')
    print(f'{"[sum of nodes]":<34}' + ''.join(
        f' {sum(c.values()):>5} {t:8.3f} {"":>6}' for (_, c), t in zip(cols, totals)))


if __name__ == '__main__':
    main()
