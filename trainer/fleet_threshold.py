"""A fleet threshold from per-class score histograms (pure NumPy, no TensorFlow).

A device whose threshold-validation split holds only one side of the fault/no-fault decision cannot
tune its threshold. The federation can still tune one for it without moving any window: every site
sends the histogram of the scores s = 1 - P(normal) of its validation windows, one row per side,

    H_k[0, b] = #{normal windows of site k with bin(s) = b},  H_k[1, b] = #{fault windows ...},
    bin(s) = min(floor(s * B), B - 1),  B = ``BINS`` (256, the INT8 softmax output's resolution),

the server checks every histogram (``check_histogram``), sums them (``merge_histograms``:
H = sum_k H_k) and picks t = j / B, j in 0..B, maximising the threshold metric of the decision
"fault iff bin(s) >= j" over H (``threshold_from_histogram``; ties: the t closest to 0.5, then the
smaller). A window whose score falls in bin b counts as a fault at every t <= b / B, so the tuned
decision is exact up to one bin (1/256). Only counts per bin and side leave a site.
"""
from __future__ import annotations

import numpy as np

from .threshold import count_metric

BINS = 256
MAX_WINDOWS = 10_000_000       # a site claiming more validation windows than this is refused


def score_histogram(scores: np.ndarray, y: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(2, bins) int64 counts of ``scores`` (in [0, 1]) per side: row 0 normal (y == 0), row 1 fault."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    b = np.minimum(np.floor(s * bins).astype(np.int64), bins - 1)
    fault = (np.asarray(y) != 0).astype(np.int64)
    h = np.zeros((2, bins), np.int64)
    np.add.at(h, (fault, b), 1)
    return h


def check_histogram(h, bins: int = BINS, max_windows: int = MAX_WINDOWS) -> str | None:
    """Why a site's histogram must be refused (None when usable): not a (2, bins) array of
    non-negative integers, or more than ``max_windows`` windows in all."""
    try:
        a = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError):
        return "histogram is not a numeric array"
    if a.shape != (2, bins):
        return f"histogram has shape {a.shape}, expected (2, {bins})"
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a != np.floor(a)):
        return "histogram holds negative, fractional or non-finite counts"
    if a.sum() > max_windows:
        return f"histogram counts {int(a.sum())} windows, more than {max_windows}"
    return None


def merge_histograms(hists) -> np.ndarray:
    """H = sum_k H_k of checked (2, B) histograms, as int64."""
    hs = [np.asarray(h, dtype=np.int64) for h in hists]
    if not hs:
        raise ValueError("no histogram to merge")
    return np.sum(np.stack(hs), axis=0)


def threshold_from_histogram(h: np.ndarray, metric: str = "balanced_accuracy") -> tuple[float, float] | None:
    """(t, metric value) maximising ``threshold.count_metric`` of "fault iff bin >= j", t = j / B
    (module doc); None when ``h`` lacks one side (nothing to tune between)."""
    h = np.asarray(h, dtype=np.float64)
    bins = h.shape[1]
    normal, fault = h[0], h[1]
    if normal.sum() == 0 or fault.sum() == 0:
        return None
    # j = 0..B: windows in bins >= j are called faults
    tail_n = np.concatenate([np.cumsum(normal[::-1])[::-1], [0.0]])
    tail_f = np.concatenate([np.cumsum(fault[::-1])[::-1], [0.0]])
    best_t, best_v = 0.5, -1.0
    for j in range(bins + 1):
        tp, fp = tail_f[j], tail_n[j]
        v = count_metric(tp, fp, normal.sum() - fp, fault.sum() - tp, metric)
        t = j / bins
        if v > best_v + 1e-12 or (abs(v - best_v) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5) - 1e-12):
            best_t, best_v = t, v
    return best_t, best_v
