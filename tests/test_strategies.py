"""The server strategies: pure NumPy (no TensorFlow import), the aggregation functions' arithmetic,
and the server's refusal of unusable replies."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedtiny.trainer import aggregation as agg
from fedtiny.trainer.strategies import FedAvg, FedMetaAlign, FedProx, Reply, check_reply


def test_strategy_and_aggregation_code_never_imports_tensorflow():
    """Also the ClientApp module: Flower starts a process for every message, which must stay light
    (the site's TF lives in its long-lived worker)."""
    code = ("import sys; import fedtiny.trainer.strategies, fedtiny.trainer.aggregation, "
            "fedtiny.trainer.backends, fedtiny.trainer.flower.client_app, fedtiny.trainer.flower.backend; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def _replies(rng, g, k=3):
    out = []
    for i in range(k):
        w = [a + rng.normal(0, 0.1, a.shape).astype(np.float32) for a in g]
        out.append(Reply(i, w, {"n": 10 + i, "acc": 0.5 + 0.1 * i, "loss_before": 1.0, "loss_after": 0.8 - 0.1 * i}))
    return out


def test_fedmetaalign_is_the_pure_functions():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    reps = _replies(rng, g)
    new, rec = FedMetaAlign(2, floor=0.1, server_lr=0.7).aggregate(g, reps)
    d = agg.client_deltas([r.weights for r in reps], g)
    aw = agg.align_weights(d, np.array([0.5, 0.6, 0.7]), 0.1)
    want = agg.apply_weighted_update(g, d, aw.w, 0.7)
    assert all(np.array_equal(a, b) for a, b in zip(new, want))
    assert rec["weights"] == aw.w.tolist() and rec["perf"] == pytest.approx([0.5, 0.6, 0.7])
    _, rec2 = FedMetaAlign(2, perf="loss_improvement").aggregate(g, reps)
    assert rec2["perf"] == pytest.approx([0.2, 0.3, 0.4])


def test_fedavg_and_fedprox_weight_by_samples():
    rng = np.random.default_rng(1)
    g = [rng.normal(size=(5,)).astype(np.float32)]
    reps = _replies(rng, g)
    for s in (FedAvg(1), FedProx(1, mu=0.3)):
        new, rec = s.aggregate(g, reps)
        assert np.allclose(new[0], agg.fedavg([r.weights for r in reps], [10, 11, 12])[0])
        assert rec["weights"] == pytest.approx([10 / 33, 11 / 33, 12 / 33])
    assert FedProx(1, mu=0.3).fit_config(4) == {"phase": "phase2", "round": 4, "epochs": 1, "mu": 0.3}
    assert FedAvg(2).fit_config(1)["mu"] == 0.0


def test_unusable_replies_are_refused_with_a_reason():
    g = [np.zeros((2, 2), np.float32)]
    ok = Reply(0, [np.ones((2, 2), np.float32)], {"n": 3, "acc": 0.5})
    assert check_reply(ok, g, ("n", "acc")) is None
    assert "non-finite" in check_reply(Reply(0, [np.full((2, 2), np.nan, np.float32)], ok.metrics), g)
    assert "shape" in check_reply(Reply(0, [np.ones((3, 2), np.float32)], ok.metrics), g)
    assert "not finite" in check_reply(Reply(0, ok.weights, {"n": 3, "acc": float("inf")}), g)
    assert "missing" in check_reply(Reply(0, ok.weights, {"n": 3}), g, ("n", "acc"))
    assert check_reply(Reply(0, error="timed out"), g) == "timed out"
