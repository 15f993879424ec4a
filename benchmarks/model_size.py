"""Float vs INT8 model bytes and TFLM arena bytes of the fleet model, per built-in dataset.

    python benchmarks/model_size.py

The model is trained for a few epochs on the dataset's public pool first: with the untrained
init every bias is zero, and the converter stores identical constant buffers once, which would
under-report the size of a trained model. Float = TFLite float32 flatbuffer, INT8 = the
full-integer model fedtiny deploys (calibrated on the same pool, in model units); arena =
tflite-micro's recorded allocation on this 64-bit host (an upper bound for a 32-bit board).
"""
from __future__ import annotations

import contextlib
import io
import sys


def main() -> None:
    import numpy as np
    import tensorflow as tf

    from fedtiny.trainer.data import load_fleet
    from fedtiny.trainer.engine import Engine
    from fedtiny.trainer.model import ModelSpec
    from fedtiny.trainer.quantize import convert_int8
    from fedtiny.trainer.tflm import arena_bytes

    print(f"command: python {' '.join(sys.argv)}")
    print(f"{'dataset':>11} {'params':>7} {'float32 B':>10} {'INT8 B':>8} {'ratio':>6} {'arena f32':>10} {'arena INT8':>11}")
    for name in ("electrical", "mechanical"):
        fleet = load_fleet(name, n_devices=2, alpha=0.5, seed=0, samples_per_device=100, public_samples=400)
        x = np.clip(fleet.public.x / fleet.channel_scale, -1.0, 1.0)   # model units, as the trainer
        spec = ModelSpec(fleet.input_shape, fleet.n_classes)
        engine = Engine(spec, seed=0)
        engine.fit(x, fleet.public.y, 3, [0])
        with contextlib.redirect_stdout(io.StringIO()):                 # the converter's export chatter
            f32 = bytes(tf.lite.TFLiteConverter.from_keras_model(engine.model).convert())
            i8 = convert_int8(spec.to_dict(), engine.get_weights(), x[:100])
        print(f"{name:>11} {engine.model.count_params():>7} {len(f32):>10} {len(i8):>8} "
              f"{len(f32) / len(i8):>6.2f} {arena_bytes(f32):>10} {arena_bytes(i8):>11}")


if __name__ == "__main__":
    main()
