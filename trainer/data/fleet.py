"""Fleet data contract and the partitioner shared by the built-in generators and the real-data loaders.

A *pool* is a set of windows with labels and group ids (a group is the unit that may never be split
across devices or splits: a recording, a time block, or a single independent synthetic window).
A *fleet* is what the trainer consumes: a public pool for Phase 0 plus one pool per device.

Label skew: every device i draws class proportions p_i ~ Dirichlet(alpha * 1_K); ``label_skew``
returns the N x K matrix P. Built-in generators synthesise ``class_counts(n, P[i])`` windows for
device i under its own operating condition; real-data loaders hand a pooled set of groups to
``assign_groups``, which deals every class's groups to devices in proportion to P[:, k]
(``deal_devices`` does so with at least two groups per device and class, ``concentrate``, and
retries draws until every device can be trained and tested; ``public_groups`` first holds out the
Phase-0 pool).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data: the CLI prints the message on one line and exits with code 2."""


class TooLittleData(DataError):
    """The data cannot be spread over the devices and splits as asked (the message may be extended
    with the option values that would work: ``trainer.dataprep.suggest``)."""


@dataclass
class Pool:
    """Windows ``x`` (n, T, C) float32 in physical units, labels ``y`` (n,) int64, ``groups`` (n,) int64.

    ``spans`` (n, 3) int64, real data only: [source, start, stop) raw rows of each window in its
    source (0 for the CSV file; the record number for CWRU), so tests can prove that no raw row
    belongs to two groups (``blocks.shared_rows``).

    ``raw`` (n, T, C) int16, only when a front end replaced ``x`` by its output: the int16 samples
    the front end computed it from (what the firmware carries and runs the front end on)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    condition: dict = field(default_factory=dict)
    spans: np.ndarray | None = None
    raw: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if self.spans is not None:
            self.spans = np.asarray(self.spans, dtype=np.int64).reshape(-1, 3)
        if not (len(self.x) == len(self.y) == len(self.groups)) or (
                self.spans is not None and len(self.spans) != len(self.y)):
            raise DataError("pool arrays differ in length: "
                            f"x {len(self.x)}, y {len(self.y)}, groups {len(self.groups)}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Pool":
        return Pool(self.x[idx], self.y[idx], self.groups[idx], dict(self.condition),
                    None if self.spans is None else self.spans[idx],
                    None if self.raw is None else self.raw[idx])


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


def concentrate(counts, share, min_groups: int) -> np.ndarray:
    """Counts of one class's G groups per device, changed so that no device holds between 1 and
    ``min_groups - 1`` of them (a device needs two groups of a class to hold it both in its test split
    and in its training data). Unchanged when every holder (count > 0) already has ``min_groups`` or
    there is at most one holder. Otherwise the h = max(1, min(holders, floor(G / min_groups)))
    holders with the largest shares (ties: lower index) keep the class: each gets ``min_groups``
    (all G when h = 1) and the remaining G - h min_groups go by largest remainder of their shares
    (ties: lower index). The total stays G; ``min_groups`` <= 1 returns the counts as they are."""
    c = np.asarray(counts, dtype=np.int64).copy()
    share = np.asarray(share, dtype=np.float64)
    holders = np.flatnonzero(c > 0)
    if min_groups <= 1 or len(holders) <= 1 or c[holders].min() >= min_groups:
        return c
    total = int(c.sum())
    h = max(1, min(len(holders), total // min_groups))
    keep = sorted(holders.tolist(), key=lambda i: (-share[i], i))[:h]
    out = np.zeros_like(c)
    if h == 1:
        out[keep[0]] = total
        return out
    out[keep] = min_groups
    spare = total - h * min_groups
    w = share[keep] / share[keep].sum() if share[keep].sum() > 0 else np.full(h, 1.0 / h)
    raw = w * spare
    add = np.floor(raw).astype(np.int64)
    order = sorted(range(h), key=lambda j: (-(raw[j] - add[j]), keep[j]))
    for j in order[:spare - int(add.sum())]:
        add[j] += 1
    out[keep] += add
    return out


def assign_groups(y: np.ndarray, groups: np.ndarray, proportions: np.ndarray,
                  rng: np.random.Generator, min_groups: int = 1) -> list[np.ndarray]:
    """Deal whole groups to devices: for class k, its groups (shuffled) are cut into consecutive runs
    whose sizes follow proportions[:, k] / sum_i proportions[i, k] (cut points round(cumsum(share) *
    n_groups)), then adjusted by ``concentrate`` so that a device holding the class holds at least
    ``min_groups`` of its groups (when there are enough). A group's class is the label of its first
    window. Returns, per device, the sorted indices of its windows."""
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
        counts = concentrate(np.diff(np.concatenate([[0], cuts])), share, min_groups)
        cuts = np.cumsum(counts)
        start = 0
        for i in range(n_dev):
            dev_of[gk[start:cuts[i]]] = i
            start = cuts[i]
    win = dev_of[inv.reshape(-1)]
    # sort once by device instead of a flatnonzero per group: the same sorted indices per device
    order = np.argsort(win, kind="stable")
    bounds = np.searchsorted(win[order], np.arange(n_dev + 1))
    return [order[bounds[i]:bounds[i + 1]].astype(np.int64) for i in range(n_dev)]


def public_groups(y: np.ndarray, groups: np.ndarray, public_fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Groups held out as the Phase-0 public pool: per class, round(public_fraction * n) of its n
    groups, at least one when n >= 2 and public_fraction > 0, never all of them (one is always left
    for the devices), chosen by ``rng``. Returns the sorted group ids."""
    y = np.asarray(y)
    groups = np.asarray(groups)
    uniq, first = np.unique(groups, return_index=True)
    gcls = y[first]
    out = []
    if public_fraction <= 0:
        return np.zeros(0, np.int64)
    for k in np.unique(gcls):
        gk = uniq[gcls == k]
        if len(gk) < 2:
            continue
        n_pub = min(len(gk) - 1, max(1, int(round(public_fraction * len(gk)))))
        out.extend(rng.permutation(gk)[:n_pub].tolist())
    return np.sort(np.asarray(out, dtype=np.int64))


MAX_DRAWS = 50


def deal_devices(y: np.ndarray, groups: np.ndarray, n_devices: int, alpha: float, rng: np.random.Generator,
                 min_windows: int = 2, min_groups: int = 2, max_draws: int = MAX_DRAWS, train_splits: int = 4):
    """Deal real-data groups to devices: draw P = label_skew(n_devices, K, alpha, rng) and deal with
    ``assign_groups(..., min_groups)``. A draw is *usable* when every device holds at least
    ``min_windows`` windows of at least two classes, and *roomy* when moreover every device holds, for
    each of its classes, two or more groups, and at least (its class count + ``train_splits``) groups
    in all: enough for one test group per class plus one group in each training split the pipeline
    fills (Phase-2 train / validation, Phase-3 tune / validation). The first roomy draw among at most
    ``max_draws`` draws from the same seeded generator is taken, else the first usable one. Returns
    (P, per-device index arrays); raises TooLittleData naming the problem of the last draw."""
    k = int(np.max(y)) + 1 if len(y) else 1
    problem = ""
    usable = None
    for _ in range(max_draws):
        P = label_skew(n_devices, k, alpha, rng)
        idx = assign_groups(y, groups, P, rng, min_groups=min_groups)
        problem = ""
        roomy = True
        for i, ix in enumerate(idx):
            cls = np.unique(y[ix])
            ng = len(np.unique(groups[ix]))
            if len(ix) < min_windows or len(cls) < 2:
                problem = (f"device {i} would get {len(ix)} window(s) in {ng} group(s) "
                           f"of {len(cls)} class(es) (at least {min_windows} windows of two classes needed)")
                break
            per_cls = [len(np.unique(groups[ix][y[ix] == c])) for c in cls]
            if ng < len(cls) + train_splits or min(per_cls) < 2:
                roomy = False
        if problem:
            continue
        if roomy:
            return P, idx
        if usable is None:
            usable = (P, idx)
    if usable is not None:
        return usable
    raise TooLittleData(f"{problem} in every one of {max_draws} label-skew draws (alpha {alpha}, "
                        f"{n_devices} devices, {len(np.unique(groups))} groups)")


