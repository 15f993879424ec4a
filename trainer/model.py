"""The fleet's model: a small 1D CNN split into a feature extractor and a decision head.

    input (T, C) -> [feature extractor: Conv1D x3 (ReLU6) -> average pooling over the whole length
                     -> flatten]  = "features"
                 -> [decision head: Dense(16, ReLU6) -> Dense(K, softmax)]

The pooling is ``AveragePooling1D(pool_size=L)`` over the L positions the last convolution leaves,
not ``GlobalAveragePooling1D``: the latter converts to TFLite MEAN, which the Nano 33 BLE's TFLM
library computes as an integer sum / L truncated toward zero while the host and esp-tflite-micro
round (off by one on many features, up to 21 LSB on the scores); the former converts to
AVERAGE_POOL_2D, which every TFLM library computes as the sum / L rounded half away from zero.
Both are the same mean in float, so training is unchanged.

With a front end (``fedtiny.frontend``: ``features`` or ``spectrum``) the input is one position of
F values, (1, F): every convolution gets kernel 1 (``conv_plan``), i.e. the network is a small dense
net (three ReLU6 layers of 16 as the extractor, the same head), still split at ``SPLIT_LAYER``.

ReLU6 (min(max(x, 0), 6)) rather than ReLU: bounded activations keep the per-tensor INT8 ranges
tight. With plain ReLU the fine-tuned models grew activations up to ~85 and logits over +-60, and
INT8 lost up to 10 points on single devices; with ReLU6, over the 48 runs of docs/explanation/results.md
(both built-in fleets, 3 seeds, every method), the largest single-device loss is three of ~80 test
windows (3.75 pp), at most one for Fed-Meta-Align, and every fleet mean is within 0.7 pp of float.
The cap fuses into CONV_2D and FULLY_CONNECTED, so the TFLM op list is unchanged.

``SPLIT_LAYER`` names the last extractor layer; Phase 3 freezes every layer up to and including it
and fine-tunes only the head. Weights are exchanged as the list ``model.get_weights()`` (NumPy
arrays, extractor first); ``n_extractor_arrays`` tells how many of them belong to the extractor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

SPLIT_LAYER = "features"
HEAD_PREFIX = "head_"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture as data, so a worker process can rebuild the same model from weights."""

    input_shape: tuple[int, int]
    n_classes: int
    filters: tuple[int, ...] = (16, 16, 16)
    head_units: int = 16

    def conv_plan(self) -> list[tuple[int, int, int]]:
        """(filters, kernel, stride) per conv layer: long vibration windows get wide, strided kernels;
        short windows (T < 256) the plan (5, 1), (5, 2), (3, 2). Each layer is then fitted to the length
        L it receives ('valid' padding, output (L - k) // s + 1): kernel k' = min(k, L) and stride 1
        once k' = L, so any T >= 1 works. The 40- and 1024-sample windows keep their plans unchanged;
        a (1, 6) per-sample input gets kernel 1 everywhere (a pointwise CONV_2D, still the same TFLM
        op set)."""
        t = self.input_shape[0]
        f1, f2, f3 = self.filters
        if t >= 256:
            plan = [(f1, 16, 4), (f2, 8, 4), (f3, 5, 2)]
        else:
            plan = [(f1, 5, 1), (f2, 5, 2), (f3, 3, 2)]
        out, length = [], t
        for f, k, s in plan:
            k = min(k, length)
            s = 1 if k == length else s
            out.append((f, k, s))
            length = (length - k) // s + 1
        return out

    def pooled_length(self) -> int:
        """Positions the last convolution leaves (what the average pooling spans)."""
        length = self.input_shape[0]
        for _, k, s in self.conv_plan():
            length = (length - k) // s + 1
        return length

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(tuple(d["input_shape"]), int(d["n_classes"]), tuple(d["filters"]), int(d["head_units"]))


def build_model(spec: ModelSpec, seed: int, batch_size: int | None = None):
    """Build the Keras model with seeded Glorot-uniform initialisers (same seed -> same weights).
    ``batch_size=1`` fixes the batch axis, as the INT8 conversion needs it: the board runs one window
    at a time, and with a static batch the flatten after the pooling converts to one RESHAPE (with a
    free batch axis Keras computes the shape at run time: SHAPE, STRIDED_SLICE and PACK ops)."""
    import keras

    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 1000 + i)  # noqa: E731
    inp = keras.Input(shape=spec.input_shape, batch_size=batch_size, name="window")
    x = inp
    for i, (f, k, s) in enumerate(spec.conv_plan()):
        x = keras.layers.Conv1D(f, k, strides=s, activation="relu6", kernel_initializer=init(i),
                                name=f"fx_conv{i + 1}")(x)
    length = spec.pooled_length()
    x = keras.layers.AveragePooling1D(pool_size=length, strides=length, name="fx_pool")(x)
    x = keras.layers.Reshape((spec.conv_plan()[-1][0],), name=SPLIT_LAYER)(x)
    x = keras.layers.Dense(spec.head_units, activation="relu6", kernel_initializer=init(10),
                           name=f"{HEAD_PREFIX}dense")(x)
    out = keras.layers.Dense(spec.n_classes, activation="softmax", kernel_initializer=init(11),
                             name=f"{HEAD_PREFIX}out")(x)
    return keras.Model(inp, out, name="fedtiny_cnn")


def n_extractor_arrays(model) -> int:
    """How many leading arrays of ``model.get_weights()`` belong to the feature extractor."""
    n = 0
    for layer in model.layers:
        if layer.name.startswith(HEAD_PREFIX):
            break
        n += len(layer.get_weights())
    return n
