import numpy as np
import pytest

from fedtiny.trainer.data.fleet import DataError, Pool, assign_groups, class_counts, label_skew
from fedtiny.trainer.splits import check_device, split_device, split_groups


def _pool(n=300, k=4, group_size=1, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.integers(0, k, size=n // group_size), group_size)
    groups = np.repeat(np.arange(n // group_size), group_size)
    x = rng.normal(size=(len(y), 8, 2)).astype(np.float32)
    return Pool(x, y, groups)


def test_device_splits_are_disjoint_cover_everything_and_keep_test_out():
    pool = _pool()
    pool.x[:, 0, 0] = np.arange(len(pool))          # tag every window
    s = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed=1, device=0)
    parts = [s.test, s.phase1, s.phase2_train, s.phase2_val, s.phase3_tune, s.phase3_val]
    tags = np.concatenate([p.x[:, 0, 0] for p in parts]).astype(int)
    assert sorted(tags.tolist()) == list(range(len(pool)))
    test_tags = set(s.test.x[:, 0, 0].astype(int).tolist())
    assert not test_tags & set(s.train_all().x[:, 0, 0].astype(int).tolist())
    assert abs(len(s.test) - 0.2 * len(pool)) <= 4      # stratified rounding per class
    rest = len(pool) - len(s.test)
    assert abs(len(s.phase1) - 0.2 * rest) <= 4
    assert abs(len(s.phase2_train) + len(s.phase2_val) - 0.5 * rest) <= 4


def test_splits_keep_groups_whole():
    pool = _pool(n=400, group_size=10)
    s = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed=3, device=2)
    seen = {}
    for name in ("test", "phase1", "phase2_train", "phase2_val", "phase3_tune", "phase3_val"):
        for g in np.unique(getattr(s, name).groups):
            assert seen.setdefault(int(g), name) == name


def test_split_is_deterministic_per_seed_and_device():
    pool = _pool()
    a = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed=1, device=0)
    b = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed=1, device=0)
    c = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed=2, device=0)
    assert np.array_equal(a.test.groups, b.test.groups)
    assert not np.array_equal(a.test.groups, c.test.groups)


def test_bad_fractions_and_bad_devices():
    pool = _pool()
    with pytest.raises(DataError):
        split_groups(pool.y, pool.groups, [0.5, 0.6], np.random.default_rng(0))
    with pytest.raises(DataError, match="device 4 has 10 samples"):
        check_device(pool.take(np.arange(10)), 4, 20)
    one = pool.take(np.flatnonzero(pool.y == 1))
    with pytest.raises(DataError, match="single class"):
        check_device(one, 2, 20)


def test_label_skew_and_group_assignment():
    rng = np.random.default_rng(0)
    p = label_skew(5, 4, 0.5, rng)
    assert p.shape == (5, 4) and np.allclose(p.sum(axis=1), 1)
    counts = class_counts(100, p[0], min_per_class=4)
    assert counts.sum() == 100 and counts.min() >= 4
    pool = _pool(n=400, group_size=5)
    parts = assign_groups(pool.y, pool.groups, p, rng)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(pool) and len(np.unique(allidx)) == len(pool)
    owner = {}
    for i, idx in enumerate(parts):
        for g in np.unique(pool.groups[idx]):
            assert owner.setdefault(int(g), i) == i


def test_a_class_no_device_draws_is_dealt_evenly_not_dropped():
    y = np.repeat([0, 1], 10)
    groups = np.arange(20)
    props = np.array([[1.0, 0.0], [1.0, 0.0]])        # what Dirichlet underflow gives for a tiny alpha
    parts = assign_groups(y, groups, props, np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))
    assert all((y[p] == 1).sum() == 5 for p in parts)
