"""Per-device splits (pure NumPy).

Order of cuts for every device: a held-out *test* split first (default 20 %), then the rest goes
20/50/30 to Phases 1/2/3; Phase 2's share is cut again into local-train and local-validation (the
validation gives p_k), Phase 3's into fine-tune and threshold-validation. Cuts are stratified by
class and never split a group (a recording or time block); the share of each class is cut at the
cumulative fractions round(cumsum(f) * n_groups_of_class).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.fleet import DataError, Pool


def split_groups(y: np.ndarray, groups: np.ndarray, fractions, rng: np.random.Generator) -> list[np.ndarray]:
    """Cut indices into len(fractions) parts, stratified by class (a group's class is the label of
    its first window), keeping every group whole. Returns sorted index arrays."""
    fr = np.asarray(fractions, dtype=np.float64)
    if np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    y = np.asarray(y)
    groups = np.asarray(groups)
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    part_of = np.full(len(uniq), -1, np.int64)      # part of every group (-1: none)
    cum = np.cumsum(fr)
    gcls = y[first]
    for k in np.unique(gcls):
        gk = np.flatnonzero(gcls == k)               # positions in uniq, ascending as uniq[gcls == k]
        gk = gk[rng.permutation(len(gk))]
        cuts = np.round(cum * len(gk)).astype(int)
        start = 0
        for j, stop in enumerate(cuts):
            part_of[gk[start:stop]] = j
            start = stop
    win = part_of[inv.reshape(-1)]
    # one pass over the windows instead of a flatnonzero per group: the same sorted indices
    return [np.flatnonzero(win == j) for j in range(len(fr))]


@dataclass
class DeviceSplits:
    test: Pool
    phase1: Pool
    phase2_train: Pool
    phase2_val: Pool
    phase3_tune: Pool
    phase3_val: Pool

    def train_all(self) -> Pool:
        """Every window a device may train on (all shares but test): for local-only/centralized."""
        parts = [self.phase1, self.phase2_train, self.phase2_val, self.phase3_tune, self.phase3_val]
        return Pool(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                    np.concatenate([p.groups for p in parts]))


def split_device(pool: Pool, test_fraction: float, phase_fractions, phase2_val_fraction: float,
                 phase3_val_fraction: float, seed: int, device: int) -> DeviceSplits:
    """Split one device's pool as the module doc says; deterministic in (seed, device)."""
    rng = np.random.default_rng([seed, 104729, device])
    test_idx, rest_idx = split_groups(pool.y, pool.groups, [test_fraction, 1 - test_fraction], rng)
    rest = pool.take(rest_idx)
    p1, p2, p3 = (rest.take(i) for i in split_groups(rest.y, rest.groups, phase_fractions, rng))
    p2t, p2v = (p2.take(i) for i in split_groups(p2.y, p2.groups, [1 - phase2_val_fraction, phase2_val_fraction], rng))
    p3t, p3v = (p3.take(i) for i in split_groups(p3.y, p3.groups, [1 - phase3_val_fraction, phase3_val_fraction], rng))
    return DeviceSplits(pool.take(test_idx), p1, p2t, p2v, p3t, p3v)


def check_device(pool: Pool, device: int, min_samples: int) -> None:
    """Refuse a device the pipeline cannot serve: too few windows, or a single class."""
    if len(pool) < min_samples:
        raise DataError(f"device {device} has {len(pool)} samples; at least {min_samples} are needed")
    classes = np.unique(pool.y)
    if len(classes) < 2:
        raise DataError(f"device {device} holds a single class ({int(classes[0]) if len(classes) else 'none'}); "
                        "at least two classes are needed to train and tune a threshold")
