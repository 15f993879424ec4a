"""Host twin of a board's live mode: the decisions, events and heartbeats it sends for a stream of
int16 sensor frames (protocol v3 ``live``; contract in ``firmware/PROTOCOL.md``).

Every hop the board runs the front end and the INT8 model on the last ``window`` frames and decides
with the run's threshold rule. With frames numbered 0, 1, ... from ``live`` (dropped ones included),
a decision carries ``n`` = the number of the window's last frame + 1:

* without dropped frames: decisions at n = W, W + H, W + 2H, ... (W window, H hop);
* a window that holds a dropped frame is skipped (no decision): decisions stay on that grid, and a
  window with a hole is never classified;
* model input: raw front end q = quantize(s / 32767, input_scale, input_zero_point) (double division,
  round half away from zero: ``frontend.quantize``), other front ends ``frontend.model_input``;
* decision: the trainer's rule on the int8 output q: fault iff 1 - p0 >= threshold (p0 = output_scale
  (q0 - output_zero_point), double), then class 1 + argmax q[1:], else class 0 (``threshold.decide``);
  the reported score is 1 - p0 rounded to a C float, as the board's ``event`` line carries it;
* events: the first decision and every decision whose class differs from the previous one;
* beats: at n = R, 2R, 3R, ... (R = the rate in whole Hz: one second of frames, counted not timed),
  carrying the current class (that of the last decision with n_d <= n; -1 before the first) and the
  frames dropped so far; an event and a beat at the same n: the event first.

``live_decisions`` runs the run's own model bytes under tflite-micro (``trainer.tflm.run_int8``), the
host inference every bench comparison uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny import frontend as fe

NO_CLASS = -1


class LiveError(ValueError):
    """A run or stream the live twin cannot handle (one clear sentence)."""


@dataclass(frozen=True)
class Decision:
    n: int              # frames since live started (dropped included) after the window's last frame
    pred: int
    score: float        # 1 - p(normal), compared with the threshold
    q: tuple            # the int8 output


@dataclass(frozen=True)
class Beat:
    n: int
    pred: int
    dropped: int


@dataclass(frozen=True)
class LiveModel:
    """What a board's live loop needs of a run's device."""

    model_bytes: bytes
    kind: str                   # front end
    window: int
    channels: int
    input_shape: tuple          # the model input per window (without batch)
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    threshold: float

    @classmethod
    def from_run(cls, run_dir, device: int) -> "LiveModel":
        from fedtiny.trainer.rundir import RunFileError, device_dir, read_bytes, read_json

        path = device_dir(Path(run_dir), int(device))
        try:
            info = read_json(path / "device.json")
            model = read_bytes(path / "model_int8.tflite")
        except RunFileError as e:
            raise LiveError(str(e)) from None
        try:
            d = info.get("frontend") or {"kind": "raw"}
            shape = tuple(int(v) for v in info["input_shape"])
            kind = str(d.get("kind", "raw"))
            window, ch = (int(d["window"]), int(d["channels"])) if kind != "raw" else (shape[0], shape[-1])
            return cls(model, kind, window, ch, shape, float(info["input_scale"]), int(info["input_zero_point"]),
                       float(info["output_scale"]), int(info["output_zero_point"]), float(info["threshold"]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise LiveError(f"device {device} of {run_dir}: device.json lacks {e}") from None

    def model_input(self, windows: np.ndarray) -> np.ndarray:
        """int8 model inputs (n, *input_shape) of int16 windows (n, W, C)."""
        s = np.asarray(windows, np.int16)
        if self.kind == "raw":
            q = fe.raw_input(s, self.input_scale, self.input_zero_point)
        else:
            q = fe.model_input(self.kind, s, self.input_scale, self.input_zero_point)
        return q.reshape((len(s),) + self.input_shape)

    def decide(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pred (n,), score (n,)) of int8 outputs q (n, K) under the trainer's threshold rule."""
        from fedtiny.trainer.threshold import decide, dequantize

        p = dequantize(q, self.output_scale, self.output_zero_point)
        return decide(p, self.threshold), (1.0 - p[:, 0]).astype(np.float32).astype(np.float64)


def sensor_counts(values: np.ndarray, full_scale) -> np.ndarray:
    """int16 counts (N, C) of physical readings (N, C) (an IMU's g and deg/s): round_half_away(
    value / full_scale[c] * 32767) in double, clipped to +-32767 (C: ft_sensor.h ft_sensor_count)."""
    v = np.asarray(values, np.float64) / np.asarray(full_scale, np.float64)
    return fe.to_int16(v)


def adc_counts(codes: np.ndarray, zero_code: int, counts_per_code: int) -> np.ndarray:
    """int16 counts of raw ADC codes: clip((code - zero_code) * counts_per_code, +-32767)
    (C: firmware/sensors/ft_sensor_adc.cpp)."""
    v = (np.asarray(codes, np.int64) - int(zero_code)) * int(counts_per_code)
    return np.clip(v, -32767, 32767).astype(np.int16)


def decision_points(present: np.ndarray, window: int, hop: int) -> np.ndarray:
    """The n of every decision over frames 0..N-1 whose ``present`` mask is given (module doc)."""
    present = np.asarray(present, bool)
    ns = np.arange(window, len(present) + 1, hop, dtype=np.int64)
    lost = np.concatenate([[0], np.cumsum(~present)])
    return ns[lost[ns] - lost[ns - window] == 0]


def live_decisions(counts: np.ndarray, model: LiveModel, hop: int, present: np.ndarray | None = None,
                   batch: int = 256) -> list[Decision]:
    """The decisions a board makes every hop on ``counts`` (N, C) int16 frames (row i = frame i;
    rows of dropped frames, ``present[i]`` False, are ignored)."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != model.channels:
        raise LiveError(f"frames must be (N, {model.channels}) int16, got shape {counts.shape}")
    if not 1 <= hop:
        raise LiveError(f"hop must be >= 1 frame, got {hop}")
    present = np.ones(len(counts), bool) if present is None else np.asarray(present, bool)
    ns = decision_points(present, model.window, int(hop))
    from fedtiny.trainer.tflm import run_int8

    out: list[Decision] = []
    for a in range(0, len(ns), batch):
        part = ns[a:a + batch]
        w = np.stack([counts[n - model.window:n] for n in part]) if len(part) else \
            np.zeros((0, model.window, model.channels), np.int16)
        q = run_int8(model.model_bytes, model.model_input(w))
        pred, score = model.decide(q)
        out += [Decision(int(n), int(p), float(s), tuple(int(v) for v in qi))
                for n, p, s, qi in zip(part, pred, score, q)]
    return out


def run_decisions(counts: np.ndarray, run_dir, device: int, hop: int,
                  present: np.ndarray | None = None) -> list[Decision]:
    """``live_decisions`` with the model of device ``device`` of the run ``run_dir``."""
    return live_decisions(counts, LiveModel.from_run(run_dir, device), hop, present)


def events(decisions: list[Decision]) -> list[Decision]:
    """The first decision and every decision whose class changed."""
    out: list[Decision] = []
    for d in decisions:
        if not out or d.pred != out[-1].pred:
            out.append(d)
    return out


def beats(decisions: list[Decision], n_frames: int, rate_hz: float, present: np.ndarray | None = None) -> list[Beat]:
    """Heartbeats at n = R, 2R, ... <= ``n_frames`` (R = round(rate_hz)) with the current class and
    the dropped frames before n."""
    r = int(round(rate_hz))
    if r < 1:
        raise LiveError(f"rate {rate_hz!r} Hz gives no whole frame per second")
    lost = np.cumsum(~np.asarray(present, bool)) if present is not None else None
    out, j, cur = [], 0, NO_CLASS
    for n in range(r, int(n_frames) + 1, r):
        while j < len(decisions) and decisions[j].n <= n:
            cur = decisions[j].pred
            j += 1
        out.append(Beat(n, cur, int(lost[n - 1]) if lost is not None else 0))
    return out


def detection_delay(decisions: list[Decision], labels: np.ndarray, start: int) -> int | None:
    """Frames from ``start`` (the first frame of a segment of class labels[start]) to the n of the
    first decision at or after it that names that class; None if none does."""
    k = int(labels[start])
    for d in decisions:
        if d.n > start and d.pred == k:
            return d.n - start
    return None
