"""Fleet data contract and the partitioner shared by the built-in generators and the real-data loaders.

A *pool* is a set of windows with labels and group ids (a group is the unit that may never be split
across devices or splits: a recording, a time block, or a single independent synthetic window).
A *fleet* is what the trainer consumes: a public pool for Phase 0 plus one pool per device.

Label skew: every device i draws class proportions p_i ~ Dirichlet(alpha * 1_K); ``label_skew``
returns the N x K matrix P. Built-in generators synthesise ``class_counts(n, P[i])`` windows for
device i under its own operating condition; real-data loaders hand a pooled set of groups to
``assign_groups``, which deals every class's groups to devices in proportion to P[:, k].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data: the CLI prints the message on one line and exits with code 2."""


@dataclass
class Pool:
    """Windows ``x`` (n, T, C) float32 in physical units, labels ``y`` (n,) int64, ``groups`` (n,) int64."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    condition: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if not (len(self.x) == len(self.y) == len(self.groups)):
            raise DataError("pool arrays differ in length: "
                            f"x {len(self.x)}, y {len(self.y)}, groups {len(self.groups)}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Pool":
        return Pool(self.x[idx], self.y[idx], self.groups[idx], dict(self.condition))


@dataclass
class Fleet:
    """Everything the trainer needs about one dataset.

    ``channel_scale`` (C,) are fixed front-end scale factors (not fitted to data): the model sees
    ``x / channel_scale`` so that every channel spans roughly [-1, 1] and one INT8 input scale
    serves all channels. Class 0 is always the no-fault / normal class.
    """

    name: str
    class_names: list[str]
    channel_names: list[str]
    sample_rate_hz: float
    channel_scale: np.ndarray
    public: Pool
    devices: list[Pool]
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.public.x.shape[1:])  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def label_skew(n_devices: int, n_classes: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Per-device class proportions: row i is p_i ~ Dirichlet(alpha * 1_K). Shape (N, K), rows sum to 1."""
    if alpha <= 0:
        raise DataError(f"Dirichlet alpha must be > 0, got {alpha}")
    return rng.dirichlet(np.full(n_classes, float(alpha)), size=n_devices)


def class_counts(n: int, p: np.ndarray, min_per_class: int = 4) -> np.ndarray:
    """Split ``n`` samples over classes by proportions ``p`` (largest-remainder rounding), each class
    getting at least ``min_per_class``; the total stays ``n`` (taken from the largest classes)."""
    k = len(p)
    if n < k * min_per_class:
        raise DataError(f"{n} samples cannot hold {min_per_class} per class for {k} classes")
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    spare = n - k * min_per_class
    raw = p * spare
    counts = np.floor(raw).astype(np.int64)
    rest = spare - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts + min_per_class


def assign_groups(y: np.ndarray, groups: np.ndarray, proportions: np.ndarray,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Deal whole groups to devices: for class k, its groups (shuffled) are cut into consecutive runs
    whose sizes follow proportions[:, k] / sum_i proportions[i, k]. A group's class is the label of
    its first window. Returns, per device, the sorted indices of its windows."""
    y = np.asarray(y)
    groups = np.asarray(groups)
    n_dev, n_cls = proportions.shape
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    gcls = y[first]
    dev_of = np.full(len(uniq), -1, np.int64)       # device of every group (-1: none)
    for k in range(n_cls):
        gk = np.flatnonzero(gcls == k)               # positions in uniq, ascending as uniq[gcls == k]
        if len(gk) == 0:
            continue
        gk = gk[rng.permutation(len(gk))]
        col = proportions[:, k]
        # a tiny alpha can underflow a whole column to 0: deal that class evenly rather than drop it
        share = col / col.sum() if col.sum() > 0 else np.full(n_dev, 1.0 / n_dev)
        cuts = np.round(np.cumsum(share) * len(gk)).astype(int)
        start = 0
        for i in range(n_dev):
            dev_of[gk[start:cuts[i]]] = i
            start = cuts[i]
    win = dev_of[inv.reshape(-1)]
    # sort once by device instead of a flatnonzero per group: the same sorted indices per device
    order = np.argsort(win, kind="stable")
    bounds = np.searchsorted(win[order], np.arange(n_dev + 1))
    return [order[bounds[i]:bounds[i + 1]].astype(np.int64) for i in range(n_dev)]
