"""Server strategies of Phase 2 (FedMetaAlign, FedAvg, FedProx): pure NumPy, no TensorFlow.

A strategy answers two questions of the server, the same for every backend (in-process, Flower
simulation, Flower deployment):

- ``fit_config(r)``: the config dict sent with the global weights to every site in round r
  (``phase``, ``round``, ``epochs``, ``mu``); the site's training key is derived from it.
- ``aggregate(global_weights, replies)``: the new global weights and the strategy's part of the
  round's metrics line, from the replies that passed ``check_reply``.

A reply is a site's answer to one fit: its weights and its metrics (``n`` training windows,
``loss_before`` / ``loss_after`` = cross-entropy of the sent / trained weights on its Phase-2
validation windows, ``acc`` = validation accuracy after training). Fed-Meta-Align's p_k is
computed here from those metrics (``perf``: accuracy, or relative loss improvement
max(before - after, 0) / max(before, 1e-12)), so sites need not know the server's choice.
The arithmetic is ``trainer/aggregation.py``'s, unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import aggregation as agg

Weights = list[np.ndarray]


@dataclass
class Reply:
    """One site's answer to one request (fit, evaluate or finalize). ``error`` is set (and the rest
    may be empty) when the site failed, timed out or sent something the server refused."""

    device: int
    weights: Weights | None = None
    metrics: dict = field(default_factory=dict)
    artifacts: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_reply(reply: Reply, like: Weights | None, need: tuple[str, ...] = ()) -> str | None:
    """Why the server must refuse ``reply`` (None when it is usable): a failure reported by the
    site, weights missing or shaped unlike ``like``, non-finite weights, a metric of ``need``
    missing, or any non-finite numeric metric."""
    if reply.error is not None:
        return reply.error
    if like is not None:
        w = reply.weights
        if w is None or len(w) != len(like):
            return f"reply holds {0 if w is None else len(w)} weight arrays, expected {len(like)}"
        for i, (a, b) in enumerate(zip(w, like)):
            a = np.asarray(a)
            if a.shape != np.shape(b):
                return f"weight array {i} has shape {a.shape}, expected {np.shape(b)}"
            if not np.all(np.isfinite(a)):
                return f"weight array {i} holds non-finite values"
    for k in need:
        if k not in reply.metrics:
            return f"metric {k!r} is missing"
    for k, v in reply.metrics.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isfinite(x):
                return f"metric {k!r} is not finite ({x})"
    return None


def perf_score(metrics: dict, perf: str) -> float:
    """p_k of one site from its fit metrics (module doc)."""
    if perf == "accuracy":
        return float(metrics["acc"])
    before, after = float(metrics["loss_before"]), float(metrics["loss_after"])
    return max(before - after, 0.0) / max(before, 1e-12)


class Strategy:
    """Base: a round's fit config and a sample-weighted mean (FedAvg)."""

    name = "fedavg"
    needs = ("n", "acc", "loss_before", "loss_after")

    def __init__(self, local_epochs: int, mu: float = 0.0):
        self.local_epochs = int(local_epochs)
        self.mu = float(mu)

    def fit_config(self, r: int) -> dict:
        return {"phase": "phase2", "round": int(r), "epochs": self.local_epochs, "mu": self.mu}

    def aggregate(self, global_weights: Weights, replies: list[Reply]) -> tuple[Weights, dict]:
        n = [int(x.metrics["n"]) for x in replies]
        new = agg.fedavg([x.weights for x in replies], n)
        return new, {"weights": (np.asarray(n) / np.sum(n)).tolist()}


class FedAvg(Strategy):
    """theta <- sum_k (n_k / n) theta_k; plain local cross-entropy (mu = 0)."""

    def __init__(self, local_epochs: int):
        super().__init__(local_epochs, 0.0)


class FedProx(Strategy):
    """FedAvg's server step; sites add (mu / 2) ||theta - theta_global||^2 to their loss."""

    name = "fedprox"


class FedMetaAlign(Strategy):
    """w_k = p_k max(cos(d_k, mean d), c) / sum (...); theta += alpha sum_k w_k d_k."""

    name = "fedmetaalign"

    def __init__(self, local_epochs: int, floor: float = 0.1, server_lr: float = 1.0,
                 perf: str = "accuracy"):
        super().__init__(local_epochs, 0.0)
        self.floor, self.server_lr, self.perf = float(floor), float(server_lr), perf

    def aggregate(self, global_weights: Weights, replies: list[Reply]) -> tuple[Weights, dict]:
        d = agg.client_deltas([x.weights for x in replies], global_weights)
        p = np.asarray([perf_score(x.metrics, self.perf) for x in replies], dtype=np.float64)
        aw = agg.align_weights(d, p, self.floor)
        new = agg.apply_weighted_update(global_weights, d, aw.w, self.server_lr)
        return new, {"weights": aw.w.tolist(), "cos": aw.cos.tolist(), "perf": aw.p.tolist()}


def make_strategy(cfg) -> Strategy:
    """The strategy of a run config (a ``TrainConfig`` of a federated method)."""
    if cfg.method == "fedmetaalign":
        return FedMetaAlign(cfg.local_epochs, cfg.floor, cfg.server_lr, cfg.perf)
    if cfg.method == "fedprox":
        return FedProx(cfg.local_epochs, cfg.mu)
    if cfg.method == "fedavg":
        return FedAvg(cfg.local_epochs)
    raise ValueError(f"{cfg.method!r} has no federated strategy")
