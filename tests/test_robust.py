"""Aggregation options against the Phase-2 oscillation, robust baselines and misbehaving devices."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedtiny.trainer import aggregation as agg
from fedtiny.trainer import faults
from fedtiny.trainer.strategies import FedMetaAlign, Median, Reply, TrimmedMean


def test_normalized_reference_is_not_dominated_by_large_updates():
    # group A: small updates along e1; group B: ten times larger along e2
    d = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 10.0], [0.1, 10.0]])
    mean_ref = agg.reference_direction(d, "mean")
    norm_ref = agg.reference_direction(d, "normalized")
    cos_mean = [agg.cosine(x, mean_ref) for x in d]
    cos_norm = [agg.cosine(x, norm_ref) for x in d]
    assert min(cos_mean[2:]) > 0.9 and max(cos_mean[:2]) < 0.25     # B owns the mean direction
    assert abs(np.mean(cos_norm[:2]) - np.mean(cos_norm[2:])) < 0.05  # both groups alike


def test_server_reference_blends_the_previous_step():
    d = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(agg.reference_direction(d, "server", None), agg.reference_direction(d, "normalized"))
    r = agg.reference_direction(d, "server", np.array([0.0, 4.0]), beta=0.5)
    assert np.allclose(r, 0.5 * np.array([0.0, 1.0]) + 0.5 * np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        agg.reference_direction(d, "nope")


def test_median_and_trimmed_mean_ignore_an_outlier():
    honest = [[np.array([1.0, 2.0]), np.array([[3.0]])] for _ in range(4)]
    evil = [np.array([1e6, -1e6]), np.array([[1e6]])]
    med = agg.coordinate_median(honest + [evil])
    tm = agg.trimmed_mean(honest + [evil], trim=0.2)
    for got in (med, tm):
        assert np.allclose(got[0], [1.0, 2.0]) and np.allclose(got[1], [[3.0]])
    assert np.allclose(agg.trimmed_mean(honest + [evil], 0.0)[0][0], (4 + 1e6) / 5)
    with pytest.raises(ValueError):
        agg.trimmed_mean(honest, 0.5)


def test_momentum_step():
    v = agg.momentum_step(None, np.array([1.0, 0.0]), 0.9)
    v = agg.momentum_step(v, np.array([0.0, 1.0]), 0.9)
    assert np.allclose(v, [0.9, 1.0])


def _replies(global_w, rng, k=4):
    out = []
    for i in range(k):
        w = [g + rng.normal(0, 0.1, g.shape) for g in global_w]
        out.append(Reply(i, w, {"n": 10 + i, "acc": 0.5 + 0.1 * i, "loss_before": 1.0, "loss_after": 0.8}))
    return out


def test_default_fedmetaalign_step_is_the_paper_rule():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
    replies = _replies(g, rng)
    new, rec = FedMetaAlign(2, floor=0.1, server_lr=1.0).aggregate(g, replies)
    d = agg.client_deltas([r.weights for r in replies], g)
    aw = agg.align_weights(d, np.array([r.metrics["acc"] for r in replies]), 0.1)
    want = agg.apply_weighted_update(g, d, aw.w, 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(new, want))
    assert rec["weights"] == aw.w.tolist()


def test_momentum_state_round_trips():
    rng = np.random.default_rng(1)
    g = [rng.normal(size=(4,))]
    s1 = FedMetaAlign(2, momentum=0.5, ref="server")
    g1, _ = s1.aggregate(g, _replies(g, rng))
    state = s1.state()
    assert set(state) == {"prev_step", "velocity"}
    s2 = FedMetaAlign(2, momentum=0.5, ref="server")
    s2.load_state(state)
    reps = _replies(g1, np.random.default_rng(2))
    a, _ = s1.aggregate(g1, reps)
    b, _ = s2.aggregate(g1, reps)
    assert np.array_equal(a[0], b[0])


def test_robust_strategies_aggregate():
    rng = np.random.default_rng(3)
    g = [rng.normal(size=(5,))]
    reps = _replies(g, rng, 5)
    m, _ = Median(2).aggregate(g, reps)
    assert np.allclose(m[0], np.median([r.weights[0] for r in reps], axis=0))
    t, _ = TrimmedMean(2, 0.2).aggregate(g, reps)
    srt = np.sort([r.weights[0] for r in reps], axis=0)
    assert np.allclose(t[0], srt[1:4].mean(axis=0))


def test_faulty_devices_and_data_faults():
    a = faults.faulty_devices(10, 3, seed=0)
    assert a == faults.faulty_devices(10, 3, seed=0) and len(set(a)) == 3 and a == sorted(a)
    assert faults.faulty_devices(10, 0, 0) == []
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 0.2, (5, 8, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 3])
    assert np.array_equal(faults.corrupt(x, y, "label-flip", 4, rng)[1], [1, 2, 3, 0, 0])
    xs, _ = faults.corrupt(x, y, "stuck", 4, rng)
    assert np.all(xs[:, :, 0] == x[:, :1, 0]) and np.array_equal(xs[:, :, 1:], x[:, :, 1:])
    xg, _ = faults.corrupt(x, y, "gain", 4, rng)
    assert np.allclose(xg, np.clip(faults.GAIN * x, -1, 1))
    xn, _ = faults.corrupt(x, y, "noise", 4, rng)
    assert np.abs(xn - x).mean() > 0.1 and np.all(np.abs(xn) <= 1)


def test_random_update_keeps_the_norm_and_changes_the_direction():
    rng = np.random.default_rng(0)
    sent = [np.zeros((10, 3), np.float32), np.zeros(4, np.float32)]
    trained = [np.ones((10, 3), np.float32), np.ones(4, np.float32)]
    out = faults.random_update(sent, trained, rng)
    d = agg.flatten(out) - agg.flatten(sent)
    true = agg.flatten(trained) - agg.flatten(sent)
    assert np.isclose(np.linalg.norm(d), np.linalg.norm(true), rtol=1e-5)
    assert abs(agg.cosine(d, true)) < 0.5
    assert out[0].dtype == np.float32


def test_server_momentum_run_resumes_exactly(tmp_path):
    from conftest import small_config

    from fedtiny.trainer.pipeline import train

    cfg = small_config(devices=2, rounds=3, server_momentum=0.5, align_ref="server")
    full = train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "part", until="round02")
    assert any(p.name.startswith("server-") for p in (tmp_path / "part" / "state").iterdir())
    resumed = train(cfg, tmp_path / "part", resume=True)
    assert [d["model_sha256"] for d in resumed["devices"]] == [d["model_sha256"] for d in full["devices"]]


def test_faulty_run_reports_honest_devices(tmp_path):
    from conftest import small_config

    from fedtiny.trainer.pipeline import train

    cfg = small_config(devices=3, rounds=2, faulty=1, fault="random-update")
    rep = train(cfg, tmp_path / "r")
    f = rep["faults"]
    bad = faults.faulty_devices(3, 1, cfg.seed)
    assert f["devices"] == bad and f["kind"] == "random-update"
    honest = [d["int8_acc"] for d in rep["devices"] if d["device"] not in bad]
    assert np.isclose(f["honest_mean_int8_acc"], np.mean(honest))
    assert len(f["faulty_weight_share_per_round"]) == 2
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    r1 = [x for x in lines if x.get("phase") == "phase2"][0]
    assert np.isclose(f["faulty_weight_share_per_round"][0], sum(r1["weights"][i] for i in bad))


def test_weight_smoothing_damps_alternating_weights():
    wa, wb = np.array([0.45, 0.45, 0.05, 0.05]), np.array([0.05, 0.05, 0.45, 0.45])
    assert np.array_equal(agg.smooth_weights(None, wa, 0.8), wa)
    w = None
    for r in range(20):
        w = agg.smooth_weights(w, wa if r % 2 == 0 else wb, 0.8)
        assert np.isclose(w.sum(), 1.0)
    assert np.max(np.abs(w - 0.25)) < 0.05          # close to the two patterns' mean
    s = FedMetaAlign(2, smoothing=0.5)
    rng = np.random.default_rng(4)
    g = [rng.normal(size=(3,))]
    _, rec = s.aggregate(g, _replies(g, rng))
    assert "prev_w" in s.state() and rec["weights"] == rec["raw_weights"]
    _, rec2 = s.aggregate(g, _replies(g, rng))
    assert rec2["weights"] != rec2["raw_weights"]
