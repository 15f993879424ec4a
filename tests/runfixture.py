"""Write a small but real run directory (the layout the trainer produces) for codegen/bench tests.

Layout (see docs/reference/run-directory.md):
    RUN/config.json, RUN/report.json,
    RUN/devices/devNN/{model_int8.tflite, device.json, test_split.npz}
The model is a real INT8 TFLite model of the fleet architecture, trained for a few steps on a
separable toy problem (so decisions are meaningful) and converted by the trainer's own INT8
conversion; no trainer run is involved.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def _toy_data(n: int, input_shape, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    t, c = input_shape
    y = rng.integers(0, n_classes, size=n)
    base = np.sin(np.linspace(0, 2 * np.pi, t))[:, None] * np.ones((1, c))
    x = rng.normal(0, 0.15, size=(n, t, c)) + base[None] * ((y[:, None, None] + 1) / n_classes)
    return x.astype(np.float32), y.astype(np.int64)


def keras_int8(model, rep: np.ndarray, per_tensor_dense: bool = False) -> bytes:
    """TF's own full-integer INT8 conversion of any Keras ``model`` (the Keras path, not the
    trainer's), calibrated on ``rep``; ``per_tensor_dense`` as the trainer's default."""
    import tensorflow as tf

    rep = np.asarray(rep, np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if per_tensor_dense:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return bytes(conv.convert())


def make_run_dir(root: Path, device: int = 3, input_shape=(40, 6), n_classes: int = 6,
                 n_test: int = 24, seed: int = 0, class_names=None, filters=(16, 16, 16),
                 per_channel_dense: bool = False) -> Path:
    """``per_channel_dense=True`` converts dense layers per channel (the TF default), a model the
    Nano 33 BLE's library cannot run as the host does (codegen must refuse it for that board)."""
    import keras

    from fedtiny.trainer.model import ModelSpec, build_model
    from fedtiny.trainer.quantize import convert_int8, quant_params
    from fedtiny.trainer.threshold import decide, dequantize
    from fedtiny.trainer.tflm import arena_bytes, run_int8

    keras.utils.set_random_seed(seed)
    spec = ModelSpec(tuple(input_shape), n_classes, tuple(filters))
    model = build_model(spec, seed)
    x, y = _toy_data(256, input_shape, n_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, shuffle=False)
    tfl = convert_int8(spec.to_dict(), model.get_weights(), x[:64],   # the trainer's own conversion
                       per_channel_dense=per_channel_dense)
    q = quant_params(tfl)
    in_s, in_z = q["input_scale"], q["input_zero_point"]
    out_s, out_z = q["output_scale"], q["output_zero_point"]

    xt, yt = _toy_data(n_test, input_shape, n_classes, seed + 1)
    xq = np.clip(np.round(xt / in_s) + in_z, -128, 127).astype(np.int8)
    threshold = 0.5
    q = run_int8(tfl, xq)
    pred = decide(dequantize(q, out_s, out_z), threshold)
    names = list(class_names or (["normal"] + [f"fault{i}" for i in range(1, n_classes)]))

    run = Path(root)
    ddir = run / "devices" / f"dev{device:02d}"
    ddir.mkdir(parents=True, exist_ok=True)
    (ddir / "model_int8.tflite").write_bytes(tfl)
    np.savez(ddir / "test_split.npz", x=xt, y=yt, x_int8=xq, pred_int8=pred, out_int8=q)
    arena = arena_bytes(tfl)
    info = {
        "device": device, "threshold": threshold, "class_names": names,
        "input_shape": list(input_shape), "channel_scale": [1.0] * input_shape[1],
        "input_scale": in_s, "input_zero_point": in_z,
        "output_scale": out_s, "output_zero_point": out_z,
        "float_acc": None, "int8_acc": float(np.mean(pred == yt)),
        "model_bytes": len(tfl), "arena_bytes": arena,
        "model_sha256": hashlib.sha256(tfl).hexdigest(),
        "dense_quantization": "per-channel" if per_channel_dense else "per-tensor",
    }
    (ddir / "device.json").write_text(json.dumps(info, indent=2))
    (run / "config.json").write_text(json.dumps({"dataset": "toy", "devices": device + 1, "seed": seed,
                                                 "method": "fixture"}, indent=2))
    (run / "report.json").write_text(json.dumps({"class_names": names, "devices": [info]}, indent=2))
    return run
