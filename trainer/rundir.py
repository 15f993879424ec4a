"""Run directory layout and crash-safe writes.

    RUN/config.json                     the TrainConfig
    RUN/metrics.jsonl                   one JSON object per phase event / round
    RUN/report.json                     per-device float/INT8 accuracy, bytes, thresholds, timings
    RUN/state/progress.json             finished steps, metrics line count (for --resume)
    RUN/state/weights-<step>.npz        the working weights after the last finished step
    RUN/devices/devNN/model_float.keras, model_int8.tflite, device.json, test_split.npz

Every file is written to a temporary name and renamed into place, so a killed run leaves either
the old or the new file, never half of one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def finite_or_null(obj, where: str = "") -> tuple[object, dict[str, str]]:
    """(copy of ``obj`` with every non-finite float -- NaN, +inf, -inf, which JSON cannot hold --
    replaced by None, {path of each replaced value: "nan" / "inf" / "-inf"}). Paths read
    ``loss``, ``weights[2]``, ``a.b``."""
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return (v, {}) if math.isfinite(v) else (None, {where or "value": repr(v)})
    if isinstance(obj, np.integer):
        return int(obj), {}
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist(), where)
    if isinstance(obj, dict):
        out, bad = {}, {}
        for k, v in obj.items():
            out[k], b = finite_or_null(v, f"{where}.{k}" if where else str(k))
            bad.update(b)
        return out, bad
    if isinstance(obj, (list, tuple)):
        out, bad = [], {}
        for i, v in enumerate(obj):
            x, b = finite_or_null(v, f"{where}[{i}]")
            out.append(x)
            bad.update(b)
        return out, bad
    return obj, {}


def dumps_strict(obj, why: dict[str, str] | None = None, **kw) -> str:
    """``json.dumps`` that only ever writes strict JSON: a non-finite float becomes null, and a
    top-level dict gains ``"not_finite": {path: "nan: <why>"}`` naming each such value and why it
    is missing (``why`` maps a top-level key to the reason; default "not a finite number").
    ``allow_nan=False`` guards the result."""
    clean, bad = finite_or_null(obj)
    if bad and isinstance(clean, dict):
        why = why or {}
        clean["not_finite"] = {p: f"{v}: {why.get(p.split('.')[0].split('[')[0], 'not a finite number')}"
                               for p, v in bad.items()}
    return json.dumps(clean, allow_nan=False, **kw)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str | bytes):
    """``json.loads`` that refuses the non-JSON constants NaN, Infinity, -Infinity (ValueError)."""
    return json.loads(text, parse_constant=_no_constant)


def atomic_write(path: Path, write: Callable) -> None:
    """``write(fh)`` into a fresh temporary file beside ``path`` (its own unique name, so several
    processes or threads writing the same file never share or steal one temporary), flushed to
    disk, then renamed over ``path``: a reader sees the old or the new file, never half of one,
    and the last rename wins. The temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (dumps_strict(obj, indent=2) + "\n").encode())


def atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def write_if_changed(path: Path, obj) -> bool:
    """``atomic_write_json(path, obj)`` unless ``path`` already holds ``obj``; True when written.
    Several writers of the same content then leave the file alone (no rename under a reader)."""
    try:
        if loads_strict(Path(path).read_bytes()) == obj:
            return False
    except (OSError, ValueError):
        pass
    atomic_write_json(path, obj)
    return True


def device_dir(run: Path, device: int) -> Path:
    return Path(run) / "devices" / f"dev{device:02d}"


def save_weights(path: Path, weights) -> None:
    atomic_savez(path, **{f"w{i:03d}": np.asarray(w) for i, w in enumerate(weights)})


def load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files)]


class Metrics:
    """Append-only JSON-lines log whose length is recorded in each checkpoint."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines = 0
        if self.path.exists():
            self.lines = len(self.path.read_text().splitlines())

    def truncate(self, n: int) -> None:
        """Keep the first n lines (those covered by the last checkpoint)."""
        kept = self.path.read_text().splitlines()[:n] if self.path.exists() else []
        atomic_write_bytes(self.path, "".join(line + "\n" for line in kept).encode())
        self.lines = len(kept)

    def log(self, record: dict, why: dict[str, str] | None = None) -> None:
        """Append ``record`` as one strict JSON line (``dumps_strict``: a NaN loss is written as
        null and named, with ``why``, in the line's ``not_finite``)."""
        with open(self.path, "a") as f:
            f.write(dumps_strict(record, why) + "\n")
        self.lines += 1
