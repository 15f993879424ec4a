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

What a site reports is untrusted (docs/explanation/federation.md), so every weighted strategy bounds it:
its sample count n_k is the one of its first Phase-2 reply (``sample_counts``; a later claim is
ignored), its update is clipped to ``norm_bound`` x the round's median update norm
(``aggregation.clip_deltas``) and its aggregation weight to ``weight_cap``
(``aggregation.cap_weights``). The metrics line records ``clipped`` (each site's scale) when an
update was clipped.
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
    missing, or any non-finite (or null) numeric metric."""
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
        if k == "not_finite":            # strict JSON's note of the values it sent as null
            continue
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if x is None:                # a non-finite value that crossed the wire as strict JSON
                return f"metric {k!r} is not finite (null)"
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

    def __init__(self, local_epochs: int, mu: float = 0.0, norm_bound: float = 0.0, weight_cap: float = 1.0):
        self.local_epochs = int(local_epochs)
        self.mu = float(mu)
        self.norm_bound, self.weight_cap = float(norm_bound), float(weight_cap)
        self.joined_n: dict[int, int] = {}      # device -> its sample count at its first Phase-2 reply

    def sample_counts(self, replies: list[Reply]) -> np.ndarray:
        """n_k of each reply: fixed at the site's first Phase-2 reply (later claims are ignored)."""
        for x in replies:
            self.joined_n.setdefault(int(x.device), int(x.metrics["n"]))
        return np.asarray([self.joined_n[int(x.device)] for x in replies], dtype=np.float64)

    def bounded_deltas(self, global_weights: Weights, replies: list[Reply]) -> tuple[np.ndarray, np.ndarray]:
        """(update matrix D with every row clipped by ``aggregation.clip_deltas``, per-row scale)."""
        return agg.clip_deltas(agg.client_deltas([x.weights for x in replies], global_weights), self.norm_bound)

    def bounds_state(self) -> dict[str, np.ndarray]:
        if not self.joined_n:
            return {}
        return {"joined_n": np.asarray(sorted(self.joined_n.items()), dtype=np.int64)}

    def load_bounds_state(self, state: dict[str, np.ndarray]) -> None:
        j = state.get("joined_n")
        self.joined_n = {} if j is None else {int(d): int(n) for d, n in np.asarray(j).reshape(-1, 2)}

    def fit_config(self, r: int) -> dict:
        return {"phase": "phase2", "round": int(r), "epochs": self.local_epochs, "mu": self.mu}

    def state(self) -> dict[str, np.ndarray]:
        """Arrays the strategy carries from round to round (checkpointed: the joined sample counts)."""
        return self.bounds_state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_bounds_state(state)

    def aggregate(self, global_weights: Weights, replies: list[Reply]) -> tuple[Weights, dict]:
        """theta + sum_k f_k clip(d_k), f = cap(n_k / n); exactly ``aggregation.fedavg`` when nothing
        was clipped or capped."""
        n = self.sample_counts(replies)
        frac = n / n.sum()
        capped = agg.cap_weights(frac, self.weight_cap)
        d, scale = self.bounded_deltas(global_weights, replies)
        rec = {"weights": capped.tolist()}
        if np.any(scale < 1) or not np.array_equal(capped, frac):
            new = agg.apply_weighted_update(global_weights, d, capped)
            if np.any(scale < 1):
                rec["clipped"] = scale.tolist()
        else:
            new = agg.fedavg([x.weights for x in replies], n)
        return new, rec


class FedAvg(Strategy):
    """theta <- sum_k (n_k / n) theta_k; plain local cross-entropy (mu = 0)."""

    def __init__(self, local_epochs: int, norm_bound: float = 0.0, weight_cap: float = 1.0):
        super().__init__(local_epochs, 0.0, norm_bound, weight_cap)


class FedProx(Strategy):
    """FedAvg's server step; sites add (mu / 2) ||theta - theta_global||^2 to their loss."""

    name = "fedprox"


class FedMetaAlign(Strategy):
    """w_k = p_k max(cos(d_k, r), c) / sum (...); step = sum_k w_k d_k; theta += alpha v with
    v = step (``momentum`` 0) or v = beta v + step (server momentum). r is the mean update
    (``ref="mean"``, the paper), the mean of unit updates (``"normalized"``) or that blended with
    the previous server step's direction (``"server"``), see ``aggregation.reference_direction``.

    ``smoothing`` beta > 0 smooths the weights across rounds (``aggregation.smooth_weights``) before
    the step; the metrics line then logs the smoothed ``weights`` and the round's ``raw_weights``.
    ``perf_prior`` kappa > 0 shrinks p_k towards the fleet's score (``aggregation.shrink_perf``);
    the line then logs the shrunk ``perf`` and the sites' ``raw_perf``.

    State kept between rounds (``state()`` / ``load_state()``, checkpointed with the weights so a
    resumed run repeats an uninterrupted one): the last server step (for ``ref="server"``), the
    momentum velocity and the smoothed weights."""

    name = "fedmetaalign"

    def __init__(self, local_epochs: int, floor: float = 0.1, server_lr: float = 1.0,
                 perf: str = "accuracy", ref: str = "mean", momentum: float = 0.0, ref_beta: float = 0.5,
                 smoothing: float = 0.0, norm_bound: float = 0.0, weight_cap: float = 1.0,
                 perf_prior: float = 0.0):
        super().__init__(local_epochs, 0.0, norm_bound, weight_cap)
        self.perf_prior = float(perf_prior)
        if self.perf_prior > 0:           # the evidence behind p_k is needed to shrink it
            self.needs = Strategy.needs + ("val_groups",)
        self.floor, self.server_lr, self.perf = float(floor), float(server_lr), perf
        self.ref, self.momentum, self.ref_beta = ref, float(momentum), float(ref_beta)
        self.smoothing = float(smoothing)
        self.prev_step: np.ndarray | None = None
        self.velocity: np.ndarray | None = None
        self.prev_w: np.ndarray | None = None

    def state(self) -> dict[str, np.ndarray]:
        out = self.bounds_state()
        if self.prev_step is not None:
            out["prev_step"] = self.prev_step
        if self.velocity is not None:
            out["velocity"] = self.velocity
        if self.prev_w is not None:
            out["prev_w"] = self.prev_w
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.prev_step = state.get("prev_step")
        self.velocity = state.get("velocity")
        self.prev_w = state.get("prev_w")
        self.load_bounds_state(state)

    def aggregate(self, global_weights: Weights, replies: list[Reply]) -> tuple[Weights, dict]:
        d, scale = self.bounded_deltas(global_weights, replies)
        raw = np.asarray([perf_score(x.metrics, self.perf) for x in replies], dtype=np.float64)
        p = raw if self.perf_prior == 0 else agg.shrink_perf(
            raw, np.asarray([float(x.metrics["val_groups"]) for x in replies]), self.perf_prior)
        reference = None if self.ref == "mean" else agg.reference_direction(d, self.ref, self.prev_step,
                                                                             self.ref_beta)
        aw = agg.align_weights(d, p, self.floor, reference)
        w = aw.w
        if self.smoothing > 0:
            w = agg.smooth_weights(self.prev_w, aw.w, self.smoothing)
            self.prev_w = w
        w = agg.cap_weights(w, self.weight_cap)
        step = w @ d
        if self.momentum > 0:
            self.velocity = agg.momentum_step(self.velocity, step, self.momentum)
            step = self.velocity
        if self.ref == "server":
            self.prev_step = step
        new = agg.unflatten(agg.flatten(global_weights) + self.server_lr * step, global_weights)
        rec = {"weights": w.tolist(), "cos": aw.cos.tolist(), "perf": aw.p.tolist()}
        if self.perf_prior > 0:
            rec["raw_perf"] = raw.tolist()
        if self.smoothing > 0:
            rec["raw_weights"] = aw.w.tolist()
        if np.any(scale < 1):
            rec["clipped"] = scale.tolist()
        return new, rec


class Median(Strategy):
    """Coordinate-wise median of the client weights (robust baseline; FedAvg's local training)."""

    name = "median"

    def aggregate(self, global_weights: Weights, replies: list[Reply]) -> tuple[Weights, dict]:
        return agg.coordinate_median([x.weights for x in replies]), {}     # no per-device weight exists


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean of the client weights (robust baseline)."""

    name = "trimmed-mean"

    def __init__(self, local_epochs: int, trim: float = 0.2):
        super().__init__(local_epochs, 0.0)
        self.trim = float(trim)

    def aggregate(self, global_weights: Weights, replies: list[Reply]) -> tuple[Weights, dict]:
        return agg.trimmed_mean([x.weights for x in replies], self.trim), {}


def make_strategy(cfg) -> Strategy:
    """The strategy of a run config (a ``TrainConfig`` of a federated method)."""
    if cfg.method == "fedmetaalign":
        return FedMetaAlign(cfg.local_epochs, cfg.floor, cfg.server_lr, cfg.perf, cfg.align_ref,
                            cfg.server_momentum, smoothing=cfg.weight_smoothing, norm_bound=cfg.norm_bound,
                            weight_cap=cfg.weight_cap, perf_prior=cfg.perf_prior)
    if cfg.method == "median":
        return Median(cfg.local_epochs)
    if cfg.method == "trimmed-mean":
        return TrimmedMean(cfg.local_epochs, cfg.trim)
    if cfg.method == "fedprox":
        return FedProx(cfg.local_epochs, cfg.mu, cfg.norm_bound, cfg.weight_cap)
    if cfg.method == "fedavg":
        return FedAvg(cfg.local_epochs, cfg.norm_bound, cfg.weight_cap)
    raise ValueError(f"{cfg.method!r} has no federated strategy")
