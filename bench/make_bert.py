#!/usr/bin/python3
"""Writes a BERT-base-sized encoder with seeded random weights for bench/ort_compare.sh:
12 layers, hidden 768, 12 heads, FFN 3072, sequence 128, batch 1, vocabulary 30522, the Erf GELU
and LayerNormalization (opset 17), built by the same code as the transformer fixture
(tests/fixtures/make_fixtures.py). About 435 MB: generated at benchmark time, never committed.

    /usr/bin/python3 bench/make_bert.py OUT_DIR
writes OUT_DIR/bert/model.onnx and OUT_DIR/bert/input_input_ids.npy (seeded token ids).
"""
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests',
                                'fixtures'))
from make_fixtures import transformer_encoder  # noqa: E402

LAYERS, HIDDEN, HEADS, SEQ, FFN, VOCAB, BATCH = 12, 768, 12, 128, 3072, 30522, 1


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: make_bert.py OUT_DIR')
    d = os.path.join(sys.argv[1], 'bert')
    os.makedirs(d, exist_ok=True)
    model, inputs, _ = transformer_encoder(np.random.default_rng(12), LAYERS, HIDDEN, HEADS, SEQ,
                                           VOCAB, FFN, batch=BATCH, name='bert_base_like')
    # Under 2 GB, so one protobuf file without external data.
    onnx.save(model, os.path.join(d, 'model.onnx'))
    for name, a in inputs.items():
        np.save(os.path.join(d, f'input_{name}.npy'), a)
    size = os.path.getsize(os.path.join(d, 'model.onnx'))
    print(f'bert: {len(model.graph.node)} nodes, {size / 1e6:.0f} MB in {d}')


if __name__ == '__main__':
    main()
