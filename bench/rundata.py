"""What the bench and the emulator read from a run directory (and nothing more).

    RUN/report.json                                  marks a finished run
    RUN/devices/devNN/model_int8.tflite              the model bytes the firmware embeds
    RUN/devices/devNN/test_split.npz                 x_int8, y (what the firmware embeds), pred_int8,
                                                     out_int8 (host int8 scores; absent in older runs),
                                                     raw_int16 (front-end runs: the samples embedded)
    RUN/devices/devNN/device.json                    threshold, quantization, model_sha256, ...
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.trainer.rundir import REDO_DEVICE, RunFileError, device_dir, read_bytes, read_json, read_npz


class BenchError(Exception):
    """A bench failure the user can act on; the CLI prints ``error: <message>`` and exits 2."""


@dataclass
class RunDevice:
    run_dir: Path
    device: int
    path: Path
    info: dict
    model_bytes: bytes
    x_int8: np.ndarray      # (n, T, C) int8
    y: np.ndarray           # (n,) int64
    pred_int8: np.ndarray   # (n,) int64, the host's INT8 decisions (tflite-micro)
    out_int8: np.ndarray | None = None   # (n, K) int8 host scores; None for runs without them
    raw_int16: np.ndarray | None = None  # (n, T, C) int16 samples the front end runs on (front-end runs)

    @property
    def frontend(self) -> str:
        return str((self.info.get("frontend") or {}).get("kind", "raw"))

    @property
    def model_sha256(self) -> str:
        return str(self.info["model_sha256"]).lower()

    @property
    def threshold(self) -> float:
        return float(self.info["threshold"])

    @property
    def threshold_origin(self) -> str:
        """device.json's ``threshold_origin`` (local / fleet / default); runs made before it
        existed used the default threshold."""
        return str(self.info.get("threshold_origin") or "default")

    @property
    def n_classes(self) -> int:
        return len(self.info["class_names"])

    @property
    def input_size(self) -> int:
        return int(np.prod(self.x_int8.shape[1:]))


def default_run(root: Path | str = "runs") -> Path:
    """Newest folder under ``root`` that has a report.json (a finished run)."""
    root = Path(root)
    runs = [p for p in root.glob("*") if (p / "report.json").is_file()] if root.is_dir() else []
    if not runs:
        raise BenchError(f"no finished run under {root}/ (no */report.json); pass --run DIR, or --no-run")
    return max(runs, key=lambda p: ((p / "report.json").stat().st_mtime, p.name))


def run_devices(run_dir: Path) -> list[int]:
    """Numbers of the run's devices that have a device.json (named devices by config.json)."""
    from fedtiny.trainer.rundir import run_device_names

    names = run_device_names(run_dir)
    if names:
        return [i for i, n in enumerate(names) if (Path(run_dir) / "devices" / n / "device.json").is_file()]
    out = []
    for p in sorted((Path(run_dir) / "devices").glob("dev[0-9][0-9]")):
        if (p / "device.json").is_file():
            out.append(int(p.name[3:]))
    return out


def load_run_device(run_dir: Path | str, device: int) -> RunDevice:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"run directory {run_dir} does not exist")
    path = device_dir(run_dir, int(device))
    if not (path / "device.json").is_file():
        have = ", ".join(str(d) for d in run_devices(run_dir)) or "none"
        raise BenchError(f"run {run_dir} has no device {device} (devices: {have})")
    try:
        info = read_json(path / "device.json")
        model = read_bytes(path / "model_int8.tflite")
        z = read_npz(path / "test_split.npz", ("x_int8", "y", "pred_int8"))
    except RunFileError as e:
        raise BenchError(f"device {device} of run {run_dir}: {e}") from None
    x_int8 = np.asarray(z["x_int8"], dtype=np.int8)
    y = np.asarray(z["y"], dtype=np.int64)
    pred = np.asarray(z["pred_int8"], dtype=np.int64)
    out = np.asarray(z["out_int8"], dtype=np.int8) if "out_int8" in z else None
    raw = np.asarray(z["raw_int16"], dtype=np.int16) if "raw_int16" in z else None
    if not isinstance(info, dict):
        raise BenchError(f"{path / 'device.json'} is not a JSON object; {REDO_DEVICE}")
    sha = hashlib.sha256(model).hexdigest()
    if str(info.get("model_sha256", "")).lower() != sha:
        raise BenchError(f"run {run_dir} device {device}: model_int8.tflite does not match "
                         f"device.json model_sha256 (run directory is inconsistent)")
    if not (len(x_int8) == len(y) == len(pred)) or (out is not None and len(out) != len(y)) or (
            raw is not None and len(raw) != len(y)):
        raise BenchError(f"run {run_dir} device {device}: test split arrays differ in length")
    rd = RunDevice(run_dir, int(device), path, info, model, x_int8, y, pred, out, raw)
    if rd.frontend != "raw" and raw is None:
        raise BenchError(f"run {run_dir} device {device}: device.json names the {rd.frontend} front end but "
                         f"test_split.npz lacks the raw_int16 samples it runs on")
    return rd
