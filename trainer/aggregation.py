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
Performance scores against a tiny validation split (``shrink_perf``): a device's p_k is pulled
towards the fleet's pooled score in proportion to how little evidence it has, so that a split of
one block of one class (accuracy exactly 0 or 1) cannot hand all the weight to one device.
Robust baselines: coordinate-wise median and trimmed mean of the theta_k. Options against the
Phase-2 oscillation (docs/explanation/when-to-choose.md): the cosine against another reference
direction (``reference_direction``) and server momentum (``momentum_step``).
Bounds on what a site reports (nothing from the network is trusted): update norms clipped to a
multiple of the median norm (``clip_deltas``), no single weight above a cap (``cap_weights``).
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


def unit_rows(deltas: np.ndarray) -> np.ndarray:
    """Every row divided by its Euclidean norm (a zero row stays zero)."""
    d = np.asarray(deltas, dtype=np.float64)
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return np.divide(d, n, out=np.zeros_like(d), where=n > 0)


def reference_direction(deltas: np.ndarray, ref: str = "mean", previous: np.ndarray | None = None,
                        beta: float = 0.5) -> np.ndarray:
    """The direction the cosines are measured against.

    mean        r = (1/K) sum_k d_k                    (the paper's mean update)
    normalized  r = (1/K) sum_k d_k / ||d_k||          (every device's direction counts alike,
                                                         whatever the size of its update)
    server      r = beta * u_prev + (1 - beta) * r_norm, with u_prev the previous round's server
                update direction (unit vector) and r_norm the normalized mean; round 1 (no
                previous update) uses r_norm alone
    """
    if ref not in ("mean", "normalized", "server"):
        raise ValueError(f"unknown reference direction {ref!r}; choose mean, normalized or server")
    d = np.asarray(deltas, dtype=np.float64)
    if ref == "mean":
        return d.mean(axis=0)
    r_norm = unit_rows(d).mean(axis=0)
    if ref == "normalized" or previous is None:
        return r_norm
    prev = np.asarray(previous, dtype=np.float64)
    pn = np.linalg.norm(prev)
    return beta * (prev / pn if pn > 0 else prev) + (1.0 - beta) * r_norm


def align_weights(deltas: np.ndarray, perf: np.ndarray, floor: float = 0.1,
                  reference: np.ndarray | None = None) -> AlignWeights:
    """Fed-Meta-Align weights w_k = p_k max(cos(d_k, r), c) / sum_j (...), see module doc; r is
    ``reference`` (default: the mean update d_mean, as in the paper)."""
    deltas = np.asarray(deltas, dtype=np.float64)
    perf = np.asarray(perf, dtype=np.float64)
    if deltas.shape[0] != perf.shape[0]:
        raise ValueError("one performance score per update is needed")
    if not np.all(np.isfinite(perf)) or np.any(perf < 0):
        raise ValueError(f"performance scores must be finite and >= 0, got {perf.tolist()}")
    if not floor >= 0:                                # also refuses NaN
        raise ValueError(f"the similarity floor must be >= 0, got {floor}")
    ref = deltas.mean(axis=0) if reference is None else np.asarray(reference, dtype=np.float64)
    cos = np.array([cosine(d, ref) for d in deltas])
    s = perf * np.maximum(cos, floor)
    total = s.sum()
    w = s / total if total > 0 else np.full(len(s), 1.0 / len(s))
    return AlignWeights(w=w, cos=cos, p=perf)


def shrink_perf(perf: np.ndarray, evidence: np.ndarray, prior: float) -> np.ndarray:
    """Shrink raw performance scores p_k towards the fleet's pooled score:

        p_bar = sum_j g_j p_j / sum_j g_j          (plain mean when every g_j is 0)
        p~_k  = (g_k p_k + kappa p_bar) / (g_k + kappa)

    with g_k the device's evidence (its count of independent validation groups: time blocks or
    recordings, so windows cut from one block count once) and kappa = ``prior`` (a pseudo-count;
    0 returns ``perf`` unchanged, the paper's raw p_k). A device with one validation block and
    kappa = 4 keeps a fifth of its own score; one with 40 blocks keeps 91 %. Scores stay in the
    range of the inputs, and are all > 0 whenever any device scored above 0."""
    p = np.asarray(perf, dtype=np.float64)
    g = np.asarray(evidence, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError("one evidence count per performance score is needed")
    if not (prior >= 0) or np.any(g < 0) or not np.all(np.isfinite(g)):
        raise ValueError(f"the prior and evidence counts must be finite and >= 0, got {prior}, {g.tolist()}")
    if prior == 0 or len(p) == 0:
        return p
    p_bar = float(np.sum(g * p) / g.sum()) if g.sum() > 0 else float(p.mean())
    return (g * p + prior * p_bar) / (g + prior)


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


def coordinate_median(client_weights: list[Weights]) -> Weights:
    """Coordinate-wise median of the client weight lists (Yin et al. 2018): every parameter is the
    median of its K client values (the mean of the two middle ones for even K)."""
    stacked = np.stack([flatten(w) for w in client_weights])
    return unflatten(np.median(stacked, axis=0), client_weights[0])


def trimmed_mean(client_weights: list[Weights], trim: float = 0.2) -> Weights:
    """Coordinate-wise trimmed mean: per parameter, drop the floor(trim * K) smallest and as many
    largest client values and average the rest (trim in [0, 0.5); at least one value is kept)."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"the trimmed fraction must lie in [0, 0.5), got {trim}")
    stacked = np.sort(np.stack([flatten(w) for w in client_weights]), axis=0)
    k = len(client_weights)
    b = min(int(np.floor(trim * k)), (k - 1) // 2)
    return unflatten(stacked[b:k - b].mean(axis=0), client_weights[0])


def smooth_weights(previous: np.ndarray | None, w: np.ndarray, beta: float) -> np.ndarray:
    """Exponential smoothing of the aggregation weights across rounds, renormalised:
    w_bar = (beta * w_bar_prev + (1 - beta) * w) / sum(...); the first round (no previous weights,
    or another number of devices) uses w. Alternating weight vectors (a period-2 oscillation)
    are pulled towards their mean."""
    w = np.asarray(w, dtype=np.float64)
    if previous is None or len(previous) != len(w) or beta <= 0:
        return w
    s = beta * np.asarray(previous, dtype=np.float64) + (1.0 - beta) * w
    return s / s.sum()


def momentum_step(velocity: np.ndarray | None, step: np.ndarray, beta: float) -> np.ndarray:
    """Server momentum (heavy ball): v <- beta * v + step (v starts at 0); the server then applies
    theta <- theta + alpha * v."""
    step = np.asarray(step, dtype=np.float64)
    return step if velocity is None else beta * np.asarray(velocity, dtype=np.float64) + step


def clip_deltas(deltas: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Bound every update's norm by a multiple of the round's median update norm:
        tau  = factor * median_k ||d_k||
        d_k <- d_k * min(1, tau / ||d_k||)
    Returns (clipped deltas, per-row scale in (0, 1]). ``factor`` <= 0 turns the bound off (scale 1).
    The median is the bound's reference because a minority of sites cannot move it: with K sites
    an attacker needs more than half of them to raise tau. A zero median (most sites sent no
    change) clips every non-zero update to zero."""
    d = np.asarray(deltas, dtype=np.float64)
    scale = np.ones(len(d))
    if factor <= 0 or len(d) == 0:
        return d, scale
    norms = np.linalg.norm(d, axis=1)
    tau = float(factor) * float(np.median(norms))
    big = norms > tau
    scale[big] = tau / norms[big]
    return d * scale[:, None], scale


def cap_weights(w: np.ndarray, cap: float) -> np.ndarray:
    """Aggregation weights (non-negative, summing to 1) with no entry above ``cap``: capped entries
    are set to the cap and their excess is handed to the others in proportion to their weights,
    repeated until no entry exceeds it (water filling):
        w_k <- cap                                   for the capped set C
        w_j <- w_j * (1 - |C| cap) / sum_{i not in C} w_i   for the rest
    The effective cap is max(cap, 1/K) (K weights cannot all stay below 1/K). ``cap`` >= 1 leaves
    ``w`` unchanged. When the uncapped entries are all zero, the excess is shared equally."""
    w = np.asarray(w, dtype=np.float64).copy()
    k = len(w)
    if k == 0 or cap >= 1:
        return w
    c = max(float(cap), 1.0 / k)
    capped = np.zeros(k, dtype=bool)
    while True:
        over = (w > c + 1e-12) & ~capped
        if not over.any():
            return w
        capped |= over
        w[capped] = c
        rest = ~capped
        left = 1.0 - c * capped.sum()
        total = w[rest].sum()
        if rest.any():
            w[rest] = w[rest] * left / total if total > 0 else left / rest.sum()


def head_average(global_flat: np.ndarray, heads: list[np.ndarray], counts, norm_bound: float,
                 weight_cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head-only federated averaging of the heads the sites trained (flat vectors) from the global
    head theta, bounded as every weighted update is:
        d_k = theta_k - theta,   d_k <- clip_deltas(d, norm_bound)_k,   f = cap_weights(n_k / sum n, weight_cap)
        theta' = float32(theta + sum_k f_k d_k)      (float64 arithmetic, one rounding at the end)
    Without clipping or capping this is sum_k (n_k / n) theta_k. Returns (theta', f, clip scales)."""
    g = np.asarray(global_flat, dtype=np.float64).reshape(-1)
    n = np.asarray(counts, dtype=np.float64)
    if len(heads) == 0 or len(n) != len(heads) or np.any(n <= 0):
        raise ValueError("head averaging needs one positive sample count per head, and at least one head")
    d = np.stack([np.asarray(h, dtype=np.float64).reshape(-1) for h in heads]) - g
    d, scale = clip_deltas(d, norm_bound)
    f = cap_weights(n / n.sum(), weight_cap)
    return (g + f @ d).astype(np.float32), f, scale


def tour_order(n_devices: int, policy: str, tour: int, seed: int) -> list[int]:
    """Device visiting order of Phase-1 tour number ``tour``: ``fixed`` is 0..N-1 every tour;
    ``random`` is a permutation drawn from a generator seeded by (seed, tour)."""
    if policy == "fixed":
        return list(range(n_devices))
    if policy == "random":
        return [int(i) for i in np.random.default_rng([seed, 7919, tour]).permutation(n_devices)]
    raise ValueError(f"unknown tour order {policy!r}; choose fixed or random")
