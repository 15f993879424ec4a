"""Decision rule and threshold tuning (pure NumPy).

Rule (class 0 is "normal"): a window is a fault when 1 - P(normal) >= t; a fault's class is the
argmax over the fault classes 1..K-1; otherwise it is class 0. The same rule runs in the firmware
on dequantized INT8 outputs, P = output_scale * (q - output_zero_point).

Tuning: t is chosen from the candidate set {0.5} U {1 - P_i(normal)} (every distinct score on the
validation windows, which is where the fault/no-fault decision can change) to maximise a metric of
the binary fault-vs-normal decision; ties go to the candidate closest to 0.5, then the smaller t.
"""
from __future__ import annotations

import numpy as np

METRICS = ("balanced_accuracy", "accuracy", "f1")


def decide(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Class per row of ``probs`` (n, K) under the threshold rule above."""
    probs = np.asarray(probs, dtype=np.float64)
    fault = (1.0 - probs[:, 0]) >= threshold
    fault_cls = 1 + np.argmax(probs[:, 1:], axis=1)
    return np.where(fault, fault_cls, 0).astype(np.int64)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real value of int8 codes: scale * (q - zero_point)."""
    return float(scale) * (np.asarray(q, dtype=np.float64) - int(zero_point))


def binary_metric(is_fault: np.ndarray, pred_fault: np.ndarray, metric: str = "balanced_accuracy") -> float:
    """``count_metric`` of the confusion counts of (is_fault, pred_fault)."""
    is_fault = np.asarray(is_fault, bool)
    pred_fault = np.asarray(pred_fault, bool)
    return count_metric(np.sum(is_fault & pred_fault), np.sum(~is_fault & pred_fault),
                        np.sum(~is_fault & ~pred_fault), np.sum(is_fault & ~pred_fault), metric)


def count_metric(tp, fp, tn, fn, metric: str = "balanced_accuracy") -> float:
    """balanced_accuracy = (TPR + TNR) / 2 (a side with no samples counts as 1); accuracy =
    (TP + TN) / n; or f1 = 2TP / (2TP + FP + FN) (1.0 when there is nothing to find and nothing
    found). Counts may be integers or floats (histogram sums)."""
    if metric == "balanced_accuracy":
        tpr = tp / (tp + fn) if tp + fn else 1.0
        tnr = tn / (tn + fp) if tn + fp else 1.0
        return float((tpr + tnr) / 2)
    if metric == "accuracy":
        return float((tp + tn) / max(tp + fp + tn + fn, 1))
    if metric == "f1":
        den = 2 * tp + fp + fn
        return float(2 * tp / den) if den else 1.0
    raise ValueError(f"unknown threshold metric {metric!r}; choose one of {', '.join(METRICS)}")


def detection_rates(y: np.ndarray, pred: np.ndarray) -> dict:
    """False alarms and detections of class predictions ``pred`` against labels ``y`` (class 0 is
    normal): ``far`` = normal windows called a fault / normal windows, ``dr`` = fault windows called
    a fault (any fault class) / fault windows (None when there are no windows of that side), with
    the counts ``n_normal``, ``n_fault``, ``false_alarms``, ``detections``, ``correct``."""
    y = np.asarray(y)
    pred = np.asarray(pred)
    normal, fault = y == 0, y != 0
    fa, det = int(np.sum(normal & (pred != 0))), int(np.sum(fault & (pred != 0)))
    nn, nf = int(normal.sum()), int(fault.sum())
    return {"far": fa / nn if nn else None, "dr": det / nf if nf else None, "n_normal": nn, "n_fault": nf,
            "false_alarms": fa, "detections": det, "correct": int(np.sum(pred == y))}


def tune_threshold(probs: np.ndarray, y: np.ndarray, metric: str = "balanced_accuracy") -> tuple[float, float]:
    """Return (t, metric value) maximising ``binary_metric`` of (y != 0) vs (1 - P(normal) >= t)."""
    probs = np.asarray(probs, dtype=np.float64)
    score = 1.0 - probs[:, 0]
    is_fault = np.asarray(y) != 0
    # every distinct score, 0.5, and just above the largest score (nothing is a fault), kept in [0, 1]
    above = min(float(np.nextafter(score.max(), np.inf)), 1.0) if len(score) else 0.5
    cands = np.unique(np.concatenate([[0.5, above], score]))
    best_t, best_v = 0.5, -1.0
    for t in cands:
        v = binary_metric(is_fault, score >= t, metric)
        if v > best_v + 1e-12 or (abs(v - best_v) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5) - 1e-12):
            best_t, best_v = float(t), v
    return best_t, best_v
