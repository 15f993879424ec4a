"""Detection figures and the pure pieces behind them: false-alarm / detection rates, the fleet
threshold from score histograms, shrunk Phase-2 scores p_k, the early-stopping rule, two-sided
threshold-validation splits and the classical reference's features. No training here."""
from __future__ import annotations

import numpy as np
import pytest

from fedtiny.trainer import aggregation as agg
from fedtiny.trainer.data.fleet import Pool
from fedtiny.trainer.fleet_threshold import (BINS, check_histogram, merge_histograms, score_histogram,
                                             threshold_from_histogram)
from fedtiny.trainer.pipeline import fleet_rates
from fedtiny.trainer.splits import split_device
from fedtiny.trainer.stopping import best_round, should_stop
from fedtiny.trainer.strategies import FedMetaAlign, Reply
from fedtiny.trainer.threshold import detection_rates, tune_threshold


def test_detection_rates_count_false_alarms_and_detections():
    y = np.array([0, 0, 0, 0, 1, 2, 2, 1])
    pred = np.array([0, 1, 0, 2, 1, 1, 0, 2])      # 2 of 4 normal called faults; 3 of 4 faults found
    r = detection_rates(y, pred)
    assert r["far"] == 0.5 and r["dr"] == 0.75
    assert (r["n_normal"], r["n_fault"], r["false_alarms"], r["detections"], r["correct"]) == (4, 4, 2, 3, 3)
    assert detection_rates(np.array([1, 2]), np.array([0, 2]))["far"] is None
    # pooled over devices: counts add up, rates are not averaged
    c = [detection_rates(y, pred), detection_rates(np.array([0, 0]), np.array([0, 0]))]
    f = fleet_rates(c)
    assert f["fleet_int8_far"] == pytest.approx(2 / 6) and f["fleet_int8_dr"] == 0.75
    assert f["fleet_int8_acc"] == pytest.approx(5 / 10) and f["mean_int8_far"] == pytest.approx(0.25)


def test_fleet_threshold_merges_sites_that_each_hold_one_side():
    rng = np.random.default_rng(0)
    normal = rng.uniform(0.0, 0.3, 40)                 # site A: only normal windows
    fault = rng.uniform(0.6, 1.0, 30)                  # site B: only fault windows
    ha, hb = score_histogram(normal, np.zeros(40)), score_histogram(fault, np.ones(30))
    assert ha.shape == (2, BINS) and ha[1].sum() == 0 and hb[0].sum() == 0
    assert threshold_from_histogram(ha) is None        # one side alone: nothing to tune
    t, v = threshold_from_histogram(merge_histograms([ha, hb]))
    assert v == 1.0 and normal.max() < t <= fault.min()
    # the tie rule keeps t closest to 0.5 among the perfect ones
    assert abs(t - 0.5) <= 1 / BINS
    # equal to tuning on the pooled scores, up to one bin
    scores = np.concatenate([normal, fault])
    probs = np.stack([1 - scores, scores], axis=1)
    t_exact, v_exact = tune_threshold(probs, np.r_[np.zeros(40), np.ones(30)].astype(int))
    assert v_exact == v and abs(t_exact - t) < 0.2


def test_histograms_from_the_network_are_checked():
    good = score_histogram([0.1, 0.9], [0, 1])
    assert check_histogram(good.tolist()) is None
    assert "shape" in check_histogram([[1, 2], [3, 4]])
    bad = good.copy().astype(float)
    bad[0, 3] = -1
    assert "negative" in check_histogram(bad)
    bad[0, 3] = 0.5
    assert "fractional" in check_histogram(bad)
    bad[0, 3] = np.nan
    assert check_histogram(bad) is not None
    assert "more than" in check_histogram(good * 10, max_windows=5)
    assert check_histogram("not numbers") is not None


def test_shrunk_perf_is_not_a_step_on_one_block():
    # four devices, one validation block each: raw accuracies 0/1
    raw = np.array([0.0, 1.0, 0.0, 0.0])
    g = np.ones(4)
    p = agg.shrink_perf(raw, g, prior=4.0)
    p_bar = 0.25
    assert p == pytest.approx((g * raw + 4 * p_bar) / (g + 4))
    assert p.min() > 0 and p.max() / p.min() == pytest.approx((1 + 1) / 1)   # 0.4 / 0.2
    # much evidence: close to the raw score; prior 0: the raw score
    assert agg.shrink_perf(raw, np.full(4, 400.0), 4.0) == pytest.approx(raw, abs=0.01)
    assert np.array_equal(agg.shrink_perf(raw, g, 0.0), raw)
    with pytest.raises(ValueError):
        agg.shrink_perf(raw, -g, 4.0)


def test_fedmetaalign_weights_use_the_shrunk_scores():
    rng = np.random.default_rng(3)
    g = [rng.normal(size=(6,)).astype(np.float32)]
    reps = [Reply(i, [g[0] + rng.normal(0, 0.1, 6).astype(np.float32)],
                  {"n": 10, "acc": a, "loss_before": 1.0, "loss_after": 0.9, "val_groups": 1})
            for i, a in enumerate([0.0, 1.0, 0.0])]
    strat = FedMetaAlign(1, perf_prior=4.0)
    assert "val_groups" in strat.needs
    _, rec = strat.aggregate(g, reps)
    assert rec["raw_perf"] == [0.0, 1.0, 0.0]
    assert rec["perf"] == pytest.approx(agg.shrink_perf(np.array([0.0, 1.0, 0.0]), np.ones(3), 4.0))
    assert max(rec["weights"]) < 0.6                    # raw p_k would give device 1 all the weight
    _, raw = FedMetaAlign(1).aggregate(g, reps)
    assert max(raw["weights"]) == pytest.approx(1.0)


def test_early_stopping_rule():
    assert best_round([1.0, 0.8, 0.9, 0.8]) == 2                       # first of equal losses
    assert best_round([float("nan"), 0.5]) == 2 and best_round([]) == 1
    assert not should_stop([1.0, 0.9, 0.95], patience=2, max_rounds=10)
    assert should_stop([1.0, 0.9, 0.95, 0.97], patience=2, max_rounds=10)
    assert should_stop([1.0, 0.9, 0.8], patience=5, max_rounds=3)
    assert should_stop([float("nan")] * 3, patience=2, max_rounds=10)


def _tiny_pool(n_normal_groups, n_fault_groups, per_group=4):
    y = np.repeat([0] * n_normal_groups + [1] * n_fault_groups, per_group)
    groups = np.repeat(np.arange(n_normal_groups + n_fault_groups), per_group)
    x = np.zeros((len(y), 4, 1), np.float32)
    return Pool(x, y, groups)


@pytest.mark.parametrize("n_normal,n_fault", [(2, 6), (3, 3), (6, 2), (4, 9)])
def test_threshold_validation_holds_both_sides(n_normal, n_fault):
    pool = _tiny_pool(n_normal, n_fault)
    for seed in range(6):
        s = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed, 0)
        assert set(np.unique(s.phase3_val.y != 0)) == {False, True}, seed
        assert set(np.unique(s.test.y != 0)) == {False, True}, seed
        parts = [s.test, s.phase1, s.phase2_train, s.phase3_tune, s.phase3_val]
        owner = {}
        for j, p in enumerate(parts):                   # groups never cross splits
            for grp in np.unique(p.groups):
                assert owner.setdefault(int(grp), j) == j
        assert all(len(p) for p in (s.phase2_train, s.phase2_val, s.phase3_tune))
        s2 = split_device(pool, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, seed, 0)
        assert np.array_equal(s.phase3_val.groups, s2.phase3_val.groups)


def test_reference_features_are_the_features_front_end():
    from fedtiny import frontend
    from fedtiny.trainer.reference import forest_probs, window_features

    rng = np.random.default_rng(0)
    t = np.arange(40) / 40.0
    quiet = 0.1 * np.sin(2 * np.pi * 2 * t)[None, :, None] + rng.normal(0, 0.01, (30, 40, 2))
    loud = 0.8 * np.sin(2 * np.pi * 2 * t)[None, :, None] + rng.normal(0, 0.01, (30, 40, 2))
    x = np.concatenate([quiet, loud]).astype(np.float32)
    f = window_features(x)
    assert f.shape == (60, 12) and np.array_equal(f, frontend.compute("features", x))
    y = np.repeat([0, 1], 30)
    p = forest_probs(x[::2], y[::2], x[1::2], 3, [0, 11, 1])
    assert p.shape == (30, 3) and np.all(p[:, 2] == 0)            # class 2 never seen: probability 0
    assert np.array_equal(np.argmax(p, axis=1), y[1::2])            # the RMS alone separates them
    p2 = forest_probs(x[::2], y[::2], x[1::2], 3, [0, 11, 1])
    assert np.array_equal(p, p2)                                    # seeded


def test_rounds_option_takes_an_integer_or_auto():
    from click.testing import CliRunner

    from fedtiny.cli import main
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleet import DataError

    for bad in ("abc", "-1", "2.5"):
        res = CliRunner().invoke(main, ["train", "--rounds", bad, "--out", "/nonexistent/x"])
        assert res.exit_code == 2 and "--rounds" in res.output and "Traceback" not in res.output, res.output
    assert TrainConfig(rounds="auto", max_rounds=7).n_rounds == 7 and TrainConfig(rounds=3).n_rounds == 3
    for bad_cfg in (dict(rounds="ten"), dict(rounds=True), dict(patience=0), dict(perf_prior=-1.0)):
        with pytest.raises(DataError):
            TrainConfig(**bad_cfg)


def test_fleet_threshold_and_stopping_never_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import fedtiny.trainer.fleet_threshold, fedtiny.trainer.stopping; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_html_report_refuses_a_reference_run_in_one_line(tmp_path):
    import json

    from click.testing import CliRunner

    from fedtiny.cli import main

    (tmp_path / "report.json").write_text(json.dumps({"method": "reference-local", "devices": []}))
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "classical reference run" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "report.html").exists()
