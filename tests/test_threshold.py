import numpy as np
import pytest

from fedtiny.trainer.threshold import binary_metric, decide, tune_threshold


def test_decide_rule():
    p = np.array([[0.7, 0.1, 0.2],    # fault score 0.3
                  [0.4, 0.5, 0.1],    # fault score 0.6
                  [0.45, 0.15, 0.4]])
    assert decide(p, 0.5).tolist() == [0, 1, 2]
    assert decide(p, 0.25).tolist() == [2, 1, 2]
    assert decide(p, 0.65).tolist() == [0, 0, 0]


def test_tuner_finds_known_optimum():
    # normals have fault scores 0.05..0.40, faults 0.35..0.90 (overlapping at 0.35/0.40)
    normal_scores = np.array([0.05, 0.10, 0.20, 0.30, 0.40])
    fault_scores = np.array([0.35, 0.45, 0.60, 0.75, 0.90])
    scores = np.concatenate([normal_scores, fault_scores])
    y = np.array([0] * 5 + [1] * 5)
    probs = np.stack([1 - scores, scores], axis=1)
    t, v = tune_threshold(probs, y, "balanced_accuracy")
    # at t = 0.45: TNR 5/5, TPR 4/5 -> 0.9; at t = 0.35: TNR 4/5, TPR 5/5 -> 0.9; t=0.45 is closer to 0.5
    assert v == pytest.approx(0.9)
    assert t == pytest.approx(0.45)
    pred = (scores >= t)
    assert binary_metric(y != 0, pred) == pytest.approx(v)


def test_tuner_moves_away_from_half_when_that_is_better():
    # every fault has a low fault score: the default 0.5 misses all faults, the tuner must go low
    scores = np.array([0.01, 0.02, 0.03, 0.20, 0.22, 0.25])
    y = np.array([0, 0, 0, 3, 2, 1])
    probs = np.zeros((6, 4))
    probs[:, 0] = 1 - scores
    probs[np.arange(6), np.maximum(y, 1)] = scores
    t, v = tune_threshold(probs, y)
    assert v == pytest.approx(1.0)
    assert 0.03 < t <= 0.20
    assert decide(probs, t).tolist() == y.tolist()


@pytest.mark.parametrize("metric", ["balanced_accuracy", "accuracy", "f1"])
def test_metrics_perfect_and_worst(metric):
    y = np.array([True, False, True])
    assert binary_metric(y, y, metric) == 1.0
    assert binary_metric(y, ~y, metric) == 0.0


def test_nothing_is_a_fault_is_a_reachable_decision():
    """All validation windows normal: the best threshold lies above every score."""
    probs = np.array([[0.8, 0.2], [0.2, 0.8]])        # fault scores 0.2 and 0.8
    t, v = tune_threshold(probs, np.array([0, 0]), "accuracy")
    assert v == 1.0 and t > 0.8
    assert (decide(probs, t) == 0).all()
