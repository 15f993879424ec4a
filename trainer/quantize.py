"""Full-integer INT8 conversion (int8 input and output), isolated in a worker process.

``TFLiteConverter.convert()`` grows the converting process's memory on every call in TF 2.21
(measured here: about 7 MB RSS per call through the Keras path, 0.3 MB per call through the
frozen-graph path used now), so conversions run in spawned worker processes that are replaced
after a fixed number of calls. A worker traces the model for a ``ModelSpec`` once and assigns each
conversion's weights, so the bytes equal those of an in-process conversion.
The representative set is the device's own training windows (model units).

Dense (FULLY_CONNECTED) weights are quantized per tensor by default (one scale per weight tensor):
the Nano 33 BLE's pinned TFLM library (Arduino_TensorFlowLite, CMSIS-NN) supports only per-tensor
FULLY_CONNECTED weights and silently applies channel 0's scale to every channel of a per-channel
tensor, which the TF 2.21 converter emits by default. One per-tensor model runs as the host predicts
on both boards (esp-tflite-micro takes either). Convolutions stay per channel (both libraries
support per-channel CONV_2D). ``per_channel_dense=True`` restores the converter's default (used to
measure the accuracy cost, ``benchmarks/dense_quant_cost.py``, and to test that codegen refuses
such a model for the Nano).
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .model import ModelSpec


DENSE_QUANTIZATION = "per-tensor"   # what convert_int8 makes by default; recorded in device.json


_TRACED: dict = {}   # per process: spec (JSON) -> (Keras model, its traced inference function)


def _traced(spec_dict: dict):
    """The model for ``spec_dict`` and its inference function traced once per process for one window
    at a time, as the board runs it (input tensor ``window``, shape ``[1, *input_shape]``; a static
    batch keeps the pooling's flatten a single RESHAPE, ``model.build_model``). Later conversions of
    the same spec only assign the new weights: tracing and the Keras SavedModel export were about
    four fifths of a conversion (0.46 s -> 0.10 s per model, measured on this machine)."""
    import json

    import tensorflow as tf

    from .model import build_model

    k = json.dumps(spec_dict, sort_keys=True)
    if k not in _TRACED:
        spec = ModelSpec.from_dict(spec_dict)
        model = build_model(spec, seed=0, batch_size=1)
        fn = tf.function(lambda x: model(x, training=False))
        cf = fn.get_concrete_function(tf.TensorSpec([1, *spec.input_shape], tf.float32, name="window"))
        _TRACED[k] = (model, cf)
    return _TRACED[k]


def convert_int8(spec_dict: dict, weights: list[np.ndarray], rep_x: np.ndarray,
                 per_channel_dense: bool = False) -> bytes:
    """Convert the model (spec + weights) to a full-integer INT8 flatbuffer; runs anywhere.
    Dense layers get one weight scale per tensor unless ``per_channel_dense`` (module docstring).

    The converter freezes the traced function's variables (the weights given here) into constants
    (TF's frozen-graph path, ``from_concrete_functions`` without a trackable object). Contract: the
    bytes depend only on (spec, weights, rep_x, per_channel_dense), not on what this process
    converted before; the graph (ops, tensors, scales, constants) equals the one the Keras
    SavedModel path makes, which in addition carries a ``serving_default`` signature that no
    part of fedtiny reads (``tests/test_convert_int8.py`` checks both)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    logging.getLogger("absl").setLevel(logging.ERROR)   # "provide trackable_obj" deprecation notice
    model, cf = _traced(spec_dict)
    model.set_weights(weights)
    rep = np.asarray(rep_x, dtype=np.float32)

    def representative():
        for i in range(len(rep)):
            yield [rep[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    # per-tensor FULLY_CONNECTED weights: what every target board's TFLM library computes correctly
    conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(conv.convert())


def _import_tf() -> None:
    import tensorflow  # noqa: F401


def _worker_init(parent_pid: int) -> None:
    """Worker initializer: silence the converter's prints (fd 1) and TF's C++ logging (fd 2) so the
    parent's progress bars stay readable (failures still reach the parent as exceptions), and exit
    as soon as the parent is gone: a run killed with -9 must not leave an orphan worker (it would
    also hold the parent's inherited stdout/stderr pipes open)."""
    import signal
    import threading
    import time

    # Ctrl-C reaches the whole process group: the parent stops the run (and this worker, once its
    # current conversion returns); a KeyboardInterrupt in here would only break the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Converter:
    """Conversions run in spawned worker processes (``WORKERS``) shared by every run of this
    process. The pool is replaced by a fresh one after ``MAX_TASKS`` tasks (about 500 per worker),
    which bounds the converter's memory growth (about 0.3 MB a call) to about 150 MB per worker; the
    old pool finishes the conversions already given to it and then exits. (Not the executor's own
    ``max_tasks_per_child``: with more than one worker and queued tasks, Python 3.11's executor
    can fail to replace a retired worker and wait forever, which we hit.)
    ``with Converter() as c: c.convert(...)``; ``shutdown()`` ends the workers."""

    MAX_TASKS = 1000
    WORKERS = max(1, min(2, os.cpu_count() or 1))   # conversions of prefetched devices run side by side
    _pool: ProcessPoolExecutor | None = None
    _submitted = 0
    _registered = False

    def __enter__(self) -> "Converter":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @classmethod
    def _executor(cls) -> ProcessPoolExecutor:
        if cls._pool is not None and cls._submitted >= cls.MAX_TASKS:
            old, cls._pool = cls._pool, None
            old.shutdown(wait=False)          # its queued conversions still finish
        if cls._pool is None:
            cls._pool = ProcessPoolExecutor(max_workers=cls.WORKERS, mp_context=mp.get_context("spawn"),
                                            initializer=_worker_init, initargs=(os.getpid(),))
            cls._submitted = 0
            if not cls._registered:
                atexit.register(cls.shutdown)
                cls._registered = True
        cls._submitted += 1
        return cls._pool

    @classmethod
    def warm_up(cls) -> None:
        """Start the worker now (it imports TensorFlow, tens of seconds on a loaded machine), so that
        the first conversion does not wait for it; returns at once."""
        for _ in range(cls.WORKERS):
            cls._executor().submit(_import_tf)

    def submit(self, spec: ModelSpec, weights, rep_x: np.ndarray, per_channel_dense: bool = False):
        """Start a conversion; returns its future (``.result()`` gives the bytes)."""
        return self._executor().submit(convert_int8, spec.to_dict(), [np.asarray(w) for w in weights],
                                       np.asarray(rep_x), per_channel_dense)

    def convert(self, spec: ModelSpec, weights, rep_x: np.ndarray, per_channel_dense: bool = False) -> bytes:
        return self.submit(spec, weights, rep_x, per_channel_dense).result()

    @classmethod
    def shutdown(cls) -> None:
        if cls._pool is not None:
            cls._pool.shutdown(wait=True, cancel_futures=True)
            cls._pool = None
            cls._tasks = 0


def quant_params(model_bytes: bytes) -> dict:
    """Input/output scale and zero point of an INT8 model (read through tflite-micro)."""
    from .tflm import _interpreter

    interp = _interpreter(model_bytes)
    iq = interp.get_input_details(0)["quantization_parameters"]
    oq = interp.get_output_details(0)["quantization_parameters"]
    return {"input_scale": float(iq["scales"][0]), "input_zero_point": int(iq["zero_points"][0]),
            "output_scale": float(oq["scales"][0]), "output_zero_point": int(oq["zero_points"][0])}


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """q = clip(round(x / scale) + zero_point, -128, 127) as int8, rounding half away from zero
    (TFLite's rounding), in double: ``fedtiny.frontend.quantize``, the one definition the board's
    front end mirrors."""
    from fedtiny.frontend import quantize

    return quantize(x, scale, zero_point)


class Prefetched:
    """A converter whose conversions may have been started ahead (``start``): ``convert`` returns
    the started conversion when its spec, weights and representative set are exactly the ones asked
    for, and converts afresh otherwise, so the bytes never depend on what was prefetched."""

    def __init__(self, base: Converter | None = None):
        self.base = base or Converter()
        self._started: dict = {}

    @staticmethod
    def _key(spec: ModelSpec, weights, rep_x) -> str:
        import hashlib

        h = hashlib.sha256(repr(spec.to_dict()).encode())
        for a in list(weights) + [rep_x]:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def start(self, spec: ModelSpec, weights, rep_x) -> None:
        k = self._key(spec, weights, rep_x)
        if k not in self._started:
            self._started[k] = self.base.submit(spec, weights, rep_x)

    def convert(self, spec: ModelSpec, weights, rep_x: np.ndarray, per_channel_dense: bool = False) -> bytes:
        if not per_channel_dense:
            fut = self._started.pop(self._key(spec, weights, rep_x), None)
            if fut is not None:
                return fut.result()
        return self.base.convert(spec, weights, rep_x, per_channel_dense)
