#!/usr/bin/python3
"""Writes a BERT-base-sized encoder with seeded random weights for bench/ort_compare.sh:
12 layers, hidden 768, 12 heads, FFN 3072, sequence 128, batch 1, vocabulary 30522, the Erf GELU
and LayerNormalization (opset 17), built by the same code as the transformer fixture
(tests/fixtures/make_fixtures.py). About 435 MB: generated at benchmark time, never committed.

    /usr/bin/python3 bench/make_bert.py [--dynamic] OUT_DIR
writes OUT_DIR/bert/model.onnx and OUT_DIR/bert/input_input_ids.npy (seeded token ids). With
--dynamic, OUT_DIR/bert_dynamic/: input_ids is [batch, sequence] (dim_params), the positional
table has 512 rows and is sliced to the sequence at run time (issue 12's measures).
"""
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests',
                                'fixtures'))
from make_fixtures import transformer_encoder  # noqa: E402

LAYERS, HIDDEN, HEADS, SEQ, FFN, VOCAB, BATCH = 12, 768, 12, 128, 3072, 30522, 1


MAX_POS = 512  # the positional table of the dynamic model: sequences up to 512 tokens


def make_dynamic(model):
    """Dynamic 'batch' and 'sequence': the inputs and outputs get dim_params, and the positional
    embedding becomes a MAX_POS-row table sliced to the sequence's length at run time
    (Shape -> Gather -> Unsqueeze -> Slice), as BERT exports do. Nothing else in the encoder
    depends on the shape (its Reshapes copy dims with 0)."""
    from onnx import helper, numpy_helper, TensorProto
    g = model.graph
    pos = next(t for t in g.initializer if t.name.startswith('pos_emb'))
    pos_name = pos.name
    table = numpy_helper.to_array(pos)
    rng = np.random.default_rng(13)
    full = np.concatenate([table, (0.5 * rng.standard_normal((MAX_POS - table.shape[0],
                                                              table.shape[1]))).astype(np.float32)])
    g.initializer.remove(pos)
    g.initializer.extend([numpy_helper.from_array(full, 'pos_table'),
                          numpy_helper.from_array(np.array([1], np.int64), 'seq_axis'),
                          numpy_helper.from_array(np.array([0], np.int64), 'zero_1d')])
    nodes = [helper.make_node('Shape', ['input_ids'], ['ids_shape'], name='ids_shape'),
             helper.make_node('Gather', ['ids_shape', 'seq_axis'], ['seq_len'], name='seq_len',
                              axis=0),
             helper.make_node('Slice', ['pos_table', 'zero_1d', 'seq_len', 'zero_1d'],
                              [pos_name], name='pos_slice')]
    for k, n in enumerate(nodes):
        g.node.insert(k, n)
    for vi, params in ((g.input[0], ['batch', 'sequence']),
                       (g.output[0], ['batch', 'sequence', None])):
        for d, p in zip(vi.type.tensor_type.shape.dim, params):
            if p:
                d.ClearField('dim_value')
                d.dim_param = p
    return model


def main():
    args = [a for a in sys.argv[1:] if a != '--dynamic']
    dynamic = '--dynamic' in sys.argv[1:]
    if len(args) != 1:
        sys.exit('usage: make_bert.py [--dynamic] OUT_DIR')
    d = os.path.join(args[0], 'bert_dynamic' if dynamic else 'bert')
    os.makedirs(d, exist_ok=True)
    model, inputs, _ = transformer_encoder(np.random.default_rng(12), LAYERS, HIDDEN, HEADS, SEQ,
                                           VOCAB, FFN, batch=BATCH, name='bert_base_like')
    if dynamic:
        model = make_dynamic(model)
        onnx.checker.check_model(model)
    # Under 2 GB, so one protobuf file without external data.
    onnx.save(model, os.path.join(d, 'model.onnx'))
    for name, a in inputs.items():
        np.save(os.path.join(d, f'input_{name}.npy'), a)
    size = os.path.getsize(os.path.join(d, 'model.onnx'))
    print(f'bert: {len(model.graph.node)} nodes, {size / 1e6:.0f} MB in {d}')


if __name__ == '__main__':
    main()
