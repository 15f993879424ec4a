"""The one-pass grouping of ``splits.split_groups`` and ``fleet.assign_groups`` gives exactly the
indices of the former per-group ``flatnonzero`` code (kept here as the reference), on random
multi-window groups and on the built-in fleets' splits."""
from __future__ import annotations

import numpy as np
import pytest

from fedtiny.trainer.data.fleet import assign_groups
from fedtiny.trainer.splits import split_groups


def ref_split_groups(y, groups, fractions, rng):
    fr = np.asarray(fractions, dtype=np.float64)
    uniq, first = np.unique(groups, return_index=True)
    parts = [[] for _ in fr]
    cum = np.cumsum(fr)
    for k in np.unique(y[first]):
        gk = uniq[y[first] == k]
        gk = gk[rng.permutation(len(gk))]
        cuts = np.round(cum * len(gk)).astype(int)
        start = 0
        for j, stop in enumerate(cuts):
            for g in gk[start:stop]:
                parts[j].append(np.flatnonzero(groups == g))
            start = stop
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def ref_assign_groups(y, groups, proportions, rng):
    n_dev, n_cls = proportions.shape
    uniq, first = np.unique(groups, return_index=True)
    gcls = y[first]
    out = [[] for _ in range(n_dev)]
    for k in range(n_cls):
        gk = uniq[gcls == k]
        if len(gk) == 0:
            continue
        gk = gk[rng.permutation(len(gk))]
        col = proportions[:, k]
        share = col / col.sum() if col.sum() > 0 else np.full(n_dev, 1.0 / n_dev)
        cuts = np.round(np.cumsum(share) * len(gk)).astype(int)
        start = 0
        for i in range(n_dev):
            for g in gk[start:cuts[i]]:
                out[i].append(np.flatnonzero(groups == g))
            start = cuts[i]
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in out]


@pytest.mark.parametrize("seed", range(5))
def test_same_indices_as_the_per_group_code(seed):
    rng = np.random.default_rng(seed)
    n = 500
    groups = rng.integers(0, 120, n) * 7 - 300                 # multi-window groups, negative ids
    gy = rng.integers(0, 4, 1000)
    y = gy[(groups + 300) // 7]                                # a group's windows share a class
    y[rng.integers(0, n, 10)] = 3                              # ... mostly (class = first window's)
    for fr in ([0.2, 0.8], [0.2, 0.5, 0.3], [0.0, 1.0]):
        a = split_groups(y, groups, fr, np.random.default_rng([seed, 1]))
        b = ref_split_groups(y, groups, fr, np.random.default_rng([seed, 1]))
        assert len(a) == len(b) and all(np.array_equal(u, v) and u.dtype == v.dtype for u, v in zip(a, b))
    props = rng.dirichlet(np.full(4, 0.3), size=9)
    props[:, 2] = 0.0                                          # an underflowed column
    a = assign_groups(y, groups, props, np.random.default_rng([seed, 2]))
    b = ref_assign_groups(y, groups, props, np.random.default_rng([seed, 2]))
    assert all(np.array_equal(u, v) and u.dtype == v.dtype for u, v in zip(a, b))


@pytest.mark.parametrize("dataset", ["electrical", "mechanical"])
def test_builtin_splits_unchanged(dataset, monkeypatch):
    from fedtiny.trainer import splits as S
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import prepare

    cfg = TrainConfig(dataset=dataset, devices=4, samples_per_device=160, public_samples=120)
    new = prepare(cfg)
    monkeypatch.setattr(S, "split_groups", ref_split_groups)
    old = prepare(cfg)
    for a, b in zip(new.splits, old.splits, strict=True):
        for name in ("test", "phase1", "phase2_train", "phase2_val", "phase3_tune", "phase3_val"):
            pa, pb = getattr(a, name), getattr(b, name)
            assert np.array_equal(pa.x, pb.x) and np.array_equal(pa.y, pb.y) and np.array_equal(pa.groups, pb.groups)
