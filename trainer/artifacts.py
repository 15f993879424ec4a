"""Validate a site's Phase-3 artifacts before the server stores them (nothing from the network is
trusted): a reply that fails any check is that site's failed Phase-3 reply, logged, never a crash.

``check_artifacts(art, dev, expect)`` returns why ``art`` (``SiteClient.finalize``'s dict:
``model_int8``, ``model_float``, ``device_json``, ``record``) cannot be stored, or None:
- every artifact is present with its type; ``model_float`` is a Keras file (a zip archive);
- ``model_int8`` parses as a TFLite flatbuffer (a pure-Python reader: a hostile file raises an
  error here, it never reaches a C++ interpreter in the server process);
- with ``expect`` (``ModelSignature``, the server's own INT8 conversion of the run's model): the
  operator sequence, the input and output shapes and types are the same, and the quantization is
  full-integer (input and output int8, finite scale > 0, zero point in [-128, 127]);
- ``device.json``: the device, every field the report reads, accuracies and threshold in [0, 1],
  counts non-negative integers with sum(test_class_counts) = n_test, ``model_bytes`` and
  ``model_sha256`` recomputed from the model bytes, its input/output scale and zero point equal
  to the model's;
- ``record`` (the device's metrics line) is a Phase-3 line of this device with finite numbers.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

REPORT_FIELDS = ("device", "float_acc", "int8_acc", "threshold", "n_test", "test_class_counts", "model_bytes",
                 "arena_bytes", "model_sha256", "class_counts", "warnings")


@dataclass(frozen=True)
class ModelSignature:
    """What every device's INT8 model of one run shares: operators in order, input and output
    shape and type (the scales differ per device: each calibrates on its own windows)."""

    op_sequence: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str = "int8"
    output_dtype: str = "int8"

    @classmethod
    def of(cls, model_bytes: bytes) -> "ModelSignature":
        facts = read_tflite(model_bytes)
        return cls(facts.op_sequence, facts.input.shape, facts.output.shape, facts.input.dtype,
                   facts.output.dtype)


def read_tflite(model_bytes: bytes):
    """``codegen.tflite_model.read_model`` (the one TFLite reader); raises ValueError on anything
    that is not a TFLite model."""
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.codegen.tflite_model import read_model

    try:
        return read_model(bytes(model_bytes))
    except CodegenError as e:
        raise ValueError(str(e)) from None


def _unit(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


def _counts(v, n: int | None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v))


def _quant_ok(t) -> bool:
    return t.dtype == "int8" and math.isfinite(t.scale) and t.scale > 0 and -128 <= t.zero_point <= 127


def check_artifacts(art, dev: int, expect: ModelSignature | None = None) -> str | None:
    """Why a Phase-3 reply of device ``dev`` cannot be stored (None when it can); module doc."""
    if not art or not isinstance(art, dict):
        return "no artifacts in the reply"
    for k, typ in (("model_int8", bytes), ("model_float", bytes), ("device_json", dict), ("record", dict)):
        if not isinstance(art.get(k), typ):
            return f"artifact {k!r} is missing or not {typ.__name__}"
    if not art["model_float"].startswith(b"PK"):
        return "model_float is not a Keras file (zip archive)"
    model = art["model_int8"]
    try:
        facts = read_tflite(model)
    except ValueError as e:
        return f"model_int8 is not a TFLite model ({e})"
    if expect is not None:
        if facts.op_sequence != expect.op_sequence:
            return (f"model_int8's operators {list(facts.op_sequence)} differ from the run's "
                    f"{list(expect.op_sequence)}")
        for what, t, shape, dtype in (("input", facts.input, expect.input_shape, expect.input_dtype),
                                      ("output", facts.output, expect.output_shape, expect.output_dtype)):
            if t.shape != tuple(shape) or t.dtype != dtype:
                return f"model_int8's {what} is {t.dtype}{list(t.shape)}, the run's is {dtype}{list(shape)}"
    for what, t in (("input", facts.input), ("output", facts.output)):
        if not _quant_ok(t):
            return f"model_int8's {what} is not full-integer int8 (type {t.dtype}, scale {t.scale}, zero point {t.zero_point})"
    info = art["device_json"]
    missing = [k for k in REPORT_FIELDS if k not in info]
    if missing:
        return f"device.json lacks {', '.join(missing)}"
    if info["device"] != dev:
        return f"device.json names device {info['device']!r}, expected {dev}"
    for k in ("float_acc", "int8_acc", "threshold"):
        if not _unit(info[k]):
            return f"device.json {k} is not a number in [0, 1] ({info[k]!r})"
    n_classes = facts.output.shape[-1] if facts.output.shape else None
    if not (isinstance(info["n_test"], int) and info["n_test"] >= 0 and _counts(info["test_class_counts"], n_classes)
            and _counts(info["class_counts"], n_classes) and sum(info["test_class_counts"]) == info["n_test"]):
        return "device.json's n_test / class_counts / test_class_counts are not consistent counts"
    if not (isinstance(info["arena_bytes"], int) and info["arena_bytes"] > 0):
        return f"device.json arena_bytes is not a positive integer ({info['arena_bytes']!r})"
    if not (isinstance(info["warnings"], list) and all(isinstance(w, str) for w in info["warnings"])):
        return "device.json warnings is not a list of strings"
    if info["model_bytes"] != len(model):
        return "device.json model_bytes differs from the model it came with"
    if info["model_sha256"] != hashlib.sha256(model).hexdigest():
        return "device.json model_sha256 is not the hash of the model it came with"
    for k, v in (("input_scale", facts.input.scale), ("input_zero_point", facts.input.zero_point),
                 ("output_scale", facts.output.scale), ("output_zero_point", facts.output.zero_point)):
        if k in info and not (isinstance(info[k], (int, float)) and math.isclose(info[k], v, rel_tol=1e-6)):
            return f"device.json {k} ({info[k]!r}) is not the model's ({v})"
    rec = art["record"]
    if rec.get("phase") != "phase3" or rec.get("device") != dev:
        return "the metrics line is not this device's Phase-3 line"
    for k, v in rec.items():
        if isinstance(v, float) and not math.isfinite(v):
            return f"metrics line {k!r} is not finite"
    return None
