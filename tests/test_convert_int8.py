"""The INT8 conversion's contract (trainer/quantize.py): the bytes depend only on what is converted,
not on what the process converted before (the traced function is cached per spec), and the graph
equals the one TF's Keras path makes (same ops, tensors, scales and constants)."""
from __future__ import annotations

import numpy as np


def _details(model_bytes: bytes) -> tuple[list, list]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model_bytes,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    x = it.get_input_details()[0]
    it.set_tensor(x["index"], np.random.default_rng(0).integers(-128, 128, x["shape"]).astype(np.int8))
    it.invoke()                       # every tensor then holds a value: constants and activations
    ops = [d["op_name"] for d in it._get_ops_details()]
    tensors = []
    for d in it.get_tensor_details():
        if not d["name"]:
            continue                  # the interpreter's own scratch tensors (im2col, MEAN's temporaries)
        q = d["quantization_parameters"]
        tensors.append((tuple(d["shape_signature"]), str(d["dtype"]), q["scales"].tolist(),
                        q["zero_points"].tolist(), it.get_tensor(d["index"]).tolist()))
    return ops, tensors


def _keras_path(spec, weights, rep) -> bytes:
    """Reference: TF's own Keras conversion with the same settings (and the same batch of one
    window, which the trainer converts with)."""
    from runfixture import keras_int8

    from fedtiny.trainer.model import build_model

    m = build_model(spec, seed=0, batch_size=1)
    m.set_weights(weights)
    return keras_int8(m, rep, per_tensor_dense=True)


def test_bytes_do_not_depend_on_earlier_conversions():
    from fedtiny.trainer import quantize
    from fedtiny.trainer.model import ModelSpec, build_model

    spec = ModelSpec((40, 6), 6)
    rng = np.random.default_rng(3)
    w = build_model(spec, 0).get_weights()
    w2 = [a + 0.05 * rng.standard_normal(a.shape).astype(np.float32) for a in w]
    rep = rng.uniform(-1, 1, (16, 40, 6)).astype(np.float32)
    quantize._TRACED.clear()
    first = quantize.convert_int8(spec.to_dict(), w2, rep)
    other = quantize.convert_int8(spec.to_dict(), w, rep)        # same traced function, other weights
    again = quantize.convert_int8(spec.to_dict(), w2, rep)
    assert first == again and other != first
    quantize._TRACED.clear()
    assert quantize.convert_int8(spec.to_dict(), w2, rep) == first


def test_graph_equals_the_keras_conversion():
    from fedtiny.trainer.model import ModelSpec, build_model
    from fedtiny.trainer.quantize import convert_int8

    spec = ModelSpec((40, 6), 6)
    rng = np.random.default_rng(4)
    w = [a + 0.05 * rng.standard_normal(a.shape).astype(np.float32) for a in build_model(spec, 0).get_weights()]
    rep = rng.uniform(-1, 1, (16, 40, 6)).astype(np.float32)
    ops, tensors = _details(convert_int8(spec.to_dict(), w, rep))
    ref_ops, ref_tensors = _details(_keras_path(spec, w, rep))
    assert ops == ref_ops and "CONV_2D" in ops and ops[-1] == "SOFTMAX"
    assert "MEAN" not in ops and "AVERAGE_POOL_2D" in ops and "SHAPE" not in ops
    assert len(tensors) == len(ref_tensors)
    for t, r in zip(tensors, ref_tensors):
        assert t == r
