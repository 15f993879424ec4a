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
import os
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_savez(path: Path, **arrays) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    with open(tmp, "wb") as f:                 # durable before the rename, like atomic_write_bytes
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.lines += 1
