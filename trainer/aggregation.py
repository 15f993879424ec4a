"""Server-side aggregation rules: pure NumPy on lists of weight arrays (no TensorFlow here).

Notation: theta is the global weight list, theta_k device k's weights after local training,
d_k = theta_k - theta (flattened to one vector), d_mean = (1/K) sum_k d_k.

Fed-Meta-Align (dual criterion):
    cos_k = <d_k, d_mean> / (||d_k|| ||d_mean||)      (0 when either norm is 0)
    s_k   = p_k * max(cos_k, c)                         (c: similarity floor, paper c = 0.1)
    w_k   = s_k / sum_j s_j                             (uniform when every s_k is 0)
    theta <- theta + alpha * sum_k w_k d_k              (alpha: server step, default 1)
FedAvg / FedProx server step:
    theta <- sum_k (n_k / sum_j n_j) theta_k
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Weights = list[np.ndarray]


def flatten(weights: Weights) -> np.ndarray:
    """Concatenate a weight list into one float64 vector (array order, C order)."""
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def unflatten(vec: np.ndarray, like: Weights) -> Weights:
    """Inverse of ``flatten``: cut ``vec`` into arrays shaped and typed like ``like``."""
    out, pos = [], 0
    for w in like:
        n = int(np.prod(w.shape))
        out.append(vec[pos:pos + n].reshape(w.shape).astype(w.dtype))
        pos += n
    if pos != len(vec):
        raise ValueError(f"vector of {len(vec)} values does not fit weights of {pos}")
    return out


def client_deltas(client_weights: list[Weights], global_weights: Weights) -> np.ndarray:
    """Matrix D (K, P): row k is flatten(theta_k) - flatten(theta)."""
    g = flatten(global_weights)
    return np.stack([flatten(w) - g for w in client_weights])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """<a, b> / (||a|| ||b||), defined as 0 when either vector is zero."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


@dataclass
class AlignWeights:
    """Per-device aggregation weights w, cosines cos and performance scores p (all length K)."""

    w: np.ndarray
    cos: np.ndarray
    p: np.ndarray


def align_weights(deltas: np.ndarray, perf: np.ndarray, floor: float = 0.1) -> AlignWeights:
    """Fed-Meta-Align weights w_k = p_k max(cos(d_k, d_mean), c) / sum_j (...), see module doc."""
    deltas = np.asarray(deltas, dtype=np.float64)
    perf = np.asarray(perf, dtype=np.float64)
    if deltas.shape[0] != perf.shape[0]:
        raise ValueError("one performance score per update is needed")
    if not np.all(np.isfinite(perf)) or np.any(perf < 0):
        raise ValueError(f"performance scores must be finite and >= 0, got {perf.tolist()}")
    if not floor >= 0:                                # also refuses NaN
        raise ValueError(f"the similarity floor must be >= 0, got {floor}")
    d_mean = deltas.mean(axis=0)
    cos = np.array([cosine(d, d_mean) for d in deltas])
    s = perf * np.maximum(cos, floor)
    total = s.sum()
    w = s / total if total > 0 else np.full(len(s), 1.0 / len(s))
    return AlignWeights(w=w, cos=cos, p=perf)


def apply_weighted_update(global_weights: Weights, deltas: np.ndarray, w: np.ndarray,
                          server_lr: float = 1.0) -> Weights:
    """theta + alpha * sum_k w_k d_k, returned as a new weight list shaped like ``global_weights``."""
    step = np.asarray(w, dtype=np.float64) @ np.asarray(deltas, dtype=np.float64)
    return unflatten(flatten(global_weights) + server_lr * step, global_weights)


def fedavg(client_weights: list[Weights], n_samples) -> Weights:
    """Sample-weighted mean of the client weight lists: sum_k (n_k / n) theta_k."""
    n = np.asarray(n_samples, dtype=np.float64)
    if len(n) != len(client_weights) or np.any(n < 0) or n.sum() <= 0:
        raise ValueError("FedAvg needs one non-negative sample count per client, not all zero")
    frac = n / n.sum()
    stacked = np.stack([flatten(w) for w in client_weights])
    return unflatten(frac @ stacked, client_weights[0])


def tour_order(n_devices: int, policy: str, tour: int, seed: int) -> list[int]:
    """Device visiting order of Phase-1 tour number ``tour``: ``fixed`` is 0..N-1 every tour;
    ``random`` is a permutation drawn from a generator seeded by (seed, tour)."""
    if policy == "fixed":
        return list(range(n_devices))
    if policy == "random":
        return [int(i) for i in np.random.default_rng([seed, 7919, tour]).permutation(n_devices)]
    raise ValueError(f"unknown tour order {policy!r}; choose fixed or random")
