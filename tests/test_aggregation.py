"""Aggregation rules on plain NumPy arrays (the module must not need TensorFlow)."""
import subprocess
import sys

import numpy as np
import pytest

from fedtiny.trainer import aggregation as agg


def _weights(rng, scale=1.0):
    return [rng.normal(size=(3, 4)) * scale, rng.normal(size=(4,)) * scale]


def test_aggregation_imports_no_tensorflow():
    code = ("import sys, fedtiny.trainer.aggregation, fedtiny.trainer.threshold, fedtiny.trainer.splits;"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_equal_updates_get_equal_weights():
    d = np.tile(np.array([[0.5, -1.0, 2.0]]), (4, 1))
    aw = agg.align_weights(d, np.full(4, 0.8), floor=0.1)
    assert np.allclose(aw.w, 0.25)
    assert np.allclose(aw.cos, 1.0)


def test_opposite_update_gets_exactly_the_floor_share():
    v = np.array([1.0, 2.0, -0.5])
    d = np.stack([v, v, v, -v])          # mean = v/2, so cos(-v, mean) = -1
    c = 0.1
    aw = agg.align_weights(d, np.ones(4), floor=c)
    assert aw.cos[3] == pytest.approx(-1.0)
    assert aw.w[3] == pytest.approx(c / (3 * 1.0 + c))
    assert np.allclose(aw.w[:3], 1.0 / (3 + c))


def test_weights_sum_to_one_and_follow_performance():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(6, 50))
    perf = rng.uniform(0.2, 1.0, size=6)
    aw = agg.align_weights(d, perf, floor=0.1)
    assert aw.w.sum() == pytest.approx(1.0)
    assert np.all(aw.w > 0)
    # same direction, double the performance -> double the weight
    d2 = np.stack([d[0], d[0]])
    aw2 = agg.align_weights(d2, np.array([0.4, 0.8]), floor=0.1)
    assert aw2.w[1] == pytest.approx(2 * aw2.w[0])


def test_zero_performance_everywhere_falls_back_to_uniform():
    aw = agg.align_weights(np.eye(3), np.zeros(3), floor=0.1)
    assert np.allclose(aw.w, 1 / 3)


def test_server_step_applies_weighted_delta():
    rng = np.random.default_rng(1)
    g = _weights(rng)
    clients = [_weights(rng) for _ in range(3)]
    d = agg.client_deltas(clients, g)
    w = np.array([0.5, 0.3, 0.2])
    new = agg.apply_weighted_update(g, d, w, server_lr=0.5)
    expect = [gi + 0.5 * sum(wk * (ck[i] - gi) for wk, ck in zip(w, clients)) for i, gi in enumerate(g)]
    for a, b in zip(new, expect):
        assert a.shape == b.shape and np.allclose(a, b)


def test_fedavg_is_the_sample_weighted_mean():
    rng = np.random.default_rng(2)
    clients = [_weights(rng) for _ in range(3)]
    n = [10, 30, 60]
    avg = agg.fedavg(clients, n)
    for i in range(2):
        expect = (10 * clients[0][i] + 30 * clients[1][i] + 60 * clients[2][i]) / 100
        assert np.allclose(avg[i], expect)
    with pytest.raises(ValueError):
        agg.fedavg(clients, [0, 0, 0])


def test_fedavg_of_equal_clients_is_that_client():
    rng = np.random.default_rng(3)
    w = _weights(rng)
    for a, b in zip(agg.fedavg([w, w], [1, 5]), w):
        assert np.allclose(a, b)


def test_flatten_roundtrip():
    rng = np.random.default_rng(4)
    w = [x.astype(np.float32) for x in _weights(rng)]
    back = agg.unflatten(agg.flatten(w), w)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(back, w))


@pytest.mark.parametrize("policy", ["fixed", "random"])
def test_tour_visits_each_device_once_per_tour_in_order(policy):
    from fedtiny.trainer.pipeline import run_tours

    visits = []
    orders = run_tours(7, 3, policy, seed=5, visit=lambda t, v, d: visits.append((t, v, d)))
    assert len(visits) == 21
    for t in range(3):
        seen = [d for (tt, _, d) in visits if tt == t]
        assert sorted(seen) == list(range(7))            # each device exactly once per tour
        assert seen == orders[t] == agg.tour_order(7, policy, t, 5)   # in the chosen order
    if policy == "fixed":
        assert orders[0] == list(range(7))
    else:
        assert orders[0] != orders[1] or orders[1] != orders[2]
        assert agg.tour_order(7, "random", 0, 5) == agg.tour_order(7, "random", 0, 5)


def test_non_finite_scores_or_floor_are_refused_not_averaged_away():
    d = np.eye(3)
    with pytest.raises(ValueError, match="finite"):
        agg.align_weights(d, np.array([np.nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match="floor"):
        agg.align_weights(d, np.ones(3), floor=float("nan"))


def test_training_keys_never_coincide_with_each_other_or_the_generators():
    """NumPy's SeedSequence ignores trailing zeros, so [s, 0] == [s]: keys must avoid them."""
    from fedtiny.trainer.pipeline import key

    seed = 5
    keys = [key(seed, "phase0"), key(seed, "phase1", 0, 0), key(seed, "phase1", 0, 1),
            *[key(seed, "phase2", r, i) for r in (1, 2) for i in range(4)],
            *[key(seed, "phase3", i) for i in range(4)], *[key(seed, "phase3", i, 1) for i in range(4)],
            key(seed, "central"), *[key(seed, "local", i) for i in range(4)]]
    generators = [[seed, 2, 1], *[[seed, 2, 2, i + 1] for i in range(4)], [seed, 2, 3],
                  [seed, 3, 1], *[[seed, 3, 2, i + 1] for i in range(4)], *[[seed, 3, 3, i + 1] for i in range(4)]]
    assert all(k[-1] != 0 for k in keys)
    states = [tuple(np.random.SeedSequence(k).generate_state(4)) for k in keys + generators]
    assert len(set(states)) == len(states)
